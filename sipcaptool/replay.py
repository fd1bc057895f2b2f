"""Replaying capture files: ``sipcaptool replay`` without its command line.

:func:`replay_files` checks every file first (a typo in the last name should not cost a
long run), opens one :class:`~sipcaptool.pipeline.Pipeline`, then reads each capture in
turn (:class:`~sipcaptool.sources.pcapfile.CaptureFile`, a libpcap batch at a time),
decodes it (:meth:`~sipcaptool.decode.packet.PacketDecoder.decode_batch`), submits every
message, and returns a :class:`ReplayReport`. It takes its options as a
:class:`ReplayOptions` and prints nothing: progress goes to a callback (the command
draws the bar), and what went wrong is in the report.

Each file replayed into a database is remembered there (``sipcaptool_replays``, see
:mod:`sipcaptool.store.replays`): a second replay of the same file into the same tables
is refused (ConfigError, exit 2) unless ``again``; one that was cut short (a signal, a
kill, a crash) continues with ``resume`` after the last batch it stored, so every
message is stored once. A file whose start cannot be recorded because the database
cannot be reached is not read, nor are the files after it (its batches would wait in the
spool under a run no later replay knows, and ``resume`` would store it again beside
them): the report's errors say so, and ``resume`` stores them once the database is
back. Likewise a file one of whose batches is lost for want of the database (the spool
full, or no spool): the writer process drops the rest of its run too
(:attr:`~sipcaptool.store.writer_process.WriterCore.cut_runs`), so that what a run
stored is a beginning of the file, and the replay stops there for ``resume``. Standard
input is not remembered (it has no identity before it is read). With
``explain``, each frame that was skipped, malformed or dropped is handed to that
callback (file, frame number, time, addresses, reasons).

A file that cannot be read once its turn comes (not a capture after all, an unknown
link type, cut off in the middle) does not stop the others: its
:class:`FileReport` says why, and the report's ``errors`` list it. SIGINT and SIGTERM
stop reading at the next batch; what was read is stored and the report says which
signal it was (a second one raises KeyboardInterrupt at once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import ConfigError, DecodeError, InputError, SipcaptoolError, StoreError
from .stats import Stats

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .record import CapturedMessage
    from .sources.pcapfile import CaptureFile
    from .store import Adapter
    from .store.url import DbUrl
    from .store.writer import Position, Writer

__all__ = ["Explained", "FileIdentity", "FileReport", "Progress", "ReplayOptions",
           "ReplayReport", "file_identity", "replay_files", "replay_settings"]

log = logging.getLogger("sipcaptool.store")

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
        writer_parses: which batches the writer process parses itself, handed over
            unparsed (``auto``: those it has time for; ``always``; ``never``), see
            :mod:`sipcaptool.store.unparsed`.
        hep_send: also hand every message to this (``--hep-to``: a
            :class:`~sipcaptool.senders.hep.HepSender`'s ``send``), before storing it.

    The snap length needs no option: each file's own (its header, or the first frame
    shorter than on the wire) marks the frames it cut, which are counted
    (``malformed:snapped``) rather than stored in part.
    """

    ports: frozenset[int] | None = None
    hep_ports: frozenset[int] | None = None
    foreground_writer: bool = False
    writer_parses: str = "auto"
    hep_send: Callable[[CapturedMessage], None] | None = None
    again: bool = False
    resume: bool = False
    explain: Callable[[Explained], None] | None = None


@dataclass(frozen=True)
class Explained:
    """A frame that was not stored whole, for ``replay --explain``.

    Attributes:
        path: the file; frame: its number in the file (1 for the first, as Wireshark
            and tshark count); ts_us: its capture time.
        src, dst: its addresses (``ip:port`` where the frame has them, ``?`` where the
            frame is too broken to say).
        reasons: the counters it added (``malformed:sip-no-start-line``, ...). A frame
            completing a TCP message or an IP datagram carries what that message got.
    """

    path: str
    frame: int
    ts_us: int
    src: str
    dst: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FileIdentity:
    """What makes a capture file the same file: its size and hashes of its first MiB
    and of its last 64 KiB (read without reading the whole file)."""

    size: int
    head_sha256: str
    tail_sha256: str

    def key(self, tables: str) -> str:
        """The file's key in ``sipcaptool_replays`` for these tables."""
        text = f"{self.size}|{self.head_sha256}|{self.tail_sha256}|{tables}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]


def file_identity(path: str) -> FileIdentity | None:
    """The identity of a regular file, or None (standard input, a pipe)."""
    import stat

    if path == "-":
        return None
    try:
        # (a named pipe is not opened here: what is read from it would be gone)
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()
            f.seek(max(0, st.st_size - (64 << 10)))
            tail = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None  # CaptureFile says why it cannot be read
    return FileIdentity(st.st_size, head, tail)


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
        skipped: not read: ``resume`` and every database has the whole file already.
    """

    path: str
    linktype: int | None = None
    packets: int | None = None
    messages: int = 0
    interrupted: bool = False
    truncated: bool = False
    error: str | None = None
    skipped: bool = False
    first_us: int | None = field(default=None, compare=False)
    last_us: int | None = field(default=None, compare=False)

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
        if self.skipped:
            d["skipped"] = "replayed completely before"
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
    # A signal only sets a flag, checked between batches: an exception raised at an
    # arbitrary point could land inside the writer's bookkeeping. (Set before the
    # databases are looked at: a signal while they are, stops before reading.)
    stop: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)

    old_handlers: dict[signal.Signals, Any] = {}
    if handle_signals:
        old_handlers = {sig: signal.signal(sig, on_signal)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
    book: _Book | None = None
    try:
        # what was replayed before: checked before anything is read (ConfigError, exit 2)
        book = _Book.plan(list(paths), settings, opts)
        stats: Stats = _Watch() if opts.explain is not None else Stats()
        settings = replay_settings(settings)
        # a database that fails during the run: batches wait in the spool; one that is
        # unreachable at start: an error (nothing has been read yet)
        pipeline = Pipeline(settings, stats, background=not opts.foreground_writer,
                            require_db_at_start=True, writer_parses=opts.writer_parses)
    except BaseException:
        if book is not None:
            book.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        raise
    file_reports: list[FileReport] = []
    # a stream (standard input, an inflated .gz) has no size known ahead: no total then
    sizes = [c.size for c in captures]
    total_bytes = None if None in sizes else (sum(s or 0 for s in sizes) or 1)
    started = time.monotonic()
    unread: tuple[_UnrememberedError, list[str]] | None = None
    left: list[str] = []      # not read after a file the database could not take
    try:
        if progress is not None:
            progress(0, total_bytes)
        for i, cap in enumerate(captures):
            if stop:
                break
            if cap.path in book.skipped:
                file_reports.append(FileReport(cap.path, skipped=True))
                continue
            try:
                position = book.begin(cap.path, pipeline)
            except _UnrememberedError as e:
                unread = e, [c.path for c in captures[i:] if c.path not in book.skipped]
                break
            report = _replay_file(cap, pipeline, stats, opts, progress, total_bytes, stop,
                                  position, book.held)
            book.end(report, pipeline)
            file_reports.append(report)
            if _cut(pipeline.writers):
                left = [c.path for c in captures[i + 1:] if c.path not in book.skipped]
                break
        book.finish(pipeline)
    except BaseException:
        try:
            pipeline.close()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            pass
        book.close()
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    try:
        pipeline.close()
    finally:
        book.close()
    errors: list[SipcaptoolError] = [InputError(f.error) for f in file_reports if f.error]
    # (the rows of a batch whose loss cut the replay: said by the line of the cut below)
    refused = stats["dropped:db-error"] - sum(w.cut_rows for w in pipeline.writers)
    if refused > 0:
        errors.append(StoreError(f"the database refused {refused} rows (dropped:db-error; "
                                 "the log says why); every other message was stored"))
    if unread is not None:
        why, paths_left = unread
        more = f" and the {len(paths_left) - 1} files after it were" \
            if len(paths_left) > 2 else " and the file after it were" \
            if len(paths_left) == 2 else " was"
        errors.append(StoreError(
            f"{paths_left[0]}{more} not read: the replay cannot be remembered in "
            f"sipcaptool_replays ({why.error}); once the database is back, the same "
            "command with --resume stores what is missing"))
    cut = _cut_runs(pipeline.writers)
    if cut:
        # (a loss reported while the next file was read stops that one too)
        cut_files = [r.path for r in file_reports
                     if book.was_cut(r.path, cut) or (r.interrupted and not stop)]
        after = f"; the {len(left)} files after it were not read" if len(left) > 1 else \
            f"; {left[0]} after it was not read" if left else ""
        cause = str(book.held[0]) if book.held else \
            "the database could not take a batch (the spool full, or no spool)"
        errors.append(StoreError(
            f"{cause}; {', '.join(cut_files) or 'the replay'} stopped there{after}: once "
            "the database can take them again, the same command with --resume stores the "
            "rest, each message once"))
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


def replay_settings(settings: Settings) -> Settings:
    """The settings a replay stores with: ``db_insert_mode`` 2 taken as 0. Mode 2 keeps
    a collector from ever waiting for its writer process by taking batches into memory
    and, past its limit, into the spool ahead of older ones; a replay can wait, and
    ``--resume`` needs each file's batches kept in their order (it goes on after the
    last position stored)."""
    if settings.db_insert_mode != 2:
        return settings
    log.info("replay: db_insert_mode 2 taken as 0 (a replay waits for the database "
             "instead; --resume needs its batches in order)")
    return settings.with_value("db_insert_mode", 0, "replay")


class _Watch(Stats):
    """Stats that note which counters of :data:`EXPLAINED` each frame adds to (for
    ``explain``); what the writer counts from its own thread is left out."""

    EXPLAINED = ("skipped:", "malformed:", "dropped:", "stored-bad:")
    NOT_A_FRAME = frozenset({"dropped:db-error", "dropped:spool-full",
                             "dropped:stored-before", "dropped:for-resume"})

    def __init__(self) -> None:
        super().__init__()
        self.noted: list[str] = []

    def __setitem__(self, key: str, value: int) -> None:
        if key.startswith(self.EXPLAINED) and key not in self.NOT_A_FRAME:
            added = value - self.get(key, 0)
            if added > 0:
                self.noted.append(key if added == 1 else f"{key} x{added}")
        super().__setitem__(key, value)

    def take(self) -> tuple[str, ...]:
        noted, self.noted = tuple(self.noted), []
        return noted


def frame_addresses(linktype: int, frame: bytes) -> tuple[str, str]:
    """``(src, dst)`` of a frame, ``ip:port`` (``[ip6]:port``) where it has ports, the
    address alone where it has none (a fragment, another protocol), ``?`` where the
    frame is too broken to say. Best effort, for ``explain`` only."""
    from .decode import link
    from .decode.ip import addr_str

    end = len(frame)
    try:
        et, off = link.LINK_PARSERS[linktype](frame, 0, end)
        if et == link.ETH_TYPE_GUESS_IP:
            et = 0x0800 if frame[off] >> 4 == 4 else 0x86DD
        if et == 0x0800 and off + 20 <= end:
            proto, src, dst = frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20]
            l4 = off + (frame[off] & 0x0F) * 4
            first = (frame[off + 6] & 0x1F) << 8 | frame[off + 7] == 0
            six = False
        elif et == 0x86DD and off + 40 <= end:
            proto, src, dst = frame[off + 6], frame[off + 8:off + 24], frame[off + 24:off + 40]
            l4, first, six = off + 40, True, True
        else:
            return "?", "?"
    except (IndexError, KeyError):
        return "?", "?"
    s, d = addr_str(bytes(src)), addr_str(bytes(dst))
    if first and proto in (6, 17, 132) and l4 + 4 <= end:
        sport, dport = frame[l4] << 8 | frame[l4 + 1], frame[l4 + 2] << 8 | frame[l4 + 3]
        if six:
            return f"[{s}]:{sport}", f"[{d}]:{dport}"
        return f"{s}:{sport}", f"{d}:{dport}"
    return s, d


@dataclass
class _Run:
    """One file replayed into one database."""

    adapter: Adapter
    key: str
    identity: FileIdentity
    tables: str
    run_id: str
    stored: dict[str, int]
    record: Any = None      # its row as mark_started_many wrote it (a ReplayRecord)


def _cut(writers: Sequence[Writer]) -> bool:
    """Whether a replay run lost a batch for want of the database (``Writer.cut_runs``):
    the writer processes drop the rest of its file, and the replay stops reading."""
    return any(w.cut_runs for w in writers)


def _cut_runs(writers: Sequence[Writer]) -> set[str]:
    """The replay runs (``r<run_id>``) that were cut (see :func:`_cut`)."""
    return set().union(*(w.cut_runs for w in writers))


def _hold(e: StoreError, writers: Sequence[Writer], held: list[StoreError]) -> None:
    """An earlier batch's error, raised while the replay goes on (once the row it came
    with was taken): kept in ``held`` where a replay run was cut (its reading stops,
    the end of the run says why), raised again otherwise (it ends the replay)."""
    if not _cut(writers):
        raise e
    held.append(e)


class _UnrememberedError(Exception):
    """The start of a file's run could not be recorded: the database cannot be reached
    (``error``, after :attr:`_Book.START_RETRY`). The file is not read."""

    def __init__(self, error: StoreError) -> None:
        super().__init__(str(error))
        self.error = error


#: the databases whose replays are remembered (sipcaptool_replays)
BOOKKEPT = ("sqlite", "mysql", "postgresql", "clickhouse")


class _Book:
    """The bookkeeping of a replay: for each file and database, the run that stores it
    (a new one, or the one ``resume`` continues)."""

    #: files whose end is recorded together (settle()): at most this many, or what ended
    #: within this many seconds
    SETTLE_FILES = 100
    SETTLE_SECONDS = 1.0
    #: the files recorded as running together (_start_ahead): at most SETTLE_FILES, and
    #: this many bytes of them after the first
    START_AHEAD_BYTES = 64 << 20
    #: a start the database cannot take (the connection lost) is tried again after these
    #: pauses (seconds) before the file is given up (_UnrememberedError)
    START_RETRY = (0.5, 1.0, 2.0, 4.0)

    def __init__(self) -> None:
        self.adapters: list[Adapter] = []
        self.runs: dict[str, dict[DbUrl, _Run]] = {}
        self.ended: list[FileReport] = []     # read, their end not recorded yet
        self.settled_at = time.monotonic()
        self.order: list[str] = []            # the files with runs, in the order read
        self.begun: set[str] = set()
        self.skipped: set[str] = set()        # resume: every database has the whole file
        self.held: list[StoreError] = []      # the errors of the lost batches that cut it

    @classmethod
    def plan(cls, paths: list[str], settings: Settings, opts: ReplayOptions) -> _Book:
        """Look each file up in each database; ConfigError (exit 2) for a file replayed
        there before (unless ``again``) or stopped before its end (unless ``resume``)."""
        from .store import open_adapter, replays
        from .store.spool import pending_ids, resolve_spool_dir
        from .store.url import parse_db_url

        book = cls()
        spool_root = resolve_spool_dir(settings.spool_dir)
        if opts.again and opts.resume:
            raise ConfigError("--again and --resume exclude each other (--again stores "
                              "the whole file again; --resume only what is missing)")
        by_url: dict[DbUrl, list[Any]] = {}
        for mode in settings.active_modes():
            u = parse_db_url(mode.db_url)
            if u.dialect in BOOKKEPT:
                by_url.setdefault(u, []).append(mode)
        idents = {p: file_identity(p) for p in paths}
        if not by_url or not any(idents.values()):
            return book
        if opts.resume:
            for modes in by_url.values():
                for m in modes:
                    if len(m.tables) > 1 and m.mt_mode in ("rand", "round_robin"):
                        raise ConfigError(
                            f"--resume needs each message to go to the table it went to "
                            f"before; mt_mode {m.mt_mode} over {len(m.tables)} tables "
                            "chooses anew each time (mt_mode hash does not); --again "
                            "stores the whole file again")
        refusals: list[str] = []
        complete: dict[str, str] = {}         # resume: file -> where it was replayed whole
        try:
            for u, modes in by_url.items():
                a = open_adapter(u)
                book.adapters.append(a)
                tables = " + ".join(f"{'|'.join(m.tables)};{m.mt_mode};{m.hash_source}"
                                    for m in modes)
                known = replays.find_many(a, [ident.key(tables) for ident in idents.values()
                                              if ident is not None])
                for p, ident in idents.items():
                    if ident is None:
                        continue
                    key = ident.key(tables)
                    rec = known.get(key)
                    run = _Run(a, key, ident, tables, uuid.uuid4().hex[:12], {})
                    if rec is not None and not opts.again:
                        when = _when(rec.finished_us or rec.started_us)
                        if rec.state == "complete" and opts.resume:
                            complete.setdefault(
                                p, f"{p} was replayed into {u.redacted()} before ({when}, "
                                   f"{rec.messages} messages)")
                            continue
                        if rec.state == "complete":
                            refusals.append(
                                f"{p} was replayed into {u.redacted()} before ({when}, "
                                f"{rec.messages} messages); --again stores it again")
                            continue
                        if not opts.resume:
                            refusals.append(
                                f"{p}: its replay into {u.redacted()} stopped before the "
                                f"end ({rec.state}, {when}); --resume stores the rest, "
                                "--again all of it again")
                            continue
                        run.run_id = rec.run_id
                        run.stored = replays.stored_positions(a, rec.run_id, pending_ids(
                            spool_root, u, replays.batch_tag(rec.run_id)))
                    book.runs.setdefault(p, {})[u] = run
                    if p not in book.order:
                        book.order.append(p)
        except BaseException:
            book.close()
            raise
        # resume of a file replayed whole: skipped, where every database has all of it;
        # where another needs the rest, refused (its rows would go to both again)
        for p, where in complete.items():
            if p in book.runs:
                refusals.append(f"{where}; --resume would store it there again with the "
                                "rest it stores elsewhere: replay it into each database "
                                "on its own")
            else:
                book.skipped.add(p)
        # the writer processes are forked next: no connection of ours goes with them
        # (each reconnects when it is used)
        book.close()
        if refusals:
            more = f" (and {len(refusals) - 1} more: " + "; ".join(refusals[1:]) + ")" \
                if len(refusals) > 1 else ""
            raise ConfigError(refusals[0] + more)
        return book

    def begin(self, path: str, pipeline: Pipeline) -> Position | None:
        """Before reading ``path``: its runs recorded as running, the writers told."""
        from .store import replays
        from .store.writer import Position

        runs = self.runs.get(path)
        position = Position() if runs else None
        for w in pipeline.writers:
            run = (runs or {}).get(w.url)
            if run is None:
                w.follow("", None)
            else:
                w.follow(replays.batch_tag(run.run_id), position, run.stored)
        if runs and any(run.record is None for run in runs.values()):
            self._start_ahead(path)
        self.begun.add(path)
        return position

    def _start_ahead(self, path: str) -> None:
        """The runs of ``path`` recorded as running, and with them those of the files
        that follow it (up to SETTLE_FILES files, START_AHEAD_BYTES of them after the
        first): one statement or two per database instead of one or two a file. Those
        never begun are taken back at the end (:meth:`finish`)."""
        from .store import replays

        group: list[str] = []
        size = 0
        for p in self.order[self.order.index(path):]:
            runs = self.runs.get(p, {})
            if p in group or not runs or any(r.record is not None for r in runs.values()):
                continue
            ident = next(iter(runs.values())).identity
            if group and (len(group) >= self.SETTLE_FILES
                          or size + ident.size > self.START_AHEAD_BYTES):
                break
            group.append(p)
            if p != path:
                size += ident.size
        now = time.time_ns() // 1000
        started: list[tuple[Adapter, Any]] = []
        for p in group:
            for run in self.runs[p].values():
                run.record = replays.ReplayRecord(
                    run.key, p, run.identity.size, run.identity.head_sha256, run.tables,
                    None, None, run.run_id, "running", 0, 0, now, None)
                started.append((run.adapter, run.record))
        try:
            self._each_database(replays.mark_started_many, started, start=True)
        except _UnrememberedError:
            for p in group:         # (not recorded: nothing to take back at the end)
                for run in self.runs[p].values():
                    run.record = None
            raise

    def finish(self, pipeline: Pipeline) -> None:
        """At the end of the replay: how the runs of the files read ended recorded, and
        the files recorded ahead and never begun (an interrupted replay) taken back."""
        from .store import replays

        self.settle(pipeline)
        unbegun = [(run.adapter, run.record) for p, runs in self.runs.items()
                   if p not in self.begun for run in runs.values() if run.record is not None]
        self._each_database(replays.mark_unstarted_many, unbegun, time.time_ns() // 1000)

    def end(self, report: FileReport, pipeline: Pipeline) -> None:
        """After reading a file: how its runs ended is recorded once its batches are
        committed -- with the next files' (:meth:`settle`), so that a replay of many small
        files does not wait for the database at the end of each one. A run whose end was
        not recorded (the process killed meanwhile) stays ``running``: --resume then
        stores what is missing of it, nothing when nothing is."""
        if not self.runs.get(report.path):
            return
        self.ended.append(report)
        if (report.interrupted or len(self.ended) >= self.SETTLE_FILES
                or time.monotonic() - self.settled_at >= self.SETTLE_SECONDS):
            self.settle(pipeline)

    def settle(self, pipeline: Pipeline) -> None:
        """Wait until every batch handed over is committed, then record how the runs of
        the files read until now ended (one statement per database where it can)."""
        from dataclasses import replace

        from .store import replays

        self.settled_at = time.monotonic()
        if not self.ended:
            return
        try:
            pipeline.flush()
        except StoreError as e:
            _hold(e, pipeline.writers, self.held)    # (a run cut: recorded as such below)
        done: list[tuple[Adapter, Any]] = []
        now = time.time_ns() // 1000
        cut = _cut_runs(pipeline.writers)
        for report in self.ended:
            state = "interrupted" if report.interrupted else "complete"
            if report.packets is None:
                state = "unread"
            for run in self.runs.get(report.path, {}).values():
                if run.record is None:
                    continue
                done.append((run.adapter, replace(
                    run.record, packets=report.packets or 0,
                    state="interrupted" if replays.batch_run(run.run_id) in cut else state,
                    messages=report.messages, first_us=report.first_us,
                    last_us=report.last_us, finished_us=now)))
        self.ended.clear()
        self._each_database(replays.mark_done_many, done)

    def was_cut(self, path: str, cut: set[str]) -> bool:
        """Whether a run of ``path`` is among the ``cut`` runs (``Writer.cut_runs``)."""
        from .store.replays import batch_run
        return any(batch_run(run.run_id) in cut for run in self.runs.get(path, {}).values())

    def _each_database(self, fn: Callable[..., None], records: list[tuple[Adapter, Any]],
                       *args: Any, start: bool = False) -> None:
        """``fn(adapter, its records, *args)`` once for each database among ``records``
        ((adapter, record) pairs, in order), as :meth:`_try` calls it (``start``: the
        start records, which raise :class:`_UnrememberedError`)."""
        by_adapter: dict[int, tuple[Adapter, list[Any]]] = {}
        for adapter, rec in records:
            by_adapter.setdefault(id(adapter), (adapter, []))[1].append(rec)
        for adapter, recs in by_adapter.values():
            self._try(fn, adapter, recs, *args, retry=self.START_RETRY if start else None)

    @staticmethod
    def _try(fn: Callable[..., None], adapter: Adapter, *args: Any,
             retry: Sequence[float] | None = None) -> None:
        """The bookkeeping must not cost the data: a failure is a warning. Except, with
        ``retry`` (a start), a database that cannot be reached: tried again after each
        pause, then :class:`_UnrememberedError` -- a file read without its start recorded
        would be stored again by a later replay (its spooled batches belong to a run no
        record names)."""
        pauses = list(retry or ())
        while True:
            try:
                fn(adapter, *args)
                return
            except StoreError as e:
                if retry is None or e.kind != "connection":
                    log.warning("%s: cannot record the replay in sipcaptool_replays: %s",
                                adapter.url.redacted(), e)
                    return
                if not pauses:
                    raise _UnrememberedError(e) from None
                time.sleep(pauses.pop(0))

    def close(self) -> None:
        for a in self.adapters:
            a.close()


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6))


def _replay_file(cap: CaptureFile, pipeline: Pipeline, stats: Stats, opts: ReplayOptions,
                 progress: Progress | None, total_bytes: int | None,
                 stop: list[str], position: Position | None,
                 held: list[StoreError]) -> FileReport:
    """Read, decode and submit one capture file. ``held``: where the error of a lost
    batch goes that cut this replay (:func:`_hold`), which stops the reading."""
    from .decode.packet import PacketDecoder

    try:
        cap.open()
    except InputError as e:
        return FileReport(cap.path, error=str(e))
    linktype = cap.linktype
    assert linktype is not None  # set by open()
    try:
        decoder = PacketDecoder(linktype, stats, ports=opts.ports, hep_ports=opts.hep_ports,
                                hep_max_inflated=pipeline.settings.hep_max_inflated,
                                capture_points=pipeline.settings.dedup_window > 0)
    except DecodeError as e:
        cap.close()
        return FileReport(cap.path, linktype=linktype,
                          error=f"{cap.path}: unknown or unsupported link type {linktype} "
                                f"({e.detail or e.reason}); nothing read")
    # the messages of a decoded batch, submitted together; with the bookkeeping, each
    # one's place in the file counted first
    submit_all: Callable[[Sequence[Any]], None]
    if opts.hep_send is not None:  # --hep-to: every message also goes to the collectors
        def submit_all(msgs: Sequence[Any], _send: Any = opts.hep_send) -> None:
            for m in msgs:
                _send(m)
                pipeline.submit_all((m,), position)
    else:
        def submit_all(msgs: Sequence[Any]) -> None:
            pipeline.submit_all(msgs, position)

    def submit(m: Any) -> None:
        submit_all((m,))
    decode_batch = decoder.decode_batch
    explain = opts.explain
    explaining = None
    if explain is not None:
        explaining = _explaining(decoder, cap.path, linktype, stats, explain)
    before = stats["packets"]
    messages = 0
    interrupted = False
    writers = pipeline.writers
    first_us: int | None = None
    last_us: int | None = None
    for data, meta in cap.batches():
        n = len(meta)
        if not n:
            continue
        if first_us is None:
            first_us = meta[0] * 1_000_000 + meta[1]
        last_us = meta[n - 4] * 1_000_000 + meta[n - 3]
        # frames may be cut by the capture's snap length (known after the first one for a
        # stream): the decoder counts such a frame (malformed:snapped) instead of storing
        # part of a message
        decoder.snaplen = cap.snaplen or 0
        if cap.linktype is not None and cap.linktype != decoder.linktype:
            decoder.set_linktype(cap.linktype)  # pcapng: interfaces of other link types
        try:
            if explaining is not None:
                messages += explaining(data, meta, submit)
            else:
                msgs = decode_batch(data, meta)
                messages += len(msgs)
                submit_all(msgs)
        except StoreError as e:
            _hold(e, writers, held)         # (a run cut: the reading stops below)
        stats["packets"] += n // 4
        if progress is not None:
            # on-disk size of the batch: frames plus 16-byte record headers (pcap)
            progress(len(data) + 4 * n, total_bytes)
        if stop or _cut(writers):
            interrupted = True
            break
    msgs = decoder.flush()
    messages += len(msgs)
    try:
        submit_all(msgs)
    except StoreError as e:
        _hold(e, writers, held)
    if isinstance(stats, _Watch):
        stats.take()  # (what the end of the file gave up belongs to no frame)
    stats.update(cap.counts)  # packets not handed on (a link type not decoded), blocks skipped
    error = cap.problem()
    return FileReport(cap.path, linktype=linktype, packets=stats["packets"] - before,
                      messages=messages, interrupted=interrupted,
                      truncated=bool(cap.truncated), error=error, first_us=first_us,
                      last_us=last_us)


def _explaining(decoder: Any, path: str, linktype: int, stats: Stats,
                explain: Callable[[Explained], None]
                ) -> Callable[[bytes, Sequence[int], Callable[[Any], None]], int]:
    """``decode_batch`` frame by frame: each frame's messages are submitted before the
    next is decoded, and a frame that added to a counter of :class:`_Watch` is handed
    to ``explain``. Returns the number of messages of the batch."""
    assert isinstance(stats, _Watch)
    frame_no = 0

    def run(data: bytes, meta: Sequence[int], submit: Callable[[Any], None]) -> int:
        nonlocal frame_no
        count = 0
        for sec, usec, off, caplen in zip(meta[0::4], meta[1::4], meta[2::4], meta[3::4],
                                          strict=True):
            frame_no += 1
            ts = sec * 1_000_000 + usec
            frame = data[off:off + caplen]
            stats.take()
            msgs = decoder.decode(ts, frame)
            for m in msgs:
                submit(m)
            count += len(msgs)
            reasons = stats.take()
            if reasons:
                src, dst = frame_addresses(getattr(decoder, "linktype", linktype), frame)
                explain(Explained(path, frame_no, ts, src, dst, reasons))
        return count

    return run
