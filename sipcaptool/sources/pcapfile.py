"""Read pcap and pcapng files (microsecond and nanosecond, either byte order) with libpcap.

libpcap (through pcapy-ng) does the file format work; frames are read in batches
(``next_batch``) so the per-packet cost in Python is one slice. A file cut off in the
middle is read up to the last whole packet and then reported with ``Truncated``.
"""

from __future__ import annotations

import array
import os
from typing import Iterator

from ..errors import InputError

BATCH = 512


def open_capture(path: str):
    """Open a capture file; InputError with a clear one-line reason when that fails."""
    import pcapy

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a capture file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file, not a capture")
    try:
        return pcapy.open_offline(path)
    except pcapy.PcapError as e:
        msg = str(e)
        if "unknown file format" in msg or "bad dump file format" in msg:
            raise InputError(f"{path}: not a pcap or pcapng capture file ({msg})") from None
        if "truncated" in msg:
            raise InputError(f"{path}: capture file header is cut off ({msg})") from None
        raise InputError(f"{path}: cannot read capture: {msg}") from None


class CaptureFile:
    """One capture file: its link type, and its frames in batches.

    Attributes:
        linktype: the file's DLT/LINKTYPE number.
        packets: packets read so far.
        truncated: None, or why reading stopped early (the file is cut off inside a
            packet); every whole packet before the cut has been yielded.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path) if os.path.exists(path) else 0
        self._reader = open_capture(path)
        self.linktype: int = self._reader.datalink()
        self.packets = 0
        self.truncated: str | None = None

    def batches(self) -> Iterator[tuple[bytes, memoryview]]:
        """Yield ``(data, meta)``: ``meta`` holds native uint32 quadruples
        (sec, usec, offset, caplen) slicing each frame out of ``data``."""
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
