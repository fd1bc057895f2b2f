"""CapturedMessage (+ parsed SIP) -> one table row, column for column like sipcapture.

``sip_row`` gives the 44 values of ``record.SIP_COLUMNS`` in that order, ``aux_row`` the
12 values of ``record.AUX_COLUMNS`` for HEP RTCP/report/log packets. Both are pure and
called once per stored message, so they avoid per-column Python work where they can.

Text values longer than their column width (``record.SIP_COLUMNS``) are cut to the width
and counted in ``stats["truncated:<column>"]``; the row itself is never lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import gt, itemgetter
from typing import Any

from .decode.sip import SipMessage, header_key, parse_sip, parse_sip_lenient
from .errors import ConfigError, DecodeError
from .record import (
    AUX_COLUMN_NAMES,
    AUX_COLUMNS,
    AUX_TABLES,
    HASH_SOURCES,
    HEP_TYPE_SIP,
    PROTO_NONE,
    PROTO_TCP,
    PROTO_UDP,
    SIP_COLUMN_NAMES,
    SIP_COLUMNS,
    TEXT,
    CapturedMessage,
)

__all__ = ["RowOptions", "RowMaker", "sip_row", "parsed_row", "pack", "aux_row", "hash_key",
           "format_date", "HASH_SOURCES"]


@dataclass(frozen=True, slots=True)
class RowOptions:
    """The sipcapture settings that shape a row.

    Attributes:
        capture_node: ``capture_node`` modparam; ``node`` is this, plus ``:<capture id>``
            when the message carries one.
        callid_aleg_headers: ``callid_aleg_header`` names, tried in order; the first one
            present gives ``callid_aleg``.
        custom_field_headers: the headers feeding custom_field1..3 (``''`` = none).
    """

    capture_node: str = "homer01"
    callid_aleg_headers: tuple[str, ...] = ("X-CID",)
    custom_field_headers: tuple[str, ...] = ("Mac", "IP", "Port")
    # the lookup keys of the names above (lower-case full names), worked out once
    _aleg_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _custom_keys: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aleg_keys", tuple(map(header_key, self.callid_aleg_headers)))
        custom = tuple(header_key(n) if n else "" for n in self.custom_field_headers[:3])
        object.__setattr__(self, "_custom_keys", custom + ("",) * (3 - len(custom)))


# The order sip_row builds its tuple in; checked against record.py at import so that a
# change of the table layout cannot silently shift values into the wrong columns.
_SIP_ORDER = (
    "date", "micro_ts", "method", "reply_reason", "ruri", "ruri_user", "from_user",
    "from_tag", "to_user", "to_tag", "pid_user", "contact_user", "auth_user", "callid",
    "callid_aleg", "via_1", "via_1_branch", "cseq", "reason", "content_type", "auth",
    "user_agent", "source_ip", "source_port", "destination_ip", "destination_port",
    "contact_ip", "contact_port", "originator_ip", "originator_port", "proto", "family",
    "rtp_stat", "type", "node", "correlation_id", "from_domain", "to_domain",
    "ruri_domain", "diversion", "msg", "custom_field1", "custom_field2", "custom_field3",
)  # fmt: skip
_AUX_ORDER = (
    "date", "micro_ts", "correlation_id", "source_ip", "source_port", "destination_ip",
    "destination_port", "proto", "family", "type", "node", "msg",
)  # fmt: skip
if _SIP_ORDER != SIP_COLUMN_NAMES or _AUX_ORDER != AUX_COLUMN_NAMES:  # pragma: no cover
    raise ImportError("row.py is out of step with the column layout in record.py")


Row = tuple[Any, ...]
_Getter = Callable[[Row], Any]
_Columns = Sequence[tuple[str, str, int]]


def _text_columns(columns: _Columns) -> tuple[tuple[int, ...], tuple[int, ...], _Getter]:
    idx = tuple(i for i, (_, kind, width) in enumerate(columns) if kind == TEXT and width)
    return (
        idx,
        tuple(columns[i][2] for i in idx),
        itemgetter(*idx),
    )


_SIP_TEXT_IDX, _SIP_TEXT_WIDTHS, _SIP_TEXT_GET = _text_columns(SIP_COLUMNS)
_AUX_TEXT_IDX, _AUX_TEXT_WIDTHS, _AUX_TEXT_GET = _text_columns(AUX_COLUMNS)

# 'YYYY-MM-DD HH:MM:SS' per whole second; messages arrive in bursts within one second.
_DATE_CACHE: dict[int, str] = {}
_DATE_CACHE_MAX = 4096


def format_date(ts_us: int) -> str:
    """UTC 'YYYY-MM-DD HH:MM:SS' of a microsecond timestamp (cached per second)."""
    sec = ts_us // 1_000_000
    s = _DATE_CACHE.get(sec)
    if s is None:
        try:
            s = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        except (OverflowError, OSError, ValueError):
            s = "1970-01-01 00:00:00"
        if len(_DATE_CACHE) >= _DATE_CACHE_MAX:
            _DATE_CACHE.clear()
        _DATE_CACHE[sec] = s
    return s


def _node(msg: CapturedMessage, opts: RowOptions) -> str:
    if msg.node_id is None:
        return opts.capture_node
    return f"{opts.capture_node}:{msg.node_id}"


def _fit(row: Row, idx: tuple[int, ...], widths: tuple[int, ...], getter: _Getter,
         names: Sequence[str], stats: Counter[str] | None) -> Row:
    """Cut text values to their column width, counting each cut; fast when none is."""
    if not any(map(gt, map(len, getter(row)), widths)):
        return row
    return _cut(row, idx, widths, names, stats)


def _cut(row: Row, idx: tuple[int, ...], widths: tuple[int, ...], names: Sequence[str],
         stats: Counter[str] | None) -> Row:
    out = list(row)
    for i, width in zip(idx, widths, strict=False):
        value = out[i]
        if len(value) > width:
            out[i] = value[:width]
            if stats is not None:
                stats["truncated:" + names[i]] += 1
    return tuple(out)


def _width_groups(columns: _Columns, idx: tuple[int, ...]) -> tuple[tuple[_Getter, int, bool], ...]:
    """(getter, width) per distinct width: every value fits when, for each group, the
    longest value is no longer than the width (a single-column getter gives the value)."""
    by_width: dict[int, list[int]] = {}
    for i in idx:
        by_width.setdefault(columns[i][2], []).append(i)
    return tuple((itemgetter(*ids), width, len(ids) == 1) for width, ids in sorted(by_width.items()))


_SIP_GROUPS = _width_groups(SIP_COLUMNS, _SIP_TEXT_IDX)
# sip_row checks these four groups inline (one column of width 50, several of 60, 255 and
# 4096); the import fails if the layout changes so that they no longer cover it
(_G50, _W50, _), (_G60, _W60, _), (_G255, _W255, _), (_G4096, _W4096, _) = _SIP_GROUPS
if ((_W50, _W60, _W255, _W4096) != (50, 60, 255, 4096) or _SIP_GROUPS[0][2] is not True
        or SIP_COLUMN_NAMES[35] != "correlation_id" or SIP_COLUMN_NAMES[40] != "msg"):
    raise ImportError("row.py: the text column widths changed; update sip_row")  # pragma: no cover


def sip_row(
    msg: CapturedMessage,
    sip: SipMessage,
    opts: RowOptions,
    stats: Counter[str] | None = None,
) -> Row:
    """The values of one sip_capture row, in ``record.SIP_COLUMN_NAMES`` order."""
    ts = msg.ts_us
    headers = sip._headers
    k1, k2, k3 = opts._custom_keys
    aleg_keys = opts._aleg_keys
    if len(aleg_keys) == 1:
        aleg = headers.get(aleg_keys[0], "")
    else:
        aleg = ""
        for key in aleg_keys:
            body = headers.get(key)
            if body is not None:
                aleg = body
                break
    callid = sip.callid
    node_id = msg.node_id
    date = _DATE_CACHE.get(ts // 1_000_000)
    row = (
        date if date is not None else format_date(ts),
        ts,
        sip.method,
        sip.reply_reason,
        sip.ruri,
        sip.ruri_user,
        sip.from_user,
        sip.from_tag,
        sip.to_user,
        sip.to_tag,
        sip.pid_user,
        sip.contact_user,
        sip.auth_user,
        callid,
        aleg,
        sip.via_1,
        sip.via_1_branch,
        sip.cseq,
        sip.reason,
        sip.content_type,
        sip.auth,
        sip.user_agent,
        msg.src_ip,
        msg.src_port,
        msg.dst_ip,
        msg.dst_port,
        sip.contact_ip,
        sip.contact_port,
        sip.originator_ip,
        sip.originator_port,
        msg.proto,
        msg.family,
        sip.rtp_stat,
        sip.type,
        opts.capture_node if node_id is None else f"{opts.capture_node}:{node_id}",
        callid if msg.correlation_id is None else msg.correlation_id,
        sip.from_domain,
        sip.to_domain,
        sip.ruri_domain,
        sip.diversion,
        bytes(msg.payload),
        (headers.get(k1) or "") if k1 else "",
        (headers.get(k2) or "") if k2 else "",
        (headers.get(k3) or "") if k3 else "",
    )
    # Every 4096-wide value but correlation_id is part of the message text, which has no
    # more characters than the payload has bytes: a payload of up to 4096 bytes fits them.
    corr = row[35]
    if (len(_G50(row)) > 50 or max(map(len, _G60(row))) > 60
            or max(map(len, _G255(row))) > 255
            or (len(row[40]) > 4096 or len(corr) > 4096) and max(map(len, _G4096(row))) > 4096):
        return _cut(row, _SIP_TEXT_IDX, _SIP_TEXT_WIDTHS, SIP_COLUMN_NAMES, stats)
    return row


_AUX_PROTO: dict[int | None, int] = {6: PROTO_TCP, 17: PROTO_UDP}


def parsed_row(msg: CapturedMessage, opts: RowOptions, capture_bad: bool,
               stats: Counter[str]) -> tuple[SipMessage, Row] | None:
    """The message parsed as SIP and its sip_capture row, or None: malformed
    (``malformed:<reason>``) and not stored (``capture_bad`` off). With ``capture_bad``
    a malformed message is parsed leniently and stored (``stored-bad:<reason>``); the
    leniencies of a message are counted (``lenient:<what>``), and so is a HEP type other
    than SIP (``lenient:hep-type-<n>``). The same in the capturing process and in a
    writer process that parses (:mod:`sipcaptool.store.unparsed`)."""
    try:
        sip = parse_sip(msg.payload)
    except DecodeError as e:
        stats["malformed:" + e.reason] += 1
        if not capture_bad:
            return None
        sip = parse_sip_lenient(msg.payload)
        stats["stored-bad:" + e.reason] += 1
    if sip.lenient:  # stored as meant, counted (decode/sip.py names the leniencies)
        for what in sip.lenient:
            stats["lenient:" + what] += 1
    if msg.hep_type != HEP_TYPE_SIP:
        stats[f"lenient:hep-type-{msg.hep_type}"] += 1
    return sip, sip_row(msg, sip, opts, stats)


def pack(msg: CapturedMessage) -> tuple[Any, ...]:
    """A SIP message as a replay hands it to its writer process unparsed
    (:mod:`sipcaptool.store.unparsed`): the fields of :class:`CapturedMessage` that make
    its row, in their order (HEP type SIP; the capture point stays behind). Its
    ``payload`` is at index 7 (``unparsed.PAYLOAD_INDEX``)."""
    return (msg.ts_us, msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port, msg.proto,
            msg.family, msg.payload, msg.node_id, msg.correlation_id)


@dataclass(frozen=True)
class RowMaker:
    """Makes the rows of packed messages (:func:`pack`) as the capturing process makes
    them (:func:`parsed_row`): what a writer process that parses is given."""

    opts: RowOptions
    capture_bad: bool

    def rows(self, items: Iterable[tuple[Any, ...]]) -> tuple[list[Row], Counter[str]]:
        """The rows of ``items`` in order, and what parsing them counted; a message that
        makes no row (malformed, ``capture_bad`` off) is counted and left out."""
        stats: Counter[str] = Counter()
        rows: list[Row] = []
        add = rows.append
        opts, bad = self.opts, self.capture_bad
        for item in items:
            got = parsed_row(CapturedMessage(*item), opts, bad, stats)
            if got is not None:
                add(got[1])
        return rows, stats


def aux_row(msg: CapturedMessage, opts: RowOptions, stats: Counter[str] | None = None) -> Row:
    """The values of one rtcp/report/logs_capture row, in ``AUX_COLUMN_NAMES`` order.

    ``family`` is the raw HEP family chunk (as the module stores it for these tables),
    ``proto`` comes from the HEP IP protocol (6 -> 2, 17 -> 1, else 0) and ``type`` from
    the HEP payload type (``record.AUX_TABLES``).

    Raises:
        ValueError: ``msg.hep_type`` is not an RTCP/report/log type.
    """
    try:
        _, type_value = AUX_TABLES[msg.hep_type]
    except KeyError:
        raise ValueError(f"HEP type {msg.hep_type} has no rtcp/report/logs table") from None
    row = (
        format_date(msg.ts_us),
        msg.ts_us,
        msg.correlation_id or "",
        msg.src_ip,
        msg.src_port,
        msg.dst_ip,
        msg.dst_port,
        _AUX_PROTO.get(msg.hep_ip_proto, PROTO_NONE),
        msg.hep_family if msg.hep_family is not None else msg.family,
        type_value,
        _node(msg, opts),
        bytes(msg.payload),
    )
    return _fit(row, _AUX_TEXT_IDX, _AUX_TEXT_WIDTHS, _AUX_TEXT_GET, AUX_COLUMN_NAMES, stats)


def hash_key(sip: SipMessage, hash_source: str) -> str:
    """The key the ``hash`` table mode hashes (CRC-32) to pick a table.

    ``call_id``: the first whitespace-delimited token of the Call-ID; ``from_user`` /
    ``to_user``: the stored user part. May be ``''`` (the caller decides what to do).

    Raises:
        ConfigError: unknown ``hash_source``.
    """
    if hash_source == "call_id":
        callid = sip.callid.lstrip(" \t\r\n")
        end = len(callid)
        for ch in " \t\r\n":
            i = callid.find(ch)
            if 0 <= i < end:
                end = i
        return callid[:end]
    if hash_source == "from_user":
        return sip.from_user
    if hash_source == "to_user":
        return sip.to_user
    raise ConfigError(
        f"unknown hash_source {hash_source!r} (use one of: {', '.join(HASH_SOURCES)})"
    )
