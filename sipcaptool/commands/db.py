"""``sipcaptool db``: create the capture tables, keep the days ahead, drop the old days."""

from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING

import click

from ..config import Settings
from ..errors import ConfigError
from .common import setting_option, storage_options

if TYPE_CHECKING:
    from ..store.retention import Removal

_FIXED_AUX = ("logs_capture", "report_capture", "rtcp_capture")


@click.group("db")
def command() -> None:
    """Database administration: create the capture tables, add the days ahead, drop the
    old days.

    \b
    Example:
      sipcaptool db init --db mysql://root@127.0.0.1/homer
      sipcaptool db prune --older-than 14d --db mysql://root@127.0.0.1/homer
    """


def table_patterns(settings: Settings) -> dict[str, list[str]]:
    """db_url -> every table name (strftime codes kept) the settings can store SIP
    messages into: each capture mode's ``table_name`` list and the ``route`` rules'
    tables. Each name is checked by the rule the collectors apply (the router's
    ``validate_table_name``, with the database's identifier limit)."""
    from ..store.router import parse_routes, route_table_names, validate_table_name
    from ..store.url import parse_db_url

    modes = [settings.default_mode(), *settings.modes.values()]
    out: dict[str, list[str]] = {}
    for mode in modes:
        if mode.db_url.strip().lower() == "none":
            continue
        dialect = parse_db_url(mode.db_url).dialect
        parse_routes(settings.route, dialect)  # the length limit of this database
        names = out.setdefault(mode.db_url, [])
        for t in route_table_names(mode.tables, settings.route):
            validate_table_name(t, dialect)
            if t not in names:
                names.append(t)
    return out


def tables_for_init(settings: Settings, days: int,
                    today: _dt.date | None = None) -> dict[str, list[str]]:
    """db_url -> table names: every table of the default mode, of every capture mode
    and of the routes, strftime names expanded (UTC) for today and the next
    ``days - 1`` days, so that ``db init`` creates exactly the tables the collectors
    would write to, and refuses what they refuse."""
    import time

    from ..store.retention import names_for_days, today_utc

    first = today or today_utc()
    now_us = None if today is not None else time.time_ns() // 1000
    return {url: names_for_days(patterns, first, days, now_us)
            for url, patterns in table_patterns(settings).items()}


@command.command("init")
@click.option("--print", "print_only", is_flag=True,
              help="Print the SQL instead of running it.")
@setting_option("--days",
              help="For strftime table names (and --route tables): create the tables of "
                   "this many days from today (UTC). Run again (or on a later day) to add "
                   "the days that are missing; existing tables are left as they are.")
@setting_option("--partition-days",
              help="MySQL/MariaDB: partition sip tables by day (RANGE on date) for this many "
                   "days from today plus a catch-all partition, so old days can be dropped "
                   "with ALTER TABLE ... DROP PARTITION (db prune) instead of DELETE. Run "
                   "again to add the days missing up to this many from today (the "
                   "catch-all partition is split; existing days are not touched); "
                   "hep and live add tomorrow's partition themselves. [default: 0, not "
                   "partitioned]")
@setting_option("--no-aux", setting="aux_tables", is_flag=True, convert=lambda _: 0,
                help="Do not create logs_capture, report_capture, rtcp_capture "
                     "(aux_tables = 0).")
@setting_option("--retention", metavar="AGE",
              help="ClickHouse 19.6 and later: the server itself removes rows older than AGE "
                   "(14d, 2w): a TTL on the tables, also those that exist. Other databases "
                   "and older ClickHouse: run db prune (which uses the same retention "
                   "setting) from a timer.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@storage_options
def init(print_only: bool, as_json: bool, settings: Settings) -> None:
    """Create every table the settings name; safe to run again.

    Creates the database itself when missing (MySQL/PostgreSQL), every table of
    --table-name, of the --route rules and of every capture mode (strftime names for
    today, or --days days), and logs_capture, report_capture and rtcp_capture. Run
    again, it adds what is missing (new days, new partitions) and says what it added;
    what exists is never changed.

    \b
    Example:
      sipcaptool db init --db postgresql://postgres@127.0.0.1/homer
      sipcaptool db init --db mysql://root@127.0.0.1/homer --table-name 'sip_%Y%m%d' --days 7
      sipcaptool db init --db mysql://root@127.0.0.1/homer --partition-days 7
      # HOMER 5's three tables a day, today's and tomorrow's (the route rules of
      # docs/operators.md in the file):
      sipcaptool db init --config /etc/sipcaptool.toml --days 2
      sipcaptool db init --print --db sqlite:///x.db
    """
    from ..store import open_adapter
    from ..store.retention import ensure_days
    from ..store.schema import init_db

    days, no_aux = settings.days, not settings.aux_tables
    partition_days = settings.partition_days or None
    retention = settings.retention or None
    reports = []
    for db_url, tables in tables_for_init(settings, days).items():
        if print_only:
            for st in init_db(db_url, tables, aux=not no_aux, partition_days=partition_days,
                              print_only=True):
                click.echo(st.rstrip().rstrip(";") + ";")
            continue
        adapter = open_adapter(db_url, partition_days=partition_days)
        adapter.create_database()
        try:
            adapter.connect()
            kept = None
            if retention is not None:
                from ..store.retention import parse_age
                kept = parse_age(retention)
                set_retention = getattr(adapter, "set_retention", None)
                kept_note = set_retention(kept, tables, aux=not no_aux) if set_retention \
                    else (f"--retention: {adapter.dialect} removes nothing by itself: run "
                          f"sipcaptool db prune --older-than {kept}d from a timer (contrib/)")
            report = ensure_days(adapter, tables, aux=not no_aux,
                                 partition_days=partition_days)
            if kept is not None:
                report.notes.append(kept_note)
        finally:
            adapter.close()
        reports.append(report)
        if not as_json:
            click.echo(report.text())
            for note in report.notes:
                click.echo(f"  note: {note}")
    if as_json and not print_only:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))


@command.command("prune")
@setting_option("--older-than", setting="retention", metavar="AGE",
                help="Remove the days older than this: 14d (or 2w, 14): today and the 14 "
                     "days before it (UTC) are kept, whole days before them go (the "
                     "retention setting: also retention in --config). [default: none, "
                     "required]")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@setting_option("--batch-rows",
              help="Rows per DELETE in tables that are not dropped whole (each DELETE is "
                   "its own short transaction; collectors keep writing meanwhile).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@storage_options
def prune(dry_run: bool, as_json: bool, settings: Settings) -> None:
    """Drop whole days older than --older-than from every table the settings name.

    Day tables (strftime names such as sip_capture_call_%Y%m%d) are dropped whole; the
    day partitions of a MySQL/MariaDB table made with db init --partition-days are
    dropped; in any other table (one sip_capture, logs/report/rtcp_capture) the rows
    of those days are deleted by date in small batches, without a long lock. Run it
    daily (contrib/sipcaptool-prune.timer).

    \b
    Example:
      sipcaptool db prune --older-than 14d --db mysql://root@127.0.0.1/homer
      sipcaptool db prune --older-than 30d --dry-run --config /etc/sipcaptool/hep.toml
    """
    from ..store import open_adapter
    from ..store.retention import cutoff_day, parse_age
    from ..store.retention import prune as prune_db

    if not settings.retention:
        raise ConfigError("db prune: how old? give --older-than AGE (14d, 2w), or retention "
                          "in --config or SIPCAPTOOL_RETENTION")
    before = cutoff_day(parse_age(settings.retention))
    batch_rows = settings.batch_rows
    reports = []
    for db_url, patterns in table_patterns(settings).items():
        adapter = open_adapter(db_url)
        try:
            adapter.connect()
            report = prune_db(adapter, patterns, before, dry_run=dry_run,
                              batch_rows=batch_rows, fixed=_FIXED_AUX)
        finally:
            adapter.close()
        reports.append(report)
        if as_json:
            continue
        what = "would remove" if dry_run else "removed"
        head = f"{report.db}: days before {before.isoformat()}"
        if not report.removed:
            click.echo(f"{head}: nothing to remove")
        else:
            click.echo(f"{head}: {what} {_amounts(report.removed)}")
            for r in report.removed:
                click.echo(f"  {r.text(dry_run)}")
        for note in report.notes:
            click.echo(f"  note: {note}")
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _amounts(removed: list[Removal]) -> str:
    """``2 tables, 1 partition, 1200 rows``: what a prune removed, in a few words."""
    tabs = sum(1 for r in removed if r.what == "table")
    parts = sum(1 for r in removed if r.what == "partition")
    rows = sum(r.rows or 0 for r in removed)
    out = [_plural(n, w) for n, w in ((tabs, "table"), (parts, "partition")) if n]
    if rows or not out:
        out.append(_plural(rows, "row"))
    return ", ".join(out)
