"""Label-free sub-cell precision of the decoders: the same photo through crop windows moved by 0..7 input pixels.

For each calibration photo (no annotations needed, the eval set is not touched)
and three zooms of its whole-frame box, the model runs on 8 crops whose window
moves right and down by 0, 1, ..., 7 input pixels: one of CPM's 8-pixel knot
cells, two of Hourglass' 4-pixel cells.  The people do not move in the photo, so
a decoder that follows the content to a fraction of a cell decodes the same
photo point from every window (`evaluate.window_spread`).  Printed per model and
decoder: how many keypoints every window scores >= 0.3, the median and mean over
them (and both axes) of the standard deviation of their position across the
windows, in input pixels (an integer decoder's is about a cell / sqrt(12)), and
the drift: the mean deviation shared by all keypoints at each shift, which is the
network's own response to where the content falls on its stride grid and is the
same for every decoder.  `subpixel@N` is the sub-pixel decoder blurring with a
Gaussian of N input pixels (`subpixel`, the default, uses 4).

    python3 research/shift_consistency.py [--models cpm hourglass] [--sigmas 0 2 6 8 10 12]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)

from edgepose.build import quantize as q
from edgepose.core.geometry import Box, whole_frame_box
from edgepose.inference.engine import Engine
from edgepose.tools.evaluate import window_spread, window_views

SHIFTS = range(8)
ZOOMS = (1.0, 0.8, 0.6)


def views(eng: Engine, photos):
    out = []
    for frame in photos:
        base = whole_frame_box(frame.shape[1], frame.shape[0], 192, 192)
        for z in ZOOMS:
            box = Box(base.x + base.w * (1 - z) / 2, base.y + base.h * (1 - z) / 2, base.w * z, base.h * z)
            out.append(window_views(eng, frame, box, SHIFTS))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0, 2, 6, 8, 10, 12],
                    help="blurs of the sub-pixel decoder to compare, in input pixels")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    photos = q.read_photos(clips.CALIB)
    print(f"{len(photos)} calibration photos x {len(ZOOMS)} zooms x windows moved by {list(SHIFTS)} input px; "
          "spread and drift in input pixels")
    print(f"{'model':<10} {'decoder':<13}{'keypoints':>10}{'median':>8}{'mean':>7}   drift per shift")
    for name in args.models:
        scenes = views(Engine(clips.MODELS / name / "model.tflite"), photos)
        for dname, dec in clips.decoders(args.sigmas).items():
            spread, drift = window_spread(scenes, dec)
            print(f"{name:<10} {dname:<13}{len(spread) // 2:>10}{np.median(spread):>8.3f}{spread.mean():>7.3f}   "
                  + " ".join(f"{v:+.2f}" for v in drift))


if __name__ == "__main__":
    main()
