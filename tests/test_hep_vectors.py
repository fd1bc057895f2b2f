"""The HEP decoder against the reference vectors and the real traffic Kamailio stored.

``shared/reference/vectors/*.hepraw`` are single datagrams; ``results.<db>/NAME.rows.jsonl``
are the rows Kamailio 5.6.3's sipcapture stored for each (``NAME.log`` says why when it
stored none). ``shared/reference/conformance/*.pcap`` hold real HEP traffic, with the
decoded HEP (``*.hep.jsonl``) and the stored rows (``*.rows.<db>.jsonl``).

Where we differ from Kamailio on purpose, ``DIFFERENCES`` says so and why.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from shared_data import SHARED, needs_shared  # noqa: E402

from sipcaptool.decode.hep import decode_datagram, looks_like_hep
from sipcaptool.decode.hep_stream import HepStream
from sipcaptool.errors import DecodeError

REFERENCE = SHARED / "reference"
VECTORS = REFERENCE / "vectors"
CONFORMANCE = REFERENCE / "conformance"

pytestmark = needs_shared("reference")

NOW = 1_800_000_000_000_000
CAPTURE_NODE = "homer01"

# Datagrams the decoder refuses, with the reason. Kamailio drops each of them too
# (its log line in the comment), so no row is lost relative to it.
REFUSED = {
    "09_v3_no_src_ip": "hep-no-address",  # "NO IP's set"
    "13_v3_chunk_type0": "hep3-chunk-type0",  # dropped silently
    "15_v3_hdrlen_short": "hep3-bad-chunk",  # "Not all elements [7]"
    "71_v2_bad_family": "hep-bad-family",  # "unsupported family [7]"
    "75_plain_sip": "hep-bad-version",  # "not supported version or bad length"
    # Kamailio computes len - 28 unsigned and hands the core an empty/huge message
    # ("core parsing of SIP message failed"): nothing stored either way.
    "79_crash_v2_truncated": "hep-truncated",
}

# Where the HEP layer deliberately gives something Kamailio 5.6.3 did not store.
DIFFERENCES = {
    # Kamailio dereferences the missing proto_type chunk and dies (SIGSEGV, collector
    # gone). We decode the packet as SIP (proto_type None -> hep_type 1): the payload
    # is a normal INVITE and the SIP parser downstream still validates it.
    "77_crash_v3_no_prototype": "decoded as SIP instead of crashing",
}

# Vectors whose HEP decodes fine but for which Kamailio stored no row, for reasons of
# later layers (SIP parsing, MySQL column limits) -- not a HEP matter -- with the
# databases where that happened. Where the other database kept the row, its HEP
# columns are checked as usual.
NO_ROW_NOT_HEP = {
    "31_v3_non_sip_payload": {"mysql", "postgres"},  # core SIP parse error
    "35_v3_msg_8000": {"mysql"},  # MySQL 'Data too long' (we keep it: store layer)
    "37_v3_latin1_from": {"mysql"},  # utf8mb3 refuses invalid UTF-8 (store layer)
    "39_v3_emoji_body": {"mysql"},  # utf8mb3 refuses 4-byte UTF-8 (store layer)
    "41_v3_reply_no_to": {"mysql", "postgres"},  # core: required headers not found
    "63_v3_bad_from": {"mysql", "postgres"},  # sipcapture: bad From header
}


def manifest() -> list[tuple[str, str]]:
    if not VECTORS.is_dir():
        return []
    rows = []
    for line in (VECTORS / "MANIFEST.tsv").read_text().splitlines()[1:]:
        if line.strip():
            name, probes = line.split("\t", 1)
            rows.append((name.removesuffix(".hepraw"), probes))
    return rows


VECTOR_NAMES = [n for n, _ in manifest()]


def kamailio_rows(name: str) -> list[tuple[str, dict]]:
    out = []
    for db in ("mysql", "postgres"):
        path = VECTORS / f"results.{db}" / f"{name}.rows.jsonl"
        if path.is_file():
            out += [(db, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return out


def node_text(node_id: int | None) -> str:
    return CAPTURE_NODE if node_id is None else f"{CAPTURE_NODE}:{node_id}"


def test_manifest_lists_every_vector():
    files = sorted(p.stem for p in VECTORS.glob("*.hepraw"))
    assert files == sorted(VECTOR_NAMES) and len(files) >= 40


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector(name):
    data = (VECTORS / f"{name}.hepraw").read_bytes()
    if name in REFUSED:
        with pytest.raises(DecodeError) as ei:
            decode_datagram(data, now_us=NOW)
        assert ei.value.reason == REFUSED[name]
        assert kamailio_rows(name) == []  # Kamailio stored nothing either
        return

    pkts = decode_datagram(data, now_us=NOW)
    assert len(pkts) == 1
    assert looks_like_hep(data)
    pkt = pkts[0]
    m = pkt.to_message()
    # Every vector describes 192.0.2.1:5060 -> 198.51.100.2:5080.
    assert (m.src_ip, m.src_port, m.dst_ip, m.dst_port, m.family) == (
        "192.0.2.1", 5060, "198.51.100.2", 5080, 2)

    rows = kamailio_rows(name)
    dbs = {db for db, _ in rows}
    if name in DIFFERENCES:
        assert rows == []
    else:
        assert dbs == {"mysql", "postgres"} - NO_ROW_NOT_HEP.get(name, set())
    for db, row in rows:
        where = f"{name} ({db})"
        assert row["source_ip"] == m.src_ip, where
        assert row["source_port"] == m.src_port, where
        assert row["destination_ip"] == m.dst_ip, where
        assert row["destination_port"] == m.dst_port, where
        assert row["proto"] == m.proto, where
        assert row["node"] == node_text(m.node_id), where
        if pkt.ts_sec:
            assert row["micro_ts"] == m.ts_us, where
        else:
            assert m.ts_us == NOW and m.node_id is None, where
        if row["_table"] == "sip_capture":
            assert row["family"] == m.family, where
            assert m.hep_type == 1
        else:  # rtcp/report/logs tables store the raw family chunk
            assert row["family"] == m.hep_family, where
        if m.correlation_id is not None and "correlation_id" in row:
            assert row["correlation_id"] == m.correlation_id, where
        stored = row.get("msg")
        if isinstance(stored, dict):
            assert base64.b64decode(stored["b64"]) == m.payload, where
        elif "\x00" not in stored:  # X-OIP: Kamailio writes a NUL into the message
            full = m.payload.decode()
            if db == "mysql" and len(full) > 1500:
                # msg varchar(1500): MySQL cut it (33_v3_msg_1501); we keep it whole.
                assert len(stored) == 1500 and full.startswith(stored), where
            else:
                assert stored == full, where


def test_vector_details():
    def msg(name):
        return decode_datagram((VECTORS / f"{name}.hepraw").read_bytes(), now_us=NOW)[0]

    assert msg("03_v3_tcp").to_message().proto == 2
    no_time = msg("05_v3_no_time").to_message()
    assert (no_time.ts_us, no_time.node_id) == (NOW, None)
    assert msg("07_v3_usec_overflow").ts_usec == 2_500_000
    assert msg("11_v3_vendor_chunk").vendor_chunks == 1
    assert msg("17_v3_corr_last").correlation_id == "corr-last-17"
    assert msg("19_v3_corr_empty").correlation_id == ""
    assert msg("23_v3_capid_max").capture_id == 0xFFFFFFFF
    assert [msg(n).proto_type for n in ("25_v3_rtcp_json", "27_v3_log", "29_v3_report99")] == [5, 100, 99]
    assert len(msg("33_v3_msg_1501").payload) == 1501
    assert msg("67_v2_tcp").to_message().proto == 2
    assert msg("69_v2_sctp").to_message().proto == 4
    v1 = msg("73_v1_baseline").to_message()
    assert (v1.ts_us, v1.node_id) == (NOW, None)
    crash = msg("77_crash_v3_no_prototype")
    assert crash.proto_type is None and crash.to_message().hep_type == 1


def test_dup_payload_last_wins_like_kamailio():
    data = (VECTORS / "21_v3_dup_payload.hepraw").read_bytes()
    pkt = decode_datagram(data, now_us=NOW)[0]
    (_, row), *_ = kamailio_rows("21_v3_dup_payload")
    assert row["msg"] == pkt.payload.decode()


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_prefixes_never_crash(name):
    """Every cut of every vector decodes or raises DecodeError, nothing else."""
    data = (VECTORS / f"{name}.hepraw").read_bytes()
    for cut in range(len(data) + 1):
        try:
            decode_datagram(data[:cut], now_us=NOW)
        except DecodeError:
            pass


def test_vectors_through_the_stream_framer():
    """The HEPv3 vectors sent back to back over TCP, byte by byte, frame identically."""
    v3 = [
        (VECTORS / f"{n}.hepraw").read_bytes()
        for n in VECTOR_NAMES
        if (VECTORS / f"{n}.hepraw").read_bytes()[:4] == b"HEP3" and n != "15_v3_hdrlen_short"
    ]
    s = HepStream()
    framed = []
    for b in b"".join(v3):
        framed += s.feed(bytes([b]))
    assert framed == v3


# --------------------------------------------------------------------------- conformance

def pcap_udp_payloads(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp µs, UDP payload) of each Ethernet/IPv4/UDP frame of a classic pcap."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == 1, "test reads Ethernet captures only"
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        if ethertype != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        udp_len = struct.unpack_from("!H", ip, ihl + 4)[0]
        out.append((sec * 1_000_000 + (frac // 1000 if nano else frac), ip[ihl + 8:ihl + udp_len]))
    return out


CONFORMANCE_CAPTURES = (
    sorted(p.name.removesuffix(".pcap") for p in CONFORMANCE.glob("*.pcap"))
    if CONFORMANCE.is_dir() else []
)


@pytest.mark.parametrize("name", CONFORMANCE_CAPTURES)
def test_conformance_capture(name):
    payloads = pcap_udp_payloads(CONFORMANCE / f"{name}.pcap")
    lines = (CONFORMANCE / f"{name}.hep.jsonl").read_text().splitlines()
    expected = [json.loads(line) for line in lines if line.strip()]
    assert len(payloads) == len(expected)
    messages = []
    for (_, data), exp in zip(payloads, expected, strict=False):
        assert looks_like_hep(data)
        (pkt,) = decode_datagram(data, now_us=NOW)
        assert pkt.version == exp["version"]
        if exp["version"] == 3:
            values = {c["name"]: c["value"] for c in exp["chunks"]}
            assert pkt.family == values["ip_family"]
            assert pkt.ip_proto == values["ip_proto"]
            assert pkt.src_ip == values.get("src_ip4", values.get("src_ip6"))
            assert pkt.dst_ip == values.get("dst_ip4", values.get("dst_ip6"))
            assert (pkt.src_port, pkt.dst_port) == (values["src_port"], values["dst_port"])
            assert (pkt.ts_sec, pkt.ts_usec) == (values["time_sec"], values["time_usec"])
            assert pkt.proto_type == values["proto_type"]
            assert pkt.capture_id == values["capture_id"]
            assert pkt.payload.decode() == values["payload"]
        else:
            assert (pkt.family, pkt.ip_proto) == (exp["family"], exp["ip_proto"])
            assert (pkt.src_ip, pkt.dst_ip) == (exp["src_ip"], exp["dst_ip"])
            assert (pkt.src_port, pkt.dst_port) == (exp["src_port"], exp["dst_port"])
            assert (pkt.ts_sec, pkt.ts_usec) == (exp["time_sec_le"], exp["time_usec_le"])
            assert pkt.capture_id == exp["captid_le16"]
            assert pkt.payload.decode() == exp["payload"]
        messages.append(pkt.to_message())

    for db in ("mysql", "postgres"):
        path = CONFORMANCE / f"{name}.rows.{db}.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert len(rows) == len(messages)
        got = sorted(
            (m.ts_us, m.src_ip, m.src_port, m.dst_ip, m.dst_port, m.proto, m.family, node_text(m.node_id))
            for m in messages
        )
        want = sorted(
            (r["micro_ts"], r["source_ip"], r["source_port"], r["destination_ip"],
             r["destination_port"], r["proto"], r["family"], r["node"])
            for r in rows
        )
        assert got == want, db
