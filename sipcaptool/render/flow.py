"""The ladder of one or more calls, as a pure model every output format draws.

:func:`build_ladder` takes the calls (``query.model.Call``, messages in time order) and
gives a :class:`Ladder`: one :class:`Column` per address:port (per address with
``by_host``; named by ``aliases``), and one :class:`Arrow` per message in time order,
with its label (method, or status and reason), the time from the first message and from
the previous one in µs, a mark on retransmissions and on messages carrying SDP, and the
SDP media summary. Renderers (``text``, ``svg``, ``html``, ``json``) only lay it out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..query.model import Call, CallSummary, StoredMessage
from .sdp import Media, body_of, has_sdp, parse_sdp

__all__ = ["Arrow", "Column", "Ladder", "build_ladder", "endpoint", "fmt_delta", "fmt_time",
           "fmt_us", "parse_alias", "summary_line", "PROTO_NAMES"]

PROTO_NAMES = {0: "?", 1: "UDP", 2: "TCP", 3: "TLS", 4: "SCTP", 5: "WS", 6: "WSS"}


@dataclass(frozen=True, slots=True)
class Column:
    """One lane of the ladder: an address:port (or an address with ``--by host``)."""

    key: str          # "10.0.0.1:5060", "[2001:db8::1]:5060", or the address alone
    label: str        # the alias when one is given, else the key
    host: str
    port: int | None  # None with --by host


@dataclass(frozen=True, slots=True)
class Arrow:
    """One message of the ladder."""

    index: int               # 0-based, in time order
    call_index: int          # which of the ladder's calls it belongs to
    src: int                 # column index of the sender
    dst: int                 # column index of the receiver
    label: str               # "INVITE", "180 Ringing"
    time_us: int
    delta_first_us: int      # from the ladder's first message
    delta_prev_us: int       # from the message before it (0 for the first)
    retransmission: bool
    sdp: bool
    media: tuple[Media, ...]
    message: StoredMessage

    @property
    def is_request(self) -> bool:
        return self.message.is_request

    @property
    def status(self) -> int | None:
        return self.message.status

    @property
    def proto(self) -> str:
        return PROTO_NAMES.get(self.message.proto, str(self.message.proto))

    @property
    def media_summary(self) -> str:
        return "; ".join(m.summary() for m in self.media)

    @property
    def kind(self) -> str:
        """A class name for colouring: request, 1xx, 2xx, 3xx, 4xx, 5xx, 6xx."""
        st = self.status
        return "request" if st is None else f"{min(max(st // 100, 1), 6)}xx"


@dataclass(frozen=True, slots=True)
class Ladder:
    columns: tuple[Column, ...]
    arrows: tuple[Arrow, ...]
    calls: tuple[Call, ...]

    @property
    def first_us(self) -> int:
        return self.arrows[0].time_us if self.arrows else 0


def endpoint(ip: str, port: int | None) -> str:
    """``ip:port``, IPv6 in brackets; the address alone when port is None."""
    if port is None:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_alias(spec: str) -> tuple[str, str]:
    """``IP=NAME`` or ``IP:PORT=NAME`` (``[V6]:PORT=NAME``) -> (key, name); ValueError
    names what is wrong."""
    key, sep, name = spec.partition("=")
    key, name = key.strip(), name.strip()
    if not sep or not key or not name:
        raise ValueError(f"{spec!r}: expected IP=NAME or IP:PORT=NAME")
    if key.startswith("["):
        host, _, rest = key[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            raise ValueError(f"{spec!r}: expected [IPv6]:PORT=NAME")
        return (endpoint(host, int(rest[1:])) if rest else host), name
    if key.count(":") == 1:
        host, _, port = key.partition(":")
        if not port.isdigit():
            raise ValueError(f"{spec!r}: the port must be a number")
        return endpoint(host, int(port)), name
    return key, name


def _column_for(ip: str, port: int, by_host: bool, aliases: Mapping[str, str]) -> Column:
    if by_host:
        return Column(key=ip, label=aliases.get(ip, ip), host=ip, port=None)
    key = endpoint(ip, port)
    if key in aliases:
        label = aliases[key]
    elif ip in aliases:
        label = f"{aliases[ip]}:{port}"
    else:
        label = key
    return Column(key=key, label=label, host=ip, port=port)


def _retrans_keys(m: StoredMessage) -> tuple[tuple[object, ...], ...]:
    hop = (m.source_ip, m.source_port, m.destination_ip, m.destination_port)
    keys: list[tuple[object, ...]] = [("bytes", *hop, hashlib.sha1(m.msg).digest())]
    if m.via_1_branch:
        keys.append(("txn", *hop, m.via_1_branch, m.cseq, m.method, m.to_tag))
    return tuple(keys)


def build_ladder(calls: Sequence[Call], *, by_host: bool = False,
                 aliases: Mapping[str, str] | None = None) -> Ladder:
    """The ladder of ``calls``: their messages merged in time order (stable: messages
    with the same time keep the calls' order).

    A message is a retransmission when the same hop (source and destination address and
    port) already carried the same bytes, or the same transaction message: Via branch,
    CSeq, method or status, and To-tag."""
    aliases = dict(aliases or {})
    tagged = [(m.micro_ts, ci, mi, m) for ci, c in enumerate(calls)
              for mi, m in enumerate(c.messages)]
    tagged.sort(key=lambda t: (t[0], t[1], t[2]))
    columns: list[Column] = []
    index: dict[str, int] = {}

    def col(ip: str, port: int) -> int:
        c = _column_for(ip, port, by_host, aliases)
        if c.key not in index:
            index[c.key] = len(columns)
            columns.append(c)
        return index[c.key]

    seen: set[tuple[object, ...]] = set()
    arrows: list[Arrow] = []
    first = tagged[0][0] if tagged else 0
    prev = first
    for i, (ts, ci, _mi, m) in enumerate(tagged):
        src = col(m.source_ip, m.source_port)
        dst = col(m.destination_ip, m.destination_port)
        keys = _retrans_keys(m)
        retrans = any(k in seen for k in keys)
        seen.update(keys)
        sdp = has_sdp(m.content_type, m.msg)
        media = parse_sdp(body_of(m.msg)) if sdp else ()
        label = m.method if m.is_request else f"{m.method} {m.reply_reason}".strip()
        arrows.append(Arrow(index=i, call_index=ci, src=src, dst=dst, label=label,
                            time_us=ts, delta_first_us=ts - first, delta_prev_us=ts - prev,
                            retransmission=retrans, sdp=sdp, media=media, message=m))
        prev = ts
    return Ladder(columns=tuple(columns), arrows=tuple(arrows), calls=tuple(calls))


# -- formatting shared by the renderers -------------------------------------------------

def fmt_time(us: int, date: bool = False) -> str:
    """UTC ``HH:MM:SS.ffffff`` (with the date first when asked)."""
    t = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")


def fmt_delta(us: int) -> str:
    """``+1.000155`` seconds, every µs kept."""
    sign = "-" if us < 0 else "+"
    us = abs(us)
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}"


def fmt_us(us: int | None) -> str:
    """A duration for people: ``850 µs``, ``12.345 ms``, ``3.210 s``, ``2 min 03.5 s``."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.3f} ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:.3f} s"
    m, s = divmod(us / 1_000_000, 60)
    return f"{int(m)} min {s:04.1f} s"


def summary_line(call: Call) -> str:
    """The header of one call: outcome, final status, duration, setup delays, messages."""
    s: CallSummary | None = call.summary
    if s is None:
        return f"{len(call.messages)} messages"
    parts = [s.outcome]
    if s.final_status is not None:
        reason = next((m.reply_reason for m in call.messages
                       if m.status == s.final_status and m.reply_reason), "")
        parts.append(f"{s.final_status} {reason}".strip())
    parts.append(f"duration {fmt_us(s.duration_us)}")
    if s.setup_ringing_us is not None:
        parts.append(f"ringing after {fmt_us(s.setup_ringing_us)}")
    if s.setup_answer_us is not None:
        parts.append(f"answered after {fmt_us(s.setup_answer_us)}")
    who = f"{s.from_user or '?'} → {s.to_user or '?'}"
    parts.append(f"{s.messages} messages")
    if s.nodes:
        parts.append("node " + ",".join(s.nodes))
    return f"{who} · {s.first_method} · " + " · ".join(parts)
