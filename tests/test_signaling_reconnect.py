"""signaling.reconnect: backoff, rejoin, and a call that outlives a restart of the signaling server (loopback)."""

from __future__ import annotations

import asyncio
import random

import pytest

from receiver.session import Receiver, ReceiverConfig
from sender.session import Sender, SenderConfig
from sender.sources import TraceSource
from signaling import messages as m
from signaling.client import Signaling, SignalingError
from signaling.reconnect import Backoff, rejoin
from signaling.rtc import RtcOptions
from signaling.server import ServerConfig, start_server
from tests.call_fakes import FakeSynthesizer, fake_reference, wait_until

LOOPBACK = RtcOptions(host_candidates="loopback")


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 8, 10, 10, 10]):
        assert 0.8 * base <= delay <= 1.2 * base
    backoff.reset()
    assert backoff.next_delay() <= 0.6


class FlakySignaling(Signaling):
    """connect() fails with the given codes in turn, then joins."""

    def __init__(self, failures: list[str | None]) -> None:
        self.failures = list(failures)
        self.connects = self.closes = 0

    async def connect(self) -> m.Joined:
        self.connects += 1
        if self.failures:
            code = self.failures.pop(0)
            raise SignalingError(f"refused ({code})", code)
        return m.Joined(peer_id="p2", room="room", role="sender", peers=())

    async def send(self, msg: m.ClientMessage) -> None:  # pragma: no cover - unused
        pass

    async def receive(self) -> m.ServerMessage | None:  # pragma: no cover - unused
        return None

    async def close(self) -> None:
        self.closes += 1


FAST = dict(initial_s=0.01, max_s=0.02)


async def test_rejoin_retries_what_waiting_can_cure() -> None:
    flaky = FlakySignaling([None, m.ROLE_TAKEN, m.UNAVAILABLE, m.RATE_LIMITED])
    attempts: list[int] = []
    joined = await rejoin(flaky, asyncio.Event(), Backoff(**FAST), on_attempt=lambda n, why: attempts.append(n))
    assert joined is not None and joined.peer_id == "p2"
    assert flaky.connects == 5 and attempts == [1, 2, 3, 4] and flaky.closes == 5  # the old connection closed each time


@pytest.mark.parametrize("code", [m.UNAUTHORIZED, m.REPLACED, m.BAD_MESSAGE])
async def test_rejoin_gives_up_on_a_refusal_waiting_cannot_cure(code: str) -> None:
    with pytest.raises(SignalingError) as info:
        await rejoin(FlakySignaling([None, code]), asyncio.Event(), Backoff(**FAST))
    assert info.value.code == code


async def test_rejoin_stops_when_asked() -> None:
    stopping = asyncio.Event()
    task = asyncio.ensure_future(rejoin(FlakySignaling([None] * 1000), stopping, Backoff(**FAST)))
    await asyncio.sleep(0.1)
    stopping.set()
    assert await asyncio.wait_for(task, 2) is None


async def test_a_call_outlives_a_signaling_server_restart() -> None:
    first = await start_server(ServerConfig(port=0, static_dir=None))
    port = first.port
    url = first.url
    receiver = Receiver(ReceiverConfig(url, "restart", rtc=LOOPBACK), FakeSynthesizer())
    sender = Sender(SenderConfig(url, "restart", rtc=LOOPBACK, max_kbps=None), TraceSource(25.0, max_frames=100_000), fake_reference())
    rtask, stask = asyncio.ensure_future(receiver.run()), asyncio.ensure_future(sender.run())
    second = None
    try:
        await wait_until(lambda: receiver.playout.next_slot >= 25, 20, "the call to start")
        await first.close()  # the signaling server dies; the peer connection does not need it
        await wait_until(lambda: any(n == "signaling_lost" for _, n, _ in receiver.events)
                         and any(n == "signaling_lost" for _, n, _ in sender.events), 10, "both to notice")
        before = receiver.playout.next_slot
        await asyncio.sleep(1.5)
        assert receiver.playout.next_slot - before >= 20  # 1.5 s at 25 fps went on playing (37; slack for a loaded machine)
        assert not rtask.done() and not stask.done()
        concealed_before = receiver.playout.frames_concealed
        second = await start_server(ServerConfig(port=port, static_dir=None))  # back, on the same address
        await wait_until(lambda: any(n == "rejoined" for _, n, _ in receiver.events)
                         and any(n == "rejoined" for _, n, _ in sender.events), 20, "both to join again")
        # the sender offers to the receiver it finds again; the receiver takes it as the newer sender
        await wait_until(lambda: len(receiver.sender_history) == 2 and receiver.active is receiver.sender_history[-1]
                         and receiver.active.packets >= 25, 20, "motion on the new link")
        # the switch costs a few frames (slack for a loaded machine: the new link's set-up competes for the cores)
        assert receiver.playout.frames_concealed - concealed_before <= 25
    finally:
        receiver.stop()
        sender.stop()
        await asyncio.gather(rtask, stask, return_exceptions=True)
        for server in (first, second):
            if server is not None:
                await server.close()


async def test_the_sender_offers_again_when_its_receiver_link_drops() -> None:
    """Both stay in the room, but the peer connection dies (here the receiver closes it): the sender offers again."""
    server = await start_server(ServerConfig(port=0, static_dir=None))
    receiver = Receiver(ReceiverConfig(server.url, "reoffer", rtc=LOOPBACK), FakeSynthesizer())
    sender = Sender(SenderConfig(server.url, "reoffer", rtc=LOOPBACK, max_kbps=None), TraceSource(25.0, max_frames=100_000),
                    fake_reference())
    rtask, stask = asyncio.ensure_future(receiver.run()), asyncio.ensure_future(sender.run())
    try:
        await wait_until(lambda: receiver.playout.next_slot >= 25, 20, "the call to start")
        first = receiver.active
        assert first is not None
        await first.link.pc.close()  # the link dies; nobody left the room
        await wait_until(lambda: any(n == "reoffer" for _, n, _ in sender.events), 10, "the sender to offer again")
        await wait_until(lambda: receiver.active is not None and receiver.active is not first and receiver.active.packets >= 25,
                         15, "motion on the new link")
        assert len(sender.link_history) == 2
    finally:
        receiver.stop()
        sender.stop()
        await asyncio.gather(rtask, stask, return_exceptions=True)
        await server.close()
