"""The keypoint calibration's child process on a CPU: ``python -m sender.calibration_worker`` (started by
``sender.calibration``), the job (``sender.calibration_job.CalibrationJob``, with the model's config and weights) pickled
on stdin, its ``CalibrationOutcome`` (or error) pickled on stdout.

It drops to idle CPU priority (Linux's SCHED_IDLE, else nice 19) in its first lines, before it imports numpy, torch
and the model, so that even its start-up (seconds of imports and unpickling) takes only the cycles the call leaves. A
``multiprocessing`` child could not: spawning re-imports the parent's main module (the sender CLI: aiortc, torch, the
model) at normal priority before the target runs. It dies with its parent (Linux's PR_SET_PDEATHSIG).
"""

import os
import signal
import sys


def lower_priority() -> None:
    """Idle CPU priority for this process, and SIGTERM when its parent goes (where the OS allows)."""
    try:
        os.nice(19)
    except (OSError, AttributeError):
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass
    try:  # Linux: SIGTERM when the parent goes, however it goes
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    import io
    import pickle

    request = pickle.loads(sys.stdin.buffer.read())  # from our own parent only: a pipe it opened
    try:
        import torch

        from codec.model.face_model import FaceVid2VidModel
        from sender.calibration_job import run_job

        if request["threads"] is not None:
            torch.set_num_threads(request["threads"])
        model = FaceVid2VidModel(request["config"])
        model.load_state_dict(torch.load(io.BytesIO(request["weights"]), weights_only=True))
        model.eval()
        result: object = run_job(model, request["job"])
    except Exception as exc:  # noqa: BLE001 - reported to the sender, which logs it and sends motion as it is
        result = RuntimeError(f"{type(exc).__name__}: {exc}")
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    lower_priority()  # before main's imports
    sys.exit(main())
