// receive.html: this browser is the call's receiver. It joins the room as "receiver", so the sender offers to it
// as to the Python receiver (PROTOCOL.md §1-3); it takes the motion on the "motion" data channel (it never asks for
// motion as RTP: a browser cannot read that SRTP stream), answers the control protocol (receiver/session.js),
// prepares the portrait once and renders every due frame's face on a canvas with onnxruntime-web (codec/renderer.js:
// WebGPU when navigator.gpu has an adapter, else WASM, threads when cross-origin isolated). Frames that come due
// while a render runs are skipped (the newest wins, as in the Python receiver's render worker).
//
// When it cannot keep up (rendered fps below ?min_fps=, default 15, over the last 5 s while the call plays) or cannot
// run the networks at all, or the room already has a receiver, it leaves the receiver role and opens the viewer page
// (index.html?room=R&fallback=WHY): the Python receiver's VP8, with the reason on the page. ?min_fps=0 never hands over.
//
// For tests: window.kpcallReceive (status, fps, render times, counters, incoming bytes, the last rendered frame) and
// window.kpcallReceiveSnapshot() (the canvas as base64 RGB with the frame it shows).

import { NeuralRenderer } from "./codec/renderer.js";
import { SenderLink, cannotKeepUp } from "./receiver/session.js";

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const DEFAULT_MIN_FPS = 15; // the issue's goal; below it the receiver's VP8 looks better
const CALL_FPS = 25; // a sender's default rate: the frame period a variant should render within
const JUDGE_WINDOW_MS = 5000; // rendered fps is measured over this long before the page may hand over
const RATE_WINDOW_MS = 3000; // the page's "recent" rates
const ICE_GATHER_TIMEOUT_MS = 2000;
const TICK_MS = 10;
const MAX_RENDER_ERRORS = 5;
const LOG_ENTRIES = 60;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = ROOM_PATTERN.test(params.get("room") ?? "") ? params.get("room") : "demo";
const minFps = params.has("min_fps") ? Number(params.get("min_fps")) : DEFAULT_MIN_FPS;
// ?audio=1: also take the sender's sound (Opus, ~+25 kbps with its headers) and play it delayed to the face
const wantAudio = params.get("audio") === "1";

const state = {
  status: "loading", room, minFps, backend: null, threads: null, crossOriginIsolated: window.crossOriginIsolated === true,
  webgpu: typeof navigator !== "undefined" && Boolean(navigator.gpu), loadMs: null, prepareMs: null, fallback: null,
  peerId: null, senderId: null, fps: null, dueFps: null, renderMsMedian: null, renderMs: [], framesRendered: 0,
  framesDue: 0, framesSkipped: 0, renderErrors: 0, bytesReceived: null, inKbps: null, inKbpsMotion: null, payloadKbps: null,
  packets: 0, lastRendered: null, rate: null, latencyMsMedian: null, errors: [],
  variant: null, variants: [], variantReason: null, // the model rendering, each one timed at load, why this one
  audio: null, // with ?audio=1: {packets, samples, concealedSamples, jitterBufferMs, targetMs, playing}
};
window.kpcallReceive = state;

let ws = null;
let iceServers = [];
let renderer = null;
let link = null; // {pc, peer, control, motion, session: SenderLink, answered}
let busy = false;
let pending = null; // the newest due frame not rendered yet
let firstRenderAt = null;
let firstMotionBytes = null; // [performance.now(), bytesReceived] when motion started
const renderedAt = []; // performance.now() of each render's end (the last RATE/JUDGE window)
const dueAt = []; // ... of each frame that came due
const latencies = [];
const portraits = new Map(); // cache key -> prepared portrait state (a sender that comes back sends nothing)
const byteSamples = []; // [performance.now(), transport bytesReceived]
const canvas = $("frame");
const ctx = canvas.getContext("2d", { willReadFrequently: true });

// -- page text ------------------------------------------------------------------------------------------------
function log(kind, text) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const span = document.createElement("span");
  span.textContent = text;
  if (kind === "error") span.className = "log-error";
  if (kind === "ok") span.className = "log-ok";
  item.append(time, span);
  const list = $("log");
  list.prepend(item);
  while (list.children.length > LOG_ENTRIES) list.lastChild.remove();
  if (kind === "error") state.errors.push(text);
}

function setStatus(status, pill, banner) {
  state.status = status;
  $("conn-pill").className = `pill pill-${pill[0]}`;
  $("conn-pill").textContent = pill[1];
  const box = $("banner");
  box.hidden = !banner;
  if (banner) {
    box.className = `banner banner-${banner[0]}`;
    box.textContent = banner[1];
  }
  const overlay = status === "rendering" ? null : banner ? banner[1] : pill[1];
  $("overlay").hidden = !overlay;
  if (overlay) $("overlay-text").textContent = overlay;
}

const fmt = (value, digits = 1) => (value === null || value === undefined || !Number.isFinite(value) ? "—" : value >= 100 ? value.toFixed(0) : value.toFixed(digits));

function setStat(id, value, unit) {
  const el = $(id);
  el.querySelector(".value").textContent = value;
  if (unit !== undefined) el.querySelector(".unit").textContent = unit;
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function countSince(times, since) {
  while (times.length && times[0] < since - JUDGE_WINDOW_MS) times.shift();
  return times.filter((t) => t >= since).length;
}

// -- the hand-over to the receiver's VP8 ----------------------------------------------------------------------
function fallback(reason) {
  if (state.fallback !== null) return;
  state.fallback = reason;
  log("error", `handing over to the receiver's VP8: ${reason}`);
  setStatus("fallback", ["wait", "Switching to VP8…"], ["wait", `This browser hands over to the receiver's VP8: ${reason}`]);
  closeLink();
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" })); // frees the receiver role at once
  const target = new URL("index.html", location.href);
  target.searchParams.set("room", room);
  if (params.get("token")) target.searchParams.set("token", params.get("token"));
  target.searchParams.set("fallback", reason);
  setTimeout(() => {
    if (ws) ws.close(1000, "handing over to the receiver's VP8");
    location.replace(target.href);
  }, 300);
}

// -- signaling ------------------------------------------------------------------------------------------------
function wsSend(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  setStatus("joining", ["wait", "Joining…"], ["info", `Joining room "${room}" as its receiver…`]);
  ws.onopen = () => {
    const join = { type: "join", room, role: "receiver" };
    if (params.get("token")) join.token = params.get("token");
    ws.send(JSON.stringify(join));
  };
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (exc) {
      log("error", `unreadable message from the signaling server: ${exc}`);
      return;
    }
    onSignal(msg).catch((exc) => log("error", `signaling: ${exc.message || exc}`));
  };
  ws.onclose = () => {
    if (state.fallback !== null) return;
    closeLink();
    setStatus("offline", ["bad", "Offline"], ["error", "Lost the signaling server; reconnecting in 2 s…"]);
    setTimeout(connect, 2000);
  };
}

async function onSignal(msg) {
  switch (msg.type) {
    case "ice_servers":
      iceServers = msg.servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
      return;
    case "joined":
      state.peerId = msg.peer_id;
      $("peer-info").textContent = `you are receiver ${msg.peer_id}`;
      for (const peer of msg.peers) if (peer.role === "sender") state.senderId = peer.peer_id;
      log("info", `joined room "${room}" as its receiver`);
      if (!link) waiting();
      return;
    case "peer_joined":
      if (msg.role === "sender") {
        state.senderId = msg.peer_id;
        log("info", "a sender joined; it is calling this page");
      }
      return;
    case "peer_left":
      if (msg.peer_id === state.senderId) {
        state.senderId = null;
        log("info", `the sender left (${msg.reason || "left"})`);
        closeLink();
        waiting();
      }
      return;
    case "offer":
      if (msg.from === state.senderId) await answerSender(msg);
      return;
    case "candidate":
      if (link && msg.from === link.peer && msg.candidate) {
        await link.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
      }
      return;
    case "error":
      log("error", `signaling server: ${msg.message}`);
      if (msg.ref === "join" && msg.code === "role_taken") {
        fallback(`room "${room}" already has a receiver (it renders for the viewers)`);
      } else if (msg.ref === "join") {
        setStatus("error", ["bad", "Refused"], ["error", `Cannot join room "${room}": ${msg.message}`]);
      }
      return;
    default:
      return;
  }
}

function waiting() {
  setStatus("waiting", ["wait", `Room ${room}`], ["wait", `Waiting for a sender in room "${room}"…`]);
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

// -- the sender's connection ----------------------------------------------------------------------------------
async function answerSender(offer) {
  closeLink();
  const pc = new RTCPeerConnection({ iceServers });
  const holder = { pc, peer: offer.from, control: null, motion: null, session: null, answered: false };
  const send = (data) => {
    if (holder.control && holder.control.readyState === "open") holder.control.send(data);
  };
  holder.session = new SenderLink({
    modelId: renderer.manifest.motion_model_id ?? renderer.manifest.model_id, modelVersion: renderer.manifest.model_version ?? null, send, store: portraits,
    prepare: (msg) => preparePortrait(msg), onEvent: (name, detail) => onLinkEvent(holder, name, detail),
  });
  link = holder;
  pc.ondatachannel = (event) => {
    const channel = event.channel;
    channel.binaryType = "arraybuffer";
    if (channel.label === "motion") {
      holder.motion = channel;
      channel.onmessage = (e) => holder.session.onMotion(e.data, Date.now());
    } else if (channel.label === "control") {
      holder.control = channel;
      channel.onmessage = (e) => holder.session.onControl(e.data);
    } else {
      log("error", `ignoring an unexpected data channel "${channel.label}"`);
    }
  };
  pc.onicecandidate = (event) => {
    if (holder.answered && event.candidate && event.candidate.candidate) {
      wsSend({ type: "candidate", to: holder.peer, candidate: event.candidate.candidate, sdpMid: event.candidate.sdpMid,
        sdpMLineIndex: event.candidate.sdpMLineIndex });
    }
  };
  pc.onconnectionstatechange = () => {
    if (link !== holder) return;
    if (pc.connectionState === "connected") log("ok", "connected to the sender");
    if (pc.connectionState === "failed") {
      log("error", "the connection to the sender failed (no network path between this browser and the sender)");
      setStatus("error", ["bad", "No path"], ["error", "Cannot reach the sender: no network path between this browser and it."]);
    }
  };
  await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
  // Media m-lines are answered inactive (motion comes on the data channel), the sender's sound too unless ?audio=1:
  // it costs ~25 kbps of Opus and its headers, four times the motion.
  for (const transceiver of pc.getTransceivers()) {
    const audio = transceiver.receiver.track && transceiver.receiver.track.kind === "audio";
    transceiver.direction = wantAudio && audio ? "recvonly" : "inactive";
    if (wantAudio && audio) playAudio(holder, transceiver.receiver);
  }
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  if (link !== holder) return;
  wsSend({ type: "answer", to: holder.peer, sdp: pc.localDescription.sdp });
  holder.answered = true;
  setStatus("connecting", ["wait", "Connecting…"], ["info", "Connecting to the sender…"]);
}

/** Play the sender's sound from ``receiver``; its jitter buffer is held at the face's wait (``syncAudio``). */
function playAudio(holder, receiver) {
  holder.audioReceiver = receiver;
  const element = $("audio");
  element.srcObject = new MediaStream([receiver.track]);
  state.audio = { packets: 0, samples: 0, concealedSamples: 0, jitterBufferMs: null, targetMs: null, playing: false };
  element.play().then(() => { state.audio.playing = true; }).catch(() => {
    // browsers start sound only after a click on the page
    const button = $("unmute");
    button.hidden = false;
    button.onclick = () => element.play().then(() => { state.audio.playing = true; button.hidden = true; });
  });
}

/**
 * Audio and face in step: a frame reaches the canvas after the network, the playout delay and the render; the sound
 * after the network and its jitter buffer. So the buffer's target is the face's wait after arrival (playout delay +
 * render ms), which the browser keeps (RTCRtpReceiver.jitterBufferTarget, Chromium 114+). Measured from getStats.
 */
async function syncAudio(holder) {
  const receiver = holder.audioReceiver;
  if (!receiver || state.audio === null) return;
  if (state.playoutDelayMs !== null && state.renderMsMedian !== null && "jitterBufferTarget" in receiver) {
    const target = Math.max(0, Math.min(4000, Math.round(state.playoutDelayMs + state.renderMsMedian)));
    if (receiver.jitterBufferTarget !== target) receiver.jitterBufferTarget = target;
    state.audio.targetMs = target;
  }
  const stats = await receiver.getStats();
  stats.forEach((report) => {
    if (report.type !== "inbound-rtp" || report.kind !== "audio") return;
    state.audio.packets = report.packetsReceived ?? 0;
    state.audio.samples = report.totalSamplesReceived ?? 0;
    state.audio.concealedSamples = report.concealedSamples ?? 0;
    if (report.jitterBufferEmittedCount) state.audio.jitterBufferMs = (1000 * report.jitterBufferDelay) / report.jitterBufferEmittedCount;
  });
}

function closeLink() {
  const holder = link;
  link = null;
  pending = null;
  if (holder) holder.pc.close();
}

function onLinkEvent(holder, name, detail) {
  if (link !== holder) return;
  if (name === "hello") {
    log("info", `sender: stream ${detail.hello.stream_id} at ${detail.hello.fps} fps; portrait ${detail.have ? "held already" : "asked for"}`);
    setStatus("preparing", ["wait", "Preparing…"], ["info", "Receiving and preparing the sender's portrait…"]);
  } else if (name === "reference_ready") {
    renderer.state = holder.session.state;
    log("ok", `portrait ready (${detail.cached ? "held from before" : `received, prepared in ${fmt(state.prepareMs, 0)} ms`}); rendering the sender's motion`);
    setStatus("rendering", ["ok", `Room ${room}`], null);
  } else if (name === "rate_decision") {
    state.rate = detail;
  } else if (name === "sender_error") {
    log("error", `sender: ${detail.code}: ${detail.message}`);
  } else if (name === "model_mismatch") {
    fallback(`this page's networks are not the sender's model (${detail})`);
  } else if (name === "error") {
    log("error", detail);
    setStatus("error", ["bad", "Error"], ["error", detail]);
  }
}

async function preparePortrait(msg) {
  const t0 = performance.now();
  const blob = new Blob([msg.image], { type: `image/${msg.imageFormat}` });
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  if (bitmap.width !== msg.width || bitmap.height !== msg.height) {
    throw new Error(`the portrait is ${bitmap.width}x${bitmap.height}, the message says ${msg.width}x${msg.height}`);
  }
  const s = renderer.size;
  const scratch = document.createElement("canvas");
  scratch.width = scratch.height = s;
  const scratchCtx = scratch.getContext("2d", { willReadFrequently: true });
  scratchCtx.imageSmoothingQuality = "high"; // only when the sender's crop is not the model's size (it is: S x S)
  scratchCtx.drawImage(bitmap, 0, 0, s, s);
  const prepared = await renderer.prepare(scratchCtx.getImageData(0, 0, s, s));
  ctx.drawImage(scratch, 0, 0);
  state.prepareMs = performance.now() - t0;
  return prepared;
}

// -- playout and rendering ------------------------------------------------------------------------------------
function tick() {
  const holder = link;
  if (!holder) return;
  const now = Date.now();
  holder.session.tick(now);
  const frames = holder.session.popDue(now);
  if (!frames.length) return;
  const t = performance.now();
  for (let i = 0; i < frames.length; i++) dueAt.push(t);
  state.framesDue += frames.length;
  state.framesSkipped += frames.length - 1 + (pending ? 1 : 0);
  pending = frames[frames.length - 1];
  if (!busy) renderPending(holder);
}

async function renderPending(holder) {
  while (pending && link === holder) {
    const frame = pending;
    pending = null;
    busy = true;
    const t0 = performance.now();
    try {
      const rgba = await renderer.render(frame.motion);
      if (link !== holder) break;
      const t1 = performance.now();
      ctx.putImageData(new ImageData(rgba, renderer.size, renderer.size), 0, 0);
      state.renderMs.push(t1 - t0);
      if (state.renderMs.length > 100) state.renderMs.shift();
      renderedAt.push(t1);
      state.framesRendered += 1;
      if (firstRenderAt === null) firstRenderAt = t1;
      const wallNow = Date.now();
      state.lastRendered = { slot: frame.slot, streamId: frame.streamId, seq: frame.seq, concealed: frame.concealed, renderedAt: wallNow };
      if (!frame.concealed) {
        latencies.push(wallNow - frame.captureMs);
        if (latencies.length > 100) latencies.shift();
      }
    } catch (exc) {
      state.renderErrors += 1;
      log("error", `render failed: ${exc.message || exc}`);
      if (state.renderErrors >= MAX_RENDER_ERRORS) fallback(`the render failed ${state.renderErrors} times (${exc.message || exc})`);
    } finally {
      busy = false;
    }
  }
}

// -- stats, once a second -------------------------------------------------------------------------------------
async function transportBytes(pc) {
  let bytes = null;
  try {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "transport" && Number.isFinite(s.bytesReceived)) bytes = (bytes ?? 0) + s.bytesReceived;
    });
  } catch {
    return null;
  }
  return bytes;
}

async function everySecond() {
  const now = performance.now();
  const holder = link;
  if (holder) {
    const bytes = await transportBytes(holder.pc);
    if (bytes !== null) {
      state.bytesReceived = bytes;
      byteSamples.push([now, bytes]);
      while (byteSamples.length > 1 && byteSamples[0][0] < now - RATE_WINDOW_MS) byteSamples.shift();
      const [t0, b0] = byteSamples[0];
      state.inKbps = now > t0 ? ((bytes - b0) * 8) / (now - t0) : null;
      const session = holder.session;
      if (session.packets > 0 && firstMotionBytes === null) firstMotionBytes = [now, bytes];
      if (firstMotionBytes !== null && now - firstMotionBytes[0] > 1000) {
        state.inKbpsMotion = ((bytes - firstMotionBytes[1]) * 8) / (now - firstMotionBytes[0]);
      }
    }
    const session = holder.session;
    state.packets = session.packets;
    state.payloadKbps = session.firstPacketMs === null ? null : (session.payloadBytes * 8) / Math.max(1, Date.now() - session.firstPacketMs);
    const fb = session.depacketizer.feedback();
    state.framesLost = fb ? fb.framesLost : 0;
    state.framesConcealed = session.playout.framesConcealed;
    state.framesLate = session.playout.framesLate;
    state.playoutDelayMs = session.playout.targetDelayMs;
    await syncAudio(holder);
  }
  state.fps = (countSince(renderedAt, now - RATE_WINDOW_MS) * 1000) / RATE_WINDOW_MS;
  state.dueFps = (countSince(dueAt, now - RATE_WINDOW_MS) * 1000) / RATE_WINDOW_MS;
  state.renderMsMedian = median(state.renderMs.slice(-20));
  state.latencyMsMedian = median(latencies);
  judge(now);
  show();
}

/** Hand over when this browser renders below min_fps (or below 90 % of the frames due) for JUDGE_WINDOW_MS. */
function judge(now) {
  if (!(minFps > 0) || state.fallback !== null || firstRenderAt === null || now - firstRenderAt < JUDGE_WINDOW_MS) return;
  const rendered = (countSince(renderedAt, now - JUDGE_WINDOW_MS) * 1000) / JUDGE_WINDOW_MS;
  const due = (countSince(dueAt, now - JUDGE_WINDOW_MS) * 1000) / JUDGE_WINDOW_MS;
  if (cannotKeepUp(rendered, due, minFps)) {
    fallback(`this browser renders ${rendered.toFixed(1)} fps (${fmt(state.renderMsMedian, 0)} ms a frame on ${state.backend}, ` +
      `${state.threads} thread${state.threads === 1 ? "" : "s"}, model ${state.variant}), below the ${minFps} fps it needs`);
  }
}

function show() {
  const rate = state.rate;
  setStat("stat-fps", fmt(state.fps), `of ${fmt(state.dueFps, 0)} due`);
  setStat("stat-render", fmt(state.renderMsMedian, 0));
  setStat("stat-in", fmt(state.inKbps, 1));
  setStat("stat-payload", fmt(state.payloadKbps, 2));
  setStat("stat-k", rate ? String(rate.keypoints) : "—", rate ? `${rate.frames_per_packet} frame/packet, ${rate.preset}` : "");
  setStat("stat-loss", `${state.framesLost ?? 0} / ${state.framesConcealed ?? 0}`);
  setStat("stat-delay", fmt(state.playoutDelayMs, 0));
  setStat("stat-skip", String(state.framesSkipped));
  $("cost-in").textContent = `${fmt(state.inKbps, 1)} kbps in`;
  $("stats-age").textContent = state.framesRendered ? `${state.framesRendered} frames rendered` : "no frame yet";
  $("stat-detail").textContent = [
    `${state.backend}${state.backend === "wasm" ? `, ${state.threads} thread${state.threads === 1 ? "" : "s"}` : ""}`,
    state.crossOriginIsolated ? "cross-origin isolated" : "not cross-origin isolated (1 WASM thread)",
    state.latencyMsMedian !== null ? `capture → on the canvas ${fmt(state.latencyMsMedian, 0)} ms` : null,
    `${state.packets} motion packets`,
    state.audio !== null ? `sound: ${state.audio.playing ? "playing" : "muted (click Unmute)"}, buffer ${fmt(state.audio.jitterBufferMs, 0)} ms ` +
      `(target ${fmt(state.audio.targetMs, 0)}: the face's wait)` : null,
    state.prepareMs !== null ? `portrait prepared in ${fmt(state.prepareMs, 0)} ms` : null,
    `networks loaded in ${fmt(state.loadMs, 0)} ms`,
  ].filter(Boolean).join(" · ");
}

window.kpcallReceiveSnapshot = () => {
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let binary = "";
  for (let i = 0; i < data.length; i += 4) binary += String.fromCharCode(data[i], data[i + 1], data[i + 2]);
  return { frame: state.lastRendered, pixels: btoa(binary) };
};

async function main() {
  $("min-fps").textContent = minFps > 0 ? `below ${minFps} fps` : "never (min_fps=0)";
  document.title = `kpcall — room ${room}, rendered here`;
  setStatus("loading", ["wait", "Loading…"], ["info", "Loading the networks (onnxruntime-web)…"]);
  const t0 = performance.now();
  try {
    const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
    // proxy: WASM inference in a worker, so that this thread stamps motion packets as they arrive (?proxy=0: here)
    // the call's frame period, then the slowest render still worth it (min_fps; its default where the page never hands
    // over), with 10 % kept for the page's own work
    const budgets = [0.9 * 1000 / CALL_FPS, 0.9 * 1000 / (minFps > 0 ? minFps : DEFAULT_MIN_FPS)];
    const best = await NeuralRenderer.loadBest(params.get("models") ?? "models/", {
      backend: params.get("backend") ?? "auto", threads, proxy: params.get("proxy") !== "0",
    }, budgets);
    renderer = best.renderer;
    state.variants = best.trials;
    state.variant = renderer.manifest.preset;
    state.variantReason = best.reason;
  } catch (exc) {
    fallback(`this browser cannot run the networks here (${exc.message || exc})`);
    return;
  }
  state.loadMs = performance.now() - t0;
  state.backend = renderer.backend;
  state.threads = renderer.threads;
  state.proxy = renderer.proxy;
  canvas.width = canvas.height = renderer.size;
  $("backend").textContent = renderer.backend === "webgpu" ? "WebGPU (untested here)"
    : `WASM, ${renderer.threads} thread${renderer.threads === 1 ? "" : "s"}${renderer.proxy ? " in a worker" : ""}`;
  log("info", `networks loaded and timed in ${fmt(state.loadMs, 0)} ms: ${state.variants.map((t) => `${t.preset} ${fmt(t.renderMs, 0)} ms`).join(", ")}`);
  log("info", `rendering with ${renderer.manifest.preset} (${renderer.manifest.model_id}, ${renderer.size}², ${$("backend").textContent}): ${state.variantReason}`);
  $("variant").textContent = `${renderer.manifest.preset}: ${state.variantReason}`;
  connect();
  setInterval(tick, TICK_MS);
  setInterval(() => everySecond().catch((exc) => log("error", `stats: ${exc.message || exc}`)), 1000);
}

main().catch((exc) => {
  log("error", String(exc && exc.stack ? exc.stack : exc));
  setStatus("error", ["bad", "Error"], ["error", `error: ${exc.message || exc}`]);
});
