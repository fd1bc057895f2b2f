"""The dedup window (sipcaptool.dedup): copies from another capture point are counted and
not stored; retransmissions are stored; memory is bounded and its bound counted.

The rule is tested on ``Dedup`` directly, the capture points on the decoder (the
link-level path of frames), and both together through ``replay_files`` into SQLite.
End-to-end tests (the hep collector with two agents, the replay command) are in
test_dedup_e2e.py.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcaptool.config import Settings
from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.dedup import MAX_COPIES, Dedup, point_label
from sipcaptool.errors import ConfigError
from sipcaptool.export.frames import ether, ipv4, udp
from sipcaptool.export.pcap import PcapWriter
from sipcaptool.record import PROTO_UDP, CapturedMessage
from sipcaptool.replay import ReplayOptions, replay_files
from sipcaptool.stats import Stats
from sipcaptool.testing.pcapgen import sip_call

MS = 1000  # µs
T0 = 1_764_000_000_000_000


def msg(payload: bytes = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n", ts: int = T0,
        node: int | None = 2001, point: bytes | str | None = "10.0.0.1",
        src: str = "10.1.1.1", dst: str = "10.1.1.2") -> CapturedMessage:
    return CapturedMessage(ts, src, 5060, dst, 5060, PROTO_UDP, 2, payload, node_id=node,
                           capture_point=point)


def stored(d: Dedup, *messages: CapturedMessage) -> list[bool]:
    """For each message in turn: True when it is to be stored."""
    return [not d.duplicate(m) for m in messages]


# ------------------------------------------------------------------ the rule

def test_copy_from_another_capture_point_is_counted_not_stored():
    stats = Stats()
    d = Dedup(500, 1000, stats)
    assert stored(d, msg(node=2001), msg(node=2002, ts=T0 + 3 * MS)) == [True, False]
    assert stats["dedup:2002"] == 1
    # same node, another agent address: another capture point as well
    assert stored(d, msg(node=2001, point="10.0.0.9", ts=T0 + 4 * MS)) == [False]
    assert stats["dedup:2001"] == 1


def test_a_copy_with_an_earlier_timestamp_is_a_copy_too():
    """Agents' clocks differ: the window is either side of the stored copy."""
    d = Dedup(500, 1000, Stats())
    assert stored(d, msg(node=1, ts=T0), msg(node=2, ts=T0 - 400 * MS)) == [True, False]


def test_retransmission_by_the_same_capture_point_is_stored():
    stats = Stats()
    d = Dedup(5000, 1000, stats)
    # A sees the INVITE and its retransmissions (T1, 2*T1); B sees each too
    seq = [msg(node=1, ts=T0), msg(node=2, ts=T0 + 1 * MS),
           msg(node=1, ts=T0 + 500 * MS), msg(node=2, ts=T0 + 501 * MS),
           msg(node=1, ts=T0 + 1500 * MS), msg(node=2, ts=T0 + 1501 * MS)]
    assert stored(d, *seq) == [True, False, True, False, True, False]
    assert stats["dedup:2"] == 3


def test_retransmission_only_the_second_capture_point_saw_is_stored():
    """heplify-server's rule would drop it: same payload within 500 ms."""
    d = Dedup(1000, 1000, Stats())
    seq = [msg(node=1, ts=T0), msg(node=2, ts=T0 + 1 * MS),
           msg(node=2, ts=T0 + 500 * MS)]  # A lost the retransmission
    assert stored(d, *seq) == [True, False, True]
    # and A's late copy of it is then a copy
    assert stored(d, msg(node=1, ts=T0 + 502 * MS)) == [False]


def test_arrival_order_does_not_matter():
    """One agent's copies may all arrive before the other's (a TCP connection read in
    one go): each transmission is still stored once. (hep and live: expiry by the
    arrival clock; replay reads a capture in time order.)"""
    d = Dedup(200, 1000, Stats(), clock=lambda: 0)
    seq = [msg(node=2, ts=T0 + 2 * MS), msg(node=2, ts=T0 + 502 * MS),
           msg(node=1, ts=T0), msg(node=1, ts=T0 + 500 * MS)]
    assert stored(d, *seq) == [True, True, False, False]


def test_a_sender_repeating_itself_is_bounded_and_counted():
    stats = Stats()
    d = Dedup(10_000, 1000, stats)
    for i in range(MAX_COPIES + 5):
        assert stored(d, msg(node=1, ts=T0 + i * MS)) == [True]
    assert stats["evicted:dedup-copies"] == 5
    # the transmissions remembered are still matched
    assert stored(d, msg(node=2, ts=T0 + (MAX_COPIES + 4) * MS)) == [False]


def test_a_copy_later_than_the_window_is_stored_and_starts_it_again():
    d = Dedup(500, 1000, Stats())
    seq = [msg(node=1, ts=T0), msg(node=2, ts=T0 + 501 * MS), msg(node=1, ts=T0 + 600 * MS)]
    assert stored(d, *seq) == [True, True, False]


def test_other_addresses_are_another_hop_not_a_copy():
    """Equal bytes seen on both sides of a NAT or load balancer: both hops are stored."""
    d = Dedup(500, 1000, Stats())
    seq = [msg(node=1), msg(node=2, src="192.0.2.1"), msg(node=2, dst="10.9.9.9")]
    assert stored(d, *seq) == [True, True, True]


def test_other_bytes_are_another_message():
    d = Dedup(500, 1000, Stats())
    assert stored(d, msg(payload=b"A"), msg(payload=b"B", node=2)) == [True, True]


def test_hep_types_are_kept_apart():
    d = Dedup(500, 1000, Stats())
    a = msg(node=1)
    b = msg(node=2)
    b.hep_type = 100
    assert stored(d, a, b) == [True, True]


def test_window_bound_evicts_oldest_counts_and_logs(caplog):
    stats = Stats()
    d = Dedup(10_000, 3, stats)
    with caplog.at_level(logging.WARNING, logger="sipcaptool.store"):
        for i in range(5):
            assert stored(d, msg(payload=b"m%d" % i, ts=T0 + i * MS)) == [True]
    assert len(d) == 3
    assert stats["evicted:dedup-full"] == 2
    assert "dedup window full" in caplog.text and "evicted:dedup-full" in caplog.text
    # at most one line a minute
    assert caplog.text.count("dedup window full") == 1
    # m0 left early: its copy from another capture point is stored again, never lost
    assert stored(d, msg(payload=b"m0", node=2, ts=T0 + 6 * MS)) == [True]
    # m4 is still there
    assert stored(d, msg(payload=b"m4", node=2, ts=T0 + 6 * MS)) == [False]


def test_entries_expire_with_message_time_and_a_stray_time_does_not_stick():
    d = Dedup(100, 1000, Stats())
    for i in range(50):
        d.duplicate(msg(payload=b"x%d" % i, ts=T0 + i * 10 * MS))
    assert len(d) <= 12 + 2   # ~ window / gap entries, plus the sweep's slack
    d.duplicate(msg(payload=b"stray", ts=T0 + 10**12))   # a year ahead
    for i in range(50, 70):
        d.duplicate(msg(payload=b"x%d" % i, ts=T0 + i * 10 * MS))
    assert len(d) <= 14
    assert stored(d, msg(payload=b"x69", node=7, ts=T0 + 690 * MS)) == [False]


def test_entries_expire_by_the_arrival_clock_when_given():
    now = [0]
    d = Dedup(100, 1000, Stats(), clock=lambda: now[0])
    d.duplicate(msg(ts=T0))
    # an agent whose clock is a day behind does not sweep the others' entries away
    d.duplicate(msg(payload=b"late agent", ts=T0 - 86_400_000 * MS, node=9))
    assert len(d) == 2
    now[0] = 1_000 * MS
    d.duplicate(msg(payload=b"later", ts=T0 + 1_000 * MS))
    assert len(d) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400)), max_size=30))
def test_stored_copies_equal_the_most_any_capture_point_saw(copies):
    """Within the window, without eviction: a message is stored as often as the capture
    point that saw it most often saw it, and no capture point's copies are lost."""
    d = Dedup(1000, 1000, Stats())
    kept = 0
    seen: dict[int, int] = {}
    for node, ms in copies:
        seen[node] = seen.get(node, 0) + 1
        if not d.duplicate(msg(node=node, ts=T0 + ms * MS)):
            kept += 1
        assert kept == max(seen.values())


def test_point_labels():
    assert point_label((2002, "10.0.0.1")) == "2002"
    assert point_label((None, "10.0.0.1")) == "agent-10.0.0.1"
    eth = ether(b"", vlans=[10])[:18]
    assert point_label((None, b"\0\x01" + eth)) == "vlan-10"
    assert point_label((None, b"\0\x01" + ether(b"", vlans=[10, 20])[:22])) == "vlan-10.20"
    assert point_label((None, b"\0\x01" + ether(b"")[:14])) == "link"
    assert point_label((None, b"\0\x01" + ether(b"")[:14] + b"\x0a\0\0\1\x0a\0\0\2")) \
        == "link+tunnel"
    sll2 = struct.pack("!HHIHBB", 0x0800, 0, 3, 1, 4, 6) + b"\0" * 8
    assert point_label((None, b"\x01\x14" + sll2)) == "ifindex-3"
    sll = struct.pack("!HHH", 4, 1, 6) + b"\x02\0\0\0\0\x01\0\0" + struct.pack("!H", 0x0800)
    assert point_label((None, b"\0\x71" + sll)) == "sll-out"
    assert point_label((None, b"\0\x71" + b"\0\0" + sll[2:])) == "sll-in"
    assert point_label((None, b"\0\x65")) == "link"     # raw IP: no link header
    assert point_label((None, None)) == "link"


def test_needs_a_window():
    with pytest.raises(ValueError):
        Dedup(0, 10, Stats())


# ------------------------------------------------------------------ capture points of frames

INVITE = sip_call(1)[0][4]


def frame(vlans=(), src_mac=b"\x02\0\0\0\0\x01", payload=INVITE, src="10.0.0.1",
          dst="10.0.0.2") -> bytes:
    return ether(ipv4(src, dst, 17, udp(5060, 5060, payload)), vlans=vlans, src=src_mac)


def point_of(f: bytes, linktype: int = 1) -> bytes | str | None:
    (m,) = PacketDecoder(linktype, Stats(), capture_points=True).decode(T0, f)
    return m.capture_point


def test_frames_capture_point_is_the_link_path():
    assert point_of(frame()) == point_of(frame())
    assert point_of(frame(vlans=[10])) != point_of(frame(vlans=[20]))
    assert point_of(frame(vlans=[10])) != point_of(frame())
    assert point_of(frame(src_mac=b"\x02\0\0\0\0\x09")) != point_of(frame())
    # the addresses and payload are not part of it
    assert point_of(frame(src="10.0.0.7")) == point_of(frame())
    # raw IP: the link type only
    raw = ipv4("10.0.0.1", "10.0.0.2", 17, udp(5060, 5060, INVITE))
    assert point_of(raw, 101) == (101).to_bytes(2, "big")


def test_without_a_window_frames_cost_nothing_more():
    (m,) = PacketDecoder(1, Stats()).decode(T0, frame(vlans=[10]))
    assert m.capture_point is None


def test_tunnelled_frames_capture_point_has_the_outer_addresses():
    inner = ipv4("10.0.0.1", "10.0.0.2", 17, udp(5060, 5060, INVITE))
    a = ether(ipv4("192.0.2.1", "192.0.2.9", 4, inner))
    b = ether(ipv4("192.0.2.2", "192.0.2.9", 4, inner))
    pa, pb = point_of(a), point_of(b)
    assert pa != pb
    assert isinstance(pa, bytes) and pa.endswith(bytes([192, 0, 2, 1, 192, 0, 2, 9]))
    # the next frame of the same decoder starts without the tunnel
    dec = PacketDecoder(1, Stats(), capture_points=True)
    dec.decode(T0, a)
    (m,) = dec.decode(T0, frame())
    assert m.capture_point == point_of(frame())


def test_cooked_capture_in_and_out_are_two_capture_points():
    """tcpdump -i any on loopback sees each packet going out and coming in."""
    packet = ipv4("127.0.0.1", "127.0.0.1", 17, udp(5060, 5060, INVITE))

    def sll(pkttype: int) -> bytes:
        return struct.pack("!HHH", pkttype, 772, 6) + bytes(8) + struct.pack("!H", 0x0800)

    out, back = point_of(sll(4) + packet, 113), point_of(sll(0) + packet, 113)
    assert out != back
    d = Dedup(500, 100, Stats())
    assert stored(d, msg(node=None, point=out), msg(node=None, point=back)) == [True, False]
    assert d.stats == {"dedup:sll-in": 1}


def test_sip_on_a_tunnel_port_that_is_not_a_tunnel_has_the_plain_path():
    f = ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5060, 2152, INVITE)))
    assert point_of(f) == point_of(frame())


# ------------------------------------------------------------------ replay into SQLite

def two_vlan_pcap(path: Path, *, retransmit: bool = False) -> int:
    """One call seen on VLAN 10 and, 200 µs later, on VLAN 20 (routed: other MACs);
    with ``retransmit``, the INVITE is sent again 500 ms later, seen on VLAN 10 only.
    Returns the number of distinct transmissions."""
    msgs = sip_call(7)
    with path.open("wb") as f:
        w = PcapWriter(f)
        ts = T0
        for src, sport, dst, dport, m in msgs:
            body = ipv4(src, dst, 17, udp(sport, dport, m))
            w.write(ts, ether(body, vlans=[10]))
            w.write(ts + 200, ether(body, vlans=[20], src=b"\x02\0\0\0\0\xfe"))
            ts += 10 * MS
        if retransmit:
            src, sport, dst, dport, m = msgs[0]
            w.write(ts + 500 * MS, ether(ipv4(src, dst, 17, udp(sport, dport, m)), vlans=[10]))
    return len(msgs) + (1 if retransmit else 0)


def rows(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute("select count(*) from sip_capture").fetchone()[0])


@pytest.mark.parametrize("retransmit", [False, True])
def test_replay_two_vlans_stores_each_message_once(tmp_path, retransmit):
    pcap = tmp_path / "two-vlans.pcap"
    n = two_vlan_pcap(pcap, retransmit=retransmit)
    db = tmp_path / "c.db"
    s = Settings.load(cli={"db_url": f"sqlite:///{db}", "dedup_window": 1000}, env={})
    report = replay_files([str(pcap)], s, ReplayOptions(foreground_writer=True))
    assert not report.errors
    assert rows(db) == n
    assert report.stats["dedup:vlan-20"] == 7
    assert report.stats["messages"] == 14 + int(retransmit)


def test_replay_without_window_stores_every_copy(tmp_path):
    pcap = tmp_path / "two-vlans.pcap"
    two_vlan_pcap(pcap)
    db = tmp_path / "c.db"
    s = Settings.load(cli={"db_url": f"sqlite:///{db}"}, env={})
    report = replay_files([str(pcap)], s, ReplayOptions(foreground_writer=True))
    assert rows(db) == 14
    assert report.stats.group("dedup") == {}


def test_settings_from_the_environment_and_the_file(tmp_path):
    s = Settings.load(env={"SIPCAPTOOL_DEDUP_WINDOW": "250"})
    assert (s.dedup_window, s.origin["dedup_window"]) == (250, "environment SIPCAPTOOL_DEDUP_WINDOW")
    conf = tmp_path / "c.toml"
    conf.write_text("dedup_window = 500\ndedup_max_entries = 1000\n")
    s = Settings.load(str(conf), env={})
    assert (s.dedup_window, s.dedup_max_entries) == (500, 1000)
    with pytest.raises(ConfigError, match="dedup_window"):
        Settings.load(env={"SIPCAPTOOL_DEDUP_WINDOW": "-1"})
    with pytest.raises(ConfigError, match="dedup_max_entries"):
        Settings.load(cli={"dedup_max_entries": 0}, env={})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=40)),
       st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_any_capture_point_has_a_name(where, node):
    """Whatever the bytes of a link header, the counter's name is one of a few shapes."""
    label = point_label((node, where))
    if node is not None:
        assert label == str(node)
    elif isinstance(where, str):
        assert label == "agent-" + where
    else:
        assert re.fullmatch(r"(vlan-\d+(\.\d+)*|ifindex-\d+|sll-(in|out)|link)(\+tunnel)?", label)
