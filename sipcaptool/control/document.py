"""The stats document: one shape for the end-of-run summary, ``ctl stats`` and ``/metrics``.

Counters are named ``category:reason`` (see :mod:`sipcaptool.stats`); each category of
:data:`GROUPS` becomes one object of the document under the category's name, ``-``
written ``_`` (``refused-bytes:auth`` -> ``"refused_bytes": {"auth": n}``), the same
key in all three. The end-of-run summary (:func:`summary_document`) holds the groups a
run adds to; the running collector's document (:func:`build_stats`) holds them all,
with the facts of the process and its gauges::

    {"capture": "on"|"off", "uptime_s": float, "started": unix time, "pid": int,
     "packets": n, "messages": n, "stored": {table: n}, "stored_total": n,
     "skipped": {reason: n}, "malformed": {reason: n}, "dropped": {reason: n},
     "evicted": {reason: n}, "truncated": {column: n}, "adjusted": {reason: n},
     "refused_bytes": {reason: bytes}, "stored_bad": {reason: n},
     "lenient": {what: n}, "dedup": {node: n}, "db": {event: n},
     "maintenance": {event: n},
     "kernel": {name: n}, "control": {reason: n}, "metrics": {reason: n},
     "tls": {reason: n}, "hep_out": {event: n}, "hep_target": {target:event: n},
     "queue_depth": n|null, "spool_bytes": n|null, "spool_batches": n|null,
     "other": {key: n} (only when there are such counters), ...extra}

Two older keys stay for the scripts that read them: the summary's
``truncated_values`` (the same object as ``truncated``) and the ``hep`` summary's
``uptime_seconds`` (the same number as ``uptime_s``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..stats import Stats

__all__ = [
    "GAUGES",
    "GROUPS",
    "Group",
    "build_stats",
    "format_stats_text",
    "group_counters",
    "snapshot",
    "summary_document",
    "with_counters",
]


class Group(NamedTuple):
    """One counter category as the document shows it."""

    category: str     # the counter prefix, before ':'
    label: str        # what the part after ':' is (a Prometheus label name)
    title: str        # the heading in the text table
    help: str         # the Prometheus HELP line
    in_summary: bool  # also in the end-of-run summary

    @property
    def key(self) -> str:
        """The document key: the category, ``-`` written ``_``."""
        return self.category.replace("-", "_")


GROUPS: tuple[Group, ...] = (
    Group("stored", "table", "rows stored", "Rows stored, per table.", True),
    Group("skipped", "reason", "skipped (not a message)",
          "Input that is not a message, per reason.", True),
    Group("malformed", "reason", "malformed", "Input that did not decode, per reason.", True),
    Group("dropped", "reason", "dropped", "Messages not stored on purpose, per reason.", True),
    Group("evicted", "reason", "evicted decoder state", "Decoder state given up, per reason.",
          True),
    Group("truncated", "column", "values cut to column width",
          "Values cut to their column width.", True),
    Group("adjusted", "reason", "table by arrival time",
          "Messages stored with something chosen for them, per reason.", True),
    Group("refused-bytes", "reason", "bytes refused",
          "Bytes of what was refused (dropped:auth, malformed:*), per reason.", True),
    Group("stored-bad", "reason", "stored though malformed",
          "Malformed SIP stored with best-effort fields (capture_bad_msgs), per reason.", True),
    Group("lenient", "what", "stored leniently",
          "Messages stored, columns filled, though they depart from the standard "
          "(an IPv6 host without brackets, LF line ends, an odd HEP type), per departure.",
          True),
    Group("dedup", "node", "duplicates not stored (dedup window)",
          "Copies of a message already stored from another capture point, not stored "
          "again (dedup_window), per capture point that saw them.", True),
    Group("db", "event", "db", "Database batches, errors and retries.", True),
    Group("maintenance", "event", "tables made ahead",
          "Tables and partitions of today and tomorrow made ahead by the collector, and "
          "failures to (hep, live).", True),
    Group("kernel", "name", "kernel", "Packets dropped by the kernel or interface.", False),
    Group("control", "reason", "control connections closed",
          "Control socket connections closed or refused, per reason.", False),
    Group("metrics", "reason", "metrics connections closed",
          "Metrics connections closed or refused, per reason.", False),
    Group("tls", "reason", "TLS connections refused",
          "TLS connections refused before any HEP was read (plain-text, bad-certificate, "
          "handshake-timeout, ...), per reason.", False),
    Group("hep_out", "event", "HEP sent on",
          "HEP packets sent to collectors (--hep-to, --forward-to) and what became of the "
          "others (rerouted, buffered, spooled, resent), per event.", False),
    Group("hep_target", "target_event", "HEP per collector target",
          "Per --hep-to/--forward-to target TRANSPORT:HOST:PORT:EVENT (sent, connected, "
          "connect-failed, closed-by-peer, reset, requeued, ...).", False),
)
GAUGES = ("queue_depth", "spool_bytes", "spool_batches")
_BY_CATEGORY = {g.category: g for g in GROUPS}


def snapshot(provider: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of what ``provider`` returns (another thread may update it meanwhile)."""
    for _ in range(5):
        try:
            return dict(provider())
        except RuntimeError:
            time.sleep(0.001)
    return dict(provider())


def with_counters(doc: dict[str, Any], counters: Mapping[str, int]) -> dict[str, Any]:
    """``doc`` with the endpoints' own counters (``control:``, ``metrics:``) added."""
    for k, v in list(counters.items()):
        doc[k] = (doc.get(k) or 0) + v
    return doc


def group_counters(counters: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                                          dict[str, Any]]:
    """``({group key: {reason: n}} for every group of GROUPS, {other key: n})``.

    Zero counts are left out of the groups; ``packets``, ``messages`` and the gauges
    are in neither.
    """
    groups: dict[str, dict[str, Any]] = {g.key: {} for g in GROUPS}
    other: dict[str, Any] = {}
    for k in sorted(counters):
        v = counters[k]
        if k in ("packets", "messages") or k in GAUGES:
            continue
        cat, sep, rest = k.partition(":")
        group = _BY_CATEGORY.get(cat) if sep else None
        if group is not None:
            if v:
                groups[group.key][rest] = v
        else:
            other[k] = v
    return groups, other


def _head(counters: Mapping[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stored = groups.pop("stored")
    return {"packets": int(counters.get("packets", 0) or 0),
            "messages": int(counters.get("messages", 0) or 0),
            "stored": stored, "stored_total": sum(stored.values())}


def summary_document(stats: Stats, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The end-of-run summary of a command (``--json``): the counters of the run by
    group (those of GROUPS marked ``in_summary``), then ``extra``."""
    groups, _other = group_counters(stats)
    doc = _head(stats, groups)
    for g in GROUPS:
        if g.in_summary and g.key in groups:
            doc[g.key] = groups[g.key]
            if g.key == "truncated":
                doc["truncated_values"] = groups[g.key]  # the summary's older name
    if extra:
        doc.update(extra)
    return doc


def build_stats(counters: Mapping[str, Any], *, capture_on: bool, started: float,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The running collector's stats document from a flat counter mapping (see the
    module docstring); a callable value of ``extra`` is called."""
    doc: dict[str, Any] = {
        "capture": "on" if capture_on else "off",
        "uptime_s": round(max(0.0, time.time() - started), 3),
        "started": round(started, 3),
        "pid": os.getpid(),
    }
    groups, other = group_counters(counters)
    doc.update(_head(counters, groups))
    doc.update(groups)
    for gauge in GAUGES:
        doc[gauge] = counters.get(gauge)
    if other:
        doc["other"] = other
    for k, v in (extra or {}).items():
        doc[k] = v() if callable(v) else v
    return doc


def _fmt_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{d}d {out}" if d else out


# groups shown with their total even when empty, and those shown only when not empty
_ALWAYS = ("skipped", "malformed", "dropped", "evicted", "truncated")
_WHEN_SET = ("adjusted", "refused-bytes", "stored-bad", "lenient", "dedup", "maintenance",
             "control", "metrics", "tls", "hep_out", "hep_target")


def format_stats_text(doc: Mapping[str, Any]) -> str:
    """A readable table of a stats document (``ctl stats``, ``stats text``)."""
    lines: list[str] = []

    def row(title: str, value: Any, indent: int = 0) -> None:
        lines.append(f"{' ' * indent}{title + ':':<{28 - indent}} {value}")

    row("capture", doc.get("capture", "?"))
    row("uptime", _fmt_duration(float(doc.get("uptime_s") or 0)))
    row("packets received", doc.get("packets", 0))
    row("messages received", doc.get("messages", 0))
    row("rows stored", doc.get("stored_total", 0))
    for table, n in (doc.get("stored") or {}).items():
        row(table, n, 2)
    for cat in _ALWAYS + _WHEN_SET:
        g = _BY_CATEGORY[cat]
        group = doc.get(g.key) or {}
        if cat in _ALWAYS or group:
            row(g.title, sum(v for v in group.values() if isinstance(v, (int, float))))
            for reason, n in group.items():
                row(reason, n, 2)
    kernel = doc.get("kernel") or {}
    if kernel:
        row("kernel", "")
        for name, n in kernel.items():
            row(name, n, 2)
    db = dict(doc.get("db") or {})
    row("db batches", db.pop("batches", 0))
    row("db errors", db.pop("errors", 0))
    row("db retries", db.pop("retries", 0))
    for name, n in db.items():
        row("db " + name, n)
    for key, title in (("queue_depth", "queue depth"), ("spool_bytes", "spool bytes"),
                       ("spool_batches", "spool batches")):
        v = doc.get(key)
        row(title, "-" if v is None else v)
    skip = {"capture", "uptime_s", "started", "packets", "messages", "stored_total", "other",
            *(g.key for g in GROUPS), *GAUGES}
    for k, v in doc.items():
        if k not in skip:
            row(k, json.dumps(v) if isinstance(v, (dict, list)) else v)
    for k, v in (doc.get("other") or {}).items():
        row(k, v)
    return "\n".join(lines)
