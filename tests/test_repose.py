"""python -m receiver repose: a still portrait re-posed to a chosen view (random weights: plumbing only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from receiver.repose import main


def test_repose_writes_the_model_sized_png(tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "out" / "turned.png"
    assert main([str(photo), "--yaw", "20", "--pitch", "-5", "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (256, 256, 3)
    frontal = tmp_path / "frontal.png"
    assert main([str(photo), "--frontal", "--out", str(frontal)]) == 0
    assert not np.array_equal(np.asarray(Image.open(frontal)), image)


def test_repose_bad_inputs_fail_clearly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o.png")]) == 1
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert main([str(junk), "--out", str(tmp_path / "o.png")]) == 1
    assert "cannot read" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    assert main([str(blank), "--out", str(tmp_path / "o.png")]) == 1
    assert "no face" in capsys.readouterr().err
