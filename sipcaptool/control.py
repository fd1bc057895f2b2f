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
it, as ``socat`` does at the end of its input).

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
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import CaptureError, ConfigError

__all__ = [
    "BAD_PARAMETER",
    "ControlServer",
    "MetricsServer",
    "NOT_ENOUGH_PARAMETERS",
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
           ("db", "db"), ("kernel", "kernel"))
_GAUGES = ("queue_depth", "spool_bytes", "spool_batches")


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


def _prepare_path(path: str) -> None:
    """Make the directory (0700 when we create it); remove a stale socket; refuse a live one."""
    directory = os.path.dirname(os.path.abspath(path))
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
            "queue_depth", "spool_bytes", "spool_batches", "other"}
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


# -- the server ----------------------------------------------------------------------
class ControlServer:
    """Serve the control protocol on a Unix socket from a background thread.

    Args:
        path: socket file; its directory is created (mode 0700) when missing.
        capture_flag: object with ``value`` 1/0 (``CaptureFlag``, ``RawValue("b")``).
        stats_provider: returns the flat counter mapping (called per ``stats`` request).
        extra: facts added to the stats JSON; callables are called per request.
    """

    def __init__(self, path: str, capture_flag: Any,
                 stats_provider: Callable[[], Mapping[str, Any]], *,
                 extra: dict[str, Any] | None = None) -> None:
        self.path = path
        self.capture_flag = capture_flag
        self.stats_provider = stats_provider
        self.extra = dict(extra or {})
        self.started = time.time()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._inode: tuple[int, int] | None = None

    # lifecycle
    def start(self) -> "ControlServer":
        """Bind, listen and serve in a daemon thread.

        Raises:
            CaptureError: the path is a socket another live process answers on, a
                non-socket file, or cannot be created.
        """
        _prepare_path(self.path)
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
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self.started = time.time()
        self._thread = threading.Thread(target=self._serve, name="sipcaptool-control",
                                        daemon=True)
        self._thread.start()
        log.info("control socket listening on %s", self.path)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and remove the socket file (if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            for c in list(self._conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
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
        """The current stats document."""
        return build_stats(_snapshot(self.stats_provider),
                           capture_on=bool(self.capture_flag.value),
                           started=self.started, extra=self.extra)

    def answer(self, line: str) -> str:
        try:
            return handle_command(line, self.capture_flag, self.stats)
        except Exception as e:  # a bug in a provider must not kill the server
            log.exception("control socket: %r failed", line)
            return f"500 - Internal error: {type(e).__name__}: {e}"

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                time.sleep(0.05)
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True,
                             name="sipcaptool-control-client").start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        try:
            conn.settimeout(None)  # inside the try: stop() may have closed it already
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    if buf.strip():
                        self._reply(conn, buf)
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._reply(conn, raw)
                if len(buf) > MAX_LINE:
                    conn.sendall(b"500 - Line too long\n")
                    break
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _reply(self, conn: socket.socket, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            return
        out = self.answer(line)
        conn.sendall(out.encode() + b"\n")


# -- client --------------------------------------------------------------------------
def send_command(path: str, line: str, timeout: float = 5.0) -> str:
    """Send one command and return the answer (without the final newline / empty line).

    Raises:
        FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError, OSError.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(line.strip().encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    return b"".join(chunks).decode("utf-8", "replace").rstrip("\n")


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
                              ("kernel", "name", "Packets dropped by the kernel or interface.")):
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


class MetricsServer:
    """``GET /metrics`` in the Prometheus text format, served from a daemon thread.

    Args:
        addr: (host, port); port 0 picks a free one (see ``address`` after start).
        stats_provider: as for :class:`ControlServer`.
        capture_flag: optional, for ``sipcaptool_capture_on``.
        request_timeout: seconds a client may take to send its request; a connection
            that sends nothing is closed then (it would hold a thread and a descriptor
            of the capturing process for ever).
    """

    def __init__(self, addr: tuple[str, int], stats_provider: Callable[[], Mapping[str, Any]],
                 *, capture_flag: Any = None, request_timeout: float = 10.0) -> None:
        self.request_timeout = request_timeout
        self.addr = addr
        self.stats_provider = stats_provider
        self.capture_flag = capture_flag
        self.started = time.time()
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            return self.addr
        return self._httpd.server_address[:2]

    def start(self) -> "MetricsServer":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = self.request_timeout

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                flag = owner.capture_flag
                doc = build_stats(_snapshot(owner.stats_provider),
                                  capture_on=bool(flag.value) if flag is not None else True,
                                  started=owner.started)
                body = prometheus_text(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("metrics: " + format, *args)

        host, port = self.addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        try:
            self._httpd = Server((host, port), Handler)
        except OSError as e:
            raise CaptureError(f"--metrics {host}:{port}: cannot listen: {e.strerror}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sipcaptool-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class Endpoints:
    """The operator endpoints of one long-running command: control socket and metrics.

    ``control`` is a path, ``"none"`` (no socket) or None (the default path of
    :func:`default_control_path`). An explicit path that another running process
    answers on is refused (CaptureError, exit 5); the *default* path in use (a second
    collector on the same host) only gives a warning and the command runs without a
    control socket. ``metrics`` is ``HOST:PORT`` for a Prometheus endpoint, or None.
    """

    def __init__(self, command: str, control: str | None, metrics: str | None,
                 capture_flag: Any, stats_provider: Callable[[], Mapping[str, Any]],
                 extra: Mapping[str, Any] | None = None) -> None:
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
            server = ControlServer(path, self.capture_flag, self.stats_provider, extra=self.extra)
            try:
                self.control = server.start()
            except CaptureError as e:
                if arg:  # asked for explicitly: refuse to run without it
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
                                             capture_flag=self.capture_flag).start()
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
