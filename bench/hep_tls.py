#!/usr/bin/env python3
"""Agent -> collector over plain TCP and over TLS, measured in one run: the zero-loss
rate of each and their ratio.

    python bench/hep_tls.py                    # 20,000 messages, 3 rounds, --db none
    python bench/hep_tls.py -n 50000 --rounds 5
    python bench/hep_tls.py --db postgresql://postgres@127.0.0.1/hepbench

Each round starts ``sipcaptool hep --listen tcp:127.0.0.1:PORT`` (then ``tls:`` with a
certificate made for the run with openssl) with ``--count N``, so the collector stops
once it has read N HEP packets, and sends N distinct SIP messages (calls,
registrations, OPTIONS of ``realistic_messages``, about 600 bytes each, an auth key) from
this process through the agent's sender (``HepSender``, what ``live``/``replay
--hep-to`` use) as fast as it takes them. Over TCP nothing is dropped: a collector that
cannot keep up slows the agent down (its connection's buffers fill), so the rate at
which all N reach the collector -- from the first message handed to the sender until
the collector's packet counter (polled on its ``--metrics`` every 20 ms) reaches N,
its summary at the end checked to hold N packets and N messages, nothing dropped or
malformed -- is the zero-loss rate of the path. Transports alternate within a round
and the median of the rounds is reported, since the machines this runs on differ from
day to day: the ratio TLS / TCP is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tls_certs import make_certs  # noqa: E402

from sipcaptool.record import AF_INET, PROTO_UDP, CapturedMessage  # noqa: E402
from sipcaptool.senders.hep import HepSender  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.testing.pcapgen import realistic_messages  # noqa: E402

KEY = "bench-key"


def messages(n: int) -> list[CapturedMessage]:
    out = []
    for i, (ts, (src, sport, dst, dport, payload)) in enumerate(realistic_messages(n)):
        payload = payload.replace(b"Call-ID: ", b"Call-ID: b%d-" % i, 1)
        out.append(CapturedMessage(ts, src, sport, dst, dport, PROTO_UDP, AF_INET, payload))
    return out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _packets(mport: int) -> int:
    try:
        with socket.create_connection(("127.0.0.1", mport), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return -1  # (the collector has stopped: it had them all)
    for line in data.decode().splitlines():
        if line.startswith("sipcaptool_packets_total "):
            return int(float(line.split()[1]))
    return 0


def _wait_count(mport: int, n: int, t0: float) -> float:
    """Seconds from ``t0`` until the collector's packet counter reaches ``n``."""
    while True:
        got = _packets(mport)
        if got < 0 or got >= n:
            return time.perf_counter() - t0
        time.sleep(0.02)


def one(transport: str, msgs: list[CapturedMessage], db: str, certs: object) -> dict:
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "sipcaptool", "hep", "--listen",
           f"{transport}:127.0.0.1:{port}", "--db", db, "--count", str(len(msgs)),
           "--json", "--control", "none", "--auth-key", KEY,
           "--metrics", f"127.0.0.1:{mport}"]
    if transport == "tls":
        cmd += ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key]  # type: ignore[attr-defined]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stderr is not None
    line = ""
    while "listening on" not in line:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("collector did not start: " + proc.stderr.read())
    stats = Stats()
    snd = HepSender([f"{transport}:127.0.0.1:{port}"], stats, auth_key=KEY,
                    tls_ca=certs.ca if transport == "tls" else None)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    send = snd.send
    for m in msgs:
        send(m)
    snd.close()
    t_agent = time.perf_counter() - t0
    # the moment the collector has read all N: its packet counter, polled on /metrics
    t_all = _wait_count(mport, len(msgs), t0)
    out, err = proc.communicate(timeout=600)
    summary = json.loads(out)
    n = len(msgs)
    ok = (summary["packets"] == n and summary["messages"] == n and not summary["dropped"]
          and not summary["malformed"] and stats[f"hep_out:sent_{transport}"] == n)
    return {"transport": transport, "n": n, "ok": ok, "agent_s": round(t_agent, 3),
            "total_s": round(t_all, 3), "rate": round(n / t_all),
            "collector": {"packets": summary["packets"], "messages": summary["messages"],
                          "dropped": summary["dropped"], "malformed": summary["malformed"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="messages per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="none", help="the collector's --db [default: none]")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    msgs = messages(args.n)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        certs = make_certs(d)
        for r in range(args.rounds):
            for t in (("tcp", "tls") if r % 2 == 0 else ("tls", "tcp")):
                res = one(t, msgs, args.db, certs)
                runs.append(res)
                if not args.json:
                    print(f"round {r + 1} {t}: {res['rate']:>7,} msg/s "
                          f"(agent done {res['agent_s']} s, all at the collector "
                          f"{res['total_s']} s){'' if res['ok'] else '  LOSS: ' + str(res)}",
                          flush=True)
    tcp = statistics.median(x["rate"] for x in runs if x["transport"] == "tcp")
    tls = statistics.median(x["rate"] for x in runs if x["transport"] == "tls")
    result = {"n": args.n, "rounds": args.rounds, "db": args.db,
              "zero_loss_rate_tcp": round(tcp), "zero_loss_rate_tls": round(tls),
              "ratio_tls_tcp": round(tls / tcp, 3),
              "all_zero_loss": all(x["ok"] for x in runs), "runs": runs}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"zero-loss rate, median of {args.rounds}: TCP {tcp:,.0f} msg/s, "
              f"TLS {tls:,.0f} msg/s, TLS/TCP {tls / tcp:.2f}"
              + ("" if result["all_zero_loss"] else "  (some runs lost messages)"))


if __name__ == "__main__":
    main()
