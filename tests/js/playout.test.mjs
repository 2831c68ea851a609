// The browser's jitter buffer and concealment (signaling/static/codec/playout.js, concealment.js) against
// receiver/playout.py on golden calls (tests/motion_js_vectors.py playout_scenarios): the same packets
// arriving at the same times, popped every 10 ms, must give the same output frames (slot, stream, seq,
// concealed; due, capture and arrival times within 1e-3 ms on a 1.7e12 ms clock; motion within 1e-6) and the
// same counters.
//
//   KPCALL_MOTION_VECTORS=/tmp/vectors.json node --test tests/js/      # tests/test_motion_js.py runs it

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { MotionDepacketizer } from "../../signaling/static/codec/depacketizer.js";
import { PlayoutBuffer, percentile } from "../../signaling/static/codec/playout.js";

const VECTORS_PATH = process.env.KPCALL_MOTION_VECTORS;
const vectors = VECTORS_PATH ? JSON.parse(readFileSync(VECTORS_PATH, "utf8")) : null;
const TIME_TOLERANCE_MS = 1e-3;
const MOTION_TOLERANCE = 1e-6;
const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const stats = { frames: 0, concealed: 0, maxTimeError: 0, maxMotionError: 0 };

function near(got, want, tolerance, what, key) {
  const error = Math.abs(got - want);
  assert.ok(error <= tolerance, `${what}: ${got} vs ${want}`);
  stats[key] = Math.max(stats[key], error);
}

function checkFrame(got, want, where) {
  assert.deepEqual([got.slot, got.streamId, got.seq, got.concealed], [want.slot, want.stream_id, want.seq, want.concealed], where);
  near(got.dueMs, want.due_ms, TIME_TOLERANCE_MS, `${where} due`, "maxTimeError");
  near(got.captureMs, want.capture_ms, TIME_TOLERANCE_MS, `${where} capture`, "maxTimeError");
  if (want.arrival_ms === null) assert.equal(got.arrivalMs, null, where);
  else near(got.arrivalMs, want.arrival_ms, TIME_TOLERANCE_MS, `${where} arrival`, "maxTimeError");
  const m = got.motion;
  const w = want.motion;
  for (const angle of ["yaw", "pitch", "roll"]) near(m[angle], w[angle], MOTION_TOLERANCE, `${where} ${angle}`, "maxMotionError");
  w.translation.forEach((v, i) => near(m.translation[i], v, MOTION_TOLERANCE, `${where} t${i}`, "maxMotionError"));
  assert.equal(m.expression.length, w.expression.length, where);
  w.expression.forEach((v, i) => near(m.expression[i], v, MOTION_TOLERANCE, `${where} δ${i}`, "maxMotionError"));
  assert.deepEqual(m.present, w.present, where);
  stats.frames += 1;
  stats.concealed += got.concealed ? 1 : 0;
}

test("percentile is numpy's", () => {
  assert.equal(percentile([3, 1, 2], 95), 2.9);
  assert.equal(percentile([5], 95), 5);
  assert.equal(percentile([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 95), 95);
});

if (vectors) {
  for (const [name, scenario] of Object.entries(vectors.playout)) {
    test(`same arrivals, same playout: ${name}`, () => {
      const depacketizer = new MotionDepacketizer();
      const playout = new PlayoutBuffer({ fps: scenario.fps });
      scenario.events.forEach((event, i) => {
        if (event.packet !== undefined) {
          for (const frame of depacketizer.receive(fromHex(event.packet))) playout.push(frame, event.t);
          return;
        }
        const out = playout.popDue(event.t);
        const want = event.pop ?? [];
        assert.equal(out.length, want.length, `${name} event ${i}: frames popped at ${event.t}`);
        out.forEach((frame, j) => checkFrame(frame, want[j], `${name} event ${i} frame ${j}`));
      });
      const c = scenario.counters;
      assert.deepEqual(
        [playout.framesLate, playout.framesConcealed, playout.framesInterpolated, playout.framesDuplicate, playout.stalls, playout.nextSlot],
        [c.frames_late, c.frames_concealed, c.frames_interpolated, c.frames_duplicate, c.stalls, c.next_slot],
        `${name}: counters`,
      );
      near(playout.targetDelayMs, c.target_delay_ms, TIME_TOLERANCE_MS, `${name}: target delay`, "maxTimeError");
      near(playout.jitterMs, c.jitter_ms, TIME_TOLERANCE_MS, `${name}: jitter`, "maxTimeError");
    });
  }
  test("playout summary", () => {
    assert.ok(stats.frames > 500 && stats.concealed > 100, JSON.stringify(stats));
    console.log(`# playout agreement: ${JSON.stringify(stats)}`);
  });
}
