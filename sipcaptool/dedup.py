"""The dedup window: the same message seen by several capture points is stored once.

When agents on both sides of a proxy, or two mirror ports, see the same message, every
copy reaches the pipeline. With ``dedup_window`` (milliseconds, 0 = off) a copy is not
stored again when it is a *duplicate*, and is counted as ``dedup:<node>`` (the capture
point that saw it, see :func:`point_label`).

The rule (docs/operators.md, "Messages seen by several capture points"):

* Two copies are **the same message** when their bytes are equal and so are their
  source and destination addresses and ports, transport and HEP type. A copy whose
  addresses a NAT or load balancer changed is another hop of the call and is stored.
* A copy's **capture point** is where it was seen: for HEP the agent's capture id
  (node) and the agent's IP address; for frames (replay, live) the frame's link-level
  path: the link type and the bytes of the link header (MAC addresses, every VLAN tag,
  the Linux cooked header's packet type and interface index), the outer addresses of
  every tunnel (IPIP, GRE/ERSPAN, VXLAN, GTP-U) and the inner link header of a tunnel
  that carries Ethernet. A HEP packet found inside a capture has both its node and the
  frame's path.
* Each stored copy stands for one transmission of the message. A new copy is a
  **duplicate** when a stored copy of the same message, from another capture point,
  is within the window of it (the two messages' own timestamps at most
  ``dedup_window`` ms apart, either way) and no earlier copy from the new copy's
  capture point was already taken as that transmission. Otherwise it is stored.
* So a retransmission (the same capture point seeing the same bytes again) is always
  stored, a copy of it seen by a second capture point is not, a retransmission that
  only the second capture point saw is stored, and a copy later than the window is
  stored. Within one window a message is stored as many times as the capture point
  that saw it most often saw it, whatever order the copies arrive in.

heplify-server's rule (a hash of the payload only, 500 ms) drops retransmissions sent
within half a second, copies on other addresses and, on a hash collision, unrelated
messages (a 64-bit hash), and forgets silently when its cache is full. Here the key is
the payload's 64-bit hash (Python's SipHash, seeded per process) and length with the
addresses, ports, transport and type: two different messages match only when they go
between the same addresses, have the same length, fall in the same window and their
hashes collide (2**-64 for each such pair). The payload itself is not kept.

Memory is bounded by ``dedup_max_entries`` messages: past it the message stored
longest ago leaves early, counted as ``evicted:dedup-full`` and logged (at most once a
minute); a later copy of it is then stored twice, never lost. One message keeps at most
``MAX_COPIES`` transmissions within the window (a sender repeating the same bytes
faster); past it the oldest is forgotten, counted as ``evicted:dedup-copies``.

Expiry follows the arrival clock for ``hep`` and ``live`` (an agent whose clock is off
cannot empty the table for the others) and the messages' own time for ``replay``; a copy
is matched only by its own timestamp in every case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .record import CapturedMessage
from .stats import Stats

__all__ = ["Dedup", "point_label", "LOG_INTERVAL_S", "MAX_COPIES", "MAX_LABELS"]

log = logging.getLogger("sipcaptool.store")

LOG_INTERVAL_S = 60.0
#: labels remembered; past it a label is worked out again for each duplicate
MAX_LABELS = 4096
#: transmissions of one message remembered within the window
MAX_COPIES = 32

# Link types whose header :func:`point_label` reads (decode.link's LINKTYPE_* values).
_EN10MB = 1
_LINUX_SLL = 113
_LINUX_SLL2 = 276
_VLAN_TYPES = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})

Point = tuple[int | None, bytes | str | None]
Key = tuple[int, int, str, int, str, int, int, int]
Copy = tuple[int, int, tuple[Point, ...]]


def point_label(point: Point) -> str:
    """The name of a capture point in the ``dedup:`` counters: few and readable.

    HEP: the capture id (``2002``), or ``agent-<address>`` for a packet without one.
    Frames: ``vlan-10`` (``vlan-10.20`` for a stack of tags), ``ifindex-3`` (the Linux
    cooked v2 header of ``tcpdump -i any``), ``sll-out`` / ``sll-in`` (v1), else
    ``link``; ``+tunnel`` when the frame was tunnelled. MAC addresses are part of the
    capture point but not of its name (they would make a counter per host).
    """
    node_id, where = point
    if node_id is not None:
        return str(node_id)
    if isinstance(where, str):
        return "agent-" + where
    if not where or len(where) < 2:
        return "link"
    linktype = where[0] << 8 | where[1]
    hdr = where[2:]
    name = "link"
    used = 0
    if linktype == _EN10MB and len(hdr) >= 14:
        tags = []
        off = 12
        while off + 4 <= len(hdr) and (hdr[off] << 8 | hdr[off + 1]) in _VLAN_TYPES:
            tags.append(str((hdr[off + 2] << 8 | hdr[off + 3]) & 0x0FFF))
            off += 4
        used = off + 2
        if tags:
            name = "vlan-" + ".".join(tags)
    elif linktype == _LINUX_SLL2 and len(hdr) >= 20:
        name = "ifindex-" + str(int.from_bytes(hdr[4:8], "big"))
        used = 20
    elif linktype == _LINUX_SLL and len(hdr) >= 16:
        name = "sll-out" if (hdr[0] << 8 | hdr[1]) == 4 else "sll-in"  # packet type
        used = 16
    if len(hdr) > used and linktype in (_EN10MB, _LINUX_SLL, _LINUX_SLL2):
        name += "+tunnel"
    return name


class Dedup:
    """The window of recently stored messages: :meth:`duplicate` for each message.

    Args:
        window_ms: the ``dedup_window`` setting (> 0).
        max_entries: the ``dedup_max_entries`` setting.
        stats: ``dedup:<node>``, ``evicted:dedup-full`` and ``evicted:dedup-copies``
            are counted here.
        clock: µs now, for expiry (``hep``, ``live``: the arrival clock); None: the
            messages' own time (``replay``).
    """

    __slots__ = ("window_us", "max_entries", "stats", "clock", "_table", "_next_sweep",
                 "_counters", "_evicted_unlogged", "_next_log")

    def __init__(self, window_ms: int, max_entries: int, stats: Stats, *,
                 clock: Callable[[], int] | None = None) -> None:
        if window_ms <= 0 or max_entries < 1:
            raise ValueError("a dedup window needs window_ms > 0 and max_entries >= 1")
        self.window_us = window_ms * 1000
        self.max_entries = max_entries
        self.stats = stats
        self.clock = clock
        # key -> the stored copies (transmissions) within the window, oldest first, each
        # (its own ts, clock when stored, (its capture point, then those whose copy of
        # it was not stored)); keys in the order a copy was stored last. Tuples of plain
        # values only: the garbage collector stops tracking them, so a full window costs
        # it nothing (lists made the window 3 times dearer)
        self._table: dict[Key, tuple[Copy, ...]] = {}
        self._next_sweep = 0
        self._counters: dict[Point, str] = {}  # point -> its dedup:<node> counter
        self._evicted_unlogged = 0
        self._next_log = 0.0

    def __len__(self) -> int:
        return len(self._table)

    @staticmethod
    def key(msg: CapturedMessage) -> Key:
        """What makes two copies the same message: payload (its hash and length; the
        bytes are not kept), addresses, transport, type."""
        p = msg.payload
        return (hash(p), len(p), msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port,
                msg.proto, msg.hep_type)

    def duplicate(self, msg: CapturedMessage) -> bool:
        """True when ``msg`` is a copy, from another capture point, of a message stored
        within the window (it is then counted as ``dedup:<node>``); False when it is
        to be stored (it is then remembered)."""
        ts = msg.ts_us
        clock = self.clock
        now = ts if clock is None else clock()
        if now >= self._next_sweep or now < self._next_sweep - 2 * self.window_us:
            self._sweep(now)
        key = self.key(msg)
        point: Point = (msg.node_id, msg.capture_point)
        table = self._table
        copies = table.get(key)
        if copies is None:
            table[key] = ((ts, now, (point,)),)
            if len(table) > self.max_entries:
                self._evict_oldest()
            return False
        w = self.window_us
        for i, c in enumerate(copies):
            if -w <= ts - c[0] <= w and point not in c[2]:
                # that transmission, seen again from another capture point
                table[key] = (*copies[:i], (c[0], c[1], (*c[2], point)), *copies[i + 1:])
                counter = self._counters.get(point)
                if counter is None:
                    counter = "dedup:" + point_label(point)
                    if len(self._counters) < MAX_LABELS:
                        self._counters[point] = counter
                self.stats[counter] += 1
                return True
        # a transmission of its own: stored, and the message moves to the end of the order
        lo = now - w
        keep = [c for c in copies if c[1] >= lo]
        if len(keep) >= MAX_COPIES:
            del keep[0]
            self.stats["evicted:dedup-copies"] += 1
            self._warn(f"a message was sent again more than {MAX_COPIES} times within the "
                       "window: the oldest is forgotten (evicted:dedup-copies)")
        keep.append((ts, now, (point,)))
        del table[key]
        table[key] = tuple(keep)
        return False

    def _sweep(self, now: int) -> None:
        """Forget the messages stored last longer than the window ago (from the oldest);
        in message time, also those a window ahead of ``now`` (a stray timestamp)."""
        w = self.window_us
        table = self._table
        lo, hi = now - w, now + w
        stale = []
        for key, copies in table.items():
            t = copies[-1][1]
            if lo <= t <= hi:
                break
            stale.append(key)
        for key in stale:
            del table[key]
        self._next_sweep = now + max(w // 8, 1)

    def _evict_oldest(self) -> None:
        del self._table[next(iter(self._table))]
        self.stats["evicted:dedup-full"] += 1
        self._evicted_unlogged += 1
        if self._warn(f"dedup window full ({self.max_entries} messages, dedup_max_entries): "
                      f"{self._evicted_unlogged} left early since the last such line; a "
                      "later copy of one of them is stored twice (evicted:dedup-full). "
                      "Raise dedup_max_entries or shorten dedup_window"):
            self._evicted_unlogged = 0

    def _warn(self, text: str) -> bool:
        """Log ``text`` unless a line was logged less than LOG_INTERVAL_S ago."""
        mono = time.monotonic()
        if mono < self._next_log:
            return False
        log.warning("%s", text)
        self._next_log = mono + LOG_INTERVAL_S
        return True
