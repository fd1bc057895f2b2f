#!/usr/bin/env python3
"""Generate man/sipcaptool.1 and man/sipcaptool-<command>.1 from the click command tree.

NAME, SYNOPSIS, DESCRIPTION, OPTIONS, COMMANDS and EXAMPLES come from each command's
--help (the same text, option lines as ``--help`` prints them), so running this after a
command gains an option puts it into its page; the sections an operator needs besides
(EXIT STATUS, CONTROL PROTOCOL, SIGNALS, FILES, ENVIRONMENT, CONFIGURATION FILE) are
written below. Pages carry no date, so regenerating unchanged commands changes nothing.

Usage:
    python tools/gen_man.py            # write man/*.1
    python tools/gen_man.py --check    # exit 1 if a page is not what would be written
    man -l man/sipcaptool-ctl.1        # read one
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import click  # noqa: E402

from sipcaptool import __version__  # noqa: E402
from sipcaptool.cli import cli  # noqa: E402
from sipcaptool.config import PARAMS  # noqa: E402

MAN_DIR = os.path.join(ROOT, "man")
LONG_RUNNING = ("hep", "live")


# -- roff ------------------------------------------------------------------------------
def esc(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so options copy and search well)
    and control characters at the start of a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # groff reads the page as ASCII (or Latin-1): name anything else by its code point
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    out = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def paragraphs(text: str) -> str:
    """click help text (paragraphs; ``\\b`` marks a block kept as written) -> roff."""
    text = inspect.cleandoc(text).split("\f")[0]
    out: list[str] = []
    for para in text.split("\n\n"):
        if not para.strip():
            continue
        if para.lstrip().startswith("\b"):
            body = para.lstrip()[1:].strip("\n")
            out += [".PP", ".nf", esc(inspect.cleandoc(body)), ".fi"]
        else:
            out += [".PP", esc(" ".join(line.strip() for line in para.splitlines()))]
    return "\n".join(out)


def examples(cmd: click.Command) -> str:
    """The EXAMPLES section body: the Example block (--help's epilog) without its title."""
    text = inspect.cleandoc(cmd.epilog or "").replace("\b", "").strip("\n")
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("Example")]
    body = inspect.cleandoc("\n".join(lines))
    return "\n".join([".PP", ".nf", ".RS 4", esc(body), ".RE", ".fi"]) if body.strip() else ""


def options(cmd: click.Command, ctx: click.Context) -> str:
    out = []
    for p in cmd.get_params(ctx):
        # arguments are in the SYNOPSIS (click 8.5 gives them a help record too, which
        # made --check fail with it)
        if isinstance(p, click.Argument):
            continue
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, help_ = rec
        out += [".TP", f"\\fB{esc(names)}\\fR", esc(help_) if help_ else ""]
    return "\n".join(out)


def synopsis(cmd: click.Command, ctx: click.Context) -> str:
    pieces = " ".join(cmd.collect_usage_pieces(ctx))
    return f".B {esc(ctx.command_path)}\n{esc(pieces)}"


def walk(cmd: click.Command, ctx: click.Context):
    """(command, context) for cmd and every subcommand below it, depth first."""
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


# -- hand-written sections -------------------------------------------------------------
EXIT_STATUS = r"""
.TP
.B 0
Success.
.TP
.B 1
Internal error (a bug: please report it with the \fB\-\-debug\fR output).
.TP
.B 2
Bad usage or setting: an unknown option, a value out of range, a configuration file
that does not validate; for \fBctl\fR also a bad parameter, a control socket that is
missing or does not answer.
.TP
.B 3
Bad input: a capture file missing, unreadable, not a capture, or cut off.
.TP
.B 4
Database error: unreachable, refusing, or a statement that failed.
.TP
.B 5
Capture error: an interface, a listening socket or the control socket could not be
opened (for example because another running collector already serves that path).
.TP
.B 130
Interrupted (Ctrl\-C) before the command could finish.
"""

CONTROL_PROTOCOL = r"""
Long\-running commands (\fBhep\fR, \fBlive\fR) serve a Unix stream socket, given with
\fB\-\-control\fR \fIPATH\fR (default below, under FILES). It is created with mode 0600,
so only the collector's user and root can use it. A path on which another live process
answers is refused (exit status 5); a stale socket left by a collector that died is
replaced. \fBsipcaptool ctl\fR speaks the protocol, and so can any script:
.PP
.nf
.RS 4
echo "status off" | socat \- UNIX\-CONNECT:/run/sipcaptool/hep.sock
.RE
.fi
.PP
UTF\-8 text, one command per line; words are case\-insensitive. Answers come in order,
one line each, except \fBhelp\fR and \fBstats text\fR, whose several lines end with an
empty line. Errors start with "500 \- ". The connection stays open until the client
closes it.
.TP
.B status on
Store messages again. Answer: \fBEnabled\fR.
.TP
.B status off
Keep receiving and counting, store nothing; messages received meanwhile are counted as
\fBdropped: capture\-off\fR. Answer: \fBDisabled\fR.
.TP
.B status check
Report without changing: \fBEnabled\fR or \fBDisabled\fR.
.TP
.B status \fIanything else\fR
\fB500 \- Bad parameter (on, off or check)\fR. Unlike Kamailio's \fBsipcapture.status\fR
RPC, prefixes such as "onion" are not taken for "on".
.TP
.B stats
The counters since start as one line of JSON: capture, uptime_s, started, pid,
packets, messages, stored (per table), stored_total, skipped, malformed, dropped,
evicted, truncated, adjusted, refused_bytes, stored_bad, lenient (per reason or column), db
(batches, errors, retries), kernel (drops), control and metrics (connections closed),
queue_depth, spool_bytes, spool_batches, and facts about the command (listen
addresses, workers).
.TP
.B stats text
The same as a readable table.
.TP
.B ping
Answer \fBpong\fR.
.TP
.B help
The list of commands.
.PP
The state at start is set by \fBcapture_on\fR (\fB\-\-capture\-on 0|1\fR, default 1).
"""

SIGNALS = r"""
.TP
.B SIGTERM, SIGINT
Stop gracefully: stop receiving, store everything already received (batches in the
queue are written, or spooled if the database is down), print the summary, exit.
.TP
.B SIGHUP
Reopen the log file given with \fB\-\-log\-file\fR (after logrotate moved it).
"""

FILES = r"""
.TP
.I /etc/sipcaptool.toml
Conventional place of the configuration file (read only when given with
\fB\-\-config\fR); see \fBsipcaptool\-config\fR(1).
.TP
.I $XDG_RUNTIME_DIR/sipcaptool/COMMAND.sock
Default control socket when \fBXDG_RUNTIME_DIR\fR is set (COMMAND is hep or live).
.TP
.I /run/sipcaptool/COMMAND.sock
Default control socket for root (the systemd unit sets \fBRuntimeDirectory=sipcaptool\fR).
.TP
.I /tmp/sipcaptool\-UID/COMMAND.sock
Default control socket for other users (the directory is created with mode 0700).
.TP
.I contrib/sipcaptool\-hep.service\fR, \fIcontrib/sipcaptool\-live.service
systemd units running the HEP collector and live capture as services
(\fBType=notify\fR: ready once listening or capturing; in the source tree).
"""

def db_urls_section() -> str:
    """The forms of db_url and every query option each database takes (url.py's table)."""
    from sipcaptool.store.url import QUERY_OPTIONS

    lines = [r"""
.nf
.RS 4
sqlite:///relative/path.db   sqlite:////absolute/path.db
mysql://USER[:PASS]@HOST[:PORT]/DB   (also mariadb://; port 3306)
mysql://USER@/DB?unix_socket=/run/mysqld/mysqld.sock
postgresql://USER[:PASS]@HOST[:PORT]/DB   (also postgres://; port 5432)
postgresql:///DB   (libpq's default Unix socket)
postgresql://USER@/DB?host=/run/postgresql   (a socket directory)
none   (store nothing)
.RE
.fi
.PP
Query options (\fB?name=value&...\fR) each database takes; any other is refused by
name:"""]
    for dialect, opts in QUERY_OPTIONS.items():
        if not opts:
            continue
        lines.append(f".TP\n.B {esc(dialect)}")
        lines.append(esc("; ".join(f"{k}: {v}" for k, v in opts.items())))
    return "\n".join(lines)


SHELL_COMPLETION = r"""
click completes commands, options and their choices for bash, zsh and fish. Put one
of these lines in the shell's start-up file:
.PP
.nf
.RS 4
eval "$(_SIPCAPTOOL_COMPLETE=bash_source sipcaptool)"    # ~/.bashrc
eval "$(_SIPCAPTOOL_COMPLETE=zsh_source sipcaptool)"     # ~/.zshrc
_SIPCAPTOOL_COMPLETE=fish_source sipcaptool | source    # ~/.config/fish/completions/sipcaptool.fish
.RE
.fi
.PP
or write the script once to a file and source that (faster at start):
\fB_SIPCAPTOOL_COMPLETE=bash_source sipcaptool > ~/.sipcaptool\-complete.bash\fR.
"""

ENVIRONMENT = r"""
.TP
.B SIPCAPTOOL_\fINAME\fR
Any setting by its upper\-case name, e.g. \fBSIPCAPTOOL_DB_URL\fR,
\fBSIPCAPTOOL_INSERT_RETRIES\fR. Precedence: defaults < configuration file <
environment < command line.
.TP
.B SIPCAPTOOL_CONTROL
Control socket used by \fBsipcaptool ctl\fR when \fB\-\-control\fR is not given.
.TP
.B XDG_RUNTIME_DIR
Directory of the default control sockets, when set.
"""


def config_file_section() -> str:
    lines = [r"""
One TOML file holds every parameter of Kamailio's sipcapture module under its own
name and every option of the commands that says how they run (the option without its
dashes, \- written _: \fB\-\-tcp\-idle\-timeout\fR is \fBtcp_idle_timeout\fR), plus
\fB[capture_mode.NAME]\fR tables (db_url, table_name, mt_mode, hash_source) and
\fB[hep]\fR, \fB[live]\fR, \fB[replay]\fR ... tables whose settings apply to that
command only. Each setting is also an environment variable \fBSIPCAPTOOL_\fR\fINAME\fR.
Precedence: default < file < the command's table < environment < command line.
\fBauth_key_file\fR and \fBdb_password_file\fR read a secret from a file (a bare name
from \fB$CREDENTIALS_DIRECTORY\fR); secrets are never printed. Unknown names, wrong
types and values out of range are errors; \fBsipcaptool config check\fR lists them
all. The settings:
.TS
l l l.
\fBname\fR	\fBdefault\fR	\fBallowed\fR"""]
    for name, param in PARAMS.items():
        typ, default, allowed = param.kind, param.default, param.allowed
        if isinstance(allowed, tuple) and len(allowed) == 2 and typ in (int, float):
            allow = f"{allowed[0]}..{allowed[1]}"
        elif allowed:
            allow = ", ".join(allowed)
        elif typ is list:
            allow = "a list" if name != "capture_mode" else "names or definitions"
        else:
            allow = "text"
        shown = repr(default) if typ is not str else f'"{default}"'
        lines.append(f"{esc(name)}\t{esc(shown)}\t{esc(allow)}")
    lines.append(".TE")
    lines.append(r""".PP
.nf
.RS 4
# /etc/sipcaptool.toml
db_url = "postgresql://homer:secret@127.0.0.1/homer"
table_name = "sip_capture_%Y%m%d"
insert_retries = 5
insert_retry_timeout = 60
capture_on = 1

[capture_mode.calls]
db_url = "mysql://homer:secret@127.0.0.1/homer_calls"
table_name = "sip_a|sip_b"
mt_mode = "hash"
hash_source = "call_id"
.RE
.fi""")
    return "\n".join(lines)


MAIN_DESCRIPTION = r"""
.PP
\fBreplay\fR reads capture files, \fBhep\fR receives from HEP agents, \fBlive\fR
captures a mirror port or an IPIP tunnel; \fBdb\fR creates the tables; \fBctl\fR
switches a running collector's capture off and on and shows its statistics;
\fBconfig\fR shows and checks the settings. Each has its own page.
"""

# page -> extra sections, in order, after OPTIONS/COMMANDS and EXAMPLES
def hand_sections(page: str) -> list[tuple[str, str]]:
    long_running = page in LONG_RUNNING
    if page == "sipcaptool":
        return [("CONTROL PROTOCOL", CONTROL_PROTOCOL), ("SIGNALS", SIGNALS),
                ("EXIT STATUS", EXIT_STATUS), ("ENVIRONMENT", ENVIRONMENT), ("FILES", FILES),
                ("CONFIGURATION FILE", config_file_section()),
                ("DATABASE URLS", db_urls_section()),
                ("SHELL COMPLETION", SHELL_COMPLETION)]
    out: list[tuple[str, str]] = []
    if page == "ctl":
        out.append(("CONTROL PROTOCOL", CONTROL_PROTOCOL))
    if long_running:
        out.append(("CONTROL SOCKET", r"""
With \fB\-\-control\fR \fIPATH\fR the collector serves the control protocol described
in \fBsipcaptool\-ctl\fR(1): capture on/off/check and statistics, without a restart."""))
        out.append(("SIGNALS", SIGNALS))
    if page == "config":
        out.append(("CONFIGURATION FILE", config_file_section()))
    out.append(("EXIT STATUS", EXIT_STATUS))
    if page in ("ctl", "config") or long_running:
        out.append(("ENVIRONMENT", ENVIRONMENT))
    if page in ("ctl", "config") or long_running:
        out.append(("FILES", FILES))
    return out


# -- pages -----------------------------------------------------------------------------
def render(cmd: click.Command, ctx: click.Context, page: str) -> str:
    title = "SIPCAPTOOL" if page == "sipcaptool" else f"SIPCAPTOOL-{page.upper()}"
    name = ctx.command_path.replace(" ", "-")
    # the first line names the preprocessor the page needs (tbl: the settings table),
    # so man(1) runs it
    out = ["'\\\" t",
           f".\\\" Generated by tools/gen_man.py from sipcaptool {__version__}'s --help; "
           "edit the commands or tools/gen_man.py, not this file.",
           f'.TH "{title}" "1" "" "sipcaptool {__version__}" "User Commands"',
           ".SH NAME", f"{esc(name)} \\- {esc(cmd.get_short_help_str(1000))}",
           ".SH SYNOPSIS"]
    entries = list(walk(cmd, ctx))
    if page == "sipcaptool":
        out += [synopsis(cmd, ctx), ".br"]
    for c, cctx in entries:
        if isinstance(c, click.Group):
            continue
        out += [synopsis(c, cctx), ".br"]
    out.pop()
    out.append(".SH DESCRIPTION")
    out.append(paragraphs(cmd.help or ""))
    if page == "sipcaptool":
        out.append(MAIN_DESCRIPTION.strip("\n"))
    out += [".SH OPTIONS", options(cmd, ctx)]
    if isinstance(cmd, click.Group):
        out.append(".SH COMMANDS")
        for c, cctx in entries[1:]:
            if page == "sipcaptool":
                if cctx.parent is not ctx:
                    continue
                sub = cctx.command_path.split()[-1]
                out += [".TP", f"\\fB{esc(cctx.command_path)}\\fR",
                        esc(c.get_short_help_str(300)) + f" See \\fBsipcaptool\\-{esc(sub)}\\fR(1)."]
                continue
            out += [f".SS {esc(cctx.command_path)}", synopsis(c, cctx), paragraphs(c.help or "")]
            opts = options(c, cctx)
            if opts:
                out += [".PP", "Options:", ".RS 4", opts, ".RE"]
            ex = examples(c)
            if ex:
                out += [".PP", "Example:", ex]
    ex = examples(cmd)
    if ex:
        out += [".SH EXAMPLES", ex]
    for title_, body in hand_sections(page):
        out += [f".SH {title_}", body.strip("\n")]
    see = ["sipcaptool(1)"] if page != "sipcaptool" else []
    see += [f"sipcaptool-{n}(1)" for n in commands() if n != page]
    out += [".SH SEE ALSO",
            ", ".join(f"\\fB{esc(s.split('(')[0])}\\fR({s.split('(')[1]}" for s in see)
            + ";\nKamailio's sipcapture module documentation."]
    return "\n".join(line for line in out if line != "") + "\n"


def root_context() -> click.Context:
    """The context --help runs in (same help option names and width)."""
    return click.Context(cli, info_name="sipcaptool", **cli.context_settings)


def commands() -> list[str]:
    ctx = root_context()
    return [n for n in cli.list_commands(ctx) if not cli.get_command(ctx, n).hidden]


def pages() -> dict[str, str]:
    """file name -> page text, for the main command and every subcommand that exists."""
    root = root_context()
    out = {"sipcaptool.1": render(cli, root, "sipcaptool")}
    for name in commands():
        sub = cli.get_command(root, name)
        ctx = click.Context(sub, info_name=name, parent=root)
        out[f"sipcaptool-{name}.1"] = render(sub, ctx, name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a page differs from what would be written")
    ap.add_argument("--dir", default=MAN_DIR, help="output directory [default: man/]")
    args = ap.parse_args(argv)
    stale = []
    os.makedirs(args.dir, exist_ok=True)
    for fname, text in pages().items():
        path = os.path.join(args.dir, fname)
        try:
            with open(path, encoding="utf-8") as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        if old == text:
            continue
        stale.append(fname)
        if not args.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    verb = "out of date" if args.check else "written"
    for fname in stale:
        print(f"{fname}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
