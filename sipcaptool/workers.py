"""Worker processes: one pool for every command that spreads capture over processes.

``live --workers N`` (one libpcap handle or raw socket each) and ``hep --workers N``
(one copy of the listening sockets each) run the same way: the parent forks N workers
(``fork``, so they inherit the open handles and shared values), each worker runs its
own capture loop and pipeline, and talks to the parent over a pipe of its own in the
typed messages below. The parent merges the counters (``counters()``), notices a worker
that fails or dies, and stops the others.

A worker's body is ``body(index, link)``; ``link.ready()`` tells the parent it is
listening, ``link.snapshot(stats)`` sends its counters (about once a second), and what
the body returns (a dict of anything picklable) ends up, with its final counters, in
``pool.results[index]``. An exception of the project (``SipcaptoolError``) raised by the
body reaches the parent as :class:`Failed` with the exception itself (so the exit code
it maps to is kept); any other exception as :class:`Failed` with a one-line text.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from .errors import SipcaptoolError
from .stats import Stats

log = logging.getLogger("sipcaptool.workers")

__all__ = ["Done", "Failed", "Ready", "Snapshot", "WorkerLink", "WorkerPool"]


# ------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Ready:
    """The worker has set itself up and captures."""

    index: int


@dataclass(frozen=True)
class Snapshot:
    """The worker's counters so far."""

    index: int
    stats: dict[str, int]


@dataclass(frozen=True)
class Done:
    """The worker ended: its last counters, and what its body returned."""

    index: int
    stats: dict[str, int]
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """The worker could not go on; ``error`` is the project's exception when it raised
    one (its exit code is kept), else a ``SipcaptoolError`` with a one-line text."""

    index: int
    error: SipcaptoolError
    stats: dict[str, int] = field(default_factory=dict)
    died: bool = False  # the process ended without a word (killed, crashed)


Message = Ready | Snapshot | Done | Failed


class WorkerLink:
    """The worker's end of its pipe."""

    def __init__(self, index: int, conn: Any, stats: Stats) -> None:
        self.index = index
        self.stats = stats
        self._conn = conn

    def send(self, msg: Message) -> None:
        try:
            self._conn.send(msg)
        except OSError:  # the parent is gone: keep capturing, the end reports again
            pass

    def ready(self) -> None:
        self.send(Ready(self.index))

    def snapshot(self, stats: Stats | None = None) -> None:
        self.send(Snapshot(self.index, dict(stats if stats is not None else self.stats)))


Body = Callable[[int, WorkerLink], "dict[str, Any] | None"]


def _child(index: int, body: Body, conn: Any, close_in_child: Callable[[int], None] | None,
           stats: Stats) -> None:
    if close_in_child is not None:
        close_in_child(index)
    link = WorkerLink(index, conn, stats)
    try:
        result = body(index, link) or {}
    except SipcaptoolError as e:
        link.send(Failed(index, e, dict(stats)))
        return
    except Exception as e:  # noqa: BLE001 - a worker's crash is reported, not lost
        log.debug("worker %d failed", index, exc_info=True)
        link.send(Failed(index, SipcaptoolError(f"{multiprocessing.current_process().name}: "
                                                f"{type(e).__name__}: {e}"),
                         dict(stats)))
        return
    link.send(Done(index, dict(stats), result))


class WorkerPool:
    """Fork ``n`` workers running ``body`` and follow them to the end.

    Args:
        n: how many workers.
        body: ``body(index, link) -> dict | None``, run in each worker with a fresh
            :class:`Stats` in ``link.stats``.
        name: process name prefix (``sipcaptool-hep`` -> ``sipcaptool-hep-0`` …).
        stop_flag: a shared value the workers watch; ``stop()`` sets it to 1.
        signal_workers: ``stop()`` also sends SIGTERM to each worker (for workers whose
            loop stops on a signal of its own).
        close_in_child: called first thing in worker ``i`` (to close what belongs to
            the other workers).
        keep_going: a worker that fails or dies after it was ready does not stop the
            others (for workers that each serve a share the others take over, as
            SO_REUSEPORT sockets do); one that fails during start-up always does.
    """

    def __init__(self, n: int, body: Body, *, name: str, stop_flag: Any = None,
                 signal_workers: bool = False,
                 close_in_child: Callable[[int], None] | None = None,
                 keep_going: bool = False) -> None:
        self.n = n
        self.body = body
        self.name = name
        self.stop_flag = stop_flag
        self.signal_workers = signal_workers
        self.keep_going = keep_going
        self.close_in_child = close_in_child
        self.procs: list[Any] = []
        self.ready: set[int] = set()
        self.snapshots: dict[int, dict[str, int]] = {}
        self.results: dict[int, Done] = {}
        self.failures: list[Failed] = []
        self._conns: dict[Connection, int] = {}

    def start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        for i in range(self.n):
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, name=f"{self.name}-{i}",
                            args=(i, self.body, child_end, self.close_in_child, Stats()))
            p.daemon = False  # a worker's pipeline starts a writer process of its own
            p.start()
            child_end.close()
            self.procs.append(p)
            self._conns[parent_end] = i

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every worker to stop (idempotent)."""
        if self.stop_flag is not None:
            self.stop_flag.value = 1
        if self.signal_workers:
            for p in self.procs:
                if p.pid and p.exitcode is None:
                    try:
                        os.kill(p.pid, signum)
                    except OSError:
                        pass

    @property
    def all_ready(self) -> bool:
        return len(self.ready) == self.n

    def counters(self) -> Stats:
        """The workers' counters: the final ones where a worker ended, else its last
        snapshot."""
        total = Stats()
        for i in range(self.n):
            done = self.results.get(i)
            total.update(done.stats if done is not None else self.snapshots.get(i, {}))
        return total

    def poll(self, timeout: float) -> bool:
        """Take the messages that arrive within ``timeout``; False once every worker
        has ended (and been heard of)."""
        from multiprocessing.connection import wait

        if not self._conns:
            return False
        for ready in wait(list(self._conns), timeout=timeout):
            conn = cast(Connection, ready)
            i = self._conns[conn]
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                del self._conns[conn]
                if i not in self.results and not any(f.index == i for f in self.failures):
                    self.procs[i].join(5)
                    what = ("exited during start-up" if i not in self.ready
                            else "ended unexpectedly")
                    self.failures.append(Failed(i, SipcaptoolError(
                        f"{self.procs[i].name} {what} (exit code {self.procs[i].exitcode})"),
                        died=True))
                    self._stop_after_failure(i)
                continue
            self._take(msg)
        return bool(self._conns)

    def _take(self, msg: Message) -> None:
        match msg:
            case Ready(index=i):
                self.ready.add(i)
            case Snapshot(index=i, stats=stats):
                self.snapshots[i] = stats
            case Done(index=i):
                self.ready.add(i)
                self.results[i] = msg
            case Failed(index=i, stats=stats):
                self.failures.append(msg)
                if stats:
                    self.snapshots[i] = stats
                self._stop_after_failure(i)

    def _stop_after_failure(self, index: int) -> None:
        if not (self.keep_going and index in self.ready):
            self.stop()

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the processes; one still alive after ``timeout`` is terminated."""
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():  # pragma: no cover - a stuck worker
                log.error("%s did not stop in %.0f s; terminating it", p.name, timeout)
                p.terminate()
                p.join(5)

    def run(self, tick: Callable[[], None] | None = None, every: float = 0.5) -> None:
        """Follow the workers until every one has ended, then join them; ``tick`` is
        called between polls (start the control socket once all are ready, …)."""
        try:
            while self.poll(every):
                if tick is not None:
                    tick()
        finally:
            self.stop()
            self.join()
