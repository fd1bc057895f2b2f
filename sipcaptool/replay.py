"""Replaying capture files: ``sipcaptool replay`` without its command line.

:func:`replay_files` checks every file first (a typo in the last name should not cost a
long run), opens one :class:`~sipcaptool.pipeline.Pipeline`, then reads each capture in
turn (:class:`~sipcaptool.sources.pcapfile.CaptureFile`, a libpcap batch at a time),
decodes it (:meth:`~sipcaptool.decode.packet.PacketDecoder.decode_batch`), submits every
message, and returns a :class:`ReplayReport`. It takes its options as a
:class:`ReplayOptions` and prints nothing: progress goes to a callback (the command
draws the bar), and what went wrong is in the report.

A file that cannot be read once its turn comes (not a capture after all, an unknown
link type, cut off in the middle) does not stop the others: its
:class:`FileReport` says why, and the report's ``errors`` list it. SIGINT and SIGTERM
stop reading at the next batch; what was read is stored and the report says which
signal it was (a second one raises KeyboardInterrupt at once).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import ConfigError, DecodeError, InputError, SipcaptoolError, StoreError
from .stats import Stats

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .record import CapturedMessage
    from .sources.pcapfile import CaptureFile

__all__ = ["FileReport", "Progress", "ReplayOptions", "ReplayReport", "replay_files"]

#: ``progress(nbytes, total_bytes)``: called once with 0 when reading starts, then after
#: every batch with the bytes it took on disk (frames plus 16-byte record headers).
#: ``total_bytes`` is the size of all the files, or None when one is a stream (standard
#: input, a gzip file) whose size is not known ahead.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay; the storage settings (databases, tables, …) are the ``Settings``.

    Attributes:
        ports: only SIP to or from these UDP/TCP/SCTP ports (None: any port, SIP is
            recognised by content).
        hep_ports: HEP is only looked for on these ports (None: any payload that looks
            like HEP).
        foreground_writer: write from this process (no writer process).
        hep_send: also hand every message to this (``--hep-to``: a
            :class:`~sipcaptool.senders.hep.HepSender`'s ``send``), before storing it.

    The snap length needs no option: each file's own (its header, or the first frame
    shorter than on the wire) marks the frames it cut, which are counted
    (``malformed:snapped``) rather than stored in part.
    """

    ports: frozenset[int] | None = None
    hep_ports: frozenset[int] | None = None
    foreground_writer: bool = False
    hep_send: Callable[[CapturedMessage], None] | None = None


@dataclass(frozen=True)
class FileReport:
    """One file of a replay.

    Attributes:
        path: the name given (``-``: standard input).
        linktype: the capture's LINKTYPE number; None when the file could not be opened.
        packets: frames read; None when nothing was read (not opened, unknown link type).
        messages: messages decoded from them (each submitted to the pipeline).
        interrupted: a signal stopped reading this file.
        truncated: the file is cut off inside a packet (every packet before is read).
        error: why the file was not read, or not to its end; None when it was.
    """

    path: str
    linktype: int | None = None
    packets: int | None = None
    messages: int = 0
    interrupted: bool = False
    truncated: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in the summary's ``files``: the keys that apply, in the
        order the summary has always had them (``messages`` is not one of them)."""
        d: dict[str, Any] = {"file": self.path}
        if self.linktype is not None:
            d["linktype"] = self.linktype
        if self.interrupted:
            d["interrupted"] = True
        if self.packets is not None:
            d["packets"] = self.packets
        if self.truncated:
            d["truncated"] = True
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class ReplayReport:
    """How a replay ended.

    Attributes:
        files: one report per file, in the order read; a file not reached (a signal
            came first) has none.
        stats: every counter of the run (``packets``, ``messages``, ``stored:*``, …).
        seconds: from opening the pipeline to the last batch written.
        interrupted_by: ``SIGINT`` or ``SIGTERM`` when a signal stopped reading, else None.
        spool: what the writers left in the spool (``dir``, ``batches``, ``rows``,
            ``bytes``).
        errors: in order: the files not read completely (InputError), the rows the
            database refused, the rows left in the spool (StoreError).
    """

    files: tuple[FileReport, ...]
    stats: Stats
    seconds: float
    interrupted_by: str | None
    spool: dict[str, Any]
    errors: tuple[SipcaptoolError, ...] = ()

    @property
    def packets(self) -> int:
        """Frames read, all files together."""
        return sum(f.packets or 0 for f in self.files)

    @property
    def messages(self) -> int:
        """Messages decoded, all files together."""
        return sum(f.messages for f in self.files)

    @property
    def snapped(self) -> int:
        """Frames cut by a capture's snap length (not stored)."""
        return self.stats["malformed:snapped"]

    @property
    def exit_error(self) -> SipcaptoolError | None:
        """The error the run ends with (its exit code), or None."""
        return self.errors[0] if self.errors else None


def replay_files(paths: Sequence[str], settings: Settings, options: ReplayOptions | None = None,
                 *, progress: Progress | None = None,
                 handle_signals: bool = True) -> ReplayReport:
    """Store every SIP message of the capture files ``paths`` and report.

    ``handle_signals`` (the main thread only): SIGINT and SIGTERM stop reading at the
    next batch while the files are read (the previous handlers are put back after).

    Raises, before anything is read: ConfigError (``-`` given twice), InputError (a file
    that is missing, unreadable or not a capture), StoreError (a database that cannot be
    used at the start). Anything raised while reading (a second signal's
    KeyboardInterrupt, a writer that is gone) closes the pipeline and is raised again.
    """
    from .pipeline import Pipeline
    from .sources.pcapfile import CaptureFile

    opts = options or ReplayOptions()
    if list(paths).count("-") > 1:
        raise ConfigError("'-' (standard input) can be given only once")
    captures = [CaptureFile(p) for p in paths]
    stats = Stats()
    file_reports: list[FileReport] = []
    # a stream (standard input, an inflated .gz) has no size known ahead: no total then
    sizes = [c.size for c in captures]
    total_bytes = None if None in sizes else (sum(s or 0 for s in sizes) or 1)
    started = time.monotonic()
    # a database that fails during the run: batches wait in the spool; one that is
    # unreachable at start: an error (nothing has been read yet)
    pipeline = Pipeline(settings, stats, background=not opts.foreground_writer,
                        require_db_at_start=True)
    # A signal only sets a flag, checked between batches: an exception raised at an
    # arbitrary point could land inside the writer's bookkeeping.
    stop: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)

    old_handlers: dict[signal.Signals, Any] = {}
    if handle_signals:
        old_handlers = {sig: signal.signal(sig, on_signal)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if progress is not None:
            progress(0, total_bytes)
        for cap in captures:
            if stop:
                break
            file_reports.append(_replay_file(cap, pipeline, stats, opts, progress,
                                             total_bytes, stop))
    except BaseException:
        try:
            pipeline.close()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            pass
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    pipeline.close()
    errors: list[SipcaptoolError] = [InputError(f.error) for f in file_reports if f.error]
    refused = stats["dropped:db-error"]
    if refused:
        errors.append(StoreError(f"the database refused {refused} rows (dropped:db-error; "
                                 "the log says why); every other message was stored"))
    spool = pipeline.spool_report()
    if spool["batches"]:
        errors.append(StoreError(
            f"{spool['rows']} rows ({spool['batches']} batches) wait in the spool "
            f"{spool['dir']} for the database; 'sipcaptool spool drain --db URL' "
            "writes them"))
    return ReplayReport(files=tuple(file_reports), stats=stats,
                        seconds=round(time.monotonic() - started, 3),
                        interrupted_by=stop[0] if stop else None, spool=spool,
                        errors=tuple(errors))


def _also(send: Callable[[CapturedMessage], None], submit: Callable[[CapturedMessage], None],
          ) -> Any:
    """``submit`` that hands each message to ``send`` first (typed Any: it takes the
    place of a bound ``Pipeline.submit``)."""
    def both(m: CapturedMessage) -> None:
        send(m)
        submit(m)
    return both


def _replay_file(cap: CaptureFile, pipeline: Pipeline, stats: Stats, opts: ReplayOptions,
                 progress: Progress | None, total_bytes: int | None,
                 stop: list[str]) -> FileReport:
    """Read, decode and submit one capture file."""
    from .decode.packet import PacketDecoder

    try:
        cap.open()
    except InputError as e:
        return FileReport(cap.path, error=str(e))
    linktype = cap.linktype
    assert linktype is not None  # set by open()
    try:
        decoder = PacketDecoder(linktype, stats, ports=opts.ports, hep_ports=opts.hep_ports,
                                hep_max_inflated=pipeline.settings.hep_max_inflated)
    except DecodeError as e:
        cap.close()
        return FileReport(cap.path, linktype=linktype,
                          error=f"{cap.path}: unknown or unsupported link type {linktype} "
                                f"({e.detail or e.reason}); nothing read")
    submit = pipeline.submit
    if opts.hep_send is not None:  # --hep-to: every message also goes to the collectors
        submit = _also(opts.hep_send, submit)
    decode_batch = decoder.decode_batch
    before = stats["packets"]
    messages = 0
    interrupted = False
    for data, meta in cap.batches():
        n = len(meta)
        # frames may be cut by the capture's snap length (known after the first one for a
        # stream): the decoder counts such a frame (malformed:snapped) instead of storing
        # part of a message
        decoder.snaplen = cap.snaplen or 0
        if cap.linktype is not None and cap.linktype != decoder.linktype:
            decoder.set_linktype(cap.linktype)  # pcapng: interfaces of other link types
        msgs = decode_batch(data, meta)
        for m in msgs:
            submit(m)
        messages += len(msgs)
        stats["packets"] += n // 4
        if progress is not None:
            # on-disk size of the batch: frames plus 16-byte record headers (pcap)
            progress(len(data) + 4 * n, total_bytes)
        if stop:
            interrupted = True
            break
    msgs = decoder.flush()
    for m in msgs:
        submit(m)
    messages += len(msgs)
    stats.update(cap.counts)  # packets not handed on (a link type not decoded), blocks skipped
    error = cap.problem()
    return FileReport(cap.path, linktype=linktype, packets=stats["packets"] - before,
                      messages=messages, interrupted=interrupted,
                      truncated=bool(cap.truncated), error=error)
