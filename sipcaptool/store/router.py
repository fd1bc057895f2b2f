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
name only uses date codes), since this runs for every message. Times outside the years
1970..9999 name the table as the nearest end of that range (a date has at most four
year digits). Which time is passed is the caller's choice: the collectors (``hep``,
``live``) pass the arrival time for a message whose own time is further than
``max_clock_skew`` from the clock (see :mod:`sipcaptool.pipeline`), so a sender cannot
make a table per message.

What a valid table name is, is decided here, once, for the settings, ``db init``, the
router and the writer (:func:`validate_table_name`): letters, digits and ``_``, plus the
strftime codes listed in :data:`CODE_WIDTHS`, which only ever produce such characters
(C locale); not first a digit, nor a code that gives digits. ``%%`` (a ``%`` in the
name), ``%s`` (a table per second since 1970), ``%Z`` and every other code are refused.
The length is checked against the longest text each code can give (``%A`` Wednesday,
``%B`` September, four year digits), not against one date, and against the database's
identifier limit (:data:`IDENT_LIMITS`: MySQL 64, PostgreSQL 63, SQLite none).

**Routes** (setting ``route``, ``--route``, repeatable): ``METHODS=TABLES`` rules that
choose the table list by SIP method, as a HOMER 5 routing script does with
``sip_capture("sip_capture_call_%Y%m%d")``: ``INVITE,ACK,BYE=sip_capture_call_%Y%m%d``.
A request is routed by its method, a reply by the method of its CSeq (Kamailio's ``$rm``
in an ``onreply_route``); methods are compared exactly (SIP methods are case-sensitive,
as is the script's ``$rm == "REGISTER"``). ``*=TABLES`` takes every method no other rule
names; without a ``*`` rule those go to ``table_name``. ``TABLES`` is a table list like
``table_name`` (``a|b``, strftime codes): ``mt_mode`` and ``hash_source`` choose among
them exactly as among ``table_name``'s. A message whose start line did not parse
(stored with ``capture_bad_msgs``) has no method and takes the ``*`` rule (or
``table_name``). ``METHOD:package`` names the requests of that method whose ``Event``
header is of that event package: ``NOTIFY:refer`` (a transfer's progress, which HOMER 5's
script stores with the calls) before a plain ``NOTIFY`` or ``*``. See :func:`parse_route`.
"""

from __future__ import annotations

import random
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import ConfigError
from ..record import HASH_SOURCES, MT_MODES

# strftime codes allowed in a table name -> the longest text each gives (C locale, years
# 1..9999); every one produces only identifier characters [A-Za-z0-9_].
CODE_WIDTHS = {
    "a": 3, "A": 9, "b": 3, "B": 9,                    # Wed Wednesday Sep September
    "d": 2, "j": 3, "m": 2, "y": 2, "Y": 4, "C": 2,
    "U": 2, "W": 2, "w": 1, "u": 1, "V": 2, "G": 4, "g": 2,
    "H": 2, "I": 2, "M": 2, "S": 2, "p": 2,            # AM/PM
}
_DAY_CODES = "aAbBdjmyYUWwuVGgC"
_TIME_CODES = "HIMSp"
_ALLOWED_CODES = _DAY_CODES + _TIME_CODES
_LETTER_CODES = "aAbBp"  # codes that give letters: may start a name
assert set(_ALLOWED_CODES) == set(CODE_WIDTHS)
_NAME_RE = re.compile(r"(?:[A-Za-z0-9_]|%[" + _ALLOWED_CODES + r"])+\Z")
# the longest identifier each database takes (PostgreSQL: NAMEDATALEN - 1 bytes; names
# here are ASCII); SQLite has no limit
IDENT_LIMITS: dict[str, int | None] = {"mysql": 64, "postgresql": 63, "sqlite": None,
                                       "none": None}
MAX_NAME_LEN = 63  # when the database is not known: the smallest of the limits
# table names are made from times in 1970-01-01 .. 9999-12-31 23:59:59 (UTC)
MAX_TABLE_TIME_US = 253_402_300_799_999_999


def identifier_limit(dialect: str | None) -> int | None:
    """The longest table name ``dialect`` takes (None: no limit; unknown: the smallest)."""
    if dialect is None:
        return MAX_NAME_LEN
    return IDENT_LIMITS.get(dialect, MAX_NAME_LEN)


def longest_expansion(name: str) -> int:
    """The length of the longest name ``name`` can expand to, whatever the date."""
    n = 0
    i = 0
    while i < len(name):
        if name[i] == "%" and i + 1 < len(name):
            n += CODE_WIDTHS.get(name[i + 1], 2)
            i += 2
        else:
            n += 1
            i += 1
    return n


def _what_is_wrong(name: str) -> str:
    i = 0
    while i < len(name):
        c = name[i]
        if c == "%":
            code = name[i + 1:i + 2]
            if code == "%":
                return "'%%' would put a '%' into the name"
            if code == "s":
                return "%s (seconds since 1970) would make a table per second"
            if code not in CODE_WIDTHS:
                return (f"strftime code %{code} is not allowed" if code
                        else "a '%' must be followed by a strftime code")
            i += 2
            continue
        if not (c.isascii() and (c.isalnum() or c == "_")):
            return f"{c!r} is not allowed"
        i += 1
    return "not an identifier"


def validate_table_name(name: str, dialect: str | None = None, *,
                        check_length: bool = True) -> str:
    """Return ``name`` if it is a valid table name for ``dialect``, else raise ConfigError.

    The one rule for every place that takes a table name (settings, ``db init``, the
    router, the writer): see the module docstring. ``dialect`` (``mysql``,
    ``postgresql``, ``sqlite``) sets the length limit; None: the smallest (63).
    ``check_length=False`` checks the characters only (the database is not known yet).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("bad table name: empty")
    if not _NAME_RE.match(name):
        why = _what_is_wrong(name)
        raise ConfigError(
            f"bad table name {name!r}: {why}; use letters, digits and '_' (not first a "
            f"digit), plus strftime codes %{' %'.join(_ALLOWED_CODES)}")
    if name[0].isdigit() or (name[0] == "%" and name[1] not in _LETTER_CODES):
        raise ConfigError(
            f"bad table name {name!r}: must not start with a digit (nor with a strftime "
            f"code giving digits; %{' %'.join(_LETTER_CODES)} give letters)")
    limit = identifier_limit(dialect) if check_length else None
    if limit is not None:
        longest = longest_expansion(name)
        if longest > limit:
            where = f"{dialect}'s" if dialect else "the smallest database"
            long = (f"up to {longest} characters long (the longest date: %A Wednesday, "
                    f"%B September)" if "%" in name else f"{longest} characters long")
            raise ConfigError(f"bad table name {name!r}: {long}, over {where} limit of {limit}")
    return name


def _gmtime(ts_us: int) -> time.struct_time:
    """gmtime of a microsecond timestamp kept within the years 1970..9999."""
    if ts_us < 0:
        ts_us = 0
    elif ts_us > MAX_TABLE_TIME_US:
        ts_us = MAX_TABLE_TIME_US
    return time.gmtime(ts_us // 1_000_000)


def expand_table_name(name: str, ts_us: int) -> str:
    """``strftime(name, gmtime(ts_us / 1e6))`` when ``name`` contains ``%``."""
    if "%" not in name:
        return name
    return time.strftime(name, _gmtime(ts_us))


class _Namer:
    """strftime of one table name, cached for the last second (or day) seen."""

    __slots__ = ("name", "period", "last_key", "last")

    def __init__(self, name: str) -> None:
        self.name = name
        codes = set(re.findall(r"%(.)", name))
        self.period = 86_400_000_000 if codes <= set(_DAY_CODES) else 1_000_000
        self.last_key: int | None = None
        self.last = name

    def __call__(self, ts_us: int) -> str:
        key = ts_us // self.period
        if key != self.last_key:
            self.last = time.strftime(self.name, _gmtime(ts_us))
            self.last_key = key
        return self.last


# RFC 3261 token characters: a method name is a token; METHOD:package names the requests
# of that method whose Event header is of that event package (NOTIFY:refer)
_METHOD_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+(?::[A-Za-z0-9.!%*_+`'~-]+)?\Z")


@dataclass(frozen=True)
class Route:
    """One routing rule: these methods (``("*",)``: every other method) go to these
    tables (a ``table_name`` list)."""

    methods: tuple[str, ...]
    tables: tuple[str, ...]

    def __str__(self) -> str:
        return ",".join(self.methods) + "=" + "|".join(self.tables)


def parse_route(text: str | Route, dialect: str | None = None, *,
                check_length: bool = True) -> Route:
    """``"INVITE,ACK=sip_capture_call_%Y%m%d"`` -> :class:`Route`; ConfigError naming
    the rule and what is wrong. ``dialect``/``check_length`` as for
    :func:`validate_table_name`."""
    if isinstance(text, Route):
        return text
    if not isinstance(text, str):
        raise ConfigError(f"bad route {text!r}: expected 'METHOD[,METHOD...]=TABLE[|TABLE...]'")
    left, eq, right = text.partition("=")
    if not eq:
        raise ConfigError(f"bad route {text!r}: expected 'METHOD[,METHOD...]=TABLE[|TABLE...]' "
                          "(e.g. 'INVITE,ACK,BYE=sip_capture_call_%Y%m%d', '*=sip_capture_rest')")
    methods = tuple(m.strip() for m in left.split(","))
    if not methods or any(not m for m in methods):
        raise ConfigError(f"bad route {text!r}: an empty method name")
    if "*" in methods and len(methods) > 1:
        raise ConfigError(f"bad route {text!r}: '*' (every other method) stands alone")
    for m in methods:
        if m != "*" and not _METHOD_RE.match(m):
            raise ConfigError(f"bad route {text!r}: {m!r} is not a SIP method name")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"bad route {text!r}: a method is named twice")
    tables = tuple(t.strip() for t in right.split("|"))
    for t in tables:
        try:
            validate_table_name(t, dialect, check_length=check_length)
        except ConfigError as e:
            raise ConfigError(f"bad route {text!r}: {e}") from None
    return Route(methods, tables)


def parse_routes(rules: Iterable[str | Route], dialect: str | None = None, *,
                 check_length: bool = True) -> list[Route]:
    """Every rule parsed; ConfigError when a method (or ``*``) is in two rules."""
    out: list[Route] = []
    seen: dict[str, str] = {}
    for rule in rules:
        r = parse_route(rule, dialect, check_length=check_length)
        for m in r.methods:
            name, colon, package = m.partition(":")
            key = name + colon + package.lower()  # event packages compare without case
            if key in seen:
                raise ConfigError(f"bad route {str(r)!r}: {m!r} is already routed by "
                                  f"{seen[key]!r}; a method may be in one rule only")
            seen[key] = str(r)
        out.append(r)
    return out


def route_table_names(tables: Sequence[str], routes: Iterable[str | Route]) -> list[str]:
    """Every table name (before strftime) that messages can go to with ``table_name``
    ``tables`` and these routes: the rules' tables, then ``tables`` unless a ``*`` rule
    takes every other method. For ``db init``, search and retention."""
    parsed = parse_routes(routes, check_length=False)
    out: list[str] = []
    for r in parsed:
        out.extend(t for t in r.tables if t not in out)
    if not any(r.methods == ("*",) for r in parsed):
        out.extend(t for t in tables if t not in out)
    return out


class _Routable(Protocol):
    """What :meth:`Router.message_route` reads of a parsed message (decode.sip's
    SipMessage, which this layer does not import)."""

    type: int
    method: str
    cseq: str

    def header(self, name: str) -> str | None: ...


class _Group:
    """One table list and its choice state (round robin position, strftime namers)."""

    __slots__ = ("tables", "n", "rr", "namers", "table")

    def __init__(self, tables: list[str], start: int) -> None:
        self.tables = tables
        self.n = len(tables)
        self.rr = start % self.n
        self.namers = [(_Namer(t) if "%" in t else None) for t in tables]
        # one table without strftime codes: every message of the group goes there
        self.table = tables[0] if self.n == 1 and "%" not in tables[0] else None


class Router:
    """Choose the table for a message.

    Args:
        tables: one or more table names (may contain strftime codes).
        mt_mode: ``rand``, ``round_robin`` or ``hash``.
        hash_source: ``call_id``, ``from_user`` or ``to_user`` (used by ``hash``).
        start: first index for ``round_robin``.
        dialect: the database's dialect, for the length limit of the names (None: the
            smallest limit, 63).
        routes: ``METHODS=TABLES`` rules (see the module doc): a message whose method
            one names goes to that rule's tables; ``*`` replaces ``tables`` for the rest.

    Raises:
        ConfigError: no table, a bad table name, an unknown mode or hash source, a bad
            or repeated route.
    """

    def __init__(self, tables: list[str], mt_mode: str = "rand",
                 hash_source: str = "call_id", *, start: int = 0,
                 dialect: str | None = None,
                 routes: Iterable[str | Route] = ()) -> None:
        if isinstance(tables, str):
            tables = [t for t in tables.split("|")]
        tables = [t.strip() for t in tables]
        if not tables:
            raise ConfigError("bad table_name: no table given")
        for t in tables:
            validate_table_name(t, dialect)
        if mt_mode not in MT_MODES:
            raise ConfigError(f"bad mt_mode {mt_mode!r}: allowed: {', '.join(MT_MODES)}")
        if hash_source not in HASH_SOURCES:
            raise ConfigError(
                f"bad hash_source {hash_source!r}: allowed: {', '.join(HASH_SOURCES)}")
        self.routes = parse_routes(routes, dialect)
        self.mt_mode = mt_mode
        self.hash_source = hash_source
        default = _Group(list(tables), start)
        self._by_method: dict[str, _Group] = {}
        for r in self.routes:
            g = _Group(list(r.tables), start)
            if r.methods == ("*",):
                default = g
            else:
                self._by_method.update(dict.fromkeys(r.methods, g))
        self._default = default
        # the default group's tables (table_name, or the '*' rule's)
        self.tables = list(default.tables)
        self.n = default.n
        groups = [default, *self._by_method.values()]
        #: every message goes to one table without strftime codes (None: choose each time)
        self.table = default.table if not self._by_method else None
        #: a message's method matters (routes), or its hash key (hash over several tables)
        self.routed = bool(self._by_method)
        self.needs_key = mt_mode == "hash" and any(g.n > 1 for g in groups)
        # the time a message carries picks its table (strftime codes in a name)
        self.dated = any(n is not None for g in groups for n in g.namers)
        # methods with a METHOD:package rule: their Event header is looked at
        self._by_event = frozenset(m.split(":", 1)[0] for m in self._by_method if ":" in m)
        self._lower_keys = {m.split(":", 1)[0] + ":" + m.split(":", 1)[1].lower(): m
                            for m in self._by_method if ":" in m}
        self._rand = random.Random()

    def _index(self, g: _Group, hash_key: str) -> int:
        n = g.n
        if n == 1:
            return 0
        mode = self.mt_mode
        if mode == "hash":
            if not hash_key:
                return 0  # Kamailio drops the message; we keep it in the first table
            return zlib.crc32(hash_key.encode("utf-8", "surrogateescape")) % n
        if mode == "round_robin":
            i = g.rr
            g.rr = (i + 1) % n
            return i
        return self._rand.randrange(n)

    def index(self, hash_key: str, method: str = "") -> int:
        """Index of the table chosen for a message (before strftime) in the table list
        of its route (``table_name`` when no route names ``method``)."""
        return self._index(self._by_method.get(method, self._default), hash_key)

    def choose(self, hash_key: str, ts_us: int, method: str = "") -> str:
        """The table name for a message with this hash key, capture time (µs, UTC) and
        method (a reply's: its CSeq method; only looked at with routes)."""
        g = self._by_method.get(method, self._default) if method else self._default
        i = self._index(g, hash_key)
        namer = g.namers[i]
        if namer is None:
            return g.tables[i]
        return namer(ts_us)

    def message_route(self, sip: _Routable) -> str:
        """What a parsed message is routed by: :meth:`route_method`, or
        ``METHOD:package`` when a rule names that method with an event package and the
        message's ``Event`` header is of that package (compared without case)."""
        method = self.route_method(sip.type, sip.method, sip.cseq)
        if method in self._by_event:
            event = sip.header("Event")
            if event:
                key = method + ":" + event.split(";", 1)[0].strip().lower()
                return self._lower_keys.get(key, method)
        return method

    @staticmethod
    def route_method(sip_type: int, method: str, cseq: str) -> str:
        """The method a message is routed by: a request's own, a reply's CSeq method
        (the last token of ``CSeq: 1 INVITE``), '' when neither is known."""
        if sip_type == 2:
            parts = cseq.split()
            return parts[-1] if len(parts) >= 2 else ""
        return method

    @staticmethod
    def call_id_key(callid: str) -> str:
        """The ``call_id`` hash key: the first whitespace-delimited token of the Call-ID."""
        parts = callid.split(None, 1)
        return parts[0] if parts else ""
