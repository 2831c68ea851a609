"""TURN credentials from the signaling server: coturn's REST scheme, the ice_servers message, and peers using it."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling import messages as m
from signaling.__main__ import add_server_arguments, create_server_config
from signaling.client import SignalingError, WebSocketSignaling
from signaling.ice_servers import rtc_ice_servers, with_signaled_ice_servers
from signaling.rtc import PeerLink, RtcOptions
from signaling.server import RunningServer, ServerConfig, start_server
from signaling.turn import TurnConfig, ice_servers_for, turn_password

SECRET = b"turn-secret-0123456789"


def test_credentials_follow_coturn_s_rest_scheme() -> None:
    config = TurnConfig(("turn:10.0.0.1:3478", "turn:10.0.0.1:3478?transport=tcp", "stun:10.0.0.1:3478"), SECRET, ttl_s=600)
    msg = ice_servers_for(config, "abcd1234", now_s=1_800_000_000.7)
    assert msg.expires_s == 1_800_000_600
    turn, stun = msg.servers
    assert turn.urls == ("turn:10.0.0.1:3478", "turn:10.0.0.1:3478?transport=tcp")
    assert turn.username == "1800000600:abcd1234"
    expected = base64.b64encode(hmac.new(SECRET, b"1800000600:abcd1234", hashlib.sha1).digest()).decode()
    assert turn.credential == expected == turn_password(SECRET, "1800000600:abcd1234")
    assert stun == m.IceServer(("stun:10.0.0.1:3478",))


def test_the_message_round_trips_and_bad_ones_are_refused() -> None:
    msg = ice_servers_for(TurnConfig(("turn:h:3478",), SECRET), "ab12", now_s=100.0)
    assert m.decode_server_message(m.encode_server_message(msg)) == msg
    for raw, needle in [
        ('{"type": "ice_servers", "servers": {}, "expires": 1}', "must be a list"),
        ('{"type": "ice_servers", "servers": [{"urls": []}], "expires": 1}', "'urls' must be a list of 1-8"),
        ('{"type": "ice_servers", "servers": [{"urls": ["turn:h"], "x": 1}], "expires": 1}', "unknown fields ['x']"),
        ('{"type": "ice_servers", "servers": []}', "lacks ['expires']"),
    ]:
        with pytest.raises(m.ProtocolError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            m.decode_server_message(raw)


@pytest.mark.parametrize(
    ("urls", "secret", "ttl_s", "needle"),
    [
        ((), SECRET, 600, "at least one --turn-url"),
        (("http://h",), SECRET, 600, "must start with turn:"),
        (("stun:h:3478",), SECRET, 600, "at least one turn: or turns:"),
        (("turn:h:3478",), b"short", 600, "at least 16"),
        (("turn:h:3478",), SECRET, 10, "between 60 s and 7 days"),
    ],
)
def test_turn_config_is_checked(urls: tuple[str, ...], secret: bytes, ttl_s: int, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TurnConfig(urls, secret, ttl_s)


def test_the_cli_reads_the_secret_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text("from-the-file-0123456789\n")
    config = create_server_config(parser.parse_args(["--turn-url", "turn:h:3478", "--turn-secret-file", str(secret_file), "--turn-ttl", "1h"]))
    assert config.turn == TurnConfig(("turn:h:3478",), b"from-the-file-0123456789", 3600)
    monkeypatch.setenv("KPCALL_TURN_SECRET", "from-the-environment-0123")
    assert create_server_config(parser.parse_args(["--turn-url", "turn:h:3478"])).turn is not None
    monkeypatch.delenv("KPCALL_TURN_SECRET")
    with pytest.raises(ValueError, match="needs coturn's static-auth-secret"):
        create_server_config(parser.parse_args(["--turn-url", "turn:h:3478"]))
    with pytest.raises(ValueError, match="needs --turn-url"):
        create_server_config(parser.parse_args(["--turn-secret-file", str(secret_file)]))
    assert create_server_config(parser.parse_args([])).turn is None


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    turn = TurnConfig(("turn:127.0.0.1:3478",), SECRET, ttl_s=3600)
    running = await start_server(ServerConfig(port=0, static_dir=None, turn=turn, max_peers_per_room=1))
    yield running
    await running.close()


async def test_a_peer_that_joins_gets_credentials_just_before_joined(server: RunningServer) -> None:
    sender = WebSocketSignaling(server.url, "t", "sender")
    before = int(time.time())
    joined = await sender.connect()
    assert sender.ice_servers is not None
    (turn,) = sender.ice_servers.servers
    assert turn.urls == ("turn:127.0.0.1:3478",) and turn.username == f"{sender.ice_servers.expires_s}:{joined.peer_id}"
    assert before + 3600 <= sender.ice_servers.expires_s <= int(time.time()) + 3600
    refused = WebSocketSignaling(server.url, "t", "receiver")  # the room is full: no credentials for it
    with pytest.raises(SignalingError):
        await refused.connect()
    assert refused.ice_servers is None
    # A peer link adds them after the process's own --ice-server entries.
    link = PeerLink(m.PeerInfo("ab12", "receiver"), sender, RtcOptions(ice_servers=("stun:10.9.9.9:3478",)), "test")
    servers = link.pc._RTCPeerConnection__configuration.iceServers  # type: ignore[attr-defined]  # aiortc has no getter
    assert [(s.urls, s.username) for s in servers] == [("stun:10.9.9.9:3478", None), ("turn:127.0.0.1:3478", turn.username)]
    await link.close()
    await sender.close()


def test_without_a_message_the_configuration_is_unchanged() -> None:
    configuration = RtcOptions().configuration()
    assert with_signaled_ice_servers(configuration, None) is configuration
    assert rtc_ice_servers(None) == []
