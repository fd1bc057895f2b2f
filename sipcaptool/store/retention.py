"""Retention: remove whole days older than a limit from every store (``db prune``), and
keep the days ahead ready (``db init --days``/``--partition-days`` run again, and the
collectors' own maintenance ahead of midnight).

What a day is made of decides how it goes, cheapest first:

* a table named by day (``sip_capture_call_%Y%m%d``; any strftime name with a year and a
  day, month or hour): the whole table is dropped once the last moment it can hold is
  older than the limit (``DROP TABLE``: instant, nothing to lock but that old table);
* a MySQL/MariaDB table partitioned by day (``db init --partition-days``): the day
  partitions ``pYYYYMMDD`` before the limit are dropped (``ALTER TABLE ... DROP
  PARTITION``), and ``p_old`` is emptied (``TRUNCATE PARTITION``) once everything it can
  hold is older;
* anything else (one table such as ``sip_capture``, names without a date such as
  ``sip_%a``, the logs/report/rtcp tables, and what is left before the limit in a
  partition holding newer rows too): ``DELETE`` by the ``date`` column in small batches
  of ``batch_rows`` rows found through the date index, each its own transaction, so the
  collector writing today's rows is never held up by a long lock (MySQL/MariaDB run them
  at READ COMMITTED, which takes no gap locks).

The limit is a day boundary (UTC): ``--older-than 14d`` keeps today and the 14 days
before it and removes the days before those; a day is removed only when all of it is
older than 14 days. A table or partition that holds something newer is never dropped.

The database-specific steps are :class:`~sipcaptool.store.Adapter` methods
(:meth:`~sipcaptool.store.Adapter.drop_days_before`,
:meth:`~sipcaptool.store.Adapter.drop_table`,
:meth:`~sipcaptool.store.Adapter.execute`), so that a store with its own
partitions (ClickHouse: ``ALTER TABLE ... DROP PARTITION``) overrides one method; this
module decides which days and tables, and reports what it removed (:class:`Removal`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, StoreError
from .router import expand_table_name

if TYPE_CHECKING:
    from . import Adapter

__all__ = ["DEFAULT_BATCH_ROWS", "InitReport", "Maintenance", "PruneReport", "Removal",
           "cutoff_day", "dated_period", "delete_rows_before", "ensure_days",
           "extend_partitions", "names_for_days", "parse_age", "prune", "table_day"]

log = logging.getLogger("sipcaptool.store")

#: rows removed per DELETE in a table that is not dropped whole
DEFAULT_BATCH_ROWS = 5000

_DAY = _dt.timedelta(days=1)
_PART_RE = re.compile(r"p(\d{8})\Z")
_YEAR_CODES = set("YyG")
_DAYLIKE = set("djHIMSp")       # a name per day or finer
_MONTH_CODES = set("mbB")
_WEEK_CODES = set("UWV")


@dataclass(frozen=True)
class Removal:
    """One thing removed (or, in a dry run, that would be).

    Attributes:
        table: the table.
        what: ``table`` (dropped whole), ``partition`` (dropped or emptied) or ``rows``
            (deleted by date).
        name: the table or partition name.
        day: the first day (ISO) the removed table or partition held (``''`` for rows).
        rows: rows removed (partitions and rows; None when not counted: whole tables).
    """

    table: str
    what: str
    name: str
    day: str = ""
    rows: int | None = None

    def text(self, dry_run: bool = False) -> str:
        verb = {"table": "drop table", "partition": "drop partition",
                "rows": "delete"}[self.what]
        if not dry_run:
            verb = {"table": "dropped table", "partition": "dropped partition",
                    "rows": "deleted"}[self.what]
        if self.what == "table":
            return f"{verb} {self.name}"
        if self.what == "partition":
            n = "" if self.rows is None else f" ({self.rows} rows)"
            return f"{self.table}: {verb} {self.name}{n}"
        return f"{self.table}: {verb} {self.rows} rows"


@dataclass
class PruneReport:
    """What ``db prune`` did (or would do) in one database."""

    db: str
    before: _dt.date
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(r.rows or 0 for r in self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {"db": self.db, "before": self.before.isoformat(), "dry_run": self.dry_run,
                "removed": [asdict(r) for r in self.removed], "rows": self.rows,
                "notes": list(self.notes)}


def parse_age(text: str) -> int:
    """``14d``, ``2w`` or ``14`` (days) -> days (at least 1); ConfigError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", str(text).lower())
    if not m:
        raise ConfigError(f"--older-than {text!r}: expected days such as 14d (or 2w)")
    days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if not 1 <= days <= 100_000:
        raise ConfigError(f"--older-than {text!r}: at least 1 day")
    return days


def today_utc(clock: Callable[[], float] = time.time) -> _dt.date:
    return _dt.datetime.fromtimestamp(clock(), _dt.UTC).date()


def cutoff_day(days: int, today: _dt.date | None = None) -> _dt.date:
    """The first day kept when days older than ``days`` go: today - days (UTC)."""
    return (today or today_utc()) - _dt.timedelta(days=days)


def dated_period(pattern: str) -> str | None:
    """How long one table of a strftime name lasts when its date can be read back from
    its name: ``day`` (a year and a day, or an hour), ``month``, ``year``; None when
    the name does not say which date it is (``sip_%a``: reused every week; weeks)."""
    codes = set(re.findall(r"%(.)", pattern))
    if not codes & _YEAR_CODES:
        return None
    if codes & _WEEK_CODES:
        return None
    if codes & _DAYLIKE:
        return "day" if ("d" in codes and codes & _MONTH_CODES) or "j" in codes else None
    if codes & _MONTH_CODES:
        return "month"
    return "year"


def table_day(pattern: str, name: str) -> tuple[_dt.date, _dt.date] | None:
    """``(first day, day after the last)`` a table of ``pattern`` named ``name`` holds,
    or None when ``name`` is not one of the pattern's tables (or its date cannot be
    read back)."""
    period = dated_period(pattern)
    if period is None:
        return None
    try:
        st = time.strptime(name, pattern)
    except ValueError:
        return None
    start = _dt.date(st.tm_year, st.tm_mon, st.tm_mday)
    # the name must be exactly what the router would have made for that time
    ts_us = int(_dt.datetime(st.tm_year, st.tm_mon, st.tm_mday, st.tm_hour, st.tm_min,
                             st.tm_sec, tzinfo=_dt.UTC).timestamp()) * 1_000_000
    if expand_table_name(pattern, ts_us) != name:
        return None
    if period == "day":
        return start, start + _DAY
    if period == "month":
        nxt = (_dt.date(start.year + 1, 1, 1) if start.month == 12
               else _dt.date(start.year, start.month + 1, 1))
        return _dt.date(start.year, start.month, 1), nxt
    return _dt.date(start.year, 1, 1), _dt.date(start.year + 1, 1, 1)


def _day_text(day: _dt.date) -> str:
    return f"{day.isoformat()} 00:00:00"


#: called after each committed DELETE batch with (table, rows deleted so far)
Progress = Callable[[str, int], object]


def delete_rows_before(adapter: Adapter, table: str, day: _dt.date, *,
                       dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                       progress: Progress | None = None) -> list[Removal]:
    """DELETE the rows of ``table`` dated before ``day`` in batches of ``batch_rows``
    (each its own transaction, found through the date index); in a dry run, count them.
    Returns one ``rows`` removal, or nothing when there were none. ``progress`` is
    called after each batch."""
    from .schema import quote_ident

    d = adapter.dialect
    q = quote_ident(d, table)
    col = quote_ident(d, "date")
    ph = adapter.placeholder
    bound = _day_text(day)
    if dry_run:
        rows = adapter.select(f"SELECT COUNT(*) FROM {q} WHERE {col} < {ph}", (bound,))
        n = int(rows[0][0]) if rows else 0
        return [Removal(table, "rows", table, "", n)] if n else []
    n = max(1, int(batch_rows))
    if d == "mysql":
        sql = f"DELETE FROM {q} WHERE {col} < {ph} LIMIT {n}"
    elif d == "postgresql":
        sql = (f"DELETE FROM {q} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {q} "
               f"WHERE {col} < {ph} LIMIT {n}))")
    else:
        sql = (f"DELETE FROM {q} WHERE rowid IN (SELECT rowid FROM {q} "
               f"WHERE {col} < {ph} LIMIT {n})")
    total = 0
    while True:
        got = adapter.execute(sql, (bound,))
        total += got
        if progress is not None:
            progress(table, total)
        if got < n:
            break
    if total:
        log.info("%s: deleted %d rows dated before %s", table, total, day)
    return [Removal(table, "rows", table, "", total)] if total else []


def mysql_partitions(adapter: Adapter, table: str) -> list[tuple[str, str]]:
    """``(name, upper bound text)`` of each partition of a MySQL table, in order; empty
    when it is not partitioned."""
    rows = adapter.select(
        "SELECT partition_name, partition_description FROM information_schema.partitions "
        f"WHERE table_schema = DATABASE() AND table_name = {adapter.placeholder} "
        "AND partition_name IS NOT NULL ORDER BY partition_ordinal_position", (table,))
    return [(str(r[0]), str(r[1] or "")) for r in rows]


def mysql_drop_partitions_before(adapter: Adapter, table: str, day: _dt.date, *,
                                 dry_run: bool = False) -> list[Removal]:
    """The partition steps of :meth:`Adapter.drop_days_before` for MySQL: drop the day
    partitions before ``day``; empty ``p_old`` when everything it holds is older."""
    from .schema import quote_ident

    parts = mysql_partitions(adapter, table)
    if not parts:
        return []
    q = quote_ident("mysql", table)
    out: list[Removal] = []
    old_days = []
    for name, _bound in parts:
        m = _PART_RE.match(name)
        if m:
            d = _dt.datetime.strptime(m.group(1), "%Y%m%d").date()
            if d < day:
                old_days.append((name, d))
    names = [n for n, _d in parts]
    bounds = dict(parts)
    if "p_old" in names and bounds["p_old"].strip().isdigit():
        # p_old: everything before the day db init made the table (VALUES LESS THAN
        # TO_DAYS(that day); MySQL's TO_DAYS counts from year 0, Python's ordinal from 1)
        old_end = _dt.date.fromordinal(int(bounds["p_old"]) - 365)
        if old_end <= day:
            rows = _count_partition(adapter, q, "p_old")
            if rows:
                if not dry_run:
                    adapter.execute_ddl([f"ALTER TABLE {q} TRUNCATE PARTITION p_old"])
                out.append(Removal(table, "partition", "p_old", "", rows))
    if old_days and len(old_days) == len(names):
        old_days = old_days[:-1]  # a partitioned table keeps at least one partition
    for name, d in old_days:
        rows = _count_partition(adapter, q, name)
        out.append(Removal(table, "partition", name, d.isoformat(), rows))
    if old_days and not dry_run:
        adapter.execute_ddl([f"ALTER TABLE {q} DROP PARTITION "
                             + ", ".join(n for n, _d in old_days)])
    if not dry_run:
        for r in out:
            log.info("%s: removed partition %s (%s rows)", table, r.name, r.rows)
    return out


def _count_partition(adapter: Adapter, q: str, name: str) -> int:
    rows = adapter.select(f"SELECT COUNT(*) FROM {q} PARTITION ({name})")
    return int(rows[0][0]) if rows else 0


def prune(adapter: Adapter, patterns: Sequence[str], before: _dt.date, *,
          dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
          fixed: Iterable[str] = ()) -> PruneReport:
    """Remove from the connected ``adapter``'s database every day before ``before``.

    ``patterns``: the capture tables' names (strftime codes allowed: each existing
    table of a dated pattern is dropped whole when all it can hold is older); ``fixed``:
    tables without a date in their name besides those (the logs/report/rtcp tables).
    Tables that do not exist are left out."""
    report = PruneReport(adapter.url.redacted(), before, dry_run)
    existing = adapter.existing_tables()
    done: set[str] = set()
    for pattern in [*patterns, *fixed]:
        if "%" not in pattern:
            if pattern in existing and pattern not in done:
                done.add(pattern)
                report.removed.extend(adapter.drop_days_before(
                    pattern, before, dry_run=dry_run, batch_rows=batch_rows))
            continue
        period = dated_period(pattern)
        for name in sorted(existing):
            if name in done:
                continue
            if period is None:
                # a name without its date (sip_%a): a table reused, rows go by date
                if _matches(pattern, name):
                    done.add(name)
                    report.removed.extend(adapter.drop_days_before(
                        name, before, dry_run=dry_run, batch_rows=batch_rows))
                continue
            span = table_day(pattern, name)
            if span is None:
                continue
            done.add(name)
            first, end = span
            if end <= before:
                if not dry_run:
                    adapter.drop_table(name)
                    log.info("dropped table %s (its days are before %s)", name, before)
                report.removed.append(Removal(name, "table", name, first.isoformat()))
            elif first < before:
                # a month or year table that also holds kept days
                report.removed.extend(adapter.drop_days_before(
                    name, before, dry_run=dry_run, batch_rows=batch_rows))
    return report


def _matches(pattern: str, name: str) -> bool:
    """Whether ``name`` is one of the tables of a strftime ``pattern``."""
    rx = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            code = pattern[i + 1]
            rx.append(r"[A-Za-z]+" if code in "aAbBp" else r"\d+")
            i += 2
            continue
        rx.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), name) is not None


# -- the days ahead ------------------------------------------------------------------------
@dataclass
class InitReport:
    """What ``db init`` (or a collector's maintenance) found and added in one database.

    Attributes:
        db: the database (password masked).
        created: tables created now.
        existing: tables that were there already (left as they were).
        partitions: table -> the day partitions added now (MySQL ``--partition-days``).
        notes: what could not be done and why (one line each).
        statements: the statements executed.
    """

    db: str
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    partitions: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)

    @property
    def added(self) -> bool:
        return bool(self.created or any(self.partitions.values()))

    def text(self) -> str:
        """One line: what was added, what was there."""
        parts = []
        if self.created:
            parts.append("created " + ", ".join(self.created))
        for t, names in self.partitions.items():
            if names:
                parts.append(f"added partitions {t}: " + ", ".join(names))
        if not parts:
            parts.append("nothing to add")
        if self.existing:
            parts.append(f"{len(self.existing)} already there")
        return f"{self.db}: ready; " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_days(adapter: Adapter, sip_tables: Sequence[str], *, aux: bool = True,
                partition_days: int | None = None, today: _dt.date | None = None,
                existing: set[str] | None = None) -> InitReport:
    """Create what is missing, never touching what exists: the (already strftime-expanded)
    ``sip_tables``, the logs/report/rtcp tables with ``aux``; with ``partition_days``
    (MySQL/MariaDB) the day partitions of today (UTC, or ``today``) and the
    ``partition_days - 1`` following days, added to tables partitioned by an earlier
    ``db init`` by splitting ``pmax`` (rows already in ``pmax`` move into their days).
    ``adapter`` is connected; ``existing``: its tables when the caller knows them."""
    from .schema import (
        AUX_TABLE_NAMES,
        DIALECTS,
        aux_tables_sql,
        sip_table_sql,
    )

    report = InitReport(adapter.url.redacted())
    have = adapter.existing_tables() if existing is None else set(existing)
    mysql_parts = bool(partition_days) and adapter.dialect == "mysql"
    for t in dict.fromkeys(sip_tables):
        if t not in have:
            if adapter.dialect in DIALECTS:
                stmts = sip_table_sql(adapter.dialect, t, partition_days, today=today)
                adapter.execute_ddl(stmts)
                report.statements.extend(stmts)
            else:  # a store with its own DDL (its adapter knows it)
                adapter.create_for(t, "sip")
            report.created.append(t)
            have.add(t)
            continue
        report.existing.append(t)
        if not mysql_parts or partition_days is None:
            continue
        parts = [n for n, _b in mysql_partitions(adapter, t)]
        if not parts:
            report.notes.append(
                f"{t} is not partitioned (partitions are made when db init creates a "
                "table; ALTER TABLE ... PARTITION BY would rewrite it): left as it is")
            continue
        if "pmax" not in parts:
            report.notes.append(f"{t} has no catch-all partition pmax: no days added")
            continue
        added = extend_partitions(adapter, t, partition_days, today, parts=parts,
                                  statements=report.statements)
        if added:
            report.partitions[t] = added
    if aux:
        missing = [t for t in AUX_TABLE_NAMES if t not in have]
        if missing:
            if adapter.dialect in DIALECTS:
                stmts = aux_tables_sql(adapter.dialect)
                adapter.execute_ddl(stmts)
                report.statements.extend(stmts)
            else:
                adapter.create_for(missing[0], "aux")
            report.created.extend(missing)
        report.existing.extend(t for t in AUX_TABLE_NAMES if t in have)
    return report


def extend_partitions(adapter: Adapter, table: str, days_ahead: int,
                      today: _dt.date | None = None, *, parts: list[str] | None = None,
                      statements: list[str] | None = None) -> list[str]:
    """MySQL: add to a table partitioned by day the partitions missing up to
    ``days_ahead`` days from ``today`` (UTC) by splitting ``pmax``; the names added
    (none for a table that is not partitioned that way)."""
    from .schema import partition_maintenance_sql

    if parts is None:
        parts = [n for n, _b in mysql_partitions(adapter, table)]
    if "pmax" not in parts:
        return []
    stmts = partition_maintenance_sql(table, parts, days_ahead=days_ahead, today=today)
    if not stmts:
        return []
    adapter.execute_ddl(stmts)
    if statements is not None:
        statements.extend(stmts)
    after = [n for n, _b in mysql_partitions(adapter, table)]
    return [n for n in after if n not in parts]


@dataclass(frozen=True)
class Maintenance:
    """What ``hep`` and ``live`` keep ready themselves, from their writer process: the
    tables of today and tomorrow (UTC) of every strftime name, and on MySQL/MariaDB the
    day partitions of today and tomorrow of tables partitioned by ``db init
    --partition-days``. Checked at start and every ``every`` seconds, so tomorrow's table
    exists long before midnight and the first message of the day does not wait for a
    CREATE TABLE. Counted as ``maintenance:tables-created``,
    ``maintenance:partitions-added`` and ``maintenance:errors``, and logged.

    Attributes:
        patterns: the table names (strftime codes kept) of one database.
        every: seconds between checks.
        clock: seconds since 1970 (UTC); tests give another clock.
    """

    patterns: tuple[str, ...]
    every: float = 3600.0
    clock: Callable[[], float] = time.time

    def run(self, adapter: Adapter) -> dict[str, int]:
        """One check with the connected ``adapter``; the counters of what was done.
        StoreError when the database fails."""
        today = today_utc(self.clock)
        dated = [p for p in self.patterns if "%" in p]
        fixed = [p for p in self.patterns if "%" not in p]
        counts: dict[str, int] = {}
        have = adapter.existing_tables()
        if dated:
            now_us = int(self.clock() * 1_000_000)
            report = ensure_days(adapter, names_for_days(dated, today, 2, now_us), aux=False,
                                 existing=have)
            for t in report.created:
                log.info("created table %s ahead of its day", t)
            if report.created:
                counts["maintenance:tables-created"] = len(report.created)
        if adapter.dialect == "mysql":
            added = 0
            for t in fixed:
                if t in have:
                    try:
                        names = extend_partitions(adapter, t, 2, today)
                    except StoreError:
                        # the writer of another worker (--workers N) may have split
                        # pmax at the same moment: fine when nothing is missing now
                        from .schema import partition_maintenance_sql
                        parts = [n for n, _b in mysql_partitions(adapter, t)]
                        if partition_maintenance_sql(t, parts, days_ahead=2, today=today):
                            raise
                        names = []
                    for n in names:
                        log.info("added partition %s to %s ahead of its day", n, t)
                    added += len(names)
            if added:
                counts["maintenance:partitions-added"] = added
        return counts


def names_for_days(patterns: Iterable[str], first: _dt.date, days: int,
                   now_us: int | None = None) -> list[str]:
    """The tables ``patterns`` name on each of ``days`` days from ``first`` (UTC): a
    strftime name once per distinct expansion (``sip_%Y%m`` once a month), a plain
    name once. Each day's name is its midnight's; with ``now_us`` the name of that
    moment comes first, so a name with codes finer than a day (``sip_%Y%m%d_%H``) also
    gives the table the collectors write to now."""
    out: list[str] = []
    start = _dt.datetime(first.year, first.month, first.day, tzinfo=_dt.UTC)
    for p in patterns:
        if now_us is not None and "%" in p and expand_table_name(p, now_us) not in out:
            out.append(expand_table_name(p, now_us))
        for d in range(max(1, days) if "%" in p else 1):
            ts_us = int((start + d * _DAY).timestamp()) * 1_000_000
            name = expand_table_name(p, ts_us)
            if name not in out:
                out.append(name)
    return out
