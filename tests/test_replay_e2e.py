"""`sipcaptool replay` end to end, run as a user runs it (a subprocess), rows checked in
SQLite and in the real MariaDB and PostgreSQL servers."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from sipcaptool.record import SIP_COLUMN_NAMES

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "tests" / "pcaps"
EXAMPLE = ROOT / "examples" / "call.pcap"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def sqlite_rows(path: Path, table: str = "sip_capture") -> list[dict]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY id")]
    con.close()
    return rows


def fetch_rows(url: str, table: str = "sip_capture") -> list[dict]:
    """Rows of a table in any of the three databases, as plain Python values."""
    if url.startswith("sqlite:///"):
        return sqlite_rows(Path(url[len("sqlite:///"):]), table)
    if url.startswith("mysql://"):
        import pymysql

        from sipcaptool.store.url import parse_db_url

        u = parse_db_url(url)
        c = pymysql.connect(host=u.host, port=u.port or 3306, user=u.user, password=u.password or "",
                            database=u.database, cursorclass=pymysql.cursors.DictCursor)
        with c.cursor() as cur:
            cur.execute(f"SELECT * FROM `{table}` ORDER BY id")
            rows = list(cur.fetchall())
        c.close()
    else:
        import psycopg2
        import psycopg2.extras

        from sipcaptool.store.url import parse_db_url

        u = parse_db_url(url)
        c = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.user, dbname=u.database)
        with c.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(f'SELECT * FROM "{table}" ORDER BY id')
            rows = [dict(r) for r in cur.fetchall()]
        c.close()
    out = []
    for r in rows:
        r = dict(r)
        if isinstance(r.get("msg"), memoryview):
            r["msg"] = bytes(r["msg"])
        if not isinstance(r["date"], str):
            r["date"] = r["date"].strftime("%Y-%m-%d %H:%M:%S")
        out.append(r)
    return out


def normalise(rows: list[dict]) -> list[tuple]:
    return [tuple(bytes(r[c]) if c == "msg" else r[c] for c in SIP_COLUMN_NAMES) for r in rows]


# ------------------------------------------------------------------ SQLite, the default

def test_example_replays_into_default_sqlite(tmp_path):
    p = run("replay", str(EXAMPLE), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "rows stored:       30" in p.stdout
    rows = sqlite_rows(tmp_path / "sipcapture.db")
    assert len(rows) == 30
    methods = [r["method"] for r in rows]
    assert methods.count("INVITE") == 5 and methods.count("BYE") == 5 and methods.count("ACK") == 5
    assert methods.count("180") == 5 and methods.count("200") == 10
    assert len({r["callid"] for r in rows}) == 5
    inv = rows[0]
    assert inv["method"] == "INVITE" and inv["ruri"] == "sip:service@127.0.0.1:15060"
    assert inv["source_ip"] == "127.0.0.1" and inv["source_port"] == 15061
    assert inv["destination_port"] == 15060 and inv["proto"] == 1 and inv["family"] == 2
    assert inv["type"] == 1 and inv["node"] == "homer01"
    assert inv["correlation_id"] == inv["callid"]
    assert inv["msg"].startswith(b"INVITE sip:service@127.0.0.1:15060 SIP/2.0\r\n")
    assert inv["content_type"] == "application/sdp"
    reply = next(r for r in rows if r["method"] == "180")
    assert reply["type"] == 2 and reply["reply_reason"] == "Ringing" and reply["ruri"] == ""
    # micro_ts strictly from the capture, date its UTC second
    import time

    assert inv["date"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(inv["micro_ts"] // 1_000_000))


def test_json_summary(tmp_path):
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/x.db", str(EXAMPLE))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["packets"] == 30 and s["stored_total"] == 30 and s["stored"] == {"sip_capture": 30}
    assert s["files"][0]["file"] == str(EXAMPLE)


@pytest.mark.parametrize("name", sorted(p.name[:-len(".expected.jsonl")]
                                        for p in PCAPS.glob("*.expected.jsonl")))
def test_project_captures(tmp_path, name):
    cap = next(PCAPS.glob(name + ".pcap*"))
    expected = [json.loads(line) for line in
                (PCAPS / f"{name}.expected.jsonl").read_text().splitlines()]
    db = tmp_path / "t.db"
    p = run("replay", "-q", "--db", f"sqlite:///{db}", str(cap))
    assert p.returncode == 0, p.stderr
    rows = sqlite_rows(db)
    got = [{k: r[k] for k in ("micro_ts", "source_ip", "source_port", "destination_ip",
                              "destination_port", "proto", "family", "method", "callid")}
           | {"msg_len": len(r["msg"])} for r in rows]
    want = [{k: e[k] for k in got[0]} if got else e for e in expected]
    assert got == want
    for e, r in zip(expected, rows, strict=False):
        if "node" in e:
            assert r["node"] == e["node"]


# ------------------------------------------------------------------ routing

def _two_tables(tmp_path, *extra):
    db = tmp_path / "r.db"
    p = run("replay", "-q", "--db", f"sqlite:///{db}", "--table-name", "sip_a|sip_b", *extra,
            str(PCAPS / "udp-vlan-qinq.pcap"), str(EXAMPLE))
    assert p.returncode == 0, p.stderr
    return sqlite_rows(db, "sip_a"), sqlite_rows(db, "sip_b")


def test_hash_keeps_calls_together_and_matches_crc32(tmp_path):
    a, b = _two_tables(tmp_path, "--mt-mode", "hash", "--hash-source", "call_id")
    assert a and b and len(a) + len(b) == 39
    for table_index, rows in enumerate((a, b)):
        for r in rows:
            key = r["callid"].split()[0]
            assert zlib.crc32(key.encode()) % 2 == table_index
    assert not ({r["callid"] for r in a} & {r["callid"] for r in b})


def test_round_robin_alternates(tmp_path):
    a, b = _two_tables(tmp_path, "--mt-mode", "round_robin")
    assert abs(len(a) - len(b)) <= 1 and len(a) + len(b) == 39


def test_strftime_table_names_in_utc(tmp_path):
    db = tmp_path / "d.db"
    p = run("replay", "-q", "--db", f"sqlite:///{db}", "--table-name", "sip_%Y%m%d",
            str(PCAPS / "raw-ip.pcap"))
    assert p.returncode == 0, p.stderr
    # T0 of the generated captures is 2025-11-24T16:00:00Z
    assert len(sqlite_rows(db, "sip_20251124")) == 2


def test_capture_mode_definition(tmp_path):
    db = tmp_path / "m.db"
    p = run("replay", "-q", "--capture-mode",
            f"calls=>db_url=sqlite:///{db};table_name=c1|c2;mt_mode=hash;hash_source=call_id;",
            str(EXAMPLE))
    assert p.returncode == 0, p.stderr
    assert len(sqlite_rows(db, "c1")) + len(sqlite_rows(db, "c2")) == 30


# ------------------------------------------------------------------ bad input

def test_missing_file(tmp_path):
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", str(tmp_path / "nope.pcap"))
    assert p.returncode == 3
    assert p.stderr.strip().splitlines() == [f"sipcaptool: error: {tmp_path}/nope.pcap: no such file"]


def test_not_a_capture(tmp_path):
    f = tmp_path / "notes.pcap"
    f.write_text("hello, this is not a capture\n")
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", str(f))
    assert p.returncode == 3
    assert "not a pcap or pcapng capture file" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_truncated_capture_keeps_everything_before_the_cut(tmp_path):
    data = EXAMPLE.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 100])  # inside the last packet
    db = tmp_path / "t.db"
    p = run("replay", "--json", "--db", f"sqlite:///{db}", str(cut))
    assert p.returncode == 3, p.stderr
    assert "cut off after packet 29" in p.stderr
    assert len(sqlite_rows(db)) == 29
    assert json.loads(p.stdout)["files"][0]["truncated"] is True


def test_many_files_never_held_open_at_once(tmp_path):
    """`replay /spool/*.pcap` over more files than the open-file limit: each file is
    opened only when its turn comes (the limit here: 128 descriptors, 300 files)."""
    import gzip
    import resource

    data = EXAMPLE.read_bytes()
    for i in range(300):
        if i % 3:
            (tmp_path / f"c{i:03}.pcap").write_bytes(data)
        else:
            (tmp_path / f"c{i:03}.pcap.gz").write_bytes(gzip.compress(data))
    files = sorted(str(f) for f in tmp_path.glob("c*.pcap*"))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "--db",
                        f"sqlite:///{tmp_path}/m.db", *files], capture_output=True, text=True,
                       env=env, timeout=300, preexec_fn=low_limit)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout)
    assert s["stored_total"] == 300 * 30 and len(s["files"]) == 300


def test_a_bad_file_among_good_ones_is_reported_and_the_rest_stored(tmp_path):
    good = tmp_path / "a.pcap"
    good.write_bytes(EXAMPLE.read_bytes())
    cut = tmp_path / "b.pcap"
    cut.write_bytes(EXAMPLE.read_bytes()[:10])  # the file header itself is cut off
    last = tmp_path / "c.pcap"
    last.write_bytes(EXAMPLE.read_bytes())
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/x.db", str(good), str(cut),
            str(last))
    assert p.returncode == 3
    assert json.loads(p.stdout)["stored_total"] == 60
    assert "b.pcap: capture file header is cut off" in p.stderr and "Traceback" not in p.stderr


def _snapped_capture(path: Path, snaplen: int = 200) -> tuple[bytes, bytes]:
    """A pcap written with a snap length: a short message fits, a long one is cut."""
    from sipcaptool.testing.pcapgen import PcapWriter, udp4_frame

    short = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n" \
        b"Call-ID: s\r\nCSeq: 2 BYE\r\n\r\n"
    long_ = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
             b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\n"
             b"From: <sip:alice@example.com>;tag=1\r\n"
             b"To: <sip:bob@example.com>\r\nCall-ID: cut\r\n"
             b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    with open(path, "wb") as f:
        w = PcapWriter(f, snaplen=snaplen)
        for i, msg in enumerate((short, long_)):
            frame = udp4_frame("10.0.0.1", 5060, "10.0.0.2", 5060, msg)
            w.write(1_700_000_000_000_000 + i, frame[:snaplen], wirelen=len(frame))
    assert len(short) + 42 <= snaplen < len(long_) + 42
    return short, long_


@pytest.mark.parametrize("how", ["pcap", "pcapng", "stdin"])
def test_frames_cut_by_the_snap_length_are_counted_not_stored_in_part(tmp_path, how):
    """tcpdump -s 200: a message cut short is not stored as a row with half its headers
    (or none); it is counted as malformed: snapped and a warning says why."""
    cap = tmp_path / "snap.pcap"
    short, _ = _snapped_capture(cap)
    db = tmp_path / "x.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sipcaptool", "replay", "--json", "--db", f"sqlite:///{db}"]
    if how == "pcapng":  # a pcapng file whose interface block does not say (editcap -s)
        editcap = shutil.which("editcap")
        if editcap is None:
            if os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1":
                pytest.fail("editcap (tshark) is needed for this test")
            pytest.skip("editcap (tshark) not installed")
        ng = tmp_path / "snap.pcapng"
        subprocess.run([editcap, "-F", "pcapng", str(cap), str(ng)], check=True)
        p = subprocess.run(cmd + [str(ng)], capture_output=True, text=True, env=env, timeout=60)
    elif how == "stdin":
        with open(cap, "rb") as stdin:
            p = subprocess.run(cmd + ["-"], stdin=stdin, capture_output=True, text=True,
                               env=env, timeout=60)
    else:
        p = subprocess.run(cmd + [str(cap)], capture_output=True, text=True, env=env,
                           timeout=60)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["stored_total"] == 1 and s["malformed"] == {"snapped": 1}
    assert [r["msg"] for r in sqlite_rows(db)] == [short]
    assert "cut short by the capture's snap length" in p.stderr


# ------------------------------------------------------- compressed captures, stdin

def _big_capture(path: Path, n: int = 3000) -> None:
    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame

    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(n):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def test_gzip_capture_and_stdin_give_the_same_rows_as_the_plain_file(tmp_path):
    import gzip

    plain = tmp_path / "c.pcap"
    _big_capture(plain)
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert run("replay", "-q", "--db", f"sqlite:///{tmp_path}/plain.db", str(plain)).returncode == 0
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/gz.db", str(gz))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["stored_total"] == 3000
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(plain, "rb") as stdin:
        p2 = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "--db",
                             f"sqlite:///{tmp_path}/stdin.db", "-"], stdin=stdin,
                            capture_output=True, text=True, env=env, timeout=300)
    assert p2.returncode == 0, p2.stderr
    want = normalise(sqlite_rows(tmp_path / "plain.db"))
    assert len(want) == 3000
    assert normalise(sqlite_rows(tmp_path / "gz.db")) == want
    assert normalise(sqlite_rows(tmp_path / "stdin.db")) == want


def test_gzip_capture_cut_off_keeps_everything_before_the_cut(tmp_path):
    import gzip

    plain = tmp_path / "c.pcap"
    _big_capture(plain)
    data = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) // 2])
    db = tmp_path / "cut.db"
    p = run("replay", "--json", "--db", f"sqlite:///{db}", str(cut))
    assert p.returncode == 3, p.stderr
    s = json.loads(p.stdout)
    stored = s["stored_total"]
    assert 0 < stored < 3000 and s["files"][0]["truncated"] is True
    assert f"cut off after packet {stored}" in p.stderr and "gzip" in p.stderr
    assert "Traceback" not in p.stderr
    # exactly the first messages of the capture, none mangled
    assert run("replay", "-q", "--db", f"sqlite:///{tmp_path}/all.db", str(plain)).returncode == 0
    assert normalise(sqlite_rows(db)) == normalise(sqlite_rows(tmp_path / "all.db"))[:stored]


@pytest.mark.parametrize("content,why", [
    (b"\x1f\x8b" + b"\x00" * 30, "not a readable gzip file"),
    (__import__("gzip").compress(b"hello, not a capture\n"), "not a pcap or pcapng capture file"),
])
def test_bad_gzip_capture_is_one_clear_line(tmp_path, content, why):
    f = tmp_path / "bad.pcap.gz"
    f.write_bytes(content)
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", str(f))
    assert p.returncode == 3
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and "bad.pcap.gz" in lines[0], p.stderr


def test_named_pipe(tmp_path):
    """A FIFO (or a shell's <(zcat x.pcap.gz)) is read as a stream, not refused as empty."""
    import threading

    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(EXAMPLE.read_bytes())
    t = threading.Thread(target=feed)
    t.start()
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/x.db", str(fifo))
    t.join(10)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["stored_total"] == 30


def test_stdin_empty_or_given_twice(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sipcaptool", "replay", "--db", f"sqlite:///{tmp_path}/x.db"]
    p = subprocess.run(cmd + ["-"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 3 and "standard input is empty" in p.stderr
    p = subprocess.run(cmd + ["-", "-"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and "only once" in p.stderr


def test_unknown_link_type(tmp_path):
    from sipcaptool.testing.pcapgen import PcapWriter

    f = tmp_path / "odd.pcap"
    with open(f, "wb") as fh:
        PcapWriter(fh, linktype=147).write(1_700_000_000_000_000, b"\0" * 40)  # USER0
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", str(f))
    assert p.returncode == 3
    assert "link type 147" in p.stderr and "Traceback" not in p.stderr


def test_bad_setting_names_setting_value_allowed(tmp_path):
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", "--insert-retries", "900", str(EXAMPLE))
    assert p.returncode == 2
    assert "insert_retries = 900" in p.stderr and "0..500" in p.stderr


def test_unreachable_database_exit_4_without_password(tmp_path):
    p = run("replay", "--db", "mysql://root:s3cretpw@127.0.0.1:1/homer", str(EXAMPLE))
    assert p.returncode == 4, p.stderr
    assert "s3cretpw" not in p.stderr and "s3cretpw" not in p.stdout
    assert "Traceback" not in p.stderr


def test_bad_db_url(tmp_path):
    p = run("replay", "--db", "oracle://x@y/z", str(EXAMPLE))
    assert p.returncode == 2 and "oracle://" in p.stderr


# ------------------------------------------------------------------ the server databases

def _replay_all(url: str):
    p = run("db", "init", "--db", url)
    assert p.returncode == 0, p.stderr
    p = run("db", "init", "--db", url)  # idempotent
    assert p.returncode == 0, p.stderr
    caps = [str(EXAMPLE)] + [str(c) for c in sorted(PCAPS.glob("*.pcap"))]
    p = run("replay", "-q", "--db", url, *caps)
    assert p.returncode == 0, p.stderr
    return fetch_rows(url)


@pytest.mark.services
def test_same_rows_in_all_three_databases(tmp_path, mysql_url, pg_url):
    lite = _replay_all(f"sqlite:///{tmp_path}/all.db")
    my = _replay_all(mysql_url)
    pg = _replay_all(pg_url)
    assert len(lite) == 30 + sum(1 for p in PCAPS.glob("*.pcap")
                                 for _ in (PCAPS / (p.stem + ".expected.jsonl")).read_text()
                                 .splitlines())
    assert normalise(my) == normalise(lite)
    assert normalise(pg) == normalise(lite)


def test_interrupt_stores_what_was_read_and_exits_130(tmp_path):
    """Ctrl-C during a long replay: stop at the next batch, store what was read, say so."""
    import signal
    import time

    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame

    cap = tmp_path / "long.pcap"
    with open(cap, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(300_000):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))
    db = tmp_path / "i.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "sipcaptool", "replay", "--json", "--db",
                          f"sqlite:///{db}", str(cap)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted_by"] == "SIGINT"
    stored = summary["stored_total"]
    assert 0 < stored < 300_000
    assert len(sqlite_rows(db)) == stored == summary["messages"]


@pytest.mark.services
def test_mysql_values_cut_by_a_narrower_existing_table_are_counted(tmp_path, mysql_url):
    """LOAD DATA LOCAL turns data errors into warnings: a table made elsewhere with
    narrower columns than ours has values cut by the server. That must not be silent."""
    import pymysql

    from sipcaptool.store.url import parse_db_url

    assert run("db", "init", "--db", mysql_url).returncode == 0
    u = parse_db_url(mysql_url)
    c = pymysql.connect(host=u.host, port=u.port or 3306, user=u.user, password="",
                        database=u.database, autocommit=True)
    with c.cursor() as cur:
        cur.execute("ALTER TABLE sip_capture MODIFY method VARCHAR(3) NOT NULL DEFAULT ''")
    c.close()
    p = run("replay", "--json", "-q", "--db", mysql_url, str(EXAMPLE))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["stored_total"] == 30
    long_methods = [r for r in fetch_rows(mysql_url) if r["method"] in ("INV", "REG", "OPT")]
    assert long_methods, "the server was expected to cut INVITE to three characters"
    assert s["db"]["warnings"] >= len(long_methods)
    assert "changed or left out values" in p.stderr and "method" in p.stderr
    # (the same file again: --again, or the replay is refused as done before)
    p = run("replay", "--again", "--db", mysql_url, str(EXAMPLE))
    assert "database warnings:" in p.stdout


@pytest.mark.services
def test_rows_postgres_refuses_are_counted_and_the_rest_stored(tmp_path, pg_url):
    """A table made elsewhere refuses some rows (here: methods longer than its column):
    every other message is stored, the refused ones are counted, the exit code says so."""
    import psycopg2

    from sipcaptool.store.url import parse_db_url

    assert run("db", "init", "--db", pg_url).returncode == 0
    u = parse_db_url(pg_url)
    c = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.user, dbname=u.database)
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute('ALTER TABLE sip_capture ALTER COLUMN "method" TYPE VARCHAR(3)')
    c.close()
    lite = f"sqlite:///{tmp_path}/all.db"
    assert run("replay", "-q", "--db", lite, str(EXAMPLE)).returncode == 0
    expected = [r for r in fetch_rows(lite) if len(r["method"]) <= 3]
    p = run("replay", "--json", "--db", pg_url, str(EXAMPLE))
    assert p.returncode == 4, p.stderr
    s = json.loads(p.stdout)
    assert s["stored_total"] == len(expected) and 0 < len(expected) < 30
    assert s["dropped"] == {"db-error": 30 - len(expected)}
    assert s["db"]["split"] == 1
    assert normalise(fetch_rows(pg_url)) == normalise(expected)
    assert "refused" in p.stderr and "value too long" in p.stderr


def _closed_port() -> int:
    """A loopback TCP port nothing listens on (connecting is refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_hep_to_messages_lost_exit_4_and_spooled_ones_do_not(tmp_path):
    """``replay --db none --hep-to`` with no collector up: what the spool holds waits for
    the next run (exit 0); what neither memory nor the spool could hold is lost, said in
    one line and in the JSON errors, and the exit status is 4."""
    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame

    cap = tmp_path / "many.pcap"
    with open(cap, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(1000):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))
    target = f"tcp:127.0.0.1:{_closed_port()}"
    kept = run("replay", str(cap), "--db", "none", "--hep-to", target, "--json", "-q",
               "--spool-dir", str(tmp_path / "spool-a"))
    assert kept.returncode == 0, kept.stderr
    doc = json.loads(kept.stdout)
    assert doc["errors"] == [] and not doc["dropped"]
    assert doc["hep_out"]["spooled"] == 1000
    # what waits for a collector shows in spool status, per collector
    st = run("spool", "status", "--spool-dir", str(tmp_path / "spool-a"), "--json")
    assert st.returncode == 0, st.stderr
    hep = json.loads(st.stdout)["hep"]
    assert hep["messages"] == 1000 and hep["collectors"][0]["db_url"] == f"hep:{target[4:]}"
    st = run("spool", "status", "--spool-dir", str(tmp_path / "spool-a"))
    assert f"HEP to {target[4:]}: " in st.stdout and " 1000 messages, " in st.stdout
    lost = run("replay", str(cap), "--db", "none", "--hep-to", target, "--json", "-q",
               "--hep-buffer", "64K", "--spool-max-bytes", "64K",
               "--spool-dir", str(tmp_path / "spool-b"))
    assert lost.returncode == 4, lost.stderr
    doc = json.loads(lost.stdout)
    dropped = sum(v for k, v in doc["dropped"].items() if k.startswith("hep-"))
    assert 0 < dropped < 1000
    assert dropped + doc["hep_out"]["spooled"] == 1000     # every message: spooled or lost
    line = f"{dropped} messages could not be sent on as HEP and are lost (dropped: "
    assert [e for e in doc["errors"] if e.startswith(line)], doc["errors"]
    assert f"sipcaptool: error: {line}" in lost.stderr
