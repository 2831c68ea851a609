"""A participant of a call: sends its person's motion and sound to every other participant, renders and plays theirs.

One process per person. It joins the room once as ``participant`` (``participant.call_signaling``) and composes the
one-way parts the rest of kpcall is made of:

- one ``sender.session.Sender``, which sees every other participant as a receiver and offers each a connection (motion
  encoded once per frame, packetized and rate-controlled per link, the audio beside it);
- one ``receiver.session.Receiver`` per other participant, made when that one joins and ended when it leaves, each
  taking the other's offer, keeping its own jitter buffer, audio playout and (when this participant serves that face to
  the room's viewers) viewer links; all render on one model (``participant.shared_synthesizer``) as the speaker
  schedule allows (``participant.speaker_schedule``: the active speaker at full rate, the others in the CPU left).

    participant = Participant(ParticipantConfig("http://127.0.0.1:8080", room="team"), synthesizer, source, reference, audio)
    await participant.run()     # until the source ends or stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codec.reference_message import ReferenceMessage
from participant.call_signaling import CallSignaling
from participant.loudspeaker import Loudspeaker, Mixer
from participant.shared_synthesizer import SharedSynthesizer
from participant.speaker_schedule import SpeakerSchedule, render_fps_by_role
from receiver.audio_playout import PlayedAudio
from receiver.session import Receiver, ReceiverConfig
from sender.audio_sender import AudioSender
from sender.session import DEFAULT_MAX_KBPS, Sender, SenderConfig
from sender.sources import MotionSource
from signaling.client import Signaling, WebSocketSignaling
from signaling.rtc import RtcOptions

logger = logging.getLogger(__name__)

DEPARTED_KEPT = 16  # reports of participants that left, kept for report()


@dataclass(frozen=True)
class ParticipantConfig:
    """Participant settings; the field comments are the CLI help."""

    signaling_url: str  # the signaling server, http://HOST:PORT
    room: str = "call"  # the call's room
    token: str | None = field(default=None, repr=False)  # the room's shared secret or this participant's join ticket
    rtc: RtcOptions = RtcOptions()
    max_kbps: float | None = DEFAULT_MAX_KBPS  # on-the-wire cap of each outgoing link (None: none)
    others_fps: float | None = None  # render rate of the faces that are not the active speaker (None: what the CPU leaves)
    speaker_fps: float | None = None  # render rate cap of the active speaker's face too (None: the call's rate)
    cache_dir: Path | None = None  # received portraits kept here (no re-send on the next call)
    audio: bool = True  # play the others' sound in sync with their faces (False: ask them for none)
    speaker: str | None = None  # where their mixed sound goes: alsa:NAME, pulse:NAME or FILE.wav (None: nowhere)
    fps: float = 25.0


class Participant:
    """See the module docstring."""

    def __init__(
        self, config: ParticipantConfig, synthesizer: Any, source: MotionSource | None = None,
        reference: ReferenceMessage | None = None, audio: AudioSender | None = None, signaling: Signaling | None = None,
        enhancement_size: int = 0, sender_factory: Callable[[SenderConfig, Signaling], Sender] | None = None,
    ) -> None:
        """What this participant sends: ``source`` + ``reference`` (+ ``audio``), or ``sender_factory(config, signaling)``
        building the Sender itself (the CLI's, with the motion encoder's expression baseline)."""
        if sender_factory is None and (source is None or reference is None):
            raise ValueError("a participant needs a motion source and a reference portrait (or a sender_factory)")
        self.config = config
        self.schedule = SpeakerSchedule(config.fps, config.others_fps, speaker_fps=config.speaker_fps)
        self.synthesizer = SharedSynthesizer(synthesizer, self.schedule.on_render_ms)
        self.call = CallSignaling(
            signaling or WebSocketSignaling(config.signaling_url, config.room, "participant", config.token), self._on_roster
        )
        sender_config = SenderConfig(config.signaling_url, config.room, rtc=config.rtc, max_kbps=config.max_kbps)
        if sender_factory is not None:
            self.sender = sender_factory(sender_config, self.call.sender_side())
        else:
            assert source is not None and reference is not None
            self.sender = Sender(sender_config, source, reference, self.call.sender_side(), enhancement_size=enhancement_size, audio=audio)
        self.receivers: dict[str, Receiver] = {}
        self.departed: deque[dict[str, Any]] = deque(maxlen=DEPARTED_KEPT)
        self.events: deque[tuple[float, str, str]] = deque(maxlen=1000)  # (wall ms, event, detail)
        self._receiver_tasks: dict[str, asyncio.Task[str]] = {}
        self._stop = asyncio.Event()
        self._stopped_reason = ""
        self._final_schedule: dict[str, Any] | None = None  # the schedule as the call ended (before the receivers stop)
        self.mixer: Mixer | None = None

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self._stopped_reason = reason
            self._stop.set()

    def _event(self, name: str, detail: str = "") -> None:
        self.events.append((time.time() * 1000.0, name, detail))
        logger.info("event %s %s", name, detail)

    @property
    def peer_id(self) -> str:
        return self.call.peer_id

    async def run(self) -> str:
        """The call, until the source ends ("source_ended"), stop() or the server refuses us for good ("signaling_closed")."""
        self.config.rtc.apply()
        if self.config.speaker is not None:  # LoudspeakerError (a clear message) before joining anyone
            self.mixer = Mixer(await asyncio.to_thread(Loudspeaker.open, self.config.speaker))
            self.mixer.start()
        try:
            joined = await self.call.connect()
        except BaseException:
            if self.mixer is not None:
                await self.mixer.close()
            raise
        self._event("joined", f"{joined.room} as {joined.peer_id} with {len(self.call.participants)} other participant(s)")
        sender_task = asyncio.ensure_future(self.sender.run())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sender_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if sender_task.done() and not self._stop.is_set():
                self._stopped_reason = sender_task.result()
        finally:
            stopper.cancel()
            self._final_schedule = self.schedule.stats()
            self.sender.stop()
            for receiver in self.receivers.values():
                receiver.stop("stopped")
            await asyncio.gather(sender_task, *self._receiver_tasks.values(), return_exceptions=True)
            await self.call.close()
            if self.mixer is not None:
                await self.mixer.close()
        return self._stopped_reason or "stopped"

    # -- the others -----------------------------------------------------------------------------
    def _on_roster(self, participant: str, joined: bool) -> None:
        if joined:
            self._add(participant)
        else:
            receiver = self.receivers.get(participant)
            self._event("participant_left", participant)
            if receiver is not None:
                receiver.stop("participant_left")

    def _add(self, participant: str) -> None:
        if participant in self.receivers or self._stop.is_set():
            return
        config = ReceiverConfig(
            self.config.signaling_url, self.config.room, rtc=self.config.rtc, cache_dir=self.config.cache_dir,
            exit_when_sender_leaves=True, reconnect=False, audio=self.config.audio,
        )
        receiver = Receiver(config, self.synthesizer, self.call.receiver_side(participant), frame_gate=self.schedule.gate(participant))

        def on_audio(played: PlayedAudio) -> None:
            self.schedule.on_audio(participant, played.samples)
            if self.mixer is not None:
                self.mixer.feed(participant, played.samples)

        receiver.audio.add_output(on_audio)
        self.receivers[participant] = receiver
        self.schedule.add(participant)
        self._event("participant_joined", participant)
        task = asyncio.ensure_future(receiver.run())
        self._receiver_tasks[participant] = task
        task.add_done_callback(lambda t: self._receiver_done(participant, receiver, t))

    def _receiver_done(self, participant: str, receiver: Receiver, task: asyncio.Task[str]) -> None:
        if self.receivers.get(participant) is receiver:
            del self.receivers[participant]
            self._receiver_tasks.pop(participant, None)
            self.schedule.remove(participant)
            if self.mixer is not None:
                self.mixer.forget(participant)
        reason = "cancelled" if task.cancelled() else repr(task.exception()) if task.exception() else task.result()
        self._event("receiver_ended", f"{participant} ({reason})")
        self.departed.append(self._remote_report(participant, receiver, reason))

    def _remote_report(self, participant: str, receiver: Receiver, end: str | None) -> dict[str, Any]:
        report = receiver.report()
        rendered = [r.rendered_ms for r in receiver.renders]
        outputs = list(receiver.outputs)
        start_ms = outputs[0].due_ms if outputs else time.time() * 1000.0  # its first frame due: its time in the call
        end_ms = max(rendered[-1] + 1.0 if rendered else 0.0, outputs[-1].due_ms if outputs else 0.0) or time.time() * 1000.0
        by_role = render_fps_by_role(rendered, list(self.schedule.timeline), participant, start_ms, end_ms)
        return {"peer_id": participant, "end": end, **report, **by_role}

    # -- what happened --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id, "participants": list(self.call.participants), "schedule": self.schedule.stats(),
            "remotes": {p: r.stats() for p, r in self.receivers.items()},
        }

    def report(self) -> dict[str, Any]:
        """The whole call, for --stats-json and the benchmark: what we sent per link, what we rendered per remote."""
        return {
            "peer_id": self.peer_id, "room": self.config.room, "rejoins": self.call.rejoins,
            "schedule": self._final_schedule or self.schedule.stats(),
            "sent": self.sender.link_stats(),
            "remotes": {p: self._remote_report(p, r, None) for p, r in self.receivers.items()},
            "departed": list(self.departed),
            "speaker": None if self.mixer is None else self.mixer.stats(),
            "events": list(self.events),
        }
