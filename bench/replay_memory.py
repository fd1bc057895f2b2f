#!/usr/bin/env python3
"""Bounded memory: peak RSS of `sipcaptool replay` on a large, mixed capture.

Generates (streaming, never holding it in memory) a capture of about ``--size-mb``
megabytes that mixes what fills real mirror-port captures:

* SIP over UDP (calls, registrations, OPTIONS; every dialog its own Call-ID);
* INVITEs of ~4 KB over UDP, IPv4-fragmented (some fragments in reverse order, some
  datagrams with a fragment missing, so reassembly state has to be evicted);
* long-lived SIP-over-TCP connections, many open at once, whose messages are cut into
  segments of random sizes (most messages span two or more segments), with a few
  retransmitted segments; some connections end with FIN, others are just abandoned;
* non-SIP noise: RTP-like UDP streams (most of the bytes) and TLS-like TCP flows.

Then runs ``python -m sipcaptool replay --db URL --json -q FILE`` as a child process
and prints the peak RSS of the run (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken by
a small parent of the replay alone: the largest resident set of the replay process or
of its writer process) and the message rate.  The capture and the database live in a
temporary directory (under
/tmp by default) that is removed at the end.

    python bench/replay_memory.py                      # 1 GB, sqlite and --db none
    python bench/replay_memory.py --size-mb 200 --db none
    python bench/replay_memory.py --keep /tmp/big.pcap # keep (or reuse) the capture

Target: peak RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.testing.pcapgen import (  # noqa: E402
    PcapWriter,
    ether,
    ipv4,
    ipv4_fragments,
    realistic_messages,
    sip_call,
    tcp,
    udp,
    udp4_frame,
)

TARGET_MB = 200
START_US = 1_764_000_000_000_000


class _Tcp:
    """One SIP-over-TCP connection: a byte stream handed out in random-sized segments."""

    __slots__ = ("src", "sport", "dst", "dport", "seq", "data", "pos", "ends")

    def __init__(self, n: int, rng: random.Random) -> None:
        self.src = f"10.{20 + n % 200}.{n // 200 % 250}.{1 + n % 250}"
        self.sport = 20000 + n % 40000
        self.dst = "10.0.0.2"
        self.dport = 5060
        self.seq = rng.randrange(1 << 32)
        calls = [m[4] for k in range(rng.randint(3, 8)) for m in sip_call(1_000_000 + n * 10 + k,
                                                                            a=self.src, b=self.dst)]
        self.data = b"".join(calls)
        self.ends = []          # stream offset where each message ends, last first
        end = 0
        for m in calls:
            end += len(m)
            self.ends.append(end)
        self.ends.reverse()
        self.pos = 0


def generate(path: Path, size_mb: int, seed: int = 1) -> dict:
    """Write the capture; return what it holds."""
    rng = random.Random(seed)
    limit = size_mb * 1_000_000
    counts = {"frames": 0, "sip_udp": 0, "sip_fragmented": 0, "sip_tcp": 0, "rtp": 0,
              "tls_noise": 0, "fragments_dropped": 0}

    # RTP-like streams: a template frame per stream; sequence and timestamp patched in.
    rtp = []
    for i in range(600):
        payload = bytes([0x80, 0x08]) + bytes(10) + bytes(rng.randrange(256) for _ in range(160))
        frame = bytearray(udp4_frame(f"10.50.{i // 250}.{1 + i % 250}", 10000 + 2 * i,
                                     f"10.60.{i // 250}.{1 + i % 250}", 30000 + 2 * i, payload))
        rtp.append([frame, rng.randrange(65536), rng.randrange(1 << 32)])
    rtp_off = 14 + 20 + 8 + 2
    tls_flows = [[f"10.70.0.{1 + i}", 443, f"10.80.0.{1 + i}", 50000 + i, rng.randrange(1 << 32)]
                 for i in range(50)]
    tls_blob = bytes(rng.randrange(256) for _ in range(4096))
    udp_sip = realistic_messages(10 ** 9, start_us=START_US)
    conns = [_Tcp(i, rng) for i in range(300)]
    next_conn = len(conns)
    frag_n = 0
    ts = START_US
    with open(path, "wb", buffering=4 * 1024 * 1024) as f:
        w = PcapWriter(f)
        write = w.write
        while f.tell() < limit:
            for _ in range(1000):
                ts += rng.randint(1, 40)
                r = rng.random()
                if r < 0.70:                                   # RTP noise
                    s = rtp[rng.randrange(len(rtp))]
                    s[1] = (s[1] + 1) & 0xFFFF
                    s[2] = (s[2] + 160) & 0xFFFFFFFF
                    struct.pack_into("!HI", s[0], rtp_off, s[1], s[2])
                    write(ts, bytes(s[0]))
                    counts["rtp"] += 1
                    counts["frames"] += 1
                elif r < 0.80:                                 # SIP over UDP
                    _t, (src, sport, dst, dport, msg) = next(udp_sip)
                    write(ts, udp4_frame(src, sport, dst, dport, msg))
                    counts["sip_udp"] += 1
                    counts["frames"] += 1
                elif r < 0.83:                                 # fragmented INVITE
                    frag_n += 1
                    invite = sip_call(2_000_000 + frag_n, a="10.90.0.1", b="10.90.0.2")[0][4]
                    pad = b"a=x-pad:" + b"p" * 3000 + b"\r\n"
                    head, body = invite.split(b"\r\n\r\n", 1)
                    body += pad
                    head = head.rsplit(b"Content-Length:", 1)[0] + b"Content-Length: %d" % len(body)
                    invite = head + b"\r\n\r\n" + body
                    frags = ipv4_fragments("10.90.0.1", "10.90.0.2", 17, udp(5060, 5060, invite),
                                           mtu=1500, ident=frag_n & 0xFFFF)
                    if frag_n % 4 == 0:
                        frags.reverse()
                    if frag_n % 50 == 0:
                        del frags[1]                           # never completes: evicted
                        counts["fragments_dropped"] += 1
                    else:
                        counts["sip_fragmented"] += 1
                    for fr in frags:
                        ts += 1
                        write(ts, ether(fr))
                        counts["frames"] += 1
                elif r < 0.97:                                 # SIP over TCP, segmented
                    i = rng.randrange(len(conns))
                    c = conns[i]
                    n = rng.randint(200, 1460)
                    chunk = c.data[c.pos:c.pos + n]
                    seq = c.seq + c.pos
                    write(ts, ether(ipv4(c.src, c.dst, 6, tcp(c.sport, c.dport, seq, chunk))))
                    counts["frames"] += 1
                    if rng.random() < 0.01:                    # retransmission
                        ts += 1
                        write(ts, ether(ipv4(c.src, c.dst, 6, tcp(c.sport, c.dport, seq, chunk))))
                        counts["frames"] += 1
                    c.pos += len(chunk)
                    while c.ends and c.ends[-1] <= c.pos:
                        c.ends.pop()
                        counts["sip_tcp"] += 1
                    if c.pos >= len(c.data):
                        if next_conn % 5:                      # FIN; else just abandoned
                            ts += 1
                            write(ts, ether(ipv4(c.src, c.dst, 6, tcp(c.sport, c.dport, c.seq + c.pos,
                                                                      b"", flags=0x11))))
                            counts["frames"] += 1
                        conns[i] = _Tcp(next_conn, rng)
                        next_conn += 1
                else:                                          # TLS-like TCP noise
                    fl = tls_flows[rng.randrange(len(tls_flows))]
                    n = rng.randint(100, 1460)
                    data = b"\x17\x03\x03" + struct.pack("!H", n - 5) + tls_blob[:n - 5]
                    write(ts, ether(ipv4(fl[0], fl[2], 6, tcp(fl[1], fl[3], fl[4], data))))
                    fl[4] = (fl[4] + n) & 0xFFFFFFFF
                    counts["tls_noise"] += 1
                    counts["frames"] += 1
        counts["bytes"] = f.tell()
    counts["sip_messages_complete"] = counts["sip_udp"] + counts["sip_fragmented"] + counts["sip_tcp"]
    return counts


_MEASURE = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:])
print("\\nMAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(p.returncode)
"""


def replay(pcap: Path, db: str) -> dict:
    """Run the replay in a child process; its peak RSS and rate."""
    if db.startswith("sqlite:///"):
        init = subprocess.run([sys.executable, "-m", "sipcaptool", "db", "init", "--db", db],
                              capture_output=True, text=True, cwd=ROOT)
        if init.returncode != 0:
            return {"db": db, "error": init.stderr.strip()[-500:]}
    t0 = time.perf_counter()
    # The replay runs under a small parent of its own, so that RUSAGE_CHILDREN there
    # covers exactly this run (the replay process and the writer process it starts).
    p = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "sipcaptool", "replay",
                        "--db", db, "--json", "-q", str(pcap)], capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        return {"db": db, "error": (p.stderr.strip() or p.stdout.strip())[-800:]}
    out, _, rss = p.stdout.rpartition("\nMAXRSS_KB ")
    s = json.loads(out)
    return {"db": db, "peak_rss_mb": round(int(rss) / 1024, 1), "seconds": round(dt, 1),
            "packets": s["packets"], "messages": s["messages"],
            "stored": s["stored_total"], "msg_per_s": int(s["messages"] / dt),
            "pkt_per_s": int(s["packets"] / dt), "evicted": s["evicted"],
            "malformed": s["malformed"], "skipped": s["skipped"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="capture size in MB (default 1024)")
    ap.add_argument("--db", action="append", choices=["sqlite", "none"],
                    help="where to store (repeatable; default: sqlite, then none)")
    ap.add_argument("--tmp", default="/tmp", help="directory for the capture and the database")
    ap.add_argument("--keep", metavar="FILE", help="write the capture here and keep it; "
                    "reused as it is when it exists")
    ap.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = ap.parse_args()
    kinds = args.db or ["sqlite", "none"]
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="sipcaptool-bench-") as tmp:
        pcap = Path(args.keep) if args.keep else Path(tmp) / "big.pcap"
        if pcap.exists():
            print(f"capture: reusing {pcap} ({pcap.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
        else:
            t0 = time.perf_counter()
            info = generate(pcap, args.size_mb)
            print(f"capture: {info['bytes'] / 1e6:.0f} MB, {info['frames']} frames, "
                  f"{info['sip_messages_complete']} SIP messages ({info['sip_udp']} UDP, "
                  f"{info['sip_fragmented']} fragmented, {info['sip_tcp']} TCP), "
                  f"built in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            if args.json:
                print(json.dumps({"capture": info}))
        size = pcap.stat().st_size
        for kind in kinds:
            url = f"sqlite:///{tmp}/bench.db" if kind == "sqlite" else "none"
            r = replay(pcap, url)
            r["capture_mb"] = round(size / 1e6)
            if args.json:
                print(json.dumps(r))
            elif "error" in r:
                print(f"{kind:7} ERROR {r['error']}")
            else:
                ok = "ok" if r["peak_rss_mb"] < TARGET_MB else "ABOVE TARGET"
                print(f"{kind:7} {r['capture_mb']} MB, {r['packets']} packets, {r['messages']} messages, "
                      f"{r['stored']} rows in {r['seconds']} s: {r['msg_per_s']} msg/s, "
                      f"{r['pkt_per_s']} packets/s; peak RSS {r['peak_rss_mb']} MB "
                      f"(target < {TARGET_MB} MB, {ok})")
                print(f"        evicted {r['evicted']}  malformed {r['malformed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
