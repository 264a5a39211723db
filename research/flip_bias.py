"""Label-free check of the decoders' horizontal geometry: decode each crop and its mirror image.

For every calibration crop (no annotations needed, the eval set is not touched)
the model runs on the crop and on its left-right mirror image.  The mirrored
prediction, with left_* and right_* swapped and x mirrored back (``W - x`` in
continuous heatmap coordinates), should land where the plain one does.  A decoder
that places every keypoint ``b`` cells to the right of the truth gets
``x - (W - x') = 2b``, so half that difference estimates its horizontal bias.
Integer decoders (argmax, upstream) land on a half-cell lattice (CPM's on 2 cells,
its 24x24 knots), so their medians say little; the sub-pixel decoder's is the
number to read.  Only keypoints both runs
see clearly (score >= --min-score) count; the median is reported because
left/right confusions give a few large outliers.  The networks themselves are not
exactly mirror-symmetric (stride-2 convolutions pad one side), which adds a small
bias of their own to every decoder.

    python3 research/flip_bias.py [--models cpm hourglass]
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
from edgepose.inference.decode import DECODERS
from edgepose.inference.engine import Engine
from edgepose.tools.evaluate import mirror_offsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass"])
    ap.add_argument("--min-score", type=float, default=0.3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    crops = q.calibration_crops(q.read_photos(clips.CALIB), 192, 192)
    print(f"{len(crops)} calibration crops and their mirror images; bias in heatmap cells (+ = right)")
    print(f"{'model':<10} {'decoder':<9}{'keypoints':>10}{'median':>8}{'|d| < 1 mean':>14}")
    for name in args.models:
        eng = Engine(clips.MODELS / name / "model.tflite")
        plain = [eng.run(c).copy() for c in crops]
        mirrored = [eng.run(np.ascontiguousarray(c[:, ::-1])).copy() for c in crops]
        pairs = list(zip(plain, mirrored))
        for dname in DECODERS:
            d = mirror_offsets(pairs, dname, min_score=args.min_score)
            near = d[np.abs(d) < 1.0]
            print(f"{name:<10} {dname:<9}{len(d):>10}{np.median(d):>8.3f}{near.mean():>14.3f}")


if __name__ == "__main__":
    main()
