"""Persistent person ids across frames (multi-person models).

Each frame's people are matched to the people of the previous frames by keypoint similarity (OKS:
``exp(-d^2 / (2 s^2 k^2))`` averaged over the parts both have, ``s^2`` the area of the box around
every part the track knows, ``k`` = :attr:`IdParams.kappa`), greedily, most similar pair first.  A
track's position is predicted with the person's velocity (the median of their parts' steps,
smoothed over frames; a poor match moves it less), so two people who cross are not swapped, and
the longer a track goes unseen the further from its prediction it may be found.  While one person
hides another the decoder may find one person made of both people's parts: a person nearly as similar
(:attr:`IdParams.merged`) to a track that found nobody as to their own is taken as both, and their
track coasts on its velocity instead of following the mix.  A track given a person in the last frame
(their own, or such a mix) is preferred by a factor :attr:`IdParams.keep` of similarity, so a mix
about as similar to either track does not flip between their ids from frame to frame.  A person that
matches no track gets a new id, and a track that matches nobody is kept for
:attr:`IdParams.max_missed` frames (a person hidden for a moment keeps their id), then retired.
Ids are never reused.  ``benchmarks/people_ids.py`` counts id swaps on a clip of real people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np


@dataclass(frozen=True)
class IdParams:
    max_missed: int = 10  # frames a person may be unseen before their id is retired
    min_similarity: float = 0.2  # OKS below which a person is not the track
    kappa: float = 0.1  # OKS falloff, as a fraction of the box size (about COCO's shoulders/hips)
    velocity_gain: float = 0.5  # weight of the newest step in a person's velocity (0..1; 1: last step only)
    merged: float = 0.5  # a person this similar (relative) to an unmatched track too is both: the track coasts
    keep: float = 1.1  # a track given a person last frame is this much more similar (factor): no id flips on a near tie


@dataclass
class _Track:
    id: int
    xy: np.ndarray  # (K, 2), NaN where unknown
    velocity: Optional[np.ndarray] = None  # (2,) the person's motion per frame; None until matched once
    missed: int = 0
    area: float = 1.0
    took: bool = False  # given a person last frame (their own, or one made of two)

    def predicted(self) -> np.ndarray:
        if self.velocity is None:
            return self.xy
        return np.asarray(self.xy + self.velocity * (self.missed + 1))

    def update(self, xy: np.ndarray, gain: float) -> None:
        """Matched to ``xy`` (NaN: parts not found) after ``missed`` frames unseen; ``gain``: the weight of
        this step in the velocity."""
        frames = self.missed + 1
        seen = ~np.isnan(xy[:, 0]) & ~np.isnan(self.xy[:, 0])
        if seen.any():
            # the person's step: the median of their parts' steps, so parts found or lost between the two
            # frames (an arm going behind someone) do not move the person
            step = np.median(xy[seen] - self.xy[seen], axis=0) / frames
            self.velocity = step if self.velocity is None else self.velocity + gain * (step - self.velocity)
        moved = self.xy + (0.0 if self.velocity is None else self.velocity * frames)
        # parts not found now keep their last known place, moved along with the person
        self.xy = np.where(np.isnan(xy[:, :1]), moved, xy)
        # the size of everyone the track knows (found now or carried), not of the few parts found now
        self.area, self.missed = _area(self.xy), 0


def _area(xy: np.ndarray) -> float:
    ok = ~np.isnan(xy[:, 0])
    if ok.sum() < 2:
        return 1.0
    span = xy[ok].max(axis=0) - xy[ok].min(axis=0)
    return float(max(span[0] * span[1], 1.0))


def similarity(a: np.ndarray, b: np.ndarray, area: float, kappa: float) -> float:
    """OKS of two (K, 2) keypoint sets (NaN: missing) at scale ``area``; 0 when they share no part."""
    both = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    if not both.any():
        return 0.0
    d2 = ((a[both] - b[both]) ** 2).sum(axis=1)
    return float(np.exp(-d2 / (2 * area * kappa ** 2)).mean())


@dataclass
class PeopleTracker:
    """Assigns ids to each frame's people (:meth:`assign`); ``reset`` forgets every track."""

    params: IdParams = IdParams()
    _tracks: List[_Track] = field(default_factory=list)
    _next: int = 1

    def reset(self) -> None:
        self._tracks = []

    def ids(self) -> Set[int]:
        """The ids alive now (found in the last frame, or unseen for at most ``max_missed`` frames)."""
        return {t.id for t in self._tracks}

    def assign(self, people: Sequence[np.ndarray]) -> List[int]:
        """The id of each person (a (K, 2) array of frame coordinates, NaN for parts not found)."""
        p = self.params
        people = [np.asarray(x, dtype=np.float64) for x in people]
        sims = np.zeros((len(people), len(self._tracks)))
        for j, t in enumerate(self._tracks):
            pred = t.predicted()
            spread = t.area * (1 + t.missed)  # a person unseen for longer may be further from the prediction
            for i, xy in enumerate(people):
                sims[i, j] = similarity(xy, pred, spread, p.kappa)
        ids = [0] * len(people)
        pairs: List[Tuple[int, int]] = []
        used_p, used_t = set(), set()
        # a track given a person last frame (their own, or one made of two) wins a near tie: while one
        # person hides another the decoder may find one person made of both for several frames, about as
        # similar to either track; its id should not flip on a hair's difference of the two predictions
        pref = sims * np.array([p.keep if t.took else 1.0 for t in self._tracks])
        for flat in np.argsort(-pref, axis=None, kind="stable"):
            i, j = divmod(int(flat), max(len(self._tracks), 1))
            if pref[i, j] < p.min_similarity:
                break
            if i in used_p or j in used_t or sims[i, j] < p.min_similarity:
                continue
            used_p.add(i)
            used_t.add(j)
            pairs.append((i, j))
            ids[i] = self._tracks[j].id
        for j, t in enumerate(self._tracks):
            t.took = j in used_t
        unmatched = [k for k in range(len(self._tracks)) if k not in used_t]
        merged = set()
        for i, j in pairs:
            # a person nearly as close to a track that found nobody this frame may be both people at once (one
            # hidden behind the other, their parts mixed): the id is the closer track's, but that track only
            # coasts on its velocity, so neither person's motion is taken from the mix
            if any(sims[i, k] >= p.merged * sims[i, j] for k in unmatched):
                merged.add(j)
                continue
            # a poor match (a person half hidden behind another, parts misplaced) moves the velocity less
            self._tracks[j].update(people[i], p.velocity_gain * float(sims[i, j]))
        for j, t in enumerate(self._tracks):
            if j not in used_t or j in merged:
                t.missed += 1
        self._tracks = [t for j, t in enumerate(self._tracks) if t.missed <= p.max_missed or j in merged]
        for i, xy in enumerate(people):
            if i not in used_p:
                t = _Track(self._next, xy.copy(), area=_area(xy))
                self._next += 1
                self._tracks.append(t)
                ids[i] = t.id
        return ids
