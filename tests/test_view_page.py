"""`davel view`: the page's HTML (self-contained, escaped) and its behaviour in headless Chromium.

The browser tests need a Chromium (Debian's ``chromium`` package, or
``DAVEL_CHROMIUM=/path/to/chromium``) and the ``playwright`` package. Without
them they SKIP, saying how to get a browser, so that the README's test command
passes on a fresh machine; with ``DAVEL_REQUIRE_BROWSER=1`` (CI sets it in
``.ci/run``) they FAIL instead: there, a page nobody ran in a browser is not tested.

The browser is ``DAVEL_CHROMIUM`` when that is set, and only it: a path that
is not a file means "no browser", never another Chromium found elsewhere
(which also makes a machine that has one behave as one that has none, e.g.
``DAVEL_CHROMIUM=/nonexistent``). Otherwise ``chromium`` or
``chromium-browser`` on ``PATH``, then ``/usr/bin/chromium``.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from davel.cli import app as davel_app
from davel.viewer.page import asset, build_page, script_json, write_page
from davel.viewer.results import load_results

from media_files import write_video

runner = CliRunner()
XSS = "<img src=x onerror=alert(1)>"
CLOSER = "</script><script>alert(2)</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# (label, label_id, start, end, score), inside the 3 s test video; time order = page index
EVENTS = [
    ("church bell", 12, 0.0, 0.5, 0.64),
    ("dog barking", 78, 0.2, 1.1, 0.92),
    ("dog barking", 78, 1.2, 2.0, 0.81),
    ("church bell", 12, 1.6, 2.9, 0.33),
    (XSS, 3, 2.1, 2.8, 0.55),
    (CLOSER, 4, 2.5, 2.9, 0.15),
]


def make_result(video: str, events=EVENTS, duration: float = 3.0) -> dict:
    return {"video": video, "duration": duration, "model": "ccnet",
            "events": [{"label": name, "label_id": i, "start": s, "end": e, "score": sc}
                       for name, i, s, e, sc in events]}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    """Two 3 s VP9/WebM clips (every Chromium build plays VP9; H.264 depends on the build)."""
    d = tmp_path_factory.mktemp("media")
    for name in ("clip.webm", "other clip #2.webm"):
        write_video(d / name, 60, fps=20, audio=None, size=(160, 120), codec="libvpx-vp9")
    return d


def cli() -> typer.Typer:
    return davel_app


def make_page(tmp_path: Path, media_dir: Path, *extra: str, results: list[dict] | None = None) -> Path:
    results = results or [make_result("/recorded/on/another/machine/clip.webm")]
    res_file = tmp_path / "events.jsonl"
    res_file.write_text("".join(json.dumps(r) + "\n" for r in results))
    page = tmp_path / "site" / "page.html"
    res = runner.invoke(cli(), ["view", str(res_file), "-o", str(page), *extra])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(page)
    return page


def data_of(html_text: str) -> dict:
    m = re.search(r'<script type="application/json" id="davel-data">(.*?)</script>', html_text, re.S)
    return json.loads(m.group(1))


# ------------------------------------------------------------------ the HTML itself
def test_page_is_one_self_contained_file(tmp_path, media_dir):
    page = make_page(tmp_path, media_dir, "--video", str(media_dir / "clip.webm"))
    text = page.read_text(encoding="utf-8")
    assert os.listdir(page.parent) == ["page.html"]  # no side files, no temp file left
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert "default-src 'none'" in text  # the page may not fetch anything
    assert asset("viewer.js") in text and asset("viewer.css") in text
    data = data_of(text)
    [video] = data["videos"]
    # Linked relative to the page's folder, so page and video can move together.
    assert video["src"] == os.path.relpath(media_dir / "clip.webm", page.parent).replace(os.sep, "/")
    assert video["duration"] == 3.0 and len(video["events"]) == 6


def test_user_text_never_becomes_html(tmp_path, media_dir):
    odd = tmp_path / "v" / "<b>odd<i> & 'name'.webm"
    odd.parent.mkdir()
    shutil.copy(media_dir / "clip.webm", odd)
    page = make_page(tmp_path, media_dir, "--video", str(odd),
                     results=[make_result(str(odd))])
    text = page.read_text(encoding="utf-8")
    assert "<img" not in text and "<b>odd" not in text and "alert(2)</script>" not in text
    assert text.count("</script>") == 2  # the data block and the script: nothing closed early
    assert "<title>&lt;b&gt;odd&lt;i&gt; &amp; &#x27;name&#x27;.webm" in text
    video = data_of(text)["videos"][0]
    assert {e["label"] for e in video["events"]} >= {XSS, CLOSER}
    assert video["name"] == odd.name
    assert "%3Cb%3Eodd" in video["src"] and "%20%26%20" in video["src"]


def test_script_json_cannot_close_its_element():
    text = script_json({"a": "</script><!-- <script>", "b": "\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- <script>", "b": "\u2028&"}


def test_page_script_builds_no_html_from_strings():
    js = asset("viewer.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "http"):
        assert sink not in js


def test_embed_and_its_limit(tmp_path, media_dir):
    page = make_page(tmp_path, media_dir, "--video", str(media_dir / "clip.webm"), "--embed")
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/octet-stream" id="davel-video-0" data-mime="video/webm">'
                  r"([A-Za-z0-9+/=]+)</script>", text)
    assert m and len(m.group(1)) > 1000
    assert data_of(text)["videos"][0]["src"] is None

    out = tmp_path / "big.html"
    res = runner.invoke(cli(), ["view", str(tmp_path / "events.jsonl"), "-o", str(out), "--embed",
                                "--embed-limit", "0.001", "--video", str(media_dir / "clip.webm")])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "over the --embed limit of 0.001 MB" in lines[0]
    assert not out.exists()


def test_video_needed_and_decodable(tmp_path, media_dir):
    res_file = tmp_path / "r.json"
    res_file.write_text(json.dumps(make_result("/nowhere/clip.webm")))
    res = runner.invoke(cli(), ["view", str(res_file), "-o", str(tmp_path / "p.html")])
    assert res.exit_code == 1 and "pass it with --video" in res.stderr
    # A folder of videos: each result finds its own file by name.
    page = tmp_path / "p.html"
    write_page(res_file, page, videos=[media_dir])
    assert data_of(page.read_text())["videos"][0]["src"].endswith("clip.webm")


def test_several_videos_listed(tmp_path, media_dir):
    results = [make_result("clip.webm"), make_result("other clip #2.webm", EVENTS[:2], 2.5)]
    page = tmp_path / "p.html"
    text = build_page(load_results(results), [media_dir / "clip.webm", media_dir / "other clip #2.webm"], page)
    videos = data_of(text)["videos"]
    assert [v["name"] for v in videos] == ["clip.webm", "other clip #2.webm"]
    assert videos[1]["src"].endswith("other%20clip%20%232.webm")
    # A label keeps its colour from video to video.
    colours = [{lane["label"]: lane["colour"] for lane in v["lanes"]} for v in videos]
    assert colours[0]["dog barking"] == colours[1]["dog barking"]


# ------------------------------------------------------------------ in a real browser
GET_CHROMIUM = "apt-get install chromium, or set DAVEL_CHROMIUM=/path/to/chromium"


def find_chromium() -> str | None:
    """The browser to drive (see the module doc); None when there is none."""
    named = os.environ.get("DAVEL_CHROMIUM")
    if named:  # the one the user named, or none: never a fall-back to another
        return named if Path(named).is_file() else None
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def no_browser(reason: str) -> None:
    """Skip the browser tests, or fail them when ``DAVEL_REQUIRE_BROWSER=1`` (CI)."""
    if os.environ.get("DAVEL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (DAVEL_REQUIRE_BROWSER=1 makes this an error)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium context with a fresh profile; without a browser or playwright the
    tests using it skip, or fail under ``DAVEL_REQUIRE_BROWSER=1``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("the browser tests need playwright: pip install '.[test]'")
    exe = find_chromium()
    if exe is None:
        named = os.environ.get("DAVEL_CHROMIUM")
        where = f"DAVEL_CHROMIUM={named} is not a file" if named else "Chromium not found"
        no_browser(f"{where}: {GET_CHROMIUM}")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=exe, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1200, "height": 900})
        yield context
        context.close()


# Predicates below are arrow functions, never bare expressions: Playwright eval()s an
# expression string, which the page's Content-Security-Policy rightly refuses.
def open_page(browser, page_path: Path):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(page_path.as_uri())
    page.wait_for_function("() => document.getElementById('player').readyState >= 2", timeout=15000)
    return page, problems


def visible_events(page) -> int:
    return page.locator(".ev:visible").count()


def test_page_in_chromium(browser, tmp_path, media_dir):
    page_path = make_page(tmp_path, media_dir, "--video", str(media_dir / "clip.webm"))
    page, problems = open_page(browser, page_path)
    player = "document.getElementById('player')"

    assert page.locator(".ev").count() == len(EVENTS)
    assert page.locator("#events tbody tr").count() == len(EVENTS)
    assert page.evaluate(f"{player}.duration") == pytest.approx(3.0, abs=0.06)

    # Labels are text: the markup-looking ones show literally and nothing ran.
    assert page.evaluate("document.querySelectorAll('img, #timeline script, #events script').length") == 0
    shown = page.evaluate("[...document.querySelectorAll('#events td')].map(td => td.textContent.trim())")
    assert XSS in shown and CLOSER in shown

    # Clicking an event seeks to its start and plays. The video plays on at once, so
    # currentTime is read when the seek completes (in the page, not a round trip later).
    page.evaluate(f"window.seekedAt = null; {player}.addEventListener('seeked', "
                  f"() => {{ window.seekedAt = {player}.currentTime; }}, {{once: true}})")
    start = EVENTS[2][2]
    page.locator('.ev[data-index="2"]').click()
    page.wait_for_function("() => window.seekedAt !== null", timeout=5000)
    assert page.evaluate("window.seekedAt") == pytest.approx(start, abs=0.1)
    page.wait_for_function(f"() => !{player}.paused", timeout=5000)
    assert page.evaluate(f"{player}.currentTime") >= start - 0.05  # playing on from there
    # The same through the table, read in the very task of the click.
    row_start = page.evaluate(f"""() => {{
        document.querySelector('#events tbody tr[data-index="4"]').click();
        return {player}.currentTime; }}""")
    assert row_start == pytest.approx(EVENTS[4][2], abs=0.1)
    page.locator('.ev[data-index="2"]').click()
    page.locator('#events tbody tr.selected').wait_for()  # the table follows the timeline

    # The cursor follows playback.
    page.wait_for_timeout(300)
    page.evaluate(f"{player}.pause()")
    page.wait_for_timeout(100)
    where = page.evaluate("""() => {
        const c = document.querySelector('.tl-cursor').getBoundingClientRect();
        const t = document.querySelector('.tl-row[data-lane] .tl-track').getBoundingClientRect();
        const v = document.getElementById('player');
        return [c.left + c.width / 2, t.left + t.width * v.currentTime / 3.0, v.currentTime]; }""")
    assert where[2] > start + 0.1
    assert where[0] == pytest.approx(where[1], abs=3)

    # Hovering shows label, score, start and end.
    page.locator('.ev[data-index="1"]').hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    assert all(s in tip.inner_text() for s in ("dog barking", "0.920", "0:00.20", "0:01.10"))

    # The score slider hides weak events, in the timeline and in the table, live.
    page.locator("#score").fill("0.5")
    kept = sum(e[4] >= 0.5 for e in EVENTS)
    assert visible_events(page) == kept == 4
    assert page.locator("#events tbody tr:visible").count() == kept
    assert page.locator('.ev[data-index="3"]').is_hidden()  # church bell 0.33
    assert page.locator("#count").inner_text() == f"{kept} of {len(EVENTS)} events shown"

    # The label filter too.
    page.locator('#label-list input[data-lane="id:12"]').uncheck()
    assert visible_events(page) == kept - 1
    page.locator("#labels-all").click()
    assert visible_events(page) == kept

    # Sorting the table by score puts the best first; time order is back on "start".
    page.locator('#events th[data-key="score"] button').click()
    first = page.locator("#events tbody tr:visible").first.locator("td").last.inner_text()
    assert first == "0.920"
    page.locator('#events th[data-key="start"] button').click()
    assert page.locator("#events tbody tr:visible").first.locator("td").nth(2).inner_text() == "0:00.00"

    # Keyboard: n = next visible event, p = previous.
    page.evaluate(f"{player}.pause(); {player}.currentTime = 0.1")
    page.wait_for_function(f"() => !{player}.seeking")
    page.locator("h1").click()  # focus off the slider
    page.keyboard.press("n")
    page.wait_for_function(f"() => Math.abs({player}.currentTime - 0.2) < 0.1 && !{player}.seeking", timeout=5000)
    page.evaluate(f"{player}.pause()")
    page.keyboard.press("n")
    page.wait_for_function(f"() => Math.abs({player}.currentTime - 1.2) < 0.1 && !{player}.seeking", timeout=5000)
    page.evaluate(f"{player}.pause()")
    page.keyboard.press("p")
    page.wait_for_function(f"() => Math.abs({player}.currentTime - 0.2) < 0.1 && !{player}.seeking", timeout=5000)
    page.evaluate(f"{player}.pause()")

    png = page.screenshot(full_page=True)
    shot = os.environ.get("DAVEL_VIEW_SCREENSHOT")
    if shot:
        Path(shot).write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert pixels.shape[1] == 1200 and pixels.var() > 200, pixels.var()
    assert problems == []


def test_several_videos_in_chromium(browser, tmp_path, media_dir):
    results = [make_result("clip.webm"), make_result("other clip #2.webm", EVENTS[:2], 2.5)]
    page_path = make_page(tmp_path, media_dir, "--video", str(media_dir), results=results)
    page, problems = open_page(browser, page_path)
    buttons = page.locator("#video-list button")
    assert buttons.count() == 2 and page.locator("#videos").is_visible()
    assert page.locator(".ev").count() == len(EVENTS)
    buttons.nth(1).click()
    page.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=10000)
    assert page.locator("#title").inner_text() == "other clip #2.webm"
    assert page.locator(".ev").count() == 2
    assert page.evaluate("document.getElementById('player').currentSrc").endswith("other%20clip%20%232.webm")
    assert problems == []


def test_embedded_video_plays_in_chromium(browser, tmp_path, media_dir):
    page_path = make_page(tmp_path, media_dir, "--video", str(media_dir / "clip.webm"), "--embed")
    (media_dir / "clip.webm").stat()  # the page does not need it any more:
    moved = tmp_path / "elsewhere.html"
    shutil.move(page_path, moved)
    page, problems = open_page(browser, moved)
    assert page.evaluate("document.getElementById('player').currentSrc").startswith("data:video/webm;base64,")
    page.locator('.ev[data-index="1"]').click()
    page.wait_for_function("() => Math.abs(document.getElementById('player').currentTime - 0.2) < 0.1")
    assert problems == []
