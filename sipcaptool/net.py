"""Addresses, ports and sizes as an operator writes them, and the socket helpers.

One grammar for every address a setting or an option takes::

    endpoint := [TRANSPORT ":"] [HOST] [":" PORTS]  |  [TRANSPORT ":"] PORTS
    HOST     := IPv4 | "[" IPv6 "]" | IPv6 (bare, only without a port) | name
    PORTS    := PORT ["-" PORT]

:func:`parse_endpoint` reads it; the settings keep their own accepted forms as thin
wrappers around it, which say what they allow:

=================================  ==========  =====  =======  =========  =============
wrapper                            transport   ports  port 0   host       port missing
=================================  ==========  =====  =======  =========  =============
``parse_ports`` (replay --ports)   --          list   no       --         --
``sources.live.parse_listen``      --          range  no       IP         5060
(``raw_socket_listen``)
``sources.hep_listener.            udp|tcp     one    yes      IP         error
parse_listen`` (hep --listen)      required                    (0.0.0.0)
``senders.hep.parse_target``       udp|tcp     one    no       IP, name   error
(live --hep-to)                    required
``parse_hostport`` (--metrics)     --          one    yes      any        error
                                                               (127.0.0.1)
=================================  ==========  =====  =======  =========  =============

An IPv6 host followed by a port is written in brackets (``[::1]:9060``): ``::1:9060``
is itself an IPv6 address, so a bare IPv6 address never carries a port. Every error is
a :class:`EndpointError` (a ``ConfigError``, exit status 2) that names the setting, the
value and what is allowed: ``--listen 'udp:::1:5': write an IPv6 host in brackets …``.

Sizes (``--rcvbuf 64M``, ``spool_max_bytes = "1G"``) are read by :func:`parse_size`:
a whole or decimal number with an optional K, M, G or T (powers of 1024, an optional
``B`` or ``iB`` after it), case-insensitive.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "SO_RCVBUFFORCE",
    "Endpoint",
    "EndpointError",
    "parse_endpoint",
    "parse_hostport",
    "parse_ports",
    "parse_size",
    "set_rcvbuf",
    "size_bytes",
]

MAX_PORT = 65535
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; not in every Python build


class EndpointError(ConfigError, ValueError):
    """An address, port list or size that does not follow the grammar (exit status 2).

    Also a ``ValueError``, as a malformed number is, for callers that catch that.
    """


@dataclass(frozen=True)
class Endpoint:
    """What an endpoint text says; the parts it leaves out are empty (``""``, None).

    Attributes:
        transport: ``udp``, ``tcp``… (lower case), or ``""`` when none was written.
        host: the host without brackets, or ``""``.
        port: the port, or the first port of a range; None when none was written.
        port_hi: the last port of a range (``port`` when one port was written).
    """

    transport: str
    host: str
    port: int | None
    port_hi: int | None


def _fail(setting: str, text: str, problem: str, expected: str) -> EndpointError:
    return EndpointError(f"{setting} {text!r}: {problem}; expected {expected}")


def _port_range(setting: str, text: str, ports: str, *, ranges: bool, min_port: int,
                expected: str) -> tuple[int, int]:
    """``PORT`` or (with ``ranges``) ``LOW-HIGH``, each ``min_port``..65535."""
    lo_text, dash, hi_text = ports.partition("-")
    what = "a port or a range like 5060-5090" if ranges else "a port number"
    if dash and not ranges:
        raise _fail(setting, text, f"{ports!r} is not a port number (no ranges here)", expected)
    if not (lo_text.strip().isdigit() and (not dash or hi_text.strip().isdigit())):
        raise _fail(setting, text, f"{ports!r} is not {what}", expected)
    lo = int(lo_text)
    hi = int(hi_text) if dash else lo
    if not (min_port <= lo <= MAX_PORT and min_port <= hi <= MAX_PORT):
        bad = lo if not min_port <= lo <= MAX_PORT else hi
        raise _fail(setting, text, f"port {bad} is out of range", expected)
    if lo > hi:
        raise _fail(setting, text, f"the range {ports!r} goes from high to low", expected)
    return lo, hi


def parse_endpoint(text: str, setting: str, *, expected: str,
                   transports: Collection[str] = (), ranges: bool = False,
                   min_port: int = 1, ip_only: bool = False, need_host: bool = False,
                   need_port: bool = False) -> Endpoint:
    """Read ``text`` by the module's grammar; the caller decides what must be there.

    Args:
        text: what the operator wrote (blanks around it are ignored).
        setting: the option or setting, for messages (``--listen``, ``raw_socket_listen``).
        expected: the accepted forms, for messages (``udp:HOST:PORT or tcp:HOST:PORT``).
        transports: the allowed ``TRANSPORT:`` prefixes; when given, one is required.
        ranges: a ``LOW-HIGH`` port range is allowed.
        min_port: the lowest port allowed (0 where the system picks a free port).
        ip_only: the host, when given, must be an IP address (not a name).
        need_host: a host must be written.
        need_port: a port must be written.

    Raises:
        EndpointError: what is wrong, naming ``setting`` and ``text``.
    """
    rest = text.strip()
    transport = ""
    if transports:
        prefix, colon, rest = rest.partition(":")
        transport = prefix.strip().lower()
        if not colon or transport not in transports:
            raise _fail(setting, text, "no transport" if not colon
                        else f"unknown transport {prefix!r}", expected)
    host = ports = ""
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise _fail(setting, text, "missing ']' after the IPv6 address", expected)
        if tail and not tail.startswith(":"):
            raise _fail(setting, text, f"{tail!r} after ']' is not ':PORT'", expected)
        ports = tail[1:]
    elif rest.count(":") > 1:
        host = rest  # a bare IPv6 address: it cannot carry a port (brackets do)
    elif ":" in rest:
        host, _, ports = rest.partition(":")
    elif re.fullmatch(r"\s*\d+\s*(?:-\s*\d+\s*)?", rest):
        ports = rest
    else:
        host = rest
    host = host.strip()
    lo: int | None = None
    hi: int | None = None
    if ports.strip():
        lo, hi = _port_range(setting, text, ports.strip(), ranges=ranges, min_port=min_port,
                             expected=expected)
    if host and (ip_only or ":" in host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise _fail(setting, text, f"{host!r} is not an IP address", expected) from None
    if need_port and lo is None:
        if ":" in host and not rest.endswith("]"):
            raise _fail(setting, text, "write an IPv6 host in brackets, e.g. [::1]:9060",
                        expected)
        raise _fail(setting, text, "no port", expected)
    if need_host and not host:
        raise _fail(setting, text, "no host", expected)
    return Endpoint(transport, host, lo, hi)


def parse_hostport(text: str, default_host: str = "127.0.0.1",
                   setting: str = "--metrics") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port); port 0 picks a free one.

    Raises:
        EndpointError (also a ValueError): malformed.
    """
    expected = "HOST:PORT, [IPv6]:PORT or PORT (0-65535)"
    ep = parse_endpoint(text, setting, expected=expected, min_port=0, need_port=True)
    assert ep.port is not None  # need_port
    return ep.host or default_host, ep.port


def parse_ports(value: str | None, setting: str = "--ports") -> frozenset[int] | None:
    """``5060,5080-5090`` -> the ports (1-65535); None or ``""`` -> None (any port).

    Raises:
        EndpointError: a part that is not a port or a low-high range.
    """
    if not value:
        return None
    expected = "ports 1-65535 or ranges low-high, comma-separated, e.g. 5060,5080-5090"
    ports: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        lo, hi = _port_range(setting, value, part, ranges=True, min_port=1, expected=expected)
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size_bytes(text: str) -> int | None:
    """``'1073741824'``, ``'512M'``, ``'2GiB'``, ``'64k'`` -> bytes; None if not a size."""
    m = _SIZE.fullmatch(text)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_size(text: str, setting: str, where: str = "") -> int:
    """:func:`size_bytes`, or an :class:`EndpointError` naming ``setting`` (and ``where``
    the value came from, as ``" (from FILE)"``)."""
    n = size_bytes(text)
    if n is None:
        raise EndpointError(f"{setting} {text!r}{where}: expected bytes, e.g. 1073741824 "
                            "or 1G (suffixes K, M, G, T: powers of 1024)")
    return n


def set_rcvbuf(sock: socket.socket, want: int) -> int:
    """Ask for a ``want``-byte receive buffer; return what the kernel reports.

    ``SO_RCVBUFFORCE`` (root / CAP_NET_ADMIN) ignores ``net.core.rmem_max``; without the
    privilege we fall back to ``SO_RCVBUF``, which the kernel silently caps. Linux
    reports double the requested value (its bookkeeping overhead). ``want`` 0 or less
    leaves the buffer as it is.
    """
    if want > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, want)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            except OSError:
                pass
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
