"""The on-disk spool, the batch ids that keep an uncertain commit from being written
twice, and db_insert_mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from store_helpers import connect, q, sip_row

from sipcaptool.errors import StoreError
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter
from sipcaptool.store.outcomes import Drained, Spooled, Written
from sipcaptool.store.spool import Spool, SpoolFullError, scan_segment, status
from sipcaptool.store.url import parse_db_url
from sipcaptool.store.writer import Writer
from sipcaptool.store.writer_process import WriterCore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = parse_db_url("postgresql://u@127.0.0.1:5/x")


def count(url: str, table: str = "sip_capture") -> int:
    c = connect(url)
    try:
        cur = c.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {q(url, table)}")
        return cur.fetchone()[0]
    finally:
        c.close()


def test_records_round_trip_in_order_and_survive_a_restart(tmp_path):
    sp = Spool(str(tmp_path), URL)
    for i in range(5):
        sp.append(f"b{i}", "sip_capture", "sip", 10 + i, b"payload %d" % i)
    sp.append("rows", "sip_capture", "sip", 2, [sip_row(1), sip_row(2)])
    assert sp.pending_batches == 6 and sp.pending_rows == 10 + 11 + 12 + 13 + 14 + 2
    head = sp.peek()
    assert (head.batch_id, head.payload) == ("b0", b"payload 0")
    sp.pop()
    sp.close()
    # a new process (here: a new Spool) takes over what is left, in order
    sp2 = Spool(str(tmp_path), URL)
    got = []
    while sp2.pending_batches:
        r = sp2.peek()
        got.append((r.batch_id, r.payload))
        sp2.pop()
    assert [g[0] for g in got] == ["b1", "b2", "b3", "b4", "rows"]
    assert got[-1][1] == [sip_row(1), sip_row(2)]
    sp2.close()
    assert not [n for n in os.listdir(sp2.dir) if n.endswith(".seg")]


def test_torn_last_record_is_ignored_and_earlier_ones_kept(tmp_path):
    sp = Spool(str(tmp_path), URL)
    for i in range(3):
        sp.append(f"b{i}", "t", "sip", 1, b"x" * 1000)
    seg = sp._active
    sp.close()
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:   # a crash in the middle of the third record
        f.truncate(size - 300)
    assert [r.batch_id for r in scan_segment(seg)] == ["b0", "b1"]
    with open(seg, "r+b") as f:   # a flipped bit in the second record
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    sp2 = Spool(str(tmp_path), URL)
    assert [r.batch_id for r in sp2._queue] == ["b0"]
    # new records go to a new segment, after the damaged one
    sp2.append("b9", "t", "sip", 1, b"y")
    assert [r.batch_id for r in sp2._queue] == ["b0", "b9"]
    sp2.close()


def test_max_bytes_refuses_and_status_reports(tmp_path):
    sp = Spool(str(tmp_path), URL, max_bytes=5000)
    sp.append("a", "t", "sip", 7, b"x" * 2000)
    sp.append("b", "t", "sip", 7, b"x" * 2000)
    with pytest.raises(SpoolFullError):
        sp.append("c", "t", "sip", 7, b"x" * 2000)
    st = status(str(tmp_path))
    assert len(st) == 1 and st[0]["batches"] == 2 and st[0]["rows"] == 14
    assert st[0]["held"] == 1 and st[0]["db_url"] == URL.redacted()
    sp.close()
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "spool", "status", "--spool-dir",
                        str(tmp_path), "--json"], capture_output=True, text=True, cwd=ROOT)
    doc = json.loads(p.stdout)
    assert doc["batches"] == 2 and doc["rows"] == 14 and doc["targets"][0]["held"] == 0


class _CommitThenFail:
    """Commits the batch, then reports the connection lost -- the outcome a client sees
    when the server dies between the commit and its acknowledgement."""

    def __init__(self, adapter, fail_times=1):
        self.a, self.fail_times = adapter, fail_times

    def __getattr__(self, name):
        return getattr(self.a, name)

    def write(self, *args):
        written = self.a.write(*args)
        if self.fail_times:
            self.fail_times -= 1
            e = StoreError("connection lost during COMMIT")
            e.transient = True
            raise e
        return written


def test_uncertain_commit_is_not_written_twice(any_db_url, tmp_path):
    events = []
    a = open_adapter(any_db_url)
    core = WriterCore(_CommitThenFail(a), 3, 10, None, events.append)
    core.start()
    core.batch("sip_capture", "sip", 3, a.format_batch("sip", [sip_row(i) for i in range(3)]),
               "batch-1")
    assert isinstance(events[-1], Written) and events[-1].table == "sip_capture"
    assert events[-1].written_now is False  # found
    # through the spool too: written, "connection lost", spooled, drained -> found
    sp = Spool(str(tmp_path), a.url)
    core = WriterCore(_CommitThenFail(a), 0, 0, sp, events.append)
    core.batch("sip_capture", "sip", 2, a.format_batch("sip", [sip_row(7), sip_row(8)]),
               "batch-2")
    assert isinstance(events[-1], Spooled) or isinstance(events[-2], Spooled)
    core.next_probe = 0
    assert core.pump()
    assert [e for e in events if isinstance(e, Drained)][-1].written_now is False
    a.close()
    sp.close()
    assert count(any_db_url) == 5


def test_writer_spools_while_unreachable_and_drains(tmp_path):
    db = tmp_path / "later" / "c.db"
    url = f"sqlite:///{db}"
    st = Stats()
    w = Writer(url, st, batch_size=5, flush_interval=0.05, spool_dir=str(tmp_path / "sp"))
    for i in range(12):
        w.add("sip_capture", "sip", sip_row(i))
    w.flush()
    assert st["db:spooled"] == 3 and st["spool_batches"] == 3 and st["queue_depth"] == 0
    db.parent.mkdir()
    for i in range(12, 20):
        w.add("sip_capture", "sip", sip_row(i))
    deadline = time.monotonic() + 15
    while st["stored:sip_capture"] < 15 and time.monotonic() < deadline:
        time.sleep(0.1)
    w.close()
    assert st["stored:sip_capture"] == 20 and st["spool_batches"] == 0
    assert count(url) == 20


def test_no_spool_unreachable_at_start_is_an_error(tmp_path):
    with pytest.raises(StoreError):
        Writer(f"sqlite:///{tmp_path}/missing/x.db", Stats(), spool_dir=None)
    with pytest.raises(StoreError):
        Writer(f"sqlite:///{tmp_path}/missing/x.db", Stats(), spool_dir=str(tmp_path / "s"),
               require_db_at_start=True)


def test_insert_mode_2_never_blocks_and_stores_everything(pg_url):
    st = Stats()
    with Writer(pg_url, st, batch_size=10, flush_interval=0.1, insert_mode=2,
                queue_batches=1) as w:
        for i in range(500):
            w.add("sip_capture", "sip", sip_row(i))
    assert st["stored:sip_capture"] == 500 and st["queue_depth"] == 0
    assert count(pg_url) == 500


def test_insert_mode_1_delayed_for_myisam_plain_for_innodb(mysql_url, caplog):
    a = open_adapter(mysql_url)
    a.connect()
    a.create_tables(["sip_myisam", "sip_innodb"], aux=False)
    a.execute_ddl(["ALTER TABLE `sip_myisam` ENGINE=MyISAM"])
    a.close()
    st = Stats()
    with caplog.at_level("INFO"):
        with Writer(mysql_url, st, batch_size=10, flush_interval=0, insert_mode=1,
                    background=False) as w:
            for i in range(25):
                w.add("sip_myisam", "sip", sip_row(i))
                w.add("sip_innodb", "sip", sip_row(i))
    text = caplog.text
    assert "sip_myisam has engine MyISAM: INSERT DELAYED" in text
    assert "sip_innodb has engine InnoDB: INSERT DELAYED not supported" in text
    time.sleep(0.5)  # DELAYED rows are queued by the server
    assert count(mysql_url, "sip_innodb") == 25 and count(mysql_url, "sip_myisam") == 25


def test_drain_shows_what_the_adapter_changed(tmp_path, monkeypatch):
    """``spool drain`` counts what the adapter changed so that the database took the
    rows (``db:unrepresentable``, ``truncated:<column>``), and shows it under the names
    of the other commands' summaries."""
    from collections import Counter

    from click.testing import CliRunner

    import sipcaptool.store
    from sipcaptool.cli import cli
    from sipcaptool.store.sqlite import SqliteAdapter

    url = f"sqlite:///{tmp_path}/c.db"

    class Changing(SqliteAdapter):
        def write(self, *args, **kwargs):
            written = super().write(*args, **kwargs)
            self.counts = Counter({"db:unrepresentable": 2, "truncated:method": 1})
            return written

    def spool_one(batch_id: str) -> None:
        sp = Spool(str(tmp_path / "sp"), parse_db_url(url))
        sp.append(batch_id, "sip_capture", "sip", 2,
                  open_adapter(url).format_batch("sip", [sip_row(1), sip_row(2)]))
        sp.close()

    monkeypatch.setattr(sipcaptool.store, "open_adapter", lambda u, **kw: Changing(u))
    args = ["spool", "drain", "--db", url, "--spool-dir", str(tmp_path / "sp")]
    spool_one("b1")
    r = CliRunner().invoke(cli, args + ["--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["stored"] == {"sip_capture": 2} and doc["left"] == {"batches": 0, "rows": 0}
    assert doc["truncated_values"] == {"method": 1}
    assert doc["db"]["unrepresentable"] == 2 and doc["db"]["batches"] == 1
    spool_one("b2")
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "values cut to column width: 1\n  method: 1\n" in r.output
    assert "encoding cannot hold (stored as ?): 2\n" in r.output
    assert count(url) == 4
