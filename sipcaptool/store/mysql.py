"""MySQL / MariaDB adapter: batches are written with ``LOAD DATA LOCAL INFILE`` streamed
from memory, or with multi-row INSERTs when the server refuses LOCAL INFILE.

pymysql answers the server's LOCAL INFILE request by opening the named file. Our
connection class answers it from an in-memory buffer instead: the statement names a
token (``sipcaptool-batch-N``) and the buffer registered under that token is sent in
packets; a request for any other name is refused (so a hostile server cannot read local
files). If this pymysql version does not have the internals we hook, or the server has
``local_infile`` off, the same buffer is turned into multi-row INSERT statements.

About 550 lines, one module: the LOAD DATA hook, the INSERT fallback, the rows LOAD DATA
skipped and the error codes that say what a failure means (connection, operator,
refused rows) are one adapter's answers to one question -- what happened to this batch.
"""

# pymysql ships no types: the connection and result classes hooked below subclass
# classes mypy sees as Any
# mypy: allow-subclassing-any

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import pymysql
import pymysql.connections
import pymysql.err

from ..errors import StoreError
from ..record import AUX_COLUMNS, BLOB, SIP_COLUMNS
from . import COLUMN_NAMES, Adapter, Row, one_line, payload_bytes, text_rows
from ._text import TabFormatter, parse_tab_text
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident
from .url import DbUrl, no_database

if TYPE_CHECKING:
    from .retention import Removal

_R = TypeVar("_R")
# a pymysql connection and one of its cursors (pymysql has no types)
_Conn: TypeAlias = Any
_Cursor: TypeAlias = Any

_FORMATTERS = {"sip": TabFormatter(SIP_COLUMNS, "mysql"),
               "aux": TabFormatter(AUX_COLUMNS, "mysql")}
_BLOB_INDEX = {"sip": [i for i, c in enumerate(SIP_COLUMNS) if c[1] == BLOB],
               "aux": [i for i, c in enumerate(AUX_COLUMNS) if c[1] == BLOB]}
_PACKET = 1 << 20          # LOCAL INFILE data packet size (< 16 MB packet limit)
_INSERT_BYTES = 4 << 20    # split fallback INSERTs at about this size

# server errors: table missing; LOCAL INFILE refused (MySQL 1148, 3948; MariaDB 4166)
ER_NO_SUCH_TABLE = 1146
_INFILE_REFUSED = {1148, 3948, 4166, 2068}
_CONNECTION_LOST = {2006, 2013, 2055, 2003, 2002, 1927}

# What an error means (pymysql raises most server errors as OperationalError, whatever
# they mean, so the code decides). Client errors (2000-2999) are the connection's.
# The connection failed or the server gave up the statement: try again later
# (1040 too many connections, 1053 shutdown, 1205 lock wait timeout, 1213 deadlock,
# 1317/3024/1969 interrupted or timed out, 1152-1161 network, 1021/1037/1038/1041 out of
# disk or memory, 1203/1226 user limits, 1927 killed, 4031 idle disconnect)
_CONNECTION = {1021, 1037, 1038, 1040, 1041, 1043, 1053, 1152, 1153, 1154, 1155, 1156,
               1157, 1158, 1159, 1160, 1161, 1180, 1181, 1184, 1203, 1205, 1213, 1226,
               1317, 1614, 1927, 1969, 3024, 4031}
# a person must fix something: privileges (1044/1045/1142/1143/1227), a missing or
# altered table or database (1146, 1054 unknown column, 1136 column count, 1049, 1109,
# 1356 broken view, 1471 not insertable), a read-only server (1290, 1036, 1792), a full
# table (1114)
_OPERATOR = {1036, 1044, 1045, 1049, 1054, 1109, 1114, 1136, 1142, 1143, 1146, 1227,
             1290, 1356, 1471, 1792}
# the rows themselves: trigger SIGNAL (1644), CHECK (4025 MariaDB, 3819 MySQL), no
# partition for the value (1526, 1748), NOT NULL / no default, duplicates, foreign
# keys, values out of range or too long in strict mode
_REFUSED = {1048, 1062, 1216, 1217, 1264, 1265, 1292, 1364, 1366, 1406, 1411, 1451, 1452,
            1526, 1644, 1690, 1748, 3140, 3819, 4025}
_HINTS = {1044: "grant the user access to the database", 1045: "check the user and password",
          1142: "grant the user INSERT (and CREATE) on the table",
          1143: "grant the user INSERT on the table's columns",
          1227: "grant the user the privilege the statement needs",
          1146: "create the table (sipcaptool db init) or grant CREATE",
          1054: "the table lacks a column: recreate it with sipcaptool db init",
          1136: "the table has other columns: recreate it with sipcaptool db init",
          1049: "create the database", 1290: "the server is read-only (--read-only)",
          1036: "the table is read-only", 1792: "the transaction is read-only",
          1114: "the table or its disk is full"}
_DELAYED_ENGINES = {"MYISAM", "MEMORY", "ARCHIVE", "BLACKHOLE"}

_tokens = itertools.count(1)
_WARNING_LOG_EVERY = 60.0  # seconds between logged warning details

log = logging.getLogger("sipcaptool.store")


def _code(e: BaseException) -> int:
    first = e.args[0] if e.args else None
    return first if isinstance(first, int) else 0


def classify(e: BaseException) -> str:
    """``connection``, ``operator`` or ``refused`` for a pymysql error (see StoreError)."""
    if isinstance(e, (OSError, RuntimeError, pymysql.err.InterfaceError)):
        return "connection"
    code = _code(e)
    if 2000 <= code < 3000 or code in _CONNECTION:
        return "connection"
    if code in _OPERATOR:
        return "operator"
    if code in _REFUSED or isinstance(e, (pymysql.err.IntegrityError, pymysql.err.DataError)):
        return "refused"
    if isinstance(e, pymysql.err.OperationalError) and not code:
        return "connection"
    # an error we do not know: taken for the rows' (their batch is searched for refused
    # rows, which a passing failure does not survive), never for a connection failure
    # that would keep the batch and everything behind it in the spool for ever
    return "refused"


class _SkippedRowsError(Exception):
    """LOAD DATA took fewer rows than it was sent (LOCAL means IGNORE: a CHECK or a
    trigger refusal skips the row with a warning)."""

    def __init__(self, sent: int, taken: int, details: str) -> None:
        self.sent, self.taken = sent, taken
        super().__init__(f"the server skipped {sent - taken} of {sent} rows of LOAD DATA"
                         + (f" ({details})" if details else ""))

try:  # the pymysql internals the in-memory LOCAL INFILE handler relies on
    from pymysql.protocol import LoadLocalPacketWrapper as _LoadLocalPacketWrapper
    _MySQLResult = pymysql.connections.MySQLResult
    _HAVE_HOOK = all(hasattr(_MySQLResult, a) for a in ("_read_load_local_packet",
                                                        "_read_ok_packet", "read"))
except (ImportError, AttributeError):  # pragma: no cover
    _HAVE_HOOK = False


if _HAVE_HOOK:
    class _MemoryInfileResult(pymysql.connections.MySQLResult):
        def _read_load_local_packet(self, first_packet: Any) -> None:
            conn = self.connection
            name = _LoadLocalPacketWrapper(first_packet).filename
            data = conn.infile_buffers.get(bytes(name))
            try:
                if data is not None:
                    view = memoryview(data)
                    for off in range(0, len(view), _PACKET):
                        conn.write_packet(bytes(view[off:off + _PACKET]))
            finally:
                conn.write_packet(b"")  # end of data
                ok_packet = conn._read_packet()
            if data is None:
                raise pymysql.err.OperationalError(
                    2068, f"refused LOCAL INFILE request for {bytes(name)!r}")
            if not ok_packet.is_ok_packet():
                raise pymysql.err.OperationalError(2014, "Commands Out of Sync")
            self._read_ok_packet(ok_packet)

    class _Connection(pymysql.connections.Connection):
        """A pymysql connection whose LOCAL INFILE data comes from ``infile_buffers``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.infile_buffers: dict[bytes, bytes] = {}
            super().__init__(*args, **kwargs)

        def _read_query_result(self, unbuffered: bool = False) -> Any:
            if unbuffered:
                return super()._read_query_result(unbuffered)
            self._result = None
            result = _MemoryInfileResult(self)
            result.read()
            self._result = result
            if result.server_status is not None:
                self.server_status = result.server_status
            return result.affected_rows

    _CONNECTION_CLASS: type[_Conn] = _Connection
else:  # pragma: no cover
    _CONNECTION_CLASS = pymysql.connections.Connection


class MysqlAdapter(Adapter):
    """MySQL / MariaDB via pymysql (utf8mb4; dates are DATETIME, no time-zone conversion)."""

    dialect = "mysql"
    # the LOAD DATA text of a batch is its rows' lines one after the other: formatted
    # part by part as the rows come (Adapter.part_rows), the parts put end to end
    # (Adapter.join_parts)
    part_rows = 250

    def __init__(self, url: DbUrl, *, partition_days: int | None = None) -> None:
        super().__init__(url, partition_days=partition_days)
        self.conn: _Conn | None = None
        self.use_infile = _HAVE_HOOK
        self._sql: dict[tuple[str, str], str] = {}
        self._delayed_tables: dict[str, bool] = {}
        self._last_warning_log = -_WARNING_LOG_EVERY

    def _params(self, database: str | None) -> dict[str, object]:
        u = self.url
        p: dict[str, object] = dict(host=u.host or "localhost", port=u.port,
                                    user=u.user or "root",
                                    password=u.password, charset="utf8mb4", autocommit=False,
                                    connect_timeout=10, local_infile=self.use_infile)
        if database:
            p["database"] = database
        # the options url.py accepts (QUERY_OPTIONS["mysql"]); charset is utf8mb4 anyway
        for k, v in u.options:
            if k in ("unix_socket", "ssl_ca", "ssl_cert", "ssl_key", "read_timeout",
                     "write_timeout", "connect_timeout"):
                p[k] = int(v) if k.endswith("timeout") else v
            elif k == "sslmode":
                if v == "disable":
                    p["ssl_disabled"] = True
                elif v == "require":  # encrypted, the certificate is not checked
                    p["ssl"] = {"check_hostname": False}
                else:
                    p["ssl_verify_cert"] = True
                    p["ssl_verify_identity"] = v == "verify-full"
        return p

    def _open(self, database: str | None) -> _Conn:
        try:
            return _CONNECTION_CLASS(**self._params(database))
        except pymysql.err.MySQLError as e:
            raise self.error("cannot connect", e, transient=True) from None
        except OSError as e:  # pragma: no cover - pymysql wraps most of these
            raise self.error("cannot connect", e, transient=True) from None

    def connect(self) -> None:
        if self.conn is not None:
            return
        try:
            conn = self._open(self.url.database)
        except StoreError as e:
            if "(1049," in str(e):  # ER_BAD_DB_ERROR: Unknown database
                raise StoreError(no_database(self.url), kind="operator") from None
            raise
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
            conn.commit()
        except (pymysql.err.MySQLError, OSError) as e:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing after a failed set-up
                pass
            raise self.error("cannot set up the session", e, transient=True) from None
        self.conn = conn

    placeholder = "%s"
    current_schema_sql = "DATABASE()"

    def connect_readonly(self) -> None:
        self.connect()
        try:
            with self._db().cursor() as cur:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
        except (pymysql.err.MySQLError, OSError) as e:
            self.close()
            raise self.error("cannot set up the session", e, transient=True) from None

    def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            conn = self._db()
            with conn.cursor() as cur:
                cur.execute(sql, tuple(params))
                rows = list(cur.fetchall())
            conn.rollback()  # end the read snapshot
            return rows
        except (pymysql.err.MySQLError, OSError, RuntimeError) as e:
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
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def create_database(self) -> None:
        conn = self._open(None)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE IF NOT EXISTS "
                            + quote_ident("mysql", self.url.database)
                            + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            conn.commit()
        except pymysql.err.MySQLError as e:
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
        except pymysql.err.MySQLError as e:
            self._rollback()
            err = self.error("cannot create table", e)
            if err.kind == "connection":
                self.close()
            raise err from None
        except (OSError, RuntimeError) as e:
            self.close()
            raise self.error("cannot create table", e, transient=True) from None

    def drop_days_before(self, table: str, day: _dt.date, *, dry_run: bool = False,
                         batch_rows: int = 5000) -> list[Removal]:
        """The day partitions before ``day`` dropped (``db init --partition-days``;
        see :mod:`sipcaptool.store.retention`), then the rows still dated before it
        deleted in batches at READ COMMITTED, which takes no gap locks in the way of the
        collector's inserts."""
        from .retention import delete_rows_before, mysql_drop_partitions_before
        out = mysql_drop_partitions_before(self, table, day, dry_run=dry_run)
        if not dry_run:
            self.execute_ddl(["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"])
        rows = delete_rows_before(self, table, day, dry_run=dry_run, batch_rows=batch_rows)
        if dry_run and out:  # the count includes the rows of the partitions listed
            left = sum(r.rows or 0 for r in rows) - sum(r.rows or 0 for r in out)
            rows = [replace(r, rows=left) for r in rows] if left > 0 else []
        return out + rows

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def operator_hint(self, exc: BaseException) -> str:
        return _HINTS.get(_code(exc), super().operator_hint(exc))

    def _rollback(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rollback()
        except Exception:  # noqa: BLE001 - a rollback on a broken connection
            self.close()

    def format_batch(self, kind: str, rows: list[Row]) -> bytes:
        return _FORMATTERS[kind](rows)

    def _load_sql(self, table: str, kind: str) -> str:
        key = (table, kind)
        sql = self._sql.get(key)
        if sql is None:
            names = COLUMN_NAMES[kind]
            blob = set(_BLOB_INDEX[kind])
            targets = ", ".join(f"@b{i}" if i in blob else quote_ident("mysql", c)
                                for i, c in enumerate(names))
            sets = ", ".join(f"{quote_ident('mysql', names[i])} = UNHEX(@b{i})" for i in blob)
            sql = (f"LOAD DATA LOCAL INFILE '%s' INTO TABLE {quote_ident('mysql', table)} "
                   "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
                   f"LINES TERMINATED BY '\\n' ({targets}) SET {sets}")
            self._sql[key] = sql
        return sql

    def _insert_statements(self, table: str, kind: str, formatted: bytes) -> Iterator[str]:
        names = COLUMN_NAMES[kind]
        blob = set(_BLOB_INDEX[kind])
        head = (f"INSERT INTO {quote_ident('mysql', table)} "
                f"({', '.join(quote_ident('mysql', c) for c in names)}) VALUES ")
        lit = pymysql.converters.escape_string
        values: list[str] = []
        size = 0
        for fields in parse_tab_text(formatted):
            parts = []
            for i, f in enumerate(fields):
                if f is None:
                    parts.append("NULL")
                elif i in blob:
                    parts.append("X'" + f.decode("ascii") + "'")
                else:
                    parts.append("'" + lit(f.decode("utf-8")) + "'")
            v = "(" + ",".join(parts) + ")"
            values.append(v)
            size += len(v)
            if size >= _INSERT_BYTES:
                yield head + ",".join(values)
                values, size = [], 0
        if values:
            yield head + ",".join(values)

    def _engine(self, table: str) -> str:
        """The storage engine of ``table`` ('' when it does not exist yet)."""
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute("SELECT ENGINE FROM information_schema.TABLES WHERE "
                        "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
            row = cur.fetchone()
        conn.commit()
        return str(row[0] or "") if row else ""

    def describe_insert_mode(self) -> str:
        if self.insert_mode == 1:
            return ("db_insert_mode 1: INSERT DELAYED for tables whose engine has it "
                    "(MyISAM, MEMORY, ARCHIVE); plain batches into InnoDB tables (the "
                    "engine of each table is logged when first written)")
        return super().describe_insert_mode()

    def transactional(self, table: str) -> bool:
        if self.insert_mode != 1:
            return True
        return self.conn is not None and not self._delayed(table)

    def _delayed(self, table: str) -> bool:
        """db_insert_mode 1: does this table take INSERT DELAYED? (asked once per table)"""
        if self.insert_mode != 1:
            return False
        known = self._delayed_tables.get(table)
        if known is None:
            engine = self._engine(table)
            if not engine:
                return False  # created by this write (InnoDB); asked again next time
            known = engine.upper() in _DELAYED_ENGINES
            self._delayed_tables[table] = known
            log.warning(
                "db_insert_mode 1: table %s has engine %s: %s", table, engine,
                "INSERT DELAYED" if known else "INSERT DELAYED not supported, plain "
                "batched writes")
        return known

    def _warnings_of_last(self, cur: _Cursor, table: str) -> int:
        """The warning count of the statement just executed; the first few are logged
        (at most once a minute) so that an operator sees what the server changed."""
        res = self._db()._result
        n = int(getattr(res, "warning_count", 0)) if res is not None else 0
        if n:
            now = time.monotonic()
            if now - self._last_warning_log >= _WARNING_LOG_EVERY:
                self._last_warning_log = now
                cur.execute("SHOW WARNINGS LIMIT 3")
                details = "; ".join(f"{r[1]}: {r[2]}" for r in cur.fetchall())
                log.warning("%s: the server changed or left out values while storing a "
                            "batch in %s (%d warnings, counted as db:warnings): %s",
                            self.url.redacted(), table, n, details)
        return n

    def _write_rows(self, cur: _Cursor, table: str, kind: str, formatted: bytes) -> int:
        """Send rows inside the open transaction; the warnings they raised.
        _SkippedRowsError when LOAD DATA took fewer rows than it was sent."""
        warnings = 0
        if self._delayed(table):
            # DELAYED rows are queued by the server outside the transaction
            for st in self._insert_statements(table, kind, formatted):
                cur.execute("INSERT DELAYED " + st[len("INSERT "):])
                warnings += self._warnings_of_last(cur, table)
        elif self.use_infile:
            # LOCAL INFILE turns data errors into warnings (IGNORE): count them, and
            # check that every row was taken (a CHECK or a trigger skips a row)
            conn = self._db()
            token = f"sipcaptool-batch-{next(_tokens)}"
            conn.infile_buffers[token.encode()] = formatted
            try:
                taken = cur.execute(self._load_sql(table, kind).replace("%s", token, 1))
            finally:
                conn.infile_buffers.pop(token.encode(), None)
            sent = formatted.count(b"\n")
            if taken < sent:
                raise _SkippedRowsError(sent, taken, self._first_warning(cur))
            warnings += self._warnings_of_last(cur, table)
        else:
            for st in self._insert_statements(table, kind, formatted):
                cur.execute(st)
                warnings += self._warnings_of_last(cur, table)
        return warnings

    @staticmethod
    def _first_warning(cur: _Cursor) -> str:
        try:
            cur.execute("SHOW WARNINGS LIMIT 1")
            return "; ".join(f"{r[1]}: {r[2]}" for r in cur.fetchall())
        except pymysql.err.MySQLError:
            return ""

    def _write_once(self, table: str, kind: str, formatted: bytes, batch_id: str | None,
                    rows: int) -> bool:
        conn = self._db()
        with conn.cursor() as cur:
            if batch_id is not None:
                if cur.execute(batches_marker_sql("mysql"), (batch_id, table, rows)) == 0:
                    conn.rollback()  # committed by an earlier attempt
                    return False
            warnings = self._write_rows(cur, table, kind, formatted)
        conn.commit()
        self.warnings += warnings
        return True

    def _each_once(self, table: str, kind: str, formatted: bytes, batch_id: str | None,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        conn = self._db()
        refused: list[tuple[int, str]] = []
        warnings = 0
        with conn.cursor() as cur:
            if batch_id is not None:
                if cur.execute(batches_marker_sql("mysql"), (batch_id, table, rows)) == 0:
                    conn.rollback()
                    return False, []
            # no savepoint needed: a statement that fails is undone by itself and the
            # transaction goes on (a deadlock, which ends the transaction, is not
            # "refused" and ends this write); a skipped row inserted nothing
            # LOAD DATA LOCAL is IGNORE: one row at a time, INSERT IGNORE does the same
            # in one round trip instead of three (a skipped row changes no row)
            ignore = self.use_infile and not self._delayed(table)
            for i, line in enumerate(text_rows(formatted)):
                try:
                    if ignore:
                        (st,) = self._insert_statements(table, kind, line)
                        if cur.execute("INSERT IGNORE " + st[len("INSERT "):]) == 0:
                            raise _SkippedRowsError(
                                1, 0, "" if refused else self._first_warning(cur))
                        warnings += self._warnings_of_last(cur, table)
                    else:
                        warnings += self._write_rows(cur, table, kind, line)
                except _SkippedRowsError as e:
                    refused.append((i, str(e)))
                except pymysql.err.MySQLError as e:
                    if classify(e) != "refused":
                        raise
                    refused.append((i, one_line(e)))
        conn.commit()
        self.warnings += warnings
        return True, refused

    def write(self, table: str, kind: str, formatted: object, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        return self._run(self._write_once, table, kind, payload_bytes(formatted), batch_id,
                         rows)

    def write_each(self, table: str, kind: str, formatted: object, batch_id: str,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        if not formatted:
            return True, []
        return self._run(self._each_once, table, kind, payload_bytes(formatted), batch_id,
                         rows)

    def _run(self, once: Callable[[str, str, bytes, str | None, int], _R], table: str,
             kind: str, formatted: bytes, batch_id: str | None, rows: int) -> _R:
        self.connect_for_write()
        created: set[str] = set()
        while True:
            try:
                return once(table, kind, formatted, batch_id, rows)
            except _SkippedRowsError as e:
                self._rollback()
                raise StoreError(f"{self.url.redacted()}: cannot write to {table}: {e}",
                                 kind="refused") from None
            except pymysql.err.MySQLError as e:
                code = _code(e)
                self._rollback()
                if code == ER_NO_SUCH_TABLE:
                    which = "marker" if BATCHES_TABLE in str(e) else "data"
                    if which not in created:
                        created.add(which)
                        if which == "marker":
                            self.create_batches_table()
                        else:
                            self.create_for(table, kind)
                        continue
                if code in _INFILE_REFUSED and self.use_infile:
                    self.use_infile = False  # the server said no: INSERTs from now on
                    continue
                err = self.error(f"cannot write to {table}", e)
                if err.kind == "connection":
                    self.close()
                raise err from None
            except (OSError, RuntimeError) as e:
                self.close()
                raise self.error(f"cannot write to {table}", e, transient=True) from None
