"""``sipcaptool flow``: the ladder diagram of stored calls (terminal, SVG, HTML, JSON).

Loads the calls with :func:`sipcaptool.query.calls.load_calls`, builds the ladder with
:func:`sipcaptool.render.flow.build_ladder` and prints or writes one of its renderings.
"""

from __future__ import annotations

import os
import shutil
import sys

import click

from ..config import Settings
from ..errors import InputError
from ..render import FORMATS
from .common import setting_option, storage_options


def _aliases(values: tuple[str, ...]) -> dict[str, str]:
    from ..render.flow import parse_alias

    out: dict[str, str] = {}
    for v in values:
        try:
            key, name = parse_alias(v)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--alias") from None
        out[key] = name
    return out


def _text_target() -> tuple[int | None, bool, bool]:
    """(width, colour, unicode) for text on standard output: a terminal's width and
    colours (unless NO_COLOR); piped, no colours and no width limit unless COLUMNS says."""
    out = sys.stdout
    tty = out.isatty()
    if tty:
        width: int | None = shutil.get_terminal_size().columns
    else:
        cols = os.environ.get("COLUMNS", "")
        width = int(cols) if cols.isdigit() and int(cols) > 0 else None
    colour = tty and not os.environ.get("NO_COLOR")
    enc = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    return width, colour, enc in ("utf8", "utf8mb4")


@click.command("flow")
@click.argument("callids", nargs=-1, required=True, metavar="CALLID...")
@click.option("--legs", is_flag=True,
              help="Draw the correlated legs too (callid_aleg / X-CID both ways, RFC 7989 "
              "Session-ID), one level unless --legs-depth.")
@click.option("--legs-depth", type=click.IntRange(1, 10), default=None, metavar="N",
              help="Follow the correlation N steps (implies --legs). [default: 1]")
@setting_option("--by", help="One column per address:port, or per host (ports merged).")
@setting_option("--alias", metavar="IP=NAME",
              help="Name a column: IP=NAME, or IP:PORT=NAME ([IPv6]:PORT=NAME). Repeatable.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="text (terminal), svg, html (one self-contained page: click an arrow to "
              "read its message) or json. [default: from the -o file name, else text]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write to FILE instead of standard output.")
@click.option("--force", is_flag=True, help="Overwrite the -o file when it exists.")
@click.option("--full", is_flag=True,
              help="text: print every message after the ladder (like sngrep's raw view); "
              "json: include each message's text. html and svg always carry them.")
@storage_options
def command(callids: tuple[str, ...], legs: bool, legs_depth: int | None, fmt: str | None,
            output: str | None, force: bool, full: bool, settings: Settings) -> None:
    """Draw the ladder diagram of stored calls, like sngrep's call flow.

    One column per address:port, one arrow per message in time order (method, or status
    and reason), the time from the first message and from the previous one (to the µs),
    marks on retransmissions and on messages with SDP, the SDP media (codec,
    address:port) under INVITE and 200, and a header per call (outcome, final status,
    duration, setup delays).

    The calls are read from every table the settings name (as search does). In a
    terminal the ladder is coloured and fitted to its width (columns that do not fit are
    folded into the last one, and the output says which); piped, it is plain text.

    Exit status: 0 drawn; 2 bad option, or the -o file exists (use --force);
    3 no call found; 4 database error.

    \b
    Example:
      sipcaptool flow a84b4c76e66710@pc33
      sipcaptool flow a84b4c76e66710@pc33 --legs --format html -o call.html
      sipcaptool flow 1-12284@127.0.0.1 --by host --alias 127.0.0.1=sipp --full | less -R
      sipcaptool flow 1-12284@127.0.0.1 --format json --db postgresql://postgres@127.0.0.1/homer
    """
    from ..query.calls import load_calls
    from ..render.flow import build_ladder

    if fmt is None:
        ext = os.path.splitext(output or "")[1].lower().lstrip(".")
        fmt = {"svg": "svg", "html": "html", "htm": "html", "json": "json"}.get(ext, "text")
    if output is not None and os.path.exists(output) and not force:
        raise click.UsageError(f"{output} exists; add --force to overwrite it")
    by = settings.by
    alias_map = _aliases(settings.alias)
    depth = legs_depth if legs_depth is not None else (1 if legs else 0)

    calls = load_calls(settings, list(callids), legs=depth)
    if not calls:
        raise InputError("no call found: " + ", ".join(callids))
    found = {c.callid for c in calls}
    missing = [c for c in callids if c not in found]
    if missing:
        click.echo("sipcaptool: warning: no call found: " + ", ".join(missing), err=True)
    ladder = build_ladder(calls, by_host=by == "host", aliases=alias_map)

    if fmt == "text":
        from ..render.text import render_full, render_text

        if output is None:
            width, colour, uni = _text_target()
        else:
            width, colour, uni = None, False, True
        text = render_text(ladder, width=width, colour=colour, unicode=uni)
        if full:
            text += "\n" + render_full(ladder, colour=colour)
    elif fmt == "svg":
        from ..render.svg import render_svg
        text = render_svg(ladder)
    elif fmt == "html":
        from ..render.html import render_html
        text = render_html(ladder)
    else:
        from ..render.json import render_json
        text = render_json(ladder, with_msg=full)

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise click.UsageError(f"{output} exists; add --force to overwrite it") from None
    except OSError as e:
        raise click.UsageError(f"cannot write {output}: {e.strerror or e}") from None
    click.echo(f"{output}: {len(ladder.arrows)} messages of {len(calls)} "
               f"call{'s' if len(calls) != 1 else ''} ({fmt})", err=True)
