"""``sipcaptool export``: the messages of stored calls as pcap, pcapng or text.

Finds the calls (:func:`sipcaptool.query.calls.load_calls` by Call-ID, or
:func:`~sipcaptool.query.calls.find_calls` with search's filters) and writes their
messages with :func:`sipcaptool.export.export_messages`.
"""

from __future__ import annotations

import json
import os

import click

from ..config import Settings
from ..errors import InputError
from ..export import FORMATS
from .common import filter_options, storage_options


@click.command("export")
@click.argument("callids", nargs=-1, metavar="[CALLID]...")
@filter_options
@click.option("--limit", type=click.IntRange(0), default=0, show_default=True,
              help="With filters: at most N calls (the most recent); 0: every call found.")
@click.option("--legs", is_flag=True,
              help="Also export the correlated legs (callid_aleg / X-CID both ways, RFC 7989 "
              "Session-ID).")
@click.option("--legs-depth", type=click.IntRange(1, 10), default=None, metavar="N",
              help="Follow the correlation N steps (implies --legs). [default: 1]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              metavar="FILE", help="The file to write (.pcap, .pcapng or .txt); - writes "
              "to standard output (pcap unless --format), e.g. for tshark -r - or "
              "wireshark -k -i -.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="pcap, pcapng (each packet's comment names the capture node) or txt "
              "(each message under a header line, like sngrep's text export). "
              "[default: from the -o file name]")
@click.option("--force", is_flag=True, help="Overwrite the -o file when it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@storage_options
def command(callids: tuple[str, ...], limit: int, legs: bool, legs_depth: int | None,
            output: str, fmt: str | None, force: bool, as_json: bool, settings: Settings,
            **filters: str | None) -> int:
    """Write the messages of stored calls to a capture file for Wireshark or sngrep.

    The calls are named by their Call-IDs, or found with the filters of `sipcaptool
    search` (both: the filters narrow the Call-IDs); every message of each call is
    written, in time order, with its original time (to the µs), addresses and ports.
    The calls are read from every table the settings name (as search does).

    UDP messages become UDP datagrams (IPv4 or IPv6); TCP messages become one
    well-formed TCP connection per pair of endpoints (handshake, every message in
    segments of at most 1460 bytes, consistent sequence numbers, closed after its last
    message), so Wireshark reassembles them. Messages stored as TLS, WebSocket (WS,
    WSS) were captured after TLS or WebSocket were taken off: they are written as plain
    SIP over TCP. A TCP message a stream cannot frame (its Content-Length does not
    match its body) is written as UDP, as is any other transport; SCTP messages become
    SCTP DATA chunks. Replaying the file (`sipcaptool replay`) stores the same
    messages again.

    Exit status: 0 written; 2 bad option, or the -o file exists (use --force);
    3 no call found (nothing is written); 4 database error.

    \b
    Example:
      sipcaptool export a84b4c76e66710@pc33 --legs -o call.pcapng
      sipcaptool export --user 1001 --since 1h -o last-hour.pcap
      sipcaptool export --status 5xx --since "2026-12-01 08:00" --until "2026-12-01 09:00" \\
          --db mysql://root@127.0.0.1/homer -o errors.pcapng
      sipcaptool export 1-12284@127.0.0.1 --format txt -o call.txt --force
      sipcaptool export --user 1001 --since 10m -o - | wireshark -k -i -
    """
    from ..export import (
        ExportReport,
        OutputExistsError,
        export_messages,
        format_for,
        write_export,
    )
    from ..query.calls import find_calls, load_calls
    from ..query.filters import build_query

    to_stdout = output == "-"
    # a bad name fails before the database is read
    out_fmt = (fmt or "pcap") if to_stdout else format_for(output, fmt)
    if not to_stdout and os.path.lexists(output) and not force:
        raise OutputExistsError(f"-o {output}: the file exists; --force overwrites it")
    depth = legs_depth if legs_depth is not None else (1 if legs else 0)
    if any(v is not None for v in filters.values()):
        f = filters
        ids = [*callids, *([f["call_id"]] if f["call_id"] else [])]
        query = build_query(call_id=ids or None, user=f["user"], from_user=f["from_user"],
                            to_user=f["to_user"], method=f["method"], status=f["status"],
                            src=f["src"], dst=f["dst"], node=f["node"], ua=f["ua"],
                            since=f["since"], until=f["until"], tz=settings.tz)
        calls = find_calls(settings, query, legs=depth, limit=limit or None,
                           include_legs=depth > 0)
        what = "no call found for these filters"
    elif callids:
        calls = load_calls(settings, list(callids), legs=depth)
        what = "no call found: " + ", ".join(callids)
        found = {c.callid for c in calls}
        missing = [c for c in callids if c not in found]
        if calls and missing:
            click.echo("sipcaptool: warning: no call found: " + ", ".join(missing), err=True)
    else:
        raise click.UsageError("name the calls: Call-IDs, or filters such as --user 1001 "
                               "--since 1h (see sipcaptool export --help)")
    if not calls:
        raise InputError(what)
    messages = [m for c in calls for m in c.messages]
    if to_stdout:
        stdout = click.get_binary_stream("stdout")
        n_msgs, n_packets = write_export(stdout, messages, out_fmt)
        stdout.flush()
        report = ExportReport("-", out_fmt, n_msgs, n_packets)
    else:
        report = export_messages(messages, output, out_fmt, force=force)
    if as_json:
        click.echo(json.dumps({"file": report.path, "format": report.format,
                               "calls": len(calls), "messages": report.messages,
                               "packets": report.packets,
                               "call_ids": [c.callid for c in calls]}, indent=2),
                   err=to_stdout)
    else:
        where = "standard output" if to_stdout else report.path
        click.echo(f"{where}: {report.messages} messages of {len(calls)} "
                   f"call{'s' if len(calls) != 1 else ''} ({report.format}"
                   + (f", {report.packets} packets)" if report.format != "txt" else ")"),
                   err=to_stdout)
    return 0
