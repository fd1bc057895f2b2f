"""The HTML and SVG ladders of ``sipcaptool flow`` in a real browser: headless Chromium
(Debian package ``chromium``, installed by .ci/run).

Each page is loaded from a file, its DOM dumped after the scripts ran: no console message
at all (errors, CSP refusals), as many arrows as messages, the page's script finished
(``data-ready``) and the message panel filled; a screenshot is taken (set
``SIPCAPTOOL_SCREENSHOTS=DIR`` to keep them). The captures are real: examples/call.pcap
and the two nanosecond captures of tests/pcaps replayed with ``sipcaptool replay``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import count

ROOT = Path(__file__).resolve().parents[1]
# the OPTIONS in both nanosecond captures: stored twice, drawn as retransmissions
CAPTURES = [ROOT / "examples" / "call.pcap", ROOT / "tests" / "pcaps" / "nanosecond.pcap",
            ROOT / "tests" / "pcaps" / "nanosecond-pcapng.pcapng"]
CALLS = [f"{n}-12284@127.0.0.1" for n in (1, 2)] + ["opt-7@10.0.2.1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?[:\]]|Uncaught|Refused to", re.I)


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        msg = "chromium not installed (Debian package chromium; .ci/run installs it)"
        if os.environ.get("SIPCAPTOOL_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return CHROMIUM


def browse(chromium: str, url: str, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """(DOM after the scripts ran, console lines) of ``url`` in headless Chromium
    (``extra`` options instead of ``--dump-dom``, e.g. a screenshot)."""
    p = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
         *(extra or ("--dump-dom",)), url],
        capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, [ln for ln in p.stderr.splitlines() if CONSOLE.search(ln)]


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    d = tmp_path_factory.mktemp("browser")
    url = "sqlite:///" + str(d / "capture.db")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}

    def sipcaptool(*args: str) -> None:
        p = subprocess.run([sys.executable, "-m", "sipcaptool", *args], capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=60)
        assert p.returncode == 0, p.stderr

    sipcaptool("replay", "-q", "--db", url, *map(str, CAPTURES))
    html, svg = d / "flow.html", d / "flow.svg"
    sipcaptool("flow", *CALLS, "--alias", "127.0.0.1:15061=uac", "-o", str(html), "--db", url)
    sipcaptool("flow", *CALLS, "-o", str(svg), "--db", url)
    import sqlite3
    conn = sqlite3.connect(str(d / "capture.db"))
    try:
        n = conn.execute("SELECT COUNT(*) FROM sip_capture WHERE callid IN (?, ?, ?)",
                         CALLS).fetchone()[0]
    finally:
        conn.close()
    assert 0 < n < count(url, "sip_capture")
    return html, svg, n


def _keep(shot: Path) -> None:
    keep = os.environ.get("SIPCAPTOOL_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, keep)


def test_the_detector_sees_console_errors(chromium: str, tmp_path: Path) -> None:
    """The check below means something: a page that logs and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><p>x</p><script>console.error("boom"); nope();</script>')
    _dom, console = browse(chromium, bad.as_uri(), tmp_path / "profile")
    assert any("boom" in ln for ln in console) and any("nope" in ln for ln in console)


def test_html_flow_renders_without_errors(chromium: str, pages: tuple[Path, Path, int],
                                          tmp_path: Path) -> None:
    html, _svg, messages = pages
    dom, console = browse(chromium, html.as_uri(), tmp_path / "profile")
    assert console == []
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    assert f'data-arrows="{messages}"' in dom
    assert dom.count('<g class="arrow') == messages
    # the panel shows the first message (the OPTIONS, 2025), as the script selected it
    assert len(re.findall(r'<g class="arrow[^"]*selected"', dom)) == 1
    assert '<g class="arrow selected" id="msg-1"' in dom
    assert re.search(r"<b>#1\s+OPTIONS</b>", dom)
    assert dom.count('<g class="arrow retrans') == 2
    # a link to a message opens it: #msg-7 is the first sipp call's 200 OK
    dom, console = browse(chromium, html.as_uri() + "#msg-7", tmp_path / "profile")
    assert console == []
    assert re.search(r"<b>#7\s+200 OK</b>", dom)
    assert "SIP/2.0 200 OK" in dom and "m=audio 6000 RTP/AVP 0" in dom


def test_html_flow_screenshot(chromium: str, pages: tuple[Path, Path, int],
                              tmp_path: Path) -> None:
    html, _svg, _n = pages
    shot = tmp_path / "flow-html.png"
    _dom, console = browse(chromium, html.as_uri(), tmp_path / "profile",
                           f"--screenshot={shot}", "--window-size=1400,1000",
                           "--hide-scrollbars")
    assert console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    _keep(shot)


def test_svg_flow_renders_without_errors(chromium: str, pages: tuple[Path, Path, int],
                                         tmp_path: Path) -> None:
    _html, svg, messages = pages
    dom, console = browse(chromium, svg.as_uri(), tmp_path / "profile")
    assert console == []
    assert dom.count('<g class="arrow') == messages
    assert dom.count("<title>") == messages
    shot = tmp_path / "flow-svg.png"
    _dom, console = browse(chromium, svg.as_uri(), tmp_path / "profile",
                           f"--screenshot={shot}", "--window-size=1200,900")
    assert console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _keep(shot)
