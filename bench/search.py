"""Search, flow and export on a big table: are they fast enough?

Generates a sip_capture table of N rows (default 5,000,000) of realistic traffic --
calls over 24 hours between 20,000 users: answered calls (INVITE, 100, 180, 200, ACK,
BYE, 200), busy calls (INVITE, 100, 486, ACK) and challenged registrations (REGISTER,
401, REGISTER, 200), every tenth call with a b-leg naming it in X-CID. The rows are made
by the project's row builder (``row.sip_row`` on parsed messages, once per message
kind, then the per-call values put in) and bulk-loaded with each adapter's fast path
(``format_batch`` + ``write``: executemany, LOAD DATA LOCAL, COPY) into a fresh database
created by ``db init`` (so with its indexes). Then it times, on each database:

* search by Call-ID (``find_calls``, legs depth 1 as ``sipcaptool search`` does);
* search by user over a 1-hour window;
* flow of one call (``load_calls`` of one Call-ID);
* export of 1,000 calls to pcap (``load_calls`` + ``sipcaptool.export.export_messages``),

each the median of several runs with different values, connections included, and prints
a table with the targets of issue 12.

    python bench/search.py                         # 5,000,000 rows, SQLite, MariaDB, PostgreSQL
    python bench/search.py -n 200000 --db sqlite   # a quick run
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipcaptool.config import Settings  # noqa: E402
from sipcaptool.decode.sip import parse_sip  # noqa: E402
from sipcaptool.record import SIP_COLUMN_NAMES, CapturedMessage  # noqa: E402
from sipcaptool.row import RowOptions, format_date, sip_row  # noqa: E402
from sipcaptool.store import open_adapter  # noqa: E402
from sipcaptool.store.schema import init_db  # noqa: E402
from sipcaptool.store.url import parse_db_url  # noqa: E402

SERVERS = {
    "sqlite": None,
    "mysql": os.environ.get("SIPCAPTOOL_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("SIPCAPTOOL_TEST_PG", "postgresql://postgres@127.0.0.1:5432"),
}
T0 = 1_767_225_600_000_000          # 2026-01-01 00:00:00 UTC
DAY_US = 86_400_000_000
TARGETS = {"search by Call-ID": 0.050, "search by user, 1 hour": 0.500,
           "flow of one call": 0.200, "export 1,000 calls to pcap": 5.0}

# -- rows --------------------------------------------------------------------------------

# one template per message kind, with markers the generator replaces per call
CID, FU, TU, FT, TT, BR, AIP, BIP, XCID = ("CIDMARK", "FUSRMARK", "TUSRMARK", "FTAGMARK",
                                            "TTAGMARK", "BRMARK", "10.255.255.1",
                                            "10.255.255.2", "XCIDMARK")
SDP = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def _req(method: str, cseq: str, *, ruri: str, to_tag: bool = False, body: str = "",
         extra: str = "") -> str:
    tt = f";tag={TT}" if to_tag else ""
    h = (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {AIP}:5060;branch=z9hG4bK{BR}{method[:3]}\r\n"
         f"Max-Forwards: 70\r\nFrom: \"{FU}\" <sip:{FU}@example.com>;tag={FT}\r\n"
         f"To: <sip:{TU}@example.com>{tt}\r\nCall-ID: {CID}\r\nCSeq: {cseq}\r\n"
         f"Contact: <sip:{FU}@{AIP}:5060>\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15\r\n{extra}")
    if body:
        h += "Content-Type: application/sdp\r\n"
    return h + f"Content-Length: {len(body)}\r\n\r\n{body}"


def _resp(code: str, reason: str, cseq: str, *, to_tag: bool = True, body: str = "",
          extra: str = "") -> str:
    tt = f";tag={TT}" if to_tag else ""
    h = (f"SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP {AIP}:5060;branch=z9hG4bK{BR}\r\n"
         f"From: \"{FU}\" <sip:{FU}@example.com>;tag={FT}\r\n"
         f"To: <sip:{TU}@example.com>{tt}\r\nCall-ID: {CID}\r\nCSeq: {cseq}\r\n"
         f"Contact: <sip:{TU}@{BIP}:5060>\r\nServer: Asterisk PBX 18.10.0\r\n{extra}")
    if body:
        h += "Content-Type: application/sdp\r\n"
    return h + f"Content-Length: {len(body)}\r\n\r\n{body}"


RURI = f"sip:{TU}@example.com;user=phone"
AUTH = (f'Authorization: Digest username="{FU}", realm="example.com", nonce="5f1b3c", '
        f'uri="sip:example.com", response="0123456789abcdef0123456789abcdef", '
        'algorithm=MD5\r\n')
# (offset µs from the call's start, a->b?, text); BYE offsets are moved by the duration
ANSWERED = [
    (0, True, _req("INVITE", "1 INVITE", ruri=RURI, body=SDP.format(ip=AIP))),
    (2_000, False, _resp("100", "Trying", "1 INVITE", to_tag=False)),
    (60_000, False, _resp("180", "Ringing", "1 INVITE")),
    (4_000_000, False, _resp("200", "OK", "1 INVITE", body=SDP.format(ip=BIP))),
    (4_030_000, True, _req("ACK", "1 ACK", ruri=RURI, to_tag=True)),
    (-1, True, _req("BYE", "2 BYE", ruri=RURI, to_tag=True)),
    (-2, False, _resp("200", "OK", "2 BYE")),
]
BUSY = [
    (0, True, _req("INVITE", "1 INVITE", ruri=RURI, body=SDP.format(ip=AIP))),
    (2_000, False, _resp("100", "Trying", "1 INVITE", to_tag=False)),
    (900_000, False, _resp("486", "Busy Here", "1 INVITE")),
    (930_000, True, _req("ACK", "1 ACK", ruri=RURI, to_tag=True)),
]
REGISTER = [
    (0, True, _req("REGISTER", "1 REGISTER", ruri="sip:example.com")),
    (1_500, False, _resp("401", "Unauthorized", "1 REGISTER",
                         extra='WWW-Authenticate: Digest realm="example.com", nonce="5f1b3c"\r\n')),
    (20_000, True, _req("REGISTER", "2 REGISTER", ruri="sip:example.com", extra=AUTH)),
    (22_000, False, _resp("200", "OK", "2 REGISTER")),
]
BLEG = [(off, ab, text.replace("User-Agent:", f"X-CID: {XCID}\r\nUser-Agent:"))
        for off, ab, text in ANSWERED]

COL = {name: i for i, name in enumerate(SIP_COLUMN_NAMES)}


def _templates(kind: list[tuple[int, bool, str]]) -> list[tuple[int, bool, list, bytes]]:
    opts = RowOptions(capture_node="homer01")
    out = []
    for off, ab, text in kind:
        payload = text.encode()
        src, dst = (AIP, BIP) if ab else (BIP, AIP)
        msg = CapturedMessage(ts_us=T0, src_ip=src, src_port=5060, dst_ip=dst, dst_port=5060,
                              proto=1, family=2, payload=payload)
        out.append((off, ab, list(sip_row(msg, parse_sip(payload), opts)), payload))
    return out


def generate(n: int, users: int = 20_000, seed: int = 1) -> Iterator[tuple]:
    """``n`` rows (SIP_COLUMN_NAMES order) of calls over 24 hours; dialogs in random
    start order, their messages in time order."""
    rnd = random.Random(seed)
    kinds = {"answered": _templates(ANSWERED), "busy": _templates(BUSY),
             "register": _templates(REGISTER), "bleg": _templates(BLEG)}
    text_cols = [COL[c] for c in ("ruri", "ruri_user", "from_user", "from_tag", "to_user",
                                  "to_tag", "contact_user", "auth_user", "callid",
                                  "callid_aleg", "via_1", "via_1_branch", "auth",
                                  "contact_ip", "correlation_id")]
    made = 0
    k = 0
    while made < n:
        k += 1
        r = rnd.random()
        kind = "answered" if r < 0.7 else "busy" if r < 0.85 else "register"
        start = T0 + rnd.randrange(DAY_US)
        caller = f"{100000 + rnd.randrange(users)}"
        callee = caller if kind == "register" else f"{100000 + rnd.randrange(users)}"
        a = f"10.{rnd.randrange(1, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        b = f"192.168.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        cid = f"{rnd.getrandbits(64):016x}{k:x}@{a}"
        dur = rnd.randrange(5, 600) * 1_000_000
        subs = {CID: cid, FU: caller, TU: callee, FT: f"{rnd.getrandbits(32):08x}",
                TT: f"{rnd.getrandbits(32):08x}", BR: f"{rnd.getrandbits(40):x}",
                AIP: a, BIP: b}
        dialogs = [(kinds[kind], subs, start)]
        if kind == "answered" and k % 10 == 0:
            bsubs = dict(subs)
            bsubs.update({CID: f"b{rnd.getrandbits(60):015x}@{b}", XCID: cid,
                          AIP: b, BIP: f"172.16.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                          FT: f"{rnd.getrandbits(32):08x}"})
            dialogs.append((kinds["bleg"], bsubs, start + 300))
        for templates, sub, t0 in dialogs:
            for off, ab, trow, payload in templates:
                if made >= n:
                    return
                ts = t0 + (off if off >= 0 else dur + (0 if off == -1 else 25_000))
                row = list(trow)
                for i in text_cols:
                    v = row[i]
                    if isinstance(v, str) and v:
                        for mark, val in sub.items():
                            if mark in v:
                                v = v.replace(mark, val)
                        row[i] = v
                m = payload
                for mark, val in sub.items():
                    m = m.replace(mark.encode(), val.encode())
                row[COL["msg"]] = m
                row[COL["date"]] = format_date(ts)
                row[COL["micro_ts"]] = ts
                src, dst = (sub[AIP], sub[BIP]) if ab else (sub[BIP], sub[AIP])
                row[COL["source_ip"]] = src
                row[COL["destination_ip"]] = dst
                yield tuple(row)
                made += 1


# -- databases ---------------------------------------------------------------------------

def fresh_db(dialect: str, tmp: str) -> tuple[str, Callable[[], None]]:
    """A new database URL and how to drop it."""
    if dialect == "sqlite":
        path = os.path.join(tmp, "search.db")
        return "sqlite:///" + path, lambda: None
    name = f"sipcaptool_bench_search_{os.getpid()}"
    server = SERVERS[dialect]
    assert server is not None
    url = server.rstrip("/") + "/" + name

    def drop() -> None:
        u = parse_db_url(url)
        if dialect == "mysql":
            import pymysql
            c = pymysql.connect(host=u.host, port=u.port, user=u.user or "root",
                                password=u.password or "", autocommit=True)
            with c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            c.close()
        else:
            import psycopg2
            c = psycopg2.connect(host=u.host, port=u.port, user=u.user or "postgres",
                                 dbname="postgres", password=u.password or None)
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.close()
    return url, drop


def load(url: str, n: int, users: int, batch: int = 20_000) -> tuple[float, list[tuple]]:
    """Create the tables (db init) and bulk-load n rows; returns the seconds and a sample
    of (callid, caller, micro_ts) of INVITEs for the queries."""
    init_db(url, ["sip_capture"], aux=False)
    ad = open_adapter(url)
    ad.connect()
    sample: list[tuple] = []
    rows: list[tuple] = []
    t = time.perf_counter()
    ci, fi, ti, mi = COL["callid"], COL["from_user"], COL["micro_ts"], COL["method"]
    ai = COL["callid_aleg"]
    every = max(1, n // 20_000)     # about 3,000 INVITEs to query with
    invites = 0
    try:
        for row in generate(n, users):
            rows.append(row)
            if row[mi] == "INVITE" and not row[ai]:
                invites += 1
                if invites % every == 0:
                    sample.append((row[ci], row[fi], row[ti]))
            if len(rows) >= batch:
                ad.write("sip_capture", "sip", ad.format_batch("sip", rows), rows=len(rows))
                rows = []
        if rows:
            ad.write("sip_capture", "sip", ad.format_batch("sip", rows), rows=len(rows))
        if ad.dialect == "postgresql":
            ad.execute_ddl(["ANALYZE sip_capture"])
        elif ad.dialect == "mysql":
            ad.execute_ddl(["ANALYZE TABLE sip_capture"])
        else:
            ad.execute_ddl(["ANALYZE"])
    finally:
        ad.close()
    return time.perf_counter() - t, sample


def timed(fn: Callable[[], object], runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench(dialect: str, n: int, users: int, runs: int, export_calls: int) -> dict[str, float]:
    from sipcaptool.query.calls import find_calls, load_calls
    from sipcaptool.query.filters import build_query

    with tempfile.TemporaryDirectory(prefix="sipcaptool-bench-") as tmp:
        url, drop = fresh_db(dialect, tmp)
        try:
            secs, sample = load(url, n, users)
            print(f"{dialect}: {n:,} rows loaded in {secs:.0f} s", file=sys.stderr)
            s = Settings.load(None, {"db_url": url})
            rnd = random.Random(7)
            picks = rnd.sample(sample, min(runs * 3, len(sample)))
            it = iter(picks * 3)

            def by_callid() -> None:
                cid = next(it)[0]
                calls = find_calls(s, build_query(call_id=cid), legs=1)
                assert [c.callid for c in calls] == [cid], (cid, calls)

            def by_user() -> None:
                _cid, user, ts = next(it)
                calls = find_calls(s, build_query(
                    user=user, since=f"@{ts // 1_000_000 - 1800}",
                    until=f"@{ts // 1_000_000 + 1800}"), legs=1)
                assert calls

            def flow() -> None:
                cid = next(it)[0]
                assert len(load_calls(s, [cid])) == 1

            res = {"search by Call-ID": timed(by_callid, runs),
                   "search by user, 1 hour": timed(by_user, runs),
                   "flow of one call": timed(flow, runs)}
            from sipcaptool.export import export_messages
            ids = [c for c, _u, _t in sample[:export_calls]]
            out = os.path.join(tmp, "calls.pcap")

            def export() -> None:
                calls = load_calls(s, ids)
                export_messages((m for c in calls for m in c.messages), out, "pcap",
                                force=True)
            res[f"export {len(ids):,} calls to pcap"] = timed(export, max(1, runs // 5))
            return res
        finally:
            drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rows", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=15, help="runs per query (median)")
    ap.add_argument("--export-calls", type=int, default=1000)
    ap.add_argument("--db", action="append", choices=list(SERVERS),
                    help="database(s) to run (default: all three)")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    for dialect in args.db or list(SERVERS):
        results[dialect] = bench(dialect, args.rows, args.users, args.runs,
                                 args.export_calls)
    names = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"\n{args.rows:,} rows, {args.users:,} users, 24 h; median of {args.runs} runs "
          "(connection included)\n")
    dbs = list(results)
    print("| operation | target | " + " | ".join(dbs) + " |")
    print("|---|---:|" + "---:|" * len(dbs))
    for name in names:
        target = TARGETS.get(name, TARGETS["export 1,000 calls to pcap"]
                             if name.startswith("export") else 0)
        cells = []
        for d in dbs:
            v = results[d].get(name)
            cells.append("—" if v is None else f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s")
        tgt = f"< {target * 1000:.0f} ms" if target < 1 else f"< {target:.0f} s"
        print(f"| {name} | {tgt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
