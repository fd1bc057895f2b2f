"""The decode layer is pure: importing it loads no socket, pcap, database or CLI module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = ("socket", "pcapy", "pymysql", "psycopg2", "sqlite3", "click", "tqdm",
             "asyncio", "selectors", "multiprocessing", "sipcaptool.store", "sipcaptool.sources")


def test_decode_imports_no_io_modules():
    code = (
        "import sys\n"
        "import sipcaptool.decode.packet, sipcaptool.decode.sip, sipcaptool.decode.hep, sipcaptool.row\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"decode layer imported: {p.stdout.strip()}"


def test_cli_help_is_cheap():
    """`sipcaptool --help` must not import the database drivers or libpcap."""
    code = (
        "import sys, io, contextlib\n"
        "from sipcaptool.cli import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        cli.main(['--help'], standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print(','.join(m for m in ('pymysql', 'psycopg2', 'pcapy') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"--help imported: {p.stdout.strip()}"
