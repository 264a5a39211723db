"""The live preview (`edgepose run --preview`): the server in-process (real HTTP, real JPEGs), then the
real daemon on a real clip with the page driven by headless Chromium (Debian chromium + chromium-driver,
through selenium).  No mocks."""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time

import numpy as np
import pytest

from edgepose.core.errors import ConfigError, DeviceUnavailableError
from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.output.preview import PreviewServer, parse_listen

from conftest import error_lines, payloads, run_cli
from preview_util import (
    chromium,
    chromium_available,
    count_payloads,
    decode,
    free_port,
    get,
    get_with_host,
    long_clip,
    read_mjpeg,
    start_daemon,
    status,
    wait_http,
)

# --- bind parsing -----------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
                                           ("localhost:1", ("localhost", 1)), ("[::1]:8080", ("::1", 8080))])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "host:", ":8080", "70000", "1.2.3.4:http", "::1:80", "-1"])
def test_parse_listen_rejects(text):
    with pytest.raises(ConfigError, match="expected PORT or HOST:PORT"):
        parse_listen(text)


# --- the server in-process ----------------------------------------------------------

def _payload(seq: int, w: int = 320, h: int = 240) -> dict:
    kps = [{"name": n, "x": w / 2 + 10 * np.cos(i), "y": h / 2 + 10 * np.sin(i), "score": 0.8}
           for i, n in enumerate(KEYPOINT_NAMES)]
    return {"v": 1, "seq": seq, "ts": 1000.0 + seq * 0.02, "frame": {"width": w, "height": h}, "present": True,
            "score": 0.8, "keypoints": kps, "latency_ms": {"infer": 5.0, "total": 9.0}}


class Feeder:
    """Submits a new frame every 20 ms (a 50 FPS daemon) until stopped."""

    def __init__(self, server: PreviewServer, image):
        self.server, self.image, self.seq = server, image, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(0.02):
            self.server.submit(self.image, _payload(self.seq))
            self.seq += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def server():
    with PreviewServer(f"127.0.0.1:{free_port()}", fps=5, status_provider=lambda: {"fps": 50.0, "frames": 7},
                       max_clients=3) as s:
        yield s


@pytest.mark.slow
def test_nothing_is_drawn_while_nobody_watches_and_the_rate_is_capped_when_someone_does(server):
    image = np.full((240, 320, 3), 90, np.uint8)
    before = image.copy()
    with Feeder(server, image) as feeder:
        time.sleep(0.6)
        assert feeder.seq >= 15 and server.encoded == 0  # frames arrive, nothing is encoded
        assert server._latest[0] is image  # the observer keeps a reference: no copy
        t0 = time.monotonic()
        jpegs = read_mjpeg(server.host, server.port, parts=6)
        took = time.monotonic() - t0
        assert len(jpegs) == 6
        # at most 5 per second: 6 frames cannot arrive in much under 1 s
        assert took > 0.9, took
        img = decode(jpegs[-1])
        assert img.shape == (240, 320, 3)
        assert (img != 90).any(axis=2).sum() > 500  # skeleton and text were drawn
        _wait_no_clients(server)  # the stream is closed (noticed at the next write or two) ...
        time.sleep(0.3)
        idle_from = server.encoded
        time.sleep(0.8)
        assert server.encoded == idle_from  # ... and the encoder is idle again
    assert np.array_equal(image, before)  # drawing never touches the daemon's frame


def test_frame_status_page_and_404(server):
    image = np.full((480, 1280, 3), 40, np.uint8)  # wider than the preview: downscaled to 640
    code, _, _ = get(server.url + "frame.jpg", timeout=5)
    assert code == 503  # no frame yet
    with Feeder(server, image):
        code, ctype, body = get(server.url + "frame.jpg")
        assert code == 200 and ctype == "image/jpeg"
        assert decode(body).shape == (240, 640, 3)
    st = status(server.url)
    assert st["fps"] == 50.0 and st["frames"] == 7 and st["preview"]["encoded"] >= 1
    code, ctype, body = get(server.url)
    assert code == 200 and ctype.startswith("text/html") and b"stream.mjpg" in body and b"status.json" in body
    assert get(server.url + "nope")[0] == 404


def test_a_client_vanishing_mid_frame_and_too_many_clients(server):
    image = np.full((240, 320, 3), 90, np.uint8)
    with Feeder(server, image):
        # a client that reads a few bytes and resets the connection in the middle of a JPEG
        for _ in range(3):
            s = socket.create_connection((server.host, server.port))
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            assert s.recv(300)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            s.close()
        _wait_no_clients(server)  # noticed at the next frame it tries to send them
        # max_clients=3: three streams are served, the fourth is refused with 503
        socks = []
        for _ in range(3):
            s = socket.create_connection((server.host, server.port))
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            assert b"200" in s.recv(64)
            socks.append(s)
        assert get(server.url + "stream.mjpg")[0] == 503
        for s in socks:
            s.close()
        _wait_no_clients(server)
        assert len(read_mjpeg(server.host, server.port, parts=2)) == 2


def _wait_no_clients(server, timeout=5.0):
    deadline = time.monotonic() + timeout
    while server.stats()["clients"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats()["clients"] == 0


def test_port_in_use_is_one_line_exit_69():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(DeviceUnavailableError, match="already in use"):
            PreviewServer(f"127.0.0.1:{busy.getsockname()[1]}").start()


# --- the real daemon ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("listen,code,text", [("nope", 78, "bad --preview 'nope'"),
                                              ("busy", 69, "already in use")])
def test_run_preview_errors(listen, code, text, edgepose_env, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if listen == "busy":
            listen = str(busy.getsockname()[1])
        from conftest import VIDEOS
        r = run_cli(["run", "--source", VIDEOS / "demo.mp4", "--model", "hourglass", "--preview", listen],
                    edgepose_env)
    assert r.returncode == code, r.stderr
    assert text in r.stderr and "Traceback" not in r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1, r.stderr


@pytest.fixture(scope="module")
def preview_clip(tmp_path_factory):
    return long_clip(tmp_path_factory.mktemp("preview-clip") / "clip.mp4")


def _run_daemon(clip, d, model_cache):
    """`edgepose run --source <40 s clip> --model hourglass --fps 10 --preview 127.0.0.1:PORT`, logs in d.
    Yields (proc, base url, port, d); SIGTERMs it afterwards if it is still running (kills it if that hangs)."""
    import os

    from conftest import MIRROR
    env = dict(os.environ, EDGEPOSE_MODEL_DIR=str(model_cache), EDGEPOSE_MODEL_MIRROR=str(MIRROR),
               PYTHONUNBUFFERED="1")
    env.pop("EDGEPOSE_CONFIG", None)
    port = free_port()
    proc = start_daemon(clip, port, env, d)
    base = f"http://127.0.0.1:{port}/"
    try:
        if not wait_http(base):
            pytest.fail("preview did not come up:\n" + (d / "daemon.err").read_text())
        yield proc, base, port, d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except Exception:
                proc.kill()
                proc.wait(10)
                raise


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_cache, preview_clip):
    """The daemon the read-only tests share (none of them stops it)."""
    yield from _run_daemon(preview_clip, tmp_path_factory.mktemp("preview"), model_cache)


@pytest.fixture
def own_daemon(tmp_path, model_cache, preview_clip):
    """A daemon for one test alone (one that stops it)."""
    yield from _run_daemon(preview_clip, tmp_path, model_cache)


@pytest.mark.slow
def test_page_in_headless_chromium(daemon):
    why = chromium_available()
    if why:
        pytest.fail(why)
    proc, base, _, _ = daemon
    driver = chromium()
    try:
        driver.get(base)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: d.execute_script("return document.getElementById('live').naturalWidth") > 0)
        assert driver.execute_script("return document.getElementById('live').naturalWidth") == 640
        wait.until(lambda d: d.find_element(By.ID, "st-frames").text not in ("", "-"))
        img = driver.find_element(By.ID, "live")
        first = img.screenshot_as_png
        time.sleep(1.5)
        second = img.screenshot_as_png
        assert first != second  # the picture is live
        a, b = (decode(x) for x in (first, second))
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
        # the status numbers: the page shows what /status.json says
        time.sleep(1.2)
        fps = float(driver.find_element(By.ID, "st-fps").text)
        frames = int(driver.find_element(By.ID, "st-frames").text)
        st = status(base)
        assert 5.0 < fps <= 10.5 and 5.0 < st["fps"] <= 10.5  # --fps 10
        assert 0 < frames <= st["frames"]
        assert driver.find_element(By.ID, "st-model").text == "hourglass"
        assert int(driver.find_element(By.ID, "st-clients").text) >= 1
        assert json.loads(driver.find_element(By.ID, "json").get_attribute("textContent"))["model"] == "hourglass"
    finally:
        driver.quit()
    assert proc.poll() is None


@pytest.mark.slow
def test_daemon_survives_disconnects_and_20_clients(daemon):
    proc, base, port, d = daemon
    start = count_payloads(d)
    for _ in range(5):  # vanish mid-stream, with a reset
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        assert s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    got = [None] * 20

    def client(i):
        got[i] = read_mjpeg("127.0.0.1", port, parts=3, timeout=15)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(g is not None and len(g) == 3 for g in got), [len(g or []) for g in got]
    assert all(decode(g[-1]).shape == (480, 640, 3) for g in got)
    time.sleep(1.0)
    st = status(base)
    assert st["preview"]["clients"] <= 1  # all gone (the browser test's page may still be closing)
    assert proc.poll() is None
    time.sleep(1.0)
    assert count_payloads(d) > start + 15  # ~10 payloads/s kept coming all along


@pytest.mark.slow
def test_sigterm_with_a_viewer_connected_stops_cleanly(own_daemon):
    proc, base, port, d = own_daemon
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    buf = b""
    while b"\xff\xd8" not in buf:  # the viewer is being streamed frames, not just headers
        chunk = s.recv(65536)
        assert chunk, buf[:200]
        buf += chunk
    # a fresh daemon: let it publish a run of payloads first, so the seq check below means something
    deadline = time.monotonic() + 30
    while count_payloads(d) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count_payloads(d) >= 10, (d / "daemon.err").read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    s.close()
    ps = payloads((d / "daemon.out").read_text())
    assert len(ps) >= 10 and [p["seq"] for p in ps] == list(range(len(ps)))
    assert "Traceback" not in (d / "daemon.err").read_text()


def test_the_installed_service_leaves_the_preview_off():
    from edgepose.core import config

    from conftest import REPO
    assert config.load(str(REPO / "deploy" / "edgepose.toml"), environ={}).preview.listen == ""
    assert "--preview" not in (REPO / "deploy" / "edgepose.service").read_text()


def _get_with_host(server, host, path="/status.json"):
    return get_with_host(server.host, server.port, host, path)


def test_only_host_headers_naming_the_server_are_answered():
    """Issue 23 item 7 (DNS rebinding): a page of another site reaching the preview through the browser on the
    board names its own host; such requests get 421, for every path."""
    with PreviewServer(f"127.0.0.1:{free_port()}", status_provider=lambda: {"frames": 7},
                       hosts=("Pi.Local",)) as s:
        p = s.port
        for host in (f"127.0.0.1:{p}", "127.0.0.1", f"localhost:{p}", "LOCALHOST.", f"[::1]:{p}", f"pi.local:{p}",
                     None):
            code, body = _get_with_host(s, host)
            assert code == 200 and json.loads(body)["frames"] == 7, (host, code)
        for host in (f"evil.example:{p}", "attacker.test", f"127.0.0.1.evil.example:{p}", "localhost.evil", "",
                     "a b", f"[::2]:{p}"):
            for path in ("/status.json", "/frame.jpg", "/stream.mjpg", "/"):
                code, body = _get_with_host(s, host, path)
                assert code == 421 and b"preview.hosts" in body, (host, path, code)


def test_a_burst_of_concurrent_requests_is_answered_quickly(server):
    """The listen backlog holds a burst (was 5: 200 concurrent requests took 21 s, some got empty replies).
    200 requests on loopback, bounded in count and time."""
    results = []
    lock = threading.Lock()
    go = threading.Event()

    def one():
        go.wait()
        try:
            code, body = _get_with_host(server, f"127.0.0.1:{server.port}")
        except OSError as e:
            code, body = repr(e), b""
        with lock:
            results.append((code, body[:1]))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(200)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    go.set()
    for t in threads:
        t.join(30)
    took = time.monotonic() - t0
    assert len(results) == 200 and all(r == (200, b"{") for r in results), [r for r in results if r[0] != 200][:5]
    assert took < 5.0, f"200 concurrent requests took {took:.1f} s"
