"""Several people in one frame: what a multi-person model publishes (schema v2, docs/mqtt.md).

A :class:`Person` is one person's parts that were found, in frame pixels, with a persistent ``id``
(:mod:`edgepose.inference.people`).  :func:`lead_pose` is the v1 view of a frame of people: the
highest-scoring person as a full :class:`~edgepose.core.pose.Pose` (parts not found at (0, 0) with
score 0), so a schema-v1 subscriber still draws one person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

from edgepose.core.pose import Keypoint, Pose


@dataclass(frozen=True)
class Person:
    """One person: ``keypoints`` are the parts found (frame pixels); ``score`` the mean part score over
    all ``part_count`` parts of the model (a part not found counts 0), as a v1 pose score is."""

    id: int
    score: float
    keypoints: Tuple[Keypoint, ...]

    def box(self) -> Tuple[float, float, float, float]:
        """(x, y, width, height) of the parts found."""
        xs = [k.x for k in self.keypoints]
        ys = [k.y for k in self.keypoints]
        if not xs:
            return 0.0, 0.0, 0.0, 0.0
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)

    def to_dict(self) -> Dict[str, Any]:
        x, y, w, h = self.box()
        return {"id": int(self.id), "score": round(self.score, 4),
                "box": {"x": round(x, 2), "y": round(y, 2), "width": round(w, 2), "height": round(h, 2)},
                "keypoints": {k.name: {"x": round(k.x, 2), "y": round(k.y, 2), "score": round(k.score, 4)}
                              for k in self.keypoints}}


def lead_pose(people: Sequence[Person], names: Sequence[str]) -> Pose:
    """The highest-scoring person as a v1 pose over all ``names`` (present when anyone is there)."""
    if not people:
        return Pose(tuple(Keypoint(n, 0.0, 0.0, 0.0) for n in names), 0.0, False)
    best = max(people, key=lambda p: p.score)
    found = {k.name: k for k in best.keypoints}
    return Pose(tuple(found.get(n, Keypoint(n, 0.0, 0.0, 0.0)) for n in names), best.score, True)
