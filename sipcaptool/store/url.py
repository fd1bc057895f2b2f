"""``db_url`` parsing: which database to store into, with the password kept out of sight.

Accepted forms::

    sqlite:///relative/path.db          (three slashes: path relative to the working dir)
    sqlite:////absolute/path.db         (four slashes: absolute path)
    mysql://user:pass@host:port/dbname  (MySQL / MariaDB; port defaults to 3306)
    postgresql://user:pass@host:port/dbname   (also postgres://; port defaults to 5432)
    clickhouse://user:pass@host:port/dbname   (native protocol; port defaults to 9000)
    none                                (do not store anything)

User and password may be percent-encoded (``p%40ss`` for ``p@ss``). A query string is
kept as driver options (``?unix_socket=/run/mysqld/mysqld.sock``, ``?sslmode=require``).
The password never appears in ``str()``, ``repr()``, ``redacted()`` or error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import ConfigError

ALLOWED_FORMS = ("sqlite:///relative.db, sqlite:////abs/path.db, "
                 "mysql://user:pass@host:port/db, postgresql://user:pass@host:port/db "
                 "(or postgres://), clickhouse://user:pass@host:port/db, none")

_SCHEMES = {"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql",
            "postgresql": "postgresql", "postgres": "postgresql",
            "clickhouse": "clickhouse"}
_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432, "clickhouse": 9000}
_PASSWORD_RE = re.compile(r"(://[^/@:\s]*:)(\S*)@")


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
        host = f"[{self.host}]" if ":" in self.host else self.host
        q = ""
        if self.options:
            q = "?" + "&".join(f"{k}={v}" for k, v in self.options)
        return f"{self.dialect}://{auth}{host}:{self.port}/{self.database}{q}"

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
            path = path.split("?", 1)[0]
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
    if not host:
        raise _bad(value, "missing host")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise _bad(value, "missing database name")
    if "/" in database:
        raise _bad(value, "database name must not contain '/'")
    options = tuple(parse_qsl(parts.query, keep_blank_values=True))
    return DbUrl(dialect, database, host, port or _DEFAULT_PORTS[dialect],
                 unquote(parts.username or ""), unquote(parts.password or ""), options)
