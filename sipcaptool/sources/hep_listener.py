"""HEP listener: UDP and TCP sockets feeding decoded HEP packets to a Pipeline.

One module of about 700 lines (a third of it this text): the receive loop, the table of
TCP connections (idle eviction, the limit) and the drain at a stop share one selector,
one receive buffer and one set of counters, and are read together when a packet is lost.
The sockets themselves are opened by :mod:`sipcaptool.sources.hep_sockets`.

Why ``selectors`` and not ``asyncio``
-------------------------------------
The hot path is UDP: one HEP packet per datagram, tens of thousands per second, in a
single Python process. ``asyncio``'s datagram transport reads one datagram per event-loop
turn and calls ``datagram_received`` through the loop's callback machinery (handle
objects, scheduling), which costs several microseconds per datagram and gives no way to
drain a socket in a tight loop. With ``selectors`` (epoll on Linux) and non-blocking
sockets the loop waits only when there is nothing to read, then drains each ready UDP
socket with ``recvfrom_into`` into one preallocated buffer until ``EAGAIN`` (bounded per
turn, so TCP connections and the stop request are served in between). TCP agents keep
few long-lived connections; each is a non-blocking socket in the same selector, framed
by :class:`~sipcaptool.decode.hep_stream.HepStream`. Signals stay simple: the handler
only sets a flag and writes one byte to a socketpair registered in the selector.

The process running this loop never waits on the database: the Pipeline hands
ready-made batches to its writer process. What absorbs bursts while the loop is busy is
the socket receive buffer, so it is made large (``SO_RCVBUFFORCE`` when allowed, since
the kernel caps ``SO_RCVBUF`` at ``net.core.rmem_max``), with a warning when the kernel
gives less than asked.

Counters (in the shared :class:`~sipcaptool.stats.Stats`):

* ``packets``: UDP datagrams and TCP-framed HEP packets read;
* ``malformed:<reason>``: datagrams/packets that did not decode (DecodeError reasons of
  :mod:`sipcaptool.decode.hep`, e.g. ``hep-bad-version``, ``hep-truncated``,
  ``hep3-stream-bad-length``, ``hep3-stream-truncated`` for a connection closed in the
  middle of a packet, ``internal-error`` for an unexpected exception on one input);
* ``dropped:auth``: HEP packets without the required authentication key or with
  another, one per packet (UDP, TCP, each packet of a multi-packet datagram; in a
  gzipped datagram decoding stops at the first such packet, see ``decode_datagram``);
* ``refused-bytes:<reason>``: the bytes of what ``dropped:auth`` and ``malformed:*``
  count (as received; inside a gzipped datagram partly kept, the inflated packets);
* ``evicted:tcp-limit``: with ``max_connections`` open, a new agent is taken and the
  connection that has been silent longest is closed for it (a packet half-received on
  it is also counted as ``hep3-stream-truncated``);
* ``evicted:tcp-idle``: connections closed after ``tcp_idle_timeout`` seconds without
  data (a packet half-received on one is also counted as ``hep3-stream-truncated``);
* ``dropped:shutdown``: datagrams and TCP-framed packets that were in the sockets at
  the stop request but could not be stored within ``drain_limit`` seconds (read and
  counted, see :meth:`HepCollector._drain`); a packet only partly received on a TCP
  connection closed at the stop is ``malformed:hep3-stream-truncated``;
* ``kernel:udp-after-stop``: datagrams that arrived after the stop request, refused by
  the kernel (the drain reads what was there at the stop, not new traffic);
* ``tls:<reason>``: TLS connections (``--listen tls:``) refused before any HEP was read:
  ``plain-text`` (the client does not speak TLS), ``bad-certificate`` (no or an
  unaccepted client certificate with ``--tls-ca``, or the client refused ours),
  ``handshake-timeout`` (no complete handshake within ``handshake_timeout`` seconds),
  ``closed`` and ``handshake-failed``; ``malformed:tls-on-plain-port``: a TLS client on
  a plain TCP listener (its connection is closed).

TLS: an accepted connection is wrapped without handshaking and the handshake is driven
by the selector (``do_handshake`` again on each WANT_READ/WANT_WRITE), so a slow or
hostile client never blocks the loop; a handshake counts against ``max_connections``
like any connection and must end within ``handshake_timeout``.

Stopping: at the stop each TCP/TLS connection's sending side is closed (a FIN), which
tells an agent that reads its connection (``sipcaptool live/replay --hep-to``) that this
collector is going: it sends its next messages elsewhere and closes its side. Once the
bytes queued at the stop are read, a connection is read on until the agent closes it,
for at most ``LINGER`` seconds and within the drain time, and what arrives is stored,
so nothing an agent sent before it noticed is lost.

Accepted TCP connections have TCP keepalive on (first probe after ``KEEPALIVE_IDLE``
seconds of silence, then every ``KEEPALIVE_INTERVAL``, ``KEEPALIVE_COUNT`` probes): an
agent that vanished without closing (power cut, a firewall that forgot the flow) is
noticed by the kernel within about two minutes and its connection closed, so dead
connections do not pile up against ``max_connections``. An idle but living agent is
kept. ``tcp_idle_timeout`` closes even living connections that send nothing for that
long (``sipcaptool hep`` defaults to 300 s, see its ``--tcp-idle-timeout``): agents such
as Kamailio's siptrace keep one connection open and may be quiet for hours at night;
an agent that reads its connection (Kamailio does) sees it closed and connects again
for its next message. The default is well past the keepalive timers above (about two
minutes to find a dead peer) and the minute-scale heartbeats agents send, so only a
connection that is alive and truly silent for five minutes is closed; at the connection
limit the longest-silent one is closed for a new agent anyway (``evicted:tcp-limit``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import signal
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..decode.hep import MAX_INFLATED, HepPacket, decode_datagram
from ..decode.hep_stream import HepStream
from ..errors import DecodeError, StoreError
from ..record import CapturedMessage
from ..stats import Stats
from .bpf import attach_filter
from .hep_sockets import MAX_CONNECTIONS, Listener, queued_bytes, set_keepalive

log = logging.getLogger("sipcaptool.hep")

Address = tuple[Any, ...] | str  # a peer as the socket module gives it
# a listening socket resting after accept() failed: (until, socket, its selector data)
_Paused = tuple[float, socket.socket, tuple[str, "Listener", socket.socket]]

__all__ = ["HepCollector"]

UDP_BURST = 512          # datagrams read from one socket before looking at the others
TCP_READ = 256 * 1024    # bytes per recv() on a TCP connection
DRAIN_LIMIT = 30.0       # default of the stop_drain_timeout setting, seconds
DRAIN_STEP = 256         # datagrams read per socket between two looks at the drain clock
_DROP_ALL = [(0x06, 0, 0, 0)]  # classic BPF "ret #0": the socket takes no new datagram
LOG_INTERVAL = 10.0      # seconds between two log lines about the same sender
_IDLE_SWEEP = 1.0        # seconds between two looks for idle connections
ACCEPT_PAUSE = 1.0       # seconds a listener waits after accept() ran out of descriptors
_LOG_SENDERS_MAX = 10000
HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to complete its handshake
LINGER = 1.0             # at a stop: seconds to read on until an agent closes its side


def _pending(sock: socket.socket) -> int:
    """Bytes OpenSSL has decrypted and not handed out yet (0 for a plain socket)."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


class _Conn:
    __slots__ = ("sock", "listener", "stream", "peer", "last", "handshake_until", "fresh")

    def __init__(self, sock: socket.socket, listener: Listener, peer: Address) -> None:
        self.sock = sock
        self.listener = listener
        self.stream = HepStream()
        self.peer = peer
        self.last = time.monotonic()
        self.handshake_until = 0.0  # TLS: the handshake's deadline while it runs
        self.fresh = True           # nothing read yet


class HepCollector:
    """The receive loop: read HEP from the bound sockets and submit each packet.

    Args:
        listeners: (Listener, bound non-blocking socket) pairs, from :func:`open_listeners`.
        submit: called with each decoded :class:`~sipcaptool.record.CapturedMessage`
            (``Pipeline.submit``).
        stats: counters updated in place.
        auth_key: when given, packets must carry it in chunk 0x000e (checked before
            anything of the packet is inflated).
        max_inflated: inflate budget per datagram / TCP-framed packet (bytes that its
            compressed parts may inflate to, together; see ``decode_datagram``).
        count: stop after this many packets (None: no limit).
        duration: stop after this many seconds (None: no limit).
        tick: called about every ``tick_interval`` seconds from the loop (kernel drop
            counters, worker snapshots for the control socket), or None. It must not
            wait for the database.
        on_progress: called with the number of packets read in each loop turn; a true
            result stops the loop (the workers use it for a shared --count).
        on_store_error: called with a StoreError raised while submitting (a batch the
            database refused); None: re-raise it, which ends :meth:`run`.
        max_connections: TCP connections held at most; a new one past it closes the
            one silent longest (``evicted:tcp-limit``).
        drain_limit: seconds spent at most, after a stop request, storing what is already
            queued in the sockets (a full 64 MiB buffer holds about 90,000 datagrams);
            what is left then is read and counted as ``dropped:shutdown``. None or 0:
            no limit (see :meth:`_drain`).
        tcp_idle_timeout: close a TCP connection that sent nothing for this many
            seconds (None or 0: never; dead peers are found by TCP keepalive anyway).
        tls_context: the server context of the ``tls`` listeners
            (:func:`sipcaptool.tls.server_context`); None: there are none.
        handshake_timeout: seconds a TLS client has to complete its handshake.
    """

    def __init__(self, listeners: list[tuple[Listener, socket.socket]],
                 submit: Callable[[CapturedMessage], None], stats: Stats, *, auth_key: bytes | None = None,
                 max_inflated: int = MAX_INFLATED,
                 count: int | None = None, duration: float | None = None,
                 tick: Callable[[], None] | None = None, tick_interval: float = 0.25,
                 on_progress: Callable[[int], bool] | None = None,
                 on_store_error: Callable[[StoreError], None] | None = None,
                 max_connections: int = MAX_CONNECTIONS, drain_limit: float | None = DRAIN_LIMIT,
                 tcp_idle_timeout: float | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.listeners = listeners
        self.submit = submit
        self.stats = stats
        self.auth_key = auth_key
        self.max_inflated = max_inflated
        self.count = count
        self.duration = duration
        self.tick = tick
        self.tick_interval = tick_interval
        self.on_progress = on_progress
        self.on_store_error = on_store_error
        self.max_connections = max(1, int(max_connections))
        self.drain_limit = drain_limit
        self.tcp_idle_timeout = tcp_idle_timeout or None
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self._handshaking = 0
        self._next_sweep = 0.0
        self._paused: list[_Paused] = []  # listeners resting
        self._last_accept_log = -LOG_INTERVAL
        self.started = time.monotonic()
        self.stop_reason: str | None = None
        self._stop = False
        self._buf = bytearray(65536)
        self._mv = memoryview(self._buf)
        # fd -> connection, least recently active first (the eviction order)
        self._conns: OrderedDict[int, _Conn] = OrderedDict()
        self._budgets: dict[int, int] = {}   # at the stop: fd -> bytes queued then
        self._drops_at_stop: int | None = None
        self._hurry = False                  # a second signal: count what is left now
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._logged: dict[tuple[str, str], float] = {}
        self._errs: list[DecodeError] = []

    # -- control ----------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop (main thread only); a second one
        while the sockets are drained ends the drain's storing at once (what is left is
        read and counted, see :meth:`_drain`)."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            if self._stop:
                self._hurry = True
            self.stop(signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    # -- loop -------------------------------------------------------------------------
    def run(self) -> None:
        sel = self._sel
        for lst, sock in self.listeners:
            kind = "udp" if lst.spec.transport == "udp" else "accept"
            sel.register(sock, selectors.EVENT_READ, (kind, lst, sock))
        sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
        deadline = None if self.duration is None else self.started + self.duration
        next_tick = time.monotonic() + self.tick_interval
        stats = self.stats
        try:
            while not self._stop:
                now = time.monotonic()
                timeout = max(0.0, next_tick - now)
                if deadline is not None:
                    if now >= deadline:
                        self.stop("duration")
                        break
                    timeout = min(timeout, deadline - now)
                before = stats["packets"]
                for key, _ev in sel.select(timeout):
                    kind, a, b = key.data
                    if kind == "udp":
                        self._read_udp(b, a, UDP_BURST)
                    elif kind == "tcp":
                        if self._read_tcp(a):
                            self._touch(a)
                    elif kind == "tls":
                        self._handshake(a)
                    elif kind == "accept":
                        self._accept(b, a)
                    else:  # "wake"
                        try:
                            self._wake_r.recv(4096)
                        except OSError:
                            pass
                    if self._stop:
                        break
                got = stats["packets"] - before
                if got and self.on_progress is not None and self.on_progress(got):
                    self.stop("count")
                if time.monotonic() >= next_tick:
                    if self._paused:
                        self._resume_accepting()
                    if self.tick is not None:
                        self.tick()
                    if self.tcp_idle_timeout is not None:
                        self.close_idle()
                    if self._handshaking:
                        self._handshake_timeouts()
                    next_tick = time.monotonic() + self.tick_interval
            self._drain()
        finally:
            self._close_all()

    def _drain(self) -> None:
        """After a stop: read everything the kernel had queued for us at the stop.

        From the stop on, the sockets take nothing new: each UDP socket gets a socket
        filter that refuses every datagram (counted by the kernel, reported as
        ``kernel:udp-after-stop``), the TCP listening sockets are closed after the
        connections the kernel completed are taken, and of each TCP connection the bytes
        queued at the stop are read. So the drain ends even under sustained traffic, and
        what it reads is what had arrived.

        What it reads is stored for up to ``drain_limit`` seconds (None or 0: however
        long the database takes). What is left when that time is up is still read, and
        counted as ``dropped:shutdown`` (one per datagram or TCP-framed packet), never
        left in a socket closed unread. A packet only partly received on a TCP
        connection is counted as ``malformed:hep3-stream-truncated``, as on any
        connection closed in the middle of one. With --count nothing is drained (the
        limit is exact); after the writer process died (``db-error``) nothing can be
        stored, so all is counted. A second signal ends the storing at once.
        """
        if self.stop_reason == "count":
            return
        self.count = None
        self._seal()
        end = None if not self.drain_limit else time.monotonic() + self.drain_limit
        if self.stop_reason == "db-error":
            end = time.monotonic()

        def in_time() -> bool:
            return not self._hurry and (end is None or time.monotonic() < end)

        # (the UDP sockets stay sealed after they are closed here: the writer process,
        # forked after they were bound, holds copies until it has written everything)
        udp = [(lst, sock) for lst, sock in self.listeners if lst.spec.transport == "udp"]
        while udp and in_time():
            udp = [(lst, sock) for lst, sock in udp
                   if self._read_udp(sock, lst, DRAIN_STEP) == DRAIN_STEP]
        for conn in list(self._conns.values()):
            fd = conn.sock.fileno()
            while in_time() and self._budgets.get(fd, 0) > 0 and conn.sock.fileno() >= 0:
                before = conn.listener.bytes
                if not self._read_tcp(conn):
                    break
                self._budgets[fd] -= conn.listener.bytes - before
        self._linger(in_time)
        # the rest: read it and count it
        left = 0
        for lst, sock in udp:
            left += self._discard_udp(sock, lst)
        for conn in list(self._conns.values()):
            left += self._discard_tcp(conn, self._budgets.get(conn.sock.fileno(), 0))
        if left:
            why = ("a second signal came" if self._hurry else
                   f"not stored within {self.drain_limit or 0:g}s (stop_drain_timeout)")
            log.error("stopping: %d HEP packets received before the stop are dropped (%s), "
                      "counted as dropped:shutdown", left, why)

    def _seal(self) -> None:
        """At the stop: no new datagrams or connections; note what each TCP connection
        holds (see :meth:`_drain`)."""
        self.update_kernel_stats()
        self._drops_at_stop = self.stats["kernel:udp-drops"]
        log.info("stopping (%s): reading what the sockets hold; new datagrams and "
                 "connections are refused", self.stop_reason)
        for lst, sock in self.listeners:
            if lst.spec.transport == "udp":
                try:
                    attach_filter(sock, _DROP_ALL)
                except OSError as e:  # pragma: no cover - Linux has socket filters
                    log.warning("%s: cannot refuse new datagrams while stopping: %s",
                                lst.label, e)
                continue
            # connections the kernel completed before the stop may hold data already:
            # take them, then close the listening socket (no new connections)
            if sock.fileno() >= 0:
                self._accept(sock, lst, limit=self.max_connections)
                try:
                    # stop listening even where a copy of the socket lives on (the writer
                    # process, forked after it was bound, holds one until it exits)
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        for fd, conn in list(self._conns.items()):
            if conn.handshake_until:
                self._close_conn(conn)  # no HEP came over it yet
                continue
            self._budgets[fd] = queued_bytes(conn.sock) + _pending(conn.sock)
            try:
                # a FIN: an agent reading its connection knows this collector is going
                socket.socket.shutdown(conn.sock, socket.SHUT_WR)
            except OSError:
                pass

    def _linger(self, in_time: Callable[[], bool]) -> None:
        """After the bytes queued at the stop: read each connection until its agent
        closes it (it saw the FIN), for LINGER seconds at most, storing what comes."""
        end = time.monotonic() + LINGER
        while in_time():
            conns = [c for c in self._conns.values()
                     if self._budgets.get(c.sock.fileno(), 0) <= 0]
            left = end - time.monotonic()
            if not conns or left <= 0:
                return
            try:
                ready, _w, _x = select.select([c.sock for c in conns], [], [], min(left, 0.05))
            except (OSError, ValueError):
                return
            for c in conns:
                if c.sock in ready:
                    self._read_tcp(c)

    def _discard_udp(self, sock: socket.socket, lst: Listener) -> int:
        """Read what is left in a sealed UDP socket, counting it as dropped:shutdown."""
        recv = sock.recv_into
        buf = self._buf
        n = nbytes = 0
        # a sealed socket runs dry; without the filter, stop at what a full buffer holds
        most = max(4096, lst.rcvbuf // 256)
        while n < most:
            try:
                k = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                self.stats["skipped:socket-error"] += 1
                most -= 1
                continue
            n += 1
            nbytes += k
        self.stats["packets"] += n
        self.stats["dropped:shutdown"] += n
        lst.packets += n
        lst.bytes += nbytes
        return n

    def _discard_tcp(self, conn: _Conn, budget: int) -> int:
        """Read the ``budget`` bytes a connection held at the stop and not read yet; count
        its packets as dropped:shutdown (a packet only partly received as
        ``malformed:hep3-stream-truncated``)."""
        lst = conn.listener
        n = 0
        while budget > 0 and conn.sock.fileno() >= 0:
            try:
                data = conn.sock.recv(min(budget, TCP_READ))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                break
            budget -= len(data)
            lst.bytes += len(data)
            try:
                got = len(conn.stream.feed(data))
            except DecodeError as e:
                self._bad_stream(conn, e)
                got = 0
            n += got
            lst.packets += got
            self.stats["packets"] += got
            if conn.stream.error is not None:
                self._bad_stream(conn, conn.stream.error)
        if conn.sock.fileno() >= 0 and conn.stream.buffered:
            # its end had not arrived: cut off, as on any connection closed mid-packet
            self.stats["malformed:hep3-stream-truncated"] += 1
        self.stats["dropped:shutdown"] += n
        return n

    def update_kernel_stats(self) -> None:
        """Set ``kernel:udp-drops``: datagrams the kernel dropped on our UDP sockets
        because their receive buffer was full (from /proc/net/udp and udp6)."""
        inodes = set()
        for lst, sock in self.listeners:
            if lst.spec.transport == "udp":
                try:
                    inodes.add(os.fstat(sock.fileno()).st_ino)
                except OSError:
                    pass
        if not inodes:
            return
        drops = 0
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(name) as f:
                    next(f, None)
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 13 and int(parts[9]) in inodes:
                            drops += int(parts[-1])
            except (OSError, ValueError):
                continue
        self.stats["kernel:udp-drops"] = drops

    def _close_all(self) -> None:
        self.update_kernel_stats()
        if self._drops_at_stop is not None:
            # the sealed sockets' filter counts as a kernel drop: that is new traffic
            # refused while stopping, not a receive buffer that overflowed
            after = self.stats["kernel:udp-drops"] - self._drops_at_stop
            self.stats["kernel:udp-drops"] = self._drops_at_stop
            if after > 0:
                self.stats["kernel:udp-after-stop"] = after
        for conn in list(self._conns.values()):
            self._close_conn(conn)
        for _lst, sock in self.listeners:
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except OSError:
            pass
        self._wake_r.close()
        self._wake_w.close()

    # -- UDP --------------------------------------------------------------------------
    def _read_udp(self, sock: socket.socket, lst: Listener, limit: int) -> int:
        """Read up to ``limit`` datagrams; return how many were read."""
        recv = sock.recvfrom_into
        buf = self._buf
        mv = self._mv
        handle = self._handle
        count = self.count
        stats = self.stats
        n = 0
        nbytes_total = 0
        while n < limit:
            try:
                nbytes, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ECONNREFUSED queued by ICMP; keep going
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                stats["skipped:socket-error"] += 1
                continue
            n += 1
            nbytes_total += nbytes
            stats["packets"] += 1
            handle(bytes(mv[:nbytes]), addr)
            if count is not None and stats["packets"] >= count:
                self.stop("count")
                break
        lst.packets += n
        lst.bytes += nbytes_total
        return n

    def _handle(self, data: bytes, addr: Address) -> None:
        """Decode one datagram (or one TCP-framed packet) and submit its packets.

        Every HEP packet of it is either submitted or counted: a refused packet once
        (``dropped:auth`` or ``malformed:<reason>``, its bytes in
        ``refused-bytes:<counter reason>``), and a batch the database refused while one
        packet was submitted does not keep the packets after it from being submitted.
        """
        errs = self._errs
        pkts: list[HepPacket] = []
        try:
            pkts = decode_datagram(data, now_us=time.time_ns() // 1000,
                                   auth_key=self.auth_key, errors=errs,
                                   max_inflated=self.max_inflated)
        except DecodeError as e:
            self._reject(e, addr)
        except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the collector
            errs.clear()
            self._internal_error(e, addr)
            return
        if errs:
            for err in errs:
                self._reject(err, addr)
            errs.clear()
        submit = self.submit
        store_error: StoreError | None = None
        # the capture point of these messages with their node (the dedup window)
        agent = addr[0] if isinstance(addr, tuple) else addr
        for p in pkts:
            try:
                msg = p.to_message()
                msg.capture_point = agent
                submit(msg)
            except StoreError as e:
                # an earlier batch's failure; this message was taken all the same
                store_error = store_error or e
            except Exception as e:  # noqa: BLE001 - a parser bug must not stop the collector
                self._internal_error(e, addr)
        if store_error is not None:
            if self.on_store_error is None:
                raise store_error
            self.on_store_error(store_error)

    def _internal_error(self, e: Exception, addr: Address) -> None:
        self.stats["malformed:internal-error"] += 1
        self._log_sender(addr, "internal", "%s: %s: %s", type(e).__name__, e, "input dropped",
                         level=logging.ERROR)

    def _reject(self, e: DecodeError, addr: Address) -> None:
        """Count one refused part of a datagram/packet: one HEP packet, or the bytes
        that could not be cut into packets."""
        size = getattr(e, "size", 0)
        if e.reason == "hep-auth":
            self.stats["dropped:auth"] += 1
            if size:
                self.stats["refused-bytes:auth"] += size
            self._log_sender(addr, "auth", "HEP packet dropped: %s", e.detail or "bad key",
                             level=logging.WARNING)
        else:
            self.stats["malformed:" + e.reason] += 1
            if size:
                self.stats["refused-bytes:" + e.reason] += size
            self._log_sender(addr, e.reason, "HEP input dropped: %s", e, level=logging.DEBUG)

    def _log_sender(self, addr: Address, what: str, fmt: str, *args: object,
                    level: int = logging.WARNING) -> None:
        """Log at most one line per sender address and kind per LOG_INTERVAL seconds."""
        if not log.isEnabledFor(level):
            return
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        key = (host, what)
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            return
        if len(self._logged) >= _LOG_SENDERS_MAX:
            self._logged.clear()
        self._logged[key] = now
        port = addr[1] if isinstance(addr, tuple) and len(addr) > 1 else 0
        sender = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.log(level, "from %s: " + fmt + " (at most one such line per sender every %ds)",
                sender, *args, int(LOG_INTERVAL))

    # -- TCP --------------------------------------------------------------------------
    def close_idle(self, now: float | None = None) -> int:
        """Close the connections silent for longer than ``tcp_idle_timeout``; how many."""
        now = time.monotonic() if now is None else now
        if self.tcp_idle_timeout is None or now < self._next_sweep:
            return 0
        self._next_sweep = now + min(_IDLE_SWEEP, self.tcp_idle_timeout)
        limit = now - self.tcp_idle_timeout
        idle = []
        for c in self._conns.values():  # least recently active first
            if c.last >= limit:
                break
            idle.append(c)
        for conn in idle:
            self.stats["evicted:tcp-idle"] += 1
            if conn.stream.buffered:
                self.stats["malformed:hep3-stream-truncated"] += 1
            self._log_sender(conn.peer, "idle", "HEP over TCP: nothing received for %ds; "
                             "connection closed", int(self.tcp_idle_timeout),
                             level=logging.INFO)
            self._close_conn(conn)
        return len(idle)

    def _touch(self, conn: _Conn) -> None:
        """``conn`` just sent data: it goes last in the eviction order."""
        try:
            self._conns.move_to_end(conn.sock.fileno())
        except (KeyError, OSError):
            pass

    def _evict_for_new(self) -> None:
        """At the connection limit: close the connection silent longest so that a new
        agent is taken (``evicted:tcp-limit``). One that has data queued after all is
        read instead (and goes last), and the next looked at -- a few at most."""
        for attempt in range(8):
            if len(self._conns) < self.max_connections:
                return
            conn = next(iter(self._conns.values()))
            if attempt < 7 and queued_bytes(conn.sock) > 0:
                if self._read_tcp(conn):
                    self._touch(conn)
                continue  # read, or closed by its peer: either way look again
            self.stats["evicted:tcp-limit"] += 1
            if conn.stream.buffered:
                self.stats["malformed:hep3-stream-truncated"] += 1
            self._log_sender(conn.peer, "evict", "HEP over TCP: %d connections open "
                             "(tcp_max_connections); this one, silent for %ds, closed "
                             "for a new agent", len(self._conns),
                             int(time.monotonic() - conn.last), level=logging.WARNING)
            self._close_conn(conn)

    def _accept(self, lsock: socket.socket, lst: Listener, limit: int = 64) -> None:
        for _ in range(limit):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # the connection stays in the backlog and the socket stays readable:
                    # rest the listener a moment instead of spinning on it
                    self.stats["tcp:accept-paused"] += 1
                    now = time.monotonic()
                    if now - self._last_accept_log >= LOG_INTERVAL:
                        self._last_accept_log = now
                        log.warning("%s: cannot accept: %s (%d connections open); accepting "
                                    "again in %gs; raise the open-file limit (ulimit -n, "
                                    "LimitNOFILE)", lst.label, e.strerror, len(self._conns),
                                    ACCEPT_PAUSE)
                    try:
                        self._sel.unregister(lsock)
                        self._paused.append((time.monotonic() + ACCEPT_PAUSE, lsock,
                                             ("accept", lst, lsock)))
                    except (KeyError, ValueError):
                        pass
                return
            if len(self._conns) >= self.max_connections:
                self._evict_for_new()
            sock.setblocking(False)
            set_keepalive(sock)
            kind = "tcp"
            if lst.spec.transport == "tls" and self.tls_context is not None:
                try:
                    sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                        do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as e:
                    self._tls_refused(lst, peer, e)
                    sock.close()
                    continue
                kind = "tls"
            conn = _Conn(sock, lst, peer)
            self._conns[sock.fileno()] = conn
            lst.connections += 1
            if kind == "tls":
                conn.handshake_until = time.monotonic() + self.handshake_timeout
                self._handshaking += 1
            self._sel.register(sock, selectors.EVENT_READ, (kind, conn, None))

    # -- TLS --------------------------------------------------------------------------
    def _handshake(self, conn: _Conn) -> None:
        """Drive a TLS handshake one step (the selector says the socket is ready)."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(sock, selectors.EVENT_READ, ("tls", conn, None))
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(sock, selectors.EVENT_WRITE, ("tls", conn, None))
            return
        except (ssl.SSLError, OSError) as e:
            self._tls_refused(conn.listener, conn.peer, e)
            self._close_conn(conn)
            return
        conn.handshake_until = 0.0
        self._handshaking -= 1
        conn.last = time.monotonic()
        self._sel.modify(sock, selectors.EVENT_READ, ("tcp", conn, None))
        # the client may have sent HEP with its last handshake flight
        if self._read_tcp(conn):
            self._touch(conn)

    def _tls_refused(self, lst: Listener, peer: Address, e: BaseException) -> None:
        from ..tls import failure_reason

        reason = failure_reason(e)
        self.stats["tls:" + reason] += 1
        lst.tls_refused += 1
        self._log_sender(peer, "tls", "TLS connection refused on %s (%s): %s", lst.label,
                         reason, e, level=logging.WARNING)

    def _handshake_timeouts(self) -> None:
        now = time.monotonic()
        late = [c for c in self._conns.values() if c.handshake_until and c.handshake_until < now]
        for conn in late:
            self.stats["tls:handshake-timeout"] += 1
            conn.listener.tls_refused += 1
            self._log_sender(conn.peer, "tls", "TLS handshake not done within %gs on %s; "
                             "connection closed", self.handshake_timeout, conn.listener.label,
                             level=logging.WARNING)
            self._close_conn(conn)

    def _resume_accepting(self) -> None:
        now = time.monotonic()
        keep: list[_Paused] = []
        for when, lsock, data in self._paused:
            if when > now:
                keep.append((when, lsock, data))
                continue
            try:
                self._sel.register(lsock, selectors.EVENT_READ, data)
            except (KeyError, ValueError, OSError):
                pass
        self._paused = keep

    def _read_tcp(self, conn: _Conn) -> bool:
        """Read once from a connection (a TLS one: until OpenSSL holds nothing more
        decrypted); False when it was closed (or nothing was there)."""
        try:
            data = conn.sock.recv(TCP_READ)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError):
            return False
        except OSError:
            data = b""
        if data and isinstance(conn.sock, ssl.SSLSocket):
            data = self._more_records(conn.sock, data)
        if conn.fresh and data:
            conn.fresh = False
            if (data[:1] == b"\x16" and data[1:2] == b"\x03"
                    and not isinstance(conn.sock, ssl.SSLSocket)):
                # a TLS ClientHello on a plain TCP listener
                self.stats["malformed:tls-on-plain-port"] += 1
                conn.listener.closed_bad += 1
                self._log_sender(conn.peer, "tls-plain", "TLS on a plain HEP-over-TCP port "
                                 "(%s); connection closed", conn.listener.label,
                                 level=logging.WARNING)
                self._close_conn(conn)
                return False
        if not data:
            if conn.stream.buffered:
                self.stats["malformed:hep3-stream-truncated"] += 1
            self._close_conn(conn)
            return False
        lst = conn.listener
        lst.bytes += len(data)
        conn.last = time.monotonic()
        try:
            packets = conn.stream.feed(data)
        except DecodeError as e:
            self._bad_stream(conn, e)
            return False
        stats = self.stats
        count = self.count
        for p in packets:
            stats["packets"] += 1
            lst.packets += 1
            self._handle(p, conn.peer)
            if count is not None and stats["packets"] >= count:
                self.stop("count")
                break
        if conn.stream.error is not None:
            self._bad_stream(conn, conn.stream.error)
            return False
        return True

    @staticmethod
    def _more_records(sock: ssl.SSLSocket, data: bytes) -> bytes:
        """A TLS recv gives one record (16 KB at most): read the ones already here too,
        up to TCP_READ bytes (an end of stream is seen by the next read)."""
        chunks = [data]
        total = len(data)
        while total < TCP_READ:
            try:
                more = sock.recv(TCP_READ - total)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError, OSError):
                break
            if not more:
                break
            chunks.append(more)
            total += len(more)
        return b"".join(chunks)

    def _bad_stream(self, conn: _Conn, e: DecodeError) -> None:
        self.stats["malformed:" + e.reason] += 1
        conn.listener.closed_bad += 1
        self._log_sender(conn.peer, "stream", "HEP over TCP: %s; connection closed", e,
                         level=logging.WARNING)
        self._close_conn(conn)

    def _close_conn(self, conn: _Conn) -> None:
        if conn.handshake_until:
            conn.handshake_until = 0.0
            self._handshaking -= 1
        try:
            fd = conn.sock.fileno()
        except OSError:
            fd = -1
        if fd >= 0:
            self._conns.pop(fd, None)
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass
