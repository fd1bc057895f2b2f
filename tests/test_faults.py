"""Fault injection with real servers: ``sipcaptool hep`` receives a steady stream while
the database is stopped, killed or the spool's disk fills up; at the end every message
sent is compared (by Call-ID) with what is stored.

The tests start their own MariaDB and PostgreSQL instances (a data directory under
/tmp, their own port on 127.0.0.1), so the shared servers are never touched, and stop
and delete them at the end, also on failure. They need root (PostgreSQL runs as the
``postgres`` user; the full-disk case mounts a small tmpfs), ``mariadbd`` and the
PostgreSQL server binaries: missing pieces skip the tests -- or fail them when
``SIPCAPTOOL_REQUIRE_SERVICES=1`` (CI).

Each scenario's figures (sent, stored, duplicated, lost, dropped as counted) are
printed and, when ``SIPCAPTOOL_RELIABILITY_OUT`` names a file, appended to it as one
JSON line; ``tools/reliability_table.py`` turns them into docs/reliability.md.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from test_hep_collector import ROOT, Collector, message

from sipcaptool.encode.hep import encode_hep3

pytestmark = [pytest.mark.faults, pytest.mark.services]

REQUIRE = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
MARIADBD = shutil.which("mariadbd") or shutil.which("mysqld") or (
    "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
RATE = 400            # messages per second from the sender
RETRY = ["--insert-retries", "3", "--insert-retry-timeout", "2"]


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"fault tests need {what}")
    pytest.skip(f"fault tests need {what}")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait(cond, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- servers

class _PrivateServer:
    """What the two private servers share: reading back the Call-IDs stored."""

    def _conn(self, name: str):
        raise NotImplementedError

    def callids(self, name: str) -> dict[str, int]:
        c = self._conn(name)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT callid, COUNT(*) FROM sip_capture GROUP BY callid")
                return dict(cur.fetchall())
        finally:
            c.close()


class PrivateMariaDB(_PrivateServer):
    dialect = "mysql"

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="sipcaptool-faults-mdb-")
        self.data = os.path.join(self.base, "data")
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        r = subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={self.data}",
                            "--auth-root-authentication-method=normal", "--user=root",
                            "--skip-test-db"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {r.stderr[-2000:]}")

    def start(self) -> None:
        log = open(os.path.join(self.base, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             f"--socket={os.path.join(self.base, 'sock')}", "--bind-address=127.0.0.1",
             "--user=root", "--skip-log-bin", "--skip-name-resolve",
             "--innodb-buffer-pool-size=32M", "--local-infile=1",
             f"--pid-file={os.path.join(self.base, 'pid')}"],
            stdout=log, stderr=log)
        log.close()
        _wait(self._ping, 60, "the private MariaDB to start")

    def _ping(self) -> bool:
        import pymysql
        pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2).close()
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def create_db(self, name: str) -> str:
        import pymysql
        c = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        with c.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        c.close()
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def _conn(self, name: str):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", database=name)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


class PrivatePostgres(_PrivateServer):
    dialect = "postgresql"

    def __init__(self) -> None:
        self.bin = PG_BIN[-1]
        self.base = tempfile.mkdtemp(prefix="sipcaptool-faults-pg-")
        os.chmod(self.base, 0o755)
        shutil.chown(self.base, "postgres")
        self.data = os.path.join(self.base, "data")
        self.port = _free_port()
        r = self._pg(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                     "--auth=trust", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")

    def _pg(self, *cmd: str, timeout: float = 120):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        r = self._pg(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l",
                     os.path.join(self.base, "server.log"), "-w", "-t", "60", "-o",
                     f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout[-1000:]} {r.stderr[-1000:]}")
        _wait(self._ping, 60, "the private PostgreSQL to accept connections")

    def _conn(self, dbname: str = "postgres"):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname=dbname, connect_timeout=2)

    def _ping(self) -> bool:
        self._conn().close()
        return True

    def stop(self, mode: str = "fast") -> None:
        self._pg(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def kill9_backends(self) -> int:
        """SIGKILL the server processes serving sipcaptool: the server then restarts
        every backend and recovers (what the crash of a backend mid-batch does)."""
        c = self._conn()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                            "'sipcaptool'")
                pids = [r[0] for r in cur.fetchall()]
        finally:
            c.close()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def create_db(self, name: str) -> str:
        c = self._conn()
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        c.close()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
            pidfile = os.path.join(self.data, "postmaster.pid")
            if os.path.exists(pidfile):  # still there: the postmaster we started
                with open(pidfile) as f:
                    pid = int(f.readline().strip() or 0)
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb():
    if os.geteuid() != 0:
        _missing("root")
    if not MARIADBD or not INSTALL_DB:
        _missing("mariadbd and mariadb-install-db")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        _missing("pymysql")
    srv = PrivateMariaDB()
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(scope="module")
def postgres():
    if os.geteuid() != 0:
        _missing("root")
    if not PG_BIN or not shutil.which("runuser"):
        _missing("the PostgreSQL server binaries and runuser")
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        _missing("a postgres user")
    srv = PrivatePostgres()
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def server_up():
    """Servers a test stopped are started again at its end (the next test needs them)."""
    stopped: list = []
    yield stopped
    for srv in stopped:
        try:
            srv._ping()
        except Exception:  # noqa: BLE001
            srv.start()


# --------------------------------------------------------------------------- traffic

class Sender:
    """Sends HEP3 SIP messages with Call-IDs ``<tag>-<n>`` at RATE per second over UDP."""

    def __init__(self, port: int, tag: str, rate: int = RATE, limit: int = 60000) -> None:
        self.port, self.tag, self.rate, self.limit = port, tag, rate, limit
        self.sent = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.perf_counter()
        for i in range(self.limit):
            if self._stop.is_set():
                break
            s.sendto(encode_hep3(message(f"{self.tag}-{i}")), ("127.0.0.1", self.port))
            self.sent = i + 1
            ahead = t0 + (i + 1) / self.rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        s.close()

    def stop(self) -> int:
        self._stop.set()
        self._t.join(30)
        return self.sent


def _collector(collectors, url: str, spool: str, *extra: str) -> Collector:
    return collectors(url, "--spool-dir", spool, "--batch-size", "100", *RETRY, *extra,
                      tcp=False)


def _report(name: str, dialect: str, sent: int, found: dict[str, int], tag: str,
            counted_drop: int = 0, extra: dict | None = None) -> dict:
    mine = {k: v for k, v in found.items() if k.startswith(tag + "-")}
    duplicated = sum(v - 1 for v in mine.values())
    lost = sum(1 for i in range(sent) if f"{tag}-{i}" not in mine)
    stored = sent - lost             # of the messages counted as sent
    if len(mine) > stored:           # e.g. sent after SIGTERM and still read
        extra = dict(extra or {}, stored_besides=len(mine) - stored)
    row = {"fault": name, "database": dialect, "sent": sent, "stored": stored,
           "duplicated": duplicated, "lost": lost, "dropped_counted": counted_drop}
    row.update(extra or {})
    print("RELIABILITY", json.dumps(row))
    out = os.environ.get("SIPCAPTOOL_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def _all_stored(srv, db: str, tag: str, n: int):
    return lambda: sum(1 for k in srv.callids(db) if k.startswith(tag + "-")) >= n


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("which", ["mariadb", "postgres"])
def test_database_down_longer_than_the_retry_window(request, which, collectors, server_up,
                                                    tmp_path):
    """Stop the server for longer than insert_retry_timeout, start it again: what came
    in meanwhile waits in the spool and is written once the server is back."""
    srv = request.getfixturevalue(which)
    db = f"outage_{which}"
    url = srv.create_db(db)
    c = _collector(collectors, url, str(tmp_path / "spool"))
    snd = Sender(c.ports["udp"], "outage")
    time.sleep(2.0)
    server_up.append(srv)
    srv.stop()
    time.sleep(5.0)                       # > insert_retry_timeout (2 s)
    srv.start()
    time.sleep(2.0)
    sent = snd.stop()
    _wait(_all_stored(srv, db, "outage", sent), 40, "the spool to drain")
    rc, summary, err = c.stop()
    assert rc == 0, err
    row = _report("database stopped 5 s (> retry window 2 s), restarted", srv.dialect, sent,
                  srv.callids(db), "outage",
                  extra={"spooled_batches": summary["db"].get("spooled", 0)})
    assert summary["db"].get("spooled", 0) > 0, summary
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert summary.get("spool", {}).get("batches") == 0


@pytest.mark.parametrize("which", ["mariadb", "postgres"])
def test_database_killed_mid_batch(request, which, collectors, server_up, tmp_path):
    """kill -9 while batches are being written (MariaDB: the server; PostgreSQL: the
    backends serving the collector, which makes the server restart and recover)."""
    srv = request.getfixturevalue(which)
    db = f"kill9_{which}"
    url = srv.create_db(db)
    c = _collector(collectors, url, str(tmp_path / "spool"), "--batch-size", "400")
    snd = Sender(c.ports["udp"], "kill9", rate=1500)
    server_up.append(srv)
    for _ in range(3):
        time.sleep(1.5)
        if which == "mariadb":
            srv.kill9()
            time.sleep(1.0)
            srv.start()
        else:
            srv.kill9_backends()
    time.sleep(1.5)
    sent = snd.stop()
    _wait(_all_stored(srv, db, "kill9", sent), 40, "every message to be stored")
    time.sleep(1.0)  # let a duplicate, if any, show up
    rc, summary, err = c.stop()
    assert rc == 0, err
    row = _report("server killed (-9) mid-batch, 3 times", srv.dialect, sent,
                  srv.callids(db), "kill9",
                  extra={"already_written": summary["db"].get("already-written", 0)})
    assert row["lost"] == 0 and row["duplicated"] == 0, row


def test_spool_disk_full(postgres, collectors, server_up, tmp_path):
    """The spool lives on a 2 MB tmpfs and the database is down long enough to fill it:
    what does not fit is dropped, counted as dropped:spool-full; everything else is
    stored once when the database is back."""
    mnt = tmp_path / "spoolfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        _missing(f"a tmpfs mount ({r.stderr.strip()})")
    try:
        db = "spoolfull"
        url = postgres.create_db(db)
        c = _collector(collectors, url, str(mnt))
        snd = Sender(c.ports["udp"], "full", rate=600)
        time.sleep(1.0)
        server_up.append(postgres)
        postgres.stop()
        time.sleep(8.0)                    # ~4,800 rows, about 5 MB of COPY text
        postgres.start()
        time.sleep(1.5)
        sent = snd.stop()
        time.sleep(1.0)
        rc, summary, err = c.stop()
        dropped = summary["dropped"].get("spool-full", 0)
        found = postgres.callids(db)
        row = _report("spool disk (2 MB tmpfs) full during a 8 s outage", postgres.dialect,
                      sent, found, "full", counted_drop=dropped)
        assert dropped > 0, summary
        assert "SPOOL FULL" in err
        assert row["duplicated"] == 0, row
        assert row["lost"] == dropped, row
        assert summary["spool"]["batches"] == 0, summary
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sigterm_under_load_while_database_down_then_next_run_drains(
        mariadb, collectors, server_up, tmp_path):
    """SIGTERM while messages arrive and the database is down: everything received is
    spooled before exit; the next run writes it (and new traffic) once the server is up."""
    db = "sigterm"
    url = mariadb.create_db(db)
    spool = str(tmp_path / "spool")
    c = _collector(collectors, url, spool)
    snd = Sender(c.ports["udp"], "term", rate=800)
    time.sleep(1.5)
    server_up.append(mariadb)
    mariadb.stop()
    time.sleep(3.0)
    before = snd.sent                     # handed to the kernel before the signal
    c.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = snd.stop()
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["spool"]["batches"] > 0, summary
    st = subprocess.run([sys.executable, "-m", "sipcaptool", "spool", "status", "--spool-dir",
                         spool, "--json"], capture_output=True, text=True, cwd=ROOT)
    waiting = json.loads(st.stdout)
    assert waiting["rows"] == summary["spool"]["rows"], (waiting, summary)
    mariadb.start()
    c2 = _collector(collectors, url, spool)
    snd2 = Sender(c2.ports["udp"], "term2", rate=400)
    time.sleep(2.0)
    sent2 = snd2.stop()
    _wait(_all_stored(mariadb, db, "term2", sent2), 40, "the second run's messages")
    _wait(_all_stored(mariadb, db, "term", before), 40, "the spool of the first run")
    rc2, summary2, err2 = c2.stop()
    assert rc2 == 0, err2
    found = mariadb.callids(db)
    row = _report("SIGTERM under load with the database down (sent: before the signal); "
                  "the next run drains",
                  mariadb.dialect, before, found, "term",
                  extra={"sent_after_signal": sent - before})
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    # messages sent between the snapshot and the collector's stop may have been read too
    # (they were in the socket when it drained it); nothing else may have been stored
    late = sum(1 for i in range(before, sent) if f"term-{i}" in found)
    assert row["stored"] == before and row.get("stored_besides", 0) == late, (row, late)
    row2 = _report("new traffic while the previous run's spool drains", mariadb.dialect,
                   sent2, found, "term2")
    assert row2["lost"] == 0 and row2["duplicated"] == 0, row2


def test_collector_starts_with_the_database_down(postgres, collectors, server_up, tmp_path):
    """The database is down when the collector starts: it starts anyway, spools, and
    writes everything when the server comes up."""
    db = "startdown"
    url = postgres.create_db(db)
    server_up.append(postgres)
    postgres.stop()
    c = _collector(collectors, url, str(tmp_path / "spool"), "--db-insert-mode", "2")
    snd = Sender(c.ports["udp"], "start", rate=400)
    time.sleep(3.0)
    postgres.start()
    time.sleep(2.0)
    sent = snd.stop()
    _wait(_all_stored(postgres, db, "start", sent), 40, "the spool to drain")
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert "database unreachable at start" in err
    row = _report("database down when the collector starts (db_insert_mode 2)",
                  postgres.dialect, sent, postgres.callids(db), "start")
    assert row["lost"] == 0 and row["duplicated"] == 0, row


def _write_capture(path, n: int, start_us: int = 1_764_000_000_000_000) -> None:
    """A classic pcap of ``n`` realistic SIP messages, from ``start_us`` on."""
    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame

    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(n, start_us):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def _stored_once(srv, db: str, since_us: int = 0) -> int:
    """The rows of sip_capture in ``db`` (from ``since_us`` on), each asserted to be
    there once (every message of the captures has its own time)."""
    c = srv._conn(db)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT micro_ts) FROM sip_capture "
                        "WHERE micro_ts >= %s", (since_us,))
            total, distinct = cur.fetchone()
            assert total == distinct, (total, distinct)   # nothing twice
            return int(total)
    finally:
        c.close()


def test_replay_resumed_after_an_outage_stores_the_spooled_batches_once(
        postgres, server_up, tmp_path):
    """A replay during which the database stops: its batches wait in the spool and the
    replay ends with exit 4, its file remembered as not complete. Once the server is
    back, ``replay --resume`` (what the refusal of a plain replay says to run) stores the
    rest: the spooled batches are written by its writer process, and the resumed reading
    skips them as it skips the committed ones -- every message once."""
    url = postgres.create_db("replay_outage")
    n = 150_000
    pcap = tmp_path / "big.pcap"
    _write_capture(pcap, n)
    spool = str(tmp_path / "spool")

    def stored() -> int:
        return _stored_once(postgres, "replay_outage")

    args = ["--db", url, "--spool-dir", spool, "--insert-retries", "0", "-q"]
    p = subprocess.Popen([sys.executable, "-m", "sipcaptool", "replay", *args, str(pcap)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait(lambda: stored() >= 10_000, 60, "the first rows", step=0.05)
    server_up.append(postgres)
    postgres.stop("immediate")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 4 and "wait in the spool" in err, err
    postgres.start()
    before = stored()
    assert 0 < before < n
    r = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", *args, str(pcap)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--resume", "--json",
                        *args, str(pcap)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert stored() == n
    st = subprocess.run([sys.executable, "-m", "sipcaptool", "spool", "status", "--spool-dir",
                         spool, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert json.loads(st.stdout)["rows"] == 0


def test_replay_stops_before_a_file_it_cannot_remember(postgres, server_up, tmp_path):
    """Files whose starts are recorded one at a time (each larger than what a replay
    records ahead: here every file, so that small files show it). The database stops
    while the first is read: the rest of the first waits in the spool. The second is not
    read: its start cannot be recorded, and its batches would wait in the spool under a
    run no later replay knows (``--resume`` would store it again beside them, each of
    its messages twice once the spool is drained). The replay ends with exit 4 and says
    what to run; once the server is back, ``replay --resume`` stores the rest of the
    first and all of the second: every message once."""
    url = postgres.create_db("replay_unremembered")
    sizes = {"first.pcap": (150_000, 1_764_000_000_000_000),
             "second.pcap": (3_000, 1_765_000_000_000_000)}
    for name, (n, start) in sizes.items():
        _write_capture(tmp_path / name, n, start)
    total = sum(n for n, _ in sizes.values())
    spool = str(tmp_path / "spool")

    def stored(since_us: int = 0) -> int:
        return _stored_once(postgres, "replay_unremembered", since_us)

    # (every file recorded on its own, as files larger than START_AHEAD_BYTES are)
    run = [sys.executable, "-c", "import sys; from sipcaptool.replay import _Book; "
           "_Book.START_AHEAD_BYTES = 0; from sipcaptool.cli import main; "
           "sys.argv[0] = 'sipcaptool'; main()", "replay"]
    args = ["--db", url, "--spool-dir", spool, "--insert-retries", "0", "-q"]
    files = [str(tmp_path / name) for name in sizes]
    p = subprocess.Popen([*run, *args, *files], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait(lambda: stored() >= 10_000, 60, "the first rows", step=0.05)
    server_up.append(postgres)
    postgres.stop("immediate")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 4, err
    assert "second.pcap" in err and "not read" in err and "--resume" in err, err
    postgres.start()
    assert 0 < stored() < sizes["first.pcap"][0]
    assert stored(sizes["second.pcap"][1]) == 0
    r = subprocess.run([*run, "--resume", "--json", *args, *files], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert stored() == total
    st = subprocess.run([sys.executable, "-m", "sipcaptool", "spool", "status", "--spool-dir",
                         spool, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert json.loads(st.stdout)["rows"] == 0


def test_replay_stops_where_the_spool_is_full_and_resume_stores_the_rest(
        postgres, server_up, tmp_path):
    """The database stops during a replay and the spool fills: the batch the spool
    cannot take is lost, and with it every later batch of that file, even once the
    database is back -- so that what is stored of the file is always a beginning, which
    ``--resume`` continues exactly. The replay stops reading there, ends with exit 4 and
    says to run ``--resume``; that stores the rest: every message once. (Before, the
    replay read on, stored what came once the server was back, and recorded the file as
    complete: the batches lost in between were not stored by any later replay.)"""
    url = postgres.create_db("replay_spool_full")
    n = 150_000
    pcap = tmp_path / "big.pcap"
    _write_capture(pcap, n)
    spool = str(tmp_path / "spool")
    limit = 4 << 20         # (room for one batch)

    def stored() -> int:
        return _stored_once(postgres, "replay_spool_full")

    args = ["--db", url, "--spool-dir", spool, "--spool-max-bytes", str(limit),
            "--insert-retries", "0", "-q"]
    p = subprocess.Popen([sys.executable, "-m", "sipcaptool", "replay", *args, str(pcap)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")),
                              daemon=True)
    reader.start()
    _wait(lambda: stored() >= 10_000, 60, "the first rows", step=0.05)
    server_up.append(postgres)
    os.kill(p.pid, signal.SIGSTOP)      # (the capturing process waits while the server stops)
    postgres.stop("immediate")
    os.kill(p.pid, signal.SIGCONT)
    _wait(lambda: any("SPOOL FULL" in line for line in lines), 60, "the spool to be full",
          step=0.02)
    if p.poll() is None:                # the server back while the replay may still read
        os.kill(p.pid, signal.SIGSTOP)
        postgres.start()
        os.kill(p.pid, signal.SIGCONT)
    p.wait(timeout=300)
    reader.join(10)
    p.stderr.close()
    err = "".join(lines)
    assert p.returncode == 4 and "--resume" in err, err
    try:
        postgres._ping()
    except Exception:  # noqa: BLE001 - the replay stopped before the server was started
        postgres.start()
    assert 0 < stored() < n
    r = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--resume", "--json",
                        *args, str(pcap)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert stored() == n
