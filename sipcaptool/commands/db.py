"""``sipcaptool db``: create the capture tables."""

from __future__ import annotations

import time

import click

from ..config import Settings
from .common import storage_options


@click.group("db")
def command() -> None:
    """Database administration: create the capture tables.

    \b
    Example:
      sipcaptool db init --db mysql://root@127.0.0.1/homer
    """


def tables_for_init(settings: Settings, days: int) -> dict[str, list[str]]:
    """db_url -> table names: every table of the default mode and of every capture mode,
    strftime names expanded once (UTC) for today and the next ``days - 1`` days.

    Each name is checked first by the rule the collectors apply (the router's
    ``validate_table_name``, with the database's identifier limit), so ``db init``
    creates exactly the tables they would write to, and refuses what they refuse."""
    from ..store.router import expand_table_name, validate_table_name
    from ..store.url import parse_db_url

    modes = [settings.default_mode(), *settings.modes.values()]
    out: dict[str, list[str]] = {}
    now_us = int(time.time() * 1_000_000)
    for mode in modes:
        if mode.db_url.strip().lower() == "none":
            continue
        dialect = parse_db_url(mode.db_url).dialect
        names = out.setdefault(mode.db_url, [])
        for t in mode.tables:
            validate_table_name(t, dialect)
            for d in range(days if "%" in t else 1):
                name = expand_table_name(t, now_us + 86_400_000_000 * d)
                if name not in names:
                    names.append(name)
    return out


@command.command("init")
@click.option("--print", "print_only", is_flag=True,
              help="Print the SQL instead of running it.")
@click.option("--days", type=click.IntRange(1, 3660), default=1, show_default=True,
              help="For strftime table names: create the tables of this many days from today (UTC).")
@click.option("--partition-days", type=click.IntRange(1, 3660), default=None,
              help="MySQL/MariaDB: partition sip tables by day (RANGE on date) for this many "
                   "days ahead plus a catch-all partition, so old days can be dropped with "
                   "ALTER TABLE ... DROP PARTITION instead of DELETE.")
@click.option("--no-aux", is_flag=True, help="Do not create logs_capture, report_capture, rtcp_capture.")
@storage_options
def init(print_only: bool, days: int, partition_days: int | None, no_aux: bool,
         settings: Settings) -> None:
    """Create every table the settings name; safe to run again (idempotent).

    Creates the database itself when missing (MySQL/PostgreSQL), every table of
    --table-name and of every capture mode (strftime names for today, or --days
    days), and logs_capture, report_capture and rtcp_capture.

    \b
    Example:
      sipcaptool db init --db postgresql://postgres@127.0.0.1/homer
      sipcaptool db init --db mysql://root@127.0.0.1/homer --table-name 'sip_%Y%m%d' --days 7
      sipcaptool db init --print --db sqlite:///x.db
    """
    from ..store.schema import init_db

    for db_url, tables in tables_for_init(settings, days).items():
        if db_url.strip().lower() == "none":
            continue
        statements = init_db(db_url, tables, aux=not no_aux, partition_days=partition_days,
                             print_only=print_only)
        if print_only:
            for st in statements:
                click.echo(st.rstrip().rstrip(";") + ";")
        else:
            from ..store.url import parse_db_url

            click.echo(f"{parse_db_url(db_url).redacted()}: ready ({', '.join(tables)}"
                       + ("" if no_aux else ", logs_capture, report_capture, rtcp_capture") + ")")
