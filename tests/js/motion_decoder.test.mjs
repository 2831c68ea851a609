// The browser's motion decoder (signaling/static/codec/*.js) against the Python codec, on golden vectors.
//
//   python -m tests.motion_js_vectors /tmp/vectors.json
//   KPCALL_MOTION_VECTORS=/tmp/vectors.json node --test tests/js/      # tests/test_motion_js.py runs both
//
// Every case feeds its packets in order to one fresh MotionDepacketizer (a "probe" event to a clone of it)
// and asserts what the Python receiver did: the same frames (grid values exactly; seq, timestamp, KEY; the
// dequantized motion within 1e-6, float32 fields as float32), or a BitstreamError with the same message,
// and then the same feedback, packed to the same msgpack bytes.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { BitstreamError, unpackHeader } from "../../signaling/static/codec/bitstream.js";
import { MotionDepacketizer, packFeedback } from "../../signaling/static/codec/depacketizer.js";
import { PRESETS } from "../../signaling/static/codec/quantize.js";

const VECTORS_PATH = process.env.KPCALL_MOTION_VECTORS;
const MOTION_TOLERANCE = 1e-6;
const vectors = VECTORS_PATH ? JSON.parse(readFileSync(VECTORS_PATH, "utf8")) : null;
const skip = vectors ? false : "KPCALL_MOTION_VECTORS is not set: python -m tests.motion_js_vectors OUT.json first";

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

const stats = { frames: 0, errors: 0, motionValues: 0, motionExact: 0, maxMotionError: 0 };

function closeTo(got, want, what) {
  const error = Math.abs(got - want);
  assert.ok(error <= MOTION_TOLERANCE, `${what}: ${got} vs ${want}`);
  stats.motionValues += 1;
  stats.motionExact += got === want ? 1 : 0;
  stats.maxMotionError = Math.max(stats.maxMotionError, error);
}

function checkFrame(got, want, where) {
  assert.equal(got.streamId, want.stream_id, `${where}: stream id`);
  assert.equal(got.seq, want.seq, `${where}: seq`);
  assert.equal(got.captureTsMs, want.capture_ts_ms, `${where}: timestamp`);
  assert.equal(got.key, want.key, `${where}: KEY`);
  assert.deepEqual(Array.from(got.values), want.values, `${where}: grid values`);
  const m = got.motion;
  const w = want.motion;
  for (const angle of ["yaw", "pitch", "roll"]) closeTo(m[angle], w[angle], `${where}: ${angle}`);
  assert.equal(m.translation.length, w.translation.length);
  w.translation.forEach((v, i) => closeTo(m.translation[i], Math.fround(v), `${where}: translation[${i}]`));
  assert.equal(m.expression.length, w.expression.length, `${where}: 3K`);
  w.expression.forEach((v, i) => closeTo(m.expression[i], Math.fround(v), `${where}: expression[${i}]`));
  assert.deepEqual(m.present, w.present, `${where}: present`);
  stats.frames += 1;
}

function checkFeedback(got, want, where) {
  if (want === null) {
    assert.equal(got, null, `${where}: no feedback yet`);
    return;
  }
  assert.deepEqual(
    [got.streamId, got.ackedSeq, got.ackedMask, got.keyRequestAfter, got.framesReceived, got.framesLost,
      got.framesUndecodable],
    [want.stream_id, want.acked_seq, want.acked_mask, want.key_request_after, want.frames_received,
      want.frames_lost, want.frames_undecodable],
    `${where}: feedback`,
  );
  assert.equal(toHex(packFeedback(got)), want.bytes, `${where}: feedback bytes`);
}

function runCase(name, { max_streams: maxStreams, events }) {
  const receiver = new MotionDepacketizer(maxStreams);
  events.forEach((event, i) => {
    const where = `${name} event ${i} (${event.packet.slice(0, 24)}…)`;
    const target = event.probe ? receiver.clone() : receiver;
    const packet = fromHex(event.packet);
    if (event.error !== undefined) {
      assert.throws(() => target.receive(packet), (exc) => {
        assert.ok(exc instanceof BitstreamError, `${where}: ${exc}`);
        assert.equal(exc.message, event.error, where);
        return true;
      });
      stats.errors += 1;
    } else {
      const frames = target.receive(packet);
      assert.equal(frames.length, event.frames.length, `${where}: frames returned`);
      frames.forEach((frame, j) => checkFrame(frame, event.frames[j], `${where} frame ${j}`));
    }
    checkFeedback(target.feedback(), event.feedback, where);
  });
}

test("presets have the Python bounds", { skip }, () => {
  for (const [id, want] of Object.entries(vectors.presets)) {
    const p = PRESETS[id];
    assert.deepEqual([...p.angleQmax], want.angle_qmax);
    assert.equal(p.translationQmax, want.translation_qmax);
    assert.equal(p.expressionQmax, want.expression_qmax);
  }
});

test("a motion packet that is not bytes is a BitstreamError", () => {
  assert.throws(() => unpackHeader("a188"), { name: "BitstreamError", message: "a motion packet must be bytes, got string" });
});

if (vectors) {
  for (const [name, testCase] of Object.entries(vectors.cases)) {
    test(`same bytes, same motion: ${name}`, () => runCase(name, testCase));
  }
  test("summary", () => {
    assert.ok(stats.frames > 500 && stats.errors > 50, JSON.stringify(stats));
    console.log(`# motion decoder agreement: ${JSON.stringify(stats)}`);
  });
}
