"""Read pcap and pcapng files (microsecond and nanosecond, either byte order) with libpcap.

libpcap (through pcapy-ng) does the file format work; frames are read in batches
(``next_batch``) so the per-packet cost in Python is one slice. A file cut off in the
middle is read up to the last whole packet and then reported with ``Truncated``.

Besides plain files: ``-`` is standard input (``zcat x.pcap.gz | sipcaptool replay -``),
and a gzip-compressed capture (``x.pcap.gz``, recognised by its magic bytes) is
inflated on the fly by a child process feeding a pipe that libpcap reads (libpcap
holds the GIL while it waits for data, so a thread of this process could not feed
it). Such streams cannot be read twice, so they are read packet by packet: a stream cut
off inside a packet loses only that packet.
"""

from __future__ import annotations

import array
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from ..errors import InputError

BATCH = 512


STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
# The child that inflates a .gz capture into a pipe. It writes every byte it has
# inflated before it stops (a file cut off keeps everything before the cut), takes
# concatenated gzip members, and says what went wrong in one line on stderr.
_GUNZIP = """
import os, sys, zlib
out = sys.stdout.buffer
try:
    d, fed = zlib.decompressobj(31), False
    with open(sys.argv[1], "rb") as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            while chunk:
                out.write(d.decompress(chunk))
                fed = True
                if not d.eof:
                    break
                chunk = d.unused_data  # another gzip member follows
                d, fed = zlib.decompressobj(31), False
    out.flush()
    if fed and not d.eof:
        sys.stderr.write("compressed file ended before the end-of-stream marker")
        sys.exit(1)
except BrokenPipeError:  # the reader stopped early: nothing more is wanted
    os._exit(0)
except (OSError, zlib.error) as e:
    sys.stderr.write(str(e).splitlines()[0] if str(e) else type(e).__name__)
    sys.exit(1)
"""


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
    if path == STDIN and "only got 0" in msg:
        raise InputError("-: standard input is empty, not a capture") from None
    if "unknown file format" in msg or "bad dump file format" in msg:
        raise InputError(f"{path}: not a pcap or pcapng capture file ({msg})") from None
    if "truncated" in msg:
        raise InputError(f"{path}: capture file header is cut off ({msg})") from None
    raise InputError(f"{path}: cannot read capture: {msg}") from None


class _Gunzip:
    """A child process inflating ``path`` into a pipe; ``error()`` after it ended."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _GUNZIP, path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL,
                                     # Ctrl-C and kills of the process group are for the
                                     # replay, which stops at its next batch and ends
                                     # this child itself
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout: IO[bytes] = self.proc.stdout
        self.stderr: IO[bytes] = self.proc.stderr

    @property
    def device(self) -> str:
        return f"/dev/fd/{self.stdout.fileno()}"

    def error(self) -> str | None:
        """Why inflating failed (None when it did not), once the child has ended."""
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.stderr.read().decode("utf-8", "replace").strip()
        if self.proc.returncode == 0:
            return None
        return err or f"the inflating process ended with status {self.proc.returncode}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.stdout, self.stderr):
            if not f.closed:
                f.close()


_PCAP_LE = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")   # pcap (µs, ns), little-endian
_PCAP_BE = (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")   # pcap (µs, ns), big-endian
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_CAPTURE_MAGICS = _PCAP_LE + _PCAP_BE + (_PCAPNG,)


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
    """One capture file: its link type, and its frames in batches.

    Creating it checks the file (it exists, can be read, starts like a pcap, pcapng or
    gzip file) without keeping it open; :meth:`open` opens it when its turn comes and
    :meth:`close` (or the end of :meth:`batches`) closes it again, so a replay of
    thousands of files never holds more than one open.

    Attributes:
        linktype: the file's DLT/LINKTYPE number (after :meth:`open`).
        packets: packets read so far.
        truncated: None, or why reading stopped early (the file is cut off inside a
            packet); every whole packet before the cut has been yielded.
        size: bytes on disk, for a progress bar; None for a stream (stdin, a pipe, a
            gzip file, whose inflated size is not known ahead).
        snaplen: the capture's snap length when frames may have been cut by it (a frame
            of this length or more was cut and its IP/UDP lengths are not to be
            trusted), else None. Batch reads do not give the length on the wire, so for
            pcap files it comes from the file header; pcapng files (whose interface
            blocks do not always say: editcap -s keeps 262144) and streams are read
            packet by packet, and it comes from the first frame shorter than on the
            wire.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.packets = 0
        self.truncated: str | None = None
        self.linktype: int | None = None
        self._reader: Any = None  # a pcapy Reader
        self._gunzip: _Gunzip | None = None
        self._gzip = False
        self.size: int | None = None
        self.snaplen: int | None = None
        self._per_packet = False
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
        if head[:2] == GZIP_MAGIC:
            self._gzip = True
        elif head[:4] in _CAPTURE_MAGICS:
            self.size = os.path.getsize(path)
            self.snaplen = _pcap_snaplen(head)
            self._per_packet = head[:4] == _PCAPNG
        else:
            raise InputError(f"{path}: not a pcap or pcapng capture file (unknown file format)")

    @property
    def streamed(self) -> bool:
        return self.size is None

    def open(self) -> None:
        """Open the file for reading (InputError with a one-line reason)."""
        import pcapy

        if self._reader is not None:
            return
        path = self.path
        if self._gzip:
            self._gunzip = _Gunzip(path)
        try:
            self._reader = pcapy.open_offline(self._gunzip.device if self._gunzip else path)
        except pcapy.PcapError as e:
            gunzip = self._gunzip
            if gunzip is None:
                _raise_open_error(path, e)
            gunzip.stdout.close()  # a child still writing ends now
            why = gunzip.error()
            gunzip.close()
            self._gunzip = None
            if why:
                raise InputError(f"{path}: not a readable gzip file ({why})") from None
            _raise_open_error(path + " (inflated)", e)
        self.linktype = self._reader.datalink()

    def close(self) -> None:
        """Close the file (and end the inflating child of a gzip file); idempotent."""
        r, self._reader = self._reader, None
        if r is not None:
            try:
                r.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        if self._gunzip is not None:
            self._gunzip.close()
            self._gunzip = None

    def batches(self) -> Iterator[tuple[bytes, memoryview]]:
        """Yield ``(data, meta)``: ``meta`` holds native uint32 quadruples
        (sec, usec, offset, caplen) slicing each frame out of ``data``. Opens the file
        if needed and closes it at the end."""
        self.open()
        try:
            if self.streamed or self._per_packet:
                yield from self._stream_batches()
            else:
                yield from self._file_batches()
        finally:
            self.close()

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

    def _stream_batches(self) -> Iterator[tuple[bytes, memoryview]]:
        """Standard input, an inflated file or pcapng: packet by packet (a stream cannot
        be re-read after a failing batch; each packet's length on the wire shows what
        the snap length cut), handed on in batches of BATCH packets."""
        import pcapy

        nxt = self._reader.next
        at_end = False  # the stream ended (EOF, or cut off inside a packet)
        try:
            while True:
                frames: list[bytes] = []
                meta = array.array("I")
                off = 0
                try:
                    while len(frames) < BATCH:
                        hdr, pkt = nxt()
                        if hdr is None:
                            at_end = True
                            break
                        sec, usec = hdr.getts()
                        if hdr.getlen() > len(pkt) and (self.snaplen is None
                                                        or len(pkt) < self.snaplen):
                            self.snaplen = len(pkt)  # cut by the capture's snap length
                        meta.extend((sec & 0xFFFFFFFF, usec, off, len(pkt)))
                        frames.append(pkt)
                        off += len(pkt)
                except pcapy.PcapError as e:
                    self.truncated = str(e)
                    at_end = "truncated" in self.truncated
                if frames:
                    self.packets += len(frames)
                    yield b"".join(frames), memoryview(meta)
                if self.truncated or len(frames) < BATCH:
                    break
        finally:
            if self._gunzip is not None:
                # At the end of the stream the child has written everything: its exit
                # status says whether the file was whole. Reading stopped before (a
                # bad record, an interrupt): the child, maybe blocked on a full pipe
                # (whose read end the writer process also holds), is not needed.
                why = self._gunzip.error() if at_end else None
                self._gunzip.close()
                self._gunzip = None
                if why:
                    self.truncated = f"gzip: {why}"

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
