"""The signaling client used by the sender and the receiver: join a room, send and receive messages.

::

    signaling = WebSocketSignaling("ws://127.0.0.1:8080/ws", room="demo", role="sender")
    joined = await signaling.connect()          # Joined: our peer id and who is already there
    await signaling.send(SessionDescription("offer", peer_id, sdp))
    msg = await signaling.receive()             # a ServerMessage, or None once the connection is gone
    await signaling.close()

A server with TURN sends ``ice_servers`` just before ``joined``; ``connect`` keeps it in ``ice_servers``,
and ``signaling.rtc.PeerLink`` adds those servers to every peer connection it makes.

The URL may be the server's base (``http://host:port``) or the WebSocket endpoint (``ws://host:port/ws``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from signaling import messages as m

logger = logging.getLogger(__name__)


class SignalingError(RuntimeError):
    """The server refused us (``code`` from its error message) or could not be reached."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Signaling(abc.ABC):
    """A participant's connection to a room (the aiortc ``contrib.signaling`` pattern)."""

    ice_servers: m.IceServers | None = None  # what the server handed out with the join (TURN credentials), if anything

    @abc.abstractmethod
    async def connect(self) -> m.Joined:
        """Connect and join; raises SignalingError if the server refuses."""

    @abc.abstractmethod
    async def send(self, msg: m.ClientMessage) -> None:
        """Send one message (relayed ones name the recipient peer id)."""

    @abc.abstractmethod
    async def receive(self) -> m.ServerMessage | None:
        """The next message from the server; None when the connection has ended."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave and disconnect (idempotent)."""


def websocket_url(url: str) -> str:
    """``http://h:p`` / ``ws://h:p`` / ``.../ws`` -> ``ws://h:p/ws`` (https -> wss); ValueError if unusable."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"signaling URL {url!r} must look like http://HOST:PORT or ws://HOST:PORT/ws")
    path = parts.path if parts.path.rstrip("/").endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class WebSocketSignaling(Signaling):
    """``Signaling`` over the server's WebSocket endpoint."""

    def __init__(self, url: str, room: str, role: m.Role, token: str | None = None, connect_timeout_s: float = 10.0) -> None:
        self.url = websocket_url(url)
        self.room = room
        self.role = role
        self._token = token
        self._timeout = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.joined: m.Joined | None = None

    @property
    def peer_id(self) -> str | None:
        return None if self.joined is None else self.joined.peer_id

    async def connect(self) -> m.Joined:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.url, timeout=aiohttp.ClientWSTimeout(ws_close=self._timeout), heartbeat=15.0)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await self.close()
            raise SignalingError(f"cannot reach the signaling server at {self.url}: {exc}") from None
        try:
            await self.send(m.Join(self.room, self.role, self._token))
            async with asyncio.timeout(self._timeout):
                while True:
                    msg = await self.receive()
                    if msg is None:
                        raise SignalingError(f"the signaling server at {self.url} closed the connection while joining")
                    if isinstance(msg, m.Error):
                        raise SignalingError(f"cannot join room {self.room!r}: {msg.message}", msg.code)
                    if isinstance(msg, m.IceServers):  # sent just before joined: the links we make use them
                        self.ice_servers = msg
                        logger.info("the signaling server handed out %d ICE server(s) until %d", len(msg.servers), msg.expires_s)
                    if isinstance(msg, m.Joined):
                        self.joined = msg
                        logger.info("joined room %s as %s %s (%d others there)", msg.room, msg.role, msg.peer_id, len(msg.peers))
                        return msg
        except TimeoutError:
            raise SignalingError(f"no answer to 'join' from {self.url} within {self._timeout} s") from None
        except SignalingError:
            await self.close()
            raise

    async def send(self, msg: m.ClientMessage) -> None:
        """Send one message; SignalingError if not connected or if ``msg`` holds a string that is not UTF-8 text."""
        if self._ws is None or self._ws.closed:
            raise SignalingError("not connected to the signaling server")
        text = m.encode_client_message(msg)
        at = m.unencodable_at(text)
        if at is not None:
            raise SignalingError(
                f"cannot send {type(msg).__name__}: it holds {text[at]!r}, a lone surrogate (not encodable as UTF-8)", m.BAD_MESSAGE
            )
        await self._ws.send_str(text)

    async def receive(self) -> m.ServerMessage | None:
        ws = self._ws
        while ws is not None and not ws.closed:
            frame = await ws.receive()
            if frame.type == aiohttp.WSMsgType.TEXT:
                try:
                    return m.decode_server_message(frame.data)
                except m.ProtocolError as exc:
                    logger.warning("ignoring a malformed message from the signaling server: %s", exc)
                    continue
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        return None

    async def close(self) -> None:
        ws, session = self._ws, self._session
        self._ws = self._session = None
        if ws is not None and not ws.closed:
            await ws.close()
        if session is not None:
            await session.close()
