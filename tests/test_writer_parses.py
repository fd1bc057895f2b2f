"""A replay's writer process parses the batches it has time for
(sipcaptool.store.unparsed): what it stores and counts is what the capturing process
would have stored and counted -- the same rows, the same counters, every message once
-- whichever process parsed each batch, in every database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from store_helpers import batch_positions, read_rows

from sipcaptool.export.pcap import PcapWriter
from sipcaptool.record import SIP_COLUMN_NAMES, CapturedMessage
from sipcaptool.row import RowMaker, RowOptions, pack, parsed_row
from sipcaptool.stats import Stats
from sipcaptool.store import open_adapter
from sipcaptool.store.schema import init_db
from sipcaptool.store.unparsed import Unparsed, format_part, rows_of
from sipcaptool.store.url import parse_db_url
from sipcaptool.store.writer import Position, Writer
from sipcaptool.testing.pcapgen import realistic_messages, udp4_frame

ROOT = Path(__file__).resolve().parents[1]

NO_VIA = b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: nv@h\r\nCSeq: 1 OPTIONS\r\n\r\n"
BAD_CSEQ = (b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb\r\n"
            b"Call-ID: bc@h\r\nCSeq: one OPTIONS\r\n\r\n")


def _payloads(n: int) -> list[tuple[int, tuple[str, int, str, int, bytes]]]:
    """Realistic messages, and among them every few: line ends of LF alone (lenient), a
    From user longer than its column (truncated), no Via or a bad CSeq (malformed)."""
    out = []
    for i, (ts, (src, sport, dst, dport, msg)) in enumerate(realistic_messages(n)):
        if i % 7 == 3:
            msg = msg.replace(b"\r\n", b"\n")
        elif i % 11 == 5:
            msg = msg.replace(b"<sip:+", b"<sip:+" + b"9" * 300, 1)
        elif i % 13 == 6:
            msg = NO_VIA
        elif i % 17 == 8:
            msg = BAD_CSEQ
        out.append((ts, (src, sport, dst, dport, msg)))
    return out


def _messages(n: int) -> list[CapturedMessage]:
    return [CapturedMessage(ts, src, sport, dst, dport, 1, 2, msg, node_id=i % 3 or None,
                            correlation_id="c" if i % 5 == 0 else None)
            for i, (ts, (src, sport, dst, dport, msg)) in enumerate(_payloads(n))]


@pytest.mark.parametrize("capture_bad", [False, True])
def test_the_writer_process_makes_the_rows_the_capturing_process_makes(capture_bad):
    msgs = _messages(400)
    opts = RowOptions(capture_node="n1", callid_aleg_headers=("X-CID", "X-Leg"),
                      custom_field_headers=("User-Agent", "", "Call-ID"))
    here: Counter[str] = Counter()
    want = [got[1] for m in msgs
            if (got := parsed_row(m, opts, capture_bad, here)) is not None]
    # in parts, as a batch of them arrives
    parts = tuple(format_part([pack(m) for m in msgs[k:k + 150]])
                  for k in range(0, len(msgs), 150))
    rows, counts = rows_of(Unparsed(parts), RowMaker(opts, capture_bad))
    assert rows == want and counts == here
    assert counts["lenient:lf-line-ends"] > 0 and counts["truncated:from_user"] > 0
    assert counts["malformed:sip-no-via"] > 0 and counts["malformed:sip-bad-cseq"] > 0
    assert (len(rows) == len(msgs)) == capture_bad


@pytest.mark.parametrize("fixture", ["sqlite_url", "pg_url"])
def test_unparsed_and_rows_in_one_table_keep_their_order_and_count(request, fixture):
    """Batches of unparsed messages and of rows, one after the other in one table: a
    batch of the other sort is handed over first (each table's batches hold its rows in
    file order, each marked with its last position), a batch is cut after batch_size
    messages, what an earlier run stored is skipped, and the messages that made no
    row are counted once (nothing left in flight)."""
    url = request.getfixturevalue(fixture)
    msgs = _messages(60)
    opts = RowOptions()
    st = Stats()
    pos = Position()
    w = Writer(url, st, batch_size=8, flush_interval=0, background=True,
               parse=RowMaker(opts, False), writer_parses="always")
    try:
        assert w.parses
        w.follow("rt:", pos, {"sip_capture": 4})      # messages 1-4: an earlier run's
        assert w.share("sip_capture") == (True, 8)
        seqs = list(range(1, 61))
        w.add_unparsed("sip_capture", [pack(m) for m in msgs[:21]], seqs[:21])
        assert w.share("sip_capture") == (True, 8 - (21 - 4) % 8)
        # then rows (the capturing process parsed these): the unparsed batch goes first
        rows = [(s, got[1]) for s, m in zip(seqs[21:40], msgs[21:40], strict=True)
                if (got := parsed_row(m, opts, False, Counter())) is not None]
        w.add_rows("sip_capture", "sip", [r for _, r in rows], [s for s, _ in rows])
        assert w.share("sip_capture") == (False, 8 - len(rows) % 8)
        w.add_unparsed("sip_capture", [pack(m) for m in msgs[40:]], seqs[40:])
        w.flush()
    finally:
        w.close()
    there: Counter[str] = Counter()      # what the writer process counted
    want = [got[1] for m in msgs[4:21] + msgs[40:]
            if (got := parsed_row(m, opts, False, there)) is not None]
    stored = read_rows(url, "sip_capture")
    assert sorted(stored) == sorted(want + [r for _, r in rows])
    assert stored == sorted(stored, key=lambda r: r[1])       # file order (micro_ts)
    assert st["stored:sip_capture"] == len(stored) < 56
    assert st["dropped:stored-before"] == 4
    assert {k: v for k, v in st.items() if ":" in k and k.split(":")[0] in
            ("malformed", "lenient", "truncated")} == there
    assert w.pending() == 0 and w._in_flight == 0
    # the unparsed 5-21 in batches of 8, 8 and the 1 the rows cut short; the rows in
    # batches of 8 messages' rows; the unparsed 41-60 after them
    positions = batch_positions(url, "rt:")
    assert positions[:3] == [12, 20, 21] and positions[-1] == 60


def _capture(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in _payloads(n):
            w.write(ts, udp4_frame(src, sport, dst, dport, msg))


def _replay(url: str, pcap: Path, parses: str, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "sipcaptool", "replay", "--json", "-q",
                        "--again", "--writer-parses", parses, "--db", url, *extra,
                        str(pcap)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _rows(url: str, table: str) -> list[tuple]:
    if not url.startswith("clickhouse"):
        return read_rows(url, table)
    a = open_adapter(parse_db_url(url))
    a.connect_readonly()
    try:
        cols = ", ".join(f"`{c}`" for c in SIP_COLUMN_NAMES)
        return [tuple(r) for r in a.select(f"SELECT {cols} FROM `{table}` "
                                           "ORDER BY micro_ts")]
    finally:
        a.close()


@pytest.mark.parametrize("capture_bad", ["0", "1"])
def test_a_replay_stores_and_counts_the_same_whoever_parses(book_url, tmp_path, capture_bad):
    """The same capture replayed with every batch parsed by the writer process, with
    none, and as a replay decides by itself: the same rows and the same summary."""
    db_url = book_url
    pcap = tmp_path / "mixed.pcap"
    _capture(pcap, 3000)
    got = {}
    for parses in ("always", "never", "auto"):
        table = f"sip_{parses}"
        if db_url.startswith("clickhouse"):    # (the others create a table when missing)
            init_db(db_url, [table], aux=False)
        summary = _replay(db_url, pcap, parses, "--table-name", table, "--batch-size", "250",
                          "--capture-bad-msgs", capture_bad)
        rows = _rows(db_url, table)
        keep = ("messages", "malformed", "stored_bad", "lenient", "truncated", "dropped")
        got[parses] = ({k: summary[k] for k in keep}, summary["stored"][table], rows)
    assert got["always"] == got["never"] == got["auto"]
    counts, stored, rows = got["never"]
    assert stored == len(rows) == (3000 if capture_bad == "1" else
                                   3000 - sum(counts["malformed"].values()))
    assert counts["lenient"] and counts["truncated"] and counts["malformed"]
