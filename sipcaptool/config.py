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


def _setting(default: _T, allowed: Allowed = None) -> _T:
    """A field of :class:`Settings` that is a setting: its default and what is allowed."""
    return field(default=default, metadata={"allowed": allowed})


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
    batch_max_bytes: int = _setting(8 << 20, (1 << 16, 1 << 30))
    # bytes that the compressed parts of one HEP datagram (whole-datagram gzip and every
    # chunk 0x0010 in it), TCP-framed HEP packet or capture frame may inflate to, together
    hep_max_inflated: int = _setting(256 * 1024, (4096, 1 << 28))
    # where batches wait while the database is unreachable: '' = the default directory
    # (sipcaptool.store.spool.default_spool_dir), 'none' = no spool
    spool_dir: str = _setting("")
    spool_max_bytes: int = _setting(1 << 30, (1 << 16, 1 << 50))
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

    # -- not settings ------------------------------------------------------------------
    # where each setting's value came from: "default", "file PATH", "environment
    # SIPCAPTOOL_NAME", "command line"
    origin: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PARAMS, "default"))
    # capture modes defined in the config file's [capture_mode.NAME] tables or with
    # capture_mode definitions "name=>db_url=...;table_name=...;"
    modes: Mapping[str, CaptureMode] = field(default_factory=dict)
    # names of the capture modes to store into; empty = the default mode only
    use_modes: tuple[str, ...] = ()

    # -- building ------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: str | None = None, cli: Mapping[str, object] | None = None,
             env: Mapping[str, str] | None = None) -> Settings:
        b = _Builder()
        if config_file:
            b.apply_file(config_file)
        b.apply_env(os.environ if env is None else env)
        for name, value in (cli or {}).items():
            if value is None or (name == "capture_mode" and not value):
                continue
            b.set(name, value, "command line")
        b.resolve_modes()
        s = cls(**b.values, origin=b.origin, modes=b.modes, use_modes=tuple(b.use_modes))
        # validate the default mode's tables now so errors surface before any work
        s.default_mode()
        return s

    def with_value(self, name: str, value: object, origin: str) -> Settings:
        """A copy with setting ``name`` set to ``value`` (validated as when loaded), which
        came from ``origin``: for a command's own options that are settings."""
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
        return CaptureMode("default", self.db_url,
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
        table[f.name] = Param(kind, default, f.metadata["allowed"])
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

    def set(self, name: str, value: Any, origin: str) -> None:
        """``value`` as TOML, the environment or click gives it."""
        _check_known(name, origin)
        if name == "capture_mode":
            vals = [value] if isinstance(value, str) else list(value)
            self.values["capture_mode"] = (*self.values["capture_mode"], *vals)
            self.origin[name] = origin
            return
        self.values[name] = coerce(name, value, origin)
        self.origin[name] = origin

    def apply_file(self, path: str) -> None:
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
                        self.values["capture_mode"] = (*self.values["capture_mode"], *names)
                        continue
                    if not isinstance(table, dict):
                        raise ConfigError(f"[capture_mode.{mode_name}] in {path} must be a table")
                    self.modes[mode_name] = mode_from_mapping(mode_name, table, origin)
                self.origin["capture_mode"] = origin
                continue
            self.set(name, value, origin)

    def apply_env(self, env: Mapping[str, str]) -> None:
        for name in PARAMS:
            key = "SIPCAPTOOL_" + name.upper()
            if key in env and env[key] != "":
                value: str | list[str] = env[key]
                if name == "capture_mode":
                    value = [v for v in env[key].split("\n") if v.strip()]
                self.set(name, value, f"environment {key}")

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


def coerce(name: str, value: object, origin: str = "") -> str | int | float:
    """Convert and validate one setting; ConfigError names setting, value and what is allowed."""
    typ, _default, allowed = PARAMS[name]
    where = f" (from {origin})" if origin else ""
    if typ is int:
        lo, hi = PARAMS[name].bounds()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and name in ("spool_max_bytes", "hep_max_inflated",
                                              "batch_max_bytes"):
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
    raise TypeError(f"{name} is a list of names, added to by Settings.load")


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
