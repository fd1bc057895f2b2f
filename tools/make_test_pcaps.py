#!/usr/bin/env python3
"""Make the project's own test captures in tests/pcaps/, each with the messages it holds.

Every capture is written with sipcaptool.testing.pcapgen (frames built byte by byte)
and, for pcapng, converted with Wireshark's editcap and merged with its mergecap, or
written block by block with sipcaptool.testing.pcapng (several interfaces, link types,
timestamp resolutions, sections, byte orders, every kind of block). Next to each ``NAME.pcap`` goes
``NAME.expected.jsonl``: one line per SIP message that must be stored, in order, with
the columns the tests check (micro_ts, addresses, ports, proto, family, method, callid).

    python tools/make_test_pcaps.py          # rewrite tests/pcaps/
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipcaptool.encode.hep import encode_hep3  # noqa: E402
from sipcaptool.record import CapturedMessage  # noqa: E402
from sipcaptool.testing import pcapgen as g  # noqa: E402
from sipcaptool.testing.pcapng import PcapngBuilder, link_frame  # noqa: E402

OUT = ROOT / "tests" / "pcaps"
T0 = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z


def first_line_method(msg: bytes) -> str:
    line = msg.split(b"\r\n", 1)[0].decode()
    return line.split(" ")[1] if line.startswith("SIP/2.0") else line.split(" ")[0]


def callid(msg: bytes) -> str:
    for line in msg.split(b"\r\n"):
        if line.lower().startswith(b"call-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def exp(ts, src, sport, dst, dport, msg, proto=1, family=2):
    return {"micro_ts": ts, "source_ip": src, "source_port": sport, "destination_ip": dst,
            "destination_port": dport, "proto": proto, "family": family,
            "method": first_line_method(msg), "callid": callid(msg), "msg_len": len(msg)}


def write(name: str, frames: list[tuple[int, bytes]], expected: list[dict],
          linktype: int = g.LINKTYPE_ETHERNET, nano: bool = False) -> Path:
    path = OUT / f"{name}.pcap"
    with open(path, "wb") as f:
        w = g.PcapWriter(f, linktype=linktype, nano=nano)
        for ts, fr in frames:
            w.write(ts, fr)
    with open(OUT / f"{name}.expected.jsonl", "w") as f:
        for e in expected:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    return path


def vlan_udp():
    frames, expected = [], []
    ts = T0
    for i, (src, sport, dst, dport, msg) in enumerate(g.sip_call(1) + g.sip_register(2)):
        vl = [100] if i % 2 == 0 else [200, 300]  # 802.1Q, then QinQ
        frames.append((ts, g.ether(g.ipv4(src, dst, 17, g.udp(sport, dport, msg)), vlans=vl,
                                   qinq=len(vl) > 1)))
        expected.append(exp(ts, src, sport, dst, dport, msg))
        ts += 1000
    # noise: DNS-like UDP and an ARP frame are skipped
    frames.append((ts, g.udp4_frame("10.0.0.9", 53, "10.0.0.1", 40000, b"\x12\x34" + b"\0" * 30)))
    frames.append((ts + 1, g.ether(b"\0" * 28, ethertype=0x0806)))
    write("udp-vlan-qinq", frames, expected)


def ipv6_udp():
    frames, expected = [], []
    ts = T0
    a, b = "2001:db8::1", "2001:db8::2"
    for src, sport, _dst, dport, msg in g.sip_call(3, a="[2001:db8::1]", b="[2001:db8::2]"):
        s, d = (a, b) if src.startswith("[2001:db8::1") else (b, a)
        frames.append((ts, g.ether(g.ipv6(s, d, 17, g.udp(sport, dport, msg)), ethertype=0x86DD)))
        expected.append(exp(ts, s, sport, d, dport, msg, family=10))
        ts += 1000
    write("ipv6-udp", frames, expected)


def fragmented():
    frames, expected = [], []
    ts = T0
    call = g.sip_call(4, body_size=10_000)
    big = call[0][4]
    pad = b"X-Pad: " + b"p" * 3000 + b"\r\n"
    big = big.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + pad)
    src, sport, dst, dport, _ = call[0]
    frags = g.ipv4_fragments(src, dst, 17, g.udp(sport, dport, big), mtu=1500, ident=4242)
    assert len(frags) == 3
    order = [frags[2], frags[0], frags[1]]  # out of order; completed by the last frame
    for k, fr in enumerate(order):
        frames.append((ts + k * 10, g.ether(fr)))
    expected.append(exp(ts + 20, src, sport, dst, dport, big))
    ts += 1000
    # IPv6 fragmented INVITE
    a, b = "2001:db8::a", "2001:db8::b"
    frags6 = g.ipv6_fragments(a, b, 17, g.udp(5062, 5060, big), mtu=1280, ident=99)
    for k, fr in enumerate(frags6):
        frames.append((ts + k * 10, g.ether(fr, ethertype=0x86DD)))
    expected.append(exp(ts + 10 * (len(frags6) - 1), a, 5062, b, 5060, big, family=10))
    ts += 1000
    for src, sport, dst, dport, msg in call[1:3]:
        frames.append((ts, g.udp4_frame(src, sport, dst, dport, msg)))
        expected.append(exp(ts, src, sport, dst, dport, msg))
        ts += 1000
    write("ip-fragments", frames, expected)


def tcp_streams():
    frames, expected = [], []
    ts = T0
    call = g.sip_call(5)
    a, b = "10.1.0.1", "10.1.0.2"
    seq = {("a",): 1000, ("b",): 5000}
    # two messages in one segment (INVITE + nothing else from a; 100+180 from b in one)
    inv = call[0][4]
    trying, ringing, ok = call[1][4], call[2][4], call[3][4]
    frames.append((ts, g.ether(g.ipv4(a, b, 6, g.tcp(40000, 5060, seq[("a",)], inv)))))
    expected.append(exp(ts, a, 40000, b, 5060, inv, proto=2))
    seq[("a",)] += len(inv)
    ts += 1000
    both = trying + ringing
    frames.append((ts, g.ether(g.ipv4(b, a, 6, g.tcp(5060, 40000, seq[("b",)], both)))))
    expected.append(exp(ts, b, 5060, a, 40000, trying, proto=2))
    expected.append(exp(ts + 1, b, 5060, a, 40000, ringing, proto=2))  # +1 µs per message
    seq[("b",)] += len(both)
    ts += 1000
    # one message over three segments, the middle one retransmitted
    parts = [ok[:100], ok[100:300], ok[300:]]
    s = seq[("b",)]
    for k, p in enumerate(parts):
        frames.append((ts, g.ether(g.ipv4(b, a, 6, g.tcp(5060, 40000, s, p)))))
        if k == 1:
            frames.append((ts + 1, g.ether(g.ipv4(b, a, 6, g.tcp(5060, 40000, s, p)))))
        s += len(p)
        ts += 100
    expected.append(exp(ts - 100, b, 5060, a, 40000, ok, proto=2))
    write("tcp-streams", frames, expected)


def hep_in_pcap():
    frames, expected = [], []
    ts = T0
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(6)):
        hep_ts = T0 - 5_000_000 + k
        m = CapturedMessage(hep_ts, src, sport, dst, dport, 1, 2, msg)
        pkt = encode_hep3(m, capture_id=2001)
        frames.append((ts, g.udp4_frame("192.0.2.10", 40001, "192.0.2.20", 9060, pkt)))
        e = exp(hep_ts, src, sport, dst, dport, msg)
        e["node"] = "homer01:2001"
        expected.append(e)
        ts += 1000
    write("hep3-in-udp", frames, expected)


def nanosecond_and_pcapng():
    frames, expected = [], []
    ts = T0 + 123
    for src, sport, dst, dport, msg in g.sip_options(7):
        frames.append((ts, g.udp4_frame(src, sport, dst, dport, msg)))
        expected.append(exp(ts, src, sport, dst, dport, msg))
        ts += 7
    write("nanosecond", frames, expected, nano=True)
    editcap = shutil.which("editcap")
    if editcap:
        subprocess.run([editcap, "-F", "pcapng", str(OUT / "nanosecond.pcap"),
                        str(OUT / "nanosecond-pcapng.pcapng")], check=True)
        shutil.copy(OUT / "nanosecond.expected.jsonl", OUT / "nanosecond-pcapng.expected.jsonl")


def raw_ip_linktype():
    frames, expected = [], []
    ts = T0
    for src, sport, dst, dport, msg in g.sip_register(8):
        frames.append((ts, g.ipv4(src, dst, 17, g.udp(sport, dport, msg))))
        expected.append(exp(ts, src, sport, dst, dport, msg))
        ts += 10
    write("raw-ip", frames, expected, linktype=g.LINKTYPE_RAW)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} (Wireshark's, Debian package wireshark-common) is needed")
    return path


def _expected(name: str, expected: list[dict]) -> None:
    with open(OUT / f"{name}.expected.jsonl", "w") as f:
        for e in expected:
            f.write(json.dumps(e, sort_keys=True) + "\n")


def _v6(src: str, dst: str) -> tuple[str, str]:
    """The bare addresses of a message of sip_call(..., a="[...]", b="[...]")."""
    return (src.strip("[]"), dst.strip("[]"))


def pcapng_mixed_link_types():
    """mergecap of an Ethernet capture and a raw-IP one (as dumpcap -i eth0 -i tun0
    writes): one pcapng file, two interfaces of different link types, which libpcap
    refuses to read."""
    eth_frames, raw_frames, expected = [], [], []
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(11)):
        ts = T0 + k * 2000
        eth_frames.append((ts, g.udp4_frame(src, sport, dst, dport, msg)))
        expected.append(exp(ts, src, sport, dst, dport, msg))
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_register(12) * 2):
        ts = T0 + 1000 + k * 2000
        raw_frames.append((ts, g.ipv4(src, dst, 17, g.udp(sport, dport, msg))))
        expected.append(exp(ts, src, sport, dst, dport, msg))
    tmp = OUT / ".merge"
    tmp.mkdir(exist_ok=True)
    for name, frames, lt in (("eth", eth_frames, g.LINKTYPE_ETHERNET),
                             ("tun", raw_frames, g.LINKTYPE_RAW)):
        with open(tmp / f"{name}.pcap", "wb") as f:
            w = g.PcapWriter(f, linktype=lt)
            for ts, fr in frames:
                w.write(ts, fr)
    subprocess.run([_tool("mergecap"), "-F", "pcapng", "-w",
                    str(OUT / "pcapng-mixed-link-types.pcapng"),
                    str(tmp / "eth.pcap"), str(tmp / "tun.pcap")], check=True)
    shutil.rmtree(tmp)
    expected.sort(key=lambda e: e["micro_ts"])
    _expected("pcapng-mixed-link-types", expected)


def pcapng_sections():
    """Two pcapng files one after the other (cat a.pcapng b.pcapng): the first made by
    editcap from a nanosecond pcap, the second big-endian with a Linux cooked v2 and a
    BSD loopback interface."""
    expected = []
    tmp = OUT / ".sections"
    tmp.mkdir(exist_ok=True)
    with open(tmp / "a.pcap", "wb") as f:
        w = g.PcapWriter(f, nano=True)
        for k, (src, sport, dst, dport, msg) in enumerate(g.sip_options(13)):
            ts = T0 + 17 + k * 500
            w.write(ts, g.udp4_frame(src, sport, dst, dport, msg))
            expected.append(exp(ts, src, sport, dst, dport, msg))
    subprocess.run([_tool("editcap"), "-F", "pcapng", str(tmp / "a.pcap"), str(tmp / "a.pcapng")],
                   check=True)
    b = PcapngBuilder(big_endian=True).section()
    ifaces = [b.interface(276, name="any"), b.interface(0, name="lo0", tsresol=9)]
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(14)):
        i = ifaces[k % 2]
        frame = link_frame(b.ifaces[i].linktype, g.ipv4(src, dst, 17, g.udp(sport, dport, msg)))
        back = b.packet(i, T0 + 10_000 + k * 1000 + 3, frame)
        expected.append(exp(back, src, sport, dst, dport, msg))
    data = (tmp / "a.pcapng").read_bytes() + b.data()
    (OUT / "pcapng-sections.pcapng").write_bytes(data)
    shutil.rmtree(tmp)
    _expected("pcapng-sections", expected)


def pcapng_interfaces():
    """One section, interfaces of seven link types with their own timestamp resolutions
    (µs, ns, ms, 2**-20 s) and offsets; Enhanced, Simple and obsolete Packet Blocks;
    name resolution, statistics and a custom block (skipped, counted)."""
    b = PcapngBuilder().section()
    eth = b.interface(1, name="eth0")
    sll = b.interface(113, name="any", tsresol=9)
    ppp = b.interface(9, name="ppp0", tsresol=3)
    loop = b.interface(108, name="lo0")
    ip4 = b.interface(228, name="ipv4")
    raw6 = b.interface(229, name="tun6", tsresol=0x80 | 20, tsoffset=3600)
    b.names()
    expected = []
    ts = T0 + 5
    last = 0
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(15)):
        frame_ip = g.ipv4(src, dst, 17, g.udp(sport, dport, msg))
        if k == 2:      # a Simple Packet Block: interface 0, the time of the packet before
            b.simple(link_frame(1, frame_ip))
            expected.append(exp(last, src, sport, dst, dport, msg))
        else:
            i = [eth, sll, ppp, loop, ip4][k % 5]
            last = b.packet(i, ts, link_frame(b.ifaces[i].linktype, frame_ip),
                            obsolete=(k == 4))
            expected.append(exp(last, src, sport, dst, dport, msg))
        if k == 3:
            b.custom()
        ts += 1001
    for k, (src, sport, dst, dport, msg) in enumerate(
            g.sip_call(16, a="[2001:db8::15]", b="[2001:db8::16]")):
        s, d = _v6(src, dst)
        i = [raw6, eth, sll][k % 3]
        frame = link_frame(b.ifaces[i].linktype, g.ipv6(s, d, 17, g.udp(sport, dport, msg)))
        last = b.packet(i, ts, frame)
        expected.append(exp(last, s, sport, d, dport, msg, family=10))
        ts += 1001
    for i in range(len(b.ifaces)):
        b.statistics(i)
    (OUT / "pcapng-interfaces.pcapng").write_bytes(b.data())
    _expected("pcapng-interfaces", expected)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    vlan_udp()
    ipv6_udp()
    fragmented()
    tcp_streams()
    hep_in_pcap()
    nanosecond_and_pcapng()
    raw_ip_linktype()
    pcapng_mixed_link_types()
    pcapng_sections()
    pcapng_interfaces()
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
