"""Heatmap error of quantized variants against their float model, on calibration and evaluation crops.

A continuous measure of quantization damage (the keypoint agreement of the
report counts only keypoints that move past 5 % of the box, and is dominated by
undetected keypoints): mean squared difference of the heatmaps, over the
calibration crops (what recipes may be tuned on) and over the evaluation
people's crops (held out).

    EDGEPOSE_MODEL_DIR=/tmp/mcache python3 benchmarks/int8_error.py cpm-int8 hourglass-int8 [PATH.tflite ...]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

import clips
from edgepose import models
from edgepose.engine import Engine
from edgepose.evaluate import infer, load_annotations
from edgepose.quantize import calibration_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="catalogue variants (cpm-int8 ...) or .tflite paths")
    ap.add_argument("--reference", default=None, help="float model (default: the variant's family)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    cache = Path(os.environ.get("EDGEPOSE_MODEL_DIR") or models.default_cache_dir())
    samples = load_annotations(clips.EVAL_FILE)
    calib = calibration_images(clips.CALIB, 192, 192)
    refs = {}
    print(f"{'model':<40}{'reference':<11}{'calib MSE':>11}{'eval MSE':>11}   ({len(calib)} calibration crops, "
          f"{len(samples)} eval people)")
    for name in args.models:
        path = Path(name) if name.endswith(".tflite") else cache / name / "model.tflite"
        ref = args.reference or ("hourglass" if "hourglass" in name else "cpm")
        if ref not in refs:
            e = Engine(clips.MODELS / ref / "model.tflite")
            refs[ref] = (np.stack([e.run(i).copy() for i in calib]), np.stack([h for h, _ in infer(e, samples)]))
        e = Engine(path)
        c = np.stack([e.run(i).copy() for i in calib])
        v = np.stack([h for h, _ in infer(e, samples)])
        print(f"{name:<40}{ref:<11}{np.mean((c - refs[ref][0]) ** 2):11.3g}{np.mean((v - refs[ref][1]) ** 2):11.3g}")


if __name__ == "__main__":
    main()
