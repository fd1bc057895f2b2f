"""The values inside SIP header bodies: URIs, addresses, tags, digest usernames, X-OIP.

Pure code, stdlib only; ``decode/sip.py`` calls these for the few headers that feed a
capture column. Each function takes the text of one header body (or URI) and gives the
parts Kamailio's sipcapture module stores, as its parsers split them:

* ``parse_uri``: (user, host, port) of a sip:/sips:/tel:/urn: URI;
* ``address``: (user, host, port, rest) of a From/To/Contact-style value, ``name_addr``
  its URI and the text after it;
* ``tag_param``: the ``tag`` parameter of From/To header parameters;
* ``digest_user``: the user part of a digest ``username`` (Authorization, Proxy-Authorization);
* ``originator``: ``X-OIP: ip[:port]`` as (ip, port);
* ``lenient_uri``, ``lenient_address``: the same for a sip:/sips: URI whose host is an
  IPv6 address written without brackets, which ``parse_uri`` (like Kamailio) refuses.

``parse_uri``, ``name_addr`` and ``address`` take a fast path (one regular expression)
for the common shapes and fall back on general code that gives the same result for the
rest (tests/test_sip_hypothesis.py checks that). They raise ValueError for what does not
parse; the others never raise.
"""

from __future__ import annotations

import re

__all__ = ["parse_uri", "address", "name_addr", "tag_param", "digest_user", "originator",
           "lenient_uri", "lenient_address", "ipv6_host_port"]

# Fast paths for the common shapes; anything they do not match goes through the general
# code below, which gives the same result (tests/test_sip_hypothesis.py checks that).
# sip:/sips: URI without '@' after the host part: user, host, port.
_SIP_URI_RE = re.compile(
    r"(?i:sips?):(?:([^@:;?]*)(?::[^@;?]*)?@)?(\[[^\]@]*\]|[^:;?\[\]@]+)(?::(\d*))?(?:[;?][^@]*)?\Z",
    re.S,
)
# [display-name] <uri> rest, display name without '<' (quoted: anything but '<' around).
_NAME_ADDR_RE = re.compile(r'(?:[^"<]*|[^"<]*"(?:[^"\\]|\\.)*"[^<]*)<([^<>]*)>(.*)\Z', re.S)
# Both in one: [display-name] <sip:user@host:port;params> rest -> user, host, port, rest.
_SIP_NAME_ADDR_RE = re.compile(
    r'(?:[^"<]*|[^"<]*"(?:[^"\\]|\\.)*"[^<]*)<[ \t]*(?i:sips?):(?:([^@:;?<>]*)(?::[^@;?<>]*)?@)?'
    r"(\[[^\]@<>]*\]|[^:;?\[\]@<> \t]+)(?::(\d*))?(?:[;?][^@<>]*)?>(.*)\Z",
    re.S,
)

DIGITS = frozenset("0123456789")

_URI_SCHEMES_SIP = frozenset(("sip", "sips"))
_URI_SCHEMES_TEL = frozenset(("tel", "tels"))


def parse_uri(uri: str) -> tuple[str, str, str]:
    """(user, host, port) of a sip:/sips:/tel: URI, as Kamailio's parse_uri splits it.

    The host keeps the brackets of an IPv6 reference (``[2001:db8::1]``), as Kamailio
    does; a ``tel:`` URI has the number as user and no host. Raises ValueError.
    """
    m = _SIP_URI_RE.match(uri)
    if m is not None:
        user, host, port = m.groups()
        if port and (len(port) > 5 or int(port) > 65535):
            raise ValueError(f"port out of range in {uri[:80]!r}")
        return user or "", host, port or ""
    return _parse_uri_general(uri)


def _parse_uri_general(uri: str) -> tuple[str, str, str]:
    colon = uri.find(":")
    if colon <= 0:
        raise ValueError(f"no URI scheme in {uri[:80]!r}")
    scheme = uri[:colon].lower()
    rest = uri[colon + 1 :]
    if scheme in _URI_SCHEMES_SIP:
        at = rest.find("@")
        if at >= 0:
            user = rest[:at]
            pw = user.find(":")
            if pw >= 0:
                user = user[:pw]
            hostport = rest[at + 1 :]
        else:
            user = ""
            hostport = rest
        if hostport[:1] == "[":
            close = hostport.find("]")
            if close < 0:
                raise ValueError(f"unterminated IPv6 reference in {uri[:80]!r}")
            host = hostport[: close + 1]
            after = hostport[close + 1 :]
            if after[:1] == ":":
                port = after[1:]
                for ch in ";?":
                    i = port.find(ch)
                    if i >= 0:
                        port = port[:i]
            elif after and after[0] not in ";?":
                raise ValueError(f"junk after IPv6 reference in {uri[:80]!r}")
            else:
                port = ""
        else:
            end = len(hostport)
            i = hostport.find(";")
            if 0 <= i < end:
                end = i
            i = hostport.find("?")
            if 0 <= i < end:
                end = i
            host = hostport[:end]
            pc = host.find(":")
            if pc >= 0:
                port = host[pc + 1 :]
                host = host[:pc]
            else:
                port = ""
        if not host:
            raise ValueError(f"no host in {uri[:80]!r}")
        if port and not DIGITS.issuperset(port):
            raise ValueError(f"bad port in {uri[:80]!r}")
        if port and (len(port) > 5 or int(port) > 65535):
            raise ValueError(f"port out of range in {uri[:80]!r}")
        return user, host, port
    if scheme in _URI_SCHEMES_TEL:
        semi = rest.find(";")
        number = rest if semi < 0 else rest[:semi]
        if not number:
            raise ValueError(f"empty tel URI {uri[:80]!r}")
        return number, "", ""
    if scheme == "urn":
        return "", rest, ""
    raise ValueError(f"unsupported URI scheme {scheme[:20]!r}")


def address(body: str, contact: bool = False) -> tuple[str, str, str, str]:
    """(user, host, port, rest) of a From/To/Contact-style value. Raises ValueError."""
    m = _SIP_NAME_ADDR_RE.match(body)
    if m is not None:
        user, host, port, rest = m.groups()
        if port and (len(port) > 5 or int(port) > 65535):
            raise ValueError(f"port out of range in {body[:80]!r}")
        return user or "", host, port or "", rest
    uri, rest = name_addr(body, contact)
    user, host, port = parse_uri(uri)
    return user, host, port, rest


# One or more IPv6 groups separated by ':', and a dotted IPv4 address (RFC 4291 2.2).
_IPV6_GROUPS = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*\Z")
_IPV4_DOTTED = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                          r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\Z")


def _is_ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address in RFC 4291 2.2 text form (eight groups, or
    fewer with one ``::``, the last two may be a dotted IPv4 address); no zone id.

    Two regular expressions rather than ``ipaddress.IPv6Address``, several times slower:
    this runs for every URI that does not parse, garbage included."""
    head, double, tail = text.partition("::")
    if double and "::" in tail:
        return False
    width = 0
    last = tail if double else head
    if "." in last:
        colon = last.rfind(":")
        if colon == 0 or not _IPV4_DOTTED.match(last, colon + 1):
            return False
        width = 2  # the dotted address stands for two groups
        last = last[:colon] if colon > 0 else ""
        if double:
            tail = last
        else:
            head = last
    for part in (head, tail):
        if part:
            if _IPV6_GROUPS.match(part) is None:
                return False
            width += part.count(":") + 1
    return width < 8 if double else width == 8


def ipv6_host_port(hostport: str) -> tuple[str, str] | None:
    """(host, port) of an IPv6 address written without brackets, else None.

    Real phones write ``sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060`` where RFC 3261
    wants ``[fec0::...]:5060``. The text is the host when it is an IPv6 address as a
    whole; otherwise, when it has nine colon-separated groups, the first eight of which
    are an IPv6 address and the ninth a port (1 to 5 digits, at most 65535), the ninth
    is the port. Nothing else is guessed: ``fe80::1:5060`` is the address ``fe80::1:5060``
    (no port), ``host:5060:x`` is not an address at all (None). The host is kept as
    written, without brackets.
    """
    if hostport.count(":") < 2 or "[" in hostport or "]" in hostport:
        return None
    if _is_ipv6(hostport):
        return hostport, ""
    groups = hostport.split(":")
    if len(groups) == 9:
        port = groups[8]
        host = hostport[: -len(port) - 1]
        if (0 < len(port) <= 5 and DIGITS.issuperset(port) and int(port) <= 65535
                and _is_ipv6(host)):
            return host, port
    return None


def lenient_uri(uri: str) -> tuple[str, str, str] | None:
    """(user, host, port) of a sip:/sips: URI whose host is an IPv6 address without
    brackets (see ``ipv6_host_port``), else None. For what ``parse_uri`` refuses."""
    colon = uri.find(":")
    if colon <= 0 or uri[:colon].lower() not in _URI_SCHEMES_SIP:
        return None
    rest = uri[colon + 1 :]
    at = rest.find("@")
    user = ""
    if at >= 0:
        user = rest[:at]
        pw = user.find(":")
        if pw >= 0:
            user = user[:pw]
        rest = rest[at + 1 :]
    for ch in ";?":
        i = rest.find(ch)
        if i >= 0:
            rest = rest[:i]
    hp = ipv6_host_port(rest)
    if hp is None:
        return None
    return user, hp[0], hp[1]


def lenient_address(body: str, contact: bool = False) -> tuple[str, str, str, str] | None:
    """``address`` for a value whose URI ``lenient_uri`` recovers, else None (also
    when the value itself does not parse: an unclosed quote, '<' without '>')."""
    try:
        uri, rest = name_addr(body, contact)
    except ValueError:
        return None
    parts = lenient_uri(uri)
    if parts is None:
        return None
    return parts[0], parts[1], parts[2], rest


def _skip_quoted(body: str, start: int) -> int:
    """Index just past the closing quote of the quoted string opening at ``start``."""
    i = start + 1
    while True:
        q = body.find('"', i)
        if q < 0:
            raise ValueError("unterminated quoted string")
        b = q - 1
        while b > start and body[b] == "\\":
            b -= 1
        if (q - 1 - b) % 2 == 0:  # an even number of backslashes: a real quote
            return q + 1
        i = q + 1


def name_addr(body: str, contact: bool = False) -> tuple[str, str]:
    """(uri, rest) of ``[display-name] <uri> params`` or ``addr-spec params``.

    ``rest`` is what follows the URI (header parameters, further Contact values).
    Raises ValueError.
    """
    m = _NAME_ADDR_RE.match(body)
    if m is not None:
        uri, rest = m.groups()
        return uri.strip(" \t"), rest
    return _name_addr_general(body, contact)


def _name_addr_general(body: str, contact: bool = False) -> tuple[str, str]:
    lt = body.find("<")
    if '"' in body[: lt if lt >= 0 else len(body)]:
        q = body.find('"')
        end = _skip_quoted(body, q)
        lt = body.find("<", end)
        if lt < 0:
            raise ValueError("quoted display name without <uri>")
    if lt >= 0:
        gt = body.find(">", lt + 1)
        if gt < 0:
            raise ValueError("'<' without '>'")
        uri = body[lt + 1 : gt].strip(" \t")
        if "<" in uri:
            raise ValueError("'<' inside <uri>")
        return uri, body[gt + 1 :]
    # addr-spec: the URI ends at the first ';' (parameters then belong to the header,
    # RFC 3261 20.10), a blank, or a ',' between Contact values.
    s = body.strip(" \t")
    end = len(s)
    for ch in (";", " ", "\t", ",") if contact else (";", " ", "\t"):
        i = s.find(ch)
        if 0 <= i < end:
            end = i
    if not s or end == 0:
        raise ValueError("empty address")
    return s[:end], s[end:]


def tag_param(params: str) -> str:
    """Value of the ``tag`` parameter in ``;name=value`` header parameters."""
    if ";" not in params:
        return ""
    if params[:5] == ";tag=" and ";" not in params[5:]:
        return params[5:].strip(" \t\r\n")
    for param in params.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip(" \t").lower() == "tag":
            return value.strip(" \t\r\n")
    return ""



# searched in "," + params: a literal first character lets the regex engine skip ahead
_DIGEST_USERNAME = re.compile(r",[ \t\r\n]*username[ \t\r\n]*=[ \t\r\n]*", re.I | re.A)
_DIGEST_TOKEN = re.compile(r"[^, \t\r\n]*")
_DIGEST_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)


def digest_user(body: str) -> str:
    """User part (before '@') of the digest ``username`` of a credentials body."""
    s = body.lstrip(" \t")
    scheme, _, params = s.partition(" ")
    if scheme.lower() != "digest":
        return ""
    # the first ``username =`` that starts the parameter list or follows a comma
    m = _DIGEST_USERNAME.search("," + params)
    if m is None:
        return ""
    j = m.end() - 1
    if params[j : j + 1] == '"':
        q = _DIGEST_QUOTED.match(params, j)
        if q is None:
            return ""   # unterminated quoted string
        value = q.group(1).replace('\\"', '"')
    else:
        t = _DIGEST_TOKEN.match(params, j)     # always matches (maybe empty)
        value = t.group() if t is not None else ""
    at = value.find("@")
    return value if at < 0 else value[:at]


def originator(body: str) -> tuple[str, int]:
    """``X-OIP: ip[:port]`` -> (ip, port); ``[IPv6]:port`` and bare IPv6 handled."""
    s = body.strip(" \t")
    port_s = ""
    if s[:1] == "[":
        close = s.find("]")
        if close < 0:
            return s, 0
        ip = s[1:close]
        if s[close + 1 : close + 2] == ":":
            port_s = s[close + 2 :]
    elif s.count(":") == 1:
        ip, _, port_s = s.partition(":")
    else:  # no port, or a bare IPv6 address
        ip = s
    ip = ip.strip(" \t")
    n = 0
    for ch in port_s.lstrip(" \t"):
        if ch not in DIGITS:
            break
        n += 1
    port = int(port_s.lstrip(" \t")[:n]) if 0 < n <= 5 else 0
    return ip, port if port <= 65535 else 0
