"""Can a decoder place the keypoints a model barely sees?  A label-free test on the calibration photos.

About a fifth of the labelled keypoints of the eval set have a float heatmap peak
under 0.1 (CPM scale): the model does not really see them.  They are where int8
disagrees with float (docs/models.md, sixth pass) and where CPM's PCKh@0.5 loses
its one keypoint to `upstream` (docs/accuracy.md).  This asks whether a different
decoder would place them better, without labels and without the eval set:

* each calibration photo and its mirror image is cropped through 37 windows
  (the whole-frame box, and boxes of 0.85, 0.7, 0.55 and 0.45 of it at 9
  positions each), so one keypoint is seen clearly in some windows and weakly
  in others;
* a keypoint's pseudo-label is the median, in frame pixels, of the `subpixel`
  positions from the windows that score it clearly (>= 0.3 x the model's
  ``score_scale``), when at least 3 do and they agree (median deviation <= 2 %
  of the box side);
* every window that scores it weakly (< 0.1 x ``score_scale``) and contains the
  pseudo-label is one *weak instance*; each decoder's error there is measured
  against the pseudo-label, as a fraction of the window's side.

Decoders: `argmax`, `upstream`, `subpixel`, and `weak@N`: `subpixel`, except
that channels scoring under 0.1 x ``score_scale`` take their peak on the map
blurred by N input pixels (a matched filter for a faint, wide bump) and the
Taylor step on that blurred map.  Printed per decoder: median and mean error,
shares within 0.05 and 0.1, and per photo (photo or mirror image) whether its
mean error is lower or higher than `subpixel`'s.

    python3 research/weak_keypoints.py [--models cpm hourglass] [--sigmas 4 8 16 32]
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

from edgepose.build import quantize as q
from edgepose.core.geometry import Box, CropTransform, whole_frame_box
from edgepose.inference.decode import DECODERS, _peaks, _refine, gaussian_blur, subpixel_decoder
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import crop_to_input
from edgepose.models.registry import load_catalogue
from edgepose.models.resolved import entry_traits

ZOOMS = (0.85, 0.7, 0.55, 0.45)
PLACES = (0.0, 0.5, 1.0)
CLEAR = 0.3  # x score_scale: windows whose positions make a pseudo-label
MIN_CLEAR = 3
AGREE = 0.02  # of the whole-frame box side: the clear positions' median deviation


def windows(frame_w: int, frame_h: int):
    """The whole-frame box and zoomed boxes at 9 places each."""
    base = whole_frame_box(frame_w, frame_h, 192, 192)
    out = [base]
    for z in ZOOMS:
        for py in PLACES:
            for px in PLACES:
                out.append(Box(base.x + base.w * (1 - z) * px, base.y + base.h * (1 - z) * py,
                               base.w * z, base.h * z))
    return base, out


def weak_decoder(heatmaps: np.ndarray, weak_below: float, sigma_px: float, input_size: int = 192):
    """`subpixel`; channels scoring under ``weak_below`` are peaked and refined on a ``sigma_px`` blur."""
    xy, scores = subpixel_decoder(heatmaps)
    weak = scores < weak_below
    if weak.any():
        blurred = gaussian_blur(np.ascontiguousarray(heatmaps[..., weak]), sigma_px * heatmaps.shape[0] / input_size)
        rows, cols = _peaks(blurred)
        xy[weak] = _refine(blurred, rows, cols, 0.0, 1.0)
    return xy, scores


def weak_errors(eng: Engine, frames, decoders, scale: float):
    """Per decoder: errors of all weak instances (fraction of the window side), and each frame's mean."""
    errs = {d: [] for d in decoders}
    per_frame = {d: [] for d in decoders}
    for frame in frames:
        base, boxes = windows(frame.shape[1], frame.shape[0])
        maps = [(eng.run(crop_to_input(frame, t)).copy(), t) for t in (CropTransform(b, 192, 192) for b in boxes)]
        pos = {}
        for name, dec in decoders.items():
            got = [dec(h) for h, _ in maps]
            pos[name] = np.array([t.heatmap_to_frame(xy, h.shape[1], h.shape[0]) for (h, t), (xy, _) in zip(maps, got)])
            if name == "subpixel":
                scores = np.array([s for _, s in got])
        found = {d: [] for d in decoders}
        for j in range(scores.shape[1]):
            clear = scores[:, j] >= CLEAR * scale
            if clear.sum() < MIN_CLEAR:
                continue
            label = np.median(pos["subpixel"][clear, j], axis=0)
            if np.median(np.linalg.norm(pos["subpixel"][clear, j] - label, axis=1)) > AGREE * base.w:
                continue
            for v, b in enumerate(boxes):
                if scores[v, j] >= q.CONFIDENT * scale or not (b.x <= label[0] <= b.x + b.w and
                                                                   b.y <= label[1] <= b.y + b.h):
                    continue
                for d in decoders:
                    found[d].append(np.linalg.norm(pos[d][v, j] - label) / max(b.w, b.h))
        for d in decoders:
            errs[d] += found[d]
            per_frame[d].append(np.mean(found[d]) if found[d] else np.nan)
    return {d: np.array(e) for d, e in errs.items()}, {d: np.array(e) for d, e in per_frame.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cpm", "hourglass"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[4, 8, 16, 32],
                    help="blurs of the weak@N decoders, in input pixels")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    photos = q.read_photos(clips.CALIB)
    frames = [f for p in photos for f in (p, np.ascontiguousarray(p[:, ::-1]))]
    print(f"{len(photos)} calibration photos and their mirror images x {1 + len(ZOOMS) * len(PLACES) ** 2} windows; "
          "errors as a fraction of the window side")
    for name in args.models:
        scale = entry_traits(name, load_catalogue())[2]
        decoders = dict(DECODERS)
        for s in args.sigmas:
            decoders[f"weak@{s:g}"] = functools.partial(weak_decoder, weak_below=q.CONFIDENT * scale, sigma_px=s)
        errs, per_frame = weak_errors(Engine(clips.MODELS / name / "model.tflite"), frames, decoders, scale)
        print(f"\n{name}: {len(errs['subpixel'])} weak instances (score < {q.CONFIDENT * scale:.2f}) "
              "with a pseudo-label")
        print(f"  {'decoder':<10}{'median':>8}{'mean':>8}{'<=0.05':>8}{'<=0.1':>8}"
              "   frames better / worse than subpixel")
        for d, e in errs.items():
            diff = per_frame[d] - per_frame["subpixel"]
            ok = np.isfinite(diff)
            print(f"  {d:<10}{np.median(e):8.3f}{e.mean():8.3f}{100 * (e <= 0.05).mean():7.1f}%"
                  f"{100 * (e <= 0.1).mean():7.1f}%   "
                  f"{(diff[ok] < -1e-9).sum()} / {(diff[ok] > 1e-9).sum()} of {ok.sum()}")


if __name__ == "__main__":
    main()
