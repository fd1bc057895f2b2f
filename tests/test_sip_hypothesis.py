"""Property tests: whatever the bytes, the SIP parser returns or raises DecodeError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcaptool.decode.sip import (
    LENIENT_IPV6,
    LENIENT_LF,
    LENIENT_VERSION_CASE,
    SipMessage,
    looks_like_sip,
    parse_sip,
    parse_sip_lenient,
)
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
    b"a", b"1", b"*", b"=", b"fe80:0:0:0:21a:a0ff:fe07:32e0", b":5060", b"::1", b"sip/2.0",
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
    for m2 in (lenient,) if lenient.error else (lenient, parse_sip(data)):
        assert len(set(m2.lenient)) == len(m2.lenient)
        assert set(m2.lenient) <= {LENIENT_IPV6, LENIENT_LF, LENIENT_VERSION_CASE}
    for name in SipMessage.__slots__:
        if not name.startswith("_") and name != "lenient":
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


# --- the fast paths give what the general code gives ------------------------------------

from sipcaptool.decode import sip as sipmod  # noqa: E402
from sipcaptool.decode import sip_fields  # noqa: E402

URI_ATOMS = st.sampled_from([
    "sip:", "SIPS:", "tel:", "a", "b", "1", "@", ":", ";", "?", "[", "]", "::", "=", " ",
    "\t", ",", "<", ">", '"', "\\", "5060", "user", "example.com", "2001:db8::1", "%",
])
_PIECE = st.lists(URI_ATOMS, max_size=4).map("".join)
# Mostly well-formed URIs (so that the fast path is taken), with random pieces inside.
SIP_URIS = st.tuples(
    st.sampled_from(["sip:", "SIP:", "sips:", " sip:"]),
    st.sampled_from(["", "alice", "+1555", "a:pw", "a b"]), st.sampled_from(["@", ""]),
    st.sampled_from(["example.com", "[2001:db8::1]", "h", "", "[::1", "h h"]),
    st.sampled_from(["", ":5060", ":", ":99999", ":x"]), _PIECE,
).map("".join)
URIISH = st.one_of(st.lists(URI_ATOMS, max_size=14).map("".join), SIP_URIS)
NAME_ADDRS = st.one_of(
    URIISH,
    st.tuples(st.sampled_from(["", '"A \\" b" ', "Bob ", '"x', '"<" ']),
              st.sampled_from(["<", "<", ""]), SIP_URIS, st.sampled_from([">", ">", ""]),
              _PIECE).map("".join),
)


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError:
        return ("error", None)


@settings(max_examples=500, deadline=None)
@given(URIISH)
def test_uri_fast_path_matches_general(uri):
    if sip_fields._SIP_URI_RE.match(uri) is not None:
        assert _outcome(sip_fields.parse_uri, uri) == _outcome(sip_fields._parse_uri_general, uri)


@settings(max_examples=500, deadline=None)
@given(NAME_ADDRS, st.booleans())
def test_name_addr_fast_path_matches_general(body, contact):
    if sip_fields._NAME_ADDR_RE.match(body) is not None:
        assert (_outcome(sip_fields.name_addr, body, contact)
                == _outcome(sip_fields._name_addr_general, body, contact))


VIA_ATOMS = st.sampled_from([
    "SIP/2.0/UDP", "SIP", "/", " ", "\t", "host", ":5060", ";", "branch", "BRANCH", "=",
    "z9hG4bK-1", ",", "rport", "\r\n", " branch",
])


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.lists(VIA_ATOMS, max_size=14).map("".join),
    st.tuples(st.just("SIP/2.0/UDP host"), st.lists(VIA_ATOMS, max_size=6).map("".join),
              st.sampled_from([";branch=z9", ";BRANCH=x", ""]),
              st.lists(VIA_ATOMS, max_size=4).map("".join)).map("".join),
))
def test_via_fast_path_matches_general(via):
    fast, general = sipmod.SipMessage(), sipmod.SipMessage()
    sipmod._via_branch(fast, via, False)
    sipmod._via_branch_general(general, via, False)
    assert (fast.via_1_branch, fast.error) == (general.via_1_branch, general.error)


HEADER_ATOMS = st.sampled_from([
    "Via", "via", "VIA", "v", "i", "Call-ID", "X-A", ":", ": ", " ", "\t", "\r\n", "\n",
    "\r", "value", "a:b", ",", "", "Subject",
])


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.lists(HEADER_ATOMS, max_size=20).map("".join),
    st.lists(st.tuples(st.sampled_from(["Via", "To", "x-y", "VIA", "v"]), st.just(":"),
                       HEADER_ATOMS, st.sampled_from(["\r\n", "\n"])).map("".join),
             max_size=6).map("".join),
))
def test_header_split_fast_path_matches_general(rest):
    rest = rest.rstrip("\r\n")
    fast = sipmod._split_headers_fast(rest) if rest else None
    if fast is not None:
        general = sipmod._split_headers(sipmod.SipMessage(), rest, True)
        assert fast == general


@settings(max_examples=500, deadline=None)
@given(NAME_ADDRS, st.booleans())
def test_address_fast_path_matches_general(body, contact):
    def general(body, contact):
        uri, rest = sip_fields._name_addr_general(body, contact)
        return sip_fields._parse_uri_general(uri) + (rest,)

    if sip_fields._SIP_NAME_ADDR_RE.match(body) is not None:
        assert _outcome(sip_fields.address, body, contact) == _outcome(general, body, contact)
