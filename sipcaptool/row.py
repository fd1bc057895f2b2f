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
from dataclasses import dataclass
from operator import gt, itemgetter

from .decode.sip import SipMessage
from .errors import ConfigError
from .record import (
    AUX_COLUMN_NAMES,
    AUX_COLUMNS,
    AUX_TABLES,
    PROTO_NONE,
    PROTO_TCP,
    PROTO_UDP,
    SIP_COLUMN_NAMES,
    SIP_COLUMNS,
    TEXT,
    CapturedMessage,
)

__all__ = ["RowOptions", "sip_row", "aux_row", "hash_key", "format_date", "HASH_SOURCES"]

HASH_SOURCES = ("call_id", "from_user", "to_user")


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


def _text_columns(columns):
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


def _fit(row: tuple, idx, widths, getter, names, stats: Counter | None) -> tuple:
    """Cut text values to their column width, counting each cut; fast when none is."""
    if not any(map(gt, map(len, getter(row)), widths)):
        return row
    out = list(row)
    for i, width in zip(idx, widths):
        value = out[i]
        if len(value) > width:
            out[i] = value[:width]
            if stats is not None:
                stats["truncated:" + names[i]] += 1
    return tuple(out)


def sip_row(
    msg: CapturedMessage,
    sip: SipMessage,
    opts: RowOptions,
    stats: Counter | None = None,
) -> tuple:
    """The values of one sip_capture row, in ``record.SIP_COLUMN_NAMES`` order."""
    ts = msg.ts_us
    headers = sip._headers
    custom = ["", "", ""]
    if headers:
        for i, name in enumerate(opts.custom_field_headers[:3]):
            if name:
                custom[i] = sip.header(name) or ""
    callid = sip.callid
    row = (
        format_date(ts),
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
        sip.first_header(opts.callid_aleg_headers) if headers else "",
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
        _node(msg, opts),
        callid if msg.correlation_id is None else msg.correlation_id,
        sip.from_domain,
        sip.to_domain,
        sip.ruri_domain,
        sip.diversion,
        bytes(msg.payload),
        custom[0],
        custom[1],
        custom[2],
    )
    return _fit(row, _SIP_TEXT_IDX, _SIP_TEXT_WIDTHS, _SIP_TEXT_GET, SIP_COLUMN_NAMES, stats)


_AUX_PROTO = {6: PROTO_TCP, 17: PROTO_UDP}


def aux_row(msg: CapturedMessage, opts: RowOptions, stats: Counter | None = None) -> tuple:
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
