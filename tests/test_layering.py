"""The layers hold: the decode layer is pure, the library never imports the CLI library,
``--help`` is cheap, and docs/architecture.md names every module there is."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import sipcaptool
import sipcaptool.decode
import sipcaptool.encode

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sipcaptool"

FORBIDDEN = ("socket", "pcapy", "pymysql", "psycopg2", "sqlite3", "click", "tqdm",
             "asyncio", "selectors", "multiprocessing", "sipcaptool.store", "sipcaptool.sources")

# every module of the decode package, found by walking it (lazily imported ones too)
DECODE_MODULES = sorted(m.name for m in pkgutil.walk_packages(sipcaptool.decode.__path__,
                                                              "sipcaptool.decode."))
# the encoders are held to the decoders' rules
ENCODE_MODULES = sorted(m.name for m in pkgutil.walk_packages(sipcaptool.encode.__path__,
                                                              "sipcaptool.encode."))
PURE = (DECODE_MODULES + ["sipcaptool.encode"] + ENCODE_MODULES
        + ["sipcaptool.record", "sipcaptool.row", "sipcaptool.errors"])


def _all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sipcaptool.__path__, "sipcaptool."))


def _imported_names(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth of the file
    (imports inside functions count: they are the lazy ones)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_walk_finds_the_decode_modules():
    assert {"sipcaptool.decode.hep", "sipcaptool.decode.sip", "sipcaptool.decode.tcp",
            "sipcaptool.decode.defrag", "sipcaptool.decode.packet"} <= set(DECODE_MODULES)


def test_decode_imports_no_io_modules():
    code = (
        "import importlib, sys\n"
        f"for m in {PURE!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"decode layer imported: {p.stdout.strip()}"


def test_decode_source_names_no_io_module():
    """Also the imports a decoder makes only on some path, which importing does not run."""
    for name in PURE:
        path = PACKAGE.joinpath(*name.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        bad = {n for n in _imported_names(path)
               if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_library_never_imports_click():
    """Only the command layer (cli.py, commands/) speaks click; the library is usable
    from any program (as sqlite-utils keeps its library apart from its CLI)."""
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "cli.py" or rel == "__main__.py" or rel.startswith("commands/"):
            continue
        bad = {n for n in _imported_names(path) if n == "click" or n.startswith("click.")}
        if bad:
            offenders[rel] = sorted(bad)
    assert offenders == {}


def test_cli_help_is_cheap():
    """`sipcaptool --help` must not import the database drivers or libpcap."""
    code = (
        "import sys, io, contextlib\n"
        "from sipcaptool.cli import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        cli.main(['--help'], standalone_mode=False)\n"
        "    except SystemExit:\n        pass\n"
        "print(','.join(m for m in ('pymysql', 'psycopg2', 'pcapy')"
        " if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"--help imported: {p.stdout.strip()}"


def test_architecture_names_every_module():
    """docs/architecture.md is the map of the house: a module it does not name is a room
    a newcomer will not find."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = []
    for name in _all_modules():
        rel = name.split(".", 1)[1].replace(".", "/")
        leaf = rel.rsplit("/", 1)[-1]
        if leaf.startswith("_") and leaf != "__main__":
            continue
        if f"{rel}.py" not in text and f"{rel}/" not in text:
            missing.append(rel)
    assert missing == [], f"docs/architecture.md does not name: {missing}"


# one logger per component, named for what an operator recognises in a log line (not the
# module path, which changes when code moves)
LOGGERS = {"sipcaptool.hep", "sipcaptool.live", "sipcaptool.store", "sipcaptool.spool",
           "sipcaptool.control", "sipcaptool.workers", "sipcaptool.config"}


def test_loggers_are_named_by_component():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger" and node.args):
                arg = node.args[0]
                name = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
                found[f"{path.relative_to(PACKAGE)}:{node.lineno}"] = name
    assert found and {k: v for k, v in found.items() if v not in LOGGERS} == {}
