// The receiver's jitter buffer: a port of receiver/playout.py (one output frame per sender frame, paced,
// late frames dropped, gaps concealed by concealment.js).
//
//   const playout = new PlayoutBuffer();
//   for (const frame of depacketizer.receive(bytes)) playout.push(frame, Date.now());
//   for (const out of playout.popDue(Date.now())) render(out.motion);      // e.g. on requestAnimationFrame
//
// The playout time of sender frame s is due(s) = capture(s) + offset + targetDelay: capture(s) the sender's
// capture timestamp (estimated from the frame rate for a frame that never arrived), offset the smallest
// arrival − capture seen recently, targetDelay the 95th percentile of the delay above it plus a guard. A
// frame arriving after its playout time is dropped (late); one missing at its playout time is concealed
// (interpolated when a later one is buffered, else extrapolated). After maxConcealMs of concealment with
// nothing arriving the buffer stalls and re-anchors on the next frame; a new stream id re-anchors too.
// All times are milliseconds of one wall clock; nothing here sleeps.

import { TIMESTAMP_MODULUS, mod, unwrapSeq } from "./bitstream.js";
import { extrapolate, interpolate } from "./concealment.js";

export const MAX_BUFFERED = 512;

/** A 32-bit ms timestamp -> the full ms value closest to nearMs. */
export function unwrapTimestampMs(tsMs, nearMs) {
  const near = Math.trunc(nearMs);
  const diff = mod(near - tsMs + TIMESTAMP_MODULUS / 2, TIMESTAMP_MODULUS) - TIMESTAMP_MODULUS / 2;
  return near - diff;
}

/** numpy.percentile(values, q), method "linear", with numpy's own order of operations (same bits). */
export function percentile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  const quantile = q / 100;
  const virtual = (n - 1) * quantile; // numpy "linear": virtual index (n - 1) q
  const lo = Math.min(Math.max(Math.floor(virtual), 0), n - 1);
  const hi = Math.min(lo + 1, n - 1);
  const gamma = virtual - Math.floor(virtual);
  const a = sorted[lo];
  const diff = sorted[hi] - a;
  return gamma >= 0.5 ? sorted[hi] - diff * (1 - gamma) : a + diff * gamma; // numpy _lerp
}

const minKey = (map) => Math.min(...map.keys());

export class PlayoutBuffer {
  constructor({ fps = 25.0, minDelayMs = 0.0, maxDelayMs = 500.0, guardMs = 5.0, window = 100, maxConcealMs = 1000.0 } = {}) {
    this.fps = fps;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.guardMs = guardMs;
    this.window = window;
    this.maxConcealMs = maxConcealMs;
    this.nextSlot = 0;
    this.framesLate = 0;
    this.framesConcealed = 0;
    this.framesInterpolated = 0;
    this.framesDuplicate = 0;
    this.stalls = 0;
    this.targetDelayMs = 0.0;
    this._resetStream(null);
  }

  _resetStream(streamId) {
    this.streamId = streamId;
    this._extLast = null; // newest unwrapped seq received
    this._buffer = new Map(); // ext seq -> {frame, captureMs, arrivalMs}
    this._nextSeq = null; // unwrapped seq of the next output slot; null = anchor on arrival
    this._delays = [];
    this._lastCapture = null; // [ext seq, capture ms] of the newest received frame
    this._lastDue = null;
    this._outPrev = null; // [ext, motion] of the last two decoded outputs, for extrapolation
    this._outLast = null;
    this._concealedRun = 0;
    this._lastArrival = null;
  }

  /** A new sender: re-anchor on its first frame, whatever its stream id (output slots keep counting). */
  restart() {
    this._resetStream(null);
  }

  get intervalMs() {
    return 1000.0 / this.fps;
  }

  setFps(fps) {
    if (!(fps >= 1.0 && fps <= 120.0)) throw new RangeError(`fps must be in [1, 120], got ${fps}`);
    this.fps = fps;
  }

  get stalled() {
    return this._nextSeq === null;
  }

  get jitterMs() {
    if (!this._delays.length) return 0.0;
    const low = Math.min(...this._delays);
    return percentile(this._delays.map((d) => d - low), 95);
  }

  /** Add a decoded frame (depacketizer.js) that arrived at arrivalMs; false if dropped (late or duplicate). */
  push(frame, arrivalMs) {
    if (frame.streamId !== this.streamId) this._resetStream(frame.streamId);
    const ext = unwrapSeq(frame.seq, this._extLast);
    const capture = unwrapTimestampMs(frame.captureTsMs, arrivalMs);
    this._lastArrival = arrivalMs;
    if (this._extLast === null || ext > this._extLast) {
      this._extLast = ext;
      this._lastCapture = [ext, capture];
    }
    this._delays.push(arrivalMs - capture);
    if (this._delays.length > this.window) this._delays.shift();
    this._updateTarget();
    if (this._nextSeq !== null && ext < this._nextSeq) {
      this.framesLate += 1;
      return false;
    }
    if (this._buffer.has(ext)) {
      this.framesDuplicate += 1;
      return false;
    }
    if (this._nextSeq === null) {
      this._nextSeq = ext; // anchor (first frame, or after a stall)
      this._lastDue = null;
    }
    this._buffer.set(ext, { frame, captureMs: capture, arrivalMs });
    while (this._buffer.size > MAX_BUFFERED) this._buffer.delete(minKey(this._buffer));
    return true;
  }

  _updateTarget() {
    const excess = this.jitterMs + this.guardMs;
    const target = Math.min(this.maxDelayMs, Math.max(this.minDelayMs, excess));
    if (target >= this.targetDelayMs) this.targetDelayMs = target;
    else this.targetDelayMs = Math.max(target, this.targetDelayMs - 0.05 * this.intervalMs); // come down slowly
  }

  _captureOf(ext) {
    const arrived = this._buffer.get(ext);
    if (arrived !== undefined) return arrived.captureMs;
    const [seq, capture] = this._lastCapture;
    return capture + (ext - seq) * this.intervalMs;
  }

  _dueOf(ext) {
    const offset = this._delays.length ? Math.min(...this._delays) : 0.0;
    let due = this._captureOf(ext) + offset + this.targetDelayMs;
    if (this._lastDue !== null) due = Math.max(due, this._lastDue);
    return due;
  }

  /** When the next output frame is due (null while stalled / before the first frame). */
  nextDueMs() {
    return this._nextSeq === null ? null : this._dueOf(this._nextSeq);
  }

  /**
   * Every output frame due by nowMs, in order: {slot, streamId, seq (unwrapped), dueMs, motion, captureMs,
   * concealed, arrivalMs (null when concealed)}.
   */
  popDue(nowMs) {
    const out = [];
    while (this._nextSeq !== null) {
      const ext = this._nextSeq;
      const due = this._dueOf(ext);
      if (due > nowMs) break;
      const arrived = this._buffer.get(ext);
      let frame;
      if (arrived !== undefined) {
        this._buffer.delete(ext);
        const { motion } = arrived.frame;
        this._outPrev = this._outLast;
        this._outLast = [ext, motion];
        this._concealedRun = 0;
        frame = {
          slot: this.nextSlot, streamId: arrived.frame.streamId, seq: ext, dueMs: due, motion,
          captureMs: arrived.captureMs, concealed: false, arrivalMs: arrived.arrivalMs,
        };
      } else {
        if (this._concealedRun * this.intervalMs >= this.maxConcealMs && !this._buffer.size) {
          this._nextSeq = null; // no motion for a while: stall until the sender resumes
          this._concealedRun = 0;
          this.stalls += 1;
          break;
        }
        const motion = this._conceal(ext);
        this._concealedRun += 1;
        this.framesConcealed += 1;
        frame = {
          slot: this.nextSlot, streamId: this.streamId || 0, seq: ext, dueMs: due, motion,
          captureMs: this._captureOf(ext), concealed: true, arrivalMs: null,
        };
      }
      out.push(frame);
      this._lastDue = due;
      this.nextSlot += 1;
      this._nextSeq = ext + 1;
    }
    return out;
  }

  _conceal(ext) {
    const later = [...this._buffer.keys()].filter((s) => s > ext);
    const last = this._outLast;
    if (last === null) {
      if (later.length) return this._buffer.get(Math.min(...later)).frame.motion; // the first frame to be shown
      throw new Error("concealment without any motion"); // anchoring guarantees a first frame
    }
    if (later.length) {
      const next = Math.min(...later);
      this.framesInterpolated += 1;
      return interpolate(last[1], this._buffer.get(next).frame.motion, (ext - last[0]) / (next - last[0]));
    }
    const prev = this._outPrev;
    if (prev === null) return last[1];
    return extrapolate(prev[1], last[1], last[0] - prev[0], ext - last[0]);
  }
}
