"""Audio sources of the sender: a generated speech-like signal, an audio/video file's audio, or a capture device.

Every source yields ``AudioChunk``s of ``chunk_ms`` (one Opus frame each), mono 48 kHz int16, in real time from
``chunks()``, each stamped with the capture time of its first sample on the wall clock that also stamps the motion
(``sender.sources.wall_clock_ms``): the receiver plays both by that clock (``receiver.audio_playout``).

- ``generated``: a deterministic speech-like signal (``speech_like``: a glottal harmonic series at a drifting pitch
  through vowel formants, in syllables of 0.12-0.3 s grouped in phrases with pauses, a 10 s loop), with the sync
  marks' clicks (``sender.sync_marks``) when given: no microphone needed for the demo or tests;
- a file (anything PyAV reads with an audio track: WAV, MP3, an MP4 with sound), played once from the start;
- a device: ``alsa:NAME`` (e.g. ``alsa:default``, ``alsa:hw:1,0``) or ``pulse:NAME`` (``pulse:default``), read by
  PyAV's ALSA/PulseAudio input where FFmpeg has it.

    source = create_audio_source("generated", chunk_ms=60)       # or "clip.mp4", "speech.wav", "pulse:default"
    async for chunk in source.chunks():
        ...                                                       # chunk.samples (N,) int16, chunk.capture_ms
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sender.sources import wall_clock_ms
from sender.sync_marks import CLICK_MS, SyncMarks, click

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
FRAME_MS_CHOICES = (20, 40, 60)  # Opus frame durations a chunk may have
DEFAULT_FRAME_MS = 40  # one Opus packet per motion frame at 25 fps: motion rides in every one (signaling.audio_motion)
AUDIO_NONE, AUDIO_GENERATED, AUDIO_AUTO = "none", "generated", "auto"
DEVICE_PREFIXES = ("alsa:", "pulse:")
SPEECH_LOOP_S = 10.0
SPEECH_PEAK = 0.3  # of full scale (the sync click is louder)
MAX_LATE_CHUNKS = 3  # a paced source further behind skips ahead (as a sound card's overrun would)


class AudioSourceError(ValueError):
    """An audio source that cannot be used: the message names it and what to do."""


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """One chunk of mono audio and when its first sample was captured."""

    samples: np.ndarray = field(repr=False)  # (N,) int16
    capture_ms: float  # wall-clock ms of samples[0]
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.sample_rate


class AudioSource(abc.ABC):
    """A real-time stream of AudioChunks."""

    name: str
    chunk_ms: int

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[AudioChunk]:
        """Chunks of ``chunk_ms`` paced in real time (each handed over once its last sample was captured)."""

    def close(self) -> None:
        """Release devices and threads (idempotent)."""

    @property
    def chunk_samples(self) -> int:
        return SAMPLE_RATE * self.chunk_ms // 1000


def _check_chunk_ms(chunk_ms: int) -> int:
    if chunk_ms not in FRAME_MS_CHOICES:
        raise AudioSourceError(f"audio frames of {chunk_ms} ms: pick one of {list(FRAME_MS_CHOICES)} (Opus frame sizes)")
    return chunk_ms


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 (clipped)."""
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


# -- generated ----------------------------------------------------------------------------------
_VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190), (490, 1350), (400, 2000))  # (F1, F2) Hz


def speech_like(seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0, harmonics: int = 16) -> np.ndarray:
    """A deterministic speech-like signal: (seconds · sample_rate,) float32, peak ``SPEECH_PEAK``, silent at both ends
    (so that it loops without a click). Phrases of 1.5-5 s with pauses of 0.3-1.2 s; syllables of 0.12-0.3 s, each a
    vowel (two formants) over a harmonic series at a pitch drifting around 125 Hz, with a short noise burst at some
    onsets (consonants)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate  # (N,) s
    envelope = np.zeros(n, np.float32)
    f1 = np.full(n, 500.0, np.float32)
    f2 = np.full(n, 1500.0, np.float32)
    noise = np.zeros(n, np.float32)
    pos, end_of_speech = 0.3, seconds - 0.3
    while pos < end_of_speech:
        phrase_end = min(pos + rng.uniform(1.5, 5.0), end_of_speech)
        start = pos
        while start < phrase_end - 0.1:
            dur = min(rng.uniform(0.12, 0.3), phrase_end - start)
            a, b = int(start * sample_rate), int((start + dur) * sample_rate)
            m = b - a
            envelope[a:b] = (np.sin(np.pi * np.arange(m) / m) ** 1.5 * rng.uniform(0.5, 1.0)).astype(np.float32)
            f1[a:b], f2[a:b] = _VOWELS[int(rng.integers(len(_VOWELS)))]
            if rng.random() < 0.4:  # a consonant: 20-40 ms of noise at the onset
                k = int(rng.uniform(0.02, 0.04) * sample_rate)
                noise[a:a + k] = rng.uniform(0.1, 0.25)
            start += dur + rng.uniform(0.0, 0.06)
        pos = phrase_end + rng.uniform(0.3, 1.2)
    f0 = 125.0 + 20.0 * np.sin(2 * np.pi * 0.35 * t) + 8.0 * np.sin(2 * np.pi * 2.1 * t)  # (N,) Hz
    phase = np.cumsum(2 * np.pi * f0 / sample_rate)
    voiced = np.zeros(n, np.float64)
    for h in range(1, harmonics + 1):
        freq = h * f0
        gain = 1.0 / (1.0 + ((freq - f1) / 90.0) ** 2) + 0.6 / (1.0 + ((freq - f2) / 130.0) ** 2) + 0.02 / h
        voiced += gain * np.sin(h * phase)
    hiss = np.diff(rng.normal(0.0, 1.0, n + 1)) * noise  # high-passed noise
    signal = voiced * envelope + hiss * 0.5
    peak = float(np.max(np.abs(signal))) or 1.0
    return (signal * (SPEECH_PEAK / peak)).astype(np.float32)


class GeneratedSpeech(AudioSource):
    """The built-in demo's audio: ``speech_like`` looped, paced in real time, with sync-mark clicks when ``marks``."""

    def __init__(
        self, chunk_ms: int = DEFAULT_FRAME_MS, seed: int = 0, marks: SyncMarks | None = None,
        clock: Callable[[], float] = wall_clock_ms, max_chunks: int | None = None,
    ) -> None:
        self.chunk_ms = _check_chunk_ms(chunk_ms)
        self.name = f"generated speech (seed {seed}){' + sync clicks' if marks is not None else ''}"
        self.marks = marks
        self._clock = clock
        self._loop = speech_like(SPEECH_LOOP_S, SAMPLE_RATE, seed)
        self._click = click(SAMPLE_RATE)
        self.max_chunks = max_chunks
        self.clicks = 0
        self.skipped_chunks = 0

    def samples_at(self, first: int, count: int) -> np.ndarray:
        """Samples ``first`` .. ``first + count`` of the looped signal, float32."""
        index = (first + np.arange(count)) % len(self._loop)
        return self._loop[index]

    def _with_clicks(self, samples: np.ndarray, capture_ms: float) -> np.ndarray:
        if self.marks is None:
            return samples
        span_ms = 1000.0 * len(samples) / SAMPLE_RATE
        for mark_ms in self.marks.between(capture_ms - CLICK_MS - 1.0, capture_ms + span_ms):
            offset = int(round((mark_ms - capture_ms) * SAMPLE_RATE / 1000.0))
            part = self._click[max(0, -offset):]
            at = max(0, offset)
            part = part[: len(samples) - at]
            if len(part):
                samples[at:at + len(part)] = part  # the click replaces the speech under it (its onset stays sharp)
                if offset >= 0:
                    self.clicks += 1
        return samples

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        interval = self.chunk_ms / 1000.0
        n = self.chunk_samples
        start, start_ms = loop.time(), self._clock()
        index = 0
        while self.max_chunks is None or index < self.max_chunks:
            delay = start + (index + 1) * interval - loop.time()  # a chunk exists once its last sample was "recorded"
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MAX_LATE_CHUNKS * interval:
                behind = int(-delay / interval)
                self.skipped_chunks += behind
                index += behind
            capture_ms = start_ms + index * self.chunk_ms
            samples = self._with_clicks(self.samples_at(index * n, n).copy(), capture_ms)
            yield AudioChunk(to_int16(samples), capture_ms)
            index += 1


# -- files and devices ----------------------------------------------------------------------------
def _resampled(frames: Iterator[Any], chunk_samples: int) -> Iterator[np.ndarray]:
    """PyAV audio frames -> mono 48 kHz int16 arrays of exactly ``chunk_samples`` (the last one padded with silence)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=chunk_samples)
    pending = np.zeros(0, np.int16)
    for frame in frames:
        frame.pts = None  # the resampler re-times; we stamp capture times ourselves
        for out in resampler.resample(frame):
            pending = np.concatenate([pending, out.to_ndarray().reshape(-1)])
            while len(pending) >= chunk_samples:
                yield pending[:chunk_samples]
                pending = pending[chunk_samples:]
    for out in resampler.resample(None):
        pending = np.concatenate([pending, out.to_ndarray().reshape(-1)])
    while len(pending):
        chunk = np.zeros(chunk_samples, np.int16)
        chunk[: min(len(pending), chunk_samples)] = pending[:chunk_samples]
        yield chunk
        pending = pending[chunk_samples:]


def probe_audio_file(path: Path) -> str:
    """Check that ``path`` has an audio track PyAV decodes; its description, else AudioSourceError saying why."""
    import av

    if not path.is_file():
        raise AudioSourceError(f"audio source {str(path)!r} does not exist: give an audio or video file with sound, "
                               f"'{AUDIO_GENERATED}', '{AUDIO_NONE}' or a device (alsa:NAME, pulse:NAME)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioSourceError(f"{str(path)!r} has no audio track: use --audio {AUDIO_GENERATED}, {AUDIO_NONE} or another file")
            stream = container.streams.audio[0]
            for _frame in container.decode(stream):
                return f"{path.name} ({stream.codec_context.name}, {stream.rate} Hz, {stream.channels} ch)"
    except av.error.FFmpegError as exc:
        raise AudioSourceError(f"cannot read audio from {str(path)!r}: {exc} (not a media file PyAV can decode?)") from None
    raise AudioSourceError(f"the audio track of {str(path)!r} holds no decodable sound")


class FileAudio(AudioSource):
    """A file's first audio track, resampled to mono 48 kHz, paced in real time from the first chunk; ends with it."""

    def __init__(self, path: Path, chunk_ms: int = DEFAULT_FRAME_MS, clock: Callable[[], float] = wall_clock_ms) -> None:
        self.chunk_ms = _check_chunk_ms(chunk_ms)
        self.path = path
        self.name = probe_audio_file(path)
        self._clock = clock

    def _decoded(self) -> Iterator[np.ndarray]:
        import av

        with av.open(str(self.path)) as container:
            yield from _resampled(container.decode(container.streams.audio[0]), self.chunk_samples)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        start, start_ms = loop.time(), self._clock()
        for index, samples in enumerate(self._decoded()):
            delay = start + (index + 1) * self.chunk_ms / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield AudioChunk(samples, start_ms + index * self.chunk_ms)


class DeviceAudio(AudioSource):
    """A capture device through PyAV (FFmpeg's ``alsa`` or ``pulse`` input), read on a worker thread."""

    def __init__(self, spec: str, chunk_ms: int = DEFAULT_FRAME_MS, clock: Callable[[], float] = wall_clock_ms) -> None:
        self.chunk_ms = _check_chunk_ms(chunk_ms)
        self.format, _, device = spec.partition(":")
        self.device = device or "default"
        self.name = f"{self.format} device {self.device!r}"
        self._clock = clock
        self._stop = threading.Event()
        self._open().close()  # fail now, with the reason, rather than mid-call

    def _open(self) -> Any:
        import av

        try:
            return av.open(self.device, format=self.format, options={"sample_rate": str(SAMPLE_RATE), "channels": "1"})
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioSourceError(f"cannot open the audio {self.name}: {exc} (is the {self.format} input in this FFmpeg and the "
                                   f"device there? --audio {AUDIO_GENERATED} needs no microphone)") from None

    def _work(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[AudioChunk | BaseException | None]) -> None:
        def put(item: AudioChunk | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            container = self._open()
            try:
                for samples in _resampled(container.decode(container.streams.audio[0]), self.chunk_samples):
                    if self._stop.is_set():
                        break
                    put(AudioChunk(samples, self._clock() - self.chunk_ms))  # its last sample was captured just now
            finally:
                container.close()
        except Exception as exc:  # noqa: BLE001 - a device failure ends the stream with its error
            put(exc)
            return
        put(None)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        queue: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        self._stop.clear()
        thread = threading.Thread(target=self._work, args=(asyncio.get_running_loop(), queue), name=f"audio {self.name}", daemon=True)
        thread.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise RuntimeError(f"audio {self.name} failed: {item}") from item
                yield item
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()


def default_audio_spec(video_source: str, video_source_default: str = "default") -> str:
    """What ``--audio auto`` means for a video source: the built-in trace -> ``generated``; a video file with an audio
    track -> that file; anything else (a camera, an image folder, a silent file) -> ``none``."""
    if video_source == video_source_default:
        return AUDIO_GENERATED
    path = Path(video_source)
    if path.is_file():
        with contextlib.suppress(AudioSourceError):
            probe_audio_file(path)
            return str(path)
    return AUDIO_NONE


def create_audio_source(
    spec: str, chunk_ms: int = DEFAULT_FRAME_MS, marks: SyncMarks | None = None, seed: int = 0,
) -> AudioSource | None:
    """``none`` (None), ``generated``, ``alsa:NAME`` / ``pulse:NAME``, or an audio/video file; AudioSourceError naming
    the problem (a missing file, one without sound, a device that does not open)."""
    if spec == AUDIO_NONE:
        return None
    if spec == AUDIO_GENERATED:
        return GeneratedSpeech(chunk_ms, seed=seed, marks=marks)
    if spec.startswith(DEVICE_PREFIXES):
        return DeviceAudio(spec, chunk_ms)
    return FileAudio(Path(spec), chunk_ms)
