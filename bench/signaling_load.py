"""python -m bench signaling: load on the signaling server, 1 instance (rooms in memory) and 3 instances (rooms in Redis).

    python -m bench signaling --clients 500 2000 --json signaling.json
    python -m bench signaling --clients 2000 --setups memory redis:3 --rate 1000 --seconds 20

For each setup and each N: the setup's server instances start as processes (``python -m signaling
--quiet``; with ``redis:K`` a private redis-server on a free loopback port, ``signaling.local_redis``),
then N WebSocket clients in rooms of 2-4 (a sender, a receiver, viewers; sizes drawn with a fixed seed)
join, the members of a room spread over the instances (member j of room i on instance (i + j) mod K),
each room from its own loopback address (127.2.x.y: the per-address limits see one host per room).
Then, for ``--seconds``, exchanges run on every link (sender-receiver, receiver-viewer) in turn at
``--rate`` relayed messages per second in all: the offering end sends an offer (a ``--sdp-bytes`` SDP)
and ``--candidates`` candidates, the other end answers each offer with an answer and as many candidates.

Measured: every message carries an id and its send time (one monotonic clock: everything runs on this
machine); lost = messages sent and never delivered once the traffic stopped and 5 s passed (must be 0);
relay latency p50/p99 (send to delivery, so it includes the load generator's own event loop and, on a
shared machine, whatever else runs); memory per connection = growth of the server processes' RSS from
idle to N clients joined, divided by N; the servers' CPU seconds during the traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from signaling.local_redis import LocalRedis, free_loopback_port, redis_server_missing

log = logging.getLogger(__name__)

ROLES_BY_POSITION = ("sender", "receiver")  # then viewers
DRAIN_S = 5.0
CONNECT_CONCURRENCY = 64


@dataclass(frozen=True)
class Setup:
    """Server instances and where their rooms live: ``memory`` (1 instance) or ``redis:K`` (K instances)."""

    instances: int
    redis: bool

    @property
    def name(self) -> str:
        return f"redis:{self.instances}" if self.redis else "memory"

    @classmethod
    def parse(cls, text: str) -> Setup:
        if text == "memory":
            return cls(1, False)
        kind, _, count = text.partition(":")
        if kind != "redis" or not count.isdigit() or not 1 <= int(count) <= 16:
            raise ValueError(f"setup {text!r} must be 'memory' or 'redis:K' with K instances, 1-16 (e.g. redis:3)")
        return cls(int(count), True)


@dataclass(frozen=True)
class LoadConfig:
    clients: int
    setup: Setup
    seconds: float = 15.0  # traffic phase
    rate_per_s: float = 1000.0  # relayed messages per second offered, all links together
    candidates: int = 2  # candidates after each offer and each answer
    sdp_bytes: int = 1500  # SDP size of offers and answers
    seed: int = 0


def room_sizes(clients: int, seed: int) -> list[int]:
    """Room sizes of 2-4 adding up to ``clients`` (at least 2), drawn with ``seed``."""
    if clients < 2:
        raise ValueError(f"--clients {clients}: need at least 2 (one room)")
    rng, sizes, left = random.Random(seed), [], clients
    while left:
        size = left if left <= 4 else (3 if left == 5 else rng.choice((2, 3, 4)))
        sizes.append(size)
        left -= size
    return sizes


def room_address(room: int) -> str:
    return f"127.2.{room // 250}.{room % 250 + 1}"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Instances:
    """The setup's signaling processes (and its redis-server)."""

    def __init__(self, setup: Setup, clients: int, rooms: int, workdir: Path) -> None:
        self.setup, self.clients, self.rooms, self.workdir = setup, clients, rooms, workdir
        self.redis: LocalRedis | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []

    async def start(self) -> None:
        extra: list[str] = []
        if self.setup.redis:
            self.redis = LocalRedis(self.workdir / "redis")
            extra = ["--redis", self.redis.start(), "--redis-prefix", "bench"]
        for _ in range(self.setup.instances):
            port = free_loopback_port()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "signaling", "--quiet", "--host", "127.0.0.1", "--port", str(port), "--static-dir", str(self.workdir),
                 "--max-connections", str(self.clients + 64), "--max-rooms", str(self.rooms + 64), *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / f"server-{port}.log", "wb"),
                preexec_fn=_raise_fd_limit,
            ))
            self.urls.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            for url, proc in zip(self.urls, self.procs):
                deadline = time.monotonic() + 30
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"signaling instance {url} exited with {proc.returncode}: see {self.workdir}")
                    try:
                        async with session.get(url + "/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"signaling instance {url} did not come up within 30 s")
                    await asyncio.sleep(0.1)

    def rss_kib(self) -> list[int]:
        return [_rss_kib(p.pid) for p in self.procs]

    def cpu_s(self) -> list[float]:
        return [_cpu_s(p.pid) for p in self.procs]

    def redis_rss_kib(self) -> int | None:
        return None if self.redis is None or self.redis.process is None else _rss_kib(self.redis.process.pid)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.redis is not None:
            self.redis.stop()


@dataclass
class Client:
    room: int
    role: str
    instance: int
    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse | None = None
    peer_id: str = ""
    reader: asyncio.Task[None] | None = None


@dataclass
class Tally:
    """What the load generator saw."""

    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    outstanding: dict[int, tuple[float, bool]] = field(default_factory=dict)  # id -> (send time, crosses instances)
    latency_same_ms: list[float] = field(default_factory=list)
    latency_cross_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    next_id: int = 0


class LoadRun:
    def __init__(self, config: LoadConfig, urls: list[str]) -> None:
        self.config, self.urls = config, urls
        self.tally = Tally()
        self.clients: list[Client] = []
        self.by_peer: dict[str, Client] = {}
        self.padding = "a=x-pad:" + "p" * max(0, config.sdp_bytes - 60)

    # -- sending -----------------------------------------------------------------------------------
    def _stamp(self, src: Client, dst: Client) -> str:
        tally = self.tally
        msg_id = tally.next_id
        tally.next_id += 1
        now = time.monotonic()
        tally.outstanding[msg_id] = (now, src.instance != dst.instance)
        tally.sent += 1
        return f"{msg_id} {now:.6f}"

    async def _send(self, src: Client, obj: dict[str, Any]) -> None:
        assert src.ws is not None
        try:
            await src.ws.send_str(json.dumps(obj))
        except (ConnectionError, RuntimeError):
            self.tally.errors["send_failed"] += 1

    async def exchange(self, src: Client, dst: Client, kind: str) -> None:
        """``kind`` (offer/answer) and the candidates, src -> dst."""
        await self._send(src, {"type": kind, "to": dst.peer_id, "sdp": f"v=0 id={self._stamp(src, dst)}\r\n{self.padding}"})
        for i in range(self.config.candidates):
            line = f"candidate:{i} 1 udp 2130706431 10.0.0.{i} {5000 + i} typ host id={self._stamp(src, dst)}"
            await self._send(src, {"type": "candidate", "to": dst.peer_id, "candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})

    # -- receiving ---------------------------------------------------------------------------------
    def _arrived(self, text: str, now: float) -> None:
        at = text.find("id=")
        if at < 0:
            return
        msg_id = int(text[at + 3:].split(" ", 1)[0])
        entry = self.tally.outstanding.pop(msg_id, None)
        if entry is None:
            self.tally.duplicates += 1
            return
        self.tally.delivered += 1
        (self.tally.latency_cross_ms if entry[1] else self.tally.latency_same_ms).append((now - entry[0]) * 1000.0)

    async def _read(self, client: Client) -> None:
        assert client.ws is not None
        async for frame in client.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.monotonic()
            msg = json.loads(frame.data)
            kind = msg["type"]
            if kind in ("offer", "answer"):
                self._arrived(msg["sdp"], now)
                if kind == "offer":
                    asyncio.ensure_future(self.exchange(client, self.by_peer[msg["from"]], "answer"))
            elif kind == "candidate":
                self._arrived(msg["candidate"], now)
            elif kind == "error":
                self.tally.errors[msg["code"]] += 1
        self.tally.closed += 1

    # -- phases ------------------------------------------------------------------------------------
    async def connect(self, sizes: list[int]) -> list[tuple[Client, Client]]:
        """Join every room; the links (offerer, answerer) of the traffic phase."""
        instances = len(self.urls)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        links: list[tuple[Client, Client]] = []

        async def join_room(room: int, size: int) -> None:
            async with gate:
                connector = aiohttp.TCPConnector(local_addr=(room_address(room), 0), limit=0)
                session = aiohttp.ClientSession(connector=connector)
                members = []
                for j in range(size):
                    role = ROLES_BY_POSITION[j] if j < len(ROLES_BY_POSITION) else "viewer"
                    client = Client(room, role, (room + j) % instances, session)
                    client.ws = await session.ws_connect(self.urls[client.instance] + "/ws", max_msg_size=0)
                    await client.ws.send_str(json.dumps({"type": "join", "room": f"load{room}", "role": role}))
                    while True:
                        reply = json.loads((await client.ws.receive(timeout=30)).data)
                        if reply["type"] == "joined":
                            break
                        if reply["type"] == "error":
                            raise RuntimeError(f"room {room}: {role} could not join: {reply}")
                    client.peer_id = reply["peer_id"]
                    self.by_peer[client.peer_id] = client
                    client.reader = asyncio.ensure_future(self._read(client))
                    members.append(client)
                self.clients.extend(members)
                links.append((members[0], members[1]))  # sender offers to the receiver
                links.extend((members[1], viewer) for viewer in members[2:])  # the receiver offers to each viewer

        await asyncio.gather(*(join_room(i, size) for i, size in enumerate(sizes)))
        return links

    async def traffic(self, links: list[tuple[Client, Client]]) -> float:
        """Exchanges round-robin over ``links`` at the configured rate for the configured time; returns the seconds taken."""
        per_exchange = 2 * (1 + self.config.candidates)
        exchanges_per_s = self.config.rate_per_s / per_exchange
        start = time.monotonic()
        done = 0
        tasks: set[asyncio.Task[None]] = set()
        while (elapsed := time.monotonic() - start) < self.config.seconds:
            due = int(elapsed * exchanges_per_s) - done
            for _ in range(max(0, due)):
                offerer, answerer = links[done % len(links)]
                task = asyncio.ensure_future(self.exchange(offerer, answerer, "offer"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                done += 1
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.gather(*tasks)
        return time.monotonic() - start

    async def drain(self) -> None:
        deadline = time.monotonic() + DRAIN_S
        while self.tally.outstanding and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        sessions = {id(c.session): c.session for c in self.clients}
        await asyncio.gather(*(c.ws.close() for c in self.clients if c.ws is not None), return_exceptions=True)
        await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)
        for client in self.clients:
            if client.reader is not None:
                client.reader.cancel()


def _latency(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": percentile(ordered, 0.50), "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else None}


async def run_load(config: LoadConfig, workdir: Path) -> dict[str, Any]:
    sizes = room_sizes(config.clients, config.seed)
    instances = Instances(config.setup, config.clients, len(sizes), workdir)
    await instances.start()
    run: LoadRun | None = None
    try:
        await asyncio.sleep(1.0)
        idle_rss = instances.rss_kib()
        run = LoadRun(config, instances.urls)
        t0 = time.monotonic()
        links = await run.connect(sizes)
        join_s = time.monotonic() - t0
        await asyncio.sleep(2.0)  # peer_joined settles; the servers' RSS with every client in
        joined_rss = instances.rss_kib()
        cpu_before = instances.cpu_s()
        traffic_s = await run.traffic(links)
        await run.drain()
        cpu_s = [after - before for after, before in zip(instances.cpu_s(), cpu_before)]
        busy_rss = instances.rss_kib()
        tally = run.tally
        all_latency = tally.latency_same_ms + tally.latency_cross_ms
        result = {
            "setup": config.setup.name, "instances": config.setup.instances, "store": "redis" if config.setup.redis else "memory",
            "clients": config.clients, "rooms": len(sizes), "room_sizes": dict(sorted(Counter(sizes).items())), "links": len(links),
            "join_s": round(join_s, 2), "traffic_s": round(traffic_s, 2),
            "offered_rate_per_s": config.rate_per_s, "achieved_rate_per_s": round(tally.delivered / traffic_s, 1),
            "sent": tally.sent, "delivered": tally.delivered, "lost": len(tally.outstanding), "duplicates": tally.duplicates,
            "errors": dict(tally.errors), "connections_closed": tally.closed,
            "latency": _latency(all_latency), "latency_same_instance": _latency(tally.latency_same_ms),
            "latency_cross_instance": _latency(tally.latency_cross_ms),
            "rss_kib": {"idle": idle_rss, "joined": joined_rss, "after_traffic": busy_rss, "redis": instances.redis_rss_kib()},
            "rss_per_connection_kib": round((sum(joined_rss) - sum(idle_rss)) / config.clients, 1),
            "server_cpu_s_during_traffic": [round(c, 2) for c in cpu_s],
        }
        return result
    finally:
        if run is not None:
            await run.close()
        instances.stop()


def _print(r: dict[str, Any]) -> None:
    lat = r["latency"]
    print(f"{r['setup']:9s} N={r['clients']:5d} rooms={r['rooms']:4d}: sent {r['sent']}, lost {r['lost']}, errors {r['errors'] or 0}; "
          f"relay p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms at {r['achieved_rate_per_s']:.0f} msg/s; "
          f"RSS {r['rss_per_connection_kib']:.1f} KiB/connection; server CPU {sum(r['server_cpu_s_during_traffic']):.1f} s "
          f"over {r['traffic_s']:.0f} s", flush=True)


def add_signaling_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("signaling", help="signaling server load: clients, rooms, relay latency, loss, memory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[500, 2000], help="N WebSocket clients per run (default %(default)s)")
    p.add_argument("--setups", nargs="+", default=["memory", "redis:3"], help="memory (1 instance) and/or redis:K (default %(default)s)")
    defaults = LoadConfig(2, Setup(1, False))
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="traffic phase per run (default %(default)s)")
    p.add_argument("--rate", type=float, default=defaults.rate_per_s, help="relayed messages/s offered, all links (default %(default)s)")
    p.add_argument("--candidates", type=int, default=defaults.candidates, help="candidates per offer and per answer (default %(default)s)")
    p.add_argument("--sdp-bytes", type=int, default=defaults.sdp_bytes, help="size of each SDP (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="write results here")


def run_signaling_from_args(args: argparse.Namespace) -> int:
    try:
        setups = [Setup.parse(s) for s in args.setups]
    except ValueError as exc:
        log.error("bench signaling: %s", exc)
        return 2
    missing = redis_server_missing()
    if missing is not None and any(s.redis for s in setups):
        log.error("bench signaling: the redis setups need a redis-server: %s", missing)
        return 2
    _raise_fd_limit()
    runs = []
    with tempfile.TemporaryDirectory(prefix="kpcall-bench-signaling-") as tmp:
        for setup in setups:
            for clients in args.clients:
                config = LoadConfig(clients, setup, args.seconds, args.rate, args.candidates, args.sdp_bytes)
                workdir = Path(tmp) / f"{setup.name.replace(':', '-')}-{clients}"
                workdir.mkdir()
                result = asyncio.run(run_load(config, workdir))
                result["config"] = {**asdict(config), "setup": setup.name}
                _print(result)
                runs.append(result)
    out = {
        "machine": {"cpu_count": os.cpu_count(), "cpu": _cpu_name(), "mem_total_gib": _mem_total_gib(), "load_average_at_end": os.getloadavg()},
        "method": __doc__.split("\n\n", 2)[2].strip() if __doc__ else "",
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if all(r["lost"] == 0 for r in runs) else 1


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return 0.0
