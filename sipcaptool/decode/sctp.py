"""SCTP for capture: DATA and I-DATA chunks (RFC 9260, RFC 8260) -> user messages.

Sans-IO, stdlib only. ``SctpReassembler.packet`` takes one SCTP packet (common header
and chunks) as ``PacketDecoder`` found it inside IP, and yields the user messages its
DATA / I-DATA chunks complete:

* a chunk whose TSN was already seen in that direction is a retransmission, used once
  (``skipped:sctp-retransmission``; ``SctpTsns``); an INIT or INIT ACK starts a new TSN
  space for its sender;
* fragmented user messages (B/E flags not both set) are reassembled by stream and
  message (SSN, or MID for I-DATA) and sequence number (TSN, or FSN for I-DATA),
  bounded in bytes, entries and capture time (``evicted:sctp-fragments``;
  ``SctpFragments``);
* a chunk shorter than its header or running past the packet is ``malformed:sctp-chunk``
  (the rest of the packet is then left), a packet shorter than its common header
  ``malformed:sctp-truncated``; other chunk types are ignored.

What a user message holds (HEP, SIP or neither) is for the caller to decide.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from sipcaptool.stats import Stats

__all__ = ["SctpReassembler", "SctpTsns", "SctpFragments"]

_unpack_ports = struct.Struct("!HH").unpack_from
_unpack_chunk = struct.Struct("!BBH").unpack_from
_unpack_data = struct.Struct("!IHH").unpack_from
_unpack_idata = struct.Struct("!IHHII").unpack_from

CHUNK_DATA = 0
CHUNK_INIT = 1
CHUNK_INIT_ACK = 2
CHUNK_IDATA = 64


class SctpReassembler:
    """The SCTP state of one capture: TSNs seen per direction and held fragments.

    Args:
        stats: the counters skipped/malformed/evicted input is recorded in.
        max_bytes: bytes the held fragments may take (``max_sctp_bytes``), bookkeeping
            included (``SctpFragments.FRAGMENT_COST`` per fragment).
    """

    def __init__(self, stats: Stats, max_bytes: int) -> None:
        self.stats = stats
        self.max_bytes = max_bytes
        self._tsns = SctpTsns()
        self._frags: SctpFragments | None = None   # made at the first fragment

    @property
    def held(self) -> int:
        """Bytes charged for the fragments held now."""
        return 0 if self._frags is None else self._frags.held

    def packet(self, ts: int, buf: bytes, off: int, end: int, src: bytes,
               dst: bytes) -> Iterator[tuple[int, int, bytes]]:
        """The user messages completed by the SCTP packet in ``buf[off:end]``, in chunk
        order, as ``(source port, destination port, data)``; ``src`` and ``dst`` are the
        packed IP addresses (with the ports they name a direction)."""
        if end - off < 12:
            self.stats["malformed:sctp-truncated"] += 1
            return
        sport, dport = _unpack_ports(buf, off)
        pos = off + 12
        tsns = self._tsns
        flow = (src, sport, dst, dport)
        while pos + 4 <= end:
            ctype, cflags, clen = _unpack_chunk(buf, pos)
            if clen < 4 or pos + clen > end:
                self.stats["malformed:sctp-chunk"] += 1
                break
            if ctype == CHUNK_DATA or ctype == CHUNK_IDATA:
                hl = 16 if ctype == CHUNK_DATA else 20
                if clen < hl:
                    self.stats["malformed:sctp-chunk"] += 1
                else:
                    if ctype == CHUNK_DATA:
                        tsn, sid, ssn = _unpack_data(buf, pos + 4)
                        seq, mid = tsn, ssn
                    else:
                        tsn, sid, _r, mid, fsn = _unpack_idata(buf, pos + 4)
                        seq = 0 if cflags & 2 else fsn
                    if tsns.seen(flow, tsn):
                        # a retransmitted chunk: its data was used the first time
                        self.stats["skipped:sctp-retransmission"] += 1
                        pos += (clen + 3) & ~3
                        continue
                    data = buf[pos + hl:pos + clen]
                    if cflags & 3 != 3:
                        if self._frags is None:
                            self._frags = SctpFragments(self.stats, self.max_bytes)
                        whole = self._frags.add(ts, (src, sport, dst, dport, sid, mid, cflags & 4, ctype),
                                                seq, cflags & 3, data)
                        if whole:
                            yield sport, dport, whole
                    elif data:
                        yield sport, dport, data
            elif ctype == CHUNK_INIT or ctype == CHUNK_INIT_ACK:
                # INIT / INIT ACK: the sender starts a new TSN space for this direction
                tsns.forget(flow)
            pos += (clen + 3) & ~3

    def flush(self) -> None:
        """End of input: the fragments still held are counted as evicted."""
        if self._frags is not None:
            self._frags.flush()


class SctpTsns:
    """The DATA/I-DATA TSNs seen per direction, to use a retransmitted chunk once.

    Per direction: the highest TSN seen (serial arithmetic, RFC 1982) and a bitmap of
    the ``WINDOW`` TSNs below it.  A TSN older than the window is taken as new (an
    association restarted without its INIT in the capture): storing a message twice is
    better than losing one.  Directions are capped (least recently used dropped), so
    memory stays bounded whatever the capture holds.
    """

    WINDOW = 4096
    MAX_FLOWS = 4096
    _MASK = (1 << WINDOW) - 1

    def __init__(self) -> None:
        self._flows: dict[object, tuple[int, int]] = {}

    def seen(self, flow: object, tsn: int) -> bool:
        """Record ``tsn`` for ``flow``; True when it was already seen."""
        flows = self._flows
        st = flows.pop(flow, None)     # re-inserted below: the dict keeps LRU order
        if st is None:
            if len(flows) >= self.MAX_FLOWS:
                del flows[next(iter(flows))]
            flows[flow] = (tsn, 1)
            return False
        top, bits = st
        d = (tsn - top) & 0xFFFFFFFF
        dup = False
        if d == 0:
            dup = True
        elif d < 0x80000000:           # newer than anything seen
            bits = ((bits << d) | 1) & self._MASK if d < self.WINDOW else 1
            top = tsn
        else:
            behind = 0x100000000 - d
            if behind < self.WINDOW:
                dup = bool(bits >> behind & 1)
                bits |= 1 << behind
            # else: older than the window, taken as new (see above)
        flows[flow] = (top, bits)
        return dup

    def forget(self, flow: object) -> None:
        self._flows.pop(flow, None)


class SctpFragments:
    """Fragments of SCTP user messages (B/E flags), bounded in bytes and entries.

    Fragments of one message key are kept as runs of consecutive sequence numbers
    (TSN, or FSN for I-DATA) that do not cross a message boundary (an E fragment
    followed by a B): each fragment joins its neighbours' runs in constant time, and
    a run from a B to an E fragment is a whole message, joined once.  So a message
    costs its fragments once, however many there are or however long it stays
    unfinished.  Each fragment is charged ``FRAGMENT_COST`` bytes on top of its data
    against ``max_bytes``, for its bookkeeping.
    """

    MAX_ENTRIES = 256
    TIMEOUT_US = 30_000_000
    FRAGMENT_COST = 128

    def __init__(self, stats: Stats, max_bytes: int) -> None:
        self.stats = stats
        self.max_bytes = max_bytes
        self.held = 0
        self._msgs: dict[object, _SctpMessage] = {}   # oldest first

    def add(self, ts: int, key: object, seq: int, be: int, data: bytes) -> bytes | None:
        msgs = self._msgs
        while msgs:
            k = next(iter(msgs))
            if ts - msgs[k].ts <= self.TIMEOUT_US:
                break
            self._evict(k)
        m = msgs.get(key)
        if m is None:
            m = msgs[key] = _SctpMessage(ts)
        frags = m.frags
        if seq in frags:
            return None
        frags[seq] = (be, data)
        cost = len(data) + self.FRAGMENT_COST
        m.held += cost
        self.held += cost
        # join the run ending just before, and the run starting just after
        lo = hi = seq
        prev = (seq - 1) & 0xFFFFFFFF
        if not be & 2 and prev in m.run_lo:
            p = frags[prev]
            if not p[0] & 1:
                lo = m.run_lo.pop(prev)
        nxt = (seq + 1) & 0xFFFFFFFF
        if not be & 1 and nxt in m.run_hi:
            n = frags[nxt]
            if not n[0] & 2:
                hi = m.run_hi.pop(nxt)
        m.run_hi[lo] = hi
        m.run_lo[hi] = lo
        while (self.held > self.max_bytes or len(msgs) > self.MAX_ENTRIES) and msgs:
            self._evict(next(iter(msgs)))
        if key not in msgs or not (frags[lo][0] & 2 and frags[hi][0] & 1):
            return None
        # a whole message: B at lo, E at hi
        del m.run_hi[lo], m.run_lo[hi]
        parts = []
        s = lo
        while True:
            f = frags.pop(s)
            parts.append(f[1])
            if s == hi:
                break
            s = (s + 1) & 0xFFFFFFFF
        freed = sum(len(p) for p in parts) + self.FRAGMENT_COST * len(parts)
        m.held -= freed
        self.held -= freed
        if not frags:
            del msgs[key]
        return b"".join(parts)

    def _evict(self, key: object) -> None:
        m = self._msgs.pop(key)
        self.held -= m.held
        self.stats["evicted:sctp-fragments"] += 1

    def flush(self) -> None:
        while self._msgs:
            self._evict(next(iter(self._msgs)))


class _SctpMessage:
    """The fragments held under one message key, and their runs (lo -> hi, hi -> lo)."""

    __slots__ = ("ts", "frags", "run_hi", "run_lo", "held")

    def __init__(self, ts: int) -> None:
        self.ts = ts
        self.frags: dict[int, tuple[int, bytes]] = {}
        self.run_hi: dict[int, int] = {}
        self.run_lo: dict[int, int] = {}
        self.held = 0
