"""Live capture pieces that need no privileges: listen syntax, filters, BPF, HEP out, CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from sipcaptool.decode.hep import decode_datagram
from sipcaptool.errors import ConfigError
from sipcaptool.record import CapturedMessage
from sipcaptool.senders.hep import HepSender, parse_target
from sipcaptool.sources import bpf
from sipcaptool.sources.live import Listen, LiveOptions, parse_listen
from sipcaptool.stats import Stats
from sipcaptool.testing.pcapgen import ipv4, ipv4_fragments, ipv6, ipv6_fragments, tcp, udp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text,expected", [
    ("", Listen("", 5060, 5060)),
    ("5080", Listen("", 5080, 5080)),
    (":5060-5090", Listen("", 5060, 5090)),
    ("10.0.0.1:5060", Listen("10.0.0.1", 5060, 5060)),
    ("10.0.0.1:5060-5090", Listen("10.0.0.1", 5060, 5090)),
    ("10.0.0.1", Listen("10.0.0.1", 5060, 5060)),
    ("[fd00::1]:5062", Listen("fd00::1", 5062, 5062)),
    ("fd00::1", Listen("fd00::1", 5060, 5060)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.1:abc", ":5090-5060", ":0", "host:5060", "[::1:5060"])
def test_parse_listen_errors_name_the_setting(text):
    with pytest.raises(ConfigError, match="raw_socket_listen"):
        parse_listen(text)


def test_decoder_ports_follow_filter_choice():
    o = LiveOptions(listen=Listen("", 5060, 5061))
    assert o.decoder_ports() == frozenset({5060, 5061})
    o.filter_expr = "udp port 9999"
    assert o.decoder_ports() is None  # SIP by content, as replay
    o.listen_given = True
    assert o.decoder_ports() == frozenset({5060, 5061})


def test_mirror_filter_compiles_and_admits_fragments_and_vlan():
    import pcapy

    expr = bpf.mirror_filter(5060, 5090)
    prog = pcapy.compile(1, 65535, expr, 1, 0)  # Ethernet
    from sipcaptool.testing.pcapgen import ether

    sip = b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"
    frag2 = ipv4_fragments("10.0.0.1", "10.0.0.2", 17, udp(5060, 5060, sip * 100), 500)[1]
    v6frag2 = ipv6_fragments("fd00::1", "fd00::2", 17, udp(5060, 5060, sip * 100), 1280)[1]
    cases = {
        "udp": (ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 5070, sip))), True),
        "tcp": (ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(5090, 40000, 1, sip))), True),
        "other-port": (ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 5091, sip))), False),
        "frag": (ether(frag2), True),
        "v6": (ether(ipv6("fd00::1", "fd00::2", 17, udp(1, 5060, sip)), 0x86DD), True),
        "v6frag": (ether(v6frag2, 0x86DD), True),
        "vlan": (ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 5060, sip)), vlans=[7]), True),
        "qinq": (ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 5060, sip)), vlans=[7, 8],
                       qinq=True), True),
        "vlan-frag": (ether(frag2, vlans=[7]), True),
        "vlan-other": (ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 7000, sip)), vlans=[7]),
                       False),
    }

    class Hdr:
        def __init__(self, n):
            self.n = n

    for name, (frame, want) in cases.items():
        assert bool(prog.filter(frame)) == want, name
    # Linux cooked capture (-i any) has no VLAN keyword: the variant without it compiles
    with pytest.raises(pcapy.PcapError):
        pcapy.compile(113, 65535, expr, 1, 0)
    pcapy.compile(113, 65535, bpf.mirror_filter(5060, 5090, vlan=False), 1, 0)


def _outer(inner: bytes, proto: int = 4) -> bytes:
    return ipv4("198.51.100.1", "198.51.100.2", proto, inner)


def test_ipip_program_port_range_fragments_and_ipv6():
    prog = bpf.ipip_program(5060, 5090)
    sip = b"x" * 10
    ok = [
        _outer(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 5060, sip))),
        _outer(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5090, 9, sip))),
        _outer(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 5075, 1, sip))),
        _outer(ipv4_fragments("10.0.0.1", "10.0.0.2", 17, udp(1, 2, sip * 300), 576)[1]),
        _outer(ipv6("fd00::1", "fd00::2", 17, udp(1, 5060, sip)), 41),
        _outer(ipv6_fragments("fd00::1", "fd00::2", 17, udp(1, 2, sip * 300))[1], 41),
    ]
    bad = [
        _outer(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 5091, sip))),
        _outer(ipv4("10.0.0.1", "10.0.0.2", 1, b"\x08\0\0\0\0\0\0\0")),
        _outer(ipv6("fd00::1", "fd00::2", 17, udp(1, 7000, sip)), 41),
        _outer(b"\x00" * 20),
        b"\x45",  # cut short: out-of-bounds loads reject
    ]
    assert all(bpf.run_program(prog, p) for p in ok)
    assert not any(bpf.run_program(prog, p) for p in bad)
    # without ports every inner UDP/TCP packet passes
    anyport = bpf.ipip_program(None, None)
    assert bpf.run_program(anyport, bad[0]) and not bpf.run_program(anyport, bad[1])
    # an AF_INET6 socket sees the inner packet directly
    v6sock = bpf.ipip_program(5060, 5060, outer_ipv4=False)
    assert bpf.run_program(v6sock, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 5060, sip)))
    assert not bpf.run_program(v6sock, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 5061, sip)))


def test_ipip_worker_selection_keeps_both_directions_and_fragments_together():
    n = 3
    progs = [bpf.ipip_program(5060, 5060, select=(i, n)) for i in range(n)]
    sip = b"y" * 2000
    for a in range(1, 30):
        src, dst = f"10.0.{a}.1", f"10.1.0.{a * 7 % 250 + 1}"
        packets = [_outer(ipv4(src, dst, 17, udp(5060, 5060, b"x"))),
                   _outer(ipv4(dst, src, 17, udp(5060, 5060, b"x"))),
                   *[_outer(f) for f in ipv4_fragments(src, dst, 17, udp(5060, 5060, sip), 576)]]
        owners = {tuple(i for i, p in enumerate(progs) if bpf.run_program(p, pkt)) for pkt in packets}
        assert len(owners) == 1 and len(next(iter(owners))) == 1


def test_attach_filter_to_a_socket():
    # any unprivileged datagram socket takes a classic BPF filter
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        bpf.attach_filter(s, bpf.ipip_program(5060, 5090, select=(1, 2)))
        bpf.detach_filter(s)


@pytest.mark.parametrize("text,expected", [
    ("udp:127.0.0.1:9060", ("udp", "127.0.0.1", 9060)),
    ("tcp:collector.example:9061", ("tcp", "collector.example", 9061)),
    ("udp:[::1]:9060", ("udp", "::1", 9060)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["udp:127.0.0.1", "sctp:1.2.3.4:9060", "udp:1.2.3.4:0", "9060"])
def test_parse_target_errors(text):
    with pytest.raises(ConfigError, match="--hep-to"):
        parse_target(text)


def _msg(payload: bytes) -> CapturedMessage:
    return CapturedMessage(1_700_000_000_123_456, "10.0.0.1", 5060, "10.0.0.2", 5060, 1, 2,
                           payload)


def test_hep_sender_udp_and_oversize_handling():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    stats = Stats()
    port = rx.getsockname()[1]
    snd = HepSender([f"udp:127.0.0.1:{port}"], stats, capture_id=42, auth_key="k",
                    node_name="edge")
    small = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"
    snd.send(_msg(small))
    pkt = decode_datagram(rx.recv(70000), now_us=0)[0]
    assert pkt.payload == small and pkt.capture_id == 42
    # compressible but too big for a datagram: sent compressed
    snd.send(_msg(b"A" * 90000))
    pkt = decode_datagram(rx.recv(70000), now_us=0)[0]
    assert pkt.payload == b"A" * 90000
    # neither fits: counted, never cut
    snd.send(_msg(os.urandom(90000)))
    snd.close()
    rx.close()
    assert stats["hep_out:sent_udp"] == 2 and stats["hep_out:compressed"] == 1
    assert stats["dropped:hep-too-large"] == 1


def test_hep_sender_tcp_for_what_udp_cannot_carry():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    stats = Stats()
    snd = HepSender([f"udp:127.0.0.1:{rx.getsockname()[1]}",
                     f"tcp:127.0.0.1:{srv.getsockname()[1]}"], stats)
    conn, _ = srv.accept()
    big = os.urandom(65430)  # HEP packet over 65,507 bytes, under 65,535
    snd.send(_msg(big))
    snd.close()
    conn.settimeout(2)
    data = b""
    while True:
        d = conn.recv(65536)
        if not d:
            break
        data += d
    from sipcaptool.decode.hep_stream import HepStream

    frames = HepStream().feed(data)
    assert len(frames) == 1 and decode_datagram(frames[0], now_us=0)[0].payload == big
    assert stats["hep_out:sent_tcp"] == 1
    conn.close()
    srv.close()
    rx.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sipcaptool", "live", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args,needle", [
    ((), "no interface"),
    (("-i", "lo", "--raw-socket-listen", ":99999"), "raw_socket_listen"),
    (("-i", "eth0", "--raw-interface", "eth1"), "-i/--interface and --raw-interface"),
    (("--ipip", "--filter", "udp"), "--filter"),
    (("--ipip", "--promiscuous-on"), "promiscuous_on = 1 (command line) is for mirror mode"),
    (("-i", "lo", "--db", "none"), "--hep-to"),
    (("-i", "lo", "--hep-to", "udp:nowhere"), "--hep-to"),
])
def test_cli_usage_errors_exit_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_unknown_interface_exit_5(tmp_path):
    r = _cli("-i", "nosuchif0", "--db", f"sqlite:///{tmp_path}/x.db")
    assert r.returncode == 5, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "nosuchif0" in r.stderr


def test_help_has_example():
    r = _cli("--help")
    assert r.returncode == 0 and "Example:" in r.stdout and "--raw-sock-children" in r.stdout


def test_live_has_the_logging_options_of_every_long_running_command():
    from click.testing import CliRunner

    from sipcaptool.cli import cli

    out = CliRunner().invoke(cli, ["live", "--help"]).output
    for opt in ("--verbose", "--quiet", "--log-file", "--log-format", "--control", "--metrics"):
        assert opt in out, opt
