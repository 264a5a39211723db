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


# --- several real people moving across a background, with known tracks (persistent person ids) ---

EVAL_MULTI = SHARED / "data" / "eval-multi"


@dataclass
class Figure:
    """One real person cut out of a COCO photo by their segmentation polygon."""

    name: str  # "<image file stem>#<annotation id>"
    image: np.ndarray  # BGR patch around the person
    mask: np.ndarray  # uint8 (0/255), the person's pixels in the patch
    keypoints: np.ndarray  # (17, 2) COCO-17 in patch pixels (pixel centres at k + 0.5)
    labelled: np.ndarray  # (17,) bool


def figures(min_keypoints: int = 15, min_height: float = 240.0, annotations: Path = EVAL_MULTI) -> List[Figure]:
    """Whole, well-labelled people of a COCO keypoint folder (``annotations.json`` + ``images/``), cut out by
    their segmentation: one polygon, not a crowd, at least ``min_keypoints`` labelled and ``min_height`` px
    tall, and no other annotated person's box overlapping theirs (so the cut-out holds one person).
    Ordered by photo and annotation id."""
    import json

    doc = json.loads((annotations / "annotations.json").read_text())
    images = {im["id"]: im for im in doc["images"]}
    by_image: dict = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image_id in sorted(by_image):
        anns = by_image[image_id]
        for a in sorted(anns, key=lambda a: a["id"]):
            seg = a.get("segmentation")
            x, y, w, h = a["bbox"]
            if (a.get("iscrowd") or not isinstance(seg, list) or len(seg) != 1 or a["num_keypoints"] < min_keypoints
                    or h < min_height):
                continue
            if any(_overlap(a["bbox"], o["bbox"]) > 0.02 for o in anns if o is not a):
                continue
            img = cv2.imread(str(annotations / images[image_id]["file_name"]))
            x0, y0 = max(0, int(x) - 2), max(0, int(y) - 2)
            x1, y1 = min(img.shape[1], int(np.ceil(x + w)) + 2), min(img.shape[0], int(np.ceil(y + h)) + 2)
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round(np.asarray(seg[0]).reshape(-1, 2)).astype(np.int32)], 255)
            kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
            stem = Path(images[image_id]["file_name"]).stem
            out.append(Figure(f"{stem}#{a['id']}", img[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy(),
                              kp[:, :2] + 0.5 - np.array([x0, y0]), kp[:, 2] > 0))
    return out


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection of two (x, y, w, h) boxes as a fraction of the first one's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h) / max(a[2] * a[3], 1e-9)


def paste(frame: np.ndarray, fig: Figure, scale: float, x: float, y: float) -> np.ndarray:
    """Paste ``fig`` scaled by ``scale`` with its patch's top-left at (x, y) (in place, through its mask);
    returns its keypoints in frame pixels (the same affine as :func:`place`)."""
    h, w = frame.shape[:2]
    m = np.array([[scale, 0.0, x + 0.5 * scale - 0.5], [0.0, scale, y + 0.5 * scale - 0.5]])
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    warped = cv2.warpAffine(fig.image, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(fig.mask, m, (w, h), flags=cv2.INTER_LINEAR) > 127
    frame[mask] = warped[mask]
    return fig.keypoints * scale + np.array([x, y])


@dataclass
class PeopleClip:
    """Frames of several people moving, with every person's true track."""

    frames: List[np.ndarray]  # BGR uint8
    names: List[str]  # one per person (the figure's name)
    gt: np.ndarray  # (P, T, 17, 2) COCO-17 keypoints in frame pixels
    labelled: np.ndarray  # (P, T, 17) bool: labelled and inside the frame
    in_view: np.ndarray  # (P, T) bool: the person is in the frame (at least 5 labelled keypoints inside)
    stays: np.ndarray  # (P,) bool: the person is in view in every frame
    fps: float


def crossing_clip(frames: int = 48, frame_w: int = 640, frame_h: int = 480, fps: float = 15.0, gone: int = 16,
                  seed: int = 0, cast: Sequence[Figure] = ()) -> PeopleClip:
    """Three real people (``cast``, default the first three :func:`figures`) on a plain background:
    A walks left to right and B right to left, crossing (B in front) half way through the clip; C,
    smaller and further back, walks out of the frame on the right, stays out for ``gone`` frames and
    comes back.  A and B stay in view throughout.  Every person bobs a little as they walk."""
    cast = list(cast) or figures()[:3]
    if len(cast) < 3:
        raise ValueError("crossing_clip needs three figures")
    bg = background(frame_w, frame_h, seed)
    heights = (0.72, 0.76, 0.5)  # fraction of the frame height (C is further back)
    scales = [h * frame_h / f.image.shape[0] for h, f in zip(heights, cast)]
    widths = [f.image.shape[1] * s for f, s in zip(cast, scales)]
    tops = (0.2 * frame_h, 0.2 * frame_h, 0.04 * frame_h)
    out_t = max(2, (frames - gone) // 2 - 4)  # C walks out over [out_t - 6, out_t), back over [out_t + gone, ...)
    walk = 10  # frames to walk out (or in): about 0.05 of their height per frame

    def x_of(p: int, t: int) -> float:
        u = t / max(frames - 1, 1)
        if p == 0:
            return 0.04 * frame_w + u * (0.92 * frame_w - widths[0])
        if p == 1:
            return 0.96 * frame_w - widths[1] - u * (0.92 * frame_w - widths[1])
        home, outside = 0.97 * frame_w - widths[2], frame_w + 4.0
        if t < out_t - walk or t >= out_t + gone + walk:
            return home
        if t < out_t:
            return home + (outside - home) * (t - out_t + walk + 1) / walk
        if t < out_t + gone:
            return outside
        return outside + (home - outside) * (t - out_t - gone + 1) / walk

    gt = np.zeros((3, frames, 17, 2))
    lab = np.zeros((3, frames, 17), bool)
    imgs = []
    for t in range(frames):
        f = bg.copy()
        for p in (2, 0, 1):  # back to front
            bob = 0.012 * frame_h * np.sin(2 * np.pi * t / 8 + p)
            gt[p, t] = paste(f, cast[p], scales[p], x_of(p, t), tops[p] + bob)
            inside = ((gt[p, t] >= 0) & (gt[p, t] < [frame_w, frame_h])).all(axis=1)
            lab[p, t] = cast[p].labelled & inside
        imgs.append(f)
    in_view = lab.sum(axis=2) >= 5
    return PeopleClip(imgs, [c.name for c in cast], gt, lab, in_view, in_view.all(axis=1), fps)
