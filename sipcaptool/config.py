"""Settings: every parameter of Kamailio's sipcapture module, under its own name.

Sources, lowest precedence first:

1. built-in defaults (``DEFAULTS``),
2. a TOML file (``--config FILE``): ``name = value`` at top level, plus
   ``[capture_mode.NAME]`` tables with ``db_url``, ``table_name``, ``mt_mode``,
   ``hash_source``, and ``use = ["NAME", ...]`` under ``[capture_mode]`` to store into
   those modes instead of the default one,
3. the environment: ``SIPCAPTOOL_<NAME>`` (upper case, e.g. ``SIPCAPTOOL_DB_URL``),
4. the command line (``--db-url`` ...).

``Settings.origin`` remembers where each value came from (``config show``).
Every value is validated here; a bad one raises ConfigError naming the setting, the
value and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MT_MODES = ("rand", "round_robin", "hash")
HASH_SOURCES = ("call_id", "from_user", "to_user")

# name -> (type, default, allowed) ; allowed is a (lo, hi) range for ints, a tuple of
# choices for str, or None.
PARAMS: dict[str, tuple[type, Any, Any]] = {
    "db_url": (str, "sqlite:///sipcapture.db", None),
    "table_name": (str, "sip_capture", None),
    "mt_mode": (str, "rand", MT_MODES),
    "hash_source": (str, "call_id", HASH_SOURCES),
    "db_insert_mode": (int, 0, (0, 2)),
    "capture_on": (int, 1, (0, 1)),
    "capture_mode": (list, [], None),
    "hep_capture_on": (int, 0, (0, 1)),
    "raw_ipip_capture_on": (int, 0, (0, 1)),
    "raw_moni_capture_on": (int, 0, (0, 1)),
    "raw_socket_listen": (str, "", None),
    "raw_interface": (str, "", None),
    "raw_sock_children": (int, 1, (1, 64)),
    "promiscuous_on": (int, 0, (0, 1)),
    "raw_moni_bpf_on": (int, 1, (0, 1)),
    "capture_node": (str, "homer01", None),
    "insert_retries": (int, 0, (0, 500)),
    "insert_retry_timeout": (int, 60, (0, 300)),
    "callid_aleg_header": (str, "X-CID", None),
    "capture_bad_msgs": (int, 0, (0, 1)),
    "custom_field1_header": (str, "Mac", None),
    "custom_field2_header": (str, "IP", None),
    "custom_field3_header": (str, "Port", None),
    # sipcaptool's own settings
    "batch_size": (int, 2000, (1, 100000)),
    "flush_interval": (float, 1.0, (0.01, 60.0)),
    # a batch is written once its rows make this many bytes formatted, even with fewer
    # than batch_size rows
    "batch_max_bytes": (int, 8 << 20, (1 << 16, 1 << 30)),
    # bytes that the compressed parts of one HEP datagram (whole-datagram gzip and every
    # chunk 0x0010 in it), TCP-framed HEP packet or capture frame may inflate to, together
    "hep_max_inflated": (int, 256 * 1024, (4096, 1 << 28)),
    # where batches wait while the database is unreachable: '' = the default directory
    # (sipcaptool.store.spool.default_spool_dir), 'none' = no spool
    "spool_dir": (str, "", None),
    "spool_max_bytes": (int, 1 << 30, (1 << 16, 1 << 50)),
    # hep, live: the control socket and --metrics close a connection that has not sent a
    # whole command or request within this many seconds (control:timeout), and hold at
    # most this many connections each (control:evicted-idle, control:refused-full)
    "control_timeout": (float, 5.0, (0.1, 3600.0)),
    "control_max_connections": (int, 64, (1, 65536)),
    # hep: close a TCP connection silent this many seconds (0: never); at most this many
    # connections (past it the one silent longest is closed for a new agent); after a
    # stop, store what the sockets held for at most this many seconds (0: no limit),
    # then read and count the rest as dropped:shutdown
    "tcp_idle_timeout": (float, 300.0, (0.0, 86400.0)),
    "tcp_max_connections": (int, 4096, (1, 1 << 20)),
    "stop_drain_timeout": (float, 30.0, (0.0, 86400.0)),
    # hep, live: a message whose own time is further than this many seconds from the
    # clock has its strftime table named by its arrival time (adjusted:clock-skew),
    # so senders cannot choose how many tables exist; 0: always its own time (replay)
    "max_clock_skew": (float, 86400.0, (0.0, 3650 * 86400.0)),
}
DEFAULTS = {k: v[1] for k, v in PARAMS.items()}


@dataclass
class CaptureMode:
    """Where and how messages are stored: one db_url, its tables and the table choice."""

    name: str
    db_url: str
    tables: list[str]
    mt_mode: str = "rand"
    hash_source: str = "call_id"


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    origin: dict[str, str] = field(default_factory=lambda: {k: "default" for k in DEFAULTS})
    # capture modes defined in the config file's [capture_mode.NAME] tables or with
    # capture_mode definitions "name=>db_url=...;table_name=...;"
    modes: dict[str, CaptureMode] = field(default_factory=dict)
    # names of the capture modes to store into; empty = the default mode only
    use_modes: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    # -- building ------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: str | None = None, cli: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> "Settings":
        s = cls()
        if config_file:
            s._apply_file(config_file)
        s._apply_env(os.environ if env is None else env)
        for name, value in (cli or {}).items():
            if value is None or (name == "capture_mode" and not value):
                continue
            s.set(name, value, "command line")
        s._resolve_modes()
        return s

    def set(self, name: str, value: Any, origin: str) -> None:
        if name not in PARAMS:
            raise ConfigError(f"unknown setting {name!r} (from {origin}); known settings: "
                              + ", ".join(sorted(PARAMS)))
        if name == "capture_mode":
            vals = [value] if isinstance(value, str) else list(value)
            self.values["capture_mode"] = list(self.values["capture_mode"]) + vals
            self.origin[name] = origin
            return
        self.values[name] = coerce(name, value, origin)
        self.origin[name] = origin

    def _apply_file(self, path: str) -> None:
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
        for name, value in data.items():
            if name == "capture_mode" and isinstance(value, dict):
                for mode_name, table in value.items():
                    if mode_name == "use":
                        # [capture_mode] use = ["calls", ...]: store into these modes
                        names = [table] if isinstance(table, str) else table
                        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                            raise ConfigError(f"[capture_mode] use in {path} must be a list of "
                                              "mode names")
                        self.values["capture_mode"] = list(self.values["capture_mode"]) + names
                        continue
                    if not isinstance(table, dict):
                        raise ConfigError(f"[capture_mode.{mode_name}] in {path} must be a table")
                    self.modes[mode_name] = mode_from_mapping(mode_name, table, origin)
                self.origin["capture_mode"] = origin
                continue
            self.set(name, value, origin)

    def _apply_env(self, env: Any) -> None:
        for name in PARAMS:
            key = "SIPCAPTOOL_" + name.upper()
            if key in env and env[key] != "":
                value = env[key]
                if name == "capture_mode":
                    value = [v for v in value.split("\n") if v.strip()]
                self.set(name, value, f"environment {key}")

    def _resolve_modes(self) -> None:
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
        # validate the default mode's tables now so errors surface before any work
        self.default_mode()

    # -- derived -------------------------------------------------------------------
    def default_mode(self) -> CaptureMode:
        return CaptureMode("default", self.values["db_url"],
                           split_tables(self.values["table_name"], "table_name",
                                        self.values["db_url"]),
                           self.values["mt_mode"], self.values["hash_source"])

    def active_modes(self) -> list[CaptureMode]:
        """The capture modes every message is stored into (the default mode if none chosen)."""
        if not self.use_modes:
            return [self.default_mode()]
        return [self.modes[n] for n in self.use_modes]

    def aleg_headers(self) -> tuple[str, ...]:
        names = tuple(h.strip() for h in self.values["callid_aleg_header"].split(";") if h.strip())
        return names[:16]

    def custom_headers(self) -> tuple[str, str, str]:
        return (self.values["custom_field1_header"], self.values["custom_field2_header"],
                self.values["custom_field3_header"])


def coerce(name: str, value: Any, origin: str = "") -> Any:
    """Convert and validate one setting; ConfigError names setting, value and what is allowed."""
    typ, _default, allowed = PARAMS[name]
    where = f" (from {origin})" if origin else ""
    if typ is int:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and name in ("spool_max_bytes", "hep_max_inflated",
                                              "batch_max_bytes"):
            value = _size_text(value, name, where)
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
                                  f"{allowed[0]}..{allowed[1]}") from None
        if not isinstance(value, int):
            raise ConfigError(f"{name} = {value!r}{where}: not a whole number")
        lo, hi = allowed
        if not lo <= value <= hi:
            raise ConfigError(f"{name} = {value}{where}: out of range; allowed: {lo}..{hi}")
        return value
    if typ is float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} = {value!r}{where}: not a number") from None
        lo, hi = allowed
        if not lo <= value <= hi:
            raise ConfigError(f"{name} = {value}{where}: out of range; allowed: {lo}..{hi}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r}{where}: must be a string")
        if allowed and value not in allowed:
            raise ConfigError(f"{name} = {value!r}{where}: allowed values are "
                              + ", ".join(allowed))
        if name == "table_name":
            split_tables(value, name)
        return value
    return value


def _size_text(value: str, name: str, where: str) -> int:
    """'1073741824', '512M', '2GiB', '64k' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", value, re.IGNORECASE)
    if not m:
        raise ConfigError(f"{name} = {value!r}{where}: expected bytes, e.g. 1073741824 or 1G")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


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
