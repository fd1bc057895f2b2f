"""Table definitions per dialect, and ``sipcaptool db init``.

The committed files ``sql/<dialect>/sipcapture_create.sql`` (installed as package data
``sipcaptool/sql/...``) are the schema: ``sip_capture`` with Kamailio's columns (in the
order of :data:`sipcaptool.record.SIP_COLUMNS`, ``id`` first) and the three fixed tables
``logs_capture``, ``report_capture`` and ``rtcp_capture``. The file is a template for the
table name ``sip_capture``: :func:`sip_table_sql` substitutes another name (table and
index names). The files are generated from record.py by :func:`generate_template`
(``python -m sipcaptool.store.schema --write``); a test checks that they agree.

Column types never lose a message: ``msg`` is LONGBLOB (MySQL), BYTEA (PostgreSQL) or
BLOB (SQLite); text columns are VARCHAR(width), or TEXT in MySQL for widths over 255
(utf8mb4 counts 4 bytes a character against the 65,535-byte row limit); ``date`` is
DATETIME (MySQL: no time-zone conversion) / ``timestamp without time zone`` (PostgreSQL)
/ TEXT (SQLite), always UTC.

MySQL partitioning (``partition_days=N``): like Kamailio's Homer schema, the table is
partitioned by range on the day of ``date`` (``TO_DAYS(date)``; Kamailio used
``UNIX_TIMESTAMP`` on a TIMESTAMP column, which a DATETIME column does not allow): one
partition ``p_old`` for everything before today (UTC), one partition ``pYYYYMMDD`` per day
for today and the N-1 following days, and a catch-all ``pmax``. Expiring a day is then
``ALTER TABLE t DROP PARTITION p20260101`` (instant, no row-by-row DELETE); adding days
later is ``ALTER TABLE t REORGANIZE PARTITION pmax INTO (...)``
(:func:`partition_maintenance_sql` writes both). The primary key is
``(id, date)`` because MySQL requires the partitioning column in every unique key.
Partitioning only applies when the table is created (``CREATE TABLE IF NOT EXISTS``
leaves an existing table alone).

Deliberate differences: SQLite's ``id`` is ``INTEGER PRIMARY KEY`` (the rowid; SQLite
cannot auto-number a composite key and has no partitions). PostgreSQL's ``id`` is
BIGSERIAL (Kamailio: SERIAL, which wraps after 2^31 rows). Identifiers are quoted, so in
PostgreSQL a mixed-case table name must be quoted in queries too.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from ..record import AUX_COLUMNS, BIGINT, BLOB, DATETIME, INT, SIP_COLUMNS, TEXT
from .router import expand_table_name, identifier_limit, validate_table_name
from .url import DbUrl, parse_db_url

DIALECTS = ("mysql", "postgresql", "sqlite")
_DIRS = {"mysql": "mysql", "postgresql": "postgres", "sqlite": "sqlite"}
TEMPLATE_TABLE = "sip_capture"
AUX_TABLE_NAMES = ("logs_capture", "report_capture", "rtcp_capture")
# Kamailio's indexes on the capture tables (plus the primary key (id, date)).
SIP_INDEXES = ("ruri_user", "from_user", "to_user", "pid_user", "auth_user", "callid_aleg",
               "date", "callid")
AUX_INDEXES = ("date", "correlation_id")
MYSQL_TEXT_MAX_VARCHAR = 255
_QUOTE = {"mysql": "`", "postgresql": '"', "sqlite": '"', "clickhouse": "`"}

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def template_path(dialect: str) -> Path:
    return SQL_DIR / _DIRS[dialect] / "sipcapture_create.sql"


def quote_ident(dialect: str, name: str) -> str:
    q = _QUOTE[dialect]
    return q + name.replace(q, q + q) + q


def _col_type(dialect: str, kind: str, width: int) -> str:
    if dialect == "mysql":
        return {
            DATETIME: "DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00'",
            BIGINT: "BIGINT NOT NULL DEFAULT 0",
            INT: "INT NOT NULL DEFAULT 0",
            BLOB: "LONGBLOB NOT NULL",
            TEXT: (f"VARCHAR({width}) NOT NULL DEFAULT ''" if width <= MYSQL_TEXT_MAX_VARCHAR
                   else "TEXT NOT NULL"),
        }[kind]
    if dialect == "postgresql":
        return {
            DATETIME: "TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT '1970-01-01 00:00:00'",
            BIGINT: "BIGINT NOT NULL DEFAULT 0",
            INT: "INTEGER NOT NULL DEFAULT 0",
            BLOB: "BYTEA NOT NULL",
            TEXT: f"VARCHAR({width}) NOT NULL DEFAULT ''",
        }[kind]
    return {
        DATETIME: "TEXT NOT NULL DEFAULT '1970-01-01 00:00:00'",
        BIGINT: "INTEGER NOT NULL DEFAULT 0",
        INT: "INTEGER NOT NULL DEFAULT 0",
        BLOB: "BLOB NOT NULL",
        TEXT: f"VARCHAR({width}) NOT NULL DEFAULT ''",
    }[kind]


def _create_table(dialect: str, table: str, columns: Sequence[tuple[str, str, int]],
                  indexes: Sequence[str]) -> list[str]:
    def q(name: str) -> str:
        return quote_ident(dialect, name)

    lines = []
    if dialect == "mysql":
        lines.append(f"  {q('id')} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT")
    elif dialect == "postgresql":
        lines.append(f"  {q('id')} BIGSERIAL NOT NULL")
    else:
        lines.append(f"  {q('id')} INTEGER PRIMARY KEY")
    for name, kind, width in columns:
        lines.append(f"  {q(name)} {_col_type(dialect, kind, width)}")
    if dialect in ("mysql", "postgresql"):
        lines.append(f"  PRIMARY KEY ({q('id')}, {q('date')})")
    widths = {name: width for name, kind, width in columns if kind == TEXT}
    wide = [ix for ix in indexes if widths.get(ix, 0) > MYSQL_TEXT_MAX_VARCHAR]
    if dialect == "mysql":
        for ix in indexes:
            # a TEXT column can only be indexed on a prefix
            prefix = f"({MYSQL_TEXT_MAX_VARCHAR})" if ix in wide else ""
            lines.append(f"  KEY {q(ix)} ({q(ix)}{prefix})")
    body = ",\n".join(lines)
    stmt = f"CREATE TABLE IF NOT EXISTS {q(table)} (\n{body}\n)"
    if dialect == "mysql":
        stmt += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC"
    out = [stmt]
    if dialect != "mysql":
        for ix in indexes:
            # PostgreSQL: a btree entry is limited to ~2,700 bytes, so wide columns get a
            # hash index (equality lookups, no size limit)
            using = "USING hash " if dialect == "postgresql" and ix in wide else ""
            out.append(f"CREATE INDEX IF NOT EXISTS {q(table + '_' + ix + '_idx')} "
                       f"ON {q(table)} {using}({q(ix)})")
    return out


_HEADER = {
    "mysql": """\
-- sipcaptool capture tables for MySQL / MariaDB (InnoDB, utf8mb4, binary collation).
-- Generated from sipcaptool/record.py (python -m sipcaptool.store.schema --write).
--
-- `sip_capture` is a template: `sipcaptool db init` substitutes the configured
-- table name(s) for it, and creates tables named with strftime codes
-- (sip_capture_%Y%m%d) for the day in UTC; writes create later days on demand.
-- Text columns wider than 255 characters are TEXT so the row stays under
-- MySQL's 65,535-byte row limit with utf8mb4; msg is LONGBLOB: every message is
-- kept byte for byte (Kamailio's varchar(1500) lost long, non-UTF-8 and emoji
-- messages). date is DATETIME in UTC (no time-zone conversion by the server).
--
-- Optional date-range partitioning (db init --partition-days N), as in
-- Kamailio's Homer schema: appended to the sip_capture CREATE TABLE,
--   PARTITION BY RANGE (TO_DAYS(`date`)) (
--     PARTITION p_old VALUES LESS THAN (TO_DAYS('2026-01-01')),
--     PARTITION p20260101 VALUES LESS THAN (TO_DAYS('2026-01-02')),
--     ...one partition per day for N days from today...
--     PARTITION pmax VALUES LESS THAN MAXVALUE)
-- so old days are expired cheaply with ALTER TABLE ... DROP PARTITION p20260101.
-- That is why the primary key is (id, date): MySQL needs the partitioning column
-- in every unique key.
""",
    "postgresql": """\
-- sipcaptool capture tables for PostgreSQL.
-- Generated from sipcaptool/record.py (python -m sipcaptool.store.schema --write).
--
-- "sip_capture" is a template: `sipcaptool db init` substitutes the configured
-- table name(s) for it (table and index names), and creates tables named with
-- strftime codes (sip_capture_%Y%m%d) for the day in UTC; writes create later
-- days on demand. msg is BYTEA: every message is kept byte for byte. date is
-- timestamp without time zone, in UTC. Unlike Kamailio's shipped PostgreSQL
-- schema, every column the module inserts is present (ruri_domain, from_domain,
-- to_domain, correlation_id, custom_field1..3).
""",
    "sqlite": """\
-- sipcaptool capture tables for SQLite.
-- Generated from sipcaptool/record.py (python -m sipcaptool.store.schema --write).
--
-- "sip_capture" is a template: `sipcaptool db init` substitutes the configured
-- table name(s) for it (table and index names). id is the rowid (INTEGER
-- PRIMARY KEY): SQLite cannot auto-number a composite (id, date) key. date is
-- TEXT 'YYYY-MM-DD HH:MM:SS' in UTC; msg is a BLOB kept byte for byte.
""",
}


def generate_template(dialect: str) -> str:
    """The text of ``sql/<dialect>/sipcapture_create.sql``, built from record.py."""
    parts = [_HEADER[dialect]]
    parts.append("\n-- One row per SIP message; columns in the order sipcaptool (and Kamailio) "
                 "inserts them.\n")
    parts.append(";\n\n".join(_create_table(dialect, TEMPLATE_TABLE, SIP_COLUMNS, SIP_INDEXES))
                 + ";\n")
    parts.append("\n-- HEP RTCP (type 5), reports (32, 99) and logs (100): fixed names, "
                 "no strftime.\n")
    for t in AUX_TABLE_NAMES:
        parts.append("\n" + ";\n\n".join(_create_table(dialect, t, AUX_COLUMNS, AUX_INDEXES))
                     + ";\n")
    return "".join(parts)


def _split(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


_cache: dict[str, tuple[list[str], list[str]]] = {}


def _template_statements(dialect: str) -> tuple[list[str], list[str]]:
    """(statements for sip_capture, statements for the aux tables) from the template file."""
    got = _cache.get(dialect)
    if got is None:
        path = template_path(dialect)
        text = path.read_text() if path.exists() else generate_template(dialect)
        q = _QUOTE[dialect]
        marker = re.compile(re.escape(q + TEMPLATE_TABLE) + r"(?:_\w+_idx)?" + re.escape(q))
        sip: list[str] = []
        aux: list[str] = []
        for st in _split(text):
            (sip if marker.search(st) else aux).append(st)
        got = _cache[dialect] = (sip, aux)
    return got


def partition_clause(days: int, today: _dt.date | None = None) -> str:
    """MySQL ``PARTITION BY RANGE`` on the day of ``date``: p_old, one per day, pmax."""
    if days < 1:
        raise ValueError("partition_days must be at least 1")
    if today is None:
        today = _dt.datetime.now(_dt.UTC).date()
    parts = [f"  PARTITION p_old VALUES LESS THAN (TO_DAYS('{today.isoformat()}'))"]
    for i in range(days):
        d = today + _dt.timedelta(days=i)
        nxt = d + _dt.timedelta(days=1)
        parts.append(f"  PARTITION p{d:%Y%m%d} VALUES LESS THAN (TO_DAYS('{nxt.isoformat()}'))")
    parts.append("  PARTITION pmax VALUES LESS THAN MAXVALUE")
    return "PARTITION BY RANGE (TO_DAYS(`date`)) (\n" + ",\n".join(parts) + "\n)"


def partition_maintenance_sql(table: str, existing: list[str], days_ahead: int,
                              keep_days: int | None = None,
                              today: _dt.date | None = None) -> list[str]:
    """MySQL statements that keep a partitioned table rolling.

    ``existing``: the table's partition names (``information_schema.partitions``).
    Adds the missing day partitions up to ``days_ahead`` days from today (UTC) by
    splitting ``pmax``, and with ``keep_days`` drops the day partitions older than that
    many days (``DROP PARTITION``: the cheap way to expire old messages).
    """
    if today is None:
        today = _dt.datetime.now(_dt.UTC).date()
    q = quote_ident("mysql", table)
    have = {n for n in existing if re.fullmatch(r"p\d{8}", n or "")}
    out: list[str] = []
    if "pmax" in existing:
        last = max((_dt.datetime.strptime(n[1:], "%Y%m%d").date() for n in have),
                   default=today - _dt.timedelta(days=1))
        new = []
        d = max(last + _dt.timedelta(days=1), today)
        end = today + _dt.timedelta(days=days_ahead)
        while d < end:
            nxt = d + _dt.timedelta(days=1)
            new.append(f"PARTITION p{d:%Y%m%d} VALUES LESS THAN (TO_DAYS('{nxt.isoformat()}'))")
            d = nxt
        if new:
            out.append(f"ALTER TABLE {q} REORGANIZE PARTITION pmax INTO (" + ", ".join(new)
                       + ", PARTITION pmax VALUES LESS THAN MAXVALUE)")
    if keep_days is not None:
        oldest = today - _dt.timedelta(days=keep_days - 1)
        old = sorted(n for n in have if _dt.datetime.strptime(n[1:], "%Y%m%d").date() < oldest)
        if old:
            out.append(f"ALTER TABLE {q} DROP PARTITION " + ", ".join(old))
    return out


def index_name(dialect: str, table: str, suffix: str) -> str:
    """``table + suffix`` (``_callid_idx``), or, when that is longer than the database's
    identifier limit (PostgreSQL: 63; it would cut the names, and the cut names of one
    table's indexes could be the same), the table part shortened and made unique with
    its CRC-32: ``<first characters>_<crc32 hex><suffix>``."""
    name = table + suffix
    limit = identifier_limit(dialect)
    if not suffix or limit is None or len(name) <= limit:
        return name
    tag = f"_{zlib.crc32(table.encode()):08x}"
    return table[:limit - len(suffix) - len(tag)] + tag + suffix


def sip_table_sql(dialect: str, table: str, partition_days: int | None = None, *,
                  today: _dt.date | None = None) -> list[str]:
    """CREATE statements for one sip_capture-layout table (name already strftime-expanded)."""
    if "%" in table:
        raise ValueError(f"table name {table!r} still has strftime codes")
    validate_table_name(table, dialect)
    sip, _ = _template_statements(dialect)
    q = _QUOTE[dialect]
    pat = re.compile(re.escape(q + TEMPLATE_TABLE) + r"((?:_\w+_idx)?)" + re.escape(q))
    def repl(m: re.Match[str]) -> str:
        return quote_ident(dialect, index_name(dialect, table, m.group(1)))
    out = [pat.sub(repl, st) for st in sip]
    if partition_days and dialect == "mysql":
        out[0] = out[0] + "\n" + partition_clause(partition_days, today)
    return out


def aux_tables_sql(dialect: str) -> list[str]:
    """CREATE statements for logs_capture, report_capture and rtcp_capture."""
    return list(_template_statements(dialect)[1])


BATCHES_TABLE = "sipcaptool_batches"
BATCHES_KEEP_DAYS = 7


def batches_table_sql(dialect: str) -> list[str]:
    """CREATE statements for ``sipcaptool_batches``: one row per written batch (its id,
    table, rows, time), inserted in the batch's own transaction so that a batch whose
    commit was not confirmed (the connection died) can be checked before it is written
    again. Rows older than BATCHES_KEEP_DAYS days are deleted by the writer."""
    if dialect == "mysql":
        return [f"CREATE TABLE IF NOT EXISTS `{BATCHES_TABLE}` ("
                "`batch_id` VARCHAR(64) NOT NULL PRIMARY KEY, "
                "`table_name` VARCHAR(128) NOT NULL, `row_count` INT NOT NULL, "
                "`written_at` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                "KEY `written_at` (`written_at`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
                "COLLATE=utf8mb4_bin"]
    if dialect == "postgresql":
        return [f'CREATE TABLE IF NOT EXISTS "{BATCHES_TABLE}" ('
                '"batch_id" VARCHAR(64) PRIMARY KEY, "table_name" VARCHAR(128) NOT NULL, '
                '"row_count" INTEGER NOT NULL, '
                '"written_at" TIMESTAMPTZ NOT NULL DEFAULT now())',
                f'CREATE INDEX IF NOT EXISTS "{BATCHES_TABLE}_written_at_idx" '
                f'ON "{BATCHES_TABLE}" ("written_at")']
    return [f'CREATE TABLE IF NOT EXISTS "{BATCHES_TABLE}" ('
            '"batch_id" TEXT PRIMARY KEY, "table_name" TEXT NOT NULL, '
            '"row_count" INTEGER NOT NULL, '
            '"written_at" TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)',
            f'CREATE INDEX IF NOT EXISTS "{BATCHES_TABLE}_written_at_idx" '
            f'ON "{BATCHES_TABLE}" ("written_at")']


def batches_marker_sql(dialect: str) -> str:
    """INSERT of one batch id that inserts nothing when the id is already there."""
    if dialect == "mysql":
        return (f"INSERT IGNORE INTO `{BATCHES_TABLE}` (`batch_id`, `table_name`, "
                "`row_count`) VALUES (%s, %s, %s)")
    if dialect == "postgresql":
        return (f'INSERT INTO "{BATCHES_TABLE}" ("batch_id", "table_name", "row_count") '
                'VALUES (%s, %s, %s) ON CONFLICT ("batch_id") DO NOTHING')
    return (f'INSERT OR IGNORE INTO "{BATCHES_TABLE}" ("batch_id", "table_name", '
            '"row_count") VALUES (?, ?, ?)')


def batches_prune_sql(dialect: str, days: int = BATCHES_KEEP_DAYS) -> str:
    if dialect == "mysql":
        return (f"DELETE FROM `{BATCHES_TABLE}` WHERE `written_at` < "
                f"NOW() - INTERVAL {int(days)} DAY")
    if dialect == "postgresql":
        return (f'DELETE FROM "{BATCHES_TABLE}" WHERE "written_at" < '
                f"now() - interval '{int(days)} days'")
    return (f'DELETE FROM "{BATCHES_TABLE}" WHERE "written_at" < '
            f"datetime('now', '-{int(days)} days')")


def schema_sql(dialect: str, sip_tables: list[str], aux: bool = True,
               partition_days: int | None = None, ts_us: int | None = None) -> list[str]:
    """Every statement for these tables; strftime names are expanded (once) for ``ts_us``
    (default: now, UTC). Names are checked by the router's rule for ``dialect``, so
    ``db init`` refuses exactly the names the collectors refuse."""
    if ts_us is None:
        ts_us = int(time.time() * 1_000_000)
    out: list[str] = []
    seen = set()
    for t in sip_tables:
        name = expand_table_name(validate_table_name(t, dialect), ts_us)
        if name in seen:
            continue
        seen.add(name)
        out.extend(sip_table_sql(dialect, name, partition_days))
    if aux:
        out.extend(aux_tables_sql(dialect))
    return out


def init_db(db_url: str | DbUrl, sip_tables: list[str], *, aux: bool = True,
            partition_days: int | None = None, print_only: bool = False) -> list[str]:
    """Create the database (MySQL/PostgreSQL, if missing) and the tables; idempotent.

    Table names with strftime codes are created for today (UTC); later days are created
    by the writer when their first row arrives. Returns the statements executed (or, with
    ``print_only``, the statements that would be executed, without connecting).

    Raises:
        ConfigError: a bad URL or table name.
        StoreError: the server is unreachable or refused a statement.
    """
    from . import open_adapter

    url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
    if url.is_none:
        return []
    adapter = open_adapter(url, partition_days=partition_days)
    if print_only:
        return adapter.schema_sql(sip_tables, aux, partition_days)
    done: list[str] = []
    adapter.create_database()
    try:
        adapter.connect()
        done = adapter.create_tables(sip_tables, aux, partition_days)
    finally:
        adapter.close()
    return done


def _main(argv: list[str]) -> int:
    if argv[1:2] == ["--write"]:
        for d in DIALECTS:
            p = template_path(d)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(generate_template(d))
            print(p)
        return 0
    for d in (argv[1:] or DIALECTS):
        sys.stdout.write(generate_template(d))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
