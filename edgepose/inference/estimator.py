"""``PoseEstimator``: the public Python API, and what ``edgepose run`` itself runs.

One object holds the resolved model, the engine and the pipeline (decoder, tracking, smoothing)
built from a config; the daemon builds it with :meth:`PoseEstimator.from_config`, a program with
keyword options::

    from edgepose import PoseEstimator

    estimator = PoseEstimator("movenet-lightning", threads=2)
    pose = estimator(frame_bgr)          # an edgepose.core.pose.Pose, keypoints in frame pixels
    for kp in pose.keypoints:
        print(kp.name, kp.x, kp.y, kp.score)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edgepose.core import config as config_mod
from edgepose.core.pose import Pose
from edgepose.inference import multipose
from edgepose.inference import pipeline as pipeline_mod
from edgepose.inference.engine import Engine, load_runtime
from edgepose.models import registry
from edgepose.models.resolved import ResolvedModel, resolve_model


def build_pipeline(cfg: config_mod.Config, engine: Engine, model: ResolvedModel) -> pipeline_mod.FramePipeline:
    """The pipeline the config asks for around ``engine`` running ``model``: the multi-person one for a
    ``paf`` model (FrameResult.people too), else the single-person one; the daemon, the API, eval and
    calibrate-fps all build theirs here."""
    if model.family.kind == "paf":
        return multipose.from_config(cfg, engine, model)
    return pipeline_mod.from_config(cfg, engine, model)


class PoseEstimator:
    """Poses from BGR frames with one pose model.

    ``model``: a catalogue name (``cpm``, ``hourglass``, ``movenet-lightning``, ...) or a path to a
    .tflite file; ``family``: ``auto`` or a family for a file that is not recognised (see
    :mod:`edgepose.models.resolved`).  ``threads`` (0: all cores), ``xnnpack``, ``backend``: the
    interpreter.  ``tracking``: crop the next frame around the last pose (for a video; each call
    then continues the previous one); ``smoothing``: One Euro filtering over time.
    ``model_dir``/``mirror``: the model cache and where to fetch models from (defaults as for
    ``edgepose run``: $EDGEPOSE_MODEL_DIR, $EDGEPOSE_MODEL_MIRROR, ...).  ``options``: any other
    ``[model]`` key of the config (``decoder``, ``score_threshold``, ``fit``, ``min_parts``,
    ``min_person_score``).  A bad value raises
    :class:`edgepose.core.errors.ConfigError`; a missing or broken model another
    :class:`~edgepose.core.errors.EdgeposeError`.
    """

    def __init__(self, model: Union[str, Path] = "cpm", *, family: str = "auto", threads: int = 0,
                 xnnpack: bool = True, backend: str = "auto", tracking: bool = True, smoothing: bool = True,
                 model_dir: Union[str, Path, None] = None, mirror: Optional[str] = None, **options: Any):
        overrides: Dict[str, Dict[str, Any]] = {
            "model": dict(options, name=str(model), family=family),
            "runtime": {"threads": threads, "xnnpack": xnnpack, "backend": backend},
            "tracking": {"enabled": tracking}, "smoothing": {"enabled": smoothing}}
        if model_dir is not None:
            overrides["model"]["dir"] = str(model_dir)
        if mirror is not None:
            overrides["model"]["mirror"] = mirror
        cfg = config_mod.Config()  # no config file: the arguments are the whole configuration
        mirror_env = {k: v for k, v in os.environ.items() if k == "EDGEPOSE_MODEL_MIRROR"}
        config_mod.apply_mapping(cfg, config_mod.env_mapping(mirror_env), "environment", from_text=True)
        config_mod.apply_mapping(cfg, overrides, "PoseEstimator")
        self._build(cfg)

    @classmethod
    def from_config(cls, cfg: config_mod.Config,
                    progress: Optional[registry.Progress] = None) -> PoseEstimator:
        """The estimator a config asks for (``[model]``, ``[runtime]``, ``[tracking]``, ``[smoothing]``)."""
        self = cls.__new__(cls)
        self._build(cfg, progress)
        return self

    def _build(self, cfg: config_mod.Config, progress: Optional[registry.Progress] = None) -> None:
        runtime = load_runtime(cfg.runtime.backend)  # one runtime reads the model's signature and runs it
        self.model: ResolvedModel = resolve_model(cfg.model.name, cfg.model.family,
                                                  cache_dir=Path(cfg.model.dir) if cfg.model.dir else None,
                                                  mirror=cfg.model.mirror, progress=progress, runtime=runtime)
        self.engine = Engine(self.model, threads=cfg.runtime.threads, xnnpack=cfg.runtime.xnnpack, runtime=runtime)
        self.pipeline: pipeline_mod.FramePipeline = build_pipeline(cfg, self.engine, self.model)

    def process(self, frame: np.ndarray, ts: Optional[float] = None,
                still: bool = False) -> pipeline_mod.FrameResult:
        """The pose with its crop transform and stage latencies (what the daemon publishes)."""
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.size):
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"PoseEstimator takes a BGR image, an H x W x 3 numpy array (as cv2.imread gives), "
                             f"not {shape}")
        return self.pipeline.process(frame, time.time() if ts is None else ts, still=still)

    def estimate(self, frame: np.ndarray, ts: Optional[float] = None, still: bool = False) -> Pose:
        """The pose in a BGR frame (H x W x 3 uint8), keypoints in frame pixels.

        ``ts``: the frame's time in seconds (default now; smoothing uses it); ``still``: a photo
        unrelated to the previous frame (found on the whole frame, not smoothed)."""
        return self.process(frame, ts, still).pose

    __call__ = estimate

    def reset(self) -> None:
        """Forget the previous frames (tracked box, smoothing)."""
        self.pipeline.reset()
