"""Bandwidth controller: rung choice under a cap, overrides, congestion, keypoint importance."""

from __future__ import annotations

import numpy as np
import pytest

from codec.bitstream import Feedback
from codec.motion import MotionParams
from codec.prediction import MotionDepacketizer, MotionPacketizer
from codec.quantize import DEFAULT_PRESET_ID, PRESETS_BY_NAME
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms
from sender.controller import RERANK_S, PACKET_OVERHEAD_BYTES, BandwidthController, Rung, default_ladder, prior_bytes_per_frame
from signaling.control import DelayReport

FPS = 25.0


def test_ladder_is_ordered_from_best_to_cheapest() -> None:
    ladder = default_ladder(20)
    assert ladder[0] == Rung(1, 20, DEFAULT_PRESET_ID)
    costs = [prior_bytes_per_frame(r) + PACKET_OVERHEAD_BYTES / r.frames_per_packet for r in ladder]
    assert costs == sorted(costs, reverse=True)
    assert len(set(ladder)) == len(ladder)


def test_no_cap_means_lowest_latency() -> None:
    controller = BandwidthController(FPS, 20, max_kbps=None)
    decision = controller.decide(0.0)
    assert decision is not None and decision.rung == Rung(1, 20, DEFAULT_PRESET_ID) and decision.reason == "no cap"
    assert controller.decide(0.1) is None  # unchanged


@pytest.mark.parametrize("cap", [30.0, 12.0, 8.0, 6.0, 4.0])
def test_cap_picks_the_best_rung_predicted_to_fit(cap: float) -> None:
    controller = BandwidthController(FPS, 20, max_kbps=cap)
    decision = controller.decide(0.0)
    assert decision is not None
    candidates = list(default_ladder(20))
    index = candidates.index(decision.rung)
    assert decision.estimated_kbps <= cap or index == len(candidates) - 1
    if index > 0:
        assert controller.motion_kbps(candidates[index - 1]) + controller.other_kbps(0.0) > cap  # the better one would not fit
    assert decision.message().max_kbps == cap


def test_wire_estimate_matches_a_simulated_stream() -> None:
    """The prior (plus packet overhead) predicts the packetizer's real output within 25 %."""
    trace = synthetic_trace(500, FPS, seed=5)
    stamps = trace_timestamps_ms(500, FPS)
    for rung in (Rung(1, 20, 2), Rung(3, 20, 2), Rung(4, 12, 3)):
        packetizer, depacketizer = MotionPacketizer(1, rung.preset_id, rung.frames_per_packet), MotionDepacketizer()
        packetizer.set_num_keypoints(rung.keypoints)
        sizes = []
        for i, (m, t) in enumerate(zip(trace, stamps)):
            packet = packetizer.push(m, t)
            if packet is not None:
                sizes.append(len(packet))
                depacketizer.receive(packet)
            if i % 12 == 0 and depacketizer.feedback() is not None:
                packetizer.on_feedback(depacketizer.feedback())  # type: ignore[arg-type]
        measured = sum(sizes[5:]) / (len(sizes[5:]) * rung.frames_per_packet)
        assert measured == pytest.approx(prior_bytes_per_frame(rung), rel=0.25), rung


def test_measured_sizes_and_other_traffic_correct_the_prediction() -> None:
    controller = BandwidthController(FPS, 20, max_kbps=10.0)
    first = controller.decide(0.0)
    assert first is not None
    rung = first.rung
    wire = 0
    for i in range(200):  # packets twice the prior size, plus 4 kbps of other traffic
        now = i / FPS
        size = int(2 * prior_bytes_per_frame(rung) * rung.frames_per_packet)
        if i % rung.frames_per_packet == 0:
            controller.on_packet(now, size, rung.frames_per_packet, rung)
            wire += size + PACKET_OVERHEAD_BYTES
        wire += int(4000 / 8 / FPS)
        controller.on_wire_bytes(now, wire)
    assert controller.payload_bytes_per_frame(rung) == pytest.approx(2 * prior_bytes_per_frame(rung), rel=0.05)
    assert controller.other_kbps(200 / FPS) == pytest.approx(4.0, abs=0.6)
    later = controller.decide(200 / FPS)
    assert later is not None and later.rung != rung  # it no longer fits: step to a cheaper rung
    assert later.estimated_kbps <= 10.0


def test_overrides_pin_dimensions() -> None:
    controller = BandwidthController(FPS, 20, max_kbps=4.0, keypoints=16, frames_per_packet=2, preset="fine")
    decision = controller.decide(0.0)
    assert decision is not None and decision.rung == Rung(2, 16, PRESETS_BY_NAME["fine"].preset_id)
    assert decision.reason.startswith("nothing fits")
    controller.set_overrides(None, None)
    controller.set_max_kbps(0)  # 0 = no cap
    decision = controller.decide(0.1)
    assert decision is not None and decision.rung == Rung(1, 20, PRESETS_BY_NAME["fine"].preset_id)
    with pytest.raises(ValueError, match="keypoints must be in"):
        controller.set_overrides(21, None)
    with pytest.raises(ValueError, match="frames_per_packet must be in"):
        controller.set_overrides(None, 9)


def test_congestion_steps_down_and_recovery_waits() -> None:
    controller = BandwidthController(FPS, 20, max_kbps=None)
    start = controller.decide(0.0)
    assert start is not None
    controller.on_feedback(0.0, Feedback(1, 10, frames_received=10, frames_lost=0))
    controller.on_feedback(1.0, Feedback(1, 40, frames_received=30, frames_lost=10))  # 25 % loss
    down = controller.decide(1.0)
    assert down is not None and down.reason.startswith("congestion") and down.rung == default_ladder(20)[1]
    assert controller.decide(2.0) is None  # held
    controller.on_feedback(9.0, Feedback(1, 200, frames_received=200, frames_lost=10))
    controller.on_feedback(10.0, Feedback(1, 225, frames_received=225, frames_lost=10))
    controller.on_delay_report(DelayReport(5.0, 10.0, 0, 0))
    up = controller.decide(12.0)
    assert up is not None and up.rung == start.rung


def _decide_after_observing(controller: BandwidthController, expression: np.ndarray):
    """The controller's decision after 100 frames holding the same (K, 3) expression δ."""
    for _ in range(100):
        controller.observe_motion(MotionParams(0, 0, 0, np.zeros(3), expression, np.ones(len(expression), bool)))
    return controller.decide(0.0)


def test_keypoints_ranked_by_deformation() -> None:
    controller = BandwidthController(FPS, 6, max_kbps=None, keypoints=2)
    expression = np.zeros((6, 3), np.float32)
    expression[4] = 0.3
    expression[1] = 0.1
    decision = _decide_after_observing(controller, expression)
    assert decision is not None and decision.order[:2] == (4, 1)


def test_keypoints_ranked_by_how_far_their_deformation_strays_from_the_reference() -> None:
    """With the reference's own δ as the baseline (what the receiver renders for keypoints not sent), a keypoint
    that holds the reference's large δ matters less than one that moves away from a small one."""
    baseline = np.zeros((6, 3))
    baseline[4] = 0.3
    controller = BandwidthController(FPS, 6, max_kbps=None, keypoints=2, expression_baseline=baseline)
    expression = np.zeros((6, 3), np.float32)
    expression[4] = 0.3  # the reference's own expression: nothing to send
    expression[1] = 0.1
    expression[2] = 0.05
    decision = _decide_after_observing(controller, expression)
    assert decision is not None and decision.order[:2] == (1, 2)
    with pytest.raises(ValueError, match="expression_baseline"):
        BandwidthController(FPS, 6, expression_baseline=np.zeros((5, 3)))


def test_keypoints_sent_are_revised_causally_while_k_holds() -> None:
    """The first choice rests on the first frame; RERANK_S later the keypoints that stray most since are sent."""
    controller = BandwidthController(FPS, 6, max_kbps=None, keypoints=2)
    first = np.zeros((6, 3), np.float32)
    first[0], first[1] = 0.3, 0.2
    controller.observe_motion(MotionParams(0, 0, 0, np.zeros(3), first, np.ones(6, bool)))
    start = controller.decide(0.0)
    assert start is not None and start.order[:2] == (0, 1)
    later = np.zeros((6, 3), np.float32)
    later[3], later[5] = 0.4, 0.3
    for i in range(200):
        controller.observe_motion(MotionParams(0, 0, 0, np.zeros(3), later, np.ones(6, bool)))
        if i < 100:
            assert controller.decide(i / FPS) is None  # held for RERANK_S (4 s < 5 s)
    revised = controller.decide(RERANK_S + 0.1)
    assert revised is not None and set(revised.order[:2]) == {3, 5} and revised.rung == start.rung
    assert controller.decide(RERANK_S + 0.2) is None  # same top K: nothing new
