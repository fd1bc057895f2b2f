"""The dedup window end to end: the ``hep`` collector with two agents sending the same
messages, and ``replay`` of a capture holding the same messages on two VLANs (judged
with tshark). The rule itself is tested in test_dedup.py."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_dedup import two_vlan_pcap
from test_hep_collector import message, sip

from sipcaptool.control.document import build_stats, format_stats_text
from sipcaptool.control.metrics import prometheus_text
from sipcaptool.encode.hep import encode_hep3
from sipcaptool.stats import Stats

ROOT = Path(__file__).resolve().parent.parent
TS = 1_767_225_601_000_001
MS = 1000


def sip_rows(db_url: str) -> list[tuple[str, str, bytes]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as c:
        return [(r[0], r[1], bytes(r[2])) for r in
                c.execute("select callid, node, msg from sip_capture order by id")]


def test_hep_two_agents_store_each_message_once(sqlite_url, collectors):
    """Agent A (capture id 2001, UDP from 127.0.0.1) and agent B (2002, TCP from
    127.0.0.2) see the same call. Both see the INVITE retransmitted; only B sees the BYE
    retransmitted; agent C (2001 from 127.0.0.3) sees the 100; A sends the 180 again
    from another port. Stored: the 7 messages, the INVITE, BYE and 180 twice."""
    methods = ["INVITE", "100", "180", "200", "ACK", "BYE", "200-BYE"]
    msgs = [message("dd-call", method=m, ts=TS + i * 10 * MS) for i, m in enumerate(methods)]
    invite_again = message("dd-call", method="INVITE", ts=TS + 500 * MS)
    bye_again = message("dd-call", method="BYE", ts=TS + 550 * MS)
    a_packets = [encode_hep3(m, capture_id=2001) for m in [*msgs, invite_again]]
    b_msgs = [*msgs, invite_again, bye_again]
    for m in b_msgs:
        m.ts_us += 2 * MS          # B's clock, or its place on the path: 2 ms later
    b_packets = [encode_hep3(m, capture_id=2002) for m in b_msgs]
    # agent C: capture id 2001 like A, another address: another capture point, a copy
    c_msg = message("dd-call", method="100", ts=TS + 10 * MS + 3 * MS)
    # A again from another source port: the same capture point (node and address), so
    # the same bytes again are a retransmission, stored
    a2_msg = message("dd-call", method="180", ts=TS + 20 * MS + 4 * MS)
    total = len(a_packets) + len(b_packets) + 2

    c = collectors(sqlite_url, "--dedup-window", "200", "--count", str(total))
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.create_connection(("127.0.0.1", c.ports["tcp"]), timeout=10,
                                 source_address=("127.0.0.2", 0))
    try:
        for pa, pb in zip(a_packets, b_packets, strict=False):
            a.sendto(pa, ("127.0.0.1", c.ports["udp"]))
            b.sendall(pb)
        b.sendall(b_packets[-1])
        for ip, m in (("127.0.0.3", c_msg), ("127.0.0.1", a2_msg)):
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.bind((ip, 0))
            other.sendto(encode_hep3(m, capture_id=2001), ("127.0.0.1", c.ports["udp"]))
            other.close()
        c.proc.wait(60)  # --count: it stops by itself once every packet is read
        rc, summary, err = c.stop()
    finally:
        a.close()
        b.close()
    assert rc == 0, err
    assert summary["packets"] == total
    assert summary["stored"] == {"sip_capture": 10}
    dedup = summary["dedup"]
    assert sum(dedup.values()) == total - 10
    assert set(dedup) <= {"2001", "2002"}
    rows = sip_rows(sqlite_url)
    stored = [m for _c, _n, m in rows]
    assert stored.count(sip("dd-call", method="INVITE")) == 2
    assert stored.count(sip("dd-call", method="BYE")) == 2
    assert stored.count(sip("dd-call", method="180")) == 2
    for m in ("100", "200", "ACK", "200-BYE"):
        assert stored.count(sip("dd-call", method=m)) == 1


def test_hep_without_window_stores_both_agents_copies(sqlite_url, collectors):
    m = message("dd-off")
    c = collectors(sqlite_url, "--count", "2")
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.sendto(encode_hep3(m, capture_id=2001), ("127.0.0.1", c.ports["udp"]))
    a.sendto(encode_hep3(m, capture_id=2002), ("127.0.0.1", c.ports["udp"]))
    a.close()
    c.proc.wait(60)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["stored"] == {"sip_capture": 2}
    assert "dedup" not in summary or summary["dedup"] == {}


def tshark_count(pcap: Path, display_filter: str) -> int:
    p = subprocess.run(["tshark", "-r", str(pcap), "-Y", display_filter, "-T", "fields",
                        "-e", "frame.number"], capture_output=True, text=True, check=True)
    return len(p.stdout.split())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_replay_two_vlans_agrees_with_tshark(tmp_path):
    """What VLAN 10 saw (every message, and the INVITE retransmitted) is stored; the
    copies VLAN 20 saw are counted, as many as tshark finds SIP frames on VLAN 20."""
    pcap = tmp_path / "two-vlans.pcap"
    two_vlan_pcap(pcap, retransmit=True)
    on_10 = tshark_count(pcap, "sip && vlan.id == 10")
    on_20 = tshark_count(pcap, "sip && vlan.id == 20")
    assert (on_10, on_20) == (8, 7)
    db = tmp_path / "c.db"
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--db", f"sqlite:///{db}",
                        "--dedup-window", "500", "--json", str(pcap)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["stored"] == {"sip_capture": on_10}
    assert summary["dedup"] == {"vlan-20": on_20}
    # the text summary names the group
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--db",
                        f"sqlite:///{tmp_path / 'd.db'}", "--dedup-window", "500", "-q",
                        str(pcap)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_dedup_group_in_ctl_stats_and_metrics():
    stats = Stats({"packets": 3, "messages": 3, "stored:sip_capture": 2, "dedup:2002": 1,
                   "evicted:dedup-full": 4})
    doc = build_stats(stats, capture_on=True, started=0.0)
    assert doc["dedup"] == {"2002": 1} and doc["evicted"] == {"dedup-full": 4}
    assert "2002" in format_stats_text(doc) and "dedup window" in format_stats_text(doc)
    text = prometheus_text(doc)
    assert 'node="2002"} 1' in text and "dedup" in text
