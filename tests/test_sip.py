"""Unit tests of the SIP parser (sipcaptool.decode.sip).

Every case is fed three ways (the habit of h11's ``tr()``): the whole message, every
prefix of it (which must parse or raise DecodeError, never anything else), and the
message followed by trailing garbage (which, after the header section, must change
nothing: the body is never looked at).
"""

from __future__ import annotations

import pytest

from sipcaptool.decode.sip import (
    TYPE_REPLY,
    TYPE_REQUEST,
    SipMessage,
    looks_like_sip,
    parse_sip,
    parse_sip_lenient,
)
from sipcaptool.errors import DecodeError

FIELDS = [s for s in SipMessage.__slots__ if not s.startswith("_")]


def fields(m: SipMessage) -> dict:
    return {k: getattr(m, k) for k in FIELDS}


def tr(payload: bytes, **expected) -> SipMessage:
    """Parse whole, byte-at-a-time prefixes, and with trailing garbage; check fields."""
    m = parse_sip(payload)
    for k, v in expected.items():
        assert getattr(m, k) == v, (k, getattr(m, k), v)
    for i in range(len(payload)):
        prefix = payload[:i]
        try:
            parse_sip(prefix)
        except DecodeError:
            pass
        lenient = parse_sip_lenient(prefix)
        assert isinstance(lenient, SipMessage)
    if b"\n\r\n" in payload or b"\n\n" in payload:
        for garbage in (b"\x00\xff garbage\r\nVia: x\r\n\r\n", b"INVITE sip:x SIP/2.0\r\n"):
            assert fields(parse_sip(payload + garbage)) == fields(m)
    assert parse_sip(payload) is not m  # no caching of mutable results
    return m


def sip(*lines: str, body: str = "", eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol + eol + body).encode("utf-8")


INVITE_HEAD = (
    "INVITE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
    'From: "Alice" <sip:alice@example.com>;tag=ft-1',
    "To: <sip:bob@example.com>",
    "Call-ID: c1@example",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.1:5060>",
)


def test_basic_invite():
    payload = sip(*INVITE_HEAD, "Content-Type: application/sdp", "Content-Length: 5", body="v=0\r\n")
    m = tr(
        payload,
        type=TYPE_REQUEST,
        method="INVITE",
        reply_reason="",
        ruri="sip:bob@example.com",
        ruri_user="bob",
        ruri_domain="example.com",
        from_user="alice",
        from_domain="example.com",
        from_tag="ft-1",
        to_user="bob",
        to_domain="example.com",
        to_tag="",
        contact_user="alice",
        contact_ip="192.0.2.1",
        contact_port=5060,
        callid="c1@example",
        cseq="1 INVITE",
        via_1="SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        via_1_branch="z9hG4bK-1",
        content_type="application/sdp",
        user_agent="",
        auth="",
        auth_user="",
        originator_ip="",
        originator_port=0,
        error="",
    )
    assert m.header("content-length") == "5"
    assert m.header("X-Missing") is None


def test_reply():
    payload = sip(
        "SIP/2.0 486 Busy Here",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-2",
        "From: <sip:alice@example.com>;tag=a",
        "To: <sip:bob@example.com>;tag=b",
        "Call-ID: c2",
        "CSeq: 7 INVITE",
        "Server: uas",
    )
    tr(payload, type=TYPE_REPLY, method="486", reply_reason="Busy Here", ruri="",
       ruri_user="", to_tag="b", from_tag="a", cseq="7 INVITE")


def test_reply_without_reason_phrase_and_lowercase_version():
    payload = sip("sip/2.0 200", "Via: SIP/2.0/UDP h;branch=x", "From: <sip:a@h>",
                  "To: <sip:b@h>", "Call-ID: c", "CSeq: 1 BYE")
    tr(payload, type=TYPE_REPLY, method="200", reply_reason="")


def test_header_names_case_insensitive_everywhere():
    payload = sip(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "vIA: SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bK-3",
        "FROM: <sip:alice@example.com>;TAG=t3",
        "to: <sip:bob@example.com>",
        "call-id: c3",
        "cseq: 1 OPTIONS",
        "user-agent: lower-ua",
        "reason: SIP;cause=404",  # Kamailio misses this one (first letter case-sensitive)
        "x-oip: 10.0.0.1:7000",
        "x-cid: aleg",
        "mac: 00:11",
    )
    m = tr(payload, from_tag="t3", via_1_branch="z9hG4bK-3", callid="c3",
           user_agent="lower-ua", reason="SIP;cause=404", originator_ip="10.0.0.1",
           originator_port=7000)
    assert m.header("X-CID") == "aleg"
    assert m.first_header(("X-Other", "X-Cid")) == "aleg"
    assert m.header("MAC") == "00:11"


def test_compact_forms():
    payload = sip(
        "INVITE sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-4",
        "f: <sip:alice@example.com>;tag=f4",
        "t: <sip:bob@example.com>",
        "i: c4",
        "CSeq: 1 INVITE",
        "m: <sip:alice@192.0.2.1:5070>",
        "c: text/plain",
        "l: 0",
        "s: hello",
    )
    m = tr(payload, via_1="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-4", from_tag="f4",
           to_user="bob", callid="c4", contact_port=5070, content_type="text/plain")
    assert m.header("Subject") == "hello"
    assert m.header("s") == "hello"
    assert m.header("Content-Length") == "0"


def test_first_header_wins_between_full_and_compact_names():
    payload = sip(*INVITE_HEAD[:4], "i: compact-first", "Call-ID: full-second", "CSeq: 1 INVITE")
    tr(payload, callid="compact-first")


def test_folded_header_and_trailing_blanks_kept():
    payload = sip(
        *INVITE_HEAD,
        "User-Agent:    spaced agent   ",
        "Reason: Q.850\r\n ;cause=16",
        "Subject:\r\n\tfolded from the start",
        "X-CID:   aleg-ws  ",
    )
    m = tr(payload, user_agent="spaced agent   ", reason="Q.850\r\n ;cause=16")
    assert m.header("Subject") == "folded from the start"
    assert m.header("x-cid") == "aleg-ws  "


def test_bare_lf_line_endings():
    payload = sip(*INVITE_HEAD, "Reason: a\n\tb", body="body\n", eol="\n")
    tr(payload, callid="c1@example", from_tag="ft-1", contact_port=5060, reason="a\n\tb")


def test_blank_before_colon():
    payload = sip(*INVITE_HEAD[:4], "Call-ID : spaced", "CSeq: 1 INVITE")
    tr(payload, callid="spaced")


def test_multiple_via_values_in_one_line():
    payload = sip(
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-a, SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-b",
        "Via: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bK-c",
        *INVITE_HEAD[2:],
    )
    tr(payload,
       via_1="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-a, SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-b",
       via_1_branch="z9hG4bK-a")


def test_via_without_branch():
    payload = sip("INVITE sip:b@h SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1", *INVITE_HEAD[2:])
    tr(payload, via_1_branch="")


def test_multiple_contacts_in_one_line():
    payload = sip(*INVITE_HEAD[:6],
                  'Contact: "A, B" <sip:first@192.0.2.5:5062>;q=1, <sip:second@192.0.2.6>')
    tr(payload, contact_user="first", contact_ip="192.0.2.5", contact_port=5062)


def test_contact_addr_spec_with_params():
    payload = sip(*INVITE_HEAD[:6], "Contact: sip:carol@192.0.2.9;expires=60, sip:d@h")
    tr(payload, contact_user="carol", contact_ip="192.0.2.9", contact_port=0)


def test_contact_star():
    payload = sip("REGISTER sip:example.com SIP/2.0", *INVITE_HEAD[1:6], "Contact: *",
                  "Expires: 0")
    tr(payload, contact_user="*", contact_ip="", contact_port=0, ruri_user="",
       ruri_domain="example.com")


def test_ipv6_hosts_in_uris():
    payload = sip(
        "INVITE sip:bob@[2001:db8::2]:5080;transport=udp SIP/2.0",
        "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-6",
        "From: <sip:alice@[2001:db8::1]>;tag=f6",
        "To: sip:bob@[2001:db8::2]",
        "Call-ID: c6",
        "CSeq: 1 INVITE",
        "Contact: <sip:u@[2001:db8::1]:5060>",
    )
    # as Kamailio's parse_uri, the host keeps the brackets of the IPv6 reference
    tr(payload, ruri_user="bob", ruri_domain="[2001:db8::2]", from_domain="[2001:db8::1]",
       to_domain="[2001:db8::2]", contact_user="u", contact_ip="[2001:db8::1]",
       contact_port=5060, via_1_branch="z9hG4bK-6")


def test_tel_uris():
    payload = sip(
        "INVITE tel:+15557654321;phone-context=example.com SIP/2.0",
        *INVITE_HEAD[1:],
        "P-Asserted-Identity: <tel:+15551234567>",
    )
    tr(payload, ruri="tel:+15557654321;phone-context=example.com", ruri_user="+15557654321",
       ruri_domain="", pid_user="+15551234567")


def test_user_phone_and_password_in_uri():
    payload = sip(
        "OPTIONS sip:+15551230002@example.com;user=phone SIP/2.0",
        *INVITE_HEAD[1:2],
        "From: sip:ping:secret@127.0.0.32;tag=p1",
        "To: <sip:+15551230002@example.com;user=phone>",
        *INVITE_HEAD[4:6],
    )
    tr(payload, ruri_user="+15551230002", from_user="ping", from_domain="127.0.0.32",
       from_tag="p1", to_user="+15551230002")


@pytest.mark.parametrize(
    "from_value, user, tag",
    [
        ('"Alice \\"the\\" <boss>" <sip:alice@example.com>;tag=q1', "alice", "q1"),
        ('"back\\\\slash" <sip:bs@example.com>;tag=q2', "bs", "q2"),
        ("Plain Name <sip:pn@example.com> ; tag = q3", "pn", "q3"),
        ('"" <sip:empty@example.com>', "empty", ""),
        ("<sip:noname@example.com;transport=tcp>;tag=q4", "noname", "q4"),
    ],
)
def test_display_names(from_value, user, tag):
    payload = sip(*INVITE_HEAD[:2], "From: " + from_value, *INVITE_HEAD[3:])
    tr(payload, from_user=user, from_domain="example.com", from_tag=tag)


def test_identity_priority():
    base = INVITE_HEAD
    rpid = "Remote-Party-ID: <sip:rpid@example.com>;party=calling"
    ppi = "P-Preferred-Identity: <sip:ppi@example.com>"
    pai = 'P-Asserted-Identity: "PAI" <sip:pai@example.com>, <tel:+1555>'
    tr(sip(*base, rpid), pid_user="rpid")
    tr(sip(*base, rpid, ppi), pid_user="ppi")
    tr(sip(*base, rpid, ppi, pai), pid_user="pai")
    tr(sip(*base, "P-Asserted-Identity: <garbage"), pid_user="")  # not a drop


def test_authorization_and_proxy_authorization():
    auth = ('Authorization: Digest username="alice@example.com", realm="example.com", '
            'nonce="n", uri="sip:example.com", response="r"')
    proxy = 'Proxy-Authorization: Digest realm="x", username=bob, nonce="n"'
    m = tr(sip(*INVITE_HEAD, auth), auth_user="alice")
    assert m.auth == auth.split(": ", 1)[1]
    m = tr(sip(*INVITE_HEAD, auth, proxy), auth_user="bob")
    assert m.auth == proxy.split(": ", 1)[1]
    tr(sip(*INVITE_HEAD, "Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l"), auth_user="",
       auth="Basic YWxhZGRpbjpvcGVuc2VzYW1l")


@pytest.mark.parametrize(
    "value, ip, port",
    [
        ("10.1.2.3:5099", "10.1.2.3", 5099),
        ("10.1.2.3", "10.1.2.3", 0),
        ("[2001:db8::9]:5066", "2001:db8::9", 5066),
        ("[2001:db8::9]", "2001:db8::9", 0),
        ("2001:db8::9", "2001:db8::9", 0),
        ("10.1.2.3:notaport", "10.1.2.3", 0),
        ("10.1.2.3:99999", "10.1.2.3", 0),
        ("10.1.2.3:5099;x=y", "10.1.2.3", 5099),
    ],
)
def test_x_oip(value, ip, port):
    payload = sip(*INVITE_HEAD, "X-OIP: " + value, "X-Next: value")
    before = bytes(payload)
    m = tr(payload, originator_ip=ip, originator_port=port)
    assert payload == before  # the buffer is never modified
    assert m.header("X-Next") == "value"


def test_rtp_stat_priority():
    tr(sip(*INVITE_HEAD, "RTP-RxStat: last", "X-RTP-Stat: mid"), rtp_stat="mid")
    tr(sip(*INVITE_HEAD, "X-RTP-Stat: mid", "X-RTP-Stat-Add: first"), rtp_stat="first")
    tr(sip(*INVITE_HEAD, "X-Siemens-RTP-stats: none"), rtp_stat="none")


def test_diversion_and_custom_headers():
    m = tr(sip(*INVITE_HEAD, "Diversion: <sip:+1555@example.com>;reason=unconditional",
               "Mac: aa:bb", "IP: 203.0.113.5", "Port: 6060", "X-CID: first", "X-CID: second"),
           diversion="<sip:+1555@example.com>;reason=unconditional")
    assert (m.header("Mac"), m.header("IP"), m.header("Port")) == ("aa:bb", "203.0.113.5", "6060")
    assert m.first_header(["X-Missing", "X-CID"]) == "first"
    assert m.first_header(["X-Missing"]) == ""


def test_body_is_not_scanned():
    body = "Call-ID: not-this\r\nFrom: <<<bad\r\n"
    tr(sip(*INVITE_HEAD, "Content-Length: 36", body=body), callid="c1@example", from_tag="ft-1")


def test_invalid_utf8_and_nul_bytes():
    payload = (
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z\r\n"
        b'From: "Ren\xe9" <sip:rene@example.com>;tag=l1\r\nTo: <sip:b@h>\r\nCall-ID: c\xe9\r\n'
        b"CSeq: 1 INVITE\r\nUser-Agent: a\x00b\r\n\r\n"
    )
    m = tr(payload, from_user="rene", from_tag="l1", callid="c\ufffd", user_agent="ab")
    assert "\x00" not in "".join(str(v) for v in fields(m).values())


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"HELLO WORLD this is not sip\r\n\r\n", "sip-bad-start-line"),
        (b"", "sip-bad-start-line"),
        (b"INVITE sip:bob@example.com SIP/3.0\r\n\r\n", "sip-bad-start-line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "sip-bad-start-line"),
        (b"IN VITE sip:b@h SIP/2.0\r\n\r\n", "sip-bad-start-line"),
        (sip("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=x", "From: <sip:a@h>;tag=1",
             "Call-ID: x", "CSeq: 1 INVITE"), "sip-reply-missing-headers"),
        (sip("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=x", "From: <sip:a@h>;tag=1",
             "To: <sip:b@h>", "CSeq: 1 INVITE"), "sip-reply-missing-headers"),
        (sip(*INVITE_HEAD[:2], "From: <<<garbage", *INVITE_HEAD[3:]), "sip-bad-from"),
        (sip(*INVITE_HEAD[:2], "From: <mailto:a@h>", *INVITE_HEAD[3:]), "sip-bad-from"),
        (sip(*INVITE_HEAD[:3], "To: <sip:@>", *INVITE_HEAD[4:]), "sip-bad-to"),
        (sip(INVITE_HEAD[0], *INVITE_HEAD[2:]), "sip-no-via"),
        (sip(INVITE_HEAD[0], "Via: garbage", *INVITE_HEAD[2:]), "sip-bad-via"),
        (sip(*INVITE_HEAD[:5], "CSeq: one INVITE", INVITE_HEAD[6]), "sip-bad-cseq"),
        (sip(*INVITE_HEAD[:6], "Contact: <sip:a@h:port>"), "sip-bad-contact"),
        (sip(*INVITE_HEAD[:6], "Contact: <sip:a@h:65536>"), "sip-bad-contact"),
        (sip(*INVITE_HEAD[:6], "Contact: <sip:a@[::1]:99999999999>"), "sip-bad-contact"),
        (sip("INVITE nonsense SIP/2.0", *INVITE_HEAD[1:]), "sip-bad-ruri"),
        (sip(*INVITE_HEAD, "this line has no colon"), "sip-bad-header"),
    ],
)
def test_refused(payload, reason):
    with pytest.raises(DecodeError) as info:
        parse_sip(payload)
    assert info.value.reason == reason
    m = parse_sip_lenient(payload)
    assert m.error == reason


def test_lenient_fills_what_it_can():
    payload = sip("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9", "From: <<<garbage",
                  "Call-ID: kept", "CSeq: 5 BYE")
    m = parse_sip_lenient(payload)
    assert (m.type, m.method, m.callid, m.cseq, m.via_1_branch) == (2, "200", "kept", "5 BYE", "z9")
    assert m.from_user == "" and m.error in ("sip-reply-missing-headers", "sip-bad-from")
    m = parse_sip_lenient(b"\xff\xfe garbage")
    assert m.type == 0 and m.method == "" and m.error == "sip-bad-start-line"


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: x\r\n", True),
        (b"FOO-BAR sip:x SIP/2.0\r\n", True),
        (b"SIP/2.0 200 OK\r\n", True),
        (b"SIP/2.0 100\r\n", True),
        (b"sip/2.0 180 Ringing\n", True),
        (b"OPTIONS sip:x SIP/2.0", True),
        (b"HELLO WORLD this is not sip\r\n", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"SIP/2.0 20 OK\r\n", False),
        (b"\r\n\r\n", False),
        (b"", False),
        (b"HEP3\x00\x10", False),
    ],
)
def test_looks_like_sip(payload, expected):
    assert looks_like_sip(payload) is expected


def test_repeated_values_parse_the_same_from_the_cache(monkeypatch):
    """From/To/Contact/Request-URI values are parsed once per distinct text: a second
    message with the same values (and one after the cache was emptied) gives the same
    fields and the same errors."""
    from sipcaptool.decode import sip as sipmod

    good = sip("INVITE sip:bob@example.com:5070 SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9",
               'From: "A" <sip:alice@example.com>;tag=1', "To: sip:bob@example.com;tag=2",
               "Contact: *", "Call-ID: c", "CSeq: 1 INVITE")
    bad = sip("INVITE sip:bob@example.com:99999 SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9",
              "From: <<<garbage", "To: <sip:bob@[::1>", "Contact: <sip:c@h:x>",
              "Call-ID: c", "CSeq: 1 INVITE")
    fields = [n for n in SipMessage.__slots__ if not n.startswith("_")]

    def snapshot(payload):
        try:
            strict = parse_sip(payload)
            strict = [getattr(strict, n) for n in fields]
        except DecodeError as e:
            strict = (e.reason, e.detail)
        lenient = parse_sip_lenient(payload)
        return strict, [getattr(lenient, n) for n in fields]

    monkeypatch.setattr(sipmod, "_ADDR_CACHE_MAX", 3)
    for payload in (good, bad):
        for cache in (sipmod._ADDR_CACHE, sipmod._CONTACT_CACHE, sipmod._RURI_CACHE):
            cache.clear()
        first = snapshot(payload)
        assert snapshot(payload) == first
        for cache in (sipmod._ADDR_CACHE, sipmod._CONTACT_CACHE, sipmod._RURI_CACHE):
            assert len(cache) <= 3
    assert snapshot(good)[0][fields.index("contact_user")] == "*"
    assert snapshot(good)[0][fields.index("ruri_domain")] == "example.com"
    assert snapshot(bad)[0][0] == "sip-bad-ruri"
    lenient = snapshot(bad)[1]
    assert lenient[fields.index("from_user")] == lenient[fields.index("contact_ip")] == ""
    # long values are parsed every time, not kept
    for cache in (sipmod._ADDR_CACHE, sipmod._CONTACT_CACHE, sipmod._RURI_CACHE):
        cache.clear()
    user = "u" * 300
    long_ = sip(f"INVITE sip:{user}@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9",
                f"From: <sip:{user}@example.com>;tag=1", f"To: <sip:{user}@example.com>",
                f"Contact: <sip:{user}@h:5060>", "Call-ID: c", "CSeq: 1 INVITE")
    for _ in range(2):
        m = parse_sip(long_)
        assert m.from_user == m.to_user == m.contact_user == m.ruri_user == user
    assert not (sipmod._ADDR_CACHE or sipmod._CONTACT_CACHE or sipmod._RURI_CACHE)
