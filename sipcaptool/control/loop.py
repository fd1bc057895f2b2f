"""The loop both control servers run: one thread, a selector, bounded connections.

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
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from typing import cast

from ..stats import Stats

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "IDLE_GRACE",
    "LISTEN_BACKLOG",
    "MAX_REQUEST",
    "SILENT_GRACE",
    "Conn",
    "SelectorServer",
]

log = logging.getLogger("sipcaptool.control")

MAX_REQUEST = 8192            # bytes of an HTTP request head on the metrics port
DEFAULT_TIMEOUT = 5.0         # seconds (setting control_timeout)
DEFAULT_MAX_CONNECTIONS = 64  # per server (setting control_max_connections)
LISTEN_BACKLOG = max(128, socket.SOMAXCONN)
IDLE_GRACE = 1.0              # a connection idle this long may make room for a new one
SILENT_GRACE = 0.1            # ... or this long, if it has sent nothing at all


class Conn:
    """One client connection of a :class:`SelectorServer`."""

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


class SelectorServer:
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
        self._conns: dict[socket.socket, Conn] = {}
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
                        cast(socket.socket, key.fileobj).recv(64)
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
            conn = Conn(sock, now, self.timeout)
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

    def _idlest(self, now: float, new: Conn) -> Conn | None:
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

    def _read(self, conn: Conn, now: float) -> None:
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

    def _on_data(self, conn: Conn, now: float) -> None:
        raise NotImplementedError

    def _flush(self, conn: Conn, now: float) -> None:
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

    def _close(self, conn: Conn) -> None:
        if self._conns.pop(conn.sock, None) is not None and self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass

