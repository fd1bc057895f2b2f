"""Stored SIP messages as link-layer frames, ready for a capture file (pure, no I/O).

* UDP messages become one UDP datagram each (IPv4 or IPv6, checksums correct).
* TCP messages -- and those stored as TLS (3), WebSocket (5) or secure WebSocket (6),
  whose capture saw them after the TLS or WebSocket layer -- become plain SIP over TCP:
  one well-formed connection per pair of endpoints (the first message's sender is the
  client): a three-way handshake before its first message, every message in segments of
  at most ``mss`` bytes (20 fewer over IPv6, whose header is 20 bytes longer) with
  sequence and acknowledgement numbers consistent in both directions, an
  acknowledgement from the receiver after each message, and FIN/ACK after its last, so
  that Wireshark reassembles every message and reports nothing missing.
* SCTP messages become one SCTP packet with one DATA chunk each (CRC32c checksum).
* Any other transport (0: not known) is written as UDP; a message too big for one UDP
  datagram is written as TCP. A message stored as TCP that a stream could not frame by
  itself (its Content-Length does not match its body, as a HEP agent may send) is
  written as UDP, so that it does not swallow the messages after it.

Every packet of a message carries the message's own time (µs), so replaying the file
stores the same time again; handshake and closing packets take the time of the message
they open or close.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..query.model import StoredMessage
from ..record import PROTO_SCTP, PROTO_TCP, PROTO_TLS, PROTO_WS

__all__ = ["Packet", "iter_packets", "message_packets", "ether", "ipv4", "ipv6", "udp", "tcp", "sctp_data",
           "checksum", "frames_on_tcp", "ETH_IPV4", "ETH_IPV6", "TCP_FIN", "TCP_SYN", "TCP_PSH", "TCP_ACK",
           "DEFAULT_MSS"]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_PSH = 0x08
TCP_ACK = 0x10

DEFAULT_MSS = 1460
_WSCALE = 7                     # window scale offered in SYN and SYN/ACK
_WINDOW = 65535                 # scaled: 8 MB, more than any connection holds in flight
_MAX_UDP4 = 65535 - 20 - 8      # the largest UDP payload one IPv4 datagram carries
_MAX_UDP6 = 65535 - 8
PROTO_WSS = 6                   # Kamailio's enum: secure WebSocket
_STREAMED = (PROTO_TCP, PROTO_TLS, PROTO_WS, PROTO_WSS)


_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


def frames_on_tcp(msg: bytes) -> bool:
    """Whether ``msg`` alone on a TCP stream is cut back into exactly itself by SIP's
    stream framing (RFC 3261 §18.3: the header, then Content-Length bytes of body)."""
    if not msg or msg[:1] in (b"\r", b"\n"):
        return False
    end = msg.find(b"\r\n\r\n")
    sep = 4
    lf = msg.find(b"\n\n", 0, end if end >= 0 else len(msg))
    if lf >= 0 and (end < 0 or lf < end):
        end, sep = lf, 2
    if end < 0:
        return False
    m = _CONTENT_LENGTH.search(msg, 0, end)
    value = m.group(1).strip() if m else b"0"
    return value.isdigit() and int(value) == len(msg) - end - sep


@dataclass(frozen=True, slots=True)
class Packet:
    """One frame of the capture file: its time (µs since the epoch), the Ethernet frame,
    and the node that captured the message it carries (a pcapng comment)."""

    ts_us: int
    frame: bytes
    node: str = ""


# ------------------------------------------------------------------ frame builders

def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def ether(payload: bytes, ethertype: int = ETH_IPV4, vlans: Iterable[int] = (),
          src: bytes = b"\x02\0\0\0\0\x01", dst: bytes = b"\x02\0\0\0\0\x02",
          qinq: bool = False) -> bytes:
    tags = b""
    vl = list(vlans)
    for i, vid in enumerate(vl):
        tpid = 0x88A8 if (qinq and i == 0 and len(vl) > 1) else 0x8100
        tags += struct.pack("!HH", tpid, vid & 0x0FFF)
    return dst + src + tags + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1,
         frag_offset: int = 0, more_fragments: bool = False, ttl: int = 64,
         total_length: int | None = None) -> bytes:
    flags = (0x2000 if more_fragments else 0) | (frag_offset // 8)
    length = 20 + len(payload) if total_length is None else total_length
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident & 0xFFFF,
                      flags, ttl, proto, 0, ipaddress.IPv4Address(src).packed,
                      ipaddress.IPv4Address(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return (struct.pack("!IHBB", 0x60000000, len(payload), next_header, hop_limit)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    a = ipaddress.ip_address(src)
    b = ipaddress.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + struct.pack("!BBH", 0, proto, length)
    return a.packed + b.packed + struct.pack("!IxxxB", length, proto)


def udp(sport: int, dport: int, payload: bytes, *, src: str | None = None,
        dst: str | None = None) -> bytes:
    """A UDP datagram; with ``src``/``dst`` (IP addresses) its checksum is computed,
    else left 0 (none, allowed over IPv4)."""
    length = 8 + len(payload)
    dgram = struct.pack("!HHHH", sport, dport, length & 0xFFFF, 0) + payload
    if src is None or dst is None:
        return dgram
    c = checksum(_pseudo(src, dst, IPPROTO_UDP, length) + dgram) or 0xFFFF
    return dgram[:6] + struct.pack("!H", c) + dgram[8:]


def tcp(sport: int, dport: int, seq: int, payload: bytes, ack: int = 0, flags: int = 0x18, *,
        window: int = 65535, options: bytes = b"", src: str | None = None,
        dst: str | None = None) -> bytes:
    """A TCP segment; with ``src``/``dst`` (IP addresses) its checksum is computed,
    else left 0. ``options`` is padded to a multiple of 4 bytes."""
    options += b"\x01" * (-len(options) % 4)          # NOP padding
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (5 + len(options) // 4) << 4, flags, window, 0, 0) + options
    seg = hdr + payload
    if src is None or dst is None:
        return seg
    c = checksum(_pseudo(src, dst, IPPROTO_TCP, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_data(sport: int, dport: int, tsn: int, payload: bytes, *, vtag: int = 0,
              stream: int = 0, ssn: int = 0, ppid: int = 0) -> bytes:
    """An SCTP packet with one DATA chunk (unfragmented: B and E set), CRC32c checksum."""
    chunk = struct.pack("!BBHIHHI", 0, 0x03, 16 + len(payload), tsn & 0xFFFFFFFF,
                        stream, ssn & 0xFFFF, ppid) + payload
    chunk += b"\0" * (-len(chunk) % 4)
    pkt = struct.pack("!HHII", sport, dport, vtag, 0) + chunk
    return pkt[:8] + struct.pack("<I", _crc32c(pkt)) + pkt[12:]


# ------------------------------------------------------------------ messages -> packets

def _mac(ip: str) -> bytes:
    """A locally administered MAC address of its own for every IP address."""
    return b"\x02" + struct.pack("!I", zlib.crc32(ip.encode())) + b"\x00"


def _endpoints(m: StoredMessage) -> tuple[str, str, int]:
    """Source and destination as IP addresses of one family, and that family (4/6).
    An address that does not parse becomes the unspecified address."""
    def parse(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(s.strip().strip("[]").split("%")[0])
        except ValueError:
            return None

    a, b = parse(m.source_ip), parse(m.destination_ip)
    v6 = any(x is not None and x.version == 6 for x in (a, b)) or (
        a is None and b is None and m.family == 10)
    if v6:
        def as6(x: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
            if x is None:
                return "::"
            return str(x) if x.version == 6 else f"::ffff:{x}"
        return as6(a), as6(b), 6
    return (str(a) if a else "0.0.0.0"), (str(b) if b else "0.0.0.0"), 4


class _Frames:
    """Builds the frames of every message in order, holding the TCP connections and
    SCTP associations open so far."""

    def __init__(self, mss: int) -> None:
        self.mss = max(16, mss)
        self.ident = 0
        # (client ip, port, server ip, port) -> [client next seq, server next seq]
        self.tcp: dict[tuple[str, int, str, int], list[int]] = {}
        self.sctp_tsn: dict[tuple[str, int, str, int], int] = {}
        self.out: list[Packet] = []

    def ip(self, src: str, dst: str, v: int, proto: int, payload: bytes, ts: int,
           node: str) -> None:
        if v == 4:
            self.ident = (self.ident + 1) & 0xFFFF
            frame = ether(ipv4(src, dst, proto, payload, ident=self.ident), ETH_IPV4,
                          src=_mac(src), dst=_mac(dst))
        else:
            frame = ether(ipv6(src, dst, proto, payload), ETH_IPV6, src=_mac(src),
                          dst=_mac(dst))
        self.out.append(Packet(ts, frame, node))

    def udp(self, m: StoredMessage, src: str, dst: str, v: int) -> None:
        self.ip(src, dst, v, IPPROTO_UDP,
                udp(m.source_port, m.destination_port, m.msg, src=src, dst=dst),
                m.micro_ts, m.node)

    def sctp(self, m: StoredMessage, src: str, dst: str, v: int) -> None:
        key = (src, m.source_port, dst, m.destination_port)
        tsn = self.sctp_tsn.get(key, zlib.crc32(repr(key).encode()) & 0xFFFFFF)
        self.sctp_tsn[key] = tsn + 1
        self.ip(src, dst, v, IPPROTO_SCTP,
                sctp_data(m.source_port, m.destination_port, tsn, m.msg,
                          vtag=zlib.crc32(repr(key[2:] + key[:2]).encode())),
                m.micro_ts, m.node)

    def segment(self, src: str, sport: int, dst: str, dport: int, v: int, seq: int,
                ack: int, flags: int, data: bytes, ts: int, node: str,
                options: bytes = b"") -> None:
        self.ip(src, dst, v, IPPROTO_TCP,
                tcp(sport, dport, seq, data, ack, flags, window=_WINDOW, options=options,
                    src=src, dst=dst), ts, node)

    def tcp_msg(self, m: StoredMessage, src: str, dst: str, v: int, last: bool) -> None:
        sp, dp, ts, node = m.source_port, m.destination_port, m.micro_ts, m.node
        fwd = (src, sp, dst, dp)
        rev = (dst, dp, src, sp)
        if fwd in self.tcp:
            conn, me, peer = self.tcp[fwd], 0, 1
        elif rev in self.tcp:
            conn, me, peer = self.tcp[rev], 1, 0
        else:
            # a new connection, opened by this message's sender
            isn_c = zlib.crc32(repr(fwd).encode())
            isn_s = zlib.crc32(repr(rev).encode())
            mss = self.mss if v == 4 else self.mss - 20
            opts = struct.pack("!BBH", 2, 4, min(mss, 0xFFFF)) + b"\x01" + struct.pack(
                "!BBB", 3, 3, _WSCALE)
            self.segment(src, sp, dst, dp, v, isn_c, 0, TCP_SYN, b"", ts, node, opts)
            self.segment(dst, dp, src, sp, v, isn_s, isn_c + 1, TCP_SYN | TCP_ACK, b"", ts,
                         node, opts)
            conn = [(isn_c + 1) & 0xFFFFFFFF, (isn_s + 1) & 0xFFFFFFFF]
            self.tcp[fwd] = conn
            me, peer = 0, 1
            self.segment(src, sp, dst, dp, v, conn[0], conn[1], TCP_ACK, b"", ts, node)
        data = m.msg
        step = self.mss if v == 4 else self.mss - 20
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            flags = TCP_ACK | (TCP_PSH if off + step >= len(data) else 0)
            self.segment(src, sp, dst, dp, v, conn[me], conn[peer], flags, chunk, ts, node)
            conn[me] = (conn[me] + len(chunk)) & 0xFFFFFFFF
        # the receiver acknowledges the message
        self.segment(dst, dp, src, sp, v, conn[peer], conn[me], TCP_ACK, b"", ts, node)
        if last:
            self.segment(src, sp, dst, dp, v, conn[me], conn[peer], TCP_FIN | TCP_ACK, b"",
                         ts, node)
            conn[me] = (conn[me] + 1) & 0xFFFFFFFF
            self.segment(dst, dp, src, sp, v, conn[peer], conn[me], TCP_FIN | TCP_ACK, b"",
                         ts, node)
            conn[peer] = (conn[peer] + 1) & 0xFFFFFFFF
            self.segment(src, sp, dst, dp, v, conn[me], conn[peer], TCP_ACK, b"", ts, node)
            del self.tcp[fwd if me == 0 else rev]


def ordered(messages: Iterable[StoredMessage]) -> list[StoredMessage]:
    """The messages in time order (stable: rows of the same µs keep their order). Rows
    that are alike are all kept: a message captured several times (by several nodes,
    or a HEP agent sending it twice) was stored as several rows and is written as
    several packets, as it was seen."""
    return sorted(messages, key=lambda m: m.micro_ts)


def _conn_key(m: StoredMessage, src: str, dst: str) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((src, m.source_port), (dst, m.destination_port))))


def iter_packets(messages: Iterable[StoredMessage], *, mss: int = DEFAULT_MSS
                 ) -> Iterator[Packet]:
    """The frames (Ethernet) of ``messages``, in time order, one message's at a time (a
    big export is not held twice in memory): see the module's doc."""
    msgs = ordered(messages)
    plan: list[tuple[str, str, int, bool]] = []
    last_of: dict[tuple[tuple[str, int], ...], int] = {}
    for m in msgs:
        src, dst, v = _endpoints(m)
        too_big = len(m.msg) > (_MAX_UDP4 if v == 4 else _MAX_UDP6)
        as_tcp = ((m.proto in _STREAMED and frames_on_tcp(m.msg)) or too_big) and (
            (src, m.source_port) != (dst, m.destination_port))   # not a connection to itself
        if as_tcp:
            last_of[_conn_key(m, src, dst)] = len(plan)
        plan.append((src, dst, v, as_tcp))
    fr = _Frames(mss)
    for i, (m, (src, dst, v, as_tcp)) in enumerate(zip(msgs, plan, strict=True)):
        if as_tcp:
            fr.tcp_msg(m, src, dst, v, last_of[_conn_key(m, src, dst)] == i)
        elif m.proto == PROTO_SCTP and len(m.msg) <= 65535 - 20 - 28 - 40:
            fr.sctp(m, src, dst, v)
        else:
            fr.udp(m, src, dst, v)
        yield from fr.out
        fr.out.clear()


def message_packets(messages: Iterable[StoredMessage], *, mss: int = DEFAULT_MSS
                    ) -> list[Packet]:
    """The frames of ``messages`` as a list (:func:`iter_packets`)."""
    return list(iter_packets(messages, mss=mss))
