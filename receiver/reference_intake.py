"""The sender's reference portrait: found in the cache or reassembled from chunks, prepared for rendering, then kept.

A hello announces the portrait (``SenderHub`` answers it with ``reference_status``); a cached one is prepared
at once, a missing one arrives as binary chunks on the control channel. A whole message is checked and
prepared in turn with the hellos (on the sender's ``SerialWorker``), and is kept (in memory and on disk) only
once it decoded and prepared. Preparation runs on the render thread (``prepare_portrait``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from codec.exceptions import BitstreamError
from codec.reference_message import ReferenceMessage, decode_portrait, unpack_reference_message
from receiver.bounded_state import RateLimitedLog
from receiver.references import ReferenceStore
from receiver.sender_link import SenderLink
from signaling import control as c

logger = logging.getLogger(__name__)
peer_log = RateLimitedLog(logger)  # what peers can repeat at will: one line per kind per 10 s


class ReferenceIntake:
    """Reference portraits from senders into ``store`` (``event``/``broadcast``: the receiver's log and its viewers)."""

    def __init__(
        self, store: ReferenceStore, prepare_portrait: Callable[[np.ndarray], Awaitable[Any]], image_size: int | None,
        event: Callable[[str, str], None], broadcast: Callable[[c.ControlMessage], None],
    ) -> None:
        self.store = store
        self._prepare_portrait = prepare_portrait  # the synthesizer's prepare, on the render thread
        self._image_size = image_size  # the synthesizer's S (None: portraits are used at their own size)
        self._event = event
        self._broadcast = broadcast

    async def use_cached(self, sender: SenderLink, content_hash: str, key: str) -> None:
        """The portrait a hello announced is cached: prepared (or found prepared) and announced ready."""
        msg = self.store.load(key)
        if self.store.state(key) is None and msg is None:  # vanished between has() and load()
            sender.send_control(c.ReferenceStatus(content_hash, False))
            return
        await self.prepare(sender, key, msg, cached=True)

    def on_chunk(self, sender: SenderLink, chunk: bytes) -> None:
        """A binary control message: one chunk of a reference message; the whole one is queued for checking."""
        try:
            whole = sender.reassembler.add(chunk)
            msg = None if whole is None else unpack_reference_message(whole)
        except BitstreamError as exc:
            sender.bad_control += 1
            peer_log.log(logging.WARNING, "bad_reference", f"{sender.link.prefix}: rejected reference data: {exc}")
            sender.send_error("bad_reference", str(exc))
            return
        finally:
            self._log_reassembly_drops(sender)
        if msg is not None:  # checked and prepared in turn with the hellos (the one that announces it comes first)
            sender.queue_job(functools.partial(self._on_reference, sender, msg))

    async def _on_reference(self, sender: SenderLink, msg: ReferenceMessage) -> None:
        if sender.hello is None or msg.cache_key != sender.key:
            sender.send_error("unexpected_reference", f"reference {msg.content_hash.hex()[:12]} was not announced by a hello")
            return
        await self.prepare(sender, msg.cache_key, msg, cached=False)

    def _log_reassembly_drops(self, sender: SenderLink) -> None:
        dropped = sender.reassembler.dropped
        if dropped > sender.reassembly_drops:
            sender.reassembly_drops = dropped
            peer_log.log(
                logging.WARNING, "reassembly_dropped",
                f"{sender.link.prefix}: dropped an incomplete reference message (too many pending; {dropped} from this sender so far)",
            )

    async def prepare(self, sender: SenderLink, key: str, msg: ReferenceMessage | None, cached: bool) -> None:
        if self.store.state(key) is None:
            if msg is None:
                return
            try:
                rgb = await asyncio.to_thread(decode_portrait, msg)
                state = await self._prepare_portrait(self._fit_portrait(rgb))
            except (BitstreamError, ValueError) as exc:
                peer_log.log(logging.ERROR, "bad_portrait", f"{sender.link.prefix}: cannot use the reference portrait: {exc}")
                sender.send_control(c.ErrorReply("bad_reference", str(exc)[:500]))
                return
            self.store.put_state(key, state)
        if not cached and msg is not None:  # decoded and prepared (now or before): only then kept, and on disk
            self.store.remember(msg)
            await asyncio.to_thread(self.store.write, msg)
        sender.ready = True
        hash_hex = key.split(":", 1)[0]
        sender.send_control(c.ReferenceReady(hash_hex, cached))
        self._event("reference_ready", f"{hash_hex[:12]} {'cached' if cached else 'received'}")
        self._broadcast(c.Status("receiving", "reference ready; rendering the sender's motion"))

    def _fit_portrait(self, rgb: np.ndarray) -> np.ndarray:
        """The sender sends an S×S face crop; anything else is resized to the synthesizer's size."""
        size = rgb.shape[0] if self._image_size is None else self._image_size
        if rgb.shape[:2] == (size, size):
            return rgb
        from PIL import Image

        return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
