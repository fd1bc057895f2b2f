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
from typing import TYPE_CHECKING, Any

from ..errors import CaptureError, SipcaptoolError
from ..net import parse_endpoint
from ..stats import Stats
from ..workers import WorkerLink, WorkerPool
from .pcaplive import POLL_MS, PcapSource, capture_filter
from .privileges import drop_privileges, preload

if TYPE_CHECKING:
    from ..decode.packet import PacketDecoder
    from ..pipeline import Pipeline
    from ..record import CapturedMessage
    from ..senders.hep import HepOut, HepSender

log = logging.getLogger("sipcaptool.live")

REPORT_EVERY = 0.5       # seconds between worker -> parent counter reports
DRAIN_SECONDS = 10.0     # at most this long reading what was captured before a stop
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
    hep_out: HepOut | None = None    # the TLS and buffer options of --hep-to
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
            return int(k)


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
        self.pipeline: Pipeline | None = None
        self.sender: HepSender | None = None

    def run(self, deadline: float | None) -> None:
        from ..decode.packet import PacketDecoder
        from ..pipeline import Pipeline

        opts = self.opts
        stats = self.stats
        if opts.store:
            self.pipeline = Pipeline(self.settings, stats, background=self.background,
                                     capture_flag=self.shared.capture_flag,
                                     max_clock_skew=self.settings.max_clock_skew,
                                     maintenance_clock=time.time,
                                     dedup_by_arrival=True)
        try:
            if opts.hep_to:
                from ..senders.hep import HepOut

                out = opts.hep_out or HepOut(tuple(opts.hep_to))
                self.sender = out.sender(stats, self.settings, capture_id=opts.capture_id,
                                         auth_key=opts.auth_key, node_name=opts.node_name)
            # a frame as long as a --snaplen below the largest may have been cut: the
            # decoder counts it (malformed:snapped) rather than store part of a message
            snap = opts.snaplen if opts.snaplen < 65535 + 64 else 0
            decoder = PacketDecoder(self.source.linktype, stats, ports=opts.decoder_ports(),
                                    snaplen=snap,
                                    hep_max_inflated=self.settings.hep_max_inflated,
                                    capture_points=self.settings.dedup_window > 0)
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
    def _loop_pcap(self, decoder: PacketDecoder, deadline: float | None) -> None:
        decode_batch = decoder.decode_batch
        stats = self.stats
        stop = self.shared.stop
        next_report = time.monotonic() + REPORT_EVERY
        drain_until = None  # set when stopping: read what the kernel already holds
        sender = self.sender
        for data, m in self.source.batches():
            if m:
                stats["packets"] += len(m) >> 2
                self._deliver(decode_batch(data, m))
            if sender is not None:
                sender.tick()
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

    def _loop_ipip(self, decoder: PacketDecoder, deadline: float | None) -> None:
        decode = decoder.decode
        stats = self.stats
        stop = self.shared.stop
        read = self.source.read
        next_report = time.monotonic() + REPORT_EVERY
        batch: list[tuple[int, bytes]] = []
        msgs: list[CapturedMessage] = []
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
            if self.sender is not None:
                self.sender.tick()
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_EVERY
                if self.report is not None:
                    self.report(stats)
            if deadline is not None and now >= deadline:
                return

    def _deliver(self, msgs: list[CapturedMessage]) -> None:
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
            self.pipeline.submit_all(msgs)
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
        # the capture is open (and privileges given up): ready, for systemd's Type=notify
        from ..sdnotify import ready

        ready(f"capturing: {opts.describe()}")
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
