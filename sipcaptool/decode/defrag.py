"""IPv4 / IPv6 fragment reassembly, bounded in bytes, entries and (capture) time.

Fragments may arrive in any order.  Exact duplicates are ignored; overlapping
fragments are accepted only when the overlapping bytes agree.  A fragment that
rewrites bytes already received (the classic overlap evasion, RFC 5722) drops the
whole datagram and is counted ``malformed:fragment-overlap``.  Datagrams that
time out or are pushed out by the caps are counted ``evicted:fragments``.
"""

from __future__ import annotations

from collections import OrderedDict

from sipcaptool.stats import Stats

__all__ = ["Defragmenter", "FragmentKey", "MAX_DATAGRAM"]

#: the datagram a fragment belongs to: (4, source, destination, identification, protocol)
#: for IPv4 (RFC 791), (6, source, destination, identification) for IPv6 (RFC 8200);
#: addresses as packed bytes
FragmentKey = tuple[int, bytes, bytes, int, int] | tuple[int, bytes, bytes, int]

MAX_DATAGRAM = 65535 + 8  # IPv4/IPv6 payload limit, with room for an offset rounding
_ONES = b"\x01" * MAX_DATAGRAM


def _agrees(dg: _Datagram, offset: int, data: bytes, seen: int) -> bool:
    """Whether ``data`` at ``offset`` repeats the bytes of ``dg`` already received there
    (``seen`` of them)."""
    end = offset + len(data)
    if seen == len(data):
        return dg.buf[offset:end] == data
    # a partial overlap: compare the received runs only (rare; linear in the fragment)
    have, buf = dg.have, dg.buf
    i = offset
    while i < end:
        j = have.find(1, i, end)
        if j < 0:
            break
        k = have.find(0, j, end)
        if k < 0:
            k = end
        if buf[j:k] != data[j - offset:k - offset]:
            return False
        i = k
    return True


class _Datagram:
    """One datagram being reassembled: its payload so far in place, and which bytes of
    it have arrived (one byte each in ``have``), so that a fragment costs its own length
    whatever the number of fragments before it."""

    __slots__ = ("first_ts", "buf", "have", "size", "total")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.buf = bytearray()                    # payload, bytes not yet received are 0
        self.have = bytearray()                   # 1 where the byte at that offset arrived
        self.size = 0                             # bytes received (distinct offsets)
        self.total = -1                           # payload length once the last fragment is seen

    def held(self) -> int:
        return len(self.buf) + len(self.have)


class Defragmenter:
    """Reassemble fragmented IP payloads.

    Args:
        stats: counters for evictions and malformed fragments.
        max_bytes: bytes held across all datagrams: each datagram's payload so far, as
            long as its furthest fragment reaches, and as much again for the map of the
            bytes received.
        max_entries: datagrams being reassembled at once.
        timeout_us: a datagram not completed within this capture time is dropped.
    """

    def __init__(self, stats: Stats, *, max_bytes: int = 4 * 1024 * 1024,
                 max_entries: int = 1024, timeout_us: int = 30_000_000) -> None:
        self.stats = stats
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.timeout_us = timeout_us
        self._pending: OrderedDict[FragmentKey, _Datagram] = OrderedDict()
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, ts_us: int, key: FragmentKey, offset: int, more: bool, data: bytes) -> bytes | None:
        """Add one fragment; return the whole payload when this fragment completes it."""
        self._expire(ts_us)
        end = offset + len(data)
        if end > MAX_DATAGRAM:
            self.stats["malformed:fragment-too-big"] += 1
            self._drop(key)
            return None
        if more and not data:
            self.stats["malformed:fragment-empty"] += 1
            return None
        dg = self._pending.get(key)
        if dg is None:
            if len(data) > self.max_bytes:
                self.stats["evicted:fragments"] += 1
                return None
            dg = _Datagram(ts_us)
            self._pending[key] = dg
            while len(self._pending) > self.max_entries:
                self._evict_oldest()
        if not more:
            if (dg.total >= 0 and dg.total != end) or (dg.total < 0 and len(dg.buf) > end):
                # a second, different end; or bytes already received past this end
                self.stats["malformed:fragment-overlap"] += 1
                self._drop(key)
                return None
            dg.total = end
        if dg.total >= 0 and end > dg.total:
            self.stats["malformed:fragment-overlap"] += 1
            self._drop(key)
            return None
        # Write in place, checking the bytes already received at these offsets.
        before = dg.held()
        if end > len(dg.buf):
            grow = max(end, dg.total) - len(dg.buf)
            dg.buf += bytes(grow)
            dg.have += bytes(grow)
        seen = dg.have.count(1, offset, end)
        if seen:
            if not _agrees(dg, offset, data, seen):
                self.stats["malformed:fragment-overlap"] += 1
                self._drop(key)
                return None
            if seen == len(data):
                # an exact (or contained) duplicate; only "last fragment" news can matter
                self.held_bytes += dg.held() - before
                return self._complete(key, dg)
        dg.buf[offset:end] = data
        dg.have[offset:end] = _ONES[:len(data)]
        dg.size += len(data) - seen
        self.held_bytes += dg.held() - before
        while self.held_bytes > self.max_bytes and self._pending:
            self._evict_oldest()
        if key not in self._pending:
            return None
        return self._complete(key, dg)

    def _complete(self, key: FragmentKey, dg: _Datagram) -> bytes | None:
        if dg.total < 0 or dg.size != dg.total:
            return None
        del self._pending[key]
        self.held_bytes -= dg.held()
        return bytes(dg.buf[:dg.total])

    def _drop(self, key: FragmentKey) -> None:
        dg = self._pending.pop(key, None)
        if dg is not None:
            self.held_bytes -= dg.held()

    def _evict_oldest(self) -> None:
        _, dg = self._pending.popitem(last=False)
        self.held_bytes -= dg.held()
        self.stats["evicted:fragments"] += 1

    def _expire(self, now: int) -> None:
        limit = now - self.timeout_us
        pending = self._pending
        while pending:
            dg = next(iter(pending.values()))
            if dg.first_ts >= limit:
                break
            self._evict_oldest()

    def flush(self) -> None:
        """End of input: whatever is still incomplete is evicted."""
        while self._pending:
            self._evict_oldest()
