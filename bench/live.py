"""Live capture throughput: the highest SIP rate captured and stored with no loss.

Builds a veth pair between two network namespaces (needs root), runs
``sipcaptool live`` on the receiving end, and pushes SIP over UDP through the pair at
increasing rates (a paced sender in the other namespace). A rate passes when every
message sent was captured and stored, the kernel dropped nothing (pcap statistics)
and sipcaptool dropped nothing. The highest passing rate is reported.

    python bench/live.py                       # SQLite, 1 worker
    python bench/live.py --workers 2 --db postgresql://postgres@127.0.0.1/bench
    python bench/live.py --rates 5000,10000,20000 --seconds 5

With a server database, the capture runs in the host namespace on a veth end that has
no address (the frames are addressed to a MAC nobody has, so the host stack ignores
them), because the database listens on the host's loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from netns import VethPair, have_netns, live_capture  # noqa: E402


def one_rate(rate: int, seconds: float, workers: int, db_url: str | None, tmp: str,
             extra: list[str]) -> dict:
    n = max(500, int(rate * seconds))
    server_db = db_url is not None and not db_url.startswith("sqlite")
    with VethPair(b_in_root=server_db, ipv6=False) as net:
        if db_url is None:
            path = os.path.join(tmp, f"bench-{rate}.db")
            url = f"sqlite:///{path}"
        else:
            url = db_url
        with live_capture(net, "-i", net.if_b, "--db", url, "--json", "--raw-sock-children",
                          str(workers), *extra) as p:
            sent = net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", str(n),
                              "--rate", str(rate), "--tag", f"b{rate}", timeout=seconds * 10 + 60)
            time.sleep(1.5)
            p.send_signal(signal.SIGTERM)
            p.wait(120)
        if p.returncode != 0:
            raise SystemExit(f"sipcaptool live failed at {rate}/s: {p.err[-2000:]}")
        s = json.loads(p.out)
        if db_url is None:
            os.unlink(path)
    achieved = sent["sent"] / sent["seconds"] if sent["seconds"] else float("inf")
    k = s.get("kernel", {})
    ok = (s["messages"] == n and s["stored_total"] == n and not k.get("dropped")
          and not k.get("if_dropped") and not s["dropped"])
    return {"rate": rate, "sent": n, "sender_rate": round(achieved), "captured": s["messages"],
            "stored": s["stored_total"], "kernel_dropped": k.get("dropped", 0),
            "dropped": s["dropped"], "ok": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,2000,5000,10000,15000,20000,30000,40000,60000,80000",
                    help="comma-separated messages per second, tried in order")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of traffic per rate")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--db", default=None, help="database URL [default: a fresh SQLite file]")
    ap.add_argument("--keep-going", action="store_true", help="try every rate even after a loss")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("extra", nargs="*", help="more options for sipcaptool live (after --)")
    args = ap.parse_args()
    ok, why = have_netns()
    if not ok:
        raise SystemExit(f"bench/live.py {why}")
    tmp = tempfile.mkdtemp(prefix="sipcaptool-bench-")
    results = []
    best = 0
    try:
        for rate in (int(r) for r in args.rates.split(",")):
            r = one_rate(rate, args.seconds, args.workers, args.db, tmp, args.extra)
            results.append(r)
            if not args.json:
                print(f"{rate:>7}/s  sender {r['sender_rate']:>7}/s  sent {r['sent']:>7}  "
                      f"captured {r['captured']:>7}  stored {r['stored']:>7}  kernel drops "
                      f"{r['kernel_dropped']:>6}  {'ok' if r['ok'] else 'LOSS'}", flush=True)
            if r["ok"] and r["sender_rate"] >= rate * 0.95:
                best = max(best, rate)
            elif not r["ok"] and not args.keep_going:
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"workers": args.workers, "db": args.db or "sqlite",
                          "best_rate": best, "results": results}, indent=2))
    else:
        print(f"highest rate with no kernel and no application drops: {best} msg/s "
              f"({args.workers} worker{'s' if args.workers > 1 else ''}, "
              f"{(args.db or 'sqlite').split(':')[0]})")


if __name__ == "__main__":
    main()
