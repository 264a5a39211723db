"""Each model's typical confident pose score on the calibration photos, relative to CPM's.

Runs every model on the whole frame of each ../shared/data/calib photo and
prints the median pose score (mean keypoint peak) and its ratio to CPM's: the
``score_scale`` of the model's catalogue entry (``[<model>] output.score_scale``),
by which thresholds set for CPM (tracking) are multiplied.  Calibration
photos only: the eval set is never used to set a parameter.

    python3 research/score_scale.py [--models cpm hourglass movenet-lightning]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)

from edgepose.core.geometry import CropTransform, whole_frame_box
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import crop_to_input
from edgepose.models.resolved import ResolvedModel, model_at

CALIB = clips.CALIB


def median_pose_score(model: ResolvedModel) -> float:
    engine, decoder = Engine(model), model.decoder("argmax")  # every decoder's score is the raw peak
    in_w, in_h = engine.input_size
    scores = []
    for path in sorted(CALIB.iterdir()):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        t = CropTransform(whole_frame_box(img.shape[1], img.shape[0], in_w, in_h), in_w, in_h)
        scores.append(float(decoder(engine.run(crop_to_input(img, t)))[1].mean()))
    return float(np.median(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass", "movenet-lightning"])
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    ref = median_pose_score(model_at(clips.MODELS / "cpm" / "model.tflite", entry="cpm"))
    print(f"{'model':<19}{'median pose score':>18}{'score_scale':>13}")
    for name in args.models:
        m = ref if name == "cpm" else median_pose_score(model_at(clips.MODELS / name / "model.tflite", entry=name))
        print(f"{name:<19}{m:>18.3f}{m / ref:>13.2f}")


if __name__ == "__main__":
    main()
