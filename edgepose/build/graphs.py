"""Frozen TensorFlow graph (GraphDef) helpers shared by the rewrites (quantize) and fine-tuning (finetune)."""

from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

import numpy as np

from edgepose.core.errors import RuntimeMissingError


def tensorflow():
    """Import TensorFlow lazily (only the workstation converter needs it)."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # deterministic calibration runs
        import tensorflow as tf  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeMissingError(
            f"quantizing needs the TensorFlow converter ({e}); install it with "
            "`pip install 'edgepose[convert]'` on a workstation") from None
    return tf


def node_name(ref: str) -> str:
    """The node an input reference names (``^ctrl``, ``node:1`` -> ``node``)."""
    return ref.lstrip("^").split(":")[0]


def const_node(graph_def, name: str, value: np.ndarray):
    """Add a Const node ``name`` holding ``value``."""
    tf = tensorflow()
    from tensorflow.python.framework import tensor_util  # noqa: PLC0415

    n = graph_def.node.add()
    n.name, n.op = name, "Const"
    n.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    return n


def consumers_of(graph_def) -> Dict[str, List[Tuple[object, int]]]:
    """Node name -> [(consumer node, input index)], control inputs included."""
    out: Dict[str, List[Tuple[object, int]]] = {}
    for n in graph_def.node:
        for i, ref in enumerate(n.input):
            out.setdefault(node_name(ref), []).append((n, i))
    return out


def const_value(by_name: dict, ref: str):
    """The Const node behind ``ref`` (through Identity nodes) and its value."""
    from tensorflow.python.framework import tensor_util  # noqa: PLC0415

    n = by_name[node_name(ref)]
    while n.op == "Identity":
        n = by_name[node_name(n.input[0])]
    if n.op != "Const":
        return None, None
    return n, tensor_util.MakeNdarray(n.attr["value"].tensor)


def layer_group(name: str) -> str:
    """The block an op belongs to, from its output tensor name (``part_2_3``, ``stage_1_mv2_2`` ...)."""
    base = name.split(";")[0]
    m = re.search(r"(part_\d+_\d+|stage_\d+_mv\d_\d+|stage_\d+_mv1|Conv2d_0)", base)
    if m:
        return m.group(1)
    parts = base.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]
