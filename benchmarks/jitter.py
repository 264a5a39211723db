"""Smoothing: jitter on a still person and lag on a moving one, with and without One Euro.

Still: each eval person (>= 8 labelled keypoints) as a photo held still in a
640x480 frame, 60 frames at 30 fps, each frame with fresh Gaussian sensor noise
(sigma 4 DN).  Jitter = per-keypoint standard deviation over time (frame px),
median over labelled keypoints.

Moving: the same people walking across a 1280x720 frame at 1/2 frame height,
300 px/s (the tracker follows them).  Lag = the time shift (in frames, sub-frame
by parabolic fit) that best aligns the smoothed x trajectory with the raw one.

    python3 benchmarks/jitter.py [--model cpm] [--min-cutoff 1.0 --beta 5 --d-cutoff 1.0]
"""

from __future__ import annotations

import argparse
import logging

import clips
import numpy as np

from edgepose.inference.decode import get_decoder
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import Pipeline
from edgepose.inference.smoothing import OneEuroSmoother
from edgepose.inference.tracking import Tracker


def poses(pipe: Pipeline, clip: clips.Clip):
    out = [pipe.process(f, i / clip.fps).pose for i, f in enumerate(clip.frames)]
    return np.stack([p.xy() for p in out]), np.stack([p.scores() for p in out])


def smooth(xy: np.ndarray, scores: np.ndarray, fps: float, sm: OneEuroSmoother) -> np.ndarray:
    sm.reset()
    return np.stack([sm.filter(xy[t], scores[t], t / fps) for t in range(len(xy))])


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_lag: int = 6) -> float:
    """Shift (frames) minimising the mean squared gap between smoothed(t) and raw(t - lag)."""
    errs = []
    for lag in range(max_lag + 1):
        a, b = smoothed[lag:], raw[:len(raw) - lag]
        errs.append(np.mean((a - b) ** 2))
    e = np.array(errs)
    i = int(e.argmin())
    if 0 < i < max_lag:  # parabolic refinement
        d = e[i - 1] - 2 * e[i] + e[i + 1]
        if d > 0:
            return i + 0.5 * (e[i - 1] - e[i + 1]) / d
    return float(i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cpm")
    ap.add_argument("--decoder", default="subpixel")
    ap.add_argument("--min-cutoff", type=float, default=None)
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--d-cutoff", type=float, default=None)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--people", type=int, default=8, help="how many eval people to use")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from edgepose.core.config import SmoothingConfig
    d = SmoothingConfig()
    mc = d.min_cutoff if args.min_cutoff is None else args.min_cutoff
    beta = d.beta if args.beta is None else args.beta
    dc = d.d_cutoff if args.d_cutoff is None else args.d_cutoff
    eng = Engine(clips.MODELS / args.model / "model.tflite")
    in_w, in_h = eng.input_size
    dec = get_decoder(args.decoder)
    sm = OneEuroSmoother(mc, beta, dc)
    ppl = clips.people()[:args.people]
    raw_std, sm_std, lags, move_err = [], [], [], []
    for i, s in enumerate(ppl):
        still = clips.still_clip(s, frames=args.frames, seed=i)
        xy, sc = poses(Pipeline(eng, decoder=dec), still)  # whole frame: the photo fills it
        sxy = smooth(xy, sc, still.fps, sm)
        v = still.visible
        raw_std.append(np.linalg.norm(xy.std(axis=0), axis=-1)[v])
        sm_std.append(np.linalg.norm(sxy[args.frames // 3:].std(axis=0), axis=-1)[v])  # after settling
        mov = clips.moving_clip(s, frames=args.frames // 2, height_frac=0.5, seed=i)
        xy, sc = poses(Pipeline(eng, decoder=dec, box_policy=Tracker(in_w, in_h)), mov)
        sxy = smooth(xy, sc, mov.fps, sm)
        good = mov.visible & (np.linalg.norm(xy - mov.gt, axis=-1) < 0.1 * mov.size[:, None]).mean(0).__ge__(0.8)
        if good.any():
            lags.append(lag_frames(xy[:, good, 0], sxy[:, good, 0]))
            truth = mov.gt[:, good, 0]
            lags.append(lag_frames(truth, sxy[:, good, 0]) - lag_frames(truth, xy[:, good, 0]))
        move_err.append((np.linalg.norm(xy - mov.gt, axis=-1)[:, mov.visible].mean(),
                         np.linalg.norm(sxy - mov.gt, axis=-1)[:, mov.visible].mean()))
    r, m = np.median(np.concatenate(raw_std)), np.median(np.concatenate(sm_std))
    lag_raw = np.array(lags[0::2])
    lag_gt = np.array(lags[1::2])
    me = np.array(move_err)
    print(f"model {args.model}, decoder {args.decoder}, One Euro min_cutoff {mc:g} beta {beta:g} "
          f"d_cutoff {dc:g}; {len(ppl)} people, {args.frames} frames at 30 fps")
    print(f"still person jitter (median keypoint std, px): raw {r:.2f}  smoothed {m:.2f}  "
          f"reduction {r / m:.1f}x")
    print(f"moving person lag (frames): smoothed vs raw {np.median(lag_raw):.2f} (max {lag_raw.max():.2f}); "
          f"added vs ground truth {np.median(lag_gt):.2f}")
    print(f"moving person mean error (px): raw {me[:, 0].mean():.1f}  smoothed {me[:, 1].mean():.1f}")


if __name__ == "__main__":
    main()
