"""What was replayed into a database: ``sipcaptool_replays``, beside ``sipcaptool_batches``.

One row per capture file (and table setting) replayed into the database: the file's
identity (``file_key``: its size and a hash of its head and of its tail, with the tables
it went to), its first and last packet time, how far the replay got (``state``:
``running``, ``complete`` or ``interrupted``; packets and messages) and ``run_id``, the
tag of that run's batch ids in ``sipcaptool_batches``.

A replay of several files writes these rows a few statements at a time: it records the
files it reads next as ``running`` together before the first of them is read (up to 100,
and 64 MB of them after the first; :func:`mark_started_many`), and how each ended once
the batches of a group of them are committed (:func:`mark_done_many`). A file it
recorded ahead and then did not begin (the replay was interrupted) is taken back at the
end (:func:`mark_unstarted_many`: its row removed, or a version ``unstarted`` that reads
as no row); after a kill it stays ``running``, and ``--resume`` stores what is missing
of it (all of it, or nothing).

A replay marks each batch it writes with the position in the file of the batch's last
message (``r<run_id>:<position>:...``, see :class:`~sipcaptool.store.writer.Writer`),
committed in the batch's own transaction. The batches of one table are written in the
order they were cut, so the highest position among a table's committed batches says
that every message of the file up to it that goes to that table is stored:
:func:`stored_positions` gives them, and a resumed replay skips what they cover.
Times are integers (µs since the epoch, UTC) in every database alike. ClickHouse keeps
this table too, as versions of each row (a new row for each change, the newest read;
an UPDATE there is a mutation the server applies later).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace

from . import Adapter
from .schema import BATCHES_TABLE, quote_ident

__all__ = ["REPLAYS_TABLE", "UNSTARTED", "ReplayRecord", "find", "find_many",
           "mark_done_many", "mark_started_many", "mark_unstarted_many",
           "replays_table_sql", "stored_positions"]

REPLAYS_TABLE = "sipcaptool_replays"

_COLUMNS = ("file_key", "path", "size", "head_sha256", "tables", "first_us", "last_us",
            "run_id", "state", "packets", "messages", "started_us", "finished_us")


def replays_table_sql(dialect: str) -> list[str]:
    """CREATE statement for ``sipcaptool_replays`` in ``dialect``."""
    text, big = {"mysql": ("VARCHAR(1024)", "BIGINT"),
                 "postgresql": ("VARCHAR(1024)", "BIGINT")}.get(dialect, ("TEXT", "INTEGER"))
    key = "VARCHAR(64)" if dialect != "sqlite" else "TEXT"
    cols = [f"{q('file_key', dialect)} {key} NOT NULL PRIMARY KEY",
            f"{q('path', dialect)} {text} NOT NULL",
            f"{q('size', dialect)} {big} NOT NULL",
            f"{q('head_sha256', dialect)} {key} NOT NULL",
            f"{q('tables', dialect)} {text} NOT NULL",
            f"{q('first_us', dialect)} {big}",
            f"{q('last_us', dialect)} {big}",
            f"{q('run_id', dialect)} {key} NOT NULL",
            f"{q('state', dialect)} {key} NOT NULL",
            f"{q('packets', dialect)} {big} NOT NULL DEFAULT 0",
            f"{q('messages', dialect)} {big} NOT NULL DEFAULT 0",
            f"{q('started_us', dialect)} {big} NOT NULL",
            f"{q('finished_us', dialect)} {big}"]
    tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" \
        if dialect == "mysql" else ""
    return [f"CREATE TABLE IF NOT EXISTS {q(REPLAYS_TABLE, dialect)} ("
            + ", ".join(cols) + ")" + tail]


def q(name: str, dialect: str) -> str:
    return quote_ident(dialect, name)


@dataclass(frozen=True)
class ReplayRecord:
    """A row of ``sipcaptool_replays``."""

    file_key: str
    path: str
    size: int
    head_sha256: str
    tables: str
    first_us: int | None
    last_us: int | None
    run_id: str
    state: str
    packets: int
    messages: int
    started_us: int
    finished_us: int | None


# the adapters that made sure of the table already (a statement less per file)
_READY: weakref.WeakSet[Adapter] = weakref.WeakSet()


def ensure_table(adapter: Adapter) -> None:
    if adapter in _READY:
        return
    adapter.execute_ddl(replays_table_sql(adapter.dialect))
    _READY.add(adapter)


def find(adapter: Adapter, file_key: str) -> ReplayRecord | None:
    """The record of ``file_key`` in this database, or None (the table is created when
    missing). Where rows are versions (:attr:`~sipcaptool.store.Adapter.updates_in_place`
    False), the newest: the latest start, finished before running."""
    return find_many(adapter, [file_key]).get(file_key)


#: file keys looked up by one statement (find_many)
FIND_CHUNK = 200


def find_many(adapter: Adapter, file_keys: list[str]) -> dict[str, ReplayRecord]:
    """:func:`find` for many files: a statement per FIND_CHUNK keys instead of one a
    file (a replay of a thousand small captures asks once, not a thousand times)."""
    ensure_table(adapter)
    d, ph = adapter.dialect, adapter.placeholder
    cols = ", ".join(q(c, d) for c in _COLUMNS)
    newest: dict[str, tuple[int, bool, int]] = {}
    out: dict[str, ReplayRecord] = {}
    keys = list(dict.fromkeys(file_keys))
    for i in range(0, len(keys), FIND_CHUNK):
        chunk = keys[i:i + FIND_CHUNK]
        rows = adapter.select(f"SELECT {cols} FROM {q(REPLAYS_TABLE, d)} WHERE "
                              f"{q('file_key', d)} IN ({', '.join([ph] * len(chunk))})",
                              tuple(chunk))
        for r in rows:
            order = (int(r[11]), r[12] is not None, int(r[12] or 0))
            key = str(r[0])
            if key in newest and newest[key] >= order:
                continue
            newest[key] = order
            if str(r[8]) == UNSTARTED:
                out.pop(key, None)
                continue
            out[key] = ReplayRecord(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]),
                                    None if r[5] is None else int(r[5]),
                                    None if r[6] is None else int(r[6]), str(r[7]),
                                    str(r[8]), int(r[9]), int(r[10]), int(r[11]),
                                    None if r[12] is None else int(r[12]))
    return out


#: the state of a file a replay recorded as running ahead (with the files before it,
#: mark_started_many) and then never began: as if it had no row (find_many)
UNSTARTED = "unstarted"

#: records written by one statement
MANY_CHUNK = 50


def _insert_many(adapter: Adapter, records: list[ReplayRecord]) -> None:
    d, ph = adapter.dialect, adapter.placeholder
    cols = ", ".join(q(c, d) for c in _COLUMNS)
    row = f"({', '.join([ph] * len(_COLUMNS))})"
    for i in range(0, len(records), MANY_CHUNK):
        chunk = records[i:i + MANY_CHUNK]
        params: list[object] = []
        for rec in chunk:
            params.extend((rec.file_key, rec.path, rec.size, rec.head_sha256, rec.tables,
                           rec.first_us, rec.last_us, rec.run_id, rec.state, rec.packets,
                           rec.messages, rec.started_us, rec.finished_us))
        adapter.execute(f"INSERT INTO {q(REPLAYS_TABLE, d)} ({cols}) VALUES "
                        + ", ".join([row] * len(chunk)), tuple(params))


def mark_started_many(adapter: Adapter, records: list[ReplayRecord]) -> None:
    """Record (or replace) the rows of several files as ``running``, a statement or two
    for all of them: a replay of many files records those it reads next together, each
    before any batch of it is written."""
    if not records:
        return
    d, ph = adapter.dialect, adapter.placeholder
    if adapter.updates_in_place:
        keys = list(dict.fromkeys(r.file_key for r in records))
        for i in range(0, len(keys), MANY_CHUNK):
            chunk = keys[i:i + MANY_CHUNK]
            adapter.execute(f"DELETE FROM {q(REPLAYS_TABLE, d)} WHERE {q('file_key', d)} "
                            f"IN ({', '.join([ph] * len(chunk))})", tuple(chunk))
    _insert_many(adapter, records)


def mark_unstarted_many(adapter: Adapter, records: list[ReplayRecord],
                        finished_us: int) -> None:
    """The files of ``records`` (as :func:`mark_started_many` wrote them) were not begun
    after all (the replay was interrupted before them): their rows are removed, or where
    rows are versions a version in state UNSTARTED is added -- either way the next
    replay takes them as new."""
    if not records:
        return
    d, ph = adapter.dialect, adapter.placeholder
    if not adapter.updates_in_place:
        _insert_many(adapter, [replace(r, state=UNSTARTED, finished_us=finished_us)
                               for r in records])
        return
    for rec in records:
        adapter.execute(f"DELETE FROM {q(REPLAYS_TABLE, d)} WHERE {q('file_key', d)} = {ph} "
                        f"AND {q('run_id', d)} = {ph}", (rec.file_key, rec.run_id))


def mark_done_many(adapter: Adapter, done: list[ReplayRecord]) -> None:
    """How several runs ended, each given as its record from :func:`mark_started_many`
    with the state, counts and times of its end: where rows are versions, one statement
    inserts the new versions (a later run of the same file started later, so its row
    stays the newest, and a run's end written after another run began is not read);
    elsewhere each run's row is updated (another run's row is left alone)."""
    if not done:
        return
    if not adapter.updates_in_place:
        _insert_many(adapter, done)
        return
    d, ph = adapter.dialect, adapter.placeholder
    sets = ", ".join(f"{q(c, d)} = {ph}" for c in ("state", "packets", "messages",
                                                   "first_us", "last_us", "finished_us"))
    for rec in done:
        adapter.execute(f"UPDATE {q(REPLAYS_TABLE, d)} SET {sets} WHERE "
                        f"{q('file_key', d)} = {ph} AND {q('run_id', d)} = {ph}",
                        (rec.state, rec.packets, rec.messages, rec.first_us, rec.last_us,
                         rec.finished_us or 0, rec.file_key, rec.run_id))


def batch_run(run_id: str) -> str:
    """A replay run as its batch ids name it (``r<run_id>``; what the writer process's
    ``_run_of`` takes out of an id, and the ``cut`` of its outcomes)."""
    return f"r{run_id}"


def batch_tag(run_id: str) -> str:
    """The prefix of the batch ids of a replay run."""
    return batch_run(run_id) + ":"


def stored_positions(adapter: Adapter, run_id: str,
                     spooled: Iterable[tuple[str, str]] = ()) -> dict[str, int]:
    """For each table, the position in the file of the last message of the run's
    committed batches (``sipcaptool_batches``, and what the database knows it took
    without the id recorded: :meth:`~sipcaptool.store.Adapter.unrecorded_batches`; the
    table is created when missing) and of ``spooled``, the (table, batch id) of its
    batches waiting in the spool (:func:`~sipcaptool.store.spool.pending_ids`), which the
    writer process writes before anything new: a replay stopped while the database was
    down is resumed without storing those rows a second time."""
    adapter.create_batches_table()
    d = adapter.dialect
    tag = batch_tag(run_id)
    rows = adapter.select(f"SELECT {q('table_name', d)}, {q('batch_id', d)} FROM "
                          f"{q(BATCHES_TABLE, d)} WHERE {q('batch_id', d)} LIKE "
                          f"{adapter.placeholder}", (tag + "%",))
    out: dict[str, int] = {}
    for table, batch_id in [*rows, *adapter.unrecorded_batches(tag), *spooled]:
        try:
            pos = int(str(batch_id)[len(tag):].split(":", 1)[0])
        except ValueError:
            continue
        if pos > out.get(str(table), 0):
            out[str(table)] = pos
    return out
