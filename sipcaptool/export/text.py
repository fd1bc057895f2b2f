"""``--format txt``: the messages as text, like sngrep's text export.

Each message is a header line -- date and time (UTC, µs), source -> destination, as
sngrep writes them, then the transport and the node -- then the message exactly as
stored and two newlines (as sngrep)::

    2026/12/07 04:28:55.123456 10.0.0.1:5060 -> 10.0.0.2:5060 UDP homer01
    INVITE sip:1001@example.com SIP/2.0
    ...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import BinaryIO

from ..query.model import StoredMessage

__all__ = ["PROTO_NAMES", "header_line", "write_text"]

PROTO_NAMES = {0: "NONE", 1: "UDP", 2: "TCP", 3: "TLS", 4: "SCTP", 5: "WS", 6: "WSS"}


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def header_line(m: StoredMessage) -> str:
    """``YYYY/MM/DD HH:MM:SS.ffffff SRC -> DST PROTO NODE`` (time in UTC)."""
    sec, usec = divmod(m.micro_ts, 1_000_000)
    t = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y/%m/%d %H:%M:%S")
    proto = PROTO_NAMES.get(m.proto, str(m.proto))
    line = (f"{t}.{usec:06d} {_endpoint(m.source_ip, m.source_port)} -> "
            f"{_endpoint(m.destination_ip, m.destination_port)} {proto}")
    return f"{line} {m.node}" if m.node else line


def write_text(f: BinaryIO, messages: Iterable[StoredMessage]) -> int:
    """Write each message after its header line; return how many."""
    n = 0
    for m in messages:
        f.write(header_line(m).encode() + b"\n")
        f.write(m.msg)
        f.write(b"\n\n")
        n += 1
    return n
