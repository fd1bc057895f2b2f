"""db_url as users write them: libpq's Unix socket forms, MySQL's unix_socket,
mariadb://, the query options that work, and the ones refused by name. Each form is
used for real: `sipcaptool db init` then `sipcaptool replay` into the running servers,
and the rows counted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipcaptool.errors import ConfigError
from sipcaptool.store.url import QUERY_OPTIONS, parse_db_url

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "call.pcap"
PG_SOCKET_DIR = "/run/postgresql"
MYSQL_SOCKET = "/run/mysqld/mysqld.sock"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def count_rows(url: str) -> int:
    from sipcaptool.store import open_adapter

    a = open_adapter(parse_db_url(url))
    a.connect_readonly()
    try:
        return int(a.select("SELECT COUNT(*) FROM sip_capture")[0][0])
    finally:
        a.close()


def example_messages() -> int:
    r = run("replay", "--db", "none", "--json", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    import json
    return int(json.loads(r.stdout)["messages"])


def init_and_replay(url: str) -> None:
    r = run("db", "init", "--db", url)
    assert r.returncode == 0, r.stderr
    r = run("replay", "-q", "--db", url, str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert count_rows(url) == example_messages()


def _socket(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no server socket at {path}")


# -- parsing -------------------------------------------------------------------------------
def test_libpq_socket_forms_parse():
    u = parse_db_url("postgresql:///homer")
    assert (u.host, u.port, u.database, u.is_socket) == ("", 5432, "homer", True)
    assert u.redacted() == "postgresql:///homer"
    u = parse_db_url("postgresql://capture:s3cret@/homer?host=/run/postgresql&sslmode=disable")
    assert (u.host, u.user, u.password) == ("/run/postgresql", "capture", "s3cret")
    assert u.options == (("sslmode", "disable"),)
    assert u.redacted() == "postgresql://capture:***@/homer?host=/run/postgresql&sslmode=disable"
    assert "s3cret" not in repr(u)
    # the redacted form parses back to the same place
    assert parse_db_url(u.redacted()).host == "/run/postgresql"
    u = parse_db_url("postgres://@:5433/homer?host=/tmp")
    assert (u.host, u.port) == ("/tmp", 5433)
    assert u.redacted() == "postgresql://:5433/homer?host=/tmp"


def test_mysql_socket_and_mariadb_scheme_parse():
    u = parse_db_url("mariadb://root@/homer?unix_socket=/run/mysqld/mysqld.sock")
    assert (u.dialect, u.host, u.database, u.is_socket) == ("mysql", "", "homer", True)
    assert u.option("unix_socket") == "/run/mysqld/mysqld.sock"
    assert u.redacted() == "mysql://root@/homer?unix_socket=/run/mysqld/mysqld.sock"
    u = parse_db_url("mariadb://root@db1/homer?charset=utf8mb4&connect_timeout=3")
    assert (u.host, u.port, u.option("connect_timeout")) == ("db1", 3306, "3")


@pytest.mark.parametrize("url, named", [
    ("postgresql://h/db?sslmod=require", "'sslmod'"),
    ("postgresql://h/db?client_encoding=LATIN1", "'client_encoding'"),
    ("mysql://h/db?unix_sock=/x", "'unix_sock'"),
    ("mysql://h/db?charset=latin1", "charset='latin1'"),
    ("mysql://h/db?connect_timeout=soon", "connect_timeout='soon'"),
    ("postgresql://h/db?sslmode=maybe", "sslmode='maybe'"),
    ("postgresql://h/db?sslmode=require&sslmode=disable", "'sslmode' given twice"),
    ("postgresql://h/db?host=/run/postgresql", "host is given twice"),
    ("sqlite:///x.db?mode=ro", "'mode'"),
    ("mysql://root@/db", "unix_socket"),
])
def test_refused_by_name(url, named):
    with pytest.raises(ConfigError) as ei:
        parse_db_url(url)
    assert named in str(ei.value)


def test_every_documented_option_is_accepted():
    for dialect, opts in QUERY_OPTIONS.items():
        if dialect not in ("postgresql", "mysql"):
            continue
        for name in opts:
            value = {"sslmode": "require", "charset": "utf8mb4", "gssencmode": "prefer"}.get(
                name, "1" if name in ("connect_timeout", "read_timeout", "write_timeout")
                or name.startswith("keepalives") else "x")
            host = "" if name == "host" else "h"
            u = parse_db_url(f"{dialect}://{host}/db?{name}={value}")
            assert (u.option(name) == value) or (name == "host" and u.host == value)


# -- against the running servers -----------------------------------------------------------
def test_postgresql_default_socket(pg_url):
    _socket(PG_SOCKET_DIR)
    init_and_replay(f"postgresql:///{parse_db_url(pg_url).database}")


def test_postgresql_socket_directory_with_options(pg_url):
    _socket(PG_SOCKET_DIR)
    db = parse_db_url(pg_url).database
    init_and_replay(f"postgresql://postgres@/{db}?host={PG_SOCKET_DIR}"
                    "&sslmode=disable&connect_timeout=5&application_name=capture")


def test_postgresql_tcp_with_sslmode_prefer(pg_url):
    init_and_replay(pg_url + "?sslmode=prefer&connect_timeout=5&keepalives=1")


def test_mysql_unix_socket(mysql_url):
    _socket(MYSQL_SOCKET)
    db = parse_db_url(mysql_url).database
    init_and_replay(f"mysql://root@/{db}?unix_socket={MYSQL_SOCKET}")


def test_mariadb_scheme_with_options(mysql_url):
    u = parse_db_url(mysql_url)
    init_and_replay(f"mariadb://root@{u.host}:{u.port}/{u.database}"
                    "?charset=utf8mb4&connect_timeout=5&read_timeout=30&sslmode=disable")


def test_unknown_option_is_refused_by_the_command(tmp_path):
    r = run("replay", "--db", "postgresql:///homer?sslmod=require", str(EXAMPLE))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "unknown option 'sslmod'" in r.stderr
