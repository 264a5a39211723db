"""The multi-person pipeline (``paf`` family): whole frame letterboxed -> model -> people with ids.

The frame is fed whole, its aspect ratio kept (``fit = "pad"``: black bars, not stretched, so a
portrait frame keeps its people's legs), decoded by :mod:`edgepose.inference.paf` on the model's
native grid, mapped back to frame pixels through the same :class:`CropTransform`, and given
persistent ids (:mod:`edgepose.inference.people`), and smoothed over time per id (one One Euro filter
per person, :mod:`edgepose.inference.smoothing`: made when an id first appears, dropped when it is
retired, so a person's keypoints never blend with another's; stills are not smoothed, and without
tracking there are no ids to smooth by).  Same interface as
:class:`edgepose.inference.pipeline.Pipeline`; its :class:`FrameResult` carries ``people`` as well
as ``pose`` (the highest-scoring person, the v1 view).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgepose.core.geometry import CropTransform
from edgepose.core.people import Person, lead_pose
from edgepose.core.pose import Keypoint
from edgepose.inference import paf, smoothing
from edgepose.inference.people import IdParams, PeopleTracker
from edgepose.inference.pipeline import FrameResult, WholeFrame, run_model
from edgepose.inference.smoothing import OneEuroSmoother

if TYPE_CHECKING:
    from edgepose.core.config import Config
    from edgepose.inference.engine import Engine
    from edgepose.models.resolved import ResolvedModel


def to_frame(found: Sequence[paf.GridPerson], transform: CropTransform, grid: tuple) -> List[np.ndarray]:
    """Each person's (K, 2) grid coordinates in frame pixels (NaN stays NaN)."""
    return [transform.heatmap_to_frame(p.xy, grid[0], grid[1]) for p in found]


DEFAULT_PARAMS = paf.PafParams()  # frozen: one shared default


class MultiPipeline:
    def __init__(self, engine: Engine, names: Sequence[str], params: paf.PafParams = DEFAULT_PARAMS,
                 tracker: Optional[PeopleTracker] = None, fit: str = "pad",
                 clock: Callable[[], float] = time.perf_counter,
                 smoother: Optional[Callable[[], OneEuroSmoother]] = None):
        self.engine = engine
        self.names = tuple(names)
        self.params = params
        self.tracker = tracker
        self.smoother = smoother  # makes one smoother per person id (needs the tracker's ids)
        self._smoothers: Dict[int, OneEuroSmoother] = {}
        self.fit = fit
        self.clock = clock
        in_w, in_h = engine.input_size
        self.whole = WholeFrame(in_w, in_h, fit)  # letterboxed ("pad") unless fit = "stretch"
        self._buf = np.empty((in_h, in_w, 3), dtype=np.uint8)

    def reset(self) -> None:
        if self.tracker is not None:
            self.tracker.reset()
        self._smoothers.clear()

    def smoothed(self, ids: Sequence[int], found: Sequence[paf.GridPerson], frame_xy: List[np.ndarray],
                 ts: float) -> List[np.ndarray]:
        """Each person's keypoints through their own id's smoother (made on a new id; the smoothers of
        retired ids dropped)."""
        if self.smoother is None or self.tracker is None:
            return frame_xy
        live = self.tracker.ids()
        self._smoothers = {i: f for i, f in self._smoothers.items() if i in live}
        out = []
        for pid, p, xy in zip(ids, found, frame_xy):
            f = self._smoothers.get(pid)
            if f is None:
                f = self._smoothers[pid] = self.smoother()
            out.append(f.filter(xy, p.scores, ts))
        return out

    def people(self, output: np.ndarray, transform: CropTransform, still: bool = False,
               ts: float = 0.0) -> List[Person]:
        """The people in one model output, in frame pixels, with ids (smoothed per id unless ``still``)."""
        grid = (output.shape[-2], output.shape[-3])
        found = paf.decode_people(output, self.params)
        frame_xy = to_frame(found, transform, grid)
        # without tracking (or for a still photo) ids number the people of this frame, best first
        tracker = None if still else self.tracker
        ids = tracker.assign(frame_xy) if tracker is not None else list(range(1, len(found) + 1))
        if tracker is not None:
            frame_xy = self.smoothed(ids, found, frame_xy, ts)
        k = len(self.names)
        out = []
        for pid, p, xy in zip(ids, found, frame_xy):
            kps = tuple(Keypoint(self.names[j], float(xy[j, 0]), float(xy[j, 1]), float(p.scores[j]))
                        for j in range(k) if p.found[j])
            out.append(Person(pid, float(p.scores.sum() / k), kps))
        return out

    def process(self, frame: np.ndarray, ts: float, still: bool = False) -> FrameResult:
        c = self.clock
        t0 = c()
        if still:
            self.reset()
        fh, fw = frame.shape[:2]
        output, transform, t1, t2 = run_model(self.engine, frame, self.whole.crop_box(fw, fh), self._buf, c)
        people = self.people(output, transform, still, ts)
        t3 = c()
        return FrameResult(lead_pose(people, self.names), transform,
                           {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3},
                           people=tuple(people))


def from_config(cfg: Config, engine: Engine, model: ResolvedModel) -> MultiPipeline:
    """The multi-person pipeline for ``model`` (a ``paf`` resolved model): ``model.min_parts`` and
    ``model.min_person_score`` drop people; ``tracking.enabled``: persistent ids, retired after
    ``tracking.max_missed`` frames unseen; ``[smoothing]``: each id's keypoints smoothed (with tracking)."""
    params = paf.PafParams(min_parts=cfg.model.min_parts, min_score=cfg.model.min_person_score)
    tracker = PeopleTracker(IdParams(max_missed=cfg.tracking.max_missed)) if cfg.tracking.enabled else None
    return MultiPipeline(engine, model.keypoint_names, params, tracker=tracker, fit=cfg.model.fit,
                         smoother=smoothing.factory(cfg.smoothing))
