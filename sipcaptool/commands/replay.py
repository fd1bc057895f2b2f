"""``sipcaptool replay``: store the SIP messages of pcap/pcapng files.

Parses the options, runs :func:`sipcaptool.replay.replay_files`, draws the progress bar
and prints the summary.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..config import Settings
from ..errors import EXIT_DATABASE
from ..net import parse_ports
from ..replay import Explained, ReplayOptions, replay_files
from ..senders.hep import lost_line
from ..stats import Stats
from .common import dedup_options, print_summary, setting_option, storage_options, summary_dict
from .hep_out import hep_out_from, hep_out_summary, hep_to_options


@click.command("replay")
@hep_to_options(agent=True)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@setting_option("--ports", metavar="LIST",
              help="Only SIP on these UDP/TCP/SCTP ports, e.g. 5060,5080-5090. "
                   "[default: any port; SIP is recognised by content]")
@setting_option("--hep-ports", metavar="LIST",
              help="Only decode HEP on these ports. [default: any port; HEP recognised by content]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no text summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--foreground-writer", is_flag=True, hidden=True,
              help="Write from this process (no writer process).")
@click.option("--writer-parses", type=click.Choice(["auto", "always", "never"]),
              default="auto", hidden=True,
              help="Which batches the writer process parses itself (auto: those it has "
                   "time for).")
@click.option("--again", is_flag=True,
              help="Store a file again although it was replayed into the database before "
                   "(its rows are then there twice).")
@click.option("--resume", is_flag=True,
              help="Continue a replay of a file that was cut short (a signal, a kill, a "
                   "crash): the messages its stored batches hold are skipped (dropped: "
                   "stored-before), the rest stored; each message is stored once. Of "
                   "several files, those replayed completely before are skipped (said "
                   "once), so the same command line continues where it stopped.")
@click.option("--explain", is_flag=True,
              help="List every frame that was skipped, malformed or dropped: file, frame "
                   "number (as Wireshark counts), time, addresses, reasons.")
@storage_options
@dedup_options
def command(files: tuple[str, ...], quiet: bool,
            as_json: bool, foreground_writer: bool, writer_parses: str, again: bool,
            resume: bool,
            explain: bool, settings: Settings) -> int:
    """Read pcap/pcapng FILE(s) and store every SIP message as one row.

    With --hep-to each message is also sent as HEPv3 to collectors (--db none: only
    sent), each call to one of them by a hash of its Call-ID, as live --hep-to does;
    what is still queued at the end is sent within 10 s or kept in SPOOL_DIR-hep.

    A FILE may be compressed with gzip, xz, bzip2 or zstd (known by its first bytes,
    inflated on the fly), or '-' for standard input, compressed or not
    (cat x.pcap.gz | sipcaptool replay -). A pcapng file is read whole, whatever its
    interfaces: several link types, timestamp resolutions and sections.

    Link layers, IPv4/IPv6, fragments, TCP streams, tunnels and HEP inside the capture
    are decoded; SIP is recognised by content on any port. A frame the capture cut at its
    snap length (tcpdump -s) is counted (malformed: snapped), not stored in part. A
    progress bar shows on a terminal; at the end a summary says what was read, stored,
    skipped and why.

    SIGINT (Ctrl-C) or SIGTERM stops reading at the next batch of packets; what was
    read is stored, the summary is printed, and the exit status is 130.

    Each file is remembered in the database (table sipcaptool_replays: its size, a hash
    of its head and tail, first and last packet time, how far the replay got). Replaying
    the same file into the same tables again is refused (exit 2) unless --again; a
    replay that was cut short continues with --resume. While the database is down,
    batches wait in the spool; when it is full (or there is none), the replay stops
    there, as it does before a file it cannot remember for want of the database (exit
    4): once the database is back, --resume stores the rest, each message once.
    Standard input is not remembered.

    Exit status: 0 all files read completely; 2 bad usage, or a file was replayed into
    the database before (--again, --resume); 3 a file is missing, not a capture, has
    an unknown link type or is cut off (everything before the cut is stored); 4 the
    database failed, or refused some rows (the others are stored; the summary counts
    them as dropped: db-error), or --hep-to lost messages (no collector took them and
    the spool could not hold them: dropped: hep-*); 130 interrupted.

    \b
    Example:
      sipcaptool replay examples/call.pcap
      sipcaptool replay /var/spool/capture/*.pcap.gz
      sipcaptool replay --db postgresql://postgres@127.0.0.1/homer \\
          --table-name "sip_a|sip_b" --mt-mode hash day1.pcapng day2.pcap
      sipcaptool replay day1.pcap --db none --hep-to tcp:collector1:9061 \\
          --hep-to tcp:collector2:9061
      sipcaptool replay --resume day1.pcapng
      sipcaptool replay --explain --db none suspect.pcap | grep malformed
    """
    explained: list[Explained] = []
    options = ReplayOptions(ports=parse_ports(settings.ports or None),
                            hep_ports=parse_ports(settings.hep_ports or None, "--hep-ports"),
                            foreground_writer=foreground_writer,
                            writer_parses=writer_parses, again=again,
                            resume=resume,
                            explain=explained.append if explain and as_json else
                            _print_explained if explain else None)
    bar: Any = None

    def show(nbytes: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                       desc="replay", leave=False)
        bar.update(nbytes)

    show_progress = not quiet and sys.stderr.isatty()
    sender = sent = None
    hep_out = hep_out_from(settings)
    if hep_out.targets:
        import dataclasses

        from ..stats import Stats as SentStats

        sent = SentStats()
        sender = hep_out.sender(sent, settings, capture_id=settings.capture_id,
                                auth_key=settings.auth_key or None,
                                node_name=settings.node_name or None)
        options = dataclasses.replace(options, hep_send=sender.send)
    try:
        report = replay_files(files, settings, options, progress=show if show_progress else None)
    finally:
        if bar is not None:
            bar.close()
        if sender is not None:
            sender.close()  # what is queued goes out (or waits in the spool)
    if sent is not None:
        report.stats.update(sent)
    lost = lost_line(report.stats) if sent is not None else ""
    if report.snapped:
        click.echo(f"sipcaptool: warning: {report.snapped} frames were cut short by the "
                   "capture's snap length (tcpdump -s); the messages in them are not stored "
                   "(malformed: snapped); capture with -s 0 to keep whole frames", err=True)
    skipped = [f.path for f in report.files if f.skipped]
    if skipped and not quiet:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        click.echo(f"sipcaptool: {skipped[0]}{more}: replayed completely before, skipped "
                   "(--resume)", err=True)
    keep = _keep_hint(report.stats, settings)
    if not quiet or as_json:
        extra: dict[str, Any] = {
            "files": [f.to_dict() for f in report.files], "seconds": report.seconds,
            "interrupted_by": report.interrupted_by, "spool": report.spool}
        if as_json:  # (as text, the errors are the lines on stderr below: once)
            extra["errors"] = [str(e) for e in report.errors] + ([lost] if lost else [])
            if keep:
                extra["hint"] = keep
            if explain:
                extra["explained"] = [_explained_dict(e) for e in explained]
        summary = summary_dict(report.stats, extra)
        if sender is not None:
            summary.update(hep_out_summary(report.stats))
        print_summary(summary, as_json)
        if keep and not as_json:
            click.echo(f"hint: {keep}")
    for e in report.errors:
        click.echo(f"sipcaptool: error: {e}", err=True)
    if lost:
        click.echo(f"sipcaptool: error: {lost}", err=True)
    if report.errors:
        return report.errors[0].exit_code
    if report.interrupted_by:
        click.echo(f"sipcaptool: interrupted ({report.interrupted_by}); everything read "
                   "before it is stored", err=True)
        return 130
    return EXIT_DATABASE if lost else 0


def _keep_hint(stats: Stats, settings: Settings) -> str:
    """What to do about messages dropped because their SIP does not parse (the
    ``malformed:sip-*`` reasons: the ones ``capture_bad_msgs`` stores)."""
    n = sum(v for k, v in stats.group("malformed").items() if k.startswith("sip-"))
    if not n or settings.capture_bad_msgs:
        return ""
    return (f"{n} messages were not stored because their SIP does not parse "
            "(malformed: sip-*); --capture-bad-msgs 1 stores them (fields best effort), "
            "--explain lists their frames")


def _when(ts_us: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_us // 1_000_000)) + \
        f".{ts_us % 1_000_000:06d}"


def _print_explained(e: Explained) -> None:
    """One line per frame: file, frame number, time (UTC), addresses, reasons."""
    click.echo(f"{e.path}\tframe {e.frame}\t{_when(e.ts_us)}\t{e.src} -> {e.dst}\t"
               + " ".join(e.reasons))


def _explained_dict(e: Explained) -> dict[str, Any]:
    return {"file": e.path, "frame": e.frame, "time": _when(e.ts_us), "ts_us": e.ts_us,
            "src": e.src, "dst": e.dst, "reasons": list(e.reasons)}
