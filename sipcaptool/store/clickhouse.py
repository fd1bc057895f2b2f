"""ClickHouse adapter: batches are inserted as native columnar blocks (clickhouse-driver).

``clickhouse://USER[:PASS]@HOST[:PORT]/DB`` (port 9000, the native protocol; options in
the query string: ``cluster=NAME`` and the driver's own, e.g. ``secure=1``,
``compression=lz4``). The driver is an optional extra (``pip install
'sipcaptool[clickhouse]'``); without it every other store works and a ClickHouse URL
fails with a one-line error naming the extra.

Why clickhouse-driver: it speaks the native TCP protocol, which every server from
Debian's 18.16 to current releases takes, and sends a batch as one columnar block (the
format the server stores, no text to parse); clickhouse-connect speaks HTTP and needs
servers newer than 18.16, chDB is the engine itself in-process (used by the tests to
check the DDL and queries of a current server, not to store).

Tables (:func:`table_sql`): the columns of :mod:`sipcaptool.record` in their order (no
``id``: ClickHouse has no auto-numbering, and nothing needs it), ``date`` as
``DateTime('UTC')``, ``micro_ts`` Int64, numbers Int32, text String (the pipeline already
cut it to its width), ``msg`` String holding the bytes unchanged. ``MergeTree``
partitioned by the UTC day of ``date`` (so expiring a day is ``DROP PARTITION``, and a
strftime day in the table name is not needed: one table serves every day), ordered by
``(toStartOfHour(date), callid, micro_ts)`` (``correlation_id`` for the logs, RTCP and
report tables): a time window reads only its hours; a Call-ID is one short range in each
hour; a user within a window reads that window's hours. What a newer server has is used
where it has it (:class:`Features`, from ``version()``): LowCardinality for the few-valued
columns, ZSTD for ``msg``, bloom-filter skipping indexes on the user columns and the
a-leg Call-ID, TTL for ``db init --retention``.

Cluster (``cluster=NAME`` or the ``cluster`` setting): the tables are created on every
shard the server's ``remote_servers`` lists for that name (each shard is connected to in
turn: ``ON CLUSTER`` needs ZooKeeper, which a plain MergeTree cluster has not), named
``<table>_local``, and a ``Distributed`` table named ``<table>`` over them, sharded by
``halfMD5(callid)`` (``correlation_id`` for the aux tables) so one call's messages live
on one shard. Batches are inserted into the Distributed table of the server in the URL,
which queues them on its disk and sends each shard its rows, again and again until the
shard takes them: a shard that is down for a while loses nothing, and a batch is still one
insert with one outcome (see docs/scale-out.md for the measurement against writing
straight to the shards). Reads go through the Distributed table.

Exactly once (:meth:`ClickHouseAdapter.write` with a batch id). ClickHouse has no
transactions, so the id cannot be inserted with the rows as in MySQL/PostgreSQL. Every
server: the rows are inserted with the batch id as the insert's ``query_id`` and logged
(``log_queries=1``), then the id is inserted into ``sipcaptool_batches``. Before a batch is
written its id is looked up there (found: written before, nothing is written). The window
between the two inserts (the rows were taken, the reply was lost) is closed for a batch
this writer tried before by looking the id up in ``system.query_log`` (after ``SYSTEM
FLUSH LOGS``), where the server logged the insert as finished -- when the server keeps a
query log (Debian's and the official configurations do). Servers from 22.2 on also get
``insert_deduplication_token`` = the batch id with ``non_replicated_deduplication_window``
on the tables: the server itself drops a repeated block.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import logging
import marshal
import os
import re
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..record import AUX_COLUMNS, BIGINT, BLOB, DATETIME, INT, SIP_COLUMNS, TEXT
from . import COLUMN_NAMES, Adapter, JoinedRows, Row, payload_list
from .url import DbUrl

if TYPE_CHECKING:
    from .retention import Removal

log = logging.getLogger("sipcaptool.store")

EXTRA = "clickhouse"
BATCHES_TABLE = "sipcaptool_batches"
LOCAL_SUFFIX = "_local"
INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)

# few distinct values: LowCardinality(String) where the server has it
LOW_CARDINALITY = frozenset({"method", "reply_reason", "content_type", "user_agent", "node",
                             "source_ip", "destination_ip", "contact_ip", "originator_ip",
                             "from_domain", "to_domain", "ruri_domain", "cseq"})
# user lookups and legs: bloom-filter skipping indexes where the server has them
BLOOM_COLUMNS = ("from_user", "to_user", "ruri_user", "pid_user", "auth_user", "callid_aleg")

_COLUMNS = {"sip": SIP_COLUMNS, "aux": AUX_COLUMNS}
# the number columns of each kind, with the array type code of their width
_INT_CODES = {k: [(i, "q" if t == BIGINT else "i") for i, (_, t, _) in enumerate(v)
                  if t in (INT, BIGINT)] for k, v in _COLUMNS.items()}
_INDEX = {k: {n: i for i, n in enumerate(v)} for k, v in COLUMN_NAMES.items()}
# the text columns of each kind (String, or LowCardinality(String) where the server has it)
_TEXT = {k: [(i, n) for i, (n, t, _) in enumerate(v) if t == TEXT] for k, v in _COLUMNS.items()}


@dataclass(frozen=True)
class Features:
    """What the server can do, from its version (``(major, minor)``)."""

    version: tuple[int, int] = (18, 16)

    @property
    def codecs(self) -> bool:
        return self.version >= (19, 1)

    @property
    def ttl(self) -> bool:
        return self.version >= (19, 6)

    @property
    def low_cardinality(self) -> bool:
        return self.version >= (19, 9)     # before: experimental, behind a setting

    @property
    def skipping_indexes(self) -> bool:
        return self.version >= (20, 1)     # before: experimental, behind a setting

    @property
    def dedup_token(self) -> bool:
        return self.version >= (22, 2)     # insert_deduplication_token

    @staticmethod
    def parse(text: str) -> Features:
        m = re.match(r"(\d+)\.(\d+)", text or "")
        return Features((int(m.group(1)), int(m.group(2))) if m else (18, 16))


def quote(name: str) -> str:
    """A ClickHouse identifier in back quotes."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(value: object) -> str:
    """A value as a ClickHouse literal: text escaped (``\\``, ``'``, control characters),
    bytes byte for byte (``\\xHH`` outside printable ASCII)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        chars = (c if c not in "\\'" and ord(c) >= 0x20 and c != "\x7f" else
                 "\\" + c if c in "\\'" else f"\\x{ord(c):02X}" for c in value)
        return "'" + "".join(chars) + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        out = (chr(b) if 0x20 <= b < 0x7F and b not in (0x27, 0x5C) else
               "\\" + chr(b) if b in (0x27, 0x5C) else f"\\x{b:02X}" for b in bytes(value))
        return "'" + "".join(out) + "'"
    raise TypeError(f"no ClickHouse literal for a {type(value).__name__}")


def substitute(sql: str, params: Sequence[object], typed_ints: bool = False) -> str:
    """``sql`` with each ``%s`` replaced by the next parameter as a literal (whole numbers
    as ``toInt64(n)`` with ``typed_ints``: 18.16's ALTER UPDATE finds no common type for
    an unsigned literal and a signed column)."""
    if not params:
        return sql
    parts = sql.split("%s")
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(parts) - 1} markers")
    out = [parts[0]]
    for p, rest in zip(params, parts[1:], strict=True):
        if typed_ints and isinstance(p, int) and not isinstance(p, bool):
            out.append(f"toInt64({p})")
        else:
            out.append(literal(p))
        out.append(rest)
    return "".join(out)


def column_type(name: str, kind: str, f: Features) -> str:
    if kind == DATETIME:
        return "DateTime('UTC')"
    if kind == BIGINT:
        return "Int64"
    if kind == INT:
        return "Int32"
    if kind == BLOB:
        return "String CODEC(ZSTD(3))" if f.codecs else "String"
    if name in LOW_CARDINALITY and f.low_cardinality:
        return "LowCardinality(String)"
    return "String"


def shard_key(kind: str) -> str:
    return "callid" if kind == "sip" else "correlation_id"


def shard_of(value: str, weights: Sequence[int]) -> int:
    """The index of the shard a Distributed table sharded by ``halfMD5(value)`` sends a
    row to (shards in order, with their weights): for writing straight to the shards."""
    h = int.from_bytes(hashlib.md5(value.encode("utf-8")).digest()[:8], "big")
    r = h % sum(weights)
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    return len(weights) - 1  # pragma: no cover


def table_sql(table: str, kind: str, f: Features, *, database: str = "",
              ttl_days: int | None = None) -> str:
    """CREATE TABLE of one MergeTree capture table (see the module doc)."""
    cols = [f"  {quote(n)} {column_type(n, k, f)}" for n, k, _ in _COLUMNS[kind]]
    if kind == "sip" and f.skipping_indexes:
        cols += [f"  INDEX {quote(c + '_bf')} {quote(c)} TYPE bloom_filter(0.01) GRANULARITY 1"
                 for c in BLOOM_COLUMNS]
    name = (quote(database) + "." if database else "") + quote(table)
    key = shard_key(kind)
    stmt = (f"CREATE TABLE IF NOT EXISTS {name} (\n" + ",\n".join(cols) + "\n)"
            " ENGINE = MergeTree()\n"
            " PARTITION BY toYYYYMMDD(`date`)\n"
            f" ORDER BY (toStartOfHour(`date`), {quote(key)}, `micro_ts`)")
    if ttl_days and f.ttl:
        stmt += f"\n TTL `date` + INTERVAL {int(ttl_days)} DAY"
    settings = ["index_granularity = 8192"]
    if f.dedup_token:
        settings.append("non_replicated_deduplication_window = 1000")
    return stmt + "\n SETTINGS " + ", ".join(settings)


_DDL_TYPES = [(re.compile(r"\b(?:VARCHAR\(\d+\)|TEXT|CHAR\(\d+\))", re.I), "String"),
              (re.compile(r"\b(?:BIGINT|INTEGER|INT)\b", re.I), "Int64")]


def portable_ddl(statement: str) -> str:
    """A plain ``CREATE TABLE IF NOT EXISTS t (col TYPE [NOT NULL] [DEFAULT v] [PRIMARY
    KEY], ...)`` written for the other databases (small bookkeeping tables such as
    ``sipcaptool_replays``) as a ClickHouse MergeTree: text String, numbers Int64, a column
    without NOT NULL Nullable, ordered by the primary key column. Any other statement is
    returned as it is."""
    m = re.match(r"\s*CREATE TABLE IF NOT EXISTS\s+(\S+)\s*\((.*)\)\s*\Z", statement, re.S)
    if not m or "ENGINE" in statement.upper():
        return statement
    cols = []
    key = ""
    for part in re.split(r",\s*(?![^()]*\))", m.group(2)):
        cm = re.match(r"\s*(\S+)\s+(.*)\Z", part, re.S)
        if not cm:
            return statement
        name, rest = cm.group(1), cm.group(2)
        if re.search(r"\bPRIMARY KEY\b", rest, re.I):
            key = name
            rest = re.sub(r"\s*PRIMARY KEY", "", rest, flags=re.I)
        for rx, t in _DDL_TYPES:
            rest = rx.sub(t, rest)
        typ, _, default = rest.partition(" DEFAULT ")
        nullable = "NOT NULL" not in typ.upper()
        typ = re.sub(r"\s*NOT NULL", "", typ, flags=re.I).strip()
        if nullable and not key == name:
            typ = f"Nullable({typ})"
        cols.append(f"{name} {typ}" + (f" DEFAULT {default.strip()}" if default else ""))
    order = key or "tuple()"
    return (f"CREATE TABLE IF NOT EXISTS {m.group(1)} (" + ", ".join(cols)
            + f") ENGINE = MergeTree() ORDER BY {order}")


def distributed_sql(table: str, kind: str, cluster: str, database: str) -> str:
    """CREATE TABLE of the Distributed table ``table`` over ``<table>_local``."""
    return (f"CREATE TABLE IF NOT EXISTS {quote(database)}.{quote(table)} AS "
            f"{quote(database)}.{quote(table + LOCAL_SUFFIX)} ENGINE = Distributed("
            f"{quote(cluster)}, {quote(database)}, {quote(table + LOCAL_SUFFIX)}, "
            f"halfMD5({quote(shard_key(kind))}))")


def batches_sql(f: Features, database: str = "") -> str:
    name = (quote(database) + "." if database else "") + quote(BATCHES_TABLE)
    return (f"CREATE TABLE IF NOT EXISTS {name} (`batch_id` String, `table_name` String, "
            "`row_count` UInt32, `written_at` DateTime('UTC') DEFAULT now()) "
            "ENGINE = MergeTree() PARTITION BY toYYYYMMDD(`written_at`) ORDER BY `batch_id`")


# server error codes (ErrorCodes.cpp) and what they mean (see StoreError)
_UNKNOWN_TABLE = 60
_UNKNOWN_DATABASE = 81
_OPERATOR_CODES = {81: "create the database (sipcaptool db init)",
                   60: "create the table (sipcaptool db init)",
                   16: "the table lacks a column: recreate it with sipcaptool db init",
                   47: "the table lacks a column: recreate it with sipcaptool db init",
                   164: "the user is read-only", 192: "check the user name",
                   193: "check the password", 194: "check the password",
                   195: "the user may not connect from this address",
                   497: "grant the user INSERT (and CREATE) on the database",
                   516: "check the user name and password", 701: "check the cluster name",
                   170: "check the cluster name (remote_servers in the server's config)"}
# the rows' fault: text that does not parse, a type that does not fit
_REFUSED_CODES = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 190}

_DATE_CACHE: dict[str, int] = {}
# a reading statement on one capture table (quoted by the query layer, never system.*)
_PREWHERE = re.compile(r'\A(\s*SELECT\b[^"]*?(?:"[^"]*"[^"]*?)*?\bFROM\s+"[^"]+"\s+)WHERE\b', re.S)


def epoch(date: object) -> int:
    """``'YYYY-MM-DD HH:MM:SS'`` (UTC) as seconds since the epoch (cached per text);
    ValueError for anything else or outside DateTime's range."""
    if isinstance(date, int):
        sec = date
    else:
        if not isinstance(date, str):
            raise ValueError(f"date {date!r} is not text")
        got = _DATE_CACHE.get(date)
        if got is not None:
            return got
        sec = calendar.timegm(time.strptime(date, "%Y-%m-%d %H:%M:%S"))
    if not 0 <= sec < 1 << 32:
        raise ValueError(f"date {date!r} is outside ClickHouse's DateTime")
    if isinstance(date, str):
        if len(_DATE_CACHE) > 4096:
            _DATE_CACHE.clear()
        _DATE_CACHE[date] = sec
    return sec


def check_row(kind: str, row: Row) -> str | None:
    """Why ClickHouse would refuse this row, or None (it fits the table's types)."""
    cols = _COLUMNS[kind]
    if len(row) != len(cols):
        return f"{len(row)} values for {len(cols)} columns"
    for (name, k, _), v in zip(cols, row, strict=True):
        if k == DATETIME:
            try:
                epoch(v)
            except (ValueError, TypeError) as e:
                return f"column {name}: {e}"
        elif k in (INT, BIGINT):
            lo, hi = INT64 if k == BIGINT else INT32
            if not isinstance(v, int) or not lo <= v <= hi:
                return f"column {name}: {v!r} does not fit {'Int64' if k == BIGINT else 'Int32'}"
        elif k == BLOB:
            if not isinstance(v, (bytes, bytearray, memoryview, str)):
                return f"column {name}: {type(v).__name__} is not bytes"
        elif not isinstance(v, str):
            return f"column {name}: {type(v).__name__} is not text"
    return None


def columns_of(kind: str, rows: Sequence[Row], encode: Sequence[int] = ()
               ) -> list[Sequence[Any]]:
    """The rows as columns (tuples; ``date`` a list of epoch seconds; the columns of
    ``encode``, text, a list of their UTF-8 bytes): ValueError or TypeError for a row
    that does not fit (:func:`check_row` says which). The numbers are checked by packing
    them as the server's widths (C speed)."""
    cols: list[Sequence[Any]] = list(zip(*rows, strict=True))
    if len(cols) != len(_COLUMNS[kind]):
        raise ValueError(f"{len(cols)} columns for {len(_COLUMNS[kind])}")
    get = _DATE_CACHE.get
    cols[0] = [get(d) or epoch(d) for d in cols[0]]   # (epoch() for a text not yet seen)
    for i, code in _INT_CODES[kind]:
        try:
            array(code, cols[i])
        except (OverflowError, TypeError):
            raise ValueError("a number does not fit its column") from None
    utf8 = str.encode      # (TypeError for a value that is not text)
    for i in encode:
        cols[i] = list(map(utf8, cols[i]))
    return cols


def _driver() -> Any:
    # the driver fills a table of every day from 1900 to 2299 when it is imported (0.2 s,
    # which a writer process started for a replay waits for) unless this variable (its
    # spelling) asks it to compute days as they are needed: sipcaptool uses no Date column
    os.environ.setdefault("CLICKHOUSE_DRIVER_LASY_DATE_LUT", "on-demand")
    try:
        import clickhouse_driver
    except ImportError:
        raise StoreError("ClickHouse needs the clickhouse-driver package: "
                         "pip install 'sipcaptool[clickhouse]'", kind="operator",
                         transient=False) from None
    return clickhouse_driver


class ClickHouseAdapter(Adapter):
    """ClickHouse via clickhouse-driver (native protocol, columnar inserts)."""

    dialect = "clickhouse"
    placeholder = "%s"
    # each insert is a part the server merges later (50,000 rows: 25 inserts cost 18.16
    # 1.9 s of CPU, 5 inserts 0.44 s, one 0.18 s; bench/clickhouse.py replay), and
    # ClickHouse's own advice is about one insert a second: batches are joined up to
    # these. (1 s: a collector at 16,000-24,000 msg/s into a 2-shard cluster cost the
    # servers half the CPU it did with 0.2 s -- inserts of 16,000-20,000 rows instead of
    # 3,000-5,000 -- and that CPU is what the collector lost packets for when they share
    # a machine. 20,000 rows, not more: a replay waits at its end for the insert of what
    # joined after its last message -- its Sync or Close ends the joining, not that
    # insert -- and up to 50,000 rows put a replay of 100,000 messages 0.3 s further
    # behind, with 20,000 it is where 0.2 s was.)
    coalesce_rows = 20_000
    coalesce_bytes = 64 << 20
    coalesce_wait = 1.0
    # marshalled 250 rows at a time as they come; the parts are marshalled as a list
    part_rows = 250
    updates_in_place = False

    def __init__(self, url: DbUrl, *, partition_days: int | None = None) -> None:
        super().__init__(url, partition_days=partition_days)
        opts = dict(url.options)
        self.cluster = opts.pop("cluster", "") or ""
        self.driver_options = opts
        self.client: Any = None
        self.features = Features()
        self.readonly = False
        self.ttl_days: int | None = None
        self._has_query_log: bool | None = None
        self._tried: set[str] = set()          # batch ids whose write failed here
        self._marked = False                   # sipcaptool_batches exists

    # -- connection -------------------------------------------------------------------
    def _client(self, database: str, strings_as_bytes: bool = False,
                host: str | None = None, port: int | None = None) -> Any:
        drv = _driver()
        u = self.url
        kw: dict[str, Any] = dict(host=host or u.host, port=port or u.port,
                                  user=u.user or "default", password=u.password,
                                  database=database, connect_timeout=10,
                                  send_receive_timeout=300, client_name="sipcaptool")
        settings: dict[str, Any] = {"strings_as_bytes": strings_as_bytes}
        for k, v in self.driver_options.items():
            if k in ("secure", "verify", "compression"):
                kw[k] = v.lower() in ("1", "true", "yes") if k != "compression" else v
            elif k in ("connect_timeout", "send_receive_timeout", "sync_request_timeout"):
                kw[k] = float(v)
            else:
                settings[k] = v
        if self.readonly:
            settings["readonly"] = 2   # reads only, settings may still be given
        kw["settings"] = settings
        return drv.Client(**kw)

    def connect(self) -> None:
        if self.client is not None:
            return
        client = self._client(self.url.database, strings_as_bytes=self.readonly)
        try:
            ver = client.execute("SELECT version()")[0][0]
        except Exception as e:  # noqa: BLE001 - the driver's errors and OSError
            _disconnect(client)
            raise self.error("cannot connect", e) from None
        self.client = client
        self.features = Features.parse(str(ver))

    def connect_readonly(self) -> None:
        self.readonly = True
        self.connect()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            _disconnect(client)

    def classify(self, exc: BaseException) -> str:
        code = getattr(exc, "code", None)
        if isinstance(exc, StoreError):
            return exc.kind
        if isinstance(exc, (ValueError, TypeError, OverflowError)) or \
                type(exc).__name__ in ("TypeMismatchError", "TooLargeStringSize"):
            return "refused"
        if code in _OPERATOR_CODES:
            return "operator"
        if code in _REFUSED_CODES and type(exc).__name__ == "ServerException":
            return "refused"
        # network, timeouts, memory, too many parts, a shard unreachable: worth waiting
        return "connection"

    def error(self, what: str, exc: BaseException, transient: bool | None = None,
              kind: str | None = None, hint: str = "") -> StoreError:
        if kind is None and transient is None:
            kind = self.classify(exc)
        if kind == "operator" and not hint:
            hint = self.operator_hint(exc)
        return super().error(what, _PlainError(server_text(exc)), transient, kind, hint)

    def operator_hint(self, exc: BaseException) -> str:
        return _OPERATOR_CODES.get(getattr(exc, "code", None) or 0,
                                   super().operator_hint(exc))

    def _run(self, what: str, sql: str, data: Any = None, **kw: Any) -> Any:
        self.connect()
        try:
            if data is None:
                return self.client.execute(sql, **kw)
            return self.client.execute(sql, data, **kw)
        except Exception as e:  # noqa: BLE001 - the driver's errors and OSError
            err = self.error(what, e)
            if err.kind != "refused" or not _is_server_error(e):
                self.close()   # the connection may be half way through a block
            raise err from None

    # -- schema -----------------------------------------------------------------------
    def shards(self) -> list[tuple[str, int, int]]:
        """``(host, port, weight)`` of the first replica of each shard of the cluster."""
        rows = self.select(
            "SELECT shard_num, shard_weight, host_address, port FROM system.clusters "
            "WHERE cluster = %s AND replica_num = 1 ORDER BY shard_num", (self.cluster,))
        if not rows:
            raise StoreError(f"{self.url.redacted()}: the server has no cluster "
                             f"{self.cluster!r} (remote_servers in its configuration)",
                             kind="operator", transient=False)
        return [(str(h), int(p), int(w)) for _, w, h, p in rows]

    def _on_shards(self, statements: list[str], database: str | None = None) -> None:
        """Run DDL on every shard (each connected to in turn) or on this server."""
        db = self.url.database if database is None else database
        if not self.cluster:
            if database is None:
                for st in statements:
                    self._run("cannot create table", st)
            else:
                self._adhoc(self.url.host, self.url.port, db, statements)
            return
        for host, port, _ in self.shards():
            self._adhoc(host, port, db, statements)

    def _adhoc(self, host: str, port: int, database: str, statements: list[str]) -> None:
        client = self._client(database, host=host, port=port)
        try:
            for st in statements:
                client.execute(st)
        except Exception as e:  # noqa: BLE001
            raise self.error(f"{host}:{port}: cannot create table", e) from None
        finally:
            _disconnect(client)

    def create_database(self) -> None:
        st = f"CREATE DATABASE IF NOT EXISTS {quote(self.url.database)}"
        if not self.cluster:
            self._adhoc(self.url.host, self.url.port, "default", [st])
            return
        self._adhoc(self.url.host, self.url.port, "default", [st])
        self.connect()
        for host, port, _ in self.shards():
            self._adhoc(host, port, "default", [st])

    def table_statements(self, table: str, kind: str) -> tuple[list[str], list[str]]:
        """(statements for every shard, statements for this server) creating ``table``."""
        db = self.url.database
        if not self.cluster:
            return [table_sql(table, kind, self.features, database=db,
                              ttl_days=self.ttl_days)], []
        local = table_sql(table + LOCAL_SUFFIX, kind, self.features, database=db,
                          ttl_days=self.ttl_days)
        dist = distributed_sql(table, kind, self.cluster, db)
        return [local], [dist]

    def schema_sql(self, sip_tables: list[str], aux: bool = True,
                   partition_days: int | None = None) -> list[str]:
        from .router import expand_table_name, validate_table_name
        from .schema import AUX_TABLE_NAMES
        now = int(time.time() * 1_000_000)
        out: list[str] = []
        names: list[tuple[str, str]] = []
        for t in sip_tables:
            name = expand_table_name(validate_table_name(t, self.dialect), now)
            if (name, "sip") not in names:
                names.append((name, "sip"))
        if aux:
            names += [(t, "aux") for t in AUX_TABLE_NAMES]
        for name, kind in names:
            shard, here = self.table_statements(name, kind)
            out += shard + here
        out.append(batches_sql(self.features, self.url.database))
        return out

    def create_tables(self, sip_tables: list[str], aux: bool = True,
                      partition_days: int | None = None) -> list[str]:
        self.connect()
        stmts = self.schema_sql(sip_tables, aux, partition_days)
        shard = [s for s in stmts if "ENGINE = MergeTree" in s and BATCHES_TABLE not in s]
        here = [s for s in stmts if s not in shard]
        self._on_shards(shard)
        for st in here:
            self._run("cannot create table", st)
        return stmts

    def execute_ddl(self, statements: list[str]) -> None:
        for st in statements:
            self._run("cannot create table", portable_ddl(st))

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """One small bookkeeping statement (``sipcaptool_replays``): INSERT as it is,
        DELETE and UPDATE as mutations (``ALTER TABLE ... DELETE/UPDATE``, which apply to
        the rows there now). Returns 0 (ClickHouse does not count them)."""
        m = re.match(r"(\s*INSERT\s+INTO\s+.*?\bVALUES)\s*(\(.*?\)).*\Z", sql, re.S | re.I)
        if m:   # the values go as a block (the driver sends an INSERT's data itself)
            width = m.group(2).count("%s")      # (a row each; several: VALUES (..), (..))
            values = tuple(params)
            rows = [values[i:i + width] for i in range(0, len(values), width or 1)]
            self._run("cannot write", m.group(1), rows)
            return len(rows)
        text = substitute(sql, params, typed_ints=True)
        m = re.match(r"\s*DELETE\s+FROM\s+(\S+)\s+WHERE\s+(.*)\Z", text, re.S | re.I)
        if m:
            text = f"ALTER TABLE {m.group(1)} DELETE WHERE {m.group(2)}"
        m = re.match(r"\s*UPDATE\s+(\S+)\s+SET\s+(.*)\Z", text, re.S | re.I)
        if m:
            text = f"ALTER TABLE {m.group(1)} UPDATE {m.group(2)}"
        settings = {"mutations_sync": 1} if text.startswith("ALTER") and \
            self.features.version >= (20, 1) else None
        self._run("cannot write", text, settings=settings)
        return 0

    def unrecorded_batches(self, prefix: str) -> list[tuple[str, str]]:
        """The inserts this server logged as finished (``system.query_log``, where the
        batch id is the query id) with ids starting with ``prefix``: a batch the server
        took while the writer was killed before recording its id. Empty when the server
        keeps no query log."""
        try:
            self._run("cannot read", "SYSTEM FLUSH LOGS")
            got = self.select(
                "SELECT query_id, query FROM system.query_log WHERE type = 2 AND "
                "query_id LIKE %s AND query LIKE 'INSERT INTO%'",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                 + "%",))
        except StoreError as e:
            log.debug("%s: no query log to read: %s", self.url.redacted(), e)
            return []
        out = []
        for qid, query in got:
            m = re.match(r"\s*INSERT INTO\s+`(?:[^`\\]|\\.)*`\.`((?:[^`\\]|\\.)*)`",
                         query)
            if m:
                out.append((m.group(1).replace("\\`", "`").replace("\\\\", "\\"),
                            qid))
        return out

    def drop_table(self, table: str) -> None:
        """Drop a table (a day table all of whose days are past): on a cluster, the
        Distributed table here and the local tables on every shard."""
        db = quote(self.url.database)
        if self.cluster and table != BATCHES_TABLE:
            self._run("cannot drop table", f"DROP TABLE IF EXISTS {db}.{quote(table)}")
            self._on_shards([f"DROP TABLE IF EXISTS {db}.{quote(table + LOCAL_SUFFIX)}"])
            return
        self._run("cannot drop table", f"DROP TABLE IF EXISTS {db}.{quote(table)}")

    def create_for(self, table: str, kind: str) -> None:
        from .schema import AUX_TABLE_NAMES
        if kind == "sip":
            shard, here = self.table_statements(table, kind)
        else:
            shard, here = [], []
            for t in AUX_TABLE_NAMES:
                a, b = self.table_statements(t, "aux")
                shard += a
                here += b
        self._on_shards(shard)
        for st in here:
            self._run("cannot create table", st)

    def create_batches_table(self) -> None:
        self._run("cannot create table", batches_sql(self.features, self.url.database))
        self._marked = True

    def prune_batches(self) -> None:
        """Forget batch ids older than a week: whole days dropped (best effort)."""
        try:
            self.drop_days_before(BATCHES_TABLE, _dt.datetime.now(_dt.UTC).date()
                                  - _dt.timedelta(days=7))
        except StoreError:
            pass

    # -- retention --------------------------------------------------------------------
    def set_retention(self, days: int, sip_tables: Sequence[str], *, aux: bool = True) -> str:
        """``db init --retention``: tables created from now on get a TTL of ``days`` days
        on ``date``, and those of ``sip_tables`` (and the aux tables) that exist get it
        too (``ALTER TABLE ... MODIFY TTL``, on every shard), where the server has TTL
        (19.6 and later). Returns one line saying what was done."""
        from .schema import AUX_TABLE_NAMES
        self.connect()
        if not self.features.ttl:
            v = ".".join(map(str, self.features.version))
            return (f"--retention: ClickHouse {v} has no TTL (19.6 and later): run "
                    f"sipcaptool db prune --older-than {days}d from a timer (contrib/)")
        self.ttl_days = days
        names = list(dict.fromkeys([*sip_tables, *(AUX_TABLE_NAMES if aux else ())]))
        have = self.existing_tables()
        changed = [t for t in names if t in have]
        db = quote(self.url.database)
        self._on_shards([f"ALTER TABLE {db}.{quote(t + (LOCAL_SUFFIX if self.cluster else ''))}"
                         f" MODIFY TTL `date` + INTERVAL {int(days)} DAY" for t in changed])
        return (f"rows older than {days} days are removed by the server (TTL)"
                + (f"; set on {', '.join(changed)}" if changed else ""))

    def drop_days_before(self, table: str, day: _dt.date, *, dry_run: bool = False,
                         batch_rows: int = 5000) -> list[Removal]:
        """Drop the day partitions of ``table`` before ``day`` (UTC): whole days, so
        nothing is left to delete row by row; on a cluster, on every shard (each shard's
        local table). Returns the partitions removed (or that would be, with
        ``dry_run``), with the rows they held (all shards together)."""
        from .retention import Removal
        cut = day.strftime("%Y%m%d")
        targets: list[tuple[str, int]] = [(self.url.host, self.url.port)]
        name = table
        if self.cluster and table != BATCHES_TABLE:
            targets = [(h, p) for h, p, _ in self.shards()]
            name = table + LOCAL_SUFFIX
        rows: dict[str, int] = {}
        for host, port in targets:
            client = self._client(self.url.database, host=host, port=port)
            try:
                got = client.execute(substitute(
                    "SELECT partition, sum(rows) FROM system.parts WHERE database = %s AND "
                    "table = %s AND active GROUP BY partition", (self.url.database, name)))
                old = sorted((str(p).strip("'"), int(n)) for p, n in got
                             if re.fullmatch(r"'?\d{8}'?", str(p))
                             and str(p).strip("'") < cut)
                for d, n in old:
                    if not dry_run:
                        client.execute(f"ALTER TABLE {quote(self.url.database)}."
                                       f"{quote(name)} DROP PARTITION {d}")
                    rows[d] = rows.get(d, 0) + n
            except Exception as e:  # noqa: BLE001
                raise self.error(f"{host}:{port}: cannot drop old days of {name}", e) from None
            finally:
                _disconnect(client)
        out = [Removal(table, "partition", d, f"{d[:4]}-{d[4:6]}-{d[6:]}", n)
               for d, n in sorted(rows.items())]
        if not dry_run:
            for r in out:
                log.info("%s: dropped partition %s (%s rows)", table, r.name, r.rows)
        return out

    # -- data -------------------------------------------------------------------------
    def format_batch(self, kind: str, rows: list[Row]) -> object:
        """The rows marshalled (bytes: the capturing process's cheapest way to hand them
        over, 0.08 s per 50,000 rows against 0.12 s for pickle, whose memo costs more
        than it saves here); made columns and epoch dates by the writer process, where
        the time costs the capture nothing."""
        try:
            return marshal.dumps(rows, 4)
        except ValueError:      # a value marshal does not take: the list as it is
            return list(rows)

    def join_parts(self, kind: str, parts: list[object]) -> object:
        """The parts, each marshalled rows, marshalled as a list of bytes (one copy of
        them, no work on the rows); with a part that is a list (rows marshal did not
        take), the list of all the rows."""
        if all(isinstance(p, bytes) for p in parts):
            return marshal.dumps(parts, 4)
        rows: list[Row] = []
        for p in parts:
            rows.extend(self.payload_rows(p))
        return rows

    def local_payload(self, kind: str, rows: list[Row]) -> object:
        return rows     # (write() and payload_rows() take the list: no marshal here)

    def payload_rows(self, payload: object) -> list[Row]:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            rows = marshal.loads(payload)
            if rows and isinstance(rows[0], bytes):    # parts (join_parts)
                joined: list[Row] = []
                for p in rows:
                    joined.extend(marshal.loads(p))
                return joined
        else:
            rows = payload_list(payload)
        return rows if isinstance(rows, list) else list(rows)

    def _committed(self, batch_id: str) -> bool:
        """Whether the batch was written before: its id in sipcaptool_batches, or (for a
        batch tried here before) its insert finished in the server's query log."""
        db = quote(self.url.database)
        sql = substitute(f"SELECT count() FROM {db}.{quote(BATCHES_TABLE)} "
                         "WHERE batch_id = %s", (batch_id,))
        try:
            found = int(self.client.execute(sql)[0][0])
            self._marked = True
        except Exception as e:  # noqa: BLE001
            if getattr(e, "code", None) != _UNKNOWN_TABLE:
                raise
            self.create_batches_table()
            found = 0
        if found or batch_id not in self._tried:
            return bool(found)
        if self._has_query_log is False:
            return False
        self.client.execute("SYSTEM FLUSH LOGS")   # (creates system.query_log at first)
        try:
            n = self.client.execute(substitute(
                "SELECT count() FROM system.query_log WHERE query_id = %s AND type = 2 "
                "AND event_date >= yesterday()", (batch_id,)))[0][0]
        except Exception as e:  # noqa: BLE001
            if getattr(e, "code", None) != _UNKNOWN_TABLE:
                raise
            log.warning("%s keeps no query log: a batch whose insert was not acknowledged "
                        "is written again (it may be stored twice)", self.url.redacted())
            self._has_query_log = False
            return False
        if n:
            self._mark(batch_id, "", 0)
        return bool(n)

    def _mark(self, batch_id: str, table: str, rows: int) -> None:
        self.client.execute(f"INSERT INTO {quote(self.url.database)}.{quote(BATCHES_TABLE)} "
                            "(batch_id, table_name, row_count) VALUES",
                            [(batch_id, table, rows)])

    def _insert(self, table: str, kind: str, cols: Sequence[Sequence[Any]], batch_id: str | None
                ) -> None:
        names = ", ".join(quote(c) for c in COLUMN_NAMES[kind])
        sql = f"INSERT INTO {quote(self.url.database)}.{quote(table)} ({names}) VALUES"
        settings: dict[str, Any] = {}
        if batch_id is not None:
            settings["log_queries"] = 1
            if self.features.dedup_token:
                settings["insert_deduplication_token"] = batch_id
        self.client.execute(sql, cols, columnar=True, query_id=batch_id or "",
                            settings=settings or None)

    def encoded(self, kind: str) -> list[int]:
        """The columns whose text this adapter turns into UTF-8 itself (:func:`columns_of`)
        before an insert: every String column. The driver would encode them during the
        insert, value by value -- 0.12 s of 0.16 s for 20,000 rows, the time a replay
        waits at its end for its last insert; made as each part comes, while the writer
        process waits for the next, the insert takes 0.05 s (and the two together less
        CPU than the driver alone). Not a LowCardinality column: the driver encodes only
        its few distinct values."""
        lc = self.features.low_cardinality
        return [i for i, name in _TEXT[kind] if not (lc and name in LOW_CARDINALITY)]

    def columns(self, kind: str, rows: list[Row]) -> list[Sequence[Any]] | None:
        try:
            return columns_of(kind, rows, self.encoded(kind))
        except (ValueError, TypeError):
            return None

    def write(self, table: str, kind: str, formatted: object, batch_id: str | None = None,
              rows: int = 0) -> bool:
        if isinstance(formatted, JoinedRows) and formatted.columns is not None:
            # (made by coalesce() while the parts came)
            return self._write_columns(table, kind, formatted.columns, batch_id,
                                       len(formatted))
        data = self.payload_rows(formatted)
        if not data:
            return True
        try:
            cols = columns_of(kind, data, self.encoded(kind))
        except (ValueError, TypeError) as e:
            bad = next((why for r in data if (why := check_row(kind, r))), str(e))
            raise self.error(f"cannot write to {table}", ValueError(bad),
                             kind="refused") from None
        return self._write_columns(table, kind, cols, batch_id, len(data))

    def _write_columns(self, table: str, kind: str, cols: Sequence[Sequence[Any]],
                       batch_id: str | None, n: int) -> bool:
        self.connect_for_write()
        created = False
        while True:
            try:
                if batch_id is not None and self._committed(batch_id):
                    return False
                if batch_id is not None:
                    self._tried.add(batch_id)
                days = _by_day(cols)
                if batch_id is None or len(days) == 1:
                    self._insert(table, kind, cols, batch_id)
                else:
                    self._insert_days(table, kind, days, batch_id)
                if batch_id is not None:
                    self._mark(batch_id, table, n)
                    self._tried.discard(batch_id)
                return True
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - the driver's errors and OSError
                if getattr(e, "code", None) == _UNKNOWN_TABLE and not created:
                    created = True
                    self.create_for(table, kind)
                    continue
                err = self.error(f"cannot write to {table}", e)
                if err.kind != "refused" or not _is_server_error(e):
                    self.close()
                raise err from None

    def _insert_days(self, table: str, kind: str, days: list[Sequence[Sequence[Any]]],
                     batch_id: str) -> None:
        """A batch whose rows fall on several days is several parts on the server (one a
        day partition), which an insert does not make all or nothing: each day is its own
        insert with its own id (``day<N>:<batch id>``, recorded like a batch's, and not
        read as a replay's position), so that a retry writes only the days not yet in."""
        for k, cols in enumerate(days):
            sub = f"day{k}:{batch_id}"
            if self._committed(sub):
                continue
            self._tried.add(sub)
            self._insert(table, kind, cols, sub)
            self._mark(sub, table, len(cols[0]))
            self._tried.discard(sub)

    def write_each(self, table: str, kind: str, formatted: object, batch_id: str,
                   rows: int) -> tuple[bool, list[tuple[int, str]]]:
        """The rows that do not fit the table's types are refused (checked here, as the
        server would); the others are written in one insert."""
        data = self.payload_rows(formatted)
        refused: list[tuple[int, str]] = []
        good: list[Row] = []
        for i, r in enumerate(data):
            why = check_row(kind, r)
            if why is None:
                good.append(r)
            else:
                refused.append((i, why))
        if not good:
            return True, refused
        written = self._write_columns(table, kind, columns_of(kind, good, self.encoded(kind)),
                                      batch_id, len(good))
        return written, refused if written else []

    def split_batch(self, payload: object, rows: int) -> tuple[object, int, object, int]:
        data = self.payload_rows(payload)
        k = rows // 2
        return data[:k], k, data[k:], rows - k

    # -- reading ----------------------------------------------------------------------
    def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        # the reading statements' filter as PREWHERE: its columns are read first and the
        # others only for the granules that match (18.16 does not move it by itself: a
        # Call-ID's messages on 2,000,000 rows took 1.2 s with WHERE, 0.07 s with PREWHERE)
        text = _PREWHERE.sub(r"\1PREWHERE", substitute(sql, params), count=1)
        got = self._run("cannot read", text, with_column_types=True)
        rows, types = got
        names = [n for n, _ in types]
        out = []
        for row in rows:
            vals = []
            for name, v in zip(names, row, strict=True):
                if isinstance(v, bytes) and name not in ("msg", "`msg`"):
                    v = v.decode("utf-8", "replace")
                elif name in ("msg", "`msg`") and isinstance(v, str):
                    v = v.encode("utf-8", "surrogateescape")
                elif hasattr(v, "tzinfo") and getattr(v, "tzinfo", None) is not None:
                    v = v.replace(tzinfo=None)   # UTC, as the other stores give it
                vals.append(v)
            out.append(tuple(vals))
        return out

    def existing_tables(self) -> set[str]:
        """The tables of the database here; on a cluster, a Distributed table counts only
        when its local table is on every shard that answers (so that db init, run again
        after a shard was added, creates the new shard's tables)."""
        rows = self.select("SELECT name, engine FROM system.tables WHERE database = %s",
                           (self.url.database,))
        here = {str(n) for n, _ in rows}
        if not self.cluster:
            return here
        dist = {str(n) for n, e in rows if str(e) == "Distributed"}
        for host, port, _ in self.shards():
            client = self._client(self.url.database, host=host, port=port)
            try:
                there = {str(r[0]) for r in client.execute(substitute(
                    "SELECT name FROM system.tables WHERE database = %s",
                    (self.url.database,)))}
            except Exception as e:  # noqa: BLE001 - a shard down: reads say so themselves
                if getattr(e, "code", None) != _UNKNOWN_DATABASE:
                    log.debug("%s:%s: cannot list tables: %s", host, port, server_text(e))
                    continue
                there = set()    # a new shard without the database yet
            finally:
                _disconnect(client)
            here -= {t for t in dist if t + LOCAL_SUFFIX not in there}
        return here

    def table_columns(self, table: str) -> list[str]:
        return [str(r[0]) for r in self.select(
            "SELECT name FROM system.columns WHERE database = %s AND table = %s",
            (self.url.database, table))]

    def count(self, table: str) -> int:
        """Rows in ``table`` (through the Distributed table on a cluster)."""
        return int(self._run("cannot read", f"SELECT count() FROM "
                             f"{quote(self.url.database)}.{quote(table)}")[0][0])


class _PlainError(Exception):
    """A driver error as the one line StoreError shows."""


def server_text(exc: BaseException) -> str:
    """A driver error in one line: ``Code 81: Database homer doesn't exist`` (the server's
    words without its stack trace), or the error's own text."""
    text = str(exc).strip()
    code = getattr(exc, "code", None)
    if type(exc).__name__ == "ServerException" or text.startswith("Code:"):
        body = text.split("\n", 1)[1] if "\n" in text else \
            re.sub(r"^Code: \d+\.\s*", "", text)
        body = body.replace("DB::Exception: ", "").split(". Stack trace", 1)[0]
        body = body.split("\n", 1)[0].strip().rstrip(".")
        return f"Code {code}: {body}" if code is not None else body
    return text.splitlines()[0] if text else type(exc).__name__


def _by_day(cols: Sequence[Sequence[Any]]) -> list[Sequence[Sequence[Any]]]:
    """The columns of a batch (``date`` first, epoch seconds) cut into one set of columns
    per UTC day, in day order (one set, the same columns, for a batch of one day)."""
    dates = cols[0]
    first, last = min(dates) // 86400, max(dates) // 86400
    if first == last:
        return [cols]
    rows: dict[int, list[int]] = {}
    for i, d in enumerate(dates):
        rows.setdefault(d // 86400, []).append(i)
    return [[[c[i] for i in idx] for c in cols] for _, idx in sorted(rows.items())]


def _is_server_error(e: BaseException) -> bool:
    return type(e).__name__ == "ServerException"


def _disconnect(client: Any) -> None:
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


def with_cluster(db_url: str, cluster: str) -> str:
    """``db_url`` with ``cluster=NAME`` added when it is a ClickHouse URL without one (the
    ``cluster`` setting applies to every ClickHouse store of the settings)."""
    if not cluster or not db_url.lower().startswith("clickhouse://") or \
            re.search(r"[?&]cluster=", db_url):
        return db_url
    return db_url + ("&" if "?" in db_url else "?") + "cluster=" + cluster


__all__ = ["ClickHouseAdapter", "Features", "column_type", "distributed_sql", "epoch",
           "literal", "shard_of", "substitute", "table_sql", "with_cluster"]
