"""`sipcaptool export`: stored messages written as pcap, pcapng and text, checked with the
real tools -- tshark reads every file without errors or expert warnings and decodes the
same SIP messages, sngrep sees the same dialogs -- and replayed back: ``sipcaptool
replay`` of an exported file stores the same messages again (Call-ID, method/status,
CSeq, addresses, ports, µs time, msg bytes)."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_data import CORPUS, needs_shared
from store_helpers import read_rows

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.errors import ConfigError
from sipcaptool.export import (
    ExportReport,
    OutputExistsError,
    export_messages,
    format_for,
    message_packets,
    write_export,
)
from sipcaptool.export.frames import checksum, frames_on_tcp
from sipcaptool.export.text import header_line
from sipcaptool.query.model import STORED_COLUMNS, StoredMessage
from sipcaptool.stats import Stats
from sipcaptool.testing.pcapgen import PcapWriter, sip_call, udp4_frame

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "tests" / "pcaps"
EXAMPLE = ROOT / "examples" / "call.pcap"
PROJECT_CAPTURES = [EXAMPLE, *sorted(p for p in PCAPS.iterdir()
                                     if p.suffix in (".pcap", ".pcapng"))]
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
# messages tshark finds malformed in the original capture already (so in the export too)
MALFORMED_IN_CORPUS = {"sip-pppoe-mixed-truncated.pcap", "sip-udp-fuzzed-malformed.pcap"}

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_sngrep = pytest.mark.skipif(shutil.which("sngrep") is None, reason="sngrep not installed")


# ---------------------------------------------------------------- helpers

def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def replay(url: str, *files: Path | str, bad: bool = False) -> None:
    p = cli("replay", "--db", url, "-q", "--json", *map(str, files),
            *(["--capture-bad-msgs", "1"] if bad else []))
    assert p.returncode == 0, p.stderr


def stored(url: str, table: str = "sip_capture") -> list[StoredMessage]:
    return [StoredMessage.from_row(STORED_COLUMNS, r, table)
            for r in read_rows(url, table, STORED_COLUMNS)]


def key(m: StoredMessage) -> tuple:
    """What a round trip keeps."""
    return (m.micro_ts, m.callid, m.method, m.reply_reason, m.cseq, m.source_ip, m.source_port,
            m.destination_ip, m.destination_port, m.msg)


def tshark(path: Path, *args: str) -> str:
    p = subprocess.run(["tshark", "-n", "-r", str(path), *args], capture_output=True,
                       text=True, timeout=120)
    err = "\n".join(ln for ln in p.stderr.splitlines() if "Running as user" not in ln)
    assert p.returncode == 0 and not err.strip(), err
    return p.stdout


def decode_as(msgs: list[StoredMessage]) -> list[str]:
    """tshark takes SIP on 5060 by itself; other ports are told (6060 would be X11)."""
    args = []
    for transport, ports in (("tcp", {p for m in msgs if m.proto != 1 and m.proto != 4
                                      for p in (m.source_port, m.destination_port)}),
                             ("udp", {p for m in msgs if m.proto in (0, 1)
                                      for p in (m.source_port, m.destination_port)})):
        for port in sorted(ports - {5060}):
            args += ["-d", f"{transport}.port=={port},sip"]
    return args


# tshark checks no checksum unless asked; a bad one is then an error
CHECKSUMS = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
             "-o", "udp.check_checksum:TRUE", "-o", "sctp.checksum:CRC-32C"]


def expert_problems(path: Path, msgs: list[StoredMessage]) -> list[str]:
    """tshark's expert information above Note level (errors, warnings: malformed packets,
    previous segment not captured, bad checksums of IP, UDP, TCP, SCTP...)."""
    text = tshark(path, "-q", "-z", "expert", *CHECKSUMS, *decode_as(msgs))
    return re.findall(r"^(?:Errors|Warns) \(\d+\)\n=+\n.*?(?=\n\s*\n|\Z)", text, re.M | re.S)


def tshark_messages(path: Path, msgs: list[StoredMessage]) -> list[tuple]:
    """The SIP messages tshark decodes: (µs, src, sport, dst, dport, Call-ID, method or
    status, CSeq), in file order."""
    fields = ["frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "udp.srcport",
              "tcp.srcport", "sctp.srcport", "udp.dstport", "tcp.dstport", "sctp.dstport",
              "sip.Call-ID", "sip.Method", "sip.Status-Code", "sip.CSeq"]
    args = ["-Y", "sip", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f",
            *[a for f in fields for a in ("-e", f)], *decode_as(msgs)]
    out = []
    for line in tshark(path, *args).splitlines():
        (t, ip4s, ip6s, ip4d, ip6d, us, ts_, ss, ud, td, sd, cid, meth, status, cseq) = \
            line.split("\t")
        sec, frac = t.split(".")
        out.append((int(sec) * 1_000_000 + int(frac[:6]), ip4s or ip6s, int(us or ts_ or ss),
                    ip4d or ip6d, int(ud or td or sd), cid, meth or status, cseq))
    return out


def expected_tshark(msgs: list[StoredMessage]) -> list[tuple]:
    def norm(ip: str) -> str:
        return str(ipaddress.ip_address(ip))
    return [(m.micro_ts, norm(m.source_ip), m.source_port, norm(m.destination_ip),
             m.destination_port, m.callid, m.method, m.cseq)
            for m in sorted(msgs, key=lambda m: m.micro_ts)]


def check_with_tshark(path: Path, msgs: list[StoredMessage]) -> None:
    assert expert_problems(path, msgs) == []
    got = tshark_messages(path, msgs)
    assert sorted(got) == sorted(expected_tshark(msgs))


def round_trip(src_url: str, out: Path, work: Path, bad: bool = False
               ) -> tuple[list[StoredMessage], list[StoredMessage]]:
    """Export everything of ``src_url`` to ``out``, replay it into a new SQLite file;
    the messages before and after."""
    before = stored(src_url)
    export_messages(before, str(out))
    url2 = f"sqlite:///{work / (out.name + '.db')}"
    replay(url2, out, bad=bad)
    return before, stored(url2)


# ---------------------------------------------------------------- writers, by hand

def msg(**kw) -> StoredMessage:
    row = dict.fromkeys(STORED_COLUMNS, "")
    row.update(micro_ts=1_764_000_000_123_456, source_port=5060, destination_port=5060,
               proto=1, family=2, source_ip="192.0.2.1", destination_ip="192.0.2.2",
               node="homer01", callid="abc@h", method="OPTIONS", cseq="1 OPTIONS",
               msg=b"OPTIONS sip:b SIP/2.0\r\nCall-ID: abc@h\r\nCSeq: 1 OPTIONS\r\n"
                   b"Content-Length: 0\r\n\r\n")
    row.update(kw)
    return StoredMessage.from_row(list(row), list(row.values()))


def test_format_from_name_or_option():
    assert format_for("x.pcap") == "pcap"
    assert format_for("X.PCAPNG") == "pcapng"
    assert format_for("call.txt") == "txt"
    assert format_for("x.bin", "pcap") == "pcap"
    with pytest.raises(ConfigError, match="--format"):
        format_for("x.bin")
    with pytest.raises(ConfigError, match="--format"):
        format_for("x.pcap", "json")


def test_checksums_are_right():
    """IPv4 header, UDP and TCP over IPv4 and IPv6: the checksum over each (with its
    pseudo-header) folds to zero."""
    m4 = msg()
    m6 = msg(source_ip="2001:db8::1", destination_ip="2001:db8::2", family=10)
    for m in (m4, m6, msg(proto=2), msg(proto=2, source_ip="2001:db8::1",
                                        destination_ip="2001:db8::2", family=10)):
        for p in message_packets([m]):
            f = p.frame
            if f[12:14] == b"\x08\x00":
                ip = f[14:34]
                assert checksum(ip) == 0
                src, dst, l4 = ip[12:16], ip[16:20], f[34:]
                proto = ip[9]
                pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
            else:
                ip = f[14:54]
                src, dst, l4 = ip[8:24], ip[24:40], f[54:]
                proto = ip[6]
                pseudo = src + dst + struct.pack("!IxxxB", len(l4), proto)
            assert checksum(pseudo + l4) == 0, (m.proto, m.family)


def test_tcp_message_split_at_mss_and_sequence_numbers_follow():
    big = b"MESSAGE sip:b SIP/2.0\r\nCall-ID: big@h\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5000\r\n\r\n" \
        + b"x" * 5000
    packets = message_packets([msg(proto=2, msg=big, method="MESSAGE", callid="big@h")], mss=1000)
    tcp_payloads = []
    seqs = []
    for p in packets:
        seg = p.frame[34:]
        hlen = (seg[12] >> 4) * 4
        flags = seg[13]
        seqs.append((struct.unpack("!I", seg[4:8])[0], flags, len(seg) - hlen))
        if len(seg) > hlen:
            tcp_payloads.append(seg[hlen:])
        assert p.ts_us == 1_764_000_000_123_456
    assert seqs[0][1] == 0x02 and seqs[1][1] == 0x12        # SYN, SYN/ACK
    assert all(len(x) <= 1000 for x in tcp_payloads)
    assert b"".join(tcp_payloads) == big
    data = [s for s in seqs if s[2]]
    for (s1, _f1, n1), (s2, _f2, _n2) in zip(data, data[1:], strict=False):
        assert s2 == (s1 + n1) & 0xFFFFFFFF


def test_text_export_header_and_message(tmp_path):
    m = msg(source_ip="2001:db8::1", destination_ip="2001:db8::2", family=10, proto=2)
    assert header_line(m) == ("2025/11/24 16:00:00.123456 [2001:db8::1]:5060 -> "
                              "[2001:db8::2]:5060 TCP homer01")
    out = tmp_path / "x.txt"
    r = export_messages([m, msg(micro_ts=1_764_000_000_000_001)], str(out))
    assert r == ExportReport(str(out), "txt", 2, 2)
    text = out.read_bytes()
    assert text.startswith(b"2025/11/24 16:00:00.000001 192.0.2.1:5060 -> 192.0.2.2:5060 UDP "
                           b"homer01\nOPTIONS sip:b")        # time order
    assert text.count(m.msg) == 2


def test_existing_file_is_kept_without_force(tmp_path):
    out = tmp_path / "x.pcap"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError) as e:
        export_messages([msg()], str(out))
    assert e.value.exit_code == 2
    assert out.read_bytes() == b"keep"
    export_messages([msg()], str(out), force=True)
    assert out.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    assert [p.name for p in tmp_path.iterdir()] == ["x.pcap"]     # no temporary file left


def test_a_message_stored_twice_is_written_twice():
    """Rows alike (the same message captured twice) are each a packet, as they were seen."""
    buf = io.BytesIO()
    # TCP: SYN, SYN/ACK, ACK, the data, its ACK, FIN, FIN, ACK
    assert write_export(buf, [msg(), msg(), msg(proto=2)], "pcap") == (3, 2 + 8)


@needs_tshark
def test_pcapng_carries_node_and_microseconds(tmp_path):
    msgs = [msg(node="edge-1"), msg(micro_ts=1_764_000_000_999_999, node="core:2001",
                                    proto=2, source_port=40000)]
    out = tmp_path / "n.pcapng"
    export_messages(msgs, str(out))
    text = tshark(out, "-Y", "sip", "-T", "fields", "-e", "frame.time_epoch", "-e",
                  "frame.comment")
    assert text.splitlines() == ["1764000000.123456000\tedge-1",
                                 "1764000000.999999000\tcore:2001"]
    check_with_tshark(out, msgs)


def decoded(packets) -> list[tuple]:
    """The messages sipcaptool's own decoder takes out of the frames."""
    dec = PacketDecoder(1, Stats())
    out = []
    for p in packets:
        for c in dec.decode(p.ts_us, p.frame):
            out.append((c.ts_us, c.src_ip, c.src_port, c.dst_ip, c.dst_port, c.proto, c.payload))
    return out


def expected(m: StoredMessage) -> tuple:
    proto = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 2, 6: 2}[m.proto]
    if proto == 2 and not frames_on_tcp(m.msg):
        proto = 1
    return (m.micro_ts, m.source_ip, m.source_port, m.destination_ip, m.destination_port, proto,
            m.msg)


def test_message_framing_on_tcp():
    ok = b"INVITE sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc"
    assert frames_on_tcp(ok)
    assert frames_on_tcp(b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n")
    assert frames_on_tcp(b"OPTIONS sip:a SIP/2.0\nCall-ID: x\n\n")       # none: 0
    assert not frames_on_tcp(ok + b"d")
    assert not frames_on_tcp(ok[:-1])
    assert not frames_on_tcp(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n")
    assert not frames_on_tcp(b"\r\nOPTIONS sip:a SIP/2.0\r\n\r\n")
    assert not frames_on_tcp(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: cut")
    # written as UDP instead, so that it does not swallow what follows
    bad = msg(proto=2, msg=ok + b"d")
    assert decoded(message_packets([bad, msg(proto=2, micro_ts=bad.micro_ts + 1)])) == [
        expected(bad), expected(msg(proto=2, micro_ts=bad.micro_ts + 1))]


# unicast addresses as captures show them (the decoder prints IPv4-mapped IPv6 its own way)
ADDRS4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n)))
ADDRS6 = st.integers(0x2000 << 112, (0x3FFF << 112) | ((1 << 112) - 1)).map(
    lambda n: str(ipaddress.IPv6Address(n)))


@st.composite
def stored_messages(draw):
    v6 = draw(st.booleans())
    addr = ADDRS6 if v6 else ADDRS4
    hosts = draw(st.lists(st.tuples(addr, st.integers(1, 65535)), min_size=2, max_size=4,
                          unique=True))
    n = draw(st.integers(1, 12))
    ts = draw(st.integers(1_000_000_000_000_000, 2_000_000_000_000_000))
    out = []
    for i in range(n):
        a, b = draw(st.lists(st.sampled_from(hosts), min_size=2, max_size=2, unique=True))
        ts += draw(st.integers(0, 3_000_000))
        body = draw(st.binary(max_size=draw(st.sampled_from([0, 50, 4000]))))
        method = draw(st.sampled_from(["INVITE", "ACK", "SIP/2.0 200 OK", "MESSAGE"]))
        start = method if method.startswith("SIP/") else f"{method} sip:u@h SIP/2.0"
        raw = (f"{start}\r\nCall-ID: c{i}@h\r\nCSeq: {i} X\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        if draw(st.integers(0, 9)) == 0:
            raw += b"junk"             # a stored message a stream cannot frame
        out.append(msg(micro_ts=ts, source_ip=a[0], source_port=a[1], destination_ip=b[0],
                       destination_port=b[1], family=10 if v6 else 2, msg=raw,
                       proto=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6])), callid=f"c{i}@h"))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored_messages(), st.sampled_from([536, 1460]))
def test_any_messages_decode_back_to_themselves(msgs, mss):
    """Whatever the addresses, ports, transports, sizes and times: sipcaptool's decoder
    takes back from the frames exactly the messages written, with their times."""
    assert sorted(decoded(message_packets(msgs, mss=mss))) == sorted(map(expected, msgs))


@needs_tshark
def test_the_tshark_check_sees_a_bad_checksum(tmp_path):
    """The expert check is not blind: one flipped checksum bit is reported."""
    m = msg()
    frame = bytearray(message_packets([m])[0].frame)
    frame[14 + 20 + 6] ^= 1                       # the UDP checksum
    out = tmp_path / "bad.pcap"
    with out.open("wb") as f:
        PcapWriter(f).write(m.micro_ts, bytes(frame))
    assert any("Bad checksum" in p for p in expert_problems(out, [m]))


# ---------------------------------------------------------------- real captures

@needs_tshark
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("capture", PROJECT_CAPTURES, ids=lambda p: p.name)
def test_project_capture_round_trip(capture, fmt, tmp_path, sqlite_url):
    replay(sqlite_url, capture)
    out = tmp_path / f"export.{fmt}"
    before, after = round_trip(sqlite_url, out, tmp_path)
    assert before
    assert sorted(map(key, after)) == sorted(map(key, before))
    check_with_tshark(out, before)


@needs_shared("corpus")
@needs_tshark
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_round_trip(name, tmp_path, sqlite_url):
    """Every corpus file, stored with capture_bad_msgs=1 (so that the messages
    Kamailio's parser rejects are there too), exported and replayed: the same messages;
    tshark decodes them as stored, and finds nothing wrong the original did not have."""
    replay(sqlite_url, CORPUS / name, bad=True)
    out = tmp_path / "export.pcapng"
    before, after = round_trip(sqlite_url, out, tmp_path, bad=True)
    assert before
    assert sorted(map(key, after)) == sorted(map(key, before))
    if name not in MALFORMED_IN_CORPUS:
        check_with_tshark(out, before)
        return
    # what tshark finds malformed in the export, it finds in the original capture
    def kinds(path: Path) -> set[str]:
        return {ln.split(None, 1)[1] for block in expert_problems(path, before)
                for ln in block.splitlines()[3:]}
    assert kinds(out) <= kinds(CORPUS / name)


@needs_tshark
def tshark_tcp_messages(path: Path, msgs: list[StoredMessage]) -> list[bytes]:
    """The bytes of each SIP message tshark reassembles out of the TCP streams."""
    text = tshark(path, "-Y", "sip && tcp", "-T", "fields", "-e", "tcp.reassembled.data",
                  "-e", "tcp.payload", *decode_as(msgs))
    return [bytes.fromhex((reasm or payload).replace(":", ""))
            for reasm, payload in (ln.split("\t") for ln in text.splitlines())]


def test_tcp_reassembled_by_tshark_equals_stored_bytes(tmp_path, sqlite_url):
    replay(sqlite_url, PCAPS / "tcp-streams.pcap")
    msgs = [m for m in stored(sqlite_url) if m.proto == 2]
    assert msgs
    big = msgs[0]
    # one message made large so that it spans several segments
    body = b"v=0\r\n" + b"a=x-filler:" + b"y" * 6000 + b"\r\n"
    head, _sep, _rest = big.msg.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^content-length:[^\r\n]*", b"Content-Length: %d" % len(body), head)
    msgs[0] = msg(**{c: getattr(big, c) for c in STORED_COLUMNS if c != "msg"},
                  msg=head + b"\r\n\r\n" + body)
    out = tmp_path / "tcp.pcap"
    export_messages(msgs, str(out))
    assert tshark_tcp_messages(out, msgs) == [m.msg for m in sorted(msgs, key=lambda m: m.micro_ts)]
    assert any(len(m.msg) > 1460 for m in msgs)
    assert expert_problems(out, msgs) == []


@needs_shared("corpus")
@needs_tshark
@pytest.mark.parametrize("name", ["sip-tcp-64k-invite-null-linktype.pcap",
                                  "sip-tcp-port6060-segmented-calls.pcap",
                                  "sip-gtpu-ipv6-ims-sll.pcap"])
def test_corpus_tcp_reassembled_by_tshark_equals_stored_bytes(name, tmp_path, sqlite_url):
    """Real TCP captures (a 64 KB INVITE, 46 segments in the export; a trunk of 406 messages, most
    of them over several segments; SIP over TCP over IPv6): tshark's reassembled
    messages are the stored bytes, in order."""
    replay(sqlite_url, CORPUS / name)
    msgs = [m for m in stored(sqlite_url) if m.proto == 2]
    assert msgs
    out = tmp_path / "tcp.pcapng"
    export_messages(msgs, str(out))
    assert tshark_tcp_messages(out, msgs) == [m.msg for m in sorted(msgs, key=lambda m: m.micro_ts)]


# (capture, what sngrep sees in the export): "all" its dialogs; "original" as many as
# in the original capture (sngrep 1.6 leaves some of the port 6060 trunk's dialogs out
# of both). sngrep does not read the GTP-U tunnel of the IMS capture (0 dialogs), but
# reads the export of what was stored from it.
SNGREP_CASES = [(EXAMPLE, "all"), (PCAPS / "tcp-streams.pcap", "all"),
                (PCAPS / "ipv6-udp.pcap", "all"), (CORPUS / "sip-tcp-call-with-rtp.pcap", "all"),
                (CORPUS / "sip-websocket-and-udp.pcap", "all"),
                (CORPUS / "sip-gtpu-ipv6-ims-sll.pcap", "all"),
                (CORPUS / "sip-tcp-port6060-segmented-calls.pcap", "original")]


@needs_sngrep
@needs_tshark
@needs_shared("corpus")
@pytest.mark.parametrize("capture,sees", SNGREP_CASES, ids=lambda c: getattr(c, "name", c))
def test_sngrep_sees_the_same_dialogs(capture, sees, tmp_path, sqlite_url):
    """sngrep, without its interface, reads the export and counts its dialogs: those of
    the stored messages (and writes all their SIP messages out again with -O), and at
    least as many as in the original capture."""
    replay(sqlite_url, capture)
    msgs = stored(sqlite_url)
    out = tmp_path / "export.pcap"
    export_messages(msgs, str(out))

    def dialogs(path: Path) -> tuple[int, int]:
        dump = tmp_path / f"sngrep-{path.name}"
        p = subprocess.run(["sngrep", "-N", "-I", str(path), "-O", str(dump)],
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        counts = re.findall(r"Dialog count: (\d+)", p.stdout)
        n = int(counts[-1]) if counts else 0
        sip = len(tshark(dump, "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID",
                         *decode_as(msgs)).split())
        return n, sip

    n_export, sip_export = dialogs(out)
    n_orig, _ = dialogs(capture)
    if sees == "all":
        assert n_export == len({m.callid for m in msgs})
        assert sip_export == len(msgs)
        assert n_export >= n_orig
    else:
        assert n_export == n_orig > 0


def test_any_db_round_trip(any_db_url, tmp_path):
    """`sipcaptool export` reads the calls back from SQLite, MariaDB and PostgreSQL; the
    exported file replays to the same messages."""
    replay(any_db_url, EXAMPLE, PCAPS / "tcp-streams.pcap", PCAPS / "ipv6-udp.pcap")
    before = stored(any_db_url)
    assert len(before) == 41
    out = tmp_path / "all.pcapng"
    p = cli("export", "--db", any_db_url, "--since", "2000-01-01", "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["messages"] == 41
    url2 = f"sqlite:///{tmp_path / 'again.db'}"
    replay(url2, out)
    assert sorted(map(key, stored(url2))) == sorted(map(key, before))


# ---------------------------------------------------------------- the command

def leg_capture(path: Path) -> None:
    """Two calls of a B2BUA: the B leg carries X-CID: <A leg's Call-ID>; and a third,
    unrelated call."""
    a = sip_call(1, "10.0.0.1", "10.0.0.2")
    b = [(s, sp, d, dp, m.replace(b"call-1@10.0.0.2", b"bleg-1@10.0.0.2").replace(
            b"Call-ID:", b"X-CID: call-1@10.0.0.1\r\nCall-ID:", 1))
         for s, sp, d, dp, m in sip_call(1, "10.0.0.2", "10.0.0.3")]
    c = sip_call(7, "10.0.0.5", "10.0.0.2")
    ts = 1_764_000_000_000_000
    with path.open("wb") as f:
        w = PcapWriter(f)
        for i, (s, sp, d, dp, m) in enumerate(a + b + c):
            w.write(ts + i * 1000, udp4_frame(s, sp, d, dp, m))


@pytest.fixture
def legs_db(tmp_path):
    cap = tmp_path / "legs.pcap"
    leg_capture(cap)
    url = f"sqlite:///{tmp_path / 'legs.db'}"
    replay(url, cap)
    return url


def test_command_exports_a_call_and_its_legs(legs_db, tmp_path):
    one = tmp_path / "one.pcapng"
    p = cli("export", "--db", legs_db, "call-1@10.0.0.1", "-o", str(one))
    assert p.returncode == 0, p.stderr
    assert "7 messages of 1 call" in p.stdout
    both = tmp_path / "both.pcap"
    p = cli("export", "--db", legs_db, "call-1@10.0.0.1", "--legs", "-o", str(both), "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["call_ids"] == ["call-1@10.0.0.1", "bleg-1@10.0.0.2"]
    assert report["messages"] == 14
    url2 = f"sqlite:///{tmp_path / 'again.db'}"
    replay(url2, both)
    want = [m for m in stored(legs_db) if m.callid in report["call_ids"]]
    assert sorted(map(key, stored(url2))) == sorted(map(key, want))


def test_command_with_filters_and_text_format(legs_db, tmp_path):
    out = tmp_path / "calls.out"
    p = cli("export", "--db", legs_db, "--from-user", "+15550000007", "--since",
            "2025-11-24", "--format", "txt", "-o", str(out))
    assert p.returncode == 0, p.stderr
    text = out.read_bytes()
    assert text.count(b" -> ") == 7 and b"call-7@10.0.0.5" in text
    assert b"call-1@" not in text
    assert text.startswith(b"2025/11/24 16:00:00.014000 10.0.0.5:5060 -> 10.0.0.2:5060 UDP")


@needs_tshark
def test_command_writes_to_standard_output(legs_db, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "export", "--db", legs_db,
                        "call-7@10.0.0.5", "-o", "-"], capture_output=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"standard output: 7 messages of 1 call" in p.stderr
    out = tmp_path / "piped.pcap"
    out.write_bytes(p.stdout)
    check_with_tshark(out, [m for m in stored(legs_db) if m.callid == "call-7@10.0.0.5"])


def test_command_with_filters_follows_legs(legs_db, tmp_path):
    def call_ids(*args: str) -> list[str]:
        out = tmp_path / f"f{len(args)}.pcap"
        p = cli("export", "--db", legs_db, "--src", "10.0.0.1", "--since", "2025-11-24",
                *args, "-o", str(out), "--json")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)["call_ids"]
    assert call_ids() == ["call-1@10.0.0.1"]
    assert call_ids("--legs") == ["call-1@10.0.0.1", "bleg-1@10.0.0.2"]


def test_command_bad_input(legs_db, tmp_path):
    out = tmp_path / "x.pcap"
    p = cli("export", "--db", legs_db, "no-such-call", "-o", str(out))
    assert p.returncode == 3 and "no call found" in p.stderr
    assert not out.exists()
    out.write_bytes(b"keep")
    p = cli("export", "--db", legs_db, "call-1@10.0.0.1", "-o", str(out))
    assert p.returncode == 2 and "--force" in p.stderr
    assert out.read_bytes() == b"keep"
    p = cli("export", "--db", legs_db, "call-1@10.0.0.1", "-o", str(out), "--force")
    assert p.returncode == 0 and out.read_bytes() != b"keep"
    p = cli("export", "--db", legs_db, "--since", "yesterday", "-o", str(tmp_path / "y.pcap"))
    assert p.returncode == 2 and "--since" in p.stderr
    p = cli("export", "--db", legs_db, "call-1@10.0.0.1", "-o", str(tmp_path / "y.bin"))
    assert p.returncode == 2 and "--format" in p.stderr
    p = cli("export", "--db", legs_db, "-o", str(tmp_path / "y.pcap"))
    assert p.returncode == 2
    p = cli("export", "--db", "mysql://root@127.0.0.1:1/none", "x", "-o",
            str(tmp_path / "z.pcap"))
    assert p.returncode == 4 and "cannot connect" in p.stderr
    assert sorted(f.name for f in tmp_path.iterdir() if ".db" not in f.name) == [
        "legs.pcap", "x.pcap"]
