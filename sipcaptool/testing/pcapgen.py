"""Write capture files and build frames: used by the tests, the benchmarks and the
scripts that make the project's own captures (tests/pcaps/).

Nothing here is used by the capture path itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

# the writer and the frame builders live in the library (``sipcaptool export`` writes
# capture files with them); their names stay importable from here
from sipcaptool.export.frames import ether, ipv4, ipv6, tcp, udp
from sipcaptool.export.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    PcapngWriter,
    PcapWriter,
)

__all__ = ["LINKTYPE_ETHERNET", "LINKTYPE_LINUX_SLL", "LINKTYPE_RAW", "PcapWriter",
           "PcapngWriter", "ether", "ipv4", "ipv6", "tcp", "udp", "ipv4_fragments",
           "ipv6_fragments", "udp4_frame", "sip_call", "sip_register", "sip_options",
           "realistic_messages"]


def ipv4_fragments(src: str, dst: str, proto: int, payload: bytes, mtu: int = 1500,
                   ident: int = 7) -> list[bytes]:
    """Split an IPv4 payload (e.g. a UDP datagram) into fragments that fit ``mtu``."""
    step = ((mtu - 20) // 8) * 8
    out = []
    for off in range(0, len(payload), step):
        chunk = payload[off:off + step]
        out.append(ipv4(src, dst, proto, chunk, ident=ident, frag_offset=off,
                        more_fragments=off + step < len(payload)))
    return out


def ipv6_fragments(src: str, dst: str, next_header: int, payload: bytes, mtu: int = 1280,
                   ident: int = 7) -> list[bytes]:
    step = ((mtu - 48) // 8) * 8
    out = []
    for off in range(0, len(payload), step):
        chunk = payload[off:off + step]
        more = off + step < len(payload)
        frag = struct.pack("!BBHI", next_header, 0, off | (1 if more else 0), ident) + chunk
        out.append(ipv6(src, dst, 44, frag))
    return out


def udp4_frame(src: str, sport: int, dst: str, dport: int, payload: bytes,
               vlans: Iterable[int] = ()) -> bytes:
    return ether(ipv4(src, dst, 17, udp(sport, dport, payload)), vlans=vlans)


# ---------------------------------------------------------------- realistic SIP traffic

def sip_call(n: int, a: str = "10.0.0.1", b: str = "10.0.0.2", domain: str = "example.com",
             body_size: int = 200) -> list[tuple[str, int, str, int, bytes]]:
    """The messages of one call (INVITE, 100, 180, 200, ACK, BYE, 200) with Call-ID
    ``call-<n>@<a>``: a list of (src, sport, dst, dport, message)."""
    cid = f"call-{n}@{a}"
    ftag = f"f{n:08x}"
    ttag = f"t{n:08x}"
    caller = f"+1555{n % 10_000_000:07d}"
    callee = f"+1666{(n * 7) % 10_000_000:07d}"
    sdp = (f"v=0\r\no=- {n} 1 IN IP4 {a}\r\ns=-\r\nc=IN IP4 {a}\r\nt=0 0\r\n"
           f"m=audio {10000 + n % 50000} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
    sdp = sdp[:body_size] if body_size < len(sdp) else sdp

    def req(method: str, cseq: int, to_tag: str = "", body: str = "", branch: str = "") -> bytes:
        tt = f";tag={to_tag}" if to_tag else ""
        hdrs = (f"{method} sip:{callee}@{domain};user=phone SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{branch or method.lower()}{n}\r\n"
                f"Max-Forwards: 70\r\n"
                f"From: \"Caller {n}\" <sip:{caller}@{domain}>;tag={ftag}\r\n"
                f"To: <sip:{callee}@{domain}>{tt}\r\n"
                f"Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:{caller}@{a}:5060>\r\n"
                f"User-Agent: sipcaptool-gen/1.0\r\n")
        if body:
            hdrs += "Content-Type: application/sdp\r\n"
        return (hdrs + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def resp(code: int, reason: str, method: str, cseq: int, to_tag: str = "",
             body: str = "", branch: str = "") -> bytes:
        tt = f";tag={to_tag}" if to_tag else ""
        hdrs = (f"SIP/2.0 {code} {reason}\r\n"
                f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{branch or method.lower()}{n}\r\n"
                f"From: \"Caller {n}\" <sip:{caller}@{domain}>;tag={ftag}\r\n"
                f"To: <sip:{callee}@{domain}>{tt}\r\n"
                f"Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\n")
        if code >= 180:
            hdrs += f"Contact: <sip:{callee}@{b}:5060>\r\n"
        hdrs += "Server: sipcaptool-gen/1.0\r\n"
        if body:
            hdrs += "Content-Type: application/sdp\r\n"
        return (hdrs + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    ab = (a, 5060, b, 5060)
    ba = (b, 5060, a, 5060)
    return [
        (*ab, req("INVITE", 1, body=sdp)),
        (*ba, resp(100, "Trying", "INVITE", 1)),
        (*ba, resp(180, "Ringing", "INVITE", 1, ttag)),
        (*ba, resp(200, "OK", "INVITE", 1, ttag, body=sdp.replace(a, b))),
        (*ab, req("ACK", 1, ttag, branch="ack")),
        (*ab, req("BYE", 2, ttag)),
        (*ba, resp(200, "OK", "BYE", 2, ttag)),
    ]


def sip_register(n: int, a: str = "10.0.1.1", b: str = "10.0.0.2",
                 domain: str = "example.com") -> list[tuple[str, int, str, int, bytes]]:
    user = f"user{n}"
    cid = f"reg-{n}@{a}"
    base = (f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bKreg{n}\r\n"
            f"From: <sip:{user}@{domain}>;tag=r{n}\r\nTo: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {cid}\r\n")
    reg = (f"REGISTER sip:{domain} SIP/2.0\r\n{base}CSeq: 1 REGISTER\r\n"
           f"Contact: <sip:{user}@{a}:5060>;expires=3600\r\n"
           f"Authorization: Digest username=\"{user}\", realm=\"{domain}\", nonce=\"abc{n}\", "
           f"uri=\"sip:{domain}\", response=\"0123456789abcdef0123456789abcdef\"\r\n"
           "User-Agent: sipcaptool-gen/1.0\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
    to = f"To: <sip:{user}@{domain}>"
    ok = (f"SIP/2.0 200 OK\r\n{base.replace(to, f'{to};tag=s{n}')}"
          f"CSeq: 1 REGISTER\r\nContact: <sip:{user}@{a}:5060>;expires=3600\r\n"
          "Content-Length: 0\r\n\r\n").encode()
    return [(a, 5060, b, 5060, reg), (b, 5060, a, 5060, ok)]


def sip_options(n: int, a: str = "10.0.2.1", b: str = "10.0.0.2") -> list[tuple[str, int, str, int, bytes]]:
    cid = f"opt-{n}@{a}"
    base = (f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bKopt{n}\r\n"
            f"From: <sip:ping@{a}>;tag=o{n}\r\nTo: <sip:{b}>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n")
    o = f"OPTIONS sip:{b} SIP/2.0\r\n{base}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode()
    r = f"SIP/2.0 200 OK\r\n{base}Content-Length: 0\r\n\r\n".encode()
    return [(a, 5060, b, 5060, o), (b, 5060, a, 5060, r)]


def realistic_messages(count: int, start_us: int = 1_764_000_000_000_000,
                       gap_us: int = 50) -> Iterator[tuple[int, tuple[str, int, str, int, bytes]]]:
    """``count`` SIP messages mixing calls (70%), registrations (20%) and OPTIONS (10%),
    every dialog with its own Call-ID, as (ts_us, (src, sport, dst, dport, msg))."""
    ts = start_us
    made = 0
    n = 0
    while made < count:
        k = n % 10
        if k < 7:
            msgs = sip_call(n)
        elif k < 9:
            msgs = sip_register(n)
        else:
            msgs = sip_options(n)
        for m in msgs:
            if made >= count:
                break
            yield ts, m
            ts += gap_us
            made += 1
        n += 1
