"""The records shared by search, flow and export: stored rows read back, and calls.

A :class:`StoredMessage` is one row of a ``sip_capture``-layout table, whichever database
it came from (SQLite, MySQL/MariaDB, PostgreSQL -- or a table Kamailio's module made), with
the values normalised: ``micro_ts`` is the time in µs since the epoch (UTC) and is what
every part orders and measures by; ``msg`` is the message's bytes exactly as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..record import SIP_COLUMN_NAMES

__all__ = ["Call", "CallSummary", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored SIP message (a row of ``sip_capture``), normalised."""

    micro_ts: int
    method: str               # request method, or the status code of a reply ("200")
    reply_reason: str         # reason phrase of a reply ("" for a request)
    ruri: str
    ruri_user: str
    from_user: str
    from_tag: str
    to_user: str
    to_tag: str
    pid_user: str
    contact_user: str
    auth_user: str
    callid: str
    callid_aleg: str
    via_1: str
    via_1_branch: str
    cseq: str
    reason: str
    content_type: str
    user_agent: str
    source_ip: str
    source_port: int
    destination_ip: str
    destination_port: int
    proto: int                # 1 UDP, 2 TCP, 3 TLS, 4 SCTP, 5 WS, 6 WSS (record.PROTO_*)
    family: int               # 2 IPv4, 10 IPv6
    node: str
    correlation_id: str
    msg: bytes
    table: str = ""           # the table it was read from
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # other columns

    @property
    def is_request(self) -> bool:
        return not self.method.isdigit()

    @property
    def status(self) -> int | None:
        """The status code of a reply, None for a request."""
        return int(self.method) if self.method.isdigit() else None

    @classmethod
    def from_row(cls, names: Sequence[str], values: Sequence[Any], table: str = ""
                 ) -> StoredMessage:
        """Build from a row read with the columns ``names`` (any subset of the table's that
        includes every field above but ``table``/``extra``; NULLs become "" or 0)."""
        row = dict(zip(names, values, strict=True))
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("table", "extra"):
                continue
            v = row.pop(f.name, None)
            if f.name == "msg":
                # bytes, memoryview (PostgreSQL); str from a text column (Kamailio's
                # varchar msg) is encoded back
                v = b"" if v is None else (
                    v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v))
            elif f.type == "int":
                v = int(v) if v is not None else 0
            else:
                v = "" if v is None else (v if isinstance(v, str) else str(v))
            kw[f.name] = v
        return cls(table=table, extra=row, **kw)


# the columns a query reads to build a StoredMessage (every field but table/extra)
STORED_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(StoredMessage) if f.name not in ("table", "extra"))
assert set(STORED_COLUMNS) <= set(SIP_COLUMN_NAMES), "StoredMessage out of step with record.py"


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What an operator asks first about a call, computed from its messages."""

    first_us: int                  # time of the first message
    last_us: int                   # time of the last message
    from_user: str
    to_user: str
    first_method: str
    final_status: int | None       # final reply to the initial request (>= 200), if any
    outcome: str                   # "answered", "cancelled", "failed", "in progress", "other"
    setup_ringing_us: int | None   # INVITE to first 18x
    setup_answer_us: int | None    # INVITE to 200
    messages: int
    nodes: tuple[str, ...]

    @property
    def duration_us(self) -> int:
        return self.last_us - self.first_us


@dataclass(slots=True)
class Call:
    """The messages of one Call-ID in time order, its summary, and the Call-IDs of its
    correlated legs (``callid_aleg`` / Session-ID, see ``--legs``)."""

    callid: str
    messages: list[StoredMessage]
    summary: CallSummary | None = None
    legs: list[str] = field(default_factory=list)
