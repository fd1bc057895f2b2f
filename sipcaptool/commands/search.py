"""``sipcaptool search``: find calls in what was stored, one line per call.

Parses the filters (:func:`sipcaptool.query.filters.build_query`), runs
:func:`sipcaptool.query.calls.find_calls` and prints a table, JSON or CSV.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from typing import Any

import click

from ..config import Settings
from ..query.calls import find_calls, load_calls
from ..query.filters import build_query, parse_tz
from ..query.model import Call
from .common import filter_options, storage_options

DEFAULT_LIMIT = 100
COLUMNS = ("time", "duration", "from", "to", "method", "status", "outcome", "msgs",
           "nodes", "legs", "call_id")


def format_time(us: int, tz: _dt.tzinfo) -> str:
    t = _dt.datetime.fromtimestamp(us // 1_000_000, tz).replace(microsecond=us % 1_000_000)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def format_duration(us: int) -> str:
    s = us / 1_000_000
    if s < 60:
        return f"{s:.3f}s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def call_record(call: Call, tz: _dt.tzinfo, leg_of: str | None = None) -> dict[str, Any]:
    """One call as the JSON object ``search --json`` prints."""
    s = call.summary
    assert s is not None
    t = _dt.datetime.fromtimestamp(s.first_us // 1_000_000, tz).replace(
        microsecond=s.first_us % 1_000_000)
    rec: dict[str, Any] = {
        "call_id": call.callid, "first_time": t.isoformat(), "first_us": s.first_us,
        "last_us": s.last_us, "duration_us": s.duration_us, "from_user": s.from_user,
        "to_user": s.to_user, "first_method": s.first_method,
        "final_status": s.final_status, "outcome": s.outcome,
        "setup_ringing_us": s.setup_ringing_us, "setup_answer_us": s.setup_answer_us,
        "messages": s.messages, "nodes": list(s.nodes), "legs": list(call.legs),
        "tables": sorted({m.table for m in call.messages}),
    }
    if leg_of is not None:
        rec["leg_of"] = leg_of
    return rec


def table_row(rec: dict[str, Any], tz: _dt.tzinfo) -> list[str]:
    status = "" if rec["final_status"] is None else str(rec["final_status"])
    cid = rec["call_id"] if "leg_of" not in rec else "  leg: " + rec["call_id"]
    return [format_time(rec["first_us"], tz), format_duration(rec["duration_us"]),
            rec["from_user"], rec["to_user"], rec["first_method"], status, rec["outcome"],
            str(rec["messages"]), ",".join(rec["nodes"]), str(len(rec["legs"])), cid]


def render_table(records: list[dict[str, Any]], tz: _dt.tzinfo) -> str:
    head = ["TIME", "DURATION", "FROM", "TO", "METHOD", "STATUS", "OUTCOME", "MSGS",
            "NODES", "LEGS", "CALL-ID"]
    rows = [table_row(r, tz) for r in records]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    right = {1, 5, 7, 9}

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()
    return "\n".join([line(head), *(line(r) for r in rows)])


def render_csv(records: list[dict[str, Any]], tz: _dt.tzinfo) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["first_time", "duration_s", "from_user", "to_user", "first_method",
                "final_status", "outcome", "setup_ringing_ms", "setup_answer_ms",
                "messages", "nodes", "legs", "call_id", "leg_of"])
    for r in records:
        def ms(v: int | None) -> str:
            return "" if v is None else f"{v / 1000:.3f}"
        w.writerow([r["first_time"], f"{r['duration_us'] / 1e6:.6f}", r["from_user"],
                    r["to_user"], r["first_method"],
                    "" if r["final_status"] is None else r["final_status"], r["outcome"],
                    ms(r["setup_ringing_us"]), ms(r["setup_answer_us"]), r["messages"],
                    " ".join(r["nodes"]), " ".join(r["legs"]), r["call_id"],
                    r.get("leg_of", "")])
    return buf.getvalue().rstrip("\n")


@click.command("search")
@filter_options
@click.option("--limit", type=click.IntRange(0), default=DEFAULT_LIMIT, show_default=True,
              help="At most N calls (the most recent); 0: no limit.")
@click.option("--legs-depth", type=click.IntRange(0, 10), default=1, show_default=True,
              help="Follow correlated legs (callid_aleg / X-CID both ways, RFC 7989 "
                   "Session-ID) this many steps; 0: do not look for legs.")
@click.option("--legs", "show_legs", is_flag=True,
              help="Also list the legs themselves, each under its call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@storage_options
def command(call_id: str | None, user: str | None, from_user: str | None,
            to_user: str | None, method: str | None, status: str | None, src: str | None,
            dst: str | None, node: str | None, ua: str | None, since: str | None,
            until: str | None, limit: int, legs_depth: int,
            show_legs: bool, as_json: bool, as_csv: bool, settings: Settings) -> int:
    """Find calls in the stored messages: one line per call (not per message).

    Reads every table these settings store into: the --table-name list (a|b), the
    strftime-named tables of the dates inside --since/--until only (a missing day is
    not an error), and the databases of every --capture-mode given. Filters take
    several values separated by commas (any of them); different filters must all
    hold. A call is shown with its first time, duration, from and to user, first
    method, final status and outcome, message count, capture nodes and legs.

    Exit status: 0 (also when no call is found: "no call found"); 2 a malformed
    filter or time (the message names the option and what is allowed); 4 the
    database cannot be read.

    \b
    Example:
      sipcaptool search --user 1001 --since 2h
      sipcaptool search --status 4xx,5xx --method INVITE \\
          --since "2026-12-01 08:00" --until "2026-12-01 09:00"
      sipcaptool search --call-id 'a84b4c76e66710@pc33' --json
      sipcaptool search --user '1001%' --tz Europe/Paris --csv > calls.csv
      sipcaptool search --db mysql://root@127.0.0.1/homer \\
          --table-name 'sip_capture_%Y%m%d' --since 1d --src 10.0.0.1:5060
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    tz = settings.tz
    zone = parse_tz(tz)
    query = build_query(call_id=call_id, user=user, from_user=from_user, to_user=to_user,
                        method=method, status=status, src=src, dst=dst, node=node, ua=ua,
                        since=since, until=until, tz=tz)
    roots = find_calls(settings, query, legs=legs_depth,
                       limit=(limit + 1) if limit else None)
    more = bool(limit) and len(roots) > limit
    if more:
        roots = roots[1:]   # the oldest one was only there to tell whether there are more
    by_id: dict[str, Call] = {}
    if show_legs:
        wanted = [leg for c in roots for leg in c.legs]
        by_id = {c.callid: c for c in load_calls(settings, wanted)} if wanted else {}
    records: list[dict[str, Any]] = []
    for c in roots:
        records.append(call_record(c, zone))
        for leg in c.legs if show_legs else ():
            if leg in by_id:
                records.append(call_record(by_id[leg], zone, leg_of=c.callid))
    if as_json:
        click.echo(json.dumps({"calls": records, "count": len(roots), "more": more},
                              indent=2))
    elif as_csv:
        click.echo(render_csv(records, zone))
    elif not records:
        click.echo("no call found")
    else:
        click.echo(render_table(records, zone))
        if more:
            click.echo(f"(the {limit} most recent calls; more match: --limit N or a "
                       "narrower filter)", err=True)
    return 0
