"""Fuzz tests (hypothesis) for every parser of messages that cross the MQTT trust boundary: pose, meta,
status and availability messages as read by `edgepose sub` (tools.sub.Printer), by `edgepose view`
(tools.viewer.DeviceView, then the picture it draws) and by the preview page that `view --serve` runs
(PreviewServer.picture and the /status.json document).  Anyone who can publish to the broker can send
anything; none of these may raise, and what reaches a browser must be JSON it can parse.

Each test is bounded: a fixed number of examples (derandomized: the same ones on every run), no
per-example deadline, and a wall-clock guard.
No mocks: the real parsers, drawing code and JPEG encoder run on every example.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepose.core.payload import MAX_FRAME_SIDE, MAX_MESSAGE_BYTES
from edgepose.output import draw
from edgepose.output.preview import PreviewServer, RateMeter
from edgepose.tools.sub import Printer
from edgepose.tools.viewer import MAX_CANVAS, Canvas, DeviceView, picture

BUDGET_S = 60.0  # per test: a guard against a hang (each takes about 10 s here, 2 cores, loaded)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# numbers as a hostile publisher would pick them: huge, tiny, negative, non-finite, big integers
numbers = st.one_of(st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 1e300, -1e19, 2 ** 63, MAX_FRAME_SIDE, MAX_FRAME_SIDE + 1, 0.5]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
maybe = st.one_of(json_values, numbers)

# poses are mostly well-formed with a field or two hostile: random dicts alone would nearly never get past
# the frame and keypoint checks to the code that draws
names = st.sampled_from(["neck", "head_top", "right_wrist", "left_hip", "nose"])
good_keypoint = st.fixed_dictionaries({"name": names, "x": st.floats(-50, 1000), "y": st.floats(-50, 1000),
                                       "score": st.floats(0, 1)})
bad_keypoint = st.one_of(json_values, st.fixed_dictionaries({}, optional={"name": st.one_of(names, json_values),
                                                                          "x": maybe, "y": maybe, "score": maybe}))
def mostly(good, *bad):
    """``good`` three times out of four, else one of ``bad`` (one_of(good, good, ...) would count good once)."""
    return st.integers(0, 3).flatmap(lambda i: good if i else st.one_of(*bad))


side = st.one_of(st.integers(1, 2000), st.sampled_from([1, MAX_FRAME_SIDE]))
pose_docs = st.fixed_dictionaries({
    "frame": mostly(st.fixed_dictionaries({"width": side, "height": side}), json_values,
                    st.fixed_dictionaries({}, optional={"width": maybe, "height": maybe})),
    "keypoints": mostly(st.lists(good_keypoint, max_size=16), json_values,
                        st.lists(st.one_of(good_keypoint, bad_keypoint), max_size=16)),
}, optional={
    "v": maybe, "device": json_values, "model": json_values, "present": json_values,
    "seq": mostly(st.integers(0, 1000), maybe), "ts": mostly(st.floats(0, 2e9), maybe),
    "score": mostly(st.floats(0, 1), maybe),
    "latency_ms": mostly(st.dictionaries(st.sampled_from(["infer", "total", "capture"]), st.floats(0, 1e4)),
                         st.dictionaries(st.sampled_from(["infer", "total", "capture"]), maybe), json_values),
})
meta_docs = st.fixed_dictionaries({}, optional={
    "keypoints": st.one_of(json_values, st.lists(st.text(max_size=12), max_size=16)),
    "skeleton": st.one_of(json_values, st.lists(st.lists(st.integers(-200, 200), min_size=2, max_size=2), max_size=8),
                          st.lists(st.lists(st.one_of(st.integers(-200, 200), maybe), max_size=3), max_size=8)),
    "model": json_values, "input": json_values})
status_docs = st.one_of(json_values, st.dictionaries(
    st.sampled_from(["fps", "infer_ms", "frames", "ts", "camera", "model", "cpu_temp_c", "preview", "device"]),
    json_values))


def encode(doc) -> bytes:
    return json.dumps(doc).encode()  # NaN and Infinity as Python writes them: JSON.parse refuses them


raw = st.one_of(st.binary(max_size=200), st.just(b"[" * 100000), st.just(b'{"a":' * 50000),
                st.just(b"1" * 5000), st.just(b"x" * (MAX_MESSAGE_BYTES + 1)))
good_poses = st.fixed_dictionaries({
    "v": st.just(1), "device": st.just("dev1"), "seq": st.integers(0, 1000), "ts": st.floats(0, 2e9),
    "frame": st.fixed_dictionaries({"width": side, "height": side}), "score": st.floats(0, 1),
    "present": st.booleans(), "keypoints": st.lists(good_keypoint, min_size=1, max_size=16),
    "latency_ms": st.dictionaries(st.sampled_from(["infer", "total", "capture"]), st.floats(0, 1e4))})
# a good pose with one field, or one field of one keypoint, made hostile
one_bad_field = st.builds(lambda p, k, v: {**p, k: v}, good_poses, st.sampled_from(
    ["v", "device", "seq", "ts", "frame", "score", "present", "keypoints", "latency_ms"]),
                          st.one_of(maybe, st.dictionaries(st.sampled_from(["infer", "total", "width", "height"]),
                                                           maybe)))
one_bad_keypoint = st.builds(
    lambda p, k, v: {**p, "keypoints": [{**kp, k: v} for kp in p["keypoints"][:1]] + p["keypoints"][1:]},
    good_poses, st.sampled_from(["name", "x", "y", "score"]), maybe)
poses = st.tuples(st.just("pose"), st.one_of(pose_docs.map(encode), good_poses.map(encode), one_bad_field.map(encode),
                                             one_bad_keypoint.map(encode), raw))
messages = st.one_of(poses, st.one_of(  # half of them poses: the richest parser
    st.tuples(st.just("meta"), st.one_of(meta_docs.map(encode), raw)),
    st.tuples(st.just("status"), st.one_of(status_docs.map(encode), raw)),
    st.tuples(st.just("availability"), raw),
    st.tuples(st.text(max_size=10), raw),
))


class Budget:
    """Fails the test if its examples take longer than BUDGET_S in all."""

    def __init__(self):
        self.start = time.monotonic()

    def check(self) -> None:
        assert time.monotonic() - self.start < BUDGET_S, "the fuzz test ran past its time budget"


def test_sub_prints_or_skips_any_message():
    budget = Budget()

    @FUZZ
    @given(st.lists(messages, min_size=1, max_size=6), st.booleans())
    def run(batch, json_lines):
        out, info = io.StringIO(), io.StringIO()
        printer = Printer(out, info, json_lines)
        for kind, data in batch:
            printer.handle(f"edgepose/dev1/{kind}", data)
        for line in (out.getvalue() + info.getvalue()).splitlines():
            assert line.isprintable(), line  # no control character forges a line of its own
        if json_lines:
            for line in out.getvalue().splitlines():
                json.loads(line)  # every pose printed with --json is a JSON line
        budget.check()

    run()


def test_view_and_its_page_draw_or_skip_any_message():
    budget = Budget()
    drawn = []
    server = PreviewServer("127.0.0.1:0")  # not started: its drawing and status document are what is fuzzed

    @FUZZ
    @given(st.lists(messages, min_size=1, max_size=6))
    def run(batch):
        view = DeviceView("dev1")
        for kind, data in batch:
            view.on_message(f"edgepose/dev1/{kind}", data)
        canvas, page_canvas, meter = Canvas(), Canvas((server.max_width, MAX_CANVAS[1])), RateMeter()
        for pose in view.take_poses(0):
            fps = meter.add(pose)
            img = picture(canvas, pose, fps, view.meta)  # --out FILE / --window
            assert img.shape[0] <= MAX_CANVAS[1] and img.shape[1] <= MAX_CANVAS[0]
            image, fitted = page_canvas.fit(pose)  # --serve: the page's picture
            server.skeleton = draw.skeleton_from_meta(view.meta)  # as view --serve sets it
            assert server.picture(image, fitted, fps)[:2] == b"\xff\xd8"  # a JPEG
            drawn.append(pose)
        doc = json.dumps(view.status_doc(), allow_nan=False)  # what /status.json hands the browser
        assert isinstance(json.loads(doc), dict)
        budget.check()

    run()
    assert len(drawn) >= 30, f"only {len(drawn)} poses got through to the drawing code"
    print(f"{len(drawn)} poses drawn")


def test_a_good_pose_still_draws():
    """The fuzzing above must not pass by skipping everything: a well-formed pose is drawn."""
    view = DeviceView("dev1")
    pose = {"v": 1, "seq": 1, "ts": 1.0, "frame": {"width": 320, "height": 240}, "score": 0.9, "present": True,
            "latency_ms": {"infer": 5.0, "total": 9.0},
            "keypoints": [{"name": "neck", "x": 160.0, "y": 60.0, "score": 0.9},
                          {"name": "head_top", "x": 160.0, "y": 30.0, "score": 0.9}]}
    view.on_message("edgepose/dev1/meta", encode({"keypoints": ["neck", "head_top"], "skeleton": [[0, 1]]}))
    view.on_message("edgepose/dev1/pose", encode(pose))
    (got,) = view.take_poses(0)
    img = picture(Canvas(), got, None, view.meta)
    assert img.shape == (240, 320, 3) and (np.abs(img.astype(int) - 32) > 60).any()
