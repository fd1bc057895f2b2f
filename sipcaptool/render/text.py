"""The ladder in a terminal, like sngrep's call flow: two lines per message (time and
label; deltas and arrow), colours when asked (a tty), plain otherwise, fitted to a width.

When the lanes do not fit, the spacing shrinks first, then the columns that do not fit
are folded into the last lane (``… +N``) and the output says which ones were folded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .flow import Arrow, Ladder, endpoint, fmt_delta, fmt_time, summary_line

__all__ = ["render_text", "render_full"]

RESET = "\x1b[0m"
STYLES = {
    "": "", "dim": "\x1b[2m", "bold": "\x1b[1m",
    "request": "\x1b[1;36m", "1xx": "\x1b[33m", "2xx": "\x1b[1;32m", "3xx": "\x1b[36m",
    "4xx": "\x1b[1;31m", "5xx": "\x1b[1;31m", "6xx": "\x1b[1;31m", "retrans": "\x1b[35m",
    "call0": "\x1b[34m", "call1": "\x1b[35m", "call2": "\x1b[36m", "call3": "\x1b[33m",
    "call4": "\x1b[32m", "head": "\x1b[1;4m",
}
MIN_SPACING = 14
MAX_SPACING = 28


@dataclass(frozen=True)
class _Glyphs:
    v: str
    h: str
    right: str
    left: str
    retrans: str
    ell: str


UNICODE = _Glyphs("│", "─", "▶", "◀", "↻", "…")
ASCII = _Glyphs("|", "-", ">", "<", "(re)", "~")


class _Line:
    """A row of cells, each with a character and a style."""

    def __init__(self, width: int) -> None:
        self.chars = [" "] * width
        self.styles = [""] * width

    def put(self, x: int, text: str, style: str = "") -> None:
        for i, ch in enumerate(text):
            if 0 <= x + i < len(self.chars):
                self.chars[x + i] = ch
                self.styles[x + i] = style

    def render(self, colour: bool) -> str:
        if not colour:
            return "".join(self.chars).rstrip()
        out: list[str] = []
        cur = ""
        end = len("".join(self.chars).rstrip())
        for ch, st in zip(self.chars[:end], self.styles[:end], strict=True):
            if st != cur:
                out.append(RESET if cur else "")
                out.append(STYLES.get(st, ""))
                cur = st
            out.append(ch)
        if cur:
            out.append(RESET)
        return "".join(out)


def _cut(text: str, width: int, ell: str) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[:max(0, width - len(ell))] + ell


def _label(a: Arrow, g: _Glyphs) -> str:
    text = a.label + (" (SDP)" if a.sdp else "")
    return f"{text} {g.retrans}" if a.retransmission else text


def render_text(ladder: Ladder, *, width: int | None = None, colour: bool = False,
                unicode: bool = True) -> str:
    """The ladder as text. ``width``: the terminal's columns (None: no limit)."""
    g = UNICODE if unicode else ASCII
    out: list[str] = []
    for ci, call in enumerate(ladder.calls):
        head = f"Call-ID {call.callid}"
        if len(ladder.calls) > 1:
            head = f"[{ci + 1}] " + head
        if call.legs:
            head += "  (legs: " + ", ".join(call.legs) + ")"
        line = head + "\n    " + summary_line(call)
        if colour:
            line = STYLES[f"call{ci % 5}" if len(ladder.calls) > 1 else "bold"] + line + RESET
        out.append(line)
    if not ladder.arrows:
        return "\n".join(out) + "\n"
    first = ladder.arrows[0].time_us
    out.append(f"    first message {fmt_time(first, date=True)} UTC")
    out.append("")

    arrows = ladder.arrows
    # the time of each message, with the date when it differs from the one before
    days = [fmt_time(first, date=True)[:10]] + [fmt_time(a.time_us, date=True)[:10] for a in arrows]
    # and, with several calls, the number of the call it belongs to (as in the header)
    many = len(ladder.calls) > 1
    gut1 = [f"{a.index + 1:>3} " + (f"[{a.call_index + 1}] " if many else "")
            + fmt_time(a.time_us, date=days[i + 1] != days[i]) for i, a in enumerate(arrows)]
    gut2 = [f"    {fmt_delta(a.delta_first_us)} ({fmt_delta(a.delta_prev_us)})" for a in arrows]
    gutter = max(len(s) for s in gut1 + gut2) + 2
    labels = [_label(a, g) for a in arrows]
    ncols = len(ladder.columns)
    spacing = max(MIN_SPACING, min(MAX_SPACING, max(max(len(s) for s in labels) + 6,
                                                    max(len(c.label) for c in ladder.columns) + 3)))
    half = (spacing - 1) // 2
    notes = [" ".join(x for x in (a.proto if a.message.proto != 1 else "", a.media_summary) if x)
             for a in arrows]
    note_w = max((len(n) for n in notes), default=0)

    # fit: shrink the spacing, then fold the columns that do not fit into the last lane
    lanes = ncols
    folded: list[str] = []
    if width is not None:
        room = width - gutter - half - 1
        if ncols > 1 and (ncols - 1) * spacing > room:
            spacing = max(MIN_SPACING, room // (ncols - 1))
            half = (spacing - 1) // 2
            room = width - gutter - half - 1
        if ncols > 1 and (ncols - 1) * spacing > room:
            lanes = max(2, room // spacing + 1)
            folded = [c.key for c in ladder.columns[lanes - 1:]]
    lane_of = [min(i, lanes - 1) for i in range(ncols)]
    xs = [gutter + half + k * spacing for k in range(lanes)]
    note_x = xs[-1] + 3
    loops = [xs[lane_of[a.src]] + 8 + len(labels[i]) + len(notes[i])
             for i, a in enumerate(arrows) if lane_of[a.src] == lane_of[a.dst]]
    title_end = max(xs[k] + (len(c.label) + 1) // 2 + 1 for k, c in enumerate(ladder.columns[:lanes]))
    total = max([note_x + note_w + 1, title_end, *loops])
    if width is not None:
        total = min(total, width)

    names = [c.label for c in ladder.columns[:lanes]]
    if folded:
        names[-1] = f"{g.ell} +{len(folded)}"
    # column titles, centred on their lanes, in one or two rows when they collide
    rows = [_Line(total), _Line(total)]
    for k, name in enumerate(names):
        name = _cut(name, spacing * 2 - 2, g.ell)
        row = rows[0] if (k % 2 == 0 or len(name) < spacing - 1) else rows[1]
        row.put(max(0, xs[k] - len(name) // 2), name, "head")
    out.append(rows[0].render(colour))
    if "".join(rows[1].chars).strip():
        out.append(rows[1].render(colour))
    if any(c.label != c.key for c in ladder.columns[:lanes]):  # aliases: the address below
        addresses = _Line(total)
        for k, c in enumerate(ladder.columns[:lanes]):
            if c.label != c.key and not (folded and k == lanes - 1):
                key = _cut(c.key, spacing - 1, g.ell)
                addresses.put(max(0, xs[k] - len(key) // 2), key, "dim")
        out.append(addresses.render(colour))
    lanes_line = _Line(total)
    for x in xs:
        lanes_line.put(x, g.v, "dim")
    out.append(lanes_line.render(colour))

    for i, a in enumerate(arrows):
        l1, l2 = _Line(total), _Line(total)
        for x in xs:
            l1.put(x, g.v, "dim")
            l2.put(x, g.v, "dim")
        l1.put(0, gut1[i], "dim")
        l2.put(0, gut2[i], "dim")
        style = "retrans" if a.retransmission else a.kind
        line_style = f"call{a.call_index % 5}" if len(ladder.calls) > 1 else style
        s, d = lane_of[a.src], lane_of[a.dst]
        label = labels[i]
        if folded and (a.src >= lanes - 1 or a.dst >= lanes - 1):
            # name the folded end(s) in the label
            keys = [ladder.columns[c].key for c in (a.src, a.dst) if c >= lanes - 1]
            label += " [" + "→".join(keys) + "]"
        if s == d:  # to itself (or inside the folded lane): a small loop to the right
            x = xs[s]
            l1.put(x + 1, g.h * 2 + "┐" if g is UNICODE else "--.", line_style)
            l2.put(x + 1, g.left + g.h + ("┘" if g is UNICODE else "'"), line_style)
            text = _cut(label, total - x - 5, g.ell)
            l1.put(x + 5, text, style)
            nx = x + 5 + len(text) + 2
        else:
            lo, hi = sorted((xs[s], xs[d]))
            span = hi - lo - 1
            body = g.h * span
            body = (body[:-1] + g.right) if d > s else (g.left + body[1:])
            l2.put(lo + 1, body, line_style)
            text = _cut(label, span - 1, g.ell)
            l1.put(lo + 1 + (span - len(text)) // 2, text, style)
            nx = note_x
        if notes[i] and total - nx >= 16:
            l1.put(nx, _cut(notes[i], total - nx, g.ell), "dim")
        out.append(l1.render(colour))
        out.append(l2.render(colour))
    out.append(lanes_line.render(colour))
    out.append("")
    out.append(f"{len(arrows)} messages, {ncols} columns · (SDP) carries SDP · "
               f"{g.retrans} retransmission · times UTC, +seconds from the first message "
               "(from the previous one)")
    if folded:
        out.append(f"{len(folded)} columns folded into the last lane to fit {width} "
                   f"characters: {', '.join(folded)} (try --by host or a wider terminal)")
    return "\n".join(out) + "\n"


def render_full(ladder: Ladder, *, colour: bool = False) -> str:
    """Every message in full, each after a header line (like sngrep's raw view)."""
    out: list[str] = []
    for a in ladder.arrows:
        m = a.message
        head = (f"── #{a.index + 1} {fmt_time(a.time_us, date=True)} UTC  "
                f"{endpoint(m.source_ip, m.source_port)} → "
                f"{endpoint(m.destination_ip, m.destination_port)} {a.proto}"
                + (f"  node {m.node}" if m.node else "")
                + ("  retransmission" if a.retransmission else "") + " ──")
        out.append(f"{STYLES['bold']}{head}{RESET}" if colour else head)
        text = m.msg.decode("utf-8", "replace").replace("\r\n", "\n")
        out.append(text.rstrip("\n"))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
