"""The enhancement layer's rungs: a qp and how often a picture goes."""

from __future__ import annotations

import pytest

from codec.enhancement.picture_rate import LADDER, MAX_INTERVAL, PictureRate, parse_picture_rate


def test_labels_round_trip_and_forms_are_read() -> None:
    for rate in LADDER:
        assert parse_picture_rate(rate.label()) == rate
    assert parse_picture_rate("48") == parse_picture_rate("qp48") == PictureRate(48, 1)
    assert parse_picture_rate(" QP55/3 ") == PictureRate(55, 3) and PictureRate(55, 3).label() == "qp55/3"


@pytest.mark.parametrize("text, said", [("", "QP or QP/N"), ("48/x", "QP or QP/N"), ("0", "1..63"), ("64/2", "1..63"),
                                        ("48/0", "every 1st to 4th"), (f"48/{MAX_INTERVAL + 1}", "every 1st to 4th")])
def test_bad_rungs_say_the_form(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_picture_rate(text)


def test_the_ladder_goes_from_most_to_fewest_bytes() -> None:
    # a lower qp or a shorter interval costs more: each rung gives up one of them against the one above
    for upper, lower in zip(LADDER, LADDER[1:]):
        assert (lower.qp >= upper.qp and lower.interval >= upper.interval) and lower != upper
    assert LADDER[0].interval == 1 and len(set(LADDER)) == len(LADDER)
