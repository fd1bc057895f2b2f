"""Shared fixtures: fresh databases on the local MariaDB and PostgreSQL servers.

``mysql_url`` / ``pg_url`` create a database named ``sipcaptool_test_<random>`` and drop
it afterwards. When the server cannot be reached the test is skipped -- or fails, when
the environment has ``SIPCAPTOOL_REQUIRE_SERVICES=1`` (CI with the services running).
Servers: ``SIPCAPTOOL_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``) and
``SIPCAPTOOL_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``).
"""

from __future__ import annotations

import os
import uuid

import pytest

MYSQL_SERVER = os.environ.get("SIPCAPTOOL_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
PG_SERVER = os.environ.get("SIPCAPTOOL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def _unavailable(what: str, err: BaseException) -> None:
    msg = f"{what} not reachable: {str(err).splitlines()[0] if str(err) else err!r}"
    if os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _test_db_name() -> str:
    return f"sipcaptool_test_{uuid.uuid4().hex[:12]}"


def _server(url: str):
    from sipcaptool.store.url import parse_db_url
    # parse_db_url wants a database name; the server URL has none
    return parse_db_url(url.rstrip("/") + "/x")


@pytest.fixture
def mysql_url(request):
    """URL of a fresh, empty MySQL/MariaDB database (dropped after the test)."""
    try:
        import pymysql
    except ImportError as e:  # pragma: no cover
        _unavailable("pymysql", e)
    srv = _server(MYSQL_SERVER)
    kw = dict(host=srv.host, port=srv.port, user=srv.user or "root", password=srv.password,
              connect_timeout=3, autocommit=True)
    try:
        conn = pymysql.connect(**kw)
    except Exception as e:  # noqa: BLE001
        _unavailable(f"MySQL/MariaDB at {srv.host}:{srv.port}", e)
    name = _test_db_name()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    conn.close()
    yield MYSQL_SERVER.rstrip("/") + "/" + name
    try:
        conn = pymysql.connect(**kw)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass


@pytest.fixture
def pg_url(request):
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    try:
        import psycopg2
    except ImportError as e:  # pragma: no cover
        _unavailable("psycopg2", e)
    srv = _server(PG_SERVER)
    kw = dict(host=srv.host, port=srv.port, user=srv.user or "postgres", dbname="postgres",
              connect_timeout=3)
    if srv.password:
        kw["password"] = srv.password
    try:
        conn = psycopg2.connect(**kw)
    except Exception as e:  # noqa: BLE001
        _unavailable(f"PostgreSQL at {srv.host}:{srv.port}", e)
    conn.autocommit = True
    name = _test_db_name()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    yield PG_SERVER.rstrip("/") + "/" + name
    try:
        conn = psycopg2.connect(**kw)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass


@pytest.fixture
def sqlite_url(tmp_path):
    """URL of a new SQLite file in the test's temporary directory."""
    return "sqlite:///" + str(tmp_path / "capture.db")


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def any_db_url(request):
    """Each database in turn (server databases skip when the server is down)."""
    name = {"sqlite": "sqlite_url", "mysql": "mysql_url", "postgresql": "pg_url"}[request.param]
    return request.getfixturevalue(name)
