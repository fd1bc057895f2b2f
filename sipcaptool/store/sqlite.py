"""SQLite adapter: batches are written with ``executemany`` in one transaction."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import StoreError
from . import COLUMN_NAMES, Adapter, Row, one_line, payload_list
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident
from .url import DbUrl

_R = TypeVar("_R")

# what an error means (see StoreError): sqlite3 has few classes, so the words decide
_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "disk is full")
_OPERATOR = ("readonly", "read-only", "no such table", "no such column", "has no column",
             "columns but", "malformed", "not a database", "no such database")


def classify(e: BaseException) -> str:
    """``connection``, ``operator`` or ``refused`` for an sqlite3 error."""
    if isinstance(e, OSError):
        return "connection"
    text = str(e).lower()
    if isinstance(e, (sqlite3.OperationalError, sqlite3.DatabaseError)) and \
            not isinstance(e, (sqlite3.IntegrityError, sqlite3.DataError)):
        if any(w in text for w in _TRANSIENT):
            return "connection"
        if any(w in text for w in _OPERATOR):
            return "operator"
    # constraints (CHECK, NOT NULL, UNIQUE, RAISE in a trigger), data, anything else
    return "refused"


def file_problem(path: str, exc: BaseException) -> str:
    """Why SQLite cannot open or write ``path``, in the file system's words: the
    directory that cannot take new files (the journal and WAL files go beside the
    database) and why, a file that is not writable, a full file system (ENOSPC); ''
    when none of these."""
    if path == ":memory:" or path.startswith("file:"):
        return ""
    text = str(exc).lower()
    d = os.path.dirname(os.path.abspath(path))
    if "disk is full" in text or getattr(exc, "sqlite_errorcode", 0) == 13:  # SQLITE_FULL
        try:
            st = os.statvfs(d)
            free = f"{st.f_bavail * st.f_frsize} bytes free"
        except OSError:
            free = "its free space unknown"
        return f"the file system holding {d} is full (ENOSPC, {free})"
    if not any(w in text for w in ("unable to open", "readonly", "read-only", "disk i/o")):
        return ""
    import tempfile
    try:
        with tempfile.TemporaryFile(dir=d, prefix=".sipcaptool-"):
            pass
    except FileNotFoundError:
        return f"directory {d} does not exist"
    except OSError as e:
        return f"directory {d} does not take new files: {e.strerror}"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return ""


class SqliteAdapter(Adapter):
    """SQLite via the standard library. The file is opened in WAL mode (readers do not
    block the writer) with ``synchronous=NORMAL``."""

    dialect = "sqlite"

    def __init__(self, url: DbUrl, *, partition_days: int | None = None) -> None:
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

    def connect_readonly(self) -> None:
        """Open the file read-only (``mode=ro``): a missing file is an error, not a new
        empty database."""
        if self.conn is not None:
            return
        path = self.url.database
        if path == ":memory:":
            self.connect()
            return
        from urllib.parse import quote
        try:
            if not os.path.exists(path):
                raise sqlite3.OperationalError(f"unable to open: {path!r} does not exist")
            self.conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=30,
                                        isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise self.error("cannot open", e, transient=True) from None

    def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise self.error("cannot read", e) from None

    def existing_tables(self) -> set[str]:
        return {str(r[0]) for r in self.select(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def table_columns(self, table: str) -> list[str]:
        return [str(r[1]) for r in self.select(
            f"PRAGMA table_info({quote_ident('sqlite', table)})")]

    def _db(self) -> sqlite3.Connection:
        """The connection :meth:`connect` opened."""
        if self.conn is None:
            raise sqlite3.OperationalError("unable to open: not connected")
        return self.conn

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
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            for st in statements:
                conn.execute(st)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise self.error("cannot create table", e) from None

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def error(self, what: str, exc: BaseException, transient: bool | None = None,
              kind: str | None = None, hint: str = "") -> StoreError:
        """As :meth:`Adapter.error`, with the file system's reason where there is one
        (which directory cannot take files and why, a full disk)."""
        err = super().error(what, exc, transient, kind, hint)
        why = file_problem(self.url.database, exc)
        if why:
            err.args = (f"{err}: {why}",)
        return err

    def operator_hint(self, exc: BaseException) -> str:
        text = str(exc).lower()
        if "readonly" in text or "read-only" in text:
            return "make the database file and its directory writable"
        if "no such table" in text:
            return "create the table (sipcaptool db init)"
        if "column" in text:
            return "the table has other columns: recreate it with sipcaptool db init"
        return super().operator_hint(exc)

    def _rollback(self) -> None:
        try:
            if self.conn is not None and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def format_batch(self, kind: str, rows: list[Row]) -> list[Row]:
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

    def write(self, table: str, kind: str, formatted: object, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        batch = payload_list(formatted)

        def once(conn: sqlite3.Connection, sql: str) -> bool:
            conn.executemany(sql, batch)
            return True
        return self._run(once, False, table, kind, batch, batch_id, rows)

    def write_each(self, table: str, kind: str, formatted: object, batch_id: str,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        if not formatted:
            return True, []
        batch = payload_list(formatted)

        def once(conn: sqlite3.Connection, sql: str) -> tuple[bool, list[tuple[int, str]]]:
            refused: list[tuple[int, str]] = []
            for i, row in enumerate(batch):
                conn.execute("SAVEPOINT sipcaptool_row")
                try:
                    conn.execute(sql, row)
                except sqlite3.Error as e:
                    if classify(e) != "refused":
                        raise
                    conn.execute("ROLLBACK TO sipcaptool_row")
                    refused.append((i, one_line(e)))
                conn.execute("RELEASE sipcaptool_row")
            return True, refused
        already: tuple[bool, list[tuple[int, str]]] = (False, [])
        return self._run(once, already, table, kind, batch, batch_id, rows)

    def _run(self, once: Callable[[sqlite3.Connection, str], _R], already: _R, table: str,
             kind: str, batch: Sequence[Row], batch_id: str | None, rows: int) -> _R:
        """``once(connection, insert statement)`` in one transaction (after the batch
        id, when given); ``already`` when the batch id was committed before."""
        self.connect_for_write()
        sql = self._insert_sql(table, kind)
        created: set[str] = set()
        while True:
            try:
                conn = self._db()
                conn.execute("BEGIN IMMEDIATE")
                if batch_id is not None:
                    cur = conn.execute(batches_marker_sql("sqlite"),
                                       (batch_id, table, rows or len(batch)))
                    if cur.rowcount == 0:  # committed by an earlier attempt
                        self._rollback()
                        return already
                result = once(conn, sql)
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                self._rollback()
                text = str(e)
                if isinstance(e, sqlite3.OperationalError) and "no such table" in text:
                    if BATCHES_TABLE in text and "marker" not in created:
                        created.add("marker")
                        self.create_batches_table()
                        continue
                    if "data" not in created and BATCHES_TABLE not in text:
                        created.add("data")
                        self.create_for(table, kind)
                        continue
                raise self.error(f"cannot write to {table}", e) from None
