"""Decoding time stays linear in the input (issue 17, section 5).

Each test times the same hostile input at size n and 8n (best of 3 runs each) and
asserts t(8n) < 8 * 4 * t(n) + a small constant: linear code gives about 8x, the
quadratic paths these tests were written against gave about 64x.
"""

from __future__ import annotations

import struct
import time

from decode_builders import eth, ip4, tcp

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.decode.sip import parse_sip
from sipcaptool.stats import Stats

SLACK = 0.05   # seconds: timer noise on a shared, loaded machine


def _best(run, arg, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        run(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def _assert_linear(make, run, n: int) -> tuple[float, float]:
    small, large = make(n), make(8 * n)
    t1 = _best(run, small)
    t8 = _best(run, large)
    assert t8 < 8 * 4 * t1 + SLACK, f"t(n)={t1:.4f}s t(8n)={t8:.4f}s: grows faster than the input"
    return t1, t8


def _decode_all(frames: list[bytes]) -> Stats:
    st = Stats()
    d = PacketDecoder(1, st)
    for i, f in enumerate(frames):
        d.decode(1_000 + i, f)
    d.flush()
    return st


# ----------------------------------------------------------------- IPv4 fragments

def _tiny_fragments(n: int, reverse: bool = False) -> list[bytes]:
    """One UDP datagram of n * 8 bytes sent as n fragments of 8 bytes."""
    payload = b"INVITE sip:a@b SIP/2.0\r\n" + b"x" * (n * 8 - 8 - 24)
    dgram = struct.pack("!HHHH", 5060, 5060, 8 + len(payload), 0) + payload
    frames = [eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, dgram[off:off + 8], ident=9, frag=off,
                              mf=off + 8 < len(dgram)))
              for off in range(0, len(dgram), 8)]
    return frames[::-1] if reverse else frames


def test_ipv4_tiny_fragments_in_order_linear():
    got = []
    d = PacketDecoder(1, Stats())
    for i, f in enumerate(_tiny_fragments(1000)):
        got += d.decode(i, f)
    assert len(got) == 1 and len(got[0].payload) == 1000 * 8 - 8
    _assert_linear(_tiny_fragments, _decode_all, 1000)


def test_ipv4_tiny_fragments_reversed_linear():
    got = []
    d = PacketDecoder(1, Stats())
    for i, f in enumerate(_tiny_fragments(1000, reverse=True)):
        got += d.decode(i, f)
    assert len(got) == 1 and got[0].payload.startswith(b"INVITE sip:a@b SIP/2.0\r\n")
    _assert_linear(lambda n: _tiny_fragments(n, reverse=True), _decode_all, 1000)


# ----------------------------------------------------------------- TCP start lines

def _start_lines(nbytes: int) -> list[bytes]:
    """A TCP flow of start lines only: no blank line, no Content-Length."""
    line = b"INVITE sip:a@b SIP/2.0\r\n"
    data = line * (nbytes // len(line))
    return [eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 6, tcp(5060, 5060, 1000 + off, data[off:off + 1400])))
            for off in range(0, len(data), 1400)]


def test_tcp_start_lines_only_linear():
    st = _decode_all(_start_lines(400_000))
    # the flow is refused as too-long headers, each refusal counted
    assert st["malformed:tcp-header-too-long"] >= 1
    _assert_linear(_start_lines, _decode_all, 64_000)


def test_tcp_start_lines_then_a_real_message_is_stored():
    from decode_builders import INVITE
    line = b"INVITE sip:a@b SIP/2.0\r\n"
    data = line * 10_000 + INVITE
    frames = [eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 6, tcp(5060, 5060, 1000 + off, data[off:off + 1400])))
              for off in range(0, len(data), 1400)]
    st = Stats()
    d = PacketDecoder(1, st)
    got = []
    for i, f in enumerate(frames):
        got += d.decode(i, f)
    assert st["malformed:tcp-header-too-long"] >= 1
    assert got and got[-1].payload.endswith(INVITE)


# ----------------------------------------------------------------- SCTP fragments

def _sctp_data(tsn: int, data: bytes, flags: int, ssn: int = 0) -> bytes:
    chunk = struct.pack("!BBHIHHI", 0, flags, 16 + len(data), tsn, 0, ssn, 0) + data
    return chunk + b"\x00" * (-len(chunk) % 4)


def _sctp_frames(n: int, first_flags: int) -> list[bytes]:
    """One user message in n DATA fragments that never ends (no E bit)."""
    out = []
    for i in range(n):
        flags = first_flags if i == 0 else 0
        chunk = _sctp_data(100 + i, b"abcdefgh", flags)
        out.append(eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 132,
                                   struct.pack("!HHII", 5060, 5060, 1, 0) + chunk)))
    return out


def test_sctp_fragments_never_finished_linear():
    _assert_linear(lambda n: _sctp_frames(n, 2), _decode_all, 1500)


def test_sctp_fragments_without_begin_linear():
    _assert_linear(lambda n: _sctp_frames(n, 0), _decode_all, 1500)


def test_sctp_many_fragments_still_reassemble():
    frames = _sctp_frames(3000, 2)
    last = _sctp_data(100 + 3000, b"END", 1)
    frames.append(_sctp_frame(last))
    st = Stats()
    d = PacketDecoder(1, st)
    got = []
    for i, f in enumerate(frames):
        got += d.decode(i, f)
    assert st["skipped:non-sip"] == 1 and not got   # reassembled whole (not SIP text)


# ----------------------------------------------------------------- Digest parsing

def _auth_message(n: int) -> bytes:
    return (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"Call-ID: x\r\nCSeq: 1 REGISTER\r\n"
            b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
            b"Authorization: Digest " + b"username" * (n // 8) + b"\r\nContent-Length: 0\r\n\r\n")


def test_digest_username_scan_linear():
    _assert_linear(_auth_message, parse_sip, 64_000)


def test_digest_username_still_found():
    msg = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
           b"Call-ID: x\r\nCSeq: 1 REGISTER\r\n"
           b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
           b'Authorization: Digest realm="usernames", xusername="no", USERNAME = "bob@x", nonce="1"\r\n'
           b"Content-Length: 0\r\n\r\n")
    assert parse_sip(msg).auth_user == "bob"


def _sctp_frame(chunk: bytes) -> bytes:
    return eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 132, struct.pack("!HHII", 5060, 5060, 1, 0) + chunk))


def test_sctp_unordered_messages_sharing_a_key_both_reassemble():
    from decode_builders import INVITE, OK200
    a, b = INVITE, OK200
    chunks = {1: (a[:40], 4 | 2), 2: (a[40:80], 4), 3: (a[80:], 4 | 1),
              4: (b[:30], 4 | 2), 5: (b[30:], 4 | 1)}     # U bit: the SSN (0) is not used
    d = PacketDecoder(1, Stats())
    got = []
    for i, tsn in enumerate((4, 1, 5, 2, 3)):
        data, flags = chunks[tsn]
        got += d.decode(i, _sctp_frame(_sctp_data(tsn, data, flags)))
    assert sorted(m.payload for m in got) == sorted([a, b])


def test_sctp_tiny_fragments_bounded_and_counted():
    st = Stats()
    d = PacketDecoder(1, st, max_sctp_bytes=64 * 1024)
    for i in range(5000):
        d.decode(i, _sctp_frame(_sctp_data(10 + i, b"x", 2 if i % 100 == 0 else 0, ssn=i // 100)))
    # each fragment is charged its bookkeeping, so 5,000 one-byte fragments do not fit
    assert d._sctp.held <= 64 * 1024
    assert st["evicted:sctp-fragments"] >= 1


# ----------------------------------------------------------------- TCP framing, bounded per message

def _feed(segments: list[bytes]) -> Stats:
    from sipcaptool.decode.sip import looks_like_sip
    from sipcaptool.decode.tcp import TcpReassembler
    st = Stats()
    r = TcpReassembler(st, looks_like_sip, max_stream_bytes=1024 * 1024)
    seq = 1000
    for i, s in enumerate(segments):
        r.segment(i, ("10.0.0.1", 5060, "10.0.0.2", 5060), seq, 0, s)
        seq += len(s)
    return st


def _chop(data: bytes, size: int) -> list[bytes]:
    """The first 300 bytes (with the start line) in one segment, the rest in ``size``."""
    return [data[:300]] + [data[i:i + size] for i in range(300, len(data), size)]


def _slow_body(n: int) -> list[bytes]:
    """n bytes of header and n bytes of body, arriving 16 bytes at a time."""
    head = b"INVITE sip:a@b SIP/2.0\r\n" + b"X-A: " + b"a" * 29 + b"\r\n" * 1
    head += (b"X-A: " + b"a" * 29 + b"\r\n") * (n // 36)
    return _chop(head + b"Content-Length: %d\r\n\r\n" % n + b"b" * n, 16)


def test_tcp_body_in_small_segments_linear():
    st = _feed(_slow_body(4000))
    assert not st    # one message, nothing refused
    _assert_linear(_slow_body, _feed, 4000)


def _body_too_long(n: int) -> list[bytes]:
    """A header of n bytes of start lines announcing a body over the limit."""
    return _chop(b"INVITE sip:a@b SIP/2.0\r\n" * (n // 24) + b"l: 99999999\r\n\r\n", 1400)


def test_tcp_body_too_long_counted_once_and_linear():
    st = _feed(_body_too_long(6000))
    assert st["malformed:tcp-body-too-long"] == 1
    _assert_linear(_body_too_long, _feed, 6000)


def _ws_handshake(n: int) -> list[bytes]:
    """A WebSocket upgrade request whose n bytes of header arrive one byte at a time."""
    return _chop(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n" + b"X: y\r\n" * (n // 6), 1)


def test_ws_handshake_in_one_byte_segments_linear():
    _assert_linear(_ws_handshake, _feed, 6000)


def test_defrag_end_before_bytes_already_received_is_an_overlap():
    from sipcaptool.decode.defrag import Defragmenter
    st = Stats()
    df = Defragmenter(st)
    assert df.add(0, "k", 80, True, b"b" * 80) is None
    assert df.add(0, "k", 0, False, b"a" * 80) is None    # ends where bytes already are
    assert st["malformed:fragment-overlap"] == 1 and len(df) == 0 and df.held_bytes == 0
