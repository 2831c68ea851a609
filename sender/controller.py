"""Bandwidth adaptation: picks K (which keypoints' δ), the quantizer preset, frames per packet and the enhancement layer's qp.

The controller walks a ladder of settings ordered from best (all keypoints, default quantizer, one
frame per packet = lowest latency) to cheapest, and takes the best rung whose predicted on-the-wire
rate fits the ``max_kbps`` cap:

    predicted(rung) = fps · 8 · (payload_bytes_per_frame(rung) + packet_overhead / fpp) + other traffic

On a link that can carry the enhancement layer (``set_enhancement(True)``: the receiver announced the
capability and the model has the branch) the ladder starts with the enhanced rungs (``enhanced_ladder``):
one frame per packet, ``RUNG_KEYPOINTS`` (5) keypoints (the picture carries the expression), the default preset,
plus an AV1 picture in the same message as its frame's motion (a frame bundle), from a 256² picture with every frame down to the model's own E×E with every 3rd
frame at qp 55 (``codec.enhancement.picture_rate.LADDER``: at a few kbps a sharper picture less often is worth more,
above ~5 kbps of pictures a larger one; rungs with a picture larger than E only when the receiver announced that
side, ``set_enhancement``); below them come the motion-only rungs. An enhanced rung's payload per frame is the motion packet's plus
``enhancement_bytes_per_frame(rate)``: the bundle's framing and the picture over the frames it serves, measured
per (qp, interval, size) once ``MIN_MEASURE_PACKETS`` pictures were sent, else ``_ENHANCEMENT_PRIORS`` (64², SVT-AV1;
``_LARGER_PICTURE_PRIORS`` for the larger sides)
scaled by measured/prior of the rate measured last. A receiver that reads only version-1 bundles gets no
interval above 1 (``set_enhancement``). The enhanced rungs climb and descend like any other; a cap under
``ENHANCEMENT_MIN_CAP_KBPS`` offers none (the cheapest costs more, and the start-of-call priors would probe it), so
an 8 kbps cap behaves as without the layer. ``enhancement_qp`` pins the qp of the enhanced rung, a picture with every frame (the
motion-only rungs stay below it); 0 takes the layer off the ladder.

``payload_bytes_per_frame`` is the average over the rung's recent packets once 8 were sent, else a
prior fitted on real faces (``_PRIORS``, ``python -m bench priors``) scaled by measured/prior of the current rung;
``packet_overhead`` is the SCTP+DTLS+UDP+IPv4 cost of one data-channel packet, or RTP+SRTP+UDP+IPv4 once the
link carries motion as RTP (``set_packet_overhead``); "other traffic" is what
the transport counters show beyond the motion packets over the last seconds (the SACKs the sender
returns for every feedback message, control messages, ICE checks), assumed 1 kbps until measured.
An enhanced rung predicted from priors alone (no picture measured yet) must fit ``PRIOR_HEADROOM`` of the cap, and a rung with
another picture rate is charged its key picture (``switch_kbps``). Moving down waits ``DOWN_HOLD_S`` after the last
change, then goes straight to the best rung predicted to fit once the current rung's own sizes are measured (its
motion and pictures: every change of picture rate costs a key picture, so no stepping through the rungs between);
unmeasured after ``MAX_DOWN_WAIT_S``, one rung at a time. The rate measured since the last change (over at least
``MIN_MEASURE_S``) ``OVER_FACTOR`` above the cap moves down at once; moving up needs headroom under
the cap and ``HOLD_S`` seconds, and a rung that had to be left within ``FAILED_UP_S`` of moving up to
it is not probed again for ``BACKOFF_S`` (doubling each time). Congestion — frame loss in the receiver's Feedback
above ``LOSS_STEP_DOWN`` or its reported jitter above ``JITTER_STEP_DOWN_MS`` — moves one rung down,
whatever the cap, at most once per ``HOLD_S``. Under heavy loss (``HIGH_LOSS`` or more of the frames, and for
``LOSSY_HOLD_S`` after) the ladder keeps at most ``MAX_FPP_UNDER_LOSS`` frames per packet (each lost packet then
costs at most that many frames, concealed back to back) and steps down through fewer keypoints and the coarse
grid instead; only a cap that nothing at that many frames per packet fits lifts the ceiling, to the fewest frames
per packet that fit the cap.

A receiver that renders fewer frames than it is sent (its CPU is busy; ``DelayReport.rendered_fps``) gets pictures no
more often than it renders (``min_picture_interval``): the enhanced rungs' intervals are stretched to it, so the bits go
into larger or finer pictures it shows rather than ones it would decode and drop. Rungs whose pictures it shows as
decoded (``shown_side``: a picture at the output's side with every frame) are not stretched.

Which keypoints: the K with the largest running mean of ||δ_k − δ_ref,k||² (an EWMA over the observed
motion; δ_ref the portrait's own δ, which the receiver renders for keypoints not sent): the ones that
stray most matter most. The choice is causal (only frames already captured count): made when K
changes, then revised at most every ``RERANK_S`` while K holds, when the ranking's top K has changed
(the first choice rests on very few frames). ``--keypoints`` / ``--frames-per-packet`` / a preset pin those
dimensions (a pinned frames per packet other than 1 leaves out the enhanced rungs); ``set_max_kbps``
changes the cap (a viewer command).

The per-packet overhead dominates at these rates: at 25 fps one packet per frame costs 18.6 kbps before any
payload on the data channel (93 bytes a packet), 10 kbps as RTP (50 bytes; ``signaling.rtp_motion``, the default
between Python peers). With RTP an 8 kbps cap fits 3 frames per packet at K = 20 (the data channel needed 4);
each extra frame in a packet delays the packet's first frame by one frame interval (40 ms at 25 fps).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from codec.bitstream import Feedback
from codec.enhancement.picture_rate import LADDER as PICTURE_LADDER
from codec.enhancement.picture_rate import MAX_INTERVAL, PictureRate, rung_keypoints
from codec.motion import MotionParams
from codec.quantize import DEFAULT_PRESET_ID, PRESETS_BY_NAME, get_preset
from signaling.control import DelayReport, RateDecision

logger = logging.getLogger(__name__)

# SCTP common header 12 + DATA chunk 16 + DTLS 1.2 record 13 + AES-GCM nonce/tag 24 + UDP 8 + IPv4 20
# (the same sum as bench/codecs/datachannel.py), plus 2 bytes of average padding to 4.
PACKET_OVERHEAD_BYTES = 95
LOSS_STEP_DOWN = 0.10
HIGH_LOSS = 0.15  # this much frame loss or more: the frames-per-packet ceiling below applies
MAX_FPP_UNDER_LOSS = 2  # frames per packet under heavy loss (unless the cap needs more)
LOSSY_HOLD_S = 10.0  # the ceiling stays this long after the loss was last that high
JITTER_STEP_DOWN_MS = 150.0
HOLD_S = 5.0  # before moving up again, or after a congestion step
DOWN_HOLD_S = 2.0  # before moving down again (the new rung's size needs measuring first)
UP_HEADROOM = 0.97  # move up only when the better rung is predicted below this fraction of the cap
# ... this fraction when the better rung's pictures were never measured (predicted from another rate's measured/prior:
# off by 17-54 % in bench calls at 15-30 kbps, 2026-12-07, each failed climb a key picture and a step back down)
UNMEASURED_UP_HEADROOM = 0.85
# An enhanced rung predicted from priors alone (no picture measured yet: the call's first decision) must fit this share of the
# cap: at K = 20 the training people's motion spans 0.6-1.3x the prior's mean, and a test-group clip's pictures measured
# up to 2x theirs (bench call, 2026-12-07).
PRIOR_HEADROOM = 0.8
RENDER_FPS_WEIGHT = 0.5  # EWMA weight of each delay report's render rate (reports come every 5 s)
MAX_DOWN_WAIT_S = 4.0  # over the cap, the current rung's sizes are awaited this long, then it steps down one rung blind
# A change of the enhancement layer's side or qp re-opens SVT-AV1 (its interval does not: LowResEncoder.set_fps): its
# first picture is a key picture, 16-22x an inter one (measured 2026-12-07 on 6 training clips, 64²-256², qp 48-55).
# Taking a rung with another qp or side is charged that key picture spread over SWITCH_AMORTIZE_S, so the ladder does
# not climb into a rung whose switch alone would break the cap (a 10 s call at 15 kbps went to 24 kbps changing side
# back and forth).
KEY_PICTURE_FACTOR = 19.0
SWITCH_AMORTIZE_S = 10.0
WINDOW_S = 6.0  # measured-rate window
MIN_MEASURE_S = 3.0  # a rate needs this long a window before it is trusted
MEASURE_PACKETS = 64  # payload size average over the last packets of a rung
MIN_MEASURE_PACKETS = 12
SKIP_AFTER_CHANGE_S = 1.5  # packets this soon after a setting change are left out of its size average
# Before the transport counters have MIN_MEASURE_S of data: SACKs for the receiver's feedback (1/s),
# delay reports and pings, about 1 kbps on the sender's side.
ASSUMED_OTHER_KBPS = 1.0
OVER_FACTOR = 1.25  # measured this far above the cap: step down at once, as far as needed
FAILED_UP_S = 15.0  # stepping down this soon after stepping up marks the upper rung as not fitting
BACKOFF_S = 30.0  # ... and it is not probed again for this long (doubling up to MAX_BACKOFF_S)
MAX_BACKOFF_S = 240.0
IMPORTANCE_DECAY = 0.02  # EWMA weight of each new frame in the keypoint importance
RERANK_S = 5.0  # at a held K, the keypoints sent are revised at most this often

# Prior payload bytes per frame = a + b·K + (c + d·K) / fpp per preset id, least squares on the relative error over
# real faces: `python -m bench priors --frames 100` (bench/motion_priors.py), 75 training people's clips at 25 fps
# with the sender's crop, refinement, keypoint choice and packetizer, K 0-20, fpp 1-8; max relative error 10-13 %;
# 2026-12-07, codec.bitstream v1. At K = 20, one frame per packet the clips span 13-31 bytes a frame (mean 23.6);
# the synthetic trace these replaced predicted 18.5, which made a call's first rungs overshoot.
_PRIORS = {1: (2.177, 0.672, 6.899, 0.486), 2: (1.447, 0.404, 6.684, 0.386), 3: (1.008, 0.258, 6.446, 0.291)}

E_SIDE = 64  # the model's own picture side (rates with size None), for the nearest-side choice only
BUNDLE_FRAMING_BYTES = 4  # a frame bundle's magic, two length varints and flags (codec.enhancement.bundle)
# Prior enhancement picture bytes per frame by qp: E = 64, SVT-AV1 preset 4 low-delay
# (codec.enhancement.lowres_codec) on 30 training people's face crops at 25 fps (150 frames each), inter pictures
# (2026-12-07); other qps are interpolated log-linearly.
_ENHANCEMENT_PRIORS = {32: 93.9, 40: 58.0, 48: 37.9, 55: 29.5, 63: 23.3}
# The same for the top rungs' larger pictures (the same 30 people and encoder, 2026-12-07); the interval factors below
# were measured at 64² and are taken for these too.
_LARGER_PICTURE_PRIORS = {
    128: {32: 203.3, 40: 116.4, 48: 68.6, 55: 47.9, 63: 31.6},
    160: {32: 240.2, 40: 138.1, 48: 81.5, 55: 56.4, 63: 36.0},
    192: {32: 296.8, 40: 165.7, 48: 95.5, 55: 64.4, 63: 39.6},
    256: {32: 448.7, 40: 241.5, 48: 134.5, 55: 87.5, 63: 49.9},
}
# A picture with every N-th frame is coded N frames after the one before: it costs more than one a frame after.
# Bytes per picture at N over those at 1, the same clips, mean over qps 32-63: 1.12-1.36 at 2, 1.20-1.64 at 3,
# 1.25-1.80 at 4 (the finer the qp, the larger).
_INTERVAL_PICTURE_FACTOR = {1: 1.0, 2: 1.26, 3: 1.45, 4: 1.57}
# Under this cap no enhanced rung is offered. The cheapest costs 7.1 kbps in a call with sound (bench rd, test group,
# 2026-12-07 late: K = 5 motion with the portrait amortized over 60 s, + a 64² qp-55 picture every 3rd frame), but a
# face that moves more than the priors' mean (they span 0.6-1.3x of it) would make an 8 kbps cap probe it for ~2 s
# (measured 2026-12-06 with the synthetic-trace priors, which were lower still).
ENHANCEMENT_MIN_CAP_KBPS = 10.0


@dataclass(frozen=True)
class Rung:
    """One setting of the ladder."""

    frames_per_packet: int
    keypoints: int
    preset_id: int
    enhancement_qp: int | None = None  # the enhancement picture's qp, bundled with its frame's motion (None: motion only)
    enhancement_interval: int = 1  # a picture with every N-th frame (the frames between render with the newest one)
    enhancement_size: int | None = None  # the picture's side (None: the model's own E; codec.enhancement.picture_rate)

    @property
    def motion_rung(self) -> Rung:
        """The same motion settings without the enhancement layer (their motion packets are the same)."""
        return Rung(self.frames_per_packet, self.keypoints, self.preset_id)

    @property
    def picture_rate(self) -> PictureRate | None:
        """The enhancement layer's qp and interval on this rung (None: motion only)."""
        if self.enhancement_qp is None:
            return None
        return PictureRate(self.enhancement_qp, self.enhancement_interval, self.enhancement_size)


def default_ladder(num_keypoints: int) -> tuple[Rung, ...]:
    """Best first: lower latency before fewer keypoints, fewer keypoints before a coarser grid."""
    k = num_keypoints
    d, c = DEFAULT_PRESET_ID, PRESETS_BY_NAME["coarse"].preset_id
    rungs = [Rung(1, k, d), Rung(2, k, d), Rung(3, k, d), Rung(4, k, d), Rung(4, k, c)]
    rungs += [Rung(4, n, c) for n in (k * 3 // 5, k * 2 // 5)] + [Rung(6, k // 5, c), Rung(8, k // 5, c), Rung(8, 0, c)]
    out: list[Rung] = []
    for rung in rungs:
        if rung not in out:
            out.append(rung)
    return tuple(out)


def enhanced_ladder(num_keypoints: int, rates: tuple[PictureRate, ...] | None = None) -> tuple[Rung, ...]:
    """The rungs above ``default_ladder`` on a link with the enhancement layer, best first (``rates``: the layer's
    qp and picture interval of each, default ``codec.enhancement.picture_rate.LADDER``), each with the keypoints sent
    beside its pictures (``rung_keypoints``)."""
    keypoints = rung_keypoints(num_keypoints)
    return tuple(Rung(1, keypoints, DEFAULT_PRESET_ID, rate.qp, rate.interval, rate.size) for rate in rates or PICTURE_LADDER)


def prior_enhancement_bytes(qp: int, interval: int = 1, size: int | None = None) -> float:
    """Prior bytes a frame bundle adds to its motion packet at ``qp``, a ``size``² picture (None: the model's E) with
    every ``interval``-th frame: the framing plus the picture (log-linear between the measured qps of
    ``_ENHANCEMENT_PRIORS`` or ``_LARGER_PICTURE_PRIORS[size]``, extended along the nearest segment beyond them, times
    ``_INTERVAL_PICTURE_FACTOR``)."""
    priors = _ENHANCEMENT_PRIORS if size is None else _larger_picture_priors(size)
    qps = sorted(priors)
    i = min(max(1, int(np.searchsorted(qps, qp))), len(qps) - 1)
    (q0, q1), (b0, b1) = (qps[i - 1], qps[i]), (priors[qps[i - 1]], priors[qps[i]])
    picture = float(np.exp(np.log(b0) + (qp - q0) / (q1 - q0) * (np.log(b1) - np.log(b0))))
    return BUNDLE_FRAMING_BYTES + picture * _INTERVAL_PICTURE_FACTOR[interval]


def _larger_picture_priors(size: int) -> dict[int, float]:
    """The prior table of a larger picture; a side without its own (96²) scaled from the nearest measured one by area."""
    if size in _LARGER_PICTURE_PRIORS:
        return _LARGER_PICTURE_PRIORS[size]
    nearest = min(_LARGER_PICTURE_PRIORS, key=lambda s: abs(s - size))
    return {qp: b * (size / nearest) ** 2 for qp, b in _LARGER_PICTURE_PRIORS[nearest].items()}


def prior_bytes_per_frame(rung: Rung) -> float:
    a, b, c, d = _PRIORS.get(rung.preset_id, _PRIORS[DEFAULT_PRESET_ID])
    return a + b * rung.keypoints + (c + d * rung.keypoints) / rung.frames_per_packet


@dataclass(frozen=True)
class Decision:
    """What the packetizer should use now."""

    rung: Rung
    order: tuple[int, ...]  # keypoint indices by importance; the first ``rung.keypoints`` are sent
    estimated_kbps: float
    max_kbps: float | None
    reason: str
    # what the rung being left measured: its wire rate since it was taken (None: under MIN_MEASURE_S) and its
    # predicted rate now (for logs and the benchmark: why the controller moved)
    left_measured_kbps: float | None = None
    left_predicted_kbps: float | None = None

    def message(self) -> RateDecision:
        return RateDecision(
            self.rung.keypoints, get_preset(self.rung.preset_id).name, self.rung.frames_per_packet,
            self.max_kbps, round(self.estimated_kbps, 2), self.reason, self.rung.enhancement_qp,
            None if self.rung.enhancement_qp is None else self.rung.enhancement_interval,
            None if self.rung.enhancement_qp is None else self.rung.enhancement_size,
        )


class BandwidthController:
    """Feed it observations; ``decide(now_s)`` returns a new Decision when the setting should change."""

    def __init__(
        self, fps: float, num_keypoints: int, max_kbps: float | None = None, keypoints: int | None = None,
        frames_per_packet: int | None = None, preset: str | int | None = None,
        expression_baseline: np.ndarray | None = None, enhancement_qp: int | None = None,
    ) -> None:
        """``expression_baseline``: (K, 3) the reference portrait's own δ, which the receiver renders for keypoints
        it is not sent; a keypoint's importance is how far its δ strays from it (None: from δ = 0).
        ``enhancement_qp``: pins the enhanced rung's qp (None: the controller chooses; 0: no enhanced rungs);
        enhanced rungs are offered only after ``set_enhancement(True)``."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.num_keypoints = num_keypoints
        self.packet_overhead_bytes = PACKET_OVERHEAD_BYTES  # per motion packet on the wire; see set_packet_overhead
        self.ladder = default_ladder(num_keypoints)
        self.max_kbps: float | None = None
        self.set_max_kbps(max_kbps)
        self.pin_keypoints: int | None = None
        self.pin_frames_per_packet: int | None = None
        self.set_overrides(keypoints, frames_per_packet)
        self.pin_preset = None if preset is None else get_preset(preset).preset_id
        if enhancement_qp is not None and not 0 <= enhancement_qp <= 63:
            raise ValueError(
                f"enhancement_qp must be an SVT-AV1 qp in 1..63, or 0 for no enhancement layer, got {enhancement_qp!r}"
            )
        self.pin_enhancement_qp = enhancement_qp
        self.enhancement_available = False  # the link can carry the layer (set_enhancement)
        self.max_enhancement_interval = MAX_INTERVAL  # the longest picture interval the receiver reads (set_enhancement)
        self.max_enhancement_size = 0  # the largest picture side it reads (0: the model's E only; set_enhancement)
        self.shown_side = 0  # the picture side it shows as decoded, one every frame (0: none; set_enhancement)
        self._importance = np.zeros(num_keypoints, np.float64)
        self._baseline = np.zeros((num_keypoints, 3), np.float64)
        if expression_baseline is not None:
            baseline = np.asarray(expression_baseline, np.float64)
            if baseline.shape != (num_keypoints, 3) or not np.all(np.isfinite(baseline)):
                raise ValueError(f"expression_baseline must be a finite ({num_keypoints}, 3) array, got {baseline.shape}")
            self._baseline = baseline
        self._order: tuple[int, ...] = tuple(range(num_keypoints))
        self._ordered_at = -1e9  # when the keypoints sent were last chosen
        self._measured: dict[Rung, deque[tuple[int, int]]] = {}  # recent (motion payload bytes, frames) per motion rung
        self._enhancement_measured: dict[PictureRate, deque[int]] = {}  # recent bundle bytes beyond the motion packet
        self._last_packet_rung: Rung | None = None
        self._skip_until = 0.0
        self._wire: deque[tuple[float, int]] = deque()  # (time s, cumulative wire bytes sent)
        self._motion_wire_total = 0
        self._other: deque[tuple[float, int]] = deque()  # (time s, cumulative wire bytes that were not motion packets)
        self._loss: deque[tuple[float, int, int]] = deque()  # (time, received, lost) cumulative
        self.jitter_ms = 0.0
        self._jitter_reports: deque[float] = deque(maxlen=2)
        self.rtt_ms: float | None = None
        self.rendered_fps: float | None = None  # the receiver's render rate (DelayReport), smoothed
        self._render_interval = 1  # the picture interval the receiver's render rate allows (on_delay_report)
        self.current: Decision | None = None
        self._changed_at = -1e9
        self._congested_until = -1e9
        self.decisions: list[Decision] = []
        self._up_at = -1e9  # when we last moved up, and to which rung
        self._up_to: Rung | None = None
        self._backoff: dict[Rung, float] = {}
        self._blocked_until: dict[Rung, float] = {}
        self._lossy_until = -1e9  # the frames-per-packet ceiling of heavy loss holds until then

    # -- settings --------------------------------------------------------------------------------
    def set_max_kbps(self, max_kbps: float | None) -> None:
        """The cap (None or 0: none)."""
        if max_kbps is not None and not max_kbps >= 0:
            raise ValueError(f"max_kbps must be ≥ 0 (0 = no cap), got {max_kbps}")
        self.max_kbps = max_kbps or None
        self._changed_at = -1e9  # re-decide at once

    def set_overrides(self, keypoints: int | None, frames_per_packet: int | None) -> None:
        """Pin K and/or frames per packet (None: the controller chooses)."""
        if keypoints is not None and not 0 <= keypoints <= self.num_keypoints:
            raise ValueError(f"keypoints must be in [0, {self.num_keypoints}], got {keypoints}")
        if frames_per_packet is not None and not 1 <= frames_per_packet <= 8:
            raise ValueError(f"frames_per_packet must be in [1, 8], got {frames_per_packet}")
        self.pin_keypoints, self.pin_frames_per_packet = keypoints, frames_per_packet
        self._changed_at = -1e9

    def set_enhancement(self, available: bool, max_interval: int = MAX_INTERVAL, max_size: int = 0,
                        shown_side: int = 0) -> None:
        """Whether the link can carry the enhancement layer (the receiver reads frame bundles at the model's E), the
        longest picture interval its receiver reads (1 for a reader of version-1 bundles only), the largest picture
        side (0: E only; rungs with a larger picture are left out), and the side of the pictures the receiver shows as
        decoded, one every frame, without rendering (its output's, ``codec.enhancement.passthrough``; 0: none): a busy
        receiver's render rate does not stretch those rungs' interval."""
        if (available, max_interval, max_size, shown_side) != (
                self.enhancement_available, self.max_enhancement_interval, self.max_enhancement_size, self.shown_side):
            self.enhancement_available = available
            self.max_enhancement_interval = max_interval
            self.max_enhancement_size = max_size
            self.shown_side = shown_side
            self._changed_at = -1e9  # re-decide at once

    def _candidates(self, max_fpp: int | None = None) -> list[Rung]:
        """The ladder with the pins applied; ``max_fpp`` lowers the frames per packet of the rungs above it (pins excepted)."""
        enhanced: tuple[Rung, ...] = ()
        roomy = self.max_kbps is None or self.max_kbps >= ENHANCEMENT_MIN_CAP_KBPS
        if self.enhancement_available and roomy and self.pin_enhancement_qp != 0 and self.pin_frames_per_packet in (None, 1):
            enhanced = tuple(r for r in enhanced_ladder(self.num_keypoints) if r.enhancement_interval <= self.max_enhancement_interval
                             and (r.enhancement_size is None or r.enhancement_size <= self.max_enhancement_size))
        out: list[Rung] = []
        min_interval = self.min_picture_interval()
        for rung in enhanced + self.ladder:
            qp = rung.enhancement_qp
            fpp = rung.frames_per_packet if max_fpp is None else min(rung.frames_per_packet, max_fpp)
            pinned = Rung(
                self.pin_frames_per_packet or fpp,
                rung.keypoints if self.pin_keypoints is None else self.pin_keypoints,
                self.pin_preset or rung.preset_id,
                None if qp is None else self.pin_enhancement_qp or qp,
                # a pinned qp: a picture with every frame; else no more often than the receiver renders (unless it
                # shows those pictures as decoded, which costs it no render)
                1 if self.pin_enhancement_qp else max(rung.enhancement_interval, 1 if not qp or self._shown(rung) else min_interval),
                None if self.pin_enhancement_qp else rung.enhancement_size,  # ... at the model's own E
            )
            if pinned not in out:
                out.append(pinned)
        if min_interval == 1:
            return out
        # Stretched intervals can leave a rung dearer than one above it (192² qp 55 every 2nd frame costs less than 160²
        # qp 48 every 2nd): keep only enhanced rungs cheaper by their priors than every enhanced rung above them.
        cheapest = math.inf
        kept: list[Rung] = []
        for rung in out:
            rate = rung.picture_rate
            if rate is not None:
                cost = prior_enhancement_bytes(rate.qp, rate.interval, rate.size) / rate.interval
                if cost >= cheapest:
                    continue
                cheapest = cost
            kept.append(rung)
        return kept

    # -- observations ----------------------------------------------------------------------------
    def observe_motion(self, motion: MotionParams) -> None:
        if motion.num_keypoints != self.num_keypoints:
            return
        energy = np.sum(np.square(motion.expression.astype(np.float64) - self._baseline), axis=1)  # (K,)
        self._importance += IMPORTANCE_DECAY * (energy - self._importance)

    def on_packet(self, now_s: float, size_bytes: int, frames: int, rung: Rung, enhancement_bytes: int = 0,
                  key_picture: bool = False) -> None:
        """A motion data-channel message went out: ``size_bytes`` its motion packet, ``enhancement_bytes`` what a
        frame bundle adds to it (framing and picture; 0 for a plain motion packet, or a frame of an enhanced rung
        that had no picture). A key picture (a new stream, or one the receiver asked for) is left out of the rate's
        picture sizes (a 20x outlier in 64 samples; what a switch costs is ``switch_kbps``'s), not out of the wire."""
        if rung != self._last_packet_rung:  # packets just after a change (a KEY when the preset changed, a key
            self._last_packet_rung, self._skip_until = rung, now_s + SKIP_AFTER_CHANGE_S  # picture when the qp changed,
        if now_s >= self._skip_until:  # references not yet confirmed) are not typical of the rung
            self._measured.setdefault(rung.motion_rung, deque(maxlen=MEASURE_PACKETS)).append((size_bytes, max(1, frames)))
            rate = rung.picture_rate
            if rate is not None and enhancement_bytes > 0 and not key_picture:
                pictures = self._enhancement_measured.pop(rate, None) or deque(maxlen=MEASURE_PACKETS)
                pictures.append(enhancement_bytes)
                self._enhancement_measured[rate] = pictures  # (re-inserted: the dict's order is the order last seen)
        self._motion_wire_total += size_bytes + enhancement_bytes + self.packet_overhead_bytes

    def set_packet_overhead(self, overhead_bytes: int) -> None:
        """Bytes each motion packet costs on the wire beyond its payload: ``PACKET_OVERHEAD_BYTES`` on the data
        channel (the default), ``signaling.rtp_motion.rtp_packet_overhead_bytes()`` once the link carries RTP."""
        if not 0 < overhead_bytes < 1000:
            raise ValueError(f"packet overhead of {overhead_bytes} bytes is not plausible")
        self.packet_overhead_bytes = overhead_bytes

    def on_wire_bytes(self, now_s: float, total_bytes_sent: int) -> None:
        """Cumulative IPv4 bytes the transport sent (motion, control, SACKs, everything)."""
        self._wire.append((now_s, total_bytes_sent))
        self._other.append((now_s, total_bytes_sent - self._motion_wire_total))
        self._trim(self._wire, now_s)  # (also trimmed where read; here so that they stay bounded unread)
        self._trim(self._other, now_s)

    def on_feedback(self, now_s: float, feedback: Feedback) -> None:
        self._loss.append((now_s, feedback.frames_received, feedback.frames_lost))
        self._trim(self._loss, now_s)

    def on_delay_report(self, report: DelayReport) -> None:
        """Jitter counts as congestion only when two reports in a row say so (a CPU stall is one); the receiver's
        render rate, where it says it, is smoothed over reports (``min_picture_interval``)."""
        self._jitter_reports.append(report.jitter_ms)
        self.jitter_ms = min(self._jitter_reports)
        if report.rendered_fps is not None:
            fps = report.rendered_fps
            self.rendered_fps = fps if self.rendered_fps is None else (1 - RENDER_FPS_WEIGHT) * self.rendered_fps + RENDER_FPS_WEIGHT * fps
            self._render_interval = self._interval_for_render_rate(self.rendered_fps)

    def _interval_for_render_rate(self, rendered_fps: float) -> int:
        """N = fps / rendered fps rounded down from .75 (25 fps rendered at 14: 2; at 10: 2; at 8: 3); back to a shorter
        one than the current only once N is half an interval below it (2 -> 1 above 16.7 fps rendered): sending fewer
        pictures speeds the renderer up, which would otherwise swing the interval back and forth."""
        needed = self.fps / max(rendered_fps, 1e-3)
        interval = max(1, min(MAX_INTERVAL, math.floor(needed + 0.25)))
        if interval < self._render_interval and needed > self._render_interval - 0.5:
            return self._render_interval
        return interval

    def min_picture_interval(self) -> int:
        """The shortest picture interval worth sending: a receiver that renders only every N-th frame (its CPU is
        busy) would decode pictures it never shows, so pictures go with every N-th frame at most (N from its delay
        reports, ``_interval_for_render_rate``; 1 until one says), at most the receiver's longest."""
        return min(self._render_interval, self.max_enhancement_interval)

    def on_rtt(self, rtt_ms: float) -> None:
        self.rtt_ms = rtt_ms if self.rtt_ms is None else 0.8 * self.rtt_ms + 0.2 * rtt_ms

    # -- estimates -------------------------------------------------------------------------------
    @staticmethod
    def _trim(samples: deque[Any], now_s: float) -> None:
        """Drop samples older than the window, keeping the newest one before it (the rates' left edge)."""
        while len(samples) > 2 and samples[1][0] < now_s - WINDOW_S:
            samples.popleft()

    @staticmethod
    def _rate_kbps(samples: deque[tuple[float, int]], now_s: float, since_s: float = -math.inf) -> float | None:
        """The rate over the window's cumulative-byte samples from ``since_s`` on; None until they span ``MIN_MEASURE_S``."""
        BandwidthController._trim(samples, now_s)
        first = next((s for s in samples if s[0] >= since_s), None)
        if first is None or samples[-1][0] - first[0] < MIN_MEASURE_S:
            return None
        (t0, b0), (t1, b1) = first, samples[-1]
        return (b1 - b0) * 8 / 1000 / (t1 - t0)

    def loss_fraction(self, now_s: float) -> float:
        self._trim(self._loss, now_s)
        if len(self._loss) < 2:
            return 0.0
        (_, r0, l0), (_, r1, l1) = self._loss[0], self._loss[-1]
        total = (r1 - r0) + (l1 - l0)
        return 0.0 if total <= 0 else max(0.0, (l1 - l0) / total)

    def _measured_per_frame(self, rung: Rung) -> float | None:
        samples = self._measured.get(rung.motion_rung)
        if samples is None or len(samples) < MIN_MEASURE_PACKETS:
            return None
        return sum(b for b, _ in samples) / sum(f for _, f in samples)

    def _measured_enhancement(self, rate: PictureRate) -> float | None:
        samples = self._enhancement_measured.get(rate)
        if samples is None or len(samples) < MIN_MEASURE_PACKETS:
            return None
        return sum(samples) / len(samples)

    def _measured_rung(self, rung: Rung) -> bool:
        """Whether ``rung``'s own motion packets, and pictures on an enhanced rung, were measured."""
        rate = rung.picture_rate
        return self._measured_per_frame(rung) is not None and (rate is None or self._measured_enhancement(rate) is not None)

    def _shown(self, rung: Rung) -> bool:
        """Whether the receiver shows ``rung``'s pictures as decoded, without rendering them."""
        return bool(self.shown_side) and rung.enhancement_size == self.shown_side and rung.enhancement_interval == 1

    def _up_headroom(self, rung: Rung) -> float:
        """The share of the cap a rung moved up to may be predicted at: less where its pictures were never measured."""
        rate = rung.picture_rate
        return UP_HEADROOM if rate is None or self._measured_enhancement(rate) is not None else UNMEASURED_UP_HEADROOM

    def _on_priors(self, rung: Rung) -> bool:
        """Whether ``rung`` is an enhanced rung whose pictures are predicted from priors alone (no rate measured yet to
        scale them by): leaving it when it does not fit costs a key picture; a motion-only rung that does not fit is
        left within ``DOWN_HOLD_S`` at no cost."""
        return rung.picture_rate is not None and not any(len(s) >= MIN_MEASURE_PACKETS for s in self._enhancement_measured.values())

    def enhancement_bytes_per_picture(self, rate: PictureRate) -> float:
        """Bytes a frame bundle adds at ``rate``: measured when enough of its pictures were seen, else the prior scaled
        by measured/prior of the measured rate nearest in side (the face and E differ from the priors'), raised to
        1 / (1 + octaves between the two sides): a face's cost relative to the priors carries only partly across sides.
        Measured in 2026-12-07's calls: 128² pictures at 1.46x their prior, then 64² ones at 0.9-1.1x (the full ratio
        over-predicted them by 30-59 %, 1.46^(1/2) by 8-31 %, and the 10 s 15 kbps call then found no picture rung
        under its cap); 128² at 0.63x, then 160² at 0.69x (full: -9 %, partial +1 %); 192² at 0.62-0.66x, then
        160² at 0.70x and 256² at 0.78-1.1x."""
        measured = self._measured_enhancement(rate)
        if measured is not None:
            return measured
        prior = prior_enhancement_bytes(rate.qp, rate.interval, rate.size)
        # A face's cost relative to the priors need not be the same at every side (detail a 64² picture averages away
        # costs bits at 256²): scale by the measured rate nearest in side, then in qp, then the newest (the dict's
        # order is the order last seen; newest first, ``min`` keeps the first of equals).
        measured = [(r, m) for r in reversed(self._enhancement_measured) if (m := self._measured_enhancement(r)) is not None]
        if not measured:
            return prior
        def octaves(other: PictureRate) -> float:
            return abs(math.log2((other.size or E_SIDE) / (rate.size or E_SIDE)))

        nearest, bytes_measured = min(measured, key=lambda rm: (octaves(rm[0]), abs(rm[0].qp - rate.qp)))
        ratio = bytes_measured / prior_enhancement_bytes(nearest.qp, nearest.interval, nearest.size)
        return prior * ratio ** (1.0 / (1.0 + octaves(nearest)))  # at another side, only part of the way from the prior

    def picture_measurements(self) -> list[dict[str, Any]]:
        """Per picture rate seen, oldest first: its recent pictures' mean bundle bytes against the prior (for logs and
        the benchmark: how far a face's pictures stray from the priors, by side and qp)."""
        return [{"rate": rate.label(), "pictures": len(samples), "bytes_per_picture": round(sum(samples) / len(samples), 1),
                 "prior": round(prior_enhancement_bytes(rate.qp, rate.interval, rate.size), 1)}
                for rate, samples in self._enhancement_measured.items() if samples]

    def switch_kbps(self, current: Rung | None, rung: Rung) -> float:
        """What moving from ``current`` to ``rung`` adds for a while: the key picture of a new qp or picture side, spread
        over ``SWITCH_AMORTIZE_S`` (0 for a motion-only rung, or the same qp and side at another interval: the stream
        goes on)."""
        rate = rung.picture_rate
        before = None if current is None else current.picture_rate
        if rate is None or (before is not None and (before.qp, before.size) == (rate.qp, rate.size)):
            return 0.0
        key_bytes = KEY_PICTURE_FACTOR * prior_enhancement_bytes(rate.qp, 1, rate.size)
        return key_bytes * 8 / 1000 / SWITCH_AMORTIZE_S

    def enhancement_bytes_per_frame(self, rate: PictureRate) -> float:
        """What the layer adds per frame at ``rate``: a picture's bundle bytes over the frames it serves."""
        return self.enhancement_bytes_per_picture(rate) / rate.interval

    def payload_bytes_per_frame(self, rung: Rung) -> float:
        """Measured for this rung's motion when enough packets were seen, else the prior scaled by the current
        rung's measured/prior; plus ``enhancement_bytes_per_frame`` on an enhanced rung."""
        rate = rung.picture_rate
        enhancement = 0.0 if rate is None else self.enhancement_bytes_per_frame(rate)
        measured = self._measured_per_frame(rung)
        if measured is not None:
            return measured + enhancement
        prior = prior_bytes_per_frame(rung)
        if self.current is not None:
            current = self._measured_per_frame(self.current.rung)
            if current is not None:
                return prior * current / prior_bytes_per_frame(self.current.rung) + enhancement
        return prior + enhancement

    def motion_kbps(self, rung: Rung) -> float:
        per_frame = self.payload_bytes_per_frame(rung) + self.packet_overhead_bytes / rung.frames_per_packet
        return self.fps * per_frame * 8 / 1000

    def other_kbps(self, now_s: float) -> float:
        """Measured traffic beyond the motion packets (≥ 0); ASSUMED_OTHER_KBPS until measured."""
        other = self._rate_kbps(self._other, now_s)
        return ASSUMED_OTHER_KBPS if other is None else max(0.0, other)

    def measured_kbps(self, now_s: float, since_s: float = -math.inf) -> float | None:
        """The wire rate over the window (its part from ``since_s`` on); None until that spans ``MIN_MEASURE_S``."""
        return self._rate_kbps(self._wire, now_s, since_s)

    # -- decision --------------------------------------------------------------------------------
    def loss_ceiling(self, now_s: float, other_kbps: float) -> int | None:
        """The most frames per packet allowed now: ``MAX_FPP_UNDER_LOSS`` (or the fewest that fit the cap) under heavy
        loss, None otherwise."""
        if self.loss_fraction(now_s) >= HIGH_LOSS:
            self._lossy_until = now_s + LOSSY_HOLD_S
        if now_s >= self._lossy_until:
            return None
        if self.max_kbps is None:
            return MAX_FPP_UNDER_LOSS
        fitting = [r.frames_per_packet for r in self._candidates() if self.motion_kbps(r) + other_kbps <= self.max_kbps]
        return max(MAX_FPP_UNDER_LOSS, min(fitting, default=max(r.frames_per_packet for r in self.ladder)))

    def decide(self, now_s: float) -> Decision | None:
        """A new Decision if the setting should change now, else None."""
        other = self.other_kbps(now_s)
        max_fpp = self.loss_ceiling(now_s, other)
        min_interval = self.min_picture_interval()
        candidates = self._candidates(max_fpp)
        predicted = {r: self.motion_kbps(r) + other for r in candidates}
        current = None if self.current is None else self.current.rung
        cur_index = candidates.index(current) if current in candidates else None
        if cur_index is None and current is not None and max_fpp is not None and current.frames_per_packet > max_fpp:
            # Heavy loss caught us above the ceiling: continue from the same setting at the ceiling's frames per packet.
            capped = Rung(max_fpp, current.keypoints, current.preset_id, current.enhancement_qp, current.enhancement_interval,
                          current.enhancement_size)
            cur_index = candidates.index(capped) if capped in candidates else None
        reason = ""
        target = 0
        if self.max_kbps is not None:
            fitting = [i for i, r in enumerate(candidates) if predicted[r] + self.switch_kbps(current, r)
                       <= self.max_kbps * (PRIOR_HEADROOM if self._on_priors(r) else 1.0)]
            target = fitting[0] if fitting else len(candidates) - 1
            reason = f"cap {self.max_kbps:g} kbps" if fitting else f"nothing fits the cap {self.max_kbps:g} kbps"
        else:
            reason = "no cap"
        loss = self.loss_fraction(now_s)
        if cur_index is not None and (loss > LOSS_STEP_DOWN or self.jitter_ms > JITTER_STEP_DOWN_MS):
            if now_s >= self._congested_until:
                target = max(target, min(cur_index + 1, len(candidates) - 1))
                reason = f"congestion (loss {loss:.0%}, jitter {self.jitter_ms:.0f} ms)"
                self._congested_until = now_s + HOLD_S
                self._changed_at = -1e9  # a congestion step is not held back by DOWN_HOLD_S
            target = max(target, cur_index)
        if cur_index is not None and target > cur_index:
            # Far over is judged on the current rung's own rate: a window that still holds the rung just left (and the
            # key picture a change of qp or side costs) would step down again and again, 40 ms apart.
            measured = self.measured_kbps(now_s, since_s=self._changed_at)
            far_over = self.max_kbps is not None and measured is not None and measured > OVER_FACTOR * self.max_kbps
            held = now_s - self._changed_at
            if far_over:
                pass  # at once, as far as needed
            elif held < DOWN_HOLD_S:
                target = cur_index  # down: let the current rung be measured first
            elif self._measured_rung(candidates[cur_index]):
                pass  # the predictions below are scaled by what the current rung measured: straight to the best that fits
            elif held < MAX_DOWN_WAIT_S:
                target = cur_index  # its pictures are not yet measured (12 after the skip: ~3 s at every 3rd frame)
            else:
                target = cur_index + 1  # one rung at a time, blind
        if cur_index is not None and target < cur_index:
            # Up: needs headroom under the cap and a quiet period.
            if now_s - self._changed_at < HOLD_S or now_s < self._congested_until:
                target = cur_index
            elif self.max_kbps is not None:
                while target < cur_index and (predicted[candidates[target]] + self.switch_kbps(current, candidates[target])
                                              > self._up_headroom(candidates[target]) * self.max_kbps):
                    target += 1
        if cur_index is not None and target < cur_index:
            while target < cur_index and self._blocked_until.get(candidates[target], -1e9) > now_s:
                target += 1  # a rung that recently failed to fit is not probed again yet
        if cur_index is not None and target > cur_index and candidates[cur_index] == self._up_to and now_s - self._up_at < FAILED_UP_S:
            # The rung we just moved up to does not fit after all: keep off it for a while (doubling).
            failed = candidates[cur_index]
            backoff = min(MAX_BACKOFF_S, 2 * self._backoff.get(failed, BACKOFF_S / 2))
            self._backoff[failed] = backoff
            self._blocked_until[failed] = now_s + backoff
        rung = candidates[target]
        if cur_index is not None and target < cur_index:
            self._up_at, self._up_to = now_s, rung
        importance_order = tuple(int(k) for k in np.argsort(-self._importance, kind="stable"))
        order = importance_order
        if self.current is not None and rung.keypoints == self.current.rung.keypoints:
            top = rung.keypoints
            stale = now_s - self._ordered_at >= RERANK_S and set(importance_order[:top]) != set(self._order[:top])
            order = importance_order if stale else self._order
        if self.current is not None and rung == self.current.rung and order == self.current.order:
            return None
        if order != self._order or self.current is None:
            self._ordered_at = now_s
        self._order = order
        if self.rendered_fps is not None and rung.picture_rate is not None and min_interval > 1:
            reason += f"; the receiver renders {self.rendered_fps:.0f} fps: a picture every {min_interval} frames at most"
        left = None if self.current is None else self.current.rung
        decision = Decision(rung, order, predicted[rung], self.max_kbps, reason,
                            None if left is None else self.measured_kbps(now_s, since_s=self._changed_at),
                            None if left is None else self.motion_kbps(left) + other)
        logger.info(
            "rate: K=%d %s fpp=%d %s, predicted %.1f kbps (%s)",
            rung.keypoints, get_preset(rung.preset_id).name, rung.frames_per_packet,
            "motion only" if rung.picture_rate is None else f"enhancement {rung.picture_rate.label()}",
            decision.estimated_kbps, reason,
        )
        self.current = decision
        self._changed_at = now_s
        self.decisions.append(decision)
        return decision


__all__ = [
    "BandwidthController", "Decision", "PACKET_OVERHEAD_BYTES", "Rung", "default_ladder", "enhanced_ladder",
    "prior_enhancement_bytes",
]
