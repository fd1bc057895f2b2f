"""Storage: db_url parsing, table routing, per-database adapters and the batch writer.

Every adapter has the same interface (:class:`Adapter`). A batch is written in two steps
so the expensive per-row work can happen in a different process from the database I/O:

* :meth:`Adapter.format_batch` turns rows into the payload the database ingests fastest
  (PostgreSQL: COPY text; MySQL: a LOAD DATA LOCAL INFILE buffer; SQLite: the rows). It
  is pure -- no connection -- so the capturing process can run it.
* :meth:`Adapter.write` sends one formatted batch in one transaction.

Rows are tuples in :data:`sipcaptool.record.SIP_COLUMN_NAMES` (kind ``"sip"``) or
:data:`sipcaptool.record.AUX_COLUMN_NAMES` (kind ``"aux"``) order: ``date`` as
``'YYYY-MM-DD HH:MM:SS'`` (UTC), ints, str (any Unicode, no NUL, already cut to the
column width), ``msg`` as bytes (any bytes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from datetime import date as _date
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..record import AUX_COLUMN_NAMES, AUX_COLUMNS, SIP_COLUMN_NAMES, SIP_COLUMNS
from .url import DbUrl, mask_password, parse_db_url

if TYPE_CHECKING:
    from .retention import Removal

KINDS = ("sip", "aux")
COLUMNS = {"sip": SIP_COLUMNS, "aux": AUX_COLUMNS}
COLUMN_NAMES = {"sip": SIP_COLUMN_NAMES, "aux": AUX_COLUMN_NAMES}

#: one value of a row: text and dates as str, numbers as int, ``msg`` as bytes, NULL as None
Value = str | int | bytes | None
#: one row, in the column order of its kind
Row = tuple[Value, ...]


class JoinedRows(list[Row]):
    """The rows of a joined batch (:func:`~sipcaptool.store.writer_process.coalesce`),
    with ``columns``: the same rows as the adapter's columns, made while the parts came
    (:meth:`Adapter.columns`), or None. Everything that wants rows (the spool, the
    search for refused rows) takes it as the list it is."""

    __slots__ = ("columns",)

    def __init__(self, rows: list[Row], columns: list[list[Any]] | None) -> None:
        super().__init__(rows)
        self.columns = columns


def payload_bytes(payload: object) -> bytes:
    """A formatted TAB/LF batch (COPY text, LOAD DATA buffer) as bytes. Payloads are
    opaque to the writer and the spool; the adapter that formatted one takes it back."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"a {type(payload).__name__} is not a formatted TAB/LF batch")


def payload_list(payload: object) -> Sequence[Row]:
    """A formatted batch that is a list of rows (SQLite)."""
    if isinstance(payload, (list, tuple)):
        return payload
    raise TypeError(f"a {type(payload).__name__} is not a formatted list of rows")


def text_rows(data: bytes) -> list[bytes]:
    """The rows of a TAB/LF payload: LF-ended lines (an LF inside a value is escaped),
    each with its LF."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln + b"\n" for ln in lines]


def one_line(exc: BaseException) -> str:
    """A one-line description of a driver error, passwords masked."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip()
    return mask_password(first)


class Adapter(ABC):
    """One database connection that creates tables and writes formatted batches.

    Args:
        url: the parsed db_url.
        partition_days: MySQL only: partition tables created on demand (see schema.py).
    """

    dialect: str = ""
    # a database that wants few large inserts (ClickHouse: each insert is a part on disk
    # that the server merges later) has the writer process join consecutive batches of
    # one table into one insert of up to ``coalesce_rows`` rows and about
    # ``coalesce_bytes`` bytes of messages, waiting at most ``coalesce_wait`` seconds
    # for more (see writer_process.coalesce); 0 rows: every batch is its own insert
    coalesce_rows: int = 0
    coalesce_bytes: int = 64 << 20
    coalesce_wait: float = 0.0
    # rows the capturing process formats at a time while a batch fills, and joins
    # (join_parts) when it is handed over; 0: the whole batch at once. A few hundred rows
    # formatted just after they were made, while they are in the processor's cache, cost
    # less than thousands formatted later
    part_rows: int = 0
    # False: a changed row of a small bookkeeping table (sipcaptool_replays) is stored as
    # a new version of it and the newest is read (ClickHouse, where UPDATE and DELETE are
    # mutations applied later)
    updates_in_place: bool = True

    def __init__(self, url: DbUrl, *, partition_days: int | None = None) -> None:
        self.url = url
        self.partition_days = partition_days

    # -- connection -------------------------------------------------------------------
    @abstractmethod
    def connect(self) -> None:
        """Open the connection (StoreError when the database is unreachable/refuses)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; safe to call twice or when never connected."""

    def create_database(self) -> None:
        """Create the database itself if missing (MySQL/PostgreSQL); no-op for SQLite."""
        return None  # SQLite creates the file when it connects

    # -- schema -----------------------------------------------------------------------
    def schema_sql(self, sip_tables: list[str], aux: bool = True,
                   partition_days: int | None = None) -> list[str]:
        """The CREATE statements for these tables (strftime names expanded for now)."""
        from .schema import schema_sql
        return schema_sql(self.dialect, sip_tables, aux, partition_days)

    def create_tables(self, sip_tables: list[str], aux: bool = True,
                      partition_days: int | None = None) -> list[str]:
        """Create the tables if missing (idempotent); return the statements executed."""
        stmts = self.schema_sql(sip_tables, aux, partition_days)
        self.execute_ddl(stmts)
        return stmts

    @abstractmethod
    def execute_ddl(self, statements: list[str]) -> None:
        """Run DDL statements (StoreError on failure)."""

    def create_for(self, table: str, kind: str) -> None:
        """Create the table a write found missing (a new strftime day, a fresh database)."""
        from .schema import aux_tables_sql, sip_table_sql
        if kind == "sip":
            self.execute_ddl(sip_table_sql(self.dialect, table, self.partition_days))
        else:
            self.execute_ddl(aux_tables_sql(self.dialect))

    # -- data -------------------------------------------------------------------------
    @abstractmethod
    def format_batch(self, kind: str, rows: list[Row]) -> object:
        """Turn rows into the payload :meth:`write` sends (pure: no connection needed)."""

    def join_parts(self, kind: str, parts: list[object]) -> object:
        """One payload of the payloads :meth:`format_batch` made of consecutive rows, in
        order (``part_rows``): what :meth:`format_batch` of all the rows would give, or
        a payload :meth:`write` and :meth:`payload_rows` take as that. Here, for a
        TAB/LF text batch (COPY, LOAD DATA: its rows' lines one after the other), the
        parts end to end; TypeError for a payload that is not such text (an adapter
        with other payloads and ``part_rows`` has its own)."""
        return b"".join(payload_bytes(p) for p in parts)

    def local_payload(self, kind: str, rows: list[Row]) -> object:
        """The payload of rows made in the writer process (of messages handed over
        unparsed, :mod:`~sipcaptool.store.unparsed`): :meth:`format_batch`'s; an adapter
        whose :meth:`write` takes a list of rows returns it as it is."""
        return self.format_batch(kind, rows)

    def payload_rows(self, payload: object) -> list[Row] | None:
        """The rows of a formatted batch, where they can be joined with another batch's
        (:func:`~sipcaptool.store.writer_process.coalesce`): a list of rows as it is;
        None for a payload that is text for the database (COPY, LOAD DATA)."""
        return payload if isinstance(payload, list) else None

    def columns(self, kind: str, rows: list[Row]) -> list[Sequence[Any]] | None:
        """``rows`` as the columns :meth:`write` sends, for an adapter that sends columns
        (ClickHouse): :func:`~sipcaptool.store.writer_process.coalesce` makes them part
        by part while it waits for the rest of a joined batch, so that the insert at the
        end has only the sending left. None: the adapter takes rows (the default), or
        a row does not fit (:meth:`write` then says which)."""
        return None

    @abstractmethod
    def write(self, table: str, kind: str, formatted: object, batch_id: str | None = None,
              rows: int = 0) -> bool:
        """Write one formatted batch in one transaction; create the table if missing.

        With ``batch_id``, the id is inserted into ``sipcaptool_batches`` in the same
        transaction, first: when it is already there the batch was committed before (an
        earlier attempt whose outcome was unknown) and nothing is written -- the result
        is then False (True when the batch was written now).

        Raises StoreError (one line, password masked); its ``kind`` says what the
        failure means (see :class:`StoreError`): ``transient`` is true when the
        connection failed or an operator must fix something (worth retrying or
        spooling) and false when the database refused the rows themselves (some of them
        may be good: :meth:`write_each` finds which).
        """

    def write_each(self, table: str, kind: str, formatted: object, batch_id: str,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        """Write a refused batch row by row in one transaction, each row under a
        savepoint, so that the rows the database refuses are left out and every other
        row is stored: ``(written, refused)`` where ``refused`` lists ``(row index,
        the database's reason)``. ``written`` is False (and nothing is written) when
        ``batch_id`` was committed by an earlier attempt.

        Raises StoreError (transient) when the connection fails or an operator error
        stops the batch: then nothing of it is committed.
        """
        raise NotImplementedError

    def connect_for_write(self) -> None:
        """:meth:`connect` before a write: failing here is the connection's fault, never
        the data's, so the StoreError is always transient (worth retrying or spooling)."""
        try:
            self.connect()
        except StoreError as e:
            if e.kind not in ("connection", "operator"):
                e.kind = "connection"
            e.transient = True
            raise

    def error(self, what: str, exc: BaseException, transient: bool | None = None,
              kind: str | None = None, hint: str = "") -> StoreError:
        """A StoreError for a driver error: ``kind`` (default: what :meth:`classify`
        says of ``exc``) and ``transient`` (default: from the kind)."""
        if kind is None:
            kind = self.classify(exc) if transient is None else \
                ("connection" if transient else "refused")
        if kind == "operator" and not hint:
            hint = self.operator_hint(exc)
        return StoreError(f"{self.url.redacted()}: {what}: {one_line(exc)}", kind=kind,
                          transient=transient, hint=hint)

    def classify(self, exc: BaseException) -> str:
        """What a driver error means: ``"connection"``, ``"operator"``, ``"refused"``
        (see :class:`StoreError`); the adapters read their driver's classes and codes."""
        return "connection" if isinstance(exc, (OSError, RuntimeError)) else "refused"

    def operator_hint(self, exc: BaseException) -> str:
        """What a person has to fix for an operator error (a few words)."""
        return "check the table and the user's privileges"

    def split_batch(self, payload: object, rows: int) -> tuple[object, int, object, int]:
        """Cut a formatted batch in two at a row boundary: ``(first, n1, second, n2)``.

        Used to find the rows of a batch the database refuses. Payloads are either a list
        of rows (SQLite) or TAB/LF text (COPY, LOAD DATA), whose rows end with a raw LF
        (an LF inside a value is escaped).
        """
        k = rows // 2
        if isinstance(payload, list):
            return payload[:k], k, payload[k:], rows - k
        data = payload_bytes(payload)
        pos = -1
        for _ in range(k):
            pos = data.index(b"\n", pos + 1)
        return data[:pos + 1], k, data[pos + 1:], rows - k

    def transactional(self, table: str) -> bool:
        """Whether a failed write of ``table`` leaves nothing behind (False for MySQL's
        INSERT DELAYED, whose rows are queued outside the transaction)."""
        return True

    #: rows the server changed or left out while taking a committed batch (MySQL reports
    #: them as warnings: a value cut to a narrower column than ours, a bad date); read
    #: and reset by :meth:`take_warnings` after each write
    warnings: int = 0

    def take_warnings(self) -> int:
        """Warnings of the batches committed since the last call (0 for databases that
        refuse bad data instead of changing it)."""
        n, self.warnings = self.warnings, 0
        return n

    #: counters (``category:reason`` -> n) of what the adapter changed in committed
    #: batches so that the database could take them (PostgreSQL in a database whose
    #: encoding is not UTF-8: ``db:unrepresentable``, ``truncated:<column>``); read and
    #: reset by :meth:`take_counts` after each write
    counts: Counter[str] | None = None

    def take_counts(self) -> dict[str, int]:
        c, self.counts = self.counts, None
        return dict(c) if c else {}

    #: db_insert_mode (0 plain, 1 INSERT DELAYED where the table's engine has it, 2
    #: asynchronous -- the writer's business, plain statements here)
    insert_mode: int = 0

    def describe_insert_mode(self) -> str:
        """One line saying how batches are written (logged at start)."""
        if self.insert_mode == 1:
            return (f"db_insert_mode 1: {self.dialect} has no INSERT DELAYED; batches are "
                    "written with plain statements")
        return f"db_insert_mode {self.insert_mode}: batches are written with plain statements"

    # -- reading (search, flow, export) -------------------------------------------------
    #: the driver's parameter marker in :meth:`select` statements
    placeholder: str = "?"

    def connect_readonly(self) -> None:
        """Open the connection for reading only, where the database can say so (SQLite:
        a missing file is an error, never created; MySQL/PostgreSQL: read-only
        transactions). Same errors as :meth:`connect`."""
        self.connect()

    def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement (parameters marked with :attr:`placeholder`) and return
        its rows; the read transaction ends with it. StoreError on failure."""
        raise NotImplementedError

    #: the SQL naming the current schema, for the ``information_schema`` look-ups below
    #: (a database without ``information_schema`` overrides them instead)
    current_schema_sql: str = ""

    def existing_tables(self) -> set[str]:
        """The names of the tables in the database (its current schema)."""
        return {str(r[0]) for r in self.select(
            "SELECT table_name FROM information_schema.tables "
            f"WHERE table_schema = {self.current_schema_sql}")}

    def table_columns(self, table: str) -> list[str]:
        """The column names of ``table`` in order (empty when it does not exist)."""
        return [str(r[0]) for r in self.select(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            f"{self.current_schema_sql} AND table_name = {self.placeholder} "
            "ORDER BY ordinal_position", (table,))]

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one writing statement (parameters marked with :attr:`placeholder`) in a
        transaction of its own and commit it; the rows it changed. StoreError on failure.
        For small bookkeeping (``sipcaptool_replays``), not for batches."""
        self.connect()
        conn: Any = getattr(self, "conn", None)
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, tuple(params))
                n = int(cur.rowcount)
            finally:
                cur.close()
            conn.commit()
            return n
        except Exception as e:  # noqa: BLE001 - each driver's errors, reported as StoreError
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone
                pass
            err = self.error("cannot write", e)
            if err.kind == "connection":
                self.close()
            raise err from None

    def create_batches_table(self) -> None:
        from .schema import batches_table_sql
        self.execute_ddl(batches_table_sql(self.dialect))

    def unrecorded_batches(self, prefix: str) -> list[tuple[str, str]]:
        """``(table, batch_id)`` of batches whose id starts with ``prefix`` that the
        database took although their id is not in ``sipcaptool_batches``: none where the
        id is stored in the batch's own transaction (MySQL, PostgreSQL, SQLite); see
        ClickHouse's."""
        return []

    def prune_batches(self) -> None:
        """Forget batch ids older than a week (best effort)."""
        from .schema import batches_prune_sql
        try:
            self.execute_ddl([batches_prune_sql(self.dialect)])
        except StoreError:
            pass

    # -- retention and the days ahead (db prune, db init, the collectors' maintenance) ----
    def drop_table(self, table: str) -> None:
        """Drop one table (``db prune``: a day table all of whose days are past)."""
        from .schema import quote_ident
        self.execute_ddl([f"DROP TABLE IF EXISTS {quote_ident(self.dialect, table)}"])

    def drop_days_before(self, table: str, day: _date, *, dry_run: bool = False,
                         batch_rows: int = 5000) -> list[Removal]:
        """Remove from ``table`` (it exists) every row dated before ``day`` (UTC), the
        days that are wholly older than ``db prune --older-than``; in a dry run only say
        what would go. Returns what was removed (:class:`~sipcaptool.store.retention.Removal`:
        whole partitions, or a number of rows).

        The default is :func:`~sipcaptool.store.retention.delete_rows_before`: DELETE by
        the ``date`` index in batches of ``batch_rows`` rows, each committed on its own
        so that writers are not held up. A store with day partitions drops those first
        (MySQL: ``pYYYYMMDD``; ClickHouse: ``ALTER TABLE ... DROP PARTITION`` of each
        partition whose day is before ``day``) and deletes what is left before ``day``
        in partitions that also hold newer rows."""
        from .retention import delete_rows_before
        return delete_rows_before(self, table, day, dry_run=dry_run, batch_rows=batch_rows)


def adapter_class(dialect: str) -> type[Adapter]:
    if dialect == "sqlite":
        from .sqlite import SqliteAdapter
        return SqliteAdapter
    if dialect == "mysql":
        from .mysql import MysqlAdapter
        return MysqlAdapter
    if dialect == "postgresql":
        from .postgres import PostgresAdapter
        return PostgresAdapter
    if dialect == "clickhouse":
        from .clickhouse import ClickHouseAdapter
        return ClickHouseAdapter
    raise StoreError(f"no storage adapter for {dialect!r}")


def open_adapter(db_url: str | DbUrl, *, partition_days: int | None = None) -> Adapter:
    """An adapter (not yet connected) for a db_url. ConfigError for a bad URL."""
    url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
    return adapter_class(url.dialect)(url, partition_days=partition_days)


__all__ = ["Adapter", "DbUrl", "KINDS", "Row", "Value", "adapter_class", "open_adapter",
           "parse_db_url"]
