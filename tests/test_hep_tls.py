"""HEP over TLS: the collector's tls: listener against Python's ssl (the agent's
HepSender), openssl s_client and socat as independent clients, and what it refuses:
bad certificates, plain text on the TLS port, TLS on a plain port, handshakes that never
end. Certificates are made at test time with openssl req (tests/tls_certs.py)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from tls_certs import Certs, have_openssl, make_certs  # noqa: E402

from sipcaptool.encode.hep import encode_hep3  # noqa: E402
from sipcaptool.errors import ConfigError  # noqa: E402
from sipcaptool.record import CapturedMessage  # noqa: E402
from sipcaptool.senders.hep import HepSender, target_counters  # noqa: E402
from sipcaptool.sources.hep_listener import HepCollector  # noqa: E402
from sipcaptool.sources.hep_sockets import ListenSpec, open_listeners  # noqa: E402
from sipcaptool.stats import Stats  # noqa: E402
from sipcaptool.tls import client_context, server_context  # noqa: E402

REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"
KEY = b"s3cret"

pytestmark = pytest.mark.skipif(not have_openssl() and not REQUIRED,
                                reason="needs the openssl tool for the test certificates")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(str(tmp_path_factory.mktemp("certs")))


def _msg(cid: str) -> CapturedMessage:
    payload = (f"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    return CapturedMessage(1_700_000_000_000_000, "10.0.0.1", 5060, "10.0.0.2", 5060, 1, 2,
                           payload)


def _cid(m: CapturedMessage) -> str:
    return m.payload.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode()


class Running:
    """A HepCollector with a tls: and a tcp: listener on 127.0.0.1, in a thread."""

    def __init__(self, certs: Certs, *, require_client_cert: bool = False,
                 handshake_timeout: float = 10.0, max_connections: int = 64) -> None:
        self.got: list[CapturedMessage] = []
        self.stats = Stats()
        rows = open_listeners([ListenSpec("tls", "127.0.0.1", 0),
                               ListenSpec("tcp", "127.0.0.1", 0)], rcvbuf=0)
        self.listeners = rows[0]
        self.tls_port = self.listeners[0][0].port
        self.tcp_port = self.listeners[1][0].port
        ctx = server_context(certs.server_cert, certs.server_key,
                             certs.ca if require_client_cert else None)
        self.collector = HepCollector(self.listeners, self.got.append, self.stats,
                                      auth_key=KEY, tls_context=ctx,
                                      handshake_timeout=handshake_timeout,
                                      max_connections=max_connections, tick_interval=0.05,
                                      drain_limit=2)
        self.thread = threading.Thread(target=self.collector.run, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.got) < n:
            time.sleep(0.02)
        return [_cid(m) for m in self.got]

    def wait_stat(self, key: str, timeout: float = 10) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.stats[key]:
            time.sleep(0.02)
        return self.stats[key]

    def stop(self) -> None:
        self.collector.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()

    def report(self) -> dict:
        return self.listeners[0][0].report()


@pytest.fixture
def collector(certs):
    started: list[Running] = []

    def make(**kw) -> Running:
        r = Running(certs, **kw)
        started.append(r)
        return r

    yield make
    for r in started:
        if r.thread.is_alive():
            r.stop()


def test_agent_sends_over_tls_with_the_auth_key(certs, collector):
    c = collector()
    stats = Stats()
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], stats, auth_key=KEY, tls_ca=certs.ca)
    for i in range(50):
        snd.send(_msg(f"tls-{i}"))
    snd.close()
    assert c.wait(50) == [f"tls-{i}" for i in range(50)]
    c.stop()
    assert stats["hep_out:sent_tls"] == 50
    assert target_counters(stats)[f"tls:127.0.0.1:{c.tls_port}"] == {"connected": 1, "sent": 50}
    rep = c.report()
    assert rep["connections"] == 1 and rep["tls_refused"] == 0 and rep["packets"] == 50
    assert c.stats.group("tls") == {} and c.stats.group("malformed") == {}


def test_the_auth_key_still_applies_inside_tls(certs, collector):
    c = collector()
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=b"wrong",
                    tls_ca=certs.ca)
    snd.send(_msg("bad-key"))
    snd.close()
    assert c.wait_stat("dropped:auth") == 1
    c.stop()
    assert c.got == []


def test_openssl_s_client_is_an_independent_tls_client(certs, collector):
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    c = collector()
    data = b"".join(encode_hep3(_msg(f"s-client-{i}"), auth_key=KEY) for i in range(20))
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{c.tls_port}",
                          "-CAfile", certs.ca, "-verify_return_error", "-quiet"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(data)
    p.stdin.flush()
    got = c.wait(20)
    p.kill()
    p.communicate()
    c.stop()
    assert got == [f"s-client-{i}" for i in range(20)]
    assert c.stats.group("tls") == {}


def test_socat_is_an_independent_tls_client(certs, collector):
    if not shutil.which("socat"):
        if REQUIRED:
            pytest.fail("socat is needed")
        pytest.skip("needs socat")
    c = collector()
    data = b"".join(encode_hep3(_msg(f"socat-{i}"), auth_key=KEY) for i in range(20))
    r = subprocess.run(["socat", "-u", "STDIN",
                        f"OPENSSL:127.0.0.1:{c.tls_port},cafile={certs.ca},verify=1"],
                       input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = c.wait(20)
    c.stop()
    assert got == [f"socat-{i}" for i in range(20)]


def test_plain_text_on_the_tls_port_is_refused_and_counted(certs, collector):
    c = collector()
    s = socket.create_connection(("127.0.0.1", c.tls_port))
    s.sendall(encode_hep3(_msg("plain"), auth_key=KEY))
    assert c.wait_stat("tls:plain-text") == 1
    s.close()
    # the listener goes on: a TLS agent after it is served
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca)
    snd.send(_msg("after"))
    snd.close()
    assert c.wait(1) == ["after"]
    c.stop()
    assert c.report()["tls_refused"] == 1


def test_tls_on_the_plain_port_is_refused_and_counted(certs, collector):
    c = collector()
    ctx = client_context(certs.ca)
    raw = socket.create_connection(("127.0.0.1", c.tcp_port), timeout=5)
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")  # the collector closes it
    raw.close()
    assert c.wait_stat("malformed:tls-on-plain-port") == 1
    c.stop()
    assert c.got == []


def test_a_collector_certificate_from_another_ca_is_refused_by_the_agent(certs, collector,
                                                                         tmp_path):
    c = collector()
    stats = Stats()
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], stats, auth_key=KEY,
                    tls_ca=certs.rogue_ca, spool_dir=str(tmp_path / "hep"))
    snd.send(_msg("not-sent"))
    snd.close(timeout=0.5)
    per = target_counters(stats)[f"tls:127.0.0.1:{c.tls_port}"]
    assert per.get("bad-certificate", 0) >= 1, per
    assert stats["hep_out:buffered"] == 1 and stats["hep_out:spooled"] == 1  # kept
    assert c.wait_stat("tls:bad-certificate") >= 1  # the agent's alert, seen by the collector
    c.stop()
    assert c.got == []


def test_client_certificates_required_with_tls_ca(certs, collector):
    c = collector(require_client_cert=True)
    # without a certificate: refused (TLS 1.3: after the client thinks it is done)
    ctx = client_context(certs.ca)
    with socket.create_connection(("127.0.0.1", c.tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            try:
                s.sendall(encode_hep3(_msg("no-cert"), auth_key=KEY))
                s.recv(10)
            except (ssl.SSLError, OSError):
                pass
    assert c.wait_stat("tls:bad-certificate") == 1
    # a certificate of another CA: refused
    ctx = client_context(certs.ca, certs.rogue_client_cert, certs.rogue_client_key)
    with socket.create_connection(("127.0.0.1", c.tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            try:
                s.sendall(encode_hep3(_msg("rogue"), auth_key=KEY))
                s.recv(10)
            except (ssl.SSLError, OSError):
                pass
    end = time.monotonic() + 10
    while time.monotonic() < end and c.stats["tls:bad-certificate"] < 2:
        time.sleep(0.02)
    # the right one: taken
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca,
                    tls_cert=certs.client_cert, tls_key=certs.client_key)
    snd.send(_msg("with-cert"))
    snd.close()
    assert c.wait(1) == ["with-cert"]
    c.stop()
    assert c.stats["tls:bad-certificate"] == 2
    assert c.report()["tls_refused"] == 2


def test_silent_handshakes_time_out_and_never_block_the_loop(certs, collector):
    c = collector(handshake_timeout=1.0)
    silent = [socket.create_connection(("127.0.0.1", c.tls_port)) for _ in range(5)]
    # a half handshake: a ClientHello's first bytes only
    half = socket.create_connection(("127.0.0.1", c.tls_port))
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca)
    t0 = time.monotonic()
    snd.send(_msg("meanwhile"))
    snd.close()
    assert c.wait(1) == ["meanwhile"]
    assert time.monotonic() - t0 < 1.0  # served while six handshakes hang
    end = time.monotonic() + 10
    while time.monotonic() < end and c.stats["tls:handshake-timeout"] < 6:
        time.sleep(0.05)
    for s in [*silent, half]:
        s.close()
    c.stop()
    assert c.stats["tls:handshake-timeout"] == 6


def test_handshakes_count_against_the_connection_limit(certs, collector):
    c = collector(max_connections=4)
    hanging = [socket.create_connection(("127.0.0.1", c.tls_port)) for _ in range(10)]
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca)
    snd.send(_msg("still-taken"))
    snd.close()
    assert c.wait(1) == ["still-taken"]
    c.stop()
    assert c.stats["evicted:tcp-limit"] >= 7
    for s in hanging:
        s.close()


def test_tls_files_that_cannot_be_loaded_are_config_errors(certs, tmp_path):
    with pytest.raises(ConfigError, match="--tls-cert"):
        server_context(str(tmp_path / "missing.pem"), None)
    with pytest.raises(ConfigError, match="--tls-cert"):
        server_context(None, None)
    with pytest.raises(ConfigError, match="--tls-ca"):
        client_context(str(tmp_path / "nope.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot load"):
        server_context(str(bad), certs.server_key)


def test_commands_collector_over_tls_and_replay_agent_with_two_collectors(certs, tmp_path):
    """As an operator runs it: two ``sipcaptool hep --listen tls:`` collectors (auth key,
    certificate), ``sipcaptool replay --hep-to tls: --hep-to tls: --tls-ca`` feeding
    them; every message stored once, each call by one collector."""
    import json
    import sqlite3
    import struct

    from netns import env, sipcaptool_cmd
    from test_hep_fanout import free_port, replay_capture

    procs = []
    ports = [free_port(), free_port()]
    dbs = [tmp_path / "c1.db", tmp_path / "c2.db"]
    for port, db in zip(ports, dbs, strict=True):
        p = subprocess.Popen(sipcaptool_cmd(
            "hep", "--listen", f"tls:127.0.0.1:{port}", "--tls-cert", certs.server_cert,
            "--tls-key", certs.server_key, "--auth-key", KEY.decode(), "--db",
            f"sqlite:///{db}", "--json", "--control", "none"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        assert p.stderr is not None
        line = ""
        while "listening on" not in line:
            line = p.stderr.readline()
            assert line, "collector did not start"
        procs.append(p)
    header, msgs, recs = replay_capture(1000)
    cap = tmp_path / "calls.pcap"
    cap.write_bytes(header + b"".join(
        struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(f), len(f)) + f
        for ts, f in recs))
    r = subprocess.run(sipcaptool_cmd(
        "replay", str(cap), "--db", "none", "--hep-to", f"tls:127.0.0.1:{ports[0]}",
        "--hep-to", f"tls:127.0.0.1:{ports[1]}", "--tls-ca", certs.ca, "--auth-key",
        KEY.decode(), "--json", "-q"), capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["hep_out"] == {"sent_tls": 1000}, out
    summaries = []
    for p in procs:
        p.send_signal(15)
        o, e = p.communicate(timeout=60)
        assert p.returncode == 0, e
        summaries.append(json.loads(o))
    calls: list[set[str]] = []
    stored: list[bytes] = []
    for db in dbs:
        con = sqlite3.connect(db)
        rows = con.execute("SELECT callid, msg FROM sip_capture").fetchall()
        con.close()
        calls.append({c for c, _m in rows})
        stored += [bytes(m) for _c, m in rows]
    assert sorted(stored) == sorted(msgs)
    assert calls[0] and calls[1] and not calls[0] & calls[1]
    assert sum(s["stored_total"] for s in summaries) == 1000
    assert all(s["tls"] == {} for s in summaries)


def test_garbage_on_the_tls_port_is_refused_connection_by_connection(certs, collector):
    """Fifty connections sending what is not a TLS handshake (random bytes, an HTTP
    request, a cut or corrupted ClientHello, HEP): each refused and counted once under
    tls:<reason>, and an agent after them is served."""
    import random

    c = collector(handshake_timeout=2.0)
    rnd = random.Random(15)
    hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(rnd.randbytes(160))
    payloads = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", encode_hep3(_msg("p"), auth_key=KEY),
                b"\x16\x03\x01\xff\xff" + b"\x00" * 64, hello]
    payloads += [rnd.randbytes(rnd.randrange(1, 3000)) for _ in range(46)]
    for p in payloads:
        with socket.create_connection(("127.0.0.1", c.tls_port)) as s:
            try:
                s.sendall(p)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                while s.recv(4096):
                    pass
            except OSError:
                pass
    end = time.monotonic() + 15
    while time.monotonic() < end and sum(c.stats.group("tls").values()) < len(payloads):
        time.sleep(0.05)
    snd = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca)
    snd.send(_msg("after-garbage"))
    snd.close()
    assert c.wait(1) == ["after-garbage"]
    c.stop()
    assert sum(c.stats.group("tls").values()) == len(payloads), c.stats.group("tls")
    assert c.report()["tls_refused"] == len(payloads)
    assert c.stats.group("malformed") == {}


def test_a_client_trickling_its_handshake_and_data_byte_by_byte_is_served(certs, collector):
    """Every TLS byte on its own segment (the handshake and the HEP in it): the
    collector's handshake goes on WANT_READ after WANT_READ and the packets are stored
    whole; an agent beside it is served meanwhile."""
    c = collector()
    ctx = client_context(certs.ca)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
    raw = socket.create_connection(("127.0.0.1", c.tls_port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw.settimeout(0.02)

    def pump() -> None:
        data = out.read()
        for i in range(len(data)):
            raw.send(data[i:i + 1])
            time.sleep(0.0005)
        try:
            got = raw.recv(65536)
            if got:
                inc.write(got)
        except TimeoutError:
            pass

    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    pump()
    side = HepSender([f"tls:127.0.0.1:{c.tls_port}"], Stats(), auth_key=KEY, tls_ca=certs.ca)
    side.send(_msg("beside"))
    side.close()
    assert c.wait(1) == ["beside"]
    tls.write(b"".join(encode_hep3(_msg(f"trickle-{i}"), auth_key=KEY) for i in range(3)))
    pump()
    got = c.wait(4)
    raw.close()
    c.stop()
    assert got == ["beside", "trickle-0", "trickle-1", "trickle-2"]
    assert c.stats.group("tls") == {} and c.stats.group("malformed") == {}
