"""Private ClickHouse servers for the tests: one single server, or a two-shard cluster.

Each server runs Debian's ``clickhouse-server`` (``/usr/bin/clickhouse server``) with its
own configuration, data directory and ports (never 9000/8123), in a temporary directory,
and is stopped by its PID at the end. Every server of a cluster lists all of them in
``remote_servers`` under the cluster name ``sipcap``, one shard each.

Used by the ``ch_url``/``ch_cluster`` fixtures (tests/conftest.py) and by bench/clickhouse.py.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTER = "sipcap"


def clickhouse_binary() -> str | None:
    """The server program: ``clickhouse-server`` or ``clickhouse server`` (None: absent)."""
    for name in ("clickhouse-server", "/usr/sbin/clickhouse-server"):
        p = shutil.which(name)
        if p:
            return p
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (bound and released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies (a test run killed
    half way leaves no server behind)."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/server.log</log>
    <errorlog>{dir}/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <remote_servers>
    <{cluster}>
{shards}
    </{cluster}>
  </remote_servers>
  <query_log><database>system</database><table>query_log</table>
    <partition_by>toYYYYMM(event_date)</partition_by>
    <flush_interval_milliseconds>7500</flush_interval_milliseconds></query_log>
</yandex>
"""

_SHARD = """      <shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>"""

_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


@dataclass
class ClickHouseServer:
    """One private server: its directory, ports and process."""

    directory: Path
    tcp_port: int
    http_port: int
    inter_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's URL without a database name."""
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}"

    def write_config(self, shard_ports: list[int]) -> None:
        d = self.directory
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shards = "\n".join(_SHARD.format(port=p) for p in shard_ports)
        (d / "config.xml").write_text(_CONFIG.format(
            dir=d, tcp=self.tcp_port, http=self.http_port, inter=self.inter_port,
            cluster=CLUSTER, shards=shards))
        (d / "users.xml").write_text(_USERS)

    def start(self, wait: float = 60.0) -> None:
        """Start the server and wait until it answers a query (RuntimeError if not)."""
        binary = clickhouse_binary()
        if binary is None:
            raise RuntimeError("clickhouse-server is not installed")
        log = open(self.directory / "stdout.log", "ab")  # noqa: SIM115 - child keeps it
        self.proc = subprocess.Popen(
            [binary, "--config-file", str(self.directory / "config.xml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.directory, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with {self.proc.returncode}: "
                                   + self.log_tail())
            if self.answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("clickhouse-server did not answer in time: " + self.log_tail())

    def answers(self) -> bool:
        from clickhouse_driver import Client
        logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)  # "refused" at start
        try:
            c = Client("127.0.0.1", port=self.tcp_port, connect_timeout=1, send_receive_timeout=5)
            c.execute("SELECT 1")
            c.disconnect()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def log_tail(self) -> str:
        for name in ("server.err.log", "stdout.log"):
            p = self.directory / name
            if p.exists() and p.stat().st_size:
                return p.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        """Stop the server by its PID (TERM, then KILL after 20 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL by its PID): a crash."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


class ClickHouseGroup:
    """``n`` servers in one temporary directory, each listing all of them as the shards of
    the cluster ``sipcap`` (one server: a cluster of one shard)."""

    def __init__(self, n: int = 1, base: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sipcaptool-ch-", dir=base))
        ports = free_ports(3 * n)
        self.servers = [ClickHouseServer(self.root / f"s{i}", ports[3 * i], ports[3 * i + 1],
                                         ports[3 * i + 2]) for i in range(n)]
        for s in self.servers:
            s.write_config([x.tcp_port for x in self.servers])

    def start(self) -> None:
        try:
            for s in self.servers:
                s.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, remove: bool = True) -> None:
        for s in self.servers:
            s.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClickHouseGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    """``python tests/clickhouse_server.py [N]``: run N servers until Ctrl-C (for trying
    docs/scale-out.md by hand)."""
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with ClickHouseGroup(n) as g:
        for s in g.servers:
            print(f"{s.url}  (pid {s.proc.pid if s.proc else '?'}, {s.directory})", flush=True)
        print(f"cluster name: {CLUSTER}; Ctrl-C stops them", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CLUSTER", "ClickHouseGroup", "ClickHouseServer", "clickhouse_binary", "free_ports",
           "wait_count", "wait_count_on"]


def wait_count_on(adapter: Any, table: str, n: int, timeout: float = 60) -> int:
    """Rows in ``table`` through the connected ``adapter`` (through the Distributed table
    on a cluster), waiting up to ``timeout`` seconds for ``n`` (a Distributed table sends
    its shards their rows in the background)."""
    deadline = time.monotonic() + timeout
    got = adapter.count(table)
    while got < n and time.monotonic() < deadline:
        time.sleep(0.25)
        got = adapter.count(table)
    return int(got)


def wait_count(url: str, table: str, n: int, timeout: float = 60) -> int:
    """:func:`wait_count_on` with an adapter of its own on ``url``."""
    from sipcaptool.store import open_adapter

    a = open_adapter(url)
    try:
        return wait_count_on(a, table, n, timeout)
    finally:
        a.close()
