"""Stored messages written out for other tools: pcap and pcapng for Wireshark and sngrep
(``frames``: the packets; ``pcap``: the file formats), and text (``text``).

:func:`export_messages` writes the messages of the calls a query found to a file,
never over an existing one unless asked, and never leaving half a file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError
from ..query.model import StoredMessage
from .frames import DEFAULT_MSS, Packet, iter_packets, message_packets, ordered
from .pcap import write_pcap, write_pcapng
from .text import write_text

__all__ = ["FORMATS", "ExportReport", "OutputExistsError", "Packet", "export_messages",
           "format_for", "iter_packets", "message_packets", "write_export"]

FORMATS = ("pcap", "pcapng", "txt")
_SUFFIXES = {".pcap": "pcap", ".cap": "pcap", ".pcapng": "pcapng", ".ntar": "pcapng",
             ".txt": "txt"}


class OutputExistsError(ConfigError):
    """The output file exists and overwriting it was not asked for (exit 2)."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    path: str
    format: str
    messages: int      # messages written
    packets: int       # frames written (pcap, pcapng); == messages for txt


def format_for(path: str, fmt: str | None = None) -> str:
    """The format asked for, or the one the file name says; ConfigError when neither."""
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found is None:
        raise ConfigError(f"-o {path}: cannot tell the format from the file name; name it "
                          ".pcap, .pcapng or .txt, or give --format pcap|pcapng|txt")
    return found


def write_export(f: BinaryIO, messages: Iterable[StoredMessage], fmt: str, *,
                 mss: int = DEFAULT_MSS) -> tuple[int, int]:
    """Write ``messages`` (in time order) to ``f`` in format ``fmt``;
    return (messages, packets) written."""
    msgs = ordered(messages)
    if fmt == "txt":
        n = write_text(f, msgs)
        return n, n
    packets = iter_packets(msgs, mss=mss)
    n = write_pcapng(f, packets) if fmt == "pcapng" else write_pcap(f, packets)
    return len(msgs), n


def export_messages(messages: Iterable[StoredMessage], path: str, fmt: str | None = None, *,
                    force: bool = False, mss: int = DEFAULT_MSS) -> ExportReport:
    """Write ``messages`` to the file ``path`` (``-`` is not allowed: a capture file is
    binary). The file is written beside its final name and renamed when complete; an
    existing file is replaced only with ``force`` (else :class:`OutputExistsError`)."""
    fmt = format_for(path, fmt)
    if os.path.isdir(path):
        raise ConfigError(f"-o {path}: is a directory")
    if os.path.lexists(path) and not force:
        raise OutputExistsError(f"-o {path}: the file exists; --force overwrites it")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sipcaptool-export-", dir=directory)
    except OSError as e:
        raise ConfigError(f"-o {path}: cannot write there: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            n_msgs, n_packets = write_export(f, messages, fmt, mss=mss)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return ExportReport(path, fmt, n_msgs, n_packets)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
