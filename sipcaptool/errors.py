"""The project's exceptions and the exit codes they map to.

Every error a user can cause ends the program with one line on stderr and one of
these exit codes (documented in ``sipcaptool(1)``):

====  =====================================================================
0     success
1     internal error (a bug: please report it with ``--debug`` output)
2     bad usage or bad setting (ConfigError, click usage errors)
3     bad input: a capture file missing, unreadable, not a capture, or cut off
4     database error: unreachable, refusing, or a statement that failed; or messages
      lost on their way to a database or a HEP target (DeliveryError)
5     capture error: an interface or socket could not be opened
====  =====================================================================
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DATABASE = 4
EXIT_CAPTURE = 5


class SipcaptoolError(Exception):
    """Root of every error the project raises on purpose."""

    exit_code = EXIT_INTERNAL


class DecodeError(SipcaptoolError):
    """Bytes that do not decode as what they claim to be.

    ``reason`` is a short, stable, machine-friendly token (``"sip-no-start-line"``,
    ``"hep3-bad-length"``...) used to count skipped input by reason. ``size`` is how many
    bytes of input the error refuses where the decoder says so (the HEP decoder does,
    counted as ``refused-bytes:<reason>``), else 0.
    """

    exit_code = EXIT_INPUT
    size = 0

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(SipcaptoolError):
    """A setting with a value that is not allowed."""

    exit_code = EXIT_USAGE


class InputError(SipcaptoolError):
    """A capture file that is missing, unreadable, not a capture, or cut off."""

    exit_code = EXIT_INPUT


class StoreError(SipcaptoolError):
    """The database refused, failed or could not be reached.

    ``kind`` says what the failure means, from the driver's error class and code:

    * ``"connection"``: the connection failed or the server gave up the statement (lost,
      unreachable, shutting down, lock wait timeout, deadlock, out of resources) --
      trying again later works;
    * ``"operator"``: something a person fixes (missing privileges, a missing or altered
      table, a read-only database) -- the rows are kept (spooled) until it is fixed;
    * ``"refused"``: the database refused the rows themselves (constraint, data, trigger
      SIGNAL, CHECK, no partition for the value) -- only those rows can be given up;
    * ``""``: not known.

    ``transient`` is true for the first two: the batch is worth retrying or spooling,
    and none of its rows is to blame.
    """

    exit_code = EXIT_DATABASE
    KINDS = ("connection", "operator", "refused", "")

    def __init__(self, message: str = "", *, kind: str = "", transient: bool | None = None,
                 hint: str = "") -> None:
        super().__init__(message)
        if kind not in self.KINDS:
            raise ValueError(f"unknown StoreError kind {kind!r}")
        self.kind = kind
        self.hint = hint  # operator errors: what to fix, in a few words
        self.transient = (kind in ("connection", "operator")) if transient is None \
            else bool(transient)


class DeliveryError(SipcaptoolError):
    """Messages that were received but could not be passed on and are lost (a HEP
    target that did not take them and a spool that could not hold them)."""

    exit_code = EXIT_DATABASE


class CaptureError(SipcaptoolError):
    """A live interface or socket could not be opened or read."""

    exit_code = EXIT_CAPTURE
