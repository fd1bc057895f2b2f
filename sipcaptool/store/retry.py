"""Writing one formatted batch with retries: exponential back-off and a fresh connection.

A failed batch is retried up to ``insert_retries`` times within ``insert_retry_timeout``
seconds, waiting 0.1 s doubling to 5 s in between, and reconnecting each time (so a
restarted server is reconnected to). What happens to a batch whose retries end is
decided by :class:`~sipcaptool.store.writer_process.WriterCore`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import StoreError
from . import Adapter

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "write_retrying", "write_with_retries"]

BACKOFF_FIRST = 0.1  # seconds before the first retry (and the first probe of a down database)
BACKOFF_MAX = 5.0    # the back-off doubles up to this


def write_retrying(adapter: Adapter, table: str, kind: str, payload: object, retries: int,
                   retry_timeout: float, sleep: Callable[[float], object] = time.sleep,
                   batch_id: str | None = None,
                   rows: int = 0) -> tuple[int, StoreError | None, bool]:
    """Write one formatted batch, retrying with back-off and reconnecting.

    Returns ``(retries used, error or None, written now)``; "written now" is False when
    the batch id showed that an earlier attempt had committed it.
    """
    attempt = 0
    start = time.monotonic()
    delay = BACKOFF_FIRST
    while True:
        try:
            if batch_id is None:
                written = adapter.write(table, kind, payload)
            else:
                written = adapter.write(table, kind, payload, batch_id, rows)
            return attempt, None, written is not False
        except StoreError as e:
            remaining = retry_timeout - (time.monotonic() - start)
            if attempt >= retries or remaining <= 0:
                return attempt, e, False
            attempt += 1
            adapter.close()  # reconnect on the next try
            sleep(min(delay, remaining))
            delay = min(delay * 2, BACKOFF_MAX)


def write_with_retries(adapter: Adapter, table: str, kind: str, payload: object,
                       retries: int, retry_timeout: float,
                       sleep: Callable[[float], object] = time.sleep
                       ) -> tuple[int, StoreError | None]:
    """Write one formatted batch, retrying with back-off and reconnecting.

    Returns ``(retries used, None)`` on success or ``(retries used, last error)``.
    """
    used, err, _ = write_retrying(adapter, table, kind, payload, retries, retry_timeout, sleep)
    return used, err
