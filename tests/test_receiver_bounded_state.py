"""Receiver state stays bounded whatever peers send: history, cache (validated, capped, LRU), events, queues, logs."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codec.reference_message import ChunkReassembler, ReferenceMessage, chunk_message, encode_portrait, pack_reference_message
from receiver import session as receiver_session
from receiver.bounded_state import (
    MAX_EVENTS,
    MAX_REMOTE_ERRORS,
    PEER_QUEUE_MESSAGES,
    CpuBudget,
    LinkTotals,
    RateLimitedLog,
    SenderHistory,
    SerialWorker,
)
from receiver.portrait_cache import PortraitCache
from receiver.references import ReferenceStore
from receiver.render_worker import RenderWorker
from receiver.session import Receiver, ReceiverConfig, _SenderLink, _ViewerLink
from signaling import control as c
from signaling import messages as m
from tests.call_fakes import MODEL_ID, MODEL_VERSION, FakeSynthesizer, fake_reference, wait_until


@dataclass
class FakeCounters:
    wire_bytes_received: int = 0


@dataclass
class FakeLink:
    """Stands in for signaling.rtc.PeerLink: what the receiver reads of a link, no network."""

    peer: m.PeerInfo
    prefix: str = "receiver -> fake"
    wire_bytes: int = 0

    def counters(self) -> FakeCounters:
        return FakeCounters(self.wire_bytes)

    async def close(self) -> None:
        return None


@dataclass
class FakeChannel:
    readyState: str = "open"  # noqa: N815 - aiortc's spelling
    sent: list[Any] = field(default_factory=list)

    def send(self, data: Any) -> None:
        self.sent.append(data)


def sent_controls(channel: FakeChannel) -> list[Any]:
    return [c.decode_control(d) for d in channel.sent if isinstance(d, str)]


async def make_receiver(tmp_path: Path, **config: Any) -> Receiver:
    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", cache_dir=tmp_path, **config), FakeSynthesizer())
    receiver._worker = RenderWorker(receiver.synthesizer, asyncio.get_running_loop(), receiver._rendered.put_nowait)
    receiver._worker.start()
    return receiver


def make_sender(receiver: Receiver, peer_id: str = "s1") -> tuple[_SenderLink, FakeChannel]:
    sender = _SenderLink(FakeLink(m.PeerInfo(peer_id, "sender")))  # type: ignore[arg-type]
    channel = FakeChannel()
    sender.control = channel  # type: ignore[assignment]
    receiver.senders[peer_id] = sender
    receiver.sender_history.append(sender)
    receiver.active = sender
    return sender, channel


def hello_for(msg: ReferenceMessage) -> str:
    return c.encode_control(c.Hello(1, 1, 25.0, msg.content_hash.hex(), MODEL_ID, MODEL_VERSION, len(pack_reference_message(msg))))


def undecodable_reference() -> ReferenceMessage:
    """A reference whose header is a valid 32² PNG but whose pixel data is cut short: it unpacks, it does not decode."""
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    png = encode_portrait(image, "png")
    return ReferenceMessage.from_image(png[: len(png) * 2 // 3], MODEL_ID, MODEL_VERSION)


async def send_reference(receiver: Receiver, sender: _SenderLink, msg: ReferenceMessage) -> None:
    receiver._on_sender_control(sender, hello_for(msg))
    for chunk in chunk_message(pack_reference_message(msg)):
        receiver._on_sender_control(sender, chunk)
    await wait_until(lambda: sender.jobs.waiting == 0, 5, "the sender's queued messages to be handled")
    await asyncio.sleep(0.1)


def cached_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "references").glob("*.kpref")) if (tmp_path / "references").is_dir() else []


async def test_a_portrait_that_does_not_decode_is_never_cached(tmp_path: Path) -> None:
    receiver = await make_receiver(tmp_path)
    sender, channel = make_sender(receiver)
    bad = undecodable_reference()
    await send_reference(receiver, sender, bad)
    errors = [msg for msg in sent_controls(channel) if isinstance(msg, c.ErrorReply)]
    assert [e.code for e in errors] == ["bad_reference"] and "does not decode" in errors[0].message
    assert cached_files(tmp_path) == [] and not receiver.store.has(bad.cache_key)  # neither on disk nor in memory
    good = fake_reference()
    await send_reference(receiver, sender, good)
    assert any(isinstance(msg, c.ReferenceReady) for msg in sent_controls(channel))
    assert len(cached_files(tmp_path)) == 1 and ReferenceStore(tmp_path).load(good.cache_key) == good
    await receiver._worker.close()  # type: ignore[union-attr]


async def test_events_and_remote_errors_are_bounded(tmp_path: Path) -> None:
    receiver = await make_receiver(tmp_path)
    sender, _ = make_sender(receiver)
    for i in range(MAX_EVENTS + 500):
        receiver._event("test", str(i))
    for i in range(MAX_REMOTE_ERRORS + 500):
        receiver._on_sender_control(sender, c.encode_control(c.ErrorReply("bad_feedback", f"number {i}")))
    assert len(receiver.events) == MAX_EVENTS and receiver.events[-1][2] == str(MAX_EVENTS + 499)
    assert len(sender.remote_errors) == MAX_REMOTE_ERRORS and sender.remote_errors[-1].endswith(f"number {MAX_REMOTE_ERRORS + 499}")
    await receiver._worker.close()  # type: ignore[union-attr]


async def test_a_viewer_flood_is_queued_for_one_worker_not_one_task_per_message(tmp_path: Path) -> None:
    receiver = await make_receiver(tmp_path)
    viewer = _ViewerLink(FakeLink(m.PeerInfo("v1", "viewer")))  # type: ignore[arg-type]
    channel = FakeChannel()
    viewer.control = channel  # type: ignore[assignment]
    tasks_before = len(asyncio.all_tasks())
    flood = 1000
    for i in range(flood):
        receiver._on_viewer_message(viewer, c.encode_control(c.Ping(i)))
    assert len(asyncio.all_tasks()) - tasks_before == 1  # the viewer's one worker
    await wait_until(lambda: viewer.jobs.waiting == 0, 10, "the queued viewer messages to be handled")
    await asyncio.sleep(0.05)
    replies = sent_controls(channel)
    pongs = [r.t_ms for r in replies if isinstance(r, c.Pong)]
    assert pongs == list(range(len(pongs))) and PEER_QUEUE_MESSAGES <= len(pongs) <= PEER_QUEUE_MESSAGES + 1  # in order
    assert viewer.jobs.refused == flood - len(pongs)
    busy = [r for r in replies if isinstance(r, c.ErrorReply)]
    assert busy and all(r.code == "busy" for r in busy) and len(busy) <= receiver_session.VIEWER_ERRORS_PER_S
    await viewer.jobs.close()
    assert len(asyncio.all_tasks()) == tasks_before
    await receiver._worker.close()  # type: ignore[union-attr]


async def test_dropped_reassemblies_are_logged_once_per_interval(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = await make_receiver(tmp_path)
    sender, _ = make_sender(receiver)
    sender.reassembler = ChunkReassembler(max_pending=2)
    caplog.set_level(logging.DEBUG, logger="receiver")
    caplog.set_level(logging.INFO, logger="codec")
    for seed in range(300):  # the first chunk of 300 different two-chunk messages: 298 incomplete ones dropped
        first = chunk_message(pack_reference_message(fake_reference(seed=seed)), max_chunk_bytes=1000)[0]
        receiver._on_sender_control(sender, first)
    assert sender.reassembler.dropped == 298
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "dropped an incomplete reference message" in warnings[0].getMessage()
    await receiver._worker.close()  # type: ignore[union-attr]


def test_rate_limited_log_sums_up_each_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("receiver.test"), interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="receiver.test")
    for i in range(1000):
        now[0] = i * 0.05  # 50 s of one message every 50 ms
        log.log(logging.WARNING, "bad", f"bad thing {i}")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and lines[0] == "bad thing 0"
    assert lines[1] == "bad thing 200 (and 199 more like it in the last 10 s)"
    assert log.total == 1000


def test_sender_history_keeps_the_last_links_and_the_totals_of_all() -> None:
    @dataclass
    class Link:
        packets: int

    history: SenderHistory[Link] = SenderHistory(lambda link: LinkTotals(packets=link.packets), max_links=4)
    for i in range(1, 101):
        history.append(Link(i))
    assert len(history) == 4 and [link.packets for link in history] == [97, 98, 99, 100] and history[-1].packets == 100
    assert history.totals().packets == sum(range(1, 101)) and history.links_seen == 100


async def test_the_receiver_keeps_a_bounded_sender_history(tmp_path: Path) -> None:
    receiver = await make_receiver(tmp_path)
    for i in range(50):  # senders that come and go (or a peer offering under 50 names)
        sender, _ = make_sender(receiver, f"s{i}")
        sender.packets = 10
    assert len(receiver.sender_history) == 4
    assert receiver.report()["packets_received"] == 500
    await receiver._worker.close()  # type: ignore[union-attr]


def test_portrait_cache_is_capped_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = PortraitCache(tmp_path, max_bytes=4000)
    for i in range(10):
        cache.write(f"k{i}", bytes(1000))
        os.utime(cache.path(f"k{i}"), (1000.0 + i, 1000.0 + i))  # a distinct age each, whatever the clock's grain
        if i == 5:
            assert cache.read("k3") is not None  # k3 is used again: it is the newest now
    assert cache.size_bytes() <= 4000 and cache.evicted == 6
    kept = {f"k{i}" for i in range(10) if cache.has(f"k{i}")}
    assert kept == {"k3", "k7", "k8", "k9"}
    cache.write("huge", bytes(5000))  # bigger than the whole cache: not kept, nothing evicted for it
    assert not cache.has("huge") and cache.evicted == 6
    with pytest.raises(ValueError, match="use --no-cache to keep none"):
        PortraitCache(tmp_path, max_bytes=0)


def test_reference_store_caps_its_disk_cache(tmp_path: Path) -> None:
    one = len(pack_reference_message(fake_reference()))
    store = ReferenceStore(tmp_path, cache_max_bytes=3 * one + 100)
    for seed in range(8):
        store.save(fake_reference(seed=seed))
    assert 1 <= len(cached_files(tmp_path)) <= 3
    assert ReferenceStore(tmp_path).load(fake_reference(seed=7).cache_key) is not None  # the newest survives


def test_motion_decoding_is_held_to_its_cpu_share() -> None:
    now, cpu = [0.0], [0.0]
    budget = CpuBudget(share=0.4, window_s=1.0, clock=lambda: now[0], cpu_clock=lambda: cpu[0])
    allowed = 0
    for _ in range(1000):  # a flood: 1000 packets in 1 s, each costing 10 ms of CPU
        if budget.allow():
            allowed += 1
            started = budget.start()
            cpu[0] += 0.010
            budget.spend(started)
        now[0] += 0.001
    assert allowed == 40 and budget.refused == 960
    now[0] += 1.0
    assert budget.allow()  # the next window has budget again


async def test_serial_worker_survives_a_failing_job() -> None:
    worker = SerialWorker("test", max_waiting=2)
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("boom")

    async def ok() -> None:
        done.append(1)

    assert worker.submit(boom) and worker.submit(ok) and not worker.submit(ok)
    await wait_until(lambda: done == [1], 5, "the job after the failing one")
    await worker.close()
    await worker.close()


class DistilledFakeSynthesizer(FakeSynthesizer):
    """A receiver model of its own id that reads another model's motion (a distilled student's teacher's)."""

    model_id = "student-model"
    motion_model_id = MODEL_ID


async def test_a_distilled_receiver_takes_its_teachers_motion_and_refuses_its_own_id(tmp_path: Path) -> None:
    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", cache_dir=tmp_path), DistilledFakeSynthesizer())
    receiver._worker = RenderWorker(receiver.synthesizer, asyncio.get_running_loop(), receiver._rendered.put_nowait)
    receiver._worker.start()
    sender, channel = make_sender(receiver)
    await send_reference(receiver, sender, fake_reference())  # announced as MODEL_ID: the motion the student reads
    replies = sent_controls(channel)
    assert any(isinstance(r, c.ReferenceReady) for r in replies), replies
    assert not any(isinstance(r, c.ErrorReply) for r in replies), replies
    other, other_channel = make_sender(receiver, "s2")
    student_id = ReferenceMessage.from_image(fake_reference().image, "student-model", MODEL_VERSION)
    receiver._on_sender_control(other, c.encode_control(c.Hello(1, 2, 25.0, student_id.content_hash.hex(), "student-model",
                                                                 MODEL_VERSION, len(pack_reference_message(student_id)))))
    await wait_until(lambda: other.jobs.waiting == 0, 5, "the hello to be handled")
    errors = [r for r in sent_controls(other_channel) if isinstance(r, c.ErrorReply)]
    assert [e.code for e in errors] == ["model_mismatch"], errors
    assert "reading the motion of test-model" in errors[0].message
    await receiver._worker.close()  # type: ignore[union-attr]
