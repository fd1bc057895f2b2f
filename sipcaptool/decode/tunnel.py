"""Tunnel headers: GRE (incl. transparent Ethernet bridging, PPP, ERSPAN II/III),
VXLAN and GTP-U.  IPIP (protocols 4 and 41) needs no header of its own.

Each parser takes ``(buf, off, end)`` and returns ``(ethertype, offset)`` of the inner
packet, using the pseudo types of :mod:`sipcaptool.decode.link`
(``ETH_TYPE_TEB`` = an inner Ethernet frame, ``ETH_TYPE_GUESS_IP`` = IP by version
nibble, ``ETH_TYPE_NONE`` = nothing we decode).  The packet decoder recurses into the
inner packet with a bounded depth.
"""

from __future__ import annotations

from sipcaptool.decode import link as _link
from sipcaptool.decode.link import (
    ETH_TYPE_ERSPAN2,
    ETH_TYPE_ERSPAN3,
    ETH_TYPE_GUESS_IP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ETH_TYPE_NONE,
    ETH_TYPE_PPP,
    ETH_TYPE_TEB,
)

__all__ = [
    "VXLAN_PORT", "GTPU_PORT", "MAX_GTP_EXT", "gre", "erspan", "vxlan", "gtpu",
]

VXLAN_PORT = 4789
GTPU_PORT = 2152

_GRE_C = 0x8000
_GRE_R = 0x4000
_GRE_K = 0x2000
_GRE_S = 0x1000
_GRE_A = 0x0080       # acknowledgment present (enhanced GRE, version 1)

_GTP_GPDU = 0xFF
MAX_GTP_EXT = 16


def gre(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """RFC 2784/2890 GRE and RFC 2637 enhanced GRE (PPTP)."""
    if off + 4 > end:
        return ETH_TYPE_NONE, off
    flags = buf[off] << 8 | buf[off + 1]
    proto = buf[off + 2] << 8 | buf[off + 3]
    ver = flags & 7
    hl = 4
    if ver == 0:
        if flags & _GRE_R:
            return ETH_TYPE_NONE, off      # source routing (RFC 1701): obsolete
        if flags & _GRE_C:
            hl += 4
        if flags & _GRE_K:
            hl += 4
        if flags & _GRE_S:
            hl += 4
    elif ver == 1:
        hl += 4                             # payload length + call id (key)
        if flags & _GRE_S:
            hl += 4
        if flags & _GRE_A:
            hl += 4
    else:
        return ETH_TYPE_NONE, off
    off += hl
    if off > end:
        return ETH_TYPE_NONE, off
    if proto == ETH_TYPE_IPV4 or proto == ETH_TYPE_IPV6 or proto == ETH_TYPE_TEB:
        return proto, off
    if proto == ETH_TYPE_PPP:
        return _link.ppp(buf, off, end)
    if proto == ETH_TYPE_ERSPAN2:
        if not flags & _GRE_S:
            return ETH_TYPE_TEB, off        # ERSPAN type I: no header at all
        return erspan(buf, off, end)
    if proto == ETH_TYPE_ERSPAN3:
        return erspan(buf, off, end)
    if proto <= 1500:
        return ETH_TYPE_NONE, off
    return _link.after_ethertype(buf, off, end, proto)


def erspan(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """ERSPAN type II (8-byte header) or type III (12 bytes + optional 8-byte subheader)."""
    if off + 8 > end:
        return ETH_TYPE_NONE, off
    ver = buf[off] >> 4
    if ver == 1:
        return ETH_TYPE_TEB, off + 8
    if ver == 2:
        if off + 12 > end:
            return ETH_TYPE_NONE, off
        frame_type = (buf[off + 10] >> 1) & 0x1F
        hl = 12 + (8 if buf[off + 11] & 1 else 0)
        if frame_type != 0:
            return ETH_TYPE_NONE, off       # only Ethernet frames are carried here
        return ETH_TYPE_TEB, off + hl
    return ETH_TYPE_NONE, off


def vxlan(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """RFC 7348 VXLAN: 8-byte header with the I flag, then an Ethernet frame."""
    if off + 8 > end or not buf[off] & 0x08:
        return ETH_TYPE_NONE, off
    return ETH_TYPE_TEB, off + 8


def gtpu(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """GTP-U v1 (3GPP TS 29.281): a G-PDU carries an IPv4 or IPv6 packet."""
    if off + 8 > end:
        return ETH_TYPE_NONE, off
    b0 = buf[off]
    if b0 >> 5 != 1 or not b0 & 0x10 or buf[off + 1] != _GTP_GPDU:
        return ETH_TYPE_NONE, off
    glen = buf[off + 2] << 8 | buf[off + 3]
    inner_end = off + 8 + glen
    pos = off + 8
    if b0 & 0x07:
        if pos + 4 > end:
            return ETH_TYPE_NONE, off
        nxt = buf[pos + 3] if b0 & 0x04 else 0
        pos += 4
        for _ in range(MAX_GTP_EXT):
            if not nxt:
                break
            if pos >= end:
                return ETH_TYPE_NONE, off
            elen = buf[pos] * 4
            if elen == 0 or pos + elen > end:
                return ETH_TYPE_NONE, off
            nxt = buf[pos + elen - 1]
            pos += elen
        else:
            return ETH_TYPE_NONE, off
    if inner_end > end or pos > inner_end:
        return ETH_TYPE_NONE, off
    return ETH_TYPE_GUESS_IP, pos
