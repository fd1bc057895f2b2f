"""Live capture: a mirror port through libpcap, or an IPIP tunnel through raw sockets.

One *worker* reads one capture handle, decodes what it reads with the same
``PacketDecoder`` that ``replay`` uses, and hands the messages to its own ``Pipeline``
(so the rows are the rows ``replay`` stores for a capture of the same traffic) and/or to
a HEP sender (agent mode).

With ``workers`` > 1 (``raw_sock_children``) every worker is a process of its own:

* mirror mode: N libpcap handles on the interface joined in one PACKET_FANOUT group in
  hash mode, so the kernel gives every flow (both directions; fragments hash on the
  addresses alone) to one worker and TCP and fragment reassembly keep working;
* IPIP mode: N raw sockets, each with a BPF program selecting its share of the flows
  by inner address hash.

All handles and sockets are opened by the starting process before it forks and before
it drops privileges (``--user``), so the workers never need any. Capture on/off, the
stop request and the ``--count`` budget are shared memory values; each worker reports
its counters to the parent about once a second and at the end, and the parent adds
them up (summary, control socket).

Kernel drop counters: the pcap statistics of each handle land in ``kernel:received``,
``kernel:dropped`` (no room in the capture buffer) and ``kernel:if_dropped`` (dropped
by the interface/driver).

A mirror port that goes down (a link flap, a switch reload) does not end the capture:
the handle is kept -- its socket stays bound to the interface and the kernel hands it
packets again once the link is up -- and the worker logs it and counts
``capture:link-down``. An interface that is removed (a NIC replaced, a veth re-created)
is opened again under its name once it exists and is up (every LINK_RETRY seconds),
which needs the capture privileges: after ``--user`` dropped them the capture ends then,
with the error. The stop request and ``--duration`` are honoured while it waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError, ConfigError, SipcaptoolError
from ..net import parse_endpoint
from ..stats import Stats
from ..workers import WorkerLink, WorkerPool
from . import bpf

log = logging.getLogger(__name__)

BATCH = 512
POLL_MS = 100            # the longest a worker sleeps before looking at stop/duration
REPORT_EVERY = 0.5       # seconds between worker -> parent counter reports
DRAIN_SECONDS = 10.0     # at most this long reading what was captured before a stop
LINK_RETRY = 1.0         # seconds between attempts to reopen an interface that went down
LINK_GONE = "no such interface"  # what _link_state says of a removed interface
FANOUT_PROBE = 64        # fanout group ids tried when joining again after a removal
DEFAULT_SNAPLEN = 262144
DEFAULT_BUFFER = 32 * 1024 * 1024
FANOUT_FLAG_DEFRAG = 0x8000


# ----------------------------------------------------------------- settings


@dataclass
class Listen:
    """``raw_socket_listen``: "ip:port" / "ip:port1-port2" (ip may be empty)."""

    address: str
    lo: int
    hi: int

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(range(self.lo, self.hi + 1))


def parse_listen(text: str, default_port: int = 5060) -> Listen:
    """Parse the module's ``raw_socket_listen``.

    Accepted: ``""`` (port 5060, any address), ``5060``, ``:5060``, ``10.0.0.1:5060``,
    ``10.0.0.1:5060-5090``, ``[fd00::1]:5060``, ``10.0.0.1`` and ``fd00::1`` (port
    5060): the grammar of :mod:`sipcaptool.net`, with an IP address, ports 1-65535 and
    a range.

    Raises:
        ConfigError: naming ``raw_socket_listen``, the value and the forms allowed.
    """
    ep = parse_endpoint(text, "raw_socket_listen", expected="IP:PORT or IP:PORT1-PORT2 "
                        "(ports 1-65535, either part optional; IPv6 in brackets: "
                        "[fd00::1]:5060)", ranges=True, ip_only=True)
    if ep.port is None or ep.port_hi is None:
        return Listen(ep.host, default_port, default_port)
    return Listen(ep.host, ep.port, ep.port_hi)


@dataclass
class LiveOptions:
    """Everything a live capture needs besides the storage settings."""

    interface: str = ""              # mirror mode: the interface (or "any")
    ipip: bool = False
    listen: Listen = field(default_factory=lambda: Listen("", 5060, 5060))
    listen_given: bool = False       # raw_socket_listen set explicitly
    bpf_on: bool = True
    filter_expr: str | None = None
    promisc: bool = False
    snaplen: int = DEFAULT_SNAPLEN
    buffer_size: int = DEFAULT_BUFFER
    workers: int = 1
    duration: float | None = None
    count: int | None = None
    hep_to: list[str] = field(default_factory=list)
    capture_id: int = 0
    auth_key: str | None = None
    node_name: str | None = None
    user: str | None = None
    store: bool = True               # False with --db none and no capture mode

    def decoder_ports(self) -> frozenset[int] | None:
        """The ports the decoder takes SIP from: the listen range, unless a --filter of
        the user's own chooses the traffic (then SIP is recognised by content, as replay
        does), unless the listen range was given explicitly as well."""
        if self.filter_expr and not self.listen_given:
            return None
        return self.listen.ports

    def describe(self) -> str:
        if self.ipip:
            return (f"IPIP on {self.listen.address or 'any address'}"
                    + (f" ({self.interface})" if self.interface else "")
                    + f", ports {self.listen.lo}-{self.listen.hi}")
        return f"interface {self.interface}"


# ----------------------------------------------------------------- capture handles


def capture_filter(opts: LiveOptions, linktype: int | None = None) -> str | None:
    """The libpcap expression for mirror mode (None: capture everything)."""
    if opts.filter_expr:
        return opts.filter_expr
    if not opts.bpf_on:
        return None
    return bpf.mirror_filter(opts.listen.lo, opts.listen.hi)


class PcapSource:
    """One libpcap handle on a live interface."""

    def __init__(self, opts: LiveOptions, fanout_group: int | None = None) -> None:
        self.interface = opts.interface
        self._opts = opts
        self._fanout_group = fanout_group
        self._stats_base = (0, 0, 0)   # kernel counters of handles closed before
        self._last_stats = (0, 0, 0)
        self.link_downs = 0
        self._open()

    def _open(self) -> None:
        import pcapy

        opts = self._opts
        fanout_group = self._fanout_group
        iface = opts.interface
        try:
            h = pcapy.create(iface)
        except pcapy.PcapError as e:
            raise _open_error(iface, str(e)) from None
        try:
            h.set_snaplen(opts.snaplen)
            h.set_promisc(1 if opts.promisc else 0)
            h.set_timeout(POLL_MS)
            if opts.buffer_size:
                h.set_buffer_size(opts.buffer_size)
            status = h.activate()
        except pcapy.PcapError as e:
            raise _open_error(iface, str(e)) from None
        if isinstance(status, int) and status < 0:
            raise _open_error(iface, _ACTIVATE_ERRORS.get(status, f"error {status}"))
        if isinstance(status, int) and status > 0:
            log.warning("%s: %s", iface, _ACTIVATE_WARNINGS.get(status, f"warning {status}"))
        self.handle = h
        self.linktype = h.datalink()
        expr = capture_filter(opts)
        self.filter = expr
        if expr:
            try:
                h.setfilter(expr)
            except pcapy.PcapError as e:
                if opts.filter_expr:
                    raise ConfigError(f"--filter {expr!r}: {e}") from None
                # no VLAN support on this link type (Linux cooked capture, "any"):
                # the kernel has already removed the tags there
                expr = bpf.mirror_filter(opts.listen.lo, opts.listen.hi, vlan=False)
                try:
                    h.setfilter(expr)
                except pcapy.PcapError as e2:  # pragma: no cover - our own expression
                    raise CaptureError(f"{iface}: cannot set the capture filter: {e2}") from None
                self.filter = expr
        if fanout_group is not None:
            # After the interface was removed and created again, the workers' old
            # sockets (kept alive by ring mappings other processes inherited) still hold
            # the group, bound to the old device, and refuse new members: every worker
            # then tries the next ids in the same order and they meet in the first one
            # free or already on the new device.
            tries = FANOUT_PROBE if self.link_downs else 1
            for k in range(tries):
                group = (fanout_group + k) & 0xFFFF
                try:
                    h.set_fanout(group, pcapy.PACKET_FANOUT_HASH)
                    break
                except (pcapy.PcapError, OSError) as e:
                    if k == tries - 1:
                        raise CaptureError(f"{iface}: cannot join PACKET_FANOUT group "
                                           f"{group} for --raw-sock-children: {e}") from None
        # non-blocking reads, waiting in poll(): next_batch on a quiet blocking handle
        # does not return, and the worker must look at stop/duration regularly
        h.setnonblock(1)
        self._fd = h.getfd()

    def batches(self):
        """Yield ``(data, meta)`` batches; empty ``meta`` after a quiet poll interval."""
        import select

        import pcapy

        def watch():  # the read function and poller of the current handle
            p = select.poll()
            p.register(self._fd, select.POLLIN)
            return self.handle.next_batch, p

        nb, poller = watch()
        wait = True
        down_since: float | None = None  # the link went down; the handle waits for it
        next_look = 0.0
        while True:
            if wait:
                try:
                    poller.poll(POLL_MS)
                except InterruptedError:
                    pass
            if down_since is not None:
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + LINK_RETRY
                    state = _link_state(self.interface)
                    if state == "up":
                        log.warning("%s: capturing again after %.1fs down", self.interface,
                                    now - down_since)
                        down_since = None
                    elif state == LINK_GONE:
                        # the interface itself is gone: a new one of that name needs a
                        # new handle
                        down_since = None
                        yield from self._wait_for_link("the interface was removed")
                        nb, poller = watch()
                        continue
            try:
                data, meta = nb(BATCH)
            except pcapy.PcapError as e:
                msg = str(e)
                if "went down" in msg:
                    # The socket stays bound to the interface and the kernel hands it
                    # packets again once the link is up: keep the handle (a new one
                    # would leave this socket behind in the workers' fanout group).
                    if down_since is None:
                        down_since = time.monotonic()
                        next_look = down_since + LINK_RETRY
                        self.link_downs += 1
                        log.warning("%s: the interface went down (%s); waiting for it to "
                                    "come back", self.interface, msg)
                    wait = True
                    yield b"", ()
                    time.sleep(POLL_MS / 1000)  # poll() may keep reporting the error
                    continue
                if "No such device" in msg:
                    self.link_downs += 1
                    yield from self._wait_for_link(msg)
                    nb, poller = watch()
                    wait = True
                    continue
                raise CaptureError(f"{self.interface}: capture failed: {msg}") from None
            if meta:
                m = memoryview(meta).cast("I")
                wait = len(m) < BATCH * 4  # a full batch: more is probably waiting
                yield data, m
            else:
                wait = True
                yield data, ()

    def _wait_for_link(self, why: str):
        """The interface is gone: open one of that name every LINK_RETRY seconds until
        there is one again, yielding empty batches meanwhile so the worker still sees
        stop and deadline. Without the privileges to open it (--user dropped them) the
        capture ends at once. The caller has counted the loss of the link."""
        self.kernel_stats()  # keep the last counters of the old handle
        self._stats_base = tuple(b + c for b, c in zip(self._stats_base, self._last_stats, strict=True))
        self._last_stats = (0, 0, 0)
        self.close()
        log.warning("%s: the interface is gone (%s); opening it again every %gs until "
                    "it is back", self.interface, why, LINK_RETRY)
        if not _can_capture():
            raise CaptureError(f"{self.interface}: the interface is gone and cannot be "
                               "opened again without the capture privileges (dropped with "
                               "--user); restart the capture when it is back")
        down_since = time.monotonic()
        next_try = down_since + LINK_RETRY
        last_error = ""
        while True:
            yield b"", ()
            now = time.monotonic()
            if now < next_try:
                time.sleep(min(POLL_MS / 1000, next_try - now))
                continue
            next_try = now + LINK_RETRY
            state = _link_state(self.interface)
            if state != "up":
                if state != last_error:
                    log.info("%s: still down (%s)", self.interface, state)
                    last_error = state
                continue
            try:
                self._open()
            except CaptureError as e:
                text = str(e)
                if "permission" in text.lower() or "privileges" in text.lower():
                    raise CaptureError(f"{self.interface}: the interface went down and "
                                       f"cannot be opened again: {text}") from None
                if text != last_error:
                    log.info("%s: still down: %s", self.interface, text)
                    last_error = text
                continue
            log.warning("%s: capturing again after %.1fs down", self.interface,
                        time.monotonic() - down_since)
            return

    def kernel_stats(self) -> tuple[int, int, int]:
        if self.handle is not None:
            try:
                self._last_stats = tuple(self.handle.stats())  # type: ignore[assignment]
            except Exception:  # noqa: BLE001 - statistics are best effort
                pass
        return tuple(b + c for b, c in zip(self._stats_base, self._last_stats, strict=True))  # type: ignore[return-value]

    def close(self) -> None:
        h, self.handle = self.handle, None
        if h is not None:
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


# pcap_activate() results (pcap/pcap.h)
_ACTIVATE_ERRORS = {
    -1: "generic error", -4: "already activated", -5: "no such device",
    -6: "monitor mode not supported", -8: "permission denied", -9: "interface not up",
    -11: "permission denied (promiscuous mode)", -12: "timestamp precision not supported",
}
_ACTIVATE_WARNINGS = {1: "pcap warning", 2: "promiscuous mode not supported",
                      3: "timestamp type not supported"}


def _can_capture() -> bool:
    """Can this process open a capture handle (root, or CAP_NET_RAW effective)?"""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW
    except (OSError, ValueError):
        pass
    return True  # cannot tell: try, and the error says why


def _link_state(iface: str) -> str:
    """"up" when the interface exists and is administratively up (IFF_UP), else why not
    (Linux: /sys/class/net; elsewhere "up", and opening it tells)."""
    base = "/sys/class/net"
    if not os.path.isdir(base):
        return "up"
    try:
        with open(f"{base}/{iface}/flags") as f:
            flags = int(f.read().strip(), 16)
    except FileNotFoundError:
        return LINK_GONE
    except (OSError, ValueError):
        return "up"
    return "up" if flags & 1 else "administratively down"


def _open_error(iface: str, msg: str) -> CaptureError:
    low = msg.lower()
    if "permission" in low or "operation not permitted" in low:
        from .ipip import permission_hint

        return CaptureError(permission_hint(f"cannot capture on {iface}"))
    if "no such device" in low or "doesn't exist" in low or "no such" in low:
        return CaptureError(f"cannot capture on {iface}: no such interface "
                            "(see `ip link` for the names)")
    if "not up" in low or "network is down" in low:
        return CaptureError(f"cannot capture on {iface}: the interface is down")
    return CaptureError(f"cannot capture on {iface}: {msg}")


def open_sources(opts: LiveOptions) -> list[Any]:
    """Open every capture handle/socket (one per worker). Needs the privileges."""
    n = opts.workers
    sources: list[Any] = []
    try:
        if opts.ipip:
            from .ipip import IpipSource

            ports = (opts.listen.lo, opts.listen.hi)
            for i in range(n):
                sources.append(IpipSource(opts.listen.address, opts.interface, ports,
                                          opts.bpf_on, (i, n) if n > 1 else None,
                                          rcvbuf=opts.buffer_size))
        else:
            group = None
            if n > 1:
                group = (os.getpid() ^ int(time.time() * 1000)) & 0xFFFF
            for _ in range(n):
                sources.append(PcapSource(opts, group))
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


# Imported before dropping privileges: after the switch the Python installation may
# not be readable by the new user (e.g. under a private home directory).
_PRELOAD = ("queue", "threading", "multiprocessing.queues", "multiprocessing.synchronize",
            "multiprocessing.connection", "multiprocessing.popen_fork",
            "multiprocessing.process", "multiprocessing.util", "multiprocessing.reduction",
            "multiprocessing.context", "multiprocessing.sharedctypes", "json", "zlib",
            "encodings.idna", "select", "sipcaptool.workers",
            "sipcaptool.pipeline", "sipcaptool.row", "sipcaptool.decode.packet",
            "sipcaptool.decode.sip", "sipcaptool.decode.defrag", "sipcaptool.decode.tcp",
            "sipcaptool.decode.hep", "sipcaptool.decode.tunnel", "sipcaptool.store.writer",
            "sipcaptool.store.router", "sipcaptool.store.schema", "sipcaptool.store._text",
            "sipcaptool.senders.hep", "sipcaptool.commands.common")
_PRELOAD_DB = {"sqlite": ("sqlite3", "sipcaptool.store.sqlite"),
               "mysql": ("pymysql", "sipcaptool.store.mysql"),
               "postgresql": ("psycopg2", "sipcaptool.store.postgres")}


def preload(dialects: set[str]) -> None:
    import importlib

    names = list(_PRELOAD)
    for d in dialects:
        names.extend(_PRELOAD_DB.get(d, ()))
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - an optional driver
            log.debug("preload: %s not available", name)


def drop_privileges(user: str) -> None:
    """Become ``user`` (and its primary group, no supplementary groups)."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user!r}: no such user") from None
    if os.geteuid() == pw.pw_uid:
        return
    try:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except PermissionError:
        raise CaptureError(f"--user {user}: cannot switch to that user (only root can)") from None
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user


# ----------------------------------------------------------------- shared state


class Shared:
    """Values shared by the parent and its worker processes (fork-inherited)."""

    def __init__(self, capture_on: bool, count: int | None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.stop = ctx.RawValue("b", 0)
        self.capture_flag = ctx.RawValue("b", 1 if capture_on else 0)
        self.count_limit = count
        self.counted = ctx.Value("q", 0)  # with a lock: the --count budget

    def take(self, n: int) -> int:
        """Claim up to ``n`` messages of the --count budget; returns how many may go."""
        if self.count_limit is None:
            return n
        with self.counted.get_lock():
            left = self.count_limit - self.counted.value
            k = max(0, min(n, left))
            self.counted.value += k
            if self.counted.value >= self.count_limit:
                self.stop.value = 1
            return k


# ----------------------------------------------------------------- the worker


class Worker:
    """Read one source, decode, and deliver to a pipeline and/or a HEP sender."""

    def __init__(self, source: Any, opts: LiveOptions, settings: Any, shared: Shared,
                 stats: Stats, *, background: bool = True,
                 report: Callable[[Stats], None] | None = None) -> None:
        self.source = source
        self.opts = opts
        self.settings = settings
        self.shared = shared
        self.stats = stats
        self.background = background
        self.report = report
        self.pipeline = None
        self.sender = None

    def run(self, deadline: float | None) -> None:
        from ..decode.packet import PacketDecoder
        from ..pipeline import Pipeline

        opts = self.opts
        stats = self.stats
        if opts.store:
            self.pipeline = Pipeline(self.settings, stats, background=self.background,
                                     capture_flag=self.shared.capture_flag,
                                     max_clock_skew=self.settings.max_clock_skew)
        try:
            if opts.hep_to:
                from ..senders.hep import HepSender

                self.sender = HepSender(opts.hep_to, stats, capture_id=opts.capture_id,
                                        auth_key=opts.auth_key, node_name=opts.node_name)
            # a frame as long as a --snaplen below the largest may have been cut: the
            # decoder counts it (malformed:snapped) rather than store part of a message
            snap = opts.snaplen if opts.snaplen < 65535 + 64 else 0
            decoder = PacketDecoder(self.source.linktype, stats, ports=opts.decoder_ports(),
                                    snaplen=snap,
                                    hep_max_inflated=self.settings.hep_max_inflated)
            if opts.ipip:
                self._loop_ipip(decoder, deadline)
            else:
                self._loop_pcap(decoder, deadline)
            self._deliver(decoder.flush())
        finally:
            self._update_kernel()
            err: BaseException | None = None
            if self.sender is not None:
                self.sender.close()
            if self.pipeline is not None:
                try:
                    self.pipeline.close()
                except BaseException as e:  # noqa: BLE001 - raised below
                    err = e
            self.source.close()
            if err is not None:
                raise err

    # the per-batch paths are kept flat: they carry every packet
    def _loop_pcap(self, decoder, deadline: float | None) -> None:
        decode_batch = decoder.decode_batch
        stats = self.stats
        stop = self.shared.stop
        next_report = time.monotonic() + REPORT_EVERY
        drain_until = None  # set when stopping: read what the kernel already holds
        for data, m in self.source.batches():
            if m:
                stats["packets"] += len(m) >> 2
                self._deliver(decode_batch(data, m))
            now = time.monotonic()
            if drain_until is not None:
                if not m or now >= drain_until or self._count_reached():
                    return
                continue
            if now >= next_report:
                next_report = now + REPORT_EVERY
                self._update_kernel()
                if self.report is not None:
                    self.report(stats)
            if stop.value or (deadline is not None and now >= deadline):
                if self._count_reached():
                    return
                # packets captured before the stop are still in the kernel buffer
                drain_until = now + DRAIN_SECONDS

    def _count_reached(self) -> bool:
        sh = self.shared
        return sh.count_limit is not None and sh.counted.value >= sh.count_limit

    def _loop_ipip(self, decoder, deadline: float | None) -> None:
        decode = decoder.decode
        stats = self.stats
        stop = self.shared.stop
        read = self.source.read
        next_report = time.monotonic() + REPORT_EVERY
        batch: list[tuple[int, bytes]] = []
        msgs: list = []
        while not stop.value:
            n = read(POLL_MS, batch)
            if n:
                stats["packets"] += n
                for ts, pkt in batch:
                    r = decode(ts, pkt)
                    if r:
                        msgs.extend(r)
                batch.clear()
                if msgs:
                    self._deliver(msgs)
                    msgs = []
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_EVERY
                if self.report is not None:
                    self.report(stats)
            if deadline is not None and now >= deadline:
                return

    def _deliver(self, msgs: list) -> None:
        if not msgs:
            return
        shared = self.shared
        if shared.count_limit is not None:
            k = shared.take(len(msgs))
            if k < len(msgs):
                self.stats["skipped:after-count"] += len(msgs) - k
                msgs = msgs[:k]
                if not msgs:
                    return
        sender = self.sender
        if sender is not None and shared.capture_flag.value:
            for msg in msgs:
                sender.send(msg)
        if self.pipeline is not None:
            submit = self.pipeline.submit
            for msg in msgs:
                submit(msg)
        else:
            self.stats["messages"] += len(msgs)
            if not shared.capture_flag.value:
                self.stats["dropped:capture-off"] += len(msgs)

    def _update_kernel(self) -> None:
        ks = getattr(self.source, "kernel_stats", None)
        if ks is None:
            return
        recv, drop, ifdrop = ks()
        self.stats["kernel:received"] = recv
        self.stats["kernel:dropped"] = drop
        self.stats["kernel:if_dropped"] = ifdrop
        downs = getattr(self.source, "link_downs", 0)
        if downs:
            self.stats["capture:link-down"] = downs


# ----------------------------------------------------------------- running it


class LiveCapture:
    """Run a live capture to the end (duration, count, signal) and return the counters.

    Opening the sources happens in ``open()`` (privileged); ``run()`` drops privileges
    if asked, then captures in this process (one worker) or in worker processes
    (:class:`sipcaptool.workers.WorkerPool`). ``error`` is the first error a worker
    process ended with (None when all ended well).
    """

    def __init__(self, opts: LiveOptions, settings: Any) -> None:
        self.opts = opts
        self.settings = settings
        self.shared = Shared(bool(settings.capture_on), opts.count)
        self.stats = Stats()
        self.sources: list[Any] = []
        self.pool: WorkerPool | None = None
        self.started = time.monotonic()
        self.errors: list[str] = []
        self.error: SipcaptoolError | None = None
        self.linktype: int | None = None
        self.filter: str | None = None

    @property
    def capture_flag(self) -> Any:
        return self.shared.capture_flag

    def open(self) -> None:
        self.sources = open_sources(self.opts)
        self.linktype = self.sources[0].linktype
        self.filter = getattr(self.sources[0], "filter", None)

    def counters(self) -> Stats:
        """Current counters: this process's, or the workers' last reports."""
        if self.pool is None:
            return self.stats
        return self.pool.counters()

    def stop(self) -> None:
        self.shared.stop.value = 1

    def worker_packets(self) -> list[int]:
        """Packets each worker read (how the fanout shared the traffic)."""
        pool = self.pool
        if pool is None:
            return [int(self.stats.get("packets", 0))]
        out = []
        for i in range(len(self.sources)):
            done = pool.results.get(i)
            out.append(int((done.stats if done else pool.snapshots.get(i, {})).get("packets", 0)))
        return out

    def run(self, *, background: bool = True) -> Stats:
        opts = self.opts
        if opts.user:
            from ..store.url import parse_db_url

            preload({parse_db_url(m.db_url).dialect for m in self.settings.active_modes()})
            drop_privileges(opts.user)
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        self.started = time.monotonic()
        if len(self.sources) == 1:
            w = Worker(self.sources[0], opts, self.settings, self.shared, self.stats,
                       background=background)
            w.run(deadline)
            return self.stats
        return self._run_workers(deadline, background)

    def _run_workers(self, deadline: float | None, background: bool) -> Stats:
        shared = self.shared

        def body(i: int, link: WorkerLink) -> None:
            # Ctrl-C reaches the whole process group: the parent decides, the workers
            # follow the shared stop flag; a direct SIGTERM to a worker stops it too.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, lambda *_: setattr(shared.stop, "value", 1))
            Worker(self.sources[i], self.opts, self.settings, shared, link.stats,
                   background=background, report=link.snapshot).run(deadline)

        # The handles belong to the workers once they are forked. The parent keeps its
        # references without using them: closing a libpcap handle here would tear down
        # the kernel ring the worker reads from.
        self.pool = WorkerPool(len(self.sources), body, name="sipcaptool-capture",
                               stop_flag=shared.stop)
        self.pool.start()
        self.pool.run()
        for f in self.pool.failures:
            self.errors.append(str(f.error))
        if self.pool.failures:
            first = self.pool.failures[0]
            # a worker that died without a word lost its capture: a capture error
            self.error = CaptureError(str(first.error)) if first.died else first.error
        self.stats = self.counters()
        return self.stats


def kernel_summary(stats: Stats) -> dict[str, int]:
    """Kernel counters of the capture handles, and how often the link went down."""
    return {"received": stats["kernel:received"], "dropped": stats["kernel:dropped"],
            "if_dropped": stats["kernel:if_dropped"],
            "link_down": stats["capture:link-down"]}


__all__ = ["Listen", "LiveCapture", "LiveOptions", "PcapSource", "Worker", "capture_filter",
           "drop_privileges", "kernel_summary", "open_sources", "parse_listen"]
