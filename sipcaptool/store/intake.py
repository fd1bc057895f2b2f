"""db_insert_mode 2: the writer process takes every job off the queue at once.

Batching is asynchronous in every mode: the capturing process waits only when
``queue_batches`` batches are already waiting (for instance during a retry window).
Mode 2 makes that "never": a thread of the writer process (:class:`AsyncIntake`) takes
batches off the inter-process queue as soon as they come, keeps up to
ASYNC_MEMORY_BYTES of them in memory and spools what does not fit (its order against
the batch being retried at that moment is not kept). Without a spool the thread waits
instead (back-pressure).
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import TYPE_CHECKING, Protocol

from .jobs import Batch, Close, Job

if TYPE_CHECKING:
    from .writer_process import WriterCore


class _Jobs(Protocol):
    """What the jobs come from (the writer process's side of the jobs queue)."""

    def get(self, *, timeout: float | None = None) -> Job: ...

__all__ = ["ASYNC_MEMORY_BYTES", "AsyncIntake"]

ASYNC_MEMORY_BYTES = 256 << 20  # batches held in memory before spooling


class AsyncIntake:
    """A thread that takes every job off the inter-process queue at once, so that the
    receiving process never waits for the database. Jobs wait in memory (up to
    ``limit`` bytes of batches); beyond that new batches go straight to the spool (or,
    without a spool, the thread waits -- back-pressure). The main loop of the writer
    process takes the jobs with :meth:`get` as it would from the queue."""

    def __init__(self, jobs: _Jobs, core: WriterCore,
                 limit: int = ASYNC_MEMORY_BYTES) -> None:
        self.jobs = jobs
        self.core = core
        self.limit = limit
        self.items: collections.deque[tuple[Job, int]] = collections.deque()
        self.bytes = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="sipcaptool-intake",
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def _size(job: Job) -> int:
        if not isinstance(job, Batch):
            return 0
        p = job.payload
        return len(p) if isinstance(p, (bytes, bytearray)) else 200 * job.rows

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
            if over and self.core.spool is not None and isinstance(job, Batch):
                self.core.to_spool(job.table, job.kind, job.rows, job.payload, job.batch_id, 0,
                                   job.parts)
                continue
            with self.cond:
                self.items.append((job, size))
                self.bytes += size
                self.cond.notify_all()
            if isinstance(job, Close):
                return

    def get(self, timeout: float) -> Job:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                raise queue.Empty
            job, size = self.items.popleft()
            self.bytes -= size
            self.cond.notify_all()
            return job

    def get_nowait(self) -> Job:
        return self.get(0)
