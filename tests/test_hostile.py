"""Hostile and careless input (issue 23): each case of the fault sweep that is about the daemon, its
sources and the model registry, reproduced with real parts (real models, real files, real local servers)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from conftest import CALIB, MIRROR, error_lines, grey_clip, run_cli

# Single-byte flips (XOR 0xFF) of the upstream CPM file, found by flipping each byte at offsets 2,270,000
# to 2,320,000 (its flatbuffer tables, after the weights) in turn:
# the file still loads and allocates, then its first invoke raises "Input tensor N lacks data".
CPM_FLIPS_THAT_FAIL_AT_INVOKE = (2290972, 2301264)


@pytest.fixture(params=CPM_FLIPS_THAT_FAIL_AT_INVOKE)
def fails_at_invoke(request, tmp_path):
    data = bytearray((MIRROR / "cpm" / "model.tflite").read_bytes())
    data[request.param] ^= 0xFF
    path = tmp_path / f"cpm-flip{request.param}.tflite"
    path.write_bytes(bytes(data))
    return path


def _wait(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# --- item 3: a model must prove itself on one inference -------------------------------------------

def test_the_flipped_file_really_loads_and_fails_only_at_invoke(fails_at_invoke):
    """The premise of the two tests below, checked on the runtime itself (no edgepose code)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(fails_at_invoke), num_threads=1)
    interp.allocate_tensors()
    with pytest.raises(RuntimeError, match="lacks data"):
        interp.invoke()


def test_run_with_a_model_that_fails_its_first_inference_is_exit_65(fails_at_invoke, edgepose_env):
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", fails_at_invoke, "--threads", "1"],
                edgepose_env)
    assert r.returncode == 65, r.stderr
    assert "Traceback" not in r.stderr and "fails at its first inference" in r.stderr, r.stderr
    assert len(error_lines(r.stderr)) == 1 and not r.stdout


def test_a_reload_onto_a_model_that_fails_its_first_inference_keeps_the_running_one(
        fails_at_invoke, tmp_path, model_cache, caplog):
    from edgepose.core import config as config_mod
    from edgepose.daemon.service import Daemon

    clip = grey_clip(tmp_path / "clip.mp4", 600)  # 30 s at max_fps 20: a source that outlives the test
    path = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{clip}"\n[output]\nsink = "none"\n[runtime]\nthreads = 1\nmax_fps = 20.0\n'
            f'[model]\nname = "hourglass"\ndir = "{model_cache}"\nmirror = "{MIRROR}"\n')
    path.write_text(base)
    seen = []
    daemon = Daemon(config_mod.load(str(path), environ={}), environ={},
                    observers=[lambda frame, result, payload: seen.append(payload["model"])])
    caplog.set_level(logging.INFO, logger="edgepose")
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert _wait(lambda: len(seen) >= 2, 60)
        path.write_text(base.replace('name = "hourglass"', f'name = "{fails_at_invoke}"'))
        daemon.reload_event.set()  # what the SIGHUP handler does
        assert _wait(lambda: daemon.last_reload is not None, 60)
        n = len(seen)
        assert _wait(lambda: len(seen) >= n + 2 or not t.is_alive(), 30)
        assert t.is_alive(), "the daemon died on the reload"
        st = daemon.status()
    finally:
        daemon.stop_event.set()
        t.join(30)
    assert set(seen) == {"hourglass"}  # every frame, before and after, on the running model
    assert st["model"] == "hourglass" and st["reload"]["ok"] is False
    assert "fails at its first inference" in st["reload"]["error"]
    assert "last reload failed: running configuration kept" in daemon.status_line()
    kept = [r.getMessage() for r in caplog.records if "keeping the running configuration" in r.getMessage()]
    assert len(kept) == 1 and "fails at its first inference" in kept[0]
