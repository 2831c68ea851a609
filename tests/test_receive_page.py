"""receive.html in headless Chromium: the browser is the receiver of a real call and renders the face itself.

A child process (``python -m tests.test_receive_page WORK``; Playwright's sync API in its own process, as in
tests/test_page.py) runs the signaling server on 127.0.0.1 (a temp copy of the page, onnxruntime-web and the shipped
weights exported by ``codec.export``), a real Python ``Sender`` on the scripted trace with the shipped model's
portrait message (every motion packet it sends recorded), and Chromium with loopback ICE candidates
(``--allow-loopback-in-peer-connection``; aiortc on the "loopback" host-candidate policy): nothing leaves 127.0.0.1.

1. ``receive.html?room=R&min_fps=0&audio=1``: the page joins as the room's receiver (and takes the sender's sound), the sender offers to it, the page takes
   the portrait and the motion data channel, renders on a canvas; the canvas must change between frames (the face
   moves), the page's fps, render times and incoming bytes (getStats) are read for ~``KPCALL_RECEIVE_S`` seconds
   (default 20), and the sender's own count of what it sent that link (its cap: ``KPCALL_RECEIVE_MAX_KBPS``, 0 = none;
   default the sender's 8 kbps).
2. A frame on the canvas against the Python receiver's render of the same motion (``FrameSynthesizer``, fp32, the
   portrait decoded by Python from the same message; the motion decoded by Python from the recorded packets): PSNR.
3. ``receive.html?room=R&min_fps=100`` on the shipped full-size model only (``&models=models/<its preset>/`` when the
   browser-class variants are exported too: with those this machine's page renders every frame due, and a page that
   renders every frame due does not hand over whatever min_fps says): the page cannot keep up, leaves the receiver
   role and opens the viewer page
   with the reason; a Python receiver waiting for the role (real synthesizer) takes the call and the page plays its VP8
   and shows why.

Results (figures with the machine's load) go to tests/artifacts/receive_page.json with screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codec.model.checkpoint import read_metadata

pytestmark = [pytest.mark.browser, pytest.mark.pretrained, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "signaling" / "static"
ORT_DIST = STATIC / "vendor" / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.mjs", "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
             "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
ROOM = "browser-rx"
MIN_PAGE_VS_PYTHON_DB = 40.0
SHIPPED_VARIANTS = ("cpu", "web", "web-small")  # codec/weights/<name>.safetensors, best picture first (as make web-models)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                  "--autoplay-policy=no-user-gesture-required"]


def _static_copy(work: Path) -> Path:
    """The page (signaling/static without node_modules), the onnxruntime-web files it loads, and the exported models."""
    from codec.export.onnx_export import export_onnx, export_variants
    from codec.model.loading import default_weights_path, load_model_for_inference

    static = work / "static"
    shutil.copytree(STATIC, static, ignore=shutil.ignore_patterns("node_modules", "models"))
    dist = static / "vendor" / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in ORT_FILES:
        if (ORT_DIST / name).is_file():
            shutil.copy2(ORT_DIST / name, dist / name)
    variants = [default_weights_path(name) for name in SHIPPED_VARIANTS if default_weights_path(name).is_file()]
    if len(variants) > 1:  # the shipped model and its distilled browser-class one: the page times both and picks
        export_variants(variants, static / "models")
    else:
        model, info = load_model_for_inference(variants[0], device="cpu")
        export_onnx(model, info, static / "models")
    return static


def _slow_models(static: Path) -> str:
    """The query that points the hand-over page at the full-size model alone ("" when it is the only one exported)."""
    index = static / "models" / "index.json"
    if not index.is_file():
        return ""
    return f"&models=models/{json.loads(index.read_text())['variants'][0]['folder']}"


def _weights_of(preset: str) -> Path:
    """The shipped weights file the page's chosen variant came from."""
    from codec.model.loading import default_weights_path

    for path in (default_weights_path(name) for name in SHIPPED_VARIANTS):
        if path.is_file() and json.loads(read_metadata(path)["config"])["name"] == preset:
            return path
    raise AssertionError(f"no shipped weights of preset {preset!r}")


def _reference() -> Any:
    """The sender's portrait message for the shipped model: the astronaut's face region at the model's size (no detector)."""
    from PIL import Image

    from codec.model.loading import default_weights_path, load_model_for_inference
    from sender.portrait import default_portrait, make_reference

    _, info = load_model_for_inference(default_weights_path(), device="cpu")

    def crop(image: np.ndarray, size: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image[20:276, 120:376]).resize((size, size), Image.Resampling.LANCZOS))

    return make_reference(default_portrait(), info.image_size, info.motion_model_id, info.model_version, crop=crop), info


# -- the child process: server, sender, standby receiver and Chromium --------------------------------------------
class _Call:
    """The server, the sender and (for the hand-over) a Python receiver, on an asyncio loop in a thread."""

    def __init__(self, work: Path, static: Path) -> None:
        self.work = work
        self.static = static
        self.loop = asyncio.new_event_loop()
        self.packets: list[str] = []
        self.url = ""
        self.sender: Any = None
        self.receiver: Any = None
        self.receiver_tries = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(120)

    async def _start(self) -> None:
        from codec.reference_message import pack_reference_message
        from sender.audio_sender import AudioSender
        from sender.audio_sources import GeneratedSpeech
        from sender.session import Sender, SenderConfig
        from sender.sources import TraceSource
        from signaling.rtc import RtcOptions
        from signaling.server import ServerConfig, start_server

        self.server = await start_server(ServerConfig(host="127.0.0.1", port=0, static_dir=self.static))
        self.url = self.server.url
        reference, info = _reference()
        (self.work / "reference.bin").write_bytes(pack_reference_message(reference))

        def record(message: bytes) -> bytes:
            self.packets.append(message.hex())
            return message

        max_kbps = json.loads((self.work / "config.json").read_text())["max_kbps"]
        caps = {} if max_kbps is None else {"max_kbps": max_kbps or None}  # 0: no cap
        self.sender = Sender(SenderConfig(self.url, ROOM, rtc=RtcOptions(host_candidates="loopback"), **caps),
                             TraceSource(25.0, num_keypoints=info.num_keypoints), reference, packet_filter=record,
                             audio=AudioSender(GeneratedSpeech()))
        self.sender_task = asyncio.ensure_future(self.sender.run())

    def start_standby_receiver(self) -> None:
        asyncio.run_coroutine_threadsafe(self._standby(), self.loop)

    async def _standby(self) -> None:
        """A Python receiver that joins as soon as the room's receiver role is free (the page holds it until it leaves)."""
        from codec.model.loading import default_weights_path
        from codec.model.wrappers import FrameSynthesizer
        from receiver.session import Receiver, ReceiverConfig
        from signaling.client import SignalingError
        from signaling.rtc import RtcOptions

        synth = await asyncio.to_thread(FrameSynthesizer, default_weights_path(), "cpu")
        # the page on another machine would reach the receiver's interface address; here Chromium has loopback
        config = ReceiverConfig(self.url, ROOM, rtc=RtcOptions(host_candidates="loopback"), audio=False)
        while True:
            self.receiver_tries += 1
            self.receiver = Receiver(config, synth)
            try:
                await self.receiver.run()
                return
            except SignalingError:
                await asyncio.sleep(0.5)

    def stop(self) -> dict[str, Any]:
        async def _stop() -> dict[str, Any]:
            stats = self.sender.link_stats()
            self.sender.stop()
            if self.receiver is not None:
                self.receiver.stop("test over")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sender_task, 15)
            await self.server.close()
            return {"sender_links": stats}

        return asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(60)


def _wait(page: Any, expression: str, timeout_s: float, what: str) -> None:
    try:
        page.wait_for_function(expression, timeout=timeout_s * 1000)
    except Exception:
        state = page.evaluate("() => window.kpcallReceive ?? null")
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; page state: {json.dumps(state)[:3000]}") from None


def _snapshot(page: Any) -> tuple[dict[str, Any], np.ndarray]:
    snap = page.evaluate("() => window.kpcallReceiveSnapshot()")
    pixels = np.frombuffer(base64.b64decode(snap["pixels"]), np.uint8).reshape(256, 256, 3)
    return snap["frame"], pixels


def _child(work: Path) -> int:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    config = json.loads((work / "config.json").read_text())
    started = time.monotonic()
    call = _Call(work, Path(config["static"]))
    call.start()
    out: dict[str, Any] = {"phases": {}}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                # 1. the browser receiver, never handing over
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{call.url}/receive.html?room={ROOM}&min_fps=0&audio=1")
                _wait(page, "() => window.kpcallReceive && window.kpcallReceive.framesRendered >= 3", 180, "3 rendered frames")
                out["phases"]["first_frames_s"] = round(time.monotonic() - started, 1)
                frames = [_snapshot(page)]
                time.sleep(1.5)
                frames.append(_snapshot(page))
                out["moving"] = {"seqs": [f["seq"] for f, _ in frames],
                                 "mean_abs_diff": float(np.abs(frames[0][1].astype(int) - frames[1][1].astype(int)).mean())}
                time.sleep(float(config["seconds"]))
                out["page"] = page.evaluate("() => ({...window.kpcallReceive, renderMs: window.kpcallReceive.renderMs.slice(-30)})")
                for _ in range(50):  # a frame decoded from motion (not concealed) for the comparison
                    frame, pixels = _snapshot(page)
                    if frame is not None and not frame["concealed"]:
                        break
                    time.sleep(0.1)
                out["compared_frame"] = frame
                Image.fromarray(pixels).save(work / "page_frame.png")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "receive_page.png"), full_page=True)
                out["page_errors"] = errors
                page.close()  # leaves the room: the receiver role is free again
                out["sender_after_phase_1"] = call.sender.link_stats()
                (work / "packets.json").write_text(json.dumps(call.packets))

                # 3. a page that cannot keep up hands over to a Python receiver's VP8
                time.sleep(1.0)
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{call.url}/receive.html?room={ROOM}&min_fps=100{config['slow_models']}")
                _wait(page, "() => window.kpcallReceive && window.kpcallReceive.framesRendered >= 1", 180, "the second page's first frame")
                hand_over = time.monotonic()
                call.start_standby_receiver()  # it waits for the receiver role, which the page holds until it hands over
                page.wait_for_url("**/index.html?**", timeout=180_000)
                out["phases"]["hand_over_s"] = round(time.monotonic() - hand_over, 1)
                _wait(page, "() => { const v = document.getElementById('synth-video'); return v.videoWidth > 0 && v.currentTime > 0.5; }",
                      180, "the receiver's VP8 playing on the viewer page")
                out["fallback"] = {"url": page.url, "note": page.text_content("#fallback-note"), "receiver_tries": call.receiver_tries}
                page.screenshot(path=str(ARTIFACTS / "receive_page_fallback.png"), full_page=True)
                page.close()
            finally:
                browser.close()
    finally:
        out.update(call.stop())
        out["phases"]["total_s"] = round(time.monotonic() - started, 1)
        (work / "result.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


# -- the test ------------------------------------------------------------------------------------------------------
def test_browser_receiver_renders_the_call(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not (ORT_DIST / "ort.wasm.min.mjs").is_file():
        pytest.skip("onnxruntime-web is not installed: make web-deps (npm ci in signaling/static/vendor)")
    from PIL import Image

    from codec.export.verify import psnr_db
    from codec.model.loading import default_weights_path, load_model_for_inference
    from codec.model.wrappers import FrameSynthesizer
    from codec.prediction import MotionDepacketizer
    from codec.reference_message import decode_portrait, unpack_reference_message

    if not default_weights_path().is_file():
        pytest.skip(f"no shipped weights at {default_weights_path()}")
    static = _static_copy(tmp_path)
    seconds = float(os.environ.get("KPCALL_RECEIVE_S", "20"))
    max_kbps = os.environ.get("KPCALL_RECEIVE_MAX_KBPS")  # the sender's cap (default: its own, 8; 0: none)
    (tmp_path / "config.json").write_text(json.dumps({"static": str(static), "seconds": seconds,
                                                      "max_kbps": None if max_kbps is None else float(max_kbps),
                                                      "slow_models": _slow_models(static)}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-m", "tests.test_receive_page", str(tmp_path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # Playwright's driver and Chromium with it
        output, _ = child.communicate()
    result_path = tmp_path / "result.json"
    assert child.returncode == 0 and result_path.is_file(), output[-8000:]
    result = json.loads(result_path.read_text())

    # The face moves: later frames, different pictures.
    moving = result["moving"]
    assert moving["seqs"][1] > moving["seqs"][0] and moving["mean_abs_diff"] > 0.5, moving
    page = result["page"]
    assert page["status"] == "rendering" and page["fallback"] is None and not result["page_errors"], page
    assert page["fps"] > 0 and page["renderMsMedian"] > 0 and page["packets"] > 20, page
    # ?audio=1: the sender's Opus decoded by the browser, its buffer held at the face's wait
    audio = page["audio"]
    assert audio["playing"] and audio["packets"] > 100 and audio["samples"] > 48_000, audio
    assert audio["concealedSamples"] < 0.05 * audio["samples"] and audio["targetMs"] > 0, audio
    # the variants were timed best picture first; the page renders with the first within the frame period (0.9 × 40 ms),
    # else the first within 0.9 × 1/15 s, else the fastest
    timed = [(v["preset"], v["renderMs"]) for v in page["variants"]]
    fitting = [p for p, ms in timed if ms <= 36] or [p for p, ms in timed if ms <= 60] or [min(timed, key=lambda t: t[1])[0]]
    assert page["variant"] == fitting[0] and page["variantReason"], page

    # The frame on the canvas against the Python receiver's render of the same motion.
    model, info = load_model_for_inference(_weights_of(page["variant"]), device="cpu")  # the model the page chose
    synth = FrameSynthesizer(model, device="cpu", precision="fp32")
    reference = unpack_reference_message((tmp_path / "reference.bin").read_bytes())
    state = synth.prepare(decode_portrait(reference))
    depacketizer = MotionDepacketizer()
    motions = {}
    for packet in json.loads((tmp_path / "packets.json").read_text()):
        for frame in depacketizer.receive(bytes.fromhex(packet)):
            motions[frame.seq] = frame.motion
    compared = result["compared_frame"]
    assert compared is not None and not compared["concealed"], compared
    want = synth.render(state, motions[compared["seq"] % 65536])
    got = np.asarray(Image.open(tmp_path / "page_frame.png").convert("RGB"))
    page_vs_python = psnr_db(got, want)
    Image.fromarray(np.concatenate([got, want], axis=1)).save(ARTIFACTS / "receive_page_vs_python.png")

    link = result["sender_after_phase_1"][0]
    fallback = result["fallback"]
    summary = {
        "measured": time.strftime("%Y-%m-%d %H:%M"), "model_id": info.model_id, "seconds": seconds, "sender_max_kbps": max_kbps,
        "load_average": os.getloadavg(), "cpus": os.cpu_count(), "page_vs_python_psnr_db": page_vs_python,
        "page": {k: page.get(k) for k in ("backend", "threads", "crossOriginIsolated", "fps", "dueFps", "renderMsMedian", "renderMs",
                                           "proxy", "framesRendered", "framesDue", "framesSkipped", "framesConcealed", "framesLost",
                                           "inKbps", "inKbpsMotion", "payloadKbps", "bytesReceived", "latencyMsMedian", "loadMs",
                                           "prepareMs", "playoutDelayMs", "rate", "variant", "variants",
                                           "variantReason", "audio")},
        "sender_link": {k: link.get(k) for k in ("wire_kbps", "wire_kbps_reverse", "motion_seconds", "packets", "payload_bytes",
                                                  "motion_transport", "reference_sent", "rung")},
        "fallback": fallback, "phases": result["phases"],
    }
    (ARTIFACTS / "receive_page.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    assert page_vs_python >= MIN_PAGE_VS_PYTHON_DB, summary
    assert link["motion_transport"] == "datachannel", link
    # The hand-over: the viewer page plays the receiver's VP8 and says why.
    assert "index.html" in fallback["url"] and "fallback=" in fallback["url"], fallback
    assert "renders" in fallback["note"] and "below the 100 fps" in fallback["note"], fallback


if __name__ == "__main__":
    code = _child(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is stopped and written: leave without the interpreter's teardown, where a native library's thread
    # pool was seen to abort the process once in ~7 runs ("terminate called without an active exception", SIGABRT).
    os._exit(code)
