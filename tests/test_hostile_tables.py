"""Senders do not choose how many tables exist (issue 17, section 6).

* With a strftime table name (``sip_%Y%m%d``) the message's time picks the table, and a
  HEP agent chooses that time: 3,000 packets with 3,000 dates made 3,001 tables and
  minutes of writer backlog. ``hep`` and ``live`` name the table by the arrival time
  when the message's own time is further than ``max_clock_skew`` from the clock
  (counted as ``adjusted:clock-skew``; the row keeps its own time); ``replay`` keeps the
  message's own time (old captures are legitimate).
* ``db init`` and the collectors apply one rule to table names (the router's
  ``validate_table_name``): ``a%%b`` is refused by both (``db init`` created ``aDec``),
  ``%s``/``%Z`` are refused by both, and the length is checked against the longest
  expansion of every code (``%A`` Wednesday, ``%B`` September) and the database's
  identifier limit (MySQL 64, PostgreSQL 63, SQLite none).
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from decode_builders import udp4_frame
from store_helpers import connect, q, tables
from test_hep_collector import ROOT, message, sip

from sipcaptool.cli import cli
from sipcaptool.config import Settings
from sipcaptool.encode.hep import encode_hep3
from sipcaptool.errors import ConfigError
from sipcaptool.pipeline import Pipeline
from sipcaptool.stats import Stats
from sipcaptool.store.router import (
    CODE_WIDTHS,
    IDENT_LIMITS,
    Router,
    expand_table_name,
    longest_expansion,
    validate_table_name,
)
from sipcaptool.store.schema import init_db, sip_table_sql

DAY_US = 86_400_000_000


def _utc_day(ts_us: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ts_us // 1_000_000))


def _now_us() -> int:
    return time.time_ns() // 1000


def _sipcaptool(args: list[str], capsys) -> tuple[int, str]:
    """``sipcaptool ARGS`` in this process, as the console script runs it: (exit status,
    stdout + stderr)."""
    from sipcaptool.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def _sip_tables(url: str, prefix: str = "sip_") -> set[str]:
    return {t for t in tables(url) if t.startswith(prefix)}


def _rows(url: str, table: str) -> list[dict]:
    conn = connect(url)
    try:
        cur = conn.cursor()
        cols = ("callid", "micro_ts", "date")
        cur.execute(f"SELECT {', '.join(q(url, c) for c in cols)} FROM {q(url, table)}")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


# --------------------------------------------------------------------------- the attack

def _far_dates(n: int) -> list[int]:
    """n distinct whole-second times on n distinct days between 1975 and 2016, none
    within a day of now."""
    base = dt.datetime(1975, 1, 1, 12, 0, 1, tzinfo=dt.UTC)
    return [int((base + dt.timedelta(days=5 * i)).timestamp()) * 1_000_000 for i in range(n)]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_3000_hep_dates_make_at_most_two_tables(db, request, collectors):  # noqa: F811
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    n = 3000
    dates = _far_dates(n)
    assert len({_utc_day(ts) for ts in dates}) == n
    day0 = _utc_day(_now_us())
    c = collectors(url, "--table-name", "sip_%Y%m%d", "--spool-dir", "none", tcp=False)
    started = time.monotonic()
    for i, ts in enumerate(dates):
        c.send_udp(encode_hep3(message(f"day-{i}", ts=ts), capture_id=9))
        if i % 200 == 199:
            time.sleep(0.005)
    # every message is stored within seconds (before: one table each, minutes of backlog)
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline:
        try:
            stored = sum(len(_rows(url, t)) for t in _sip_tables(url))
        except Exception:  # noqa: BLE001 - a table being created while we read
            stored = -1
        if stored == n:
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    rc, summary, err = c.stop()
    day1 = _utc_day(_now_us())
    assert rc == 0, err
    made = _sip_tables(url)
    # today's table and tomorrow's, which the collector makes ahead of midnight itself
    # (and the next day's, if the test ran across midnight UTC)
    tomorrow = _utc_day(_now_us() + DAY_US)
    allowed = {f"sip_{day0}", f"sip_{day1}", f"sip_{tomorrow}",
               f"sip_{_utc_day(_now_us() - (DAY_US if day0 != day1 else 0) + DAY_US)}"}
    assert made <= allowed and f"sip_{day0}" in made and len(made) <= 3, \
        (sorted(made)[:5], len(made))
    assert stored == n, f"{stored} of {n} stored after {took:.0f} s in {len(made)} tables"
    assert summary["stored_total"] == n and summary["dropped"] == {}, summary
    assert summary["adjusted"] == {"clock-skew": n}, summary
    # each row keeps its own time: micro_ts and date are the message's, not the arrival's
    rows = {r["callid"]: r for t in made for r in _rows(url, t)}
    assert len(rows) == n
    for i in (0, 1, n // 2, n - 1):
        r = rows[f"day-{i}"]
        assert int(r["micro_ts"]) == dates[i]
        assert str(r["date"])[:10] == time.strftime(
            "%Y-%m-%d", time.gmtime(dates[i] // 1_000_000))


def test_hep_times_within_the_skew_keep_their_own_table(sqlite_url, collectors):  # noqa: F811
    """A message an hour old (agent clock a little off, or a late delivery) is stored by
    its own time; --max-clock-skew 0 restores the message's time for every message."""
    now = _now_us()
    near = now - 3600 * 1_000_000
    far = 1_000_000_000 * 1_000_000  # 2001-09-09
    c = collectors(sqlite_url, "--table-name", "sip_%Y%m%d", tcp=False)
    c.send_udp(encode_hep3(message("near", ts=near), capture_id=1))
    c.send_udp(encode_hep3(message("far", ts=far), capture_id=1))
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["adjusted"] == {"clock-skew": 1}, summary
    by_table = {t: {r["callid"] for r in _rows(sqlite_url, t)} for t in _sip_tables(sqlite_url)}
    assert "near" in by_table[f"sip_{_utc_day(near)}"]
    # the arrival day (today, or tomorrow if the test crossed midnight UTC)
    assert "far" in by_table.get(f"sip_{_utc_day(now)}", set()) | \
        by_table.get(f"sip_{_utc_day(_now_us())}", set()), by_table
    assert "sip_20010909" not in by_table

    url2 = sqlite_url.replace(".db", "-noskew.db")
    c = collectors(url2, "--table-name", "sip_%Y%m%d", "--max-clock-skew", "0", tcp=False)
    c.send_udp(encode_hep3(message("far", ts=far), capture_id=1))
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["adjusted"] == {} and summary["stored"] == {"sip_20010909": 1}, summary


def test_pipeline_skew_for_live_and_replay(tmp_path):
    """The Pipeline is what ``live`` (max_clock_skew from the setting) and ``replay``
    (0: the message's own time) share; a real SQLite database."""
    old = 946_684_800 * 1_000_000  # 2000-01-01
    for skew, name in ((None, "live"), (0.0, "replay")):
        url = f"sqlite:///{tmp_path / name}.db"
        s = Settings.load(None, {"db_url": url, "table_name": "sip_%Y%m%d"}, env={})
        assert s.max_clock_skew == 86400.0
        stats = Stats()
        p = Pipeline(s, stats, background=False, use_spool=False,
                     max_clock_skew=s.max_clock_skew if skew is None else skew)
        before = _utc_day(_now_us())
        for i in range(3):
            p.submit(message(f"{name}-{i}", ts=old))
        p.submit(message(f"{name}-now", ts=_now_us()))
        p.close()
        made = _sip_tables(url)
        if name == "live":
            assert stats["adjusted:clock-skew"] == 3
            assert made <= {f"sip_{before}", f"sip_{_utc_day(_now_us())}"}, made
            assert sum(len(_rows(url, t)) for t in made) == 4
        else:
            assert stats["adjusted:clock-skew"] == 0
            assert {r["callid"] for r in _rows(url, "sip_20000101")} == \
                {"replay-0", "replay-1", "replay-2"}
            assert len(made) == 2


def test_settings_file_and_environment_know_max_clock_skew(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("max_clock_skew = 3600\n")
    assert Settings.load(str(f), {}, env={}).max_clock_skew == 3600.0
    assert Settings.load(None, {}, env={"SIPCAPTOOL_MAX_CLOCK_SKEW": "60"}).max_clock_skew == 60.0
    with pytest.raises(ConfigError, match="max_clock_skew"):
        Settings.load(None, {}, env={"SIPCAPTOOL_MAX_CLOCK_SKEW": "-1"})
    for cmd in ("hep", "live"):
        assert "--max-clock-skew" in CliRunner().invoke(cli, [cmd, "--help"]).output


# --------------------------------------------------------------------------- replay

def _pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts_us, frame in frames:
        out.append(struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000,
                               len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def test_replay_keeps_old_dates(tmp_path):
    t1 = 1_000_000_000 * 1_000_000 + 5       # 2001-09-09 01:46:40 UTC
    t2 = 1_262_304_000 * 1_000_000 + 7       # 2010-01-01 00:00:00 UTC
    pcap = tmp_path / "old.pcap"
    _pcap(pcap, [(t1, udp4_frame(sip("old-2001"))), (t2, udp4_frame(sip("old-2010")))])
    db = tmp_path / "r.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "--db",
                        f"sqlite:///{db}", "--table-name", "sip_%Y%m%d", str(pcap)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    import json
    summary = json.loads(p.stdout)
    assert summary["stored"] == {"sip_20010909": 1, "sip_20100101": 1}, summary
    assert summary["adjusted"] == {}
    url = f"sqlite:///{db}"
    assert [r["callid"] for r in _rows(url, "sip_20010909")] == ["old-2001"]
    assert [r["micro_ts"] for r in _rows(url, "sip_20100101")] == [t2]


# --------------------------------------------------------------------------- names

NAMES = [
    # (name, valid for sqlite, mysql, postgresql)
    ("sip_capture", True, True, True),
    ("sip_%Y%m%d", True, True, True),
    ("Sip_%a_%b_%H%M%S_%p", True, True, True),
    ("%a_sip", True, True, True),               # a code giving letters may come first
    ("_sip", True, True, True),
    ("a%%b", False, False, False),              # db init created aDec
    ("sip_%%Y", False, False, False),
    ("sip_%s", False, False, False),            # a table per second
    ("sip_%Z", False, False, False),
    ("sip_%z", False, False, False),
    ("sip_%F", False, False, False),            # 2026-12-07: '-' in a name
    ("sip_%c", False, False, False),
    ("sip_%", False, False, False),
    ("%Y_sip", False, False, False),            # starts with a digit on every date
    ("1sip", False, False, False),
    ("a$b", False, False, False),
    ("a-b", False, False, False),
    ("a b", False, False, False),
    ("x;drop", False, False, False),
    ("caf\u00e9", False, False, False),
    ("t" * 63, True, True, True),
    ("t" * 64, True, True, False),
    ("t" * 65, True, False, False),
    # fits on a Thursday (the old check used 1970-01-01), too long on a Wednesday
    ("t" * 54 + "_%A", True, True, False),      # Wednesday: 64
    ("t" * 55 + "_%A", True, False, False),     # Wednesday: 65
    ("t" * 47 + "_%A%B", True, False, False),   # Wednesday September: 66
    ("t" * 45 + "_%A%B", True, True, False),    # 64
    ("t" * 44 + "_%A%B", True, True, True),     # 63
]
DIALECT_URLS = {"sqlite": "sqlite:///{tmp}/n.db", "mysql": "mysql://u@127.0.0.1:1/x",
                "postgresql": "postgresql://u@127.0.0.1:1/x"}


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
@pytest.mark.parametrize("name,ok_sqlite,ok_mysql,ok_pg", NAMES, ids=[n[0][:24] for n in NAMES])
def test_db_init_and_router_agree(name, ok_sqlite, ok_mysql, ok_pg, dialect, tmp_path,
                                  capsys):
    want = {"sqlite": ok_sqlite, "mysql": ok_mysql, "postgresql": ok_pg}[dialect]
    url = DIALECT_URLS[dialect].format(tmp=tmp_path)
    # the collectors: the settings, then the router the pipeline builds
    try:
        settings = Settings.load(None, {"db_url": url, "table_name": name}, env={})
        router = Router(settings.default_mode().tables, dialect=dialect)
        router_ok = True
    except ConfigError:
        router_ok = False
    # db init (--print: the statements, no connection)
    code, output = _sipcaptool(["db", "init", "--print", "--no-aux", "--db", url,
                                "--table-name", name], capsys)
    init_ok = code == 0
    assert code in (0, 2), output
    assert router_ok == init_ok == want, (router_ok, init_ok, output)
    if want:
        # db init creates the very table the router writes to now
        now = _now_us()
        created = output.split("CREATE TABLE IF NOT EXISTS ", 1)[1].split(" ", 1)[0]
        assert created.strip('`"') in (router.choose("", now), router.choose("", now + 1))
        assert "%" not in created
        # and every expansion fits, on the longest date of each code
        assert longest_expansion(name) <= (IDENT_LIMITS[dialect] or 10 ** 6)
    else:
        assert "not a valid table name" in output, output


def test_db_init_percent_percent_no_longer_creates_adec(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'pp.db'}"
    code, output = _sipcaptool(["db", "init", "--db", url, "--table-name", "a%%b"], capsys)
    assert code == 2 and "'%%'" in output, output
    assert not (tmp_path / "pp.db").exists()  # refused before anything was made (was: aDec)


def test_code_widths_are_the_longest_expansions():
    """Every allowed code, over every day of 28 years (every weekday of every month, leap
    years) and the hours 0-23, never gives more characters than CODE_WIDTHS says, and
    reaches it (so the length check is neither loose nor too strict)."""
    seen = {c: 0 for c in CODE_WIDTHS}
    start = int(dt.datetime(1996, 1, 1, tzinfo=dt.UTC).timestamp())
    for day in range(0, 366 * 28, 1):
        for hour in (0, 9, 12, 23):
            t = time.gmtime(start + day * 86400 + hour * 3600 + 59 * 61)
            for c in CODE_WIDTHS:
                seen[c] = max(seen[c], len(time.strftime("%" + c, t)))
    assert seen == CODE_WIDTHS
    assert expand_table_name("x_%A_%B", 1_788_307_200 * 1_000_000) == "x_Wednesday_September"


def test_times_outside_1970_to_9999_name_a_table_that_fits():
    """A time no date can hold (a hostile pcapng can carry one) names the table as the
    nearest end of 1970..9999, so the longest expansion computed above still holds and
    strftime never fails."""
    r = Router(["sip_%Y%m%d"], dialect="postgresql")
    assert r.choose("", 10 ** 19) == "sip_99991231"
    assert r.choose("", -5) == "sip_19700101"
    assert expand_table_name("t_%Y%j", 2 ** 62) == "t_9999365"


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_longest_name_on_its_longest_date_is_created_whole(dialect, request):
    """On the real server: a name whose longest expansion is exactly the limit is created
    on a Wednesday in September under its whole name (nothing cut), and its rows go in;
    one character more is refused by the rule before any table is made."""
    url = request.getfixturevalue("mysql_url" if dialect == "mysql" else "pg_url")
    limit = IDENT_LIMITS[dialect]
    name = "t" * (limit - 19) + "_%A%B"                      # longest: limit
    assert longest_expansion(name) == limit
    wednesday_september = 1_788_307_200 * 1_000_000 + 1    # 2026-09-02 00:00:00 UTC
    full = expand_table_name(name, wednesday_september)
    assert len(full) == limit
    from sipcaptool.store import open_adapter
    from sipcaptool.store.url import parse_db_url

    a = open_adapter(parse_db_url(url))
    a.connect()
    try:
        a.execute_ddl(sip_table_sql(dialect, full))
    finally:
        a.close()
    assert full in tables(url)
    with pytest.raises(ConfigError, match="Wednesday"):
        validate_table_name("t" + name, dialect)
    with pytest.raises(ConfigError):
        init_db(url, ["t" + name], aux=False)


def test_postgresql_indexes_of_a_long_name_stay_distinct(pg_url):
    """PostgreSQL cuts identifiers at 63 characters: '<63-char table>_callid_idx' and the
    other index names would all be cut to the table's own name and be skipped
    ('already exists'). They are shortened and made unique instead."""
    name = "s" * 63
    init_db(pg_url, [name], aux=False)
    conn = connect(pg_url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (name,))
        idx = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    assert len(idx) == 1 + 8, idx        # the primary key and Kamailio's 8 indexes
    assert all(len(i) <= 63 for i in idx)
