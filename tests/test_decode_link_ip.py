"""Link and IP layers, tunnels and the UDP path, on hand-built frames."""

from __future__ import annotations

import struct

import pytest
from decode_builders import INVITE, OK200, eth, ip4, ip6, sll, sll2, tcp, udp, udp4_frame

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.errors import DecodeError
from sipcaptool.record import AF_INET, AF_INET6, PROTO_SCTP, PROTO_UDP, PROTO_WS
from sipcaptool.stats import Stats

TS = 1_700_000_000_123_456
UDP4 = ip4("10.0.0.1", "10.0.0.2", 17, udp(5060, 5070, INVITE))
UDP6 = ip6("2001:db8::1", "2001:DB8:0:0:0:0:0:2", 17, udp(5060, 5070, INVITE))


def dec(linktype=1, **kw):
    st = Stats()
    return PacketDecoder(linktype, st, **kw), st


def one(linktype, frame, **kw):
    d, st = dec(linktype, **kw)
    msgs = d.decode(TS, frame)
    assert len(msgs) == 1, dict(st)
    return msgs[0]


def test_ethernet_ipv4_udp_fields():
    m = one(1, eth(0x0800, UDP4))
    assert (m.ts_us, m.src_ip, m.src_port, m.dst_ip, m.dst_port) == (TS, "10.0.0.1", 5060, "10.0.0.2", 5070)
    assert m.proto == PROTO_UDP and m.family == AF_INET and m.payload == INVITE
    assert m.hep_type == 1 and m.node_id is None


def test_ipv6_address_is_compressed_lowercase_without_brackets():
    m = one(1, eth(0x86DD, UDP6))
    assert (m.src_ip, m.dst_ip, m.family) == ("2001:db8::1", "2001:db8::2", AF_INET6)


@pytest.mark.parametrize("linktype,frame", [
    (12, UDP4), (14, UDP4), (101, UDP4), (228, UDP4), (101, UDP6), (229, UDP6),
    (113, sll(0x0800, UDP4)), (276, sll2(0x86DD, UDP6)),
    (0, struct.pack("<I", 2) + UDP4), (0, struct.pack(">I", 2) + UDP4),
    (0, struct.pack("<I", 30) + UDP6), (108, struct.pack(">I", 24) + UDP6),
    (9, b"\xff\x03\x00\x21" + UDP4), (9, b"\x00\x57" + UDP6), (9, b"\x21" + UDP4),
    (1, eth(0x8100, struct.pack("!HH", 10, 0x0800) + UDP4)),
    (1, eth(0x88A8, struct.pack("!HHHH", 10, 0x8100, 20, 0x0800) + UDP4)),  # QinQ
    (1, eth(0x8864, struct.pack("!BBHH", 0x11, 0, 7, len(UDP4) + 2) + b"\x00\x21" + UDP4)),
    (1, eth(0x8847, struct.pack("!I", (100 << 12) | 0x100 | 64) + UDP4)),  # MPLS
    (1, eth(len(UDP4) + 8, b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + UDP4)),  # LLC/SNAP
])
def test_link_layers(linktype, frame):
    m = one(linktype, frame)
    assert m.payload == INVITE and m.src_port == 5060


def test_unknown_linktype_raises_once_from_constructor():
    with pytest.raises(DecodeError) as e:
        PacketDecoder(147, Stats())
    assert e.value.reason == "unknown-linktype"


def test_ethernet_padding_is_dropped():
    m = one(1, eth(0x0800, UDP4) + b"\x00" * 30)
    assert m.payload == INVITE


def test_ipv6_extension_headers():
    hop = struct.pack("!BB6s", 60, 0, b"\x01\x04\x00\x00\x00\x00")
    dst_opts = struct.pack("!BB6s", 17, 0, b"\x01\x04\x00\x00\x00\x00")
    frame = ip6("::1", "::2", 0, hop + dst_opts + udp(5060, 5060, INVITE))
    assert one(101, frame).payload == INVITE


def test_non_sip_keepalive_non_ip_port_filter_counted():
    d, st = dec(1, ports=frozenset({5060}))
    assert d.decode(TS, udp4_frame(b"\x80\x00rtp....")) == []
    assert d.decode(TS, udp4_frame(b"\r\n\r\n")) == []
    assert d.decode(TS, eth(0x0806, b"\x00" * 28)) == []
    assert d.decode(TS, udp4_frame(INVITE, sport=7000, dport=7001)) == []
    assert d.decode(TS, udp4_frame(b"\r\n")) == []
    assert dict(st) == {"skipped:non-sip": 1, "skipped:keepalive": 2, "skipped:non-ip": 1,
                        "skipped:port-filter": 1}


def test_sip_recognised_on_any_port_without_filter():
    assert one(1, udp4_frame(INVITE, sport=40000, dport=6060)).dst_port == 6060


def test_snapped_frame_counted():
    d, st = dec()
    frame = udp4_frame(INVITE)
    assert d.decode(TS, frame[:60], wirelen=len(frame)) == []
    assert st["malformed:snapped"] == 1


def test_broken_ip_header_counted():
    d, st = dec()
    bad = bytearray(eth(0x0800, UDP4))
    bad[14] = 0x43  # IHL 3
    assert d.decode(TS, bytes(bad)) == []
    assert st["malformed:ip-header"] == 1


def test_every_prefix_of_a_valid_frame_never_raises():
    frames = [eth(0x0800, UDP4), eth(0x86DD, UDP6),
              eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 6, tcp(5060, 5060, 1, INVITE)))]
    for frame in frames:
        for n in range(len(frame)):
            d, st = dec()
            d.decode(TS, frame[:n])
            d.decode(TS, frame[:n], wirelen=len(frame))
            d.flush()
            assert sum(st.values()) >= 1 or n == 0 or n >= 34  # something was counted


def test_trailing_garbage_after_ip_datagram_is_ignored():
    assert one(1, eth(0x0800, UDP4) + b"garbage!").payload == INVITE


def test_icmp_quoting_sip_is_not_a_message():
    quoted = ip4("10.0.0.2", "10.0.0.1", 17, udp(5060, 5060, INVITE))
    icmp = b"\x03\x0a\x00\x00\x00\x00\x00\x00" + quoted
    d, st = dec()
    assert d.decode(TS, eth(0x0800, ip4("10.9.9.9", "10.0.0.2", 1, icmp))) == []
    assert d.decode(TS, eth(0x86DD, ip6("::9", "::2", 58, icmp))) == []
    assert st["skipped:icmp-quoted"] == 2


# ---------------------------------------------------------------------- tunnels

def test_ipip_and_ip6_in_ip4_use_inner_addresses():
    m = one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 4, UDP4)))
    assert (m.src_ip, m.dst_ip) == ("10.0.0.1", "10.0.0.2")
    m = one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 41, UDP6)))
    assert m.src_ip == "2001:db8::1"


def test_gre_variants():
    inner_eth = eth(0x0800, UDP4)
    for gre in (
        struct.pack("!HH", 0, 0x6558) + inner_eth,                       # TEB
        struct.pack("!HHI", 0x2000, 0x0800, 7) + UDP4,                   # key
        struct.pack("!HHHHII", 0x3001, 0x880B, len(UDP4) + 4, 1, 1, 0)[:12] + b"\xff\x03\x00\x21" + UDP4,
        struct.pack("!HHI", 0x1000, 0x88BE, 1) + struct.pack("!II", 0x10000001, 0) + inner_eth,  # ERSPAN II
        struct.pack("!HH", 0, 0x22EB) + struct.pack("!III", 0x20000001, 0, 0) + inner_eth,     # ERSPAN III
        struct.pack("!HH", 0, 0x22EB) + struct.pack("!III", 0x20000001, 0, 1) + b"\x00" * 8 + inner_eth,
    ):
        m = one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 47, gre)))
        assert (m.src_ip, m.payload) == ("10.0.0.1", INVITE), gre[:4]


def test_vxlan_and_gtpu():
    vx = b"\x08\x00\x00\x00\x00\x00\x64\x00" + eth(0x0800, UDP4)
    m = one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 17, udp(50000, 4789, vx))))
    assert m.src_ip == "10.0.0.1"
    gtp = struct.pack("!BBHI", 0x30, 0xFF, len(UDP6), 1) + UDP6
    m = one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 17, udp(2152, 2152, gtp))))
    assert m.src_ip == "2001:db8::1"
    # with sequence number and one extension header (PDU session container)
    ext = struct.pack("!BBBB", 1, 0, 0, 0)
    body = struct.pack("!HBB", 0, 0, 0x85) + ext + UDP4
    gtp = struct.pack("!BBHI", 0x34, 0xFF, len(body), 1) + body
    assert one(1, eth(0x0800, ip4("192.0.2.1", "192.0.2.2", 17, udp(2152, 2152, gtp)))).src_ip == "10.0.0.1"


def test_tunnel_depth_is_bounded():
    pkt = UDP4
    for _ in range(20):
        pkt = ip4("192.0.2.1", "192.0.2.2", 4, pkt)
    d, st = dec()
    assert d.decode(TS, eth(0x0800, pkt)) == []
    assert st["malformed:tunnel-too-deep"] == 1


# ---------------------------------------------------------------------- SCTP

def _sctp(chunks: bytes) -> bytes:
    return struct.pack("!HHII", 5060, 5060, 1, 0) + chunks


def _data_chunk(tsn, flags, data, sid=0, ssn=0):
    chunk = struct.pack("!BBHIHHI", 0, flags, 16 + len(data), tsn, sid, ssn, 0) + data
    return chunk + b"\x00" * (-len(chunk) % 4)


def test_sctp_data_and_fragments():
    d, st = dec()
    whole = _sctp(_data_chunk(1, 3, INVITE) + _data_chunk(2, 3, OK200, ssn=1))
    msgs = d.decode(TS, eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 132, whole)))
    assert [m.payload for m in msgs] == [INVITE, OK200]
    assert [m.ts_us for m in msgs] == [TS, TS + 1]
    assert msgs[0].proto == PROTO_SCTP
    a, b = INVITE[:50], INVITE[50:]
    first = eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 132, _sctp(_data_chunk(10, 2, a, ssn=2))))
    assert d.decode(TS, first) == []
    msgs = d.decode(TS + 5, eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 132, _sctp(_data_chunk(11, 1, b, ssn=2)))))
    assert [(m.ts_us, m.payload) for m in msgs] == [(TS + 5, INVITE)]


# ---------------------------------------------------------------------- WebSocket

def test_websocket_masked_and_unmasked_frames_over_segments():
    d, st = dec()
    c, s = ("10.0.0.1", 50000), ("10.0.0.2", 8080)

    def seg(src, dst, seq, data, ts=TS):
        return d.decode(ts, eth(0x0800, ip4(src[0], dst[0], 6, tcp(src[1], dst[1], seq, data))))

    up = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert seg(c, s, 100, up) == []
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert seg(s, c, 900, resp) == []
    mask = b"\x01\x02\x03\x04"
    masked = bytes(x ^ mask[i % 4] for i, x in enumerate(INVITE))
    frame = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(INVITE)) + mask + masked
    assert seg(c, s, 100 + len(up), frame[:40]) == []
    msgs = seg(c, s, 100 + len(up) + 40, frame[40:], ts=TS + 9)
    assert [(m.payload, m.proto, m.ts_us) for m in msgs] == [(INVITE, PROTO_WS, TS + 9)]
    frame = bytes([0x81, 126]) + struct.pack("!H", len(OK200)) + OK200
    msgs = seg(s, c, 900 + len(resp), frame)
    assert [(m.payload, m.src_port) for m in msgs] == [(OK200, 8080)]
