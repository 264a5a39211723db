"""Helpers for the preview/viewer tests: a long clip, a daemon with --preview, headless Chromium,
and a raw MJPEG reader."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List, Optional

import cv2

from broker import free_port, wait_port  # noqa: F401  (re-exported for the tests)
from conftest import REPO

sys.path.insert(0, str(REPO))
from benchmarks.pipeline import make_clip  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,800"]


def long_clip(path: Path, repeats: int = 15) -> Path:
    """A 640x480 clip of calibration photos, 26 frames (each photo held 2 frames) repeated."""
    frames = read_frames(make_clip(path.with_name("base_" + path.name), 26, hold=2))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for _ in range(repeats):
        for f in frames:
            out.write(f)
    out.release()
    return path


def read_frames(path: Path) -> list:
    """Every frame of a video file."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def start_daemon(clip: Path, port: int, env: dict, log_dir: Path, extra=()) -> subprocess.Popen:
    """`edgepose run ... --preview 127.0.0.1:PORT` with stdout/stderr in files under log_dir."""
    out = open(log_dir / "daemon.out", "w")
    err = open(log_dir / "daemon.err", "w")
    cmd = [sys.executable, "-m", "edgepose.cli", "run", "--source", str(clip), "--model", "hourglass",
           "--fps", "10", "--preview", f"127.0.0.1:{port}", *extra]
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=REPO)


def count_payloads(log_dir: Path) -> int:
    return sum(1 for line in (log_dir / "daemon.out").read_text().splitlines() if line.strip())


def get(url: str, timeout: float = 5.0):
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def get_with_host(addr: str, port: int, host: Optional[str], path: str = "/status.json"):
    """(status code, body) of a GET with this Host header (None: no Host header, as HTTP/1.0 allows)."""
    with socket.create_connection((addr, port), timeout=5) as s:
        head = f"GET {path} HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "\r\n"
        s.sendall(head.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def status(base: str) -> dict:
    code, _, body = get(base + "status.json")
    assert code == 200
    return json.loads(body)


def wait_http(base: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(base + "status.json", timeout=1.0)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def read_mjpeg(host: str, port: int, parts: int, timeout: float = 10.0,
               path: str = "/stream.mjpg") -> List[bytes]:
    """Read ``parts`` JPEGs from an MJPEG stream over a plain socket (then close it)."""
    jpegs: List[bytes] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while len(jpegs) < parts and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                a = buf.find(b"\xff\xd8")
                b = buf.find(b"\xff\xd9", a + 2)
                if a < 0 or b < 0:
                    break
                jpegs.append(buf[a:b + 2])
                buf = buf[b + 2:]
    return jpegs


def decode(jpeg: bytes):
    import numpy as np
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def chromium_available() -> Optional[str]:
    """None when headless Chromium can be driven here, else why not."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "pip package selenium is not installed (pip install -e '.[test]')"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            return f"{exe} missing (apt-get install chromium chromium-driver)"
    return None


def chromium(profile_dir: Optional[Path] = None):
    """A selenium WebDriver for headless Chromium with a new empty profile (caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir or tempfile.mkdtemp(prefix='edgepose-chromium-')}")
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver
