"""The browser receiver's control protocol (signaling/static/codec/control.js, reference_message.js, sha256.js and
signaling/static/receiver/session.js) says what the Python side says.

Writes ``tests.control_js_vectors`` and runs ``node --test tests/js_receiver/`` on them: every control message
type decodes to the Python fields and 33 malformed ones give ``decode_control``'s exact error (invalid JSON: the
same prefix, the parser's own words after it); reference-message chunks (in order, shuffled with duplicates, 15
broken ways) reassemble to the same bytes or fail with ``ChunkReassembler``'s message; reference messages unpack
to the same fields or fail alike; a sender link answers a sender's hello, takes its portrait once, pongs, refuses
a bad message, decodes its motion, acks it and reports delays. What the JS side sent is then read with the Python
decoders (``decode_control``, ``unpack_feedback``). Skipped without Node.js (≥ 18).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from codec.bitstream import unpack_feedback
from signaling import control as c
from tests.control_js_vectors import build_vectors, control_messages
from tests.test_motion_js import _node

REPO = Path(__file__).resolve().parent.parent


def test_js_control_protocol_matches_python(tmp_path: Path) -> None:
    node = _node()
    vectors, out = tmp_path / "control.json", tmp_path / "out.json"
    vectors.write_text(json.dumps(build_vectors()))
    env = {**os.environ, "KPCALL_CONTROL_VECTORS": str(vectors), "KPCALL_CONTROL_OUT": str(out)}
    run = subprocess.run([node, "--test", "tests/js_receiver/"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"^# fail 0$", run.stdout, re.M) and not re.search(r"^# skipped [1-9]", run.stdout, re.M), run.stdout[-3000:]
    sent = json.loads(out.read_text())
    # What control.js encodes, Python decodes to the same message.
    assert [c.decode_control(text) for text in sent["encoded"]] == control_messages()
    # The link's conversation: every text a valid control message, every binary a valid feedback.
    kinds = []
    for message in sent["session"]:
        if "text" in message:
            kinds.append(c.decode_control(message["text"]).TYPE)
        else:
            feedback = unpack_feedback(bytes.fromhex(message["bytes"]))
            assert feedback.stream_id == 9
            kinds.append("feedback")
    assert kinds[:4] == ["reference_status", "reference_ready", "pong", "error"], kinds
    assert kinds.count("feedback") >= 2 and "delay_report" in kinds, kinds
