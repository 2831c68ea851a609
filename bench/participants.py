"""Call benchmark with N participants (``python -m bench call --participants N``): real processes, loopback, two-way.

    python -m bench call --participants 3 --seconds 30 --json OUT.json
    python -m bench call --participants 3 --seconds 40 --kill-after 15 --json OUT.json   # one leaves by kill -9, comes back

The signaling server runs in this process; every participant is its own ``python -m participant`` process (the
command a user runs), on the built-in trace with its own seed and the generated speech-like sound with sync marks every
``SYNC_MARK_PERIOD_S`` (the mouth snaps open and the audio clicks at the same capture time), the shipped model
rendering, "loopback" host candidates. Everyone's sound is equally loud, so each listener keeps its first remote as the
active speaker (a new one takes over only when 3 dB louder; ``participant.speaker_schedule``).

Per participant and remote it reports what the remote's receiver measured: rendered fps (what the speaker schedule let
through), output fps, glass-to-glass latency (capture at the remote's sender → image ready here; one machine, one
clock), the audio - face offset of the sync marks; and per outgoing link the wire rate. ``motion_wire_kbps`` per
direction = the link's outgoing IPv4 rate over its motion period (DTLS transport counters: motion, control, SACKs,
DTLS, and the audio) less the audio's own datagrams (Opus bytes + 50 bytes of RTP/SRTP/UDP/IPv4 headers a packet, at
the audio's packet rate); motion riding inside audio packets counts as motion.

With ``--kill-after S`` the last participant is killed (SIGKILL) S seconds after all have joined and started again
``RESTART_AFTER_S`` later (a new process, a new peer id): reported are when each other participant saw it leave
(its ``participant_left`` event − the kill), how long the new process took to join (model loading), and when each
other participant saw it join (− the moment the server had it in the room again).

On one 2-core machine N participants share 2 cores (each would have its own machine in a real call): the figures
say what this machine holds, stated with its CPU count. ``--measure-first`` approximates the real call for the first
participant: the others run at the lowest CPU priority (``nice -n 19``) and render at most ``BACKGROUND_RENDER_FPS``
(``--speaker-fps``), while still sending their motion and sound at full rate, so the cores are mostly the first
one's; the summary then covers the first participant's rows only (every row stays in the JSON).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOM = "bench-call"
SYNC_MARK_PERIOD_S = 2.0
RESTART_AFTER_S = 2.0
BACKGROUND_RENDER_FPS = 2.0  # --measure-first: what the other participants render at most
AUDIO_HEADER_BYTES = 50  # RTP 12 + SRTP tag 10 + UDP 8 + IPv4 20, per audio packet
TARGETS = {"speaker_fps_min": 25.0, "others_fps_min": 15.0, "latency_ms_p95_max": 150.0, "motion_wire_kbps_max": 10.0,
           "av_offset_ms_p95_abs_max": 40.0, "leave_seen_s_max": 5.0}
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ParticipantsBenchConfig:
    participants: int = 3
    seconds: float = 30.0
    kill_after_s: float | None = None
    others_fps: str = "auto"
    max_kbps: float | None = 8.0
    weights: str | None = None
    render_weights: str | None = None  # the model that renders the others (None: weights)
    device: str = "auto"
    audio_frame_ms: int = 40
    measure_first: bool = False  # the others in the background (nice 19, rendering ≤ BACKGROUND_RENDER_FPS)


def _command(url: str, config: ParticipantsBenchConfig, stats: Path, index: int = 0) -> list[str]:
    background = config.measure_first and index > 0
    cmd = [
        *(["nice", "-n", "19"] if background else []), sys.executable, "-m", "participant", "--signaling", url, "--room", ROOM,
        "--stats-json", str(stats), "--host-candidates", "loopback", "--no-cache", "--others-fps", config.others_fps,
        "--sync-marks", str(SYNC_MARK_PERIOD_S), "--audio", "generated",
        "--audio-frame-ms", str(config.audio_frame_ms), "--max-kbps", str(config.max_kbps or 0), "--device", config.device,
    ]
    if config.weights:
        cmd += ["--weights", config.weights]
    if config.render_weights:
        cmd += ["--render-weights", config.render_weights]
    if background:
        cmd += ["--speaker-fps", str(BACKGROUND_RENDER_FPS)]
    return cmd


def run_participants_bench(config: ParticipantsBenchConfig) -> dict[str, Any]:
    """Run the call; the result dict (RuntimeError when a participant produced no statistics)."""
    import asyncio

    from signaling.server import ServerConfig, start_server

    if not 2 <= config.participants <= 4:
        raise RuntimeError(f"--participants must be 2-4 (a call holds at most 4), got {config.participants}")
    work = Path(tempfile.mkdtemp(prefix="kpcall-participants-"))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "HOME": str(work)}
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(start_server(ServerConfig(port=0, static_dir=None)))
    pump = threading.Thread(target=loop.run_forever, daemon=True)  # the server answers while this thread waits on processes
    pump.start()
    procs: list[tuple[int, subprocess.Popen[bytes], Path]] = []
    kill: dict[str, float | None] = {"killed_ms": None, "restarted_ms": None, "rejoined_ms": None}

    def peers_in_call() -> int:
        counts = asyncio.run_coroutine_threadsafe(server.server.store.counts(), loop).result(5)
        return counts.peers

    def wait_for_peers(n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if peers_in_call() >= n:
                return True
            dead = [i for i, proc, _ in procs if proc.poll() is not None and proc.returncode != -signal.SIGKILL]
            if dead:
                raise RuntimeError(f"participant {dead[0]} exited before the call began; its log: {work}/p{dead[0]}.log")
            time.sleep(0.1)
        return False

    try:
        for index in range(config.participants):
            stats = work / f"p{index}.json"
            log = (work / f"p{index}.log").open("wb")
            procs.append((index, subprocess.Popen(_command(server.url, config, stats, index), cwd=REPO, env=env,
                                                  stdout=log, stderr=subprocess.STDOUT), stats))
            time.sleep(0.5)
        if not wait_for_peers(config.participants, 180):  # each process loads its models first (many seconds on a busy machine)
            raise RuntimeError(f"the {config.participants} participants did not all join within 180 s (logs in {work})")
        started = time.monotonic()  # the call: everyone is in
        if config.kill_after_s is not None:
            time.sleep(max(0.0, started + config.kill_after_s - time.monotonic()))
            index, victim, _ = procs[-1]
            kill["killed_ms"] = time.time() * 1000.0  # (before the signal: the others may hear of it within milliseconds)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            time.sleep(RESTART_AFTER_S)
            stats = work / f"p{index}-again.json"
            log = (work / f"p{index}-again.log").open("wb")
            kill["restarted_ms"] = time.time() * 1000.0
            procs.append((index, subprocess.Popen(_command(server.url, config, stats, index), cwd=REPO, env=env,
                                                  stdout=log, stderr=subprocess.STDOUT), stats))
            if wait_for_peers(config.participants, 180):
                kill["rejoined_ms"] = time.time() * 1000.0
        time.sleep(max(0.0, started + config.seconds - time.monotonic()))
        for _, proc, _ in procs:  # the end of the call: each leaves as on Ctrl-C and writes its statistics
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            if proc.poll() is None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        loop.call_soon_threadsafe(loop.stop)
        pump.join(5)
        loop.run_until_complete(server.close())
        loop.close()
    reports = []
    for index, proc, stats in procs:
        if proc.returncode == -signal.SIGKILL:
            continue
        if not stats.exists():
            tail = (stats.with_suffix(".log").read_text(errors="replace") if stats.with_suffix(".log").exists() else "")[-2000:]
            raise RuntimeError(f"participant {index} (exit {proc.returncode}) wrote no statistics; its log ends:\n{tail}")
        reports.append((index, json.loads(stats.read_text())))
    return summarize(config, reports, kill, work)


def _motion_wire_kbps(link: dict[str, Any], audio_frame_ms: int) -> float | None:
    wire = link.get("wire_kbps")
    if wire is None:
        return None
    audio = link.get("audio_rtp") or {}
    packets = audio.get("packets_sent") or 0
    if not packets:
        return round(wire, 3)
    audio_seconds = packets * audio_frame_ms / 1000.0
    audio_kbps = (audio.get("bytes_sent", 0) + AUDIO_HEADER_BYTES * packets) * 8 / 1000 / audio_seconds
    return round(wire - audio_kbps, 3)


def _events(report: dict[str, Any], name: str) -> list[tuple[float, str]]:
    return [(t, detail) for t, event, detail in report.get("events", []) if event == name]


def summarize(config: ParticipantsBenchConfig, reports: list[tuple[int, dict[str, Any]]], kill: dict[str, float | None], work: Path) -> dict[str, Any]:
    per_participant = []
    speaker_fps, others_fps, p95s, offsets, wires = [], [], [], [], []
    for index, report in reports:
        remotes = []
        active = report["schedule"]["active_speaker"]
        for remote in list(report["remotes"].values()) + list(report["departed"]):
            sync = (remote.get("audio") or {}).get("sync") or {}
            row = {
                "peer_id": remote["peer_id"], "active_speaker_at_end": remote["peer_id"] == active,
                "rendered_fps": remote["rendered_fps"], "output_fps": remote["output_fps"],
                "rendered_fps_as_speaker": remote.get("rendered_fps_as_speaker"), "seconds_as_speaker": remote.get("seconds_as_speaker"),
                "rendered_fps_as_other": remote.get("rendered_fps_as_other"), "seconds_as_other": remote.get("seconds_as_other"),
                "latency_ms_p95": remote["latency_ms"]["p95"], "latency_ms_median": remote["latency_ms"]["median"],
                "render_ms_median": remote["render_ms"]["median"], "frames_unscheduled": remote.get("frames_unscheduled"),
                "av_offset_ms_p95_abs": sync.get("offset_ms_p95_abs"), "av_sync_pairs": sync.get("pairs"),
                "frames_concealed": remote["frames_concealed"], "render_errors": remote["render_errors"],
                "ended": remote.get("end"),
            }
            remotes.append(row)
            if config.measure_first and index > 0:
                continue  # in the background: in the JSON, not in the summary
            if row["rendered_fps_as_speaker"] is not None:
                speaker_fps.append(row["rendered_fps_as_speaker"])
            if row["rendered_fps_as_other"] is not None:
                others_fps.append(row["rendered_fps_as_other"])
            if row["latency_ms_p95"] is not None:
                p95s.append(row["latency_ms_p95"])
            if row["av_offset_ms_p95_abs"] is not None:
                offsets.append(row["av_offset_ms_p95_abs"])
        links = [{"to": link["peer_id"], "wire_kbps": link.get("wire_kbps"), "motion_wire_kbps": _motion_wire_kbps(link, config.audio_frame_ms),
                  "payload_bytes": link["payload_bytes"], "rung": link.get("rung"), "motion_transport": link.get("motion_transport")}
                 for link in report["sent"]]
        wires += [link["motion_wire_kbps"] for link in links if link["motion_wire_kbps"] is not None]  # every sender's links, background ones too
        per_participant.append({"index": index, "peer_id": report["peer_id"], "end": report.get("end"), "remotes": remotes,
                                "links": links, "schedule": report["schedule"]})
    leave = None
    if kill["killed_ms"] is not None:
        victim_ids = {r["peer_id"] for i, r in reports if i == config.participants - 1}
        seen_leave, seen_back = [], []
        for index, report in reports:
            if index == config.participants - 1:
                continue
            lefts = [t for t, detail in _events(report, "participant_left") if t >= kill["killed_ms"]]
            seen_leave.append(round((min(lefts) - kill["killed_ms"]) / 1000.0, 2) if lefts else None)
            joins = [t for t, detail in _events(report, "participant_joined") if detail in victim_ids]
            seen_back.append(round(max(0.0, min(joins) - (kill["rejoined_ms"] or kill["restarted_ms"] or 0)) / 1000.0, 2) if joins else None)
        leave = {
            "leave_seen_s": seen_leave, "rejoin_seen_s_after_its_join": seen_back,  # (the server's count is polled every 0.1 s: ~0 means at once) "restart_after_s": RESTART_AFTER_S,
            "restarted_process_joined_after_s": None if kill["rejoined_ms"] is None or kill["restarted_ms"] is None
            else round((kill["rejoined_ms"] - kill["restarted_ms"]) / 1000.0, 2),
        }
    summary = {
        "speaker_rendered_fps_min": min(speaker_fps, default=None),
        "others_rendered_fps_min": min(others_fps, default=None),
        "latency_ms_p95_max": max(p95s, default=None),
        "motion_wire_kbps_max": max(wires, default=None),
        "motion_wire_kbps_median": round(float(np.median(wires)), 3) if wires else None,
        "av_offset_ms_p95_abs_max": max(offsets, default=None),
        "kill": leave,
    }
    return {
        "benchmark": "call-participants",
        "config": asdict(config),
        "conditions": {
            "processes": f"{config.participants} python -m participant processes + this process's signaling server, one machine"
            + (f"; all but the first at nice 19 rendering ≤ {BACKGROUND_RENDER_FPS:g} fps, the summary the first's" if config.measure_first else ""),
            "transport": "aiortc over 127.0.0.1 (loopback host candidates), motion as RTP riding in the Opus packets",
            "source": "built-in scripted head-motion trace per participant (seeds differ), generated speech-like audio with sync marks",
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "logs": str(work),
        },
        "targets": TARGETS,
        "summary": summary,
        "participants": per_participant,
    }


def format_summary(result: dict[str, Any]) -> str:
    s, c = result["summary"], result["config"]
    lines = [
        f"call of {c['participants']} participants, {c['seconds']:g} s, {result['conditions']['cpu_count']} CPUs"
        f"{' (the first measured, the others in the background)' if c.get('measure_first') else ''}: active speaker "
        f"rendered ≥ {s['speaker_rendered_fps_min']} fps, others ≥ {s['others_rendered_fps_min']} fps; glass-to-glass p95 ≤ "
        f"{s['latency_ms_p95_max']} ms; motion wire per direction median {s['motion_wire_kbps_median']} / max "
        f"{s['motion_wire_kbps_max']} kbps; |audio - face| p95 ≤ {s['av_offset_ms_p95_abs_max']} ms",
    ]
    for p in result["participants"]:
        for r in p["remotes"]:
            lines.append(
                f"  participant {p['index']} ({p['peer_id']}) renders {r['peer_id']}: {r['rendered_fps_as_speaker']} fps as the speaker "
                f"({r['seconds_as_speaker']} s), {r['rendered_fps_as_other']} fps otherwise ({r['seconds_as_other']} s); "
                f"output {r['output_fps']} fps, p95 {r['latency_ms_p95']} ms, render "
                f"{r['render_ms_median']} ms, A/V p95 {r['av_offset_ms_p95_abs']} ms{'' if r['ended'] is None else ' [ended: ' + str(r['ended']) + ']'}"
            )
    if s["kill"] is not None:
        lines.append(f"  kill -9 of the last participant: seen to leave after {s['kill']['leave_seen_s']} s; started again, it "
                     f"joined {s['kill']['restarted_process_joined_after_s']} s later and was seen "
                     f"{s['kill']['rejoin_seen_s_after_its_join']} s after that")
    return "\n".join(lines)
