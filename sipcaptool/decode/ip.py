"""IPv4 / IPv6 helpers: protocol numbers, printable addresses, IPv6 extension headers."""

from __future__ import annotations

import struct

__all__ = [
    "IPPROTO_HOPOPTS", "IPPROTO_ICMP", "IPPROTO_IPIP", "IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_IPV6",
    "IPPROTO_ROUTING", "IPPROTO_FRAGMENT", "IPPROTO_GRE", "IPPROTO_ESP", "IPPROTO_AH", "IPPROTO_ICMPV6",
    "IPPROTO_NONE", "IPPROTO_DSTOPTS", "IPPROTO_MOBILITY", "IPPROTO_HIP", "IPPROTO_SHIM6", "IPPROTO_SCTP",
    "MAX_IPV6_EXT_HEADERS", "ipv6_str", "addr_str", "ipv6_ext",
]

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MOBILITY = 135
IPPROTO_HIP = 139
IPPROTO_SHIM6 = 140
IPPROTO_SCTP = 132

# Extension headers with the generic (next header, length in 8-octet units - 1) layout.
_IPV6_GENERIC_EXT = frozenset({
    IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_MOBILITY,
    IPPROTO_HIP, IPPROTO_SHIM6,
})
MAX_IPV6_EXT_HEADERS = 16

_ADDR_CACHE_MAX = 4096
_addr_cache: dict[bytes, str] = {}


def ipv6_str(raw: bytes) -> str:
    """RFC 5952 text of a 16-byte IPv6 address, as ``inet_ntop`` prints it.

    Written here so that the decode layer needs no socket module: lower-case hex, the
    longest run (first if tied) of two or more zero groups as ``::``, and IPv4-mapped
    / IPv4-compatible addresses with a dotted-quad tail.
    """
    g = struct.unpack("!8H", raw)
    if g[:5] == (0, 0, 0, 0, 0) and (g[5] == 0xFFFF or (g[5] == 0 and g[6] != 0)):
        head = "::ffff:" if g[5] == 0xFFFF else "::"
        return head + f"{raw[12]}.{raw[13]}.{raw[14]}.{raw[15]}"
    best_at, best_len, i = -1, 0, 0
    while i < 8:
        if g[i] == 0:
            j = i
            while j < 8 and g[j] == 0:
                j += 1
            if j - i > best_len:
                best_at, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_len < 2:
        return ":".join(f"{x:x}" for x in g)
    left = ":".join(f"{x:x}" for x in g[:best_at])
    right = ":".join(f"{x:x}" for x in g[best_at + best_len:])
    return left + "::" + right


def addr_str(raw: bytes) -> str:
    """Print a 4- or 16-byte address as Kamailio's ip_addr2a does.

    IPv4 is a dotted quad; IPv6 is the compressed lower-case form without brackets
    (RFC 5952, which is what ``inet_ntop`` produces, including ``::ffff:a.b.c.d``).
    Recent results are cached: capture traffic repeats few addresses.
    """
    s = _addr_cache.get(raw)
    if s is None:
        if len(raw) == 4:
            s = f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
        else:
            s = ipv6_str(raw)
        if len(_addr_cache) >= _ADDR_CACHE_MAX:
            _addr_cache.clear()
        _addr_cache[raw] = s
    return s


def ipv6_ext(buf: bytes, off: int, end: int, nh: int) -> tuple[int, int, tuple[int, int, int] | None]:
    """Walk IPv6 extension headers starting at ``off`` with next header ``nh``.

    Returns ``(upper_protocol, offset_of_upper_layer, fragment)`` where ``fragment``
    is ``(offset_bytes, more_fragments, identification)`` when a Fragment header was
    found (the walk stops there: what follows is fragment data), else None.
    Raises IndexError when a header runs past ``end``.
    """
    for _ in range(MAX_IPV6_EXT_HEADERS):
        if nh in _IPV6_GENERIC_EXT:
            if off + 8 > end:
                raise IndexError("ipv6 extension header truncated")
            nh2 = buf[off]
            off += (buf[off + 1] + 1) * 8
            nh = nh2
        elif nh == IPPROTO_FRAGMENT:
            if off + 8 > end:
                raise IndexError("ipv6 fragment header truncated")
            nh2 = buf[off]
            fo = buf[off + 2] << 8 | buf[off + 3]
            ident = buf[off + 4] << 24 | buf[off + 5] << 16 | buf[off + 6] << 8 | buf[off + 7]
            return nh2, off + 8, (fo & 0xFFF8, fo & 1, ident)
        elif nh == IPPROTO_AH:
            if off + 8 > end:
                raise IndexError("ipv6 AH truncated")
            nh2 = buf[off]
            off += (buf[off + 1] + 2) * 4
            nh = nh2
        else:
            if off > end:
                raise IndexError("ipv6 extension headers run past the packet")
            return nh, off, None
    raise IndexError("too many ipv6 extension headers")
