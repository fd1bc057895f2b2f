"""Small frame builders shared by the decode tests: the project's own pcap writer's
builders (``sipcaptool.testing.pcapgen``) under short names, plus the link layers and
headers only these tests need (any VLAN TPID, Linux cooked v1/v2, an IPv6 fragment
header on its own)."""

from __future__ import annotations

import struct

from sipcaptool.testing import pcapgen

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
          b"Call-ID: abc@10.0.0.1\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@x>;tag=f1\r\n"
          b"To: <sip:bob@example.com>\r\n"
          b"Content-Length: 0\r\n\r\n")
OK200 = (b"SIP/2.0 200 OK\r\nCall-ID: abc@10.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n")


def ip4(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, frag: int = 0,
        mf: bool = False, total: int | None = None) -> bytes:
    """IPv4 header + payload; ``frag`` is the fragment offset in bytes."""
    return pcapgen.ipv4(src, dst, proto, payload, ident=ident, frag_offset=frag,
                        more_fragments=mf, total_length=total)


def ip6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return pcapgen.ipv6(src, dst, nh, payload)


def ip6_frag(nh: int, offset: int, more: bool, ident: int, data: bytes) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | (1 if more else 0), ident) + data


udp = pcapgen.udp


def tcp(sport: int, dport: int, seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    return pcapgen.tcp(sport, dport, seq, payload, flags=flags)


def eth(ethertype: int, payload: bytes, vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    head = b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb"
    for tpid, vid in vlans:
        head += struct.pack("!HH", tpid, vid)
    return head + struct.pack("!H", ethertype) + payload


def sll(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x00" * 8, proto) + payload


def sll2(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x00" * 8) + payload


def udp4_frame(payload: bytes, sport: int = 5060, dport: int = 5060,
               src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    return eth(0x0800, ip4(src, dst, 17, udp(sport, dport, payload)))
