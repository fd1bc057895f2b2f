"""The options of sending HEP on: ``--hep-to`` (live, replay) and ``--forward-to`` (hep),
with their TLS and buffer options. Each is a setting (``hep_to``, ``forward_to``,
``tls_ca``, ``tls_cert``, ``tls_key``, ``forward_tls_ca``, ``hep_buffer``: TOML key,
``SIPCAPTOOL_<NAME>``, command line); :func:`hep_out_from` makes the
:class:`~sipcaptool.senders.hep.HepOut` a command sends with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Settings
from ..senders.hep import HepOut
from .common import setting_option

__all__ = ["HepOut", "hep_out_from", "hep_out_summary", "hep_to_options"]

_TARGET_HELP = (
    "(repeatable). Targets on one host are one collector: one udp and one tcp or tls "
    "target, the udp one for what fits a datagram (join them with a comma to say so "
    "explicitly: udp:h:9060,tcp:h:9061). With several collectors each call goes to one, "
    "chosen by a hash of its Call-ID; when one is unreachable its calls go to the next "
    "and come back when it returns; while none is, messages wait in memory "
    "(--{buffer}), then in SPOOL_DIR-hep on disk.")


def hep_to_options(option: str = "--hep-to", *, agent: bool = False,
                   client_tls: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the target option (``--hep-to`` or ``--forward-to``) and its TLS and buffer
    options, all settings; the command calls :func:`hep_out_from` with its settings.
    ``agent``: also ``--capture-id``, ``--auth-key``, ``--auth-key-file``,
    ``--node-name`` (replay; live has its own). ``client_tls``: ``--tls-ca``,
    ``--tls-cert``, ``--tls-key`` as the agent's (``hep`` has them as a server's, and
    ``--forward-tls-ca`` for its targets)."""
    forward = option == "--forward-to"
    buffer = "forward-buffer" if forward else "hep-buffer"
    what = ("Send every message received on to this collector as HEPv3 " if forward else
            "Agent mode: also send every message as HEPv3 to this collector ")
    opts = [
        setting_option(option, metavar="udp|tcp|tls:HOST:PORT",
                       help=what + _TARGET_HELP.format(buffer=buffer)),
        setting_option(f"--{buffer}", setting="hep_buffer",
                       help="Memory that messages may wait in while no collector can take "
                            "them (K/M/G); past it they go to the disk spool (--spool-dir, "
                            "-hep appended; --spool-max-bytes), then are dropped, counted as "
                            "dropped:hep-buffer-full. [default: 64M]"),
    ]
    if forward:
        opts.append(setting_option("--forward-tls-ca", metavar="FILE",
                                   help="CA (PEM) the certificates of tls: --forward-to "
                                        "collectors must be signed by. [default: the "
                                        "system's CAs]"))
    elif client_tls:
        opts += [
            setting_option("--tls-ca", metavar="FILE",
                           help="CA (PEM) the certificate of a tls: collector must be signed "
                                "by; its name or address must match the target. [default: "
                                "the system's CAs]"),
            setting_option("--tls-cert", metavar="FILE",
                           help="Client certificate (PEM) for collectors that require one."),
            setting_option("--tls-key", metavar="FILE",
                           help="Key (PEM) of --tls-cert, unless it is in that file."),
        ]
    if agent:
        opts += [
            setting_option("--capture-id", metavar="N", help="HEP capture id sent."),
            setting_option("--auth-key", metavar="KEY",
                           help="HEP auth key sent. On the command line every user sees it "
                                "(ps): prefer --auth-key-file."),
            setting_option("--auth-key-file", metavar="FILE",
                           help="Read the HEP auth key from FILE (one line; a bare name is "
                                "looked up in $CREDENTIALS_DIRECTORY first)."),
            setting_option("--node-name", metavar="NAME", help="HEP node name sent."),
        ]

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def hep_out_from(settings: Settings, *, forward: bool = False) -> HepOut:
    """The targets and their options from the settings; the targets are parsed and the
    TLS files loaded here (ConfigError, exit status 2, before anything is opened)."""
    if forward:
        out = HepOut(tuple(settings.forward_to), tls_ca=settings.forward_tls_ca or None,
                     buffer_bytes=settings.hep_buffer, option="--forward-to")
    else:
        out = HepOut(tuple(settings.hep_to), tls_ca=settings.tls_ca or None,
                     tls_cert=settings.tls_cert or None, tls_key=settings.tls_key or None,
                     buffer_bytes=settings.hep_buffer)
    if out.targets:
        out.check()
    return out


def hep_out_summary(stats: Any) -> dict[str, Any]:
    """The summary's ``hep_out`` (totals) and ``hep_targets`` (per target) objects."""
    from ..senders.hep import target_counters

    return {"hep_out": stats.group("hep_out"), "hep_targets": target_counters(stats)}

