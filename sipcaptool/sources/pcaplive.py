"""A libpcap handle on a live interface, and what keeps it through link loss.

``PcapSource`` opens the interface (snap length, promiscuous mode, buffer, the capture
filter, the PACKET_FANOUT group of ``--raw-sock-children``) and yields ``(data, meta)``
batches as ``CaptureFile`` does for files. A mirror port that goes down keeps its
handle (the socket stays bound and the kernel hands it packets again once the link is
up); an interface that is removed is opened again under its name once it is back
(every ``LINK_RETRY`` seconds), which needs the capture privileges.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import CaptureError, ConfigError
from . import bpf
from .privileges import can_capture

if TYPE_CHECKING:
    from .live import LiveOptions

log = logging.getLogger("sipcaptool.live")

BATCH = 512
POLL_MS = 100            # the longest a reader sleeps before looking at stop/duration
LINK_RETRY = 1.0         # seconds between attempts to reopen an interface that went down
LINK_GONE = "no such interface"  # what _link_state says of a removed interface
FANOUT_PROBE = 64        # fanout group ids tried when joining again after a removal


def capture_filter(opts: LiveOptions, linktype: int | None = None) -> str | None:
    """The libpcap expression for mirror mode (None: capture everything)."""
    if opts.filter_expr:
        return opts.filter_expr
    if not opts.bpf_on:
        return None
    return bpf.mirror_filter(opts.listen.lo, opts.listen.hi)


def _add3(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


class PcapSource:
    """One libpcap handle on a live interface."""

    def __init__(self, opts: LiveOptions, fanout_group: int | None = None) -> None:
        self.interface = opts.interface
        self._opts = opts
        self._fanout_group = fanout_group
        self._stats_base = (0, 0, 0)   # kernel counters of handles closed before
        self._last_stats = (0, 0, 0)
        self.handle: Any = None      # the pcapy handle; None once closed
        self.link_downs = 0
        self._open()

    def _open(self) -> None:
        import pcapy

        opts = self._opts
        fanout_group = self._fanout_group
        iface = opts.interface
        try:
            h = pcapy.create(iface)
        except pcapy.PcapError as e:
            raise _open_error(iface, str(e)) from None
        try:
            h.set_snaplen(opts.snaplen)
            h.set_promisc(1 if opts.promisc else 0)
            h.set_timeout(POLL_MS)
            if opts.buffer_size:
                h.set_buffer_size(opts.buffer_size)
            status = h.activate()
        except pcapy.PcapError as e:
            raise _open_error(iface, str(e)) from None
        if isinstance(status, int) and status < 0:
            raise _open_error(iface, _ACTIVATE_ERRORS.get(status, f"error {status}"))
        if isinstance(status, int) and status > 0:
            log.warning("%s: %s", iface, _ACTIVATE_WARNINGS.get(status, f"warning {status}"))
        self.handle = h
        self.linktype = h.datalink()
        expr = capture_filter(opts)
        self.filter = expr
        if expr:
            try:
                h.setfilter(expr)
            except pcapy.PcapError as e:
                if opts.filter_expr:
                    raise ConfigError(f"--filter {expr!r}: {e}") from None
                # no VLAN support on this link type (Linux cooked capture, "any"):
                # the kernel has already removed the tags there
                expr = bpf.mirror_filter(opts.listen.lo, opts.listen.hi, vlan=False)
                try:
                    h.setfilter(expr)
                except pcapy.PcapError as e2:  # pragma: no cover - our own expression
                    raise CaptureError(f"{iface}: cannot set the capture filter: {e2}") from None
                self.filter = expr
        if fanout_group is not None:
            # After the interface was removed and created again, the workers' old
            # sockets (kept alive by ring mappings other processes inherited) still hold
            # the group, bound to the old device, and refuse new members: every worker
            # then tries the next ids in the same order and they meet in the first one
            # free or already on the new device.
            tries = FANOUT_PROBE if self.link_downs else 1
            for k in range(tries):
                group = (fanout_group + k) & 0xFFFF
                try:
                    h.set_fanout(group, pcapy.PACKET_FANOUT_HASH)
                    break
                except (pcapy.PcapError, OSError) as e:
                    if k == tries - 1:
                        raise CaptureError(f"{iface}: cannot join PACKET_FANOUT group "
                                           f"{group} for --raw-sock-children: {e}") from None
        # non-blocking reads, waiting in poll(): next_batch on a quiet blocking handle
        # does not return, and the worker must look at stop/duration regularly
        h.setnonblock(1)
        self._fd = h.getfd()

    def batches(self) -> Iterator[tuple[bytes, Any]]:
        """Yield ``(data, meta)`` batches; empty ``meta`` after a quiet poll interval."""
        import select

        import pcapy

        def watch() -> tuple[Any, select.poll]:  # read function and poller of the handle
            p = select.poll()
            p.register(self._fd, select.POLLIN)
            return self.handle.next_batch, p

        nb, poller = watch()
        wait = True
        down_since: float | None = None  # the link went down; the handle waits for it
        next_look = 0.0
        while True:
            if wait:
                try:
                    poller.poll(POLL_MS)
                except InterruptedError:
                    pass
            if down_since is not None:
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + LINK_RETRY
                    state = _link_state(self.interface)
                    if state == "up":
                        log.warning("%s: capturing again after %.1fs down", self.interface,
                                    now - down_since)
                        down_since = None
                    elif state == LINK_GONE:
                        # the interface itself is gone: a new one of that name needs a
                        # new handle
                        down_since = None
                        yield from self._wait_for_link("the interface was removed")
                        nb, poller = watch()
                        continue
            try:
                data, meta = nb(BATCH)
            except pcapy.PcapError as e:
                msg = str(e)
                if "went down" in msg:
                    # The socket stays bound to the interface and the kernel hands it
                    # packets again once the link is up: keep the handle (a new one
                    # would leave this socket behind in the workers' fanout group).
                    if down_since is None:
                        down_since = time.monotonic()
                        next_look = down_since + LINK_RETRY
                        self.link_downs += 1
                        log.warning("%s: the interface went down (%s); waiting for it to "
                                    "come back", self.interface, msg)
                    wait = True
                    yield b"", ()
                    time.sleep(POLL_MS / 1000)  # poll() may keep reporting the error
                    continue
                if "No such device" in msg:
                    self.link_downs += 1
                    yield from self._wait_for_link(msg)
                    nb, poller = watch()
                    wait = True
                    continue
                raise CaptureError(f"{self.interface}: capture failed: {msg}") from None
            if meta:
                m = memoryview(meta).cast("I")
                wait = len(m) < BATCH * 4  # a full batch: more is probably waiting
                yield data, m
            else:
                wait = True
                yield data, ()

    def _wait_for_link(self, why: str) -> Iterator[tuple[bytes, Any]]:
        """The interface is gone: open one of that name every LINK_RETRY seconds until
        there is one again, yielding empty batches meanwhile so the worker still sees
        stop and deadline. Without the privileges to open it (--user dropped them) the
        capture ends at once. The caller has counted the loss of the link."""
        self.kernel_stats()  # keep the last counters of the old handle
        self._stats_base = _add3(self._stats_base, self._last_stats)
        self._last_stats = (0, 0, 0)
        self.close()
        log.warning("%s: the interface is gone (%s); opening it again every %gs until "
                    "it is back", self.interface, why, LINK_RETRY)
        if not can_capture():
            raise CaptureError(f"{self.interface}: the interface is gone and cannot be "
                               "opened again without the capture privileges (dropped with "
                               "--user); restart the capture when it is back")
        down_since = time.monotonic()
        next_try = down_since + LINK_RETRY
        last_error = ""
        while True:
            yield b"", ()
            now = time.monotonic()
            if now < next_try:
                time.sleep(min(POLL_MS / 1000, next_try - now))
                continue
            next_try = now + LINK_RETRY
            state = _link_state(self.interface)
            if state != "up":
                if state != last_error:
                    log.info("%s: still down (%s)", self.interface, state)
                    last_error = state
                continue
            try:
                self._open()
            except CaptureError as e:
                text = str(e)
                if "permission" in text.lower() or "privileges" in text.lower():
                    raise CaptureError(f"{self.interface}: the interface went down and "
                                       f"cannot be opened again: {text}") from None
                if text != last_error:
                    log.info("%s: still down: %s", self.interface, text)
                    last_error = text
                continue
            log.warning("%s: capturing again after %.1fs down", self.interface,
                        time.monotonic() - down_since)
            return

    def kernel_stats(self) -> tuple[int, int, int]:
        if self.handle is not None:
            try:
                recv, drop, ifdrop = self.handle.stats()
                self._last_stats = (int(recv), int(drop), int(ifdrop))
            except Exception:  # noqa: BLE001 - statistics are best effort (pcapy raises anything)
                pass
        return _add3(self._stats_base, self._last_stats)

    def close(self) -> None:
        h, self.handle = self.handle, None
        if h is not None:
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


# pcap_activate() results (pcap/pcap.h)
_ACTIVATE_ERRORS = {
    -1: "generic error", -4: "already activated", -5: "no such device",
    -6: "monitor mode not supported", -8: "permission denied", -9: "interface not up",
    -11: "permission denied (promiscuous mode)", -12: "timestamp precision not supported",
}
_ACTIVATE_WARNINGS = {1: "pcap warning", 2: "promiscuous mode not supported",
                      3: "timestamp type not supported"}


def _link_state(iface: str) -> str:
    """"up" when the interface exists and is administratively up (IFF_UP), else why not
    (Linux: /sys/class/net; elsewhere "up", and opening it tells)."""
    base = "/sys/class/net"
    if not os.path.isdir(base):
        return "up"
    try:
        with open(f"{base}/{iface}/flags") as f:
            flags = int(f.read().strip(), 16)
    except FileNotFoundError:
        return LINK_GONE
    except (OSError, ValueError):
        return "up"
    return "up" if flags & 1 else "administratively down"


def _open_error(iface: str, msg: str) -> CaptureError:
    low = msg.lower()
    if "permission" in low or "operation not permitted" in low:
        from .ipip import permission_hint

        return CaptureError(permission_hint(f"cannot capture on {iface}"))
    if "no such device" in low or "doesn't exist" in low or "no such" in low:
        return CaptureError(f"cannot capture on {iface}: no such interface "
                            "(see `ip link` for the names)")
    if "not up" in low or "network is down" in low:
        return CaptureError(f"cannot capture on {iface}: the interface is down")
    return CaptureError(f"cannot capture on {iface}: {msg}")
