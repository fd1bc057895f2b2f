"""``sipcaptool live``: capture SIP from a mirror port or an IPIP tunnel and store it."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from ..errors import EXIT_DATABASE, ConfigError, SipcaptoolError
from ..senders.hep import lost_line
from .hep_out import hep_out_from, hep_out_summary, hep_to_options

if TYPE_CHECKING:
    from ..control import Endpoints
    from ..sources.live import LiveCapture, LiveOptions

from .common import (
    dedup_options,
    endpoint_options,
    is_quiet,
    log_options,
    print_summary,
    setting_option,
    storage_options,
    summary_dict,
)

log = logging.getLogger("sipcaptool.live")

_ONOFF = click.IntRange(0, 1)


@click.command("live")
@setting_option("-i", "--interface", setting="raw_interface", metavar="IFACE",
                help="Mirror mode: capture on this interface ('any': all of them). "
                     "Same as --raw-interface (give one of them).")
@setting_option("--ipip", setting="raw_ipip_capture_on", is_flag=True, convert=lambda _: 1,
                help="IPIP mode: read IP-in-IP packets sent to the --raw-socket-listen "
                     "address through a raw socket, instead of a mirror port "
                     "(raw_ipip_capture_on = 1).")
@setting_option("--raw-socket-listen", metavar="[IP]:PORT[-PORT]",
              help="SIP port or range, e.g. :5060-5090 (mirror mode ignores the address); "
                   "IPIP mode also binds to the address. [default: :5060]")
@setting_option("--raw-interface", metavar="IFACE",
              help="Mirror mode: the interface; IPIP mode: only packets arriving on it "
                   "(SO_BINDTODEVICE).")
@setting_option("--raw-sock-children", metavar="N",
              help="Capture workers sharing the traffic by flow (PACKET_FANOUT hash; "
                   "IPIP: by address hash). [default: 1]")
@setting_option("--promiscuous-on", metavar="0|1", type=_ONOFF, is_flag=False, flag_value=1,
              help="Promiscuous mode (the flag alone means 1). [default: 0]")
@setting_option("--raw-moni-bpf-on", metavar="0|1", type=_ONOFF, is_flag=False, flag_value=1,
              help="Filter in the kernel (a BPF program built from the port "
                   "range, admitting fragments and VLAN tags); 0 filters in sipcaptool. "
                   "[default: 1]")
@setting_option("--filter", metavar="EXPR",
              help="Mirror mode: this libpcap filter instead of the one built from the ports "
                   "(SIP is then recognised by content on any port it admits).")
@setting_option("--snaplen", metavar="BYTES", help="Bytes kept per packet. A message cut by it is "
                                    "counted (malformed: snapped), not stored in part.")
@setting_option("--buffer-size", metavar="MB", help="Kernel capture buffer per worker, MiB.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop after this long.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N SIP messages.")
@setting_option("--max-clock-skew", metavar="S",
              help="A packet whose capture time is more than S seconds from the clock has "
                   "its strftime table (sip_%Y%m%d) named by the time it is stored, "
                   "counted as adjusted:clock-skew; the row keeps its own time "
                   "(0: always its own time). [default: 86400]")
@hep_to_options()
@setting_option("--capture-id", metavar="N", help="HEP capture id (agent mode).")
@setting_option("--auth-key", metavar="KEY",
                help="HEP auth key (agent mode). On the command line every user sees it "
                     "(ps): prefer --auth-key-file.")
@setting_option("--auth-key-file", metavar="FILE",
                help="Read the HEP auth key from FILE (one line; a bare name is looked up "
                     "in $CREDENTIALS_DIRECTORY first, as systemd's LoadCredential= puts it).")
@setting_option("--node-name", metavar="NAME", help="HEP node name (agent mode).")
@setting_option("--user", metavar="NAME",
              help="Switch to this user once the capture sockets are open.")
@setting_option("--control", metavar="PATH|none",
              help="Control socket (capture on/off, stats; see 'sipcaptool ctl'). "
                   "[default: $XDG_RUNTIME_DIR/sipcaptool/live.sock, or "
                   "/run/sipcaptool/live.sock as root; 'none' for no socket]")
@setting_option("--metrics", metavar="HOST:PORT",
              help="Serve the counters for Prometheus at http://HOST:PORT/metrics.")
@log_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--foreground-writer", is_flag=True, hidden=True,
              help="Write from the capturing process (no writer process).")
@storage_options
@endpoint_options
@dedup_options
def command(duration: float | None, count: int | None, as_json: bool,
            foreground_writer: bool, settings: Settings) -> int:
    """Capture SIP live and store every message as one row (or forward it as HEP).

    \b
    Mirror mode (-i IFACE): libpcap on a mirror/SPAN port or any interface. A kernel
    filter built from the --raw-socket-listen ports admits SIP over UDP, TCP and SCTP,
    IPv4 and IPv6, plus IP fragments and VLAN-tagged frames. Workers share one interface
    by flow. Kernel drop counters appear in the summary. A link that goes down and up
    again (a flap) does not end the capture, nor does an interface that is removed and
    created again (unless --user dropped the privileges to open it).
    IPIP mode (--ipip): SIP tunnelled in IP (protocol 4, and 41 for IPv6 inside) to the
    --raw-socket-listen address, as Kamailio's raw_ipip_capture_on.

    Messages are decoded as `replay` decodes a capture file, so the rows are the same.
    Rows are written in batches at most a second after they were captured.
    SIGINT/SIGTERM (or --duration/--count) stop the capture; what was captured is
    stored and a summary printed. Needs root or CAP_NET_RAW (+CAP_NET_ADMIN for
    promiscuous mode); --user drops to another user after the sockets are open.

    Exit status: 0 stopped normally; 2 bad option; 4 database error, or --hep-to lost
    messages (no collector took them and the spool could not hold them: dropped:
    hep-*); 5 the interface or socket could not be opened or failed.

    \b
    Example:
      sipcaptool live -i eth0
      sipcaptool live -i eth1 --raw-socket-listen :5060-5090 --promiscuous-on \\
          --raw-sock-children 2
      sipcaptool live --ipip --raw-socket-listen 10.0.0.1:5060-5090 --raw-interface tun0
      sipcaptool live -i any --filter "udp port 5060 or tcp port 5061" --duration 60 \\
          --db mysql://root@127.0.0.1/homer
      sipcaptool live -i eth0 --db none --hep-to udp:10.0.0.9:9060 --hep-to tcp:10.0.0.9:9060
      sipcaptool live -i eth1 --db none --hep-to tls:collector1:9062 \\
          --hep-to tls:collector2:9062 --auth-key s3cret --tls-ca ca.pem
    """
    from ..sources.live import LiveCapture, LiveOptions, kernel_summary, parse_listen

    quiet = is_quiet(settings)
    hep_out = hep_out_from(settings)
    filter_expr = settings.filter or None
    ipip_mode = bool(settings.raw_ipip_capture_on)
    if ipip_mode and filter_expr:
        raise ConfigError("--filter is a mirror-mode (libpcap) option; IPIP mode filters on "
                          "the --raw-socket-listen port range")
    if ipip_mode and settings.promiscuous_on:
        raise ConfigError(f"promiscuous_on = 1 ({settings.origin['promiscuous_on']}) is for "
                          "mirror mode; IPIP mode (raw_ipip_capture_on = 1, "
                          f"{settings.origin['raw_ipip_capture_on']}) reads packets sent to "
                          "this host: leave one of them out")
    iface = settings.raw_interface
    if not ipip_mode and not iface:
        raise ConfigError("no interface: give -i IFACE (or --raw-interface IFACE, 'any' for "
                          "all), or --ipip for IPIP mode")
    listen = parse_listen(settings.raw_socket_listen)
    hep_to = hep_out.targets
    store = any(m.db_url.strip().lower() != "none" for m in settings.active_modes())
    if not store and not hep_to:
        raise ConfigError("--db none without --hep-to: the captured messages would go "
                          "nowhere; give --hep-to udp:HOST:PORT or a database")
    opts = LiveOptions(
        interface=iface or "", ipip=ipip_mode, listen=listen,
        listen_given=settings.origin.get("raw_socket_listen", "default") != "default",
        bpf_on=bool(settings.raw_moni_bpf_on), filter_expr=filter_expr,
        promisc=bool(settings.promiscuous_on), snaplen=settings.snaplen,
        buffer_size=settings.buffer_size * 1024 * 1024, workers=settings.raw_sock_children,
        duration=duration, count=count, hep_to=list(hep_to), hep_out=hep_out,
        capture_id=settings.capture_id, auth_key=settings.auth_key or None,
        node_name=settings.node_name or None, user=settings.user or None, store=store)
    cap = LiveCapture(opts, settings)
    cap.open()
    server = _start_control(settings.control or None, settings.metrics or None, cap, opts,
                            quiet)
    stopping: dict[str, str | None] = {"signal": None}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping["signal"] = signal.Signals(signum).name
        cap.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    if not quiet:
        click.echo(f"sipcaptool: capturing on {opts.describe()}"
                   + (f", filter: {cap.filter}" if cap.filter else "")
                   + (f", {opts.workers} workers" if opts.workers > 1 else ""), err=True)
    started = time.monotonic()
    error: SipcaptoolError | None = None
    try:
        try:
            stats = cap.run(background=not foreground_writer)
        except SipcaptoolError as e:
            error = e
            stats = cap.counters()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if server is not None:
            server.stop()
    elapsed = time.monotonic() - started
    if cap.error is not None and error is None:
        error = cap.error
    lost = lost_line(stats) if opts.hep_to else ""
    extra: dict[str, Any] = {"seconds": round(elapsed, 3), "source": opts.describe(),
             "workers": opts.workers,
             "errors": ([str(error)] if error else []) + ([lost] if lost else [])}
    if not ipip_mode:
        extra["kernel"] = kernel_summary(stats)
    if opts.workers > 1:
        extra["worker_packets"] = cap.worker_packets()
    if opts.hep_to:
        extra.update(hep_out_summary(stats))
    if stopping["signal"]:
        extra["stopped_by"] = stopping["signal"]
    if not quiet or as_json:
        summary = summary_dict(stats, extra)
        print_summary(summary, as_json)
        if not as_json:
            lines = []
            if "kernel" in extra:
                k = extra["kernel"]
                lines.append(f"kernel:            received {k['received']}, dropped "
                             f"{k['dropped']}, dropped by interface {k['if_dropped']}")
            if opts.hep_to:
                h = extra["hep_out"]
                lines.append(f"HEP sent:          {h.get('sent_udp', 0)} over UDP, "
                             f"{h.get('sent_tcp', 0)} over TCP"
                             + (f", {h['sent_tls']} over TLS" if h.get("sent_tls") else ""))
                for target, events in extra["hep_targets"].items():
                    lines.append(f"  {target}: " + ", ".join(f"{k} {v}"
                                                            for k, v in events.items()))
            if lines:
                click.echo("\n".join(lines))
    if lost:
        click.echo(f"sipcaptool: error: {lost}", err=True)
    if error is not None:
        raise error
    return EXIT_DATABASE if lost else 0


def _start_control(path: str | None, metrics_addr: str | None, cap: LiveCapture,
                   opts: LiveOptions, quiet: bool) -> Endpoints:
    from ..control import Endpoints

    # CaptureError when an explicit path is in use or cannot be made
    ep = Endpoints("live", path, metrics_addr, cap.capture_flag, cap.counters,
                   extra={"command": "live", "source": opts.describe(),
                          "workers": opts.workers}).start()
    if ep.describe() and not quiet:
        click.echo(f"sipcaptool: {ep.describe()}", err=True)
    return ep
