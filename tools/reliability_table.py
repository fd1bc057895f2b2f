#!/usr/bin/env python3
"""Run the fault-injection tests and write their figures to docs/reliability.md.

    python tools/reliability_table.py            # runs tests/test_faults.py (root)
    python tools/reliability_table.py --from F   # render figures collected earlier

Each test of tests/test_faults.py appends one JSON line per scenario (fault, database,
sent, stored, duplicated, lost, dropped as counted) to $SIPCAPTOOL_RELIABILITY_OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reliability.md"


def render(rows: list[dict], seconds: float | None) -> str:
    lines = [
        "# Reliability under faults",
        "",
        "Figures from `tests/test_faults.py` (regenerate with",
        "`python tools/reliability_table.py`, as root). Each scenario runs `sipcaptool hep`",
        "against a private MariaDB or",
        "PostgreSQL instance while a sender delivers HEP over UDP on 127.0.0.1 at a steady",
        "rate, injects the fault, and compares the Call-IDs sent with the rows stored.",
        "Settings: `--insert-retries 3 --insert-retry-timeout 2 --batch-size 100` (400",
        "in the kill -9 scenario), a spool directory per test.",
        "",
        "| Fault | Database | Sent | Stored | Duplicated | Lost | Dropped (counted) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['database']} | {r['sent']} | {r['stored']} | "
                     f"{r['duplicated']} | {r['lost']} | {r.get('dropped_counted', 0)} |")
    lines += [
        "",
        "Lost is counted against every message the sender handed to the kernel (for the",
        "SIGTERM scenario: before the signal). The only loss is the full-spool scenario,",
        "where it equals what the collector counted as `dropped:spool-full` and logged",
        "(`SPOOL FULL`).",
    ]
    if seconds is not None:
        lines += ["", f"Test run time: {seconds:.0f} s ({time.strftime('%Y-%m-%d', time.gmtime())})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", help="JSON-lines file of figures (skip the run)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    seconds = None
    if args.src:
        src = args.src
    else:
        fd, src = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
        env = dict(os.environ, SIPCAPTOOL_RELIABILITY_OUT=src)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_faults.py"],
                           cwd=ROOT, env=env)
        seconds = time.monotonic() - t0
        if p.returncode != 0:
            print("tests/test_faults.py failed; table not written", file=sys.stderr)
            return p.returncode
    with open(src) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    Path(args.out).write_text(render(rows, seconds))
    print(f"{args.out}: {len(rows)} scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
