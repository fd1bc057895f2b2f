"""What a pip install puts on the machine besides the package: the man pages."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_man_page_is_installed():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = meta["tool"]["setuptools"]["data-files"]["share/man/man1"]
    installed = {Path(p).name for pat in patterns for p in glob.glob(str(ROOT / pat))}
    pages = {p.name for p in (ROOT / "man").glob("*.1")}
    assert pages and installed == pages


def test_the_sql_templates_ship_with_the_package():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "sql/*/*.sql" in meta["tool"]["setuptools"]["package-data"]["sipcaptool"]
    assert list((ROOT / "sipcaptool" / "sql").glob("*/*.sql"))
