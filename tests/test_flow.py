"""``sipcaptool flow``: the ladder of stored calls, checked against the rows they came from.

Real captures (examples/call.pcap: five sipp calls; tests/pcaps/*) are replayed with the
real ``sipcaptool replay`` into SQLite (and every database for one end-to-end test),
then drawn; arrows, labels, columns, times and marks are compared with the rows read
back with plain SQL. The SDP reader gets whole-input and hypothesis tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_data import CORPUS, needs_shared
from store_helpers import read_rows

from sipcaptool.config import Settings
from sipcaptool.query.calls import load_calls
from sipcaptool.query.model import STORED_COLUMNS, Call, StoredMessage
from sipcaptool.render.flow import build_ladder, endpoint, fmt_delta, parse_alias
from sipcaptool.render.html import render_html
from sipcaptool.render.json import ladder_dict
from sipcaptool.render.sdp import Media, body_of, has_sdp, parse_sdp
from sipcaptool.render.svg import render_svg
from sipcaptool.render.text import render_full, render_text
from sipcaptool.testing.pcapgen import PcapWriter, sip_call, udp4_frame

ROOT = Path(__file__).resolve().parents[1]
CALL_PCAP = ROOT / "examples" / "call.pcap"
PCAPS = sorted(str(p) for p in (ROOT / "tests" / "pcaps").glob("*.pcap*"))
SIPP = [f"{n}-12284@127.0.0.1" for n in range(1, 6)]
ANSI = re.compile(r"\x1b\[")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("COLUMNS", None)   # piped output has no width unless a test gives one
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=60)


def replay(url: str, *files: str) -> None:
    p = run("replay", "-q", "--db", url, *files)
    assert p.returncode == 0, p.stderr


def rows_by_call(url: str) -> dict[str, list[StoredMessage]]:
    """The stored rows, read with plain SQL (not the query layer), per Call-ID in time
    order (ties in id order)."""
    out: dict[str, list[StoredMessage]] = defaultdict(list)
    for r in read_rows(url, "sip_capture", STORED_COLUMNS):
        m = StoredMessage.from_row(STORED_COLUMNS, r)
        out[m.callid].append(m)
    for msgs in out.values():
        msgs.sort(key=lambda m: m.micro_ts)
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """examples/call.pcap and every tests/pcaps capture, replayed into one SQLite file."""
    url = "sqlite:///" + str(tmp_path_factory.mktemp("flow") / "capture.db")
    replay(url, str(CALL_PCAP), *PCAPS)
    return url


def calls_of(url: str, *callids: str, legs: int = 0) -> list[Call]:
    return load_calls(Settings.load(None, {"db_url": url}), list(callids), legs=legs)


def label_of(m: StoredMessage) -> str:
    return m.method if m.is_request else f"{m.method} {m.reply_reason}".strip()


# -- the ladder model against the rows ----------------------------------------------------

def test_every_stored_call_draws_one_arrow_per_row(db: str) -> None:
    rows = rows_by_call(db)
    assert len(rows) >= 10 and set(SIPP) <= set(rows)
    for callid, msgs in rows.items():
        ladder = build_ladder(calls_of(db, callid))
        assert len(ladder.arrows) == len(msgs), callid
        assert [a.label for a in ladder.arrows] == [label_of(m) for m in msgs]
        for a, m in zip(ladder.arrows, msgs, strict=True):
            assert ladder.columns[a.src].key == endpoint(m.source_ip, m.source_port)
            assert ladder.columns[a.dst].key == endpoint(m.destination_ip, m.destination_port)
            assert a.time_us == m.micro_ts
            assert a.delta_first_us == m.micro_ts - msgs[0].micro_ts
        times = [a.time_us for a in ladder.arrows]
        assert times == sorted(times)
        assert [a.delta_prev_us for a in ladder.arrows[1:]] == \
            [b - a for a, b in zip(times, times[1:], strict=False)]


def test_sipp_call_ladder_columns_labels_sdp_and_summary(db: str) -> None:
    (call,) = calls_of(db, SIPP[0])
    ladder = build_ladder([call])
    assert [c.key for c in ladder.columns] == ["127.0.0.1:15061", "127.0.0.1:15060"]
    assert [a.label for a in ladder.arrows] == \
        ["INVITE", "180 Ringing", "200 OK", "ACK", "BYE", "200 OK"]
    assert [(a.src, a.dst) for a in ladder.arrows] == [(0, 1), (1, 0), (1, 0), (0, 1), (0, 1), (1, 0)]
    assert [a.sdp for a in ladder.arrows] == [True, False, True, False, False, False]
    assert ladder.arrows[0].media == (Media("audio", "127.0.0.1", 6004, "RTP/AVP",
                                            ("PCMU/8000",), "sendrecv"),)
    assert ladder.arrows[2].media_summary == "audio 127.0.0.1:6000 PCMU"
    assert not any(a.retransmission for a in ladder.arrows)
    # µs kept: 180 came 155 µs after the INVITE (rows: ...160415 and ...160570)
    assert ladder.arrows[1].delta_first_us == 155
    assert fmt_delta(ladder.arrows[1].delta_first_us) == "+0.000155"
    text = render_text(ladder)
    assert "answered" in text and "200 OK" in text and "ringing after 155 µs" in text
    assert "audio 127.0.0.1:6004 PCMU" in text and "+0.000155" in text


def test_by_host_merges_ports_and_aliases_name_columns(db: str) -> None:
    calls = calls_of(db, SIPP[0])
    ladder = build_ladder(calls, by_host=True, aliases={"127.0.0.1": "sipp"})
    assert [(c.key, c.label) for c in ladder.columns] == [("127.0.0.1", "sipp")]
    assert all(a.src == a.dst == 0 for a in ladder.arrows)
    ladder = build_ladder(calls, aliases=dict([parse_alias("127.0.0.1:15061=uac"),
                                               parse_alias("127.0.0.1=proxy")]))
    assert [c.label for c in ladder.columns] == ["uac", "proxy:15060"]
    text = render_text(ladder)
    assert "uac" in text and "127.0.0.1:15061" in text   # the address stays under the alias


def test_parse_alias() -> None:
    assert parse_alias("10.0.0.1=pbx") == ("10.0.0.1", "pbx")
    assert parse_alias("10.0.0.1:5062=pbx b") == ("10.0.0.1:5062", "pbx b")
    assert parse_alias("[2001:db8::1]:5060=v6") == ("[2001:db8::1]:5060", "v6")
    assert parse_alias("2001:db8::1=v6") == ("2001:db8::1", "v6")
    for bad in ("10.0.0.1", "=x", "10.0.0.1=", "10.0.0.1:x=y", "[::1]x=y"):
        with pytest.raises(ValueError):
            parse_alias(bad)


def test_the_same_message_twice_is_marked_as_a_retransmission(db: str) -> None:
    """nanosecond.pcap and nanosecond-pcapng.pcapng hold the same OPTIONS and 200;
    replayed both, each is stored twice (same bytes, same hop): the second is marked."""
    ladder = build_ladder(calls_of(db, "opt-7@10.0.2.1"))
    assert [a.label for a in ladder.arrows] == ["OPTIONS", "OPTIONS", "200 OK", "200 OK"]
    assert [a.retransmission for a in ladder.arrows] == [False, True, False, True]
    assert "OPTIONS ↻" in render_text(ladder)
    assert render_text(ladder, unicode=False).count("(re)") == 3   # 2 arrows + the legend


def test_several_calls_merge_in_time_order_with_ipv6_and_tcp(db: str) -> None:
    ids = ["call-3@[2001:db8::1]", "call-5@10.0.0.1", SIPP[1]]
    calls = calls_of(db, *ids)
    rows = rows_by_call(db)
    ladder = build_ladder(calls)
    assert len(ladder.arrows) == sum(len(rows[c]) for c in ids)
    times = [a.time_us for a in ladder.arrows]
    assert times == sorted(times)
    keys = {c.key for c in ladder.columns}
    assert "[2001:db8::1]:5060" in keys and "10.1.0.1:40000" in keys
    assert {ladder.calls[a.call_index].callid for a in ladder.arrows} == set(ids)
    tcp = [a for a in ladder.arrows if a.message.callid == "call-5@10.0.0.1"]
    assert {a.proto for a in tcp} == {"TCP"}
    text = render_text(ladder)
    for cid in ids:
        assert cid in text


@needs_shared("corpus")
def test_every_call_of_the_corpus_draws_in_every_format(tmp_path: Path) -> None:
    """The public captures (TCP, SCTP, WebSocket, IPv6, fax, fuzzed...): every call's
    ladder has its rows' arrows, SDP marks where the rows say SDP, and renders."""
    url = "sqlite:///" + str(tmp_path / "corpus.db")
    replay(url, *sorted(str(p) for p in CORPUS.iterdir() if ".pcap" in p.name))
    rows = rows_by_call(url)
    calls = calls_of(url, *rows)
    assert {c.callid for c in calls} == set(rows) and len(rows) > 50
    retransmissions = 0
    for call in calls:
        msgs = rows[call.callid]
        ladder = build_ladder([call])
        assert [(a.time_us, a.label) for a in ladder.arrows] == \
            [(m.micro_ts, label_of(m)) for m in msgs]
        # the rows' own word: Content-Type names SDP (a multipart body: SDP among its parts)
        assert [a.sdp for a in ladder.arrows] == \
            [(m.content_type.lower().startswith("application/sdp")
              and bool(m.msg.partition(b"\r\n\r\n")[2].strip()))   # (one INVITE says SDP, has none)
             or (m.content_type.lower().startswith("multipart/")
                 and b"application/sdp" in m.msg.lower()) for m in msgs]
        assert all(a.media for a in ladder.arrows if a.sdp and b"m=" in body_of(a.message.msg))
        retransmissions += sum(a.retransmission for a in ladder.arrows)
        assert render_html(ladder).count('<g class="arrow') == len(msgs)
        assert render_svg(ladder).count('<g class="arrow') == len(msgs)
        text = render_text(ladder, width=100)
        assert max(len(ln) for ln in text.splitlines() if "│" in ln) <= 100
        assert len(ladder_dict(ladder)["arrows"]) == len(msgs)
    assert retransmissions > 10   # sip-sll-tcp-udp-retransmissions.pcap and others


# -- a capture made here: a proxied call with X-CID legs and retransmissions --------------

def _proxied_call(path: Path) -> None:
    """A-leg 10.0.0.1 -> proxy 10.0.0.2, B-leg proxy -> 10.0.0.3 with X-CID naming the
    A-leg; the B-leg INVITE is sent again after 500 ms (same bytes), and its 200 OK a
    second time with a changed Server header (same branch, CSeq and status)."""
    a_leg = sip_call(1, a="10.0.0.1", b="10.0.0.2")
    b_leg = [(s, sp, d, dp, m.replace(b"\r\nCSeq:", b"\r\nX-CID: call-1@10.0.0.1\r\nCSeq:", 1))
             for s, sp, d, dp, m in sip_call(2, a="10.0.0.2", b="10.0.0.3")]
    t0 = 1_764_000_000_000_000
    timeline = [(t0, a_leg[0]), (t0 + 400, a_leg[1]), (t0 + 1_000, b_leg[0]),
                (t0 + 501_000, b_leg[0]), (t0 + 501_200, b_leg[1]), (t0 + 600_000, b_leg[2]),
                (t0 + 600_500, a_leg[2]), (t0 + 2_000_000, b_leg[3]),
                (t0 + 2_000_300, a_leg[3]), (t0 + 2_001_000, a_leg[4]),
                (t0 + 2_500_000, (*b_leg[3][:4], b_leg[3][4].replace(b"gen/1.0", b"gen/1.1"))),
                (t0 + 2_500_100, b_leg[4])]
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (s, sp, d, dp, m) in timeline:
            w.write(ts, udp4_frame(s, sp, d, dp, m))


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("proxied")
    _proxied_call(d / "proxied.pcap")
    url = "sqlite:///" + str(d / "capture.db")
    replay(url, str(d / "proxied.pcap"))
    return url


def test_legs_are_drawn_in_one_ladder(proxied: str) -> None:
    alone = calls_of(proxied, "call-1@10.0.0.1")
    assert [c.callid for c in alone] == ["call-1@10.0.0.1"]
    calls = calls_of(proxied, "call-1@10.0.0.1", legs=1)
    assert [c.callid for c in calls] == ["call-1@10.0.0.1", "call-2@10.0.0.2"]
    ladder = build_ladder(calls)
    assert len(ladder.arrows) == 12
    assert [c.key for c in ladder.columns] == ["10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060"]
    assert [a.retransmission for a in ladder.arrows] == \
        [False, False, False, True] + [False] * 6 + [True, False]
    text = render_text(ladder)
    assert "legs: call-2@10.0.0.2" in text


def test_the_cli_draws_legs_and_refuses_to_overwrite(proxied: str, tmp_path: Path) -> None:
    out = tmp_path / "call.html"
    p = run("flow", "call-1@10.0.0.1", "--legs", "-o", str(out), "--db", proxied)
    assert p.returncode == 0, p.stderr
    html = out.read_text(encoding="utf-8")
    assert html.count('<g class="arrow') == 12
    p = run("flow", "call-1@10.0.0.1", "-o", str(out), "--db", proxied)
    assert p.returncode == 2 and str(out) in p.stderr and "--force" in p.stderr
    assert out.read_text(encoding="utf-8") == html
    p = run("flow", "call-1@10.0.0.1", "-o", str(out), "--force", "--db", proxied)
    assert p.returncode == 0, p.stderr
    assert out.read_text(encoding="utf-8").count('<g class="arrow') == 5   # A-leg alone
    p = run("flow", "call-1@10.0.0.1", "--legs-depth", "2", "--format", "json", "--db", proxied)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["arrows"]) == 12


# -- the command ---------------------------------------------------------------------------

def test_text_is_plain_when_piped_and_fits_a_width(db: str) -> None:
    p = run("flow", SIPP[2], "--db", db)
    assert p.returncode == 0, p.stderr
    assert not ANSI.search(p.stdout)
    for label in ("INVITE (SDP)", "180 Ringing", "200 OK (SDP)", "ACK", "BYE"):
        assert label in p.stdout
    many = ["call-1@10.0.0.1", "call-3@[2001:db8::1]", "call-5@10.0.0.1", "opt-7@10.0.2.1",
            "reg-2@10.0.1.1", SIPP[0]]
    wide = run("flow", *many, "--db", db)
    assert max(len(ln) for ln in wide.stdout.splitlines()[:-2]) > 80
    p = run("flow", *many, "--db", db, env={"COLUMNS": "80"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    ladder_lines = [ln for ln in lines if "│" in ln]
    assert ladder_lines and max(len(ln) for ln in ladder_lines) <= 80
    folded = [ln for ln in lines if "columns folded" in ln]
    assert folded and re.match(r"\d+ columns folded into the last lane to fit 80", folded[0])
    # every message still has its arrow
    # (the sipp call is a year after the others: its first line carries the date)
    assert any(re.match(r"\s+\d+ \[6\] 2026-11-29 11:00:17\.160415", ln) for ln in lines)
    assert sum(1 for ln in lines
               if re.match(r"\s+\d+ \[\d\] (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{6}", ln)) == \
        sum(len(rows_by_call(db)[c]) for c in many)


def test_colours_in_a_terminal_only() -> None:
    ladder = build_ladder([Call("x", [_msg("INVITE", 0), _msg("486", 10, reason="Busy Here")])])
    coloured = render_text(ladder, colour=True)
    assert "\x1b[1;36m" in coloured and "\x1b[1;31m" in coloured   # request, 4xx
    assert ANSI.sub("", coloured).replace("[0m", "") != ""
    assert not ANSI.search(render_text(ladder))


def test_full_prints_every_message_after_the_ladder(db: str) -> None:
    p = run("flow", SIPP[0], "--full", "--db", db)
    assert p.returncode == 0, p.stderr
    rows = rows_by_call(db)[SIPP[0]]
    ladder_part, _, full = p.stdout.partition("── #1 ")
    assert "INVITE (SDP)" in ladder_part
    assert full.count("\n── #") == len(rows) - 1
    for m in rows:
        assert m.msg.decode().replace("\r\n", "\n").strip() in full


def test_json_carries_rows_values_in_us(db: str) -> None:
    p = run("flow", SIPP[3], SIPP[4], "--format", "json", "--full", "--db", db)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    rows = sorted(rows_by_call(db)[SIPP[3]] + rows_by_call(db)[SIPP[4]], key=lambda m: m.micro_ts)
    assert [a["time_us"] for a in doc["arrows"]] == [m.micro_ts for m in rows]
    assert [a["label"] for a in doc["arrows"]] == [label_of(m) for m in rows]
    assert [a["msg"] for a in doc["arrows"]] == [m.msg.decode() for m in rows]
    assert doc["arrows"][0]["media"][0]["codecs"] == ["PCMU/8000"]
    s = doc["calls"][0]["summary"]
    assert s["outcome"] == "answered" and s["final_status"] == 200 and s["messages"] == 6
    no_msg = json.loads(run("flow", SIPP[3], "--format", "json", "--db", db).stdout)
    assert "msg" not in no_msg["arrows"][0]


def test_output_format_from_the_file_name(db: str, tmp_path: Path) -> None:
    for name, start in (("c.svg", "<?xml"), ("c.html", "<!DOCTYPE html>"), ("c.json", "{"),
                        ("c.txt", "Call-ID")):
        p = run("flow", SIPP[0], "-o", str(tmp_path / name), "--db", db)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / name).read_text(encoding="utf-8").startswith(start), name


def test_unknown_call_bad_alias_and_database_down(db: str) -> None:
    p = run("flow", "no-such-call@nowhere", "--db", db)
    assert p.returncode == 3 and "no call found" in p.stderr
    p = run("flow", SIPP[0], "no-such-call@nowhere", "--db", db)
    assert p.returncode == 0 and "no call found: no-such-call@nowhere" in p.stderr
    p = run("flow", SIPP[0], "--alias", "127.0.0.1", "--db", db)
    assert p.returncode == 2 and "--alias" in p.stderr
    p = run("flow", SIPP[0], "--db", "mysql://root@127.0.0.1:1/nothing")
    assert p.returncode == 4 and "sipcaptool: error:" in p.stderr


def test_html_and_svg_are_self_contained(db: str) -> None:
    ladder = build_ladder(calls_of(db, *SIPP))
    html = render_html(ladder)
    svg = render_svg(ladder)
    for doc in (html, svg):
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", doc))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls
        assert doc.count('<g class="arrow') == 30
    assert "<script src" not in html and "<link" not in html
    # a message that would close the script element cannot break out of it
    evil = _msg("MESSAGE", 0, body=b"</script><script>alert(1)</script>")
    page = render_html(build_ladder([Call("evil", [evil])]))
    assert page.count("<script") == 2 and "alert(1)</script>" not in page


# -- a message's own helpers ---------------------------------------------------------------

def _msg(method: str, ts: int, reason: str = "", body: bytes = b"", ct: str = "") -> StoredMessage:
    start = (f"{method} sip:b@x SIP/2.0" if not method.isdigit()
             else f"SIP/2.0 {method} {reason}").encode()
    msg = start + b"\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n" + body
    row = {c: "" for c in STORED_COLUMNS}
    row.update(micro_ts=ts, method=method, reply_reason=reason, callid="x", cseq="1 INVITE",
               source_ip="10.0.0.1" if not method.isdigit() else "10.0.0.2", source_port=5060,
               destination_ip="10.0.0.2" if not method.isdigit() else "10.0.0.1",
               destination_port=5060, proto=1, family=2, msg=msg, content_type=ct,
               via_1_branch=f"z9hG4bK{ts}")
    return StoredMessage.from_row(list(row), list(row.values()))


def test_self_message_and_empty_render() -> None:
    m = dataclasses.replace(_msg("OPTIONS", 5), destination_ip="10.0.0.1",
                            destination_port=5062)
    loop = build_ladder([Call("x", [m])], by_host=True, aliases={"10.0.0.1": "a"})
    assert [c.label for c in loop.columns] == ["a"]
    assert (loop.arrows[0].src, loop.arrows[0].dst) == (0, 0)
    assert render_svg(loop).count('<g class="arrow') == 1
    assert "OPTIONS" in render_text(loop, width=60) and "OPTIONS" in render_html(loop)
    empty = build_ladder([])
    assert empty.arrows == () and render_text(empty) == "\n"
    assert render_full(empty) == ""
    assert ladder_dict(empty) == {"calls": [], "columns": [], "arrows": []}


# -- SDP: whole input and hypothesis ----------------------------------------------------------

SDP = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
       b"m=audio 49170 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
       b"m=audio 5004 RTP/SAVP 9\r\nc=IN IP6 2001:db8::5\r\na=sendonly\r\n")


def test_sdp_whole_input() -> None:
    media = parse_sdp(SDP)
    assert media == (
        Media("audio", "192.0.2.1", 49170, "RTP/AVP", ("PCMA/8000", "PCMU/8000",
                                                         "telephone-event/8000"), "sendrecv"),
        Media("video", "192.0.2.1", 0, "RTP/AVP", ("H264/90000",), "sendrecv"),
        Media("audio", "2001:db8::5", 5004, "RTP/SAVP", ("G722/8000",), "sendonly"),
    )
    assert [m.summary() for m in media] == ["audio 192.0.2.1:49170 PCMA,PCMU,DTMF",
                                            "video 192.0.2.1:0 H264 (rejected)",
                                            "audio [2001:db8::5]:5004 G722 sendonly"]
    # LF-only line ends, a session-level direction, an m= line without formats
    lf = SDP.replace(b"\r\n", b"\n").replace(b"t=0 0", b"t=0 0\na=inactive")
    assert [m.direction for m in parse_sdp(lf)] == ["inactive", "inactive", "sendonly"]
    msg = b"INVITE sip:x SIP/2.0\r\nContent-Type: application/sdp\r\n\r\n" + SDP
    assert body_of(msg) == SDP and has_sdp("application/sdp", msg)
    assert not has_sdp("application/sdp", b"INVITE sip:x SIP/2.0\r\n\r\n")
    multipart = b"X: y\r\n\r\n--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"--b--\r\n"
    assert has_sdp("multipart/mixed;boundary=b", multipart)
    assert len(parse_sdp(body_of(multipart))) == 3
    assert parse_sdp(b"") == () and parse_sdp(b"m=audio\r\nc=\r\n") == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_sdp_any_bytes_never_raise(data: bytes) -> None:
    for m in parse_sdp(data):
        assert isinstance(m.summary(), str) and m.port >= 0


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["audio", "video", "image"]),
                          st.integers(0, 65535),
                          st.lists(st.tuples(st.integers(96, 127), _token), max_size=4,
                                   unique_by=lambda t: t[0]),
                          st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
                          st.ip_addresses(v=4).map(str)),
                min_size=1, max_size=4))
def test_sdp_generated_media_read_back(media: list) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for kind, port, maps, direction, addr in media:
        lines.append(f"m={kind} {port} RTP/AVP " + " ".join(str(pt) for pt, _ in maps))
        lines.append(f"c=IN IP4 {addr}")
        lines += [f"a=rtpmap:{pt} {name}/8000" for pt, name in maps]
        lines.append(f"a={direction}")
    got = parse_sdp(("\r\n".join(lines) + "\r\n").encode())
    assert [(m.kind, m.port, m.address, m.direction, m.codecs) for m in got] == \
        [(k, p, a, d, tuple(f"{n}/8000" for _, n in maps)) for k, p, maps, d, a in media]


# -- every database ---------------------------------------------------------------------------

def test_flow_end_to_end_on_every_database(any_db_url: str) -> None:
    """The sipp capture replayed into each database draws the same ladder as its rows."""
    replay(any_db_url, str(CALL_PCAP))
    rows = rows_by_call(any_db_url)
    assert set(rows) == set(SIPP)
    p = run("flow", *SIPP, "--format", "json", "--db", any_db_url)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    every = sorted((m for c in SIPP for m in rows[c]), key=lambda m: m.micro_ts)
    assert [(a["time_us"], a["label"], a["src"], a["dst"], a["call"]) for a in doc["arrows"]] == \
        [(m.micro_ts, label_of(m), endpoint(m.source_ip, m.source_port),
          endpoint(m.destination_ip, m.destination_port), m.callid) for m in every]
    assert [c["summary"]["outcome"] for c in doc["calls"]] == ["answered"] * 5
    assert sum(a["sdp"] for a in doc["arrows"]) == 10
    text = run("flow", SIPP[0], "--db", any_db_url)
    assert text.returncode == 0 and "INVITE (SDP)" in text.stdout
