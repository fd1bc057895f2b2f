"""``sipcaptool live --dedup-window`` on a real interface: the same messages arrive on
two VLANs (a veth pair between namespaces, frames written by a packet socket), and one
is sent again on the first VLAN. The rule itself is tested in test_dedup.py."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns import VethPair, live_capture, sip_messages  # noqa: E402
from test_live_netns import _write_frames  # noqa: E402

from sipcaptool.testing.pcapgen import ether, ipv4, udp  # noqa: E402

pytestmark = pytest.mark.usefixtures("netns")

ROUTER_MAC = b"\x02\0\0\0\0\xfe"


def stored(db: str) -> list[bytes]:
    with sqlite3.connect(db) as c:
        return [bytes(r[0]) for r in c.execute("select msg from sip_capture order by id")]


@pytest.mark.parametrize("workers", [1, 2])
def test_live_two_vlans_each_message_once_retransmission_kept(tmp_path, workers):
    db = str(tmp_path / "c.db")
    msgs = sip_messages(16, tag=f"dd{workers}")
    src, dst = "10.99.0.1", "10.99.0.2"
    frames = []
    for i, m in enumerate(msgs):
        # a flow each: PACKET_FANOUT_HASH spreads flows over the workers, and both
        # copies of a message (same addresses and ports) reach the same one
        packet = ipv4(src, dst, 17, udp(5100 + i, 5060, m))
        frames.append(ether(packet, vlans=[10]))
        frames.append(ether(packet, vlans=[20], src=ROUTER_MAC))   # routed: another hop
    # the first message sent again, seen on VLAN 10 only: a retransmission
    frames.append(ether(ipv4(src, dst, 17, udp(5100, 5060, msgs[0])), vlans=[10]))
    path = _write_frames(tmp_path, frames)
    with VethPair() as net:
        with live_capture(net, "-i", net.if_b, "--db", f"sqlite:///{db}", "--json",
                          "--dedup-window", "5000", "--raw-sock-children", str(workers)) as p:
            net.sender("frames", "--iface", net.if_a, "--file", path)
            time.sleep(1.2)
    assert p.returncode == 0, p.err
    s = json.loads(p.out)
    got = stored(db)
    assert s["messages"] == len(frames)
    assert sorted(got) == sorted([*msgs, msgs[0]])
    assert s["dedup"] == {"vlan-20": len(msgs)}
