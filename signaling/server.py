"""The signaling server: an aiohttp app relaying SDP and ICE candidates between peers of a room.

Endpoints: ``GET /ws`` (WebSocket, the protocol of ``signaling/PROTOCOL.md``), ``GET /healthz``
(JSON status) and the browser demo page's files from a static directory (``GET /`` is its
``index.html``). Run it with ``python -m signaling --host 127.0.0.1 --port 8080``, or embed it::

    server = await start_server(ServerConfig(port=0))   # port 0: a free port, see server.port
    ...
    await server.close()

Robustness: every message is validated (``signaling.messages``); a message over 64 KiB, malformed
JSON, an unknown type, a relay to an unknown peer or a flood (token bucket per connection) gets an
in-band ``error`` and nothing else happens; so does a string that is not UTF-8 text (a lone surrogate
escape), which is never relayed. Each connection has a bounded outbox drained by its own writer
task, so a slow or stuck client never blocks the relaying of others (it is disconnected when its
outbox overflows). A message the writer cannot encode is logged and dropped; a writer that stops
for any other reason closes its connection, so no client is left connected but deaf. Frames above
``HARD_MAX_FRAME_BYTES`` close the connection (aiohttp's limit).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from signaling import messages as m

logger = logging.getLogger(__name__)

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"
HARD_MAX_FRAME_BYTES = 1024 * 1024  # larger frames close the connection (1009); 64 KiB-1 MiB get an error
MAX_VIOLATIONS = 500  # rejected messages before a connection is closed (policy violation)
MAX_FAILED_JOINS = 5


@dataclass(frozen=True)
class ServerConfig:
    """Signaling server settings; the field comments are the CLI help."""

    host: str = "127.0.0.1"  # address to listen on
    port: int = 8080  # TCP port (0: any free port)
    token: str | None = field(default=None, repr=False)  # shared secret required to join any room
    room_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)  # per-room secrets (override token)
    static_dir: Path | None = DEFAULT_STATIC_DIR  # the browser page's files (None: do not serve files)
    max_rooms: int = 256  # rooms that may exist at once
    max_peers_per_room: int = 16  # participants per room
    max_connections: int = 1024  # open WebSockets
    rate_per_s: float = 50.0  # sustained messages per second per connection
    rate_burst: float = 200.0  # burst size of the per-connection token bucket
    outbox_size: int = 256  # queued outgoing messages per connection before it is dropped as stuck
    heartbeat_s: float = 15.0  # WebSocket ping interval (dead peers are noticed within ~2 intervals)

    def __post_init__(self) -> None:
        for room, secret in self.room_tokens.items():
            m.check_room_name(room)
            _check_secret(secret, f"the token of room {room!r}")
        if self.token is not None:
            _check_secret(self.token, "the token")

    def token_for(self, room: str) -> str | None:
        """The secret that ``room`` requires, or None for an open room."""
        return self.room_tokens.get(room, self.token)


def _check_secret(secret: str, what: str) -> None:
    at = m.unencodable_at(secret)
    if at is not None:  # e.g. a non-UTF-8 byte of argv, decoded with surrogateescape
        raise ValueError(f"{what} is not encodable as UTF-8 (character {at}): use UTF-8 text")


class _TokenBucket:
    """Per-connection rate limit: ``rate`` tokens per second up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Connection:
    """One WebSocket: its outbox and writer task, and its room membership once joined."""

    def __init__(self, ws: web.WebSocketResponse, config: ServerConfig, remote: str, transport: asyncio.BaseTransport | None) -> None:
        self.ws = ws
        self.transport = transport
        self.peer_id = secrets.token_hex(4)
        self.remote = remote
        self.role: m.Role | None = None
        self.room: str | None = None
        self.bucket = _TokenBucket(config.rate_per_s, config.rate_burst)
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=config.outbox_size)
        self.violations = 0
        self.failed_joins = 0
        self.last_rate_error = 0.0
        self.writer: asyncio.Task[None] | None = None
        self.overflowed = False

    @property
    def info(self) -> m.PeerInfo:
        assert self.role is not None
        return m.PeerInfo(self.peer_id, self.role)

    def log_prefix(self) -> str:
        return f"peer {self.peer_id} ({self.remote}{'' if self.room is None else f', room {self.room}, {self.role}'})"

    def post(self, msg: m.ServerMessage) -> None:
        """Queue a message without waiting; a full outbox marks the connection stuck and closes it."""
        if self.overflowed:
            return
        try:
            self.outbox.put_nowait(m.encode_server_message(msg))
        except asyncio.QueueFull:
            self.overflowed = True
            logger.warning("%s: outbox full (%d messages), disconnecting a stuck client", self.log_prefix(), self.outbox.maxsize)
            # A graceful close would queue behind the stuck writes: drop the TCP connection instead.
            if self.transport is not None:
                self.transport.abort()

    def start_writer(self) -> None:
        """Start the writer task; whenever it ends other than by cancellation, the connection is closed."""
        self.writer = asyncio.ensure_future(self._write_loop())
        self.writer.add_done_callback(self._on_writer_done)

    async def _write_loop(self) -> None:
        while True:
            text = await self.outbox.get()
            if text is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except UnicodeEncodeError as exc:  # encoded before any byte is written: the stream stays intact
                logger.warning("%s: outgoing message cannot be encoded as UTF-8 (%s), dropped: %.80r", self.log_prefix(), exc.reason, text)
            except (ConnectionError, RuntimeError) as exc:
                logger.info("%s: send failed (%s), stopping its writer", self.log_prefix(), exc)
                return

    def _on_writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # the handler is closing the connection itself
            return
        exc = task.exception()
        if exc is not None:
            logger.error("%s: writer failed, closing the connection", self.log_prefix(), exc_info=exc)
        if self.ws.closed:  # a close is under way (e.g. shutdown's 1001): let it finish
            return
        # Nothing would reach this client any more: drop it (its handler then cleans up) rather than keep a zombie.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class SignalingServer:
    """Rooms of participants and the WebSocket handler that relays between them."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.rooms: dict[str, dict[str, _Connection]] = {}
        self.connections: set[_Connection] = set()
        self.app = web.Application()
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/", self._static)
        self.app.router.add_get("/{path:.+}", self._static)
        self.app.on_shutdown.append(self._on_shutdown)

    # -- HTTP ----------------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        peers = sum(len(r) for r in self.rooms.values())
        return web.json_response({"status": "ok", "rooms": len(self.rooms), "peers": peers, "connections": len(self.connections)})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        root = self.config.static_dir
        rel = request.match_info.get("path", "") or "index.html"
        if root is None:
            raise web.HTTPNotFound(text="this server serves no files (started without a static directory)\n")
        try:
            path = (root / rel).resolve()
            path.relative_to(root.resolve())
        except (ValueError, OSError):
            raise web.HTTPNotFound(text=f"no such file: {rel!r}\n") from None
        if not path.is_file():
            hint = " (the browser page is not installed in this build)" if rel == "index.html" else ""
            raise web.HTTPNotFound(text=f"no such file: {rel!r}{hint}\n")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    # -- WebSocket -----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        config = self.config
        ws = web.WebSocketResponse(heartbeat=config.heartbeat_s, max_msg_size=HARD_MAX_FRAME_BYTES)
        await ws.prepare(request)
        if len(self.connections) >= config.max_connections:
            await ws.send_str(m.encode_server_message(m.Error(m.SERVER_FULL, f"server holds {config.max_connections} connections; try later")))
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"server full")
            return ws
        conn = _Connection(ws, config, request.remote or "?", request.transport)
        self.connections.add(conn)
        conn.start_writer()
        logger.info("%s: connected", conn.log_prefix())
        reason = "disconnected"
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_text(conn, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._reject(conn, m.ProtocolError(m.BAD_FRAME, "binary frames are not accepted: send JSON text"), None)
                elif frame.type == WSMsgType.ERROR:
                    logger.info("%s: connection error %s", conn.log_prefix(), ws.exception())
                    break
                if conn.violations > MAX_VIOLATIONS or conn.failed_joins > MAX_FAILED_JOINS:
                    logger.warning("%s: too many rejected messages, closing", conn.log_prefix())
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many invalid messages")
                    break
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        finally:
            self._leave(conn, reason)
            self.connections.discard(conn)
            if conn.writer is not None:
                conn.writer.cancel()
            logger.info("%s: closed", conn.log_prefix())
        return ws

    def _reject(self, conn: _Connection, exc: m.ProtocolError, ref: str | None) -> None:
        conn.violations += 1
        logger.info("%s: rejected message (%s): %s", conn.log_prefix(), exc.code, exc)
        conn.post(m.Error(exc.code, str(exc), ref))

    def _on_text(self, conn: _Connection, data: str) -> None:
        if not conn.bucket.take():
            conn.violations += 1
            now = time.monotonic()
            if now - conn.last_rate_error >= 1.0:  # one error per second, not one per dropped message
                conn.last_rate_error = now
                conn.post(m.Error(m.RATE_LIMITED, f"more than {self.config.rate_per_s:g} messages/s: message dropped", m.message_type_of(data)))
            return
        try:
            msg = m.decode_client_message(data)
        except m.ProtocolError as exc:
            self._reject(conn, exc, m.message_type_of(data))
            return
        try:
            self._dispatch(conn, msg)
        except m.ProtocolError as exc:
            self._reject(conn, exc, m.message_type_of(data))

    def _dispatch(self, conn: _Connection, msg: m.ClientMessage) -> None:
        if isinstance(msg, m.Ping):
            conn.post(m.Pong(msg.nonce))
        elif isinstance(msg, m.Join):
            self._join(conn, msg)
        elif isinstance(msg, m.Leave):
            if conn.room is None:
                raise m.ProtocolError(m.NOT_JOINED, "'leave' before 'join'")
            self._leave(conn, "left")
        elif isinstance(msg, (m.SessionDescription, m.IceCandidate)):
            if conn.room is None:
                raise m.ProtocolError(m.NOT_JOINED, f"join a room before sending {type(msg).__name__}")
            target = self.rooms.get(conn.room, {}).get(msg.peer)
            if target is None or target is conn:
                raise m.ProtocolError(m.UNKNOWN_PEER, f"no peer {msg.peer!r} in room {conn.room!r}")
            if isinstance(msg, m.SessionDescription):
                target.post(m.SessionDescription(msg.kind, conn.peer_id, msg.sdp))
            else:
                target.post(m.IceCandidate(conn.peer_id, msg.candidate, msg.sdp_mid, msg.sdp_mline_index))

    def _join(self, conn: _Connection, msg: m.Join) -> None:
        if conn.room is not None:
            raise m.ProtocolError(m.ALREADY_JOINED, f"already in room {conn.room!r}: send 'leave' first")
        expected = self.config.token_for(msg.room)
        if expected is not None and not hmac.compare_digest((msg.token or "").encode(), expected.encode()):
            conn.failed_joins += 1
            raise m.ProtocolError(m.UNAUTHORIZED, f"room {msg.room!r} needs its token: the given one is {'missing' if msg.token is None else 'wrong'}")
        room = self.rooms.get(msg.room)
        if room is None:
            if len(self.rooms) >= self.config.max_rooms:
                raise m.ProtocolError(m.SERVER_FULL, f"the server holds its maximum of {self.config.max_rooms} rooms")
            room = self.rooms[msg.room] = {}
        if len(room) >= self.config.max_peers_per_room:
            raise m.ProtocolError(m.ROOM_FULL, f"room {msg.room!r} is full ({self.config.max_peers_per_room} participants)")
        conn.room, conn.role = msg.room, msg.role
        conn.post(m.Joined(conn.peer_id, msg.room, msg.role, tuple(p.info for p in room.values())))
        for other in room.values():
            other.post(m.PeerJoined(conn.info))
        room[conn.peer_id] = conn
        logger.info("%s: joined", conn.log_prefix())

    def _leave(self, conn: _Connection, reason: str) -> None:
        if conn.room is None:
            return
        room = self.rooms.get(conn.room, {})
        room.pop(conn.peer_id, None)
        for other in room.values():
            other.post(m.PeerLeft(conn.info, reason))
        if not room:
            self.rooms.pop(conn.room, None)
        logger.info("%s: left (%s)", conn.log_prefix(), reason)
        conn.room, conn.role = None, None

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    async def close_all(self) -> None:
        """Tell every room its peers left ("shutdown") and close every WebSocket with 1001 (going away)."""
        conns = list(self.connections)
        for conn in conns:
            self._leave(conn, "shutdown")
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in conns), return_exceptions=True
        )


@dataclass
class RunningServer:
    """A started server: its bound address and a ``close`` that shuts it down gracefully."""

    server: SignalingServer
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. http://127.0.0.1:8080"""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws"""
        return self.url.replace("http://", "ws://", 1) + "/ws"

    async def close(self) -> None:
        """Close the WebSockets gracefully (1001), then stop listening and serving."""
        await self.server.close_all()
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    """Start listening (port 0 picks a free port); returns once the socket is bound."""
    server = SignalingServer(config)
    runner = web.AppRunner(server.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    addresses: list[Any] = runner.addresses  # sockname tuples of the bound sockets
    port = int(addresses[0][1]) if addresses else config.port
    logger.info("signaling server on http://%s:%d (ws endpoint /ws)", config.host, port)
    return RunningServer(server, runner, config.host, port)
