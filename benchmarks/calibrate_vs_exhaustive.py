#!/usr/bin/env python3
"""Does `edgepose calibrate-fps` pick (nearly) the fastest configuration? Prints numbers; asserts nothing.

    python3 benchmarks/calibrate_vs_exhaustive.py [--model hourglass] [--source CLIP] [--seconds 90]
                                                  [--per-config 3] [--reps 6] [--repeat]

1. runs `edgepose calibrate-fps --json` as a user would (subprocess, default budget);
2. runs an independent exhaustive sweep over the same options (every model variant, thread count
   and XNNPACK setting calibrate-fps measured): each configuration runs the service's own loop
   (`edgepose.daemon.service.Daemon.run`, sink none) for --per-config seconds, --reps times in rotated
   order, on the same frames held in memory by a source written here (not calibrate's); the FPS
   of a configuration is the median over repetitions;
3. prints the exhaustive FPS of the configuration calibrate-fps picked, the fastest verified one
   (and the fastest overall), and their ratio (goal >= 0.95);
4. with --repeat, runs calibrate-fps a second time and compares both picks by their exhaustive FPS
   (goal: same configuration or within 5%).

The default clip is ../shared/data/video/demo.mp4; models come from ../shared/models into a
temporary cache unless EDGEPOSE_MODEL_DIR is set (put quantized variants with their report.json
there to include them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEPOSE_SHARED", REPO.parent / "shared"))

from edgepose.capture.sources import Frame, FrameSource  # noqa: E402
from edgepose.core import config as config_mod  # noqa: E402
from edgepose.daemon.service import Daemon  # noqa: E402


def key(c: dict) -> tuple:
    return (c["model"], c["threads"], c["xnnpack"])


def label(k: tuple) -> str:
    return f"{k[0]} t{k[1]} xnnpack {'on' if k[2] else 'off'}"


def run_calibrate(args, env) -> dict:
    cmd = [sys.executable, "-m", "edgepose.cli", "calibrate-fps", "--source", str(args.source), "--model",
           args.model, "--config", os.devnull, "--json"]
    if args.seconds:
        cmd += ["--seconds", str(args.seconds)]
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"calibrate-fps failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads(done.stdout)
    report["wall_s"] = time.monotonic() - t0
    return report


class MemoryLoop(FrameSource):
    """The clip's frames decoded once with OpenCV, handed out in a loop as copies (finite never ends)."""

    live = False

    def __init__(self, images):
        self.images, self.i = images, 0

    def read(self, timeout: float = 1.0):
        t0 = time.perf_counter()
        img = self.images[self.i % len(self.images)].copy()
        self.i += 1
        return Frame(img, time.time(), self.i - 1, (time.perf_counter() - t0) * 1e3)


def load_frames(path: Path, limit: int = 120):
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    if not out:
        sys.exit(f"cannot read frames from {path}")
    return out


def daemon_fps(k: tuple, frames, seconds: float, warmup: int, env: dict) -> float:
    """Sustained FPS of the service loop itself for one configuration."""
    cfg = config_mod.load(None, {"model": {"name": k[0]}, "runtime": {"threads": k[1], "xnnpack": k[2]},
                                 "output": {"sink": "none"}, "camera": {"source": "memory"}},
                          environ={kk: v for kk, v in env.items() if kk.startswith("EDGEPOSE_MODEL_")})
    times = []
    daemon = None

    def observer(frame, result, payload):
        times.append(time.perf_counter())
        if len(times) > warmup and times[-1] - times[warmup] >= seconds:
            daemon.stop_event.set()

    daemon = Daemon(cfg, environ={}, source_factory=lambda *a, **kw: MemoryLoop(frames), observers=[observer])
    daemon.run()
    n = len(times) - 1 - warmup
    return n / (times[-1] - times[warmup])


def exhaustive(configs, frames, args, env) -> dict:
    fps = {k: [] for k in configs}
    for rep in range(args.reps):
        order = configs[rep % len(configs):] + configs[:rep % len(configs)]
        if rep % 2:
            order = order[::-1]
        for k in order:
            f = daemon_fps(k, frames, args.per_config, args.warmup, env)
            fps[k].append(f)
            print(f"  rep {rep + 1}/{args.reps}  {label(k):<34} {f:7.1f} fps", file=sys.stderr, flush=True)
    return fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hourglass", help="model family (default hourglass)")
    ap.add_argument("--source", type=Path, default=SHARED / "data" / "video" / "demo.mp4")
    ap.add_argument("--seconds", type=float, default=0, help="calibrate-fps budget (default: its default)")
    ap.add_argument("--per-config", type=float, default=3.0, help="exhaustive seconds per configuration and rep")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=5, help="frames not timed at the start of each run")
    ap.add_argument("--repeat", action="store_true", help="also check repeatability (a second calibrate run)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    env = dict(os.environ)
    env.setdefault("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models"))
    tmp = None
    if "EDGEPOSE_MODEL_DIR" not in env:
        tmp = tempfile.TemporaryDirectory(prefix="edgepose-bench-")
        env["EDGEPOSE_MODEL_DIR"] = tmp.name
    env.pop("EDGEPOSE_CONFIG", None)

    t0 = time.monotonic()
    print(f"calibrate-fps run 1 on {args.source} ...", file=sys.stderr, flush=True)
    runs = [run_calibrate(args, env)]
    if args.repeat:
        print("calibrate-fps run 2 ...", file=sys.stderr, flush=True)
        runs.append(run_calibrate(args, env))
    first = runs[0]
    configs = [key(c) for c in first["candidates"] if c["stage"] != "failed"]
    verified = {key(c): c["verified"] for c in first["candidates"]}
    print(f"exhaustive sweep: {len(configs)} configurations x {args.reps} reps x {args.per_config:g} s "
          f"(service loop) ...", file=sys.stderr, flush=True)
    frames = load_frames(args.source)
    reps = exhaustive(configs, frames, args, env)
    ex = {k: statistics.median(v) for k, v in reps.items()}

    print(f"\nmachine: {first['board']}, {first['cores']} cores; source {args.source.name}; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"{'configuration':<36} {'calibrate fps':>13} {'exhaustive fps':>15} {'reps min..max':>15}  verified")
    cal_fps = {key(c): c["fps"] for c in first["candidates"]}
    for k in sorted(configs, key=lambda k: -ex[k]):
        lo, hi = min(reps[k]), max(reps[k])
        print(f"{label(k):<36} {cal_fps.get(k, 0):13.1f} {ex[k]:15.1f} {f'{lo:.1f}..{hi:.1f}':>15}  "
              f"{'yes' if verified[k] else 'no'}")
    spread = statistics.median((max(v) - min(v)) / statistics.median(v) for v in reps.values())
    print(f"noise: median spread (max-min)/median of a configuration's repetitions {spread:.0%}")
    best_v = max((k for k in configs if verified[k]), key=lambda k: ex[k])
    best_all = max(configs, key=lambda k: ex[k])
    for i, rep in enumerate(runs, 1):
        pick = key(rep["choice"])
        print(f"\ncalibrate-fps run {i} ({rep['elapsed_s']:.0f} s measuring, {rep['wall_s']:.0f} s wall) picked "
              f"{label(pick)}: {rep['choice']['fps']:.1f} fps by its own measurement, cap {rep['choice']['max_fps']}")
        print(f"  exhaustive fps of the pick:            {ex[pick]:7.1f}")
        print(f"  fastest verified (exhaustive):         {ex[best_v]:7.1f}  {label(best_v)}")
        if best_all != best_v:
            print(f"  fastest overall incl. unverified:      {ex[best_all]:7.1f}  {label(best_all)}")
        print(f"  ratio pick / fastest verified:         {ex[pick] / ex[best_v]:7.3f}  (goal >= 0.95)")
        if pick != best_v:
            overlap = max(reps[pick]) >= min(reps[best_v])
            print(f"  repetitions of the two {'overlap' if overlap else 'do not overlap'} "
                  f"({min(reps[pick]):.1f}..{max(reps[pick]):.1f} vs {min(reps[best_v]):.1f}..{max(reps[best_v]):.1f})")
    if len(runs) == 2:
        a, b = key(runs[0]["choice"]), key(runs[1]["choice"])
        ratio = min(ex[a], ex[b]) / max(ex[a], ex[b])
        print(f"\nrepeatability: run 1 {label(a)}, run 2 {label(b)}: "
              f"{'same configuration' if a == b else 'different configurations'}; exhaustive fps ratio "
              f"{ratio:.3f} (goal: same, or >= 0.95)")
    print(f"\ntotal benchmark time {time.monotonic() - t0:.0f} s")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
