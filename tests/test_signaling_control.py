"""Control-channel messages and WebRTC helpers: round trips, exact rejections, ICE options."""

from __future__ import annotations

import base64
import json

import aioice.ice
import pytest

from signaling import control as c
from signaling.rtc import parse_ice_server, use_host_candidates

HASH = "ab" * 32


@pytest.mark.parametrize(
    "msg",
    [
        c.Hello(1, 7, 25.0, HASH, "m", "1", 1234),
        c.ReferenceStatus(HASH, True),
        c.ReferenceReady(HASH, False),
        c.Ping(12.5),
        c.Pong(12.5),
        c.DelayReport(3.5, 10.0, 2, 5), c.DelayReport(3.5, 10.0, 2, 5, 12.25),
        c.RateDecision(12, "coarse", 4, None, 7.8, "cap 8 kbps"),
        c.RateDecision(20, "default", 1, 8.0, 7.8, "cap 8 kbps"),
        c.Command(keypoints=12, max_kbps=8.0),
        c.Command(keypoints="auto", frames_per_packet="auto"),
        c.Command(view="yaw=10,pitch=-5,roll=0"),
        c.Command(avatar="reset"),
        c.AvatarChunk(3, 0, 2, base64.b64encode(b"\x89PNG...").decode()),
        c.Stats("receiver", {"frames_output": 10, "latency_ms_median": 12.5, "preset": "default", "x": None}),
        c.Status("waiting", "waiting for a sender"),
        c.Ack("keypoints,max_kbps", "passed to the sender"),
        c.ErrorReply("bad_packet", "truncated"),
    ],
)
def test_round_trip(msg: c.ControlMessage) -> None:
    assert c.decode_control(c.encode_control(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("nope", "not valid JSON"),
        ("[]", "JSON object with a string 'type'"),
        ('{"type": "teleport"}', "unknown control message type 'teleport'"),
        ('{"type": "ping"}', "'t_ms' must be a number"),
        ('{"type": "ping", "t_ms": NaN}', "'t_ms' must be a number"),
        ('{"type": "ping", "t_ms": 1, "extra": 2}', "unknown fields ['extra']"),
        ('{"type": "reference_status", "content_hash": "xyz", "have": true}', "does not match"),
        ('{"type": "reference_status", "content_hash": "' + HASH + '", "have": 1}', "must be true or false"),
        ('{"type": "command", "keypoints": 65}', "'keypoints' must be an integer in [0, 64]"),
        ('{"type": "command", "keypoints": "some"}', "'keypoints' must be an integer"),
        ('{"type": "command", "view": "<script>"}', "'view' = '<script>' does not match"),
        ('{"type": "command", "avatar": "x.jpg"}', "must be \"reset\""),
        ('{"type": "avatar_chunk", "upload_id": 1, "index": 2, "count": 2, "data": ""}', "'index' must be an integer in [0, 1]"),
        ('{"type": "avatar_chunk", "upload_id": 1, "index": 0, "count": 1, "data": "@@@"}', "not valid base64"),
        ('{"type": "stats", "source": "r", "values": {"Bad Key": 1}}', "stats key 'Bad Key'"),
        ('{"type": "stats", "source": "r", "values": {"a": [1]}}', "stats value of 'a'"),
        # an int beyond a float's range is valid JSON: it used to raise OverflowError from math.isfinite (bench.fuzz)
        ('{"type": "ping", "t_ms": 1' + "0" * 400 + "}", "'t_ms' must be a number in [0, 1e+15]"),
        ('{"type": "command", "max_kbps": -1' + "0" * 400 + "}", "'max_kbps' must be a number"),
        ('{"type": "stats", "source": "r", "values": {"a": 1' + "0" * 400 + "}}", "stats value of 'a' must be a finite number"),
        ('{"type": "stats", "source": "r", "values": {"a": 9007199254740993}}', "of magnitude ≤ 2**53"),
        ('{"type": "hello", "version": 2, "stream_id": 1, "fps": 25, "content_hash": "' + HASH + '", "model_id": "m", '
         '"model_version": "1", "reference_bytes": 5}', "unsupported control protocol version 2"),
        ('{"type": "hello", "version": 1, "stream_id": 1, "fps": 0.5, "content_hash": "' + HASH + '", "model_id": "m", '
         '"model_version": "1", "reference_bytes": 5}', "'fps' must be a number in [1, 120]"),
        ("x" * (c.MAX_CONTROL_BYTES + 1), "exceeds"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_rejections_quote_the_problem(raw: str | bytes, needle: str) -> None:
    with pytest.raises(c.ControlError) as info:
        c.decode_control(raw)
    assert needle in str(info.value)


def test_encode_refuses_oversize() -> None:
    with pytest.raises(c.ControlError, match="exceeds"):
        c.encode_control(c.Stats("receiver", {f"k{i}": "x" * 250 for i in range(300)}))


def test_command_sender_part() -> None:
    assert c.Command(view="frontal").sender_part() is None
    assert c.Command(keypoints=5, view="frontal").sender_part() == c.Command(keypoints=5)


def test_avatar_upload_reassembles_and_is_bounded() -> None:
    image = bytes(range(256)) * 300  # 76,800 bytes -> 3 chunks
    chunks = c.avatar_chunks(image, upload_id=5)
    assert len(chunks) == 3
    assembler = c.AvatarAssembler()
    decoded = [c.decode_control(c.encode_control(ch)) for ch in chunks]
    assert isinstance(decoded[0], c.AvatarChunk)
    assert assembler.add(decoded[2]) is None and assembler.add(decoded[0]) is None and assembler.add(decoded[0]) is None  # type: ignore[arg-type]
    assert assembler.add(decoded[1]) == image  # type: ignore[arg-type]
    small = c.AvatarAssembler(max_bytes=40_000)
    small.add(chunks[0])
    with pytest.raises(c.ControlError, match="exceeds 40000 bytes"):
        small.add(chunks[1])
    assert json.loads(c.encode_control(chunks[0]))["type"] == "avatar_chunk"


def test_ice_server_parsing() -> None:
    stun = parse_ice_server("stun:stun.example.org:3478")
    assert stun.urls == "stun:stun.example.org:3478" and stun.username is None
    turn = parse_ice_server("turn:turn.example.org:3478?transport=udp,alice,secret")
    assert (turn.username, turn.credential) == ("alice", "secret")
    for bad, needle in [("http://x", "must start with"), ("turn:x:1", "needs a username"), ("stun:x:1,u,p", "takes no credentials")]:
        with pytest.raises(ValueError, match=needle):
            parse_ice_server(bad)


def test_host_candidate_policies() -> None:
    try:
        use_host_candidates("loopback")
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
        use_host_candidates("all")
        addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        assert "127.0.0.1" in addresses
        use_host_candidates("default")
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        with pytest.raises(ValueError, match="not one of"):
            use_host_candidates("everything")
    finally:
        use_host_candidates("default")
