"""``sipcaptool config show`` and ``config check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipcaptool.cli import cli
from sipcaptool.commands.configcmd import check_file, mask_secrets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


GOOD = """
db_url = "mysql://homer:s3cr@t@127.0.0.1/homer"
table_name = "sip_capture_%Y%m%d"
insert_retries = 5
insert_retry_timeout = 300
mt_mode = "round_robin"
capture_on = 0

[capture_mode.calls]
db_url = "postgresql://pg:pgsecret@127.0.0.1/homer"
table_name = "sip_a|sip_b"
mt_mode = "hash"
hash_source = "from_user"
"""


def test_mask_secrets():
    assert mask_secrets("mysql://u:p@ss@h/db") == "mysql://u:***@h/db"
    assert mask_secrets("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_secrets("m=>db_url=mysql://u:pw@h/d;table_name=t;") == "m=>db_url=mysql://u:***@h/d;table_name=t;"
    assert mask_secrets("sqlite:///x.db") == "sqlite:///x.db"


def test_show_values_origins_and_masked_passwords(tmp_path):
    f = write(tmp_path, GOOD)
    r = run("config", "show", "--config", f, "--capture-node", "cli-node",
            env={"SIPCAPTOOL_INSERT_RETRIES": "7"})
    assert r.exit_code == 0, r.output
    out = r.output
    assert "s3cr" not in out and "pgsecret" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if " = " in line and "#" in line}
    assert '"mysql://homer:***@127.0.0.1/homer"' in lines["db_url"] and f"# file {f}" in lines["db_url"]
    assert "7" in lines["insert_retries"]
    assert "# environment SIPCAPTOOL_INSERT_RETRIES" in lines["insert_retries"]
    assert '"cli-node"' in lines["capture_node"] and "# command line" in lines["capture_node"]
    assert "# default" in lines["hash_source"]
    assert "[capture_mode.calls]" in out and "postgresql://pg:***@127.0.0.1/homer" in out


def test_show_json(tmp_path):
    f = write(tmp_path, GOOD)
    r = run("config", "show", "--config", f, "--json", "--capture-mode", "calls")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["settings"]["db_url"] == {"value": "mysql://homer:***@127.0.0.1/homer",
                                         "origin": f"file {f}"}
    assert doc["settings"]["capture_on"] == {"value": 0, "origin": f"file {f}"}
    assert doc["settings"]["batch_size"]["origin"] == "default"
    assert doc["capture_modes"]["calls"] == {"db_url": "postgresql://pg:***@127.0.0.1/homer",
                                             "table_name": "sip_a|sip_b", "mt_mode": "hash",
                                             "hash_source": "from_user"}
    assert doc["active_modes"] == ["calls"]


def test_show_capture_mode_definitions_as_a_list_with_passwords_masked(tmp_path):
    definition = "x=>db_url=mysql://u:pw@h/db;table_name=a|b;"
    r = run("config", "show", "--json", "--capture-mode", "calls", "--capture-mode", definition,
            "--config", write(tmp_path, GOOD))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["settings"]["capture_mode"] == {
        "value": ["calls", "x=>db_url=mysql://u:***@h/db;table_name=a|b;"],
        "origin": "command line"}
    assert doc["active_modes"] == ["calls", "x"]
    r = run("config", "show", env={"SIPCAPTOOL_CAPTURE_MODE": definition})
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("capture_mode ")]
    assert '["x=>db_url=mysql://u:***@h/db;table_name=a|b;"]' in line and "pw" not in line
    assert "pgsecret" not in r.output


def test_show_without_a_file_gives_defaults():
    r = run("config", "show", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["settings"]["db_url"] == {"value": "sqlite:///sipcapture.db", "origin": "default"}


def test_check_ok(tmp_path):
    f = write(tmp_path, GOOD)
    Path(f).chmod(0o600)  # it holds passwords: readable by others, it would be warned about
    r = run("config", "check", "--config", f)
    assert (r.exit_code, r.output) == (0, f"{f}: ok\n")
    assert check_file(f) == []


@pytest.mark.parametrize("line,needles", [
    ("insert_retries = 501", ["insert_retries = 501", "allowed: 0..500"]),
    ("insert_retries = -1", ["insert_retries = -1", "allowed: 0..500"]),
    ("insert_retry_timeout = 301", ["insert_retry_timeout = 301", "allowed: 0..300"]),
    ('mt_mode = "roundrobin"', ["mt_mode = 'roundrobin'", "rand, round_robin, hash"]),
    ('hash_source = "callid"', ["hash_source = 'callid'", "call_id, from_user, to_user"]),
    ('capture_on = "maybe"', ["capture_on = 'maybe'", "not a whole number", "0..1"]),
    ("capture_on = 2", ["capture_on = 2", "allowed: 0..1"]),
    ("batch_size = 1.5", ["batch_size = 1.5", "whole number", "1..100000"]),
    ('flush_interval = "soon"', ["flush_interval = 'soon'", "not a number", "0.01..60.0"]),
    ("capture_node = 5", ["capture_node = 5", "string"]),
    ('table_name = "sip;drop"', ["table_name = 'sip;drop'", "not a valid table name", "letters"]),
    ('db_ulr = "sqlite:///x.db"', ["db_ulr", "unknown setting", "did you mean 'db_url'"]),
    ('db_url = "mysq://u:pw@h/db"', ["db_url", "unknown scheme 'mysq'", "allowed:"]),
    ('capture_mode = ["nope"]', ["capture_mode = 'nope'", "not defined"]),
    ('capture_mode = ["x=>db_url=sqlite:///y.db;table_name=t;mt_mode=zz;"]', ["mt_mode = 'zz'", "allowed"]),
])
def test_check_reports_name_value_and_allowed(tmp_path, line, needles):
    f = write(tmp_path, line + "\n")
    r = run("config", "check", "--config", f)
    assert r.exit_code == 2
    assert r.stdout == ""
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    assert "pw@" not in r.stderr


def test_check_reports_every_problem_at_once(tmp_path):
    f = write(tmp_path, """
insert_retries = 501
insert_retry_timeout = -1
mt_mode = "bad"
typo_setting = 1

[capture_mode.m]
db_url = "sqlite:///x.db"
table_name = "t"
mt_mode = "worse"
""")
    problems = check_file(f)
    assert len(problems) == 5, problems
    r = run("config", "check", "--config", f)
    assert r.exit_code == 2 and "5 problems" in r.stderr


def test_check_bad_toml_and_missing_file(tmp_path):
    r = run("config", "check", "--config", write(tmp_path, "a = = 1\n"))
    assert r.exit_code == 2 and "not valid TOML" in r.stderr
    r = run("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert r.exit_code == 2 and "not found" in r.stderr


def test_check_as_a_user_runs_it(tmp_path):
    f = write(tmp_path, "insert_retries = 900\n")
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "config", "check", "--config", f],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "insert_retries = 900" in p.stderr and "0..500" in p.stderr
    f = write(tmp_path, GOOD, "good.toml")
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "config", "check", "--config", f],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, f"{f}: ok")
