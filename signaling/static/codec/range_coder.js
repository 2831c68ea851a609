// The adaptive binary range coder of motion packet bodies: a port of codec/range_coder.py.
//
// LZMA-style 32-bit range coder with minimal termination (the decoder reads zeros past the end), two
// probability estimates per context (fast 2^-4, slow 2^-7, mean used) that adapt at a counting rate
// for their first uses, and exp-Golomb order-0 integers (zero flag, sign, context-coded prefix, bypass
// suffix). A model is a Uint16Array holding, for context i, the fast estimate at 3i, the slow one at
// 3i + 1 and the use count (≤ 255) at 3i + 2. The encoder is here because the decoder of a packet checks
// that the body is canonical by re-encoding it (as the Python decoder does).
//
// Integers go past 32 bits (|v| < 2^41, timestamps mod 2^32), so magnitudes use Number arithmetic; the
// 32-bit registers use >>> and multiplication, never signed shifts of values ≥ 2^31.

export const PROB_BITS = 15;
export const PROB_ONE = 1 << PROB_BITS;
export const PROB_HALF = PROB_ONE >> 1;
export const FAST_SHIFT = 4;
export const SLOW_SHIFT = 7;
export const PREFIX_CONTEXTS = 10; // context-coded exp-Golomb prefix positions (later ones share the last)
export const MAX_PREFIX = 40; // |v| < 2^41
const TOP = 2 ** 24;
const TWO_32 = 2 ** 32;
const PROB_SCALE = 2 ** PROB_BITS;
const MAX_COUNT = 255;

function bitLength(n) {
  let bits = 0;
  while (n >= 1) {
    n = Math.floor(n / 2);
    bits += 1;
  }
  return bits;
}

// Adaptation shifts by use count: (fast, slow) = (min(4, bitlen(n + 1)), min(7, bitlen(n + 1))).
const FAST_SHIFTS = new Uint8Array(MAX_COUNT + 1);
const SLOW_SHIFTS = new Uint8Array(MAX_COUNT + 1);
for (let n = 0; n <= MAX_COUNT; n++) {
  FAST_SHIFTS[n] = Math.min(FAST_SHIFT, bitLength(n + 1));
  SLOW_SHIFTS[n] = Math.min(SLOW_SHIFT, bitLength(n + 1));
}

/** Internal: decoded symbols exceed a bound (the bitstream turns it into a BitstreamError). */
export class RangeCoderError extends Error {
  constructor(message) {
    super(message);
    this.name = "RangeCoderError";
  }
}

/** A fresh model of ``numContexts`` contexts: p = 1/2 (both estimates), used 0 times. */
export function newModel(numContexts) {
  const model = new Uint16Array(3 * numContexts);
  for (let i = 0; i < numContexts; i++) {
    model[3 * i] = PROB_HALF;
    model[3 * i + 1] = PROB_HALF;
  }
  return model;
}

// One adaptation of context ``ctx`` after coding ``bit``; returns the bound the bit was coded against.
function bound(range, model, i) {
  return Math.floor(range / PROB_SCALE) * ((model[i] + model[i + 1]) >>> 1);
}

function adapt(model, i, bit) {
  const fast = model[i];
  const slow = model[i + 1];
  const n = model[i + 2];
  const fs = FAST_SHIFTS[n];
  const ss = SLOW_SHIFTS[n];
  if (n < MAX_COUNT) model[i + 2] = n + 1;
  if (bit) {
    model[i] = fast - (fast >> fs);
    model[i + 1] = slow - (slow >> ss);
  } else {
    model[i] = fast + ((PROB_ONE - fast) >> fs);
    model[i + 1] = slow + ((PROB_ONE - slow) >> ss);
  }
}

/** Encodes binary decisions with adaptive contexts into a minimal byte string. */
export class RangeEncoder {
  constructor() {
    this.low = 0; // < 2^32 between calls (≤ 2^33 transiently)
    this.range = TWO_32 - 1;
    this.out = [];
  }

  _carry() {
    const out = this.out;
    let i = out.length - 1;
    while (out[i] === 0xff) {
      out[i] = 0;
      i -= 1;
    }
    if (i < 0) throw new Error("range coder carry past the first byte"); // an internal invariant
    out[i] += 1;
  }

  _shiftLow() {
    while (this.range < TOP) {
      this.out.push(Math.floor(this.low / TOP));
      this.low = (this.low % TOP) * 256;
      this.range *= 256;
    }
  }

  _addLow(value) {
    this.low += value;
    if (this.low >= TWO_32) {
      this.low -= TWO_32;
      this._carry();
    }
  }

  encodeBit(model, ctx, bit) {
    const i = ctx * 3;
    const b = bound(this.range, model, i);
    adapt(model, i, bit);
    if (bit) {
      this._addLow(b);
      this.range -= b;
    } else {
      this.range = b;
    }
    this._shiftLow();
  }

  /** The ``numBits`` low bits of ``value`` (MSB first) at p = 1/2. */
  encodeBypass(value, numBits) {
    for (let shift = numBits - 1; shift >= 0; shift--) {
      const half = Math.floor(this.range / 2);
      if (Math.floor(value / 2 ** shift) % 2) {
        this._addLow(half);
        this.range -= half;
      } else {
        this.range = half;
      }
      this._shiftLow();
    }
  }

  /** A signed integer: zero flag, sign, then |v| in exp-Golomb order 0 (prefix contexts from magnitudeCtx). */
  encodeInt(model, zeroCtx, signCtx, magnitudeCtx, value) {
    if (value === 0) {
      this.encodeBit(model, zeroCtx, 0);
      return;
    }
    this.encodeBit(model, zeroCtx, 1);
    this.encodeBit(model, signCtx, value < 0 ? 1 : 0);
    const m = Math.abs(value);
    const n = bitLength(m) - 1;
    if (n > MAX_PREFIX) throw new RangeError(`integer ${value} is too large for the range coder (|v| ≥ 2^${MAX_PREFIX + 1})`);
    const last = magnitudeCtx + PREFIX_CONTEXTS - 1;
    for (let j = 0; j < n; j++) this.encodeBit(model, Math.min(magnitudeCtx + j, last), 1);
    if (n < MAX_PREFIX) this.encodeBit(model, Math.min(magnitudeCtx + n, last), 0);
    if (n) this.encodeBypass(m, n);
  }

  /** Terminate with the shortest suffix inside the final interval; trailing zero bytes dropped. */
  finish() {
    const low = this.low;
    const high = this.low + this.range;
    let value = low;
    for (let k = 32; k > 0; k--) {
      const unit = 2 ** k;
      const candidate = Math.ceil(low / unit) * unit;
      if (candidate < high) {
        value = candidate;
        break;
      }
    }
    if (value >= TWO_32) {
      value -= TWO_32;
      this._carry();
    }
    this.out.push(Math.floor(value / 2 ** 24) & 0xff, Math.floor(value / 2 ** 16) & 0xff,
      Math.floor(value / 256) & 0xff, value & 0xff);
    let end = this.out.length;
    while (end && this.out[end - 1] === 0) end -= 1;
    return Uint8Array.from(this.out.slice(0, end));
  }
}

/** Decodes what RangeEncoder wrote, given the same sequence of contexts; reads zeros past the end. */
export class RangeDecoder {
  constructor(data) {
    this.data = data;
    this.pos = 4;
    this.range = TWO_32 - 1;
    this.code = 0;
    for (let i = 0; i < 4; i++) this.code = this.code * 256 + (i < data.length ? data[i] : 0);
  }

  _next() {
    const pos = this.pos;
    this.pos = pos + 1;
    return pos < this.data.length ? this.data[pos] : 0;
  }

  _normalize() {
    while (this.range < TOP) {
      this.code = (this.code % TOP) * 256 + this._next();
      this.range *= 256;
    }
  }

  decodeBit(model, ctx) {
    const i = ctx * 3;
    const b = bound(this.range, model, i);
    let bit;
    if (this.code < b) {
      this.range = b;
      bit = 0;
    } else {
      this.code -= b;
      this.range -= b;
      bit = 1;
    }
    adapt(model, i, bit);
    this._normalize();
    return bit;
  }

  decodeBypass(numBits) {
    let value = 0;
    for (let j = 0; j < numBits; j++) {
      const half = Math.floor(this.range / 2);
      if (this.code < half) {
        this.range = half;
        value *= 2;
      } else {
        this.code -= half;
        this.range -= half;
        value = value * 2 + 1;
      }
      this._normalize();
    }
    return value;
  }

  /** What encodeInt wrote; RangeCoderError if |v| would exceed ``maxAbs``. */
  decodeInt(model, zeroCtx, signCtx, magnitudeCtx, maxAbs) {
    if (!this.decodeBit(model, zeroCtx)) return 0;
    const negative = this.decodeBit(model, signCtx);
    const last = magnitudeCtx + PREFIX_CONTEXTS - 1;
    let n = 0;
    while (n < MAX_PREFIX && this.decodeBit(model, Math.min(magnitudeCtx + n, last))) n += 1;
    if (2 ** n > maxAbs) throw new RangeCoderError(`decoded magnitude ≥ 2^${n} exceeds the bound ${maxAbs}`);
    const m = n ? 2 ** n + this.decodeBypass(n) : 1;
    if (m > maxAbs) throw new RangeCoderError(`decoded magnitude ${m} exceeds the bound ${maxAbs}`);
    return negative ? -m : m;
  }

  /** Bytes consumed so far, counting the zero padding past the end. */
  get bytesRead() {
    return this.pos;
  }
}
