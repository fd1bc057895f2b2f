"""TCP reassembly and SIP framing (RFC 3261 §18.3 Content-Length; RFC 7118 WebSocket).

Sans-IO: ``TcpReassembler.segment()`` takes one TCP segment's sequence number, flags
and payload for a directional flow and returns the SIP messages it completes.

* A flow gets state only once it shows a SIP start line (or a WebSocket upgrade), so
  bulk non-SIP TCP costs a regex scan and no memory.  A flow joined mid-way is thereby
  resynchronised at the next start line.
* Retransmitted and duplicate bytes are used once; out-of-order segments are held
  (bounded) until the gap fills.  A gap that never fills makes the stream skip to the
  data it holds and resynchronise at the next start line (``malformed:tcp-gap``).
* Messages are framed by the header block and Content-Length: headers up to
  ``MAX_HEADER_BYTES``, bodies up to ``MAX_BODY_BYTES``.
* Several messages completed by one segment get distinct timestamps: +1 µs for each
  after the first.  A message completed by a later segment takes that segment's time,
  as tshark does.
* A flow whose data starts with a HEP3 header (``HEP3``/``EEP3`` and a 16-bit total
  length; HEP over TCP from an agent to a collector) is framed by that length instead
  and its packets are returned whole, tagged ``HEP_FRAME``, for the HEP decoder.
  Several packets per segment and one packet over several segments are both usual.
  Bytes that do not start a packet are skipped up to the next HEP3 header
  (``malformed:hep3-stream``).  ``hep_ports`` restricts where HEP is looked for.
* Streams are capped in number and in held bytes; the least recently used stream is
  evicted (``evicted:tcp-stream``).  Streams idle longer than ``timeout_us`` of capture
  time are dropped; those still holding data count as evicted too.

Why one module of some 560 lines: the three framings (SIP by Content-Length, WebSocket,
HEP3 by length) work on the same per-flow stream state, switch into one another (an
upgrade, a lost frame boundary) and share its bounds; apart they would pass that state
back and forth.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

from sipcaptool.decode.hep import HEP3_IDS
from sipcaptool.record import PROTO_TCP, PROTO_WS
from sipcaptool.stats import Stats

__all__ = ["TcpReassembler", "FlowKey", "Framed", "HEP_FRAME", "MAX_HEADER_BYTES", "MAX_BODY_BYTES",
           "MAX_OOO_SEGMENTS", "MAX_WS_MESSAGE"]

HEP_FRAME = 256     # not a transport: the message is one HEP3 packet to decode

#: a direction of a TCP connection: (source address, source port, destination address,
#: destination port); the addresses as packed bytes
FlowKey = tuple[bytes, int, bytes, int]
#: a message cut out of a stream: (timestamp in µs, PROTO_TCP / PROTO_WS / HEP_FRAME, bytes)
Framed = tuple[int, int, bytes]

_HEP3_SEARCH = re.compile(rb"[HE]EP3")
_HEP3_PREFIXES = {k: (b"HEP3"[:k], b"EEP3"[:k]) for k in (1, 2, 3)}

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_OOO_SEGMENTS = 64
MAX_WS_MESSAGE = MAX_HEADER_BYTES + MAX_BODY_BYTES

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04

# A SIP start line at the start of a line anywhere in the data.
_START_SEARCH = re.compile(
    rb"(?m)^(?:[A-Z][!%'*+\-.0-9A-Z_`a-z~]* [^ \r\n]+ SIP/2\.0\r?$|SIP/2\.0 [0-9]{3}[ \r\n])")
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")
_WS_UPGRADE = re.compile(rb"(?im)^upgrade[ \t]*:[ \t]*websocket")

_MODE_SIP = 0
_MODE_WS_HANDSHAKE = 1
_MODE_WS = 2
_MODE_HEP = 3

_MOD = 1 << 32
_HALF = 1 << 31


class _Stream:
    __slots__ = ("next_seq", "buf", "ooo", "ooo_bytes", "mode", "resync", "last_ts",
                 "ws_msg", "scan_from", "closing", "need")

    def __init__(self, next_seq: int, mode: int, ts: int) -> None:
        self.next_seq = next_seq
        self.buf = bytearray()
        self.ooo: dict[int, bytes] = {}
        self.ooo_bytes = 0
        self.mode = mode
        self.resync = False
        self.last_ts = ts
        self.ws_msg: bytearray | None = None
        self.scan_from = 0
        self.closing = False
        self.need = 0           # SIP: length of the message being completed, once known

    def held(self) -> int:
        return len(self.buf) + self.ooo_bytes + (len(self.ws_msg) if self.ws_msg else 0)


class TcpReassembler:
    """Per-flow TCP reassembly feeding SIP framing.

    Args:
        stats: counters.
        looks_like_sip: the start-line check used to confirm a framed message.
        max_streams: flows with state at once.
        max_stream_bytes: bytes one flow may hold (buffer + out-of-order segments).
        max_total_bytes: bytes all flows together may hold.
        timeout_us: capture-time idle limit of a flow.
        hep: look for HEP3 streams at all.
        hep_ports: HEP3 streams only to or from these ports; None means any port.
    """

    def __init__(self, stats: Stats, looks_like_sip: Callable[[bytes], bool], *,
                 max_streams: int = 4096, max_stream_bytes: int = 2 * 1024 * 1024,
                 max_total_bytes: int = 64 * 1024 * 1024, timeout_us: int = 300_000_000,
                 hep: bool = True, hep_ports: frozenset[int] | None = None) -> None:
        self.stats = stats
        self.hep = hep
        self.hep_ports = hep_ports
        self.looks_like_sip = looks_like_sip
        self.max_streams = max_streams
        self.max_stream_bytes = max(max_stream_bytes, 16 * 1024)
        self.max_total_bytes = max_total_bytes
        self.timeout_us = timeout_us
        self._streams: OrderedDict[FlowKey, _Stream] = OrderedDict()
        self._ws_expected: OrderedDict[FlowKey, int] = OrderedDict()
        self.held_bytes = 0
        self._last_expire = 0

    def __len__(self) -> int:
        return len(self._streams)

    # -------------------------------------------------------------------- input

    def segment(self, ts: int, key: FlowKey, seq: int, flags: int, data: bytes,
                sip: bool = True) -> list[Framed]:
        """Feed one segment of flow ``key``; return ``[(ts_us, proto, message)]`` completed.

        ``proto`` is PROTO_TCP, PROTO_WS or HEP_FRAME.  ``sip=False`` (a port filter
        excludes the flow) lets only a HEP3 stream start on this flow.
        """
        if ts - self._last_expire > 1_000_000:
            self._expire(ts)
        streams = self._streams
        st = streams.get(key)
        if st is None:
            if not data:
                return []
            st = self._open(ts, key, seq, data, sip)
            if st is None:
                return []
        else:
            streams.move_to_end(key)
        st.last_ts = ts
        before = st.held()
        out: list[Framed] = []
        if data:
            d = (seq - st.next_seq) % _MOD
            if d == 0:
                st.buf += data
                st.next_seq = (seq + len(data)) % _MOD
                self._drain_ooo(st)
                self._frame(st, ts, out)
            elif d >= _HALF:
                # starts before what we have: retransmission, maybe with new bytes
                behind = _MOD - d
                if behind >= len(data):
                    self.stats["skipped:tcp-retransmission"] += 1
                else:
                    st.buf += data[behind:]
                    st.next_seq = (seq + len(data)) % _MOD
                    self._drain_ooo(st)
                    self._frame(st, ts, out)
            else:
                self._hold(st, seq, data, ts, out)
        self.held_bytes += st.held() - before
        if flags & (TCP_FIN | TCP_RST):
            st.closing = True
        if st.closing and not st.ooo:
            if st.mode == _MODE_HEP:
                if st.buf:
                    self.stats["malformed:tcp-incomplete"] += 1
            elif st.buf.strip(b"\r\n") and st.mode == _MODE_SIP and not st.resync:
                self.stats["malformed:tcp-incomplete"] += 1
            self._remove(key)
            return out
        if st.held() > self.max_stream_bytes:
            self.stats["malformed:tcp-too-big"] += 1
            self.held_bytes -= st.held()
            st.buf.clear()
            st.ooo.clear()
            st.ooo_bytes = 0
            st.ws_msg = None
            st.scan_from = 0
            st.need = 0
            st.resync = True
        while self.held_bytes > self.max_total_bytes and streams:
            self._evict_lru()
        return out

    def _hep_allowed(self, key: FlowKey) -> bool:
        if not self.hep:
            return False
        hp = self.hep_ports
        if hp is None:
            return True
        _src, sport, _dst, dport = key
        return sport in hp or dport in hp

    def _open(self, ts: int, key: FlowKey, seq: int, data: bytes, sip: bool = True) -> _Stream | None:
        h = _hep3_start(data) if self._hep_allowed(key) else -1
        if h == 0:
            st = _Stream(seq, _MODE_HEP, ts)
        elif not sip:
            if h < 0:
                self.stats["skipped:port-filter"] += 1
                return None
            st = _Stream(seq, _MODE_HEP, ts)
            st.resync = True
        elif key in self._ws_expected:
            del self._ws_expected[key]
            st = _Stream(seq, _MODE_WS_HANDSHAKE, ts)
        elif data[:4] == b"GET " and _WS_UPGRADE.search(data, 0, 8192):
            st = _Stream(seq, _MODE_WS_HANDSHAKE, ts)
            src, sport, dst, dport = key
            rkey = (dst, dport, src, sport)
            self._ws_expected[rkey] = ts
            self._ws_expected.move_to_end(rkey)
            while len(self._ws_expected) > self.max_streams:
                self._ws_expected.popitem(last=False)
        else:
            m = _START_SEARCH.search(data)
            if h > 0 and (m is None or h < m.start()):
                # a HEP3 stream joined mid-way: resynchronise at the next header
                st = _Stream(seq, _MODE_HEP, ts)
                st.resync = True
            elif m is None:
                self.stats["skipped:non-sip"] += 1
                return None
            else:
                st = _Stream(seq, _MODE_SIP, ts)
                # bytes before the start line belong to a message we joined too late for
                if m.start():
                    self.stats["skipped:tcp-resync"] += 1
        self._streams[key] = st
        while len(self._streams) > self.max_streams:
            self._evict_lru()
        if st.mode == _MODE_SIP:
            st.resync = True
        return st

    def _hold(self, st: _Stream, seq: int, data: bytes, ts: int, out: list[Framed]) -> None:
        old = st.ooo.get(seq)
        if old is not None and len(old) >= len(data):
            self.stats["skipped:tcp-retransmission"] += 1
            return
        if old is not None:
            st.ooo_bytes -= len(old)
        st.ooo[seq] = data
        st.ooo_bytes += len(data)
        if len(st.ooo) > MAX_OOO_SEGMENTS or st.ooo_bytes > self.max_stream_bytes // 2:
            # the gap is not going to fill: skip to the first held segment
            self.stats["malformed:tcp-gap"] += 1
            first = min(st.ooo, key=lambda s: (s - st.next_seq) % _MOD)
            st.buf.clear()
            st.scan_from = 0
            st.need = 0
            st.ws_msg = None
            st.next_seq = first
            st.resync = st.mode == _MODE_SIP
            if st.mode == _MODE_WS:
                st.mode = _MODE_SIP      # WS framing is lost; look for SIP text again
                st.resync = True
            self._drain_ooo(st)
            self._frame(st, ts, out)

    def _drain_ooo(self, st: _Stream) -> None:
        ooo = st.ooo
        while ooo:
            progressed = False
            for s in list(ooo):
                d = (s - st.next_seq) % _MOD
                data = ooo[s]
                if d == 0 or d >= _HALF:
                    del ooo[s]
                    st.ooo_bytes -= len(data)
                    skip = 0 if d == 0 else _MOD - d
                    if skip < len(data):
                        st.buf += data[skip:]
                        st.next_seq = (s + len(data)) % _MOD
                    progressed = True
            if not progressed:
                break

    # -------------------------------------------------------------------- framing

    def _frame(self, st: _Stream, ts: int, out: list[Framed]) -> None:
        """The messages the stream's data now completes, +1 µs each after the first."""
        framed: list[tuple[int, bytes]] = []
        if st.mode == _MODE_SIP:
            self._frame_sip(st, framed)
        elif st.mode == _MODE_HEP:
            self._frame_hep(st, framed)
        elif st.mode == _MODE_WS_HANDSHAKE:
            self._ws_handshake(st)
            if st.mode == _MODE_WS:
                self._frame_ws(st, framed)
        else:
            self._frame_ws(st, framed)
        for i, (proto, msg) in enumerate(framed):
            out.append((ts + i, proto, msg))

    def _frame_sip(self, st: _Stream, out: list[tuple[int, bytes]], proto: int = PROTO_TCP) -> None:
        # Every byte is looked at a bounded number of times: ``scan_from`` remembers
        # where the search for the end of the header may resume (no header end starts
        # before it, whatever is cut from the front), ``need`` the length of a message
        # whose header is parsed and whose body is still arriving.
        buf = st.buf
        stats = self.stats
        while buf:
            if st.need:
                if len(buf) < st.need:
                    return
                out.append((proto, bytes(buf[:st.need])))
                del buf[:st.need]
                st.need = 0
                st.scan_from = 0
                continue
            if buf[0] in (13, 10):
                n = len(buf) - len(buf.lstrip(b"\r\n"))
                del buf[:n]
                st.scan_from = 0
                stats["skipped:keepalive"] += 1
                continue
            if st.resync:
                m = _START_SEARCH.search(buf)
                if m is None:
                    # keep only a partial last line, which may become a start line
                    nl = buf.rfind(b"\n")
                    if nl >= 0:
                        del buf[:nl + 1]
                    if len(buf) > 1024:
                        del buf[:-1024]
                    st.scan_from = 0
                    return
                if m.start():
                    del buf[:m.start()]
                    st.scan_from = max(0, st.scan_from - m.start())
                st.resync = False
            hdr_end = buf.find(b"\r\n\r\n", st.scan_from)
            sep = 4
            lf = buf.find(b"\n\n", st.scan_from, hdr_end if hdr_end >= 0 else len(buf))
            if lf >= 0 and (hdr_end < 0 or lf < hdr_end):
                hdr_end, sep = lf, 2
            if hdr_end < 0:
                st.scan_from = max(0, len(buf) - 3)
                if len(buf) > MAX_HEADER_BYTES:
                    # No message starting here, nor anywhere but in the last bytes, can
                    # end its header within the limit: keep the lines of the last half
                    # of the limit (one count for what is dropped) and look for a start
                    # line there.  Dropping one line at a time instead made a stream of
                    # start lines only cost the limit for every line.
                    stats["malformed:tcp-header-too-long"] += 1
                    cut = len(buf) - MAX_HEADER_BYTES // 2
                    nl = buf.find(b"\n", cut - 1)
                    cut = nl + 1 if nl >= 0 else cut
                    del buf[:cut]
                    st.scan_from = max(0, st.scan_from - cut)
                    st.resync = True
                    continue
                return
            nl = buf.find(b"\n", 0, hdr_end + sep)
            if not self.looks_like_sip(bytes(buf[:nl + 1])):   # the start line only
                stats["malformed:tcp-framing"] += 1
                del buf[:nl + 1]
                st.scan_from = max(0, st.scan_from - nl - 1)
                st.resync = True
                continue
            head = bytes(buf[:hdr_end])
            clen = 0
            m = _CONTENT_LENGTH.search(head)
            if m is not None:
                v = m.group(1).strip()
                if v.isdigit():
                    clen = int(v)
                else:
                    stats["malformed:content-length"] += 1
            if clen > MAX_BODY_BYTES:
                # the whole header is skipped; its body is not framed
                stats["malformed:tcp-body-too-long"] += 1
                del buf[:hdr_end + sep]
                st.scan_from = 0
                st.resync = True
                continue
            st.need = hdr_end + sep + clen
            st.scan_from = 0

    def _frame_hep(self, st: _Stream, out: list[tuple[int, bytes]]) -> None:
        """Cut HEP3 packets out of the stream by their total length (16 bits, so at most
        one incomplete packet of < 64 KB is held)."""
        buf = st.buf
        while len(buf) >= 6:
            if buf[:4] not in HEP3_IDS or (buf[4] << 8 | buf[5]) < 6:
                # not at a packet boundary (joined mid-way, or garbage between packets);
                # scan_from marks a run of skipped bytes already counted
                if not st.scan_from:
                    self.stats["skipped:tcp-resync" if st.resync else "malformed:hep3-stream"] += 1
                    st.scan_from = 1
                st.resync = False
                h = _hep3_start(buf, 1)
                if h < 0:
                    # only a last partial id can still begin a header
                    keep = next((k for k in (3, 2, 1) if bytes(buf[-k:]) in _HEP3_PREFIXES[k]), 0)
                    del buf[:len(buf) - keep]
                    return
                del buf[:h]
                continue
            st.resync = False
            st.scan_from = 0
            total = buf[4] << 8 | buf[5]
            if len(buf) < total:
                return
            out.append((HEP_FRAME, bytes(buf[:total])))
            del buf[:total]

    def _ws_handshake(self, st: _Stream) -> None:
        buf = st.buf
        end = buf.find(b"\r\n\r\n", st.scan_from)
        if end < 0:
            st.scan_from = max(0, len(buf) - 3)   # resume there with the next segment
            if len(buf) > MAX_HEADER_BYTES:
                st.mode = _MODE_SIP
                st.resync = True
                st.scan_from = 0
            return
        st.scan_from = 0
        head = bytes(buf[:end])
        del buf[:end + 4]
        if head.startswith(b"HTTP/") and b" 101" not in head.split(b"\r\n", 1)[0]:
            # upgrade refused: whatever follows is not WebSocket
            st.mode = _MODE_SIP
            st.resync = True
            return
        st.mode = _MODE_WS

    def _frame_ws(self, st: _Stream, out: list[tuple[int, bytes]]) -> None:
        buf = st.buf
        stats = self.stats
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            opcode = b0 & 0x0F
            plen = b1 & 0x7F
            pos = 2
            if plen == 126:
                if len(buf) < 4:
                    return
                plen = buf[2] << 8 | buf[3]
                pos = 4
            elif plen == 127:
                if len(buf) < 10:
                    return
                plen = int.from_bytes(buf[2:10], "big")
                pos = 10
            masked = b1 & 0x80
            if masked:
                pos += 4
            if plen > MAX_WS_MESSAGE or b0 & 0x70:
                stats["malformed:ws-frame"] += 1
                buf.clear()
                st.mode = _MODE_SIP   # lost the frame boundary
                st.resync = True
                st.ws_msg = None
                return
            if len(buf) < pos + plen:
                return
            payload = bytes(buf[pos:pos + plen])
            if masked:
                payload = _unmask(bytes(buf[pos - 4:pos]), payload)
            del buf[:pos + plen]
            if opcode >= 8:            # close/ping/pong
                continue
            if opcode == 0:
                if st.ws_msg is None:
                    stats["malformed:ws-continuation"] += 1
                    continue
                st.ws_msg += payload
            else:
                st.ws_msg = bytearray(payload)
            if b0 & 0x80:
                msg = bytes(st.ws_msg)
                st.ws_msg = None
                if msg.strip(b"\r\n") == b"":
                    stats["skipped:keepalive"] += 1
                elif self.looks_like_sip(msg):
                    out.append((PROTO_WS, msg))
                else:
                    stats["skipped:non-sip"] += 1
            elif len(st.ws_msg) > MAX_WS_MESSAGE:
                stats["malformed:ws-too-big"] += 1
                st.ws_msg = None

    # -------------------------------------------------------------------- bounds

    def _remove(self, key: FlowKey) -> None:
        st = self._streams.pop(key, None)
        if st is not None:
            self.held_bytes -= st.held()

    def _evict_lru(self) -> None:
        _, st = self._streams.popitem(last=False)
        self.held_bytes -= st.held()
        self.stats["evicted:tcp-stream"] += 1

    def _expire(self, now: int) -> None:
        self._last_expire = now
        limit = now - self.timeout_us
        streams = self._streams
        while streams:
            key, st = next(iter(streams.items()))
            if st.last_ts >= limit:
                break
            if st.held() and st.buf.strip(b"\r\n"):
                self.stats["evicted:tcp-stream"] += 1
            self._remove(key)

    def flush(self) -> None:
        """End of input: drop all streams; incomplete messages are counted (a message
        is only given when complete, so there is nothing to give back)."""
        for st in self._streams.values():
            if st.buf.strip(b"\r\n") or st.ooo:
                self.stats["malformed:tcp-incomplete"] += 1
        self._streams.clear()
        self._ws_expected.clear()
        self.held_bytes = 0


def _hep3_start(data: bytes | bytearray, pos: int = 0) -> int:
    """Offset of the first plausible HEP3 packet header at or after ``pos``, or -1.

    At offset 0 the id, or the first bytes of it, is enough (a flow whose data starts
    there is HEP); further on, the total length must hold a chunk and the first chunk
    must have vendor id 0, so that text merely containing "HEP3" is not taken for a
    header."""
    if pos == 0:
        n = len(data)
        if (n >= 6 and data[:4] in HEP3_IDS) or (0 < n < 4 and bytes(data) in _HEP3_PREFIXES[n]):
            return 0    # a stream's first bytes: the id (or its start) is enough
    n = len(data)
    while True:
        m = _HEP3_SEARCH.search(data, pos)
        if m is None:
            return -1
        i = m.start()
        if i + 6 > n:
            return i            # too short to check: keep it as a candidate
        if (data[i + 4] << 8 | data[i + 5]) >= 12 and (i + 8 > n or data[i + 6:i + 8] == b"\0\0"):
            return i
        pos = i + 1


def _unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte WebSocket mask."""
    n = len(data)
    if not n:
        return data
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")
