"""The collector against a hostile world, end to end: the real ``sipcaptool hep`` as a
subprocess, real sockets on 127.0.0.1, a real PostgreSQL made slow on purpose.

* Stopping loses nothing it has received: SIGTERM with a backlog in the socket that a
  slow database cannot take within the drain time. Every message that reached the
  socket before the signal is stored, or read and counted as ``dropped:shutdown`` (and
  then the exit status is 4); traffic sent after the signal is refused by the kernel
  and counted as ``kernel:udp-after-stop``.
* Idle TCP connections do not lock out a new agent: at ``tcp_max_connections`` the
  connection silent longest is closed for the new one (``evicted:tcp-limit``).

Figures for the README's reliability table are printed as ``RELIABILITY {json}`` lines.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

from store_helpers import connect
from test_hep_collector import ROOT, message, rows_by_callid

from sipcaptool.config import Settings
from sipcaptool.encode.hep import encode_hep3


def _report(**row) -> None:
    print("RELIABILITY", json.dumps(row))


def _wait_for(cond, timeout: float, what: str, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def _slow_postgres(url: str, seconds: float) -> None:
    """Create the tables, then make every statement writing sip_capture take ``seconds``
    (a statement trigger sleeping in the server: COPY and INSERT both fire it)."""
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "db", "init", "--db", url],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"""
            CREATE FUNCTION slow_statement() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
            CREATE TRIGGER slow_statement AFTER INSERT ON sip_capture
                FOR EACH STATEMENT EXECUTE FUNCTION slow_statement();""")
        conn.commit()
    finally:
        conn.close()


def _rows(url: str) -> set[str]:
    """Call-IDs stored so far (none while the collector has not made its table yet)."""
    try:
        return set(rows_by_callid(url))
    except Exception:  # noqa: BLE001 - no table yet
        return set()


def _stored(url: str, tag: str) -> set[str]:
    return {k for k in rows_by_callid(url) if k.startswith(tag + "-")}


def _backlog(c, tag: str, n: int) -> None:
    """Send ``n`` datagrams as fast as the socket takes them (all fit in its buffer)."""
    for i in range(n):
        c.send_udp(encode_hep3(message(f"{tag}-{i}")))


def _stopping(c) -> bool:
    return any("stopping" in ln and "reading what the sockets hold" in ln for ln in c.err_lines)


# --------------------------------------------------------------------------- SIGTERM

def test_sigterm_with_a_backlog_the_database_cannot_take_in_time_counts_what_it_leaves(
        pg_url, collectors, tmp_path):
    """A database writing 100 rows every 0.25 s, 2,500 datagrams in the socket and 60
    packets waiting on a TCP connection, SIGTERM, 2 s of drain: what is not stored by
    then is read and counted (dropped:shutdown), the exit status says so, and
    sent == stored + counted, each message exactly once."""
    _slow_postgres(pg_url, 0.25)
    c = collectors(pg_url, "--batch-size", "100", "--stop-drain-timeout", "2",
                   "--spool-dir", str(tmp_path / "spool"), "-v")
    agent = c.tcp()
    sent_udp, sent_tcp = 2500, 60
    _backlog(c, "udp", sent_udp)
    agent.sendall(b"".join(encode_hep3(message(f"tcp-{i}")) for i in range(sent_tcp)))
    time.sleep(1.0)            # the collector is blocked on the database by now
    t0 = time.monotonic()
    rc, summary, err = c.stop()
    stop_seconds = time.monotonic() - t0
    agent.close()
    stored = _stored(pg_url, "udp") | _stored(pg_url, "tcp")
    sent = sent_udp + sent_tcp
    dropped = summary["dropped"].get("shutdown", 0)
    _report(fault="SIGTERM with a backlog a slow database (100 rows / 0.25 s) cannot take "
            "within --stop-drain-timeout 2", database="postgresql", sent=sent,
            stored=len(stored), dropped_counted=dropped, lost=sent - len(stored) - dropped,
            exit=rc, stop_seconds=round(stop_seconds, 1))
    assert rc == 4, err
    assert any("were not stored" in e and "dropped:shutdown" in e for e in summary["errors"])
    assert "counted as dropped:shutdown" in err    # the log says it as it happens
    assert dropped > 0, summary                    # the database was too slow: some left
    assert summary["stored_total"] == len(stored)  # every row counted was written
    assert len(stored) + dropped == sent, (len(stored), dropped, summary)
    assert summary["packets"] == sent and summary["malformed"] == {}, summary
    assert summary["kernel"].get("udp-drops", 0) == 0, summary


def test_sigterm_without_a_drain_limit_stores_the_whole_backlog_and_refuses_new_traffic(
        pg_url, collectors, tmp_path):
    """--stop-drain-timeout 0: everything that reached the socket before the signal is
    stored, however long the database takes (about 7 s here; the collector reads about
    1,500 before it waits on the database, so the drain itself takes some 3 s);
    datagrams sent during the drain are neither stored nor read: the kernel refuses
    them and they are counted."""
    _slow_postgres(pg_url, 0.25)
    c = collectors(pg_url, "--batch-size", "100", "--stop-drain-timeout", "0",
                   "--spool-dir", str(tmp_path / "spool"), "-v", tcp=False)
    sent = 3000
    _backlog(c, "udp", sent)
    time.sleep(1.0)
    c.proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: _stopping(c), 20, "the collector to seal its sockets")
    late = 200
    _backlog(c, "late", late)
    c.proc.wait(60)                # (stop() would send a second signal)
    rc, summary, err = c.stop()
    stored = _stored(pg_url, "udp")
    _report(fault="SIGTERM with a backlog a slow database (100 rows / 0.25 s) takes 7 s "
            "to write, --stop-drain-timeout 0", database="postgresql", sent=sent,
            stored=len(stored), dropped_counted=summary["dropped"].get("shutdown", 0),
            lost=sent - len(stored), exit=rc, sent_after_signal=late,
            refused_after_signal=summary["kernel"].get("udp-after-stop", 0))
    assert rc == 0, err
    assert stored == {f"udp-{i}" for i in range(sent)}
    assert summary["dropped"] == {} and summary["packets"] == sent, summary
    assert _stored(pg_url, "late") == set()
    assert summary["kernel"].get("udp-after-stop") == late, summary
    assert summary["kernel"].get("udp-drops", 0) == 0, summary


def test_a_second_signal_cuts_the_drain_short_and_everything_left_is_counted(
        pg_url, collectors, tmp_path):
    """An operator who will not wait (a second Ctrl-C, a second SIGTERM): the drain stops
    storing at once, the rest of the backlog is read and counted, and nothing is lost."""
    _slow_postgres(pg_url, 0.25)
    c = collectors(pg_url, "--batch-size", "100", "--stop-drain-timeout", "0",
                   "--spool-dir", str(tmp_path / "spool"), "-v", tcp=False)
    sent = 3000
    _backlog(c, "udp", sent)
    time.sleep(1.0)
    c.proc.send_signal(signal.SIGINT)
    _wait_for(lambda: _stopping(c), 20, "the collector to seal its sockets")
    rc, summary, err = c.stop(signal.SIGINT)
    stored = _stored(pg_url, "udp")
    dropped = summary["dropped"].get("shutdown", 0)
    assert rc == 4, err
    assert dropped > 0 and len(stored) + dropped == sent, (len(stored), summary)
    assert summary["stored_total"] == len(stored) and summary["packets"] == sent
    assert "a second signal" in err


def test_a_packet_half_received_at_the_stop_is_counted_as_cut_not_as_a_database_failure(
        sqlite_url, collectors):
    """An agent in the middle of a packet when SIGTERM comes: the whole packets before it
    are stored, the cut one counted as malformed:hep3-stream-truncated, and the exit
    status stays 0 (nothing the database failed to take)."""
    c = collectors(sqlite_url, udp=False)
    agent = c.tcp()
    whole = [encode_hep3(message(f"whole-{i}")) for i in range(3)]
    agent.sendall(b"".join(whole) + encode_hep3(message("cut"))[:25])
    _wait_for(lambda: len(_rows(sqlite_url)) >= 3, 10, "the rows")
    rc, summary, err = c.stop()
    agent.close()
    assert rc == 0, err
    assert _rows(sqlite_url) == {f"whole-{i}" for i in range(3)}
    assert summary["malformed"] == {"hep3-stream-truncated": 1}, summary
    assert summary["dropped"] == {}, summary


def test_with_workers_every_datagram_is_stored_or_counted_and_the_exit_status_says_which(
        sqlite_url, collectors):
    """--workers 2: each worker seals and drains its own sockets; the counts add up and
    the exit status is 4 exactly when something was counted as dropped:shutdown."""
    c = collectors(sqlite_url, "--workers", "2", "--stop-drain-timeout", "0.5", tcp=False)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    sent = 20000                   # from 8 ports, so SO_REUSEPORT spreads them
    for i in range(sent):
        senders[i % 8].sendto(encode_hep3(message(f"w-{i}")), ("127.0.0.1", c.ports["udp"]))
    rc, summary, err = c.stop()
    for s in senders:
        s.close()
    stored = _rows(sqlite_url)
    dropped = summary["dropped"].get("shutdown", 0)
    assert rc == (4 if dropped else 0), err
    assert summary["packets"] == sent and summary["stored_total"] == len(stored), summary
    assert len(stored) + dropped == sent, (len(stored), summary)
    assert summary["kernel"].get("udp-drops", 0) == 0, summary


def test_drain_limit_is_a_setting_with_a_default():
    s = Settings.load(env={})
    assert s.stop_drain_timeout == 30.0 and s.origin["stop_drain_timeout"] == "default"
    s = Settings.load(env={"SIPCAPTOOL_STOP_DRAIN_TIMEOUT": "0"})
    assert s.stop_drain_timeout == 0.0


# --------------------------------------------------------------------------- idle TCP

def _closed_by_peer(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_at_the_limit_do_not_lock_out_a_new_agent(sqlite_url, collectors):
    """tcp_max_connections idle connections (an attacker, or agents gone quiet): a new
    agent is taken, its messages stored, and the connection silent longest is closed
    for it and counted -- not the new agent refused."""
    limit = 8
    c = collectors(sqlite_url, "--tcp-max-connections", str(limit), "-v", udp=False)
    idle = [c.tcp() for _ in range(limit)]
    time.sleep(0.2)
    # the first one speaks now: the one silent longest is idle[1]
    idle[0].sendall(encode_hep3(message("early-0")))
    time.sleep(0.2)
    agent = c.tcp()
    sent = 50
    agent.sendall(b"".join(encode_hep3(message(f"agent-{i}")) for i in range(sent)))
    assert _closed_by_peer(idle[1]), "the longest-silent connection was not closed"
    for i in (0, 2, 3):            # the others stay open and are served
        idle[i].sendall(encode_hep3(message(f"kept-{i}")))
    _wait_for(lambda: len(_rows(sqlite_url)) >= sent + 4, 10, "the rows")
    for s in idle + [agent]:
        s.close()
    rc, summary, err = c.stop()
    stored = set(rows_by_callid(sqlite_url))
    _report(fault=f"{limit} idle TCP connections at --tcp-max-connections {limit}, a new "
            "agent connects", database="sqlite", sent=sent,
            stored=len({k for k in stored if k.startswith("agent-")}),
            evicted_counted=summary["evicted"].get("tcp-limit", 0), exit=rc)
    assert rc == 0, err
    assert {f"agent-{i}" for i in range(sent)} <= stored
    assert {"early-0", "kept-0", "kept-2", "kept-3"} <= stored
    assert summary["evicted"] == {"tcp-limit": 1}, summary
    assert "closed for a new agent" in err
    tcp = summary["listeners"][0]
    assert tcp["connections"] == limit + 1


def test_eviction_takes_the_longest_silent_each_time_and_counts_a_cut_packet(
        sqlite_url, collectors):
    """Agents keep coming at the limit: each evicts the longest-silent one; a connection
    evicted in the middle of a packet has that packet counted as truncated."""
    c = collectors(sqlite_url, "--tcp-max-connections", "2", udp=False)
    a = c.tcp()
    half = encode_hep3(message("cut"))
    a.sendall(half[:30])                           # a packet cut off, then silence
    time.sleep(0.2)
    b = c.tcp()
    b.sendall(encode_hep3(message("b-0")))
    time.sleep(0.2)
    n = c.tcp()                                    # evicts a (silent longest)
    n.sendall(encode_hep3(message("n-0")))
    assert _closed_by_peer(a)
    time.sleep(0.2)
    m = c.tcp()                                    # evicts b
    m.sendall(encode_hep3(message("m-0")))
    assert _closed_by_peer(b)
    n.sendall(encode_hep3(message("n-1")))         # n is kept: it spoke after b
    _wait_for(lambda: len(_rows(sqlite_url)) >= 4, 10, "the rows")
    for s in (a, b, n, m):
        s.close()
    rc, summary, err = c.stop()
    assert rc == 0, err
    assert set(rows_by_callid(sqlite_url)) == {"b-0", "n-0", "m-0", "n-1"}
    assert summary["evicted"] == {"tcp-limit": 2}, summary
    assert summary["malformed"] == {"hep3-stream-truncated": 1}, summary


def test_idle_timeout_is_on_by_default():
    """Off by default, 4,096 idle connections held the collector for ever; now a
    connection silent for five minutes is closed (a setting: 0 turns it off)."""
    s = Settings.load(env={})
    assert s.tcp_idle_timeout == 300.0 and s.tcp_max_connections == 4096
    p = subprocess.run([sys.executable, "-m", "sipcaptool", "hep", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    text = re.sub(r"\s+", " ", p.stdout)
    assert "--tcp-idle-timeout S" in text and "[default: 300]" in text
    assert "--tcp-max-connections N" in text and "--stop-drain-timeout S" in text
