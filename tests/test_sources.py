"""Frame sources: parsing, finite sources in order, live sources keeping the newest frame."""

import base64
import shutil
import time

import cv2
import numpy as np
import pytest

from edgepose.capture import sources
from edgepose.core.errors import DeviceUnavailableError, InputMissingError, RuntimeMissingError

from conftest import CALIB, VIDEOS


def test_parse_kinds(tmp_path):
    assert sources.parse_source("0").kind == "camera"
    assert sources.parse_source("/dev/video2") == sources.SourceSpec("v4l2", "/dev/video2", index=2)
    assert sources.parse_source("csi://1").index == 1 and sources.parse_source("csi://1").live
    assert sources.parse_source("rtsp://cam.lan/stream").kind == "stream"
    assert sources.parse_source(str(VIDEOS / "demo.mp4")).kind == "video"
    assert sources.parse_source(str(CALIB / "ski.jpg")).kind == "image"
    folder = sources.parse_source(str(CALIB))
    assert folder.kind == "images" and list(folder.paths) == sorted(folder.paths) and len(folder.paths) == 13
    g = sources.parse_source(str(CALIB / "apink*.jpg"))
    assert [p.rsplit("/", 1)[1] for p in g.paths] == ["apink1.jpg", "apink1_crop.jpg", "apink2.jpg", "apink3.jpg"]


@pytest.mark.parametrize("uri,msg", [("/nonexistent/clip.mp4", "does not exist"),
                                     ("/nonexistent/*.jpg", "no images match"),
                                     ("", "empty source")])
def test_parse_errors(uri, msg):
    with pytest.raises(Exception, match=msg) as e:
        sources.parse_source(uri)
    assert e.value.exit_code in (64, 66)


def test_empty_folder_and_undecodable_video(tmp_path):
    with pytest.raises(InputMissingError, match="has no images"):
        sources.parse_source(str(tmp_path))
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputMissingError, match="cannot decode video"):
        sources.open_source(str(bad))
    odd = tmp_path / "photo.avif"  # a still image OpenCV cannot read is not called a video
    odd.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputMissingError, match="neither an image nor a video OpenCV can read"):
        sources.open_source(str(odd))


def _drain(src):
    frames = []
    while True:
        f = src.read(timeout=5)
        if f is None:
            assert src.exhausted
            return frames
        frames.append(f)


def test_video_file_yields_every_frame_in_order():
    src = sources.open_source(str(VIDEOS / "demo.mp4"))
    frames = _drain(src)
    src.close()
    assert [f.index for f in frames] == list(range(5))
    assert frames[0].size == (960, 540) and not src.live
    assert all(f2.ts >= f1.ts for f1, f2 in zip(frames, frames[1:]))


def test_folder_skips_unreadable_images(tmp_path):
    for i, name in enumerate(["b.jpg", "a.jpg"]):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), i * 100, np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    src = sources.open_source(str(tmp_path))
    frames = _drain(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [100, 0]  # a.jpg then b.jpg, c.jpg skipped


def test_folder_or_glob_with_no_readable_image_is_missing_input(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    for uri in (str(tmp_path), str(tmp_path / "*.jpg"), str(tmp_path / "a.jpg")):
        with pytest.raises(InputMissingError, match="can(not|) be read|cannot read image"):
            sources.open_source(uri)


def test_paths_with_glob_characters_are_taken_as_named_when_they_exist(tmp_path):
    """`shot[1].png`, `holiday [2024]/`, `run [final].mp4` exist as typed: not globs (where `[2024]` would
    be a character class matching none of them); a pattern that names nothing is still a glob."""
    folder = tmp_path / "holiday [2024]"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((20, 30, 3), 7, np.uint8))
    shutil.copy(folder / "a.png", tmp_path / "shot[1].png")
    shutil.copy(VIDEOS / "demo.mp4", tmp_path / "run [final].mp4")
    assert sources.parse_source(str(tmp_path / "shot[1].png")).kind == "image"
    assert sources.parse_source(str(folder)).paths == (str(folder / "a.png"),)
    assert sources.parse_source(str(tmp_path / "run [final].mp4")).kind == "video"
    assert len(_drain(sources.open_source(str(tmp_path / "run [final].mp4")))) > 0
    glob = sources.parse_source(str(tmp_path / "shot*.png"))
    assert glob.kind == "images" and glob.paths == (str(tmp_path / "shot[1].png"),)


class FakeCamera:
    """Stands in for a V4L2 camera (no camera hardware exists on CI): numbered frames at a fixed rate,
    optionally failing (unplugged) after some frames."""

    def __init__(self, rate=200.0, fail_after=None):
        self.n = 0
        self.rate = rate
        self.fail_after = fail_after
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        time.sleep(1 / self.rate)
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        img = np.full((48, 64, 3), self.n % 256, np.uint8)
        self.n += 1
        return True, img

    def release(self):
        self.released = True


def test_live_source_keeps_only_the_newest_frame():
    cam = FakeCamera(rate=500)
    src = sources.LiveSource(lambda: cam, "fake0")
    first = src.read(timeout=2)
    time.sleep(0.2)  # a slow consumer: ~100 frames arrive meanwhile
    second = src.read(timeout=2)
    src.close()
    assert first is not None and second is not None
    assert second.index - first.index > 20          # skipped straight to a fresh frame
    assert src.dropped >= second.index - first.index - 2
    assert time.time() - second.ts < 0.1             # no growing lag
    assert cam.released


def test_live_source_reopens_a_lost_camera_with_backoff():
    opened = []

    def opener():
        # first camera dies after 5 frames, the next two opens fail (unplugged), then it is back
        opened.append(time.monotonic())
        if len(opened) == 1:
            return FakeCamera(fail_after=5)
        if len(opened) in (2, 3):
            return None
        return FakeCamera()

    src = sources.LiveSource(opener, "fake0", backoff_max=2.0)
    states = set()
    deadline = time.monotonic() + 10
    got_back = False
    while time.monotonic() < deadline:
        f = src.read(timeout=0.2)
        states.add(src.state)
        if src.state == "reconnecting":
            assert src.lost_for() > 0
        if f is not None and len(opened) >= 4:
            got_back = True
            break
    src.close()
    assert "reconnecting" in states and got_back and src.state == "ok"
    gaps = np.diff(opened[1:])
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff


def test_camera_that_cannot_be_opened_is_exit_69():
    with pytest.raises(DeviceUnavailableError, match="cannot open camera") as e:
        sources.LiveSource(lambda: None, "/dev/video9")
    assert e.value.exit_code == 69


def test_first_open_failure_names_its_cause():
    """A missing picamera2 is reported as such (not as "is it connected?"); a stream that raised names
    the stream and the error. (Openers are stand-ins: no camera or stream exists here.)"""
    def no_picamera2():
        return sources.Picamera2Capture(0, 640, 480, 30, module=None)

    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeMissingError, match="needs picamera2"):
            sources.LiveSource(no_picamera2, "csi://0")

    def refused():
        raise OSError("connection refused")

    with pytest.raises(DeviceUnavailableError, match=r"cannot open stream rtsp://cam.lan/s .*connection refused"):
        sources.LiveSource(refused, "rtsp://cam.lan/s")


def test_jetson_csi_pipeline_and_board_detection(tmp_path):
    pipe = sources.jetson_csi_pipeline(1, 1280, 720, 30)
    assert pipe.startswith("nvarguscamerasrc sensor-id=1 ") and "width=(int)1280" in pipe
    assert pipe.endswith("appsink drop=true max-buffers=1 sync=false")
    assert not sources.is_jetson(str(tmp_path)) and not sources.is_raspberry_pi(str(tmp_path))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R35 (release)")
    assert sources.is_jetson(str(tmp_path))
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert sources.is_raspberry_pi(str(tmp_path))


def test_csi_on_a_pi_without_picamera2_says_how_to_install_it():
    with pytest.raises(RuntimeMissingError, match="python3-picamera2"):
        sources.Picamera2Capture(0, 640, 480, 30)


def test_picamera2_adapter_logic():
    """picamera2 exists only on a Pi: a stand-in module checks the adapter's calls and BGR format."""
    calls = []

    class Cam:
        def __init__(self, idx):
            calls.append(("open", idx))

        def create_video_configuration(self, main, controls):
            calls.append(("config", main, controls))
            return "conf"

        def configure(self, conf):
            calls.append(("configure", conf))

        def start(self):
            calls.append(("start",))

        def capture_array(self, stream):
            return np.zeros((480, 640, 3), np.uint8)

        def stop(self):
            calls.append(("stop",))

        def close(self):
            calls.append(("close",))

    mod = type("picamera2", (), {"Picamera2": Cam})
    cap = sources.Picamera2Capture(0, 640, 480, 15, module=mod)
    ok, img = cap.read()
    cap.release()
    assert ok and img.shape == (480, 640, 3)
    assert calls[1] == ("config", {"size": (640, 480), "format": "RGB888"}, {"FrameRate": 15.0})
    assert calls[-2:] == [("stop",), ("close",)]


def test_snapshot_capture_paces_its_fetches_and_reports_failures(caplog):
    """SnapshotCapture (an IP camera's snapshot.jpg) with a scripted fetch and clock: one fetch per period,
    the probe's image is the first frame, and a failed fetch or a non-image is a failed read."""
    ok_jpg = cv2.imencode(".jpg", np.full((12, 16, 3), 80, np.uint8))[1].tobytes()
    answers = [ok_jpg, ok_jpg, OSError("connection refused"), b"<html>login</html>", ok_jpg]
    now, slept, fetched = [100.0], [], []

    def fetch():
        fetched.append(now[0])
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s

    cap = sources.SnapshotCapture("http://cam/snap.jpg", fps=4, fetch=fetch, sleep=sleep, clock=lambda: now[0])
    assert cap.probe() is cap and len(fetched) == 1
    ok, img = cap.read()  # the probe's image, no second fetch
    assert ok and img.shape == (12, 16, 3) and len(fetched) == 1
    results = [cap.read()[0] for _ in range(3)]
    assert results == [True, False, False] and isinstance(cap.error, ValueError)
    assert cap.read()[0] is True
    assert [round(b - a, 6) for a, b in zip(fetched, fetched[1:])] == [0.25] * 4  # 4 fetches a second
    dead = sources.SnapshotCapture("http://cam/snap.jpg", fetch=lambda: (_ for _ in ()).throw(OSError("refused")),
                                   sleep=sleep, clock=lambda: now[0])
    with pytest.raises(OSError, match="refused"):
        dead.probe()
    assert dead.period == 1 / sources.SNAPSHOT_FPS

    # closing a live snapshot source does not wait out the pause between fetches (here 20 s)
    slow = sources.LiveSource(lambda: sources.SnapshotCapture("http://cam/snap.jpg", fps=0.05,
                                                              fetch=lambda: ok_jpg).probe(), "snap")
    assert slow.read(timeout=5) is not None
    t0 = time.monotonic()
    slow.close()
    assert time.monotonic() - t0 < 1.5 and not slow._thread.is_alive()
    assert not [r for r in caplog.records if "lost" in r.getMessage()]  # a read cut short by close()


@pytest.mark.slow
def test_an_image_url_is_polled_as_a_camera_without_flapping(tmp_path, edgepose_env):
    """`--source http://.../snapshot.jpg` against a real local HTTP server: live frames at camera.fps, no
    'lost'/'back' pair per frame (it used to open as a one-frame stream and lose it every time); a URL
    that answers 404 is one error and exit 69."""
    import functools
    import http.server
    import threading

    from conftest import CALIB, error_lines, payloads, run_cli

    shutil.copy(sorted(CALIB.glob("*.jpg"))[0], tmp_path / "snapshot.jpg")
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        env = dict(edgepose_env, EDGEPOSE_CAMERA_FPS="10")
        r = run_cli(["run", "--source", f"{base}/snapshot.jpg?user=x", "--model", "hourglass",
                     "--max-frames", "3"], env)
        assert r.returncode == 0, r.stderr
        ps = payloads(r.stdout)
        h, w = cv2.imread(str(tmp_path / "snapshot.jpg")).shape[:2]
        assert len(ps) == 3 and all(p["frame"] == {"width": w, "height": h} for p in ps)
        assert "(live)" in r.stderr and "lost" not in r.stderr and "is back" not in r.stderr, r.stderr
        r = run_cli(["run", "--source", f"{base}/nothere.jpg", "--model", "hourglass", "--max-frames", "1"], env)
        assert r.returncode == 69 and error_lines(r.stderr) == [
            f"edgepose: ERROR: cannot open stream {base}/nothere.jpg (is the address right and the stream up? "
            "last error: HTTP Error 404: File not found)"], r.stderr
    finally:
        server.shutdown()

    # an IP camera asking for a login: user:password in the URL become Basic auth, and never reach the log
    body = (tmp_path / "snapshot.jpg").read_bytes()

    class Login(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"admin:p@ss w").decode():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        r = run_cli(["run", "--source", f"http://admin:p%40ss%20w@{host}/snap.jpg", "--model", "hourglass",
                     "--max-frames", "2"], env)
        assert r.returncode == 0 and len(payloads(r.stdout)) == 2, r.stderr
        assert f"http://admin:***@{host}/snap.jpg" in r.stderr and "p%40ss" not in r.stderr, r.stderr
        r = run_cli(["run", "--source", f"http://admin:wrong@{host}/snap.jpg", "--max-frames", "1"], env)
        assert r.returncode == 69 and "HTTP Error 401" in r.stderr and "wrong" not in r.stderr, r.stderr
    finally:
        server.shutdown()


def test_passwords_in_source_uris_are_redacted():
    assert sources.redact("rtsp://admin:s3cret@cam.lan:554/live") == "rtsp://admin:***@cam.lan:554/live"
    assert sources.redact("http://a:b@[fd00::5]:8080/x.jpg?q=1") == "http://a:***@[fd00::5]:8080/x.jpg?q=1"
    for plain in ("rtsp://user@cam/live", "http://cam/x.jpg", "0", "/dev/video0", "clips/a b.mp4"):
        assert sources.redact(plain) == plain
