"""``edgepose models quantize``: frozen TF1 graph -> int8 / float16 / dynamic TFLite.

Steps (each a small function, so tests and benchmarks can use them alone):

1. :func:`cleanup_graph`: semantics-preserving rewrites of the frozen
   ``GraphDef`` — a ``Relu`` whose input is already a ``Relu6``/``Relu`` is an
   identity and is removed (consumers are rewired); left in, the converter
   keeps it as a standalone RELU that splits XNNPACK's int8 graph into dozens
   of partitions.
2. :func:`calibration_images`: the calibration photos cropped exactly as the
   daemon crops (``CropTransform`` + ``crop_to_input``, BGR 0..255) plus
   augmentation (mirror, zoomed and shifted crops, brightness/contrast).
3. :func:`convert`: the TensorFlow Lite converter (TensorFlow is imported only
   here: ``pip install 'edgepose[convert]'``).
4. :func:`fix_quantization`: post-processes the int8 flatbuffer — activation
   scales below ``min_scale`` (tiny tensors whose calibration range collapsed)
   are widened so XNNPACK can prepare the graph, and the output's range is set
   to cover the heatmap range (``0..output_max``) so peaks are not clipped.
5. :func:`make_report`: XNNPACK partitions, latency float vs quantized in the
   same run, PCK@0.1 / PCK@0.05 of float and quantized against the truth of an
   evaluation set (the verdict, ``models/fidelity.py``) and keypoint agreement
   with float (information).

Quantized models are written to the model cache as catalogue entries
(``cpm-int8`` ...) with ``model.report.json`` beside them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from edgepose.build.graphs import const_node, const_value, consumers_of, layer_group, node_name, tensorflow
from edgepose.build.tflite import load_schema, read_model, tensor_name, write_model
from edgepose.core.errors import InputMissingError, ModelError, UsageError
from edgepose.core.geometry import Box, CropTransform, whole_frame_box
from edgepose.models.fidelity import PCK_KEYS, check_goals

log = logging.getLogger(__name__)
T = TypeVar("T")

MODES = ("int8", "float16", "dynamic", "float32")
# activations whose scale is smaller than this are widened (see fix_quantization)
MIN_ACTIVATION_SCALE = 1e-3
AGREEMENT_TOLERANCE = 0.05  # of the person-box size
CONFIDENT = 0.1  # float heatmap peak at or above which a keypoint counts as detected (diagnostics)


def require_converter() -> None:
    """Raise RuntimeMissingError (69) now when TensorFlow cannot be imported: before anything is fetched."""
    tensorflow()


# -- 1. graph clean-up ----------------------------------------------------------

@dataclass(frozen=True)
class Cleanup:
    removed_relu: int  # Relu nodes after Relu6/Relu removed


def load_graph(pb_path: Path):
    tf = tensorflow()
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(Path(pb_path).read_bytes())
    except OSError as e:
        raise InputMissingError(f"cannot read frozen graph {pb_path}: {e}") from None
    except Exception as e:  # protobuf DecodeError
        raise ModelError(f"{pb_path} is not a frozen TensorFlow graph: {e}") from None
    return gd


def cleanup_graph(graph_def, keep: Sequence[str] = ()) -> Tuple[object, Cleanup]:
    """Remove identity activations (``Relu`` of a ``Relu6``/``Relu``), rewiring consumers.

    ``keep`` names nodes (the graph outputs) that must survive; an output
    that is such a ``Relu`` is kept.  Returns a new GraphDef.
    """
    tf = tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    replace: Dict[str, str] = {}
    for n in graph_def.node:
        if n.op == "Relu" and n.name not in keep and n.input:
            src = by_name.get(node_name(n.input[0]))
            if src is not None and src.op in ("Relu6", "Relu") and ":" not in n.input[0]:
                replace[n.name] = n.input[0]

    def final(name: str) -> str:
        while name in replace:
            name = replace[name]
        return name

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.name in replace:
            continue
        m = out.node.add()
        m.CopyFrom(n)
        for i, ref in enumerate(m.input):
            ctrl = ref.startswith("^")
            base = ref.lstrip("^")
            if base in replace:
                m.input[i] = ("^" if ctrl else "") + final(base)
    return out, Cleanup(removed_relu=len(replace))


def _replace_weights(graph_def, node, value: np.ndarray, tag: str) -> None:
    """Point ``node``'s weights input (input 1) at a new Const ``<node>/<tag>`` holding ``value``."""
    name = f"{node.name}/{tag}"
    const_node(graph_def, name, value.astype(np.float32))
    node.input[1] = name


def _static_shapes(graph_def, names: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    tf = tensorflow()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return {n: tuple(g.get_tensor_by_name(n if ":" in n else n + ":0").shape.as_list()) for n in names}


def split_depthwise(graph_def, max_taps: int = 25) -> Tuple[object, List[str]]:
    """Rewrite depthwise convolutions with more than ``max_taps`` taps as sums of row bands.

    XNNPACK has fast single-pass depthwise kernels up to 25 taps; a 7x7 (49
    taps) depthwise convolution takes ~6x longer than the same work done as
    ``pad -> 3 x (slice rows -> 3x7 / 3x7 / 1x7 VALID depthwise) -> add``.
    The result is the same function (float summation order aside: ~1e-6).
    Only stride-1, undilated, NHWC ``SAME`` convolutions with static shapes
    are rewritten.
    """
    tf = tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    todo = []
    for n in graph_def.node:
        if n.op != "DepthwiseConv2dNative" or n.attr["padding"].s != b"SAME":
            continue
        if list(n.attr["strides"].list.i) not in ([1, 1, 1, 1], []) or \
                any(d != 1 for d in n.attr["dilations"].list.i) or n.attr["data_format"].s not in (b"", b"NHWC"):
            continue
        wnode, w = const_value(by_name, n.input[1])
        if w is None or w.shape[0] * w.shape[1] <= max_taps or w.shape[1] > max_taps:
            continue
        todo.append((n.name, w))
    if not todo:
        return graph_def, []
    shapes = _static_shapes(graph_def, [by_name[name].input[0] for name, _ in todo])
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    notes = []
    for name, w in todo:
        n = by_name[name]
        src = n.input[0]
        shape = shapes[src]
        if None in shape[1:3]:
            continue
        h, wd = shape[1], shape[2]
        kh, kw = w.shape[:2]
        band = max(1, max_taps // kw)
        pt, pl = (kh - 1) // 2, (kw - 1) // 2
        const_node(out, f"{name}/edgepose_split/pads",
                    np.array([[0, 0], [pt, kh - 1 - pt], [pl, kw - 1 - pl], [0, 0]], np.int32))
        pad = out.node.add()
        pad.name, pad.op = f"{name}/edgepose_split/pad", "Pad"
        pad.input.extend([src, f"{name}/edgepose_split/pads"])
        pad.attr["T"].type = tf.float32.as_datatype_enum
        pad.attr["Tpaddings"].type = tf.int32.as_datatype_enum
        parts = []
        for k, r0 in enumerate(range(0, kh, band)):
            rows = min(band, kh - r0)
            base = f"{name}/edgepose_split/band{k}"
            const_node(out, base + "/begin", np.array([0, r0, 0, 0], np.int32))
            # explicit sizes: XNNPACK does not delegate an int8 SLICE with -1 sizes
            const_node(out, base + "/size", np.array([shape[0] or 1, h + rows - 1, wd + kw - 1, w.shape[2]],
                                                      np.int32))
            sl = out.node.add()
            sl.name, sl.op = base + "/slice", "Slice"
            sl.input.extend([pad.name, base + "/begin", base + "/size"])
            sl.attr["T"].type = tf.float32.as_datatype_enum
            sl.attr["Index"].type = tf.int32.as_datatype_enum
            const_node(out, base + "/weights", np.ascontiguousarray(w[r0:r0 + rows]).astype(np.float32))
            dw = out.node.add()
            dw.CopyFrom(n)
            dw.name = base + "/depthwise"
            del dw.input[:]
            dw.input.extend([sl.name, base + "/weights"])
            dw.attr["padding"].s = b"VALID"
            parts.append(dw.name)
        acc = parts[0]
        for k, part in enumerate(parts[1:], 1):
            add = out.node.add() if k < len(parts) - 1 else n
            if add is n:
                n.Clear()
                n.name = name
            else:
                add.name = f"{name}/edgepose_split/sum{k}"
            add.op = "AddV2"
            add.input.extend([acc, part])
            add.attr["T"].type = tf.float32.as_datatype_enum
            acc = add.name
        notes.append(f"{name}: {kh}x{kw} depthwise -> {len(parts)} bands of <= {band} rows")
    return out, notes


def split_wide_concats(graph_def, max_inputs: int = 4) -> Tuple[object, List[str]]:
    """Nest a ``ConcatV2`` of more than ``max_inputs`` tensors: concat(concat(a, b, c, d), e).

    Pure data movement, so exactly the same output; older XNNPACK builds
    (tflite-runtime 2.14) delegate concatenations of at most 4 inputs and
    leave wider ones to the CPU kernels, splitting the graph.
    """
    tf = tensorflow()
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    notes = []
    for n in list(out.node):
        data = list(n.input[:-1])
        if n.op != "ConcatV2" or len(data) <= max_inputs:
            continue
        axis = n.input[-1]
        inner = out.node.add()
        inner.CopyFrom(n)
        inner.name = f"{n.name}/edgepose_head"
        del inner.input[:]
        inner.input.extend(data[:max_inputs] + [axis])
        inner.attr["N"].i = max_inputs
        del n.input[:]
        rest = data[max_inputs:]
        n.input.extend([inner.name] + rest + [axis])
        n.attr["N"].i = 1 + len(rest)
        notes.append(f"{n.name}: {len(data)}-input concatenation nested as {max_inputs} + {len(rest)}")
    if notes:  # a remainder may still be too wide
        more_out, more = split_wide_concats(out, max_inputs)
        return more_out, notes + more
    return out, notes


def channel_ranges(graph_def, input_name: str, names: Sequence[str], images: Sequence[np.ndarray]
                   ) -> Dict[str, np.ndarray]:
    """max |value| of every channel (last axis) of graph tensors over images (float graph, TensorFlow)."""
    tf = tensorflow()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    fetch = [g.get_tensor_by_name(n if ":" in n else n + ":0") for n in names]
    feed = g.get_tensor_by_name(input_name + ":0")
    out: Dict[str, np.ndarray] = {}
    with tf.compat.v1.Session(graph=g) as sess:
        for img in images:
            vals = sess.run(fetch, {feed: img[None].astype(np.float32)})
            for n, v in zip(names, vals):
                m = np.abs(v).reshape(-1, v.shape[-1]).max(axis=0).astype(np.float64)
                out[n] = np.maximum(out[n], m) if n in out else m
    return out


def tensor_ranges(graph_def, input_name: str, names: Sequence[str], images: Sequence[np.ndarray]
                  ) -> Dict[str, float]:
    """max |value| of graph tensors over images (float graph, TensorFlow)."""
    return {n: float(r.max()) for n, r in channel_ranges(graph_def, input_name, names, images).items()}


def balance_concats(graph_def, input_name: str, images: Sequence[np.ndarray], ratio: float = 4.0
                    ) -> Tuple[object, List[str]]:
    """Scale small-range inputs of a ``ConcatV2`` up and the consuming convolution's weights down.

    int8 TFLite forces every input of a concatenation onto the output's single
    scale, so a 0..1 heatmap concatenated with 0..18 features keeps ~13
    levels.  ``concat([B, c*H])`` followed by a convolution whose weights for
    the ``H`` channels are divided by ``c`` computes exactly the same function,
    and gives ``H`` the full int8 range.  Applied only where every consumer of
    the concatenation is a convolution reading it as its data input: a ``Conv2D`` (CPM) or a
    depthwise one (OpenPose MobileNet-thin, whose stages read 0..1 part maps and -1..1 affinity
    fields concatenated with 0..32 features; depthwise weights ``[h, w, in, mult]`` are divided
    on the same input-channel axis).
    """
    tf = tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    consumers = consumers_of(graph_def)
    candidates = []
    for n in graph_def.node:
        if n.op != "ConcatV2":
            continue
        users = consumers.get(n.name, [])
        if not users or any(u.op not in ("Conv2D", "DepthwiseConv2dNative") or i != 0 for u, i in users):
            continue
        _, axis = const_value(by_name, n.input[-1])
        if axis is None or int(axis) not in (3, -1):
            continue
        candidates.append(n)
    if not candidates:
        return graph_def, []
    refs = sorted({ref for n in candidates for ref in n.input[:-1]})
    ranges = tensor_ranges(graph_def, input_name, refs, images)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    notes = []
    for cand in candidates:
        n = by_name[cand.name]
        data_refs = list(n.input[:-1])
        top = max(ranges[r] for r in data_refs)
        # channel offsets of every input (static shapes from the graph)
        g = tf.Graph()
        with g.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        widths = [int(g.get_tensor_by_name(r if ":" in r else r + ":0").shape[-1]) for r in data_refs]
        offset = 0
        divide = np.ones(sum(widths))  # per input channel of the consumers (several inputs may be scaled)
        for k, (ref, width) in enumerate(zip(data_refs, widths)):
            r = ranges[ref]
            if 0 < r and top / r >= ratio:
                c = float(2.0 ** np.floor(np.log2(top / r)))  # a power of two: exact in float
                mul = out.node.add()
                mul.name = f"{n.name}/edgepose_balance_{k}"
                mul.op = "Mul"
                mul.attr["T"].type = tf.float32.as_datatype_enum
                const_node(out, mul.name + "/c", np.float32(c))
                mul.input.extend([ref, mul.name + "/c"])
                n.input[k] = mul.name
                divide[offset:offset + width] = c
                notes.append(f"{n.name}: input {ref} (range {r:.3g}) x{c:g}, {top:.3g} for the others")
            offset += width
        if (divide != 1).any():
            for user, _ in consumers[cand.name]:
                conv = by_name[user.name]
                _, w = const_value(by_name, conv.input[1])
                _replace_weights(out, conv, w / divide[None, None, :, None], "edgepose_weights")
    return out, notes


def equalize_depthwise(graph_def, input_name: str, images: Sequence[np.ndarray], floor: float = 1e-3
                       ) -> Tuple[object, List[str]]:
    """Equalize the channel ranges of ``depthwise -> Relu -> Conv2D`` outputs (cross-layer equalization),
    and of ``depthwise -> Conv2D`` (a separable convolution with no activation between, as in OpenPose
    MobileNet-thin: a linear map, so the same scaling is exact).

    int8 gives a tensor one scale, so a depthwise output whose channels peak
    at 0.5 and at 40 keeps ~3 levels in the small ones; in CPM and Hourglass
    these 52 tensors are most of the int8 error.  ``Relu(x / s) = Relu(x) / s``
    for ``s > 0``, so dividing depthwise channel ``c``'s weights by ``s_c`` and
    multiplying the next convolution's input channel ``c`` by it computes the
    same function (Nagel et al. 2019).  ``s_c = sqrt(r_c / w_c)``, with ``r_c``
    the channel's range on the calibration crops and ``w_c`` the largest
    weight reading it: activation and weight ranges meet half-way, so the small
    channels gain int8 levels without the next convolution's per-channel
    weight scales losing them (full activation equalization, ``s_c = r_c /
    max r``, doubled CPM's int8 error instead).  Channels below ``floor`` of
    the tensor's range (dead ones) are left alone.
    """
    tf = tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    users = consumers_of(graph_def)
    chains = []  # (depthwise, its weights, the tensor the 1x1 convolutions read, [(conv, its weights)])
    for n in graph_def.node:
        nxt = users.get(n.name, [])
        if n.op != "DepthwiseConv2dNative" or len(nxt) != 1:
            continue
        if nxt[0][0].op == "Relu":
            read = nxt[0][0].name
        elif nxt[0][0].op == "Conv2D" and nxt[0][1] == 0:  # linear: depthwise straight into the 1x1 (separable)
            read = n.name
        else:
            continue
        readers = users.get(read, [])
        if not readers or any(c.op != "Conv2D" or i != 0 for c, i in readers):
            continue
        _, w = const_value(by_name, n.input[1])
        convs = [(c.name, const_value(by_name, c.input[1])[1]) for c, _ in readers]
        if w is None or w.shape[3] != 1 or any(cw is None for _, cw in convs):
            continue
        chains.append((n.name, w, read, convs))
    if not chains:
        return graph_def, []
    ranges = channel_ranges(graph_def, input_name, [relu for _, _, relu, _ in chains], images)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    spread = []
    for dw_name, w, relu, convs in chains:
        r = ranges[relu]
        top = float(r.max())
        if top <= 0:
            continue
        # the largest weight reading each channel in the next convolution(s)
        w2 = np.max([np.abs(cw).max(axis=(0, 1, 3)) for _, cw in convs], axis=0)
        live = (r > floor * top) & (w2 > 0)
        s = np.sqrt(r / np.maximum(w2, 1e-12))
        s = np.where(live, s / s[live].max(), 1.0)
        _replace_weights(out, by_name[dw_name], w / s[None, None, :, None], "edgepose_equalized_weights")
        for name, cw in convs:
            _replace_weights(out, by_name[name], cw * s[None, None, :, None], "edgepose_equalized_weights")
        spread.append(float(np.median(r[live]) / top))
    notes = [f"equalized the channel ranges of {len(spread)} depthwise outputs (-> Relu or linear) -> 1x1 "
             f"(median channel at {100 * float(np.median(spread)):.0f}% of its tensor's range before)"]
    return out, notes


def equalize_pointwise(graph_def, input_name: str, images: Sequence[np.ndarray], floor: float = 1e-3
                       ) -> Tuple[object, List[str]]:
    """Equalize the channel ranges of ``Conv2D -> BiasAdd -> Relu -> depthwise`` (the other side of
    :func:`equalize_depthwise`).

    ``Relu(x / s) = Relu(x) / s`` for ``s > 0``: dividing output channel ``c`` of the convolution
    (weights and bias) by ``s_c`` and multiplying depthwise channel ``c``'s weights by it is the same
    function.  ``s_c = sqrt(r_c / w_c)`` as there (``r_c`` the Relu channel's range on the calibration
    crops, ``w_c`` the largest depthwise weight of channel ``c``), normalised to at most 1.  Only a
    plain ``Relu`` (a ``Relu6`` clips at 6, not scale-free) with one depthwise reader qualifies: none
    in CPM and Hourglass, the stages of OpenPose MobileNet-thin (where int8's error grows fastest,
    docs/models.md "Multi-person").
    """
    tf = tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    users = consumers_of(graph_def)
    chains = []  # (conv, its weights, bias node, its bias, relu, depthwise, its weights)
    for relu in graph_def.node:
        if relu.op != "Relu":
            continue
        readers = users.get(relu.name, [])
        if len(readers) != 1 or readers[0][0].op != "DepthwiseConv2dNative" or readers[0][1] != 0:
            continue
        bias = by_name.get(node_name(relu.input[0]))
        if bias is None or bias.op != "BiasAdd" or len(users.get(bias.name, [])) != 1:
            continue
        conv = by_name.get(node_name(bias.input[0]))
        if conv is None or conv.op != "Conv2D" or len(users.get(conv.name, [])) != 1:
            continue
        _, w = const_value(by_name, conv.input[1])
        _, b = const_value(by_name, bias.input[1])
        dw = readers[0][0]
        _, dw_w = const_value(by_name, dw.input[1])
        if w is None or b is None or dw_w is None or dw_w.shape[3] != 1:
            continue
        chains.append((conv.name, w, bias.name, b, relu.name, dw.name, dw_w))
    if not chains:
        return graph_def, []
    ranges = channel_ranges(graph_def, input_name, [c[4] for c in chains], images)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    spread = []
    for conv, w, bias, b, relu, dw, dw_w in chains:
        r = ranges[relu]
        top = float(r.max())
        if top <= 0:
            continue
        w2 = np.abs(dw_w).max(axis=(0, 1, 3))
        live = (r > floor * top) & (w2 > 0)
        sc = np.sqrt(r / np.maximum(w2, 1e-12))
        sc = np.where(live, sc / sc[live].max(), 1.0)
        _replace_weights(out, by_name[conv], w / sc[None, None, None, :], "edgepose_equalized_out_weights")
        _replace_weights(out, by_name[bias], (b / sc).astype(np.float32), "edgepose_equalized_bias")
        _replace_weights(out, by_name[dw], dw_w * sc[None, None, :, None], "edgepose_equalized_in_weights")
        spread.append(float(np.median(r[live]) / top))
    return out, [f"equalized the channel ranges of {len(spread)} 1x1 -> Relu -> depthwise outputs "
                 f"(median channel at {100 * float(np.median(spread)):.0f}% of its tensor's range before)"]


# -- 2. calibration data -------------------------------------------------------------

@dataclass(frozen=True)
class Augment:
    """Calibration augmentation: how many variants per photo and their ranges."""

    variants: int = 6  # per photo, besides the plain whole-frame crop and its mirror
    zoom: Tuple[float, float] = (0.6, 1.3)  # box size relative to the padded whole frame
    shift: float = 0.15  # max box-centre shift, fraction of the box
    gain: Tuple[float, float] = (0.6, 1.4)  # brightness/contrast multiplier
    bias: Tuple[float, float] = (-30.0, 30.0)
    seed: int = 0


def list_images(folder: Path) -> List[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputMissingError(f"calibration folder {folder} does not exist")
    from edgepose.capture.sources import IMAGE_EXTS, images_in

    files = images_in(folder)
    if not files:
        raise InputMissingError(f"calibration folder {folder} has no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def sample_evenly(items: Sequence[T], limit: int) -> List[T]:
    """At most ``limit`` of ``items``, spread evenly over them in their order (item ``i * n // limit``
    for ``i < limit``: reproducible, no randomness); all of them when ``limit`` is 0 or not smaller."""
    n = len(items)
    if limit <= 0 or n <= limit:
        return list(items)
    return [items[i * n // limit] for i in range(limit)]


def read_photos(folder: Path, limit: int = 0) -> List[np.ndarray]:
    """The calibration photos as BGR frames: all of the folder's, or ``limit`` of them spread evenly
    over its name order (:func:`sample_evenly`)."""
    import cv2

    frames = []
    for path in sample_evenly(list_images(folder), limit):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputMissingError(f"calibration image {path} cannot be decoded")
        frames.append(frame)
    return frames


def calibration_images(folder: Path, in_w: int, in_h: int, augment: Optional[Augment] = Augment()
                       ) -> List[np.ndarray]:
    """BGR uint8 model inputs made from the photos exactly as the daemon makes them."""
    return calibration_crops(read_photos(folder), in_w, in_h, augment)


def calibration_crops(photos: Sequence[np.ndarray], in_w: int, in_h: int, augment: Optional[Augment] = Augment()
                      ) -> List[np.ndarray]:
    """:func:`calibration_images` of photos already read."""
    from edgepose.inference.pipeline import crop_to_input

    rng = np.random.default_rng(augment.seed if augment else 0)
    out = []
    for frame in photos:
        fh, fw = frame.shape[:2]
        base = whole_frame_box(fw, fh, in_w, in_h)
        boxes = [(base, False)]
        if augment:
            boxes.append((base, True))
            for _ in range(augment.variants):
                z = rng.uniform(*augment.zoom)
                b = Box(base.x, base.y, base.w * z, base.h * z)
                dx, dy = rng.uniform(-augment.shift, augment.shift, 2) * b.w
                cx, cy = base.x + base.w / 2 + dx, base.y + base.h / 2 + dy
                boxes.append((Box(cx - b.w / 2, cy - b.h / 2, b.w, b.h), bool(rng.integers(2))))
        for i, (box, flip) in enumerate(boxes):
            img = crop_to_input(frame, CropTransform(box, in_w, in_h))
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
            if augment and i >= 2:
                g, b = rng.uniform(*augment.gain), rng.uniform(*augment.bias)
                img = np.clip(img.astype(np.float32) * g + b, 0, 255).astype(np.uint8)
            out.append(img)
    return out


def statistics_subset(calibration: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """The calibration crops the graph rewrites and the sensitivity ranking measure on: every 4th
    crop, spread over all the photos (the converter itself calibrates on all of them)."""
    return calibration[::4] or calibration


# -- 3. conversion -------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    mode: str = "int8"
    per_channel: bool = True
    int8_io: bool = True  # int8 input (scale 1, zero -128: lossless for 0..255 pixels) and output
    min_scale: float = MIN_ACTIVATION_SCALE
    output_max: float = 0.0  # 0: keep the calibrated output range; >0: widen it to 0..output_max
    float_layers: Tuple[str, ...] = ()  # int8: ops whose output name contains one of these stay float
    split_depthwise: bool = True  # rewrite >25-tap depthwise convolutions (see split_depthwise)
    balance_concats: bool = True
    # > 0: mixed precision chosen on the calibration images (see select_float): blocks become int8,
    # least sensitive first, while their summed single-block output error is within this fraction
    int8_budget: float = 0.0
    equalize_depthwise: bool = True  # see equalize_depthwise
    # int8: Adam steps of quantization-aware fine-tuning (edgepose.build.finetune) before the conversion
    finetune_steps: int = 0
    finetune_rate: float = 2e-5
    finetune_peak_floor: float = 0.0  # see finetune.FineTune.peak_floor
    finetune_mixup: float = 0.0  # see finetune.FineTune.mixup
    # int8: blocks (layer_group names) that stay float, an earlier selection fixed (fine-tuned mixed)
    float_groups: Tuple[str, ...] = ()
    # int8: the op making the output stays float and the model's input and output are float32, so
    # the heatmaps are not rounded to an int8 output grid (measured, not kept: docs/models.md)
    float_output: bool = False

    @property
    def mixed(self) -> bool:
        """int8 with some ops kept in float."""
        return bool(self.float_layers or self.float_groups or self.int8_budget > 0 or self.float_output)

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")


def convert(graph_def, input_name: str, output_name: str, input_shape: Sequence[int], recipe: Recipe,
            calibration: Sequence[np.ndarray] = ()) -> bytes:
    """Run the TFLite converter on a (cleaned) frozen graph."""
    tf = tensorflow()
    if recipe.mode == "int8" and not len(calibration):
        raise UsageError("int8 quantization needs calibration images (--calib DIR)")
    with tempfile.TemporaryDirectory(prefix="edgepose-convert-") as tmp:
        pb = Path(tmp) / "graph.pb"
        pb.write_bytes(graph_def.SerializeToString())
        conv = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            str(pb), [input_name], [output_name], input_shapes={input_name: list(input_shape)})
        if recipe.mode == "float32":
            pass  # the graph rewrites only
        elif recipe.mode == "float16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif recipe.mode == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        else:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

            def representative() -> Iterator[List[np.ndarray]]:
                for img in calibration:
                    yield [img[None].astype(np.float32)]

            conv.representative_dataset = representative
            if not recipe.per_channel:
                conv._experimental_disable_per_channel = True  # noqa: SLF001 (documented converter flag)
            if recipe.mixed:
                return _convert_mixed(tf, conv, representative, recipe, calibration)
            if recipe.int8_io:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        try:
            return conv.convert()
        except Exception as e:  # the converter raises many types; report one line
            raise ModelError(f"the TFLite converter failed: {str(e).strip().splitlines()[-1]}") from None


def _convert_mixed(tf, conv, representative, recipe: Recipe, calibration: Sequence[np.ndarray]) -> bytes:
    """int8 except some ops (float32 I/O): ``float_layers`` name patterns, or chosen by sensitivity."""
    from tensorflow.lite.python import convert as tfl_convert  # noqa: PLC0415

    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.experimental_mlir_quantizer = True
    conv._experimental_calibrate_only = True  # noqa: SLF001 (the path QuantizationDebugger uses)
    try:
        calibrated = conv.convert()
    except Exception as e:
        raise ModelError(f"the TFLite converter failed: {str(e).strip().splitlines()[-1]}") from None
    g = read_model(calibrated).subgraphs[0]
    names = [tensor_name(g.tensors[op.outputs[0]]) for op in g.operators]

    def quantize(deny: Sequence[str]) -> bytes:
        if recipe.float_output:  # the output op in float; float32 I/O instead of int8
            deny = list(dict.fromkeys([*deny, *(tensor_name(g.tensors[i]) for i in g.outputs)]))
        try:
            data = tfl_convert.mlir_quantize(calibrated, fully_quantize=not recipe.float_output,
                                             denylisted_nodes=list(deny) or None)
        except Exception as e:
            raise ModelError(f"the TFLite converter failed: {str(e).strip().splitlines()[-1]}") from None
        return fix_quantization(data, recipe.min_scale)[0]  # collapsed scales: XNNPACK must prepare it

    if recipe.float_layers:
        keep = [n for n in names if any(p in n for p in recipe.float_layers)]
        if not keep:
            raise UsageError(f"no layer matches --float-layers {','.join(recipe.float_layers)}")
    elif recipe.float_groups:
        keep = [n for n in names if layer_group(n) in recipe.float_groups]
    elif recipe.int8_budget <= 0:
        keep = []  # only float_output
    else:
        ranking = sensitivity(calibrated, names, quantize, statistics_subset(calibration))
        keep = select_float(ranking, recipe.int8_budget)
    log.info("keeping %d of %d ops in float", len(keep), len(names))
    return quantize(keep)


def float_groups(data: bytes) -> Tuple[str, ...]:
    """The blocks (:func:`layer_group`) with ops kept in float in a mixed int8 model."""
    schema = load_schema()
    model = read_model(data)
    g = model.subgraphs[0]
    codes = builtin_codes(model)
    conversions = (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE)
    outputs = [g.tensors[op.outputs[0]] for op in g.operators if codes[op.opcodeIndex] not in conversions]
    return tuple(sorted({layer_group(tensor_name(t)) for t in outputs if t.type == schema.TensorType.FLOAT32}))


@dataclass(frozen=True)
class Sensitivity:
    group: str
    ops: Tuple[str, ...]
    error: float  # mean squared output error (vs float) with only this group in int8


def _run_outputs(data: bytes, images: Sequence[np.ndarray]) -> np.ndarray:
    """Float heatmaps of a (float-I/O or int8-I/O) TFLite model on BGR uint8 images (engine.Engine)."""
    from edgepose.inference.engine import Engine  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="edgepose-sensitivity-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        engine = Engine(path, threads=os.cpu_count() or 1)
        return np.stack([engine.run(img) for img in images]).astype(np.float32)


def sensitivity(calibrated: bytes, names: Sequence[str], quantize, images: Sequence[np.ndarray]
                ) -> List[Sensitivity]:
    """Per block: the output error when only that block is int8 (calibration images), least first.

    ``calibrated`` is the converter's float model with calibration statistics;
    run as it is, it is the float reference.  Never pass evaluation images.
    """
    ref = _run_outputs(calibrated, images)
    groups: Dict[str, List[str]] = {}
    for n in names:
        groups.setdefault(layer_group(n), []).append(n)
    out = []
    for grp, ops in groups.items():
        only = set(ops)
        data = quantize([n for n in names if n not in only])
        err = float(((_run_outputs(data, images) - ref) ** 2).mean())
        out.append(Sensitivity(grp, tuple(ops), err))
        log.debug("sensitivity %s: %.3g", grp, err)
    return sorted(out, key=lambda s: s.error)


def select_float(ranking: Sequence[Sensitivity], budget: float) -> List[str]:
    """Ops kept in float: blocks are made int8, least sensitive first, while the sum of their
    single-block errors stays within ``budget`` of the sum over all blocks."""
    total = sum(s.error for s in ranking) or 1.0
    used, keep = 0.0, []
    for s in ranking:
        if used + s.error <= budget * total:
            used += s.error
        else:
            keep.extend(s.ops)
    return keep


@dataclass
class Build:
    model: bytes
    notes: List[str]
    fixes: List[QuantFix]


def prepare_graph(pb_path: Path, input_name: str, output_name: str, recipe: Recipe,
                  calibration: Sequence[np.ndarray] = ()) -> Tuple[object, List[str]]:
    """The frozen graph after :func:`build`'s function-preserving rewrites that come before
    fine-tuning (Relu clean-up, nested concats; int8: concat balancing, depthwise equalization),
    with the notes for the report."""
    gd, cleanup = cleanup_graph(load_graph(pb_path), keep=[output_name])
    notes = [f"removed {cleanup.removed_relu} redundant Relu after Relu6"]
    gd, more = split_wide_concats(gd)
    notes += more
    if recipe.mode == "int8" and recipe.balance_concats:
        gd, more = balance_concats(gd, input_name, statistics_subset(calibration))
        notes += more
    if recipe.mode == "int8" and recipe.equalize_depthwise:
        gd, more = equalize_pointwise(gd, input_name, statistics_subset(calibration))
        notes += more
        gd, more = equalize_depthwise(gd, input_name, statistics_subset(calibration))
        notes += more
    return gd, notes


def build(pb_path: Path, input_name: str, output_name: str, input_shape: Sequence[int], recipe: Recipe,
          calibration: Sequence[np.ndarray] = (), photos: Sequence[np.ndarray] = ()) -> Build:
    """Frozen graph -> clean-ups -> (fine-tuning) -> converter -> quantization fixes."""
    gd, notes = prepare_graph(pb_path, input_name, output_name, recipe, calibration)
    if recipe.mode == "int8" and recipe.finetune_steps > 0:
        from edgepose.build.finetune import FineTune, finetune  # noqa: PLC0415

        if not len(photos):
            raise UsageError("fine-tuning needs the calibration photos (--calib DIR)")
        # the plain conversion's int8 grid is what the fine-tuning simulates (finetune.ranges_from_model);
        # a mixed recipe's float blocks are chosen first, then simulated (and kept) in float
        plain = convert(gd, input_name, output_name, input_shape,
                        Recipe(per_channel=recipe.per_channel, float_layers=recipe.float_layers,
                               float_groups=recipe.float_groups, int8_budget=recipe.int8_budget,
                               float_output=recipe.float_output), calibration)
        plain = fix_quantization(plain, recipe.min_scale, recipe.output_max)[0]
        keep = float_groups(plain) if recipe.mixed else ()
        gd, more = finetune(gd, input_name, output_name, calibration, photos,
                            FineTune(steps=recipe.finetune_steps, learning_rate=recipe.finetune_rate,
                                     peak_floor=recipe.finetune_peak_floor, mixup=recipe.finetune_mixup),
                            reference=plain, float_groups=keep)
        notes += more
        if recipe.mixed:
            notes.append(f"{len(keep)} blocks kept in float, chosen before fine-tuning: {', '.join(keep)}")
            recipe = replace(recipe, float_layers=(), int8_budget=0.0, float_groups=keep)
    if recipe.split_depthwise:
        gd, more = split_depthwise(gd)
        notes += more
    data = convert(gd, input_name, output_name, input_shape, recipe, calibration)
    fixes: List[QuantFix] = []
    if recipe.mode == "int8":
        data, fixes = fix_quantization(data, recipe.min_scale, recipe.output_max)
    return Build(data, notes, fixes)


# -- 4. flatbuffer post-processing ---------------------------------------------------

@dataclass(frozen=True)
class QuantFix:
    tensor: str
    old_scale: float
    new_scale: float
    reason: str


def builtin_codes(model) -> List[int]:
    """The ``BuiltinOperator`` of each of the model's operator codes (by ``opcodeIndex``; new
    operators live in ``builtinCode``, old ones in ``deprecatedBuiltinCode``)."""
    return [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]


def fix_quantization(data: bytes, min_scale: float = MIN_ACTIVATION_SCALE, output_max: float = 0.0
                     ) -> Tuple[bytes, List[QuantFix]]:
    """Widen degenerate int8 activation scales and (optionally) the output range.

    Only *activation* tensors (not weights/biases, which have a buffer) with a
    single scale are changed; every kernel derives its requantization from the
    tensor scales at prepare time, so a wider scale is valid, only coarser.
    Ops whose output must share the input's scale (pooling, resize,
    concatenation, reshape) are kept consistent by applying the same change
    along such chains.
    """
    schema = load_schema()
    model = read_model(data)
    g = model.subgraphs[0]
    ops = g.operators
    codes = builtin_codes(model)
    B = schema.BuiltinOperator
    same_scale = {B.MAX_POOL_2D, B.AVERAGE_POOL_2D, B.RESIZE_BILINEAR, B.RESIZE_NEAREST_NEIGHBOR,
                  B.RESHAPE, B.CONCATENATION}
    biased = {B.CONV_2D, B.DEPTHWISE_CONV_2D, B.FULLY_CONNECTED}
    fixes: List[QuantFix] = []

    def is_activation(ti: int) -> bool:
        t = g.tensors[ti]
        q = t.quantization
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        has_data = buf is not None and buf.data is not None and len(buf.data) > 0
        return (t.type == schema.TensorType.INT8 and q is not None and q.scale is not None
                and len(q.scale) == 1 and not has_data)

    # groups of tensors that must share a scale (union-find over same-scale ops)
    parent = list(range(len(g.tensors)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for op in ops:
        if codes[op.opcodeIndex] in same_scale:
            ins = [i for i in op.inputs if i >= 0 and is_activation(i)]
            if codes[op.opcodeIndex] != B.CONCATENATION:
                ins = ins[:1]  # the data input (not a size/shape operand)
            for o in op.outputs:
                for i in ins:
                    parent[find(o)] = find(i)

    def rescale_biases(ti: int, old: float, new: float) -> None:
        """Biases of ops reading ``ti`` are int32 at input_scale * weight_scale: follow the input."""
        for op in ops:
            if codes[op.opcodeIndex] in biased and op.inputs[0] == ti and len(op.inputs) > 2 and op.inputs[2] >= 0:
                bt = g.tensors[op.inputs[2]]
                buf = model.buffers[bt.buffer]
                vals = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int32).astype(np.float64)
                vals = np.clip(np.rint(vals * (old / new)), -(2 ** 31), 2 ** 31 - 1).astype("<i4")
                buf.data = np.frombuffer(vals.tobytes(), dtype=np.uint8)
                bt.quantization.scale = [float(x) * new / old for x in bt.quantization.scale]

    def set_group(ti: int, scale: float, zero: int, reason: str) -> None:
        root = find(ti)
        for j in range(len(g.tensors)):
            if find(j) == root and is_activation(j):
                q = g.tensors[j].quantization
                old = float(q.scale[0])
                fixes.append(QuantFix(tensor_name(g.tensors[j]), old, float(scale), reason))
                q.scale = [float(scale)]
                q.zeroPoint = [int(zero)]
                rescale_biases(j, old, float(scale))

    done = set()
    for ti, t in enumerate(g.tensors):
        if not is_activation(ti) or find(ti) in done:
            continue
        s = float(t.quantization.scale[0])
        if s < min_scale:
            # same zero point, wider scale: the old range stays inside the new one
            set_group(ti, min_scale, int(t.quantization.zeroPoint[0]), f"scale {s:.3g} below {min_scale:g}")
            done.add(find(ti))
    if output_max > 0:
        for oi in g.outputs:
            src = oi
            # an int8 output (or the int8 tensor a final DEQUANTIZE reads)
            for op in ops:
                if oi in op.outputs and codes[op.opcodeIndex] == B.DEQUANTIZE:
                    src = op.inputs[0]
            if is_activation(src):
                q = g.tensors[src].quantization
                hi = (127 - q.zeroPoint[0]) * q.scale[0]
                if hi < output_max:
                    set_group(src, output_max / 255.0, -128, f"output range 0..{hi:.3g} widened to 0..{output_max:g}")
    return write_model(model), fixes


# -- 5. report -------------------------------------------------------------------------

@dataclass(frozen=True)
class Fidelity:
    agreement: float  # labelled keypoints within AGREEMENT_TOLERANCE * box size of the float prediction
    pck_float: Dict[str, float]
    pck_quant: Dict[str, float]
    keypoints: int
    people: int
    decoder: str
    agreement_confident: float = 0.0  # the same over keypoints whose float score >= CONFIDENT
    confident_keypoints: int = 0


def fidelity(float_engine, quant_engine, samples, decoder: str = "subpixel",
             tolerance: float = AGREEMENT_TOLERANCE) -> Fidelity:
    """PCK of both models against the truth (what the verdict judges) and keypoint agreement with float
    (information), on annotated people."""
    from edgepose.tools.evaluate import evaluate  # noqa: PLC0415

    ref = evaluate(float_engine, samples, decoder)
    got = evaluate(quant_engine, samples, decoder)
    dist = np.linalg.norm(got.pred - ref.pred, axis=-1)  # (N, K) frame px
    ok = dist <= tolerance * ref.box_size[:, None]
    vis = ref.visible.astype(bool)
    keys = ("pck@0.1", "pck@0.05", "pckh@0.5")
    conf = vis & (ref.scores >= CONFIDENT)
    return Fidelity(agreement=float((ok & vis).sum() / max(1, vis.sum())),
                    agreement_confident=float((ok & conf).sum() / max(1, conf.sum())),
                    confident_keypoints=int(conf.sum()),
                    pck_float={k: ref.metrics[k] for k in keys},
                    pck_quant={k: got.metrics[k] for k in keys},
                    keypoints=int(vis.sum()), people=int(len(samples)), decoder=decoder)


def make_report(*, name: str, source: str, source_path: Path, model_path: Path, recipe: Recipe,
                built: Build, calib_dir: Optional[Path], calib_count: int, float_engine, quant_engine,
                calib_photos: int = 0,
                samples=None, decoder: str = "subpixel", runs: int = 30, image: Optional[np.ndarray] = None,
                float_path: Optional[Path] = None) -> dict:
    """Everything measured about a built model, in one JSON-able dict (measured in this run)."""
    from edgepose.models import registry  # noqa: PLC0415
    from edgepose.models.modelinfo import delegation, latency_interleaved  # noqa: PLC0415

    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (quant_engine.spec.input_h,
                                                           quant_engine.spec.input_w, 3), dtype=np.uint8)
    lat = latency_interleaved({"float": float_engine, "quantized": quant_engine}, image, runs=runs)
    report = {
        "model": name, "path": str(model_path), "sha256": registry.sha256_of(model_path),
        "size_bytes": Path(model_path).stat().st_size,
        "source": source, "source_sha256": registry.sha256_of(source_path),
        "recipe": asdict(recipe), "rewrites": built.notes,
        "quantization_fixes": [asdict(f) for f in built.fixes],
        "calibration": {"dir": str(calib_dir) if calib_dir else None, "photos": calib_photos, "images": calib_count},
        "float_reference": str(float_path or float_engine.path),
        "runtime": {"backend": quant_engine.runtime.name, "version": quant_engine.runtime.version,
                    "threads": quant_engine.threads},
        "xnnpack": {"float": asdict(delegation(float_engine.path, float_engine.runtime, float_engine.threads)),
                    "quantized": asdict(delegation(model_path, quant_engine.runtime, quant_engine.threads))},
        "latency_ms": {k: asdict(v) for k, v in lat.items()},
        "speedup_vs_float": lat["float"].median_ms / lat["quantized"].median_ms,
        "speedup_vs_float_min": lat["float"].min_ms / lat["quantized"].min_ms,
        "output_grid": [quant_engine.spec.grid_h, quant_engine.spec.grid_w],
        "fidelity": None,
    }
    if samples:
        report["fidelity"] = asdict(fidelity(float_engine, quant_engine, samples, decoder))
    report["goals"] = check_goals(report)
    return report


def write_report(report: dict, model_path: Path) -> Path:
    from edgepose.models.registry import report_path  # noqa: PLC0415

    path = report_path(model_path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    return path


def format_report(report: dict) -> str:
    x = report["xnnpack"]["quantized"]
    lat = report["latency_ms"]
    lines = [f"{report['model']}: {report['path']} ({report['size_bytes'] / 1e6:.2f} MB, "
             f"sha256 {report['sha256'][:16]}...)",
             f"  xnnpack     {x['partitions']} partition(s), {x['delegated_nodes']}/{x['total_nodes']} nodes"
             + ("" if x["prepared"] else f"  FAILED: {x['message']}"),
             f"  latency     float {lat['float']['median_ms']:.2f} ms, {report['recipe']['mode']} "
             f"{lat['quantized']['median_ms']:.2f} ms median (min {lat['float']['min_ms']:.2f} / "
             f"{lat['quantized']['min_ms']:.2f}) -> {report['speedup_vs_float']:.2f}x "
             f"({report['runtime']['backend']}, {report['runtime']['threads']} threads, same run)"]
    fid = report.get("fidelity")
    if fid:
        lines.append(f"  agreement   (information) {100 * fid['agreement']:.1f}% of {fid['keypoints']} "
                     "labelled keypoints within "
                     f"{100 * AGREEMENT_TOLERANCE:.0f}% of the box size of the float prediction")
        lines.append(f"              {100 * fid['agreement_confident']:.1f}% of the {fid['confident_keypoints']} whose "
                     f"float peak is >= {CONFIDENT}")
        for key in PCK_KEYS:
            lines.append(f"  {key:<11} float {100 * fid['pck_float'][key]:.1f}  quantized "
                         f"{100 * fid['pck_quant'][key]:.1f}  ({fid['people']} people, decoder {fid['decoder']})")
    goals = report.get("goals", {})
    lines.append("  goals       " + ", ".join(f"{k} {'met' if v else ('n/a' if v is None else 'NOT met')}"
                                            for k, v in goals.items()))
    return "\n".join(lines) + "\n"
