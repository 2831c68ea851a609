// Messages on the reliable "control" data channel (JSON text): a port of signaling/control.py.
//
//   const msg = decodeControl(text);            // {type: "hello", version, stream_id, ...}; ControlError if malformed
//   channel.send(encodeControl({ type: "reference_status", content_hash, have: false }));
//
// Messages are plain objects with the Python field names (snake_case: they are the wire's names). The decoder
// checks what signaling/control.py decode_control checks and throws a ControlError with the same message
// (tests/test_control_js.py compares both on golden vectors). One difference JSON.parse imposes: JS numbers do
// not keep "1.0" apart from "1", so an integer field written as 1.0 is accepted here and refused by Python.

export const PROTOCOL_VERSION = 1;
export const MAX_CONTROL_BYTES = 64 * 1024;
export const MAX_STATS_FIELDS = 64;
export const MAX_STATS_NUMBER = 2 ** 53; // a stats value beyond this is not exact in JavaScript
export const MAX_AVATAR_BYTES = 4 * 1024 * 1024;
export const MAX_AVATAR_CHUNK_BYTES = 32 * 1024;
export const MOTION_TRANSPORTS = ["rtp", "datachannel", "rtp+audio"];
const HEX_HASH = /^[0-9a-f]{64}$/;
const STAT_KEY = /^[a-z][a-z0-9_]{0,47}$/;
const VIEW_PATTERN = /^[a-z0-9=,.:\- ]{1,128}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

// Each message type's fields in the order of its Python dataclass (the order encodeControl writes them in).
export const FIELDS = Object.freeze({
  hello: ["version", "stream_id", "fps", "content_hash", "model_id", "model_version", "reference_bytes"],
  reference_status: ["content_hash", "have"],
  reference_ready: ["content_hash", "cached"],
  ping: ["t_ms"],
  pong: ["t_ms"],
  delay_report: ["jitter_ms", "playout_delay_ms", "late_frames", "concealed_frames", "rendered_fps"],
  rate_decision: ["keypoints", "preset", "frames_per_packet", "max_kbps", "estimated_kbps", "reason", "enhancement_qp",
    "enhancement_interval", "enhancement_size"],
  capabilities: ["frame_bundle", "enhancement_size", "enhancement_max_size"],
  motion_transport: ["transport"],
  enhancement_key: ["seq"],
  command: ["keypoints", "frames_per_packet", "max_kbps", "view", "avatar"],
  avatar_chunk: ["upload_id", "index", "count", "data"],
  stats: ["source", "values"],
  status: ["state", "detail", "control"],
  ack: ["command", "detail"],
  error: ["code", "message"],
});
const TYPE_NAMES = Object.keys(FIELDS).sort();

/** A control message that cannot be accepted (signaling.control.ControlError). */
export class ControlError extends Error {
  constructor(message) {
    super(message);
    this.name = "ControlError";
  }
}

// -- Python's text of a value, for messages that quote it --------------------------------------------------
function pyFloat(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  const [mantissa, expText] = x.toExponential().split("e"); // the shortest digits that round-trip, as Python's repr
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) return `${mantissa}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  const text = String(x);
  return text.includes(".") ? text : `${text}.0`;
}

function pyString(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const code = ch.codePointAt(0);
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else if (code >= 0xd800 && code <= 0xdfff) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return out + quote;
}

/** repr() of a value JSON.parse made, as Python would write the value json.loads made. */
export function pyRepr(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isInteger(value) && Math.abs(value) < 1e16 ? String(value) : pyFloat(value);
  if (typeof value === "string") return pyString(value);
  if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${pyString(k)}: ${pyRepr(v)}`).join(", ")}}`;
}

/** Python's format(x, "g"). */
export function pyG(x) {
  if (x === 0) return "0";
  const exponent = Math.floor(Math.log10(Math.abs(x)));
  if (exponent < -4 || exponent >= 6) {
    const [mantissa, exp] = x.toExponential(5).split("e");
    const m = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
    const sign = exp[0] === "-" ? "-" : "+";
    return `${m}e${sign}${exp.replace(/^[+-]/, "").padStart(2, "0")}`;
  }
  const fixed = x.toPrecision(6);
  return fixed.includes(".") ? fixed.replace(/0+$/, "").replace(/\.$/, "") : fixed;
}

const repr40 = (value) => pyRepr(value).slice(0, 40);
const codePoints = (s) => [...s].length;
const isNumber = (v) => typeof v === "number";

// -- field checks (signaling/control.py _number, _integer, _text, _flag) ------------------------------------
function number(obj, key, low, high, optional = false) {
  const value = obj[key];
  if ((value === null || value === undefined) && optional) return null;
  if (!isNumber(value) || !Number.isFinite(value) || !(low <= value && value <= high)) {
    throw new ControlError(`control field '${key}' must be a number in [${pyG(low)}, ${pyG(high)}], got ${repr40(value)}`);
  }
  return value;
}

function integer(obj, key, low, high) {
  const value = obj[key];
  if (!Number.isInteger(value) || !(low <= value && value <= high)) {
    throw new ControlError(`control field '${key}' must be an integer in [${low}, ${high}], got ${repr40(value)}`);
  }
  return value;
}

function text(obj, key, maxChars, pattern = null, optional = false) {
  const value = obj[key];
  if ((value === null || value === undefined) && optional) return null;
  if (typeof value !== "string" || codePoints(value) > maxChars) {
    throw new ControlError(`control field '${key}' must be a string of ≤ ${maxChars} characters, got ${repr40(value)}`);
  }
  if (pattern !== null && !pattern.test(value)) {
    throw new ControlError(`control field '${key}' = ${pyRepr(value).slice(0, 60)} does not match ${pattern.source}`);
  }
  return value;
}

function autoOrInt(obj, key, low, high) {
  const value = obj[key];
  if (value === null || value === undefined || value === "auto") return value ?? null;
  return integer(obj, key, low, high);
}

function flag(obj, key) {
  const value = obj[key];
  if (typeof value !== "boolean") throw new ControlError(`control field '${key}' must be true or false, got ${repr40(value)}`);
  return value;
}

function base64Payload(data) {
  if (data.length % 4 !== 0 || !BASE64.test(data)) throw new ControlError("avatar_chunk 'data' is not valid base64");
  return data;
}

/** JSON text (or UTF-8 bytes) -> a control message object; ControlError for anything malformed, unknown or oversize. */
export function decodeControl(data) {
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    try {
      data = new TextDecoder("utf-8", { fatal: true }).decode(data);
    } catch {
      throw new ControlError("control message is not UTF-8 text");
    }
  }
  if (typeof data !== "string") throw new ControlError(`control message must be text, got ${typeof data}`);
  const length = codePoints(data);
  if (length > MAX_CONTROL_BYTES) throw new ControlError(`control message of ${length} characters exceeds ${MAX_CONTROL_BYTES}`);
  let obj;
  try {
    obj = JSON.parse(data);
  } catch (exc) {
    throw new ControlError(`control message is not valid JSON: ${exc.message}`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj) || typeof obj.type !== "string") {
    throw new ControlError(`control message must be a JSON object with a string 'type', got ${pyRepr([...data].slice(0, 60).join(""))}`);
  }
  const kind = obj.type;
  const fields = Object.hasOwn(FIELDS, kind) ? FIELDS[kind] : null;
  if (fields === null) {
    throw new ControlError(`unknown control message type ${repr40(kind)}; expected one of ${pyRepr(TYPE_NAMES)}`);
  }
  const extra = Object.keys(obj).filter((k) => k !== "type" && !fields.includes(k)).sort();
  if (extra.length) throw new ControlError(`${pyRepr(kind)} message has unknown fields ${pyRepr(extra.slice(0, 5))}`);
  switch (kind) {
    case "hello": {
      const version = integer(obj, "version", 1, 1000);
      if (version !== PROTOCOL_VERSION) {
        throw new ControlError(`unsupported control protocol version ${version} (this build speaks ${PROTOCOL_VERSION})`);
      }
      return {
        type: kind, version, stream_id: integer(obj, "stream_id", 0, 2 ** 32 - 1), fps: number(obj, "fps", 1.0, 120.0),
        content_hash: text(obj, "content_hash", 64, HEX_HASH), model_id: text(obj, "model_id", 128),
        model_version: text(obj, "model_version", 128), reference_bytes: integer(obj, "reference_bytes", 0, 64 * 1024 * 1024),
      };
    }
    case "reference_status":
      return { type: kind, content_hash: text(obj, "content_hash", 64, HEX_HASH), have: flag(obj, "have") };
    case "reference_ready":
      return { type: kind, content_hash: text(obj, "content_hash", 64, HEX_HASH), cached: flag(obj, "cached") };
    case "ping":
    case "pong":
      return { type: kind, t_ms: number(obj, "t_ms", 0.0, 1e15) };
    case "delay_report":
      return {
        type: kind, jitter_ms: number(obj, "jitter_ms", 0.0, 1e6), playout_delay_ms: number(obj, "playout_delay_ms", 0.0, 1e6),
        late_frames: integer(obj, "late_frames", 0, 2 ** 53), concealed_frames: integer(obj, "concealed_frames", 0, 2 ** 53),
        rendered_fps: number(obj, "rendered_fps", 0.0, 1000.0, true),
      };
    case "rate_decision":
      return {
        type: kind, keypoints: integer(obj, "keypoints", 0, 64), preset: text(obj, "preset", 32),
        frames_per_packet: integer(obj, "frames_per_packet", 1, 64), max_kbps: number(obj, "max_kbps", 0.0, 1e6, true),
        estimated_kbps: number(obj, "estimated_kbps", 0.0, 1e6), reason: text(obj, "reason", 256),
        enhancement_qp: obj.enhancement_qp === null || obj.enhancement_qp === undefined ? null : integer(obj, "enhancement_qp", 1, 63),
        enhancement_interval: obj.enhancement_interval === null || obj.enhancement_interval === undefined ? null
          : integer(obj, "enhancement_interval", 1, 4),
        enhancement_size: obj.enhancement_size === null || obj.enhancement_size === undefined ? null
          : integer(obj, "enhancement_size", 1, 1024),
      };
    case "motion_transport": {
      const transport = text(obj, "transport", 16);
      if (!MOTION_TRANSPORTS.includes(transport)) {
        throw new ControlError(`motion transport ${pyRepr(transport)} is not one of ${pyRepr(MOTION_TRANSPORTS)}`);
      }
      return { type: kind, transport };
    }
    case "capabilities":
      return {
        type: kind, frame_bundle: integer(obj, "frame_bundle", 0, 255), enhancement_size: integer(obj, "enhancement_size", 0, 1024),
        enhancement_max_size: obj.enhancement_max_size === undefined ? 0 : integer(obj, "enhancement_max_size", 0, 1024),
      };
    case "enhancement_key":
      return { type: kind, seq: integer(obj, "seq", 0, 65535) };
    case "command": {
      const maxKbps = number(obj, "max_kbps", 0.0, 1e5, true);
      const avatar = text(obj, "avatar", 16, null, true);
      if (avatar !== null && avatar !== "reset") {
        throw new ControlError(`command field 'avatar' must be "reset" (upload images with avatar_chunk), got ${pyRepr(avatar)}`);
      }
      return {
        type: kind, keypoints: autoOrInt(obj, "keypoints", 0, 64), frames_per_packet: autoOrInt(obj, "frames_per_packet", 1, 8),
        max_kbps: maxKbps, view: text(obj, "view", 128, VIEW_PATTERN, true), avatar,
      };
    }
    case "avatar_chunk": {
      const count = integer(obj, "count", 1, Math.floor(MAX_AVATAR_BYTES / MAX_AVATAR_CHUNK_BYTES) + 1);
      const index = integer(obj, "index", 0, count - 1);
      const data64 = text(obj, "data", Math.floor((4 * MAX_AVATAR_CHUNK_BYTES) / 3) + 4);
      const uploadId = integer(obj, "upload_id", 0, 2 ** 31);
      return { type: kind, upload_id: uploadId, index, count, data: base64Payload(data64) };
    }
    case "stats": {
      const source = text(obj, "source", 16);
      const values = obj.values;
      if (values === null || typeof values !== "object" || Array.isArray(values) || Object.keys(values).length > MAX_STATS_FIELDS) {
        throw new ControlError(`stats 'values' must be an object of ≤ ${MAX_STATS_FIELDS} fields`);
      }
      for (const [key, value] of Object.entries(values)) {
        if (!STAT_KEY.test(key)) throw new ControlError(`stats key ${repr40(key)} must match ${STAT_KEY.source}`);
        const ok = value === null || (typeof value === "string" && codePoints(value) <= 256) ||
          (isNumber(value) && Number.isFinite(value) && Math.abs(value) <= MAX_STATS_NUMBER);
        if (!ok) {
          throw new ControlError(`stats value of ${pyRepr(key)} must be a finite number of magnitude ≤ 2**53, a short string or null, got ${repr40(value)}`);
        }
      }
      return { type: kind, source, values };
    }
    case "status":
      return {
        type: kind, state: text(obj, "state", 64), detail: text(obj, "detail", 512, null, true) || "",
        control: obj.control === null || obj.control === undefined ? null : flag(obj, "control"),
      };
    case "ack":
      return { type: kind, command: text(obj, "command", 32), detail: text(obj, "detail", 512, null, true) || "" };
    default:
      return { type: kind, code: text(obj, "code", 64), message: text(obj, "message", 512) };
  }
}

/** A control message object -> JSON text (fields in the Python order; null fields left out as Python does). */
export function encodeControl(msg) {
  const fields = Object.hasOwn(FIELDS, msg.type) ? FIELDS[msg.type] : null;
  if (fields === null) throw new ControlError(`unknown control message type ${pyRepr(msg.type)}`);
  const keepNull = msg.type === "rate_decision" || msg.type === "stats";
  const obj = { type: msg.type };
  for (const key of fields) {
    const value = msg[key];
    if (value === undefined) continue;
    if (value !== null || (keepNull && key !== "enhancement_qp")) obj[key] = value;
  }
  const textOut = JSON.stringify(obj);
  const bytes = new TextEncoder().encode(textOut).length;
  if (bytes > MAX_CONTROL_BYTES) throw new ControlError(`${msg.type} message of ${bytes} bytes exceeds ${MAX_CONTROL_BYTES}`);
  return textOut;
}
