"""The one record every capture source produces, and the table layouts it is stored in.

``CapturedMessage`` is what a source hands downstream: the replay reader, the live
capture, the IPIP socket and the HEP collector all produce it, so everything after
the source (SIP parsing, row building, routing, storage) is shared and the same
message gives the same row whichever way it arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CapturedMessage",
    "PROTO_NONE", "PROTO_UDP", "PROTO_TCP", "PROTO_TLS", "PROTO_SCTP", "PROTO_WS",
    "AF_INET", "AF_INET6",
    "HEP_TYPE_SIP", "HEP_TYPE_RTCP", "HEP_TYPE_REPORT", "HEP_TYPE_REPORT99", "HEP_TYPE_LOG",
    "HEP_TYPE_MOS_FULL", "HEP_TYPE_MOS_SHORT",
    "TEXT", "INT", "BIGINT", "DATETIME", "BLOB",
    "SIP_COLUMNS", "SIP_COLUMN_NAMES", "AUX_COLUMNS", "AUX_COLUMN_NAMES", "AUX_TABLES",
    "MT_MODES", "HASH_SOURCES",
]

# Kamailio's transport enum, used in the ``proto`` column.
PROTO_NONE = 0
PROTO_UDP = 1
PROTO_TCP = 2
PROTO_TLS = 3
PROTO_SCTP = 4
PROTO_WS = 5        # SIP over WebSocket (RFC 7118), framed out of TCP

# Linux address families, used in the ``family`` column.
AF_INET = 2
AF_INET6 = 10

# HEP payload protocol types (HEPv3 chunk 0x000b) that select a table.
HEP_TYPE_SIP = 1
HEP_TYPE_RTCP = 5
HEP_TYPE_REPORT = 32
HEP_TYPE_MOS_FULL = 34    # MOS full report (JSON), heplify-server's "rtpagent"
HEP_TYPE_MOS_SHORT = 35   # MOS short report (JSON), heplify-server's "rtcpxr"
HEP_TYPE_REPORT99 = 99
HEP_TYPE_LOG = 100

# How one of several tables is chosen (the mt_mode setting), and what the hash mode
# hashes (hash_source): the settings, the router and the row builder check these.
MT_MODES = ("rand", "round_robin", "hash")
HASH_SOURCES = ("call_id", "from_user", "to_user")


@dataclass(slots=True)
class CapturedMessage:
    """One captured application message (normally SIP) with where and when it was seen.

    Attributes:
        ts_us: capture time, microseconds since the epoch (UTC).
        src_ip, dst_ip: printable addresses (dotted quad, or compressed lower-case IPv6
            without brackets), as Kamailio's ``ip_addr2a`` prints them.
        src_port, dst_port: ports (0 when the transport has none).
        proto: Kamailio transport enum (PROTO_UDP, PROTO_TCP, PROTO_TLS, PROTO_SCTP,
            PROTO_WS, 0).
        family: address family of the source address (AF_INET=2 or AF_INET6=10).
        payload: the message bytes exactly as captured.
        node_id: the capture id that goes into ``node`` as "capture_node:node_id", or
            None when the module would store plain ``capture_node`` (raw capture, HEP
            packets without a timestamp, HEPv1).
        correlation_id: HEPv3 chunk 0x0011 (up to its first NUL) when present, even if
            empty; None otherwise (then the Call-ID is used).
        hep_type: HEP payload type (1 SIP; 5 RTCP; 32/99 QoS and 34/35 MOS reports;
            100 logs; any other type is stored as SIP when its payload is SIP). Non-HEP
            sources always give 1.
        hep_family: raw value of the HEPv3 family chunk (0x0001), or None. Only the
            rtcp/report/logs tables store it.
        hep_ip_proto: raw IP protocol number from HEP (chunk 0x0002 / v1-v2 header), or
            None. Only the rtcp/report/logs tables use it.
        capture_point: where the message was seen, with ``node_id`` (the dedup window,
            ``sipcaptool.dedup``): the HEP agent's IP address (str), or for a frame its
            link-level path (bytes: link type, link header, tunnel addresses); None
            when unknown. Never stored.
    """

    ts_us: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    proto: int
    family: int
    payload: bytes
    node_id: int | None = None
    correlation_id: str | None = None
    hep_type: int = HEP_TYPE_SIP
    hep_family: int | None = None
    hep_ip_proto: int | None = None
    capture_point: bytes | str | None = None


# Column kinds: how a value is represented and stored.
TEXT = "text"      # str; '' when absent, never NULL; cut to ``width`` characters
INT = "int"        # int
BIGINT = "bigint"  # int (micro_ts)
DATETIME = "datetime"  # str 'YYYY-MM-DD HH:MM:SS', UTC
BLOB = "blob"      # bytes, kept whole

# The sip_capture layout: Kamailio's 44 inserted columns, in Kamailio's insert order
# (sipcapture.c, sip_capture_store()). ``id`` is left to the database.
# Widths are sipcaptool's (wider than Kamailio's): a value longer than its width is cut
# to the width and counted (stats "truncated"), the row is never lost.
SIP_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("date", DATETIME, 0),
    ("micro_ts", BIGINT, 0),
    ("method", TEXT, 50),
    ("reply_reason", TEXT, 255),
    ("ruri", TEXT, 4096),
    ("ruri_user", TEXT, 255),
    ("from_user", TEXT, 255),
    ("from_tag", TEXT, 255),
    ("to_user", TEXT, 255),
    ("to_tag", TEXT, 255),
    ("pid_user", TEXT, 255),
    ("contact_user", TEXT, 255),
    ("auth_user", TEXT, 255),
    ("callid", TEXT, 255),
    ("callid_aleg", TEXT, 255),
    ("via_1", TEXT, 4096),
    ("via_1_branch", TEXT, 255),
    ("cseq", TEXT, 255),
    ("reason", TEXT, 4096),
    ("content_type", TEXT, 4096),
    ("auth", TEXT, 4096),
    ("user_agent", TEXT, 4096),
    ("source_ip", TEXT, 60),
    ("source_port", INT, 0),
    ("destination_ip", TEXT, 60),
    ("destination_port", INT, 0),
    ("contact_ip", TEXT, 255),
    ("contact_port", INT, 0),
    ("originator_ip", TEXT, 255),
    ("originator_port", INT, 0),
    ("proto", INT, 0),
    ("family", INT, 0),
    ("rtp_stat", TEXT, 4096),
    ("type", INT, 0),
    ("node", TEXT, 255),
    ("correlation_id", TEXT, 4096),
    ("from_domain", TEXT, 255),
    ("to_domain", TEXT, 255),
    ("ruri_domain", TEXT, 255),
    ("diversion", TEXT, 4096),
    ("msg", BLOB, 0),
    ("custom_field1", TEXT, 4096),
    ("custom_field2", TEXT, 4096),
    ("custom_field3", TEXT, 4096),
)
SIP_COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in SIP_COLUMNS)

# rtcp_capture / report_capture / logs_capture: Kamailio's 11 inserted columns.
AUX_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("date", DATETIME, 0),
    ("micro_ts", BIGINT, 0),
    ("correlation_id", TEXT, 4096),
    ("source_ip", TEXT, 60),
    ("source_port", INT, 0),
    ("destination_ip", TEXT, 60),
    ("destination_port", INT, 0),
    ("proto", INT, 0),
    ("family", INT, 0),
    ("type", INT, 0),
    ("node", TEXT, 255),
    ("msg", BLOB, 0),
)
AUX_COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in AUX_COLUMNS)

# HEP payload type -> (fixed table, value of its ``type`` column), as the module does.
# The module knows no MOS reports (34, 35; ../shared/reference/HEP.md 1.4): they go to
# report_capture like its QoS reports, with their HEP type as ``type`` (its own values
# 2..5 are taken, and the type says which report it is).
AUX_TABLES: dict[int, tuple[str, int]] = {
    HEP_TYPE_RTCP: ("rtcp_capture", 3),
    HEP_TYPE_REPORT: ("report_capture", 2),
    HEP_TYPE_MOS_FULL: ("report_capture", HEP_TYPE_MOS_FULL),
    HEP_TYPE_MOS_SHORT: ("report_capture", HEP_TYPE_MOS_SHORT),
    HEP_TYPE_REPORT99: ("report_capture", 4),
    HEP_TYPE_LOG: ("logs_capture", 5),
}
