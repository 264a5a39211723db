"""One frame through the stages: preprocess -> engine -> decode -> smooth.

:class:`Pipeline` is built from injected parts, so tests and benchmarks can
swap any of them:

* a *box policy* (``locate(look, frame_w, frame_h, still) -> Located`` and ``reset()``):
  it decides which crops of a frame the model sees (``look(box)`` runs the model on one) and
  whether the frame starts a new track; :class:`WholeFrame` feeds the whole frame once;
  ``tracking.Tracker`` crops around the previous confident pose, refines stills and new tracks,
  and searches again at once when the crop loses the person;
* a *decoder* (see :mod:`edgepose.inference.decode`);
* a *smoother* (``__call__(pose, ts) -> Pose`` and ``reset()``), or ``None``;
* a *cut detector* (``__call__(frame) -> bool``: the frame is not the previous one's continuation,
  ``reset()``), or ``None``: a cut resets the box policy and the smoother before the frame is run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from edgepose.core.geometry import Box, CropTransform, whole_frame_box
from edgepose.core.pose import KEYPOINT_NAMES, Pose
from edgepose.inference.decode import Decoder, argmax_decoder, decode_pose
from edgepose.inference.tracking import Located, Look

if TYPE_CHECKING:  # the resolved model imports this package's engine and decoders
    from edgepose.core.config import Config
    from edgepose.core.people import Person
    from edgepose.inference.engine import Engine
    from edgepose.models.resolved import ResolvedModel


class BoxPolicy(Protocol):
    def locate(self, look: Look, frame_w: int, frame_h: int, still: bool = False) -> Located: ...

    def reset(self) -> None: ...


class Smoother(Protocol):
    def __call__(self, pose: Pose, ts: float) -> Pose: ...

    def reset(self) -> None: ...


class WholeFrame:
    """Always feed the whole frame (padded to the model's aspect ratio, or stretched)."""

    def __init__(self, in_w: int, in_h: int, fit: str = "pad"):
        self.in_w, self.in_h, self.fit = in_w, in_h, fit

    def crop_box(self, frame_w: int, frame_h: int) -> Box:
        return whole_frame_box(frame_w, frame_h, self.in_w, self.in_h, self.fit)

    def update(self, pose: Pose, transform: CropTransform) -> None:
        pass

    def locate(self, look: Look, frame_w: int, frame_h: int, still: bool = False) -> Located:
        pose, t = look(self.crop_box(frame_w, frame_h))
        return Located(pose, t, 1, new_track=False)

    def reset(self) -> None:
        pass


def crop_to_input(frame: np.ndarray, transform: CropTransform, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resample ``transform.box`` of the frame to the model input size (black outside the frame).

    One ``warpAffine`` with the exact half-pixel geometry of
    :mod:`edgepose.core.geometry`; when the box is shrunk by 4x or more the frame
    is first reduced by an integer-ish factor with area averaging (tracked
    exactly), so small inputs are not aliased.
    """
    fh, fw = frame.shape[:2]
    b = transform.box
    sx, sy = transform.scale
    src, kx, ky = frame, 1.0, 1.0
    f = int(min(sx, sy) // 2)
    if f >= 2:
        w2, h2 = max(1, round(fw / f)), max(1, round(fh / f))
        src = cv2.resize(frame, (w2, h2), interpolation=cv2.INTER_AREA)
        kx, ky = fw / w2, fh / h2
    # dst integer pixel x has centre x + 0.5 -> frame b.x + (x + 0.5) * sx -> src centre-indexed
    m = np.array([[sx / kx, 0.0, (b.x + 0.5 * sx) / kx - 0.5],
                  [0.0, sy / ky, (b.y + 0.5 * sy) / ky - 0.5]])
    return cv2.warpAffine(src, m, (transform.in_w, transform.in_h), dst=out,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def run_model(engine: Engine, frame: np.ndarray, box: Box, buf: np.ndarray, clock: Callable[[], float]
              ) -> Tuple[np.ndarray, CropTransform, float, float]:
    """The model's output for ``box`` of ``frame`` (resampled into ``buf``), the transform, and the clock
    after preprocessing and after inference: one look, for the single- and the multi-person pipeline."""
    in_w, in_h = engine.input_size
    transform = CropTransform(box, in_w, in_h)
    crop_to_input(frame, transform, out=buf)
    engine.set_input(buf)
    t1 = clock()
    engine.invoke()
    output = engine.output()
    return output, transform, t1, clock()


class FramePipeline(Protocol):
    """What the daemon and the API run a frame through: the single-person :class:`Pipeline` or the
    multi-person one (:class:`edgepose.inference.multipose.MultiPipeline`)."""

    engine: Engine
    names: Tuple[str, ...]

    def process(self, frame: np.ndarray, ts: float, still: bool = False) -> FrameResult: ...

    def reset(self) -> None: ...


@dataclass
class FrameResult:
    pose: Pose
    transform: CropTransform
    latency_ms: Dict[str, float]
    passes: int = 1  # model runs spent on the frame (stills are refined, a lost track searched again)
    new_track: bool = False  # not the previous frame's person continued (a still, a cut, a re-acquisition)
    # multi-person models (edgepose.inference.multipose): everyone, with ids; None for a single-person model
    people: Optional[Tuple[Person, ...]] = None


class Pipeline:
    def __init__(self, engine: Engine, decoder: Decoder = argmax_decoder, box_policy: Optional[BoxPolicy] = None,
                 smoother: Optional[Smoother] = None, names: Sequence[str] = KEYPOINT_NAMES,
                 threshold: float = 0.3, clock: Callable[[], float] = time.perf_counter,
                 cut: Optional[Callable[[np.ndarray], bool]] = None):
        self.engine = engine
        self.decoder = decoder
        in_w, in_h = engine.input_size
        self.box_policy = box_policy or WholeFrame(in_w, in_h)
        self.smoother = smoother
        k = engine.spec.num_keypoints  # channels of a heatmap model (a regression decoder checks its own count)
        heatmaps = getattr(decoder, "grid", None) is None
        self.names = tuple(names) if len(names) == k or not heatmaps else tuple(f"kp{i}" for i in range(k))
        self.threshold = threshold
        self.clock = clock
        self.cut = cut
        self._buf = np.empty((in_h, in_w, 3), dtype=np.uint8)

    def reset(self) -> None:
        """Forget the previous frames (tracked box, smoothing): the next frame is not their continuation."""
        self.box_policy.reset()
        if self.smoother is not None:
            self.smoother.reset()
        reset_cut = getattr(self.cut, "reset", None)
        if reset_cut is not None:
            reset_cut()

    def process(self, frame: np.ndarray, ts: float, still: bool = False) -> FrameResult:
        """Run one BGR frame; ``ts`` is its capture time (UNIX seconds).

        ``still``: a photo unrelated to the previous frame (image files): it is
        found on the whole frame (refined on the crop around the pose, searched on tiles when nobody
        is found: see :class:`edgepose.inference.tracking.Tracker`) and not smoothed with the previous one.
        """
        c = self.clock
        if still:
            self.reset()
        elif self.cut is not None and self.cut(frame):  # a scene cut: nothing carries over
            self.box_policy.reset()
            if self.smoother is not None:
                self.smoother.reset()
        spent = {"preprocess": 0.0, "infer": 0.0, "decode": 0.0}

        def look(box: Box) -> tuple[Pose, CropTransform]:
            t0 = c()
            heatmaps, transform, t1, t2 = run_model(self.engine, frame, box, self._buf, c)
            pose = decode_pose(heatmaps, transform, self.names, self.threshold, self.decoder)
            spent["preprocess"] += (t1 - t0) * 1e3
            spent["infer"] += (t2 - t1) * 1e3
            spent["decode"] += (c() - t2) * 1e3
            return pose, transform

        fh, fw = frame.shape[:2]
        found = self.box_policy.locate(look, fw, fh, still)
        pose = found.pose
        t2 = c()
        if self.smoother is not None and not still:
            # a new or lost person must not drag the next one's keypoints, nor a coarse first pose the refined one
            if found.new_track or found.restart or not pose.present:
                self.smoother.reset()
            if pose.present:
                pose = self.smoother(pose, ts)
        spent["decode"] += (c() - t2) * 1e3
        return FrameResult(pose, found.transform, spent, found.passes, found.new_track or still)


def from_config(cfg: Config, engine: Engine, model: ResolvedModel) -> Pipeline:
    """Build the pipeline the config asks for around ``engine`` running ``model`` (its resolved
    model: decoder and output geometry, keypoint names, score scale): decoder, box policy (tracking)
    and smoother."""
    from edgepose.core.errors import ConfigError
    from edgepose.inference import smoothing, tracking

    try:
        decoder = model.decoder(cfg.model.decoder)
    except ValueError as e:
        raise ConfigError(f"model.decoder: {e}") from None
    in_w, in_h = engine.input_size
    box_policy: BoxPolicy = (tracking.from_config(cfg, in_w, in_h, model.score_scale)
                             or WholeFrame(in_w, in_h, cfg.model.fit))
    return Pipeline(engine, decoder=decoder, box_policy=box_policy,
                    smoother=smoothing.from_config(cfg.smoothing), names=model.keypoint_names,
                    threshold=cfg.model.score_threshold * model.score_scale, cut=tracking.cut_from_config(cfg))
