"""Link layers: find the network-layer protocol and where it starts.

Every parser takes ``(buf, off, end)`` and returns ``(ethertype, offset)`` of the
network layer, where ``ethertype`` is an Ethernet type value (``ETH_TYPE_IPV4``...)
or ``ETH_TYPE_GUESS_IP`` when the IP version nibble decides.  A frame too short for
its header raises ``IndexError``/``struct.error``; the caller counts that.
"""

from __future__ import annotations

import struct

from sipcaptool.errors import DecodeError

__all__ = [
    "DLT_NULL", "DLT_EN10MB", "DLT_PPP", "DLT_RAW_12", "DLT_RAW_14", "DLT_PPP_HDLC", "DLT_PPP_ETHER",
    "DLT_RAW", "DLT_LOOP", "DLT_LINUX_SLL", "DLT_IPV4", "DLT_IPV6", "DLT_LINUX_SLL2", "SUPPORTED_LINKTYPES",
    "ETH_TYPE_IPV4", "ETH_TYPE_ARP", "ETH_TYPE_TEB", "ETH_TYPE_8021Q", "ETH_TYPE_IPV6", "ETH_TYPE_PPP",
    "ETH_TYPE_MPLS", "ETH_TYPE_MPLS_MC", "ETH_TYPE_PPPOE_DISC", "ETH_TYPE_PPPOE_SESS", "ETH_TYPE_8021AD",
    "ETH_TYPE_ERSPAN2", "ETH_TYPE_ERSPAN3", "ETH_TYPE_QINQ_OLD", "ETH_TYPE_QINQ_OLD2", "ETH_TYPE_GUESS_IP",
    "ETH_TYPE_NONE", "VLAN_TYPES", "MAX_VLAN_TAGS", "MAX_MPLS_LABELS", "PPP_IPV4", "PPP_IPV6",
    "check_linktype", "ethernet", "after_ethertype", "mpls", "ppp_proto", "ppp", "sll", "sll2", "null",
    "loop", "raw", "raw4", "raw6", "ppp_ether", "LINK_PARSERS",
]

# LINKTYPE_* values (pcap file header / pcap_datalink()).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_PPP = 9
DLT_RAW_12 = 12          # LINKTYPE_RAW on most systems
DLT_RAW_14 = 14          # DLT_RAW on OpenBSD
DLT_PPP_HDLC = 50
DLT_PPP_ETHER = 51
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset({
    DLT_NULL, DLT_EN10MB, DLT_PPP, DLT_RAW_12, DLT_RAW_14, DLT_PPP_HDLC, DLT_PPP_ETHER,
    DLT_RAW, DLT_LOOP, DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2,
})

# Ethernet types.
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_TEB = 0x6558        # transparent Ethernet bridging (GRE)
ETH_TYPE_8021Q = 0x8100
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_PPP = 0x880B
ETH_TYPE_MPLS = 0x8847
ETH_TYPE_MPLS_MC = 0x8848
ETH_TYPE_PPPOE_DISC = 0x8863
ETH_TYPE_PPPOE_SESS = 0x8864
ETH_TYPE_8021AD = 0x88A8
ETH_TYPE_ERSPAN2 = 0x88BE
ETH_TYPE_ERSPAN3 = 0x22EB
ETH_TYPE_QINQ_OLD = 0x9100
ETH_TYPE_QINQ_OLD2 = 0x9200
# Pseudo type: "IP, version taken from the first nibble" (raw IP, MPLS payloads).
ETH_TYPE_GUESS_IP = -1
# Pseudo type: the frame carries nothing we decode.
ETH_TYPE_NONE = -2

VLAN_TYPES = frozenset({ETH_TYPE_8021Q, ETH_TYPE_8021AD, ETH_TYPE_QINQ_OLD, ETH_TYPE_QINQ_OLD2})
MAX_VLAN_TAGS = 8
MAX_MPLS_LABELS = 16

# PPP protocol numbers.
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

# BSD address families seen in DLT_NULL / DLT_LOOP headers.
_NULL_AF_INET = 2
_NULL_AF_INET6 = frozenset({10, 23, 24, 28, 30})

_H = struct.Struct("!H")
_unpack_u16 = _H.unpack_from


def check_linktype(linktype: int) -> None:
    """Raise DecodeError("unknown-linktype") for a link type we cannot decode."""
    if linktype not in SUPPORTED_LINKTYPES:
        raise DecodeError("unknown-linktype", f"link type {linktype} is not supported")


def ethernet(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Ethernet II / 802.3 LLC-SNAP, with any number (up to 8) of 802.1Q/802.1ad tags."""
    et = buf[off + 12] << 8 | buf[off + 13]
    off += 14
    return after_ethertype(buf, off, end, et)


def after_ethertype(buf: bytes, off: int, end: int, et: int) -> tuple[int, int]:
    """Skip VLAN tags, LLC/SNAP, PPPoE session and MPLS headers after an Ethernet type."""
    tags = 0
    while et in VLAN_TYPES:
        tags += 1
        if tags > MAX_VLAN_TAGS or off + 4 > end:
            return ETH_TYPE_NONE, off
        et = buf[off + 2] << 8 | buf[off + 3]
        off += 4
    if et <= 1500:
        # 802.3 length field: only LLC/SNAP carries an Ethernet type.
        if off + 8 <= end and buf[off] == 0xAA and buf[off + 1] == 0xAA and buf[off + 2] == 0x03:
            return after_ethertype(buf, off + 8, end, buf[off + 6] << 8 | buf[off + 7])
        return ETH_TYPE_NONE, off
    if et == ETH_TYPE_PPPOE_SESS:
        if off + 6 > end:
            return ETH_TYPE_NONE, off
        return ppp_proto(buf, off + 6, end)
    if et == ETH_TYPE_MPLS or et == ETH_TYPE_MPLS_MC:
        return mpls(buf, off, end)
    return et, off


def mpls(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Skip an MPLS label stack; the payload's IP version is guessed from its first nibble."""
    for _ in range(MAX_MPLS_LABELS):
        if off + 4 > end:
            return ETH_TYPE_NONE, off
        bottom = buf[off + 2] & 1
        off += 4
        if bottom:
            return ETH_TYPE_GUESS_IP, off
    return ETH_TYPE_NONE, off


def ppp_proto(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """A PPP protocol field (1 or 2 bytes, RFC 1661 field compression) → Ethernet type."""
    if off >= end:
        return ETH_TYPE_NONE, off
    if buf[off] & 1:                  # compressed one-byte protocol
        proto = buf[off]
        off += 1
    else:
        if off + 2 > end:
            return ETH_TYPE_NONE, off
        proto = buf[off] << 8 | buf[off + 1]
        off += 2
    if proto == PPP_IPV4:
        return ETH_TYPE_IPV4, off
    if proto == PPP_IPV6:
        return ETH_TYPE_IPV6, off
    return ETH_TYPE_NONE, off


def ppp(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """PPP with or without the HDLC address/control bytes (0xFF 0x03)."""
    if off + 2 <= end and buf[off] == 0xFF and buf[off + 1] == 0x03:
        off += 2
    return ppp_proto(buf, off, end)


def sll(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Linux cooked capture v1: 16 bytes, protocol at offset 14."""
    if off + 16 > end:
        return ETH_TYPE_NONE, off
    hatype = buf[off + 2] << 8 | buf[off + 3]
    et = buf[off + 14] << 8 | buf[off + 15]
    return _sll_proto(buf, off + 16, end, hatype, et)


def sll2(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Linux cooked capture v2: 20 bytes, protocol at offset 0, ARPHRD at 8."""
    if off + 20 > end:
        return ETH_TYPE_NONE, off
    et = buf[off] << 8 | buf[off + 1]
    hatype = buf[off + 8] << 8 | buf[off + 9]
    return _sll_proto(buf, off + 20, end, hatype, et)


_ARPHRD_PPP = 512
_ARPHRD_NETLINK = 824
_ARPHRD_IPGRE = 778
_LINUX_SLL_P_802_2 = 0x0004
_LINUX_SLL_P_PPPHDLC = 0x0007


def _sll_proto(buf: bytes, off: int, end: int, hatype: int, et: int) -> tuple[int, int]:
    if hatype == _ARPHRD_NETLINK:
        return ETH_TYPE_NONE, off
    if et == _LINUX_SLL_P_PPPHDLC:
        return ppp(buf, off, end)
    if et == _LINUX_SLL_P_802_2:
        return after_ethertype(buf, off, end, 0)   # 802.2 LLC: let LLC/SNAP logic decide
    if et <= 1500:
        return ETH_TYPE_NONE, off
    return after_ethertype(buf, off, end, et)


def null(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """BSD loopback (DLT_NULL): 4-byte address family in the capturing host's byte order."""
    if off + 4 > end:
        return ETH_TYPE_NONE, off
    fam = buf[off] | buf[off + 1] << 8 | buf[off + 2] << 16 | buf[off + 3] << 24
    if fam > 0xFFFF:  # written big-endian
        fam = buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3]
    return _af_to_type(fam), off + 4


def loop(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """OpenBSD loopback (DLT_LOOP): 4-byte address family, always big-endian."""
    if off + 4 > end:
        return ETH_TYPE_NONE, off
    fam = buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3]
    return _af_to_type(fam), off + 4


def _af_to_type(fam: int) -> int:
    if fam == _NULL_AF_INET:
        return ETH_TYPE_IPV4
    if fam in _NULL_AF_INET6:
        return ETH_TYPE_IPV6
    return ETH_TYPE_NONE


def raw(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Raw IP: the version nibble decides."""
    return ETH_TYPE_GUESS_IP, off


def raw4(buf: bytes, off: int, end: int) -> tuple[int, int]:
    return ETH_TYPE_IPV4, off


def raw6(buf: bytes, off: int, end: int) -> tuple[int, int]:
    return ETH_TYPE_IPV6, off


def ppp_ether(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """DLT_PPP_ETHER: a PPPoE session header without Ethernet, then PPP."""
    if off + 6 > end:
        return ETH_TYPE_NONE, off
    return ppp_proto(buf, off + 6, end)


LINK_PARSERS = {
    DLT_NULL: null,
    DLT_EN10MB: ethernet,
    DLT_PPP: ppp,
    DLT_PPP_HDLC: ppp,
    DLT_PPP_ETHER: ppp_ether,
    DLT_RAW_12: raw,
    DLT_RAW_14: raw,
    DLT_RAW: raw,
    DLT_LOOP: loop,
    DLT_LINUX_SLL: sll,
    DLT_LINUX_SLL2: sll2,
    DLT_IPV4: raw4,
    DLT_IPV6: raw6,
}
