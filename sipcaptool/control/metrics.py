"""``/metrics``: the stats document in the Prometheus text format, and its HTTP server."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import CaptureError
from ..stats import Stats
from .document import GAUGES, GROUPS, build_stats, snapshot, with_counters
from .loop import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    LISTEN_BACKLOG,
    MAX_REQUEST,
    Conn,
    SelectorServer,
)

__all__ = ["MetricsServer", "prometheus_text"]

log = logging.getLogger("sipcaptool.control")


def _metric_name(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def _label(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(doc: Mapping[str, Any]) -> str:
    """The stats document in the Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
        full = "sipcaptool_" + name
        out.append(f"# HELP {full} {help_}")
        out.append(f"# TYPE {full} {kind}")
        for labels, v in samples:
            out.append(f"{full}{labels} {v}")

    metric("capture_on", "gauge", "1 while messages are stored, 0 while switched off.",
           [("", 1 if doc.get("capture") == "on" else 0)])
    metric("uptime_seconds", "gauge", "Seconds since start.", [("", doc.get("uptime_s", 0))])
    metric("packets_total", "counter", "Packets or datagrams received.",
           [("", doc.get("packets", 0))])
    metric("messages_total", "counter", "Messages decoded.", [("", doc.get("messages", 0))])
    for g in GROUPS:
        group = doc.get(g.key) or {}
        if group:
            metric(f"{g.key}_total", "counter", g.help,
                   [(f'{{{g.label}="{_label(str(k))}"}}', v) for k, v in group.items()])
    for gauge in GAUGES:
        if doc.get(gauge) is not None:
            metric(_metric_name(gauge), "gauge", gauge.replace("_", " ").capitalize() + ".",
                   [("", doc[gauge])])
    return "\n".join(out) + "\n"


class MetricsServer(SelectorServer):
    """``GET /metrics`` in the Prometheus text format, served from one daemon thread.

    A small HTTP/1.x server of its own rather than ``http.server`` (a thread per
    connection, each waiting as long as its client trickles) or prometheus-client (the
    same ``http.server`` underneath): one request per connection, answered with
    ``Connection: close``; see Limits in :mod:`sipcaptool.control.loop`.

    Args:
        addr: (host, port); port 0 picks a free one (see ``address`` after start).
        stats_provider: as for :class:`ControlServer`.
        capture_flag: optional, for ``sipcaptool_capture_on``.
        request_timeout: seconds a client may take to send its request and read the
            answer; then the connection is closed (``metrics:timeout``).
        max_connections: open connections at most; see Limits in :mod:`sipcaptool.control.loop`.
        counters: where ``metrics:<reason>`` is counted (and read back into the answer).
    """

    kind = "metrics"

    def __init__(self, addr: tuple[str, int], stats_provider: Callable[[], Mapping[str, Any]],
                 *, capture_flag: Any = None, request_timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 counters: Stats | None = None) -> None:
        super().__init__(timeout=request_timeout, max_connections=max_connections,
                         counters=counters)
        self.request_timeout = request_timeout
        self.addr = addr
        self.stats_provider = stats_provider
        self.capture_flag = capture_flag
        self.started = time.time()
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._address or self.addr

    def _describe(self) -> str:
        host, port = self.address
        return f"metrics {host}:{port}"

    def start(self) -> MetricsServer:
        host, port = self.addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as e:
            sock.close()
            raise CaptureError(f"--metrics {host}:{port}: cannot listen: "
                               f"{e.strerror or e}") from None
        self._address = sock.getsockname()[:2]
        self.started = time.time()
        self._start_loop(sock, "sipcaptool-metrics")
        return self

    def stop(self) -> None:
        self._stop_loop()

    def body(self) -> bytes:
        flag = self.capture_flag
        doc = build_stats(with_counters(snapshot(self.stats_provider), self.counters),
                          capture_on=bool(flag.value) if flag is not None else True,
                          started=self.started)
        return prometheus_text(doc).encode()

    def _on_data(self, conn: Conn, now: float) -> None:
        if conn.closing:
            conn.inbuf = b""
            return
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST:
                self._count("request-too-long")
                self._respond(conn, 431, "Request Header Fields Too Large")
            elif conn.eof:
                conn.closing = True  # the client gave up before its request was whole
            return
        head = conn.inbuf[:end].split(b"\n", 1)[0].rstrip(b"\r")
        conn.inbuf = b""
        parts = head.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._count("bad-request")
            self._respond(conn, 400, "Bad Request")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._count("bad-request")
            self._respond(conn, 405, "Method Not Allowed", extra=b"Allow: GET, HEAD\r\n")
            return
        if target not in (b"/metrics", b"/"):
            self._respond(conn, 404, "Not Found")
            return
        try:
            body = self.body()
        except Exception as e:  # a bug in a provider must not kill the server
            log.exception("metrics: building the answer failed")
            self._respond(conn, 500, "Internal Server Error",
                          body=f"{type(e).__name__}: {e}\n".encode())
            return
        self._respond(conn, 200, "OK", body=body, head_only=method == b"HEAD",
                      ctype=b"text/plain; version=0.0.4; charset=utf-8")
        log.debug("metrics: GET %s 200 %d bytes", target.decode("latin-1"), len(body))

    def _respond(self, conn: Conn, code: int, reason: str, *, body: bytes | None = None,
                 head_only: bool = False, ctype: bytes = b"text/plain; charset=utf-8",
                 extra: bytes = b"") -> None:
        if body is None:
            body = f"{code} {reason}\n".encode()
        conn.outbuf += (f"HTTP/1.1 {code} {reason}\r\n".encode() + b"Content-Type: " + ctype
                        + f"\r\nContent-Length: {len(body)}\r\n".encode() + extra
                        + b"Connection: close\r\n\r\n")
        if not head_only:
            conn.outbuf += body
        conn.closing = True

