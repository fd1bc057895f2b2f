import pytest

from sipcaptool.errors import ConfigError
from sipcaptool.store.url import DbUrl, mask_password, parse_db_url


def test_sqlite_relative_and_absolute():
    assert parse_db_url("sqlite:///rel/cap.db") == DbUrl("sqlite", "rel/cap.db")
    assert parse_db_url("sqlite:////abs/path/cap.db") == DbUrl("sqlite", "/abs/path/cap.db")
    assert parse_db_url("sqlite:///:memory:").database == ":memory:"
    assert parse_db_url("sqlite:////abs/x.db").redacted() == "sqlite:////abs/x.db"


def test_mysql_full():
    u = parse_db_url("mysql://user:p%40ss@db.example:3307/homer")
    assert (u.dialect, u.user, u.password, u.host, u.port, u.database) == \
        ("mysql", "user", "p@ss", "db.example", 3307, "homer")
    assert u.redacted() == "mysql://user:***@db.example:3307/homer"
    assert "p@ss" not in repr(u) and "p@ss" not in str(u)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_schemes_and_default_port(scheme):
    u = parse_db_url(f"{scheme}://u:secret@127.0.0.1/cap?sslmode=disable")
    assert (u.dialect, u.port, u.database) == ("postgresql", 5432, "cap")
    assert u.options == (("sslmode", "disable"),)
    assert "secret" not in u.redacted()


def test_mysql_default_port_and_ipv6():
    assert parse_db_url("mysql://root@127.0.0.1/x").port == 3306
    u = parse_db_url("mysql://root@[::1]:3306/x")
    assert u.host == "::1" and u.redacted() == "mysql://root@[::1]:3306/x"


def test_none():
    for s in ("none", "NONE", " none "):
        assert parse_db_url(s).is_none


@pytest.mark.parametrize("bad", [
    "", "mysql", "oracle://u:topsecret@h/db", "mysql://u:topsecret@h/",
    "mysql://u:topsecret@/db", "mysql://u:topsecret@h:99999/db", "sqlite://host/x.db",
    "sqlite:///", "postgresql://u:topsecret@h:port/db", "mysql://u:topsecret@h/a/b",
])
def test_bad_urls_name_value_mask_password(bad):
    with pytest.raises(ConfigError) as ei:
        parse_db_url(bad)
    msg = str(ei.value)
    assert "topsecret" not in msg
    assert "allowed:" in msg and "sqlite:///" in msg


def test_mask_password_in_text():
    assert mask_password("x mysql://u:pa/ss@h/db y") == "x mysql://u:***@h/db y"
    assert mask_password("no url here") == "no url here"
