"""Which tables a search reads, for the settings and a time window (pure).

Every capture mode the settings store into (``--capture-mode``, else the default mode)
is one database with its ``table_name`` list (``a|b``) and the tables of the ``route``
rules (HOMER 5's per-method tables). A name with strftime codes
(``sip_capture_%Y%m%d``) stands for one table per day (or hour...): only the names of the
times inside the window are read, and without a window every existing table the
pattern matches. Tables that do not exist are left out, never an error
(:func:`present`), since a day without traffic has no table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Settings
from ..store.router import expand_table_name, route_table_names

__all__ = ["Source", "candidate_names", "name_pattern", "present", "read_sources"]

# strftime codes and what they expand to (UTC, C locale)
_CODE_RX = {
    "Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}",
    "M": r"\d{2}", "S": r"\d{2}", "j": r"\d{3}", "I": r"\d{2}", "U": r"\d{2}",
    "W": r"\d{2}", "w": r"\d", "u": r"\d", "V": r"\d{2}", "G": r"\d{4}", "e": r"[ \d]\d",
    "p": r"[AP]M", "a": r"[A-Za-z]+", "A": r"[A-Za-z]+", "b": r"[A-Za-z]+",
    "B": r"[A-Za-z]+", "h": r"[A-Za-z]+", "%": "%",
}
# the step between names: the finest unit among the codes
_STEP = {"S": 1, "M": 60, "H": 3600, "I": 3600, "p": 3600}
MAX_NAMES = 100_000


@dataclass(frozen=True)
class Source:
    """One database to read: its URL and the table names (patterns expanded)."""

    db_url: str
    tables: tuple[str, ...]
    patterns: tuple[str, ...]   # the table_name entries these came from


def name_pattern(name: str) -> re.Pattern[str]:
    """A regular expression matching every expansion of a strftime table name."""
    out = []
    i = 0
    while i < len(name):
        c = name[i]
        if c == "%" and i + 1 < len(name):
            out.append(_CODE_RX.get(name[i + 1], ".+?"))
            i += 2
            continue
        out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _step(name: str) -> int:
    codes = re.findall(r"%(.)", name)
    return min([_STEP.get(c, 86400) for c in codes] + [86400])


def candidate_names(name: str, since_us: int | None, until_us: int | None,
                    now_us: int | None = None) -> list[str] | None:
    """The expansions of ``name`` for the times in ``[since, until]`` (until defaults to
    now), or None when every existing table matching the pattern is to be read (no
    ``since``). A name without codes is itself."""
    if "%" not in name:
        return [name]
    if since_us is None:
        return None
    end = until_us if until_us is not None else (
        int(time.time() * 1_000_000) if now_us is None else now_us)
    step = _step(name) * 1_000_000
    names: list[str] = []
    t = since_us - since_us % step if step <= 86400 * 1_000_000 else since_us
    t = min(t, since_us)
    while t <= end and len(names) < MAX_NAMES:
        n = expand_table_name(name, max(t, since_us))
        if n not in names:
            names.append(n)
        t += step
    last = expand_table_name(name, end)
    if last not in names:
        names.append(last)
    return names


def read_sources(settings: Settings, since_us: int | None = None,
                 until_us: int | None = None, now_us: int | None = None) -> list[Source]:
    """The databases and tables to read: those of the capture modes the settings store
    into (``--capture-mode``), else the default mode. Databases named ``none`` are left
    out; a database named by several modes is read once."""
    by_url: dict[str, tuple[list[str], list[str]]] = {}
    for mode in settings.active_modes():
        if mode.db_url.strip().lower() == "none":
            continue
        tables, patterns = by_url.setdefault(mode.db_url, ([], []))
        for t in route_table_names(mode.tables, settings.route):
            if t not in patterns:
                patterns.append(t)
            names = candidate_names(t, since_us, until_us, now_us)
            for n in names if names is not None else [t]:
                if n not in tables:
                    tables.append(n)
    return [Source(url, tuple(t), tuple(p)) for url, (t, p) in by_url.items()]


def present(source: Source, existing: Iterable[str]) -> list[str]:
    """The tables of ``source`` that exist: its names found in ``existing``, and for a
    pattern without a window (kept as the pattern itself) every existing match, sorted."""
    have = set(existing)
    out: list[str] = []
    for t in source.tables:
        if "%" in t and t in source.patterns:
            rx = name_pattern(t)
            out.extend(sorted(n for n in have if rx.fullmatch(n) and n not in out))
        elif t in have and t not in out:
            out.append(t)
    return out
