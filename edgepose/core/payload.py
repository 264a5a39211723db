"""Schema v1 payloads (one per frame) and the retained meta document.

The same dict goes to stdout (one JSON line) and to the MQTT pose topic.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from edgepose.core.pose import Pose, skeleton_for

SCHEMA_VERSION = 1
MAX_FRAME_SIDE = 16384  # what a subscriber accepts as a frame size before it allocates a canvas


def make_payload(device: str, seq: int, ts: float, frame_size: Tuple[int, int], model: str,
                 pose: Pose, latency_ms: Mapping[str, float]) -> Dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "seq": seq,
        "ts": round(ts, 6),
        "frame": {"width": int(frame_size[0]), "height": int(frame_size[1])},
        "model": model,
        "score": round(pose.score, 4),
        "present": bool(pose.present),
        "keypoints": pose.keypoint_dicts(),
        "latency_ms": {k: round(float(latency_ms.get(k, 0.0)), 3)
                       for k in ("capture", "preprocess", "infer", "decode", "total")},
    }


def make_meta(device: str, model: str, names: Sequence[str], input_size: Tuple[int, int],
              grid: Optional[Tuple[int, int]], version: str, skeleton: Optional[Sequence[Sequence[int]]] = None,
              family: str = "heatmap") -> Dict[str, Any]:
    """What a subscriber needs to draw poses without hard-coding anything.

    ``grid``: (width, height) of the heatmap, None for a model without one (``heatmap`` is then left
    out); ``skeleton``: the model's bones (default: those of the layout ``names`` is).
    """
    bones = skeleton_for(names) if skeleton is None else skeleton
    meta: Dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "device": device,
        "model": model,
        "family": family,
        "keypoints": list(names),
        "skeleton": [list(e) for e in bones if max(e) < len(names)],
        "input": {"width": int(input_size[0]), "height": int(input_size[1])},
    }
    if grid is not None:
        meta["heatmap"] = {"width": int(grid[0]), "height": int(grid[1])}
    meta.update({
        "coordinates": "frame pixels, origin top-left, x right, y down; pixel k covers [k, k+1)",
        "sides": "person-centric (right_* is the person's right)",
        "edgepose_version": version,
    })
    return meta


def pose_problem(doc: Any) -> Optional[str]:
    """Why a received pose payload cannot be drawn (None: it can).  Subscribers must not trust the wire:
    anyone who can publish to the broker can send anything on a pose topic."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(doc, dict):
        return "not a JSON object"
    frame = doc.get("frame", {})
    if not isinstance(frame, dict):
        return "frame is not an object"
    for key in ("width", "height"):
        side = frame.get(key, 1)
        if not isinstance(side, int) or isinstance(side, bool) or not 1 <= side <= MAX_FRAME_SIDE:
            return f"frame.{key} is not an integer from 1 to {MAX_FRAME_SIDE}"
    if "score" in doc and not number(doc["score"]):
        return "score is not a number"
    kps = doc.get("keypoints")
    if not isinstance(kps, list):
        return "keypoints is not a list"
    for kp in kps:
        if not isinstance(kp, dict) or not all(number(kp.get(k)) for k in ("x", "y", "score")):
            return "a keypoint lacks finite numbers x, y and score"
    return None
