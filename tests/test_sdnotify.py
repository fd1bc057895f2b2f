"""Readiness for systemd's Type=notify: the datagram a real NOTIFY_SOCKET receives,
from the library and from `sipcaptool hep` and `sipcaptool live` run as systemd runs
them (a datagram socket bound here, its path in NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sipcaptool import sdnotify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(60)
    yield s, path
    s.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_ready_reaches_the_socket(notify_socket, monkeypatch):
    s, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("listening on udp:127.0.0.1:9060")
    got = fields(s.recv(4096))
    assert got == {"READY=1".split("=")[0]: "1", "MAINPID": str(os.getpid()),
                   "STATUS": "listening on udp:127.0.0.1:9060"}
    assert sdnotify.stopping()
    assert fields(s.recv(4096)) == {"STOPPING": "1"}


def test_abstract_namespace_socket(monkeypatch):
    name = "sipcaptool-test-" + uuid.uuid4().hex
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(10)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert fields(s.recv(4096))["READY"] == "1"
    finally:
        s.close()


def test_without_systemd_nothing_is_sent(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    # a socket that is gone: logged, not raised (the service keeps running)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False
    assert "cannot tell systemd" in caplog.text


def _run_until_ready(args: list[str], path: str, s: socket.socket) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=path)
    p = subprocess.Popen([sys.executable, "-m", "sipcaptool", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        try:
            got = fields(s.recv(4096))
        except TimeoutError:
            p.kill()
            raise AssertionError("no READY=1: " + p.communicate()[1]) from None
        assert got["MAINPID"] == str(p.pid)
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        return got
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_hep_collector_says_ready_once_listening(notify_socket):
    s, path = notify_socket
    got = _run_until_ready(["hep", "--listen", "udp:127.0.0.1:0", "--listen",
                            "tcp:127.0.0.1:0", "--db", "none", "--control", "none"], path, s)
    assert got["READY"] == "1"
    assert got["STATUS"].startswith("listening on udp:127.0.0.1:")
    assert "tcp:127.0.0.1:" in got["STATUS"]


def test_hep_collector_with_workers_says_ready_once(notify_socket):
    s, path = notify_socket
    got = _run_until_ready(["hep", "--listen", "udp:127.0.0.1:0", "--workers", "2",
                            "--db", "none", "--control", "none"], path, s)
    assert got["READY"] == "1" and "(2 workers)" in got["STATUS"]
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(4096)  # once


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root or CAP_NET_RAW")
def test_live_capture_says_ready_once_the_capture_is_open(notify_socket, tmp_path):
    s, path = notify_socket
    got = _run_until_ready(["live", "-i", "lo", "--db", f"sqlite:///{tmp_path}/live.db",
                            "--control", "none"], path, s)
    assert got["READY"] == "1" and got["STATUS"].startswith("capturing")
