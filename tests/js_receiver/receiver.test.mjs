// The browser receiver's control protocol against the Python side's golden vectors (tests/control_js_vectors.py):
// control messages (signaling/static/codec/control.js), reference chunks and messages (reference_message.js, sha256.js)
// and one sender link's conversation (signaling/static/receiver/session.js). What the JS side sends is written to
// KPCALL_CONTROL_OUT for tests/test_control_js.py to decode with the Python decoders.
//
//   KPCALL_CONTROL_VECTORS=/tmp/control.json KPCALL_CONTROL_OUT=/tmp/out.json node --test tests/js_receiver/

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import { ControlError, decodeControl, encodeControl } from "../../signaling/static/codec/control.js";
import { ChunkReassembler, unpackReferenceMessage } from "../../signaling/static/codec/reference_message.js";
import { sha256 } from "../../signaling/static/codec/sha256.js";
import { SenderLink, cannotKeepUp } from "../../signaling/static/receiver/session.js";

const vectors = JSON.parse(readFileSync(process.env.KPCALL_CONTROL_VECTORS, "utf8"));
const OUT = process.env.KPCALL_CONTROL_OUT;
const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const outbox = { encoded: [], session: [] };

test("sha256 is hashlib's", () => {
  for (const { hex, sha256: want } of vectors.sha256) assert.equal(toHex(sha256(fromHex(hex))), want);
});

test("control messages decode to the Python fields, and encode back", () => {
  for (const { text, fields } of vectors.control) {
    const got = decodeControl(text);
    assert.deepEqual(got, fields, text);
    outbox.encoded.push(encodeControl(got));
  }
});

test("malformed control messages give Python's error", () => {
  let exact = 0;
  for (const { text, error, exact: same } of vectors.control_errors) {
    assert.throws(() => decodeControl(text), ControlError, text);
    try {
      decodeControl(text);
    } catch (exc) {
      if (same) {
        assert.equal(exc.message, error, text);
        exact += 1;
      } else {
        assert.ok(exc.message.startsWith("control message is not valid JSON: "), exc.message);
      }
    }
  }
  assert.ok(exact >= 30, `${exact} exact`);
});

test("reference chunks reassemble as in Python, with the same errors", () => {
  for (const [name, events] of Object.entries(vectors.chunks)) {
    const reassembler = new ChunkReassembler();
    for (const [i, event] of events.entries()) {
      const where = `${name} #${i}`;
      if (event.error !== undefined) {
        assert.throws(() => reassembler.add(fromHex(event.chunk)), (exc) => exc.message === event.error, where);
      } else {
        const whole = reassembler.add(fromHex(event.chunk));
        assert.equal(whole === null ? null : toHex(sha256(whole)), event.message_sha256, where);
      }
    }
  }
});

test("reference messages unpack as in Python, with the same errors", () => {
  for (const event of vectors.references) {
    if (event.error === undefined) {
      const msg = unpackReferenceMessage(fromHex(event.data));
      const want = event.message;
      assert.deepEqual(
        [msg.modelId, msg.modelVersion, msg.contentHash, msg.width, msg.height, msg.imageFormat, toHex(sha256(msg.image))],
        [want.model_id, want.model_version, want.content_hash, want.width, want.height, want.image_format, want.image_sha256],
      );
    } else if (event.exact) {
      assert.throws(() => unpackReferenceMessage(fromHex(event.data)), (exc) => exc.message === event.error, event.name);
    } else {
      assert.throws(() => unpackReferenceMessage(fromHex(event.data)), /./, event.name);
    }
  }
});

test("a sender link: hello, the portrait once, motion, feedback, delay reports", async () => {
  const s = vectors.session;
  const sent = [];
  const send = (data) => sent.push(typeof data === "string" ? { text: data } : { bytes: toHex(data) });
  const prepared = [];
  const store = new Map();
  const link = new SenderLink({
    modelId: s.model_id, modelVersion: s.model_version, send, store,
    prepare: async (msg) => {
      prepared.push(msg);
      return { portrait: msg.contentHash };
    },
  });
  link.onControl(s.hello);
  await link.idle();
  assert.deepEqual(sent.map((m) => m.text && JSON.parse(m.text)), [{ type: "reference_status", content_hash: s.content_hash, have: false }]);
  for (const chunk of s.chunks) link.onControl(fromHex(chunk).buffer);
  await link.idle();
  assert.equal(prepared.length, 1);
  assert.equal(toHex(sha256(prepared[0].image)), s.image_sha256);
  assert.deepEqual(JSON.parse(sent[1].text), { type: "reference_ready", content_hash: s.content_hash, cached: false });
  assert.ok(link.ready);

  link.onControl(JSON.stringify({ type: "ping", t_ms: 77.5 }));
  assert.deepEqual(JSON.parse(sent[2].text), { type: "pong", t_ms: 77.5 });
  link.onControl("{nope");
  assert.equal(JSON.parse(sent[3].text).code, "bad_message");

  let frames = 0;
  for (const { hex, arrival_ms: t } of s.packets) {
    link.onMotion(fromHex(hex), t);
    link.tick(t);
    frames += link.popDue(t).length;
  }
  const end = s.packets[s.packets.length - 1].arrival_ms + 1000;
  for (let t = end - 1000; t <= end + 6000; t += 50) {
    link.tick(t);
    frames += link.popDue(t).length;
  }
  assert.equal(link.packets, s.packets.length);
  assert.ok(frames >= 40, `${frames} output frames`);
  const feedback = sent.filter((m) => m.bytes);
  assert.ok(feedback.length >= 2, "feedback after the KEY and on the interval");
  const reports = sent.filter((m) => m.text && JSON.parse(m.text).type === "delay_report");
  assert.ok(reports.length >= 1, "a delay report");

  // The same portrait again (a new link, the page's store): "have", nothing re-sent.
  const again = [];
  const second = new SenderLink({ modelId: s.model_id, modelVersion: s.model_version, send: (d) => again.push(d), store, prepare: async () => assert.fail("prepared twice") });
  second.onControl(s.hello);
  await second.idle();
  assert.deepEqual(again.map((d) => JSON.parse(d)), [
    { type: "reference_status", content_hash: s.content_hash, have: true },
    { type: "reference_ready", content_hash: s.content_hash, cached: true },
  ]);
  // Another model: refused with model_mismatch, no reference asked for.
  const other = [];
  const third = new SenderLink({ modelId: "other", modelVersion: "1", send: (d) => other.push(d), prepare: async () => assert.fail() });
  third.onControl(s.hello);
  await third.idle();
  assert.equal(JSON.parse(other[0]).code, "model_mismatch");
  assert.equal(other.length, 1);
  outbox.session = sent;
});

test("the hand-over rule: below min fps and the frames due, only while the call plays", () => {
  assert.equal(cannotKeepUp(4, 25, 15), true); // the shipped model in WASM on a 2-core machine
  assert.equal(cannotKeepUp(16, 25, 15), false);
  assert.equal(cannotKeepUp(9, 10, 15), false); // a 10 fps call rendered at 9: keeps up with what comes due
  assert.equal(cannotKeepUp(8, 10, 15), true);
  assert.equal(cannotKeepUp(0, 2, 15), false); // a stall or a paused sender is no verdict
  assert.equal(cannotKeepUp(1, 25, 0), false); // min_fps=0: never
});

test("write what the JS side sent", () => {
  if (OUT) writeFileSync(OUT, JSON.stringify(outbox));
});
