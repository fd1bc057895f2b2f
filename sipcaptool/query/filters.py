"""What a search asks for, parsed and turned into SQL (pure: no I/O).

:func:`build_query` takes the text of the options (``--user 1001,1002``,
``--status 4xx``, ``--since 2h``, ...) and returns a :class:`Query`, or raises
:class:`~sipcaptool.errors.ConfigError` naming the option and what is allowed.
:func:`where_clause` turns a query into a WHERE clause with parameters for one dialect.

Rules:

* several values per filter, comma-separated (``\\,`` is a comma inside a value); they
  are alternatives (OR);
  different filters must all hold (AND);
* ``%`` is a wildcard (SQL ``LIKE``); a value that only ends with ``%`` is a prefix,
  which a database can look up in an index; ``_`` and ``\\`` are literal;
* times: ``2h``, ``30m``, ``45s``, ``1d``, ``1w`` (that long before now), ``now``,
  ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS[.ffffff]]`` (a ``T`` between date and time
  works too), optionally ending with ``Z`` or ``+HH:MM``; without an offset an absolute
  time is in ``--tz`` (UTC by default); or seconds since the epoch (``@1764576000``);
* statuses: ``200``, ``486``, or classes ``4xx``, ``18x``;
* addresses: ``IP`` or ``IP:PORT`` (IPv6 in brackets with a port: ``[2001:db8::1]:5060``).

The row-level filters (Call-ID, users, addresses, node, User-Agent, time) must all hold
for one stored message of a call; ``--method`` and ``--status`` are about the call: it
has a request of that method, and its final status is in the list
(:func:`call_matches`).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["Address", "Query", "build_query", "call_matches", "like_pattern",
           "parse_address", "parse_status", "parse_time", "parse_tz", "split_values",
           "where_clause"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"(\d{1,9})\s*([smhdw])", re.I)
_ABSOLUTE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?", re.I)
_EPOCH = re.compile(r"@(\d{1,12})(?:\.(\d{1,6}))?")
_STATUS = re.compile(r"[1-6](?:\d\d|\dx|xx)", re.I)
TIME_HELP = ("allowed: 2h, 30m, 45s, 1d, 1w (ago), now, YYYY-MM-DD[ HH:MM[:SS[.ffffff]]] "
             "[Z|+HH:MM], @EPOCH")


def _bad(option: str, value: str, allowed: str) -> ConfigError:
    return ConfigError(f"{option} {value!r}: {allowed}")


def parse_tz(value: str | None, option: str = "--tz") -> _dt.tzinfo:
    """A time zone: None/``UTC``, ``local`` (this machine's), an IANA name
    (``Europe/Paris``) or an offset (``+02:00``)."""
    if value is None or value.strip().upper() in ("", "UTC", "Z"):
        return _dt.UTC
    v = value.strip()
    if v.lower() == "local":
        local = _dt.datetime.now().astimezone().tzinfo
        return local if local is not None else _dt.UTC
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", v)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        if minutes >= 24 * 60:
            raise _bad(option, value, "allowed: an offset under 24 hours (+02:00)")
        sign = -1 if m.group(1) == "-" else 1
        return _dt.timezone(sign * _dt.timedelta(minutes=minutes))
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        return ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _bad(option, value, "allowed: UTC, local, an IANA zone (Europe/Paris) "
                   "or an offset (+02:00)") from None


def parse_time(value: str, option: str = "--since", *, now_us: int | None = None,
               tz: _dt.tzinfo | None = None) -> int:
    """A time option as µs since the epoch (UTC). ConfigError names ``option``."""
    v = value.strip()
    now = int(time.time() * 1_000_000) if now_us is None else now_us
    if v.lower() == "now":
        return now
    m = _RELATIVE.fullmatch(v)
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2).lower()] * 1_000_000
    m = _EPOCH.fullmatch(v)
    if m:
        frac = (m.group(2) or "").ljust(6, "0")
        return int(m.group(1)) * 1_000_000 + int(frac or 0)
    m = _ABSOLUTE.fullmatch(v)
    if not m:
        raise _bad(option, value, TIME_HELP)
    y, mo, d, hh, mm, ss, frac, off = m.groups()
    try:
        zone: _dt.tzinfo
        if off is None:
            zone = tz or _dt.UTC
        elif off.upper() == "Z":
            zone = _dt.UTC
        else:
            zone = parse_tz(off if ":" in off else off[:3] + ":" + off[3:], option)
        t = _dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0),
                         int((frac or "").ljust(6, "0") or 0), tzinfo=zone)
    except ValueError as e:
        raise _bad(option, value, f"not a date ({e}); {TIME_HELP}") from None
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def split_values(value: str | Sequence[str] | None, option: str) -> tuple[str, ...]:
    """Comma-separated values (also from a repeated option), stripped; empty values are
    an error."""
    if value is None:
        return ()
    parts: list[str] = []
    for v in [value] if isinstance(value, str) else value:
        # "\," is a comma inside a value (Call-IDs may hold one)
        for p in re.split(r"(?<!\\),", v):
            p = p.replace("\\,", ",").strip()
            if not p:
                raise _bad(option, v, "allowed: a comma-separated list of non-empty values")
            if "\x00" in p:
                raise _bad(option, v, "allowed: values without NUL characters")
            parts.append(p)
    return tuple(parts)


def parse_status(value: str, option: str = "--status") -> str:
    """``200``, ``4xx``, ``18x`` -> a pattern for the ``method`` column (``4__``)."""
    v = value.strip()
    if not _STATUS.fullmatch(v):
        raise _bad(option, value, "allowed: a status code (100-699) or a class like 4xx, 18x")
    return v.lower().replace("x", "_")


@dataclass(frozen=True, slots=True)
class Address:
    """``--src``/``--dst``: an IP (normalised) and optionally a port."""

    ip: str
    port: int | None = None


def parse_address(value: str, option: str = "--src") -> Address:
    v = value.strip()
    host, port = v, None
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", v)
    if m:
        host, port = m.group(1), m.group(2)
    elif v.count(":") == 1:
        host, port = v.split(":")
    allowed = "allowed: IP or IP:PORT ([IPv6]:PORT)"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise _bad(option, value, allowed) from None
    p: int | None = None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(option, value, allowed + ", port 1-65535")
        p = int(port)
    return Address(str(ip), p)


@dataclass(frozen=True)
class Query:
    """A search. Empty tuples and None mean "any"; see the module doc for the rules."""

    callids: tuple[str, ...] = ()
    users: tuple[str, ...] = ()           # from, to, ruri, P-Asserted-Identity or auth user
    from_users: tuple[str, ...] = ()
    to_users: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()         # the call has a request of one of these
    statuses: tuple[str, ...] = ()        # final status LIKE one of these ("4__", "200")
    src: tuple[Address, ...] = ()
    dst: tuple[Address, ...] = ()
    nodes: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()     # substrings of User-Agent
    since_us: int | None = None
    until_us: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def has_call_filters(self) -> bool:
        """Whether some filters are checked on the whole call after reading it."""
        return bool(self.methods or self.statuses)

    @classmethod
    def for_callids(cls, callids: Sequence[str]) -> Query:
        return cls(callids=tuple(callids))


def build_query(*, call_id: str | Sequence[str] | None = None,
                user: str | Sequence[str] | None = None,
                from_user: str | Sequence[str] | None = None,
                to_user: str | Sequence[str] | None = None,
                method: str | Sequence[str] | None = None,
                status: str | Sequence[str] | None = None,
                src: str | Sequence[str] | None = None,
                dst: str | Sequence[str] | None = None,
                node: str | Sequence[str] | None = None,
                ua: str | Sequence[str] | None = None,
                since: str | None = None, until: str | None = None,
                tz: str | None = None, now_us: int | None = None) -> Query:
    """A :class:`Query` from the options' text; ConfigError names the option."""
    zone = parse_tz(tz)
    now = int(time.time() * 1_000_000) if now_us is None else now_us
    since_us = parse_time(since, "--since", now_us=now, tz=zone) if since else None
    until_us = parse_time(until, "--until", now_us=now, tz=zone) if until else None
    if since_us is not None and until_us is not None and until_us < since_us:
        raise ConfigError(f"--until {until!r} is before --since {since!r}")
    methods = split_values(method, "--method")
    for m in methods:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.!~*'-]*", m):
            raise _bad("--method", m, "allowed: a SIP method name (INVITE, REGISTER, ...)")
    return Query(
        callids=split_values(call_id, "--call-id"),
        users=split_values(user, "--user"),
        from_users=split_values(from_user, "--from-user"),
        to_users=split_values(to_user, "--to-user"),
        methods=tuple(m.upper() for m in methods),
        statuses=tuple(parse_status(s) for s in split_values(status, "--status")),
        src=tuple(parse_address(a, "--src") for a in split_values(src, "--src")),
        dst=tuple(parse_address(a, "--dst") for a in split_values(dst, "--dst")),
        nodes=split_values(node, "--node"),
        user_agents=split_values(ua, "--ua"),
        since_us=since_us, until_us=until_us)


# -- SQL ---------------------------------------------------------------------------------

def like_pattern(value: str) -> str | None:
    """The LIKE pattern of a value with ``%`` wildcards (``_`` and ``\\`` escaped with
    ``\\``), or None when the value has no wildcard (compared with ``=``)."""
    if "%" not in value:
        return None
    return value.replace("\\", "\\\\").replace("_", "\\_")


# LIKE escapes with a backslash by itself (ClickHouse has no ESCAPE clause)
_BACKSLASH_LIKE = ("mysql", "clickhouse")


def quote_name(dialect: str, name: str) -> str:
    q = "`" if dialect == "mysql" else '"'
    return q + name.replace(q, q + q) + q


class SqlBuilder:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.ph = "?" if dialect == "sqlite" else "%s"
        self.params: list[object] = []

    def col(self, name: str) -> str:
        return quote_name(self.dialect, name)

    def p(self, value: object) -> str:
        self.params.append(value)
        return self.ph

    def like(self, column: str, pattern: str) -> str:
        # MySQL's default escape character is "\" already, and it must be written "\\"
        # inside a string literal; the others take ESCAPE '\'
        esc = "" if self.dialect in _BACKSLASH_LIKE else " ESCAPE '\\'"
        return f"{self.col(column)} LIKE {self.p(pattern)}{esc}"

    def values(self, columns: Sequence[str], values: Sequence[str]) -> str:
        """Any of ``columns`` equal to (or LIKE) any of ``values``."""
        terms: list[str] = []
        for c in columns:
            exact = [v for v in values if like_pattern(v) is None]
            if len(exact) == 1:
                terms.append(f"{self.col(c)} = {self.p(exact[0])}")
            elif exact:
                terms.append(f"{self.col(c)} IN ({', '.join(self.p(v) for v in exact)})")
            for v in values:
                pat = like_pattern(v)
                if pat is None:
                    continue
                head = v.rstrip("%")
                if self.dialect == "sqlite" and head and "%" not in head:
                    # a prefix: SQLite uses an index for LIKE only with NOCASE columns,
                    # but for a range always (and the range makes it case-sensitive,
                    # as in the other databases)
                    upper = head[:-1] + chr(ord(head[-1]) + 1)
                    terms.append(f"({self.col(c)} >= {self.p(head)} AND {self.col(c)} < "
                                 f"{self.p(upper)} AND {self.like(c, pat)})")
                else:
                    terms.append(self.like(c, pat))
        return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"

    def contains(self, column: str, values: Sequence[str]) -> str:
        """``column`` contains any of ``values``, ignoring case (the same in every
        database, whatever the column's collation)."""
        esc = "" if self.dialect in _BACKSLASH_LIKE else " ESCAPE '\\'"
        terms = []
        for v in values:
            body = v.lower().replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
            terms.append(f"LOWER({self.col(column)}) LIKE {self.p(f'%{body}%')}{esc}")
        return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"

    def addresses(self, ip_col: str, port_col: str, addrs: Sequence[Address]) -> str:
        terms = []
        for a in addrs:
            t = f"{self.col(ip_col)} = {self.p(a.ip)}"
            if a.port is not None:
                t = f"({t} AND {self.col(port_col)} = {self.p(a.port)})"
            terms.append(t)
        return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


USER_COLUMNS = ("from_user", "to_user", "ruri_user", "pid_user", "auth_user")


def _date_text(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us // 1_000_000))


def time_terms(b: SqlBuilder, since_us: int | None, until_us: int | None,
               date_index: bool = True) -> list[str]:
    """The window on ``date`` (indexed, whole seconds) and ``micro_ts`` (exact).

    ``date_index=False``: SQLite is told not to use the index on ``date`` (a unary
    ``+``), for queries with a more selective index (Call-ID, user): its planner would
    otherwise scan the whole window."""
    date = b.col("date")
    if not date_index and b.dialect == "sqlite":
        date = "+" + date
    terms = []
    if b.dialect == "clickhouse":
        # a DateTime is compared with a DateTime, not text, in ClickHouse 18.16
        def day(us: int) -> str:
            return f"toDateTime({b.p(_date_text(us))}, 'UTC')"
        if since_us is not None:
            terms += [f"{date} >= {day(since_us)}", f"{b.col('micro_ts')} >= {b.p(since_us)}"]
        if until_us is not None:
            terms += [f"{date} <= {day(until_us)}", f"{b.col('micro_ts')} <= {b.p(until_us)}"]
        return terms
    if since_us is not None:
        terms.append(f"{date} >= {b.p(_date_text(since_us))}")
        terms.append(f"{b.col('micro_ts')} >= {b.p(since_us)}")
    if until_us is not None:
        terms.append(f"{date} <= {b.p(_date_text(until_us))}")
        terms.append(f"{b.col('micro_ts')} <= {b.p(until_us)}")
    return terms


def _usable(values: tuple[str, ...]) -> bool:
    """Whether an index can look up every one of these values: exact or a prefix
    (``abc%``)."""
    return bool(values) and all(v.rstrip("%") and "%" not in v.rstrip("%") for v in values)


def _indexed(query: Query) -> bool:
    """Whether an indexed column narrows the query (a Call-ID or user filter whose values
    are all exact or prefixes)."""
    return any(_usable(v) for v in (query.callids, query.users, query.from_users,
                                    query.to_users))


def where_clause(query: Query, dialect: str, *, table: str | None = None
                 ) -> tuple[str, list[object]]:
    """``(sql, params)``: the WHERE condition (without the word) a stored message must
    meet for its call to be a candidate; ``"1=1"`` for an empty query.

    With ``table``, ``--method``/``--status`` narrow the candidates with a sub-query on
    the same table (the call has such a request / such a reply in the window); the
    final status itself is checked on the call (:func:`call_matches`)."""
    b = SqlBuilder(dialect)
    terms: list[str] = []
    if query.callids:
        terms.append(b.values(["callid"], query.callids))
    if query.users:
        if dialect == "sqlite" and table is not None and _usable(query.users):
            # SQLite takes an OR over five columns for a full scan when one of them is
            # mostly empty (pid_user: its statistics say every row matches ''); one
            # indexed lookup per column, joined by rowid, is what it should do
            subs = [f"SELECT rowid FROM {quote_name(dialect, table)} WHERE "
                    + b.values([c], query.users) for c in USER_COLUMNS]
            terms.append(f"rowid IN ({' UNION ALL '.join(subs)})")
        else:
            terms.append(b.values(USER_COLUMNS, query.users))
    if query.from_users:
        terms.append(b.values(["from_user"], query.from_users))
    if query.to_users:
        terms.append(b.values(["to_user"], query.to_users))
    if query.src:
        terms.append(b.addresses("source_ip", "source_port", query.src))
    if query.dst:
        terms.append(b.addresses("destination_ip", "destination_port", query.dst))
    if query.nodes:
        terms.append(b.values(["node"], query.nodes))
    if query.user_agents:
        terms.append(b.contains("user_agent", query.user_agents))
    window = time_terms(b, query.since_us, query.until_us,
                        date_index=not _indexed(query))
    terms.extend(window)
    if table is not None:
        for column, values in (("method", query.methods), ("method", query.statuses)):
            if not values:
                continue
            if column == "method" and values is query.statuses:
                cond = "(" + " OR ".join(b.like("method", v) for v in values) + ")"
            else:
                cond = b.values(["method"], values)
            sub = [cond, *time_terms(b, query.since_us, query.until_us)]
            terms.append(f"{b.col('callid')} IN (SELECT {b.col('callid')} FROM "
                         f"{quote_name(dialect, table)} WHERE {' AND '.join(sub)})")
    return (" AND ".join(terms) if terms else "1=1"), b.params


def _like_match(pattern: str, value: str) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.S) is not None


def call_matches(query: Query, first_methods: Sequence[str], final_status: int | None) -> bool:
    """The call-level filters: a request of one of ``query.methods`` among
    ``first_methods`` (the call's request methods) and the final status in
    ``query.statuses``."""
    if query.methods and not set(query.methods) & {m.upper() for m in first_methods}:
        return False
    if query.statuses:
        if final_status is None:
            return False
        return any(_like_match(p, str(final_status)) for p in query.statuses)
    return True
