"""Hostile and careless input (issue 23): each case of the fault sweep that is about the daemon, its
sources and the model registry, reproduced with real parts (real models, real files, real local servers)."""

from __future__ import annotations

import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import CALIB, MIRROR, error_lines, grey_clip, mirror_server, run_cli

# Single-byte flips (XOR 0xFF) of the upstream CPM file, found by flipping each byte at offsets 2,270,000
# to 2,320,000 (its flatbuffer tables, after the weights) in turn:
# the file still loads and allocates, then its first invoke raises "Input tensor N lacks data".
CPM_FLIPS_THAT_FAIL_AT_INVOKE = (2290972, 2301264)


@pytest.fixture(params=CPM_FLIPS_THAT_FAIL_AT_INVOKE)
def fails_at_invoke(request, tmp_path):
    data = bytearray((MIRROR / "cpm" / "model.tflite").read_bytes())
    data[request.param] ^= 0xFF
    path = tmp_path / f"cpm-flip{request.param}.tflite"
    path.write_bytes(bytes(data))
    return path


def _wait(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# --- item 3: a model must prove itself on one inference -------------------------------------------

def test_the_flipped_file_really_loads_and_fails_only_at_invoke(fails_at_invoke):
    """The premise of the two tests below, checked on the runtime itself (no edgepose code)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(fails_at_invoke), num_threads=1)
    interp.allocate_tensors()
    with pytest.raises(RuntimeError, match="lacks data"):
        interp.invoke()


def test_run_with_a_model_that_fails_its_first_inference_is_exit_65(fails_at_invoke, edgepose_env):
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", fails_at_invoke, "--threads", "1"],
                edgepose_env)
    assert r.returncode == 65, r.stderr
    assert "Traceback" not in r.stderr and "fails at its first inference" in r.stderr, r.stderr
    assert len(error_lines(r.stderr)) == 1 and not r.stdout


def test_a_reload_onto_a_model_that_fails_its_first_inference_keeps_the_running_one(
        fails_at_invoke, tmp_path, model_cache, caplog):
    from edgepose.core import config as config_mod
    from edgepose.daemon.service import Daemon

    clip = grey_clip(tmp_path / "clip.mp4", 600)  # 30 s at max_fps 20: a source that outlives the test
    path = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{clip}"\n[output]\nsink = "none"\n[runtime]\nthreads = 1\nmax_fps = 20.0\n'
            f'[model]\nname = "hourglass"\ndir = "{model_cache}"\nmirror = "{MIRROR}"\n')
    path.write_text(base)
    seen = []
    daemon = Daemon(config_mod.load(str(path), environ={}), environ={},
                    observers=[lambda frame, result, payload: seen.append(payload["model"])])
    caplog.set_level(logging.INFO, logger="edgepose")
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert _wait(lambda: len(seen) >= 2, 60)
        path.write_text(base.replace('name = "hourglass"', f'name = "{fails_at_invoke}"'))
        daemon.reload_event.set()  # what the SIGHUP handler does
        assert _wait(lambda: daemon.last_reload is not None, 60)
        n = len(seen)
        assert _wait(lambda: len(seen) >= n + 2 or not t.is_alive(), 30)
        assert t.is_alive(), "the daemon died on the reload"
        st = daemon.status()
    finally:
        daemon.stop_event.set()
        t.join(30)
    assert set(seen) == {"hourglass"}  # every frame, before and after, on the running model
    assert st["model"] == "hourglass" and st["reload"]["ok"] is False
    assert "fails at its first inference" in st["reload"]["error"]
    assert "last reload failed: running configuration kept" in daemon.status_line()
    kept = [r.getMessage() for r in caplog.records if "keeping the running configuration" in r.getMessage()]
    assert len(kept) == 1 and "fails at its first inference" in kept[0]


def test_sighup_onto_a_model_that_fails_its_first_inference_end_to_end(fails_at_invoke, tmp_path, edgepose_env):
    """The same as a user sees it: `edgepose run --config` publishing to a real mosquitto, the file switched
    to the damaged model, a real SIGHUP: the daemon stays up on hourglass, the log says it kept the running
    configuration, and the retained status document says the reload failed and why."""
    import signal
    import subprocess
    import sys

    import broker as brokers
    from conftest import REPO
    from mqtt_util import Collector

    b = brokers.Broker(tmp_path).start()
    clip = grey_clip(tmp_path / "clip.mp4", 600)
    cfg = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{clip}"\n[model]\nname = "hourglass"\n[runtime]\nmax_fps = 15\nthreads = 1\n'
            f'[output]\nsink = "mqtt"\ndevice = "cam9"\n[mqtt]\nhost = "{b.host}"\nport = {b.port}\n'
            f'status_interval = 0.5\n')
    cfg.write_text(base)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--config", str(cfg)], env=edgepose_env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)
    c = Collector(b, "edgepose/cam9/#")
    try:
        assert _wait(lambda: len(c.seqs()) >= 3, 60), log.read_text()
        cfg.write_text(base.replace('name = "hourglass"', f'name = "{fails_at_invoke}"'))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "SIGHUP:" in log.read_text() or proc.poll() is not None, 60)
        seen = len(c.seqs())
        assert _wait(lambda: len(c.seqs()) >= seen + 5 or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()
        assert _wait(lambda: [m for m in c.of("status") if "reload" in m.json()], 10), log.read_text()
        status = [m.json() for m in c.of("status") if "reload" in m.json()][-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            proc.kill()
            c.close()
            b.kill()
    err = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in err, err
    (kept,) = [line for line in err.splitlines() if "SIGHUP" in line]
    assert kept.startswith("edgepose: ERROR: SIGHUP: keeping the running configuration: model ")
    assert "fails at its first inference (Input tensor" in kept
    assert {p.json()["model"] for p in c.of("pose")} == {"hourglass"}
    assert status["model"] == "hourglass" and status["reload"]["ok"] is False
    assert "fails at its first inference" in status["reload"]["error"]


def test_a_model_declaring_gigabytes_of_tensors_is_refused_before_allocating_them(tmp_path):
    """One byte of the Hourglass file (offset 1662050, 0 -> 37; found by random byte flips of its tables)
    declares an activation of 22 GB; a fuzzing run without this check was killed by the kernel (exit 137)
    on such a file, XNNPACK's preparation taking the memory.  The load runs in a child with a 4 GB
    address-space limit, so a regression fails here instead of exhausting the shared machine's memory."""
    import subprocess
    import sys

    from conftest import REPO

    data = bytearray((MIRROR / "hourglass" / "model.tflite").read_bytes())
    data[1662050] = 37
    path = tmp_path / "huge-shape.tflite"
    path.write_bytes(bytes(data))
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "from edgepose.inference.engine import Engine\nfrom edgepose.core.errors import ModelError\n"
            f"try:\n    Engine({str(path)!r}, threads=1)\nexcept ModelError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "declares 20.9 GiB of tensors, more than the 1 GiB a pose model may take: the file is corrupt" in r.stdout


@pytest.mark.parametrize("name", ["cpm", "hourglass", "movenet-lightning"])
def test_real_models_declare_far_less_than_the_tensor_limit(name):
    from ai_edge_litert.interpreter import Interpreter

    from edgepose.inference.engine import MAX_TENSOR_BYTES, declared_tensor_bytes

    declared = declared_tensor_bytes(Interpreter(model_path=str(MIRROR / name / "model.tflite"), num_threads=1))
    assert 1e6 < declared < 100e6 < MAX_TENSOR_BYTES / 10


# --- items 5 and 8: one line for a bad source, no control characters from users --------------------

@pytest.mark.parametrize("source,code,message", [
    ("http://[::1/x.jpg", 64, "bad source URL http://[::1/x.jpg: Invalid IPv6 URL"),
    ("rtsp://u:s3cret@[::1/live", 64, "bad source URL rtsp://u:***@[::1/live: Invalid IPv6 URL"),
    ("rtsp://cam:99999/live", 64, "Port out of range"),
    ("{long}", 66, "cannot be used: File name too long"),
    ("{deep}", 66, "cannot be used: File name too long"),
    ("{long}/*.jpg", 66, "cannot be used: File name too long"),
])
def test_a_source_that_is_no_path_nor_url_is_one_line(source, code, message, tmp_path, edgepose_env):
    source = source.format(long=tmp_path / ("x" * 300 + ".jpg"), deep="d/" * 3000 + "x.jpg")
    r = run_cli(["run", "--source", source, "--model", "hourglass", "--threads", "1"], edgepose_env)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and "s3cret" not in r.stderr, r.stderr
    (line,) = error_lines(r.stderr)
    assert len(line) < 400  # a 6000-character path is shortened in the message


FORGED = "cam1\nedgepose: ERROR: forged line"


CONTROLLED = [("output.device", "--device", FORGED), ("camera.source", "--source", FORGED),
              ("mqtt.prefix", None, "edgepose\r"), ("model.mirror", "--model-mirror", "/srv/models\x1b[2J")]


@pytest.mark.parametrize("how,key,flag,value", [(how, *c) for c in CONTROLLED for how in ("flag", "file", "environment")
                                                if how != "flag" or c[1]])
def test_control_characters_in_user_values_are_refused(how, key, flag, value, tmp_path, edgepose_env):
    import json

    section, name = key.split(".")
    args, env = ["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"], dict(edgepose_env)
    if how == "flag":
        args += [flag, value]
    elif how == "file":
        cfg = tmp_path / "e.toml"
        cfg.write_text(f"[{section}]\n{name} = {json.dumps(value)}\n")  # a TOML basic string with escapes
        args += ["--config", cfg]
    else:
        env[f"EDGEPOSE_{section.upper()}_{name.upper()}"] = value
    r = run_cli(args, env)
    assert r.returncode == 78, r.stderr
    assert "forged line" not in r.stderr.replace(repr(value)[1:-1], "")  # only inside the quoted value
    (line,) = error_lines(r.stderr)
    assert f"for {key}: it has a control character" in line and not r.stdout


def test_a_password_may_hold_any_character():
    from edgepose.core import config as config_mod

    cfg = config_mod.load(None, {"mqtt": {"password": "tab\there"}}, environ={})
    assert cfg.mqtt.password == "tab\there"


# --- item 4: images over the pixel limit are downscaled or refused before decoding ------------------

def solid_grey_jpeg(width: int, height: int) -> bytes:
    """A valid baseline JPEG, one grey component (128 everywhere), written directly: every 8x8 block is
    "DC difference 0, end of block", two bits with one-code Huffman tables, so 20000x20000 is 1.5 MB and
    needs no 400 MB array to make."""
    import struct

    def seg(marker, body):
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body

    one_code = bytes([1] + [0] * 15) + b"\x00"  # a single code of length 1 ("0"), for symbol 0
    head = (seg(0xDB, b"\x00" + b"\x01" * 64) + seg(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
            + seg(0xC4, b"\x00" + one_code) + seg(0xC4, b"\x10" + one_code) + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00"))
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    return b"\xff\xd8" + head + bytes((2 * blocks + 7) // 8) + b"\xff\xd9"


def solid_black_png(width: int, height: int) -> bytes:
    """A valid 8-bit greyscale PNG of zeros, compressed in chunks (no width x height array is made)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(1)
    rows = bytes((width + 1) * 500)  # filter byte 0 + a row of zeros, 500 rows at a time
    idat = b"".join(z.compress(rows[:(width + 1) * min(500, height - y)]) for y in range(0, height, 500)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_the_generated_images_are_what_they_claim(tmp_path):
    """The helpers above, checked by OpenCV at a size it may decode whole."""
    (tmp_path / "s.jpg").write_bytes(solid_grey_jpeg(64, 40))
    (tmp_path / "s.png").write_bytes(solid_black_png(30, 1100))
    jpg, png = cv2.imread(str(tmp_path / "s.jpg")), cv2.imread(str(tmp_path / "s.png"))
    assert jpg.shape == (40, 64, 3) and jpg.min() == jpg.max() == 128
    assert png.shape == (1100, 30, 3) and png.max() == 0


def _run_measured(args, env, tmp_path):
    """Run `edgepose ARGS`; (returncode, stdout, stderr, peak RSS in MB of that very process, from /proc)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", *map(str, args)], env=env, cwd=REPO,
                                stdout=out, stderr=err, text=True)
        end = time.monotonic() + 120
        peak_kb = 0
        while True:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))  # before the reap: /proc/PID is there until then
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                proc.kill()
                pytest.fail("edgepose did not finish within 120 s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), peak_kb / 1024


def _vm_hwm_kb(pid: int) -> int:
    """The peak resident memory of process ``pid`` since its exec (VmHWM; 0 once it has exited).

    Not wait4's ru_maxrss: Linux carries the forked copy of the parent's resident size across exec into
    it, so a test process that has grown (models loaded in-process) would be counted as the child's."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def test_a_20000_pixel_square_jpeg_is_decoded_at_one_eighth_in_bounded_memory(tmp_path, edgepose_env):
    """1.5 MB on disk, 1.2 GB as a full BGR array (the sweep measured 2.4 GB and 18 s for one frame):
    decoded at 1/8 by libjpeg, one frame of 2500x2500, the run's peak memory well under the full array."""
    big = tmp_path / "big.jpg"
    big.write_bytes(solid_grey_jpeg(20000, 20000))
    rc, out, err, peak_mb = _run_measured(["run", "--source", big, "--model", "hourglass", "--threads", "1"],
                                          edgepose_env, tmp_path)
    assert rc == 0, err
    (p,) = [json.loads(line) for line in out.splitlines()]
    assert p["frame"] == {"width": 2500, "height": 2500}
    assert "is 20000x20000 pixels, over the limit of 24 megapixels: decoding it at 1/8 of its size" in err
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB"  # the full-size array alone is 1144 MB


def test_images_over_the_limit_in_a_folder_are_downscaled_or_skipped_with_one_line(tmp_path, edgepose_env):
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "a_big.jpg").write_bytes(solid_grey_jpeg(20000, 20000))
    (shots / "b_huge.png").write_bytes(solid_black_png(12000, 12000))  # 144 MP: not a JPEG, so refused
    (shots / "c_photo.jpg").write_bytes((CALIB / "ski.jpg").read_bytes())
    rc, out, err, peak_mb = _run_measured(["run", "--source", shots, "--model", "hourglass", "--threads", "1"],
                                          edgepose_env, tmp_path)
    assert rc == 0, err
    frames = [json.loads(line)["frame"] for line in out.splitlines()]
    h, w = cv2.imread(str(CALIB / "ski.jpg")).shape[:2]
    assert frames == [{"width": 2500, "height": 2500}, {"width": w, "height": h}]
    skipped = [line for line in err.splitlines() if "b_huge.png" in line]
    assert skipped == [f"edgepose: WARNING: skipping {shots / 'b_huge.png'}: {shots / 'b_huge.png'} is 12000x12000 "
                       f"pixels, over the limit of 24 megapixels and only JPEGs are decoded at a reduced size: refused"]
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB"


def test_a_single_image_over_the_limit_is_one_error(tmp_path, edgepose_env):
    huge = tmp_path / "huge.png"
    huge.write_bytes(solid_black_png(12000, 12000))
    r = run_cli(["run", "--source", huge, "--model", "hourglass"], edgepose_env)
    assert r.returncode == 66 and "Traceback" not in r.stderr, r.stderr
    (line,) = error_lines(r.stderr)
    assert "cannot read image" in line and "is 12000x12000 pixels, over the limit of 24 megapixels" in line


def test_a_snapshot_url_serving_a_huge_jpeg_gives_a_downscaled_frame(tmp_path):
    """The IP-camera path: a real local HTTP server answers with the 20000x20000 JPEG."""
    import functools
    import http.server

    from edgepose.capture.sources import SnapshotCapture

    (tmp_path / "snap.jpg").write_bytes(solid_grey_jpeg(20000, 20000))
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cap = SnapshotCapture(f"http://127.0.0.1:{server.server_address[1]}/snap.jpg").probe()
        ok, img = cap.read()
    finally:
        server.shutdown()
        server.server_close()
    assert ok and img.shape == (2500, 2500, 3) and int(img.min()) == int(img.max()) == 128


@pytest.mark.parametrize("make,ext,fmt", [
    (lambda w, h: cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "png", "png"),
    (lambda w, h: cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "jpg", "jpeg"),
    (lambda w, h: cv2.imencode(".bmp", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "bmp", "bmp"),
    (lambda w, h: cv2.imencode(".webp", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "webp", "webp"),
    (lambda w, h: cv2.imencode(".webp", np.zeros((h, w, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
     "webp", "webp"),
    (lambda w, h: cv2.imencode(".tiff", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "tiff", "tiff"),
    (lambda w, h: cv2.imencode(".ppm", np.zeros((h, w, 3), np.uint8))[1].tobytes(), "ppm", "pnm"),
    (lambda w, h: cv2.imencode(".pgm", np.zeros((h, w), np.uint8))[1].tobytes(), "pgm", "pnm"),
])
def test_the_header_gives_the_size_of_every_image_format_taken(make, ext, fmt):
    """OpenCV writes each format edgepose takes as an image (lossless WebP too); the header reader finds
    the size OpenCV decodes."""
    from edgepose.capture.imagesize import image_size

    data = make(37, 23)
    assert image_size(data) == (fmt, 37, 23)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (23, 37)


# --- item 13: a slow-drip snapshot server is a lost camera, not a hang -----------------------------

@pytest.fixture
def drip_server():
    """A loopback HTTP server: the first request gets a real JPEG at once, every later one a response
    dripped one byte every 0.5 s (at most 120 bytes, so it ends on its own), the slow-loris camera."""
    import socket

    body = (CALIB / "ski.jpg").read_bytes()
    srv = socket.create_server(("127.0.0.1", 0))
    stop, served = threading.Event(), []

    def answer(conn):
        with conn:
            conn.recv(65536)
            reply = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            if not served:
                served.append(1)
                conn.sendall(reply)
                return
            for i in range(120):
                if stop.wait(0.5):
                    return
                try:
                    conn.sendall(reply[i:i + 1])
                except OSError:  # the client gave up (its deadline)
                    return

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/snap.jpg", served
    finally:
        stop.set()
        srv.close()


def test_a_dripping_snapshot_fetch_ends_at_its_deadline(drip_server):
    from edgepose.capture.sources import SnapshotCapture

    url, served = drip_server
    served.append(1)  # no good first answer: every request drips
    cap = SnapshotCapture(url, timeout=1.5, deadline=2.0)  # a byte every 0.5 s never trips the 1.5 s timeout
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"sent no whole image within 2 s"):
        cap.probe()
    assert time.monotonic() - t0 < 3.5


def test_a_camera_that_starts_dripping_is_lost_and_reopened(drip_server, caplog):
    from edgepose.capture.sources import LiveSource, SnapshotCapture

    url, _ = drip_server
    caplog.set_level(logging.INFO)
    src = LiveSource(lambda: SnapshotCapture(url, fps=10, timeout=1.5, deadline=2.0).probe(), url, backoff_max=0.5)
    try:
        assert src.read(timeout=5) is not None  # the first, prompt answer
        assert _wait(lambda: src.state == "reconnecting", 6), src.state
        assert src.lost_for() > 0
    finally:
        t0 = time.monotonic()
        src.close()
    assert time.monotonic() - t0 < 3
    assert any(f"camera {url} lost" in r.getMessage() for r in caplog.records)


# --- items 6, 9, 12, 15: the model registry ----------------------------------------------------------

def _offline_env(edgepose_env, cache):
    """The CLI's environment with a fresh cache, no mirror and every proxy pointing at a closed loopback
    port: upstream cannot be reached (as on a board without network), quickly and deterministically."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    env = {k: v for k, v in edgepose_env.items() if not k.lower().endswith("_proxy")}
    env.pop("EDGEPOSE_MODEL_MIRROR", None)
    env.update(EDGEPOSE_MODEL_DIR=str(cache), http_proxy=proxy, https_proxy=proxy, no_proxy="127.0.0.1")
    return env


def test_a_mirror_url_password_is_basic_auth_and_never_logged(tmp_path, edgepose_env):
    server = mirror_server(auth=b"u:S3cr3t")
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        env = dict(_offline_env(edgepose_env, tmp_path / "cache"), EDGEPOSE_MODEL_MIRROR=f"http://u:S3cr3t@{host}")
        r = run_cli(["models", "pull", "hourglass"], env)
        assert r.returncode == 0, r.stderr
        assert f"fetching hourglass from http://u:***@{host}/hourglass/model.tflite" in r.stderr
        assert (tmp_path / "cache" / "hourglass" / "model.tflite").stat().st_size == 1716000
        env["EDGEPOSE_MODEL_MIRROR"] = f"http://u:WrongPass@{host}"
        r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", "cpm"], env)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 66 and "HTTP Error 401" in r.stderr, r.stderr
    assert "WrongPass" not in r.stderr and f"http://u:***@{host}/cpm/model.tflite" in r.stderr
    (line,) = error_lines(r.stderr)
    assert "check the mirror http://u:***@" in line


def test_without_network_the_error_says_how_to_use_a_mirror(tmp_path, edgepose_env):
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"],
                _offline_env(edgepose_env, tmp_path / "cache"))
    assert r.returncode == 66, r.stderr
    (line,) = error_lines(r.stderr)
    assert "could not fetch model hourglass" in line
    assert "EDGEPOSE_MODEL_MIRROR=DIR|URL" in line and "--model-mirror" in line and "docs/models.md" in line


def test_sigterm_during_a_download_leaves_a_part_file_that_the_next_start_removes_once_stale(tmp_path, edgepose_env):
    """A real `models pull` killed by SIGTERM mid-transfer (the mirror sends half the file and stalls):
    exit 143 in a shell (-15 here), the .part file stays; the next start leaves it while it may still be
    another process's download, and removes it once no one has written to it for 10 minutes."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    cache, stall = tmp_path / "cache", threading.Event()
    def half_then_stall(handler, data):
        handler.wfile.write(data[:len(data) // 2])
        handler.wfile.flush()
        stall.wait(60)

    server = mirror_server(send=half_then_stall)
    env = dict(_offline_env(edgepose_env, cache),
               EDGEPOSE_MODEL_MIRROR=f"http://127.0.0.1:{server.server_address[1]}")
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "models", "pull", "hourglass"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: any(p.stat().st_size > 0 for p in cache.glob("hourglass/.fetch-*.part")), 60)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        stall.set()
        server.shutdown()
        server.server_close()
    assert proc.returncode == -signal.SIGTERM
    (part,) = cache.glob("hourglass/.fetch-*.part")
    env["EDGEPOSE_MODEL_MIRROR"] = str(MIRROR)
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"], env)
    assert r.returncode == 0 and part.exists(), r.stderr  # 1 s old: maybe a download in progress
    old = time.time() - 11 * 60
    os.utime(part, (old, old))
    r = run_cli(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"], env)
    assert r.returncode == 0 and not part.exists(), r.stderr
    assert f"removed 1 unfinished download(s) left in the model cache: {part.name}" in r.stderr


def test_quantize_without_tensorflow_says_so_before_fetching(tmp_path, edgepose_env):
    """No TensorFlow: a package named tensorflow that fails to import, first on PYTHONPATH, stands in for
    a board without it (TensorFlow is installed on this machine and cannot be uninstalled for a test)."""
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named \'tensorflow\'")\n')
    cache = tmp_path / "cache"
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(cache), PYTHONPATH=str(tmp_path / "shadow"))
    r = run_cli(["models", "quantize", "cpm", "--mode", "float16"], env)
    assert r.returncode == 69, r.stderr
    (line,) = error_lines(r.stderr)
    assert "quantizing needs the TensorFlow converter" in line
    assert "copying" not in r.stderr and "fetching" not in r.stderr
    assert not list(cache.rglob("*.pb")) and not list(cache.rglob("*.tflite"))


# --- item 10: which broker restarts fire the last will (docs/mqtt.md) -------------------------------

@pytest.mark.parametrize("crash", [False, True])
def test_only_a_clean_broker_stop_fires_the_last_will(crash, tmp_path):
    """A real mosquitto and a real MqttSink (reconnect delay fixed at 3 s): a clean stop (SIGTERM)
    publishes the sink's will, `offline`, which a subscriber that connected just before sees retained
    once the broker is back; a crash (SIGKILL) publishes nothing, and a fresh subscriber after it sees no
    availability at all until the sink has reconnected and said `online`."""
    from edgepose.core import config as config_mod
    from edgepose.core.payload import make_meta
    from edgepose.core.pose import KEYPOINT_NAMES
    from edgepose.output.mqtt import MqttSink

    import broker as brokers
    from mqtt_util import Collector

    b = brokers.Broker(tmp_path, persistence=True).start()
    cfg = config_mod.load(None, {"mqtt": {"host": b.host, "port": b.port, "reconnect_min": 3.0,
                                          "reconnect_max": 3.0, "keepalive": 5}}, environ={})
    sink = MqttSink(cfg.mqtt, "dev1", make_meta("dev1", "cpm", KEYPOINT_NAMES, (192, 192), (96, 96), "test"),
                    lambda: {"frames": 0})
    sink.start()
    try:
        assert _wait(lambda: sink.stats()["broker"] == "connected", 10)
        (b.kill if crash else b.stop)()
        b.start()
        fresh = Collector(b, "edgepose/dev1/availability")
        back = time.monotonic()
        assert _wait(lambda: fresh.of("availability"), 15)
        first = fresh.of("availability")[0]
        assert _wait(lambda: [m.text for m in fresh.of("availability")][-1] == "online", 15)
        fresh.close()
    finally:
        sink.close()
        b.kill()
    if crash:  # nothing until the sink's reconnect, 3 s after it lost the broker
        assert first.text == "online" and first.t - back > 1.0, (first, back)
    else:  # the will, kept retained by the broker's persistence, before the reconnect
        assert first.text == "offline" and first.retain


def test_docs_promise_no_will_from_a_crashed_broker():
    """docs/mqtt.md said a broker restart fires the last will; only a clean stop does (the test above)."""
    from conftest import REPO

    text = " ".join((REPO / "docs" / "mqtt.md").read_text().split())
    assert "A broker restart fires the last will too" not in text
    assert "Only a clean broker stop fires the last will." in text
    assert "A broker that crashes** (`kill -9`, power loss, OOM kill) publishes no will." in text
