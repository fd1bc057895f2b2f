"""``db_url`` parsing: which database to store into, with the password kept out of sight.

Accepted forms::

    sqlite:///relative/path.db          (three slashes: path relative to the working dir)
    sqlite:////absolute/path.db         (four slashes: absolute path)
    mysql://user:pass@host:port/dbname  (MySQL / MariaDB; port defaults to 3306)
    postgresql://user:pass@host:port/dbname   (also postgres://; port defaults to 5432)
    clickhouse://user:pass@host:port/dbname   (native protocol; port defaults to 9000)
    none                                (do not store anything)

Unix sockets, as libpq and the MySQL clients write them::

    postgresql:///dbname                the server's default socket directory
    postgresql://user@/dbname?host=/run/postgresql   (a host starting with '/' is a
                                        socket directory; port names the socket file)
    mysql://user@/dbname?unix_socket=/run/mysqld/mysqld.sock   (also mariadb://)

User and password may be percent-encoded (``p%40ss`` for ``p@ss``). The query string
holds driver options; only those in :data:`QUERY_OPTIONS` (the ones that work with the
way sipcaptool uses each driver) are accepted, any other is refused by name.
The password never appears in ``str()``, ``repr()``, ``redacted()`` or error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import ConfigError

ALLOWED_FORMS = ("sqlite:///relative.db, sqlite:////abs/path.db, "
                 "mysql://user:pass@host:port/db (or mariadb://), "
                 "mysql://user@/db?unix_socket=/run/mysqld/mysqld.sock, "
                 "postgresql://user:pass@host:port/db (or postgres://), postgresql:///db, "
                 "postgresql://user@/db?host=/run/postgresql, "
                 "clickhouse://user:pass@host:port/db, none")

_SCHEMES = {"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql",
            "postgresql": "postgresql", "postgres": "postgresql", "clickhouse": "clickhouse"}
_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432, "clickhouse": 9000}
_PASSWORD_RE = re.compile(r"(://[^/@:\s]*:)(\S*)@")

#: The query options each dialect accepts in a db_url, with what they do. Anything else
#: is refused by name (a typo must not be ignored in silence). ``charset`` is only the
#: one sipcaptool writes with (utf8mb4); PostgreSQL's client encoding is always UTF8.
QUERY_OPTIONS: dict[str, dict[str, str]] = {
    "postgresql": {
        "host": "a socket directory (/run/postgresql) or a host name",
        "hostaddr": "numeric address, skips the name lookup",
        "sslmode": "disable, allow, prefer, require, verify-ca, verify-full",
        "sslrootcert": "CA certificate file", "sslcert": "client certificate file",
        "sslkey": "client key file", "sslcrl": "certificate revocation list",
        "connect_timeout": "seconds to wait for the connection [default: 10]",
        "application_name": "shown in pg_stat_activity [default: sipcaptool]",
        "options": "server options, e.g. -c search_path=capture",
        "target_session_attrs": "any, read-write, primary, ...",
        "keepalives": "0 or 1", "keepalives_idle": "seconds",
        "keepalives_interval": "seconds", "keepalives_count": "probes",
        "passfile": "password file (~/.pgpass format)",
        "service": "a pg_service.conf section",
        "gssencmode": "disable, prefer, require",
    },
    "mysql": {
        "unix_socket": "socket file (/run/mysqld/mysqld.sock)",
        "charset": "utf8mb4 only (the tables' character set)",
        "connect_timeout": "seconds [default: 10]",
        "read_timeout": "seconds", "write_timeout": "seconds",
        "sslmode": "disable, require (encrypted, certificate not checked), verify-ca, "
                   "verify-full (also the host name)",
        "ssl_ca": "CA certificate file (implies verify-ca)",
        "ssl_cert": "client certificate file", "ssl_key": "client key file",
    },
    "sqlite": {},
    "clickhouse": {
        "cluster": "store into the cluster of this name (remote_servers): local tables on "
                   "every shard and a Distributed table (also the cluster setting)",
        "secure": "1: TLS (the server's tcp_port_secure)", "verify": "0: do not check "
        "the server's certificate", "compression": "lz4, lz4hc or zstd (needs "
        "clickhouse-driver's compression extra)",
        "connect_timeout": "seconds [default: 10]",
        "send_receive_timeout": "seconds [default: 300]",
    },
}
_INT_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout", "keepalives",
                          "send_receive_timeout",
                          "keepalives_idle", "keepalives_interval", "keepalives_count"})
_CHOICES = {("postgresql", "sslmode"): ("disable", "allow", "prefer", "require", "verify-ca",
                                        "verify-full"),
            ("mysql", "sslmode"): ("disable", "require", "verify-ca", "verify-full"),
            ("mysql", "charset"): ("utf8mb4",),
            ("postgresql", "gssencmode"): ("disable", "prefer", "require"),
            ("clickhouse", "secure"): ("0", "1"), ("clickhouse", "verify"): ("0", "1"),
            ("clickhouse", "compression"): ("lz4", "lz4hc", "zstd")}


def mask_password(text: str) -> str:
    """Replace the password of any ``scheme://user:password@`` in ``text`` with ``***``."""
    return _PASSWORD_RE.sub(r"\1***@", text)


@dataclass(frozen=True)
class DbUrl:
    """A parsed ``db_url``.

    Attributes:
        dialect: ``"sqlite"``, ``"mysql"``, ``"postgresql"`` or ``"none"``.
        database: database name (MySQL/PostgreSQL) or file path (SQLite; ``:memory:``
            allowed); ``""`` for ``none``.
        host, port, user: server address and login ('' / 0 for SQLite and none).
        password: never printed; see :meth:`redacted`.
        options: query-string parameters, passed to the driver.
    """

    dialect: str
    database: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def is_none(self) -> bool:
        return self.dialect == "none"

    def redacted(self) -> str:
        """The URL as text with the password replaced by ``***``."""
        if self.dialect == "none":
            return "none"
        if self.dialect == "sqlite":
            return "sqlite:///" + self.database
        auth = ""
        if self.user or self.password:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":***"
            auth += "@"
        opts = list(self.options)
        if self.is_socket:
            # libpq's form: no host part, the socket directory as ?host=
            if self.host:
                opts.insert(0, ("host", self.host))
            port = "" if self.port == _DEFAULT_PORTS[self.dialect] else f":{self.port}"
            hostport = port
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            hostport = f"{host}:{self.port}"
        q = "?" + "&".join(f"{k}={v}" for k, v in opts) if opts else ""
        return f"{self.dialect}://{auth}{hostport}/{self.database}{q}"

    @property
    def is_socket(self) -> bool:
        """Connects through a Unix socket: no host, a socket directory as host
        (PostgreSQL) or ``unix_socket`` (MySQL)."""
        return (not self.host or self.host.startswith("/")
                or any(k == "unix_socket" for k, _ in self.options))

    def option(self, name: str) -> str | None:
        """The value of query option ``name``, or None."""
        for k, v in self.options:
            if k == name:
                return v
        return None

    def __str__(self) -> str:
        return self.redacted()


def _bad(value: str, why: str) -> ConfigError:
    return ConfigError(f"bad db_url {mask_password(value)!r}: {why}; allowed: {ALLOWED_FORMS}")


def parse_db_url(s: str) -> DbUrl:
    """Parse a ``db_url``; raise ConfigError (password masked) for anything not allowed."""
    if not isinstance(s, str):
        raise ConfigError(f"bad db_url: expected text, got {type(s).__name__}; "
                          f"allowed: {ALLOWED_FORMS}")
    value = s.strip()
    if value.lower() == "none":
        return DbUrl("none")
    if "://" not in value:
        raise _bad(value, "no scheme")
    scheme_raw, rest = value.split("://", 1)
    dialect = _SCHEMES.get(scheme_raw.lower())
    if dialect is None:
        raise _bad(value, f"unknown scheme {scheme_raw!r}")
    if dialect == "sqlite":
        # sqlite:///rel.db -> rest = "/rel.db"; sqlite:////abs.db -> rest = "//abs.db"
        if not rest.startswith("/"):
            raise _bad(value, "SQLite takes no host (use three slashes: sqlite:///file.db)")
        path = rest[1:]
        if "?" in path:
            path, query = path.split("?", 1)
            if query:
                name = query.split("&", 1)[0].split("=", 1)[0]
                raise _bad(value, f"unknown option {name!r}: SQLite URLs take no options")
        if path.startswith("//"):
            path = path[1:]
        if not path or path.endswith("/"):
            raise _bad(value, "missing database file name")
        return DbUrl("sqlite", unquote(path))
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise _bad(value, f"cannot parse it ({mask_password(str(e))})") from None
    if parts.fragment:
        raise _bad(value, "unexpected '#' part")
    host = parts.hostname or ""
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise _bad(value, "missing database name")
    if "/" in database:
        raise _bad(value, "database name must not contain '/'")
    options = _check_options(value, dialect,
                             parse_qsl(parts.query, keep_blank_values=True))
    if dialect == "postgresql":
        # libpq: ?host= is the socket directory (or a host) when the URL has none
        qhost = [v for k, v in options if k == "host"]
        if qhost:
            if host:
                raise _bad(value, "the host is given twice (before the database and as ?host=)")
            host = qhost[0]
            options = tuple((k, v) for k, v in options if k != "host")
    elif not host and not any(k == "unix_socket" for k, _ in options):
        raise _bad(value, "missing host (or ?unix_socket=/run/mysqld/mysqld.sock)")
    return DbUrl(dialect, database, host, port or _DEFAULT_PORTS[dialect],
                 unquote(parts.username or ""), unquote(parts.password or ""), options)


def _check_options(value: str, dialect: str,
                   pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The query options of a URL, each known to ``dialect`` and given once, numbers
    numeric and choices among their values; a ConfigError naming the first that is not."""
    if dialect not in QUERY_OPTIONS:  # (a dialect whose adapter checks its own)
        return tuple(pairs)
    known = QUERY_OPTIONS[dialect]
    seen: set[str] = set()
    for k, v in pairs:
        if k not in known:
            raise _bad(value, f"unknown option {k!r} for {dialect} URLs "
                       f"(known: {', '.join(sorted(known)) or 'none'})")
        if k in seen:
            raise _bad(value, f"option {k!r} given twice")
        seen.add(k)
        if k in _INT_OPTIONS and not (v.isascii() and v.isdigit()):
            raise _bad(value, f"option {k}={v!r}: a whole number expected")
        choices = _CHOICES.get((dialect, k))
        if choices and v not in choices:
            raise _bad(value, f"option {k}={v!r}: one of {', '.join(choices)}")
    return tuple(pairs)


def no_database(url: DbUrl) -> str:
    """The error for a database that is not there, with the command that makes it."""
    return (f"{url.redacted()}: database {url.database!r} does not exist; "
            f"'sipcaptool db init --db {url.redacted()}' creates it (and its tables)")
