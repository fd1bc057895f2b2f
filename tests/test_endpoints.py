"""One grammar for addresses and sizes (sipcaptool.net), and every setting that uses it.

One table: each row is a wrapper (the setting's own accepted forms), a text, and what it
gives -- or the ConfigError it raises, which names the setting and says what is allowed.
"""

from __future__ import annotations

import socket

import pytest

from sipcaptool.errors import ConfigError
from sipcaptool.net import (
    Endpoint,
    EndpointError,
    parse_endpoint,
    parse_hostport,
    parse_ports,
    parse_size,
    set_rcvbuf,
    size_bytes,
)
from sipcaptool.senders.hep import parse_target
from sipcaptool.sources.hep_sockets import ListenSpec
from sipcaptool.sources.hep_sockets import parse_listen as parse_hep_listen
from sipcaptool.sources.live import Listen
from sipcaptool.sources.live import parse_listen as parse_raw_listen

# the wrappers, by the setting whose values they read
WRAPPERS = {
    "--ports": parse_ports,
    "raw_socket_listen": parse_raw_listen,
    "--listen": parse_hep_listen,
    "--hep-to": parse_target,
    "--metrics": parse_hostport,
}

ERR = ConfigError  # every refusal

TABLE = [
    # replay --ports: a list of ports and ranges, 1-65535
    ("--ports", "5060", frozenset({5060})),
    ("--ports", "5060,5080-5082", frozenset({5060, 5080, 5081, 5082})),
    ("--ports", " 5060 , ,5061", frozenset({5060, 5061})),
    ("--ports", "", None),
    ("--ports", "0", ERR),                       # port 0: not a port to filter on
    ("--ports", "65536", ERR),
    ("--ports", "5090-5060", ERR),               # a range goes low to high
    ("--ports", "5060-", ERR),                   # missing part
    ("--ports", "sip", ERR),
    ("--ports", "[::1]:5060", ERR),              # no hosts here
    # live raw_socket_listen: [IP][:PORT[-PORT]], port 5060 when left out
    ("raw_socket_listen", "", Listen("", 5060, 5060)),
    ("raw_socket_listen", "5080", Listen("", 5080, 5080)),
    ("raw_socket_listen", ":5060-5090", Listen("", 5060, 5090)),
    ("raw_socket_listen", "10.0.0.1:5060", Listen("10.0.0.1", 5060, 5060)),
    ("raw_socket_listen", "10.0.0.1:5060-5090", Listen("10.0.0.1", 5060, 5090)),
    ("raw_socket_listen", "10.0.0.1", Listen("10.0.0.1", 5060, 5060)),
    ("raw_socket_listen", "10.0.0.1:", Listen("10.0.0.1", 5060, 5060)),
    ("raw_socket_listen", "[fd00::1]:5062", Listen("fd00::1", 5062, 5062)),
    ("raw_socket_listen", "[fd00::1]:5062-5064", Listen("fd00::1", 5062, 5064)),
    ("raw_socket_listen", "[fd00::1]", Listen("fd00::1", 5060, 5060)),
    ("raw_socket_listen", "fd00::1", Listen("fd00::1", 5060, 5060)),   # bare IPv6: no port
    ("raw_socket_listen", ":0", ERR),            # port 0 refused
    ("raw_socket_listen", ":5090-5060", ERR),
    ("raw_socket_listen", "10.0.0.1:abc", ERR),
    ("raw_socket_listen", "host:5060", ERR),     # an IP address, not a name
    ("raw_socket_listen", "[::1:5060", ERR),     # missing ]
    ("raw_socket_listen", "[::1]5060", ERR),
    ("raw_socket_listen", "udp:10.0.0.1:5060", ERR),  # no transport here
    # hep --listen: udp|tcp:[IP:]PORT, port 0-65535 (0: the system picks)
    ("--listen", "udp:0.0.0.0:9060", ListenSpec("udp", "0.0.0.0", 9060)),
    ("--listen", "tcp:[::]:9061", ListenSpec("tcp", "::", 9061)),
    ("--listen", "UDP:9060", ListenSpec("udp", "0.0.0.0", 9060)),
    ("--listen", "udp::9060", ListenSpec("udp", "0.0.0.0", 9060)),
    ("--listen", "tcp:127.0.0.1:0", ListenSpec("tcp", "127.0.0.1", 0)),   # port 0 allowed
    ("--listen", "sctp:0.0.0.0:1", ERR),
    ("--listen", "0.0.0.0:9060", ERR),           # the transport is required
    ("--listen", "udp:host.example:9060", ERR),  # an IP address, not a name
    ("--listen", "udp:1.2.3.4:70000", ERR),
    ("--listen", "udp:::1:5", ERR),              # IPv6 with a port: in brackets
    ("--listen", "udp:[::1]", ERR),              # missing port
    ("--listen", "udp:1.2.3.4", ERR),
    ("--listen", "udp:9060-9061", ERR),          # no ranges here
    # live --hep-to: udp|tcp:HOST:PORT, a name or an address, port 1-65535
    ("--hep-to", "udp:127.0.0.1:9060", ("udp", "127.0.0.1", 9060)),
    ("--hep-to", "tcp:collector.example:9061", ("tcp", "collector.example", 9061)),
    ("--hep-to", "udp:[::1]:9060", ("udp", "::1", 9060)),
    ("--hep-to", "udp:127.0.0.1", ERR),          # missing port
    ("--hep-to", "udp::9060", ERR),              # missing host
    ("--hep-to", "sctp:1.2.3.4:9060", ERR),
    ("--hep-to", "udp:1.2.3.4:0", ERR),          # port 0 refused
    ("--hep-to", "9060", ERR),
    ("--hep-to", "udp:::1:9060", ERR),           # IPv6 with a port: in brackets
    ("--hep-to", "udp:[::1:9060", ERR),
    # --metrics: [HOST:]PORT, port 0-65535, host 127.0.0.1 when left out
    ("--metrics", "127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("--metrics", "[::1]:9100", ("::1", 9100)),
    ("--metrics", "9100", ("127.0.0.1", 9100)),
    ("--metrics", ":9100", ("127.0.0.1", 9100)),
    ("--metrics", "0.0.0.0:0", ("0.0.0.0", 0)),  # port 0 allowed
    ("--metrics", "host:port", ERR),
    ("--metrics", "::1:9100", ERR),
    ("--metrics", "[::1]", ERR),
    ("--metrics", "localhost", ERR),
    ("--metrics", "9100-9101", ERR),
]


@pytest.mark.parametrize("setting,text,expected", TABLE,
                         ids=[f"{s} {t!r}" for s, t, _ in TABLE])
def test_every_wrapper_reads_the_one_grammar(setting, text, expected):
    parse = WRAPPERS[setting]
    if expected is ERR:
        with pytest.raises(ConfigError) as info:
            parse(text)
        message = str(info.value)
        assert message.startswith(f"{setting} {text!r}: "), message  # setting and value
        assert "; expected " in message, message  # what is allowed
        assert isinstance(info.value, ValueError)  # a malformed value, as int() says
    else:
        assert parse(text) == expected


def test_the_core_returns_what_was_written():
    assert parse_endpoint("tcp:[fd00::1]:5060-5070", "x", expected="?", transports=("tcp",),
                          ranges=True) == Endpoint("tcp", "fd00::1", 5060, 5070)
    assert parse_endpoint("", "x", expected="?") == Endpoint("", "", None, None)
    assert parse_endpoint("example.org", "x", expected="?") == Endpoint("", "example.org",
                                                                        None, None)
    with pytest.raises(EndpointError, match=r"^x 'a:b:c': 'a:b:c' is not an IP address"):
        parse_endpoint("a:b:c", "x", expected="?")


@pytest.mark.parametrize("text,expected", [
    ("67108864", 67108864), ("64M", 64 << 20), ("64MiB", 64 << 20), ("64mb", 64 << 20),
    ("512k", 512 << 10), ("1G", 1 << 30), ("2GiB", 2 << 30), ("1T", 1 << 40),
    ("1.5K", 1536), (" 8M ", 8 << 20), ("0", 0),
    ("", None), ("M", None), ("-1", None), ("1P", None), ("64 MB x", None),
])
def test_sizes(text, expected):
    assert size_bytes(text) == expected
    if expected is None:
        with pytest.raises(ConfigError, match=rf"^--rcvbuf {text!r}: expected bytes"):
            parse_size(text, "--rcvbuf")
        with pytest.raises(ConfigError, match=r"^spool_max_bytes = .* \(from f\.toml\): "):
            parse_size(text, "spool_max_bytes =", " (from f.toml)")
    else:
        assert parse_size(text, "--rcvbuf") == expected


def test_set_rcvbuf_reports_what_the_kernel_gives():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        before = set_rcvbuf(s, 0)  # 0: leave it, say what it is
        assert before == s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
        got = set_rcvbuf(s, 256 * 1024)
        assert got == s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
