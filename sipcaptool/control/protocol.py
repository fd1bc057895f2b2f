"""The control protocol: switch capture on and off, read statistics, while a collector runs.

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
``control_timeout`` seconds (see Limits in :mod:`sipcaptool.control.loop`).

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
``stats`` answers the stats document of :mod:`sipcaptool.control.document`, the same
keys as the end-of-run summary's.

The package
-----------
``protocol`` (this module: the line protocol, pure, no sockets), ``document`` (the stats
document and its text table), ``paths`` (where the socket lives and who may use it),
``server`` (``ControlServer``), ``loop`` (the selector loop both servers run),
``client`` (``send_command``), ``metrics`` (the Prometheus text and ``MetricsServer``),
``endpoints`` (``Endpoints``: what a long-running command starts).

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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .document import format_stats_text

__all__ = [
    "BAD_PARAMETER",
    "DISABLED",
    "ENABLED",
    "HELP_LINES",
    "MAX_LINE",
    "NOT_ENOUGH_PARAMETERS",
    "handle_command",
]

log = logging.getLogger("sipcaptool.control")

BAD_PARAMETER = "500 - Bad parameter (on, off or check)"
NOT_ENOUGH_PARAMETERS = "500 - Not enough parameters (on, off or check)"
ENABLED = "Enabled"
DISABLED = "Disabled"
MAX_LINE = 4096

HELP_LINES = [
    "status on       store messages (answer: Enabled)",
    "status off      keep receiving, store nothing (answer: Disabled)",
    "status check    report Enabled or Disabled without changing it",
    "stats           counters since start, one line of JSON",
    "stats text      counters since start, a readable table",
    "ping            answer pong",
    "help            this list",
]


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

