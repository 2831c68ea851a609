"""python -m participant's flags: which model renders the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import participant.__main__ as cli


@pytest.mark.parametrize("flags,expected", [
    ([], None),
    (["--weights", "a.safetensors"], Path("a.safetensors")),
    (["--weights", "a.safetensors", "--render-weights", "web.safetensors"], Path("web.safetensors")),
])
def test_the_others_are_rendered_by_render_weights_else_weights(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                                expected: Path | None) -> None:
    loaded: list[Any] = []
    monkeypatch.setattr(cli, "load_synthesizer", lambda weights, device, cache_dir: loaded.append(weights) or object())
    sender_weights: list[Any] = []
    monkeypatch.setattr(cli, "create_sender", lambda args, signaling: sender_weights.append(args.weights) or object())
    participant = cli.create_participant(cli.build_parser().parse_args(["--no-cache", *flags]))
    assert loaded == [expected] and participant.sender is not None
    assert sender_weights == [Path(flags[1]) if flags else None]  # the sender keeps --weights (the motion's model)
