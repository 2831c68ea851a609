"""Plot the validation log (RUN/log.jsonl) against training steps and CPU-hours, floors as dashed lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (metric key in a validation record, title, floor keys)
PANELS: tuple[tuple[str, str], ...] = (
    ("face_psnr", "face-region PSNR (dB)"),
    ("ssim", "whole-frame SSIM"),
    ("akd", "AKD all landmarks (px)"),
    ("akd_mouth", "AKD mouth (px)"),
    ("akd_eyes", "AKD eyes (px)"),
    ("kp_min_distance", "keypoints: min pairwise distance"),
)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The validation records of a log.jsonl (lines with "kind": "val"), skipping a torn last line."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "val":
            records.append(record)
    return records


def plot_metrics(log_path: str | Path, out_path: str | Path) -> None:
    """Write a PNG with one row per x axis (steps, CPU-hours) and one column per metric."""
    records = read_log(log_path)
    if not records:
        return
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4 * len(PANELS), 7), squeeze=False)
    xs = {"step": [r["step"] for r in records], "CPU-hours": [r["cpu_hours"] for r in records]}
    for row, (xlabel, x) in enumerate(xs.items()):
        for col, (key, title) in enumerate(PANELS):
            ax = axes[row][col]
            ax.plot(x, [r["overall"].get(key, float("nan")) for r in records], "o-", label="model", markersize=3)
            for floor, style in (("floor_no_motion", "r--"), ("floor_affine", "g--")):
                value = records[-1].get(floor, {}).get(key)
                if value is not None:
                    ax.axhline(value, color=style[0], linestyle="--", label=floor.replace("floor_", "floor: "))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(xlabel + (" (process CPU time)" if xlabel == "CPU-hours" else ""), fontsize=8)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(str(out_path) + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out_path)
