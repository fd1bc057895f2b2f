"""Agent mode: ``sipcaptool live --hep-to`` into a running ``sipcaptool hep`` and into sngrep.

Capture, collector and sngrep run in the receiving namespace of a veth pair; HEP goes
over that namespace's loopback. Skips without root; fails in CI
(SIPCAPTOOL_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns import VethPair, live_capture, sip_messages, sipcaptool_cmd  # noqa: E402

REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"
SENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns.py")


pytestmark = pytest.mark.usefixtures("netns")


def rows(db: str) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM sip_capture ORDER BY id")]
    finally:
        con.close()


class Collector:
    """``sipcaptool hep`` in namespace B on 127.0.0.1 (UDP and TCP, fixed port)."""

    def __init__(self, net: VethPair, db: str, port: int = 9060) -> None:
        self.proc = net.popen("b", sipcaptool_cmd("hep", "--listen", f"udp:127.0.0.1:{port}",
                                                  "--listen", f"tcp:127.0.0.1:{port}",
                                                  "--db", f"sqlite:///{db}", "--json"))
        seen = 0
        lines = []
        deadline = time.monotonic() + 30
        while seen < 2 and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if re.search(r"listening on (udp|tcp):", line):
                seen += 1
        if seen < 2:
            self.proc.kill()
            raise AssertionError("collector did not start: " + "".join(lines))

    def stop(self) -> dict:
        self.proc.send_signal(15)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return json.loads(out)


def _window_size(net: VethPair, node_name: str | None = "edge1") -> int:
    """A --size whose message makes a HEP packet too big for UDP but not for HEP."""
    from sipcaptool.encode.hep import encode_hep3
    from sipcaptool.record import CapturedMessage

    for size in range(65000, 65600):
        m = sip_messages(1, size, "huge" if node_name else "nofit", net.ip_b, net.ip_a, "TCP")[0]
        n = len(encode_hep3(CapturedMessage(0, net.ip_a, 1, net.ip_b, 5060, 2, 2, m),
                            node_name=node_name))
        if 65507 < n <= 65535:
            return size
    raise AssertionError("no size in the window")


def _tcp_server(net: VethPair, clients: int = 1):
    srv = net.popen("b", [sys.executable, SENDER, "tcp-server", "--bind", net.ip_b,
                          "--clients", str(clients)])
    assert srv.stdout.readline().strip() == "listening"
    return srv


def test_agent_mode_into_collector_udp_and_tcp_for_large(tmp_path):
    coll_db = str(tmp_path / "collector.db")
    with VethPair() as net:
        coll = Collector(net, coll_db)
        srv = _tcp_server(net, clients=2)
        with live_capture(net, "-i", net.if_b, "--db", "none",
                          "--hep-to", "udp:127.0.0.1:9060", "--hep-to", "tcp:127.0.0.1:9060",
                          "--capture-id", "77", "--node-name", "edge1", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "5", "--tag", "hep")
            # one SIP message whose HEP packet fits HEP but not a UDP datagram: TCP
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "1", "--size",
                       str(_window_size(net)), "--tag", "huge")
            # one bigger than HEP can hold: sent with the compressed payload chunk
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "1", "--size",
                       "100000", "--tag", "giant")
            time.sleep(1.5)
        srv.wait(10)
        cs = coll.stop()
    assert p.returncode == 0, p.err
    s = json.loads(p.out)
    assert s["hep_out"] == {"sent_tcp": 1, "sent_udp": 6, "compressed": 1}, s
    assert s["stored_total"] == 0 and s["messages"] == 7
    assert cs["stored_total"] == 7
    got = rows(coll_db)
    msgs = sorted(bytes(r["msg"]) for r in got)
    expected = sorted(sip_messages(5, 0, "hep", net.ip_b, net.ip_a)
                      + sip_messages(1, _window_size(net), "huge", net.ip_b, net.ip_a, "TCP")
                      + sip_messages(1, 100000, "giant", net.ip_b, net.ip_a, "TCP"))
    assert msgs == expected
    assert {r["node"] for r in got} == {"homer01:77"}
    assert {r["source_ip"] for r in got} == {net.ip_a}


def test_agent_mode_udp_only_counts_what_does_not_fit(tmp_path):
    coll_db = str(tmp_path / "collector.db")
    live_db = str(tmp_path / "live.db")
    with VethPair() as net:
        coll = Collector(net, coll_db)
        srv = _tcp_server(net, clients=2)
        # forwarding and storing at once
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{live_db}",
                          "--hep-to", "udp:127.0.0.1:9060", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "3", "--tag", "fit")
            # fits once compressed: sent as chunk 0x0010 over UDP
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "1", "--size",
                       str(_window_size(net, None)), "--tag", "nofit")
            # does not fit even compressed: counted, not sent
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "1", "--size",
                       "100000", "--random-pad", "--tag", "noise")
            time.sleep(1.5)
        srv.wait(10)
        coll.stop()
    s = json.loads(p.out)
    assert s["dropped"] == {"hep-too-large": 1}
    assert s["hep_out"] == {"sent_udp": 4, "compressed": 1}
    assert "does not fit in one HEP UDP datagram" in p.err
    assert len(rows(coll_db)) == 4
    assert len(rows(live_db)) == 5  # stored whole all the same


def test_sngrep_accepts_what_agent_mode_sends(tmp_path):
    """sngrep (HEP listener, no terminal) counts one dialog per forwarded Call-ID.

    sngrep 1.6 writes only what it captured from a device to its -O file, not what
    arrived over HEP, so its running dialog count on stdout is what is checked.
    """
    if not shutil.which("sngrep"):
        if REQUIRED:
            pytest.fail("sngrep is needed")
        pytest.skip("sngrep is needed")
    with VethPair() as net:
        # sngrep captures only lo (where nothing but HEP flows) and listens for HEP there
        sng = net.popen("b", ["sngrep", "-N", "-d", "lo", "-L", "udp:127.0.0.1:9061",
                              "-O", str(tmp_path / "sngrep.pcap")], cwd=str(tmp_path))
        time.sleep(1.0)
        assert sng.poll() is None, sng.stderr.read()
        with live_capture(net, "-i", net.if_b, "--db", "none", "--hep-to",
                          "udp:127.0.0.1:9061", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "4", "--tag", "sng")
            time.sleep(1.5)
        sng.send_signal(15)
        out, _err = sng.communicate(timeout=10)
    assert json.loads(p.out)["hep_out"] == {"sent_udp": 4}
    counts = [int(n) for n in re.findall(r"Dialog count: (\d+)", out)]
    assert counts and counts[-1] == 4, out[-300:]


def test_agent_mode_messages_lost_at_the_end_exit_4(tmp_path):
    """``live --hep-to`` with no collector up and a spool too small for what it
    captured: what it could not keep is counted, said in one line and in the JSON
    errors, and the exit status is 4 (a stop that lost nothing exits 0: the tests
    above)."""
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", "none",
                          "--hep-to", "tcp:127.0.0.1:9", "--hep-buffer", "64K",
                          "--spool-dir", str(tmp_path / "spool"), "--spool-max-bytes", "64K",
                          "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "400", "--size",
                       "1000", "--tag", "lost")
            time.sleep(1.0)
    assert p.returncode == 4, p.err
    s = json.loads(p.out)
    dropped = sum(v for k, v in s["dropped"].items() if k.startswith("hep-"))
    assert s["messages"] == 400 and 0 < dropped < 400
    assert dropped + s["hep_out"]["spooled"] == 400
    line = f"{dropped} messages could not be sent on as HEP and are lost (dropped: "
    assert [e for e in s["errors"] if e.startswith(line)], s["errors"]
    assert f"sipcaptool: error: {line}" in p.err
