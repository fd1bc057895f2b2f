"""Keep freed memory for the next batch instead of giving it back to the system.

A batch crosses from the capturing process to the writer process as one pickled buffer
of about a megabyte (2,000 rows of SIP). glibc serves a block that large with its own
``mmap`` and returns it to the system when it is freed, so every batch costs both
processes a fresh mapping and a page fault for each of its pages (a replay of 50,000
messages: 41,000 page faults instead of 13,500, and about a tenth more CPU in the
capturing process; ``bench/clickhouse.py replay``). :func:`retain_freed_memory` raises
glibc's mmap and trim thresholds so that such blocks come from the heap and stay there
for the next batch. Memory is bounded as before (by the batches in flight, see
:mod:`sipcaptool.store.writer`); it is kept by the process rather than returned and
taken again. Elsewhere than glibc (musl, other systems) nothing is done.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20    # glibc's largest (blocks above are still mapped)
_TRIM_THRESHOLD = 256 << 20

_done = False


def retain_freed_memory() -> bool:
    """Raise glibc's thresholds in this process (once); True when it took them."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _done = ok
    return ok
