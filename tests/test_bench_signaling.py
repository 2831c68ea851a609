"""bench signaling: room sizes, setups, and a small load run per setup (no loss, the figures it reports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.signaling_load import LoadConfig, Setup, room_address, room_sizes, run_load
from signaling.local_redis import redis_server_missing


@pytest.mark.parametrize("clients", [2, 3, 5, 6, 7, 500, 2001])
def test_rooms_hold_2_to_4_and_add_up(clients: int) -> None:
    sizes = room_sizes(clients, seed=0)
    assert sum(sizes) == clients and all(2 <= s <= 4 for s in sizes)
    assert sizes == room_sizes(clients, seed=0)


def test_setups_and_addresses() -> None:
    assert Setup.parse("memory") == Setup(1, False) and Setup.parse("redis:3") == Setup(3, True)
    with pytest.raises(ValueError, match="'redis:x' must be 'memory' or 'redis:K'"):
        Setup.parse("redis:x")
    with pytest.raises(ValueError, match="at least 2"):
        room_sizes(1, 0)
    assert room_address(0) == "127.2.0.1" and room_address(251) == "127.2.1.2"


@pytest.mark.parametrize("setup", [Setup(1, False), Setup(2, True)], ids=["memory", "redis-2"])
async def test_a_small_load_run_loses_nothing(setup: Setup, tmp_path: Path) -> None:
    if setup.redis and redis_server_missing():
        pytest.skip(redis_server_missing() or "")
    result = await run_load(LoadConfig(12, setup, seconds=1.0, rate_per_s=120.0), tmp_path)
    assert result["lost"] == 0 and result["errors"] == {} and result["duplicates"] == 0, result
    assert result["sent"] == result["delivered"] > 50
    assert result["latency"]["p50_ms"] is not None and result["latency"]["p99_ms"] >= result["latency"]["p50_ms"]
    assert len(result["rss_kib"]["joined"]) == setup.instances and result["rss_per_connection_kib"] is not None
    if setup.redis:  # members of a room are spread over the instances: some relays cross them
        assert result["latency_cross_instance"]["count"] > 0 and result["rss_kib"]["redis"] > 0
