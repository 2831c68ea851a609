"""The browser demo page in a real browser: headless Chromium (Playwright) views a demo call.

``python -m participant demo`` (server + receiver + sender on the scripted trace, the real model with
whatever weights are shipped) runs in network namespace A, Chromium in namespace B: Chromium gathers
no 127.0.0.1 ICE candidates, so the browser needs a real interface, and the namespaces made here give
it one without touching the machine's network. Playwright talks to Chromium over a pipe, which
crosses namespaces, so Chromium is started through a wrapper that enters namespace B.

Asserted: the synthesized video plays (videoWidth > 0, currentTime advances), the stats change over
time, the original pictures arrive as VP8, the max-kbps and keypoint controls are confirmed by the
sender and fewer keypoints lower the reported motion payload, the view control is confirmed, bad
uploads are refused with an error on the page (by the page and by the receiver), a good portrait is
taken, a room without a receiver says so, and the layout has no sideways scroll at a phone's width.
Screenshots go to tests/artifacts/ (page.png, page-narrow.png).
"""

from __future__ import annotations

import io
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.netns import namespace_pair, netns_unavailable_reason

pytestmark = [pytest.mark.browser, pytest.mark.netns]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
PORT = 18090
ROOM = "page"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser_ok() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


# Joins a room as a receiver that never calls anyone, and leaves after argv[3] seconds.
FLEETING_RECEIVER = """
import asyncio, json, sys
import aiohttp
async def main():
    async with aiohttp.ClientSession() as session, session.ws_connect(sys.argv[1]) as ws:
        await ws.send_str(json.dumps({"type": "join", "room": sys.argv[2], "role": "receiver"}))
        await ws.receive()
        await asyncio.sleep(float(sys.argv[3]))
asyncio.run(main())
"""


def _wait_http(prefix: list[str], url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if subprocess.run([*prefix, sys.executable, "-c", probe, url], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up within {timeout_s} s:\n{log.read_text()[-3000:]}")


def _portrait_jpeg() -> bytes:
    from PIL import Image

    from sender.portrait import default_portrait

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(default_portrait())[0:320, 100:420]).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _feedback(page: Any, control_id: str, kind: str, needle: str, timeout_s: float = 15.0) -> str:
    """Wait until the control's feedback line has class ``kind`` and contains ``needle``; its text."""
    page.wait_for_function(
        "([id, kind, needle]) => { const el = document.getElementById(id);"
        " return el.classList.contains(kind) && el.textContent.includes(needle); }",
        arg=[control_id, kind, needle], timeout=timeout_s * 1000,
    )
    return str(page.text_content(f"#{control_id}"))


def _payload_kbps(page: Any, samples: int = 4) -> float:
    """Median of the receiver's recent motion payload rate over a few stats updates."""
    values = []
    for _ in range(samples):
        time.sleep(1.0)
        value = page.evaluate("() => window.kpcall.stats && window.kpcall.stats.payload_kbps_recent")
        if value is not None:
            values.append(float(value))
    assert values, "no payload rate in the stats"
    return statistics.median(values)


def _set_keypoints(page: Any, k: int) -> str:
    page.eval_on_selector(
        "#k-range",
        "(el, k) => { el.value = k; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
        k,
    )
    return _feedback(page, "k-feedback", "ok", f"keypoints set to {k}")


def test_demo_page_in_chromium(browser_ok: None, tmp_path: Path) -> None:
    started = time.monotonic()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}  # the demo's caches stay in tmp_path
    log = tmp_path / "demo.log"
    with namespace_pair("10.233.0") as ns, open(log, "wb") as log_file:
        demo = subprocess.Popen(
            [*ns.exec_prefix(ns.a), sys.executable, "-m", "participant", "demo", "--host", ns.addr_a, "--port", str(PORT),
             "--room", ROOM, "--seconds", "900", "-v"],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://{ns.addr_a}:{PORT}"
            _wait_http(ns.exec_prefix(ns.b), url + "/healthz", 90, demo, log)
            phases = [f"demo up after {time.monotonic() - started:.1f} s"]
            # Playwright runs in a child process: its sync API drives its own asyncio loop and a node
            # driver subprocess, which hung here after the suite's asyncio tests had run in this process.
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.test_page", url, ns.a, ns.b, str(log), str(tmp_path)],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, start_new_session=True,
            )
            try:
                stdout, stderr = child.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # Playwright's driver and Chromium with it
                stdout, stderr = child.communicate()
            driver = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
            alive = "running" if demo.poll() is None else f"exited with {demo.returncode}"
            assert driver.returncode == 0, (
                f"{'; '.join(phases)}; browser part failed after {time.monotonic() - started:.1f} s (demo {alive}):\n"
                f"{driver.stdout[-3000:]}\n{driver.stderr[-6000:]}")
            print(driver.stdout)
            assert demo.poll() is None, f"the demo ended early:\n{log.read_text()[-3000:]}"
        finally:
            if demo.poll() is None:
                demo.terminate()
            try:
                demo.wait(20)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(5)
    print(f"page test took {time.monotonic() - started:.1f} s")


def _drive_page(browser: Any, url: str, ns_a: list[str], log: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/?room={ROOM}")

    # The synthesized video plays.
    try:
        page.wait_for_function(
            "() => { const v = document.getElementById('synth-video'); return v.videoWidth > 0 && v.currentTime > 0.2; }",
            timeout=90_000,
        )
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "page-failed.png"))
        raise AssertionError(f"the synthesized video did not play; demo log:\n{log.read_text()[-4000:]}") from None
    t0 = page.evaluate("() => document.getElementById('synth-video').currentTime")
    time.sleep(2.0)
    t1 = page.evaluate("() => document.getElementById('synth-video').currentTime")
    assert t1 > t0 + 1.0, (t0, t1)
    assert page.evaluate("() => document.getElementById('synth-video').videoWidth") > 0

    # Stats arrive and change over time (in the state and on the page).
    page.wait_for_function("() => window.kpcall.stats && window.kpcall.stats.payload_kbps_recent > 0", timeout=20_000)
    first = page.evaluate("() => ({...window.kpcall.stats})")
    detail_1 = page.text_content("#stat-detail")
    time.sleep(2.5)
    second = page.evaluate("() => ({...window.kpcall.stats})")
    detail_2 = page.text_content("#stat-detail")
    assert second["packets_received"] > first["packets_received"] and second["frames_output"] > first["frames_output"]
    assert detail_1 != detail_2
    assert "updated every second" in str(page.text_content("#stats-age"))
    assert float(str(page.text_content("#stat-wire .value"))) > 0

    # The sender's original pictures, as VP8, on request.
    page.click("#orig-show")
    page.wait_for_function(
        "() => { const v = document.getElementById('orig-video'); return v.videoWidth > 0 && v.currentTime > 0.2; }", timeout=30_000
    )
    page.wait_for_function("() => window.kpcall.browser.vp8Kbps > 0 && window.kpcall.browser.vp8Codec === 'VP8'", timeout=10_000)
    assert "VP8" in str(page.text_content("#cost-vp8"))
    assert "scripted head motion" in str(page.text_content("#orig-caption"))

    # Controls that reach the sender: a cap, then K; fewer keypoints -> a smaller motion payload.
    page.fill("#kbps-input", "16")
    page.click("#kbps-form button")
    _feedback(page, "kbps-feedback", "ok", "max kbps set to 16 — sender confirmed")
    _set_keypoints(page, 20)
    time.sleep(3.5)  # let the 3 s rate window fill with the new setting
    high = _payload_kbps(page)
    _set_keypoints(page, 2)
    assert page.text_content("#stat-k .value") == "2"
    time.sleep(3.5)
    low = _payload_kbps(page)
    print(f"motion payload: {high:.2f} kbps at K=20, {low:.2f} kbps at K=2")
    assert low < 0.8 * high, (low, high)

    # The view (receiver).
    page.click("#view-front")
    _feedback(page, "view-feedback", "ok", "view set to frontal")

    # Bad uploads: refused by the page, and by the receiver when the page's checks are skipped.
    page.set_input_files("#avatar-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    _feedback(page, "avatar-feedback", "error", "is not a JPEG, PNG or WebP image")
    big = {"name": "huge.png", "mimeType": "image/png", "buffer": b"\x89PNG" + bytes(4 * 1024 * 1024)}
    page.set_input_files("#avatar-file", files=[big])
    _feedback(page, "avatar-feedback", "error", "over the limit of 4 MB")
    page.evaluate("() => window.kpcall.sendAvatarBytes(new TextEncoder().encode('this is not an image'), '\"fake.png\"')")
    _feedback(page, "avatar-feedback", "error", "not an image this receiver can read")
    # A good portrait: the receiver switches avatar (cross-identity).
    page.set_input_files("#avatar-file", files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": _portrait_jpeg()}])
    _feedback(page, "avatar-feedback", "ok", "driving the uploaded portrait", timeout_s=45)

    page.click("#view-follow")
    _feedback(page, "view-feedback", "ok", "view set to offset:")
    time.sleep(2.0)  # a few more points on the chart
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

    # Narrow screens: the panes stack and nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(0.5)
    page.evaluate("() => window.scrollTo(0, 0)")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    boxes = page.evaluate(
        "() => ['pane-synth', 'pane-orig'].map((id) => document.getElementById(id).getBoundingClientRect().toJSON())"
    )
    assert boxes[1]["top"] >= boxes[0]["bottom"] - 1, boxes  # stacked, not side by side
    page.screenshot(path=str(ARTIFACTS / "page-narrow.png"), full_page=True)

    # A room without a receiver says so; a receiver that joins and leaves again is reported.
    empty = browser.new_page(viewport={"width": 1000, "height": 700})
    empty.goto(f"{url}/?room=nobody-here")
    banner = "() => document.getElementById('banner').textContent"
    empty.wait_for_function(f"() => ({banner})().includes('Waiting for the receiver')", timeout=10_000)
    assert not empty.is_hidden("#synth-overlay")
    visitor = subprocess.Popen([*ns_a, sys.executable, "-c", FLEETING_RECEIVER, url.replace("http", "ws") + "/ws", "nobody-here", "3"])
    try:
        empty.wait_for_function(f"() => ({banner})().includes('The receiver is in the room')", timeout=10_000)
        empty.wait_for_function("() => document.getElementById('log').textContent.includes('the receiver left')", timeout=15_000)
        empty.wait_for_function(f"() => ({banner})().includes('Waiting for the receiver')", timeout=5_000)
    finally:
        visitor.wait(10)
    empty.close()

    assert not errors, errors
    print(f"screenshots: {ARTIFACTS / 'page.png'}, {ARTIFACTS / 'page-narrow.png'}")


def _browser_main(url: str, ns_a: str, ns_b: str, log: Path, work: Path) -> int:
    """The Playwright part of the test, in its own process (see test_demo_page_in_chromium)."""
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    wrapper = work / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns_b} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(wrapper), headless=True, args=CHROMIUM_FLAGS)
        print(f"chromium up after {time.monotonic() - started:.1f} s", flush=True)
        try:
            _drive_page(browser, url, ["ip", "netns", "exec", ns_a], log)
        finally:
            browser.close()
    print(f"browser part took {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_browser_main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5])))
