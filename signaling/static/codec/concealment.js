// Motion for frames that never arrived: a port of receiver/concealment.py.
//
// Interpolation (a later frame is already buffered): every field linearly between the two neighbours.
// Extrapolation (nothing later yet): head angles and translation continue at the last observed velocity,
// damped geometrically (DAMPING per frame), and the expression δ holds its last value.
//
// A motion is {yaw, pitch, roll (degrees), translation Float32Array(3), expression Float32Array(3K),
// present Array(K) of booleans}; rows of absent keypoints are 0 (as MotionParams keeps them).

export const DAMPING = 0.8;

function motion(yaw, pitch, roll, translation, expression, present) {
  const t = Float32Array.from(translation);
  const e = Float32Array.from(expression);
  present.forEach((flag, k) => {
    if (!flag) e.fill(0, 3 * k, 3 * k + 3);
  });
  return { yaw, pitch, roll, translation: t, expression: e, present: present.slice() };
}

/** (1 - alpha)·a + alpha·b per field, alpha in [0, 1]; keypoints missing in either keep the nearer one's δ. */
export function interpolate(a, b, alpha) {
  if (a.present.length !== b.present.length) return alpha < 0.5 ? a : b;
  alpha = Math.min(1, Math.max(0, alpha));
  const nearer = alpha < 0.5 ? a : b;
  const k = a.present.length;
  const expression = new Float32Array(3 * k);
  const present = [];
  for (let i = 0; i < k; i++) {
    const both = a.present[i] && b.present[i];
    present.push(both || nearer.present[i]);
    for (let j = 3 * i; j < 3 * i + 3; j++) {
      expression[j] = both ? (1 - alpha) * a.expression[j] + alpha * b.expression[j] : nearer.expression[j];
    }
  }
  const mix = (x, y) => (1 - alpha) * x + alpha * y;
  const translation = a.translation.map((v, i) => mix(v, b.translation[i]));
  return motion(mix(a.yaw, b.yaw), mix(a.pitch, b.pitch), mix(a.roll, b.roll), translation, expression, present);
}

/** Σ_{i=1..h} damping^i: how many frames' worth of velocity to add h frames after the last known one. */
export function dampedSteps(framesAhead, damping = DAMPING) {
  if (framesAhead <= 0) return 0;
  return (damping * (1 - damping ** framesAhead)) / (1 - damping);
}

/** Continue the pose from previous -> last (framesBetween frames apart) framesAhead frames on. */
export function extrapolate(previous, last, framesBetween, framesAhead) {
  if (previous === null || framesBetween <= 0 || previous.present.length !== last.present.length) return last;
  const steps = dampedSteps(framesAhead) / framesBetween;
  const go = (p, l) => l + (l - p) * steps;
  const translation = last.translation.map((v, i) => go(previous.translation[i], v));
  return motion(go(previous.yaw, last.yaw), go(previous.pitch, last.pitch), go(previous.roll, last.roll), translation,
    last.expression, last.present);
}
