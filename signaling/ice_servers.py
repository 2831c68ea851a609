"""The ICE servers a signaling server handed out (an ``ice_servers`` message) as aiortc ``RTCIceServer`` entries."""

from __future__ import annotations

import dataclasses

from aiortc import RTCConfiguration, RTCIceServer

from signaling import messages as m


def rtc_ice_servers(msg: m.IceServers | None) -> list[RTCIceServer]:
    """One ``RTCIceServer`` per URL of ``msg`` (aioice takes one URL per server); none for None."""
    if msg is None:
        return []
    return [RTCIceServer(urls=url, username=s.username, credential=s.credential) for s in msg.servers for url in s.urls]


def with_signaled_ice_servers(configuration: RTCConfiguration, msg: m.IceServers | None) -> RTCConfiguration:
    """``configuration`` with the servers of ``msg`` added after its own (``--ice-server`` entries first)."""
    extra = rtc_ice_servers(msg)
    if not extra:
        return configuration
    return dataclasses.replace(configuration, iceServers=[*(configuration.iceServers or []), *extra])
