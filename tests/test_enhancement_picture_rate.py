"""The enhancement layer's rungs: a qp and how often a picture goes."""

from __future__ import annotations

import pytest

from codec.enhancement.picture_rate import LADDER, LARGER_SIZES, MAX_INTERVAL, PictureRate, parse_picture_rate, readable_sizes


def test_labels_round_trip_and_forms_are_read() -> None:
    for rate in LADDER:
        assert parse_picture_rate(rate.label()) == rate
    assert parse_picture_rate("48") == parse_picture_rate("qp48") == PictureRate(48, 1)
    assert parse_picture_rate(" QP55/3 ") == PictureRate(55, 3) and PictureRate(55, 3).label() == "qp55/3"
    assert parse_picture_rate("128:55/2") == parse_picture_rate("128:qp55/2") == PictureRate(55, 2, 128)
    assert PictureRate(55, 2, 128).label() == "128:qp55/2" and PictureRate(55, 2, 128).side(64) == 128
    assert PictureRate(55).side(64) == 64  # no size of its own: the model's E


@pytest.mark.parametrize("text, said", [("", "QP"), ("48/x", r"\[SIZE:\]QP\[/N\]"), ("0", "1..63"), ("64/2", "1..63"),
                                        ("48/0", "every 1st to 4th"), (f"48/{MAX_INTERVAL + 1}", "every 1st to 4th"),
                                        ("100:48", "model's own size or one of"), ("x:48", "SIZE"), ("64:48", "model's own")])
def test_bad_rungs_say_the_form(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_picture_rate(text)


def test_the_ladder_has_distinct_rungs_and_ends_with_the_models_own_picture() -> None:
    # the order by bytes is the measured one (the controller's priors check it, tests/test_sender_controller.py)
    assert len(set(LADDER)) == len(LADDER) and LADDER[0].interval == 1
    assert LADDER[-1].size is None and all(rate.size in (None, *LARGER_SIZES) for rate in LADDER)


def test_a_receiver_reads_its_own_size_and_larger_ones_up_to_its_output() -> None:
    assert readable_sizes(64, 256) == (64, 96, 128, 160, 192, 256)
    assert readable_sizes(64, 128) == (64, 96, 128)
    assert readable_sizes(16, 64) == (16,)  # the test models: no larger picture fits their output
