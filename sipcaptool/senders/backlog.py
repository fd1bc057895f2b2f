"""What an agent holds while no collector can take a message: memory, then disk.

:class:`Backlog` keeps HEP packets (with the key their collector is chosen by) that
could not be sent because every collector a call may go to was down:

1. in memory, up to ``max_bytes``;
2. past that, the oldest quarter of it goes to the disk spool
   (:class:`sipcaptool.store.spool.Spool`, in ``SPOOL_DIR-hep/``), one record of many
   packets with one ``fsync``;
3. when the spool is full too (``spool_max_bytes``) or there is none (``--spool-dir
   none``), the new packet is dropped: ``dropped:hep-buffer-full``, logged at most
   every 10 s.

Counters: ``hep_out:buffered`` (packets that went into the backlog),
``hep_out:spooled`` (of those, moved to disk), ``hep_out:unspooled`` (read back from
disk), ``dropped:hep-buffer-full``. What a previous run left in the spool is sent first
once a collector is up.

Spool record: ``rows`` packets, the payload ``(u16 key length, key, HEP packet)*`` (a
HEP packet carries its own length at bytes 4-5).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..stats import Stats

if TYPE_CHECKING:
    from ..store.url import DbUrl

__all__ = ["Backlog", "hep_spool_dir"]

log = logging.getLogger("sipcaptool.spool")

DEFAULT_MAX_BYTES = 64 << 20
SPILL_MAX = 8 << 20      # bytes moved to disk at most per record
LOG_EVERY = 10.0


def hep_spool_dir(spool_root: str | None) -> str | None:
    """Where an agent spools HEP packets: beside the database spool, ``ROOT-hep``
    (so ``spool drain``, which writes database batches, never reads them)."""
    if not spool_root:
        return None
    return spool_root.rstrip("/") + "-hep"


def _pack(items: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for key, pkt in items:
        k = key[:0xFFFF]
        out += struct.pack("<H", len(k)) + k + pkt
    return bytes(out)


def _unpack(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    off, end = 0, len(data)
    while off + 2 <= end:
        (klen,) = struct.unpack_from("<H", data, off)
        off += 2
        key = data[off:off + klen]
        off += klen
        if off + 6 > end:
            return
        plen = struct.unpack_from(">H", data, off + 4)[0]
        if plen < 6 or off + plen > end:
            return
        yield key, data[off:off + plen]
        off += plen


@dataclass(frozen=True)
class _Collectors:
    """What the spool asks of the database its batches are for (a directory name and
    ``target.json``): here the collectors they are for."""

    database: str
    dialect: str = "hep"
    host: str = ""
    port: int = 0

    def redacted(self) -> str:
        return f"hep:{self.database}"


class Backlog:
    """Packets waiting for a collector: memory first, then the spool (see module doc)."""

    def __init__(self, stats: Stats, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 spool_dir: str | None = None, spool_max_bytes: int = 1 << 30,
                 name: str = "agent") -> None:
        self.stats = stats
        self.max_bytes = max(1, int(max_bytes))
        self.items: deque[tuple[bytes, bytes]] = deque()
        self.bytes = 0
        self._last_log = -LOG_EVERY
        self._from_spool = 0      # items at the front of memory read back from disk
        self._took_spooled = False
        self.spool = None
        if spool_dir:
            from ..store.spool import Spool

            try:
                self.spool = Spool(spool_dir, cast("DbUrl", _Collectors(name)),
                                   spool_max_bytes)
            except OSError as e:
                log.warning("HEP spool %s cannot be used (%s): the agent buffers in memory "
                            "only", spool_dir, e.strerror or e)

    def __len__(self) -> int:
        return len(self.items) + (self.spool.pending_rows if self.spool else 0)

    @property
    def empty(self) -> bool:
        return not self.items and not (self.spool and self.spool.pending_batches)

    def put(self, key: bytes, pkt: bytes) -> bool:
        """Hold one packet; False (and counted) when there is no room anywhere."""
        size = len(pkt) + len(key) + 64
        if self.bytes + size > self.max_bytes and not self._spill():
            self.stats["dropped:hep-buffer-full"] += 1
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY:
                self._last_log = now
                where = (f"and the spool {self.spool.dir} is full" if self.spool
                         else "and there is no spool (--spool-dir none)")
                log.error("no HEP collector can take messages: the memory buffer (%d bytes) "
                          "%s; new messages are dropped, counted as dropped:hep-buffer-full",
                          self.max_bytes, where)
            return False
        self.items.append((key, pkt))
        self.bytes += size
        self.stats["hep_out:buffered"] += 1
        return True

    def _spill(self) -> bool:
        """Move the oldest part of memory to the spool; False when it cannot."""
        if self.spool is None or not self.items:
            return False
        from ..store.spool import SpoolFullError

        want = min(SPILL_MAX, max(self.max_bytes // 4, 1))
        chunk: list[tuple[bytes, bytes]] = []
        got = 0
        for key, pkt in self.items:
            if got >= want and chunk:
                break
            chunk.append((key, pkt))
            got += len(pkt) + len(key) + 64
        try:
            self.spool.append(f"hep-{os.getpid()}-{time.time_ns()}", "hep", "hep", len(chunk),
                              _pack(chunk))
        except SpoolFullError as e:
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY:
                self._last_log = now
                log.error("HEP spool: %s", e)
            return False
        for _ in chunk:
            self.items.popleft()
        self._from_spool = max(0, self._from_spool - len(chunk))
        self.bytes -= got
        self.stats["hep_out:spooled"] += len(chunk)
        return True

    def take(self) -> tuple[bytes, bytes] | None:
        """The oldest packet waiting (the spool's first), or None."""
        sp = self.spool
        if not self._from_spool and sp is not None and sp.pending_batches:
            # what is on disk is older than anything in memory: its next record goes
            # before it, and is taken whole before the next one is read
            rec = sp.peek()
            if rec is not None:
                assert isinstance(rec.payload, (bytes, bytearray))
                items = list(_unpack(bytes(rec.payload)))
                sp.pop()
                self.stats["hep_out:unspooled"] += len(items)
                for key, pkt in reversed(items):
                    self.items.appendleft((key, pkt))
                    self.bytes += len(pkt) + len(key) + 64
                self._from_spool = len(items)
        if not self.items:
            return None
        key, pkt = self.items.popleft()
        self.bytes -= len(pkt) + len(key) + 64
        self._took_spooled = self._from_spool > 0
        if self._took_spooled:
            self._from_spool -= 1
        return key, pkt

    def push_back(self, key: bytes, pkt: bytes) -> None:
        """Put a packet just taken back at the front (it could not be sent after all)."""
        self.items.appendleft((key, pkt))
        self.bytes += len(pkt) + len(key) + 64
        if self._took_spooled:
            self._from_spool += 1

    def persist(self) -> int:
        """At the end: move everything in memory to the spool; how many packets could
        not be kept (no spool, or full)."""
        while self.items and self._spill():
            pass
        return len(self.items)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
