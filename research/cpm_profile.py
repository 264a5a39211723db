#!/usr/bin/env python3
"""Where CPM's time goes: the graph cut at every stage output, and its depthwise convolutions alone.

    python3 research/cpm_profile.py [--runs 40] [--threads 2] [--pb ../shared/models/cpm/model.pb]

Needs the converter extra (TensorFlow).  Part 1 converts the frozen graph
(after the redundant-ReLU clean-up) truncated at the backbone output and at
each stage's heatmap, as upstream float32 and with the 7x7 depthwise
convolutions split into row bands (edgepose.build.quantize.split_depthwise), and
times all truncations round-robin in one loop; the difference between
consecutive cuts is the cost of one stage.  Part 2 times one depthwise
convolution of a stage's shape (24x24x260) with 3x3, 5x5 and 7x7 kernels and
the banded 7x7, float32 and int8.  Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgepose.build import quantize as q  # noqa: E402
from edgepose.build.graphs import tensorflow  # noqa: E402
from edgepose.models.modelinfo import delegation, latency_interleaved  # noqa: E402

SHARED = Path(os.environ.get("EDGEPOSE_SHARED", ROOT.parent / "shared"))
STAGE = "Convolutional_Pose_Machine/stage_{s}_mv1/stage_{s}_mv1_2_pointwise/BatchNorm/Relu6"


class Raw:
    """Time a bare interpreter (any input shape) with the modelinfo timing loop."""

    def __init__(self, path: str, threads: int):
        from edgepose.inference.engine import load_runtime

        self.path = Path(path)
        self.runtime = load_runtime()
        self.threads = threads
        self.interp = self.runtime.module.Interpreter(model_path=path, num_threads=threads)
        self.interp.allocate_tensors()
        d = self.interp.get_input_details()[0]
        self.interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))

    def run(self, _img):
        self.interp.invoke()

    def set_input(self, _img):
        pass

    def invoke(self):
        self.interp.invoke()

    def output(self):
        return None


def convert(graph_def, out_name: str, path: Path, shape=(1, 192, 192, 3)) -> str:
    data = q.convert(graph_def, "image", out_name, list(shape), q.Recipe(mode="float32"))
    path.write_bytes(data)
    return str(path)


def stage_cuts(pb: Path, tmp: Path, runs: int, threads: int) -> None:
    gd, _ = q.cleanup_graph(q.load_graph(pb))
    split, _ = q.split_depthwise(gd)
    cuts = [("backbone", "MobilenetV2/concat")] + [(f"stage {s}", STAGE.format(s=s)) for s in range(6)]
    cuts.append(("output (96x96 resize)", "Convolutional_Pose_Machine/stage_5_out"))
    engines = {}
    for label, node in cuts:
        for tag, g in (("upstream", gd), ("split", split)):
            engines[(label, tag)] = Raw(convert(g, node, tmp / f"{tag}-{len(engines)}.tflite"), threads)
    lat = latency_interleaved(engines, None, runs=runs, warmup=3)
    print(f"\nCPM float32 truncated at each stage ({runs} round-robin runs, {threads} threads; median / min ms)")
    print(f"{'cut at':<24} {'upstream':>17} {'+ this part':>12}   {'7x7 split':>17} {'+ this part':>12}")
    prev = {"upstream": 0.0, "split": 0.0}
    for label, _ in cuts:
        row = f"{label:<24}"
        for tag in ("upstream", "split"):
            m = lat[(label, tag)]
            row += f" {m.median_ms:8.2f} /{m.min_ms:7.2f} {m.min_ms - prev[tag]:+11.2f}  "
            prev[tag] = m.min_ms
        print(row)
    d = delegation(engines[(cuts[-1][0], "split")].path)
    print(f"(full split model: {d.partitions} XNNPACK partition(s), {d.delegated_nodes}/{d.total_nodes} nodes)")


def _full(tf, w):
    return lambda x: tf.nn.relu(tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME"))


def _banded(tf, w):
    def fn(x):
        xp = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
        acc = None
        for r0, rows in ((0, 3), (3, 3), (6, 1)):
            y = tf.nn.depthwise_conv2d(tf.slice(xp, [0, r0, 0, 0], [1, 24 + rows - 1, 30, 260]),
                                       w[r0:r0 + rows], [1, 1, 1, 1], "VALID")
            acc = y if acc is None else acc + y
        return tf.nn.relu(acc)
    return fn


def depthwise_alone(tmp: Path, runs: int, threads: int) -> None:
    tf = tensorflow()
    rng = np.random.default_rng(0)
    shape = [1, 24, 24, 260]
    engines = {}
    for k in (3, 5, 7):
        w = tf.constant(rng.normal(size=(k, k, 260, 1)).astype(np.float32) * 0.1)
        variants = [(f"{k}x{k}", _full(tf, w))]
        if k == 7:
            variants.append(("7x7 as 3+3+1 row bands", _banded(tf, w)))
        for name, fn in variants:
            for mode in ("float32", "int8"):
                cf = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
                c = tf.lite.TFLiteConverter.from_concrete_functions([cf])
                if mode == "int8":
                    c.optimizations = [tf.lite.Optimize.DEFAULT]
                    c.representative_dataset = lambda: ([rng.random(shape, dtype=np.float32) * 6] for _ in range(4))
                    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    c.inference_input_type = tf.int8
                    c.inference_output_type = tf.int8
                p = tmp / f"dw-{len(engines)}.tflite"
                p.write_bytes(c.convert())
                engines[(name, mode)] = Raw(str(p), threads)
    lat = latency_interleaved(engines, None, runs=runs, warmup=3)
    print(f"\none depthwise convolution on 24x24x260 (+ReLU), min ms over {runs} runs")
    print(f"{'kernel':<24} {'float32':>8} {'int8':>8}")
    for name in dict.fromkeys(n for n, _ in engines):
        print(f"{name:<24} {lat[(name, 'float32')].min_ms:8.3f} {lat[(name, 'int8')].min_ms:8.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pb", default=str(SHARED / "models" / "cpm" / "model.pb"))
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpm-profile-") as tmp:
        stage_cuts(Path(args.pb), Path(tmp), args.runs, args.threads)
        depthwise_alone(Path(tmp), args.runs, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
