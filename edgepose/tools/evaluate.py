"""``edgepose eval``: keypoint accuracy on a COCO-format annotation file.

Every annotated person is evaluated top-down: its box is padded (``padding``,
a fraction of the box added around it), fitted to the model's input aspect
(``aspect="pad"`` grows the short side, ``"stretch"`` keeps the box) and
cropped with :func:`edgepose.inference.pipeline.crop_to_input`; the heatmaps are decoded
with :func:`edgepose.inference.decode.decode_pose` — the same geometry the daemon uses.

``--mode frame`` measures what the daemon delivers instead: the model sees the whole image and
the daemon's own pipeline (:func:`edgepose.inference.pipeline.from_config`: tracker, search,
refinement, smoothing) decides where to look (:func:`evaluate_frames`).  The labelled box is
then used only as the PCK scale and to match the labelled person to the found pose: the one
pose of an image is scored against the labelled person it is closest to (median error in box
sizes); the other people of a multi-person image are not scored in that mode (``--mode both``
scores the crop mode on the same people).  A pose the pipeline does not mark present counts as
missed (every keypoint wrong).  ``frames`` > 1 plays each image as that many frames of one video
(a scene cut every ``frames`` frames, tracking and smoothing carried across) and scores frame
``score_frame``.

Keypoint coordinates are read as integer pixel *indices* by default (COCO and
AI Challenger label a pixel by its index; detectron2 makes the same
assumption), i.e. the pixel covering ``[i, i + 1)``, and moved to its centre
``i + 0.5`` — the continuous coordinates of :mod:`edgepose.core.geometry` that
decoders return.  ``keypoint_coords="continuous"`` takes them as they are.

Keypoints are matched *by name* between the annotation file's category and the
model's keypoints, so files with another keypoint set (e.g. COCO's 17) work:
model keypoints the file does not have are simply not scored.

Metrics (over labelled keypoints, ``v > 0``):

* ``pck@0.1`` / ``pck@0.05``: fraction within 0.1 / 0.05 of the longer side of
  the annotation box;
* ``pckh@0.5``: fraction within half the head_top-neck distance, over the
  people whose head_top and neck are both labelled (``None`` if none are);
* ``median_error``: median error divided by the longer box side;
* ``per_joint``: the same per keypoint name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgepose.core.errors import EX_DATAERR, EdgeposeError, InputMissingError, UsageError
from edgepose.core.files import absent
from edgepose.core.geometry import Box, CropTransform
from edgepose.core.pose import KEYPOINT_NAMES, mirror_order
from edgepose.inference.decode import DECODERS, Decoder, decode_pose, get_decoder

log = logging.getLogger(__name__)

ASPECTS = ("pad", "stretch")
MODES = ("crop", "frame", "both")  # labelled-box crops, the daemon's own box policy on whole images, both
FPS = 30.0  # frame rate of the video --frames plays
KEYPOINT_COORDS = ("index", "continuous")  # integer pixel indices (+0.5) or continuous coordinates
DEFAULT_PADDING = 0.25
DEFAULT_ASPECT = "pad"
MAX_BOX_SCALE = 10  # a bbox side may be up to this many times the image's longer side


class AnnotationError(EdgeposeError):
    """The annotation file is not a usable COCO keypoint file (exit 65)."""

    exit_code = EX_DATAERR


@dataclass(frozen=True)
class Sample:
    """One annotated person, keypoints already in the model's keypoint order."""

    image_path: Path
    box: Box  # annotation bbox in frame pixels
    keypoints: np.ndarray  # (K, 2) frame pixels (0 where not labelled)
    visible: np.ndarray  # (K,) bool: labelled (v > 0)
    image_id: Union[int, str] = 0
    annotation_id: Union[int, str] = 0
    upright: Optional[bool] = None  # the annotation's ``upright`` flag, if it has one (eval-lspet)

    @property
    def box_size(self) -> float:
        return float(max(self.box.w, self.box.h))


@dataclass
class EvalResult:
    metrics: Dict[str, Any]
    pred: np.ndarray  # (N, K, 2) frame pixels
    gt: np.ndarray  # (N, K, 2)
    visible: np.ndarray  # (N, K) bool
    box_size: np.ndarray  # (N,) longer side of the annotation box
    scores: np.ndarray  # (N, K) keypoint scores
    names: Tuple[str, ...]


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # headTop, HeadTop: a word starts at each capital


def _norm_name(name: str) -> str:
    """``left_wrist``, ``Left-Wrist``, ``LEFT WRIST``, ``LeftWrist`` -> ``left_wrist``."""
    return re.sub(r"[\s_-]+", "_", _CAMEL.sub("_", str(name).strip())).lower()


def _is_id(v: object) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def sample_problem(box: Box, keypoints: np.ndarray, visible: np.ndarray, width: float, height: float
                   ) -> Optional[str]:
    """Why an annotation (``box``, labelled ``keypoints``) cannot be a person in a ``width`` x ``height``
    image, or None.

    The box must overlap the image and be at most :data:`MAX_BOX_SCALE` times the image's longer side,
    and labelled keypoints no further than that from the image: more is a unit or typing error (the
    person would be a few pixels of the model input, and the box size divides every error).
    """
    size = f"{width:g}x{height:g}"
    if box.x >= width or box.y >= height or box.x + box.w <= 0 or box.y + box.h <= 0:
        return f"its bbox [{box.x:g}, {box.y:g}, {box.w:g}, {box.h:g}] lies entirely outside its {size} image"
    far = MAX_BOX_SCALE * max(width, height)
    if max(box.w, box.h) > far:
        return (f"its bbox [{box.x:g}, {box.y:g}, {box.w:g}, {box.h:g}] is more than {MAX_BOX_SCALE} times "
                f"the size of its {size} image")
    centre = np.array([width, height]) / 2
    if (np.abs(keypoints[visible] - centre) > far).any():
        return f"it has labelled keypoints more than {MAX_BOX_SCALE} image sizes outside its {size} image"
    return None


def load_annotations(path: Union[str, Path], images_dir: Union[str, Path, None] = None,
                     names: Sequence[str] = KEYPOINT_NAMES, keypoint_coords: str = "index") -> List[Sample]:
    """Read a COCO keypoint file into :class:`Sample` s in the order of ``names``.

    ``images_dir`` defaults to the annotation file's folder; ``file_name`` is
    relative to it.  Annotations without labelled keypoints are skipped; every
    other one needs a ``bbox`` (the crop and the PCK scale come from it), which
    must overlap its image (:func:`sample_problem`, checked here when the
    image entry has ``width`` and ``height``, and by :func:`infer`).  Keypoint names
    the model does not have are ignored with one warning.
    ``keypoint_coords``: ``"index"`` (pixel indices, moved to pixel centres by
    +0.5) or ``"continuous"`` (used as they are); see the module notes.
    """
    if keypoint_coords not in KEYPOINT_COORDS:
        raise ValueError(f"keypoint_coords must be one of {KEYPOINT_COORDS}, not {keypoint_coords!r}")
    offset = 0.5 if keypoint_coords == "index" else 0.0
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputMissingError(f"annotation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputMissingError(f"cannot read annotation file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"annotation file {path} is not valid JSON: {e}") from None
    base = Path(images_dir) if images_dir else path.parent
    if images_dir and not base.is_dir():
        raise InputMissingError(f"images folder {base} {absent(base, 'folder')}")
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(data), "a number")
        raise AnnotationError(f"{path} is not a COCO keypoint file: it holds {kind}, not an object with "
                              "categories, images and annotations")
    for key in ("categories", "images", "annotations"):
        if key not in data:
            raise AnnotationError(f"{path} is not a COCO keypoint file (no {key!r} list)")
        if not isinstance(data[key], list) or not all(isinstance(x, dict) for x in data[key]):
            raise AnnotationError(f"{path} is not a COCO keypoint file: its {key} must be a list of objects")
    cats: Dict[object, List[Tuple[str, str]]] = {}  # category id -> keypoint names as written, normalised
    for c in data["categories"]:
        if not c.get("keypoints"):
            continue
        if not _is_id(c.get("id")):
            raise AnnotationError(f"{path}: category {c.get('name', '')!r} has no id (an integer)")
        if not isinstance(c["keypoints"], list):
            raise AnnotationError(f"{path}: the keypoints of category id {c['id']} must be a list of names")
        seen: Dict[str, str] = {}
        for n in map(str, c["keypoints"]):
            other = seen.get(_norm_name(n))
            if other is not None:
                twice = f"{n!r} twice" if other == n else f"{other!r} and {n!r}, which are the same name"
                raise AnnotationError(f"{path}: category id {c['id']} names keypoint {twice}")
            seen[_norm_name(n)] = n
        cats[c["id"]] = [(n, norm) for norm, n in seen.items()]
    images: Dict[object, dict] = {}
    for pos, im in enumerate(data["images"]):
        if not _is_id(im.get("id")):
            raise AnnotationError(f"{path}: image {pos + 1} of {len(data['images'])} has no id (an integer)")
        if im["id"] in images:
            raise AnnotationError(f"{path}: image id {im['id']!r} appears more than once in images "
                                  "(an annotation's image_id must name one image)")
        images[im["id"]] = im
    anns = data["annotations"]
    if not cats:
        raise AnnotationError(f"{path} has no category with keypoint names")
    if not anns:
        raise AnnotationError(f"{path} has no annotations")
    model = [_norm_name(n) for n in names]
    k = len(model)
    samples: List[Sample] = []
    matched_any = False
    ignored: Dict[str, None] = {}  # file keypoint names the model does not have, in order
    scored = set()  # model keypoints the file has
    for i, a in enumerate(anns):
        aid = a.get("id", i)
        what = f"{path}: annotation id {aid!r}" if "id" in a else f"{path}: annotation {i + 1} of {len(anns)} (no id)"
        if not _is_id(aid):
            raise AnnotationError(f"{what}: its id must be an integer")
        cid = a.get("category_id")
        cat = (cats.get(cid) if _is_id(cid) else None) or next(iter(cats.values()))
        if "keypoints" not in a:
            raise AnnotationError(f"{what} has no keypoints")
        try:
            kp = np.asarray(a["keypoints"], dtype=np.float64)
        except (TypeError, ValueError):
            kp = None
        if kp is None or kp.ndim != 1:
            raise AnnotationError(f"{what}: its keypoints must be a list of numbers (x, y, v for each keypoint)")
        if len(kp) != 3 * len(cat):
            raise AnnotationError(f"{what} has {len(kp)} keypoint values; its category names {len(cat)} "
                                  f"keypoints, so {3 * len(cat)} (x, y, v for each) are expected")
        kp = kp.reshape(-1, 3)
        if not np.isfinite(kp).all():
            raise AnnotationError(f"{what} has non-finite keypoint values")
        xy = np.zeros((k, 2))
        vis = np.zeros(k, dtype=bool)
        for src, (name, norm) in enumerate(cat):
            if norm in model:
                dst = model.index(norm)
                matched_any = True
                scored.add(dst)
                xy[dst] = kp[src, :2] + offset
                vis[dst] = kp[src, 2] > 0
            else:
                ignored[name] = None
        if not vis.any():
            continue
        if "bbox" not in a:
            raise AnnotationError(f"{what} has no bbox ([x, y, width, height] of the person: eval crops the "
                                  "person by it and scales the errors by its size)")
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise AnnotationError(f"{what}: its bbox must be [x, y, width, height], not {json.dumps(bbox)}")
        x, y, w, h = map(float, bbox)
        if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
            raise AnnotationError(f"{what} has an empty or non-finite bbox")
        if "image_id" not in a:
            raise AnnotationError(f"{what} has no image_id")
        image = images.get(a["image_id"]) if _is_id(a["image_id"]) else None
        if image is None:
            raise AnnotationError(f"{what} refers to image_id {a['image_id']!r}, which is not in images")
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise AnnotationError(f"{path}: image id {a['image_id']!r} has no file_name (a non-empty string)")
        box = Box(x, y, w, h)
        width, height = image.get("width"), image.get("height")
        if (isinstance(width, (int, float)) and isinstance(height, (int, float)) and not isinstance(width, bool)
                and not isinstance(height, bool) and width > 0 and height > 0):
            problem = sample_problem(box, xy, vis, width, height)
            if problem:
                raise AnnotationError(f"{what}: {problem} ({file_name})")
        upright = a.get("upright")
        samples.append(Sample(base / file_name, box, xy, vis, a["image_id"], aid,
                              bool(upright) if isinstance(upright, (bool, int)) else None))
    if not matched_any:
        raise AnnotationError(f"{path}: none of its keypoint names match the model's "
                              f"({', '.join(names)})")
    if ignored:
        missing = [names[j] for j in range(k) if j not in scored]
        log.warning("%s: ignoring keypoints the model does not have: %s%s", path, ", ".join(ignored),
                    f" (the model's {', '.join(missing)}: not in the file, not scored)" if missing else "")
    if not samples:
        raise AnnotationError(f"{path} has no annotation with labelled keypoints")
    return samples


def crop_box(box: Box, in_w: int, in_h: int, padding: float = DEFAULT_PADDING,
             aspect: str = DEFAULT_ASPECT) -> Box:
    """The model crop for an annotation box: grown by ``padding`` and fitted to the input."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, not {aspect!r}")
    out = box.expand(1.0 + padding)
    return out.to_aspect(in_w / in_h) if aspect == "pad" else out


def sample_image(s: Sample, cache: Dict[Path, np.ndarray]) -> np.ndarray:
    """The decoded image of ``s`` (66 if missing, 65 if undecodable), its annotation checked against its
    size (:func:`sample_problem`).  ``cache`` keeps the last image: samples of one image are adjacent."""
    import cv2

    img = cache.get(s.image_path)
    if img is None:
        if not s.image_path.is_file():
            raise InputMissingError(f"image {s.image_path} {absent(s.image_path)}")
        img = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise AnnotationError(f"image {s.image_path} cannot be decoded")
        cache.clear()
        cache[s.image_path] = img
    problem = sample_problem(s.box, s.keypoints, s.visible, img.shape[1], img.shape[0])
    if problem:
        raise AnnotationError(f"annotation id {s.annotation_id!r} of image {s.image_path}: {problem}")
    return img


def check_samples(samples: Sequence[Sample]) -> None:
    """What :func:`infer` would refuse, found before a long job starts (``models quantize --eval``)."""
    cache: Dict[Path, np.ndarray] = {}
    for s in samples:
        sample_image(s, cache)


def infer(engine, samples: Sequence[Sample], padding: float = DEFAULT_PADDING,
          aspect: str = DEFAULT_ASPECT) -> List[Tuple[np.ndarray, CropTransform]]:
    """Heatmaps and crop transform of every sample (decoders can then be compared cheaply)."""
    from edgepose.inference.pipeline import crop_to_input

    in_w, in_h = engine.input_size
    buf = np.empty((in_h, in_w, 3), dtype=np.uint8)
    out = []
    cache: Dict[Path, np.ndarray] = {}
    for s in samples:
        img = sample_image(s, cache)
        t = CropTransform(crop_box(s.box, in_w, in_h, padding, aspect), in_w, in_h)
        crop_to_input(img, t, out=buf)
        out.append((engine.run(buf).copy(), t))
    return out


def score(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, box_size: np.ndarray,
          names: Sequence[str]) -> Dict[str, Any]:
    """All metrics from predictions and ground truth (pure function)."""
    err = np.linalg.norm(pred - gt, axis=-1)  # (N, K)
    norm = err / box_size[:, None]
    vis = visible.astype(bool)

    def frac(mask_ok: np.ndarray, mask: np.ndarray) -> Optional[float]:
        n = int(mask.sum())
        return float((mask_ok & mask).sum() / n) if n else None

    def median(values: np.ndarray, mask: np.ndarray) -> Optional[float]:
        return float(np.median(values[mask])) if mask.any() else None

    names = list(names)
    head = [names.index(n) if n in names else None for n in ("head_top", "neck")]
    pckh = None
    if None not in head:
        h, n = head
        has_head = vis[:, h] & vis[:, n]
        if has_head.any():
            seg = np.linalg.norm(gt[:, h] - gt[:, n], axis=-1)
            ok = err <= 0.5 * seg[:, None]
            pckh = frac(ok, vis & has_head[:, None])
    per_joint = {}
    for j, name in enumerate(names):
        m = vis[:, j]
        per_joint[name] = {"count": int(m.sum()), "pck@0.1": frac(norm[:, j] <= 0.1, m),
                           "pck@0.05": frac(norm[:, j] <= 0.05, m), "median_error": median(norm[:, j], m)}
    return {"pck@0.1": frac(norm <= 0.1, vis), "pck@0.05": frac(norm <= 0.05, vis), "pckh@0.5": pckh,
            "median_error": median(norm, vis), "people": int(len(gt)), "keypoints": int(vis.sum()),
            "per_joint": per_joint}


def mirror_offsets(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], decoder: Union[str, Decoder] = "subpixel",
                   names: Sequence[str] = KEYPOINT_NAMES, min_score: float = 0.3) -> np.ndarray:
    """Label-free check of a decoder's horizontal geometry, in heatmap cells (+ = right).

    ``pairs``: the heatmaps of a crop and of its left-right mirror image.  The
    mirrored pose, left/right swapped (:func:`edgepose.core.pose.mirror_order`) and
    mirrored back (``W - x``), should land on the plain one; a decoder placing
    keypoints ``b`` cells right of where the model means them gives ``b`` for
    every keypoint both runs score ``>= min_score``.  Returns those offsets.
    """
    dec = get_decoder(decoder) if isinstance(decoder, str) else decoder
    swap = np.array(mirror_order(names))
    out = []
    for plain, mirrored in pairs:
        (xa, sa), (xb, sb) = dec(plain), dec(mirrored)
        xb, sb = xb[swap], sb[swap]
        ok = (sa >= min_score) & (sb >= min_score)
        out.append((xa[ok, 0] - (plain.shape[1] - xb[ok, 0])) / 2.0)
    return np.concatenate(out) if out else np.empty(0)


def shifted_windows(box: Box, in_w: int, in_h: int, shifts: Sequence[float]) -> List[CropTransform]:
    """Crop windows of ``box`` moved right and down by each of ``shifts`` *input* pixels."""
    sx, sy = box.w / in_w, box.h / in_h
    return [CropTransform(Box(box.x + s * sx, box.y + s * sy, box.w, box.h), in_w, in_h) for s in shifts]


def window_views(engine, frame: np.ndarray, box: Box, shifts: Sequence[float]
                 ) -> List[Tuple[np.ndarray, CropTransform]]:
    """Heatmaps and transform of ``frame`` cropped through each of :func:`shifted_windows` (one scene)."""
    from edgepose.inference.pipeline import crop_to_input

    in_w, in_h = engine.input_size
    return [(engine.run(crop_to_input(frame, t)).copy(), t) for t in shifted_windows(box, in_w, in_h, shifts)]


def window_spread(views: Sequence[Sequence[Tuple[np.ndarray, CropTransform]]],
                  decoder: Union[str, Decoder] = "subpixel",
                  min_score: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """Label-free sub-cell precision: each scene seen through crop windows moved by sub-cell amounts.

    ``views``: per scene, the heatmaps of several crops of one frame with their
    transforms (:func:`shifted_windows`).  The content moves in the crop, the
    keypoints stay where they are in the frame, so a decoder that follows the
    content to a fraction of a cell decodes the same frame point from every
    window, and an integer decoder jumps from cell to cell.  Returns ``spread``:
    per keypoint (every window scores it ``>= min_score``) and axis, the standard
    deviation over the windows in input pixels; and ``drift``: per window, the
    mean signed deviation in input pixels of all those keypoints and axes, the
    part of the movement they share (a network's own response to the shift,
    which no decoder can undo).
    """
    dec = get_decoder(decoder) if isinstance(decoder, str) else decoder
    spread, drift = [], []
    for scene in views:
        pts, scores = [], []
        for heatmaps, t in scene:
            xy, sc = dec(heatmaps)
            frame_xy = t.heatmap_to_frame(xy, heatmaps.shape[1], heatmaps.shape[0])
            pts.append(frame_xy / np.array(t.scale))
            scores.append(sc)
        ok = (np.array(scores) >= min_score).all(axis=0)
        if ok.any():
            p = np.array(pts)[:, ok]  # (windows, keypoints, 2)
            spread.append(p.std(axis=0).ravel())
            drift.append((p - p.mean(axis=0)).mean(axis=(1, 2)))
    if not spread:
        return np.empty(0), np.empty(0)
    return np.concatenate(spread), np.mean(drift, axis=0)


def evaluate_heatmaps(outputs: Sequence[Tuple[np.ndarray, CropTransform]], samples: Sequence[Sample],
                      decoder: Union[str, Decoder] = "subpixel",
                      names: Sequence[str] = KEYPOINT_NAMES) -> EvalResult:
    """Decode precomputed heatmaps (see :func:`infer`) and score them."""
    dec = get_decoder(decoder) if isinstance(decoder, str) else decoder
    poses = [decode_pose(hm, t, names, 0.0, dec) for hm, t in outputs]
    pred = np.stack([p.xy() for p in poses])
    scores = np.stack([p.scores() for p in poses])
    gt = np.stack([s.keypoints for s in samples])
    vis = np.stack([s.visible for s in samples])
    size = np.array([s.box_size for s in samples])
    return EvalResult(score(pred, gt, vis, size, names), pred, gt, vis, size, scores, tuple(names))


def evaluate(engine, samples: Sequence[Sample], decoder: Union[str, Decoder] = "subpixel",
             padding: float = DEFAULT_PADDING, aspect: str = DEFAULT_ASPECT,
             names: Sequence[str] = KEYPOINT_NAMES) -> EvalResult:
    """Run ``engine`` on every sample's crop, decode and score."""
    if not samples:
        raise UsageError("nothing to evaluate: no annotated people")
    if getattr(decoder, "grid", None) is None and len(names) != engine.spec.num_keypoints:
        raise UsageError(f"the model has {engine.spec.num_keypoints} keypoints; eval scores models with the "
                         f"{len(names)} keypoints {names[0]} ... {names[-1]}")
    return evaluate_heatmaps(infer(engine, samples, padding, aspect), samples, decoder, names)


@dataclass
class FrameEval:
    """Frame-mode result (:func:`evaluate_frames`)."""

    result: EvalResult  # scored on the matched people, in the order of ``people``
    people: List[int]  # index in the samples of each scored (matched) person
    found: int  # images whose scored frame has a pose marked present
    images: int
    passes_first: float  # mean model runs on an image's first frame (a still, or the frame of a scene cut)
    passes_tracked: Optional[float]  # mean model runs on its later frames that began tracked (None: none did)


def match_person(pred: np.ndarray, people: Sequence[Sample]) -> int:
    """Index in ``people`` (the labelled people of one image) of the one a found pose's (K, 2)
    keypoints ``pred`` are closest to: median error over their labelled keypoints, in box sizes."""
    errs = [float(np.median(np.linalg.norm(pred[s.visible] - s.keypoints[s.visible], axis=1))) / s.box_size
            for s in people]
    return int(np.argmin(errs))


def evaluate_frames(pipeline, samples: Sequence[Sample], names: Sequence[str] = KEYPOINT_NAMES,
                    frames: int = 1, score_frame: int = 1, fps: float = FPS) -> FrameEval:
    """Run the daemon's ``pipeline`` (:class:`edgepose.inference.pipeline.Pipeline`) on whole images and
    score the pose it delivers against the labelled person it matches (:func:`match_person`).

    ``frames`` == 1: every image is a still (``still=True``, as image files are in the daemon);
    otherwise the images are one video, each shown for ``frames`` frames at ``fps`` (a scene cut every
    ``frames`` frames, tracking and smoothing carried across), and frame ``score_frame`` (1-based) of
    each is scored.  A pose not marked present counts as missed.
    """
    if frames < 1 or not 1 <= score_frame <= frames:
        raise UsageError(f"--score-frame must be from 1 to --frames ({frames}), not {score_frame}")
    if not samples:
        raise UsageError("nothing to evaluate: no annotated people")
    groups: Dict[Path, List[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.image_path, []).append(i)
    pipeline.reset()
    cache: Dict[Path, np.ndarray] = {}
    first, later, people, found = [], [], [], 0
    pred_rows, score_rows = [], []
    n = 0
    for idx in groups.values():
        img = None
        for i in idx:
            img = sample_image(samples[i], cache)
        scored = None
        for f in range(frames):
            tracked = bool(getattr(pipeline.box_policy, "tracking", False))
            r = pipeline.process(img, n / fps, still=frames == 1)
            n += 1
            if f == 0:
                first.append(r.passes)
            elif tracked:  # the cost once a person is tracked (a lost or cut track pays its search here too)
                later.append(r.passes)
            if f + 1 == score_frame:
                scored = r.pose
        assert scored is not None
        pred = scored.xy()
        people.append(idx[match_person(pred, [samples[i] for i in idx])])
        found += scored.present
        pred_rows.append(pred if scored.present else np.full_like(pred, np.inf))
        score_rows.append(scored.scores())
    chosen = [samples[i] for i in people]
    pred = np.stack(pred_rows)
    gt = np.stack([s.keypoints for s in chosen])
    vis = np.stack([s.visible for s in chosen])
    size = np.array([s.box_size for s in chosen])
    result = EvalResult(score(pred, gt, vis, size, names), pred, gt, vis, size, np.stack(score_rows), tuple(names))
    return FrameEval(result, people, found, len(groups), float(np.mean(first)),
                     float(np.mean(later)) if later else None)


# -- command line -------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="catalogue name or path to a .tflite file "
                        "(default: model.name from the config)")
    parser.add_argument("--annotations", required=True, metavar="FILE.json",
                        help="COCO-format keypoint annotations")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="folder the images' file_name is relative to (default: the file's folder)")
    parser.add_argument("--decoder", default=None, choices=sorted(DECODERS),
                        help="heatmap decoder (default: model.decoder from the config)")
    parser.add_argument("--padding", type=float, default=DEFAULT_PADDING,
                        help=f"fraction of the box added around it before cropping (default {DEFAULT_PADDING})")
    parser.add_argument("--aspect", default=DEFAULT_ASPECT, choices=ASPECTS,
                        help="fit the padded box to the input by growing its short side (pad) or "
                             "resizing it as it is (stretch)")
    parser.add_argument("--keypoint-coords", default="index", choices=KEYPOINT_COORDS,
                        help="annotation keypoints are integer pixel indices (COCO, AI Challenger; "
                             "moved to pixel centres) or continuous coordinates")
    parser.add_argument("--compare", default=None, metavar="NAME|PATH",
                        help="a second model, run on the same people: both are scored on the keypoint names "
                             "they share (12 between the 14-keypoint models and MoveNet's 17)")
    parser.add_argument("--family", default=None, metavar="FAMILY",
                        help="model family of a model file that is not recognised: heatmap, movenet or paf "
                             "(default: model.family from the config)")
    parser.add_argument("--mode", default="crop", choices=MODES,
                        help="crop: the model sees each labelled box (what the model can do); frame: the whole "
                             "image through the daemon's own pipeline (tracking, search, refinement, smoothing; "
                             "what edgepose run delivers), the box only scales the errors and picks the "
                             "labelled person; both: the two side by side and their difference (default crop)")
    parser.add_argument("--frames", type=int, default=1, metavar="N",
                        help="frame mode: play each image as N frames of one video (a scene cut every N "
                             "frames); 1 (default): every image is a still")
    parser.add_argument("--score-frame", type=int, default=None, metavar="K",
                        help="frame mode with --frames N: score the K-th frame of each image "
                             "(default: min(3, N), the third frame after a cut)")
    parser.add_argument("--upright", action="store_true",
                        help="only the people whose annotation has a true 'upright' flag (eval-lspet)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N annotated people (a quick look on a loaded machine)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--config", default=None, help="config file (model dir/mirror, runtime)")


def _fmt(v: Optional[float], pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.4f}"


def format_table(metrics: Dict[str, Any], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"people {metrics['people']}  keypoints {metrics['keypoints']}")
    lines.append(f"PCK@0.1 {_fmt(metrics['pck@0.1'])}  PCK@0.05 {_fmt(metrics['pck@0.05'])}  "
                 f"PCKh@0.5 {_fmt(metrics['pckh@0.5'])}  median error {_fmt(metrics['median_error'], False)}")
    lines.append(f"{'joint':<16}{'n':>4}{'PCK@0.1':>9}{'PCK@0.05':>10}{'median':>9}")
    for name, m in metrics["per_joint"].items():
        lines.append(f"{name:<16}{m['count']:>4}{_fmt(m['pck@0.1']):>9}{_fmt(m['pck@0.05']):>10}"
                     f"{_fmt(m['median_error'], False):>9}")
    return "\n".join(lines) + "\n"


def shared_joints(*name_sets: Sequence[str]) -> Tuple[str, ...]:
    """The keypoint names every one of ``name_sets`` has, in the first set's order (CPM's 14 and
    MoveNet's 17 share 12: shoulders, elbows, wrists, hips, knees, ankles)."""
    first, *rest = name_sets
    return tuple(n for n in first if all(n in other for other in rest))


def only_joints(samples: Sequence[Sample], names: Sequence[str], keep: Sequence[str]) -> List[Sample]:
    """``samples`` (keypoints in the order of ``names``) with every joint not in ``keep`` unlabelled,
    so that models with different keypoint sets are scored on the same joints."""
    mask = np.array([n in keep for n in names])
    return [replace(s, visible=s.visible & mask) for s in samples]


def select_samples(samples: Sequence[Sample], upright: bool = False, limit: Optional[int] = None) -> List[Sample]:
    """The people ``--upright`` and ``--limit`` keep (upright: the annotation's flag is true)."""
    out = [s for s in samples if s.upright] if upright else list(samples)
    if upright and not out:
        raise UsageError("--upright: no annotation has a true 'upright' flag")
    return out[:limit] if limit is not None else out


def format_both(crop: Dict[str, Any], frame: Dict[str, Any], title: str) -> str:
    """Crop mode and frame mode side by side, with frame minus crop in points."""
    lines = [title, f"{'':<16}{'crop':>8}{'frame':>8}{'diff':>8}"]
    for key in ("pck@0.1", "pck@0.05", "pckh@0.5"):
        a, b = crop[key], frame[key]
        diff = f"{100 * (b - a):+.1f}" if a is not None and b is not None else "n/a"
        lines.append(f"{key.upper().replace('PCKH', 'PCKh'):<16}{_fmt(a):>8}{_fmt(b):>8}{diff:>8}")
    lines.append(f"{'joint':<16}{'crop':>8}{'frame':>8}{'diff':>8}")
    for name, m in crop["per_joint"].items():
        f = frame["per_joint"][name]
        if not m["count"]:
            continue
        lines.append(f"{name:<16}{_fmt(m['pck@0.1']):>8}{_fmt(f['pck@0.1']):>8}"
                     f"{100 * (f['pck@0.1'] - m['pck@0.1']):>+8.1f}")
    return "\n".join(lines) + "\n"


def command(args: argparse.Namespace) -> int:
    from edgepose.core import config as config_mod
    from edgepose.inference.estimator import PoseEstimator
    from edgepose.models import registry

    overrides: Dict[str, Dict[str, Any]] = {"model": {"family": args.family}} if args.family else {}
    if args.decoder:
        overrides.setdefault("model", {})["decoder"] = args.decoder
    cfg = config_mod.load(args.config, overrides or None)
    names = [args.model or cfg.model.name] + ([args.compare] if args.compare else [])
    decoder = cfg.model.decoder
    if not 0 <= args.padding <= 10:
        raise UsageError(f"--padding must be between 0 and 10, not {args.padding}")
    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, not {args.frames}")
    score_frame = min(3, args.frames) if args.score_frame is None else args.score_frame
    if not 1 <= score_frame <= args.frames:
        raise UsageError(f"--score-frame must be from 1 to --frames ({args.frames}), not {score_frame}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    # one estimator per model, built as edgepose run builds it: crop mode uses its engine, frame mode its pipeline
    estimators = []
    for i, n in enumerate(names):
        mcfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=n,
                                                                  family=cfg.model.family if i == 0 else "auto"))
        estimators.append(PoseEstimator.from_config(mcfg, progress=registry.stderr_progress()))
    models = [e.model for e in estimators]
    if any(m.family.kind == "paf" for m in models):
        return _command_multi(args, names, estimators)
    joints = shared_joints(*(m.keypoint_names for m in models)) if len(models) > 1 else None
    reports = []
    for name, est in zip(names, estimators):
        model = est.model
        # matched by name: a file with another keypoint set scores the joints both have
        samples = select_samples(load_annotations(args.annotations, args.images, names=model.keypoint_names,
                                                  keypoint_coords=args.keypoint_coords), args.upright, args.limit)
        if joints is not None:
            samples = only_joints(samples, model.keypoint_names, joints)
        modes: Dict[str, Dict[str, Any]] = {}
        fe = None
        if args.mode != "crop":
            fe = evaluate_frames(est.pipeline, samples, model.keypoint_names, args.frames, score_frame)
        if args.mode != "frame":
            # both: the crop mode on the people the frame mode scored, so the difference compares like with like
            people = samples if fe is None else [samples[i] for i in fe.people]
            modes["crop"] = dict(evaluate(est.engine, people, model.decoder(decoder), args.padding, args.aspect,
                                          names=model.keypoint_names).metrics)
        if fe is not None:
            modes["frame"] = dict(fe.result.metrics, found=fe.found, images=fe.images, frames=args.frames,
                                  score_frame=score_frame, passes_first=fe.passes_first,
                                  passes_tracked=fe.passes_tracked)
        for metrics in modes.values():
            if joints is not None:
                metrics["per_joint"] = {j: metrics["per_joint"][j] for j in joints}
        shown_decoder = decoder if model.family.kind == "heatmap" else model.family.kind
        reports.append((name, shown_decoder, model.family.name, modes))
    if args.json:
        out = []
        for n, d, fam, modes in reports:
            common = dict(model=n, decoder=d, family=fam, padding=args.padding, aspect=args.aspect)
            if args.mode == "crop":
                out.append(dict(modes["crop"], **common))
            elif args.mode == "frame":
                out.append(dict(modes["frame"], mode="frame", **common))
            else:
                out.append(dict(common, mode="both", crop=modes["crop"], frame=modes["frame"],
                                difference={k: (modes["frame"][k] - modes["crop"][k])
                                            if modes["frame"][k] is not None and modes["crop"][k] is not None
                                            else None for k in ("pck@0.1", "pck@0.05", "pckh@0.5")}))
        doc = out[0] if joints is None else {"joints": list(joints), "models": out}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    if joints is not None:
        sys.stdout.write(f"the {len(joints)} joints both models have: {', '.join(joints)}\n")
    for n, d, fam, modes in reports:
        title = f"model {n} ({fam})  decoder {d}  padding {args.padding}  aspect {args.aspect}"
        fm = modes.get("frame")
        if fm is not None:
            video = (f"video: each image {args.frames} frames, frame {score_frame} scored"
                     if args.frames > 1 else "stills")
            tracked = (f", {fm['passes_tracked']:.2f} per later frame begun tracked"
                       if fm["passes_tracked"] is not None else "")
            title += (f"\nframe mode ({video}): pose found in {fm['found']} of {fm['images']} images; model runs "
                      f"{fm['passes_first']:.2f} per image's first frame{tracked}")
        if args.mode == "both":
            sys.stdout.write(format_both(modes["crop"], modes["frame"], title))
        else:
            sys.stdout.write(format_table(modes[args.mode], title))
    return 0


def _command_multi(args: argparse.Namespace, names, estimators) -> int:
    """Multi-person models: COCO keypoint AP/AR (edgepose.tools.evaluate_multi), one table per model."""
    from edgepose.tools import evaluate_multi as em

    if any(e.model.family.kind != "paf" for e in estimators):
        raise UsageError("--compare a multi-person model with another multi-person model (COCO AP), "
                         "not with a single-person one")
    gt = em.load_coco(args.annotations)
    images = Path(args.images) if args.images else Path(args.annotations).parent
    reports = []
    for name, est in zip(names, estimators):  # each built as edgepose run builds it ([model], [tracking])
        metrics = em.evaluate_people(est.pipeline, gt, images)
        reports.append(dict(metrics, model=name, family=est.model.family.name))
    if args.json:
        sys.stdout.write(json.dumps(reports[0] if len(reports) == 1 else {"models": reports}, indent=1) + "\n")
    else:
        for r in reports:
            sys.stdout.write(em.format_metrics(r, f"model {r['model']} ({r['family']})  COCO keypoint AP/AR"))
    return 0
