"""Where does int8 OpenPose MobileNet-thin leave float? (issue 22, docs/models.md "Multi-person")

Builds float32 and int8 TFLite models of the frozen graph at one input size with the project's
build steps (``edgepose.build.quantize.build``), runs both on one letterboxed photo with every
intermediate tensor kept (``tf.lite.Interpreter(experimental_preserve_all_tensors=True)``) and
prints, in graph order, each int8 tensor's error against the float tensor of the same name:
RMS error / RMS of the float tensor, and the int8 scale.  Then the error of the two halves of
the output (part heatmaps, affinity fields) separately.

    python3 research/openpose_int8_diff.py [--calib ../shared/data/calib] [--size 432x368]
        [--photo ../shared/data/calib/apink2.jpg] [--no-balance] [--no-equalize]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgepose.build import quantize as q  # noqa: E402
from edgepose.build.graphs import tensorflow  # noqa: E402
from edgepose.core.geometry import CropTransform, whole_frame_box  # noqa: E402
from edgepose.inference.pipeline import crop_to_input  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PB = SHARED / "models" / "openpose-thin" / "graph_opt.pb"
IN, OUT = "image", "Openpose/concat_stage7"


def tensors(tf, data: bytes, img: np.ndarray) -> dict:
    """name -> (float value, scale or None) of every tensor after one invoke."""
    # no default delegate: XNNPACK would compute the intermediates inside itself, never in these tensors
    it = tf.lite.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType
                             .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = img[None].astype(np.float32)
    if d["dtype"] != np.float32:
        s, z = d["quantization"]
        x = np.clip(np.rint(x / s + z), -128, 127).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    it.invoke()
    out = {}
    for t in it.get_tensor_details():
        try:
            v = it.get_tensor(t["index"])
        except ValueError:
            continue
        s, z = t["quantization"]
        if v.dtype in (np.int8, np.uint8, np.int32) and s:
            if v.dtype == np.int32:
                continue  # biases
            v = (v.astype(np.float32) - z) * s
        elif v.dtype != np.float32:
            continue
        out[t["name"]] = (v, s or None, t["index"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", default=str(SHARED / "data" / "calib"))
    ap.add_argument("--size", default="432x368")
    ap.add_argument("--photo", default=str(SHARED / "data" / "calib" / "apink2.jpg"))
    ap.add_argument("--no-balance", action="store_true")
    ap.add_argument("--no-equalize", action="store_true")
    ap.add_argument("--save", default=None, help="write the int8 model here")
    ap.add_argument("--int8", default=None, help="an int8 model built before (--save): skip the build")
    a = ap.parse_args()
    tf = tensorflow()
    w, h = (int(v) for v in a.size.split("x"))
    shape = [1, h, w, 3]
    photos = q.read_photos(Path(a.calib))
    calib = q.calibration_crops(photos, w, h)
    recipe = q.Recipe(mode="int8", balance_concats=not a.no_balance, equalize_depthwise=not a.no_equalize)
    # the float reference: the same rewritten graph (the int8 rewrites rescale tensors), converted in float32
    f32 = q.convert(q.prepare_graph(PB, IN, OUT, recipe, calib)[0], IN, OUT, shape, q.Recipe(mode="float32"))
    if a.int8:
        int8 = Path(a.int8).read_bytes()
    else:
        built = q.build(PB, IN, OUT, shape, recipe, calib, photos)
        int8 = built.model
        if a.save:
            Path(a.save).write_bytes(int8)
        print("rewrites:", *built.notes, sep="\n  ")
        print("fixes:", *(f"{f.tensor}: {f.old_scale:.3g} -> {f.new_scale:.3g} ({f.reason})" for f in built.fixes),
              sep="\n  ")
    frame = cv2.imread(a.photo)
    img = crop_to_input(frame, CropTransform(whole_frame_box(frame.shape[1], frame.shape[0], w, h), w, h))
    fl = tensors(tf, f32, img)
    qt = tensors(tf, int8, img)
    fl_by_part = {}
    for name, v in fl.items():
        for part in name.split(";"):
            fl_by_part.setdefault(part, v)
    print(f"\n{'int8 tensor':<70} {'scale':>9} {'range(float)':>18} {'rel.err':>8}")
    for name, (v, s, _idx) in sorted(qt.items(), key=lambda kv: kv[1][2]):
        ref = next((fl_by_part[p] for p in name.split(";") if p in fl_by_part), None)
        if ref is None or ref[0].shape != v.shape:
            continue
        r = ref[0]
        rel = float(np.sqrt(np.mean((v - r) ** 2)) / max(1e-9, np.sqrt(np.mean(r ** 2))))
        print(f"{name.split(';')[0][:70]:<70} {s or 0:9.3g} {float(r.min()):8.3g}..{float(r.max()):<8.3g} {rel:8.3f}")
    out_f = fl[max(fl, key=lambda n: fl[n][2] if fl[n][0].shape[-1] == 57 else -1)][0][0]
    oq = [v for v in qt.values() if v[0].shape[-1] == 57]
    out_q = max(oq, key=lambda v: v[2])[0][0]
    for label, sl in (("heatmaps (0..18)", slice(0, 19)), ("PAFs (19..56)", slice(19, 57))):
        d = out_q[..., sl] - out_f[..., sl]
        print(f"output {label}: float range {out_f[..., sl].min():.3g}..{out_f[..., sl].max():.3g}, "
              f"max abs diff {np.abs(d).max():.3g}, RMS diff {np.sqrt((d ** 2).mean()):.3g}")


if __name__ == "__main__":
    main()
