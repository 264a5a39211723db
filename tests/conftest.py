"""Shared fixtures: where ../shared is, a model cache fed from the local mirror, clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEPOSE_SHARED", REPO.parent / "shared")).resolve()
MIRROR = SHARED / "models"
EVAL_ANN = SHARED / "data" / "eval" / "annotations.json"
EVAL_IMAGES = SHARED / "data" / "eval" / "images"
CALIB = SHARED / "data" / "calib"
VIDEOS = SHARED / "data" / "video"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not MIRROR.is_dir():
        pytest.fail(f"../shared is missing at {SHARED} (set EDGEPOSE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory, shared) -> Path:
    """A model cache directory shared by the session (filled from the local mirror on first use)."""
    return tmp_path_factory.mktemp("models")


def cli_env(model_dir) -> dict:
    """Environment for running the `edgepose` CLI with a model cache fed from the local mirror."""
    env = dict(os.environ)
    env.update({"EDGEPOSE_MODEL_DIR": str(model_dir), "EDGEPOSE_MODEL_MIRROR": str(MIRROR),
                "PYTHONUNBUFFERED": "1",
                # the Home Assistant discovery state file of `run --sink mqtt` (not the user's ~/.local/state)
                "XDG_STATE_HOME": str(Path(model_dir).parent / "xdg-state")})
    env.pop("STATE_DIRECTORY", None)
    env.pop("EDGEPOSE_CONFIG", None)
    return env


@pytest.fixture
def edgepose_env(model_cache) -> dict:
    return cli_env(model_cache)


def run_cli(args, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    """Run `python -m edgepose.cli ARGS` as a user would run `edgepose ARGS`."""
    return subprocess.run([sys.executable, "-m", "edgepose.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def error_lines(stderr: str) -> list:
    """The ERROR lines of a command's log (a clean failure has exactly one)."""
    return [line for line in stderr.splitlines() if "ERROR" in line]


def payloads(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def eval_annotations(shared) -> dict:
    return json.loads(EVAL_ANN.read_text())


def pytest_configure(config):
    # the quick lane deselects these (-m "not slow"); the full lane runs everything
    config.addinivalue_line("markers", "slow: needs minutes or a big one-time install (e.g. a real Home Assistant)")
