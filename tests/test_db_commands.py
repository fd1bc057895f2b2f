"""``sipcaptool db init``, ``db prune``, ``replay --route`` and ``hep`` run as an operator
runs them (processes, a TOML file), against the real databases."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shared_data import REFERENCE, needs_shared
from store_helpers import connect, count, q, tables
from test_store_routes import HOMER5_ROUTES, homer5_table

from sipcaptool.store import open_adapter
from sipcaptool.store.retention import ensure_days, names_for_days

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.timedelta(days=1)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SIPCAPTOOL_ROUTE", None)
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def _homer5_toml(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "homer5.toml"
    rules = ",\n  ".join(json.dumps(r) for r in HOMER5_ROUTES)
    cfg.write_text(f'db_url = "{db_url}"\nroute = [\n  {rules},\n]\n')
    return cfg


@needs_shared("reference")
def test_homer5_replay_from_a_config_file_table_by_table(any_db_url, tmp_path):
    capture = REFERENCE / "conformance" / "siptrace_hepv3_udp.pcap"
    rows = [json.loads(line) for line in (REFERENCE / "conformance" /
            "siptrace_hepv3_udp.rows.mysql.jsonl").read_text().splitlines()]
    cfg = _homer5_toml(tmp_path, any_db_url)
    r = run("db", "init", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    today = dt.datetime.now(dt.UTC).date()
    assert f"created sip_capture_call_{today:%Y%m%d}" in r.stdout
    r = run("replay", "--config", str(cfg), "--json", str(capture))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    want = collections.Counter(homer5_table(x["method"], x["cseq"], x["msg"],
                                            x["date"][:10].replace("-", "")) for x in rows)
    assert summary["stored"] == dict(want)
    for table, n in want.items():
        assert count(any_db_url, table) == n
    # replies are where their request is: every 200 to a REGISTER is a registration row
    conn = connect(any_db_url)
    try:
        cur = conn.cursor()
        reg = next(t for t in want if "registration" in t)
        cur.execute(f"SELECT {q(any_db_url, 'method')}, {q(any_db_url, 'cseq')} "
                    f"FROM {q(any_db_url, reg)}")
        assert {c.split()[-1] for _m, c in cur.fetchall()} == {"REGISTER"}
    finally:
        conn.close()


def test_db_init_run_again_adds_the_new_days(tmp_path):
    url = "sqlite:///" + str(tmp_path / "c.db")
    today = dt.datetime.now(dt.UTC).date()
    r = run("db", "init", "--db", url, "--table-name", "sip_%Y%m%d")
    assert r.returncode == 0, r.stderr
    assert f"created sip_{today:%Y%m%d}, logs_capture" in r.stdout
    r = run("db", "init", "--db", url, "--table-name", "sip_%Y%m%d")
    assert r.stdout.strip() == f"{url}: ready; nothing to add; 4 already there"
    r = run("db", "init", "--db", url, "--table-name", "sip_%Y%m%d", "--days", "3", "--json")
    assert r.returncode == 0, r.stderr
    (report,) = json.loads(r.stdout)
    assert report["created"] == [f"sip_{today + i * DAY:%Y%m%d}" for i in (1, 2)]
    assert report["existing"][0] == f"sip_{today:%Y%m%d}"


def test_db_init_partition_days_extends(mysql_url):
    r = run("db", "init", "--db", mysql_url, "--partition-days", "2", "--no-aux")
    assert r.returncode == 0, r.stderr
    assert "created sip_capture" in r.stdout
    r = run("db", "init", "--db", mysql_url, "--partition-days", "4", "--no-aux")
    assert r.returncode == 0, r.stderr
    today = dt.datetime.now(dt.UTC).date()
    added = ", ".join(f"p{today + i * DAY:%Y%m%d}" for i in (2, 3))
    assert f"added partitions sip_capture: {added}" in r.stdout


def test_db_prune_dry_run_then_for_real(any_db_url):
    today = dt.datetime.now(dt.UTC).date()
    a = open_adapter(any_db_url)
    a.connect()
    try:
        ensure_days(a, names_for_days(["sip_%Y%m%d"], today - 6 * DAY, 7))
    finally:
        a.close()
    r = run("db", "prune", "--db", any_db_url, "--table-name", "sip_%Y%m%d",
            "--older-than", "3d", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    (report,) = json.loads(r.stdout)
    assert report["dry_run"] and report["before"] == (today - 3 * DAY).isoformat()
    gone = [f"sip_{today - i * DAY:%Y%m%d}" for i in (6, 5, 4)]
    assert [x["name"] for x in report["removed"]] == gone
    assert set(gone) <= tables(any_db_url)
    r = run("db", "prune", "--db", any_db_url, "--table-name", "sip_%Y%m%d",
            "--older-than", "3d")
    assert r.returncode == 0, r.stderr
    assert f"dropped table {gone[0]}" in r.stdout
    assert not set(gone) & tables(any_db_url)
    assert f"sip_{today - 3 * DAY:%Y%m%d}" in tables(any_db_url)
    r = run("db", "prune", "--db", any_db_url, "--table-name", "sip_%Y%m%d",
            "--older-than", "3d")
    assert "nothing to remove" in r.stdout
    r = run("db", "prune", "--db", any_db_url, "--older-than", "yesterday")
    assert r.returncode == 2 and "--older-than" in r.stderr


def test_hep_makes_tomorrows_table_at_start(collectors, any_db_url):
    tomorrow = dt.datetime.now(dt.UTC).date() + DAY
    c = collectors(any_db_url, "--table-name", "sip_%Y%m%d", "--spool-dir", "none")
    deadline = time.monotonic() + 60
    while f"sip_{tomorrow:%Y%m%d}" not in tables(any_db_url):
        assert time.monotonic() < deadline, "tomorrow's table was not made"
        time.sleep(0.2)
    code, summary, err = c.stop()
    assert code == 0, err
    assert summary["maintenance"]["tables-created"] >= 1


@pytest.mark.parametrize("rule", ["INVITE", "INVITE=bad-name"])
def test_a_bad_route_is_a_usage_error(rule, tmp_path):
    r = run("db", "init", "--db", "sqlite:///" + str(tmp_path / "x.db"), "--route", rule)
    assert r.returncode == 2
    assert "bad route" in r.stderr and rule in r.stderr


@pytest.mark.parametrize("unit", ["sipcaptool-db-init", "sipcaptool-prune"])
def test_timer_units_verify(unit, tmp_path):
    """systemd reads the contrib units (the command run as this Python's -m sipcaptool,
    which exists wherever the tests run)."""
    import shutil
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    for suffix in (".service", ".timer"):
        text = (ROOT / "contrib" / (unit + suffix)).read_text()
        (tmp_path / (unit + suffix)).write_text(
            text.replace("ExecStart=sipcaptool ", f"ExecStart={sys.executable} -m sipcaptool "))
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / (unit + ".service")),
                        str(tmp_path / (unit + ".timer"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "db prune" in (ROOT / "contrib" / "sipcaptool-prune.service").read_text()


def test_prune_while_the_collector_writes(collectors, any_db_url):
    """db prune (a process) deletes 20,000 old rows in batches of 500 from the table a
    running hep collector is writing into: every message sent is stored, none dropped,
    and the old rows are gone."""
    import socket
    import threading

    from store_helpers import sip_row
    from test_hep_collector import message

    from sipcaptool.encode.hep import encode_hep3

    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S")
    a = open_adapter(any_db_url)
    a.create_database()
    a.connect()
    try:
        ensure_days(a, ["sip_capture"])
        for start in range(0, 20_000, 5000):
            a.write("sip_capture", "sip", a.format_batch(
                "sip", [sip_row(start + i, date=old) for i in range(5000)]))
    finally:
        a.close()
    c = collectors(any_db_url, "--spool-dir", "none", "--batch-size", "50", tcp=False)
    now_us = int(time.time() * 1_000_000)
    sent = [0]
    stop = threading.Event()

    def send() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            while not stop.is_set() and sent[0] < 3000:
                s.sendto(encode_hep3(message(f"live-{sent[0]}", ts=now_us)),
                         ("127.0.0.1", c.ports["udp"]))
                sent[0] += 1
                time.sleep(0.002)
        finally:
            s.close()

    t = threading.Thread(target=send)
    t.start()
    try:
        r = run("db", "prune", "--db", any_db_url, "--older-than", "14d", "--batch-rows", "500")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert "sip_capture: deleted 20000 rows" in r.stdout
    deadline = time.monotonic() + 60
    while count(any_db_url, "sip_capture") < sent[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    code, summary, err = c.stop()
    assert code == 0, err
    assert summary["stored_total"] == sent[0] > 0
    assert not summary.get("dropped")
    assert count(any_db_url, "sip_capture") == sent[0]
