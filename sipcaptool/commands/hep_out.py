"""The options of sending HEP on: ``--hep-to`` (live, replay) and ``--forward-to`` (hep),
with their TLS and buffer options, as one :class:`~sipcaptool.senders.hep.HepOut`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..net import parse_size
from ..senders.backlog import DEFAULT_MAX_BYTES
from ..senders.hep import HepOut

__all__ = ["HepOut", "hep_out_summary", "hep_to_options"]

_TARGET_HELP = (
    "(repeatable). Targets on one host are one collector: one udp and one tcp or tls "
    "target, the udp one for what fits a datagram (join them with a comma to say so "
    "explicitly: udp:h:9060,tcp:h:9061). With several collectors each call goes to one, "
    "chosen by a hash of its Call-ID; when one is unreachable its calls go to the next "
    "and come back when it returns; while none is, messages wait in memory "
    "(--{prefix}buffer), then in SPOOL_DIR-hep on disk.")


def hep_to_options(option: str = "--hep-to", *, agent: bool = False,
                   client_tls: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the target option (``--hep-to`` or ``--forward-to``), its TLS and buffer
    options; the command receives ``hep_out`` (a :class:`HepOut`, no targets when the
    option is not given). ``agent``: also ``--capture-id``, ``--auth-key``,
    ``--node-name`` (passed on as they are). ``client_tls``: ``--tls-ca``,
    ``--tls-cert``, ``--tls-key`` are the agent's (``hep`` has its own as a server,
    and ``--forward-tls-ca`` for its targets)."""
    dest = option.lstrip("-").replace("-", "_")
    forward = option == "--forward-to"
    prefix = "forward-" if forward else "hep-"
    buf_opt = f"--{prefix}buffer"

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            targets = tuple(kwargs.pop(dest) or ())
            ca = kwargs.pop("forward_tls_ca" if forward else "tls_ca", None)
            cert = key = None
            if not forward and client_tls:
                cert = kwargs.pop("tls_cert", None)
                key = kwargs.pop("tls_key", None)
            buf = kwargs.pop(buf_opt.lstrip("-").replace("-", "_"))
            out = HepOut(targets, tls_ca=ca, tls_cert=cert, tls_key=key,
                         buffer_bytes=parse_size(buf, buf_opt), option=option)
            if targets:
                out.check()
            kwargs["hep_out"] = out
            return f(*args, **kwargs)

        what = ("Send every message received on to this collector as HEPv3 "
                if forward else "Agent mode: also send every message as HEPv3 to this "
                "collector ")
        opts = [
            click.option(option, dest, multiple=True, metavar="udp|tcp|tls:HOST:PORT",
                         help=what + _TARGET_HELP.format(prefix=prefix)),
            click.option(buf_opt, default=f"{DEFAULT_MAX_BYTES >> 20}M", show_default=True,
                         metavar="BYTES",
                         help="Memory that messages may wait in while no collector can "
                              "take them (K/M/G); past it they go to the disk spool "
                              "(--spool-dir, -hep appended; --spool-max-bytes), then are "
                              "dropped, counted as dropped:hep-buffer-full."),
        ]
        if forward:
            opts.append(click.option("--forward-tls-ca", default=None, metavar="FILE",
                                     help="CA (PEM) the certificates of tls: "
                                          "--forward-to collectors must be signed by. "
                                          "[default: the system's CAs]"))
        elif client_tls:
            opts += [
                click.option("--tls-ca", default=None, metavar="FILE",
                             help="CA (PEM) the certificate of a tls: collector must be "
                                  "signed by; its name or address must match the target. "
                                  "[default: the system's CAs]"),
                click.option("--tls-cert", default=None, metavar="FILE",
                             help="Client certificate (PEM) for collectors that require "
                                  "one."),
                click.option("--tls-key", default=None, metavar="FILE",
                             help="Key (PEM) of --tls-cert, unless it is in that file."),
            ]
        if agent:
            opts += [
                click.option("--capture-id", type=click.IntRange(0, 0xFFFFFFFF),
                             default=2001, show_default=True, metavar="N",
                             help="HEP capture id sent with --hep-to."),
                click.option("--auth-key", metavar="KEY", default=None,
                             help="HEP auth key sent with --hep-to."),
                click.option("--node-name", metavar="NAME", default=None,
                             help="HEP node name sent with --hep-to."),
            ]
        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper

    return deco


def hep_out_summary(stats: Any) -> dict[str, Any]:
    """The summary's ``hep_out`` (totals) and ``hep_targets`` (per target) objects."""
    from ..senders.hep import target_counters

    return {"hep_out": stats.group("hep_out"), "hep_targets": target_counters(stats)}
