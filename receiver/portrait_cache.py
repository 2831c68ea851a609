"""The receiver's on-disk portrait cache: packed reference messages by cache key, capped in bytes, least recently used evicted.

    cache = PortraitCache(Path("~/.cache/kpcall/references"), max_bytes=64 * 2**20)
    cache.write(key, packed)          # atomic (temp file + rename), then the oldest files go until ≤ max_bytes
    packed = cache.read(key)          # None when absent; a read marks the file as recently used (mtime)

Only messages the receiver has decoded and prepared are written (``Receiver`` validates first), so a
sender cannot fill the disk with junk; a sender can still announce many valid portraits, hence the cap.
Recency is the file's mtime, so it survives restarts; a file bigger than the whole cap is not kept.
Safe to call from worker threads (one lock). Eviction: ``codec.lru_files``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from codec.lru_files import LruFiles

logger = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_BYTES = 64 * 1024 * 1024  # ~2,000 typical portraits (20-40 KB), or 16 of the largest (4 MiB)
SUFFIX = ".kpref"


class PortraitCache:
    """Files ``<sha256(key)[:32]>.kpref`` in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"the portrait cache size must be ≥ 1 byte, got {max_bytes}: use --no-cache to keep none")
        self.dir = directory
        self.max_bytes = max_bytes
        self._files = LruFiles(directory, SUFFIX, max_bytes, "portrait cache")
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + SUFFIX)

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(self, key: str) -> bytes | None:
        """The packed message, or None; marks it recently used. OSError passes (the caller drops the entry)."""
        path = self.path(key)
        with self._lock:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            self._files.touch(path)
        return data

    def remove(self, key: str) -> None:
        with self._lock:
            self.path(key).unlink(missing_ok=True)

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` atomically, then evict least recently used files until the cache is ≤ ``max_bytes``."""
        if len(data) > self.max_bytes:
            logger.warning("not caching a %d-byte portrait: the cache holds at most %d bytes (--cache-max-mb)", len(data), self.max_bytes)
            return
        path = self.path(key)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._files.evict(keep=path)

    def size_bytes(self) -> int:
        return self._files.size_bytes()

    @property
    def evicted(self) -> int:
        return self._files.evicted
