"""Unit tests for the HEP codec (sipcaptool.decode.hep, decode.hep_stream, encode.hep)."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest

from sipcaptool.decode.hep import (
    CHUNK_AUTH_KEY,
    CHUNK_CAPTURE_ID,
    CHUNK_COMPRESSED_PAYLOAD,
    CHUNK_CORRELATION_ID,
    CHUNK_DST_IP4,
    CHUNK_DST_IP6,
    CHUNK_DST_PORT,
    CHUNK_GEO_LOCATION,
    CHUNK_IP_FAMILY,
    CHUNK_IP_PROTO,
    CHUNK_KEEP_ALIVE,
    CHUNK_PAYLOAD,
    CHUNK_PROTO_TYPE,
    CHUNK_SRC_IP4,
    CHUNK_SRC_IP6,
    CHUNK_SRC_PORT,
    CHUNK_TIME_SEC,
    CHUNK_TIME_USEC,
    CHUNK_VLAN_ID,
    MAX_INFLATED,
    HepPacket,
    decode_datagram,
    looks_like_hep,
)
from sipcaptool.decode.hep_stream import HepStream
from sipcaptool.encode.hep import encode_hep1, encode_hep2, encode_hep3
from sipcaptool.errors import DecodeError
from sipcaptool.record import CapturedMessage

NOW = 1_700_000_000_123_456
SIP = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b"Call-ID: unit-1@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


# --------------------------------------------------------------------------- helpers

def chunk(ctype: int, value: bytes, vendor: int = 0, length: int | None = None) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(value) if length is None else length) + value


def u8(t: int, v: int) -> bytes:
    return chunk(t, bytes([v]))


def u16(t: int, v: int) -> bytes:
    return chunk(t, struct.pack("!H", v))


def u32(t: int, v: int) -> bytes:
    return chunk(t, struct.pack("!I", v))


def hep3(*chunks: bytes, ident: bytes = b"HEP3", total: int | None = None) -> bytes:
    body = b"".join(chunks)
    return ident + struct.pack("!H", 6 + len(body) if total is None else total) + body


def std_chunks(
    *,
    src: bytes = bytes([192, 0, 2, 1]),
    dst: bytes = bytes([198, 51, 100, 2]),
    ip_proto: int = 17,
    sec: int = 1767225601,
    usec: int = 1,
    ptype: int = 1,
    captid: int = 7001,
) -> list[bytes]:
    """The usual agent chunk list (without payload), as a list so tests can drop some."""
    v6 = len(src) == 16
    return [
        u8(CHUNK_IP_FAMILY, 10 if v6 else 2),
        u8(CHUNK_IP_PROTO, ip_proto),
        chunk(CHUNK_SRC_IP6 if v6 else CHUNK_SRC_IP4, src),
        chunk(CHUNK_DST_IP6 if v6 else CHUNK_DST_IP4, dst),
        u16(CHUNK_SRC_PORT, 5060),
        u16(CHUNK_DST_PORT, 5080),
        u32(CHUNK_TIME_SEC, sec),
        u32(CHUNK_TIME_USEC, usec),
        u8(CHUNK_PROTO_TYPE, ptype),
        u32(CHUNK_CAPTURE_ID, captid),
    ]


def one(data: bytes, **kw) -> HepPacket:
    pkts = decode_datagram(data, now_us=NOW, **kw)
    assert len(pkts) == 1
    return pkts[0]


def reason(data: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as ei:
        decode_datagram(data, now_us=NOW, **kw)
    return ei.value.reason


def msg(**kw) -> CapturedMessage:
    base = dict(
        ts_us=1767225601_000001, src_ip="192.0.2.1", src_port=5060, dst_ip="198.51.100.2",
        dst_port=5080, proto=1, family=2, payload=SIP, node_id=7001,
    )
    base.update(kw)
    return CapturedMessage(**base)


# --------------------------------------------------------------------------- spec example

# The worked example of the HEP3 specification (rev 37, p.5-6): 113 octets, family 2,
# UDP, 212.202.0.1:12010 -> 82.116.0.211:5060, 1313440459 s + 120000 us, SIP,
# capture id 228, payload "INVITE sip:bob".
SPEC_EXAMPLE = bytes.fromhex(
    "48455033 0071"
    "0000 0001 0007 02"
    "0000 0002 0007 11"
    "0000 0003 000a d4ca0001"
    "0000 0004 000a 527400d3"
    "0000 0007 0008 2eea"
    "0000 0008 0008 13c4"
    "0000 0009 000a 4e4982cb"
    "0000 000a 000a 0001d4c0"
    "0000 000b 0007 01"
    "0000 000c 000a 000000e4"
    "0000 000f 0014" + b"INVITE sip:bob".hex()
)


def test_spec_worked_example():
    assert len(SPEC_EXAMPLE) == 113
    assert looks_like_hep(SPEC_EXAMPLE)
    p = one(SPEC_EXAMPLE)
    assert (p.version, p.family, p.ip_proto) == (3, 2, 17)
    assert (p.src_ip, p.src_port, p.dst_ip, p.dst_port) == ("212.202.0.1", 12010, "82.116.0.211", 5060)
    assert (p.ts_sec, p.ts_usec, p.proto_type, p.capture_id) == (1313440459, 120000, 1, 228)
    assert p.payload == b"INVITE sip:bob"
    m = p.to_message()
    assert m.ts_us == 1313440459_120000
    assert (m.proto, m.family, m.node_id, m.correlation_id, m.hep_type) == (1, 2, 228, None, 1)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "src,dst,family",
    [("192.0.2.1", "198.51.100.2", 2), ("2001:db8::1", "2001:db8:0:1::2", 10)],
)
def test_hep3_round_trip(src, dst, family, compress):
    m = msg(src_ip=src, dst_ip=dst, family=family, correlation_id="corr-1", hep_type=1,
            hep_family=family, hep_ip_proto=17)
    data = encode_hep3(m, capture_id=7001, auth_key=b"secret", node_name="edge-1",
                       compress=compress)
    assert looks_like_hep(data)
    p = one(data, auth_key=b"secret")
    assert p.compressed is compress
    assert p.auth_key == b"secret"
    assert p.node_name == "edge-1"
    assert p.family == family and p.src_family == family
    assert p.to_message() == m


@pytest.mark.parametrize("proto,ip_proto", [(1, 17), (2, 6), (4, 132), (0, 0)])
def test_hep3_ip_proto_default_and_mapping(proto, ip_proto):
    data = encode_hep3(msg(proto=proto), capture_id=1)
    p = one(data)
    assert p.ip_proto == ip_proto
    m = p.to_message()
    assert m.proto == proto and m.hep_ip_proto == ip_proto


def test_hep3_unknown_ip_proto_is_proto_0():
    p = one(encode_hep3(msg(), ip_proto=50))
    assert p.to_message().proto == 0


@pytest.mark.parametrize(
    "src,dst,family", [("192.0.2.1", "198.51.100.2", 2), ("2001:db8::1", "fe80::2", 10)]
)
@pytest.mark.parametrize("proto,ip_proto", [(1, 17), (2, 6), (3, 22), (4, 132)])
def test_hep2_round_trip(src, dst, family, proto, ip_proto):
    m = msg(src_ip=src, dst_ip=dst, family=family, proto=proto, node_id=3002,
            hep_ip_proto=ip_proto)
    data = encode_hep2(m, capture_id=3002)
    assert looks_like_hep(data)
    p = one(data)
    assert (p.version, p.family, p.ip_proto, p.capture_id) == (2, family, ip_proto, 3002)
    assert p.to_message() == m


def test_hep2_wire_layout_little_endian_time_and_padding():
    data = encode_hep2(msg(ts_us=1571254062_000042), capture_id=0x0102)
    assert data[:4] == bytes([2, 16, 2, 17])
    assert data[16:20] == bytes.fromhex("2e6fa75d")  # 1571254062 little-endian
    assert data[20:24] == struct.pack("<I", 42)
    assert data[24:26] == b"\x02\x01"  # captid u16 LE
    assert data[26:28] == b"\x00\x00"  # struct padding
    assert data[28:] == SIP
    v6 = encode_hep2(msg(src_ip="::1", dst_ip="::2", family=10))
    assert v6[1] == 40 and v6[52:] == SIP and len(v6) == 52 + len(SIP)


def test_hep1_round_trip_has_no_time():
    m = msg(src_ip="2001:db8::5", dst_ip="2001:db8::6", family=10)
    data = encode_hep1(m)
    assert data[0] == 1 and data[40:] == SIP
    p = one(data)
    assert (p.version, p.ts_sec, p.capture_id, p.proto_type) == (1, None, None, 1)
    out = p.to_message()
    assert out.ts_us == NOW and out.node_id is None
    assert (out.src_ip, out.dst_ip, out.family, out.proto) == ("2001:db8::5", "2001:db8::6", 10, 1)
    assert out.payload == SIP and out.hep_family is None and out.hep_ip_proto == 17


def test_hep2_zero_time_is_now_and_plain_node():
    p = one(encode_hep2(msg(ts_us=123), capture_id=9))  # tv_sec 0
    m = p.to_message()
    assert m.ts_us == NOW and m.node_id is None
    assert p.to_message(now_us=5).ts_us == 5


def test_encode_too_large_raises_value_error():
    with pytest.raises(ValueError):
        encode_hep3(msg(payload=b"x" * 65535))
    # compressed it fits
    big = b"A" * 200_000
    p = one(encode_hep3(msg(payload=big), compress=True))
    assert p.payload == big and p.compressed


# --------------------------------------------------------------------------- compression

@pytest.mark.parametrize("packer", [zlib.compress, gzip.compress], ids=["zlib", "gzip"])
def test_compressed_payload_inflated(packer):
    p = one(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, packer(SIP))))
    assert p.payload == SIP and p.compressed


def test_inflate_cap():
    bomb = zlib.compress(b"\0" * (MAX_INFLATED + 1))
    assert len(bomb) < 65000
    assert reason(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, bomb))) == "hep-inflate"
    exact = zlib.compress(b"\0" * MAX_INFLATED)
    assert len(one(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, exact))).payload) == MAX_INFLATED


@pytest.mark.parametrize("blob", [b"not compressed", zlib.compress(SIP)[:-6], b""])
def test_inflate_garbage_or_cut(blob):
    assert reason(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, blob))) == "hep-inflate"


@pytest.mark.parametrize("encode", [encode_hep1, encode_hep2, encode_hep3])
def test_whole_datagram_gzipped_as_heplify_sends_it(encode):
    plain = encode(msg(), capture_id=7001) if encode is encode_hep3 else encode(msg())
    want = decode_datagram(plain, now_us=NOW)
    got = decode_datagram(gzip.compress(plain), now_us=NOW)
    assert got == want
    assert got[0].payload == SIP


def test_gzipped_datagram_with_two_hep3_packets_and_auth():
    two = encode_hep3(msg(), auth_key=b"k") + encode_hep3(msg(payload=b"OPTIONS x SIP/2.0\r\n\r\n"),
                                                          auth_key=b"k")
    assert len(decode_datagram(gzip.compress(two), now_us=NOW, auth_key=b"k")) == 2
    assert reason(gzip.compress(two), auth_key=b"other") == "hep-auth"


@pytest.mark.parametrize("blob,why", [
    (gzip.compress(b"\0" * (MAX_INFLATED + 1)), "hep-inflate"),      # a bomb
    (gzip.compress(SIP)[:-10], "hep-inflate"),                         # cut off
    (b"\x1f\x8b" + b"garbage" * 3, "hep-inflate"),                     # not gzip at all
    (gzip.compress(gzip.compress(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP)))), "hep-inflate"),
    (gzip.compress(SIP), "hep-bad-version"),                           # gzip of plain SIP
    (gzip.compress(b"HEP3"), "hep-truncated"),
])
def test_gzipped_datagram_errors(blob, why):
    assert reason(blob) == why


def test_last_payload_chunk_wins():
    p = one(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, b"first"),
                 chunk(CHUNK_COMPRESSED_PAYLOAD, zlib.compress(b"second"))))
    assert (p.payload, p.compressed) == (b"second", True)
    p = one(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, zlib.compress(b"first")),
                 chunk(CHUNK_PAYLOAD, b"second")))
    assert (p.payload, p.compressed) == (b"second", False)
    # a broken compressed payload that lost to a later plain one is never inflated
    p = one(hep3(*std_chunks(), chunk(CHUNK_COMPRESSED_PAYLOAD, b"junk"), chunk(CHUNK_PAYLOAD, b"plain")))
    assert p.payload == b"plain"


# --------------------------------------------------------------------------- chunk rules

def test_vendor_chunks_skipped_and_counted():
    vend = chunk(1, b"\xff" * 9, vendor=3)
    vend0 = chunk(0, b"", vendor=2)  # type 0 is only fatal for the generic vendor
    p = one(hep3(vend, *std_chunks(), vend0, chunk(CHUNK_PAYLOAD, SIP), vend))
    assert p.vendor_chunks == 3 and p.payload == SIP


def test_unknown_generic_chunks_skipped():
    p = one(hep3(*std_chunks(), u16(CHUNK_KEEP_ALIVE, 30), u16(CHUNK_VLAN_ID, 100),
                 chunk(CHUNK_GEO_LOCATION, b"geo"), chunk(0x99, b"?"), chunk(CHUNK_PAYLOAD, SIP)))
    assert p.payload == SIP and p.vendor_chunks == 0


def test_generic_chunk_type0_drops_packet():
    assert reason(hep3(chunk(0, b"zz"), *std_chunks(), chunk(CHUNK_PAYLOAD, SIP))) == "hep3-chunk-type0"


@pytest.mark.parametrize(
    "bad",
    [
        struct.pack("!HHH", 0, CHUNK_PAYLOAD, 0),  # zero length
        struct.pack("!HHH", 0, CHUNK_PAYLOAD, 5),  # shorter than its header
        struct.pack("!HHH", 0, CHUNK_PAYLOAD, 500) + b"xx",  # crosses the packet end
        b"\x00\x00\x00",  # stray bytes shorter than a chunk header
        u16(CHUNK_IP_FAMILY, 2),  # family must be 1 byte
        chunk(CHUNK_SRC_IP4, b"\x01\x02\x03"),  # IPv4 of 3 bytes
        chunk(CHUNK_SRC_IP4, b"\x20\x01" + b"\x00" * 14),  # 16 bytes but not IPv4-mapped
        chunk(CHUNK_SRC_IP6, b"\x00" * 4),  # IPv6 of 4 bytes
        u8(CHUNK_SRC_PORT, 1),  # port of 1 byte
        u16(CHUNK_TIME_SEC, 1),  # time of 2 bytes
        chunk(CHUNK_CAPTURE_ID, b"\x00" * 8),  # capture id of 8 bytes
    ],
)
def test_bad_chunks(bad):
    assert reason(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP), bad)) == "hep3-bad-chunk"


def test_ipv4_mapped_in_ipv4_chunks_prints_dotted_quad():
    mapped_src = b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1])
    mapped_dst = b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 2])
    chunks = std_chunks()
    chunks[2] = chunk(CHUNK_SRC_IP4, mapped_src)
    chunks[3] = chunk(CHUNK_DST_IP4, mapped_dst)
    p = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP)))
    assert (p.src_ip, p.dst_ip, p.src_family) == ("10.0.0.1", "10.0.0.2", 2)
    # the same value in an IPv6 chunk stays IPv6
    p = one(hep3(*std_chunks(src=mapped_src, dst=mapped_dst), chunk(CHUNK_PAYLOAD, SIP)))
    assert (p.src_ip, p.src_family) == ("::ffff:a00:1", 10)


def test_ipv6_text_is_compressed_lower_case():
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("FE800000000000000000ABCD00000000")
    p = one(hep3(*std_chunks(src=src, dst=dst), chunk(CHUNK_PAYLOAD, SIP)))
    assert (p.src_ip, p.dst_ip) == ("2001:db8::1", "fe80::abcd:0:0")
    m = p.to_message()
    assert (m.family, m.hep_family) == (10, 10)


def test_family_is_of_source_address_not_family_chunk():
    chunks = std_chunks()
    chunks[0] = u8(CHUNK_IP_FAMILY, 10)  # lies
    m = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP))).to_message()
    assert (m.family, m.hep_family) == (2, 10)


def test_last_address_chunk_wins_between_v4_and_v6():
    v6 = bytes.fromhex("20010db8000000000000000000000009")
    p = one(hep3(*std_chunks(), chunk(CHUNK_SRC_IP6, v6), chunk(CHUNK_PAYLOAD, SIP)))
    assert (p.src_ip, p.src_family, p.dst_ip) == ("2001:db8::9", 10, "198.51.100.2")


@pytest.mark.parametrize("drop", [2, 3])
def test_missing_address(drop):
    chunks = std_chunks()
    del chunks[drop]
    assert reason(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP))) == "hep-no-address"


def test_missing_payload():
    assert reason(hep3(*std_chunks())) == "hep-no-payload"


def test_empty_payload_chunk_is_an_empty_payload():
    assert one(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, b""))).payload == b""


def test_missing_ports_are_zero():
    chunks = std_chunks()
    del chunks[4:6]
    p = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP)))
    assert (p.src_port, p.dst_port) == (0, 0)


def test_missing_proto_type_is_sip():
    chunks = std_chunks()
    del chunks[8]
    p = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP)))
    assert p.proto_type is None
    assert p.to_message().hep_type == 1


def test_missing_ip_proto_chunk():
    chunks = std_chunks()
    del chunks[1]
    m = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP))).to_message()
    assert (m.proto, m.hep_ip_proto) == (0, None)


def test_sctp_v3_is_proto_4():
    assert one(hep3(*std_chunks(ip_proto=132), chunk(CHUNK_PAYLOAD, SIP))).to_message().proto == 4


# --------------------------------------------------------------------------- time / node

def test_usec_not_range_checked():
    m = one(hep3(*std_chunks(sec=100, usec=2_500_000), chunk(CHUNK_PAYLOAD, SIP))).to_message()
    assert m.ts_us == 102_500_000 and m.node_id == 7001


@pytest.mark.parametrize("drop", [[6, 7], [6]])
def test_no_time_is_now_and_plain_node(drop):
    chunks = [c for i, c in enumerate(std_chunks()) if i not in drop]
    p = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP)))
    m = p.to_message()
    assert m.ts_us == NOW and m.node_id is None
    assert p.to_message(now_us=42).ts_us == 42


def test_zero_time_is_now():
    m = one(hep3(*std_chunks(sec=0, usec=5), chunk(CHUNK_PAYLOAD, SIP))).to_message()
    assert m.ts_us == NOW and m.node_id is None


def test_missing_capture_id_is_node_0_when_timed():
    chunks = std_chunks()
    del chunks[9]
    m = one(hep3(*chunks, chunk(CHUNK_PAYLOAD, SIP))).to_message()
    assert m.node_id == 0


def test_capture_id_is_u32():
    p = one(hep3(*std_chunks(captid=0xFFFFFFFF), chunk(CHUNK_PAYLOAD, SIP)))
    assert p.to_message().node_id == 0xFFFFFFFF


# --------------------------------------------------------------------------- correlation id

@pytest.mark.parametrize(
    "raw,expected",
    [(b"abc", "abc"), (b"", ""), (b"abc\x00def", "abc"), (b"\x00x", ""), (b"caf\xc3\xa9", "caf\u00e9"),
     (b"bad\xff", "bad\ufffd")],
)
def test_correlation_id(raw, expected):
    m = one(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP), chunk(CHUNK_CORRELATION_ID, raw))).to_message()
    assert m.correlation_id == expected


def test_no_correlation_chunk_is_none():
    assert one(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP))).to_message().correlation_id is None


@pytest.mark.parametrize("ptype", [5, 32, 99, 100])
def test_aux_types(ptype):
    m = one(hep3(*std_chunks(ptype=ptype), chunk(CHUNK_CORRELATION_ID, b"c1"),
                 chunk(CHUNK_PAYLOAD, b"{}"))).to_message()
    assert (m.hep_type, m.correlation_id, m.hep_family, m.hep_ip_proto) == (ptype, "c1", 2, 17)


# --------------------------------------------------------------------------- auth

def test_auth():
    good = hep3(*std_chunks(), chunk(CHUNK_AUTH_KEY, b"s3cret"), chunk(CHUNK_PAYLOAD, SIP))
    assert one(good, auth_key=b"s3cret").auth_key == b"s3cret"
    assert one(good).auth_key == b"s3cret"  # no key required: accepted
    assert reason(good, auth_key=b"other") == "hep-auth"
    assert reason(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP)), auth_key=b"s3cret") == "hep-auth"
    # C-string key with its terminating NUL
    nul = hep3(*std_chunks(), chunk(CHUNK_AUTH_KEY, b"s3cret\x00"), chunk(CHUNK_PAYLOAD, SIP))
    assert one(nul, auth_key=b"s3cret").auth_key == b"s3cret"


@pytest.mark.parametrize("encoder", [encode_hep1, encode_hep2])
def test_auth_refuses_v1_v2(encoder):
    data = encoder(msg())
    assert one(data).version in (1, 2)
    assert reason(data, auth_key=b"k") == "hep-auth"


# --------------------------------------------------------------------------- datagrams

def test_eep3_id_accepted():
    assert one(hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, SIP), ident=b"EEP3")).payload == SIP


def test_concatenated_packets():
    a = encode_hep3(msg(payload=b"one"), capture_id=1)
    b = encode_hep3(msg(payload=b"two", src_ip="::1", dst_ip="::2", family=10), compress=True)
    c = hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, b"three"), ident=b"EEP3")
    pkts = decode_datagram(a + b + c, now_us=NOW)
    assert [p.payload for p in pkts] == [b"one", b"two", b"three"]
    assert pkts[1].src_ip == "::1"


def test_bad_packet_among_good_ones():
    good = encode_hep3(msg(payload=b"ok"))
    bad = hep3(chunk(0, b""), chunk(CHUNK_PAYLOAD, b"x"))
    errors: list[DecodeError] = []
    pkts = decode_datagram(good + bad + good, now_us=NOW, errors=errors)
    assert [p.payload for p in pkts] == [b"ok", b"ok"]
    assert [e.reason for e in errors] == ["hep3-chunk-type0"]


def test_auth_per_packet():
    keyed = encode_hep3(msg(payload=b"k"), auth_key=b"key")
    unkeyed = encode_hep3(msg(payload=b"u"))
    errors: list[DecodeError] = []
    pkts = decode_datagram(unkeyed + keyed, now_us=NOW, auth_key=b"key", errors=errors)
    assert [p.payload for p in pkts] == [b"k"]
    assert [e.reason for e in errors] == ["hep-auth"]


@pytest.mark.parametrize("garbage", [b"\x00", b"\r\n\r\n", b"garbage after", b"HEP3"])
def test_trailing_garbage(garbage):
    good = encode_hep3(msg())
    errors: list[DecodeError] = []
    pkts = decode_datagram(good + garbage, now_us=NOW, errors=errors)
    assert len(pkts) == 1 and pkts[0].payload == SIP
    assert [e.reason for e in errors] == ["hep3-trailing"]
    # without an errors list the good packet is still returned
    assert len(decode_datagram(good + garbage, now_us=NOW)) == 1


def test_nothing_decodes_raises_first_error_and_lists_the_others():
    errors: list[DecodeError] = []
    with pytest.raises(DecodeError) as ei:
        decode_datagram(hep3(chunk(0, b"")) + b"junk", now_us=NOW, errors=errors)
    assert ei.value.reason == "hep3-chunk-type0"
    # every failing part is counted once, whether or not another part decoded
    assert [e.reason for e in errors] == ["hep3-trailing"]
    assert (ei.value.size, errors[0].size) == (12, 4)


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"", "hep-truncated"),
        (b"HEP", "hep-truncated"),
        (b"HEP3\x00", "hep-truncated"),
        (b"\x02\x10", "hep-truncated"),
        (b"HEP3\x00\x05", "hep3-bad-length"),
        (b"HEP3\x00\x00rest", "hep3-bad-length"),
        (hep3(chunk(CHUNK_PAYLOAD, SIP), total=200), "hep3-bad-length"),
        (b"INVITE sip:x SIP/2.0\r\n\r\n", "hep-bad-version"),
        (bytes([0x80, 0x00]) + b"\x00" * 40, "hep-bad-version"),  # RTP
        (bytes([2, 16, 7, 17]) + b"\x00" * 40, "hep-bad-family"),
        (bytes([2, 16, 2, 17]) + b"\x00" * 16, "hep-truncated"),  # 20 bytes < 28
        (bytes([1, 40, 10, 17]) + b"\x00" * 30, "hep-truncated"),  # 34 bytes < 40
        (bytes([2, 40, 10, 17]) + b"\x00" * 44, "hep-truncated"),  # 48 bytes < 52
    ],
)
def test_refused_datagrams(data, expected):
    assert reason(data) == expected


def test_v2_headers_only_gives_empty_payload():
    data = encode_hep2(msg(payload=b""))
    assert len(data) == 28
    assert one(data).payload == b""


def test_v2_hp_l_is_ignored():
    data = bytearray(encode_hep2(msg()))
    data[1] = 0x02  # what sngrep writes
    assert one(bytes(data)).payload == SIP


# --------------------------------------------------------------------------- looks_like_hep

def test_looks_like_hep():
    assert looks_like_hep(encode_hep3(msg()))
    assert looks_like_hep(encode_hep2(msg()))
    assert looks_like_hep(encode_hep1(msg(src_ip="::1", dst_ip="::2", family=10)))
    assert not looks_like_hep(SIP)
    assert not looks_like_hep(b"\r\n\r\n")
    assert not looks_like_hep(b"HEP3")
    assert not looks_like_hep(b"HEP3\x00\x03" + b"\x00" * 20)  # length < 6
    assert not looks_like_hep(b"HEP3\xff\xff" + b"\x00" * 20)  # length beyond data
    assert not looks_like_hep(bytes([0x80, 0x08]) + b"\x00" * 170)  # RTP
    assert not looks_like_hep(bytes([2, 16, 7, 17]) + b"\x00" * 40)  # family 7
    assert not looks_like_hep(bytes([2, 16, 2, 99]) + b"\x00" * 40)  # proto 99
    assert not looks_like_hep(bytes([2, 16, 2, 17]) + b"\x00" * 24)  # headers only


# --------------------------------------------------------------------------- HepStream

def stream_packets() -> list[bytes]:
    return [
        encode_hep3(msg(payload=b"a")),
        encode_hep3(msg(payload=SIP * 20, src_ip="::1", dst_ip="::2", family=10)),
        hep3(*std_chunks(), chunk(CHUNK_PAYLOAD, b"c"), ident=b"EEP3"),
        hep3(),  # a bare 6-byte header is a (useless) complete packet
        encode_hep3(msg(payload=b"x" * 65000)),
    ]


def feed_all(stream: HepStream, data: bytes, step: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), step):
        out += stream.feed(data[i:i + step])
    return out


@pytest.mark.parametrize("step", [1, 2, 5, 6, 7, 1000, 70000, 10**7])
def test_stream_framing(step):
    pkts = stream_packets()
    data = b"".join(pkts)
    if step == 1:
        data = data[:20000]  # keep the byte-at-a-time run fast
        pkts = pkts[:2]
        data = b"".join(pkts)
    s = HepStream()
    assert feed_all(s, data, step) == pkts
    assert s.buffered == 0


def test_stream_partial_packet_is_kept_and_bounded():
    pkt = encode_hep3(msg(payload=b"x" * 65000))
    s = HepStream()
    assert s.feed(pkt[:-1]) == []
    assert s.buffered == len(pkt) - 1 <= 65535
    assert s.feed(pkt[-1:] + pkt[:3]) == [pkt]
    assert s.buffered == 3


def test_stream_same_packets_as_datagram_decoder():
    pkts = stream_packets()[:3]
    s = HepStream()
    framed = feed_all(s, b"".join(pkts), 1)
    decoded = [decode_datagram(p, now_us=NOW)[0] for p in framed]
    assert decoded == decode_datagram(b"".join(pkts), now_us=NOW)


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\n", b"HEP3\x00\x05xxxx", b"\x02\x10\x02\x11", b"X", b"HEX"]
)
def test_stream_bad_start(data):
    s = HepStream()
    with pytest.raises(DecodeError) as ei:
        feed_all(s, data, 1)
    assert ei.value.reason == "hep3-stream-bad-length"
    s2 = HepStream()
    with pytest.raises(DecodeError):
        s2.feed(data + b"\x00" * 10)
    with pytest.raises(DecodeError):  # the stream stays failed
        s2.feed(encode_hep3(msg()))


def test_stream_good_packets_before_bad_bytes_are_returned_first():
    good = encode_hep3(msg())
    s = HepStream()
    assert s.feed(good + b"JUNKJUNK") == [good]
    assert s.error is not None and s.error.reason == "hep3-stream-bad-length"
    with pytest.raises(DecodeError):
        s.feed(b"")


def test_stream_empty_feed():
    assert HepStream().feed(b"") == []


def test_packet_repr_and_equality():
    p = one(encode_hep3(msg()))
    assert "192.0.2.1:5060" in repr(p)
    assert p == one(encode_hep3(msg()))
    assert p != one(encode_hep3(msg(payload=b"other")))


def test_encode_bad_addresses_raise_value_error():
    with pytest.raises(ValueError):
        encode_hep3(msg(src_ip="not-an-ip"))
    with pytest.raises(ValueError):
        encode_hep2(msg(src_ip="192.0.2.1", dst_ip="2001:db8::1"))
    # bracketed IPv6 text is accepted
    assert one(encode_hep3(msg(src_ip="[2001:db8::1]", family=10))).src_ip == "2001:db8::1"
