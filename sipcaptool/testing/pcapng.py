"""pcapng files written block by block, as capture tools write them, for tests and
``tests/pcaps/``: several interfaces of different link types, timestamp resolutions
(decimal and binary) and offsets per interface, either byte order, several sections,
Simple and obsolete Packet Blocks, statistics, name resolution, custom and unknown
blocks. The export's own ``PcapngWriter`` writes one Ethernet interface; this writes
what ``dumpcap -i eth0 -i tun0``, Wireshark and other writers may.

Also the link-layer headers of the link types the decoder knows (``link_frame``), so
one IP packet can be written on any of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["PcapngBuilder", "link_frame", "LINK_HEADERS"]

SHB, IDB, OPB, SPB, NRB, ISB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 10
CUSTOM = 0x00000BAD   # a custom block that may be copied


@dataclass
class _Iface:
    linktype: int
    units: int
    offset: int
    snaplen: int


class PcapngBuilder:
    """A pcapng file in memory: call :meth:`section` first, then add blocks in order;
    :meth:`data` gives the bytes.

    Timestamps are given in µs; each interface's resolution turns them into its units
    (rounded up), and :meth:`packet` returns the µs a reader gets back (equal, unless
    the resolution is coarser than a microsecond).
    """

    def __init__(self, big_endian: bool = False) -> None:
        self.order = ">" if big_endian else "<"
        self.parts: list[bytes] = []
        self.ifaces: list[_Iface] = []

    def _opt(self, code: int, value: bytes) -> bytes:
        return struct.pack(self.order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    def _end(self) -> bytes:
        return struct.pack(self.order + "HH", 0, 0)

    def block(self, btype: int, body: bytes) -> PcapngBuilder:
        """Any block (a custom or unknown type too); the body is padded to 4 bytes."""
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        self.parts.append(struct.pack(self.order + "II", btype, n) + body
                          + struct.pack(self.order + "I", n))
        return self

    def section(self, big_endian: bool | None = None, application: str = "sipcaptool tests"
                ) -> PcapngBuilder:
        """A Section Header Block: a new section (interfaces start again at 0)."""
        if big_endian is not None:
            self.order = ">" if big_endian else "<"
        self.ifaces = []
        body = struct.pack(self.order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
        body += self._opt(4, application.encode()) + self._end()
        return self.block(SHB, body)

    def interface(self, linktype: int, *, snaplen: int = 0, name: str = "",
                  tsresol: int | None = None, tsoffset: int = 0) -> int:
        """An Interface Description Block; returns its index in the section.
        ``tsresol`` is the option's byte: 9 = ns, 0x80 | 20 = 2**-20 s; None: no option
        (µs). ``tsoffset`` in seconds."""
        opts = b""
        if name:
            opts += self._opt(2, name.encode())
        units = 1_000_000
        if tsresol is not None:
            opts += self._opt(9, bytes([tsresol]))
            units = (1 << (tsresol & 0x7F)) if tsresol & 0x80 else 10 ** tsresol
        if tsoffset:
            opts += self._opt(14, struct.pack(self.order + "q", tsoffset))
        if opts:
            opts += self._end()
        self.block(IDB, struct.pack(self.order + "HHI", linktype, 0, snaplen) + opts)
        self.ifaces.append(_Iface(linktype, units, tsoffset, snaplen))
        return len(self.ifaces) - 1

    def _ts(self, iface: int, ts_us: int) -> tuple[int, int]:
        """(raw timestamp in the interface's units, the µs a reader gets back)."""
        i = self.ifaces[iface]
        rel = ts_us - i.offset * 1_000_000
        raw = -(-rel * i.units // 1_000_000)
        sec, frac = divmod(raw, i.units)
        return raw, (sec + i.offset) * 1_000_000 + frac * 1_000_000 // i.units

    def packet(self, iface: int, ts_us: int, frame: bytes, *, wirelen: int | None = None,
               comment: str = "", obsolete: bool = False) -> int:
        """An Enhanced Packet Block (``obsolete``: a Packet Block); returns the µs time
        a reader gets back."""
        raw, back = self._ts(iface, ts_us)
        hi, lo = raw >> 32, raw & 0xFFFFFFFF
        wl = len(frame) if wirelen is None else wirelen
        pad = frame + b"\0" * (-len(frame) % 4)
        opts = (self._opt(1, comment.encode()) + self._end()) if comment else b""
        if obsolete:
            body = struct.pack(self.order + "HHIIII", iface, 0, hi, lo, len(frame), wl)
            self.block(OPB, body + pad + opts)
        else:
            body = struct.pack(self.order + "IIIII", iface, hi, lo, len(frame), wl)
            self.block(EPB, body + pad + opts)
        return back

    def simple(self, frame: bytes, *, wirelen: int | None = None) -> None:
        """A Simple Packet Block (the section's first interface, no time)."""
        wl = len(frame) if wirelen is None else wirelen
        self.block(SPB, struct.pack(self.order + "I", wl) + frame)

    def statistics(self, iface: int) -> None:
        """An Interface Statistics Block (as dumpcap writes at the end)."""
        self.block(ISB, struct.pack(self.order + "III", iface, 0, 0) + self._end())

    def names(self) -> None:
        """A Name Resolution Block with one IPv4 record."""
        rec = bytes([10, 0, 0, 1]) + b"pbx.example.com\0"
        body = struct.pack(self.order + "HH", 1, len(rec)) + rec + b"\0" * (-len(rec) % 4)
        self.block(NRB, body + struct.pack(self.order + "HH", 0, 0))

    def custom(self, payload: bytes = b"vendor data") -> None:
        """A custom block (Private Enterprise Number 32473, the documentation one)."""
        self.block(CUSTOM, struct.pack(self.order + "I", 32473) + payload)

    def data(self) -> bytes:
        return b"".join(self.parts)


def _sll(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\0\0", proto) + payload


def _sll2(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\0\0") + payload


def link_frame(linktype: int, ip_packet: bytes) -> bytes:
    """``ip_packet`` (IPv4 or IPv6) behind the link-layer header of ``linktype``."""
    v6 = ip_packet[0] >> 4 == 6
    et = 0x86DD if v6 else 0x0800
    if linktype == 1:
        dst, src = b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01"
        return dst + src + struct.pack("!H", et) + ip_packet
    if linktype in (12, 14, 101):
        return ip_packet
    if linktype == 228:
        return ip_packet
    if linktype == 229:
        return ip_packet
    if linktype == 0:       # BSD loopback: the address family in the writer's byte order
        return struct.pack("<I", 24 if v6 else 2) + ip_packet
    if linktype == 108:     # OpenBSD loopback: big-endian
        return struct.pack("!I", 24 if v6 else 2) + ip_packet
    if linktype in (9, 50):  # PPP in HDLC-like framing
        return b"\xff\x03" + struct.pack("!H", 0x57 if v6 else 0x21) + ip_packet
    if linktype == 51:      # PPPoE session header, then PPP
        return struct.pack("!BBHH", 0x11, 0, 1, len(ip_packet) + 2) \
            + struct.pack("!H", 0x57 if v6 else 0x21) + ip_packet
    if linktype == 113:
        return _sll(et, ip_packet)
    if linktype == 276:
        return _sll2(et, ip_packet)
    raise ValueError(f"no link header known for link type {linktype}")


#: every link type ``link_frame`` writes (those the decoder reads)
LINK_HEADERS = (0, 1, 9, 12, 14, 50, 51, 101, 108, 113, 228, 229, 276)
