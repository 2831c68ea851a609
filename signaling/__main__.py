"""python -m signaling: run the signaling server, or the whole local demo.

    python -m signaling --host 127.0.0.1 --port 8080 [--token SECRET] [--room-token ROOM=SECRET]
    python -m signaling demo [--port 8080] [--room demo]     # server + sender + receiver, Ctrl-C stops

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from signaling.server import DEFAULT_STATIC_DIR, ServerConfig, start_server

logger = logging.getLogger(__name__)
T = TypeVar("T")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (shared by the plain server and the demo)."""
    defaults = ServerConfig()
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port, 0 for any free one (default %(default)s)")
    parser.add_argument("--token", default=None, help="shared secret required to join any room")
    parser.add_argument(
        "--room-token", action="append", default=[], metavar="ROOM=SECRET", help="secret for one room (repeatable)"
    )
    parser.add_argument("--static-dir", type=Path, default=DEFAULT_STATIC_DIR, help="the browser page's files (default: the packaged page)")
    parser.add_argument("--max-peers-per-room", type=int, default=defaults.max_peers_per_room, help="participants per room")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def create_server_config(args: argparse.Namespace) -> ServerConfig:
    room_tokens: dict[str, str] = {}
    for item in args.room_token:
        room, sep, secret = item.partition("=")
        if not sep or not room or not secret:
            raise ValueError(f"--room-token {item!r} must look like ROOM=SECRET")
        room_tokens[room] = secret
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port (0-65535)")
    return ServerConfig(
        host=args.host, port=args.port, token=args.token, room_tokens=room_tokens,
        static_dir=args.static_dir, max_peers_per_room=args.max_peers_per_room,
    )


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
    if argv[:1] == ["demo"]:
        from signaling.demo import main as demo_main

        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m signaling", description="Signaling server (rooms, SDP/ICE relay). 'python -m signaling demo' runs the local demo."
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose + 1)
    try:
        config = create_server_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
