"""Where does int8's keypoint disagreement come from?  (calibration crops only, no labels)

For each int8 model: the label-free agreement with its float model on the
calibration crops (share of all 14 keypoints decoded within 5 % of the crop
side of float's) with each decoder, split by float's peak score; and the
agreement of the *float* heatmaps merely rounded to the int8 model's output
grid, i.e. what the output tensor's resolution alone costs.

    python3 research/agreement_sources.py cpm=PATH.tflite hourglass=PATH.tflite [--weak-sigmas 8 16 32]

``--weak-sigmas`` adds `weak@N` rows (weak_keypoints.py's decoder: `subpixel`, except that channels
scoring under 0.1 x ``score_scale`` are peaked and refined on an N-input-pixel blur), to see whether
decoding the barely-seen keypoints more robustly makes int8 agree with float there.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)
from int8_error import crop_matches
from weak_keypoints import weak_decoder

from edgepose.build.quantize import calibration_images
from edgepose.build.tflite import load_schema, read_model
from edgepose.inference.decode import DECODERS
from edgepose.inference.engine import Engine
from edgepose.models.registry import load_catalogue
from edgepose.models.resolved import entry_traits


def agreement(family: str, decoder, maps: np.ndarray, ref: np.ndarray):
    """(all, float score >= 0.1, float score < 0.1) agreement; ``decoder``: a name or a function."""
    ok, score = crop_matches(family, maps, ref, decoder)
    return ok.mean(), ok[score >= 0.1].mean(), ok[score < 0.1].mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="FAMILY=PATH", help="cpm=... or hourglass=... int8 models")
    ap.add_argument("--weak-sigmas", type=float, nargs="*", default=[], metavar="PX",
                    help="also decode with weak@PX (weak channels refined on a PX-pixel blur)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    calib = calibration_images(clips.CALIB, 192, 192)
    print(f"{'model':<12}{'heatmaps':<30}{'decoder':<10}{'all':>7}{'peak>=0.1':>11}{'peak<0.1':>10}"
          f"   ({len(calib)} calibration crops x 14 keypoints)")
    for spec in args.models:
        family, path = spec.split("=", 1)
        ref = Engine(clips.MODELS / family / "model.tflite")
        quant = Engine(path)
        want = np.stack([ref.run(x).copy() for x in calib])
        got = np.stack([quant.run(x).copy() for x in calib])
        rows = [("int8 model", d, got) for d in DECODERS]
        weak_below = 0.1 * entry_traits(family, load_catalogue())[2]
        rows += [("int8 model", (f"weak@{px:g}", functools.partial(weak_decoder, weak_below=weak_below, sigma_px=px)),
                  got) for px in args.weak_sigmas]
        g = read_model(open(path, "rb").read()).subgraphs[0]
        out = g.tensors[g.outputs[0]]
        if out.type == load_schema().TensorType.INT8:  # the output's grid
            s, z = float(out.quantization.scale[0]), int(out.quantization.zeroPoint[0])
            rounded = (np.clip(np.round(want / s) + z, -128, 127) - z) * s
            rows.append((f"float on output grid {s:.4f}", "subpixel", rounded))
        for label, dec, maps in rows:
            name, dec = dec if isinstance(dec, tuple) else (dec, dec)
            a, hi, lo = agreement(family, dec, maps, want)
            print(f"{family:<12}{label:<30}{name:<10}{100 * a:6.1f}%{100 * hi:10.1f}%{100 * lo:9.1f}%")


if __name__ == "__main__":
    main()
