"""``sipcaptool config``: show the effective settings, check a configuration file."""

from __future__ import annotations

import difflib
import json
import re
import tomllib

import click

from ..config import (
    COMMAND_TABLES,
    PARAMS,
    Settings,
    coerce,
    mode_from_mapping,
    parse_capture_mode,
    readable_secret_warning,
)
from ..errors import EXIT_USAGE, ConfigError
from .common import storage_options

# ``scheme://user:password@`` -> ``scheme://user:***@``; the password ends at the last
# '@' before a blank or a ';' (the separator of capture_mode definitions).
_PASSWORD_RE = re.compile(r"(://[^/@:\s;]*:)[^\s;]*@")


def mask_secrets(text: str) -> str:
    """Replace every password of a ``scheme://user:password@host`` in ``text`` with ``***``."""
    return _PASSWORD_RE.sub(r"\1***@", text)


def _masked(value: object) -> object:
    """``value`` with its passwords masked; a tuple of names (capture_mode) as a list."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def _shown(name: str, value: object) -> object:
    """What ``config show`` prints of a setting: a secret as ``***`` (empty when unset),
    passwords in URLs masked."""
    if PARAMS[name].secret:
        return "***" if value else ""
    return _masked(value)


@click.group("config")
def command() -> None:
    """Show the effective settings, or check a TOML configuration file.

    The file holds every sipcapture module parameter under its own name
    (db_url, table_name, mt_mode, insert_retries, capture_on ...), every option of
    the commands that is a setting (listen, auth_key_file, workers, log_file ...),
    [capture_mode.NAME] tables, and [hep], [live], [replay] ... tables whose settings
    apply to that command only. Precedence: defaults < file (top level < the
    command's table) < environment (SIPCAPTOOL_<NAME>) < command line.

    Options that say what one run does are not settings: the files of replay,
    --duration and --count, --json and --csv, -o/--output, --force, --format, the
    filters of search and export (--call-id ... --until), --limit, --legs,
    --legs-depth, --again, --resume, --explain, --print, --dry-run.

    \b
    Example:
      sipcaptool config show --config /etc/sipcaptool.toml
      sipcaptool config check --config /etc/sipcaptool.toml
    """


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: value and origin of each setting.")
@click.option("--for", "settings_for", type=click.Choice(COMMAND_TABLES), default=None,
              metavar="COMMAND",
              help="Show the settings COMMAND would use: the config file's top level and "
                   "then its [COMMAND] table (hep, live, replay ...). [default: the top "
                   "level and [config]]")
@storage_options
def show(as_json: bool, settings: Settings) -> None:
    """Print the effective settings and where each came from (default, file,
    environment, command line). Secrets are shown as ***: auth_key, and passwords
    in database URLs (also one read from db_password_file).

    Takes the same storage options as the collectors, so it shows what a command run
    with those options would use.

    \b
    Example:
      sipcaptool config show --config /etc/sipcaptool.toml
      SIPCAPTOOL_INSERT_RETRIES=5 sipcaptool config show --json
    """
    modes = {name: {"db_url": mask_secrets(m.db_url), "table_name": "|".join(m.tables),
                    "mt_mode": m.mt_mode, "hash_source": m.hash_source}
             for name, m in settings.modes.items()}
    active = [m.name for m in settings.active_modes()]
    if as_json:
        doc = {
            "settings": {name: {"value": _shown(name, settings.values[name]),
                                "origin": settings.origin.get(name, "default")}
                         for name in PARAMS},
            "capture_modes": modes,
            "active_modes": active,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    width = max(len(n) for n in PARAMS)
    lines = []
    for name in PARAMS:
        value = _shown(name, settings.values[name])
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
        lines.append(f"{name:<{width}} = {text:<34} # {settings.origin.get(name, 'default')}")
    for name, m in modes.items():
        lines.append("")
        lines.append(f"[capture_mode.{name}]")
        for k, v in m.items():
            lines.append(f"{k} = {json.dumps(v)}")
    lines.append("")
    lines.append("# messages are stored into: " + ", ".join(active))
    click.echo("\n".join(lines))


def check_file(path: str) -> list[str]:
    """Every problem of a config file, one message each (empty list: the file is fine)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return [f"config file {path!r} not found"]
    except OSError as e:
        return [f"config file {path!r} cannot be read: {e.strerror}"]
    except tomllib.TOMLDecodeError as e:
        return [f"not valid TOML: {e}"]
    problems: list[str] = []
    defined: set[str] = set()
    modes = data.get("capture_mode")
    if isinstance(modes, dict):
        for mode_name, table in modes.items():
            if mode_name == "use":
                continue  # checked below, once every mode is known
            if not isinstance(table, dict):
                problems.append(f"[capture_mode.{mode_name}]: must be a table with db_url, "
                                "table_name, mt_mode, hash_source")
                continue
            try:
                m = mode_from_mapping(mode_name, table, "file")
            except ConfigError as e:
                problems.append(mask_secrets(str(e)))
                continue
            defined.add(mode_name)
            problems.extend(_check_db_url(m.db_url, f"[capture_mode.{mode_name}] db_url"))
    if isinstance(modes, dict) and "use" in modes:
        use = modes["use"]
        names = [use] if isinstance(use, str) else use
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"[capture_mode] use = {use!r}: must be a list of mode names")
        else:
            for n in names:
                if n not in defined:
                    problems.append(f"[capture_mode] use: {n!r} is not defined; defined: "
                                    + (", ".join(sorted(defined)) or "none"))
    entries: list[tuple[str, str, object]] = []
    for name, value in data.items():
        if name in COMMAND_TABLES and isinstance(value, dict):
            entries.extend((f"[{name}] ", k, v) for k, v in value.items())
        else:
            entries.append(("", name, value))
    for where, name, value in entries:
        if name == "capture_mode" and isinstance(value, dict):
            if where:
                problems.append(f"{where}capture_mode: capture modes are defined at the top "
                                "level ([capture_mode.NAME]), for every command")
            continue
        if name not in PARAMS:
            guess = difflib.get_close_matches(name, list(PARAMS), n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            secret = (any(w in name.lower() for w in ("key", "pass", "secret", "token"))
                      or bool(guess and PARAMS[guess[0]].secret))
            shown = ("[table]" if isinstance(value, dict) else "***" if secret
                     else mask_secrets(repr(value)))
            problems.append(f"{where}{name} = {shown}: unknown setting{hint}; known settings: "
                            + ", ".join(sorted(PARAMS))
                            + ("; tables of settings for one command: "
                               + ", ".join(f"[{c}]" for c in COMMAND_TABLES)
                               if isinstance(value, dict) else ""))
            continue
        if name == "capture_mode":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                problems.append(f"capture_mode = {mask_secrets(repr(value))}: must be a list of "
                                "mode names or 'name=>db_url=...;table_name=...;' definitions, "
                                "or [capture_mode.NAME] tables")
                continue
            for item in items:
                if "=>" in item:
                    try:
                        m = parse_capture_mode(item)
                        problems.extend(_check_db_url(m.db_url, f"capture_mode {m.name!r} db_url"))
                    except ConfigError as e:
                        problems.append(mask_secrets(str(e)))
                elif item.strip() not in defined:
                    problems.append(f"capture_mode = {item!r}: not defined; defined: "
                                    + (", ".join(sorted(defined)) or "none")
                                    + " (add a [capture_mode.NAME] table or a definition "
                                    "'name=>db_url=...;table_name=...;')")
            continue
        if PARAMS[name].kind is float and isinstance(value, bool):
            lo, hi = PARAMS[name].bounds()
            problems.append(f"{name} = {value!r}: not a number; allowed: {lo}..{hi}")
            continue
        try:
            coerce(name, value)
        except ConfigError as e:
            problems.append(where + mask_secrets(str(e)) + _allowed_hint(name, str(e)))
            continue
        if name == "db_url" and isinstance(value, str):
            problems.extend(_check_db_url(value, f"{where}db_url"))
        if name == "route" and isinstance(value, (str, list)):
            from ..store.router import parse_routes
            try:  # each rule, and a method in two rules
                parse_routes([value] if isinstance(value, str) else value, check_length=False)
            except ConfigError as e:
                problems.append(f"{where}route: {e}")
        check = _GRAMMARS.get(name)
        if check is not None:
            for item in ([value] if isinstance(value, str) else value
                         if isinstance(value, list) else []):
                try:
                    check(item)
                except ConfigError as e:
                    problems.append(f"{where}{e}")  # names the setting and the value
    return problems


def _listen(text: str) -> None:
    from ..sources.hep_sockets import parse_listen

    parse_listen(text)


def _raw_listen(text: str) -> None:
    from ..sources.live import parse_listen

    parse_listen(text)


def _tz(text: str) -> None:
    from ..query.filters import parse_tz

    parse_tz(text, "tz")


def _metrics(text: str) -> None:
    from ..net import parse_hostport

    if text:
        parse_hostport(text)


def _ports(text: str) -> None:
    from ..net import parse_ports

    parse_ports(text, "ports")


def _age(text: str) -> None:
    from ..store.retention import parse_age

    if text:
        parse_age(text)


#: the settings whose text follows a grammar, checked as the commands check them
_GRAMMARS = {"listen": _listen, "raw_socket_listen": _raw_listen, "tz": _tz,
             "metrics": _metrics, "ports": _ports, "hep_ports": _ports, "retention": _age}


def _allowed_hint(name: str, message: str) -> str:
    if "allowed" in message:
        return ""
    typ = PARAMS[name].kind
    if typ in (int, float):
        lo, hi = PARAMS[name].bounds()
        kind = "whole number" if typ is int else "number"
        return f"; allowed: a {kind} {lo}..{hi}"
    if typ is str:
        return "; allowed: text in quotes"
    return ""


def _check_db_url(value: str, what: str) -> list[str]:
    try:
        from ..store.url import parse_db_url
    except ImportError:  # pragma: no cover - the store package is part of every install
        return []
    try:
        parse_db_url(value)
    except ConfigError as e:
        return [f"{what}: {e}"]  # parse_db_url masks the password itself
    return []


@command.command("check")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="The TOML file to check.")
@click.pass_context
def check(ctx: click.Context, config_file: str) -> None:
    """Check a configuration file: unknown names, wrong types and out-of-range values
    (insert_retries 0-500, insert_retry_timeout 0-300, mt_mode rand|round_robin|hash
    ...) are each reported with the name, the value and what is allowed.

    Prints "ok" and exits 0 when the file is fine; otherwise one line per problem on
    stderr and exit status 2. The environment is not consulted.

    \b
    Example:
      sipcaptool config check --config /etc/sipcaptool.toml
    """
    problems = check_file(config_file)
    try:
        with open(config_file, "rb") as f:
            warning = readable_secret_warning(config_file, tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError):
        warning = None  # reported by check_file
    if warning:
        click.echo(f"sipcaptool: warning: {warning}", err=True)
    if not problems:
        click.echo(f"{config_file}: ok")
        return
    for p in problems:
        click.echo(f"{config_file}: {p}", err=True)
    n = len(problems)
    click.echo(f"sipcaptool: error: {config_file}: {n} problem{'s' if n != 1 else ''}", err=True)
    ctx.exit(EXIT_USAGE)


__all__ = ["command", "check_file", "mask_secrets"]
