"""Logging for long-running commands: verbosity, log file, JSON lines, SIGHUP, rate limits.

Commands call :func:`setup_logging` through ``setup_command_logging`` (or the
``log_options`` decorator) in ``sipcaptool.commands.common``; this module knows no
command-line library. What it does:

* level: WARNING by default; ``-v`` INFO, ``-vv`` DEBUG; ``-q`` ERROR, ``-qq`` CRITICAL
  (``--debug`` on the main command means DEBUG too);
* destination: stderr, or ``--log-file FILE`` (appended to; created 0640). On SIGHUP
  the file is closed and opened again, so ``logrotate`` can move it away
  (``postrotate: systemctl kill -s HUP sipcaptool-hep``); ``reopen_logs()`` does the
  same from code;
* format: ``text`` (``2025-01-31T12:00:00.123Z sipcaptool.hep WARNING message``) or
  ``json`` (one object per line: ``ts``, ``level``, ``logger``, ``msg``, ``pid``, and
  ``exc`` with a traceback);
* rate limit: the same message (same logger, level and format string) is written at
  most ``burst`` times (5) per ``interval`` (60 s); the rest are counted and the next
  one written after the interval says ``(N similar messages suppressed)``. A database
  that is down for an hour yields a few lines a minute, not millions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["RateLimitFilter", "reopen_logs", "setup_logging", "level_for"]

_HANDLER_NAME = "sipcaptool-main"
_state: dict[str, Any] = {"file": None, "format": "text"}


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging.Formatter's name
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class RateLimitFilter(logging.Filter):
    """Let through at most ``burst`` records per (logger, level, format string) per
    ``interval`` seconds; say how many were held back when the next one passes."""

    def __init__(self, burst: int = 5, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)  # [window start, count in window, suppressed]
            if entry is None or now - entry[0] >= self.interval:
                suppressed = int(entry[2]) if entry else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 10000:  # bounded: forget the oldest windows
                    for k in sorted(self._seen, key=lambda k: self._seen[k][0])[:5000]:
                        del self._seen[k]
                if suppressed:
                    record.msg = f"{record.msg} ({suppressed} similar messages suppressed)"
                return True
            if entry[1] < self.burst:
                entry[1] += 1
                return True
            entry[2] += 1
            return False


def level_for(verbose: int = 0, quiet: int = 0, debug: bool = False) -> int:
    """-v/-q counts -> a logging level (WARNING by default)."""
    if debug:
        return logging.DEBUG
    n = verbose - quiet
    return {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.WARNING,
            1: logging.INFO}.get(n, logging.DEBUG if n > 1 else logging.CRITICAL)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs; ``owns_stream`` when it opened its
    stream (a log file, closed when the handler is replaced; stderr is not)."""

    def __init__(self, stream: TextIO, owns_stream: bool) -> None:
        super().__init__(stream)
        self.owns_stream = owns_stream


def _open(path: str) -> _Handler:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
    return _Handler(stream, owns_stream=True)


def setup_logging(verbose: int = 0, quiet: int = 0, log_file: str | None = None,
                  log_format: str = "text", *, debug: bool = False,
                  rate_limit: tuple[int, float] | None = (5, 60.0),
                  handle_sighup: bool = True) -> None:
    """Configure the root logger for a command (replaces earlier sipcaptool setup).

    Raises:
        OSError: the log file cannot be opened (the caller reports it).
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log format {log_format!r}: allowed: text, json")
    root = logging.getLogger()
    handler = _open(log_file) if log_file else _Handler(sys.stderr, owns_stream=False)
    handler.name = _HANDLER_NAME
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    if rate_limit:
        handler.addFilter(RateLimitFilter(*rate_limit))
    for h in list(root.handlers):
        root.removeHandler(h)
        if h.name == _HANDLER_NAME:
            h.close()
            if isinstance(h, _Handler) and h.owns_stream:
                h.stream.close()
    root.addHandler(handler)
    root.setLevel(level_for(verbose, quiet, debug))
    _state["file"] = log_file
    _state["format"] = log_format
    if log_file and handle_sighup and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda _sig, _frame: reopen_logs())


def reopen_logs() -> None:
    """Close and open the log file again (after logrotate moved it). No-op on stderr."""
    path = _state.get("file")
    if not path:
        return
    root = logging.getLogger()
    for h in root.handlers:
        if h.name == _HANDLER_NAME and isinstance(h, logging.StreamHandler):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            except OSError:
                return  # keep writing to the old file rather than nowhere
            new = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
            h.acquire()
            try:
                old = h.setStream(new)
            finally:
                h.release()
            if old is not None:
                old.close()
