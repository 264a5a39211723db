#!/usr/bin/env python3
"""Quantized variants vs upstream float, measured in the same run. Prints numbers; asserts nothing.

    python3 benchmarks/quantized.py [--models cpm-int8 cpm-float32 ...] [--runs 100] [--threads 2]
                                    [--build] [--eval ANNOTATIONS] [--tflite-runtime /tmp/tfl/bin/python]

For every variant: XNNPACK partitions, latency (median and min, all models
timed round-robin in one loop so machine load hits them alike) and speed-up
over the upstream float model of its family, keypoint agreement with float
(labelled keypoints within 5% of the box size; "conf." counts only keypoints whose
float heatmap peak is >= 0.1), PCK@0.1 and PCK@0.05 on ``--eval`` (default
../shared/data/eval, 23 people) and, for each variant, the fidelity verdict
(edgepose.models.fidelity: PCK@0.1 and @0.05 each within 1.0 point of float on
>= 200 people) on that file, with the recipe its report records (fine-tuning
steps).  ``--eval ../shared/data/eval-lspet/annotations.json`` (600 people, never
calibrated on) gives the verdict that counts.  Variants come from the model cache
(``edgepose models quantize``); ``--build`` builds the missing ones first with
the catalogue recipe (calibration on ../shared/data/calib, the report measured on
``--eval``).  ``--tflite-runtime PY`` also loads
every model with tflite-runtime 2.14 in that interpreter (a venv with
``tflite-runtime==2.14.0 'numpy<2'``; see benchmarks/tflite_runtime_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clips  # noqa: E402

from edgepose.build import quantize as q  # noqa: E402
from edgepose.inference.engine import Engine  # noqa: E402
from edgepose.models import registry  # noqa: E402
from edgepose.models.fidelity import fidelity_verdict  # noqa: E402
from edgepose.models.modelinfo import delegation, inspect, latency_interleaved  # noqa: E402
from edgepose.tools.evaluate import load_annotations  # noqa: E402

SHARED, EVAL, CALIB = clips.SHARED, clips.EVAL_FILE, clips.CALIB
DEFAULT = ["cpm-int8", "cpm-int8-mixed", "cpm-dynamic", "cpm-float16", "cpm-float32",
           "hourglass-int8", "hourglass-int8-mixed", "hourglass-dynamic", "hourglass-float16"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores (the Engine default)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--mirror", default=os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models")))
    ap.add_argument("--build", action="store_true", help="build variants that are not in the cache")
    ap.add_argument("--eval", default=str(EVAL), metavar="ANNOTATIONS",
                    help="annotated people the PCKs and the fidelity verdict are measured on (default: %(default)s; "
                         "the verdict needs >= 200 people: ../shared/data/eval-lspet/annotations.json)")
    ap.add_argument("--tflite-runtime", default=None, metavar="PYTHON",
                    help="python of a venv with tflite-runtime 2.14 to check the models there too")
    args = ap.parse_args()

    cat = registry.load_catalogue()
    cache = Path(args.model_dir) if args.model_dir else registry.default_cache_dir()
    paths = {}
    for name in args.models:
        entry = cat[name]
        if args.build and not entry.cache_file(cache).is_file():
            cmd = [sys.executable, "-m", "edgepose.cli", "models", "--model-dir", str(cache), "--mirror",
                   args.mirror, "quantize", name, "--eval", args.eval, "--runs", "5"]
            if entry.recipe == "int8":
                cmd += ["--calib", str(CALIB)]
            subprocess.run(cmd, check=True, cwd=ROOT)
        paths[name] = registry.resolve(name, cache_dir=cache, mirror=args.mirror)
    families = sorted({cat[n].extra.get("reference", "cpm") for n in args.models})
    for fam in families:
        paths.setdefault(fam, registry.resolve(fam, cache_dir=cache, mirror=args.mirror))

    engines = {n: Engine(p, threads=args.threads) for n, p in paths.items()}
    any_engine = next(iter(engines.values()))
    print(f"runtime {any_engine.runtime.name} {any_engine.runtime.version}, threads {any_engine.threads}, "
          f"{args.runs} round-robin runs, cache {cache}")
    img = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    lat = latency_interleaved(engines, img, runs=args.runs, warmup=5)
    samples = load_annotations(args.eval)
    print(f"PCKs and verdicts on {args.eval} ({len(samples)} people)")
    print(f"{'model':<18} {'kind':<16} {'xnnpack':<14} {'median ms':>9} {'min ms':>7} {'speed-up':>9} "
          f"{'(min)':>6} {'agree':>6} {'conf.':>6} {'PCK@0.1':>8} {'float':>6} {'PCK@.05':>8} {'float':>6}  grid")
    verdicts = []
    for fam in families:
        for name in [fam] + [n for n in args.models if cat[n].extra.get("reference") == fam]:
            e = engines[name]
            d = delegation(paths[name], e.runtime, e.threads)
            xnn = f"{d.partitions} part {d.delegated_nodes}/{d.total_nodes}" if d.prepared else "FAILED"
            kind = inspect(paths[name], with_delegation=False).quantized.split(" (")[0]
            sp = lat[fam].median_ms / lat[name].median_ms
            spm = lat[fam].min_ms / lat[name].min_ms
            agree = conf = pck = pckf = pck5 = pck5f = ""
            if name != fam:
                f = q.fidelity(engines[fam], e, samples)
                agree = f"{100 * f.agreement:5.1f}%"
                conf = f"{100 * f.agreement_confident:5.1f}%"
                pck, pckf = f"{100 * f.pck_quant['pck@0.1']:7.1f}", f"{100 * f.pck_float['pck@0.1']:6.1f}"
                pck5, pck5f = f"{100 * f.pck_quant['pck@0.05']:7.1f}", f"{100 * f.pck_float['pck@0.05']:6.1f}"
                verdicts.append((name, paths[name], fidelity_verdict({"fidelity": asdict(f)})))
            print(f"{name:<18} {kind[:16]:<16} {xnn:<14} {lat[name].median_ms:9.2f} {lat[name].min_ms:7.2f} "
                  f"{sp:8.2f}x {spm:5.2f}x {agree:>6} {conf:>6} {pck:>8} {pckf:>6} {pck5:>8} {pck5f:>6}  "
                  f"{e.spec.grid_h}x{e.spec.grid_w}")
    for name, path, (_, why) in verdicts:
        print(f"verdict {name} ({recipe_summary(path)}): {why}")
    if args.tflite_runtime:
        check = ROOT / "benchmarks" / "tflite_runtime_check.py"
        print(f"\ntflite-runtime check ({args.tflite_runtime}):", flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([args.tflite_runtime, str(check), *[str(paths[n]) for n in args.models]], env=env)
        return r.returncode
    return 0


def recipe_summary(model: Path) -> str:
    """'600 fine-tuning steps' etc. from the report beside a locally built model."""
    try:
        recipe = json.loads(registry.report_path(model).read_text()).get("recipe") or {}
    except (OSError, ValueError):
        return "no build report"
    steps = recipe.get("finetune_steps", 0)
    return f"{recipe.get('mode', '?')}, {steps} fine-tuning steps" if recipe.get("mode") == "int8" \
        else str(recipe.get("mode", "?"))


if __name__ == "__main__":
    sys.exit(main())
