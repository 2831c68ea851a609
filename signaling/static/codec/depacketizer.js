// The receiver's motion state machine: a port of codec/prediction.py MotionDepacketizer, plus the
// feedback message it sends back (msgpack, as codec/bitstream.py pack_feedback writes it).
//
//   const depacketizer = new MotionDepacketizer();
//   for (const frame of depacketizer.receive(bytes)) show(frame);   // BitstreamError for a bad packet
//   const feedback = depacketizer.feedback();                        // null until a packet arrived
//   if (feedback) controlChannel.send(packFeedback(feedback));
//
// KEY packets decode alone; a DELTA packet's first frame is predicted from a frame the receiver
// confirmed (kept here for MAX_REFERENCE_DISTANCE + MAX_FRAMES_PER_PACKET sequence numbers), so a lost
// packet never corrupts another. A DELTA whose reference is missing returns [] and makes the feedback
// ask for a KEY. Frames come out in increasing sequence order; duplicates and late frames are kept as
// references but not returned again.

import {
  BitstreamError, MAX_FRAMES_PER_PACKET, MAX_REFERENCE_DISTANCE, SEQ_MODULUS, decodePacket, mod, seqNewer,
  unpackHeader, unwrapSeq,
} from "./bitstream.js";
import { motionFromValues } from "./quantize.js";

export const RECEIVER_HISTORY = MAX_REFERENCE_DISTANCE + MAX_FRAMES_PER_PACKET;
export const ACK_MASK_BITS = 32;
export const FEEDBACK_TAG = "kpfb";
const FEEDBACK_VERSION = 1;

function newStream() {
  return {
    history: new Map(), // seq -> CodedFrame, oldest first
    newestSeen: null,
    newestOutput: null,
    highestExt: null,
    lowestExt: null,
    seenExt: new Set(),
    seenForgotten: 0,
    framesUndecodable: 0,
    keyRequestAfter: null,
  };
}

export class MotionDepacketizer {
  constructor(maxStreams = 4) {
    if (maxStreams < 1) throw new RangeError(`maxStreams must be ≥ 1, got ${maxStreams}`);
    this.maxStreams = maxStreams;
    this.streams = new Map(); // stream id -> state, least recently active first
    this.lastStream = null;
    this.packetsReceived = 0;
    this.packetsRejected = 0;
    this.packetsDuplicate = 0;
  }

  _touch(streamId) {
    const state = this.streams.get(streamId);
    this.streams.delete(streamId);
    this.streams.set(streamId, state);
  }

  _stream(streamId) {
    if (!this.streams.has(streamId)) {
      this.streams.set(streamId, newStream());
      while (this.streams.size > this.maxStreams) this.streams.delete(this.streams.keys().next().value);
    }
    this._touch(streamId);
    return this.streams.get(streamId);
  }

  static _markSeen(state, seqs) {
    for (const seq of seqs) {
      let ext;
      if (state.highestExt === null) {
        ext = seq;
        state.highestExt = state.lowestExt = ext;
      } else {
        ext = unwrapSeq(seq, state.highestExt);
        state.highestExt = Math.max(state.highestExt, ext);
        if (ext < state.lowestExt) state.lowestExt = ext;
      }
      state.seenExt.add(ext);
    }
    if (state.seenExt.size > 4 * RECEIVER_HISTORY) {
      const horizon = state.highestExt - 2 * RECEIVER_HISTORY;
      for (const ext of [...state.seenExt]) {
        if (ext < horizon) {
          state.seenExt.delete(ext);
          state.seenForgotten += 1;
        }
      }
    }
  }

  static _updateNewestSeen(state, seq) {
    if (state.newestSeen === null || seqNewer(seq, state.newestSeen)) state.newestSeen = seq;
  }

  static _prune(state) {
    for (const seq of [...state.history.keys()]) {
      if (mod(state.newestSeen - seq, SEQ_MODULUS) > RECEIVER_HISTORY) state.history.delete(seq);
    }
    while (state.history.size > RECEIVER_HISTORY + 1) state.history.delete(state.history.keys().next().value);
  }

  /**
   * Decode one packet (Uint8Array) -> its frames newer than any returned before, oldest first:
   * {streamId, seq, captureTsMs, motion (quantize.js motionFromValues), values, key}. BitstreamError for
   * a malformed packet (the state is unchanged).
   */
  receive(buf) {
    let header;
    try {
      header = unpackHeader(buf);
    } catch (exc) {
      if (exc instanceof BitstreamError) this.packetsRejected += 1;
      throw exc;
    }
    let state = this.streams.get(header.streamId) ?? null;
    const seqs = header.seqs;
    if (state !== null && seqs.every((seq) => state.history.has(seq))) {
      this.packetsDuplicate += 1;
      this._touch(header.streamId);
      return [];
    }
    let reference = null;
    if (!header.key) {
      reference = state !== null ? state.history.get(header.referenceSeq) ?? null : null;
      if (reference === null) {
        state = this._stream(header.streamId);
        this.lastStream = header.streamId;
        this.packetsReceived += 1;
        MotionDepacketizer._markSeen(state, seqs);
        MotionDepacketizer._updateNewestSeen(state, seqs[seqs.length - 1]);
        state.framesUndecodable += seqs.length;
        state.keyRequestAfter = state.newestSeen;
        return [];
      }
    }
    let frames;
    try {
      frames = decodePacket(buf, header, reference);
    } catch (exc) {
      if (exc instanceof BitstreamError) this.packetsRejected += 1;
      throw exc;
    }
    state = this._stream(header.streamId);
    this.lastStream = header.streamId;
    this.packetsReceived += 1;
    MotionDepacketizer._markSeen(state, seqs);
    MotionDepacketizer._updateNewestSeen(state, seqs[seqs.length - 1]);
    state.keyRequestAfter = null;
    for (const frame of frames) {
      state.history.delete(frame.seq);
      state.history.set(frame.seq, frame);
    }
    MotionDepacketizer._prune(state);
    const out = [];
    for (const frame of frames) {
      if (state.newestOutput !== null && !seqNewer(frame.seq, state.newestOutput)) continue;
      state.newestOutput = frame.seq;
      out.push({
        streamId: header.streamId, seq: frame.seq, captureTsMs: frame.timestampMs, key: header.key,
        values: frame.values, motion: motionFromValues(frame.values, frame.state.layout),
      });
    }
    return out;
  }

  /**
   * What to tell the sender of ``streamId`` (default: the stream of the latest packet): {streamId,
   * ackedSeq, ackedMask, keyRequestAfter, framesReceived, framesLost, framesUndecodable}; null before
   * any packet of that stream arrived.
   */
  feedback(streamId = null) {
    const sid = streamId === null ? this.lastStream : streamId;
    if (sid === null || !this.streams.has(sid)) return null;
    const state = this.streams.get(sid);
    let ackedSeq = null;
    for (const seq of state.history.keys()) if (ackedSeq === null || seqNewer(seq, ackedSeq)) ackedSeq = seq;
    let mask = 0;
    if (ackedSeq !== null) {
      for (let i = 0; i < ACK_MASK_BITS; i++) {
        if (state.history.has(mod(ackedSeq - 1 - i, SEQ_MODULUS))) mask += 2 ** i;
      }
    }
    const received = state.seenExt.size + state.seenForgotten;
    const expected = state.highestExt === null ? 0 : state.highestExt - (state.lowestExt || 0) + 1;
    return {
      streamId: sid, ackedSeq, ackedMask: mask, keyRequestAfter: state.keyRequestAfter,
      framesReceived: received, framesLost: Math.max(0, expected - received),
      framesUndecodable: state.framesUndecodable,
    };
  }

  streamIds() {
    return [...this.streams.keys()];
  }

  /** An independent copy (decoded frames are immutable and shared): try a packet without committing to it. */
  clone() {
    const copy = new MotionDepacketizer(this.maxStreams);
    for (const [id, s] of this.streams) {
      copy.streams.set(id, { ...s, history: new Map(s.history), seenExt: new Set(s.seenExt) });
    }
    copy.lastStream = this.lastStream;
    copy.packetsReceived = this.packetsReceived;
    copy.packetsRejected = this.packetsRejected;
    copy.packetsDuplicate = this.packetsDuplicate;
    return copy;
  }
}

function packUint(out, value) {
  if (value < 0x80) out.push(value);
  else if (value < 0x100) out.push(0xcc, value);
  else if (value < 0x10000) out.push(0xcd, value >> 8, value & 0xff);
  else if (value < 2 ** 32) out.push(0xce, ...[24, 16, 8, 0].map((s) => Math.floor(value / 2 ** s) & 0xff));
  else {
    const big = BigInt(value);
    out.push(0xcf, ...[56n, 48n, 40n, 32n, 24n, 16n, 8n, 0n].map((s) => Number((big >> s) & 0xffn)));
  }
}

/** A feedback object -> the msgpack bytes codec/bitstream.py unpack_feedback reads. */
export function packFeedback(feedback) {
  const out = [0x99, 0xa0 | FEEDBACK_TAG.length, ...[...FEEDBACK_TAG].map((c) => c.charCodeAt(0))];
  const items = [FEEDBACK_VERSION, feedback.streamId, feedback.ackedSeq, feedback.ackedMask, feedback.keyRequestAfter,
    feedback.framesReceived, feedback.framesLost, feedback.framesUndecodable];
  for (const item of items) {
    if (item === null) out.push(0xc0);
    else packUint(out, item);
  }
  return Uint8Array.from(out);
}
