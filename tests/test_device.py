"""--device and --weights of the receiver, the demo, bench call and bench speed (issue 26), on a CPU.

auto picks CUDA when torch sees it, else the CPU; an explicit cuda where there is none fails before any model is
built, saying why and what to do. A model file of any preset loads with the preset its metadata names. The CUDA
side of this is in tests/test_gpu.py (marked gpu).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig, checkpoint
from codec.model.loading import pick_device


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine as a CPU-only one, whatever this one is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file of the 'tiny' preset (64², random weights): not the default preset."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), path)
    return path


def test_auto_is_the_cpu_without_cuda(no_cuda: None) -> None:
    assert pick_device("auto") == pick_device(None) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_says_why_and_what_to_do(no_cuda: None) -> None:
    with pytest.raises(ValueError, match=r"device cuda: CUDA is not available: .*--device cpu"):
        pick_device("cuda")
    if torch.version.cuda is None:  # the pinned CPU wheel: the message points at the CUDA wheel
        with pytest.raises(ValueError, match="CPU-only build: install the CUDA wheel"):
            pick_device("cuda:0")


def test_a_cuda_index_beyond_the_devices_and_a_bad_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"1 CUDA device\(s\), cuda:0 to cuda:0"):
        pick_device("cuda:1")
    with pytest.raises(ValueError, match="not a torch device: use auto"):
        pick_device("gpu")


def test_receiver_with_cuda_where_there_is_none_exits_2_with_the_reason(
        no_cuda: None, caplog: pytest.LogCaptureFixture) -> None:
    from receiver.__main__ import main

    with caplog.at_level(logging.ERROR):
        assert main(["--device", "cuda", "--no-cache", "--signaling", "http://127.0.0.1:9"]) == 2
    assert "CUDA is not available" in caplog.text


def test_receiver_and_demo_take_a_model_file_of_any_preset(tiny_weights: Path) -> None:
    from receiver.__main__ import add_receiver_arguments, load_synthesizer
    from participant.demo import build_parser

    receiver_parser = argparse.ArgumentParser()
    add_receiver_arguments(receiver_parser)
    for args in (receiver_parser.parse_args(["--weights", str(tiny_weights)]),
                 build_parser().parse_args(["--weights", str(tiny_weights)])):
        assert args.device == "auto"
        synth = load_synthesizer(args.weights, "cpu", None)
        assert (synth.info.preset, synth.image_size, synth.info.weights, synth.is_trained) == ("tiny", 64, str(tiny_weights), True)
        assert synth.device == torch.device("cpu")


def test_demo_with_cuda_where_there_is_none_fails_with_the_reason(
        no_cuda: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import participant.demo as demo

    monkeypatch.setattr(demo, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    with caplog.at_level(logging.ERROR):
        assert demo.main(["--device", "cuda", "--port", "0", "--static-dir", str(tmp_path)]) == 1
    assert "demo cannot start" in caplog.text and "CUDA is not available" in caplog.text


def test_demo_runs_a_call_on_a_model_file_of_another_preset(
        tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole demo (server, receiver, sender) for a few seconds on the tiny file, on the CPU."""
    import participant.demo as demo

    monkeypatch.setattr(demo, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    argv = ["--weights", str(tiny_weights), "--device", "cpu", "--port", "0", "--seconds", "6", "--host-candidates", "loopback"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    stopped = next(line for line in out.splitlines() if line.startswith("kpcall demo stopped"))
    assert int(stopped.split(":")[1].split()[0]) > 0, out  # frames out


def test_demo_for_a_browser_receiver_runs_no_python_receiver_and_points_to_receive_html(
        tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import participant.demo as demo

    monkeypatch.setattr(demo, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(demo, "Receiver", lambda *a, **k: pytest.fail("the browser is the receiver: no Python one"))
    argv = ["--weights", str(tiny_weights), "--device", "cpu", "--port", "0", "--seconds", "3", "--host-candidates", "loopback",
            "--browser-receiver", "--no-audio"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "/receive.html?room=demo" in out and "frames sent to 0 browser receiver(s)" in out, out


def _speed_args(*argv: str) -> argparse.Namespace:
    from bench.speed import add_speed_parser

    parser = argparse.ArgumentParser()
    add_speed_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["speed", "--runs", "2", "--warmup", "1", "--threads", "1", *argv])


def test_bench_speed_measures_a_model_file_with_its_own_preset(tiny_weights: Path, tmp_path: Path) -> None:
    from bench.speed import run_speed_from_args

    out = tmp_path / "speed.json"
    assert run_speed_from_args(_speed_args("--weights", str(tiny_weights), "--device", "cpu", "--json", str(out))) == 0
    presets = json.loads(out.read_text())["presets"]
    assert list(presets) == [f"tiny:{tiny_weights}"]  # no default presets when only files are asked for
    result = presets[f"tiny:{tiny_weights}"]
    assert (result["preset"], result["image_size"], result["weights"], result["device"]) == ("tiny", 64, str(tiny_weights), "cpu")
    assert result["encode_precision"] == "fp32" and result["render_ms"] > 0


def test_bench_speed_and_call_refuse_cuda_where_there_is_none(no_cuda: None, caplog: pytest.LogCaptureFixture) -> None:
    from bench.__main__ import main as bench_main

    with caplog.at_level(logging.ERROR):
        assert bench_main(["speed", "--presets", "tiny", "--device", "cuda"]) == 2
        assert bench_main(["call", "--device", "cuda", "--seconds", "1"]) == 2
    assert caplog.text.count("CUDA is not available") == 2


def test_bench_speed_refuses_a_file_that_is_not_a_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bench.speed import run_speed_from_args

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with caplog.at_level(logging.ERROR):
        assert run_speed_from_args(_speed_args("--weights", str(bad), "--device", "cpu")) == 2
    assert "not a readable safetensors file" in caplog.text
