"""`sipcaptool search` and the query layer against real databases.

Captures are replayed with the real command (`sipcaptool replay`, a subprocess) into
each database (SQLite, MariaDB, PostgreSQL), then read back with `find_calls` /
`load_calls` and the `search` command, and compared with what was replayed: the
project's own captures (tests/pcaps, examples/call.pcap, their expected rows) and a
capture made here with the project's pcap writer holding the cases the filters and the
legs need (X-CID b-legs, RFC 7989 Session-ID, busy, cancelled, challenged REGISTER,
P-Asserted-Identity, two days).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from shared_data import CORPUS, needs_shared

from sipcaptool.cli import cli
from sipcaptool.config import Settings
from sipcaptool.query.calls import find_calls, load_calls, session_ids
from sipcaptool.query.filters import build_query
from sipcaptool.testing.pcapgen import PcapWriter, udp4_frame

ROOT = Path(__file__).resolve().parent.parent
PCAPS = sorted((ROOT / "tests" / "pcaps").glob("*.pcap*"))
PCAPS = [p for p in PCAPS if not p.name.endswith(".jsonl")]
T0 = 1_764_576_000_000_000          # 2025-12-01 08:00:00 UTC
DAY = 86_400_000_000
SID_A = "a" * 31 + "1"
SID_D = "d" * 31 + "2"


def replay(db_url: str, *files: Path, extra: tuple[str, ...] = ()) -> dict:
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "-q",
                        "--db", db_url, *extra, *map(str, files)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def settings(db_url: str, **kw: object) -> Settings:
    return Settings.load(None, {"db_url": db_url, **kw})


def search(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["search", *args], catch_exceptions=False)
    return r.exit_code, r.output


# -- a capture with the cases the filters need ---------------------------------------

def _msg(first: str, *, callid: str, frm: str, to: str, cseq: str, ruri_user: str = "",
         extra: str = "", to_tag: str = "") -> bytes:
    tt = f";tag={to_tag}" if to_tag else ""
    return (f"{first}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{abs(hash(first + cseq + callid))}\r\n"
            f"From: <sip:{frm}@example.com>;tag=f{callid[:6]}\r\nTo: <sip:{to}@example.com>{tt}\r\n"
            f"Call-ID: {callid}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def _dialog(callid: str, frm: str, to: str, t: int, a: str, b: str, codes: list[int],
            extra: str = "", ua: str = "Phone/1.0", cancel: bool = False,
            bye: bool = True) -> list[tuple[int, str, str, bytes]]:
    """INVITE a->b, the replies ``codes`` b->a, then ACK (and BYE/200 when answered)."""
    inv = _msg(f"INVITE sip:{to}@example.com SIP/2.0", callid=callid, frm=frm, to=to,
               cseq="1 INVITE", extra=f"User-Agent: {ua}\r\n{extra}")
    out = [(t, a, b, inv)]
    reasons = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
               486: "Busy Here", 487: "Request Terminated", 503: "Service Unavailable"}
    for i, code in enumerate(codes, 1):
        if cancel and code == 487:
            out.append((t + i * 1000 - 500, a, b, _msg(
                f"CANCEL sip:{to}@example.com SIP/2.0", callid=callid, frm=frm, to=to,
                cseq="1 CANCEL")))
            out.append((t + i * 1000 - 400, b, a, _msg(
                "SIP/2.0 200 OK", callid=callid, frm=frm, to=to, cseq="1 CANCEL")))
        out.append((t + i * 1000, b, a, _msg(
            f"SIP/2.0 {code} {reasons[code]}", callid=callid, frm=frm, to=to, cseq="1 INVITE",
            to_tag="" if code == 100 else "tt", extra=extra if code == 200 else "")))
    n = len(codes) + 1
    out.append((t + n * 1000, a, b, _msg(f"ACK sip:{to}@example.com SIP/2.0", callid=callid,
                                         frm=frm, to=to, cseq="1 ACK", to_tag="tt")))
    if bye and codes and codes[-1] == 200:
        out.append((t + 5_000_000, a, b, _msg(f"BYE sip:{to}@example.com SIP/2.0",
                                              callid=callid, frm=frm, to=to, cseq="2 BYE",
                                              to_tag="tt")))
        out.append((t + 5_001_000, b, a, _msg("SIP/2.0 200 OK", callid=callid, frm=frm,
                                              to=to, cseq="2 BYE", to_tag="tt")))
    return out


def scenario() -> list[tuple[int, str, str, bytes]]:
    msgs = []
    # A: 1001 -> 2002, answered, Session-ID; B: its b-leg (X-CID), proxy 10.0.0.9 -> 10.0.0.3
    msgs += _dialog("call-A@x", "1001", "2002", T0, "10.0.0.1", "10.0.0.9", [100, 180, 200],
                    extra=f"Session-ID: {SID_A};remote={'0' * 32}\r\n", ua="Alpha/1.0")
    msgs += _dialog("call-B@x", "1001", "2002", T0 + 300, "10.0.0.9", "10.0.0.3",
                    [100, 180, 200], extra="X-CID: call-A@x\r\n", ua="Proxy/2.0")
    # C: b-leg of B (second level)
    msgs += _dialog("call-C@x", "1001", "2002", T0 + 600, "10.0.0.3", "10.0.0.4", [100, 200],
                    extra="X-CID: call-B@x\r\n", ua="Proxy/2.0")
    # D and E share a Session-ID, no X-CID
    msgs += _dialog("call-D@x", "1005", "2006", T0 + 60_000_000, "10.0.0.1", "10.0.0.9",
                    [200], extra=f"Session-ID: {SID_D};remote={'0' * 32}\r\n")
    msgs += _dialog("call-E@x", "1005", "2006", T0 + 60_000_500, "10.0.0.9", "10.0.0.3",
                    [200], extra=f"Session-ID: {'e' * 32};remote={SID_D}\r\n")
    # F busy, G cancelled, H 503 -- all INVITEs from 1003
    msgs += _dialog("call-F@x", "1003", "2002", T0 + 120_000_000, "10.0.0.1", "10.0.0.9",
                    [100, 486], ua="Zoiper rc1")
    msgs += _dialog("call-G@x", "1003", "2004", T0 + 180_000_000, "10.0.0.1", "10.0.0.9",
                    [100, 180, 487], cancel=True)
    msgs += _dialog("call-H@x", "1003", "2002", T0 + 240_000_000, "10.0.0.1", "10.0.0.9",
                    [503])
    # P: P-Asserted-Identity user 7777 (from anonymous)
    msgs += _dialog("call-P@x", "anonymous", "2002", T0 + 300_000_000, "10.0.0.1",
                    "10.0.0.9", [200],
                    extra="P-Asserted-Identity: <sip:7777@example.com>\r\n")
    # R: REGISTER challenged then accepted (auth user 1004), same Call-ID
    reg = "REGISTER sip:example.com SIP/2.0"
    auth = ('Authorization: Digest username="1004", realm="example.com", nonce="n", '
            'uri="sip:example.com", response="0123456789abcdef0123456789abcdef"\r\n')
    t = T0 + 360_000_000
    msgs += [(t, "10.0.0.5", "10.0.0.9", _msg(reg, callid="reg-R@x", frm="1004", to="1004",
                                              cseq="1 REGISTER")),
             (t + 1000, "10.0.0.9", "10.0.0.5", _msg("SIP/2.0 401 Unauthorized",
                                                     callid="reg-R@x", frm="1004",
                                                     to="1004", cseq="1 REGISTER")),
             (t + 2000, "10.0.0.5", "10.0.0.9", _msg(reg, callid="reg-R@x", frm="1004",
                                                     to="1004", cseq="2 REGISTER",
                                                     extra=auth)),
             (t + 3000, "10.0.0.9", "10.0.0.5", _msg("SIP/2.0 200 OK", callid="reg-R@x",
                                                     frm="1004", to="1004",
                                                     cseq="2 REGISTER"))]
    # N: the next day, 1001 again
    msgs += _dialog("call-N@x", "1001", "3003", T0 + DAY, "10.0.0.1", "10.0.0.9", [200],
                    bye=False)
    return sorted(msgs, key=lambda m: m[0])


def write_scenario(path: Path) -> list[tuple[int, str, str, bytes]]:
    msgs = scenario()
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, a, b, payload in msgs:
            w.write(ts, udp4_frame(a, 5060, b, 5060, payload))
    return msgs


@pytest.fixture
def scenario_pcap(tmp_path: Path) -> tuple[Path, list[tuple[int, str, str, bytes]]]:
    p = tmp_path / "scenario.pcap"
    return p, write_scenario(p)


def ids(calls) -> list[str]:
    return sorted(c.callid for c in calls)


# -- the project's captures: everything replayed is found again ------------------------

def expected_rows() -> list[dict]:
    rows = []
    for p in PCAPS:
        exp = p.with_name(p.name.split(".")[0] + ".expected.jsonl")
        rows += [json.loads(line) for line in exp.read_text().splitlines() if line.strip()]
    return rows


def test_project_captures_read_back(any_db_url):
    replay(any_db_url, *PCAPS, ROOT / "examples" / "call.pcap")
    s = settings(any_db_url)
    calls = {c.callid: c for c in find_calls(s, build_query())}
    exp = expected_rows()
    by_call = Counter(r["callid"] for r in exp)
    assert len(calls) == len(by_call) + 5     # + the five sipp calls of examples/call.pcap
    for cid, n in by_call.items():
        assert calls[cid].summary is not None and calls[cid].summary.messages == n
    for r in exp:
        got = [m for m in calls[r["callid"]].messages if m.micro_ts == r["micro_ts"]
               and m.method == str(r["method"])]
        assert got, r
        m = got[0]
        assert (m.source_ip, m.source_port, m.destination_ip, m.destination_port, m.proto) \
            == (r["source_ip"], r["source_port"], r["destination_ip"],
                r["destination_port"], r["proto"])
        assert len(m.msg) == r["msg_len"]
    # each Call-ID, source address and exact time window finds its call again
    for cid in by_call:
        first = calls[cid].messages[0]
        assert ids(find_calls(s, build_query(call_id=cid))) == [cid]
        assert cid in ids(find_calls(s, build_query(src=f"{first.source_ip}")))
        hit = find_calls(s, build_query(since=f"@{first.micro_ts // 1_000_000}",
                                        until=f"@{first.micro_ts // 1_000_000 + 1}"))
        assert cid in ids(hit)
    # the sipp calls: answered INVITEs, 6 messages each; load_calls reads the same
    sipp = sorted(c for c in calls if c.endswith("-12284@127.0.0.1"))
    assert len(sipp) == 5
    loaded = load_calls(s, sipp)
    assert [c.callid for c in loaded] == sipp
    assert all(c.summary.outcome == "answered" and c.summary.messages == 6 for c in loaded)


# -- every filter on the scenario -----------------------------------------------------

def test_filters(any_db_url, scenario_pcap):
    pcap, msgs = scenario_pcap
    out = replay(any_db_url, pcap)
    assert out["stored_total"] == len(msgs)
    s = settings(any_db_url)

    def q(**kw):
        return ids(find_calls(s, build_query(now_us=T0 + 2 * DAY, **kw)))

    every = {"call-A@x", "call-B@x", "call-C@x", "call-D@x", "call-E@x", "call-F@x",
             "call-G@x", "call-H@x", "call-P@x", "reg-R@x", "call-N@x"}
    assert set(q()) == every
    assert q(call_id="call-F@x,call-G@x") == ["call-F@x", "call-G@x"]
    assert q(call_id="call-%") == sorted(every - {"reg-R@x"})
    assert q(call_id="nope") == []
    assert q(user="1001") == ["call-A@x", "call-B@x", "call-C@x", "call-N@x"]
    assert q(user="2004") == ["call-G@x"]                  # as callee
    assert q(user="7777") == ["call-P@x"]                  # P-Asserted-Identity
    assert q(user="1004") == ["reg-R@x"]
    assert q(user="100%") == sorted({"call-A@x", "call-B@x", "call-C@x", "call-D@x",
                                     "call-E@x", "call-F@x", "call-G@x", "call-H@x",
                                     "reg-R@x", "call-N@x"})
    assert q(from_user="1003") == ["call-F@x", "call-G@x", "call-H@x"]
    assert q(to_user="2006,3003") == ["call-D@x", "call-E@x", "call-N@x"]
    assert q(from_user="2002") == []
    assert q(method="register") == ["reg-R@x"]
    assert q(method="CANCEL") == ["call-G@x"]
    assert q(status="486") == ["call-F@x"]
    assert q(status="4xx,5xx", method="INVITE") == ["call-F@x", "call-G@x", "call-H@x"]
    assert q(status="200", user="1004") == ["reg-R@x"]     # 401 then 200: final 200
    assert q(status="401") == []
    assert q(src="10.0.0.3") == ["call-B@x", "call-C@x", "call-E@x"]
    assert q(src="10.0.0.3:5060", dst="10.0.0.4") == ["call-C@x"]
    assert q(dst="10.0.0.5:5060") == ["reg-R@x"]
    assert q(src="10.0.0.3:5061") == []
    assert q(ua="Zoiper") == ["call-F@x"]
    assert q(ua="proxy/") == ["call-B@x", "call-C@x"]      # case ignored everywhere
    assert q(ua="Proxy/") == ["call-B@x", "call-C@x"]
    assert q(node="homer01") == sorted(every)
    assert q(node="other") == []
    day1 = "2025-12-01 07:59:59"
    assert q(since=day1, until="2025-12-01 08:00:01") == ["call-A@x", "call-B@x", "call-C@x"]
    assert q(since="2025-12-02") == ["call-N@x"]
    assert q(since="2025-12-02 10:00+02:00") == ["call-N@x"]
    assert q(since="2025-12-02 09:00", tz="Europe/Paris") == ["call-N@x"]
    assert q(since="2025-12-02 09:01", tz="Europe/Paris") == []
    assert q(user="1001", since="1d") == ["call-N@x"]      # now = T0 + 2 days

    # the summaries
    by = {c.callid: c for c in find_calls(s, build_query())}
    a = by["call-A@x"].summary
    assert (a.first_method, a.final_status, a.outcome) == ("INVITE", 200, "answered")
    assert (a.setup_ringing_us, a.setup_answer_us) == (2000, 3000)
    assert a.duration_us == 5_001_000 and a.messages == 7
    assert (a.from_user, a.to_user) == ("1001", "2002")
    assert by["call-F@x"].summary.outcome == "failed"
    assert by["call-F@x"].summary.final_status == 486
    assert by["call-G@x"].summary.outcome == "cancelled"
    assert by["call-H@x"].summary.setup_ringing_us is None
    assert by["reg-R@x"].summary.final_status == 200
    assert by["call-N@x"].summary.outcome == "answered"

    # --limit counts calls (the most recent ones)
    got = find_calls(s, build_query(user="1001"), limit=2)
    assert ids(got) == ["call-C@x", "call-N@x"]
    assert all(len(c.messages) > 1 for c in got)
    got = find_calls(s, build_query(method="INVITE", status="4xx,5xx"), limit=1)
    assert ids(got) == ["call-H@x"]


def test_legs(any_db_url, scenario_pcap):
    pcap, _msgs = scenario_pcap
    replay(any_db_url, pcap)
    s = settings(any_db_url)
    one = {c.callid: c for c in find_calls(s, build_query(call_id="call-B@x"), legs=1)}
    assert list(one) == ["call-B@x"]
    assert sorted(one["call-B@x"].legs) == ["call-A@x", "call-C@x"]   # both directions
    (a,) = find_calls(s, build_query(call_id="call-A@x"), legs=1)
    assert a.legs == ["call-B@x"]
    (a,) = find_calls(s, build_query(call_id="call-A@x"), legs=2)
    assert a.legs == ["call-B@x", "call-C@x"]
    assert ids(find_calls(s, build_query(call_id="call-A@x"), legs=2, include_legs=True)) \
        == ["call-A@x", "call-B@x", "call-C@x"]
    (d,) = find_calls(s, build_query(call_id="call-D@x"), legs=1)
    assert d.legs == ["call-E@x"]                                    # Session-ID
    (f,) = find_calls(s, build_query(call_id="call-F@x"), legs=3)
    assert f.legs == []
    loaded = load_calls(s, ["call-E@x"], legs=1)
    assert [c.callid for c in loaded] == ["call-E@x", "call-D@x"]
    assert loaded[0].legs == ["call-D@x"]
    assert session_ids(loaded[1].messages) == {SID_D.encode()}


def test_search_command(any_db_url, scenario_pcap):
    pcap, _msgs = scenario_pcap
    replay(any_db_url, pcap)
    code, out = search("--db", any_db_url, "--user", "1001")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "DURATION", "FROM"]
    assert len(lines) == 5 and lines[1].endswith("call-A@x")
    assert "2025-12-01 08:00:00.000" in lines[1] and "answered" in lines[1]
    assert lines[1].split()[-2] == "1"         # one leg (call-B by X-CID)
    code, out = search("--db", any_db_url, "--call-id", "call-B@x", "--legs", "--json")
    doc = json.loads(out)
    assert doc["count"] == 1
    assert [c["call_id"] for c in doc["calls"]] == ["call-B@x", "call-A@x", "call-C@x"]
    assert doc["calls"][1]["leg_of"] == "call-B@x"
    assert doc["calls"][0]["setup_answer_us"] == 3000
    code, out = search("--db", any_db_url, "--status", "4xx", "--csv", "--tz", "+01:00")
    rows = out.splitlines()
    assert rows[0].startswith("first_time,") and len(rows) == 3
    assert rows[1].startswith("2025-12-01T09:02:00+01:00,") and "call-F@x" in rows[1]
    code, out = search("--db", any_db_url, "--call-id", "unknown@nowhere")
    assert (code, out.strip()) == (0, "no call found")
    code, out = search("--db", any_db_url, "--user", "1001", "--limit", "1")
    lines = out.splitlines()
    assert code == 0 and lines[1].endswith("call-N@x") and "more match" in lines[-1]


def test_bad_input_exit_codes(sqlite_url, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sipcaptool", "search", *args],
                              capture_output=True, text=True, timeout=60)
    for args, word in ((["--since", "yesterday"], "--since"),
                       (["--until", "2025-13-01"], "--until"),
                       (["--status", "4x"], "--status"),
                       (["--src", "10.0.0.300"], "--src"),
                       (["--dst", "10.0.0.1:70000"], "--dst"),
                       (["--user", "a,,b"], "--user"),
                       (["--tz", "Mars/Olympus"], "--tz"),
                       (["--since", "1h", "--until", "2h"], "--until")):
        p = run("--db", sqlite_url, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert word in p.stderr and "allowed" in p.stderr or "before" in p.stderr, p.stderr
    p = run("--db", "mysql://root@127.0.0.1:1/nothing", "--user", "1")
    assert p.returncode == 4 and "cannot connect" in p.stderr
    p = run("--db", "sqlite:///" + str(tmp_path / "missing.db"))
    assert p.returncode == 4 and not (tmp_path / "missing.db").exists()


def test_strftime_tables_read_in_window(any_db_url, scenario_pcap):
    pcap, _msgs = scenario_pcap
    name = "sipq_%Y%m%d"
    replay(any_db_url, pcap, extra=("--table-name", name))
    s = settings(any_db_url, table_name=name)
    assert set(ids(find_calls(s, build_query()))) >= {"call-A@x", "call-N@x"}
    got = find_calls(s, build_query(since="2025-12-02 00:00", until="2025-12-02 23:00"))
    assert ids(got) == ["call-N@x"] and got[0].messages[0].table == "sipq_20251202"
    got = find_calls(s, build_query(user="1001", since="2025-11-20", until="2025-11-30"))
    assert got == []                                         # no table of those days
    assert ids(load_calls(s, ["call-N@x", "call-A@x"])) == ["call-A@x", "call-N@x"]


def test_capture_modes_two_databases(sqlite_url, tmp_path, scenario_pcap):
    pcap, _msgs = scenario_pcap
    other = "sqlite:///" + str(tmp_path / "other.db")
    replay(sqlite_url, pcap)
    # a second database holding only examples/call.pcap, in a table pair a|b
    replay(other, ROOT / "examples" / "call.pcap", extra=("--table-name", "ta|tb"))
    modes = (f"one=>db_url={sqlite_url};table_name=sip_capture;",
             f"two=>db_url={other};table_name=ta|tb;")
    s = Settings.load(None, {"capture_mode": modes})
    found = ids(find_calls(s, build_query()))
    assert "call-A@x" in found and "1-12284@127.0.0.1" in found and len(found) == 16
    code, out = search("--capture-mode", modes[0], "--capture-mode", modes[1],
                       "--call-id", "3-12284@127.0.0.1", "--json")
    assert code == 0 and json.loads(out)["calls"][0]["tables"] in (["ta"], ["tb"], ["ta", "tb"])


def test_kamailio_made_table_reads_the_same(mysql_url, scenario_pcap):
    """A table created from Kamailio's own MySQL schema (msg as varchar, fewer columns)."""
    import pymysql

    from sipcaptool.store.url import parse_db_url

    pcap, msgs = scenario_pcap
    u = parse_db_url(mysql_url)
    conn = pymysql.connect(host=u.host, port=u.port, user=u.user or "root",
                           password=u.password or "", database=u.database)
    try:
        with conn.cursor() as cur:
            cur.execute(KAMAILIO_MYSQL)
        conn.commit()
    finally:
        conn.close()
    replay(mysql_url, pcap)
    s = settings(mysql_url)
    (a,) = find_calls(s, build_query(call_id="call-A@x"), legs=1)
    assert a.summary.outcome == "answered" and a.legs == ["call-B@x"]
    assert a.messages[0].msg == next(m[3] for m in msgs if b"call-A@x" in m[3])


# Kamailio 5.x modules/sipcapture/sql/schema_data.sql (sip_capture), as shipped
KAMAILIO_MYSQL = """
CREATE TABLE IF NOT EXISTS `sip_capture` (
  `id` BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  `date` DATETIME NOT NULL DEFAULT '1900-01-01 00:00:01',
  `micro_ts` BIGINT(18) NOT NULL DEFAULT '0',
  `method` VARCHAR(50) NOT NULL DEFAULT '',
  `reply_reason` VARCHAR(100) NOT NULL,
  `ruri` VARCHAR(200) NOT NULL DEFAULT '',
  `ruri_user` VARCHAR(100) NOT NULL DEFAULT '',
  `ruri_domain` VARCHAR(150) NOT NULL DEFAULT '',
  `from_user` VARCHAR(100) NOT NULL DEFAULT '',
  `from_domain` VARCHAR(150) NOT NULL DEFAULT '',
  `from_tag` VARCHAR(64) NOT NULL DEFAULT '',
  `to_user` VARCHAR(100) NOT NULL DEFAULT '',
  `to_domain` VARCHAR(150) NOT NULL DEFAULT '',
  `to_tag` VARCHAR(64) NOT NULL,
  `pid_user` VARCHAR(100) NOT NULL DEFAULT '',
  `contact_user` VARCHAR(120) NOT NULL,
  `auth_user` VARCHAR(120) NOT NULL,
  `callid` VARCHAR(120) NOT NULL DEFAULT '',
  `callid_aleg` VARCHAR(120) NOT NULL DEFAULT '',
  `via_1` VARCHAR(256) NOT NULL,
  `via_1_branch` VARCHAR(80) NOT NULL,
  `cseq` VARCHAR(25) NOT NULL,
  `diversion` VARCHAR(256) NOT NULL,
  `reason` VARCHAR(200) NOT NULL,
  `content_type` VARCHAR(256) NOT NULL,
  `auth` VARCHAR(256) NOT NULL,
  `user_agent` VARCHAR(256) NOT NULL,
  `source_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `source_port` INT(10) NOT NULL,
  `destination_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `destination_port` INT(10) NOT NULL,
  `contact_ip` VARCHAR(60) NOT NULL,
  `contact_port` INT(10) NOT NULL,
  `originator_ip` VARCHAR(60) NOT NULL DEFAULT '',
  `originator_port` INT(10) NOT NULL,
  `correlation_id` VARCHAR(256) NOT NULL,
  `custom_field1` VARCHAR(256) NOT NULL,
  `custom_field2` VARCHAR(256) NOT NULL,
  `custom_field3` VARCHAR(256) NOT NULL,
  `proto` INT(5) NOT NULL,
  `family` INT(1) DEFAULT NULL,
  `rtp_stat` VARCHAR(256) NOT NULL,
  `type` INT(2) NOT NULL,
  `node` VARCHAR(125) NOT NULL,
  `msg` VARCHAR(1500) NOT NULL,
  PRIMARY KEY (`id`,`date`),
  KEY `ruri_user` (`ruri_user`),
  KEY `from_user` (`from_user`),
  KEY `to_user` (`to_user`),
  KEY `pid_user` (`pid_user`),
  KEY `auth_user` (`auth_user`),
  KEY `callid_aleg` (`callid_aleg`),
  KEY `date` (`date`),
  KEY `callid` (`callid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8
"""


# -- the shared corpus: real captures from elsewhere ----------------------------------

@needs_shared("corpus")
def test_corpus_calls_found_again(any_db_url):
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "-q",
                        "--db", any_db_url, *map(str, files)],
                       capture_output=True, text=True, timeout=300)
    stored = json.loads(p.stdout)["stored"]["sip_capture"]   # (HEP logs go elsewhere)
    assert stored > 900, p.stderr
    s = settings(any_db_url)
    calls = find_calls(s, build_query())
    assert sum(len(c.messages) for c in calls) == stored
    assert len({m.callid for c in calls for m in c.messages}) == len(calls)
    for c in calls:
        assert all(m.callid == c.callid for m in c.messages)
        assert [m.micro_ts for m in c.messages] == sorted(m.micro_ts for m in c.messages)
    # each call is found by its Call-ID, and by a user of its first request in its second
    for c in calls[:: max(1, len(calls) // 40)]:
        (again,) = find_calls(s, build_query(call_id=c.callid.replace(",", "\\,")))
        assert again.callid == c.callid and len(again.messages) == len(c.messages)
        req = next((m for m in c.messages if m.is_request and m.from_user), None)
        if req is None:
            continue
        sec = req.micro_ts // 1_000_000
        hits = find_calls(s, build_query(user=req.from_user.replace(",", "\\,"), since=f"@{sec}",
                                         until=f"@{sec + 1}"))
        assert c.callid in {h.callid for h in hits}
