"""End to end: the real ``sipcaptool hep`` as a subprocess, real datagrams and streams on
127.0.0.1 (ephemeral ports), rows read back from the database.

Covers UDP and TCP, HEP v1/v2/v3, compressed payloads, IPv6 addresses, auth on and off,
hostile input, logs/RTCP/report types, --workers, --count/--duration, the summary, and
SIGTERM under load (nothing received before the signal is lost).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from sipcaptool.encode.hep import encode_hep1, encode_hep2, encode_hep3
from sipcaptool.record import AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP, CapturedMessage

ROOT = Path(__file__).resolve().parents[1]
TS = 1_767_225_601_000_001  # 2026-01-01 00:00:01.000001 UTC


# --------------------------------------------------------------------------- helpers

def follow_stderr(proc: subprocess.Popen[str], lines: list[str], want: int,
                  what: str = "collector") -> tuple[dict[str, int], threading.Thread]:
    """Read ``proc``'s stderr into ``lines`` in a thread until it ends, and wait until it
    has said 'listening on' for ``want`` listeners: their ports by transport, and the
    thread. Kills ``proc`` and raises AssertionError when it does not start."""
    ports: dict[str, int] = {}
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = re.search(r"listening on (udp|tcp):\S*:(\d+)", line)
            if m:
                ports[m.group(1)] = int(m.group(2))
                if len(ports) == want:
                    ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(60) or len(ports) != want:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{what} did not start:\n" + "\n".join(lines))
    return ports, reader


def stop_process(proc: subprocess.Popen[str], reader: threading.Thread, lines: list[str],
                 sig: int = signal.SIGTERM, timeout: float = 120) -> str:
    """Send ``sig``, wait for ``proc`` to end and return its stdout. stdout is read here and
    stderr only by ``reader`` (follow_stderr): communicate() would read stderr too, and
    the log lines it took would be missing from ``lines``."""
    if proc.poll() is None:
        proc.send_signal(sig)
    assert proc.stdout is not None
    stdout = proc.stdout
    chunks: list[str] = []
    out_reader = threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True)
    out_reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("process did not stop:\n" + "\n".join(lines)) from None
    out_reader.join(10)
    reader.join(5)
    stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    return "".join(chunks)


class Collector:
    """``python -m sipcaptool hep`` on 127.0.0.1 with ephemeral UDP and TCP ports.

    ``stop()`` sends SIGTERM and returns (exit code, JSON summary, stderr text).
    """

    def __init__(self, db_url: str, *extra: str, udp: bool = True, tcp: bool = True,
                 host: str = "127.0.0.1", json_summary: bool = True,
                 preexec_fn=None) -> None:
        h = f"[{host}]" if ":" in host else host
        cmd = [sys.executable, "-m", "sipcaptool", "hep", "--db", db_url]
        if udp:
            cmd += ["--listen", f"udp:{h}:0"]
        if tcp:
            cmd += ["--listen", f"tcp:{h}:0"]
        if json_summary:
            cmd.append("--json")
        cmd += list(extra)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.host = host
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self.err_lines: list[str] = []
        self.ports, self._reader = follow_stderr(self.proc, self.err_lines,
                                                 int(udp) + int(tcp))
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp_sock = socket.socket(self.family, socket.SOCK_DGRAM)

    def send_udp(self, data: bytes) -> None:
        self.udp_sock.sendto(data, (self.host, self.ports["udp"]))

    def tcp(self) -> socket.socket:
        return socket.create_connection((self.host, self.ports["tcp"]), timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> tuple[int, dict, str]:
        out = stop_process(self.proc, self._reader, self.err_lines, sig, timeout)
        self.udp_sock.close()
        try:
            summary = json.loads(out) if out.strip().startswith("{") else {"text": out}
        except ValueError:
            summary = {"text": out}
        return self.proc.returncode, summary, "\n".join(self.err_lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# the ``collectors`` fixture (start Collector objects, killed at the test's end) is in
# conftest.py, for every module that starts collectors


def sip(callid: str, method: str = "INVITE", extra: str = "", body: str = "") -> bytes:
    return (f"{method} sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{callid}\r\n"
            f"From: \"Alice\" <sip:alice@example.com>;tag=ft-{callid}\r\n"
            f"To: <sip:bob@example.com>\r\n"
            f"Call-ID: {callid}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:alice@192.0.2.1:5060>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def message(callid: str, *, ts: int = TS, src: str = "192.0.2.1", dst: str = "198.51.100.2",
            proto: int = PROTO_UDP, hep_type: int = 1, corr: str | None = None,
            payload: bytes | None = None, **kw) -> CapturedMessage:
    fam = AF_INET6 if ":" in src else AF_INET
    return CapturedMessage(ts, src, 5060, dst, 5080, proto, fam,
                           payload if payload is not None else sip(callid, **kw),
                           correlation_id=corr, hep_type=hep_type)


def rows_by_callid(db_url: str, table: str = "sip_capture") -> dict[str, dict]:
    from store_helpers import read_rows

    from sipcaptool.record import SIP_COLUMN_NAMES

    return {r["callid"]: r for r in (dict(zip(SIP_COLUMN_NAMES, t, strict=True))
                                     for t in read_rows(db_url, table))}


def aux_rows(db_url: str, table: str) -> list[dict]:
    from store_helpers import read_rows

    from sipcaptool.record import AUX_COLUMN_NAMES

    return [dict(zip(AUX_COLUMN_NAMES, t, strict=True)) for t in read_rows(db_url, table, AUX_COLUMN_NAMES)]


def wait_packets(c: Collector, n: int, timeout: float = 20) -> None:
    """Give the collector time to read what was sent (no acknowledgement in HEP)."""
    time.sleep(0.3)


# --------------------------------------------------------------------------- tests

def test_udp_v1_v2_v3_compressed_ipv6(sqlite_url, collectors):
    c = collectors(sqlite_url)
    c.send_udp(encode_hep3(message("v3-plain"), capture_id=7001))
    c.send_udp(encode_hep3(message("v3-zlib"), capture_id=7002, compress=True))
    gz = zlib.compressobj(wbits=31)
    gzip_payload = gz.compress(sip("v3-gzip")) + gz.flush()
    # a gzip stream in chunk 0x0010: build the packet by hand from the plain encoding
    plain = encode_hep3(message("v3-gzip"), capture_id=7003)
    i = plain.index(sip("v3-gzip")) - 6
    body = plain[6:i] + (0).to_bytes(2, "big") + (16).to_bytes(2, "big") \
        + (6 + len(gzip_payload)).to_bytes(2, "big") + gzip_payload
    c.send_udp(b"HEP3" + (6 + len(body)).to_bytes(2, "big") + body)
    c.send_udp(encode_hep3(message("v3-ipv6", src="2001:db8::1", dst="2001:db8::2",
                                   proto=PROTO_TCP), capture_id=7004))
    c.send_udp(encode_hep2(message("v2-plain", ts=TS + 1), capture_id=7005))
    c.send_udp(encode_hep1(message("v1-plain")))
    c.send_udp(encode_hep3(message("v3-corr", corr="my-correlation"), capture_id=7006))
    # heplify can gzip the whole HEP packet
    c.send_udp(gzip.compress(encode_hep3(message("v3-whole-gzip"), capture_id=7007)))
    wait_packets(c, 8)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert summary["packets"] == 8
    assert summary["stored"] == {"sip_capture": 8}
    assert summary["malformed"] == {} and summary["dropped"] == {}
    rows = rows_by_callid(sqlite_url)
    assert set(rows) == {"v3-plain", "v3-zlib", "v3-gzip", "v3-ipv6", "v2-plain",
                         "v1-plain", "v3-corr", "v3-whole-gzip"}
    assert rows["v3-whole-gzip"]["node"] == "homer01:7007"
    r = rows["v3-plain"]
    assert (r["node"], r["micro_ts"], r["date"]) == ("homer01:7001", TS, "2026-01-01 00:00:01")
    assert (r["source_ip"], r["source_port"], r["destination_ip"], r["destination_port"]) == \
        ("192.0.2.1", 5060, "198.51.100.2", 5080)
    assert (r["proto"], r["family"], r["type"], r["method"]) == (1, 2, 1, "INVITE")
    assert r["correlation_id"] == "v3-plain" and r["msg"] == sip("v3-plain")
    assert rows["v3-zlib"]["msg"] == sip("v3-zlib") and rows["v3-zlib"]["node"] == "homer01:7002"
    assert rows["v3-gzip"]["msg"] == sip("v3-gzip")
    r6 = rows["v3-ipv6"]
    assert (r6["source_ip"], r6["destination_ip"], r6["family"], r6["proto"]) == \
        ("2001:db8::1", "2001:db8::2", 10, 2)
    assert rows["v2-plain"]["node"] == "homer01:7005" and rows["v2-plain"]["micro_ts"] == TS + 1
    v1 = rows["v1-plain"]  # no HEP time: the wall clock, and the node without capture id
    assert v1["node"] == "homer01" and abs(v1["micro_ts"] / 1e6 - time.time()) < 300
    assert rows["v3-corr"]["correlation_id"] == "my-correlation"
    assert summary["listeners"][0]["packets"] == 8
    assert summary["stop_reason"] == "SIGTERM" and summary["uptime_seconds"] > 0


def test_tcp_framing_split_and_batched_reads(sqlite_url, collectors):
    c = collectors(sqlite_url, "--capture-node", "tcpnode")
    pkts = [encode_hep3(message(f"tcp-{i}"), capture_id=i) for i in range(6)]
    with c.tcp() as s:
        s.sendall(pkts[0] + pkts[1] + pkts[2])        # several packets in one read
        data = pkts[3]
        for k in range(0, len(data), 7):                # one packet over many reads
            s.sendall(data[k:k + 7])
            time.sleep(0.002)
        s.sendall(pkts[4][:3])                          # a header cut inside the id
        time.sleep(0.05)
        s.sendall(pkts[4][3:] + pkts[5])
    # compressed and IPv6 over TCP too
    with c.tcp() as s:
        s.sendall(encode_hep3(message("tcp-z", src="2001:db8::5", dst="2001:db8::6"),
                              capture_id=99, compress=True))
    wait_packets(c, 7)
    rc, summary, err = c.stop()
    assert rc == 0, err
    rows = rows_by_callid(sqlite_url)
    assert set(rows) == {f"tcp-{i}" for i in range(6)} | {"tcp-z"}
    assert rows["tcp-3"]["node"] == "tcpnode:3"
    assert rows["tcp-z"]["source_ip"] == "2001:db8::5"
    tcp = [x for x in summary["listeners"] if x["listen"].startswith("tcp:")][0]
    assert tcp["packets"] == 7 and tcp["connections"] == 2 and tcp["closed_bad_stream"] == 0


def test_tcp_bad_length_closes_only_that_connection(sqlite_url, collectors):
    c = collectors(sqlite_url)
    good = c.tcp()
    bad = c.tcp()
    good.sendall(encode_hep3(message("before")))
    bad.sendall(encode_hep3(message("bad-conn-ok")) + b"HEP3\x00\x02garbage")
    time.sleep(0.3)
    bad.settimeout(5)
    assert bad.recv(10) == b""  # the collector closed it
    bad.close()
    bad2 = c.tcp()
    bad2.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not HEP at all
    time.sleep(0.2)
    good.sendall(encode_hep3(message("after")))  # the other connection still works
    third = c.tcp()
    third.sendall(encode_hep3(message("new-conn")))
    third.close()
    good.close()
    bad2.close()
    wait_packets(c, 4)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {"before", "bad-conn-ok", "after", "new-conn"}
    assert summary["malformed"] == {"hep3-stream-bad-length": 2}
    tcp = [x for x in summary["listeners"] if x["listen"].startswith("tcp:")][0]
    assert tcp["closed_bad_stream"] == 2 and tcp["connections"] == 4
    assert "HEP over TCP" in err and "connection closed" in err


def test_tcp_idle_timeout_closes_silent_connections_only(sqlite_url, collectors):
    c = collectors(sqlite_url, "--tcp-idle-timeout", "1", "-v")
    silent = c.tcp()
    half = c.tcp()
    busy = c.tcp()
    silent.sendall(encode_hep3(message("silent-first")))
    pkt = encode_hep3(message("half"))
    half.sendall(pkt[:20])  # a packet cut off, then nothing
    for i in range(8):  # the busy agent sends every 0.3 s for 2.4 s: never idle for 1 s
        busy.sendall(encode_hep3(message(f"busy-{i}")))
        time.sleep(0.3)
    for sock in (silent, half):
        sock.settimeout(5)
        assert sock.recv(10) == b""  # closed by the collector
        sock.close()
    busy.sendall(encode_hep3(message("busy-last")))  # still open
    busy.close()
    wait_packets(c, 1)
    rc, summary, err = c.stop()
    assert rc == 0, err
    stored = set(rows_by_callid(sqlite_url))
    assert stored == {"silent-first", "busy-last"} | {f"busy-{i}" for i in range(8)}
    assert summary["evicted"] == {"tcp-idle": 2}
    assert summary["malformed"] == {"hep3-stream-truncated": 1}
    assert "nothing received for 1s; connection closed" in err


def test_out_of_descriptors_the_collector_rests_instead_of_spinning(sqlite_url, collectors):
    """More agents than open files allowed: accept() fails with EMFILE and the waiting
    connection keeps the socket readable. The collector must not spin on it; once
    descriptors are free again the waiting agents are accepted and their packets stored."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    c = collectors(sqlite_url, "--control", "none", udp=False, preexec_fn=low_limit)
    socks = []
    for i in range(90):  # past the limit: the last ones wait in the listen backlog
        s = c.tcp()
        s.sendall(encode_hep3(message(f"agent-{i}")))
        socks.append(s)
    time.sleep(1.0)
    cpu0 = _cpu_seconds(c.proc.pid)
    time.sleep(3.0)
    busy = _cpu_seconds(c.proc.pid) - cpu0
    assert busy < 1.0, f"the collector used {busy:.1f}s of CPU in 3s while out of descriptors"
    for s in socks[:40]:  # agents leave: descriptors come free
        s.close()
    time.sleep(3.0)
    for s in socks[40:]:
        s.close()
    wait_packets(c, 90)
    time.sleep(1.0)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {f"agent-{i}" for i in range(90)}
    assert "cannot accept" in err and "open-file limit" in err


def test_open_file_limit_raised_towards_the_connection_limit():
    """A shell's soft limit of 1024 is below the 4096 agents the collector takes: it
    raises its soft limit (never past the hard one)."""
    code = ("import resource\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 3000))\n"
            "from sipcaptool.sources.hep_sockets import raise_open_file_limit\n"
            "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.stdout.split(None, 1) == ["3000", "(3000, 3000)\n"], out.stderr


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tcp_connections_get_keepalive():
    """Accepted connections carry TCP keepalive with short timers, so agents that vanish
    without a FIN do not hold connections for ever."""
    from sipcaptool.sources.hep_listener import HepCollector
    from sipcaptool.sources.hep_sockets import (
        KEEPALIVE_COUNT,
        KEEPALIVE_IDLE,
        KEEPALIVE_INTERVAL,
        open_listeners,
        parse_listen,
    )
    from sipcaptool.stats import Stats

    ((pair,),) = open_listeners([parse_listen("tcp:127.0.0.1:0")], rcvbuf=0)
    port = pair[1].getsockname()[1]
    got: list = []
    col = HepCollector([pair], got.append, Stats(), duration=5)
    runner = threading.Thread(target=col.run)
    runner.start()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(encode_hep3(message("ka")))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    (conn,) = list(col._conns.values())
    opts = (conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
    col.stop()
    runner.join(10)
    client.close()
    assert [m.payload for m in got] == [sip("ka")]
    assert opts[0] != 0 and opts[1:] == (KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)


def test_auth_key_required(sqlite_url, collectors):
    c = collectors(sqlite_url, "--auth-key", "s3cret")
    c.send_udp(encode_hep3(message("good"), auth_key=b"s3cret"))
    for i in range(5):
        c.send_udp(encode_hep3(message(f"wrong-{i}"), auth_key=b"guess"))
    c.send_udp(encode_hep3(message("missing")))
    c.send_udp(encode_hep2(message("v2")))  # v1/v2 cannot carry a key
    with c.tcp() as s:
        s.sendall(encode_hep3(message("tcp-good"), auth_key=b"s3cret")
                  + encode_hep3(message("tcp-bad"), auth_key=b"s3cret2"))
    wait_packets(c, 10)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {"good", "tcp-good"}
    assert summary["dropped"] == {"auth": 8}
    # logged with the sender's address, at most once per sender per 10 s
    lines = [x for x in err.splitlines() if "dropped" in x and "auth" in x.lower()
             or "authentication key" in x]
    assert 1 <= len(lines) <= 2, err  # one for the UDP sender; the TCP peer is 127.0.0.1 too
    assert "127.0.0.1:" in lines[0]


def test_auth_off_accepts_any_key(sqlite_url, collectors):
    c = collectors(sqlite_url, tcp=False)
    c.send_udp(encode_hep3(message("k1"), auth_key=b"whatever"))
    c.send_udp(encode_hep3(message("k2")))
    wait_packets(c, 2)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {"k1", "k2"}
    assert summary["dropped"] == {}


def test_garbage_is_counted_and_never_stops_the_collector(sqlite_url, collectors):
    c = collectors(sqlite_url)
    good = encode_hep3(message("x"))
    bomb_payload = zlib.compress(b"A" * (4 << 20), 9)  # inflates to 4 MB
    bomb = bytearray(encode_hep3(message("bomb", payload=b"tmp")))
    body = bytes(bomb[6:-9]) + (0).to_bytes(2, "big") + (16).to_bytes(2, "big") \
        + (6 + len(bomb_payload)).to_bytes(2, "big") + bomb_payload
    hostile = [
        b"",                                  # empty datagram
        b"\x02",                              # one byte
        sip("plain-sip"),                     # SIP without HEP
        b"HEP3\x00\x03",                      # total length < 6
        b"HEP3\xff\xff" + b"\x00" * 30,       # total length past the end
        good[:40],                            # cut inside the chunks
        good[:-3],                            # payload chunk cut
        b"\x02\x10\x02\x11\x13\xc4\x13\xc4\x01\x02",   # HEPv2 shorter than its headers
        b"\x02\x10\x07\x11" + b"\x00" * 60,  # HEPv2 with family 7
        bytes(range(256)) * 4,                # noise
        b"HEP3" + (6 + len(body)).to_bytes(2, "big") + body,   # zip bomb
        os.urandom(60000),                    # big random datagram
        encode_hep3(message("big", payload=sip("big", body="a" * 60000))),  # 60 KB SIP: fine
    ]
    for h in hostile:
        c.send_udp(h)
    c.send_udp(encode_hep3(message("still-alive")))
    wait_packets(c, len(hostile) + 1)
    assert c.proc.poll() is None
    rc, summary, err = c.stop()
    assert rc == 0, err
    rows = rows_by_callid(sqlite_url)
    assert set(rows) == {"big", "still-alive"}
    assert len(rows["big"]["msg"]) > 60000
    mal = summary["malformed"]
    assert sum(mal.values()) == len(hostile) - 1  # all but the 60 KB SIP message
    for reason in ("hep-bad-version", "hep3-bad-length", "hep-truncated", "hep-bad-family",
                   "hep-inflate"):
        assert mal.get(reason), (reason, mal)


def test_logs_rtcp_reports(sqlite_url, collectors):
    c = collectors(sqlite_url, tcp=False)
    c.send_udp(encode_hep3(message("", hep_type=100, corr="log-c", payload=b"log line"),
                           capture_id=1))
    c.send_udp(encode_hep3(message("", hep_type=5, corr="rtcp-c", payload=b'{"ssrc":1}'),
                           capture_id=2))
    c.send_udp(encode_hep3(message("", hep_type=32, corr="r32", payload=b'{"r":32}'),
                           capture_id=3))
    c.send_udp(encode_hep3(message("", hep_type=99, corr="r99", payload=b'{"r":99}'),
                           capture_id=4))
    c.send_udp(encode_hep3(message("", hep_type=53, payload=b'{"dns":1}')))  # no table
    wait_packets(c, 5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    logs = aux_rows(sqlite_url, "logs_capture")
    assert [(r["correlation_id"], r["type"], r["msg"], r["node"]) for r in logs] == \
        [("log-c", 5, b"log line", "homer01:1")]
    rtcp = aux_rows(sqlite_url, "rtcp_capture")
    assert [(r["correlation_id"], r["type"], r["family"], r["proto"]) for r in rtcp] == \
        [("rtcp-c", 3, 2, 1)]
    reports = sorted((r["correlation_id"], r["type"]) for r in aux_rows(sqlite_url, "report_capture"))
    assert reports == [("r32", 2), ("r99", 4)]
    assert summary["skipped"] == {"hep-type-53": 1}


def test_sigterm_under_load_loses_nothing(sqlite_url, collectors):
    """Everything sent before SIGTERM is stored; the collector exits 0 with a summary."""
    c = collectors(sqlite_url, tcp=False)
    n = 20000
    datagrams = [encode_hep3(message(f"load-{i}")) for i in range(n)]
    sent = [0]
    stop_sending = threading.Event()

    def sender() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.perf_counter()
        for i, d in enumerate(datagrams):
            if stop_sending.is_set():
                break
            s.sendto(d, ("127.0.0.1", c.ports["udp"]))
            sent[0] = i + 1
            ahead = t0 + (i + 1) / 4000 - time.perf_counter()  # about 4,000/s
            if ahead > 0:
                time.sleep(ahead)
        s.close()

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(1.5)
    before = sent[0]          # every datagram up to here was handed to the kernel
    c.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)           # keep sending a little after the signal
    stop_sending.set()
    t.join()
    rc, summary, err = c.stop(timeout=180)
    assert rc == 0, err
    assert before > 1000
    stored = set(rows_by_callid(sqlite_url))
    missing = [i for i in range(before) if f"load-{i}" not in stored]
    assert not missing, (len(missing), missing[:10], summary)
    assert summary["stored_total"] == len(stored) == summary["messages"]
    assert summary["kernel"].get("udp-drops", 0) == 0


def test_sigint_stops_too_and_text_summary(sqlite_url, collectors):
    c = collectors(sqlite_url, json_summary=False)
    c.send_udp(encode_hep3(message("t1")))
    wait_packets(c, 1)
    rc, summary, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    text = summary["text"]
    assert "rows stored:       1" in text
    assert re.search(r"uptime:\s+\d+\.\d s", text)
    assert re.search(r"udp:127\.0\.0\.1:\d+: 1 packets", text)
    assert re.search(r"tcp:127\.0\.0\.1:\d+: 0 packets, 0 bytes, 0 connections", text)


def test_count_and_duration(sqlite_url, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "sipcaptool", "hep", "--listen", "udp:127.0.0.1:0",
                        "--db", sqlite_url, "--duration", "1", "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stop_reason"] == "duration"
    assert time.monotonic() - t0 < 30

    c = Collector(sqlite_url, "--count", "3", tcp=False)
    try:
        for i in range(3):
            c.send_udp(encode_hep3(message(f"cnt-{i}")))
        c.proc.wait(30)
        rc, summary, err = c.stop()
    finally:
        c.kill()
    assert rc == 0, err
    assert summary["stop_reason"] == "count" and summary["packets"] == 3
    assert summary["stored_total"] == 3


def test_workers_share_the_port(pg_url, collectors):
    c = collectors(pg_url, "--workers", "2")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    n = 0
    for k, s in enumerate(socks):  # many source ports, so SO_REUSEPORT spreads them
        for i in range(20):
            s.sendto(encode_hep3(message(f"w-{k}-{i}")), ("127.0.0.1", c.ports["udp"]))
            n += 1
        s.close()
    with c.tcp() as s:
        s.sendall(encode_hep3(message("w-tcp")))
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert "(2 workers)" in err
    assert summary["workers"] == 2
    assert summary["packets"] == n + 1 and summary["stored_total"] == n + 1
    assert len(rows_by_callid(pg_url)) == n + 1
    udp = [x for x in summary["listeners"] if x["listen"].startswith("udp:")][0]
    assert udp["packets"] == n


def test_ipv6_listener(sqlite_url, collectors):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    c = collectors(sqlite_url, host="::1")
    c.send_udp(encode_hep3(message("over-v6")))
    with c.tcp() as s:
        s.sendall(encode_hep3(message("over-v6-tcp")))
    wait_packets(c, 2)
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {"over-v6", "over-v6-tcp"}
    assert summary["listeners"][0]["listen"].startswith("udp:[::1]:")


def test_bad_listen_and_busy_port(sqlite_url):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "sipcaptool", "hep", "--db", sqlite_url, "--duration", "1"]
    for bad in ("sctp:0.0.0.0:1", "udp:host.example:9060", "udp:1.2.3.4:70000", "udp:::1:5"):
        r = subprocess.run(base + ["--listen", bad], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, (bad, r.stderr)
        assert "--listen" in r.stderr
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        r = subprocess.run(base + ["--listen", f"udp:127.0.0.1:{busy.getsockname()[1]}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert r.returncode == 5, r.stderr
    assert "cannot listen on" in r.stderr


def test_listen_parsing():
    from sipcaptool.sources.hep_sockets import parse_listen

    assert parse_listen("udp:0.0.0.0:9060").label() == "udp:0.0.0.0:9060"
    s = parse_listen("tcp:[::]:9061")
    assert (s.transport, s.host, s.port, s.family) == ("tcp", "::", 9061, socket.AF_INET6)
    assert parse_listen("UDP:9060").label() == "udp:0.0.0.0:9060"


def test_rcvbuf_warning_when_capped(sqlite_url, collectors):
    """Ask for more than any kernel gives without privilege; as root SO_RCVBUFFORCE
    applies and no warning is due, so only check that the start works and, when the
    buffer is capped, that a warning says so."""
    c = collectors(sqlite_url, "--rcvbuf", "1G", tcp=False)
    rc, summary, err = c.stop()
    assert rc == 0, err
    if os.geteuid() != 0:
        assert "receive buffer" in err and "rmem_max" in err
