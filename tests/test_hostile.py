"""Hostile input: HEP packets claiming more than they carry, huge Content-Length, and SIP
fields full of quotes, NULs, invalid UTF-8, SQL fragments and 10 KB values stored end
to end through ``sipcaptool hep`` into each database."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from sipcaptool.decode.hep import HepStream, decode_datagram, encode_hep3
from sipcaptool.decode.sip import looks_like_sip
from sipcaptool.decode.tcp import MAX_BODY_BYTES, TcpReassembler
from sipcaptool.errors import DecodeError
from sipcaptool.stats import Stats

from test_hep_collector import collectors, message, rows_by_callid  # noqa: F401

NOW = 1_767_225_601_000_001


def _claims(total: int, body: bytes = b"") -> bytes:
    return b"HEP3" + struct.pack("!H", total) + body


@pytest.mark.parametrize("carried", [0, 1, 100, 65000])
def test_hep_datagram_claiming_65535_bytes_is_refused(carried):
    with pytest.raises(DecodeError):
        decode_datagram(_claims(65535, b"\x00" * carried), now_us=NOW)


def test_hep_stream_claiming_65535_bytes_holds_at_most_that():
    s = HepStream()
    assert s.feed(_claims(65535, b"\x00\x00\x00\x01\x00\x07" + b"z" * 100)) == []
    for _ in range(65):              # a peer trickling bytes never makes it hold more
        assert s.feed(b"\x00" * 1000) == []
        assert s.buffered <= 65535
    # a claim below the header size is a bad stream, not a hang
    with pytest.raises(DecodeError):
        HepStream().feed(_claims(3))


def test_many_connections_claiming_65535_bytes_stay_bounded():
    streams = [HepStream() for _ in range(2000)]
    for s in streams:
        s.feed(_claims(65535, b"\x00" * 10))
    assert sum(s.buffered for s in streams) <= 2000 * 65535
    assert max(s.buffered for s in streams) == 16


@pytest.mark.parametrize("clen", [str(MAX_BODY_BYTES + 1), "99999999999999999999999"])
def test_huge_content_length_is_counted_and_never_buffered(clen):
    st = Stats()
    r = TcpReassembler(st, looks_like_sip, max_streams=100, max_stream_bytes=256 * 1024,
                       max_total_bytes=1_000_000)
    head = f"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: {clen}\r\n\r\n".encode()
    r.segment(0, "k", 0, 0, head)
    seq = len(head)
    for i in range(500):             # 500 KB of "body" follows
        r.segment(i, "k", seq, 0, b"y" * 1000)
        seq += 1000
        assert r.held_bytes <= 256 * 1024
    assert st["malformed:tcp-body-too-long"] >= 1


HOSTILE = {
    "quotes": ("\"Al'ice\" `x`", "q'uote\"s"),
    "sql": ("Robert'); DROP TABLE sip_capture;--", "1'OR'1'='1"),
    "percent": ("%s %d %% $1 ? :name", "{}\\N\\0"),
    "long": ("A" * 10240, "u" * 10240),
}


def _hostile_sip(callid: str, name: str, user: str, raw_extra: bytes = b"") -> bytes:
    return (f"INVITE sip:{user}@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{len(callid)}\r\n"
            f"From: \"{name}\" <sip:{user}@example.com>;tag=t1\r\n"
            f"To: <sip:bob@example.com>\r\n"
            f"Call-ID: {callid}\r\nCSeq: 1 INVITE\r\n"
            f"User-Agent: {name}\r\n").encode() + raw_extra + b"Content-Length: 0\r\n\r\n"


def test_hostile_sip_values_stored_safely_end_to_end(any_db_url, collectors):
    """Each row arrives (parameterised / escaped writes), the database is intact, values
    wider than their column are cut and counted, the batch never fails."""
    c = collectors(any_db_url, tcp=False)
    sent = {}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for key, (name, user) in HOSTILE.items():
        cid = f"hostile-{key}"
        sent[cid] = _hostile_sip(cid, name, user)
    # NUL and invalid UTF-8 inside headers
    sent["hostile-bytes"] = _hostile_sip("hostile-bytes", "nul", "bytes",
                                         b"X-Bin: a\x00b\xff\xfe\xc3\x28\r\n"
                                         b"Subject: \xed\xa0\x80 surrogate\r\n")
    for cid, payload in sent.items():
        m = message(cid, payload=payload)
        s.sendto(encode_hep3(m), ("127.0.0.1", c.ports["udp"]))
    s.close()
    time.sleep(0.5)
    rc, summary, err = c.stop()
    assert rc == 0, err
    rows = rows_by_callid(any_db_url)
    assert set(sent) <= set(rows), (set(sent) - set(rows), summary)
    for cid, payload in sent.items():
        assert bytes(rows[cid]["msg"]) == payload      # the raw message, byte for byte
    assert rows["hostile-sql"]["from_user"] == "1'OR'1'='1"
    assert summary["truncated_values"], summary       # the 10 KB values were cut, counted
    assert summary["db"].get("errors", 0) == 0
    assert summary["stored_total"] == len(sent)
