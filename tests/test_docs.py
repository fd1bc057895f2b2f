"""Help and man pages stay in step with the commands.

Every command's --help must end with an example; every command and option must be in
its man page (``man/sipcaptool-<command>.1``; regenerate them with
``python tools/gen_man.py`` after adding one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sipcaptool.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN = os.path.join(ROOT, "man")


def root_ctx() -> click.Context:
    return click.Context(cli, info_name="sipcaptool", **cli.context_settings)


def walk(cmd: click.Command, ctx: click.Context):
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


ALL = list(walk(cli, root_ctx()))
IDS = [ctx.command_path for _c, ctx in ALL]
TOP = [ctx.command_path.split()[1] for _c, ctx in ALL if ctx.parent is not None
       and ctx.parent.parent is None]


def page_text(name: str) -> str:
    path = os.path.join(MAN, "sipcaptool.1" if name == "sipcaptool" else f"sipcaptool-{name}.1")
    assert os.path.exists(path), f"{path} missing: run python tools/gen_man.py"
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    # undo roff escapes so text compares with --help
    raw = re.sub(r"\\\[u([0-9A-F]{4,})\]", lambda m: chr(int(m.group(1), 16)), raw)
    return raw.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def test_every_top_level_command_is_known():
    assert {"replay", "db", "ctl", "config"} <= set(TOP)


@pytest.mark.parametrize("cmd,ctx", ALL, ids=IDS)
def test_help_ends_with_an_example(cmd, ctx):
    text = cmd.get_help(ctx)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    heads = [i for i, ln in enumerate(lines) if re.match(r"\s*Examples?:\s*$", ln)]
    assert heads, f"{ctx.command_path} --help has no 'Example:' block"
    last = heads[-1]
    options_at = max((i for i, ln in enumerate(lines) if ln.startswith(("Options:", "Commands:"))),
                     default=-1)
    assert last > options_at, f"{ctx.command_path} --help does not end with its example"
    body = lines[last + 1:]
    assert body, f"{ctx.command_path}: empty example"
    assert any("sipcaptool" in ln for ln in body), f"{ctx.command_path}: example runs nothing"


@pytest.mark.parametrize("cmd,ctx", ALL, ids=IDS)
def test_command_and_options_are_in_the_man_page(cmd, ctx):
    parts = ctx.command_path.split()
    page = page_text(parts[1] if len(parts) > 1 else "sipcaptool")
    assert ctx.command_path in page, f"{ctx.command_path} missing from its man page"
    for p in cmd.get_params(ctx):
        if not isinstance(p, click.Option) or p.hidden:
            continue
        for opt in p.opts + p.secondary_opts:
            assert opt in page, (f"{ctx.command_path} {opt} missing from its man page: "
                                 "run python tools/gen_man.py")
        if p.help:
            first_words = " ".join(p.help.split()[:3])
            assert first_words in " ".join(page.split()), (
                f"{ctx.command_path} {p.opts[0]}: help text not in the man page")


def test_main_page_lists_every_command_and_the_sections_operators_need():
    page = page_text("sipcaptool")
    for name in TOP:
        assert f"sipcaptool {name}" in page and f"sipcaptool-{name}" in page
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXAMPLES",
                    "CONTROL PROTOCOL", "SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES",
                    "CONFIGURATION FILE"):
        assert f".SH {section}" in page, section


def test_ctl_page_documents_the_protocol():
    page = page_text("ctl")
    for needle in (".SH CONTROL PROTOCOL", "status on", "status off", "status check",
                   "Enabled", "Disabled", "500 - Bad parameter (on, off or check)", "socat",
                   "0600", "stats text", "ping", ".SH EXIT STATUS", ".SH FILES"):
        assert needle in page, needle


def test_config_page_lists_every_setting():
    from sipcaptool.config import PARAMS

    page = page_text("config")
    for name in PARAMS:
        assert name in page, name


def test_no_page_for_a_command_that_does_not_exist():
    names = {f for f in os.listdir(MAN) if f.endswith(".1")}
    expected = {"sipcaptool.1"} | {f"sipcaptool-{n}.1" for n in TOP}
    assert names <= expected | names  # extra pages are allowed (commands not installed here)
    assert expected <= names


@pytest.mark.parametrize("name", TOP)
def test_every_subcommand_help_runs(name):
    # LazyGroup imports on use: --help on each command proves the import works
    r = CliRunner().invoke(cli, [name, "--help"], prog_name="sipcaptool")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Usage: sipcaptool {name}")


def test_pages_are_valid_roff():
    if subprocess.run(["which", "groff"], capture_output=True).returncode:
        pytest.skip("groff not installed")
    for f in sorted(os.listdir(MAN)):
        if not f.endswith(".1"):
            continue
        p = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", os.path.join(MAN, f)],
                           capture_output=True, text=True, timeout=60)
        errors = [ln for ln in p.stderr.splitlines() if "table wider" not in ln
                  and "around line" not in ln]
        assert p.returncode == 0 and not errors, (f, p.stderr)


def test_gen_man_check_runs():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_man.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--check" in p.stdout
