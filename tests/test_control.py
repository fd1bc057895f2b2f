"""The control socket, driven over a real Unix socket, and ``sipcaptool ctl`` as a user runs it."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from sipcaptool.control import (
    BAD_PARAMETER,
    NOT_ENOUGH_PARAMETERS,
    ControlServer,
    MetricsServer,
    build_stats,
    default_control_path,
    format_stats_text,
    handle_command,
    prometheus_text,
    send_command,
    summary_document,
)
from sipcaptool.errors import CaptureError
from sipcaptool.logs import RateLimitFilter, setup_logging
from sipcaptool.net import parse_hostport
from sipcaptool.stats import Stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Flag:
    """What Pipeline reads on every message (pipeline.CaptureFlag has the same shape)."""

    def __init__(self, value: int = 1) -> None:
        self.value = value


@pytest.fixture
def sockdir():
    # short path: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer
    d = tempfile.mkdtemp(prefix="sct-", dir="/tmp")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@pytest.fixture
def server(sockdir):
    stats = Stats()
    flag = Flag(1)
    srv = ControlServer(os.path.join(sockdir, "c.sock"), flag, lambda: stats,
                        extra={"command": "test", "clients": lambda: 3})
    srv.start()
    yield srv, flag, stats
    srv.stop()


def session(path: str, lines: list[str]) -> list[str]:
    """Send several lines on one connection, as socat would, and return the answer lines."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall("".join(line + "\n" for line in lines).encode())
    s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data.decode().split("\n")[:-1]


def ctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipcaptool", "ctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


# -- the protocol ----------------------------------------------------------------------
def test_status_off_on_check_drive_the_flag(server):
    srv, flag, _ = server
    assert send_command(srv.path, "status check") == "Enabled"
    assert send_command(srv.path, "status off") == "Disabled"
    assert flag.value == 0
    assert send_command(srv.path, "status check") == "Disabled"
    assert flag.value == 0
    assert send_command(srv.path, "status on") == "Enabled"
    assert flag.value == 1
    assert send_command(srv.path, "STATUS Off") == "Disabled"  # words are case-insensitive
    assert flag.value == 0


def test_shared_rawvalue_flag(sockdir):
    # workers in other processes share a RawValue('b'); the server writes the same memory
    flag = multiprocessing.RawValue("b", 1)
    with ControlServer(os.path.join(sockdir, "r.sock"), flag, dict) as srv:
        assert send_command(srv.path, "status off") == "Disabled"
        assert flag.value == 0
        assert send_command(srv.path, "status on") == "Enabled"
        assert flag.value == 1


@pytest.mark.parametrize("param", ["onion", "of", "o", "checkx", "1", "0", "true", "on off"])
def test_bad_parameter_is_refused_prefixes_included(server, param):
    srv, flag, _ = server
    # Kamailio accepts prefixes such as "onion" as "on"; we do not
    flag.value = 0
    assert send_command(srv.path, f"status {param}") == BAD_PARAMETER
    assert flag.value == 0
    flag.value = 1
    assert send_command(srv.path, f"status {param}") == BAD_PARAMETER
    assert flag.value == 1


def test_missing_parameter_and_unknown_command(server):
    srv, _, _ = server
    assert send_command(srv.path, "status") == "500 - Not enough parameters (on, off or check)"
    assert send_command(srv.path, "reboot").startswith("500 - Unknown command 'reboot'")
    assert send_command(srv.path, "ping") == "pong"
    assert "status on" in send_command(srv.path, "help")


def test_stats_counters_equal_what_was_counted(server):
    srv, flag, stats = server
    stats["packets"] += 120
    stats["messages"] += 100
    stats["stored:sip_capture"] += 60
    stats["stored:sip_other"] += 30
    stats["dropped:capture-off"] += 10
    stats["skipped:non-sip"] += 20
    stats["malformed:sip-no-start-line"] += 2
    stats["db:batches"] += 4
    stats["db:errors"] += 1
    stats["db:retries"] += 3
    stats["kernel:dropped"] += 7
    stats["queue_depth"] = 2
    stats["spool_bytes"] = 4096
    flag.value = 0
    doc = json.loads(send_command(srv.path, "stats"))
    assert doc["capture"] == "off"
    assert (doc["packets"], doc["messages"]) == (120, 100)
    assert doc["stored"] == {"sip_capture": 60, "sip_other": 30} and doc["stored_total"] == 90
    assert doc["dropped"] == {"capture-off": 10}
    assert doc["skipped"] == {"non-sip": 20}
    assert doc["malformed"] == {"sip-no-start-line": 2}
    assert doc["db"] == {"batches": 4, "errors": 1, "retries": 3}
    assert doc["kernel"] == {"dropped": 7}
    assert (doc["queue_depth"], doc["spool_bytes"], doc["spool_batches"]) == (2, 4096, None)
    assert doc["command"] == "test" and doc["clients"] == 3
    assert doc["uptime_s"] >= 0 and doc["pid"] == os.getpid()
    again = json.loads(send_command(srv.path, "stats json"))
    assert {k: v for k, v in again.items() if k != "uptime_s"} == {
        k: v for k, v in doc.items() if k != "uptime_s"}
    text = send_command(srv.path, "stats text")
    assert "rows stored:" in text and "sip_other:" in text and "capture-off:" in text


def test_one_connection_many_commands_multiline_answers_end_with_empty_line(server):
    srv, flag, _ = server
    lines = session(srv.path, ["status off", "", "help", "status check", "stats", "ping"])
    assert lines[0] == "Disabled"
    end_of_help = lines.index("", 1)
    assert lines[1].startswith("status on") and lines[end_of_help + 1] == "Disabled"
    assert json.loads(lines[end_of_help + 2])["capture"] == "off"
    assert lines[-1] == "pong"


def test_socket_mode_0600_and_removed_on_stop(sockdir):
    path = os.path.join(sockdir, "m.sock")
    srv = ControlServer(path, Flag(), dict).start()
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    srv.stop()
    assert not os.path.exists(path)


def test_refuses_a_path_another_process_answers_on(sockdir):
    path = os.path.join(sockdir, "busy.sock")
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
            "s.listen(); print('ready', flush=True); time.sleep(30)")
    other = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        with pytest.raises(CaptureError, match="another running process answers on it"):
            ControlServer(path, Flag(), dict).start()
        assert os.path.exists(path)  # the other process's socket is left alone
    finally:
        other.kill()
        other.wait()
        other.stdout.close()


def test_refuses_a_path_in_use_by_this_process(server):
    srv, _, _ = server
    with pytest.raises(CaptureError, match="answers on it"):
        ControlServer(srv.path, Flag(), dict).start()
    assert send_command(srv.path, "ping") == "pong"


def test_stale_socket_is_replaced_and_other_files_are_not(sockdir):
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens: what a killed collector leaves
    with ControlServer(path, Flag(), dict) as srv:
        assert send_command(srv.path, "ping") == "pong"
    plain = os.path.join(sockdir, "plain.sock")
    open(plain, "w").close()
    with pytest.raises(CaptureError, match="not a socket"):
        ControlServer(plain, Flag(), dict).start()
    assert os.path.isfile(plain)


def test_missing_directory_is_created_0700(sockdir):
    path = os.path.join(sockdir, "sub", "x.sock")
    with ControlServer(path, Flag(), dict):
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    os.rmdir(os.path.dirname(path))


def test_a_failing_provider_answers_500_and_the_server_lives_on(sockdir):
    def broken():
        raise KeyError("boom")

    with ControlServer(os.path.join(sockdir, "b.sock"), Flag(), broken) as srv:
        logging.getLogger("sipcaptool.control").disabled = True
        try:
            assert send_command(srv.path, "stats").startswith("500 - Internal error")
        finally:
            logging.getLogger("sipcaptool.control").disabled = False
        assert send_command(srv.path, "status check") == "Enabled"


def test_default_control_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_control_path("hep") == str(tmp_path / "sipcaptool" / "hep.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = ("/run/sipcaptool/live.sock" if os.geteuid() == 0
                else f"/tmp/sipcaptool-{os.geteuid()}/live.sock")
    assert default_control_path("live") == expected


def test_socat_can_use_it(server):
    srv, flag, _ = server
    socat = subprocess.run(["which", "socat"], capture_output=True)
    if socat.returncode:
        pytest.skip("socat not installed")
    out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{srv.path}"], input="status off\n",
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "Disabled\n" and flag.value == 0


# -- sipcaptool ctl --------------------------------------------------------------------
def test_ctl_cli_status_and_exit_codes(server):
    srv, flag, stats = server
    r = ctl("--control", srv.path, "status", "off")
    assert (r.returncode, r.stdout) == (0, "Disabled\n") and flag.value == 0
    r = ctl("--control", srv.path, "status", "check")
    assert (r.returncode, r.stdout) == (0, "Disabled\n") and flag.value == 0
    r = ctl("--control", srv.path, "status", "on")
    assert (r.returncode, r.stdout) == (0, "Enabled\n") and flag.value == 1
    r = ctl("--control", srv.path, "status", "onion")
    assert r.returncode == 2 and r.stdout == ""
    assert "500 - Bad parameter (on, off or check)" in r.stderr and flag.value == 1
    assert len(r.stderr.strip().splitlines()) == 1
    r = ctl("status", "check", env={"SIPCAPTOOL_CONTROL": srv.path})
    assert (r.returncode, r.stdout) == (0, "Enabled\n")


def test_ctl_cli_missing_or_stale_socket(sockdir):
    missing = os.path.join(sockdir, "none.sock")
    r = ctl("--control", missing, "status", "check")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "not found" in r.stderr and missing in r.stderr
    stale = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    r = ctl("--control", stale, "stats")
    assert r.returncode == 2 and "nobody answers" in r.stderr


def test_ctl_cli_stats(server):
    srv, _, stats = server
    stats.update({"packets": 9, "messages": 8, "stored:sip_capture": 8, "db:batches": 1})
    r = ctl("--control", srv.path, "stats", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert (doc["packets"], doc["messages"], doc["stored"], doc["db"]) == (
        9, 8, {"sip_capture": 8}, {"batches": 1})
    r = ctl("--control", srv.path, "stats")
    assert r.returncode == 0
    for needle in ("packets received:", "messages received:", "rows stored:", "sip_capture:",
                   "dropped:", "db batches:", "db errors:", "db retries:", "queue depth:",
                   "spool bytes:", "uptime:"):
        assert needle in r.stdout
    r = ctl("--control", srv.path, "ping")
    assert (r.returncode, r.stdout) == (0, "pong\n")


# -- metrics ---------------------------------------------------------------------------
def test_prometheus_endpoint():
    stats = Stats({"packets": 5, "messages": 4, "stored:sip_capture": 3, "dropped:capture-off": 1})
    m = MetricsServer(("127.0.0.1", 0), lambda: stats, capture_flag=Flag(0)).start()
    try:
        host, port = m.address
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    finally:
        m.stop()
    assert "sipcaptool_capture_on 0" in body
    assert "sipcaptool_packets_total 5" in body
    assert 'sipcaptool_stored_total{table="sip_capture"} 3' in body
    assert 'sipcaptool_dropped_total{reason="capture-off"} 1' in body


def test_metrics_client_that_sends_nothing_is_closed():
    """An idle connection to the metrics port would hold a thread and a descriptor of
    the capturing process for ever: it is closed after the request timeout."""
    m = MetricsServer(("127.0.0.1", 0), lambda: Stats(), request_timeout=0.5).start()
    try:
        idle = socket.create_connection(m.address, timeout=10)
        t0 = time.monotonic()
        assert idle.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 5
        idle.close()
        host, port = m.address  # and it still answers others
        assert urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).status == 200
    finally:
        m.stop()


def test_parse_hostport():
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport("[::1]:9100") == ("::1", 9100)
    assert parse_hostport("9100") == ("127.0.0.1", 9100)
    with pytest.raises(ValueError):
        parse_hostport("host:port")


# -- the protocol and the stats document, without sockets ------------------------------
def test_protocol_lines_without_a_socket():
    flag = Flag(1)
    stats = Stats({"packets": 3, "messages": 2, "stored:sip_capture": 2})

    def doc():
        return build_stats(stats, capture_on=bool(flag.value), started=time.time())

    assert handle_command("status off", flag, doc) == "Disabled" and flag.value == 0
    assert handle_command("STATUS Check", flag, doc) == "Disabled"
    assert handle_command("status on", flag, doc) == "Enabled" and flag.value == 1
    assert handle_command("status onion", flag, doc) == BAD_PARAMETER and flag.value == 1
    assert handle_command("status", flag, doc) == NOT_ENOUGH_PARAMETERS
    assert json.loads(handle_command("stats", flag, doc))["stored_total"] == 2
    assert handle_command("stats text", flag, doc).endswith("\n")
    assert handle_command("stats xml", flag, doc).startswith("500 - ")
    assert handle_command("ping", flag, doc) == "pong"
    assert handle_command("   ", flag, doc) == ""
    assert handle_command("frobnicate now", flag, doc) == \
        "500 - Unknown command 'frobnicate' (try help)"


def test_one_stats_document_for_summary_ctl_stats_and_metrics():
    """The end-of-run summary, ``ctl stats`` and ``/metrics`` name each group after its
    counter category; refused-bytes and stored-bad have groups of their own."""
    stats = Stats({"packets": 10, "messages": 9, "stored:sip_capture": 7,
                   "malformed:sip-no-cseq": 1, "stored-bad:sip-no-cseq": 1,
                   "truncated:callid": 2, "adjusted:clock-skew": 1, "dropped:auth": 1,
                   "refused-bytes:auth": 120, "db:batches": 2, "hep_out:sent_udp": 4,
                   "future:thing": 3})
    summary = summary_document(stats)
    doc = build_stats(stats, capture_on=True, started=time.time())
    groups = ("stored", "malformed", "dropped", "truncated", "adjusted", "refused_bytes",
              "stored_bad", "db")
    assert {g: summary[g] for g in groups} == {g: doc[g] for g in groups}
    assert doc["refused_bytes"] == {"auth": 120} and doc["stored_bad"] == {"sip-no-cseq": 1}
    assert doc["adjusted"] == {"clock-skew": 1}
    assert summary["truncated_values"] == summary["truncated"] == {"callid": 2}  # older name
    assert summary["stored_total"] == doc["stored_total"] == 7
    assert doc["other"] == {"future:thing": 3}  # a category without a group
    assert doc["hep_out"] == {"sent_udp": 4} and "hep_out" not in summary
    assert "other" not in summary and "kernel" not in summary
    text = prometheus_text(doc)
    assert 'sipcaptool_refused_bytes_total{reason="auth"} 120' in text
    assert 'sipcaptool_stored_bad_total{reason="sip-no-cseq"} 1' in text
    table = format_stats_text(doc)
    assert "bytes refused:" in table and "stored though malformed:" in table


# -- logs ------------------------------------------------------------------------------
def test_rate_limit_says_how_many_were_suppressed():
    now = [0.0]
    f = RateLimitFilter(burst=3, interval=60, clock=lambda: now[0])

    def rec(msg="db down: %s"):
        return logging.LogRecord("sipcaptool.x", logging.ERROR, __file__, 1, msg, ("x",), None)

    passed = [f.filter(rec()) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert f.filter(rec("another message: %s"))
    now[0] = 61
    r = rec()
    assert f.filter(r) and "(7 similar messages suppressed)" in r.getMessage()
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert all(f.filter(info) for _ in range(10))


def test_log_file_json_and_sighup_reopen(tmp_path):
    code = f"""
import logging, os, signal, time
from sipcaptool.logs import setup_logging
setup_logging(1, 0, {str(tmp_path / 'a.log')!r}, 'json')
log = logging.getLogger('sipcaptool.t')
log.info('before')
os.rename({str(tmp_path / 'a.log')!r}, {str(tmp_path / 'a.log.1')!r})
os.kill(os.getpid(), signal.SIGHUP)
time.sleep(0.2)
log.warning('after %s', 1)
log.debug('hidden at -v')
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=30)
    old = [json.loads(x) for x in (tmp_path / "a.log.1").read_text().splitlines()]
    new = [json.loads(x) for x in (tmp_path / "a.log").read_text().splitlines()]
    assert [d["msg"] for d in old] == ["before"] and old[0]["level"] == "info"
    assert [d["msg"] for d in new] == ["after 1"] and new[0]["logger"] == "sipcaptool.t"
    assert os.stat(tmp_path / "a.log").st_mode & 0o007 == 0  # not readable by others


def test_setup_logging_rejects_unknown_format():
    with pytest.raises(ValueError):
        setup_logging(log_format="xml")


# -- end to end: a running HEP collector ------------------------------------------------
def _hep_available() -> bool:
    try:
        import sipcaptool.commands.hep  # noqa: F401
        import sipcaptool.decode.hep  # noqa: F401
    except ImportError:
        return False
    return True


class HepCollector:
    """``python -m sipcaptool hep`` on 127.0.0.1 (ephemeral UDP port) with --control."""

    def __init__(self, db_path: str, control: str, *extra: str) -> None:
        import re
        import threading

        cmd = [sys.executable, "-m", "sipcaptool", "hep", "--db", f"sqlite:///{db_path}",
               "--listen", "udp:127.0.0.1:0", "--control", control, "--json", *extra]
        self.control = control
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.port = 0
        ready = threading.Event()

        def read_err() -> None:
            for line in self.proc.stderr:
                self.err.append(line.rstrip("\n"))
                m = re.search(r"listening on udp:\S*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read_err, daemon=True)
        self._reader.start()
        if not ready.wait(60) or not self.port:
            self.kill()
            raise AssertionError("collector did not start:\n" + "\n".join(self.err))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, callids: list[str]) -> None:
        from sipcaptool.encode.hep import encode_hep3
        from sipcaptool.record import AF_INET, PROTO_UDP, CapturedMessage

        for cid in callids:
            payload = (f"OPTIONS sip:bob@example.com SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{cid}\r\n"
                       f"From: <sip:alice@example.com>;tag=t-{cid}\r\n"
                       f"To: <sip:bob@example.com>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n"
                       f"Content-Length: 0\r\n\r\n").encode()
            msg = CapturedMessage(1_767_225_601_000_000, "192.0.2.1", 5060, "198.51.100.2",
                                  5060, PROTO_UDP, AF_INET, payload)
            self.sock.sendto(encode_hep3(msg, capture_id=2001), ("127.0.0.1", self.port))

    def stats(self) -> dict:
        return json.loads(send_command(self.control, "stats"))

    def wait_for(self, pred, what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.stats()
            if pred(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {doc}")
            time.sleep(0.1)

    def stop(self) -> tuple[int, dict]:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        self._reader.join(5)
        self.sock.close()
        return self.proc.returncode, json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _stored_callids(db_path: str) -> list[str]:
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        return sorted(r[0] for r in con.execute("SELECT callid FROM sip_capture"))
    finally:
        con.close()


@pytest.mark.skipif(not _hep_available(), reason="sipcaptool hep not available")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_hep_collector_switched_off_and_on_through_the_socket(sockdir, tmp_path, workers):
    """off -> received and counted, not stored; on -> stored; stats equal what was sent."""
    db = str(tmp_path / "e2e.db")
    ctl_path = os.path.join(sockdir, "hep.sock")
    c = HepCollector(db, ctl_path, "--capture-on", "0", "--workers", workers)
    try:
        st = os.stat(ctl_path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        # started with --capture-on 0
        r = ctl("--control", ctl_path, "status", "check")
        assert (r.returncode, r.stdout) == (0, "Disabled\n"), r.stderr

        c.send([f"off-{i}" for i in range(5)])
        c.wait_for(lambda d: d["messages"] >= 5, "5 messages while off")

        r = ctl("--control", ctl_path, "status", "on")
        assert (r.returncode, r.stdout) == (0, "Enabled\n"), r.stderr
        c.send([f"on-{i}" for i in range(7)])
        c.wait_for(lambda d: d["stored_total"] >= 7, "7 rows stored")

        r = ctl("--control", ctl_path, "status", "off")
        assert (r.returncode, r.stdout) == (0, "Disabled\n")
        c.send([f"off-again-{i}" for i in range(3)])
        doc = c.wait_for(lambda d: d["messages"] >= 15, "15 messages")

        r = ctl("--control", ctl_path, "status", "onion")
        assert r.returncode == 2 and "500 - Bad parameter (on, off or check)" in r.stderr
        assert ctl("--control", ctl_path, "status", "check").stdout == "Disabled\n"
        time.sleep(1.5)  # a late row would show up now (flush interval 1 s)

        doc = c.stats()
        assert doc["capture"] == "off" and doc["command"] == "hep"
        assert (doc["packets"], doc["messages"]) == (15, 15)
        assert doc["dropped"] == {"capture-off": 8}
        assert doc["stored"] == {"sip_capture": 7} and doc["stored_total"] == 7
        assert doc["uptime_s"] > 0
        r = ctl("--control", ctl_path, "stats")
        assert r.returncode == 0 and "capture-off:" in r.stdout
        assert _stored_callids(db) == sorted(f"on-{i}" for i in range(7))

        rc, summary = c.stop()
        assert rc == 0
        assert summary["stored_total"] == 7 and summary["dropped"] == {"capture-off": 8}
        assert not os.path.exists(ctl_path)
    finally:
        c.kill()


@pytest.mark.skipif(not _hep_available(), reason="sipcaptool hep not available")
def test_hep_collector_refuses_a_control_path_in_use(sockdir, tmp_path):
    path = os.path.join(sockdir, "busy.sock")
    with ControlServer(path, Flag(), dict):
        p = subprocess.run([sys.executable, "-m", "sipcaptool", "hep", "--db",
                            f"sqlite:///{tmp_path / 'x.db'}", "--listen", "udp:127.0.0.1:0",
                            "--control", path, "--duration", "5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 5, p.stderr
        assert "another running process answers on it" in p.stderr
        assert send_command(path, "ping") == "pong"


def test_log_options_decorator(tmp_path):
    import click
    from click.testing import CliRunner

    from sipcaptool.commands.common import config_option, log_options

    @click.command()
    @log_options
    @config_option
    def cmd(settings) -> None:
        """Log one line of each level.

        \b
        Example:
          cmd -v --log-file x.log
        """
        log = logging.getLogger("sipcaptool.t")
        log.debug("d")
        log.info("i")
        log.warning("w")

    f = tmp_path / "x.log"
    r = CliRunner().invoke(cmd, ["-v", "--log-file", str(f), "--log-format", "text"])
    assert r.exit_code == 0, r.output
    text = f.read_text()
    assert "sipcaptool.t INFO i" in text and "WARNING w" in text and " d\n" not in text
    r = CliRunner().invoke(cmd, ["-q", "--log-file", str(f)])
    assert r.exit_code == 0
    assert f.read_text() == text  # -q: warnings not written
    r = CliRunner().invoke(cmd, ["--log-file", str(tmp_path / "no" / "dir.log")])
    assert r.exit_code == 2 and "cannot open" in r.output
    setup_logging()  # back to stderr; closes the log file


def test_endpoints_default_path_in_use_warns_explicit_refuses(tmp_path, monkeypatch):
    """The default control path taken by another collector only warns; an explicit one
    refuses; 'none' opens no socket; --metrics serves Prometheus text."""
    import urllib.request

    from sipcaptool.control import Endpoints
    from sipcaptool.errors import CaptureError
    from sipcaptool.pipeline import CaptureFlag

    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    flag = CaptureFlag(True)
    first = Endpoints("hep", None, "127.0.0.1:0", flag, lambda: {"packets": 3}).start()
    try:
        assert first.control is not None
        assert first.control.path == str(runtime / "sipcaptool" / "hep.sock")
        host, port = first.metrics.address
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
        assert "sipcaptool_capture_on 1" in body
        second = Endpoints("hep", None, None, flag, lambda: {}).start()
        assert second.control is None  # default path busy: runs without a socket
        with pytest.raises(CaptureError):
            Endpoints("hep", first.control.path, None, flag, lambda: {}).start()
        none = Endpoints("hep", "none", None, flag, lambda: {}).start()
        assert none.control is None and none.describe() == ""
    finally:
        first.stop()
    assert not (runtime / "sipcaptool" / "hep.sock").exists()
