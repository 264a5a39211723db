"""Which refinement crop margin gives the best stills? PCK@0.1 of the whole-frame pass, the second pass
(the crop around the whole-frame pose at each margin) and the third (the crop around the second's).

The first N upright eval-lspet people, one model, every pass scored whether or not the pose is
marked present; the labelled-box crop (``edgepose eval --mode crop``) for reference.  Supports
docs/accuracy.md (frame mode: the ``[tracking] margin`` default).

    python3 research/refine_margin.py cpm 100
"""

import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data; puts the repo on sys.path)

from edgepose.core import config as config_mod  # noqa: E402
from edgepose.core.geometry import CropTransform, whole_frame_box  # noqa: E402
from edgepose.inference.decode import decode_pose  # noqa: E402
from edgepose.inference.estimator import PoseEstimator  # noqa: E402
from edgepose.inference.pipeline import crop_to_input  # noqa: E402
from edgepose.tools.evaluate import crop_box, load_annotations, sample_image, select_samples  # noqa: E402

MARGINS = (1.3, 1.5, 1.7, 2.0)


def main() -> None:
    logging.disable(logging.WARNING)
    name, limit = sys.argv[1], int(sys.argv[2])
    cfg = config_mod.Config()
    config_mod.apply_mapping(cfg, {"model": {"name": name, "mirror": str(clips.MODELS)},
                                   "runtime": {"threads": 1}}, "research", from_text=True)
    est = PoseEstimator.from_config(cfg)
    pipe, tr = est.pipeline, est.pipeline.box_policy
    samples = select_samples(load_annotations(clips.SHARED / "data/eval-lspet/annotations.json",
                                              names=est.model.keypoint_names), True, limit)
    in_w, in_h = est.engine.input_size

    def look(img, box):
        t = CropTransform(box, in_w, in_h)
        est.engine.set_input(crop_to_input(img, t))
        est.engine.invoke()
        return decode_pose(est.engine.output(), t, pipe.names, pipe.threshold, pipe.decoder)

    def pck(pose, s):
        e = np.linalg.norm(pose.xy()[s.visible] - s.keypoints[s.visible], axis=1) / s.box_size
        return float((e <= 0.1).mean())

    rows, cache = [], {}
    for s in samples:
        img = sample_image(s, cache)
        p1 = look(img, whole_frame_box(img.shape[1], img.shape[0], in_w, in_h))
        row = [pck(look(img, crop_box(s.box, in_w, in_h)), s), pck(p1, s), p1.present]
        for m in MARGINS:
            tr.margin = m
            b = tr.box_for(p1)
            if b is None:  # nothing confident to crop around: the whole-frame pose stays
                row += [pck(p1, s), pck(p1, s)]
                continue
            p2 = look(img, b)
            b2 = tr.box_for(p2)
            row += [pck(p2, s), pck(look(img, b2) if b2 is not None else p2, s)]
        rows.append(row)
    a = np.array(rows, float)
    print(f"{name}, {len(a)} upright eval-lspet people: crop {100 * a[:, 0].mean():.1f}  whole frame "
          f"{100 * a[:, 1].mean():.1f}  (present {100 * a[:, 2].mean():.0f} %)")
    for i, m in enumerate(MARGINS):
        print(f"margin {m}: second pass {100 * a[:, 3 + 2 * i].mean():.1f}  "
              f"third pass {100 * a[:, 4 + 2 * i].mean():.1f}")


if __name__ == "__main__":
    main()
