"""IPv4/IPv6 fragment reassembly: order, overlaps, caps, time-outs."""

from __future__ import annotations

import itertools

from decode_builders import INVITE, eth, ip4, ip6, ip6_frag, udp

from sipcaptool.decode.defrag import Defragmenter
from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.stats import Stats

DGRAM = udp(5060, 5060, INVITE + b"x" * 300)


def frags4(data: bytes, size: int = 64, ident: int = 7):
    out = []
    for off in range(0, len(data), size):
        part = data[off:off + size]
        out.append(eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, part, ident=ident, frag=off,
                                   mf=off + size < len(data))))
    return out


def test_ipv4_fragments_in_any_order():
    for order in itertools.islice(itertools.permutations(range(5)), 0, 120, 7):
        frames = frags4(DGRAM, size=len(DGRAM) // 5 // 8 * 8 + 8)
        assert len(frames) == 5
        st = Stats()
        d = PacketDecoder(1, st)
        got = []
        for i, idx in enumerate(order):
            got += d.decode(1000 + i, frames[idx])
        assert len(got) == 1 and got[0].payload == INVITE + b"x" * 300
        assert got[0].ts_us == 1004  # the completing fragment's time
        assert not st


def test_ipv6_fragments():
    st = Stats()
    d = PacketDecoder(1, st)
    a, b = DGRAM[:256], DGRAM[256:]
    f1 = eth(0x86DD, ip6("::1", "::2", 44, ip6_frag(17, 0, True, 9, a)))
    f2 = eth(0x86DD, ip6("::1", "::2", 44, ip6_frag(17, 256, False, 9, b)))
    assert d.decode(1, f2) == []
    (m,) = d.decode(2, f1)
    assert (m.src_ip, m.payload, m.ts_us) == ("::1", INVITE + b"x" * 300, 2)


def test_duplicates_ignored_and_consistent_overlap_accepted():
    st = Stats()
    df = Defragmenter(st)
    data = bytes(range(256)) * 2
    assert df.add(0, "k", 0, True, data[:200]) is None
    assert df.add(0, "k", 0, True, data[:200]) is None          # exact duplicate
    assert df.add(0, "k", 160, True, data[160:400]) is None     # overlap, same bytes
    assert df.add(0, "k", 400, False, data[400:]) == data
    assert not st and len(df) == 0 and df.held_bytes == 0


def test_conflicting_overlap_drops_datagram():
    st = Stats()
    df = Defragmenter(st)
    assert df.add(0, "k", 0, True, b"a" * 80) is None
    assert df.add(0, "k", 40, False, b"b" * 80) is None
    assert st["malformed:fragment-overlap"] == 1 and len(df) == 0
    # a later copy of the last fragment does not resurrect it
    assert df.add(0, "k", 80, False, b"c" * 8) is None


def test_caps_and_timeouts_bound_memory():
    st = Stats()
    df = Defragmenter(st, max_bytes=64 * 1024, max_entries=100, timeout_us=1_000_000)
    for i in range(10_000):          # a flood of first fragments that never complete
        df.add(i, ("k", i), 0, True, b"z" * 1000)
        assert len(df) <= 100 and df.held_bytes <= 64 * 1024
    assert st["evicted:fragments"] >= 9_900
    df.add(10_000_000, "late", 0, True, b"z" * 8)   # time-out of everything older
    assert len(df) == 1
    df.flush()
    assert len(df) == 0 and df.held_bytes == 0


def test_fragment_beyond_64k_is_malformed():
    st = Stats()
    df = Defragmenter(st)
    assert df.add(0, "k", 65528, True, b"x" * 16) is None
    assert st["malformed:fragment-too-big"] == 1


def test_fragment_flood_through_decoder_stays_bounded():
    st = Stats()
    d = PacketDecoder(1, st, max_frag_bytes=100_000, max_frag_entries=50)
    for i in range(5000):
        d.decode(i, eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, b"q" * 512, ident=i, mf=True)))
    assert len(d._defrag) <= 50 and d._defrag.held_bytes <= 100_000
    assert st["evicted:fragments"] >= 4950
