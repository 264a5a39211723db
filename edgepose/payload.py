"""Schema v1 payloads (one per frame) and the retained meta document.

The same dict goes to stdout (one JSON line) and to the MQTT pose topic.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

from .pose import SKELETON, Pose

SCHEMA_VERSION = 1


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
              grid: Tuple[int, int], version: str, skeleton=SKELETON) -> Dict[str, Any]:
    """What a subscriber needs to draw poses without hard-coding anything."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "model": model,
        "keypoints": list(names),
        "skeleton": [list(e) for e in skeleton if max(e) < len(names)],
        "input": {"width": int(input_size[0]), "height": int(input_size[1])},
        "heatmap": {"width": int(grid[0]), "height": int(grid[1])},
        "coordinates": "frame pixels, origin top-left, x right, y down; pixel k covers [k, k+1)",
        "sides": "person-centric (right_* is the person's right)",
        "edgepose_version": version,
    }
