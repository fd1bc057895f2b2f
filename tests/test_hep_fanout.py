"""Agents and collectors as an operator runs them: two agents (``live`` on a veth, and
``replay`` of a capture fed slowly on standard input) spread their calls over two
collectors (``hep --listen tcp:``) writing into one PostgreSQL database; one collector
is stopped in the middle of the run and started again. Every message is stored exactly
once, or counted with its reason. Also: a front collector forwarding to two back ones
(``--forward-to``, ``--db none``), and the TLS path as processes.

Needs root and network namespaces (the ``netns`` fixture) and PostgreSQL (``pg_url``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns import (  # noqa: E402
    HepCollector,
    VethPair,
    env,
    live_capture,
    pcap_records,
    replay_capture,
    sip_messages,
    sipcaptool_cmd,
)
from store_helpers import connect  # noqa: E402

pytestmark = pytest.mark.usefixtures("netns")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class Coll(HepCollector):
    """``sipcaptool hep`` on 127.0.0.1 in this namespace; ``stop()`` sends SIGTERM and
    returns its JSON summary."""

    def __init__(self, port: int, db_url: str, *extra: str, listen: str = "tcp") -> None:
        self.port = port
        super().__init__(f"{listen}:127.0.0.1:{port}", db_url, *extra)


def stored_messages(url: str) -> Counter[bytes]:
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT msg FROM sip_capture")
        return Counter(bytes(r[0]) if not isinstance(r[0], str) else r[0].encode()
                       for r in cur.fetchall())
    finally:
        conn.close()


def _wait_rows(url: str, node: str, timeout: float = 20) -> None:
    """Until the collector named ``node`` (its --capture-node) has stored a row."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        conn = connect(url)
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT count(*) FROM sip_capture WHERE node LIKE '{node}%'")
            if cur.fetchone()[0] > 0:
                return
        except Exception:  # noqa: BLE001 - the table is made with the first batch
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise AssertionError(f"collector {node} stored nothing in {timeout}s")


def feed_slowly(proc: subprocess.Popen, header: bytes, recs: list[tuple[int, bytes]],
                seconds: float) -> None:
    assert proc.stdin is not None
    proc.stdin.write(header)
    step = max(1, len(recs) // 100)
    for i in range(0, len(recs), step):
        proc.stdin.write(pcap_records(recs[i:i + step]))
        proc.stdin.flush()
        time.sleep(seconds / 100)
    proc.stdin.close()


def losses(summary: dict) -> int:
    """What a run counted as not passed on or not stored (any reason)."""
    return (sum(summary.get("dropped", {}).values())
            + sum(v for k, v in summary.get("malformed", {}).items()))


def test_two_agents_two_collectors_one_database_a_collector_restarted(pg_url, tmp_path):
    p1, p2 = free_port(), free_port()
    targets = ["--hep-to", f"tcp:127.0.0.1:{p1}", "--hep-to", f"tcp:127.0.0.1:{p2}"]
    c1 = Coll(p1, pg_url, "--capture-node", "c1")
    c2 = Coll(p2, pg_url, "--capture-node", "c2")
    first_run: dict = {}
    header, replay_msgs, recs = replay_capture(4000)
    with VethPair(b_in_root=True) as net:
        with live_capture(net, "-i", net.if_b, "--db", "none", *targets, "--json",
                          "--control", "none", "--spool-dir", str(tmp_path / "spool-live"),
                          side="b") as live:
            replay = subprocess.Popen(
                sipcaptool_cmd("replay", "-", "--db", "none", *targets, "--json", "-q",
                               "--spool-dir", str(tmp_path / "spool-replay")),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env())
            feeder = threading.Thread(target=feed_slowly, args=(replay, header, recs, 10.0))
            feeder.start()
            sent_live: dict = {}
            sender = threading.Thread(target=lambda: sent_live.update(net.sender(
                "udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "4000", "--rate", "400",
                "--tag", "live")))
            sender.start()
            time.sleep(2.5)
            _wait_rows(pg_url, "c1")         # (a loaded machine starts the agents late)
            first_run = c1.stop()            # in the middle of both agents' traffic
            time.sleep(1.0)
            c1 = Coll(p1, pg_url, "--capture-node", "c1")  # back on the same port
            feeder.join()
            sender.join()
            replay.stdin = None  # (closed by the feeder: the end of the capture)
            rout, rerr = replay.communicate(timeout=120)
            time.sleep(1.5)
        live_out = json.loads(live.out)
    replay_out = json.loads(rout)
    second_run = c1.stop()
    other = c2.stop()
    assert replay.returncode == 0, rerr

    live_msgs = sip_messages(4000, 0, "live", net.ip_b, net.ip_a)
    stored = stored_messages(pg_url)
    doubled = {m: n for m, n in stored.items() if n > 1}
    assert not doubled, f"{len(doubled)} messages stored twice"
    missing = [m for m in live_msgs + replay_msgs if m not in stored]
    counted = (losses(live_out) + losses(replay_out) + losses(first_run) + losses(second_run)
               + losses(other) + live_out["kernel"]["dropped"] + live_out["kernel"]["if_dropped"])
    print(json.dumps({"sent": {"live": sent_live.get("sent"), "replay": len(replay_msgs)},
                      "stored": sum(stored.values()), "missing": len(missing),
                      "counted": counted, "live hep_out": live_out["hep_out"],
                      "replay hep_out": replay_out["hep_out"],
                      "collector 1 before/after the restart": [first_run["stored_total"],
                                                               second_run["stored_total"]],
                      "collector 2": other["stored_total"]}, indent=1))
    assert len(missing) == counted == 0, (len(missing), counted)
    assert sum(stored.values()) == 8000
    # the collectors' own counts add up to what the database holds
    assert first_run["stored_total"] + second_run["stored_total"] + other["stored_total"] == 8000
    # calls moved while collector 1 was down, and came back to it
    assert first_run["stored_total"] > 0 and second_run["stored_total"] > 0
    # each agent found collector 1 gone (or not yet back: an agent started late on a
    # loaded machine meets it down) and connected to it
    for out in (live_out, replay_out):
        assert out["hep_out"].get("rerouted", 0) > 0 or out["hep_out"].get("resent", 0) > 0
        per = out["hep_targets"][f"tcp:127.0.0.1:{p1}"]
        assert per["connected"] >= 1, per
        assert per.get("closed-by-peer", 0) + per.get("connect-failed", 0) >= 1, per


def test_a_front_collector_forwards_each_call_to_one_back_collector(pg_url, tmp_path):
    b1, b2, front_port = free_port(), free_port(), free_port()
    back1 = Coll(b1, pg_url, "--capture-node", "back1")
    back2 = Coll(b2, pg_url, "--capture-node", "back2")
    front = Coll(front_port, "none", "--forward-to", f"tcp:127.0.0.1:{b1}",
                 "--forward-to", f"tcp:127.0.0.1:{b2}", "--spool-dir",
                 str(tmp_path / "spool-front"), listen="udp")
    header, msgs, recs = replay_capture(2000)
    cap = tmp_path / "front.pcap"
    cap.write_bytes(header + pcap_records(recs))
    r = subprocess.run(sipcaptool_cmd("replay", str(cap), "--db", "none", "--hep-to",
                                      f"udp:127.0.0.1:{front_port}", "--json", "-q"),
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    fs = front.stop()
    s1, s2 = back1.stop(), back2.stop()
    stored = stored_messages(pg_url)
    assert fs["messages"] == 2000 and fs["stored_total"] == 0
    assert fs["hep_out"]["sent_tcp"] == 2000, fs["hep_out"]
    assert sorted(stored) == sorted(msgs) and max(stored.values()) == 1
    assert s1["stored_total"] > 300 and s2["stored_total"] > 300
    assert s1["stored_total"] + s2["stored_total"] == 2000
    # every call went to one back collector: one node per Call-ID
    nodes: dict[str, set[str]] = {}
    conn = connect(pg_url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT callid, node FROM sip_capture")
        for callid, node in cur.fetchall():
            nodes.setdefault(callid, set()).add(node.split(":")[0])
    finally:
        conn.close()
    assert len(nodes) > 100
    assert all(len(n) == 1 for n in nodes.values())
    assert set().union(*nodes.values()) == {"back1", "back2"}


def test_live_agent_over_tls_to_two_collectors_and_a_front_forwarding_over_tls(tmp_path):
    """``live -i VETH --hep-to tls:c1 --hep-to tls:c2 --auth-key-file --tls-ca`` (the
    issue's first command) into two TLS collectors, one of them fed through a front
    collector that forwards over TLS (``--forward-to tls: --forward-tls-ca``)."""
    import sqlite3

    from tls_certs import make_certs

    certs = make_certs(str(tmp_path / "certs"))
    key = tmp_path / "hep.key"
    key.write_text("s3cret\n")
    tls = ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
           "--auth-key-file", str(key)]
    p1, p2, pf = free_port(), free_port(), free_port()
    c1 = Coll(p1, f"sqlite:///{tmp_path / 'c1.db'}", *tls, listen="tls")
    c2 = Coll(p2, f"sqlite:///{tmp_path / 'c2.db'}", *tls, listen="tls")
    # the front: TLS in, TLS out to collector 2
    front = Coll(pf, "none", *tls, "--forward-to", f"tls:127.0.0.1:{p2}",
                 "--forward-tls-ca", certs.ca, listen="tls")
    with VethPair(b_in_root=True) as net:
        with live_capture(net, "-i", net.if_b, "--db", "none", "--hep-to",
                          f"tls:127.0.0.1:{p1}", "--hep-to", f"tls:127.0.0.1:{pf}",
                          "--auth-key-file", str(key), "--tls-ca", certs.ca, "--json",
                          "--control", "none", side="b") as live:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "600", "--rate",
                       "600", "--tag", "tls")
            time.sleep(1.5)
        out = json.loads(live.out)
    fs = front.stop()
    s1, s2 = c1.stop(), c2.stop()
    stored: list[bytes] = []
    for db in ("c1.db", "c2.db"):
        con = sqlite3.connect(tmp_path / db)
        stored += [bytes(m) for (m,) in con.execute("SELECT msg FROM sip_capture")]
        con.close()
    assert sorted(stored) == sorted(sip_messages(600, 0, "tls", net.ip_b, net.ip_a))
    assert out["hep_out"] == {"sent_tls": 600}, out
    assert fs["hep_out"] == {"sent_tls": fs["messages"]} and fs["messages"] > 100, fs
    assert s1["stored_total"] > 100 and s2["stored_total"] == fs["messages"]
    assert all(s["tls"] == {} for s in (s1, s2, fs))


def test_a_front_collector_that_loses_forwarded_messages_exits_4(tmp_path):
    """``hep --forward-to`` with no collector behind it up and a spool too small: what it
    could not keep is counted, said in one line, and the exit status at the stop is 4."""
    front_port = free_port()
    front = Coll(front_port, "none", "--forward-to", f"tcp:127.0.0.1:{free_port()}",
                 "--forward-buffer", "64K", "--spool-dir", str(tmp_path / "spool"),
                 "--spool-max-bytes", "64K", listen="udp")
    try:
        header, msgs, recs = replay_capture(400)
        cap = tmp_path / "front.pcap"
        cap.write_bytes(header + pcap_records(recs))
        r = subprocess.run(sipcaptool_cmd("replay", str(cap), "--db", "none", "--hep-to",
                                          f"udp:127.0.0.1:{front_port}", "-q"),
                           capture_output=True, text=True, env=env(), timeout=120)
        assert r.returncode == 0, r.stderr
        time.sleep(1.0)
    finally:
        front.proc.send_signal(signal.SIGTERM)
        out, rest = front.proc.communicate(timeout=120)
    err = "".join(front.err) + (rest or "")   # (read by its thread, or here at the end)
    assert front.proc.returncode == 4, err
    s = json.loads(out)
    dropped = sum(v for k, v in s["dropped"].items() if k.startswith("hep-"))
    assert s["messages"] == 400 and 0 < dropped < 400
    assert dropped + s["hep_out"]["spooled"] == 400
    line = f"{dropped} messages could not be sent on as HEP and are lost (dropped: "
    assert f"sipcaptool: error: {line}" in err
    assert err.count(line) == 1
