"""``edgepose eval`` for multi-person models (family ``paf``): COCO keypoint AP/AR with pycocotools.

Every image of a COCO keypoint file is run whole through the multi-person pipeline (letterboxed,
as ``edgepose run`` does); each person found becomes a COCO detection: OpenPose's 18 parts mapped
to COCO-17 **by name** (``neck`` has no COCO counterpart and is dropped), parts not found at
visibility 0, the person's score as the detection score.  pycocotools' ``COCOeval`` (OKS with
COCO's per-keypoint sigmas) gives AP, AP50, AP75, AP medium/large and AR.  Coordinates: COCO's
keypoints are pixel indices, edgepose's continuous pixels (pixel k covers [k, k+1)), so detections
are moved by -0.5.

pycocotools is in the ``test`` extra (``pip install 'edgepose[test]'``); it is imported only here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from edgepose.core.errors import InputMissingError, RuntimeMissingError, UsageError
from edgepose.core.people import Person

log = logging.getLogger(__name__)

# COCOeval's stats, in its order (keypoints)
STATS = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


def _cocotools():
    try:
        from pycocotools.coco import COCO  # noqa: PLC0415
        from pycocotools.cocoeval import COCOeval  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeMissingError(f"COCO keypoint AP needs pycocotools ({e}): pip install 'edgepose[test]' "
                                  "or pip install pycocotools") from None
    return COCO, COCOeval


def load_coco(path: Union[str, Path]) -> Dict[str, Any]:
    """A COCO keypoint file as a dict (one clear error when it is missing or not one)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise InputMissingError(f"cannot read annotations {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(f"annotations {path} are not JSON: {e}") from None
    if not (isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations"))
            and doc.get("categories") and "keypoints" in doc["categories"][0]):
        raise UsageError(f"annotations {path} are not a COCO keypoint file (images, annotations, "
                         "categories with keypoints)")
    return doc


def to_detections(people: Sequence[Person], image_id: int, coco_names: Sequence[str]) -> List[Dict[str, Any]]:
    """COCO keypoint detections of ``people`` (parts matched to ``coco_names`` by name)."""
    out = []
    for p in people:
        kp = np.zeros((len(coco_names), 3))
        by_name = {k.name: k for k in p.keypoints}
        for j, n in enumerate(coco_names):
            if n in by_name:
                kp[j] = (by_name[n].x - 0.5, by_name[n].y - 0.5, 1)
        if kp[:, 2].any():
            out.append({"image_id": int(image_id), "category_id": 1, "keypoints": kp.ravel().round(2).tolist(),
                        "score": float(p.score)})
    return out


def coco_keypoint_ap(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """pycocotools' keypoint AP/AR of ``detections`` against ``ground_truth`` (a COCO dict)."""
    COCO, COCOeval = _cocotools()
    if not detections:
        return {k: 0.0 for k in STATS}
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # pycocotools prints its progress and table
        gt = COCO()
        gt.dataset = json.loads(json.dumps(ground_truth))
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.imgIds = sorted({int(d["image_id"]) for d in detections} | set(gt.getImgIds()))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools: %s", chatter.getvalue())
    return {k: float(v) for k, v in zip(STATS, ev.stats)}


def evaluate_people(pipeline, ground_truth: Mapping[str, Any], images_dir: Path) -> Dict[str, Any]:
    """Run ``pipeline`` (a :class:`~edgepose.inference.multipose.MultiPipeline`) on every image of
    ``ground_truth`` and score it; the metrics plus counts of images, people annotated and found."""
    import cv2  # noqa: PLC0415

    coco_names = list(ground_truth["categories"][0]["keypoints"])
    dets: List[Dict[str, Any]] = []
    for img in ground_truth["images"]:
        path = images_dir / img["file_name"]
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputMissingError(f"image {path} of the annotations cannot be read")
        result = pipeline.process(frame, 0.0, still=True)
        dets += to_detections(result.people or (), img["id"], coco_names)
    metrics: Dict[str, Any] = dict(coco_keypoint_ap(ground_truth, dets))
    metrics.update(images=len(ground_truth["images"]), detections=len(dets),
                   annotated=sum(1 for a in ground_truth["annotations"] if a.get("num_keypoints", 0) > 0))
    return metrics


def format_metrics(metrics: Mapping[str, Any], title: str) -> str:
    lines = [title, f"  {metrics['images']} images, {metrics['annotated']} people annotated, "
                    f"{metrics['detections']} found"]
    lines += [f"  {k:<10} {100 * metrics[k]:5.1f}" for k in STATS]
    return "\n".join(lines) + "\n"
