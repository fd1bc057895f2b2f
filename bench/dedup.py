#!/usr/bin/env python3
"""The cost of the dedup window (``--dedup-window``): CPU per message, and the highest
rate the HEP collector takes without loss, with and without it.

    python bench/dedup.py cpu [-n 200000]
    python bench/dedup.py rate --db none [--rate 20000] [-n 100000]
    python bench/dedup.py rate --db postgresql://postgres@127.0.0.1/hepbench --find-max

Traffic: ``sipcaptool.testing.pcapgen.realistic_messages`` (calls, registrations,
OPTIONS; about 600 bytes of SIP each, each with its own Call-ID), every message seen by
two agents: capture id 2001 from 127.0.0.1 and 2002 from 127.0.0.2, 1 ms apart, so
half of what arrives is a copy.

``cpu``: in this process, ``Pipeline.submit`` (parse and row; ``--db none``, so nothing
is written) of every copy, and ``Dedup.duplicate`` alone, timed with
``time.process_time`` (the messages frozen out of the garbage collector's work, as
short-lived messages are in a collector); with the window off and on (500 ms), for
traffic where every message has a copy (two agents) and where none has (one agent).
Prints µs per message, the best of ``--repeat`` interleaved runs.

``rate``: ``sipcaptool hep`` is started (``--rcvbuf 4M``: the collector's own pace, not
a buffer absorbing a burst) with and without ``--dedup-window 500``; the two agents send
N datagrams in all at the given rate (datagrams/s, both agents together). Lost =
sent - received (the collector's ``messages``; copies not stored are received). Also
the receiving process's CPU time per datagram (/proc/PID/stat), which a machine busy
with other work changes far less than the rate the collector keeps pace with. With
``--find-max`` the rate steps up until a run loses something, for both, and the ratio of
the highest zero-loss rates is printed. ``--agents 1`` sends every message once (the
window's cost where it finds nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.config import Settings  # noqa: E402
from sipcaptool.dedup import Dedup  # noqa: E402
from sipcaptool.encode.hep import encode_hep3  # noqa: E402
from sipcaptool.pipeline import Pipeline  # noqa: E402
from sipcaptool.record import AF_INET, PROTO_UDP, CapturedMessage  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.testing.pcapgen import realistic_messages  # noqa: E402

AGENTS = (("127.0.0.1", 2001), ("127.0.0.2", 2002))


def copies(n: int, agents: int = 2) -> list[CapturedMessage]:
    """``n`` messages in all: each distinct message once per agent (1 ms apart)."""
    out: list[CapturedMessage] = []
    for i, (ts, (src, sport, dst, dport, payload)) in enumerate(realistic_messages(n // agents)):
        payload = payload.replace(b"Call-ID: ", b"Call-ID: dd%d-" % i, 1)
        for k in range(agents):
            ip, node = AGENTS[k]
            out.append(CapturedMessage(ts + k * 1000, src, sport, dst, dport, PROTO_UDP,
                                       AF_INET, payload, node_id=node, capture_point=ip))
    return out


# ------------------------------------------------------------------------------- cpu

def _frozen() -> None:
    """The test messages are kept for the whole run; in a collector they live for one
    message. Frozen, the garbage collector leaves them out, as it would in a collector."""
    gc.collect()
    gc.freeze()


def _pipeline_us(msgs: list[CapturedMessage], window: int) -> float:
    cli: dict[str, object] = {"db_url": "none", "dedup_window": window}
    p = Pipeline(Settings.load(cli=cli, env={}), Stats(), background=False, use_spool=False)
    _frozen()
    t0 = time.process_time()
    for m in msgs:
        p.submit(m)
    t = time.process_time() - t0
    p.close()
    return 1e6 * t / len(msgs)


def _dedup_us(msgs: list[CapturedMessage]) -> float:
    d = Dedup(500, 100_000, Stats())
    _frozen()
    t0 = time.process_time()
    for m in msgs:
        d.duplicate(m)
    return 1e6 * (time.process_time() - t0) / len(msgs)


def cpu(n: int, repeat: int) -> dict[str, float]:
    two = copies(n, 2)
    one = copies(n, 1)
    runs: dict[str, Callable[[], float]] = {
        "pipeline, 2 agents, window off": lambda: _pipeline_us(two, 0),
        "pipeline, 2 agents, window 500 ms": lambda: _pipeline_us(two, 500),
        "pipeline, 1 agent, window off": lambda: _pipeline_us(one, 0),
        "pipeline, 1 agent, window 500 ms": lambda: _pipeline_us(one, 500),
        "Dedup.duplicate alone, 2 agents": lambda: _dedup_us(two),
        "Dedup.duplicate alone, 1 agent": lambda: _dedup_us(one)}
    best: dict[str, float] = {}
    for _ in range(repeat):  # interleaved, the best of each: the machine's load varies
        for name, f in runs.items():
            us = f()
            best[name] = round(min(us, best.get(name, us)), 2)
    return best


# ------------------------------------------------------------------------------ rate

class Collector:
    def __init__(self, db: str, window: int, rcvbuf: str) -> None:
        cmd = [sys.executable, "-m", "sipcaptool", "hep", "--listen", "udp:127.0.0.1:0",
               "--db", db, "--json", "--rcvbuf", rcvbuf, "--control", "none"]
        if window:
            cmd += ["--dedup-window", str(window)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.port: int | None = None
        self.err: list[str] = []
        ready = threading.Event()

        def read_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.err.append(line.rstrip("\n"))
                if "listening on udp:" in line and self.port is None:
                    self.port = int(line.split("listening on udp:", 1)[1].split()[0]
                                    .rsplit(":", 1)[1])
                    ready.set()
            ready.set()

        threading.Thread(target=read_err, daemon=True).start()
        if not ready.wait(60) or self.port is None:
            self.proc.kill()
            raise SystemExit("collector did not start:\n" + "\n".join(self.err))

    def rx_queue(self) -> int:
        hexport = f":{self.port:04X}"
        with open("/proc/net/udp") as f:
            next(f)
            return sum(int(p[4].split(":")[1], 16) for p in (line.split() for line in f)
                       if p[1].endswith(hexport))

    def wait_idle(self) -> None:
        end = time.monotonic() + 120
        since = None
        while time.monotonic() < end:
            if self.rx_queue():
                since = None
            else:
                since = since or time.monotonic()
                if time.monotonic() - since >= 0.5:
                    return
            time.sleep(0.02)

    def cpu_seconds(self) -> float:
        """CPU time the collector's process has used (user + system): /proc/PID/stat."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=300)
        return dict(json.loads(out))


def send(datagrams: list[tuple[int, bytes]], port: int, rate: float) -> float:
    socks = []
    for ip, _node in AGENTS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((ip, 0))
        s.connect(("127.0.0.1", port))
        socks.append(s.send)
    n = len(datagrams)
    sent = 0
    t0 = time.perf_counter()
    while sent < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            k, d = datagrams[sent]
            socks[k](d)
            sent += 1
        ahead = t0 + sent / rate - time.perf_counter()
        if ahead > 0.0005:
            time.sleep(min(ahead, 0.001))
    return time.perf_counter() - t0


def run(db: str, n: int, rate: float, window: int, rcvbuf: str = "4M",
        agents: int = 2) -> dict[str, Any]:
    msgs = copies(n, agents)
    datagrams = [(i % agents, encode_hep3(m, capture_id=m.node_id or 0))
                 for i, m in enumerate(msgs)]
    c = Collector(db, window, rcvbuf)
    try:
        cpu0 = c.cpu_seconds()
        t0 = time.perf_counter()
        secs = send(datagrams, c.port or 0, rate)
        c.wait_idle()
        busy = time.perf_counter() - t0 - 0.5  # wait_idle's quiet half second
        cpu = c.cpu_seconds() - cpu0
        s = c.stop()
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
    received = int(s.get("messages") or 0)
    return {"window_ms": window, "rate": rate, "sent": n, "send_rate": round(n / secs),
            "received": received, "lost": n - received,
            # what the collector kept pace with: all it read, over the time until its
            # socket was empty (below the send rate when the buffer held a backlog)
            "read_per_s": round(received / busy) if busy > 0 else None,
            # CPU of the receiving process per datagram read (contention on a busy
            # machine changes it far less than the rate it keeps pace with)
            "cpu_us_per_msg": round(1e6 * cpu / received, 1) if received else None,
            "stored": s.get("stored_total"), "dedup": sum((s.get("dedup") or {}).values()),
            "kernel_drops": (s.get("kernel") or {}).get("udp-drops", 0)}


def find_max(db: str, n: int, window: int, start: float, step: float, top: float,
             rcvbuf: str, agents: int) -> float:
    best = 0.0
    rate = start
    while rate <= top:
        r = run(db, n, rate, window, rcvbuf, agents)
        print(json.dumps(r), flush=True)
        if r["lost"]:
            break
        best = rate
        rate += step
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("-n", type=int, default=200_000)
    c.add_argument("--repeat", type=int, default=3)
    r = sub.add_parser("rate")
    r.add_argument("--db", default="none")
    r.add_argument("-n", type=int, default=100_000)
    r.add_argument("--rate", type=float, default=20_000)
    r.add_argument("--window", type=int, default=500)
    r.add_argument("--agents", type=int, choices=(1, 2), default=2,
                   help="2: every message sent by both agents [default]; 1: no copies")
    r.add_argument("--find-max", action="store_true")
    r.add_argument("--rcvbuf", default="4M",
                   help="the collector's --rcvbuf [4M: its own pace, no buffered burst]")
    r.add_argument("--start", type=float, default=10_000)
    r.add_argument("--step", type=float, default=2_500)
    r.add_argument("--max", type=float, default=60_000)
    args = ap.parse_args(argv)
    if args.what == "cpu":
        for name, us in cpu(args.n, args.repeat).items():
            print(f"{name:<36} {us:6.2f} µs/message")
        return 0
    if not args.find_max:
        for w in (0, args.window):
            print(json.dumps(run(args.db, args.n, args.rate, w, args.rcvbuf, args.agents)),
                  flush=True)
        return 0
    off = find_max(args.db, args.n, 0, args.start, args.step, args.max, args.rcvbuf,
                   args.agents)
    on = find_max(args.db, args.n, args.window, args.start, args.step, args.max, args.rcvbuf,
                  args.agents)
    print(f"highest zero-loss rate: {off:.0f}/s without the window, {on:.0f}/s with "
          f"{args.window} ms; ratio {on / off if off else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
