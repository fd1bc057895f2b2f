"""Property tests: whatever the bytes, the SIP parser returns or raises DecodeError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcaptool.decode.sip import SipMessage, looks_like_sip, parse_sip, parse_sip_lenient
from sipcaptool.errors import DecodeError
from sipcaptool.record import CapturedMessage
from sipcaptool.row import RowOptions, hash_key, sip_row

VALID = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=ft-1\r\n'
    b"To: <sip:bob@[2001:db8::1]:5060>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5060>, *\r\n"
    b"X-OIP: [2001:db8::9]:5066\r\n"
    b'Proxy-Authorization: Digest username="a@b", realm="r"\r\n'
    b"P-Asserted-Identity: <tel:+1555>\r\n"
    b"Reason: Q.850\r\n ;cause=16\r\n"
    b"Content-Length: 0\r\n\r\n"
)

# Pieces SIP is made of, so that random messages get deep into the parser.
ATOMS = st.sampled_from([
    b"INVITE ", b"SIP/2.0", b" ", b"\r\n", b"\n", b"\t", b":", b";", b",", b"<", b">", b"\"",
    b"\\", b"@", b"[", b"]", b"sip:", b"tel:", b"tag=", b"branch=", b"Via: ", b"From: ",
    b"To: ", b"Call-ID: ", b"CSeq: 1 INVITE", b"Contact: ", b"m: ", b"v: ", b"X-OIP: ",
    b"Authorization: Digest username=", b"P-Asserted-Identity: ", b"200 ", b"\x00", b"\xff",
    b"a", b"1", b"*", b"=",
])
SIPISH = st.lists(ATOMS, max_size=60).map(b"".join)


def _check(data: bytes) -> None:
    assert isinstance(looks_like_sip(data), bool)
    try:
        m = parse_sip(data)
    except DecodeError as exc:
        assert exc.reason.startswith("sip-")
    else:
        assert isinstance(m, SipMessage) and m.error == ""
        msg = CapturedMessage(0, "192.0.2.1", 1, "192.0.2.2", 2, 1, 2, data)
        assert len(sip_row(msg, m, RowOptions())) == 44
        for source in ("call_id", "from_user", "to_user"):
            assert isinstance(hash_key(m, source), str)
    lenient = parse_sip_lenient(data)
    assert isinstance(lenient, SipMessage)
    for name in SipMessage.__slots__:
        if not name.startswith("_"):
            value = getattr(lenient, name)
            assert isinstance(value, (str, int))
            if isinstance(value, str):
                assert "\x00" not in value


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(data):
    _check(data)


@settings(max_examples=600, deadline=None)
@given(SIPISH)
def test_sip_like_bytes(data):
    _check(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID)), st.binary(max_size=40), st.integers(0, len(VALID)))
def test_mutated_valid_message(pos, insert, cut):
    _check(VALID[:pos] + insert + VALID[pos:])
    _check(VALID[:cut])
