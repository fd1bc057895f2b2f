"""Issue 17, section 4: local users cannot steer the collector.

Attacks by a second local user on the control socket (a runtime directory made first,
a socket planted in it, a socket answered by another user's process), and floods of
the control socket and the metrics port (idle connections, slowloris, many clients at
once). Each attack is reproduced as an attacker would run it, with real processes:
the victim and the attacker are forked from the test (as root) and switched to their
own uids with setuid, so the kernel's checks are the real ones; the collector and
``ctl`` are the real command lines.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from sipcaptool.control import ControlServer, MetricsServer, send_command
from sipcaptool.stats import Stats

REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"
ATTACKER = 65534  # nobody


def _need_root() -> None:
    if os.geteuid() != 0:
        if REQUIRED:
            pytest.fail("these tests switch between local users: run them as root")
        pytest.skip("needs root (to act as two local users)")


def _free_uid() -> int:
    """A uid no account and no /tmp/sipcaptool-<uid> uses: the victim."""
    for uid in range(52000 + os.getpid() % 5000, 60000):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        if not os.path.lexists(f"/tmp/sipcaptool-{uid}"):
            return uid
    raise AssertionError("no free uid")


class Flag:
    def __init__(self, value: int = 1) -> None:
        self.value = value


# -- running code as another user ---------------------------------------------------------
def _preload() -> None:
    """Import now what the command lines import on use: a user other than root cannot
    read this interpreter's library (it lives under /root here)."""
    import importlib
    import pkgutil

    import sipcaptool

    for mod in pkgutil.walk_packages(sipcaptool.__path__, "sipcaptool."):
        if mod.name.startswith("sipcaptool.testing"):
            continue
        try:
            importlib.import_module(mod.name)
        except ImportError:
            pass
    for name in ("multiprocessing.popen_fork", "multiprocessing.connection",
                 "multiprocessing.synchronize", "multiprocessing.queues", "sqlite3",
                 "pwd", "grp", "json", "gzip", "zlib", "concurrent.futures", "traceback",
                 "http.client", "email.parser", "click.testing"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def as_user(uid: int, fn, *, env: dict[str, str] | None = None, wait: bool = True):
    """Run ``fn()`` in a forked child switched to ``uid`` (gid = uid, no groups).

    ``fn`` returns the exit status (or raises SystemExit, as the CLI does). With
    ``wait``: returns (status, stdout, stderr); else (pid, stdout file, stderr file).
    """
    out = tempfile.NamedTemporaryFile(prefix="hc-out-", delete=False)
    err = tempfile.NamedTemporaryFile(prefix="hc-err-", delete=False)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            try:
                code = fn() or 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child reports it and exits 1
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    out.close()
    err.close()
    if not wait:
        return pid, out.name, err.name
    return _reap(pid, out.name, err.name)


def _reap(pid: int, out: str, err: str, timeout: float = 60) -> tuple[int, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not end")
        time.sleep(0.05)
    texts = []
    for name in (out, err):
        with open(name) as f:
            texts.append(f.read())
        os.unlink(name)
    return os.waitstatus_to_exitcode(status), texts[0], texts[1]


def cli(*argv: str):
    def run():
        from sipcaptool.cli import main

        main(list(argv))
    return run


@pytest.fixture
def victim():
    """A uid of its own with a private working directory; /tmp/sipcaptool-<uid> cleaned."""
    _need_root()
    _preload()
    uid = _free_uid()
    home = tempfile.mkdtemp(prefix="hc-home-")
    os.chmod(home, 0o700)
    os.chown(home, uid, uid)
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    yield uid, home, env
    shutil.rmtree(home, ignore_errors=True)
    runtime = f"/tmp/sipcaptool-{uid}"
    if os.path.islink(runtime):
        os.unlink(runtime)
    else:
        shutil.rmtree(runtime, ignore_errors=True)


def _hep_args(home: str, *extra: str) -> list[str]:
    return ["hep", "--db", f"sqlite:///{home}/c.db", "--listen", "udp:127.0.0.1:0",
            "--spool-dir", "none", "--rcvbuf", "1M", *extra]


def _fake_server(path: str, answers_log: str, ready: threading.Event | None = None):
    """The attacker's process: answers every line with 'Disabled' and notes each line."""
    def run():
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        os.chmod(path, 0o777)
        s.listen(16)
        while True:
            c, _ = s.accept()
            c.settimeout(2)
            try:
                data = c.recv(4096)
                with open(answers_log, "a") as f:
                    f.write(data.decode("utf-8", "replace"))
                c.sendall(b"Disabled\n")
            except OSError:
                pass
            c.close()
    return run


def _wait_for(pred, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the runtime directory ------------------------------------------------------------------
def _attacker_dir_0777(runtime: str, victim_uid: int) -> None:
    st, _o, e = as_user(ATTACKER, lambda: (os.mkdir(runtime), os.chmod(runtime, 0o777)) and 0)
    assert st == 0, e


def _attacker_dir_0700(runtime: str, victim_uid: int) -> None:
    st, _o, e = as_user(ATTACKER, lambda: os.mkdir(runtime, 0o700) and 0)
    assert st == 0, e


def _symlink_to_attacker_dir(runtime: str, victim_uid: int) -> None:
    target = tempfile.mkdtemp(prefix="hc-evil-")
    os.chown(target, victim_uid, victim_uid)  # even a directory the victim owns
    os.chmod(target, 0o700)
    st, _o, e = as_user(ATTACKER, lambda: os.symlink(target, runtime) and 0)
    assert st == 0, e


def _own_dir_world_writable(runtime: str, victim_uid: int) -> None:
    os.mkdir(runtime)
    os.chown(runtime, victim_uid, victim_uid)
    os.chmod(runtime, 0o777)


@pytest.mark.parametrize("prepare,why", [
    (_attacker_dir_0777, "owned by uid 65534"),
    (_attacker_dir_0700, "owned by uid 65534"),
    (_symlink_to_attacker_dir, "symbolic link"),
    (_own_dir_world_writable, "writable by others (mode 0777)"),
], ids=["other-user-0777", "other-user-0700", "symlink", "own-but-0777"])
def test_collector_refuses_a_runtime_directory_another_user_could_use(victim, prepare, why):
    """Another local user made /tmp/sipcaptool-<uid> first (or could write it): the
    collector used it as is, so that user could move its socket away and answer ctl in
    its place. Now it refuses to start, with one line and exit 5."""
    uid, home, env = victim
    runtime = f"/tmp/sipcaptool-{uid}"
    prepare(runtime, uid)
    t0 = time.monotonic()
    code, out, err = as_user(uid, cli(*_hep_args(home, "--duration", "3")), env=env)
    assert code == 5, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sipcaptool: error: control socket directory {runtime}")
    assert why in lines[0] and "--control PATH" in lines[0]
    assert time.monotonic() - t0 < 3  # refused at start, did not run its --duration
    assert not os.path.exists(os.path.join(runtime, "hep.sock"))


def test_collector_makes_its_runtime_directory_0700_and_ctl_uses_it(victim):
    """No directory yet: the collector makes it 0700, its own; ctl of the same user
    talks to it, and so does root; another user's ctl gets no answer."""
    uid, home, env = victim
    runtime = f"/tmp/sipcaptool-{uid}"
    sock = os.path.join(runtime, "hep.sock")
    pid, out, err = as_user(uid, cli(*_hep_args(home, "--duration", "30")), env=env, wait=False)
    try:
        _wait_for(lambda: os.path.exists(sock), "the control socket")
        st = os.lstat(runtime)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        code, o, e = as_user(uid, cli("ctl", "status", "check"), env=env)
        assert (code, o) == (0, "Enabled\n"), e
        code, o, e = as_user(uid, cli("ctl", "status", "off"), env=env)
        assert (code, o) == (0, "Disabled\n"), e
        # root talks to any user's collector (as to /run/sipcaptool of a service user)
        code, o, e = as_user(0, cli("ctl", "--control", sock, "status", "on"), env=env)
        assert (code, o) == (0, "Enabled\n"), e
        # another user cannot reach it: ctl refuses a directory of someone else's, and
        # the socket is 0600 in a 0700 directory anyway
        code, o, e = as_user(ATTACKER, cli("ctl", "--control", sock, "status", "off"),
                             env=env)
        assert code == 2 and o == "" and f"owned by uid {uid}" in e

        def direct():
            try:
                send_command(sock, "status off", timeout=2)
            except PermissionError:
                return 13
            return 0
        assert as_user(ATTACKER, direct)[0] == 13
        assert send_command(sock, "status check") == "Enabled"
    finally:
        os.kill(pid, signal.SIGTERM)
        code, o, e = _reap(pid, out, err)
    assert code == 0, e


def test_ctl_refuses_a_socket_planted_in_the_default_directory(victim):
    """The attack of the issue: the attacker made /tmp/sipcaptool-<uid> 0777 and put
    its own socket there. The victim's 'ctl status off' was answered 'Disabled' by the
    attacker while the real collector went on capturing. Now ctl refuses before it
    sends a word."""
    uid, home, env = victim
    runtime = f"/tmp/sipcaptool-{uid}"
    _attacker_dir_0777(runtime, uid)
    heard = os.path.join(runtime, "heard.txt")
    pid, out, err = as_user(ATTACKER, _fake_server(os.path.join(runtime, "hep.sock"), heard),
                            wait=False)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(runtime, "hep.sock")), "the fake socket")
        code, o, e = as_user(uid, cli("ctl", "status", "off"), env=env)
        assert code == 2 and o == "", (o, e)
        lines = e.strip().splitlines()
        assert len(lines) == 1 and runtime in lines[0] and "owned by uid 65534" in lines[0]
        assert not os.path.exists(heard)  # the attacker heard nothing
    finally:
        os.kill(pid, signal.SIGKILL)
        _reap(pid, out, err)


def test_ctl_refuses_a_socket_of_another_user_given_explicitly(victim):
    """--control naming a socket another user made: in /tmp itself (sticky, so the
    directory is fine), and in a directory of that user's."""
    uid, home, env = victim
    d = tempfile.mkdtemp(prefix="hc-att-")
    os.chown(d, ATTACKER, ATTACKER)
    os.chmod(d, 0o755)
    heard = os.path.join(d, "heard.txt")
    in_tmp = tempfile.mktemp(prefix="hc-att-", suffix=".sock", dir="/tmp")
    in_dir = os.path.join(d, "hep.sock")
    servers = [as_user(ATTACKER, _fake_server(p, heard), wait=False) for p in (in_tmp, in_dir)]
    try:
        _wait_for(lambda: os.path.exists(in_tmp) and os.path.exists(in_dir), "the fake sockets")
        code, o, e = as_user(uid, cli("ctl", "--control", in_tmp, "status", "off"), env=env)
        assert code == 2 and o == "" and len(e.splitlines()) == 1
        assert f"control socket {in_tmp} is owned by uid 65534" in e and "refusing to talk" in e
        code, o, e = as_user(uid, cli("ctl", "--control", in_dir, "status", "off"), env=env)
        assert code == 2 and o == "" and len(e.splitlines()) == 1
        assert f"its directory {d} is owned by uid 65534" in e
        assert not os.path.exists(heard)  # the attacker heard nothing
    finally:
        for pid, out, err in servers:
            os.kill(pid, signal.SIGKILL)
            _reap(pid, out, err)
        shutil.rmtree(d, ignore_errors=True)
        os.unlink(in_tmp)


def test_ctl_refuses_a_process_of_another_user_behind_a_socket_it_owns(victim):
    """The socket file is the victim's (made so by root here, to leave no other way),
    but the process answering on it is the attacker's: SO_PEERCRED tells, and ctl
    sends nothing. No check of the file alone can see this."""
    uid, home, env = victim
    d = tempfile.mkdtemp(prefix="hc-peer-")
    os.chmod(d, 0o1777)  # root's, sticky, like /tmp: the attacker may make a socket here
    path = os.path.join(d, "hep.sock")
    heard = os.path.join(d, "heard.txt")
    open(heard, "w").close()
    os.chown(heard, ATTACKER, ATTACKER)
    pid, out, err = as_user(ATTACKER, _fake_server(path, heard), wait=False)
    try:
        _wait_for(lambda: os.path.exists(path), "the fake socket")
        os.chown(path, uid, uid)
        code, o, e = as_user(uid, cli("ctl", "--control", path, "status", "off"), env=env)
        assert code == 2 and o == ""
        assert "uid 65534" in e and "refusing to talk" in e and len(e.splitlines()) == 1
        with open(heard) as f:
            assert f.read() == ""  # connected, but not a word was sent
    finally:
        os.kill(pid, signal.SIGKILL)
        _reap(pid, out, err)
        shutil.rmtree(d, ignore_errors=True)


def test_server_answers_no_client_of_another_user(tmp_path):
    """A socket made reachable by others (a chmod by mistake): the collector still
    answers only its own user and root; the others are closed and counted."""
    _need_root()
    _preload()
    d = tempfile.mkdtemp(prefix="hc-srv-")
    os.chmod(d, 0o755)
    flag = Flag(1)
    try:
        with ControlServer(os.path.join(d, "c.sock"), flag, Stats) as srv:
            os.chmod(srv.path, 0o666)

            def attack():
                try:
                    return 0 if send_command(srv.path, "status off", timeout=1) == "" else 3
                except OSError:
                    return 4
            code, _o, e = as_user(ATTACKER, attack)
            assert code == 4, e  # closed without an answer, every time it tried
            assert flag.value == 1
            doc = json.loads(send_command(srv.path, "stats"))
            assert set(doc["control"]) == {"peer-uid"} and doc["control"]["peer-uid"] >= 1
            text = send_command(srv.path, "stats text")
            assert "control connections closed:" in text and "peer-uid:" in text
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- floods -------------------------------------------------------------------------------
def _tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _serve_in_child(make):
    """Start a server (``make()``) in a forked child; returns (pid, path or host:port)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            srv = make()
            info = srv.path if isinstance(srv, ControlServer) else "{}:{}".format(*srv.address)
            os.write(w, info.encode() + b"\n")
            while True:
                time.sleep(1)
        finally:
            os._exit(1)
    os.close(w)
    info = os.read(r, 300).decode().strip()
    os.close(r)
    return pid, info


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="hc-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_1500_idle_control_connections_hold_no_threads(sockdir):
    """Before: 1,500 connections that send nothing made 1,502 threads, held for ever.
    Now: one thread, at most max_connections open, each closed after its time limit,
    and a legitimate 'stats' is answered in the middle of it."""
    path = os.path.join(sockdir, "c.sock")
    pid, _ = _serve_in_child(lambda: ControlServer(path, Flag(), lambda: Stats({"packets": 1}),
                                                   timeout=2, max_connections=64).start())
    conns = []
    try:
        idle = _tasks(pid)
        for _ in range(1500):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)  # blocking, as an attacker would: queued in the backlog
            conns.append(s)
        time.sleep(0.5)
        assert _tasks(pid) <= idle  # no thread per connection
        t0 = time.monotonic()
        doc = json.loads(send_command(path, "stats", timeout=10))
        assert time.monotonic() - t0 < 5 and doc["packets"] == 1
        assert _tasks(pid) <= idle
        _wait_for(lambda: sum(_closed_by_peer(s) for s in conns) == len(conns),
                  "every idle connection closed", timeout=15)
        doc = json.loads(send_command(path, "stats"))
        assert sum(doc["control"].values()) == 1500  # each one counted, once
        assert set(doc["control"]) <= {"timeout", "evicted-idle", "refused-full"}
    finally:
        for s in conns:
            s.close()
        _kill(pid)


def test_control_line_trickled_byte_by_byte_is_closed_after_the_time_limit(sockdir):
    with ControlServer(os.path.join(sockdir, "t.sock"), Flag(), Stats, timeout=1) as srv:
        s = socket.socket(socket.AF_UNIX)
        s.connect(srv.path)
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 5:
            try:
                s.send(b"s")  # never a whole line
            except OSError:
                closed = True
                break
            if _closed_by_peer(s):
                closed = True
                break
            s.setblocking(True)
            time.sleep(0.2)
        assert closed and time.monotonic() - t0 < 2.5
        s.close()
        assert srv.counters["control:timeout"] == 1
        # a client that keeps sending whole commands is not closed
        c = socket.socket(socket.AF_UNIX)
        c.connect(srv.path)
        c.settimeout(3)
        for _ in range(8):
            c.sendall(b"ping\n")
            assert c.recv(100) == b"pong\n"
            time.sleep(0.3)
        c.close()


def test_metrics_slowloris_holds_no_threads(sockdir):
    """Before: 500 connections trickling a request byte by byte held 466 threads of the
    collector for as long as they trickled. Now: one thread; the trickling connections
    are closed after the time limit (or make room for new ones), counted; Prometheus
    still gets its answer during the attack."""
    pid, info = _serve_in_child(lambda: MetricsServer(
        ("127.0.0.1", 0), lambda: Stats({"packets": 7}), request_timeout=3,
        max_connections=64).start())
    host, port = info.rsplit(":", 1)
    conns: list[socket.socket] = []
    lock = threading.Lock()

    def opener(n: int) -> None:
        for _ in range(n):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            with lock:
                conns.append(s)
    try:
        idle = _tasks(pid)
        openers = [threading.Thread(target=opener, args=(30,)) for _ in range(10)]
        for t in openers:
            t.start()
        for t in openers:
            t.join()
        assert len(conns) == 300
        peak = 0
        scraped = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6:
            for s in conns:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            peak = max(peak, _tasks(pid))
            if scraped is None and time.monotonic() - t0 > 1.5:
                t1 = time.monotonic()
                body = urllib.request.urlopen(f"http://{host}:{port}/metrics",
                                              timeout=5).read().decode()
                scraped = time.monotonic() - t1
                assert "sipcaptool_packets_total 7" in body
            time.sleep(0.5)
        assert peak <= idle  # no thread per connection
        assert scraped is not None and scraped < 3
        _wait_for(lambda: sum(_closed_by_peer(s) for s in conns) == len(conns),
                  "every slowloris connection closed", timeout=10)
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
        counted = sum(int(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                      if line.startswith("sipcaptool_metrics_total{"))
        assert counted >= 300, body
    finally:
        for s in conns:
            s.close()
        _kill(pid)


def test_1000_concurrent_ctl_stats_all_answered(sockdir):
    """Before: of 1,000 clients asking 'stats' at once, 161 were answered (a listen
    backlog of 16; the others got EAGAIN). Now all are, and the server keeps one
    thread."""
    path = os.path.join(sockdir, "s.sock")
    pid, _ = _serve_in_child(lambda: ControlServer(path, Flag(), lambda: Stats({"packets": 5})
                                                   ).start())
    n = 1000
    barrier = threading.Barrier(n)
    results: list[object] = []
    euid = os.geteuid()

    def one() -> None:
        barrier.wait()
        try:
            answer = send_command(path, "stats", timeout=20, peer_uids=(euid, 0))
            results.append(json.loads(answer)["packets"])
        except (OSError, ValueError) as e:
            results.append(repr(e))
    try:
        idle = _tasks(pid)
        clients = [threading.Thread(target=one) for _ in range(n)]
        for t in clients:
            t.start()
        peak = 0
        while any(t.is_alive() for t in clients):
            peak = max(peak, _tasks(pid))
            time.sleep(0.05)
        for t in clients:
            t.join()
        failed = [r for r in results if r != 5]
        assert len(results) == n and not failed, failed[:5]
        assert peak <= idle
    finally:
        _kill(pid)


def test_metrics_answers_head_and_refuses_bad_requests():
    m = MetricsServer(("127.0.0.1", 0), lambda: Stats({"packets": 2})).start()
    try:
        host, port = m.address

        def ask(raw: bytes) -> bytes:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(raw)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            return data
        head = ask(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
        assert ask(b"GET /nope HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert ask(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert ask(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 10000).startswith(
            b"HTTP/1.1 431 ")
        body = ask(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").decode()
        assert "sipcaptool_packets_total 2" in body
        assert 'sipcaptool_metrics_total{reason="bad-request"} 2' in body
        assert 'sipcaptool_metrics_total{reason="request-too-long"} 1' in body
    finally:
        m.stop()


def test_collector_settings_set_the_limits(sockdir, tmp_path):
    """--control-timeout (setting control_timeout) reaches the collector's control
    socket: an idle connection is closed after it and counted in the stats."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(sockdir, "hep.sock")
    p = subprocess.Popen([sys.executable, "-m", "sipcaptool", "hep", "--db",
                          f"sqlite:///{tmp_path / 'x.db'}", "--listen", "udp:127.0.0.1:0",
                          "--rcvbuf", "1M", "--control", path, "--control-timeout", "0.5",
                          "--duration", "20", "--json"],
                         cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SIPCAPTOOL_CONTROL_MAX_CONNECTIONS": "8"})
    try:
        _wait_for(lambda: os.path.exists(path), "the control socket")
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(path)
        t0 = time.monotonic()
        idle.settimeout(5)
        assert idle.recv(10) == b"" and time.monotonic() - t0 < 2
        idle.close()
        doc = json.loads(send_command(path, "stats"))
        assert doc["control"] == {"timeout": 1}
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
