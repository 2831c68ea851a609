"""Bounds on what the receiver keeps per peer and in total: sender-link history, serial message workers, rate-limited logs.

A receiver runs for days and any peer may be hostile, so nothing it keeps grows with the number of
messages or senders:

* ``SenderHistory``: the last ``MAX_SENDER_LINKS`` sender links (their counters for stats); older ones are
  folded into running ``LinkTotals`` and dropped with their reassemblers and decoders;
* ``SerialWorker``: one task per peer runs its messages in order from a bounded queue (a flood is refused,
  not turned into one task per message);
* ``RateLimitedLog``: the first of a kind of message is logged at once, the rest are counted and summed up
  in one line per interval (a peer cannot flood the log);
* ``CpuBudget``: the share of the event loop's CPU time one sender's motion decoding may take (see below);
* ``MAX_EVENTS`` / ``MAX_REMOTE_ERRORS``: the ``maxlen`` of the event and remote-error deques.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

MAX_SENDER_LINKS = 4  # sender links kept whole for stats; the others live on as totals
MAX_EVENTS = 1000  # receiver events kept (for tests, --stats-json and logs)
MAX_REMOTE_ERRORS = 100  # error replies kept per sender link
PEER_QUEUE_MESSAGES = 160  # messages a peer may have waiting (an avatar upload is ≤ 128 chunks)
LOG_INTERVAL_S = 10.0  # a repeated warning is summed up at most this often
MOTION_DECODE_CPU_SHARE = 0.4  # of each second of the event loop, at most this much CPU decodes one sender's motion

T = TypeVar("T")


@dataclass(frozen=True)
class LinkTotals:
    """What one sender link (or several, summed) received: the counters of ``Receiver.report``."""

    packets: int = 0
    payload_bytes: int = 0
    bad_packets: int = 0
    frames_lost: int = 0
    frames_received: int = 0
    wire_bytes_received: int = 0
    enhancement_received: int = 0
    enhancement_decoded: int = 0
    enhancement_dropped: int = 0
    enhancement_ignored: int = 0
    enhancement_key_requests: int = 0
    packets_over_budget: int = 0  # dropped undecoded: the sender sent faster than its CPU share decodes

    def __add__(self, other: LinkTotals) -> LinkTotals:
        return LinkTotals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class SenderHistory(Generic[T]):
    """The newest ``max_links`` links in full, and the totals of every link ever added."""

    def __init__(self, totals_of: Callable[[T], LinkTotals], max_links: int = MAX_SENDER_LINKS) -> None:
        if max_links < 1:
            raise ValueError(f"max_links must be ≥ 1, got {max_links}")
        self._totals_of = totals_of
        self._links: deque[T] = deque()
        self.max_links = max_links
        self.retired = LinkTotals()  # links dropped from the history, summed when they were dropped
        self.links_seen = 0

    def append(self, link: T) -> None:
        self._links.append(link)
        self.links_seen += 1
        while len(self._links) > self.max_links:
            self.retired = self.retired + self._totals_of(self._links.popleft())

    def totals(self) -> LinkTotals:
        out = self.retired
        for link in self._links:
            out = out + self._totals_of(link)
        return out

    def __iter__(self) -> Iterator[T]:
        return iter(self._links)

    def __len__(self) -> int:
        return len(self._links)

    def __getitem__(self, index: int) -> T:
        return self._links[index]


class SerialWorker:
    """Runs a peer's jobs one at a time, in order, from a queue of at most ``max_waiting``.

    ``submit`` is synchronous (for data-channel callbacks) and returns False when the queue is full: the
    caller refuses the message. Exceptions of a job are the job's own business (log them inside it); one
    that escapes is logged here and the worker goes on.
    """

    def __init__(self, name: str, max_waiting: int = PEER_QUEUE_MESSAGES) -> None:
        self.name = name
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(max_waiting)
        self._task: asyncio.Task[None] | None = None
        self.refused = 0

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.refused += 1
            return False
        return True

    async def _run(self) -> None:
        log = logging.getLogger(__name__)
        while True:
            job = await self._queue.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad message must not stop the peer's worker
                log.exception("%s: a queued message failed", self.name)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        """Cancel the running job and drop the waiting ones (idempotent)."""
        task, self._task = self._task, None
        while not self._queue.empty():
            self._queue.get_nowait()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class RateLimitedLog:
    """One log line per ``interval_s`` per key: the first at once, then "N more in the last S s" with the latest."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}  # key -> when its last line was written
        self._held: dict[str, int] = {}  # key -> messages counted since
        self.total = 0

    def log(self, level: int, key: str, message: str) -> bool:
        """Log ``message`` now, or count it under ``key``; True when a line was written. ``key`` is a
        short fixed string (not peer data), so the number of keys stays fixed."""
        self.total += 1
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            self._logger.log(level, "%s (and %d more like it in the last %.0f s)", message, held, now - last if last is not None else 0.0)
        else:
            self._logger.log(level, "%s", message)
        return True


class CpuBudget:
    """At most ``share`` of each ``window_s`` of CPU time (``time.thread_time``) spent on one kind of work.

    Motion decoding stays on the event loop: the depacketizer's state is read there every 50 ms (feedback,
    stats), and a packet is cheap. Measured (2026-12-06, 2-core VM with a training job beside it): 2.1 ms
    median, 3.3 ms p99 per 1-frame packet (54 B), 4.9 ms median per 6-frame packet, i.e. 50-80 ms of each
    second at 25 fps, 5-8 % of the loop. Only a flood makes it matter (the fuzzed worst input took 26 ms),
    so a sender over its share gets its packets dropped undecoded (counted, as loss) until the window
    passes: with the 0.4 default a normal call has 5× headroom and a hostile one leaves the loop 60 %.
    """

    def __init__(self, share: float = MOTION_DECODE_CPU_SHARE, window_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.thread_time) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share, self.window_s = share, window_s
        self._clock, self._cpu_clock = clock, cpu_clock
        self._spent: deque[tuple[float, float]] = deque()  # (when, CPU seconds)
        self._total_s = 0.0
        self.refused = 0

    def allow(self) -> bool:
        """True when there is budget left in the current window (else counts a refusal)."""
        now = self._clock()
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._total_s -= self._spent.popleft()[1]
        if self._total_s < self.share * self.window_s:
            return True
        self.refused += 1
        return False

    def start(self) -> float:
        return self._cpu_clock()

    def spend(self, started_cpu_s: float) -> None:
        cost = max(0.0, self._cpu_clock() - started_cpu_s)
        self._spent.append((self._clock(), cost))
        self._total_s += cost
