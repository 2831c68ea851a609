"""python -m sender's flags: --enhancement-qp takes a qp, "off" or "auto"."""

from __future__ import annotations

import argparse

import pytest

from sender.__main__ import add_sender_arguments


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sender_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("flag", "qp"), [(None, None), ("auto", None), ("55", 55), ("off", 0), ("OFF", 0), ("0", 0)])
def test_enhancement_qp_flag(flag: str | None, qp: int | None) -> None:
    args = _parse() if flag is None else _parse("--enhancement-qp", flag)
    assert args.enhancement_qp == qp


@pytest.mark.parametrize(("flag", "message"), [
    ("64", "qp 64 is outside 1-63: give 1-63 (higher = fewer bytes), 'off' or 'auto'"),
    ("-1", "qp -1 is outside 1-63: give 1-63 (higher = fewer bytes), 'off' or 'auto'"),
    ("high", "invalid qp 'high': give 1-63, 'off' or 'auto'"),
])
def test_enhancement_qp_flag_rejects(flag: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(f"--enhancement-qp={flag}")
    assert f"argument --enhancement-qp: {message}" in capsys.readouterr().err
