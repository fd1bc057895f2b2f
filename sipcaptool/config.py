"""Settings: every parameter of Kamailio's sipcapture module, under its own name.

Sources, lowest precedence first:

1. built-in defaults (the fields of ``Settings``),
2. a TOML file (``--config FILE``): ``name = value`` at top level, plus
   ``[capture_mode.NAME]`` tables with ``db_url``, ``table_name``, ``mt_mode``,
   ``hash_source``, and ``use = ["NAME", ...]`` under ``[capture_mode]`` to store into
   those modes instead of the default one,
3. the environment: ``SIPCAPTOOL_<NAME>`` (upper case, e.g. ``SIPCAPTOOL_DB_URL``),
4. the command line (``--db-url`` ...).

The one parameter table is the list of fields of :class:`Settings` made with
``_setting(default, allowed)``: each gives a setting's name, type, default and what is
allowed. ``PARAMS`` (name -> ``Param(kind, default, allowed)``) is derived from it for
the code that walks every setting (``config show/check``, the man page). ``Settings`` is
frozen: :meth:`Settings.load` builds it, :meth:`Settings.with_value` gives a copy with
one more command-line value. ``Settings.origin`` remembers where each value came from
(``config show``). Every value is validated here; a bad one raises ConfigError naming
the setting, the value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, TypeVar, get_origin, get_type_hints

from .errors import ConfigError
from .net import parse_size
from .record import HASH_SOURCES, MT_MODES

#: what a setting allows: a (lo, hi) range for numbers, the choices for text, or None
Allowed = tuple[float, float] | tuple[str, ...] | None

_T = TypeVar("_T")


def _setting(default: _T, allowed: Allowed = None, *, secret: bool = False,
             size: bool = False) -> _T:
    """A field of :class:`Settings` that is a setting: its default and what is allowed.

    ``secret``: never printed (``config show`` masks it, errors leave its value out; a
    config file holding it and readable by others gets a warning). ``size``: a number of
    bytes that may be written with K/M/G suffixes (``64M``). A ``tuple[str, ...]`` field
    is a list setting: a TOML array, a repeatable option, and in the environment a TOML
    array (``["a", "b"]``) or items separated by blanks (``capture_mode``: by newlines).
    """
    return field(default=default,
                 metadata={"allowed": allowed, "secret": secret, "size": size})


@dataclass(frozen=True)
class CaptureMode:
    """Where and how messages are stored: one db_url, its tables and the table choice."""

    name: str
    db_url: str
    tables: list[str]
    mt_mode: str = "rand"
    hash_source: str = "call_id"


@dataclass(frozen=True)
class Settings:
    """The effective settings: one typed attribute per setting, where each came from,
    and the capture modes. Frozen; build with :meth:`load`."""

    # -- the parameter table: name: type = _setting(default, allowed) ---------------
    db_url: str = _setting("sqlite:///sipcapture.db")
    table_name: str = _setting("sip_capture")
    mt_mode: str = _setting("rand", MT_MODES)
    hash_source: str = _setting("call_id", HASH_SOURCES)
    db_insert_mode: int = _setting(0, (0, 2))
    capture_on: int = _setting(1, (0, 1))
    # mode names or 'name=>db_url=...;' definitions (a list in TOML, repeatable option)
    capture_mode: tuple[str, ...] = _setting(())
    hep_capture_on: int = _setting(0, (0, 1))
    raw_ipip_capture_on: int = _setting(0, (0, 1))
    raw_moni_capture_on: int = _setting(0, (0, 1))
    raw_socket_listen: str = _setting("")
    raw_interface: str = _setting("")
    raw_sock_children: int = _setting(1, (1, 64))
    promiscuous_on: int = _setting(0, (0, 1))
    raw_moni_bpf_on: int = _setting(1, (0, 1))
    capture_node: str = _setting("homer01")
    insert_retries: int = _setting(0, (0, 500))
    insert_retry_timeout: int = _setting(60, (0, 300))
    callid_aleg_header: str = _setting("X-CID")
    capture_bad_msgs: int = _setting(0, (0, 1))
    custom_field1_header: str = _setting("Mac")
    custom_field2_header: str = _setting("IP")
    custom_field3_header: str = _setting("Port")
    # sipcaptool's own settings
    batch_size: int = _setting(2000, (1, 100000))
    flush_interval: float = _setting(1.0, (0.01, 60.0))
    # a batch is written once its rows make this many bytes formatted, even with fewer
    # than batch_size rows
    batch_max_bytes: int = _setting(8 << 20, (1 << 16, 1 << 30), size=True)
    # bytes that the compressed parts of one HEP datagram (whole-datagram gzip and every
    # chunk 0x0010 in it), TCP-framed HEP packet or capture frame may inflate to, together
    hep_max_inflated: int = _setting(256 * 1024, (4096, 1 << 28), size=True)
    # where batches wait while the database is unreachable: '' = the default directory
    # (sipcaptool.store.spool.default_spool_dir), 'none' = no spool
    spool_dir: str = _setting("")
    spool_max_bytes: int = _setting(1 << 30, (1 << 16, 1 << 50), size=True)
    # hep, live: the control socket and --metrics close a connection that has not sent a
    # whole command or request within this many seconds (control:timeout), and hold at
    # most this many connections each (control:evicted-idle, control:refused-full)
    control_timeout: float = _setting(5.0, (0.1, 3600.0))
    control_max_connections: int = _setting(64, (1, 65536))
    # hep: close a TCP connection silent this many seconds (0: never); at most this many
    # connections (past it the one silent longest is closed for a new agent); after a
    # stop, store what the sockets held for at most this many seconds (0: no limit),
    # then read and count the rest as dropped:shutdown
    tcp_idle_timeout: float = _setting(300.0, (0.0, 86400.0))
    tcp_max_connections: int = _setting(4096, (1, 1 << 20))
    stop_drain_timeout: float = _setting(30.0, (0.0, 86400.0))
    # hep, live: a message whose own time is further than this many seconds from the
    # clock has its strftime table named by its arrival time (adjusted:clock-skew),
    # so senders cannot choose how many tables exist; 0: always its own time (replay)
    max_clock_skew: float = _setting(86400.0, (0.0, 3650 * 86400.0))
    # hep, live, replay: a message whose bytes and addresses equal those of a message
    # stored within this many milliseconds (by its own time), seen by another capture
    # point (HEP node and agent, or link-level path), is counted as dedup:<node> and not
    # stored again; a retransmission (the same capture point) is stored. 0: off, as the
    # module. See sipcaptool.dedup
    dedup_window: int = _setting(0, (0, 3_600_000))
    # messages the dedup window remembers at most; past it the oldest leave early
    # (evicted:dedup-full, logged): a later copy of one of them is stored twice
    dedup_max_entries: int = _setting(100_000, (1, 10_000_000))
    # table by SIP method (HOMER 5's per-method tables), for every capture mode:
    # 'METHOD[,METHOD...]=TABLE[|TABLE...]' rules, a reply by its CSeq method, '*' the
    # methods no rule names (else table_name); see sipcaptool.store.router
    route: tuple[str, ...] = _setting(())
    # ClickHouse: store into the cluster of this name (the server's remote_servers): db
    # init creates local tables on every shard and a Distributed table; applies to every
    # clickhouse:// db_url that does not name its own (?cluster=); '' = one server
    cluster: str = _setting("")

    # -- the commands' own settings: each is also an option of the commands named ------
    # every command that logs: -v info, -vv debug, -q error, -qq critical; the file logs
    # are appended to ('' = stderr; reopened on SIGHUP); text or JSON lines
    log_level: str = _setting("warning", ("debug", "info", "warning", "error", "critical"))
    log_file: str = _setting("")
    log_format: str = _setting("text", ("text", "json"))
    # the database password, read from this file (one line; a bare name is looked up in
    # $CREDENTIALS_DIRECTORY first, as systemd's LoadCredential= puts it), for db_url and
    # every capture mode's URL that names a user without a password
    db_password_file: str = _setting("")
    # hep: where HEP is received (udp|tcp:HOST:PORT, IPv6 in brackets)
    listen: tuple[str, ...] = _setting(("udp:0.0.0.0:9060",))
    # hep: only packets carrying this key (chunk 0x000e) are taken; live --hep-to: the key
    # sent. Never printed; better read from auth_key_file (same form as db_password_file)
    auth_key: str = _setting("", secret=True)
    auth_key_file: str = _setting("")
    # hep: receiving processes (SO_REUSEPORT), each with its own writer process
    workers: int = _setting(1, (1, 64))
    # hep: the UDP receive buffer asked for per socket, bytes (0: the system's)
    rcvbuf: int = _setting(64 << 20, (0, 1 << 31), size=True)
    # hep, live: the control socket ('' = the command's default path under
    # $XDG_RUNTIME_DIR/sipcaptool or /run/sipcaptool, 'none' = no socket); ctl's socket
    control: str = _setting("")
    # hep, live: serve the counters for Prometheus at http://HOST:PORT/metrics ('' = not)
    metrics: str = _setting("")
    # live: a libpcap filter instead of the one built from raw_socket_listen's ports;
    # bytes kept per packet; the kernel buffer per worker in MiB
    filter: str = _setting("")
    snaplen: int = _setting(262144, (256, 262144))
    buffer_size: int = _setting(32, (1, 2048))
    # live in agent mode (--hep-to): the HEP capture id and node name sent
    capture_id: int = _setting(2001, (0, 0xFFFFFFFF))
    node_name: str = _setting("")
    # live, replay: agent mode: send every message as HEPv3 to these collectors
    # (udp|tcp|tls:HOST:PORT; a host's udp and tcp/tls targets are one collector, a comma
    # joins them explicitly; each call goes to one collector by a hash of its Call-ID);
    # hep: forward_to, the same for every message it receives
    hep_to: tuple[str, ...] = _setting(())
    forward_to: tuple[str, ...] = _setting(())
    # hep: the certificate and key (PEM) of the tls: listeners and the CA that client
    # certificates must be signed by ('' = none asked for); live, replay: the CA the
    # collector's certificate must be signed by ('' = the system's CAs), and the agent's
    # own certificate and key for collectors that ask for one
    tls_cert: str = _setting("")
    tls_key: str = _setting("")
    tls_ca: str = _setting("")
    # hep --forward-to: the CA of the collectors it forwards to ('' = the system's CAs)
    forward_tls_ca: str = _setting("")
    # live, replay --hep-to, hep --forward-to: memory messages wait in while no collector
    # can take them; past it the disk (spool_dir + '-hep'), then dropped:hep-buffer-full
    hep_buffer: int = _setting(64 << 20, (1 << 16, 1 << 40), size=True)
    # live: the user to switch to once the capture sockets are open ('' = stay)
    user: str = _setting("")
    # replay: only SIP / only HEP on these ports ('' = any port, recognised by content)
    ports: str = _setting("")
    hep_ports: str = _setting("")
    # search, flow, export: the zone of times read and shown (UTC, local, Europe/Paris,
    # +02:00)
    tz: str = _setting("UTC")
    # flow: one column per address:port or per host; IP=NAME names for the columns
    by: str = _setting("port", ("port", "host"))
    alias: tuple[str, ...] = _setting(())
    # db init: the days of strftime-named (and route) tables made from today; MariaDB:
    # the sip tables partitioned by day this many days ahead (0: not partitioned);
    # 0: no logs_capture, report_capture, rtcp_capture
    days: int = _setting(1, (1, 3660))
    partition_days: int = _setting(0, (0, 3660))
    aux_tables: int = _setting(1, (0, 1))
    # db prune (--older-than) removes the days older than this, 14d or 2w; db init sets it
    # as ClickHouse's TTL ('' = kept for ever)
    retention: str = _setting("")
    # db prune: rows per DELETE in the tables that are not dropped whole
    batch_rows: int = _setting(5000, (1, 1_000_000))

    # -- not settings ------------------------------------------------------------------
    # where each setting's value came from: "default", "file PATH", "environment
    # SIPCAPTOOL_NAME", "command line"
    origin: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PARAMS, "default"))
    # capture modes defined in the config file's [capture_mode.NAME] tables or with
    # capture_mode definitions "name=>db_url=...;table_name=...;"
    modes: Mapping[str, CaptureMode] = field(default_factory=dict)
    # names of the capture modes to store into; empty = the default mode only
    use_modes: tuple[str, ...] = ()
    # what the operator should know about the settings (a config file holding a secret
    # readable by others, a secret given on the command line); the command logs them
    warnings: tuple[str, ...] = ()

    # -- building ------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: str | None = None, cli: Mapping[str, object] | None = None,
             env: Mapping[str, str] | None = None, command: str | None = None) -> Settings:
        """The settings from the defaults, ``config_file`` (its top level, then its
        ``[command]`` table), ``env`` (``os.environ`` by default) and ``cli`` (setting
        name -> value given on the command line; None = not given), in that order.
        Secrets named by ``*_file`` settings are read here; settings that contradict
        each other raise ConfigError."""
        env = os.environ if env is None else env
        b = _Builder()
        if config_file:
            b.apply_file(config_file, command)
        b.apply_env(env)
        for name, value in (cli or {}).items():
            if value is None or (name in ("capture_mode", "route") and not value):
                continue
            b.set(name, value, "command line")
        b.resolve_modes()
        b.read_secrets(env)
        b.check_conflicts()
        modes = b.modes
        if b.values.get("cluster"):
            from .store.clickhouse import with_cluster
            cluster = str(b.values["cluster"])
            modes = {n: replace(m, db_url=with_cluster(m.db_url, cluster))
                     for n, m in modes.items()}
        s = cls(**b.values, origin=b.origin, modes=modes, use_modes=tuple(b.use_modes),
                warnings=tuple(b.warnings))
        # validate the default mode's tables now so errors surface before any work
        s.default_mode()
        return s

    def __repr__(self) -> str:
        """Every setting, secrets as ``***`` and passwords in URLs masked (a log line or
        a traceback that shows the settings shows no secret)."""
        from .store.url import mask_password

        shown = ", ".join(f"{name}={'***' if PARAMS[name].secret and value else value!r}"
                          for name, value in self.values.items())
        modes = ", ".join(f"{m.name}={m.db_url!r}" for m in self.modes.values())
        return mask_password(f"Settings({shown}, modes=[{modes}])")

    def with_value(self, name: str, value: object, origin: str) -> Settings:
        """A copy with setting ``name`` set to ``value`` (validated as when loaded), which
        came from ``origin`` (for tests and library callers; a command's options that are
        settings go through :meth:`load`, see ``commands.common.setting_option``)."""
        _check_known(name, origin)
        if name == "capture_mode":
            raise ValueError("capture modes are chosen when the settings are loaded")
        # the value's type is the one of the field ``name``: coerce() checked it
        coerced: dict[str, Any] = {name: coerce(name, value, origin)}
        return replace(self, origin={**self.origin, name: origin}, **coerced)

    @property
    def values(self) -> dict[str, object]:
        """``{name: value}`` of every setting, in the order of the parameter table."""
        return {name: getattr(self, name) for name in PARAMS}

    # -- derived -------------------------------------------------------------------
    def default_mode(self) -> CaptureMode:
        db_url = self.db_url
        if self.cluster:
            from .store.clickhouse import with_cluster
            db_url = with_cluster(db_url, self.cluster)
        return CaptureMode("default", db_url,
                           split_tables(self.table_name, "table_name", self.db_url),
                           self.mt_mode, self.hash_source)

    def active_modes(self) -> list[CaptureMode]:
        """The capture modes every message is stored into (the default mode if none chosen)."""
        if not self.use_modes:
            return [self.default_mode()]
        return [self.modes[n] for n in self.use_modes]

    def aleg_headers(self) -> tuple[str, ...]:
        names = tuple(h.strip() for h in self.callid_aleg_header.split(";") if h.strip())
        return names[:16]

    def custom_headers(self) -> tuple[str, str, str]:
        return (self.custom_field1_header, self.custom_field2_header,
                self.custom_field3_header)


class Param(NamedTuple):
    """One setting of the parameter table: the kind of value (``list`` for the names of
    capture_mode), its default and what is allowed."""

    kind: type
    default: object
    allowed: Allowed
    secret: bool = False
    size: bool = False

    def bounds(self) -> tuple[float, float]:
        """The (lo, hi) range of a number setting (ints for an int setting)."""
        if self.allowed is not None and len(self.allowed) == 2:
            lo, hi = self.allowed
            if not isinstance(lo, str) and not isinstance(hi, str):
                return lo, hi
        raise TypeError(f"not a number setting: {self!r}")


def _params() -> dict[str, Param]:
    hints = get_type_hints(Settings)
    table: dict[str, Param] = {}
    for f in fields(Settings):
        if "allowed" not in f.metadata:
            continue  # origin, modes, use_modes
        hint = hints[f.name]
        kind = {str: str, int: int, float: float}.get(hint)
        if kind is None and get_origin(hint) is tuple:
            kind = list
        if kind is None:
            raise TypeError(f"setting {f.name}: no parameter kind for {hint!r}")
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        table[f.name] = Param(kind, default, f.metadata["allowed"],
                              bool(f.metadata.get("secret")), bool(f.metadata.get("size")))
    return table


#: name -> Param(kind, default, allowed), in the order of the fields of Settings
PARAMS: dict[str, Param] = _params()


def _check_known(name: str, origin: str) -> None:
    if name not in PARAMS:
        raise ConfigError(f"unknown setting {name!r} (from {origin}); known settings: "
                          + ", ".join(sorted(PARAMS)))


class _Builder:
    """The settings while they are loaded (file < environment < command line), then
    frozen into a :class:`Settings`."""

    def __init__(self) -> None:
        # the coerced value of each setting; Settings(**values) gives each its type
        self.values: dict[str, Any] = Settings().values
        self.origin: dict[str, str] = dict.fromkeys(PARAMS, "default")
        self.modes: dict[str, CaptureMode] = {}
        self.use_modes: list[str] = []
        self.warnings: list[str] = []

    def set(self, name: str, value: Any, origin: str) -> None:
        """``value`` as TOML, the environment or click gives it."""
        _check_known(name, origin)
        if name == "capture_mode":
            vals = [value] if isinstance(value, str) else list(value)
            self.values["capture_mode"] = (*self.values["capture_mode"], *vals)
            self.origin[name] = origin
            return
        if name == "route":  # a list: the rules of the source given last replace the others'
            from .store.router import parse_routes
            vals = value.split() if isinstance(value, str) else list(value)
            try:
                parse_routes(vals, check_length=False)
            except ConfigError as e:
                raise ConfigError(f"route (from {origin}): {e}") from None
            self.values[name] = tuple(vals)
            self.origin[name] = origin
            return
        self.values[name] = coerce(name, value, origin)
        self.origin[name] = origin

    def apply_file(self, path: str, command: str | None = None) -> None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} not found") from None
        except OSError as e:
            raise ConfigError(f"config file {path!r} cannot be read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
        origin = f"file {path}"
        self._warn_readable(path, data)
        tables = {name: data.pop(name) for name in list(data)
                  if name in COMMAND_TABLES and isinstance(data[name], dict)}
        for name, table in tables.items():
            for key in table:
                _check_known(key, f"[{name}] of {origin}")
        self._apply_table(data, path, origin)
        if command in tables:
            self._apply_table(tables[command], path, f"{origin} [{command}]")

    def _apply_table(self, data: dict[str, Any], path: str, origin: str) -> None:
        for name, value in data.items():
            if name == "capture_mode" and isinstance(value, dict):
                for mode_name, table in value.items():
                    if mode_name == "use":
                        # [capture_mode] use = ["calls", ...]: store into these modes
                        names = [table] if isinstance(table, str) else table
                        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                            raise ConfigError(f"[capture_mode] use in {path} must be a list of "
                                              "mode names")
                        self.values["capture_mode"] = (*self.values["capture_mode"], *names)
                        continue
                    if not isinstance(table, dict):
                        raise ConfigError(f"[capture_mode.{mode_name}] in {path} must be a table")
                    self.modes[mode_name] = mode_from_mapping(mode_name, table, origin)
                self.origin["capture_mode"] = origin
                continue
            self.set(name, value, origin)

    def _warn_readable(self, path: str, data: dict[str, Any]) -> None:
        warning = readable_secret_warning(path, data)
        if warning:
            self.warnings.append(warning)

    def apply_env(self, env: Mapping[str, str]) -> None:
        for name in PARAMS:
            key = "SIPCAPTOOL_" + name.upper()
            if key in env and env[key] != "":
                value: str | list[str] = env[key]
                if PARAMS[name].kind is list:
                    value = env_list(name, env[key], key)
                self.set(name, value, f"environment {key}")

    def read_secrets(self, env: Mapping[str, str]) -> None:
        """auth_key from auth_key_file, the database password from db_password_file."""
        v, o = self.values, self.origin
        if v["auth_key_file"]:
            if v["auth_key"]:
                raise ConfigError(f"auth_key ({o['auth_key']}) and auth_key_file "
                                  f"({o['auth_key_file']}) both give the HEP auth key: "
                                  "keep one (the file keeps it out of ps and unit files)")
            v["auth_key"] = read_secret_file(v["auth_key_file"], "auth_key_file", env)
            o["auth_key"] = f"{o['auth_key_file']} (auth_key_file)"
        elif v["auth_key"] and o["auth_key"] == "command line":
            self.warnings.append("--auth-key on the command line is visible to every user "
                                 "of this machine (ps, /proc): use --auth-key-file FILE")
        if v["db_password_file"]:
            password = read_secret_file(v["db_password_file"], "db_password_file", env)
            v["db_url"] = _with_password(v["db_url"], password, o["db_url"])
            self.modes = {name: replace(m, db_url=_with_password(m.db_url, password,
                                                                 f"capture_mode {name}"))
                          for name, m in self.modes.items()}

    def check_conflicts(self) -> None:
        """Settings that contradict each other are refused, not one silently ignored."""
        v, o = self.values, self.origin
        if o["hash_source"] != "default" and v["mt_mode"] != "hash":
            raise ConfigError(f"hash_source = {v['hash_source']!r} ({o['hash_source']}) is "
                              f"used only with mt_mode = 'hash', and mt_mode is "
                              f"{v['mt_mode']!r} ({o['mt_mode']}): add --mt-mode hash, or "
                              "leave hash_source out")

    def resolve_modes(self) -> None:
        for item in self.values["capture_mode"]:
            if "=>" in item:
                mode = parse_capture_mode(item)
                self.modes[mode.name] = mode
                if mode.name not in self.use_modes:
                    self.use_modes.append(mode.name)
            else:
                name = item.strip()
                if name not in self.modes:
                    known = ", ".join(sorted(self.modes)) or "none defined"
                    raise ConfigError(f"capture_mode {name!r} is not defined (defined: {known}); "
                                      "define it as 'name=>db_url=...;table_name=...;' or in a "
                                      "[capture_mode.NAME] table of the config file")
                if name not in self.use_modes:
                    self.use_modes.append(name)


#: the commands whose own table (``[hep]``, ``[live]`` ...) in a config file holds
#: settings for that command only, over the file's top level
COMMAND_TABLES = ("replay", "hep", "live", "db", "search", "flow", "export", "spool", "ctl",
                  "config")


def readable_secret_warning(path: str, data: Mapping[str, Any]) -> str | None:
    """A warning when the config file ``path`` (parsed: ``data``) holds a secret and
    others than its owner may read it (mode & 0o044)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    found = sorted(_secrets_in(data)) if mode & 0o044 else []
    if not found:
        return None
    return (f"config file {path} holds a secret ({', '.join(found)}) and is readable by "
            f"others (mode {mode & 0o777:04o}): chmod 600 {path}, or keep the secret in a "
            "file named by auth_key_file / db_password_file")


def _secrets_in(data: Mapping[str, Any]) -> set[str]:
    """The names of the secrets a parsed config file holds (also in its tables)."""
    found: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            found |= _secrets_in(value)
        elif key in PARAMS and PARAMS[key].secret and value:
            found.add(key)
        elif isinstance(value, str) and _has_password(value):
            found.add(f"a password in {key}")
        elif isinstance(value, list) and any(isinstance(x, str) and _has_password(x)
                                             for x in value):
            found.add(f"a password in {key}")
    return found


def _has_password(text: str) -> bool:
    from urllib.parse import urlsplit

    for part in text.replace(";", " ").split():
        if "://" in part:
            try:
                if urlsplit(part.split("db_url=", 1)[-1]).password:
                    return True
            except ValueError:
                continue
    return False


def _with_password(url: str, password: str, what: str) -> str:
    """``url`` with ``password`` (percent-encoded) after its user; a URL without a user
    (sqlite, none, peer authentication) is returned as it is."""
    from urllib.parse import quote, urlsplit

    try:
        parts = urlsplit(url)
        user, has = parts.username, parts.password
    except ValueError:
        return url  # the db_url's own error is reported where it is parsed
    if not user or "@" not in parts.netloc:
        return url
    if has:
        raise ConfigError(f"db_url ({what}) has a password and db_password_file is set: "
                          "keep one (the file keeps it out of ps and the config file)")
    userinfo, _at, hostpart = parts.netloc.rpartition("@")
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostpart}"
    return parts._replace(netloc=netloc).geturl()


def read_secret_file(path: str, setting: str, env: Mapping[str, str]) -> str:
    """The secret in the file ``path`` (one line; the final newline is not part of it).
    A bare name is looked up first in ``$CREDENTIALS_DIRECTORY`` (systemd's
    ``LoadCredential=``). Errors name the file, never its content."""
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    if creds and os.sep not in path and os.path.exists(os.path.join(creds, path)):
        path = os.path.join(creds, path)
    try:
        with open(path, "rb") as f:
            raw = f.read(65537)
    except OSError as e:
        raise ConfigError(f"{setting} = {path!r}: cannot read it: {e.strerror}") from None
    if len(raw) > 65536:
        raise ConfigError(f"{setting} = {path!r}: longer than 64 KB, not a secret")
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{setting} = {path!r}: not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{setting} = {path!r}: the file is empty")
    if "\n" in text:
        raise ConfigError(f"{setting} = {path!r}: holds several lines; the secret is one line")
    return text


def env_list(name: str, text: str, key: str) -> list[str]:
    """A list setting from one environment variable: a TOML array (``["a", "b"]``), or
    items separated by blanks (``capture_mode``: by newlines, as its definitions may hold
    blanks)."""
    if text.lstrip().startswith("["):
        try:
            items = tomllib.loads("v = " + text)["v"]
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{key}: not a TOML array: {e}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{key}: must be an array of strings")
        return items
    if name == "capture_mode":
        return [v for v in text.split("\n") if v.strip()]
    return text.split()


def coerce(name: str, value: object, origin: str = "") -> Any:
    """Convert and validate one setting (a list setting gives a tuple of strings);
    ConfigError names setting, value (not a secret's) and what is allowed."""
    typ, _default, allowed, secret, _size = PARAMS[name]
    where = f" (from {origin})" if origin else ""
    if secret and typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}{where}: must be a string")
        return value
    if typ is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name} = {value!r}{where}: must be a list of strings")
        for item in items:
            if allowed and item not in allowed:
                raise ConfigError(f"{name} = {item!r}{where}: allowed values are "
                                  + ", ".join(str(a) for a in allowed))
        return tuple(items)
    if typ is int:
        lo, hi = PARAMS[name].bounds()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and PARAMS[name].size:
            value = parse_size(value, f"{name} =", where)
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("on", "yes", "true"):
                v = "1"
            elif v in ("off", "no", "false"):
                v = "0"
            try:
                value = int(v, 10)
            except ValueError:
                raise ConfigError(f"{name} = {value!r}{where}: not a whole number; allowed: "
                                  f"{lo}..{hi}") from None
        if not isinstance(value, int):
            raise ConfigError(f"{name} = {value!r}{where}: not a whole number")
        if not lo <= value <= hi:
            raise ConfigError(f"{name} = {value}{where}: out of range; allowed: {lo}..{hi}")
        return value
    if typ is float:
        lo, hi = PARAMS[name].bounds()
        try:
            if not isinstance(value, (str, int, float)):
                raise TypeError(value)
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} = {value!r}{where}: not a number") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{name} = {number}{where}: out of range; allowed: {lo}..{hi}")
        return number
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r}{where}: must be a string")
        if allowed and value not in allowed:
            raise ConfigError(f"{name} = {value!r}{where}: allowed values are "
                              + ", ".join(str(a) for a in allowed))
        if name == "table_name":
            split_tables(value, name)
        return value
    raise TypeError(f"{name}: no conversion for a {typ.__name__} setting")


def split_tables(value: str, name: str = "table_name", db_url: str | None = None) -> list[str]:
    """Split a "a|b" table list; every name must pass the router's rule (identifier
    characters and strftime codes that give only such; with ``db_url``, the longest
    expansion within that database's identifier limit)."""
    from .store.router import validate_table_name

    dialect = None
    if db_url is not None:
        from .store.url import parse_db_url
        try:
            dialect = parse_db_url(db_url).dialect
        except ConfigError:
            dialect = None  # the db_url's own error is reported where it is used
    tables = [t.strip() for t in value.split("|")]
    for t in tables:
        try:
            validate_table_name(t, dialect, check_length=db_url is not None)
        except ConfigError as e:
            raise ConfigError(f"{name} = {value!r}: {t!r} is not a valid table name ("
                              f"{str(e).split(': ', 1)[-1]}); several names are separated "
                              "by '|'") from None
    return tables


def mode_from_mapping(name: str, m: dict[str, Any], origin: str) -> CaptureMode:
    allowed = {"db_url", "table_name", "mt_mode", "hash_source"}
    for k in m:
        if k not in allowed:
            raise ConfigError(f"capture_mode {name!r} ({origin}): unknown parameter {k!r}; "
                              "allowed: " + ", ".join(sorted(allowed)))
    if "db_url" not in m or "table_name" not in m:
        raise ConfigError(f"capture_mode {name!r} ({origin}): db_url and table_name are required")
    mt = m.get("mt_mode", "rand")
    hs = m.get("hash_source", "call_id")
    if mt not in MT_MODES:
        raise ConfigError(f"capture_mode {name!r}: mt_mode = {mt!r}; allowed: " + ", ".join(MT_MODES))
    if hs not in HASH_SOURCES:
        raise ConfigError(f"capture_mode {name!r}: hash_source = {hs!r}; allowed: "
                          + ", ".join(HASH_SOURCES))
    return CaptureMode(name, str(m["db_url"]), split_tables(str(m["table_name"]),
                       f"capture_mode {name} table_name", str(m["db_url"])), mt, hs)


def parse_capture_mode(text: str) -> CaptureMode:
    """Parse the module's syntax: ``name=>db_url=...;table_name=a|b;mt_mode=hash;hash_source=call_id;``."""
    name, sep, rest = text.partition("=>")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"capture_mode {text!r}: expected 'name=>db_url=...;table_name=...;'")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        part = part.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        if not eq:
            raise ConfigError(f"capture_mode {name!r}: {part!r} is not 'param=value'")
        params[k.strip()] = v.strip()
    return mode_from_mapping(name, params, "capture_mode definition")
