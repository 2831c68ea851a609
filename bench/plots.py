"""The rate-quality plot: quality against kbps on the wire (log scale), one curve per codec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.bdrate import pareto_front  # noqa: E402

FLOOR = "no-motion floor"
OURS = "ours"
OURS_ENHANCED = "ours+enh"  # the ladder's rungs with the enhancement layer: drawn with ours, as one ladder
PANELS = (("psnr", "PSNR (dB), whole frame"), ("face_psnr", "PSNR (dB), face region"),
          ("ssim", "SSIM, whole frame"), ("akd", "AKD (px), lower is better"))
_COLORS = {OURS: "tab:red", "h264": "tab:blue", "vp8": "tab:green", "vp9": "tab:olive", "av1": "tab:purple",
           FLOOR: "black"}
_K_MARKERS = {20: "o", 10: "s", 5: "^", 0: "v"}


def plot_rate_quality(
    points: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    rate_key: str = "wire_kbps_call",
    title: str = "",
) -> None:
    """Write a 2x2 figure (PSNR, face PSNR, SSIM, AKD against ``rate_key``) to ``out_path`` (PNG).

    Video codecs: one line through their sweep. Ours (motion-only rungs and, when the model has the branch, the
    enhancement rungs, diamonds): every operating point as a marker (shape = K, the number of keypoints whose δ
    is sent), a solid line through the Pareto front of the points a call can use at its latency budget (1 frame
    per packet) and a dashed one through the front of all points (bundles included). The no-motion floor: a
    black point and a dotted line at its quality.
    """
    families: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:
        family = OURS if point["codec"] == OURS_ENHANCED else str(point["codec"])
        families.setdefault(family, []).append(point)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, (metric, label) in zip(axes.ravel(), PANELS):
        higher = metric != "akd"
        for family, members in families.items():
            rates = np.array([float(p[rate_key]) for p in members])
            values = np.array([float(p[metric]) if p.get(metric) is not None else np.nan for p in members])
            ok = np.isfinite(values) & (rates > 0)
            if not ok.any():
                continue
            color = _COLORS.get(family, None)
            if family == FLOOR:
                ax.axhline(values[ok][0], color="black", linestyle=":", linewidth=1)
                ax.plot(rates[ok], values[ok], "k*", markersize=10, label=family)
                continue
            if family == OURS:
                for p, r, v in zip(members, rates, values):
                    if np.isfinite(v) and r > 0:
                        k = int(p.get("params", {}).get("keypoints", -1))
                        marker = "D" if p["codec"] == OURS_ENHANCED else _K_MARKERS.get(k, "x")
                        ax.plot(r, v, marker, color=color, alpha=0.5, markersize=5)
                unbundled = ok & np.array([int(p.get("params", {}).get("frames_per_packet", 1)) == 1 for p in members])
                for mask, style, text in ((ok, "--", "ours, all points (bundles too)"),
                                          (unbundled, "o-", "ours, 1 frame/packet (within the latency budget)")):
                    if mask.any():
                        front_r, front_q = pareto_front(rates[mask], values[mask] if higher else -values[mask])
                        ax.plot(front_r, front_q if higher else -front_q, style, color=color,
                                linewidth=2 if style == "o-" else 1, markersize=4, label=text)
                continue
            order = np.argsort(rates[ok])
            ax.plot(rates[ok][order], values[ok][order], "o-", color=color, markersize=4, label=family)
        ax.set_xscale("log")
        ax.set_xlabel(f"kbps ({rate_key.replace('_', ' ')})")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    for k, marker in _K_MARKERS.items():
        handles.append(plt.Line2D([], [], marker=marker, color=_COLORS[OURS], linestyle="", alpha=0.5))
        labels.append(f"ours K={k}")
    if any(p["codec"] == OURS_ENHANCED for p in points):
        handles.append(plt.Line2D([], [], marker="D", color=_COLORS[OURS], linestyle="", alpha=0.5))
        labels.append("ours + enhancement layer")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
