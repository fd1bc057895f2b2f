"""The HEP collector: ``sipcaptool hep`` without its command line.

:func:`run_collector` binds the listening addresses, receives HEP (v1/v2/v3, UDP and
TCP) until a signal, ``duration`` or ``count`` stops it, stores every message and
returns a :class:`CollectorReport`. It takes its options as a :class:`CollectorOptions`
(the command builds it from its options and the settings) and prints nothing: what a
person should see at start (the addresses, the control socket) goes to ``announce``.

One process per worker runs the receive loop
(:class:`sipcaptool.sources.hep_listener.HepCollector`) and its own
:class:`~sipcaptool.pipeline.Pipeline`, whose writer process does the database I/O.
With ``workers > 1`` every address is bound once per worker with SO_REUSEPORT and the
kernel spreads datagrams and connections among the workers, which run in a
:class:`sipcaptool.workers.WorkerPool`: the parent forwards SIGTERM/SIGINT to them,
starts the control socket once every worker is ready (serving the counters of their
snapshots, about one a second), stops them all and raises the error when one cannot
start, and adds up their reports at the end. A worker that ends without a report once
running does not stop the others (the kernel spreads the traffic over the sockets
left); the report says its counts are missing.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from socket import socket
from types import FrameType
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import DeliveryError, SipcaptoolError, StoreError
from .stats import Stats
from .workers import WorkerLink, WorkerPool

if TYPE_CHECKING:
    from .control import Endpoints
    from .pipeline import Pipeline
    from .senders.hep import HepOut, HepSender
    from .sources.hep_listener import HepCollector
    from .sources.hep_sockets import Listener, ListenSpec

log = logging.getLogger("sipcaptool.hep")

__all__ = ["SNAPSHOT_INTERVAL", "CollectorOptions", "CollectorReport", "run_collector"]

SNAPSHOT_INTERVAL = 1.0  # seconds between two snapshots of a worker's counters

Listeners = list[tuple["Listener", socket]]
Announce = Callable[[str], None]


@dataclass(frozen=True)
class CollectorOptions:
    """What to listen on and how to run; the values that are settings (``tcp_*``,
    ``stop_drain_timeout``, ``hep_max_inflated``) come from :meth:`from_settings`.

    Attributes:
        listen: the addresses (``parse_listen`` of ``udp:HOST:PORT`` / ``tcp:…``).
        rcvbuf: UDP receive buffer per socket, bytes.
        workers: receiving processes (1: this process).
        auth_key: packets must carry this key (HEP chunk 0x000e); None: any packet.
        max_inflated: inflate budget per datagram / TCP-framed packet, bytes.
        count: stop after this many HEP packets (None: no limit).
        duration: stop after this many seconds (None: until a signal).
        control_path: control socket path, ``"none"``, or None (the default path).
        metrics_addr: ``HOST:PORT`` of the Prometheus endpoint, or None.
        tcp_idle_timeout: close a TCP connection silent this long (0: never).
        tcp_max_connections: TCP connections held at most, per worker.
        stop_drain_timeout: seconds spent storing what the sockets held at the stop
            (0: however long the database takes).
        foreground_writer: write from the receiving process (no writer process).
        forward: ``--forward-to``: send every message received on to these collectors
            as HEPv3 (each call to one of them, as agents do), or None.
        tls_cert, tls_key, tls_ca: the certificate, key and (to require client
            certificates) CA of the ``tls:`` listeners.
    """

    listen: tuple[ListenSpec, ...]
    rcvbuf: int = 64 * 1024 * 1024
    workers: int = 1
    auth_key: bytes | None = None
    max_inflated: int = 256 * 1024
    count: int | None = None
    duration: float | None = None
    control_path: str | None = None
    metrics_addr: str | None = None
    tcp_idle_timeout: float = 300.0
    tcp_max_connections: int = 4096
    stop_drain_timeout: float = 30.0
    foreground_writer: bool = False
    forward: HepOut | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, listen: Sequence[ListenSpec],
                      rcvbuf: int = 64 * 1024 * 1024, workers: int = 1,
                      auth_key: bytes | None = None, count: int | None = None,
                      duration: float | None = None, control_path: str | None = None,
                      metrics_addr: str | None = None,
                      foreground_writer: bool = False) -> CollectorOptions:
        """The options given, with the collector's settings taken from ``settings``."""
        return cls(listen=tuple(listen), rcvbuf=rcvbuf, workers=workers, auth_key=auth_key,
                   max_inflated=settings.hep_max_inflated, count=count, duration=duration,
                   control_path=control_path, metrics_addr=metrics_addr,
                   tcp_idle_timeout=settings.tcp_idle_timeout,
                   tcp_max_connections=settings.tcp_max_connections,
                   stop_drain_timeout=settings.stop_drain_timeout,
                   foreground_writer=foreground_writer)


@dataclass(frozen=True)
class CollectorReport:
    """How a run of the collector ended.

    Attributes:
        stats: every counter (all workers added up).
        listeners: per address: ``listen``, ``packets``, ``bytes`` (TCP also
            ``connections``, ``closed_bad_stream``), all workers added up.
        stop_reason: ``SIGTERM``, ``SIGINT``, ``duration``, ``count``, ``db-error``
            (workers: the signal the parent received, else their reasons joined by
            commas), or None.
        spool: what the writers left in the spool (``dir``, ``batches``, ``rows``,
            ``bytes``).
        errors: one line per error, for the summary.
        exit_error: the error the run ends with (its exit code), or None.
        workers: receiving processes.
        uptime_seconds: from the sockets bound to the end.
    """

    stats: Stats
    listeners: list[dict[str, Any]]
    stop_reason: str | None
    spool: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)
    exit_error: SipcaptoolError | None = None
    workers: int = 1
    uptime_seconds: float = 0.0


def run_collector(options: CollectorOptions, settings: Settings, *,
                  announce: Announce | None = None) -> CollectorReport:
    """Bind ``options.listen``, collect until stopped, store, and report.

    ``announce`` is called with one line per address listened on and one for the
    control socket / metrics endpoint, once receiving has started (None: say nothing).
    Raises the error of the start-up (an address or the control socket that cannot be
    bound: :class:`~sipcaptool.errors.CaptureError`; a database that cannot be used at
    the start: :class:`~sipcaptool.errors.StoreError`, …); an error during the run is
    in the report's ``exit_error`` -- as is, when the database did not take within
    ``stop_drain_timeout`` what was received before the stop (``dropped:shutdown``), a
    StoreError saying so.
    """
    from .sources.hep_sockets import open_listeners, raise_open_file_limit

    raise_open_file_limit(options.tcp_max_connections + 512)
    copies = open_listeners(options.listen, options.rcvbuf, options.workers)
    started = time.monotonic()
    if options.workers == 1:
        report = _run_single(copies[0], settings, options, announce)
    else:
        if settings.dedup_window:
            log.warning("dedup_window with %d workers: each worker has its own window, so "
                        "copies sent by agents that reach different workers are all stored "
                        "(docs/operators.md)", options.workers)
        report = _run_workers(copies, settings, options, announce)
    left = report.stats["dropped:shutdown"]
    if left and report.exit_error is None:
        error = StoreError(
            f"{left} HEP packets received before the stop were not stored: the database "
            f"did not take them within {options.stop_drain_timeout:g}s "
            "(stop_drain_timeout), or a second signal cut the drain short; counted as "
            "dropped:shutdown")
        report = dataclasses.replace(report, exit_error=error,
                                     errors=[*report.errors, str(error)])
    from .senders.hep import lost_line

    lost = lost_line(report.stats)   # (--forward-to)
    if lost and report.exit_error is None:
        report = dataclasses.replace(report, exit_error=DeliveryError(lost),
                                     errors=[*report.errors, lost])
    return dataclasses.replace(report, workers=options.workers,
                               uptime_seconds=round(time.monotonic() - started, 3))


# --------------------------------------------------------------------------- pieces

def _announce(listeners: Listeners, announce: Announce | None, suffix: str = "") -> None:
    """Every listener is bound and receiving (and the workers run): say so, to the
    person (``announce``) and to systemd (``Type=notify``: READY=1)."""
    from .sdnotify import ready

    ready("listening on " + ", ".join(lst.label for lst, _s in listeners) + suffix)
    if announce is None:
        return
    for lst, _sock in listeners:
        announce(f"listening on {lst.label}{suffix}")


class _StorePolicy:
    """What a StoreError seen while receiving means.

    A batch the database refused (after the configured retries) is already counted by
    the writer (``db:errors``, ``dropped:db-error``): log it and keep collecting -- the
    database may come back. A writer process that is gone cannot store anything any more:
    stop, and end with the database error's exit code.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.fatal: StoreError | None = None
        self.collector: HepCollector | None = None
        self.sender: HepSender | None = None  # --forward-to

    def __call__(self, e: StoreError) -> None:
        if any(w.process_ended for w in self.pipeline.writers):
            self.fatal = self.fatal or e
            log.error("%s; stopping", e)
            if self.collector is not None:
                self.collector.stop("db-error")
        else:
            log.error("database: %s (collecting goes on)", e)


def _make_collector(listeners: Listeners, pipeline: Pipeline, stats: Stats,
                    options: CollectorOptions, settings: Settings, *,
                    count: int | None = None,
                    on_progress: Callable[[int], bool] | None = None,
                    tick: Callable[[], None] | None = None,
                    ) -> tuple[HepCollector, _StorePolicy]:
    from .sources.hep_listener import HepCollector

    policy = _StorePolicy(pipeline)
    tls_context = None
    if any(lst.spec.transport == "tls" for lst, _s in listeners):
        from .tls import server_context

        tls_context = server_context(options.tls_cert, options.tls_key, options.tls_ca)
    submit: Callable[[Any], None] = pipeline.submit
    interval = SNAPSHOT_INTERVAL
    if options.forward is not None:
        sender = options.forward.sender(stats, settings, auth_key=options.auth_key,
                                        forward=True)
        policy.sender = sender
        store, send = pipeline.submit, sender.send

        def submit(msg: Any) -> None:
            send(msg)
            store(msg)

        # the sender is looked after often (reconnects, what waits); the caller's tick
        # keeps its pace
        inner = tick
        last = [0.0]
        interval = 0.1

        def tick() -> None:
            sender.tick()
            now = time.monotonic()
            if inner is not None and now - last[0] >= SNAPSHOT_INTERVAL:
                last[0] = now
                inner()

    collector = HepCollector(listeners, submit, stats, auth_key=options.auth_key,
                             max_inflated=options.max_inflated,
                             count=count, duration=options.duration, tick=tick,
                             tick_interval=interval, on_progress=on_progress,
                             on_store_error=policy,
                             tcp_idle_timeout=options.tcp_idle_timeout or None,
                             max_connections=options.tcp_max_connections,
                             drain_limit=options.stop_drain_timeout or None,
                             tls_context=tls_context)
    policy.collector = collector
    return collector, policy


def _start_control(options: CollectorOptions, capture_flag: Any,
                   provider: Callable[[], Stats], listeners: Listeners,
                   announce: Announce | None) -> Endpoints:
    from .control import Endpoints

    ep = Endpoints("hep", options.control_path, options.metrics_addr, capture_flag, provider,
                   extra={"command": "hep",
                          "listeners": [lst.label for lst, _s in listeners]}).start()
    if ep.describe() and announce is not None:
        announce(ep.describe())
    return ep


def _run_then_close(collector: HepCollector, pipeline: Pipeline, policy: _StorePolicy,
                    before: Callable[[], None] | None = None) -> SipcaptoolError | None:
    """Run the receive loop (after ``before()``, if given), then -- with further SIGINT
    and SIGTERM ignored, so nothing interrupts it -- write every pending batch.

    Returns the first error: of ``before``/the loop, of closing the pipeline, or the one
    the store-error policy ended the loop with; None when all went well.
    """
    error: SipcaptoolError | None = None
    try:
        if before is not None:
            before()
        collector.run()
    except SipcaptoolError as e:
        error = e
    finally:
        # reading has stopped (run() returned); now write everything that is pending
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if policy.sender is not None:
            policy.sender.close()  # forward what is queued (or keep it in the spool)
        try:
            pipeline.close()
        except SipcaptoolError as e:
            error = error or e
    return error or policy.fatal


def _run_single(listeners: Listeners, settings: Settings, options: CollectorOptions,
                announce: Announce | None) -> CollectorReport:
    from .pipeline import CaptureFlag, Pipeline

    stats = Stats()
    capture_flag = CaptureFlag(bool(settings.capture_on))
    try:
        pipeline = Pipeline(settings, stats, background=not options.foreground_writer,
                            capture_flag=capture_flag, max_clock_skew=settings.max_clock_skew,
                            maintenance_clock=time.time,
                            dedup_by_arrival=True)
    except BaseException:
        for _l, s in listeners:
            s.close()
        raise
    collector, policy = _make_collector(listeners, pipeline, stats, options, settings,
                                        count=options.count,
                                        tick=lambda: collector.update_kernel_stats())
    collector.install_signal_handlers()
    control: list[Endpoints] = []

    def before() -> None:
        control.append(_start_control(options, capture_flag, lambda: stats, listeners,
                                      announce))
        _announce(listeners, announce)
    try:
        exit_error = _run_then_close(collector, pipeline, policy, before)
    finally:
        for c in control:
            c.stop()
    return CollectorReport(stats=stats, listeners=[lst.report() for lst, _s in listeners],
                           stop_reason=collector.stop_reason, spool=pipeline.spool_report(),
                           errors=[str(exit_error)] if exit_error else [],
                           exit_error=exit_error)


# --------------------------------------------------------------------------- workers

def _worker(index: int, link: WorkerLink, listeners: Listeners, settings: Settings,
            options: CollectorOptions, shared_count: Any, capture_flag: Any,
            ) -> dict[str, Any]:
    """Body of one worker process: its own Pipeline and receive loop.

    Returns what the parent merges (the counters travel in the pool's ``Done``). A
    Pipeline that cannot start raises, which the pool reports as ``Failed``.
    """
    from .pipeline import Pipeline

    early: dict[str, str | None] = {"signal": None}

    def early_handler(signum: int, _frame: FrameType | None) -> None:
        early["signal"] = signal.Signals(signum).name  # a stop before the loop runs
    signal.signal(signal.SIGTERM, early_handler)
    signal.signal(signal.SIGINT, early_handler)
    stats = link.stats
    pipeline = Pipeline(settings, stats, background=not options.foreground_writer,
                        capture_flag=capture_flag, max_clock_skew=settings.max_clock_skew,
                        maintenance_clock=time.time,
                        dedup_by_arrival=True)
    on_progress = None
    limit = options.count
    if limit is not None:
        def on_progress(n: int) -> bool:
            with shared_count.get_lock():
                shared_count.value += n
                return bool(shared_count.value >= limit)

    def tick() -> None:
        collector.update_kernel_stats()
        link.snapshot(stats)  # the main process gone: keep collecting, report at the end

    collector, policy = _make_collector(listeners, pipeline, stats, options, settings,
                                        on_progress=on_progress, tick=tick)
    collector.install_signal_handlers()
    if early["signal"]:
        collector.stop(early["signal"])
    link.ready()
    error = _run_then_close(collector, pipeline, policy)
    return {"error": error, "listeners": [lst.report() for lst, _s in listeners],
            "stop_reason": collector.stop_reason, "spool": pipeline.spool_report()}


def _run_workers(copies: list[Listeners], settings: Settings, options: CollectorOptions,
                 announce: Announce | None) -> CollectorReport:
    ctx = multiprocessing.get_context("fork")
    shared_count = ctx.Value("q", 0)
    capture_flag = ctx.RawValue("b", 1 if settings.capture_on else 0)
    n = len(copies)

    def body(i: int, link: WorkerLink) -> dict[str, Any]:
        return _worker(i, link, copies[i], settings, options, shared_count, capture_flag)

    def close_others(i: int) -> None:
        for j, row in enumerate(copies):
            if j != i:
                for _l, s in row:
                    s.close()

    pool = WorkerPool(n, body, name="sipcaptool-hep", signal_workers=True, keep_going=True,
                      close_in_child=close_others)
    stop: dict[str, str | None] = {"signal": None}

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop["signal"] = signal.Signals(signum).name
        pool.stop(signum)

    def fatal() -> SipcaptoolError | None:
        """The first failure to start: a worker that raised, or died before ready."""
        for f in pool.failures:
            if not f.died or f.index not in pool.ready:
                return f.error if not f.died else SipcaptoolError(
                    f"worker {f.index} exited during start-up")
        return None

    control: list[Endpoints] = []

    def tick() -> None:
        if not control and pool.all_ready and fatal() is None:
            control.append(_start_control(options, capture_flag, pool.counters, copies[0],
                                          announce))
            _announce(copies[0], announce, f" ({n} workers)")

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.signal(signal.SIGINT, forward)
    try:
        pool.start()
        for row in copies:
            for _l, s in row:
                s.close()  # each worker holds its own sockets now
        pool.run(tick, every=1.0)
        error = fatal()
        if error is not None:
            raise error
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        for c in control:
            c.stop()
    return _merge(pool, stop["signal"])


def _merge(pool: WorkerPool, signal_name: str | None) -> CollectorReport:
    """Add up the workers' reports (in the order of the workers)."""
    stats = Stats()
    listeners: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    exit_error: SipcaptoolError | None = None
    reasons: set[str] = set()
    spool: dict[str, Any] = {"dir": None, "batches": 0, "rows": 0, "bytes": 0}
    failed = {f.index: f for f in pool.failures}
    for i, p in enumerate(pool.procs):
        done = pool.results.get(i)
        if done is None:
            f = failed.get(i)
            if f is not None and not f.died:
                errors.append(f"worker {i}: {f.error}")
            else:
                errors.append(f"worker {i} ended without a report (exit code {p.exitcode}); "
                              "its counts are missing")
            exit_error = exit_error or (f.error if f is not None and not f.died
                                        else SipcaptoolError(errors[-1]))
            stats.update(pool.snapshots.get(i, {}))
            continue
        r = done.result
        stats.update(done.stats)
        for k, v in (r.get("spool") or {}).items():
            spool[k] = v if k == "dir" else spool[k] + v
        if r.get("stop_reason"):
            reasons.add(r["stop_reason"])
        if r.get("error") is not None:
            errors.append(f"worker {i}: {r['error']}")
            exit_error = exit_error or r["error"]
        for rep in r.get("listeners", []):
            agg = listeners.setdefault(rep["listen"], {k: (v if k == "listen" else 0)
                                                       for k, v in rep.items()})
            for k, v in rep.items():
                if k != "listen":
                    agg[k] += v
    return CollectorReport(stats=stats, listeners=list(listeners.values()),
                           stop_reason=signal_name or ",".join(sorted(reasons)) or None,
                           spool=spool, errors=errors, exit_error=exit_error)
