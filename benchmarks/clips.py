"""Synthetic clips with known ground truth, built from the eval photos.

Each annotated person of ``../shared/data/eval`` is cut out by its annotation
box (plus a little context), scaled and pasted onto a plain textured
background; since we place the person ourselves, the keypoints of every frame
are known exactly.  Also the shared data paths and the eval people's crops.
Used by the benchmarks here, by the scripts in ``research/`` and by a few tests
(shared data is read, never copied into the repo).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgepose.models.registry import load_catalogue  # noqa: E402
from edgepose.tools.evaluate import Sample, load_annotations  # noqa: E402

SHARED = Path(os.environ.get("EDGEPOSE_SHARED", ROOT.parent / "shared"))
EVAL_FILE = SHARED / "data" / "eval" / "annotations.json"
MODELS = SHARED / "models"
CALIB = SHARED / "data" / "calib"
# output node of each family's frozen graph (the catalogue's <family>-pb entry)
OUTPUTS = {f: load_catalogue()[f"{f}-pb"].output["name"] for f in ("cpm", "hourglass")}


def decoders(sigmas: Sequence[float] = (), input_size: int = 192) -> dict:
    """Every named decoder, plus ``subpixel@N``: the sub-pixel decoder blurring with N input pixels."""
    from edgepose.inference.decode import DECODERS, subpixel_decoder
    out = dict(DECODERS)
    for s in sigmas:
        out[f"subpixel@{s:g}"] = functools.partial(subpixel_decoder, sigma=s / input_size)
    return out


@dataclass
class Clip:
    frames: List[np.ndarray]  # BGR uint8
    gt: np.ndarray  # (T, K, 2) frame pixels
    visible: np.ndarray  # (K,) bool
    size: np.ndarray  # (T,) longer side of the placed person box (PCK normaliser)
    fps: float


def people(min_visible: int = 8, min_box: float = 80.0) -> List[Sample]:
    """Eval people with enough labelled keypoints and a box large enough to cut out."""
    return [s for s in load_annotations(EVAL_FILE)
            if s.visible.sum() >= min_visible and max(s.box.w, s.box.h) >= min_box]


def cutout(s: Sample, context: float = 0.1):
    """The person's box (+context) as an image, keypoints relative to it, and which are labelled inside it."""
    img = cv2.imread(str(s.image_path))
    b = s.box.expand(1 + context)
    x0, y0 = max(0, int(np.floor(b.x))), max(0, int(np.floor(b.y)))
    x1 = min(img.shape[1], int(np.ceil(b.x + b.w)))
    y1 = min(img.shape[0], int(np.ceil(b.y + b.h)))
    kps = s.keypoints - np.array([x0, y0], dtype=np.float64)
    inside = (kps[:, 0] >= 0) & (kps[:, 1] >= 0) & (kps[:, 0] < x1 - x0) & (kps[:, 1] < y1 - y0)
    return img[y0:y1, x0:x1].copy(), kps, s.visible & inside


def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A plain, softly textured background (no people in it)."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(70, 190, size=(max(2, h // 90), max(2, w // 90), 1))
    small = np.clip(gray + rng.integers(-20, 21, size=gray.shape[:2] + (3,)), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 8)


def place(bg: np.ndarray, patch: np.ndarray, kps: np.ndarray, scale: float, x: float, y: float):
    """Paste ``patch`` scaled by ``scale`` with its top-left at (x, y); exact keypoint geometry.

    The patch is resampled with one warpAffine over the whole frame, so the
    keypoints map by the same affine (half-pixel convention).
    """
    h, w = bg.shape[:2]
    m = np.array([[scale, 0.0, x + 0.5 * scale - 0.5], [0.0, scale, y + 0.5 * scale - 0.5]])
    # continuous coords: p_frame = x + p_patch * scale (pixel centres k+0.5 both sides)
    warped = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.full(patch.shape[:2], 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    out = bg.copy()
    out[mask > 0] = warped[mask > 0]
    return out, kps * scale + np.array([x, y])


def moving_clip(s: Sample, frame_w: int = 1280, frame_h: int = 720, height_frac: float = 0.25,
                frames: int = 20, fps: float = 30.0, speed: float = 300.0, seed: int = 0) -> Clip:
    """The person at ``height_frac`` of the frame height, walking across at ``speed`` px/s with a bob."""
    patch, kps, vis = cutout(s)
    scale = height_frac * frame_h / s.box.h
    bg = background(frame_w, frame_h, seed)
    pw, ph = patch.shape[1] * scale, patch.shape[0] * scale
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, max(1.0, frame_w - pw - speed * frames / fps))
    y0 = rng.uniform(0.1 * frame_h, max(0.1 * frame_h + 1, frame_h - ph - 0.1 * frame_h))
    out, gts = [], []
    for t in range(frames):
        x = x0 + speed * t / fps
        y = y0 + 0.03 * frame_h * np.sin(2 * np.pi * t / 15)
        f, g = place(bg, patch, kps, scale, x, y)
        out.append(f)
        gts.append(g)
    size = np.full(frames, max(s.box.w, s.box.h) * scale)
    return Clip(out, np.stack(gts), vis, size, fps)


def still_clip(s: Sample, frames: int = 60, fps: float = 30.0, noise: float = 4.0,
               frame_w: int = 640, frame_h: int = 480, seed: int = 0) -> Clip:
    """A photo of the person held still, each frame with fresh sensor noise (Gaussian, ``noise`` DN)."""
    patch, kps, vis = cutout(s)
    scale = 0.8 * frame_h / patch.shape[0]
    pw = patch.shape[1] * scale
    bg = background(frame_w, frame_h, seed)
    base, g = place(bg, patch, kps, scale, (frame_w - pw) / 2, 0.1 * frame_h)
    rng = np.random.default_rng(seed)
    out = [np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8) for _ in range(frames)]
    size = np.full(frames, max(s.box.w, s.box.h) * scale)
    return Clip(out, np.repeat(g[None], frames, axis=0), vis, size, fps)


def pck(pred: np.ndarray, clip: Clip, alpha: float = 0.1) -> Sequence[int]:
    """(hits, labelled) of PCK@alpha over a clip's frames."""
    err = np.linalg.norm(pred - clip.gt, axis=-1)
    ok = (err <= alpha * clip.size[:, None]) & clip.visible[None, :]
    return int(ok.sum()), int(clip.visible.sum() * len(pred))
