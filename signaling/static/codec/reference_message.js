// The reference message in the browser: chunk reassembly and the message itself, a port of
// codec/reference_message.py (chunk layout and message layout are documented there).
//
//   const reassembler = new ChunkReassembler();
//   const whole = reassembler.add(chunkBytes);            // Uint8Array once complete, else null; BitstreamError if bad
//   if (whole) msg = unpackReferenceMessage(whole);       // {modelId, modelVersion, contentHash, width, height, imageFormat, image}
//
// The structural checks and their messages are the Python ones (tests/test_control_js.py compares them on golden
// vectors). What Python reads from the image header with PIL (format, size) is read here from the JPEG/PNG/WebP
// header too (probeImage); the pixels are decoded by the browser afterwards (decodePortrait in the page).

import { BitstreamError } from "./bitstream.js";
import { sha256 } from "./sha256.js";

export const MESSAGE_TAG = "kpref";
export const MESSAGE_VERSION = 1;
export const MAX_IMAGE_BYTES = 4 * 1024 * 1024;
export const MAX_SIDE = 2048;
export const MAX_PIXELS = 1024 * 1024;
export const MIN_SIDE = 8;
export const MAX_ASPECT = 3.0;
export const MAX_ID_CHARS = 128;
export const MAX_MESSAGE_BYTES = MAX_IMAGE_BYTES + 1024;
export const CHUNK_VERSION = 1;
export const CHUNK_HEADER_BYTES = 43;
export const DATA_CHANNEL_MAX_MESSAGE_BYTES = 262_144;
const CHUNK_MAGIC = [0x4b, 0x43]; // "KC"
const IMAGE_FORMATS = ["jpeg", "png", "webp"];

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const equalBytes = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
const u16 = (b, at) => (b[at] << 8) | b[at + 1];
const u32 = (b, at) => b[at] * 2 ** 24 + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);

/** Python's repr of a bytes value. */
export function pyBytesRepr(bytes) {
  const hasSingle = bytes.includes(0x27);
  const quote = hasSingle && !bytes.includes(0x22) ? '"' : "'";
  let out = `b${quote}`;
  for (const b of bytes) {
    if (b === 0x5c) out += "\\\\";
    else if (String.fromCharCode(b) === quote) out += `\\${quote}`;
    else if (b === 0x09) out += "\\t";
    else if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b < 0x20 || b >= 0x7f) out += `\\x${b.toString(16).padStart(2, "0")}`;
    else out += String.fromCharCode(b);
  }
  return out + quote;
}

function toBytes(data, what) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new BitstreamError(`${what} must be bytes, got ${typeof data}`);
}

/** Python's type name of a value the msgpack reader made. */
function pyTypeName(value) {
  if (value === null) return "NoneType";
  if (Array.isArray(value)) return "list";
  if (value instanceof Uint8Array) return "bytes";
  if (typeof value === "string") return "str";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "number") return "int";
  return value.map !== undefined ? "dict" : "float";
}

// -- chunks ------------------------------------------------------------------------------------------------
/** Collects chunks (any order, duplicates allowed) and returns each whole message once (ChunkReassembler). */
export class ChunkReassembler {
  constructor(maxMessageBytes = MAX_MESSAGE_BYTES, maxPending = 2) {
    if (maxMessageBytes < 1 || maxPending < 1) throw new RangeError("maxMessageBytes and maxPending must be ≥ 1");
    this.maxMessageBytes = maxMessageBytes;
    this.maxPending = maxPending;
    this._pending = new Map(); // message id (hex) -> {count, total, size, parts: Map(index -> payload)}, oldest first
    this.dropped = 0;
  }

  get pending() {
    return this._pending.size;
  }

  /** One chunk -> the reassembled message (Uint8Array) when it completes, else null; BitstreamError if bad. */
  add(data) {
    const chunk = toBytes(data, "a chunk");
    if (chunk.length > DATA_CHANNEL_MAX_MESSAGE_BYTES) {
      throw new BitstreamError(`oversize chunk: ${chunk.length} bytes > ${DATA_CHANNEL_MAX_MESSAGE_BYTES}`);
    }
    if (chunk.length < CHUNK_HEADER_BYTES) {
      throw new BitstreamError(`truncated chunk: ${chunk.length} bytes, the header alone is ${CHUNK_HEADER_BYTES}`);
    }
    if (chunk[0] !== CHUNK_MAGIC[0] || chunk[1] !== CHUNK_MAGIC[1]) {
      throw new BitstreamError(`not a reference-message chunk: magic ${pyBytesRepr(chunk.subarray(0, 2))}, expected b'KC'`);
    }
    if (chunk[2] !== CHUNK_VERSION) throw new BitstreamError(`unsupported chunk version ${chunk[2]} (this build reads ${CHUNK_VERSION})`);
    const digest = chunk.slice(3, 35);
    const id = hex(digest);
    const index = u16(chunk, 35);
    const count = u16(chunk, 37);
    const total = u32(chunk, 39);
    const payload = chunk.slice(CHUNK_HEADER_BYTES);
    if (count < 1 || index >= count) throw new BitstreamError(`chunk index ${index} is not below the chunk count ${count}`);
    if (total > this.maxMessageBytes) throw new BitstreamError(`message of ${total} bytes exceeds the limit of ${this.maxMessageBytes}`);
    if (count > total + 1 || (count > 1 && !payload.length)) {
      throw new BitstreamError(`${count} chunks for a ${total}-byte message is inconsistent`);
    }
    let partial = this._pending.get(id);
    if (partial === undefined) {
      partial = { count, total, size: null, parts: new Map() };
      this._pending.set(id, partial);
      while (this._pending.size > this.maxPending) {
        this._pending.delete(this._pending.keys().next().value);
        this.dropped += 1;
      }
    }
    try {
      ChunkReassembler._check(partial, index, count, total, payload);
    } catch (exc) {
      this._pending.delete(id);
      throw exc;
    }
    if (!partial.parts.has(index)) partial.parts.set(index, payload);
    if (partial.parts.size < partial.count) return null;
    this._pending.delete(id);
    const message = new Uint8Array(partial.total);
    let at = 0;
    for (let i = 0; i < partial.count; i++) {
      const part = partial.parts.get(i);
      if (at + part.length > message.length) {
        at = -1;
        break;
      }
      message.set(part, at);
      at += part.length;
    }
    if (at !== partial.total || !equalBytes(sha256(message), digest)) {
      throw new BitstreamError(`reassembled message does not match its id ${id.slice(0, 16)}… (inconsistent chunks)`);
    }
    return message;
  }

  static _check(partial, index, count, total, payload) {
    if (count !== partial.count || total !== partial.total) {
      throw new BitstreamError(`chunk says ${count} chunks / ${total} bytes, earlier chunks of the message said ${partial.count} / ${partial.total}`);
    }
    const held = partial.parts.get(index);
    if (held !== undefined && !equalBytes(held, payload)) throw new BitstreamError(`chunk ${index} arrived twice with different payloads`);
    const last = index === count - 1;
    if (count === 1) {
      if (payload.length !== total) throw new BitstreamError(`single chunk carries ${payload.length} bytes of a ${total}-byte message`);
      return;
    }
    if (!last) {
      if (partial.size === null) partial.size = payload.length;
      else if (payload.length !== partial.size) {
        throw new BitstreamError(`chunk ${index} carries ${payload.length} bytes, other chunks ${partial.size}`);
      }
    }
    const size = partial.size;
    if (size !== null) {
      const expectedLast = total - size * (count - 1);
      if (expectedLast <= 0 || expectedLast > size) throw new BitstreamError(`chunk size ${size} × ${count} chunks cannot hold exactly ${total} bytes`);
      if (last && payload.length !== expectedLast) throw new BitstreamError(`last chunk carries ${payload.length} bytes, ${expectedLast} expected`);
      const lastHeld = partial.parts.get(count - 1);
      if (lastHeld !== undefined && lastHeld.length !== expectedLast) {
        throw new BitstreamError(`last chunk carries ${lastHeld.length} bytes, ${expectedLast} expected`);
      }
    }
    if (payload.length > total) throw new BitstreamError(`chunk ${index} carries ${payload.length} bytes, more than the whole ${total}-byte message`);
  }
}

// -- msgpack: the few types a reference message holds --------------------------------------------------------
class MsgpackReader {
  constructor(bytes) {
    this.b = bytes;
    this.at = 0;
  }

  need(n) {
    if (this.at + n > this.b.length) throw new Error("Unpack failed: incomplete input");
  }

  uint(n) {
    this.need(n);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + this.b[this.at + i];
    this.at += n;
    return v;
  }

  str(n) {
    this.need(n);
    const s = new TextDecoder("utf-8", { fatal: true }).decode(this.b.subarray(this.at, this.at + n));
    this.at += n;
    return s;
  }

  bin(n) {
    this.need(n);
    const out = this.b.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }

  value(depth = 0) {
    if (depth > 64) throw new Error("nesting too deep");
    const t = this.uint(1);
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0xa0 && t <= 0xbf) return this.str(t & 0x1f);
    if (t >= 0x90 && t <= 0x9f) return this.array(t & 0x0f, depth);
    if (t >= 0x80 && t <= 0x8f) return this.map(t & 0x0f, depth);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.uint(1));
      case 0xc5: return this.bin(this.uint(2));
      case 0xc6: return this.bin(this.uint(4));
      case 0xca: { this.need(4); const v = new DataView(this.b.buffer, this.b.byteOffset + this.at, 4).getFloat32(0); this.at += 4; return { float: v }; }
      case 0xcb: { this.need(8); const v = new DataView(this.b.buffer, this.b.byteOffset + this.at, 8).getFloat64(0); this.at += 8; return { float: v }; }
      case 0xcc: return this.uint(1);
      case 0xcd: return this.uint(2);
      case 0xce: return this.uint(4);
      case 0xcf: return this.uint(8);
      case 0xd0: { const v = this.uint(1); return v >= 0x80 ? v - 0x100 : v; }
      case 0xd1: { const v = this.uint(2); return v >= 0x8000 ? v - 0x10000 : v; }
      case 0xd2: { const v = this.uint(4); return v >= 2 ** 31 ? v - 2 ** 32 : v; }
      case 0xd3: { const v = this.uint(8); return v >= 2 ** 63 ? v - 2 ** 64 : v; }
      case 0xd9: return this.str(this.uint(1));
      case 0xda: return this.str(this.uint(2));
      case 0xdb: return this.str(this.uint(4));
      case 0xdc: return this.array(this.uint(2), depth);
      case 0xdd: return this.array(this.uint(4), depth);
      case 0xde: return this.map(this.uint(2), depth);
      case 0xdf: return this.map(this.uint(4), depth);
      default: throw new Error(`unsupported msgpack type 0x${t.toString(16)}`);
    }
  }

  array(n, depth) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
    return out;
  }

  map(n, depth) {
    const out = new Map();
    for (let i = 0; i < n; i++) out.set(this.value(depth + 1), this.value(depth + 1));
    return { map: out };
  }
}

// -- the portrait's header: format and size (PIL's probe in codec/reference_message.py) ----------------------
/** Encoded image bytes -> [width, height, format] from the header, or null when it is no JPEG, PNG or WebP. */
export function imageHeader(image) {
  const b = image;
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && u32(b, 12) === 0x49484452) {
    return [u32(b, 16), u32(b, 20), "png"];
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let at = 2;
    while (at + 9 < b.length) {
      if (b[at] !== 0xff) return null;
      const marker = b[at + 1];
      if (marker === 0xff) {
        at += 1;
        continue;
      }
      const length = u16(b, at + 2);
      const isFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (isFrame) return [u16(b, at + 7), u16(b, at + 5), "jpeg"];
      at += 2 + length;
    }
    return null;
  }
  const ascii = (at, n) => String.fromCharCode(...b.subarray(at, at + n));
  if (b.length >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
    const kind = ascii(12, 4);
    if (kind === "VP8 ") return [((b[26] | (b[27] << 8)) & 0x3fff), ((b[28] | (b[29] << 8)) & 0x3fff), "webp"];
    if (kind === "VP8L") {
      const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
      return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1, "webp"];
    }
    if (kind === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16)), "webp"];
  }
  return null;
}

function checkSize(width, height) {
  if (!(width > 0 && width <= MAX_SIDE && height > 0 && height <= MAX_SIDE && width * height <= MAX_PIXELS)) {
    throw new BitstreamError(`portrait of ${width}x${height} pixels exceeds the limit (${MAX_PIXELS} pixels, sides ≤ ${MAX_SIDE}): resize it`);
  }
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  if (short < MIN_SIDE || long > MAX_ASPECT * short) {
    throw new BitstreamError(`portrait of ${width}x${height} pixels is not a face crop (short side ≥ ${MIN_SIDE}, aspect ratio ≤ 3:1): send the model-sized square crop`);
  }
}

/** [width, height, format] of an encoded portrait, checked as codec/reference_message.py probe_image checks it. */
export function probeImage(image) {
  if (image.length > MAX_IMAGE_BYTES) throw new BitstreamError(`portrait of ${image.length} bytes exceeds ${MAX_IMAGE_BYTES}: re-encode it smaller`);
  const header = imageHeader(image);
  if (header === null) throw new BitstreamError("the portrait is not a readable image in an accepted format (jpeg, png, webp)");
  checkSize(header[0], header[1]);
  return header;
}

function checkIds(modelId, modelVersion) {
  for (const [name, value] of [["model_id", modelId], ["model_version", modelVersion]]) {
    if (typeof value !== "string" || !(value.length > 0 && [...value].length <= MAX_ID_CHARS)) {
      throw new BitstreamError(`${name} must be a non-empty string of ≤ ${MAX_ID_CHARS} characters, got ${typeof value === "string" ? `'${value}'` : String(value)}`);
    }
  }
}

/** msgpack bytes -> {modelId, modelVersion, contentHash (hex), width, height, imageFormat, image}; BitstreamError if bad. */
export function unpackReferenceMessage(data) {
  const buf = toBytes(data, "a reference message");
  if (buf.length > MAX_MESSAGE_BYTES) throw new BitstreamError(`oversize reference message: ${buf.length} bytes > ${MAX_MESSAGE_BYTES}`);
  let items;
  try {
    const reader = new MsgpackReader(buf);
    items = reader.value();
    if (reader.at !== buf.length) throw new Error("Unpack failed: extra data");
  } catch (exc) {
    throw new BitstreamError(`reference message is not valid msgpack: ${exc.message}`);
  }
  if (!Array.isArray(items) || items.length !== 9) {
    throw new BitstreamError(`reference message must be a 9-item msgpack array, got ${pyTypeName(items)}`);
  }
  if (items[0] !== MESSAGE_TAG) throw new BitstreamError(`not a reference message: tag ${typeof items[0] === "string" ? `'${items[0]}'` : String(items[0])}, expected 'kpref'`);
  if (items[1] !== MESSAGE_VERSION) throw new BitstreamError(`unsupported reference message version ${String(items[1])} (this build reads ${MESSAGE_VERSION})`);
  const [, , modelId, modelVersion, contentHash, width, height, imageFormat, image] = items;
  for (const [name, value] of [["width", width], ["height", height]]) {
    if (!Number.isInteger(value)) throw new BitstreamError(`reference message ${name} must be an int, got ${value === null ? "None" : String(value)}`);
  }
  if (typeof imageFormat !== "string" || !(image instanceof Uint8Array) || !(contentHash instanceof Uint8Array)) {
    throw new BitstreamError("reference message fields have the wrong types (format str, hash and image bin)");
  }
  checkIds(modelId, modelVersion);
  if (contentHash.length !== 32) throw new BitstreamError("content_hash must be 32 bytes");
  const [w, h, format] = probeImage(image);
  if (hex(sha256(image)) !== hex(contentHash)) throw new BitstreamError(`content_hash ${hex(contentHash)} is not the SHA-256 of the image`);
  if (w !== width || h !== height || format !== imageFormat) {
    throw new BitstreamError(`the image is ${w}x${h} ${format}, the message says ${width}x${height} ${imageFormat}`);
  }
  if (!IMAGE_FORMATS.includes(format)) throw new BitstreamError(`portrait format '${format}' is not one of ['jpeg', 'png', 'webp']`);
  return { modelId, modelVersion, contentHash: hex(contentHash), width, height, imageFormat, image };
}

/** The receiver's cache key of a portrait: hex content hash, model id and version (receiver/references.py). */
export function cacheKey(contentHashHex, modelId, modelVersion) {
  return `${contentHashHex}:${modelId}:${modelVersion}`;
}
