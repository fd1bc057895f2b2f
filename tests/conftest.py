"""Shared fixtures: fresh databases on the local MariaDB and PostgreSQL servers.

``mysql_url`` / ``pg_url`` create a database named ``sipcaptool_test_<random>`` and drop
it afterwards. When the server cannot be reached the test is skipped -- or fails, when
the environment has ``SIPCAPTOOL_REQUIRE_SERVICES=1`` (CI with the services running).
Servers: ``SIPCAPTOOL_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``) and
``SIPCAPTOOL_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``).

Tests are marked by what they use, automatically: ``services`` (a fixture that needs the
MariaDB or PostgreSQL server), ``netns`` (the ``netns`` fixture: root and network
namespaces), ``faults`` (private servers with injected faults, marked by their module).
``e2e`` marks tests that run the command, a collector or a real tool as processes. The
fast loop for a change in the library is therefore::

    python -m pytest -m "not services and not netns and not faults and not e2e"

Shared reference data (``tests/shared_data.py``) is found in one place too: a test
marked ``needs_shared(...)`` skips without it, and fails with
``SIPCAPTOOL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import uuid

import pytest
from netns import have_netns
from shared_data import missing as shared_missing

REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"
SERVICE_FIXTURES = frozenset({"mysql_url", "pg_url", "ch_url", "ch_cluster"})

MYSQL_SERVER = os.environ.get("SIPCAPTOOL_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
PG_SERVER = os.environ.get("SIPCAPTOOL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def _skip_or_fail(msg: str) -> None:
    if REQUIRED:
        pytest.fail(msg)
    pytest.skip(msg)


def _unavailable(what: str, err: BaseException) -> None:
    _skip_or_fail(f"{what} not reachable: {str(err).splitlines()[0] if str(err) else err!r}")


def _uses_services(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if names & SERVICE_FIXTURES:
        return True
    callspec = getattr(item, "callspec", None)
    return "any_db_url" in names and callspec is not None \
        and callspec.params.get("any_db_url") != "sqlite"


# Modules whose tests drive the sipcaptool command, a collector or a real tool (tshark,
# sngrep, Chromium) as processes: end to end, seconds each. A test that uses the
# ``collectors`` fixture is end to end wherever it is.
E2E_MODULES = frozenset({
    "test_clickhouse_e2e", "test_control", "test_corpus_replay", "test_db_commands",
    "test_dedup_e2e", "test_error_messages", "test_export", "test_flow",
    "test_flow_browser", "test_hep_collector", "test_hep_conformance",
    "test_hep_fanout", "test_hep_tls", "test_hep_types", "test_hostile",
    "test_hostile_collector", "test_hostile_control", "test_hostile_tables",
    "test_install", "test_pcapng_e2e", "test_replay_bookkeeping", "test_replay_e2e",
    "test_sdnotify", "test_search", "test_settings_e2e", "test_store_refusals",
    "test_url_forms",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it uses, so ``-m`` can select the fast ones."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if _uses_services(item):
            item.add_marker(pytest.mark.services)
        if "netns" in names:
            item.add_marker(pytest.mark.netns)
        module = getattr(item, "module", None)
        if "collectors" in names or (module is not None
                                     and module.__name__.rsplit(".", 1)[-1] in E2E_MODULES):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("shared_data"):
        path = shared_missing(tuple(mark.args))
        if path is not None:
            _skip_or_fail(f"shared reference data not found: {path} "
                          "(set SIPCAPTOOL_SHARED to its directory)")


@pytest.fixture(scope="module")
def netns():
    """Root and network namespaces: skip without them (fail in CI)."""
    ok, why = have_netns()
    if not ok:
        _skip_or_fail(f"live capture tests need network namespaces: {why}")


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


def _need_clickhouse() -> None:
    """Skip, or fail when services are required, without the server or the driver."""
    from clickhouse_server import clickhouse_binary
    if clickhouse_binary() is None:
        _skip_or_fail("clickhouse-server is not installed (apt-get install clickhouse-server)")
    try:
        import clickhouse_driver  # noqa: F401
    except ImportError as e:
        _unavailable("clickhouse-driver (pip install '.[clickhouse]')", e)


def _clickhouse_group(n: int, what: str):
    """Start ``n`` private ClickHouse servers (tests/clickhouse_server.py), yield the
    group, stop them by their PIDs; skip, or fail when services are required, when the
    server or the driver is missing or ``what`` does not start."""
    from clickhouse_server import ClickHouseGroup
    _need_clickhouse()
    group = ClickHouseGroup(n)
    try:
        group.start()
    except RuntimeError as e:
        _unavailable(what, e)
    yield group
    group.stop()


@pytest.fixture
def ch_servers(tmp_path):
    """``ch_servers(n, start=True)``: ``n`` private ClickHouse servers of this test's own
    (in its temporary directory), for a test that stops, starts or reconfigures them;
    ``start=False`` leaves starting to the test (``group.start()``, after changing the
    servers' configuration). Stopped by their PIDs at the end. Missing server or driver:
    as for the session's servers (skip, or fail when services are required)."""
    from clickhouse_server import ClickHouseGroup
    groups = []

    def make(n: int, start: bool = True):
        _need_clickhouse()
        group = ClickHouseGroup(n, base=str(tmp_path))
        groups.append(group)
        if start:
            try:
                group.start()
            except RuntimeError as e:
                _unavailable("private clickhouse-servers", e)
        return group
    yield make
    for g in groups:
        g.stop()


@pytest.fixture(scope="session")
def ch_single():
    """A private ClickHouse server (Debian's clickhouse-server, own config, data directory
    and ports; tests/clickhouse_server.py) for the whole session, stopped by its PID."""
    yield from _clickhouse_group(1, "a private clickhouse-server")


@pytest.fixture(scope="session")
def ch_pair():
    """Two private ClickHouse servers, each listing both as the shards of cluster
    ``sipcap``, for the whole session."""
    yield from _clickhouse_group(2, "private clickhouse-servers")


@pytest.fixture
def ch_url(ch_single):
    """URL of a fresh database on the private ClickHouse server (dropped afterwards)."""
    name = _test_db_name()
    yield f"{ch_single.servers[0].url}/{name}"
    _ch_drop(ch_single, name)


@pytest.fixture
def ch_cluster(ch_pair):
    """``(url, group)``: a fresh database on the two-shard cluster (``?cluster=sipcap``
    in the URL; the group's ``servers`` can be stopped and started)."""
    name = _test_db_name()
    yield f"{ch_pair.servers[0].url}/{name}?cluster=sipcap", ch_pair
    _ch_drop(ch_pair, name)


def _ch_drop(group, name: str) -> None:
    from clickhouse_driver import Client
    for s in group.servers:
        if s.proc is None:
            continue
        try:
            c = Client("127.0.0.1", port=s.tcp_port, connect_timeout=3)
            c.execute(f"DROP DATABASE IF EXISTS `{name}`")
            c.disconnect()
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def any_db_url(request):
    """Each database in turn (server databases skip when the server is down)."""
    name = {"sqlite": "sqlite_url", "mysql": "mysql_url", "postgresql": "pg_url"}[request.param]
    return request.getfixturevalue(name)


@pytest.fixture(params=["sqlite", "mysql", "postgresql", "clickhouse"])
def book_url(request):
    """Each database that remembers replays, in turn (ClickHouse's created by db init, as
    a user makes it)."""
    if request.param == "clickhouse":
        import subprocess
        import sys
        from pathlib import Path
        url = request.getfixturevalue("ch_url")
        root = Path(__file__).resolve().parents[1]
        r = subprocess.run([sys.executable, "-m", "sipcaptool", "db", "init", "--db", url],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=str(root)))
        assert r.returncode == 0, r.stderr
        return url
    name = {"sqlite": "sqlite_url", "mysql": "mysql_url", "postgresql": "pg_url"}[request.param]
    return request.getfixturevalue(name)


@pytest.fixture
def collectors():
    """Start ``sipcaptool hep`` processes (``test_hep_collector.Collector``); those still
    running at the end of the test are killed."""
    from test_hep_collector import Collector

    started: list[Collector] = []

    def start(*args, **kw) -> Collector:
        c = Collector(*args, **kw)
        started.append(c)
        return c
    yield start
    for c in started:
        c.kill()
