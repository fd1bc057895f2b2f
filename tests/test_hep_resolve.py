"""A collector named by a host name that moves: the agent looks the name up again and
follows it, over TCP (when its connection ends) and UDP (every RESOLVE_EVERY seconds).

The name is resolved by the system's resolver from a hosts file of a network namespace
made here (``ip netns exec`` puts ``/etc/netns/NAME/hosts`` in place of ``/etc/hosts``),
rewritten in the middle of the run; the collectors listen on 127.0.0.2 and 127.0.0.3 in
that namespace. Needs root and network namespaces (the ``netns`` fixture).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns import (  # noqa: E402
    HepCollector,
    env,
    pcap_records,
    replay_capture,
    sh,
    sipcaptool_cmd,
)

pytestmark = pytest.mark.usefixtures("netns")

NAME = "collector.sipcaptool.test"


def hosts(ns: str, address: str) -> None:
    """Point NAME at ``address`` in the namespace's hosts file (the same file, rewritten:
    what ``ip netns exec`` mounted sees it)."""
    Path(f"/etc/netns/{ns}/hosts").write_text(f"127.0.0.1 localhost\n{address} {NAME}\n")


@contextmanager
def named_namespace() -> Iterator[str]:
    ns = f"sctres{os.getpid() % 100000}"
    sh("ip", "netns", "add", ns)
    try:
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        hosts(ns, "127.0.0.2")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def in_ns(ns: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


class Collector(HepCollector):
    """``sipcaptool hep --listen tcp:ADDRESS:9061`` in the namespace, into its own SQLite
    file."""

    def __init__(self, ns: str, address: str, db: Path) -> None:
        self.db = db
        super().__init__(f"tcp:{address}:9061", f"sqlite:///{db}", "--spool-dir", "none",
                         prefix=("ip", "netns", "exec", ns))

    def messages(self) -> Counter[bytes]:
        con = sqlite3.connect(self.db)
        try:
            return Counter(bytes(r[0]) if not isinstance(r[0], str) else r[0].encode()
                           for r in con.execute("SELECT msg FROM sip_capture"))
        finally:
            con.close()


def test_a_tcp_collector_that_moves_is_followed_when_its_connection_ends(tmp_path):
    n = 2000
    header, msgs, recs = replay_capture(n)
    with named_namespace() as ns:
        old = Collector(ns, "127.0.0.2", tmp_path / "old.db")
        new = Collector(ns, "127.0.0.3", tmp_path / "new.db")
        agent = subprocess.Popen(
            in_ns(ns, sipcaptool_cmd("replay", "-", "--db", "none", "--hep-to",
                                     f"tcp:{NAME}:9061", "--json", "-q", "--spool-dir",
                                     str(tmp_path / "spool"))),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        assert agent.stdin is not None
        agent.stdin.write(header)
        step = n // 100
        for i in range(0, n, step):
            if i == 40 * step:   # the name moves, and the old collector stops
                hosts(ns, "127.0.0.3")
                old_summary = old.stop()
            agent.stdin.write(pcap_records(recs[i:i + step]))
            agent.stdin.flush()
            time.sleep(0.05)
        out, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, err.decode()
        time.sleep(1.0)
        new_summary = new.stop()
    doc = json.loads(out)
    per = doc["hep_targets"][f"tcp:{NAME}:9061"]
    assert per["moved"] == 1 and per["connected"] == 2, per
    assert f"{NAME} resolves to 127.0.0.3 now (was 127.0.0.2)" in err.decode()
    got = old.messages() + new.messages()
    assert sorted(got) == sorted(msgs) and max(got.values()) == 1   # each once
    # (what the agent had not handed over when the old one stopped went to the new one)
    assert old_summary["stored_total"] > 30 * step and new_summary["stored_total"] > 50 * step
    assert old_summary["stored_total"] + new_summary["stored_total"] == n
    assert not doc["dropped"]


_UDP_AGENT = textwrap.dedent("""
    import json, socket, time
    from sipcaptool.record import CapturedMessage
    from sipcaptool.senders import hep
    from sipcaptool.stats import Stats

    hep.RESOLVE_EVERY = 0.3          # (30 s in use)
    rx = {}
    for a in ("127.0.0.2", "127.0.0.3"):
        s = rx[a] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((a, 9060))
        s.setblocking(False)
    stats = Stats()
    sender = hep.HepSender(["udp:%(name)s:9060"], stats)

    def send(n, tag):
        for i in range(n):
            sender.send(CapturedMessage(1_700_000_000_000_000, "10.0.0.1", 5060,
                                        "10.0.0.2", 5060, 1, 2,
                                        b"OPTIONS sip:x SIP/2.0\\r\\nCall-ID: %%s-%%d\\r\\n\\r\\n"
                                        %% (tag, i)))

    send(50, b"before")
    with open("/etc/hosts", "w") as f:
        f.write("127.0.0.1 localhost\\n127.0.0.3 %(name)s\\n")
    end = time.monotonic() + 3
    while time.monotonic() < end and not stats["hep_target:udp:%(name)s:9060:moved"]:
        sender.tick()
        time.sleep(0.02)
    send(50, b"after")
    sender.close()
    got = {}
    for a, s in rx.items():
        got[a] = []
        while True:
            try:
                got[a].append(s.recv(65535))
            except BlockingIOError:
                break
    print(json.dumps({"got": {a: [b"before" in d for d in v] for a, v in got.items()},
                      "stats": dict(stats)}))
""") % {"name": NAME}


def test_a_udp_collector_that_moves_is_followed_at_the_next_lookup(tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(_UDP_AGENT)
    with named_namespace() as ns:
        r = subprocess.run(in_ns(ns, [sys.executable, str(script)]), capture_output=True,
                           text=True, env=env(), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    got = doc["got"]
    assert got["127.0.0.2"] == [True] * 50          # before the move: the old address
    assert got["127.0.0.3"] == [False] * 50         # after it: the new one, every one
    assert doc["stats"][f"hep_target:udp:{NAME}:9060:moved"] == 1
    assert f"{NAME} resolves to 127.0.0.3 now (was 127.0.0.2)" in r.stderr


def test_a_name_that_stops_resolving_keeps_the_last_address(tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(_UDP_AGENT.replace(f"127.0.0.3 {NAME}", "127.0.0.3 elsewhere.test"))
    with named_namespace() as ns:
        r = subprocess.run(in_ns(ns, [sys.executable, str(script)]), capture_output=True,
                           text=True, env=env(), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["got"]["127.0.0.2"] == [True] * 50 + [False] * 50   # all to the last address
    assert doc["got"]["127.0.0.3"] == []
    assert doc["stats"][f"hep_target:udp:{NAME}:9060:resolve-failed"] >= 1
    assert r.stderr.count(f"cannot resolve {NAME!r} again") == 1    # said once


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_name_that_does_not_resolve_at_the_start_is_one_line_exit_2(transport):
    with named_namespace() as ns:
        r = subprocess.run(in_ns(ns, sipcaptool_cmd(
            "replay", str(Path(__file__).parents[1] / "examples" / "call.pcap"), "--db",
            "none", "--hep-to", f"{transport}:nowhere.sipcaptool.test:9061", "-q")),
            capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"sipcaptool: error: --hep-to {transport}:nowhere.sipcaptool."
                               "test:9061: cannot resolve 'nowhere.sipcaptool.test' (")
    assert len(r.stderr.splitlines()) == 1
