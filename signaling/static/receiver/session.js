// The browser receiver's side of one sender link, without the DOM or WebRTC: the control protocol
// (signaling/PROTOCOL.md §2-3), the motion path and the playout, as receiver/session.py does them.
//
//   const link = new SenderLink({ modelId, modelVersion, send: (data) => control.send(data), prepare, store });
//   control.onmessage = (e) => link.onControl(e.data);         // hello, reference chunks, ping, rate_decision, error
//   motion.onmessage = (e) => link.onMotion(e.data, Date.now());
//   setInterval(() => link.tick(Date.now()), 50);              // feedback (acks, KEY requests) and delay reports
//   for (const frame of link.popDue(Date.now())) render(frame); // the playout: one frame per sender frame, concealed gaps
//
// ``modelVersion`` null accepts any version of ``modelId`` (a manifest exported before it named its version).
// ``prepare(msg)`` (async) decodes and prepares the portrait of an unpacked reference message and returns the
// prepared state; ``store`` (a Map) keeps prepared states by cache key, so a sender that returns with the same
// portrait (the page's own re-join) is answered "have" and sends nothing. Feedback goes on the control channel
// (binary), at most every ``feedbackIntervalMs`` and at once for a KEY request or after a KEY; a delay report
// every ``reportIntervalMs``. The page never asks for motion as RTP (``motion_transport``): a browser cannot
// read the SRTP motion stream, so the sender keeps motion on the "motion" data channel.

import { BitstreamError } from "../codec/bitstream.js";
import { ControlError, decodeControl, encodeControl } from "../codec/control.js";
import { MotionDepacketizer, packFeedback } from "../codec/depacketizer.js";
import { PlayoutBuffer, percentile, unwrapTimestampMs } from "../codec/playout.js";
import { ChunkReassembler, cacheKey, unpackReferenceMessage } from "../codec/reference_message.js";

export const ERROR_REPLY_INTERVAL_MS = 1000;
export const MIN_DUE_FPS = 5; // the hand-over is judged only while the call plays at least this many frames a second
export const PACKET_DELAY_WINDOW = 100;
const FORCED_FEEDBACK_REPEAT_MS = 100;

const isBinary = (data) => data instanceof ArrayBuffer || ArrayBuffer.isView(data);
const asBytes = (data) => (data instanceof Uint8Array ? data : ArrayBuffer.isView(data)
  ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data));

export class SenderLink {
  constructor({ modelId, modelVersion, send, prepare, store = new Map(), onEvent = () => {}, feedbackIntervalMs = 1000,
    reportIntervalMs = 5000, maxDelayMs = 500 }) {
    this.modelId = modelId;
    this.modelVersion = modelVersion;
    this.send = send;
    this.prepare = prepare;
    this.store = store;
    this.onEvent = onEvent;
    this.feedbackIntervalMs = feedbackIntervalMs;
    this.reportIntervalMs = reportIntervalMs;
    this.depacketizer = new MotionDepacketizer();
    this.playout = new PlayoutBuffer({ maxDelayMs });
    this.reassembler = new ChunkReassembler();
    this.hello = null;
    this.key = null;
    this.state = null; // the prepared portrait (whatever prepare returned)
    this.ready = false;
    this.rate = null; // the sender's latest rate_decision
    this.packets = 0;
    this.payloadBytes = 0;
    this.badPackets = 0;
    this.badControl = 0;
    this.firstPacketMs = null;
    this.packetDelaysMs = [];
    this.remoteErrors = [];
    this.lastErrorReplyMs = -Infinity;
    this.lastFeedback = null;
    this.lastFeedbackMs = -Infinity;
    this.lastReportMs = null;
    this.framesWithoutReference = 0;
    this._jobs = Promise.resolve();
  }

  sendControl(msg) {
    this.send(encodeControl(msg));
  }

  errorReply(code, message, nowMs = Date.now()) {
    if (nowMs - this.lastErrorReplyMs >= ERROR_REPLY_INTERVAL_MS) {
      this.lastErrorReplyMs = nowMs;
      this.sendControl({ type: "error", code, message: [...message].slice(0, 500).join("") });
    }
  }

  /** p95 of the per-packet delay above its minimum (receiver/session.py network_jitter_ms). */
  get networkJitterMs() {
    if (!this.packetDelaysMs.length) return 0.0;
    const low = Math.min(...this.packetDelaysMs);
    return percentile(this.packetDelaysMs.map((d) => d - low), 95);
  }

  // -- control -------------------------------------------------------------------------------------------
  /** A message of the sender's control channel: JSON text, or a reference-message chunk (binary). */
  onControl(data) {
    if (isBinary(data)) {
      this._onReferenceChunk(asBytes(data));
      return;
    }
    let msg;
    try {
      msg = decodeControl(data);
    } catch (exc) {
      if (!(exc instanceof ControlError)) throw exc;
      this.badControl += 1;
      this.errorReply("bad_message", exc.message);
      return;
    }
    switch (msg.type) {
      case "hello":
        this._queue(() => this._onHello(msg));
        break;
      case "ping":
        this.sendControl({ type: "pong", t_ms: msg.t_ms });
        break;
      case "rate_decision":
        this.rate = msg;
        this.onEvent("rate_decision", msg);
        break;
      case "error":
        this.remoteErrors.push(`${msg.code}: ${msg.message}`);
        if (this.remoteErrors.length > 20) this.remoteErrors.shift();
        this.onEvent("sender_error", msg);
        break;
      case "stats":
        this.onEvent("stats", msg);
        break;
      case "pong":
        break;
      default:
        this.errorReply("unexpected", `a receiver does not accept '${msg.type}' from a sender`);
    }
  }

  _queue(job) {
    this._jobs = this._jobs.then(job).catch((exc) => this.onEvent("error", String(exc && exc.message ? exc.message : exc)));
    return this._jobs;
  }

  /** Resolves once every queued hello/reference job has run (tests). */
  idle() {
    return this._jobs;
  }

  async _onHello(hello) {
    this.hello = hello;
    if (hello.model_id !== this.modelId || (this.modelVersion !== null && hello.model_version !== this.modelVersion)) {
      const text = `the sender's motion is for model ${hello.model_id} ${hello.model_version}, this receiver runs ` +
        `${this.modelId} ${this.modelVersion ?? ""}: use the same weights on both sides`;
      this.sendControl({ type: "error", code: "model_mismatch", message: text });
      this.onEvent("model_mismatch", text);
      return;
    }
    try {
      this.playout.setFps(hello.fps);
    } catch {
      // out of range: keep the default rate (the decoder refused it already)
    }
    const key = cacheKey(hello.content_hash, hello.model_id, hello.model_version);
    this.key = key;
    const have = this.store.has(key);
    this.sendControl({ type: "reference_status", content_hash: hello.content_hash, have });
    this.onEvent("hello", { hello, have });
    if (have) this._ready(key, this.store.get(key), true);
  }

  _onReferenceChunk(chunk) {
    let msg = null;
    try {
      const whole = this.reassembler.add(chunk);
      msg = whole === null ? null : unpackReferenceMessage(whole);
    } catch (exc) {
      if (!(exc instanceof BitstreamError)) throw exc;
      this.badControl += 1;
      this.errorReply("bad_reference", exc.message);
      return;
    }
    if (msg !== null) this._queue(() => this._onReference(msg));
  }

  async _onReference(msg) {
    const key = cacheKey(msg.contentHash, msg.modelId, msg.modelVersion);
    if (this.hello === null || key !== this.key) {
      this.errorReply("unexpected_reference", `reference ${msg.contentHash.slice(0, 12)} was not announced by a hello`);
      return;
    }
    this.onEvent("reference", msg);
    let state;
    try {
      state = await this.prepare(msg);
    } catch (exc) {
      const text = String(exc && exc.message ? exc.message : exc);
      this.sendControl({ type: "error", code: "bad_reference", message: [...text].slice(0, 500).join("") });
      this.onEvent("error", `cannot use the reference portrait: ${text}`);
      return;
    }
    this.store.set(key, state);
    this._ready(key, state, false);
  }

  _ready(key, state, cached) {
    this.state = state;
    this.ready = true;
    const hash = key.split(":", 1)[0];
    this.sendControl({ type: "reference_ready", content_hash: hash, cached });
    this.onEvent("reference_ready", { cached });
  }

  // -- motion --------------------------------------------------------------------------------------------
  /** A message of the "motion" data channel (a motion packet) that arrived at ``nowMs``. */
  onMotion(data, nowMs) {
    if (!isBinary(data)) {
      this.badPackets += 1;
      this.errorReply("bad_packet", `motion packets are binary; got text (${this.badPackets} rejected)`, nowMs);
      return [];
    }
    const packet = asBytes(data);
    let frames;
    try {
      frames = this.depacketizer.receive(packet);
    } catch (exc) {
      if (!(exc instanceof BitstreamError)) throw exc;
      this.badPackets += 1;
      this.errorReply("bad_packet", `${exc.message} (${this.badPackets} rejected)`, nowMs);
      return [];
    }
    this.packets += 1;
    this.payloadBytes += packet.length;
    if (this.firstPacketMs === null) this.firstPacketMs = nowMs;
    for (const frame of frames) this.playout.push(frame, nowMs);
    if (frames.length) {
      const last = frames[frames.length - 1];
      this.packetDelaysMs.push(nowMs - unwrapTimestampMs(last.captureTsMs, nowMs));
      if (this.packetDelaysMs.length > PACKET_DELAY_WINDOW) this.packetDelaysMs.shift();
    }
    const fb = this.depacketizer.feedback();
    if (fb !== null && (fb.keyRequestAfter !== null || frames.some((f) => f.key))) this.sendFeedback(nowMs, true);
    return frames;
  }

  /** Feedback as receiver/session.py _send_feedback sends it: when it changed, at most every feedbackIntervalMs
   * (forced: at once, unless the same feedback went out in the last 100 ms). */
  sendFeedback(nowMs, force = false) {
    const fb = this.depacketizer.feedback();
    if (fb === null) return false;
    const state = `${fb.streamId},${fb.ackedSeq},${fb.ackedMask},${fb.keyRequestAfter}`;
    if (state === this.lastFeedback && !force) return false;
    if (!force && nowMs - this.lastFeedbackMs < this.feedbackIntervalMs) return false;
    if (force && state === this.lastFeedback && nowMs - this.lastFeedbackMs < FORCED_FEEDBACK_REPEAT_MS) return false;
    this.lastFeedback = state;
    this.lastFeedbackMs = nowMs;
    this.send(packFeedback(fb));
    return true;
  }

  /** Call every ~50 ms: feedback when due, a delay report every reportIntervalMs once the call runs. */
  tick(nowMs) {
    this.sendFeedback(nowMs);
    if (this.hello === null) return;
    if (this.lastReportMs === null) this.lastReportMs = nowMs;
    if (nowMs - this.lastReportMs >= this.reportIntervalMs) {
      this.lastReportMs = nowMs;
      const round2 = (x) => Math.round(x * 100) / 100;
      this.sendControl({
        type: "delay_report", jitter_ms: round2(this.networkJitterMs), playout_delay_ms: round2(this.playout.targetDelayMs),
        late_frames: this.playout.framesLate, concealed_frames: this.playout.framesConcealed,
      });
    }
  }

  /** The output frames due by ``nowMs`` (playout.js popDue); counted as without reference until the portrait is ready. */
  popDue(nowMs) {
    const frames = this.playout.popDue(nowMs);
    if (!this.ready) {
      this.framesWithoutReference += frames.length;
      return [];
    }
    return frames;
  }
}

/**
 * Whether a page that rendered ``renderedFps`` while ``dueFps`` frames a second came due should hand over to the
 * receiver's VP8: it renders below ``minFps`` and below 90 % of the frames due, while the call plays (not in a stall
 * or a sender's pause). ``minFps`` 0 never hands over.
 */
export function cannotKeepUp(renderedFps, dueFps, minFps) {
  return minFps > 0 && dueFps >= MIN_DUE_FPS && renderedFps < Math.min(minFps, 0.9 * dueFps);
}
