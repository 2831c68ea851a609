"""What the receiver tells of the call: per-frame output and render records, the viewers' live stats, the whole-call report."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from receiver.audio_playout import AudioPlayout
from receiver.bounded_state import SenderHistory
from receiver.playout import PlayoutBuffer
from receiver.render_worker import RenderWorker, wall_ms
from receiver.sender_link import SenderLink

CALL_RECORDS = 15_000  # per-frame output and render records kept for report() (the last 10 min at 25 fps)
LATENCY_WINDOW_S = 10.0  # report()'s latency over the call: percentiles per window of this many seconds of capture time
RATE_WINDOW_S = 3.0  # the "recent" rates of the viewers' stats (payload, wire, rendered fps) span this long


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One output frame, for tests and the benchmark (times are wall-clock ms)."""

    slot: int
    stream_id: int
    seq: int
    concealed: bool
    capture_ms: float
    due_ms: float
    arrival_ms: float | None


@dataclass(frozen=True, slots=True)
class RenderRecord:
    slot: int
    concealed: bool
    capture_ms: float
    rendered_ms: float
    render_ms: float


class RecentRates:
    """Per-second rates over the last ``window_s`` from cumulative counters sampled once per stats tick."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, now_s: float, counters: tuple[float, ...]) -> None:
        if self.samples and any(new < old for new, old in zip(counters, self.samples[-1][1])):
            self.samples.clear()  # a counter restarted (a new sender): so do the rates
        self.samples.append((now_s, counters))
        while len(self.samples) > 2 and self.samples[1][0] <= now_s - self.window_s:
            self.samples.popleft()

    def rates(self) -> tuple[float, ...] | None:
        """Counter increase per second over the window (None until two samples ≥ 0.5 s apart)."""
        if len(self.samples) < 2 or self.samples[-1][0] - self.samples[0][0] < 0.5:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return tuple((b - a) / (t1 - t0) for a, b in zip(c0, c1))


class CallRecords:
    """The call's per-frame records and counts (the last ``CALL_RECORDS`` frames: a few MB at most, both together)."""

    def __init__(self) -> None:
        self.outputs: deque[OutputRecord] = deque(maxlen=CALL_RECORDS)
        self.renders: deque[RenderRecord] = deque(maxlen=CALL_RECORDS)
        self.frames_without_reference = 0  # output frames not rendered: no prepared reference yet
        self.frames_unscheduled = 0  # output frames not rendered: the receiver's frame gate said no
        self.sink_errors = 0
        self.recent = RecentRates(RATE_WINDOW_S)

    def sample_rates(self, now_s: float, sender: SenderLink | None, worker: RenderWorker | None) -> None:
        payload = 0 if sender is None else sender.payload_bytes
        wire = 0 if sender is None else sender.link.counters().wire_bytes_received
        self.recent.add(now_s, (payload, wire, 0 if worker is None else worker.frames_rendered))

    def stats(
        self, sender: SenderLink | None, playout: PlayoutBuffer, worker: RenderWorker | None, keypoints_max: int | None,
    ) -> dict[str, float | int | str | None]:
        """Numbers for viewers and logs (see signaling/PROTOCOL.md); ``sender``: the active one."""
        renders = list(self.renders)[-100:]
        latencies = [r.rendered_ms - r.capture_ms for r in renders if not r.concealed]
        counters = None if sender is None else sender.link.counters()
        elapsed_s = None if sender is None or sender.first_packet_ms is None else (wall_ms() - sender.first_packet_ms) / 1000.0
        recent = self.recent.rates() if sender is not None else None
        feedback = None if sender is None else sender.depacketizer.feedback()
        out: dict[str, float | int | str | None] = {
            "frames_output": playout.next_slot,
            "frames_rendered": 0 if worker is None else worker.frames_rendered,
            "frames_concealed": playout.frames_concealed,
            "frames_late": playout.frames_late,
            "frames_unscheduled": self.frames_unscheduled,
            "jitter_ms": None if sender is None else round(sender.network_jitter_ms, 1),
            "playout_delay_ms": round(playout.target_delay_ms, 1),
            "latency_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
            "render_ms_median": round(float(np.median(list(worker.render_ms)[-100:])), 1) if worker and worker.render_ms else None,
            "packets_received": 0 if sender is None else sender.packets,
            "payload_kbps": None if not elapsed_s or sender is None else round(sender.payload_bytes * 8 / 1000 / elapsed_s, 2),
            "wire_kbps_in": None if not elapsed_s or counters is None else round(counters.wire_bytes_received * 8 / 1000 / elapsed_s, 2),
            "fps": playout.fps,
            "payload_kbps_recent": None if recent is None else round(recent[0] * 8 / 1000, 2),
            "wire_kbps_recent": None if recent is None else round(recent[1] * 8 / 1000, 2),
            "fps_rendered": None if recent is None else round(recent[2], 1),
            "frames_lost": None if feedback is None else feedback.frames_lost,
            "motion_transport": None if sender is None else sender.motion_transport,
            "keypoints_max": keypoints_max,
            **_enhancement_stats(sender, worker),
        }
        if sender is not None and sender.rate is not None:
            out.update(keypoints=sender.rate.keypoints, preset=sender.rate.preset, frames_per_packet=sender.rate.frames_per_packet,
                       enhancement_qp=sender.rate.enhancement_qp, enhancement_interval=sender.rate.enhancement_interval,
                       enhancement_size=sender.rate.enhancement_size)
        return out

    def report(
        self, links: SenderHistory[SenderLink], playout: PlayoutBuffer, worker: RenderWorker | None, audio: AudioPlayout,
    ) -> dict[str, Any]:
        """The whole call, for --stats-json and the benchmark (times in ms, rates per second of output).

        Latency = rendered (image ready) − the sender's capture time, over frames decoded from motion
        (concealed frames have no capture); it needs one clock on both sides (the same machine).
        """

        renders, outputs = list(self.renders), list(self.outputs)
        decoded = [r for r in renders if not r.concealed]
        duration_s = (renders[-1].rendered_ms - renders[0].rendered_ms) / 1000.0 if len(renders) > 1 else 0.0
        span_s = (outputs[-1].due_ms - outputs[0].due_ms) / 1000.0 if len(outputs) > 1 else 0.0
        totals = links.totals()
        return {
            "frames_output": len(outputs),
            "frames_rendered": len(renders),
            "frames_concealed": sum(o.concealed for o in outputs),
            "frames_late": playout.frames_late,
            "frames_interpolated": playout.frames_interpolated,
            "frames_skipped_by_renderer": 0 if worker is None else worker.frames_skipped,
            "frames_without_reference": self.frames_without_reference,
            "frames_unscheduled": self.frames_unscheduled,
            "output_fps": round((len(outputs) - 1) / span_s, 3) if span_s else None,
            "rendered_fps": round((len(renders) - 1) / duration_s, 3) if duration_s else None,
            "latency_ms": _percentiles([r.rendered_ms - r.capture_ms for r in decoded]),
            "latency_parts_ms": _latency_parts(decoded, outputs),
            "latency_ms_by_window": _latency_by_window(decoded, LATENCY_WINDOW_S),
            "render_ms": _percentiles([r.render_ms for r in renders]),
            "playout_delay_ms": round(playout.target_delay_ms, 2),
            "network_jitter_ms": round(links[-1].network_jitter_ms, 2) if links else None,
            "packets_received": totals.packets,
            "payload_bytes_received": totals.payload_bytes,
            "packets_rejected": totals.bad_packets,
            "packets_over_budget": totals.packets_over_budget,
            "frames_lost_in_transit": totals.frames_lost,
            "frames_received": totals.frames_received,
            "wire_bytes_received": totals.wire_bytes_received,
            "render_errors": 0 if worker is None else worker.render_errors,
            "sink_errors": self.sink_errors,
            "enhancement_received": totals.enhancement_received,
            "enhancement_decoded": totals.enhancement_decoded,
            "enhancement_dropped": totals.enhancement_dropped,
            "enhancement_ignored": totals.enhancement_ignored,
            "enhancement_key_requests": totals.enhancement_key_requests,
            "frames_rendered_enhanced": 0 if worker is None else worker.frames_enhanced,
            "frames_shown_as_picture": 0 if worker is None else worker.frames_shown_as_picture,
            "motion_transport": links[-1].motion_transport if links else None,
            "rtp": asdict(links[-1].rtp.counters()) if links and links[-1].rtp is not None else None,
            "audio_rtp": asdict(links[-1].audio_rtp.counters()) if links and links[-1].audio_rtp is not None else None,
            "audio": audio.report(),
        }


def _enhancement_stats(sender: SenderLink | None, worker: RenderWorker | None) -> dict[str, int]:
    """The enhancement layer's counts: pictures of the active sender, frames rendered with/without one."""
    rendered = 0 if worker is None else worker.frames_rendered
    enhanced = 0 if worker is None else worker.frames_enhanced
    counts = None if sender is None else sender.enhancement.counts()
    return {
        "enhancement_received": 0 if counts is None else counts.received,
        "enhancement_decoded": 0 if counts is None else counts.decoded,
        "enhancement_dropped": 0 if counts is None else counts.dropped,
        "enhancement_ignored": 0 if counts is None else counts.ignored,
        "enhancement_key_requests": 0 if counts is None else counts.key_requests,
        "frames_rendered_enhanced": enhanced,
        "frames_rendered_motion_only": rendered - enhanced,
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    arr = np.asarray(values)
    return {"median": round(float(np.median(arr)), 2), "p95": round(float(np.percentile(arr, 95)), 2), "max": round(float(arr.max()), 2)}


def _latency_parts(decoded: list[RenderRecord], outputs: list[OutputRecord]) -> dict[str, dict[str, float | None]]:
    """Where each decoded frame's latency went: capture → arrival (sender and network), arrival → due (the jitter
    buffer), due → rendered (render queue and render); matched by output slot, frames with an arrival time."""
    by_slot = {o.slot: o for o in outputs if not o.concealed and o.arrival_ms is not None}
    pairs = [(by_slot[r.slot], r) for r in decoded if r.slot in by_slot]
    return {
        "to_arrival": _percentiles([o.arrival_ms - o.capture_ms for o, _ in pairs]),
        "arrival_to_due": _percentiles([o.due_ms - o.arrival_ms for o, _ in pairs]),
        "due_to_rendered": _percentiles([r.rendered_ms - o.due_ms for o, r in pairs]),
    }


def _latency_by_window(decoded: list[RenderRecord], window_s: float) -> list[dict[str, float | int]]:
    """Latency median and p95 per ``window_s`` of capture time from the first decoded frame (a call's early seconds
    apart from its steady state)."""
    if not decoded:
        return []
    start = decoded[0].capture_ms
    windows: dict[int, list[float]] = {}
    for r in decoded:
        windows.setdefault(int((r.capture_ms - start) / 1000.0 // window_s), []).append(r.rendered_ms - r.capture_ms)
    return [
        {"from_s": index * window_s, "frames": len(values), "median": round(float(np.median(values)), 1),
         "p95": round(float(np.percentile(values, 95)), 1)}
        for index, values in sorted(windows.items())
    ]
