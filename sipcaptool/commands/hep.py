"""``sipcaptool hep``: a HEP collector (UDP and TCP, HEP v1/v2/v3) storing every message.

The command parses its options into a :class:`sipcaptool.collector.CollectorOptions`,
runs :func:`sipcaptool.collector.run_collector` (which receives, stores and, with
``--workers N``, runs the worker processes) and prints its report.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from ..errors import ConfigError
from .common import (
    dedup_options,
    endpoint_options,
    is_quiet,
    log_options,
    print_summary,
    setting_option,
    storage_options,
    summary_dict,
)
from .hep_out import hep_out_from, hep_out_summary, hep_to_options

if TYPE_CHECKING:
    from ..collector import CollectorReport

DEFAULT_LISTEN = ("udp:0.0.0.0:9060",)


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        setting_option("--listen", metavar="udp|tcp|tls:HOST:PORT",
                     help="Address to receive HEP on; repeatable. IPv6 in brackets "
                          "(udp:[::]:9060); tls: HEP over TCP in TLS (--tls-cert, "
                          "--tls-key). [default: udp:0.0.0.0:9060]"),
        setting_option("--tls-cert", metavar="FILE",
                       help="Certificate (PEM, with its chain) of the tls: listeners."),
        setting_option("--tls-key", metavar="FILE",
                       help="Key (PEM) of --tls-cert, unless it is in that file."),
        setting_option("--tls-ca", metavar="FILE",
                       help="Require a client certificate signed by this CA (PEM) on the "
                            "tls: listeners. Refused handshakes (no or a bad certificate, "
                            "plain text, no handshake within 10 s) are counted as "
                            "tls:<reason> and never stop the collector."),
        setting_option("--auth-key", metavar="KEY",
                       help="Accept only packets whose authentication chunk (0x000e) equals "
                            "KEY; others (and HEPv1/v2, which cannot carry a key) are "
                            "dropped, counted as dropped:auth and logged with the sender's "
                            "address (at most one line per sender every 10 s). On the "
                            "command line every user sees it (ps): prefer --auth-key-file."),
        setting_option("--auth-key-file", metavar="FILE",
                       help="Read the auth key from FILE (one line; a bare name is looked "
                            "up in $CREDENTIALS_DIRECTORY first, as systemd's "
                            "LoadCredential= puts it)."),
        setting_option("--workers", metavar="1-64",
                     help="Receiving processes (SO_REUSEPORT), each with its own writer "
                          "process."),
        setting_option("--rcvbuf", metavar="BYTES",
                       help="UDP receive buffer per socket (K/M/G suffixes). Set with "
                            "SO_RCVBUFFORCE when running as root, else capped by "
                            "net.core.rmem_max (a warning says so). [default: 64M]"),
        setting_option("--tcp-idle-timeout",
                     metavar="S",
                     help="Close a HEP-over-TCP connection that sends nothing for S "
                          "seconds, counted as evicted:tcp-idle (0: never). Longer than "
                          "TCP keepalive, which finds agents that vanished without closing "
                          "within about two minutes; an agent quiet for longer connects "
                          "again with its next message. [default: 300]"),
        setting_option("--tcp-max-connections",
                     metavar="N",
                     help="HEP-over-TCP connections held at most (per worker); a new agent "
                          "past it is taken and the connection silent longest is closed, "
                          "counted as evicted:tcp-limit. [default: 4096]"),
        setting_option("--stop-drain-timeout",
                     metavar="S",
                     help="After SIGTERM/SIGINT, store what the sockets already held for "
                          "at most S seconds (0: however long the database takes); what "
                          "is left is read and counted as dropped:shutdown, and the exit "
                          "status is 4. New traffic is refused from the signal on. "
                          "[default: 30]"),
        setting_option("--max-clock-skew",
                     metavar="S",
                     help="A message whose HEP time is more than S seconds from the clock "
                          "has its strftime table (sip_%Y%m%d) named by its arrival time, "
                          "counted as adjusted:clock-skew; the row keeps its own time "
                          "(0: always its own time). [default: 86400]"),
        click.option("--duration", type=click.FloatRange(0, None, min_open=True), default=None,
                     metavar="S", help="Stop after S seconds. [default: until SIGTERM/SIGINT]"),
        click.option("--count", type=click.IntRange(1, None), default=None, metavar="N",
                     help="Stop after N HEP packets (UDP datagrams or TCP-framed packets)."),
        setting_option("--control", metavar="PATH|none",
                     help="Control socket (capture on/off, stats; see 'sipcaptool ctl'). "
                          "[default: $XDG_RUNTIME_DIR/sipcaptool/hep.sock, or "
                          "/run/sipcaptool/hep.sock as root; 'none' for no socket]"),
        setting_option("--metrics", metavar="HOST:PORT",
                     help="Serve the counters for Prometheus at http://HOST:PORT/metrics."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout."),
        click.option("--foreground-writer", is_flag=True, hidden=True,
                     help="Write from the receiving process (no writer process)."),
    ]
    f = log_options(f)
    for deco in reversed(opts):
        f = deco(f)
    return f


@click.command("hep")
@_options
@hep_to_options("--forward-to", client_tls=False)
@storage_options
@endpoint_options
@dedup_options
def command(duration: float | None, count: int | None, as_json: bool, foreground_writer: bool,
            settings: Settings) -> int:
    """Receive HEP (v1, v2, v3) from capture agents over UDP and TCP and store every
    message: SIP into the sip_capture tables, logs/RTCP/reports into theirs.
    Compressed payloads (chunk 0x0010, zlib or gzip) and whole datagrams gzipped by
    the agent (heplify) are inflated.

    Runs until SIGTERM or SIGINT (or --duration / --count), then reads what its
    sockets hold, writes every pending batch and prints a summary: packets, rows per
    table, what was dropped or malformed and why, uptime and per-listener counts.
    Garbage, truncated or hostile input is counted and never stops the collector.

    Exit status: 0 stopped normally; 2 bad option; 4 database error, messages
    received before the stop that the database did not take within
    --stop-drain-timeout (dropped:shutdown), or messages --forward-to lost (no
    collector took them and the spool could not hold them: dropped: hep-*); 5 an
    address or the control socket could not be bound.

    With --forward-to it sends every message on to other collectors as HEPv3 (each
    call to one of them, by a hash of its Call-ID, as agents do); with --db none it
    stores nothing itself (a front collector).

    \b
    Example:
      sipcaptool hep --listen udp:0.0.0.0:9060 --listen tcp:0.0.0.0:9061 \\
          --db postgresql://postgres@127.0.0.1/homer
      sipcaptool hep --listen udp:[::]:9060 --auth-key s3cret --capture-node homer02 --workers 2
      sipcaptool hep --listen tls:0.0.0.0:9062 --tls-cert c.pem --tls-key k.pem \\
          --auth-key s3cret --db postgresql://postgres@127.0.0.1/homer
      sipcaptool hep --listen udp:0.0.0.0:9060 --forward-to tcp:back1:9061 \\
          --forward-to tcp:back2:9061 --db none
    """
    from ..collector import CollectorOptions, run_collector
    from ..sources.hep_sockets import parse_listen

    quiet = is_quiet(settings)
    specs = [parse_listen(x) for x in (settings.listen or DEFAULT_LISTEN)]
    seen = set()
    for s in specs:
        key = (s.transport, s.host, s.port)
        if key in seen and s.port != 0:
            raise ConfigError(f"--listen {s.label()} given twice")
        seen.add(key)
    if not settings.auth_key and settings.origin["auth_key"] != "default":
        raise ConfigError(f"auth_key ({settings.origin['auth_key']}) must not be empty")
    options = CollectorOptions.from_settings(
        settings, listen=specs, rcvbuf=settings.rcvbuf, workers=settings.workers,
        auth_key=settings.auth_key.encode() or None, count=count, duration=duration,
        control_path=settings.control or None, metrics_addr=settings.metrics or None,
        foreground_writer=foreground_writer)
    tls_cert, tls_key, tls_ca = (settings.tls_cert or None, settings.tls_key or None,
                                 settings.tls_ca or None)
    if any(s.transport == "tls" for s in specs):
        from ..tls import server_context

        server_context(tls_cert, tls_key, tls_ca)  # a bad file: exit 2 before binding
    hep_out = hep_out_from(settings, forward=True)
    options = dataclasses.replace(options, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
                                  forward=hep_out if hep_out.targets else None)
    report = run_collector(options, settings, announce=None if quiet else _announce)
    _print_report(report, as_json, quiet)
    # every error once on stderr: the others here, the one the run ends with by the cli
    for e in report.errors:
        if report.exit_error is None or e != str(report.exit_error):
            click.echo(f"sipcaptool: error: {e}", err=True)
    if report.exit_error is not None:
        raise report.exit_error
    return 0


def _announce(line: str) -> None:
    click.echo(f"sipcaptool: {line}", err=True)


def _print_report(report: CollectorReport, as_json: bool, quiet: bool) -> None:
    """The end-of-run summary: JSON, or the text lines (none with -q)."""
    stats = report.stats
    summary = summary_dict(stats, {
        "uptime_s": report.uptime_seconds,
        "uptime_seconds": report.uptime_seconds,  # the older name, for scripts that read it
        "workers": report.workers,
        "stop_reason": report.stop_reason,
        "kernel": stats.group("kernel"),
        "listeners": report.listeners,
        "spool": report.spool,
        "errors": report.errors,
        "tls": stats.group("tls"),
        **(hep_out_summary(stats) if stats.group("hep_out") or stats.group("hep_target")
           else {}),
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
                     + (f" ({report.workers} workers)" if report.workers > 1 else ""))
        for lst in summary["listeners"]:
            extra = ""
            if "connections" in lst:
                extra = f", {lst['connections']} connections"
                if lst.get("closed_bad_stream"):
                    extra += f" ({lst['closed_bad_stream']} closed on a bad stream)"
                if lst.get("tls_refused"):
                    extra += f" ({lst['tls_refused']} refused by TLS)"
            lines.append(f"  {lst['listen']}: {lst['packets']} packets, {lst['bytes']} bytes{extra}")
        for reason, n in (summary.get("tls") or {}).items():
            lines.append(f"  tls {reason}: {n}")
        out = summary.get("hep_out")
        if out:
            lines.append(f"forwarded:         {out.get('sent_udp', 0)} over UDP, "
                         f"{out.get('sent_tcp', 0)} over TCP, {out.get('sent_tls', 0)} over TLS")
            for target, events in (summary.get("hep_targets") or {}).items():
                lines.append(f"  {target}: " + ", ".join(f"{k} {v}" for k, v in events.items()))
        click.echo("\n".join(lines))
    sys.stdout.flush()
