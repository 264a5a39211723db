"""`edgepose eval` for multi-person models: COCO keypoint AP/AR with pycocotools on ../shared/data/eval-multi."""

from __future__ import annotations

import json

import pytest

from edgepose.core.people import Person
from edgepose.core.pose import Keypoint
from edgepose.tools import evaluate_multi as em

from conftest import SHARED, error_lines, run_cli

pytest.importorskip("pycocotools", reason="the test extra is not installed: pip install -e '.[test]'")

EVAL_MULTI = SHARED / "data" / "eval-multi" / "annotations.json"


def gt_as_detections(gt, shift=0.0):
    return [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
             "keypoints": [v + (shift if i % 3 < 2 and a["keypoints"][i - i % 3 + 2] else 0)
                           for i, v in enumerate(a["keypoints"])]}
            for a in gt["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")]


def test_ground_truth_submitted_as_detections_scores_ap_1():
    gt = em.load_coco(EVAL_MULTI)
    assert len(gt["images"]) == 80
    m = em.coco_keypoint_ap(gt, gt_as_detections(gt))
    assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)
    # and the measure can fail: keypoints 12 px off lower it
    assert em.coco_keypoint_ap(gt, gt_as_detections(gt, 12.0))["AP"] < 0.8
    assert em.coco_keypoint_ap(gt, [])["AP"] == 0.0


def test_openpose_parts_map_to_coco_by_name_and_the_neck_is_dropped():
    p = Person(1, 0.5, (Keypoint("neck", 10, 10, 0.9), Keypoint("left_eye", 20.5, 30.5, 0.8),
                        Keypoint("right_ankle", 5.5, 99.5, 0.7)))
    names = em.load_coco(EVAL_MULTI)["categories"][0]["keypoints"]
    [d] = em.to_detections([p], 42, names)
    kp = d["keypoints"]
    assert len(kp) == 51 and d["image_id"] == 42 and d["score"] == 0.5
    assert kp[3:6] == [20.0, 30.0, 1]  # left_eye is COCO's 1; continuous pixels -> COCO pixel indices
    assert kp[16 * 3:] == [5.0, 99.0, 1]  # right_ankle is COCO's 16
    assert sum(kp[2::3]) == 2  # the neck went nowhere
    assert em.to_detections([Person(2, 0.4, (Keypoint("neck", 1, 1, 1),))], 1, names) == []


def test_bad_annotations_are_one_clear_error(tmp_path, edgepose_env):
    bad = tmp_path / "a.json"
    bad.write_text('{"images": []}')
    r = run_cli(["eval", "--model", "cpm", "--annotations", bad], edgepose_env)
    assert r.returncode != 0 and len(error_lines(r.stderr)) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_eval_of_the_real_model_on_a_subset(built, quant_env, tmp_path):
    path, _, _ = built("openpose-thin", "float32", variant="openpose-thin-float32")
    gt = json.loads(EVAL_MULTI.read_text())
    keep = {i["id"] for i in gt["images"][:8]}
    sub = dict(gt, images=[i for i in gt["images"] if i["id"] in keep],
               annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(sub))
    r = run_cli(["eval", "--model", path, "--annotations", ann, "--images", EVAL_MULTI.parent, "--json"], quant_env,
                timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout)
    assert m["family"] == "paf" and m["images"] == 8 and m["detections"] > 0
    assert 0.2 < m["AP"] <= 1.0 and 0.2 < m["AR"] <= 1.0  # a working decoder, not an absolute claim
