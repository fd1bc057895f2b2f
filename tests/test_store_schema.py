"""The SQL templates, db init, idempotence and MySQL partitioning."""

import datetime as dt

import pytest
from store_helpers import connect, count, sip_row, tables

from sipcaptool.record import AUX_COLUMN_NAMES, SIP_COLUMN_NAMES
from sipcaptool.store import open_adapter
from sipcaptool.store.schema import (
    DIALECTS,
    generate_template,
    init_db,
    partition_clause,
    schema_sql,
    sip_table_sql,
    template_path,
)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_committed_templates_match_record_layout(dialect):
    assert template_path(dialect).read_text() == generate_template(dialect), \
        "run: python -m sipcaptool.store.schema --write"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_template_substitution(dialect):
    stmts = sip_table_sql(dialect, "cap_20260102")
    text = "\n".join(stmts)
    assert "sip_capture" not in text
    assert "cap_20260102" in text
    if dialect != "mysql":
        assert "cap_20260102_callid_idx" in text
    assert all("IF NOT EXISTS" in s for s in stmts)


def test_mysql_row_size_and_types():
    text = generate_template("mysql")
    assert "`msg` LONGBLOB" in text and "`date` DATETIME" in text
    assert "utf8mb4" in text and "ENGINE=InnoDB" in text
    assert "PRIMARY KEY (`id`, `date`)" in text


def test_partition_clause():
    c = partition_clause(3, dt.date(2026, 1, 30))
    assert "PARTITION p_old VALUES LESS THAN (TO_DAYS('2026-01-30'))" in c
    assert "PARTITION p20260201 VALUES LESS THAN (TO_DAYS('2026-02-02'))" in c
    assert c.count("PARTITION p2026") == 3 and "pmax VALUES LESS THAN MAXVALUE" in c


def test_index_names_fit_the_identifier_limit():
    from sipcaptool.store.schema import index_name

    assert index_name("postgresql", "sip_capture", "_callid_idx") == "sip_capture_callid_idx"
    long = "s" * 63
    names = {index_name("postgresql", long, f"_{ix}_idx") for ix in
             ("ruri_user", "from_user", "to_user", "pid_user", "auth_user", "callid_aleg",
              "date", "callid")}
    assert len(names) == 8 and all(len(n) <= 63 for n in names)
    assert index_name("postgresql", long, "") == long
    assert index_name("sqlite", long, "_callid_idx") == long + "_callid_idx"
    text = "\n".join(sip_table_sql("postgresql", long))
    assert f'"{long}_callid_idx"' not in text and f'ON "{long}"' in text


def test_strftime_names_expanded_once():
    # 'a%%b' would expand to 'a%b' and again to 'aDec': refused; expanded names are literal
    from sipcaptool.errors import ConfigError

    with pytest.raises(ConfigError):
        schema_sql("sqlite", ["a%%b"], aux=False)
    stmts = schema_sql("sqlite", ["sip_%b"], aux=False, ts_us=0)
    assert '"sip_Jan"' in stmts[0]


def test_strftime_names_expanded_for_today():
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    stmts = schema_sql("sqlite", ["sip_%Y%m%d", "sip_capture"], aux=False)
    assert any(f'"sip_{today}"' in s for s in stmts)


def _columns(url, table):
    conn = connect(url)
    try:
        cur = conn.cursor()
        quoted = f"`{table}`" if url.startswith("mysql") else f'"{table}"'
        cur.execute(f"SELECT * FROM {quoted} WHERE 1=0")
        return tuple(d[0] for d in cur.description)
    finally:
        conn.close()


def test_init_creates_tables_and_is_idempotent(any_db_url):
    first = init_db(any_db_url, ["sip_capture", "sip_other"])
    second = init_db(any_db_url, ["sip_capture", "sip_other"])
    assert first == second and first
    assert {"sip_capture", "sip_other", "logs_capture", "report_capture",
            "rtcp_capture"} <= tables(any_db_url)
    assert _columns(any_db_url, "sip_capture") == ("id",) + SIP_COLUMN_NAMES
    assert _columns(any_db_url, "rtcp_capture") == ("id",) + AUX_COLUMN_NAMES


def test_print_only_does_not_connect():
    stmts = init_db("mysql://u:pw@127.0.0.1:1/x", ["sip_capture"], print_only=True)
    assert stmts[0].startswith("CREATE TABLE IF NOT EXISTS `sip_capture`")
    assert len(stmts) == 4  # sip_capture + three aux tables (indexes inline)


def _drop_db(url):
    from sipcaptool.store.url import parse_db_url
    u = parse_db_url(url)
    if u.dialect == "mysql":
        import pymysql
        c = pymysql.connect(host=u.host, port=u.port, user=u.user or "root", password=u.password)
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{u.database}`")
    else:
        import psycopg2
        c = psycopg2.connect(host=u.host, port=u.port, user=u.user or "postgres",
                             dbname="postgres")
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{u.database}"')
    c.close()


@pytest.mark.parametrize("fixture", ["mysql_url", "pg_url"])
def test_init_creates_missing_database(request, fixture):
    url = request.getfixturevalue(fixture)
    _drop_db(url)
    init_db(url, ["sip_capture"], aux=False)
    init_db(url, ["sip_capture"], aux=False)
    assert "sip_capture" in tables(url)


def test_mysql_partitioned_table(mysql_url):
    init_db(mysql_url, ["sip_part"], aux=False, partition_days=3)
    conn = connect(mysql_url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT partition_name FROM information_schema.partitions "
                    "WHERE table_schema = DATABASE() AND table_name = 'sip_part' "
                    "ORDER BY partition_ordinal_position")
        names = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    assert names[0] == "p_old" and names[-1] == "pmax" and len(names) == 5
    a = open_adapter(mysql_url)
    a.connect()
    try:
        a.write("sip_part", "sip", a.format_batch("sip", [sip_row(1, date="2001-01-01 00:00:00"),
                                                          sip_row(2, date="2099-01-01 00:00:00")]))
    finally:
        a.close()
    assert count(mysql_url, "sip_part") == 2


def test_partition_maintenance(mysql_url):
    from sipcaptool.store.schema import partition_maintenance_sql
    today = dt.datetime.now(dt.UTC).date()
    init_db(mysql_url, ["sip_part"], aux=False, partition_days=2)

    def parts():
        conn = connect(mysql_url)
        try:
            cur = conn.cursor()
            cur.execute("SELECT partition_name FROM information_schema.partitions "
                        "WHERE table_schema = DATABASE() AND table_name = 'sip_part' "
                        "ORDER BY partition_ordinal_position")
            return [r[0] for r in cur.fetchall()]
        finally:
            conn.close()

    a = open_adapter(mysql_url)
    a.connect()
    try:
        a.execute_ddl(partition_maintenance_sql("sip_part", parts(), days_ahead=4))
        want = [f"p{today + dt.timedelta(days=i):%Y%m%d}" for i in range(4)]
        assert parts() == ["p_old"] + want + ["pmax"]
        assert partition_maintenance_sql("sip_part", parts(), days_ahead=4) == []
        # ten days later, keeping 2 days: the old day partitions go, new ones come
        later = today + dt.timedelta(days=10)
        a.execute_ddl(partition_maintenance_sql("sip_part", parts(), days_ahead=1,
                                                keep_days=2, today=later))
        assert parts() == ["p_old", f"p{later:%Y%m%d}", "pmax"]
    finally:
        a.close()
