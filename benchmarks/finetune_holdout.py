"""Does quantization-aware fine-tuning carry over to photos it never saw?  (calibration photos only)

Splits ../shared/data/calib into the first 10 photos (fine-tuned on, with the
build's graph rewrites and the plain conversion's int8 grid, as `edgepose models
quantize` does) and the last 3 (held out), and prints the simulated
int8 heatmap error (mean squared difference from the float graph) on both
sets' crops before and after fine-tuning.  This is how the steps and rate in
the catalogue were chosen without touching the evaluation set.

    python3 benchmarks/finetune_holdout.py cpm --steps 600 --rate 2e-5
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import clips  # noqa: E402
from edgepose import finetune as ft  # noqa: E402
from edgepose import quantize as q  # noqa: E402

OUTPUTS = {"cpm": "Convolutional_Pose_Machine/stage_5_out", "hourglass": "hourglass_out_3"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=sorted(OUTPUTS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rate", type=float, default=2e-5)
    ap.add_argument("--held-out", type=int, default=3, help="photos held out (the last N)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = OUTPUTS[args.family]
    photos = q.read_photos(clips.CALIB)
    train, held = photos[:-args.held_out], photos[-args.held_out:]
    calib = q.calibration_crops(train, 192, 192)
    hold = q.calibration_crops(held, 192, 192)
    gd, _ = q.cleanup_graph(q.load_graph(clips.MODELS / args.family / "model.pb"), keep=[out])
    sub = q.statistics_subset(calib)
    gd, _ = q.split_wide_concats(gd)
    gd, _ = q.balance_concats(gd, "image", sub)
    gd, _ = q.equalize_depthwise(gd, "image", sub)
    t = time.time()
    plain = q.fix_quantization(q.convert(gd, "image", out, [1, 192, 192, 3], q.Recipe(), calib))[0]
    _, notes = ft.finetune(gd, "image", out, calib, train, ft.FineTune(steps=args.steps, learning_rate=args.rate),
                           holdout=hold, reference=plain)
    print(f"{args.family}: {len(train)} photos trained on ({len(calib)} crops), {len(held)} held out "
          f"({len(hold)} crops); {time.time() - t:.0f} s")
    print(notes[-1])


if __name__ == "__main__":
    main()
