"""`edgepose run` end to end: real models, real clips and photos, every error path with its exit code."""

import json
import os

import cv2
import numpy as np
import pytest

from edgepose.core.pose import KEYPOINT_NAMES

from conftest import (
    CALIB,
    EVAL_ANN,
    EVAL_IMAGES,
    MIRROR,
    REPO,
    VIDEOS,
    error_lines,
    grey_clip,
    payloads,
    run_cli,
    run_cli_inproc,
)

LATENCY_KEYS = {"capture", "preprocess", "infer", "decode", "total"}


def check_payload(p, seq, width, height, model):
    assert set(p) == {"v", "device", "seq", "ts", "frame", "model", "score", "present", "keypoints", "latency_ms"}
    assert p["v"] == 1 and p["seq"] == seq and p["model"] == model
    assert p["frame"] == {"width": width, "height": height}
    assert isinstance(p["present"], bool) and 0 <= p["score"] <= 1
    assert [k["name"] for k in p["keypoints"]] == list(KEYPOINT_NAMES)
    for k in p["keypoints"]:
        assert -width <= k["x"] <= 2 * width and -height <= k["y"] <= 2 * height and 0 <= k["score"] <= 1
    assert set(p["latency_ms"]) == LATENCY_KEYS and p["latency_ms"]["infer"] > 0
    assert abs(p["ts"] - __import__("time").time()) < 600


@pytest.mark.parametrize("clip,size", [("demo.mp4", (960, 540)), ("posetrack_000001.mp4", (1280, 720))])
def test_run_on_shared_clips_gives_one_valid_payload_per_frame(clip, size, edgepose_env):
    r = run_cli_inproc(["run", "--source", VIDEOS / clip, "--model", "hourglass", "--threads", "1"], edgepose_env)
    assert r.returncode == 0, r.stderr
    ps = payloads(r.stdout)
    assert len(ps) == 5
    for i, p in enumerate(ps):
        check_payload(p, i, *size, "hourglass")
    assert "Traceback" not in r.stderr


def _person_crops(tmp_path):
    """Top-down crops around each annotated person (as a camera framing one person would see them)."""
    ann = json.loads(EVAL_ANN.read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    out = []
    for i, a in enumerate(ann["annotations"]):
        x, y, w, h = a["bbox"]
        if max(w, h) < 150:  # tiny people are what tracking is for; not this test
            continue
        img = cv2.imread(str(EVAL_IMAGES.parent / files[a["image_id"]]))
        cx, cy, side = x + w / 2, y + h / 2, max(w, h) * 1.25
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(img.shape[1], cx + side / 2)), int(min(img.shape[0], cy + side / 2))
        name = f"p{i:02d}.jpg"
        cv2.imwrite(str(tmp_path / name), img[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        kp = np.array(a["keypoints"], float).reshape(-1, 3)
        out.append((name, kp[:, :2] - [x0, y0], kp[:, 2] > 0, max(w, h)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cpm", "hourglass"])
def test_keypoints_land_on_the_person(model, tmp_path, edgepose_env):
    crops = _person_crops(tmp_path)
    assert len(crops) >= 10
    r = run_cli_inproc(["run", "--source", tmp_path, "--model", model, "--no-tracking", "--no-smoothing"],
                       edgepose_env)
    assert r.returncode == 0, r.stderr
    ps = payloads(r.stdout)
    assert len(ps) == len(crops)
    hits = total = 0
    for p, (_name, gt, vis, size) in zip(ps, crops):
        pred = np.array([[k["x"], k["y"]] for k in p["keypoints"]])
        d = np.linalg.norm(pred - gt, axis=1)[vis]
        hits += int((d <= 0.1 * size).sum())
        total += int(vis.sum())
    # "most labelled joints within 10% of the person box"
    assert hits / total > 0.5, f"{model}: only {hits}/{total} joints within 10% of the box"


def test_image_glob_max_frames_and_fps_cap(edgepose_env):
    r = run_cli_inproc(["run", "--source", str(CALIB / "*.jpg"), "--model", "hourglass", "--max-frames", "4",
                        "--fps", "10"], edgepose_env)
    assert r.returncode == 0, r.stderr
    ps = payloads(r.stdout)
    assert [p["seq"] for p in ps] == [0, 1, 2, 3]
    gaps = np.diff([p["ts"] for p in ps])
    assert gaps.min() > 0.07, gaps  # the cap spaces frames ~0.1 s apart


def test_config_file_and_environment_reach_the_daemon(tmp_path, edgepose_env):
    cfg = tmp_path / "e.toml"
    cfg.write_text(f'[camera]\nsource = "{CALIB / "ski.jpg"}"\n[model]\nname = "hourglass"\n'
                   f'[output]\ndevice = "porch"\n')
    env = dict(edgepose_env, EDGEPOSE_MODEL_SCORE_THRESHOLD="0.0")
    r = run_cli_inproc(["run", "--config", cfg], env)
    assert r.returncode == 0, r.stderr
    (p,) = payloads(r.stdout)
    assert p["device"] == "porch" and p["model"] == "hourglass" and p["present"] is True


def _slow(*case):
    """A case for the full run only (each one is an `edgepose` process of its own)."""
    return pytest.param(*case, marks=pytest.mark.slow)


@pytest.mark.parametrize("args,code,message", [
    _slow(["run", "--camera", "7"], 69, "cannot open camera 7"),
    (["run", "--camera", "clip.mp4"], 64, "--camera takes a camera (0, /dev/video2, csi://0)"),
    _slow(["run", "--source", "{fakevideo}"], 66, "cannot decode video"),
    _slow(["run", "--source", "/nonexistent/clip.mp4"], 66,
          "source /nonexistent/clip.mp4 does not exist"),
    (["run", "--source", "{calib}", "--model", "/nonexistent/m.tflite"], 66,
     "model file /nonexistent/m.tflite does not exist"),
    _slow(["run", "--source", "{calib}", "--model", "posenet"], 78, "unknown model 'posenet'"),
    (["run", "--source", "{calib}", "--model", "{corrupt}"], 65, "not a valid TFLite model"),
    (["run", "--source", "{calib}", "--config", "{badcfg}"], 78, "unknown config key runtime.thread"),
    _slow(["run", "--source", "{calib}", "--threads", "-1"], 78, "runtime.threads"),
    _slow(["run", "--source", "{calib}", "--broker", "host:port"], 78, "bad --broker"),
    # the sink fails after the source's reader thread started: it must be closed (this aborted with 134)
    _slow(["run", "--source", "{calib}", "--sink", "mqtt", "--device", "a/b"], 78,
          "bad device id 'a/b'"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_error_paths_one_line_and_exit_code(args, code, message, tmp_path, edgepose_env):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(os.urandom(4096))
    badcfg = tmp_path / "bad.toml"
    badcfg.write_text("[runtime]\nthread = 2\n")
    fakevideo = tmp_path / "fake.mp4"
    fakevideo.write_text("not a video\n")
    args = [a.format(calib=CALIB / "ski.jpg", corrupt=corrupt, badcfg=badcfg, fakevideo=fakevideo) for a in args]
    r = run_cli(args, edgepose_env)  # a process: native runtime/OpenCV/FFmpeg chatter on fd 2 is checked too
    assert r.returncode == code, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.lower().startswith("edgepose: error")]
    assert len(errors) == 1, r.stderr
    # and nothing else but edgepose's own lines: no native runtime/OpenCV/FFmpeg chatter
    assert all(line.startswith("edgepose: ") or line.startswith("usage: ") or line.startswith("  ")
               for line in r.stderr.splitlines() if line.strip()), r.stderr


def test_checksum_mismatch_in_cache_is_exit_65(tmp_path, edgepose_env):
    cache = tmp_path / "cache"
    (cache / "hourglass").mkdir(parents=True)
    data = bytearray((MIRROR / "hourglass" / "model.tflite").read_bytes())
    data[5000] ^= 0xFF
    (cache / "hourglass" / "model.tflite").write_bytes(bytes(data))
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(cache))
    r = run_cli_inproc(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"], env)
    assert r.returncode == 65 and "checksum mismatch" in r.stderr and "Traceback" not in r.stderr


def test_first_use_fetches_into_the_cache_from_the_mirror(tmp_path, edgepose_env):
    cache = tmp_path / "fresh"
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(cache))
    r = run_cli_inproc(["run", "--source", CALIB / "ski.jpg", "--model", "hourglass"], env)
    assert r.returncode == 0, r.stderr
    assert (cache / "hourglass" / "model.tflite").stat().st_size == 1716000
    assert "100%" in r.stderr  # the progress bar finished


@pytest.mark.slow
def test_sigterm_stops_cleanly(tmp_path, edgepose_env):
    import select
    import signal
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--source", str(CALIB),
                             "--model", "hourglass", "--fps", "2"], env=edgepose_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # never block the suite on a hung daemon
        assert ready, "no payload within 30 s"
        line = proc.stdout.readline()
        assert line
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM received: stopping" in err
    assert len(payloads(line + out)) < 13  # stopped before the folder ran out


@pytest.mark.parametrize("args", [["--log-level", "warning", "run"], ["--log-level=warning", "run"],
                                  ["run", "--log-level", "warning"]])
def test_log_level_before_or_after_the_command(args, edgepose_env):
    r = run_cli_inproc([*args, "--source", CALIB / "ski.jpg", "--model", "hourglass"], edgepose_env)
    assert r.returncode == 0, r.stderr
    assert len(payloads(r.stdout)) == 1
    assert "edgepose: INFO" not in r.stderr  # the level took effect


def test_photos_of_a_folder_are_independent(edgepose_env):
    """Tracking and smoothing are for sequences: each photo of a folder gives what it gives alone."""
    r = run_cli_inproc(["run", "--source", CALIB, "--model", "hourglass"], edgepose_env)
    assert r.returncode == 0, r.stderr
    together = payloads(r.stdout)
    names = sorted(p.name for p in CALIB.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert len(together) == len(names)
    for i in (1, 6, len(names) - 1):  # later photos, after others were tracked and smoothed
        r = run_cli_inproc(["run", "--source", CALIB / names[i], "--model", "hourglass"], edgepose_env)
        (alone,) = payloads(r.stdout)
        xy = [(k["x"], k["y"], k["score"]) for k in together[i]["keypoints"]]
        assert xy == pytest.approx([(k["x"], k["y"], k["score"]) for k in alone["keypoints"]], abs=1e-6), names[i]


@pytest.mark.slow
@pytest.mark.parametrize("deg", [90, 180, 270])
def test_rotate_turns_a_sideways_or_upside_down_camera_upright(deg, tmp_path, edgepose_env):
    """`--rotate DEG` (camera.rotate): photos as a camera turned the other way would take them (rotated
    losslessly, PNG) decode to exactly the keypoints and frame size of the upright photos."""
    upright, turned = tmp_path / "upright", tmp_path / "turned"
    upright.mkdir()
    turned.mkdir()
    back = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}[deg]
    for path in sorted(CALIB.glob("*.jpg"))[:3]:
        img = cv2.imread(str(path))
        cv2.imwrite(str(upright / (path.stem + ".png")), img)
        cv2.imwrite(str(turned / (path.stem + ".png")), cv2.rotate(img, back))
    base = ["run", "--model", "hourglass", "--no-smoothing"]
    want = run_cli_inproc(base + ["--source", upright], edgepose_env)
    got = run_cli_inproc(base + ["--source", turned, "--rotate", str(deg)], edgepose_env)
    plain = run_cli_inproc(base + ["--source", turned], edgepose_env)
    assert want.returncode == got.returncode == plain.returncode == 0, got.stderr
    assert f"frames turned {deg} degrees clockwise" in got.stderr
    a, b, c = payloads(want.stdout), payloads(got.stdout), payloads(plain.stdout)
    assert len(a) == len(b) == 3
    for pa, pb, pc in zip(a, b, c):
        assert pb["frame"] == pa["frame"] and pb["keypoints"] == pa["keypoints"] and pb["score"] == pa["score"]
        assert pc["keypoints"] != pa["keypoints"]  # without --rotate the model sees the turned photo


def test_a_reload_turns_the_running_source_without_reopening_it(tmp_path, model_cache):
    """SIGHUP with a new camera.rotate: the same file source goes on (no replay from frame 0) and the frames
    after the reload are turned (payload frame size 240x320 instead of 320x240)."""
    import threading
    import time

    from edgepose.capture.sources import open_source
    from edgepose.core import config as config_mod
    from edgepose.daemon.service import Daemon

    clip = grey_clip(tmp_path / "clip.mp4", 400)
    path = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{clip}"\n[output]\nsink = "none"\n[runtime]\nthreads = 1\nmax_fps = 40.0\n'
            f'[model]\nname = "hourglass"\ndir = "{model_cache}"\nmirror = "{MIRROR}"\n')
    path.write_text(base)
    opened, seen = [], []

    def source_factory(uri, **kw):
        opened.append(uri)
        return open_source(uri, **kw)

    daemon = Daemon(config_mod.load(str(path), environ={}), environ={}, source_factory=source_factory,
                    observers=[lambda frame, result, payload: seen.append((payload["frame"], frame.index))])
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        end = time.monotonic() + 60
        while len(seen) < 5 and time.monotonic() < end:
            time.sleep(0.05)
        path.write_text(base.replace("[camera]\n", "[camera]\nrotate = 90\n"))
        daemon.reload_event.set()  # what the SIGHUP handler does
        while not any(f["width"] == 240 for f, _ in seen) and time.monotonic() < end:
            time.sleep(0.05)
        after = len(seen)
        while len(seen) < after + 3 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        daemon.stop_event.set()
        t.join(30)
    sizes = [(f["width"], f["height"]) for f, _ in seen]
    turn = sizes.index((240, 320))
    assert set(sizes[:turn]) == {(320, 240)} and set(sizes[turn:]) == {(240, 320)}, sizes
    indices = [i for _, i in seen]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)  # one pass, no replay
    assert opened == [str(clip)] and daemon.cfg.camera.rotate == 90


def test_a_reload_reopens_a_source_only_when_it_must():
    """A file is never reopened for capture settings (that would replay it from the start); a live camera is,
    and any source is when camera.source itself changes (service._must_reopen; test_mqtt_daemon.py runs
    the file and missing-source cases for real)."""
    from dataclasses import replace

    from edgepose.core.config import CameraConfig
    from edgepose.daemon.service import _must_reopen

    cam = CameraConfig(source="0")
    assert _must_reopen(cam, replace(cam, width=1280), live=True)
    assert not _must_reopen(cam, replace(cam, width=1280), live=False)
    assert not _must_reopen(cam, replace(cam, gone_timeout=5.0), live=True)  # read by the loop, not the capture
    assert _must_reopen(cam, replace(cam, source="clip.mp4"), live=False)


@pytest.mark.slow
def test_ctrl_c_interrupts_a_first_use_download(tmp_path, edgepose_env):
    """A mirror that accepts the connection and never answers: Ctrl-C ends `run` at once (130, "interrupted",
    nothing cached), instead of waiting out the download's timeout and blaming the mirror."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # connections queue up; nothing ever answers
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--source", str(CALIB / "p1.jpg"),
                             "--model-mirror", f"http://127.0.0.1:{srv.getsockname()[1]}"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # inside the download by now (interpreter start, imports, the connect)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
        srv.close()
    assert time.monotonic() - t0 < 5, err
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not list((tmp_path / "cache").rglob("*.tflite")) and not list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.slow
def test_a_very_low_frame_rate_cap_still_answers_signals(tmp_path, edgepose_env):
    """--fps 1e-300 (one frame, then a wait longer than time_t): the pause is taken in slices, so there is
    no OverflowError, SIGHUP is answered during it, and SIGTERM ends the run with 0."""
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "edgepose.toml"
    cfg.write_text("[output]\nsink = \"none\"\n")
    err = tmp_path / "err.txt"
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--config", str(cfg), "--source",
                             str(VIDEOS / "demo.mp4"), "--model", "hourglass", "--fps", "1e-300"],
                            env=edgepose_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    try:
        deadline = time.monotonic() + 60
        while "first pose decoded" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGHUP)
        while "SIGHUP: configuration unchanged" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    finally:
        proc.kill()
    assert "Traceback" not in err.read_text() and "stopped after 1 frames" in err.read_text()


@pytest.mark.slow
def test_stdout_that_cannot_be_written_is_one_error(edgepose_env):
    """A full disk behind `> file` (here /dev/full) or a closed stdout: one line and exit 74, no traceback."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "edgepose.cli", "run", "--source", str(VIDEOS / "demo.mp4"), "--model",
            "hourglass", "--max-frames", "2"]
    with open("/dev/full", "w") as full:
        r = subprocess.run(base, env=edgepose_env, cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 74 and "No space left on device" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "run", *base], env=edgepose_env, cwd=REPO,
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 74 and "stdout is closed" in r.stderr and "Traceback" not in r.stderr, r.stderr

    # every other command's output goes through the same guard (cli.GuardedStdout, and cli.entry_point for
    # argparse's --help/--version), with stdout block-buffered as a user has it (the fixture unbuffers it)
    cli = [sys.executable, "-m", "edgepose.cli"]
    edgepose_env = {k: v for k, v in edgepose_env.items() if k != "PYTHONUNBUFFERED"}
    for args in (["models", "list"], ["eval", "--model", "hourglass", "--annotations", str(EVAL_ANN)],
                 ["--version"], ["run", "--help"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run(cli + args, env=edgepose_env, cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                               text=True)
        assert r.returncode == 74 and "Traceback" not in r.stderr, (args, r.stderr)
        assert error_lines(r.stderr) == ["edgepose: ERROR: cannot write to stdout: No space left on device"]
        r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "run", *cli, *args], env=edgepose_env, cwd=REPO,
                           stderr=subprocess.PIPE, text=True)
        assert r.returncode == 74 and "Traceback" not in r.stderr, (args, r.stderr)
        assert error_lines(r.stderr) == ["edgepose: ERROR: stdout is closed: there is nowhere to print the "
                                         "result (do not start it with >&-)"], r.stderr
        r = subprocess.run(["bash", "-c", '"$@" | head -c 1 >/dev/null; exit ${PIPESTATUS[0]}', "run", *cli,
                            *args], env=edgepose_env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)  # `| head`: not an error


def test_the_publisher_keeps_frame_order_bounds_its_queue_and_hands_its_error_to_the_main_thread():
    """`edgepose run` makes and publishes payloads on a thread of their own while the model runs on the next
    frame (edgepose/daemon/service.Publisher): in order, at most `depth` waiting (submit blocks, nothing is
    dropped), and a sink error (a full disk) comes back in the main thread at its next submit or drain."""
    import threading

    from edgepose.core.errors import OutputError
    from edgepose.daemon.service import Publisher

    done, gate = [], threading.Event()

    def finish(item):
        gate.wait()
        if item == 5:
            raise OutputError("No space left on device")
        done.append(item)

    pub = Publisher(finish, depth=2, hold=0.01)
    feeder = threading.Thread(target=lambda: [pub.submit(i) for i in range(4)])
    feeder.start()
    feeder.join(0.5)
    assert feeder.is_alive() and done == []  # one in finish, two queued: the fourth waits
    gate.set()
    feeder.join(5)
    pub.drain()
    assert done == [0, 1, 2, 3]
    pub.submit(4)
    pub.submit(5)
    with pytest.raises(OutputError, match="No space"):
        pub.drain()
    with pytest.raises(OutputError):
        pub.submit(6)
    pub.close()
    assert done == [0, 1, 2, 3, 4]


def test_the_publisher_waits_for_the_main_thread_to_start_an_inference():
    """A frame is published when the engine's invoke() starts (the main thread then holds no GIL), or after
    `hold` seconds when no inference comes (the end of a file, a live camera's wait has go() too)."""
    import threading
    import time

    from edgepose.daemon.service import Publisher

    done = []
    pub = Publisher(lambda item: done.append((item, time.monotonic())), hold=1.0)
    t0 = time.monotonic()
    pub.submit("a")
    time.sleep(0.2)
    assert done == []  # held: the main thread is still cropping and tracking
    pub.go()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done and done[0][0] == "a" and done[0][1] - t0 >= 0.2
    quick = Publisher(done.append, hold=0.05)
    started = time.monotonic()
    quick.submit("b")
    quick.drain()  # nothing invokes: published within hold anyway (drain does not wait for it either)
    assert done[-1] == "b" and time.monotonic() - started < 1.0
    for p in (pub, quick):
        p.close()
    assert not any(t.name == "edgepose-publisher" and t.is_alive() for t in threading.enumerate())
