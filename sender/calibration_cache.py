"""The sender's keypoint calibrations kept across calls, one per (motion model, portrait).

    cache = CalibrationCache(DEFAULT_DIR)               # the sender's --calibration-cache (default)
    offset = cache.load(model_id, portrait_hash)        # (K, 3) float32, or None
    cache.store(model_id, portrait_hash, offset)

The fit (``codec.model.keypoint_calibration``) costs a few seconds of a GPU or, on a CPU, many seconds shared with the
call; its offset depends on the person on camera, the portrait and the model. The calibrator only fits when the
portrait shows the person on camera, so the next call with the same portrait and model is that person again: it
checks the kept offset on its own first frames (two renders) and applies it at once instead of fitting again
(``sender.calibration``). Files: ``<sha256 of model id and portrait hash>.kpcal.npz`` with the offset and both keys;
at most ``MAX_BYTES`` in all, the least recently used removed first (``codec.lru_files``). A file that cannot be read
or does not match its keys is ignored (and replaced by the next store).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from codec.lru_files import LruFiles

logger = logging.getLogger(__name__)

SUFFIX = ".kpcal.npz"
MAX_BYTES = 4 * 2**20  # ~1 KB each: thousands of portraits
DEFAULT_DIR = Path.home() / ".cache" / "kpcall" / "calibration"  # beside the receiver's portrait cache


class CalibrationCache:
    """Offsets (K, 3) float32 by (model id, portrait hash), as files under ``directory`` (created on the first store)."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES) -> None:
        self.dir = Path(directory)
        self._files = LruFiles(self.dir, SUFFIX, max_bytes, "calibration cache")
        self._lock = threading.Lock()

    def path(self, model_id: str, portrait_hash: str) -> Path:
        key = hashlib.sha256(f"{model_id}\n{portrait_hash}".encode()).hexdigest()[:32]
        return self.dir / f"{key}{SUFFIX}"

    def load(self, model_id: str, portrait_hash: str) -> np.ndarray | None:
        """The offset kept for this model and portrait, or None (none kept, or a file that does not read as one)."""
        path = self.path(model_id, portrait_hash)
        try:
            with np.load(path, allow_pickle=False) as data:
                offset = np.asarray(data["offset"], np.float32)
                keys = (str(data["model_id"]), str(data["portrait_hash"]))
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            logger.warning("calibration cache: %s does not read (%s); fitting again", path.name, exc)
            return None
        if keys != (model_id, portrait_hash) or offset.ndim != 2 or offset.shape[1] != 3 or not np.all(np.isfinite(offset)):
            logger.warning("calibration cache: %s is not this model's and portrait's offset; fitting again", path.name)
            return None
        try:
            self._files.touch(path)
        except OSError:
            pass
        return offset

    def store(self, model_id: str, portrait_hash: str, offset: np.ndarray) -> Path:
        """Keep ``offset`` (K, 3) for this model and portrait (written under a temporary name, then renamed)."""
        offset = np.asarray(offset, np.float32)
        if offset.ndim != 2 or offset.shape[1] != 3 or not np.all(np.isfinite(offset)):
            raise ValueError(f"a calibration offset is (K, 3) finite numbers, got {offset.shape}")
        path = self.path(model_id, portrait_hash)
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(temp, "wb") as file:
                np.savez(file, offset=offset, model_id=np.str_(model_id), portrait_hash=np.str_(portrait_hash))
            os.replace(temp, path)
            self._files.evict(keep=path)
        return path
