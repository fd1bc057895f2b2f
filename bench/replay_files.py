#!/usr/bin/env python3
"""What each file of a replay of many small captures costs (rotated captures:
``tcpdump -G 60 -w cap-%H%M.pcap``, ``replay /var/spool/capture/*.pcap``).

Builds N distinct small captures (each its own size, so each its own file to the
bookkeeping), then times ``sipcaptool replay --again`` of all of them against one of
them, into ``--db none``, SQLite, PostgreSQL and ClickHouse (a private server started
here, as the tests start it), alternated, and prints the cost per file beyond
``--db none``'s::

    python bench/replay_files.py                  # 400 files of 30-60 messages, 3 runs
    python bench/replay_files.py -n 100 --repeat 5 --pg ''

Needs PostgreSQL at --pg (left out with ''), and Debian's clickhouse-server for the
ClickHouse row (left out when it is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame  # noqa: E402


def build_files(d: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = d / f"cap-{i:04d}.pcap"
        with open(p, "wb") as f:
            w = PcapWriter(f)
            for ts, (src, sport, dst, dport, msg) in realistic_messages(30 + i % 31):
                w.write(ts + i * 1_000_000, udp4_frame(src, sport, dst, dport, msg))
        paths.append(p)
    return paths


def timed(url: str, files: list[Path]) -> float:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # as installed: modules compiled once
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "-q", "--again",
                        "--db", url, *map(str, files)], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{url}: {p.stderr.strip()}")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=400, help="files (default 400)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1/test",
                    help="PostgreSQL ('' leaves it out)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from contextlib import ExitStack

    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        files = build_files(Path(d), a.n)
        urls = {"none": "none", "sqlite": f"sqlite:///{d}/bench.db"}
        if a.pg:
            urls["postgresql"] = a.pg
        from clickhouse_server import ClickHouseGroup, clickhouse_binary
        if clickhouse_binary():
            g = stack.enter_context(ClickHouseGroup(1))
            urls["clickhouse"] = g.servers[0].url + "/filesbench"
            from sipcaptool.store.schema import init_db
            init_db(urls["clickhouse"], ["sip_capture"])
        all_s: dict[str, list[float]] = {k: [] for k in urls}
        one_s: dict[str, list[float]] = {k: [] for k in urls}
        for u in urls.values():          # (tables made, modules compiled)
            timed(u, files[:1])
        for _ in range(a.repeat):
            for k, u in urls.items():
                all_s[k].append(timed(u, files))
                one_s[k].append(timed(u, files[:1]))
    med = {k: statistics.median(v) for k, v in all_s.items()}
    one = {k: statistics.median(v) for k, v in one_s.items()}
    per = {k: (med[k] - one[k]) / (a.n - 1) for k in urls}
    msgs = sum(30 + i % 31 for i in range(a.n))
    print(f"replay of {a.n} files ({msgs} messages), median of {a.repeat} runs:")
    for k in urls:
        extra = per[k] - per["none"]
        print(f"  --db {k:<11} {med[k]:6.2f} s in all, {1000 * per[k]:6.1f} ms a file "
              f"({1000 * extra:+6.1f} ms against --db none)   runs: "
              + ", ".join(f"{x:.2f}" for x in all_s[k]))
    if a.json:
        print(json.dumps({"files": a.n, "messages": msgs, "seconds": all_s,
                          "one_file_seconds": one_s, "per_file_s": per}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
