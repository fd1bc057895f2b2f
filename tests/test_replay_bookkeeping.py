"""`sipcaptool replay` remembers what it replayed (sipcaptool_replays): a second replay
of the same file into the same tables is refused (exit 2) unless --again, a replay
killed in the middle continues with --resume and stores every message exactly once,
and --explain lists the frames that were not stored, numbered as tshark numbers them.
Run as a user runs it (subprocesses), into SQLite, MariaDB, PostgreSQL and ClickHouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipcaptool.export.pcap import PcapWriter
from sipcaptool.store import open_adapter
from sipcaptool.store.url import parse_db_url
from sipcaptool.testing.pcapgen import realistic_messages, udp4_frame
from tests.shared_data import CORPUS, needs_shared

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "call.pcap"


def cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sipcaptool", *args]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if stdin is not None:
        p = subprocess.run(cmd(*args), capture_output=True, env=env, timeout=300, input=stdin)
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(),
                                           p.stderr.decode())
    return subprocess.run(cmd(*args), capture_output=True, text=True, env=env, timeout=300)


def select(url: str, sql: str) -> list[tuple]:
    a = open_adapter(parse_db_url(url))
    a.connect_readonly()
    try:
        return a.select(sql)
    finally:
        a.close()


def replays_now(url: str, columns: str) -> list[tuple]:
    """``columns`` of each file's row of sipcaptool_replays as it is now (ClickHouse keeps
    versions of a row: the newest, as replay reads it)."""
    newest: dict[str, tuple] = {}
    for r in select(url, f"SELECT file_key, started_us, finished_us, state, {columns} "
                         "FROM sipcaptool_replays"):
        rank = (int(r[1]), r[2] is not None, int(r[2] or 0))
        if r[0] not in newest or rank > newest[r[0]][0]:
            newest[r[0]] = (rank, r[3], tuple(r[4:]))
    # (a version "unstarted": recorded ahead and never begun, read as no row)
    return [v for _, state, v in newest.values() if state != "unstarted"]


def count(url: str, table: str = "sip_capture") -> int:
    try:
        return int(select(url, f"SELECT COUNT(*) FROM {table}")[0][0])
    except Exception:  # noqa: BLE001 - the table is created with the first batch
        return 0


def make_pcap(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(n):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def test_second_replay_refused_then_again(book_url):
    any_db_url = book_url
    r = run("replay", "-q", "--db", any_db_url, str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert count(any_db_url) == 30
    r = run("replay", "-q", "--db", any_db_url, str(EXAMPLE))
    assert r.returncode == 2
    assert "was replayed into" in r.stderr and "--again" in r.stderr
    assert r.stderr.count("\n") == 1  # one line
    assert count(any_db_url) == 30     # nothing read, nothing stored
    row = replays_now(any_db_url, "path, size, state, packets, messages, first_us, last_us")
    assert len(row) == 1
    path, size, state, packets, messages, first_us, last_us = row[0]
    assert (path, int(size), state, int(packets), int(messages)) == \
        (str(EXAMPLE), EXAMPLE.stat().st_size, "complete", 30, 30)
    assert 0 < int(first_us) <= int(last_us)
    # the first and last packet times are the capture's own (tshark's reading)
    out = subprocess.run(["tshark", "-r", str(EXAMPLE), "-T", "fields", "-e",
                          "frame.time_epoch"], capture_output=True, text=True, check=True)
    times = [round(float(t) * 1e6) for t in out.stdout.split()]
    assert (int(first_us), int(last_us)) == (times[0], times[-1])
    r = run("replay", "-q", "--again", "--db", any_db_url, str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert count(any_db_url) == 60
    # other tables in the same database: not the same replay
    r = run("replay", "-q", "--db", any_db_url, "--table-name", "sip_other", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert count(any_db_url, "sip_other") == 30


def test_many_files_remembered_together_and_those_an_interrupt_left_are_new(book_url,
                                                                              tmp_path):
    """30 small files in one replay: each is remembered as complete (their rows written
    a few statements at a time, not one or two a file). A replay interrupted in the
    middle of many files: those read are remembered, those it never began are not (a
    plain replay takes them, and refuses the others)."""
    first = [tmp_path / f"a{i:02d}.pcap" for i in range(30)]
    for i, f in enumerate(first):
        make_pcap(f, 5 + i)          # (each its own size: each its own file)
    r = run("replay", "-q", "--db", book_url, *map(str, first))
    assert r.returncode == 0, r.stderr
    rows = replays_now(book_url, "path, state, messages")
    assert sorted(rows) == sorted((str(f), "complete", 5 + i) for i, f in enumerate(first))
    assert count(book_url) == sum(5 + i for i in range(30))
    r = run("replay", "-q", "--db", book_url, *map(str, first))
    assert r.returncode == 2 and "(and 29 more: " in r.stderr, r.stderr
    # interrupted while it waits for the 11th file, a pipe: files 1-10 read, 12-30 not
    second = [tmp_path / f"b{i:02d}.pcap" for i in range(30)]
    for i, f in enumerate(second):
        make_pcap(f, 40 + i)
    fifo = tmp_path / "slow.fifo"
    os.mkfifo(fifo)
    files = [*second[:10], fifo, *second[10:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(cmd("replay", "-q", "--db", book_url, *map(str, files)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with open(fifo, "wb") as pipe:     # (opened once the replay opens its end)
        deadline = time.monotonic() + 60
        while count(book_url) < sum(5 + i for i in range(30)) + sum(40 + i for i in
                                                                    range(10)):
            assert time.monotonic() < deadline, "the first ten files were not stored"
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        pipe.write(EXAMPLE.read_bytes())
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    rows = {r[0]: r[1:] for r in replays_now(book_url, "path, state, messages")}
    for i, f in enumerate(second[:10]):
        assert rows[str(f)] == ("complete", 40 + i)
    assert not [f for f in second[10:] if str(f) in rows]      # never begun: no row
    r = run("replay", "-q", "--db", book_url, *map(str, second[10:]))
    assert r.returncode == 0, r.stderr       # taken as new
    r = run("replay", "-q", "--db", book_url, *map(str, second[:10]))
    assert r.returncode == 2 and "(and 9 more: " in r.stderr, r.stderr


def test_records_written_and_read_many_at_a_time(book_url, monkeypatch):
    """mark_started_many / find_many / mark_done_many / mark_unstarted_many, in chunks
    smaller than the files (the statements of several rows each, in every database)."""
    from sipcaptool.store import replays

    monkeypatch.setattr(replays, "FIND_CHUNK", 7)
    monkeypatch.setattr(replays, "MANY_CHUNK", 6)
    a = open_adapter(parse_db_url(book_url))
    try:
        recs = [replays.ReplayRecord(f"k{i}", f"/f{i}.pcap", 100 + i, "ab", "sip_capture",
                                     None, None, f"run{i}", "running", 0, 0, 1000 + i, None)
                for i in range(20)]
        keys = [r.file_key for r in recs]
        assert replays.find_many(a, keys) == {}
        replays.mark_started_many(a, recs)
        assert replays.find_many(a, keys) == {r.file_key: r for r in recs}
        from dataclasses import replace
        done = [replace(r, state="complete", packets=3, messages=2, first_us=1, last_us=2,
                        finished_us=5000) for r in recs[:12]]
        replays.mark_done_many(a, done)
        replays.mark_unstarted_many(a, recs[12:], 6000)
        got = replays.find_many(a, keys)
        assert got == {r.file_key: r for r in done}     # the others: as if never replayed
        # started again later (a new run of the same files): those rows are the ones read
        again = [replace(r, run_id="x" + r.run_id, started_us=9000) for r in recs]
        replays.mark_started_many(a, again)
        assert replays.find_many(a, keys) == {r.file_key: r for r in again}
        # the end of an earlier run written after the new run began changes nothing
        replays.mark_done_many(a, [replace(r, state="interrupted", finished_us=9500)
                                   for r in recs[:3]])
        assert replays.find_many(a, keys) == {r.file_key: r for r in again}
    finally:
        a.close()


def test_standard_input_is_not_remembered(sqlite_url):
    data = EXAMPLE.read_bytes()
    for _ in range(2):
        r = run("replay", "-q", "--db", sqlite_url, "-", stdin=data)
        assert r.returncode == 0, r.stderr
    assert count(sqlite_url) == 60


@pytest.mark.parametrize("parses", ["auto", "always"])
def test_resume_after_kill_stores_every_message_once(book_url, tmp_path, parses):
    """(``parses``: the batches the writer process parses: those it has time for, or
    all of them -- see sipcaptool.store.unparsed)"""
    any_db_url = book_url
    n = 40_000
    pcap = tmp_path / "big.pcap"
    make_pcap(pcap, n)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(cmd("replay", "-q", "--db", any_db_url, "--batch-size", "50",
                             "--writer-parses", parses, str(pcap)), env=env,
                         start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            stored = count(any_db_url)
            if stored >= 2_000:
                break
            time.sleep(0.02)
        assert p.poll() is None, "the replay ended before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)  # the replay and its writer process, at once
    finally:
        p.wait(30)
    stored = count(any_db_url)
    assert 0 < stored < n
    state = replays_now(any_db_url, "state")
    assert state == [("running",)]
    # neither a plain replay nor one with --again by mistake of --resume: say so
    r = run("replay", "-q", "--db", any_db_url, str(pcap))
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr
    assert count(any_db_url) == stored
    r = run("replay", "--json", "--resume", "--db", any_db_url, "--batch-size", "500",
            "--writer-parses", parses, str(pcap))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["dropped"]["stored-before"] == stored
    assert summary["stored_total"] == n - stored
    assert count(any_db_url) == n
    # every message once: each has its own capture time
    dup = select(any_db_url, "SELECT micro_ts, COUNT(*) FROM sip_capture GROUP BY micro_ts "
                             "HAVING COUNT(*) > 1")
    assert dup == []
    assert select(any_db_url, "SELECT COUNT(DISTINCT micro_ts) FROM sip_capture")[0][0] == n
    assert replays_now(any_db_url, "state, messages") == \
        [("complete", n)]
    # and now it is complete: a third run without --resume is refused, with it the file
    # is skipped (and said so), nothing stored
    r = run("replay", "-q", "--db", any_db_url, str(pcap))
    assert r.returncode == 2 and "--again" in r.stderr
    r = run("replay", "--resume", "--db", any_db_url, str(pcap))
    assert r.returncode == 0, r.stderr
    assert f"{pcap}: replayed completely before, skipped (--resume)" in r.stderr
    assert select(any_db_url, "SELECT COUNT(*) FROM sip_capture")[0][0] == n


def test_resume_refused_when_the_table_is_chosen_at_random(sqlite_url):
    r = run("replay", "-q", "--resume", "--db", sqlite_url, "--table-name", "a|b",
            "--mt-mode", "rand", str(EXAMPLE))
    assert r.returncode == 2
    assert "mt_mode rand" in r.stderr and "mt_mode hash" in r.stderr
    r = run("replay", "-q", "--resume", "--again", "--db", sqlite_url, str(EXAMPLE))
    assert r.returncode == 2 and "exclude each other" in r.stderr


@needs_shared("corpus")
def test_explain_lists_the_frames_tshark_numbers(tmp_path):
    pcap = CORPUS / "sip-udp-fuzzed-malformed.pcap"
    r = run("replay", "--explain", "--db", "none", str(pcap))
    assert r.returncode == 0, r.stderr
    lines = [ln.split("\t") for ln in r.stdout.splitlines() if "\tframe " in ln]
    assert lines
    # the summary's counters of malformed SIP are the ones listed, frame by frame
    r2 = run("replay", "--json", "--explain", "--db", "none", str(pcap))
    summary = json.loads(r2.stdout)
    listed = summary["explained"]
    assert len(listed) == len(lines)
    malformed_sip = sum(v for k, v in summary["malformed"].items() if k.startswith("sip-"))
    assert malformed_sip == sum(1 for e in listed for reason in e["reasons"]
                                if reason.startswith("malformed:sip-"))
    assert malformed_sip > 0
    assert "--capture-bad-msgs 1" in summary["hint"]
    assert "hint: " in r.stdout and "--capture-bad-msgs 1" in r.stdout
    # tshark's view of the same frame numbers: the same time and addresses
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=\t",
                          "-e", "frame.number", "-e", "frame.time_epoch", "-e", "ip.src",
                          "-e", "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport"],
                         capture_output=True, text=True, check=True)
    frames = {}
    for ln in out.stdout.splitlines():
        f = ln.split("\t")
        frames[int(f[0])] = f
    checked = 0
    for e in listed:
        f = frames[e["frame"]]
        assert e["ts_us"] == round(float(f[1]) * 1e6), (e, f)
        if f[4] and e["src"] != "?" and "," not in f[2]:
            assert e["src"] == f"{f[2]}:{f[4]}" and e["dst"] == f"{f[3]}:{f[5]}", (e, f)
            checked += 1
    assert checked >= malformed_sip // 2
    # with capture_bad_msgs the same frames are stored, and no hint
    r3 = run("replay", "--json", "--db", "none", "--capture-bad-msgs", "1", str(pcap))
    assert "hint" not in json.loads(r3.stdout)


def test_errors_are_printed_once(tmp_path, sqlite_url):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(EXAMPLE.read_bytes()[:-100])
    r = run("replay", "--db", sqlite_url, str(cut))
    assert r.returncode == 3
    both = r.stdout + r.stderr
    assert both.count("cut off") == 1, both


def test_many_files_killed_then_resumed_with_the_same_command_line(book_url, tmp_path):
    """``replay *.pcap`` killed (SIGKILL) in the middle of many files, then the same
    command line with --resume: the files stored whole are skipped (said once), the one
    cut short and those not begun are stored, every message exactly once."""
    files = [tmp_path / f"c{i:02d}.pcap" for i in range(40)]
    for i, f in enumerate(files):
        make_pcap(f, 200 + i)
    total = sum(200 + i for i in range(40))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(cmd("replay", "-q", "--db", book_url, *map(str, files)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while count(book_url) < total // 3:
        assert time.monotonic() < deadline and p.poll() is None, "nothing stored in time"
        time.sleep(0.02)
    writers = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    p.kill()
    p.communicate(timeout=60)
    deadline = time.monotonic() + 60      # its writer process ends once it is alone

    def alive(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while any(alive(w) for w in writers):
        assert time.monotonic() < deadline, "the writer process did not end"
        time.sleep(0.05)
    before = count(book_url)
    assert 0 < before < total
    r = run("replay", "--db", book_url, *map(str, files))
    assert r.returncode == 2, r.stderr         # without --resume: refused
    r = run("replay", "--resume", "--db", book_url, *map(str, files))
    assert r.returncode == 0, r.stderr
    assert count(book_url) == total            # each message once
    rows = replays_now(book_url, "path, state, messages")
    assert sorted(rows) == sorted((str(f), "complete", 200 + i) for i, f in enumerate(files))
    # again with --resume: everything is complete, every file skipped, nothing stored
    r = run("replay", "--resume", "--db", book_url, "--json", *map(str, files))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stored_total"] == 0
    assert [f.get("skipped") for f in doc["files"]] == ["replayed completely before"] * 40
    assert count(book_url) == total
    r = run("replay", "--resume", "--db", book_url, *map(str, files))
    assert f"{files[0]} and 39 more: replayed completely before, skipped (--resume)" \
        in r.stderr
