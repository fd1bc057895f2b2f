"""SCTP: retransmitted DATA / I-DATA chunks (same TSN again in a direction) are used once."""

from __future__ import annotations

import struct

from decode_builders import INVITE, OK200, eth, ip4

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.decode.sctp import SctpTsns
from sipcaptool.record import PROTO_SCTP
from sipcaptool.stats import Stats

TS = 1_700_000_000_000_000
A, B = "10.0.0.1", "10.0.0.2"


def _sctp(chunks: bytes, sport: int = 5060, dport: int = 5060) -> bytes:
    return struct.pack("!HHII", sport, dport, 1, 0) + chunks


def _pad(chunk: bytes) -> bytes:
    return chunk + b"\x00" * (-len(chunk) % 4)


def _data(tsn: int, data: bytes, flags: int = 3, sid: int = 0, ssn: int = 0) -> bytes:
    return _pad(struct.pack("!BBHIHHI", 0, flags, 16 + len(data), tsn, sid, ssn, 0) + data)


def _idata(tsn: int, data: bytes, flags: int = 3, mid: int = 0, fsn: int = 0) -> bytes:
    return _pad(struct.pack("!BBHIHHII", 64, flags, 20 + len(data), tsn, 0, 0, mid, fsn) + data)


def _init(itsn: int, ctype: int = 1) -> bytes:
    return struct.pack("!BBHIIHHI", ctype, 0, 20, 1, 65535, 1, 1, itsn)


def _sack(cum: int) -> bytes:
    return struct.pack("!BBHIIHH", 3, 0, 16, cum, 65535, 0, 0)


class Assoc:
    def __init__(self):
        self.stats = Stats()
        self.d = PacketDecoder(1, self.stats)

    def send(self, ts, chunks, src=A, dst=B):
        sport, dport = (5060, 5061) if src == A else (5061, 5060)
        return self.d.decode(ts, eth(0x0800, ip4(src, dst, 132, _sctp(chunks, sport, dport))))


def test_retransmitted_data_chunk_stored_once():
    a = Assoc()
    (m,) = a.send(TS, _data(100, INVITE))
    assert (m.payload, m.proto, m.ts_us) == (INVITE, PROTO_SCTP, TS)
    assert a.send(TS + 500_000, _data(100, INVITE)) == []      # T3 retransmission
    assert a.stats["skipped:sctp-retransmission"] == 1
    (m,) = a.send(TS + 600_000, _data(101, OK200, ssn=1))
    assert m.payload == OK200


def test_retransmission_bundled_with_new_data():
    a = Assoc()
    assert [m.payload for m in a.send(TS, _data(1, INVITE) + _data(2, OK200))] == [INVITE, OK200]
    msgs = a.send(TS + 9, _data(2, OK200) + _data(3, INVITE))
    assert [(m.payload, m.ts_us) for m in msgs] == [(INVITE, TS + 9)]
    assert a.stats["skipped:sctp-retransmission"] == 1


def test_same_tsn_in_the_other_direction_is_not_a_retransmission():
    a = Assoc()
    assert len(a.send(TS, _data(7, INVITE))) == 1
    assert len(a.send(TS + 1, _data(7, OK200), src=B, dst=A)) == 1
    assert a.stats["skipped:sctp-retransmission"] == 0


def test_out_of_order_then_late_chunk_and_its_retransmission():
    a = Assoc()
    assert len(a.send(TS, _data(10, INVITE))) == 1
    assert len(a.send(TS + 1, _data(12, INVITE))) == 1      # 11 lost for now
    assert len(a.send(TS + 2, _data(11, OK200))) == 1       # arrives late: new
    assert a.send(TS + 3, _data(11, OK200)) == []
    assert a.send(TS + 4, _data(10, INVITE)) == []
    assert a.stats["skipped:sctp-retransmission"] == 2


def test_retransmitted_fragment_does_not_leave_a_stale_fragment():
    a = Assoc()
    head, tail = INVITE[:60], INVITE[60:]
    assert a.send(TS, _data(20, head, flags=2)) == []
    (m,) = a.send(TS + 1, _data(21, tail, flags=1))
    assert m.payload == INVITE
    # the last fragment again after the message completed: not a new message start
    assert a.send(TS + 2, _data(21, tail, flags=1)) == []
    assert a.send(TS + 3, _data(20, head, flags=2)) == []
    a.d.flush()
    assert a.stats["evicted:sctp-fragments"] == 0
    assert a.stats["skipped:sctp-retransmission"] == 2


def test_i_data_retransmission():
    a = Assoc()
    assert len(a.send(TS, _idata(5, INVITE, mid=1))) == 1
    assert a.send(TS + 1, _idata(5, INVITE, mid=1)) == []
    assert a.stats["skipped:sctp-retransmission"] == 1


def test_tsn_wraps_around():
    a = Assoc()
    assert len(a.send(TS, _data(0xFFFFFFFF, INVITE))) == 1
    assert len(a.send(TS + 1, _data(0, OK200))) == 1
    assert a.send(TS + 2, _data(0xFFFFFFFF, INVITE)) == []
    assert a.send(TS + 3, _data(0, OK200)) == []


def test_init_starts_a_new_tsn_space():
    a = Assoc()
    assert len(a.send(TS, _data(50, INVITE))) == 1
    a.send(TS + 1, _init(50))                              # association restarted
    assert len(a.send(TS + 2, _data(50, INVITE))) == 1
    assert a.stats["skipped:sctp-retransmission"] == 0


def test_control_chunks_are_ignored():
    a = Assoc()
    assert a.send(TS, _sack(9)) == []
    assert a.stats.category_total("malformed") == 0


def test_tsn_window_and_flow_cap_bound_memory():
    t = SctpTsns()
    assert not t.seen("f", 1_000)
    assert not t.seen("f", 1_000 + 10 * t.WINDOW)          # big jump: window restarts
    assert not t.seen("f", 1_000)                           # older than the window: new
    assert t.seen("f", 1_000 + 10 * t.WINDOW)
    for i in range(t.MAX_FLOWS + 100):
        t.seen(("g", i), i)
    assert len(t._flows) == t.MAX_FLOWS
    assert all(bits < 1 << t.WINDOW for _, bits in t._flows.values())
