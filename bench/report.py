"""From per-clip results to the report: one point per operating point, the headline, a Markdown table.

Rates: ``payload_kbps`` / ``wire_kbps`` are the steady-state stream (driving frames 1..N-1, total
bytes over total seconds of all clips). The stream's start (our reference portrait; a video codec's
first keyframe) is reported per clip (``start_*_bytes``, mean over clips) and amortized over a call
of ``call_seconds``: ``*_kbps_call = *_kbps + start bytes · 8 / call_seconds / 1000``. The headline
compares codecs on ``wire_kbps_call``, what a call of that length costs on the network. ``wire_kbps_call_audio``
is the same in a call with sound, where ours' messages ride the audio's packets (``StreamInfo.riding_wire_bytes``;
the video codecs' as ``wire_kbps_call``: their frames cannot ride); ``headline_with_audio`` compares on it.

Which of our points the headline may use: only those a call could run within its latency budget
(``LatencyRule``): bundling f frames in one packet makes the first wait f − 1 frame intervals, so a
point's glass-to-glass p95 is estimated as the measured unbundled p95 (``bench call`` at 1 frame per
packet) plus that wait. The video codecs send each frame as it is encoded (zerolatency / realtime
settings) and are all admitted. ``headline`` over every point, bundles included, is reported beside it,
labelled. Equal quality only where curves overlap: a comparison whose quality ranges do not overlap is
no BD-rate; it is listed apart as a nearest-points ratio, at unequal quality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.bdrate import compare_curves
from bench.codecs.base import BenchClip, Codec, StreamInfo
from codec.face.metrics import LANDMARK_METRICS

if TYPE_CHECKING:
    from bench.quality import FrameScores

FRAME_METRICS = ("psnr", "ssim", "face_psnr", "face_ssim", *LANDMARK_METRICS, "identity")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "face_psnr": True, "face_ssim": True, "akd": False,
                    "akd_mouth": False, "akd_eyes": False, "mouth_open_error": False,
                    "eyes_open_error": False, "identity": False}
OURS = "ours"
OURS_ENHANCED = "ours+enh"  # motion + the enhancement layer (bench.codecs.ours_enhanced): the ladder's upper rungs
OURS_LADDER = (OURS, OURS_ENHANCED)  # one curve: every rung of our codec
FLOOR = "no-motion floor"
HEADLINE_METRICS = ("psnr", "ssim", "face_psnr", "face_ssim", "akd", "akd_mouth", "mouth_open_error", "identity")
HEADLINE_RATE = "wire_kbps_call"
WITH_AUDIO_RATE = "wire_kbps_call_audio"  # the same in a call with sound: ours' messages ride the audio's packets
ANCHOR_ORDER = ("h264", "vp8", "vp9", "av1", "av1-64")
METRIC_UNITS = {"psnr": "dB", "face_psnr": "dB", "ssim": "", "face_ssim": "", "akd": "px", "akd_mouth": "px",
                "akd_eyes": "px", "mouth_open_error": "px",
                "eyes_open_error": "px", "identity": ""}


@dataclass(frozen=True)
class LatencyRule:
    """Which of our operating points a call can use: estimated glass-to-glass p95 within ``budget_ms``."""

    budget_ms: float = 120.0
    unbundled_p95_ms: float = 102.0  # measured by bench call at 1 frame per packet
    riding_p95_ms: float = 0.0  # what riding the audio's packets adds to that p95 (the with-audio headline)

    def p95_ms(self, point: Mapping[str, Any]) -> float:
        """Estimated p95 of one of our points: unbundled p95 (+ riding) + (frames per packet − 1) frame intervals."""
        fpp = int(point.get("params", {}).get("frames_per_packet", 1))
        return self.unbundled_p95_ms + self.riding_p95_ms + (fpp - 1) * 1000.0 / float(point["fps"])

    def admits(self, point: Mapping[str, Any]) -> bool:
        return point["codec"] not in OURS_LADDER or self.p95_ms(point) <= self.budget_ms + 1e-9

    def describe(self) -> str:
        return (f"latency budget: glass-to-glass p95 ≤ {self.budget_ms:g} ms; ours' p95 estimated as "
                f"{self.unbundled_p95_ms:g} ms (bench call, 1 frame/packet)"
                + (f" + {self.riding_p95_ms:g} ms for riding the audio's packets" if self.riding_p95_ms else "")
                + " + (frames per packet − 1) frame intervals; "
                "video codecs send every frame as encoded and are all admitted")


def pooled_means(scores: Sequence["FrameScores"], original_has_face: Sequence[np.ndarray]) -> dict[str, float]:
    """Means over all frames of all clips (NaN left out: a face-region or AKD value where the original
    has no face, an AKD where the reconstruction has none) + ``detect_rate``, the fraction of frames whose
    original has a face where the reconstruction's face is found too."""
    out: dict[str, float] = {}
    for name in FRAME_METRICS:
        values = np.concatenate([s.values[name] for s in scores])
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    has_face = np.concatenate(list(original_has_face))
    found = np.concatenate([s.face_found for s in scores])
    out["detect_rate"] = float(found[has_face].mean()) if has_face.any() else float("nan")
    return out


def make_point(
    codec: Codec,
    clips: Sequence[BenchClip],
    infos: Sequence[StreamInfo],
    scores: Sequence["FrameScores"],
    original_has_face: Sequence[np.ndarray],
    call_seconds: float,
) -> dict[str, Any]:
    """One operating point over all clips (see the module docstring for the rate definitions)."""
    seconds = sum(c.duration_s for c in clips)
    frames = sum(c.num_driving for c in clips)
    payload_kbps = sum(i.payload_bytes for i in infos) * 8 / seconds / 1000
    wire_kbps = sum(i.wire_bytes for i in infos) * 8 / seconds / 1000
    riding = [i.wire_bytes if i.riding_wire_bytes is None else i.riding_wire_bytes for i in infos]
    wire_kbps_audio = sum(riding) * 8 / seconds / 1000
    start_payload = float(np.mean([i.start_payload_bytes for i in infos]))
    start_wire = float(np.mean([i.start_wire_bytes for i in infos]))
    encode_ms = np.concatenate([i.encode_ms for i in infos])
    decode_ms = np.concatenate([i.decode_ms for i in infos])
    point: dict[str, Any] = {
        "codec": codec.codec,
        "setting": codec.setting,
        "params": codec.params(),
        "payload_kbps": payload_kbps,
        "wire_kbps": wire_kbps,
        "start_payload_bytes": start_payload,
        "start_wire_bytes": start_wire,
        "payload_kbps_call": payload_kbps + start_payload * 8 / call_seconds / 1000,
        "wire_kbps_call": wire_kbps + start_wire * 8 / call_seconds / 1000,
        WITH_AUDIO_RATE: wire_kbps_audio + start_wire * 8 / call_seconds / 1000,
        "packets_per_s": sum(i.packets for i in infos) / seconds,
        "encode_ms": float(encode_ms.mean()),
        "encode_ms_median": float(np.median(encode_ms)),
        "encode_ms_p95": float(np.percentile(encode_ms, 95)),
        "decode_ms": float(decode_ms.mean()),
        "decode_ms_median": float(np.median(decode_ms)),
        "decode_ms_p95": float(np.percentile(decode_ms, 95)),
        "frames": frames,
        "fps": frames / seconds,
        "scored_frames": int(sum(s.face_found.size for s in scores)),
        "seconds": seconds,
    }
    point.update(pooled_means(scores, original_has_face))
    return point


def add_floor_gaps(points: list[dict[str, Any]]) -> None:
    """Add ``over_floor`` to every point: its quality minus the no-motion floor's, per metric (in place).

    Positive means better than the floor for every metric (AKD's sign is flipped accordingly).
    """
    floors = [p for p in points if p["codec"] == FLOOR]
    if not floors:
        return
    floor = floors[0]
    for point in points:
        point["over_floor"] = {
            metric: (point[metric] - floor[metric]) * (1 if HIGHER_IS_BETTER[metric] else -1)
            for metric in HIGHER_IS_BETTER
        }


def headline(points: Sequence[Mapping[str, Any]], rate_key: str = HEADLINE_RATE,
             latency: LatencyRule | None = None) -> dict[str, Any]:
    """Bitrate of ours relative to each other codec at equal quality, per metric.

    ``rate_ratio`` < 1 means we need less bitrate than that codec for the same quality
    (the paper's claim for H.264 is about 0.1). Each entry says whether it is a BD-rate over the
    overlapping quality range or a nearest-points ratio (curves that do not overlap: not at equal
    quality). ``latency``: use only the points a call can run within its budget (None: every point).
    """
    everything = [p for p in points if p["codec"] in OURS_LADDER]  # motion-only rungs and enhanced ones: one ladder
    ours = [p for p in everything if latency is None or latency.admits(p)]
    present = {str(p["codec"]) for p in points} - {*OURS_LADDER, FLOOR}
    others = [c for c in ANCHOR_ORDER if c in present] + sorted(present - set(ANCHOR_ORDER))
    out: dict[str, Any] = {"rate": rate_key, "test": OURS, "comparisons": {}, "sentences": []}
    out["latency"] = {
        "rule": latency.describe() if latency is not None else
        "every one of ours' points, bundles included, whatever their latency (NOT what a call within budget can use)",
        "budget_ms": None if latency is None else latency.budget_ms,
        "ours_points_used": [p["setting"] for p in ours],
        "ours_points_excluded": [
            {"setting": p["setting"], "estimated_p95_ms": latency.p95_ms(p)} for p in everything if p not in ours
        ] if latency is not None else [],
    }
    if not ours:
        return out
    for anchor in others:
        members = [p for p in points if p["codec"] == anchor]
        entry: dict[str, Any] = {}
        for metric in HEADLINE_METRICS:
            try:
                result = compare_curves(
                    [p[rate_key] for p in members], [p[metric] for p in members],
                    [p[rate_key] for p in ours], [p[metric] for p in ours],
                    higher_is_better=HIGHER_IS_BETTER[metric],
                )
            except ValueError as exc:  # a curve without a finite value (e.g. AKD with no face found)
                entry[metric] = {"method": "undefined", "reason": str(exc)}
                continue
            entry[metric] = result.to_json()
            out["sentences"].append(_sentence(anchor, metric, result.to_json()))
        out["comparisons"][anchor] = entry
    floor_gaps = [p for p in ours if "over_floor" in p]
    if floor_gaps:
        out["ours_best_over_floor"] = {
            metric: max(p["over_floor"][metric] for p in floor_gaps) for metric in HEADLINE_METRICS
        }
    return out


def _quality_text(metric: str, value: float) -> str:
    unit = METRIC_UNITS.get(metric, "")
    return f"{value:.4g} {unit}".rstrip()


def _sentence(anchor: str, metric: str, result: Mapping[str, Any]) -> str:
    ratio = float(result["rate_ratio"])
    lo, hi = result["quality_range"]
    if result["method"] == "bd-rate":
        return (
            f"{metric} vs {anchor}: ours needs {ratio:.3g}x {anchor}'s bitrate at equal quality "
            f"(BD-rate {100 * (ratio - 1):+.0f}% over {_quality_text(metric, lo)} to {_quality_text(metric, hi)})."
        )
    a_rate, a_q = result["anchor_point"]
    t_rate, t_q = result["test_point"]
    better = (t_q > a_q) == HIGHER_IS_BETTER[metric]
    return (
        f"{metric} vs {anchor}: the curves do not overlap; nearest points: ours {t_rate:.3g} kbps at "
        f"{_quality_text(metric, t_q)}, {anchor} {a_rate:.3g} kbps at {_quality_text(metric, a_q)} "
        f"(ours {'better' if better else 'worse'} by {_quality_text(metric, abs(t_q - a_q))}); "
        f"rate ratio {ratio:.3g}, not at equal quality."
    )


def headline_table(result: Mapping[str, Any], beside: Mapping[str, Any] | None = None) -> str:
    """Markdown: one row per metric, one column per codec; the cell is ours' BD-rate / that codec's (equal
    quality over the overlap), or "no overlap". ``beside``: another headline (e.g. every point, bundles
    included) whose BD-rate is shown in brackets after each cell."""
    comparisons = result["comparisons"]
    anchors = list(comparisons)
    rows = ["| metric | " + " | ".join(f"ours / {a}" for a in anchors) + " |",
            "|---|" + "---:|" * len(anchors)]

    def cell(metric: str, entry: Mapping[str, Any]) -> str:
        if entry.get("method") == "bd-rate":
            lo, hi = entry["quality_range"]
            return f"{entry['rate_ratio']:.3g} ({_quality_text(metric, lo)}–{_quality_text(metric, hi)})"
        return "no overlap" if entry.get("method") == "nearest-points" else "n/a"

    for metric in HEADLINE_METRICS:
        cells = []
        for anchor in anchors:
            text = cell(metric, comparisons[anchor].get(metric, {}))
            if beside is not None:
                text += f" [all points: {cell(metric, beside['comparisons'].get(anchor, {}).get(metric, {}))}]"
            cells.append(text)
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def nearest_points_table(result: Mapping[str, Any]) -> str:
    """Markdown: the comparisons whose curves do not overlap, as what they are: two points at unequal quality."""
    rows = ["| metric | vs | ours: kbps, quality | theirs: kbps, quality | rate ratio | ours' quality gap |",
            "|---|---|---:|---:|---:|---:|"]
    for anchor, entries in result["comparisons"].items():
        for metric in HEADLINE_METRICS:
            entry = entries.get(metric, {})
            if entry.get("method") != "nearest-points":
                continue
            (a_rate, a_q), (t_rate, t_q) = entry["anchor_point"], entry["test_point"]
            gap = (t_q - a_q) * (1 if HIGHER_IS_BETTER[metric] else -1)
            rows.append(f"| {metric} | {anchor} | {t_rate:.1f}, {_quality_text(metric, t_q)} | {a_rate:.1f}, "
                        f"{_quality_text(metric, a_q)} | {entry['rate_ratio']:.3g} | {gap:+.3g} {METRIC_UNITS[metric]} |"
                        .replace(" |", " |").replace("  |", " |"))
    return "\n".join(rows) if len(rows) > 2 else "(every comparison overlaps)"


def markdown_table(points: Sequence[Mapping[str, Any]], ours_presets: Sequence[str] | None = None) -> str:
    """The results table: one row per operating point, sorted by codec then rate.

    ours_presets: show only our points with these quantizer presets (None: all). Times are medians
    per frame (means are in the JSON; on a shared machine they carry scheduling spikes).
    """
    header = (
        "| codec | setting | wire kbps (60 s call) | wire kbps | payload kbps | start bytes | PSNR | face PSNR "
        "| SSIM | AKD px | mouth AKD px | identity | face found | enc ms | dec ms |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [header]
    order = {OURS: 0, OURS_ENHANCED: 0.5, **{c: 1 + i for i, c in enumerate(ANCHOR_ORDER)}, FLOOR: 99}
    shown = [
        p for p in points
        if ours_presets is None or p["codec"] != OURS or p.get("params", {}).get("preset") in ours_presets
    ]
    for p in sorted(shown, key=lambda p: (order.get(p["codec"], 50), p["codec"], p[HEADLINE_RATE])):
        rows.append(
            f"| {p['codec']} | {p['setting']} | {p['wire_kbps_call']:.2f} | {p['wire_kbps']:.2f} | "
            f"{p['payload_kbps']:.2f} | {p['start_payload_bytes']:.0f} | {p['psnr']:.2f} | {p['face_psnr']:.2f} | "
            f"{p['ssim']:.3f} | {p['akd']:.2f} | {p['akd_mouth']:.2f} | {p.get('identity', float('nan')):.3f} | "
            f"{p['detect_rate']:.2f} | "
            f"{p['encode_ms_median']:.1f} | {p['decode_ms_median']:.1f} |"
        )
    return "\n".join(rows)


def _preset_spread(points: Sequence[Mapping[str, Any]]) -> str:
    """How much the quantizer preset moves our PSNR and payload at a fixed K and packing (measured)."""
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for p in points:
        if p["codec"] == OURS:
            params = p.get("params", {})
            groups.setdefault((params.get("keypoints"), params.get("frames_per_packet")), []).append(p)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return "one preset was run"
    psnr = max(max(q["psnr"] for q in g) - min(q["psnr"] for q in g) for g in groups.values())
    payload = max(max(q["payload_kbps"] for q in g) - min(q["payload_kbps"] for q in g) for g in groups.values())
    return f"across presets at equal K and packing, PSNR moves by at most {psnr:.2f} dB and the payload by {payload:.2f} kbps"


def _floor_sentence(result: Mapping[str, Any]) -> str:
    """Our best gain over the no-motion floor per metric, and the lowest-rate video points' gains."""
    best = result["headline"].get("ours_best_over_floor")
    if not best:
        return ""
    parts = [f"{m} {best[m]:+.3g} {METRIC_UNITS[m]}".rstrip() for m in HEADLINE_METRICS]
    text = "Gain over the no-motion floor (positive = better than showing the reference): ours at its best point: " + ", ".join(parts)
    lowest: dict[str, Mapping[str, Any]] = {}
    for p in result["points"]:
        if p["codec"] in ANCHOR_ORDER and "over_floor" in p:
            if p["codec"] not in lowest or p[HEADLINE_RATE] < lowest[p["codec"]][HEADLINE_RATE]:
                lowest[p["codec"]] = p
    if lowest:
        text += "; each video codec at its lowest rate: " + ", ".join(
            f"{c} ({p[HEADLINE_RATE]:.1f} kbps) PSNR {p['over_floor']['psnr']:+.3g} dB, AKD {p['over_floor']['akd']:+.3g} px"
            for c, p in lowest.items()
        )
    return text + "."


def _cross_identity_sentence(result: Mapping[str, Any]) -> str:
    crossed = result.get("cross_identity")
    if not crossed or not crossed.get("pairs"):
        return ""
    mean = crossed["mean"]
    return (f"Identity (dlib face-recognition descriptors; < 0.6 reads as the same person): the *identity* column is the "
            f"distance between output and original, same person. Cross-identity (ours driving another test person's "
            f"portrait, {len(crossed['pairs'])} pairs): renders are {mean['to_portrait']:.3f} from the portrait and "
            f"{mean['to_driver']:.3f} from the driver; nearer the portrait in {mean['keeps_portrait_share']:.0%} of frames.")


def _with_audio_lines(result: Mapping[str, Any]) -> list[str]:
    """The headline again for a call with sound (ours' messages riding the audio's packets), where the JSON has it."""
    with_audio = result.get("headline_with_audio")
    if not with_audio:
        return []
    return [
        "### The same in a call with sound",
        "",
        "Ours' rate in a call with sound, where each motion message (or frame bundle) rides the audio's SRTP packet "
        f"({result.get('wire_model', {}).get('ours_with_audio', 'see bench.codecs.motion_transport')}); the video "
        "codecs' rates as above (their frames cannot ride), the sound itself counted for none. Same latency rule.",
        "",
        headline_table(with_audio),
        "",
    ]


def results_markdown(result: Mapping[str, Any], plot_name: str | None = None) -> str:
    """A README-ready results section: conditions, headline, the table, the plot."""
    m, cfg, src = result["machine"], result["config"], result["source"]
    model = result.get("model") or {}
    clips = src.get("clips", [])
    frames = sum(int(c["frames"]) - 1 for c in clips)
    scored = result["points"][0]["scored_frames"] if result["points"] else 0
    people = sorted({c["person"] for c in clips})
    load = ", ".join(f"{x:.2f}" for x in m.get("load_average_start", []))
    has_default = any(p["codec"] == OURS and p.get("params", {}).get("preset") == "default" for p in result["points"])
    lines = [
        "## Results: bandwidth and quality (`python -m bench rd`)",
        "",
        f"Measured {m['date_utc'][:10]} on {m['cpu']} ({m['cpu_count']} cores, torch {m['torch']} with "
        f"{m['torch_threads']} threads, PyAV {m['av']}{', CUDA' if m.get('cuda') else ', no GPU'}), commit "
        f"{m.get('git_commit')}; wall time {m['wall_seconds'] / 60:.1f} min (load average at start {load}).",
        f"Input: {len(clips)} clip{'s' if len(clips) != 1 else ''} ({', '.join(people)}; {src.get('selection', src.get('kind'))}), "
        f"{frames} driving frames coded and sent, {scored} of them scored (every {cfg['score_every']}), "
        f"face crops {cfg['size']}². Model weights: "
        f"{model.get('weights') or 'random init'} (trained: {model.get('is_trained')}).",
        "",
        "Rates: *wire kbps (60 s call)* = steady-state IPv4 bytes of the stream (per-packet headers: RTP+UDP+IPv4+SRTP "
        "tag for the video codecs and for ours' motion messages; ours' larger messages and its portrait: "
        "SCTP+DTLS+UDP+IPv4) plus the stream's start (our reference portrait, a "
        f"video codec's first keyframe; *start bytes*) amortized over {cfg['call_seconds']:g} s. Quality is measured "
        "on the driving frames against the original crops; face PSNR inside the landmarks' hull; AKD = mean landmark "
        "distance (px) between reconstruction and original; *face found* = share of frames whose reconstruction "
        "still has a detectable face. The no-motion floor shows the reference for every frame.",
        "",
        "### Headline: ours' bitrate relative to each codec at equal quality",
        "",
        f"Only points a call can use: {result['headline']['latency']['rule']}. Ours' points used: "
        f"{', '.join(result['headline']['latency']['ours_points_used']) or 'none'}. Each cell: BD-rate (ours' bitrate / "
        "theirs at equal quality, over the quality range in brackets where both curves exist); in square brackets the "
        "same over all of ours' points, bundles over the latency budget included (what the headline was before "
        "2026-12-05). *no overlap*: the curves share no quality range, so there is no rate at equal quality.",
        "",
        headline_table(result["headline"], result.get("headline_all_points")),
        "",
        _floor_sentence(result),
        "",
        "Where the curves do not overlap, the nearest points (not at equal quality; ours' quality gap is positive "
        "when ours is better), over the points within the latency budget:",
        "",
        nearest_points_table(result["headline"]),
        "",
        _cross_identity_sentence(result),
        "",
        *_with_audio_lines(result),
        "### Operating points",
        "",
        (f"Ours at the default quantizer preset ({_preset_spread(result['points'])}; every point is in the JSON). "
         if has_default else "") + "Times: median ms per frame on this machine "
        "(ours: encode = motion network + packetizer, decode = depacketizer + generator; video codecs: one thread, "
        "colour conversion included).",
        "",
        markdown_table(result["points"], ours_presets=("default",) if has_default else None),
    ]
    if plot_name:
        lines += ["", f"![rate-quality]({plot_name})"]
    return "\n".join(lines) + "\n"
