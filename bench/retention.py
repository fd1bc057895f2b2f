"""db prune on one big table, while a collector keeps writing: how fast do the old rows
go, and how long does a writer's batch take meanwhile?

For each database a fresh ``sip_capture`` (made by ``db init``, so with its indexes) is
filled with N old rows (40 days ago) and N/4 rows of today, bulk-loaded with the
adapter's fast path. Then a writer thread writes batches of 200 rows of today through
another connection, first alone (the baseline) and then while
``retention.delete_rows_before`` removes the old rows in batches of ``--batch-rows``.
It prints the rows deleted per second, and the writer's median and worst batch time
alone and during the prune; a long lock would show as a worst time of seconds.
Figures are ratios within one run (machines here differ by up to 3x from day to day).

    python bench/retention.py                        # 200,000 old rows, SQLite, MariaDB, PostgreSQL
    python bench/retention.py -n 50000 --db sqlite   # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipcaptool.record import SIP_COLUMNS  # noqa: E402
from sipcaptool.store import open_adapter  # noqa: E402
from sipcaptool.store.retention import delete_rows_before, ensure_days  # noqa: E402

SERVERS = {"mysql": os.environ.get("SIPCAPTOOL_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
           "postgresql": os.environ.get("SIPCAPTOOL_TEST_PG",
                                        "postgresql://postgres@127.0.0.1:5432")}
TODAY = dt.datetime.now(dt.UTC).date()
MSG = (b"INVITE sip:1001@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"
       b"\r\nCall-ID: bench@10.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n") * 4


def row(i: int, date: str) -> tuple[object, ...]:
    out: list[object] = []
    for name, kind, width in SIP_COLUMNS:
        if kind == "datetime":
            out.append(date)
        elif kind in ("bigint", "int"):
            out.append(i)
        elif kind == "blob":
            out.append(MSG)
        else:
            out.append(f"{name}-{i % 1000}"[:width])
    return tuple(out)


def stamp(day: dt.date, i: int) -> str:
    t = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(
        seconds=i % 86400)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def load(url: str, n_old: int, n_new: int) -> None:
    a = open_adapter(url)
    a.create_database()
    a.connect()
    try:
        ensure_days(a, ["sip_capture"], aux=False)
        old_day = TODAY - dt.timedelta(days=40)
        for start in range(0, n_old, 5000):
            a.write("sip_capture", "sip", a.format_batch(
                "sip", [row(i, stamp(old_day, i)) for i in range(start, min(n_old, start + 5000))]))
        for start in range(0, n_new, 5000):
            a.write("sip_capture", "sip", a.format_batch(
                "sip", [row(i, stamp(TODAY, i)) for i in range(start, min(n_new, start + 5000))]))
    finally:
        a.close()


def writer_times(url: str, stop: threading.Event, out: list[float]) -> None:
    w = open_adapter(url)
    w.connect()
    try:
        i = 0
        while not stop.is_set():
            batch = w.format_batch("sip", [row(i + k, stamp(TODAY, i + k)) for k in range(200)])
            t0 = time.perf_counter()
            w.write("sip_capture", "sip", batch)
            out.append(time.perf_counter() - t0)
            i += 200
    finally:
        w.close()


def run(dialect: str, n: int, batch_rows: int) -> dict[str, float]:
    name = f"sipcaptool_bench_{uuid.uuid4().hex[:8]}"
    tmp = None
    if dialect == "sqlite":
        tmp = tempfile.mkdtemp()
        url = f"sqlite:///{tmp}/bench.db"
    else:
        url = SERVERS[dialect].rstrip("/") + "/" + name
    try:
        load(url, n, n // 4)
        # the writer alone
        alone: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=writer_times, args=(url, stop, alone))
        t.start()
        time.sleep(3)
        stop.set()
        t.join()
        # the writer while the old rows go
        during: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=writer_times, args=(url, stop, during))
        t.start()
        a = open_adapter(url)
        a.connect()
        try:
            if dialect == "mysql":
                a.execute_ddl(["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"])
            t0 = time.perf_counter()
            removed = delete_rows_before(a, "sip_capture", TODAY - dt.timedelta(days=14),
                                         batch_rows=batch_rows)
            took = time.perf_counter() - t0
        finally:
            a.close()
            stop.set()
            t.join()
        deleted = removed[0].rows if removed else 0
        assert deleted == n, (deleted, n)
        return {"rows_per_s": deleted / took, "seconds": took,
                "alone_median_ms": 1000 * statistics.median(alone),
                "alone_max_ms": 1000 * max(alone),
                "during_median_ms": 1000 * statistics.median(during),
                "during_max_ms": 1000 * max(during), "writer_batches": len(during)}
    finally:
        if dialect == "sqlite" and tmp:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        elif dialect == "mysql":
            import pymysql
            c = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
            c.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
            c.close()
        elif dialect == "postgresql":
            import psycopg2
            c = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
            c.autocommit = True
            c.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="old rows to delete")
    ap.add_argument("--batch-rows", type=int, default=5000)
    ap.add_argument("--db", action="append", choices=["sqlite", "mysql", "postgresql"])
    args = ap.parse_args()
    print(f"{args.n} old rows, DELETE batches of {args.batch_rows}; a writer writes batches "
          "of 200 rows meanwhile")
    print(f"{'db':<11} {'rows/s':>9} {'s':>6} {'write alone ms':>16} {'write during ms':>17}"
          f" {'batches':>8}")
    for d in args.db or ["sqlite", "mysql", "postgresql"]:
        r = run(d, args.n, args.batch_rows)
        print(f"{d:<11} {r['rows_per_s']:>9.0f} {r['seconds']:>6.1f} "
              f"{r['alone_median_ms']:>7.1f} (max {r['alone_max_ms']:>5.0f}) "
              f"{r['during_median_ms']:>7.1f} (max {r['during_max_ms']:>5.0f}) "
              f"{r['writer_batches']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
