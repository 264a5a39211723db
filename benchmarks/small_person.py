"""Small person in a wide view: PCK@0.1 with tracking vs whole-frame input.

Every eval person with >= 8 labelled keypoints is pasted at 1/4 of the frame
height into a 1280x720 frame and walks across it (20 frames at 30 fps,
300 px/s, with a vertical bob).  Each clip runs through the real pipeline
twice: feeding the whole frame (padded to square) and with the Tracker.  Keypoints are
scored by name, so a model with another keypoint set (MoveNet's COCO 17) is scored on the
joints it shares with the eval file (12 of the 14).

    python3 benchmarks/small_person.py [--models cpm hourglass movenet-lightning] [--frames 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Sequence

import clips
import numpy as np

from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import Pipeline, WholeFrame
from edgepose.inference.tracking import Tracker


def run(pipe: Pipeline, clip: clips.Clip) -> np.ndarray:
    return np.stack([pipe.process(f, i / clip.fps).pose.xy() for i, f in enumerate(clip.frames)])


def in_eval_order(pred: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(T, K, 2) in the model's keypoint order -> (T, 14, 2) in the eval file's, NaN where the model lacks one."""
    out = np.full(pred.shape[:1] + (len(KEYPOINT_NAMES), 2), np.nan)
    for j, n in enumerate(KEYPOINT_NAMES):
        if n in names:
            out[:, j] = pred[:, list(names).index(n)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass", "movenet-lightning"])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--decoder", default="subpixel")
    ap.add_argument("--tile", type=float, default=0.5, help="search tile size (0 = whole frame only)")
    ap.add_argument("--min-score", type=float, default=0.25, help="for CPM; times the model's score_scale")
    ap.add_argument("--score-scale", type=float, default=None,
                    help="override the model's catalogue score_scale (1 = raw thresholds)")
    ap.add_argument("--margin", type=float, default=1.7)
    ap.add_argument("--height", type=float, default=0.25, help="person height / frame height")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from edgepose.models.resolved import model_at
    sample_clips = [clips.moving_clip(s, frames=args.frames, height_frac=args.height, seed=i)
                    for i, s in enumerate(clips.people())]
    print(f"{len(sample_clips)} clips x {args.frames} frames, 1280x720, person {args.height:g} of "
          f"frame height, decoder {args.decoder}")
    print(f"{'model':<18}{'score_scale':>12}{'whole frame':>13}{'tracking':>10}{'gain':>7}{'tracked frames':>16}")
    for name in args.models:
        model = model_at(clips.MODELS / name / "model.tflite", entry=name)
        eng = Engine(model)
        in_w, in_h = eng.input_size
        dec = model.decoder(args.decoder)
        scale = model.score_scale if args.score_scale is None else args.score_scale
        hits = {"whole": [0, 0], "track": [0, 0]}
        names = model.keypoint_names
        tracked = 0
        for c in sample_clips:
            for mode in hits:
                tracker = Tracker(in_w, in_h, min_score=args.min_score, margin=args.margin, search=args.tile,
                                  score_scale=scale) if mode == "track" else None
                pipe = Pipeline(eng, decoder=dec, box_policy=tracker or WholeFrame(in_w, in_h), names=names)
                if tracker is None:
                    pred = run(pipe, c)
                else:
                    pred = []
                    for i, f in enumerate(c.frames):
                        tracked += tracker.tracking
                        pred.append(pipe.process(f, i / c.fps).pose.xy())
                    pred = np.stack(pred)
                shared = dataclasses.replace(c, visible=c.visible & np.isin(KEYPOINT_NAMES, names))
                h, n = clips.pck(in_eval_order(pred, names), shared)
                hits[mode][0] += h
                hits[mode][1] += n
        w = 100 * hits["whole"][0] / hits["whole"][1]
        t = 100 * hits["track"][0] / hits["track"][1]
        total = len(sample_clips) * args.frames
        print(f"{name:<18}{scale:>12.2f}{w:>13.1f}{t:>10.1f}{t - w:>+7.1f}{tracked:>10d}/{total}")


if __name__ == "__main__":
    main()
