"""``sipcaptool replay``: store the SIP messages of pcap/pcapng files."""

from __future__ import annotations

import signal
import sys
import time

import click

from ..config import Settings
from ..errors import DecodeError, InputError, SipcaptoolError, ConfigError, StoreError
from ..stats import Stats
from .common import print_summary, storage_options, summary_dict


def parse_ports(value: str | None, name: str = "--ports") -> frozenset[int] | None:
    """'5060,5080-5090' -> frozenset; None/'' -> None (any port)."""
    if not value:
        return None
    ports: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ConfigError(f"{name} {value!r}: {part!r} is not a port or a range "
                              "like 5080-5090") from None
        if not (0 < a <= 65535 and 0 < b <= 65535 and a <= b):
            raise ConfigError(f"{name} {value!r}: {part!r} is out of range; ports are 1-65535, "
                              "ranges low-high")
        ports.update(range(a, b + 1))
    return frozenset(ports)


@click.command("replay")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--ports", metavar="LIST", default=None,
              help="Only SIP on these UDP/TCP/SCTP ports, e.g. 5060,5080-5090. "
                   "[default: any port; SIP is recognised by content]")
@click.option("--hep-ports", metavar="LIST", default=None,
              help="Only decode HEP on these ports. [default: any port; HEP recognised by content]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no text summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--foreground-writer", is_flag=True, hidden=True,
              help="Write from this process (no writer process).")
@storage_options
def command(files: tuple[str, ...], ports: str | None, hep_ports: str | None, quiet: bool,
            as_json: bool, foreground_writer: bool, settings: Settings) -> int:
    """Read pcap/pcapng FILE(s) and store every SIP message as one row.

    A FILE may be gzip-compressed (x.pcap.gz, inflated on the fly), or '-' for standard
    input (zcat x.pcap.gz | sipcaptool replay -).

    Link layers, IPv4/IPv6, fragments, TCP streams, tunnels and HEP inside the capture
    are decoded; SIP is recognised by content on any port. A frame the capture cut at its
    snap length (tcpdump -s) is counted (malformed: snapped), not stored in part. A
    progress bar shows on a terminal; at the end a summary says what was read, stored,
    skipped and why.

    SIGINT (Ctrl-C) or SIGTERM stops reading at the next batch of packets; what was
    read is stored, the summary is printed, and the exit status is 130.

    Exit status: 0 all files read completely; 3 a file is missing, not a capture, has
    an unknown link type or is cut off (everything before the cut is stored); 4 the
    database failed, or refused some rows (the others are stored; the summary counts
    them as dropped: db-error); 130 interrupted.

    \b
    Example:
      sipcaptool replay examples/call.pcap
      sipcaptool replay /var/spool/capture/*.pcap.gz
      sipcaptool replay --db postgresql://postgres@127.0.0.1/homer \\
          --table-name "sip_a|sip_b" --mt-mode hash day1.pcapng day2.pcap
    """
    port_set = parse_ports(ports)
    hep_set = parse_ports(hep_ports, "--hep-ports")
    from ..pipeline import Pipeline
    from ..sources.pcapfile import CaptureFile

    if files.count("-") > 1:
        raise ConfigError("'-' (standard input) can be given only once")
    # Open every file first: a typo in the last name should not cost a long run.
    captures = [CaptureFile(f) for f in files]
    stats = Stats()
    errors: list[SipcaptoolError] = []
    file_reports = []
    # a stream (standard input, an inflated .gz) has no size known ahead: no total then
    sizes = [c.size for c in captures]
    total_bytes = None if None in sizes else (sum(sizes) or 1)
    show_progress = not quiet and sys.stderr.isatty()
    started = time.monotonic()
    # a database that fails during the run: batches wait in the spool; one that is
    # unreachable at start: an error (nothing has been read yet)
    pipeline = Pipeline(settings, stats, background=not foreground_writer,
                        require_db_at_start=True)
    # A signal only sets a flag, checked between batches: an exception raised at an
    # arbitrary point could land inside the writer's bookkeeping.
    stop: list[str] = []

    def on_signal(signum, _frame):
        if stop:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bar = None
        if show_progress:
            from tqdm import tqdm

            bar = tqdm(total=total_bytes, unit="B", unit_scale=True, file=sys.stderr,
                       desc="replay", leave=False)
        for cap in captures:
            if stop:
                break
            report = _replay_one(cap, pipeline, stats, port_set, hep_set, bar, stop)
            file_reports.append(report)
            if report.get("error"):
                errors.append(InputError(report["error"]))
        if bar is not None:
            bar.close()
    except BaseException:
        try:
            pipeline.close()
        except Exception:
            pass
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    pipeline.close()
    snapped = stats["malformed:snapped"]
    if snapped:
        click.echo(f"sipcaptool: warning: {snapped} frames were cut short by the capture's "
                   "snap length (tcpdump -s); the messages in them are not stored "
                   "(malformed: snapped); capture with -s 0 to keep whole frames", err=True)
    refused = stats["dropped:db-error"]
    if refused:
        errors.append(StoreError(f"the database refused {refused} rows (dropped:db-error; "
                                 "the log says why); every other message was stored"))
    spool = pipeline.spool_report()
    if spool["batches"]:
        errors.append(StoreError(
            f"{spool['rows']} rows ({spool['batches']} batches) wait in the spool "
            f"{spool['dir']} for the database; 'sipcaptool spool drain --db URL' "
            "writes them"))
    elapsed = time.monotonic() - started
    if not quiet or as_json:
        summary = summary_dict(stats, {"files": file_reports, "seconds": round(elapsed, 3),
                                       "interrupted_by": stop[0] if stop else None,
                                       "spool": spool, "errors": [str(e) for e in errors]})
        print_summary(summary, as_json)
    if errors:
        for e in errors:
            click.echo(f"sipcaptool: error: {e}", err=True)
        return errors[0].exit_code
    if stop:
        click.echo(f"sipcaptool: interrupted ({stop[0]}); everything read before it is stored",
                   err=True)
        return 130
    return 0


def _replay_one(cap, pipeline, stats: Stats, ports, hep_ports, bar, stop=()) -> dict:
    from ..decode.packet import PacketDecoder

    report: dict = {"file": cap.path}
    try:
        cap.open()
    except InputError as e:
        report["error"] = str(e)
        return report
    report["linktype"] = cap.linktype
    try:
        decoder = PacketDecoder(cap.linktype, stats, ports=ports, hep_ports=hep_ports,
                                hep_max_inflated=pipeline.settings.hep_max_inflated)
    except DecodeError as e:
        cap.close()
        report["error"] = f"{cap.path}: unknown or unsupported link type {cap.linktype} ({e.detail or e.reason}); nothing read"
        return report
    submit = pipeline.submit
    decode = decoder.decode
    before = stats["packets"]
    for data, meta in cap.batches():
        n = len(meta)
        # frames may be cut by the capture's snap length (known after the first one for a
        # stream): the decoder counts such a frame (malformed:snapped) instead of storing
        # part of a message
        decoder.snaplen = cap.snaplen or 0
        for i in range(0, n, 4):
            off = meta[i + 2]
            for m in decode(meta[i] * 1000000 + meta[i + 1], data[off:off + meta[i + 3]]):
                submit(m)
        stats["packets"] += n // 4
        if bar is not None:
            # on-disk size of the batch: frames plus 16-byte record headers (pcap)
            bar.update(len(data) + 4 * n)
        if stop:
            report["interrupted"] = True
            break
    for m in decoder.flush():
        submit(m)
    report["packets"] = stats["packets"] - before
    if cap.truncated:
        report["truncated"] = True
        report["error"] = (f"{cap.path}: file is cut off after packet {cap.packets} "
                           f"({cap.truncated}); the {cap.packets} packets before it were stored")
    return report
