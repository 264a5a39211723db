"""`edgepose models list/pull/info/verify` and the model cache, on the real upstream files.

The mirror is ../shared/models, served as a directory and over HTTP by a
local ``http.server`` started here (loopback only).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import pytest

from edgepose import models
from edgepose.errors import InputMissingError, ModelError

from conftest import MIRROR, run_cli


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def env(edgepose_env, cache):
    e = dict(edgepose_env)
    e["EDGEPOSE_MODEL_DIR"] = str(cache)
    return e


@pytest.fixture
def http_mirror(tmp_path):
    """../shared/models over HTTP on a free loopback port (plus a broken copy under /bad)."""
    bad = tmp_path / "www" / "bad" / "hourglass"
    bad.mkdir(parents=True)
    data = (MIRROR / "hourglass" / "model.tflite").read_bytes()
    (bad / "model.tflite").write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, one bit flipped
    for sub in ("cpm", "hourglass"):
        (tmp_path / "www" / sub).symlink_to(MIRROR / sub)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_list_shows_catalogue_and_cache_state(env, cache):
    r = run_cli(["models", "list", "--json"], env)
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert {"cpm", "hourglass", "cpm-pb", "cpm-int8", "hourglass-int8", "cpm-float16",
            "hourglass-float16"} <= set(rows)
    assert rows["cpm"]["state"] == "not cached"
    assert rows["cpm-int8"]["kind"].startswith("local (int8 from cpm-pb)")
    r = run_cli(["models", "pull", "hourglass"], env)
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(run_cli(["models", "list", "--json"], env).stdout)}
    assert rows["hourglass"]["state"] == "cached"
    text = run_cli(["models", "list"], env).stdout
    assert "hourglass" in text and "cached" in text


def test_pull_from_directory_mirror_verifies_and_caches(env, cache):
    r = run_cli(["models", "pull", "cpm"], env)
    assert r.returncode == 0, r.stderr
    path = cache / "cpm" / "model.tflite"
    assert path.is_file() and models.sha256_of(path) == models.load_catalogue()["cpm"].sha256
    assert "100%" in r.stderr  # the progress bar finished
    assert not list((cache / "cpm").glob(".fetch-*"))  # no temporary files left behind


def test_pull_over_http_mirror(http_mirror, cache):
    path = models.resolve("hourglass", cache_dir=cache, mirror=http_mirror)
    assert models.sha256_of(path) == models.load_catalogue()["hourglass"].sha256
    # the CLI too, with --mirror
    r = run_cli(["models", "--model-dir", str(cache / "cli"), "--mirror", http_mirror, "pull", "cpm"],
                {"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert (cache / "cli" / "cpm" / "model.tflite").is_file()


def test_checksum_mismatch_from_mirror_is_refused(http_mirror, cache, tmp_path):
    with pytest.raises(ModelError, match="checksum mismatch|failed verification"):
        models.resolve("hourglass", cache_dir=cache, mirror=http_mirror + "/bad")
    assert not (cache / "hourglass" / "model.tflite").exists()
    # same from a directory mirror, through the CLI: one line, exit 65, nothing cached
    bad_dir = tmp_path / "badmirror" / "hourglass"
    bad_dir.mkdir(parents=True)
    data = (MIRROR / "hourglass" / "model.tflite").read_bytes()
    (bad_dir / "model.tflite").write_bytes(data[:1000] + b"x" + data[1001:])
    r = run_cli(["models", "--model-dir", str(cache), "--mirror", str(tmp_path / "badmirror"), "pull",
                 "hourglass"], {"PATH": "/usr/bin:/bin"})
    assert r.returncode == 65
    assert "Traceback" not in r.stderr and "checksum" in r.stderr
    assert not (cache / "hourglass" / "model.tflite").exists()


def test_truncated_cache_file_is_detected(env, cache):
    assert run_cli(["models", "pull", "hourglass"], env).returncode == 0
    path = cache / "hourglass" / "model.tflite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        models.resolve("hourglass", cache_dir=cache)
    r = run_cli(["models", "verify"], env)
    assert r.returncode == 65 and "truncated" in r.stdout and "Traceback" not in r.stderr
    rows = {x["name"]: x for x in json.loads(run_cli(["models", "list", "--json"], env).stdout)}
    assert rows["hourglass"]["state"] == "CORRUPT"
    # pull --force repairs it
    assert run_cli(["models", "pull", "hourglass", "--force"], env).returncode == 0
    r = run_cli(["models", "verify"], env)
    assert r.returncode == 0, r.stdout
    assert "hourglass" in r.stdout and "ok" in r.stdout


def test_verify_checks_built_variants_against_their_report(cache):
    entry = models.load_catalogue()["hourglass-int8"]
    path = entry.cache_file(cache)
    path.parent.mkdir(parents=True)
    shutil.copy(MIRROR / "hourglass" / "model.tflite", path)  # stands in for a built file
    states = dict(models.verify_cache(cache))
    assert states["hourglass-int8"].startswith("BAD") and "report" in states["hourglass-int8"]
    models.report_path(path).write_text(json.dumps({"sha256": models.sha256_of(path)}))
    assert dict(models.verify_cache(cache))["hourglass-int8"] == "ok"
    with open(path, "ab") as fh:
        fh.write(b"\0")
    assert "checksum mismatch" in dict(models.verify_cache(cache))["hourglass-int8"]


def test_local_variant_not_built_says_how_to_build_it(cache):
    with pytest.raises(InputMissingError, match="edgepose models quantize cpm-pb --mode int8"):
        models.resolve("cpm-int8", cache_dir=cache, mirror=str(MIRROR))


def test_unknown_model_and_missing_action(env):
    r = run_cli(["models", "pull", "nosuchmodel"], env)
    assert r.returncode == 78 and "unknown model" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["models"], env)
    assert r.returncode == 64 and "Traceback" not in r.stderr
    r = run_cli(["models", "info", "/nonexistent/model.tflite"], env)
    assert r.returncode == 66 and "Traceback" not in r.stderr


@pytest.mark.parametrize("name,grid,flops", [("cpm", 96, 0.555e9), ("hourglass", 48, 0.537e9)])
def test_info_on_upstream_models(env, name, grid, flops):
    r = run_cli(["models", "info", name, "--json"], env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [1, 192, 192, 3] and info["inputs"][0]["dtype"] == "float32"
    assert info["outputs"][0]["shape"] == [1, grid, grid, 14]
    assert info["quantized"] == "float32"
    assert abs(info["flops"] - flops) / flops < 0.02  # the shared README's measured compute
    assert info["ops"]["CONV_2D"] > 90 and info["ops"]["RELU"] == 52  # the standalone RELUs
    d = info["delegation"]
    assert d["prepared"] and d["partitions"] == 1 and d["delegated_nodes"] == d["total_nodes"]
    assert info["size_bytes"] == models.load_catalogue()[name].size
    text = run_cli(["models", "info", name], env).stdout
    assert "xnnpack    1 partition(s)" in text and "GFLOP" in text
