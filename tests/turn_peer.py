"""A minimal WebRTC peer for the TURN test: joins a room, opens a data channel to the other peer, trades messages, reports the pair ICE chose.

    python -m tests.turn_peer sender   --url http://HOST:PORT --room R --json OUT.json   # offers, sends "ping N"
    python -m tests.turn_peer receiver --url http://HOST:PORT --room R --json OUT.json   # answers "pong N"

Both use ``signaling.rtc.PeerLink`` with aioice's own host candidates, so the only ICE servers are the
ones the signaling server hands out (its ``ice_servers`` message). The JSON says whether the exchange
finished and the types of the nominated local and remote candidates ("host", "srflx", "relay").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel

from signaling import messages as m
from signaling.client import WebSocketSignaling
from signaling.rtc import PeerLink, RtcOptions

ROUNDS = 5


def nominated_pair(link: PeerLink) -> dict[str, Any]:
    """The nominated candidate pair of the link's ICE connection (aioice internals), or {} before there is one."""
    sctp = link.pc.sctp
    if sctp is None:
        return {}
    connection = sctp.transport.transport._connection
    for pair in connection._nominated.values():
        local, remote = pair.local_candidate, pair.remote_candidate
        return {"local_type": local.type, "local": f"{local.host}:{local.port}", "remote_type": remote.type, "remote": f"{remote.host}:{remote.port}"}
    return {}


async def run(role: m.Role, url: str, room: str, timeout_s: float, host_candidates: str = "default") -> dict[str, Any]:
    signaling = WebSocketSignaling(url, room, role)
    joined = await signaling.connect()
    rtc = RtcOptions(host_candidates=host_candidates)
    rtc.apply()
    done = asyncio.Event()
    replies: list[str] = []
    link: PeerLink | None = None

    def on_channel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(text: object) -> None:
            if role == "receiver" and isinstance(text, str) and text.startswith("ping"):
                channel.send("pong" + text[4:])
                replies.append(text)
                if len(replies) == ROUNDS:
                    done.set()
            elif role == "sender" and isinstance(text, str):
                replies.append(text)
                if len(replies) == ROUNDS:
                    done.set()
                else:
                    channel.send(f"ping {len(replies)}")

    async def call(peer: m.PeerInfo) -> PeerLink:
        new = PeerLink(peer, signaling, rtc, role)
        channel = new.pc.createDataChannel("chat")
        on_channel(channel)
        channel.on("open", lambda: channel.send("ping 0"))
        await new.offer()
        return new

    try:
        async with asyncio.timeout(timeout_s):
            if role == "sender":
                receiver = next((p for p in joined.peers if p.role == "receiver"), None)
                if receiver is not None:
                    link = await call(receiver)
            waiter = asyncio.ensure_future(done.wait())
            while not done.is_set():
                reader = asyncio.ensure_future(signaling.receive())
                finished, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if reader not in finished:
                    reader.cancel()
                    break
                msg = reader.result()
                if msg is None:
                    break
                if isinstance(msg, m.PeerJoined) and role == "sender" and msg.peer.role == "receiver" and link is None:
                    link = await call(msg.peer)
                elif isinstance(msg, m.SessionDescription) and msg.kind == "offer" and role == "receiver" and link is None:
                    link = PeerLink(m.PeerInfo(msg.peer, "sender"), signaling, rtc, role)
                    link.pc.on("datachannel", on_channel)
                    await link.on_signal(msg)
                elif isinstance(msg, (m.SessionDescription, m.IceCandidate)) and link is not None:
                    await link.on_signal(msg)
    except TimeoutError:
        pass
    result: dict[str, Any] = {"role": role, "done": done.is_set(), "messages": replies}
    if signaling.ice_servers is not None:
        result["ice_servers"] = [list(s.urls) for s in signaling.ice_servers.servers]
    if link is not None:
        result.update(nominated_pair(link))
        await asyncio.sleep(0.5)  # let the last message leave before closing
        await link.close()
    await signaling.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.turn_peer")
    parser.add_argument("role", choices=("sender", "receiver"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="turn")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if "KPCALL_TURN_PEER_DEBUG" in os.environ else logging.WARNING, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    result = asyncio.run(run(args.role, args.url, args.room, args.timeout_s))
    args.json.write_text(json.dumps(result))
    return 0 if result["done"] else 1


if __name__ == "__main__":
    sys.exit(main())
