"""Several collectors: grouping of --hep-to targets, rendezvous hashing by Call-ID, and
the agent's failover, return and backlog against real TCP servers on loopback."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcaptool.decode.hep import decode_datagram
from sipcaptool.decode.hep_stream import HepStream
from sipcaptool.errors import ConfigError
from sipcaptool.record import CapturedMessage
from sipcaptool.senders import hep as hep_mod
from sipcaptool.senders.backlog import Backlog, _pack, _unpack
from sipcaptool.senders.hep import HepSender, target_counters
from sipcaptool.senders.route import call_key, group_targets, hrw_order, seed_of
from sipcaptool.stats import Stats

# ----------------------------------------------------------------------- grouping


def _labels(values: list[str]) -> list[str]:
    return [c.label for c in group_targets(values)]


def test_one_udp_and_one_tcp_on_a_host_are_one_collector_as_before():
    assert _labels(["udp:10.0.0.9:9060", "tcp:10.0.0.9:9061"]) == [
        "udp:10.0.0.9:9060,tcp:10.0.0.9:9061"]


def test_hosts_are_collectors_in_the_order_written():
    got = _labels(["tls:c1:9062", "udp:c2:9060", "tls:c2:9062", "tcp:[fd00::5]:9061"])
    assert got == ["tls:c1:9062", "udp:c2:9060,tls:c2:9062", "tcp:[fd00::5]:9061"]


def test_two_collectors_on_one_host_pair_by_port():
    got = _labels(["udp:127.0.0.1:9060", "tcp:127.0.0.1:9060", "udp:127.0.0.1:9070",
                   "tcp:127.0.0.1:9070", "tcp:127.0.0.1:9080"])
    assert got == ["udp:127.0.0.1:9060,tcp:127.0.0.1:9060",
                   "udp:127.0.0.1:9070,tcp:127.0.0.1:9070", "tcp:127.0.0.1:9080"]


def test_a_comma_joins_targets_explicitly():
    assert _labels(["udp:h:9060,tcp:h:9061", "udp:h:9070,tcp:h:9071"]) == [
        "udp:h:9060,tcp:h:9061", "udp:h:9070,tcp:h:9071"]


@pytest.mark.parametrize("values,needle", [
    (["udp:h:9060,udp:h:9061"], "at most one udp"),
    (["tcp:h:1", "tcp:h:1"], "given twice"),
    (["sctp:h:1"], "--hep-to"),
    (["tls:h"], "no port"),
    (["udp:h:9060,tcp:h:9061", "tcp:h:9061,udp:h:9070"], "given twice"),
    (["udp:h:1,tcp:h:2", "udp:h:3,tcp:h:2"], "given twice"),
])
def test_bad_target_lists_name_the_option(values, needle):
    with pytest.raises(ConfigError, match=needle):
        group_targets(values)


# ----------------------------------------------------------------------- hashing


def _sip(call_id: str, compact: bool = False) -> bytes:
    h = "i" if compact else "Call-ID"
    return (f"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n{h}: {call_id}\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def _msg(payload: bytes, **kw) -> CapturedMessage:
    return CapturedMessage(1_700_000_000_000_000, "10.0.0.1", 5060, "10.0.0.2", 5060, 1, 2,
                           payload, **kw)


def test_call_key_is_the_call_id_long_or_compact_else_correlation_else_addresses():
    assert call_key(_msg(_sip("abc@h"))) == b"abc@h"
    assert call_key(_msg(_sip("abc@h", compact=True))) == b"abc@h"
    assert call_key(_msg(b"RTCP", hep_type=5, correlation_id="abc@h")) == b"abc@h"
    a = call_key(_msg(b"\x00\x01garbage"))
    m = CapturedMessage(0, "10.0.0.2", 5060, "10.0.0.1", 5060, 1, 2, b"other")
    assert a == call_key(m)  # both directions of a flow hash alike


def test_every_message_of_a_call_goes_to_the_same_collector_whatever_the_process():
    seeds = [seed_of(n) for n in ("c1:9061", "c2:9061", "c3:9061")]
    # fixed expectations: the hash must not depend on PYTHONHASHSEED or the host
    assert hrw_order(b"call-1@example", seeds) == hrw_order(b"call-1@example", list(seeds))
    assert seed_of("c1:9061") == seed_of("c1:9061")
    assert int(seed_of("x")) == int.from_bytes(
        __import__("hashlib").blake2b(b"sipcaptool-collector\0x", digest_size=8).digest(),
        "little")


def test_calls_spread_evenly_and_a_new_collector_takes_only_its_share():
    names = [f"10.0.0.{i}:9061" for i in range(1, 5)]
    seeds = [seed_of(n) for n in names]
    keys = [f"call-{i}@host".encode() for i in range(20000)]
    first = [hrw_order(k, seeds)[0] for k in keys]
    share = Counter(first)
    assert all(abs(n - 5000) < 400 for n in share.values()), share
    seeds5 = [*seeds, seed_of("10.0.0.5:9061")]
    moved = 0
    for k, before in zip(keys, first, strict=True):
        after = hrw_order(k, seeds5)[0]
        if after != before:
            assert after == 4  # a call only ever moves to the new collector
            moved += 1
    assert 3400 < moved < 4600, moved  # about 1/5 of the calls


def test_a_down_collectors_calls_spread_over_the_others():
    seeds = [seed_of(f"c{i}:1") for i in range(3)]
    keys = [f"k{i}".encode() for i in range(9000)]
    second = Counter(hrw_order(k, seeds)[1] for k in keys if hrw_order(k, seeds)[0] == 0)
    assert set(second) == {1, 2} and min(second.values()) > 1200, second


@given(st.binary(max_size=64), st.integers(1, 8))
def test_hrw_order_is_a_permutation(key, n):
    seeds = [seed_of(str(i)) for i in range(n)]
    assert sorted(hrw_order(key, seeds)) == list(range(n))


# ----------------------------------------------------------------------- backlog


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(min_size=0, max_size=300)),
                max_size=20))
def test_backlog_records_round_trip(items):
    from sipcaptool.encode.hep import encode_hep3

    pkts = [(k, encode_hep3(_msg(p or b"x"))) for k, p in items]
    assert list(_unpack(_pack(pkts))) == pkts


def test_backlog_goes_to_disk_past_its_memory_then_counts_what_it_cannot_hold(tmp_path):
    stats = Stats()
    bl = Backlog(stats, max_bytes=20000, spool_dir=str(tmp_path / "hep"),
                 spool_max_bytes=70000)
    from sipcaptool.encode.hep import encode_hep3

    pkt = encode_hep3(_msg(os.urandom(900)))
    held = sum(bl.put(f"k{i}".encode(), pkt) for i in range(200))
    assert stats["hep_out:buffered"] == held
    assert stats["hep_out:spooled"] > 0
    assert stats["dropped:hep-buffer-full"] == 200 - held > 0
    # everything held comes back, oldest first, nothing twice
    got = []
    while (item := bl.take()) is not None:
        got.append(item[0])
    assert got == [f"k{i}".encode() for i in range(held)]
    assert stats["hep_out:unspooled"] == stats["hep_out:spooled"]
    bl.close()


def test_backlog_left_on_disk_is_found_by_the_next_run(tmp_path):
    stats = Stats()
    bl = Backlog(stats, max_bytes=5000, spool_dir=str(tmp_path / "hep"))
    for i in range(10):
        bl.put(f"k{i}".encode(), b"HEP3" + (1000).to_bytes(2, "big") + bytes(994))
    assert bl.persist() == 0
    bl.close()
    again = Backlog(Stats(), max_bytes=5000, spool_dir=str(tmp_path / "hep"))
    keys = []
    while (item := again.take()) is not None:
        keys.append(item[0])
    assert keys == [f"k{i}".encode() for i in range(10)]
    again.close()


# ----------------------------------------------------------------------- failover


class HepServer:
    """A HEP-over-TCP server in a thread: it keeps the Call-IDs it reads; ``stop()``
    closes its sending side first (as ``sipcaptool hep`` does at a stop), reads until
    each agent closes, then closes; ``start()`` listens again on the same port."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[str] = []
        self.port = port
        self.lock = threading.Lock()
        self.truncated = 0
        self.start()

    def start(self) -> None:
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", self.port))
        self.port = self.srv.getsockname()[1]
        self.srv.listen(16)
        self.running = True
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conns: dict[socket.socket, HepStream] = {}
        linger_until = None
        while True:
            if self.stopping and linger_until is None:
                self.srv.close()
                for c in conns:
                    c.shutdown(socket.SHUT_WR)
                linger_until = time.monotonic() + 3
            if linger_until is not None and (not conns or time.monotonic() > linger_until):
                break
            socks = list(conns) + ([] if linger_until is not None else [self.srv])
            r, _w, _x = select.select(socks, [], [], 0.05)
            for s in r:
                if s is self.srv:
                    c, _ = self.srv.accept()
                    conns[c] = HepStream()
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    if conns[s].buffered:
                        self.truncated += 1
                    del conns[s]
                    s.close()
                    continue
                for frame in conns[s].feed(data):
                    p = decode_datagram(frame, now_us=0)[0]
                    cid = p.payload.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
                    with self.lock:
                        self.got.append(cid)
        for c in conns:
            c.close()
        self.running = False

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)


def _send_calls(snd: HepSender, tag: str, n: int, pause_every: int = 0) -> list[str]:
    ids = []
    for i in range(n):
        cid = f"{tag}-{i}@agent"
        snd.send(_msg(_sip(cid)))
        ids.append(cid)
        if pause_every and i % pause_every == 0:
            snd.tick()
            time.sleep(0.001)
    return ids


@pytest.fixture
def fast_reconnect(monkeypatch):
    monkeypatch.setattr(hep_mod, "BACKOFF_MIN", 0.05)
    monkeypatch.setattr(hep_mod, "BACKOFF_MAX", 0.2)


def test_calls_spread_over_two_collectors_each_call_to_one(fast_reconnect, tmp_path):
    a, b = HepServer(), HepServer()
    stats = Stats()
    snd = HepSender([f"tcp:127.0.0.1:{a.port}", f"tcp:127.0.0.1:{b.port}"], stats,
                    spool_dir=str(tmp_path / "hep"))
    # each call has three messages; all three go to the same collector
    ids = []
    for _rep in range(3):
        ids += _send_calls(snd, "call", 300)
    snd.close()
    a.stop()
    b.stop()
    assert sorted(a.got + b.got) == sorted(ids)
    assert not set(a.got) & set(b.got)
    assert 90 < len(set(a.got)) < 210, len(set(a.got))
    per = target_counters(stats)
    assert per[f"tcp:127.0.0.1:{a.port}"]["sent"] == len(a.got)
    assert per[f"tcp:127.0.0.1:{b.port}"]["sent"] == len(b.got)
    assert stats["hep_out:sent_tcp"] == 900 and "hep_out:rerouted" not in stats


def test_a_stopping_collectors_calls_move_and_come_back_nothing_lost_or_doubled(
        fast_reconnect, tmp_path):
    a, b = HepServer(), HepServer()
    stats = Stats()
    snd = HepSender([f"tcp:127.0.0.1:{a.port}", f"tcp:127.0.0.1:{b.port}"], stats,
                    spool_dir=str(tmp_path / "hep"))
    sent = _send_calls(snd, "before", 400, pause_every=50)
    a.stop()                 # FIN to the agent, reads until the agent closes
    sent += _send_calls(snd, "during", 400, pause_every=50)
    a_during = list(a.got)
    a.start()                # the same port again
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and stats["hep_out:reconnects"] < 1:
        snd.tick()
        time.sleep(0.02)
    sent += _send_calls(snd, "after", 400, pause_every=50)
    snd.close()
    a.stop()
    b.stop()
    got = a.got + b.got
    assert sorted(got) == sorted(sent), (len(got), len(sent))  # each exactly once
    # while a was down its calls went to b; once it was back they went to a again
    assert any(c.startswith("during") for c in b.got)
    assert any(c.startswith("after") for c in a.got[len(a_during):])
    assert stats["hep_out:rerouted"] > 0 and stats["hep_out:reconnects"] >= 1
    assert a.truncated == 0
    per = target_counters(stats)[f"tcp:127.0.0.1:{a.port}"]
    assert per["closed-by-peer"] >= 1 and per["connected"] >= 2


def test_with_every_collector_down_messages_wait_and_go_out_when_one_returns(
        fast_reconnect, tmp_path):
    a = HepServer()
    port = a.port
    a.stop()                 # nobody listens on the port now
    stats = Stats()
    snd = HepSender([f"tcp:127.0.0.1:{port}"], stats, spool_dir=str(tmp_path / "hep"),
                    buffer_bytes=20000, connect_wait=0.2)
    sent = _send_calls(snd, "wait", 200)
    assert stats["hep_out:buffered"] == 200 and stats["hep_out:spooled"] > 0
    assert "hep_out:sent_tcp" not in stats
    a.port = port
    a.got.clear()
    a.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stats["hep_out:resent"] < 200:
        snd.tick()
        time.sleep(0.02)
    snd.close()
    a.stop()
    assert a.got == sent      # in order, each once
    assert stats["hep_out:resent"] == 200
    assert target_counters(stats)[f"tcp:127.0.0.1:{port}"]["connect-failed"] >= 1


def test_at_the_end_what_no_collector_took_is_kept_in_the_spool_or_counted(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    stats = Stats()
    snd = HepSender([f"tcp:127.0.0.1:{port}"], stats, spool_dir=str(tmp_path / "hep"),
                    connect_wait=0.1)
    _send_calls(snd, "kept", 5)
    snd.close(timeout=0.2)
    assert stats["hep_out:spooled"] == 5 and "dropped:hep-shutdown" not in stats
    stats2 = Stats()
    snd2 = HepSender([f"tcp:127.0.0.1:{port}"], stats2, spool_dir=None, connect_wait=0.1)
    _send_calls(snd2, "lost", 5)
    snd2.close(timeout=0.2)
    assert stats2["dropped:hep-shutdown"] == 5


def test_udp_only_collectors_spread_calls_too():
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for r in rx:
        r.bind(("127.0.0.1", 0))
        r.settimeout(2)
    stats = Stats()
    snd = HepSender([f"udp:127.0.0.1:{r.getsockname()[1]}" for r in rx], stats)
    ids = _send_calls(snd, "u", 100)
    snd.close()
    got: list[list[str]] = [[], []]
    for i, r in enumerate(rx):
        r.settimeout(0.5)
        try:
            while True:
                p = decode_datagram(r.recv(70000), now_us=0)[0]
                got[i].append(p.payload.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode())
        except TimeoutError:
            pass
        r.close()
    assert sorted(got[0] + got[1]) == sorted(ids) and got[0] and got[1]
    assert stats["hep_out:sent_udp"] == 100


@given(st.lists(st.text(max_size=40), max_size=4))
def test_any_target_list_parses_or_raises_our_config_error(values):
    try:
        collectors = group_targets(values)
    except ConfigError:
        return
    for c in collectors:
        assert c.dgram is not None or c.stream is not None
