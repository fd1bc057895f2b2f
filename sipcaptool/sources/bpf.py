"""Capture filters: libpcap expressions for mirror mode, classic BPF for the IPIP socket.

Mirror mode hands libpcap an expression (``mirror_filter``). It admits the SIP ports
(UDP, TCP, SCTP; IPv4 and IPv6), every IP fragment (a non-first fragment carries no
ports, so a port-only filter loses the end of every fragmented INVITE), and the same
inside one or two VLAN tags.

IPIP mode attaches a classic BPF program to the raw socket itself (``ipip_program``,
``attach_filter``): the kernel then wakes the capture only for tunnelled packets whose
inner UDP/TCP/SCTP source or destination port is in the range (plus inner fragments,
which carry no ports, and IPv6 packets with extension headers the program does not walk).
``run_program`` is a small interpreter of the instructions used here, for tests.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

# ----------------------------------------------------------------- libpcap expressions


def port_expr(lo: int, hi: int) -> str:
    if lo == hi:
        return f"port {lo}"
    return f"portrange {lo}-{hi}"


def mirror_filter(lo: int, hi: int, vlan: bool = True) -> str:
    """The mirror-mode capture filter for SIP on ports ``lo``..``hi``.

    ``(ip or ip6) and (port P or IPv4 fragment or IPv6 fragment)``, then the same
    inside one and two VLAN tags when ``vlan`` is true.
    """
    p = port_expr(lo, hi)
    # ip[6:2] & 0x3fff: MF flag or a fragment offset, i.e. any IPv4 fragment.
    # ip6[6] == 44: an IPv6 packet whose first header after the fixed one is Fragment.
    base = f"(udp {p}) or (tcp {p}) or (sctp {p}) or (ip[6:2] & 0x3fff != 0) or (ip6[6] == 44)"
    if not vlan:
        return base
    return f"({base}) or (vlan and (({base}) or (vlan and ({base}))))"


# ----------------------------------------------------------------- classic BPF

# instruction classes / modes / ops (linux/filter.h)
BPF_LD, BPF_LDX, BPF_ST, BPF_STX = 0x00, 0x01, 0x02, 0x03
BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = 0x04, 0x05, 0x06, 0x07
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
BPF_ADD, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR = 0x00, 0x50, 0x60, 0x70, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_TAX, BPF_TXA = 0x00, 0x80

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27

ACCEPT_LEN = 0x40000  # return value "keep up to 256 KiB of the packet"

Insn = tuple[int, int, int, int]  # code, jt, jf, k


class _Asm:
    """Tiny assembler: jumps name labels, resolved to forward offsets at the end."""

    def __init__(self) -> None:
        # (code, jt, jf, k): jumps name labels; an unconditional jump's k is its label
        self.code: list[tuple[int, str | None, str | None, int | str]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int | str = 0, jt: str | None = None,
           jf: str | None = None) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> list[Insn]:
        out: list[Insn] = []
        for i, (code, jt, jf, k) in enumerate(self.code):
            def rel(lbl: str | None, i: int = i) -> int:
                if lbl is None:
                    return 0
                d = self.labels[lbl] - i - 1
                if not 0 <= d <= 255:
                    raise ValueError(f"BPF jump to {lbl} out of range ({d})")
                return d
            if isinstance(k, str):      # BPF_JMP | BPF_JA to a label
                out.append((code, 0, 0, self.labels[k] - i - 1))
            else:
                out.append((code, rel(jt), rel(jf), k))
        return out


def ipip_program(lo: int | None, hi: int | None, outer_ipv4: bool = True,
                 select: tuple[int, int] | None = None) -> list[Insn]:
    """Classic BPF admitting tunnelled IPv4/IPv6 packets with SIP on ports lo..hi.

    Args:
        lo, hi: the port range; None admits every inner UDP/TCP/SCTP packet.
        outer_ipv4: the socket sees the outer IPv4 header first (an AF_INET raw
            socket); false when the data starts at the inner packet (AF_INET6 raw
            sockets).
        select: ``(i, n)``: admit only packets whose inner addresses hash to worker
            ``i`` of ``n`` (``(src ^ dst) % n``, the last address word for IPv6).
            The hash is the same in both directions and for every fragment, so a
            flow and its fragments always reach the same worker.
    """
    a = _Asm()
    if outer_ipv4:
        a.op(BPF_LDX | BPF_B | BPF_MSH, 0)          # X = 4 * (outer[0] & 0xf)
    else:
        a.op(BPF_LDX | BPF_W | BPF_IMM, 0)          # X = 0
    a.op(BPF_LD | BPF_B | BPF_IND, 0)                # A = inner[0]
    a.op(BPF_ALU | BPF_RSH | BPF_K, 4)               # version
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 4, jt="v4", jf="not4")
    a.label("not4")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 6, jt="v6", jf="reject")

    # inner IPv4
    a.label("v4")
    if select is not None:
        _select(a, 12, 16, select, "v4sel")
        a.label("v4sel")
    a.op(BPF_LD | BPF_H | BPF_IND, 6)                # flags + fragment offset
    a.op(BPF_JMP | BPF_JSET | BPF_K, 0x3FFF, jt="accept", jf="v4proto")
    a.label("v4proto")
    a.op(BPF_LD | BPF_B | BPF_IND, 9)                # protocol
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 17, jt="v4hl", jf="v4tcp")
    a.label("v4tcp")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 6, jt="v4hl", jf="v4sctp")
    a.label("v4sctp")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 132, jt="v4hl", jf="reject")
    a.label("v4hl")
    if lo is None:
        a.op(BPF_JMP | BPF_JA, "accept")
    else:
        a.op(BPF_LD | BPF_B | BPF_IND, 0)            # X += 4 * (inner[0] & 0xf)
        a.op(BPF_ALU | BPF_AND | BPF_K, 0x0F)
        a.op(BPF_ALU | BPF_LSH | BPF_K, 2)
        a.op(BPF_ALU | BPF_ADD | BPF_X, 0)
        a.op(BPF_MISC | BPF_TAX, 0)
        a.op(BPF_JMP | BPF_JA, "ports")

    # inner IPv6: ports right after the 40-byte header, unless extension headers follow
    a.label("v6")
    if select is not None:
        _select(a, 20, 36, select, "v6sel")
        a.label("v6sel")
    a.op(BPF_LD | BPF_B | BPF_IND, 6)                # next header
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 17, jt="v6hl", jf="v6tcp")
    a.label("v6tcp")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 6, jt="v6hl", jf="v6sctp")
    a.label("v6sctp")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 132, jt="v6hl", jf="v6ext")
    a.label("v6ext")
    # fragment (44), hop-by-hop (0), routing (43), destination options (60): let
    # userspace decide; anything else (ICMPv6, ...) is not SIP
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 44, jt="accept", jf="v6e0")
    a.label("v6e0")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 0, jt="accept", jf="v6e43")
    a.label("v6e43")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 43, jt="accept", jf="v6e60")
    a.label("v6e60")
    a.op(BPF_JMP | BPF_JEQ | BPF_K, 60, jt="accept", jf="reject")
    a.label("v6hl")
    if lo is None:
        a.op(BPF_JMP | BPF_JA, "accept")
    else:
        a.op(BPF_MISC | BPF_TXA, 0)                  # X += 40
        a.op(BPF_ALU | BPF_ADD | BPF_K, 40)
        a.op(BPF_MISC | BPF_TAX, 0)

        # X = offset of the transport header: source port at X, destination at X+2
        assert hi is not None, "a port range has both ends"
        a.label("ports")
        a.op(BPF_LD | BPF_H | BPF_IND, 0)
        a.op(BPF_JMP | BPF_JGE | BPF_K, lo, jt="sp_lo_ok", jf="dport")
        a.label("sp_lo_ok")
        a.op(BPF_JMP | BPF_JGT | BPF_K, hi, jt="dport", jf="accept")
        a.label("dport")
        a.op(BPF_LD | BPF_H | BPF_IND, 2)
        a.op(BPF_JMP | BPF_JGE | BPF_K, lo, jt="dp_lo_ok", jf="reject")
        a.label("dp_lo_ok")
        a.op(BPF_JMP | BPF_JGT | BPF_K, hi, jt="reject", jf="accept")

    a.label("accept")
    a.op(BPF_RET | BPF_K, ACCEPT_LEN)
    a.label("reject")
    a.op(BPF_RET | BPF_K, 0)
    return a.assemble()


def _select(a: _Asm, src_off: int, dst_off: int, select: tuple[int, int], cont: str) -> None:
    """Emit ``if (word[X+src] ^ word[X+dst]) % n != i: reject``, keeping X."""
    i, n = select
    a.op(BPF_STX, 2)                                 # M[2] = X
    a.op(BPF_LD | BPF_W | BPF_IND, dst_off)
    a.op(BPF_ST, 0)                                  # M[0] = destination word
    a.op(BPF_LD | BPF_W | BPF_IND, src_off)          # A = source word
    a.op(BPF_LDX | BPF_W | BPF_MEM, 0)
    a.op(BPF_ALU | BPF_XOR | BPF_X, 0)
    a.op(BPF_ALU | BPF_MOD | BPF_K, n)
    a.op(BPF_LDX | BPF_W | BPF_MEM, 2)               # X back
    a.op(BPF_JMP | BPF_JEQ | BPF_K, i, jt=cont, jf="reject")


def run_program(prog: Sequence[Insn], pkt: bytes) -> int:
    """Interpret ``prog`` on ``pkt`` like the kernel does; an out-of-bounds load rejects (0)."""
    A = X = 0
    M = [0] * 16
    pc = 0
    n = len(pkt)
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls in (BPF_LD, BPF_LDX):
            size = code & 0x18
            mode = code & 0xE0
            if mode == BPF_IMM:
                val = k
            elif mode == BPF_MEM:
                val = M[k]
            elif mode == BPF_MSH:
                if k >= n:
                    return 0
                val = 4 * (pkt[k] & 0x0F)
            else:
                off = k + (X if mode == BPF_IND else 0)
                width = {BPF_W: 4, BPF_H: 2, BPF_B: 1}[size]
                if off + width > n:
                    return 0
                val = int.from_bytes(pkt[off:off + width], "big")
            if cls == BPF_LD:
                A = val
            else:
                X = val
        elif cls == BPF_ST:
            M[k] = A
        elif cls == BPF_STX:
            M[k] = X
        elif cls == BPF_ALU:
            src = X if code & BPF_X else k
            op = code & 0xF0
            if op == BPF_ADD:
                A = (A + src) & 0xFFFFFFFF
            elif op == BPF_AND:
                A &= src
            elif op == BPF_LSH:
                A = (A << src) & 0xFFFFFFFF
            elif op == BPF_RSH:
                A >>= src
            elif op == BPF_XOR:
                A ^= src
            elif op == BPF_MOD:
                if src == 0:
                    return 0
                A %= src
            else:  # pragma: no cover - not generated
                raise ValueError(f"unsupported ALU op {code:#x}")
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            src = X if code & BPF_X else k
            if op == BPF_JEQ:
                cond = A == src
            elif op == BPF_JGT:
                cond = A > src
            elif op == BPF_JGE:
                cond = A >= src
            elif op == BPF_JSET:
                cond = bool(A & src)
            else:  # pragma: no cover
                raise ValueError(f"unsupported jump {code:#x}")
            pc += jt if cond else jf
        elif cls == BPF_RET:
            return k
        elif cls == BPF_MISC:
            if code & 0xF8 == 0x80:
                A = X
            else:
                X = A
        else:  # pragma: no cover
            raise ValueError(f"unsupported instruction {code:#x}")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_filter(sock: socket.socket, prog: Sequence[Insn]) -> None:
    """Attach a classic BPF program to ``sock`` (setsockopt SO_ATTACH_FILTER)."""
    arr = (_SockFilter * len(prog))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    # the kernel copies the program during the call; ``arr`` stays alive until then
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def detach_filter(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, struct.pack("i", 0))
