"""From CapturedMessage to stored rows: parse, build the row, choose the table, batch.

Every source (replay, live, IPIP, HEP collector) calls ``Pipeline.submit`` for each
message it decoded, and ``close`` at the end. Everything here is shared so the same
message gives the same row whichever way it arrived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .config import Settings
from .decode.sip import looks_like_sip
from .dedup import Dedup
from .errors import StoreError
from .record import AUX_TABLES, HEP_TYPE_SIP, CapturedMessage
from .row import Row, RowMaker, RowOptions, aux_row, hash_key, pack, parsed_row
from .stats import Stats
from .store.router import Router
from .store.writer import Writer

if TYPE_CHECKING:
    from .decode.sip import SipMessage
    from .store.retention import Maintenance
    from .store.writer import Position


def _arrival_us() -> int:
    """The dedup window's clock for hep and live: monotonic µs."""
    return time.monotonic_ns() // 1000


class _Target:
    __slots__ = ("router", "writer", "hash_source", "needs_key", "single", "table", "routed")

    def __init__(self, router: Router, writer: Writer, hash_source: str, mt_mode: str, n: int):
        self.router = router
        self.writer = writer
        self.hash_source = hash_source
        self.needs_key = router.needs_key
        self.single = n == 1
        # one table without strftime codes and no routes: every message goes there
        self.table = router.table
        # routes by method (--route): the message's method (a reply's CSeq method) counts
        self.routed = router.routed


def _maintenance(settings: Settings, db_url: str,
                 clock: Callable[[], float] | None) -> Maintenance | None:
    """The tables of today and tomorrow a writer into ``db_url`` keeps ready: every table
    name (and route) of the active capture modes storing there."""
    if clock is None:
        return None
    from .store.retention import Maintenance
    from .store.router import route_table_names
    names: list[str] = []
    for mode in settings.active_modes():
        if mode.db_url == db_url:
            names.extend(route_table_names(mode.tables, settings.route))
    return Maintenance(tuple(dict.fromkeys(names)), clock=clock)


class CaptureFlag:
    """Capture on/off, readable cheaply on every message.

    ``value`` is 1 (store) or 0 (receive and count, store nothing). Processes that must
    share the switch (workers started by a long-running command, driven by the control
    socket) pass a ``multiprocessing.RawValue("b")`` instead: it has the same ``value``.
    """

    __slots__ = ("value",)

    def __init__(self, on: bool = True) -> None:
        self.value = 1 if on else 0


class Pipeline:
    """Parse, route and batch messages into every active capture mode's database.

    Args:
        settings: the effective settings.
        stats: counters updated in place.
        background: write batches from a separate writer process (fast path). Off for
            tests and small jobs that want the simplest path.
        use_spool: batches the database cannot take wait in ``settings.spool_dir``
            (an unreachable database at start is then not an error either, unless
            ``require_db_at_start``).
        capture_flag: an object with ``value`` (1 store / 0 don't), shared with the
            control socket; by default a private one set from ``capture_on``.
        max_clock_skew: seconds (``hep``, ``live``: the setting of that name; 0, the
            default, for ``replay``). A message whose own time is further than this
            from the clock has its strftime table (``sip_%Y%m%d``) named by its arrival
            time instead, counted as ``adjusted:clock-skew``: a sender's timestamps
            cannot make a table each. The row keeps the message's own time (``date``,
            ``micro_ts``).
        maintenance_clock: ``hep``, ``live``: each writer process makes the tables of
            today and tomorrow (and MySQL day partitions) ahead, by this clock (``time.time``;
            tests give another), at start and every hour
            (:class:`~sipcaptool.store.retention.Maintenance`). None (``replay``): not.
        dedup_by_arrival: with ``dedup_window``, the window's entries expire by the
            arrival clock (``hep``, ``live``) instead of the messages' own time
            (``replay``); see :mod:`sipcaptool.dedup`.
        writer_parses: ``replay``: the writer processes parse part of the messages
            (``auto``, ``always``; ``never``), see :mod:`sipcaptool.store.unparsed` and
            :meth:`submit_all`. None (``hep``, ``live``): they are handed rows only.
    """

    def __init__(self, settings: Settings, stats: Stats, *, background: bool = True,
                 capture_flag: Any = None, use_spool: bool = True,
                 require_db_at_start: bool = False, max_clock_skew: float = 0.0,
                 maintenance_clock: Callable[[], float] | None = None,
                 dedup_by_arrival: bool = False, writer_parses: str | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.capture_flag = (capture_flag if capture_flag is not None
                             else CaptureFlag(bool(settings.capture_on)))
        self.capture_bad = bool(settings.capture_bad_msgs)
        self.opts = RowOptions(capture_node=settings.capture_node,
                               callid_aleg_headers=settings.aleg_headers(),
                               custom_field_headers=settings.custom_headers())
        from .store.spool import resolve_spool_dir
        from .store.url import parse_db_url
        spool_dir = resolve_spool_dir(settings.spool_dir)
        self.spool_dir = spool_dir if use_spool else None
        writers: dict[str, Writer] = {}
        self.targets: list[_Target] = []
        try:
            for mode in settings.active_modes():
                if mode.db_url.strip().lower() == "none":
                    continue
                w = writers.get(mode.db_url)
                if w is None:
                    w = Writer(mode.db_url, stats, batch_size=settings.batch_size,
                               batch_max_bytes=settings.batch_max_bytes,
                               flush_interval=settings.flush_interval,
                               insert_retries=settings.insert_retries,
                               insert_retry_timeout=settings.insert_retry_timeout,
                               background=background,
                               spool_dir=spool_dir if use_spool else None,
                               spool_max_bytes=settings.spool_max_bytes,
                               insert_mode=settings.db_insert_mode,
                               require_db_at_start=require_db_at_start,
                               maintenance=_maintenance(settings, mode.db_url,
                                                        maintenance_clock),
                               parse=None if writer_parses is None
                               else RowMaker(self.opts, self.capture_bad),
                               writer_parses=writer_parses or "never")
                    writers[mode.db_url] = w
                router = Router(mode.tables, mode.mt_mode, mode.hash_source,
                                dialect=parse_db_url(mode.db_url).dialect,
                                routes=settings.route)
                self.targets.append(_Target(router,
                                            w, mode.hash_source, mode.mt_mode, len(mode.tables)))
        except BaseException:
            for w in writers.values():
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - the error being raised is the one to report
                    pass
            raise
        self.writers = list(writers.values())
        self.single_target = len(self.targets) == 1
        # logs/RTCP/reports go to the default mode's database, as the module does
        self.aux_writer = self.targets[0].writer if self.targets else None
        # strftime tables named by arrival time when the message's own is this far off
        dated = any(t.router.dated for t in self.targets)
        self.skew_us = int(max_clock_skew * 1_000_000) if dated and max_clock_skew > 0 else 0
        # copies of a message already stored from another capture point (dedup_window)
        self.dedup: Dedup | None = None
        if settings.dedup_window > 0:
            self.dedup = Dedup(settings.dedup_window, settings.dedup_max_entries, stats,
                               clock=_arrival_us if dedup_by_arrival else None)

    def submit(self, msg: CapturedMessage) -> None:
        got = self._sip_row(msg)
        if got is None:
            return
        sip, row = got
        ts = msg.ts_us
        skew = self.skew_us
        if skew:
            now = time.time_ns() // 1000
            if not -skew <= ts - now <= skew:
                ts = now  # the table only: the row keeps the message's time
                self.stats["adjusted:clock-skew"] += 1
        if self.single_target:
            t = self.targets[0]
            table = t.table
            if table is None:
                method = t.router.message_route(sip) if t.routed else ""
                table = t.router.choose(hash_key(sip, t.hash_source) if t.needs_key else "",
                                        ts, method)
            t.writer.add(table, "sip", row)
            return
        error: StoreError | None = None
        for t in self.targets:  # an earlier batch's error must not skip the other modes
            key = hash_key(sip, t.hash_source) if t.needs_key else ""
            try:
                t.writer.add(t.router.choose(key, ts, t.router.message_route(sip)
                                             if t.routed else ""), "sip", row)
            except StoreError as e:
                error = error or e
        if error is not None:
            raise error

    def submit_all(self, msgs: Sequence[CapturedMessage], position: Position | None = None,
                   ) -> None:
        """:meth:`submit` each of ``msgs`` in order (a decoded batch of ``replay`` or
        ``live``); with ``position`` (a replay's bookkeeping), its ``seq`` counted up
        first for each. Where every SIP row goes to one table (one target, a table
        without strftime codes, no routes), the rows are handed to the writer together
        at the end (:meth:`Writer.add_rows`, with each row's position: one call instead
        of one a message, and a third less of the time it takes); and where its writer
        process parses (a replay's, :attr:`Writer.parses`), the batches it has time for
        are handed to it unparsed (:meth:`Writer.share`). A StoreError for an earlier
        batch is raised once, after the rows it came with were taken: by the SIP rows'
        writer at the end; by an aux row's writer at its message, which ends the loop
        there -- the rows made until then are handed over all the same."""
        target = self.targets[0] if self.single_target else None
        if target is None or target.table is None:
            for m in msgs:
                if position is not None:
                    position.seq += 1
                self.submit(m)
            return
        if position is None or not target.writer.parses:
            self._submit_rows(msgs, position, target.writer, target.table)
            return
        writer, table = target.writer, target.table
        error: StoreError | None = None
        i, n = 0, len(msgs)
        while i < n:
            unparsed, room = writer.share(table)
            chunk = msgs[i:i + room]
            i += len(chunk)
            try:
                if unparsed and all(m.hep_type == HEP_TYPE_SIP for m in chunk):
                    self._submit_unparsed(chunk, position, writer, table)
                else:
                    self._submit_rows(chunk, position, writer, table)
            except StoreError as e:     # (the rest of the messages are handed over)
                error = error or e
        if error is not None:
            raise error

    def _submit_rows(self, msgs: Sequence[CapturedMessage], position: Position | None,
                     writer: Writer, table: str) -> None:
        rows: list[Row] = []
        seqs: list[int] = []
        row_of = self._sip_row
        try:
            for m in msgs:
                if position is not None:
                    position.seq += 1
                got = row_of(m)     # (an aux row is added here and now)
                if got is not None:
                    rows.append(got[1])
                    if position is not None:
                        seqs.append(position.seq)
        finally:
            if rows:
                writer.add_rows(table, "sip", rows, seqs if position is not None else None)

    def _submit_unparsed(self, msgs: Sequence[CapturedMessage], position: Position,
                         writer: Writer, table: str) -> None:
        """SIP messages handed to ``writer`` unparsed (:meth:`Writer.add_unparsed`): what
        :meth:`_sip_row` does before parsing is done here (counted, the capture switch,
        the dedup window), the parsing and the row by the writer process."""
        stats, flag, dedup = self.stats, self.capture_flag, self.dedup
        items: list[tuple[object, ...]] = []
        seqs: list[int] = []
        try:
            for m in msgs:
                position.seq += 1
                stats["messages"] += 1
                if not flag.value:
                    stats["dropped:capture-off"] += 1
                    continue
                if dedup is not None and dedup.duplicate(m):
                    continue    # counted as dedup:<node>
                items.append(pack(m))
                seqs.append(position.seq)
        finally:
            if items:
                writer.add_unparsed(table, items, seqs)

    def _sip_row(self, msg: CapturedMessage) -> tuple[SipMessage, Row] | None:
        """The parsed message and its row, or None: not SIP (an aux row is added to its
        table here), not captured (counted), or malformed and not stored (counted)."""
        stats = self.stats
        stats["messages"] += 1
        if not self.capture_flag.value:
            stats["dropped:capture-off"] += 1
            return None
        if self.dedup is not None and self.dedup.duplicate(msg):
            return None  # counted as dedup:<node>
        hep_type = msg.hep_type
        if hep_type != HEP_TYPE_SIP and not self._submit_aux(msg):
            return None
        return parsed_row(msg, self.opts, self.capture_bad, stats)

    def _submit_aux(self, msg: CapturedMessage) -> bool:
        """Store a HEP packet that is not of the SIP type; True when it is to be stored
        as SIP after all.

        RTCP, QoS/MOS reports and logs go to their table (``record.AUX_TABLES``). A
        packet of any other type whose payload is a SIP message is SIP, as Kamailio's
        module takes it (it hands every such type to its SIP parser); it is counted as
        ``lenient:hep-type-<n>`` once stored, so the sender's odd type is seen. Anything
        else is ``skipped:hep-type-<n>``.
        """
        dest = AUX_TABLES.get(msg.hep_type)
        if dest is None:
            if looks_like_sip(msg.payload):
                return True
            self.stats[f"skipped:hep-type-{msg.hep_type}"] += 1
            return False
        if self.aux_writer is not None:
            self.aux_writer.add(dest[0], "aux", aux_row(msg, self.opts, self.stats))
        return False

    def spool_report(self) -> dict[str, Any]:
        """What the writers left in the spool (for the end-of-run summary)."""
        return {"dir": self.spool_dir,
                "batches": sum(w.spool_batches for w in self.writers),
                "rows": sum(w.spool_rows for w in self.writers),
                "bytes": sum(w.spool_bytes for w in self.writers)}

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        """Flush and close every writer; the first error is raised after all are closed."""
        first: BaseException | None = None
        for w in self.writers:
            try:
                w.close()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                first = first or e
        if first is not None:
            raise first
