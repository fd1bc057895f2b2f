"""Property tests for the HEP codec.

The invariant (as for any decoder fed by the network): whatever the bytes, decoding
returns packets or raises DecodeError -- never any other exception.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcaptool.decode.hep import (
    CHUNK_AUTH_KEY,
    CHUNK_CAPTURE_ID,
    CHUNK_COMPRESSED_PAYLOAD,
    CHUNK_CORRELATION_ID,
    CHUNK_DST_IP4,
    CHUNK_DST_IP6,
    CHUNK_DST_PORT,
    CHUNK_IP_FAMILY,
    CHUNK_IP_PROTO,
    CHUNK_NODE_NAME,
    CHUNK_PAYLOAD,
    CHUNK_PROTO_TYPE,
    CHUNK_SRC_IP4,
    CHUNK_SRC_IP6,
    CHUNK_SRC_PORT,
    CHUNK_TIME_SEC,
    CHUNK_TIME_USEC,
    HepPacket,
    _ip6_str,
    decode_datagram,
    looks_like_hep,
)
from sipcaptool.decode.hep_stream import HepStream
from sipcaptool.encode.hep import encode_hep1, encode_hep2, encode_hep3
from sipcaptool.errors import DecodeError
from sipcaptool.record import CapturedMessage

NOW = 1_700_000_000_000_000


def decodes_or_raises(data: bytes, **kw) -> list[HepPacket]:
    try:
        pkts = decode_datagram(data, now_us=NOW, **kw)
    except DecodeError as exc:
        assert isinstance(exc.reason, str) and exc.reason.startswith("hep")
        return []
    assert pkts and all(isinstance(p, HepPacket) for p in pkts)
    for p in pkts:
        m = p.to_message()  # mapping never fails either
        assert m.family in (2, 10)
    return pkts


# --------------------------------------------------------------------------- strategies

def _chunk(vendor: int, ctype: int, value: bytes) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(value)) + value


# Chunk types the decoder interprets, with values of the right and of wrong sizes.
chunk_values = st.one_of(
    st.tuples(st.just(0), st.integers(0, 0x30), st.binary(max_size=20)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_IP_FAMILY, CHUNK_IP_PROTO, CHUNK_PROTO_TYPE]),
              st.binary(min_size=1, max_size=1)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_SRC_IP4, CHUNK_DST_IP4]),
              st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_SRC_IP4, CHUNK_DST_IP4]),
              st.binary(min_size=4, max_size=4).map(lambda b: b"\0" * 10 + b"\xff\xff" + b)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_SRC_IP6, CHUNK_DST_IP6]),
              st.binary(min_size=16, max_size=16)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_SRC_PORT, CHUNK_DST_PORT]),
              st.binary(min_size=2, max_size=2)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_TIME_SEC, CHUNK_TIME_USEC, CHUNK_CAPTURE_ID]),
              st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(0), st.sampled_from([CHUNK_AUTH_KEY, CHUNK_PAYLOAD, CHUNK_CORRELATION_ID,
                                           CHUNK_NODE_NAME]), st.binary(max_size=40)),
    st.tuples(st.just(0), st.just(CHUNK_COMPRESSED_PAYLOAD),
              st.binary(max_size=40).map(zlib.compress)),
    st.tuples(st.integers(1, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=10)),
).map(lambda t: _chunk(*t))


@st.composite
def hep3_packets(draw) -> bytes:
    chunks = draw(st.lists(chunk_values, max_size=16))
    body = b"".join(chunks)
    ident = draw(st.sampled_from([b"HEP3", b"EEP3"]))
    total = 6 + len(body)
    if draw(st.integers(0, 9)) == 0:  # sometimes lie about the length
        total = draw(st.integers(0, 0xFFFF))
    return ident + struct.pack("!H", total & 0xFFFF) + body


@st.composite
def mutated(draw, base) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed)


@st.composite
def messages(draw, *, v6: bool | None = None) -> CapturedMessage:
    if v6 is None:
        v6 = draw(st.booleans())
    addr = ipv6 if v6 else ipv4
    return CapturedMessage(
        ts_us=draw(st.integers(1, 2**32 - 1)) * 1_000_000 + draw(st.integers(0, 999_999)),
        src_ip=draw(addr),
        src_port=draw(st.integers(0, 65535)),
        dst_ip=draw(addr),
        dst_port=draw(st.integers(0, 65535)),
        proto=draw(st.sampled_from([1, 2, 4])),
        family=10 if v6 else 2,
        payload=draw(st.binary(max_size=300)),
        node_id=None,
        correlation_id=draw(st.one_of(st.none(), st.text(max_size=20).filter(lambda s: "\0" not in s))),
        hep_type=draw(st.sampled_from([1, 5, 32, 99, 100])),
    )


# --------------------------------------------------------------------------- decode

@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise(data):
    decodes_or_raises(data)
    looks_like_hep(data)


@settings(max_examples=500)
@given(st.one_of(
    hep3_packets(),
    st.lists(hep3_packets(), min_size=2, max_size=4).map(b"".join),
    mutated(hep3_packets()),
))
def test_structured_hep3_decode_or_raise(data):
    decodes_or_raises(data)
    decodes_or_raises(data, auth_key=b"k")


@settings(max_examples=300)
@given(mutated(st.one_of(
    messages().map(lambda m: encode_hep3(m, capture_id=5, auth_key=b"k", node_name="n")),
    messages().map(lambda m: encode_hep3(m, compress=True)),
    messages().map(lambda m: encode_hep2(m, capture_id=5)),
    messages().map(encode_hep1),
)))
def test_mutated_encodings_decode_or_raise(data):
    decodes_or_raises(data)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=120))
def test_v1_v2_headers_with_any_rest(rest):
    for head in (bytes([1, 16, 2, 17]), bytes([2, 16, 2, 17]), bytes([2, 40, 10, 6]), bytes([1, 0, 10, 132])):
        decodes_or_raises(head + rest)


# --------------------------------------------------------------------------- round trips

@settings(max_examples=300)
@given(messages(), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_hep3_round_trip(m, captid, compress, keyed):
    key = b"key" if keyed else None
    data = encode_hep3(m, capture_id=captid, compress=compress, auth_key=key)
    assert looks_like_hep(data)
    (p,) = decode_datagram(data, now_us=NOW, auth_key=key)
    out = p.to_message()
    assert out.node_id == captid
    assert out.hep_family == m.family and out.hep_ip_proto == {1: 17, 2: 6, 4: 132}[m.proto]
    m.node_id, m.hep_family, m.hep_ip_proto = captid, out.hep_family, out.hep_ip_proto
    assert out == m


@settings(max_examples=300)
@given(messages(), st.integers(0, 65535), st.booleans())
def test_hep12_round_trip(m, captid, v2):
    m.hep_type, m.correlation_id = 1, None
    data = encode_hep2(m, capture_id=captid) if v2 else encode_hep1(m)
    assert looks_like_hep(data) or not m.payload
    (p,) = decode_datagram(data, now_us=NOW)
    out = p.to_message()
    m.hep_ip_proto = {1: 17, 2: 6, 4: 132}[m.proto]
    if v2:
        m.node_id = captid
    else:
        m.ts_us = NOW
    assert out == m


@settings(max_examples=200)
@given(st.lists(messages(), min_size=1, max_size=5))
def test_concatenated_round_trip(ms):
    data = b"".join(encode_hep3(m) for m in ms)
    pkts = decode_datagram(data, now_us=NOW)
    assert [p.payload for p in pkts] == [m.payload for m in ms]


@settings(max_examples=500)
@given(st.binary(min_size=16, max_size=16))
def test_ipv6_text_matches_ipaddress(raw):
    addr = ipaddress.IPv6Address(raw)
    if addr.ipv4_mapped is None:  # Python >= 3.13 prints mapped addresses dotted
        assert _ip6_str(raw) == addr.compressed
    assert ipaddress.IPv6Address(_ip6_str(raw)) == addr


# --------------------------------------------------------------------------- stream

@settings(max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=20))
def test_stream_any_bytes(data, cuts):
    s = HepStream()
    pos = 0
    try:
        for size in cuts + [len(data)]:
            for pkt in s.feed(data[pos:pos + size]):
                assert pkt[:4] in (b"HEP3", b"EEP3") and len(pkt) >= 6
            pos += size
    except DecodeError as exc:
        assert exc.reason == "hep3-stream-bad-length"
    assert s.buffered < 65536


@settings(max_examples=200)
@given(st.lists(messages(), min_size=1, max_size=4), st.lists(st.integers(1, 300), max_size=30),
       st.binary(max_size=20))
def test_stream_split_anywhere_gives_same_packets(ms, cuts, tail):
    pkts = [encode_hep3(m) for m in ms]
    data = b"".join(pkts)
    s = HepStream()
    got: list[bytes] = []
    pos = 0
    for size in cuts:
        got += s.feed(data[pos:pos + size])
        pos += size
    got += s.feed(data[pos:])
    assert got == pkts and s.buffered == 0
    # whatever follows is either more stream or an error, never a crash
    try:
        s.feed(tail)
    except DecodeError as exc:
        assert exc.reason == "hep3-stream-bad-length"


@settings(max_examples=300)
@given(messages(), st.integers(0, 2**32 - 1), st.binary(max_size=12))
def test_fast_path_agrees_with_chunk_loop(m, captid, vendor_data):
    """The standard-layout fast path and the generic chunk loop decode alike: a vendor
    chunk put first forces the loop for the same chunks."""
    data = encode_hep3(m, capture_id=captid)
    vendor = struct.pack("!HHH", 3, 1, 6 + len(vendor_data)) + vendor_data
    slow = b"HEP3" + struct.pack("!H", len(data) + len(vendor)) + vendor + data[6:]
    (fast_pkt,) = decode_datagram(data, now_us=NOW)
    (slow_pkt,) = decode_datagram(slow, now_us=NOW)
    assert slow_pkt.vendor_chunks == 1 and fast_pkt.vendor_chunks == 0
    slow_pkt.vendor_chunks = 0
    assert fast_pkt == slow_pkt
