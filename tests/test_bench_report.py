"""bench.report: the headline uses only points a call can run within its latency budget, and says so;
curves that do not overlap give no rate "at equal quality"."""

from __future__ import annotations

from typing import Any

from bench.report import FLOOR, OURS, LatencyRule, headline, headline_table, nearest_points_table

METRICS = ("psnr", "ssim", "face_psnr", "face_ssim", "akd", "akd_mouth", "mouth_open_error")


def _point(codec: str, rate: float, quality: float, fpp: int = 1) -> dict[str, Any]:
    point: dict[str, Any] = {"codec": codec, "setting": f"{codec} {rate:g} {fpp}f", "wire_kbps_call": rate, "fps": 25.0,
                             "params": {"frames_per_packet": fpp} if codec == OURS else {}}
    point["identity"] = 1.0 - quality / 40
    for metric in METRICS:  # one quality axis: higher rate, better everything
        point[metric] = quality if metric in ("psnr", "ssim", "face_psnr", "face_ssim") else 40.0 - quality
    return point


def _points() -> list[dict[str, Any]]:
    # Ours: cheap bundles (4 frames/packet) and dearer unbundled points at the same quality.
    ours = [_point(OURS, r, q, fpp) for fpp, scale in ((4, 1.0), (1, 3.0)) for r, q in ((5, 24), (6, 25), (7, 26))
            for r in [r * scale]]
    h264 = [_point("h264", r, q) for r, q in ((10, 24), (20, 27), (40, 30))]
    vp9 = [_point("vp9", r, q) for r, q in ((30, 28), (60, 31))]  # never as low as ours
    return ours + h264 + vp9 + [_point(FLOOR, 1, 19)]


def test_latency_rule_estimates_bundling_and_admits_only_points_within_budget() -> None:
    rule = LatencyRule(budget_ms=120, unbundled_p95_ms=102)
    assert rule.p95_ms(_point(OURS, 1, 1, fpp=1)) == 102
    assert rule.p95_ms(_point(OURS, 1, 1, fpp=4)) == 102 + 3 * 40
    assert rule.admits(_point(OURS, 1, 1, fpp=1)) and not rule.admits(_point(OURS, 1, 1, fpp=2))
    assert rule.admits(_point("h264", 1, 1))
    assert "120 ms" in rule.describe()


def test_headline_within_budget_uses_the_unbundled_points_and_lists_the_rest() -> None:
    points = _points()
    within = headline(points, latency=LatencyRule(120, 102))
    everything = headline(points)
    assert within["latency"]["ours_points_used"] == [p["setting"] for p in points if p["codec"] == OURS][3:]
    assert [e["setting"] for e in within["latency"]["ours_points_excluded"]] == [
        p["setting"] for p in points if p["codec"] == OURS][:3]
    assert "NOT what a call" in everything["latency"]["rule"]
    h264_within = within["comparisons"]["h264"]["psnr"]
    h264_all = everything["comparisons"]["h264"]["psnr"]
    assert h264_within["method"] == h264_all["method"] == "bd-rate"
    assert h264_within["rate_ratio"] > 2.5 * h264_all["rate_ratio"]  # the bundles made ours look 3x cheaper


def test_no_overlap_is_not_a_ratio_at_equal_quality() -> None:
    within = headline(_points(), latency=LatencyRule(120, 102))
    assert within["comparisons"]["vp9"]["psnr"]["method"] == "nearest-points"
    table = headline_table(within, headline(_points()))
    vp9_column = [line.split("|")[3] for line in table.splitlines()[2:]]
    assert all("no overlap" in cell for cell in vp9_column)
    assert "nearest" not in table and "[all points: " in table
    nearest = nearest_points_table(within)
    assert "| psnr | vp9 | 21.0, 26 dB | 30.0, 28 dB |" in nearest and "h264" not in nearest


def test_the_enhancement_rungs_are_part_of_our_ladder_not_a_rival() -> None:
    from bench.report import OURS_ENHANCED

    points = _points() + [_point(OURS_ENHANCED, r, q) for r, q in ((25, 27), (35, 29))]
    within = headline(points, latency=LatencyRule(120, 102))
    assert OURS_ENHANCED not in within["comparisons"]
    assert [s for s in within["latency"]["ours_points_used"] if s.startswith(OURS_ENHANCED)] == [
        "ours+enh 25 1f", "ours+enh 35 1f"]
    vp9 = within["comparisons"]["vp9"]["psnr"]
    assert vp9["method"] == "bd-rate"  # the upper rungs now reach vp9's quality range
