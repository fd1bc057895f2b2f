#!/usr/bin/env python3
"""Print the corpus fidelity table (markdown) for docs/fidelity.md and the README.

Every capture of ``../shared/corpus`` is replayed with the real command line
(``python -m sipcaptool replay --db sqlite:///... --json -q``) and the stored rows are
compared with tshark's oracle, exactly as tests/test_corpus_replay.py does (the
comparison is imported from there):

* oracle: SIP messages tshark shows (oracle/<file>.jsonl);
* stored: rows in ``sip_capture`` with the default settings;
* agreeing: stored rows equal to their oracle message in time (µs), addresses, ports,
  transport, method or status, Call-ID, CSeq and From/To tags;
* with capture_bad_msgs=1: rows stored when SIP that does not parse is kept too;
* the note names what was stored leniently (the summary's ``lenient`` group: an IPv6
  host without brackets, LF line ends ...) and why rows are missing or extra.

    python tools/corpus_table.py                 # the table
    python tools/corpus_table.py --differences   # and the documented differences
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--differences", action="store_true", help="also list the documented differences")
    args = ap.parse_args()
    try:
        from test_corpus_oracle import DIFFERENCES
        from test_corpus_replay import FILES, LENIENT, STORE_DIFFERENCES, agreement
    except (ImportError, pytest.skip.Exception) as e:  # importorskip outside pytest
        print(f"corpus_table: cannot load the corpus comparison: {e}", file=sys.stderr)
        return 2
    if not FILES:
        print("corpus_table: ../shared/corpus not found", file=sys.stderr)
        return 2
    lines = ["| file | oracle messages | stored | agreeing | stored with capture_bad_msgs=1 | note |",
             "|---|---:|---:|---:|---:|---|"]
    totals = [0, 0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="sipcaptool-corpus-") as tmp:
        for name in FILES:
            d1 = Path(tmp) / name / "default"
            d2 = Path(tmp) / name / "bad"
            d1.mkdir(parents=True)
            d2.mkdir(parents=True)
            r = agreement(name, d1)
            b = agreement(name, d2, "--capture-bad-msgs", "1", tags=False)
            note = []
            lenient = r["summary"].get("lenient") or {}
            if lenient:
                note.append("lenient: " + ", ".join(f"{k} {v}" for k, v in lenient.items()))
            if name in STORE_DIFFERENCES:
                note.append("broken structure, dropped as Kamailio drops it (1)")
            if name in DIFFERENCES:
                note.append("see (2)" if not name.startswith("hep") else "HEP time (3)")
            if r["extra"]:
                note.append(f"{len(r['extra'])} not in oracle")
            if r["problems"]:
                note.append(f"{len(r['problems'])} differ")
            row = [r["oracle"], r["stored"], r["agree"], b["stored"]]
            totals = [t + v for t, v in zip(totals, row, strict=False)]
            lines.append(f"| {name} | " + " | ".join(map(str, row)) + f" | {'; '.join(note)} |")
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " | |")
    print("\n".join(lines))
    if args.differences:
        print("\nDocumented differences:\n")
        for name, (frames, malformed, why) in sorted(STORE_DIFFERENCES.items()):
            print(f"* `{name}` (frames {', '.join(map(str, sorted(frames)))}; {malformed}): {why}")
        for name, (counts, why) in sorted(LENIENT.items()):
            print(f"* `{name}` (stored, lenient {counts}): {why}")
        for name, why in sorted(DIFFERENCES.items()):
            print(f"* `{name}`: {' '.join(why.split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
