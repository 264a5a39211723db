"""Schema v1 payloads (one per frame), the retained meta and status documents; v2 for multi-person models.

The same dict goes to stdout (one JSON line) and to the MQTT pose topic.  A multi-person model's
payload is v2: every v1 field (``keypoints``, ``score``, ``present`` describe the highest-scoring
person, so a v1 subscriber still draws one) plus ``people``: each person's ``id``, ``score``, ``box``
and ``keypoints`` by name (docs/mqtt.md).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict, cast

from edgepose.core.people import Person
from edgepose.core.pose import KeypointDoc, Pose, skeleton_for

SCHEMA_VERSION = 1
PEOPLE_SCHEMA_VERSION = 2  # a payload with a `people` list (multi-person models)
STATUS_SCHEMA_VERSION = 1  # the status document's `v`
MAX_PEOPLE = 1000
MAX_FRAME_SIDE = 16384  # what a subscriber accepts as a frame size (it draws on a canvas bounded by its output)
MAX_COORDINATE = 2 * MAX_FRAME_SIDE  # keypoints may lie a little outside the frame, never this far
MAX_SEQ = 2 ** 63 - 1
MAX_KEYPOINTS = 1000  # skeleton indices a meta document may use when it names no keypoints
MAX_MESSAGE_BYTES = 1 << 20  # a pose is about 1.5 KB, meta and status a few KB


class FrameSize(TypedDict):
    width: int
    height: int


class _PosePayloadBase(TypedDict):
    v: int
    device: str
    seq: int
    ts: float
    frame: FrameSize
    model: str
    score: float
    present: bool
    keypoints: List[KeypointDoc]
    latency_ms: Dict[str, float]


class PosePayload(_PosePayloadBase, total=False):
    """One frame's payload (schema v1; v2 adds ``people``: docs/mqtt.md)."""

    people: List[Dict[str, Any]]


class _MetaBase(TypedDict):
    v: int
    device: str
    model: str
    family: str
    keypoints: List[str]
    skeleton: List[List[int]]
    input: FrameSize
    coordinates: str
    sides: str
    edgepose_version: str


class Meta(_MetaBase, total=False):
    """The retained meta document: what a subscriber needs to draw poses (``heatmap``: the model's grid)."""

    heatmap: FrameSize


def make_payload(device: str, seq: int, ts: float, frame_size: Tuple[int, int], model: str,
                 pose: Pose, latency_ms: Mapping[str, float],
                 people: Optional[Sequence[Person]] = None) -> PosePayload:
    """One frame's payload: v1, or v2 with ``people`` when they are given (a multi-person model)."""
    doc: PosePayload = {
        "v": SCHEMA_VERSION if people is None else PEOPLE_SCHEMA_VERSION,
        "device": device,
        "seq": seq,
        "ts": round(ts, 6),
        "frame": {"width": int(frame_size[0]), "height": int(frame_size[1])},
        "model": model,
        "score": round(pose.score, 4),
        "present": bool(pose.present),
        "keypoints": pose.keypoint_dicts(),
        "latency_ms": {k: round(float(latency_ms.get(k, 0.0)), 3)
                       for k in ("capture", "preprocess", "infer", "decode", "total")},
    }
    if people is not None:
        doc["people"] = [p.to_dict() for p in people]
    return doc


def make_meta(device: str, model: str, names: Sequence[str], input_size: Tuple[int, int],
              grid: Optional[Tuple[int, int]], version: str, skeleton: Optional[Sequence[Sequence[int]]] = None,
              family: str = "heatmap") -> Meta:
    """What a subscriber needs to draw poses without hard-coding anything.

    ``grid``: (width, height) of the heatmap, None for a model without one (``heatmap`` is then left
    out); ``skeleton``: the model's bones (default: those of the layout ``names`` is).
    """
    bones = skeleton_for(names) if skeleton is None else skeleton
    meta: Dict[str, Any] = {  # in this key order (``heatmap`` before the prose), then checked as a Meta
        "v": SCHEMA_VERSION,
        "device": device,
        "model": model,
        "family": family,
        "keypoints": list(names),
        "skeleton": [list(e) for e in bones if max(e) < len(names)],
        "input": {"width": int(input_size[0]), "height": int(input_size[1])},
    }
    if grid is not None:
        meta["heatmap"] = {"width": int(grid[0]), "height": int(grid[1])}
    meta.update({
        "coordinates": "frame pixels, origin top-left, x right, y down; pixel k covers [k, k+1)",
        "sides": "person-centric (right_* is the person's right)",
        "edgepose_version": version,
    })
    return cast(Meta, meta)


class InferMs(TypedDict):
    """Inference latency percentiles (ms) over the recent window; None before the first frame."""

    p50: Optional[float]
    p95: Optional[float]


class XnnpackDelegation(TypedDict):
    """How much of the model XNNPACK took (``xnnpack_delegation`` in status; docs/mqtt.md)."""

    partitions: int
    delegated_ops: int
    total_ops: int
    int8_ops: int
    int8_delegated: int


class _ReloadBase(TypedDict):
    ok: bool
    ts: float


class Reload(_ReloadBase, total=False):
    """The outcome of the last SIGHUP: the sections it ``changed``, or the ``error`` that kept the running
    configuration."""

    changed: List[str]
    error: str


class PreviewStats(TypedDict):
    """The preview page's counters (``preview`` in the page's ``/status.json``)."""

    url: str
    clients: int
    encoded: int
    served: int
    max_fps: float


class _StatusBase(TypedDict):
    v: int
    device: str
    ts: float
    fps: float
    infer_ms: InferMs
    frames: int
    uptime_s: float
    cpu_temp_c: Optional[float]
    version: str
    score: Optional[float]


class RunningStatus(TypedDict, total=False):
    """The status fields of the running engine and source (the daemon has them once it built them: all of
    them, tests/test_status_doc.py)."""

    dropped_frames: int
    camera: str  # the source's state (capture.sources.SourceState's value)
    model: str
    backend: str
    backend_version: str
    xnnpack: bool
    xnnpack_delegation: Optional[XnnpackDelegation]
    threads: int


class Status(_StatusBase, RunningStatus, total=False):
    """The daemon's status document (docs/mqtt.md "status"; :func:`make_status`), in this key order: the
    :class:`RunningStatus` fields once the engine and source run, ``reload`` after a SIGHUP, ``people`` with
    a multi-person model.  The preview page adds ``preview``; the status topic carries a
    :class:`PublishedStatus`."""

    reload: Reload
    people: int
    preview: PreviewStats


class _SinkFields(TypedDict):
    broker: str  # the sink's connection state, or what went wrong (docs/mqtt.md)
    published: int
    queued: int
    dropped_messages: int
    rate_limited: int
    connects: int
    qos: int


class SinkStatus(_SinkFields):
    """What the MQTT sink puts into the status document when it publishes it (:func:`with_sink_status`)."""

    device: str
    ts: float


class PublishedStatus(Status, _SinkFields):
    """The document on the status topic: the daemon's :class:`Status`, then the sink's fields."""


def make_status(device: str, ts: float, fps: float, infer_ms: InferMs, frames: int, uptime_s: float,
                cpu_temp_c: Optional[float], version: str, score: Optional[float],
                running: Optional[RunningStatus] = None, reload: Optional[Reload] = None,
                people: Optional[int] = None) -> Status:
    """The daemon's status document (sinks publish it on their own schedule, :func:`with_sink_status`)."""
    doc: Status = {
        "v": STATUS_SCHEMA_VERSION, "device": device, "ts": round(ts, 3), "fps": round(fps, 2), "infer_ms": infer_ms,
        "frames": frames, "uptime_s": round(uptime_s, 1), "cpu_temp_c": cpu_temp_c, "version": version,
        "score": score,
    }
    if running is not None:
        doc = {**doc, **running}
    if reload is not None:
        doc["reload"] = reload.copy()  # the document is not tied to the daemon's state
    if people is not None:
        doc["people"] = people
    return doc


def with_sink_status(status: Status, sink: SinkStatus) -> PublishedStatus:
    """The document on the status topic: ``status`` with the sink's fields (``device`` and ``ts`` replaced
    where they are, the others appended in the order the sink gives them)."""
    return {**status, **sink}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_message(data: bytes, strict: bool = False) -> Tuple[Any, Optional[str]]:
    """(document, None) for a message received over MQTT, or (None, why it is not one).

    Messages over :data:`MAX_MESSAGE_BYTES` and nesting deeper than Python recurses are refused;
    ``strict`` also refuses NaN and Infinity (for documents passed on to a browser, whose JSON.parse
    refuses them; in a pose they are caught by :func:`pose_problem`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None, f"larger than {MAX_MESSAGE_BYTES} bytes"
    try:
        text = data.decode("utf-8", "replace")
        return (json.loads(text, parse_constant=_refuse_constant) if strict else json.loads(text)), None
    except (ValueError, RecursionError):
        return None, "not JSON"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def pose_problem(doc: Any) -> Optional[str]:
    """Why a received pose payload cannot be drawn (None: it can).  Subscribers must not trust the wire:
    anyone who can publish to the broker can send anything on a pose topic."""
    number = _number

    if not isinstance(doc, dict):
        return "not a JSON object"
    frame = doc.get("frame", {})
    if not isinstance(frame, dict):
        return "frame is not an object"
    for key in ("width", "height"):
        side = frame.get(key, 1)
        if not _int_in(side, 1, MAX_FRAME_SIDE):
            return f"frame.{key} is not an integer from 1 to {MAX_FRAME_SIDE}"
    if "score" in doc and not number(doc["score"]):
        return "score is not a number"
    if "seq" in doc and not _int_in(doc["seq"], 0, MAX_SEQ):
        return f"seq is not an integer from 0 to {MAX_SEQ}"
    if "ts" in doc and not number(doc["ts"]):
        return "ts is not a number"
    lat = doc.get("latency_ms", {})
    if not isinstance(lat, dict) or not all(number(v) for v in lat.values()):
        return "latency_ms is not an object of numbers"
    kps = doc.get("keypoints")
    if not isinstance(kps, list):
        return "keypoints is not a list"
    for kp in kps:
        if not isinstance(kp, dict) or not all(number(kp.get(k)) for k in ("x", "y", "score")):
            return "a keypoint lacks finite numbers x, y and score"
        if abs(kp["x"]) > MAX_COORDINATE or abs(kp["y"]) > MAX_COORDINATE:
            return f"a keypoint lies more than {MAX_COORDINATE} px from the frame"
    return people_problem(doc.get("people", []))


def people_problem(people: Any) -> Optional[str]:
    """Why a v2 payload's ``people`` cannot be drawn (None: it can)."""
    if not isinstance(people, list) or len(people) > MAX_PEOPLE:
        return f"people is not a list of at most {MAX_PEOPLE} people"
    for p in people:
        if not isinstance(p, dict) or not _int_in(p.get("id"), 0, MAX_SEQ) or not _number(p.get("score")):
            return "a person lacks an integer id and a score"
        kps = p.get("keypoints")
        if not isinstance(kps, dict) or not all(
                isinstance(k, dict) and all(_number(k.get(c)) for c in ("x", "y", "score")) for k in kps.values()):
            return "a person's keypoints are not an object of {x, y, score} by name"
        if any(abs(k["x"]) > MAX_COORDINATE or abs(k["y"]) > MAX_COORDINATE for k in kps.values()):
            return f"a keypoint lies more than {MAX_COORDINATE} px from the frame"
    return None


def meta_problem(doc: Any) -> Optional[str]:
    """Why a received meta document cannot be used to draw (None: it can).  Only what drawing relies on is
    checked: the skeleton's bones must join keypoints that exist (other odd fields are shown as they are)."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    names = doc.get("keypoints")
    count = len(names) if isinstance(names, list) else MAX_KEYPOINTS
    bones = doc.get("skeleton", [])
    if not isinstance(bones, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(_int_in(i, 0, count - 1) for i in e) for e in bones):
        return f"skeleton is not a list of [a, b] keypoint indices from 0 to {count - 1}"
    return None



def status_problem(doc: Any) -> Optional[str]:
    """Why a received status document cannot be shown (None: it can); its fields are shown as they are."""
    return None if isinstance(doc, dict) else "not a JSON object"


_PROBLEMS = {"pose": pose_problem, "meta": meta_problem, "status": status_problem}


def read_message(kind: str, data: bytes) -> Tuple[Any, Optional[str]]:
    """A received ``pose``, ``meta`` or ``status`` message: (document, None), or (None, why it is skipped).
    Meta and status are parsed strictly (:func:`parse_message`): they are passed on to browsers."""
    doc, problem = parse_message(data, strict=kind != "pose")
    if problem is None:
        problem = _PROBLEMS[kind](doc)
    return (None, problem) if problem else (doc, None)
