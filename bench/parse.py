#!/usr/bin/env python3
"""Per-stage cost of the capture hot path, in µs per message.

Builds N realistic SIP messages (the mix bench/replay.py stores: calls, registrations,
OPTIONS) as Ethernet/IPv4/UDP frames in memory and times each stage on its own, in this
process, taking the best of ``--repeat`` runs of CPU time (the machine is shared: CPU
time and the best run are the least disturbed by other work):

* decode   PacketDecoder.decode: frame -> CapturedMessage
* hep      decode.hep.decode_datagram + to_message for the same messages as HEPv3
* parse    decode.sip.parse_sip
* row      row.sip_row
* format   the adapters' format_batch over batches of --batch rows (postgresql, mysql)
* submit   Pipeline.submit (parse + row + route + Writer.add), rows formatted as for
           PostgreSQL but not written (the writer process is left out)

    python bench/parse.py                 # 50,000 messages, best of 5
    python bench/parse.py -n 200000 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.config import Settings  # noqa: E402
from sipcaptool.decode.packet import PacketDecoder  # noqa: E402
from sipcaptool.decode.sip import parse_sip  # noqa: E402
from sipcaptool.row import RowOptions, sip_row  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.testing.pcapgen import realistic_messages, udp4_frame  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _hep3(ts_us: int, src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    import ipaddress
    import struct

    from sipcaptool.decode import hep as h

    def chunk(t: int, data: bytes) -> bytes:
        return struct.pack("!HHH", 0, t, 6 + len(data)) + data

    body = (chunk(h.CHUNK_IP_FAMILY, b"\x02") + chunk(h.CHUNK_IP_PROTO, b"\x11")
            + chunk(h.CHUNK_SRC_IP4, ipaddress.IPv4Address(src).packed)
            + chunk(h.CHUNK_DST_IP4, ipaddress.IPv4Address(dst).packed)
            + chunk(h.CHUNK_SRC_PORT, struct.pack("!H", sport))
            + chunk(h.CHUNK_DST_PORT, struct.pack("!H", dport))
            + chunk(h.CHUNK_TIME_SEC, struct.pack("!I", ts_us // 1_000_000))
            + chunk(h.CHUNK_TIME_USEC, struct.pack("!I", ts_us % 1_000_000))
            + chunk(h.CHUNK_PROTO_TYPE, b"\x01") + chunk(h.CHUNK_CAPTURE_ID, struct.pack("!I", 2001))
            + chunk(h.CHUNK_PAYLOAD, payload))
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50_000, help="messages")
    ap.add_argument("--repeat", type=int, default=5, help="runs per stage; the best counts")
    ap.add_argument("--batch", type=int, default=2000, help="rows per formatted batch")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = ap.parse_args()
    n, repeat = args.n, args.repeat

    items = list(realistic_messages(n))
    frames = [(ts, udp4_frame(src, sport, dst, dport, m))
              for ts, (src, sport, dst, dport, m) in items]
    stats = Stats()
    decoder = PacketDecoder(1, stats)
    msgs = [m for ts, f in frames for m in decoder.decode(ts, f)]
    assert len(msgs) == n, (len(msgs), n)
    opts = RowOptions()
    sips = [parse_sip(m.payload) for m in msgs]
    rows = [sip_row(m, s, opts, stats) for m, s in zip(msgs, sips, strict=False)]
    results: dict[str, float] = {}

    def run_decode():
        dec = PacketDecoder(1, Stats()).decode
        for ts, f in frames:
            dec(ts, f)

    def run_parse():
        for m in msgs:
            parse_sip(m.payload)

    def run_row():
        for m, s in zip(msgs, sips, strict=False):
            sip_row(m, s, opts, stats)

    results["decode"] = _best(run_decode, repeat)
    try:
        from sipcaptool.decode import hep

        datagrams = [_hep3(ts, src, sport, dst, dport, m)
                     for ts, (src, sport, dst, dport, m) in items]

        def run_hep():
            dd = hep.decode_datagram
            for d in datagrams:
                for pkt in dd(d, now_us=0):
                    pkt.to_message(now_us=0)

        results["hep"] = _best(run_hep, repeat)
    except Exception as e:  # noqa: BLE001 - the figure is optional
        print(f"hep: not measured ({type(e).__name__}: {e})", file=sys.stderr)
    results["parse"] = _best(run_parse, repeat)
    results["row"] = _best(run_row, repeat)

    from sipcaptool.store import mysql as my_mod
    from sipcaptool.store import postgres as pg_mod

    b = args.batch
    batches = [rows[i:i + b] for i in range(0, n, b)]
    for name, fmt in (("format:postgresql", pg_mod.PostgresAdapter.format_batch),
                      ("format:mysql", my_mod.MysqlAdapter.format_batch)):
        def run_format(fmt=fmt):
            for batch in batches:
                fmt(None, "sip", batch)

        results[name] = _best(run_format, repeat)

    # the whole submit path into a writer that formats for PostgreSQL and discards
    from sipcaptool.pipeline import Pipeline

    class _FormatOnly:
        def __init__(self):
            self.buffers: dict = {}

        def add(self, table, kind, row):
            buf = self.buffers.get((table, kind))
            if buf is None:
                buf = self.buffers[(table, kind)] = []
            buf.append(row)
            if len(buf) >= b:
                pg_mod.PostgresAdapter.format_batch(None, kind, buf)
                del self.buffers[(table, kind)]

    def run_submit():
        pipe = Pipeline.__new__(Pipeline)
        Pipeline.__init__(pipe, _none_settings(), Stats(), background=False)
        sink = _FormatOnly()
        for t in pipe.targets:
            t.writer = sink
        if not pipe.targets:
            from sipcaptool.pipeline import _Target
            from sipcaptool.store.router import Router
            pipe.targets = [_Target(Router(["sip_capture"], "rand", "call_id"), sink,
                                    "call_id", "rand", 1)]
        if hasattr(pipe, "single_target"):
            pipe.single_target = len(pipe.targets) == 1
        submit = pipe.submit
        for m in msgs:
            submit(m)

    results["submit+format:postgresql"] = _best(run_submit, repeat)

    per = {k: round(v / n * 1e6, 2) for k, v in results.items()}
    if args.json:
        print(json.dumps({"messages": n, "repeat": repeat, "us_per_message": per}))
    else:
        print(f"{n} messages, best of {repeat} runs, µs per message:")
        for k, v in per.items():
            print(f"  {k:26} {v:7.2f}   ({1e6 / v if v else 0:>9,.0f} msg/s)")
    return 0


def _none_settings() -> Settings:
    """The default settings with the database set to 'none'."""
    return Settings.load(cli={"db_url": "none"}, env={})


if __name__ == "__main__":
    sys.exit(main())
