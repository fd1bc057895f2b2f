"""Calls: stored messages grouped by Call-ID, summarised, with their correlated legs.

The library entry points of ``search``, ``flow`` and ``export``:

* :func:`find_calls` -- the calls matching a :class:`~sipcaptool.query.filters.Query`;
* :func:`load_calls` -- the calls of a list of Call-IDs;
* :func:`summarize` -- the :class:`~sipcaptool.query.model.CallSummary` of messages.

Legs: a call's legs are the calls it names in ``callid_aleg`` (X-CID and the configured
``callid_aleg_header`` values are stored there), the calls whose ``callid_aleg`` names
it, and the calls sharing an RFC 7989 Session-ID UUID with it (read from the message
bytes, within a few minutes of the call). ``legs=N`` follows that correlation N steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..config import Settings
from .filters import Query, call_matches
from .model import Call, CallSummary, StoredMessage
from .read import Reader

__all__ = ["find_calls", "group_calls", "load_calls", "session_ids", "summarize"]

_SESSION_ID = re.compile(
    rb"^(?:Session-ID)[ \t]*:[ \t]*([0-9A-Fa-f]{32})(?:[^\r\n]*?;[ \t]*remote[ \t]*=[ \t]*"
    rb"([0-9A-Fa-f]{32}))?", re.I | re.M)
_NULL_UUID = b"0" * 32
SESSION_MARGIN_US = 300 * 1_000_000   # Session-ID legs: this long around the call
MESSAGE_MARGIN_US = 86400 * 1_000_000  # a found call's messages: this far past the window


def _cseq_method(m: StoredMessage) -> str:
    parts = m.cseq.split()
    return parts[-1].upper() if parts else ""


def summarize(messages: Sequence[StoredMessage]) -> CallSummary:
    """The summary of one call's messages (in time order; at least one).

    The initial request is the first request (its method is ``first_method``); the
    final status is the first 2xx answering that method, else the last final reply
    (>= 200) to it. Outcome of an INVITE: ``answered`` (a 2xx), ``cancelled`` (a
    CANCEL or a 487), ``failed`` (another final reply), ``in progress`` (none yet);
    other methods: ``failed`` for a final reply >= 300, ``in progress`` without one,
    else ``other``. Setup delays are measured from the first INVITE to the first 18x
    and to the first 2xx answering an INVITE."""
    if not messages:
        raise ValueError("a call has at least one message")
    first_req = next((m for m in messages if m.is_request), messages[0])
    method = first_req.method.upper() if first_req.is_request else _cseq_method(first_req)
    finals = [m for m in messages if not m.is_request and (m.status or 0) >= 200
              and _cseq_method(m) == method]
    ok = next((m for m in finals if 200 <= (m.status or 0) < 300), None)
    final = ok if ok is not None else (finals[-1] if finals else None)
    status = final.status if final is not None else None
    invite = next((m for m in messages if m.is_request and m.method.upper() == "INVITE"),
                  None)
    ringing = answer = None
    if invite is not None:
        r18 = next((m for m in messages if not m.is_request and m.micro_ts >= invite.micro_ts
                    and 180 <= (m.status or 0) < 190 and _cseq_method(m) == "INVITE"), None)
        a2 = next((m for m in messages if not m.is_request and m.micro_ts >= invite.micro_ts
                   and 200 <= (m.status or 0) < 300 and _cseq_method(m) == "INVITE"), None)
        ringing = r18.micro_ts - invite.micro_ts if r18 is not None else None
        answer = a2.micro_ts - invite.micro_ts if a2 is not None else None
    if method == "INVITE":
        cancelled = any(m.is_request and m.method.upper() == "CANCEL" for m in messages)
        if status is not None and 200 <= status < 300:
            outcome = "answered"
        elif cancelled or status == 487:
            outcome = "cancelled"
        elif status is not None:
            outcome = "failed"
        else:
            outcome = "in progress"
    elif status is None:
        outcome = "in progress"
    else:
        outcome = "failed" if status >= 300 else "other"
    nodes: list[str] = []
    for m in messages:
        if m.node and m.node not in nodes:
            nodes.append(m.node)
    return CallSummary(
        first_us=messages[0].micro_ts, last_us=messages[-1].micro_ts,
        from_user=first_req.from_user, to_user=first_req.to_user or first_req.ruri_user,
        first_method=method, final_status=status, outcome=outcome,
        setup_ringing_us=ringing, setup_answer_us=answer, messages=len(messages),
        nodes=tuple(nodes))


def group_calls(messages: Iterable[StoredMessage]) -> dict[str, Call]:
    """Messages (in time order) grouped into calls by Call-ID, each summarised."""
    by_id: dict[str, list[StoredMessage]] = {}
    for m in messages:
        by_id.setdefault(m.callid, []).append(m)
    return {cid: Call(cid, ms, summarize(ms)) for cid, ms in by_id.items()}


def session_ids(messages: Iterable[StoredMessage]) -> set[bytes]:
    """The RFC 7989 Session-ID UUIDs (local and remote, lowercase, the null UUID left
    out) found in the messages."""
    out: set[bytes] = set()
    for m in messages:
        if b"ession-" not in m.msg and b"ESSION-" not in m.msg:
            continue
        head = m.msg.split(b"\r\n\r\n", 1)[0]
        for match in _SESSION_ID.finditer(head):
            for u in match.groups():
                if u and u.lower() != _NULL_UUID:
                    out.add(u.lower())
    return out


def _link_legs(reader: Reader, roots: Sequence[Call], depth: int,
               loaded: dict[str, Call]) -> None:
    """Fill ``legs`` of each root with the Call-IDs within ``depth`` correlation steps;
    the leg calls are added to ``loaded``."""
    if depth <= 0 or not roots:
        return
    edges: dict[str, set[str]] = {}
    frontier = [c.callid for c in roots]
    for _level in range(depth):
        todo = [cid for cid in frontier if cid not in edges and cid in loaded]
        if not todo:
            break
        pointing = reader.pointing_at(todo)
        for cid in todo:
            call = loaded[cid]
            near = {m.callid_aleg for m in call.messages if m.callid_aleg}
            near |= pointing.get(cid, set())
            s = call.summary
            for uuid in session_ids(call.messages):
                if s is not None:
                    near |= reader.containing(uuid, s.first_us - SESSION_MARGIN_US,
                                              s.last_us + SESSION_MARGIN_US)
            near.discard(cid)
            edges[cid] = near
        nxt = sorted({n for cid in todo for n in edges[cid]} - set(loaded))
        if nxt:
            loaded.update(group_calls(reader.messages(nxt)))
        frontier = sorted({n for cid in todo for n in edges[cid]})
    for root in roots:
        seen = {root.callid}
        level = [root.callid]
        legs: list[str] = []
        for _ in range(depth):
            found = []
            for cid in level:
                for n in sorted(edges.get(cid, ())):
                    if n not in seen and n in loaded:
                        seen.add(n)
                        found.append(n)
            legs.extend(found)
            level = found
        root.legs = legs


def _with_legs(calls: list[Call], loaded: dict[str, Call], include_legs: bool) -> list[Call]:
    if not include_legs:
        return calls
    out = list(calls)
    have = {c.callid for c in calls}
    for c in calls:
        for leg in c.legs:
            if leg not in have:
                have.add(leg)
                out.append(loaded[leg])
    return out


def find_calls(settings: Settings, query: Query, *, legs: int = 0, limit: int | None = None,
               include_legs: bool = False) -> list[Call]:
    """The calls matching ``query`` in every table the settings store into (capture
    modes, ``a|b`` lists, the strftime tables of the window), in time order.

    A call matches when one of its messages meets every row-level filter and the call
    meets the call-level ones (``methods``, ``statuses``: see
    :mod:`sipcaptool.query.filters`). ``limit`` counts calls: the most recent ones are
    kept. Each call has all its messages (also those just outside the window), its
    summary, and with ``legs=N`` the Call-IDs of its legs up to N steps away in
    ``Call.legs``; with ``include_legs`` those leg calls are in the result too (after
    the matching calls, not counted by ``limit``).

    Raises StoreError (exit 4) when a database cannot be read.
    """
    margin_since = None if query.since_us is None else query.since_us - MESSAGE_MARGIN_US
    margin_until = None if query.until_us is None else query.until_us + MESSAGE_MARGIN_US
    with Reader(settings, margin_since, margin_until) as reader:
        post = query.has_call_filters
        cands = reader.candidates(query, None if post else limit)
        found: list[Call] = []
        loaded: dict[str, Call] = {}
        step = max(50, limit or 0)
        for i in range(0, len(cands), step):
            chunk = [cid for cid, _t in cands[i:i + step]]
            calls = group_calls(reader.messages(chunk))
            loaded.update(calls)
            for cid in chunk:
                c = calls.get(cid)
                if c is None or c.summary is None:
                    continue
                requests = [m.method for m in c.messages if m.is_request]
                if post and not call_matches(query, requests, c.summary.final_status):
                    continue
                found.append(c)
                if limit is not None and len(found) >= limit:
                    break
            if limit is not None and len(found) >= limit:
                break
        found.sort(key=lambda c: (c.summary.first_us if c.summary else 0, c.callid))
        _link_legs(reader, found, legs, loaded)
        return _with_legs(found, loaded, include_legs)


def load_calls(settings: Settings, callids: Sequence[str], *, legs: int = 0,
               since_us: int | None = None, until_us: int | None = None) -> list[Call]:
    """The calls of these Call-IDs, in time order, and with ``legs=N`` their legs up to N
    correlation steps away (each a :class:`Call` of its own, after the requested ones;
    the requested calls' ``legs`` name them). Call-IDs with no stored message are left
    out (an empty list: nothing found). ``since_us``/``until_us`` narrow the strftime
    tables read (default: every existing one).

    Raises StoreError (exit 4) when a database cannot be read.
    """
    with Reader(settings, since_us, until_us) as reader:
        loaded = group_calls(reader.messages(list(dict.fromkeys(callids))))
        calls = sorted(loaded.values(),
                       key=lambda c: (c.summary.first_us if c.summary else 0, c.callid))
        _link_legs(reader, calls, legs, loaded)
        return _with_legs(calls, loaded, legs > 0)
