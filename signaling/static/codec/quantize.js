// The motion quantizer presets and dequantization: a port of codec/quantize.py (ids are wire constants).
//
// Every field sits on an absolute grid, x̂ = q · step; q_max = ceil(range / step) bounds each field.
// Angles are degrees (doubles, as Python's float); translation and δ are float32 in Python, so here
// they are rounded to float32 (Math.fround) exactly as numpy's astype(float32) rounds.

export const ANGLE_RANGE_DEG = [90.0, 90.0, 180.0]; // yaw, pitch, roll
export const TRANSLATION_RANGE = 4.0;
export const EXPRESSION_RANGE = 2.0;
export const NUM_POSE_FIELDS = 6;

function qmax(range, step) {
  return Math.ceil(range / step - 1e-9);
}

function preset(presetId, name, angleStepDeg, translationStep, expressionStep) {
  return Object.freeze({
    presetId,
    name,
    angleStepDeg,
    translationStep,
    expressionStep,
    angleQmax: Object.freeze(ANGLE_RANGE_DEG.map((r) => qmax(r, angleStepDeg))),
    translationQmax: qmax(TRANSLATION_RANGE, translationStep),
    expressionQmax: qmax(EXPRESSION_RANGE, expressionStep),
  });
}

/** The presets by wire id (codec/quantize.py PRESETS). */
export const PRESETS = Object.freeze({
  1: preset(1, "fine", 0.1, 0.002, 0.002),
  2: preset(2, "default", 0.25, 0.005, 0.005),
  3: preset(3, "coarse", 0.5, 0.01, 0.01),
});

export const PRESET_IDS = Object.freeze(Object.keys(PRESETS).map(Number).sort((a, b) => a - b));

/**
 * Grid indices of one frame (6 + 3K: yaw, pitch, roll, t_x, t_y, t_z, then δ row-major) -> motion:
 * {yaw, pitch, roll} degrees, translation Float32Array(3), expression Float32Array(3K) (absent rows 0),
 * present Array(K) of booleans (codec/prediction.py motion_from_values).
 */
export function motionFromValues(values, layout) {
  const p = PRESETS[layout.presetId];
  const k = layout.present.length;
  const translation = new Float32Array(3);
  for (let i = 0; i < 3; i++) translation[i] = values[3 + i] * p.translationStep;
  const expression = new Float32Array(3 * k);
  for (let i = 0; i < 3 * k; i++) expression[i] = values[NUM_POSE_FIELDS + i] * p.expressionStep;
  return {
    yaw: values[0] * p.angleStepDeg,
    pitch: values[1] * p.angleStepDeg,
    roll: values[2] * p.angleStepDeg,
    translation,
    expression,
    present: layout.present.slice(),
  };
}
