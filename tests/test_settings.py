"""Options bound to settings (commands.common.setting_option), command tables of the
config file, list settings from the environment, secrets read from files."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from sipcaptool.commands.common import config_option, log_options, setting_option
from sipcaptool.config import PARAMS, Settings, coerce, env_list, read_secret_file
from sipcaptool.errors import ConfigError


@click.command("hep")
@setting_option("--listen", metavar="ADDR", help="Where.")
@setting_option("--workers", help="How many.")
@setting_option("--ipip", setting="raw_ipip_capture_on", is_flag=True, convert=lambda _: 1,
                help="IPIP.")
@setting_option("-i", "--interface", setting="raw_interface", help="Alias.")
@setting_option("--raw-interface", help="The setting's own option.")
@click.option("--json", "as_json", is_flag=True)
@log_options
@config_option
def cmd(as_json: bool, settings: Settings) -> None:
    for name in ("listen", "workers", "raw_ipip_capture_on", "raw_interface", "log_level"):
        click.echo(f"{name}={getattr(settings, name)!r} ({settings.origin[name]})")


def invoke(*args: str, env: dict[str, str] | None = None):
    base = {k: None for k in __import__("os").environ if k.startswith("SIPCAPTOOL_")}
    return CliRunner().invoke(cmd, list(args), env={**base, **(env or {})})


def out(r) -> dict[str, str]:
    assert r.exit_code == 0, r.output
    return dict(line.split("=", 1) for line in r.output.splitlines() if "=" in line)


def test_setting_option_precedence_file_table_env_cli(tmp_path):
    conf = tmp_path / "s.toml"
    conf.write_text('workers = 2\nlisten = ["udp:1.2.3.4:9"]\n[hep]\nworkers = 3\n'
                    '[live]\nworkers = 9\n')
    o = out(invoke("--config", str(conf)))
    assert o["workers"] == f"3 (file {conf} [hep])"
    assert o["listen"] == f"('udp:1.2.3.4:9',) (file {conf})"
    o = out(invoke("--config", str(conf), env={"SIPCAPTOOL_WORKERS": "4"}))
    assert o["workers"] == "4 (environment SIPCAPTOOL_WORKERS)"
    o = out(invoke("--config", str(conf), "--workers", "5", "--listen", "a", "--listen", "b",
                   env={"SIPCAPTOOL_WORKERS": "4"}))
    assert o["workers"] == "5 (command line)"
    assert o["listen"] == "('a', 'b') (command line)"
    o = out(invoke())
    assert o["workers"] == "1 (default)" and o["listen"] == "('udp:0.0.0.0:9060',) (default)"


def test_flags_and_counters_convert_to_the_setting():
    o = out(invoke("--ipip", "-vv"))
    assert o["raw_ipip_capture_on"] == "1 (command line)"
    assert o["log_level"] == "'debug' (command line)"
    assert out(invoke("-q"))["log_level"] == "'error' (command line)"
    assert out(invoke("-i", "eth1"))["raw_interface"] == "'eth1' (command line)"


@pytest.mark.parametrize("args,needle", [
    (["-i", "a", "--raw-interface", "b"], "-i/--interface and --raw-interface both give"),
    (["-q", "-v"], "-v/--verbose and -q/--quiet both give log_level"),
])
def test_two_options_of_one_setting_refused(args, needle):
    r = invoke(*args)
    # ConfigError: sipcaptool's main() prints it on one line and exits with status 2
    assert isinstance(r.exception, ConfigError) and r.exception.exit_code == 2
    assert needle in str(r.exception)


def test_numbers_checked_by_settings_with_the_setting_named():
    r = invoke("--workers", "65")
    assert isinstance(r.exception, ConfigError) and r.exception.exit_code == 2
    assert "workers = 65 (from command line): out of range; allowed: 1..64" in str(r.exception)


def test_unknown_setting_for_an_option_is_a_programming_error():
    with pytest.raises(TypeError, match="no setting 'no_such_thing'"):
        setting_option("--no-such-thing")


def test_every_option_default_comes_from_the_field():
    helps = {p.opts[0]: p.help for p in cmd.params if isinstance(p, click.Option)}
    assert "[default: udp:0.0.0.0:9060]" in helps["--listen"]
    assert "[default: 1]" in helps["--workers"]


def test_env_lists():
    assert env_list("listen", '["udp:[::]:9060", "tcp:0.0.0.0:9061"]', "K") == [
        "udp:[::]:9060", "tcp:0.0.0.0:9061"]
    assert env_list("listen", "udp:a:1  tcp:b:2\n", "K") == ["udp:a:1", "tcp:b:2"]
    assert env_list("capture_mode", "a=>db_url=x; table_name=t;\nb", "K") == [
        "a=>db_url=x; table_name=t;", "b"]
    with pytest.raises(ConfigError, match="not a TOML array"):
        env_list("listen", "[unclosed", "SIPCAPTOOL_LISTEN")


def test_command_tables_name_only_known_settings(tmp_path):
    conf = tmp_path / "s.toml"
    conf.write_text("[hep]\nworkerz = 2\n")
    with pytest.raises(ConfigError, match="unknown setting 'workerz'.*\\[hep\\]"):
        Settings.load(str(conf), {}, env={}, command="live")


def test_secret_files(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "key").write_text("s3cret\r\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_secret_file("key", "auth_key_file", env) == "s3cret"
    (tmp_path / "two").write_text("a\nb\n")
    (tmp_path / "empty").write_text("\n")
    for name, needle in (("two", "several lines"), ("empty", "empty"),
                         ("missing", "cannot read it")):
        with pytest.raises(ConfigError, match=needle) as e:
            read_secret_file(str(tmp_path / name), "auth_key_file", {})
        assert "s3cret" not in str(e.value)
    s = Settings.load(None, {"auth_key_file": "key"}, env=env)
    assert s.auth_key == "s3cret" and s.origin["auth_key"] == "command line (auth_key_file)"


def test_db_password_file_goes_into_every_url_with_a_user(tmp_path):
    (tmp_path / "pw").write_text("p@ss/w:rd\n")
    s = Settings.load(None, {"db_url": "mysql://homer@db1/homer",
                             "db_password_file": str(tmp_path / "pw"),
                             "capture_mode": ["m=>db_url=postgresql://u@db2/x;table_name=t;",
                                              "n=>db_url=sqlite:///x.db;table_name=t;"]},
                      env={})
    from sipcaptool.store.url import parse_db_url

    assert parse_db_url(s.db_url).password == "p@ss/w:rd"
    assert parse_db_url(s.modes["m"].db_url).password == "p@ss/w:rd"
    assert s.modes["n"].db_url == "sqlite:///x.db"
    assert "p@ss" not in parse_db_url(s.db_url).redacted()


def test_a_secret_value_is_never_in_an_error():
    assert PARAMS["auth_key"].secret
    with pytest.raises(ConfigError) as e:
        coerce("auth_key", 12345, "file x")
    assert "12345" not in str(e.value)


def test_config_check_reads_command_tables_and_grammars(tmp_path):
    from sipcaptool.commands.configcmd import check_file

    conf = tmp_path / "c.toml"
    conf.write_text('[hep]\nlisten = ["udp:0.0.0.0:9060", "bogus"]\nworkerz = 2\n'
                    'metrics = "127.0.0.1:x"\nauth_ky = "s3cret"\n'
                    '[live]\nraw_socket_listen = ":5060-5090"\n[search]\ntz = "Mars/Base"\n')
    problems = check_file(str(conf))
    assert len(problems) == 5, problems
    assert any(p.startswith("[hep] workerz = 2: unknown setting (did you mean 'workers'?)")
               for p in problems)
    assert any(p.startswith("[hep] auth_ky = ***: unknown setting") for p in problems)
    assert any(p.startswith("[hep] --listen 'bogus': no transport") for p in problems)
    assert any(p.startswith("[hep] --metrics '127.0.0.1:x'") for p in problems)
    assert any(p.startswith("[search] tz 'Mars/Base'") for p in problems)
    assert not any("s3cret" in p for p in problems)
    conf.write_text('[hep]\nlisten = ["udp:[::]:9060", "tcp:0.0.0.0:9061"]\nworkers = 2\n')
    assert check_file(str(conf)) == []


def test_repr_shows_no_secret(tmp_path):
    (tmp_path / "pw").write_text("pw-in-file\n")
    s = Settings.load(None, {"auth_key": "the-key", "db_url": "mysql://u@h/db",
                             "db_password_file": str(tmp_path / "pw"),
                             "capture_mode": ["m=>db_url=postgresql://v@h/x;table_name=t;"]},
                      env={})
    text = repr(s)
    assert "the-key" not in text and "pw-in-file" not in text and "postgresql://v:***@h/x" in text
    assert "auth_key='***'" in text
    assert "mysql://u:***@h/db" in text
