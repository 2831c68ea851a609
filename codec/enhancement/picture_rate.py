"""How the enhancement layer spends its bits: the pictures' side, their SVT-AV1 qp and how often a picture goes.

A rung of the layer is ``PictureRate(qp, interval, size)``: a picture rides with every ``interval``-th motion
frame (1 = every frame), coded at ``qp``; the frames in between render with the newest picture the
receiver has, as long as it is less than ``interval`` frames old (``codec.enhancement.bundle`` says the
interval, so the receiver knows which frames carry none on purpose and which pictures were lost). ``size``
None is the model's own E (``ModelConfig.enhancement_size``, 64² for the shipped model, the side its branch was
trained on); the top rungs send a larger picture (``LARGER_SIZES``, up to the output's 256²). G reads any of them:
its correction compares the picture with G's output area-downscaled to the picture's side and adds back the
difference it trusts (``codec.model.enhancement_branch``), so a larger picture corrects finer detail. A receiver
announces the largest side it reads (``readable_sizes``; signaling ``capabilities``), and a sender offers no rung
above it.

Measured on the validation people (codec.data.split; 7 clips, 100 frames, K = 20 default quantizer, the shipped
cpu-enh64 model, pictures coded by SVT-AV1 preset 4 low-delay as ``codec.enhancement.lowres_codec`` codes them,
2026-12-07), face PSNR against the picture's payload kbps (motion alone: 26.39 dB). The model's own 64²::

    qp   every frame     every 2nd       every 3rd
    63   4.47  26.69     2.44  26.41     1.77  26.44
    55   5.53  27.63     3.27  27.35     2.48  27.25
    48   7.17  28.39     4.54  28.02     3.52  27.88
    40   11.26 29.20     7.59  28.77     5.94  28.41
    32   17.76 29.76     12.50 29.28     10.08 28.84

and larger pictures, read by the second correction fitted for them (``codec.train.fit_correction``; the same
model otherwise; /3, /2: every 3rd, 2nd frame)::

    side  qp 63          qp 55          qp 48          qp 40
    128   /3 2.64 26.44  9.49  29.28    14.08 30.59    24.56 31.93
                         /2 6.18 28.62  /2 9.51 29.76
                         /3 4.79 28.12
    160   /3 3.11 26.90  11.15 29.98    16.63 31.15
                         /2 7.38 29.22  /2 11.24 30.20
                         /3 5.74 28.61
    192                  13.11 30.54    19.94 31.79
    256   10.12 29.36    18.73 31.72    29.86 32.94    56.27 34.11

At the same bits a larger picture at a coarser qp beats a smaller, finer one from ~4.5 kbps up (9.5 kbps: 128² qp 48
every 2nd frame 29.76 dB; 64² qp 40 every frame 29.20 for 11.3), and at a few kbps a sharper picture every 3rd
frame beats a coarse one every frame. ``LADDER`` is the upper hull of both tables, leaving out points within 0.1 dB
of a cheaper one (the model was trained on a 64² picture for every frame; a stale one is still mostly right in its
low frequencies, which is what it corrects). Each change of qp re-opens the encoder's rate control and a change of
side opens a new stream (a key picture). Chosen on validation people; bench rd measures it on the test group.

With the first correction for every side (before the second was fitted) the larger sides gave: 128² qp 55 9.49
kbps 29.42 dB, qp 48 14.08 30.25, every 2nd frame 6.18 28.84 / 9.51 29.59, every 3rd 4.79 28.38; 160² qp 55 11.15
29.91, qp 48 16.63 30.61; 192² qp 55 13.11 30.41, qp 48 19.94 31.18; 256² qp 55 18.73 31.38, qp 48 29.86 32.09 (and
96²: qp 55 7.19 28.49, qp 48 9.99 29.19, under the hull). There G made a sharp picture worse: SVT-AV1 at 256² shown as
it decodes, with no G, gives 31.65 dB at 19.13 kbps and 33.07 at 26.41 on the same clips. The fitted correction
trusts a fresh sharp picture more (256² qp 48 +0.85 dB) and a stale one slightly less (128² qp 55 every 3rd -0.26).
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.enhancement.bundle import MAX_INTERVAL  # a picture at least every 4th frame (the bundle's two interval bits)
from codec.enhancement.lowres_codec import MAX_QP, MIN_QP  # SVT-AV1's crf range


LARGER_SIZES = (96, 128, 160, 192, 256)  # sides a picture may have beyond the model's own E (receivers announce the largest they read)


@dataclass(frozen=True)
class PictureRate:
    """One rung of the enhancement layer: a picture at ``qp`` with every ``interval``-th frame, ``size``² (None: the
    model's own E, ``ModelConfig.enhancement_size``, the side its branch was trained on)."""

    qp: int
    interval: int = 1
    size: int | None = None

    def __post_init__(self) -> None:
        if not MIN_QP <= self.qp <= MAX_QP:
            raise ValueError(f"an enhancement picture's qp must be in {MIN_QP}..{MAX_QP} (higher = fewer bytes), got {self.qp!r}")
        if not 1 <= self.interval <= MAX_INTERVAL:
            raise ValueError(f"a picture goes with every 1st to {MAX_INTERVAL}th frame, got interval {self.interval!r}")
        if self.size is not None and self.size not in LARGER_SIZES:
            raise ValueError(f"an enhancement picture is the model's own size or one of {LARGER_SIZES} pixels square, "
                             f"got {self.size!r}")

    def side(self, model_size: int) -> int:
        """The picture's side with a model whose branch reads ``model_size``² pictures."""
        return model_size if self.size is None else self.size

    def label(self) -> str:
        """"qp48" for the model's own E with every frame, "qp48/3" for every 3rd, "128:qp48/3" for a 128² picture
        (what ``parse_picture_rate`` reads)."""
        body = f"qp{self.qp}" if self.interval == 1 else f"qp{self.qp}/{self.interval}"
        return body if self.size is None else f"{self.size}:{body}"


# best first: the upper hull of the tables in the module docstring (the larger sides' with the fitted correction), with
# RUNG_KEYPOINTS keypoints (2026-12-07, late: the hull re-taken at that K)
LADDER = (
    PictureRate(40, 1, 256), PictureRate(48, 1, 256), PictureRate(55, 1, 256), PictureRate(55, 1, 192),
    PictureRate(48, 2, 160), PictureRate(48, 2, 128), PictureRate(55, 3, 160), PictureRate(55, 3, 128),
    PictureRate(48, 3), PictureRate(55, 3),
)

# Keypoints sent beside a rung's pictures: fewer than the model's K. The picture carries the expression; the keypoints
# warp the portrait's detail into place, and a few of them do most of that. Validation people (7 clips, 100 frames,
# every 2nd scored; bench rd --people val with the rungs at K = 20, 10 and 5, 2026-12-07), rate in a call with sound
# (kbps) and face PSNR, K = 20 / 10 / 5:
#
#     192² qp 55          20.37 30.39   18.78 30.11   17.97 29.95
#     160² qp 48 /2       18.16 29.43   16.57 29.16   15.74 29.00
#     128² qp 48 /2       16.38 29.06   14.79 28.80   13.98 28.66
#     160² qp 55 /3       12.42 28.62   10.83 28.36   10.03 28.21
#     128² qp 55 /3       11.46 28.12    9.87 27.86    9.06 27.72
#     64² qp 48 /3        10.15 27.86    8.57 27.34    7.76 27.06
#     64² qp 55 /3         9.08 27.22    7.49 26.71    6.69 26.42
#     64² qp 63 /3         8.35 26.42    6.76 25.88    5.95 25.62
#     160² qp 48          23.96 31.00   22.36 30.68   21.55 30.48
#
# Each K = 5 point lies on or above the line through the K = 20 points around it (192² qp 55 at K = 5 gives more than
# 160² qp 48 every 2nd frame at K = 20, for less); the ladder above is the upper hull of the K = 5 points and the 256²
# rungs (shown as decoded, where the motion serves only the frames after a lost picture: 256² qp 55 23.70 kbps
# 31.39 dB, which leaves out 160² qp 48 every frame; qp 63 14.95 28.13, under the hull). 64² qp 63 every 3rd frame
# left the ladder: at K = 5 it is below motion alone at K = 20 (6.27 kbps, 26.40 dB). AKD is the price: 1.11 px at 192²
# qp 55 with K = 20, 1.30 with 5 (motion alone 1.54).
RUNG_KEYPOINTS = 5


def rung_keypoints(num_keypoints: int) -> int:
    """How many of the model's ``num_keypoints`` keypoints' δ an enhanced rung sends (``RUNG_KEYPOINTS`` at most)."""
    return min(num_keypoints, RUNG_KEYPOINTS)


def readable_sizes(model_size: int, output_size: int) -> tuple[int, ...]:
    """The picture sides a receiver takes whose model reads ``model_size``² pictures and renders ``output_size``²: its
    own E, and the larger ones up to its output (G compares a picture with its output downscaled to the picture's side,
    ``codec.model.enhancement_branch``; a picture larger than the output would be resized down to E)."""
    return (model_size, *(s for s in LARGER_SIZES if model_size < s <= output_size))


def parse_picture_rate(text: str) -> PictureRate:
    """"48", "qp48", "48/3", "qp48/3", "128:48/3" or "128:qp48/3" -> PictureRate; ValueError that says the form
    otherwise."""
    size_text, _, body = text.strip().lower().rpartition(":")
    body = body.removeprefix("qp")
    qp_text, _, interval_text = body.partition("/")
    try:
        size = int(size_text) if size_text else None
        qp = int(qp_text)
        interval = int(interval_text) if interval_text else 1
    except ValueError:
        raise ValueError(f"an enhancement rung is [SIZE:]QP[/N] (a SIZE² picture with every N-th frame), e.g. 48, 48/3 or "
                         f"128:55/2; got {text!r}") from None
    return PictureRate(qp, interval, size)
