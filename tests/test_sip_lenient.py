"""SIP as real devices send it: the leniencies of decode/sip.py, and what stays refused.

Each message goes through ``tr`` of test_sip.py (whole input, every prefix, trailing
garbage). A leniency fills the columns as meant and names itself in
``SipMessage.lenient``; the pipeline counts it as ``lenient:<what>`` (checked here on a
real SQLite database, with the HEP payload types the pipeline routes).
"""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_data import REFERENCE, needs_shared
from test_sip import fields, sip, tr

from sipcaptool.config import Settings
from sipcaptool.decode.sip import (
    LENIENT_IPV6,
    LENIENT_LF,
    LENIENT_VERSION_CASE,
    TYPE_REPLY,
    TYPE_REQUEST,
    parse_sip,
    parse_sip_lenient,
)
from sipcaptool.decode.sip_fields import (
    _is_ipv6,
    ipv6_host_port,
    lenient_address,
    lenient_uri,
    parse_uri,
)
from sipcaptool.errors import DecodeError
from sipcaptool.pipeline import Pipeline
from sipcaptool.record import CapturedMessage
from sipcaptool.stats import Stats

A = "fe80:0:0:0:21a:a0ff:fe07:32e0"     # eight groups, as the phones write them
B = "fec0:0:0:0:216:d3ff:fe0d:22c"

# the INVITE of ../shared/corpus/sip-ipv6-udp.pcap, in short
V6_INVITE = (
    f"INVITE sip:4321@{B}:5060 SIP/2.0",
    f"Call-ID: c3eF6f58@{A}",
    f"Contact: <sip:9876@{A}:5060>",
    "CSeq: 1 INVITE",
    f"From: <sip:9876@{A}>;tag=a3bhg",
    f"To: <sip:4321@{B}>",
    f"Via: SIP/2.0/UDP {A}:5060;branch=z9hG4bKkdjuw8376",
)
V6_REPLY = (
    "SIP/2.0 200 OK",
    f"Via: SIP/2.0/UDP {A}:5060;branch=z9hG4bKkdjuw8376",
    f"From: <sip:9876@{A}>;tag=a3bhg",
    f"To: <sip:4321@{B}>;tag=zz",
    f"Call-ID: c3eF6f58@{A}",
    "CSeq: 1 INVITE",
    f"Contact: sip:4321@{B}:5060;expires=60",
)
PLAIN = (
    "INVITE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
    'From: "Alice" <sip:alice@example.com>;tag=ft-1',
    "To: <sip:bob@example.com>",
    "Call-ID: c1@example",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.1:5060>",
)


# ------------------------------------------------------------ IPv6 hosts without brackets

def test_ipv6_without_brackets_request():
    m = tr(sip(*V6_INVITE), type=TYPE_REQUEST, method="INVITE",
           ruri=f"sip:4321@{B}:5060", ruri_user="4321", ruri_domain=B,
           from_user="9876", from_domain=A, from_tag="a3bhg",
           to_user="4321", to_domain=B, to_tag="",
           contact_user="9876", contact_ip=A, contact_port=5060,
           via_1_branch="z9hG4bKkdjuw8376", error="")
    assert m.lenient == (LENIENT_IPV6,)  # once, though four URIs needed it


def test_ipv6_without_brackets_reply_and_addr_spec_contact():
    m = tr(sip(*V6_REPLY), type=TYPE_REPLY, method="200", from_user="9876", from_domain=A,
           from_tag="a3bhg", to_user="4321", to_domain=B, to_tag="zz",
           contact_user="4321", contact_ip=B, contact_port=5060)
    assert m.lenient == (LENIENT_IPV6,)


def test_the_same_message_with_brackets_needs_no_leniency():
    """The bracketed form keeps Kamailio's columns (the host with its brackets)."""
    text = [line.replace(f"@{A}:5060", f"@[{A}]:5060").replace(f"@{B}:5060", f"@[{B}]:5060")
            .replace(f"@{A}>", f"@[{A}]>").replace(f"@{B}>", f"@[{B}]>") for line in V6_INVITE]
    m = tr(sip(*text), ruri_domain=f"[{B}]", from_domain=f"[{A}]", to_domain=f"[{B}]",
           contact_ip=f"[{A}]", contact_port=5060)
    assert m.lenient == ()


@pytest.mark.parametrize("uri, want", [
    (f"sip:4321@{B}:5060", ("4321", B, "5060")),
    (f"sip:9876@{A}", ("9876", A, "")),
    (f"sips:u:secret@{A}:5061;transport=tls?h=v", ("u", A, "5061")),
    ("sip:alice@fe80::1:5060", ("alice", "fe80::1:5060", "")),  # an address as a whole
    ("sip:2001:db8::1", ("", "2001:db8::1", "")),
    ("SIP:a@::ffff:192.0.2.1", ("a", "::ffff:192.0.2.1", "")),
])
def test_lenient_uri_recovers(uri, want):
    with pytest.raises(ValueError):
        parse_uri(uri)
    assert lenient_uri(uri) == want


@pytest.mark.parametrize("uri", [
    "sip:a@host:5060:x",                    # not an address
    f"sip:a@{A}:65536",                     # port out of range
    f"sip:a@{A}:50600a",
    f"sip:a@{A}:5060:1",                    # ten groups
    "sip:a@fe80::1:99999",                  # '::' and a 5-digit last group: no guess
    "sip:a@gggg:0:0:0:0:0:0:1",
    f"sip:a@[{A}:5060",                     # a bracket: not this leniency
    f"tel:{A}", f"http://{A}", "sip:", "",
])
def test_lenient_uri_refuses(uri):
    assert lenient_uri(uri) is None


@pytest.mark.parametrize("line, reason", [
    (f"INVITE sip:4321@{B}:99999 SIP/2.0", "sip-bad-ruri"),
    ("INVITE sip:4321@host:5060:7 SIP/2.0", "sip-bad-ruri"),
])
def test_unrecoverable_uris_stay_refused(line, reason):
    payload = sip(line, *V6_INVITE[1:])
    with pytest.raises(DecodeError) as e:
        parse_sip(payload)
    assert e.value.reason == reason
    assert parse_sip_lenient(payload).error == reason


def test_broken_structure_is_not_a_leniency():
    """An unclosed quoted display name and a header line cut in the middle stay refused
    (stored only with capture_bad_msgs), whatever the URI inside."""
    unclosed = sip(*V6_INVITE[:4], f'From: "Alice <sip:9876@{A}>;tag=a3bhg', *V6_INVITE[5:])
    with pytest.raises(DecodeError) as e:
        parse_sip(unclosed)
    assert e.value.reason == "sip-bad-from"
    assert lenient_address(f'"Alice <sip:9876@{A}>') is None
    escaped = sip(*PLAIN[:2], 'f: \\"arik\\" <sip:arik@example.com>;tag=1', *PLAIN[3:])
    with pytest.raises(DecodeError) as e:
        parse_sip(escaped)
    assert e.value.reason == "sip-bad-from"
    cut = ("\r\n".join(V6_INVITE) + "\r\nContent-Lengt").encode()
    with pytest.raises(DecodeError) as e:
        parse_sip(cut)
    assert e.value.reason == "sip-bad-header"
    assert lenient_address(f"<sip:9876@{A}") is None       # '<' without '>'


# ------------------------------------------------------------ line ends, version, colons

def test_lf_only_line_ends_are_counted_and_change_nothing():
    crlf = tr(sip(*PLAIN))
    lf = tr(sip(*PLAIN, eol="\n"))
    assert crlf.lenient == () and lf.lenient == (LENIENT_LF,)
    assert {k: v for k, v in fields(lf).items() if k != "lenient"} == \
        {k: v for k, v in fields(crlf).items() if k != "lenient"}


@pytest.mark.parametrize("text", [
    PLAIN[0] + "\n" + "\r\n".join(PLAIN[1:]) + "\r\n\r\n",    # the start line only
    "\r\n".join(PLAIN[:3]) + "\n" + "\r\n".join(PLAIN[3:]) + "\r\n\r\n",  # one header line
    "\r\n".join(PLAIN[:1]) + "\r\n" + "\n".join(PLAIN[1:]) + "\n\n",   # all headers
])
def test_mixed_line_ends(text):
    m = tr(text.encode(), from_tag="ft-1", callid="c1@example", contact_port=5060)
    assert m.lenient == (LENIENT_LF,)


@pytest.mark.parametrize("start, kind", [
    ("INVITE sip:bob@example.com sip/2.0", TYPE_REQUEST),
    ("INVITE sip:bob@example.com Sip/2.0", TYPE_REQUEST),
    ("sip/2.0 180 Ringing", TYPE_REPLY),
    ("SIp/2.0 180", TYPE_REPLY),
])
def test_version_not_in_upper_case(start, kind):
    m = tr(sip(start, *PLAIN[1:]), type=kind, from_tag="ft-1")
    assert m.lenient == (LENIENT_VERSION_CASE,)


def test_blanks_around_the_colon_are_the_grammar_not_a_leniency():
    """RFC 3261 HCOLON is *( SP / HTAB ) ":" SWS: all of these are plain SIP (the corpus
    has them: no blank after the colon in the SCTP and the fax captures)."""
    m = tr(sip(PLAIN[0], "Via:SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
               'From:\t"Alice" <sip:alice@example.com>;tag=ft-1', "To :<sip:bob@example.com>",
               "Call-ID\t:  c1@example", "CSeq:1 INVITE", "Contact:<sip:alice@192.0.2.1:5060>"),
           from_tag="ft-1", to_user="bob", callid="c1@example", cseq="1 INVITE",
           via_1="SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1", contact_port=5060)
    assert m.lenient == ()


def test_every_leniency_at_once_each_named_once():
    text = [V6_INVITE[0].replace("SIP/2.0", "sip/2.0"), *V6_INVITE[1:]]
    m = tr(sip(*text, eol="\n"), ruri_domain=B, contact_ip=A, contact_port=5060)
    assert sorted(m.lenient) == sorted((LENIENT_IPV6, LENIENT_LF, LENIENT_VERSION_CASE))


# ------------------------------------------------------------ Kamailio's reference traffic

@needs_shared("reference")
def test_reference_traffic_needs_no_leniency_and_keeps_its_refusals():
    """What Kamailio's module stored from the reference vectors and siptrace captures
    (../shared/reference) parses without any leniency, so its columns are the strict
    ones the conformance tests compare; what the module dropped is still refused."""
    import pcapy

    from sipcaptool.decode.hep import decode_datagram
    from sipcaptool.decode.packet import PacketDecoder

    payloads = {}
    for f in sorted((REFERENCE / "vectors").glob("*.hepraw")):
        try:
            packets = decode_datagram(f.read_bytes(), now_us=0)
        except DecodeError:
            continue
        payloads.update({f"{f.name}:{i}": p.to_message() for i, p in enumerate(packets)})
    for f in sorted((REFERENCE / "conformance").glob("*.pcap")):
        reader = pcapy.open_offline(str(f))
        dec = PacketDecoder(reader.datalink(), Stats())
        n = 0
        while True:
            hdr, data = reader.next()
            if hdr is None:
                break
            for m in dec.decode(0, data, hdr.getlen()):
                payloads[f"{f.name}:{n}"] = m
                n += 1
    refused = {}
    for key, m in payloads.items():
        if m.hep_type != 1:
            continue
        try:
            assert parse_sip(m.payload).lenient == (), key
        except DecodeError as e:
            refused[key.split(":")[0]] = e.reason
    assert len(payloads) > 150
    assert refused == {"31_v3_non_sip_payload.hepraw": "sip-bad-start-line",
                       "41_v3_reply_no_to.hepraw": "sip-reply-missing-headers",
                       "63_v3_bad_from.hepraw": "sip-bad-from"}


# ------------------------------------------------------------ properties

@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=6), st.one_of(st.none(), st.integers(0, 65535)))
def test_ipv6_host_port_recovers_what_was_written(addr, port):
    full = addr.exploded            # eight groups: a port after them is unambiguous
    short = str(addr)
    if port is None:
        assert ipv6_host_port(full) == (full, "")
        assert ipv6_host_port(short) == (short, "")
    else:
        assert ipv6_host_port(f"{full}:{port}") == (full, str(port))
        assert lenient_uri(f"sip:u@{full}:{port};lr") == ("u", full, str(port))


def _ipaddress_says(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text  # a zone id is no host of a SIP URI


@settings(max_examples=1000, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFg:.%", max_size=45),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 40)).map(
        lambda t: t[0].exploded[: t[1]] + t[0].exploded[t[1] + 1:]),   # one character less
))
def test_ipv6_check_agrees_with_ipaddress(text):
    """sip_fields' own IPv6 check (written out for speed) against Python's ipaddress."""
    assert _is_ipv6(text) == _ipaddress_says(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:.[]@;?%xsip", max_size=60))
def test_lenient_uri_never_raises_and_keeps_its_promise(text):
    for uri in (text, "sip:" + text, "sip:u@" + text):
        r = lenient_uri(uri)
        if r is not None:
            user, host, port = r
            assert ipv6_host_port(host) == (host, "")
            assert not port or (port.isdigit() and int(port) <= 65535)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdef:.[]@;sip", max_size=50))
def test_strict_columns_win_whenever_the_uri_parses(text):
    """Leniency only where the strict reading fails: a Request-URI that parses keeps
    exactly the strict user and host, and the message names no leniency."""
    uri = "sip:" + text
    try:
        user, host, _ = parse_uri(uri)
    except ValueError:
        return
    if " " in uri:
        return
    m = parse_sip_lenient(sip(f"OPTIONS {uri} SIP/2.0", *PLAIN[1:]))
    assert (m.ruri_user, m.ruri_domain) == (user, host)
    assert LENIENT_IPV6 not in m.lenient


# ------------------------------------------------------------ through the pipeline

def _pipeline(tmp_path, **values):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    s = Settings.load(None, {"db_url": url, **values}, env={})
    stats = Stats()
    return Pipeline(s, stats, background=False, use_spool=False), stats, tmp_path / "p.db"


def _msg(payload: bytes, hep_type: int = 1, corr: str | None = None) -> CapturedMessage:
    return CapturedMessage(1_767_225_601_000_001, "192.0.2.1", 5060, "198.51.100.2", 5080, 1, 2,
                           payload, correlation_id=corr, hep_type=hep_type)


def test_pipeline_counts_leniencies_and_hep_types(tmp_path):
    p, stats, db = _pipeline(tmp_path)
    p.submit(_msg(sip(*V6_INVITE)))
    p.submit(_msg(sip(*V6_REPLY, eol="\n")))
    p.submit(_msg(sip(*PLAIN)))
    p.submit(_msg(sip(*PLAIN[:5], "CSeq: 2 INVITE", *PLAIN[6:]), hep_type=54))  # SIP as 54
    p.submit(_msg(b'{"mos": 4.1}', hep_type=34, corr="mos-full"))
    p.submit(_msg(b'{"mos": 3.9}', hep_type=35, corr="mos-short"))
    p.submit(_msg(b"\x00\x01 rtp-ish", hep_type=54))                            # not SIP
    p.submit(_msg(b"HELLO WORLD this is not sip", hep_type=1))
    p.submit(_msg(b"INVITE sip:x SIP/2.0\r\nCall-ID: c\r\n\r\n", hep_type=54))  # no Via
    p.close()
    assert stats.group("lenient") == {"ipv6-no-brackets": 2, "lf-line-ends": 1,
                                      "hep-type-54": 1}
    assert stats.group("skipped") == {"hep-type-54": 1}
    # the non-SIP payload of type 1 (as Kamailio: a parse error), the type-54 SIP without Via
    assert stats.group("malformed") == {"sip-bad-start-line": 1, "sip-no-via": 1}
    assert stats.group("stored") == {"sip_capture": 4, "report_capture": 2}
    con = sqlite3.connect(db)
    try:
        sips = con.execute("SELECT cseq, ruri_domain, contact_ip FROM sip_capture "
                           "ORDER BY id").fetchall()
        reports = con.execute("SELECT correlation_id, type, msg FROM report_capture "
                              "ORDER BY id").fetchall()
    finally:
        con.close()
    assert sips == [("1 INVITE", B, A), ("1 INVITE", "", B), ("1 INVITE", "example.com",
                    "192.0.2.1"), ("2 INVITE", "example.com", "192.0.2.1")]
    assert reports == [("mos-full", 34, b'{"mos": 4.1}'), ("mos-short", 35, b'{"mos": 3.9}')]


def test_pipeline_stored_bad_keeps_its_rule(tmp_path):
    """A cut header line is refused by default and stored with capture_bad_msgs, never
    counted as lenient."""
    cut = ("\r\n".join(V6_INVITE) + "\r\nContent-Lengt").encode()
    for bad, stored in ((0, {}), (1, {"sip_capture": 1})):
        (tmp_path / str(bad)).mkdir()
        p, stats, _ = _pipeline(tmp_path / str(bad), capture_bad_msgs=bad)
        p.submit(_msg(cut))
        p.close()
        assert stats.group("malformed") == {"sip-bad-header": 1}
        assert stats.group("stored") == stored
        assert "sip-bad-header" not in stats.group("lenient")
