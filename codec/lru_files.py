"""A directory of cache files capped in bytes, the least recently used removed first (the receiver's portrait
cache and the synthesizer's prepared-state cache).

    files = LruFiles(directory, ".kpref", max_bytes=64 * 2**20)
    files.touch(path)                  # used now (a read): the file's mtime, so recency survives restarts
    removed = files.evict(keep=path)   # after a write: oldest first until the files total ≤ max_bytes

Only files ending in ``suffix`` count. A ``.tmp`` file older than ``STALE_TEMP_S`` is a crashed write and is
removed on the way. Callers serialize their own writes (each cache holds one lock).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STALE_TEMP_S = 3600.0  # a temp file this old is a crashed write: removed on the next eviction


class LruFiles:
    """The ``*suffix`` files of ``directory``, at most ``max_bytes`` in all after ``evict``."""

    def __init__(self, directory: Path, suffix: str, max_bytes: int, what: str) -> None:
        if max_bytes < 1:
            raise ValueError(f"the {what} size must be ≥ 1 byte, got {max_bytes}")
        self.dir = directory
        self.suffix = suffix
        self.max_bytes = max_bytes
        self.what = what  # "portrait cache": for log lines
        self.evicted = 0

    @staticmethod
    def touch(path: Path) -> None:
        """Mark ``path`` as just used (FileNotFoundError passes)."""
        os.utime(path)

    def entries(self) -> list[tuple[float, int, Path]]:
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
            if path.name.endswith(self.suffix):
                out.append((st.st_mtime, st.st_size, path))
            elif path.suffix == ".tmp" and now - st.st_mtime > STALE_TEMP_S:
                path.unlink(missing_ok=True)
        out.sort()
        return out

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Path | None = None) -> int:
        """Remove the least recently used files (never ``keep``) until the rest total ≤ ``max_bytes``; how many went."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
            logger.info("%s over %d bytes: evicted the least recently used %s", self.what, self.max_bytes, path.name)
        self.evicted += removed
        return removed
