"""TURN credentials the signaling server hands out: coturn's ``use-auth-secret`` scheme (the TURN REST API), time-limited.

The server and coturn share one secret; for each peer that joins a room the server makes::

    username   = "<expires unix s>:<peer id>"
    credential = base64(HMAC-SHA1(secret, username))

and coturn (``use-auth-secret``, ``static-auth-secret=<the secret>``) accepts them until ``expires``,
without any state or database. Run the server with ``--turn-url turn:HOST:3478 --turn-secret-file F``
(or ``$KPCALL_TURN_SECRET``); peers get an ``ice_servers`` message just before ``joined``
(``signaling/PROTOCOL.md`` §1) and use it as their ICE servers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from signaling import messages as m
from signaling.credentials import check_secret_bytes

TURN_SECRET_ENV = "KPCALL_TURN_SECRET"
DEFAULT_TTL_S = 12 * 3600
TURN_SCHEMES = ("turn:", "turns:", "stun:", "stuns:")


@dataclass(frozen=True)
class TurnConfig:
    """The TURN server(s) to hand out; the field comments are the CLI help."""

    urls: tuple[str, ...]  # turn:HOST:PORT[?transport=udp|tcp] (repeatable; stun: entries get no credentials)
    secret: bytes = field(repr=False)  # coturn's static-auth-secret
    ttl_s: int = DEFAULT_TTL_S  # how long the credentials work for new allocations

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("give at least one --turn-url turn:HOST:PORT")
        for url in self.urls:
            if not url.startswith(TURN_SCHEMES) or len(url) > 256:
                raise ValueError(f"--turn-url {url!r:.80} must start with turn:, turns:, stun: or stuns: (e.g. turn:turn.example.org:3478)")
        if not any(url.startswith(("turn:", "turns:")) for url in self.urls):
            raise ValueError("--turn-url needs at least one turn: or turns: URL (stun: alone relays nothing)")
        check_secret_bytes(self.secret, "the TURN secret")
        if not 60 <= self.ttl_s <= 7 * 86400:
            raise ValueError(f"--turn-ttl {self.ttl_s} s must be between 60 s and 7 days")


def turn_password(secret: bytes, username: str) -> str:
    """coturn's REST-API password for ``username``: base64 of HMAC-SHA1 under the shared secret."""
    return base64.b64encode(hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()).decode("ascii")


def ice_servers_for(config: TurnConfig, peer_id: str, now_s: float) -> m.IceServers:
    """The ``ice_servers`` message for one peer: the TURN URLs with credentials valid for ``ttl_s`` from ``now_s``."""
    expires_s = int(now_s) + config.ttl_s
    username = f"{expires_s}:{peer_id}"
    turn_urls = tuple(u for u in config.urls if u.startswith(("turn:", "turns:")))
    stun_urls = tuple(u for u in config.urls if u.startswith(("stun:", "stuns:")))
    servers = [m.IceServer(turn_urls, username, turn_password(config.secret, username))]
    if stun_urls:
        servers.append(m.IceServer(stun_urls))
    return m.IceServers(tuple(servers), expires_s)
