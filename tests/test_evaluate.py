"""`edgepose eval`: metrics on hand-made annotations, name mapping, bad input, a real run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import EVAL_ANN, MIRROR, run_cli
from edgepose.evaluate import AnnotationError, crop_box, load_annotations, score
from edgepose.errors import InputMissingError
from edgepose.geometry import Box

NAMES = ("head_top", "neck", "wrist")


def test_metrics_on_hand_made_numbers():
    gt = np.array([[[0, 0], [0, 10], [50, 50]], [[0, 0], [0, 20], [5, 5]]], float)
    pred = gt.copy()
    pred[0, 0] += [4, 0]   # 4 px: box 100 -> 0.04: pck@0.05 yes; head 10 -> 0.5*10=5: pckh yes
    pred[0, 2] += [6, 0]   # 0.06: pck@0.1 yes, @0.05 no, pckh no (6 > 5)
    pred[1, 1] += [0, 30]  # 0.3 of 100: miss everywhere
    vis = np.array([[True, True, True], [True, True, False]])
    m = score(pred, gt, vis, np.array([100.0, 100.0]), NAMES)
    assert m["pck@0.1"] == pytest.approx(4 / 5)
    assert m["pck@0.05"] == pytest.approx(3 / 5)
    assert m["pckh@0.5"] == pytest.approx(3 / 5)  # hits: p0 head, p0 neck, p1 head
    assert m["median_error"] == pytest.approx(0.04)  # of 0, 0, 0.04, 0.06, 0.3
    assert m["per_joint"]["wrist"] == {"count": 1, "pck@0.1": 1.0, "pck@0.05": 0.0, "median_error": 0.06}
    assert m["per_joint"]["neck"]["pck@0.1"] == 0.5


def test_pckh_is_none_without_head_and_neck():
    gt = np.zeros((1, 3, 2))
    m = score(gt, gt, np.array([[False, True, True]]), np.array([10.0]), NAMES)
    assert m["pckh@0.5"] is None and m["pck@0.1"] == 1.0


def write_coco(tmp_path, names, kps, bbox=(10, 20, 40, 80)):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((120, 100, 3), np.uint8))
    data = {"categories": [{"id": 1, "name": "person", "keypoints": list(names)}],
            "images": [{"id": 7, "file_name": "a.jpg"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": list(bbox),
                             "keypoints": kps}]}
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p, img_dir


def test_keypoints_map_by_name(tmp_path):
    # a COCO-17-like subset in another order, with a name the model does not have
    names = ["nose", "Left-Wrist", "right_shoulder"]
    p, imgs = write_coco(tmp_path, names, [1, 2, 2, 30, 40, 2, 15, 16, 1])
    [s] = load_annotations(p, imgs)
    assert s.image_path == imgs / "a.jpg" and s.box == Box(10, 20, 40, 80) and s.box_size == 80
    assert s.visible.sum() == 2
    # pixel indices by default: moved to the pixel centre
    assert s.keypoints[7].tolist() == [30.5, 40.5] and s.visible[7]  # left_wrist
    assert s.keypoints[2].tolist() == [15.5, 16.5] and s.visible[2]  # right_shoulder
    [c] = load_annotations(p, imgs, keypoint_coords="continuous")
    assert c.keypoints[7].tolist() == [30, 40] and c.keypoints[2].tolist() == [15, 16]
    assert not c.keypoints[0].any()  # not labelled in the file: stays 0 either way
    with pytest.raises(ValueError, match="keypoint_coords"):
        load_annotations(p, imgs, keypoint_coords="pixels")


def test_bad_annotation_files(tmp_path):
    with pytest.raises(InputMissingError):
        load_annotations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_annotations(bad)
    p, _ = write_coco(tmp_path, ["foo", "bar"], [1, 2, 2, 3, 4, 2])
    with pytest.raises(AnnotationError, match="none of its keypoint names"):
        load_annotations(p)
    p, _ = write_coco(tmp_path, ["neck"], [1, 2, 2, 3, 4, 2])
    with pytest.raises(AnnotationError, match="has 2 keypoints"):
        load_annotations(p)
    # wrong shapes and types anywhere in the file: one AnnotationError (65) naming the problem, never
    # an AttributeError/TypeError/ValueError traceback
    p, _ = write_coco(tmp_path, ["neck"], [1, 2, 2])
    good = json.loads(p.read_text())
    cases = [
        ({"annotations": [5]}, "annotation #0 is malformed"),
        ({"annotations": [[1, 2, 3]]}, "annotation #0 is malformed"),
        ({"annotations": []}, "has no annotations"),
        ({"categories": [1]}, "must be lists of objects"),
        ({"images": "a.jpg"}, "must be lists of objects"),
        ({"images": [{"id": 7, "file_name": 5}]}, "file_name of image 7"),
        ({"images": [{"id": 7, "file_name": None}]}, "file_name of image 7"),
        ({"annotations": [dict(good["annotations"][0], id="x1")]}, "annotation #0 is malformed"),
        ({"annotations": [dict(good["annotations"][0], bbox=[1, 1, float("nan"), 100])]}, "non-finite bbox"),
        ({"annotations": [dict(good["annotations"][0], bbox=[1, 1, 1e309, 100])]}, "non-finite bbox"),
        ({"annotations": [dict(good["annotations"][0], keypoints=[float("nan"), 2, 2])]}, "non-finite keypoint"),
    ]
    for change, message in cases:
        p.write_text(json.dumps(dict(good, **change)))
        with pytest.raises(AnnotationError, match=message):
            load_annotations(p)
    p.write_text("null")
    with pytest.raises(AnnotationError, match="not a COCO keypoint file"):
        load_annotations(p)
    with pytest.raises(InputMissingError, match="is not a folder"):
        load_annotations(p, images_dir=p)


def test_crop_box_policy():
    b = crop_box(Box(0, 0, 100, 200), 192, 192, padding=0.25, aspect="pad")
    assert (b.w, b.h) == (250, 250) and (b.x + b.w / 2, b.y + b.h / 2) == (50, 100)
    b = crop_box(Box(0, 0, 100, 200), 192, 192, padding=0.0, aspect="stretch")
    assert (b.w, b.h) == (100, 200)


def test_cli_eval_real_model(edgepose_env):
    r = run_cli(["eval", "--model", MIRROR / "hourglass" / "model.tflite", "--annotations", EVAL_ANN,
                 "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["people"] == 23 and m["decoder"] == "subpixel"
    # the numbers docs/accuracy.md reports for float Hourglass + subpixel at the default padding 0.25,
    # within about one keypoint (1 of 270 is 0.0037; PCKh counts fewer keypoints)
    assert m["keypoints"] == 270
    assert m["pck@0.1"] == pytest.approx(0.567, abs=0.005)
    assert m["pck@0.05"] == pytest.approx(0.452, abs=0.005)
    assert m["pckh@0.5"] == pytest.approx(0.526, abs=0.01)
    assert m["median_error"] == pytest.approx(0.0651, abs=0.002)
    assert set(m["per_joint"]) >= {"head_top", "left_ankle"}
    r = run_cli(["eval", "--model", "cpm", "--annotations", EVAL_ANN, "--decoder", "upstream"], edgepose_env)
    assert r.returncode == 0, r.stderr
    assert "PCK@0.05" in r.stdout and "right_wrist" in r.stdout


def test_cli_eval_bad_input(edgepose_env, tmp_path):
    r = run_cli(["eval", "--model", MIRROR / "cpm" / "model.tflite", "--annotations",
                 tmp_path / "nope.json"], edgepose_env)
    assert r.returncode == 66 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    r = run_cli(["eval", "--model", MIRROR / "cpm" / "model.tflite", "--annotations", bad], edgepose_env)
    assert r.returncode == 65 and "Traceback" not in r.stderr
