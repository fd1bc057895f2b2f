"""``ControlServer``: the control protocol served on a Unix socket."""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import CaptureError
from ..stats import Stats
from .document import build_stats, snapshot, with_counters
from .loop import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, LISTEN_BACKLOG, Conn, SelectorServer
from .paths import peer_uid, prepare_path
from .protocol import MAX_LINE, handle_command

__all__ = ["ControlServer"]

log = logging.getLogger("sipcaptool.control")

_MAX_PENDING_OUT = 256 * 1024  # answers waiting for a client that does not read


class ControlServer(SelectorServer):
    """Serve the control protocol on a Unix socket from one background thread.

    Args:
        path: socket file; its directory is created (mode 0700) when missing.
        capture_flag: object with ``value`` 1/0 (``CaptureFlag``, ``RawValue("b")``).
        stats_provider: returns the flat counter mapping (called per ``stats`` request).
        extra: facts added to the stats JSON; callables are called per request.
        timeout: seconds a connection has to complete a command line (from connecting or
            from its previous answer) before it is closed (``control:timeout``).
        max_connections: open connections at most; see Limits in :mod:`sipcaptool.control.loop`.
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
    def start(self) -> ControlServer:
        """Bind, listen and serve in a daemon thread.

        Raises:
            UnsafeControlPathError: the default path's directory is not the user's alone.
            CaptureError: the path is a socket another live process answers on, a
                non-socket file, or cannot be created.
        """
        prepare_path(self.path, self.default)
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

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # requests
    def stats(self) -> dict[str, Any]:
        """The current stats document (the provider's counters and this server's)."""
        counters = with_counters(snapshot(self.stats_provider), self.counters)
        return build_stats(counters, capture_on=bool(self.capture_flag.value),
                           started=self.started, extra=self.extra)

    def answer(self, line: str) -> str:
        try:
            return handle_command(line, self.capture_flag, self.stats)
        except Exception as e:  # a bug in a provider must not kill the server
            log.exception("control socket: %r failed", line)
            return f"500 - Internal error: {type(e).__name__}: {e}"

    def _admit(self, sock: socket.socket) -> bool:
        uid = peer_uid(sock)
        if uid is None or uid in (0, os.geteuid()):
            return True
        self._count("peer-uid")
        return False

    def _on_data(self, conn: Conn, now: float) -> None:
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

    def _reply(self, conn: Conn, raw: bytes, now: float) -> None:
        conn.since = now
        conn.deadline = now + self.timeout
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            return
        conn.outbuf += self.answer(line).encode() + b"\n"

