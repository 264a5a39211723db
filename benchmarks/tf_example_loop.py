#!/usr/bin/env python3
"""FPS of edgepose's PoseEstimator vs the TensorFlow Raspberry Pi pose example's loop, same clip, one run.

    python3 benchmarks/tf_example_loop.py [--threads 1] [--frames 150] [--rounds 3]

Issue 21's speed goal: edgepose (``PoseEstimator("movenet-lightning")``, tracking and smoothing on,
as ``edgepose run`` does) >= 1.3x the frames per second of the example's loop on the same 640x480
clip (``benchmarks/pipeline.make_clip``: ../shared/data/calib photos letterboxed, each held for 5
frames), with the same interpreter options (``--threads``, the runtime's default delegates: XNNPACK).
Both loops read the clip with ``cv2.VideoCapture`` and are timed from the first read to the last
result; rounds alternate (example, edgepose, example, ...) so both see the same machine load; the
median FPS of the rounds is reported.

:class:`TFExampleMovenet` re-implements, in Python as the example does, the single-pose path of
tensorflow/examples ``lite/examples/pose_estimation/raspberry_pi`` (``ml/movenet.py`` class
``Movenet``, and the ``pose_estimation.py`` loop), written from its published algorithm, not copied:

* ``init_crop_region``: the whole frame padded to a square (normalised y_min/x_min/y_max/x_max,
  height/width);
* ``_run_detector``: ``_crop_and_resize`` (cut the crop region, ``cv2.copyMakeBorder`` black where it
  leaves the frame, ``cv2.resize`` to 192x192), uint8, ``set_tensor``, ``invoke``, ``get_tensor``,
  then each keypoint mapped back to the frame (y_min + height * y, x_min + width * x);
* ``_determine_crop_region`` for the next frame: if ``_torso_visible`` (a hip and a shoulder with
  score > ``MIN_CROP_KEYPOINT_SCORE`` 0.2), a square centred on the hips' midpoint whose half side is
  the largest of the torso range x 1.9 (``_TORSO_EXPANSION_RATIO``) and the body range x 1.2
  (``_BODY_EXPANSION_RATIO``) from ``_determine_torso_and_body_range`` (keypoints above 0.2),
  clamped to the largest distance to a border; back to ``init_crop_region`` when the torso is not
  visible or the square exceeds half the frame's longer side;
* ``person_from_keypoints_with_scores``: keypoints to frame pixels, their bounding box, the mean score.

Left out of the loop on both sides: the example's ``cv2.flip``, drawing and ``imshow`` (edgepose
publishes, it does not draw).  Like the example, the frame is fed as OpenCV reads it (BGR).

edgepose is timed twice per round: reading the clip in the timed loop as the example does, and reading
it with edgepose's own source (``edgepose.capture.sources.open_source``: the reader thread of ``edgepose
run``, decoding the next frame while the model runs).  The ceiling is one ``invoke()`` per frame and
nothing else (the median bare invoke of the same model and threads, measured before and after the
rounds): ceiling FPS / example FPS is the most any loop over the same interpreter can reach without
skipping frames or running more interpreters.  Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from movenet_reference import bare_interpreter  # noqa: E402
from pipeline import REPO, SHARED, bare_invoke_ms, make_clip  # noqa: E402

sys.path.insert(0, str(REPO))

# COCO-17 indices the example's BodyPart enum names
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 5, 6, 11, 12
TORSO = (LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP)


class TFExampleMovenet:
    """The example's ``Movenet`` (single pose), see the module docstring; its private methods and
    attributes keep their names without the leading underscore (``_run_detector`` is ``run_detector``)."""

    MIN_CROP_KEYPOINT_SCORE = 0.2
    TORSO_EXPANSION_RATIO = 1.9
    BODY_EXPANSION_RATIO = 1.2

    def __init__(self, model_path: Path, threads: int):
        self.interpreter = bare_interpreter(model_path, threads)
        inp = self.interpreter.get_input_details()[0]
        self.input_index = inp["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.input_height, self.input_width = int(inp["shape"][1]), int(inp["shape"][2])
        self.crop_region = None

    @staticmethod
    def init_crop_region(image_height: int, image_width: int) -> Dict[str, float]:
        if image_width > image_height:
            x_min, box_width = 0.0, 1.0
            y_min = (image_height / 2 - image_width / 2) / image_height
            box_height = image_width / image_height
        else:
            y_min, box_height = 0.0, 1.0
            x_min = (image_width / 2 - image_height / 2) / image_width
            box_width = image_height / image_width
        return {"y_min": y_min, "x_min": x_min, "y_max": y_min + box_height, "x_max": x_min + box_width,
                "height": box_height, "width": box_width}

    def torso_visible(self, keypoints: np.ndarray) -> bool:
        s = keypoints[:, 2]
        t = self.MIN_CROP_KEYPOINT_SCORE
        return bool((s[LEFT_HIP] > t or s[RIGHT_HIP] > t) and (s[LEFT_SHOULDER] > t or s[RIGHT_SHOULDER] > t))

    def determine_torso_and_body_range(self, keypoints, target, center_y, center_x):
        max_torso_y = max_torso_x = 0.0
        for j in TORSO:
            max_torso_y = max(max_torso_y, abs(center_y - target[j][0]))
            max_torso_x = max(max_torso_x, abs(center_x - target[j][1]))
        max_body_y = max_body_x = 0.0
        for j in range(len(keypoints)):
            if keypoints[j, 2] < self.MIN_CROP_KEYPOINT_SCORE:
                continue
            max_body_y = max(max_body_y, abs(center_y - target[j][0]))
            max_body_x = max(max_body_x, abs(center_x - target[j][1]))
        return max_torso_y, max_torso_x, max_body_y, max_body_x

    def determine_crop_region(self, keypoints: np.ndarray, image_height: int, image_width: int):
        target = {j: (keypoints[j, 0] * image_height, keypoints[j, 1] * image_width) for j in range(len(keypoints))}
        if not self.torso_visible(keypoints):
            return self.init_crop_region(image_height, image_width)
        center_y = (target[LEFT_HIP][0] + target[RIGHT_HIP][0]) / 2
        center_x = (target[LEFT_HIP][1] + target[RIGHT_HIP][1]) / 2
        ty, tx, by, bx = self.determine_torso_and_body_range(keypoints, target, center_y, center_x)
        half = np.amax([tx * self.TORSO_EXPANSION_RATIO, ty * self.TORSO_EXPANSION_RATIO,
                        by * self.BODY_EXPANSION_RATIO, bx * self.BODY_EXPANSION_RATIO])
        half = np.amin([half, np.amax([center_x, image_width - center_x, center_y, image_height - center_y])])
        if half > max(image_width, image_height) / 2:
            return self.init_crop_region(image_height, image_width)
        length = half * 2
        y0, x0 = center_y - half, center_x - half
        return {"y_min": y0 / image_height, "x_min": x0 / image_width, "y_max": (y0 + length) / image_height,
                "x_max": (x0 + length) / image_width, "height": (y0 + length) / image_height - y0 / image_height,
                "width": (x0 + length) / image_width - x0 / image_width}

    @staticmethod
    def crop_and_resize(image: np.ndarray, region: Dict[str, float], size) -> np.ndarray:
        h, w = image.shape[:2]
        y_min, x_min, y_max, x_max = region["y_min"], region["x_min"], region["y_max"], region["x_max"]
        top = 0 if y_min < 0 else y_min * h
        bottom = h if y_max >= 1 else y_max * h
        left = 0 if x_min < 0 else x_min * w
        right = w if x_max >= 1 else x_max * w
        pad_top = int(0 - y_min * h) if y_min < 0 else 0
        pad_bottom = int((y_max - 1) * h) if y_max >= 1 else 0
        pad_left = int(0 - x_min * w) if x_min < 0 else 0
        pad_right = int((x_max - 1) * w) if x_max >= 1 else 0
        out = image[int(top):int(bottom), int(left):int(right)]
        out = cv2.copyMakeBorder(out, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT)
        return cv2.resize(out, (size[0], size[1]))

    def run_detector(self, image: np.ndarray, region: Dict[str, float]) -> np.ndarray:
        crop = self.crop_and_resize(image, region, (self.input_width, self.input_height)).astype(np.uint8)
        self.interpreter.set_tensor(self.input_index, np.expand_dims(crop, axis=0))
        self.interpreter.invoke()
        k = np.squeeze(self.interpreter.get_tensor(self.output_index)).copy()
        for j in range(len(k)):
            k[j, 0] = region["y_min"] + region["height"] * k[j, 0]
            k[j, 1] = region["x_min"] + region["width"] * k[j, 1]
        return k

    def detect(self, image: np.ndarray, reset_crop_region: bool = False):
        h, w = image.shape[:2]
        if self.crop_region is None or reset_crop_region:
            self.crop_region = self.init_crop_region(h, w)
        k = self.run_detector(image, self.crop_region)
        self.crop_region = self.determine_crop_region(k, h, w)
        return person_from_keypoints_with_scores(k, h, w)


def person_from_keypoints_with_scores(k: np.ndarray, image_height: int, image_width: int,
                                      keypoint_score_threshold: float = 0.1):
    xy = np.stack([k[:, 1] * image_width, k[:, 0] * image_height], axis=1).astype(int)
    box = (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
    good = k[:, 2][k[:, 2] > keypoint_score_threshold]
    return xy, k[:, 2], box, float(good.mean()) if good.size else 0.0


def timed_loop(clip: Path, step) -> tuple:
    """(frames, FPS) of read frame -> step(frame) over the whole clip."""
    cap = cv2.VideoCapture(str(clip))
    n, t0 = 0, time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        step(frame)
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return n, n / dt


def source_loop(clip: Path, step) -> tuple:
    """(frames, FPS) of step(frame) over the clip read by edgepose's read-ahead source (as `edgepose run`)."""
    from edgepose.capture.sources import open_source

    src = open_source(str(clip))
    n, t0 = 0, time.perf_counter()
    try:
        while True:
            frame = src.read(timeout=5.0)
            if frame is None:
                break
            step(frame.image)
            n += 1
        dt = time.perf_counter() - t0
    finally:
        src.close()
    return n, n / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from edgepose import PoseEstimator
    from edgepose.models import registry

    tmp = Path(tempfile.mkdtemp(prefix="edgepose-tfloop-"))
    mirror = os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models"))
    cache = Path(os.environ.get("EDGEPOSE_MODEL_DIR", tmp / "models"))
    path = registry.resolve("movenet-lightning", cache_dir=cache, mirror=mirror)
    clip = make_clip(tmp / "clip640x480.mp4", args.frames)
    example = TFExampleMovenet(path, args.threads)
    ours = PoseEstimator("movenet-lightning", threads=args.threads, model_dir=cache, mirror=mirror)
    t = [0.0]

    def ours_step(frame):  # the daemon's clock: frames 1/30 s apart
        t[0] += 1 / 30
        ours(frame, ts=t[0])

    rows = []
    invoke = [bare_invoke_ms(path, args.threads, True)]
    for r in range(args.rounds):
        example.detect(np.zeros((480, 640, 3), np.uint8), reset_crop_region=True)
        ours.reset()
        n1, fps_ex = timed_loop(clip, example.detect)
        ours.reset()
        t[0] = 0.0
        n2, fps_ours = timed_loop(clip, ours_step)
        ours.reset()
        t[0] = 0.0
        n3, fps_src = source_loop(clip, ours_step)
        rows.append((fps_ex, fps_ours, fps_src))
        print(f"round {r + 1}: TF example loop {fps_ex:.1f} FPS ({n1} frames), edgepose {fps_ours:.1f} FPS "
              f"({n2} frames, read in the loop), ratio {fps_ours / fps_ex:.2f}; edgepose with its read-ahead "
              f"source {fps_src:.1f} FPS ({n3} frames), ratio {fps_src / fps_ex:.2f}")
    invoke.append(bare_invoke_ms(path, args.threads, True))
    ex = statistics.median(a for a, _, _ in rows)
    ceiling = 1000 / statistics.median(invoke)
    print(f"movenet-lightning, {args.threads} thread(s), 640x480 clip x {args.frames} frames, {args.rounds} rounds "
          f"(medians): TF example loop {ex:.1f} FPS; edgepose {statistics.median(b for _, b, _ in rows):.1f} FPS "
          f"reading in the loop ({statistics.median(b / a for a, b, _ in rows):.2f}x), "
          f"{statistics.median(c for _, _, c in rows):.1f} FPS with its read-ahead source")
    print(f"ceiling: bare invoke {1000 / ceiling:.2f} ms -> {ceiling:.1f} FPS = {ceiling / ex:.2f}x the example; "
          f"edgepose / example {statistics.median(c / a for a, _, c in rows):.2f}x (read-ahead source; goal >= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
