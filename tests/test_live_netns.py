"""``sipcaptool live`` on real interfaces: veth pairs between network namespaces.

Every test builds its own namespaces (unique names, always deleted), sends real SIP
across (sipp, or the sender in tests/netns.py run inside a namespace), captures it with
``sipcaptool live`` on the receiving veth end and checks the stored rows. Traffic never
leaves the namespaces made here (or their loopback).

Without root these tests skip; with SIPCAPTOOL_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns import VethPair, env, live_capture, sip_messages, sipcaptool_cmd  # noqa: E402
from store_helpers import read_rows  # noqa: E402

from sipcaptool.record import SIP_COLUMN_NAMES  # noqa: E402
from sipcaptool.testing.pcapgen import ether, ipv4, ipv4_fragments, ipv6, tcp, udp  # noqa: E402

REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"


pytestmark = pytest.mark.usefixtures("netns")


def rows(db: str, where: str = "", table: str = "sip_capture") -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM {table} {where} ORDER BY id")]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def summary(p) -> dict:
    assert p.returncode == 0, p.err
    return json.loads(p.out)


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)


def send_until_stored(net: VethPair, db: str, tag: str, n: int, rows_wanted: int) -> None:
    """Send ``n`` messages tagged ``tag`` every 1.5 s until the table holds
    ``rows_wanted`` rows (at most 15 s): for a capture that resumes at a moment the test
    cannot see."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(rows(db)) < rows_wanted:
        net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", str(n), "--tag", tag)
        settle(1.5)


# --------------------------------------------------------------------------- mirror mode


def test_udp_rows_appear_within_a_second_and_sigterm_flushes(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "20", "--tag", "prompt")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and len(rows(db)) < 20:
                time.sleep(0.1)
            # rows are written while the capture runs (time-based flush)
            assert len(rows(db)) == 20
            assert p.poll() is None
        s = summary(p)
    assert s["stored_total"] == 20
    assert s["stopped_by"] == "SIGTERM"
    assert s["kernel"]["dropped"] == 0 and s["kernel"]["received"] >= 20
    got = rows(db)
    assert {r["callid"] for r in got} == {f"prompt-{i}@{net.ip_a}" for i in range(20)}
    r0 = got[0]
    assert (r0["source_ip"], r0["source_port"], r0["destination_ip"], r0["destination_port"]) == \
        (net.ip_a, 5060, net.ip_b, 5060)
    assert r0["proto"] == 1 and r0["family"] == 2 and r0["node"] == "homer01"


def test_any_interface_linux_cooked_capture(tmp_path):
    """`-i any` (Linux cooked headers, SLL/SLL2) stores every message once."""
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", "any", "--count", "10", "--db", f"sqlite:///{db}",
                          "--json") as p:
            settle()
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "10", "--tag", "any")
            p.wait(15)
        s = summary(p)
    got = rows(db)
    assert s["stored_total"] == 10 and len(got) == 10
    assert {r["callid"] for r in got} == {f"any-{i}@{net.ip_a}" for i in range(10)}
    assert all((r["source_ip"], r["destination_ip"]) == (net.ip_a, net.ip_b) for r in got)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_link_going_down_and_up_does_not_end_the_capture(tmp_path, workers):
    """A mirror port that flaps: the capture waits for it, reopens it and goes on (each
    worker rejoins its fanout group)."""
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json",
                          "--raw-sock-children", workers) as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "5", "--tag", "before")
            settle(1.0)
            net.b("ip", "link", "set", net.if_b, "down")
            settle(2.5)
            assert p.poll() is None  # still running
            net.b("ip", "link", "set", net.if_b, "up")
            send_until_stored(net, db, "after", 5, 10)
        s = summary(p)
    callids = {r["callid"] for r in rows(db)}
    assert {f"before-{i}@{net.ip_a}" for i in range(5)} <= callids, p.err
    assert {f"after-{i}@{net.ip_a}" for i in range(5)} <= callids, (p.err, s)
    assert s["kernel"]["link_down"] == int(workers) and s["errors"] == []
    assert "went down" in p.err and "capturing again" in p.err


def test_small_snaplen_cut_messages_are_counted_not_stored_in_part(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--snaplen", "800", "--db", f"sqlite:///{db}",
                          "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "3", "--tag", "fits")
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "2", "--tag", "big",
                       "--size", "1000")
            settle(1.2)
        s = summary(p)
    assert {r["callid"] for r in rows(db)} == {f"fits-{i}@{net.ip_a}" for i in range(3)}
    assert s["malformed"] == {"snapped": 2}


def test_sipp_calls_rows_identical_to_replay_of_tcpdump_capture(tmp_path):
    """Live rows == the rows ``replay`` stores for tcpdump's capture of the same traffic."""
    if not shutil.which("sipp") or not shutil.which("tcpdump"):
        if REQUIRED:
            pytest.fail("sipp and tcpdump are needed")
        pytest.skip("sipp and tcpdump are needed")
    live_db = str(tmp_path / "live.db")
    replay_db = str(tmp_path / "replay.db")
    pcap = str(tmp_path / "dump.pcap")
    # Unless some socket asks for receive timestamps, the kernel stamps a packet for
    # each packet socket separately, microseconds apart; with one asking, every packet
    # is stamped once on arrival and both captures see the same time.
    stamp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stamp.setsockopt(socket.SOL_SOCKET, 29, 1)  # SO_TIMESTAMP
    time.sleep(0.1)
    with stamp, VethPair() as net:
        dump = net.popen("b", ["tcpdump", "-i", net.if_b, "-s", "0", "-U", "-w", pcap,
                               "port 5060 or port 5061"])
        with live_capture(net, "-i", net.if_b, "--raw-socket-listen", ":5060-5061",
                          "--db", f"sqlite:///{live_db}", "--json") as p:
            uas = net.popen("b", ["sipp", "-sn", "uas", "-i", net.ip_b, "-p", "5060", "-m", "5",
                                  "-nostdin", "-timeout", "30"], cwd=str(tmp_path))
            settle()
            r = net.run("a", ["sipp", "-sn", "uac", f"{net.ip_b}:5060", "-i", net.ip_a,
                              "-p", "5061", "-m", "5", "-r", "10", "-d", "200", "-nostdin",
                              "-timeout", "30"], cwd=str(tmp_path), timeout=60)
            assert r.returncode == 0, r.stderr
            assert uas.wait(30) == 0
            settle(1.0)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    s = summary(p)
    assert s["stored_total"] == 30  # 5 calls: INVITE 180 200 ACK BYE 200
    rr = subprocess.run(sipcaptool_cmd("replay", "--db", f"sqlite:///{replay_db}", "-q", pcap),
                        capture_output=True, text=True, env=env())
    assert rr.returncode == 0, rr.stderr
    cols = [c for c in SIP_COLUMN_NAMES]

    def key(r):
        return tuple(r[c] for c in cols)

    live_rows = sorted(key(r) for r in rows(live_db))
    replay_rows = sorted(key(r) for r in rows(replay_db))
    assert len(live_rows) == 30
    assert live_rows == replay_rows


def test_tcp_stream_reassembled(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        srv = net.popen("b", [sys.executable, os.path.join(os.path.dirname(__file__), "netns.py"),
                              "tcp-server", "--bind", net.ip_b, "--clients", "1"])
        assert srv.stdout.readline().strip() == "listening"
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            # 6 messages, every other one 5000 bytes: several segments each
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "3", "--tag", "tcpa")
            settle(1.2)
        summary(p)
        srv.wait(10)
    got = rows(db)
    assert [r["callid"] for r in got] == [f"tcpa-{i}@{net.ip_a}" for i in range(3)]
    assert all(r["proto"] == 2 for r in got)


def test_tcp_large_messages_over_several_segments(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        srv = net.popen("b", [sys.executable, os.path.join(os.path.dirname(__file__), "netns.py"),
                              "tcp-server", "--bind", net.ip_b, "--clients", "1"])
        assert srv.stdout.readline().strip() == "listening"
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("tcp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "4", "--size", "6000",
                       "--tag", "big")
            settle(1.2)
        summary(p)
        srv.wait(10)
    got = rows(db)
    expected = sip_messages(4, 6000, "big", net.ip_b, net.ip_a, "TCP")
    assert [bytes(r["msg"]) for r in got] == expected


def test_ip_fragments_over_small_mtu(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair(mtu=576) as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "4", "--size", "3000",
                       "--tag", "frag")
            settle(1.2)
        s = summary(p)
    got = rows(db)
    expected = sip_messages(4, 3000, "frag", net.ip_b, net.ip_a)
    assert [bytes(r["msg"]) for r in got] == expected
    # each 3000-byte datagram needed 6 fragments: the filter let the port-less ones in
    assert s["kernel"]["received"] >= 4 * 6


def test_ipv6_udp_and_fragments(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair(mtu=1280) as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("udp", "--dst", net.ip6_b, "--src", net.ip6_a, "-n", "3", "--tag", "six")
            net.sender("udp", "--dst", net.ip6_b, "--src", net.ip6_a, "-n", "2", "--size", "3000",
                       "--tag", "sixbig")
            settle(1.2)
        summary(p)
    got = rows(db)
    assert len(got) == 5
    assert {r["family"] for r in got} == {10}
    assert {(r["source_ip"], r["destination_ip"]) for r in got} == {(net.ip6_a, net.ip6_b)}
    big = [bytes(r["msg"]) for r in got if r["callid"].startswith("sixbig")]
    assert big == sip_messages(2, 3000, "sixbig", net.ip6_b, net.ip6_a)


def _write_frames(tmp_path, frames: list[bytes]) -> str:
    path = str(tmp_path / "frames.hex")
    with open(path, "w") as f:
        f.write("\n".join(fr.hex() for fr in frames))
    return path


def test_vlan_tagged_frames(tmp_path):
    """802.1Q and QinQ frames on the wire (written by a packet socket on the other end)."""
    db = str(tmp_path / "c.db")
    msgs = sip_messages(4, tag="vlan")
    src, dst = "10.99.0.1", "10.99.0.2"
    frames = [
        ether(ipv4(src, dst, 17, udp(5060, 5060, msgs[0])), vlans=[10]),
        ether(ipv4(src, dst, 17, udp(5060, 5060, msgs[1])), vlans=[20, 30], qinq=True),
        ether(ipv6("fd00:99::1", "fd00:99::2", 17, udp(5060, 5060, msgs[2])), ethertype=0x86DD,
              vlans=[10]),
        # fragmented inside a VLAN: the second fragment has no ports
        *[ether(f, vlans=[10]) for f in ipv4_fragments(src, dst, 17,
                                                       udp(5060, 5060, msgs[3] + b"x" * 0), 200)],
        # another port inside a VLAN: filtered out
        ether(ipv4(src, dst, 17, udp(7000, 7000, msgs[0])), vlans=[10]),
    ]
    path = _write_frames(tmp_path, frames)
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("frames", "--iface", net.if_a, "--file", path)
            settle(1.2)
        s = summary(p)
    got = rows(db)
    assert sorted(bytes(r["msg"]) for r in got) == sorted(msgs)
    assert s["kernel"]["received"] == len(frames) - 1  # the port-7000 frame never came up


def test_filter_excludes_other_ports(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--dport", "5060", "-n", "5", "--tag", "in")
            net.sender("udp", "--dst", net.ip_b, "--dport", "5080", "--sport", "5080", "-n", "5",
                       "--tag", "out")
            settle(1.2)
        s = summary(p)
    assert {r["callid"].split("-")[0] for r in rows(db)} == {"in"}
    assert s["kernel"]["received"] == 5  # the kernel filter dropped the 5080 traffic

    # --filter replaces the built filter; SIP is then recognised by content
    db2 = str(tmp_path / "d.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--filter", "udp port 5080", "--db",
                          f"sqlite:///{db2}", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--dport", "5060", "-n", "5", "--tag", "in")
            net.sender("udp", "--dst", net.ip_b, "--dport", "5080", "--sport", "5080", "-n", "5",
                       "--tag", "out")
            settle(1.2)
        summary(p)
    assert {r["callid"].split("-")[0] for r in rows(db2)} == {"out"}

    # without the kernel filter, the port range is applied by the decoder
    db3 = str(tmp_path / "e.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--raw-moni-bpf-on", "0", "--db",
                          f"sqlite:///{db3}", "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "--dport", "5060", "-n", "5", "--tag", "in")
            net.sender("udp", "--dst", net.ip_b, "--dport", "5080", "--sport", "5080", "-n", "5",
                       "--tag", "out")
            settle(1.2)
        s = summary(p)
    assert {r["callid"].split("-")[0] for r in rows(db3)} == {"in"}
    assert s["kernel"]["received"] >= 10


def test_workers_share_flows_and_lose_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair(mtu=1000) as net:
        with live_capture(net, "-i", net.if_b, "--raw-socket-listen", ":5060-5099",
                          "--raw-sock-children", "2", "--db", f"sqlite:///{db}", "--json") as p:
            for k in range(8):
                net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "--sport", str(5070 + k),
                           "-n", "25", "--tag", f"w{k}")
            # fragmented datagrams still reassemble: all fragments reach one worker
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "--sport", "5090",
                       "-n", "4", "--size", "2500", "--tag", "wf")
            settle(1.5)
        s = summary(p)
    got = rows(db)
    assert len(got) == 8 * 25 + 4
    assert len({r["callid"] for r in got}) == len(got)
    assert s["workers"] == 2
    assert all(n > 0 for n in s["worker_packets"]), s["worker_packets"]
    assert sum(s["worker_packets"]) == s["packets"]
    big = sorted(bytes(r["msg"]) for r in got if r["callid"].startswith("wf-"))
    assert big == sorted(sip_messages(4, 2500, "wf", net.ip_b, net.ip_a))


def test_count_and_duration_end_the_capture(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--count", "5", "--db", f"sqlite:///{db}",
                          "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "-n", "20", "--tag", "cnt")
            p.wait(10)
        s = summary(p)
        assert "stopped_by" not in s
        assert len(rows(db)) == 5
        started = time.monotonic()
        with live_capture(net, "-i", net.if_b, "--duration", "1", "--db", "sqlite:///"
                          + str(tmp_path / "d.db"), "--json") as p:
            p.wait(15)
        assert time.monotonic() - started < 12
        assert summary(p)["packets"] == 0


def test_sigint_flushes_and_exits_zero_with_text_summary(tmp_path):
    db = str(tmp_path / "c.db")
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}",
                          "--raw-sock-children", "2") as p:
            net.sender("udp", "--dst", net.ip_b, "-n", "30", "--tag", "int")
            settle(0.3)
            p.send_signal(signal.SIGINT)
            p.wait(20)
    assert p.returncode == 0, p.err
    assert "rows stored:       30" in p.out
    assert "kernel:" in p.out
    assert len(rows(db)) == 30


def test_user_drops_privileges_after_opening(tmp_path):
    import tempfile

    d = tempfile.mkdtemp(prefix="sipcaptool-live-")  # pytest's tmp dirs are private to root
    os.chmod(d, 0o777)
    try:
        _user_test(os.path.join(d, "c.db"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _user_test(db: str) -> None:
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--user", "nobody", "--db", f"sqlite:///{db}",
                          "--json") as p:
            net.sender("udp", "--dst", net.ip_b, "-n", "3", "--tag", "usr")
            settle(1.2)
            # the capture process itself runs as nobody now
            with open(f"/proc/{p.pid}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
        summary(p)
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    assert uid_line.split()[1:] == [str(nobody)] * 4
    assert os.stat(db).st_uid == nobody
    assert len(rows(db)) == 3


@pytest.mark.parametrize("workers", ["1", "2"])
def test_interface_removed_and_created_again(tmp_path, workers):
    """The capture interface disappears (a NIC replaced, a veth re-created) and a new
    one of the same name comes: the capture opens the new one and goes on."""
    db = str(tmp_path / "c.db")
    with VethPair(ipv6=False) as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json",
                          "--raw-sock-children", workers) as p:
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "3", "--tag", "old")
            settle(1.0)
            net.a("ip", "link", "del", net.if_a)  # takes its peer in namespace B along
            settle(2.0)
            assert p.poll() is None
            net.a("ip", "link", "add", net.if_a, "type", "veth", "peer", "name", net.if_b,
                  "netns", net.ns_b)
            net.a("ip", "addr", "add", f"{net.ip_a}/24", "dev", net.if_a)
            net.b("ip", "addr", "add", f"{net.ip_b}/24", "dev", net.if_b)
            net.a("ip", "link", "set", net.if_a, "up")
            net.b("ip", "link", "set", net.if_b, "up")
            send_until_stored(net, db, "new", 3, 6)
            # each message once: the workers share one fanout group again
            net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "4",
                       "--tag", "last")
            settle(1.5)
        s = summary(p)
    got = rows(db)
    callids = {r["callid"] for r in got}
    assert {f"old-{i}@{net.ip_a}" for i in range(3)} <= callids, p.err
    assert {f"new-{i}@{net.ip_a}" for i in range(3)} <= callids, p.err
    assert sorted(r["callid"] for r in got if r["callid"].startswith("last-")) == \
        sorted(f"last-{i}@{net.ip_a}" for i in range(4))
    assert s["kernel"]["link_down"] == int(workers) and s["errors"] == []
    assert "capturing again" in p.err


def test_after_dropping_privileges_a_flap_is_survived_a_removal_ends_clearly(tmp_path):
    """With --user the handle cannot be opened again: a link that goes down and up keeps
    its handle and the capture goes on; an interface that is removed ends the capture
    (exit 5) with the reason, everything stored before kept."""
    import tempfile

    d = tempfile.mkdtemp(prefix="sipcaptool-live-")
    os.chmod(d, 0o777)
    db = os.path.join(d, "c.db")
    try:
        with VethPair(ipv6=False) as net:
            with live_capture(net, "-i", net.if_b, "--user", "nobody", "--db",
                              f"sqlite:///{db}", "--json") as p:
                net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "3",
                           "--tag", "kept")
                settle(1.2)
                net.b("ip", "link", "set", net.if_b, "down")
                settle(1.5)
                net.b("ip", "link", "set", net.if_b, "up")
                send_until_stored(net, db, "flap", 3, 6)
                assert p.poll() is None
                net.a("ip", "link", "del", net.if_a)
                p.wait(20)
        assert p.returncode == 5, p.err
        assert "cannot be opened again" in p.err
        callids = {r["callid"] for r in rows(db)}
        assert {f"kept-{i}@{net.ip_a}" for i in range(3)} <= callids
        assert {f"flap-{i}@{net.ip_a}" for i in range(3)} <= callids
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_without_privileges_one_line_error_exit_5(tmp_path):
    """Root without CAP_NET_RAW/CAP_NET_ADMIN (removed from the bounding set)."""
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux)")
    r = subprocess.run(["setpriv", "--bounding-set", "-net_raw,-net_admin", "--inh-caps",
                        "-net_raw,-net_admin", *sipcaptool_cmd("live", "-i", "lo", "--db",
                                                               f"sqlite:///{tmp_path}/x.db")],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 5, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "cap_net_raw" in lines[0] and "root" in lines[0]
    r = subprocess.run(["setpriv", "--bounding-set", "-net_raw,-net_admin", "--inh-caps",
                        "-net_raw,-net_admin", *sipcaptool_cmd(
                            "live", "--ipip", "--db", f"sqlite:///{tmp_path}/x.db")],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 5, r.stderr
    assert "cap_net_raw" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_mysql_and_postgresql(mysql_url, pg_url):
    """The capture end stays in the host namespace (the databases listen on its loopback);
    the frames come from a namespace and are addressed to a MAC nobody has."""
    for url in (mysql_url, pg_url):
        with VethPair(b_in_root=True, ipv6=False) as net:
            with live_capture(net, "-i", net.if_b, "--db", url, "--json") as p:
                net.sender("udp", "--dst", net.ip_b, "--src", net.ip_a, "-n", "10", "--tag", "srv")
                settle(1.2)
            s = summary(p)
        assert s["stored_total"] == 10
        got = read_rows(url, "sip_capture")
        assert len(got) == 10


# --------------------------------------------------------------------------- IPIP mode


def _ipip_traffic(tmp_path) -> tuple[str, list[bytes]]:
    msgs = sip_messages(8, tag="ipip")
    big = sip_messages(1, 3000, "ipipfrag")[0]
    inner = [
        ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, msgs[0])),
        ipv4("192.0.2.2", "192.0.2.1", 17, udp(5060, 5060, msgs[1])),
        ipv4("192.0.2.3", "192.0.2.2", 17, udp(40001, 5062, msgs[2])),
        ipv6("2001:db8::1", "2001:db8::2", 17, udp(5060, 5060, msgs[3])),
        ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 5060, 1000, msgs[4])),
        ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 5060, 1000 + len(msgs[4]), msgs[5])),
        # inner fragments (no ports in the second one)
        *ipv4_fragments("192.0.2.5", "192.0.2.2", 17, udp(5060, 5060, big), 1400),
        # outside the port range: never stored, and with the socket filter never read
        ipv4("192.0.2.1", "192.0.2.2", 17, udp(7000, 7001, msgs[6])),
        ipv6("2001:db8::1", "2001:db8::2", 17, udp(7000, 7001, msgs[7])),
    ]
    path = str(tmp_path / "ipip.hex")
    with open(path, "w") as f:
        f.write("\n".join(p.hex() for p in inner))
    return path, msgs[:6] + [big], len(inner)


@pytest.mark.parametrize("bpf_on,workers", [("1", "1"), ("0", "1"), ("1", "2")])
def test_ipip(tmp_path, bpf_on, workers):
    db = str(tmp_path / "c.db")
    path, expected, sent = _ipip_traffic(tmp_path)
    with VethPair() as net:
        with live_capture(net, "--ipip", "--raw-socket-listen", f"{net.ip_b}:5060-5062",
                          "--raw-interface", net.if_b, "--raw-moni-bpf-on", bpf_on,
                          "--raw-sock-children", workers, "--db", f"sqlite:///{db}",
                          "--json") as p:
            net.sender("ipip", "--dst", net.ip_b, "--file", path)
            settle(1.2)
        s = summary(p)
    got = rows(db)
    assert sorted(bytes(r["msg"]) for r in got) == sorted(expected)
    by_callid = {r["callid"]: r for r in got}
    v6 = next(r for r in got if r["family"] == 10)
    assert (v6["source_ip"], v6["destination_ip"]) == ("2001:db8::1", "2001:db8::2")
    assert sum(1 for r in got if r["proto"] == 2) == 2
    assert by_callid  # every row has a Call-ID
    if bpf_on == "1":
        assert s["packets"] == sent - 2  # the two port-7000 packets never left the kernel
    else:
        assert s["packets"] == sent


def test_ipip_tunnel_device_when_available(tmp_path):
    """With the kernel's ipip module: a real tunnel device, capture bound to it."""
    with VethPair() as net:
        r = net.a("ip", "tunnel", "add", "sctun", "mode", "ipip", "local", net.ip_a, "remote",
                  net.ip_b, check=False)
        if r.returncode != 0:
            pytest.skip(f"no IPIP tunnel support in this kernel: {r.stderr.strip()}")
        net.a("ip", "addr", "add", "172.31.9.1/30", "dev", "sctun")
        net.a("ip", "link", "set", "sctun", "up")
        db = str(tmp_path / "c.db")
        with live_capture(net, "--ipip", "--raw-socket-listen", f"{net.ip_b}:5060",
                          "--db", f"sqlite:///{db}", "--json") as p:
            net.sender("udp", "--dst", "172.31.9.2", "--src", "172.31.9.1", "-n", "5",
                       "--tag", "tun")
            settle(1.2)
        summary(p)
    assert len(rows(db)) == 5
