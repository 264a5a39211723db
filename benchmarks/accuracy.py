"""Accuracy of every decoder on ../shared/data/eval with the float models (the `edgepose eval` numbers).

Runs each model once per padding and decodes the same heatmaps with every
decoder.  The default padding (0.25) is what `edgepose eval` uses; the other
paddings show whether a decoder's gain holds when the crops change.

    python3 benchmarks/accuracy.py [--models cpm hourglass] [--paddings 0.25 0.1 0.4] [--sigmas 10]

``--sigmas N...`` adds rows ``subpixel@N``: the sub-pixel decoder blurring with
N input pixels (``subpixel`` itself uses 4).
"""

from __future__ import annotations

import argparse
import logging

import clips

from edgepose.inference.engine import Engine
from edgepose.tools.evaluate import evaluate_heatmaps, infer, load_annotations


def pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass"])
    ap.add_argument("--paddings", nargs="+", type=float, default=[0.25, 0.1, 0.4])
    ap.add_argument("--aspect", default="pad")
    ap.add_argument("--sigmas", nargs="*", type=float, default=[],
                    help="extra sub-pixel decoder blurs to compare, in input pixels")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    samples = load_annotations(clips.EVAL_FILE)
    print(f"{len(samples)} people, {int(sum(s.visible.sum() for s in samples))} labelled keypoints")
    print(f"{'model':<10}{'pad':>5} {'decoder':<12}{'PCK@0.1':>8}{'PCK@0.05':>9}{'PCKh@0.5':>9}{'med.err':>9}")
    for name in args.models:
        eng = Engine(clips.MODELS / name / "model.tflite")
        for pad in args.paddings:
            outs = infer(eng, samples, pad, args.aspect)
            for dname, dec in clips.decoders(args.sigmas).items():
                m = evaluate_heatmaps(outs, samples, dec).metrics
                print(f"{name:<10}{pad:>5.2f} {dname:<12}{pct(m['pck@0.1']):>8}{pct(m['pck@0.05']):>9}"
                      f"{pct(m['pckh@0.5']):>9}{m['median_error']:>9.4f}")


if __name__ == "__main__":
    main()
