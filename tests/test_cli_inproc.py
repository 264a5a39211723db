"""`run_cli_inproc` (tests/conftest.py) gives what `run_cli` gives: the same exit code, stdout and
stderr as a real `edgepose` process, and leaves this process as it found it (environment, cwd,
logging, signal handlers, stdout/stderr)."""

from __future__ import annotations

import logging
import os
import signal
import sys

import pytest

from conftest import CALIB, run_cli, run_cli_inproc


@pytest.mark.parametrize("args", [
    ["models", "list"],
    ["--version"],
    ["models", "inspect", "nosuch-model"],  # a clean failure: one ERROR line and its exit code
    ["run", "--threads", "many"],  # argparse's usage error (exit 2)
    [],  # no command: the help on stderr, 64
])
def test_same_result_as_a_process(args, edgepose_env):
    sub, inproc = run_cli(args, edgepose_env), run_cli_inproc(args, edgepose_env)
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (sub.returncode, sub.stdout, sub.stderr)


def test_the_environment_given_is_the_one_the_command_sees(edgepose_env, tmp_path):
    """The model cache comes from EDGEPOSE_MODEL_DIR of ``env``, not from this process's environment."""
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(tmp_path / "cache"))
    r = run_cli_inproc(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass", "--threads", "1"], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cache" / "hourglass" / "model.tflite").is_file()
    assert "EDGEPOSE_MODEL_DIR" not in os.environ or os.environ["EDGEPOSE_MODEL_DIR"] != env["EDGEPOSE_MODEL_DIR"]


def test_process_state_is_restored(edgepose_env):
    root = logging.getLogger()
    before = (dict(os.environ), os.getcwd(), list(root.handlers), root.level, sys.stdout, sys.stderr,
              signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
    # `run` installs SIGTERM/SIGHUP handlers and its own root log handler; a failure logs an ERROR
    r = run_cli_inproc(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass", "--threads", "1"],
                       edgepose_env)
    assert r.returncode == 0 and r.stdout.count("\n") == 1, r.stderr
    run_cli_inproc(["models", "inspect", "nosuch-model"], edgepose_env)
    after = (dict(os.environ), os.getcwd(), list(root.handlers), root.level, sys.stdout, sys.stderr,
             signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
    assert after == before
