#!/usr/bin/env python3
"""int8 and float models under each installed TFLite runtime, in one command. Prints numbers and ratios.

    python3 benchmarks/runtimes.py [--int8 MODEL.tflite] [--model PATH ...] [--venvs DIR]
                                   [--python PY ...] [--threads 1] [--runs 20] [--rounds 3]

Runtimes: every one importable here (LiteRT, tflite-runtime) plus every one in
the interpreters given with ``--python``. tflite-runtime 2.14 needs numpy<2 and
cannot live beside this environment's numpy 2, so each runtime runs in its own
subprocess (the worker mode of this script, edgepose from this checkout on
PYTHONPATH: it needs only numpy). ``--venvs DIR`` makes (once) and uses two venvs
there: ``tflite-runtime`` (tflite-runtime==2.14.0, numpy<2: what the Pi path
installed before LiteRT) and ``litert-1.4`` (ai-edge-litert==1.4.0, numpy<2: what
deploy/install.sh installs on a Pi now).

Models: ``--int8`` (default: cpm-int8 from the model cache, else built here from
the mirror's cpm with ``edgepose models quantize cpm --mode int8 --finetune 0``
into a temporary cache, ~2 min) and movenet-lightning from ../shared/models
(int8 too), plus any ``--model``. Each worker prepares the model with XNNPACK as
the Engine does, reports the delegation (inference/delegation.py) and times
``invoke()`` on a fixed random input. The workers run one after another,
``--rounds`` times in turn (ABAB...), and each row is the median over its rounds
of the per-round median, so load on the shared machine hits every runtime alike.

Last lines: for each model, how many times faster each LiteRT is than
tflite-runtime (the goal for int8: at least 10x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgepose.core.errors import RuntimeMissingError  # noqa: E402
from edgepose.inference.engine import BACKENDS, load_runtime  # noqa: E402

SHARED = Path(os.environ.get("EDGEPOSE_SHARED", ROOT.parent / "shared")).resolve()
MOVENET = SHARED / "models" / "movenet-lightning" / "model.tflite"
VENVS = {"tflite-runtime": ["tflite-runtime==2.14.0", "numpy<2"],
         "litert-1.4": ["ai-edge-litert==1.4.0", "numpy<2"]}


# --- worker: one runtime, every model ---------------------------------------------------------------

def worker(backend: str, models: list, threads: int, runs: int) -> dict:
    from edgepose.inference.engine import native_info_to_log
    from edgepose.models.modelinfo import delegation

    rt = load_runtime(backend)
    rows = []
    for path in models:
        d = delegation(Path(path), rt, threads)
        with native_info_to_log():
            interp = rt.module.Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        rng = np.random.default_rng(0)
        dtype = np.dtype(inp["dtype"])
        x = (rng.integers(-128, 128, inp["shape"]) if dtype.kind in "iu" else rng.uniform(0, 255, inp["shape"]))
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        interp.set_tensor(inp["index"], (np.clip(x, info.min, info.max) if info else x).astype(dtype))
        for _ in range(3):
            interp.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append({"model": str(path), "partitions": d.partitions, "delegated": d.delegated_nodes,
                     "total": d.total_nodes, "int8_ops": d.int8_nodes, "int8_delegated": d.int8_delegated,
                     "median_ms": float(np.median(times)), "min_ms": float(np.min(times))})
    return {"runtime": f"{rt.name} {rt.version}", "numpy": np.__version__, "rows": rows}


# --- driver --------------------------------------------------------------------------------------------

def make_venv(path: Path, requirements: list) -> Path:
    """A venv at ``path`` with ``requirements`` (made once; tests/test_delegation.py uses it too)."""
    py, done = path / "bin" / "python", path / ".complete"
    if not done.exists():
        print(f"making {path}: pip install {' '.join(requirements)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *requirements], check=True)
        done.touch()
    return py


def runtimes_of(python: str) -> list:
    """The backends importable by that interpreter (asked in a subprocess: numpy may differ)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edgepose.inference.engine import load_runtime\n"
            "for b in ('litert', 'tflite-runtime'):\n"
            "    try: load_runtime(b); print(b)\n"
            "    except Exception: pass")
    out = subprocess.run([python, "-c", code, str(ROOT)], capture_output=True, text=True)
    return out.stdout.split()


def int8_model(given: str) -> Path:
    if given:
        return Path(given)
    from edgepose.models import registry
    cached = registry.load_catalogue()["cpm-int8"].cache_file(registry.default_cache_dir())
    if cached.is_file():
        return cached
    out = Path(tempfile.mkdtemp(prefix="runtimes-")) / "cpm-int8.tflite"
    print(f"building {out} from the mirror's cpm (no fine-tuning)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "edgepose.cli", "models", "--mirror", str(SHARED / "models"),
                    "--model-dir", str(out.parent / "cache"), "quantize", "cpm", "--mode", "int8",
                    "--calib", str(SHARED / "data" / "calib"), "--finetune", "0", "--runs", "3",
                    "--out", str(out)], check=True, cwd=ROOT)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--int8", default="", help="the int8 heatmap model (default: cpm-int8, built if missing)")
    ap.add_argument("--model", action="append", default=[], help="more models")
    ap.add_argument("--venvs", default="", metavar="DIR", help="make and use the tflite-runtime / litert-1.4 venvs")
    ap.add_argument("--python", action="append", default=[], help="more interpreters with a runtime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20, help="timed invokes per model, runtime and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("models_", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.models_, a.threads, a.runs)))
        return 0

    models = [int8_model(a.int8), MOVENET, *map(Path, a.model)]
    pythons = [sys.executable, *a.python]
    if a.venvs:
        pythons += [str(make_venv(Path(a.venvs) / name, reqs)) for name, reqs in VENVS.items()]
    jobs = [(py, b) for py in pythons for b in runtimes_of(py) if b in BACKENDS]
    if not jobs:
        raise RuntimeMissingError("no TFLite runtime in any interpreter")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    results: dict = {}
    for _ in range(a.rounds):
        for py, backend in jobs:
            out = subprocess.run([py, __file__, "--worker", backend, "--threads", str(a.threads), "--runs",
                                  str(a.runs), *map(str, models)], capture_output=True, text=True, env=env)
            if out.returncode:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"the {backend} worker in {py} failed")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault((py, r["runtime"]), []).append(r)

    print(f"{len(models)} models x {len(jobs)} runtimes, {a.threads} thread(s), {a.rounds} rounds of {a.runs} "
          f"invokes (median of the rounds' medians; min of all)")
    print(f"{'runtime':<22} {'numpy':<7} {'model':<22} {'XNNPACK':<30} {'median ms':>9} {'min ms':>8}")
    med: dict = {}
    for (_py, runtime), rounds in results.items():
        for i, row in enumerate(rounds[0]["rows"]):
            m = statistics.median(r["rows"][i]["median_ms"] for r in rounds)
            lo = min(r["rows"][i]["min_ms"] for r in rounds)
            name = Path(row["model"]).parent.name if Path(row["model"]).name == "model.tflite" \
                else Path(row["model"]).stem
            x = f"{row['partitions']} part., {row['delegated']}/{row['total']} ops"
            if row["int8_ops"]:
                x += f", int8 {row['int8_delegated']}/{row['int8_ops']}"
            print(f"{runtime:<22} {rounds[0]['numpy']:<7} {name:<22} {x:<30} {m:>9.1f} {lo:>8.1f}")
            med[(runtime, name)] = m
    names = list(dict.fromkeys(n for _, n in med))
    slow = [rt for rt, _ in med if rt.startswith("tflite-runtime")]
    for name in names:
        for base in dict.fromkeys(slow):
            for rt in dict.fromkeys(r for r, _ in med):
                if rt.startswith("litert") and (rt, name) in med:
                    print(f"{name}: {rt} is {med[(base, name)] / med[(rt, name)]:.1f}x faster than {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
