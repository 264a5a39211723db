"""Quantization-aware fine-tuning of a frozen float graph (``edgepose models quantize --finetune N``).

Post-training int8 leaves noise spread over every stage of CPM and Hourglass
(docs/models.md); no per-layer correction removes it.  This module nudges the
float weights so that the *quantized* network reproduces the float one:

1. :func:`fold_batch_norms`: ``Conv2D -> FusedBatchNorm`` becomes ``Conv2D ->
   BiasAdd`` with the scale folded into the weights (exactly what the TFLite
   converter does itself), so the weights trained here are the weights it
   quantizes.
2. :class:`QuantSim`: the graph evaluated op by op with TensorFlow, with
   TFLite's int8 arithmetic simulated: per-channel symmetric int8 weights
   (narrow range, as TFLite's per-channel scheme) and per-tensor asymmetric
   int8 at every tensor an int8 TFLite model materializes (the output of each
   fused conv/bias/activation group, adds, concatenations, resizes, pools), on
   the grid of a plain conversion of the same graph
   (:meth:`QuantSim.ranges_from_model`; its own calibration otherwise).
   Rounding passes gradients straight through.
3. :func:`finetune`: Adam (cosine decay) on the simulated network's heatmaps
   against the *original* float graph's heatmaps, each step on fresh strongly
   augmented crops of the calibration photos (:func:`random_crop`;
   distillation: no labels needed), then the trained weights are written back
   into the GraphDef.  The converter then calibrates and quantizes that graph
   as usual.

TensorFlow is imported lazily (the ``convert`` extra).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgepose.build.graphs import const_node, const_value, consumers_of, layer_group, node_name, tensorflow
from edgepose.build.tflite import load_schema, read_model, tensor_name

log = logging.getLogger(__name__)

_ACTIVATIONS = ("Relu", "Relu6")
_BIASES = ("BiasAdd", "FusedBatchNorm", "FusedBatchNormV3")
_CONVS = ("Conv2D", "DepthwiseConv2dNative")


def fold_batch_norms(graph_def) -> Tuple[object, List[str]]:
    """``Conv2D/DepthwiseConv2dNative -> FusedBatchNorm`` (inference mode, const parameters) becomes
    the convolution with ``w * gamma / sqrt(var + eps)`` per output channel followed by a
    ``BiasAdd`` of ``beta - mean * gamma / sqrt(var + eps)``: the same function."""
    tf = tensorflow()
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {n.name: n for n in out.node}
    users = consumers_of(out)
    folded = 0
    for bn in list(out.node):
        if bn.op not in ("FusedBatchNorm", "FusedBatchNormV3") or bn.attr["is_training"].b:
            continue
        conv = by_name.get(node_name(bn.input[0]))
        if conv is None or conv.op not in _CONVS or len(users.get(conv.name, [])) != 1:
            continue
        if any(":" in ref and not ref.endswith(":0") for u in users.get(bn.name, []) for ref in u[0].input
               if node_name(ref) == bn.name):
            continue  # something reads the batch statistics outputs
        vals = [const_value(by_name, ref)[1] for ref in bn.input[1:5]]
        _, w = const_value(by_name, conv.input[1])
        if w is None or any(v is None for v in vals):
            continue
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in vals)
        eps = bn.attr["epsilon"].f
        s = gamma / np.sqrt(var + eps)
        if conv.op == "Conv2D":
            w2 = w * s[None, None, None, :]
        else:  # depthwise: output channel c * mult + m
            kh, kw, cin, mult = w.shape
            w2 = (w.reshape(kh, kw, cin * mult) * s[None, None, :]).reshape(w.shape)
        name = f"{conv.name}/edgepose_folded_weights"
        const_node(out, name, w2.astype(np.float32))
        conv.input[1] = name
        bias = f"{bn.name}/edgepose_folded_bias"
        const_node(out, bias, (beta - mean * s).astype(np.float32))
        data = bn.input[0]
        bn.op = "BiasAdd"
        del bn.input[:]
        bn.input.extend([data, bias])
        for key in list(bn.attr.keys()):
            if key not in ("T", "data_format"):
                del bn.attr[key]
        bn.attr["T"].type = tf.float32.as_datatype_enum
        folded += 1
    return out, [f"folded {folded} batch normalizations into their convolutions"] if folded else []


@dataclass(frozen=True)
class FineTune:
    """How to fine-tune (``steps`` 0: not at all)."""

    steps: int = 0
    batch: int = 8
    learning_rate: float = 2e-5
    seed: int = 0
    #: 0: plain mean squared heatmap error.  > 0: each channel's squared error is divided by
    #: (its float peak^2 + floor^2), so a keypoint the float model barely sees weighs as much as
    #: a clear one (where its argmax lands is what keypoint agreement counts)
    peak_floor: float = 0.0
    #: share of the training crops blended with another crop (``l * a + (1 - l) * b``, ``l`` uniform
    #: in 0..1); the teacher sees the same blend (function matching, Beyer et al. 2022): more varied
    #: inputs from the same few photos
    mixup: float = 0.0


class QuantSim:
    """A frozen graph as a differentiable TensorFlow function, optionally with int8 simulated.

    Trainable: the weights of every convolution and the bias that follows it
    (after :func:`fold_batch_norms`).  ``ranges`` (tensor name -> (min, max))
    come from :meth:`calibrate` on the float graph.
    """

    def __init__(self, graph_def, input_name: str, output_name: str, float_groups: Sequence[str] = ()):
        tf = tensorflow()
        self.tf = tf
        self.input_name, self.output_name = input_name, output_name
        by_name = {n.name: n for n in graph_def.node}
        self.by_name = by_name
        # the nodes the output needs, in dependency order
        order: List[str] = []
        seen = set()
        stack = [(output_name, False)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            for ref in by_name[name].input:
                if not ref.startswith("^") and node_name(ref) not in seen:
                    stack.append((node_name(ref), False))
        self.order = order
        # nodes of blocks a mixed model keeps in float: neither their weights nor outputs are quantized
        groups = set(float_groups)
        self.float_nodes = {name for name in order if layer_group(name) in groups}
        users = consumers_of(graph_def)
        self.variables: Dict[str, object] = {}  # Const node name -> tf.Variable
        self.weight_of: Dict[str, str] = {}     # conv node -> Const name of its weights
        self.bias_of: Dict[str, str] = {}       # BiasAdd node -> Const name of its bias
        for name in order:
            n = by_name[name]
            if n.op in _CONVS:
                cnode, w = const_value(by_name, n.input[1])
                if cnode is not None:
                    self.variables[cnode.name] = tf.Variable(w.astype(np.float32), name=_safe(cnode.name))
                    self.weight_of[name] = cnode.name
            elif n.op == "BiasAdd":
                cnode, b = const_value(by_name, n.input[1])
                if cnode is not None:
                    self.variables[cnode.name] = tf.Variable(b.astype(np.float32), name=_safe(cnode.name))
                    self.bias_of[name] = cnode.name
        # tensors an int8 TFLite model materializes: the end of each fused group
        self.points: List[str] = []
        for name in order:
            n = by_name[name]
            if n.op in ("Const", "Identity", "Placeholder"):
                continue
            nxt = [u for u, _ in users.get(name, []) if u.name in seen]
            fused = len(nxt) == 1 and (
                (n.op in _CONVS and nxt[0].op in _BIASES + _ACTIVATIONS)
                or (n.op in _BIASES and nxt[0].op in _ACTIVATIONS))
            if not fused or name == output_name:
                self.points.append(name)
        self.ranges: Dict[str, Tuple[float, float]] = {}

    # -- evaluation -------------------------------------------------------------------
    def _const(self, ref: str, original: bool = False):
        node, v = const_value(self.by_name, ref)
        if not original and node is not None and node.name in self.variables:
            return self.variables[node.name]
        return v

    def _weights(self, name: str, quantize: bool, original: bool = False):
        tf = self.tf
        if original:
            return self._const(self.by_name[name].input[1], original=True)
        w = self.variables[self.weight_of[name]]
        if not quantize:
            return w
        if self.by_name[name].op == "DepthwiseConv2dNative":
            kh, kw, cin, mult = w.shape
            flat = tf.reshape(w, [kh, kw, cin * mult])
            m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=[0, 1]), 1e-8))
            q = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -m, m, num_bits=8, narrow_range=True)
            return tf.reshape(q, w.shape)
        m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(w), axis=[0, 1, 2]), 1e-8))
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(w, -m, m, num_bits=8, narrow_range=True)

    def __call__(self, images, quantize: bool = False, original: bool = False, trace: Optional[dict] = None):
        """The output heatmaps: of the float graph (``original``: with the weights it was built
        from, not the trained ones) or of its int8 simulation (``quantize``).  ``trace`` receives
        the value at every quantization point (after its simulated rounding)."""
        tf = self.tf
        const = functools.partial(self._const, original=original)
        vals: Dict[str, object] = {}

        def get(ref: str):
            base = node_name(ref)
            return vals[base]

        for name in self.order:
            n = self.by_name[name]
            op = n.op
            if op == "Placeholder":
                y = tf.convert_to_tensor(images, tf.float32)
            elif op == "Const":
                continue
            elif op == "Identity":
                if self.by_name[node_name(n.input[0])].op == "Const":
                    continue
                y = get(n.input[0])
            elif op in _CONVS:
                x = get(n.input[0])
                w = self._weights(name, quantize and name not in self.float_nodes, original) \
                    if name in self.weight_of else const(n.input[1])
                strides = list(n.attr["strides"].list.i)
                dil = list(n.attr["dilations"].list.i) or [1, 1, 1, 1]
                pad = n.attr["padding"].s.decode()
                if op == "Conv2D":
                    y = tf.nn.conv2d(x, w, strides, pad, dilations=dil)
                else:
                    y = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=w, strides=strides, padding=pad,
                                                         dilations=dil)
            elif op == "BiasAdd":
                y = tf.nn.bias_add(get(n.input[0]), const(n.input[1]))
            elif op in ("FusedBatchNorm", "FusedBatchNormV3"):
                g, b, mu, var = (np.asarray(const(r), np.float32) for r in n.input[1:5])
                s = g / np.sqrt(var + n.attr["epsilon"].f)
                y = get(n.input[0]) * s + (b - mu * s)
            elif op == "Relu":
                y = tf.nn.relu(get(n.input[0]))
            elif op == "Relu6":
                y = tf.nn.relu6(get(n.input[0]))
            elif op in ("Add", "AddV2"):
                y = get(n.input[0]) + get(n.input[1])
            elif op == "Mul":
                a, b = (vals[node_name(r)] if node_name(r) in vals else np.asarray(const(r), np.float32)
                        for r in n.input[:2])
                y = a * b
            elif op == "ConcatV2":
                axis = int(const(n.input[-1]))
                y = tf.concat([get(r) for r in n.input[:-1]], axis)
            elif op == "ResizeBilinear":
                size = np.asarray(const(n.input[1]), np.int32)
                y = tf.raw_ops.ResizeBilinear(images=get(n.input[0]), size=size,
                                              align_corners=n.attr["align_corners"].b,
                                              half_pixel_centers=n.attr["half_pixel_centers"].b)
            elif op == "MaxPool":
                y = tf.nn.max_pool2d(get(n.input[0]), list(n.attr["ksize"].list.i), list(n.attr["strides"].list.i),
                                     n.attr["padding"].s.decode())
            else:
                raise NotImplementedError(f"fine-tuning cannot evaluate op {op} ({name})")
            if quantize and name in self.ranges and name not in self.float_nodes:
                lo, hi = self.ranges[name]
                y = tf.quantization.fake_quant_with_min_max_vars(y, lo, hi, num_bits=8)
            vals[name] = y
        if trace is not None:
            trace.update({k: v for k, v in vals.items() if k in self.points})
        return vals[self.output_name]

    def calibrate(self, images: Sequence[np.ndarray], batch: int = 8) -> None:
        """Per-tensor (min, max) of every quantization point over ``images`` (float graph), widened
        to contain 0 as TFLite's int8 ranges do."""
        lo = {p: 0.0 for p in self.points}
        hi = dict(lo)
        for i in range(0, len(images), batch):
            trace: Dict[str, object] = {}
            self(np.stack(images[i:i + batch]).astype(np.float32), trace=trace)
            for name, y in trace.items():
                lo[name] = min(lo[name], float(self.tf.reduce_min(y)))
                hi[name] = max(hi[name], float(self.tf.reduce_max(y)))
        self.ranges = {p: (lo[p], max(hi[p], lo[p] + 1e-6)) for p in self.points}

    def ranges_from_model(self, tflite: bytes) -> int:
        """Take the quantization grid of every point from a converted int8 model of this graph
        (matched by name: a TFLite tensor's name lists the graph nodes fused into it, ``;``-separated).

        The converter does not always keep a tensor's own calibrated range: a projection
        convolution feeding a residual ``Add`` gets the sum's scale, tensors around a concatenation
        get the concatenation's.  Simulating the real grid is what makes the fine-tuning carry over
        to the converted model.  Returns how many points were matched (the others keep the ranges
        they had)."""

        int8 = load_schema().TensorType.INT8
        g = read_model(tflite).subgraphs[0]
        found: Dict[str, Tuple[float, float]] = {}
        for t in g.tensors:
            qp = t.quantization
            if qp is None or qp.scale is None or len(qp.scale) != 1 or qp.zeroPoint is None:
                continue
            scale, zero = float(qp.scale[0]), int(qp.zeroPoint[0])
            if t.type != int8 or scale <= 0:
                continue
            for part in tensor_name(t).split(";"):
                found.setdefault(part, ((-128 - zero) * scale, (127 - zero) * scale))
        hit = 0
        for p in self.points:
            if p in found:
                self.ranges[p] = found[p]
                hit += 1
        return hit

    def write_back(self, graph_def) -> object:
        """A copy of ``graph_def`` whose trainable Const nodes hold the current variable values."""
        tf = self.tf
        from tensorflow.python.framework import tensor_util  # noqa: PLC0415

        out = tf.compat.v1.GraphDef()
        out.CopyFrom(graph_def)
        for n in out.node:
            if n.name in self.variables:
                n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(self.variables[n.name].numpy()))
        return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)


def random_crop(frame: np.ndarray, rng: np.random.Generator, in_w: int, in_h: int) -> np.ndarray:
    """One strongly augmented model input from a photo: the padded whole frame zoomed 0.45..1.3x,
    shifted, rotated up to 25 degrees, maybe mirrored, with brightness/contrast/colour changes and
    sensor noise (black outside the frame, as the daemon's crops)."""
    import cv2  # noqa: PLC0415

    fh, fw = frame.shape[:2]
    side = max(fw, fh) * rng.uniform(0.45, 1.3)
    cx = fw / 2 + rng.uniform(-0.2, 0.2) * side
    cy = fh / 2 + rng.uniform(-0.2, 0.2) * side
    m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-25, 25), in_w / side)
    m[0, 2] += in_w / 2 - cx
    m[1, 2] += in_h / 2 - cy
    img = cv2.warpAffine(frame, m, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0)).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img * rng.uniform(0.6, 1.4) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).round().astype(np.float32)


def mix(batch: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Blend a ``share`` of the images of ``batch`` with another image of it (weight uniform in 0..1)."""
    out = batch.copy()
    n = len(batch)
    for i in np.flatnonzero(rng.random(n) < share):
        lam = rng.random()
        out[i] = np.round(lam * batch[i] + (1.0 - lam) * batch[int(rng.integers(n))])
    return out


def finetune(graph_def, input_name: str, output_name: str, calibration: Sequence[np.ndarray],
             photos: Sequence[np.ndarray], spec: FineTune, holdout: Sequence[np.ndarray] = (),
             reference: Optional[bytes] = None, float_groups: Sequence[str] = ()) -> Tuple[object, List[str]]:
    """Fold batch norms, then distill the float graph into its int8 simulation for ``spec.steps``
    Adam steps, each on ``spec.batch`` fresh :func:`random_crop` of ``photos`` (BGR frames).
    Activation ranges come from the ``calibration`` crops; ``holdout`` crops (not trained on) show
    whether the gain carries over.  ``float_groups``: the blocks (:func:`quantize.layer_group`) a
    mixed model keeps in float, simulated in float.  Returns the graph with the trained weights and
    report notes."""
    if spec.steps <= 0:
        return graph_def, []
    tf = tensorflow()
    gd, notes = fold_batch_norms(graph_def)
    sim = QuantSim(gd, input_name, output_name, float_groups)
    in_h, in_w = np.asarray(calibration[0]).shape[:2]
    hit = sim.ranges_from_model(reference) if reference is not None else 0
    if reference is not None:
        notes.append(f"fine-tuning simulates the int8 grid of the plain conversion at {hit} of "
                     f"{len(sim.points)} tensors")
    if hit < len(sim.points):  # own calibration for the points the reference does not cover
        matched = dict(sim.ranges)
        sim.calibrate([np.asarray(i, np.float32) for i in calibration])
        sim.ranges.update(matched)
    variables = list(sim.variables.values())
    # cosine decay to 0: big steps first, then settle (a constant rate keeps the loss noisy)
    opt = tf.keras.optimizers.Adam(learning_rate=tf.keras.optimizers.schedules.CosineDecay(
        spec.learning_rate, spec.steps))

    @tf.function
    def step(x):
        y = sim(x, original=True)
        weight = 1.0
        if spec.peak_floor > 0:
            peak = tf.reduce_max(y, axis=(1, 2), keepdims=True)
            weight = 1.0 / (tf.square(peak) + spec.peak_floor ** 2)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(weight * tf.square(sim(x, quantize=True) - y))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    def batches(images) -> List[np.ndarray]:
        return [np.stack(images[i:i + spec.batch]).astype(np.float32) for i in range(0, len(images), spec.batch)]

    sets = [("calibration crops", batches(calibration))] + \
        ([("held-out crops", batches(holdout))] if len(holdout) else [])
    teacher = [[sim(x, original=True) for x in xs] for _, xs in sets]  # fixed: the original weights

    def sim_error(xs, ys) -> float:
        errs = [float(tf.reduce_mean(tf.square(sim(x, quantize=True) - y))) * len(x) for x, y in zip(xs, ys)]
        return float(np.sum(errs) / max(1, sum(len(x) for x in xs)))

    before = [sim_error(xs, ys) for (_, xs), ys in zip(sets, teacher)]
    rng = np.random.default_rng(spec.seed)
    losses = []
    for k in range(spec.steps):
        x = np.stack([random_crop(photos[int(rng.integers(len(photos)))], rng, in_w, in_h)
                      for _ in range(spec.batch)])
        if spec.mixup > 0:
            x = mix(x, rng, spec.mixup)
        losses.append(float(step(x)))
        if (k + 1) % 50 == 0:
            log.info("fine-tune step %d/%d: loss %.3g", k + 1, spec.steps, float(np.mean(losses[-50:])))
    after = [sim_error(xs, ys) for (_, xs), ys in zip(sets, teacher)]
    notes.append(f"quantization-aware fine-tuning: {spec.steps} steps of {spec.batch} augmented crops, "
                 "simulated int8 heatmap MSE " + ", ".join(
                     f"on the {label} {b:.3g} -> {a:.3g}" for (label, _), b, a in zip(sets, before, after)))
    return sim.write_back(gd), notes
