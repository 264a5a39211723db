"""Behaviour kept across refactors: `edgepose run` gives the payloads the pre-move code gave.

tests/golden/*.jsonl were produced by the code before the package was split into subpackages
(commit a1371c8) with ``tests/golden/make.sh``; ``ts`` and ``latency_ms`` (wall-clock values) are
left out, everything else is compared (coordinates and scores to their printed precision).  Regenerated
on purpose since: the posetrack clips when a video's new track stopped being refined in its own frame
(``[tracking] refine_video``); movenet-lightning's were added then, before the per-frame speed-ups
(RGB input, decode, scene-cut thumbnail) that must not change them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CALIB, VIDEOS, payloads, run_cli_inproc

GOLDEN = Path(__file__).parent / "golden"

CASES = [(model, name) for model in ("cpm", "hourglass", "movenet-lightning")
         for name in ("demo", "posetrack_000001", "calib")]


def _args(model: str, name: str) -> list:
    if name == "calib":  # a folder of photos: every photo on its own, default settings
        return ["run", "--source", CALIB, "--model", model, "--threads", "1", "--device", "golden"]
    # a clip: tracking on, smoothing off (the One Euro filter depends on wall-clock frame times)
    return ["run", "--source", VIDEOS / f"{name}.mp4", "--model", model, "--threads", "1", "--no-smoothing",
            "--device", "golden"]


@pytest.mark.parametrize("model,name", CASES)
def test_payloads_match_pre_move_code(model, name, edgepose_env):
    r = run_cli_inproc(_args(model, name), edgepose_env)
    assert r.returncode == 0, r.stderr
    got = payloads(r.stdout)
    want = [json.loads(line) for line in (GOLDEN / f"{model}_{name}.jsonl").read_text().splitlines()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) - {"ts", "latency_ms"} == set(w)
        assert {k: v for k, v in g.items() if k not in ("ts", "latency_ms")} == w
