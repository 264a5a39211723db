"""Person tracking for a single-person model: crop the next frame around the last pose.

A single-person heatmap model sees the whole frame shrunk to 192x192; a person
who fills a quarter of a 720p frame's height is then ~45 input pixels tall and
the model barely finds them.  :class:`Tracker` is a box policy for
:class:`edgepose.inference.pipeline.Pipeline`:

* while the last pose is confident (pose score >= ``min_score``), the next
  crop is the box around its confident keypoints, grown by ``margin`` (room
  for the limbs the keypoints do not cover and for motion between frames),
  fitted to the model's aspect ratio and never smaller than ``min_size``
  pixels;
* when the pose is lost it falls back to the whole frame
  (:func:`edgepose.core.geometry.whole_frame_box`).  With ``search`` > 0 it also
  looks at tiles of that fraction of the frame's longer side, one per frame
  in turn after each whole-frame try, so a person too small for the
  whole-frame view is still picked up.

A frame is located by :meth:`Tracker.locate`, which may look at it more than once:

* **stills** (``still=True``: image files and folders): after the whole-frame
  pass finds a person, a second pass on the crop around that pose (the crop a
  video frame would get next), and a third only when the second still moved
  the pose by more than ``refine_tolerance`` of its size (``refine`` passes at
  most); a still whose whole frame shows nobody is searched on every tile (a
  small or off-centre person); a video frame that starts a new track is
  refined the same way with ``refine_video`` passes at most (default 0: the
  next frame is run on the crop around this frame's pose anyway, so the
  refinement is spread over the next frames at no extra model run: each of
  the next ``refine`` frames at most, until one moves the pose by less than
  ``refine_tolerance``, is judged as a refining pass is, without the ``jump``
  test against the coarser pose before it, and smoothing restarts from it:
  ``Located.restart``);
* **video**: a scene cut (:class:`SceneCut`: the frame's 16x16 grey thumbnail differs from the
  last one by more than ``cut`` on average) drops the track before the frame is looked at; a
  tracked crop that no longer holds the person (pose score below
  ``min_score``, fewer than ``min_keypoints`` confident keypoints inside the
  crop, or the keypoints jumped by more than ``jump`` of the pose size since
  the last frame: a cut, a person leaving, a jump) is dropped at once and the
  same frame is looked at whole; the result says the track is new, so the
  smoother restarts instead of blending two people.

Score thresholds are set for CPM and multiplied by the model's
``score_scale`` (:class:`edgepose.models.resolved.ResolvedModel`): Hourglass' peaks are
about 0.6 of CPM's on the same people, so a fixed 0.25 would drop a
Hourglass pose that is as good as a CPM one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

import numpy as np

from edgepose.core.geometry import Box, CropTransform, whole_frame_box
from edgepose.core.pose import Pose

if TYPE_CHECKING:
    from edgepose.core.config import Config


MIN_SEARCH = 0.1  # smallest tracking.search tile (fraction of the frame's longer side) other than 0


def search_boxes(frame_w: int, frame_h: int, in_w: int, in_h: int, fit: str = "pad",
                 tile: float = 0.4) -> List[Box]:
    """The whole frame, then a grid of overlapping tiles to look for a person while lost.

    Tiles have the model's aspect ratio and a side of ``tile`` times the
    frame's longer side, shrunk (not squeezed) to fit inside the frame; their
    centres are spread evenly so neighbouring tiles overlap by about half.
    """
    out = [whole_frame_box(frame_w, frame_h, in_w, in_h, fit)]
    if tile <= 0:
        return out
    aspect = in_w / in_h
    side = tile * max(frame_w, frame_h)
    tw, th = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    fit_in = min(1.0, frame_w / tw, frame_h / th)  # a tile the model sees undistorted
    tw, th = tw * fit_in, th * fit_in
    nx = max(1, int(np.ceil(2 * frame_w / tw)) - 1)
    ny = max(1, int(np.ceil(2 * frame_h / th)) - 1)
    for cy in np.linspace(th / 2, frame_h - th / 2, ny):
        for cx in np.linspace(tw / 2, frame_w - tw / 2, nx):
            out.append(Box(float(cx - tw / 2), float(cy - th / 2), float(tw), float(th)))
    return out


@dataclass(frozen=True)
class Located:
    """What :meth:`Tracker.locate` found in one frame."""

    pose: Pose
    transform: CropTransform  # the crop the pose was decoded from
    passes: int  # model runs spent on this frame
    new_track: bool  # not the continuation of the previous frame's pose (restart smoothing)
    # a refining pass of a new track deferred to this frame (refine_video 0): the same person, but the pose
    # before was still settling (the coarse whole-frame view first), so smoothing starts again from this one
    restart: bool = False


Look = Callable[[Box], Tuple[Pose, CropTransform]]  # run the model on one crop of the current frame


class SceneCut:
    """Notices a cut: the mean absolute difference (0..255) of 16x16 grey thumbnails of consecutive
    frames above ``threshold`` (a person moving in a still scene changes it by a few levels)."""

    SIZE = 16

    def __init__(self, threshold: float = 30.0):
        self.threshold = threshold
        self._last: Optional[np.ndarray] = None

    def reset(self) -> None:
        self._last = None

    def __call__(self, frame: np.ndarray) -> bool:
        import cv2

        grey = cv2.cvtColor(thumbnail(frame, self.SIZE), cv2.COLOR_BGR2GRAY).astype(np.float32)
        last, self._last = self._last, grey
        return last is not None and float(np.abs(grey - last).mean()) > self.threshold


def thumbnail(frame: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)`` of a BGR uint8 frame, the same
    pixels, about 3x faster when both sides are multiples of ``size`` (640x480, 1280x720, ...).

    There OpenCV averages whole blocks with a scalar loop (0.5 ms for 640x480, on the daemon's critical
    path every frame); here the blocks' integer sums come from ``cv2.reduce`` (vectorised) over each band
    of rows, then the columns of each block, and are scaled and rounded as OpenCV does for 8-bit images
    (the float sum times ``1.f / area``, rounded half to even).  Other sizes go to ``cv2.resize``.
    """
    import cv2

    h, w = frame.shape[:2]
    if h % size or w % size or frame.dtype != np.uint8 or frame.ndim != 3 or not frame.flags.c_contiguous:
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    by, bx, cn = h // size, w // size, frame.shape[2]
    bands = frame.reshape(size, by, w * cn)
    rows = np.vstack([cv2.reduce(bands[i], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S) for i in range(size)])
    # rows: (size, w * cn) column sums of each band of rows; then the sums of each block's bx columns
    sums = np.add.reduceat(rows.reshape(size, w, cn), np.arange(0, w, bx), axis=1)
    thumb: np.ndarray = np.rint(sums.astype(np.float32) * np.float32(1.0 / (bx * by))).astype(np.uint8)
    return thumb


def pose_change(pose: Pose, prev: Pose, min_score: float) -> float:
    """Median distance between the keypoints both poses score >= ``min_score``, in ``prev`` pose sizes
    (the longer side of the box around them); inf when they share fewer than 2 such keypoints."""
    ok = (pose.scores() >= min_score) & (prev.scores() >= min_score)
    if ok.sum() < 2:
        return float("inf")
    a, b = pose.xy()[ok], prev.xy()[ok]
    span = b.max(axis=0) - b.min(axis=0)  # np.ptp per column, without its wrapper's cost
    size = max(float(span[0]), float(span[1]), 1.0)
    return float(np.median(np.linalg.norm(a - b, axis=1))) / size


class Tracker:
    """Box policy: follow the last confident pose, fall back to the whole frame."""

    def __init__(self, in_w: int, in_h: int, min_score: float = 0.25, margin: float = 1.7,
                 fit: str = "pad", keypoint_score: float = 0.2, min_keypoints: int = 4,
                 min_size: float = 48.0, search: float = 0.5, patience: int = 1,
                 score_scale: float = 1.0, refine: int = 2, refine_tolerance: float = 0.05,
                 jump: float = 0.5, still_search: bool = True, refine_video: int = 0):
        if score_scale <= 0:
            raise ValueError("score_scale must be > 0")
        self.in_w, self.in_h, self.fit = in_w, in_h, fit
        self.margin = margin
        # thresholds are given for CPM-like scores; score_scale adapts them to the model
        self.min_score, self.keypoint_score = min_score * score_scale, keypoint_score * score_scale
        self.min_keypoints = min_keypoints
        self.min_size = min_size
        self.search = search  # tile size (fraction of the frame's longer side); 0 = whole frame only
        self.patience = patience  # unconfident frames that keep the last box before giving up
        self.refine = refine  # extra passes on the crop around the pose found in a still
        self.refine_video = refine_video  # the same for a video frame that starts a new track
        self.refine_tolerance = refine_tolerance  # a refining pass that moves the pose less than this stops
        self.jump = jump  # keypoints moving more than this (pose sizes) in one frame: another person (0 = off)
        self.still_search = still_search  # a still where the whole frame finds nobody: try every tile
        self._box: Optional[Box] = None
        self._last: Optional[Pose] = None  # the pose the tracked box came from
        self._settle = 0  # next frames that are a new track's deferred refining passes (refine_video 0)
        self._misses = 0
        self._step = 0  # position in the search cycle while lost

    @property
    def tracking(self) -> bool:
        return self._box is not None

    def reset(self) -> None:
        self._box, self._last, self._step, self._misses = None, None, 0, 0
        self._settle = 0

    def crop_box(self, frame_w: int, frame_h: int) -> Box:
        if self._box is not None:
            return self._box
        boxes = search_boxes(frame_w, frame_h, self.in_w, self.in_h, self.fit, self.search)
        # alternate whole frame / next tile: W T1 W T2 ... so the cheap global view stays frequent
        tiles = len(boxes) - 1
        i = self._step % (2 * tiles) if tiles else 0
        return boxes[0] if i % 2 == 0 or not tiles else boxes[1 + i // 2]

    def box_for(self, pose: Pose) -> Optional[Box]:
        """The next crop for ``pose``, or None when it is not confident enough to follow."""
        if not pose.keypoints or pose.score < self.min_score:
            return None
        xy, s = pose.xy(), pose.scores()
        good = s >= self.keypoint_score
        if good.sum() < self.min_keypoints:
            return None
        pts = xy[good]
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        w, h = max(x1 - x0, self.min_size / self.margin), max(y1 - y0, self.min_size / self.margin)
        box = Box(float(x0), float(y0), float(w), float(h))
        box = Box(box.x - (w - (x1 - x0)) / 2, box.y - (h - (y1 - y0)) / 2, w, h)
        return box.expand(self.margin).to_aspect(self.in_w / self.in_h)

    def holds(self, pose: Pose, transform: CropTransform, prev: Optional[Pose]) -> bool:
        """Whether a pose decoded from the tracked crop is still the tracked person: confident, with
        ``min_keypoints`` confident keypoints inside the crop, and not jumped (``jump``) from ``prev``."""
        return self._held(pose, transform, prev) is not None

    def _held(self, pose: Pose, transform: CropTransform, prev: Optional[Pose]) -> Optional[Box]:
        """:meth:`holds`, answered with the next crop (:meth:`box_for`) when the pose holds, else None."""
        box = self.box_for(pose)
        if box is None:
            return None
        b = transform.box
        xy, s = pose.xy(), pose.scores()
        inside = ((xy[:, 0] >= b.x) & (xy[:, 0] <= b.x + b.w) & (xy[:, 1] >= b.y) & (xy[:, 1] <= b.y + b.h)
                  & (s >= self.keypoint_score))
        if inside.sum() < self.min_keypoints:
            return None
        if self.jump > 0 and prev is not None and pose_change(pose, prev, self.keypoint_score) > self.jump:
            return None
        return box

    def _refined(self, look: Look, pose: Pose, transform: CropTransform, box: Box, most: int
                 ) -> Tuple[Pose, CropTransform, Box, int]:
        """Up to ``most`` passes on the crop around the pose; stops when a pass loses the person or
        moves the pose by less than ``refine_tolerance`` of its size."""
        passes = 0
        for _ in range(most):
            p2, t2 = look(box)
            passes += 1
            b2 = self.box_for(p2)
            if b2 is None:
                break
            moved = pose_change(p2, pose, self.keypoint_score)
            pose, transform, box = p2, t2, b2
            if moved <= self.refine_tolerance:
                break
        return pose, transform, box, passes

    def locate(self, look: Look, frame_w: int, frame_h: int, still: bool = False) -> Located:
        """Find the person in one frame, running ``look`` on as many crops as the policy needs (see the
        module notes), and remember where to look next."""
        if still:
            self.reset()
        passes = 0
        if self._box is not None:  # tracking: one pass on the crop around the last pose
            pose, t = look(self._box)
            passes = 1
            settling = self._settle > 0  # a deferred refining pass: no jump test against the coarser pose
            held = self._held(pose, t, None if settling else self._last)
            if held is not None:
                if settling and self._last is not None:  # settled once a pass moves the pose less than this
                    moved = pose_change(pose, self._last, self.keypoint_score)
                    self._settle = self._settle - 1 if moved > self.refine_tolerance else 0
                self._box, self._last, self._misses = held, pose, 0
                return Located(pose, t, passes, new_track=False, restart=settling)
            self._settle = 0
            kept = self._box if self._misses < self.patience else None
            self._box, self._last, self._step = None, None, 0  # lost, cut or jumped: look again at once
        else:
            kept = None
        boxes = search_boxes(frame_w, frame_h, self.in_w, self.in_h, self.fit, self.search)
        first = boxes[0] if (still or passes) else self.crop_box(frame_w, frame_h)
        pose, t = look(first)
        passes += 1
        box = self.box_for(pose)
        if box is None and still and self.still_search:  # a small or off-centre person: every tile
            found = []
            for tile in boxes[1:]:
                p, tt = look(tile)
                passes += 1
                if self.box_for(p) is not None:
                    found.append((p.score, p, tt))
            if found:
                _, pose, t = max(found, key=lambda f: f[0])
                box = self.box_for(pose)
        if box is None:
            if kept is not None:  # one bad frame (motion blur): keep the crop for the next
                self._box, self._misses = kept, self._misses + 1
            else:
                self._misses = 0
                self._step += 1
            return Located(pose, t, passes, new_track=True)
        pose, t, box, n = self._refined(look, pose, t, box, self.refine if still else self.refine_video)
        self._box, self._last, self._misses = box, pose, 0
        self._settle = self.refine if n == 0 and not still else 0
        return Located(pose, t, passes + n, new_track=True)

    def update(self, pose: Pose, transform: CropTransform) -> None:
        box = self.box_for(pose)
        if box is not None:
            self._box, self._misses = box, 0
        elif self._box is not None and self._misses < self.patience:
            self._misses += 1  # keep the last box for a frame or two (motion blur, a bad frame)
        elif self._box is not None:
            self._box, self._misses, self._step = None, 0, 0  # lost: whole frame next
        else:
            self._step += 1


def cut_from_config(cfg: Config) -> Optional[SceneCut]:
    """The scene-cut detector ``[tracking] cut`` asks for, or None (off, or tracking off)."""
    return SceneCut(cfg.tracking.cut) if cfg.tracking.enabled and cfg.tracking.cut > 0 else None


def from_config(cfg: Config, in_w: int, in_h: int, score_scale: float = 1.0) -> Optional[Tracker]:
    """The tracker a config asks for (``[tracking]``), or None when tracking is off.

    ``score_scale``: the model's (:attr:`edgepose.models.resolved.ResolvedModel.score_scale`).
    """
    t = cfg.tracking
    if not t.enabled:
        return None
    if 0 < t.search < MIN_SEARCH:
        from edgepose.core.errors import ConfigError
        raise ConfigError(f"tracking.search must be 0 (whole frame only) or from {MIN_SEARCH} to 1, not "
                          f"{t.search:g}: smaller tiles are thousands of crops the model sees upscaled")
    return Tracker(in_w, in_h, min_score=t.min_score, margin=t.margin, fit=cfg.model.fit,
                   search=t.search, score_scale=score_scale, refine=t.refine, refine_video=t.refine_video,
                   refine_tolerance=t.refine_tolerance, jump=t.jump, still_search=t.still_search)
