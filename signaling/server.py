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
escape), which is never relayed. Each connection has an outbox bounded in messages and in bytes,
drained by its own writer task, so a slow or stuck client never blocks the relaying of others: when
its outbox overflows it is dropped (close code ``CLOSE_NOT_READING``, then the TCP connection is
aborted). A message the writer cannot encode is logged and dropped; a writer that stops for any other
reason closes its connection, so no client is left connected but deaf. Frames above
``HARD_MAX_FRAME_BYTES`` close the connection (aiohttp's limit).

Roles (``signaling/PROTOCOL.md`` §1, "Roles and credentials"): with a ticket secret every join needs a
signed ticket naming its room and role (``signaling.credentials``), and a second sender (or
receiver) with a valid ticket replaces the first; without one (shared tokens or open rooms) the first
sender and the first receiver of a room hold their roles while connected, and a second is refused.
Relays run only between roles that talk to each other (sender-receiver, receiver-viewer, and
viewer-sender for a viewer granted the original pictures). What a viewer is granted (the original, control of
the call) comes from its ticket, or from ``open_original``/``open_control`` without tickets, and travels in its
peer entry (``PeerInfo.grants``) to the peers that serve it: the receiver enforces control. WebSockets from a browser page of another
origin are refused (``allow_origins`` adds some). Per-IP limits (``signaling.limits``) bound TCP
connections, rooms, joins and failed joins; HTTP connections that send no complete request within
``http_idle_timeout_s`` are closed; fd exhaustion is logged once per 10 s, not once per accept.

Rooms live in a ``signaling.room_store.RoomStore``: in this process's memory by default
(``signaling.memory_rooms``), or in Redis (``ServerConfig.redis``, ``signaling.redis_rooms``) so that several
instances serve the same rooms. The server keeps the sockets, the credentials and the per-connection
limits; the store keeps who is in which room and delivers room messages back through ``deliver``.
With ``ServerConfig.turn`` every admitted peer gets TURN credentials (``signaling.turn``) just before ``joined``.
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
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from yarl import URL

from signaling import messages as m
from signaling import room_store as rs
from signaling.credentials import Ticket, TicketError, check_secret_bytes, looks_like_ticket, verify_ticket
from signaling.limits import AcceptErrorFilter, ClientLimits, GuardedProtocol, IpQuotas, ThrottledLog, TokenBucket
from signaling.memory_rooms import MemoryRoomStore
from signaling.turn import TurnConfig, ice_servers_for

if TYPE_CHECKING:
    from signaling.redis_rooms import RedisConfig

logger = logging.getLogger(__name__)

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"
HARD_MAX_FRAME_BYTES = 1024 * 1024  # larger frames close the connection (1009); 64 KiB-1 MiB get an error
MAX_VIOLATIONS = 500  # rejected messages before a connection is closed (policy violation)
MAX_FAILED_JOINS = 5
CLOSE_NOT_READING = 4008  # WebSocket close code: the client did not read, its outbox overflowed


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
    outbox_bytes: int = 512 * 1024  # queued outgoing bytes per connection before it is dropped as stuck
    heartbeat_s: float = 15.0  # WebSocket ping interval (dead peers are noticed within ~2 intervals)
    ticket_secret: bytes | None = field(default=None, repr=False)  # every join needs a ticket signed with it
    open_original: bool = True  # without tickets, viewers may ask the sender for its original pictures
    open_control: bool = True  # without tickets, viewers may send commands and avatars to the receiver
    allow_origins: tuple[str, ...] = ()  # page origins allowed besides the server's own ("*": any)
    limits: ClientLimits = ClientLimits()  # per-IP quotas and join rates
    http_idle_timeout_s: float = 10.0  # an HTTP connection with no complete request for this long is closed
    stuck_close_grace_s: float = 2.0  # a dropped stuck client gets this long to take its close frame
    redis: RedisConfig | None = None  # share rooms with other instances through Redis (None: rooms in this process)
    turn: TurnConfig | None = field(default=None, repr=False)  # hand TURN credentials to every peer that joins

    def __post_init__(self) -> None:
        for room, secret in self.room_tokens.items():
            m.check_room_name(room)
            _check_secret(secret, f"the token of room {room!r}")
        if self.token is not None:
            _check_secret(self.token, "the token")
        if self.ticket_secret is not None:
            check_secret_bytes(self.ticket_secret, "the ticket secret")
            if self.token is not None or self.room_tokens:
                raise ValueError("give a ticket secret or shared tokens (--token/--room-token), not both: tickets bind roles, tokens do not")
        for origin in self.allow_origins:
            if origin != "*" and _origin_key(origin) is None:
                raise ValueError(f"allowed origin {origin!r} must look like https://host[:port] (or * for any)")
        if self.outbox_bytes < 2 * m.MAX_MESSAGE_BYTES:
            raise ValueError(f"outbox_bytes must hold at least two messages ({2 * m.MAX_MESSAGE_BYTES}), got {self.outbox_bytes}")

    def token_for(self, room: str) -> str | None:
        """The secret that ``room`` requires, or None for an open room."""
        return self.room_tokens.get(room, self.token)

    @property
    def room_limits(self) -> rs.RoomLimits:
        return rs.RoomLimits(self.max_rooms, self.max_peers_per_room, self.limits.max_rooms_per_ip)


def _check_secret(secret: str, what: str) -> None:
    at = m.unencodable_at(secret)
    if at is not None:  # e.g. a non-UTF-8 byte of argv, decoded with surrogateescape
        raise ValueError(f"{what} is not encodable as UTF-8 (character {at}): use UTF-8 text")


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a web origin, lower-cased with the default port filled in; None if it is not one."""
    try:
        url = URL(origin.strip())
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.port is None or url.path not in ("", "/"):
        return None
    return url.scheme, url.host.lower(), url.port


class _Connection:
    """One WebSocket: its outbox and writer task, and its room membership once joined."""

    def __init__(self, ws: web.WebSocketResponse, config: ServerConfig, remote: str, transport: asyncio.BaseTransport | None) -> None:
        self.ws = ws
        self.transport = transport
        self.peer_id = secrets.token_hex(4)
        self.remote = remote
        self.member: rs.Member | None = None  # set while it is in a room (from the start of its join)
        self.room: str | None = None
        self.ticket: Ticket | None = None  # the ticket it joined with, when the server uses tickets
        self.bucket = TokenBucket(config.rate_per_s, config.rate_burst)
        self.outbox: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue(maxsize=config.outbox_size)
        self.outbox_limit = config.outbox_bytes
        self.outbox_bytes = 0  # queued, not yet handed to the socket
        self.outbox_peak = 0
        self.close_grace_s = config.stuck_close_grace_s
        self.violations = 0
        self.failed_joins = 0
        self.last_rate_error = 0.0
        self.writer: asyncio.Task[None] | None = None
        self.overflowed = False

    @property
    def role(self) -> m.Role | None:
        return None if self.member is None else self.member.role

    @property
    def original(self) -> bool:
        """(A viewer) may exchange signaling with the sender for its original pictures."""
        return self.member is not None and self.member.original

    def log_prefix(self) -> str:
        return f"peer {self.peer_id} ({self.remote}{'' if self.room is None else f', room {self.room}, {self.role}'})"

    def post(self, msg: m.ServerMessage) -> None:
        """Queue a message without waiting; an outbox over its messages or bytes marks the client stuck and drops it."""
        if not self.overflowed:
            self.post_text(m.encode_server_message(msg))

    def post_text(self, text: str) -> None:
        """``post`` for a message already encoded (what a room store delivers)."""
        if self.overflowed:
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        if self.outbox_bytes + size > self.outbox_limit or self.outbox.full():
            self._drop_stuck(size)
            return
        self.outbox.put_nowait((text, size))
        self.outbox_bytes += size
        self.outbox_peak = max(self.outbox_peak, self.outbox_bytes)

    def _drop_stuck(self, size: int) -> None:
        self.overflowed = True
        logger.warning(
            "%s: not reading: %d messages (%d bytes) queued and %d more bytes to send, over the limits of %d messages or %d bytes;"
            " dropping it (close code %d)", self.log_prefix(), self.outbox.qsize(), self.outbox_bytes, size,
            self.outbox.maxsize, self.outbox_limit, CLOSE_NOT_READING,
        )
        while not self.outbox.empty():  # free what it would have been sent
            self.outbox.get_nowait()
        self.outbox_bytes = 0
        self.outbox.put_nowait(None)  # the writer stops after the frame it is sending (cancelling it mid-drain would
        asyncio.ensure_future(self._close_stuck())  # also cancel the drain the close frame waits on)

    async def _close_stuck(self) -> None:
        """Let the writer finish its frame, send the close frame (it queues behind what the socket holds) and abort the
        TCP connection if the client has not taken it within the grace period."""
        try:
            async with asyncio.timeout(self.close_grace_s):
                if self.writer is not None:
                    await asyncio.wait({self.writer})
                await self.ws.close(code=CLOSE_NOT_READING, message=b"not reading: outbox overflow")
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:  # abort even a closing transport: a close waits for its unsent bytes, which a stuck client never takes
            if self.transport is not None:
                self.transport.abort()

    def start_writer(self) -> None:
        """Start the writer task; whenever it ends other than by cancellation, the connection is closed."""
        self.writer = asyncio.ensure_future(self._write_loop())
        self.writer.add_done_callback(self._on_writer_done)

    async def _write_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is None or self.ws.closed:
                return
            text, size = item
            self.outbox_bytes -= size
            try:
                await self.ws.send_str(text)
            except UnicodeEncodeError as exc:  # encoded before any byte is written: the stream stays intact
                logger.warning("%s: outgoing message cannot be encoded as UTF-8 (%s), dropped: %.80r", self.log_prefix(), exc.reason, text)
            except (ConnectionError, RuntimeError) as exc:
                logger.info("%s: send failed (%s), stopping its writer", self.log_prefix(), exc)
                return

    def _on_writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.overflowed:  # the handler, or _close_stuck, is closing the connection itself
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

    def __init__(self, config: ServerConfig, store: rs.RoomStore | None = None) -> None:
        self.config = config
        self.store = store or MemoryRoomStore(config.room_limits)
        self.connections: set[_Connection] = set()
        self._by_peer: dict[str, _Connection] = {}
        self.quotas = IpQuotas(config.limits)
        self._allowed_origins = {key for o in config.allow_origins if (key := _origin_key(o)) is not None}
        self._any_origin = "*" in config.allow_origins
        self._refused_log = ThrottledLog(10.0)
        self.app = web.Application()
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/", self._static)
        self.app.router.add_get("/{path:.+}", self._static)
        self.app.on_shutdown.append(self._on_shutdown)

    @property
    def rooms(self) -> dict[str, dict[str, _Connection]]:
        """The rooms this instance's connections are in, and those connections (with Redis: only the local members)."""
        rooms: dict[str, dict[str, _Connection]] = {}
        for conn in self.connections:
            if conn.room is not None:
                rooms.setdefault(conn.room, {})[conn.peer_id] = conn
        return rooms

    # -- what the room store calls (signaling.room_store.LocalPeers) ----------------------------
    def deliver(self, room: str, peer_id: str, text: str) -> None:
        conn = self._by_peer.get(peer_id)
        if conn is not None and conn.room == room:
            conn.post_text(text)

    def joined(self, room: str, msg: m.Joined) -> None:
        conn = self._by_peer.get(msg.peer_id)
        if conn is None or conn.room != room:
            return
        if self.config.turn is not None:  # it is in: its relay credentials come just before the room's first message
            conn.post(ice_servers_for(self.config.turn, conn.peer_id, time.time()))
        conn.post(msg)

    def evict(self, room: str, peer_id: str, reason: str) -> None:
        conn = self._by_peer.get(peer_id)
        if conn is None or conn.room != room:
            return
        role = conn.role
        logger.info("%s: removed from the room (%s)", conn.log_prefix(), reason)
        conn.room, conn.member, conn.ticket = None, None, None
        if reason == "replaced":
            conn.post(m.Error(m.REPLACED, f"another {role} with a valid ticket joined room {room!r} and took over the role", "join"))
        else:  # this instance was given up for dead: the client reconnects (to any instance) and joins again
            asyncio.ensure_future(conn.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"room membership expired: reconnect"))

    # -- HTTP ----------------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            counts = await self.store.counts()
        except rs.StoreUnavailable as exc:  # a load balancer's health check takes this instance out
            return web.json_response({"status": "unavailable", "error": str(exc)}, status=503)
        body: dict[str, object] = {"status": "ok", "rooms": counts.rooms, "peers": counts.peers, "connections": len(self.connections)}
        instance = getattr(self.store, "instance", None)
        if instance is not None:
            body["instance"] = instance
        return web.json_response(body)

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
        # cross-origin isolated (COOP/COEP): receive.html's onnxruntime-web may then run WASM threads
        return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Cross-Origin-Opener-Policy": "same-origin",
                                               "Cross-Origin-Embedder-Policy": "require-corp"})

    # -- WebSocket -----------------------------------------------------------------------------
    def on_connection_refused(self, ip: str) -> None:
        """A TCP connection of ``ip`` was aborted: the IP holds its quota of connections."""
        self._refused_log.log(
            logger, logging.WARNING, "refusing connections from %s: it holds its %d (--max-connections-per-ip)",
            ip, self.config.limits.max_connections_per_ip,
        )

    def origin_allowed(self, origin: str | None, request: web.Request) -> bool:
        """No Origin header (not a browser), the server's own origin, or one of ``allow_origins``."""
        if origin is None or self._any_origin:
            return True
        key = _origin_key(origin)
        if key is None:  # "null" (a file:// page, a sandboxed frame) or garbage
            return False
        return key == _origin_key(f"{request.scheme}://{request.host}") or key in self._allowed_origins

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        origin = request.headers.get(hdrs.ORIGIN)
        if not self.origin_allowed(origin, request):
            logger.warning("refused a WebSocket from %s with Origin %.100r (host %.100r)", request.remote, origin, request.host)
            raise web.HTTPForbidden(
                text=f"a page of origin {origin!r:.100} may not use this signaling server (it serves {request.scheme}://{request.host});"
                f" start the server with --allow-origin {origin!s:.100} to allow it\n"
            )
        ws = web.WebSocketResponse(heartbeat=config.heartbeat_s, max_msg_size=HARD_MAX_FRAME_BYTES)
        await ws.prepare(request)
        if len(self.connections) >= config.max_connections:
            await ws.send_str(m.encode_server_message(m.Error(m.SERVER_FULL, f"server holds {config.max_connections} connections; try later")))
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"server full")
            return ws
        conn = _Connection(ws, config, request.remote or "?", request.transport)
        self.connections.add(conn)
        self._by_peer[conn.peer_id] = conn
        conn.start_writer()
        logger.info("%s: connected", conn.log_prefix())
        reason = "disconnected"
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._on_text(conn, frame.data)
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
            await self._leave(conn, reason)
            self.connections.discard(conn)
            self._by_peer.pop(conn.peer_id, None)
            if conn.writer is not None:
                conn.writer.cancel()
            logger.info("%s: closed", conn.log_prefix())
        return ws

    def _reject(self, conn: _Connection, exc: m.ProtocolError, ref: str | None) -> None:
        conn.violations += 1
        logger.info("%s: rejected message (%s): %s", conn.log_prefix(), exc.code, exc)
        conn.post(m.Error(exc.code, str(exc), ref))

    async def _on_text(self, conn: _Connection, data: str) -> None:
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
            await self._dispatch(conn, msg)
        except rs.StoreUnavailable as exc:
            logger.warning("%s: %s", conn.log_prefix(), exc)
            conn.post(m.Error(m.UNAVAILABLE, f"the server cannot reach its rooms right now ({exc}): try again shortly", m.message_type_of(data)))
        except m.ProtocolError as exc:
            self._reject(conn, exc, m.message_type_of(data))

    async def _dispatch(self, conn: _Connection, msg: m.ClientMessage) -> None:
        if isinstance(msg, m.Ping):
            conn.post(m.Pong(msg.nonce))
        elif isinstance(msg, m.Join):
            await self._join(conn, msg)
        elif isinstance(msg, m.Leave):
            if conn.room is None:
                raise m.ProtocolError(m.NOT_JOINED, "'leave' before 'join'")
            await self._leave(conn, "left")
        elif isinstance(msg, (m.SessionDescription, m.IceCandidate)):
            if conn.room is None or conn.member is None:
                raise m.ProtocolError(m.NOT_JOINED, f"join a room before sending {type(msg).__name__}")
            relayed: m.SessionDescription | m.IceCandidate
            if isinstance(msg, m.SessionDescription):
                relayed = m.SessionDescription(msg.kind, conn.peer_id, msg.sdp, msg.stream)
            else:
                relayed = m.IceCandidate(conn.peer_id, msg.candidate, msg.sdp_mid, msg.sdp_mline_index, msg.stream)
            await self.store.relay(conn.room, conn.member, msg.peer, relayed)

    def _admit(self, conn: _Connection, msg: m.Join) -> Ticket | None:
        """Check the join's credential: the Ticket with a ticket secret, None for a shared token or an open room."""
        secret = self.config.ticket_secret
        if secret is not None:
            if msg.token is None:
                raise m.ProtocolError(m.UNAUTHORIZED, f"room {msg.room!r} needs a join ticket for the role {msg.role}: the token is missing")
            try:
                return verify_ticket(secret, msg.token, msg.room, msg.role)
            except TicketError as exc:
                raise m.ProtocolError(m.UNAUTHORIZED, f"room {msg.room!r} as {msg.role}: {exc}") from None
        expected = self.config.token_for(msg.room)
        if expected is not None and not hmac.compare_digest((msg.token or "").encode(), expected.encode()):
            hint = " (a join ticket, but this server uses shared tokens)" if looks_like_ticket(msg.token) else ""
            raise m.ProtocolError(
                m.UNAUTHORIZED, f"room {msg.room!r} needs its token: the given one is {'missing' if msg.token is None else 'wrong'}{hint}"
            )
        return None

    async def _join(self, conn: _Connection, msg: m.Join) -> None:
        if conn.room is not None:
            raise m.ProtocolError(m.ALREADY_JOINED, f"already in room {conn.room!r}: send 'leave' first")
        wait_s = self.quotas.take_join(conn.remote)
        if wait_s is not None:
            raise m.ProtocolError(
                m.RATE_LIMITED, f"too many joins or refused tokens from {conn.remote}: try again in {max(1.0, wait_s):.0f} s"
            )
        try:
            ticket = self._admit(conn, msg)
        except m.ProtocolError:
            conn.failed_joins += 1
            self.quotas.failed_join(conn.remote)
            raise
        viewer = msg.role == "viewer"
        original = viewer and (ticket.original if ticket is not None else self.config.open_original)
        control = viewer and (ticket.control if ticket is not None else self.config.open_control)
        member = rs.Member(conn.peer_id, msg.role, conn.remote, original, ticketed=ticket is not None, control=control)
        # In the room from here on, so that what the store delivers for it (joined first) reaches it.
        conn.room, conn.member, conn.ticket = msg.room, member, ticket
        try:
            await self.store.join(msg.room, member)
        except BaseException:
            if conn.member is member:
                conn.room, conn.member, conn.ticket = None, None, None
            raise
        logger.info("%s: joined%s", conn.log_prefix(), "" if ticket is None else " (ticket)")

    async def _leave(self, conn: _Connection, reason: str) -> None:
        room, member = conn.room, conn.member
        if room is None or member is None:
            return
        conn.room, conn.member, conn.ticket = None, None, None
        logger.info("%s: left (%s)", f"peer {conn.peer_id} ({conn.remote}, room {room}, {member.role})", reason)
        try:
            await self.store.leave(room, member, reason)
        except rs.StoreUnavailable as exc:  # the store retries it; the connection's own cleanup goes on
            logger.warning("peer %s: its leave of room %s is pending: %s", conn.peer_id, room, exc)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    async def close_all(self) -> None:
        """Tell every room its peers left ("shutdown") and close every WebSocket with 1001 (going away)."""
        conns = list(self.connections)
        for conn in conns:
            await self._leave(conn, "shutdown")
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in conns), return_exceptions=True
        )


def create_room_store(config: ServerConfig) -> rs.RoomStore:
    """Rooms in Redis when ``config.redis`` is set, else in this process."""
    if config.redis is None:
        return MemoryRoomStore(config.room_limits)
    from signaling.redis_rooms import RedisRoomStore  # only a server with --redis needs redis-py loaded

    return RedisRoomStore(config.redis, config.room_limits)


@dataclass
class RunningServer:
    """A started server: its bound address and a ``close`` that shuts it down gracefully."""

    server: SignalingServer
    runner: web.AppRunner
    host: str
    port: int
    listener: asyncio.Server | None = None
    accept_errors: AcceptErrorFilter | None = None

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
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()
        await self.server.store.close()
        if self.accept_errors is not None:
            self.accept_errors.uninstall()


async def start_server(config: ServerConfig) -> RunningServer:
    """Start listening (port 0 picks a free port); returns once the socket is bound.

    Every TCP connection goes through ``GuardedProtocol`` (the per-IP connection quota) before aiohttp
    sees it; aiohttp's keep-alive timer, which also runs before the first request, closes a connection
    that sends no complete request within ``http_idle_timeout_s`` (a silent or slowloris socket).
    With ``config.redis`` the rooms are in Redis: ``room_store.StoreUnavailable`` if it cannot be reached."""
    server = SignalingServer(config, create_room_store(config))
    await server.store.start(server)
    runner = web.AppRunner(
        server.app, handle_signals=False, access_log=None, shutdown_timeout=2.0, keepalive_timeout=config.http_idle_timeout_s
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    accept_errors = AcceptErrorFilter(loop)
    accept_errors.install()
    handler_factory = runner.server
    assert handler_factory is not None  # set by setup()
    try:
        listener = await loop.create_server(
            lambda: GuardedProtocol(handler_factory(), server.quotas, server.on_connection_refused),
            config.host, config.port, reuse_address=True, backlog=128,
        )
    except BaseException:
        accept_errors.uninstall()
        await runner.cleanup()
        await server.store.close()
        raise
    port = int(listener.sockets[0].getsockname()[1]) if listener.sockets else config.port
    logger.info("signaling server on http://%s:%d (ws endpoint /ws)", config.host, port)
    return RunningServer(server, runner, config.host, port, listener, accept_errors)
