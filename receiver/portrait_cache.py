"""The receiver's on-disk portrait cache: packed reference messages by cache key, capped in bytes, least recently used evicted.

    cache = PortraitCache(Path("~/.cache/kpcall/references"), max_bytes=64 * 2**20)
    cache.write(key, packed)          # atomic (temp file + rename), then the oldest files go until ≤ max_bytes
    packed = cache.read(key)          # None when absent; a read marks the file as recently used (mtime)

Only messages the receiver has decoded and prepared are written (``Receiver`` validates first), so a
sender cannot fill the disk with junk; a sender can still announce many valid portraits, hence the cap.
Recency is the file's mtime, so it survives restarts; a file bigger than the whole cap is not kept.
Safe to call from worker threads (one lock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CACHE_MAX_BYTES = 64 * 1024 * 1024  # ~2,000 typical portraits (20-40 KB), or 16 of the largest (4 MiB)
SUFFIX = ".kpref"
STALE_TEMP_S = 3600.0  # a temp file this old is a crashed write: removed on the next eviction


class PortraitCache:
    """Files ``<sha256(key)[:32]>.kpref`` in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"the portrait cache size must be ≥ 1 byte, got {max_bytes}: use --no-cache to keep none")
        self.dir = directory
        self.max_bytes = max_bytes
        self.evicted = 0
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
            os.utime(path)
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
            self._evict(keep=path)

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached file, oldest first; stale temp files removed on the way."""
        out: list[tuple[float, int, Path]] = []
        now = time.time()
        try:
            names = list(self.dir.iterdir())
        except FileNotFoundError:
            return out
        for path in names:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if path.suffix == SUFFIX:
                out.append((st.st_mtime, st.st_size, path))
            elif path.suffix == ".tmp" and now - st.st_mtime > STALE_TEMP_S:
                path.unlink(missing_ok=True)
        out.sort()
        return out

    def _evict(self, keep: Path) -> None:
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            self.evicted += 1
            logger.info("portrait cache over %d bytes: evicted the least recently used %s", self.max_bytes, path.name)
