"""Tables by method (``route``): HOMER 5's per-method tables, checked table by table
against what HOMER 5's Kamailio script would store for the same reference traffic.

HOMER 5's script (sipcapture/homer-config, ``sipcapture/sipcapture.kamailio5``,
``route[STORE]``) calls ``sip_capture("<table>_" + $utimef(%Y%m%d))`` with table
``sip_capture_registration`` when ``$rm == "REGISTER"``, ``sip_capture_call`` when ``$rm``
matches ``(INVITE|UPDATE|BYE|ACK|PRACK|REFER|CANCEL)$`` or is ``INFO`` (or a NOTIFY whose
Event is ``refer;...``), else ``sip_capture_rest``; ``$rm`` of a reply is its CSeq
method. :func:`homer5_table` below is that script, written out independently of the
router.
"""

from __future__ import annotations

import collections
import json
import re

import pytest
from shared_data import REFERENCE, needs_shared
from store_helpers import connect, q, tables

from sipcaptool.config import Settings
from sipcaptool.errors import ConfigError
from sipcaptool.query.tables import read_sources
from sipcaptool.replay import ReplayOptions, replay_files
from sipcaptool.store.router import Router, parse_route, parse_routes, route_table_names

HOMER5_ROUTES = ("INVITE,ACK,BYE,CANCEL,UPDATE,PRACK,REFER,INFO,NOTIFY:refer="
                 "sip_capture_call_%Y%m%d",
                 "REGISTER=sip_capture_registration_%Y%m%d",
                 "*=sip_capture_rest_%Y%m%d")
TS = 1_795_942_364_188_014  # 2026-11-29 08:52:44 UTC


def homer5_table(method: str, cseq: str, msg: str, day: str) -> str:
    """route[STORE] of HOMER 5's sipcapture.kamailio5, for one stored row."""
    rm = method if not method.isdigit() else cseq.split()[-1]
    if rm == "REGISTER":
        table = "sip_capture_registration"
    elif re.search(r"(INVITE|UPDATE|BYE|ACK|PRACK|REFER|CANCEL)$", rm):
        table = "sip_capture_call"
    elif rm == "NOTIFY" and re.search(r"(?im)^Event:.*refer;", msg):
        table = "sip_capture_call"
    elif rm == "INFO":
        table = "sip_capture_call"
    else:
        table = "sip_capture_rest"
    return f"{table}_{day}"


# -- the router ----------------------------------------------------------------------------

def test_route_by_method_and_reply_by_cseq_method():
    r = Router(["sip_capture"], routes=HOMER5_ROUTES)
    assert r.choose("", TS, "INVITE") == "sip_capture_call_20261129"
    assert r.choose("", TS, "REGISTER") == "sip_capture_registration_20261129"
    assert r.choose("", TS, "OPTIONS") == "sip_capture_rest_20261129"
    assert r.choose("", TS, "") == "sip_capture_rest_20261129"  # no method: the rest
    assert Router.route_method(2, "200", "1 REGISTER") == "REGISTER"
    assert Router.route_method(2, "200", "garbled") == ""
    assert Router.route_method(1, "INVITE", "1 INVITE") == "INVITE"
    # methods are case-sensitive, as in SIP and in the script
    assert r.choose("", TS, "invite") == "sip_capture_rest_20261129"
    assert r.routed and r.dated and r.table is None


def _notify(event: str | None, reply: bool = False) -> bytes:
    start = b"SIP/2.0 200 OK" if reply else b"NOTIFY sip:alice@10.0.0.1 SIP/2.0"
    ev = b"" if event is None else b"Event: " + event.encode() + b"\r\n"
    return (start + b"\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n"
            b"From: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>;tag=2\r\n"
            b"Call-ID: xfer@10.0.0.2\r\nCSeq: 2 NOTIFY\r\n" + ev
            + b"Content-Length: 0\r\n\r\n")


def test_notify_of_a_transfer_goes_with_the_calls():
    """HOMER 5 stores a NOTIFY whose Event is refer (a transfer's progress) with the
    calls: the rule NOTIFY:refer does that."""
    from sipcaptool.decode.sip import parse_sip
    r = Router(["sip_capture"], routes=("INVITE,REFER,NOTIFY:refer=call", "*=rest"))
    route = {ev: r.choose("", TS, r.message_route(parse_sip(_notify(ev))))
             for ev in ("refer;id=93809824", "refer", "REFER ;id=1", "presence", None)}
    assert route == {"refer;id=93809824": "call", "refer": "call", "REFER ;id=1": "call",
                     "presence": "rest", None: "rest"}
    # its 200 OK has no Event header: the rest, as in HOMER 5's script
    assert r.choose("", TS, r.message_route(parse_sip(_notify(None, reply=True)))) == "rest"
    # a plain NOTIFY rule takes the other NOTIFYs
    r2 = Router(["t"], routes=("NOTIFY:refer=call", "NOTIFY=notify"))
    assert r2.choose("", TS, r2.message_route(parse_sip(_notify("dialog")))) == "notify"
    with pytest.raises(ConfigError, match="already routed"):
        parse_routes(["NOTIFY:refer=a", "NOTIFY:Refer=b"])
    with pytest.raises(ConfigError, match="not a SIP method"):
        parse_route("NOTIFY:=a")


def test_without_a_star_rule_the_rest_goes_to_table_name():
    r = Router(["sip_capture"], routes=["REGISTER=sip_reg"])
    assert r.choose("", TS, "REGISTER") == "sip_reg"
    assert r.choose("", TS, "INVITE") == "sip_capture"
    assert route_table_names(["sip_capture"], ["REGISTER=sip_reg"]) == ["sip_reg", "sip_capture"]
    assert route_table_names(["sip_capture"], HOMER5_ROUTES) == [
        "sip_capture_call_%Y%m%d", "sip_capture_registration_%Y%m%d",
        "sip_capture_rest_%Y%m%d"]


def test_route_table_lists_use_mt_mode():
    r = Router(["sip_capture"], "hash", routes=["INVITE,ACK=call_a|call_b", "*=rest"])
    assert r.needs_key
    import zlib
    for key in ("abc@h", "x", "1-8823@127.0.0.32"):
        want = ["call_a", "call_b"][zlib.crc32(key.encode()) % 2]
        assert r.choose(key, TS, "INVITE") == want == r.choose(key, TS, "ACK")
        assert r.choose(key, TS, "BYE") == "rest"
    rr = Router(["t"], "round_robin", routes=["INVITE=a|b|c"])
    assert [rr.choose("", TS, "INVITE") for _ in range(4)] == ["a", "b", "c", "a"]
    assert [rr.choose("", TS, "BYE") for _ in range(2)] == ["t", "t"]


@pytest.mark.parametrize("rule, why", [
    ("INVITE", "expected"),
    ("=t", "empty method"),
    ("INVITE,=t", "empty method"),
    ("*,INVITE=t", "stands alone"),
    ("INV ITE=t", "not a SIP method"),
    ("INVITE,INVITE=t", "named twice"),
    ("INVITE=bad-name", "not allowed"),
    ("INVITE=a|", "empty"),
    ("INVITE=t_%s", "table per second"),
])
def test_bad_routes_are_refused_with_the_rule(rule, why):
    with pytest.raises(ConfigError, match=re.escape(why)) as e:
        parse_route(rule)
    assert repr(rule) in str(e.value)


def test_a_method_in_two_rules_is_refused():
    with pytest.raises(ConfigError, match="already routed"):
        parse_routes(["INVITE,ACK=a", "ACK=b"])
    with pytest.raises(ConfigError, match="already routed"):
        parse_routes(["*=a", "*=b"])


def test_route_is_a_setting_from_toml_environment_and_command_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('route = ["REGISTER=sip_reg", "*=sip_rest"]\n')
    s = Settings.load(str(cfg))
    assert s.route == ("REGISTER=sip_reg", "*=sip_rest")
    assert s.origin["route"] == f"file {cfg}"
    s = Settings.load(str(cfg), env={"SIPCAPTOOL_ROUTE": "INVITE=c *=r"})
    assert s.route == ("INVITE=c", "*=r")
    s = Settings.load(str(cfg), cli={"route": ("OPTIONS=o",)}, env={})
    assert s.route == ("OPTIONS=o",) and s.origin["route"] == "command line"
    # an option not given keeps the file's rules
    assert Settings.load(str(cfg), cli={"route": ()}, env={}).route == (
        "REGISTER=sip_reg", "*=sip_rest")
    cfg.write_text('route = ["REGISTER=sip-reg"]\n')
    with pytest.raises(ConfigError, match="route .from file"):
        Settings.load(str(cfg), env={})


def test_search_reads_the_route_tables():
    s = Settings.load(cli={"route": HOMER5_ROUTES, "db_url": "sqlite:///x.db"}, env={})
    day = 86_400_000_000
    (src,) = read_sources(s, TS - day, TS, now_us=TS)
    assert "sip_capture_call_20261129" in src.tables
    assert "sip_capture_registration_20261128" in src.tables
    assert "sip_capture_rest_20261129" in src.tables
    assert "sip_capture" not in src.tables  # the '*' rule takes table_name's place


# -- HOMER 5, table by table, in every database -------------------------------------------

@needs_shared("reference")
@pytest.mark.parametrize("capture", ["siptrace_hepv3_udp", "siptrace_hepv2_udp"])
def test_homer5_layout_table_by_table(any_db_url, capture):
    conformance = REFERENCE / "conformance"
    kamailio_rows = [json.loads(line) for line in
                     (conformance / f"{capture}.rows.mysql.jsonl").read_text().splitlines()]
    want: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in kamailio_rows:
        day = r["date"][:10].replace("-", "")
        want[homer5_table(r["method"], r["cseq"], r["msg"], day)][
            (r["callid"], r["method"], r["cseq"], r["micro_ts"])] += 1
    assert len(want) == 3  # the traffic has calls, registrations and the rest

    s = Settings.load(cli={"db_url": any_db_url, "route": HOMER5_ROUTES}, env={})
    report = replay_files([str(conformance / f"{capture}.pcap")], s,
                          ReplayOptions(foreground_writer=True), handle_signals=False)
    assert report.stats["dropped:db-error"] == 0
    have_tables = tables(any_db_url)
    conn = connect(any_db_url)
    try:
        got: dict[str, collections.Counter] = {}
        for table in want:
            assert table in have_tables
            cur = conn.cursor()
            cols = ", ".join(q(any_db_url, c) for c in ("callid", "method", "cseq",
                                                        "micro_ts"))
            cur.execute(f"SELECT {cols} FROM {q(any_db_url, table)}")
            got[table] = collections.Counter(tuple(r) for r in cur.fetchall())
    finally:
        conn.close()
    for table in want:
        assert got[table] == want[table], table
    assert not {t for t in have_tables if t.startswith("sip_capture")} - set(want)
    assert sum(sum(c.values()) for c in got.values()) == len(kamailio_rows)


def test_pipeline_routes_a_transfer_notify_into_the_call_table(sqlite_url):
    from sipcaptool.pipeline import Pipeline
    from sipcaptool.record import AF_INET, CapturedMessage
    from sipcaptool.stats import Stats
    s = Settings.load(cli={"db_url": sqlite_url, "route": HOMER5_ROUTES,
                           "spool_dir": "none"}, env={})
    p = Pipeline(s, Stats(), background=False, use_spool=False)
    try:
        for ev in ("refer;id=1", "dialog"):
            p.submit(CapturedMessage(ts_us=TS, src_ip="10.0.0.2", src_port=5060,
                                     dst_ip="10.0.0.1", dst_port=5060, proto=1,
                                     family=AF_INET, payload=_notify(ev)))
    finally:
        p.close()
    conn = connect(sqlite_url)
    try:
        got = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
               for t in ("sip_capture_call_20261129", "sip_capture_rest_20261129")}
    finally:
        conn.close()
    assert got == {"sip_capture_call_20261129": 1, "sip_capture_rest_20261129": 1}


def test_config_check_reports_bad_routes(tmp_path):
    from sipcaptool.commands.configcmd import check_file
    cfg = tmp_path / "c.toml"
    cfg.write_text('route = ["INVITE=a", "INVITE,ACK=b"]\n[hep]\nroute = ["x y=z"]\n')
    problems = check_file(str(cfg))
    assert len(problems) == 2
    assert "'INVITE' is already routed by 'INVITE=a'" in problems[0]
    assert problems[1].startswith("[hep] route: bad route 'x y=z'")
    cfg.write_text('route = ["' + '", "'.join(HOMER5_ROUTES) + '"]\n')
    assert check_file(str(cfg)) == []
