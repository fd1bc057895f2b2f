"""On-disk spool: formatted batches that could not be written wait here for the database.

Layout::

    SPOOL_DIR/
      <target>/                 one directory per database (dialect, host, port, name)
        target.json             the database it belongs to (password removed)
        <ns>-<pid>.seg          append-only segment files of records
        <ns>-<pid>.seg.ack      bytes of that segment already written to the database

A record is ``b"SPR1" | body length (u32 LE) | CRC-32 of the body (u32 LE) | body``; the
body is one line of JSON (batch id, table, kind, rows, creation time, payload encoding)
followed by the payload (COPY text / LOAD DATA buffer as is; SQLite rows marshalled).
Every record is written with one ``write`` and ``fsync``-ed before the batch counts as
spooled. A crash in the middle of a write leaves a torn last record: its length runs
past the end of the file or its CRC does not match, and it is ignored -- records before
it are never touched again (segments are only appended to, and a failed write is cut
off with ``ftruncate`` before the next one).

A writer owns the segments it appends to and those it took over, holding an exclusive
``flock`` on each: several collectors (or workers) can share one spool directory, a
segment is drained by one process only, and segments left by a process that ended are
taken over by the next one that opens the spool. Segments drain in name order (their
creation time), records in file order. The ``.ack`` file is rewritten (atomically) after
each record is written to the database; a crash between the commit and the ack makes
the next run write that batch again, and the batch id recorded with every batch in the
database (``sipcaptool_batches``) makes that a no-op.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import marshal
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, cast

from .url import DbUrl

log = logging.getLogger("sipcaptool.spool")

MAGIC = b"SPR1"
_HEAD = struct.Struct("<4sII")
SEGMENT_BYTES = 64 << 20       # a new segment after this many bytes
MAX_RECORD = 1 << 30           # a length above this is a torn/garbage record
DEFAULT_MAX_BYTES = 1 << 30


def default_spool_dir() -> str:
    """``$XDG_STATE_HOME/sipcaptool/spool``, else ``/var/spool/sipcaptool`` for root and
    ``~/.local/state/sipcaptool/spool`` for anyone else."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg:
        return os.path.join(xdg, "sipcaptool", "spool")
    if os.geteuid() == 0:
        return "/var/spool/sipcaptool"
    return os.path.join(os.path.expanduser("~"), ".local", "state", "sipcaptool", "spool")


def resolve_spool_dir(value: str | None) -> str | None:
    """The spool directory a setting names: '' -> the default, 'none' -> None (off)."""
    if value is None or value == "":
        return default_spool_dir()
    if value.strip().lower() == "none":
        return None
    return value


def target_key(url: DbUrl) -> str:
    """The directory name of a database in the spool (stable, no password)."""
    ident = f"{url.dialect}|{url.host or ''}|{url.port or ''}|{url.database}"
    short = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(str(url.database)))[:40]
    return f"{url.dialect}-{short}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


@dataclass
class SpoolRecord:
    batch_id: str
    table: str
    kind: str
    rows: int
    created: float
    payload: object
    size: int = 0          # bytes on disk (header included)
    segment: str = ""
    end: int = 0           # offset just after this record
    parts: int = 1         # batches of the capturing process it holds (jobs.Batch)


def encode_record(rec: SpoolRecord) -> bytes:
    if isinstance(rec.payload, (bytes, bytearray, memoryview)):
        enc, data = "raw", bytes(rec.payload)
    else:
        enc, data = "marshal", marshal.dumps(list(cast("Iterable[object]", rec.payload)), 4)
    fields: dict[str, object] = {"id": rec.batch_id, "table": rec.table, "kind": rec.kind,
                                 "rows": rec.rows, "created": rec.created, "enc": enc}
    if rec.parts != 1:
        fields["parts"] = rec.parts
    head = json.dumps(fields, separators=(",", ":")).encode()
    body = head + b"\n" + data
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes, with_payload: bool) -> SpoolRecord:
    nl = body.index(b"\n")
    h = json.loads(body[:nl])
    payload: object = None
    if with_payload:
        data = body[nl + 1:]
        payload = data if h["enc"] == "raw" else [tuple(r) for r in marshal.loads(data)]
    return SpoolRecord(h["id"], h["table"], h["kind"], int(h["rows"]), float(h["created"]),
                       payload, parts=int(h.get("parts", 1)))


def scan_segment(path: str, start: int = 0,
                 with_payload: bool = False) -> Generator[SpoolRecord, None, int]:
    """Yield the valid records of a segment from ``start``; stop at the first torn or
    corrupt one. Returns (via StopIteration value) the offset where reading stopped."""
    with open(path, "rb") as f:
        f.seek(start)
        off = start
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return off
            magic, length, crc = _HEAD.unpack(head)
            if magic != MAGIC or length > MAX_RECORD:
                return off
            body = f.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                return off
            try:
                rec = _decode_body(body, with_payload)
            except (ValueError, KeyError, EOFError, TypeError):
                return off
            off += _HEAD.size + length
            rec.size, rec.end = _HEAD.size + length, off
            rec.segment = path
            yield rec


def _read_ack(path: str) -> int:
    try:
        with open(path + ".ack") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_ack(path: str, offset: int) -> None:
    tmp = path + ".ack.tmp"
    with open(tmp, "w") as f:
        f.write(str(offset))
    os.replace(tmp, path + ".ack")


class SpoolFullError(Exception):
    """The record did not fit (``spool_max_bytes`` or the disk is full)."""


class Spool:
    """The spool of one database, as used by one writer (thread-safe).

    Args:
        root: the spool directory (created with mode 0700 when first needed).
        url: the database the batches belong to.
        max_bytes: bytes the segments of this database may take on disk.
    """

    def __init__(self, root: str, url: DbUrl, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.dir = os.path.join(root, target_key(url))
        self.url = url
        self.max_bytes = int(max_bytes)
        self._lock = threading.RLock()
        self._queue: list[SpoolRecord] = []       # pending records, oldest first
        self._held: dict[str, int] = {}           # segment path -> locked fd
        self._ack: dict[str, int] = {}            # segment path -> acked offset
        self._disk: dict[str, int] = {}           # segment path -> file size
        self._active: str | None = None           # the segment we append to
        self._active_fd: int | None = None
        self.take_over()

    # -- state -------------------------------------------------------------------------
    @property
    def pending_batches(self) -> int:
        return len(self._queue)

    @property
    def pending_rows(self) -> int:
        with self._lock:
            return sum(r.rows for r in self._queue)

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return sum(self._disk.values())

    # -- segments ----------------------------------------------------------------------
    def _segments(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.dir, n) for n in names if n.endswith(".seg"))

    def take_over(self) -> int:
        """Lock and index the segments no running process holds (a previous run's);
        return how many batches were found."""
        found = 0
        with self._lock:
            for path in self._segments():
                if path in self._held:
                    continue
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                if not os.path.exists(path):  # drained and deleted by its owner meanwhile
                    os.close(fd)
                    continue
                acked = _read_ack(path)
                gen = scan_segment(path, acked)
                recs = list(gen)
                self._held[path] = fd
                self._ack[path] = acked
                self._disk[path] = os.fstat(fd).st_size
                if not recs:
                    self._forget(path)
                    continue
                end = recs[-1].end
                if end < self._disk[path]:
                    log.warning("spool %s: %d bytes after offset %d are a torn or corrupt "
                                "record and are ignored", path, self._disk[path] - end, end)
                self._queue.extend(recs)
                found += len(recs)
            self._queue.sort(key=lambda r: (r.segment, r.end))
        if found:
            log.warning("spool %s: %d batches (%d rows) left by an earlier run wait for %s",
                        self.dir, found, self.pending_rows,
                        "a collector" if getattr(self.url, "dialect", "") == "hep"
                        else "the database")
        return found

    def _forget(self, path: str) -> None:
        """Delete a segment that holds nothing pending any more."""
        fd = self._held.pop(path, None)
        for suffix in ("", ".ack"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass
        if fd is not None:
            os.close(fd)
        self._ack.pop(path, None)
        self._disk.pop(path, None)
        if self._active == path:
            self._active = None
            self._active_fd = None

    def _open_active(self) -> None:
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                with open(os.path.join(self.dir, "target.json"), "w") as f:
                    json.dump({"db_url": self.url.redacted(), "dialect": self.url.dialect}, f)
            except OSError:
                pass
        path = os.path.join(self.dir, f"{time.time_ns():020d}-{os.getpid()}.seg")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._held[path] = fd
        self._ack[path] = 0
        self._disk[path] = 0
        self._active, self._active_fd = path, fd

    # -- append / drain ----------------------------------------------------------------
    def append(self, batch_id: str, table: str, kind: str, rows: int, payload: object,
               parts: int = 1) -> None:
        """Write one batch durably at the end of the spool. SpoolFullError when it does not fit."""
        rec = SpoolRecord(batch_id, table, kind, rows, time.time(), payload, parts=parts)
        data = encode_record(rec)
        with self._lock:
            if self.disk_bytes + len(data) > self.max_bytes:
                raise SpoolFullError(f"spool {self.dir} is full ({self.disk_bytes} of "
                                     f"{self.max_bytes} bytes used)")
            try:
                if self._active is None or self._disk[self._active] >= SEGMENT_BYTES:
                    self._open_active()
            except OSError as e:
                raise SpoolFullError(f"spool {self.dir}: cannot create a segment: "
                                     f"{e.strerror}") from None
            path, fd = self._active, self._active_fd
            assert path is not None and fd is not None  # (_open_active sets both)
            before = self._disk[path]
            try:
                n = os.write(fd, data)
                if n != len(data):
                    raise OSError(errno.ENOSPC, "short write")
                os.fsync(fd)
            except OSError as e:
                # cut the partial record off so later records are readable; if even that
                # fails, leave the segment (the reader stops at the torn record) and start
                # a new one next time
                try:
                    os.ftruncate(fd, before)
                except OSError:
                    self._active = self._active_fd = None
                raise SpoolFullError(f"spool {self.dir}: cannot write: "
                                     f"{e.strerror or e}") from None
            self._disk[path] = before + len(data)
            rec.payload = None  # read back from disk when drained (memory stays small)
            rec.size, rec.segment, rec.end = len(data), path, before + len(data)
            self._queue.append(rec)

    def peek(self) -> SpoolRecord | None:
        """The oldest pending batch, payload loaded (None when empty)."""
        with self._lock:
            while self._queue:
                head = self._queue[0]
                if head.payload is not None:
                    return head
                start = head.end - head.size
                loaded = None
                try:
                    for rec in scan_segment(head.segment, start, with_payload=True):
                        loaded = rec
                        break
                except OSError:
                    loaded = None
                if loaded is None or loaded.batch_id != head.batch_id:
                    log.error("spool %s: batch %s at offset %d cannot be read back; "
                              "skipped", head.segment, head.batch_id, start)
                    self._queue.pop(0)
                    continue
                head.payload = loaded.payload
                return head
            return None

    def pop(self) -> None:
        """Mark the oldest pending batch written."""
        with self._lock:
            rec = self._queue.pop(0)
            path = rec.segment
            self._ack[path] = rec.end
            if not any(r.segment == path for r in self._queue):
                self._forget(path)  # the next append starts a new segment
                return
            try:
                _write_ack(path, rec.end)
            except OSError as e:
                log.warning("spool %s: cannot record progress: %s", path, e.strerror)

    def close(self) -> None:
        with self._lock:
            for path, fd in list(self._held.items()):
                if not any(r.segment == path for r in self._queue):
                    self._forget(path)
                else:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._held.clear()
            self._active = self._active_fd = None


# --------------------------------------------------------------------------- status

def pending_ids(root: str | None, url: DbUrl, prefix: str) -> list[tuple[str, str]]:
    """(table, batch id) of each batch waiting in the spool ``root`` for ``url`` whose id
    starts with ``prefix`` (read-only; no locks taken). A resumed replay counts these as
    stored: the writer process writes them before anything new."""
    out: list[tuple[str, str]] = []
    if not root:
        return out
    d = os.path.join(root, target_key(url))
    try:
        names = sorted(x for x in os.listdir(d) if x.endswith(".seg"))
    except OSError:
        return out
    for seg in names:
        path = os.path.join(d, seg)
        try:
            for rec in scan_segment(path, _read_ack(path)):
                if rec.batch_id.startswith(prefix):
                    out.append((rec.table, rec.batch_id))
        except OSError:
            continue
    return out


def status(root: str) -> list[dict[str, Any]]:
    """What waits in a spool directory, per database (read-only; no locks taken)."""
    out: list[dict[str, Any]] = []
    try:
        targets = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for name in targets:
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        info: dict[str, Any] = {"target": name, "dir": d, "db_url": None, "batches": 0, "rows": 0,
                      "bytes": 0, "oldest": None, "segments": 0, "held": 0}
        try:
            with open(os.path.join(d, "target.json")) as f:
                meta = json.load(f)
            info["db_url"] = meta.get("db_url")
        except (OSError, ValueError):
            pass
        for seg in sorted(x for x in os.listdir(d) if x.endswith(".seg")):
            path = os.path.join(d, seg)
            info["segments"] += 1
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except OSError:
                    info["held"] += 1
                acked = _read_ack(path)
                for rec in scan_segment(path, acked):
                    info["batches"] += 1
                    info["rows"] += rec.rows
                    info["bytes"] += rec.size
                    if info["oldest"] is None or rec.created < info["oldest"]:
                        info["oldest"] = rec.created
            except OSError:
                pass
            finally:
                os.close(fd)
        out.append(info)
    return out

