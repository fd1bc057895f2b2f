"""What the capturing process asks of its writer process (the jobs queue).

A :class:`~sipcaptool.store.writer.Writer` puts one job at a time on a bounded
``multiprocessing`` queue; :func:`~sipcaptool.store.writer_process.writer_main` takes them
off it and answers with the outcomes of :mod:`sipcaptool.store.outcomes`. Every job is a
frozen dataclass, taken apart with ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Batch", "Close", "Job", "Sync"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Write ``rows`` rows, formatted by the adapter's ``format_batch`` (``payload``), into
    ``table``; ``batch_id`` is stored with them so that the batch is written once.
    ``parts``: how many batches of the capturing process this one holds (the writer
    process joins consecutive batches for a database that wants large inserts, see
    :func:`~sipcaptool.store.writer_process.coalesce`); each outcome reports as many."""

    table: str
    kind: str       # "sip" or "aux"
    rows: int
    payload: object
    batch_id: str
    parts: int = 1


@dataclass(frozen=True, slots=True)
class Sync:
    """Answer :class:`~sipcaptool.store.outcomes.Synced` with the same ``token`` once every
    batch sent before this job has an outcome (``Writer.flush``)."""

    token: int


@dataclass(frozen=True, slots=True)
class Close:
    """Drain the spool (bounded), close the connection and end
    (:class:`~sipcaptool.store.outcomes.Closed`)."""


Job = Batch | Sync | Close
