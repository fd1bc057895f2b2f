"""MySQL / MariaDB adapter: batches are written with ``LOAD DATA LOCAL INFILE`` streamed
from memory, or with multi-row INSERTs when the server refuses LOCAL INFILE.

pymysql answers the server's LOCAL INFILE request by opening the named file. Our
connection class answers it from an in-memory buffer instead: the statement names a
token (``sipcaptool-batch-N``) and the buffer registered under that token is sent in
packets; a request for any other name is refused (so a hostile server cannot read local
files). If this pymysql version does not have the internals we hook, or the server has
``local_infile`` off, the same buffer is turned into multi-row INSERT statements.
"""

from __future__ import annotations

import itertools
import logging
import time

import pymysql
import pymysql.connections
import pymysql.err

from ..record import AUX_COLUMNS, BLOB, SIP_COLUMNS
from . import COLUMN_NAMES, Adapter
from ._text import TabFormatter, parse_tab_text
from .schema import BATCHES_TABLE, batches_marker_sql, quote_ident

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

# errors of OperationalError class that are about the data, not the connection
_REFUSED_DATA = {1048, 1054, 1136, 1146, 1264, 1265, 1292, 1366, 1406, 1452}
_DELAYED_ENGINES = {"MYISAM", "MEMORY", "ARCHIVE", "BLACKHOLE"}

_tokens = itertools.count(1)
_WARNING_LOG_EVERY = 60.0  # seconds between logged warning details

log = logging.getLogger("sipcaptool.store")


def _code(e: BaseException) -> int:
    return e.args[0] if e.args and isinstance(e.args[0], int) else 0

try:  # the pymysql internals the in-memory LOCAL INFILE handler relies on
    from pymysql.protocol import LoadLocalPacketWrapper as _LoadLocalPacketWrapper
    _MySQLResult = pymysql.connections.MySQLResult
    _HAVE_HOOK = all(hasattr(_MySQLResult, a) for a in ("_read_load_local_packet",
                                                        "_read_ok_packet", "read"))
except (ImportError, AttributeError):  # pragma: no cover
    _HAVE_HOOK = False


if _HAVE_HOOK:
    class _MemoryInfileResult(_MySQLResult):
        def _read_load_local_packet(self, first_packet):
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

        def __init__(self, *args, **kwargs):
            self.infile_buffers: dict[bytes, bytes] = {}
            super().__init__(*args, **kwargs)

        def _read_query_result(self, unbuffered=False):
            if unbuffered:
                return super()._read_query_result(unbuffered)
            self._result = None
            result = _MemoryInfileResult(self)
            result.read()
            self._result = result
            if result.server_status is not None:
                self.server_status = result.server_status
            return result.affected_rows
else:  # pragma: no cover
    _Connection = pymysql.connections.Connection


class MysqlAdapter(Adapter):
    """MySQL / MariaDB via pymysql (utf8mb4; dates are DATETIME, no time-zone conversion)."""

    dialect = "mysql"

    def __init__(self, url, *, partition_days=None) -> None:
        super().__init__(url, partition_days=partition_days)
        self.conn = None
        self.use_infile = _HAVE_HOOK
        self._sql: dict[tuple[str, str], str] = {}
        self._delayed_tables: dict[str, bool] = {}
        self._last_warning_log = -_WARNING_LOG_EVERY

    def _params(self, database: str | None) -> dict:
        u = self.url
        p = dict(host=u.host, port=u.port, user=u.user or "root", password=u.password,
                 charset="utf8mb4", autocommit=False, connect_timeout=10,
                 local_infile=self.use_infile)
        if database:
            p["database"] = database
        for k, v in u.options:
            if k in ("unix_socket", "ssl_ca", "ssl_cert", "ssl_key", "read_timeout",
                     "write_timeout", "connect_timeout"):
                p[k] = int(v) if k.endswith("timeout") else v
        return p

    def _open(self, database: str | None):
        try:
            return _Connection(**self._params(database))
        except pymysql.err.MySQLError as e:
            raise self.error("cannot connect", e, transient=True) from None
        except OSError as e:  # pragma: no cover - pymysql wraps most of these
            raise self.error("cannot connect", e, transient=True) from None

    def connect(self) -> None:
        if self.conn is not None:
            return
        conn = self._open(self.url.database)
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
            conn.commit()
        except (pymysql.err.MySQLError, OSError) as e:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            raise self.error("cannot set up the session", e, transient=True) from None
        self.conn = conn

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
            with self.conn.cursor() as cur:
                for st in statements:
                    cur.execute(st)
            self.conn.commit()
        except pymysql.err.MySQLError as e:
            self._rollback()
            raise self.error("cannot create table", e,
                             transient=_code(e) in _CONNECTION_LOST) from None
        except (OSError, RuntimeError) as e:
            self.close()
            raise self.error("cannot create table", e, transient=True) from None

    def _rollback(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rollback()
        except Exception:  # noqa: BLE001
            self.close()

    def format_batch(self, kind: str, rows: list[tuple]) -> bytes:
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

    def _insert_statements(self, table: str, kind: str, formatted: bytes):
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
        with self.conn.cursor() as cur:
            cur.execute("SELECT ENGINE FROM information_schema.TABLES WHERE "
                        "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
            row = cur.fetchone()
        self.conn.commit()
        return (row[0] or "") if row else ""

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
            import logging
            logging.getLogger("sipcaptool.store").warning(
                "db_insert_mode 1: table %s has engine %s: %s", table, engine,
                "INSERT DELAYED" if known else "INSERT DELAYED not supported, plain "
                "batched writes")
        return known

    def _warnings_of_last(self, cur, table: str) -> int:
        """The warning count of the statement just executed; the first few are logged
        (at most once a minute) so that an operator sees what the server changed."""
        res = self.conn._result
        n = getattr(res, "warning_count", 0) if res is not None else 0
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

    def _write_once(self, table: str, kind: str, formatted: bytes, batch_id: str | None,
                    rows: int) -> bool:
        conn = self.conn
        warnings = 0
        with conn.cursor() as cur:
            if batch_id is not None:
                if cur.execute(batches_marker_sql("mysql"), (batch_id, table, rows)) == 0:
                    conn.rollback()  # committed by an earlier attempt
                    return False
            if self._delayed(table):
                # DELAYED rows are queued by the server outside the transaction
                for st in self._insert_statements(table, kind, formatted):
                    cur.execute("INSERT DELAYED " + st[len("INSERT "):])
                    warnings += self._warnings_of_last(cur, table)
            elif self.use_infile:
                # LOCAL INFILE turns data errors into warnings (IGNORE): count them
                token = f"sipcaptool-batch-{next(_tokens)}"
                conn.infile_buffers[token.encode()] = formatted
                try:
                    cur.execute(self._load_sql(table, kind).replace("%s", token, 1))
                finally:
                    conn.infile_buffers.pop(token.encode(), None)
                warnings += self._warnings_of_last(cur, table)
            else:
                for st in self._insert_statements(table, kind, formatted):
                    cur.execute(st)
                    warnings += self._warnings_of_last(cur, table)
        conn.commit()
        self.warnings += warnings
        return True

    def write(self, table: str, kind: str, formatted: bytes, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if not formatted:
            return True
        self.connect_for_write()
        created: set[str] = set()
        while True:
            try:
                return self._write_once(table, kind, formatted, batch_id, rows)
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
                transient = code in _CONNECTION_LOST or isinstance(
                    e, (pymysql.err.OperationalError, pymysql.err.InterfaceError)) and \
                    code not in _REFUSED_DATA
                if transient:
                    self.close()
                raise self.error(f"cannot write to {table}", e, transient=transient) from None
            except (OSError, RuntimeError) as e:
                self.close()
                raise self.error(f"cannot write to {table}", e, transient=True) from None
