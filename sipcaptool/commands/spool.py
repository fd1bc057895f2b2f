"""``sipcaptool spool``: what waits on disk for the database, and writing it explicitly."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import click

from ..config import Settings
from ..errors import ConfigError, StoreError
from ..stats import Stats
from .common import config_option, setting_option

log = logging.getLogger("sipcaptool.spool")

_DIR_HELP = ("The spool directory (the spool_dir setting). [default: "
             "$XDG_STATE_HOME/sipcaptool/spool, /var/spool/sipcaptool for root]")


def _spool_dir(value: str) -> str:
    from ..store.spool import resolve_spool_dir
    d = resolve_spool_dir(value)
    if d is None:
        raise click.UsageError("the spool is off (spool_dir = none); give --spool-dir DIR")
    return d


@click.group("spool")
def command() -> None:
    """Batches that could not be written (database down, retries exhausted) wait in the
    spool; a running collector writes them when the database is back, and the next run
    writes what an earlier one left. These commands show and drain the spool.

    \b
    Example:
      sipcaptool spool status
      sipcaptool spool drain --db postgresql://postgres@127.0.0.1/homer
    """


def _age(ts: float | None) -> str:
    if ts is None:
        return "-"
    s = max(0, int(time.time() - ts))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


@command.command("status")
@setting_option("--spool-dir", metavar="DIR", help=_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@config_option
def status(as_json: bool, settings: Settings) -> None:
    """Show what waits in the spool, per database: batches, rows, bytes, the oldest
    batch, and how many segments a running process holds. An agent's HEP packets
    waiting for a collector (live or replay with --hep-to, in SPOOL_DIR-hep; the next
    run sends them) are shown too, per collector, as messages.

    \b
    Example:
      sipcaptool spool status --json
    """
    from ..senders.backlog import hep_spool_dir
    from ..store.spool import status as spool_status

    root = _spool_dir(settings.spool_dir)
    targets = spool_status(root)
    hep_root = hep_spool_dir(root) or ""
    hep = spool_status(hep_root)
    if as_json:
        click.echo(json.dumps({"spool_dir": root, "targets": targets,
                               "batches": sum(t["batches"] for t in targets),
                               "rows": sum(t["rows"] for t in targets),
                               "bytes": sum(t["bytes"] for t in targets),
                               "hep": {"spool_dir": hep_root, "collectors": hep,
                                       "messages": sum(t["rows"] for t in hep),
                                       "bytes": sum(t["bytes"] for t in hep)}}, indent=2))
        return
    for where, what, unit in ((root, targets, "rows"), (hep_root, hep, "messages")):
        if not any(t["batches"] for t in what):
            if what is targets or what:   # (no HEP spool at all: nothing to say)
                click.echo(f"spool {where}: empty")
            continue
        click.echo(f"spool {where}:")
        for t in what:
            if not t["batches"]:
                continue
            name = t["db_url"] or t["target"]
            if what is hep:
                name = "HEP to " + name.removeprefix("hep:")
            click.echo(f"  {name}: {t['batches']} batches, {t['rows']} {unit}, "
                       f"{t['bytes']} bytes, oldest {_age(t['oldest'])} ago"
                       + (f", {t['held']} segments held by a running process"
                          if t["held"] else ""))


@command.command("drain")
@setting_option("--db-url", metavar="URL",
                help="The database whose spooled batches to write (as given to the "
                     "collector; the db_url setting, which must be given here or in "
                     "--config). [default: none, required]")
@setting_option("--db", setting="db_url", metavar="URL", help="Same as --db-url.")
@setting_option("--db-password-file", metavar="FILE",
                help="Read the database password from FILE (as the collectors do).")
@setting_option("--spool-dir", metavar="DIR", help=_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def drain(as_json: bool, settings: Settings) -> int:
    """Write the spooled batches of one database now, oldest first. Batches that a
    running collector holds are left to it. A batch that an earlier attempt had
    committed is recognised by its id and not written again.

    Exit status: 0 the spool of that database is empty; 4 the database could not be
    reached (what is left stays in the spool).

    \b
    Example:
      sipcaptool spool drain --db mysql://root@127.0.0.1/homer
    """
    from ..store import open_adapter
    from ..store.outcomes import Counts, Drained, DroppedDbError, Outcome, Split, Warnings
    from ..store.spool import Spool
    from ..store.url import parse_db_url
    from ..store.writer_process import WriterCore

    if settings.origin["db_url"] == "default":
        raise ConfigError("spool drain: which database? give --db URL (or db_url in "
                          "--config or SIPCAPTOOL_DB_URL)")
    root = _spool_dir(settings.spool_dir)
    url = parse_db_url(settings.db_url)
    stats = Stats()
    sp = Spool(root, url)
    before = (sp.pending_batches, sp.pending_rows)
    adapter = open_adapter(url)
    events: list[Outcome] = []
    core = WriterCore(adapter, 0, 0, sp, events.append)
    error = None
    try:
        adapter.connect()
        while sp.pending_batches:
            if not core.pump():
                break
    except StoreError as e:
        error = e
    finally:
        adapter.close()
    for ev in events:
        match ev:
            case Drained():
                stats["db:batches"] += ev.parts
                stats["stored:" + ev.table] += ev.rows
                if not ev.written_now:
                    stats["db:already-written"] += 1
            case DroppedDbError():
                stats["dropped:db-error"] += ev.rows
            case Split():
                stats["stored:" + ev.table] += ev.stored
                stats["dropped:db-error"] += ev.dropped
                if ev.finished:
                    stats["db:batches"] += 1
            case Warnings():
                stats["db:warnings"] += ev.count
            case Counts():  # what the adapter changed so that the database took the rows
                for k, v in ev.counts.items():
                    stats[k] += v
    left = (sp.pending_batches, sp.pending_rows)
    sp.close()
    if core.down and error is None:
        error = StoreError(f"{url.redacted()}: the database could not be reached")
    stored, dropped = stats.group("stored"), stats.group("dropped")
    truncated, already = stats.group("truncated"), stats["db:already-written"]
    result: dict[str, Any] = {
        "db_url": url.redacted(), "before": {"batches": before[0], "rows": before[1]},
        "stored": stored, "already_written": already,
        "dropped": dropped, "db_warnings": stats["db:warnings"],
        # the adapter's counters, under the names of the other commands' summaries
        "truncated": truncated, "truncated_values": truncated, "db": stats.group("db"),
        "left": {"batches": left[0], "rows": left[1]},
        "error": str(error) if error else None}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"spooled batches for {url.redacted()}: {before[0]} ({before[1]} rows)")
        click.echo(f"written: {sum(stored.values())} rows"
                   + (f" ({already} batches were already in the database)" if already else ""))
        if dropped:
            click.echo(f"refused by the database and dropped: {sum(dropped.values())} rows")
        if truncated:
            click.echo(f"{'values cut to column width:':<18} {sum(truncated.values())}")
            for column, n in truncated.items():
                click.echo(f"  {column}: {n}")
        if stats["db:unrepresentable"]:
            click.echo(f"values with characters the database's encoding cannot hold (stored "
                       f"as ?): {stats['db:unrepresentable']}")
        if result["db_warnings"]:
            click.echo(f"database warnings: {result['db_warnings']} (the server changed or "
                       "left out values; the log names them)")
        click.echo(f"left: {left[0]} batches ({left[1]} rows)")
    if error is not None:
        raise error
    return 0
