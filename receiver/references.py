"""Portraits the receiver holds, by cache key (content hash + model id + version): prepared states in
memory, reference messages on disk, so a returning sender's portrait is never sent twice."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from codec.exceptions import BitstreamError
from codec.reference_message import ReferenceMessage, pack_reference_message, unpack_reference_message

logger = logging.getLogger(__name__)


def cache_key(content_hash_hex: str, model_id: str, model_version: str) -> str:
    """The same key as ``ReferenceMessage.cache_key``."""
    return f"{content_hash_hex}:{model_id}:{model_version}"


class ReferenceStore:
    """Prepared ReferenceStates (memory, LRU) and packed reference messages (``cache_dir``, optional)."""

    def __init__(self, cache_dir: Path | None, max_states: int = 8) -> None:
        self.dir = None if cache_dir is None else cache_dir / "references"
        self.max_states = max_states
        self._states: OrderedDict[str, Any] = OrderedDict()
        self._messages: OrderedDict[str, ReferenceMessage] = OrderedDict()

    def _path(self, key: str) -> Path | None:
        return None if self.dir is None else self.dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kpref")

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
        path = self._path(key)
        return path is not None and path.is_file()

    def save(self, msg: ReferenceMessage) -> None:
        """Keep the message (memory; and disk when a cache directory is set, written atomically)."""
        self._messages[msg.cache_key] = msg
        while len(self._messages) > self.max_states:
            self._messages.popitem(last=False)
        path = self._path(msg.cache_key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(pack_reference_message(msg))
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot cache the reference portrait in %s: %s", path.parent, exc)

    def load(self, key: str) -> ReferenceMessage | None:
        """The held message for ``key`` (memory first, then disk; a corrupt file is removed)."""
        msg = self._messages.get(key)
        if msg is not None:
            return msg
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            msg = unpack_reference_message(path.read_bytes())
        except (OSError, BitstreamError) as exc:
            logger.warning("dropping unreadable cached reference %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        if msg.cache_key != key:
            logger.warning("cached reference %s holds %s, not %s: dropping it", path, msg.cache_key, key)
            path.unlink(missing_ok=True)
            return None
        self._messages[key] = msg
        return msg
