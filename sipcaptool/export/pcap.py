"""Capture files written: classic pcap and pcapng (pure writers on a binary file).

pcapng: a Section Header Block, one Interface Description Block (Ethernet, µs
timestamps: ``if_tsresol`` 6) and one Enhanced Packet Block per packet, with the node
that captured the message as the packet's ``opt_comment``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

from .frames import Packet

__all__ = ["PcapWriter", "PcapngWriter", "write_pcap", "write_pcapng",
           "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LINUX_SLL"]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113

SNAPLEN = 262144


class PcapWriter:
    """Classic pcap (little-endian, µs or ns timestamps)."""

    def __init__(self, f: BinaryIO, linktype: int = LINKTYPE_ETHERNET, snaplen: int = SNAPLEN,
                 nano: bool = False) -> None:
        self.f = f
        self.nano = nano
        magic = 0xA1B23C4D if nano else 0xA1B2C3D4
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_us: int, frame: bytes, wirelen: int | None = None) -> None:
        sec, usec = divmod(ts_us, 1_000_000)
        frac = usec * 1000 if self.nano else usec
        self.f.write(struct.pack("<IIII", sec, frac, len(frame), wirelen or len(frame)))
        self.f.write(frame)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """pcapng (little-endian): one section, one interface with µs timestamps."""

    SHB = 0x0A0D0D0A
    IDB = 0x00000001
    EPB = 0x00000006
    OPT_END = 0
    OPT_COMMENT = 1
    IF_TSRESOL = 9

    def __init__(self, f: BinaryIO, linktype: int = LINKTYPE_ETHERNET, snaplen: int = SNAPLEN,
                 application: str = "sipcaptool") -> None:
        self.f = f
        shb_opts = _option(4, application.encode()) + _option(self.OPT_END, b"")  # shb_userappl
        f.write(_block(self.SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts))
        idb_opts = _option(self.IF_TSRESOL, b"\x06") + _option(self.OPT_END, b"")
        f.write(_block(self.IDB, struct.pack("<HHI", linktype, 0, snaplen) + idb_opts))

    def write(self, ts_us: int, frame: bytes, comment: str = "") -> None:
        body = struct.pack("<IIIII", 0, (ts_us >> 32) & 0xFFFFFFFF, ts_us & 0xFFFFFFFF,
                           len(frame), len(frame)) + frame + b"\0" * (-len(frame) % 4)
        if comment:
            body += _option(self.OPT_COMMENT, comment.encode()) + _option(self.OPT_END, b"")
        self.f.write(_block(self.EPB, body))


def write_pcap(f: BinaryIO, packets: Iterable[Packet]) -> int:
    """Write ``packets`` (Ethernet frames) as a classic pcap file; return how many."""
    w = PcapWriter(f)
    n = 0
    for p in packets:
        w.write(p.ts_us, p.frame)
        n += 1
    return n


def write_pcapng(f: BinaryIO, packets: Iterable[Packet]) -> int:
    """Write ``packets`` as pcapng, each with its node as a comment; return how many."""
    w = PcapngWriter(f)
    n = 0
    for p in packets:
        w.write(p.ts_us, p.frame, p.node)
        n += 1
    return n
