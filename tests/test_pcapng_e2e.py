"""pcapng files as real tools write them, and compressed input, through `sipcaptool replay`.

Files made at test time by Wireshark's own mergecap and editcap (an Ethernet capture
merged with a raw-IP one and a Linux cooked one, nanosecond and microsecond
interfaces in one file, times shifted, files concatenated into sections), and the
project's captures in tests/pcaps: every SIP message tshark finds is stored, in the same
order, with the same time, addresses, ports, Call-ID and CSeq. Compressed captures
(gzip, xz, bzip2, zstd) replayed from files and from standard input store the same
rows as the plain file.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sipcaptool.testing import pcapgen as g
from sipcaptool.testing.pcapng import PcapngBuilder, link_frame

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "tests" / "pcaps"
T0 = 1_764_000_000_000_000
REQUIRED = os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if REQUIRED:
            pytest.fail(f"{tool} (Wireshark's tools) is needed for this test")
        pytest.skip(f"{tool} not installed")
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipcaptool", *args], input=stdin,
                          capture_output=True, env=env, timeout=300)


def replay(db: Path, *files: str, stdin: bytes | None = None) -> tuple[dict, list[dict]]:
    p = run("replay", "--json", "--db", f"sqlite:///{db}", *files, stdin=stdin)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout), rows(db)


def rows(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute("SELECT * FROM sip_capture ORDER BY id")]
    con.close()
    return out


FIELDS = ("frame.time_epoch", "ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst",
          "udp.dstport", "sip.Call-ID", "sip.CSeq")


def tshark_messages(path: Path) -> list[tuple]:
    """(µs time or None, source, sport, destination, dport, Call-ID, CSeq) of every SIP
    message tshark decodes in ``path``, in file order."""
    need("tshark")
    args = ["tshark", "-n", "-r", str(path), "-Y", "sip", "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=f"]
    for f in FIELDS:
        args += ["-e", f]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        t, s4, s6, sport, d4, d6, dport, cid, cseq = line.split("\t")
        us = None
        if t:   # a Simple Packet Block has no time
            sec, _, frac = t.partition(".")
            us = int(sec) * 1_000_000 + int((frac + "000000")[:6])
        out.append((us, s4 or s6, int(sport), d4 or d6, int(dport), cid, cseq))
    return out


def stored(rs: list[dict]) -> list[tuple]:
    return [(r["micro_ts"], r["source_ip"], r["source_port"], r["destination_ip"],
             r["destination_port"], r["callid"], _cseq(r["msg"])) for r in rs]


def _cseq(msg: bytes) -> str:
    for line in bytes(msg).split(b"\r\n"):
        if line.lower().startswith(b"cseq:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def agree(ours: list[tuple], theirs: list[tuple]) -> None:
    assert len(ours) == len(theirs) and theirs
    for o, t in zip(ours, theirs, strict=True):
        if t[0] is None:
            o = (None,) + o[1:]
        assert o == t


# ---------------------------------------------------------------- files made by the tools

def _pcap(path: Path, linktype: int, messages: list, start: int, nano: bool = False) -> None:
    with open(path, "wb") as f:
        w = g.PcapWriter(f, linktype=linktype, nano=nano)
        for k, (src, sport, dst, dport, msg) in enumerate(messages):
            w.write(start + k * 3000 + k % 7, link_frame(linktype, g.ipv4(src, dst, 17,
                                                                          g.udp(sport, dport, msg))))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three plain pcaps of three link types: Ethernet (µs), raw IP (ns), Linux cooked."""
    d = tmp_path_factory.mktemp("inputs")
    _pcap(d / "eth.pcap", 1, g.sip_call(31) + g.sip_options(32), T0)
    _pcap(d / "tun.pcap", 101, g.sip_register(33) * 3, T0 + 1000, nano=True)
    _pcap(d / "any.pcap", 113, g.sip_call(34, a="10.9.0.1", b="10.9.0.2"), T0 + 2000)
    return d


def test_mergecap_of_three_link_types_agrees_with_tshark(inputs, tmp_path):
    merged = tmp_path / "merged.pcapng"
    subprocess.run([need("mergecap"), "-F", "pcapng", "-w", str(merged),
                    str(inputs / "eth.pcap"), str(inputs / "tun.pcap"), str(inputs / "any.pcap")],
                   check=True)
    summary, rs = replay(tmp_path / "m.db", str(merged))
    assert summary["stored_total"] == 9 + 6 + 7
    assert summary["files"][0]["packets"] == 22 and "error" not in summary["files"][0]
    agree(stored(rs), tshark_messages(merged))
    # libpcap refuses this file: the pure reader read it (nothing lost, nothing doubled)
    import pcapy

    with pytest.raises(pcapy.PcapError, match="different from the type of the first"):
        r = pcapy.open_offline(str(merged))
        while r.next()[0] is not None:
            pass


def test_mergecap_concatenated_and_editcap_shifted(inputs, tmp_path):
    cat = tmp_path / "cat.pcapng"
    subprocess.run([need("mergecap"), "-a", "-F", "pcapng", "-w", str(cat),
                    str(inputs / "tun.pcap"), str(inputs / "eth.pcap")], check=True)
    shifted = tmp_path / "shifted.pcapng"
    subprocess.run([need("editcap"), "-t", "3600.5", str(cat), str(shifted)], check=True)
    _s, a = replay(tmp_path / "a.db", str(cat))
    _s, b = replay(tmp_path / "b.db", str(shifted))
    agree(stored(a), tshark_messages(cat))
    agree(stored(b), tshark_messages(shifted))
    assert [r["micro_ts"] + 3_600_500_000 for r in a] == [r["micro_ts"] for r in b]


def test_sections_of_several_writers_one_after_the_other(inputs, tmp_path):
    """editcap's pcapng of a nanosecond pcap, mergecap's of two link types and the
    project's own big-endian section with a BSD loopback interface, concatenated."""
    ns = tmp_path / "ns.pcapng"
    subprocess.run([need("editcap"), "-F", "pcapng", str(inputs / "tun.pcap"), str(ns)],
                   check=True)
    two = tmp_path / "two.pcapng"
    subprocess.run([need("mergecap"), "-F", "pcapng", "-w", str(two), str(inputs / "eth.pcap"),
                    str(inputs / "any.pcap")], check=True)
    b = PcapngBuilder(big_endian=True).section()
    b.interface(0, name="lo0", tsresol=0x80 | 24)
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(35)):
        b.packet(0, T0 + 90_000 + k, link_frame(0, g.ipv4(src, dst, 17, g.udp(sport, dport, msg))))
    sections = tmp_path / "sections.pcapng"
    sections.write_bytes(ns.read_bytes() + two.read_bytes() + b.data())
    summary, rs = replay(tmp_path / "s.db", str(sections))
    assert summary["stored_total"] == 6 + 9 + 7 + 7
    agree(stored(rs), tshark_messages(sections))


@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcapng")))
def test_the_project_pcapng_captures_agree_with_tshark(name, tmp_path):
    _s, rs = replay(tmp_path / "p.db", str(PCAPS / name))
    agree(stored(rs), tshark_messages(PCAPS / name))


def test_an_interface_of_an_unknown_link_type_is_named_and_the_rest_stored(inputs, tmp_path):
    b = PcapngBuilder().section()
    b.interface(220, name="usbmon1")
    b.interface(1, name="eth0")
    b.packet(0, T0, b"\x00" * 64)
    for k, (src, sport, dst, dport, msg) in enumerate(g.sip_call(36)):
        b.packet(1, T0 + k + 1, link_frame(1, g.ipv4(src, dst, 17, g.udp(sport, dport, msg))))
    f = tmp_path / "usb.pcapng"
    f.write_bytes(b.data())
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/u.db", str(f))
    assert p.returncode == 3
    s = json.loads(p.stdout)
    assert s["stored_total"] == 7 and s["packets"] == 8
    assert s["skipped"] == {"unsupported-linktype": 1}
    err = p.stderr.decode()
    assert "interface 0 (usbmon1): link type 220, 1 packets" in err and "Traceback" not in err


def test_a_cut_pcapng_file_says_where(tmp_path):
    data = (PCAPS / "pcapng-interfaces.pcapng").read_bytes()
    f = tmp_path / "cut.pcapng"
    f.write_bytes(data[:len(data) - 300])
    p = run("replay", "--json", "--db", f"sqlite:///{tmp_path}/c.db", str(f))
    assert p.returncode == 3
    err = p.stderr.decode()
    assert "file is cut off after packet" in err and "is cut short" in err and "at byte" in err
    s = json.loads(p.stdout)
    assert s["files"][0]["truncated"] is True and s["stored_total"] > 0


# ---------------------------------------------------------------- compressed input

def _zstd(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return bytes(zstandard.ZstdCompressor().compress(data))


COMPRESS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress, "zstd": _zstd}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple]]:
    d = tmp_path_factory.mktemp("plain")
    cap = d / "c.pcap"
    with open(cap, "wb") as f:
        w = g.PcapWriter(f)
        for ts, (src, sport, dst, dport, msg) in g.realistic_messages(2000):
            w.write(ts, g.udp4_frame(src, sport, dst, dport, msg))
    _s, rs = replay(d / "plain.db", str(cap))
    assert len(rs) == 2000
    return cap, stored(rs)


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_compressed_file_and_standard_input_store_what_the_plain_file_does(plain, tmp_path, kind):
    cap, want = plain
    packed = COMPRESS[kind](cap.read_bytes())
    f = tmp_path / "capture"           # no suffix: the magic bytes tell
    f.write_bytes(packed)
    _s, from_file = replay(tmp_path / "f.db", str(f))
    assert stored(from_file) == want
    # cat x.pcap.xz | sipcaptool replay -
    _s, from_stdin = replay(tmp_path / "s.db", "-", stdin=packed)
    assert stored(from_stdin) == want


def test_gzip_pcapng_of_mixed_link_types_on_standard_input(tmp_path):
    data = (PCAPS / "pcapng-mixed-link-types.pcapng").read_bytes()
    _s, a = replay(tmp_path / "a.db", str(PCAPS / "pcapng-mixed-link-types.pcapng"))
    _s, b = replay(tmp_path / "b.db", "-", stdin=gzip.compress(data))
    assert stored(a) == stored(b) and len(a) == 11


def test_real_xz_and_zstd_tools(plain, tmp_path):
    cap, want = plain
    for tool, args, suffix in (("xz", ["-k", "-c"], ".xz"), ("zstd", ["-q", "-c"], ".zst"),
                               ("bzip2", ["-k", "-c"], ".bz2")):
        if tool == "zstd":
            pytest.importorskip("zstandard")
        out = tmp_path / ("c.pcap" + suffix)
        with open(out, "wb") as f:
            subprocess.run([need(tool), *args, str(cap)], stdout=f, check=True)
        _s, rs = replay(tmp_path / f"{tool}.db", str(out))
        assert stored(rs) == want, tool


def test_an_unsupported_compression_on_standard_input_is_named(plain, tmp_path):
    cap, _want = plain
    lz4 = subprocess.run([need("lz4"), "-c", str(cap)], capture_output=True, check=True).stdout
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", "-", stdin=lz4)
    assert p.returncode == 3
    lines = p.stderr.decode().strip().splitlines()
    assert any("-: lz4-compressed, which sipcaptool does not read" in ln for ln in lines)
    assert "Traceback" not in p.stderr.decode()


def test_standard_input_that_is_not_a_capture(tmp_path):
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", "-", stdin=b"hello\n" * 10)
    assert p.returncode == 3 and b"not a pcap or pcapng capture file" in p.stderr
    p = run("replay", "--db", f"sqlite:///{tmp_path}/x.db", "-",
            stdin=gzip.compress(b"hello\n" * 10))
    assert p.returncode == 3 and b"what gzip inflates it to" in p.stderr
