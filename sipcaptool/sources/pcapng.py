"""Capture files read in pure Python: pcapng completely, and classic pcap from a stream.

libpcap refuses a pcapng file whose interfaces have different link types (``dumpcap -i
eth0 -i tun0``, ``mergecap`` of an Ethernet capture with a raw-IP one), and it cannot be
told that standard input is compressed. :class:`FrameReader` reads such input from any
binary stream (a file, standard input, a decompressing wrapper) without libpcap:

* pcapng: every section (concatenated files; each in its own byte order), every
  Interface Description Block (link type, snap length, ``if_name``, ``if_tsresol`` in
  decimal or binary fractions of a second, ``if_tsoffset``), Enhanced Packet Blocks,
  Simple Packet Blocks (the section's first interface; no time of their own: they take
  the time of the packet before them), obsolete Packet Blocks; Name Resolution,
  Interface Statistics and Decryption Secrets blocks are read past; any other block
  (custom, unknown) is skipped and counted as ``skipped:pcapng-block``.
* classic pcap (µs and ns, either byte order).

Frames come out as :meth:`FrameReader.batches` gives them: ``(linktype, data, meta)``,
where ``meta`` holds uint32 quadruples ``(sec, usec, offset, caplen)`` slicing each frame
out of ``data``, exactly as libpcap's ``next_batch`` (``decode_batch`` takes them).
All frames of a batch have the same link type; a batch ends where the link type
changes. Timestamps are whole microseconds (finer resolutions are cut, as libpcap does).
Frames of an interface whose link type the decoder does not know are not handed on:
they are counted (``skipped:unsupported-linktype``) and named in :attr:`unsupported`.

Reading never raises once the header is read: input that ends inside a block sets
:attr:`cut_off`, input that is not a valid block sets :attr:`damaged` (each with the
byte offset), and everything before is handed on. Only the start of the input (empty,
not a capture, its header cut off, an unknown version) raises :class:`CaptureFormatError`.
Nothing is read ahead of need beyond one chunk, and no block may claim more than
:data:`MAX_BLOCK` bytes, so a damaged length never makes the reader hold gigabytes.
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..decode.link import SUPPORTED_LINKTYPES

__all__ = ["BATCH", "CHUNK", "MAX_BLOCK", "PCAPNG_MAGIC", "PCAP_MAGICS", "CaptureFormatError",
           "FrameReader", "Interface", "Stream", "Batch"]

BATCH = 512
#: bytes asked of the stream at a time
CHUNK = 1 << 20
#: the largest block (or classic pcap record) accepted; libpcap's limit is 16 MiB for
#: pcapng blocks and 256 KiB for most link types' frames
MAX_BLOCK = 64 << 20

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_LE = {b"\xd4\xc3\xb2\xa1": 1_000_000, b"\x4d\x3c\xb2\xa1": 1_000_000_000}
_PCAP_BE = {b"\xa1\xb2\xc3\xd4": 1_000_000, b"\xa1\xb2\x3c\x4d": 1_000_000_000}
PCAP_MAGICS = frozenset(_PCAP_LE) | frozenset(_PCAP_BE)

_SHB = 0x0A0D0D0A
_IDB = 1
_OPB = 2          # the obsolete Packet Block
_SPB = 3
_NRB = 4
_ISB = 5
_EPB = 6
_DSB = 10
_KNOWN_NON_PACKET = frozenset({_NRB, _ISB, _DSB})
_BOM = 0x1A2B3C4D
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_BLOCK_NAMES = {_SHB: "Section Header", _IDB: "Interface Description", _OPB: "Packet",
                _SPB: "Simple Packet", _NRB: "Name Resolution", _ISB: "Interface Statistics",
                _EPB: "Enhanced Packet", _DSB: "Decryption Secrets"}

#: (sec, usec, offset, caplen) quadruples
Batch = tuple[int, bytes, "array[int]"]


class Stream(Protocol):
    """What the reader needs of its input: ``read(n)`` giving at most ``n`` bytes, and
    ``b""`` only at the end."""

    def read(self, n: int = -1, /) -> bytes: ...


class CaptureFormatError(Exception):
    """The input does not start like a capture this reader knows (one line, no name)."""


@dataclass
class Interface:
    """One Interface Description Block of a section."""

    index: int
    linktype: int
    snaplen: int
    name: str = ""
    units: int = 1_000_000      # timestamp units per second (if_tsresol)
    offset: int = 0             # seconds added to every timestamp (if_tsoffset)
    skipped: int = 0            # packets not handed on (unsupported link type)

    def describe(self) -> str:
        return f"interface {self.index}" + (f" ({self.name})" if self.name else "")


class _DamagedError(Exception):
    def __init__(self, why: str, at: int) -> None:
        super().__init__(why)
        self.why = why
        self.at = at


class _CutOffError(Exception):
    def __init__(self, what: str, at: int) -> None:
        super().__init__(what)
        self.what = what
        self.at = at


class FrameReader:
    """Frames of a pcapng or classic pcap stream, in batches of one link type.

    Args:
        stream: the bytes (read with ``read1`` when it has one, so that a pipe's frames
            are handed on as they come, else ``read``).
        head: bytes already read from the stream's start (a caller that looked at the
            magic number first), read before the stream.

    Attributes (after :meth:`open`):
        format: ``"pcapng"`` or ``"pcap"``.
        linktype: the link type of the batch last given (before the first batch: the
            first interface's that the decoder knows, or the first interface's).
        packets: packet records read (those of unsupported link types too).
        snaplen: the length of the shortest frame seen cut by the capture's snap length
            (captured shorter than on the wire), else None.
        cut_off: None, or where the input ended inside a block.
        damaged: None, or what is wrong with the block where reading stopped.
        counts: counters to add to the run's: the packets not handed on (``packets``
            and their reason: ``skipped:unsupported-linktype``,
            ``malformed:pcapng-interface``) and the blocks skipped
            (``skipped:pcapng-block``).
        unsupported: the interfaces whose frames were skipped for their link type.
        position: bytes of the input read past so far (for progress).
    """

    def __init__(self, stream: Stream, head: bytes = b"") -> None:
        read1 = getattr(stream, "read1", None)
        self._read: Callable[[int], bytes] = read1 if callable(read1) else stream.read
        self._buf = bytes(head)
        self._pos = 0
        self._base = 0          # input offset of _buf[0]
        self._eof = False
        self.format = ""
        self.linktype: int | None = None
        self.packets = 0
        self.snaplen: int | None = None
        self.cut_off: str | None = None
        self.damaged: str | None = None
        self.counts: Counter[str] = Counter()
        self.unsupported: list[Interface] = []
        self.position = 0
        self._opened = False
        # classic pcap
        self._pcap_rec: struct.Struct | None = None
        self._pcap_units = 1_000_000
        # pcapng: the current section
        self._order = "<"
        self._ifaces: list[Interface] = []
        self._peeked: list[Interface] = []

    # ------------------------------------------------------------------ input

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``_pos`` (False: the input ended first)."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos:]]
        self._base += self._pos
        self._pos = 0
        while have < need and not self._eof:
            chunk = self._read(max(CHUNK, need - have))
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts)
        return have >= need

    # ------------------------------------------------------------------ the start

    def open(self) -> None:
        """Read the file header (classic pcap) or the first Section Header Block and
        the Interface Description Blocks right after it (pcapng)."""
        if self._opened:
            return
        self._opened = True
        if not self._fill(4):
            if len(self._buf) == 0:
                raise CaptureFormatError("empty, not a capture")
            raise CaptureFormatError("not a pcap or pcapng capture file (only "
                                     f"{len(self._buf)} bytes)")
        magic = self._buf[:4]
        if magic == PCAPNG_MAGIC:
            self.format = "pcapng"
            try:
                self._section_header()
            except _CutOffError:
                raise CaptureFormatError("capture file header is cut off (the Section "
                                         "Header Block)") from None
            except _DamagedError as e:
                raise CaptureFormatError(f"not a readable pcapng file ({e.why})") from None
            self._first_interfaces()
        elif magic in PCAP_MAGICS:
            self.format = "pcap"
            self._pcap_header()
        else:
            raise CaptureFormatError("not a pcap or pcapng capture file (unknown file format)")

    def _pcap_header(self) -> None:
        if not self._fill(24):
            raise CaptureFormatError(f"capture file header is cut off ({len(self._buf)} of "
                                     "24 bytes)")
        buf = self._buf
        magic = buf[:4]
        order = "<" if magic in _PCAP_LE else ">"
        self._pcap_units = (_PCAP_LE if order == "<" else _PCAP_BE)[magic]
        major, _minor, _zone, _sigfigs, snaplen, lt = struct.unpack_from(order + "HHiIII", buf, 4)
        if major != 2:
            raise CaptureFormatError(f"pcap version {major} is not supported (only 2)")
        self.linktype = lt & 0x03FFFFFF   # the upper bits say how FCS are kept
        self._pcap_rec = struct.Struct(order + "IIII")
        self._pos = 24
        self.position = 24

    def _section_header(self) -> None:
        """The Section Header Block at ``_pos``: byte order, version; interfaces reset."""
        at = self._base + self._pos
        if not self._fill(12):
            raise _CutOffError("Section Header", at)
        buf, pos = self._buf, self._pos
        bom = buf[pos + 8:pos + 12]
        if bom == b"\x4d\x3c\x2b\x1a":
            order = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            order = ">"
        else:
            raise _DamagedError(f"Section Header Block with byte-order magic {bom.hex()}", at)
        (blen,) = struct.unpack_from(order + "I", buf, pos + 4)
        self._check_length(blen, 28, at, "Section Header")
        if not self._fill(blen):
            raise _CutOffError("Section Header", at)
        buf, pos = self._buf, self._pos
        major, minor = struct.unpack_from(order + "HH", buf, pos + 12)
        if major != 1:
            raise _DamagedError(f"pcapng version {major}.{minor} is not supported (only 1.x)", at)
        self._check_trailer(order, blen, at, "Section Header")
        self._order = order
        self._ifaces = []
        self._pos += blen

    def _first_interfaces(self) -> None:
        """Look (without reading past them) at the interface blocks before the first
        packet block, to name the link type ahead. Only as much is read as those
        blocks take, so a pipe fed as packets come is not waited on."""
        order = self._order
        hdr = struct.Struct(order + "II")
        found: list[Interface] = []
        ahead = 0   # bytes looked at past _pos
        while self._fill(ahead + 8):
            btype, blen = hdr.unpack_from(self._buf, self._pos + ahead)
            if btype in (_SHB, _EPB, _SPB, _OPB) or blen < 12 or blen > MAX_BLOCK:
                break
            if not self._fill(ahead + blen):
                break
            if btype == _IDB:
                try:
                    found.append(_parse_idb(self._buf, self._pos + ahead, blen, order,
                                            len(found), 0))
                except _DamagedError:
                    break
            ahead += blen
        self._peeked = found
        known = [i for i in found if i.linktype in SUPPORTED_LINKTYPES]
        if known:
            self.linktype = known[0].linktype
        elif found:
            self.linktype = found[0].linktype
        else:
            # no interface described before the first packet block (a file with no
            # packets; or one that breaks the rule): each batch says its own
            self.linktype = 1

    @property
    def interfaces(self) -> list[Interface]:
        """The interfaces of the current section (before reading: those seen ahead)."""
        return self._ifaces or self._peeked

    @staticmethod
    def _check_length(blen: int, least: int, at: int, name: str) -> None:
        if blen < least or blen % 4:
            raise _DamagedError(f"{name} Block of length {blen}", at)
        if blen > MAX_BLOCK:
            raise _DamagedError(f"{name} Block of length {blen}, larger than any capture "
                           f"writes ({MAX_BLOCK})", at)

    def _check_trailer(self, order: str, blen: int, at: int, name: str) -> None:
        (tail,) = struct.unpack_from(order + "I", self._buf, self._pos + blen - 4)
        if tail != blen:
            raise _DamagedError(f"{name} Block whose length at its end ({tail}) is not the "
                           f"one at its start ({blen})", at)

    def _interface(self, order: str, blen: int, at: int) -> None:
        """Add the Interface Description Block at ``_pos`` (whole, ``blen`` bytes)."""
        self._check_length(blen, 20, at, "Interface Description")
        self._check_trailer(order, blen, at, "Interface Description")
        self._ifaces.append(_parse_idb(self._buf, self._pos, blen, order, len(self._ifaces), at))

    # ------------------------------------------------------------------ frames

    def batches(self) -> Iterator[Batch]:
        """Yield ``(linktype, data, meta)`` batches to the end of the input (or to the
        block where it is cut off or damaged: :attr:`cut_off`, :attr:`damaged`)."""
        self.open()
        try:
            if self.format == "pcap":
                yield from self._pcap_batches()
            else:
                yield from self._pcapng_batches()
        except _CutOffError as e:
            self.cut_off = (f"the {e.what} at byte {e.at} is cut short" if e.what
                            else f"the input ends inside a block header at byte {e.at}")
        except _DamagedError as e:
            self.damaged = f"at byte {e.at}: {e.why}"

    def _pcap_batches(self) -> Iterator[Batch]:
        rec = self._pcap_rec
        assert rec is not None and self.linktype is not None
        lt = self.linktype
        unpack = rec.unpack_from
        nano = self._pcap_units != 1_000_000
        skip = None
        if lt not in SUPPORTED_LINKTYPES:
            skip = Interface(0, lt, 0)
            self.unsupported.append(skip)
        while True:
            if not self._fill(16):
                if len(self._buf) > self._pos:
                    raise _CutOffError("packet record header", self._base + self._pos)
                return
            buf, pos = self._buf, self._pos
            end = len(buf)
            start = pos
            meta = array("I")
            n = 0
            bad = 0
            while n < BATCH and pos + 16 <= end:
                sec, frac, caplen, wirelen = unpack(buf, pos)
                if caplen > MAX_BLOCK:
                    bad = caplen
                    break
                if pos + 16 + caplen > end:
                    break
                if caplen < wirelen and (self.snaplen is None or caplen < self.snaplen):
                    self.snaplen = caplen
                meta.extend((sec, frac // 1000 if nano else frac, pos + 16 - start, caplen))
                pos += 16 + caplen
                n += 1
            if n:
                self.packets += n
                self._pos = pos
                self.position = self._base + pos
                if skip is None:
                    yield lt, buf[start:pos], meta
                else:
                    self._skip_unsupported(skip, n)
            if bad:
                raise _DamagedError(f"a packet record of {bad} bytes, larger than any capture "
                               f"writes ({MAX_BLOCK})", self._base + pos)
            if n:
                continue
            # the next record does not fit in what was read: read on
            caplen = unpack(buf, pos)[2]
            if not self._fill(16 + caplen):
                raise _CutOffError(f"packet record {self.packets + 1}", self._base + self._pos)

    def _skip_unsupported(self, iface: Interface, n: int) -> None:
        iface.skipped += n
        self.counts["packets"] += n
        self.counts["skipped:unsupported-linktype"] += n

    def _pcapng_batches(self) -> Iterator[Batch]:
        supported = SUPPORTED_LINKTYPES
        sec = usec = 0      # the time of the last packet: a Simple Packet Block's
        while True:
            # the blocks of the current section, in its byte order
            order = self._order
            hdr = struct.Struct(order + "II").unpack_from
            epb = struct.Struct(order + "IIIIIII").unpack_from
            u32 = struct.Struct(order + "I").unpack_from
            ifaces = self._ifaces
            section = ifaces
            fast: list[tuple[int, int, int]] = []
            nif = 0
            while self._ifaces is section:
                # one batch: Enhanced Packet Blocks of one link type, one stretch of input
                if len(ifaces) != nif:     # an interface was added
                    fast = [(x.linktype, x.units, x.offset) for x in ifaces]
                    nif = len(fast)
                buf, pos = self._buf, self._pos
                end = len(buf)
                start = pos
                flat: list[int] = []
                add = flat.extend
                n = 0
                lt = -1
                snap = self.snaplen
                while n < BATCH and end - pos >= 32:
                    btype, blen, i, hi, lo, caplen, wirelen = epb(buf, pos)
                    if (btype != _EPB or blen > end - pos or i >= nif or caplen + 32 > blen
                            or blen & 3 or u32(buf, pos + blen - 4)[0] != blen):
                        break   # anything else: one block at a time, below
                    ilt, units, offset = fast[i]
                    if ilt != lt:
                        if n or ilt not in supported:
                            break
                        lt = ilt
                    if units == 1_000_000:
                        sec, usec = divmod((hi << 32) | lo, 1_000_000)
                    else:
                        sec, usec = divmod((hi << 32) | lo, units)
                        usec = usec * 1_000_000 // units
                    if offset:
                        sec += offset
                    if caplen < wirelen and (snap is None or caplen < snap):
                        snap = self.snaplen = caplen
                    add((sec & 0xFFFFFFFF, usec, pos + 28 - start, caplen))
                    pos += blen
                    n += 1
                if n:
                    self.packets += n
                    self._pos = pos
                    self.position = self._base + pos
                    self.linktype = lt
                    yield lt, buf[start:pos], array("I", flat)
                    continue
                one = self._one_block(hdr, u32, sec, usec)
                if one is None:
                    return
                if one[0] >= 0:
                    sec, usec = one[1]
                    frame = one[2]
                    yield one[0], frame, array("I", (sec & 0xFFFFFFFF, usec, 0, len(frame)))

    def _one_block(self, hdr: Callable[[bytes, int], tuple[int, ...]],
                   u32: Callable[[bytes, int], tuple[int, ...]], sec: int,
                   usec: int) -> tuple[int, tuple[int, int], bytes] | None:
        """Read, check and act on the block at ``_pos`` (any kind); None at the end of
        the input; else ``(linktype, (sec, usec), frame)`` for a packet to hand on, or
        ``(-1, ...)`` when there is none (the block is read past)."""
        nothing = (-1, (sec, usec), b"")
        buf, pos = self._buf, self._pos
        at = self._base + pos
        if len(buf) - pos < 8:
            if not self._fill(8):
                if len(self._buf) == self._pos:
                    return None     # the end of the input, between two blocks
                raise _CutOffError("", at)
            return nothing
        btype, blen = hdr(buf, pos)
        if btype == _SHB:
            self._section_header()
            return nothing
        name = _block_name(btype)
        self._check_length(blen, 12, at, name + " Block")
        if blen > len(buf) - pos:
            if not self._fill(blen):
                raise _CutOffError(name + " Block", at)
            return nothing
        self._check_trailer(self._order, blen, at, name)
        order = self._order
        result = nothing
        if btype == _IDB:
            self._interface(order, blen, at)
        elif btype == _EPB or btype == _OPB or btype == _SPB:
            hi = lo = -1
            if btype == _SPB:
                if blen < 16:
                    raise _DamagedError(f"{name} Block of length {blen}", at)
                (wirelen,) = u32(buf, pos + 8)
                i, data_at, room = 0, 12, blen - 16
                caplen = min(wirelen, room)
                if self._ifaces and self._ifaces[0].snaplen:
                    caplen = min(caplen, self._ifaces[0].snaplen)
            else:
                if blen < 32:
                    raise _DamagedError(f"{name} Block of length {blen}", at)
                f = "IIIII" if btype == _EPB else "HHIIII"
                vals = struct.unpack_from(order + f, buf, pos + 8)
                i, hi, lo, caplen, wirelen = (vals if btype == _EPB
                                              else (vals[0],) + vals[2:])
                data_at, room = 28, blen - 32
            if caplen > room:
                raise _DamagedError(f"{name} Block holding {room} bytes of packet data claims "
                               f"{caplen}", at)
            self.packets += 1
            if i >= len(self._ifaces):
                # the section does not describe this interface: no link type to read it by
                self.counts["packets"] += 1
                self.counts["malformed:pcapng-interface"] += 1
            else:
                iface = self._ifaces[i]
                if hi >= 0:
                    sec, frac = divmod((hi << 32) | lo, iface.units)
                    sec += iface.offset
                    usec = frac * 1_000_000 // iface.units
                if iface.linktype not in SUPPORTED_LINKTYPES:
                    if iface.skipped == 0:
                        self.unsupported.append(iface)
                    self._skip_unsupported(iface, 1)
                    result = (-1, (sec, usec), b"")
                else:
                    if caplen < wirelen and (self.snaplen is None or caplen < self.snaplen):
                        self.snaplen = caplen
                    self.linktype = iface.linktype
                    result = (iface.linktype, (sec, usec),
                              buf[pos + data_at:pos + data_at + caplen])
        elif btype not in _KNOWN_NON_PACKET:
            self.counts["skipped:pcapng-block"] += 1
        self._pos = pos + blen
        self.position = self._base + self._pos
        return result


def _parse_idb(buf: bytes, pos: int, blen: int, order: str, index: int, at: int) -> Interface:
    """The Interface Description Block of ``blen`` bytes at ``pos``: link type, snap
    length and the options that matter (``if_name``, ``if_tsresol``, ``if_tsoffset``)."""
    if blen < 20:
        raise _DamagedError(f"Interface Description Block of length {blen}", at)
    lt, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    iface = Interface(index, lt, snaplen)
    end = pos + blen - 4
    o = pos + 16
    h = struct.Struct(order + "HH")
    while o + 4 <= end:
        code, olen = h.unpack_from(buf, o)
        if code == 0:
            break
        v = o + 4
        if v + olen > end:
            raise _DamagedError(f"Interface Description Block option {code} of length {olen} "
                           "runs past the block", at)
        if code == _OPT_IF_TSRESOL and olen >= 1:
            r = buf[v]
            exp = r & 0x7F
            if exp > (63 if r & 0x80 else 18):
                raise _DamagedError(f"{iface.describe()}: timestamp resolution {r:#04x} is "
                               "finer than any clock", at)
            iface.units = (1 << exp) if r & 0x80 else 10 ** exp
        elif code == _OPT_IF_TSOFFSET and olen >= 8:
            (iface.offset,) = struct.unpack_from(order + "q", buf, v)
        elif code == _OPT_IF_NAME:
            iface.name = buf[v:v + olen].split(b"\0", 1)[0].decode("utf-8", "replace")
        o = v + olen + (-olen % 4)
    return iface


def _block_name(btype: int) -> str:
    return _BLOCK_NAMES.get(btype, f"block of type {btype:#x}")
