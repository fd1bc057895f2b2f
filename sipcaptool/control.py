"""Control socket: switch capture on and off, read statistics, while a collector runs.

Every long-running command (``hep``, ``live``, ``live --ipip``) serves a Unix stream
socket (mode 0600, so only its owner and root can use it). ``sipcaptool ctl`` talks to
it, and so can any script::

    echo "status check" | socat - UNIX-CONNECT:/run/sipcaptool/hep.sock

Protocol
--------
UTF-8 text, one command per line (``\\n`` or ``\\r\\n``); words are separated by
blanks; command names and parameters are case-insensitive. The server answers each
line in order and keeps the connection open until the client closes it (or half-closes
it, as ``socat`` does at the end of its input), or sends no whole line for
``control_timeout`` seconds (see Limits).

==================  ==================================================================
command             answer
==================  ==================================================================
``status on``       ``Enabled``  -- store again
``status off``      ``Disabled`` -- keep receiving and counting, store nothing
                    (messages received meanwhile count as ``dropped:capture-off``)
``status check``    ``Enabled`` or ``Disabled``, nothing changed
``status X``        ``500 - Bad parameter (on, off or check)`` for any other word,
                    prefixes included (``onion`` is *not* ``on``)
``status``          ``500 - Not enough parameters (on, off or check)``
``stats``           the counters since start as one line of JSON (see below)
``stats json``      the same
``stats text``      a readable table, several lines, then an empty line
``ping``            ``pong``
``help``            the list of commands, several lines, then an empty line
anything else       ``500 - Unknown command 'X' (try help)``
==================  ==================================================================

Every answer is one line, except the two marked "several lines", which end with an
empty line so that a client keeping the connection open knows where they stop. Errors
always start with ``500 - `` (the form of Kamailio's ``sipcapture.status`` RPC); a
line longer than 4096 bytes is an error and closes the connection.

Statistics JSON
---------------
``{"capture": "on"|"off", "uptime_s": float, "started": unix time, "pid": int,
"packets": n, "messages": n, "stored": {table: n}, "stored_total": n,
"skipped": {reason: n}, "malformed": {reason: n}, "dropped": {reason: n},
"evicted": {reason: n}, "truncated": {column: n}, "db": {event: n},
"kernel": {name: n}, "queue_depth": n|null, "spool_bytes": n|null,
"spool_batches": n|null, ...extra}``

Using it from a command
-----------------------
::

    from sipcaptool.control import ControlServer, default_control_path

    server = ControlServer(path or default_control_path("hep"), pipeline.capture_flag,
                           lambda: dict(stats), extra={"command": "hep"})
    server.start()          # raises CaptureError if the path is in use or cannot be made
    try:
        ...                 # run the collector
    finally:
        server.stop()       # closes connections and removes the socket file

``capture_flag`` is any object with an integer attribute ``value`` (1 store, 0 don't):
``pipeline.CaptureFlag`` or a ``multiprocessing.RawValue("b")`` shared with workers.
The server only reads and writes ``value``; it never touches the pipeline.

``stats_provider`` is called (from the server's thread) for every ``stats`` request
and returns a flat mapping of counters named as in ``sipcaptool.stats``
(``packets``, ``messages``, ``stored:<table>``, ``skipped:<reason>``,
``malformed:<reason>``, ``dropped:<reason>``, ``evicted:<reason>``,
``truncated:<column>``, ``db:<event>`` such as ``db:batches``, ``db:errors``,
``db:retries``, ``kernel:<name>`` such as ``kernel:dropped``, ``kernel:if_dropped``)
plus these gauges when the command has them: ``queue_depth`` (batches waiting for the
writer), ``spool_bytes`` and ``spool_batches`` (what waits on disk for the database).
A ``Stats`` object may be returned as is; a multi-process command adds its workers'
counters up before returning them. Unprefixed keys not listed here go under ``other``.

``extra`` adds fixed facts to the JSON (``{"command": "hep", "listen": [...]}``); a
value that is callable is called on each request (e.g. ``{"clients": lambda: n}``).

``MetricsServer((host, port), stats_provider, capture_flag=...)`` serves the same
counters in the Prometheus text format on ``GET /metrics`` (``--metrics HOST:PORT``).

Limits
------
Both servers run one thread each, whatever the number of clients (a selector loop, no
thread per connection), with a listen backlog of ``LISTEN_BACKLOG``. A control
connection must complete a command line within ``timeout`` seconds of connecting or of
its previous answer, and a metrics client must send its whole request within
``timeout`` seconds; otherwise the connection is closed (``control:timeout``,
``metrics:timeout``). What a client sent with its connection is answered at once (a
``ctl`` request is answered and closed before it takes a place). At most
``max_connections`` connections stay open on each; a new one beyond that takes the
place of the one idle longest (at least ``IDLE_GRACE`` seconds, ``SILENT_GRACE`` if it
never sent a byte; ``control:evicted-idle``, ``metrics:evicted-idle``), or, when every
one is busy, is closed itself (``control:refused-full``, ``metrics:refused-full``).
``send_command`` tries again when closed before an answer (every command is
idempotent). ``--control-timeout`` and ``--control-max-connections`` (the settings
``control_timeout``, ``control_max_connections``) set both.

Who may talk
------------
The default socket's directory (``/tmp/sipcaptool-<uid>`` and the others of
:func:`default_control_path`) must be a directory -- not a symbolic link -- owned by the
user and writable by no one else, as OpenSSH and tmux require of theirs; it is created
mode 0700. Anything else is refused (:class:`UnsafeControlPathError`): another local user
who made that directory first could move the collector's socket away and answer
``ctl`` in its place. The server answers only clients of its own user or root
(``SO_PEERCRED``; others are closed, ``control:peer-uid``); ``ctl`` talks only to a
socket, and a process, of its own user or root (root talks to any).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import CaptureError, ConfigError
from .stats import Stats

__all__ = [
    "BAD_PARAMETER",
    "ControlServer",
    "MetricsServer",
    "NOT_ENOUGH_PARAMETERS",
    "UnsafeControlPathError",
    "check_control_socket",
    "check_runtime_dir",
    "configure_limits",
    "endpoint_options",
    "build_stats",
    "default_control_path",
    "format_stats_text",
    "handle_command",
    "parse_hostport",
    "prometheus_text",
    "send_command",
]

log = logging.getLogger("sipcaptool.control")

BAD_PARAMETER = "500 - Bad parameter (on, off or check)"
NOT_ENOUGH_PARAMETERS = "500 - Not enough parameters (on, off or check)"
ENABLED = "Enabled"
DISABLED = "Disabled"
MAX_LINE = 4096
MAX_REQUEST = 8192            # bytes of an HTTP request head on the metrics port
DEFAULT_TIMEOUT = 5.0         # seconds (setting control_timeout)
DEFAULT_MAX_CONNECTIONS = 64  # per server (setting control_max_connections)
LISTEN_BACKLOG = max(128, socket.SOMAXCONN)
IDLE_GRACE = 1.0              # a connection idle this long may make room for a new one
SILENT_GRACE = 0.1            # ... or this long, if it has sent nothing at all
_MAX_PENDING_OUT = 256 * 1024  # answers waiting for a client that does not read

HELP_LINES = [
    "status on       store messages (answer: Enabled)",
    "status off      keep receiving, store nothing (answer: Disabled)",
    "status check    report Enabled or Disabled without changing it",
    "stats           counters since start, one line of JSON",
    "stats text      counters since start, a readable table",
    "ping            answer pong",
    "help            this list",
]

# counter categories (see sipcaptool.stats) -> key in the stats JSON
_GROUPS = (("stored", "stored"), ("skipped", "skipped"), ("malformed", "malformed"),
           ("dropped", "dropped"), ("evicted", "evicted"), ("truncated", "truncated"),
           ("db", "db"), ("kernel", "kernel"), ("control", "control"), ("metrics", "metrics"))
_GAUGES = ("queue_depth", "spool_bytes", "spool_batches")


# the limits Endpoints gives its servers (configure_limits: the command's settings)
_LIMITS = {"timeout": DEFAULT_TIMEOUT, "max_connections": DEFAULT_MAX_CONNECTIONS}

# the settings of the endpoints, as options of the commands that serve them (hep, live)
ENDPOINT_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--control-timeout",), "control_timeout",
     {"type": float, "metavar": "S",
      "help": "Close a control-socket or --metrics connection that has not sent a whole "
              "command (or HTTP request) within S seconds of connecting or of its previous "
              "answer, counted as control:timeout or metrics:timeout. [default: 5]"}),
    (("--control-max-connections",), "control_max_connections",
     {"type": int, "metavar": "N",
      "help": "Connections the control socket and --metrics each hold at most; past it "
              "the one idle longest is closed for the new one (control:evicted-idle), or, "
              "when none is idle, the new one (control:refused-full). A request sent with "
              "the connection is answered at once either way. [default: 64]"}),
]


def configure_limits(settings: Any) -> None:
    """Take ``control_timeout`` and ``control_max_connections`` from ``settings`` for the
    servers :class:`Endpoints` starts in this process."""
    _LIMITS["timeout"] = float(settings.control_timeout)
    _LIMITS["max_connections"] = int(settings.control_max_connections)


def endpoint_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--control-timeout`` and ``--control-max-connections`` to a command serving
    the control socket and ``--metrics``. Put it under ``@storage_options`` (nearer the
    function): the values join ``settings`` (file < environment < command line) and
    become the limits of the :class:`Endpoints` the command starts."""
    import functools

    import click

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = kwargs["settings"]
        for _names, name, _kw in ENDPOINT_OPTIONS:
            value = kwargs.pop(name, None)
            if value is not None:
                kwargs["settings"] = settings = settings.with_value(name, value, "command line")
        configure_limits(settings)
        return f(*args, **kwargs)

    for names, name, kw in reversed(ENDPOINT_OPTIONS):
        wrapper = click.option(*names, name, default=None, **kw)(wrapper)
    return wrapper


# -- paths ---------------------------------------------------------------------------
def default_control_path(command: str) -> str:
    """Where ``command``'s control socket goes when ``--control`` is not given.

    ``$XDG_RUNTIME_DIR/sipcaptool/<command>.sock`` when that variable names a directory;
    otherwise ``/run/sipcaptool/<command>.sock`` for root and
    ``/tmp/sipcaptool-<uid>/<command>.sock`` for anyone else.
    """
    name = f"{command}.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "sipcaptool", name)
    uid = os.geteuid()
    if uid == 0:
        return os.path.join("/run/sipcaptool", name)
    return os.path.join(f"/tmp/sipcaptool-{uid}", name)


class UnsafeControlPathError(CaptureError):
    """A control socket, or its directory, that another local user could have put there."""


def _who(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_runtime_dir(directory: str, *, create: bool = False) -> None:
    """Refuse a default socket directory another user could have made (OpenSSH, tmux).

    With ``create``, the directory is made (mode 0700) when missing. It must then be a
    directory, not a symbolic link, owned by the effective user and writable by no one
    else; its parent must not let others replace it. Raises :class:`UnsafeControlPathError`
    (one line: what is wrong and what to do).
    """
    _check_parent(directory, "control socket directory")
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise CaptureError(f"control socket directory {directory}: cannot create it: "
                               f"{e.strerror}") from None
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CaptureError(f"control socket directory {directory}: {e.strerror}") from None
    euid = os.geteuid()
    fix = "remove it (or set XDG_RUNTIME_DIR, or give --control PATH)"
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeControlPathError(f"control socket directory {directory} is a symbolic link, "
                                f"owned by {_who(st.st_uid)}; refusing to use it: {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeControlPathError(f"control socket directory {directory} is not a directory; {fix}")
    if st.st_uid != euid:
        raise UnsafeControlPathError(f"control socket directory {directory} is owned by "
                                f"{_who(st.st_uid)}, not by you ({_who(euid)}): another user "
                                f"could answer in the collector's place; {fix}")
    if st.st_mode & 0o022:
        raise UnsafeControlPathError(f"control socket directory {directory} is writable by "
                                f"{'others' if st.st_mode & 0o002 else 'its group'} (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}): another user could answer in "
                                f"the collector's place; make it 0700 ({fix})")


def _check_parent(path: str, what: str = "control socket") -> None:
    """The directory holding ``path`` must not let another user replace ``path``: owned
    by this user or root, and not writable by others unless sticky (as /tmp)."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(parent)
    except OSError:
        return  # missing: creating it, or connecting, fails with its own message
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        why = f"is owned by {_who(st.st_uid)}"
    elif st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    else:
        return
    raise UnsafeControlPathError(f"{what} {path}: its directory {parent} {why}, so another "
                                 "user could replace it; refusing to use it: give --control "
                                 "PATH in a directory only you (or root) can write")


def check_control_socket(path: str, *, default: bool) -> None:
    """Before ``ctl`` talks: refuse a socket (or a default directory) of another user.

    ``default``: the path is one of :func:`default_control_path`'s, whose directory is
    checked as :func:`check_runtime_dir` does; an explicit path's directory only must
    not be writable by others without the sticky bit. The socket itself must belong to
    the effective user or root (root talks to any). A missing socket passes (connecting
    says so).
    """
    euid = os.geteuid()
    if euid == 0:
        return  # root talks to any collector (/run/sipcaptool may be the service user's)
    directory = os.path.dirname(os.path.abspath(path))
    if default:
        check_runtime_dir(directory)
    else:
        _check_parent(path)
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeControlPathError(f"control socket {path}: not a socket")
    if st.st_uid not in (euid, 0):
        raise UnsafeControlPathError(f"control socket {path} is owned by {_who(st.st_uid)}, not by "
                                f"you ({_who(euid)}): refusing to talk to another user's "
                                "process; give the collector's --control PATH")


def _peer_uid(sock: socket.socket) -> int | None:
    """The user of the process at the other end of a Unix socket (None if unknown)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return int(struct.unpack("3i", raw)[1])


def _prepare_path(path: str, default: bool = False) -> None:
    """Make the directory (0700 when we create it); remove a stale socket; refuse a live one.

    ``default``: the path is :func:`default_control_path`'s, whose directory is checked
    (and made) by :func:`check_runtime_dir`; an explicit path's directory must not let
    another user replace the socket (writable by others without the sticky bit, or owned
    by another user than this one or root).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if default:
        check_runtime_dir(directory, create=True)
    elif os.path.isdir(directory):
        _check_parent(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise CaptureError(f"control socket {path}: cannot create directory "
                               f"{directory}: {e.strerror}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CaptureError(f"control socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CaptureError(f"control socket {path}: a file that is not a socket is in the way; "
                           "remove it or choose another --control path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # nobody listens: left over from a process that died; take its place
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CaptureError(f"control socket {path}: stale socket cannot be removed: "
                               f"{e.strerror}") from None
        log.info("control socket %s: removed a stale socket", path)
        return
    except PermissionError:
        raise CaptureError(f"control socket {path}: in use by another user's process "
                           "(permission denied); choose another --control path") from None
    except OSError as e:
        raise CaptureError(f"control socket {path}: cannot probe it: {e.strerror}") from None
    else:
        raise CaptureError(f"control socket {path}: another running process answers on it; "
                           "stop it or choose another --control path")
    finally:
        probe.close()


# -- statistics ----------------------------------------------------------------------
def _snapshot(provider: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    # the provider's dict may be updated by another thread while we copy it
    for _ in range(5):
        try:
            return dict(provider())
        except RuntimeError:
            time.sleep(0.001)
    return dict(provider())


def build_stats(counters: Mapping[str, Any], *, capture_on: bool, started: float,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stats JSON document from a flat counter mapping (see the module docstring)."""
    doc: dict[str, Any] = {
        "capture": "on" if capture_on else "off",
        "uptime_s": round(max(0.0, time.time() - started), 3),
        "started": round(started, 3),
        "pid": os.getpid(),
        "packets": int(counters.get("packets", 0) or 0),
        "messages": int(counters.get("messages", 0) or 0),
    }
    groups: dict[str, dict[str, Any]] = {key: {} for _c, key in _GROUPS}
    other: dict[str, Any] = {}
    prefixes = {c + ":": key for c, key in _GROUPS}
    for k in sorted(counters):
        v = counters[k]
        if k in ("packets", "messages") or k in _GAUGES:
            continue
        cat, sep, rest = k.partition(":")
        if sep and cat + ":" in prefixes:
            if v:
                groups[prefixes[cat + ":"]][rest] = v
        else:
            other[k] = v
    doc["stored"] = groups.pop("stored")
    doc["stored_total"] = sum(doc["stored"].values())
    doc.update(groups)
    for g in _GAUGES:
        doc[g] = counters.get(g)
    if other:
        doc["other"] = other
    for k, v in (extra or {}).items():
        doc[k] = v() if callable(v) else v
    return doc


def _fmt_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{d}d {out}" if d else out


def format_stats_text(doc: Mapping[str, Any]) -> str:
    """A readable table of a stats document (``ctl stats``, ``stats text``)."""
    lines: list[str] = []

    def row(title: str, value: Any, indent: int = 0) -> None:
        lines.append(f"{' ' * indent}{title + ':':<{28 - indent}} {value}")

    row("capture", doc.get("capture", "?"))
    row("uptime", _fmt_duration(float(doc.get("uptime_s") or 0)))
    row("packets received", doc.get("packets", 0))
    row("messages received", doc.get("messages", 0))
    row("rows stored", doc.get("stored_total", 0))
    for table, n in (doc.get("stored") or {}).items():
        row(table, n, 2)
    for key, title in (("skipped", "skipped (not a message)"), ("malformed", "malformed"),
                       ("dropped", "dropped"), ("evicted", "evicted decoder state"),
                       ("truncated", "values cut to column width")):
        group = doc.get(key) or {}
        row(title, sum(v for v in group.values() if isinstance(v, (int, float))))
        for reason, n in group.items():
            row(reason, n, 2)
    for key, title in (("control", "control connections closed"),
                       ("metrics", "metrics connections closed")):
        group = doc.get(key) or {}
        if group:
            row(title, sum(v for v in group.values() if isinstance(v, (int, float))))
            for reason, n in group.items():
                row(reason, n, 2)
    kernel = doc.get("kernel") or {}
    if kernel:
        row("kernel", "")
        for name, n in kernel.items():
            row(name, n, 2)
    db = dict(doc.get("db") or {})
    row("db batches", db.pop("batches", 0))
    row("db errors", db.pop("errors", 0))
    row("db retries", db.pop("retries", 0))
    for name, n in db.items():
        row("db " + name, n)
    for key, title in (("queue_depth", "queue depth"), ("spool_bytes", "spool bytes"),
                       ("spool_batches", "spool batches")):
        v = doc.get(key)
        row(title, "-" if v is None else v)
    skip = {"capture", "uptime_s", "started", "packets", "messages", "stored", "stored_total",
            "skipped", "malformed", "dropped", "evicted", "truncated", "kernel", "db",
            "control", "metrics", "queue_depth", "spool_bytes", "spool_batches", "other"}
    for k, v in doc.items():
        if k not in skip:
            row(k, json.dumps(v) if isinstance(v, (dict, list)) else v)
    for k, v in (doc.get("other") or {}).items():
        row(k, v)
    return "\n".join(lines)


# -- the protocol (pure) -------------------------------------------------------------
def handle_command(line: str, capture_flag: Any,
                   stats: Callable[[], dict[str, Any]]) -> str:
    """Answer one protocol line; multi-line answers end with an empty line.

    ``stats`` returns the stats document (see :func:`build_stats`). The only side effect
    is ``capture_flag.value`` set by ``status on|off``.
    """
    words = line.split()
    if not words:
        return ""
    cmd = words[0].lower()
    args = [w.lower() for w in words[1:]]
    if cmd == "status":
        if not args:
            return NOT_ENOUGH_PARAMETERS
        if len(args) != 1:
            return BAD_PARAMETER
        if args[0] == "on":
            capture_flag.value = 1
            log.warning("capture switched on through the control socket")
        elif args[0] == "off":
            capture_flag.value = 0
            log.warning("capture switched off through the control socket")
        elif args[0] != "check":
            return BAD_PARAMETER
        return ENABLED if capture_flag.value else DISABLED
    if cmd == "stats":
        if not args or args == ["json"]:
            return json.dumps(stats(), separators=(",", ":"))
        if args == ["text"]:
            return format_stats_text(stats()) + "\n"
        return "500 - Bad parameter (json or text)"
    if cmd == "ping":
        return "pong"
    if cmd == "help":
        return "\n".join(HELP_LINES) + "\n"
    shown = words[0][:40]
    return f"500 - Unknown command {shown!r} (try help)"


# -- the servers ---------------------------------------------------------------------
def _with_counters(doc: dict[str, Any], counters: Mapping[str, int]) -> dict[str, Any]:
    """``doc`` with the endpoints' own counters (``control:``, ``metrics:``) added."""
    for k, v in list(counters.items()):
        doc[k] = (doc.get(k) or 0) + v
    return doc


class _Conn:
    """One client connection of a :class:`_SelectorServer`."""

    __slots__ = ("sock", "inbuf", "outbuf", "since", "deadline", "eof", "closing", "events",
                 "received")

    def __init__(self, sock: socket.socket, now: float, timeout: float) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = bytearray()
        self.since = now               # connected, or last request answered
        self.deadline = now + timeout  # closed then unless a request completes
        self.eof = False               # the client half-closed: answer, then close
        self.closing = False           # close once outbuf is sent
        self.events = 0
        self.received = 0              # bytes received so far


class _SelectorServer:
    """One thread, a selector, bounded connections with time limits (see Limits above).

    Subclasses set ``kind`` (the counter category) and implement ``_on_data(conn, now)``,
    which consumes ``conn.inbuf`` and appends answers to ``conn.outbuf``.
    """

    kind = "control"

    def __init__(self, *, timeout: float, max_connections: int,
                 counters: Stats | None) -> None:
        self.timeout = float(timeout)
        self.max_connections = max(1, int(max_connections))
        self.counters = counters if counters is not None else Stats()
        self._listen: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._paused = False
        self._resume_at = 0.0
        self._next_sweep = 0.0
        self._logged: dict[str, float] = {}

    # lifecycle
    def _start_loop(self, listen: socket.socket, name: str) -> None:
        listen.setblocking(False)
        self._listen = listen
        self._sel = selectors.DefaultSelector()
        self._sel.register(listen, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _stop_loop(self) -> None:
        self._stop.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for c in list(self._conns.values()):
            self._close(c)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._listen is not None:
            self._listen.close()
            self._listen = None
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    # counting
    def _count(self, reason: str, n: int = 1) -> None:
        key = f"{self.kind}:{reason}"
        self.counters[key] += n
        now = time.monotonic()
        if now - self._logged.get(reason, -1e9) >= 60:
            self._logged[reason] = now
            log.warning("%s: %s connection(s) closed so far (%s; see %s in the stats)",
                        self._describe(), self.counters[key], reason, key)

    def _describe(self) -> str:
        return self.kind

    # the loop
    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        while not self._stop.is_set():
            now = time.monotonic()
            wait = 0.05 if self._paused else 0.5
            if self._conns:
                wait = min(wait, max(0.0, min(c.deadline for c in self._conns.values()) - now))
            try:
                events = sel.select(wait)
            except OSError:
                time.sleep(0.05)
                continue
            now = time.monotonic()
            accept = False
            for key, mask in events:
                if key.data is None:
                    accept = True
                elif key.data == "wake":
                    try:
                        key.fileobj.recv(64)  # type: ignore[union-attr]
                    except OSError:
                        pass
                else:
                    conn = key.data
                    if conn.sock.fileno() < 0:
                        continue
                    try:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(conn, now)
                        if mask & selectors.EVENT_READ and conn.sock in self._conns:
                            self._read(conn, now)
                    except OSError:
                        self._close(conn)
                    except Exception:  # a bug must not end the loop for every client
                        log.exception("%s: a connection failed", self._describe())
                        self._close(conn)
            if self._stop.is_set():
                break
            if accept or (self._paused and now >= self._resume_at):
                self._accept(now)
            if now >= self._next_sweep or self._paused:
                self._sweep(now)

    def _accept(self, now: float) -> None:
        """Accept what waits; serve at once what a client sent with its connection (a
        ``ctl`` request usually: it is answered and closed without taking a place); past
        ``max_connections``, close the connection idle longest -- or the new one."""
        assert self._listen is not None and self._sel is not None
        for _ in range(256):  # then serve the others before accepting more
            try:
                sock, _addr = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._count("accept-error")
                    self._pause(now, 0.5)  # out of descriptors: rest, do not spin
                    return
                break
            if not self._admit(sock):
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, now, self.timeout)
            self._conns[sock] = conn
            conn.events = selectors.EVENT_READ
            self._sel.register(sock, selectors.EVENT_READ, conn)
            try:
                self._read(conn, now)
            except OSError:
                self._close(conn)
                continue
            except Exception:  # a bug must not end the loop for every client
                log.exception("%s: a connection failed", self._describe())
                self._close(conn)
                continue
            if sock in self._conns and len(self._conns) > self.max_connections:
                victim = self._idlest(now, conn)
                if victim is None:
                    self._count("refused-full")
                    self._close(conn)
                else:
                    self._count("evicted-idle")
                    self._close(victim)
        self._resume()

    def _pause(self, now: float, seconds: float) -> None:
        if not self._paused and self._listen is not None and self._sel is not None:
            self._sel.unregister(self._listen)
            self._paused = True
        self._resume_at = now + seconds

    def _resume(self) -> None:
        if self._paused and self._listen is not None and self._sel is not None:
            self._sel.register(self._listen, selectors.EVENT_READ, None)
            self._paused = False

    def _idlest(self, now: float, new: _Conn) -> _Conn | None:
        """The connection idle longest, other than ``new``, with nothing to send: idle at
        least IDLE_GRACE s (SILENT_GRACE s if it never sent a byte); or None."""
        best = None
        for c in self._conns.values():
            if c is new or c.outbuf:
                continue
            if c.since > now - (IDLE_GRACE if c.received else SILENT_GRACE):
                continue
            if best is None or c.since < best.since:
                best = c
        return best

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + 0.1
        for c in list(self._conns.values()):
            if c.deadline <= now:
                self._count("timeout")
                self._close(c)

    def _admit(self, sock: socket.socket) -> bool:
        return True

    def _read(self, conn: _Conn, now: float) -> None:
        for _ in range(4):  # what is there, up to 256 KB a turn
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                conn.eof = True
                break
            conn.inbuf += data
            conn.received += len(data)
            if len(conn.inbuf) > 2 * MAX_REQUEST:
                break
        self._on_data(conn, now)
        self._flush(conn, now)

    def _on_data(self, conn: _Conn, now: float) -> None:
        raise NotImplementedError

    def _flush(self, conn: _Conn, now: float) -> None:
        if conn.outbuf:
            try:
                n = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                n = 0
            del conn.outbuf[:n]
            if not conn.outbuf and not conn.closing:
                self._on_data(conn, now)  # answer what waited for room
                if conn.outbuf:
                    return self._flush(conn, now)
        if not conn.outbuf and (conn.closing or conn.eof):
            self._close(conn)
            return
        want = selectors.EVENT_WRITE if conn.outbuf else selectors.EVENT_READ
        if want != conn.events and self._sel is not None:
            self._sel.modify(conn.sock, want, conn)
            conn.events = want

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is not None and self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass


class ControlServer(_SelectorServer):
    """Serve the control protocol on a Unix socket from one background thread.

    Args:
        path: socket file; its directory is created (mode 0700) when missing.
        capture_flag: object with ``value`` 1/0 (``CaptureFlag``, ``RawValue("b")``).
        stats_provider: returns the flat counter mapping (called per ``stats`` request).
        extra: facts added to the stats JSON; callables are called per request.
        timeout: seconds a connection has to complete a command line (from connecting or
            from its previous answer) before it is closed (``control:timeout``).
        max_connections: open connections at most; see the module's Limits.
        counters: where ``control:<reason>`` is counted (and read back into ``stats``);
            a new ``Stats`` if not given.
        default: ``path`` is the default one: its directory must be safe (see
            :func:`check_runtime_dir`) and is made 0700 when missing.
    """

    kind = "control"

    def __init__(self, path: str, capture_flag: Any,
                 stats_provider: Callable[[], Mapping[str, Any]], *,
                 extra: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 counters: Stats | None = None, default: bool = False) -> None:
        super().__init__(timeout=timeout, max_connections=max_connections, counters=counters)
        self.path = path
        self.capture_flag = capture_flag
        self.stats_provider = stats_provider
        self.extra = dict(extra or {})
        self.default = default
        self.started = time.time()
        self._inode: tuple[int, int] | None = None
        self._bound = False

    def _describe(self) -> str:
        return f"control socket {self.path}"

    # lifecycle
    def start(self) -> "ControlServer":
        """Bind, listen and serve in a daemon thread.

        Raises:
            UnsafeControlPathError: the default path's directory is not the user's alone.
            CaptureError: the path is a socket another live process answers on, a
                non-socket file, or cannot be created.
        """
        _prepare_path(self.path, self.default)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600: no window for others
        try:
            sock.bind(self.path)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise CaptureError(f"control socket {self.path}: already in use") from None
            raise CaptureError(f"control socket {self.path}: cannot bind: {e.strerror}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(LISTEN_BACKLOG)
        self.started = time.time()
        self._start_loop(sock, "sipcaptool-control")
        log.info("control socket listening on %s", self.path)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and remove the socket file (if still ours)."""
        had = self._listen is not None
        self._stop_loop()
        if had:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # requests
    def stats(self) -> dict[str, Any]:
        """The current stats document (the provider's counters and this server's)."""
        counters = _with_counters(_snapshot(self.stats_provider), self.counters)
        return build_stats(counters, capture_on=bool(self.capture_flag.value),
                           started=self.started, extra=self.extra)

    def answer(self, line: str) -> str:
        try:
            return handle_command(line, self.capture_flag, self.stats)
        except Exception as e:  # a bug in a provider must not kill the server
            log.exception("control socket: %r failed", line)
            return f"500 - Internal error: {type(e).__name__}: {e}"

    def _admit(self, sock: socket.socket) -> bool:
        uid = _peer_uid(sock)
        if uid is None or uid in (0, os.geteuid()):
            return True
        self._count("peer-uid")
        return False

    def _on_data(self, conn: _Conn, now: float) -> None:
        while b"\n" in conn.inbuf and len(conn.outbuf) < _MAX_PENDING_OUT:
            raw, conn.inbuf = conn.inbuf.split(b"\n", 1)
            self._reply(conn, raw, now)
        if b"\n" in conn.inbuf:
            return  # more lines wait until the client has read what is pending
        if len(conn.inbuf) > MAX_LINE:
            conn.outbuf += b"500 - Line too long\n"
            conn.inbuf = b""
            conn.closing = True
            self._count("line-too-long")
        elif conn.eof:
            if conn.inbuf.strip():
                self._reply(conn, conn.inbuf, now)
            conn.inbuf = b""
            conn.closing = True

    def _reply(self, conn: _Conn, raw: bytes, now: float) -> None:
        conn.since = now
        conn.deadline = now + self.timeout
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            return
        conn.outbuf += self.answer(line).encode() + b"\n"


# -- client --------------------------------------------------------------------------
class UntrustedPeerError(PermissionError):
    """The process answering on a control socket belongs to another user."""


def send_command(path: str, line: str, timeout: float = 5.0,
                 peer_uids: Collection[int] | None = None) -> str:
    """Send one command and return the answer (without the final newline / empty line).

    A server whose listen backlog is full (many clients at once), or that closes the
    connection before answering (full: see the module's Limits), is tried again until
    ``timeout``; every command is idempotent, so a command is never lost or doubled.
    ``peer_uids``: refuse (:class:`UntrustedPeerError`) unless the answering process runs
    as one of these users (``SO_PEERCRED``), so that no one else's process, wherever its
    socket sits, is told anything.

    Raises:
        FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError, OSError.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    data = line.strip().encode() + b"\n"
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        chunks: list[bytes] = []
        try:
            try:
                s.connect(path)
            except BlockingIOError:  # EAGAIN: the backlog is full; the server is busy
                pass
            else:
                if peer_uids is not None:
                    uid = _peer_uid(s)
                    if uid is not None and uid not in peer_uids:
                        raise UntrustedPeerError(errno.EPERM,
                                                 f"the process answering is {_who(uid)}'s")
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    if chunks:
                        raise
                if chunks or data == b"\n":
                    return b"".join(chunks).decode("utf-8", "replace").rstrip("\n")
        finally:
            s.close()
        # not connected, or closed before a word of answer: try again
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "the server is busy (no answer in time)")
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)


# -- Prometheus ----------------------------------------------------------------------
def _metric_name(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def _label(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(doc: Mapping[str, Any]) -> str:
    """The stats document in the Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
        full = "sipcaptool_" + name
        out.append(f"# HELP {full} {help_}")
        out.append(f"# TYPE {full} {kind}")
        for labels, v in samples:
            out.append(f"{full}{labels} {v}")

    metric("capture_on", "gauge", "1 while messages are stored, 0 while switched off.",
           [("", 1 if doc.get("capture") == "on" else 0)])
    metric("uptime_seconds", "gauge", "Seconds since start.", [("", doc.get("uptime_s", 0))])
    metric("packets_total", "counter", "Packets or datagrams received.",
           [("", doc.get("packets", 0))])
    metric("messages_total", "counter", "Messages decoded.", [("", doc.get("messages", 0))])
    for key, label, help_ in (("stored", "table", "Rows stored, per table."),
                              ("skipped", "reason", "Input that is not a message, per reason."),
                              ("malformed", "reason", "Input that did not decode, per reason."),
                              ("dropped", "reason", "Messages not stored on purpose, per reason."),
                              ("evicted", "reason", "Decoder state given up, per reason."),
                              ("truncated", "column", "Values cut to their column width."),
                              ("db", "event", "Database batches, errors and retries."),
                              ("kernel", "name", "Packets dropped by the kernel or interface."),
                              ("control", "reason",
                               "Control socket connections closed or refused, per reason."),
                              ("metrics", "reason",
                               "Metrics connections closed or refused, per reason.")):
        group = doc.get(key) or {}
        if group:
            metric(f"{key}_total", "counter", help_,
                   [(f'{{{label}="{_label(str(k))}"}}', v) for k, v in group.items()])
    for g in _GAUGES:
        if doc.get(g) is not None:
            metric(_metric_name(g), "gauge", g.replace("_", " ").capitalize() + ".",
                   [("", doc[g])])
    return "\n".join(out) + "\n"


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port); ValueError if malformed."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_s = text.partition(":")
    elif text.isdigit():
        host, port_s = default_host, text
    else:
        raise ValueError(f"{text!r}: expected HOST:PORT, [IPv6]:PORT or PORT")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{text!r}: port must be 0-65535")
    return host or default_host, int(port_s)


class MetricsServer(_SelectorServer):
    """``GET /metrics`` in the Prometheus text format, served from one daemon thread.

    A small HTTP/1.x server of its own rather than ``http.server`` (a thread per
    connection, each waiting as long as its client trickles) or prometheus-client (the
    same ``http.server`` underneath): one request per connection, answered with
    ``Connection: close``; see the module's Limits.

    Args:
        addr: (host, port); port 0 picks a free one (see ``address`` after start).
        stats_provider: as for :class:`ControlServer`.
        capture_flag: optional, for ``sipcaptool_capture_on``.
        request_timeout: seconds a client may take to send its request and read the
            answer; then the connection is closed (``metrics:timeout``).
        max_connections: open connections at most; see the module's Limits.
        counters: where ``metrics:<reason>`` is counted (and read back into the answer).
    """

    kind = "metrics"

    def __init__(self, addr: tuple[str, int], stats_provider: Callable[[], Mapping[str, Any]],
                 *, capture_flag: Any = None, request_timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 counters: Stats | None = None) -> None:
        super().__init__(timeout=request_timeout, max_connections=max_connections,
                         counters=counters)
        self.request_timeout = request_timeout
        self.addr = addr
        self.stats_provider = stats_provider
        self.capture_flag = capture_flag
        self.started = time.time()
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._address or self.addr

    def _describe(self) -> str:
        host, port = self.address
        return f"metrics {host}:{port}"

    def start(self) -> "MetricsServer":
        host, port = self.addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as e:
            sock.close()
            raise CaptureError(f"--metrics {host}:{port}: cannot listen: "
                               f"{e.strerror or e}") from None
        self._address = sock.getsockname()[:2]
        self.started = time.time()
        self._start_loop(sock, "sipcaptool-metrics")
        return self

    def stop(self) -> None:
        self._stop_loop()

    def body(self) -> bytes:
        flag = self.capture_flag
        doc = build_stats(_with_counters(_snapshot(self.stats_provider), self.counters),
                          capture_on=bool(flag.value) if flag is not None else True,
                          started=self.started)
        return prometheus_text(doc).encode()

    def _on_data(self, conn: _Conn, now: float) -> None:
        if conn.closing:
            conn.inbuf = b""
            return
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST:
                self._count("request-too-long")
                self._respond(conn, 431, "Request Header Fields Too Large")
            elif conn.eof:
                conn.closing = True  # the client gave up before its request was whole
            return
        head = conn.inbuf[:end].split(b"\n", 1)[0].rstrip(b"\r")
        conn.inbuf = b""
        parts = head.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._count("bad-request")
            self._respond(conn, 400, "Bad Request")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._count("bad-request")
            self._respond(conn, 405, "Method Not Allowed", extra=b"Allow: GET, HEAD\r\n")
            return
        if target not in (b"/metrics", b"/"):
            self._respond(conn, 404, "Not Found")
            return
        try:
            body = self.body()
        except Exception as e:  # a bug in a provider must not kill the server
            log.exception("metrics: building the answer failed")
            self._respond(conn, 500, "Internal Server Error",
                          body=f"{type(e).__name__}: {e}\n".encode())
            return
        self._respond(conn, 200, "OK", body=body, head_only=method == b"HEAD",
                      ctype=b"text/plain; version=0.0.4; charset=utf-8")
        log.debug("metrics: GET %s 200 %d bytes", target.decode("latin-1"), len(body))

    def _respond(self, conn: _Conn, code: int, reason: str, *, body: bytes | None = None,
                 head_only: bool = False, ctype: bytes = b"text/plain; charset=utf-8",
                 extra: bytes = b"") -> None:
        if body is None:
            body = f"{code} {reason}\n".encode()
        conn.outbuf += (f"HTTP/1.1 {code} {reason}\r\n".encode() + b"Content-Type: " + ctype
                        + f"\r\nContent-Length: {len(body)}\r\n".encode() + extra
                        + b"Connection: close\r\n\r\n")
        if not head_only:
            conn.outbuf += body
        conn.closing = True


class Endpoints:
    """The operator endpoints of one long-running command: control socket and metrics.

    ``control`` is a path, ``"none"`` (no socket) or None (the default path of
    :func:`default_control_path`). An explicit path that another running process
    answers on is refused (CaptureError, exit 5); the *default* path in use (a second
    collector on the same host) only gives a warning and the command runs without a
    control socket -- unless its directory is not safe (another user's, writable by
    others, a symbolic link: :class:`UnsafeControlPathError`, exit 5), which refuses. ``metrics``
    is ``HOST:PORT`` for a Prometheus endpoint, or None. ``settings`` gives
    ``control_timeout`` and ``control_max_connections`` (else those of
    :func:`configure_limits`, the defaults until it is called); both servers count into
    ``counters`` (``control:<reason>``, ``metrics:<reason>``), which their answers
    include.
    """

    def __init__(self, command: str, control: str | None, metrics: str | None,
                 capture_flag: Any, stats_provider: Callable[[], Mapping[str, Any]],
                 extra: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        self.timeout = float(getattr(settings, "control_timeout", _LIMITS["timeout"]))
        self.max_connections = int(getattr(settings, "control_max_connections",
                                           _LIMITS["max_connections"]))
        self.counters = Stats()
        self.command = command
        self.control_arg = control
        self.metrics_arg = metrics
        self.capture_flag = capture_flag
        self.stats_provider = stats_provider
        self.extra = dict(extra or {})
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None

    def start(self) -> "Endpoints":
        import logging

        arg = self.control_arg
        if arg is None or arg.strip().lower() != "none":
            path = arg or default_control_path(self.command)
            server = ControlServer(path, self.capture_flag, self.stats_provider, extra=self.extra,
                                   timeout=self.timeout, max_connections=self.max_connections,
                                   counters=self.counters, default=not arg)
            try:
                self.control = server.start()
            except CaptureError as e:
                if arg or isinstance(e, UnsafeControlPathError):
                    # asked for explicitly, or a directory someone else may have made
                    # to steer the collector: refuse to run
                    raise
                logging.getLogger("sipcaptool").warning(
                    "no control socket: %s (give --control PATH, or --control none)", e)
        if self.metrics_arg:
            try:
                addr = parse_hostport(self.metrics_arg)
            except ValueError as e:
                self.stop()
                raise ConfigError(f"--metrics {e}") from None
            try:
                self.metrics = MetricsServer(addr, self.stats_provider,
                                             capture_flag=self.capture_flag,
                                             request_timeout=self.timeout,
                                             max_connections=self.max_connections,
                                             counters=self.counters).start()
            except OSError as e:
                self.stop()
                raise CaptureError(f"--metrics {self.metrics_arg}: cannot listen: "
                                   f"{e.strerror or e}") from None
        return self

    def describe(self) -> str:
        parts = []
        if self.control is not None:
            parts.append(f"control {self.control.path}")
        if self.metrics is not None:
            host, port = self.metrics.address
            parts.append(f"metrics http://{host}:{port}/metrics")
        return ", ".join(parts)

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
