"""Read capture files: classic pcap with libpcap, everything else with the pure reader.

A plain classic pcap file (µs or ns, either byte order) is read by libpcap (through
pcapy-ng) in batches (``next_batch``), so the per-packet cost in Python is one slice;
it is the fastest way there is. Everything else goes through the pure-Python reader of
``sources/pcapng.py``, which reads as fast as libpcap does packet by packet and takes
what libpcap refuses:

* pcapng files, whatever their interfaces (several link types, several sections,
  timestamp resolutions and offsets per interface, Simple Packet Blocks);
* standard input (``-``), named pipes (``<(zcat x.pcap.gz)``) and compressed captures,
  in pcap or pcapng, read as streams.

Compression is recognised by its magic bytes, not by the file's name, in files and on
standard input alike: gzip (``cat x.pcap.gz | sipcaptool replay -``), xz, bzip2 (the
standard library) and zstd (when the ``zstandard`` module is installed: the ``zstd``
extra). A compression it cannot read (lz4, zip, …) is named in the error.

A file cut off in the middle is read up to the last whole packet and then reported
(:meth:`CaptureFile.problem`): cut off, or damaged (a block that cannot be a block), at
which byte, after how many packets.
"""

from __future__ import annotations

import array
import importlib
import io
import os
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any, BinaryIO, NoReturn

from ..decode.link import SUPPORTED_LINKTYPES
from ..errors import InputError
from .pcapng import PCAP_MAGICS, PCAPNG_MAGIC, CaptureFormatError, FrameReader, Interface, Stream

BATCH = 512


STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"

#: magic bytes → compression read here (the name used in messages)
COMPRESSIONS: tuple[tuple[bytes, str], ...] = (
    (GZIP_MAGIC, "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
#: magic bytes → compressions and archives recognised only to name them in the error
UNSUPPORTED_COMPRESSIONS: tuple[tuple[bytes, str, str], ...] = (
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
    (b"\x1f\x9d", "compress (.Z)", "zcat"),
    (b"LZIP", "lzip", "lzip -dc"),
    (b"\x89LZO\x00", "lzop", "lzop -dc"),
    (b"PK\x03\x04", "zip", "unzip -p"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip", "7z e -so"),
    (b"Rar!\x1a\x07", "rar", "unrar p -inul"),
)
_SNIFF = 8   # bytes enough to tell every magic above


def compression_of(head: bytes) -> str | None:
    """The compression ``head`` (the first bytes of a file) starts with, None when it
    starts with none known; an InputError (its message without a file name) for a
    compression that cannot be read here."""
    for magic, name in COMPRESSIONS:
        if head.startswith(magic):
            if name == "bzip2" and not head[3:4].isdigit():
                continue
            if name == "zstd" and _zstandard() is None:
                raise InputError("zstd-compressed, and the Python module zstandard is not "
                                 "installed (pip install 'sipcaptool[zstd]'; or "
                                 "zstd -dc FILE | sipcaptool replay -)")
            return name
    for magic, name, tool in UNSUPPORTED_COMPRESSIONS:
        if head.startswith(magic):
            raise InputError(f"{name}-compressed, which sipcaptool does not read (it reads "
                             f"gzip, xz, bzip2 and zstd): {tool} FILE | sipcaptool replay -")
    return None


def _zstandard() -> Any:
    """The ``zstandard`` module, or None when it is not installed (the ``zstd`` extra)."""
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read to look at the magic), then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: Stream) -> None:
        super().__init__()
        self._head = head
        self._raw = raw
        read1 = getattr(raw, "read1", None)
        self._read = read1 if callable(read1) else raw.read

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        want = len(b)
        if self._head:
            data, self._head = self._head[:want], self._head[want:]
        else:
            data = self._read(want)
        b[:len(data)] = data
        return len(data)


class _Zstd:
    """zstd frames (concatenated ones too) inflated from ``raw``; EOFError when the input
    ends inside a frame (``zstandard``'s own stream reader ends silently there)."""

    def __init__(self, raw: Stream) -> None:
        self._zstd = _zstandard()
        self._raw = raw
        self._d = self._zstd.ZstdDecompressor().decompressobj()
        self._started = False
        self._out = b""

    def read(self, n: int = -1, /) -> bytes:
        while not self._out:
            chunk = self._raw.read(16384)   # small: a frame may inflate a thousandfold
            if not chunk:
                if self._started:
                    raise EOFError("compressed file ended before the end-of-stream marker "
                                   "was reached")
                return b""
            while chunk:
                self._out += self._d.decompress(chunk)
                self._started = True
                if not self._d.eof:
                    break
                chunk = self._d.unused_data     # another frame follows
                self._d = self._zstd.ZstdDecompressor().decompressobj()
                self._started = False
        if n < 0:
            n = len(self._out)
        out, self._out = self._out[:n], self._out[n:]
        return out


def _inflating(kind: str, raw: BinaryIO) -> Stream:
    """A stream of what ``raw`` (compressed with ``kind``) inflates to."""
    if kind == "gzip":
        import gzip
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "xz":
        import lzma
        return lzma.LZMAFile(raw)
    if kind == "bzip2":
        import bz2
        return bz2.BZ2File(raw)
    return _Zstd(raw)


def _inflate_errors() -> tuple[type[BaseException], ...]:
    import lzma
    import zlib

    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error, lzma.LZMAError]
    z = _zstandard()
    if z is not None:
        errors.append(z.ZstdError)
    return tuple(errors)


class _Guarded:
    """Reads of an inflating stream that end (``b""``) where inflating fails, keeping
    why in ``error``: every byte inflated before the failure is read."""

    def __init__(self, stream: Stream, kind: str) -> None:
        self._stream = stream
        self.kind = kind
        self.error: str | None = None
        #: the input ended inside a compressed stream (else: it is not valid data)
        self.ended_early = False
        self._errors = _inflate_errors()
        read1 = getattr(stream, "read1", None)
        self._read = read1 if callable(read1) else stream.read

    def read(self, n: int = -1, /) -> bytes:
        if self.error is not None:
            return b""
        try:
            return bytes(self._read(n))
        except self._errors as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.error = text[:1].lower() + text[1:]
            self.ended_early = isinstance(e, EOFError)
            return b""


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a capture file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file, not a capture")


def _raise_open_error(path: str, e: Exception) -> NoReturn:
    msg = str(e)
    if "unknown file format" in msg or "bad dump file format" in msg:
        raise InputError(f"{path}: not a pcap or pcapng capture file ({msg})") from None
    if "truncated" in msg:
        raise InputError(f"{path}: capture file header is cut off ({msg})") from None
    raise InputError(f"{path}: cannot read capture: {msg}") from None


_PCAP_LE = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")   # pcap (µs, ns), little-endian
_PCAP_BE = (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")   # pcap (µs, ns), big-endian


# A snap length this large never cuts a frame: no need to look at each one.
SNAPLEN_UNCUT = 262144


def _pcap_snaplen(head: bytes) -> int | None:
    """The snap length in a pcap file header, when small enough to have cut frames."""
    if len(head) < 24:
        return None
    if head[:4] in _PCAP_LE:
        snap = struct.unpack_from("<I", head, 16)[0]
    elif head[:4] in _PCAP_BE:
        snap = struct.unpack_from(">I", head, 16)[0]
    else:
        return None
    return snap if 0 < snap < SNAPLEN_UNCUT else None


class CaptureFile:
    """One capture file: its link type(s), and its frames in batches.

    Creating it checks the file (it exists, can be read, starts like a pcap or pcapng
    file, or like a compressed one that inflates to one) without keeping it open;
    :meth:`open` opens it when its turn comes and :meth:`close` (or the end of
    :meth:`batches`) closes it again, so a replay of thousands of files never holds more
    than one open.

    Attributes:
        linktype: the DLT/LINKTYPE number of the frames of the batch last given; after
            :meth:`open`, before any batch, the file's (a pcapng file's first interface
            of a link type the decoder knows). A pcapng file's interfaces may differ:
            each batch holds frames of one link type.
        packets: packets read so far.
        truncated: None, or why reading stopped early (the file is cut off inside a
            packet); every whole packet before the cut has been yielded.
        damaged: None, or what is wrong where reading stopped (a block that cannot be
            one); every packet before it has been yielded.
        counts: counters for the run (``packets`` not handed on, with their reason:
            ``skipped:unsupported-linktype``, ``malformed:pcapng-interface``; blocks
            skipped: ``skipped:pcapng-block``), complete at the end of :meth:`batches`.
        compression: ``gzip``, ``xz``, ``bzip2``, ``zstd`` or None (known for a file
            when created, for standard input after :meth:`open`).
        size: bytes on disk, for a progress bar; None for a stream (stdin, a pipe, a
            compressed file, whose inflated size is not known ahead).
        snaplen: the capture's snap length when frames may have been cut by it (a frame
            of this length or more was cut and its IP/UDP lengths are not to be
            trusted), else None. libpcap's batch reads do not give the length on the
            wire, so for classic pcap files it comes from the file header; the pure
            reader (pcapng, streams) gives it from the first frame shorter than on the
            wire (pcapng interface blocks do not always say: editcap -s keeps 262144).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.packets = 0
        self.truncated: str | None = None
        self.damaged: str | None = None
        self.linktype: int | None = None
        self.counts: Counter[str] = Counter()
        self.compression: str | None = None
        self.size: int | None = None
        self.snaplen: int | None = None
        self._libpcap = False
        self._reader: Any = None                  # a pcapy Reader (classic pcap files)
        self._frames: FrameReader | None = None   # the pure reader (everything else)
        self._raw: BinaryIO | None = None         # what it reads from
        self._guard: _Guarded | None = None       # the inflating stream, if any
        self._unsupported: list[Interface] = []
        if path == STDIN:
            return
        _check_file(path)
        if not os.path.isfile(path):
            return  # a named pipe, <(...): read as a stream, nothing to look at ahead
        try:
            with open(path, "rb") as f:
                head = f.read(24)
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        try:
            kind = compression_of(head)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        if kind is not None:
            self.compression = kind
            self._check_inflated(kind)
        elif head[:4] in PCAP_MAGICS:
            self.size = os.path.getsize(path)
            self.snaplen = _pcap_snaplen(head)
            self._libpcap = True
        elif head[:4] == PCAPNG_MAGIC:
            self.size = os.path.getsize(path)
        else:
            raise InputError(f"{path}: not a pcap or pcapng capture file (unknown file format)")

    def _check_inflated(self, kind: str) -> None:
        """A compressed file inflates to something that starts like a capture."""
        path = self.path
        with open(path, "rb") as f:
            guard = _Guarded(_inflating(kind, f), kind)
            head = b""
            while len(head) < 4:
                more = guard.read(4 - len(head))
                if not more:
                    break
                head += more
        if guard.error is not None:
            raise InputError(f"{path}: not a readable {kind} file ({guard.error})")
        if not head:
            raise InputError(f"{path}: {kind}-compressed, but empty inside: not a capture")
        if head[:4] not in PCAP_MAGICS and head[:4] != PCAPNG_MAGIC:
            raise InputError(f"{path}: not a pcap or pcapng capture file (what {kind} "
                             "inflates it to is of an unknown file format)")

    @property
    def streamed(self) -> bool:
        return self.size is None

    def open(self) -> None:
        """Open the file for reading (InputError with a one-line reason)."""
        if self._reader is not None or self._frames is not None:
            return
        if self._libpcap:
            import pcapy

            try:
                self._reader = pcapy.open_offline(self.path)
            except pcapy.PcapError as e:
                _raise_open_error(self.path, e)
            self.linktype = self._reader.datalink()
            return
        try:
            self._open_pure()
        except BaseException:
            self.close()
            raise

    def _open_pure(self) -> None:
        path = self.path
        if path == STDIN:
            raw: BinaryIO = sys.stdin.buffer
        else:
            try:
                raw = open(path, "rb")
            except OSError as e:
                raise InputError(f"{path}: cannot read: {e.strerror}") from None
            self._raw = raw
        head = b""
        read1 = getattr(raw, "read1", raw.read)
        while len(head) < _SNIFF:
            more = read1(_SNIFF - len(head))
            if not more:
                break
            head += more
        try:
            kind = compression_of(head)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        stream: Stream = raw
        if kind is not None:
            self.compression = kind
            self._guard = _Guarded(_inflating(kind, io.BufferedReader(_Prefixed(head, raw))),
                                   kind)
            stream, head = self._guard, b""
        frames = FrameReader(stream, head)
        try:
            frames.open()
        except CaptureFormatError as e:
            guard = self._guard
            if guard is not None and guard.error is not None:
                raise InputError(f"{path}: not a readable {guard.kind} file "
                                 f"({guard.error})") from None
            if path == STDIN and not head and kind is None:
                raise InputError("-: standard input is empty, not a capture") from None
            where = f"{path} (what {kind} inflates it to)" if kind else path
            raise InputError(f"{where}: {e}") from None
        lt = frames.linktype
        if frames.format == "pcapng" and lt is not None and lt not in SUPPORTED_LINKTYPES:
            described = "; ".join(f"{i.describe()}: link type {i.linktype}"
                                  for i in frames.interfaces)
            raise InputError(f"{path}: no interface of a link type sipcaptool decodes "
                             f"({described}); nothing read")
        self._frames = frames
        self.linktype = lt

    def close(self) -> None:
        """Close the file; idempotent."""
        r, self._reader = self._reader, None
        if r is not None:
            try:
                r.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._frames = None
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()
        self._guard = None

    def problem(self) -> str | None:
        """Why the file was not read completely, as one sentence starting with its
        name; None when every packet of it was read (call after :meth:`batches`)."""
        n = self.packets
        if self.truncated:
            return (f"{self.path}: file is cut off after packet {n} ({self.truncated}); "
                    f"the {n} packets before it were stored")
        if self.damaged:
            return (f"{self.path}: file is damaged after packet {n} ({self.damaged}); "
                    f"the {n} packets before it were read, nothing after it")
        if self._unsupported:
            which = "; ".join(f"{i.describe()}: link type {i.linktype}, {i.skipped} packets"
                              for i in self._unsupported)
            return (f"{self.path}: packets of a link type sipcaptool does not decode were "
                    f"skipped ({which}; skipped:unsupported-linktype); every other packet "
                    "was read")
        return None

    def batches(self) -> Iterator[tuple[bytes, memoryview]]:
        """Yield ``(data, meta)``: ``meta`` holds native uint32 quadruples
        (sec, usec, offset, caplen) slicing each frame out of ``data``; all frames of
        a batch have the link type :attr:`linktype` says when it is given. Opens the
        file if needed and closes it at the end."""
        self.open()
        try:
            if self._frames is not None:
                yield from self._pure_batches(self._frames)
            else:
                yield from self._file_batches()
        finally:
            self.close()

    def _pure_batches(self, frames: FrameReader) -> Iterator[tuple[bytes, memoryview]]:
        """pcapng, standard input, pipes and compressed files: the pure reader."""
        try:
            for lt, data, meta in frames.batches():
                self.linktype = lt
                self.snaplen = frames.snaplen
                self.packets = frames.packets
                yield data, memoryview(meta)
        finally:
            self.packets = frames.packets
            self.counts.update(frames.counts)
            self._unsupported = list(frames.unsupported)
            guard = self._guard
            if guard is not None and guard.error is not None:
                if guard.ended_early:
                    self.truncated = f"{guard.kind}: {guard.error}"
                else:
                    self.damaged = f"{guard.kind}: {guard.error}"
            elif frames.cut_off:
                self.truncated = frames.cut_off
            elif frames.damaged:
                self.damaged = frames.damaged

    def _file_batches(self) -> Iterator[tuple[bytes, memoryview]]:
        import pcapy

        while True:
            try:
                data, meta = self._reader.next_batch(BATCH)
            except pcapy.PcapError as e:
                # next_batch loses the whole failing batch: re-read it packet by packet
                self.truncated = str(e)
                yield from self._recover()
                return
            if not meta:
                return
            m = memoryview(meta).cast("I")
            self.packets += len(m) // 4
            yield data, m

    def _recover(self) -> Iterator[tuple[bytes, memoryview]]:
        import pcapy

        r = pcapy.open_offline(self.path)
        left = self.packets
        try:
            while left > 0:
                _data, meta = r.next_batch(min(left, BATCH))
                if not meta:
                    return
                left -= len(memoryview(meta).cast("I")) // 4
            while True:
                hdr, pkt = r.next()
                if hdr is None:
                    return
                sec, usec = hdr.getts()
                sec &= 0xFFFFFFFF  # pcapy gives seconds past 2**31 as negative
                self.packets += 1
                yield pkt, memoryview(array.array("I", [sec, usec, 0, len(pkt)]))
        except pcapy.PcapError:
            return
        finally:
            r.close()
