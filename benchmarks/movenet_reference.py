#!/usr/bin/env python3
"""`edgepose eval --model movenet-lightning` vs a plain reference decode of the same model, same crops.

    python3 benchmarks/movenet_reference.py [--annotations FILE.json ...] [--limit N] [--threads 1]

Issue 21's accuracy goal: edgepose's MoveNet path (resolved model, engine, regression decoder, crop
transform) scores within 1.0 PCK@0.1 of a reference written here from the model card alone: a bare
interpreter (LiteRT's, else tflite-runtime's ``Interpreter``), each person's crop (the
eval crop: annotation box grown by eval's padding and made square) cut from the photo with black
where it leaves the image, resized to 192x192 with ``cv2.resize``, BGR -> RGB, uint8, ``invoke()``,
and keypoint = (x * crop width + crop left, y * crop height + crop top).  Both are scored by
``edgepose.tools.evaluate.score`` on the joints the annotation file labels (MoveNet's 17 names
matched to the file by name: 12 joints in ../shared/data files).  edgepose's side is the real
command, run as a subprocess with ``--json``.  Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEPOSE_SHARED", REPO.parent / "shared"))
DEFAULT_FILES = (SHARED / "data" / "eval" / "annotations.json", SHARED / "data" / "eval-lspet" / "annotations.json")
MODEL = "movenet-lightning"


def bare_interpreter(path: Path, threads: int):
    """The interpreter as a plain script makes it: ``Interpreter(model_path, num_threads)`` of the runtime
    edgepose would pick (LiteRT, else tflite-runtime; only the import is shared), default delegates
    (XNNPACK)."""
    from edgepose.inference.engine import load_runtime

    it = load_runtime().module.Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def reference_keypoints(it, image: np.ndarray, x0: float, y0: float, w: float, h: float) -> np.ndarray:
    """(17, 3) x, y in image pixels and score, from one crop (x0, y0, w, h) of a BGR image."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    size_h, size_w = int(inp["shape"][1]), int(inp["shape"][2])
    ih, iw = image.shape[:2]
    left, top, right, bottom = int(round(x0)), int(round(y0)), int(round(x0 + w)), int(round(y0 + h))
    crop = np.zeros((bottom - top, right - left, 3), np.uint8)  # black outside the image
    sx0, sy0, sx1, sy1 = max(0, left), max(0, top), min(iw, right), min(ih, bottom)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    rgb = cv2.cvtColor(cv2.resize(crop, (size_w, size_h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    it.set_tensor(inp["index"], rgb[None].astype(inp["dtype"]))
    it.invoke()
    yxs = it.get_tensor(out["index"]).reshape(-1, 3)
    cw, ch = right - left, bottom - top
    return np.stack([yxs[:, 1] * cw + left, yxs[:, 0] * ch + top, yxs[:, 2]], axis=1)


def reference_pck(model_path: Path, ann: Path, names, threads: int, limit: int) -> dict:
    from edgepose.tools.evaluate import DEFAULT_PADDING, crop_box, load_annotations, score

    samples = load_annotations(ann, names=names)[:limit or None]
    it = bare_interpreter(model_path, threads)
    size = int(it.get_input_details()[0]["shape"][1])
    preds, images = [], {}
    for s in samples:
        if s.image_path not in images:
            images = {s.image_path: cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)}
        b = crop_box(s.box, size, size, DEFAULT_PADDING)
        preds.append(reference_keypoints(it, images[s.image_path], b.x, b.y, b.w, b.h)[:, :2])
    return score(np.stack(preds), np.stack([s.keypoints for s in samples]), np.stack([s.visible for s in samples]),
                 np.array([s.box_size for s in samples]), names)


def annotation_args(ann: Path, limit: int, tmp: Path) -> list:
    """``edgepose eval`` arguments for the first ``limit`` people of ``ann`` (all when 0): a cut file."""
    if not limit:
        return ["--annotations", str(ann)]
    doc = json.loads(ann.read_text())
    keep = doc["annotations"][:limit]
    ids = {a["image_id"] for a in keep}
    cut = tmp / f"{ann.parent.name}-first-{limit}.json"
    cut.write_text(json.dumps(dict(doc, annotations=keep, images=[i for i in doc["images"] if i["id"] in ids])))
    return ["--annotations", str(cut), "--images", str(ann.parent)]


def eval_json(args: list, env: dict) -> dict:
    """The real `edgepose eval ARGS --json` (no config file: the environment's model cache/mirror)."""
    r = subprocess.run([sys.executable, "-m", "edgepose.cli", "eval", *args, "--json", "--config", os.devnull],
                       env=env, cwd=REPO, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"edgepose eval {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", nargs="+", type=Path, default=list(DEFAULT_FILES))
    ap.add_argument("--limit", type=int, default=0, help="first N people of each file (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from edgepose.models import registry
    from edgepose.models.resolved import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="edgepose-movenet-ref-"))
    env = dict(os.environ, EDGEPOSE_MODEL_MIRROR=os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models")))
    env.setdefault("EDGEPOSE_MODEL_DIR", str(tmp / "models"))
    model = resolve_model(MODEL, cache_dir=Path(env["EDGEPOSE_MODEL_DIR"]), mirror=env["EDGEPOSE_MODEL_MIRROR"],
                          progress=registry.stderr_progress())
    print(f"{MODEL}: {model.path}, threads {args.threads}; reference = bare interpreter, cv2.resize crop, y/x * size")
    print(f"{'file':<14}{'people':>7}{'keypoints':>10}{'edgepose PCK@0.1':>18}{'reference':>11}{'diff':>7}"
          f"{'edgepose PCK@0.05':>19}{'reference':>11}  goal |diff@0.1| <= 1.0")
    for ann in args.annotations:
        t = time.monotonic()
        ours = eval_json(["--model", MODEL, *annotation_args(ann, args.limit, tmp)],
                         dict(env, EDGEPOSE_RUNTIME_THREADS=str(args.threads)))
        ref = reference_pck(model.path, ann, model.keypoint_names, args.threads, args.limit)
        d = 100 * (ours["pck@0.1"] - ref["pck@0.1"])
        print(f"{ann.parent.name:<14}{ours['people']:>7}{ours['keypoints']:>10}{100 * ours['pck@0.1']:>18.1f}"
              f"{100 * ref['pck@0.1']:>11.1f}{d:>+7.1f}{100 * ours['pck@0.05']:>19.1f}{100 * ref['pck@0.05']:>11.1f}"
              f"  {'met' if abs(d) <= 1.0 else 'NOT met'} ({time.monotonic() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
