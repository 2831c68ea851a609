"""The receiver's settings: one frozen dataclass whose field comments are the CLI help (``receiver.__main__``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from receiver.portrait_cache import DEFAULT_CACHE_MAX_BYTES
from signaling.rtc import RtcOptions


@dataclass(frozen=True)
class ReceiverConfig:
    """Receiver settings; the field comments are the CLI help."""

    signaling_url: str  # the signaling server, http://HOST:PORT
    room: str = "demo"  # room to join
    token: str | None = field(default=None, repr=False)  # the room's shared secret, if it has one
    rtc: RtcOptions = RtcOptions()
    record: Path | None = None  # write the synthesized video to this MP4
    show: bool = False  # show the synthesized video in a window
    view: str | None = None  # "frontal" or "yaw=..,pitch=..,roll=.." (free view); None: the sender's
    avatar: Path | None = None  # drive this portrait with the sender's motion (cross-identity)
    cache_dir: Path | None = None  # keep received portraits here (no re-send on the next call)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # disk cap of that cache; the least recently used portraits go first
    max_frames: int | None = None  # stop after this many output frames
    exit_when_sender_leaves: bool = False  # end when the active sender leaves (default: wait for another)
    reconnect: bool = True  # join the signaling server again when it goes away (the call carries on meanwhile)
    feedback_interval_ms: float = 1000.0  # acks at most this often (each costs the sender a 93-byte SACK on the wire)
    report_interval_s: float = 5.0  # delay reports to the sender (each costs it a SACK too)
    stats_interval_s: float = 1.0  # stats to viewers
    max_delay_ms: float = 500.0  # jitter-buffer ceiling
    audio: bool = True  # play the sender's audio in sync with the face, record and publish it (False: refuse it)
