"""``sipcaptool ctl``: talk to a running collector through its control socket."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from ..config import Settings
from ..control import (
    BAD_PARAMETER,
    UnsafeControlPathError,
    UntrustedPeerError,
    check_control_socket,
    default_control_path,
    format_stats_text,
    send_command,
)
from ..errors import EXIT_USAGE, SipcaptoolError
from .common import config_option, setting_option

# commands that serve a control socket, in the order their default paths are tried
_LONG_RUNNING = ("hep", "live")


class ControlError(SipcaptoolError):
    """The control socket is missing, refuses, or answered with an error."""

    exit_code = EXIT_USAGE


def _resolve_path(path: str | None) -> str:
    if path:
        return path
    found = [p for p in (default_control_path(c) for c in _LONG_RUNNING) if os.path.exists(p)]
    if len(found) == 1:
        _DEFAULT_PATHS.add(found[0])
        return found[0]
    if not found:
        tried = ", ".join(default_control_path(c) for c in _LONG_RUNNING)
        raise ControlError(f"no control socket found (looked for {tried}); "
                           "give the collector's --control PATH")
    raise ControlError("several collectors run (" + ", ".join(found) + "); choose one with "
                       "--control PATH")


# paths _resolve_path took from default_control_path: their directory is checked as
# the collector checks it (the user's alone), not only the socket's owner
_DEFAULT_PATHS: set[str] = set()


def _ask(path: str, line: str, timeout: float) -> str:
    euid = os.geteuid()
    try:
        # before a word is sent: the socket (and a default socket's directory) must be
        # this user's (or root's), and so must the process answering on it; root talks
        # to any
        check_control_socket(path, default=path in _DEFAULT_PATHS)
        answer = send_command(path, line, timeout=timeout,
                              peer_uids=None if euid == 0 else (euid, 0))
    except UnsafeControlPathError as e:
        raise ControlError(f"{e}") from None
    except UntrustedPeerError as e:
        raise ControlError(f"control socket {path}: {e.strerror}, not yours (uid {euid}): "
                           "refusing to talk to it; give the collector's --control PATH") from None
    except FileNotFoundError:
        raise ControlError(f"control socket {path}: not found (is the collector running "
                           "with --control pointing there?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"control socket {path}: nobody answers (the collector has "
                           "stopped; the socket file is stale)") from None
    except PermissionError:
        raise ControlError(f"control socket {path}: permission denied (the socket is "
                           "mode 0600: run as the collector's user or root)") from None
    except TimeoutError:
        raise ControlError(f"control socket {path}: no answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"control socket {path}: {e.strerror or e}") from None
    if answer.startswith("500 "):
        raise ControlError(answer)
    return answer


@click.group("ctl")
@setting_option("--control", metavar="PATH",
                help="Control socket of the running collector (its --control; the setting "
                     "control, also from [ctl] of --config or SIPCAPTOOL_CONTROL). "
                     "[default: the one default socket that exists: $XDG_RUNTIME_DIR/"
                     "sipcaptool/{hep,live}.sock, /run/sipcaptool/... for root, else "
                     "/tmp/sipcaptool-UID/...]")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=5.0, show_default=True,
              help="Seconds to wait for an answer.")
@config_option
@click.pass_context
def command(ctx: click.Context, timeout: float, settings: Settings) -> None:
    """Control a running collector (hep, live): switch capture on and off, read
    statistics, without a restart.

    Talks to the collector's control socket (a Unix socket, mode 0600), the way
    "kamcmd sipcapture.status" talks to Kamailio. Only a socket of your own user (or
    root's), answered by a process of your user (or root), is used, and a default
    socket only in a directory that is yours alone (root talks to any socket). Exit
    status: 0 done; 2 bad parameter, no socket, a socket or directory of another user,
    or the collector refused.

    \b
    Example:
      sipcaptool ctl --control /run/sipcaptool/hep.sock status off
      sipcaptool ctl --control /run/sipcaptool/hep.sock status check
      sipcaptool ctl --control /run/sipcaptool/hep.sock stats --json
    """
    ctx.ensure_object(dict)
    ctx.obj["control"] = settings.control or None
    ctx.obj["timeout"] = timeout


@command.command("status")
@click.argument("action", metavar="on|off|check")
@click.pass_context
def status(ctx: click.Context, action: str) -> None:
    """Switch capture on or off, or check it; prints Enabled or Disabled.

    "off" keeps receiving and counting (as dropped:capture-off) but stores nothing;
    "on" stores again; "check" changes nothing. Any other word (prefixes such as
    "onion" included) is refused with exit status 2.

    \b
    Example:
      sipcaptool ctl --control /run/sipcaptool/hep.sock status off
      sipcaptool ctl --control /run/sipcaptool/hep.sock status check   # Disabled
    """
    if action.lower() not in ("on", "off", "check"):
        raise ControlError(BAD_PARAMETER + f": {action!r}")
    path = _resolve_path(ctx.obj["control"])
    click.echo(_ask(path, f"status {action.lower()}", ctx.obj["timeout"]))


@command.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for machines).")
@click.option("--watch", type=click.FloatRange(0.2, 3600), default=None, metavar="SECONDS",
              help="Print again every SECONDS with per-second rates, until Ctrl-C.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool, watch: float | None) -> None:
    """Counters since the collector started: received, stored per table, skipped and
    dropped by reason, kernel drops, database batches/errors/retries, queue depth,
    spool size, uptime.

    A growing "dropped", "kernel" or "db errors" figure, a queue depth that stays
    high or a spool that grows mean the collector is losing or delaying messages.

    \b
    Example:
      sipcaptool ctl --control /run/sipcaptool/hep.sock stats
      sipcaptool ctl stats --json | jq .stored_total
      sipcaptool ctl stats --watch 5
    """
    path = _resolve_path(ctx.obj["control"])
    timeout = ctx.obj["timeout"]

    def fetch() -> dict[str, Any]:
        answer = _ask(path, "stats", timeout)
        try:
            doc = json.loads(answer)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ControlError(f"control socket {path}: not a stats answer: {answer[:80]!r}")
        return doc

    doc = fetch()
    _print_stats(doc, as_json)
    if watch is None:
        return
    prev, prev_t = doc, time.monotonic()
    try:
        while True:
            time.sleep(watch)
            doc = fetch()
            now = time.monotonic()
            dt = max(now - prev_t, 1e-6)
            doc["rates_per_s"] = {k: round((doc.get(k, 0) - prev.get(k, 0)) / dt, 1)
                                  for k in ("packets", "messages", "stored_total")}
            if not as_json:
                click.echo("")
            _print_stats(doc, as_json)
            prev, prev_t = doc, now
    except KeyboardInterrupt:
        return


def _print_stats(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, sort_keys=False))
    else:
        click.echo(format_stats_text(doc))


@command.command("ping")
@click.pass_context
def ping(ctx: click.Context) -> None:
    """Check that the collector answers; prints pong.

    \b
    Example:
      sipcaptool ctl --control /run/sipcaptool/hep.sock ping
    """
    path = _resolve_path(ctx.obj["control"])
    click.echo(_ask(path, "ping", ctx.obj["timeout"]))
