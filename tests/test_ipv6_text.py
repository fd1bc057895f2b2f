"""The decode layer prints IPv6 addresses itself; it must print exactly what inet_ntop does."""

import socket

from hypothesis import given
from hypothesis import strategies as st

from sipcaptool.decode.ip import addr_str, ipv6_str

# addresses with many zero groups are the interesting ones
groups = st.lists(st.one_of(st.just(0), st.integers(0, 0xFFFF)), min_size=8, max_size=8)


@given(groups)
def test_same_text_as_inet_ntop(g):
    raw = b"".join(x.to_bytes(2, "big") for x in g)
    assert ipv6_str(raw) == socket.inet_ntop(socket.AF_INET6, raw)


def test_known_forms():
    assert ipv6_str(bytes(16)) == "::"
    assert ipv6_str(bytes(15) + b"\x01") == "::1"
    assert ipv6_str(bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])) == "::ffff:192.0.2.1"
    assert addr_str(bytes([10, 0, 0, 1])) == "10.0.0.1"
    assert addr_str(bytes.fromhex("20010db8000000000000000000000001")) == "2001:db8::1"
