"""Finding the rows a database refuses in a batch, without losing the good ones.

When the database refuses a batch itself (not the connection), trying again cannot
help; but one bad row must not take the others with it. :func:`isolate` writes the batch
in halves, and the refused halves in halves again, down to single rows. Each piece has
its own id, derived from the batch's (``<batch id>.<path of 0s and 1s>``), so a piece is
never written twice. After ISOLATE_MAX_WRITES statements the pieces left are written row
by row, each row under a savepoint in the piece's one transaction
(:meth:`Adapter.write_each`, piece id ending in ``e``), so that a batch with many
refused rows loses no good row either.

A connection failure (or an operator error) in the middle stops the search: the pieces
not tried are returned in :attr:`Isolation.pending`, for the caller to spool (or to keep
in the spool, for a batch that came from there). What to do with the result is
:class:`~sipcaptool.store.writer_process.WriterCore`'s business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import StoreError
from . import Adapter

__all__ = ["ISOLATE_MAX_WRITES", "Isolation", "can_isolate", "isolate", "isolation_text"]

ISOLATE_MAX_WRITES = 64  # statements tried to separate the rows a database refuses

log = logging.getLogger("sipcaptool.store")


@dataclass(slots=True)
class Isolation:
    """What :func:`isolate` did with a refused batch."""

    written: int = 0        # rows written now
    already: int = 0        # rows of pieces an earlier attempt had written
    refused: int = 0        # rows refused
    each: int = 0           # pieces written row by row (past the budget)
    first_error: str = ""   # the database's words for the first refused row
    #: pieces not tried because the connection was lost: (payload, rows, piece id)
    pending: list[tuple[object, int, str]] = field(default_factory=list)
    transient: StoreError | None = None  # the error that stopped the search


def can_isolate(adapter: Adapter, err: StoreError, n: int, table: str) -> bool:
    """Whether the refused batch may be searched: at least two rows, refused by the
    database (not a transient error), and a table where a failed write leaves nothing
    behind (otherwise rows could be written twice)."""
    if n < 2 or err.transient:
        return False
    try:
        return adapter.transactional(table)
    except Exception:  # noqa: BLE001 - cannot tell: do not risk writing rows twice
        return False


def isolate(adapter: Adapter, table: str, kind: str, n: int, payload: object,
            batch_id: str, on_written: Callable[[str], None]) -> Isolation:
    """Write a refused batch piece by piece (halves, recursively) to find the rows the
    database refuses; see the module doc. ``on_written(table)`` is called after each
    piece that was written (to collect the adapter's warnings and counters)."""
    res = Isolation()
    stack: list[tuple[object, int, str]] = []

    def halves(p: object, k: int, path: str) -> None:
        a, na, b, nb = adapter.split_batch(p, k)
        stack.append((b, nb, path + "1"))
        stack.append((a, na, path + "0"))

    def stop(e: StoreError, p: object, k: int, piece_id: str) -> Isolation:
        res.transient = e
        res.pending = [(p, k, piece_id)] + [(q, m, f"{batch_id}.{qp}")
                                            for q, m, qp in reversed(stack)]
        return res

    halves(payload, n, "")
    writes = 0
    while stack:
        p, k, path = stack.pop()
        piece_id = f"{batch_id}.{path}"
        if writes >= ISOLATE_MAX_WRITES and k > 1:
            # past the budget: row by row in one transaction (a piece id of its own)
            piece_id += "e"
            ok: bool | None
            try:
                ok, refused = adapter.write_each(table, kind, p, piece_id, k)
            except StoreError as e:
                if e.transient:
                    return stop(e, p, k, piece_id)
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
                on_written(table)
            continue
        writes += 1
        try:
            written = adapter.write(table, kind, p, piece_id, k)
        except StoreError as e:
            if e.transient:
                return stop(e, p, k, piece_id)
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
        if written is False:
            res.already += k
        else:
            res.written += k
            on_written(table)
    return res


def isolation_text(n: int, res: Isolation, err: StoreError, lost: int = 0) -> str:
    """What a finished search found, in one line; logged as an error when rows were
    dropped."""
    dropped = res.refused + lost
    text = (f"{res.first_error or err}; {dropped} of {n} rows of the batch refused and "
            "dropped, the other rows stored")
    if dropped:
        log.error("%s (counted as dropped:db-error)", text)
    return text
