"""Option bundles shared by the commands: every storage parameter of the module."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from ..config import Settings
from ..logs import setup_logging
from ..record import HASH_SOURCES, MT_MODES
from ..stats import Stats

# option name -> setting name
STORAGE_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--db-url", "--db"), "db_url",
     {"metavar": "URL", "help": "Database: sqlite:///FILE, mysql://USER[:PASS]@HOST[:PORT]/DB, "
      "postgresql://USER[:PASS]@HOST[:PORT]/DB, or none. [default: sqlite:///sipcapture.db]"}),
    (("--table-name",), "table_name",
     {"metavar": "T1|T2", "help": "Table(s), '|'-separated; strftime codes allowed "
      "(sip_capture_%Y%m%d, UTC from each message's time). [default: sip_capture]"}),
    (("--mt-mode",), "mt_mode",
     {"type": click.Choice(MT_MODES), "help": "How one of several tables is chosen. [default: rand]"}),
    (("--hash-source",), "hash_source",
     {"type": click.Choice(HASH_SOURCES),
      "help": "Hash key with --mt-mode hash (CRC-32, as Kamailio). [default: call_id]"}),
    (("--capture-node",), "capture_node",
     {"metavar": "NAME", "help": "Node name stored in the node column. [default: homer01]"}),
    (("--callid-aleg-header",), "callid_aleg_header",
     {"metavar": "H1;H2", "help": "Header(s) feeding callid_aleg, first match wins. [default: X-CID]"}),
    (("--capture-bad-msgs",), "capture_bad_msgs",
     {"type": click.IntRange(0, 1),
      "help": "1: store SIP that does not parse (fields best effort). [default: 0]"}),
    (("--capture-mode",), "capture_mode",
     {"multiple": True, "metavar": "NAME|DEF",
      "help": "Store into a capture mode: a NAME defined in the config file, or a definition "
      "'name=>db_url=...;table_name=a|b;mt_mode=hash;hash_source=call_id;'. Repeatable: "
      "each message is stored into every mode given."}),
    (("--insert-retries",), "insert_retries",
     {"type": int, "metavar": "0-500", "help": "Retries of a failed batch. [default: 0]"}),
    (("--insert-retry-timeout",), "insert_retry_timeout",
     {"type": int, "metavar": "0-300", "help": "Time limit for those retries, seconds. [default: 60]"}),
    (("--db-insert-mode",), "db_insert_mode",
     {"type": int, "metavar": "0-2", "help": "0 plain INSERT, 1 INSERT DELAYED where supported, "
      "2 asynchronous. [default: 0]"}),
    (("--capture-on",), "capture_on",
     {"type": int, "metavar": "0|1", "help": "Store at start (0: receive but store nothing "
      "until switched on). [default: 1]"}),
    (("--custom-field1-header",), "custom_field1_header", {"metavar": "NAME", "help": "[default: Mac]"}),
    (("--custom-field2-header",), "custom_field2_header", {"metavar": "NAME", "help": "[default: IP]"}),
    (("--custom-field3-header",), "custom_field3_header", {"metavar": "NAME", "help": "[default: Port]"}),
    (("--batch-size",), "batch_size",
     {"type": int, "metavar": "N", "help": "Rows per database batch. [default: 2000]"}),
    (("--batch-max-bytes",), "batch_max_bytes",
     {"metavar": "BYTES", "help": "A batch is written once its rows make this many bytes "
      "(messages counted as hex, K/M suffixes), even with fewer than --batch-size rows. "
      "[default: 8M]"}),
    (("--spool-dir",), "spool_dir",
     {"metavar": "DIR", "help": "Where batches wait on disk while the database cannot take "
      "them (retries exhausted, or unreachable, also at start); they are written when it "
      "is back, and a later run writes what an earlier one left. 'none': no spool (such "
      "batches are dropped and counted). [default: $XDG_STATE_HOME/sipcaptool/spool, "
      "/var/spool/sipcaptool for root]"}),
    (("--spool-max-bytes",), "spool_max_bytes",
     {"metavar": "BYTES", "help": "Disk the spool may use per database (K/M/G suffixes); "
      "beyond it batches are dropped, counted as dropped:spool-full and logged. "
      "[default: 1G]"}),
    (("--hep-max-inflated",), "hep_max_inflated",
     {"metavar": "BYTES", "help": "HEP: bytes that the compressed parts of one datagram "
      "(a whole-datagram gzip and every compressed payload in it), TCP-framed packet or "
      "capture frame may inflate to, together (K/M suffixes); past it the rest is "
      "refused, counted as malformed:hep-inflate. [default: 256K]"}),
]


def storage_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config and every storage setting; the command receives ``settings``."""
    for names, setting, kw in reversed(STORAGE_OPTIONS):
        f = click.option(*names, setting, default=None, **kw)(f)
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     metavar="FILE", help="TOML file with settings (file < environment "
                     "SIPCAPTOOL_<NAME> < command line).")(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cli_values = {s: kwargs.pop(s) for _n, s, _k in STORAGE_OPTIONS}
        config_file = kwargs.pop("config_file")
        kwargs["settings"] = Settings.load(config_file, cli_values)
        return f(*args, **kwargs)

    return wrapper


def summary_dict(stats: Stats, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The end-of-run summary: the stats document's groups (``sipcaptool.control.document``),
    then ``extra``."""
    from ..control import summary_document

    return summary_document(stats, extra)


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=False))
        return
    lines = [f"packets read:      {summary['packets']}",
             f"messages decoded:  {summary['messages']}",
             f"rows stored:       {summary['stored_total']}"]
    for table, n in summary["stored"].items():
        lines.append(f"  {table}: {n}")
    for key, title in (("skipped", "skipped (not SIP)"), ("malformed", "malformed"),
                       ("dropped", "dropped"), ("evicted", "evicted decoder state"),
                       ("truncated_values", "values cut to column width"),
                       ("adjusted", "table by arrival time"),
                       ("refused_bytes", "bytes refused")):
        group = summary.get(key) or {}
        if group:
            lines.append(f"{title + ':':<18} {sum(group.values())}")
            for reason, n in group.items():
                lines.append(f"  {reason}: {n}")
    warned = (summary.get("db") or {}).get("warnings", 0)
    if warned:
        lines.append(f"database warnings: {warned} (the server changed or left out values; "
                     "the log names them)")
    for key in ("files", "errors"):
        for item in summary.get(key, []) or []:
            if key == "errors":
                lines.append(f"error: {item}")
    click.echo("\n".join(lines))


def setup_command_logging(verbose: int, quiet: int, log_file: str | None,
                          log_format: str) -> None:
    """:func:`setup_logging` from a click command's options: honours the global
    ``--debug`` and reports a log file that cannot be opened as a usage error."""
    ctx = click.get_current_context(silent=True)
    debug = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug"))
    try:
        setup_logging(verbose, quiet, log_file, log_format, debug=debug)
    except OSError as e:
        raise click.UsageError(f"--log-file {log_file}: cannot open: {e.strerror}") from None


def log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-v/--verbose``, ``-q/--quiet``, ``--log-file``, ``--log-format`` and set up
    logging before the command body runs (the body does not receive these options)."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = kwargs.pop("verbose")
        quiet = kwargs.pop("quiet")
        log_file = kwargs.pop("log_file")
        log_format = kwargs.pop("log_format")
        setup_command_logging(verbose, quiet, log_file, log_format)
        return f(*args, **kwargs)

    for deco in reversed([
        click.option("-v", "--verbose", count=True,
                     help="More log output (-v info, -vv debug)."),
        click.option("-q", "--quiet", count=True,
                     help="Less log output (-q errors only, -qq nothing but critical)."),
        click.option("--log-file", type=click.Path(dir_okay=False), default=None,
                     metavar="FILE", help="Append logs to FILE instead of stderr; "
                     "reopened on SIGHUP (logrotate)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="text lines or JSON objects, one per line."),
    ]):
        wrapper = deco(wrapper)
    return wrapper


# the settings of the endpoints, as options of the commands that serve them (hep, live)
ENDPOINT_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--control-timeout",), "control_timeout",
     {"type": float, "metavar": "S",
      "help": "Close a control-socket or --metrics connection that has not sent a whole "
              "command (or HTTP request) within S seconds of connecting or of its previous "
              "answer, counted as control:timeout or metrics:timeout. [default: 5]"}),
    (("--control-max-connections",), "control_max_connections",
     {"type": int, "metavar": "N",
      "help": "Connections the control socket and --metrics each hold at most; past it "
              "the one idle longest is closed for the new one (control:evicted-idle), or, "
              "when none is idle, the new one (control:refused-full). A request sent with "
              "the connection is answered at once either way. [default: 64]"}),
]


def endpoint_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--control-timeout`` and ``--control-max-connections`` to a command serving
    the control socket and ``--metrics``. Put it under ``@storage_options`` (nearer the
    function): the values join ``settings`` (file < environment < command line) and
    become the limits of the :class:`Endpoints` the command starts."""
    from ..control import configure_limits

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = kwargs["settings"]
        for _names, name, _kw in ENDPOINT_OPTIONS:
            value = kwargs.pop(name, None)
            if value is not None:
                kwargs["settings"] = settings = settings.with_value(name, value, "command line")
        configure_limits(settings)
        return f(*args, **kwargs)

    for names, name, kw in reversed(ENDPOINT_OPTIONS):
        wrapper = click.option(*names, name, default=None, **kw)(wrapper)
    return wrapper


# the filters of `sipcaptool search` (and `export`): which calls
FILTERS: list[tuple[str, str, str]] = [
    ("--call-id", "ID[,ID...]", "Call-ID(s); % is a wildcard; write a comma inside one as \\,"),
    ("--user", "U[,U...]", "User in From, To, request URI, P-Asserted-Identity or "
     "Authorization (caller or callee); % is a wildcard ('10%' uses an index)."),
    ("--from-user", "U[,U...]", "From user only."),
    ("--to-user", "U[,U...]", "To user only."),
    ("--method", "M[,M...]", "Calls with a request of this method (INVITE, REGISTER, ...)."),
    ("--status", "S[,S...]", "Calls whose final status is this: a code (486) or a class "
     "(4xx, 18x)."),
    ("--src", "IP[:PORT][,...]", "A message sent from this address."),
    ("--dst", "IP[:PORT][,...]", "A message sent to this address."),
    ("--node", "NAME[,...]", "Captured by this node (node column)."),
    ("--ua", "TEXT[,...]", "User-Agent contains TEXT."),
    ("--since", "TIME", "From this time: 2h, 30m, 1d (ago), 'YYYY-MM-DD HH:MM[:SS]', an ISO "
     "time with Z or +HH:MM, @EPOCH. Absolute times without an offset are in --tz (UTC by "
     "default)."),
    ("--until", "TIME", "Up to this time (same forms). [default: now]"),
    ("--tz", "ZONE", "Read absolute --since/--until (and show times) in this zone: local, "
     "an IANA name (Europe/Paris) or an offset (+02:00). [default: UTC]"),
]


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the call filters of ``search`` and ``export`` (``--call-id`` … ``--tz``)."""
    for name, metavar, text in reversed(FILTERS):
        f = click.option(name, metavar=metavar, default=None, help=text)(f)
    return f
