"""Signaling roles bound to credentials: join tickets, one sender and one receiver per room, relays between linked roles
only, the Origin allow-list, secrets from a file or the environment, and the receiver taking offers only from the sender."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from receiver.session import Receiver, ReceiverConfig
from signaling import messages as m
from signaling.__main__ import add_server_arguments, create_server_config
from signaling.__main__ import main as signaling_main
from signaling.client import SignalingError, WebSocketSignaling
from signaling.credentials import (
    TICKET_SECRET_ENV, TOKEN_ENV, Ticket, TicketError, add_token_arguments, issue_ticket, parse_ttl, token_from_args, verify_ticket,
)
from signaling.server import RunningServer, ServerConfig, start_server
from tests.test_signaling import RawClient

SECRET = b"0123456789abcdef-test-secret"
FAR = 4_000_000_000  # expiry far in the future (unix s)


def ticket(room: str, role: m.Role, original: bool = False, expires_s: int = FAR, secret: bytes = SECRET, control: bool = False) -> str:
    return issue_ticket(secret, Ticket(room, role, expires_s, original, control))


# -- tickets ---------------------------------------------------------------------------------------
def test_a_ticket_admits_its_room_and_role_only() -> None:
    text = ticket("r1", "viewer", original=True)
    assert text.startswith("kpt1.r1.viewer.4000000000.o.") and len(text) <= 140
    assert verify_ticket(SECRET, text, "r1", "viewer", now_s=0) == Ticket("r1", "viewer", FAR, original=True)
    refusals = [
        (text, "r2", "viewer", "is for room 'r1' as viewer, not room 'r2' as viewer"),
        (text, "r1", "sender", "not room 'r1' as sender"),
        (text.replace(".o.", ".-."), "r1", "viewer", "signature is not valid"),  # a grant removed or added is an alteration
        (ticket("r1", "sender").replace(".sender.", ".receiver."), "r1", "receiver", "signature is not valid"),
        (ticket("r1", "sender", secret=b"another-secret-of-16+"), "r1", "sender", "signature is not valid"),
        (ticket("r1", "sender", expires_s=100), "r1", "sender", "expired 900 s ago"),
        ("pw", "r1", "sender", "is not a join ticket"),
        ("kpt1.r1.sender.x.-.sig.extra", "r1", "sender", "is not a join ticket"),
    ]
    for token, room, role, needle in refusals:
        with pytest.raises(TicketError, match=needle):
            verify_ticket(SECRET, token, room, role, now_s=1000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only a viewer ticket grants the original"):
        Ticket("r1", "sender", FAR, original=True)
    with pytest.raises(ValueError, match="at least 16"):
        issue_ticket(b"short", Ticket("r1", "sender", FAR))
    assert parse_ttl("12h") == 43200 and parse_ttl("90") == 90
    with pytest.raises(ValueError, match="whole number"):
        parse_ttl("1.5h")


def test_a_viewer_ticket_may_grant_control_and_old_tickets_grant_none() -> None:
    both, control_only = ticket("r1", "viewer", original=True, control=True), ticket("r1", "viewer", control=True)
    assert both.startswith("kpt1.r1.viewer.4000000000.oc.") and control_only.startswith("kpt1.r1.viewer.4000000000.c.")
    assert verify_ticket(SECRET, both, "r1", "viewer", now_s=0) == Ticket("r1", "viewer", FAR, original=True, control=True)
    assert verify_ticket(SECRET, control_only, "r1", "viewer", now_s=0).control
    for old in (ticket("r1", "viewer"), ticket("r1", "viewer", original=True)):  # "-" and "o": as issued before "c" existed
        assert not verify_ticket(SECRET, old, "r1", "viewer", now_s=0).control
    assert verify_ticket(SECRET, "kpt1.r1.viewer.4000000000.o._sHoMqdKhgBtDsnKuVvXBxB9q3Tk_XBeylaCJrX-ZYk", "r1", "viewer", now_s=0) \
        == Ticket("r1", "viewer", FAR, original=True)  # a ticket issued by the code before grants of control
    with pytest.raises(TicketError, match="signature is not valid"):  # granting oneself control is an alteration
        verify_ticket(SECRET, both.replace(".oc.", ".o."), "r1", "viewer", now_s=0)
    body = "kpt1.r1.viewer.4000000000.co"  # one spelling per set of grants: "co" or an unknown letter is malformed
    from signaling.credentials import _signature
    for grants in ("co", "x", "occ", ""):
        text = body.replace(".co", f".{grants}")
        with pytest.raises(TicketError, match="malformed"):
            verify_ticket(SECRET, f"{text}.{_signature(SECRET, text)}", "r1", "viewer", now_s=0)
    with pytest.raises(ValueError, match="only a viewer ticket grants control"):
        Ticket("r1", "receiver", FAR, control=True)
    sender_c = "kpt1.r1.sender.4000000000.c"  # signed with the secret, but never issued: refused as a ticket, not a crash
    with pytest.raises(TicketError, match="grants do not fit"):
        verify_ticket(SECRET, f"{sender_c}.{_signature(SECRET, sender_c)}", "r1", "sender", now_s=0)


def test_peer_entries_carry_a_viewer_s_grants_and_are_decoded_strictly() -> None:
    viewer = m.PeerInfo("ab12", "viewer", (m.GRANT_ORIGINAL, m.GRANT_CONTROL))
    text = m.encode_server_message(m.PeerJoined(viewer))
    assert text == '{"type":"peer_joined","peer_id":"ab12","role":"viewer","grants":["original","control"]}'
    assert m.decode_server_message(text) == m.PeerJoined(viewer) and viewer.control and viewer.original
    joined = m.Joined("cd34", "r", "receiver", (m.PeerInfo("ef56", "sender"), viewer, m.PeerInfo("ab13", "viewer")))
    assert m.decode_server_message(m.encode_server_message(joined)) == joined
    assert '"grants"' not in m.encode_server_message(m.PeerJoined(m.PeerInfo("ab13", "viewer")))  # none granted: absent
    # absent (a server from before grants): none; any order on the wire, one order in PeerInfo
    assert m.decode_server_message('{"type":"peer_joined","peer_id":"ab12","role":"viewer"}') == m.PeerJoined(m.PeerInfo("ab12", "viewer"))
    reordered = m.decode_server_message('{"type":"peer_joined","peer_id":"ab12","role":"viewer","grants":["control","original"]}')
    assert reordered == m.PeerJoined(viewer)
    for grants, needle in (
        ('"control"', "must be a list of distinct strings"), ('["control","control"]', "must be a list of distinct strings"),
        ('[1]', "must be a list of distinct strings"), ('["admin"]', "has 'admin', not one of ['original', 'control']"),
    ):
        with pytest.raises(m.ProtocolError, match=re.escape(needle)):
            m.decode_server_message(f'{{"type":"peer_joined","peer_id":"ab12","role":"viewer","grants":{grants}}}')
    with pytest.raises(m.ProtocolError, match="is for viewers only, not a sender"):
        m.decode_server_message('{"type":"peer_joined","peer_id":"ab12","role":"sender","grants":["control"]}')
    with pytest.raises(m.ProtocolError, match="unknown fields"):
        m.decode_server_message('{"type":"joined","peer_id":"ab12","room":"r","role":"sender","peers":[{"peer_id":"cd34","role":"viewer","x":1}]}')
    assert m.decode_server_message(
        '{"type":"joined","peer_id":"ab12","room":"r","role":"receiver","peers":[{"peer_id":"cd34","role":"viewer","grants":["control"]}]}'
    ) == m.Joined("ab12", "r", "receiver", (m.PeerInfo("cd34", "viewer", (m.GRANT_CONTROL,)),))


# -- open rooms: the first sender and receiver hold their roles -------------------------------------------
@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


async def test_in_an_open_room_a_second_sender_is_refused_while_the_first_is_connected(server: RunningServer) -> None:
    sender = WebSocketSignaling(server.url, "demo", "sender")
    receiver = WebSocketSignaling(server.url, "demo", "receiver")
    await sender.connect()
    await receiver.connect()
    for role in ("sender", "receiver"):
        with pytest.raises(SignalingError) as info:
            await WebSocketSignaling(server.url, "demo", role).connect()  # type: ignore[arg-type]
        assert info.value.code == m.ROLE_TAKEN and f"already has a {role}" in str(info.value)
    viewer = WebSocketSignaling(server.url, "demo", "viewer")
    await viewer.connect()  # viewers are not exclusive
    await sender.close()
    await asyncio.sleep(0.1)
    restarted = WebSocketSignaling(server.url, "demo", "sender")  # the role is free once its holder left
    assert (await restarted.connect()).role == "sender"
    await asyncio.gather(restarted.close(), receiver.close(), viewer.close())


async def test_relays_run_only_between_roles_that_have_a_link() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, open_original=False))
    try:
        sender, receiver, v1, v2 = [await RawClient.open(running) for _ in range(4)]
        s_id = (await sender.join("r", "sender"))["peer_id"]
        r_id = (await receiver.join("r", "receiver"))["peer_id"]
        v1_id = (await v1.join("r", "viewer"))["peer_id"]
        await v2.join("r", "viewer")
        for client, joins in ((sender, 3), (receiver, 2), (v1, 1)):  # the peer_joined messages
            for _ in range(joins):
                assert (await client.recv())["type"] == "peer_joined"
        await v2.send({"type": "offer", "to": v1_id, "sdp": "v=0"})
        reply = await v2.recv()
        assert reply["code"] == m.FORBIDDEN and "a viewer and a viewer have no connection" in str(reply["message"]), reply
        await v2.send({"type": "offer", "to": s_id, "sdp": "v=0"})  # the original pictures: not granted here
        reply = await v2.recv()
        assert reply["code"] == m.FORBIDDEN and "not granted the sender's original pictures" in str(reply["message"]), reply
        await sender.send({"type": "offer", "to": r_id, "sdp": "v=0 call"})
        assert await receiver.recv() == {"type": "offer", "from": s_id, "sdp": "v=0 call"}
        await receiver.send({"type": "offer", "to": v1_id, "sdp": "v=0 video"})
        assert await v1.recv() == {"type": "offer", "from": r_id, "sdp": "v=0 video"}
        await asyncio.gather(*(c.close() for c in (sender, receiver, v1, v2)))
    finally:
        await running.close()


async def _viewer_grants(running: RunningServer, token: str | None = None, original: bool = False) -> list[str] | None:
    """The ``grants`` of a viewer's entry as the room's receiver is told (``peer_joined``) and a later one (``joined``)."""
    receiver_token = None if token is None else ticket("g", "receiver")
    receiver = await RawClient.open(running)
    await receiver.send({"type": "join", "room": "g", "role": "receiver", **({} if receiver_token is None else {"token": receiver_token})})
    assert (await receiver.recv())["type"] == "joined"
    viewer = await RawClient.open(running)
    await viewer.send({"type": "join", "room": "g", "role": "viewer", **({} if token is None else {"token": token})})
    viewer_id = (await viewer.recv())["peer_id"]
    announced = await receiver.recv()
    assert announced["type"] == "peer_joined" and announced["peer_id"] == viewer_id, announced
    await receiver.close()
    await asyncio.sleep(0.05)
    later = await RawClient.open(running)  # a receiver that joins after the viewer finds it in `joined`
    await later.send({"type": "join", "room": "g", "role": "receiver", **({} if receiver_token is None else {"token": receiver_token})})
    entry = next(p for p in (await later.recv())["peers"] if p["peer_id"] == viewer_id)
    assert entry.get("grants") == announced.get("grants"), (entry, announced)
    await asyncio.gather(later.close(), viewer.close())
    await asyncio.sleep(0.05)
    return announced.get("grants")


async def test_the_receiver_is_told_what_each_viewer_may_do() -> None:
    """Open rooms grant viewers control (and the original) unless the server says otherwise; tickets grant what they carry."""
    for config, grants in (
        ({}, ["original", "control"]),
        ({"open_control": False}, ["original"]),
        ({"open_control": False, "open_original": False}, None),  # none granted: the field is absent
        ({"token": "a-shared-room-token"}, ["original", "control"]),
    ):
        running = await start_server(ServerConfig(port=0, static_dir=None, **config))  # type: ignore[arg-type]
        try:
            if "token" in config:
                raw = await RawClient.open(running)
                await raw.send({"type": "join", "room": "g", "role": "receiver", "token": "a-shared-room-token"})
                assert (await raw.recv())["type"] == "joined"
                viewer = await RawClient.open(running)
                await viewer.send({"type": "join", "room": "g", "role": "viewer", "token": "a-shared-room-token"})
                await viewer.recv()
                assert (await raw.recv()).get("grants") == grants
                await asyncio.gather(raw.close(), viewer.close())
            else:
                assert await _viewer_grants(running) == grants, config
        finally:
            await running.close()
    running = await start_server(ServerConfig(port=0, static_dir=None, ticket_secret=SECRET, open_control=True))
    try:  # with tickets the open defaults do not apply: a ticket without "c" grants no control
        assert await _viewer_grants(running, ticket("g", "viewer")) is None
        assert await _viewer_grants(running, ticket("g", "viewer", control=True)) == ["control"]
        assert await _viewer_grants(running, ticket("g", "viewer", original=True, control=True)) == ["original", "control"]
    finally:
        await running.close()


# -- ticket rooms ----------------------------------------------------------------------------------
async def test_with_tickets_roles_are_bound_and_only_a_ticket_holder_replaces_the_sender() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, ticket_secret=SECRET))
    try:
        for token, needle in (
            (None, "needs a join ticket for the role sender: the token is missing"),
            (ticket("r", "viewer"), "is for room 'r' as viewer, not room 'r' as sender"),
            (ticket("other", "sender"), "is for room 'other'"),
            ("guess", "is not a join ticket"),
        ):
            with pytest.raises(SignalingError) as info:
                await WebSocketSignaling(running.url, "r", "sender", token=token).connect()
            assert info.value.code == m.UNAUTHORIZED and needle in str(info.value), info.value
        first = WebSocketSignaling(running.url, "r", "sender", token=ticket("r", "sender"))
        receiver = WebSocketSignaling(running.url, "r", "receiver", token=ticket("r", "receiver"))
        first_id = (await first.connect()).peer_id
        await receiver.connect()
        assert isinstance(await first.receive(), m.PeerJoined)
        second = WebSocketSignaling(running.url, "r", "sender", token=ticket("r", "sender"))  # e.g. the sender restarted
        second_id = (await second.connect()).peer_id
        assert await receiver.receive() == m.PeerLeft(m.PeerInfo(first_id, "sender"), "replaced")
        assert await receiver.receive() == m.PeerJoined(m.PeerInfo(second_id, "sender"))
        told = await first.receive()
        assert isinstance(told, m.Error) and told.code == m.REPLACED, told
        # A viewer's ticket without the grant does not reach the sender; one with it does.
        plain = await RawClient.open(running)
        await plain.send({"type": "join", "room": "r", "role": "viewer", "token": ticket("r", "viewer")})
        assert (await plain.recv())["type"] == "joined"
        await plain.send({"type": "offer", "to": second_id, "sdp": "v=0"})
        assert (await plain.recv())["code"] == m.FORBIDDEN
        granted = await RawClient.open(running)
        await granted.send({"type": "join", "room": "r", "role": "viewer", "token": ticket("r", "viewer", original=True)})
        assert (await granted.recv())["type"] == "joined"
        await granted.send({"type": "offer", "to": second_id, "sdp": "v=0 original"})
        got = await asyncio.wait_for(second.receive(), 5)
        while not isinstance(got, m.SessionDescription):
            got = await asyncio.wait_for(second.receive(), 5)
        assert got.sdp == "v=0 original"
        await asyncio.gather(first.close(), second.close(), receiver.close(), plain.close(), granted.close())
    finally:
        await running.close()


def test_tickets_and_shared_tokens_do_not_mix() -> None:
    with pytest.raises(ValueError, match="not both"):
        ServerConfig(ticket_secret=SECRET, token="shared-token")
    with pytest.raises(ValueError, match="at least 16"):
        ServerConfig(ticket_secret=b"short")


# -- the receiver ------------------------------------------------------------------------------------
async def test_the_receiver_takes_a_call_only_from_the_peer_the_server_calls_the_sender() -> None:
    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", "r"), synthesizer=object())  # type: ignore[arg-type]
    offers: list[str] = []

    async def add_sender(peer: m.PeerInfo, offer: m.SessionDescription) -> None:
        offers.append(peer.peer_id)

    receiver._add_sender = add_sender  # type: ignore[method-assign]
    receiver.peer_roles.update({"aaaa": "viewer", "bbbb": "sender"})
    await receiver._on_signal(m.SessionDescription("offer", "aaaa", "v=0"))  # a viewer (or anyone) offering a "call"
    await receiver._on_signal(m.SessionDescription("offer", "cccc", "v=0"))  # a peer the server never announced
    await receiver._on_signal(m.SessionDescription("offer", "bbbb", "v=0"))
    assert offers == ["bbbb"]


# -- the Origin allow-list -----------------------------------------------------------------------------
async def test_websockets_from_other_origins_are_refused() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, allow_origins=("https://app.example.com",)))
    try:
        own = f"http://127.0.0.1:{running.port}"
        cases = {
            None: True, own: True, own.upper().replace("HTTP", "http"): True, "https://app.example.com": True,
            "https://app.example.com:443": True, "https://evil.example": False, "null": False, "http://127.0.0.1:1": False,
        }
        async with aiohttp.ClientSession() as session:
            for origin, allowed in cases.items():
                headers = {} if origin is None else {"Origin": origin}
                if allowed:
                    ws = await session.ws_connect(running.ws_url, headers=headers)
                    await ws.send_json({"type": "ping", "nonce": 1})
                    assert (await ws.receive_json(timeout=5)) == {"type": "pong", "nonce": 1}, origin
                    await ws.close()
                else:
                    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                        await session.ws_connect(running.ws_url, headers=headers)
                    assert info.value.status == 403, origin
            async with session.get(running.ws_url.replace("ws://", "http://"), headers={"Origin": "https://evil.example",
                                   "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
                assert resp.status == 403 and "--allow-origin https://evil.example" in await resp.text()
    finally:
        await running.close()
    with pytest.raises(ValueError, match="must look like https://host"):
        ServerConfig(allow_origins=("example.com",))


# -- secrets without the command line ---------------------------------------------------------------------
def _server_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(argv)


def test_secrets_come_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TICKET_SECRET_ENV, raising=False)
    (tmp_path / "token").write_text("from-a-file\nignored second line\n")
    (tmp_path / "rooms").write_text("# comment\nr1=one\n\nr2=two\n")
    (tmp_path / "ticket").write_text(SECRET.decode() + "\n")
    config = create_server_config(_server_args(["--token-file", str(tmp_path / "token"), "--room-token-file", str(tmp_path / "rooms")]))
    assert config.token == "from-a-file" and dict(config.room_tokens) == {"r1": "one", "r2": "two"}
    config = create_server_config(_server_args(["--ticket-secret-file", str(tmp_path / "ticket")]))
    assert config.ticket_secret == SECRET and config.token is None
    assert create_server_config(_server_args([])).open_control  # the demo: viewers steer
    assert not create_server_config(_server_args(["--no-open-control"])).open_control
    monkeypatch.setenv(TOKEN_ENV, "from-the-env")
    assert create_server_config(_server_args([])).token == "from-the-env"
    with pytest.raises(ValueError, match="not both"):
        create_server_config(_server_args(["--token", "x", "--token-file", str(tmp_path / "token")]))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty: put the secret on its first line"):
        create_server_config(_server_args(["--token-file", str(tmp_path / "empty")]))
    # A participant (sender, receiver) reads its token the same way.
    parser = argparse.ArgumentParser()
    add_token_arguments(parser)
    assert token_from_args(parser.parse_args([])) == "from-the-env"
    assert token_from_args(parser.parse_args(["--token-file", str(tmp_path / "token")])) == "from-a-file"


def test_the_ticket_command_prints_a_ticket_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TICKET_SECRET_ENV, SECRET.decode())
    assert signaling_main(["ticket", "--room", "r1", "--role", "viewer", "--original", "--ttl", "1h"]) == 0
    text = capsys.readouterr().out.strip()
    assert verify_ticket(SECRET, text, "r1", "viewer").original and not verify_ticket(SECRET, text, "r1", "viewer").control
    assert signaling_main(["ticket", "--room", "r1", "--role", "viewer", "--control"]) == 0
    granted = verify_ticket(SECRET, capsys.readouterr().out.strip(), "r1", "viewer")
    assert granted.control and not granted.original
    with pytest.raises(SystemExit):
        signaling_main(["ticket", "--room", "r1", "--role", "sender", "--control"])
    assert "only a viewer ticket grants control" in capsys.readouterr().err
    monkeypatch.delenv(TICKET_SECRET_ENV)
    with pytest.raises(SystemExit):
        signaling_main(["ticket", "--room", "r1", "--role", "sender"])
    assert f"set ${TICKET_SECRET_ENV}" in capsys.readouterr().err
