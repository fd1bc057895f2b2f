"""Every row a database refuses or skips is counted right (issue 17, section 2), and
batches are bounded in bytes as well as rows.

Real servers: a trigger SIGNAL and a CHECK on MariaDB (INSERT and LOAD DATA), a
constraint on PostgreSQL and SQLite with a third of the rows refusable, privileges
revoked for a few seconds, a column dropped and added back, a lock wait timeout, a
LATIN1 and an SQL_ASCII PostgreSQL database.
"""

from __future__ import annotations

import time
import uuid

import pytest
from store_helpers import connect, count, read_rows, rows_refusable_by_method, sip_row

from sipcaptool.errors import StoreError
from sipcaptool.record import SIP_COLUMN_NAMES, SIP_COLUMNS
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter
from sipcaptool.store.isolate import ISOLATE_MAX_WRITES
from sipcaptool.store.outcomes import Split
from sipcaptool.store.url import parse_db_url
from sipcaptool.store.writer import Writer

UA = SIP_COLUMN_NAMES.index("user_agent")
FROM_USER = SIP_COLUMN_NAMES.index("from_user")


_rows = rows_refusable_by_method


def _table(url: str, table: str = "t") -> None:
    a = open_adapter(url)
    a.connect()
    a.create_tables([table], aux=False)
    a.create_batches_table()
    a.close()


def _sql(url: str, *statements: str, autocommit: bool = True) -> None:
    conn = connect(url)
    try:
        if parse_db_url(url).dialect == "postgresql":
            conn.autocommit = autocommit
        cur = conn.cursor()
        for st in statements:
            cur.execute(st)
        conn.commit()
    finally:
        conn.close()


def _refusing(url: str, table: str = "t", how: str = "check") -> None:
    """Make ``table`` refuse rows whose method is INVITE."""
    _table(url, table)
    d = parse_db_url(url).dialect
    if d == "mysql":
        if how == "signal":
            _sql(url, f"CREATE TRIGGER `{table}_no_invite` BEFORE INSERT ON `{table}` "
                      "FOR EACH ROW BEGIN IF NEW.method = 'INVITE' THEN "
                      "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no INVITE here'; "
                      "END IF; END")
        else:
            _sql(url, f"ALTER TABLE `{table}` ADD CONSTRAINT `no_invite` "
                      "CHECK (method <> 'INVITE')")
    elif d == "postgresql":
        _sql(url, f'ALTER TABLE "{table}" ADD CONSTRAINT no_invite CHECK (method <> \'INVITE\')')
    else:
        _sql(url, f'CREATE TRIGGER "{table}_no_invite" BEFORE INSERT ON "{table}" '
                  "WHEN NEW.method = 'INVITE' BEGIN "
                  "SELECT RAISE(ABORT, 'no INVITE here'); END")


def _store(url: str, rows, *, table: str = "t", spool=None, batch_size=None,
           infile: bool = True, **kw):
    st = Stats()
    w = Writer(url, st, batch_size=batch_size or len(rows), flush_interval=0,
               insert_retries=0, background=False, spool_dir=spool, **kw)
    if not infile:  # MySQL: multi-row INSERTs (a server with local_infile off)
        w.adapter.use_infile = False
    err = None
    try:
        for r in rows:
            w.add(table, "sip", r)
        w.flush()
    except StoreError as e:
        err = e
    try:
        w.close()
    except StoreError as e:
        err = err or e
    return st, err


# ----------------------------------------------------- MariaDB: SIGNAL and CHECK, both paths

@pytest.mark.parametrize("how", ["signal", "check"])
@pytest.mark.parametrize("infile", [True, False], ids=["load-data", "insert"])
def test_mariadb_refusals_are_refused_rows_not_an_outage(mysql_url, tmp_path, how, infile):
    """A trigger SIGNAL (1644) or a CHECK (4025) was taken for "database unreachable":
    the batch and everything behind it stayed in the spool for ever. LOAD DATA skipped
    the rows a CHECK refused and counted them as stored. Now only the refused rows are
    dropped and counted; the total stored equals what the table holds."""
    _refusing(mysql_url, how=how)
    bad = {1, 5, 17, 40}
    rows = _rows(60, bad)
    st, err = _store(mysql_url, rows, spool=str(tmp_path / "spool"), batch_size=30,
                     infile=infile)
    held = count(mysql_url, "t")
    assert held == 56 and st["stored:t"] == held
    assert st["dropped:db-error"] == 4
    assert st["spool_batches"] == 0 and st["db:spooled"] == 0
    assert err is None  # the capture goes on
    assert st["db:split"] == 2
    assert read_rows(mysql_url, "t") == [r for i, r in enumerate(rows) if i not in bad]


def _dated(n: int, bad) -> list[tuple]:
    """Rows of 2026-01-02, those in ``bad`` of 2027-05-05 (a day with no partition)."""
    return [sip_row(i, date="2027-05-05 00:00:00" if i in bad else "2026-01-02 03:04:05")
            for i in range(n)]


@pytest.mark.parametrize("infile", [True, False], ids=["load-data", "insert"])
def test_mariadb_no_partition_for_the_value_is_a_refused_row(mysql_url, tmp_path, infile):
    """A date with no partition (1526) is the row's, not an outage: the rows of the
    days that have a partition are stored, the others dropped and counted."""
    _table(mysql_url)
    _sql(mysql_url, "ALTER TABLE `t` PARTITION BY RANGE (TO_DAYS(`date`)) ("
                    "PARTITION p1 VALUES LESS THAN (TO_DAYS('2026-01-03')))")
    bad = {0, 9, 10, 33}
    rows = _dated(40, bad)
    st, err = _store(mysql_url, rows, spool=str(tmp_path / "spool"), infile=infile)
    assert err is None and st["db:spooled"] == 0
    assert st["stored:t"] == count(mysql_url, "t") == 36
    assert st["dropped:db-error"] == 4
    assert read_rows(mysql_url, "t") == [r for i, r in enumerate(rows) if i not in bad]


def test_postgresql_trigger_raise_is_a_refused_row(pg_url, tmp_path):
    """RAISE EXCEPTION in a trigger (SQLSTATE P0001) refuses the row, not the batch."""
    _table(pg_url)
    _sql(pg_url, "CREATE FUNCTION no_invite() RETURNS trigger AS $$ BEGIN "
                 "IF NEW.method = 'INVITE' THEN RAISE EXCEPTION 'no INVITE here'; END IF; "
                 "RETURN NEW; END $$ LANGUAGE plpgsql",
         'CREATE TRIGGER no_invite BEFORE INSERT ON "t" FOR EACH ROW EXECUTE FUNCTION no_invite()')
    bad = {2, 3, 30}
    rows = _rows(50, bad)
    st, err = _store(pg_url, rows, spool=str(tmp_path / "spool"))
    assert err is None and st["db:spooled"] == 0
    assert st["stored:t"] == count(pg_url, "t") == 47 and st["dropped:db-error"] == 3


# --------------------------------------- a third of the rows refused: no good row dropped

@pytest.mark.parametrize("fixture", ["sqlite_url", "pg_url", "mysql_url"])
def test_a_third_refused_drops_no_good_row(request, fixture):
    """Past ISOLATE_MAX_WRITES statements the search used to drop the rest of the batch
    (PostgreSQL: 19,360 dropped for ~2,000 refusable rows; SQLite: 122 of 3,600 good
    rows stored). Every good row is stored and every refused row counted."""
    url = request.getfixturevalue(fixture)
    _refusing(url)
    n = 900
    bad = set(range(0, n, 3))
    rows = _rows(n, bad)
    t0 = time.monotonic()
    st, err = _store(url, rows, batch_size=450)
    took = time.monotonic() - t0
    assert count(url, "t") == n - len(bad) == st["stored:t"]
    assert st["dropped:db-error"] == len(bad)
    assert read_rows(url, "t") == [r for i, r in enumerate(rows) if i not in bad]
    assert err is None and st["db:split"] == 2
    assert took < 30


def test_the_budget_still_bounds_the_halving(sqlite_url):
    """Few refused rows keep the cheap search (halves); many go row by row past the
    budget -- both end with the same rows stored."""
    _refusing(sqlite_url)
    calls = {"write": 0, "each": 0}
    from sipcaptool.store.sqlite import SqliteAdapter
    from sipcaptool.store.writer_process import WriterCore

    class Counting(SqliteAdapter):
        def write(self, *a, **kw):
            calls["write"] += 1
            return super().write(*a, **kw)

        def write_each(self, *a, **kw):
            calls["each"] += 1
            return super().write_each(*a, **kw)

    a = Counting(parse_db_url(sqlite_url))
    events: list = []
    core = WriterCore(a, 0, 0, None, events.append)
    rows = _rows(600, set(range(0, 600, 2)))
    core.batch("t", "sip", 600, rows, "b1")
    a.close()
    (ev,) = events
    assert isinstance(ev, Split) and ev.stored == 300 and ev.dropped == 300, ev
    assert calls["write"] == 1 + ISOLATE_MAX_WRITES and calls["each"] >= 1
    assert count(sqlite_url, "t") == 300


# --------------------------------------------- operator errors: spooled, drained when fixed

def _pg_role(pg_url: str) -> str:
    """A login role that may write the test tables; the URL that logs in as it."""
    role = "sipcap_" + uuid.uuid4().hex[:8]
    db = parse_db_url(pg_url).database
    _sql(pg_url, f"CREATE ROLE {role} LOGIN", f'GRANT ALL ON DATABASE "{db}" TO {role}',
         f"GRANT ALL ON SCHEMA public TO {role}",
         f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
         f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return pg_url.replace("postgres@", role + "@", 1)


def _my_user(mysql_url: str) -> str:
    user = "sipcap_" + uuid.uuid4().hex[:8]
    db = parse_db_url(mysql_url).database
    # table-level grants (a database-level change reaches open sessions only later)
    _sql(mysql_url, f"CREATE USER '{user}'@'127.0.0.1'",
         f"GRANT SELECT, CREATE, ALTER, INDEX ON `{db}`.* TO '{user}'@'127.0.0.1'",
         f"GRANT INSERT ON `{db}`.`t` TO '{user}'@'127.0.0.1'",
         f"GRANT INSERT, DELETE ON `{db}`.`sipcaptool_batches` TO '{user}'@'127.0.0.1'")
    return mysql_url.replace("root@", user + "@", 1)


def _drop_user(url: str, sql: str) -> None:
    try:
        _sql(url, sql)
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_privileges_revoked_for_a_while_lose_nothing(request, tmp_path, dialect):
    """PostgreSQL took REVOKE INSERT for refused rows and dropped 20,000 of them. A
    privilege error is an operator's to fix: batches wait in the spool, the log says
    what to fix, and they are written once INSERT is granted again."""
    admin = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    _table(admin)
    user_url = _pg_role(admin) if dialect == "postgresql" else _my_user(admin)
    user = parse_db_url(user_url).user
    q = '"' if dialect == "postgresql" else "`"
    grantee = user if dialect == "postgresql" else f"'{user}'@'127.0.0.1'"
    on = f"{q}t{q}" if dialect == "postgresql" else \
        f"{q}{parse_db_url(admin).database}{q}.{q}t{q}"
    revoke = f"REVOKE INSERT ON {on} FROM {grantee}"
    grant = f"GRANT INSERT ON {on} TO {grantee}"
    try:
        st = Stats()
        w = Writer(user_url, st, batch_size=20, flush_interval=0.05, insert_retries=1,
                   insert_retry_timeout=1, background=True,
                   spool_dir=str(tmp_path / "spool"))
        rows = _rows(200, set())
        _sql(admin, revoke)
        for r in rows[:100]:
            w.add("t", "sip", r)
        time.sleep(1.5)
        held_while_revoked = count(admin, "t")
        _sql(admin, grant)
        for r in rows[100:]:
            w.add("t", "sip", r)
        deadline = time.monotonic() + 15
        while count(admin, "t") < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        w.close()
        assert held_while_revoked == 0
        assert st["db:spooled"] >= 1
        assert count(admin, "t") == 200 and st["stored:t"] == 200
        assert st["dropped:db-error"] == 0
        assert read_rows(admin, "t") == rows
    finally:
        if dialect == "postgresql":
            _drop_user(admin, f"DROP OWNED BY {user}")
            _drop_user(admin, f"DROP ROLE {user}")
        else:
            _drop_user(admin, f"DROP USER '{user}'@'127.0.0.1'")


@pytest.mark.parametrize("fixture", ["pg_url", "mysql_url", "sqlite_url"])
def test_an_altered_table_is_spooled_until_it_is_fixed(request, tmp_path, fixture, caplog):
    """A table altered elsewhere (a column dropped) is an operator error: spooled, a log
    line says what to fix, drained once the column is back."""
    url = request.getfixturevalue(fixture)
    _table(url)
    d = parse_db_url(url).dialect
    if d == "sqlite":  # SQLite drops a column only in a recent version: rename it
        _sql(url, 'ALTER TABLE "t" RENAME COLUMN "custom_field3" TO "x3"')
    else:
        q = "`" if d == "mysql" else '"'
        _sql(url, f"ALTER TABLE {q}t{q} DROP COLUMN {q}custom_field3{q}")
    st = Stats()
    w = Writer(url, st, batch_size=10, flush_interval=0, insert_retries=0,
               background=False, spool_dir=str(tmp_path / "spool"))
    rows = _rows(30, set())
    caplog.set_level("ERROR", logger="sipcaptool.store")
    for r in rows:
        w.add("t", "sip", r)
    w.flush()
    assert st["db:spooled"] == 3 and st["dropped:db-error"] == 0
    assert any("to fix:" in r.getMessage() for r in caplog.records)
    if d == "sqlite":
        _sql(url, 'ALTER TABLE "t" RENAME COLUMN "x3" TO "custom_field3"')
    elif d == "mysql":
        _sql(url, "ALTER TABLE `t` ADD COLUMN `custom_field3` VARCHAR(4096) NOT NULL DEFAULT ''")
    else:
        _sql(url, 'ALTER TABLE "t" ADD COLUMN "custom_field3" VARCHAR(4096) NOT NULL DEFAULT \'\'')
    w.close()  # drains the spool
    assert st["stored:t"] == 30 and count(url, "t") == 30
    assert read_rows(url, "t") == rows


# -------------------------------------------------------------- transient: lock wait timeout

@pytest.mark.parametrize("fixture", ["pg_url", "mysql_url"])
def test_a_lock_wait_timeout_is_transient(request, fixture):
    """A lock wait timeout (MariaDB 1205, PostgreSQL 55P03) is the server giving up a
    statement, not the rows' fault: transient, and the next try writes the batch."""
    url = request.getfixturevalue(fixture)
    _table(url)
    d = parse_db_url(url).dialect
    a = open_adapter(url)
    a.connect()
    with a.conn.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 1" if d == "mysql"
                    else "SET lock_timeout = '500ms'")
    a.conn.commit()
    holder = connect(url)
    cur = holder.cursor()
    if d == "mysql":
        cur.execute("LOCK TABLES `t` WRITE")
    else:
        cur.execute('LOCK TABLE "t" IN ACCESS EXCLUSIVE MODE')
    payload = a.format_batch("sip", _rows(3, set()))
    try:
        with pytest.raises(StoreError) as ei:
            a.write("t", "sip", payload, "lock-1", 3)
        assert ei.value.kind == "connection" and ei.value.transient
    finally:
        if d == "mysql":
            cur.execute("UNLOCK TABLES")
        holder.commit()
        holder.close()
    assert a.write("t", "sip", payload, "lock-1", 3) is True
    a.close()
    assert count(url, "t") == 3


def test_store_error_declares_its_kind():
    e = StoreError("x", kind="operator", hint="grant INSERT")
    assert e.transient and e.kind == "operator" and e.hint == "grant INSERT"
    assert not StoreError("y", kind="refused").transient
    assert StoreError("z").transient is False and StoreError("z").kind == ""
    with pytest.raises(ValueError):
        StoreError("w", kind="nonsense")


# ------------------------------------------------------------------- PostgreSQL encodings

def _pg_db(pg_url: str, encoding: str) -> str:
    name = "sipcaptool_test_" + encoding.lower() + "_" + uuid.uuid4().hex[:8]
    server = pg_url.rsplit("/", 1)[0]
    _sql(server + "/postgres", f"CREATE DATABASE {name} ENCODING '{encoding}' "
         "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    return server + "/" + name


def _drop_pg_db(url: str) -> None:
    server, name = url.rsplit("/", 1)
    _drop_user(server + "/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_latin1_database_stores_text_as_meant(pg_url):
    """No client encoding was set: in a LATIN1 database 'café' became 'cafÃ©'. Now it
    is stored as 'café', and what LATIN1 cannot hold is replaced by '?' and counted."""
    url = _pg_db(pg_url, "LATIN1")
    try:
        rows = []
        for i, ua in enumerate(["café", "naïve ünïcödé", "emoji 🙂 call", "plain"]):
            r = list(sip_row(i))
            r[UA] = ua
            rows.append(tuple(r))
        st, err = _store(url, rows)
        assert err is None and st["stored:t"] == 4
        conn = connect(url)
        conn.set_client_encoding("UTF8")
        cur = conn.cursor()
        cur.execute('SELECT user_agent, convert_to(user_agent, \'LATIN1\') FROM "t" ORDER BY id')
        got = cur.fetchall()
        conn.close()
        assert [g[0] for g in got] == ["café", "naïve ünïcödé", "emoji ? call", "plain"]
        assert bytes(got[0][1]) == "café".encode("latin-1")  # one byte for é
        # the sip_row text columns hold more characters LATIN1 lacks (中文, 🙂)
        assert st["db:unrepresentable"] >= 1
    finally:
        _drop_pg_db(url)


def test_sql_ascii_database_cuts_by_bytes_instead_of_refusing(pg_url):
    """An SQL_ASCII database measures text in bytes: a value cut to 255 characters of
    two bytes each was refused with its row. Now it is cut to 255 bytes (at a character
    boundary) and counted as truncated:<column>; the row is stored."""
    url = _pg_db(pg_url, "SQL_ASCII")
    try:
        r = list(sip_row(1))
        r[FROM_USER] = "é" * 255
        rows = [tuple(r), sip_row(2)]
        st, err = _store(url, rows)
        assert err is None and st["stored:t"] == 2 and st["dropped:db-error"] == 0
        assert st["truncated:from_user"] == 1
        conn = connect(url)
        cur = conn.cursor()
        cur.execute('SELECT convert_to(from_user, \'SQL_ASCII\') FROM "t" ORDER BY id')
        first = bytes(cur.fetchone()[0])
        conn.close()
        assert first == ("é" * 127).encode()  # 254 bytes: no half character
    finally:
        _drop_pg_db(url)


# --------------------------------------------------------------- batches bounded in bytes

def test_batches_are_bounded_in_bytes(sqlite_url):
    """2,000 rows of 200 KB messages used to make one 800 MB batch; batch_max_bytes
    (default 8 MB) writes a batch whenever its rows make that many bytes."""
    st = Stats()
    w = Writer(sqlite_url, st, batch_size=2000, batch_max_bytes=1 << 20, flush_interval=0,
               background=False)
    big = b"x" * (200 << 10)
    for i in range(20):
        w.add("t", "sip", sip_row(i, msg=big))
    assert st["stored:t"] >= 15  # written as it came, not held until 2,000 rows
    w.close()
    assert st["stored:t"] == 20 and count(sqlite_url, "t") == 20
    assert st["db:batches"] == 7  # 3 rows (1.2 MB) a batch, and the 2 left at close


def test_batch_max_bytes_is_a_setting():
    from sipcaptool.config import PARAMS, coerce
    assert PARAMS["batch_max_bytes"][1] == 8 << 20
    assert coerce("batch_max_bytes", "4M") == 4 << 20


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_formatting_copies_a_large_message_twice_at_most(dialect):
    """COPY / LOAD DATA text used to hold a large message about nine times over while
    a batch was formatted (hex, prefix, row join, batch join, encode); now twice: its
    hex and its place in the payload."""
    import tracemalloc

    from sipcaptool.store._text import TabFormatter, parse_tab_text
    f = TabFormatter(SIP_COLUMNS, dialect)
    rows = [sip_row(i, msg=bytes(range(256)) * 4096) for i in range(8)]  # 8 x 1 MB
    tracemalloc.start()
    try:
        out = f(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2.5 * len(out), (peak, len(out))
    msg_at = SIP_COLUMN_NAMES.index("msg")
    first = parse_tab_text(out)[0]
    prefix = b"\\x" if dialect == "postgresql" else b""
    assert first[msg_at] == prefix + rows[0][msg_at].hex().encode()


# ------------------------------------------------------- the classification, code by code

@pytest.mark.parametrize("code,kind", [
    (2003, "connection"), (2006, "connection"), (2013, "connection"), (1205, "connection"),
    (1213, "connection"), (1040, "connection"), (1053, "connection"), (1927, "connection"),
    (1142, "operator"), (1044, "operator"), (1045, "operator"), (1146, "operator"),
    (1054, "operator"), (1290, "operator"),
    (1644, "refused"), (4025, "refused"), (3819, "refused"), (1526, "refused"),
    (1062, "refused"), (1406, "refused"), (1452, "refused"),
    (4999, "refused"),  # unknown: never taken for an outage that spools for ever
])
def test_mysql_error_codes_mean_what_they_say(code, kind):
    import pymysql.err

    from sipcaptool.store.mysql import classify
    assert classify(pymysql.err.OperationalError(code, "x")) == kind
    assert classify(pymysql.err.InterfaceError(0, "")) == "connection"
    assert classify(pymysql.err.IntegrityError(0, "")) == "refused"


@pytest.mark.parametrize("sqlstate,kind", [
    ("08006", "connection"), ("40001", "connection"), ("40P01", "connection"),
    ("57P01", "connection"), ("57014", "connection"), ("53100", "connection"),
    ("55P03", "connection"), ("42501", "operator"), ("42P01", "operator"),
    ("42703", "operator"), ("25006", "operator"), ("23514", "refused"),
    ("23505", "refused"), ("22001", "refused"), ("22P05", "refused"), ("P0001", "refused"),
])
def test_postgresql_sqlstates_mean_what_they_say(sqlstate, kind):
    from sipcaptool.store.postgres import classify

    class FakePgError(Exception):  # psycopg2's errors carry the SQLSTATE as pgcode
        pgcode = sqlstate
    assert classify(FakePgError()) == kind
