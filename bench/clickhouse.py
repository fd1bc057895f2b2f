#!/usr/bin/env python3
"""ClickHouse benchmarks, each measured against its reference in the same run (machines
here differ by up to 3x from day to day, so the figures that mean something are ratios).

    python bench/clickhouse.py hep        # zero-loss HEP rate: ClickHouse single, 2-shard
                                          # cluster, PostgreSQL (300,000 messages a step,
                                          # --rcvbuf 4M; the collector with the CPU
                                          # priority its systemd unit gives it; the three
                                          # take turns at each rate)
    python bench/clickhouse.py replay     # replay into ClickHouse vs --db none (and
                                          # with every message parsed by the capturing
                                          # process; the hand-over of rows alone: a
                                          # writer process that throws them away)
    python bench/clickhouse.py writes     # a cluster: through the Distributed table vs
                                          # straight to the shard of each row
    python bench/clickhouse.py lookups    # Call-ID and user-in-an-hour on 10,000,000 rows
    python bench/clickhouse.py size       # bytes on disk per message, per 1,000 msg/s a day

The ClickHouse servers are private ones started here (Debian's clickhouse-server 18.16,
tests/clickhouse_server.py: own config, data directory and ports), stopped at the end.
PostgreSQL is the local server (--pg). Messages are the project's realistic SIP
(``realistic_messages``: calls, registrations, OPTIONS; about 600 bytes each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from clickhouse_server import CLUSTER, ClickHouseGroup, wait_count  # noqa: E402
from hep_load import Collector, build_datagrams, count_rows, drop_table, send_paced  # noqa: E402

from sipcaptool.store import open_adapter  # noqa: E402
from sipcaptool.store.clickhouse import shard_of  # noqa: E402
from sipcaptool.store.schema import init_db  # noqa: E402

# -- hep: the zero-loss rate ---------------------------------------------------------------

def hep_step(url: str, n: int, rate: float, k: int, extra: tuple[str, ...] = ()) -> dict:
    table = f"hepch_{os.getpid()}_{k}"
    ch = url.startswith("clickhouse")
    init_db(url, [table], aux=False)
    datagrams = build_datagrams(n, f"c{os.getpid()}k{k}")
    args = SimpleNamespace(rcvbuf="4M", workers=1, batch_size=0)
    coll = Collector(url, table, args)
    try:
        t0 = time.perf_counter()
        send_paced(datagrams, coll.port, rate, 4)
        coll.wait_idle()
        busy = time.perf_counter() - t0 - 0.5
        summary = coll.stop()
    finally:
        if coll.proc.poll() is None:
            coll.proc.kill()
    stored = wait_count(url, table, n) if ch else count_rows(url, table)
    if not ch:
        drop_table(url, table)
    return {"rate": rate, "sent": n, "stored": stored, "lost": n - stored,
            "kernel_drops": (summary.get("kernel") or {}).get("udp-drops", 0),
            "read_per_s": round((summary.get("packets") or 0) / busy) if busy > 0 else 0}


def zero_loss_rates(targets: list[tuple[str, str]], n: int, rates: list[float]
                    ) -> dict[str, dict]:
    """For each target, the highest rate of ``rates`` (ascending) stored without loss.
    The targets take turns at each rate (a target stops at its first lossy step), so
    that the stores compared at a rate ran within a minute or so of each other: this
    machine's speed drifts over the minutes one store's whole series would take."""
    out = {name: {"zero_loss_rate": 0.0, "runs": []} for name, _ in targets}
    live = list(targets)
    for k, rate in enumerate(rates):
        for name, url in list(live):
            r = hep_step(url, n, rate, k)
            r["target"] = name
            out[name]["runs"].append(r)
            print(f"  {name:<18} {rate:>7.0f}/s  stored {r['stored']:>7}/{n}  "
                  f"lost {r['lost']:>6}  kernel drops {r['kernel_drops']}  "
                  f"read {r['read_per_s']}/s", flush=True)
            if r["lost"]:
                live.remove((name, url))
            else:
                out[name]["zero_loss_rate"] = rate
        if not live:
            break
    return out


def cmd_hep(a: argparse.Namespace) -> dict:
    rates = [float(x) for x in a.rates.split(",")]
    out: dict = {"n": a.n, "rates": rates, "targets": {}}
    with ClickHouseGroup(1) as single, ClickHouseGroup(2) as pair:
        targets = [("postgresql", a.pg),
                   ("clickhouse", single.servers[0].url + "/hepbench"),
                   ("clickhouse-2-shards", pair.servers[0].url + f"/hepbench?cluster={CLUSTER}")]
        out["targets"] = zero_loss_rates(targets, a.n, rates)
    pg = out["targets"]["postgresql"]["zero_loss_rate"]
    print(f"\nzero-loss HEP rate, {a.n} messages a step, --rcvbuf 4M (same run; 0: lost "
          "at the lowest rate tried):")
    print(f"  {'target':<20} {'msg/s':>8} {'vs PostgreSQL':>14}")
    for name, t in out["targets"].items():
        rate = t["zero_loss_rate"]
        ratio = f"{rate / pg:>13.2f}x" if pg else f"{'-':>14}"
        # ">=": lossless at every rate tried, its limit not reached
        top = ">=" if t["runs"] and not t["runs"][-1]["lost"] else "  "
        print(f"  {name:<20} {top}{rate:>6.0f} {ratio}")
    return out


# -- replay ---------------------------------------------------------------------------------

def build_capture(path: Path, n: int) -> None:
    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(n):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def _cpu_of(pid: int | None) -> float:
    """CPU seconds a process has used so far (0 when it cannot be read)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# a process that keeps one core busy and touches almost no memory
_SPIN = "x = 0\nwhile True:\n    x = (x * 7 + 1) % 1000003\n"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_replay(url: str, pcap: Path, *extra: str, server_pid: int | None = None,
                neighbour: bool = False, prog: tuple[str, ...] = ("-m", "sipcaptool")
                ) -> tuple[float, dict, float, float]:
    """One ``sipcaptool replay`` as a user runs it: (wall seconds, its --json summary, CPU
    seconds the server used meanwhile, CPU seconds of the replay's own processes: the
    capturing process and its writer process). ``neighbour``: with another process
    keeping a core busy all the time (the reference for what sharing the machine costs;
    its CPU is not the replay's: reported as 0). ``prog``: what Python runs instead of
    ``-m sipcaptool`` (bench/handover_only.py)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # as installed: modules compiled once
    spin = subprocess.Popen([sys.executable, "-c", _SPIN]) if neighbour else None
    try:
        if spin is not None:
            time.sleep(0.2)
        srv0 = _cpu_of(server_pid)
        own0 = _children_cpu()
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, *prog, "replay", "--json", "-q",
                              "--again", "--db", url, *extra, str(pcap)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)
        out, err = p.communicate()
        dt = time.perf_counter() - t0
        srv = _cpu_of(server_pid) - srv0
        own = _children_cpu() - own0      # (waited for: it and its writer process)
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    if p.returncode != 0:
        raise SystemExit(err)
    return dt, json.loads(out), srv, 0.0 if neighbour else own


def cmd_replay(a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as d, ClickHouseGroup(1) as g:
        pcap = Path(d) / "bench.pcap"
        build_capture(pcap, a.n)
        url = g.servers[0].url + "/replaybench"
        init_db(url, ["sip_capture"])
        pid = g.servers[0].proc.pid if g.servers[0].proc else None
        # "none, core busy": --db none beside a process that only keeps the other core
        # busy -- what the machine's sharing alone costs a replay (the writer process and
        # the server keep that core busy during a replay into a database)
        # "hand-over only": into ClickHouse with a writer process that throws each batch
        # of rows away (bench/handover_only.py; every message parsed by the capturing
        # process) -- what handing rows to any writer process costs the capturing
        # process, the floor of a replay that parses in one process
        # "clickhouse, rows only": every message parsed by the capturing process and
        # handed over as a row (the hidden --writer-parses never), as before the writer
        # process parsed the batches it has time for (sipcaptool.store.unparsed)
        # "clickhouse, one process": the writer's work done in the capturing process
        # (the hidden --foreground-writer), no hand-over at all
        never = ("--writer-parses", "never")
        runs = [("none", "none", ()), ("none, core busy", "none", ()),
                ("hand-over only", url, never), ("clickhouse", url, ()),
                ("clickhouse, rows only", url, never),
                ("clickhouse, one process", url, ("--foreground-writer",))]
        if a.pg:
            try:
                init_db(a.pg, ["sip_capture"])
                runs.append(("postgresql", a.pg, ()))
            except Exception as e:  # noqa: BLE001 - context only
                print(f"(PostgreSQL left out: {e})", file=sys.stderr)
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        server: list[float] = []
        time_replay("none", pcap)          # (compiles the modules once, as an install has)
        for _ in range(a.repeat):     # alternated, so all see the same machine
            for name, u, extra in runs:
                prog = (str(ROOT / "bench" / "handover_only.py"),) \
                    if name == "hand-over only" else ("-m", "sipcaptool")
                dt, _doc, srv, own = time_replay(u, pcap, *extra, server_pid=pid,
                                                 neighbour=name == "none, core busy",
                                                 prog=prog)
                times[name].append(dt)
                cpu[name].append(own)
                if name == "clickhouse":
                    server.append(srv)
        # (three of the runs store into ClickHouse: the replay as it is, with rows only,
        # and in one process)
        expected = 3 * a.n * a.repeat
        stored = wait_count(url, "sip_capture", expected)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"replay of {a.n} messages, median of {a.repeat} runs (alternated):")
    for k, v in med.items():
        label = k if k == "hand-over only" else "--db " + k
        print(f"  {label:<28} {v:6.2f} s  {a.n / v:>8.0f} msg/s  "
              f"{100 * (v / med['none'] - 1):+6.1f}% against --db none   "
              f"(runs: {', '.join(f'{x:.2f}' for x in times[k])})")
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if k != "none, core busy"}
    srv_cpu = statistics.median(server)
    # what the machine had to do: on a machine of C cores a replay cannot take less than
    # (all the CPU it needs) / C, nor less than its capturing process alone needs
    print("  CPU per replay (sipcaptool's processes: capturing + writer):  " + ", ".join(
        f"{k} {v:.2f} s" for k, v in med_cpu.items()))
    print(f"  ClickHouse server CPU per replay: {srv_cpu:.2f} s; ClickHouse in all "
          f"{med_cpu['clickhouse'] + srv_cpu:.2f} s of CPU for {med['clickhouse']:.2f} s "
          f"on {os.cpu_count()} cores")
    print(f"  rows stored {stored} (expected {expected})")
    return {"n": a.n, "median_s": med, "runs_s": times, "stored": stored,
            "server_cpu_s": srv_cpu, "cpu_s": med_cpu}


def sip_rows(n: int) -> tuple[list, int]:
    """``n`` realistic messages through the real row builder: (rows, bytes of SIP)."""
    from sipcaptool.decode.sip import parse_sip
    from sipcaptool.record import AF_INET, PROTO_UDP, CapturedMessage
    from sipcaptool.row import RowOptions, sip_row
    from sipcaptool.testing.pcapgen import realistic_messages
    opts = RowOptions()
    rows = []
    raw = 0
    for ts, (src, sport, dst, dport, payload) in realistic_messages(n):
        m = CapturedMessage(ts, src, sport, dst, dport, PROTO_UDP, AF_INET, payload)
        rows.append(sip_row(m, parse_sip(payload), opts))
        raw += len(payload)
    return rows, raw


# -- writes: Distributed vs straight to the shards -------------------------------------------

def cmd_writes(a: argparse.Namespace) -> dict:
    rows, _raw = sip_rows(a.n)
    batch = 2000
    out: dict = {}
    with ClickHouseGroup(2) as g:
        for mode in ("distributed", "shards"):
            db = f"w_{mode}"
            url = g.servers[0].url + f"/{db}?cluster={CLUSTER}"
            init_db(url, ["sip_capture"], aux=False)
            dist = open_adapter(url)
            shards = [open_adapter(s.url + f"/{db}") for s in g.servers]
            t0 = time.perf_counter()
            for i in range(0, len(rows), batch):
                part = rows[i:i + batch]
                if mode == "distributed":
                    dist.write("sip_capture", "sip", part, f"{mode}-{i}", len(part))
                else:
                    by: list[list] = [[] for _ in shards]
                    for r in part:
                        by[shard_of(str(r[13]), [1] * len(shards))].append(r)
                    for k, (sh, rs) in enumerate(zip(shards, by, strict=True)):
                        if rs:
                            sh.write("sip_capture_local", "sip", rs, f"{mode}-{i}-{k}", len(rs))
            taken = time.perf_counter() - t0
            visible = wait_count(url, "sip_capture", len(rows))
            settled = time.perf_counter() - t0
            out[mode] = {"insert_s": round(taken, 2), "rows_per_s": round(len(rows) / taken),
                         "all_visible_s": round(settled, 2), "rows": visible}
            for x in (dist, *shards):
                x.close()
    print(f"{a.n} rows in batches of {batch} into a 2-shard cluster:")
    for k, v in out.items():
        print(f"  {k:<12} {v['rows_per_s']:>8} rows/s inserted; all {v['rows']} readable after "
              f"{v['all_visible_s']} s")
    return out


# -- lookups on 10,000,000 rows -----------------------------------------------------------------

def fill(url: str, rows: int) -> None:
    """``rows`` generated by the server (INSERT ... SELECT FROM numbers), over one day:
    2,500,000 calls of 4 messages, 100,000 users, each message about 500 bytes."""
    a = open_adapter(url)
    a.connect()
    base = 1_764_547_200      # 2025-12-01 00:00:00 UTC
    step = max(1, rows // 86_400)
    cols = ", ".join(f"`{c}`" for c in ("date", "micro_ts", "method", "ruri_user", "from_user",
                                         "to_user", "callid", "source_ip", "source_port",
                                         "destination_ip", "destination_port", "proto",
                                         "family", "type", "node", "msg"))
    a.client.execute(
        f"INSERT INTO sip_capture ({cols}) SELECT "
        f"toDateTime({base} + intDiv(number, {step})), "
        f"toInt64(({base} + intDiv(number, {step})) * 1000000 + number % 1000000), "
        "['INVITE','100','180','200'][number % 4 + 1], "
        "toString(2000 + intHash32(intDiv(number, 4)) % 100000), "
        "toString(1000 + intDiv(number, 4) % 100000), "
        "toString(2000 + intHash32(intDiv(number, 4)) % 100000), "
        "concat('call-', toString(intDiv(number, 4)), '@bench'), "
        "'10.0.0.1', 5060, '10.0.0.2', 5060, 1, 2, 1, 'homer01', "
        "concat('INVITE sip:', toString(number), '@example.com SIP/2.0\\r\\nCall-ID: call-', "
        "toString(intDiv(number, 4)), '@bench\\r\\n', '" + "X-Pad: abcdefghij\\r\\n" * 22 + "') "
        f"FROM system.numbers LIMIT {rows}", settings={"max_insert_block_size": 1_048_576})
    a.client.execute("OPTIMIZE TABLE sip_capture FINAL")
    a.close()


def timed(fn, repeat: int) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return statistics.median(best)


def cmd_lookups(a: argparse.Namespace) -> dict:
    from sipcaptool.config import Settings
    from sipcaptool.query.calls import find_calls
    from sipcaptool.query.filters import build_query
    with ClickHouseGroup(1) as g:
        url = g.servers[0].url + "/lookbench"
        init_db(url, ["sip_capture"])
        t0 = time.perf_counter()
        fill(url, a.rows)
        print(f"{a.rows} rows made in {time.perf_counter() - t0:.1f} s", flush=True)
        s = Settings.load(None, {"db_url": url}, env={})
        r = open_adapter(url)
        r.connect_readonly()
        out = {}
        cid = f"call-{a.rows // 8}@bench"
        user = "1234"
        since, until = "2025-12-01 13:00:00", "2025-12-01 14:00:00"
        checks = {
            "sql Call-ID": lambda: r.select("SELECT count() FROM sip_capture WHERE callid = %s",
                                            (cid,)),
            "sql user, 1 hour": lambda: r.select(
                "SELECT count() FROM sip_capture WHERE (from_user = %s OR to_user = %s OR "
                "ruri_user = %s) AND date >= toDateTime(%s, 'UTC') AND date < toDateTime(%s, "
                "'UTC')", (user, user, user, since, until)),
            "search --call-id": lambda: find_calls(s, build_query(call_id=cid)),
            "search --user, 1 hour": lambda: find_calls(s, build_query(user=user, since=since,
                                                                       until=until)),
        }
        for name, fn in checks.items():
            fn()                                  # warm
            out[name] = round(1000 * timed(fn, a.repeat), 1)
        found = find_calls(s, build_query(call_id=cid))
        hour = find_calls(s, build_query(user=user, since=since, until=until))
        r.close()
    print(f"lookups on {a.rows} rows (one day, 2025-12-01), median of {a.repeat}:")
    for k, v in out.items():
        print(f"  {k:<24} {v:>8} ms")
    print(f"  (the call has {len(found[0].messages) if found else 0} messages; "
          f"{len(hour)} calls of user {user} in the hour)")
    return {"rows": a.rows, "ms": out}


# -- size on disk ---------------------------------------------------------------------------

def cmd_size(a: argparse.Namespace) -> dict:
    """Real messages through the collector's row builder into one server, then the bytes
    on disk (compressed parts) per message and per 1,000 msg/s for a day."""
    rows, raw = sip_rows(a.n)
    with ClickHouseGroup(1) as g:
        url = g.servers[0].url + "/sizebench"
        init_db(url, ["sip_capture"], aux=False)
        w = open_adapter(url)
        for i in range(0, len(rows), 10000):
            w.write("sip_capture", "sip", rows[i:i + 10000], f"s-{i}", len(rows[i:i + 10000]))
        w.client.execute("OPTIMIZE TABLE sip_capture FINAL")
        (comp, unc, n), = w.client.execute(
            "SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(rows) "
            "FROM system.parts WHERE database = 'sizebench' AND table = 'sip_capture' "
            "AND active")
        w.close()
    per = comp / n
    day = per * 1000 * 86400
    print(f"{n} messages ({raw / n:.0f} bytes of SIP each): {per:.0f} bytes on disk per row "
          f"(compressed {unc / comp:.1f}x); 1,000 msg/s = 86,400,000 rows, "
          f"{day / 1e9:.1f} GB a day")
    return {"rows": n, "sip_bytes": raw / n, "bytes_per_row": per, "ratio": unc / comp,
            "gb_per_day_per_1000": day / 1e9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hep")
    h.add_argument("-n", type=int, default=300_000)
    h.add_argument("--rates", default="8000,12000,16000,20000,24000,28000,32000,36000,40000")
    h.add_argument("--pg", default="postgresql://postgres@127.0.0.1/sipcaptool_chbench")
    r = sub.add_parser("replay")
    r.add_argument("-n", type=int, default=100_000)
    r.add_argument("--repeat", type=int, default=7)
    r.add_argument("--pg", default="postgresql://postgres@127.0.0.1/sipcaptool_chbench",
                   help="PostgreSQL for comparison ('' leaves it out)")
    w = sub.add_parser("writes")
    w.add_argument("-n", type=int, default=200_000)
    lk = sub.add_parser("lookups")
    lk.add_argument("--rows", type=int, default=10_000_000)
    lk.add_argument("--repeat", type=int, default=5)
    sz = sub.add_parser("size")
    sz.add_argument("-n", type=int, default=200_000)
    for p in (h, r, w, lk, sz):
        p.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    out = {"hep": cmd_hep, "replay": cmd_replay, "writes": cmd_writes, "lookups": cmd_lookups,
           "size": cmd_size}[a.cmd](a)
    if a.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
