"""The replay library without its command line: ``replay_files`` and its report, and
``PacketDecoder.decode_batch`` against the frame-by-frame ``decode``."""

from __future__ import annotations

import array
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sipcaptool.config import Settings
from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.errors import ConfigError, InputError
from sipcaptool.replay import FileReport, ReplayOptions, replay_files, replay_settings
from sipcaptool.sources.pcapfile import CaptureFile
from sipcaptool.stats import Stats

ROOT = Path(__file__).resolve().parents[1]
CALL = ROOT / "examples" / "call.pcap"
PCAPS = ROOT / "tests" / "pcaps"


def _settings(db_url: str) -> Settings:
    return Settings.load(cli={"db_url": db_url}, env={})


@pytest.mark.parametrize("name", ["tcp-streams.pcap", "ip-fragments.pcap", "hep3-in-udp.pcap",
                                  "nanosecond-pcapng.pcapng", "udp-vlan-qinq.pcap"])
def test_decode_batch_gives_what_decode_gives_frame_by_frame(name):
    cap = CaptureFile(str(PCAPS / name))
    batches = [(data, bytes(meta)) for data, meta in cap.batches()]
    assert cap.linktype is not None
    one_stats, batch_stats = Stats(), Stats()
    one = PacketDecoder(cap.linktype, one_stats)
    by_batch = PacketDecoder(cap.linktype, batch_stats)
    expected, got = [], []
    for data, raw in batches:
        meta = memoryview(raw).cast("I")
        for i in range(0, len(meta), 4):
            off = meta[i + 2]
            expected.extend(one.decode(meta[i] * 1000000 + meta[i + 1],
                                       data[off:off + meta[i + 3]]))
        got.extend(by_batch.decode_batch(data, meta))
    expected.extend(one.flush())
    got.extend(by_batch.flush())
    assert expected, name
    assert got == expected
    assert batch_stats == one_stats


def test_decode_batch_of_nothing():
    dec = PacketDecoder(1, Stats())
    assert dec.decode_batch(b"", ()) == []
    assert dec.decode_batch(b"", memoryview(array.array("I"))) == []


def test_replay_files_reports_each_file(tmp_path):
    url = "sqlite:///" + str(tmp_path / "c.db")
    calls: list[tuple[int, int | None]] = []
    report = replay_files([str(CALL), str(PCAPS / "tcp-streams.pcap")], _settings(url),
                          progress=lambda n, total: calls.append((n, total)))
    call, tcp = report.files
    assert (call.path, call.linktype, call.packets, call.messages) == (str(CALL), 1, 30, 30)
    assert call.error is None and not call.truncated and not call.interrupted
    assert tcp.messages > 0
    assert report.packets == report.stats["packets"] == call.packets + (tcp.packets or 0)
    assert report.messages == report.stats["messages"] == call.messages + tcp.messages
    assert report.errors == () and report.exit_error is None
    assert report.interrupted_by is None and report.snapped == 0
    assert report.spool["batches"] == 0
    # progress: once with 0 at the start, then the bytes of every batch; the total is
    # the files' size, the bytes read all of it but the two 24-byte file headers
    size = CALL.stat().st_size + (PCAPS / "tcp-streams.pcap").stat().st_size
    assert calls[0] == (0, size)
    assert {t for _n, t in calls} == {size}
    assert sum(n for n, _t in calls) == size - 2 * 24
    with sqlite3.connect(tmp_path / "c.db") as db:
        rows = db.execute("SELECT count(*) FROM sip_capture").fetchone()[0]
    assert rows == report.stats["stored:sip_capture"] == report.messages
    assert call.to_dict() == {"file": str(CALL), "linktype": 1, "packets": 30}


def test_a_replay_takes_db_insert_mode_2_as_0(tmp_path, caplog):
    """Mode 2 spools new batches ahead of older ones held in memory (a collector never
    waits); a replay waits instead, so that its batches stay in their order, which
    --resume relies on. The other modes and settings are left as they are; the replay
    stores everything all the same."""
    url = "sqlite:///" + str(tmp_path / "c.db")
    two = Settings.load(cli={"db_url": url, "db_insert_mode": 2}, env={})
    assert replay_settings(two).db_insert_mode == 0
    assert replay_settings(two).db_url == url
    one = Settings.load(cli={"db_url": url, "db_insert_mode": 1}, env={})
    assert replay_settings(one) is one
    with caplog.at_level("INFO", logger="sipcaptool.store"):
        report = replay_files([str(CALL)], two)
    assert "db_insert_mode 2 taken as 0" in caplog.text
    assert report.errors == () and report.stats["stored:sip_capture"] == 30


def test_replay_files_options_reach_the_decoder(tmp_path):
    report = replay_files([str(CALL)], _settings("none"), ReplayOptions(ports=frozenset({9})))
    assert report.files[0].packets == 30
    assert report.files[0].messages == 0


def test_a_file_cut_off_is_reported_and_the_others_read(tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(CALL.read_bytes()[:-10])
    report = replay_files([str(cut), str(CALL)], _settings("none"))
    first, second = report.files
    assert first.truncated and first.error and "is cut off after packet 29" in first.error
    assert first.to_dict() == {"file": str(cut), "linktype": 1, "packets": 29,
                               "truncated": True, "error": first.error}
    assert second.packets == 30 and second.error is None
    assert [type(e) for e in report.errors] == [InputError]
    assert report.exit_error is report.errors[0] and report.exit_error.exit_code == 3


def test_problems_found_before_reading_raise(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        replay_files([str(CALL), str(tmp_path / "missing.pcap")], _settings("none"))
    with pytest.raises(ConfigError, match="only once"):
        replay_files(["-", "-"], _settings("none"))


def test_signal_handlers_are_put_back_or_left_alone():
    before = signal.getsignal(signal.SIGINT)
    replay_files([str(CALL)], _settings("none"))
    assert signal.getsignal(signal.SIGINT) is before

    def mine(_signum, _frame):  # pragma: no cover - never delivered
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        seen = []

        def progress(_n, _total):
            seen.append(signal.getsignal(signal.SIGTERM))

        replay_files([str(CALL)], _settings("none"), progress=progress, handle_signals=False)
        assert seen and all(h is mine for h in seen)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_file_report_keys_are_the_summary_keys():
    assert FileReport("x.pcap", error="x.pcap: no such file").to_dict() == {
        "file": "x.pcap", "error": "x.pcap: no such file"}
    assert list(FileReport("y", linktype=1, packets=3, messages=2, interrupted=True)
                .to_dict()) == ["file", "linktype", "interrupted", "packets"]


def test_the_library_imports_neither_click_nor_tqdm():
    code = ("import sys, sipcaptool.replay\n"
            "print(','.join(m for m in ('click', 'tqdm') if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


def _messages() -> list:
    """SIP messages, one malformed, and a HEP log (type 100, its own table)."""
    from sipcaptool.record import CapturedMessage

    def sip(i: int) -> bytes:
        return (f"OPTIONS sip:{i}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{i}"
                f"\r\nFrom: <sip:a@example.com>;tag={i}\r\nTo: <sip:{i}@example.com>\r\n"
                f"Call-ID: c{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    out = []
    for i in range(40):
        payload = b"NOT SIP AT ALL\r\n\r\n" if i == 7 else sip(i)
        out.append(CapturedMessage(1_764_000_000_000_000 + i, "10.0.0.1", 5060, "10.0.0.2",
                                   5060, 17, 2, payload,
                                   hep_type=100 if i == 20 else 1))
    return out


@pytest.mark.parametrize("table", ["sip_capture", "sip_%Y%m%d"])
def test_pipeline_submit_all_is_submit_for_each(tmp_path, table):
    """``Pipeline.submit_all`` (a replay's decoded batch; with one fixed table the rows go
    to the writer together) stores what ``submit`` stores message by message, counts the
    same, and counts a replay's positions one a message (the aux row's too)."""
    from sipcaptool.pipeline import Pipeline
    from sipcaptool.store.writer import Position
    got = {}
    for how in ("submit", "submit_all"):
        url = f"sqlite:///{tmp_path / how}.db"
        s = Settings.load(None, {"db_url": url, "table_name": table}, env={})
        stats = Stats()
        p = Pipeline(s, stats, background=False, use_spool=False)
        pos = Position()
        for w in p.writers:
            w.follow("rtest:", pos)
        msgs = _messages()
        if how == "submit":
            for m in msgs:
                pos.seq += 1
                p.submit(m)
        else:
            p.submit_all(msgs[:25], pos)
            p.submit_all(msgs[25:], pos)
        assert pos.seq == 40
        p.close()
        db = sqlite3.connect(tmp_path / f"{how}.db")
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                          "AND name LIKE 'sip\\_%' ESCAPE '\\' ORDER BY name")]
        got[how] = (names, [db.execute(f'SELECT callid, msg FROM "{n}" ORDER BY id').fetchall()
                            for n in names],
                    db.execute("SELECT count(*) FROM logs_capture").fetchone(), dict(stats),
                    sorted(int(b.split(":")[1]) for (b,) in
                           db.execute("SELECT batch_id FROM sipcaptool_batches")))
        db.close()
    assert got["submit"] == got["submit_all"]
    names, rows, logs, stats, positions = got["submit"]
    assert len(names) == 1 and len(rows[0]) == 38 and logs == (1,)
    assert sum(v for k, v in stats.items() if k.startswith("malformed:")) == 1
    assert positions == [21, 40]    # the log's batch, the SIP rows' batch
