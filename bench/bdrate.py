"""Bitrate ratio at equal quality between two rate-quality curves (Bjøntegaard delta rate).

BD-rate (Bjøntegaard, VCEG-M33, 2001; the piecewise-cubic variant of JVET's common test
conditions): log-rate is interpolated as a function of quality with a monotone piecewise-cubic
(PCHIP) through each curve's points, and the two interpolants are averaged over the quality
interval where both curves exist. ``rate_ratio = exp(mean(log r_test - log r_anchor))``: 0.1 means
the test codec needs a tenth of the anchor's bitrate for the same quality.

Where the curves' quality ranges do not overlap (or a curve has a single point), no average can be
taken honestly; ``compare_curves`` then returns the ratio of the two points whose qualities are
nearest, labelled ``method="nearest-points"`` with the quality gap between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy.interpolate import PchipInterpolator

Values = Union[Sequence[float], np.ndarray]  # rates or qualities of one curve
BD_RATE = "bd-rate"
NEAREST_POINTS = "nearest-points"


@dataclass(frozen=True)
class CurveComparison:
    """How much bitrate the test codec needs relative to the anchor at equal quality.

    rate_ratio: test rate / anchor rate (geometric mean over the overlap for BD-rate).
    method: ``"bd-rate"`` or ``"nearest-points"``.
    quality_range: (lo, hi) overlap the BD-rate was averaged over (in the metric's own units);
        for nearest points, the two points' qualities (anchor, test).
    anchor_point, test_point: for nearest points, the (rate, quality) pairs compared; None for BD-rate.
    """

    rate_ratio: float
    method: str
    quality_range: tuple[float, float]
    anchor_point: tuple[float, float] | None = None
    test_point: tuple[float, float] | None = None

    @property
    def bd_rate_percent(self) -> float:
        """(rate_ratio - 1) in percent; negative means the test codec saves bitrate."""
        return (self.rate_ratio - 1.0) * 100.0

    @property
    def quality_gap(self) -> float:
        """Test minus anchor quality of the compared points (0 for BD-rate, equal by construction)."""
        if self.method == BD_RATE:
            return 0.0
        return self.quality_range[1] - self.quality_range[0]

    def to_json(self) -> dict[str, object]:
        return {
            "rate_ratio": self.rate_ratio,
            "bd_rate_percent": self.bd_rate_percent,
            "method": self.method,
            "quality_range": list(self.quality_range),
            "quality_gap": self.quality_gap,
            "anchor_point": None if self.anchor_point is None else list(self.anchor_point),
            "test_point": None if self.test_point is None else list(self.test_point),
        }


def _as_points(rates: Values, qualities: Values, name: str) -> np.ndarray:
    """(n, 2) float64 [rate, quality] with finite quality and positive finite rate."""
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    q = np.asarray(qualities, dtype=np.float64).reshape(-1)
    if r.shape != q.shape:
        raise ValueError(f"{name}: {r.size} rates but {q.size} qualities")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    if not np.any(keep):
        raise ValueError(f"{name}: no point with a positive rate and a finite quality (rates {r.tolist()})")
    return np.stack([r[keep], q[keep]], axis=1)  # (n, 2)


def pareto_front(rates: Values, qualities: Values) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (lower or equal rate and higher quality), by increasing rate.

    Returns (rates, qualities), both strictly increasing. Points with a non-positive rate or a
    non-finite value are dropped (log-rate needs rate > 0).
    """
    points = _as_points(rates, qualities, "curve")
    order = np.lexsort((-points[:, 1], points[:, 0]))  # by rate, then best quality first
    front: list[np.ndarray] = []
    for point in points[order]:
        if not front or point[1] > front[-1][1]:  # a same-rate point sorts after its better twin
            front.append(point)
    arr = np.array(front)  # (m, 2)
    return arr[:, 0], arr[:, 1]


def compare_curves(
    anchor_rates: Values,
    anchor_qualities: Values,
    test_rates: Values,
    test_qualities: Values,
    higher_is_better: bool = True,
) -> CurveComparison:
    """Bitrate of the test curve relative to the anchor at equal quality.

    Each curve is reduced to its Pareto front first (a sweep's dominated points say nothing about
    the rate needed for a quality). For metrics where lower is better (AKD), pass
    ``higher_is_better=False``; qualities are negated internally and reported in their own units.
    """
    sign = 1.0 if higher_is_better else -1.0
    ra, qa = pareto_front(anchor_rates, sign * np.asarray(anchor_qualities, dtype=np.float64))
    rt, qt = pareto_front(test_rates, sign * np.asarray(test_qualities, dtype=np.float64))
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if ra.size >= 2 and rt.size >= 2 and hi > lo:
        fa = PchipInterpolator(qa, np.log(ra))
        ft = PchipInterpolator(qt, np.log(rt))
        mean_log_diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
        lo_out, hi_out = sorted((sign * lo, sign * hi))
        return CurveComparison(float(np.exp(mean_log_diff)), BD_RATE, (float(lo_out), float(hi_out)))
    gaps = np.abs(qa[:, None] - qt[None, :])  # (anchor, test)
    ia, it = np.unravel_index(int(np.argmin(gaps)), gaps.shape)
    return CurveComparison(
        rate_ratio=float(rt[it] / ra[ia]),
        method=NEAREST_POINTS,
        quality_range=(float(sign * qa[ia]), float(sign * qt[it])),
        anchor_point=(float(ra[ia]), float(sign * qa[ia])),
        test_point=(float(rt[it]), float(sign * qt[it])),
    )
