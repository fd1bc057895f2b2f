"""Helpers for the storage tests: rows with awkward values and reading them back."""

from __future__ import annotations

import datetime as dt

from sipcaptool.record import AUX_COLUMNS, SIP_COLUMN_NAMES, SIP_COLUMNS
from sipcaptool.store import open_adapter
from sipcaptool.store.url import parse_db_url

AWKWARD = [
    "plain",
    "quote ' double \" backtick ` semicolon ;",
    "back\\slash \\N \\0 \\t end\\",
    "tab\there",
    "new\nline and\r\nCRLF\r",
    "emoji 🙂 📞 and ünïcödé 中文",
    "",
    "%s %% {} $1 ?",
    "\x01\x02\x1a control",
]

MSGS = [
    b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n",
    b"NUL\x00inside\x00\x00",
    b"\xff\xfe invalid utf-8 \xc3\x28 \xed\xa0\x80",
    "emoji 🙂 in msg".encode(),
    b"\\ backslash \t tab \n nl \r cr \\N \\0",
    bytes(range(256)),
    b"8" * 8192,
    bytes(range(256)) * 280,  # 71,680 bytes
    b"",
]


def sip_row(i: int, text: str | None = None, msg: bytes | None = None,
            date: str = "2026-01-02 03:04:05") -> tuple:
    vals = []
    for name, kind, width in SIP_COLUMNS:
        if kind == "datetime":
            vals.append(date)
        elif kind == "bigint":
            vals.append(1_767_323_045_000_000 + i)
        elif kind == "int":
            vals.append(i * 7 + len(name))
        elif kind == "blob":
            vals.append(msg if msg is not None else MSGS[i % len(MSGS)])
        else:
            t = text if text is not None else f"{AWKWARD[i % len(AWKWARD)]} {name} {i}"
            vals.append(t[:width])
    return tuple(vals)


def rows_refusable_by_method(n: int, bad: set[int]) -> list[tuple]:
    """``n`` sip rows whose method is INVITE for the indexes in ``bad`` and BYE for the
    others: a table that allows 3 characters (or a CHECK/trigger on INVITE) refuses
    exactly the ``bad`` ones."""
    method = SIP_COLUMN_NAMES.index("method")
    out = []
    for i in range(n):
        r = list(sip_row(i))
        r[method] = "INVITE" if i in bad else "BYE"
        out.append(tuple(r))
    return out


def aux_row(i: int, msg: bytes = b'{"json": "log \\u0000"}\x00\xff') -> tuple:
    vals = []
    for name, kind, width in AUX_COLUMNS:
        if kind == "datetime":
            vals.append("2026-01-02 03:04:05")
        elif kind in ("bigint", "int"):
            vals.append(i + 3)
        elif kind == "blob":
            vals.append(msg)
        else:
            vals.append(f"{AWKWARD[i % len(AWKWARD)]} {name}"[:width])
    return tuple(vals)


def _norm(v):
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    return v


def connect(url: str):
    u = parse_db_url(url)
    if u.dialect == "sqlite":
        import sqlite3
        return sqlite3.connect(u.database)
    if u.dialect == "mysql":
        import pymysql
        return pymysql.connect(host=u.host, port=u.port, user=u.user or "root",
                               password=u.password, database=u.database, charset="utf8mb4")
    import psycopg2
    kw = dict(host=u.host, port=u.port, user=u.user or "postgres", dbname=u.database)
    if u.password:
        kw["password"] = u.password
    return psycopg2.connect(**kw)


def q(url: str, name: str) -> str:
    return f"`{name}`" if parse_db_url(url).dialect == "mysql" else f'"{name}"'


def read_rows(url: str, table: str, columns=SIP_COLUMN_NAMES) -> list[tuple]:
    conn = connect(url)
    try:
        cur = conn.cursor()
        cols = ", ".join(q(url, c) for c in columns)
        cur.execute(f"SELECT {cols} FROM {q(url, table)} ORDER BY {q(url, 'id')}")
        return [tuple(_norm(v) for v in r) for r in cur.fetchall()]
    finally:
        conn.close()


def count(url: str, table: str) -> int:
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {q(url, table)}")
        return cur.fetchone()[0]
    finally:
        conn.close()


def tables(url: str) -> set[str]:
    u = parse_db_url(url)
    conn = connect(url)
    try:
        cur = conn.cursor()
        if u.dialect == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type='table'")
        elif u.dialect == "mysql":
            cur.execute("SHOW TABLES")
        else:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def batch_positions(url: str, tag: str) -> list[int]:
    """The file positions a replay's batches (ids ``<tag><position>:...``) were marked
    with, in ``sipcaptool_batches``."""
    ad = open_adapter(url)
    ad.connect()
    try:
        ids = ad.select(f"SELECT batch_id FROM sipcaptool_batches WHERE batch_id LIKE "
                        f"{ad.placeholder}", (tag + "%",))
    finally:
        ad.close()
    return sorted(int(str(i)[len(tag):].split(":", 1)[0]) for (i,) in ids)
