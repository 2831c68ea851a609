"""How the enhancement layer spends its bits: the pictures' SVT-AV1 qp and how often a picture goes.

A rung of the layer is ``PictureRate(qp, interval)``: a picture rides with every ``interval``-th motion
frame (1 = every frame), coded at ``qp``; the frames in between render with the newest picture the
receiver has, as long as it is less than ``interval`` frames old (``codec.enhancement.bundle`` says the
interval, so the receiver knows which frames carry none on purpose and which pictures were lost).

Why pictures less often: measured on the validation people (codec.data.split; 7 clips, 100 frames,
K = 20 default quantizer, the shipped cpu-enh64 model, the pictures coded by SVT-AV1 preset 4 low-delay as
``codec.enhancement.lowres_codec`` codes them, 2026-12-07), face PSNR against the picture's payload kbps
(motion alone: 26.39 dB)::

    qp   every frame     every 2nd       every 3rd
    63   4.47  26.69     2.44  26.41     1.77  26.44
    55   5.53  27.63     3.27  27.35     2.48  27.25
    48   7.17  28.39     4.54  28.02     3.52  27.88
    40   11.26 29.20     7.59  28.77     5.94  28.41
    32   17.76 29.76     12.50 29.28     10.08 28.84

At a few kbps a sharper picture every 3rd frame beats a coarse one every frame (3.5 kbps: 27.88 dB at
qp 48 every 3rd, 26.69 at qp 63 every frame for 4.5); above ~11 kbps every frame is best. ``LADDER`` is the
upper hull of that table (the model was trained on a picture for every frame; a stale one is still mostly
right in its low frequencies, which is what it corrects). Points under the hull are left out: each change of
qp re-opens the encoder and costs a key picture. Chosen on validation people; bench rd measures it on the
test group. (With preset 10 in its real-time mode, 2026-12-06, the same table cost 1.0–1.4× these rates and
its hull had qp 48 every 2nd frame where this one has qp 40 every 3rd.)
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.enhancement.bundle import MAX_INTERVAL  # a picture at least every 4th frame (the bundle's two interval bits)
from codec.enhancement.lowres_codec import MAX_QP, MIN_QP  # SVT-AV1's crf range


@dataclass(frozen=True, order=True)
class PictureRate:
    """One rung of the enhancement layer: a picture at ``qp`` with every ``interval``-th frame."""

    qp: int
    interval: int = 1

    def __post_init__(self) -> None:
        if not MIN_QP <= self.qp <= MAX_QP:
            raise ValueError(f"an enhancement picture's qp must be in {MIN_QP}..{MAX_QP} (higher = fewer bytes), got {self.qp!r}")
        if not 1 <= self.interval <= MAX_INTERVAL:
            raise ValueError(f"a picture goes with every 1st to {MAX_INTERVAL}th frame, got interval {self.interval!r}")

    def label(self) -> str:
        """"qp48" for every frame, "qp48/3" for every 3rd (what ``parse_picture_rate`` reads)."""
        return f"qp{self.qp}" if self.interval == 1 else f"qp{self.qp}/{self.interval}"


# best first: the upper hull of the table in the module docstring
LADDER = (
    PictureRate(32, 1), PictureRate(40, 1), PictureRate(40, 2), PictureRate(40, 3),
    PictureRate(48, 3), PictureRate(55, 3), PictureRate(63, 3),
)


def parse_picture_rate(text: str) -> PictureRate:
    """"48", "qp48", "48/3" or "qp48/3" -> PictureRate; ValueError that says the form otherwise."""
    body = text.strip().lower().removeprefix("qp")
    qp_text, _, interval_text = body.partition("/")
    try:
        qp = int(qp_text)
        interval = int(interval_text) if interval_text else 1
    except ValueError:
        raise ValueError(f"an enhancement rung is QP or QP/N (a picture with every N-th frame), e.g. 48 or 48/3; got {text!r}") from None
    return PictureRate(qp, interval)
