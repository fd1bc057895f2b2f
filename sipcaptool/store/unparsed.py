"""Messages a replay hands to its writer process unparsed, for it to parse.

A replay into a database runs in two processes: the capturing process reads, decodes
and parses, and hands each batch of rows to the writer process, which writes it. On a
machine with two cores the capturing process was the slower one, and the hand-over of
its rows alone cost it 17-26% of a replay without a database. So whole batches of the
messages a replay reads are handed over as they were captured instead (a tuple of a
few fields each, :func:`pack`: less to marshal than a row of 44 values), and the writer
process parses them and makes the rows itself, the same way
(:func:`~sipcaptool.row.parsed_row`), before anything else sees the batch -- its spool,
its retries and its joined inserts see rows as always.

Which batches: :meth:`~sipcaptool.store.writer.Writer.share` decides for each new batch
of a table, handing it over unparsed when the writer process has taken every batch sent
so far (it has time to spare); otherwise the capturing process parses it. So the
parsing is shared by what each process has time for, whatever the database costs.

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
from collections import Counter
from dataclasses import dataclass

from ..record import CapturedMessage
from ..row import Row, RowOptions, parsed_row

__all__ = ["ParseOptions", "Unparsed", "format_part", "pack", "rows_of"]


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """What the writer process needs to make a row as the capturing process would."""

    row: RowOptions
    capture_bad: bool


@dataclass(frozen=True, slots=True)
class Unparsed:
    """The payload of a :class:`~sipcaptool.store.jobs.Batch` of unparsed messages:
    ``parts``, each a list of :func:`pack`'s tuples marshalled (:func:`format_part`)."""

    parts: tuple[bytes, ...]


#: where a packed message holds its bytes (for the batch's size)
PAYLOAD_INDEX = 7


def pack(msg: CapturedMessage) -> tuple[object, ...]:
    """A SIP message as it is handed over: the fields of :class:`CapturedMessage` that
    make its row, in their order (HEP type SIP; the capture point stays behind)."""
    return (msg.ts_us, msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port, msg.proto,
            msg.family, msg.payload, msg.node_id, msg.correlation_id)


def format_part(items: list[tuple[object, ...]]) -> bytes:
    """Packed messages as one part of an :class:`Unparsed` payload."""
    return marshal.dumps(items, 4)


def rows_of(payload: Unparsed, opts: ParseOptions) -> tuple[list[Row], Counter[str]]:
    """The rows of the messages of ``payload``, in order, and what parsing them counted;
    a message that makes no row (malformed, ``capture_bad`` off) is counted and left out."""
    stats: Counter[str] = Counter()
    rows: list[Row] = []
    add = rows.append
    row_opts, bad = opts.row, opts.capture_bad
    for part in payload.parts:
        for item in marshal.loads(part):
            got = parsed_row(CapturedMessage(*item), row_opts, bad, stats)
            if got is not None:
                add(got[1])
    return rows, stats
