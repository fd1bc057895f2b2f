"""HEP3 carried over TCP inside a capture: framed by the HEP3 length on top of TCP
reassembly, several packets per segment, one packet over several segments."""

from __future__ import annotations

import random

from decode_builders import INVITE, OK200, eth, ip4, tcp

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.decode.sip import looks_like_sip
from sipcaptool.decode.tcp import HEP_FRAME, TcpReassembler
from sipcaptool.encode.hep import encode_hep3
from sipcaptool.record import PROTO_TCP, PROTO_UDP, CapturedMessage
from sipcaptool.stats import Stats

AGENT, COLLECTOR = ("192.0.2.10", 41000), ("192.0.2.20", 9060)
T0 = 1_700_000_000_000_000


def _inner(i: int, payload: bytes = INVITE) -> CapturedMessage:
    return CapturedMessage(T0 + i * 1000, "10.1.0.1", 5060 + i, "10.1.0.2", 5080, PROTO_UDP, 2, payload)


def _hep(i: int, payload: bytes = INVITE, **kw) -> bytes:
    return encode_hep3(_inner(i, payload), capture_id=2000 + i, **kw)


class Flow:
    def __init__(self, **kw):
        self.stats = Stats()
        self.d = PacketDecoder(1, self.stats, **kw)
        self.seq = 7000

    def send(self, ts, data, src=AGENT, dst=COLLECTOR, seq=None, flags=0x18):
        if seq is None:
            seq = self.seq
            self.seq += len(data)
        return self.d.decode(ts, eth(0x0800, ip4(src[0], dst[0], 6, tcp(src[1], dst[1], seq, data, flags))))


def _key(m):
    return (m.ts_us, m.src_ip, m.src_port, m.dst_ip, m.dst_port, m.proto, m.node_id, m.payload)


def _expected(*idx):
    """The messages HEP packets ``_hep(i, payload)`` carry, as ``_key`` gives them."""
    return [(T0 + i * 1000, "10.1.0.1", 5060 + i, "10.1.0.2", 5080, PROTO_UDP, 2000 + i, p)
            for i, p in idx]


def test_one_packet_per_segment_uses_hep_addresses_and_time():
    f = Flow()
    (m,) = f.send(5, _hep(0))
    assert _key(m) == (T0, "10.1.0.1", 5060, "10.1.0.2", 5080, PROTO_UDP, 2000, INVITE)


def test_several_packets_in_one_segment():
    f = Flow()
    data = _hep(0) + _hep(1, OK200) + _hep(2)
    msgs = f.send(5, data)
    assert [_key(m) for m in msgs] == _expected((0, INVITE), (1, OK200), (2, INVITE))
    assert f.stats.category_total("malformed") == 0


def test_one_packet_over_several_segments():
    f = Flow()
    pkt = _hep(3, OK200)
    out = []
    for i in range(0, len(pkt), 7):
        got = f.send(10 + i, pkt[i:i + 7])
        if i + 7 < len(pkt):
            assert got == []
        out += got
    assert [_key(m) for m in out] == _expected((3, OK200))


def test_split_bytewise_at_every_position():
    stream = _hep(0) + _hep(1, OK200) + _hep(2, compress=True)
    for cut in range(1, len(stream)):
        f = Flow()
        out = f.send(1, stream[:cut]) + f.send(2, stream[cut:])
        assert [_key(m) for m in out] == _expected((0, INVITE), (1, OK200), (2, INVITE)), cut


def test_one_byte_segments():
    stream = _hep(0) + _hep(1, OK200)
    f = Flow()
    out = []
    for i in range(len(stream)):
        out += f.send(i, stream[i:i + 1])
    assert [_key(m) for m in out] == _expected((0, INVITE), (1, OK200))


def test_random_segmentation_reordering_and_retransmission():
    rng = random.Random(3)
    pkts = [(i, INVITE if i % 2 else OK200) for i in range(12)]
    stream = b"".join(_hep(i, p) for i, p in pkts)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 15))
        segs = [(a, stream[a:b]) for a, b in zip([0] + cuts, cuts + [len(stream)], strict=False)]
        order = segs[:1] + rng.sample(segs[1:], len(segs) - 1)   # first one opens the stream
        order += rng.sample(segs, 4)                             # retransmissions
        f = Flow()
        out = []
        for n, (off, data) in enumerate(order):
            out += f.send(n, data, seq=1000 + off)
        assert [_key(m) for m in out] == _expected(*pkts)


def test_trailing_garbage_is_skipped_and_stream_resynchronises():
    f = Flow()
    garbage = b"\x00\x01garbage that is not HEP\xff" * 3
    msgs = f.send(1, _hep(0) + _hep(1, OK200) + garbage)
    assert [_key(m) for m in msgs] == _expected((0, INVITE), (1, OK200))
    assert f.stats["malformed:hep3-stream"] == 1
    msgs = f.send(2, _hep(2))
    assert [_key(m) for m in msgs] == _expected((2, INVITE))
    # garbage shorter than a header, then the next packet in the same segment
    msgs = f.send(3, b"xyz" + _hep(3, OK200))
    assert [_key(m) for m in msgs] == _expected((3, OK200))
    assert f.stats["malformed:hep3-stream"] == 2


def test_bad_packet_inside_a_good_frame_does_not_stop_the_stream():
    f = Flow()
    bad = b"HEP3\x00\x0c" + b"\x00\x00\x00\x63\x00\x06"     # one empty vendor chunk, no payload
    msgs = f.send(1, _hep(0) + bad + _hep(1, OK200))
    assert [_key(m) for m in msgs] == _expected((0, INVITE), (1, OK200))
    assert f.stats.category_total("malformed") == 1
    assert f.stats["malformed:hep3-stream"] == 0


def test_stream_joined_mid_way_resynchronises_at_next_header():
    f = Flow()
    first = _hep(0)
    msgs = f.send(1, first[20:] + _hep(1, OK200))
    assert [_key(m) for m in msgs] == _expected((1, OK200))
    assert f.stats["malformed:hep3-stream"] == 0


def test_hep_ports_restrict_tcp_hep():
    f = Flow(hep_ports=frozenset({9061}))
    assert f.send(1, _hep(0)) == []
    f = Flow(hep_ports=frozenset({9060}))
    assert [_key(m) for m in f.send(1, _hep(0))] == _expected((0, INVITE))


def test_sip_port_filter_does_not_hide_hep():
    # --ports restricts SIP; HEP on another port is still decoded (as over UDP)
    f = Flow(ports=frozenset({5060}))
    assert [_key(m) for m in f.send(1, _hep(0))] == _expected((0, INVITE))
    # and plain SIP on a filtered port is still skipped
    g = Flow(ports=frozenset({5060}))
    assert g.send(1, INVITE) == []
    assert g.stats["skipped:port-filter"] == 1
    h = Flow(ports=frozenset({5060}), hep_ports=frozenset({9061}))
    assert h.send(1, _hep(0)) == []
    assert h.stats["skipped:port-filter"] == 1


def test_sip_over_tcp_unchanged_next_to_hep_streams():
    f = Flow()
    c, s = ("10.0.0.1", 40000), ("10.0.0.2", 5060)
    (m,) = f.send(1, INVITE, src=c, dst=s, seq=1)
    assert (m.payload, m.proto, m.ts_us) == (INVITE, PROTO_TCP, 1)
    assert [_key(m) for m in f.send(2, _hep(0))] == _expected((0, INVITE))


def test_reassembler_returns_hep_frames_and_holds_at_most_one_packet():
    st = Stats()
    r = TcpReassembler(st, looks_like_sip)
    key = ("a", 1, "b", 2)
    pkt = _hep(0, b"INVITE sip:x SIP/2.0\r\n" + b"x" * 60000)
    seq = 0
    out = []
    for i in range(0, len(pkt) * 3, 1000):
        data = (pkt * 3)[i:i + 1000]
        out += r.segment(i, key, seq + i, 0x18, data)
        assert r.held_bytes < 65536
    assert [(p, m) for _, p, m in out] == [(HEP_FRAME, pkt)] * 3
    assert r.held_bytes == 0
    r.segment(9, key, len(pkt) * 3, 0x11, b"")
    assert len(r) == 0


# ------------------------------------------- HEP over UDP in a capture, gzipped by heplify

def _udp(payload: bytes, dport: int = 9060) -> bytes:
    from decode_builders import udp

    return eth(0x0800, ip4(AGENT[0], COLLECTOR[0], 17, udp(AGENT[1], dport, payload)))


def test_gzipped_hep_datagrams_in_a_capture_on_hep_ports():
    import gzip

    f = Flow()
    (m,) = f.d.decode(5, _udp(gzip.compress(_hep(0))))
    assert _key(m) == _expected((0, INVITE))[0]
    # elsewhere a gzip stream is not taken for HEP unless --hep-ports names the port
    assert f.d.decode(5, _udp(gzip.compress(_hep(1)), dport=7000)) == []
    assert f.stats["skipped:non-sip"] == 1
    g = Flow(hep_ports=frozenset({7000}))
    (m,) = g.d.decode(5, _udp(gzip.compress(_hep(1)), dport=7000))
    assert _key(m) == _expected((1, INVITE))[0]
    # a broken one on a HEP port is counted, not stored
    assert f.d.decode(5, _udp(b"\x1f\x8b" + b"\x00" * 20)) == []
    assert f.stats["malformed:hep-inflate"] == 1
