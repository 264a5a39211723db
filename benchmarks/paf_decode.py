"""Multi-person decoding time (peaks + grouping, edgepose/inference/paf.py) with N people.

The output is what a perfect OpenPose model gives for N standing people spread over the 432x368
input's 54x46 grid (``paf.render``), plus low noise over the whole map (real part maps are never
exactly zero); with ``--model PATH --photo FILE`` the real model's output on a photo is timed too.
Prints min and median over ``--repeat`` decodes.

    python3 benchmarks/paf_decode.py [--people 5] [--repeat 500] [--model M.tflite --photo P.jpg]
"""

from __future__ import annotations

import argparse
import time

import clips  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from edgepose.inference import paf

GOAL_MS = 3.0  # issue 22: peaks + grouping <= 3 ms per frame with 5 people


def person(cx: float, top: float, s: float) -> np.ndarray:
    rel = [(0, 0), (0, 3), (-3, 3), (-4, 7), (-4.5, 11), (3, 3), (4, 7), (4.5, 11), (-2, 12), (-2.2, 18),
           (-2.3, 24), (2, 12), (2.2, 18), (2.3, 24), (-0.7, -0.6), (0.7, -0.6), (-1.5, -0.2), (1.5, -0.2)]
    return np.array([[cx + s * x, top + s * y] for x, y in rel])


def timed(out: np.ndarray, repeat: int):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = paf.decode_people(out)
        times.append(time.perf_counter() - t0)
    return len(found), 1e3 * min(times), 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=500)
    ap.add_argument("--model", default=None, help="an openpose-thin .tflite (e.g. the built openpose-thin-float32)")
    ap.add_argument("--photo", default=None)
    args = ap.parse_args()
    grid = (54, 46)
    step = grid[0] / args.people
    people = [person(step * (i + 0.5), 6 + 3 * (i % 2), 0.55 + 0.1 * (i % 3)) for i in range(args.people)]
    out = paf.render(people, grid)
    out += np.random.default_rng(0).normal(0, 0.01, out.shape).astype(np.float32)
    n, lo, med = timed(out, args.repeat)
    print(f"synthetic {grid[0]}x{grid[1]} grid, {args.people} people: found {n}, decode min {lo:.2f} ms, "
          f"median {med:.2f} ms (goal <= {GOAL_MS} ms: {'met' if lo <= GOAL_MS else 'NOT met'} on the min)")
    if args.model and args.photo:
        import cv2

        from edgepose.core.geometry import CropTransform, whole_frame_box
        from edgepose.inference.engine import Engine
        from edgepose.inference.pipeline import crop_to_input

        engine = Engine(args.model, threads=1)
        w, h = engine.input_size
        frame = cv2.imread(args.photo)
        real = engine.run(crop_to_input(frame, CropTransform(whole_frame_box(frame.shape[1], frame.shape[0], w, h),
                                                             w, h)))
        n, lo, med = timed(real, args.repeat)
        print(f"{args.photo} through {args.model}: found {n}, decode min {lo:.2f} ms, median {med:.2f} ms")


if __name__ == "__main__":
    main()
