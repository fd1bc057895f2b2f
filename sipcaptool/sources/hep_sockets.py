"""The HEP collector's sockets: the ``--listen`` grammar, binding UDP and TCP listeners
(one copy per worker with ``SO_REUSEPORT``), large receive buffers, TCP keepalive on
accepted connections, and the open-file limit a collector of many connections needs.

:class:`~sipcaptool.sources.hep_listener.HepCollector` reads from what this module opens.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import termios
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CaptureError
from ..net import parse_endpoint, set_rcvbuf

log = logging.getLogger("sipcaptool.hep")

MAX_CONNECTIONS = 4096   # default of the tcp_max_connections setting
KEEPALIVE_IDLE = 60      # TCP keepalive: seconds of silence before the first probe
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_COUNT = 6      # unanswered probes before the kernel gives up

__all__ = ["ListenSpec", "Listener", "MAX_CONNECTIONS", "open_listeners", "parse_listen",
           "queued_bytes", "raise_open_file_limit", "set_keepalive"]


@dataclass(frozen=True)
class ListenSpec:
    """One ``--listen`` value: ``udp:HOST:PORT`` / ``tcp:HOST:PORT`` / ``tls:HOST:PORT``
    (IPv6 in brackets)."""

    transport: str
    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def label(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port if port is None else port}"


def parse_listen(text: str) -> ListenSpec:
    """``udp:0.0.0.0:9060``, ``tcp:[::]:9061``, ``tls:0.0.0.0:9062``, ``udp:9060`` (all
    IPv4 addresses). ``tls`` is HEP over TCP inside TLS (``--tls-cert``/``--tls-key``).

    The grammar of :mod:`sipcaptool.net`: an IP address (IPv6 in brackets), a port
    0-65535 (0: one the system picks), the transport and the port required.

    Raises:
        ConfigError: naming ``--listen``, the value and the forms allowed.
    """
    ep = parse_endpoint(text, "--listen", expected="udp:HOST:PORT, tcp:HOST:PORT or "
                        "tls:HOST:PORT, port 0-65535 (IPv6 hosts in brackets: udp:[::]:9060)",
                        transports=("udp", "tcp", "tls"), min_port=0, ip_only=True,
                        need_port=True)
    assert ep.port is not None  # need_port
    return ListenSpec(ep.transport, ep.host or "0.0.0.0", ep.port)


@dataclass
class Listener:
    """Per-listener counters, reported in the summary."""

    spec: ListenSpec
    port: int = 0                 # the bound port (resolves port 0)
    rcvbuf: int = 0               # effective receive buffer, bytes (as the kernel reports it)
    packets: int = 0
    bytes: int = 0
    connections: int = 0          # TCP: accepted connections
    closed_bad: int = 0           # TCP: connections closed because of a bad stream
    tls_refused: int = 0          # TLS: connections whose handshake failed or timed out

    @property
    def label(self) -> str:
        return self.spec.label(self.port)

    def report(self) -> dict[str, Any]:
        d: dict[str, Any] = {"listen": self.label, "packets": self.packets, "bytes": self.bytes}
        if self.spec.transport != "udp":
            d["connections"] = self.connections
            d["closed_bad_stream"] = self.closed_bad
        if self.spec.transport == "tls":
            d["tls_refused"] = self.tls_refused
        return d


def _bind(spec: ListenSpec, port: int, rcvbuf: int, reuseport: bool,
          v6only: bool) -> tuple[socket.socket, int]:
    kind = socket.SOCK_DGRAM if spec.transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(spec.family, kind)
    try:
        if spec.transport != "udp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if spec.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        got = set_rcvbuf(sock, rcvbuf) if spec.transport == "udp" else 0
        sock.bind((spec.host, port))
        if spec.transport != "udp":
            sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CaptureError(f"cannot listen on {spec.label(port)}: {e.strerror or e}") from None
    return sock, got


def open_listeners(specs: Iterable[ListenSpec], rcvbuf: int, copies: int = 1,
                   ) -> list[list[tuple[Listener, socket.socket]]]:
    """Bind every spec ``copies`` times (SO_REUSEPORT when copies > 1).

    Returns one list of (Listener, socket) per copy, so each worker process gets its own
    socket for every address and the kernel spreads datagrams/connections among them.
    Port 0 is resolved by the first copy and reused by the others. A capped receive
    buffer is logged as a warning once per listener.

    An IPv6 listener is dual-stack unless an IPv4 listener of the same transport and
    port is also given (then it is IPv6-only so both can bind).
    """
    specs = list(specs)
    out: list[list[tuple[Listener, socket.socket]]] = [[] for _ in range(copies)]
    try:
        for spec in specs:
            stream = spec.transport != "udp"
            v6only = spec.family == socket.AF_INET6 and any(
                (s.transport != "udp") == stream and s.port == spec.port
                and s.family == socket.AF_INET for s in specs)
            port = spec.port
            for c in range(copies):
                sock, got = _bind(spec, port, rcvbuf, copies > 1, v6only)
                port = sock.getsockname()[1]
                out[c].append((Listener(spec, port, got), sock))
            if spec.transport == "udp" and rcvbuf > 0 and got < rcvbuf:
                log.warning("%s: receive buffer is %d bytes, %d asked: the kernel caps it at "
                            "net.core.rmem_max (raise it with sysctl -w net.core.rmem_max=%d, "
                            "or run as root so SO_RCVBUFFORCE applies); bursts may be lost",
                            spec.label(port), got // 2, rcvbuf, rcvbuf)
    except BaseException:
        for row in out:
            for _l, s in row:
                s.close()
        raise
    return out


def raise_open_file_limit(want: int = MAX_CONNECTIONS + 512) -> int:
    """Raise the soft limit of open files towards ``want`` (never past the hard limit):
    every TCP agent holds a descriptor, and a shell's usual 1024 is less than the
    connections the collector takes. Returns the soft limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        return soft
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        return -1


def set_keepalive(sock: socket.socket) -> None:
    """TCP keepalive with short timers (see the module doc); best effort."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
            opt = getattr(socket, name, None)
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:  # pragma: no cover - not every platform has every option
        pass


def queued_bytes(sock: socket.socket) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD); 0 if unknown."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])
    except OSError:
        return 0
