"""Persistent person ids on a clip of real people who move, cross, and one of whom leaves and returns.

The clip (``clips.crossing_clip``): three real people cut out of the ``../shared/data/eval-multi``
photos by their COCO segmentation, pasted on a plain background with known keypoints in every
frame.  A walks right and B walks left, crossing (B in front) half way; C, further back, walks out
of the frame, stays out for ``--gone`` frames and walks back in.  The clip runs through the
pipeline ``edgepose run`` builds for the model (``PoseEstimator.from_config``: letterboxed frame,
PAF decoding, ids, smoothing), frame times at ``--fps``.

Each frame's people are matched to the true people (OKS of the COCO parts they share, the
tracker's own ``similarity`` at kappa 0.1 of the true person's size, greedy, >= ``--min-oks``);
then for each true person, a change of the id they carry is

* a **swap** when the new id was carried by another true person before (ids exchanged or stolen);
* a **fragment** when the id is new (``after leaving``: the person was out of view in between).

Printed: per person the frames in view, found and carrying their main id (continuity = those over
the frames found), the ids in order; the swap and fragment counts, and the goal line: swaps between
people who stay in view (issue 22: none).  Each clip also runs with ``[smoothing]`` off: per person
the mean distance of the parts found to the true ones and their jitter (the mean frame-to-frame
change of that offset: the motion removed), raw and smoothed per id; and a still photo (``--still``,
default ``calib/p2.jpg``, two people) as a noisy video: everyone's frame-to-frame jitter, smoothing
off and on.

    python3 benchmarks/people_ids.py [--model openpose-thin-fast-float32] [--frames 48] [--gone 16]
        [--threads 2] [--set tracking.max_missed=10 ...]
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import clips
import numpy as np

from edgepose.core import config as config_mod
from edgepose.core.people import Person
from edgepose.core.pose import COCO_KEYPOINT_NAMES
from edgepose.inference.estimator import PoseEstimator
from edgepose.inference.people import similarity


def coco_xy(person: Person) -> np.ndarray:
    """A person's parts as (17, 2) COCO-17 frame pixels, NaN where not found (the neck has no COCO part)."""
    by_name = {k.name: k for k in person.keypoints}
    return np.array([[by_name[n].x, by_name[n].y] if n in by_name else [np.nan, np.nan]
                     for n in COCO_KEYPOINT_NAMES])


@dataclass
class Track:
    """One true person's ids over the clip (0: not found in that frame, -1: out of view)."""

    name: str
    stays: bool
    ids: List[int] = field(default_factory=list)
    swaps: int = 0
    swaps_with_stayers: int = 0
    fragments: int = 0
    fragments_after_leaving: int = 0
    offsets: List[np.ndarray] = field(default_factory=list)  # per frame (17, 2) found - true, NaN if not both

    def error(self) -> float:
        """Mean distance (px) of the parts found to the true ones."""
        d = np.hypot(*np.stack(self.offsets).transpose(2, 0, 1)) if self.offsets else np.full(1, np.nan)
        return float(np.nanmean(d))

    def jitter(self) -> float:
        """Mean frame-to-frame change (px) of a part's offset from the truth (motion removed)."""
        o = np.stack(self.offsets) if self.offsets else np.full((2, 17, 2), np.nan)
        d = np.hypot(*np.diff(o, axis=0).transpose(2, 0, 1))
        return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")

    def in_view(self) -> int:
        return sum(i >= 0 for i in self.ids)

    def found(self) -> int:
        return sum(i > 0 for i in self.ids)

    def main_id(self) -> int:
        got = [i for i in self.ids if i > 0]
        return max(set(got), key=got.count) if got else 0

    def continuity(self) -> float:
        """Frames found carrying the main id over frames found."""
        return sum(i == self.main_id() for i in self.ids if i > 0) / max(self.found(), 1)

    def runs(self) -> str:
        """The ids in order, each with its frame count (``.`` not found, ``-`` out of view)."""
        out: List[List] = []
        for i in self.ids:
            s = "-" if i < 0 else "." if i == 0 else f"#{i}"
            if out and out[-1][0] == s:
                out[-1][1] += 1
            else:
                out.append([s, 1])
        return " ".join(f"{s}x{n}" for s, n in out)


def match(truth: np.ndarray, labelled: np.ndarray, found: Sequence[np.ndarray], min_oks: float) -> Dict[int, int]:
    """True person index -> found person index, greedily by OKS (most similar pair first)."""
    sims = np.zeros((len(truth), len(found)))
    for p, (xy, lab) in enumerate(zip(truth, labelled)):
        if lab.sum() < 2:
            continue
        gt = np.where(lab[:, None], xy, np.nan)
        size = float(np.ptp(gt[lab], axis=0).max())
        for q, f in enumerate(found):
            sims[p, q] = similarity(gt, f, size * size, 0.1)
    out: Dict[int, int] = {}
    for flat in np.argsort(-sims, axis=None, kind="stable"):
        p, q = divmod(int(flat), max(len(found), 1))
        if sims[p, q] < min_oks:
            break
        if p not in out and q not in out.values():
            out[p] = q
    return out


def score(clip: clips.PeopleClip, frames: Sequence[Sequence[Person]], min_oks: float = 0.3) -> List[Track]:
    """Each true person's ids over the clip, with swaps and fragments counted (see the module doc)."""
    tracks = [Track(n, bool(s)) for n, s in zip(clip.names, clip.stays)]
    owner: Dict[int, int] = {}  # id -> the true person who first carried it
    last: List[Optional[int]] = [None] * len(tracks)  # last id each person carried
    left = [False] * len(tracks)  # out of view since their last id
    for t, people in enumerate(frames):
        m = match(clip.gt[:, t], clip.labelled[:, t], [coco_xy(p) for p in people], min_oks)
        for p, tr in enumerate(tracks):
            if not clip.in_view[p, t]:
                tr.ids.append(-1)
                tr.offsets.append(np.full((17, 2), np.nan))
                left[p] = True
                continue
            pid = people[m[p]].id if p in m else 0
            tr.ids.append(pid)
            off = np.full((17, 2), np.nan)
            if p in m:
                off = np.where(clip.labelled[p, t][:, None], coco_xy(people[m[p]]) - clip.gt[p, t], np.nan)
            tr.offsets.append(off)
            if not pid:
                continue
            new = pid not in owner
            first = owner.setdefault(pid, p)
            if last[p] is not None and pid != last[p]:
                if first != p:
                    tr.swaps += 1
                    tr.swaps_with_stayers += int(tr.stays and tracks[first].stays)
                elif new:  # (back to an id of their own after carrying another's: the swap was counted)
                    tr.fragments += 1
                    tr.fragments_after_leaving += int(left[p])
            elif last[p] is None and first != p:  # a person's first id was someone else's
                tr.swaps += 1
                tr.swaps_with_stayers += int(tr.stays and tracks[first].stays)
            last[p], left[p] = pid, False
    return tracks


def run_clip(estimator: PoseEstimator, clip: clips.PeopleClip) -> List[Sequence[Person]]:
    """Every frame's people through the estimator's pipeline (a video: frame times at the clip's fps)."""
    estimator.reset()
    out = []
    for t, frame in enumerate(clip.frames):
        people = estimator.process(frame, ts=t / clip.fps).people
        out.append(people or ())
    return out


def still_jitter(estimator: PoseEstimator, photo: np.ndarray, frames: int, fps: float, noise: float = 6.0,
                 seed: int = 0) -> Tuple[float, int]:
    """A still photo as a video with fresh sensor noise (Gaussian, ``noise`` DN) in every frame: the mean
    frame-to-frame step (px) of every person's parts (by id, from the fifth frame on), and the ids seen."""
    rng = np.random.default_rng(seed)
    estimator.reset()
    seen: Dict[Tuple[int, str], List[Tuple[int, float, float]]] = {}
    for f in range(frames):
        frame = np.clip(photo + rng.normal(0, noise, photo.shape), 0, 255).astype(np.uint8)
        for p in estimator.process(frame, ts=f / fps).people or ():
            for k in p.keypoints:
                seen.setdefault((p.id, k.name), []).append((f, k.x, k.y))
    steps = [np.hypot(x1 - x0, y1 - y0) for seq in seen.values()
             for (f0, x0, y0), (f1, x1, y1) in zip(seq[4:], seq[5:]) if f1 == f0 + 1]
    return float(np.mean(steps)), len({pid for pid, _ in seen})


def estimator_for(model: str, threads: int, settings: Sequence[str] = ()) -> PoseEstimator:
    """The estimator ``edgepose run --model MODEL --threads N`` builds, with ``--set section.key=value``
    overrides (no config file)."""
    overrides: Dict[str, Dict[str, str]] = {"model": {"name": model}, "runtime": {"threads": str(threads)}}
    for s in settings:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = value
    cfg = config_mod.load(None, {})
    config_mod.apply_mapping(cfg, overrides, "--set", from_text=True)
    return PoseEstimator.from_config(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="openpose-thin-fast-float32")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--gone", type=int, default=16, help="frames C spends out of view")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-oks", type=float, default=0.3, help="OKS needed to match a found person to a true one")
    ap.add_argument("--casts", nargs="+", default=["0,1,2", "3,4,5", "6,7,8"], metavar="A,B,C",
                    help="which clips.figures() play A, B and C; one clip per cast")
    ap.add_argument("--still", default=str(clips.CALIB / "p2.jpg"),
                    help="also: this photo held still with sensor noise, jitter of everyone with smoothing off/on")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config override, e.g. tracking.max_missed=20 (repeatable)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    est = estimator_for(args.model, args.threads, args.set)
    plain = estimator_for(args.model, args.threads, [*args.set, "smoothing.enabled=false"])
    cast_of = clips.figures()
    print(f"model {args.model}, {args.threads} threads; settings: {' '.join(args.set) or 'defaults'}")
    tracks: List[Track] = []
    raws: List[Track] = []  # the same clips with [smoothing] off
    for c in args.casts:
        clip = clips.crossing_clip(frames=args.frames, gone=args.gone, fps=args.fps,
                                   cast=[cast_of[int(i)] for i in c.split(",")])
        t0 = time.perf_counter()
        frames = run_clip(est, clip)
        spent = (time.perf_counter() - t0) / len(clip.frames) * 1e3
        raw = score(clip, run_clip(plain, clip), args.min_oks)
        h, w = clip.frames[0].shape[:2]
        print(f"\ncast {c}: {len(clip.frames)} frames {w}x{h} at {args.fps:g} fps, A and B cross, C out of view for "
              f"{args.gone} frames; {spent:.1f} ms/frame")
        print(f"{'person':<8}{'figure':<22}{'stays':>6}{'in view':>8}{'found':>7}{'main id':>8}{'continuity':>11}"
              f"{'swaps':>6}{'fragments':>11}  {'error px raw/smoothed':>22} {'jitter px raw/smoothed':>23}  ids")
        for label, tr, r in zip("ABC", score(clip, frames, args.min_oks), raw):
            frag = f"{tr.fragments}" + (f" ({tr.fragments_after_leaving} after leaving)" if tr.fragments else "")
            print(f"{label:<8}{tr.name:<22}{'yes' if tr.stays else 'no':>6}{tr.in_view():>8}{tr.found():>7}"
                  f"{'#' + str(tr.main_id()):>8}{tr.continuity():>11.3f}{tr.swaps:>6}  {frag:<9}  "
                  f"{r.error():>13.2f} / {tr.error():<6.2f} {r.jitter():>14.2f} / {tr.jitter():<6.2f}  {tr.runs()}")
            tracks.append(tr)
            raws.append(r)
    print()
    print(f"smoothing per id, all people: error vs truth {np.mean([r.error() for r in raws]):.2f} px raw, "
          f"{np.mean([t.error() for t in tracks]):.2f} px smoothed; frame-to-frame jitter "
          f"{np.mean([r.jitter() for r in raws]):.2f} px raw, {np.mean([t.jitter() for t in tracks]):.2f} px smoothed")
    if args.still:
        import cv2

        photo = cv2.imread(args.still)
        (raw_j, raw_n), (sm_j, sm_n) = (still_jitter(e, photo, 30, args.fps) for e in (plain, est))
        print(f"still photo {args.still} (30 frames, noise 6 DN): {sm_n} ids; jitter {raw_j:.2f} px raw, "
              f"{sm_j:.2f} px smoothed per id ({raw_j / max(sm_j, 1e-9):.1f}x lower)")
    swaps = sum(t.swaps for t in tracks)
    stayers = sum(t.swaps_with_stayers for t in tracks)
    frags = sum(t.fragments for t in tracks)
    after = sum(t.fragments_after_leaving for t in tracks)
    print(f"id swaps: {swaps}; fragments: {frags} ({after} after leaving the view, {frags - after} in view)")
    print(f"goal (issue 22): id swaps between people who stay in view = {stayers} (goal 0): "
          f"{'met' if stayers == 0 else 'NOT met'}")


if __name__ == "__main__":
    main()
