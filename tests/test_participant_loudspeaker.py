"""participant.loudspeaker: the remotes' sound summed block by block, gaps as silence, bursts trimmed, bad outputs named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from participant.loudspeaker import BLOCK_SAMPLES, MAX_BACKLOG_MS, Loudspeaker, LoudspeakerError, Mixer


class Collect:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block: np.ndarray) -> None:
        self.blocks.append(block)


def test_blocks_sum_the_remotes_with_saturation_and_fill_gaps_with_silence() -> None:
    mixer = Mixer(Collect())  # type: ignore[arg-type]
    mixer.feed("a", np.full(BLOCK_SAMPLES * 2, 20_000, np.int16))
    mixer.feed("b", np.full(BLOCK_SAMPLES // 2, 20_000, np.int16))
    first, second = mixer.mix_block(), mixer.mix_block()
    assert first.dtype == np.int16 and first.shape == (BLOCK_SAMPLES,)
    assert first[0] == 32767 and first[-1] == 20_000  # a + b saturate; b's half block then silence
    assert (second == 20_000).all()
    assert (mixer.mix_block() == 0).all()  # both ran dry: silence, not a repeat
    assert mixer.short_blocks >= 3


def test_a_burst_is_trimmed_so_no_remote_lags_behind() -> None:
    mixer = Mixer(Collect())  # type: ignore[arg-type]
    for i in range(20):  # 20 chunks of 40 ms at once: 800 ms, more than the backlog allowed
        mixer.feed("a", np.full(1920, i, np.int16))
    kept = 48 * MAX_BACKLOG_MS
    assert mixer.trimmed_samples == 20 * 1920 - kept
    assert mixer.mix_block()[0] == 20 - kept // 1920  # the newest chunks are what is played


def test_a_wav_output_gets_the_blocks_and_a_bad_spec_is_named(tmp_path: Path) -> None:
    out = tmp_path / "mix.wav"
    speaker = Loudspeaker.open(str(out))
    for _ in range(10):
        speaker.write(np.full(BLOCK_SAMPLES, 1000, np.int16))
    speaker.close()
    import av

    with av.open(str(out)) as container:
        samples = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert samples.size == 10 * BLOCK_SAMPLES and (samples == 1000).all()
    with pytest.raises(LoudspeakerError, match="alsa:NAME"):
        Loudspeaker.open("speakers-please")
    with pytest.raises(LoudspeakerError, match="cannot open"):
        Loudspeaker.open(str(tmp_path / "missing-dir" / "x.wav"))
