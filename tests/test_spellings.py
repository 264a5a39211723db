"""One spelling for the same thing in every command (issue 23 item 14), old spellings kept as aliases:
``--broker HOST[:PORT]`` for run, sub and view; ``--mirror``/``--model-mirror`` for run and models (models
also after the action); ``--qos`` for run.  Real broker, real mirror (../shared), real CLI processes."""

from __future__ import annotations

import json
import subprocess

import pytest

import broker as brokers
from conftest import CALIB, MIRROR, cli_env, run_cli

pytestmark = pytest.mark.skipif(not brokers.available(), reason="mosquitto is not installed (see .ci/run)")


@pytest.fixture
def broker(tmp_path):
    with brokers.Broker(tmp_path) as b:
        yield b


def no_mirror_env(cache) -> dict:
    """An environment with an empty model cache and no mirror: only the flag can name one."""
    env = cli_env(cache)
    env.pop("EDGEPOSE_MODEL_MIRROR")
    return env


def retained(broker, topic: str) -> str:
    r = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-C", "1",
                        "-W", "5"], capture_output=True, text=True, timeout=15)
    return r.stdout.strip()


@pytest.mark.parametrize("mirror_flag", ["--mirror", "--model-mirror"])
def test_run_takes_qos_and_either_mirror_spelling(broker, tmp_path, mirror_flag):
    env = no_mirror_env(tmp_path / "cache")
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass", mirror_flag, MIRROR, "--sink", "mqtt",
                 "--broker", f"{broker.host}:{broker.port}", "--qos", "1", "--device", "cam1"], env)
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "cache").rglob("*.tflite")), r.stderr  # fetched from the mirror the flag named
    assert json.loads(retained(broker, "edgepose/cam1/status"))["qos"] == 1
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--qos", "2"], env)
    assert r.returncode == 2 and "invalid choice: 2" in r.stderr


@pytest.mark.parametrize("argv", [["models", "--mirror", MIRROR, "pull", "hourglass"],
                                  ["models", "pull", "hourglass", "--mirror", MIRROR],
                                  ["models", "--model-mirror", MIRROR, "pull", "hourglass"],
                                  ["models", "pull", "--model-mirror", MIRROR, "hourglass"]])
def test_models_takes_either_mirror_spelling_before_or_after_the_action(tmp_path, argv):
    r = run_cli(argv, no_mirror_env(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "cache").rglob("*.tflite")), r.stderr


def test_sub_and_view_take_broker_host_port(broker, tmp_path):
    pose = {"v": 1, "device": "cam1", "seq": 1, "ts": 1.0, "frame": {"width": 64, "height": 48}, "score": 0.5,
            "present": True, "keypoints": [{"name": "neck", "x": 10.0, "y": 20.0, "score": 0.5}]}
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-r", "-t", "edgepose/cam1/pose",
                    "-m", json.dumps(pose)], check=True, timeout=10)  # retained: each new subscriber gets it
    env = cli_env(tmp_path / "cache")
    where = f"{broker.host}:{broker.port}"
    r = run_cli(["sub", "--broker", where, "--device", "cam1", "--count", "1", "--timeout", "20"], env)
    assert r.returncode == 0 and " cam1 #1 person" in r.stdout, r.stderr
    r = run_cli(["view", "--broker", where, "--device", "cam1", "--out", tmp_path / "p.jpg", "--count", "1",
                 "--timeout", "20"], env)
    assert r.returncode == 0 and (tmp_path / "p.jpg").stat().st_size > 0, r.stderr
    # the old spelling still works; both at once is a usage error
    r = run_cli(["sub", "--host", broker.host, "--port", broker.port, "--count", "1", "--timeout", "20"], env)
    assert r.returncode == 0 and " cam1 #1 person" in r.stdout, r.stderr
    for cmd in (["sub"], ["view", "--out", tmp_path / "q.jpg"]):
        r = run_cli([*cmd, "--broker", where, "--host", broker.host], env)
        assert r.returncode == 64 and "give the broker once" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["sub", "--broker", "[::1"], env)
    assert r.returncode == 64 and "bad --broker '[::1'" in r.stderr
