"""Batching writer: groups rows per table, formats them, and writes them in batches.

Rows are grouped per ``(table, kind)`` and a batch is written when it holds
``batch_size`` rows, or about ``batch_max_bytes`` bytes once formatted (a batch of
large messages is not ``batch_size`` times their size in memory), or when its first
row is ``flush_interval`` seconds old (a timer thread takes care of the latter when no
more rows come).

With ``background=True`` (the fast path) the batch is formatted in the calling process
(the adapter's pure ``format_batch``: COPY text, LOAD DATA buffer) and handed over a
bounded queue to a separate writer process, which only executes it. The capturing
process never waits for the database unless the queue is full (back-pressure: memory
stays bounded at about ``queue_batches`` batches). The writer process ignores SIGINT and
SIGTERM -- a Ctrl-C or a ``kill`` of the process group must not lose what is queued --
and ends when :meth:`Writer.close` tells it to (or when its parent has gone).

A failed batch is retried up to ``insert_retries`` times within
``insert_retry_timeout`` seconds, with exponential back-off (0.1 s doubling to 5 s) and
a fresh connection each time (so a restarted server is reconnected to).

With a spool (``spool_dir``), a batch whose retries end on a connection failure or an
error a person must fix (privileges, a missing or altered table: logged with what to
fix; see :class:`StoreError` for how errors are classified) -- or any batch while the
database is known to be down or the spool is not empty -- is appended to the spool on
disk and written when the database answers again, oldest
first, in between new batches (which keep going behind the spool, so order is kept);
see :class:`_Core`. A database unreachable at start is then not an error: batches are
spooled from the first one. Every batch carries an id, inserted into
``sipcaptool_batches`` in the batch's own transaction; a batch is never written twice,
even when the connection died after the commit was sent but before it was confirmed.
Without a spool, a batch that still fails is dropped.

A batch that is dropped (the database refused it, or the spool is full) is counted
(``db:errors``; ``dropped:db-error`` or ``dropped:spool-full`` rows) and the error is
raised as StoreError from the next :meth:`Writer.add`, :meth:`Writer.flush` or
:meth:`Writer.close` of the caller (once).

db_insert_mode: 0 and 1 are written as above (1 uses INSERT DELAYED for MySQL tables
whose engine has it -- MyISAM, MEMORY, ARCHIVE -- and says so in a log line; InnoDB,
PostgreSQL and SQLite get the normal batch). Batching is asynchronous in every mode:
the capturing process waits only when ``queue_batches`` batches are already waiting
(for instance during a retry window). Mode 2 makes that "never": a thread of the
writer process takes batches off the queue at once, keeps up to ASYNC_MEMORY_BYTES of
them in memory and spools what does not fit (its order against the batch being
retried at that moment is not kept).

Counters (in the caller's Stats): ``db:batches`` (batches written), ``db:retries``,
``db:errors`` (batches given up), ``db:spooled`` (batches put in the spool),
``db:drained`` (spooled batches written), ``db:already-written`` (batches found
committed by an earlier attempt), ``db:warnings`` (values the server changed or left
out while taking a batch: MySQL's LOAD DATA LOCAL turns such errors into warnings, which
are logged and counted; a row it skips -- fewer rows taken than sent -- is a refused
row), ``db:unrepresentable`` and ``truncated:<column>`` (PostgreSQL databases whose
encoding is not UTF8, see :mod:`sipcaptool.store.postgres`), ``db:split`` (batches the database refused, written in pieces
so that only the refused rows were dropped), ``stored:<table>`` (rows written),
``dropped:db-error``, ``dropped:spool-full``. Gauges (changes added to the same Stats,
so they add up over writers and workers): ``queue_depth`` (batches handed to the writer
and not yet written or spooled), ``spool_batches``, ``spool_bytes``.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid

from ..errors import StoreError
from ..record import AUX_COLUMN_NAMES, SIP_COLUMN_NAMES
from ..stats import Stats
from . import Adapter, open_adapter
from .url import DbUrl, parse_db_url

_START_TIMEOUT = 60.0   # seconds to wait for the writer process to connect
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
CLOSE_DRAIN_SECONDS = 30.0      # at close, drain the spool this long if the database is up
ASYNC_MEMORY_BYTES = 256 << 20  # db_insert_mode 2: batches held in memory before spooling
_PRUNE_EVERY = 3600.0
ISOLATE_MAX_WRITES = 64  # statements tried to separate the rows a database refuses
BATCH_MAX_BYTES = 8 << 20  # default batch_max_bytes
_ROW_OVERHEAD = 256        # formatted bytes of a row besides its message (an estimate)
_BLOB_INDEX = {"sip": SIP_COLUMN_NAMES.index("msg"), "aux": AUX_COLUMN_NAMES.index("msg")}

log = logging.getLogger("sipcaptool.store")


def _write_retrying(adapter: Adapter, table: str, kind: str, payload: object, retries: int,
                    retry_timeout: float, sleep=time.sleep, batch_id: str | None = None,
                    rows: int = 0) -> tuple[int, StoreError | None, bool]:
    """Write one formatted batch, retrying with back-off and reconnecting.

    Returns ``(retries used, error or None, written now)``; "written now" is False when
    the batch id showed that an earlier attempt had committed it.
    """
    attempt = 0
    start = time.monotonic()
    delay = _BACKOFF_FIRST
    while True:
        try:
            if batch_id is None:
                written = adapter.write(table, kind, payload)
            else:
                written = adapter.write(table, kind, payload, batch_id, rows)
            return attempt, None, written is not False
        except StoreError as e:
            remaining = retry_timeout - (time.monotonic() - start)
            if attempt >= retries or remaining <= 0:
                return attempt, e, False
            attempt += 1
            adapter.close()  # reconnect on the next try
            sleep(min(delay, remaining))
            delay = min(delay * 2, _BACKOFF_MAX)


def write_with_retries(adapter: Adapter, table: str, kind: str, payload: object,
                       retries: int, retry_timeout: float,
                       sleep=time.sleep) -> tuple[int, StoreError | None]:
    """Write one formatted batch, retrying with back-off and reconnecting.

    Returns ``(retries used, None)`` on success or ``(retries used, last error)``.
    """
    used, err, _ = _write_retrying(adapter, table, kind, payload, retries, retry_timeout, sleep)
    return used, err


class _Isolation:
    """What :meth:`_Core._isolate` did with a refused batch."""

    __slots__ = ("written", "already", "refused", "first_error", "pending", "transient",
                 "each")

    def __init__(self) -> None:
        self.written = 0        # rows written now
        self.already = 0        # rows of pieces an earlier attempt had written
        self.refused = 0        # rows refused
        self.each = 0           # pieces written row by row (past the budget)
        self.first_error = ""   # the database's words for the first refused row
        self.pending: list[tuple[object, int, str]] = []  # pieces not tried: connection lost
        self.transient: StoreError | None = None


class _Core:
    """What happens to one formatted batch: written, retried, spooled, drained.

    Runs in the writer process (or in the caller with ``background=False``); reports
    each outcome through ``emit`` as a tuple (see ``Writer._handle``).

    * The spool is empty and the database answers: the batch is written (retried per
      insert_retries / insert_retry_timeout).
    * The retries are exhausted on a connection failure or an operator error (the
      error's ``transient``), or the database was already
      known to be down, or the spool holds batches: the batch is appended to the spool,
      behind what is there (batches reach the database in the order they were made).
    * While the spool holds batches, its oldest one is written whenever no new batch is
      waiting; when the database is down it is tried with back-off (0.1 s doubling to
      5 s) and the first success means the database is back.
    * The database refuses a batch itself (not the connection): it cannot be written by
      trying again. One bad row must not take the others with it, so the batch is
      written in halves, and the refused halves in halves again, down to single rows
      (each piece has its own id, derived from the batch's, so a piece is never written
      twice); the rows refused on their own are counted as ``dropped:db-error`` and
      logged, the others stored (``db:split`` counts such batches). After
      ISOLATE_MAX_WRITES statements the pieces left are written row by row, each row
      under a savepoint in the piece's one transaction (:meth:`Adapter.write_each`), so
      a batch with many refused rows loses no good row either. When not a single row
      can be written the batch is an error, as before the search.
    """

    def __init__(self, adapter: Adapter, retries: int, retry_timeout: float, spool,
                 emit) -> None:
        self.adapter = adapter
        self.retries = retries
        self.retry_timeout = retry_timeout
        self.spool = spool
        self.emit = emit
        self.down = False
        self._down_kind = ""
        self.next_probe = 0.0
        self.probe_delay = _BACKOFF_FIRST
        self.last_prune = 0.0
        self._last_status = None
        self._last_full_log = 0.0
        self._full_since_log = 0
        self._lock = threading.RLock()  # db_insert_mode 2: the intake thread spools too

    # -- reporting -----------------------------------------------------------------------
    def status(self) -> None:
        sp = self.spool
        if sp is None:
            return
        st = (sp.pending_batches, sp.disk_bytes, sp.pending_rows)
        if st != self._last_status:
            self._last_status = st
            self.emit(("spool",) + st)

    def start(self, require_db: bool = False) -> bool:
        """Connect; with a spool (and not ``require_db``), an unreachable database is not
        fatal: returns False and batches are spooled."""
        log.info("%s", self.adapter.describe_insert_mode()) if self.adapter.insert_mode != 1 \
            else log.warning("%s", self.adapter.describe_insert_mode())
        try:
            self.adapter.connect()
        except StoreError as e:
            if self.spool is None or require_db:
                raise
            self._mark_down(e, "at start")
            self.status()
            return False
        if self.spool is not None and self.spool.pending_batches:
            log.warning("%d batches (%d rows) wait in the spool %s; writing them first",
                        self.spool.pending_batches, self.spool.pending_rows, self.spool.dir)
        self.status()
        return True

    def _mark_down(self, err: StoreError, when: str = "") -> None:
        if not self.down or err.kind != self._down_kind:
            where = self.spool.dir if self.spool is not None else "-"
            if err.kind == "operator":
                log.error("the database refuses batches for a reason a person must fix%s: "
                          "%s; to fix: %s. Batches go to the spool %s and are written "
                          "once it is fixed", " " + when if when else "", err,
                          err.hint or "check the table and the privileges", where)
            else:
                log.error("database unreachable%s: %s; batches go to the spool %s until "
                          "it is back", " " + when if when else "", err, where)
            self._down_kind = err.kind
        self.down = True
        self.adapter.close()
        self.next_probe = time.monotonic() + self.probe_delay
        self.probe_delay = min(self.probe_delay * 2, _BACKOFF_MAX)

    def _mark_up(self) -> None:
        if self.down:
            n = self.spool.pending_batches if self.spool is not None else 0
            log.warning("database %s again; %d spooled batches to write",
                        "takes batches" if self._down_kind == "operator" else
                        "reachable", n)
        self.down = False
        self.probe_delay = _BACKOFF_FIRST
        now = time.monotonic()
        if now - self.last_prune > _PRUNE_EVERY:
            self.last_prune = now
            self.adapter.prune_batches()

    # -- batches -------------------------------------------------------------------------
    def batch(self, table: str, kind: str, n: int, payload: object, batch_id: str) -> None:
        with self._lock:
            if self.spool is not None and (self.down or self.spool.pending_batches):
                self.to_spool(table, kind, n, payload, batch_id, 0)
                return
        try:
            used, err, written = _write_retrying(self.adapter, table, kind, payload,
                                                 self.retries, self.retry_timeout,
                                                 batch_id=batch_id, rows=n)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
            used, written = 0, False
            err = StoreError(f"{self.adapter.url.redacted()}: cannot write to {table}: "
                             f"{type(e).__name__}: {e}")
        with self._lock:
            if err is None:
                self._mark_up()
                self.emit(("done", table, n, used, written))
                self._emit_warnings(table)
            elif self.spool is not None and err.transient:
                self._mark_down(err)
                self.to_spool(table, kind, n, payload, batch_id, used)
            elif self._can_isolate(err, n, table):
                self._isolate_new(table, kind, n, payload, batch_id, used, err)
            else:
                self.emit(("error", table, n, used, str(err)))

    # -- refused batches: keep the good rows ------------------------------------------------
    def _can_isolate(self, err: StoreError, n: int, table: str) -> bool:
        if n < 2 or err.transient:
            return False
        try:
            return self.adapter.transactional(table)
        except Exception:  # noqa: BLE001 - cannot tell: do not risk writing rows twice
            return False

    def _isolate(self, table: str, kind: str, n: int, payload: object,
                 batch_id: str) -> _Isolation:
        """Write a refused batch piece by piece (halves, recursively) to find the rows
        the database refuses; see the class doc."""
        res = _Isolation()
        adapter = self.adapter
        stack: list[tuple[object, int, str]] = []

        def halves(p: object, k: int, path: str) -> None:
            a, na, b, nb = adapter.split_batch(p, k)
            stack.append((b, nb, path + "1"))
            stack.append((a, na, path + "0"))

        halves(payload, n, "")
        writes = 0
        while stack:
            p, k, path = stack.pop()
            piece_id = f"{batch_id}.{path}"
            if writes >= ISOLATE_MAX_WRITES and k > 1:
                # past the budget: row by row in one transaction (a piece id of its own)
                piece_id += "e"
                try:
                    ok, refused = adapter.write_each(table, kind, p, piece_id, k)
                except StoreError as e:
                    if e.transient:
                        res.transient = e
                        res.pending = [(p, k, piece_id)] + [(q, m, f"{batch_id}.{qp}")
                                                            for q, m, qp in reversed(stack)]
                        return res
                    ok, refused = None, [(0, str(e))] * k
                except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                    ok, refused = None, [(0, f"{type(e).__name__}: {e}")] * k
                res.each += 1
                if ok is False:
                    res.already += k
                    continue
                res.refused += len(refused)
                if refused:
                    res.first_error = res.first_error or refused[0][1]
                if ok:
                    res.written += k - len(refused)
                    self._emit_warnings(table)
                continue
            writes += 1
            try:
                ok = adapter.write(table, kind, p, piece_id, k)
            except StoreError as e:
                if e.transient:
                    res.transient = e
                    res.pending = [(p, k, piece_id)] + [(q, m, f"{batch_id}.{qp}")
                                                        for q, m, qp in reversed(stack)]
                    return res
                if k == 1:
                    res.refused += 1
                    res.first_error = res.first_error or str(e)
                else:
                    halves(p, k, path)
                continue
            except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                res.refused += k
                res.first_error = res.first_error or f"{type(e).__name__}: {e}"
                continue
            if ok is False:
                res.already += k
            else:
                res.written += k
                self._emit_warnings(table)
        return res

    def _isolate_new(self, table: str, kind: str, n: int, payload: object, batch_id: str,
                     used: int, err: StoreError) -> None:
        try:
            res = self._isolate(table, kind, n, payload, batch_id)
        except Exception as bug:  # noqa: BLE001 - a bug must not kill the writer
            log.error("cannot look for the refused rows of a batch for %s: %s: %s", table,
                      type(bug).__name__, bug)
            self.emit(("error", table, n, used, str(err)))
            return
        spooled = full = lost = 0
        if res.pending:
            self._mark_down(res.transient)
            from .spool import SpoolFull
            for p, k, piece_id in res.pending:
                if self.spool is None:
                    lost += k
                    continue
                try:
                    self.spool.append(piece_id, table, kind, k, p)
                    spooled += k
                except SpoolFull:
                    full += k
        if res.written == 0 and res.already == 0 and not spooled:
            self.emit(("error", table, n, used, str(err)))
            self.status()
            return
        text = self._isolation_text(table, n, res, err, lost)
        self.emit(("split", table, n, used, res.written, res.refused + lost, spooled, full,
                   text, True))
        self.status()

    def _isolation_text(self, table: str, n: int, res: _Isolation, err: StoreError,
                        lost: int = 0) -> str:
        dropped = res.refused + lost
        text = (f"{res.first_error or err}; {dropped} of {n} rows of the batch refused and "
                "dropped, the other rows stored")
        if dropped:
            log.error("%s (counted as dropped:db-error)", text)
        return text

    def _emit_warnings(self, table: str) -> None:
        n = self.adapter.take_warnings()
        if n:
            self.emit(("warnings", table, n))
        counts = self.adapter.take_counts()
        if counts:
            self.emit(("counts", counts))

    def to_spool(self, table: str, kind: str, n: int, payload: object, batch_id: str,
                 used: int) -> None:
        from .spool import SpoolFull
        try:
            self.spool.append(batch_id, table, kind, n, payload)
        except SpoolFull as e:
            self._full_since_log += n
            now = time.monotonic()
            if now - self._last_full_log >= 10.0:
                log.critical("SPOOL FULL: %s; %d rows dropped (counted as dropped:spool-full)",
                             e, self._full_since_log)
                self._last_full_log, self._full_since_log = now, 0
            self.emit(("full", table, n, used, str(e)))
            return
        self.emit(("spooled", table, n, used))
        self.status()

    def idle_wait(self) -> float:
        """Seconds until :meth:`pump` has something to do (at most 1)."""
        sp = self.spool
        if sp is None or not sp.pending_batches:
            return 1.0
        if not self.down:
            return 0.0
        return max(0.0, min(1.0, self.next_probe - time.monotonic()))

    def pump(self) -> bool:
        """Write the oldest spooled batch if the database may be up; True if one was."""
        sp = self.spool
        if sp is None or not sp.pending_batches:
            return False
        if self.down and time.monotonic() < self.next_probe:
            return False
        with self._lock:
            rec = sp.peek()
            if rec is None:
                self.status()
                return False
            try:
                written = self.adapter.write(rec.table, rec.kind, rec.payload, rec.batch_id,
                                             rec.rows)
            except StoreError as e:
                if e.transient:
                    self._mark_down(e)
                    return False
                if self._can_isolate(e, rec.rows, rec.table):
                    done = self._isolate_spooled(rec, e)
                    if done is not None:
                        return done
                log.error("spooled batch %s (%d rows for %s) refused by the database, "
                          "dropped: %s", rec.batch_id, rec.rows, rec.table, e)
                sp.pop()
                self.emit(("error", rec.table, rec.rows, 0, str(e), "spooled"))
                self.status()
                return True
            except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                self._mark_down(StoreError(f"{type(e).__name__}: {e}"))
                return False
            sp.pop()
            self._mark_up()
            self.emit(("drained", rec.table, rec.rows, written is not False))
            self._emit_warnings(rec.table)
            self.status()
            return True

    def _isolate_spooled(self, rec, err: StoreError) -> bool | None:
        """A spooled batch the database refuses: keep its good rows (see _isolate). When
        the connection fails midway the batch stays in the spool; the pieces already
        written are recognised by their ids when it is tried again. None: the search
        itself failed (a bug), the caller drops the batch as before."""
        try:
            res = self._isolate(rec.table, rec.kind, rec.rows, rec.payload, rec.batch_id)
        except Exception as bug:  # noqa: BLE001 - a bug must not kill the writer
            log.error("cannot look for the refused rows of spooled batch %s: %s: %s",
                      rec.batch_id, type(bug).__name__, bug)
            return None
        if res.pending:
            self._mark_down(res.transient)
            if res.written:
                self.emit(("split", rec.table, rec.rows, 0, res.written, 0, 0, 0,
                           "", False))
            return False
        self.spool.pop()
        if res.written == 0 and res.already == 0:
            log.error("spooled batch %s (%d rows for %s) refused by the database, "
                      "dropped: %s", rec.batch_id, rec.rows, rec.table, err)
            self.emit(("error", rec.table, rec.rows, 0, str(err), "spooled"))
        else:
            text = self._isolation_text(rec.table, rec.rows, res, err)
            self.emit(("split", rec.table, rec.rows, 0, res.written, res.refused, 0, 0, text,
                       False))
        self.status()
        return True

    def finish(self, budget: float = CLOSE_DRAIN_SECONDS) -> None:
        """At close: write what the spool holds while the database answers (bounded)."""
        sp = self.spool
        if sp is None:
            return
        deadline = time.monotonic() + budget
        if sp.pending_batches and self.down:
            self.next_probe = 0.0  # one more try now
        while sp.pending_batches and time.monotonic() < deadline:
            if not self.pump():
                if self.down:
                    break
        if sp.pending_batches:
            log.warning("%d batches (%d rows) stay in the spool %s; they are written by the "
                        "next run or by 'sipcaptool spool drain'", sp.pending_batches,
                        sp.pending_rows, sp.dir)
        self.status()
        sp.close()


class _AsyncIntake:
    """db_insert_mode 2: a thread that takes every job off the inter-process queue at
    once, so that the receiving process never waits for the database. Jobs wait in
    memory (up to ASYNC_MEMORY_BYTES of batches); beyond that new batches go straight
    to the spool (or, without a spool, the thread waits -- back-pressure)."""

    def __init__(self, jobs, core: _Core, limit: int = ASYNC_MEMORY_BYTES) -> None:
        self.jobs = jobs
        self.core = core
        self.limit = limit
        self.items: collections.deque = collections.deque()
        self.bytes = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="sipcaptool-intake",
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def _size(job) -> int:
        if job[0] != "batch":
            return 0
        p = job[4]
        return len(p) if isinstance(p, (bytes, bytearray)) else 200 * job[3]

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            size = self._size(job)
            with self.cond:
                while size and self.bytes + size > self.limit and self.items:
                    if self.core.spool is not None:
                        break
                    self.cond.wait(0.5)
                over = size and self.bytes + size > self.limit and self.items
            if over and self.core.spool is not None:
                _, table, kind, n, payload, batch_id = job
                self.core.to_spool(table, kind, n, payload, batch_id, 0)
                continue
            with self.cond:
                self.items.append((job, size))
                self.bytes += size
                self.cond.notify_all()
            if job[0] == "close":
                return

    def get(self, timeout: float):
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                raise queue.Empty
            job, size = self.items.popleft()
            self.bytes -= size
            self.cond.notify_all()
            return job

    def get_nowait(self):
        return self.get(0)


def _writer_main(url: DbUrl, partition_days: int | None, jobs, results, retries: int,
                 retry_timeout: float, parent_pid: int, spool_dir: str | None = None,
                 spool_max_bytes: int = 0, insert_mode: int = 0,
                 require_db: bool = False) -> None:
    """The writer process: execute ready-made batches until told to close."""
    # Ctrl-C, a terminal hang-up or a stop of the whole process group must not end this
    # process before the parent has handed over everything: it ends on "close" (or when
    # the parent is gone)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    adapter = open_adapter(url, partition_days=partition_days)
    adapter.insert_mode = insert_mode
    spool = None
    try:
        if spool_dir:
            from .spool import Spool
            spool = Spool(spool_dir, url, spool_max_bytes)
        core = _Core(adapter, retries, retry_timeout, spool, results.put)
        core.start(require_db)
    except StoreError as e:
        results.put(("fatal", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent
        results.put(("fatal", f"{url.redacted()}: {type(e).__name__}: {e}"))
        return
    results.put(("ready",))
    source = _AsyncIntake(jobs, core) if insert_mode == 2 else jobs
    try:
        while True:
            wait = core.idle_wait()
            try:
                job = source.get(timeout=wait) if wait > 0 else source.get_nowait()
            except queue.Empty:
                if core.pump():
                    continue
                if os.getppid() != parent_pid:  # the parent is gone: nothing more comes
                    break
                continue
            op = job[0]
            if op == "batch":
                _, table, kind, n, payload, batch_id = job
                core.batch(table, kind, n, payload, batch_id)
                core.pump()  # spooled batches drain while new ones keep coming
            elif op == "sync":
                results.put(("synced", job[1]))
            elif op == "close":
                core.finish()
                break
    finally:
        adapter.close()
        results.put(("closed",))


class Writer:
    """Batch rows per table and write them into one database.

    Args:
        db_url: where to write (``none``: rows are accepted and discarded).
        stats: counters updated in place (in the calling process).
        batch_size: rows per batch.
        batch_max_bytes: a batch is written as soon as its rows make about this many
            bytes once formatted (the message counted twice, as hex, plus 256 bytes a row
            for the other columns), even with fewer than ``batch_size`` rows.
        flush_interval: a batch is written at most this many seconds after its first row
            (0 or less: only by size, flush() and close()).
        insert_retries: retries of a failed batch.
        insert_retry_timeout: seconds within which the retries happen.
        background: write from a separate process (see the module doc).
        queue_batches: formatted batches that may wait for the writer process.
        partition_days: MySQL: partition tables created on demand (see schema.py).
        mp_context: multiprocessing start method (default ``fork``; ``spawn`` works too).
        spool_dir: where batches wait when the database cannot take them (see
            :mod:`sipcaptool.store.spool`); None: no spool (a batch that still fails
            after the retries is dropped and counted, and an unreachable database at
            start is an error).
        spool_max_bytes: disk the spool of this database may use.
        require_db_at_start: an unreachable database at start is an error even with a
            spool (for one-shot jobs such as replay).
        insert_mode: db_insert_mode (0 plain, 1 INSERT DELAYED where the table's engine
            has it, 2 the writer process takes batches off the queue at once).

    Raises:
        ConfigError: a bad db_url.
        StoreError: the database cannot be reached (checked at start).
    """

    def __init__(self, db_url: str | DbUrl, stats: Stats, *, batch_size: int = 2000,
                 batch_max_bytes: int = BATCH_MAX_BYTES,
                 flush_interval: float = 1.0, insert_retries: int = 0,
                 insert_retry_timeout: float = 60, background: bool = True,
                 queue_batches: int = 8, partition_days: int | None = None,
                 mp_context: str | None = None, spool_dir: str | None = None,
                 spool_max_bytes: int = 1 << 30, insert_mode: int = 0,
                 require_db_at_start: bool = False) -> None:
        self.url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
        self.stats = stats
        self.batch_size = max(1, int(batch_size))
        self.batch_max_bytes = max(1, int(batch_max_bytes))
        self._sizes: dict[tuple[str, str], int] = {}
        self.flush_interval = float(flush_interval)
        self.retries = max(0, int(insert_retries))
        self.retry_timeout = float(insert_retry_timeout)
        self.background = bool(background) and not self.url.is_none
        self._buffers: dict[tuple[str, str], list[tuple]] = {}
        self._first: dict[tuple[str, str], float] = {}
        self._lock = threading.RLock()
        self._error: StoreError | None = None
        self._closed = False
        self._proc = None
        self._jobs = self._results = None
        self._sync_ids = itertools.count(1)
        self._synced: set[int] = set()
        self._in_flight = 0          # rows handed to the writer process, not yet reported
        self._unsent: list[tuple] = []  # formatted jobs not yet in the queue
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self.spool_dir = spool_dir or None
        self.spool_max_bytes = int(spool_max_bytes)
        self.insert_mode = int(insert_mode)
        self.require_db_at_start = bool(require_db_at_start)
        self._batch_prefix = uuid.uuid4().hex[:16] + "-"
        self._batch_seq = itertools.count(1)
        self._core: _Core | None = None
        # gauges (their changes are added to the stats, so that several writers and
        # several workers add up): batches handed over and not yet done, spool contents
        self.queue_depth = 0
        self.spool_batches = self.spool_bytes = self.spool_rows = 0
        if self.url.is_none:
            self.adapter = None
            return
        self.adapter = open_adapter(self.url, partition_days=partition_days)
        self.adapter.insert_mode = self.insert_mode
        if self.background:
            self._start_process(queue_batches, partition_days, mp_context)
        else:
            spool = None
            if self.spool_dir:
                from .spool import Spool
                spool = Spool(self.spool_dir, self.url, self.spool_max_bytes)
            self._core = _Core(self.adapter, self.retries, self.retry_timeout, spool,
                               self._handle)
            self._core.start(self.require_db_at_start)
        # a program that ends without close() (an exception, a second Ctrl-C inside
        # close) still writes what it accepted and does not hang in multiprocessing's
        # exit handler waiting for a writer process that ignores SIGTERM
        self._owner_pid = os.getpid()
        atexit.register(self._at_exit)
        if self.flush_interval > 0:
            self._timer = threading.Thread(target=self._tick, name="sipcaptool-flush",
                                           daemon=True)
            self._timer.start()

    # -- writer process ----------------------------------------------------------------
    @property
    def process_ended(self) -> bool:
        """True when this writer writes through a writer process and that process has
        ended (it died, or close() stopped it): nothing more can be stored. False for a
        writer that writes in this process, or stores nowhere (``db_url`` none)."""
        return self.background and self.adapter is not None and self._proc is None

    def _start_process(self, queue_batches: int, partition_days, mp_context) -> None:
        ctx = multiprocessing.get_context(mp_context or "fork")
        self._jobs = ctx.Queue(maxsize=max(1, int(queue_batches)))
        self._results = ctx.Queue()
        self._proc = ctx.Process(
            target=_writer_main, name="sipcaptool-writer", daemon=True,
            args=(self.url, partition_days, self._jobs, self._results, self.retries,
                  self.retry_timeout, os.getpid(), self.spool_dir, self.spool_max_bytes,
                  self.insert_mode, self.require_db_at_start))
        self._proc.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                msg = self._results.get(timeout=0.2)
            except queue.Empty:
                if not self._proc.is_alive() or time.monotonic() > deadline:
                    self._abandon_process()
                    raise StoreError(f"{self.url.redacted()}: the writer process did not "
                                     "start") from None
                continue
            if msg[0] == "ready":
                return
            if msg[0] == "spool":
                self._handle(msg)
                continue
            if msg[0] == "fatal":
                self._abandon_process()
                raise StoreError(msg[1])

    def _abandon_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for q in (self._jobs, self._results):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._jobs = self._results = None

    def _gauge(self, name: str, value: int) -> None:
        old = getattr(self, name)
        if value != old:
            setattr(self, name, value)
            self.stats[name] += value - old

    def _handle(self, msg: tuple) -> None:
        """One outcome reported by the writer process (or the in-process core)."""
        op = msg[0]
        st = self.stats
        if op == "done":
            _, table, n, used, written = msg
            self._in_flight -= n
            self._gauge("queue_depth", self.queue_depth - 1)
            st["db:batches"] += 1
            st["stored:" + table] += n
            if not written:
                st["db:already-written"] += 1
            if used:
                st["db:retries"] += used
        elif op == "spooled":
            _, table, n, used = msg
            self._in_flight -= n
            self._gauge("queue_depth", self.queue_depth - 1)
            st["db:spooled"] += 1
            if used:
                st["db:retries"] += used
        elif op == "drained":
            _, table, n, written = msg
            st["db:batches"] += 1
            st["db:drained"] += 1
            st["stored:" + table] += n
            if not written:
                st["db:already-written"] += 1
        elif op == "full":
            _, table, n, used, text = msg
            self._in_flight -= n
            self._gauge("queue_depth", self.queue_depth - 1)
            st["db:errors"] += 1
            st["dropped:spool-full"] += n
            if used:
                st["db:retries"] += used
            if self._error is None:
                self._error = StoreError(f"{self.url.redacted()}: {text}; {n} rows dropped")
        elif op == "error":
            _, table, n, used, text = msg[:5]
            if len(msg) == 5:  # a new batch (a spooled one is no longer in flight)
                self._in_flight -= n
                self._gauge("queue_depth", self.queue_depth - 1)
            st["db:errors"] += 1
            st["dropped:db-error"] += n
            if used:
                st["db:retries"] += used
            if self._error is None:
                self._error = StoreError(text)
        elif op == "spool":
            _, batches, nbytes, rows = msg
            self._gauge("spool_batches", batches)
            self._gauge("spool_bytes", nbytes)
            self.spool_rows = rows
        elif op == "split":
            _, table, n, used, written, dropped, spooled, full, text, new = msg
            if new:
                self._in_flight -= n
                self._gauge("queue_depth", self.queue_depth - 1)
                st["db:batches"] += 1
            if text:  # a finished search (not one cut short by a lost connection)
                st["db:split"] += 1
            st["stored:" + table] += written
            if dropped:
                st["db:errors"] += 1
                st["dropped:db-error"] += dropped
            if spooled:
                st["db:spooled"] += 1
            if full:
                st["dropped:spool-full"] += full
            if used:
                st["db:retries"] += used
        elif op == "warnings":
            st["db:warnings"] += msg[2]
        elif op == "counts":
            for k, v in msg[1].items():
                st[k] += v
        elif op == "synced":
            self._synced.add(msg[1])

    def _drain(self) -> None:
        res = self._results
        if res is None:
            return
        while True:
            try:
                msg = res.get_nowait()
            except queue.Empty:
                return
            self._handle(msg)

    def _wait_for(self, done, what: str) -> None:
        """Handle results until ``done(msg)`` is true for one; StoreError if the process
        died first."""
        while True:
            try:
                msg = self._results.get(timeout=0.5)
            except queue.Empty:
                if self._proc is None or not self._proc.is_alive():
                    lost = self._in_flight
                    self._abandon_process()
                    raise StoreError(f"{self.url.redacted()}: the writer process ended "
                                     f"unexpectedly ({what}); {lost} rows may be lost") from None
                continue
            self._handle(msg)
            if done(msg):
                return

    def _send(self, job: tuple) -> None:
        while True:
            if self._proc is None or not self._proc.is_alive():
                lost = self._in_flight
                self._abandon_process()
                raise StoreError(f"{self.url.redacted()}: the writer process ended "
                                 f"unexpectedly; {lost} rows may be lost")
            try:
                self._jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                self._drain()

    # -- batching ------------------------------------------------------------------------
    def _raise_pending(self) -> None:
        err = self._error
        if err is not None:
            self._error = None
            raise err

    def add(self, table: str, kind: str, row: tuple) -> None:
        """Accept one row for ``table`` (``kind`` ``"sip"`` or ``"aux"``).

        Raises StoreError for an earlier batch that could not be written (once; this
        row is accepted all the same), or when the writer is closed.
        """
        if self._closed:
            raise StoreError(f"{self.url.redacted()}: writer is closed")
        key = (table, kind)
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = []
                self._first[key] = time.monotonic()
                self._sizes[key] = 0
            buf.append(row)
            try:
                size = 2 * len(row[_BLOB_INDEX[kind]]) + _ROW_OVERHEAD
            except (TypeError, IndexError, KeyError):
                size = _ROW_OVERHEAD
            size += self._sizes[key]
            self._sizes[key] = size
            if len(buf) >= self.batch_size or size >= self.batch_max_bytes:
                self._flush_key(key)
        if self._error is not None:
            self._raise_pending()

    def _flush_key(self, key: tuple[str, str]) -> None:
        """Format and dispatch one buffer (caller holds the lock).

        Written so that an exception raised by a signal handler in the middle (Ctrl-C,
        SIGTERM turned into KeyboardInterrupt) loses nothing: the rows stay in the buffer
        until the formatted job exists, and the job is kept in ``_unsent`` until the
        queue has it; close() sends what is left.
        """
        rows = self._buffers.get(key)
        if not rows:
            self._buffers.pop(key, None)
            self._first.pop(key, None)
            self._sizes.pop(key, None)
            return
        table, kind = key
        if self.adapter is None:  # db_url none
            self._buffers.pop(key, None)
            self._first.pop(key, None)
            self._sizes.pop(key, None)
            return
        n = len(rows)
        job = ("batch", table, kind, n, self.adapter.format_batch(kind, rows),
               self._batch_prefix + str(next(self._batch_seq)))
        self._unsent.append(job)
        self._buffers.pop(key, None)
        self._first.pop(key, None)
        self._sizes.pop(key, None)
        self._send_unsent()

    def _send_unsent(self) -> None:
        while self._unsent:
            job = self._unsent[0]
            _, table, kind, n, payload, batch_id = job
            if self.background:
                self._send(job)
                self._unsent.pop(0)
                self._in_flight += n
                self._gauge("queue_depth", self.queue_depth + 1)
                self._drain()
            else:
                self._unsent.pop(0)
                self._in_flight += n
                self._gauge("queue_depth", self.queue_depth + 1)
                self._core.batch(table, kind, n, payload, batch_id)
                self._core.pump()

    def _flush_all(self) -> None:
        with self._lock:
            self._send_unsent()
            for key in list(self._buffers):
                self._flush_key(key)

    def _tick(self) -> None:
        """Timer thread: write each batch when its first row is flush_interval old."""
        interval = self.flush_interval
        wait = min(interval, 0.25)
        while not self._stop.wait(wait):
            try:
                with self._lock:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [k for k, t0 in self._first.items() if now - t0 >= interval]
                    for key in due:
                        self._flush_key(key)
                    self._drain()
                    if self._core is not None:
                        while self._core.pump() and not self._stop.is_set():
                            pass
                    oldest = min(self._first.values(), default=None)
                # sleep until the oldest batch is due (results are drained at least 4/s)
                wait = 0.25 if oldest is None else \
                    min(0.25, max(0.002, oldest + interval - time.monotonic()))
            except StoreError as e:
                if self._error is None:
                    self._error = e
            except Exception as e:  # noqa: BLE001 - reported to the caller
                if self._error is None:
                    self._error = StoreError(f"{self.url.redacted()}: {type(e).__name__}: {e}")

    def pending(self) -> int:
        """Rows accepted and not yet reported written (buffered or in flight)."""
        with self._lock:
            return (sum(len(b) for b in self._buffers.values())
                    + sum(j[3] for j in self._unsent) + max(self._in_flight, 0))

    def flush(self) -> None:
        """Write everything accepted so far and wait until it is committed."""
        if self._closed:
            self._raise_pending()
            return
        with self._lock:
            self._flush_all()
            if self.background and self._proc is not None:
                token = next(self._sync_ids)
                self._send(("sync", token))
                self._wait_for(lambda m: m[0] == "synced" and m[1] == token, "flush")
                self._synced.discard(token)
        self._raise_pending()

    def close(self) -> None:
        """Write everything, stop the writer process and close the connection.

        Safe to call twice. Raises StoreError if a batch could not be written.
        """
        if self._closed:
            self._raise_pending()
            return
        self._stop.set()
        try:
            with self._lock:
                self._closed = True
                try:
                    self._flush_all()
                finally:
                    if self.background and self._proc is not None:
                        # (if this is interrupted, the exit handler finishes the job
                        # instead of killing a process that is still writing)
                        self._send(("close",))
                        self._wait_for(lambda m: m[0] == "closed", "close")
                        self._proc.join(10)
                        self._abandon_process()
                    elif self.adapter is not None:
                        if self._core is not None:
                            self._core.finish()
                        self.adapter.close()
        finally:
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.join(2)
        atexit.unregister(self._at_exit)
        self._raise_pending()

    def _at_exit(self) -> None:
        if os.getpid() != self._owner_pid:  # a forked copy of the owner: not ours
            return
        try:
            if not self._closed:
                self.close()
                return
            if self._proc is not None and self._proc.is_alive():  # close() was interrupted
                with self._lock:
                    self._flush_all()
        except BaseException:  # noqa: BLE001 - nothing to report to at exit
            pass
        proc = self._proc
        if proc is not None and proc.is_alive():
            try:
                self._jobs.put_nowait(("close",))
            except Exception:  # noqa: BLE001
                pass
            proc.join(30)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
