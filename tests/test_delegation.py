"""How much of a model XNNPACK takes (edgepose.inference.delegation), on real models and real runtimes.

* LiteRT (this environment's runtime): the float upstream models and a small
  int8 model built in the session are taken whole, in one partition; the
  int8 MoveNet only partly (the runtime's "Replacing N out of M" line);
* tflite-runtime 2.14 (the Pi path's runtime before LiteRT): it needs numpy<2
  and cannot be installed beside this environment's numpy 2, so these tests
  make a venv with it (tflite-runtime==2.14.0, numpy<2; PyPI has the wheel for
  x86_64 and aarch64 CPython 3.9/3.11) and run the real Engine in it; they are
  skipped only when that venv cannot be made (no wheel for this Python, no
  package index).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from edgepose.inference import delegation as dm
from edgepose.inference.engine import Engine, load_runtime
from edgepose.models import modelinfo

from conftest import MIRROR, REPO, cli_env, run_cli

CPM = MIRROR / "cpm" / "model.tflite"
MOVENET = MIRROR / "movenet-lightning" / "model.tflite"


def test_float_model_is_taken_whole_and_reported():
    e = Engine(CPM, threads=1)
    d = e.delegation
    assert e.xnnpack and d.whole and d.partitions == 1 and d.total_nodes > 200
    assert (d.int8_nodes, d.int8_delegated) == (0, 0) and e.int8_advice == ""
    assert e.describe()["xnnpack_delegation"] == {"partitions": 1, "delegated_ops": d.total_nodes,
                                                  "total_ops": d.total_nodes, "int8_ops": 0, "int8_delegated": 0}
    assert d.summary() == f"1 partition, {d.total_nodes} of {d.total_nodes} ops"
    # the Engine's count is the one `models info` reports (same code, same graph)
    assert modelinfo.delegation(CPM, e.runtime, 1) == d


def test_no_delegation_without_xnnpack():
    e = Engine(CPM, threads=1, xnnpack=False)
    assert e.delegation is None and e.describe()["xnnpack_delegation"] is None and not e.xnnpack


def test_int8_model_is_taken_whole_by_litert(tiny_int8, caplog):
    rt = load_runtime("litert")
    with caplog.at_level(logging.WARNING):
        e = Engine(tiny_int8, threads=1, runtime=rt)
    d = e.delegation
    assert d.whole and d.int8_nodes == d.total_nodes > 0 and d.int8_delegated == d.int8_nodes
    assert e.int8_advice == "" and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_partial_delegation_counts_int8_ops_left_out():
    """MoveNet (int8) under LiteRT: several partitions, some int8 ops stay on the built-in kernels."""
    rt = load_runtime("litert")
    d = modelinfo.delegation(MOVENET, rt, 1)
    assert d.prepared and d.partitions > 1 and 0 < d.delegated_nodes < d.total_nodes
    assert 0 < d.int8_delegated < d.int8_nodes and not d.int8_left_out
    assert f"({d.int8_delegated} of {d.int8_nodes} int8 ops)" in d.summary()
    assert dm.int8_advice(d, rt.name, rt.version) == ""


def test_models_info_shows_the_delegation_and_runtime(tiny_int8, model_cache):
    r = run_cli(["models", "info", str(tiny_int8), "--json"], cli_env(model_cache))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    d = info["delegation"]
    assert info["quantized"] == "int8" and info["runtime"].startswith("litert ") and info["advice"] == ""
    assert d["partitions"] == 1 and d["int8_delegated"] == d["int8_nodes"] == d["total_nodes"]
    text = run_cli(["models", "info", str(tiny_int8)], cli_env(model_cache)).stdout
    assert f"xnnpack    1 partition, {d['total_nodes']} of {d['total_nodes']} ops on {info['runtime']}" in text
    assert "warning" not in text


# --- tflite-runtime 2.14 in its own venv ------------------------------------------------------------

def _bench():
    spec = importlib.util.spec_from_file_location("bench_runtimes", REPO / "benchmarks" / "runtimes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tflite_python(tmp_path_factory) -> str:
    """A venv with tflite-runtime 2.14 and numpy<2 (kept between sessions in ~/.cache)."""
    bench = _bench()
    where = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgepose-tests" / "tflite-runtime"
    try:
        return str(bench.make_venv(where, bench.VENVS["tflite-runtime"]))
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot make a tflite-runtime 2.14 venv here ({e})")


LOAD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from edgepose.inference.engine import Engine
e = Engine(sys.argv[1], threads=1, backend="tflite-runtime")
print(json.dumps({"runtime": e.runtime.name + " " + e.runtime.version, "xnnpack": e.xnnpack,
                  "delegation": e.describe()["xnnpack_delegation"], "advice": e.int8_advice}))
"""


def _load_in(python: str, model) -> tuple:
    r = subprocess.run([python, "-c", LOAD, str(model)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), [ln for ln in r.stderr.splitlines() if ln.startswith("WARNING")]


def test_int8_model_on_tflite_runtime_warns_once_with_the_fix(tflite_python, tiny_int8):
    out, warnings = _load_in(tflite_python, tiny_int8)
    assert out["runtime"] == "tflite-runtime 2.14.0" and not out["xnnpack"]
    x = out["delegation"]
    assert x["partitions"] == 0 and x["int8_ops"] == x["total_ops"] > 0 and x["int8_delegated"] == 0
    assert len(warnings) == 1, warnings  # ONE warning, not also the generic "XNNPACK took no part"
    w = warnings[0]
    assert f"none of the model's {x['int8_ops']} int8 operators on tflite-runtime 2.14.0" in w
    assert "ai-edge-litert>=1.4,<1.5" in w and 'runtime.backend = "litert"' in w
    assert out["advice"] and out["advice"] in w


def test_float_model_on_tflite_runtime_does_not_warn(tflite_python):
    out, warnings = _load_in(tflite_python, CPM)
    assert out["xnnpack"] and out["delegation"]["partitions"] >= 1 and out["advice"] == ""
    assert warnings == []
