"""Settings: precedence file < environment < command line, validation, capture modes."""

import dataclasses

import pytest

from sipcaptool.config import PARAMS, Settings, parse_capture_mode
from sipcaptool.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


def test_defaults():
    s = Settings.load(None, {}, env={})
    assert s.db_url == "sqlite:///sipcapture.db"
    assert s.table_name == "sip_capture"
    assert s.mt_mode == "rand" and s.hash_source == "call_id"
    assert s.capture_node == "homer01"
    assert s.insert_retries == 0 and s.insert_retry_timeout == 60
    assert s.aleg_headers() == ("X-CID",)
    assert s.custom_headers() == ("Mac", "IP", "Port")
    assert [m.tables for m in s.active_modes()] == [["sip_capture"]]


def test_precedence_file_env_cli(tmp_path):
    f = write(tmp_path, 'capture_node = "file"\ntable_name = "a|b"\nmt_mode = "hash"\n')
    s = Settings.load(f, {}, env={})
    assert (s.capture_node, s.origin["capture_node"]) == ("file", f"file {f}")
    s = Settings.load(f, {}, env={"SIPCAPTOOL_CAPTURE_NODE": "env"})
    assert s.capture_node == "env" and s.origin["capture_node"].startswith("environment")
    s = Settings.load(f, {"capture_node": "cli"}, env={"SIPCAPTOOL_CAPTURE_NODE": "env"})
    assert s.capture_node == "cli" and s.origin["capture_node"] == "command line"
    assert s.default_mode().tables == ["a", "b"] and s.mt_mode == "hash"


@pytest.mark.parametrize("name,value,needle", [
    ("insert_retries", 501, "allowed: 0..500"),
    ("insert_retry_timeout", -1, "allowed: 0..300"),
    ("mt_mode", "roundrobin", "rand, round_robin, hash"),
    ("hash_source", "callid", "call_id, from_user, to_user"),
    ("table_name", "a||b", "not a valid table name"),
    ("table_name", "sip;drop", "not a valid table name"),
    ("insert_retries", "five", "not a whole number"),
])
def test_bad_values_name_setting_value_and_allowed(name, value, needle):
    with pytest.raises(ConfigError) as e:
        Settings.load(None, {name: value}, env={})
    assert name in str(e.value) and needle in str(e.value)


def test_unknown_setting_in_file(tmp_path):
    f = write(tmp_path, "db_ulr = 'x'\n")
    with pytest.raises(ConfigError, match="unknown setting 'db_ulr'"):
        Settings.load(f, {}, env={})


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Settings.load(str(tmp_path / "nope.toml"), {}, env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(write(tmp_path, "a = = 1"), {}, env={})


def test_capture_mode_module_syntax():
    m = parse_capture_mode("mode1=>db_url=mysql://u:p@h/db1;table_name=c1|c2;mt_mode=hash;hash_source=call_id;")
    assert (m.name, m.db_url, m.tables, m.mt_mode, m.hash_source) == (
        "mode1", "mysql://u:p@h/db1", ["c1", "c2"], "hash", "call_id")
    m = parse_capture_mode("mode2=>db_url=sqlite:///x.db;table_name=t3|t4;mt_mode=rand;")
    assert m.hash_source == "call_id" and m.tables == ["t3", "t4"]
    with pytest.raises(ConfigError, match="mt_mode"):
        parse_capture_mode("m=>db_url=sqlite:///x.db;table_name=t;mt_mode=nope;")
    with pytest.raises(ConfigError, match="required"):
        parse_capture_mode("m=>table_name=t;")


def test_capture_modes_from_file_and_selection(tmp_path):
    f = write(tmp_path, """
[capture_mode.calls]
db_url = "sqlite:///calls.db"
table_name = "sip_a|sip_b"
mt_mode = "hash"
hash_source = "from_user"
""")
    s = Settings.load(f, {}, env={})
    assert [m.name for m in s.active_modes()] == ["default"]
    s = Settings.load(f, {"capture_mode": ("calls",)}, env={})
    (m,) = s.active_modes()
    assert (m.db_url, m.tables, m.mt_mode, m.hash_source) == (
        "sqlite:///calls.db", ["sip_a", "sip_b"], "hash", "from_user")
    with pytest.raises(ConfigError, match="not defined"):
        Settings.load(f, {"capture_mode": ("other",)}, env={})
    s = Settings.load(f, {"capture_mode": ("calls", "x=>db_url=sqlite:///y.db;table_name=t;")}, env={})
    assert [m.name for m in s.active_modes()] == ["calls", "x"]


def test_strftime_table_names_allowed():
    s = Settings.load(None, {"table_name": "sip_capture_%Y%m%d|other"}, env={})
    assert s.default_mode().tables == ["sip_capture_%Y%m%d", "other"]


def test_callid_aleg_list_max_16():
    s = Settings.load(None, {"callid_aleg_header": ";".join(f"X-H{i}" for i in range(20))}, env={})
    assert len(s.aleg_headers()) == 16 and s.aleg_headers()[0] == "X-H0"


def test_capture_mode_selected_in_the_file(tmp_path):
    f = write(tmp_path, """
[capture_mode]
use = ["calls"]

[capture_mode.calls]
db_url = "sqlite:///calls.db"
table_name = "sip_a|sip_b"
""")
    s = Settings.load(f, {}, env={})
    assert [m.name for m in s.active_modes()] == ["calls"]
    bad = write(tmp_path, "[capture_mode]\nuse = [\"nope\"]\n")
    with pytest.raises(ConfigError, match="'nope' is not defined"):
        Settings.load(bad, {}, env={})


def test_the_parameter_table_is_the_fields_of_settings():
    # PARAMS is derived from the typed fields: same names, same order, and each
    # default is of the field's type and within what is allowed
    settings = [f.name for f in dataclasses.fields(Settings)
                if f.name not in ("origin", "modes", "use_modes", "warnings")]
    assert list(PARAMS) == settings
    s = Settings.load(None, {}, env={})
    for name, (kind, default, allowed, _secret, _size) in PARAMS.items():
        value = getattr(s, name)
        if kind is list:
            assert list(value) == default and allowed is None, name
            continue
        assert type(value) is kind and value == default, name
        if kind in (int, float):
            lo, hi = allowed
            assert type(lo) is kind and type(hi) is kind and lo <= value <= hi, name
        elif allowed is not None:
            assert value in allowed, name
    assert s.values == {name: getattr(s, name) for name in PARAMS}


def test_settings_are_frozen_and_with_value_gives_a_copy():
    s = Settings.load(None, {}, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 5
    t = s.with_value("batch_size", "5", "command line")
    assert (t.batch_size, t.origin["batch_size"]) == (5, "command line")
    assert (s.batch_size, s.origin["batch_size"]) == (2000, "default")
    with pytest.raises(ConfigError, match=r"batch_size = 0 \(from command line\): out of range"):
        s.with_value("batch_size", 0, "command line")
    with pytest.raises(ConfigError, match="unknown setting 'batch'"):
        s.with_value("batch", 1, "command line")
