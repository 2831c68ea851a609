"""Signaling messages: typed dataclasses and pure, validating JSON encode/decode (no I/O here).

Every message is one JSON object in one WebSocket text frame, with a ``"type"`` field. The layouts
are documented in ``signaling/PROTOCOL.md``. ``decode_client_message`` (server side) and
``decode_server_message`` (client side) accept any ``str``/``bytes`` and either return a message or
raise ``ProtocolError`` carrying an error code and a message that quotes the bad value; nothing
else escapes them. Every string of an accepted message (field names included) is encodable as UTF-8:
a lone surrogate such as ``"\ud800"`` (valid JSON, not valid Unicode text) is rejected, so no relayed
message can fail to encode on its way out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

MAX_MESSAGE_BYTES = 64 * 1024  # one signaling message, UTF-8 encoded
MAX_SDP_CHARS = 60_000
MAX_CANDIDATE_CHARS = 1024
MAX_TOKEN_CHARS = 256
MAX_ERROR_CHARS = 512
MAX_ICE_SERVERS = 8
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # whole string (fullmatch): no dots, no newline
ROOM_RULE = "1-64 characters of A-Z a-z 0-9 _ -"
PEER_ID_PATTERN = re.compile(r"[a-z0-9]{1,32}")  # whole string (fullmatch)
ROLES = ("sender", "receiver", "viewer", "participant")
Role = Literal["sender", "receiver", "viewer", "participant"]
RELAY_TYPES = ("offer", "answer", "candidate")
# What a viewer may do besides watching the synthesized video (the ``grants`` of its peer entry, PROTOCOL.md §1).
GRANT_ORIGINAL = "original"  # ask the sender for its original pictures (§5)
GRANT_CONTROL = "control"  # send commands and avatar uploads to the receiver (§4)
GRANTS = (GRANT_ORIGINAL, GRANT_CONTROL)  # also the order grants are written in

# Error codes (the ``code`` field of an ``error`` message).
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
NOT_JOINED = "not_joined"
ALREADY_JOINED = "already_joined"
UNAUTHORIZED = "unauthorized"
ROOM_FULL = "room_full"
SERVER_FULL = "server_full"
UNKNOWN_PEER = "unknown_peer"
BAD_FRAME = "bad_frame"
FORBIDDEN = "forbidden"  # a relay between roles that have no link (or a viewer not granted the original)
ROLE_TAKEN = "role_taken"  # the room's sender (receiver) holds the role; no credential lets this join take it
REPLACED = "replaced"  # (to the old holder) a newer sender/receiver with a valid ticket took the role
OVER_QUOTA = "over_quota"  # the client's address is at a per-IP quota
UNAVAILABLE = "unavailable"  # the server cannot reach where its rooms are (Redis); try again shortly


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``code`` is one of the error codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_room_name(name: object) -> bool:
    """Whether ``name`` is a valid room name (``ROOM_RULE``): the one rule wherever a room is named."""
    return isinstance(name, str) and ROOM_PATTERN.fullmatch(name) is not None


def check_room_name(name: str, what: str = "room") -> str:
    """``name`` if it is a valid room name, else ValueError quoting it and the rule."""
    if not is_room_name(name):
        raise ValueError(f"{what} {name!r:.70} is not a valid room name: use {ROOM_RULE}")
    return name


def unencodable_at(text: str) -> int | None:
    """Index of the first character of ``text`` not encodable as UTF-8 (a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


# -- client -> server ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Join:
    """Enter ``room`` as ``role``; ``token`` is the room's shared secret when the server requires one."""

    room: str
    role: Role
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Leave:
    """Leave the room (the connection stays open and may join again)."""


@dataclass(frozen=True)
class Ping:
    """Liveness check; the server answers ``Pong`` with the same ``nonce``."""

    nonce: int = 0


@dataclass(frozen=True)
class SessionDescription:
    """An SDP offer or answer: sent with ``peer`` = the recipient, received with ``peer`` = the sender.

    ``stream`` (calls of participants only): the peer id of the participant whose motion the connection
    carries, so that a participant can tell the connection it sends on from those it receives on (PROTOCOL.md §1)."""

    kind: Literal["offer", "answer"]
    peer: str
    sdp: str
    stream: str | None = None


@dataclass(frozen=True)
class IceCandidate:
    """A trickled ICE candidate (``candidate`` None or "" = end of candidates); ``peer`` as above."""

    peer: str
    candidate: str | None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    stream: str | None = None  # as SessionDescription.stream


ClientMessage: TypeAlias = Join | Leave | Ping | SessionDescription | IceCandidate


# -- server -> client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerInfo:
    """A participant of a room; ``grants`` (a viewer's only, in ``GRANTS`` order) is what the server lets it do."""

    peer_id: str
    role: Role
    grants: tuple[str, ...] = ()

    @property
    def control(self) -> bool:
        """(A viewer) may send commands and avatar uploads to the receiver that serves it."""
        return GRANT_CONTROL in self.grants

    @property
    def original(self) -> bool:
        """(A viewer) may ask the sender for its original pictures."""
        return GRANT_ORIGINAL in self.grants


def granted_peer(peer_id: str, role: Role, original: bool = False, control: bool = False) -> PeerInfo:
    """A room member as the others are told of it: a viewer with the grants it has (in ``GRANTS`` order), any
    other role with none (the store's flags of a sender or receiver are not grants)."""
    if role != "viewer":
        return PeerInfo(peer_id, role)
    return PeerInfo(peer_id, role, tuple(g for g, on in ((GRANT_ORIGINAL, original), (GRANT_CONTROL, control)) if on))


@dataclass(frozen=True)
class Joined:
    """You joined ``room`` as ``peer_id``; ``peers`` are the others already there."""

    peer_id: str
    room: str
    role: Role
    peers: tuple[PeerInfo, ...]


@dataclass(frozen=True)
class PeerJoined:
    """Another participant entered your room."""

    peer: PeerInfo


@dataclass(frozen=True)
class PeerLeft:
    """A participant left your room (``reason``: "left", "disconnected", "replaced", "shutdown", ...)."""

    peer: PeerInfo
    reason: str = "left"


@dataclass(frozen=True)
class Pong:
    nonce: int = 0


@dataclass(frozen=True)
class Error:
    """In-band error answer; ``ref`` is the type of the message it answers, when known."""

    code: str
    message: str
    ref: str | None = None


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server entry, as a browser's ``RTCIceServer``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class IceServers:
    """The ICE servers (TURN with time-limited credentials) to use in this room, sent just before ``Joined``."""

    servers: tuple[IceServer, ...]
    expires_s: int  # unix seconds when the credentials stop working for new allocations


ServerMessage: TypeAlias = Joined | PeerJoined | PeerLeft | Pong | Error | SessionDescription | IceCandidate | IceServers


# -- encoding -----------------------------------------------------------------------------------
def encode_client_message(msg: ClientMessage) -> str:
    """A client message as its JSON text (the peer field is written as ``to``)."""
    obj: dict[str, Any]
    if isinstance(msg, Join):
        obj = {"type": "join", "room": msg.room, "role": msg.role}
        if msg.token is not None:
            obj["token"] = msg.token
    elif isinstance(msg, Leave):
        obj = {"type": "leave"}
    elif isinstance(msg, Ping):
        obj = {"type": "ping", "nonce": msg.nonce}
    elif isinstance(msg, SessionDescription):
        obj = _with_stream({"type": msg.kind, "to": msg.peer, "sdp": msg.sdp}, msg.stream)
    elif isinstance(msg, IceCandidate):
        obj = _candidate_obj(msg, "to")
    else:
        raise TypeError(f"not a client message: {type(msg).__name__}")
    return _dumps(obj)


def encode_server_message(msg: ServerMessage) -> str:
    """A server message as its JSON text (the peer field of relayed messages is written as ``from``)."""
    obj: dict[str, Any]
    if isinstance(msg, Joined):
        obj = {
            "type": "joined", "peer_id": msg.peer_id, "room": msg.room, "role": msg.role,
            "peers": [_with_grants({"peer_id": p.peer_id, "role": p.role}, p) for p in msg.peers],
        }
    elif isinstance(msg, PeerJoined):
        obj = _with_grants({"type": "peer_joined", "peer_id": msg.peer.peer_id, "role": msg.peer.role}, msg.peer)
    elif isinstance(msg, PeerLeft):
        obj = {"type": "peer_left", "peer_id": msg.peer.peer_id, "role": msg.peer.role, "reason": msg.reason}
    elif isinstance(msg, Pong):
        obj = {"type": "pong", "nonce": msg.nonce}
    elif isinstance(msg, Error):
        obj = {"type": "error", "code": msg.code, "message": msg.message[:MAX_ERROR_CHARS]}
        if msg.ref is not None:
            obj["ref"] = msg.ref
    elif isinstance(msg, SessionDescription):
        obj = _with_stream({"type": msg.kind, "from": msg.peer, "sdp": msg.sdp}, msg.stream)
    elif isinstance(msg, IceCandidate):
        obj = _candidate_obj(msg, "from")
    elif isinstance(msg, IceServers):
        obj = {"type": "ice_servers", "servers": [_ice_server_obj(s) for s in msg.servers], "expires": msg.expires_s}
    else:
        raise TypeError(f"not a server message: {type(msg).__name__}")
    return _dumps(obj)


def _with_grants(obj: dict[str, Any], peer: PeerInfo) -> dict[str, Any]:
    if peer.grants:  # absent: none granted (what every server before grants sent)
        obj["grants"] = list(peer.grants)
    return obj


def _ice_server_obj(server: IceServer) -> dict[str, Any]:
    obj: dict[str, Any] = {"urls": list(server.urls)}
    if server.username is not None:
        obj["username"] = server.username
    if server.credential is not None:
        obj["credential"] = server.credential
    return obj


def _candidate_obj(msg: IceCandidate, peer_key: str) -> dict[str, Any]:
    return _with_stream({
        "type": "candidate", peer_key: msg.peer, "candidate": msg.candidate,
        "sdpMid": msg.sdp_mid, "sdpMLineIndex": msg.sdp_mline_index,
    }, msg.stream)


def _with_stream(obj: dict[str, Any], stream: str | None) -> dict[str, Any]:
    if stream is not None:
        obj["stream"] = stream
    return obj


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- decoding -----------------------------------------------------------------------------------
def _loads(data: str | bytes | bytearray) -> tuple[dict[str, Any], str]:
    """Size check, JSON parse, object check; returns (object, type)."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError(TOO_LARGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(BAD_JSON, f"message is not UTF-8: {exc}") from None
    elif not isinstance(data, str):
        raise ProtocolError(BAD_FRAME, f"message must be text, got {type(data).__name__}")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(TOO_LARGE, f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, f"message must be a JSON object, got {type(obj).__name__}")
    _check_encodable(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, f"message needs a string 'type' field, got {kind!r:.40}")
    return obj, kind


def _check_encodable(obj: dict[str, Any]) -> None:
    """ProtocolError if any string of the parsed message (keys included, at any depth) is not UTF-8 text."""
    stack: list[tuple[str, Any]] = [("", obj)]  # (top-level field name as quoted in errors, value)
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            at = unencodable_at(value)
            if at is not None:
                raise ProtocolError(
                    BAD_MESSAGE,
                    f"field {where} contains {value[at]!r} at index {at}, a lone surrogate (not encodable as UTF-8):"
                    " \\uD800-\\uDFFF escapes must come in high-low pairs",
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if unencodable_at(key) is not None:
                    raise ProtocolError(BAD_MESSAGE, f"field name {key!r:.70} contains a lone surrogate (not encodable as UTF-8)")
                stack.append((where or repr(key)[:70], item))
        elif isinstance(value, list):
            stack.extend((where, item) for item in value)


def _fields(obj: dict[str, Any], kind: str, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    keys = set(obj) - {"type"}
    missing = required - keys
    if missing:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} message lacks {sorted(missing)}")
    extra = keys - required - optional
    if extra:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} message has unknown fields {sorted(extra)[:5]}")


def _str(obj: dict[str, Any], key: str, kind: str, max_chars: int, pattern: re.Pattern[str] | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field {key!r} must be a string, got {value!r:.40}")
    if len(value) > max_chars:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field {key!r} has {len(value)} characters, more than {max_chars}")
    if pattern is not None and not pattern.fullmatch(value):
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field {key!r} = {value!r:.70} does not match {pattern.pattern}")
    return value


def _opt_str(obj: dict[str, Any], key: str, kind: str, max_chars: int) -> str | None:
    if obj.get(key) is None:
        return None
    return _str(obj, key, kind, max_chars)


def _int(obj: dict[str, Any], key: str, kind: str, low: int, high: int, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field {key!r} must be an integer in [{low}, {high}], got {value!r:.40}")
    return value


def _room(obj: dict[str, Any], kind: str) -> str:
    value = obj.get("room")
    if not is_room_name(value):
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field 'room': room name {value!r:.70} is not valid: use {ROOM_RULE}")
    return value  # type: ignore[no-any-return]


def _role(obj: dict[str, Any], kind: str) -> Role:
    value = obj.get("role")
    if value not in ROLES:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field 'role' = {value!r:.40} is not one of {list(ROLES)}")
    return value  # type: ignore[no-any-return]


def _peer_info(obj: dict[str, Any], kind: str) -> PeerInfo:
    """A ``joined`` peer entry or a ``peer_joined`` message: ``peer_id``, ``role`` and a viewer's optional ``grants``."""
    peer_id, role = _str(obj, "peer_id", kind, 32, PEER_ID_PATTERN), _role(obj, kind)
    if "grants" not in obj:
        return PeerInfo(peer_id, role)
    grants = obj["grants"]
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants) or len(set(grants)) != len(grants):
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field 'grants' must be a list of distinct strings, got {grants!r:.60}")
    unknown = [g for g in grants if g not in GRANTS]
    if unknown:
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field 'grants' has {unknown[0]!r:.40}, not one of {list(GRANTS)}")
    if grants and role != "viewer":
        raise ProtocolError(BAD_MESSAGE, f"{kind!r} field 'grants' is for viewers only, not a {role}")
    return PeerInfo(peer_id, role, tuple(g for g in GRANTS if g in grants))


def _relay(obj: dict[str, Any], kind: str, peer_key: str) -> SessionDescription | IceCandidate:
    stream = None if obj.get("stream") is None else _str(obj, "stream", kind, 32, PEER_ID_PATTERN)
    if kind == "candidate":
        _fields(obj, kind, {peer_key}, {"candidate", "sdpMid", "sdpMLineIndex", "stream"})
        return IceCandidate(
            _str(obj, peer_key, kind, 32, PEER_ID_PATTERN),
            _opt_str(obj, "candidate", kind, MAX_CANDIDATE_CHARS),
            _opt_str(obj, "sdpMid", kind, 64),
            _int(obj, "sdpMLineIndex", kind, 0, 255, optional=True),
            stream,
        )
    _fields(obj, kind, {peer_key, "sdp"}, {"stream"})
    return SessionDescription(
        "offer" if kind == "offer" else "answer",
        _str(obj, peer_key, kind, 32, PEER_ID_PATTERN),
        _str(obj, "sdp", kind, MAX_SDP_CHARS),
        stream,
    )


def decode_client_message(data: str | bytes | bytearray) -> ClientMessage:
    """JSON text from a client -> a ClientMessage; ProtocolError for anything invalid."""
    obj, kind = _loads(data)
    if kind == "join":
        _fields(obj, kind, {"room", "role"}, {"token"})
        return Join(_room(obj, kind), _role(obj, kind), _opt_str(obj, "token", kind, MAX_TOKEN_CHARS))
    if kind == "leave":
        _fields(obj, kind, set())
        return Leave()
    if kind == "ping":
        _fields(obj, kind, set(), {"nonce"})
        return Ping(_int(obj, "nonce", kind, 0, 2**53, optional=True) or 0)
    if kind in RELAY_TYPES:
        return _relay(obj, kind, "to")
    raise ProtocolError(BAD_MESSAGE, f"unknown message type {kind!r:.40}; expected one of join, leave, ping, offer, answer, candidate")


def decode_server_message(data: str | bytes | bytearray) -> ServerMessage:
    """JSON text from the server -> a ServerMessage; ProtocolError for anything invalid."""
    obj, kind = _loads(data)
    if kind == "joined":
        _fields(obj, kind, {"peer_id", "room", "role", "peers"})
        peers = obj["peers"]
        if not isinstance(peers, list) or len(peers) > 1024:
            raise ProtocolError(BAD_MESSAGE, f"'joined' field 'peers' must be a list, got {peers!r:.40}")
        infos = []
        for p in peers:
            if not isinstance(p, dict):
                raise ProtocolError(BAD_MESSAGE, f"'joined' peer entry must be an object, got {p!r:.40}")
            _fields(p, "joined peer", {"peer_id", "role"}, {"grants"})
            infos.append(_peer_info(p, kind))
        return Joined(
            _str(obj, "peer_id", kind, 32, PEER_ID_PATTERN), _room(obj, kind),
            _role(obj, kind), tuple(infos),
        )
    if kind == "peer_joined":
        _fields(obj, kind, {"peer_id", "role"}, {"grants"})
        return PeerJoined(_peer_info(obj, kind))
    if kind == "peer_left":
        _fields(obj, kind, {"peer_id", "role"}, {"reason"})
        reason = _opt_str(obj, "reason", kind, 64) or "left"
        return PeerLeft(PeerInfo(_str(obj, "peer_id", kind, 32, PEER_ID_PATTERN), _role(obj, kind)), reason)
    if kind == "pong":
        _fields(obj, kind, set(), {"nonce"})
        return Pong(_int(obj, "nonce", kind, 0, 2**53, optional=True) or 0)
    if kind == "error":
        _fields(obj, kind, {"code", "message"}, {"ref"})
        return Error(_str(obj, "code", kind, 64), _str(obj, "message", kind, MAX_ERROR_CHARS), _opt_str(obj, "ref", kind, 64))
    if kind in RELAY_TYPES:
        return _relay(obj, kind, "from")
    if kind == "ice_servers":
        _fields(obj, kind, {"servers", "expires"})
        servers = obj["servers"]
        if not isinstance(servers, list) or len(servers) > MAX_ICE_SERVERS:
            raise ProtocolError(BAD_MESSAGE, f"'ice_servers' field 'servers' must be a list of at most {MAX_ICE_SERVERS}, got {servers!r:.40}")
        return IceServers(tuple(_ice_server(s) for s in servers), _int(obj, "expires", kind, 0, 2**53) or 0)
    raise ProtocolError(BAD_MESSAGE, f"unknown server message type {kind!r:.40}")


def _ice_server(obj: object) -> IceServer:
    kind = "ice_servers"
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, f"'ice_servers' entry must be an object, got {obj!r:.40}")
    _fields(obj, kind, {"urls"}, {"username", "credential"})
    urls = obj["urls"]
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_ICE_SERVERS or not all(isinstance(u, str) and len(u) <= 256 for u in urls):
        raise ProtocolError(BAD_MESSAGE, f"'ice_servers' field 'urls' must be a list of 1-{MAX_ICE_SERVERS} URLs, got {urls!r:.60}")
    return IceServer(tuple(urls), _opt_str(obj, "username", kind, 256), _opt_str(obj, "credential", kind, 256))


def message_type_of(data: object) -> str | None:
    """Best-effort 'type' of a raw message, for the ``ref`` of error replies (None if unknown)."""
    if not isinstance(data, str) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind[:64] if isinstance(kind, str) and unencodable_at(kind[:64]) is None else None
