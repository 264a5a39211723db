"""Shared fixtures: where ../shared is, a model cache fed from the local mirror, clips."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
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

# the session-built quantized models' fixtures (quant_cache, quant_env, built)
pytest_plugins = ["models_util"]


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


@pytest.fixture(scope="session")
def tiny_int8(tmp_path_factory) -> Path:
    """A small fully int8 heatmap model built in the session (models_util.tiny_int8_model; needs TensorFlow)."""
    from models_util import tensorflow_available, tiny_int8_model

    if not tensorflow_available():
        pytest.skip("TensorFlow is not installed (pip install -e '.[convert]')")
    return tiny_int8_model(tmp_path_factory.mktemp("tiny-int8") / "model.tflite")


@pytest.fixture
def edgepose_env(model_cache) -> dict:
    return cli_env(model_cache)


def run_cli(args, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    """Run `python -m edgepose.cli ARGS` as a user would run `edgepose ARGS`.

    A process of its own: for what is about the process (exit on a signal, stdout buffering or a
    closed stdout, native stderr, a traceback, a command left running).  Otherwise `run_cli_inproc`."""
    return subprocess.run([sys.executable, "-m", "edgepose.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


@contextlib.contextmanager
def _process_state(env: dict):
    """``os.environ`` set to ``env`` and the cwd to the repo for the block; afterwards the environment,
    cwd, root logging handlers/level, signal handlers and stdout/stderr are put back as they were."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved_signals = {s: signal.getsignal(s) for s in signals}
    saved_out, saved_err = sys.stdout, sys.stderr
    os.environ.clear()
    os.environ.update({k: str(v) for k, v in env.items()})
    os.chdir(REPO)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_cli_inproc(args, env, timeout=None) -> subprocess.CompletedProcess:
    """`edgepose ARGS` in this process: ``edgepose.cli.main`` with ``env`` as the environment and
    stdout/stderr captured, the same result as `run_cli` (exit code, stdout, stderr) without starting
    an interpreter and importing numpy, OpenCV and the runtime again for each command.

    For commands that end on their own; where the test is about the process itself use `run_cli`.
    ``timeout`` is accepted for symmetry with `run_cli` and not enforced (there is no process to kill)."""
    from edgepose import cli

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with _process_state(env):
        sys.stdout, sys.stderr = out, err
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse's usage errors, --help, --version (as cli.entry_point)
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return subprocess.CompletedProcess(["edgepose", *argv], rc, out.getvalue(), err.getvalue())


def error_lines(stderr: str) -> list:
    """The ERROR lines of a command's log (a clean failure has exactly one)."""
    return [line for line in stderr.splitlines() if "ERROR" in line]


def grey_clip(path, frames: int):
    """A 320x240 mp4 of ``frames`` flat grey frames (brightness i % 250): a long file source for reload tests."""
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(frames):
        w.write(np.full((240, 320, 3), i % 250, np.uint8))
    w.release()
    return path


def mirror_server(auth: bytes = b"", send=None):
    """../shared/models over HTTP on a free loopback port, started (``server.shutdown()`` and
    ``server_close()`` when done).  ``auth`` (b"user:password") makes it demand HTTP Basic auth;
    ``send(handler, data)`` writes the body after the headers, which announce the whole file's
    Content-Length (default: all of it)."""
    import base64
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if auth and self.headers.get("Authorization") != "Basic " + base64.b64encode(auth).decode():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="models"')
                self.end_headers()
                return
            f = MIRROR / self.path.lstrip("/")
            if not f.is_file():
                self.send_error(404)
                return
            data = f.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            (send or (lambda h, d: h.wfile.write(d)))(self, data)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def payloads(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def eval_annotations(shared) -> dict:
    return json.loads(EVAL_ANN.read_text())


def pytest_configure(config):
    # the quick lane deselects these (-m "not slow"); the full lane runs everything
    config.addinivalue_line("markers", "slow: needs minutes or a big one-time install (e.g. a real Home Assistant)")
