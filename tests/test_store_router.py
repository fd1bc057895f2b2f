import time
import zlib
from collections import Counter

import pytest

from sipcaptool.errors import ConfigError
from sipcaptool.store.router import Router, expand_table_name, longest_expansion, validate_table_name

TS = 1_764_374_399_999_999  # 2025-11-28 23:59:59.999999 UTC


def test_single_table_any_mode():
    for mode in ("rand", "round_robin", "hash"):
        assert Router(["sip_capture"], mode).choose("k", TS) == "sip_capture"


def test_hash_is_zlib_crc32_mod_n_and_keeps_call_together():
    tables = ["t0", "t1", "t2"]
    r = Router(tables, "hash", "call_id")
    for i in range(300):
        key = f"{i}-abc@host"
        want = tables[zlib.crc32(key.encode()) % 3]
        assert {r.choose(key, TS + j) for j in range(5)} == {want}
    assert Counter(r.choose(f"c{i}", TS) for i in range(3000)).keys() == set(tables)


def test_hash_empty_key_goes_to_first_table():
    assert Router(["a", "b", "c"], "hash").choose("", TS) == "a"


def test_round_robin_cycles():
    r = Router(["a", "b", "c"], "round_robin")
    assert [r.choose("", TS) for _ in range(7)] == list("abcabca")
    r = Router(["a", "b"], "round_robin", start=1)
    assert [r.choose("", TS) for _ in range(3)] == ["b", "a", "b"]


def test_rand_uses_all_tables():
    r = Router(["a", "b", "c"], "rand")
    assert Counter(r.choose("", TS) for _ in range(600)).keys() == {"a", "b", "c"}


def test_strftime_in_utc_from_capture_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        r = Router(["sip_%Y%m%d", "sip_%Y%m%d_%H"], "round_robin")
        assert r.choose("", TS) == "sip_20251128"
        assert r.choose("", TS) == "sip_20251128_23"
        assert r.choose("", TS + 1) == "sip_20251129"       # next microsecond: next day
        assert r.choose("", TS + 1) == "sip_20251129_00"
        assert r.choose("", TS) == "sip_20251128"            # cache goes back too
        assert expand_table_name("x_%Y_%j", 0) == "x_1970_001"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("bad", ["", "a-b", "a b", "x;drop", "t%z", "t%", "1abc", "a`b",
                                 "x" * 64, "a%%b", "t_%s", "t_%Z", "%Y_t", "%d", "a$b"])
def test_bad_table_names(bad):
    with pytest.raises(ConfigError):
        validate_table_name(bad)


def test_length_is_checked_against_the_longest_date_and_the_database():
    name = "t" * 54 + "_%A"                   # Thursday: 63, Wednesday: 64
    assert longest_expansion(name) == 64
    assert validate_table_name(name, "mysql") == name
    assert validate_table_name(name, "sqlite") == name
    with pytest.raises(ConfigError, match="Wednesday"):
        validate_table_name(name, "postgresql")
    with pytest.raises(ConfigError):
        Router([name], dialect="postgresql")
    assert Router([name], dialect="mysql").choose("", 1_788_307_200_000_000) == \
        "t" * 54 + "_Wednesday"
    assert validate_table_name("x" * 500, "sqlite") and validate_table_name("x" * 500, "none")


def test_dated_flag_and_clamped_times():
    assert not Router(["a", "b"]).dated
    assert Router(["a", "b_%Y"]).dated
    assert expand_table_name("t_%Y", 10 ** 20) == "t_9999"
    assert expand_table_name("t_%Y", -1) == "t_1970"


def test_bad_mode_and_source():
    with pytest.raises(ConfigError):
        Router(["a"], "random")
    with pytest.raises(ConfigError):
        Router(["a"], "hash", "via")
    with pytest.raises(ConfigError):
        Router([], "rand")


def test_call_id_key():
    assert Router.call_id_key("  abc@h  tail") == "abc@h"
    assert Router.call_id_key("") == ""
