"""What the writer process reports back to the capturing process (the results queue).

Each outcome is a frozen dataclass; ``Writer._handle`` takes them apart with ``match`` and
adds them to the caller's :class:`~sipcaptool.stats.Stats` (the counters each one adds
are named in :mod:`sipcaptool.store.writer`). The same outcomes come from a
:class:`~sipcaptool.store.writer_process.WriterCore` run in the capturing process
(``background=False``) and from ``sipcaptool spool drain``.

In every outcome ``rows`` is the number of rows of the batch and ``retries`` the retries
it took (``insert_retries``); ``parts`` (outcomes of a new batch) is how many of the
capturing process's batches it held (see :class:`~sipcaptool.store.jobs.Batch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Closed", "Counts", "Drained", "DroppedDbError", "DroppedSpoolFull", "Outcome",
           "Parsed", "Ready", "Split", "Spooled", "SpoolStatus", "StartFailed", "Synced",
           "Warnings", "Written"]


# -- the writer process's life ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready:
    """The writer process has started and takes jobs (connected, or spooling because the
    database cannot be reached)."""


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The writer process could not start (the database or the spool); it has ended."""

    text: str


@dataclass(frozen=True, slots=True)
class Synced:
    """Every batch sent before :class:`~sipcaptool.store.jobs.Sync` ``token`` has its
    outcome."""

    token: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The writer process has finished (after :class:`~sipcaptool.store.jobs.Close`, or on
    its way out for any reason)."""


# -- what happened to a batch -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Written:
    """A new batch is in the database. ``written_now`` is False when its id showed that an
    earlier attempt had committed it (``db:already-written``)."""

    table: str
    rows: int
    retries: int
    written_now: bool
    parts: int = 1


@dataclass(frozen=True, slots=True)
class Spooled:
    """A new batch was appended to the spool, to be written when the database is back."""

    table: str
    rows: int
    retries: int
    parts: int = 1


@dataclass(frozen=True, slots=True)
class Drained:
    """A batch from the spool is in the database (``written_now`` as in
    :class:`Written`)."""

    table: str
    rows: int
    written_now: bool
    parts: int = 1


@dataclass(frozen=True, slots=True)
class DroppedSpoolFull:
    """A new batch should have gone to the spool, which was full: it is dropped
    (``dropped:spool-full``). ``text`` is the spool's words. ``cut``: for a batch of a
    replay, its run (``r<run_id>``), cut there (see :attr:`WriterCore.cut_runs
    <sipcaptool.store.writer_process.WriterCore.cut_runs>`)."""

    table: str
    rows: int
    retries: int
    text: str
    parts: int = 1
    cut: str = ""


@dataclass(frozen=True, slots=True)
class DroppedForResume:
    """A batch of a replay run that was cut (an earlier batch of it lost for want of the
    database, see :class:`DroppedSpoolFull`): not stored, so that what the run stored is
    a beginning of its file; ``replay --resume`` stores it (``dropped:for-resume``)."""

    table: str
    rows: int
    run: str
    parts: int = 1


@dataclass(frozen=True, slots=True)
class DroppedDbError:
    """A batch could not be written and is dropped (``dropped:db-error``): the database
    refused it as a whole, or the retries ended with no spool to keep it. ``from_spool``:
    it was a batch from the spool (no longer in flight), not a new one."""

    table: str
    rows: int
    retries: int
    text: str
    from_spool: bool = False
    parts: int = 1
    cut: str = ""     # a replay's run cut for want of the database: see DroppedSpoolFull


@dataclass(frozen=True, slots=True)
class Split:
    """The database refused a batch and it was written in pieces to find the refused
    rows (:mod:`sipcaptool.store.isolate`): ``stored`` rows written, ``dropped`` refused
    (or lost with no spool to keep them), ``spooled`` rows of pieces put in the spool when
    the connection failed midway, ``spool_full`` rows of such pieces the full spool could
    not take. ``text`` says what was refused; it is empty when the search was cut short
    by a lost connection (the batch stays in the spool and is searched again). ``new``:
    a new batch (it was in flight), not one from the spool. ``cut``: the replay run whose
    batch lost pieces for want of the database (see :class:`DroppedSpoolFull`)."""

    table: str
    rows: int
    retries: int
    stored: int
    dropped: int
    spooled: int
    spool_full: int
    text: str
    new: bool
    parts: int = 1
    cut: str = ""

    @property
    def finished(self) -> bool:
        """The search went through the whole batch (``db:split``)."""
        return bool(self.text)


# -- by-products of writing -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Warnings:
    """Values the server changed or left out while taking a batch (``db:warnings``)."""

    table: str
    count: int


@dataclass(frozen=True, slots=True)
class Counts:
    """Counters the adapter kept while formatting or writing (``db:unrepresentable``,
    ``truncated:<column>``), added as they are."""

    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Parsed:
    """A batch of unparsed messages (:mod:`sipcaptool.store.unparsed`) was parsed: what
    parsing counted (``malformed:<reason>``, ``lenient:<what>``, ...), and ``unstored``,
    the messages of it that made no row (the batch's outcome counts its rows)."""

    counts: Mapping[str, int]
    unstored: int


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What the spool holds now (the gauges ``spool_batches``, ``spool_bytes``); sent when
    it changes."""

    batches: int
    nbytes: int
    rows: int


Outcome = (Ready | StartFailed | Synced | Closed | Written | Spooled | Drained
           | DroppedSpoolFull | DroppedForResume | DroppedDbError | Split | Warnings | Counts
           | Parsed | SpoolStatus)
