"""Batching writer: groups rows per table, formats them, and writes them in batches.

(Somewhat over 500 lines: :class:`Writer` is one object whose buffers, timer thread and
hand-over to the writer process share one lock and one set of gauges; what could leave
it has, into the modules listed below.)

Rows are grouped per ``(table, kind)`` and a batch is written when it holds
``batch_size`` rows, or about ``batch_max_bytes`` bytes once formatted (a batch of
large messages is not ``batch_size`` times their size in memory), or when its first
row is ``flush_interval`` seconds old (a timer thread takes care of the latter when no
more rows come).

With ``background=True`` (the fast path) the batch is formatted in the calling process
(the adapter's pure ``format_batch``: COPY text, LOAD DATA buffer; where the adapter has
``part_rows``, that many rows at a time as they come, put together by ``join_parts``) and
handed over a bounded queue to a separate writer process, which executes it. The
capturing process never waits for the database unless the queue is full (back-pressure:
memory stays bounded at about ``queue_batches`` batches). The writer process ends when
:meth:`Writer.close` tells it to (or when its parent has gone). A replay hands the
writer process the batches it has time for as unparsed messages instead, for it to
parse (:meth:`Writer.share`, :mod:`~sipcaptool.store.unparsed`).

This module is the capturing process's side. The rest of the house:

* :mod:`~sipcaptool.store.jobs` and :mod:`~sipcaptool.store.outcomes`: what the two
  processes say to each other (frozen dataclasses, taken apart with ``match``);
* :mod:`~sipcaptool.store.writer_process`: the writer process's loop and
  :class:`~sipcaptool.store.writer_process.WriterCore`, which decides what happens to a
  batch (written, spooled, drained, split) -- with ``background=False`` it runs here;
* :mod:`~sipcaptool.store.retry`: ``insert_retries`` within ``insert_retry_timeout``
  seconds, with back-off and a fresh connection each time;
* :mod:`~sipcaptool.store.isolate`: finding the rows a database refuses in a batch;
* :mod:`~sipcaptool.store.intake`: db_insert_mode 2;
* :mod:`~sipcaptool.store.spool`: the disk spool. Every batch carries an id, inserted
  into ``sipcaptool_batches`` in the batch's own transaction; a batch is never written
  twice, even when the connection died after the commit was sent but before it was
  confirmed.

A batch that is dropped (the database refused it, or the spool is full) is counted
(``db:errors``; ``dropped:db-error`` or ``dropped:spool-full`` rows) and the error is
raised as StoreError from the next :meth:`Writer.add`, :meth:`Writer.flush` or
:meth:`Writer.close` of the caller (once).

db_insert_mode: 0 and 1 are written as above (1 uses INSERT DELAYED for MySQL tables
whose engine has it -- MyISAM, MEMORY, ARCHIVE -- and says so in a log line; InnoDB,
PostgreSQL and SQLite get the normal batch); 2 see :mod:`~sipcaptool.store.intake`.

Counters (in the caller's Stats): ``db:batches`` (batches written), ``db:retries``,
``db:errors`` (batches given up), ``db:spooled`` (batches put in the spool),
``db:drained`` (spooled batches written), ``db:already-written`` (batches found
committed by an earlier attempt), ``db:warnings`` (values the server changed or left
out while taking a batch: MySQL's LOAD DATA LOCAL turns such errors into warnings, which
are logged and counted; a row it skips -- fewer rows taken than sent -- is a refused
row), ``db:unrepresentable`` and ``truncated:<column>`` (PostgreSQL databases whose
encoding is not UTF8, see :mod:`sipcaptool.store.postgres`), ``db:split`` (batches the
database refused, written in pieces so that only the refused rows were dropped),
``stored:<table>`` (rows written),
``dropped:db-error``, ``dropped:spool-full``. Gauges (changes added to the same Stats,
so they add up over writers and workers): ``queue_depth`` (batches handed to the writer
and not yet written or spooled), ``spool_batches``, ``spool_bytes``.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, assert_never, cast

from ..errors import StoreError
from ..stats import Stats
from . import Adapter, open_adapter
from .heap import retain_freed_memory
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
from .unparsed import PAYLOAD_INDEX, MakesRows, Unparsed, format_part
from .url import DbUrl, parse_db_url
from .writer_process import MSG_INDEX, WriterCore, writer_main

if TYPE_CHECKING:
    from multiprocessing.context import DefaultContext
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

    from .retention import Maintenance

__all__ = ["BATCH_MAX_BYTES", "Position", "Writer"]

_START_TIMEOUT = 60.0   # seconds to wait for the writer process to connect
BATCH_MAX_BYTES = 8 << 20  # default batch_max_bytes
_ROW_OVERHEAD = 256        # formatted bytes of a row besides its message (an estimate)


class Position:
    """Where a replay is in its file: ``seq``, the number of the message being submitted
    (1, 2, ...). Shared by the writers of a replay (see :meth:`Writer.follow`)."""

    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq = 0


class _Buffer:
    """The rows of one ``(table, kind)`` not yet handed over: ``parts`` already formatted
    (:attr:`~sipcaptool.store.Adapter.part_rows` at a time; ``formatted`` rows in all),
    then ``rows`` not yet formatted. ``check_at``: the length of ``rows`` at which
    :meth:`Writer.add` must look at the buffer again (a part to format, or the batch
    full); ``msg``: where a row of this kind holds its message (None: nowhere); ``raw``:
    the buffer holds messages to be parsed by the writer process instead of rows
    (:mod:`~sipcaptool.store.unparsed`)."""

    __slots__ = ("rows", "parts", "formatted", "size", "first", "last_seq", "check_at",
                 "msg", "raw")

    def __init__(self, first: float, check_at: int, msg: int | None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.parts: list[object] = []
        self.formatted = 0
        self.size = 0           # about the bytes of the batch once formatted
        self.first = first      # when its first row came (time.monotonic)
        self.last_seq = 0       # a replay's file position of its last row
        self.check_at = check_at
        self.msg = msg
        self.raw = False

    def __len__(self) -> int:
        return self.formatted + len(self.rows)


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
        maintenance: hep, live: the tables (and MySQL partitions) of today and tomorrow
            made ahead by the writer process (:class:`~sipcaptool.store.retention.Maintenance`).
        parse: a replay's: what makes the rows of messages handed to the writer
            process unparsed (:meth:`share`, :mod:`~sipcaptool.store.unparsed`; the
            pipeline's :class:`~sipcaptool.row.RowMaker`); None: it is handed rows only.
        writer_parses: with ``parse``, which batches are handed over unparsed:
            ``auto`` (when the writer process has time to spare, see :meth:`share`),
            ``always``, ``never``.

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
                 require_db_at_start: bool = False,
                 maintenance: Maintenance | None = None,
                 parse: MakesRows | None = None, writer_parses: str = "auto") -> None:
        self.url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
        self.stats = stats
        self.batch_size = max(1, int(batch_size))
        self.batch_max_bytes = max(1, int(batch_max_bytes))
        self.flush_interval = float(flush_interval)
        self.retries = max(0, int(insert_retries))
        self.retry_timeout = float(insert_retry_timeout)
        self.background = bool(background) and not self.url.is_none
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        self._part_rows = 0      # the adapter's part_rows (0: format whole batches)
        self._lock = threading.RLock()
        self._error: StoreError | None = None
        self._closed = False
        self._proc: BaseProcess | None = None
        self._jobs: Queue[Job] | None = None
        self._results: Queue[Outcome] | None = None
        self._sync_ids = itertools.count(1)
        self._synced: set[int] = set()
        self._in_flight = 0          # rows handed to the writer process, not yet reported
        self._unsent: list[Batch] = []  # formatted jobs not yet in the queue
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self.spool_dir = spool_dir or None
        self.spool_max_bytes = int(spool_max_bytes)
        self.insert_mode = int(insert_mode)
        self.require_db_at_start = bool(require_db_at_start)
        self.maintenance = maintenance
        if writer_parses not in ("auto", "always", "never"):
            raise ValueError(f"writer_parses: {writer_parses!r}")
        # (only a writer process parses: in one process there is no core to share)
        self._parse = parse if self.background and writer_parses != "never" else None
        self._parse_always = writer_parses == "always"
        self._batch_prefix = uuid.uuid4().hex[:16] + "-"
        self._batch_seq = itertools.count(1)
        # a replay's bookkeeping (follow()): the run's batch id tag, the file position of
        # each buffer's last row, and what an earlier run of the file stored
        self._position: Position | None = None
        self._tag = ""
        self._stored_before: dict[str, int] = {}
        self._core: WriterCore | None = None
        #: the replay runs (``r<run_id>``) that lost a batch for want of the database
        #: (the spool full, or no spool): the writer process drops the rest of their file
        #: (WriterCore.cut_runs); the replay stops reading, for --resume to store the rest
        self.cut_runs: set[str] = set()
        self.cut_rows = 0    # rows of the batches whose loss cut a run (dropped:db-error)
        # gauges (their changes are added to the stats, so that several writers and
        # several workers add up): batches handed over and not yet done, spool contents
        self.queue_depth = 0
        self.spool_batches = self.spool_bytes = self.spool_rows = 0
        self.adapter: Adapter | None = None
        if self.url.is_none:
            return
        self.adapter = open_adapter(self.url, partition_days=partition_days)
        self.adapter.insert_mode = self.insert_mode
        self._part_rows = self.adapter.part_rows
        if self.background:
            self._start_process(queue_batches, partition_days, mp_context)
        else:
            spool = None
            if self.spool_dir:
                from .spool import Spool
                spool = Spool(self.spool_dir, self.url, self.spool_max_bytes)
            self._core = WriterCore(self.adapter, self.retries, self.retry_timeout, spool,
                                    self._handle, maintenance)
            self._core.start(self.require_db_at_start)
            self._core.maintain()
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

    def _start_process(self, queue_batches: int, partition_days: int | None,
                       mp_context: str | None) -> None:
        # (typeshed gives the context of a method named at run time no Process class;
        # every concrete context has one)
        retain_freed_memory()    # (each batch's pickle would be a fresh mapping)
        ctx = cast("DefaultContext", multiprocessing.get_context(mp_context or "fork"))
        jobs: Queue[Job] = ctx.Queue(maxsize=max(1, int(queue_batches)))
        results: Queue[Outcome] = ctx.Queue()
        proc = ctx.Process(
            target=writer_main, name="sipcaptool-writer", daemon=True,
            args=(self.url, partition_days, jobs, results, self.retries,
                  self.retry_timeout, os.getpid(), self.spool_dir, self.spool_max_bytes,
                  self.insert_mode, self.require_db_at_start, self.maintenance,
                  self._parse))
        self._jobs, self._results, self._proc = jobs, results, proc
        proc.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                msg = results.get(timeout=0.2)
            except queue.Empty:
                if not proc.is_alive() or time.monotonic() > deadline:
                    self._abandon_process()
                    raise StoreError(f"{self.url.redacted()}: the writer process did not "
                                     "start") from None
                continue
            match msg:
                case Ready():
                    return
                case SpoolStatus():
                    self._handle(msg)
                case StartFailed(text=text):
                    self._abandon_process()
                    raise StoreError(text)

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
        self._jobs = None
        self._results = None

    def _gauge(self, name: str, value: int) -> None:
        old = getattr(self, name)
        if value != old:
            setattr(self, name, value)
            self.stats[name] += value - old

    def _landed(self, rows: int, parts: int) -> None:
        """``parts`` batches handed to the writer (``rows`` rows) have their outcome
        (written, spooled, dropped)."""
        self._in_flight -= rows
        self._gauge("queue_depth", self.queue_depth - parts)

    def _handle(self, msg: Outcome) -> None:
        """One outcome reported by the writer process (or the in-process core)."""
        st = self.stats
        match msg:
            case Written():
                self._landed(msg.rows, msg.parts)
                st["db:batches"] += msg.parts
                st["stored:" + msg.table] += msg.rows
                if not msg.written_now:
                    st["db:already-written"] += 1
                if msg.retries:
                    st["db:retries"] += msg.retries
            case Spooled():
                self._landed(msg.rows, msg.parts)
                st["db:spooled"] += 1
                if msg.retries:
                    st["db:retries"] += msg.retries
            case Drained():
                st["db:batches"] += msg.parts
                st["db:drained"] += 1
                st["stored:" + msg.table] += msg.rows
                if not msg.written_now:
                    st["db:already-written"] += 1
            case DroppedSpoolFull():
                self._landed(msg.rows, msg.parts)
                if msg.cut:
                    self.cut_runs.add(msg.cut)
                st["db:errors"] += 1
                st["dropped:spool-full"] += msg.rows
                if msg.retries:
                    st["db:retries"] += msg.retries
                if self._error is None:
                    self._error = StoreError(f"{self.url.redacted()}: {msg.text}; "
                                             f"{msg.rows} rows dropped")
            case DroppedForResume():
                self._landed(msg.rows, msg.parts)
                st["dropped:for-resume"] += msg.rows
                self.cut_runs.add(msg.run)
            case DroppedDbError():
                if msg.cut:
                    self.cut_runs.add(msg.cut)
                    self.cut_rows += msg.rows
                if not msg.from_spool:  # a spooled batch is no longer in flight
                    self._landed(msg.rows, msg.parts)
                st["db:errors"] += 1
                st["dropped:db-error"] += msg.rows
                if msg.retries:
                    st["db:retries"] += msg.retries
                if self._error is None:
                    self._error = StoreError(msg.text)
            case SpoolStatus():
                self._gauge("spool_batches", msg.batches)
                self._gauge("spool_bytes", msg.nbytes)
                self.spool_rows = msg.rows
            case Split():
                if msg.cut:
                    self.cut_runs.add(msg.cut)
                if msg.new:
                    self._landed(msg.rows, msg.parts)
                    st["db:batches"] += msg.parts
                if msg.finished:  # (not a search cut short by a lost connection)
                    st["db:split"] += 1
                st["stored:" + msg.table] += msg.stored
                if msg.dropped:
                    st["db:errors"] += 1
                    st["dropped:db-error"] += msg.dropped
                if msg.spooled:
                    st["db:spooled"] += 1
                if msg.spool_full:
                    st["dropped:spool-full"] += msg.spool_full
                if msg.retries:
                    st["db:retries"] += msg.retries
            case Warnings():
                st["db:warnings"] += msg.count
            case Counts():
                for k, v in msg.counts.items():
                    st[k] += v
            case Parsed():
                for k, v in msg.counts.items():
                    st[k] += v
                self._in_flight -= msg.unstored     # (handed over as messages)
            case Synced():
                self._synced.add(msg.token)
            case Ready() | StartFailed() | Closed():
                pass
            case _:  # a new kind of outcome must be handled here (mypy checks)
                assert_never(msg)

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

    def _wait_for(self, done: Callable[[Outcome], bool], what: str) -> None:
        """Handle results until ``done(msg)`` is true for one; StoreError if the process
        died first."""
        results = self._results
        assert results is not None  # called while the writer process runs
        while True:
            try:
                msg = results.get(timeout=0.5)
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

    def _send(self, job: Job) -> None:
        while True:
            proc, jobs = self._proc, self._jobs
            if proc is None or jobs is None or not proc.is_alive():
                lost = self._in_flight
                self._abandon_process()
                raise StoreError(f"{self.url.redacted()}: the writer process ended "
                                 f"unexpectedly; {lost} rows may be lost")
            try:
                jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                self._drain()

    # -- batching ------------------------------------------------------------------------
    def follow(self, tag: str, position: Position | None,
               stored_before: dict[str, int] | None = None) -> None:
        """Replay bookkeeping: each batch id starts with ``tag`` and the ``position.seq``
        of its last row (:mod:`sipcaptool.store.replays` reads them back), and a row
        submitted at a position an earlier run of the file stored for its table
        (``stored_before``: table -> position) is skipped, counted as
        ``dropped:stored-before``. ``follow("", None)`` ends it. Call between files: the
        rows of the file before are cut into batches of their own here (the writer
        process joins no batches of two runs)."""
        with self._lock:
            self._flush_all()
            self._tag = tag
            self._position = position
            self._stored_before = dict(stored_before or {})

    def _raise_pending(self) -> None:
        err = self._error
        if err is not None:
            self._error = None
            raise err

    def add(self, table: str, kind: str, row: tuple[Any, ...]) -> None:
        """Accept one row for ``table`` (``kind`` ``"sip"`` or ``"aux"``).

        Raises StoreError for an earlier batch that could not be written (once; this
        row is accepted all the same), or when the writer is closed.
        """
        # (once per message: the common case -- a row added to a buffer that needs
        # nothing else -- is a handful of operations; the rest is in _look_at)
        if self._closed:
            raise StoreError(f"{self.url.redacted()}: writer is closed")
        pos = self._position
        if pos is not None and self._stored_before \
                and pos.seq <= self._stored_before.get(table, 0):
            self.stats["dropped:stored-before"] += 1
            return
        lock = self._lock
        lock.acquire()      # (not a with statement: a third of this method's time)
        try:
            buf = self._buffers.get((table, kind))
            if buf is None or buf.raw:
                buf = self._new_buffer(table, kind)
            if pos is not None:
                buf.last_seq = pos.seq
            rows = buf.rows
            rows.append(row)
            try:
                size = buf.size = buf.size + 2 * len(row[buf.msg]) + _ROW_OVERHEAD  # type: ignore[index]
            except (TypeError, IndexError):   # (a row without its message: counted as 0)
                size = buf.size = buf.size + _ROW_OVERHEAD
            if len(rows) >= buf.check_at or size >= self.batch_max_bytes:
                self._look_at((table, kind), buf)
        finally:
            lock.release()
        if self._error is not None:
            self._raise_pending()

    def add_rows(self, table: str, kind: str, rows: Sequence[tuple[Any, ...]],
                 seqs: Sequence[int] | None = None) -> None:
        """:meth:`add` each of ``rows`` in order, in one call (the rows of one
        decoded batch). ``seqs``: a replay's file position of each row (see
        :meth:`follow`), instead of ``position.seq`` at the time of the call. Batches are
        cut where :meth:`add` would cut them."""
        if self._closed:
            raise StoreError(f"{self.url.redacted()}: writer is closed")
        if seqs is None:
            pos = self._position
            seqs = [pos.seq] * len(rows) if pos is not None else None
        self._take(table, kind, rows, seqs, False)

    def _take(self, table: str, kind: str, items: Sequence[tuple[Any, ...]],
              seqs: Sequence[int] | None, raw: bool) -> None:
        """Rows (``raw``: unparsed messages) into the buffer of ``(table, kind)``, each
        with its file position (``seqs``), a batch handed over whenever one is full."""
        skip = self._stored_before.get(table, 0) if seqs is not None else 0
        key = (table, kind)
        limit = self.batch_max_bytes
        lock = self._lock
        lock.acquire()
        try:
            buf = self._buffers.get(key)
            if buf is not None and buf.raw != raw:
                buf = self._new_buffer(table, kind, raw)    # (the other sort goes first)
            for i, row in enumerate(items):
                if seqs is not None and seqs[i] <= skip:
                    self.stats["dropped:stored-before"] += 1
                    continue
                if buf is None:
                    buf = self._new_buffer(table, kind, raw)
                if seqs is not None:
                    buf.last_seq = seqs[i]
                pending = buf.rows
                pending.append(row)
                try:
                    size = buf.size = buf.size + 2 * len(row[buf.msg]) + _ROW_OVERHEAD  # type: ignore[index]
                except (TypeError, IndexError):
                    size = buf.size = buf.size + _ROW_OVERHEAD
                if len(pending) >= buf.check_at or size >= limit:
                    self._look_at(key, buf)
                    buf = self._buffers.get(key)
        finally:
            lock.release()
        if self._error is not None:
            self._raise_pending()

    def _new_buffer(self, table: str, kind: str, raw: bool = False) -> _Buffer:
        """A new batch of ``(table, kind)`` (caller holds the lock); one of the other
        sort (rows, unparsed messages) in its place is handed over first, so that a
        table's batches hold its rows in their order."""
        key = (table, kind)
        if key in self._buffers:
            self._flush_key(key)
        buf = self._buffers[key] = _Buffer(
            time.monotonic(), self._check_at(0, self.batch_size),
            PAYLOAD_INDEX if raw else MSG_INDEX.get(kind))
        buf.raw = raw
        return buf

    @property
    def parses(self) -> bool:
        """Whether this writer's process parses messages handed over unparsed
        (:meth:`share`, :meth:`add_unparsed`)."""
        return self._parse is not None

    def share(self, table: str) -> tuple[bool, int]:
        """For the SIP rows of ``table``, whether the next messages are to be handed
        over unparsed (:meth:`add_unparsed`) or as rows, and how many more the batch being
        filled takes (at least 1). Decided for each new batch: unparsed when this writer
        :attr:`parses` and its process has taken every batch sent before the last one
        (it has time to spare; ``writer_parses`` ``always``: whenever it parses)."""
        key = (table, "sip")
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._new_buffer(table, "sip", self._parse is not None
                                       and (self._parse_always or self._writer_idle()))
            return buf.raw, max(1, self.batch_size - len(buf))

    def _writer_idle(self) -> bool:
        """The writer process has taken every batch sent before the last one (at most one
        waits in the queue: when a batch has just been sent, the next one begins before
        the writer process can have taken it, so ``== 0`` would almost never hold --
        measured: 3 batches of 50 unparsed, against 20 of 50 with ``<= 1``)."""
        jobs = self._jobs
        if jobs is None or self._unsent:
            return False
        try:
            return jobs.qsize() <= 1
        except (NotImplementedError, OSError):     # (a platform without sem_getvalue)
            return False

    def add_unparsed(self, table: str, items: Sequence[tuple[Any, ...]],
                     seqs: Sequence[int]) -> None:
        """:meth:`add_rows` for SIP messages the writer process parses and makes rows of
        (each packed by :func:`~sipcaptool.row.pack`; ``seqs``, a replay's file position
        of each). Batches are cut as for rows, a message counted as a row; one that
        makes no row is counted by the writer process."""
        if self._closed:
            raise StoreError(f"{self.url.redacted()}: writer is closed")
        if self._parse is None:
            raise ValueError("this writer does not parse")
        if len(items) != len(seqs):
            raise ValueError(f"{len(items)} messages, {len(seqs)} positions")
        self._take(table, "sip", items, seqs, True)

    def _check_at(self, pending: int, left: int) -> int:
        """The length of a buffer's unformatted rows at which to look at it again: when
        its part is due (``part_rows``, if not reached yet) or its batch is full
        (``left`` rows more than the ``pending`` ones)."""
        part = self._part_rows
        return min(part, pending + left) if part > pending else pending + left

    def _look_at(self, key: tuple[str, str], buf: _Buffer) -> None:
        """A buffer whose rows reached its ``check_at`` or whose size reached
        batch_max_bytes (caller holds the lock): a part formatted, the batch handed over
        when full, the next ``check_at`` set."""
        rows = buf.rows
        if len(rows) == self._part_rows and self.adapter is not None:
            # formatted now, while these rows are still in the processor's cache
            buf.parts.append(format_part(rows) if buf.raw
                             else self.adapter.format_batch(key[1], rows))
            buf.rows = []
            buf.formatted += len(rows)
        left = self.batch_size - buf.formatted - len(buf.rows)
        if left <= 0 or buf.size >= self.batch_max_bytes:
            self._flush_key(key)
            return
        buf.check_at = self._check_at(len(buf.rows), left)

    def _flush_key(self, key: tuple[str, str]) -> None:
        """Format and dispatch one buffer (caller holds the lock).

        Written so that an exception raised by a signal handler in the middle (Ctrl-C,
        SIGTERM turned into KeyboardInterrupt) loses nothing: the rows stay in the buffer
        until the formatted job exists, and the job is kept in ``_unsent`` until the
        queue has it; close() sends what is left.
        """
        buf = self._buffers.get(key)
        if buf is None or not len(buf) or self.adapter is None:  # (db_url none)
            self._buffers.pop(key, None)
            return
        table, kind = key
        batch_id = self._batch_prefix + str(next(self._batch_seq))
        if self._tag:  # a replay's: the file position of the batch's last row first
            batch_id = f"{self._tag}{buf.last_seq}:{batch_id}"
        if buf.raw:
            payload: object = Unparsed(tuple(cast("list[bytes]", buf.parts))
                                       + ((format_part(buf.rows),) if buf.rows else ()))
        elif buf.parts:
            parts = buf.parts + [self.adapter.format_batch(kind, buf.rows)] if buf.rows \
                else buf.parts
            payload = self.adapter.join_parts(kind, parts)
        else:
            payload = self.adapter.format_batch(kind, buf.rows)
        job = Batch(table, kind, len(buf), payload, batch_id)
        self._unsent.append(job)
        self._buffers.pop(key, None)
        self._send_unsent()

    def _send_unsent(self) -> None:
        while self._unsent:
            job = self._unsent[0]
            core = self._core
            if self.background or core is None:
                self._send(job)
                self._unsent.pop(0)
                self._in_flight += job.rows
                self._gauge("queue_depth", self.queue_depth + 1)
                self._drain()
            else:
                self._unsent.pop(0)
                self._in_flight += job.rows
                self._gauge("queue_depth", self.queue_depth + 1)
                core.batch(job.table, job.kind, job.rows, job.payload, job.batch_id)
                core.pump()

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
                    due = [k for k, b in self._buffers.items() if now - b.first >= interval]
                    for key in due:
                        self._flush_key(key)
                    self._drain()
                    if self._core is not None:
                        while self._core.pump() and not self._stop.is_set():
                            pass
                    oldest = min((b.first for b in self._buffers.values()), default=None)
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
                    + sum(j.rows for j in self._unsent) + max(self._in_flight, 0))

    def flush(self) -> None:
        """Write everything accepted so far and wait until it is committed."""
        if self._closed:
            self._raise_pending()
            return
        with self._lock:
            self._flush_all()
            if self.background and self._proc is not None:
                token = next(self._sync_ids)
                self._send(Sync(token))
                self._wait_for(lambda m: isinstance(m, Synced) and m.token == token, "flush")
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
                        self._send(Close())
                        self._wait_for(lambda m: isinstance(m, Closed), "close")
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
        proc, jobs = self._proc, self._jobs
        if proc is not None and proc.is_alive():
            try:
                if jobs is not None:
                    jobs.put_nowait(Close())
            except Exception:  # noqa: BLE001 - the queue may be closed or broken at exit
                pass
            proc.join(30)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
