"""SIP start line and header section -> the values of the capture columns.

Pure code, stdlib only. ``parse_sip`` is the hot path of every capture source, so it is
written for speed: the header section (never the body) is decoded once, one compiled
pattern splits it into ``(name, body)`` pairs in C, and only the handful of headers that
feed a column (From, To, Contact, the identities, the credentials, the first Via) get any
further parsing, by the functions of ``sip_fields.py`` (URIs, addresses, tags, digest
usernames, X-OIP). From, To, Contact and Request-URI values are parsed once per distinct
text (small bounded caches): the messages of a dialog repeat them.

What is kept, and how, follows Kamailio's sipcapture module (the deliberate differences
are listed in tests/kamailio_differences.py too): a header "body" runs from the first
non-blank character after ``Name:`` (line folding included) to the end of the line;
trailing spaces and tabs are kept, only the line ending is removed; folded continuation
lines stay inside the body. "First" means the first header of that name. Deliberate
differences from Kamailio 5.6.3:

* header names are compared case-insensitively everywhere (RFC 3261 section 7.3.1), also
  for the headers Kamailio looks up by name (Reason, X-OIP, RTP-stat names, configurable
  headers), where it compares the first character case-sensitively;
* ``auth`` holds the credentials header body (Kamailio never fills it);
* ``X-OIP: ip[:port]`` is parsed properly, ``[IPv6]:port`` too, and the message buffer is
  never modified.

Which messages are refused (``parse_sip`` raises ``DecodeError``) follows what the module
drops: no valid start line, no (parsable) Via, a reply without From/To/Call-ID/CSeq
(Kamailio's "required headers not found in reply"), an unparsable From, To, Contact,
CSeq or Request-URI, or a header line that is not ``name: value``.

With one exception, a *leniency*: what real devices send that departs from RFC 3261
but loses nothing when read as meant. Such a message is parsed, its columns filled, and
what departed is named in ``SipMessage.lenient`` (the pipeline counts each as
``lenient:<what>``):

* ``ipv6-no-brackets``: a Request-URI, From, To or Contact URI whose host is an IPv6
  address written without brackets (``sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060``),
  which Kamailio's URI parser refuses; host and port as ``ipv6_host_port`` in
  ``sip_fields.py`` recovers them (the host as written, without brackets). Only when
  the strict reading fails: a URI that parses today keeps its columns.

Two more departures are stored as they always were (Kamailio stores them too) and are
now named, so that an operator sees which devices send them:

* ``lf-line-ends``: the start line or a header line ends in a bare LF instead of CR-LF;
* ``sip-version-case``: ``sip/2.0`` not written in upper case (RFC 3261 7.1: the
  version is case-insensitive, but implementations MUST send upper case).

Blanks around the header colon (``Name:value``, ``Name:<TAB>value``, ``Name :value``) are
RFC 3261's own grammar (HCOLON), not a departure, and are not counted. A header line cut
in the middle and an unclosed quoted display name are broken structure, not
leniencies: they stay refused (stored only with ``capture_bad_msgs``).

Why one module of some 700 lines: the start line, the header split (fast and general),
the per-message caches and ``_parse`` are one pass over one message and read best
together; each fast path sits next to the general code it must agree with. The grammar
inside header values is in ``sip_fields.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from ..errors import DecodeError
from .sip_fields import DIGITS as _DIGITS
from .sip_fields import (
    address,
    digest_user,
    lenient_address,
    lenient_uri,
    name_addr,
    originator,
    parse_uri,
    tag_param,
)

__all__ = [
    "SipMessage",
    "TYPE_UNKNOWN",
    "TYPE_REQUEST",
    "TYPE_REPLY",
    "LENIENT_IPV6",
    "LENIENT_LF",
    "LENIENT_VERSION_CASE",
    "COMPACT_FORMS",
    "RTP_STAT_HEADERS",
    "header_key",
    "looks_like_sip",
    "parse_sip",
    "parse_sip_lenient",
]

# Kamailio's first_line.type values, stored in the ``type`` column.
TYPE_UNKNOWN = 0
TYPE_REQUEST = 1
TYPE_REPLY = 2

# The names of the leniencies (``SipMessage.lenient``, counted as ``lenient:<name>``).
LENIENT_IPV6 = "ipv6-no-brackets"
LENIENT_LF = "lf-line-ends"
LENIENT_VERSION_CASE = "sip-version-case"

# RFC 3261 section 7.3.3 compact forms (and the later RFCs' ones), mapped to the full
# lower-case names every lookup uses (``header_key``). Read-only.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}



def header_key(name: str) -> str:
    """The key of header ``name`` in ``SipMessage.headers``: lower case, full name."""
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


# The RTP statistics headers, in the order sipcapture tries them.
RTP_STAT_HEADERS = (
    "x-rtp-stat-add",
    "x-rtp-stat-t38",
    "x-rtp-stat",
    "p-rtp-stat",
    "x-siemens-rtp-stats",
    "x-ng-rtp-stats",
    "rtp-rxstat",
)

# Headers that most messages do not have.
_RARE_NAMES = frozenset(
    ("p-asserted-identity", "p-preferred-identity", "remote-party-id",
     "proxy-authorization", "authorization", "x-oip") + RTP_STAT_HEADERS
)

# One header line: name (a token, no blanks), optional blanks, colon, leading linear
# white space (folding included) skipped, then the body up to the end of the line plus
# any continuation lines (a line break followed by a space or tab, RFC 3261 7.3.1).
# CR and LF never end up at the end of a body; a CR-LF inside (folding) is kept.
_HEADER_RE = re.compile(
    r"^([^: \t\r\n]+)[ \t]*:(?:[ \t]|\r?\n[ \t])*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)",
    re.M,
)

_COMPACT_NAMES = frozenset(COMPACT_FORMS)

# The first Via value, when it is "proto/version/transport host...;...;branch=value".
_VIA_RE = re.compile(
    r"[^ \t/,]+/[^ \t/,]+/[^ \t/,]+ +[^ \t;,]+"
    r"(?:;(?![ \t]*(?i:branch)[ \t]*(?:[=;,]|\Z))[^;,]*)*;branch=([^;,\s]*)(?=[;,]|\Z)"
)
# Request-Line: Method SP Request-URI SP SIP-Version (RFC 3261 7.1).
_REQUEST_LINE_RE = re.compile(r"([!%'*+\-.0-9A-Z_`a-z~]+) ([^ ]+) (?i:SIP/2\.0)\Z")

# RFC 3261 token characters (the method of a request line).
_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_TOKEN_BYTES = bytes(sorted(ord(c) for c in _TOKEN_CHARS))


class SipMessage:
    """The SIP-derived column values of one message (strings are ``''`` when absent).

    Attributes:
        type: 1 request, 2 reply, 0 when the start line did not parse (lenient only).
        method: request method as written, or the 3-digit status code of a reply.
        reply_reason: reason phrase of a reply.
        ruri, ruri_user, ruri_domain: Request-URI text, its user and host parts.
        from_user, from_domain, from_tag, to_user, to_domain, to_tag: From/To URI parts
            and ``tag`` parameters.
        pid_user: user of the first P-Asserted-Identity, else P-Preferred-Identity, else
            Remote-Party-ID URI.
        contact_user, contact_ip, contact_port: first Contact URI (``*`` for
            ``Contact: *``; port 0 when absent).
        auth_user: digest ``username`` up to ``@`` of the first Proxy-Authorization, else
            Authorization header; ``auth`` is that header's body.
        callid, cseq, via_1, via_1_branch, reason, content_type, user_agent, diversion,
            rtp_stat: header bodies (``via_1`` is the whole first Via line).
        originator_ip, originator_port: from ``X-OIP: ip[:port]`` (brackets removed).
        error: the DecodeError reason when ``parse_sip_lenient`` met a problem, else ''.
        lenient: the leniencies the message needed (``LENIENT_*`` names, each once, in
            the order met), ``()`` for most messages; see the module doc.
    """

    __slots__ = (
        "type",
        "method",
        "reply_reason",
        "ruri",
        "ruri_user",
        "ruri_domain",
        "from_user",
        "from_domain",
        "from_tag",
        "to_user",
        "to_domain",
        "to_tag",
        "pid_user",
        "contact_user",
        "contact_ip",
        "contact_port",
        "auth_user",
        "auth",
        "callid",
        "via_1",
        "via_1_branch",
        "cseq",
        "reason",
        "content_type",
        "user_agent",
        "originator_ip",
        "originator_port",
        "rtp_stat",
        "diversion",
        "error",
        "lenient",
        "_headers",
    )

    def __init__(self) -> None:
        self.type = TYPE_UNKNOWN
        self.method = ""
        self.reply_reason = ""
        self.ruri = ""
        self.ruri_user = ""
        self.ruri_domain = ""
        self.from_user = ""
        self.from_domain = ""
        self.from_tag = ""
        self.to_user = ""
        self.to_domain = ""
        self.to_tag = ""
        self.pid_user = ""
        self.contact_user = ""
        self.contact_ip = ""
        self.contact_port = 0
        self.auth_user = ""
        self.auth = ""
        self.callid = ""
        self.via_1 = ""
        self.via_1_branch = ""
        self.cseq = ""
        self.reason = ""
        self.content_type = ""
        self.user_agent = ""
        self.originator_ip = ""
        self.originator_port = 0
        self.rtp_stat = ""
        self.diversion = ""
        self.error = ""
        self.lenient: tuple[str, ...] = ()
        self._headers: dict[str, str] = {}

    def header(self, name: str) -> str | None:
        """Body of the first header called ``name`` (any case, compact forms too), or None."""
        key = name.lower()
        return self._headers.get(COMPACT_FORMS.get(key, key))

    def first_header(self, names: Iterable[str]) -> str:
        """Body of the first header found trying ``names`` in order, else ''.

        This is how ``callid_aleg`` is chosen from the ``callid_aleg_header`` list.
        """
        headers = self._headers
        for name in names:
            key = name.lower()
            body = headers.get(COMPACT_FORMS.get(key, key))
            if body is not None:
                return body
        return ""

    @property
    def headers(self) -> dict[str, str]:
        """First body of every header, keyed by lower-case full name (read-only use)."""
        return self._headers

    def __repr__(self) -> str:
        return (
            f"SipMessage(type={self.type}, method={self.method!r}, "
            f"callid={self.callid!r}, cseq={self.cseq!r})"
        )


def looks_like_sip(payload: bytes) -> bool:
    """Cheap check that ``payload`` starts with a SIP request or status line.

    ``METHOD SP uri SP SIP/2.0`` or ``SIP/2.0 SP 3DIGIT``; used to recognise SIP by
    content on any port. Only the first line is looked at.
    """
    nl = payload.find(b"\n", 0, 8192)
    line = payload if nl < 0 else payload[:nl]
    if line[-1:] == b"\r":
        line = line[:-1]
    if line[:8].upper() == b"SIP/2.0 ":
        code = line[8:11]
        return len(code) == 3 and code.isdigit() and line[11:12] in (b"", b" ")
    parts = line.split(b" ")
    return (
        len(parts) == 3
        and parts[2].upper() == b"SIP/2.0"
        and bool(parts[0])
        and not parts[0].translate(None, _TOKEN_BYTES)
        and bool(parts[1])
    )


def parse_sip(payload: bytes) -> SipMessage:
    """Parse the start line and header section of one SIP message.

    Args:
        payload: the whole message as captured (the body is not looked at).

    Returns:
        the column values, see ``SipMessage``.

    Raises:
        DecodeError: for what Kamailio's sipcapture would not store; ``reason`` is one
            of ``sip-bad-start-line``, ``sip-bad-header``, ``sip-no-via``,
            ``sip-bad-via``, ``sip-reply-missing-headers``, ``sip-bad-from``,
            ``sip-bad-to``, ``sip-bad-contact``, ``sip-bad-cseq``, ``sip-bad-ruri``.
    """
    return _parse(payload, True)


def parse_sip_lenient(payload: bytes) -> SipMessage:
    """Like ``parse_sip`` but never raises: fills what it can.

    The reason of the first problem met (what ``parse_sip`` would have raised) is in
    ``error``. Used with ``capture_bad_msgs``.
    """
    try:
        return _parse(payload, False)
    except Exception as exc:  # noqa: BLE001 - a bug must never stop a capture: keep an empty record
        msg = SipMessage()
        msg.error = getattr(exc, "reason", None) or "sip-internal-error"
        return msg


def _lenient(msg: SipMessage, what: str) -> None:
    if what not in msg.lenient:
        msg.lenient += (what,)


def _fail(msg: SipMessage, strict: bool, reason: str, detail: str = "") -> None:
    if strict:
        raise DecodeError(reason, detail)
    if not msg.error:
        msg.error = reason


def _header_text(payload: bytes) -> str:
    """The header section (start line included) decoded as text, NUL bytes removed."""
    end = payload.find(b"\n\r\n")
    if end >= 0:
        lf = payload.find(b"\n\n", 0, end + 1)
        if lf >= 0:
            end = lf
    else:
        end = payload.find(b"\n\n")
        if end < 0:
            end = len(payload)
    text = payload[:end].decode("utf-8", "replace")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def _parse(payload: bytes, strict: bool) -> SipMessage:
    msg = SipMessage()
    text = _header_text(payload)

    # --- start line -------------------------------------------------------------------
    nl = text.find("\n")
    if nl < 0:
        line = text
        rest = ""
    else:
        line = text[:nl]
        rest = text[nl + 1 :]
    if line[-1:] == "\r":
        line = line[:-1]
    elif nl >= 0:
        _lenient(msg, LENIENT_LF)
    _start_line(msg, line, strict)

    # --- headers ----------------------------------------------------------------------
    rest = rest.rstrip("\r\n")
    headers = _split_headers_fast(rest) if rest else {}
    if headers is None:
        headers = _split_headers(msg, rest, strict)
        if rest.count("\n") != rest.count("\r\n"):
            _lenient(msg, LENIENT_LF)
    elif "\r" not in rest and "\n" in rest:  # the fast split took LF-only lines
        _lenient(msg, LENIENT_LF)
    msg._headers = headers
    get = headers.get

    # --- the plain bodies -------------------------------------------------------------
    callid = get("call-id")
    if callid is not None:
        msg.callid = callid
    cseq = get("cseq")
    if cseq is not None:
        msg.cseq = cseq
        num, _, meth = cseq.partition(" ")
        if not num or not _DIGITS.issuperset(num) or not meth.strip(" \t"):
            _fail(msg, strict, "sip-bad-cseq", cseq)
    via = get("via")
    if via is None:
        _fail(msg, strict, "sip-no-via")
    else:
        msg.via_1 = via
        _via_branch(msg, via, strict)
    if msg.type == TYPE_REPLY and (
        callid is None or cseq is None or "from" not in headers or "to" not in headers
    ):
        _fail(msg, strict, "sip-reply-missing-headers")
    body = get("content-type")
    if body is not None:
        msg.content_type = body
    body = get("user-agent")
    if body is not None:
        msg.user_agent = body
    body = get("diversion")
    if body is not None:
        msg.diversion = body
    body = get("reason")
    if body is not None:
        msg.reason = body

    # --- From / To / Contact (parsed once per distinct value, see _ADDR_CACHE) ---------
    cache = _ADDR_CACHE
    body = get("from")
    if body is not None:
        r = cache.get(body)
        if r is None:
            r = _from_to_cached(body)
        if r[3] is None:
            msg.from_user, msg.from_domain, msg.from_tag = r[0], r[1], r[2]
            if r[4]:
                _lenient(msg, r[4])
        else:
            _fail(msg, strict, "sip-bad-from", r[3])
    body = get("to")
    if body is not None:
        r = cache.get(body)
        if r is None:
            r = _from_to_cached(body)
        if r[3] is None:
            msg.to_user, msg.to_domain, msg.to_tag = r[0], r[1], r[2]
            if r[4]:
                _lenient(msg, r[4])
        else:
            _fail(msg, strict, "sip-bad-to", r[3])
    body = get("contact")
    if body is not None:
        c = _CONTACT_CACHE.get(body)
        if c is None:
            c = _contact_cached(body)
        if c[3] is None:
            msg.contact_user, msg.contact_ip, msg.contact_port = c[0], c[1], c[2]
            if c[4]:
                _lenient(msg, c[4])
        else:
            _fail(msg, strict, "sip-bad-contact", c[3])

    # --- less common headers -----------------------------------------------------------
    if _RARE_NAMES.isdisjoint(headers):
        return msg
    _identity(msg, get)
    body = get("proxy-authorization")
    if body is None:
        body = get("authorization")
    if body is not None:
        msg.auth = body
        msg.auth_user = digest_user(body)
    body = get("x-oip")
    if body is not None:
        msg.originator_ip, msg.originator_port = originator(body)
    for name in RTP_STAT_HEADERS:
        body = get(name)
        if body is not None:
            msg.rtp_stat = body
            break
    return msg


# Parsed From/To and Contact values, keyed by the header body. Every message of a dialog
# carries the same From and To (and each side the same Contact), so most messages of a
# capture find theirs here; the cache is emptied when it reaches _ADDR_CACHE_MAX entries.
# Values: (user, host, tag, None, lenient) for From/To and (user, host, port, None,
# lenient) for Contact, or ("", "", "", reason, "") when the value does not parse;
# ``lenient`` names the leniency the value needed ('' for none). Only values of up to
# _CACHE_VALUE_MAX characters are kept, so the caches stay within a few MB whatever comes.
_FromTo = tuple[str, str, str, str | None, str]   # user, host, tag, error, lenient
_Contact = tuple[str, str, int, str | None, str]  # user, host, port, error, lenient
_Ruri = tuple[str, str, str | None, str]          # user, host, error, lenient
_ADDR_CACHE: dict[str, _FromTo] = {}
_CONTACT_CACHE: dict[str, _Contact] = {}
_RURI_CACHE: dict[str, _Ruri] = {}
_ADDR_CACHE_MAX = 8192
_CACHE_VALUE_MAX = 256


def _from_to_cached(body: str) -> _FromTo:
    r: _FromTo
    try:
        user, host, _, params = address(body)
        r = (user, host, tag_param(params), None, "")
    except ValueError as exc:
        parts = lenient_address(body)
        if parts is None:
            r = ("", "", "", str(exc), "")
        else:
            r = (parts[0], parts[1], tag_param(parts[3]), None, LENIENT_IPV6)
    if len(body) <= _CACHE_VALUE_MAX:
        cache = _ADDR_CACHE
        if len(cache) >= _ADDR_CACHE_MAX:
            cache.clear()
        cache[body] = r
    return r


def _contact_cached(body: str) -> _Contact:
    r: _Contact
    if body.strip(" \t") == "*":
        r = ("*", "", 0, None, "")
    else:
        try:
            user, host, port, _ = address(body, True)
            r = (user, host, int(port) if port else 0, None, "")
        except ValueError as exc:
            parts = lenient_address(body, True)
            if parts is None:
                r = ("", "", 0, str(exc), "")
            else:
                r = (parts[0], parts[1], int(parts[2]) if parts[2] else 0, None, LENIENT_IPV6)
    if len(body) <= _CACHE_VALUE_MAX:
        cache = _CONTACT_CACHE
        if len(cache) >= _ADDR_CACHE_MAX:
            cache.clear()
        cache[body] = r
    return r


def _ruri_cached(uri: str) -> _Ruri:
    r: _Ruri
    try:
        user, host, _ = parse_uri(uri)
        r = (user, host, None, "")
    except ValueError as exc:
        parts = lenient_uri(uri)
        if parts is None:
            r = ("", "", str(exc), "")
        else:
            r = (parts[0], parts[1], None, LENIENT_IPV6)
    if len(uri) <= _CACHE_VALUE_MAX:
        cache = _RURI_CACHE
        if len(cache) >= _ADDR_CACHE_MAX:
            cache.clear()
        cache[uri] = r
    return r


def _split_headers_fast(rest: str) -> dict[str, str] | None:
    """First body per lower-case name for the common case, else None.

    The common case: one line ending style (CR-LF or LF) and no stray CR, no folding,
    every line ``name: body`` with a name free of blanks and not a compact form.
    """
    lines = rest.split("\r\n")
    breaks = len(lines) - 1
    if breaks:
        # every CR and LF is part of a CR-LF that split the lines
        if rest.count("\n") != breaks or rest.count("\r") != breaks:
            return None
    elif "\r" in rest:
        return None
    else:
        lines = rest.split("\n")
    lines.reverse()  # so the first header of a name is the one left in the dict
    headers = {}
    for line in lines:
        name, sep, body = line.partition(":")
        if not sep:
            return None
        headers[name.lower()] = body.lstrip(" \t")
    # a folded line shows up as a name starting with a blank
    names = ":".join(headers)
    if " " in names or "\t" in names or "" in headers or not _COMPACT_NAMES.isdisjoint(headers):
        return None
    return headers


def _split_headers(msg: SipMessage, rest: str, strict: bool) -> dict[str, str]:
    """First body per lower-case full name: folding, compact forms, bad lines."""
    pairs = _HEADER_RE.findall(rest)
    lines = rest.count("\n") + 1 - rest.count("\n ") - rest.count("\n\t")
    if len(pairs) != lines:
        _fail(msg, strict, "sip-bad-header", "a header line without 'name:'")
    pairs.reverse()  # so the first header of a name is the one left in the dict
    compact = COMPACT_FORMS
    headers = {}
    for name, body in pairs:
        key = name.lower()
        if len(key) == 1:
            key = compact.get(key, key)
        headers[key] = body
    return headers


def _start_line(msg: SipMessage, line: str, strict: bool) -> None:
    """Request line (RFC 3261 7.1) or status line (7.2)."""
    if line[:1] in "sS" and line[:8].upper() == "SIP/2.0 ":
        code = line[8:11]
        sep = line[11:12]
        if len(code) == 3 and _DIGITS.issuperset(code) and code[0] != "0" and sep in ("", " "):
            msg.type = TYPE_REPLY
            msg.method = code
            msg.reply_reason = line[12:]
            if line[:7] != "SIP/2.0":
                _lenient(msg, LENIENT_VERSION_CASE)
            return
        _fail(msg, strict, "sip-bad-start-line", line[:80])
        return
    m = _REQUEST_LINE_RE.match(line)
    if m is None:
        _fail(msg, strict, "sip-bad-start-line", line[:80])
        return
    msg.type = TYPE_REQUEST
    msg.method, uri = m.groups()
    msg.ruri = uri
    if line[-7:] != "SIP/2.0":
        _lenient(msg, LENIENT_VERSION_CASE)
    r = _RURI_CACHE.get(uri)
    if r is None:
        r = _ruri_cached(uri)
    if r[2] is None:
        msg.ruri_user, msg.ruri_domain = r[0], r[1]
        if r[3]:
            _lenient(msg, r[3])
    else:
        _fail(msg, strict, "sip-bad-ruri", r[2])


def _via_branch(msg: SipMessage, via: str, strict: bool) -> None:
    """Check the first Via value and take its ``branch`` parameter."""
    m = _VIA_RE.match(via)
    if m is not None:
        msg.via_1_branch = m.group(1)
    else:
        _via_branch_general(msg, via, strict)


def _via_branch_general(msg: SipMessage, via: str, strict: bool) -> None:
    first = via.split(",", 1)[0]
    proto, _, sent_by = first.strip(" \t").partition(" ")
    if proto.count("/") != 2 or not sent_by.strip(" \t\r\n"):
        # "SIP / 2.0 / UDP host" (blanks around the slashes) is legal but rare
        compact = first.replace(" ", "").replace("\t", "")
        if compact.count("/") < 2:
            _fail(msg, strict, "sip-bad-via", via[:80])
            return
    if ";" not in first:
        return
    for param in first.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip(" \t").lower() == "branch":
            msg.via_1_branch = value.strip(" \t\r\n")
            return


def _identity(msg: SipMessage, get: Callable[[str], str | None]) -> None:
    """pid_user: first P-Asserted-Identity, else P-Preferred-Identity, else RPID."""
    for name in ("p-asserted-identity", "p-preferred-identity", "remote-party-id"):
        body = get(name)
        if body is None:
            continue
        try:
            uri, _ = name_addr(body, contact=True)
            msg.pid_user = parse_uri(uri)[0]
        except ValueError:
            msg.pid_user = ""
        return
