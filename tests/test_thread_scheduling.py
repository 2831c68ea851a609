"""codec.thread_scheduling: encoders that switch threads to real-time scheduling are put back."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from codec.thread_scheduling import demote_realtime_threads, scheduling_kept

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling policies only")


def _realtime_threads() -> list[int]:
    out = []
    for name in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(name)) in (os.SCHED_FIFO, os.SCHED_RR):
                out.append(int(name))
        except OSError:
            continue
    return out


def test_the_calling_threads_policy_is_restored() -> None:
    """Switched inside the block (to SCHED_BATCH: allowed without privileges), restored after it; run on its
    own thread so that a failure cannot leave the test process changed."""
    seen: dict[str, int] = {}

    def body() -> None:
        seen["before"] = os.sched_getscheduler(0)
        with scheduling_kept():
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            seen["inside"] = os.sched_getscheduler(0)
        seen["after"] = os.sched_getscheduler(0)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen["inside"] == os.SCHED_BATCH and seen["after"] == seen["before"] != os.SCHED_BATCH


def test_real_time_threads_of_the_process_are_demoted() -> None:
    started, stop = threading.Event(), threading.Event()
    tid: dict[str, int] = {}

    def worker() -> None:
        tid["id"] = threading.get_native_id()
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(5)
    try:
        try:
            os.sched_setscheduler(tid["id"], os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            pytest.skip("setting a real-time policy needs root (CI runs as root)")
        assert tid["id"] in _realtime_threads()
        assert demote_realtime_threads() >= 1
        assert tid["id"] not in _realtime_threads()
    finally:
        stop.set()
        thread.join()


def test_an_svt_av1_encoder_leaves_no_real_time_thread_behind() -> None:
    from codec.enhancement.lowres_codec import LowResEncoder

    face = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    encoder = LowResEncoder(size=48, qp=55)
    try:
        for _ in range(3):
            encoder.encode(face)
        assert _realtime_threads() == []
    finally:
        encoder.close()
