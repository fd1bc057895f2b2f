"""Agent mode: send every captured message to a HEP collector as HEPv3.

Targets are ``udp:HOST:PORT`` and/or ``tcp:HOST:PORT`` (at most one of each; an IPv6
host goes in brackets, ``udp:[::1]:9060``).

* UDP only: one datagram per message.
* TCP only: every message goes over one TCP connection (HEP frames carry their own
  length, so collectors split the stream).
* Both: UDP, and TCP for the messages too large for a datagram.

Size limits: a UDP datagram holds 65,507 bytes (IPv4; 65,527 over IPv6), a HEP packet
65,535 (its length field). A message whose HEP packet does not fit where it has to go
is sent with its payload zlib-compressed (HEPv3 chunk 0x0010, which ``sipcaptool hep``
and Homer collectors read); if even that does not fit it is counted as
``dropped:hep-too-large`` and a warning says so once. A message is never cut.

Counters: ``hep_out:sent_udp``, ``hep_out:sent_tcp``, ``hep_out:compressed``,
``dropped:hep-too-large``, ``dropped:hep-send-error``, ``dropped:hep-tcp-down``,
``hep_out:reconnects``.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

from ..encode.hep import encode_hep3
from ..errors import ConfigError
from ..net import parse_endpoint
from ..record import CapturedMessage
from ..stats import Stats

__all__ = ["HepSender", "parse_target"]

log = logging.getLogger("sipcaptool.live")

#: a socket address as getaddrinfo gives it: (host, port) or (host, port, flow, scope)
_Address = tuple[Any, ...]

UDP_MAX = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
RECONNECT_EVERY = 1.0  # seconds between TCP connection attempts while it is down


def parse_target(text: str) -> tuple[str, str, int]:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` -> (transport, host, port).

    The grammar of :mod:`sipcaptool.net`: a host name or an IP address (IPv6 in
    brackets: ``udp:[::1]:9060``), a port 1-65535, both required.

    Raises:
        ConfigError: naming ``--hep-to``, the value and the forms allowed.
    """
    ep = parse_endpoint(text, "--hep-to", expected="udp:HOST:PORT or tcp:HOST:PORT, port "
                        "1-65535 (IPv6 hosts in brackets: udp:[::1]:9060)",
                        transports=("udp", "tcp"), need_host=True, need_port=True)
    assert ep.port is not None  # need_port
    return ep.transport, ep.host, ep.port


def _resolve(host: str, port: int, socktype: int) -> tuple[socket.AddressFamily, _Address]:
    try:
        info = socket.getaddrinfo(host, port, 0, socktype)
    except socket.gaierror as e:
        raise ConfigError(f"--hep-to {host}:{port}: cannot resolve {host!r} ({e.strerror})") from None
    fam, _t, _p, _c, addr = info[0]
    return fam, addr


class HepSender:
    """Encode and send messages to one UDP and/or one TCP HEP target."""

    def __init__(self, targets: list[str], stats: Stats, *, capture_id: int = 0,
                 auth_key: str | None = None, node_name: str | None = None) -> None:
        parsed = [parse_target(t) for t in targets]
        kinds = [p[0] for p in parsed]
        for k in ("udp", "tcp"):
            if kinds.count(k) > 1:
                raise ConfigError(f"--hep-to: at most one {k} target (got {kinds.count(k)})")
        self.stats = stats
        self.capture_id = capture_id
        self.auth_key = auth_key.encode() if auth_key else None
        self.node_name = node_name
        self.udp: socket.socket | None = None
        self.udp_max = 0
        self.tcp: socket.socket | None = None
        self.tcp_addr: _Address | None = None
        self.tcp_family = socket.AF_INET
        self._next_connect = 0.0
        self.warned_too_large = False
        for proto, host, port in parsed:
            if proto == "udp":
                fam, addr = _resolve(host, port, socket.SOCK_DGRAM)
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.connect(addr)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                except OSError:
                    pass
                self.udp = s
                self.udp_max = UDP_MAX.get(fam, 65507)
            else:
                self.tcp_family, self.tcp_addr = _resolve(host, port, socket.SOCK_STREAM)
        if self.tcp_addr is not None:
            self._connect()

    def _connect(self) -> socket.socket | None:
        """Connect to the TCP target (at most once per RECONNECT_EVERY); the new
        connection, now :attr:`tcp`, or None."""
        now = time.monotonic()
        addr = self.tcp_addr
        if addr is None or now < self._next_connect:
            return None
        self._next_connect = now + RECONNECT_EVERY
        s = socket.socket(self.tcp_family, socket.SOCK_STREAM)
        s.settimeout(5.0)
        try:
            s.connect(addr)
        except OSError as e:
            s.close()
            log.warning("HEP target tcp %s: cannot connect (%s); retrying every %.0f s",
                        addr, e.strerror or e, RECONNECT_EVERY)
            return None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tcp is not None:
            self.stats["hep_out:reconnects"] += 1
        self.tcp = s
        return s

    def _send_tcp(self, pkt: bytes) -> None:
        tcp = self.tcp
        if tcp is None or tcp.fileno() < 0:
            tcp = self._connect()
            if tcp is None:
                self.stats["dropped:hep-tcp-down"] += 1
                return
        try:
            tcp.sendall(pkt)
            self.stats["hep_out:sent_tcp"] += 1
        except OSError as e:
            log.warning("HEP target tcp %s: send failed (%s); reconnecting", self.tcp_addr,
                        e.strerror or e)
            tcp.close()
            self._next_connect = 0.0
            tcp = self._connect()
            if tcp is not None:
                try:
                    tcp.sendall(pkt)
                    self.stats["hep_out:sent_tcp"] += 1
                    return
                except OSError:
                    tcp.close()
            self.stats["dropped:hep-send-error"] += 1

    def _encode(self, msg: CapturedMessage, compress: bool) -> bytes | None:
        try:
            return encode_hep3(msg, capture_id=self.capture_id, auth_key=self.auth_key,
                               node_name=self.node_name, compress=compress)
        except ValueError:  # more than a HEP packet can hold
            return None

    def send(self, msg: CapturedMessage) -> None:
        pkt = self._encode(msg, False)
        if pkt is not None and self._try(pkt):
            return
        # too large for a datagram (and no TCP target), or for HEP itself: the
        # zlib-compressed payload chunk (0x0010) often fits
        cpkt = self._encode(msg, True)
        if cpkt is not None and self._try(cpkt):
            self.stats["hep_out:compressed"] += 1
            return
        self._too_large(len(msg.payload))

    def _try(self, pkt: bytes) -> bool:
        """Send ``pkt`` over UDP if it fits a datagram, else over TCP; False: neither."""
        if self.udp is not None and len(pkt) <= self.udp_max:
            try:
                self.udp.send(pkt)
                self.stats["hep_out:sent_udp"] += 1
                return True
            except OSError as e:
                if e.errno != errno.EMSGSIZE:
                    # ECONNREFUSED (nobody listens yet), ENOBUFS ...
                    self.stats["dropped:hep-send-error"] += 1
                    return True
        if self.tcp_addr is not None:
            self._send_tcp(pkt)
            return True
        return False

    def _too_large(self, size: int) -> None:
        self.stats["dropped:hep-too-large"] += 1
        if not self.warned_too_large:
            self.warned_too_large = True
            if self.tcp_addr is None:
                log.warning("a SIP message of %d bytes does not fit in one HEP UDP datagram, "
                            "even compressed, and was not forwarded (add a tcp: --hep-to "
                            "target to send such messages over TCP); further ones are only "
                            "counted (dropped:hep-too-large)", size)
            else:
                log.warning("a SIP message of %d bytes does not fit in a HEP packet (65,535 "
                            "bytes), even compressed, and was not forwarded; further ones are "
                            "only counted (dropped:hep-too-large)", size)

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.udp = self.tcp = None
