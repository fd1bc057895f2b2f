#!/usr/bin/env python3
"""Reading speed of capture files: libpcap against the pure reader, and compressed input.

Builds N realistic SIP packets as classic pcap, as pcapng (one interface) and as pcapng
with two interfaces of different link types (Ethernet and raw IP, every other packet:
the worst case, a batch per packet run), then times (best of --repeat):

* reading the frames only: libpcap's batch reads (what replay uses for classic pcap),
  libpcap packet by packet (what replay used for pcapng and streams before), the pure
  reader (sources/pcapng.py) on each file, on standard-input-like streams, and through
  gzip/xz/bzip2/zstd;
* reading and decoding (``CaptureFile`` + ``PacketDecoder.decode_batch``, as replay does
  without a database), to show what reading costs in a replay.

Times are the CPU seconds of this process (``time.process_time``: everything runs in
it), so that a machine shared with other work still gives comparable figures.

    python bench/pcapng.py                 # 200,000 packets
    python bench/pcapng.py -n 50000 --repeat 1
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.decode.packet import PacketDecoder  # noqa: E402
from sipcaptool.export.pcap import PcapngWriter  # noqa: E402
from sipcaptool.sources.pcapfile import CaptureFile  # noqa: E402
from sipcaptool.sources.pcapng import FrameReader  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.testing.pcapgen import PcapWriter, ipv4, realistic_messages, udp  # noqa: E402
from sipcaptool.testing.pcapng import PcapngBuilder, link_frame  # noqa: E402


def build(d: Path, n: int) -> dict[str, Path]:
    files = {"pcap": d / "c.pcap", "pcapng": d / "c.pcapng", "mixed": d / "mixed.pcapng"}
    b = PcapngBuilder().section()
    b.interface(1, name="eth0")
    b.interface(101, name="tun0", tsresol=9)
    with open(files["pcap"], "wb") as f, open(files["pcapng"], "wb") as g:
        w, w2 = PcapWriter(f), PcapngWriter(g)
        for k, (ts, (src, sport, dst, dport, msg)) in enumerate(realistic_messages(n)):
            pkt = ipv4(src, dst, 17, udp(sport, dport, msg))
            fr = link_frame(1, pkt)
            w.write(ts, fr)
            w2.write(ts, fr)
            b.packet(k % 2, ts, fr if k % 2 == 0 else pkt)
    files["mixed"].write_bytes(b.data())
    return files


def libpcap_batches(path: Path) -> int:
    import pcapy

    r, n = pcapy.open_offline(str(path)), 0
    while True:
        _data, meta = r.next_batch(512)
        if not meta:
            return n
        n += len(memoryview(meta).cast("I")) // 4


def libpcap_next(path: Path) -> int:
    import pcapy

    r, n = pcapy.open_offline(str(path)), 0
    while True:
        hdr, _pkt = r.next()
        if hdr is None:
            return n
        hdr.getts()
        hdr.getlen()
        n += 1


def libpcap_next_batched(path: Path) -> int:
    """What replay did with pcapng files and streams before the pure reader: libpcap
    packet by packet (each frame's length on the wire shows what the snap length cut),
    the frames joined into batches for decode_batch."""
    import array

    import pcapy

    r, n, snap = pcapy.open_offline(str(path)), 0, None
    while True:
        frames: list[bytes] = []
        meta = array.array("I")
        off = 0
        while len(frames) < 512:
            hdr, pkt = r.next()
            if hdr is None:
                break
            sec, usec = hdr.getts()
            if hdr.getlen() > len(pkt) and (snap is None or len(pkt) < snap):
                snap = len(pkt)
            meta.extend((sec & 0xFFFFFFFF, usec, off, len(pkt)))
            frames.append(pkt)
            off += len(pkt)
        if frames:
            b"".join(frames)
            n += len(frames)
        if len(frames) < 512:
            return n


def pure(stream: io.BufferedIOBase | io.RawIOBase) -> int:
    return sum(len(meta) // 4 for _lt, _d, meta in FrameReader(stream).batches())


def decode(path: Path) -> int:
    cap = CaptureFile(str(path))
    cap.open()
    assert cap.linktype is not None
    dec = PacketDecoder(cap.linktype, Stats())
    n = 0
    for data, meta in cap.batches():
        if cap.linktype != dec.linktype:
            dec.set_linktype(cap.linktype)
        n += len(dec.decode_batch(data, meta))
    return n


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t = time.process_time()
        n = fn()
        times.append(time.process_time() - t)
    return min(times), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = build(d, a.n)
        packed = {}
        raw = files["pcapng"].read_bytes()
        for kind, fn in (("gzip", gzip.compress), ("xz", lzma.compress), ("bzip2", bz2.compress)):
            packed[kind] = d / f"c.pcapng.{kind}"
            packed[kind].write_bytes(fn(raw))
        try:
            import zstandard

            packed["zstd"] = d / "c.pcapng.zst"
            packed["zstd"].write_bytes(zstandard.ZstdCompressor().compress(raw))
        except ImportError:
            pass
        cases: list[tuple[str, Callable[[], int]]] = [
            ("libpcap next_batch, pcap", lambda: libpcap_batches(files["pcap"])),
            ("libpcap next(), pcap", lambda: libpcap_next(files["pcap"])),
            ("libpcap next(), pcapng", lambda: libpcap_next(files["pcapng"])),
            ("libpcap next() batched, pcapng", lambda: libpcap_next_batched(files["pcapng"])),
            ("pure, pcap", lambda: pure(open(files["pcap"], "rb"))),
            ("pure, pcapng", lambda: pure(open(files["pcapng"], "rb"))),
            ("pure, pcapng 2 link types", lambda: pure(open(files["mixed"], "rb"))),
        ]
        for kind, path in packed.items():
            cases.append((f"CaptureFile, pcapng.{kind}",
                          lambda p=path: sum(len(m) // 4 for _d, m in CaptureFile(str(p)).batches())))
        cases += [
            ("read+decode, pcap (libpcap)", lambda: decode(files["pcap"])),
            ("read+decode, pcapng (pure)", lambda: decode(files["pcapng"])),
            ("read+decode, 2 link types", lambda: decode(files["mixed"])),
        ]
        base = None
        print(f"{a.n} packets, best of {a.repeat}")
        print(f"{'case':34} {'CPU s':>7} {'k pkt/s':>9} {'vs old pcapng path':>20}")
        for name, fn in cases:
            t, n = best(fn, a.repeat)
            if name == "libpcap next() batched, pcapng":
                base = t
            ratio = f"{base / t:.2f}x" if base else ""
            print(f"{name:34} {t:7.3f} {n / t / 1000:9.0f} {ratio:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
