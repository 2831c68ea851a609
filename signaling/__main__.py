"""python -m signaling: run the signaling server or issue join tickets (the local demo is python -m participant demo).

    python -m signaling --host 127.0.0.1 --port 8080 [--token-file F] [--room-token ROOM=SECRET] [--allow-origin URL]
    KPCALL_TICKET_SECRET=... python -m signaling --host 0.0.0.0          # every join needs a ticket (roles bound)
    KPCALL_TICKET_SECRET=... python -m signaling ticket --room r1 --role sender --ttl 12h   # prints a ticket
    KPCALL_TICKET_SECRET=... python -m signaling ticket --room r1 --role viewer --original --control   # a viewer who may steer
    python -m participant demo [--port 8080] [--room demo]   # server + sender + receiver, Ctrl-C stops
    python -m signaling --port 8081 --redis redis://127.0.0.1:6379/0    # one of several instances sharing rooms
    KPCALL_TURN_SECRET=... python -m signaling --turn-url turn:turn.example.org:3478   # peers get TURN credentials

The demo runs the server, a sender on the built-in default source (the scripted head-motion trace
driving the default portrait) and a receiver in one room in this process, and prints the page URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from signaling.credentials import TICKET_SECRET_ENV, TOKEN_ENV, Ticket, issue_ticket, parse_ttl, read_secret
from signaling.limits import ClientLimits
from signaling.messages import ROLES
from signaling.room_store import StoreUnavailable
from signaling.server import DEFAULT_STATIC_DIR, ServerConfig, start_server
from signaling.turn import DEFAULT_TTL_S, TURN_SECRET_ENV, TurnConfig

if TYPE_CHECKING:
    from signaling.redis_rooms import RedisConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (shared by the plain server and the demo)."""
    defaults = ServerConfig()
    limits = defaults.limits
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port, 0 for any free one (default %(default)s)")
    parser.add_argument(
        "--token", default=None, help=f"shared secret required to join any room (visible in /proc: prefer --token-file or ${TOKEN_ENV})"
    )
    parser.add_argument("--token-file", type=Path, default=None, help="read --token from the first line of this file")
    parser.add_argument(
        "--room-token", action="append", default=[], metavar="ROOM=SECRET", help="secret for one room (repeatable; visible in /proc)"
    )
    parser.add_argument("--room-token-file", type=Path, default=None, help="ROOM=SECRET lines, one room each")
    parser.add_argument(
        "--ticket-secret", default=None,
        help=f"every join needs a join ticket signed with this secret (visible in /proc: prefer --ticket-secret-file or ${TICKET_SECRET_ENV})",
    )
    parser.add_argument("--ticket-secret-file", type=Path, default=None, help="read --ticket-secret from the first line of this file")
    parser.add_argument(
        "--no-open-original", action="store_true",
        help="without tickets, do not let viewers ask the sender for its original pictures (with tickets: only viewer tickets with --original)",
    )
    parser.add_argument(
        "--no-open-control", action="store_true",
        help="without tickets, do not let viewers send commands (K, max kbps, view) or avatars to the receiver"
        " (with tickets: only viewer tickets with --control)",
    )
    parser.add_argument(
        "--allow-origin", action="append", default=[], metavar="URL",
        help="a web page origin (https://host[:port]) that may use the WebSocket besides the server's own; * for any (repeatable)",
    )
    parser.add_argument("--static-dir", type=Path, default=DEFAULT_STATIC_DIR, help="the browser page's files (default: the packaged page)")
    parser.add_argument("--max-peers-per-room", type=int, default=defaults.max_peers_per_room, help="participants per room")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections, help="open WebSockets (default %(default)s)")
    parser.add_argument(
        "--max-rooms", type=int, default=defaults.max_rooms, help="rooms that may exist at once (with --redis: across instances; default %(default)s)"
    )
    parser.add_argument(
        "--max-connections-per-ip", type=int, default=limits.max_connections_per_ip,
        help="open TCP connections per client address (default %(default)s)",
    )
    parser.add_argument(
        "--max-rooms-per-ip", type=int, default=limits.max_rooms_per_ip, help="rooms one client address may be in (default %(default)s)"
    )
    parser.add_argument(
        "--redis", default=None, metavar="URL",
        help="share rooms with other instances through Redis (redis://HOST:6379/0); default: rooms in this process only",
    )
    parser.add_argument(
        "--redis-heartbeat-s", type=float, default=5.0,
        help="presence heartbeat in Redis; a dead instance's peers show as left within ~4 of them (default %(default)s)",
    )
    parser.add_argument("--redis-prefix", default="kpcall", help="Redis key and channel prefix (default %(default)s)")
    parser.add_argument(
        "--turn-url", action="append", default=[], metavar="URL",
        help="a TURN server (turn:HOST:3478[?transport=udp]) whose time-limited credentials every peer that joins gets (repeatable)",
    )
    parser.add_argument(
        "--turn-secret-file", type=Path, default=None,
        help=f"coturn's static-auth-secret (use-auth-secret), first line of this file (or ${TURN_SECRET_ENV})",
    )
    parser.add_argument("--turn-ttl", default=f"{DEFAULT_TTL_S // 3600}h", help="how long TURN credentials work (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no line per connection; for many clients)")


def _room_token_items(args: argparse.Namespace) -> list[tuple[str, str]]:
    items = [(item, "--room-token") for item in args.room_token]
    if args.room_token_file is not None:
        try:
            lines = args.room_token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--room-token-file {str(args.room_token_file)!r} cannot be read as UTF-8 text: {exc}") from None
        items += [(line.strip(), f"line {i} of --room-token-file") for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    return items


def create_server_config(args: argparse.Namespace) -> ServerConfig:
    room_tokens: dict[str, str] = {}
    for item, where in _room_token_items(args):
        room, sep, secret = item.partition("=")
        if not sep or not room or not secret:
            raise ValueError(f"{where} {item.partition('=')[0]!r}=... must look like ROOM=SECRET")
        room_tokens[room] = secret
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port (0-65535)")
    token = read_secret(args.token, args.token_file, TOKEN_ENV, "--token")
    ticket_secret = read_secret(args.ticket_secret, args.ticket_secret_file, TICKET_SECRET_ENV, "--ticket-secret")
    return ServerConfig(
        redis=_redis_config(args), turn=_turn_config(args),
        host=args.host, port=args.port, token=token, room_tokens=room_tokens,
        ticket_secret=None if ticket_secret is None else ticket_secret.encode("utf-8"),
        open_original=not args.no_open_original, open_control=not args.no_open_control, allow_origins=tuple(args.allow_origin),
        static_dir=args.static_dir, max_peers_per_room=args.max_peers_per_room, max_connections=args.max_connections, max_rooms=args.max_rooms,
        limits=ClientLimits(max_connections_per_ip=args.max_connections_per_ip, max_rooms_per_ip=args.max_rooms_per_ip),
    )


def _redis_config(args: argparse.Namespace) -> RedisConfig | None:
    if args.redis is None:
        return None
    from signaling.redis_rooms import RedisConfig  # redis-py is loaded only by a server that uses it

    return RedisConfig(args.redis, args.redis_heartbeat_s, args.redis_prefix)


def _turn_config(args: argparse.Namespace) -> TurnConfig | None:
    secret = read_secret(None, args.turn_secret_file, TURN_SECRET_ENV, "--turn-secret")
    if not args.turn_url:
        if args.turn_secret_file is not None:
            raise ValueError("--turn-secret-file needs --turn-url turn:HOST:PORT (the server whose secret it is)")
        return None
    if secret is None:
        raise ValueError(f"--turn-url needs coturn's static-auth-secret: --turn-secret-file F or ${TURN_SECRET_ENV}")
    return TurnConfig(tuple(args.turn_url), secret.encode("utf-8"), parse_ttl(args.turn_ttl))


def ticket_main(argv: list[str]) -> int:
    """``python -m signaling ticket``: print a join ticket signed with the server's ticket secret."""
    parser = argparse.ArgumentParser(
        prog="python -m signaling ticket",
        description=f"Print a join ticket (the token of one role in one room) signed with the ticket secret (${TICKET_SECRET_ENV} or --ticket-secret-file).",
    )
    parser.add_argument("--room", required=True, help="the room it admits to")
    parser.add_argument("--role", required=True, choices=ROLES, help="the role it binds")
    parser.add_argument("--ttl", default="12h", help="valid for (90s, 15m, 12h, 7d; default %(default)s)")
    parser.add_argument("--original", action="store_true", help="(viewer) may ask the sender for its original pictures")
    parser.add_argument(
        "--control", action="store_true", help="(viewer) may send commands (K, max kbps, view) and avatar uploads to the receiver",
    )
    parser.add_argument("--ticket-secret-file", type=Path, default=None, help="read the secret from the first line of this file")
    args = parser.parse_args(argv)
    try:
        secret = read_secret(None, args.ticket_secret_file, TICKET_SECRET_ENV, "--ticket-secret")
        if secret is None:
            raise ValueError(f"no ticket secret: set ${TICKET_SECRET_ENV} or give --ticket-secret-file (the server's secret)")
        ticket = Ticket(args.room, args.role, int(time.time()) + parse_ttl(args.ttl), original=args.original, control=args.control)
        print(issue_ticket(secret.encode("utf-8"), ticket))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else (logging.INFO if verbose < 2 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    if verbose < 2:  # aiortc/aioice are chatty at INFO
        for name in ("aioice", "aiortc", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def run_until_signal(run: Awaitable[T], stop: Callable[[], None]) -> T:
    """Await ``run``; SIGINT/SIGTERM call ``stop`` (a graceful end) instead of killing the loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    try:
        return await run
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def serve(config: ServerConfig) -> None:
    server = await start_server(config)
    logger.warning("signaling server listening on %s (WebSocket %s); Ctrl-C stops", server.url, server.ws_url)
    try:
        await wait_for_stop_signal()
    finally:
        await server.close()
        logger.warning("signaling server stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:  # the demo composes sender and receiver, which use signaling: it lives above them
        print("the local demo is 'python -m participant demo' (or make demo)", file=sys.stderr)
        return 2
    if argv[:1] == ["ticket"]:
        return ticket_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m signaling", description="Signaling server (rooms, SDP/ICE relay). 'python -m signaling ticket' issues join tickets; 'python -m participant demo' runs the local demo."
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose + 1)
    try:
        config = create_server_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    except StoreUnavailable as exc:  # Redis unreachable: the message names the URL and what to check
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
