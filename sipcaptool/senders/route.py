"""Which collector a message goes to (pure: no sockets).

``--hep-to`` values name *targets* (``udp:``, ``tcp:`` or ``tls:HOST:PORT``); targets are
grouped into *collectors* (one datagram target and one stream target at most each, the
stream one carrying what a datagram cannot), and each call goes to one collector chosen
by rendezvous (highest random weight) hashing of its Call-ID:

* every collector gets a score ``mix(hash(call key) ^ seed(collector))``; the call
  goes to the highest score whose collector is up, else the next, and so on;
* adding or removing a collector moves only the calls whose first choice it is (about
  1/N of them); when the first choice comes back, its calls come back with it.

The hash is BLAKE2b of the key and of the collector's name, so every agent (and every
front collector with ``--forward-to``) sends a call to the same collector whatever its
process, host or Python version.

Grouping (:func:`group_targets`):

* a value with commas is one collector: ``udp:h:9060,tcp:h:9061``;
* values given one per option are grouped per host as written: a host with at most one
  datagram target and at most one stream target is one collector (the meaning
  ``--hep-to udp:h:9060 --hep-to tcp:h:9060`` always had);
* a host with more of a kind (two collectors on one machine) is split per port: a
  ``udp`` and a ``tcp``/``tls`` target with the same port are one collector, every other
  target is a collector of its own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..net import parse_endpoint
from ..record import HEP_TYPE_SIP, CapturedMessage

__all__ = ["CollectorSpec", "TargetSpec", "call_key", "group_targets", "hrw_order",
           "parse_target", "seed_of"]

_EXPECTED = ("udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT, port 1-65535 (IPv6 hosts in "
             "brackets: udp:[::1]:9060); a comma joins the targets of one collector")
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class TargetSpec:
    """One target: transport (``udp``, ``tcp``, ``tls``), host, port."""

    transport: str
    host: str
    port: int

    @property
    def stream(self) -> bool:
        return self.transport != "udp"

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class CollectorSpec:
    """A collector: its datagram and/or stream target, and the name its hash seed is
    made from (the stream target's ``HOST:PORT``, else the datagram target's)."""

    dgram: TargetSpec | None
    stream: TargetSpec | None

    @property
    def name(self) -> str:
        t = self.stream or self.dgram
        assert t is not None
        host = f"[{t.host}]" if ":" in t.host else t.host
        return f"{host}:{t.port}"

    @property
    def label(self) -> str:
        return ",".join(t.label for t in (self.dgram, self.stream) if t is not None)


def parse_target(text: str, option: str = "--hep-to") -> TargetSpec:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` / ``tls:HOST:PORT`` -> :class:`TargetSpec`.

    Raises:
        ConfigError: naming the option, the value and the forms allowed.
    """
    ep = parse_endpoint(text, option, expected=_EXPECTED, transports=("udp", "tcp", "tls"),
                        need_host=True, need_port=True)
    assert ep.port is not None  # need_port
    return TargetSpec(ep.transport, ep.host, ep.port)


def _one(targets: list[TargetSpec], option: str, text: str) -> CollectorSpec:
    dgram = [t for t in targets if not t.stream]
    stream = [t for t in targets if t.stream]
    if len(dgram) > 1 or len(stream) > 1:
        raise ConfigError(f"{option} {text!r}: a collector has at most one udp target and "
                          "one tcp or tls target")
    return CollectorSpec(dgram[0] if dgram else None, stream[0] if stream else None)


def group_targets(values: list[str] | tuple[str, ...], option: str = "--hep-to",
                  ) -> list[CollectorSpec]:
    """The collectors that ``values`` (the option given once or more) name, in order.

    Raises:
        ConfigError: a bad target, a collector with two targets of a kind, or a target
            named twice.
    """
    out: list[CollectorSpec] = []
    singles: dict[str, list[TargetSpec]] = {}
    seen: set[TargetSpec] = set()
    order: list[tuple[str, object]] = []  # keep the order the operator wrote
    for text in values:
        parts = [p for p in text.split(",") if p.strip()]
        targets = [parse_target(p, option) for p in parts]
        for t in targets:
            if t in seen:
                raise ConfigError(f"{option} {t.label} given twice")
            seen.add(t)
        if len(targets) > 1:
            order.append(("explicit", _one(targets, option, text)))
        elif targets:
            host = targets[0].host.lower()
            if host not in singles:
                singles[host] = []
                order.append(("host", host))
            singles[host].append(targets[0])
    for kind, item in order:
        if kind == "explicit":
            assert isinstance(item, CollectorSpec)
            out.append(item)
            continue
        assert isinstance(item, str)
        ts = singles[item]
        dgram = [t for t in ts if not t.stream]
        stream = [t for t in ts if t.stream]
        if len(dgram) <= 1 and len(stream) <= 1:
            out.append(CollectorSpec(dgram[0] if dgram else None, stream[0] if stream else None))
            continue
        # several collectors on one host: a udp and a stream target pair by port
        used: set[TargetSpec] = set()
        for t in ts:
            if t in used:
                continue
            mate = next((m for m in ts if m not in used and m is not t
                         and m.port == t.port and m.stream != t.stream), None)
            used.add(t)
            if mate is not None:
                used.add(mate)
                d, s = (t, mate) if not t.stream else (mate, t)
                out.append(CollectorSpec(d, s))
            else:
                out.append(CollectorSpec(None, t) if t.stream else CollectorSpec(t, None))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        twice = sorted(n for n in names if names.count(n) > 1)[0]
        raise ConfigError(f"{option}: two collectors named {twice}; join a udp and a "
                          "tcp/tls target of one collector with a comma")
    return out


# --------------------------------------------------------------------------- hashing

_CALL_ID = re.compile(rb"\n(?:[Cc][Aa][Ll][Ll]-[Ii][Dd]|[Ii])[ \t]*:[ \t]*([^\r\n]*)")


def call_key(msg: CapturedMessage) -> bytes:
    """What a message is hashed by: its Call-ID (SIP), else its correlation id (HEP
    logs, RTCP, reports carry the call's), else its two addresses (so a flow stays
    together)."""
    if msg.hep_type == HEP_TYPE_SIP or not msg.correlation_id:
        payload = msg.payload
        end = payload.find(b"\r\n\r\n", 0, 16384)
        m = _CALL_ID.search(payload, 0, end if end >= 0 else 16384)
        if m is not None:
            value = m.group(1).strip()
            if value:
                return value
    if msg.correlation_id:
        return msg.correlation_id.encode("utf-8", "surrogateescape")
    a = f"{msg.src_ip}:{msg.src_port}"
    b = f"{msg.dst_ip}:{msg.dst_port}"
    return (min(a, b) + "|" + max(a, b)).encode()


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def seed_of(name: str) -> int:
    """A collector's hash seed, from its name."""
    return _h64(b"sipcaptool-collector\0" + name.encode())


def _mix(x: int) -> int:
    # splitmix64's finaliser: every bit of the key and the seed moves every bit
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


def hrw_order(key: bytes, seeds: list[int] | tuple[int, ...]) -> list[int]:
    """The indices of ``seeds`` (one per collector), the call's first choice first."""
    if len(seeds) == 1:
        return [0]
    h = _h64(key)
    scores = [(_mix(h ^ s), i) for i, s in enumerate(seeds)]
    scores.sort(reverse=True)
    return [i for _s, i in scores]
