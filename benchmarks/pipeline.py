#!/usr/bin/env python3
"""Pipeline efficiency, memory and start-up of `edgepose run` (prints numbers; asserts nothing).

    python3 benchmarks/pipeline.py [--model cpm] [--threads 1] [--frames 300] [--rounds 3] [--set S.KEY=VALUE]

* efficiency = FPS of `edgepose run` on a 640x480 clip / (1 / median bare invoke()) for the same
  model, threads and backend, both measured in this run (goal >= 0.90 with 1 thread);
* peak RSS of the running daemon (goal < 200 MB);
* time to first payload with a cached model (goal < 3 s);
* the in-daemon share of the model: the payloads' median ``infer`` stage over the median time between two
  frames entering the pipeline (their ``ts``), both measured in the daemon at the same moments, so less
  swayed by other jobs on a shared machine than the ratio to a separate bare loop;
* model runs per frame of the same pipeline on the clip (``FrameResult.passes``, in-process: the payloads do
  not carry it), and how many frames started a new track.

``--set tracking.refine_video=2`` (repeatable) runs the daemon and the in-process pipeline with that config
value (``EDGEPOSE_TRACKING_REFINE_VIDEO=2`` in the daemon's environment).

The clip is made from ../shared/data/calib photos (letterboxed to 640x480, each held for a few
frames: a scene cut every 5 frames).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEPOSE_SHARED", REPO.parent / "shared"))


def make_clip(path: Path, frames: int, size=(640, 480), hold: int = 5, photos=None) -> Path:
    """A clip of ``photos`` (default: every ../shared/data/calib photo) letterboxed to ``size``, each
    held ``hold`` frames."""
    photos = list(photos) if photos else sorted((SHARED / "data" / "calib").glob("*.jpg"))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for i in range(frames):
        img = cv2.imread(str(photos[(i // hold) % len(photos)]))
        s = min(size[0] / img.shape[1], size[1] / img.shape[0])
        small = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((size[1], size[0], 3), np.uint8)
        y, x = (size[1] - small.shape[0]) // 2, (size[0] - small.shape[1]) // 2
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        out.write(canvas)
    out.release()
    return path


def bare_invoke_ms(model_path: Path, threads: int, xnnpack: bool, n: int = 100) -> float:
    from edgepose.inference.engine import Engine
    e = Engine(model_path, threads=threads, xnnpack=xnnpack)
    e.set_input(np.zeros((e.spec.input_h, e.spec.input_w, 3), np.uint8))
    for _ in range(10):
        e.invoke()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        e.invoke()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_daemon(args, clip: Path, env: dict, extra=()) -> dict:
    cmd = [sys.executable, "-m", "edgepose.cli", "run", "--source", str(clip), "--model", args.model,
           "--threads", str(args.threads), "--sink", "stdout", *extra]
    if args.no_xnnpack:
        cmd.append("--no-xnnpack")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(proc.pid))

    threading.Thread(target=sample, daemon=True).start()
    arrivals, stages, stamps = [], [], []
    for line in proc.stdout:
        arrivals.append(time.monotonic())
        doc = json.loads(line)
        stages.append(doc["latency_ms"])
        stamps.append(doc["ts"])
    proc.wait()
    done.set()
    return {"first_payload_s": arrivals[0] - t0 if arrivals else float("nan"), "frames": len(arrivals),
            "arrivals": arrivals, "stages": stages, "stamps": stamps, "peak_rss_mb": peak[0], "rc": proc.returncode}


def model_runs(args, clip: Path, env: dict) -> tuple:
    """(model runs per frame, frames that started a new track) of the daemon's own pipeline
    (``PoseEstimator.from_config``, default config and this run's model/threads) on the clip, in-process:
    ``FrameResult.passes`` is what the payloads do not carry."""
    from edgepose.core import config as config_mod
    from edgepose.inference.estimator import PoseEstimator

    cfg = config_mod.Config()
    config_mod.apply_mapping(cfg, config_mod.env_mapping(env), "environment", from_text=True)  # --set
    config_mod.apply_mapping(cfg, {"model": {"name": args.model, "dir": env["EDGEPOSE_MODEL_DIR"],
                                             "mirror": env["EDGEPOSE_MODEL_MIRROR"]},
                                   "runtime": {"threads": args.threads, "xnnpack": not args.no_xnnpack}},
                             "benchmark")
    est = PoseEstimator.from_config(cfg)
    cap = cv2.VideoCapture(str(clip))
    runs = new = frames = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        r = est.process(img, ts=frames / 30)
        runs, new, frames = runs + r.passes, new + r.new_track, frames + 1
    cap.release()
    return runs / max(frames, 1), new


def fps_of(arrivals, skip: int = 10) -> float:
    a = arrivals[skip:]
    return (len(a) - 1) / (a[-1] - a[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cpm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--no-xnnpack", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/daemon rounds (median reported)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config value for the daemon and the in-process pipeline (e.g. tracking.refine_video=2)")
    args = ap.parse_args()

    from edgepose.models import registry
    tmp = Path(tempfile.mkdtemp(prefix="edgepose-bench-"))
    env = dict(os.environ, EDGEPOSE_MODEL_MIRROR=os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models")))
    env.setdefault("EDGEPOSE_MODEL_DIR", str(tmp / "models"))
    for item in args.set:
        key, _, value = item.partition("=")
        env["EDGEPOSE_" + key.replace(".", "_").upper()] = value
    path = registry.resolve(args.model, cache_dir=env["EDGEPOSE_MODEL_DIR"], mirror=env["EDGEPOSE_MODEL_MIRROR"])
    clip = make_clip(tmp / "clip640x480.mp4", args.frames)
    # alternate bare-invoke and daemon measurements so both see the same machine conditions
    rounds = []
    for _ in range(args.rounds):
        before = bare_invoke_ms(path, args.threads, not args.no_xnnpack)
        res = run_daemon(args, clip, env)
        after = bare_invoke_ms(path, args.threads, not args.no_xnnpack)
        invoke_ms = (before + after) / 2
        fps = fps_of(res["arrivals"]) if res["frames"] > 20 else float("nan")
        rounds.append((fps * invoke_ms / 1000, invoke_ms, fps, res))
    print(f"model {args.model}, threads {args.threads}, xnnpack {not args.no_xnnpack}, clip 640x480 "
          f"x {args.frames} frames, {args.rounds} rounds, settings: {' '.join(args.set) or 'defaults'}")
    for i, (eff, invoke_ms, fps, res) in enumerate(rounds, 1):
        print(f"round {i}: bare invoke {invoke_ms:.2f} ms ({1000 / invoke_ms:.1f} FPS ceiling), "
              f"edgepose run {fps:.1f} FPS ({res['frames']} payloads, exit {res['rc']}), efficiency {eff:.3f}")
    eff = statistics.median(r[0] for r in rounds)
    print(f"pipeline efficiency (median of rounds): {eff:.3f} (goal >= 0.90)")
    stages = [st for r in rounds for st in r[3]["stages"]]
    print("per-frame stages from the payloads' latency_ms (median over all rounds): " + ", ".join(
        f"{k} {statistics.median(st[k] for st in stages):.2f} ms"
        for k in ("capture", "preprocess", "infer", "decode", "total")))
    # the same question asked inside the daemon, where other jobs slow both sides alike: the model's share of
    # the main loop (median infer stage over the median time between two frames entering the pipeline: ts)
    periods = [1e3 * (b - a) for r in rounds for a, b in zip(r[3]["stamps"][10:], r[3]["stamps"][11:])]
    infer = statistics.median(st["infer"] for st in stages)
    print(f"in-daemon share of the model: median infer {infer:.2f} ms / median frame period "
          f"{statistics.median(periods):.2f} ms = {infer / statistics.median(periods):.3f}")
    runs, new = model_runs(args, clip, env)
    print(f"model runs per frame (the same pipeline in-process on the clip, FrameResult.passes): {runs:.3f} "
          f"({new} of {args.frames} frames started a new track)")
    print(f"peak RSS: {max(r[3]['peak_rss_mb'] for r in rounds):.0f} MB (goal < 200)")
    print(f"time to first payload (cached model): {statistics.median(r[3]['first_payload_s'] for r in rounds):.2f} s "
          f"(goal < 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
