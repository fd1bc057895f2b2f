"""Round trips through each adapter against the real databases."""

import pytest
from store_helpers import AWKWARD, MSGS, aux_row, count, read_rows, sip_row, tables

from sipcaptool.errors import StoreError
from sipcaptool.record import AUX_COLUMN_NAMES, SIP_COLUMNS
from sipcaptool.store import open_adapter
from sipcaptool.store._text import TabFormatter, parse_tab_text
from sipcaptool.store.schema import init_db


def _write(url, table, kind, rows):
    a = open_adapter(url)
    a.connect()
    try:
        a.write(table, kind, a.format_batch(kind, rows))
    finally:
        a.close()


def test_round_trip_awkward_values(any_db_url):
    init_db(any_db_url, ["sip_capture"])
    rows = [sip_row(i) for i in range(len(AWKWARD) * len(MSGS))]
    _write(any_db_url, "sip_capture", "sip", rows)
    got = read_rows(any_db_url, "sip_capture")
    assert len(got) == len(rows)
    for want, have in zip(rows, got, strict=True):
        for (name, _, _), w, h in zip(SIP_COLUMNS, want, have, strict=True):
            assert h == w, name


def test_full_width_text_and_big_messages(any_db_url):
    """Values exactly at their column width, in 4-byte characters, are kept whole."""
    init_db(any_db_url, ["sip_capture"], aux=False)
    row = []
    for _name, kind, width in SIP_COLUMNS:
        if kind == "text":
            row.append(("🙂" * width)[:width])
        elif kind == "datetime":
            row.append("2038-01-19 03:14:08")  # past TIMESTAMP's range: DATETIME keeps it
        elif kind == "blob":
            row.append(b"\x00\xff" * 35_000)
        else:
            row.append(2**31 - 1 if kind == "int" else 2**62)
    _write(any_db_url, "sip_capture", "sip", [tuple(row)])
    assert read_rows(any_db_url, "sip_capture") == [tuple(row)]


def test_aux_round_trip(any_db_url):
    init_db(any_db_url, [], aux=True)
    for t in ("logs_capture", "report_capture", "rtcp_capture"):
        rows = [aux_row(i) for i in range(20)]
        _write(any_db_url, t, "aux", rows)
        assert read_rows(any_db_url, t, AUX_COLUMN_NAMES) == rows


def test_table_created_on_first_write(any_db_url):
    _write(any_db_url, "sip_capture_20260102", "sip", [sip_row(1), sip_row(2)])
    _write(any_db_url, "logs_capture", "aux", [aux_row(1)])
    assert {"sip_capture_20260102", "logs_capture"} <= tables(any_db_url)
    assert count(any_db_url, "sip_capture_20260102") == 2
    assert count(any_db_url, "logs_capture") == 1


def test_write_error_is_one_line_store_error(any_db_url):
    a = open_adapter(any_db_url)
    a.connect()
    try:
        a.execute_ddl(["CREATE TABLE bad (x INTEGER)"])
        with pytest.raises(StoreError) as ei:
            a.write("bad", "sip", a.format_batch("sip", [sip_row(1)]))
        assert "\n" not in str(ei.value) and "bad" in str(ei.value)
        # the connection is still usable afterwards
        a.write("good", "sip", a.format_batch("sip", [sip_row(1)]))
    finally:
        a.close()
    assert count(any_db_url, "good") == 1


@pytest.mark.parametrize("url", [
    "mysql://sipuser:hunter2secret@127.0.0.1:1/nodb",
    "postgresql://sipuser:hunter2secret@127.0.0.1:1/nodb",
])
def test_unreachable_server(url):
    a = open_adapter(url)
    with pytest.raises(StoreError) as ei:
        a.connect()
    msg = str(ei.value)
    assert "hunter2secret" not in msg and "\n" not in msg
    assert "127.0.0.1" in msg


def test_sqlite_missing_directory(tmp_path):
    a = open_adapter(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(StoreError):
        a.connect()


def test_mysql_insert_fallback(mysql_url):
    """With LOCAL INFILE unavailable the same payload goes in as multi-row INSERTs."""
    rows = [sip_row(i) for i in range(len(AWKWARD) * len(MSGS))]
    a = open_adapter(mysql_url)
    a.connect()
    a.use_infile = False
    try:
        a.write("sip_capture", "sip", a.format_batch("sip", rows))
    finally:
        a.close()
    assert read_rows(mysql_url, "sip_capture") == rows


def test_mysql_refuses_other_local_files(mysql_url):
    """The in-memory LOCAL INFILE handler never reads a file the server asks for."""
    import pymysql
    a = open_adapter(mysql_url)
    a.connect()
    try:
        a.execute_ddl(["CREATE TABLE f (x TEXT)"])
        with a.conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE f")
    finally:
        a.close()
    assert count(mysql_url, "f") == 0


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_tab_format_escapes_and_parses_back(dialect):
    rows = [sip_row(i) for i in range(len(AWKWARD) * len(MSGS))]
    # text with a NUL goes the slow path: MySQL keeps it as \0, PostgreSQL drops it
    rows.append(sip_row(99, text="a\x00b\tc"))
    fmt = TabFormatter(SIP_COLUMNS, dialect)
    parsed = parse_tab_text(fmt(rows))
    mi = [c[0] for c in SIP_COLUMNS].index("msg")
    for want, got in zip(rows, parsed, strict=True):
        assert len(got) == len(SIP_COLUMNS)
        hexed = got[mi].decode()
        assert bytes.fromhex(hexed[2:] if dialect == "postgresql" else hexed) == want[mi]
        assert got[2].decode() == (want[2] if dialect == "mysql" else want[2].replace("\x00", ""))
        assert got[1].decode() == str(want[1])


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_tab_format_is_the_same_bytes_with_and_without_a_large_message(dialect):
    """A batch holding a message of LARGE_VALUE bytes or more is built as bytes (fewer
    copies of the large value); every other batch as one str. Both give the same bytes."""
    from sipcaptool.store._text import LARGE_VALUE

    mi = [c[0] for c in SIP_COLUMNS].index("msg")
    rows = [r for r in (sip_row(i) for i in range(len(AWKWARD) * len(MSGS)))
            if len(r[mi]) < LARGE_VALUE]
    rows.append(sip_row(99, text="a\x00b\tc"))
    fmt = TabFormatter(SIP_COLUMNS, dialect)
    cols = list(zip(*rows, strict=True))
    assert len(rows) > 10 and not fmt._has_large_blob(cols)
    as_text = fmt._as_text(list(cols), len(rows))
    as_bytes = fmt._as_bytes(list(cols), len(rows))
    assert as_text == as_bytes == fmt(rows)
    big = list(rows[0])
    big[mi] = b"INVITE " + b"x" * LARGE_VALUE
    with_big = [*rows, tuple(big)]
    cols = list(zip(*with_big, strict=True))
    assert fmt._has_large_blob(cols)
    assert fmt(with_big) == fmt._as_text(list(cols), len(with_big))


def test_mysql_local_infile_refused_falls_back_to_insert(mysql_url, monkeypatch):
    """When the server refuses LOCAL INFILE (here: the client flag is off, as when the
    server has local_infile=OFF) the batch is written with INSERTs instead, and so are
    the following ones."""
    from sipcaptool.store.mysql import MysqlAdapter
    orig = MysqlAdapter._params

    def no_flag(self, database):
        p = orig(self, database)
        p["local_infile"] = False
        return p

    monkeypatch.setattr(MysqlAdapter, "_params", no_flag)
    rows = [sip_row(i) for i in range(30)]
    a = open_adapter(mysql_url)
    a.connect()
    try:
        assert a.use_infile
        a.write("sip_capture", "sip", a.format_batch("sip", rows[:15]))
        assert not a.use_infile
        a.write("sip_capture", "sip", a.format_batch("sip", rows[15:]))
    finally:
        a.close()
    assert read_rows(mysql_url, "sip_capture") == rows
