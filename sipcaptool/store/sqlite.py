"""SQLite adapter: batches are written with ``executemany`` in one transaction."""

from __future__ import annotations

import os
import sqlite3

from . import COLUMN_NAMES, Adapter
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident


_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "disk is full", "readonly")


class SqliteAdapter(Adapter):
    """SQLite via the standard library. The file is opened in WAL mode (readers do not
    block the writer) with ``synchronous=NORMAL``."""

    dialect = "sqlite"

    def __init__(self, url, *, partition_days=None) -> None:
        super().__init__(url, partition_days=partition_days)
        self.conn: sqlite3.Connection | None = None
        self._sql: dict[tuple[str, str], str] = {}

    def connect(self) -> None:
        if self.conn is not None:
            return
        path = self.url.database
        try:
            if path != ":memory:":
                d = os.path.dirname(path)
                if d and not os.path.isdir(d):
                    raise sqlite3.OperationalError(f"directory {d!r} does not exist")
            conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise self.error("cannot open", e, transient=True) from None
        self.conn = conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def execute_ddl(self, statements: list[str]) -> None:
        self.connect()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for st in statements:
                self.conn.execute(st)
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise self.error("cannot create table", e) from None

    def _rollback(self) -> None:
        try:
            if self.conn is not None and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def format_batch(self, kind: str, rows: list[tuple]) -> list[tuple]:
        return rows

    def _insert_sql(self, table: str, kind: str) -> str:
        key = (table, kind)
        sql = self._sql.get(key)
        if sql is None:
            names = COLUMN_NAMES[kind]
            sql = (f"INSERT INTO {quote_ident('sqlite', table)} "
                   f"({', '.join(quote_ident('sqlite', c) for c in names)}) "
                   f"VALUES ({', '.join('?' * len(names))})")
            self._sql[key] = sql
        return sql

    def write(self, table: str, kind: str, formatted: list[tuple], batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        self.connect_for_write()
        sql = self._insert_sql(table, kind)
        created: set[str] = set()
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                if batch_id is not None:
                    cur = self.conn.execute(batches_marker_sql("sqlite"),
                                            (batch_id, table, rows or len(formatted)))
                    if cur.rowcount == 0:  # committed by an earlier attempt
                        self._rollback()
                        return False
                self.conn.executemany(sql, formatted)
                self.conn.execute("COMMIT")
                return True
            except sqlite3.OperationalError as e:
                self._rollback()
                text = str(e)
                if "no such table" in text:
                    if BATCHES_TABLE in text and "marker" not in created:
                        created.add("marker")
                        self.create_batches_table()
                        continue
                    if "data" not in created and BATCHES_TABLE not in text:
                        created.add("data")
                        self.create_for(table, kind)
                        continue
                # locked, busy, disk I/O or full, cannot open: worth trying again later
                transient = any(w in text.lower() for w in _TRANSIENT)
                raise self.error(f"cannot write to {table}", e, transient=transient) from None
            except sqlite3.Error as e:
                self._rollback()
                raise self.error(f"cannot write to {table}", e) from None
