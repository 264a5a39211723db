"""`edgepose models list/pull/info/verify` and the model cache, on the real upstream files.

The mirror is ../shared/models, served as a directory and over HTTP by a
local ``http.server`` started here (loopback only).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from edgepose.core.errors import InputMissingError, ModelError
from edgepose.models import registry

from conftest import CALIB, EVAL_ANN, EVAL_IMAGES, MIRROR, REPO, error_lines, mirror_server, run_cli, run_cli_inproc


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
    r = run_cli_inproc(["models", "list", "--json"], env)
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert {"cpm", "hourglass", "cpm-pb", "cpm-int8", "hourglass-int8", "cpm-float16",
            "hourglass-float16"} <= set(rows)
    assert rows["cpm"]["state"] == "not cached"
    assert rows["cpm-int8"]["kind"].startswith("local (int8 from cpm-pb)")
    r = run_cli_inproc(["models", "pull", "hourglass"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("(cached)"), r.stdout  # registry.CacheState's value, not the member
    rows = {x["name"]: x for x in json.loads(run_cli_inproc(["models", "list", "--json"], env).stdout)}
    assert rows["hourglass"]["state"] == "cached"
    text = run_cli_inproc(["models", "list"], env).stdout
    assert re.search(r"^  hourglass +cached ", text, re.M) and re.search(r"^  cpm +not cached ", text, re.M), text


def test_pull_from_directory_mirror_verifies_and_caches(env, cache):
    r = run_cli_inproc(["models", "pull", "cpm"], env)
    assert r.returncode == 0, r.stderr
    path = cache / "cpm" / "model.tflite"
    assert path.is_file() and registry.sha256_of(path) == registry.load_catalogue()["cpm"].sha256
    assert "100%" in r.stderr  # the progress bar finished
    assert not list((cache / "cpm").glob(".fetch-*"))  # no temporary files left behind


def test_pull_over_http_mirror(http_mirror, cache):
    path = registry.resolve("hourglass", cache_dir=cache, mirror=http_mirror)
    assert registry.sha256_of(path) == registry.load_catalogue()["hourglass"].sha256
    # the CLI too, with --mirror
    r = run_cli_inproc(["models", "--model-dir", str(cache / "cli"), "--mirror", http_mirror, "pull", "cpm"],
                       {"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert (cache / "cli" / "cpm" / "model.tflite").is_file()


def test_checksum_mismatch_from_mirror_is_refused(http_mirror, cache, tmp_path):
    with pytest.raises(ModelError, match="checksum mismatch|failed verification"):
        registry.resolve("hourglass", cache_dir=cache, mirror=http_mirror + "/bad")
    assert not (cache / "hourglass" / "model.tflite").exists()
    # same from a directory mirror, through the CLI: one line, exit 65, nothing cached
    bad_dir = tmp_path / "badmirror" / "hourglass"
    bad_dir.mkdir(parents=True)
    data = (MIRROR / "hourglass" / "model.tflite").read_bytes()
    (bad_dir / "model.tflite").write_bytes(data[:1000] + b"x" + data[1001:])
    r = run_cli_inproc(["models", "--model-dir", str(cache), "--mirror", str(tmp_path / "badmirror"), "pull",
                        "hourglass"], {"PATH": "/usr/bin:/bin"})
    assert r.returncode == 65
    assert "Traceback" not in r.stderr and "checksum" in r.stderr
    assert not (cache / "hourglass" / "model.tflite").exists()


def test_truncated_cache_file_is_detected(env, cache):
    assert run_cli_inproc(["models", "pull", "hourglass"], env).returncode == 0
    path = cache / "hourglass" / "model.tflite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        registry.resolve("hourglass", cache_dir=cache)
    r = run_cli_inproc(["models", "verify"], env)
    assert r.returncode == 65 and "truncated" in r.stdout and "Traceback" not in r.stderr
    rows = {x["name"]: x for x in json.loads(run_cli_inproc(["models", "list", "--json"], env).stdout)}
    assert rows["hourglass"]["state"] == "CORRUPT"
    # pull --force repairs it
    assert run_cli_inproc(["models", "pull", "hourglass", "--force"], env).returncode == 0
    r = run_cli_inproc(["models", "verify"], env)
    assert r.returncode == 0, r.stdout
    assert "hourglass" in r.stdout and "ok" in r.stdout


def test_verify_checks_built_variants_against_their_report(cache):
    entry = registry.load_catalogue()["hourglass-int8"]
    path = entry.cache_file(cache)
    path.parent.mkdir(parents=True)
    shutil.copy(MIRROR / "hourglass" / "model.tflite", path)  # stands in for a built file
    states = dict(registry.verify_cache(cache))
    assert states["hourglass-int8"].startswith("BAD") and "report" in states["hourglass-int8"]
    registry.report_path(path).write_text(json.dumps({"sha256": registry.sha256_of(path)}))
    assert dict(registry.verify_cache(cache))["hourglass-int8"] == "ok"
    with open(path, "ab") as fh:
        fh.write(b"\0")
    assert "checksum mismatch" in dict(registry.verify_cache(cache))["hourglass-int8"]


def test_local_variant_not_built_says_how_to_build_it(cache):
    with pytest.raises(InputMissingError, match="`edgepose models quantize cpm-int8 --calib DIR --eval FILE.json`"):
        registry.resolve("cpm-int8", cache_dir=cache, mirror=str(MIRROR))
    with pytest.raises(InputMissingError, match="`edgepose models quantize cpm-float16 --eval FILE.json`"):
        registry.resolve("cpm-float16", cache_dir=cache, mirror=str(MIRROR))


def test_build_hint_is_a_command_that_builds_that_very_variant():
    """Every local-only entry: int8 recipes (mixed too) ask for --calib DIR, the others do not;
    the hint parses as `edgepose models quantize` arguments and names the entry itself."""
    import argparse

    from edgepose.tools import modelcmd

    parser = argparse.ArgumentParser()
    modelcmd.add_arguments(parser)
    cat = registry.load_catalogue()
    local = [e for e in cat.values() if e.local_only]
    assert {e.recipe for e in local} >= {"int8", "float16", "dynamic"}
    for e in local:
        hint = registry.build_hint(e)
        assert hint.startswith(f"edgepose models quantize {e.name} ")
        assert ("--calib DIR" in hint) == (e.recipe == "int8"), hint
        assert "--mode" not in hint and e.source not in hint.split()
        args = parser.parse_args(hint.split()[2:])
        assert modelcmd.variant_for(args.name, args.mode, cat) is e
        assert bool(args.calib) == (e.recipe == "int8") and args.eval == "FILE.json"
    assert registry.build_hint(cat["cpm-int8-mixed"]) == \
        "edgepose models quantize cpm-int8-mixed --calib DIR --eval FILE.json"
    assert (registry.build_hint(cat["hourglass-dynamic"])
            == "edgepose models quantize hourglass-dynamic --eval FILE.json")


@pytest.mark.parametrize("argv", [["models", "info", "cpm-int8-mixed"],
                                  ["run", "--model", "cpm-int8-mixed", "--sink", "none", "--max-frames", "1"]])
def test_unbuilt_mixed_variant_names_its_own_build_command(env, cache, argv):
    if argv[0] == "run":
        argv = argv + ["--source", next(iter(sorted(EVAL_IMAGES.glob("*.jpg"))))]
    r = run_cli_inproc(argv, env)
    assert r.returncode == 66, r.stderr
    assert "Traceback" not in r.stderr
    (line,) = error_lines(r.stderr)
    assert "`edgepose models quantize cpm-int8-mixed --calib DIR --eval FILE.json`" in line
    assert "--mode" not in line and "cpm-pb" not in line
    assert not (cache / "cpm-int8-mixed").exists()


def _corrupt_mirror(root):
    """A directory mirror whose hourglass copy has the right size and one byte changed."""
    bad = root / "hourglass" / "model.tflite"
    bad.parent.mkdir(parents=True)
    data = (MIRROR / "hourglass" / "model.tflite").read_bytes()
    bad.write_bytes(data[:1000] + bytes([data[1000] ^ 0x55]) + data[1001:])
    return bad


@pytest.mark.parametrize("argv", [["models", "pull", "hourglass"],
                                  ["models", "info", "hourglass"],
                                  ["run", "--model", "hourglass", "--sink", "none", "--max-frames", "1"]])
def test_bad_copy_in_the_mirror_is_blamed_on_the_mirror(env, cache, tmp_path, argv):
    bad = _corrupt_mirror(tmp_path / "badmirror")
    if argv[0] == "run":
        argv = argv + ["--source", next(iter(sorted(EVAL_IMAGES.glob("*.jpg"))))]
    r = run_cli_inproc(argv, dict(env, EDGEPOSE_MODEL_MIRROR=str(tmp_path / "badmirror")))
    assert r.returncode == 65, r.stderr
    assert "Traceback" not in r.stderr
    (line,) = error_lines(r.stderr)
    assert "mirror's copy" in line and str(bad) in line
    assert registry.load_catalogue()["hourglass"].sha256 in line  # expected
    assert registry.sha256_of(bad) in line  # actual
    assert "delete" not in line and "--force" not in line and ".fetch-" not in line and str(cache) not in line
    assert not (cache / "hourglass" / "model.tflite").exists()
    assert not list((cache / "hourglass").glob(".fetch-*"))


def test_bad_copy_in_an_http_mirror_names_the_url(http_mirror, cache):
    with pytest.raises(ModelError) as e:
        registry.resolve("hourglass", cache_dir=cache, mirror=http_mirror + "/bad")
    msg = str(e.value)
    assert "mirror's copy" in msg and f"{http_mirror}/bad/hourglass/model.tflite" in msg
    assert "delete" not in msg and "\n" not in msg


def test_corrupt_cached_file_gives_the_same_fix_everywhere_and_the_fix_works(env, cache):
    assert run_cli_inproc(["models", "pull", "hourglass"], env).returncode == 0
    path = cache / "hourglass" / "model.tflite"
    fix = "`edgepose models pull hourglass --force`"
    for damage in ("truncate", "flip"):
        data = (MIRROR / "hourglass" / "model.tflite").read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncate"
                         else data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])
        image = next(iter(sorted(EVAL_IMAGES.glob("*.jpg"))))
        for argv in (["run", "--model", "hourglass", "--source", image, "--sink", "none", "--max-frames", "1"],
                     ["models", "info", "hourglass"], ["models", "pull", "hourglass"], ["models", "verify"]):
            r = run_cli_inproc(argv, env)
            assert r.returncode == 65, (argv, r.stderr)
            assert "Traceback" not in r.stderr
            (line,) = error_lines(r.stderr)
            assert fix in line and "delete" not in line, (argv, line)
        # the advised command really replaces the bad file
        r = run_cli_inproc(fix.strip("`").split()[1:], env)
        assert r.returncode == 0, r.stderr
        assert registry.sha256_of(path) == registry.load_catalogue()["hourglass"].sha256
        assert run_cli_inproc(["models", "verify"], env).returncode == 0


def test_data_path_searches_every_prefix_in_order(tmp_path):
    """Dependency injection: a source tree without the file and three fake install prefixes."""
    src, a, b, c = (tmp_path / n for n in ("src", "a", "b", "c"))
    for p in (src, a, b, c):
        p.mkdir()
    rel = "models/catalogue.toml"
    assert registry.data_search(rel, [a, b, c], src) == [
        src / rel, a / "share/edgepose" / rel, b / "share/edgepose" / rel, c / "share/edgepose" / rel]
    # nothing anywhere: the first prefix's place, so the error names where it should be
    assert registry.catalogue_path([a, b, c], src) == a / "share/edgepose" / rel
    for p in (c, b):
        (p / "share/edgepose/models").mkdir(parents=True)
        shutil.copy(registry.catalogue_path(), p / "share/edgepose" / rel)
    assert registry.catalogue_path([a, b, c], src) == b / "share/edgepose" / rel
    assert "cpm" in registry.load_catalogue(registry.catalogue_path([a, b, c], src))
    (src / "models").mkdir()
    (src / rel).write_text("")
    assert registry.catalogue_path([a, b, c], src) == src / rel  # the source tree wins
    # deploy files are found by the same search
    (c / "share/edgepose/deploy").mkdir()
    (c / "share/edgepose/deploy/edgepose.service").write_text("[Unit]\n")
    assert registry.data_path("deploy/edgepose.service", [a, b, c], src) == c / "share/edgepose/deploy/edgepose.service"


def test_default_prefixes_cover_user_base_schemes_and_usr_local():
    import site
    import sys
    import sysconfig

    got = registry.install_prefixes()
    assert len(got) == len(set(got))
    want = [sys.prefix, site.getuserbase(), "/usr/local", "/usr"] + [
        sysconfig.get_paths(s)["data"] for s in sysconfig.get_scheme_names()]
    for w in want:
        assert Path(w) in got, w
    assert registry.catalogue_path() == REPO / "models" / "catalogue.toml"  # this checkout


def _copy_project(dst: Path) -> Path:
    dst.mkdir()
    for name in ("setup.py", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dst / name)
    for name in ("edgepose", "models", "deploy"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.mark.slow
def test_pip_install_user_finds_the_catalogue_under_user_base(tmp_path):
    """A real `pip install --user` (PYTHONUSERBASE in tmp_path): data_files land in
    USER_BASE/share, not sys.prefix/share; the installed package must find them."""
    import importlib.util
    import site
    import subprocess
    import sys

    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed for this interpreter")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (needed to build without network access)")
    if not site.ENABLE_USER_SITE:
        pytest.skip("user site-packages are disabled here (a virtualenv): `pip install --user` is refused")
    src = _copy_project(tmp_path / "src")  # a copy: pip builds in the tree it is given
    ub = tmp_path / "ub"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "EDGEPOSE_"))}
    env["PYTHONUSERBASE"] = str(ub)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--user", "--disable-pip-version-check", "-q", str(src)],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (ub / "share/edgepose/models/catalogue.toml").is_file()
    code = ("import edgepose, sys; from edgepose.models import registry; "
            "print(edgepose.__file__); print(registry.catalogue_path()); "
            "print(registry.data_path('deploy/edgepose.service')); print(len(registry.load_catalogue()))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pkg, cat, service, n = r.stdout.split("\n")[:4]
    assert Path(pkg).is_relative_to(ub), pkg  # the installed copy, not this checkout
    assert Path(cat) == ub / "share/edgepose/models/catalogue.toml"
    assert Path(service) == ub / "share/edgepose/deploy/edgepose.service"
    assert int(n) >= 4
    # and the command itself
    r = subprocess.run([sys.executable, "-m", "edgepose.cli", "models", "list", "--json"],
                       env=dict(env, EDGEPOSE_MODEL_DIR=str(tmp_path / "cache")), capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cpm-int8-mixed" in {x["name"] for x in json.loads(r.stdout)}
    # without the data files: one line naming the expected place and every place looked in
    (ub / "share").rename(ub / "share.gone")
    r = subprocess.run([sys.executable, "-m", "edgepose.cli", "models", "list"], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 65 and "Traceback" not in r.stderr
    (line,) = error_lines(r.stderr)
    assert str(Path(sys.prefix) / "share/edgepose/models/catalogue.toml") in line
    assert str(ub / "share/edgepose/models/catalogue.toml") in line and "/usr/local/share/edgepose" in line


def test_unknown_model_and_missing_action(env):
    r = run_cli_inproc(["models", "pull", "nosuchmodel"], env)
    assert r.returncode == 78 and "unknown model" in r.stderr and "Traceback" not in r.stderr
    r = run_cli_inproc(["models"], env)
    assert r.returncode == 64 and "Traceback" not in r.stderr
    r = run_cli_inproc(["models", "info", "/nonexistent/model.tflite"], env)
    assert r.returncode == 66 and "Traceback" not in r.stderr


@pytest.mark.parametrize("name,grid,flops", [("cpm", 96, 0.555e9), ("hourglass", 48, 0.537e9)])
def test_info_on_upstream_models(env, name, grid, flops):
    r = run_cli_inproc(["models", "info", name, "--json"], env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [1, 192, 192, 3] and info["inputs"][0]["dtype"] == "float32"
    assert info["outputs"][0]["shape"] == [1, grid, grid, 14]
    assert info["quantized"] == "float32"
    assert abs(info["flops"] - flops) / flops < 0.02  # the shared README's measured compute
    assert info["ops"]["CONV_2D"] > 90 and info["ops"]["RELU"] == 52  # the standalone RELUs
    d = info["delegation"]
    assert d["prepared"] and d["partitions"] == 1 and d["delegated_nodes"] == d["total_nodes"]
    assert info["size_bytes"] == registry.load_catalogue()[name].size
    text = run_cli_inproc(["models", "info", name], env).stdout
    assert "xnnpack    1 partition, " in text and "GFLOP" in text
    assert info["runtime"].startswith("litert ") and info["advice"] == ""


def test_an_existing_file_with_another_suffix_is_a_path_not_a_catalogue_name(tmp_path, monkeypatch, cache):
    """`--model clip.mp4` (a file in the working directory) is reported as not a model, not as an
    unknown catalogue entry; a catalogue name stays a name."""
    from edgepose.inference.engine import Engine

    monkeypatch.chdir(tmp_path)  # a relative name, as typed in a shell
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    assert registry.looks_like_path("clip.mp4") and not registry.looks_like_path("nosuch.mp4")
    assert not registry.looks_like_path("cpm-int8")
    path = registry.resolve("clip.mp4", cache_dir=cache)
    assert path == Path("clip.mp4")
    with pytest.raises(ModelError) as e:
        Engine(path)
    assert "clip.mp4" in str(e.value) and "unknown model" not in str(e.value)


def test_a_mirror_that_does_not_speak_http_is_one_warning_per_source(cache):
    """A server that answers garbage (http.client raises BadStatusLine, not an OSError) is a failed source
    like any other: the fetch goes on to the next one and ends with InputMissingError (66), no traceback."""
    import dataclasses
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def answer():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HELLO THIS IS NOT HTTP\r\n\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    entry = dataclasses.replace(registry.load_catalogue()["hourglass"], url=url + "/upstream/model.tflite")
    try:
        with pytest.raises(InputMissingError, match="BadStatusLine") as e:
            registry.fetch(entry, cache, mirror=url)
    finally:
        srv.close()
    assert str(e.value).count("BadStatusLine") == 2  # the mirror, then the (here also broken) upstream URL
    assert not any((cache / "hourglass").iterdir())  # no .part left behind


def test_quantize_checks_its_arguments_before_building(env, tmp_path):
    """Where the model goes and the numbers that steer the build are checked before minutes of work."""
    cases = [(["--mode", "float16", "--out", "/sys/x.tflite"], 78, "cannot write /sys/x.tflite"),
             (["--mode", "float16", "--out", tmp_path], 78, "it is a directory"),
             (["--mode", "float16", "--threads", -4], 64, "--threads takes a number from 1 to 64"),
             (["--calib", tmp_path, "--finetune-rate", "nan"], 64, "--finetune-rate takes a learning rate > 0"),
             (["--calib", tmp_path, "--calib-photos", -3], 64, "--calib-photos / calib_photos takes a number")]
    for extra, code, text in cases:
        r = run_cli_inproc(["models", "quantize", "cpm", *extra], env, timeout=60)
        assert r.returncode == code and text in r.stderr, (extra, r.returncode, r.stderr)
        assert "building" not in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.part")) and not (tmp_path.parent / (tmp_path.name + ".part")).exists()


def test_calib_photos_samples_a_large_folder_evenly_and_keeps_a_small_one_whole(tmp_path):
    """``--calib-photos N`` / catalogue ``calib_photos``: N photos spread over the folder's name order, the
    same ones every build; a folder of at most N photos (../shared/data/calib, the tests') is used whole."""
    from edgepose.build import quantize as q

    names = [f"{i:04d}.jpg" for i in range(3000)]
    picked = q.sample_evenly(names, 300)
    assert len(picked) == 300 and picked[0] == "0000.jpg" and picked[1] == "0010.jpg" and picked[-1] == "2990.jpg"
    assert q.sample_evenly(names, 7) == q.sample_evenly(names, 7) and len(set(q.sample_evenly(names, 7))) == 7
    assert q.sample_evenly(names[:13], 300) == names[:13] and q.sample_evenly(names, 0) == names
    assert len(q.read_photos(CALIB, 300)) == len(q.list_images(CALIB)) == 13
    assert len(q.read_photos(CALIB, 5)) == 5
    assert registry.load_catalogue()["cpm-int8"].extra["calib_photos"] == 300


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o644), (0o077, 0o600)])
def test_pulled_files_are_readable_as_the_umask_allows(env, cache, umask, mode):
    """Not mkstemp's 0600: a cache shared with a service user must stay readable to it."""
    r = run_cli(["models", "pull", "hourglass"], env, umask=umask)
    assert r.returncode == 0, r.stderr
    assert (cache / "hourglass" / "model.tflite").stat().st_mode & 0o7777 == mode


def test_pull_force_keeps_the_mode_and_owner_of_the_file_it_replaces(env, cache):
    """`sudo edgepose models pull NAME --force` on a service's cache (the fix the README gives for a checksum
    mismatch) must leave a file the service user can still read: mode kept, and owner kept as root."""
    path = cache / "cpm" / "model.tflite"
    path.parent.mkdir(parents=True)
    data = (MIRROR / "cpm" / "model.tflite").read_bytes()
    path.write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])  # a corrupt cached copy
    path.chmod(0o640)
    root = os.geteuid() == 0
    if root:
        os.chown(path, 65534, 65534)
    before = path.stat()
    r = run_cli(["models", "pull", "cpm", "--force"], env, umask=0o077)
    assert r.returncode == 0, r.stderr
    after = path.stat()
    assert after.st_ino != before.st_ino and registry.sha256_of(path) == registry.load_catalogue()["cpm"].sha256
    assert after.st_mode & 0o7777 == 0o640
    if root:
        assert (after.st_uid, after.st_gid) == (65534, 65534)
    assert not list(path.parent.glob(".fetch-*"))


@pytest.fixture
def short_server():
    """An HTTP server that announces the mirror file's full Content-Length, sends half of it and closes."""

    def half(handler, data):
        handler.wfile.write(data[: len(data) // 2])
        handler.close_connection = True

    server = mirror_server(send=half)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_download_cut_short_is_an_interrupted_download_not_a_bad_mirror_file(short_server, cache, tmp_path):
    """The server's own Content-Length shows the transfer ended early: a failed source (the next one is
    tried; all failed: exit 66), and the mirror's file is not blamed."""
    import dataclasses

    entry = dataclasses.replace(registry.load_catalogue()["cpm"], url=short_server + "/cpm/model.tflite")
    with pytest.raises(InputMissingError) as e:
        registry.fetch(entry, cache, mirror=short_server)
    assert str(e.value).count("download interrupted: the connection closed after 1179952 of 2359904 bytes") == 2
    assert not (cache / "cpm" / "model.tflite").exists() and not list((cache / "cpm").glob(".fetch-*"))
    # the CLI, with upstream (the catalogue's https URL) unreachable through a proxy that refuses connections
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(EDGEPOSE_MODEL_DIR=str(cache), http_proxy=proxy, https_proxy=proxy, no_proxy="127.0.0.1")
    r = run_cli_inproc(["models", "--mirror", short_server, "pull", "cpm"], env)
    assert r.returncode == 66 and "Traceback" not in r.stderr, r.stderr
    (line,) = error_lines(r.stderr)
    assert f"{short_server}/cpm/model.tflite: download interrupted" in line
    assert "mirror's copy" not in line and "is bad" not in line
    assert not (cache / "cpm" / "model.tflite").exists()


def test_quantize_checks_calib_and_eval_before_fetching(env, cache, tmp_path):
    """A missing --calib folder or --eval file is reported before any model is fetched (here the mirror
    is empty and upstream unreachable, so a fetch would fail first) and before the cache entry is made."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    env.update(EDGEPOSE_MODEL_MIRROR=str(tmp_path / "empty-mirror"), http_proxy=proxy, https_proxy=proxy)
    (tmp_path / "empty-mirror").mkdir()
    (tmp_path / "no-photos").mkdir()
    cases = [(["--calib", tmp_path / "nonexist"], f"calibration folder {tmp_path / 'nonexist'} does not exist"),
             (["--calib", tmp_path / "no-photos"], "has no images"),
             (["--calib", CALIB, "--eval", tmp_path / "no.json"],
              f"annotation file {tmp_path / 'no.json'} does not exist"),
             (["--mode", "float16", "--eval", tmp_path / "no.json"], "annotation file")]
    for extra, text in cases:
        r = run_cli_inproc(["models", "quantize", "cpm", *extra], env, timeout=60)
        assert r.returncode == 66 and "Traceback" not in r.stderr, (extra, r.stderr)
        (line,) = error_lines(r.stderr)
        assert text in line and "could not fetch" not in line, (extra, line)
        assert "fetching" not in r.stderr and "copying" not in r.stderr
    # a box outside its image, in a file whose images have no width/height: found by reading the images now
    ann = json.loads(EVAL_ANN.read_text())
    for im in ann["images"]:
        im.pop("width", None), im.pop("height", None)
        im["file_name"] = str(EVAL_ANN.parent / im["file_name"])
    ann["annotations"][0]["bbox"] = [99999, 99999, 10, 10]
    (tmp_path / "outside.json").write_text(json.dumps(ann))
    r = run_cli_inproc(["models", "quantize", "cpm", "--calib", CALIB, "--eval", tmp_path / "outside.json"], env,
                       timeout=60)
    assert r.returncode == 65 and "lies entirely outside" in r.stderr and "fetching" not in r.stderr, r.stderr
    assert not cache.exists()


def test_list_columns_stay_aligned(env):
    """Each column is as wide as its longest entry (`local (int8 from hourglass-pb)` included)."""
    rows = json.loads(run_cli_inproc(["models", "list", "--json"], env).stdout)
    lines = run_cli_inproc(["models", "list"], env).stdout.splitlines()[1:]
    assert len(lines) == len(rows)
    starts = {line.index(r["description"]) for line, r in zip(lines, rows)}
    assert len(starts) == 1, lines
    kinds = {line.index(r["kind"]) for line, r in zip(lines, rows)}
    assert len(kinds) == 1, lines
