"""HEP (Homer Encapsulation Protocol) v1, v2 and v3: decoding, and the wire's names.

Pure functions; standard library only, no I/O. The other HEP rooms: cutting a TCP
stream into packets is :mod:`sipcaptool.decode.hep_stream`, encoding (for agent mode
and the tests) :mod:`sipcaptool.encode.hep`, sending :mod:`sipcaptool.senders.hep`.
The generic chunk types are named here, ``CHUNK_*`` (as dpkt names its families), for
all the HEP rooms.

Why this module is longer than most (about 800 lines, a third of them this text and the
names of the wire): what is left is one decoder, whose parts (HEPv1/v2, HEPv3 chunks,
several packets per datagram, the whole-datagram gzip) share one inflate budget, one
authentication check and one way of sizing their errors; split, each part would have
to reach into the others' state.

Wire facts (see the project's HEP notes):

* HEPv1/v2 are fixed C structs without a magic number: version (1 or 2), a u8 header
  length (ignored on receive, as Kamailio does), address family (Linux ``AF_INET`` 2 /
  ``AF_INET6`` 10), IP protocol, source and destination ports (network order), source
  and destination addresses (4 or 16 bytes). The v1 payload starts right after (offset
  16 / 40). v2 adds ``struct hep_timehdr {u32 tv_sec; u32 tv_usec; u16 captid;}`` which
  is *not* packed: 12 bytes, **little-endian** (host order of every known sender), with
  2 padding bytes, so the v2 payload starts at 28 / 52.
* HEPv3 is ``"HEP3"`` (or ``"EEP3"``), a u16 total length including the 6-byte header,
  then chunks: u16 vendor, u16 type, u16 length including the 6-byte chunk header, data.
  Everything in network order. Chunks of a non-zero vendor are skipped (and counted);
  unknown generic chunks are skipped; a generic chunk of type 0 invalidates the packet
  (as in Kamailio). A UDP datagram may hold several HEPv3 packets back to back.

Compressed input is bounded by bytes, not by count: a datagram (a TCP-framed packet, a
capture frame) has an inflate budget (``max_inflated``, default :data:`MAX_INFLATED`)
that the whole-datagram gzip and every chunk 0x0010 in it share; nothing inflates past
it, and a whole-datagram gzip is inflated a few KB at a time, each packet decoded
before more is inflated. With an authentication key, a packet's key is checked before
its payload is inflated, and a gzipped datagram is left at its first packet without
the key: a sender without it costs about as much as an honest packet.

Decoding follows Kamailio's sipcapture where it is sound and does the right thing where
Kamailio crashes or drops a message for its own limits; each such place says so.

Errors are :class:`~sipcaptool.errors.DecodeError` with one of these stable reasons:

====================  ==============================================================
``hep-truncated``     shorter than the headers its version/family needs
``hep-bad-version``   first byte is not 1 or 2 and no HEP3/EEP3 id (e.g. plain SIP)
``hep-bad-family``    HEPv1/v2 address family other than 2 or 10
``hep3-bad-length``   HEPv3 total length < 6 or beyond the end of the datagram
``hep3-bad-chunk``    a chunk shorter than its header, crossing the end of its packet,
                      or a fixed-size chunk (port, time, address...) of the wrong size
``hep3-chunk-type0``  generic chunk type 0
``hep3-trailing``     bytes after the last HEPv3 packet of a datagram that are not one
``hep-no-address``    source or destination address missing
``hep-no-payload``    no payload chunk (0x000f or 0x0010)
``hep-inflate``       compressed payload (chunk 0x0010, or a whole datagram gzipped as
                      heplify can send it) that is not zlib/gzip, or a datagram whose
                      compressed parts inflate past its budget (``max_inflated``)
``hep-auth``          an authentication key is required and the packet's differs
``hep3-stream-bad-length``  HEP over TCP: not a HEP3 header, or a length < 6
====================  ==============================================================
"""

from __future__ import annotations

import hmac
import struct
import zlib
from dataclasses import dataclass

from sipcaptool.decode.ip import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP
from sipcaptool.errors import DecodeError
from sipcaptool.record import (
    AF_INET,
    AF_INET6,
    HEP_TYPE_SIP,
    PROTO_NONE,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_TLS,
    PROTO_UDP,
    CapturedMessage,
)

__all__ = [
    "CHUNK_AUTH_KEY",
    "CHUNK_CAPTURE_ID",
    "CHUNK_COMPRESSED_PAYLOAD",
    "CHUNK_CORRELATION_ID",
    "CHUNK_DST_IP4",
    "CHUNK_DST_IP6",
    "CHUNK_DST_MAC",
    "CHUNK_DST_PORT",
    "CHUNK_ETH_TYPE",
    "CHUNK_EVENT_TYPE",
    "CHUNK_GEO_LOCATION",
    "CHUNK_GROUP_ID",
    "CHUNK_IP_FAMILY",
    "CHUNK_IP_PROTO",
    "CHUNK_IP_TOS",
    "CHUNK_JITTER",
    "CHUNK_KEEP_ALIVE",
    "CHUNK_MOS",
    "CHUNK_NODE_NAME",
    "CHUNK_PAYLOAD",
    "CHUNK_PAYLOAD_JSON_KEYS",
    "CHUNK_PROTO_TYPE",
    "CHUNK_R_FACTOR",
    "CHUNK_SRC_IP4",
    "CHUNK_SRC_IP6",
    "CHUNK_SRC_MAC",
    "CHUNK_SRC_PORT",
    "CHUNK_TAG_TYPE",
    "CHUNK_TAGS_VALUES",
    "CHUNK_TCP_FLAGS",
    "CHUNK_TIME_SEC",
    "CHUNK_TIME_USEC",
    "CHUNK_TRANSACTION_TYPE",
    "CHUNK_VLAN_ID",
    "HEP3_IDS",
    "HEP3_MAX_LEN",
    "IPPROTO_IDP",
    "IPPROTO_SCTP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "MAX_INFLATED",
    "HepPacket",
    "decode_datagram",
    "looks_like_hep",
]

# Generic chunk types (vendor 0) of HEPv3, as the HEP specification (rev 37) numbers
# them. A generic chunk of type 0 has no name: it invalidates the packet.
CHUNK_IP_FAMILY = 0x0001           # uint8: 2 IPv4, 10 IPv6
CHUNK_IP_PROTO = 0x0002            # uint8: 6 TCP, 17 UDP, 132 SCTP
CHUNK_SRC_IP4 = 0x0003             # inet4-addr (some agents send ::ffff:a.b.c.d)
CHUNK_DST_IP4 = 0x0004
CHUNK_SRC_IP6 = 0x0005             # inet6-addr
CHUNK_DST_IP6 = 0x0006
CHUNK_SRC_PORT = 0x0007            # uint16
CHUNK_DST_PORT = 0x0008
CHUNK_TIME_SEC = 0x0009            # uint32: seconds since the epoch
CHUNK_TIME_USEC = 0x000A           # uint32: microseconds
CHUNK_PROTO_TYPE = 0x000B          # uint8: what the payload is (1 SIP, 5 RTCP, 100 log...)
CHUNK_CAPTURE_ID = 0x000C          # uint32: the agent's id (the node column)
CHUNK_KEEP_ALIVE = 0x000D          # uint16: keep-alive timer, seconds
CHUNK_AUTH_KEY = 0x000E            # octet-string: authentication key
CHUNK_PAYLOAD = 0x000F             # octet-string: the captured payload
CHUNK_COMPRESSED_PAYLOAD = 0x0010  # octet-string: the payload, zlib or gzip
CHUNK_CORRELATION_ID = 0x0011      # octet-string: internal correlation id
CHUNK_VLAN_ID = 0x0012             # uint16
CHUNK_NODE_NAME = 0x0013           # octet-string: the agent's name
CHUNK_SRC_MAC = 0x0014             # uint64
CHUNK_DST_MAC = 0x0015
CHUNK_ETH_TYPE = 0x0016            # uint16
CHUNK_TCP_FLAGS = 0x0017           # uint8
CHUNK_IP_TOS = 0x0018              # uint8
CHUNK_MOS = 0x0020                 # uint16: MOS x 100
CHUNK_R_FACTOR = 0x0021            # uint16
CHUNK_GEO_LOCATION = 0x0022        # octet-string
CHUNK_JITTER = 0x0023              # uint32
CHUNK_TRANSACTION_TYPE = 0x0024    # octet-string: call, registration
CHUNK_PAYLOAD_JSON_KEYS = 0x0025   # octet-string
CHUNK_TAGS_VALUES = 0x0026         # octet-string
CHUNK_TAG_TYPE = 0x0027            # uint16
CHUNK_EVENT_TYPE = 0x0028          # uint16: 1 recording, 2 recording LI
CHUNK_GROUP_ID = 0x0029            # octet-string

HEP3_IDS = (b"HEP3", b"EEP3")
HEP3_MAX_LEN = 65535
# Inflated bytes allowed per datagram (or TCP-framed HEP packet, or capture frame),
# shared by the whole-datagram gzip and every chunk 0x0010 inside it: four times the
# largest datagram, so an honest packet always fits (a 64 KB SIP message compresses to
# at least a few hundred bytes, and one datagram holds one, or a few small ones), while
# what one datagram can cost stays a fixed few hundred KB. The ``hep_max_inflated``
# setting changes it.
MAX_INFLATED = 256 * 1024
_INFLATE_STEP = 4096    # whole-datagram gzip: inflated at least this much at a time

IPPROTO_IDP = 22  # Kamailio's "fake TLS" marker in HEPv1/v2

# IP protocol -> Kamailio transport enum.
# HEPv3: Kamailio 5.6.3 maps only 17 and 6 and leaves the variable uninitialised for
# anything else (observed 0 for SCTP); we map SCTP to 4 as HEPv2 does (a fix).
_PROTO_V3: dict[int | None, int] = {
    IPPROTO_UDP: PROTO_UDP,
    IPPROTO_TCP: PROTO_TCP,
    IPPROTO_SCTP: PROTO_SCTP,
}
_PROTO_V12: dict[int | None, int] = {
    IPPROTO_UDP: PROTO_UDP,
    IPPROTO_TCP: PROTO_TCP,
    IPPROTO_IDP: PROTO_TLS,
    IPPROTO_SCTP: PROTO_SCTP,
}

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_chunk_hdr = struct.Struct("!HHH").unpack_from
_ports = struct.Struct("!HH").unpack_from
_v2_time = struct.Struct("<IIH").unpack_from
_ipv6_groups = struct.Struct("!8H").unpack

# The ten chunks most agents send first, in this order: family, IP proto, IPv4 src and
# dst, ports, time sec/usec, proto_type, capture id (chunk headers kept as 6s fields).
# The IPv6 variant has the IPv6 address chunks, of 16 bytes, instead of the IPv4 ones.
def _std_layout(alen: int, src_type: int, dst_type: int) -> tuple[struct.Struct, tuple[bytes, ...]]:
    fmt = f"!6sB6sB6s{alen}s6s{alen}s6sH6sH6sI6sI6sB6sI"
    sizes = ((CHUNK_IP_FAMILY, 1), (CHUNK_IP_PROTO, 1), (src_type, alen), (dst_type, alen),
             (CHUNK_SRC_PORT, 2), (CHUNK_DST_PORT, 2), (CHUNK_TIME_SEC, 4),
             (CHUNK_TIME_USEC, 4), (CHUNK_PROTO_TYPE, 1), (CHUNK_CAPTURE_ID, 4))
    return struct.Struct(fmt), tuple(struct.pack("!HHH", 0, t, 6 + n) for t, n in sizes)


_STD4, _STD4_HEADERS = _std_layout(4, CHUNK_SRC_IP4, CHUNK_DST_IP4)
_STD6, _STD6_HEADERS = _std_layout(16, CHUNK_SRC_IP6, CHUNK_DST_IP6)


# --------------------------------------------------------------------------- addresses

_ADDR_CACHE: dict[bytes, str] = {}
_ADDR_CACHE_MAX = 8192


def _ip4_str(raw: bytes) -> str:
    s = _ADDR_CACHE.get(raw)
    if s is None:
        s = f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
        if len(_ADDR_CACHE) >= _ADDR_CACHE_MAX:
            _ADDR_CACHE.clear()
        _ADDR_CACHE[raw] = s
    return s


def _ip6_str(raw: bytes) -> str:
    """Compressed lower-case IPv6 text, hex groups only (as Kamailio's ip_addr2a).

    The longest run of two or more zero groups becomes ``::`` (the first one on a tie);
    an IPv4-mapped value is printed in hex (``::ffff:c000:201``), like Python 3.11's
    ``ipaddress`` and unlike 3.13's, so the output does not depend on the Python version.
    """
    s = _ADDR_CACHE.get(raw)
    if s is not None:
        return s
    groups = _ipv6_groups(raw)
    best_start, best_len, run_start, run_len = -1, 0, -1, 0
    for i, g in enumerate(groups):
        if g == 0:
            if run_len == 0:
                run_start = i
            run_len += 1
            if run_len > best_len:
                best_start, best_len = run_start, run_len
        else:
            run_len = 0
    hexes = [f"{g:x}" for g in groups]
    if best_len > 1:
        s = ":".join(hexes[:best_start]) + "::" + ":".join(hexes[best_start + best_len:])
    else:
        s = ":".join(hexes)
    if len(_ADDR_CACHE) >= _ADDR_CACHE_MAX:
        _ADDR_CACHE.clear()
    _ADDR_CACHE[raw] = s
    return s


# --------------------------------------------------------------------------- packet

@dataclass(slots=True, repr=False)
class HepPacket:
    """One decoded HEP packet (compared field by field; not hashable).

    Attributes:
        version: 1, 2 or 3.
        family: HEPv1/v2 ``hp_f``; HEPv3 ``CHUNK_IP_FAMILY`` raw value (None if absent).
        ip_proto: HEPv1/v2 ``hp_p``; HEPv3 ``CHUNK_IP_PROTO`` raw value (None if absent).
        src_family: address family of the source address (2 or 10): the family the
            ``family`` column stores.
        src_ip, dst_ip: printable addresses (dotted quad; compressed lower-case IPv6).
        src_port, dst_port: ports (0 if the chunk is absent).
        ts_sec, ts_usec: HEP time (None if absent; v1 has none).
        proto_type: HEPv3 ``CHUNK_PROTO_TYPE`` raw value (None if absent); 1 for v1/v2.
        capture_id: HEPv3 ``CHUNK_CAPTURE_ID`` (u32), HEPv2 ``captid`` (u16 LE); None if
            absent.
        auth_key: ``CHUNK_AUTH_KEY`` up to its first NUL, or None.
        correlation_id: ``CHUNK_CORRELATION_ID`` up to its first NUL (UTF-8, invalid
            bytes replaced), '' when empty, None when absent.
        node_name: ``CHUNK_NODE_NAME`` (UTF-8, invalid bytes replaced) or None.
        payload: the captured payload bytes (inflated if it came in
            ``CHUNK_COMPRESSED_PAYLOAD``).
        compressed: True when the payload came from ``CHUNK_COMPRESSED_PAYLOAD``.
        vendor_chunks: number of vendor-specific (vendor id != 0) chunks skipped.
        recv_us: the ``now_us`` given to :func:`decode_datagram` (time of reception).
    """

    version: int
    family: int | None
    ip_proto: int | None
    src_family: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    ts_sec: int | None
    ts_usec: int | None
    proto_type: int | None
    capture_id: int | None
    auth_key: bytes | None
    correlation_id: str | None
    node_name: str | None
    payload: bytes
    compressed: bool = False
    vendor_chunks: int = 0
    recv_us: int = 0

    def __repr__(self) -> str:
        return (
            f"HepPacket(v{self.version} {self.src_ip}:{self.src_port} -> "
            f"{self.dst_ip}:{self.dst_port} ip_proto={self.ip_proto} "
            f"type={self.proto_type} ts={self.ts_sec}.{self.ts_usec} "
            f"captid={self.capture_id} payload={len(self.payload)}B)"
        )

    def to_message(self, now_us: int | None = None) -> CapturedMessage:
        """Map this packet to a :class:`CapturedMessage` the way sipcapture does.

        * time: ``ts_sec * 1e6 + ts_usec`` (usec not range-checked) when ``ts_sec`` is
          present and non-zero; otherwise ``now_us`` (default: :attr:`recv_us`).
        * node_id: the capture id (0 when absent) when ``ts_sec != 0``, else None
          (Kamailio appends ``:captid`` to the node name only for timed packets).
        * proto: HEPv3 17 -> 1, 6 -> 2, 132 -> 4 (Kamailio leaves SCTP uninitialised),
          else 0; HEPv1/v2 17 -> 1, 6 -> 2, 22 -> 3, 132 -> 4, else 0.
        * family: of the source address (not the HEPv3 family chunk).
        * hep_type: the proto_type chunk; 1 (SIP) when absent, see :func:`_decode_hep3`.
        """
        if self.ts_sec:
            ts_us = self.ts_sec * 1_000_000 + (self.ts_usec or 0)
            node_id: int | None = self.capture_id or 0
        else:
            ts_us = self.recv_us if now_us is None else now_us
            node_id = None
        if self.version == 3:
            proto = _PROTO_V3.get(self.ip_proto, PROTO_NONE)
            hep_family = self.family
        else:
            proto = _PROTO_V12.get(self.ip_proto, PROTO_NONE)
            hep_family = None
        return CapturedMessage(
            ts_us,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
            proto,
            self.src_family,
            self.payload,
            node_id,
            self.correlation_id,
            HEP_TYPE_SIP if self.proto_type is None else self.proto_type,
            hep_family,
            self.ip_proto,
        )


# --------------------------------------------------------------------------- detection

def looks_like_hep(data: bytes) -> bool:
    """Cheap content check: could this UDP/TCP payload be a HEP packet?

    Used to recognise HEP on any port inside captures. True for a HEP3/EEP3 id with a
    sane total length and first chunk, or for a HEPv1/v2 header with version 1/2, family
    2/10, IP protocol 6/17/22/132, and a datagram long enough for its headers plus a
    payload. ``hp_l`` is not checked: senders disagree on it (sngrep writes garbage).
    """
    n = len(data)
    if n < 6:
        return False
    head = data[:4]
    if head == b"HEP3" or head == b"EEP3":
        total: int = _u16(data, 4)[0]
        if total < 12 or total > n:
            return False
        clen: int = _u16(data, 10)[0]
        return 6 <= clen <= total - 6
    v = data[0]
    if v != 1 and v != 2:
        return False
    fam = data[2]
    if fam == AF_INET:
        need = 16
    elif fam == AF_INET6:
        need = 40
    else:
        return False
    if v == 2:
        need += 12
    return data[3] in _PROTO_V12 and n > need


# --------------------------------------------------------------------------- decoding

def _inflate(raw: bytes, budget: list[int]) -> bytes:
    """Inflate a zlib or gzip stream, refusing output past ``budget[0]`` bytes.

    ``budget`` is the datagram's inflate budget (one-element list), shared with every
    other compressed part of it: what is inflated here is taken from it. Never more
    than ``budget[0] + 1`` bytes are produced, whatever the stream claims.
    """
    left = budget[0]
    d = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header, auto-detected
    try:
        out = d.decompress(raw, left + 1)
    except zlib.error as exc:
        raise DecodeError("hep-inflate", str(exc)) from None
    budget[0] = left - len(out)
    if budget[0] < 0 or d.unconsumed_tail:
        raise DecodeError("hep-inflate", f"inflates past the {left} bytes left of the "
                          "datagram's inflate budget")
    if not d.eof:
        raise DecodeError("hep-inflate", "compressed stream cut off")
    return out


def _text(raw: bytes) -> str:
    """C-string semantics (up to the first NUL) and UTF-8 with invalid bytes replaced."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raw = raw[:nul]
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode(errors="replace")


def _decode_hep3(buf: bytes, start: int, end: int, recv_us: int,
                 auth: bytes | None = None, budget: list[int] | None = None) -> HepPacket:
    """Decode the HEPv3 packet ``buf[start:end]`` (its header already checked).

    With ``auth``, the packet's key (chunk 0x000e) is checked as soon as its chunks
    are read, before a compressed payload is inflated: a sender without the key costs
    one pass over the chunk headers. A compressed payload takes its output from
    ``budget`` (the datagram's; a fresh MAX_INFLATED one when None).

    Like Kamailio, the last chunk of each type wins (also between 0x000f and 0x0010,
    and between the IPv4 and IPv6 address chunks). Unlike Kamailio we do not require
    "at least 9 elements": what a row needs is the two addresses and a payload, so only
    their absence is an error; missing ports are 0, a missing time means "now".

    A missing proto_type chunk (0x000b) crashes Kamailio 5.6.3 (NULL dereference). We
    keep ``proto_type`` None and treat the packet as SIP (type 1): HEPv1/v2 carry SIP
    only and heplify-server assumes type 1 for them too, the payload still has to pass
    the SIP parser downstream (which counts what it rejects), and dropping the packet
    here would lose SIP from agents that omit the chunk.
    """
    i = start + 6
    family = ip_proto = proto_type = capture_id = ts_sec = ts_usec = None
    src_raw = dst_raw = None
    src_port = dst_port = 0
    auth_key = corr = node = None
    payload = None
    compressed = False
    vendor_chunks = 0
    chunk_hdr = _chunk_hdr
    # Fast path: most agents (Kamailio siptrace, heplify, captagent) start with the same
    # ten fixed-size chunks; one unpack replaces ten loop iterations when the chunk
    # headers match. The chunks after them go through the loop (last chunk still wins).
    if end - i > 6 and buf[i + 6] == AF_INET6:
        std, std_headers = _STD6, _STD6_HEADERS
    else:
        std, std_headers = _STD4, _STD4_HEADERS
    if end - i >= std.size:
        fixed = std.unpack_from(buf, i)
        if fixed[0::2] == std_headers:
            (family, ip_proto, src_raw, dst_raw, src_port, dst_port, ts_sec, ts_usec,
             proto_type, capture_id) = fixed[1::2]
            i += std.size
    while i < end:
        if end - i < 6:
            raise DecodeError("hep3-bad-chunk", f"{end - i} stray bytes at offset {i}")
        vendor, ctype, clen = chunk_hdr(buf, i)
        nxt = i + clen
        if clen < 6 or nxt > end:
            raise DecodeError(
                "hep3-bad-chunk", f"chunk {vendor}/{ctype} length {clen} at offset {i}"
            )
        n = clen - 6
        j = i + 6
        if vendor:
            vendor_chunks += 1
        elif ctype == CHUNK_PAYLOAD:
            payload = buf[j:nxt]
            compressed = False
        elif CHUNK_IP_FAMILY <= ctype <= CHUNK_CAPTURE_ID:  # the fixed-size chunks
            if ctype == CHUNK_IP_FAMILY or ctype == CHUNK_IP_PROTO or ctype == CHUNK_PROTO_TYPE:
                if n != 1:
                    raise DecodeError("hep3-bad-chunk", f"chunk {ctype} of {n} bytes")
                v = buf[j]
                if ctype == CHUNK_IP_FAMILY:
                    family = v
                elif ctype == CHUNK_IP_PROTO:
                    ip_proto = v
                else:
                    proto_type = v
            elif ctype == CHUNK_SRC_IP4 or ctype == CHUNK_DST_IP4:
                if n == 4:
                    raw = buf[j:nxt]
                elif n == 16 and buf.startswith(_V4_MAPPED_PREFIX, j):
                    raw = buf[j + 12:nxt]  # ::ffff:a.b.c.d sent in an IPv4 chunk
                else:
                    raise DecodeError("hep3-bad-chunk", f"IPv4 chunk {ctype} of {n} bytes")
                if ctype == CHUNK_SRC_IP4:
                    src_raw = raw
                else:
                    dst_raw = raw
            elif ctype == CHUNK_SRC_IP6 or ctype == CHUNK_DST_IP6:
                if n != 16:
                    raise DecodeError("hep3-bad-chunk", f"IPv6 chunk {ctype} of {n} bytes")
                if ctype == CHUNK_SRC_IP6:
                    src_raw = buf[j:nxt]
                else:
                    dst_raw = buf[j:nxt]
            elif ctype == CHUNK_SRC_PORT or ctype == CHUNK_DST_PORT:
                if n != 2:
                    raise DecodeError("hep3-bad-chunk", f"port chunk {ctype} of {n} bytes")
                if ctype == CHUNK_SRC_PORT:
                    src_port = _u16(buf, j)[0]
                else:
                    dst_port = _u16(buf, j)[0]
            else:  # CHUNK_TIME_SEC, CHUNK_TIME_USEC, CHUNK_CAPTURE_ID: uint32
                if n != 4:
                    raise DecodeError("hep3-bad-chunk", f"chunk {ctype} of {n} bytes")
                if ctype == CHUNK_TIME_SEC:
                    ts_sec = _u32(buf, j)[0]
                elif ctype == CHUNK_TIME_USEC:
                    ts_usec = _u32(buf, j)[0]
                else:
                    capture_id = _u32(buf, j)[0]
        elif ctype == CHUNK_COMPRESSED_PAYLOAD:
            payload = buf[j:nxt]
            compressed = True
        elif ctype == CHUNK_CORRELATION_ID:
            corr = buf[j:nxt]
        elif ctype == CHUNK_AUTH_KEY:
            auth_key = buf[j:nxt]
        elif ctype == CHUNK_NODE_NAME:
            node = buf[j:nxt]
        elif ctype == 0:
            raise DecodeError("hep3-chunk-type0", f"generic chunk type 0 at offset {i}")
        # other generic chunks (keep-alive, VLAN, MAC, MOS...) are not stored: skipped
        i = nxt

    if payload is None:
        raise DecodeError("hep-no-payload", "no payload chunk")
    if src_raw is None or dst_raw is None:
        raise DecodeError("hep-no-address", "source or destination address missing")
    if auth_key is not None:
        nul = auth_key.find(b"\x00")
        if nul >= 0:
            auth_key = auth_key[:nul]
    if auth is not None:
        _check_key(auth_key, auth, 3)
    if compressed:
        payload = _inflate(payload, [MAX_INFLATED] if budget is None else budget)
    if len(src_raw) == 4:
        src_family, src_ip = AF_INET, _ip4_str(src_raw)
    else:
        src_family, src_ip = AF_INET6, _ip6_str(src_raw)
    dst_ip = _ip4_str(dst_raw) if len(dst_raw) == 4 else _ip6_str(dst_raw)
    return HepPacket(
        3, family, ip_proto, src_family, src_ip, dst_ip, src_port, dst_port, ts_sec,
        ts_usec, proto_type, capture_id, auth_key,
        None if corr is None else _text(corr),
        None if node is None else _text(node),
        payload, compressed, vendor_chunks, recv_us,
    )


def _decode_hep12(data: bytes, recv_us: int) -> HepPacket:
    version = data[0]
    n = len(data)
    if n < 4:
        raise DecodeError("hep-truncated", f"HEPv{version} datagram of {n} bytes")
    family, ip_proto = data[2], data[3]
    if family == AF_INET:
        alen = 4
    elif family == AF_INET6:
        alen = 16
    else:
        raise DecodeError("hep-bad-family", f"HEPv{version} family {family}")
    hlen = 8 + 2 * alen
    off = hlen + 12 if version == 2 else hlen
    if n < off:
        # Kamailio 5.6.3 computes len - offset unsigned here and hands the core a huge
        # length (vectors/79_crash_v2_truncated); we refuse the datagram.
        raise DecodeError("hep-truncated", f"HEPv{version} datagram of {n} bytes, headers need {off}")
    src_port, dst_port = _ports(data, 4)
    src_raw = data[8:8 + alen]
    dst_raw = data[8 + alen:hlen]
    if alen == 4:
        src_ip, dst_ip = _ip4_str(src_raw), _ip4_str(dst_raw)
    else:
        src_ip, dst_ip = _ip6_str(src_raw), _ip6_str(dst_raw)
    if version == 2:
        ts_sec, ts_usec, capture_id = _v2_time(data, hlen)
    else:
        ts_sec = ts_usec = capture_id = None
    return HepPacket(
        version, family, ip_proto, family, src_ip, dst_ip, src_port, dst_port, ts_sec,
        ts_usec, HEP_TYPE_SIP, capture_id, None, None, None, data[off:], False, 0, recv_us,
    )


def _check_key(key: bytes | None, auth_key: bytes, version: int) -> None:
    if key is None:
        raise DecodeError("hep-auth", f"HEPv{version} packet without authentication key")
    if not hmac.compare_digest(key, auth_key):
        raise DecodeError("hep-auth", "authentication key mismatch")


def _sized(exc: DecodeError, size: int) -> DecodeError:
    """Note on ``exc`` how many bytes of input it refuses (``exc.size``)."""
    exc.size = size
    return exc


def decode_datagram(
    data: bytes,
    *,
    now_us: int,
    auth_key: bytes | None = None,
    errors: list[DecodeError] | None = None,
    max_inflated: int = MAX_INFLATED,
) -> list[HepPacket]:
    """Decode one UDP datagram (or one HEP3 packet cut out of a TCP stream by
    :class:`~sipcaptool.decode.hep_stream.HepStream`).

    Args:
        data: the datagram.
        now_us: time of reception in µs, used for packets without a HEP time.
        auth_key: when given, every packet must carry this key in chunk 0x000e
            (HEPv1/v2 cannot carry one and are refused). It is checked before a
            compressed payload is inflated.
        errors: optional list that receives the DecodeError of each part of a datagram
            that failed while another part decoded, and of every failure after the
            first when nothing decoded (see below).
        max_inflated: inflate budget of the datagram: the bytes that the whole-datagram
            gzip and every compressed payload (chunk 0x0010) in it may inflate to,
            together. Past it, decoding stops with ``hep-inflate``.

    Returns:
        The packets, in order: one for HEPv1/v2; one or more for HEPv3 (several
        packets back to back in one datagram are all decoded).

    Raises:
        DecodeError: when no packet of the datagram decodes; its reason is that of
            the first failure (the others, if any, are appended to ``errors``).

    A HEPv3 datagram is cut into packets by their total lengths. A packet that fails
    (bad chunk, no address, auth...) does not take its neighbours down: the good ones
    are returned and the failures appended to ``errors``. Bytes after the last packet
    that do not start another HEP3 packet fail as ``hep3-trailing`` (Kamailio reads only
    the first packet and ignores them). Only when nothing decodes is the first error
    raised.

    A whole datagram gzipped by the agent is inflated a packet at a time, each packet
    decoded (and its key checked) before more is inflated: decoding stops at the first
    packet with a wrong or missing key, or when the budget is spent; the packets before
    are returned. Each error carries ``size``: the bytes it refuses (of the datagram as
    received; inside a gzipped datagram, the inflated packet, plus what was left
    unread when decoding stopped there).
    """
    n = len(data)
    if n < 6:
        k = min(n, 4)
        if not n or data[0] in (1, 2) or data[:k] == b"HEP3"[:k] or data[:k] == b"EEP3"[:k]:
            raise _sized(DecodeError("hep-truncated", f"datagram of {n} bytes"), n)
        raise _sized(DecodeError("hep-bad-version", f"datagram of {n} bytes"), n)
    budget = [max_inflated]
    if data[0] == 0x1F and data[1] == 0x8B:
        # heplify's "gzip the whole HEP packet" option: one gzip stream per datagram
        return _decode_gzipped(data, now_us, auth_key, errors, budget)
    return _decode_plain(data, now_us, auth_key, errors, budget)


def _finish(out: list[HepPacket], failed: list[DecodeError],
            errors: list[DecodeError] | None) -> list[HepPacket]:
    if failed:
        if not out:
            if errors is not None:
                errors.extend(failed[1:])
            raise failed[0]
        if errors is not None:
            errors.extend(failed)
    return out


def _decode_plain(data: bytes, now_us: int, auth_key: bytes | None,
                  errors: list[DecodeError] | None, budget: list[int]) -> list[HepPacket]:
    n = len(data)
    if n < 6:
        return decode_datagram(data, now_us=now_us)  # raises hep-truncated / bad-version
    head = data[:4]
    if head != b"HEP3" and head != b"EEP3":
        v = data[0]
        if v != 1 and v != 2:
            raise _sized(DecodeError("hep-bad-version", f"version byte {v}"), n)
        if auth_key is not None:
            raise _sized(DecodeError("hep-auth", f"HEPv{v} packet without authentication key"), n)
        try:
            return [_decode_hep12(data, now_us)]
        except DecodeError as exc:
            raise _sized(exc, n) from None

    out: list[HepPacket] = []
    failed: list[DecodeError] = []
    pos = 0
    while pos < n:
        if n - pos < 6 or data[pos:pos + 4] not in HEP3_IDS:
            failed.append(_sized(DecodeError(
                "hep3-trailing", f"{n - pos} bytes after the HEP3 packet(s) at offset {pos}"
            ), n - pos))
            break
        total = _u16(data, pos + 4)[0]
        end = pos + total
        if total < 6 or end > n:
            failed.append(_sized(DecodeError(
                "hep3-bad-length", f"total length {total} at offset {pos}, {n - pos} bytes available"
            ), n - pos))
            break
        try:
            out.append(_decode_hep3(data, pos, end, now_us, auth_key, budget))
        except DecodeError as exc:
            if budget[0] < 0:
                # the budget is spent: nothing after this packet is decoded either; it
                # is refused with this packet (one count, the bytes of all)
                failed.append(_sized(exc, n - pos))
                break
            failed.append(_sized(exc, total))
        pos = end
    return _finish(out, failed, errors)


def _decode_gzipped(data: bytes, now_us: int, auth_key: bytes | None,
                    errors: list[DecodeError] | None, budget: list[int]) -> list[HepPacket]:
    """A whole datagram gzipped (heplify): inflated one packet at a time, see
    :func:`decode_datagram`."""
    d = zlib.decompressobj(wbits=47)
    src = data        # compressed bytes not consumed yet
    buf = b""         # inflated bytes; buf[pos:] not decoded yet
    pos = 0
    eof = False

    def pull(need: int) -> int:
        """Inflate until ``need`` bytes from ``pos`` are there or the stream ends; how
        many there are."""
        nonlocal src, buf, pos, eof
        have = len(buf) - pos
        while have < need and not eof:
            left = budget[0]
            try:
                got = d.decompress(src, min(max(need - have, _INFLATE_STEP), left + 1))
            except zlib.error as exc:
                raise DecodeError("hep-inflate", str(exc)) from None
            src = d.unconsumed_tail
            budget[0] = left - len(got)
            if budget[0] < 0:
                raise DecodeError("hep-inflate", f"whole-datagram gzip inflates past the "
                                  f"datagram's inflate budget ({left} bytes were left)")
            buf = buf[pos:] + got
            pos = 0
            have = len(buf)
            if d.eof:
                eof = True
            elif not got and not src:
                raise DecodeError("hep-inflate", "compressed stream cut off")
        return have

    def unread() -> int:
        return len(buf) - pos + len(src)

    try:
        have = pull(6)
    except DecodeError as exc:
        raise _sized(exc, len(data)) from None
    if buf[:2] == b"\x1f\x8b":
        raise _sized(DecodeError("hep-inflate", "gzip inside gzip"), len(data))
    if have < 6 or buf[:4] not in HEP3_IDS:
        if auth_key is not None and buf[:1] in (b"\x01", b"\x02"):
            # HEPv1/v2 cannot carry a key: refused before inflating the rest
            raise _sized(DecodeError("hep-auth", f"HEPv{buf[0]} packet without "
                                     "authentication key"), len(data))
        try:
            pull(budget[0] + have + 1)
            return _decode_plain(buf, now_us, auth_key, errors, budget)
        except DecodeError as exc:
            raise _sized(exc, len(data)) from None

    out: list[HepPacket] = []
    failed: list[DecodeError] = []
    while True:
        try:
            have = pull(6)
            if not have and eof:
                break
            if have < 6 or buf[pos:pos + 4] not in HEP3_IDS:
                failed.append(_sized(DecodeError(
                    "hep3-trailing", f"{have} bytes after the HEP3 packet(s)"), have))
                break
            total = _u16(buf, pos + 4)[0]
            if total < 6:
                failed.append(_sized(DecodeError("hep3-bad-length", f"total length {total}"),
                                     unread()))
                break
            have = pull(total)
            if have < total:
                failed.append(_sized(DecodeError(
                    "hep3-bad-length", f"total length {total}, {have} bytes available"),
                    have))
                break
        except DecodeError as exc:
            # the outer stream: corrupt, cut off, or past the budget
            failed.append(_sized(exc, unread()))
            break
        start = pos
        pos += total
        try:
            out.append(_decode_hep3(buf, start, pos, now_us, auth_key, budget))
        except DecodeError as exc:
            if exc.reason == "hep-auth" or budget[0] < 0:
                # a sender without the key, or the budget spent: inflate nothing more
                failed.append(_sized(exc, total + unread()))
                break
            failed.append(_sized(exc, total))
    if not out and failed:
        # nothing of the datagram is kept: it is refused whole, as received
        _sized(failed[0], len(data))
        for other in failed[1:]:
            _sized(other, 0)
    return _finish(out, failed, errors)
