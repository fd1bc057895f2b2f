"""The pure capture reader (sources/pcapng.py) and compressed input (sources/pcapfile.py).

Every block of pcapng (several sections and byte orders, interfaces of every link type
the decoder knows, timestamp resolutions and offsets, Enhanced, Simple and obsolete
Packet Blocks, blocks to skip), read whole, a byte at a time and cut anywhere; damaged
and trailing bytes; cross-checked with libpcap where libpcap reads the file; and gzip,
xz, bzip2 and zstd input recognised by magic bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.errors import InputError
from sipcaptool.sources import pcapfile
from sipcaptool.sources.pcapfile import CaptureFile, compression_of
from sipcaptool.sources.pcapng import MAX_BLOCK, CaptureFormatError, FrameReader
from sipcaptool.stats import Stats
from sipcaptool.testing import pcapgen as g
from sipcaptool.testing.pcapng import LINK_HEADERS, PcapngBuilder, link_frame

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "tests" / "pcaps"
T0 = 1_764_000_000_000_000


# ---------------------------------------------------------------- helpers

class Trickle(io.RawIOBase):
    """A stream giving at most ``step`` bytes per read (a pipe, or one byte at a time)."""

    def __init__(self, data: bytes, step: int = 1) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        k = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos:self.pos + k]
        self.pos += len(out)
        return out


def frames(reader: FrameReader) -> list[tuple[int, int, bytes]]:
    """(link type, µs time, frame bytes) of every frame the reader gives."""
    out = []
    for lt, data, meta in reader.batches():
        assert len(meta) % 4 == 0 and len(meta) <= 4 * 512
        for i in range(0, len(meta), 4):
            sec, usec, off, caplen = meta[i:i + 4]
            assert usec < 1_000_000
            out.append((lt, sec * 1_000_000 + usec, data[off:off + caplen]))
    return out


def read_all(data: bytes, step: int | None = None) -> tuple[FrameReader, list]:
    r = FrameReader(Trickle(data, step) if step else io.BytesIO(data))
    return r, frames(r)


def sip_packets(n: int, seed: int = 40) -> list[bytes]:
    """``n`` IPv4/UDP SIP packets (IP layer)."""
    msgs = []
    while len(msgs) < n:
        msgs += [g.ipv4(s, d, 17, g.udp(sp, dp, m)) for s, sp, d, dp, m in g.sip_call(seed)]
        seed += 1
    return msgs[:n]


def ipv6_packet(msg: bytes) -> bytes:
    return g.ipv6("2001:db8::1", "2001:db8::2", 17, g.udp(5060, 5060, msg))


def mixed_file(big_endian: bool = False) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """A section with an interface of every link type the decoder knows, each with its
    own resolution, and the frames a reader must give."""
    b = PcapngBuilder(big_endian).section()
    want = []
    pkts = sip_packets(len(LINK_HEADERS) * 2)
    resolutions = [None, 9, 3, 0x80 | 20, 0x80 | 10, 7, 6]
    for k, lt in enumerate(LINK_HEADERS):
        b.interface(lt, name=f"if{k}", tsresol=resolutions[k % len(resolutions)],
                    tsoffset=(k - 3) * 10)
    for k, pkt in enumerate(pkts):
        i = k % len(LINK_HEADERS)
        lt = LINK_HEADERS[i]
        if lt == 229:
            pkt = ipv6_packet(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: v6-%d\r\n\r\n" % k)
        frame = link_frame(lt, pkt)
        back = b.packet(i, T0 + k * 1234 + 1, frame)
        want.append((lt, back, frame))
    return b.data(), want


# ---------------------------------------------------------------- reading whole

def test_every_link_type_in_one_file_a_batch_per_run_of_one_link_type():
    data, want = mixed_file()
    r, got = read_all(data)
    assert got == want
    assert r.packets == len(want) and r.cut_off is None and r.damaged is None
    assert not r.counts and not r.unsupported
    assert r.format == "pcapng" and r.linktype == LINK_HEADERS[-1]


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_a_byte_at_a_time_gives_the_same_frames(step):
    data, want = mixed_file(big_endian=True)
    r, got = read_all(data, step)
    assert got == want and r.cut_off is None and r.damaged is None


def test_big_endian_and_little_endian_sections_one_after_the_other():
    a, wa = mixed_file(big_endian=False)
    b, wb = mixed_file(big_endian=True)
    r, got = read_all(a + b + a)
    assert got == wa + wb + wa
    assert r.packets == 3 * len(wa)


def test_interface_numbers_start_again_in_each_section():
    b = PcapngBuilder().section()
    b.interface(1)
    pkt = sip_packets(1)[0]
    t1 = b.packet(0, T0, link_frame(1, pkt))
    b.section(big_endian=True)
    b.interface(101)            # interface 0 of the second section: raw IP
    t2 = b.packet(0, T0 + 5, pkt)
    _r, got = read_all(b.data())
    assert got == [(1, t1, link_frame(1, pkt)), (101, t2, pkt)]


@pytest.mark.parametrize("tsresol,units", [(None, 10**6), (0, 1), (3, 10**3), (6, 10**6),
                                           (9, 10**9), (7, 10**7), (0x80 | 0, 1),
                                           (0x80 | 10, 1024), (0x80 | 20, 1 << 20),
                                           (0x80 | 30, 1 << 30)])
@pytest.mark.parametrize("tsoffset", [0, 3600, -1_000_000])
def test_timestamp_resolutions_and_offsets(tsresol, units, tsoffset):
    b = PcapngBuilder().section()
    b.interface(101, tsresol=tsresol, tsoffset=tsoffset)
    times = [T0, T0 + 1, T0 + 999_999, T0 + 123_456_789]
    back = [b.packet(0, t, sip_packets(1)[0]) for t in times]
    _r, got = read_all(b.data())
    assert [t for _lt, t, _f in got] == back
    if units >= 10**6:
        assert back == times      # exact where the resolution is a µs or finer
    else:
        assert all(t <= b_ < t + 1_000_000 // units for t, b_ in zip(times, back, strict=True))


def test_simple_and_obsolete_packet_blocks():
    b = PcapngBuilder().section()
    b.interface(1, snaplen=200)
    pkts = sip_packets(3)
    f0, f1, f2 = (link_frame(1, p) for p in pkts)
    t0 = b.packet(0, T0 + 10, f0)
    b.simple(f1)                                # no time: the packet's before
    t2 = b.packet(0, T0 + 30, f2, obsolete=True)
    b.simple(f1, wirelen=len(f1) + 40)          # cut: never longer than on the wire
    r, got = read_all(b.data())
    assert got == [(1, t0, f0), (1, t0, f1[:200]), (1, t2, f2), (1, t2, f1[:200])]
    assert r.snaplen == 200


def test_a_simple_packet_block_keeps_what_the_block_holds_without_snaplen():
    b = PcapngBuilder().section()
    b.interface(101)
    pkt = sip_packets(1)[0]
    b.simple(pkt)
    _r, got = read_all(b.data())
    assert got == [(101, 0, pkt)]


def test_blocks_without_packets_are_read_past_unknown_ones_counted():
    b = PcapngBuilder().section()
    b.interface(1)
    pkt = link_frame(1, sip_packets(1)[0])
    b.names()
    b.custom()
    b.block(0x40000BAD, struct.pack("<I", 32473) + b"no copy")
    b.block(0x0000_0099, b"a block type nobody defined")
    b.block(10, b"TLSK" + struct.pack("<I", 4) + b"keys")   # Decryption Secrets
    t = b.packet(0, T0, pkt)
    b.statistics(0)
    r, got = read_all(b.data())
    assert got == [(1, t, pkt)]
    assert r.counts == {"skipped:pcapng-block": 3}


def test_a_packet_of_an_interface_the_section_does_not_describe_is_counted():
    b = PcapngBuilder().section()
    b.interface(1)
    pkt = link_frame(1, sip_packets(1)[0])
    b.block(6, struct.pack("<IIIII", 3, 0, 0, len(pkt), len(pkt)) + pkt)
    t = b.packet(0, T0, pkt)
    r, got = read_all(b.data())
    assert got == [(1, t, pkt)]
    assert r.packets == 2 and r.counts == {"packets": 1, "malformed:pcapng-interface": 1}


def test_an_interface_of_an_unknown_link_type_is_skipped_counted_and_named():
    b = PcapngBuilder().section()
    b.interface(220, name="usbmon0")    # LINKTYPE_USB_LINUX_MMAPPED
    b.interface(1, name="eth0")
    pkt = link_frame(1, sip_packets(1)[0])
    b.packet(0, T0, b"\0" * 64)
    t = b.packet(1, T0 + 1, pkt)
    b.packet(0, T0 + 2, b"\0" * 64)
    r, got = read_all(b.data())
    assert got == [(1, t, pkt)]
    assert r.packets == 3
    assert r.counts == {"packets": 2, "skipped:unsupported-linktype": 2}
    assert [(i.index, i.name, i.linktype, i.skipped) for i in r.unsupported] == \
        [(0, "usbmon0", 220, 2)]


def test_the_first_link_type_named_ahead_is_one_the_decoder_knows():
    b = PcapngBuilder().section()
    b.interface(220)
    b.interface(113)
    r = FrameReader(io.BytesIO(b.data()))
    r.open()
    assert r.linktype == 113
    assert [i.linktype for i in r.interfaces] == [220, 113]


# ---------------------------------------------------------------- classic pcap

@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcap")) + ["call.pcap"])
def test_classic_pcap_read_as_libpcap_reads_it(name):
    import pcapy

    path = ROOT / "examples" / name if name == "call.pcap" else PCAPS / name
    r, got = read_all(path.read_bytes(), step=1000)
    lib = pcapy.open_offline(str(path))
    want = []
    while True:
        hdr, pkt = lib.next()
        if hdr is None:
            break
        sec, usec = hdr.getts()
        # libpcap names LINKTYPE_RAW (101, in the file) by its DLT_RAW (12)
        want.append((101 if lib.datalink() == 12 else lib.datalink(), sec * 1_000_000 + usec,
                     pkt))
    assert got == want and r.format == "pcap"


def test_classic_pcap_big_endian_nanoseconds():
    frame = link_frame(1, sip_packets(1)[0])
    head = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack(">IIII", 1_764_000_000, 123_456_789, len(frame), len(frame)) + frame
    _r, got = read_all(head + rec + rec, step=5)
    assert got == [(1, 1_764_000_000_123_456, frame)] * 2


@pytest.mark.parametrize("name", ["nanosecond-pcapng.pcapng"])
def test_single_link_type_pcapng_read_as_libpcap_reads_it(name):
    import pcapy

    r, got = read_all((PCAPS / name).read_bytes())
    lib = pcapy.open_offline(str(PCAPS / name))
    want = []
    while True:
        hdr, pkt = lib.next()
        if hdr is None:
            break
        sec, usec = hdr.getts()
        want.append((lib.datalink(), sec * 1_000_000 + usec, pkt))
    assert got == want and r.packets == len(want)


# ---------------------------------------------------------------- cut off, damaged

def _block_ends(data: bytes) -> list[int]:
    """Offsets where each block of a little-endian pcapng file ends."""
    ends, pos = [], 0
    while pos < len(data):
        pos += struct.unpack_from("<I", data, pos + 4)[0]
        ends.append(pos)
    return ends


def test_cut_anywhere_gives_every_whole_packet_and_says_where():
    b = PcapngBuilder().section()
    b.interface(1)
    b.interface(101, tsresol=9)
    pkts = sip_packets(4)
    for k, p in enumerate(pkts):
        b.packet(k % 2, T0 + k, link_frame(1, p) if k % 2 == 0 else p)
    b.simple(link_frame(1, pkts[0]))
    b.custom()
    data = b.data()
    _r, whole = read_all(data)
    ends = _block_ends(data)
    shb_end = ends[0]
    for cut in range(len(data)):
        part = data[:cut]
        r = FrameReader(io.BytesIO(part))
        if cut < shb_end:
            with pytest.raises(CaptureFormatError) as e:
                r.open()
            assert "cut off" in str(e.value) or "empty" in str(e.value) \
                or "not a pcap" in str(e.value)
            continue
        got = frames(r)
        complete = sum(1 for e in ends[3:] if e <= cut and e != ends[-1]) \
            if cut < ends[-1] else None
        assert got == whole[:len(got)]
        assert r.damaged is None
        if cut in ends:
            assert r.cut_off is None, cut
        else:
            assert r.cut_off is not None and "cut short" in r.cut_off or \
                "ends inside a block header" in (r.cut_off or ""), cut
            assert f"at byte {max(e for e in ends if e <= cut)}" in r.cut_off
        if complete is not None:
            assert len(got) == min(complete, len(whole))


@pytest.mark.parametrize("step", [1, 2, 5])
def test_a_cut_file_read_a_byte_at_a_time(step):
    data, want = mixed_file()
    cut = len(data) - 10
    r, got = read_all(data[:cut], step)
    assert got == want[:-1] and r.cut_off and "Enhanced Packet Block" in r.cut_off


@pytest.mark.parametrize("garbage", [b"\0", b"\0" * 4, b"\0" * 12, b"\xff" * 37,
                                     b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4])
def test_trailing_garbage_keeps_every_packet_and_is_reported(garbage):
    data, want = mixed_file()
    r, got = read_all(data + garbage)
    assert got == want
    assert (r.cut_off or r.damaged) and f"byte {len(data)}" in (r.cut_off or r.damaged or "")


def test_classic_pcap_cut_anywhere():
    frames_ = [link_frame(1, p) for p in sip_packets(3)]
    bio = io.BytesIO()
    w = g.PcapWriter(bio)
    for k, f in enumerate(frames_):
        w.write(T0 + k, f)
    data = bio.getvalue()
    ends = [24]
    for f in frames_:
        ends.append(ends[-1] + 16 + len(f))
    for cut in range(len(data)):
        r = FrameReader(io.BytesIO(data[:cut]))
        if cut < 24:
            with pytest.raises(CaptureFormatError):
                r.open()
            continue
        got = frames(r)
        assert len(got) == sum(1 for e in ends[1:] if e <= cut)
        assert (r.cut_off is None) == (cut in ends)


@pytest.mark.parametrize("mangle,why", [
    (lambda d, at: d[:at + 4] + struct.pack("<I", 30) + d[at + 8:], "of length"),
    (lambda d, at: d[:at + 4] + struct.pack("<I", MAX_BLOCK + 4) + d[at + 8:],
     "larger than any capture"),
    (lambda d, at: d[:at + 4] + struct.pack("<I", 0xFFFFFFFC) + d[at + 8:],
     "larger than any capture"),
    (lambda d, at: d[:at + 20] + struct.pack("<I", 60000) + d[at + 24:], "claims 60000"),
])
def test_a_damaged_block_stops_reading_there_and_says_what(mangle, why):
    b = PcapngBuilder().section()
    b.interface(101)
    pkts = sip_packets(3)
    for k, p in enumerate(pkts):
        b.packet(0, T0 + k, p)
    data = b.data()
    at = _block_ends(data)[2]         # the second packet's block
    r, got = read_all(mangle(data, at))
    assert [f for _lt, _t, f in got] == pkts[:1]
    assert r.damaged and why in r.damaged and f"byte {at}" in r.damaged


def test_a_trailer_length_that_differs_is_damage():
    b = PcapngBuilder().section()
    b.interface(101)
    pkt = sip_packets(1)[0]
    b.packet(0, T0, pkt)
    b.packet(0, T0, pkt)
    data = bytearray(b.data())
    end = _block_ends(bytes(data))[-1]
    data[end - 4:end] = struct.pack("<I", 8)
    r, got = read_all(bytes(data))
    assert len(got) == 1 and r.damaged and "length at its end" in r.damaged


@pytest.mark.parametrize("head,why", [
    (b"", "empty"),
    (b"\x0a\x0d", "not a pcap"),
    (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c\x2b", "cut off"),
    (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x11\x22\x33\x44" + b"\0" * 16, "byte-order magic"),
    (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c\x2b\x1a\x02\0\0\0" + b"\0" * 8 + b"\x1c\0\0\0",
     "version 2.0"),
    (b"\xd4\xc3\xb2\xa1\x02\0", "header is cut off"),
    (b"hello, this is not a capture", "not a pcap or pcapng"),
])
def test_what_is_not_a_capture_is_said_at_the_start(head, why):
    with pytest.raises(CaptureFormatError, match=why):
        FrameReader(io.BytesIO(head)).open()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_mutation_reads_or_stops_with_our_own_words(data):
    """Flip, cut or insert bytes anywhere in a valid file: the reader gives frames
    within their batch and stops with cut_off/damaged, or refuses the start; it
    never raises anything else."""
    raw, _want = mixed_file(big_endian=data.draw(st.booleans()))
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip":
            buf[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[at:at + data.draw(st.integers(1, 64))]
        else:
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    step = data.draw(st.sampled_from([None, 1, 13]))
    r = FrameReader(Trickle(bytes(buf), step) if step else io.BytesIO(bytes(buf)))
    try:
        r.open()
    except CaptureFormatError:
        return
    got = frames(r)
    assert r.packets >= len(got)
    assert not (r.cut_off and r.damaged)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_after_a_section_header(tail):
    head = PcapngBuilder().section().data()
    r = FrameReader(io.BytesIO(head + tail))
    r.open()
    frames(r)


# ---------------------------------------------------------------- CaptureFile

def _decode_file(path: str) -> tuple[CaptureFile, list, Stats]:
    cap = CaptureFile(path)
    cap.open()
    stats = Stats()
    assert cap.linktype is not None
    dec = PacketDecoder(cap.linktype, stats)
    msgs = []
    for data, meta in cap.batches():
        if cap.linktype != dec.linktype:
            dec.set_linktype(cap.linktype)
        dec.snaplen = cap.snaplen or 0
        msgs += dec.decode_batch(data, meta)
    return cap, msgs, stats


def test_capture_file_reads_every_interface_and_decodes_each_by_its_link_type(tmp_path):
    data, want = mixed_file()
    f = tmp_path / "mixed.pcapng"
    f.write_bytes(data)
    cap, msgs, stats = _decode_file(str(f))
    assert len(msgs) == len(want)
    assert [m.ts_us for m in msgs] == [t for _lt, t, _f in want]
    assert cap.problem() is None and cap.packets == len(want)
    assert not stats


def test_capture_file_names_an_unsupported_interface(tmp_path):
    b = PcapngBuilder().section()
    b.interface(220, name="usbmon0")
    b.interface(1, name="eth0")
    b.packet(0, T0, b"\0" * 64)
    b.packet(1, T0 + 1, link_frame(1, sip_packets(1)[0]))
    f = tmp_path / "usb.pcapng"
    f.write_bytes(b.data())
    cap, msgs, _stats = _decode_file(str(f))
    assert len(msgs) == 1
    assert cap.counts == {"packets": 1, "skipped:unsupported-linktype": 1}
    problem = cap.problem()
    assert problem is not None
    assert "interface 0 (usbmon0): link type 220, 1 packets" in problem
    # only interfaces nothing decodes: said at the start, with their names
    b = PcapngBuilder().section()
    b.interface(220, name="usbmon0")
    b.packet(0, T0, b"\0" * 64)
    f.write_bytes(b.data())
    with pytest.raises(InputError, match=r"interface 0 \(usbmon0\): link type 220"):
        CaptureFile(str(f)).open()


def test_capture_file_cut_off_and_damaged_say_so(tmp_path):
    data, want = mixed_file()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-6])
    cap, msgs, _ = _decode_file(str(cut))
    assert len(msgs) == len(want) - 1 and cap.truncated
    assert f"cut off after packet {len(want) - 1}" in (cap.problem() or "")
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(data + struct.pack("<II", 6, 13) + b"\0" * 8)
    cap, msgs, _ = _decode_file(str(bad))
    assert len(msgs) == len(want) and cap.damaged and not cap.truncated
    assert f"damaged after packet {len(want)}" in (cap.problem() or "")


def _plain_pcap(n: int = 300) -> bytes:
    bio = io.BytesIO()
    w = g.PcapWriter(bio)
    for ts, (src, sport, dst, dport, msg) in g.realistic_messages(n):
        w.write(ts, g.udp4_frame(src, sport, dst, dport, msg))
    return bio.getvalue()


def _zstd(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return bytes(zstandard.ZstdCompressor().compress(data))


COMPRESSORS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress,
               "zstd": _zstd}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_compressed_files_are_known_by_their_magic_not_their_name(tmp_path, kind, fmt):
    plain = _plain_pcap() if fmt == "pcap" else mixed_file()[0]
    f = tmp_path / "capture.bin"          # no telling name
    f.write_bytes(plain)
    _cap, want, _ = _decode_file(str(f))
    f.write_bytes(COMPRESSORS[kind](plain))
    cap, got, _ = _decode_file(str(f))
    assert cap.compression == kind and cap.size is None
    assert got == want and cap.problem() is None


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_concatenated_compressed_streams_are_read_on(tmp_path, kind):
    plain = _plain_pcap()
    half = 24 + (len(plain) - 24) // 2
    # cut between two records: find the record boundary at or after half
    pos = 24
    while pos < half:
        pos += 16 + struct.unpack_from("<I", plain, pos + 8)[0]
    f = tmp_path / "c"
    f.write_bytes(plain)
    _c, want, _ = _decode_file(str(f))
    f.write_bytes(COMPRESSORS[kind](plain[:pos]) + COMPRESSORS[kind](plain[pos:]))
    cap, got, _ = _decode_file(str(f))
    assert got == want and cap.problem() is None


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_a_cut_compressed_file_keeps_what_comes_before_the_cut(tmp_path, kind):
    plain = _plain_pcap(4000)   # more than one bzip2 block (900 kB), zstd block (128 kB)
    f = tmp_path / "c"
    f.write_bytes(plain)
    _c, want, _ = _decode_file(str(f))
    packed = COMPRESSORS[kind](plain)
    f.write_bytes(packed[:len(packed) * 2 // 3])
    cap, got, _ = _decode_file(str(f))
    assert 0 < len(got) < len(want) and got == want[:len(got)]
    assert cap.truncated and cap.truncated.startswith(kind)
    assert "cut off after packet" in (cap.problem() or "")


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_bad_compressed_data_is_one_clear_error(tmp_path, kind):
    f = tmp_path / "c"
    f.write_bytes(COMPRESSORS[kind](b"hello, not a capture\n" * 3))
    with pytest.raises(InputError, match=f"not a pcap or pcapng capture file.*{kind}"):
        CaptureFile(str(f))
    magic = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh9",
             "zstd": b"\x28\xb5\x2f\xfd"}[kind]
    if kind == "zstd":
        pytest.importorskip("zstandard")
    f.write_bytes(magic + b"\x00\x01\x02" * 20)
    with pytest.raises(InputError, match=f"not a readable {kind} file"):
        CaptureFile(str(f))


@pytest.mark.parametrize("head,name", [
    (b"\x04\x22\x4d\x18\x64\x40\xa7", "lz4"), (b"PK\x03\x04\x14\0", "zip"),
    (b"\x1f\x9d\x90", "compress"), (b"LZIP\x01", "lzip"), (b"7z\xbc\xaf\x27\x1c\0\x04", "7-Zip"),
])
def test_an_unsupported_compression_is_named(tmp_path, head, name):
    f = tmp_path / "c.pcap"
    f.write_bytes(head + b"\0" * 40)
    with pytest.raises(InputError, match=f"c.pcap: {name}"):
        CaptureFile(str(f))


def test_lz4_made_by_the_real_tool_is_named(tmp_path):
    import shutil
    import subprocess

    if shutil.which("lz4") is None:
        pytest.skip("lz4 not installed")
    f = tmp_path / "c.pcap"
    f.write_bytes(_plain_pcap())
    subprocess.run(["lz4", "-q", str(f), str(tmp_path / "c.pcap.lz4")], check=True)
    with pytest.raises(InputError, match="lz4-compressed, which sipcaptool does not read"):
        CaptureFile(str(tmp_path / "c.pcap.lz4"))


def test_zstd_without_its_module_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(pcapfile, "_zstandard", lambda: None)
    with pytest.raises(InputError, match=r"zstandard is not installed.*sipcaptool\[zstd\]"):
        compression_of(b"\x28\xb5\x2f\xfd\0\0")


def test_no_compression_is_seen_in_a_capture():
    assert compression_of(b"\xd4\xc3\xb2\xa1\x02\0\x04\0") is None
    assert compression_of(b"\x0a\x0d\x0d\x0a\x1c\0\0\0") is None
    assert compression_of(b"BZ a capture? no") is None


def test_random_chunking_of_a_big_file():
    data, want = mixed_file()
    rng = random.Random(7)

    class Random(io.RawIOBase):
        pos = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1, /) -> bytes:
            k = min(n if n >= 0 else 1 << 30, rng.randint(1, 300))
            out = data[self.pos:self.pos + k]
            self.pos += len(out)
            return out

    r = FrameReader(Random())
    assert frames(r) == want


def test_a_pipe_is_read_as_its_packets_come():
    """tcpdump -w - | sipcaptool replay -: the first packet is handed on while the
    writer still waits to send the rest (nothing waits for a full chunk)."""
    import os
    import threading

    data, want = mixed_file()
    first = _block_ends(data)[len(LINK_HEADERS) + 1]    # the header, interfaces, 1 packet
    handed_on = threading.Event()
    rest_sent: list[bool] = []
    r_fd, w_fd = os.pipe()

    def feed() -> None:
        os.write(w_fd, data[:first])
        handed_on.wait(30)
        rest_sent.append(True)
        os.write(w_fd, data[first:])
        os.close(w_fd)

    t = threading.Thread(target=feed)
    t.start()
    seen_before_rest = None
    got = []
    with os.fdopen(r_fd, "rb") as f:
        r = FrameReader(f)
        for lt, d, meta in r.batches():
            if seen_before_rest is None:
                seen_before_rest = not rest_sent
                handed_on.set()
            got += [(lt, meta[i] * 1_000_000 + meta[i + 1], d[meta[i + 2]:meta[i + 2] + meta[i + 3]])
                    for i in range(0, len(meta), 4)]
    t.join()
    assert seen_before_rest is True
    assert got == want
