"""Reading stored rows back through the store adapters (``Adapter.select``).

A :class:`Reader` opens each database of the settings read-only (once), learns which
of its tables exist and their columns (a table Kamailio made may lack some of ours),
and runs the few statements search, flow and export need: the candidate calls of a
query, the messages of a list of Call-IDs, and the Call-IDs that point at others
(``callid_aleg``) or carry a Session-ID. A store added later implements ``select``,
``existing_tables`` and ``table_columns`` and is read the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..config import Settings
from ..store import Adapter, open_adapter
from .filters import Query, SqlBuilder, quote_name, time_terms, where_clause
from .model import STORED_COLUMNS, StoredMessage
from .tables import Source, present, read_sources

__all__ = ["Reader"]

log = logging.getLogger("sipcaptool.store")

CHUNK = 500           # Call-IDs per IN (...) list


class _Db:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.adapter: Adapter = open_adapter(source.db_url)
        self.adapter.connect_readonly()
        self.dialect = self.adapter.dialect
        self.tables = present(source, self.adapter.existing_tables())
        self._columns: dict[str, list[str]] = {}

    def columns(self, table: str) -> list[str]:
        cols = self._columns.get(table)
        if cols is None:
            have = set(self.adapter.table_columns(table))
            cols = [c for c in ("id", *STORED_COLUMNS) if c in have]
            self._columns[table] = cols
        return cols

    def q(self, name: str) -> str:
        return quote_name(self.dialect, name)


class Reader:
    """The databases and tables of the settings for a time window, opened for reading.
    Use as a context manager (closes the connections). StoreError (exit 4) when a
    database cannot be reached."""

    def __init__(self, settings: Settings, since_us: int | None = None,
                 until_us: int | None = None) -> None:
        self.settings = settings
        self.dbs: list[_Db] = []
        try:
            for source in read_sources(settings, since_us, until_us):
                self.dbs.append(_Db(source))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for db in self.dbs:
            db.adapter.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def tables(self) -> list[str]:
        return [t for db in self.dbs for t in db.tables]

    # -- statements --------------------------------------------------------------------
    def candidates(self, query: Query, limit: int | None = None) -> list[tuple[str, int]]:
        """``(callid, first µs)`` of the calls with a message matching the query's
        row-level filters, newest first; at most ``limit`` (after merging tables)."""
        first: dict[str, int] = {}
        for db in self.dbs:
            for table in db.tables:
                where, params = where_clause(query, db.dialect, table=table)
                sql = (f"SELECT {db.q('callid')}, MIN({db.q('micro_ts')}) FROM "
                       f"{db.q(table)} WHERE {where} GROUP BY {db.q('callid')}")
                if limit is not None:
                    # by the expression: ClickHouse before 21.x reads "2" as a constant
                    sql += f" ORDER BY MIN({db.q('micro_ts')}) DESC LIMIT {int(limit)}"
                for callid, ts in db.adapter.select(sql, params):
                    cid = str(callid)
                    t = int(ts or 0)
                    if cid not in first or t < first[cid]:
                        first[cid] = t
        out = sorted(first.items(), key=lambda kv: (-kv[1], kv[0]))
        return out[:limit] if limit is not None else out

    def messages(self, callids: Iterable[str], since_us: int | None = None,
                 until_us: int | None = None) -> list[StoredMessage]:
        """Every stored message of these Call-IDs (optionally within a window), in time
        order."""
        ids = sorted(set(callids))
        out: list[StoredMessage] = []
        for db in self.dbs:
            for table in db.tables:
                cols = db.columns(table)
                if "callid" not in cols:
                    continue
                select = ", ".join(db.q(c) for c in cols)
                for i in range(0, len(ids), CHUNK):
                    chunk = ids[i:i + CHUNK]
                    b = SqlBuilder(db.dialect)
                    cond = f"{db.q('callid')} IN ({', '.join(b.p(c) for c in chunk)})"
                    terms = [cond, *time_terms(b, since_us, until_us)]
                    sql = f"SELECT {select} FROM {db.q(table)} WHERE {' AND '.join(terms)}"
                    for row in db.adapter.select(sql, b.params):
                        out.append(StoredMessage.from_row(cols, row, table))
        out.sort(key=_order)
        return out

    def pointing_at(self, callids: Sequence[str]) -> dict[str, set[str]]:
        """``{a-leg Call-ID: {Call-IDs whose callid_aleg names it}}``."""
        out: dict[str, set[str]] = {}
        ids = sorted(set(callids))
        for db in self.dbs:
            for table in db.tables:
                if "callid_aleg" not in db.columns(table):
                    continue
                for i in range(0, len(ids), CHUNK):
                    b = SqlBuilder(db.dialect)
                    chunk = ids[i:i + CHUNK]
                    sql = (f"SELECT DISTINCT {db.q('callid_aleg')}, {db.q('callid')} FROM "
                           f"{db.q(table)} WHERE {db.q('callid_aleg')} IN "
                           f"({', '.join(b.p(c) for c in chunk)})")
                    for aleg, cid in db.adapter.select(sql, b.params):
                        out.setdefault(str(aleg), set()).add(str(cid))
        return out

    def containing(self, needle: bytes, since_us: int, until_us: int) -> set[str]:
        """Call-IDs of the messages within the window whose bytes contain ``needle``
        (a Session-ID UUID)."""
        out: set[str] = set()
        for db in self.dbs:
            for table in db.tables:
                b = SqlBuilder(db.dialect)
                msg = db.q("msg")
                terms = time_terms(b, since_us, until_us)
                if db.dialect == "sqlite":
                    terms.append(f"instr({msg}, {b.p(needle)}) > 0")
                elif db.dialect == "mysql":
                    terms.append(f"LOCATE({b.p(needle)}, {msg}) > 0")
                elif db.dialect == "postgresql":
                    terms.append(f"position({b.p(needle)}::bytea in {msg}) > 0")
                elif db.dialect == "clickhouse":
                    terms.append(f"position({msg}, {b.p(needle)}) > 0")
                else:
                    continue
                sql = (f"SELECT DISTINCT {db.q('callid')} FROM {db.q(table)} "
                       f"WHERE {' AND '.join(terms)}")
                out.update(str(r[0]) for r in db.adapter.select(sql, b.params))
        return out


def _order(m: StoredMessage) -> tuple[Any, ...]:
    return (m.micro_ts, m.table, int(m.extra.get("id") or 0))
