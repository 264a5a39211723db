"""Does quantization-aware fine-tuning carry over to photos it never saw?  (calibration photos only)

Splits ../shared/data/calib into the first 10 photos (fine-tuned on, with the
build's graph rewrites and the plain conversion's int8 grid, as `edgepose models
quantize` does) and the last 3 (held out).  Builds the int8 model without and
with fine-tuning (the catalogue recipe otherwise) and prints, for each, the
heatmap error against the float model and the label-free keypoint agreement
(share of all 14 keypoints decoded within 5 % of the crop side of float's) on
the held-out photos' crops: their calibration crops plus --crops augmented
ones.  This is how the fine-tuning settings in the catalogue were chosen
without touching the evaluation set.

    python3 research/finetune_holdout.py cpm --steps 600 --rate 2e-5 [--peak-floor 0.1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)
from int8_error import crop_agreement  # noqa: E402

from edgepose.build import finetune as ft  # noqa: E402
from edgepose.build import quantize as q  # noqa: E402
from edgepose.inference.engine import Engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=sorted(clips.OUTPUTS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rate", type=float, default=2e-5)
    ap.add_argument("--peak-floor", type=float, default=0.0, help="finetune.FineTune.peak_floor")
    ap.add_argument("--mixup", type=float, default=0.0, help="finetune.FineTune.mixup")
    ap.add_argument("--held-out", type=int, default=3, help="photos held out (the last N)")
    ap.add_argument("--crops", type=int, default=96, help="augmented crops of the held-out photos")
    ap.add_argument("--no-baseline", action="store_true", help="skip the build without fine-tuning")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = clips.OUTPUTS[args.family]
    photos = q.read_photos(clips.CALIB)
    train, held = photos[:-args.held_out], photos[-args.held_out:]
    calib = q.calibration_crops(train, 192, 192)
    rng = np.random.default_rng(12345)
    hold = list(q.calibration_crops(held, 192, 192)) + [
        ft.random_crop(held[int(rng.integers(len(held)))], rng, 192, 192) for _ in range(args.crops)]
    reference = Engine(clips.MODELS / args.family / "model.tflite")
    ref_maps = np.stack([reference.run(x).copy() for x in hold])
    runs = ([("without fine-tuning", 0)] if not args.no_baseline else []) + [
        (f"fine-tuned {args.steps} steps, rate {args.rate:g}, peak floor {args.peak_floor:g}, "
         f"mixup {args.mixup:g}", args.steps)]
    print(f"{args.family}: {len(train)} photos trained on ({len(calib)} crops), {len(held)} held out "
          f"({len(hold)} crops)")
    for label, steps in runs:
        t = time.time()
        recipe = q.Recipe(finetune_steps=steps, finetune_rate=args.rate, finetune_peak_floor=args.peak_floor,
                          finetune_mixup=args.mixup)
        built = q.build(clips.MODELS / args.family / "model.pb", "image", out, [1, 192, 192, 3], recipe,
                        calib, train)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(built.model)
            engine = Engine(path)
            maps = np.stack([engine.run(x).copy() for x in hold])
        agree = crop_agreement(args.family, maps, ref_maps)
        print(f"{label}: held-out heatmap MSE {np.mean((maps - ref_maps) ** 2):.3g}, "
              f"agreement {100 * agree:.1f}% ({time.time() - t:.0f} s)")
        for note in built.notes:
            if "fine-tuning:" in note:
                print("  " + note)


if __name__ == "__main__":
    main()
