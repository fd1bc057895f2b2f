"""The ClickHouse store against real servers (Debian's clickhouse-server, started by the
tests with their own configuration and ports: tests/clickhouse_server.py): the tables
each server version gets, literals, the writer (bytes unchanged, each batch once, refused
rows, the spool), a two-shard cluster (local tables on both shards, a Distributed table,
rows on the shard their Call-ID hashes to), dropping old days."""

from __future__ import annotations

import datetime as dt
import sys
import time

import pytest
from clickhouse_server import wait_count_on
from store_helpers import AWKWARD, MSGS, aux_row, sip_row

from sipcaptool.errors import ConfigError, StoreError
from sipcaptool.record import AUX_COLUMN_NAMES, SIP_COLUMN_NAMES
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter, replays
from sipcaptool.store.clickhouse import (
    Features,
    check_row,
    distributed_sql,
    epoch,
    literal,
    portable_ddl,
    shard_of,
    substitute,
    table_sql,
    with_cluster,
)
from sipcaptool.store.schema import init_db
from sipcaptool.store.url import parse_db_url
from sipcaptool.store.writer import Writer
from sipcaptool.store.writer_process import WriterCore

OLD = Features((18, 16))
NEW = Features((24, 8))


# -- pure: DDL, literals, dates, rows ---------------------------------------------------

def test_tables_use_what_each_version_has():
    old = table_sql("sip_capture", "sip", OLD, database="homer", ttl_days=14)
    new = table_sql("sip_capture", "sip", NEW, database="homer", ttl_days=14)
    for ddl in (old, new):
        assert "PARTITION BY toYYYYMMDD(`date`)" in ddl
        assert "ORDER BY (toStartOfHour(`date`), `callid`, `micro_ts`)" in ddl
        assert "`date` DateTime('UTC')" in ddl and "`micro_ts` Int64" in ddl
        # every column of record.py, in its order, and no id
        cols = [line.split()[0].strip("`") for line in ddl.splitlines()
                if line.startswith("  `")]
        assert cols == list(SIP_COLUMN_NAMES)
    for feature in ("LowCardinality", "CODEC(ZSTD", "bloom_filter", "TTL ",
                    "non_replicated_deduplication_window"):
        assert feature not in old and feature in new
    aux = table_sql("logs_capture", "aux", OLD)
    assert "ORDER BY (toStartOfHour(`date`), `correlation_id`, `micro_ts`)" in aux
    assert "bloom_filter" not in table_sql("logs_capture", "aux", NEW)
    assert Features.parse("18.16.1") == OLD and Features.parse("24.8.4.13").ttl
    d = distributed_sql("sip_capture", "sip", "sipcap", "homer")
    assert "Distributed(`sipcap`, `homer`, `sip_capture_local`, halfMD5(`callid`))" in d


def test_literals_and_substitution():
    assert literal(None) == "NULL" and literal(7) == "7" and literal(True) == "1"
    assert literal("a'b\\c") == "'a\\'b\\\\c'"
    assert literal(b"\x00\xff'") == "'\\x00\\xFF\\''"
    assert literal("ü\n") == "'ü\\x0A'"
    assert substitute("a = %s AND b IN (%s, %s)", ("x", 1, b"\x01")) == \
        "a = 'x' AND b IN (1, '\\x01')"
    assert substitute("a % 2 = 0", ()) == "a % 2 = 0"    # no parameters: as it is
    with pytest.raises(ValueError):
        substitute("a = %s", (1, 2))
    with pytest.raises(TypeError):
        literal(object())


def test_dates_and_rows_that_do_not_fit():
    assert epoch("1970-01-01 00:00:00") == 0
    assert epoch("2026-01-02 03:04:05") == 1767323045
    for bad in ("2026-13-01 00:00:00", "yesterday", None, "2106-02-08 00:00:00"):
        with pytest.raises(ValueError):
            epoch(bad)
    assert check_row("sip", sip_row(1)) is None
    assert check_row("aux", aux_row(1)) is None
    r = list(sip_row(1))
    r[SIP_COLUMN_NAMES.index("source_port")] = 1 << 40
    assert "source_port" in (check_row("sip", tuple(r)) or "")
    assert "values for" in (check_row("sip", sip_row(1)[:-1]) or "")


def test_columns_of_turns_every_date_into_seconds():
    """Dates seen before (cached), new ones, the epoch itself (0, which the cache gives
    back as false) and seconds already: each becomes its epoch second; a date that does
    not parse is a ValueError, as check_row says."""
    from sipcaptool.store.clickhouse import columns_of
    epoch("2026-01-02 03:04:05")            # (cached)
    dates = ["2026-01-02 03:04:05", "1970-01-01 00:00:00", "2031-07-08 09:10:11",
             1767323045, "1970-01-01 00:00:00"]
    rows = [(d, *sip_row(i)[1:]) for i, d in enumerate(dates)]
    assert list(columns_of("sip", rows)[0]) == [1767323045, 0, 1941268211, 1767323045, 0]
    with pytest.raises(ValueError):
        columns_of("sip", rows + [("2026-02-30 00:00:00", *sip_row(9)[1:])])


def test_bookkeeping_ddl_made_portable():
    ddl = portable_ddl('CREATE TABLE IF NOT EXISTS `t` (`k` VARCHAR(64) NOT NULL PRIMARY KEY, '
                       '`p` VARCHAR(1024) NOT NULL, `n` BIGINT, `m` BIGINT NOT NULL DEFAULT 0)')
    assert ddl == ("CREATE TABLE IF NOT EXISTS `t` (`k` String, `p` String, "
                   "`n` Nullable(Int64), `m` Int64 DEFAULT 0) ENGINE = MergeTree() ORDER BY `k`")
    assert portable_ddl("SELECT 1") == "SELECT 1"


def test_urls_and_the_cluster_setting():
    u = parse_db_url("clickhouse://default@ch1/homer?cluster=sipcap")
    assert (u.dialect, u.host, u.port, u.database) == ("clickhouse", "ch1", 9000, "homer")
    assert dict(u.options) == {"cluster": "sipcap"}
    assert parse_db_url("clickhouse://u:secret@ch1:9440/h?secure=1").redacted() == \
        "clickhouse://u:***@ch1:9440/h?secure=1"
    with pytest.raises(ConfigError, match="unknown option 'clutser'"):
        parse_db_url("clickhouse://ch1/homer?clutser=x")
    assert with_cluster("clickhouse://ch1/h", "c") == "clickhouse://ch1/h?cluster=c"
    assert with_cluster("clickhouse://ch1/h?secure=1", "c") == \
        "clickhouse://ch1/h?secure=1&cluster=c"
    assert with_cluster("clickhouse://ch1/h?cluster=own", "c") == "clickhouse://ch1/h?cluster=own"
    assert with_cluster("mysql://ch1/h", "c") == "mysql://ch1/h"
    from sipcaptool.config import Settings
    s = Settings.load(None, {"db_url": "clickhouse://ch1/h", "cluster": "sipcap"},
                      env={})
    assert s.default_mode().db_url == "clickhouse://ch1/h?cluster=sipcap"


def test_without_the_driver_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "clickhouse_driver", None)
    a = open_adapter("clickhouse://127.0.0.1:1/x")
    with pytest.raises(StoreError, match=r"pip install 'sipcaptool\[clickhouse\]'"):
        a.connect()


# -- one server --------------------------------------------------------------------------

def _client(url: str, as_bytes: bool = True):
    from clickhouse_driver import Client
    u = parse_db_url(url)
    return Client(u.host, port=u.port, database="default",
                  settings={"strings_as_bytes": as_bytes})


def test_literals_read_back_unchanged(ch_url):
    c = _client(ch_url)
    for v in [*AWKWARD, *MSGS[:7]]:
        raw = v.encode() if isinstance(v, str) else v
        assert c.execute("SELECT " + literal(v) + " AS v")[0][0] == raw
    c.disconnect()


def test_init_write_read_each_batch_once(ch_url):
    init_db(ch_url, ["sip_capture", "sip_%Y%m%d"])
    a = open_adapter(ch_url)
    a.connect()
    assert a.features.version == (18, 16)
    have = a.existing_tables()
    assert {"sip_capture", "logs_capture", "report_capture", "rtcp_capture",
            "sipcaptool_batches"} <= have
    assert any(t.startswith("sip_2") for t in have)
    assert a.table_columns("sip_capture") == list(SIP_COLUMN_NAMES)
    rows = [sip_row(i) for i in range(40)]
    assert a.write("sip_capture", "sip", a.format_batch("sip", rows), "b-1", 40) is True
    assert a.write("sip_capture", "sip", a.format_batch("sip", rows), "b-1", 40) is False
    # a table missing is created by the write
    assert a.write("sip_other", "sip", a.format_batch("sip", rows[:3]), "b-2", 3) is True
    assert a.write("logs_capture", "aux", a.format_batch("aux", [aux_row(2)]), "b-3", 1)
    r = open_adapter(ch_url)
    r.connect_readonly()
    got = r.select("SELECT * FROM sip_capture ORDER BY micro_ts")
    assert [tuple(str(v) if isinstance(v, dt.datetime) else v for v in row)
            for row in got] == rows
    assert r.select("SELECT * FROM sip_other ORDER BY micro_ts") == \
        [tuple(dt.datetime(2026, 1, 2, 3, 4, 5) if i == 0 else v for i, v in enumerate(x))
         for x in rows[:3]]
    (logs,) = r.select("SELECT * FROM logs_capture")
    assert dict(zip(AUX_COLUMN_NAMES, logs, strict=True))["msg"] == aux_row(2)[-1]
    with pytest.raises(StoreError):
        r.select("INSERT INTO sip_other SELECT * FROM sip_other")   # read-only
    r.close()
    a.close()


def test_ack_lost_after_the_insert_is_not_written_twice(ch_url):
    """The rows were taken, the reply was lost before the batch id was recorded: the
    retry finds the insert in the server's query log and writes nothing."""
    init_db(ch_url, ["sip_capture"])
    a = open_adapter(ch_url)
    rows = [sip_row(i) for i in range(5)]
    real_mark = a._mark
    calls = []

    def lost(*args):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionResetError("the reply was lost")
        return real_mark(*args)

    a._mark = lost
    events: list = []
    core = WriterCore(a, 3, 30, None, events.append)
    core.start()
    core.batch("sip_capture", "sip", 5, a.format_batch("sip", rows), "lost-ack-1")
    assert events[-1].written_now is False            # found in the query log
    assert a.count("sip_capture") == 5
    # and the id is recorded now: a third try finds it at once
    assert a.write("sip_capture", "sip", a.format_batch("sip", rows), "lost-ack-1", 5) is False
    a.close()


def test_a_batch_over_midnight_is_written_day_by_day_once(ch_url):
    """A batch with rows of two days is two parts on the server; each day is its own
    insert with its own id, so a failure after the first day writes only the second day
    again."""
    init_db(ch_url, ["sip_capture"])
    a = open_adapter(ch_url)
    rows = [sip_row(i, date=d) for i, d in enumerate(
        ["2026-03-01 23:59:59"] * 4 + ["2026-03-02 00:00:00"] * 3)]
    real_insert = a._insert
    failed = []

    def second_day_fails_once(table, kind, cols, batch_id):
        if batch_id.startswith("day1:") and not failed:
            failed.append(batch_id)
            raise ConnectionResetError("the server went away")
        return real_insert(table, kind, cols, batch_id)

    a._insert = second_day_fails_once
    events: list = []
    core = WriterCore(a, 3, 30, None, events.append)
    core.start()
    core.batch("sip_capture", "sip", 7, a.format_batch("sip", rows), "midnight-1")
    assert failed and events[-1].written_now is True and events[-1].retries == 1
    got = a.select("SELECT micro_ts, count() FROM sip_capture GROUP BY micro_ts")
    assert sorted(m for m, _ in got) == [r[1] for r in rows] and {n for _, n in got} == {1}
    assert sorted(r[0] for r in a.select("SELECT batch_id FROM sipcaptool_batches")) == \
        ["day0:midnight-1", "day1:midnight-1", "midnight-1"]
    a.close()


def test_writer_refused_rows_dropped_the_rest_stored(ch_url):
    init_db(ch_url, ["sip_capture"])
    port = SIP_COLUMN_NAMES.index("source_port")
    rows = []
    for i in range(60):
        r = list(sip_row(i))
        if i in (5, 41, 42):
            r[port] = -(1 << 40)
        rows.append(tuple(r))
    st = Stats()
    w = Writer(ch_url, st, batch_size=30, flush_interval=60, background=True)
    for r in rows:
        w.add("sip_capture", "sip", r)
    w.close()
    assert st["stored:sip_capture"] == 57 and st["dropped:db-error"] == 3
    a = open_adapter(ch_url)
    got = a.select("SELECT micro_ts FROM sip_capture ORDER BY micro_ts")
    assert [g[0] for g in got] == [r[1] for i, r in enumerate(rows) if i not in (5, 41, 42)]
    a.close()


def test_batches_joined_into_large_inserts_each_row_once(ch_url):
    """The writer process joins the batches waiting for ClickHouse into one insert (an
    insert costs the server much whatever its size); every batch is still counted and
    every row stored once."""
    init_db(ch_url, ["sip_capture"])
    st = Stats()
    w = Writer(ch_url, st, batch_size=100, flush_interval=0, background=True)
    for i in range(3000):
        w.add("sip_capture", "sip", sip_row(i))
    w.close()
    assert st["stored:sip_capture"] == 3000 and st["db:batches"] == 30
    assert st["queue_depth"] == 0
    a = open_adapter(ch_url)
    got = a.select("SELECT micro_ts, count() FROM sip_capture GROUP BY micro_ts")
    assert sorted(m for m, _ in got) == sorted(sip_row(i)[1] for i in range(3000))
    assert {n for _, n in got} == {1}
    (inserts,) = a.select("SELECT count() FROM sipcaptool_batches")[0]
    assert 1 <= inserts < 30
    a.close()


def test_server_down_batches_spooled_then_written_once(tmp_path, ch_servers):
    g = ch_servers(1)
    url = g.servers[0].url + "/spooltest"
    init_db(url, ["sip_capture"])
    st = Stats()
    w = Writer(url, st, batch_size=10, flush_interval=0.05, insert_retries=0,
               spool_dir=str(tmp_path / "spool"))
    for i in range(30):
        w.add("sip_capture", "sip", sip_row(i))
    w.flush()
    g.servers[0].stop()
    for i in range(30, 80):
        w.add("sip_capture", "sip", sip_row(i))
    w.flush()
    assert st["db:spooled"] >= 1
    g.servers[0].start()
    deadline = time.monotonic() + 60
    while st["stored:sip_capture"] < 80 and time.monotonic() < deadline:
        time.sleep(0.2)
    w.close()
    assert st["stored:sip_capture"] == 80 and st["spool_batches"] == 0
    assert st["queue_depth"] == 0 and st["db:batches"] == 8
    a = open_adapter(url)
    got = a.select("SELECT micro_ts, count() FROM sip_capture GROUP BY micro_ts")
    assert sorted(m for m, _ in got) == [sip_row(i)[1] for i in range(80)]
    assert {n for _, n in got} == {1}
    a.close()


def test_spool_drain_command_writes_a_clickhouse_spool_once(tmp_path, ch_servers):
    """Batches spooled while the server was down (marshalled rows, joined by the writer
    process) are written by `sipcaptool spool drain` once the server is back, each row
    once; a second drain finds nothing to do."""
    import json
    import subprocess
    g = ch_servers(1)
    url = g.servers[0].url + "/draintest"
    init_db(url, ["sip_capture"])
    g.servers[0].stop()
    spool = tmp_path / "spool"
    st = Stats()
    w = Writer(url, st, batch_size=25, flush_interval=0, insert_retries=0,
               spool_dir=str(spool))
    for i in range(200):
        w.add("sip_capture", "sip", sip_row(i))
    w.close()
    assert st["stored:sip_capture"] == 0 and st["db:spooled"] >= 1
    assert st["dropped:db-error"] == 0 and st["queue_depth"] == 0
    g.servers[0].start()

    def drain():
        p = subprocess.run([sys.executable, "-m", "sipcaptool", "spool", "drain", "--db",
                            url, "--spool-dir", str(spool), "--json"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    first = drain()
    assert first["stored"] == {"sip_capture": 200} and first["left"]["rows"] == 0, first
    assert first["db"]["batches"] == 8               # the 8 batches cut, however joined
    again = drain()
    assert (again["before"]["rows"], again["stored"]) == (0, {})
    a = open_adapter(url)
    got = a.select("SELECT micro_ts, count() FROM sip_capture GROUP BY micro_ts")
    assert sorted(m for m, _ in got) == [sip_row(i)[1] for i in range(200)]
    assert {n for _, n in got} == {1}
    a.close()


def test_a_batch_taken_but_not_recorded_counts_for_resume(ch_url):
    """The writer was killed after the server took a replay's batch and before its id
    was recorded: --resume still knows those rows are stored (the server's query log)."""
    from sipcaptool.store.clickhouse import columns_of
    init_db(ch_url, ["sip_capture"])
    a = open_adapter(ch_url)
    a.connect()
    rows = [sip_row(i) for i in range(7)]
    assert a.write("sip_capture", "sip", rows, "rRUN1:3:w-1", 3)
    a._insert("sip_capture", "sip", columns_of("sip", rows), "rRUN1:57:w-2")  # no _mark
    a._insert("sip_capture", "sip", columns_of("sip", rows), "rRUN10:99:w-1")  # another run
    assert replays.stored_positions(a, "RUN1") == {"sip_capture": 57}
    assert replays.stored_positions(a, "RUN9") == {}
    a.close()


def test_drop_days_before(ch_url):
    init_db(ch_url, ["sip_capture"])
    a = open_adapter(ch_url)
    a.connect()
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        rows = [sip_row(i, date=f"{day} 12:00:00") for i in range(4)]
        a.write("sip_capture", "sip", rows, f"d-{day}", 4)
    plan = a.drop_days_before("sip_capture", dt.date(2026, 1, 3), dry_run=True)
    assert [(r.name, r.day, r.rows) for r in plan] == [("20260101", "2026-01-01", 4),
                                                       ("20260102", "2026-01-02", 4)]
    assert a.count("sip_capture") == 12
    done = a.drop_days_before("sip_capture", dt.date(2026, 1, 2))
    assert [r.name for r in done] == ["20260101"] and a.count("sip_capture") == 8
    a.close()


def test_shard_of_is_the_servers_hash(ch_url):
    a = open_adapter(ch_url)
    with pytest.raises(StoreError, match=r"Code 81: Database \S+ doesn't exist") as ei:
        a.connect()
    assert ei.value.kind == "operator" and "db init" in ei.value.hint
    a.create_database()
    ids = [f"call-{i}@example.com" for i in range(200)] + ["ünï", ""]
    for cid in ids:
        (h,) = a.select("SELECT halfMD5(%s) % 3", (cid,))[0]
        assert shard_of(cid, [1, 1, 1]) == h
    # weights: shard 0 takes 1 in 3, shard 1 two in 3
    for cid in ids[:50]:
        (h,) = a.select("SELECT halfMD5(%s) % 3", (cid,))[0]
        assert shard_of(cid, [1, 2]) == (0 if h < 1 else 1)
    a.close()


# -- a two-shard cluster -----------------------------------------------------------------

def test_cluster_local_tables_distributed_reads_sharded_by_callid(ch_cluster):
    url, group = ch_cluster
    stmts = init_db(url, ["sip_capture"])
    assert any("ENGINE = Distributed" in s for s in stmts)
    db = parse_db_url(url).database
    for s in group.servers:
        c = _client(s.url + "/x", as_bytes=False)
        names = {r[0] for r in c.execute(f"SELECT name FROM system.tables WHERE database = '{db}'")}
        assert {"sip_capture_local", "logs_capture_local"} <= names
        c.disconnect()
    a = open_adapter(url)
    cid = SIP_COLUMN_NAMES.index("callid")
    rows = [tuple(f"call-{i % 50}@x" if j == cid else v for j, v in enumerate(sip_row(i)))
            for i in range(200)]
    a.write("sip_capture", "sip", rows[:100], "c-1", 100)
    a.write("sip_capture", "sip", rows[100:], "c-2", 100)
    assert a.write("sip_capture", "sip", rows[100:], "c-2", 100) is False
    assert wait_count_on(a, "sip_capture", 200, timeout=30) == 200
    # every call on the one shard its Call-ID hashes to
    for k, s in enumerate(group.servers):
        c = _client(s.url + "/x", as_bytes=False)
        calls = {r[0] for r in c.execute(f"SELECT DISTINCT callid FROM `{db}`.sip_capture_local")}
        assert calls and all(shard_of(x, [1, 1]) == k for x in calls)
        c.disconnect()
    r = open_adapter(url)
    r.connect_readonly()
    assert len(r.select("SELECT callid FROM sip_capture WHERE callid = %s", ("call-7@x",))) == 4
    # old days dropped on every shard
    assert sum(x.rows or 0 for x in r.drop_days_before("sip_capture", dt.date(2026, 1, 3),
                                                       dry_run=True)) == 200
    a.drop_days_before("sip_capture", dt.date(2026, 1, 3))
    assert a.count("sip_capture") == 0
    r.close()
    a.close()
