"""HEP v1, v2 and v3 encoding: one :class:`~sipcaptool.record.CapturedMessage` -> one
HEP packet.

Used by agent mode (:mod:`sipcaptool.senders.hep`), the tests, the benchmarks and the
tools that write the test captures. Pure: no I/O, standard library only. The wire
layout, the chunk types and the transport mappings are those
:mod:`sipcaptool.decode.hep` reads, so what is encoded here decodes back to the same
message.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import zlib

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
    HEP3_MAX_LEN,
    IPPROTO_IDP,
)
from sipcaptool.decode.ip import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP
from sipcaptool.record import (
    AF_INET,
    AF_INET6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_TLS,
    PROTO_UDP,
    CapturedMessage,
)

__all__ = ["encode_hep1", "encode_hep2", "encode_hep3"]

# Transport enum -> IP protocol (TLS runs over TCP in HEPv3; HEPv1/v2 mark it with
# Kamailio's IPPROTO_IDP).
_IPPROTO_OF_V3 = {PROTO_UDP: IPPROTO_UDP, PROTO_TCP: IPPROTO_TCP, PROTO_TLS: IPPROTO_TCP,
                  PROTO_SCTP: IPPROTO_SCTP}
_IPPROTO_OF_V12 = {PROTO_UDP: IPPROTO_UDP, PROTO_TCP: IPPROTO_TCP, PROTO_TLS: IPPROTO_IDP,
                   PROTO_SCTP: IPPROTO_SCTP}


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> tuple[int, bytes]:
    """Printable address -> (family, packed bytes)."""
    addr = ipaddress.ip_address(text.strip("[]"))
    return (AF_INET if addr.version == 4 else AF_INET6), addr.packed


_c_u8 = struct.Struct("!HHHB").pack
_c_u16 = struct.Struct("!HHHH").pack
_c_u32 = struct.Struct("!HHHI").pack
_c_hdr = struct.Struct("!HHH").pack


def _chunk(ctype: int, value: bytes) -> bytes:
    if len(value) > HEP3_MAX_LEN - 12:
        raise ValueError(f"HEP3 chunk {ctype} of {len(value)} bytes does not fit a packet")
    return _c_hdr(0, ctype, 6 + len(value)) + value


def encode_hep3(
    msg: CapturedMessage,
    *,
    capture_id: int = 0,
    auth_key: bytes | None = None,
    node_name: str | None = None,
    compress: bool = False,
    ip_proto: int | None = None,
) -> bytes:
    """Encode a message as one HEPv3 packet.

    Chunks, in the usual agent order: family, IP protocol, addresses (``CHUNK_SRC_IP4``
    or ``CHUNK_SRC_IP6`` from the source address's family; the destination uses its
    own family's chunk), ports, time (from ``msg.ts_us``), proto_type
    (``msg.hep_type``), capture id, auth key, correlation id (``msg.correlation_id``
    when not None), node name, payload (``CHUNK_PAYLOAD``, or zlib-compressed in
    ``CHUNK_COMPRESSED_PAYLOAD`` with ``compress``).

    ``ip_proto`` defaults from ``msg.proto`` (1 -> 17, 2 -> 6, 3 -> 6, 4 -> 132), else
    ``msg.hep_ip_proto``, else 0.

    Raises:
        ValueError: bad address text, or the packet would exceed 65535 bytes.
    """
    if ip_proto is None:
        ip_proto = _IPPROTO_OF_V3.get(msg.proto)
        if ip_proto is None:
            ip_proto = msg.hep_ip_proto or 0
    sfam, sraw = _parse_ip(msg.src_ip)
    dfam, draw = _parse_ip(msg.dst_ip)
    sec, usec = divmod(msg.ts_us, 1_000_000)
    parts = [
        _c_u8(0, CHUNK_IP_FAMILY, 7, sfam),
        _c_u8(0, CHUNK_IP_PROTO, 7, ip_proto & 0xFF),
        _chunk(CHUNK_SRC_IP4 if sfam == AF_INET else CHUNK_SRC_IP6, sraw),
        _chunk(CHUNK_DST_IP4 if dfam == AF_INET else CHUNK_DST_IP6, draw),
        _c_u16(0, CHUNK_SRC_PORT, 8, msg.src_port),
        _c_u16(0, CHUNK_DST_PORT, 8, msg.dst_port),
        _c_u32(0, CHUNK_TIME_SEC, 10, sec & 0xFFFFFFFF),
        _c_u32(0, CHUNK_TIME_USEC, 10, usec),
        _c_u8(0, CHUNK_PROTO_TYPE, 7, msg.hep_type & 0xFF),
        _c_u32(0, CHUNK_CAPTURE_ID, 10, capture_id & 0xFFFFFFFF),
    ]
    if auth_key is not None:
        parts.append(_chunk(CHUNK_AUTH_KEY, auth_key))
    if msg.correlation_id is not None:
        parts.append(_chunk(CHUNK_CORRELATION_ID, msg.correlation_id.encode()))
    if node_name is not None:
        parts.append(_chunk(CHUNK_NODE_NAME, node_name.encode()))
    if compress:
        parts.append(_chunk(CHUNK_COMPRESSED_PAYLOAD, zlib.compress(msg.payload)))
    else:
        parts.append(_chunk(CHUNK_PAYLOAD, msg.payload))
    body = b"".join(parts)
    total = 6 + len(body)
    if total > HEP3_MAX_LEN:
        raise ValueError(f"HEP3 packet of {total} bytes exceeds {HEP3_MAX_LEN}")
    return b"HEP3" + struct.pack("!H", total) + body


def _encode_hep12(msg: CapturedMessage, version: int, capture_id: int, ip_proto: int | None) -> bytes:
    if ip_proto is None:
        ip_proto = _IPPROTO_OF_V12.get(msg.proto)
        if ip_proto is None:
            ip_proto = msg.hep_ip_proto or 0
    sfam, sraw = _parse_ip(msg.src_ip)
    dfam, draw = _parse_ip(msg.dst_ip)
    if sfam != dfam:
        raise ValueError("HEPv1/v2 need both addresses of the same family")
    hlen = 8 + 2 * len(sraw)  # 16 / 40, as captagent sets hp_l
    head = struct.pack("!BBBBHH", version, hlen, sfam, ip_proto & 0xFF,
                       msg.src_port, msg.dst_port) + sraw + draw
    if version == 1:
        return head + msg.payload
    sec, usec = divmod(msg.ts_us, 1_000_000)
    return head + struct.pack("<IIHxx", sec & 0xFFFFFFFF, usec, capture_id & 0xFFFF) + msg.payload


def encode_hep2(msg: CapturedMessage, *, capture_id: int = 0, ip_proto: int | None = None) -> bytes:
    """Encode a message as HEPv2: header, little-endian time header (12 bytes with the
    2 padding bytes, captid u16 LE), payload. ``ip_proto`` defaults from ``msg.proto``
    (1 -> 17, 2 -> 6, 3 -> 22, 4 -> 132)."""
    return _encode_hep12(msg, 2, capture_id, ip_proto)


def encode_hep1(msg: CapturedMessage, *, ip_proto: int | None = None) -> bytes:
    """Encode a message as HEPv1: header then payload (no time, no capture id)."""
    return _encode_hep12(msg, 1, 0, ip_proto)
