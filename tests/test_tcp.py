"""TCP reassembly and SIP framing."""

from __future__ import annotations

import random

from decode_builders import INVITE, OK200, eth, ip4, tcp

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.decode.sip import looks_like_sip
from sipcaptool.decode.tcp import TcpReassembler
from sipcaptool.record import PROTO_TCP
from sipcaptool.stats import Stats

C, S = ("10.0.0.1", 40000), ("10.0.0.2", 5060)


class Flow:
    def __init__(self, **kw):
        self.stats = Stats()
        self.d = PacketDecoder(1, self.stats, **kw)

    def seg(self, ts, seq, data, src=C, dst=S, flags=0x18):
        return self.d.decode(ts, eth(0x0800, ip4(src[0], dst[0], 6, tcp(src[1], dst[1], seq, data, flags))))


def test_one_message_per_segment():
    f = Flow()
    (m,) = f.seg(10, 1000, INVITE)
    assert (m.payload, m.proto, m.src_port, m.ts_us) == (INVITE, PROTO_TCP, 40000, 10)


def test_several_messages_per_segment_get_distinct_timestamps():
    f = Flow()
    msgs = f.seg(10, 1, INVITE + OK200 + INVITE)
    assert [m.payload for m in msgs] == [INVITE, OK200, INVITE]
    assert [m.ts_us for m in msgs] == [10, 11, 12]


def test_message_over_many_segments_takes_last_segment_time():
    body = b"a=" + b"x" * 70_000 + b"\r\n"
    big = (b"INVITE sip:b@x SIP/2.0\r\nCall-ID: big\r\nX-Pad: " + b"p" * 60_000 +
           b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    f = Flow()
    seq, out = 5, []
    for i in range(0, len(big), 1400):
        out += f.seg(100 + i, seq + i, big[i:i + 1400])
    assert len(out) == 1 and out[0].payload == big
    assert out[0].ts_us == 100 + (len(big) - 1) // 1400 * 1400


def test_retransmission_stored_once_and_overlap_trimmed():
    f = Flow()
    assert f.seg(1, 100, INVITE[:50]) == []
    assert f.seg(2, 100, INVITE[:50]) == []                  # duplicate
    (m,) = f.seg(3, 120, INVITE[20:])                        # overlapping retransmission
    assert m.payload == INVITE
    assert f.seg(4, 100, INVITE) == []                       # whole message again
    assert f.stats["skipped:tcp-retransmission"] == 2


def test_out_of_order_segments_are_held():
    f = Flow()
    data = INVITE + OK200
    parts = [(i, data[i:i + 40]) for i in range(0, len(data), 40)]
    first, rest = parts[0], parts[1:]
    random.Random(3).shuffle(rest)
    out = f.seg(1, 1000 + first[0], first[1])
    for n, (i, p) in enumerate(rest):
        out += f.seg(2 + n, 1000 + i, p)
    assert [m.payload for m in out] == [INVITE, OK200]


def test_sequence_wraparound():
    f = Flow()
    seq = (1 << 32) - 60
    assert f.seg(1, seq, INVITE[:60]) == []
    (m,) = f.seg(2, 0, INVITE[60:])
    assert m.payload == INVITE


def test_joined_midway_resyncs_at_next_start_line():
    f = Flow()
    tail = b"ody tail\r\n" + INVITE[60:]
    assert f.seg(1, 1, tail) == []                           # no start line: no state
    assert f.stats["skipped:non-sip"] == 1
    msgs = f.seg(2, 1 + len(tail), b"junk\r\n" + OK200)
    assert [m.payload for m in msgs] == [OK200]


def test_keepalives_between_messages():
    f = Flow()
    msgs = f.seg(1, 1, INVITE + b"\r\n\r\n" + OK200)
    assert [m.payload for m in msgs] == [INVITE, OK200]
    assert f.stats["skipped:keepalive"] == 1


def test_bad_content_length_counted():
    f = Flow()
    msg = INVITE.replace(b"Content-Length: 0", b"Content-Length: bad")
    (m,) = f.seg(1, 1, msg)
    assert m.payload == msg and f.stats["malformed:content-length"] == 1


def test_half_open_stream_flood_is_capped_and_counted():
    st = Stats()
    r = TcpReassembler(st, looks_like_sip, max_streams=100, max_stream_bytes=64 * 1024,
                       max_total_bytes=1_000_000)
    partial = INVITE[:-10]
    for i in range(20_000):
        r.segment(i, ("a", i, "b", 5060), 1, 0, partial + b"x" * 200)
        assert len(r) <= 100 and r.held_bytes <= 1_000_000
    assert st["evicted:tcp-stream"] >= 19_900
    assert r.held_bytes == sum(s.held() for s in r._streams.values())


def test_stream_byte_cap_and_total_cap():
    st = Stats()
    r = TcpReassembler(st, looks_like_sip, max_streams=1000, max_stream_bytes=32 * 1024,
                       max_total_bytes=200_000)
    head = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 900000\r\n\r\n"
    r.segment(0, "k", 0, 0, head)
    assert st["malformed:tcp-body-too-long"] == 0
    seq = len(head)
    for i in range(100):
        r.segment(i, "k", seq, 0, b"y" * 1000)
        seq += 1000
        assert r.held_bytes <= 200_000
    assert st["malformed:tcp-too-big"] >= 1
    for i in range(300):       # many streams each holding a partial header
        r.segment(i, ("s", i), 0, 0, b"INVITE sip:a@b SIP/2.0\r\nX: " + b"h" * 2000)
        assert r.held_bytes <= 200_000
    assert st["evicted:tcp-stream"] > 0


def test_idle_streams_time_out_by_capture_time():
    st = Stats()
    r = TcpReassembler(st, looks_like_sip, timeout_us=1_000_000)
    r.segment(0, "old", 0, 0, INVITE[:60])
    r.segment(5_000_000, "new", 0, 0, INVITE[:60])
    assert len(r) == 1 and st["evicted:tcp-stream"] == 1


def test_fin_closes_stream():
    f = Flow()
    (m,) = f.seg(1, 1, INVITE, flags=0x19)
    assert m.payload == INVITE
    assert len(f.d._tcp) == 0


def test_port_filter_applies_to_tcp():
    f = Flow(ports=frozenset({5061}))
    assert f.seg(1, 1, INVITE) == []
    assert f.stats["skipped:port-filter"] == 1
