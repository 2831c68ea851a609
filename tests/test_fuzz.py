"""bench.fuzz: every parser fed mutated and random inputs, 0 undocumented exceptions and 0 hangs.

The default suite runs a few thousand inputs over every target (a few seconds); ``-m slow`` runs issue 22's
10^6 (``python -m bench fuzz --total 1000000`` prints the same per-target figures).
"""

from __future__ import annotations

import json
import random
import time

import pytest

from bench import fuzz
from codec.exceptions import BitstreamError
from signaling import control as c
from signaling import messages as m


def _check(results: list[fuzz.TargetResult]) -> None:
    assert [f for r in results for f in r.findings] == [], fuzz.report(results)
    for r in results:
        assert r.rejected > 0, f"{r.name}: nothing was rejected: the mutations do not reach the parser"


def test_every_target_once_fast() -> None:
    results = fuzz.run_all(total=6000, seed=1)
    assert {r.name for r in results} == {t.name for t in fuzz.build_targets()} | {"signaling_loopback"}
    assert sum(r.inputs for r in results) == pytest.approx(6000, abs=15)
    _check(results)
    by_name = {r.name: r for r in results}
    for name in ("motion_packet", "motion_body", "audio_motion", "rtp_motion", "images", "control"):
        assert by_name[name].accepted > 0, f"{name}: nothing parsed: the seeds or the mutations are wrong"


def test_seeds_are_valid_messages() -> None:
    """The mutations start from valid messages: a seed the parser rejects means the corpus went stale."""
    for seed in fuzz.signaling_client_seeds():
        m.decode_client_message(json.dumps(seed))
    for seed in fuzz.signaling_server_seeds():
        m.decode_server_message(json.dumps(seed))
    for seed in fuzz.control_seeds():
        c.decode_control(json.dumps(seed))


def test_the_harness_reports_undocumented_exceptions_and_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(data: bytes) -> object:
        if data[:1] == b"\x00":
            raise KeyError("boom")
        if data[:1] == b"\x01":
            time.sleep(0.03)
        raise BitstreamError("documented")

    monkeypatch.setattr(fuzz, "HANG_S", 0.02)
    target = fuzz.Target("toy", lambda rng: bytes([rng.randrange(3)]), parse, (BitstreamError,), 1.0)
    result = fuzz.run_target(target, 300, seed=0)
    assert result.inputs == 300 and result.rejected > 0
    kinds = {(f.kind, f.error.split(":")[0]) for f in result.findings}
    assert ("exception", "KeyError") in kinds
    assert any(kind == "hang" for kind, _ in kinds)
    assert result.retimed >= result.hangs > 0


def test_mutations_are_reproducible_and_varied() -> None:
    seed = bytes(range(40))
    a = [fuzz.mutate_bytes_more(random.Random(i), seed, [seed]) for i in range(200)]
    b = [fuzz.mutate_bytes_more(random.Random(i), seed, [seed]) for i in range(200)]
    assert a == b
    assert len(set(a)) > 150 and any(len(x) < 40 for x in a) and any(len(x) > 40 for x in a)
    texts = [fuzz.mutate_json(random.Random(i), {"type": "ping", "nonce": 1}, ["ping"], ["nonce"]) for i in range(1000)]
    joined = "".join(t if isinstance(t, str) else t.decode("latin-1") for t in texts)
    assert "\ud800" in joined or "\\ud800" in joined
    assert "NaN" in joined and "9" * 5000 in joined


@pytest.mark.slow
def test_a_million_inputs() -> None:
    results = fuzz.run_all(total=1_000_000, seed=0)
    assert sum(r.inputs for r in results) >= 1_000_000
    _check(results)
