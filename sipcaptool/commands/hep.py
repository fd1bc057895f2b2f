"""``sipcaptool hep``: a HEP collector (UDP and TCP, HEP v1/v2/v3) storing every message.

One process per worker runs the receive loop (:mod:`sipcaptool.sources.hep_listener`)
and its own Pipeline, whose writer process does the database I/O. With ``--workers N``
every address is bound N times with SO_REUSEPORT and the kernel spreads datagrams and
connections among the workers; each worker reports its counters at the end (and a
snapshot every second, for the control socket) and the main process adds them up.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from typing import Any

import click

from ..config import Settings
from ..errors import ConfigError, SipcaptoolError, StoreError
from ..stats import Stats
from ..control import endpoint_options
from .common import print_summary, storage_options, summary_dict

log = logging.getLogger("sipcaptool.hep")

DEFAULT_LISTEN = ("udp:0.0.0.0:9060",)
SNAPSHOT_INTERVAL = 1.0


def _parse_size(value: str) -> int:
    """'67108864', '64M', '64MiB', '512k' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", value, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--rcvbuf {value!r}: expected bytes, e.g. 67108864 or 64M")
    mult = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def _options(f):
    opts = [
        click.option("--listen", "listen", multiple=True, metavar="udp|tcp:HOST:PORT",
                     help="Address to receive HEP on; repeatable. IPv6 in brackets "
                          "(udp:[::]:9060). [default: udp:0.0.0.0:9060]"),
        click.option("--auth-key", default=None, metavar="KEY",
                     help="Accept only packets whose authentication chunk (0x000e) equals "
                          "KEY; others (and HEPv1/v2, which cannot carry a key) are dropped, "
                          "counted as dropped:auth and logged with the sender's address "
                          "(at most one line per sender every 10 s)."),
        click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Receiving processes (SO_REUSEPORT), each with its own writer "
                          "process."),
        click.option("--rcvbuf", default="64M", show_default=True, metavar="BYTES",
                     help="UDP receive buffer per socket (K/M/G suffixes). Set with "
                          "SO_RCVBUFFORCE when running as root, else capped by "
                          "net.core.rmem_max (a warning says so)."),
        click.option("--tcp-idle-timeout", type=click.FloatRange(0, 86400), default=None,
                     metavar="S",
                     help="Close a HEP-over-TCP connection that sends nothing for S "
                          "seconds, counted as evicted:tcp-idle (0: never). Longer than "
                          "TCP keepalive, which finds agents that vanished without closing "
                          "within about two minutes; an agent quiet for longer connects "
                          "again with its next message. [default: 300]"),
        click.option("--tcp-max-connections", type=click.IntRange(1, 1 << 20), default=None,
                     metavar="N",
                     help="HEP-over-TCP connections held at most (per worker); a new agent "
                          "past it is taken and the connection silent longest is closed, "
                          "counted as evicted:tcp-limit. [default: 4096]"),
        click.option("--stop-drain-timeout", type=click.FloatRange(0, 86400), default=None,
                     metavar="S",
                     help="After SIGTERM/SIGINT, store what the sockets already held for "
                          "at most S seconds (0: however long the database takes); what "
                          "is left is read and counted as dropped:shutdown, and the exit "
                          "status is 4. New traffic is refused from the signal on. "
                          "[default: 30]"),
        click.option("--max-clock-skew", type=click.FloatRange(0, 3650 * 86400), default=None,
                     metavar="S",
                     help="A message whose HEP time is more than S seconds from the clock "
                          "has its strftime table (sip_%Y%m%d) named by its arrival time, "
                          "counted as adjusted:clock-skew; the row keeps its own time "
                          "(0: always its own time). [default: 86400]"),
        click.option("--duration", type=click.FloatRange(0, None, min_open=True), default=None,
                     metavar="S", help="Stop after S seconds. [default: until SIGTERM/SIGINT]"),
        click.option("--count", type=click.IntRange(1, None), default=None, metavar="N",
                     help="Stop after N HEP packets (UDP datagrams or TCP-framed packets)."),
        click.option("--control", "control_path", default=None, metavar="PATH|none",
                     help="Control socket (capture on/off, stats; see 'sipcaptool ctl'). "
                          "[default: $XDG_RUNTIME_DIR/sipcaptool/hep.sock, or "
                          "/run/sipcaptool/hep.sock as root; 'none' for no socket]"),
        click.option("--metrics", "metrics_addr", default=None, metavar="HOST:PORT",
                     help="Serve the counters for Prometheus at http://HOST:PORT/metrics."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout."),
        click.option("-q", "--quiet", count=True,
                     help="No 'listening on' lines and no text summary; logs errors only "
                          "(-qq: critical only)."),
        click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug)."),
        click.option("--log-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Append logs to FILE instead of stderr; reopened on SIGHUP."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="Log lines as text or JSON objects."),
        click.option("--foreground-writer", is_flag=True, hidden=True,
                     help="Write from the receiving process (no writer process)."),
    ]
    for deco in reversed(opts):
        f = deco(f)
    return f


@click.command("hep")
@_options
@storage_options
@endpoint_options
def command(listen: tuple[str, ...], auth_key: str | None, workers: int, rcvbuf: str,
            tcp_idle_timeout: float | None, tcp_max_connections: int | None,
            stop_drain_timeout: float | None, max_clock_skew: float | None, duration: float | None, count: int | None, control_path: str | None,
            metrics_addr: str | None, as_json: bool, quiet: int, verbose: int, log_file: str | None, log_format: str,
            foreground_writer: bool, settings: Settings) -> int:
    """Receive HEP (v1, v2, v3) from capture agents over UDP and TCP and store every
    message: SIP into the sip_capture tables, logs/RTCP/reports into theirs.
    Compressed payloads (chunk 0x0010, zlib or gzip) and whole datagrams gzipped by
    the agent (heplify) are inflated.

    Runs until SIGTERM or SIGINT (or --duration / --count), then reads what its
    sockets hold, writes every pending batch and prints a summary: packets, rows per
    table, what was dropped or malformed and why, uptime and per-listener counts.
    Garbage, truncated or hostile input is counted and never stops the collector.

    Exit status: 0 stopped normally; 2 bad option; 4 database error, or messages
    received before the stop that the database did not take within
    --stop-drain-timeout (dropped:shutdown); 5 an address or the control socket could
    not be bound.

    \b
    Example:
      sipcaptool hep --listen udp:0.0.0.0:9060 --listen tcp:0.0.0.0:9061 \\
          --db postgresql://postgres@127.0.0.1/homer
      sipcaptool hep --listen udp:[::]:9060 --auth-key s3cret --capture-node homer02 --workers 2
    """
    from .common import setup_command_logging
    from ..sources.hep_listener import open_listeners, parse_listen, raise_open_file_limit

    setup_command_logging(verbose, quiet, log_file, log_format)
    for name, value in (("tcp_idle_timeout", tcp_idle_timeout),
                        ("tcp_max_connections", tcp_max_connections),
                        ("stop_drain_timeout", stop_drain_timeout),
                        ("max_clock_skew", max_clock_skew)):
        if value is not None:
            settings.set(name, value, "command line")
    raise_open_file_limit(settings.tcp_max_connections + 512)

    specs = [parse_listen(x) for x in (listen or DEFAULT_LISTEN)]
    seen = set()
    for s in specs:
        key = (s.transport, s.host, s.port)
        if key in seen and s.port != 0:
            raise ConfigError(f"--listen {s.label()} given twice")
        seen.add(key)
    key = auth_key.encode() if auth_key is not None else None
    if key is not None and not key:
        raise ConfigError("--auth-key must not be empty")
    bufsize = _parse_size(rcvbuf)
    copies = open_listeners(specs, bufsize, workers)
    opts = dict(auth_key=key, max_inflated=settings.hep_max_inflated,
                count=count, duration=duration, quiet=quiet > 0,
                foreground_writer=foreground_writer, control_path=control_path,
                metrics_addr=metrics_addr, tcp_idle_timeout=settings.tcp_idle_timeout,
                tcp_max_connections=settings.tcp_max_connections,
                stop_drain_timeout=settings.stop_drain_timeout)
    started = time.monotonic()
    if workers == 1:
        result = _run_single(copies[0], settings, opts)
    else:
        result = _run_workers(copies, settings, opts)
    stats: Stats = result["stats"]
    left = stats["dropped:shutdown"]
    if left and result.get("exit_error") is None:
        result["exit_error"] = StoreError(
            f"{left} HEP packets received before the stop were not stored: the database "
            f"did not take them within {settings.stop_drain_timeout:g}s "
            "(stop_drain_timeout), or a second signal cut the drain short; counted as "
            "dropped:shutdown")
        result.setdefault("errors", []).append(str(result["exit_error"]))
    summary = summary_dict(stats, {
        "uptime_seconds": round(time.monotonic() - started, 3),
        "workers": workers,
        "stop_reason": result.get("stop_reason"),
        "kernel": stats.group("kernel"),
        "listeners": result["listeners"],
        "spool": result.get("spool"),
        "errors": result.get("errors", []),
    })
    if as_json:
        print_summary(summary, True)
    elif not quiet:
        print_summary(summary, False)
        lines = []
        for name, n in summary["kernel"].items():
            lines.append(f"kernel {name}: {n}")
        sp = summary.get("spool") or {}
        if sp.get("batches"):
            lines.append(f"left in the spool: {sp['rows']} rows ({sp['batches']} batches, "
                         f"{sp['bytes']} bytes) in {sp['dir']}")
        lines.append(f"uptime:            {summary['uptime_seconds']:.1f} s"
                     + (f" ({workers} workers)" if workers > 1 else ""))
        for lst in summary["listeners"]:
            extra = ""
            if "connections" in lst:
                extra = f", {lst['connections']} connections"
                if lst.get("closed_bad_stream"):
                    extra += f" ({lst['closed_bad_stream']} closed on a bad stream)"
            lines.append(f"  {lst['listen']}: {lst['packets']} packets, {lst['bytes']} bytes{extra}")
        click.echo("\n".join(lines))
    sys.stdout.flush()
    if result.get("exit_error") is not None:
        raise result["exit_error"]
    return 0


# --------------------------------------------------------------------------- pieces

def _announce(listeners, quiet: bool, suffix: str = "") -> None:
    if quiet:
        return
    for lst, _sock in listeners:
        click.echo(f"sipcaptool: listening on {lst.label}{suffix}", err=True)
    sys.stderr.flush()


class _StorePolicy:
    """What a StoreError seen while receiving means.

    A batch the database refused (after the configured retries) is already counted by
    the writer (``db:errors``, ``dropped:db-error``): log it and keep collecting -- the
    database may come back. A writer process that is gone cannot store anything any more:
    stop, and end with the database error's exit code.
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.fatal: StoreError | None = None
        self.collector = None

    def __call__(self, e: StoreError) -> None:
        dead = any(w.background and getattr(w, "_proc", 1) is None and w.adapter is not None
                   for w in self.pipeline.writers)
        if dead:
            self.fatal = self.fatal or e
            log.error("%s; stopping", e)
            if self.collector is not None:
                self.collector.stop("db-error")
        else:
            log.error("database: %s (collecting goes on)", e)


def _make_collector(listeners, pipeline, stats: Stats, opts: dict[str, Any], *,
                    count=None, on_progress=None, tick=None):
    from ..sources.hep_listener import HepCollector

    policy = _StorePolicy(pipeline)
    collector = HepCollector(listeners, pipeline.submit, stats, auth_key=opts["auth_key"],
                             max_inflated=opts["max_inflated"],
                             count=count, duration=opts["duration"], tick=tick,
                             tick_interval=SNAPSHOT_INTERVAL, on_progress=on_progress,
                             on_store_error=policy,
                             tcp_idle_timeout=opts.get("tcp_idle_timeout") or None,
                             max_connections=opts["tcp_max_connections"],
                             drain_limit=opts["stop_drain_timeout"] or None)
    policy.collector = collector
    return collector, policy


def _start_control(opts: dict[str, Any], capture_flag, provider, listeners):
    from ..control import Endpoints

    ep = Endpoints("hep", opts["control_path"], opts.get("metrics_addr"), capture_flag, provider,
                   extra={"command": "hep",
                          "listeners": [lst.label for lst, _s in listeners]}).start()
    if ep.describe() and not opts["quiet"]:
        click.echo(f"sipcaptool: {ep.describe()}", err=True)
    return ep


def _run_then_close(collector, pipeline, policy, before=None) -> SipcaptoolError | None:
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
        try:
            pipeline.close()
        except SipcaptoolError as e:
            error = error or e
    return error or policy.fatal


def _run_single(listeners, settings: Settings, opts: dict[str, Any]) -> dict[str, Any]:
    from ..pipeline import CaptureFlag, Pipeline

    stats = Stats()
    capture_flag = CaptureFlag(bool(settings.capture_on))
    try:
        pipeline = Pipeline(settings, stats, background=not opts["foreground_writer"],
                            capture_flag=capture_flag, max_clock_skew=settings.max_clock_skew)
    except BaseException:
        for _l, s in listeners:
            s.close()
        raise
    collector, policy = _make_collector(listeners, pipeline, stats, opts, count=opts["count"],
                                        tick=lambda: collector.update_kernel_stats())
    collector.install_signal_handlers()
    control: list = []

    def before() -> None:
        control.append(_start_control(opts, capture_flag, lambda: stats, listeners))
        _announce(listeners, opts["quiet"])
    try:
        exit_error = _run_then_close(collector, pipeline, policy, before)
    finally:
        for c in control:
            c.stop()
    return {"stats": stats, "listeners": [lst.report() for lst, _s in listeners],
            "stop_reason": collector.stop_reason, "exit_error": exit_error,
            "spool": pipeline.spool_report(),
            "errors": [str(exit_error)] if exit_error else []}


# --------------------------------------------------------------------------- workers

def _worker_main(index: int, listeners, others, settings: Settings, opts: dict[str, Any],
                 conn, shared_count, capture_flag) -> None:
    """Body of one worker process: its own Pipeline and receive loop."""
    from ..pipeline import Pipeline

    for _l, s in others:
        s.close()
    early = {"signal": None}

    def early_handler(signum, _frame):  # a stop before the loop runs: honour it at once
        early["signal"] = signal.Signals(signum).name
    signal.signal(signal.SIGTERM, early_handler)
    signal.signal(signal.SIGINT, early_handler)
    stats = Stats()
    try:
        pipeline = Pipeline(settings, stats, background=not opts["foreground_writer"],
                            capture_flag=capture_flag, max_clock_skew=settings.max_clock_skew)
    except SipcaptoolError as e:
        conn.send({"index": index, "fatal": e})
        return
    on_progress = None
    limit = opts["count"]
    if limit is not None:
        def on_progress(n: int) -> bool:
            with shared_count.get_lock():
                shared_count.value += n
                return shared_count.value >= limit

    def tick() -> None:
        collector.update_kernel_stats()
        try:
            conn.send({"index": index, "snapshot": dict(stats)})
        except OSError:  # the main process is gone: keep collecting, report at the end
            pass

    collector, policy = _make_collector(listeners, pipeline, stats, opts,
                                        on_progress=on_progress, tick=tick)
    collector.install_signal_handlers()
    if early["signal"]:
        collector.stop(early["signal"])
    conn.send({"index": index, "ready": True})
    result: dict[str, Any] = {"index": index}
    error = _run_then_close(collector, pipeline, policy)
    if error is not None:
        result["error"] = error
    result.update(stats=dict(stats), listeners=[lst.report() for lst, _s in listeners],
                  stop_reason=collector.stop_reason, spool=pipeline.spool_report(),
                  final=True)
    try:
        conn.send(result)
    except OSError:
        pass


def _run_workers(copies, settings: Settings, opts: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("fork")
    shared_count = ctx.Value("q", 0)
    capture_flag = ctx.RawValue("b", 1 if settings.capture_on else 0)
    procs: list = []
    conns: list = []
    all_socks = [x for row in copies for x in row]
    stop = {"signal": None}
    snapshots: dict[int, dict] = {}
    results: dict[int, dict] = {}

    def forward(signum, _frame):
        stop["signal"] = signal.Signals(signum).name
        for p in procs:
            if p.pid and p.exitcode is None:
                try:
                    os.kill(p.pid, signum)
                except OSError:
                    pass

    def aggregated() -> Stats:
        total = Stats()
        for i in range(len(procs)):
            total.update(results.get(i, {}).get("stats") or snapshots.get(i, {}))
        return total

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.signal(signal.SIGINT, forward)
    control = None
    try:
        for i, listeners in enumerate(copies):
            others = [x for x in all_socks if x not in listeners]
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_main, name=f"sipcaptool-hep-{i}",
                            args=(i, listeners, others, settings, opts, child_end,
                                  shared_count, capture_flag))
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        for _l, s in all_socks:
            s.close()  # each worker holds its own sockets now

        ready: set[int] = set()
        fatal: BaseException | None = None
        open_conns = {c: i for i, c in enumerate(conns)}
        announced = False
        while open_conns:
            if not announced and len(ready) == len(procs) and fatal is None:
                announced = True
                control = _start_control(opts, capture_flag, aggregated,
                                         copies[0])
                _announce(copies[0], opts["quiet"], f" ({len(procs)} workers)")
            for c in wait(list(open_conns), timeout=1.0):
                i = open_conns[c]
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    del open_conns[c]
                    if i not in ready and fatal is None:
                        fatal = SipcaptoolError(f"worker {i} exited during start-up")
                        forward(signal.SIGTERM, None)
                    continue
                if msg.get("fatal") is not None:
                    fatal = fatal or msg["fatal"]
                    del open_conns[c]
                    forward(signal.SIGTERM, None)
                elif msg.get("ready"):
                    ready.add(i)
                elif "snapshot" in msg:
                    snapshots[i] = msg["snapshot"]
                elif msg.get("final"):
                    ready.add(i)
                    results[i] = msg
                    del open_conns[c]
        for p in procs:
            p.join(60)
        if fatal is not None:
            raise fatal
    except SipcaptoolError:
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if control is not None:
            control.stop()

    stats = Stats()
    listeners: dict[str, dict] = {}
    errors: list[str] = []
    exit_error = None
    reasons = set()
    spool = {"dir": None, "batches": 0, "rows": 0, "bytes": 0}
    for i, p in enumerate(procs):
        r = results.get(i)
        if r is None:
            errors.append(f"worker {i} ended without a report (exit code {p.exitcode}); "
                          "its counts are missing")
            exit_error = exit_error or SipcaptoolError(errors[-1])
            stats.update(snapshots.get(i, {}))
            continue
        stats.update(r.get("stats", {}))
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
    return {"stats": stats, "listeners": list(listeners.values()), "errors": errors,
            "stop_reason": stop["signal"] or ",".join(sorted(reasons)) or None,
            "spool": spool, "exit_error": exit_error}
