"""Session-scoped quantized models for the tests (built once per test session).

Building runs the real `edgepose models quantize` command (TensorFlow
converter, calibration on ../shared/data/calib, report measured on
../shared/data/eval) into a session model cache fed from ../shared/models.

A build is also kept across sessions in a cache keyed by the content hash of
everything it reads (the command's arguments, the package modules the build
command can import and the catalogue, ../shared/models and the calibration and evaluation data, the
Python/TensorFlow/LiteRT/numpy versions): the same inputs give the model and
report that command made, a change to any of them builds again.  The cache is
``$XDG_CACHE_HOME/edgepose-test/builds`` (default ``~/.cache/edgepose-test/builds``: outside the
checkout, so a fresh clone on the same machine, as CI makes, finds it too), or
``$EDGEPOSE_TEST_BUILD_CACHE``; set that to ``off`` to build every session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest

from edgepose.models.registry import load_catalogue

from conftest import CALIB, EVAL_ANN, EVAL_IMAGES, MIRROR, REPO, cli_env, run_cli
from imports_util import import_graph, module_files, reachable

# output node of each family's frozen graph (the catalogue's <family>-pb entry)
OUTPUTS = {f: load_catalogue()[f"{f}-pb"].output["name"] for f in ("cpm", "hourglass")}


def tensorflow_available() -> bool:
    """Whether the converter extra is installed (found, not imported: importing TensorFlow takes seconds
    and every test session loads this module)."""
    return importlib.util.find_spec("tensorflow") is not None


needs_tf = pytest.mark.skipif(not tensorflow_available() and not os.environ.get("CI"),
                              reason="the converter extra is not installed: pip install -e '.[convert]'")


@pytest.fixture(scope="session")
def quant_cache(tmp_path_factory, shared) -> Path:
    return tmp_path_factory.mktemp("quantized")


@pytest.fixture(scope="session")
def quant_env(quant_cache) -> dict:
    return cli_env(quant_cache)


def build_cache_dir() -> Optional[Path]:
    """Where builds are kept across sessions (None: ``EDGEPOSE_TEST_BUILD_CACHE=off``)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = os.environ.get("EDGEPOSE_TEST_BUILD_CACHE", str(home / "edgepose-test" / "builds"))
    return None if where.lower() in ("off", "0", "") else Path(where)


def _hash_tree(h, root: Path, pattern: str = "*") -> None:
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


def _version(*dists: str) -> str:
    for d in dists:
        try:
            return f"{d}=={metadata.version(d)}"
        except metadata.PackageNotFoundError:
            pass
    return "-".join(dists) + " missing"


def build_code() -> List[Path]:
    """The package's modules `edgepose models quantize` can import (its module and everything it imports,
    lazily too; the CLI's own imports), so that an edit elsewhere (the daemon, MQTT) keeps the builds."""
    graph = import_graph()
    mods = reachable(graph, "edgepose.tools.modelcmd") | reachable(import_graph(at_import=True), "edgepose.cli")
    files = module_files()
    return sorted(files[m] for m in mods | {"edgepose"} if m in files)


@lru_cache(maxsize=1)
def inputs_digest() -> str:
    """The content hash of everything a build reads besides its arguments."""
    h = hashlib.sha256()
    for path in build_code():
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for root, pattern in ((REPO / "models", "*"), (MIRROR, "*"), (CALIB, "*"), (EVAL_IMAGES, "*")):
        _hash_tree(h, root, pattern)
    h.update(EVAL_ANN.read_bytes())
    versions = [platform.python_version(), platform.machine(), _version("tensorflow-cpu", "tensorflow"),
                _version("ai-edge-litert"), _version("numpy"), _version("opencv-python-headless")]
    h.update("\0".join(versions).encode())
    return h.hexdigest()


def quantize_cached(args: Sequence, out_dir: Path, env: dict) -> subprocess.CompletedProcess:
    """`edgepose models quantize ARGS` writing ``model.tflite`` and ``model.report.json`` into
    ``out_dir``, or the same files from an earlier run with the same inputs (see the module's doc).
    ``out_dir`` is left out of the key (it names where the files go, not what they are)."""
    args = [str(a) for a in args]
    cache = build_cache_dir()
    key = None
    if cache is not None:
        key_args = [a.replace(str(out_dir), "<out>") for a in args]
        key = hashlib.sha256(json.dumps([inputs_digest(), key_args]).encode()).hexdigest()[:32]
        kept = cache / key
        if (kept / "result.json").is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("model.tflite", "model.report.json"):
                shutil.copy(kept / name, out_dir / name)
            res = json.loads((kept / "result.json").read_text())
            return subprocess.CompletedProcess(["edgepose", "models", "quantize", *args], res["returncode"],
                                               res["stdout"].replace("<out>", str(out_dir)), res["stderr"])
    # minutes on a quiet machine, but an int8 build with fine-tuning took over 15 on this 2-core machine shared
    # by parallel test runs (load ~15): the limit is for a hung build, not a slow one
    r = run_cli(["models", "quantize", *args], env, timeout=3600)
    if cache is not None and r.returncode == 0:
        kept = cache / key
        tmp = cache / f"{key}.partial-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        for name in ("model.tflite", "model.report.json"):
            shutil.copy(out_dir / name, tmp / name)
        (tmp / "result.json").write_text(json.dumps({"returncode": r.returncode, "args": args,
                                                     "stdout": r.stdout.replace(str(out_dir), "<out>"),
                                                     "stderr": r.stderr}))
        if kept.exists():  # another session stored the same build meanwhile
            shutil.rmtree(tmp)
        else:
            tmp.rename(kept)
    return r


# Quantization-aware fine-tuning steps of the tests' int8 builds (`--finetune`), instead of the catalogue
# recipe's 600: the tests check the build's structure (one XNNPACK partition, int8 input, the fixes of
# degenerate scales, the report's fields, the daemon running the variant), which fine-tuning does not
# change (it changes weight and bias values only, not the graph: tests/test_finetune.py), so a few steps
# run the whole fine-tuning path at a fraction of the cost.  Measured with `edgepose models quantize cpm --mode
# int8 --calib ../shared/data/calib --eval ../shared/data/eval/annotations.json --runs 5 --finetune N` under
# /usr/bin/time (load ~10): 108 s of CPU with N=10, 164 s with N=60, so ~1.1 s per step and ~770 s for the
# catalogue's 600 (~8 min wall each on a quiet 2-core machine).  Not 0: without steps the build skips the
# fine-tuning path (plain conversion for the int8 grid, batch-norm folding, the simulation) the variant
# is made with; 10 steps run all of it for ~11 s of CPU.  That fine-tuning lowers the
# int8 error is tests/test_finetune.py::test_finetuning_lowers_the_int8_error_on_held_out_photos (60
# steps); the accuracy of the catalogue recipe's build (600 steps) against float on eval-lspet is a
# benchmark: `python3 benchmarks/quantized.py --build --models cpm-int8 hourglass-int8 --eval
# ../shared/data/eval-lspet/annotations.json` (benchmarks/README.md).
TEST_FINETUNE_STEPS = 10


class Built:
    """Build each (family, mode) once per session; returns (model path, report dict, CLI result).

    A family's int8 build is fine-tuned for :data:`TEST_FINETUNE_STEPS` steps, not the catalogue's."""

    def __init__(self, cache: Path, env: dict):
        self.cache, self.env, self.done = cache, env, {}

    def __call__(self, family: str, mode: str = "int8", variant: str = ""):
        """``variant``: a catalogue name (``cpm-int8-mixed``) instead of the family's ``mode`` default."""
        key = (family, mode, variant)
        if key not in self.done:
            name = variant or f"{family}-{mode}"
            args = [variant or family] + ([] if variant else ["--mode", mode]) + ["--eval", EVAL_ANN, "--runs", "5"]
            if mode == "int8":
                args += ["--calib", CALIB]
            if mode == "int8" and not variant:
                args += ["--finetune", TEST_FINETUNE_STEPS]
            path = self.cache / name / "model.tflite"
            r = quantize_cached(args, path.parent, self.env)
            assert r.returncode == 0, r.stderr[-3000:]
            report = json.loads((path.parent / "model.report.json").read_text())
            self.done[key] = (path, report, r)
        return self.done[key]


@pytest.fixture(scope="session")
def built(quant_cache, quant_env) -> Built:
    return Built(quant_cache, quant_env)


def run_graph(graph_def, output: str, images) -> np.ndarray:
    """A frozen graph's output for a batch of images, one TensorFlow session run per image."""
    from edgepose.build.graphs import tensorflow

    tf = tensorflow()
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

