"""Bounded fuzz tests (hypothesis) of the parsers that take data across a trust boundary on the daemon's
side (issue 23): config files, source URIs and model files.  Each may only succeed or raise edgepose's
own one-line error; any other exception (a traceback for the user) fails the test with the example.

Each test is bounded by a fixed number of examples and no database (the same inputs on every run of a
given hypothesis version, so a failure is reproducible); each takes well under 20 s here.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepose.capture.sources import parse_source
from edgepose.core import config as config_mod
from edgepose.core.errors import ConfigError, EdgeposeError, ModelError
from edgepose.inference.engine import Engine

from conftest import MIRROR

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --- config files ---------------------------------------------------------------------------------

SECTIONS = {s.name: list(config_mod._section_fields(s.name)) for s in config_mod.sections()}
_names = st.sampled_from(sorted(SECTIONS) + ["mqttx", "camera.sub", '"quoted key"', "a b"])


def _toml_string(text: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


_values = st.one_of(
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(
        repr(f), repr(f))),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=40).map(_toml_string),
    st.sampled_from(["[1, 2]", "[]", "{a = 1}", "1979-05-27T07:32:00Z", "07:32:00", "'lit'", '"""multi\nline"""',
                     "0x_ff", "1e999", "-0.0", "+inf", "[[1], ['a']]", "1" + "0" * 400, "-" + "9" * 40]),
)


@st.composite
def toml_documents(draw):
    """Mostly well-formed TOML over edgepose's real sections and keys (so values reach the checks), some
    of it malformed, with values of every TOML type and strings with control characters."""
    lines = []
    for section in draw(st.lists(_names, max_size=5, unique=True)):  # a repeated table is a syntax error
        lines.append(f"[{section}]")
        keys = SECTIONS.get(section, ["x"]) + ["unknown", "source.deep"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(_values)}")
    if draw(st.booleans()):  # a key outside any section, or plain noise
        lines.insert(0, draw(st.sampled_from(["source = 1", "camera = 2", "[[camera]]", "= 1", "[", "\x00"])))
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.text(max_size=60)))
    return "\n".join(lines) + "\n"


@settings(FUZZ, max_examples=200)
@given(text=toml_documents())
def test_a_config_file_either_loads_or_is_one_config_error(text, tmp_path):
    path = tmp_path / "edgepose.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = config_mod.load(str(path), environ={})
    except ConfigError as e:
        assert "\n" not in str(e)  # one line, whatever the file held
        return
    assert cfg.path == str(path)


@FUZZ
@given(data=st.binary(max_size=200))
def test_config_bytes_that_are_not_text_are_one_config_error(data, tmp_path):
    path = tmp_path / "edgepose.toml"
    path.write_bytes(data)
    try:
        config_mod.load(str(path), environ={})
    except ConfigError as e:
        assert "\n" not in str(e)


@FUZZ
@given(values=st.dictionaries(st.sampled_from([f"EDGEPOSE_{s}_{k}".upper() for s in SECTIONS for k in SECTIONS[s]]
                                              + ["EDGEPOSE_CAMERA_NOPE"]), st.text(max_size=30), max_size=4))
def test_environment_values_either_load_or_are_one_config_error(values):
    try:
        config_mod.load(None, environ=values)
    except ConfigError as e:
        assert "\n" not in str(e)


# --- source URIs --------------------------------------------------------------------------------------

_uri_parts = st.one_of(
    st.sampled_from(["http://", "https://", "rtsp://", "udp://", "csi://", "/dev/video", "~", "~nobody-here/",
                     "[", "]", "::1", "[::1", "@", ":", "user:pw@", "/", "*", "?", ".jpg", ".mp4", "..", "%",
                     "%00", "0", "99999", "\n", "\x00", "\t", "x" * 300, "d/" * 200, " "]),
    st.text(alphabet=string.printable, max_size=12),
    st.text(max_size=8),
)


@FUZZ
@given(parts=st.lists(_uri_parts, max_size=6))
def test_a_source_uri_is_classified_or_one_edgepose_error(parts):
    uri = "".join(parts)
    try:
        spec = parse_source(uri)
    except EdgeposeError as e:
        assert e.exit_code in (64, 66) and "\n" not in str(e)
        return
    assert spec.kind in ("camera", "v4l2", "stream", "csi", "snapshot", "video", "image", "images")


# --- model files ----------------------------------------------------------------------------------------

HOURGLASS = (MIRROR / "hourglass" / "model.tflite").read_bytes()  # the smaller float model (1.7 MB)
TABLES = len(HOURGLASS) - 80_000  # past the weights: the flatbuffer tables (ops, tensors, shapes)


@st.composite
def damaged_models(draw):
    data = bytearray(HOURGLASS)
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    lo = draw(st.sampled_from([0, TABLES]))  # anywhere, or where a flip changes the graph
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(lo, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture
def memory_bound():
    """While the test runs, this process may map at most 4 GB more than it has (RLIMIT_AS, restored after):
    a damaged model that asks for tens of gigabytes fails here instead of taking the shared machine's
    memory until the kernel kills something."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (4 << 30), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@settings(FUZZ, max_examples=120)
@given(data=damaged_models())
def test_a_damaged_model_file_loads_and_runs_or_is_one_model_error(data, tmp_path, memory_bound):
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    try:
        engine = Engine(path, threads=1)
    except ModelError as e:
        assert "\n" not in str(e)
        return
    w, h = engine.input_size
    out = engine.run(np.zeros((h, w, 3), np.uint8))  # it proved itself on one inference: it runs again
    assert out.ndim == 3
