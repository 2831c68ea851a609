"""The viewer page of a call room in headless Chromium: a grid of every participant's face, with its sound.

A child process (``python -m tests.test_call_page WORK``; Playwright's sync API in its own process, as in
tests/test_page.py) runs the signaling server on 127.0.0.1 in a thread, three participants as their own processes
(``python -m tests.test_call_page participant ...``: ``participant.call.Participant`` with the test renderer
``tests.call_fakes.FakeSynthesizer`` and generated speech) and Chromium with loopback ICE candidates
(``--allow-loopback-in-peer-connection``; aiortc on the "loopback" host-candidate policy, no ICE servers): nothing
leaves 127.0.0.1.

Asserted: the page (``/?room=R``) shows three tiles, one per participant, each with playing video (videoWidth > 0,
currentTime advancing), an audio track whose bytes arrive, played unmuted (Chromium runs with
``--autoplay-policy=no-user-gesture-required``) and a label with the participant's id and its stats; stopping the
participant that serves nothing (the highest peer id) removes its tile within 5 s while the other two play on through
the same connections; stopping the participant that serves the others' faces (the lowest) removes its tile within 5 s
and the two faces come back through the remaining participants (new offers replace the tiles' connections); the
sound button mutes and unmutes every face, and a browser that wants a click before sound
(``--autoplay-policy=document-user-activation-required``) plays the faces muted until Unmute is clicked (read from the
page's console until then: Playwright's evaluate runs as a user gesture, which would itself allow the sound).
Screenshots and timings go to tests/artifacts/ (call_page.png, call_page.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ROOM = "call-page"
PARTICIPANTS = 3
LEAVE_SEEN_S = 5.0  # a stopped participant's tile is gone within this
STOP_DUMP_S = 8.0  # a participant still stopping after this prints its tasks' stacks (to its log)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                  "--autoplay-policy=no-user-gesture-required"]
STRICT_AUTOPLAY = "--autoplay-policy=document-user-activation-required"  # sound only after a click (Chrome's default)
SNAPSHOT = "() => window.kpcall.grid.snapshot()"
# Reports each face's first "playing" event (and whether it was muted) on the console, without a user gesture.
REPORT_FIRST_PLAY = """
document.addEventListener("playing", (event) => {
  const tile = event.target.closest && event.target.closest("[data-stream]");
  if (tile && !tile.dataset.reported) {
    tile.dataset.reported = "1";
    console.log(`kpcall-test first-play ${tile.dataset.stream} muted=${event.target.muted}`);
  }
}, true);
"""


def _note_first_play(text: str, first_play: dict[str, bool]) -> None:
    if text.startswith("kpcall-test first-play "):
        _, _, stream, muted = text.split(" ")
        first_play[stream] = muted == "muted=true"


# -- a participant process ---------------------------------------------------------------------------------------
async def _participant_main(url: str, room: str, seed: int, id_file: Path) -> int:
    from participant.call import Participant, ParticipantConfig
    from sender.audio_sender import AudioSender
    from sender.audio_sources import GeneratedSpeech
    from sender.sources import TraceSource
    from signaling.rtc import RtcOptions
    from tests.call_fakes import FakeSynthesizer, fake_reference

    config = ParticipantConfig(url, room, rtc=RtcOptions(host_candidates="loopback"), others_fps=10.0, max_kbps=None)
    participant = Participant(config, FakeSynthesizer(), TraceSource(25.0, seed=seed), fake_reference(seed=seed),
                              audio=AudioSender(GeneratedSpeech(seed=seed)))
    def on_term() -> None:
        participant.stop()
        asyncio.get_running_loop().call_later(STOP_DUMP_S, dump)

    def dump() -> None:  # a stop that hangs: where every task waits
        print(f"still stopping after {STOP_DUMP_S} s; tasks:", flush=True)
        for pending in asyncio.all_tasks():
            pending.print_stack(file=sys.stdout)
        sys.stdout.flush()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
    task = asyncio.ensure_future(participant.run())
    while not participant.peer_id and not task.done():
        await asyncio.sleep(0.05)
    id_file.write_text(participant.peer_id)
    reason = await task
    print(f"participant {participant.peer_id} ended: {reason}", flush=True)
    return 0


class _Call:
    """The signaling server on an asyncio loop in a thread, and the participant processes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # peer id -> process
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._seed = 0

    def start_server(self) -> None:
        from signaling.server import ServerConfig, start_server

        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(start_server(ServerConfig(host="127.0.0.1", port=0)), self.loop).result(30)
        self.url = self.server.url

    def start_participants(self, count: int) -> list[str]:
        """``count`` new participant processes, started together; their peer ids once all joined."""
        started = []
        for _ in range(count):
            self._seed += 1
            id_file = self.work / f"participant-{self._seed}.id"
            log = self.work / f"participant-{self._seed}.log"
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.test_call_page", "participant", self.url, ROOM, str(self._seed), str(id_file)],
                    cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log_file, stderr=subprocess.STDOUT,
                )
            started.append((proc, id_file, log))
        deadline = time.monotonic() + 150
        ids = []
        for proc, id_file, log in started:
            while not (id_file.is_file() and id_file.read_text()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{log.stem} did not join:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            ids.append(id_file.read_text())
            self.procs[ids[-1]] = proc
        return ids

    def stop_participant(self, peer_id: str) -> None:
        self.procs[peer_id].send_signal(signal.SIGTERM)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)


# -- the browser part (the child process) -------------------------------------------------------------------------
def _wait(page: Any, expression: str, timeout_s: float, what: str, arg: Any = None) -> float:
    """Seconds until ``expression`` (a function of ``arg``) holds; AssertionError with the grid's state after ``timeout_s``."""
    started = time.monotonic()
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000, polling=100)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "call_page-failed.png"), full_page=True)
        state = page.evaluate(SNAPSHOT)
        log = page.text_content("#log")
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; tiles: {json.dumps(state)[:4000]}\nlog: {log}") from None
    return time.monotonic() - started


def _playing_tiles(streams: list[str]) -> str:
    """An expression true when exactly ``streams`` have tiles and every one plays."""
    return ("(streams) => { const tiles = window.kpcall.grid.snapshot();"
            " return tiles.length === streams.length && streams.every((s) => tiles.some((t) => t.stream === s && t.playing && t.videoWidth > 0)); }")


def _tiles(page: Any) -> dict[str, dict[str, Any]]:
    return {tile["stream"]: tile for tile in page.evaluate(SNAPSHOT)}


def _advancing(page: Any, streams: list[str], seconds: float = 2.0) -> dict[str, dict[str, Any]]:
    """The tiles after ``seconds``, asserting each one's video time and audio bytes moved on meanwhile."""
    before = _tiles(page)
    time.sleep(seconds)
    after = _tiles(page)
    for stream in streams:
        t0, t1 = before[stream], after[stream]
        assert t1["currentTime"] > t0["currentTime"] + 0.5 * seconds, (stream, t0, t1)
        assert t1["browser"]["audioBytes"] > (t0["browser"]["audioBytes"] or 0), (stream, t0, t1)
    return after


def _child(work: Path) -> int:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"phases": {}}
    started = time.monotonic()
    call = _Call(work)
    call.start_server()
    try:
        ids = call.start_participants(PARTICIPANTS)
        out["phases"]["participants_up_s"] = round(time.monotonic() - started, 1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{call.url}/?room={ROOM}")

                # Three tiles, each playing its participant's face, with its sound.
                out["phases"]["three_playing_s"] = round(_wait(page, _playing_tiles(ids), 120, "3 playing tiles", ids), 1)
                assert page.evaluate("() => document.body.classList.contains('call-mode')")
                assert page.is_hidden("#pane-synth") and page.is_visible("#call")
                tiles = _advancing(page, ids)
                _wait(page, "() => window.kpcall.grid.snapshot().every((t) => t.stats && t.browser.audioKbps > 0)", 15,
                      "stats and sound on every tile")
                tiles = _tiles(page)
                for peer_id, tile in tiles.items():
                    assert tile["audioTracks"] == 1 and tile["videoTracks"] == 1, tile
                    assert not tile["muted"] and not tile["paused"], tile  # played with sound (autoplay allowed here)
                    assert f"participant {peer_id}" in tile["label"] and "rendered" in tile["label"] and f"via {tile['peer']}" in tile["label"], tile
                    assert tile["peer"] == min(p for p in ids if p != peer_id), tile  # the lowest other peer id serves it
                out["three"] = tiles
                page.screenshot(path=str(ARTIFACTS / "call_page.png"), full_page=True)

                # The participant serving nothing (the highest id) stops: its tile goes, the others play on, same links.
                last = max(ids)
                call.stop_participant(last)
                stopped = time.monotonic()
                rest = [p for p in ids if p != last]
                _wait(page, "(gone) => !window.kpcall.grid.snapshot().some((t) => t.stream === gone)", LEAVE_SEEN_S, "the tile of the stopped one to go", last)
                out["phases"]["highest_tile_gone_s"] = round(time.monotonic() - stopped, 2)
                assert time.monotonic() - stopped <= LEAVE_SEEN_S
                after = _advancing(page, rest)
                assert all(after[p]["peer"] == tiles[p]["peer"] and after[p]["playing"] for p in rest), after
                assert len(after) == 2, after

                # A new participant joins (a new tile), then the lowest id, which serves the others' faces, stops:
                # its tile goes and the two remaining faces are offered again by the remaining participants.
                newcomer, = call.start_participants(1)
                ids = [*rest, newcomer]
                out["phases"]["newcomer_playing_s"] = round(_wait(page, _playing_tiles(ids), 60, "the newcomer's tile playing", ids), 1)
                first = min(ids)
                call.stop_participant(first)
                stopped = time.monotonic()
                rest = [p for p in ids if p != first]
                _wait(page, "(gone) => !window.kpcall.grid.snapshot().some((t) => t.stream === gone)", LEAVE_SEEN_S, "the tile of the stopped one to go", first)
                out["phases"]["lowest_tile_gone_s"] = round(time.monotonic() - stopped, 2)
                assert time.monotonic() - stopped <= LEAVE_SEEN_S
                _wait(page, "([streams, gone]) => { const tiles = window.kpcall.grid.snapshot();"
                      " return tiles.length === 2 && tiles.every((t) => streams.includes(t.stream) && t.playing && t.peer !== gone); }",
                      30, "the two remaining faces playing through new relays", [rest, first])
                out["phases"]["two_replayed_s"] = round(time.monotonic() - stopped, 1)
                after = _advancing(page, rest)
                for peer_id in rest:
                    assert after[peer_id]["peer"] == next(p for p in rest if p != peer_id), after
                out["two"] = after
                page.screenshot(path=str(ARTIFACTS / "call_page-two.png"), full_page=True)
                # The sound button mutes every face, and unmutes them.
                page.click("#call-sound")
                assert all(t["muted"] for t in page.evaluate(SNAPSHOT)) and page.text_content("#call-sound") == "Unmute"
                page.click("#call-sound")
                assert not any(t["muted"] or t["paused"] for t in page.evaluate(SNAPSHOT))
                assert not errors, errors
            finally:
                browser.close()
            # A browser that plays sound only after a gesture (Chrome's default): the faces play muted until Unmute.
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_FLAGS[:-1], STRICT_AUTOPLAY])
            try:
                page = browser.new_page(viewport={"width": 900, "height": 800})
                # Every page.evaluate (and text_content, wait_for_function) runs as a user gesture, which gives the
                # page the right to play sound: until the faces play, the test only listens (console, no gesture).
                first_play: dict[str, bool] = {}  # stream -> muted when its face first played
                page.on("console", lambda msg: _note_first_play(msg.text, first_play))
                page.add_init_script(REPORT_FIRST_PLAY)
                page.goto(f"{call.url}/?room={ROOM}")
                deadline = time.monotonic() + 60
                while not set(rest) <= first_play.keys():
                    assert time.monotonic() < deadline, f"the faces did not play in a browser that wants a gesture for sound: {first_play}"
                    page.wait_for_timeout(100)
                assert all(first_play[p] for p in rest), first_play  # played muted: no click yet
                _wait(page, _playing_tiles(rest), 30, "the faces playing in a browser that wants a gesture for sound", rest)
                assert all(t["muted"] for t in page.evaluate(SNAPSHOT)), page.evaluate(SNAPSHOT)
                assert page.text_content("#call-sound") == "Unmute" and "click" in str(page.text_content("#call-sound-note"))
                page.click("#call-sound")
                _wait(page, "() => window.kpcall.grid.snapshot().every((t) => !t.muted && !t.paused)", 5, "the faces unmuted after the click")
                _advancing(page, rest)
            finally:
                browser.close()
    finally:
        call.close()
        out["phases"]["total_s"] = round(time.monotonic() - started, 1)
        (work / "result.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


# -- the test ------------------------------------------------------------------------------------------------------
def test_call_room_page_shows_every_face(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-m", "tests.test_call_page", "browser", str(tmp_path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # Playwright's driver, Chromium and the participants with it
        output, _ = child.communicate()
    logs = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("participant-*.log")))
    assert child.returncode == 0, f"{output[-8000:]}\n{logs}"
    result = json.loads((tmp_path / "result.json").read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "call_page.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["phases"], indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.test_call_page")
    sub = parser.add_subparsers(dest="part", required=True)
    browser = sub.add_parser("browser", help="the server, the participants and Chromium (the test's child process)")
    browser.add_argument("work", type=Path)
    part = sub.add_parser("participant", help="one participant with the test renderer")
    part.add_argument("url")
    part.add_argument("room")
    part.add_argument("seed", type=int)
    part.add_argument("id_file", type=Path)
    args = parser.parse_args(argv)
    if args.part == "browser":
        return _child(args.work)
    return asyncio.run(_participant_main(args.url, args.room, args.seed, args.id_file))


if __name__ == "__main__":
    raise SystemExit(main())
