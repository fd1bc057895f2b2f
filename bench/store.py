"""Storage throughput: rows/s into each database through the batching Writer.

Generates N realistic sip_capture rows (the record layout, ~600-byte INVITE/200/ACK/BYE
messages, a distinct Call-ID every 4 rows), then for each database times
``Writer.add()`` of every row plus ``close()`` (everything committed), with the writer
process (``--foreground`` for the in-process path too). Each run uses a fresh database
(``sipcaptool_bench_<pid>`` on the servers, a temporary file for SQLite) which is dropped
afterwards, so tables start empty with all their indexes.

    python bench/store.py                 # 100,000 rows into SQLite, MariaDB, PostgreSQL
    python bench/store.py -n 20000 --db sqlite --foreground
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipcaptool.errors import StoreError  # noqa: E402
from sipcaptool.record import SIP_COLUMNS  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.store.schema import init_db  # noqa: E402
from sipcaptool.store.url import parse_db_url  # noqa: E402
from sipcaptool.store.writer import Writer  # noqa: E402

SERVERS = {
    "sqlite": None,
    "mysql": os.environ.get("SIPCAPTOOL_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("SIPCAPTOOL_TEST_PG", "postgresql://postgres@127.0.0.1:5432"),
}

_STEPS = [("INVITE", "", 1), ("200", "OK", 2), ("ACK", "", 1), ("BYE", "", 1)]


def make_rows(n: int, seed: int = 1) -> list[tuple]:
    rnd = random.Random(seed)
    t0 = 1_767_225_600_000_000  # 2026-01-01 00:00:00 UTC
    names = [c[0] for c in SIP_COLUMNS]
    rows = []
    call = None
    for i in range(n):
        step = i % 4
        if step == 0:
            call = dict(
                callid=f"{rnd.getrandbits(64):016x}-{i}@10.{rnd.randrange(256)}.0.1",
                caller=f"+4930{rnd.randrange(10**7):07d}",
                callee=f"+4989{rnd.randrange(10**7):07d}",
                ftag=f"{rnd.getrandbits(32):08x}", ttag=f"{rnd.getrandbits(32):08x}",
                src=f"10.0.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                dst=f"192.168.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
            )
        method, reason, typ = _STEPS[step]
        ts = t0 + i * 1000
        branch = f"z9hG4bK{rnd.getrandbits(48):012x}"
        start = (f"SIP/2.0 {method} {reason}" if typ == 2
                 else f"{method} sip:{call['callee']}@{call['dst']} SIP/2.0")
        msg = (f"{start}\r\n"
               f"Via: SIP/2.0/UDP {call['src']}:5060;branch={branch};rport\r\n"
               f"Max-Forwards: 70\r\n"
               f"From: \"Caller\" <sip:{call['caller']}@{call['src']}>;tag={call['ftag']}\r\n"
               f"To: <sip:{call['callee']}@{call['dst']}>"
               f"{';tag=' + call['ttag'] if step else ''}\r\n"
               f"Call-ID: {call['callid']}\r\n"
               f"CSeq: {1 if step < 3 else 2} {method if typ == 1 else 'INVITE'}\r\n"
               f"Contact: <sip:{call['caller']}@{call['src']}:5060>\r\n"
               f"User-Agent: bench-phone/1.0\r\n"
               f"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: 180\r\n\r\n"
               "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
               "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n").encode()
        values = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts // 1_000_000)),
            "micro_ts": ts, "method": method, "reply_reason": reason,
            "ruri": "" if typ == 2 else f"sip:{call['callee']}@{call['dst']}",
            "ruri_user": "" if typ == 2 else call["callee"],
            "ruri_domain": "" if typ == 2 else call["dst"],
            "from_user": call["caller"], "from_domain": call["src"], "from_tag": call["ftag"],
            "to_user": call["callee"], "to_domain": call["dst"],
            "to_tag": call["ttag"] if step else "", "contact_user": call["caller"],
            "callid": call["callid"], "via_1": f"SIP/2.0/UDP {call['src']}:5060;branch={branch}",
            "via_1_branch": branch, "cseq": f"1 {method}", "content_type": "application/sdp",
            "user_agent": "bench-phone/1.0", "source_ip": call["src"], "source_port": 5060,
            "destination_ip": call["dst"], "destination_port": 5060,
            "contact_ip": call["src"], "contact_port": 5060, "proto": 1, "family": 2,
            "type": typ, "node": "homer01:2001", "correlation_id": call["callid"], "msg": msg,
        }
        rows.append(tuple(values.get(nm, 0 if k in ("int", "bigint") else "")
                          for nm, (_, k, _) in zip(names, SIP_COLUMNS, strict=False)))
    return rows


def _fresh_db(dialect: str, tmp: str) -> tuple[str, callable]:
    if dialect == "sqlite":
        path = os.path.join(tmp, f"bench-{time.monotonic_ns()}.db")
        return "sqlite:///" + path, lambda: None
    name = f"sipcaptool_bench_{os.getpid()}"
    url = SERVERS[dialect].rstrip("/") + "/" + name
    u = parse_db_url(url)

    def drop():
        if dialect == "mysql":
            import pymysql
            c = pymysql.connect(host=u.host, port=u.port, user=u.user or "root",
                                password=u.password)
            with c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            import psycopg2
            kw = dict(host=u.host, port=u.port, user=u.user or "postgres", dbname="postgres")
            if u.password:
                kw["password"] = u.password
            c = psycopg2.connect(**kw)
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.close()
    drop()
    return url, drop


def run(dialect: str, rows: list[tuple], background: bool, batch_size: int,
        tmp: str) -> tuple[float, Stats]:
    url, drop = _fresh_db(dialect, tmp)
    try:
        init_db(url, ["sip_capture"], aux=False)
        st = Stats()
        w = Writer(url, st, batch_size=batch_size, background=background)
        t = time.perf_counter()
        for r in rows:
            w.add("sip_capture", "sip", r)
        w.close()
        dt = time.perf_counter() - t
        return len(rows) / dt, st
    finally:
        drop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rows", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--db", action="append", choices=list(SERVERS),
                    help="database to measure (repeatable; default: all)")
    ap.add_argument("--foreground", action="store_true",
                    help="also measure the in-process writer")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    rows = make_rows(args.rows)
    avg = sum(len(r[[c[0] for c in SIP_COLUMNS].index("msg")]) for r in rows) / len(rows)
    print(f"{len(rows):,} rows (msg {avg:.0f} bytes on average) made in "
          f"{time.perf_counter() - t:.1f} s; batch size {args.batch_size}; "
          f"{os.cpu_count()} CPUs")
    modes = [True, False] if args.foreground else [True]
    print(f"{'database':<12} {'writer':<11} {'rows/s':>10} {'stored':>10} {'batches':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in (args.db or list(SERVERS)):
            for bg in modes:
                try:
                    rate, st = run(dialect, rows, bg, args.batch_size, tmp)
                except StoreError as e:
                    print(f"{dialect:<12} {'process' if bg else 'in-process':<11} "
                          f"unavailable: {e}")
                    continue
                print(f"{dialect:<12} {'process' if bg else 'in-process':<11} {rate:>10,.0f} "
                      f"{st['stored:sip_capture']:>10,} {st['db:batches']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
