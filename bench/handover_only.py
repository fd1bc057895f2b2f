#!/usr/bin/env python3
"""``sipcaptool`` with a ClickHouse writer process that takes every batch and throws it
away: what handing the rows over to a writer process costs the capturing process, with
no database work at all (the floor of a replay whose capturing process parses every
message). Used by ``bench/clickhouse.py replay``; nothing is stored::

    python bench/handover_only.py replay --again --writer-parses never --db clickhouse://... file.pcap

(``--writer-parses never``: every message parsed by the capturing process and handed over
as a row; otherwise the writer process would parse some before throwing them away.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipcaptool.store.clickhouse import ClickHouseAdapter  # noqa: E402


def _discard(self: ClickHouseAdapter, *args: object, **kw: object) -> bool:
    return True


ClickHouseAdapter.write = _discard          # type: ignore[method-assign]
ClickHouseAdapter.coalesce_rows = 0         # (joining would read the rows back)

if __name__ == "__main__":
    from sipcaptool.cli import main
    sys.argv[0] = "sipcaptool"
    main()
