// Motion packets: header parsing and body decoding, a port of codec/bitstream.py (wire version 1).
//
// The layout is documented in codec/bitstream.py; in short: 0xA1, flags (KEY, frames - 1, layout,
// inline reference distance), varint stream id, u16 seq, KEY: u32 timestamp / DELTA: maybe a varint
// distance, an optional layout (preset id, K, presence mask), then the range-coded body.
//
//   const header = unpackHeader(bytes);                 // BitstreamError for a malformed header
//   const frames = decodePacket(bytes, header, ref);    // ref: the CodedFrame header.referenceSeq (DELTA)
//
// Every error is a BitstreamError whose message is the Python decoder's, word for word, so both sides
// say the same thing about the same bytes (tests/test_motion_js.py checks it on golden vectors).

import { NUM_POSE_FIELDS, PRESETS, PRESET_IDS } from "./quantize.js";
import { PREFIX_CONTEXTS, RangeCoderError, RangeDecoder, RangeEncoder, newModel } from "./range_coder.js";

export const MAGIC_NIBBLE = 0xa;
export const VERSION = 1;
export const FLAG_KEY = 0x80;
export const FLAG_LAYOUT = 0x08;
export const FLAG_DISTANCE = 0x07;
export const MAX_INLINE_DISTANCE = 7;
export const MAX_FRAMES_PER_PACKET = 8;
export const MAX_REFERENCE_DISTANCE = 128;
export const MAX_PACKET_BYTES = 8192;
export const SEQ_MODULUS = 1 << 16;
export const TIMESTAMP_MODULUS = 2 ** 32;
export const MAX_STREAM_ID = 2 ** 32 - 1;
export const MAX_NUM_KEYPOINTS = 64;
const MAX_INTERVAL_RESIDUAL = 2 ** 33;
const MAX_INTERVAL_MS = 1 << 16;
const ZERO_PER_FIELD = 9;
const SIGN_PER_FIELD = 9;
const MAG_SETS_PER_FIELD = 3;
const KEY_CLASSES = 9;
const KEY_SET = 2 + PREFIX_CONTEXTS;
const TS_SET = 2 + PREFIX_CONTEXTS;

/** Any malformed or inconsistent motion packet (codec.exceptions.BitstreamError). */
export class BitstreamError extends Error {
  constructor(message) {
    super(message);
    this.name = "BitstreamError";
  }
}

/** Python's floor modulo. */
export function mod(a, m) {
  return ((a % m) + m) % m;
}

/** True if 16-bit sequence number a is after b (RFC 1982 serial arithmetic). */
export function seqNewer(a, b) {
  const d = mod(a - b, SEQ_MODULUS);
  return d > 0 && d < SEQ_MODULUS / 2;
}

/** The unwrapped sequence number of 16-bit ``seq`` closest to the unwrapped ``near`` (null: seq itself). */
export function unwrapSeq(seq, near) {
  if (near === null) return seq;
  const delta = mod(seq - near, SEQ_MODULUS);
  return near + (delta >= SEQ_MODULUS / 2 ? delta - SEQ_MODULUS : delta);
}

/** A layout: the quantizer preset and which of the K keypoints' δ are sent. */
export function makeLayout(presetId, present) {
  return Object.freeze({ presetId, present: Object.freeze(present.slice()) });
}

function layoutsCompatible(a, b) {
  return a.presetId === b.presetId && a.present.length === b.present.length;
}

function layoutsEqual(a, b) {
  return layoutsCompatible(a, b) && a.present.every((flag, k) => flag === b.present[k]);
}

const hex2 = (byte) => byte.toString(16).padStart(2, "0");

function getVarint(buf, pos, what, maxValue) {
  let value = 0;
  for (let i = 0; i < 5; i++) {
    if (pos + i >= buf.length) {
      throw new BitstreamError(`truncated packet: ${what} varint runs past the end (${buf.length} bytes)`);
    }
    const byte = buf[pos + i];
    value += (byte & 0x7f) * 2 ** (7 * i);
    if (!(byte & 0x80)) {
      if (i && byte === 0) throw new BitstreamError(`non-minimal varint for ${what} at byte ${pos}`);
      if (value > maxValue) throw new BitstreamError(`${what} ${value} exceeds the maximum ${maxValue}`);
      return [value, pos + i + 1];
    }
  }
  throw new BitstreamError(`varint for ${what} at byte ${pos} is longer than 5 bytes`);
}

/**
 * Parse and validate a motion packet's header (Uint8Array) -> {key, numFrames, streamId, seq,
 * referenceDistance (0 for KEY), timestampMs (KEY only, else null), layout (null: inherit the
 * reference's), size (header bytes), referenceSeq (null for KEY), seqs}. BitstreamError if malformed.
 */
export function unpackHeader(buf) {
  if (!(buf instanceof Uint8Array)) {
    throw new BitstreamError(`a motion packet must be bytes, got ${buf === null ? "null" : typeof buf}`);
  }
  if (buf.length > MAX_PACKET_BYTES) {
    throw new BitstreamError(`oversize motion packet: ${buf.length} bytes > ${MAX_PACKET_BYTES}`);
  }
  if (buf.length < 2) {
    throw new BitstreamError(`truncated motion packet: ${buf.length} bytes, the header needs at least 6`);
  }
  if (buf[0] >> 4 !== MAGIC_NIBBLE) {
    throw new BitstreamError(`not a motion packet: first byte 0x${hex2(buf[0])}, expected 0x${MAGIC_NIBBLE.toString(16)}?`);
  }
  if ((buf[0] & 0x0f) !== VERSION) {
    throw new BitstreamError(`unsupported motion packet version ${buf[0] & 0x0f} (this build reads ${VERSION})`);
  }
  const flags = buf[1];
  const key = Boolean(flags & FLAG_KEY);
  if (key && flags & FLAG_DISTANCE) {
    throw new BitstreamError(`KEY packet with reference-distance bits set in flags 0x${hex2(flags)}`);
  }
  const numFrames = ((flags >> 4) & 0x07) + 1;
  const hasLayout = Boolean(flags & FLAG_LAYOUT);
  if (key && !hasLayout) throw new BitstreamError("KEY packet without a layout");
  let [streamId, pos] = getVarint(buf, 2, "stream id", MAX_STREAM_ID);
  if (pos + 2 > buf.length) {
    throw new BitstreamError(`truncated motion packet: sequence number missing (${buf.length} bytes)`);
  }
  const seq = buf[pos] * 256 + buf[pos + 1];
  pos += 2;
  let timestampMs = null;
  let distance = 0;
  if (key) {
    if (pos + 4 > buf.length) throw new BitstreamError(`truncated KEY packet: timestamp missing (${buf.length} bytes)`);
    timestampMs = ((buf[pos] * 256 + buf[pos + 1]) * 256 + buf[pos + 2]) * 256 + buf[pos + 3];
    pos += 4;
  } else if (flags & FLAG_DISTANCE) {
    distance = flags & FLAG_DISTANCE;
  } else {
    [distance, pos] = getVarint(buf, pos, "reference distance", MAX_REFERENCE_DISTANCE);
    if (distance <= MAX_INLINE_DISTANCE) {
      throw new BitstreamError(`reference distance ${distance} in a varint (1..7 go in the flags byte)`);
    }
  }
  let layout = null;
  if (hasLayout) {
    if (pos + 2 > buf.length) throw new BitstreamError(`truncated motion packet: layout missing (${buf.length} bytes)`);
    const presetId = buf[pos];
    const numKeypoints = buf[pos + 1];
    pos += 2;
    if (!(presetId in PRESETS)) {
      throw new BitstreamError(`unknown quantizer preset id ${presetId} (known: [${PRESET_IDS.join(", ")}])`);
    }
    if (numKeypoints > MAX_NUM_KEYPOINTS) {
      throw new BitstreamError(`K = ${numKeypoints} exceeds the maximum of ${MAX_NUM_KEYPOINTS}`);
    }
    const maskLen = (numKeypoints + 7) >> 3;
    if (pos + maskLen > buf.length) {
      throw new BitstreamError(`truncated motion packet: presence mask needs ${maskLen} bytes`);
    }
    let mask = 0n;
    for (let i = maskLen - 1; i >= 0; i--) mask = (mask << 8n) | BigInt(buf[pos + i]);
    pos += maskLen;
    if (mask >> BigInt(numKeypoints)) {
      throw new BitstreamError(`presence mask 0x${mask.toString(16)} has bits set beyond K = ${numKeypoints}`);
    }
    const present = [];
    for (let k = 0; k < numKeypoints; k++) present.push(Boolean((mask >> BigInt(k)) & 1n));
    layout = makeLayout(presetId, present);
  }
  if (pos < buf.length && buf[buf.length - 1] === 0) {
    throw new BitstreamError("motion packet body ends in 0x00 (not produced by any encoder: corrupt)");
  }
  const seqs = [];
  for (let i = 0; i < numFrames; i++) seqs.push((seq + i) % SEQ_MODULUS);
  return {
    key, numFrames, streamId, seq, referenceDistance: distance, timestampMs, layout, size: pos,
    referenceSeq: key ? null : mod(seq - distance, SEQ_MODULUS), seqs,
  };
}

// --------------------------------------------------------------------------------------------
// Body

function contexts(numKeypoints) {
  const fields = NUM_POSE_FIELDS + 3 * numKeypoints;
  const zero = 0;
  const sign = zero + fields * ZERO_PER_FIELD;
  const mag = sign + fields * SIGN_PER_FIELD;
  const key = mag + fields * MAG_SETS_PER_FIELD * PREFIX_CONTEXTS;
  const ts = key + KEY_CLASSES * KEY_SET;
  return { zero, sign, mag, key, ts, total: ts + TS_SET };
}

/** The model a KEY packet (or a change of preset or K) starts from. */
export function freshModel(numKeypoints) {
  return newModel(contexts(numKeypoints).total);
}

function fieldOrder(layout) {
  const order = [0, 1, 2, 3, 4, 5];
  layout.present.forEach((flag, k) => {
    if (flag) order.push(NUM_POSE_FIELDS + 3 * k, NUM_POSE_FIELDS + 3 * k + 1, NUM_POSE_FIELDS + 3 * k + 2);
  });
  return order;
}

function neighbourFields(order) {
  return order.map((field, pos) => {
    if (field < NUM_POSE_FIELDS) return field % 3 ? pos - 1 : -1;
    return pos - 3 >= NUM_POSE_FIELDS ? pos - 3 : -1;
  });
}

function bounds(layout) {
  const p = PRESETS[layout.presetId];
  const out = [...p.angleQmax, p.translationQmax, p.translationQmax, p.translationQmax];
  for (let i = 0; i < 3 * layout.present.length; i++) out.push(p.expressionQmax);
  return out;
}

const keyClass = (field) => (field < NUM_POSE_FIELDS ? field : NUM_POSE_FIELDS + ((field - NUM_POSE_FIELDS) % 3));
const b2 = (v) => (v >= 2 || v <= -2 ? 2 : v ? 1 : 0);
const sg = (v) => (v > 0 ? 2 : v < 0 ? 0 : 1);

// Runs the frame coding procedure once, as encoder (values given) or decoder (values read).
class FrameCoder {
  constructor(layout, reference) {
    this.layout = layout;
    this.numFields = NUM_POSE_FIELDS + 3 * layout.present.length;
    this.ctx = contexts(layout.present.length);
    this.order = fieldOrder(layout);
    this.neighbour = neighbourFields(this.order);
    this.bounds = bounds(layout);
    if (reference === null || !layoutsCompatible(reference.state.layout, layout)) {
      this.model = freshModel(layout.present.length);
      this.prev = new Array(this.numFields).fill(0);
      this.lastInterval = 0;
    } else {
      this.model = new Uint16Array(reference.state.model);
      this.prev = reference.state.prevResidual.slice();
      this.lastInterval = reference.state.lastIntervalMs;
    }
    this.pred = reference === null ? null : reference.values.slice();
    this.predTs = reference === null ? null : reference.timestampMs;
  }

  // Encoder: values and timestampMs given; decoder (a RangeDecoder): values null -> [values, ts].
  codeFrame(coder, values, timestampMs, gap) {
    const { ctx, model } = this;
    const encoding = coder instanceof RangeEncoder;
    let ts;
    if (this.predTs === null) {
      ts = timestampMs; // a KEY packet's first timestamp comes from the header
    } else {
      const expected = gap * this.lastInterval;
      let dt;
      if (encoding) {
        dt = mod(timestampMs - this.predTs + TIMESTAMP_MODULUS / 2, TIMESTAMP_MODULUS) - TIMESTAMP_MODULUS / 2;
        coder.encodeInt(model, ctx.ts, ctx.ts + 1, ctx.ts + 2, dt - expected);
      } else {
        dt = expected + coder.decodeInt(model, ctx.ts, ctx.ts + 1, ctx.ts + 2, MAX_INTERVAL_RESIDUAL);
      }
      ts = mod(this.predTs + dt, TIMESTAMP_MODULUS);
      this.lastInterval = Math.max(-MAX_INTERVAL_MS, Math.min(MAX_INTERVAL_MS, Math.floor(dt / gap)));
    }
    const full = new Array(this.numFields).fill(0);
    const residual = new Array(this.numFields).fill(0);
    const coded = [];
    const key = this.pred === null;
    this.order.forEach((field, pos) => {
      const qmax = this.bounds[field];
      let r;
      let value;
      if (key) {
        const base = ctx.key + keyClass(field) * KEY_SET;
        if (encoding) {
          r = values[field];
          coder.encodeInt(model, base, base + 1, base + 2, r);
        } else {
          r = coder.decodeInt(model, base, base + 1, base + 2, qmax);
        }
        value = r;
      } else {
        const p = this.prev[field];
        const n = this.neighbour[pos] >= 0 ? coded[this.neighbour[pos]] : 0;
        const zc = ctx.zero + field * ZERO_PER_FIELD + b2(p) * 3 + b2(n);
        const sc = ctx.sign + field * SIGN_PER_FIELD + sg(p) * 3 + sg(n);
        const mc = ctx.mag + (field * MAG_SETS_PER_FIELD + b2(p)) * PREFIX_CONTEXTS;
        if (encoding) {
          r = values[field] - this.pred[field];
          coder.encodeInt(model, zc, sc, mc, r);
        } else {
          r = coder.decodeInt(model, zc, sc, mc, 2 * qmax);
        }
        value = this.pred[field] + r;
      }
      if (!(-qmax <= value && value <= qmax)) {
        throw new RangeCoderError(`field ${field} decodes to ${value}, outside the quantizer's ±${qmax}`);
      }
      coded.push(r);
      residual[field] = r;
      full[field] = value;
    });
    this.prev = key ? new Array(this.numFields).fill(0) : residual;
    this.pred = full;
    this.predTs = ts;
    return [full, ts];
  }

  state() {
    return Object.freeze({
      layout: this.layout, model: new Uint16Array(this.model), prevResidual: this.prev.slice(),
      lastIntervalMs: this.lastInterval,
    });
  }
}

function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Decode the body of a packet whose header unpackHeader parsed -> CodedFrames {seq, timestampMs,
 * values (6 + 3K grid indices), state} (keep them: later DELTA packets reference them). ``reference``:
 * the CodedFrame header.referenceSeq for a DELTA packet, null for a KEY. BitstreamError for an
 * inconsistent body: values outside the quantizer range, a layout mismatch, or bytes that are not
 * exactly what the encoder makes of the decoded frames.
 */
export function decodePacket(buf, header, reference) {
  if (header.key !== (reference === null)) {
    throw new BitstreamError("internal: a DELTA packet needs its reference frame, a KEY packet none");
  }
  if (reference !== null && reference.seq !== header.referenceSeq) {
    throw new BitstreamError(`reference frame ${reference.seq} is not the packet's reference ${header.referenceSeq}`);
  }
  const layout = header.layout !== null ? header.layout : reference.state.layout;
  if (reference !== null && !layoutsCompatible(reference.state.layout, layout)) {
    const r = reference.state.layout;
    throw new BitstreamError(
      `DELTA packet layout (preset ${layout.presetId}, K ${layout.present.length}) is incompatible with its ` +
        `reference's (preset ${r.presetId}, K ${r.present.length})`,
    );
  }
  const body = buf.subarray(header.size);
  const coder = new FrameCoder(layout, reference);
  const decoder = new RangeDecoder(body);
  const frames = [];
  try {
    for (let i = 0; i < header.numFrames; i++) {
      const gap = i === 0 ? header.referenceDistance : 1;
      const firstTs = header.key && i === 0 ? header.timestampMs : null;
      frames.push(coder.codeFrame(decoder, null, firstTs, gap));
    }
  } catch (exc) {
    if (exc instanceof RangeCoderError) {
      throw new BitstreamError(`corrupt motion packet body (seq ${header.seq}): ${exc.message}`);
    }
    throw exc;
  }
  if (decoder.bytesRead > body.length + 64) {
    throw new BitstreamError(`corrupt motion packet body (seq ${header.seq}): decoding ran far past its end`);
  }
  const encoder = new RangeEncoder();
  const check = new FrameCoder(layout, reference);
  frames.forEach(([values, ts], i) => check.codeFrame(encoder, values, ts, i === 0 ? header.referenceDistance : 1));
  if (!bytesEqual(encoder.finish(), body)) {
    throw new BitstreamError(`corrupt motion packet body (seq ${header.seq}): bytes do not re-encode identically`);
  }
  const state = coder.state();
  return frames.map(([values, ts], i) => Object.freeze({ seq: (header.seq + i) % SEQ_MODULUS, timestampMs: ts, values, state }));
}

export { layoutsCompatible, layoutsEqual };
