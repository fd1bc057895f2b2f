"""Batching writer: groups rows per table, formats them, and writes them in batches.

Rows are grouped per ``(table, kind)`` and a batch is written when it holds
``batch_size`` rows or when its first row is ``flush_interval`` seconds old (a timer
thread takes care of the latter when no more rows come).

With ``background=True`` (the fast path) the batch is formatted in the calling process
(the adapter's pure ``format_batch``: COPY text, LOAD DATA buffer) and handed over a
bounded queue to a separate writer process, which only executes it. The capturing
process never waits for the database unless the queue is full (back-pressure: memory
stays bounded at about ``queue_batches`` batches). The writer process ignores SIGINT and
SIGTERM -- a Ctrl-C or a ``kill`` of the process group must not lose what is queued --
and ends when :meth:`Writer.close` tells it to (or when its parent has gone).

A failed batch is retried up to ``insert_retries`` times within
``insert_retry_timeout`` seconds, with exponential back-off (0.1 s doubling to 5 s) and
a fresh connection each time. A batch that still fails is counted (``db:errors``,
``dropped:db-error`` rows) and the error is raised as StoreError from the next
:meth:`Writer.add`, :meth:`Writer.flush` or :meth:`Writer.close` of the caller (once).

Counters (in the caller's Stats): ``db:batches`` (batches written), ``db:retries``,
``db:errors`` (batches given up), ``stored:<table>`` (rows written), ``dropped:db-error``.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time

from ..errors import StoreError
from ..stats import Stats
from . import Adapter, open_adapter
from .url import DbUrl, parse_db_url

_START_TIMEOUT = 60.0   # seconds to wait for the writer process to connect
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


def write_with_retries(adapter: Adapter, table: str, kind: str, payload: object,
                       retries: int, retry_timeout: float,
                       sleep=time.sleep) -> tuple[int, StoreError | None]:
    """Write one formatted batch, retrying with back-off and reconnecting.

    Returns ``(retries used, None)`` on success or ``(retries used, last error)``.
    """
    attempt = 0
    start = time.monotonic()
    delay = _BACKOFF_FIRST
    while True:
        try:
            adapter.write(table, kind, payload)
            return attempt, None
        except StoreError as e:
            remaining = retry_timeout - (time.monotonic() - start)
            if attempt >= retries or remaining <= 0:
                return attempt, e
            attempt += 1
            adapter.close()  # reconnect on the next try
            sleep(min(delay, remaining))
            delay = min(delay * 2, _BACKOFF_MAX)


def _writer_main(url: DbUrl, partition_days: int | None, jobs, results, retries: int,
                 retry_timeout: float, parent_pid: int) -> None:
    """The writer process: execute ready-made batches until told to close."""
    # Ctrl-C, a terminal hang-up or a stop of the whole process group must not end this
    # process before the parent has handed over everything: it ends on "close" (or when
    # the parent is gone)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    adapter = open_adapter(url, partition_days=partition_days)
    try:
        adapter.connect()
    except StoreError as e:
        results.put(("fatal", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent
        results.put(("fatal", f"{url.redacted()}: {type(e).__name__}: {e}"))
        return
    results.put(("ready",))
    try:
        while True:
            try:
                job = jobs.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:  # the parent is gone: nothing more comes
                    break
                continue
            op = job[0]
            if op == "batch":
                _, table, kind, n, payload = job
                try:
                    used, err = write_with_retries(adapter, table, kind, payload,
                                                   retries, retry_timeout)
                except Exception as e:  # noqa: BLE001 - a bug must not kill the writer
                    used, err = 0, StoreError(f"{url.redacted()}: cannot write to {table}: "
                                              f"{type(e).__name__}: {e}")
                if err is None:
                    results.put(("done", table, n, used))
                else:
                    results.put(("error", table, n, used, str(err)))
            elif op == "sync":
                results.put(("synced", job[1]))
            elif op == "close":
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
        flush_interval: a batch is written at most this many seconds after its first row
            (0 or less: only by size, flush() and close()).
        insert_retries: retries of a failed batch.
        insert_retry_timeout: seconds within which the retries happen.
        background: write from a separate process (see the module doc).
        queue_batches: formatted batches that may wait for the writer process.
        partition_days: MySQL: partition tables created on demand (see schema.py).
        mp_context: multiprocessing start method (default ``fork``; ``spawn`` works too).

    Raises:
        ConfigError: a bad db_url.
        StoreError: the database cannot be reached (checked at start).
    """

    def __init__(self, db_url: str | DbUrl, stats: Stats, *, batch_size: int = 2000,
                 flush_interval: float = 1.0, insert_retries: int = 0,
                 insert_retry_timeout: float = 60, background: bool = True,
                 queue_batches: int = 8, partition_days: int | None = None,
                 mp_context: str | None = None) -> None:
        self.url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
        self.stats = stats
        self.batch_size = max(1, int(batch_size))
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
        if self.url.is_none:
            self.adapter = None
            return
        self.adapter = open_adapter(self.url, partition_days=partition_days)
        if self.background:
            self._start_process(queue_batches, partition_days, mp_context)
        else:
            self.adapter.connect()
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
    def _start_process(self, queue_batches: int, partition_days, mp_context) -> None:
        ctx = multiprocessing.get_context(mp_context or "fork")
        self._jobs = ctx.Queue(maxsize=max(1, int(queue_batches)))
        self._results = ctx.Queue()
        self._proc = ctx.Process(
            target=_writer_main, name="sipcaptool-writer", daemon=True,
            args=(self.url, partition_days, self._jobs, self._results, self.retries,
                  self.retry_timeout, os.getpid()))
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

    def _handle(self, msg: tuple) -> None:
        op = msg[0]
        st = self.stats
        if op == "done":
            _, table, n, used = msg
            self._in_flight -= n
            st["db:batches"] += 1
            st["stored:" + table] += n
            if used:
                st["db:retries"] += used
        elif op == "error":
            _, table, n, used, text = msg
            self._in_flight -= n
            st["db:errors"] += 1
            st["dropped:db-error"] += n
            if used:
                st["db:retries"] += used
            if self._error is None:
                self._error = StoreError(text)
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

        Raises StoreError for an earlier batch that could not be written (once), or when
        the writer is closed.
        """
        if self._error is not None:
            self._raise_pending()
        if self._closed:
            raise StoreError(f"{self.url.redacted()}: writer is closed")
        key = (table, kind)
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = []
                self._first[key] = time.monotonic()
            buf.append(row)
            if len(buf) >= self.batch_size:
                self._flush_key(key)

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
            return
        table, kind = key
        if self.adapter is None:  # db_url none
            self._buffers.pop(key, None)
            self._first.pop(key, None)
            return
        n = len(rows)
        job = ("batch", table, kind, n, self.adapter.format_batch(kind, rows))
        self._unsent.append(job)
        self._buffers.pop(key, None)
        self._first.pop(key, None)
        self._send_unsent()

    def _send_unsent(self) -> None:
        while self._unsent:
            job = self._unsent[0]
            _, table, kind, n, payload = job
            if self.background:
                self._send(job)
                self._unsent.pop(0)
                self._in_flight += n
                self._drain()
            else:
                self._unsent.pop(0)
                self._in_flight += n
                used, err = write_with_retries(self.adapter, table, kind, payload,
                                               self.retries, self.retry_timeout)
                self._handle(("done", table, n, used) if err is None
                             else ("error", table, n, used, str(err)))

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
