"""The writer process: what happens to each formatted batch, and the process's main loop.

:class:`WriterCore` decides the fate of a batch -- written (retried per
:mod:`sipcaptool.store.retry`), spooled, drained from the spool, split to find the rows
the database refuses (:mod:`sipcaptool.store.isolate`) -- and reports each outcome as
one of :mod:`sipcaptool.store.outcomes`. It runs in the writer process
(:func:`writer_main`), in the capturing process itself with ``background=False``, and in
``sipcaptool spool drain``.

With a spool, a batch whose retries end on a connection failure or an error a person
must fix (privileges, a missing or altered table: logged with what to fix; see
:class:`StoreError` for how errors are classified) -- or any batch while the database is
known to be down or the spool is not empty -- is appended to the spool on disk and
written when the database answers again, oldest first, in between new batches (which
keep going behind the spool, so order is kept). A database unreachable at start is then
not an error: batches are spooled from the first one. Without a spool, a batch that
still fails is dropped.

The writer process ignores SIGINT, SIGTERM and SIGHUP -- a Ctrl-C or a ``kill`` of the
process group must not lose what is queued -- and ends on
:class:`~sipcaptool.store.jobs.Close` (or when its parent has gone).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, assert_never, cast

from ..errors import StoreError
from ..record import AUX_COLUMN_NAMES, SIP_COLUMN_NAMES
from . import Adapter, JoinedRows, open_adapter
from .heap import retain_freed_memory
from .intake import AsyncIntake
from .isolate import can_isolate, isolate, isolation_text
from .jobs import Batch, Close, Job, Sync
from .outcomes import (
    Closed,
    Counts,
    Drained,
    DroppedDbError,
    DroppedForResume,
    DroppedSpoolFull,
    Outcome,
    Parsed,
    Ready,
    Split,
    Spooled,
    SpoolStatus,
    StartFailed,
    Synced,
    Warnings,
    Written,
)
from .retry import BACKOFF_FIRST, BACKOFF_MAX, write_retrying
from .unparsed import MakesRows, Unparsed, rows_of
from .url import DbUrl

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from .retention import Maintenance
    from .spool import Spool, SpoolRecord

__all__ = ["CLOSE_DRAIN_SECONDS", "WriterCore", "coalesce", "writer_main"]

CLOSE_DRAIN_SECONDS = 30.0  # at close, drain the spool this long if the database is up
_PRUNE_EVERY = 3600.0       # seconds between prunes of old batch ids

log = logging.getLogger("sipcaptool.store")
# the msg column of each kind of row (also for the capturing side's batch sizes)
MSG_INDEX = {"sip": SIP_COLUMN_NAMES.index("msg"), "aux": AUX_COLUMN_NAMES.index("msg")}

Emit = Callable[[Outcome], object]


class WriterCore:
    """What happens to one formatted batch: written, retried, spooled, drained.

    Reports each outcome through ``emit`` (see :mod:`sipcaptool.store.outcomes`).

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
      trying again. One bad row must not take the others with it: the batch is searched
      for the refused rows (:func:`~sipcaptool.store.isolate.isolate`); those are counted
      as ``dropped:db-error`` and logged, the others stored (``db:split`` counts such
      batches). When not a single row can be written the batch is an error, as before
      the search.
    """

    def __init__(self, adapter: Adapter, retries: int, retry_timeout: float,
                 spool: Spool | None, emit: Emit,
                 maintenance: Maintenance | None = None) -> None:
        self.adapter = adapter
        # hep, live: tomorrow's tables and partitions made ahead (see maintain())
        self.maintenance = maintenance
        self.next_maintenance = 0.0
        self.retries = retries
        self.retry_timeout = retry_timeout
        self.spool = spool
        self.emit = emit
        self.down = False
        self._down_kind = ""
        self.next_probe = 0.0
        self.probe_delay = BACKOFF_FIRST
        self.last_prune = 0.0
        self._last_status: tuple[int, int, int] | None = None
        self._last_full_log = 0.0
        self._full_since_log = 0
        self._lock = threading.RLock()  # db_insert_mode 2: the intake thread spools too
        #: replay runs (``_run_of`` their batch ids) that lost a batch a later reading of
        #: the file would store -- the spool full, or the database unreachable with no
        #: spool (the outcome of that batch says which): every later batch of theirs is
        #: not stored either
        #: (DroppedForResume), even once the database is back, so that what a run stored
        #: is always a beginning of its file, which ``replay --resume`` continues after
        #: its last position; the capturing process stops reading (the outcomes say
        #: ``cut``)
        self.cut_runs: set[str] = set()

    # -- reporting -----------------------------------------------------------------------
    def status(self) -> None:
        sp = self.spool
        if sp is None:
            return
        st = (sp.pending_batches, sp.disk_bytes, sp.pending_rows)
        if st != self._last_status:
            self._last_status = st
            self.emit(SpoolStatus(*st))

    def start(self, require_db: bool = False) -> bool:
        """Connect; with a spool (and not ``require_db``), an unreachable database is not
        fatal: returns False and batches are spooled."""
        if self.adapter.insert_mode != 1:
            log.info("%s", self.adapter.describe_insert_mode())
        else:
            log.warning("%s", self.adapter.describe_insert_mode())
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
        self.probe_delay = min(self.probe_delay * 2, BACKOFF_MAX)

    def _mark_up(self) -> None:
        if self.down:
            n = self.spool.pending_batches if self.spool is not None else 0
            log.warning("database %s again; %d spooled batches to write",
                        "takes batches" if self._down_kind == "operator" else
                        "reachable", n)
        self.down = False
        self.probe_delay = BACKOFF_FIRST
        now = time.monotonic()
        if now - self.last_prune > _PRUNE_EVERY:
            self.last_prune = now
            self.adapter.prune_batches()

    def _emit_warnings(self, table: str) -> None:
        n = self.adapter.take_warnings()
        if n:
            self.emit(Warnings(table, n))
        counts = self.adapter.take_counts()
        if counts:
            self.emit(Counts(counts))

    # -- new batches ---------------------------------------------------------------------
    def _cut(self, batch_id: str) -> str:
        """A batch lost for want of the database: its replay run is cut (``cut_runs``);
        returns the run ('' for a batch of no replay)."""
        run = _run_of(batch_id)
        if run:
            self.cut_runs.add(run)
        return run

    def _after_cut(self, batch_id: str, table: str, n: int, parts: int) -> bool:
        """A batch of a run that was cut (``cut_runs``): not stored (DroppedForResume)."""
        if not self.cut_runs:
            return False
        run = _run_of(batch_id)
        if run not in self.cut_runs:    # ('' for a batch of no replay: never there)
            return False
        self.emit(DroppedForResume(table, n, run, parts))
        return True

    def batch(self, table: str, kind: str, n: int, payload: object, batch_id: str,
              parts: int = 1) -> None:
        """Write (or spool) one new batch of ``n`` rows; its outcome is emitted."""
        if self._after_cut(batch_id, table, n, parts):
            return
        with self._lock:
            if self.spool is not None and (self.down or self.spool.pending_batches):
                self.to_spool(table, kind, n, payload, batch_id, 0, parts)
                return
        try:
            used, err, written = write_retrying(self.adapter, table, kind, payload,
                                                self.retries, self.retry_timeout,
                                                batch_id=batch_id, rows=n)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
            used, written = 0, False
            err = StoreError(f"{self.adapter.url.redacted()}: cannot write to {table}: "
                             f"{type(e).__name__}: {e}")
        with self._lock:
            if err is None:
                self._mark_up()
                self.emit(Written(table, n, used, written, parts))
                self._emit_warnings(table)
            elif self.spool is not None and err.transient:
                self._mark_down(err)
                self.to_spool(table, kind, n, payload, batch_id, used, parts)
            elif can_isolate(self.adapter, err, n, table):
                self._isolate_new(table, kind, n, payload, batch_id, used, err, parts)
            else:
                self.emit(DroppedDbError(table, n, used, str(err), parts=parts,
                                         cut=self._cut(batch_id) if err.transient else ""))

    def _isolate_new(self, table: str, kind: str, n: int, payload: object, batch_id: str,
                     used: int, err: StoreError, parts: int = 1) -> None:
        try:
            res = isolate(self.adapter, table, kind, n, payload, batch_id,
                          self._emit_warnings)
        except Exception as bug:  # noqa: BLE001 - a bug must not kill the writer
            log.error("cannot look for the refused rows of a batch for %s: %s: %s", table,
                      type(bug).__name__, bug)
            self.emit(DroppedDbError(table, n, used, str(err), parts=parts))
            return
        spooled = full = lost = 0
        if res.transient is not None:  # the connection failed: res.pending were not tried
            self._mark_down(res.transient)
            from .spool import SpoolFullError
            for p, k, piece_id in res.pending:
                if self.spool is None:
                    lost += k
                    continue
                try:
                    self.spool.append(piece_id, table, kind, k, p)
                    spooled += k
                except SpoolFullError:
                    full += k
        cut = self._cut(batch_id) if lost or full else ""
        if res.written == 0 and res.already == 0 and not spooled:
            self.emit(DroppedDbError(table, n, used, str(err), parts=parts, cut=cut))
            self.status()
            return
        text = isolation_text(n, res, err, lost)
        self.emit(Split(table, n, used, res.written, res.refused + lost, spooled, full,
                        text, True, parts, cut))
        self.status()

    def to_spool(self, table: str, kind: str, n: int, payload: object, batch_id: str,
                 used: int, parts: int = 1) -> None:
        from .spool import SpoolFullError
        assert self.spool is not None  # callers spool only with a spool
        if self._after_cut(batch_id, table, n, parts):
            return      # (db_insert_mode 2 spools without batch())
        try:
            self.spool.append(batch_id, table, kind, n, payload, parts)
        except SpoolFullError as e:
            self._full_since_log += n
            now = time.monotonic()
            if now - self._last_full_log >= 10.0:
                log.critical("SPOOL FULL: %s; %d rows dropped (counted as dropped:spool-full)",
                             e, self._full_since_log)
                self._last_full_log, self._full_since_log = now, 0
            self.emit(DroppedSpoolFull(table, n, used, str(e), parts, self._cut(batch_id)))
            return
        self.emit(Spooled(table, n, used, parts))
        self.status()

    # -- the days ahead -------------------------------------------------------------------
    def maintain(self) -> None:
        """Run the :class:`~sipcaptool.store.retention.Maintenance` when it is due (at
        start, then every ``every`` seconds of its clock) and the database answers;
        what it did is counted (``maintenance:*``). A failure is logged and counted
        (``maintenance:errors``), and tried again a minute later: it never stops the
        writer, which still creates a missing table when its first row comes."""
        m = self.maintenance
        if m is None or self.down:
            return
        now = m.clock()
        if now < self.next_maintenance:
            return
        with self._lock:
            try:
                self.adapter.connect()
                counts = m.run(self.adapter)
            except StoreError as e:
                log.warning("cannot prepare the tables of today and tomorrow: %s", e)
                self.next_maintenance = now + min(60.0, m.every)
                self.emit(Counts({"maintenance:errors": 1}))
                return
            except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                log.error("cannot prepare the tables of today and tomorrow: %s: %s",
                          type(e).__name__, e)
                self.next_maintenance = now + min(60.0, m.every)
                self.emit(Counts({"maintenance:errors": 1}))
                return
        self.next_maintenance = now + m.every
        if counts:
            self.emit(Counts(counts))

    # -- the spool -----------------------------------------------------------------------
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
                if can_isolate(self.adapter, e, rec.rows, rec.table):
                    done = self._isolate_spooled(sp, rec, e)
                    if done is not None:
                        return done
                log.error("spooled batch %s (%d rows for %s) refused by the database, "
                          "dropped: %s", rec.batch_id, rec.rows, rec.table, e)
                sp.pop()
                self.emit(DroppedDbError(rec.table, rec.rows, 0, str(e), from_spool=True))
                self.status()
                return True
            except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                self._mark_down(StoreError(f"{type(e).__name__}: {e}"))
                return False
            sp.pop()
            self._mark_up()
            self.emit(Drained(rec.table, rec.rows, written is not False, rec.parts))
            self._emit_warnings(rec.table)
            self.status()
            return True

    def _isolate_spooled(self, sp: Spool, rec: SpoolRecord, err: StoreError) -> bool | None:
        """A spooled batch the database refuses: keep its good rows (see
        :mod:`~sipcaptool.store.isolate`). When the connection fails midway the batch
        stays in the spool; the pieces already written are recognised by their ids when
        it is tried again. None: the search itself failed (a bug), the caller drops the
        batch as before."""
        try:
            res = isolate(self.adapter, rec.table, rec.kind, rec.rows, rec.payload,
                          rec.batch_id, self._emit_warnings)
        except Exception as bug:  # noqa: BLE001 - a bug must not kill the writer
            log.error("cannot look for the refused rows of spooled batch %s: %s: %s",
                      rec.batch_id, type(bug).__name__, bug)
            return None
        if res.transient is not None:  # the connection failed midway
            self._mark_down(res.transient)
            if res.written:
                self.emit(Split(rec.table, rec.rows, 0, res.written, 0, 0, 0, "", False))
            return False
        sp.pop()
        if res.written == 0 and res.already == 0:
            log.error("spooled batch %s (%d rows for %s) refused by the database, "
                      "dropped: %s", rec.batch_id, rec.rows, rec.table, err)
            self.emit(DroppedDbError(rec.table, rec.rows, 0, str(err), from_spool=True))
        else:
            text = isolation_text(rec.rows, res, err)
            self.emit(Split(rec.table, rec.rows, 0, res.written, res.refused, 0, 0, text,
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


class _JobSource(Protocol):
    """Where the main loop takes its jobs: the jobs queue, or the mode-2 intake."""

    def get(self, *, timeout: float) -> Job: ...

    def get_nowait(self) -> Job: ...


class _FromParent:
    """The jobs queue as this process reads it: its copy of the queue's sending end closed
    (only the parent sends), so that a parent that is gone -- killed in the middle of
    sending a batch, say -- is the end of the pipe instead of a read that waits forever
    for the rest; that end is taken as a Close (what this process holds is written, then
    it ends). A batch of unparsed messages (:mod:`~sipcaptool.store.unparsed`) is parsed
    as it is taken: whatever takes it sees a batch of rows (``parse``; its counts go to
    ``report``)."""

    def __init__(self, jobs: Queue[Job], adapter: Adapter | None = None,
                 parse: MakesRows | None = None,
                 report: Callable[[Outcome], None] | None = None) -> None:
        self.jobs = jobs
        self.adapter, self.parse, self.report = adapter, parse, report
        sending = getattr(jobs, "_writer", None)    # (multiprocessing's Queue)
        if sending is not None:
            sending.close()

    def get(self, *, timeout: float | None = None) -> Job:
        try:
            job = self.jobs.get(timeout=timeout)
        except (EOFError, OSError):
            return Close()
        return self._rows(job)

    def get_nowait(self) -> Job:
        try:
            job = self.jobs.get_nowait()
        except (EOFError, OSError):
            return Close()
        return self._rows(job)

    def _rows(self, job: Job) -> Job:
        """The job as the rest of this process takes it: a batch of unparsed messages
        parsed into a batch of rows, any other job as it is."""
        if not isinstance(job, Batch) or not isinstance(job.payload, Unparsed):
            return job
        assert self.parse is not None and self.adapter is not None \
            and self.report is not None, "unparsed messages for a writer that cannot parse"
        rows, counts = rows_of(job.payload, self.parse)
        unstored = job.rows - len(rows)
        if counts or unstored:
            self.report(Parsed(dict(counts), unstored))
        return Batch(job.table, job.kind, len(rows),
                     self.adapter.local_payload(job.kind, rows), job.batch_id, job.parts)


def _message_bytes(kind: str, rows: list[Any], cols: list[list[Any]] | None = None) -> int:
    """About how many bytes of messages these rows hold (their ``msg`` column; taken
    from ``cols``, the rows as columns, where they were made: one pass in C)."""
    idx = MSG_INDEX.get(kind)
    n = 0
    if idx is None:
        return n
    if cols is not None and len(cols) > idx:
        try:
            return sum(map(len, cols[idx]))
        except TypeError:       # (a value without a length: counted row by row)
            pass
    for r in rows:
        v = r[idx] if len(r) > idx else None
        if isinstance(v, (bytes, str)):
            n += len(v)
    return n


def _run_of(batch_id: str) -> str:
    """The replay run a batch id belongs to (``r<run_id>`` of ``r<run_id>:<position>:...``,
    see :mod:`sipcaptool.store.replays`), '' for a batch of no replay. Batches of two runs
    (two files) are never joined: the joined insert is recorded under the id of its last
    part, which must say how far the file of every part got."""
    i = batch_id.find(":")
    return batch_id[:i] if i >= 0 else ""


def coalesce(first: Batch, source: _JobSource, max_rows: int, max_bytes: int,
             wait: float, rows_of: Callable[[object], list[Any] | None],
             clock: Callable[[], float] = time.monotonic,
             columns: Callable[[str, list[Any]], list[Sequence[Any]] | None] | None = None,
             ) -> tuple[Batch, Job | None]:
    """``first`` joined with the batches of the same table that follow it on ``source``
    (those waiting now, and those that come within ``wait`` seconds of ``first``), up to
    ``max_rows`` rows and about ``max_bytes`` bytes of messages: one insert instead of
    several, for a database where each insert costs much (ClickHouse). Returns the joined
    batch -- its rows in order (:class:`~sipcaptool.store.JoinedRows`), the id of its
    last part (a replay's position: the file position of its last row), ``parts`` the
    number joined -- and the first job that did not belong (another table, a Sync, a
    Close, a batch past the bounds or of another replay run), to be handled next, or
    None. ``rows_of`` gives a
    payload's rows (None: a payload that cannot be joined, see
    :meth:`~sipcaptool.store.Adapter.payload_rows`); ``columns``, the adapter's
    :meth:`~sipcaptool.store.Adapter.columns`, turns each part into columns as it comes,
    while this waits for the next (so that the insert has only the sending left)."""
    if first.rows >= max_rows:
        return first, None
    head = rows_of(first.payload)
    if head is None:
        return first, None
    parts = [first]
    run = _run_of(first.batch_id)
    payload = list(head)
    cols = _columns(columns, first.kind, payload)
    size = _message_bytes(first.kind, payload, cols)
    deadline = clock() + wait
    nxt: Job | None = None
    while len(payload) < max_rows and size < max_bytes:
        left = deadline - clock()
        try:
            job = source.get(timeout=left) if left > 0 else source.get_nowait()
        except queue.Empty:
            break
        more = rows_of(job.payload) if isinstance(job, Batch) and job.table == first.table \
            and job.kind == first.kind and len(payload) + job.rows <= max_rows \
            and _run_of(job.batch_id) == run else None
        if more is None:
            nxt = job
            break
        parts.append(cast(Batch, job))
        payload.extend(more)
        add = _columns(columns, first.kind, more) if cols is not None else None
        size += _message_bytes(first.kind, more, add)
        if cols is not None:
            if add is None:
                cols = None     # (write() finds the row that does not fit)
            else:
                for c, a in zip(cols, add, strict=True):
                    c.extend(a)
    joined = JoinedRows(payload, cols)
    if len(parts) == 1:     # (its rows, so that they are not taken out again)
        return Batch(first.table, first.kind, first.rows, joined, first.batch_id,
                     first.parts), nxt
    return Batch(first.table, first.kind, len(payload), joined, parts[-1].batch_id,
                 sum(p.parts for p in parts)), nxt


def _columns(columns: Callable[[str, list[Any]], list[Sequence[Any]] | None] | None, kind: str,
             rows: list[Any]) -> list[list[Any]] | None:
    if columns is None:
        return None
    cols = columns(kind, rows)
    return None if cols is None else [c if isinstance(c, list) else list(c) for c in cols]


def writer_main(url: DbUrl, partition_days: int | None, jobs: Queue[Job],
                results: Queue[Outcome], retries: int, retry_timeout: float,
                parent_pid: int, spool_dir: str | None = None, spool_max_bytes: int = 0,
                insert_mode: int = 0, require_db: bool = False,
                maintenance: Maintenance | None = None,
                parse: MakesRows | None = None) -> None:
    """The writer process: execute the batches handed over until told to close
    (``parse``: what makes the rows of a batch handed over unparsed)."""
    # Ctrl-C, a terminal hang-up or a stop of the whole process group must not end this
    # process before the parent has handed over everything: it ends on Close (or when
    # the parent is gone)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    retain_freed_memory()
    # the rows a batch is taken apart into (a tuple each) and the columns made of them
    # are thousands of new containers an insert, none in a cycle: with Python's default
    # (a young collection every 700) the collector walked them again and again, 13% of
    # this process's CPU on a replay of 300,000 messages (2.37 s against 2.06 s, median
    # of 3 alternated runs); cycles are still collected, only less often
    gc.set_threshold(100_000, 50, 50)
    adapter = open_adapter(url, partition_days=partition_days)
    adapter.insert_mode = insert_mode
    spool = None
    try:
        if spool_dir:
            from .spool import Spool
            spool = Spool(spool_dir, url, spool_max_bytes)
        core = WriterCore(adapter, retries, retry_timeout, spool, results.put, maintenance)
        core.start(require_db)
    except StoreError as e:
        results.put(StartFailed(str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent
        results.put(StartFailed(f"{url.redacted()}: {type(e).__name__}: {e}"))
        return
    results.put(Ready())
    parent = _FromParent(jobs, adapter, parse, results.put)
    source: _JobSource = AsyncIntake(parent, core) if insert_mode == 2 else parent
    held: Job | None = None    # taken off the source by coalesce() and not yet handled
    try:
        while True:
            core.maintain()
            if held is not None:
                job, held = held, None
            else:
                wait = core.idle_wait()
                try:
                    job = source.get(timeout=wait) if wait > 0 else source.get_nowait()
                except queue.Empty:
                    if core.pump():
                        continue
                    if os.getppid() != parent_pid:  # the parent is gone: nothing more comes
                        break
                    continue
            if isinstance(job, Batch) and adapter.coalesce_rows > 0:
                job, held = coalesce(job, source, adapter.coalesce_rows,
                                     adapter.coalesce_bytes, adapter.coalesce_wait,
                                     adapter.payload_rows, columns=adapter.columns)
            match job:
                case Batch(table=table, kind=kind, rows=n, payload=payload,
                           batch_id=batch_id, parts=parts):
                    core.batch(table, kind, n, payload, batch_id, parts)
                    core.pump()  # spooled batches drain while new ones keep coming
                case Sync(token=token):
                    results.put(Synced(token))
                case Close():
                    core.finish()
                    break
                case _:  # a new kind of job must be handled here (mypy checks)
                    assert_never(job)
    finally:
        adapter.close()
        results.put(Closed())
