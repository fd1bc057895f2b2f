"""The ladder as JSON, for scripts: the calls with their summaries, the columns, and one
object per arrow (times in µs since the epoch and as text, deltas in µs, marks, media).
The message text is included with ``with_msg`` (``--full``)."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from typing import Any

from .flow import Arrow, Ladder, endpoint, fmt_delta, fmt_time

__all__ = ["render_json", "arrow_dict"]


def _msg_fields(msg: bytes) -> dict[str, str]:
    try:
        return {"msg": msg.decode("utf-8")}
    except UnicodeDecodeError:
        return {"msg": msg.decode("utf-8", "replace"),
                "msg_base64": base64.b64encode(msg).decode("ascii")}


def arrow_dict(a: Arrow, ladder: Ladder, *, with_msg: bool = False) -> dict[str, Any]:
    m = a.message
    d: dict[str, Any] = {
        "index": a.index, "call": ladder.calls[a.call_index].callid,
        "from": ladder.columns[a.src].key, "to": ladder.columns[a.dst].key,
        "src": endpoint(m.source_ip, m.source_port),
        "dst": endpoint(m.destination_ip, m.destination_port),
        "label": a.label, "method": m.method if m.is_request else None, "status": a.status,
        "reason": m.reply_reason if not m.is_request else None, "cseq": m.cseq,
        "proto": a.proto, "node": m.node,
        "time_us": a.time_us, "time": fmt_time(a.time_us, date=True),
        "delta_first_us": a.delta_first_us, "delta_prev_us": a.delta_prev_us,
        "delta_first": fmt_delta(a.delta_first_us), "delta_prev": fmt_delta(a.delta_prev_us),
        "retransmission": a.retransmission, "sdp": a.sdp,
        "media": [{"kind": md.kind, "address": md.address, "port": md.port,
                   "transport": md.transport, "codecs": list(md.codecs),
                   "direction": md.direction} for md in a.media],
    }
    if with_msg:
        d.update(_msg_fields(m.msg))
    return d


def ladder_dict(ladder: Ladder, *, with_msg: bool = False) -> dict[str, Any]:
    return {
        "calls": [{"callid": c.callid, "legs": list(c.legs), "messages": len(c.messages),
                   "summary": ({**asdict(c.summary), "duration_us": c.summary.duration_us}
                               if c.summary is not None else None)}
                  for c in ladder.calls],
        "columns": [{"key": c.key, "label": c.label, "host": c.host, "port": c.port}
                    for c in ladder.columns],
        "arrows": [arrow_dict(a, ladder, with_msg=with_msg) for a in ladder.arrows],
    }


def render_json(ladder: Ladder, *, with_msg: bool = False) -> str:
    return json.dumps(ladder_dict(ladder, with_msg=with_msg), indent=2, ensure_ascii=False) + "\n"
