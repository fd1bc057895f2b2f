"""The ``sipcaptool`` command: a click group, global options and exit codes.

Errors the user can cause end with one line on stderr (``sipcaptool: error: ...``) and
a documented exit code (see ``sipcaptool.errors``); a traceback only with ``--debug``.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys

import click

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_USAGE, SipcaptoolError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# subcommand name -> module under sipcaptool.commands (imported on use, so that
# `sipcaptool replay` does not pay for the HEP server or live capture imports)
COMMANDS = {
    "replay": "replay",
    "db": "db",
    "hep": "hep",
    "live": "live",
    "ctl": "ctl",
    "config": "configcmd",
    "spool": "spool",
    "search": "search",
    "flow": "flow",
    "export": "export",
}


_EXAMPLE_RE = re.compile(r"\n[ \t]*\x08[ \t]*\n(?=[ \t]*Examples?:)")


def examples_last(cmd: click.Command) -> click.Command:
    """Move the trailing ``Example:`` block of a command's help after its options, so that
    every ``--help`` ends with an example (the man pages read it from the same place)."""
    if cmd.help and not cmd.epilog:
        text = inspect.cleandoc(cmd.help)
        found = list(_EXAMPLE_RE.finditer(text))
        if found:
            cut = found[-1]
            cmd.help = text[:cut.start()].rstrip()
            cmd.epilog = "\b\n" + text[cut.end():].strip("\n")
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            examples_last(sub)
    return cmd


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    def _load(self, name: str) -> click.Command | None:
        modname = COMMANDS.get(name)
        if modname is None:
            return None
        import importlib

        try:
            mod = importlib.import_module(f"sipcaptool.commands.{modname}")
        except ModuleNotFoundError as e:
            if e.name == f"sipcaptool.commands.{modname}":
                return None
            raise
        return examples_last(mod.command)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="sipcaptool")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Store every SIP message of a capture file, a mirror port, an IPIP tunnel or a
    fleet of HEP agents as one row in MySQL/MariaDB, PostgreSQL or SQLite — the
    table layout of Kamailio's sipcapture module, without the SIP proxy.

    \b
    Exit codes: 0 success, 1 internal error, 2 bad usage or setting,
    3 bad input file, 4 database error or messages lost on the way out (to a
    database or a HEP collector), 5 capture (interface/socket) error.

    \b
    Example:
      sipcaptool replay examples/call.pcap
      sipcaptool db init --db postgresql://postgres@127.0.0.1/homer
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="sipcaptool: %(levelname)s: %(message)s")


examples_last(cli)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="sipcaptool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("sipcaptool: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
    except SipcaptoolError as e:
        if debug:
            raise
        click.echo(f"sipcaptool: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("sipcaptool: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: one line unless --debug
        if debug:
            raise
        click.echo(f"sipcaptool: internal error: {type(e).__name__}: {e} "
                   "(run with --debug for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
