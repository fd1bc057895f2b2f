"""Frames in, SIP messages out: the link → IP → transport → SIP path for one capture.

``PacketDecoder`` is sans-IO: the caller (pcap file, live capture, IPIP socket) hands
it ``(timestamp, frame bytes)`` and gets back zero or more ``CapturedMessage``.
Reassembly state (IP fragments, TCP streams, SCTP fragments) lives inside the decoder,
bounded in size and time; ``flush()`` ends the input.

Nothing raised by bad input escapes ``decode()``: every frame that yields no message is
counted in ``stats`` with the reason (``skipped:non-sip``, ``malformed:ip-length``...).
The decoder does not count ``packets`` or ``messages``; the caller does.

The plain Ethernet/IPv4/UDP path is kept short on purpose (offsets into the frame,
``struct.unpack_from``, no per-layer objects): it carries nearly all capture traffic.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from sipcaptool.decode import hep as _hep
from sipcaptool.decode import ip as _ip
from sipcaptool.decode import link as _link
from sipcaptool.decode import tunnel as _tunnel
from sipcaptool.decode.defrag import Defragmenter, FragmentKey
from sipcaptool.decode.ip import addr_str
from sipcaptool.decode.sctp import SctpReassembler
from sipcaptool.decode.sip import looks_like_sip
from sipcaptool.decode.tcp import HEP_FRAME, TcpReassembler
from sipcaptool.errors import DecodeError
from sipcaptool.record import AF_INET, AF_INET6, PROTO_SCTP, PROTO_UDP, CapturedMessage
from sipcaptool.stats import Stats

__all__ = ["PacketDecoder", "MAX_TUNNEL_DEPTH"]

MAX_TUNNEL_DEPTH = 4
_HEP_GZIP_PORTS = frozenset({9060, 9061})  # gzipped HEP without --hep-ports: these only

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_unpack_ip4 = _IP4.unpack_from
_IP6 = struct.Struct("!IHBB16s16s")
_unpack_ip6 = _IP6.unpack_from
_PORTS = struct.Struct("!HHH")
_unpack_ports = _PORTS.unpack_from
_TCP = struct.Struct("!HHIIBB")
_unpack_tcp = _TCP.unpack_from

# First byte of a start line: a token character (method) or the 'S' of "SIP/2.0".
_TOKEN_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_KEEPALIVES = frozenset({b"\r\n\r\n", b"\r\n", b"\n", b"\r\n\r\n\r\n\r\n"})


class PacketDecoder:
    """Decode captured frames of one link type into SIP messages.

    Args:
        linktype: the capture's LINKTYPE_* value; unsupported values raise
            ``DecodeError("unknown-linktype")`` here, once.
        stats: the counters to record skipped/malformed/evicted input in.
        ports: only UDP/TCP/SCTP traffic to or from one of these ports is SIP; None
            means any port (SIP is recognised by its start line).
        hep_ports: HEP is only looked for on these ports; None means any payload that
            looks like HEP is decoded as HEP.
        now_us: optional callable returning the current time in µs; not used by the
            packet path (time-outs follow capture time) and kept for HEP packets
            without a timestamp.
        max_frag_bytes, max_frag_entries, frag_timeout_us: IP reassembly caps.
        max_tcp_streams, max_tcp_stream_bytes, tcp_timeout_us: TCP reassembly caps.
        hep_max_inflated: bytes that the compressed parts of one HEP datagram (or
            TCP-framed HEP packet) may inflate to, together (the hep_max_inflated
            setting); past it the rest is counted as ``malformed:hep-inflate``.
        capture_points: give each message its frame's link-level path as
            ``capture_point`` (the dedup window, ``sipcaptool.dedup``); off, the frames
            cost nothing more.
    """

    def __init__(
        self,
        linktype: int,
        stats: Stats,
        *,
        ports: frozenset[int] | None = None,
        hep_ports: frozenset[int] | None = None,
        now_us: Callable[[], int] | None = None,
        max_frag_bytes: int = 4 * 1024 * 1024,
        max_frag_entries: int = 1024,
        frag_timeout_us: int = 30_000_000,
        max_tcp_streams: int = 4096,
        max_tcp_stream_bytes: int = 256 * 1024,
        max_tcp_total_bytes: int = 64 * 1024 * 1024,
        tcp_timeout_us: int = 300_000_000,
        max_sctp_bytes: int = 4 * 1024 * 1024,
        snaplen: int = 0,
        hep_max_inflated: int = 256 * 1024,
        capture_points: bool = False,
    ) -> None:
        _link.check_linktype(linktype)
        self.linktype = linktype
        self.stats = stats
        self.ports = ports
        self.hep_ports = hep_ports
        self.now_us = now_us
        self._link_parser = _link.LINK_PARSERS[linktype]
        self._looks_like_sip = looks_like_sip
        self._snapped = False
        #: a frame this long or longer may have been cut by the capture's snap length
        #: (for sources whose reads do not give each frame's length on the wire); 0: no
        #: frame was cut. May change between frames.
        self.snaplen = snaplen
        self._frag_opts = (max_frag_bytes, max_frag_entries, frag_timeout_us)
        self._tcp_opts = (max_tcp_streams, max_tcp_stream_bytes, max_tcp_total_bytes, tcp_timeout_us)
        self._sctp_max = max_sctp_bytes
        self._defrag: Defragmenter | None = None
        self._tcp: TcpReassembler | None = None
        self._sctp: SctpReassembler | None = None
        #: inflate budget of one HEP datagram in a frame (decode.hep.MAX_INFLATED)
        self.hep_max_inflated = hep_max_inflated
        # the capture point of a frame's messages (CapturedMessage.capture_point, for the
        # dedup window): the link type, then the link header; _tunnel gathers the outer
        # addresses (and inner link header) of the tunnels of the frame being decoded
        self._point_prefix = linktype.to_bytes(2, "big")
        self._tunnel: bytes | None = None
        self.capture_points = capture_points

    def set_linktype(self, linktype: int) -> None:
        """Decode the frames that follow as ``linktype`` (the interfaces of a pcapng
        file may differ); what reassembly holds is kept. Raises
        ``DecodeError("unknown-linktype")`` as the constructor does."""
        _link.check_linktype(linktype)
        self.linktype = linktype
        self._link_parser = _link.LINK_PARSERS[linktype]
        self._point_prefix = linktype.to_bytes(2, "big")

    # ------------------------------------------------------------------ entry points

    def decode(self, ts_us: int, frame: bytes, wirelen: int | None = None) -> list[CapturedMessage]:
        """Decode one captured frame; ``wirelen`` > ``len(frame)``, or a frame of at least
        ``snaplen`` bytes, marks a snapped frame."""
        out: list[CapturedMessage] = []
        end = len(frame)
        snap = self.snaplen
        self._snapped = (wirelen is not None and wirelen > end) or (snap > 0 and end >= snap)
        off = 0
        try:
            if self.linktype == 1:
                if end < 14:
                    self.stats["malformed:link-truncated"] += 1
                    return out
                et = frame[12] << 8 | frame[13]
                off = 14
                if et == 0x0800:
                    self._ipv4(ts_us, frame, 14, end, 0, out)
                else:
                    et, off = _link.after_ethertype(frame, 14, end, et)
                    self._l3(ts_us, frame, off, end, et, 0, out)
            else:
                et, off = self._link_parser(frame, 0, end)
                self._l3(ts_us, frame, off, end, et, 0, out)
        except (IndexError, struct.error):
            self.stats["malformed:truncated"] += 1
        except (ValueError, KeyError, OverflowError, RecursionError):  # pragma: no cover
            # not reached by any known input; kept so that one odd frame never stops a capture
            self.stats["malformed:decode-error"] += 1
        if out and self.capture_points:
            point = self._point_prefix + frame[:off]
            if self._tunnel is not None:
                point += self._tunnel
            for m in out:
                m.capture_point = point
        self._tunnel = None
        return out

    def decode_batch(self, data: bytes, meta: Sequence[int]) -> list[CapturedMessage]:
        """Decode a batch of frames as libpcap's ``next_batch`` gives them (and
        ``CaptureFile.batches``, ``PcapSource.batches``): ``meta`` holds uint32
        quadruples (sec, usec, offset, caplen) slicing each frame out of ``data``.
        The messages of every frame, in order; packets are not counted here either."""
        out: list[CapturedMessage] = []
        add = out.extend
        decode = self.decode
        # strided slices and zip: cheaper per frame than indexing meta four times
        for sec, usec, off, caplen in zip(meta[0::4], meta[1::4], meta[2::4], meta[3::4],
                                          strict=True):
            add(decode(sec * 1000000 + usec, data[off:off + caplen]))
        return out

    def flush(self) -> list[CapturedMessage]:
        """End of input: give back what reassembly still holds as complete messages."""
        out: list[CapturedMessage] = []
        if self._tcp is not None:
            self._tcp.flush()       # gives nothing back: only whole messages are framed
        if self._defrag is not None:
            self._defrag.flush()
        if self._sctp is not None:
            self._sctp.flush()
        return out

    # ------------------------------------------------------------------ layer 3

    def _l3(self, ts: int, buf: bytes, off: int, end: int, et: int, depth: int,
            out: list[CapturedMessage]) -> None:
        if et == 0x0800:
            self._ipv4(ts, buf, off, end, depth, out)
        elif et == 0x86DD:
            self._ipv6(ts, buf, off, end, depth, out)
        elif et == _link.ETH_TYPE_GUESS_IP:
            if off >= end:
                self.stats["malformed:ip-truncated"] += 1
                return
            v = buf[off] >> 4
            if v == 4:
                self._ipv4(ts, buf, off, end, depth, out)
            elif v == 6:
                self._ipv6(ts, buf, off, end, depth, out)
            else:
                self.stats["skipped:non-ip"] += 1
        elif depth and et == _link.ETH_TYPE_TEB:
            self._ether_inner(ts, buf, off, end, depth, out)
        else:
            self.stats["skipped:non-ip"] += 1

    def _ether_inner(self, ts: int, buf: bytes, off: int, end: int, depth: int,
                     out: list[CapturedMessage]) -> None:
        if end - off < 14:
            self.stats["malformed:link-truncated"] += 1
            return
        start = off
        et, off = _link.ethernet(buf, off, end)
        self._tunnel = (self._tunnel or b"") + buf[start:off]
        self._l3(ts, buf, off, end, et, depth, out)

    def _ipv4(self, ts: int, buf: bytes, off: int, end: int, depth: int, out: list[CapturedMessage]) -> None:
        if end - off < 20:
            self.stats["malformed:ip-truncated"] += 1
            return
        vihl, _tos, tot, ident, ff, _ttl, proto, _sum, src, dst = _unpack_ip4(buf, off)
        hl = (vihl & 15) << 2
        if vihl >> 4 != 4 or hl < 20:
            self.stats["malformed:ip-header"] += 1
            return
        if tot == 0:            # segmentation offload: length left to the NIC
            tot = end - off
        if tot < hl:
            self.stats["malformed:ip-length"] += 1
            return
        if off + tot > end:
            if self._snapped:
                self.stats["malformed:snapped"] += 1
                return
            # a length larger than the packet (a bit error, or a capture that did not
            # record its snapping): use the bytes we have, as tshark does
        else:
            end = off + tot     # drop Ethernet padding / trailers
        if ff & 0x3FFF:         # MF set or offset non-zero
            self._fragment(ts, (4, src, dst, ident, proto), (ff & 0x1FFF) << 3, ff & 0x2000,
                           buf[off + hl:end], proto, src, dst, AF_INET, depth, out)
            return
        off += hl
        if proto == 17:
            self._udp(ts, buf, off, end, src, dst, AF_INET, depth, out)
        else:
            self._l4(ts, proto, buf, off, end, src, dst, AF_INET, depth, out)

    def _ipv6(self, ts: int, buf: bytes, off: int, end: int, depth: int, out: list[CapturedMessage]) -> None:
        if end - off < 40:
            self.stats["malformed:ip-truncated"] += 1
            return
        vtf, plen, nh, _hlim, src, dst = _unpack_ip6(buf, off)
        if vtf >> 28 != 6:
            self.stats["malformed:ip-header"] += 1
            return
        off += 40
        if plen == 0:            # jumbogram or offload: take what was captured
            plen = end - off
        if off + plen > end:
            if self._snapped:
                self.stats["malformed:snapped"] += 1
                return
        else:
            end = off + plen
        try:
            proto, off, frag = _ip.ipv6_ext(buf, off, end, nh)
        except IndexError:
            self.stats["malformed:ipv6-ext-header"] += 1
            return
        if frag is not None:
            fo, more, ident = frag
            self._fragment(ts, (6, src, dst, ident), fo, more, buf[off:end], proto, src, dst,
                           AF_INET6, depth, out)
            return
        if proto == 17:
            self._udp(ts, buf, off, end, src, dst, AF_INET6, depth, out)
        else:
            self._l4(ts, proto, buf, off, end, src, dst, AF_INET6, depth, out)

    def _fragment(self, ts: int, key: FragmentKey, fo: int, more: int, data: bytes, proto: int,
                  src: bytes, dst: bytes, fam: int, depth: int, out: list[CapturedMessage]) -> None:
        if self._defrag is None:
            mb, me, to = self._frag_opts
            self._defrag = Defragmenter(self.stats, max_bytes=mb, max_entries=me, timeout_us=to)
        whole = self._defrag.add(ts, key, fo, bool(more), data)
        if whole is None:
            return
        if proto == 17:
            self._udp(ts, whole, 0, len(whole), src, dst, fam, depth, out)
        else:
            self._l4(ts, proto, whole, 0, len(whole), src, dst, fam, depth, out)

    # ------------------------------------------------------------------ layer 4

    def _l4(self, ts: int, proto: int, buf: bytes, off: int, end: int, src: bytes, dst: bytes,
            fam: int, depth: int, out: list[CapturedMessage]) -> None:
        if proto == 6:
            self._tcp_segment(ts, buf, off, end, src, dst, fam, depth, out)
        elif proto == 17:
            self._udp(ts, buf, off, end, src, dst, fam, depth, out)
        elif proto == 132:
            self._sctp_packet(ts, buf, off, end, src, dst, fam, out)
        elif proto == 1 or proto == 58:
            self.stats["skipped:icmp-quoted" if b"SIP/2.0" in buf[off:end] else "skipped:non-sip"] += 1
        elif proto == 4 or proto == 41 or proto == 47:
            self._tunnel = (self._tunnel or b"") + src + dst
            if depth >= MAX_TUNNEL_DEPTH:
                self.stats["malformed:tunnel-too-deep"] += 1
            elif proto == 4:
                self._ipv4(ts, buf, off, end, depth + 1, out)
            elif proto == 41:
                self._ipv6(ts, buf, off, end, depth + 1, out)
            else:
                self._gre(ts, buf, off, end, depth + 1, out)
        else:
            self.stats["skipped:non-sip"] += 1

    def _udp(self, ts: int, buf: bytes, off: int, end: int, src: bytes, dst: bytes, fam: int,
             depth: int, out: list[CapturedMessage]) -> None:
        if end - off < 8:
            self.stats["malformed:udp-truncated"] += 1
            return
        sport, dport, ulen = _unpack_ports(buf, off)
        if ulen < 8:
            if ulen == 0 and fam == AF_INET6:   # jumbogram: length from IPv6
                ulen = end - off
            else:
                self.stats["malformed:udp-length"] += 1
                return
        if off + ulen > end:
            if self._snapped:
                self.stats["malformed:snapped"] += 1
                return
            ulen = end - off    # as for IP: keep what was captured
        data = buf[off + 8:off + ulen]
        if not data:
            self.stats["skipped:non-sip"] += 1
            return
        if dport == 4789 or dport == 2152 or sport == 2152:
            outer = self._tunnel
            self._tunnel = (outer or b"") + src + dst
            if self._udp_tunnel(ts, sport, dport, data, depth, out):
                return
            self._tunnel = outer  # not a tunnel after all: the datagram is the payload
        self._payload(ts, src, sport, dst, dport, PROTO_UDP, fam, data, out)

    def _payload(self, ts: int, src: bytes, sport: int, dst: bytes, dport: int, proto: int,
                 fam: int, data: bytes, out: list[CapturedMessage]) -> None:
        """An unframed L4 payload (UDP datagram, SCTP message): HEP, SIP or skipped."""
        b0 = data[0]
        if b0 < 0x21:
            if len(data) <= 8 and data in _KEEPALIVES:
                self.stats["skipped:keepalive"] += 1
                return
            hp = self.hep_ports
            if (b0 == 1 or b0 == 2) and (hp is None or sport in hp or dport in hp):
                if self._try_hep(ts, data, out):
                    return
            elif b0 == 0x1F and data[1:2] == b"\x8b":
                # a whole HEP datagram gzipped by the agent (heplify): only where HEP
                # is expected, since any gzip stream starts so
                if (sport in _HEP_GZIP_PORTS or dport in _HEP_GZIP_PORTS) if hp is None \
                        else (sport in hp or dport in hp):
                    self._decode_hep(ts, data, out)
                    return
        elif (b0 == 0x48 or b0 == 0x45) and (data[:4] == b"HEP3" or data[:4] == b"EEP3"):
            hp = self.hep_ports
            if (hp is None or sport in hp or dport in hp) and self._try_hep(ts, data, out):
                return
        p = self.ports
        if p is not None and sport not in p and dport not in p:
            self.stats["skipped:port-filter"] += 1
            return
        if b0 not in _TOKEN_START or not self._looks_like_sip(data):
            self.stats["skipped:non-sip"] += 1
            return
        out.append(CapturedMessage(ts, addr_str(src), sport, addr_str(dst), dport, proto, fam, data))

    # ------------------------------------------------------------------ HEP

    def _try_hep(self, ts: int, data: bytes, out: list[CapturedMessage]) -> bool:
        """Decode ``data`` as HEP if it is HEP; True when it was (messages or malformed)."""
        if not _hep.looks_like_hep(data):
            return False
        self._decode_hep(ts, data, out)
        return True

    def _hep_frame(self, ts: int, data: bytes, out: list[CapturedMessage]) -> None:
        """One HEP3 packet cut out of a TCP stream by its length."""
        if not _hep.looks_like_hep(data):
            self.stats["malformed:hep3-stream"] += 1
            return
        self._decode_hep(ts, data, out)

    def _decode_hep(self, ts: int, data: bytes, out: list[CapturedMessage]) -> None:
        """One HEP datagram (or TCP-framed packet) of a frame; what it inflates to is
        bounded by ``hep_max_inflated``; every refused part is counted with its bytes."""
        errors: list[DecodeError] = []
        stats = self.stats
        pkts: list[_hep.HepPacket] = []
        try:
            pkts = _hep.decode_datagram(data, now_us=ts, errors=errors,
                                        max_inflated=self.hep_max_inflated)
        except DecodeError as e:
            errors.append(e)
        for err in errors:
            stats["malformed:" + err.reason] += 1
            size = getattr(err, "size", 0)
            if size:
                stats["refused-bytes:" + err.reason] += size
        for pkt in pkts:
            out.append(pkt.to_message(now_us=ts))

    # ------------------------------------------------------------------ later layers

    def _udp_tunnel(self, ts: int, sport: int, dport: int, data: bytes, depth: int,
                    out: list[CapturedMessage]) -> bool:
        """VXLAN / GTP-U by port; False when the header does not fit (then it is payload)."""
        if depth >= MAX_TUNNEL_DEPTH:
            self.stats["malformed:tunnel-too-deep"] += 1
            return True
        if dport == _tunnel.VXLAN_PORT:
            et, off = _tunnel.vxlan(data, 0, len(data))
        else:
            et, off = _tunnel.gtpu(data, 0, len(data))
        if et == _link.ETH_TYPE_NONE:
            return False
        self._l3(ts, data, off, len(data), et, depth + 1, out)
        return True

    def _gre(self, ts: int, buf: bytes, off: int, end: int, depth: int, out: list[CapturedMessage]) -> None:
        et, off = _tunnel.gre(buf, off, end)
        if et == _link.ETH_TYPE_NONE:
            self.stats["skipped:non-sip"] += 1
            return
        self._l3(ts, buf, off, end, et, depth, out)

    def _tcp_segment(self, ts: int, buf: bytes, off: int, end: int, src: bytes, dst: bytes,
                     fam: int, depth: int, out: list[CapturedMessage]) -> None:
        if end - off < 20:
            self.stats["malformed:tcp-truncated"] += 1
            return
        sport, dport, seq, _ack, hl, flags = _unpack_tcp(buf, off)
        hl = (hl >> 4) << 2
        if hl < 20 or off + hl > end:
            self.stats["malformed:tcp-header"] += 1
            return
        p = self.ports
        sip = p is None or sport in p or dport in p
        if not sip and self.hep_ports is not None and sport not in self.hep_ports \
                and dport not in self.hep_ports:
            # neither SIP (--ports) nor HEP (--hep-ports) can be on this flow
            self.stats["skipped:port-filter"] += 1
            return
        tcp = self._tcp
        if tcp is None:
            ms, msb, mtb, to = self._tcp_opts
            tcp = self._tcp = TcpReassembler(self.stats, self._looks_like_sip, max_streams=ms,
                                             max_stream_bytes=msb, max_total_bytes=mtb, timeout_us=to,
                                             hep=True, hep_ports=self.hep_ports)
        data = buf[off + hl:end]
        if not data and not flags & 0x05:
            return  # a bare ACK or SYN: nothing to count
        for mts, proto, msg in tcp.segment(ts, (src, sport, dst, dport), seq, flags, data, sip):
            if proto == HEP_FRAME:
                self._hep_frame(mts, msg, out)
            else:
                out.append(CapturedMessage(mts, addr_str(src), sport, addr_str(dst), dport, proto, fam, msg))

    def _sctp_packet(self, ts: int, buf: bytes, off: int, end: int, src: bytes, dst: bytes,
                     fam: int, out: list[CapturedMessage]) -> None:
        """SCTP DATA / I-DATA chunks (decode/sctp.py); fragmented user messages are
        reassembled. The messages of one packet after the first get +1 µs each."""
        sctp = self._sctp
        if sctp is None:
            sctp = self._sctp = SctpReassembler(self.stats, self._sctp_max)
        n0 = len(out)
        for sport, dport, data in sctp.packet(ts, buf, off, end, src, dst):
            self._payload(ts, src, sport, dst, dport, PROTO_SCTP, fam, data, out)
        for i in range(n0 + 1, len(out)):
            out[i].ts_us += i - n0
