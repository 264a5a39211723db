"""Session-scoped quantized models for the tests (built once per test session).

Building runs the real `edgepose models quantize` command (TensorFlow
converter, calibration on ../shared/data/calib, report measured on
../shared/data/eval) into a session model cache fed from ../shared/models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import CALIB, EVAL_ANN, cli_env, run_cli
from edgepose.models.registry import load_catalogue

# output node of each family's frozen graph (the catalogue's <family>-pb entry)
OUTPUTS = {f: load_catalogue()[f"{f}-pb"].output["name"] for f in ("cpm", "hourglass")}


def tensorflow_available() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


needs_tf = pytest.mark.skipif(not tensorflow_available() and not os.environ.get("CI"),
                              reason="the converter extra is not installed: pip install -e '.[convert]'")


@pytest.fixture(scope="session")
def quant_cache(tmp_path_factory, shared) -> Path:
    return tmp_path_factory.mktemp("quantized")


@pytest.fixture(scope="session")
def quant_env(quant_cache) -> dict:
    return cli_env(quant_cache)


class Built:
    """Build each (family, mode) once per session; returns (model path, report dict, CLI result)."""

    def __init__(self, cache: Path, env: dict):
        self.cache, self.env, self.done = cache, env, {}

    def __call__(self, family: str, mode: str = "int8", variant: str = ""):
        """``variant``: a catalogue name (``cpm-int8-mixed``) instead of the family's ``mode`` default."""
        key = (family, mode, variant)
        if key not in self.done:
            name = variant or f"{family}-{mode}"
            args = ["models", "quantize", variant or family] + ([] if variant else ["--mode", mode]) + [
                "--eval", EVAL_ANN, "--runs", "5"]
            if mode == "int8":
                args += ["--calib", CALIB]
            r = run_cli(args, self.env, timeout=900)
            assert r.returncode == 0, r.stderr[-3000:]
            path = self.cache / name / "model.tflite"
            report = json.loads((path.parent / "model.report.json").read_text())
            self.done[key] = (path, report, r)
        return self.done[key]


@pytest.fixture(scope="session")
def built(quant_cache, quant_env) -> Built:
    return Built(quant_cache, quant_env)


def run_graph(graph_def, output: str, images) -> "np.ndarray":
    """A frozen graph's output for a batch of images, one TensorFlow session run per image."""
    import numpy as np

    from edgepose.build.graphs import tensorflow

    tf = tensorflow()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=g) as s:
        return np.concatenate([s.run(output + ":0", {"image:0": x[None].astype(np.float32)}) for x in images])
