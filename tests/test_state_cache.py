"""The model's prepared-state cache (CACHE_DIR/states): capped in bytes, least recently used evicted (issue 22, item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.lru_files import STALE_TEMP_S, LruFiles
from codec.model import PRESETS, FaceVid2VidModel, FrameSynthesizer
from receiver.__main__ import add_receiver_arguments, create_receiver


@pytest.fixture(scope="module")
def tiny_model() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(PRESETS["tiny"]).eval()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _states(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.glob("*.safetensors")}


def test_prepared_states_are_capped_and_the_least_recently_used_go(tiny_model: FaceVid2VidModel, tmp_path: Path) -> None:
    FrameSynthesizer(tiny_model, cache_dir=tmp_path).prepare(_image(0))
    one = next(iter(_states(tmp_path).values()))
    synth = FrameSynthesizer(tiny_model, cache_dir=tmp_path, cache_max_bytes=3 * one + one // 2)  # room for 3
    assert synth.cache is not None
    names = []
    for seed in range(6):  # a peer sending ever new portraits
        synth.prepare(_image(seed))
        path = synth.cache.path(synth.prepare(_image(seed)).image_hash, synth.model_id)
        names.append(path.name)
        os.utime(path, (1000.0 + seed, 1000.0 + seed))  # a distinct age each, whatever the clock's grain
        if seed == 3:
            synth.prepare(_image(1))  # loaded from disk: used again, the newest now
    held = _states(tmp_path)
    assert sum(held.values()) <= 3 * one + one // 2 and len(held) == 3
    assert set(held) == {names[1], names[4], names[5]}
    assert synth.cache.files.evicted == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_a_state_bigger_than_the_cap_is_not_written(tiny_model: FaceVid2VidModel, tmp_path: Path) -> None:
    synth = FrameSynthesizer(tiny_model, cache_dir=tmp_path, cache_max_bytes=1000)
    state = synth.prepare(_image(0))
    assert _states(tmp_path) == {} and state.image_hash  # still prepared, just not kept


def test_stale_temp_files_are_removed_and_other_files_left(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(bytes(10))
    stale, fresh, other = tmp_path / "b.safetensors.tmp", tmp_path / "c.safetensors.tmp", tmp_path / "notes.txt"
    for p in (stale, fresh, other):
        p.write_bytes(bytes(10))
    os.utime(stale, (1.0, 1.0))
    files = LruFiles(tmp_path, ".safetensors", 100, "test cache")
    assert files.size_bytes() == 10
    assert not stale.exists() and fresh.exists() and other.exists()
    assert STALE_TEMP_S >= 60
    with pytest.raises(ValueError, match="size must be ≥ 1 byte"):
        LruFiles(tmp_path, ".x", 0, "test cache")


def test_receiver_cli_passes_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import receiver.__main__ as cli

    seen: list[object] = []
    monkeypatch.setattr(cli, "load_synthesizer", lambda weights, device, cache_dir, cap=None: seen.append((cache_dir, cap)) or object())
    monkeypatch.setattr(cli, "Receiver", lambda config, synth: None)
    parser = argparse.ArgumentParser()
    add_receiver_arguments(parser)
    create_receiver(parser.parse_args(["--cache-dir", str(tmp_path), "--state-cache-max-mb", "2"]))
    create_receiver(parser.parse_args(["--cache-dir", str(tmp_path)]))
    assert seen == [(tmp_path, 2 * 2**20), (tmp_path, None)]
    with pytest.raises(ValueError, match="--state-cache-max-mb must be > 0"):
        create_receiver(parser.parse_args(["--state-cache-max-mb", "0"]))
