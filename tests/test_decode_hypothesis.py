"""Byte-level fuzzing: any bytes through decode() never raise, for every link type."""

from __future__ import annotations

import pytest
from decode_builders import INVITE, OK200, eth, ip4, ip6, ip6_frag, sll, tcp, udp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcaptool.decode.link import SUPPORTED_LINKTYPES
from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.record import CapturedMessage
from sipcaptool.stats import Stats

SEEDS = [
    eth(0x0800, ip4("1.2.3.4", "5.6.7.8", 17, udp(5060, 5060, INVITE))),
    eth(0x0800, ip4("1.2.3.4", "5.6.7.8", 6, tcp(5060, 5060, 1, INVITE + OK200))),
    eth(0x86DD, ip6("::1", "::2", 44, ip6_frag(17, 0, True, 1, udp(5060, 5060, INVITE)[:64]))),
    eth(0x0800, ip4("1.2.3.4", "5.6.7.8", 47, b"\x00\x00\x65\x58"
                    + eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, OK200))))),
    sll(0x0800, ip4("1.2.3.4", "5.6.7.8", 132, b"\x13\xc4\x13\xc4" + b"\x00" * 8
                    + b"\x00\x03\x00\x20" + b"\x00" * 12 + INVITE[:16])),
]


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES)),
       frames=st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_raise(linktype, frames):
    stats = Stats()
    d = PacketDecoder(linktype, stats)
    n = 0
    for i, frame in enumerate(frames):
        out = d.decode(i, frame, wirelen=len(frame) + (i % 2))
        assert all(isinstance(m, CapturedMessage) for m in out)
        n += len(out) + 1
    d.flush()


@settings(max_examples=400, deadline=None)
@given(seed=st.sampled_from(SEEDS),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 2000), tail=st.binary(max_size=40))
def test_mutated_valid_frames_never_raise_and_are_accounted(seed, edits, cut, tail):
    stats = Stats()
    d = PacketDecoder(1 if seed[12:14] != b"\x00\x00" else 113, stats)
    frame = _mutate(seed, edits)[:cut] + tail
    out = d.decode(1, frame) + d.decode(2, frame) + d.flush()
    for m in out:
        assert isinstance(m.payload, bytes) and m.payload
        assert m.family in (2, 10)


@pytest.mark.parametrize("linktype", sorted(SUPPORTED_LINKTYPES))
def test_every_prefix_of_seed_frames_never_raises(linktype):
    for seed in SEEDS:
        for n in range(0, len(seed), 3):
            d = PacketDecoder(linktype, Stats())
            d.decode(0, seed[:n])
            d.decode(0, seed[:n] + b"\xff" * 7, wirelen=n + 100)
            d.flush()


def test_decode_package_imports_no_io_modules():
    import subprocess
    import sys
    code = ("import sys; import sipcaptool.decode.packet, sipcaptool.decode.tcp, "
            "sipcaptool.decode.defrag, sipcaptool.decode.tunnel; "
            "bad = [m for m in ('pcapy', 'sqlite3', 'pymysql', 'psycopg2', 'asyncio', 'ssl')"
            " if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
