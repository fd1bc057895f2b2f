"""The days ahead and the days behind: ``db init`` run again (or later) extends what
exists, the collectors' writer makes tomorrow's tables and partitions itself, and
``db prune`` removes whole old days from every store.

"Later" is an injected day (``today=``) or clock, never a mocked database: every test
here runs against the real MariaDB, PostgreSQL and SQLite.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import time

import pytest
from store_helpers import connect, count, q, sip_row, tables

from sipcaptool.config import Settings
from sipcaptool.errors import ConfigError
from sipcaptool.pipeline import Pipeline
from sipcaptool.record import AUX_COLUMNS
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter
from sipcaptool.store.retention import (
    cutoff_day,
    dated_period,
    delete_rows_before,
    ensure_days,
    mysql_partitions,
    names_for_days,
    parse_age,
    prune,
    table_day,
)

D = dt.date(2031, 5, 10)  # "today" in these tests: no real day's table is touched
DAY = dt.timedelta(days=1)


def _adapter(url):
    a = open_adapter(url)
    a.create_database()
    a.connect()
    return a


def _stamp(day: dt.date, hms: str = "12:00:00") -> str:
    return f"{day.isoformat()} {hms}"


def _write(url, table, dates, kind="sip"):
    a = _adapter(url)
    try:
        if kind == "sip":
            rows = [sip_row(i, date=d) for i, d in enumerate(dates)]
        else:
            rows = [tuple(d if k == "datetime" else (b"m" if k == "blob" else
                                                     (0 if k in ("int", "bigint") else "x"))
                          for _n, k, _w in AUX_COLUMNS) for d in dates]
        a.write(table, kind, a.format_batch(kind, rows))
    finally:
        a.close()


def _dates(url, table):
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT {q(url, 'date')} FROM {q(url, table)}")
        return sorted(str(r[0])[:10] for r in cur.fetchall())
    finally:
        conn.close()


# -- pure ---------------------------------------------------------------------------------

def test_table_day_reads_the_date_back_from_the_name():
    assert table_day("sip_%Y%m%d", "sip_20310510") == (D, D + DAY)
    assert table_day("sip_capture_call_%Y%m%d", "sip_capture_call_20310510") == (D, D + DAY)
    assert table_day("sip_%Y%m%d_%H", "sip_20310510_07") == (D, D + DAY)
    assert table_day("s_%Y_%j", "s_2031_130") == (D, D + DAY)
    assert table_day("sip_%Y%m", "sip_203105") == (dt.date(2031, 5, 1), dt.date(2031, 6, 1))
    assert table_day("sip_%Y", "sip_2031") == (dt.date(2031, 1, 1), dt.date(2032, 1, 1))
    # not one of the pattern's tables
    assert table_day("sip_%Y%m%d", "sip_2031051") is None
    assert table_day("sip_%Y%m%d", "sip_capture") is None
    assert table_day("sip_%Y%m%d", "sip_20311340") is None
    # the name does not say which date it is
    assert dated_period("sip_%a") is None and table_day("sip_%a", "sip_Mon") is None
    assert dated_period("sip_%Y_%U") is None
    assert dated_period("sip_%d") is None  # a day of some month


def test_age_and_cutoff():
    assert parse_age("14d") == 14 and parse_age("14") == 14 and parse_age("2w") == 14
    for bad in ("0d", "d", "14h", "-1d", ""):
        with pytest.raises(ConfigError, match="--older-than"):
            parse_age(bad)
    assert cutoff_day(14, D) == D - 14 * DAY


def test_names_for_days():
    assert names_for_days(["s_%Y%m%d", "fixed"], D, 3) == [
        "s_20310510", "s_20310511", "s_20310512", "fixed"]
    assert names_for_days(["m_%Y%m"], dt.date(2031, 5, 30), 5) == ["m_203105", "m_203106"]


# -- db init, extended later ----------------------------------------------------------------

def test_init_extends_days_later_and_leaves_old_days_alone(any_db_url):
    from sipcaptool.commands.db import tables_for_init
    s = Settings.load(cli={"db_url": any_db_url,
                           "route": ("REGISTER=reg_%Y%m%d", "*=rest_%Y%m%d")}, env={})
    (names,) = tables_for_init(s, 2, today=D).values()
    assert names == ["reg_20310510", "reg_20310511", "rest_20310510", "rest_20310511"]
    a = _adapter(any_db_url)
    try:
        first = ensure_days(a, names)
        assert first.created == names + ["logs_capture", "report_capture", "rtcp_capture"]
        _write(any_db_url, "rest_20310510", [_stamp(D)])
        again = ensure_days(a, names)
        assert not again.added and "nothing to add" in again.text()
        # three days later, three days ahead
        (later,) = tables_for_init(s, 3, today=D + 3 * DAY).values()
        third = ensure_days(a, later)
        assert third.created == ["reg_20310513", "reg_20310514", "reg_20310515",
                                 "rest_20310513", "rest_20310514", "rest_20310515"]
        assert "created reg_20310513" in third.text()
    finally:
        a.close()
    assert count(any_db_url, "rest_20310510") == 1  # the old day is as it was
    assert {"reg_20310511", "rest_20310515"} <= tables(any_db_url)


def test_partitions_extend_later(mysql_url):
    a = _adapter(mysql_url)
    try:
        ensure_days(a, ["sip_part"], aux=False, partition_days=2, today=D)
        assert [n for n, _b in mysql_partitions(a, "sip_part")] == [
            "p_old", "p20310510", "p20310511", "pmax"]
        # rows of the days db init did not make yet wait in pmax
        _write(mysql_url, "sip_part", [_stamp(D), _stamp(D + 3 * DAY), _stamp(D + 9 * DAY)])
        report = ensure_days(a, ["sip_part"], aux=False, partition_days=3, today=D + 2 * DAY)
        assert report.partitions == {"sip_part": ["p20310512", "p20310513", "p20310514"]}
        assert "added partitions sip_part: p20310512, p20310513, p20310514" in report.text()
        parts = [n for n, _b in mysql_partitions(a, "sip_part")]
        assert parts == ["p_old", "p20310510", "p20310511", "p20310512", "p20310513",
                         "p20310514", "pmax"]
        for part, n in (("p20310510", 1), ("p20310513", 1), ("pmax", 1), ("p20310512", 0)):
            got = a.select(f"SELECT COUNT(*) FROM `sip_part` PARTITION ({part})")[0][0]
            assert got == n, part
        assert not ensure_days(a, ["sip_part"], aux=False, partition_days=3,
                               today=D + 2 * DAY).added
        # a table made without partitions is said to be so, and left alone
        ensure_days(a, ["sip_plain"], aux=False)
        note = ensure_days(a, ["sip_plain"], aux=False, partition_days=3).notes
        assert note and "not partitioned" in note[0]
    finally:
        a.close()
    assert count(mysql_url, "sip_part") == 3


# -- db prune -------------------------------------------------------------------------------

def test_prune_drops_old_day_tables_whole(any_db_url):
    a = _adapter(any_db_url)
    try:
        ensure_days(a, names_for_days(["call_%Y%m%d"], D - 20 * DAY, 21), aux=False)
        for i in (20, 15, 14, 0):
            _write(any_db_url, f"call_{D - i * DAY:%Y%m%d}", [_stamp(D - i * DAY)] * 2)
        dry = prune(a, ["call_%Y%m%d", "sip_capture"], D - 14 * DAY, dry_run=True)
        assert [r.name for r in dry.removed] == [f"call_{D - i * DAY:%Y%m%d}"
                                                 for i in range(20, 14, -1)]
        assert all(r.what == "table" for r in dry.removed)
        assert len([t for t in tables(any_db_url) if t.startswith("call_")]) == 21
        done = prune(a, ["call_%Y%m%d"], D - 14 * DAY)
        assert done.removed == dry.removed and not done.dry_run
        assert prune(a, ["call_%Y%m%d"], D - 14 * DAY).removed == []
    finally:
        a.close()
    left = sorted(t for t in tables(any_db_url) if t.startswith("call_"))
    assert left == [f"call_{D - i * DAY:%Y%m%d}" for i in range(14, -1, -1)]
    assert count(any_db_url, f"call_{D - 14 * DAY:%Y%m%d}") == 2


def test_prune_deletes_old_rows_of_one_table_in_batches(any_db_url):
    a = _adapter(any_db_url)
    try:
        ensure_days(a, ["sip_capture"])
        _write(any_db_url, "sip_capture",
               [_stamp(D - i * DAY, hms) for i in range(0, 30) for hms in ("00:00:00",
                                                                           "23:59:59")])
        _write(any_db_url, "logs_capture", [_stamp(D - 40 * DAY), _stamp(D)], kind="aux")
        dry = prune(a, ["sip_capture"], D - 14 * DAY, dry_run=True, batch_rows=7,
                    fixed=["logs_capture", "rtcp_capture"])
        assert [(r.table, r.what, r.rows) for r in dry.removed] == [
            ("sip_capture", "rows", 30), ("logs_capture", "rows", 1)]
        assert count(any_db_url, "sip_capture") == 60
        seen: list[int] = []
        done = delete_rows_before(a, "sip_capture", D - 14 * DAY, batch_rows=7,
                                  progress=lambda _t, n: seen.append(n))
        assert done[0].rows == 30 and seen == [7, 14, 21, 28, 30]
        rest = prune(a, ["sip_capture"], D - 14 * DAY, fixed=["logs_capture"])
        assert [(r.table, r.rows) for r in rest.removed] == [("logs_capture", 1)]
    finally:
        a.close()
    dates = _dates(any_db_url, "sip_capture")
    assert len(dates) == 30 and min(dates) == (D - 14 * DAY).isoformat()
    assert _dates(any_db_url, "logs_capture") == [D.isoformat()]


def test_prune_mysql_day_partitions(mysql_url):
    a = _adapter(mysql_url)
    try:
        ensure_days(a, ["sip_part"], aux=False, partition_days=5, today=D - 10 * DAY)
        _write(mysql_url, "sip_part", [_stamp(D - 12 * DAY), _stamp(D - 9 * DAY),
                                       _stamp(D - 8 * DAY), _stamp(D - 6 * DAY),
                                       _stamp(D - 2 * DAY)])
        dry = prune(a, ["sip_part"], D - 7 * DAY, dry_run=True)
        got = [(r.what, r.name, r.rows) for r in dry.removed]
        assert got == [("partition", "p_old", 1), ("partition", "p20310430", 0),
                       ("partition", "p20310501", 1), ("partition", "p20310502", 1)]
        assert count(mysql_url, "sip_part") == 5
        done = prune(a, ["sip_part"], D - 7 * DAY)
        assert [(r.what, r.name, r.rows) for r in done.removed] == got
        parts = [n for n, _b in mysql_partitions(a, "sip_part")]
        assert parts == ["p_old", "p20310503", "p20310504", "pmax"]
    finally:
        a.close()
    assert _dates(mysql_url, "sip_part") == [(D - 6 * DAY).isoformat(),
                                             (D - 2 * DAY).isoformat()]


def _writer_session(url):
    """A connection that gives up after 1 s of waiting for a lock (a writer that a long
    lock would stop shows as an error, not as a slow test)."""
    a = _adapter(url)
    if a.dialect == "mysql":
        a.execute_ddl(["SET SESSION innodb_lock_wait_timeout = 1"])
    elif a.dialect == "postgresql":
        a.execute_ddl(["SET lock_timeout = '1s'"])
    else:
        a.conn.execute("PRAGMA busy_timeout = 1000")
    return a


def test_prune_does_not_block_a_writer(any_db_url):
    """While the old rows go in batches, another connection keeps writing today's rows
    to the same table: every write succeeds without waiting out a lock."""
    a = _adapter(any_db_url)
    try:
        ensure_days(a, ["sip_capture"], aux=False)
        old = [_stamp(D - 30 * DAY - i * dt.timedelta(seconds=1)) for i in range(4000)]
        for i in range(0, len(old), 1000):
            _write(any_db_url, "sip_capture", old[i:i + 1000])
        w = _writer_session(any_db_url)
        go = threading.Event()
        done = threading.Event()
        errors: list[BaseException] = []
        written = [0]
        during = [0]

        def writer() -> None:
            try:
                while not done.is_set():
                    go.wait(5)
                    go.clear()
                    w.write("sip_capture", "sip", w.format_batch(
                        "sip", [sip_row(written[0], date=_stamp(D))]))
                    written[0] += 1
                    if not done.is_set():
                        during[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        try:
            removed = delete_rows_before(a, "sip_capture", D - 14 * DAY, batch_rows=100,
                                         progress=lambda _t, _n: go.set())
        finally:
            done.set()
            go.set()
            t.join(30)
            w.close()
    finally:
        a.close()
    assert not errors, errors
    assert removed[0].rows == 4000
    assert during[0] >= 1 and written[0] >= 1
    assert count(any_db_url, "sip_capture") == written[0]


# -- the collectors' own maintenance, ahead of midnight ----------------------------------

def _clock_at(value):
    return lambda: value.value


def test_writer_makes_tomorrows_tables_ahead_of_midnight(any_db_url):
    """A running pipeline's writer process (hep, live) creates the tables of today and
    tomorrow at start, and of the next day once its clock has moved on a day."""
    now = multiprocessing.Value("d", dt.datetime(2031, 5, 10, 23, 30, tzinfo=dt.UTC)
                                .timestamp())
    s = Settings.load(cli={"db_url": any_db_url, "spool_dir": "none",
                           "route": ("INVITE,ACK,BYE=call_%Y%m%d", "*=rest_%Y%m%d")},
                      env={})
    stats = Stats()
    p = Pipeline(s, stats, background=True, use_spool=False,
                 maintenance_clock=_clock_at(now))
    try:
        want = {"call_20310510", "call_20310511", "rest_20310510", "rest_20310511"}
        _wait_for(lambda: want <= tables(any_db_url))
        now.value += 86_400
        _wait_for(lambda: {"call_20310512", "rest_20310512"} <= tables(any_db_url))
    finally:
        p.close()
    assert stats["maintenance:tables-created"] == 6
    assert stats["maintenance:errors"] == 0
    assert not {t for t in tables(any_db_url) if t.endswith("20310513")}


def test_writer_adds_tomorrows_partition(mysql_url):
    a = _adapter(mysql_url)
    try:
        ensure_days(a, ["sip_part"], aux=False, partition_days=1, today=D)
    finally:
        a.close()
    now = multiprocessing.Value("d", dt.datetime(2031, 5, 11, 22, 0, tzinfo=dt.UTC)
                                .timestamp())
    s = Settings.load(cli={"db_url": mysql_url, "table_name": "sip_part",
                           "spool_dir": "none"}, env={})
    stats = Stats()
    p = Pipeline(s, stats, background=True, use_spool=False,
                 maintenance_clock=_clock_at(now))

    def parts():
        b = _adapter(mysql_url)
        try:
            return [n for n, _b in mysql_partitions(b, "sip_part")]
        finally:
            b.close()
    try:
        _wait_for(lambda: "p20310512" in parts())
    finally:
        p.close()
    assert parts() == ["p_old", "p20310510", "p20310511", "p20310512", "pmax"]
    assert stats["maintenance:partitions-added"] == 2


def test_maintenance_failure_is_counted_not_fatal(sqlite_url):
    """A database that refuses the CREATE (in SQLite an index already has the name) is
    logged and counted as maintenance:errors; the writer keeps storing."""
    a = _adapter(sqlite_url)
    try:
        a.execute_ddl(['CREATE TABLE "other" ("x" INTEGER)',
                       'CREATE INDEX "t_20310511" ON "other" ("x")'])
    finally:
        a.close()
    clock = dt.datetime(2031, 5, 10, 23, 0, tzinfo=dt.UTC).timestamp()
    s = Settings.load(cli={"db_url": sqlite_url, "table_name": "t_%Y%m%d",
                           "spool_dir": "none"}, env={})
    stats = Stats()
    p = Pipeline(s, stats, background=False, use_spool=False,
                 maintenance_clock=lambda: clock)
    p.close()
    assert stats["maintenance:errors"] == 1
    assert "t_20310510" in tables(sqlite_url)  # created before the refused one


def _wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the time limit")
        time.sleep(0.1)


def test_two_writers_extending_partitions_at_once(mysql_url):
    """hep --workers N: every worker's writer keeps the partitions; when two split pmax
    at the same moment, the one that finds the work done is not an error."""
    from sipcaptool.store.retention import Maintenance
    later = dt.datetime(2031, 5, 11, 22, 0, tzinfo=dt.UTC).timestamp()
    for round_ in range(3):
        table = f"sip_part{round_}"
        a = _adapter(mysql_url)
        try:
            ensure_days(a, [table], aux=False, partition_days=1, today=D)
        finally:
            a.close()
        m = Maintenance((table,), clock=lambda: later)
        barrier = threading.Barrier(2)
        results: list[object] = []

        def one(m: Maintenance = m, barrier: threading.Barrier = barrier,
                results: list[object] = results) -> None:
            b = _adapter(mysql_url)
            try:
                barrier.wait(10)
                results.append(m.run(b))
            except BaseException as e:  # noqa: BLE001 - reported below
                results.append(e)
            finally:
                b.close()
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert sum(r.get("maintenance:partitions-added", 0) for r in results
                   if isinstance(r, dict)) >= 2
        b = _adapter(mysql_url)
        try:
            assert [n for n, _b in mysql_partitions(b, table)] == [
                "p_old", "p20310510", "p20310511", "p20310512", "pmax"]
        finally:
            b.close()
