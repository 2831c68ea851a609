"""Credentials of the signaling server: signed join tickets that bind a role to a room, and secrets read from a flag, an environment variable or a file.

A **join ticket** is what a participant sends as the ``token`` of its ``join`` when the server holds a
ticket secret. It names the room, the role, when it expires and what it grants, signed with
HMAC-SHA256 under the server's secret, so the server checks it without any state::

    kpt1.<room>.<role>.<expires unix s>.<grants>.<signature>
    kpt1.demo.sender.1798761600.-.3q2-7w...      grants: "-" none, or a viewer's letters in this order:
    kpt1.demo.viewer.1798761600.oc.9Xk...        "o" it may receive the original, "c" it may control the call

The grants are ``-``, ``o``, ``c`` or ``oc`` (one spelling per set, so a ticket has one text); tickets issued
before ``c`` existed (``-``, ``o``) stay valid and grant no control.

The room is ``[A-Za-z0-9_-]{1,64}`` (no dots), so the fields split unambiguously; the signature is the
first 32 bytes of the MAC in unpadded base64url (43 characters). A ticket is at most 140 characters.
Issue them with ``python -m signaling ticket --room demo --role sender --ttl 12h`` on a machine that holds
the secret (``KPCALL_TICKET_SECRET`` or ``--ticket-secret-file``); see the README, "Rooms and roles".

Secrets never need the command line (whose arguments any local user reads in ``/proc/PID/cmdline``):
``read_secret`` takes them from ``--X-file PATH`` (the first line, without its newline) or from an
environment variable, and the flag itself stays for tests and throwaway use.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path

from signaling import messages as m

TICKET_PREFIX = "kpt1"
SIGNATURE_CHARS = 43  # 32 bytes of HMAC-SHA256, unpadded base64url
GRANT_ORIGINAL = "o"
GRANT_CONTROL = "c"  # a viewer may send commands and avatar uploads to the receiver (PROTOCOL.md §4)
NO_GRANTS = "-"
GRANT_TEXTS = (NO_GRANTS, GRANT_ORIGINAL, GRANT_CONTROL, GRANT_ORIGINAL + GRANT_CONTROL)  # the spellings a ticket may carry
MIN_SECRET_BYTES = 16
MAX_TTL_S = 366 * 24 * 3600
TICKET_SECRET_ENV = "KPCALL_TICKET_SECRET"  # the server's (and the ticket issuer's) ticket secret
TOKEN_ENV = "KPCALL_TOKEN"  # a shared room token (server: every room; sender/receiver: the room they join)


class TicketError(ValueError):
    """A ticket that does not admit this join; the message says why and what to do."""


@dataclass(frozen=True)
class Ticket:
    """What a valid ticket grants: ``role`` in ``room`` until ``expires_s`` (unix seconds)."""

    room: str
    role: m.Role
    expires_s: int
    original: bool = False  # a viewer may ask the sender for its original pictures (PROTOCOL.md §5)
    control: bool = False  # a viewer may send commands and avatar uploads to the receiver (PROTOCOL.md §4)

    def __post_init__(self) -> None:
        m.check_room_name(self.room, "ticket room")
        if self.role not in m.ROLES:
            raise ValueError(f"ticket role {self.role!r} is not one of {list(m.ROLES)}")
        if self.original and self.role != "viewer":
            raise ValueError(f"only a viewer ticket grants the original pictures, not a {self.role} ticket")
        if self.control and self.role != "viewer":
            raise ValueError(f"only a viewer ticket grants control of the call, not a {self.role} ticket")


def looks_like_ticket(token: str | None) -> bool:
    return token is not None and token.startswith(TICKET_PREFIX + ".")


def _signature(secret: bytes, body: str) -> str:
    mac = hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")[:SIGNATURE_CHARS]


def _body(ticket: Ticket) -> str:
    grants = (GRANT_ORIGINAL if ticket.original else "") + (GRANT_CONTROL if ticket.control else "") or NO_GRANTS
    return f"{TICKET_PREFIX}.{ticket.room}.{ticket.role}.{ticket.expires_s}.{grants}"


def issue_ticket(secret: bytes, ticket: Ticket) -> str:
    """The signed text of ``ticket``."""
    check_secret_bytes(secret, "the ticket secret")
    body = _body(ticket)
    return f"{body}.{_signature(secret, body)}"


def verify_ticket(secret: bytes, text: str, room: str, role: m.Role, now_s: float | None = None) -> Ticket:
    """The Ticket ``text`` carries if it is genuine, unexpired and names ``room`` and ``role``; TicketError otherwise.

    The signature is compared in constant time before any field is trusted."""
    parts = text.split(".")
    if len(parts) != 6 or parts[0] != TICKET_PREFIX:
        raise TicketError(f"the token is not a join ticket ({TICKET_PREFIX}.ROOM.ROLE.EXPIRES.GRANTS.SIGNATURE): ask for a new one")
    body, signature = ".".join(parts[:5]), parts[5]
    if not hmac.compare_digest(signature.encode("ascii", "replace"), _signature(secret, body).encode("ascii")):
        raise TicketError("the ticket's signature is not valid (another server's secret, or altered): ask for a new one")
    _, t_room, t_role, t_expires, t_grants = parts[:5]
    if t_room != room or t_role != role:
        raise TicketError(f"the ticket is for room {t_room!r} as {t_role}, not room {room!r} as {role}")
    if not t_expires.isdigit() or t_grants not in GRANT_TEXTS:
        raise TicketError("the ticket's fields are malformed: ask for a new one")
    expires_s = int(t_expires)
    now = time.time() if now_s is None else now_s
    if expires_s <= now:
        raise TicketError(f"the ticket expired {now - expires_s:.0f} s ago: ask for a new one")
    try:
        return Ticket(t_room, role, expires_s, original=GRANT_ORIGINAL in t_grants, control=GRANT_CONTROL in t_grants)
    except ValueError as exc:  # e.g. grants on a sender ticket (only issued with the secret, but not ours to admit)
        raise TicketError(f"the ticket's grants do not fit it: {exc}") from None


# -- secrets ---------------------------------------------------------------------------------------
def check_secret_bytes(secret: bytes, what: str) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{what} has {len(secret)} bytes: use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)")


def read_secret(value: str | None, path: Path | None, env_name: str, flag: str) -> str | None:
    """One secret from ``--flag VALUE``, ``--flag-file PATH`` (its first line) or the ``env_name`` variable, in that order.

    ValueError if both the flag and the file are given, or the file is unreadable or empty."""
    if value is not None and path is not None:
        raise ValueError(f"give {flag} or {flag}-file, not both")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{flag}-file {str(path)!r} cannot be read as UTF-8 text: {exc}") from None
        secret = text.splitlines()[0].strip() if text.strip() else ""
        if not secret:
            raise ValueError(f"{flag}-file {str(path)!r} is empty: put the secret on its first line")
        return secret
    if value is not None:
        return value
    from_env = os.environ.get(env_name)
    return from_env or None


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """``--token`` / ``--token-file`` for a participant (sender, receiver); the environment's ``KPCALL_TOKEN`` otherwise."""
    parser.add_argument(
        "--token", default=None,
        help=f"the room's shared secret or this participant's join ticket (visible in /proc: prefer --token-file or ${TOKEN_ENV})",
    )
    parser.add_argument("--token-file", type=Path, default=None, help="read the token from the first line of this file")


def token_from_args(args: argparse.Namespace) -> str | None:
    """The token of ``add_token_arguments``' flags, else ``$KPCALL_TOKEN``, else None; ValueError if unreadable."""
    return read_secret(args.token, args.token_file, TOKEN_ENV, "--token")


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d`` -> seconds (1 s to 366 days); ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    if not number.isdigit() or not 1 <= int(number) * unit <= MAX_TTL_S:
        raise ValueError(f"ttl {text!r} must be a whole number of s, m, h or d between 1 s and 366 d (e.g. 12h)")
    return int(number) * unit
