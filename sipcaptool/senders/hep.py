"""Agent mode: send every captured message to HEP collectors as HEPv3.

Targets are ``udp:HOST:PORT``, ``tcp:HOST:PORT`` or ``tls:HOST:PORT`` (an IPv6 host
in brackets, ``udp:[::1]:9060``), grouped into collectors as
:func:`sipcaptool.senders.route.group_targets` says: per host, one datagram target and
one stream (TCP or TLS) target each. Of a collector:

* UDP only: one datagram per message.
* TCP/TLS only: every message goes over one connection (HEP frames carry their own
  length, so collectors split the stream).
* Both: UDP, and the stream for the messages too large for a datagram.

With several collectors each call goes to one of them, chosen by rendezvous hashing of
its Call-ID (:mod:`sipcaptool.senders.route`). A collector whose stream target is down
(refused, timed out, reset, closed by the collector at its stop, a failed TLS
handshake) takes nothing: its calls go to the next collector in their order, and come
back when it is up again. Connections are made without blocking the capture (a
non-blocking connect and TLS handshake, both within ``CONNECT_TIMEOUT``), retried
after ``BACKOFF_MIN`` seconds, doubling up to ``BACKOFF_MAX``. Packets accepted on a
connection but not yet handed to the kernel when it fails are sent again to the next
collector (``hep_target:<target>:requeued``); one cut in the middle by the failure is
sent whole, and the collector that had its beginning counts a truncated packet.
When a collector stops (``sipcaptool hep`` closes its side of the connection at
SIGTERM) the agent closes its side at once and what it had sent is read and stored by
that collector. When every collector a message may go to is down it waits in the
:class:`~sipcaptool.senders.backlog.Backlog` (memory, then disk) and is sent once one
is back.

A collector named by a host name is looked up again, in a thread of its own so that a
slow resolver never holds up the capture: a stream target each time it is to connect
again after a failure, a datagram target every ``RESOLVE_EVERY`` seconds. When the name
points somewhere else now (a collector moved, a DNS fail-over) the new address is used
and a warning says so (``hep_target:<target>:moved``); when the lookup fails the last
address is kept (``hep_target:<target>:resolve-failed``). A name that cannot be
resolved at the start is an error, as a mistyped one would be.

A collector that is killed (SIGKILL, power cut) loses what it had received and not yet
stored, and the agent cannot know how much: HEP has no acknowledgements. The agent
counts the connection's failure (``hep_target:<target>:reset``).

Size limits: a UDP datagram holds 65,507 bytes (IPv4; 65,527 over IPv6), a HEP packet
65,535 (its length field). A message whose HEP packet does not fit where it has to go
is sent with its payload zlib-compressed (HEPv3 chunk 0x0010, which ``sipcaptool hep``
and Homer collectors read); if even that does not fit it is counted as
``dropped:hep-too-large`` and a warning says so once. A message is never cut.

Counters: ``hep_out:sent_udp``, ``hep_out:sent_tcp``, ``hep_out:sent_tls``,
``hep_out:compressed``, ``hep_out:reconnects``, ``hep_out:rerouted`` (sent to a
collector that is not the call's first choice), ``hep_out:buffered``,
``hep_out:spooled``, ``hep_out:unspooled``, ``hep_out:resent`` (sent from the backlog);
``dropped:hep-too-large``, ``dropped:hep-send-error`` (a UDP send that failed),
``dropped:hep-buffer-full``, ``dropped:hep-shutdown`` (still waiting at the end, with
no spool to keep it); per target ``hep_target:<target>:<event>`` (``sent``,
``connected``, ``connect-failed``, ``timeout``, ``closed-by-peer``, ``reset``,
``stalled``, ``requeued``, ``moved``, ``resolve-failed``, TLS ``bad-certificate``,
``plain-text``, ``handshake-failed``).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..encode.hep import encode_hep3
from ..errors import ConfigError
from ..record import CapturedMessage
from ..stats import Stats
from .backlog import DEFAULT_MAX_BYTES, Backlog
from .route import CollectorSpec, TargetSpec, call_key, group_targets, hrw_order, seed_of

__all__ = ["HepOut", "HepSender", "lost_line", "parse_target", "target_counters"]

log = logging.getLogger("sipcaptool.live")

#: a socket address as getaddrinfo gives it: (host, port) or (host, port, flow, scope)
_Address = tuple[Any, ...]

UDP_MAX = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
CONNECT_TIMEOUT = 5.0   # seconds for a TCP connect plus the TLS handshake
BACKOFF_MIN = 0.5       # first wait before connecting again, seconds
BACKOFF_MAX = 4.0       # longest wait between two attempts
OUT_MAX = 1 << 20       # bytes queued on a connection before the agent waits for it
FLUSH_BYTES = 16384     # packets are written together once this many bytes wait (one
                        # TLS record), else at the next tick (POLL_EVERY)
STALL_TIMEOUT = 10.0    # a connection that takes nothing this long is given up
POLL_EVERY = 0.05       # seconds between two looks at the connections while sending
CLOSE_TIMEOUT = 10.0    # at the end: seconds to send what is queued and waiting
DRAIN_SLICE = 0.02      # seconds of backlog sending per look (the capture goes on)
LOG_EVERY = 10.0
ORDER_CACHE = 65536     # calls whose collector order is remembered (then forgotten at once)
RESOLVE_EVERY = 30.0    # seconds between two lookups of a datagram target's host name

DOWN, CONNECTING, HANDSHAKE, UP = range(4)


def parse_target(text: str) -> tuple[str, str, int]:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` / ``tls:HOST:PORT`` -> (transport, host, port).

    Raises:
        ConfigError: naming ``--hep-to``, the value and the forms allowed.
    """
    from .route import parse_target as _parse

    t = _parse(text)
    return t.transport, t.host, t.port


def _address(t: TargetSpec, socktype: int) -> tuple[socket.AddressFamily, _Address]:
    """The first address of a target's host (OSError, socket.gaierror among them, when
    it has none)."""
    fam, _t, _p, _c, addr = socket.getaddrinfo(t.host, t.port, 0, socktype)[0]
    return fam, addr


def _resolve(t: TargetSpec, socktype: int) -> tuple[socket.AddressFamily, _Address]:
    try:
        return _address(t, socktype)
    except socket.gaierror as e:
        raise ConfigError(f"--hep-to {t.label}: cannot resolve {t.host!r} ({e.strerror})") from None


def _is_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (nothing to look up)."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host.split("%", 1)[0])
            return True
        except OSError:
            pass
    return False


class _Lookup:
    """The host name of a target looked up again in a thread of its own (a resolver
    that does not answer takes seconds: the capture must not wait for it)."""

    __slots__ = ("spec", "socktype", "named", "failing", "_thread", "_result")

    def __init__(self, spec: TargetSpec, socktype: int) -> None:
        self.spec = spec
        self.socktype = socktype
        self.named = not _is_address(spec.host)
        self.failing = False        # the last lookup failed (said once, until it works)
        self._thread: threading.Thread | None = None
        self._result: tuple[socket.AddressFamily, _Address] | OSError | None = None

    @property
    def pending(self) -> bool:
        """Started, and what it found not taken yet."""
        return self._thread is not None

    @property
    def busy(self) -> bool:
        """Still looking."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if not self.named or self._thread is not None:
            return

        def run() -> None:
            try:
                self._result = _address(self.spec, self.socktype)
            except OSError as e:     # (socket.gaierror among them)
                self._result = e

        self._result = None
        self._thread = threading.Thread(target=run, name="sipcaptool-resolve", daemon=True)
        self._thread.start()

    def result(self) -> tuple[socket.AddressFamily, _Address] | OSError | None:
        """The new (family, address), the lookup's error, or None: still looking (or
        not started)."""
        t = self._thread
        if t is None or t.is_alive():
            return None
        self._thread = None
        return self._result


def _looked_up(lookup: _Lookup, label: str, stats: Stats, family: socket.AddressFamily,
               addr: _Address) -> tuple[socket.AddressFamily, _Address] | None:
    """What a finished lookup means for a target now at ``addr``: its new (family,
    address) when it moved (counted, a warning), else None (a failed lookup is counted
    and the address kept)."""
    r = lookup.result()
    if isinstance(r, OSError):
        stats[f"hep_target:{label}:resolve-failed"] += 1
        if not lookup.failing:      # (once, not at every attempt while it lasts)
            log.warning("HEP target %s: cannot resolve %r again (%s); still using %s",
                        label, lookup.spec.host, getattr(r, "strerror", None) or r, addr[0])
        lookup.failing = True
        return None
    if r is not None and lookup.failing:
        lookup.failing = False
        log.warning("HEP target %s: %s resolves again", label, lookup.spec.host)
    if r is None or r[1][:2] == addr[:2]:
        return None
    stats[f"hep_target:{label}:moved"] += 1
    log.warning("HEP target %s: %s resolves to %s now (was %s)", label, lookup.spec.host,
                r[1][0], addr[0])
    return r


def lost_line(stats: Stats) -> str:
    """What sending HEP on lost, as one line for the end of a run (empty: nothing): the
    ``dropped:hep-*`` counters -- messages no collector took and no spool held, or too
    large for HEP. Spooled messages are not lost (the next run sends them)."""
    lost = {k.split(":", 1)[1]: v for k, v in stats.items()
            if k.startswith("dropped:hep-") and v}
    if not lost:
        return ""
    n = sum(lost.values())
    why = ", ".join(f"{k} {v}" for k, v in sorted(lost.items()))
    return (f"{n} message{'s' if n != 1 else ''} could not be sent on as HEP and "
            f"{'are' if n != 1 else 'is'} lost (dropped: {why})")


def target_counters(stats: Stats) -> dict[str, dict[str, int]]:
    """``{target: {event: n}}`` from the ``hep_target:<target>:<event>`` counters."""
    out: dict[str, dict[str, int]] = {}
    for k, v in stats.group("hep_target").items():
        target, _, event = k.rpartition(":")
        out.setdefault(target, {})[event] = v
    return out


_CONTEXTS: dict[tuple[str | None, str | None, str | None], ssl.SSLContext] = {}


def _client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The agent's TLS context, made once per process and files: the command makes it
    before the capture gives up its privileges (``--user``), so the workers forked later
    use it without reading the files again."""
    k = (ca, cert, key)
    ctx = _CONTEXTS.get(k)
    if ctx is None:
        from ..tls import client_context

        ctx = _CONTEXTS[k] = client_context(ca, cert, key)
    return ctx


@dataclass(frozen=True)
class HepOut:
    """Where and how a command sends HEP (``--hep-to``/``--forward-to`` and the TLS
    and buffer options); ``targets`` empty: it sends nothing."""

    targets: tuple[str, ...] = ()
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    buffer_bytes: int = DEFAULT_MAX_BYTES
    option: str = "--hep-to"

    def check(self) -> None:
        """Parse the targets and load the TLS files now (ConfigError before anything
        is opened)."""
        specs = group_targets(list(self.targets), self.option)
        if any(c.stream is not None and c.stream.transport == "tls" for c in specs):
            _client_context(self.tls_ca, self.tls_cert, self.tls_key)

    def sender(self, stats: Stats, settings: Any, *, capture_id: int = 0,
               auth_key: str | bytes | None = None, node_name: str | None = None,
               forward: bool = False) -> HepSender:
        """A :class:`HepSender` for these targets; the backlog spools beside the
        database spool (``settings.spool_dir``, ``settings.spool_max_bytes``)."""
        from ..store.spool import resolve_spool_dir
        from .backlog import hep_spool_dir

        spool = hep_spool_dir(resolve_spool_dir(getattr(settings, "spool_dir", "")))
        return HepSender(self.targets, stats, capture_id=capture_id, auth_key=auth_key,
                         node_name=node_name, forward=forward, tls_ca=self.tls_ca,
                         tls_cert=self.tls_cert, tls_key=self.tls_key,
                         buffer_bytes=self.buffer_bytes, spool_dir=spool,
                         spool_max_bytes=getattr(settings, "spool_max_bytes", 1 << 30),
                         option=self.option)


class _Stream:
    """One TCP or TLS target: its connection, what is queued on it, its reconnects."""

    def __init__(self, spec: TargetSpec, ctx: ssl.SSLContext | None, stats: Stats) -> None:
        self.spec = spec
        self.label = spec.label
        self.ctx = ctx
        self.stats = stats
        self.family, self.addr = _resolve(spec, socket.SOCK_STREAM)
        self.lookup = _Lookup(spec, socket.SOCK_STREAM)
        self.sock: socket.socket | None = None
        self.state = DOWN
        self.out = bytearray()
        # (absolute end offset, key, packet) of every packet not yet wholly in the kernel
        self.pending: deque[tuple[int, bytes, bytes]] = deque()
        self.base = 0          # absolute offset of out[0]
        self.queued = 0        # absolute offset of the end of out
        self.next_try = 0.0
        self.backoff = BACKOFF_MIN
        self.deadline = 0.0
        self.ever_up = False
        self.last_log = -LOG_EVERY
        self.sent_key = "hep_out:sent_tls" if ctx is not None else "hep_out:sent_tcp"

    def count(self, event: str, n: int = 1) -> None:
        self.stats[f"hep_target:{self.label}:{event}"] += n

    @property
    def up(self) -> bool:
        return self.state == UP

    # -- connecting ----------------------------------------------------------------
    def poll(self, now: float) -> list[tuple[bytes, bytes]]:
        """Move the connection on (connect, handshake, reconnect when due, flush);
        the packets to send elsewhere when it failed."""
        if self.state == DOWN:
            if now >= self.next_try:
                if self.lookup.pending:     # (started when the connection failed)
                    if self.lookup.busy:
                        return []           # connect when it answers
                    moved = _looked_up(self.lookup, self.label, self.stats, self.family,
                                       self.addr)
                    if moved is not None:
                        self.family, self.addr = moved
                self._start(now)
            return []
        if self.state == UP:
            return self.flush()
        if now >= self.deadline:
            return self.fail("timeout", f"no connection within {CONNECT_TIMEOUT:g}s")
        if self.state == CONNECTING:
            sock = self.sock
            assert sock is not None
            _r, w, _x = select.select([], [sock], [], 0)
            if not w:
                return []
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self.fail("connect-failed", f"cannot connect ({errno.errorcode.get(err, err)})")
            if self.ctx is None:
                return self._established()
            try:
                self.sock = self.ctx.wrap_socket(sock, server_hostname=self.spec.host,
                                                 do_handshake_on_connect=False)
            except (ssl.SSLError, OSError, ValueError) as e:
                return self.fail("handshake-failed", f"TLS: {e}")
            self.state = HANDSHAKE
        if self.state == HANDSHAKE:
            sock = self.sock
            assert isinstance(sock, ssl.SSLSocket)
            try:
                sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return []
            except (ssl.SSLError, OSError) as e:
                from ..tls import failure_reason

                return self.fail(failure_reason(e), f"TLS handshake failed: {e}")
            return self._established()
        return []

    def _start(self, now: float) -> None:
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(self.addr)
        except BlockingIOError:
            pass
        except OSError as e:
            s.close()
            self.sock = None
            self.state = CONNECTING  # so that fail() schedules the next attempt
            self.fail("connect-failed", f"cannot connect ({e.strerror or e})")
            return
        self.sock = s
        self.state = CONNECTING
        self.deadline = now + CONNECT_TIMEOUT

    def _established(self) -> list[tuple[bytes, bytes]]:
        self.state = UP
        self.backoff = BACKOFF_MIN
        self.count("connected")
        if self.ever_up:
            self.stats["hep_out:reconnects"] += 1
            log.warning("HEP target %s: connected again", self.label)
        self.ever_up = True
        return self.flush()

    # -- sending ---------------------------------------------------------------------
    def write(self, key: bytes, pkt: bytes) -> list[tuple[bytes, bytes]] | None:
        """Queue one packet and send what the connection takes now. None: taken; a
        list: the connection failed, these packets (this one among them) go elsewhere."""
        self.out += pkt
        self.queued += len(pkt)
        self.pending.append((self.queued, key, pkt))
        if len(self.out) < FLUSH_BYTES:
            return None  # sent with the next ones, or by tick() within POLL_EVERY
        back = self.flush()
        if back:
            return back
        if len(self.out) > OUT_MAX:
            return self._wait_for_room() or None
        return None

    def flush(self) -> list[tuple[bytes, bytes]]:
        sock = self.sock
        if not self.out or sock is None or self.state != UP:
            return []
        sent = 0
        view = memoryview(self.out)
        try:
            while sent < len(view):
                try:
                    n = sock.send(view[sent:sent + 262144])
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    break
                if n <= 0:
                    break
                sent += n
        except OSError as e:
            view.release()
            self._consume(sent)
            return self.fail("reset", f"send failed ({e.strerror or e})")
        view.release()
        self._consume(sent)
        return []

    def _consume(self, n: int) -> None:
        if not n:
            return
        del self.out[:n]
        self.base += n
        done = 0
        pending = self.pending
        while pending and pending[0][0] <= self.base:
            _end, _key, _pkt = pending.popleft()
            done += 1
        if done:
            self.stats[self.sent_key] += done
            self.count("sent", done)

    def _wait_for_room(self) -> list[tuple[bytes, bytes]]:
        """The collector takes less than the capture gives: wait for it (the capture's
        kernel buffer holds what arrives meanwhile), at most STALL_TIMEOUT."""
        end = time.monotonic() + STALL_TIMEOUT
        while len(self.out) > OUT_MAX // 2:
            left = end - time.monotonic()
            if left <= 0:
                return self.fail("stalled", f"took nothing for {STALL_TIMEOUT:g}s")
            assert self.sock is not None
            select.select([], [self.sock], [], min(left, 0.5))
            back = self.flush()
            if back:
                return back
        return []

    def peer_closed(self) -> bool:
        """The collector closed its side (it is stopping) or reset the connection."""
        sock = self.sock
        if sock is None or self.state != UP:
            return False
        try:
            data = sock.recv(4096)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError):
            return True
        return not data

    def finish_partial(self, timeout: float = 1.0) -> None:
        """Send the rest of a packet partly handed to the kernel, so a collector that is
        stopping reads it whole."""
        if not self.pending or self.sock is None:
            return
        end = self.pending[0][0]
        if self.base <= end - len(self.pending[0][2]):
            return  # nothing of it sent yet
        deadline = time.monotonic() + timeout
        want = end - self.base
        while want > 0 and time.monotonic() < deadline:
            try:
                n = self.sock.send(bytes(self.out[:want]))
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                select.select([], [self.sock], [], 0.05)
                continue
            except OSError:
                return
            self._consume(n)
            want -= n

    def fail(self, reason: str, text: str) -> list[tuple[bytes, bytes]]:
        """Close the connection, schedule the next attempt, and give back the packets
        not wholly sent."""
        was_up = self.state == UP
        self.count(reason)
        now = time.monotonic()
        if was_up or now - self.last_log >= LOG_EVERY:
            self.last_log = now
            log.warning("HEP target %s: %s; its calls go to the next collector, connecting "
                        "again in %.1fs", self.label, text, self.backoff)
        self.close()
        self.next_try = now + self.backoff
        self.backoff = min(BACKOFF_MAX, self.backoff * 2)
        self.lookup.start()     # the name again before the next attempt (it may have moved)
        back = [(key, pkt) for _end, key, pkt in self.pending]
        if back:
            self.count("requeued", len(back))
        self.pending.clear()
        self.out.clear()
        self.base = self.queued = 0
        return back

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.state = DOWN


class _Collector:
    __slots__ = ("spec", "udp", "udp_max", "udp_label", "udp_sent", "stream", "seed",
                 "udp_lookup", "udp_addr", "udp_next")

    def __init__(self, spec: CollectorSpec, tls_ctx: ssl.SSLContext | None,
                 stats: Stats) -> None:
        self.spec = spec
        self.seed = seed_of(spec.name)
        self.udp: socket.socket | None = None
        self.udp_max = 0
        self.udp_label = ""
        self.udp_sent = ""
        self.stream: _Stream | None = None
        self.udp_lookup: _Lookup | None = None
        self.udp_addr: _Address = ()
        self.udp_next = 0.0
        if spec.dgram is not None:
            fam, addr = _resolve(spec.dgram, socket.SOCK_DGRAM)
            self.udp_label = spec.dgram.label
            self.udp_sent = f"hep_target:{self.udp_label}:sent"
            self._udp_to(fam, addr)
            lookup = _Lookup(spec.dgram, socket.SOCK_DGRAM)
            if lookup.named:
                self.udp_lookup = lookup
                self.udp_next = time.monotonic() + RESOLVE_EVERY
        if spec.stream is not None:
            if spec.stream.transport == "tls" and tls_ctx is None:
                raise ConfigError(f"--hep-to {spec.stream.label}: TLS needs a context")
            self.stream = _Stream(spec.stream, tls_ctx if spec.stream.transport == "tls"
                                  else None, stats)

    def _udp_to(self, fam: socket.AddressFamily, addr: _Address) -> None:
        """Send the datagrams to ``addr`` from now on (a socket of that family)."""
        s = self.udp
        if s is None or s.family != fam:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            except OSError:
                pass
            try:
                s.connect(addr)
            except BaseException:
                s.close()
                raise
            if self.udp is not None:
                self.udp.close()
            self.udp = s
        else:
            s.connect(addr)
        self.udp_addr = addr
        self.udp_max = UDP_MAX.get(fam, 65507)

    def look_up(self, now: float, stats: Stats) -> None:
        """The datagram target's name again every RESOLVE_EVERY seconds (in a thread);
        when it points somewhere else, the datagrams go there."""
        lk = self.udp_lookup
        if lk is None:
            return
        if lk.pending:
            if lk.busy:
                return
            assert self.udp is not None
            moved = _looked_up(lk, self.udp_label, stats, self.udp.family, self.udp_addr)
            if moved is not None:
                try:
                    self._udp_to(*moved)
                except OSError as e:
                    stats[f"hep_target:{self.udp_label}:resolve-failed"] += 1
                    log.warning("HEP target %s: cannot send to %s (%s); still using %s",
                                self.udp_label, moved[1][0], e.strerror or e,
                                self.udp_addr[0])
        elif now >= self.udp_next:
            self.udp_next = now + RESOLVE_EVERY
            lk.start()

    @property
    def available(self) -> bool:
        return self.stream is None or self.stream.state == UP


class HepSender:
    """Encode messages as HEPv3 and send each call to one of the collectors.

    Args:
        targets: the ``--hep-to`` values.
        stats: counters.
        capture_id, auth_key, node_name: what every packet carries.
        forward: a collector forwarding what it received: the capture id of each
            message (its ``node_id``) is kept when it has one.
        tls_ca, tls_cert, tls_key: for ``tls:`` targets (see :mod:`sipcaptool.tls`).
        buffer_bytes: memory the backlog may use while no collector can take a message.
        spool_dir: where the backlog goes past that (None: nowhere, then dropped).
        spool_max_bytes: disk the backlog may use.
        connect_wait: seconds to wait at the start for the stream targets to connect.
    """

    def __init__(self, targets: list[str] | tuple[str, ...], stats: Stats, *,
                 capture_id: int = 0, auth_key: str | bytes | None = None,
                 node_name: str | None = None, forward: bool = False,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, buffer_bytes: int = DEFAULT_MAX_BYTES,
                 spool_dir: str | None = None, spool_max_bytes: int = 1 << 30,
                 connect_wait: float = 2.0, option: str = "--hep-to") -> None:
        specs = group_targets(list(targets), option)
        if not specs:
            raise ConfigError(f"{option}: no target")
        self.stats = stats
        self.capture_id = capture_id
        key = auth_key.encode() if isinstance(auth_key, str) else auth_key
        self.auth_key = key or None
        self.node_name = node_name
        self.forward = forward
        tls_ctx = None
        if any(c.stream is not None and c.stream.transport == "tls" for c in specs):
            tls_ctx = _client_context(tls_ca, tls_cert, tls_key)
        self.collectors: list[_Collector] = []
        self._closed = False
        try:
            for spec in specs:
                self.collectors.append(_Collector(spec, tls_ctx, stats))
        except BaseException:
            self.close(timeout=0)
            raise
        self.seeds = [c.seed for c in self.collectors]
        self.streams = [c.stream for c in self.collectors if c.stream is not None]
        # datagram targets named by a host name, looked up again now and then
        self.named_udp = [c for c in self.collectors if c.udp_lookup is not None]
        self._looks = bool(self.streams or self.named_udp)   # (send() calls tick())
        self.backlog = Backlog(stats, max_bytes=buffer_bytes, spool_dir=spool_dir,
                               spool_max_bytes=spool_max_bytes,
                               name="-".join(c.spec.name for c in self.collectors)[:200])
        self.warned_too_large = False
        self._next_poll = 0.0
        self._requeue: deque[tuple[bytes, bytes]] = deque()
        self._orders: dict[bytes, list[int]] = {}
        if self.streams:
            self.tick()
            end = time.monotonic() + connect_wait
            while time.monotonic() < end and any(s.state in (CONNECTING, HANDSHAKE)
                                                 for s in self.streams):
                self._wait_streams(min(0.05, max(0.0, end - time.monotonic())))
                self.tick()

    # -- the loop's side ---------------------------------------------------------------
    def _wait_streams(self, timeout: float) -> None:
        r: list[Any] = []
        w: list[Any] = []
        for s in self.streams:
            if s.sock is None:
                continue
            if s.state == CONNECTING:
                w.append(s.sock)
            elif s.state == HANDSHAKE:
                r.append(s.sock)
        if r or w:
            select.select(r, w, [], timeout)
        elif timeout > 0:
            time.sleep(timeout)

    def tick(self) -> None:
        """Look after the connections: connect when due, notice a collector that
        closed, flush; send what waits (a slice of time at most). Called by the capture
        loop between reads and from :meth:`send` every POLL_EVERY seconds."""
        now = time.monotonic()
        self._next_poll = now + POLL_EVERY
        ups = [s for s in self.streams if s.state == UP and s.sock is not None]
        if ups:
            socks = [s.sock for s in ups if s.sock is not None]
            try:
                readable, _w, _x = select.select(socks, [], [], 0)
            except (OSError, ValueError):
                readable = []
            for s in ups:
                if s.sock in readable and s.peer_closed():
                    s.finish_partial()
                    self._requeue.extend(s.fail("closed-by-peer", "closed by the collector"))
        for s in self.streams:
            self._requeue.extend(s.poll(now))
        for c in self.named_udp:
            c.look_up(now, self.stats)
        self._resend()
        if not self.backlog.empty and any(c.available for c in self.collectors):
            end = time.monotonic() + DRAIN_SLICE
            while time.monotonic() < end:
                item = self.backlog.take()
                if item is None:
                    break
                key, pkt = item
                if not self._route(key, pkt, None, backlog=False):
                    self.backlog.push_back(key, pkt)
                    break
                self.stats["hep_out:resent"] += 1
                self._resend()

    def _resend(self) -> None:
        """Send again what a failed connection gave back (to the next collector, or the
        backlog)."""
        rq = self._requeue
        while rq:
            key, pkt = rq.popleft()
            self._route(key, pkt, None, backlog=True)

    # -- sending -----------------------------------------------------------------------
    def _encode(self, msg: CapturedMessage, compress: bool) -> bytes | None:
        cid = self.capture_id
        if self.forward and msg.node_id is not None:
            cid = msg.node_id
        try:
            return encode_hep3(msg, capture_id=cid, auth_key=self.auth_key,
                               node_name=self.node_name, compress=compress)
        except ValueError:  # more than a HEP packet can hold
            return None

    def send(self, msg: CapturedMessage) -> None:
        if time.monotonic() >= self._next_poll and self._looks:
            self.tick()
        key = call_key(msg) if len(self.collectors) > 1 else b""
        pkt = self._encode(msg, False)
        self._route(key, pkt, msg, backlog=True)
        if self._requeue:
            self._resend()

    def _deliver(self, c: _Collector, key: bytes, pkt: bytes) -> str:
        """``sent``, ``nofit`` (neither of its targets can carry it) or ``down``."""
        if c.udp is not None and len(pkt) <= c.udp_max:
            try:
                c.udp.send(pkt)
                self.stats["hep_out:sent_udp"] += 1
                if len(self.collectors) > 1:
                    self.stats[c.udp_sent] += 1
                return "sent"
            except OSError as e:
                if e.errno != errno.EMSGSIZE:
                    # ECONNREFUSED (nobody listens yet), ENOBUFS ...
                    self.stats["dropped:hep-send-error"] += 1
                    return "sent"
        s = c.stream
        if s is not None:
            if s.state != UP:
                return "down"
            back = s.write(key, pkt)
            if back is None:
                return "sent"
            # the connection failed: this packet and those queued with it go elsewhere
            self._requeue.extend(back)
            return "requeued"
        return "nofit"

    def _route(self, key: bytes, pkt: bytes | None, msg: CapturedMessage | None, *,
               backlog: bool) -> bool:
        """Send one packet to its call's first collector that is up; with ``backlog``
        hold it when none is (False: it was neither sent nor held)."""
        if len(self.seeds) > 1:
            # a call's messages come together: its order is remembered (bounded)
            order = self._orders.get(key)
            if order is None:
                if len(self._orders) >= ORDER_CACHE:
                    self._orders.clear()
                order = self._orders[key] = hrw_order(key, self.seeds)
        else:
            order = [0]
        for rank, i in enumerate(order):
            c = self.collectors[i]
            if not c.available:
                continue
            r = self._deliver(c, key, pkt) if pkt is not None else "nofit"
            if r == "nofit" and msg is not None:
                cpkt = self._encode(msg, True)
                if cpkt is not None:
                    r = self._deliver(c, key, cpkt)
                    if r in ("sent", "requeued"):
                        self.stats["hep_out:compressed"] += 1
                        if r == "requeued":
                            return True
                        pkt = cpkt
            if r == "sent":
                if rank:
                    self.stats["hep_out:rerouted"] += 1
                return True
            if r == "requeued":
                return True
            if r == "nofit":
                self._too_large(len(msg.payload) if msg is not None else len(pkt or b""),
                                c.stream is None)
                return True
        if not backlog:
            return False
        if pkt is None and msg is not None:
            pkt = self._encode(msg, True)
        if pkt is None:
            self._too_large(len(msg.payload) if msg is not None else 0, False)
            return True
        self.backlog.put(key, pkt)
        return True

    def _too_large(self, size: int, udp_only: bool) -> None:
        self.stats["dropped:hep-too-large"] += 1
        if not self.warned_too_large:
            self.warned_too_large = True
            if udp_only:
                log.warning("a SIP message of %d bytes does not fit in one HEP UDP datagram, "
                            "even compressed, and was not forwarded (add a tcp: --hep-to "
                            "target to send such messages over TCP); further ones are only "
                            "counted (dropped:hep-too-large)", size)
            else:
                log.warning("a SIP message of %d bytes does not fit in a HEP packet (65,535 "
                            "bytes), even compressed, and was not forwarded; further ones are "
                            "only counted (dropped:hep-too-large)", size)

    # -- the end -----------------------------------------------------------------------
    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Send what is queued and waiting (at most ``timeout`` seconds, while a
        collector is up), keep what is left in the spool or count it
        (``dropped:hep-shutdown``), close the sockets."""
        if self._closed:
            return
        self._closed = True
        streams = getattr(self, "streams", [])
        backlog: Backlog | None = getattr(self, "backlog", None)
        end = time.monotonic() + timeout
        while streams and time.monotonic() < end:
            self.tick()
            busy = [s for s in streams if s.up and s.out]
            waiting = (backlog is not None and not backlog.empty
                       and any(c.available for c in self.collectors))
            connecting = [s for s in streams if s.state in (CONNECTING, HANDSHAKE)]
            if not busy and not waiting and not (connecting and backlog is not None
                                                 and not backlog.empty):
                break
            socks = [s.sock for s in busy if s.sock is not None]
            if socks:
                select.select([], socks, [], 0.05)
            else:
                self._wait_streams(0.05)
        # what the connections still hold could not be sent in time: keep it too
        for s in streams:
            if s.out and backlog is not None:
                for key, pkt in s.fail("stalled", "not all sent at the end"):
                    backlog.put(key, pkt)
        if backlog is not None:
            if not backlog.empty:
                left = backlog.persist()
                kept = len(backlog) - left
                if left:
                    self.stats["dropped:hep-shutdown"] += left
                    log.error("%d HEP packets could not be sent to any collector before the "
                              "end and are dropped (dropped:hep-shutdown)", left)
                if kept:
                    log.warning("%d HEP packets wait in the spool %s for a collector; the "
                                "next run sends them", kept,
                                backlog.spool.dir if backlog.spool else "")
            backlog.close()
        for c in getattr(self, "collectors", []):
            if c.udp is not None:
                try:
                    c.udp.close()
                except OSError:
                    pass
                c.udp = None
            if c.stream is not None:
                c.stream.close()
