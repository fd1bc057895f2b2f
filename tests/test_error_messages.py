"""Errors as an operator meets them, run as a user runs the command: printed once, with
the reason (which directory, why), and the fix where there is one (a database that does
not exist: the db init command that creates it; a full disk says ENOSPC, not that the
database is unreachable). Read-only and full file systems are real tmpfs mounts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipcaptool.export.pcap import PcapWriter
from sipcaptool.store.url import parse_db_url
from sipcaptool.testing.pcapgen import realistic_messages, udp4_frame

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "call.pcap"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], check=True)
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sipcaptool: error:")]
    assert len(lines) == 1, r.stderr
    assert "error:" not in r.stdout
    return lines[0]


@pytest.mark.parametrize("fixture", ["pg_url", "mysql_url"])
def test_unknown_database_says_how_to_create_it(request, fixture):
    url = request.getfixturevalue(fixture)
    missing = url.rsplit("/", 1)[0] + "/sipcaptool_no_such_db"
    r = run("replay", "-q", "--db", missing, str(EXAMPLE))
    assert r.returncode == 4
    line = one_error_line(r)
    assert "database 'sipcaptool_no_such_db' does not exist" in line
    fix = f"'sipcaptool db init --db {parse_db_url(missing).redacted()}' creates it"
    assert fix in line
    assert "unreachable" not in line


@root_only
def test_read_only_directory_is_named_with_the_reason(tmpfs):
    d = tmpfs("ro", "ro,size=64k")
    r = run("replay", "-q", "--db", f"sqlite:///{d}/capture.db", str(EXAMPLE))
    assert r.returncode == 4
    line = one_error_line(r)
    assert f"directory {d} does not take new files: Read-only file system" in line


def test_missing_directory_is_named(tmp_path):
    r = run("replay", "-q", "--db", f"sqlite:///{tmp_path}/nowhere/capture.db", str(EXAMPLE))
    assert r.returncode == 4
    assert f"{tmp_path}/nowhere" in one_error_line(r)


@root_only
def test_full_disk_is_a_full_disk(tmpfs, tmp_path):
    d = tmpfs("full", "size=256k")
    pcap = tmp_path / "many.pcap"
    with open(pcap, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in realistic_messages(3000):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))
    r = run("replay", "-q", "--spool-dir", "none", "--db", f"sqlite:///{d}/capture.db",
            str(pcap))
    assert r.returncode == 4
    line = one_error_line(r)
    assert f"the file system holding {d} is full (ENOSPC" in line
    assert "unreachable" not in line
