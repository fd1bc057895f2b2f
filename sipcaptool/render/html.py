"""The ladder as one self-contained HTML page: the SVG drawing, and a panel showing the
whole message of the arrow clicked (or chosen with the arrow keys / j k). Styles,
script and every message are inline: the file opens offline, from a mail attachment or
a ticket, and needs no network access."""

from __future__ import annotations

import json
from html import escape

from .flow import Ladder, endpoint, fmt_time, summary_line
from .svg import CALL_COLOURS, render_svg

__all__ = ["render_html"]

# nothing may be fetched: the page is whole in itself
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #24292f; background: #f6f8fa; }
header { padding: 10px 16px; background: #24292f; color: #f6f8fa; }
header h1 { font-size: 15px; margin: 0 0 4px 0; font-weight: 600; }
header .call { font-size: 12.5px; margin: 2px 0; font-family: "DejaVu Sans Mono", Menlo, monospace; }
header .dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
main { display: flex; align-items: flex-start; gap: 12px; padding: 12px; }
#ladder { flex: 0 1 auto; overflow: auto; background: #fff; border: 1px solid #d0d7de;
          border-radius: 6px; max-height: calc(100vh - 110px); }
#ladder .arrow { cursor: pointer; }
aside { flex: 1 1 min(38%, 560px); min-width: 320px; position: sticky; top: 12px; background: #fff;
        border: 1px solid #d0d7de; border-radius: 6px; max-height: calc(100vh - 110px);
        display: flex; flex-direction: column; }
aside .meta { padding: 8px 12px; border-bottom: 1px solid #d0d7de; font-size: 12.5px; }
aside .meta b { font-size: 14px; }
aside .meta table { border-collapse: collapse; margin-top: 4px; }
aside .meta td { padding: 1px 10px 1px 0; vertical-align: top; }
aside .meta td:first-child { color: #57606a; }
aside pre { margin: 0; padding: 10px 12px; overflow: auto; font-size: 12px; line-height: 1.45;
            font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap;
            word-break: break-all; }
aside pre .start { font-weight: bold; color: #1f5fbf; }
aside pre .hname { color: #8250df; }
aside pre .body { color: #1a7f37; }
.hint { color: #57606a; font-size: 12px; padding: 0 12px 8px 12px; }
footer { padding: 0 16px 12px 16px; font-size: 12px; color: #57606a; }
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("sc-messages").textContent);
  var arrows = Array.prototype.slice.call(document.querySelectorAll("#ladder .arrow"));
  var meta = document.getElementById("sc-meta");
  var pre = document.getElementById("sc-msg");
  var current = -1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function showMessage(text) {
    pre.textContent = "";
    var cut = text.search(/\r?\n\r?\n/);
    var head = cut < 0 ? text : text.slice(0, cut);
    var body = cut < 0 ? "" : text.slice(cut);
    head.split(/\r?\n/).forEach(function (line, n) {
      if (n === 0) {
        pre.appendChild(el("span", "start", line));
      } else {
        var colon = line.indexOf(":");
        if (colon > 0) {
          pre.appendChild(el("span", "hname", line.slice(0, colon)));
          pre.appendChild(document.createTextNode(line.slice(colon)));
        } else {
          pre.appendChild(document.createTextNode(line));
        }
      }
      pre.appendChild(document.createTextNode("\n"));
    });
    if (body) { pre.appendChild(el("span", "body", body.replace(/^\r?\n\r?\n/, "\n"))); }
  }

  function select(i) {
    if (i < 0 || i >= data.length) { return; }
    if (current >= 0) { arrows[current].classList.remove("selected"); }
    current = i;
    var a = arrows[i];
    a.classList.add("selected");
    var m = data[i];
    meta.textContent = "";
    meta.appendChild(el("b", "", "#" + (i + 1) + "  " + m.label));
    var t = el("table");
    [["time", m.time + " UTC"], ["from first", m.delta_first + " s"],
     ["from previous", m.delta_prev + " s"], ["from", m.src], ["to", m.dst],
     ["transport", m.proto], ["Call-ID", m.callid], ["CSeq", m.cseq], ["node", m.node],
     ["SDP", m.media], ["note", m.retransmission ? "retransmission" : ""]]
      .forEach(function (row) {
        if (!row[1]) { return; }
        var tr = el("tr");
        tr.appendChild(el("td", "", row[0]));
        tr.appendChild(el("td", "", row[1]));
        t.appendChild(tr);
      });
    meta.appendChild(t);
    showMessage(m.msg);
    var r = a.getBoundingClientRect(), b = box.getBoundingClientRect();
    if (r.top < b.top || r.bottom > b.bottom) { a.scrollIntoView({block: "nearest"}); }
  }

  // a ladder a little wider than its box is scaled to fit; a much wider one scrolls
  var box = document.getElementById("ladder");
  var svg = box.querySelector("svg");
  function fit() {
    if (!svg) { return; }
    var natural = svg.width.baseVal.value, room = box.clientWidth - 2;
    var scale = natural > room && room / natural >= 0.7 ? room / natural : 1;
    svg.style.width = (natural * scale) + "px";
    svg.style.height = (svg.height.baseVal.value * scale) + "px";
  }
  fit();
  window.addEventListener("resize", fit);

  arrows.forEach(function (a, i) {
    a.addEventListener("click", function () { select(i); });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "ArrowDown" || ev.key === "j") { select(current + 1); ev.preventDefault(); }
    if (ev.key === "ArrowUp" || ev.key === "k") { select(Math.max(0, current - 1)); ev.preventDefault(); }
  });
  document.body.setAttribute("data-arrows", String(arrows.length));
  var linked = /^#msg-(\d+)$/.exec(window.location.hash);
  if (arrows.length) { select(linked ? Math.min(Math.max(+linked[1] - 1, 0), arrows.length - 1) : 0); }
  window.addEventListener("hashchange", function () {
    var h = /^#msg-(\d+)$/.exec(window.location.hash);
    if (h) { select(+h[1] - 1); }
  });
  document.body.setAttribute("data-ready", "1");
})();
"""


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element (no "</script>", no "<!--")."""
    return (json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026"))


def render_html(ladder: Ladder, *, title: str | None = None) -> str:
    from .json import arrow_dict

    calls = ladder.calls
    title = title or ("Call flow " + ", ".join(c.callid for c in calls))
    heads = []
    for ci, c in enumerate(calls):
        dot = f'<span class="dot" style="background:{CALL_COLOURS[ci % len(CALL_COLOURS)]}"></span>'
        legs = f" · legs: {escape(', '.join(c.legs))}" if c.legs else ""
        heads.append(f'<div class="call">{dot}<b>{escape(c.callid)}</b>{legs} · '
                     f"{escape(summary_line(c))}</div>")
    messages = []
    for a in ladder.arrows:
        d = arrow_dict(a, ladder, with_msg=True)
        m = a.message
        messages.append({"label": a.label, "time": fmt_time(a.time_us, date=True),
                         "delta_first": d["delta_first"], "delta_prev": d["delta_prev"],
                         "src": endpoint(m.source_ip, m.source_port),
                         "dst": endpoint(m.destination_ip, m.destination_port),
                         "proto": a.proto, "callid": m.callid, "cseq": m.cseq, "node": m.node,
                         "media": a.media_summary, "retransmission": a.retransmission,
                         "msg": d["msg"]})
    svg = render_svg(ladder, standalone=False)
    first = f"first message {fmt_time(ladder.first_us, date=True)} UTC · " if ladder.arrows else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{escape(title)}</h1>
{"".join(heads)}
</header>
<main>
<div id="ladder">
{svg}</div>
<aside><div class="meta" id="sc-meta"></div>
<div class="hint">click an arrow, or use ↑ ↓ (j k), to read its message;
#msg-N in the address opens message N</div>
<pre id="sc-msg"></pre></aside>
</main>
<footer>{first}{len(ladder.arrows)} messages · {len(ladder.columns)} columns ·
SDP: carries SDP · ↻ dashed: retransmission · +seconds from the first message (from the previous one) ·
made by sipcaptool flow</footer>
<script type="application/json" id="sc-messages">{_script_json(messages)}</script>
<script>{JS}</script>
</body>
</html>
"""
