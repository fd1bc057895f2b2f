"""End to end: every setting from an operator's TOML file, the environment and the
command line, as a user runs the real ``sipcaptool`` (subprocesses).

An operator's file with every ``hep`` setting and the auth key in a file of its own
(like a systemd credential) starts a collector that stores what carries the key and
drops what does not; the key never appears in the output, the log or ``config show``;
the environment alone starts one too; options that contradict each other are refused
with one line and exit status 2; a database password read from a file reaches a real
MariaDB account that has one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_helpers import read_rows
from test_hep_collector import follow_stderr, message, stop_process

from sipcaptool.encode.hep import encode_hep3
from sipcaptool.record import SIP_COLUMN_NAMES

ROOT = Path(__file__).resolve().parents[1]
SECRET = "k3y-Only-In-The-File-7f3a"
PCAP = ROOT / "tests" / "pcaps" / "hep3-in-udp.pcap"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ if env is None else env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    full.pop("SIPCAPTOOL_CONTROL", None)
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any SIPCAPTOOL_ variable of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPCAPTOOL_")}
    env.update(extra)
    return env


class Hep:
    """``sipcaptool hep ARGS`` started as a user would; ``ports`` from its
    'listening on' lines (its listeners are on port 0)."""

    def __init__(self, *args: str, env: dict[str, str], want: int) -> None:
        full = dict(env, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "sipcaptool", "hep", *args],
                                     cwd=ROOT, env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.ports, self.reader = follow_stderr(self.proc, self.err, want, "hep")

    def send_udp(self, data: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", self.ports["udp"]))

    def send_tcp(self, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.ports["tcp"]), timeout=10) as s:
            s.sendall(data)

    def stop(self) -> tuple[int, str, str]:
        out = stop_process(self.proc, self.reader, self.err)
        return self.proc.returncode, out, "\n".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def rows(db_url: str) -> dict[str, dict]:
    return {r["callid"]: r for r in (dict(zip(SIP_COLUMN_NAMES, t, strict=True))
                                     for t in read_rows(db_url, "sip_capture"))}


# every setting of `sipcaptool hep`, as an operator writes them (values not the defaults)
def operator_toml(tmp: Path, db_url: str) -> str:
    return f"""\
# /etc/sipcaptool.toml of a HEP collector
db_url = "{db_url}"
table_name = "sip_capture"
capture_node = "homer-test-7"
insert_retries = 3
insert_retry_timeout = 20
batch_size = 500
batch_max_bytes = "4M"
flush_interval = 0.2
spool_dir = "{tmp / 'spool'}"
spool_max_bytes = "64M"
hep_max_inflated = "512K"
callid_aleg_header = "X-CID;X-Leg"
capture_bad_msgs = 1
custom_field1_header = "X-Mac"

[hep]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
auth_key_file = "{tmp / 'hep-auth-key'}"
workers = 2
rcvbuf = "1M"
tcp_idle_timeout = 120.0
tcp_max_connections = 100
stop_drain_timeout = 20.0
max_clock_skew = 0.0
control = "{tmp / 'hep.sock'}"
control_timeout = 3.0
control_max_connections = 8
metrics = "127.0.0.1:0"
log_level = "debug"
log_file = "{tmp / 'hep.log'}"
log_format = "json"
"""


HEP_SETTINGS = ("listen", "auth_key_file", "workers", "rcvbuf", "tcp_idle_timeout",
                "tcp_max_connections", "stop_drain_timeout", "max_clock_skew", "control",
                "control_timeout", "control_max_connections", "metrics", "log_level",
                "log_file", "log_format")


def test_operator_toml_with_every_hep_setting_and_the_key_from_a_file(tmp_path, sqlite_url):
    key = tmp_path / "hep-auth-key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)
    conf = tmp_path / "sipcaptool.toml"
    conf.write_text(operator_toml(tmp_path, sqlite_url))
    conf.chmod(0o600)
    env = clean_env()

    # config show: every value from the file's [hep] table, the key masked
    shown = run("config", "show", "--config", str(conf), "--for", "hep", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)["settings"]
    for name in HEP_SETTINGS:
        assert doc[name]["origin"] == f"file {conf} [hep]", name
    assert doc["auth_key"] == {"value": "***",
                               "origin": f"file {conf} [hep] (auth_key_file)"}
    assert doc["workers"]["value"] == 2 and doc["rcvbuf"]["value"] == 1 << 20
    assert doc["capture_node"]["origin"] == f"file {conf}"
    assert SECRET not in shown.stdout + shown.stderr
    # the file is mode 0600 and holds no secret itself: no warning
    assert "readable by others" not in shown.stderr

    c = Hep("--config", str(conf), "--json", env=env, want=2)
    try:
        c.send_udp(encode_hep3(message("with-key-udp"), auth_key=SECRET.encode()))
        c.send_tcp(encode_hep3(message("with-key-tcp"), auth_key=SECRET.encode()))
        c.send_udp(encode_hep3(message("wrong-key"), auth_key=b"guess"))
        c.send_udp(encode_hep3(message("no-key")))
        # the control socket of the file answers
        deadline = time.monotonic() + 20
        while True:
            ping = run("ctl", "--control", str(tmp_path / "hep.sock"), "ping", env=env)
            if ping.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stderr
        time.sleep(0.5)
        code, out, err = c.stop()
    finally:
        c.kill()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["workers"] == 2
    assert summary["dropped"] == {"auth": 2}
    stored = rows(sqlite_url)
    assert set(stored) == {"with-key-udp", "with-key-tcp"}
    assert {r["node"] for r in stored.values()} == {"homer-test-7:0"}  # node:capture id
    log = (tmp_path / "hep.log").read_text()
    entries = [json.loads(line) for line in log.splitlines()]
    assert entries and all(e["logger"].startswith("sipcaptool") for e in entries)
    assert any(e["level"] == "info" for e in entries)  # below the default level: logged
    assert any("metrics http://127.0.0.1:" in line for line in err.splitlines())
    for text in (out, err, log):
        assert SECRET not in text


def test_environment_alone_runs_the_collector_with_a_systemd_credential(tmp_path, sqlite_url):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "hep-auth-key").write_text(SECRET)
    env = clean_env(SIPCAPTOOL_DB_URL=sqlite_url,
                    SIPCAPTOOL_LISTEN="udp:127.0.0.1:0 tcp:127.0.0.1:0",
                    SIPCAPTOOL_AUTH_KEY_FILE="hep-auth-key",
                    CREDENTIALS_DIRECTORY=str(creds),
                    SIPCAPTOOL_CAPTURE_NODE="from-env",
                    SIPCAPTOOL_CONTROL="none",
                    SIPCAPTOOL_SPOOL_DIR="none")
    shown = run("config", "show", "--json", env=env)
    doc = json.loads(shown.stdout)["settings"]
    assert doc["listen"] == {"value": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
                             "origin": "environment SIPCAPTOOL_LISTEN"}
    assert doc["auth_key"]["value"] == "***"
    assert doc["auth_key"]["origin"] == "environment SIPCAPTOOL_AUTH_KEY_FILE (auth_key_file)"
    c = Hep("--json", env=env, want=2)
    try:
        c.send_udp(encode_hep3(message("env-good"), auth_key=SECRET.encode()))
        c.send_udp(encode_hep3(message("env-bad"), auth_key=b"nope"))
        time.sleep(0.5)
        code, out, err = c.stop()
    finally:
        c.kill()
    assert code == 0, err
    assert json.loads(out)["dropped"] == {"auth": 1}
    assert {k: r["node"] for k, r in rows(sqlite_url).items()} == {"env-good": "from-env:0"}
    # the command line wins over the environment, and config show says so
    shown = run("config", "show", "--json", "--capture-node", "cli", env=env)
    assert json.loads(shown.stdout)["settings"]["capture_node"] == {
        "value": "cli", "origin": "command line"}


def test_secrets_never_printed_and_readable_config_warned(tmp_path):
    conf = tmp_path / "world.toml"
    conf.write_text(f'db_url = "postgresql://homer:{SECRET}@127.0.0.1:1/homer"\n'
                    f'[hep]\nauth_key = "{SECRET}"\n')
    conf.chmod(0o644)
    env = clean_env()
    shown = run("config", "show", "--config", str(conf), "--for", "hep", env=env)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout + shown.stderr
    assert re.search(r'^auth_key\s+= "\*\*\*"', shown.stdout, re.M)
    assert "postgresql://homer:***@127.0.0.1:1/homer" in shown.stdout
    warning = [x for x in shown.stderr.splitlines() if "readable by others" in x]
    assert len(warning) == 1 and "chmod 600" in warning[0] and "auth_key" in warning[0]
    checked = run("config", "check", "--config", str(conf), env=env)
    assert checked.returncode == 0 and "readable by others" in checked.stderr
    assert SECRET not in checked.stdout + checked.stderr
    # a key on the command line: warned about (ps shows it), never echoed
    r = run("hep", "--auth-key", SECRET, "--listen", "udp:127.0.0.1:0", "--db", "none",
            "--control", "none", "--duration", "0.2", "-v", env=env)
    assert SECRET not in r.stdout + r.stderr
    assert "--auth-key-file" in r.stderr
    # a database that refuses: the error names the database, not the password
    r = run("replay", str(PCAP), "--config", str(conf), "--spool-dir", "none", env=env)
    assert r.returncode == 4 and SECRET not in r.stdout + r.stderr, r.stderr
    # a key file that cannot be read: the error names the file
    r = run("hep", "--auth-key-file", str(tmp_path / "missing"), env=env)
    assert r.returncode == 2 and "auth_key_file" in r.stderr and "missing" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (("live", "-i", "lo", "--raw-interface", "eth0"),
     "-i/--interface and --raw-interface both give raw_interface"),
    (("replay", "--db", "sqlite:///a.db", "--db-url", "sqlite:///b.db", "x.pcap"),
     "--db-url and --db both give db_url"),
    (("hep", "-q", "-v"), "-v/--verbose and -q/--quiet both give log_level"),
    (("replay", "--hash-source", "from_user", "x.pcap"),
     "hash_source = 'from_user' (command line) is used only with mt_mode = 'hash'"),
    (("hep", "--auth-key", "k", "--auth-key-file", "/etc/hostname"),
     "auth_key (command line) and auth_key_file (command line) both give the HEP auth key"),
    (("replay", "--db", "mysql://root:pw@127.0.0.1/x", "--db-password-file", "/etc/hostname",
      "x.pcap"), "has a password and db_password_file is set"),
])
def test_conflicting_options_refused(tmp_path, args, needle):
    r = run(*args, env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sipcaptool: error: "), r.stderr
    assert needle in lines[0]
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_hash_source_with_mt_mode_hash_from_the_file_is_accepted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('table_name = "a|b"\nmt_mode = "hash"\n')
    r = run("config", "show", "--config", str(conf), "--hash-source", "from_user",
            env=clean_env())
    assert r.returncode == 0, r.stderr
    assert re.search(r'^hash_source\s+= "from_user"\s+# command line', r.stdout, re.M)


def test_db_password_file_reaches_a_real_account(tmp_path, mysql_url):
    import pymysql

    from sipcaptool.store.url import parse_db_url

    u = parse_db_url(mysql_url)
    password = "p@ss:w/rd %41"  # characters a URL would need escaped
    admin = pymysql.connect(host=u.host, port=u.port or 3306, user=u.user or "root",
                            password=u.password, autocommit=True)
    user = f"sct_{os.getpid()}"
    try:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL ON `{u.database}`.* TO %s@'%%'", (user,))
        (tmp_path / "db-password").write_text(password + "\n")
        url = f"mysql://{user}@{u.host}:{u.port or 3306}/{u.database}"
        env = clean_env(SIPCAPTOOL_DB_PASSWORD_FILE=str(tmp_path / "db-password"))
        r = run("db", "init", "--db", url, env=env)
        assert r.returncode == 0, r.stderr
        r = run("replay", str(PCAP), "--db", url, "--json", "--spool-dir", "none", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["stored_total"] > 0
        assert password not in r.stdout + r.stderr
        # without the file the account is refused: the password did come from it
        r = run("replay", str(PCAP), "--db", url, "--spool-dir", "none", env=clean_env())
        assert r.returncode == 4 and password not in r.stderr
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()


def test_db_settings_from_the_file_and_the_environment(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    conf = tmp_path / "c.toml"
    conf.write_text(f'db_url = "{db}"\ntable_name = "sip_%Y%m%d"\n'
                    '[db]\ndays = 3\naux_tables = 0\nretention = "7d"\n')
    r = run("db", "init", "--config", str(conf), "--json", env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)[0]
    assert len([t for t in created["created"] if t.startswith("sip_")]) == 3, created
    assert not any(t.endswith("_capture") for t in created["created"]), created  # no aux
    # db prune takes the retention of the file; without one it asks for it
    r = run("db", "prune", "--config", str(conf), "--dry-run", env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("db", "prune", "--db", db, "--dry-run", env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2 and "--older-than AGE" in r.stderr
    r = run("db", "prune", "--db", db, "--dry-run", env=clean_env(SIPCAPTOOL_RETENTION="2w"),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
