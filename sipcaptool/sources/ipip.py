"""IPIP capture: raw IP sockets receiving what a tunnel (or a capture agent) sends us.

Kamailio's ``raw_ipip_capture_on``: the monitored traffic arrives encapsulated in IP
(protocol 4, IPv4-in-IP) addressed to the capture host. sipcaptool also opens protocol
41 (IPv6-in-IP) so inner IPv6 is captured, which the module does not do.

An AF_INET raw socket hands us the outer IPv4 header followed by the inner packet; the
outer header is cut off and the inner packet goes to ``PacketDecoder`` with the raw-IP
link type, so everything after the tunnel is decoded exactly as for a capture file
(inner fragments, TCP streams, IPv4/IPv6). The kernel has already reassembled outer
fragments. For an IPv6 listen address AF_INET6 raw sockets are used; they hand us the
inner packet directly.

The socket is bound to the listen address (so only traffic sent to it is read) and,
when given, to one interface (SO_BINDTODEVICE). With ``bpf`` a classic BPF program
(``sources.bpf.ipip_program``) is attached so that only tunnelled SIP on the port range
wakes us up; with several workers each worker's program also selects its share of the
flows by address hash.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
import time

from ..decode.ip import IPPROTO_IPIP, IPPROTO_IPV6
from ..decode.link import DLT_RAW  # a packet starting with its IPv4 or IPv6 header
from ..errors import CaptureError
from ..net import set_rcvbuf
from . import bpf

SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
RECV_BUF = 65535 + 64
BATCH = 256

_unpack_tv = struct.Struct("@ll").unpack_from


def permission_hint(what: str) -> str:
    return (f"{what}: permission denied; run as root or grant the capability: "
            "setcap cap_net_raw,cap_net_admin+eip <python binary> (cap_net_raw opens raw and "
            "packet sockets, cap_net_admin sets promiscuous mode and buffer sizes)")


class IpipSource:
    """Raw sockets for IP-in-IP (protocol 4) and IPv6-in-IP (protocol 41).

    Args:
        address: the listen address ('' for any IPv4 address).
        interface: bind to this interface ('' for any).
        ports: ``(lo, hi)`` port range for the socket filter, or None (no port filter).
        bpf_on: attach the socket filter.
        share: ``(i, n)`` this worker's share of the flows, or None.
        rcvbuf: socket receive buffer in bytes (0 leaves the system default).
    """

    linktype = DLT_RAW

    def __init__(self, address: str = "", interface: str = "", ports: tuple[int, int] | None = None,
                 bpf_on: bool = True, share: tuple[int, int] | None = None,
                 rcvbuf: int = 0) -> None:
        self.address = address
        self.interface = interface
        self.socks: list[socket.socket] = []
        family = socket.AF_INET
        if address:
            try:
                family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            except ValueError:
                raise CaptureError(f"--raw-socket-listen address {address!r} is not an IP "
                                   "address") from None
        self.outer_ipv4 = family == socket.AF_INET
        try:
            for proto in (IPPROTO_IPIP, IPPROTO_IPV6):
                s = self._open(family, proto, ports, bpf_on, share, rcvbuf)
                self.socks.append(s)
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        self._by_fd = {s.fileno(): s for s in self.socks}
        for s in self.socks:
            self._poll.register(s.fileno(), select.POLLIN)
        self.filter_installed = bpf_on or share is not None

    def _open(self, family: int, proto: int, ports: tuple[int, int] | None, bpf_on: bool,
              sel: tuple[int, int] | None, rcvbuf: int) -> socket.socket:
        what = f"IPIP raw socket (protocol {proto})"
        try:
            s = socket.socket(family, socket.SOCK_RAW, proto)
        except PermissionError:
            raise CaptureError(permission_hint(f"cannot open the {what}")) from None
        except OSError as e:
            raise CaptureError(f"cannot open the {what}: {e.strerror}") from None
        try:
            if self.interface:
                try:
                    s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE,
                                 self.interface.encode() + b"\0")
                except OSError as e:
                    if e.errno == errno.ENODEV:
                        raise CaptureError(f"--raw-interface {self.interface}: no such "
                                           "interface") from None
                    if e.errno == errno.EPERM:
                        raise CaptureError(permission_hint(
                            f"cannot bind the {what} to {self.interface}")) from None
                    raise CaptureError(f"cannot bind the {what} to {self.interface}: "
                                       f"{e.strerror}") from None
            if self.address:
                try:
                    s.bind((self.address, 0))
                except OSError as e:
                    raise CaptureError(f"cannot bind the {what} to {self.address}: {e.strerror} "
                                       "(the address must be one of this host's)") from None
            if bpf_on or sel is not None:
                lo, hi = ports if (bpf_on and ports) else (None, None)
                try:
                    bpf.attach_filter(s, bpf.ipip_program(lo, hi, self.outer_ipv4, sel))
                except OSError as e:
                    raise CaptureError(f"cannot attach the socket filter to the {what}: "
                                       f"{e.strerror}") from None
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            set_rcvbuf(s, rcvbuf)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        # anything queued before the filter was attached is drained unfiltered
        self._drain(s)
        return s

    @staticmethod
    def _drain(s: socket.socket) -> None:
        try:
            while True:
                s.recv(RECV_BUF)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass

    def read(self, timeout_ms: int, out: list[tuple[int, bytes]]) -> int:
        """Wait up to ``timeout_ms`` and append ``(ts_us, inner packet)`` for what arrived.

        Returns the number of packets read (at most a batch per socket).
        """
        try:
            ready = self._poll.poll(timeout_ms)
        except InterruptedError:
            return 0
        n = 0
        cmsg_space = socket.CMSG_SPACE(16)
        strip = self.outer_ipv4
        for fd, _ev in ready:
            s = self._by_fd[fd]
            for _ in range(BATCH):
                try:
                    data, anc, _flags, _addr = s.recvmsg(RECV_BUF, cmsg_space)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    raise CaptureError(f"IPIP socket read failed: {e.strerror}") from None
                ts = 0
                for level, ctype, cdata in anc:
                    if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMP and len(cdata) >= 16:
                        sec, usec = _unpack_tv(cdata)
                        ts = sec * 1_000_000 + usec
                if not ts:
                    ts = time.time_ns() // 1000
                if strip:
                    if not data:
                        continue
                    data = data[(data[0] & 0x0F) * 4:]
                out.append((ts, data))
                n += 1
        return n

    def close(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []
