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

MAX_DATAGRAM = 65535 + 8  # IPv4/IPv6 payload limit, with room for an offset rounding


class _Datagram:
    __slots__ = ("first_ts", "parts", "size", "total")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.parts: list[tuple[int, bytes]] = []   # (offset, data), kept sorted by offset
        self.size = 0                             # bytes held
        self.total = -1                           # payload length once the last fragment is seen


class Defragmenter:
    """Reassemble fragmented IP payloads.

    Args:
        stats: counters for evictions and malformed fragments.
        max_bytes: fragment bytes held across all datagrams.
        max_entries: datagrams being reassembled at once.
        timeout_us: a datagram not completed within this capture time is dropped.
    """

    def __init__(self, stats: Stats, *, max_bytes: int = 4 * 1024 * 1024,
                 max_entries: int = 1024, timeout_us: int = 30_000_000) -> None:
        self.stats = stats
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.timeout_us = timeout_us
        self._pending: OrderedDict[object, _Datagram] = OrderedDict()
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, ts_us: int, key: object, offset: int, more: bool, data: bytes) -> bytes | None:
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
            if dg.total >= 0 and dg.total != end:
                self.stats["malformed:fragment-overlap"] += 1
                self._drop(key)
                return None
            dg.total = end
        if dg.total >= 0 and end > dg.total:
            self.stats["malformed:fragment-overlap"] += 1
            self._drop(key)
            return None
        # Insert, checking overlaps against the neighbours (parts are sorted, disjoint).
        parts = dg.parts
        i = 0
        n = len(parts)
        while i < n and parts[i][0] + len(parts[i][1]) <= offset:
            i += 1
        j = i
        new_pieces: list[tuple[int, bytes]] = []
        cur = offset
        while j < n and parts[j][0] < end:
            po, pd = parts[j]
            pe = po + len(pd)
            lo, hi = max(po, offset), min(pe, end)
            if pd[lo - po:hi - po] != data[lo - offset:hi - offset]:
                self.stats["malformed:fragment-overlap"] += 1
                self._drop(key)
                return None
            if cur < po:
                new_pieces.append((cur, data[cur - offset:po - offset]))
            cur = max(cur, pe)
            j += 1
        if cur < end:
            new_pieces.append((cur, data[cur - offset:]))
        added = sum(len(p[1]) for p in new_pieces)
        if not added:
            # an exact (or contained) duplicate; only "last fragment" news can matter
            return self._complete(key, dg)
        # Merge: keep parts sorted.  Pieces lie in the gaps between parts[i:j].
        merged = parts[:i] + sorted(parts[i:j] + new_pieces) + parts[j:]
        dg.parts = merged
        dg.size += added
        self.held_bytes += added
        self._pending.move_to_end(key, last=True) if False else None
        while self.held_bytes > self.max_bytes and self._pending:
            self._evict_oldest()
        if key not in self._pending:
            return None
        return self._complete(key, dg)

    def _complete(self, key: object, dg: _Datagram) -> bytes | None:
        if dg.total < 0 or dg.size != dg.total:
            return None
        pos = 0
        for po, pd in dg.parts:
            if po != pos:
                return None
            pos += len(pd)
        del self._pending[key]
        self.held_bytes -= dg.size
        return b"".join(pd for _, pd in dg.parts)

    def _drop(self, key: object) -> None:
        dg = self._pending.pop(key, None)
        if dg is not None:
            self.held_bytes -= dg.size

    def _evict_oldest(self) -> None:
        _, dg = self._pending.popitem(last=False)
        self.held_bytes -= dg.size
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
