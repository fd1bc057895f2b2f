"""PostgreSQL adapter: batches are written with ``COPY ... FROM STDIN`` (text format)."""

from __future__ import annotations

import io

import psycopg2
import psycopg2.errors

from ..record import AUX_COLUMNS, SIP_COLUMNS
from . import COLUMN_NAMES, Adapter
from ._text import TabFormatter
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident

_FORMATTERS = {"sip": TabFormatter(SIP_COLUMNS, "postgresql"),
               "aux": TabFormatter(AUX_COLUMNS, "postgresql")}
_COLS = {k: ", ".join(quote_ident("postgresql", c) for c in v) for k, v in COLUMN_NAMES.items()}
_COPY_CHUNK = 1 << 20


class PostgresAdapter(Adapter):
    """PostgreSQL via psycopg2; COPY text with bytea as ``\\x`` hex."""

    dialect = "postgresql"

    def __init__(self, url, *, partition_days=None) -> None:
        super().__init__(url, partition_days=partition_days)
        self.conn = None

    def _params(self, database: str) -> dict:
        u = self.url
        p = dict(host=u.host, port=u.port, dbname=database, user=u.user or "postgres",
                 connect_timeout=10, application_name="sipcaptool")
        if u.password:
            p["password"] = u.password
        p.update(dict(u.options))
        return p

    def connect(self) -> None:
        if self.conn is not None:
            return
        try:
            self.conn = psycopg2.connect(**self._params(self.url.database))
        except psycopg2.Error as e:
            raise self.error("cannot connect", e, transient=True) from None
        try:
            self.conn.set_session(autocommit=False)
            with self.conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            self.conn.commit()
        except psycopg2.Error as e:
            self.close()
            raise self.error("cannot set up the session", e, transient=True) from None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def create_database(self) -> None:
        try:
            conn = psycopg2.connect(**self._params("postgres"))
        except psycopg2.Error as e:
            raise self.error("cannot connect", e) from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.url.database,))
                if cur.fetchone() is None:
                    try:
                        cur.execute("CREATE DATABASE " + quote_ident("postgresql",
                                                                      self.url.database))
                    except psycopg2.errors.DuplicateDatabase:
                        pass
        except psycopg2.Error as e:
            raise self.error("cannot create database", e) from None
        finally:
            conn.close()

    def execute_ddl(self, statements: list[str]) -> None:
        self.connect()
        try:
            with self.conn.cursor() as cur:
                for st in statements:
                    cur.execute(st)
            self.conn.commit()
        except psycopg2.Error as e:
            self._rollback()
            if isinstance(e, psycopg2.errors.UniqueViolation):
                # two processes creating the same table at once: it exists now
                return
            raise self.error("cannot create table", e, transient=isinstance(
                e, (psycopg2.OperationalError, psycopg2.InterfaceError))) from None

    def _rollback(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rollback()
        except psycopg2.Error:
            self.close()

    def format_batch(self, kind: str, rows: list[tuple]) -> bytes:
        return _FORMATTERS[kind](rows)

    def write(self, table: str, kind: str, formatted: bytes, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        sql = f"COPY {quote_ident('postgresql', table)} ({_COLS[kind]}) FROM STDIN"
        self.connect_for_write()
        created: set[str] = set()
        while True:
            try:
                with self.conn.cursor() as cur:
                    if batch_id is not None:
                        cur.execute(batches_marker_sql("postgresql"),
                                    (batch_id, table, rows or 0))
                        if cur.rowcount == 0:  # committed by an earlier attempt
                            self.conn.rollback()
                            return False
                    cur.copy_expert(sql, io.BytesIO(formatted), size=_COPY_CHUNK)
                self.conn.commit()
                return True
            except psycopg2.errors.UndefinedTable as e:
                self._rollback()
                which = "marker" if BATCHES_TABLE in str(e) else "data"
                if which in created:
                    raise self.error(f"cannot write to {table}", e) from None
                created.add(which)
                if which == "marker":
                    self.create_batches_table()
                else:
                    self.create_for(table, kind)
            except psycopg2.Error as e:
                transient = isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError))
                self._rollback()
                if transient:
                    self.close()
                raise self.error(f"cannot write to {table}", e, transient=transient) from None
