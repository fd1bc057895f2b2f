"""The ClickHouse DDL and queries on a current ClickHouse, in-process with chDB (PyPI
``chdb``: the ClickHouse engine as a library), where the private servers of the other
tests are Debian's 18.16: the tables with what a current server has (LowCardinality,
ZSTD, bloom-filter indexes, TTL, the deduplication window), rows with awkward text and
bytes kept unchanged, search's statements (the WHERE clauses of query/filters.py and the
Reader's statements) finding what they should, insert deduplication by token, the
bookkeeping table, TTL and dropping a day. What chDB cannot show: a Distributed table
(it has no cluster) and the native protocol (it has no server): those are the 18.16 tests'.
"""

from __future__ import annotations

import os
import re

import pytest
from store_helpers import AWKWARD, MSGS, sip_row

from sipcaptool.query.filters import build_query, quote_name, where_clause
from sipcaptool.record import SIP_COLUMN_NAMES
from sipcaptool.store.clickhouse import (
    Features,
    literal,
    portable_ddl,
    substitute,
    table_sql,
)
from sipcaptool.store.replays import replays_table_sql

T0 = 1_764_576_000          # 2025-12-01 08:00:00 UTC

# the ClickHouse engine started in process takes seconds: run with the server tests, not
# in the fast loop
pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def ch(tmp_path_factory):
    try:
        from chdb import session
    except ImportError:
        if os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1":
            pytest.fail("chdb is not installed (pip install '.[test]')")
        pytest.skip("chdb is not installed")
    s = session.Session(str(tmp_path_factory.mktemp("chdb")))

    def q(sql: str) -> list[list[str]]:
        out = str(s.query(sql, "TSVRaw"))
        return [line.split("\t") for line in out.splitlines() if line]
    q("CREATE DATABASE IF NOT EXISTS homer")
    yield q
    s.close()


def _row(i: int, *, callid: str, ts: int, method: str = "INVITE", frm: str = "1001",
         to: str = "2002", ua: str = "Zoiper 5", msg: bytes | None = None) -> tuple:
    r = dict(zip(SIP_COLUMN_NAMES, sip_row(i, msg=msg), strict=True))
    r.update(date=_date(ts), micro_ts=ts * 1_000_000 + i, method=method, callid=callid,
             from_user=frm, to_user=to, ruri_user=to, user_agent=ua, pid_user="",
             auth_user="", callid_aleg="")
    return tuple(r.values())


def _date(sec: int) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))


def _insert(q, table: str, rows: list[tuple], token: str | None = None) -> None:
    values = ", ".join("(" + ", ".join(literal(v) for v in r) + ")" for r in rows)
    cols = ", ".join(f"`{c}`" for c in SIP_COLUMN_NAMES)
    settings = f" SETTINGS insert_deduplication_token = {literal(token)}" if token else ""
    q(f"INSERT INTO homer.{table} ({cols}){settings} VALUES {values}")


def test_current_server_tables(ch):
    (ver,), = ch("SELECT version()")
    f = Features.parse(ver)
    assert f.version >= (22, 2), ver
    ch(table_sql("sip_capture", "sip", f, database="homer", ttl_days=3650))
    ch(table_sql("logs_capture", "aux", f, database="homer"))
    ddl = "\n".join("\t".join(r) for r in ch("SHOW CREATE TABLE homer.sip_capture"))
    for part in ("LowCardinality(String)", "CODEC(ZSTD(3))", "TYPE bloom_filter",
                 "PARTITION BY toYYYYMMDD(date)", "ORDER BY (toStartOfHour(date), callid, "
                 "micro_ts)", "TTL date + toIntervalDay(3650)",
                 "non_replicated_deduplication_window = 1000"):
        assert part in ddl, part
    cols = [c for c, in ch("SELECT name FROM system.columns WHERE database = 'homer' AND "
                           "table = 'sip_capture' ORDER BY position")]
    assert cols == list(SIP_COLUMN_NAMES)


def test_awkward_values_kept_and_deduplicated_by_token(ch):
    rows = [_row(i, callid=f"awk-{i}", ts=T0 + i, msg=MSGS[i % len(MSGS)],
                 ua=AWKWARD[i % len(AWKWARD)]) for i in range(20)]
    _insert(ch, "sip_capture", rows, token="batch-awk")
    _insert(ch, "sip_capture", rows, token="batch-awk")       # a retry: dropped
    (n,), = ch("SELECT count() FROM homer.sip_capture WHERE callid LIKE 'awk-%'")
    assert n == "20"
    ua = SIP_COLUMN_NAMES.index("user_agent")
    for r in rows:
        (same,), = ch(f"SELECT msg = {literal(r[-4])} AND user_agent = {literal(r[ua])} "
                      f"FROM homer.sip_capture WHERE callid = {literal(r[13])}")
        assert same == "1", r[13]


def test_search_statements_find_what_they_should(ch):
    rows = []
    for k, (cid, frm, to, ua, minute) in enumerate([
            ("call-A@x", "1001", "2002", "Zoiper 5", 0), ("call-B@x", "1001", "3003", "Proxy/1", 1),
            ("call-C@x", "1003", "2004", "Linphone", 2), ("call_D@x", "1004", "2005", "x", 90)]):
        t = T0 + minute * 60
        rows.append(_row(10 * k, callid=cid, ts=t, frm=frm, to=to, ua=ua, method="INVITE"))
        rows.append(_row(10 * k + 1, callid=cid, ts=t + 1, frm=frm, to=to, ua=ua,
                         method="486" if cid == "call-C@x" else "200",
                         msg=b"SIP/2.0 200 OK\r\nSession-ID: " + cid.encode() + b"\r\n\r\n"))
    ch("CREATE TABLE homer.calls AS homer.sip_capture")
    _insert(ch, "calls", rows)

    def find(**kw) -> list[str]:
        query = build_query(now_us=(T0 + 86_400) * 1_000_000, **kw)
        where, params = where_clause(query, "clickhouse", table="calls")
        c = quote_name("clickhouse", "callid")
        m = quote_name("clickhouse", "micro_ts")
        sql = (f"SELECT {c}, MIN({m}) FROM {quote_name('clickhouse', 'calls')} WHERE {where} "
               f"GROUP BY {c} ORDER BY MIN({m}) DESC LIMIT 10")
        return sorted(r[0] for r in ch("USE homer") or ch(substitute(sql, params)))

    assert find() == ["call-A@x", "call-B@x", "call-C@x", "call_D@x"]
    assert find(call_id="call-A@x,call-C@x") == ["call-A@x", "call-C@x"]
    assert find(call_id="call_%") == ["call_D@x"]                 # '_' is literal
    assert find(user="1001") == ["call-A@x", "call-B@x"]
    assert find(user="200%") == ["call-A@x", "call-C@x", "call_D@x"]
    assert find(from_user="1003") == ["call-C@x"]
    assert find(ua="proxy/") == ["call-B@x"]                       # case ignored
    assert find(status="4xx") == ["call-C@x"]
    assert find(method="INVITE", user="1004") == ["call_D@x"]
    assert find(since=_date(T0), until=_date(T0 + 121)) == ["call-A@x", "call-B@x", "call-C@x"]
    assert find(since=_date(T0), until=_date(T0 + 119)) == ["call-A@x", "call-B@x"]
    assert find(since=_date(T0 + 3600)) == ["call_D@x"]
    # the Session-ID search of legs: position() in the bytes of msg
    hits = ch(substitute("SELECT DISTINCT callid FROM homer.calls WHERE position(msg, %s) > 0",
                         (b"Session-ID: call-B@x",)))
    assert hits == [["call-B@x"]]


def test_bookkeeping_ttl_and_days(ch):
    (ddl,) = replays_table_sql("clickhouse")
    ch(portable_ddl(ddl))
    ch("INSERT INTO homer.sipcaptool_replays (file_key, path, size, head_sha256, tables, "
       "run_id, state, started_us) VALUES ('k', '/x', 1, 'h', 't', 'r', 'running', 5)")
    sets = substitute("ALTER TABLE homer.sipcaptool_replays UPDATE state = %s, packets = %s, "
                      "finished_us = %s WHERE file_key = %s", ("complete", 7, 9, "k"),
                      typed_ints=True)
    ch(sets + " SETTINGS mutations_sync = 1")
    assert ch("SELECT state, packets, finished_us, first_us FROM homer.sipcaptool_replays") \
        == [["complete", "7", "9", "\\N"]]
    ch("ALTER TABLE homer.sip_capture MODIFY TTL `date` + INTERVAL 3650 DAY")
    days = [d for d, in ch("SELECT DISTINCT partition FROM system.parts WHERE database = "
                           "'homer' AND table = 'calls' AND active ORDER BY partition")]
    assert days == ["20251201"]
    assert all(re.fullmatch(r"\d{8}", d) for d in days)
    ch("ALTER TABLE homer.calls DROP PARTITION 20251201")
    assert ch("SELECT count() FROM homer.calls") == [["0"]]
