// The receiver's networks in the browser: onnxruntime-web runs the files ``python -m codec.export`` writes.
//
//   const renderer = await NeuralRenderer.load("models/");          // manifest.json, reference.onnx, render.onnx
//   await renderer.prepare(imageData);                                // once per portrait (S x S ImageData)
//   const rgba = await renderer.render(frame.motion);                 // Uint8ClampedArray S x S x 4
//   canvas.getContext("2d").putImageData(new ImageData(rgba, S, S), 0, 0);
//
// onnxruntime-web comes from npm (signaling/static/vendor, pinned; make installs it) and is served by the
// page's own server: nothing is fetched from a CDN. WebGPU where the browser has it (navigator.gpu and an
// adapter), else WASM with threads when the page is cross-origin isolated (COOP/COEP headers), 1 thread
// otherwise. Keypoints whose δ is absent (not sent at a low K) keep the reference's own δ, as the Python
// receiver does (codec/model/wrappers.py FrameSynthesizer.render).

const ORT_DIST = new URL("../vendor/node_modules/onnxruntime-web/dist/", import.meta.url).href;
const STATE_NAMES = ["features", "skip", "image_small", "kp_canonical", "kp_ref", "rotation_ref"];

async function pickBackend(preferred) {
  if (preferred !== "wasm" && typeof navigator !== "undefined" && navigator.gpu) {
    try {
      if (await navigator.gpu.requestAdapter()) return "webgpu";
    } catch {
      // no usable adapter: WASM
    }
  }
  if (preferred === "webgpu") throw new Error("WebGPU was asked for but this browser has no usable adapter");
  return "wasm";
}

/**
 * Which of the timed variants (best picture first, [{preset, renderMs}]) to render with: the first within
 * budgetsMs[0] (the call's frame period), else the first within budgetsMs[1] (the slowest rate still worth rendering),
 * else the fastest. -> {index, reason}.
 */
export function chooseVariant(trials, budgetsMs) {
  if (trials.length === 0) throw new Error("no variant was timed");
  const ms = (i) => trials[i].renderMs.toFixed(1);
  const first = trials.findIndex((t) => t.renderMs <= budgetsMs[0]);
  if (first >= 0) return { index: first, reason: `renders in ${ms(first)} ms ≤ ${budgetsMs[0].toFixed(0)} ms a frame` };
  const second = trials.findIndex((t) => t.renderMs <= budgetsMs[1]);
  if (second >= 0) {
    return { index: second, reason: `the best picture within ${budgetsMs[1].toFixed(0)} ms a frame (${ms(second)} ms; none within ${budgetsMs[0].toFixed(0)})` };
  }
  const fastest = trials.reduce((best, t, i) => (t.renderMs < trials[best].renderMs ? i : best), 0);
  return { index: fastest, reason: `the fastest (${ms(fastest)} ms a frame; none within ${budgetsMs[1].toFixed(0)} ms)` };
}

export class NeuralRenderer {
  constructor(ort, manifest, reference, render, backend, threads) {
    this.ort = ort;
    this.manifest = manifest;
    this.size = manifest.image_size;
    this.numKeypoints = manifest.num_keypoints;
    this.referenceSession = reference;
    this.renderSession = render;
    this.backend = backend;
    this.threads = threads;
    this.state = null;
  }

  /**
   * Load onnxruntime-web and the exported networks under ``modelsUrl`` (manifest.json names the files).
   * options: {backend: "auto" | "wasm" | "webgpu", threads: WASM threads (default: 1, or up to 4 when
   * crossOriginIsolated), proxy: run WASM inference in a web worker (default false)}.
   */
  static async load(modelsUrl, options = {}) {
    const base = new URL(modelsUrl, location.href);
    const response = await fetch(new URL("manifest.json", base));
    if (!response.ok) {
      throw new Error(`no exported networks at ${base} (HTTP ${response.status}): make web-models (python -m codec.export --out signaling/static/models)`);
    }
    const manifest = await response.json();
    if (manifest.format !== "kpcall-onnx" || manifest.version !== 1) {
      throw new Error(`${base}manifest.json is not a kpcall ONNX manifest (format ${manifest.format}, version ${manifest.version})`);
    }
    const backend = await pickBackend(options.backend ?? "auto");
    const ort = await import(ORT_DIST + (backend === "webgpu" ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs"));
    ort.env.wasm.wasmPaths = ORT_DIST;
    const isolated = typeof crossOriginIsolated !== "undefined" && crossOriginIsolated;
    const threads = options.threads ?? (isolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
    ort.env.wasm.numThreads = isolated ? threads : 1;
    // proxy: WASM inference in a worker, so that the page's own thread stays free during a render (a receiving page
    // timestamps the motion as it arrives; a render that blocks it for 300 ms looks like network jitter)
    ort.env.wasm.proxy = backend === "wasm" && Boolean(options.proxy);
    const sessionOptions = { executionProviders: [backend], graphOptimizationLevel: "all" };
    const create = async (file) => {
      const bytes = await (await fetch(new URL(file, base))).arrayBuffer();
      return ort.InferenceSession.create(bytes, sessionOptions);
    };
    const reference = await create(manifest.reference.file);
    const render = await create(manifest.render.file);
    const renderer = new NeuralRenderer(ort, manifest, reference, render, backend, ort.env.wasm.numThreads);
    renderer.proxy = ort.env.wasm.proxy;
    return renderer;
  }

  /**
   * Load the best variant under ``modelsUrl`` that renders in time. ``modelsUrl``/index.json (``python -m
   * codec.export`` with several --weights) lists variants best picture first; each is loaded and timed in turn
   * (``measure``) until one renders within ``budgetsMs[0]`` (the call's frame period); failing that, the best one
   * within ``budgetsMs[1]`` (the slowest rate still worth rendering), else the fastest. Without an index the folder's
   * one model is loaded and timed. -> {renderer, trials: [{preset, modelId, renderMs}], reason}.
   */
  static async loadBest(modelsUrl, options = {}, budgetsMs = [40, 66]) {
    const base = new URL(modelsUrl, location.href);
    const response = await fetch(new URL("index.json", base));
    if (!response.ok) {
      const renderer = await NeuralRenderer.load(modelsUrl, options);
      const renderMs = await renderer.measure();
      return { renderer, trials: [{ preset: renderer.manifest.preset, modelId: renderer.manifest.model_id, renderMs }], reason: "the only model" };
    }
    const index = await response.json();
    if (index.format !== "kpcall-onnx-variants" || !Array.isArray(index.variants) || index.variants.length === 0) {
      throw new Error(`${base}index.json is not a kpcall variant list (format ${index.format})`);
    }
    const trials = [];
    const loaded = [];
    for (const variant of index.variants) {
      const renderer = await NeuralRenderer.load(new URL(variant.folder, base).href, options);
      trials.push({ preset: variant.preset, modelId: renderer.manifest.model_id, renderMs: await renderer.measure() });
      loaded.push(renderer);
      if (trials[trials.length - 1].renderMs <= budgetsMs[0]) break; // in time for the call's rate: no need to time smaller ones
    }
    const { index: chosenIndex, reason } = chooseVariant(trials, budgetsMs);
    const chosen = loaded[chosenIndex];
    for (const renderer of loaded) if (renderer !== chosen) await renderer.release();
    return { renderer: chosen, trials, reason };
  }

  /** Median ms of ``runs`` renders (after ``warmup`` untimed ones: the first runs of a new session are slower) of a flat
   * grey portrait held still; the state is cleared after. */
  async measure(runs = 5, warmup = 2) {
    const s = this.size;
    const data = new Uint8ClampedArray(4 * s * s).fill(128);
    await this.prepare({ data, width: s, height: s });
    const motion = { yaw: 0, pitch: 0, roll: 0, translation: [0, 0, 0], expression: new Float32Array(3 * this.numKeypoints),
      present: new Array(this.numKeypoints).fill(false) };
    for (let i = 0; i < warmup; i++) await this.renderPlanar(motion);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await this.renderPlanar(motion);
      times.push(performance.now() - t0);
    }
    this.state = null;
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }

  /** Free both sessions (a variant not chosen). */
  async release() {
    await this.referenceSession.release();
    await this.renderSession.release();
  }

  /** Prepare a portrait: ``imageData`` S x S RGBA (ImageData or {data, width, height}). */
  async prepare(imageData) {
    const s = this.size;
    if (imageData.width !== s || imageData.height !== s) {
      throw new Error(`the portrait is ${imageData.width}x${imageData.height}, the model takes ${s}x${s}`);
    }
    const planar = new Float32Array(3 * s * s); // (1, 3, S, S) in [0, 1]
    const rgba = imageData.data;
    for (let i = 0; i < s * s; i++) {
      planar[i] = rgba[4 * i] / 255;
      planar[s * s + i] = rgba[4 * i + 1] / 255;
      planar[2 * s * s + i] = rgba[4 * i + 2] / 255;
    }
    const image = new this.ort.Tensor("float32", planar, [1, 3, s, s]);
    const out = await this.referenceSession.run({ image: this.proxy ? new this.ort.Tensor("float32", planar.slice(), [1, 3, s, s]) : image });
    this.state = { image, expressionRef: out.expression_ref.data };
    for (const name of STATE_NAMES) this.state[name] = out[name];
    return this.state;
  }

  /** Render one frame of motion (quantize.js motionFromValues) -> Float32Array (3, S, S) in [0, 1]. */
  async renderPlanar(motion) {
    if (this.state === null) throw new Error("prepare() a portrait first");
    const k = this.numKeypoints;
    if (motion.present.length !== k) throw new Error(`motion has K = ${motion.present.length}, the model uses K = ${k}`);
    const expression = new Float32Array(3 * k);
    for (let i = 0; i < k; i++) {
      for (let a = 0; a < 3; a++) {
        expression[3 * i + a] = motion.present[i] ? motion.expression[3 * i + a] : this.state.expressionRef[3 * i + a];
      }
    }
    const { Tensor } = this.ort;
    // in proxy mode each run hands its inputs' buffers to the worker (they come back detached): send copies
    const keep = (t) => (this.proxy ? new Tensor(t.type, t.data.slice(), t.dims) : t);
    const feeds = {
      image: keep(this.state.image),
      angles: new Tensor("float32", Float32Array.of(motion.yaw, motion.pitch, motion.roll), [1, 3]),
      translation: new Tensor("float32", Float32Array.from(motion.translation), [1, 3]),
      expression: new Tensor("float32", expression, [1, k, 3]),
    };
    // a model with the eyelid warp reads the eyes' opening only from frames that carry every eyelid row
    // (the ladder's K = 5 rungs send the mouth's): manifest.render.eyelid_rows names them
    if (this.manifest.render.inputs.some((input) => input.name === "eyelids_present")) {
      const rows = this.manifest.render.eyelid_rows ?? [];
      const present = rows.length > 0 && rows.every((i) => i < k && motion.present[i]);
      feeds.eyelids_present = new Tensor("float32", Float32Array.of(present ? 1 : 0), [1]);
    }
    for (const name of STATE_NAMES) feeds[name] = keep(this.state[name]);
    const out = await this.renderSession.run(feeds);
    return out.rendered.data;
  }

  /** Render one frame -> RGBA bytes (S x S x 4), rounded as the Python receiver rounds. */
  async render(motion) {
    const planar = await this.renderPlanar(motion);
    const s = this.size;
    const rgba = new Uint8ClampedArray(4 * s * s);
    for (let i = 0; i < s * s; i++) {
      rgba[4 * i] = Math.round(planar[i] * 255);
      rgba[4 * i + 1] = Math.round(planar[s * s + i] * 255);
      rgba[4 * i + 2] = Math.round(planar[2 * s * s + i] * 255);
      rgba[4 * i + 3] = 255;
    }
    return rgba;
  }
}
