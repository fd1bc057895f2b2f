#!/usr/bin/env python3
"""Replay throughput and memory: messages/s and peak RSS of `sipcaptool replay`.

Builds a capture of N realistic SIP messages (calls, registrations, OPTIONS; every
dialog its own Call-ID) with the project's own pcap writer, then runs
``sipcaptool replay`` on it into each database given and prints a table.

    python bench/replay.py                       # 200,000 messages into sqlite, mysql, postgres
    python bench/replay.py -n 50000 --db sqlite  # one database
    python bench/replay.py --db mysql --mysql-url mysql://root@127.0.0.1/sipcaptool_bench

Peak RSS is the largest resident set of any process of the run (the reader/parser
process and the writer process are measured separately; the larger one is shown,
both are printed with --verbose).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame  # noqa: E402

TARGETS = {"postgres": 25000, "mysql": 20000, "sqlite": 15000}


def build_capture(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(n):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def reset_db(kind: str, url: str) -> None:
    if kind == "mysql":
        import pymysql

        db = url.rsplit("/", 1)[1]
        c = pymysql.connect(host="127.0.0.1", user="root", password="")
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        c.close()
    elif kind == "postgres":
        import psycopg2

        db = url.rsplit("/", 1)[1]
        c = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        c.close()
    elif kind == "sqlite":
        p = url[len("sqlite:///"):]
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(p + suffix):
                os.remove(p + suffix)


# the commands run as installed: modules compiled once (an environment that asks Python
# not to write bytecode would make every run compile them again)
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(kind: str, url: str, pcap: Path, n: int) -> dict:
    reset_db(kind, url)
    init = subprocess.run([sys.executable, "-m", "sipcaptool", "db", "init", "--db", url],
                          capture_output=True, text=True, env=_ENV)
    if init.returncode != 0:
        return {"db": kind, "error": init.stderr.strip()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--db", url, "--json", "-q",
                        str(pcap)], capture_output=True, text=True, env=_ENV)
    dt = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if p.returncode != 0:
        return {"db": kind, "error": p.stderr.strip()[-500:]}
    summary = json.loads(p.stdout)
    stored = summary["stored_total"]
    return {"db": kind, "messages": n, "stored": stored, "seconds": round(dt, 2),
            "msg_per_s": int(stored / dt), "peak_rss_mb": round(rss_kb / 1024, 1),
            "rss_note": "" if rss_kb > before else "(max over earlier runs)",
            "target": TARGETS[kind]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="messages in the capture")
    ap.add_argument("--db", action="append", choices=sorted(TARGETS), help="databases (repeatable)")
    ap.add_argument("--mysql-url", default="mysql://root@127.0.0.1/sipcaptool_bench")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1/sipcaptool_bench")
    ap.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = ap.parse_args()
    kinds = args.db or ["postgres", "mysql", "sqlite"]
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "bench.pcap"
        t0 = time.perf_counter()
        build_capture(pcap, args.n)
        print(f"capture: {args.n} messages, {pcap.stat().st_size / 1e6:.1f} MB, built in "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        urls = {"postgres": args.pg_url, "mysql": args.mysql_url,
                "sqlite": f"sqlite:///{tmp}/bench.db"}
        results = []
        for kind in kinds:
            r = run(kind, urls[kind], pcap, args.n)
            results.append(r)
            if args.json:
                print(json.dumps(r))
            elif "error" in r:
                print(f"{kind:9} ERROR {r['error']}")
            else:
                ok = "ok" if r["msg_per_s"] >= r["target"] else "BELOW TARGET"
                print(f"{kind:9} {r['stored']:>8} rows  {r['seconds']:>7.2f} s  "
                      f"{r['msg_per_s']:>7} msg/s (target {r['target']}, {ok})  "
                      f"peak RSS {r['peak_rss_mb']} MB {r['rss_note']}")
        for kind in kinds:
            if kind != "sqlite":
                reset_db(kind, urls[kind])
    return 0


if __name__ == "__main__":
    sys.exit(main())
