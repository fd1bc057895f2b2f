"""The search's pure parts: time and filter parsing, the WHERE clause, the tables read.

Parsers are checked on whole inputs and with hypothesis ("parses, or raises
ConfigError": never another exception); the WHERE clause is run on a real SQLite
table for its semantics (wildcards, escapes), the server dialects in test_search.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcaptool.config import Settings
from sipcaptool.errors import ConfigError
from sipcaptool.query.calls import session_ids, summarize
from sipcaptool.query.filters import (
    Address,
    build_query,
    call_matches,
    like_pattern,
    parse_address,
    parse_status,
    parse_time,
    parse_tz,
    split_values,
    where_clause,
)
from sipcaptool.query.model import STORED_COLUMNS, StoredMessage
from sipcaptool.query.tables import candidate_names, name_pattern, present, read_sources

NOW = 1_764_576_000_000_000    # 2025-12-01 08:00:00 UTC


@pytest.mark.parametrize("text,expected", [
    ("2h", NOW - 7200 * 10**6), ("30m", NOW - 1800 * 10**6), ("45s", NOW - 45 * 10**6),
    ("1d", NOW - 86400 * 10**6), ("1w", NOW - 7 * 86400 * 10**6), ("now", NOW),
    ("2025-12-01", NOW - 8 * 3600 * 10**6),
    ("2025-12-01 08:00", NOW), ("2025-12-01T08:00:00", NOW),
    ("2025-12-01 08:00:00.5", NOW + 500_000), ("2025-12-01 08:00:00.000001", NOW + 1),
    ("2025-12-01 09:00+01:00", NOW), ("2025-12-01 09:00 +0100", NOW),
    ("2025-12-01 08:00Z", NOW), ("@1764576000", NOW), ("@1764576000.25", NOW + 250_000),
])
def test_parse_time(text, expected):
    assert parse_time(text, now_us=NOW) == expected


def test_parse_time_in_zone():
    paris = parse_tz("Europe/Paris")
    assert parse_time("2025-12-01 09:00", tz=paris) == NOW          # CET in December
    assert parse_time("2025-07-01 10:00", tz=paris) == parse_time("2025-07-01 08:00")
    assert parse_time("2025-12-01 09:00Z", tz=paris) == NOW + 3600 * 10**6  # offset wins
    assert parse_tz("+05:30").utcoffset(None) == dt.timedelta(hours=5, minutes=30)
    assert parse_tz(None) is dt.UTC and parse_tz("utc") is dt.UTC
    parse_tz("local")


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "-2h", "2025-13-01",
                                  "2025-02-30 10:00", "2025-12-01 25:00", "12:00",
                                  "2025-12-01 08:00+25:00", "@", "1x", "2025/12/01"])
def test_bad_times_name_the_option(text):
    with pytest.raises(ConfigError, match="^--until "):
        parse_time(text, "--until", now_us=NOW)


@given(st.text(max_size=40))
@settings(max_examples=400, deadline=None)
def test_time_parser_parses_or_raises_config_error(text):
    try:
        v = parse_time(text, "--since", now_us=NOW)
    except ConfigError as e:
        assert str(e).startswith("--since ")
    else:
        assert isinstance(v, int)


@given(st.from_regex(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?"
                     r"(Z|[+-]\d{2}:\d{2})?", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_absolute_times_parse_or_raise(text):
    try:
        parse_time(text, "--since", now_us=NOW)
    except ConfigError as e:
        assert "not a date" in str(e) or "offset" in str(e) or "allowed" in str(e)


FILTER_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(call_id=FILTER_TEXT, user=FILTER_TEXT, status=FILTER_TEXT, src=FILTER_TEXT,
       method=FILTER_TEXT, tz=FILTER_TEXT)
@settings(max_examples=300, deadline=None)
def test_build_query_parses_or_raises_config_error(call_id, user, status, src, method, tz):
    try:
        q = build_query(call_id=call_id, user=user, status=status, src=src, method=method,
                        tz=tz, now_us=NOW)
    except ConfigError as e:
        assert str(e).startswith("--"), e
        return
    for dialect in ("sqlite", "mysql", "postgresql"):
        sql, params = where_clause(q, dialect, table="t")
        assert sql.count("?" if dialect == "sqlite" else "%s") == len(params)


def test_values_statuses_addresses():
    assert split_values("a, b,c", "--user") == ("a", "b", "c")
    assert split_values(("a", "b,c"), "--user") == ("a", "b", "c")
    assert split_values("x\\,y@h,z", "--call-id") == ("x,y@h", "z")
    with pytest.raises(ConfigError, match="--node"):
        split_values("a,", "--node")
    assert [parse_status(s) for s in ("200", "4xx", "18x", "5XX")] == \
        ["200", "4__", "18_", "5__"]
    for bad in ("4x", "700", "20", "2000", "xx", "x00", "4xX0"):
        with pytest.raises(ConfigError, match="--status"):
            parse_status(bad)
    assert parse_address("10.0.0.1") == Address("10.0.0.1")
    assert parse_address("10.0.0.1:5060") == Address("10.0.0.1", 5060)
    assert parse_address("2001:DB8::1") == Address("2001:db8::1")
    assert parse_address("[2001:db8::1]:5061") == Address("2001:db8::1", 5061)
    for bad in ("10.0.0", "host:5060", "10.0.0.1:0", "10.0.0.1:65536", "[::1]:x", "::1]"):
        with pytest.raises(ConfigError, match="--src"):
            parse_address(bad)
    assert like_pattern("abc") is None
    assert like_pattern("a_b%") == "a\\_b%"


def _table(rows: list[dict]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    cols = ["date", *STORED_COLUMNS]
    conn.execute(f"CREATE TABLE t ({', '.join(cols)})")
    for r in rows:
        full = {c: "" for c in cols} | {"micro_ts": NOW, "source_port": 5060,
                                        "destination_port": 5060, "msg": b""} | r
        full["date"] = dt.datetime.fromtimestamp(full["micro_ts"] // 10**6, dt.UTC) \
            .strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(f"INSERT INTO t VALUES ({', '.join('?' * len(cols))})",
                     [full[c] for c in cols])
    return conn


def _match(conn: sqlite3.Connection, **kw) -> list[str]:
    q = build_query(now_us=NOW + 3600 * 10**6, **kw)
    sql, params = where_clause(q, "sqlite", table="t")
    return sorted({r[0] for r in conn.execute(f"SELECT callid FROM t WHERE {sql}", params)})


def test_where_clause_semantics_on_sqlite():
    conn = _table([
        {"callid": "c1", "from_user": "1001", "to_user": "2002", "method": "INVITE",
         "user_agent": "Zoiper 5", "source_ip": "10.0.0.1"},
        {"callid": "c1", "method": "486", "cseq": "1 INVITE", "source_ip": "10.0.0.2",
         "micro_ts": NOW + 1000},
        {"callid": "c2", "from_user": "10_1", "ruri_user": "x%y", "method": "REGISTER",
         "node": "n2", "micro_ts": NOW - 7200 * 10**6},
        {"callid": "c3", "pid_user": "555", "auth_user": "777", "method": "INVITE",
         "source_ip": "10.0.0.1", "source_port": 5080},
    ])
    assert _match(conn, user="1001") == ["c1"]
    assert _match(conn, user="10%") == ["c1", "c2"]
    assert _match(conn, user="10_%") == ["c2"]            # _ is literal
    assert _match(conn, user="x\\%y") == []               # no wildcard inside: x%y LIKE
    assert _match(conn, user="x%y") == ["c2"]
    assert _match(conn, user="555,777") == ["c3"]
    assert _match(conn, src="10.0.0.1") == ["c1", "c3"]
    assert _match(conn, src="10.0.0.1:5080") == ["c3"]
    assert _match(conn, ua="zoiper") == ["c1"]
    assert _match(conn, ua="5%") == []                     # % is literal in --ua
    assert _match(conn, node="n2") == ["c2"]
    assert _match(conn, status="4xx") == ["c1"]
    assert _match(conn, method="register,invite") == ["c1", "c2", "c3"]
    assert _match(conn, since="1h") == ["c1", "c3"]
    assert _match(conn, since="3h", until="90m") == ["c2"]
    assert _match(conn) == ["c1", "c2", "c3"]


def _m(method: str, ts: int, cseq: str = "1 INVITE", **kw) -> StoredMessage:
    values = {c: None for c in STORED_COLUMNS} | {"micro_ts": ts, "method": method,
                                                 "cseq": cseq, "callid": "x", "msg": b""}
    values |= kw
    return StoredMessage.from_row(list(values), list(values.values()))


def test_summary_and_call_filters():
    s = summarize([_m("INVITE", 0, from_user="a", to_user="b", node="n1"),
                   _m("401", 10), _m("ACK", 20, "1 ACK"),
                   _m("INVITE", 30, "2 INVITE", node="n2"), _m("180", 40, "2 INVITE"),
                   _m("200", 50, "2 INVITE"), _m("BYE", 90, "3 BYE"),
                   _m("200", 100, "3 BYE")])
    assert (s.final_status, s.outcome, s.first_method) == (200, "answered", "INVITE")
    assert (s.setup_ringing_us, s.setup_answer_us, s.duration_us) == (40, 50, 100)
    assert s.nodes == ("n1", "n2") and (s.from_user, s.to_user) == ("a", "b")
    s = summarize([_m("INVITE", 0), _m("CANCEL", 5, "1 CANCEL"), _m("200", 6, "1 CANCEL")])
    assert (s.final_status, s.outcome) == (None, "cancelled")
    assert summarize([_m("INVITE", 0)]).outcome == "in progress"
    assert summarize([_m("OPTIONS", 0, "1 OPTIONS"), _m("200", 1, "1 OPTIONS")]).outcome \
        == "other"
    q = build_query(status="4xx", method="INVITE")
    assert call_matches(q, ["INVITE"], 486)
    assert not call_matches(q, ["INVITE"], 200)
    assert not call_matches(q, ["REGISTER"], 403)
    assert not call_matches(q, ["INVITE"], None)


def test_session_ids():
    m = _m("INVITE", 0, msg=b"INVITE sip:a SIP/2.0\r\nsession-id: ABCDEF0123456789abcdef0123456789"
                            b";remote=00000000000000000000000000000000\r\n\r\n"
                            b"Session-ID: ffffffffffffffffffffffffffffffff\r\n")
    assert session_ids([m]) == {b"abcdef0123456789abcdef0123456789"}   # body not read
    m = _m("200", 0, msg=b"SIP/2.0 200 OK\r\nSession-ID: " + b"1" * 32 +
           b" ; remote=" + b"2" * 32 + b"\r\n\r\n")
    assert session_ids([m]) == {b"1" * 32, b"2" * 32}


def test_tables_for_a_window():
    day = 86_400_000_000
    assert candidate_names("sip_capture", NOW, NOW) == ["sip_capture"]
    assert candidate_names("s_%Y%m%d", None, None) is None
    assert candidate_names("s_%Y%m%d", NOW - day, NOW + 60) == ["s_20251130", "s_20251201"]
    assert candidate_names("s_%Y%m%d", NOW, None, now_us=NOW + 3 * day) == \
        ["s_20251201", "s_20251202", "s_20251203", "s_20251204"]
    assert candidate_names("h_%Y%m%d%H", NOW, NOW + 2 * 3600 * 10**6) == \
        ["h_2025120108", "h_2025120109", "h_2025120110"]
    assert name_pattern("s_%Y%m%d").fullmatch("s_20251201")
    assert not name_pattern("s_%Y%m%d").fullmatch("s_2025120")
    s = Settings.load(None, {"db_url": "sqlite:///x.db", "table_name": "a|s_%Y%m%d"})
    (src,) = read_sources(s)
    assert src.tables == ("a", "s_%Y%m%d")
    assert present(src, {"a", "s_20251201", "s_20251130", "other", "s_x"}) == \
        ["a", "s_20251130", "s_20251201"]
    (src,) = read_sources(s, NOW, NOW + 10)
    assert src.tables == ("a", "s_20251201")
    assert present(src, {"s_20251130"}) == []               # a missing day is no error
