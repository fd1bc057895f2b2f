"""Option bundles shared by the commands: every storage parameter of the module, and
:func:`setting_option`, the one way an option of a command is bound to a setting."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import click
from click.core import ParameterSource

from ..config import PARAMS, Settings
from ..errors import ConfigError
from ..logs import setup_logging
from ..record import HASH_SOURCES, MT_MODES
from ..stats import Stats


class SettingOption(click.Option):
    """A command-line option whose value is a setting (see :func:`setting_option`)."""

    def __init__(self, param_decls: Sequence[str], *, setting: str,
                 convert: Callable[[Any], object] | None = None, **attrs: Any) -> None:
        self.setting = setting
        self.convert = convert
        super().__init__(param_decls, **attrs)


def setting_option(*param_decls: str, setting: str | None = None,
                   convert: Callable[[Any], object] | None = None,
                   **attrs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option bound to a setting of :class:`sipcaptool.config.Settings`.

    The setting is a field of ``Settings`` (made with ``_setting(default, allowed)``,
    with a comment saying what it does): that field holds the type, the default and what
    is allowed, so the setting is also a TOML key (at the top level of the config file,
    or in the command's own table such as ``[hep]``) and an environment variable
    ``SIPCAPTOOL_<NAME>``, and ``config show`` prints its value and origin. The option
    only says how it is written on the command line. Its value is not passed to the
    command's function: the function receives ``settings`` (built with file <
    environment < command line) and reads ``settings.<name>``; so the command needs
    ``@storage_options`` or ``@config_option`` below its setting options.

    ``setting`` defaults to the name of the longest option (``--tcp-idle-timeout`` ->
    ``tcp_idle_timeout``). A list setting (``tuple[str, ...]``) makes a repeatable option.
    A text setting with allowed values gets ``click.Choice`` of them; numbers are checked
    by ``Settings`` (the message names the setting, the value and the range), so give no
    click type. ``convert`` turns the option's value into the setting's (for flags and
    counters: ``--ipip`` -> ``raw_ipip_capture_on = 1``, ``-vv`` -> ``log_level =
    "debug"``). ``[default: ...]`` is added to the help from the field unless the help
    says it. Two options bound to the same setting (``--db`` and ``--db-url``, ``-v`` and
    ``-q``) are refused with exit status 2 when both are given.

    Example::

        @click.command("hep")
        @setting_option("--listen", metavar="udp|tcp:HOST:PORT",
                        help="Address to receive HEP on; repeatable.")
        @setting_option("--workers", metavar="N", help="Receiving processes.")
        @setting_option("--ipip", setting="raw_ipip_capture_on", is_flag=True,
                        convert=lambda _flag: 1, help="IPIP mode.")
        @storage_options
        def command(settings: Settings) -> int:
            for address in settings.listen: ...
    """
    if setting is None:
        longest = max((d for d in param_decls if d.startswith("-")), key=len)
        setting = longest.lstrip("-").replace("-", "_")
    if setting not in PARAMS:
        raise TypeError(f"option {param_decls}: no setting {setting!r} in Settings")
    param = PARAMS[setting]
    attrs.setdefault("default", None)
    flag = attrs.get("is_flag") or attrs.get("count")
    if param.kind is list:
        attrs.setdefault("multiple", True)
    if not flag and "type" not in attrs and param.kind is str and param.allowed:
        attrs["type"] = click.Choice([str(a) for a in param.allowed])
    if not flag and "metavar" not in attrs and "type" not in attrs:
        if param.size:
            attrs["metavar"] = "BYTES"
        elif param.kind in (int, float):
            lo, hi = param.bounds()
            attrs["metavar"] = f"{lo:g}-{hi:g}" if hi - lo <= 1000 else "N"
    text = attrs.get("help") or ""
    if "[default" not in text and not text.startswith("Same as") and not param.secret and not flag:
        default = param.default
        shown = " ".join(str(d) for d in default) if isinstance(default, list) else default
        if shown != "":
            attrs["help"] = f"{text} [default: {shown}]".strip()
    return click.option(*param_decls, cls=SettingOption, setting=setting, convert=convert,
                        **attrs)


def _command_name(ctx: click.Context) -> str:
    """The sipcaptool command running (``db`` for ``db init``): its table in the file."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    return ctx.info_name or ""


def load_settings(kwargs: dict[str, Any], config_file: str | None,
                  command: str | None = None) -> Settings:
    """Settings for the running command: pop the values of its :class:`SettingOption`
    parameters from ``kwargs``, keep those given on the command line, refuse two options
    of one setting given together, and load (file < environment < command line)."""
    ctx = click.get_current_context()
    cli: dict[str, object] = {}
    given: dict[str, str] = {}
    for p in ctx.command.params:
        if not isinstance(p, SettingOption) or p.name is None:
            continue
        value = kwargs.pop(p.name, None)
        if ctx.get_parameter_source(p.name) is not ParameterSource.COMMANDLINE:
            continue
        label = "/".join(p.opts)
        if p.setting in given:
            raise ConfigError(f"{given[p.setting]} and {label} both give {p.setting}: "
                              "give one of them")
        given[p.setting] = label
        cli[p.setting] = p.convert(value) if p.convert else value
    return Settings.load(config_file, cli, command=command or _command_name(ctx))


def _logs_settings(ctx: click.Context, settings: Settings) -> None:
    """Set up logging from the settings when the command has the log options; then log
    what the settings warn about."""
    if any(isinstance(p, SettingOption) and p.setting == "log_level" for p in ctx.command.params):
        setup_settings_logging(settings)
    for text in settings.warnings:
        logging.getLogger("sipcaptool.config").warning("%s", text)


_LEVELS = {"critical": -2, "error": -1, "warning": 0, "info": 1, "debug": 2}


def is_quiet(settings: Settings) -> bool:
    """-q (log_level error or critical): no start lines and no text summary either."""
    return _LEVELS[settings.log_level] < 0


def setup_settings_logging(settings: Settings) -> None:
    """:func:`setup_command_logging` from the log_level, log_file, log_format settings."""
    n = _LEVELS[settings.log_level]
    setup_command_logging(max(n, 0), max(-n, 0), settings.log_file or None,
                          settings.log_format)


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config FILE``; the command receives ``settings`` built from every setting
    option it has (:func:`setting_option`), the file, the environment. With the log
    options (:func:`log_options`) logging is set up from them first."""
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     metavar="FILE", help="TOML file with settings (file < environment "
                     "SIPCAPTOOL_<NAME> < command line).")(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config_file = kwargs.pop("config_file")
        command = kwargs.pop("settings_for", None)
        settings = load_settings(kwargs, config_file, command)
        _logs_settings(click.get_current_context(), settings)
        kwargs["settings"] = settings
        return f(*args, **kwargs)

    return wrapper


# option name -> setting name
STORAGE_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--db-url",), "db_url",
     {"metavar": "URL", "help": "Database: sqlite:///FILE, mysql://USER[:PASS]@HOST[:PORT]/DB, "
      "postgresql://USER[:PASS]@HOST[:PORT]/DB, clickhouse://USER[:PASS]@HOST[:PORT]/DB, or none. [default: sqlite:///sipcapture.db]"}),
    (("--db",), "db_url", {"metavar": "URL", "help": "Same as --db-url."}),
    (("--db-password-file",), "db_password_file",
     {"metavar": "FILE", "help": "Read the database password from FILE (one line; a bare "
      "name is looked up in $CREDENTIALS_DIRECTORY first, as systemd's LoadCredential= "
      "puts it) instead of writing it in the URL, where ps shows it."}),
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
    (("--route",), "route",
     {"multiple": True, "metavar": "METHODS=TABLES",
      "help": "Choose the table by SIP method, replies by their CSeq method: "
      "'INVITE,ACK,BYE,CANCEL=sip_capture_call_%Y%m%d'; '*=TABLES' for every other "
      "method (else --table-name). TABLES is a list like --table-name (a|b, strftime "
      "codes; --mt-mode chooses among them). Repeatable; applies to every capture mode. "
      "HOMER 5's layout: see docs/operators.md."}),
    (("--cluster",), "cluster",
     {"metavar": "NAME", "help": "ClickHouse: store into the cluster NAME of the server's "
      "remote_servers (db init: local tables on every shard and a Distributed table over "
      "them; writes and reads go through the Distributed table). [default: one server]"}),
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
     {"type": int, "metavar": "N", "help": "Rows per database batch (ClickHouse: the "
      "batches waiting to be written are joined into inserts of up to 20,000 rows). "
      "[default: 2000]"}),
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
    """Add --config and every storage setting (:func:`config_option`); the command
    receives ``settings``."""
    for names, setting, kw in reversed(STORAGE_OPTIONS):
        f = setting_option(*names, setting=setting, **kw)(f)
    return config_option(f)


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
                       ("lenient", "stored leniently"),
                       ("dedup", "duplicates not stored"),
                       ("maintenance", "tables made ahead"),
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
    # (the errors are not repeated here: each command prints them on stderr, once)
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
    """Add ``-v/--verbose``, ``-q/--quiet`` (both setting log_level; refused together),
    ``--log-file``, ``--log-format``: settings like the others, so logging is set up from
    them (file < environment < command line) before the command body runs. Put
    ``@config_option`` or ``@storage_options`` under it (nearer the function)."""
    for deco in reversed([
        setting_option("-v", "--verbose", setting="log_level", count=True,
                       convert=lambda n: "info" if n == 1 else "debug",
                       help="More log output (-v info, -vv debug; setting log_level)."),
        setting_option("-q", "--quiet", setting="log_level", count=True,
                       convert=lambda n: "error" if n == 1 else "critical",
                       help="Less output: no start lines and no text summary; logs errors "
                            "only (-qq: critical only; setting log_level)."),
        setting_option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
                       help="Append logs to FILE instead of stderr; reopened on SIGHUP "
                            "(logrotate)."),
        setting_option("--log-format",
                       help="text lines or JSON objects, one per line."),
    ]):
        f = deco(f)
    return f


# the settings of the endpoints, as options of the commands that serve them (hep, live)
ENDPOINT_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--control-timeout",), "control_timeout",
     {"metavar": "S",
      "help": "Close a control-socket or --metrics connection that has not sent a whole "
              "command (or HTTP request) within S seconds of connecting or of its previous "
              "answer, counted as control:timeout or metrics:timeout. [default: 5]"}),
    (("--control-max-connections",), "control_max_connections",
     {"metavar": "N",
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
        configure_limits(kwargs["settings"])
        return f(*args, **kwargs)

    g: Callable[..., Any] = wrapper
    for names, name, kw in reversed(ENDPOINT_OPTIONS):
        g = setting_option(*names, setting=name, **kw)(g)
    return g


# the dedup window (sipcaptool.dedup), as options of hep, live and replay
DEDUP_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--dedup-window",), "dedup_window",
     {"metavar": "MS",
      "help": "Store once what several capture points saw: a message whose bytes, "
              "addresses, ports and transport equal those of one stored within MS "
              "milliseconds (by its own time) and that another capture point saw (HEP: "
              "capture id and agent address; frames: VLAN tags, MAC addresses, cooked "
              "capture's interface, tunnel addresses) is counted as dedup:<node> and not "
              "stored. Retransmissions are stored: a capture point's second copy is stored "
              "unless another capture point's second copy was. With hep --workers N each "
              "worker has its own window (copies from agents that reach different workers "
              "are stored). "
              "0: off. See docs/operators.md. [default: 0]"}),
    (("--dedup-max-entries",), "dedup_max_entries",
     {"metavar": "N",
      "help": "Messages the dedup window remembers (about 420 bytes each); past it the "
              "oldest leave early, counted as evicted:dedup-full and logged, and a later "
              "copy of one of them is stored twice. [default: 100000]"}),
]


def dedup_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--dedup-window`` and ``--dedup-max-entries`` (settings: see
    :func:`setting_option`). Put it under ``@storage_options`` (nearer the function)."""
    for names, name, kw in reversed(DEDUP_OPTIONS):
        f = setting_option(*names, setting=name, **kw)(f)
    return f


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
    """Add the call filters of ``search`` and ``export`` (``--call-id`` … ``--until``,
    per invocation) and ``--tz`` (the setting tz: ``settings.tz``)."""
    for name, metavar, text in reversed(FILTERS):
        if name == "--tz":
            f = setting_option(name, metavar=metavar, help=text)(f)
        else:
            f = click.option(name, metavar=metavar, default=None, help=text)(f)
    return f
