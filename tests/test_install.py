"""What `pip install .` puts on a machine, installed for real: the command, its man pages
where man finds them (in a virtual environment, and under a system prefix), shell
completion, and the systemd units naming the command so that systemd finds it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.name for p in (ROOT / "man").glob("*.1"))

pytestmark = pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")


def _source_copy(tmp: Path) -> Path:
    """The source tree without build leftovers (the build writes into it)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", ".hypothesis"))
    return src


def _pip(python: Path | str, *args: str) -> None:
    # the dependencies are those of the running interpreter (the venv sees them with
    # --system-site-packages); the build backend is fetched as pip fetches it for a user
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = _source_copy(tmp)
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)],
                   check=True, timeout=300)
    _pip(env_dir / "bin" / "python", str(src))
    return env_dir


def _man_env(bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def test_man_pages_found_in_a_venv(venv):
    man1 = venv / "share" / "man" / "man1"
    assert sorted(p.name for p in man1.glob("*.1")) == PAGES
    # man-db derives its search path from PATH (<dir>/../share/man): an activated venv
    # is all it takes, no MANPATH
    env = _man_env(venv / "bin")
    for page in ("sipcaptool", "sipcaptool-replay", "sipcaptool-hep"):
        r = subprocess.run(["man", "-w", page], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()) == man1 / f"{page}.1"
    r = subprocess.run(["man", "-P", "cat", "sipcaptool-replay"], capture_output=True,
                       text=True, env=dict(env, MANWIDTH="100", COLUMNS="100"))
    assert r.returncode == 0 and "--resume" in r.stdout.replace("\u2010", "-")


def test_man_pages_under_a_system_prefix(tmp_path):
    # what `pip install .` as root writes to /usr/local, written under a scratch root
    # (--ignore-installed: without it pip first uninstalls the sipcaptool installed in
    # the running environment -- the developer's own -- though it writes under --root)
    src = _source_copy(tmp_path)
    root = tmp_path / "root"

    def installed_here() -> str:
        r = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "sipcaptool"],
                           capture_output=True, text=True, timeout=120)
        return r.stdout if r.returncode == 0 else ""

    before = installed_here()
    _pip(sys.executable, "--root", str(root), "--prefix", "/usr/local", "--ignore-installed",
         "--no-warn-script-location", str(src))
    assert installed_here() == before    # the running environment's install untouched
    man1 = root / "usr" / "local" / "share" / "man" / "man1"
    assert sorted(p.name for p in man1.glob("*.1")) == PAGES
    assert (root / "usr" / "local" / "bin" / "sipcaptool").exists()
    r = subprocess.run(["man", "--manpath", str(man1.parent), "-w", "sipcaptool"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(man1 / "sipcaptool.1")
    # /usr/local/share/man is in man-db's default search path (its man_db.conf)
    conf = Path("/etc/manpath.config")
    if conf.exists():
        assert re.search(r"^MANDATORY_MANPATH\s+/usr/local/share/man\b", conf.read_text(),
                         re.M)


def test_the_installed_command_and_its_completion(venv):
    exe = venv / "bin" / "sipcaptool"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "replay" in r.stdout
    for shell in ("bash", "zsh", "fish"):
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, _SIPCAPTOOL_COMPLETE=f"{shell}_source"))
        assert r.returncode == 0 and "_SIPCAPTOOL_COMPLETE" in r.stdout, (shell, r.stderr)
    # bash completes a subcommand from the script it printed
    if shutil.which("bash"):
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, _SIPCAPTOOL_COMPLETE="bash_complete",
                                    COMP_WORDS="sipcaptool rep", COMP_CWORD="1"))
        assert "replay" in r.stdout


@pytest.mark.parametrize("unit", ["sipcaptool-hep.service", "sipcaptool-live.service"])
def test_units_name_the_command_systemd_finds_and_wait_for_readiness(unit):
    text = (ROOT / "contrib" / unit).read_text()
    assert re.search(r"^Type=notify$", text, re.M)
    for line in re.findall(r"^(ExecStart(?:Pre)?)=(.*)$", text, re.M):
        # a bare name: systemd looks in /usr/local/bin, /usr/bin ... (pip as root writes
        # /usr/local/bin, a package /usr/bin); a venv is named in full via systemctl edit
        assert line[1].split()[0] == "sipcaptool", line
    assert "systemctl edit" in text
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(ROOT / "contrib" / unit)],
                           capture_output=True, text=True)
        # only the command's absence on this machine may be reported
        problems = [ln for ln in r.stderr.splitlines()
                    if ln.strip() and "is not executable" not in ln]
        assert problems == [], r.stderr


@pytest.mark.parametrize("unit", ["sipcaptool-db-init.service", "sipcaptool-prune.service"])
def test_timer_services_name_the_command_as_the_others_do(unit):
    text = (ROOT / "contrib" / unit).read_text()
    lines = re.findall(r"^ExecStart=(.*)$", text, re.M)
    assert lines and all(line.split()[0] == "sipcaptool" for line in lines), lines
    assert "systemctl edit" in text
