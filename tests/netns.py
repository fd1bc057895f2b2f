"""Network namespaces and veth pairs for live-capture tests, plus a small SIP sender.

``VethPair`` builds two namespaces joined by a veth pair, with unique names per use and
guaranteed cleanup (deleting a namespace deletes its interfaces)::

    with VethPair() as net:
        net.run_a(["ip", "addr"])                      # in namespace A
        proc = net.popen_b(sipcaptool("live", "-i", net.if_b, ...))
        net.send_udp(payloads, dport=5060)           # from A to B

Traffic only ever flows inside the namespaces made here. The module also runs as a
script inside a namespace (``python tests/netns.py udp ...``): the sender used by the
tests and by ``bench/live.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_seq = itertools.count(1)


def have_netns() -> tuple[bool, str]:
    """Can we make namespaces here? (root, the ip tool, a kernel that allows it)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return False, "needs the ip tool (iproute2)"
    name = f"sct{os.getpid() % 100000}p{next(_seq)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


def sipcaptool_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sipcaptool", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("XDG_RUNTIME_DIR", None)
    return e


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


class VethPair:
    """Namespaces A and B, veth ``if_a`` (in A) <-> ``if_b`` (in B), addressed.

    Args:
        mtu: MTU of both ends.
        ipv6: also give fd00:<n>::1/::2.
        b_in_root: leave ``if_b`` in the current namespace, without an address (for
            tests whose database is on the host's loopback). Then A gets a permanent
            neighbour entry for B's address with a MAC nobody has, so A's frames reach
            ``if_b`` and the host stack ignores them (other host).
    """

    def __init__(self, mtu: int = 1500, ipv6: bool = True, b_in_root: bool = False) -> None:
        tag = secrets.token_hex(3)
        self.ns_a = f"sct{tag}a"
        self.ns_b = None if b_in_root else f"sct{tag}b"
        self.if_a = f"sc{tag}a"
        self.if_b = f"sc{tag}b"
        n = int(tag[:2], 16)
        self.ip_a = f"10.213.{n}.1"
        self.ip_b = f"10.213.{n}.2"
        self.ip6_a = f"fd00:213:{n:x}::1"
        self.ip6_b = f"fd00:213:{n:x}::2"
        self.mtu = mtu
        self.ipv6 = ipv6
        self.b_in_root = b_in_root
        self._procs: list[subprocess.Popen] = []

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> VethPair:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        sh("ip", "netns", "add", self.ns_a)
        if self.ns_b:
            sh("ip", "netns", "add", self.ns_b)
        sh("ip", "link", "add", self.if_a, "mtu", str(self.mtu), "type", "veth",
           "peer", "name", self.if_b, "mtu", str(self.mtu))
        sh("ip", "link", "set", self.if_a, "netns", self.ns_a)
        if self.ns_b:
            sh("ip", "link", "set", self.if_b, "netns", self.ns_b)
        self.a("ip", "link", "set", "lo", "up")
        self.a("ip", "addr", "add", f"{self.ip_a}/24", "dev", self.if_a)
        if self.ns_b:
            self.b("ip", "link", "set", "lo", "up")
            self.b("ip", "addr", "add", f"{self.ip_b}/24", "dev", self.if_b)
        else:
            sh("sysctl", "-qw", f"net.ipv6.conf.{self.if_b}.disable_ipv6=1", check=False)
        if self.ipv6 and self.mtu < 1280:
            self.ipv6 = False  # IPv6 needs an MTU of at least 1280
        if self.ipv6:
            self.a("ip", "-6", "addr", "add", f"{self.ip6_a}/64", "dev", self.if_a, "nodad")
            if self.ns_b:
                self.b("ip", "-6", "addr", "add", f"{self.ip6_b}/64", "dev", self.if_b, "nodad")
        self.a("ip", "link", "set", self.if_a, "up")
        if self.ns_b:
            self.b("ip", "link", "set", self.if_b, "up")
        else:
            sh("ip", "link", "set", self.if_b, "up")
            self.a("ip", "neigh", "replace", self.ip_b, "lladdr", "02:00:5e:00:53:99",
                   "dev", self.if_a, "nud", "permanent")
        if self.ipv6 and self.ns_b:
            # wait until both IPv6 addresses are usable
            for _ in range(50):
                r = self.a("ip", "-6", "addr", "show", "dev", self.if_a, check=False)
                if "tentative" not in r.stdout:
                    break
                time.sleep(0.05)

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None and not f.closed:
                    f.close()
        if self.b_in_root:
            sh("ip", "link", "del", self.if_b, check=False)
        for ns in (self.ns_a, self.ns_b):
            if ns:
                sh("ip", "netns", "del", ns, check=False)

    # -- running things ----------------------------------------------------------------
    def _prefix(self, ns: str | None) -> list[str]:
        return ["ip", "netns", "exec", ns] if ns else []

    def a(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self._prefix(self.ns_a), *cmd, check=check)

    def b(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self._prefix(self.ns_b), *cmd, check=check)

    def popen(self, side: str, cmd: list[str], **kw: Any) -> subprocess.Popen:
        ns = self.ns_a if side == "a" else self.ns_b
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("env", env())
        p = subprocess.Popen(self._prefix(ns) + cmd, text=True, **kw)
        self._procs.append(p)
        return p

    def run(self, side: str, cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
        ns = self.ns_a if side == "a" else self.ns_b
        kw.setdefault("env", env())
        return subprocess.run(self._prefix(ns) + cmd, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def sender(self, *args: str, side: str = "a", timeout: float = 120) -> dict:
        """Run this module's sender in a namespace; returns its JSON report."""
        r = self.run(side, [sys.executable, os.path.abspath(__file__), *args], timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"sender {args}: {r.stderr.strip()}")
        return json.loads(r.stdout or "{}")


@contextlib.contextmanager
def live_capture(net: VethPair, *args: str, side: str = "b", ready_timeout: float = 15
                 ) -> Iterator[subprocess.Popen]:
    """Start ``sipcaptool live ARGS`` in a namespace and wait until it captures.

    The capture prints "sipcaptool: capturing on ..." on stderr once its sockets are
    open; the block runs after that. On leaving, the process is sent SIGTERM (unless it
    already ended) and waited for; ``proc.out``/``proc.err`` hold its output.
    """
    p = net.popen(side, sipcaptool_cmd("live", *args))
    deadline = time.monotonic() + ready_timeout
    line = ""
    assert p.stderr is not None
    os.set_blocking(p.stderr.fileno(), False)
    buf = ""
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        try:
            chunk = p.stderr.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buf += chunk
            if "capturing on" in buf:
                line = buf
                break
        time.sleep(0.05)
    os.set_blocking(p.stderr.fileno(), True)
    if not line:
        if p.poll() is None:
            p.kill()
        out, err = p.communicate(timeout=30)
        raise RuntimeError(f"sipcaptool live did not start (exit {p.returncode}): {buf}{err}{out}")
    time.sleep(0.3)  # the workers join the fanout group right after the message
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(15)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        p.out = out  # type: ignore[attr-defined]
        p.err = buf + err  # type: ignore[attr-defined]


def replay_capture(n: int) -> tuple[bytes, list[bytes], list[tuple[int, bytes]]]:
    """A pcap of ``n`` realistic SIP messages, in pieces to write or feed as a test
    wants: (file header, messages, (ts µs, frame) records; :func:`pcap_records`)."""
    import io

    from sipcaptool.testing.pcapgen import PcapWriter, realistic_messages, udp4_frame

    buf = io.BytesIO()
    PcapWriter(buf)
    msgs, recs = [], []
    for ts, (src, sport, dst, dport, msg) in realistic_messages(n):
        msgs.append(msg)
        recs.append((ts, udp4_frame(src, sport, dst, dport, msg)))
    return buf.getvalue(), msgs, recs


def pcap_records(recs: list[tuple[int, bytes]]) -> bytes:
    """(ts µs, frame) records as they follow a pcap file header."""
    import struct

    return b"".join(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(f), len(f)) + f
                    for ts, f in recs)


class HepCollector:
    """``sipcaptool hep --listen PROTO:HOST:PORT --db URL --json`` started and waited for
    ("listening on"); ``prefix`` runs it elsewhere (``ip netns exec NS``). ``stop()``
    sends SIGTERM and returns its JSON summary (exit 0 asserted); ``err`` collects its
    standard error."""

    def __init__(self, listen: str, db_url: str, *extra: str,
                 prefix: tuple[str, ...] = ()) -> None:
        import threading

        self.proc = subprocess.Popen(
            [*prefix, *sipcaptool_cmd("hep", "--listen", listen, "--db", db_url, "--json",
                                      "--control", "none", *extra)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        self.err: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.err.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError("collector did not start: " + "".join(self.err))

    def stop(self) -> dict:
        self.proc.send_signal(15)
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, "".join(self.err)
        return dict(json.loads(out))


# --------------------------------------------------------------------------- sender


def sip_messages(n: int, size: int = 0, tag: str = "t", host: str = "10.0.0.2",
                 via_host: str = "10.0.0.1", proto: str = "UDP",
                 random_pad: bool = False) -> list[bytes]:
    """``n`` distinct SIP requests (OPTIONS/INVITE mix); ``size`` pads the body
    (with ``random_pad``, with base64 of seeded random bytes, which barely compresses)."""
    import base64
    import random
    out = []
    sdp_ip = f"IP6 {via_host}" if ":" in via_host else f"IP4 {via_host}"
    if ":" in host:
        host = f"[{host}]"
    if ":" in via_host:
        via_host = f"[{via_host}]"
    for i in range(n):
        body = (f"v=0\r\no=- 1 1 IN {sdp_ip}\r\ns=-\r\nc=IN {sdp_ip}"
                "\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
        if size:
            pad = max(0, size - len(body) - 400)
            if random_pad:
                noise = base64.b64encode(random.Random(i).randbytes(pad)).decode()[:pad]
                body += "a=x-pad:" + noise + "\r\n"
            else:
                body += "a=x-pad:" + ("p" * pad) + "\r\n"
        method = "INVITE" if i % 2 == 0 else "OPTIONS"
        if method == "OPTIONS" and not size:
            body = ""
        hdr = (f"{method} sip:bob{i}@{host}:5060 SIP/2.0\r\n"
               f"Via: SIP/2.0/{proto} {via_host}:5060;branch=z9hG4bK-{tag}-{i}\r\n"
               f"Max-Forwards: 70\r\n"
               f"From: \"Alice\" <sip:alice@{via_host}>;tag={tag}{i}\r\n"
               f"To: <sip:bob{i}@{host}>\r\n"
               f"Call-ID: {tag}-{i}@{via_host}\r\n"
               f"CSeq: {i + 1} {method}\r\n"
               f"Contact: <sip:alice@{via_host}:5060>\r\n"
               f"User-Agent: sipcaptool-test\r\n")
        if body:
            hdr += "Content-Type: application/sdp\r\n"
        hdr += f"Content-Length: {len(body.encode())}\r\n\r\n"
        out.append((hdr + body).encode())
    return out


def _udp(args: argparse.Namespace) -> dict:
    fam = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    if args.sport:
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", args.sport))
    msgs = sip_messages(args.n, args.size, args.tag, args.dst, args.src or "10.0.0.1")
    sent = 0
    start = time.perf_counter()
    total = len(msgs)
    while sent < total:
        if args.rate:
            # send what is due by now, then sleep a little: paced without busy-waiting
            due = min(total, int((time.perf_counter() - start) * args.rate) + 1)
            if due <= sent:
                time.sleep(0.0005)
                continue
        else:
            due = total
        while sent < due:
            try:
                s.sendto(msgs[sent], (args.dst, args.dport))
            except (BlockingIOError, ConnectionRefusedError):
                continue
            except OSError as e:
                if e.errno == 105:  # ENOBUFS: the queue is full; try again
                    time.sleep(0.0001)
                    continue
                raise
            sent += 1
    return {"sent": sent, "seconds": time.perf_counter() - start,
            "bytes": sum(len(m) for m in msgs)}


def _tcp(args: argparse.Namespace) -> dict:
    fam = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    s = socket.create_connection((args.dst, args.dport), timeout=10)
    msgs = sip_messages(args.n, args.size, args.tag, args.dst, args.src or "10.0.0.1", "TCP",
                        args.random_pad)
    for m in msgs:
        s.sendall(m)
        time.sleep(args.gap)
    time.sleep(0.2)
    s.close()
    return {"sent": len(msgs), "family": fam}


def _tcp_server(args: argparse.Namespace) -> dict:
    """Accept one connection per expected client, read to EOF; report bytes."""
    fam = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.dport))
    srv.listen(8)
    print("listening", flush=True)
    srv.settimeout(args.timeout)
    total = 0
    for _ in range(args.clients):
        c, _a = srv.accept()
        c.settimeout(args.timeout)
        while True:
            d = c.recv(65536)
            if not d:
                break
            total += len(d)
        c.close()
    return {"received": total}


def _frames(args: argparse.Namespace) -> dict:
    """Write raw Ethernet frames (hex, one per line of a file) onto an interface."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((args.iface, 0))
    n = 0
    with open(args.file) as f:
        for line in f:
            line = line.strip()
            if line:
                s.send(bytes.fromhex(line))
                n += 1
                if args.gap:
                    time.sleep(args.gap)
    return {"sent": n}


def _ipip(args: argparse.Namespace) -> dict:
    """Send inner packets (hex lines of a file) as IP-in-IP to ``dst``.

    Each inner packet goes out as the payload of a raw IPv4 socket of protocol 4 (IPv4
    inside) or 41 (IPv6 inside): the kernel adds the outer header, as a tunnel would.
    """
    socks = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, 4),
             6: socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)}
    n = 0
    with open(args.file) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            pkt = bytes.fromhex(line)
            socks[pkt[0] >> 4].sendto(pkt, (args.dst, 0))
            n += 1
            if args.gap:
                time.sleep(args.gap)
    return {"sent": n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="SIP test traffic sender")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("udp")
    u.add_argument("--dst", required=True)
    u.add_argument("--src", default="")
    u.add_argument("--dport", type=int, default=5060)
    u.add_argument("--sport", type=int, default=5060)
    u.add_argument("-n", type=int, default=10)
    u.add_argument("--size", type=int, default=0)
    u.add_argument("--rate", type=float, default=0)
    u.add_argument("--tag", default="u")
    t = sub.add_parser("tcp")
    t.add_argument("--dst", required=True)
    t.add_argument("--src", default="")
    t.add_argument("--dport", type=int, default=5060)
    t.add_argument("-n", type=int, default=10)
    t.add_argument("--size", type=int, default=0)
    t.add_argument("--gap", type=float, default=0.01)
    t.add_argument("--tag", default="t")
    t.add_argument("--random-pad", action="store_true")
    ts = sub.add_parser("tcp-server")
    ts.add_argument("--bind", required=True)
    ts.add_argument("--dport", type=int, default=5060)
    ts.add_argument("--clients", type=int, default=1)
    ts.add_argument("--timeout", type=float, default=30)
    fr = sub.add_parser("frames")
    fr.add_argument("--iface", required=True)
    fr.add_argument("--file", required=True)
    fr.add_argument("--gap", type=float, default=0.001)
    ii = sub.add_parser("ipip")
    ii.add_argument("--dst", required=True)
    ii.add_argument("--file", required=True)
    ii.add_argument("--gap", type=float, default=0.001)
    args = ap.parse_args(argv)
    fn = {"udp": _udp, "tcp": _tcp, "tcp-server": _tcp_server, "frames": _frames,
          "ipip": _ipip}[args.cmd]
    print(json.dumps(fn(args)), flush=True)


if __name__ == "__main__":
    main()
