"""Session-scoped quantized models for the tests (built once per test session).

Building runs the real `edgepose models quantize` command (TensorFlow
converter, calibration on ../shared/data/calib, report measured on
../shared/data/eval) into a session model cache fed from ../shared/models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
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

    from edgepose.build import quantize as q

    tf = q._tf()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=g) as s:
        return np.concatenate([s.run(output + ":0", {"image:0": x[None].astype(np.float32)}) for x in images])


def tiny_int8_model(path: Path, size: int = 96, keypoints: int = 14) -> Path:
    """A small, fully int8 heatmap model ([1, size, size, 3] int8 in, [1, size/4, size/4, K] int8 out),
    converted by the real TensorFlow converter in a few seconds (random weights, fixed seed): for
    runtime and XNNPACK checks, not for accuracy. Under LiteRT, XNNPACK takes it in one partition."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3), batch_size=1)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Conv2D(24, 1, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(keypoints, 1, padding="same")(x)
    conv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, x))
    rng = np.random.default_rng(0)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)]
                                           for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path

