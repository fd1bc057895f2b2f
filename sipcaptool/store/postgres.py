"""PostgreSQL adapter: batches are written with ``COPY ... FROM STDIN`` (text format).

The client encoding is UTF8 on every connection (batches are UTF-8). In a database
whose encoding is not UTF8, the server converts; what it cannot represent is replaced
by ``?`` before sending and counted (``db:unrepresentable``, one per value), and in an
SQL_ASCII database (no conversion: a character is a byte) a value longer than its
column in bytes is cut at a character boundary and counted (``truncated:<column>``).
"""

from __future__ import annotations

import codecs
import io
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import psycopg2
import psycopg2.errors

from ..errors import StoreError
from ..record import AUX_COLUMNS, BIGINT, BLOB, DATETIME, INT, SIP_COLUMNS
from . import COLUMN_NAMES, Adapter, Row, one_line, payload_bytes, text_rows
from ._text import TabFormatter, _esc_pg, _unescape_field
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident
from .url import DbUrl, no_database

_R = TypeVar("_R")
# a psycopg2 connection and one of its cursors (psycopg2 has no types)
_Conn: TypeAlias = Any
_Cursor: TypeAlias = Any

_FORMATTERS = {"sip": TabFormatter(SIP_COLUMNS, "postgresql"),
               "aux": TabFormatter(AUX_COLUMNS, "postgresql")}
_COLS = {k: ", ".join(quote_ident("postgresql", c) for c in v) for k, v in COLUMN_NAMES.items()}
_COPY_CHUNK = 1 << 20
_TEXT_COLS = {"sip": [(i, n, w) for i, (n, k, w) in enumerate(SIP_COLUMNS)
                      if k not in (BLOB, INT, BIGINT, DATETIME)],
              "aux": [(i, n, w) for i, (n, k, w) in enumerate(AUX_COLUMNS)
                      if k not in (BLOB, INT, BIGINT, DATETIME)]}

# SQLSTATE classes: what an error means (see StoreError)
_CONNECTION_CLASSES = {"08", "40", "53", "57", "58", "XX"}   # + 55P03 lock not available
_OPERATOR_CLASSES = {"42", "28", "3D", "3F", "0A", "0L", "0P"}  # + 25006 read-only
_HINTS = {"42501": "grant the user INSERT (and CREATE) on the table",
          "42P01": "create the table (sipcaptool db init) or grant CREATE",
          "42703": "the table lacks a column: recreate it with sipcaptool db init",
          "25006": "the server is read-only (a standby?)",
          "3D000": "create the database", "3F000": "create the schema"}
# PostgreSQL encoding names -> Python codecs (for those the names differ)
_CODECS = {"LATIN1": "latin-1", "LATIN2": "iso8859-2", "LATIN3": "iso8859-3",
           "LATIN4": "iso8859-4", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
           "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15",
           "LATIN10": "iso8859-16", "WIN866": "cp866", "WIN874": "cp874",
           "WIN1250": "cp1250", "WIN1251": "cp1251", "WIN1252": "cp1252",
           "WIN1253": "cp1253", "WIN1254": "cp1254", "WIN1255": "cp1255",
           "WIN1256": "cp1256", "WIN1257": "cp1257", "WIN1258": "cp1258",
           "KOI8R": "koi8-r", "KOI8U": "koi8-u", "EUC_CN": "gb2312", "EUC_KR": "euc-kr",
           "EUC_JP": "euc-jp", "EUC_JIS_2004": "euc-jis-2004", "GB18030": "gb18030",
           "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7",
           "ISO_8859_8": "iso8859-8", "BIG5": "big5", "SJIS": "shift-jis", "UHC": "cp949",
           "JOHAB": "johab", "GBK": "gbk"}


def classify(e: BaseException) -> str:
    """``connection``, ``operator`` or ``refused`` for a psycopg2 error (see StoreError)."""
    code = getattr(e, "pgcode", None) or ""
    if not code:
        if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError, OSError)):
            return "connection"
        return "refused"
    cls = code[:2]
    if cls in _CONNECTION_CLASSES or code == "55P03":
        return "connection"
    if cls in _OPERATOR_CLASSES or code == "25006":
        return "operator"
    # 22 data, 23 integrity, P0 RAISE in a trigger, 44 WITH CHECK OPTION, 27 and 09
    # triggers, anything else: the rows'
    return "refused"


def _codec(server_encoding: str) -> str | None:
    """The Python codec of a database encoding; None when nothing needs converting
    (UTF8) or Python does not know it (the server converts, refusing what it cannot)."""
    enc = (server_encoding or "UTF8").upper()
    if enc in ("UTF8", "SQL_ASCII"):
        return None
    name = _CODECS.get(enc, enc.lower())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def fit_encoding(kind: str, payload: bytes, server_encoding: str,
                 counts: Counter[str]) -> bytes:
    """A COPY payload (UTF-8) that a database of ``server_encoding`` takes as meant:
    characters it cannot represent become ``?`` (``db:unrepresentable`` per value); in
    SQL_ASCII, values longer than their column in bytes are cut at a character
    boundary (``truncated:<column>``). The payload itself when nothing changes."""
    enc = (server_encoding or "UTF8").upper()
    if enc == "UTF8" or payload.isascii():
        return payload
    codec = _codec(enc)
    if enc != "SQL_ASCII":
        if codec is None:
            return payload
        try:
            payload.decode("utf-8").encode(codec)
            return payload
        except UnicodeError:
            pass
    cols = _TEXT_COLS[kind]
    out: list[bytes] = []
    for line in payload.split(b"\n"):
        if not line or line.isascii():
            out.append(line)
            continue
        fields = line.split(b"\t")
        for i, name, width in cols:
            f = fields[i]
            if f.isascii():
                continue
            raw = _unescape_field(f)
            if raw is None:  # NULL (\\N is ASCII: not reached)
                continue
            text = raw.decode("utf-8", "replace")
            if codec is not None:
                try:
                    text.encode(codec)
                    continue
                except UnicodeError:
                    text = text.encode(codec, "replace").decode(codec)
                    counts["db:unrepresentable"] += 1
            else:  # SQL_ASCII: a character is a byte
                if width and len(raw) > width:
                    cut = raw[:width]
                    text = cut.decode("utf-8", "ignore")  # no half character at the end
                    counts["truncated:" + name] += 1
                else:
                    continue
            fields[i] = _esc_pg(text).encode("utf-8")
        out.append(b"\t".join(fields))
    return b"\n".join(out)


class PostgresAdapter(Adapter):
    """PostgreSQL via psycopg2; COPY text with bytea as ``\\x`` hex."""

    dialect = "postgresql"
    # the COPY text of a batch is its rows' lines one after the other: formatted
    # part by part as the rows come (Adapter.part_rows), the parts put end to end
    # (Adapter.join_parts)
    part_rows = 250

    def __init__(self, url: DbUrl, *, partition_days: int | None = None) -> None:
        super().__init__(url, partition_days=partition_days)
        self.conn: _Conn | None = None
        self.server_encoding = "UTF8"

    def _params(self, database: str) -> dict[str, object]:
        u = self.url
        p: dict[str, object] = dict(port=u.port, dbname=database,
                                    user=u.user or "postgres", connect_timeout=10,
                                    application_name="sipcaptool")
        if u.host:  # a host, or a socket directory; none: libpq's default socket
            p["host"] = u.host
        if u.password:
            p["password"] = u.password
        p.update(dict(u.options))
        return p

    def connect(self) -> None:
        if self.conn is not None:
            return
        try:
            conn = self.conn = psycopg2.connect(**self._params(self.url.database))
        except psycopg2.Error as e:
            if f'database "{self.url.database}" does not exist' in str(e):
                raise StoreError(no_database(self.url), kind="operator") from None
            raise self.error("cannot connect", e, transient=True) from None
        try:
            conn.set_session(autocommit=False)
            # batches are UTF-8 whatever the database's encoding (libpq's default is
            # the database's, which turned UTF-8 into mojibake in a LATIN1 database)
            conn.set_client_encoding("UTF8")
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                cur.execute("SHOW server_encoding")
                self.server_encoding = str(cur.fetchone()[0]).upper()
            conn.commit()
        except psycopg2.Error as e:
            self.close()
            raise self.error("cannot set up the session", e, transient=True) from None

    placeholder = "%s"
    current_schema_sql = "current_schema()"

    def connect_readonly(self) -> None:
        self.connect()
        try:
            self._db().set_session(readonly=True)
        except psycopg2.Error as e:
            self.close()
            raise self.error("cannot set up the session", e, transient=True) from None

    def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            conn = self._db()
            with conn.cursor() as cur:
                cur.execute(sql, tuple(params))
                rows = list(cur.fetchall())
            conn.rollback()  # end the read transaction
            return rows
        except psycopg2.Error as e:
            self._rollback()
            err = self.error("cannot read", e)
            if err.kind == "connection":
                self.close()
            raise err from None

    def _db(self) -> _Conn:
        """The connection :meth:`connect` opened (a transient StoreError when a failed
        rollback closed it since)."""
        if self.conn is None:
            raise self.error("not connected", ConnectionError("the connection was closed"),
                             transient=True)
        return self.conn

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
            conn = self._db()
            with conn.cursor() as cur:
                for st in statements:
                    cur.execute(st)
            conn.commit()
        except psycopg2.Error as e:
            self._rollback()
            if isinstance(e, psycopg2.errors.UniqueViolation):
                # two processes creating the same table at once: it exists now
                return
            err = self.error("cannot create table", e)
            if err.kind == "connection":
                self.close()
            raise err from None

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def operator_hint(self, exc: BaseException) -> str:
        code = getattr(exc, "pgcode", None) or ""
        return _HINTS.get(code, super().operator_hint(exc))

    def _rollback(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rollback()
        except psycopg2.Error:
            self.close()

    def format_batch(self, kind: str, rows: list[Row]) -> bytes:
        return _FORMATTERS[kind](rows)

    def _fit(self, kind: str, formatted: bytes, counts: Counter[str]) -> bytes:
        return fit_encoding(kind, formatted, self.server_encoding, counts)

    def _copy(self, cur: _Cursor, table: str, kind: str, data: bytes) -> None:
        sql = f"COPY {quote_ident('postgresql', table)} ({_COLS[kind]}) FROM STDIN"
        cur.copy_expert(sql, io.BytesIO(data), size=_COPY_CHUNK)

    def _write_once(self, cur: _Cursor, table: str, kind: str, formatted: bytes,
                    counts: Counter[str]) -> bool:
        self._copy(cur, table, kind, self._fit(kind, formatted, counts))
        return True

    def _each_once(self, cur: _Cursor, table: str, kind: str, formatted: bytes,
                   counts: Counter[str]) -> tuple[bool, list[tuple[int, str]]]:
        refused: list[tuple[int, str]] = []
        for i, line in enumerate(text_rows(formatted)):
            cur.execute("SAVEPOINT sipcaptool_row")
            try:
                self._copy(cur, table, kind, self._fit(kind, line, counts))
            except psycopg2.Error as e:
                if classify(e) != "refused":
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT sipcaptool_row")
                refused.append((i, one_line(e)))
            else:
                cur.execute("RELEASE SAVEPOINT sipcaptool_row")
        return True, refused

    def write(self, table: str, kind: str, formatted: object, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        return self._run(self._write_once, False, table, kind, payload_bytes(formatted),
                         batch_id, rows)

    def write_each(self, table: str, kind: str, formatted: object, batch_id: str,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        if not formatted:
            return True, []
        already: tuple[bool, list[tuple[int, str]]] = (False, [])
        return self._run(self._each_once, already, table, kind, payload_bytes(formatted),
                         batch_id, rows)

    def _run(self, once: Callable[[_Cursor, str, str, bytes, Counter[str]], _R], already: _R,
             table: str, kind: str, formatted: bytes, batch_id: str | None, rows: int) -> _R:
        """``once(cursor, table, kind, payload, counts)`` in one transaction (after the
        batch id, when given); ``already`` when the batch id was committed before."""
        self.connect_for_write()
        created: set[str] = set()
        while True:
            counts: Counter[str] = Counter()
            try:
                conn = self._db()
                with conn.cursor() as cur:
                    if batch_id is not None:
                        cur.execute(batches_marker_sql("postgresql"),
                                    (batch_id, table, rows or 0))
                        if cur.rowcount == 0:  # committed by an earlier attempt
                            conn.rollback()
                            return already
                    result = once(cur, table, kind, formatted, counts)
                conn.commit()
                if counts:
                    self.counts = (self.counts or Counter()) + counts
                return result
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
                err = self.error(f"cannot write to {table}", e)
                self._rollback()
                if err.kind == "connection":
                    self.close()
                raise err from None
            except OSError as e:
                self.close()
                raise self.error(f"cannot write to {table}", e, transient=True) from None
