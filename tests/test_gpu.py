"""The path a user with an NVIDIA GPU takes (issue 26): render, train and call on CUDA. Marked gpu, skipped without CUDA.

    pytest -m gpu tests/test_gpu.py          # needs a CUDA build of torch (README, 'GPU') and a GPU

- The shipped weights render on CUDA what they render on the CPU in fp32: fp16 ('auto' on CUDA) and fp32 (TF32
  convolutions where the card has them) each at PSNR ≥ 40 dB per frame; the motion encoder stays fp32 on CUDA.
- One paper-256 training step (D and G updates with every loss term on) at 256² on CUDA, batch 2 of the synthetic
  training set: finite losses, the generator's weights move.
- A loopback WebRTC call (the helpers of tests/test_call.py) with the shipped weights rendering on CUDA.

None of this has run on a GPU yet (no GPU was available when it was written); the CPU side of each is tested in
tests/test_device*.py, tests/test_train_loop.py and tests/test_call.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec.model.loading import default_weights_path
from codec.model.wrappers import FrameSynthesizer, MotionEncoder
from codec.motion import MotionParams
from signaling.server import RunningServer
from tests.test_call import FPS, LOOPBACK, run_call, server  # noqa: F401 - server is the call tests' fixture
from tests.test_device_precision import assert_matches, reference_and_motions, render_all, shipped_encoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs CUDA: torch.cuda.is_available() is False (no NVIDIA GPU, or the CPU-only torch wheel; "
                              "README, 'GPU')"),
]

CUDA = torch.device("cuda")


@pytest.mark.pretrained
def test_render_on_cuda_matches_the_cpu() -> None:
    encoder = shipped_encoder()  # on the CPU, fp32: the motions both sides render
    reference, motions = reference_and_motions(encoder)
    exact = render_all(FrameSynthesizer(encoder.model, info=encoder.info, precision="fp32"), reference, motions)
    path = default_weights_path()
    fp16 = FrameSynthesizer(path, device="cuda")
    assert (fp16.device.type, fp16.precision, fp16.model_id) == ("cuda", "fp16", encoder.model_id)
    assert_matches(render_all(fp16, reference, motions), exact, "fp16 on CUDA")
    fp32 = FrameSynthesizer(fp16.model, info=fp16.info, precision="fp32")
    assert_matches(render_all(fp32, reference, motions), exact, "fp32 on CUDA")
    assert MotionEncoder(fp16.model, info=fp16.info).precision == "fp32"  # the encoder stays fp32 on CUDA


def test_a_paper_256_training_step_on_cuda(tmp_path: Path) -> None:
    from codec.train.__main__ import Trainer, resolve_precision
    from codec.train.config import TrainConfig
    from tests._train_fakes import write_fake_prepared

    data = write_fake_prepared(tmp_path / "data", size=256)
    config = TrainConfig(preset="paper-256", data=str(data), batch_size=2)
    precision = resolve_precision("auto", CUDA)
    assert precision == "fp32"  # 'auto' trains the GAN in fp32 on CUDA
    trainer = Trainer(config, tmp_path / "run", CUDA, precision)
    assert next(trainer.model.parameters()).is_cuda and next(trainer.disc.parameters()).is_cuda
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch = trainer.sampler.sample(trainer.rng).to(CUDA)
    assert batch.drv.shape == (2, 3, 256, 256)
    result = trainer.step(batch, config.gan_start_step)  # every term on, the GAN's included
    assert "skipped" not in result and "generator_frozen" not in result, result
    assert all(np.isfinite(v) for v in result.values()), result
    assert result["gan"] != 0.0 and result["lr_factor"] > 0
    moved = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert moved > len(before) // 2, f"only {moved} of {len(before)} generator tensors changed"


@pytest.mark.pretrained
async def test_a_loopback_call_rendering_on_cuda(server: RunningServer, tmp_path: Path) -> None:  # noqa: F811
    """tests/test_call.py's real-synthesizer call, with the shipped 256² weights on CUDA instead of the tiny preset."""
    import av

    from receiver.session import Receiver, ReceiverConfig
    from sender.portrait import default_portrait, make_reference
    from sender.session import Sender, SenderConfig
    from sender.sources import TraceSource

    synth = FrameSynthesizer(default_weights_path(), device="cuda", cache_dir=tmp_path / "states")
    assert (synth.device.type, synth.precision, synth.image_size) == ("cuda", "fp16", 256)
    warm = synth.prepare(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    synth.render(warm, MotionParams.neutral(synth.num_keypoints))  # CUDA kernels load on first use, not in the call
    reference = make_reference(default_portrait(), synth.image_size, synth.model_id, synth.model_version)
    frames = 50
    record = tmp_path / "cuda.mp4"
    receiver = Receiver(ReceiverConfig(server.url, "cuda", rtc=LOOPBACK, max_frames=frames, record=record), synth)
    source = TraceSource(FPS, num_keypoints=synth.num_keypoints, max_frames=frames + 25)
    sender = Sender(SenderConfig(server.url, "cuda", rtc=LOOPBACK), source, reference)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    report = receiver.report()
    # ≥: the call stops when output frame ``frames`` is delivered; frames emitted while a render was running come too
    assert report["frames_output"] >= frames and report["render_errors"] == 0, report
    assert report["frames_concealed"] <= 3, report
    assert report["frames_rendered"] >= frames // 2, report  # latest wins if a render is slow; the recording repeats
    with av.open(str(record)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(decoded) >= frames and decoded[0].shape == (256, 256, 3)
    assert float(np.std(decoded[-1])) > 5  # a picture, not a flat frame
