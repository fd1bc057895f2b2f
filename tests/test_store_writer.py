"""The batching writer: foreground and background, size and time flushes, errors,
retries, and no loss on SIGINT."""

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    aux_row,
    batch_positions,
    count,
    read_rows,
    rows_refusable_by_method,
    sip_row,
)

from sipcaptool.errors import ConfigError, StoreError
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter
from sipcaptool.store.outcomes import Drained, DroppedDbError, Split, Written
from sipcaptool.store.retry import write_with_retries
from sipcaptool.store.writer import Position, Writer
from sipcaptool.store.writer_process import WriterCore

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("background", [False, True])
def test_rows_grouped_per_table_and_flushed_by_size(any_db_url, background):
    st = Stats()
    w = Writer(any_db_url, st, batch_size=10, flush_interval=0, background=background)
    rows_a = [sip_row(i) for i in range(25)]
    rows_b = [sip_row(i + 100) for i in range(7)]
    for i, r in enumerate(rows_a):
        w.add("tab_a", "sip", r)
        if i < len(rows_b):
            w.add("tab_b", "sip", rows_b[i])
    w.add("logs_capture", "aux", aux_row(1))
    w.flush()
    assert st["stored:tab_a"] == 25 and st["stored:tab_b"] == 7
    assert st["stored:logs_capture"] == 1
    assert st["db:batches"] == 5  # 10 + 10 + 5 (a), 7 (b), 1 (logs)
    w.close()
    assert read_rows(any_db_url, "tab_a") == rows_a
    assert read_rows(any_db_url, "tab_b") == rows_b


@pytest.mark.parametrize("background", [False, True])
def test_flush_by_time_without_more_rows(sqlite_url, background):
    st = Stats()
    w = Writer(sqlite_url, st, batch_size=1000, flush_interval=0.2, background=background)
    try:
        for i in range(3):
            w.add("sip_capture", "sip", sip_row(i))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if count(sqlite_url, "sip_capture") == 3:
                    break
            except sqlite3.Error:  # table not there yet
                pass
            time.sleep(0.05)
        assert count(sqlite_url, "sip_capture") == 3
    finally:
        w.close()
    assert st["stored:sip_capture"] == 3


def test_close_flushes_everything_and_is_idempotent(any_db_url):
    st = Stats()
    w = Writer(any_db_url, st, batch_size=100, flush_interval=60)
    for i in range(250):
        w.add("sip_capture", "sip", sip_row(i))
    w.close()
    w.close()
    assert count(any_db_url, "sip_capture") == 250
    assert st["stored:sip_capture"] == 250 and st["db:batches"] == 3
    with pytest.raises(StoreError):
        w.add("sip_capture", "sip", sip_row(1))


def test_spawn_context(sqlite_url):
    st = Stats()
    with Writer(sqlite_url, st, batch_size=5, mp_context="spawn") as w:
        for i in range(12):
            w.add("sip_capture", "sip", sip_row(i))
    assert count(sqlite_url, "sip_capture") == 12


@pytest.mark.parametrize("background", [False, True])
def test_failed_batch_retried_then_reported(any_db_url, background):
    a = open_adapter(any_db_url)
    a.connect()
    a.execute_ddl(["CREATE TABLE bad (x INTEGER)"])
    a.close()
    st = Stats()
    w = Writer(any_db_url, st, batch_size=5, flush_interval=0, insert_retries=2,
               insert_retry_timeout=10, background=background)
    for i in range(3):
        w.add("bad", "sip", sip_row(i))
    w.add("good", "sip", sip_row(9))
    with pytest.raises(StoreError) as ei:
        w.flush()
    assert "bad" in str(ei.value)
    assert st["db:errors"] == 1 and st["db:retries"] == 2 and st["dropped:db-error"] == 3
    assert st["stored:good"] == 1
    w.add("good", "sip", sip_row(10))  # the error was raised once; writing goes on
    w.close()
    assert count(any_db_url, "good") == 2


def test_write_with_retries_backoff_and_timeout():
    class Flaky:
        def __init__(self, fails):
            self.fails, self.calls, self.closed = fails, 0, 0

        def write(self, *a):
            self.calls += 1
            if self.calls <= self.fails:
                raise StoreError("down")

        def close(self):
            self.closed += 1

    sleeps = []
    f = Flaky(2)
    assert write_with_retries(f, "t", "sip", b"", 5, 60, sleeps.append) == (2, None)
    assert sleeps == [0.1, 0.2] and f.closed == 2
    f = Flaky(10)
    used, err = write_with_retries(f, "t", "sip", b"", 3, 60, lambda s: None)
    assert used == 3 and isinstance(err, StoreError)
    used, err = write_with_retries(Flaky(10), "t", "sip", b"", 3, 0, lambda s: None)
    assert used == 0 and err is not None


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("url", [
    "mysql://sipuser:hunter2secret@127.0.0.1:1/nodb",
    "postgresql://sipuser:hunter2secret@127.0.0.1:1/nodb",
])
def test_unreachable_server_fails_at_start(url, background):
    with pytest.raises(StoreError) as ei:
        Writer(url, Stats(), background=background)
    assert "hunter2secret" not in str(ei.value) and "\n" not in str(ei.value)


def test_bad_url_is_config_error():
    with pytest.raises(ConfigError):
        Writer("mysql://u:pw@h/", Stats())


def test_none_discards():
    st = Stats()
    w = Writer("none", st)
    w.add("sip_capture", "sip", sip_row(1))
    w.close()
    assert not st


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_no_loss_on_signal_to_process_group(sqlite_url, tmp_path, sig):
    """A signal to the whole process group (Ctrl-C, systemd stop) must not kill the writer
    process before the parent's close() has written everything accepted."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import signal, sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from sipcaptool.stats import Stats
        from sipcaptool.store.writer import Writer
        from store_helpers import sip_row
        # as the commands do: the handler only sets a flag, the loop stops on it
        stopping = []
        def stop(*a):
            stopping.append(a[0])
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        w = Writer({sqlite_url!r}, Stats(), batch_size=50, flush_interval=0.5)
        accepted = 0
        try:
            print("started", flush=True)
            while not stopping:
                w.add("sip_capture", "sip", sip_row(accepted))
                accepted += 1
                if accepted % 100 == 0:
                    time.sleep(0.01)
        finally:
            w.close()
            print(accepted, flush=True)
    """))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline().strip() == "started"
    time.sleep(1.0)
    os.killpg(p.pid, sig)
    out, _ = p.communicate(timeout=60)
    accepted = int(out.split()[-1])
    assert accepted > 0
    assert count(sqlite_url, "sip_capture") == accepted


def test_time_flush_is_on_time(sqlite_url):
    """A lone row is handed to the database about flush_interval after it came."""
    st = Stats()
    w = Writer(sqlite_url, st, batch_size=1000, flush_interval=0.3, background=False)
    try:
        t0 = time.monotonic()
        w.add("sip_capture", "sip", sip_row(1))
        while not st["stored:sip_capture"] and time.monotonic() - t0 < 5:
            time.sleep(0.005)
        took = time.monotonic() - t0
    finally:
        w.close()
    # not before the interval, and not waiting for more rows (generous bound for a busy machine)
    assert 0.28 <= took < 2.0


@pytest.mark.parametrize("fixture", ["mysql_url", "pg_url"])
def test_reconnects_after_the_server_dropped_the_connection(request, fixture):
    """A connection killed by the server is replaced on retry; nothing is lost."""
    from store_helpers import connect
    url = request.getfixturevalue(fixture)
    st = Stats()
    w = Writer(url, st, batch_size=5, flush_interval=0, insert_retries=3,
               insert_retry_timeout=30, background=False)
    try:
        for i in range(5):
            w.add("sip_capture", "sip", sip_row(i))
        conn = w.adapter.conn
        victim = conn.thread_id() if fixture == "mysql_url" else conn.get_backend_pid()
        admin = connect(url)
        try:
            cur = admin.cursor()
            if fixture == "mysql_url":
                cur.execute(f"KILL {int(victim)}")
            else:
                cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
                admin.commit()
        finally:
            admin.close()
        time.sleep(0.2)
        for i in range(5, 10):
            w.add("sip_capture", "sip", sip_row(i))
        w.flush()
    finally:
        w.close()
    assert st["db:retries"] >= 1 and st["db:errors"] == 0
    assert count(url, "sip_capture") == 10


@pytest.mark.parametrize("how", ["return", "exception"])
def test_program_ending_without_close_writes_everything(sqlite_url, tmp_path, how):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from sipcaptool.stats import Stats
        from sipcaptool.store.writer import Writer
        from store_helpers import sip_row
        w = Writer({sqlite_url!r}, Stats(), batch_size=50, flush_interval=30)
        for i in range(123):
            w.add("sip_capture", "sip", sip_row(i))
        if {how!r} == "exception":
            raise RuntimeError("boom")
    """))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60)
    assert (p.returncode != 0) == (how == "exception")
    assert count(sqlite_url, "sip_capture") == 123


# ------------------------------------------------ rows the database refuses: keep the rest



def _narrow_table(url: str, table: str = "narrow") -> None:
    """A table made elsewhere that refuses a method longer than 3 characters (as a
    narrower column or a constraint would)."""
    a = open_adapter(url)
    a.connect()
    a.create_tables([table], aux=False)
    if a.dialect == "postgresql":
        a.execute_ddl([f'ALTER TABLE "{table}" ALTER COLUMN "method" TYPE VARCHAR(3)'])
    elif a.dialect == "sqlite":
        a.execute_ddl([f'CREATE TRIGGER "{table}_short" BEFORE INSERT ON "{table}" '
                       "WHEN length(NEW.method) > 3 BEGIN "
                       "SELECT RAISE(ABORT, 'method longer than 3'); END"])
    a.close()


_rows = rows_refusable_by_method


@pytest.fixture(params=["sqlite", "postgresql"])
def refusing_db_url(request):
    """Databases that refuse a bad row (MySQL's LOAD DATA LOCAL cuts it and warns)."""
    return request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url"}[request.param])


@pytest.mark.parametrize("background", [False, True])
def test_a_refused_row_does_not_take_its_batch_with_it(refusing_db_url, background):
    _narrow_table(refusing_db_url)
    st = Stats()
    w = Writer(refusing_db_url, st, batch_size=50, flush_interval=60, insert_retries=0,
               background=background)
    rows = _rows(120, bad={3, 77, 78})
    for r in rows:
        w.add("narrow", "sip", r)
    w.flush()  # no error raised: the capture goes on
    w.close()
    good = [r for i, r in enumerate(rows) if i not in {3, 77, 78}]
    assert read_rows(refusing_db_url, "narrow") == good  # in order, each once
    assert st["stored:narrow"] == 117 and st["dropped:db-error"] == 3
    assert st["db:split"] == 2 and st["db:errors"] == 2 and st["db:batches"] == 3


def test_a_batch_refused_row_by_row_is_still_an_error(refusing_db_url):
    _narrow_table(refusing_db_url)
    st = Stats()
    w = Writer(refusing_db_url, st, batch_size=8, flush_interval=60, insert_retries=0,
               background=False)
    with pytest.raises(StoreError, match="narrow"):
        for r in _rows(8, bad=set(range(8))):
            w.add("narrow", "sip", r)
        w.flush()
    w.close()
    assert st["dropped:db-error"] == 8 and st["stored:narrow"] == 0
    assert count(refusing_db_url, "narrow") == 0


def test_refused_rows_in_a_spooled_batch_and_a_connection_lost_midway(sqlite_url, tmp_path):
    """The search for refused rows is cut short by a lost connection: the untried pieces
    wait in the spool under their own ids, and when they are written nothing is stored
    twice and only the refused row is missing."""
    from sipcaptool.store.spool import Spool
    from sipcaptool.store.sqlite import SqliteAdapter
    from sipcaptool.store.url import parse_db_url

    class Flaky(SqliteAdapter):
        """The real SQLite adapter; the 4th write fails as a lost connection would."""
        calls = 0

        def write(self, *a, **kw):
            Flaky.calls += 1
            if Flaky.calls == 4:
                e = StoreError("connection lost")
                e.transient = True
                raise e
            return super().write(*a, **kw)

    _narrow_table(sqlite_url)
    url = parse_db_url(sqlite_url)
    adapter = Flaky(url)
    spool = Spool(str(tmp_path / "spool"), url)
    events: list = []
    core = WriterCore(adapter, 0, 0, spool, events.append)
    core.start()
    rows = _rows(16, bad={9})
    core.batch("narrow", "sip", 16, adapter.format_batch("sip", rows), "b1")
    # write 1: whole batch refused; 2: rows 0-7 stored; 3: rows 8-15 refused; 4: lost
    assert isinstance(events[-2], Split) and events[-2].stored == 8 and spool.pending_rows == 8
    assert core.down
    core.down = False  # the database is back
    while spool.pending_batches:
        assert core.pump()
    spool.close()
    adapter.close()
    assert read_rows(sqlite_url, "narrow") == [r for i, r in enumerate(rows) if i != 9]
    split = [e for e in events if isinstance(e, Split)]
    drained = [e for e in events if isinstance(e, Drained)]
    assert sum(e.stored for e in split) + sum(e.rows for e in drained) == 15  # counted once each
    assert sum(e.dropped for e in split) == 1


@pytest.mark.services
def test_mysql_inserts_refused_row_by_row_keep_the_rest(mysql_url):
    """MySQL without LOCAL INFILE writes multi-row INSERTs, which strict mode refuses
    whole for one value too long: the refused row is found, the others stored."""
    a = open_adapter(mysql_url)
    a.connect()
    a.create_tables(["narrow"], aux=False)
    a.execute_ddl(["ALTER TABLE `narrow` MODIFY `method` VARCHAR(3) NOT NULL DEFAULT ''",
                   "SET SESSION sql_mode = 'STRICT_TRANS_TABLES'"])
    a.use_infile = False
    events: list = []
    core = WriterCore(a, 0, 0, None, events.append)
    rows = _rows(40, bad={0, 21})
    core.batch("narrow", "sip", 40, a.format_batch("sip", rows), "m1")
    a.close()
    (ev,) = events
    assert isinstance(ev, Split) and ev.stored == 38 and ev.dropped == 2, ev
    assert "too long" in ev.text or "Data too long" in ev.text
    assert read_rows(mysql_url, "narrow") == [r for i, r in enumerate(rows) if i not in (0, 21)]


def test_a_failing_search_for_refused_rows_drops_the_batch_as_before(sqlite_url):
    """Should cutting a batch fail (a bug), the writer goes on: the batch is dropped and
    counted as it was before the search existed."""
    from sipcaptool.store.sqlite import SqliteAdapter
    from sipcaptool.store.url import parse_db_url

    class Broken(SqliteAdapter):
        def split_batch(self, payload, rows):
            raise ValueError("cannot cut")

    _narrow_table(sqlite_url)
    a = Broken(parse_db_url(sqlite_url))
    events: list = []
    core = WriterCore(a, 0, 0, None, events.append)
    core.batch("narrow", "sip", 4, _rows(4, bad={1}), "x1")
    core.batch("narrow", "sip", 2, _rows(2, bad=set()), "x2")  # the writer still works
    a.close()
    assert [type(e) for e in events] == [DroppedDbError, Written]
    assert events[0].rows == 4 and count(sqlite_url, "narrow") == 2


# -- joining batches for a database that wants large inserts (coalesce) ----------------

class _Source:
    """A job source that hands out ``jobs`` and then nothing (queue.Empty), recording the
    timeouts it was asked to wait."""

    def __init__(self, jobs, later=()):
        import queue
        self.jobs = list(jobs)
        self.later = list(later)      # jobs that "arrive" only on a blocking get
        self.waits: list[float] = []
        self.Empty = queue.Empty

    def get(self, *, timeout):
        self.waits.append(timeout)
        if self.jobs:
            return self.jobs.pop(0)
        if self.later:
            return self.later.pop(0)
        raise self.Empty

    def get_nowait(self):
        if self.jobs:
            return self.jobs.pop(0)
        raise self.Empty


def _joinable(payload):
    """The joinable rows of a payload, as the adapters say (a list: its rows)."""
    return payload if isinstance(payload, list) else None


def _batch(table, first, n, bid, kind="sip"):
    from sipcaptool.store.jobs import Batch
    rows = [sip_row(i) for i in range(first, first + n)] if kind == "sip" else \
        [aux_row(i) for i in range(first, first + n)]
    return Batch(table, kind, n, rows, bid)


def test_coalesce_joins_batches_of_one_table_in_order():
    from sipcaptool.store.jobs import Sync
    from sipcaptool.store.writer_process import coalesce
    a, b, c = _batch("t", 0, 10, "a"), _batch("t", 10, 10, "b"), _batch("t", 20, 5, "c")
    sync = Sync(7)
    src = _Source([b, c, sync, _batch("t", 25, 3, "d")])
    got, held = coalesce(a, src, 1000, 1 << 30, 5.0, _joinable)
    assert (got.table, got.kind, got.rows, got.parts, got.batch_id) == ("t", "sip", 25, 3, "c")
    assert got.payload == [sip_row(i) for i in range(25)]
    assert held is sync                     # handled next, before anything after it
    assert [j.batch_id for j in src.jobs] == ["d"]


def test_coalesce_stops_at_another_table_kind_or_the_bounds():
    from sipcaptool.store.writer_process import coalesce
    a = _batch("t", 0, 10, "a")
    other = _batch("u", 0, 10, "u")
    got, held = coalesce(a, _Source([other]), 1000, 1 << 30, 1.0, _joinable)
    assert got == a and held is other
    aux = _batch("t", 0, 1, "x", kind="aux")
    got, held = coalesce(a, _Source([aux]), 1000, 1 << 30, 1.0, _joinable)
    assert got == a and held is aux
    # rows: a batch that would pass the bound is not joined, it comes next
    b, c = _batch("t", 10, 10, "b"), _batch("t", 20, 10, "c")
    got, held = coalesce(a, _Source([b, c]), 25, 1 << 30, 1.0, _joinable)
    assert (got.rows, got.parts, held) == (20, 2, c)
    # bytes of messages: joining stops once about max_bytes are held
    from sipcaptool.record import SIP_COLUMN_NAMES
    size_a = sum(len(r[SIP_COLUMN_NAMES.index("msg")]) for r in a.payload)
    got, held = coalesce(a, _Source([b, c]), 1000, size_a + 1, 1.0, _joinable)
    assert (got.rows, got.parts, held) == (20, 2, None)
    # a batch already at the bound is not joined to anything
    got, held = coalesce(a, _Source([b]), 10, 1 << 30, 1.0, _joinable)
    assert got == a and held is None


def test_coalesce_joins_no_batches_of_two_replay_runs():
    """The batches of two files of one replay (two runs) are not joined: the joined
    insert is recorded under its last part's id, which must tell how far each run got."""
    from sipcaptool.store.writer_process import coalesce
    a1, a2 = _batch("t", 0, 10, "rAAA:10:x-1"), _batch("t", 10, 10, "rAAA:20:x-2")
    b1 = _batch("t", 20, 10, "rBBB:5:x-3")
    got, held = coalesce(a1, _Source([a2, b1]), 1000, 1 << 30, 1.0, _joinable)
    assert (got.rows, got.parts, got.batch_id, held) == (20, 2, "rAAA:20:x-2", b1)
    # batches of no replay join as before
    c1, c2 = _batch("t", 0, 10, "0123abcd-1"), _batch("t", 10, 10, "0123abcd-2")
    got, held = coalesce(c1, _Source([c2]), 1000, 1 << 30, 1.0, _joinable)
    assert (got.rows, got.parts, held) == (20, 2, None)


def test_coalesce_bytes_bound_is_the_same_with_columns():
    """With the rows made columns as they come (ClickHouse), the bytes of messages are
    summed from the msg column: joining stops where it stops without columns."""
    from sipcaptool.record import SIP_COLUMN_NAMES
    from sipcaptool.store.writer_process import _message_bytes, coalesce

    def as_columns(kind, rows):
        return [list(c) for c in zip(*rows, strict=True)]

    a, b, c = _batch("t", 0, 10, "a"), _batch("t", 10, 10, "b"), _batch("t", 20, 10, "c")
    size_a = sum(len(r[SIP_COLUMN_NAMES.index("msg")]) for r in a.payload)
    for bound in (size_a, size_a + 1, 2 * size_a + 1, 1 << 30):
        want = coalesce(a, _Source([b, c]), 1000, bound, 1.0, _joinable)
        got = coalesce(a, _Source([b, c]), 1000, bound, 1.0, _joinable, columns=as_columns)
        assert (got[0].rows, got[0].parts, got[1]) == (want[0].rows, want[0].parts, want[1])
        assert got[0].payload.columns == as_columns("sip", want[0].payload)
    # a message that has no length (None): counted row by row, as without columns
    rows = list(a.payload)
    msg = SIP_COLUMN_NAMES.index("msg")
    rows[3] = (*rows[3][:msg], None, *rows[3][msg + 1:])
    assert _message_bytes("sip", rows, as_columns("sip", rows)) == \
        _message_bytes("sip", rows) == size_a - len(a.payload[3][msg])


def test_coalesce_waits_for_more_only_within_its_time():
    from sipcaptool.store.writer_process import coalesce
    a, b = _batch("t", 0, 10, "a"), _batch("t", 10, 10, "b")
    now = [100.0]
    src = _Source([], later=[b])
    got, held = coalesce(a, src, 1000, 1 << 30, 0.5, _joinable, clock=lambda: now[0])
    assert (got.rows, got.parts, held) == (20, 2, None)
    assert src.waits and all(0 < w <= 0.5 for w in src.waits)
    # past its time it takes only what is already there, without waiting
    src = _Source([b])
    got, held = coalesce(a, src, 1000, 1 << 30, 0.0, _joinable)
    assert (got.rows, got.parts, src.waits) == (20, 2, [])


def test_coalesce_ends_its_wait_when_the_close_comes():
    """The end of a replay (or a stop) does not wait out the joining time: the Close
    that comes while it waits ends it, and is handled next."""
    from sipcaptool.store.jobs import Close
    from sipcaptool.store.writer_process import coalesce
    a, b = _batch("t", 0, 10, "a"), _batch("t", 10, 10, "b")
    close = Close()
    src = _Source([], later=[b, close, _batch("t", 20, 5, "c")])
    got, held = coalesce(a, src, 1000, 1 << 30, 1.0, _joinable, clock=lambda: 100.0)
    assert (got.rows, got.parts, got.batch_id, held) == (20, 2, "b", close)
    assert len(src.waits) == 2 and [j.batch_id for j in src.later] == ["c"]


def test_coalesce_leaves_formatted_payloads_alone():
    from sipcaptool.store.jobs import Batch
    from sipcaptool.store.writer_process import coalesce
    a = Batch("t", "sip", 2, b"COPY TEXT\n", "a")
    b = _batch("t", 0, 2, "b")
    assert coalesce(a, _Source([b]), 1000, 1 << 30, 1.0, _joinable) == (a, None)
    c = _batch("t", 0, 2, "c")
    assert coalesce(c, _Source([a]), 1000, 1 << 30, 1.0, _joinable) == (c, a)


def test_clickhouse_batches_are_marshalled_rows_that_join():
    """ClickHouse's payload: the rows marshalled by the capturing process (cheaper to hand
    over than pickled), taken out again by the writer process and joined."""
    from sipcaptool.store.clickhouse import ClickHouseAdapter
    from sipcaptool.store.jobs import Batch
    from sipcaptool.store.url import parse_db_url
    from sipcaptool.store.writer_process import coalesce
    ad = ClickHouseAdapter(parse_db_url("clickhouse://default@127.0.0.1:1/x"))
    rows = [sip_row(i) for i in range(5)]
    p = ad.format_batch("sip", rows)
    assert isinstance(p, bytes) and ad.payload_rows(p) == rows
    assert ad.payload_rows(rows) == rows
    a = Batch("t", "sip", 2, ad.format_batch("sip", rows[:2]), "a")
    b = Batch("t", "sip", 3, ad.format_batch("sip", rows[2:]), "b")
    got, held = coalesce(a, _Source([b]), 1000, 1 << 30, 0.0, ad.payload_rows)
    assert (got.payload, got.rows, got.parts, got.batch_id, held) == (rows, 5, 2, "b", None)
    # a value marshal does not take: the list as it is
    odd = [(*rows[0][:-1], object())]
    assert ad.format_batch("sip", odd) == odd


def test_writer_counts_every_part_of_a_joined_batch(tmp_path, monkeypatch):
    """A database that wants large inserts: the writer process joins the batches waiting
    for it; each one is still counted (db:batches) and the gauges come back to 0."""
    from sipcaptool.store.sqlite import SqliteAdapter
    monkeypatch.setattr(SqliteAdapter, "coalesce_rows", 100_000)
    monkeypatch.setattr(SqliteAdapter, "coalesce_wait", 0.3)
    url = f"sqlite:///{tmp_path}/j.db"
    st = Stats()
    w = Writer(url, st, batch_size=50, flush_interval=0, background=True)
    for i in range(2000):
        w.add("sip_capture", "sip", sip_row(i))
    w.close()
    assert st["stored:sip_capture"] == 2000 and st["db:batches"] == 40
    assert st["queue_depth"] == 0 and st["dropped:db-error"] == 0
    assert sorted(r[1] for r in read_rows(url, "sip_capture")) == \
        sorted(sip_row(i)[1] for i in range(2000))
    ids = [r[0] for r in sqlite3.connect(f"{tmp_path}/j.db").execute(
        "SELECT batch_id FROM sipcaptool_batches")]
    assert 1 <= len(ids) < 40               # joined: fewer inserts than batches


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1:1/x", "mysql://u@127.0.0.1:1/x",
                                 "clickhouse://default@127.0.0.1:1/x"])
@pytest.mark.parametrize("k", [1, 4, 7, 250])
def test_parts_put_together_are_the_whole_batch(url, k):
    """The capturing process formats a batch ``part_rows`` rows at a time as they come;
    the parts put together are the whole batch formatted at once: the COPY and LOAD DATA
    text byte for byte (parts with and without a large message among them), and
    ClickHouse's rows."""
    ad = open_adapter(url)
    assert ad.part_rows > 0
    for kind, rows in (("sip", [sip_row(i) for i in range(30)]),
                       ("aux", [aux_row(i) for i in range(9)])):
        parts = [ad.format_batch(kind, rows[i:i + k]) for i in range(0, len(rows), k)]
        joined = ad.join_parts(kind, parts)
        if ad.dialect == "clickhouse":
            assert isinstance(joined, bytes) and ad.payload_rows(joined) == rows
        else:
            assert joined == ad.format_batch(kind, rows)


def test_clickhouse_parts_with_rows_marshal_does_not_take(tmp_path):
    """A part marshal could not take stays a list of rows; the batch is then the list of
    all its rows, in order. A payload of parts in the spool comes back as its rows."""
    from sipcaptool.store.spool import Spool
    ad = open_adapter("clickhouse://default@127.0.0.1:1/x")
    rows = [sip_row(i) for i in range(6)]
    odd = (*rows[5][:-1], object())
    parts = [ad.format_batch("sip", rows[:3]), ad.format_batch("sip", [rows[3], rows[4], odd])]
    assert isinstance(parts[1], list)
    assert ad.join_parts("sip", parts) == [*rows[:5], odd]
    joined = ad.join_parts("sip", [ad.format_batch("sip", rows[:2]),
                                   ad.format_batch("sip", rows[2:])])
    sp = Spool(str(tmp_path), ad.url, 1 << 30)
    sp.append("b-1", "sip_capture", "sip", 6, joined, parts=3)
    rec = sp.peek()
    assert rec is not None and (rec.rows, rec.parts) == (6, 3)
    assert ad.payload_rows(rec.payload) == rows
    sp.close()


@pytest.fixture(params=["postgresql", "mysql"])
def text_db_url(request):
    """The databases whose batches are text formatted part by part."""
    return request.getfixturevalue({"postgresql": "pg_url", "mysql": "mysql_url"}
                                   [request.param])


def test_writer_formats_parts_as_rows_come(text_db_url):
    """Rows are formatted ``part_rows`` at a time while a batch fills; ``pending`` and the
    batch size count them all, and every row is stored once, in order."""
    st = Stats()
    w = Writer(text_db_url, st, batch_size=600, flush_interval=0, background=True)
    try:
        assert w.adapter is not None and w.adapter.part_rows == 250
        rows = [sip_row(i, msg=b"m" * (i % 300)) for i in range(1337)]
        for i, r in enumerate(rows[:520]):
            w.add("sip_capture", "sip", r)
            assert w.pending() == i + 1
        buf = w._buffers[("sip_capture", "sip")]
        assert (buf.formatted, len(buf.rows), len(buf.parts)) == (500, 20, 2)
        for r in rows[520:]:
            w.add("sip_capture", "sip", r)
    finally:
        w.close()
    assert st["stored:sip_capture"] == 1337 and st["db:batches"] == 3
    assert read_rows(text_db_url, "sip_capture") == rows


def test_clickhouse_columns_made_while_the_parts_come():
    """Joining batches for ClickHouse, the writer process turns each one into columns as
    it comes, so that only the sending is left at the end; a batch with a row that does
    not fit leaves the columns to write(), which names the row."""
    from sipcaptool.record import SIP_COLUMN_NAMES
    from sipcaptool.store import JoinedRows
    from sipcaptool.store.clickhouse import columns_of
    from sipcaptool.store.jobs import Batch
    from sipcaptool.store.writer_process import coalesce
    ad = open_adapter("clickhouse://default@127.0.0.1:1/x")
    rows = [sip_row(i) for i in range(9)]
    a = Batch("t", "sip", 4, ad.format_batch("sip", rows[:4]), "a")
    b = Batch("t", "sip", 5, ad.format_batch("sip", rows[4:]), "b")
    got, _ = coalesce(a, _Source([b]), 1000, 1 << 30, 0.0, ad.payload_rows,
                      columns=ad.columns)
    assert isinstance(got.payload, JoinedRows) and got.payload == rows
    assert got.payload.columns == [list(c) for c in columns_of("sip", rows, ad.encoded("sip"))]
    # the text already UTF-8, so that the insert has nothing to encode
    callid = SIP_COLUMN_NAMES.index("callid")
    assert callid in ad.encoded("sip")
    assert got.payload.columns[callid] == [r[callid].encode() for r in rows]
    bad = list(rows[6])
    bad[SIP_COLUMN_NAMES.index("source_port")] = 1 << 40
    c = Batch("t", "sip", 3, ad.format_batch("sip", [*rows[4:6], tuple(bad)]), "c")
    got, _ = coalesce(a, _Source([c]), 1000, 1 << 30, 0.0, ad.payload_rows,
                      columns=ad.columns)
    assert isinstance(got.payload, JoinedRows) and got.payload.columns is None
    assert got.rows == 7


def test_a_batch_of_parts_is_written_when_its_first_row_is_old(text_db_url):
    """The timer writes a batch whose rows are partly formatted already, once its first
    row is ``flush_interval`` old."""
    st = Stats()
    w = Writer(text_db_url, st, batch_size=100_000, flush_interval=0.3, background=True)
    try:
        rows = [sip_row(i, msg=b"m" * (i % 50)) for i in range(620)]
        for r in rows:
            w.add("sip_capture", "sip", r)
        deadline = time.monotonic() + 10
        while st["stored:sip_capture"] < 620 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st["stored:sip_capture"] == 620 and st["db:batches"] == 1
        assert w.pending() == 0
    finally:
        w.close()
    assert read_rows(text_db_url, "sip_capture") == rows


@pytest.mark.parametrize("fixture", ["sqlite_url", "pg_url"])
def test_rows_added_together_are_cut_where_add_cuts_them(request, fixture):
    """A replay hands the rows of a decoded batch over in one call (add_rows); the
    batches are those add() makes row by row: the same rows, cut at the same places,
    each marked with the file position of its own last row -- also when a batch fills in
    the middle of a call, parts are formatted (PostgreSQL: 250 rows at a time), and an
    earlier run stored the first rows (skipped and counted)."""
    url = request.getfixturevalue(fixture)
    rows = [sip_row(i, msg=b"m" * (i % 300)) for i in range(1100)]
    seqs = [3 * i + 1 for i in range(1100)]    # (messages that made no row in between)
    got = {}
    for how in ("add", "add_rows"):
        table, tag = f"sip_{how}", f"r{how}:"
        st = Stats()
        pos = Position()
        w = Writer(url, st, batch_size=600, flush_interval=0, background=True)
        try:
            w.follow(tag, pos, {table: seqs[99]})    # rows 0-99: stored by an earlier run
            if how == "add":
                for r, s in zip(rows, seqs, strict=True):
                    pos.seq = s
                    w.add(table, "sip", r)
            else:
                for k in range(0, len(rows), 170):    # a batch fills inside a call
                    w.add_rows(table, "sip", rows[k:k + 170], seqs[k:k + 170])
            w.flush()
        finally:
            w.close()
        assert st["dropped:stored-before"] == 100
        assert st["stored:" + table] == 1000 and st["db:batches"] == 2
        assert read_rows(url, table) == rows[100:]
        got[how] = batch_positions(url, tag)
    assert got["add"] == got["add_rows"] == [seqs[699], seqs[1099]]


def test_rows_added_together_with_a_batch_full_by_bytes(sqlite_url):
    """batch_max_bytes cuts a batch at the row that fills it, inside an add_rows call as
    with add()."""
    st = Stats()
    w = Writer(sqlite_url, st, batch_size=1000, batch_max_bytes=10_000, flush_interval=0,
               background=False)
    rows = [sip_row(i, msg=b"x" * 1000) for i in range(12)]  # 2,256 bytes a row: 5 a batch
    try:
        w.add_rows("sip_capture", "sip", rows)
        assert st["db:batches"] == 2 and w.pending() == 2
    finally:
        w.close()
    assert st["db:batches"] == 3 and read_rows(sqlite_url, "sip_capture") == rows


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_add_rows_is_add_row_by_row(pg_url, data):
    """Whatever the batch size, the byte bound, the messages' sizes, the calls' lengths
    and what an earlier run stored: add_rows stores the rows add() stores, in the same
    batches, each marked with the same file position (PostgreSQL: parts of 250 rows)."""
    n = data.draw(st.integers(0, 900), label="rows")
    sizes = data.draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n), label="sizes")
    rows = [sip_row(i, msg=b"m" * size) for i, size in enumerate(sizes)]
    seqs = list(itertools.accumulate(data.draw(st.lists(st.integers(1, 3), min_size=n,
                                                        max_size=n), label="gaps")))
    batch_size = data.draw(st.integers(1, 700), label="batch_size")
    max_bytes = data.draw(st.integers(2_000, 400_000), label="batch_max_bytes")
    stored = data.draw(st.integers(0, seqs[-1] if seqs else 0), label="stored before")
    cuts = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=8), label="cuts")))
    k = next(_EXAMPLE)
    got = {}
    for how in ("add", "add_rows"):
        table, tag = f"sip_{how}_{k}", f"r{how}{k}:"
        st_ = Stats()
        pos = Position()
        w = Writer(pg_url, st_, batch_size=batch_size, batch_max_bytes=max_bytes,
                   flush_interval=0, background=False)
        try:
            w.follow(tag, pos, {table: stored})
            if how == "add":
                for r, s in zip(rows, seqs, strict=True):
                    pos.seq = s
                    w.add(table, "sip", r)
            else:
                for a, b in zip([0, *cuts], [*cuts, n], strict=True):
                    w.add_rows(table, "sip", rows[a:b], seqs[a:b])
            w.flush()
        finally:
            w.close()
        kept = sum(1 for s in seqs if s > stored)
        assert st_["stored:" + table] == kept
        assert st_["dropped:stored-before"] == n - kept
        got[how] = (st_["db:batches"], batch_positions(pg_url, tag) if kept else [],
                    read_rows(pg_url, table) if kept else [])
    assert got["add"] == got["add_rows"]
    assert got["add"][2] == [r for r, s in zip(rows, seqs, strict=True) if s > stored]


_EXAMPLE = itertools.count()


def _unreachable_core(tmp_path, spool_batches: int | None):
    """A WriterCore for a PostgreSQL server nobody listens for (port 1), with a spool of
    room for ``spool_batches`` batches (None: no spool)."""
    from sipcaptool.store.spool import Spool
    from sipcaptool.store.url import parse_db_url

    url = parse_db_url("postgresql://postgres@127.0.0.1:1/nodb")
    adapter = open_adapter(url)
    payload = adapter.format_batch("sip", [sip_row(i) for i in range(20)])
    spool = None
    if spool_batches is not None:
        size = len(payload if isinstance(payload, bytes) else str(payload).encode()) + 1024
        spool = Spool(str(tmp_path / "spool"), url, max_bytes=spool_batches * size)
    events: list = []
    core = WriterCore(adapter, 0, 0, spool, events.append)
    return core, spool, payload, events


def _last(events: list):
    """The last outcome that is not a SpoolStatus."""
    from sipcaptool.store.outcomes import SpoolStatus
    return next(e for e in reversed(events) if not isinstance(e, SpoolStatus))


def test_a_replay_run_that_loses_a_batch_loses_the_rest_of_it(tmp_path):
    """The database unreachable and the spool full: the batch of a replay run (its id
    ``r<run>:<position>:...``) the spool cannot take is lost, and so is every later batch
    of that run, also once the spool has room again -- what a run stored is always a
    beginning of its file, which ``replay --resume`` continues after its last position.
    The outcomes name the run (``cut``), for the replay to stop reading. Batches of no
    run (live, hep) and of other runs are not touched."""
    from sipcaptool.store.outcomes import DroppedForResume, DroppedSpoolFull, Spooled

    core, spool, p, events = _unreachable_core(tmp_path, 1)
    assert core.start() is False                      # down: batches go to the spool
    core.batch("sip_capture", "sip", 20, p, "rA:20:w-1")
    assert isinstance(_last(events), Spooled)
    core.batch("sip_capture", "sip", 20, p, "rA:40:w-2")
    assert isinstance(_last(events), DroppedSpoolFull) and _last(events).cut == "rA"
    core.batch("sip_capture", "sip", 20, p, "w-3")    # no replay: dropped, nothing cut
    assert isinstance(_last(events), DroppedSpoolFull) and _last(events).cut == ""
    spool.pop()                                       # room again (as a drain makes it)
    core.batch("sip_capture", "sip", 20, p, "rA:60:w-4")
    assert _last(events) == DroppedForResume("sip_capture", 20, "rA")
    assert spool.pending_batches == 0
    core.batch("sip_capture", "sip", 20, p, "rB:20:w-5")   # another run: spooled
    assert isinstance(_last(events), Spooled) and spool.pending_batches == 1
    assert core.cut_runs == {"rA"}
    spool.close()


def test_a_replay_run_with_no_spool_is_cut_by_an_unreachable_database(tmp_path):
    """No spool: a replay's batch the unreachable database did not take is dropped
    (``dropped:db-error``) and cuts its run; a refusal of the rows themselves would not
    (a later reading would not store them either)."""
    from sipcaptool.store.outcomes import DroppedForResume

    core, _spool, p, events = _unreachable_core(tmp_path, None)
    core.batch("sip_capture", "sip", 20, p, "rA:20:w-1")
    assert isinstance(_last(events), DroppedDbError) and _last(events).cut == "rA"
    core.batch("sip_capture", "sip", 20, p, "rA:40:w-2")
    assert _last(events) == DroppedForResume("sip_capture", 20, "rA")
    core.batch("sip_capture", "sip", 20, p, "w-3")
    assert isinstance(_last(events), DroppedDbError) and _last(events).cut == ""
    assert core.cut_runs == {"rA"}
