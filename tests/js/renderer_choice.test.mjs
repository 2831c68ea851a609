// Which exported variant the browser receiver renders with (signaling/static/codec/renderer.js chooseVariant):
// the best picture within the frame period, else the best within the slowest rate worth rendering, else the fastest.
//
//   node --test tests/js/      # tests/test_motion_js.py runs it

import assert from "node:assert/strict";
import { test } from "node:test";

import { chooseVariant } from "../../signaling/static/codec/renderer.js";

const BUDGETS = [36, 60];
const timed = (...ms) => ms.map((renderMs, i) => ({ preset: `v${i}`, renderMs }));

test("the best picture that renders within the frame period", () => {
  assert.equal(chooseVariant(timed(30), BUDGETS).index, 0);
  assert.equal(chooseVariant(timed(190, 35), BUDGETS).index, 1);
  assert.match(chooseVariant(timed(190, 35), BUDGETS).reason, /35\.0 ms ≤ 36 ms/);
});

test("else the best picture within the slowest rate still worth rendering", () => {
  const pick = chooseVariant(timed(190, 58, 40), BUDGETS);
  assert.equal(pick.index, 1);
  assert.match(pick.reason, /best picture within 60 ms.*58\.0 ms; none within 36/);
});

test("else the fastest, which the page then judges over 5 s and may hand over to VP8", () => {
  const pick = chooseVariant(timed(600, 140, 150), BUDGETS);
  assert.equal(pick.index, 1);
  assert.match(pick.reason, /fastest \(140\.0 ms/);
  assert.throws(() => chooseVariant([], BUDGETS), /no variant/);
});
