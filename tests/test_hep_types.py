"""HEP payload types and lenient SIP, end to end: the real ``sipcaptool hep`` collector
(UDP on 127.0.0.1, its control socket and /metrics read while it runs) and the real
``sipcaptool replay`` of a pcap holding the same HEP packets.

* 34 (MOS full report) and 35 (MOS short report) land in report_capture with their
  correlation id and their HEP type as ``type``;
* a packet of another type whose payload is SIP is stored as SIP and counted as
  ``lenient:hep-type-<n>``; one whose payload is not SIP stays ``skipped:hep-type-<n>``;
* SIP with an IPv6 host without brackets and LF line ends is stored with its columns,
  counted as ``lenient:ipv6-no-brackets`` and ``lenient:lf-line-ends`` in the summary,
  ``ctl stats`` and ``/metrics``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from test_hep_collector import aux_rows, rows_by_callid

from sipcaptool.encode.hep import encode_hep3
from sipcaptool.record import AF_INET, PROTO_UDP, CapturedMessage
from sipcaptool.testing.pcapgen import PcapWriter, udp4_frame

ROOT = Path(__file__).resolve().parents[1]
TS = 1_767_225_601_000_001  # 2026-01-01 00:00:01.000001 UTC
A = "fe80:0:0:0:21a:a0ff:fe07:32e0"
B = "fec0:0:0:0:216:d3ff:fe0d:22c"


def _sip(callid: str, eol: str = "\r\n") -> bytes:
    return eol.join([
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-" + callid,
        "From: <sip:alice@example.com>;tag=ft-" + callid,
        "To: <sip:bob@example.com>",
        "Call-ID: " + callid,
        "CSeq: 1 INVITE",
        "", "",
    ]).encode()


def _sip_v6(callid: str) -> bytes:
    """A phone's INVITE as in ../shared/corpus/sip-ipv6-udp.pcap, with LF line ends."""
    return "\n".join([
        f"INVITE sip:4321@{B}:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP {A}:5060;branch=z9hG4bK-v6",
        f"From: <sip:9876@{A}>;tag=a3bhg",
        f"To: <sip:4321@{B}>",
        f"Call-ID: {callid}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:9876@{A}:5060>",
        "", "",
    ]).encode()


def _packets() -> list[bytes]:
    """(type, payload, correlation id) as HEPv3 datagrams, in the order they are sent."""
    items = [
        (34, b'{"MOS":4.31,"type":"rtpagent"}', "mos-full-1"),
        (35, b'{"MOS":3.9,"type":"rtcpxr"}', "mos-short-1"),
        (54, _sip("as-type-54"), None),
        (38, _sip("as-type-38"), None),
        (54, b'{"isup":"IAM"}', None),
        (1, _sip_v6("v6-call"), None),
        (1, _sip("plain"), None),
    ]
    out = []
    for i, (t, payload, corr) in enumerate(items):
        msg = CapturedMessage(TS + i, "192.0.2.1", 5060, "198.51.100.2", 5080, PROTO_UDP,
                              AF_INET, payload, correlation_id=corr, hep_type=t)
        out.append(encode_hep3(msg, capture_id=2001))
    return out


def _check_rows(db_url: str) -> None:
    reports = [(r["correlation_id"], r["type"], r["msg"], r["node"])
               for r in aux_rows(db_url, "report_capture")]
    assert reports == [("mos-full-1", 34, b'{"MOS":4.31,"type":"rtpagent"}', "homer01:2001"),
                       ("mos-short-1", 35, b'{"MOS":3.9,"type":"rtcpxr"}', "homer01:2001")]
    rows = rows_by_callid(db_url)
    assert set(rows) == {"as-type-54", "as-type-38", "v6-call", "plain"}
    assert rows["as-type-54"]["from_tag"] == "ft-as-type-54" and rows["as-type-54"]["type"] == 1
    v6 = rows["v6-call"]
    assert (v6["ruri_user"], v6["ruri_domain"], v6["from_domain"], v6["to_domain"],
            v6["contact_ip"], v6["contact_port"]) == ("4321", B, A, B, A, 5060)
    assert v6["msg"] == _sip_v6("v6-call")  # stored byte for byte


def _check_counts(doc: dict) -> None:
    assert doc["lenient"] == {"hep-type-38": 1, "hep-type-54": 1, "ipv6-no-brackets": 1,
                              "lf-line-ends": 1}, doc["lenient"]
    assert doc["skipped"] == {"hep-type-54": 1}
    assert doc["stored"] == {"report_capture": 2, "sip_capture": 4}
    assert doc["malformed"] == {}


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_collector_stores_reports_and_sip_of_any_type(sqlite_url, collectors, tmp_path):
    sock = str(tmp_path / "hep.sock")
    c = collectors(sqlite_url, "--control", sock, "--metrics", "127.0.0.1:0", tcp=False)
    packets = _packets()
    for p in packets:
        c.send_udp(p)
    # wait for the collector to have read them all: its own counters say so
    deadline = time.monotonic() + 60
    while True:
        r = _cli("ctl", "--control", sock, "stats", "--json")
        doc = json.loads(r.stdout) if r.returncode == 0 else {}
        if doc.get("packets") == len(packets) and doc.get("stored_total") == 6:
            break
        assert time.monotonic() < deadline, (r.stdout, r.stderr, c.err_lines)
        time.sleep(0.2)
    _check_counts(doc)
    text = _cli("ctl", "--control", sock, "stats").stdout
    assert re.search(r"stored leniently:\s+4", text), text
    assert re.search(r"\n  ipv6-no-brackets:\s+1", text), text
    url = next(m.group(1) for line in c.err_lines
               if (m := re.search(r"metrics (http://\S+/metrics)", line)))
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    for what in ("hep-type-38", "hep-type-54", "ipv6-no-brackets", "lf-line-ends"):
        assert f'sipcaptool_lenient_total{{what="{what}"}} 1' in metrics, metrics
    assert 'sipcaptool_skipped_total{reason="hep-type-54"} 1' in metrics
    rc, summary, err = c.stop()
    assert rc == 0, err
    _check_counts(summary)
    _check_rows(sqlite_url)


def test_replay_of_a_pcap_holding_hep(tmp_path):
    pcap = tmp_path / "hep-types.pcap"
    with pcap.open("wb") as f:
        w = PcapWriter(f)
        for i, p in enumerate(_packets()):
            w.write(TS + 1000 * i, udp4_frame("10.0.0.9", 40000, "10.0.0.1", 9060, p))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    r = _cli("replay", "--db", db, "--json", "-q", str(pcap))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    _check_counts(summary)
    _check_rows(db)
    r = _cli("replay", "--db", f"sqlite:///{tmp_path / 't.db'}", str(pcap))
    assert r.returncode == 0, r.stderr
    assert re.search(r"stored leniently:\s+4\n  hep-type-38: 1\n  hep-type-54: 1\n"
                     r"  ipv6-no-brackets: 1\n  lf-line-ends: 1", r.stdout), r.stdout
