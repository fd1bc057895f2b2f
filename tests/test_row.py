"""Unit tests of the row builder (sipcaptool.row)."""

from __future__ import annotations

from collections import Counter

import pytest

from sipcaptool.decode.sip import parse_sip
from sipcaptool.errors import ConfigError
from sipcaptool.record import (
    AUX_COLUMN_NAMES,
    HEP_TYPE_LOG,
    HEP_TYPE_MOS_FULL,
    HEP_TYPE_MOS_SHORT,
    HEP_TYPE_REPORT,
    HEP_TYPE_REPORT99,
    HEP_TYPE_RTCP,
    SIP_COLUMN_NAMES,
    SIP_COLUMNS,
    CapturedMessage,
)
from sipcaptool.row import RowOptions, aux_row, format_date, hash_key, sip_row

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=ft-1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@vectors  tail\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5060>\r\n"
    b"X-CID: aleg-1\r\n"
    b"X-Other-CID: other-1\r\n"
    b"Mac: aa:bb\r\n"
    b"IP: 203.0.113.5\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def captured(payload=INVITE, **kw) -> CapturedMessage:
    args = dict(ts_us=1767225601000001, src_ip="192.0.2.1", src_port=5060,
                dst_ip="198.51.100.2", dst_port=5080, proto=1, family=2, payload=payload,
                node_id=7001)
    args.update(kw)
    return CapturedMessage(**args)


def row_dict(msg=None, opts=None, stats=None) -> dict:
    msg = msg or captured()
    opts = opts or RowOptions()
    values = sip_row(msg, parse_sip(msg.payload), opts, stats)
    assert len(values) == len(SIP_COLUMN_NAMES) == 44
    return dict(zip(SIP_COLUMN_NAMES, values, strict=False))


def test_sip_row_values():
    r = row_dict()
    assert r["date"] == "2026-01-01 00:00:01"
    assert r["micro_ts"] == 1767225601000001
    assert (r["method"], r["ruri_user"], r["from_user"], r["from_tag"]) == ("INVITE", "bob", "alice", "ft-1")
    assert (r["source_ip"], r["source_port"], r["destination_ip"], r["destination_port"]) == (
        "192.0.2.1", 5060, "198.51.100.2", 5080)
    assert (r["proto"], r["family"], r["type"]) == (1, 2, 1)
    assert r["node"] == "homer01:7001"
    assert r["callid"] == r["correlation_id"] == "c1@vectors  tail"
    assert r["callid_aleg"] == "aleg-1"
    assert (r["custom_field1"], r["custom_field2"], r["custom_field3"]) == ("aa:bb", "203.0.113.5", "")
    assert r["msg"] == INVITE and isinstance(r["msg"], bytes)
    assert (r["contact_ip"], r["contact_port"]) == ("192.0.2.1", 5060)


def test_every_text_column_is_a_string_never_none():
    r = row_dict()
    for name, kind, _ in SIP_COLUMNS:
        if kind == "text":
            assert isinstance(r[name], str), name
        elif kind in ("int", "bigint"):
            assert isinstance(r[name], int), name


def test_node_and_correlation_id():
    assert row_dict(captured(node_id=None))["node"] == "homer01"
    assert row_dict(captured(node_id=0))["node"] == "homer01:0"
    assert row_dict(captured(), RowOptions(capture_node="edge"))["node"] == "edge:7001"
    assert row_dict(captured(correlation_id=""))["correlation_id"] == ""  # empty chunk 17
    assert row_dict(captured(correlation_id="corr-9"))["correlation_id"] == "corr-9"


def test_configurable_headers():
    opts = RowOptions(callid_aleg_headers=("X-None", "x-other-cid", "X-CID"),
                      custom_field_headers=("IP", "", "mac"))
    r = row_dict(opts=opts)
    assert r["callid_aleg"] == "other-1"
    assert (r["custom_field1"], r["custom_field2"], r["custom_field3"]) == ("203.0.113.5", "", "aa:bb")
    r = row_dict(opts=RowOptions(callid_aleg_headers=(), custom_field_headers=()))
    assert r["callid_aleg"] == "" and r["custom_field1"] == r["custom_field3"] == ""


def test_date_is_utc_and_cached_per_second():
    assert format_date(0) == "1970-01-01 00:00:00"
    assert format_date(1767225599_999_999) == "2025-12-31 23:59:59"
    assert format_date(1767225600_000_000) == "2026-01-01 00:00:00"
    assert format_date(1767225600_000_000) is format_date(1767225600_999_999)
    assert format_date(2**31 * 1_000_000) == "2038-01-19 03:14:08"


def test_truncation_is_counted_and_row_kept():
    widths = {name: width for name, _, width in SIP_COLUMNS}
    long_ua = "u" * (widths["user_agent"] + 10)
    long_method = "M" * 60
    payload = INVITE.replace(b"INVITE sip:", long_method.encode() + b" sip:").replace(
        b"Content-Length", b"User-Agent: " + long_ua.encode() + b"\r\nContent-Length")
    stats = Counter()
    r = row_dict(captured(payload=payload), stats=stats)
    assert r["user_agent"] == long_ua[: widths["user_agent"]]
    assert r["method"] == long_method[:50]
    assert stats == Counter({"truncated:user_agent": 1, "truncated:method": 1})
    assert r["msg"] == payload  # never cut
    # no stats object: still cut, nothing raised
    assert row_dict(captured(payload=payload))["method"] == long_method[:50]


@pytest.mark.parametrize(
    "hep_type, type_value",
    [(HEP_TYPE_RTCP, 3), (HEP_TYPE_REPORT, 2), (HEP_TYPE_REPORT99, 4), (HEP_TYPE_LOG, 5),
     (HEP_TYPE_MOS_FULL, 34), (HEP_TYPE_MOS_SHORT, 35)],
)
def test_aux_row(hep_type, type_value):
    msg = captured(payload=b'{"type":200}', hep_type=hep_type, hep_family=2, hep_ip_proto=17,
                   correlation_id="corr-25", node_id=7025)
    r = dict(zip(AUX_COLUMN_NAMES, aux_row(msg, RowOptions()), strict=False))
    assert r == {
        "date": "2026-01-01 00:00:01", "micro_ts": 1767225601000001,
        "correlation_id": "corr-25", "source_ip": "192.0.2.1", "source_port": 5060,
        "destination_ip": "198.51.100.2", "destination_port": 5080, "proto": 1,
        "family": 2, "type": type_value, "node": "homer01:7025", "msg": b'{"type":200}',
    }


def test_aux_row_proto_family_and_missing_correlation():
    base = dict(payload=b"log", hep_type=HEP_TYPE_LOG, node_id=None)
    def get(**kw):
        return dict(zip(AUX_COLUMN_NAMES, aux_row(captured(**base, **kw), RowOptions()), strict=True))
    assert get(hep_ip_proto=6)["proto"] == 2
    assert get(hep_ip_proto=132)["proto"] == 0
    assert get(hep_ip_proto=None)["proto"] == 0
    assert get(hep_family=7)["family"] == 7  # the raw family chunk
    assert get(hep_family=None)["family"] == 2
    r = get()
    assert r["correlation_id"] == "" and r["node"] == "homer01"
    with pytest.raises(ValueError):
        aux_row(captured(), RowOptions())  # a SIP message has no aux table


def test_hash_key():
    sip = parse_sip(INVITE)
    assert hash_key(sip, "call_id") == "c1@vectors"
    assert hash_key(sip, "from_user") == "alice"
    assert hash_key(sip, "to_user") == "bob"
    reply = parse_sip(INVITE.replace(b"From: \"Alice\" <sip:alice@", b"From: <sip:"))
    assert hash_key(reply, "from_user") == ""  # empty key: the router decides
    with pytest.raises(ConfigError):
        hash_key(sip, "via")
