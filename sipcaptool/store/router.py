"""Table choice for each stored message, as Kamailio's sipcapture does it.

``table_name`` may list several tables (``a|b|c``); ``mt_mode`` picks one per message:

* ``rand``: a random table (Kamailio: ``kam_rand() % n``).
* ``round_robin``: a per-process counter cycling through the tables. Kamailio starts each
  worker at ``rank % n`` (with one UDP worker the first message goes to the second table);
  we start at ``start`` (default 0, the first table).
* ``hash``: ``zlib.crc32(key) % n`` -- Kamailio's ``crc32_uint()`` is the IEEE CRC-32, so
  the same key lands in the same table as with the module. The key is chosen by
  ``hash_source``: ``call_id`` (the first whitespace-delimited token of the Call-ID),
  ``from_user`` or ``to_user`` (the stored user part). The caller computes the key.
  **Deliberate difference**: Kamailio drops a message whose key is empty ("hashing
  failed"); we store it in the first table.

The chosen name is then passed through ``strftime()`` with the capture time in UTC
(``gmtime(ts_us / 1e6)``) when it contains ``%``: ``sip_capture_%Y%m%d`` ->
``sip_capture_20261129``. The result is cached per name and second (per day when the
name only uses date codes), since this runs for every message.
"""

from __future__ import annotations

import random
import re
import time
import zlib

from ..errors import ConfigError

MT_MODES = ("rand", "round_robin", "hash")
HASH_SOURCES = ("call_id", "from_user", "to_user")

# strftime codes that only ever produce identifier characters ([A-Za-z0-9_]) in the C locale.
_DAY_CODES = "aAbBdjmyYUWwuVGgC"
_TIME_CODES = "HIMSp"
_ALLOWED_CODES = _DAY_CODES + _TIME_CODES
_NAME_RE = re.compile(r"(?:[A-Za-z0-9_]|%[" + _ALLOWED_CODES + r"])+\Z")
MAX_NAME_LEN = 63  # PostgreSQL's limit (MySQL: 64)


def validate_table_name(name: str) -> str:
    """Return ``name`` if it is a valid table name (identifier chars plus %-codes), else
    raise ConfigError."""
    if not isinstance(name, str) or not name:
        raise ConfigError("bad table name: empty")
    if not _NAME_RE.match(name) or name[0].isdigit():
        raise ConfigError(
            f"bad table name {name!r}: use letters, digits and '_' (not first a digit), "
            f"plus strftime codes %{' %'.join(_ALLOWED_CODES)}")
    sample = time.strftime(name, time.gmtime(0)) if "%" in name else name
    if len(sample) > MAX_NAME_LEN:
        raise ConfigError(f"bad table name {name!r}: longer than {MAX_NAME_LEN} characters")
    return name


def expand_table_name(name: str, ts_us: int) -> str:
    """``strftime(name, gmtime(ts_us / 1e6))`` when ``name`` contains ``%``."""
    if "%" not in name:
        return name
    return time.strftime(name, time.gmtime(ts_us // 1_000_000))


class _Namer:
    """strftime of one table name, cached for the last second (or day) seen."""

    __slots__ = ("name", "period", "last_key", "last")

    def __init__(self, name: str) -> None:
        self.name = name
        codes = set(re.findall(r"%(.)", name))
        self.period = 86_400_000_000 if codes <= set(_DAY_CODES) else 1_000_000
        self.last_key = None
        self.last = name

    def __call__(self, ts_us: int) -> str:
        key = ts_us // self.period
        if key != self.last_key:
            self.last = time.strftime(self.name, time.gmtime(ts_us // 1_000_000))
            self.last_key = key
        return self.last


class Router:
    """Choose the table for a message.

    Args:
        tables: one or more table names (may contain strftime codes).
        mt_mode: ``rand``, ``round_robin`` or ``hash``.
        hash_source: ``call_id``, ``from_user`` or ``to_user`` (used by ``hash``).
        start: first index for ``round_robin``.

    Raises:
        ConfigError: no table, a bad table name, an unknown mode or hash source.
    """

    def __init__(self, tables: list[str], mt_mode: str = "rand",
                 hash_source: str = "call_id", *, start: int = 0) -> None:
        if isinstance(tables, str):
            tables = [t for t in tables.split("|")]
        tables = [t.strip() for t in tables]
        if not tables:
            raise ConfigError("bad table_name: no table given")
        for t in tables:
            validate_table_name(t)
        if mt_mode not in MT_MODES:
            raise ConfigError(f"bad mt_mode {mt_mode!r}: allowed: {', '.join(MT_MODES)}")
        if hash_source not in HASH_SOURCES:
            raise ConfigError(
                f"bad hash_source {hash_source!r}: allowed: {', '.join(HASH_SOURCES)}")
        self.tables = list(tables)
        self.mt_mode = mt_mode
        self.hash_source = hash_source
        self.n = len(tables)
        self._rr = start % self.n
        self._namers = [(_Namer(t) if "%" in t else None) for t in tables]
        self._rand = random.Random()

    def index(self, hash_key: str) -> int:
        """Index of the table chosen for a message (before strftime)."""
        n = self.n
        if n == 1:
            return 0
        mode = self.mt_mode
        if mode == "hash":
            if not hash_key:
                return 0  # Kamailio drops the message; we keep it in the first table
            return zlib.crc32(hash_key.encode("utf-8", "surrogateescape")) % n
        if mode == "round_robin":
            i = self._rr
            self._rr = (i + 1) % n
            return i
        return self._rand.randrange(n)

    def choose(self, hash_key: str, ts_us: int) -> str:
        """The table name for a message with this hash key and capture time (µs, UTC)."""
        i = self.index(hash_key)
        namer = self._namers[i]
        if namer is None:
            return self.tables[i]
        return namer(ts_us)

    @staticmethod
    def call_id_key(callid: str) -> str:
        """The ``call_id`` hash key: the first whitespace-delimited token of the Call-ID."""
        parts = callid.split(None, 1)
        return parts[0] if parts else ""
