// The page mode of render.html: decode motion packets and render the last frame on a canvas, timed.
//
// The result is also in window.kpcallRender (status, backend, threads, loadMs, prepareMs, renderMs[],
// frames, seq) and window.kpcallRenderPixels() (the canvas as base64 RGB), for tests/test_render_page.py.

import { MotionDepacketizer } from "./codec/depacketizer.js";
import { NeuralRenderer } from "./codec/renderer.js";

const params = new URLSearchParams(location.search);
const statusBox = document.getElementById("status");
const canvas = document.getElementById("frame");
window.kpcallRender = { status: "loading" };

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

async function loadImage(url, size) {
  const image = new Image();
  image.src = url;
  await image.decode();
  const scratch = document.createElement("canvas");
  scratch.width = scratch.height = size;
  const ctx = scratch.getContext("2d");
  ctx.drawImage(image, 0, 0, size, size);
  return ctx.getImageData(0, 0, size, size);
}

async function main() {
  const reference = params.get("reference");
  const packets = (params.get("packets") ?? "").split(",").filter(Boolean).map(fromHex);
  if (!reference || !packets.length) throw new Error("render.html needs ?reference=IMAGE&packets=HEX,…");
  const repeat = Math.max(1, Number(params.get("repeat") ?? 5));
  const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
  let t0 = performance.now();
  const renderer = await NeuralRenderer.load(params.get("models") ?? "models/", { backend: params.get("backend") ?? "auto", threads, proxy: params.get("proxy") === "1" });
  const loadMs = performance.now() - t0;
  const size = renderer.size;
  canvas.width = canvas.height = size;
  t0 = performance.now();
  await renderer.prepare(await loadImage(reference, size));
  const prepareMs = performance.now() - t0;
  const depacketizer = new MotionDepacketizer();
  const frames = packets.flatMap((packet) => depacketizer.receive(packet));
  if (!frames.length) throw new Error("the packets decoded to no frame");
  const last = frames[frames.length - 1];
  let rgba = await renderer.render(last.motion); // warm-up
  const renderMs = [];
  for (let i = 0; i < repeat; i++) {
    t0 = performance.now();
    rgba = await renderer.render(last.motion);
    renderMs.push(performance.now() - t0);
  }
  canvas.getContext("2d").putImageData(new ImageData(rgba, size, size), 0, 0);
  const sorted = [...renderMs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  window.kpcallRender = {
    status: "done", backend: renderer.backend, threads: renderer.threads, proxy: renderer.proxy, crossOriginIsolated: window.crossOriginIsolated,
    loadMs, prepareMs, renderMs, medianMs: median, frames: frames.length, seq: last.seq,
  };
  statusBox.textContent = `frame ${last.seq} of ${frames.length} decoded; ${renderer.backend}, ${renderer.threads} thread(s): ` +
    `render ${median.toFixed(1)} ms median of ${repeat} (prepare ${prepareMs.toFixed(0)} ms, load ${loadMs.toFixed(0)} ms)`;
}

window.kpcallRenderPixels = () => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let binary = "";
  for (let i = 0; i < data.length; i += 4) binary += String.fromCharCode(data[i], data[i + 1], data[i + 2]);
  return btoa(binary);
};

main().catch((exc) => {
  window.kpcallRender = { status: "error", error: String(exc && exc.stack ? exc.stack : exc) };
  statusBox.textContent = `error: ${exc}`;
});
