"""Cross-identity in bench rd: does a portrait driven by someone else keep the portrait's identity?

For ours only (a video codec cannot drive another face). Each clip's person drives the next clip's
portrait (its reference crop: another person of the same selection), with relative motion as the
receiver's ``--avatar`` does (``codec.model.retarget``), from the motion the sender would send (K = all,
the shipped path: encoder, landmark refinement, smoothing). On every ``every``-th driving frame the
render's identity descriptor (dlib's face-recognition net, ``codec.face.identity``) is compared with
the portrait's and with the driving frame's: a render that keeps the portrait's identity is nearer
the portrait than the driver (< 0.6 reads as the same person).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.codecs.base import BenchClip
from bench.codecs.ours import OursFactory
from codec.face.identity import IdentityEmbedder, optional_distance
from codec.model.retarget import retarget_relative


def cross_identity(factory: OursFactory, clips: Sequence[BenchClip], embedder: IdentityEmbedder,
                   every: int = 12) -> dict[str, Any]:
    """Mean identity distance of the renders to the portrait and to the driver, per (driver, portrait) pair."""
    if len(clips) < 2:
        return {"pairs": [], "method": "needs at least two clips (a driver and another person's portrait)"}
    pairs = []
    for index, driver in enumerate(clips):
        portrait_clip = clips[(index + 1) % len(clips)]
        portrait = portrait_clip.frames[0]
        state = factory.synthesizer.prepare(portrait)
        avatar_motion = factory.encoder.encode(portrait)
        driver_first = factory.encoder.encode(driver.frames[0])
        motions = factory.encoded(driver).motions  # frames 1..N-1, as the sender sends them
        own = _describe(embedder, portrait)
        to_portrait, to_driver = [], []
        for i in range(0, len(motions), every):
            render = np.asarray(factory.synthesizer.render(state, retarget_relative(motions[i], driver_first, avatar_motion)))
            described = _describe(embedder, render)
            to_portrait.append(optional_distance(described, own))
            to_driver.append(optional_distance(described, _describe(embedder, driver.frames[i + 1])))
        p, d = np.array(to_portrait), np.array(to_driver)
        both = np.isfinite(p) & np.isfinite(d)
        pairs.append({
            "driver": driver.clip_id, "portrait": portrait_clip.clip_id, "frames": int(p.size),
            "to_portrait": float(np.nanmean(p)) if np.isfinite(p).any() else float("nan"),
            "to_driver": float(np.nanmean(d)) if np.isfinite(d).any() else float("nan"),
            "keeps_portrait_share": float(np.mean(p[both] < d[both])) if both.any() else float("nan"),
        })
    values = {key: np.array([pair[key] for pair in pairs]) for key in ("to_portrait", "to_driver", "keeps_portrait_share")}
    return {
        "method": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
        "every": every,
        "pairs": pairs,
        "mean": {key: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for key, v in values.items()},
    }


def _describe(embedder: IdentityEmbedder, image: np.ndarray) -> np.ndarray | None:
    """The descriptor at the face HOG finds (a render has no landmarks of its own here); None when none."""
    box = embedder.find_face(image)
    return None if box is None else embedder.describe(image, box=box)
