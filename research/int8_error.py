"""Heatmap error of quantized variants against their float model, on calibration and evaluation crops.

A continuous measure of quantization damage (the keypoint agreement of the
report counts only keypoints that move past 5 % of the box, and is dominated by
undetected keypoints): mean squared difference of the heatmaps, over the
calibration crops (what recipes may be tuned on) and over the evaluation
people's crops (held out).  Also a label-free agreement on the calibration
crops: the share of all keypoints (detected or not) decoded within 5 % of the
crop side of the float model's, the quantity a recipe could be tuned on
without touching the evaluation set.

    EDGEPOSE_MODEL_DIR=/tmp/mcache python3 research/int8_error.py cpm-int8 hourglass-int8 [PATH.tflite ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)

from edgepose.build.quantize import AGREEMENT_TOLERANCE, calibration_images
from edgepose.inference.decode import get_decoder
from edgepose.inference.engine import Engine
from edgepose.models import registry
from edgepose.models.registry import load_catalogue
from edgepose.models.resolved import entry_traits
from edgepose.tools.evaluate import infer, load_annotations


def heatmaps(engine: Engine, calib, samples):
    """The engine's heatmaps on the calibration crops and on the eval people's crops."""
    return np.stack([engine.run(img).copy() for img in calib]), np.stack([h for h, _ in infer(engine, samples)])


def crop_matches(model: str, quant: np.ndarray, ref: np.ndarray, decoder="subpixel"):
    """Per keypoint of every crop: decoded within AGREEMENT_TOLERANCE of the crop side of the
    reference's (bool), and the reference's score.  ``decoder``: a name, or a decoder function."""
    decode = decoder if callable(decoder) else get_decoder(decoder, entry_traits(model, load_catalogue())[1])
    side = max(ref.shape[1:3])  # heatmap cells; the crop is the whole model input
    got, want = [decode(q) for q in quant], [decode(r) for r in ref]
    dist = np.concatenate([np.linalg.norm(g[0] - w[0], axis=-1) for g, w in zip(got, want)])
    return dist <= AGREEMENT_TOLERANCE * side, np.concatenate([w[1] for w in want])


def crop_agreement(model: str, quant: np.ndarray, ref: np.ndarray) -> float:
    """Share of keypoints on the crops decoded within AGREEMENT_TOLERANCE of the crop side of the reference's."""
    return float(crop_matches(model, quant, ref)[0].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="catalogue variants (cpm-int8 ...) or .tflite paths")
    ap.add_argument("--reference", default=None,
                    help="float model (default: the catalogue entry's reference; for paths, by file name)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    cache = Path(os.environ.get("EDGEPOSE_MODEL_DIR") or registry.default_cache_dir())
    catalogue = registry.load_catalogue()
    samples = load_annotations(clips.EVAL_FILE)
    calib = calibration_images(clips.CALIB, 192, 192)
    refs = {}
    print(f"{'model':<40}{'reference':<11}{'calib MSE':>11}{'eval MSE':>11}{'calib agree':>13}   "
          f"({len(calib)} calibration crops, "
          f"{len(samples)} eval people)")
    for name in args.models:
        entry = catalogue.get(name)
        path = entry.cache_file(cache) if entry else Path(name)
        ref = args.reference or (entry.extra.get("reference") if entry else None) or \
            ("hourglass" if "hourglass" in path.name else "cpm")
        if ref not in refs:
            refs[ref] = heatmaps(Engine(clips.MODELS / ref / "model.tflite"), calib, samples)
        c, v = heatmaps(Engine(path), calib, samples)
        agree = crop_agreement(name if entry else ref, c, refs[ref][0])
        print(f"{name:<40}{ref:<11}{np.mean((c - refs[ref][0]) ** 2):11.3g}{np.mean((v - refs[ref][1]) ** 2):11.3g}"
              f"{100 * agree:12.1f}%")


if __name__ == "__main__":
    main()
