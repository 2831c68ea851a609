"""BD-rate and the nearest-points fallback on curves whose answer is known analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.bdrate import BD_RATE, NEAREST_POINTS, compare_curves, pareto_front


def test_constant_rate_factor_is_recovered_for_any_curve_shape() -> None:
    # Same quality at a quarter of the rate everywhere: the ratio is 0.25 whatever the shape.
    rates = np.array([10.0, 20.0, 40.0, 80.0, 160.0])
    quality = 30 + 4 * np.sqrt(np.log(rates))  # concave, like a real RD curve
    result = compare_curves(rates, quality, rates / 4, quality)
    assert result.method == BD_RATE
    assert result.rate_ratio == pytest.approx(0.25, rel=1e-12)
    assert result.bd_rate_percent == pytest.approx(-75.0, rel=1e-10)
    assert result.quality_range == pytest.approx((quality.min(), quality.max()))


def test_linear_log_rate_difference_integrates_exactly() -> None:
    # anchor: log r = q; test: log r = 2q, q in [0, 1] -> mean difference of log-rate = 1/2.
    q = np.linspace(0.0, 1.0, 5)
    result = compare_curves(np.exp(q), q, np.exp(2 * q), q)
    assert result.rate_ratio == pytest.approx(math.exp(0.5), rel=1e-12)


def test_only_the_overlap_is_averaged() -> None:
    # anchor q in [0, 1], test q in [0.5, 2]: on the overlap [0.5, 1] the difference is q -> mean 0.75.
    qa = np.linspace(0.0, 1.0, 6)
    qt = np.linspace(0.5, 2.0, 7)
    result = compare_curves(np.exp(qa), qa, np.exp(2 * qt), qt)
    assert result.method == BD_RATE
    assert result.quality_range == pytest.approx((0.5, 1.0))
    assert result.rate_ratio == pytest.approx(math.exp(0.75), rel=1e-12)


def test_lower_is_better_metric() -> None:
    # AKD-like: error e = 1/log r; test needs half the rate for the same error.
    rates = np.array([10.0, 30.0, 100.0, 300.0])
    error = 1 / np.log(rates)
    result = compare_curves(rates, error, rates / 2, error, higher_is_better=False)
    assert result.rate_ratio == pytest.approx(0.5, rel=1e-12)
    assert result.quality_range[0] < result.quality_range[1]


def test_disjoint_curves_fall_back_to_the_nearest_points() -> None:
    result = compare_curves([10, 20, 40], [30, 32, 34], [1, 2], [20, 25])
    assert result.method == NEAREST_POINTS
    assert result.anchor_point == (10.0, 30.0)
    assert result.test_point == (2.0, 25.0)
    assert result.rate_ratio == pytest.approx(0.2)
    assert result.quality_gap == pytest.approx(-5.0)
    assert result.to_json()["method"] == NEAREST_POINTS


def test_single_point_curve_uses_nearest_points() -> None:
    result = compare_curves([10, 20, 40], [30, 32, 34], [3], [31.5])
    assert result.method == NEAREST_POINTS
    assert result.anchor_point == (20.0, 32.0)
    assert result.rate_ratio == pytest.approx(3 / 20)


def test_dominated_points_are_dropped() -> None:
    rates, quality = pareto_front([40, 10, 20, 30, 20, 0, 50], [33, 30, 29, 34, 31, 99, float("nan")])
    assert rates.tolist() == [10, 20, 30]
    assert quality.tolist() == [30, 31, 34]


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="2 rates but 3 qualities"):
        compare_curves([1, 2], [1, 2, 3], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="no point with a positive rate"):
        compare_curves([0, -1], [1, 2], [1, 2], [1, 2])
