"""Messages a replay hands to its writer process unparsed, for it to parse.

A replay into a database runs in two processes: the capturing process reads, decodes
and parses, and hands each batch of rows to the writer process, which writes it. On a
machine with two cores the capturing process was the slower one, and the hand-over of
its rows alone cost it 17-26% of a replay without a database. So whole batches of the
messages a replay reads are handed over as they were captured instead (a tuple of a few
fields each, :func:`~sipcaptool.row.pack`: less to marshal than a row of 44 values),
and the writer process parses them and makes the rows itself, the same way
(:class:`~sipcaptool.row.RowMaker`, given to it by the pipeline), before anything else
sees the batch -- its spool, its retries and its joined inserts see rows as always.

Which batches: :meth:`~sipcaptool.store.writer.Writer.share` decides for each new batch
of a table, handing it over unparsed when the writer process has taken every batch sent
before the last one (it has time to spare); otherwise the capturing process parses it.
So the parsing is shared by what each process has time for, whatever the database
costs.

Only a replay's batches of one SIP table are handed over unparsed (one target, a table
without strftime codes, no routes: :meth:`~sipcaptool.pipeline.Pipeline.submit_all`);
the dedup window, the capture switch and the file positions stay in the capturing
process. What parsing counts in the writer process (``malformed:``, ``stored-bad:``,
``lenient:``, ``truncated:``) comes back as a
:class:`~sipcaptool.store.outcomes.Parsed` outcome, with the number of messages that
made no row.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MakesRows", "PAYLOAD_INDEX", "Unparsed", "format_part", "rows_of"]

Row = tuple[Any, ...]


class MakesRows(Protocol):
    """What makes the rows of packed messages in the writer process (the pipeline's
    :class:`~sipcaptool.row.RowMaker`)."""

    def rows(self, items: Iterable[tuple[Any, ...]]) -> tuple[list[Row], Mapping[str, int]]:
        """The rows of ``items`` in order, and what making them counted; an item that
        makes no row is counted and left out."""
        ...


@dataclass(frozen=True, slots=True)
class Unparsed:
    """The payload of a :class:`~sipcaptool.store.jobs.Batch` of unparsed messages:
    ``parts``, each a list of packed messages marshalled (:func:`format_part`)."""

    parts: tuple[bytes, ...]


#: where a packed message holds its bytes (for the batch's size)
PAYLOAD_INDEX = 7


def format_part(items: list[tuple[Any, ...]]) -> bytes:
    """Packed messages as one part of an :class:`Unparsed` payload."""
    return marshal.dumps(items, 4)


def rows_of(payload: Unparsed, maker: MakesRows) -> tuple[list[Row], Mapping[str, int]]:
    """The rows of the messages of ``payload``, in order, and what making them counted."""
    items: list[tuple[Any, ...]] = []
    for part in payload.parts:
        items.extend(marshal.loads(part))
    return maker.rows(items)
