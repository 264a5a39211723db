#!/usr/bin/env python3
"""README's "Which model" table: accuracy on eval-lspet and speed at 1 and 2 threads, every catalogue model.

    python3 benchmarks/which_model.py [--models cpm hourglass movenet-lightning cpm-int8 hourglass-int8]
                                      [--annotations FILE.json] [--runs 50] [--limit N] [--own-joints]

* accuracy: the real ``edgepose eval --model NAME --compare movenet-lightning --annotations FILE --json``
  for each 14-keypoint model (MoveNet's row from the first of them): PCK@0.1 and PCK@0.05 on the 12
  joints all models share (shoulders, elbows, wrists, hips, knees, ankles), plus each heatmap
  model's PCK@0.1 on its own 14 joints (``edgepose eval --model NAME``) with ``--own-joints``;
* speed: median ms of one ``invoke()`` (input set, invoke, output read), every model timed
  round-robin in the same loop (``models.modelinfo.latency_interleaved``), XNNPACK on, at 1 thread
  and then at 2 threads, ``--runs`` each;
* locally built variants (``cpm-int8``, ``hourglass-int8``: ``edgepose models quantize NAME --calib
  ../shared/data/calib --eval ../shared/data/eval-lspet/annotations.json``) are included when they
  are in the model cache (``EDGEPOSE_MODEL_DIR``), with their fidelity verdict; missing ones are
  named, not built here.

Prints the table as Markdown, with the command behind each number, and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from movenet_reference import REPO, annotation_args, eval_json  # noqa: E402

sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEPOSE_SHARED", REPO.parent / "shared"))
LSPET = SHARED / "data" / "eval-lspet" / "annotations.json"
MODELS = ("cpm", "hourglass", "movenet-lightning", "cpm-int8", "hourglass-int8")
REF = "movenet-lightning"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--annotations", type=Path, default=LSPET)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--limit", type=int, default=0, help="first N people (0: all)")
    ap.add_argument("--own-joints", action="store_true",
                    help="also each heatmap model's PCK@0.1 on its own 14 joints (one more eval per model)")
    args = ap.parse_args()

    from edgepose.inference.engine import Engine
    from edgepose.models import registry
    from edgepose.models.fidelity import read_verdict
    from edgepose.models.modelinfo import latency_interleaved

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="edgepose-which-"))
    mirror = os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models"))
    cache = Path(os.environ.get("EDGEPOSE_MODEL_DIR", tmp / "models"))
    env = dict(os.environ, EDGEPOSE_MODEL_MIRROR=mirror, EDGEPOSE_MODEL_DIR=str(cache), EDGEPOSE_RUNTIME_THREADS="2")
    cat = registry.load_catalogue()
    paths, missing = {}, []
    for name in args.models:
        entry = cat.get(name)
        if entry is not None and entry.recipe and not entry.cache_file(cache).is_file():
            missing.append(name)  # a locally built variant that is not built: named, not built here
            continue
        paths[name] = registry.resolve(name, cache_dir=cache, mirror=mirror)
    ann = annotation_args(args.annotations, args.limit, tmp)
    acc, own = {}, {}
    for name in paths:
        if name == REF:
            continue
        doc = eval_json(["--model", name, "--compare", REF, *ann], env)
        for m in doc["models"]:
            acc.setdefault(m["model"], m)
        if args.own_joints:
            own[name] = eval_json(["--model", name, *ann], env)
    if REF in paths and REF not in acc:
        acc[REF] = eval_json(["--model", REF, *ann], env)
    speed = {}
    image = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    for threads in (1, 2):
        engines = {n: Engine(p, threads=threads) for n, p in paths.items()}
        for n, lat in latency_interleaved(engines, image, runs=args.runs).items():
            speed[(n, threads)] = lat.median_ms
    people = next(iter(acc.values()))["people"] if acc else 0
    file_arg = " ".join(ann)
    print(f"accuracy on {args.annotations} ({people} people), 12 shared joints; speed: median ms per invoke(), "
          f"XNNPACK, round-robin, {args.runs} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print()
    print("| model | PCK@0.1 | PCK@0.05 | PCK@0.1, own joints | ms, 1 thread | ms, 2 threads | int8 verdict |")
    print("|---|---|---|---|---|---|---|")
    for name in paths:
        a = acc.get(name)
        o = own.get(name)
        verdict = ""
        if cat.get(name) is not None and cat[name].recipe:
            ok, why = read_verdict(paths[name])
            verdict = ("passes" if ok else "fails") + f": {why}"
        own_pck = f"{100 * o['pck@0.1']:.1f} (14 joints)" if o else ("(the 12 above)" if name == REF else "")
        print(f"| `{name}` | {100 * a['pck@0.1']:.1f} | {100 * a['pck@0.05']:.1f} | {own_pck} | "
              f"{speed[(name, 1)]:.2f} | {speed[(name, 2)]:.2f} | {verdict} |")
    for name in missing:
        print(f"| `{name}` | not built | | | | | `edgepose models quantize {name} --calib ../shared/data/calib "
              f"--eval ../shared/data/eval-lspet/annotations.json` |")
    print()
    print(f"accuracy commands: `edgepose eval --model NAME --compare {REF} {file_arg}` (12 shared joints), "
          f"`edgepose eval --model NAME {file_arg}` (own joints); speed: this script "
          f"(`python3 benchmarks/which_model.py`); took {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
