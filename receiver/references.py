"""Portraits the receiver holds, by cache key (content hash + model id + version): prepared states in
memory, reference messages on disk, so a returning sender's portrait is never sent twice."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from codec.exceptions import BitstreamError
from codec.reference_message import ReferenceMessage, pack_reference_message, unpack_reference_message
from receiver.portrait_cache import DEFAULT_CACHE_MAX_BYTES, PortraitCache

logger = logging.getLogger(__name__)


def cache_key(content_hash_hex: str, model_id: str, model_version: str) -> str:
    """The same key as ``ReferenceMessage.cache_key``."""
    return f"{content_hash_hex}:{model_id}:{model_version}"


class ReferenceStore:
    """Prepared ReferenceStates (memory, LRU) and packed reference messages (memory, LRU; and on disk in
    ``cache_dir``, capped at ``cache_max_bytes`` with least recently used eviction: ``receiver.portrait_cache``).

    ``save`` is for validated messages only (the receiver decodes and prepares a portrait first)."""

    def __init__(self, cache_dir: Path | None, max_states: int = 8, cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.disk = None if cache_dir is None else PortraitCache(cache_dir / "references", cache_max_bytes)
        self.dir = None if self.disk is None else self.disk.dir
        self.max_states = max_states
        self._states: OrderedDict[str, Any] = OrderedDict()
        self._messages: OrderedDict[str, ReferenceMessage] = OrderedDict()

    def state(self, key: str) -> Any | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put_state(self, key: str, state: Any) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)

    def has(self, key: str) -> bool:
        """True when the portrait is held (prepared, in memory or on disk)."""
        if key in self._states or key in self._messages:
            return True
        return self.disk is not None and self.disk.has(key)

    def remember(self, msg: ReferenceMessage) -> None:
        """Keep a validated message in memory (the newest ``max_states``)."""
        self._messages[msg.cache_key] = msg
        self._messages.move_to_end(msg.cache_key)
        while len(self._messages) > self.max_states:
            self._messages.popitem(last=False)

    def write(self, msg: ReferenceMessage) -> None:
        """Write a validated message to the disk cache (blocking: call it from a worker thread); never raises OSError."""
        if self.disk is None:
            return
        try:
            self.disk.write(msg.cache_key, pack_reference_message(msg))
        except OSError as exc:
            logger.warning("cannot cache the reference portrait in %s: %s", self.disk.dir, exc)

    def save(self, msg: ReferenceMessage) -> None:
        """``remember`` and ``write``."""
        self.remember(msg)
        self.write(msg)

    def load(self, key: str) -> ReferenceMessage | None:
        """The held message for ``key`` (memory first, then disk; a corrupt file is removed)."""
        msg = self._messages.get(key)
        if msg is not None:
            return msg
        if self.disk is None:
            return None
        path = self.disk.path(key)
        try:
            data = self.disk.read(key)
            if data is None:
                return None
            msg = unpack_reference_message(data)
        except (OSError, BitstreamError) as exc:
            logger.warning("dropping unreadable cached reference %s: %s", path, exc)
            self.disk.remove(key)
            return None
        if msg.cache_key != key:
            logger.warning("cached reference %s holds %s, not %s: dropping it", path, msg.cache_key, key)
            self.disk.remove(key)
            return None
        self.remember(msg)
        return msg
