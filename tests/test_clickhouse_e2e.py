"""ClickHouse end to end: the commands (db init, replay, hep, search, db prune) run as
processes against private clickhouse-server instances (one server, and a two-shard
cluster of two server processes): every message stored exactly once, read back through
the Distributed table, and nothing lost while a shard is stopped for a few seconds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_search as ts
from clickhouse_server import wait_count
from test_hep_collector import message

from sipcaptool.encode.hep import encode_hep3
from sipcaptool.store import open_adapter
from sipcaptool.store.clickhouse import shard_of
from sipcaptool.store.url import parse_db_url

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def callid_counts(url: str) -> dict[str, int]:
    a = open_adapter(url)
    try:
        return {str(c): int(n) for c, n in a.select(
            "SELECT callid, count() FROM sip_capture GROUP BY callid")}
    finally:
        a.close()


# -- the search suite, on ClickHouse ------------------------------------------------------

@pytest.mark.parametrize("check", [ts.test_filters, ts.test_legs, ts.test_search_command],
                         ids=["filters", "legs", "command"])
def test_replay_then_search(check, ch_url, tmp_path):
    """search's own tests (every filter, legs by X-CID and Session-ID, the command's
    output) on a capture replayed into ClickHouse."""
    run("db", "init", "--db", ch_url)
    pcap = tmp_path / "scenario.pcap"
    msgs = ts.write_scenario(pcap)
    check(ch_url, (pcap, msgs))


def test_project_captures_stored_once_and_read_back(ch_cluster):
    url, _group = ch_cluster
    run("db", "init", "--db", url)
    out = ts.replay(url, *ts.PCAPS, ROOT / "examples" / "call.pcap")
    assert wait_count(url, "sip_capture", out["stored_total"]) == out["stored_total"]
    # read through the Distributed table: every expected row, with its bytes' length
    exp = ts.expected_rows()
    calls = {c.callid: c for c in ts.find_calls(ts.settings(url), ts.build_query())}
    for r in exp:
        got = [m for m in calls[r["callid"]].messages if m.micro_ts == r["micro_ts"]
               and m.method == str(r["method"])]
        assert got and len(got[0].msg) == r["msg_len"], r
    assert sum(callid_counts(url).values()) == out["stored_total"]


# -- the HEP collector --------------------------------------------------------------------

def _send(port: int, n: int, prefix: str, rate: float = 5000.0) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    t0 = time.perf_counter()
    for i in range(n):
        s.sendto(encode_hep3(message(f"{prefix}-{i}", ts=1_767_323_045_000_000 + i)),
                 ("127.0.0.1", port))
        ahead = t0 + (i + 1) / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    s.close()


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_hep_collector_stores_every_message_once(where, request, collectors):
    if where == "single":
        url = request.getfixturevalue("ch_url")
    else:
        url, _group = request.getfixturevalue("ch_cluster")
    run("db", "init", "--db", url)
    c = collectors(url, "--rcvbuf", "4M", tcp=False)
    n = 3000
    _send(c.ports["udp"], n, where)
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["stored_total"] == n, summary
    assert wait_count(url, "sip_capture", n) == n
    counts = callid_counts(url)
    assert len(counts) == n and set(counts.values()) == {1}


def test_cluster_option_and_a_shard_stopped_for_seconds_loses_nothing(ch_servers, collectors):
    """hep --cluster writes through the Distributed table of the first server; the
    second shard is stopped for a few seconds while messages keep coming, then started
    again: every message is stored once, on the shard its Call-ID hashes to."""
    from clickhouse_server import CLUSTER
    g = ch_servers(2)
    url = g.servers[0].url + "/homer"
    run("db", "init", "--db", url, "--cluster", CLUSTER)
    c = collectors(url, "--cluster", CLUSTER, "--rcvbuf", "4M", tcp=False)
    _send(c.ports["udp"], 1000, "before")
    g.servers[1].stop()
    _send(c.ports["udp"], 2000, "during", rate=1000)     # two seconds, shard 2 down
    time.sleep(1)
    g.servers[1].start()
    _send(c.ports["udp"], 1000, "after")
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["stored_total"] == 4000, summary
    cluster_url = url + "?cluster=" + CLUSTER
    assert wait_count(cluster_url, "sip_capture", 4000, timeout=120) == 4000
    counts = callid_counts(cluster_url)
    assert len(counts) == 4000 and set(counts.values()) == {1}
    # each shard holds exactly the calls that hash to it
    db = parse_db_url(url).database
    from clickhouse_driver import Client
    for k, s in enumerate(g.servers):
        cl = Client("127.0.0.1", port=s.tcp_port)
        calls = [r[0] for r in cl.execute(f"SELECT callid FROM `{db}`.sip_capture_local")]
        cl.disconnect()
        assert calls and all(shard_of(x, [1, 1]) == k for x in calls)


def _capture(path: Path, n: int, tag: bytes, start_us: int) -> None:
    """``n`` generated messages (calls, registrations, OPTIONS) whose Call-IDs start with
    ``tag`` (another capture's Call-IDs differ), from ``start_us`` on."""
    from sipcaptool.export.pcap import PcapWriter
    from sipcaptool.testing.pcapgen import realistic_messages, udp4_frame
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts_, (src, sport, dst, dport, msg) in realistic_messages(n, start_us=start_us):
            msg = msg.replace(b"\r\nCall-ID: ", b"\r\nCall-ID: " + tag)
            w.write(ts_, udp4_frame(src, sport, dst, dport, msg))


def _on(port: int, sql: str) -> list[tuple]:
    """One query on one server (its own connection, closed)."""
    from clickhouse_driver import Client
    c = Client("127.0.0.1", port=port)
    try:
        return c.execute(sql)
    finally:
        c.disconnect()


def test_a_third_shard_added_as_docs_scale_out_says(tmp_path, ch_servers):
    """docs/scale-out.md, "Adding a shard", done as written: a cluster of two shards holds
    a first capture; a third server is added to remote_servers of every node (read by the
    servers without a restart) and db init is run again, which creates the database and
    the local tables on the new shard; a second capture is spread over the three shards;
    every message of both is stored once, and search finds a call that lives on the new
    shard through the Distributed table."""
    from clickhouse_server import CLUSTER
    g = ch_servers(3, start=False)
    ports = [s.tcp_port for s in g.servers]
    for s in g.servers:
        s.write_config(ports[:2])                   # the cluster has two shards at first
    g.start()
    url = g.servers[0].url + "/homer"
    curl = url + "?cluster=" + CLUSTER
    run("db", "init", "--db", url, "--cluster", CLUSTER)
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    _capture(first, 3000, b"one-", 1_764_000_000_000_000)
    _capture(second, 3000, b"two-", 1_764_000_100_000_000)
    run("replay", "-q", "--db", curl, str(first))
    assert wait_count(curl, "sip_capture", 3000, timeout=120) == 3000
    assert _on(ports[2], "SELECT count() FROM system.databases WHERE name = 'homer'") \
        == [(0,)]
    # 1. the new server goes into remote_servers of every node
    for s in g.servers:
        s.write_config(ports)
    shards = f"SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'"
    deadline = time.monotonic() + 60
    while _on(ports[0], shards) != [(3,)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _on(ports[0], shards) == [(3,)]
    # 2. db init again: the new shard gets the database and the local tables
    p = run("db", "init", "--db", url, "--cluster", CLUSTER, "--json")
    (doc,) = json.loads(p.stdout)
    assert "sip_capture" in doc["created"], doc
    assert _on(ports[2], "EXISTS TABLE homer.sip_capture_local") == [(1,)]
    # 3. new rows are spread over the three shards, old ones stay where they are
    run("replay", "-q", "--db", curl, str(second))
    assert wait_count(curl, "sip_capture", 6000, timeout=120) == 6000
    local = [{str(r[0]) for r in _on(p_, "SELECT DISTINCT callid FROM "
                                     "homer.sip_capture_local")} for p_ in ports]
    counts = callid_counts(curl)
    assert sum(counts.values()) == 6000
    assert len(set().union(*local)) == len(counts)          # each call on one shard
    assert all(shard_of(cid, [1, 1, 1]) == 2 for cid in local[2])
    assert local[2] and len(local[2]) > len(counts) // 10
    assert _on(ports[0], "SELECT count(), uniqExact(micro_ts) FROM homer.sip_capture"
               ) == [(6000, 6000)]                           # every message once
    on_third = sorted(local[2])[0]
    assert on_third.startswith("two-")
    p = run("search", "--db", curl, "--call-id", on_third, "--json")
    doc = json.loads(p.stdout)
    assert [c["call_id"] for c in doc["calls"]] == [on_third], p.stdout[:500]
    assert doc["calls"][0]["messages"] == counts[on_third]


# -- db init and db prune -----------------------------------------------------------------

def test_db_init_cluster_again_recreates_a_shards_tables_and_prune(ch_cluster):
    url, group = ch_cluster
    p = run("db", "init", "--db", url, "--retention", "14d", "--json")
    (doc,) = json.loads(p.stdout)
    assert "sip_capture" in doc["created"]
    assert any("has no TTL" in n and "db prune" in n for n in doc["notes"])   # 18.16
    db = parse_db_url(url).database
    from clickhouse_driver import Client
    cl = Client("127.0.0.1", port=group.servers[1].tcp_port)
    cl.execute(f"DROP TABLE `{db}`.sip_capture_local")       # a shard that lacks it
    p = run("db", "init", "--db", url, "--json")
    (doc,) = json.loads(p.stdout)
    assert "sip_capture" in doc["created"]
    assert cl.execute(f"EXISTS TABLE `{db}`.sip_capture_local") == [(1,)]
    cl.disconnect()
    # rows of two old days and today: prune drops the old days on both shards
    a = open_adapter(url)
    from store_helpers import sip_row
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rows = [sip_row(i, date=d) for i, d in enumerate(
        ["2026-01-01 10:00:00"] * 20 + ["2026-01-02 10:00:00"] * 20 + [f"{today} 00:00:01"] * 5)]
    cid = 13
    rows = [r[:cid] + (f"c{i}",) + r[cid + 1:] for i, r in enumerate(rows)]
    a.write("sip_capture", "sip", rows, "prune-1", len(rows))
    a.close()
    assert wait_count(url, "sip_capture", 45) == 45
    p = run("db", "prune", "--older-than", "1d", "--db", url, "--dry-run")
    assert "20260101 (20 rows)" in p.stdout and "20260102 (20 rows)" in p.stdout
    run("db", "prune", "--older-than", "1d", "--db", url)
    assert wait_count(url, "sip_capture", 5) == 5


# -- flow and export ------------------------------------------------------------------------

def test_flow_and_export_read_the_cluster(ch_cluster, tmp_path):
    url, _group = ch_cluster
    run("db", "init", "--db", url)
    ts.replay(url, ROOT / "examples" / "call.pcap")
    assert wait_count(url, "sip_capture", 30) == 30
    p = run("flow", "--db", url, "3-12284@127.0.0.1")
    assert "6 messages" in p.stdout and "BYE" in p.stdout
    out = tmp_path / "call.pcap"
    run("export", "--db", url, "--call-id", "3-12284@127.0.0.1", "-o", str(out))
    t = subprocess.run(["tshark", "-r", str(out), "-Y", "sip", "-T", "fields", "-e",
                        "sip.Call-ID"], capture_output=True, text=True, timeout=60)
    assert t.stdout.split() == ["3-12284@127.0.0.1"] * 6
