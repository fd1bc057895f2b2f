"""The ladder as SVG: one lifeline per column, one ``<g class="arrow">`` per message (its
whole text in a ``<title>``, so a viewer shows it on hover), times and deltas on the left,
the SDP media summary under INVITE/200. Self-contained: styles inline, no fonts or
scripts fetched. ``html.py`` embeds the same drawing and adds the message panel.
"""

from __future__ import annotations

from html import escape

from .flow import Arrow, Ladder, endpoint, fmt_delta, fmt_time, summary_line

__all__ = ["render_svg", "CALL_COLOURS", "KIND_COLOURS"]

CHAR_W = 7.3          # width of a character of the 12px monospace font
ROW_H = 42            # height of one message row
HEAD_H = 64           # column titles
GUTTER = 214          # times and deltas
MIN_SPACING = 170
KIND_COLOURS = {"request": "#1f5fbf", "1xx": "#9a6700", "2xx": "#1a7f37", "3xx": "#0b7285",
                "4xx": "#cf222e", "5xx": "#cf222e", "6xx": "#cf222e"}
RETRANS_COLOUR = "#8250df"
CALL_COLOURS = ("#1f5fbf", "#bf3989", "#0b7285", "#9a6700", "#1a7f37", "#6e40c9")

STYLE = """
.sc-flow { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.sc-flow .bg { fill: #ffffff; }
.sc-flow .head rect { fill: #f3f5f8; stroke: #8c959f; rx: 4; }
.sc-flow .head text { font-weight: bold; fill: #24292f; }
.sc-flow .head .sub { font-weight: normal; fill: #57606a; font-size: 11px; }
.sc-flow .life { stroke: #afb8c1; stroke-dasharray: 4 3; }
.sc-flow .time { fill: #24292f; }
.sc-flow .delta { fill: #6e7781; font-size: 11px; }
.sc-flow .label { font-weight: bold; }
.sc-flow .media { fill: #57606a; font-size: 11px; }
.sc-flow .badge rect { fill: #ddf4ff; stroke: #54aeff; }
.sc-flow .badge text { fill: #0969da; font-size: 10px; font-weight: bold; }
.sc-flow .arrow .hit { fill: transparent; }
.sc-flow .arrow:hover .hit { fill: #f6f8fa; }
.sc-flow .arrow.selected .hit { fill: #fff8c5; }
.sc-flow .arrow.retrans line, .sc-flow .arrow.retrans path { stroke-dasharray: 6 3; }
.sc-flow .callbar { opacity: 0.85; }
"""


def _x(k: int, spacing: float) -> float:
    return GUTTER + spacing / 2 + k * spacing


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start",
          fill: str | None = None) -> str:
    attrs = f' class="{cls}"' if cls else ""
    if anchor != "start":
        attrs += f' text-anchor="{anchor}"'
    if fill:
        attrs += f' fill="{fill}"'
    return f'<text x="{x:.1f}" y="{y:.1f}"{attrs}>{escape(text)}</text>'


def _colour(a: Arrow) -> str:
    return RETRANS_COLOUR if a.retransmission else KIND_COLOURS[a.kind]


def arrow_title(a: Arrow) -> str:
    m = a.message
    return (f"#{a.index + 1} {fmt_time(a.time_us, date=True)} UTC "
            f"{endpoint(m.source_ip, m.source_port)} -> "
            f"{endpoint(m.destination_ip, m.destination_port)} {a.proto}\n\n"
            + m.msg.decode("utf-8", "replace"))


def layout(ladder: Ladder, heads: bool = True) -> tuple[float, float, float, float]:
    """(spacing, width, height, top of the first row) of the drawing."""
    longest = max((len(a.label) + (5 if a.sdp else 0) + (2 if a.retransmission else 0)
                   for a in ladder.arrows), default=0)
    media = max((len(a.media_summary) for a in ladder.arrows), default=0)
    titles = max((len(c.label) for c in ladder.columns), default=0)
    spacing = max(MIN_SPACING, (longest + 4) * CHAR_W, (titles + 3) * CHAR_W,
                  min(media + 2, 34) * CHAR_W)
    ncols = max(1, len(ladder.columns))
    width = GUTTER + ncols * spacing + 16
    top = (len(ladder.calls) * 34 + 16 if heads else 4) + HEAD_H
    height = top + len(ladder.arrows) * ROW_H + 24
    return spacing, width, height, top


def render_svg(ladder: Ladder, *, standalone: bool = True) -> str:
    """The drawing; ``standalone`` adds the XML declaration (an ``.svg`` file), a
    header per call and the message text of every arrow as its ``<title>`` (the HTML
    page has its own header and message panel)."""
    spacing, width, height, top = layout(ladder, heads=standalone)
    out: list[str] = []
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="sc-flow" width="{width:.0f}" '
               f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">')
    out.append(f"<style>{STYLE}</style>")
    out.append("<defs>")
    for name, colour in [*KIND_COLOURS.items(), ("retrans", RETRANS_COLOUR)]:
        out.append(f'<marker id="head-{name}" viewBox="0 0 10 10" refX="10" refY="5" '
                   f'markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="9" '
                   f'orient="auto-start-reverse">'
                   f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    out.append("</defs>")
    out.append(f'<rect class="bg" x="0" y="0" width="{width:.0f}" height="{height:.0f}"/>')

    # one header line per call
    y = 22.0
    for ci, call in enumerate(ladder.calls if standalone else ()):
        colour = CALL_COLOURS[ci % len(CALL_COLOURS)]
        out.append(f'<g class="callhead"><rect x="10" y="{y - 12:.0f}" width="6" height="28" '
                   f'fill="{colour}"/>')
        out.append(_text(24, y, f"Call-ID {call.callid}", "label")
                   + (_text(24 + (len(call.callid) + 10) * CHAR_W, y,
                            "legs: " + ", ".join(call.legs), "delta") if call.legs else ""))
        out.append(_text(24, y + 14, summary_line(call), "delta") + "</g>")
        y += 34

    # column titles and lifelines
    ytitle = top - HEAD_H + 10
    bottom = height - 14
    out.append('<g class="head">')
    for k, c in enumerate(ladder.columns):
        x = _x(k, spacing)
        w = spacing - 18
        out.append(f'<rect x="{x - w / 2:.1f}" y="{ytitle:.0f}" width="{w:.1f}" height="38"/>')
        label = c.label if len(c.label) * CHAR_W < w - 6 else c.label[:int((w - 6) / CHAR_W) - 1] + "…"
        if c.label != c.key:
            out.append(_text(x, ytitle + 16, label, anchor="middle"))
            out.append(_text(x, ytitle + 31, c.key, "sub", anchor="middle"))
        else:
            out.append(_text(x, ytitle + 24, label, anchor="middle"))
        out.append(f'<line class="life" x1="{x:.1f}" y1="{ytitle + 38:.0f}" x2="{x:.1f}" '
                   f'y2="{bottom:.0f}"/>')
    out.append("</g>")
    if ladder.arrows:
        out.append(_text(12, top - 8, f"{fmt_time(ladder.first_us, date=True)[:10]} UTC",
                         "delta"))

    day = fmt_time(ladder.first_us, date=True)[:10]
    for a in ladder.arrows:
        stamp = fmt_time(a.time_us, date=True)
        out.append(_arrow(a, top + a.index * ROW_H, spacing, width, len(ladder.calls) > 1,
                          standalone, stamp if stamp[:10] != day else stamp[11:]))
        day = stamp[:10]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _arrow(a: Arrow, y0: float, spacing: float, width: float, many_calls: bool,
           with_title: bool, stamp: str) -> str:
    """One message row; ``stamp`` is its time (with the date when the day changed)."""
    colour = _colour(a)
    marker = "retrans" if a.retransmission else a.kind
    cls = "arrow" + (" retrans" if a.retransmission else "") + (" sdp" if a.sdp else "")
    parts = [f'<g class="{cls}" id="msg-{a.index + 1}" data-i="{a.index}" data-kind="{a.kind}">']
    if with_title:
        parts.append(f"<title>{escape(arrow_title(a))}</title>")
    parts.append(f'<rect class="hit" x="0" y="{y0:.0f}" width="{width:.0f}" height="{ROW_H}"/>')
    if many_calls:
        parts.append(f'<rect class="callbar" x="2" y="{y0 + 4:.0f}" width="4" height="{ROW_H - 8}" '
                     f'fill="{CALL_COLOURS[a.call_index % len(CALL_COLOURS)]}"/>')
    parts.append(_text(12 + 3 * CHAR_W, y0 + 17, str(a.index + 1), "delta", anchor="end"))
    parts.append(_text(12 + 4 * CHAR_W, y0 + 17, stamp, "time"))
    parts.append(_text(12 + 4 * CHAR_W, y0 + 32,
                       f"{fmt_delta(a.delta_first_us)} ({fmt_delta(a.delta_prev_us)})", "delta"))
    ya = y0 + 24
    x1, x2 = _x(a.src, spacing), _x(a.dst, spacing)
    label = a.label + (" ↻" if a.retransmission else "")
    if a.src == a.dst:
        loop = 36
        parts.append(f'<path d="M{x1 + 2:.1f},{ya - 8:.0f} h{loop} v16 h-{loop - 2}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.6" marker-end="url(#head-{marker})"/>')
        lx, anchor = x1 + loop + 8, "start"
    else:
        parts.append(f'<line x1="{x1:.1f}" y1="{ya:.0f}" x2="{x2 + (-2 if x2 > x1 else 2):.1f}" '
                     f'y2="{ya:.0f}" stroke="{colour}" stroke-width="1.6" '
                     f'marker-end="url(#head-{marker})"/>')
        lx, anchor = (x1 + x2) / 2, "middle"
    text_w = len(label) * CHAR_W + (38 if a.sdp else 0)
    if anchor == "middle":
        start = lx - text_w / 2
    else:
        start = lx
    parts.append(_text(start, ya - 6, label, "label", fill=colour))
    if a.sdp:
        bx = start + len(label) * CHAR_W + 6
        parts.append(f'<g class="badge"><rect x="{bx:.1f}" y="{ya - 17:.0f}" width="30" height="13" '
                     f'rx="3"/>{_text(bx + 15, ya - 7, "SDP", anchor="middle")}</g>')
    if a.media:
        mx = (x1 + x2) / 2 if a.src != a.dst else lx
        parts.append(_text(mx, ya + 14, a.media_summary, "media",
                           anchor="middle" if a.src != a.dst else "start"))
    parts.append("</g>")
    return "".join(parts)
