#!/usr/bin/env python3
"""Pipeline efficiency of `edgepose run` with the preview on and one MJPEG viewer connected, vs no
preview (prints numbers; asserts nothing).

    python3 benchmarks/preview.py [--model cpm] [--threads 1] [--frames 300] [--runs 2] [--preview-fps 5]

Same measurement as benchmarks/pipeline.py (whose helpers it uses): efficiency = daemon FPS on a
640x480 clip / (1 / median bare invoke()) with the same model and threads; goal >= 0.90 with one
viewer connected.  Runs alternate (none, viewer, none, viewer, ...) so drift hits both alike.
FPS depends on what else the machine runs; the daemon's CPU time per frame (user + system, from
getrusage of the finished child) does much less, so the preview's own cost is printed from it too.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.pipeline import SHARED, bare_invoke_ms, fps_of, make_clip, run_daemon  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def draw_encode_ms(clip: Path, n: int = 50) -> float:
    """Median time of what the preview's encoder thread does per frame: draw.render + encode_jpeg."""
    import cv2

    from edgepose.core.pose import KEYPOINT_NAMES
    from edgepose.output import draw, preview
    ok, img = cv2.VideoCapture(str(clip)).read()
    h, w = img.shape[:2]
    payload = {"seq": 1, "ts": 0.0, "present": True, "score": 0.7, "latency_ms": {"infer": 30.0, "total": 40.0},
               "keypoints": [{"name": k, "x": w * (0.3 + 0.03 * i), "y": h * (0.2 + 0.05 * i), "score": 0.7}
                             for i, k in enumerate(KEYPOINT_NAMES)]}
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        draw.encode_jpeg(draw.render(img, payload, 10.0, max_width=preview.MAX_WIDTH), preview.QUALITY)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class MjpegViewer(threading.Thread):
    """Connects to /stream.mjpg as soon as the daemon listens and reads it to the end."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.jpegs, self.bytes = port, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
                break
            except OSError:
                time.sleep(0.02)
        else:
            return
        with s:
            s.settimeout(2.0)
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            while not self.stop.is_set():
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self.bytes += len(chunk)
                self.jpegs += chunk.count(b"\xff\xd8\xff")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cpm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--runs", type=int, default=2, help="runs of each kind")
    ap.add_argument("--preview-fps", type=float, default=5.0, help="preview.fps (default 5, the config default)")
    ap.add_argument("--no-xnnpack", action="store_true")
    args = ap.parse_args()

    from edgepose.models import registry
    tmp = Path(tempfile.mkdtemp(prefix="edgepose-bench-"))
    env = dict(os.environ, EDGEPOSE_MODEL_MIRROR=os.environ.get("EDGEPOSE_MODEL_MIRROR", str(SHARED / "models")),
               EDGEPOSE_PREVIEW_FPS=str(args.preview_fps))
    env.setdefault("EDGEPOSE_MODEL_DIR", str(tmp / "models"))
    path = registry.resolve(args.model, cache_dir=env["EDGEPOSE_MODEL_DIR"], mirror=env["EDGEPOSE_MODEL_MIRROR"])
    clip = make_clip(tmp / "clip640x480.mp4", args.frames)
    draw_ms = draw_encode_ms(clip)
    invoke = [bare_invoke_ms(path, args.threads, not args.no_xnnpack)]
    fps = {"none": [], "viewer": []}
    cpu = {"none": [], "viewer": []}  # daemon CPU ms per frame (user + system, all its threads)
    streamed = []

    def measure(kind, extra=()):
        before = children_cpu_s()
        res = run_daemon(args, clip, env, extra=extra)
        cpu[kind].append((children_cpu_s() - before) * 1e3 / max(res["frames"], 1))
        fps[kind].append(fps_of(res["arrivals"]))

    for _ in range(args.runs):
        measure("none")
        port = free_port()
        viewer = MjpegViewer(port)
        viewer.start()
        measure("viewer", ("--preview", f"127.0.0.1:{port}"))
        viewer.stop.set()
        viewer.join(5)
        streamed.append(viewer.jpegs)
        invoke.append(bare_invoke_ms(path, args.threads, not args.no_xnnpack))
    invoke_ms = statistics.median(invoke)
    print(f"model {args.model}, threads {args.threads}, xnnpack {not args.no_xnnpack}, clip 640x480 x "
          f"{args.frames} frames, preview.fps {args.preview_fps}, {args.runs} run(s) each")
    print(f"bare invoke median: {invoke_ms:.2f} ms ({', '.join(f'{x:.2f}' for x in invoke)}) "
          f"-> {1000 / invoke_ms:.1f} FPS ceiling")
    for kind, label in (("none", "no preview"), ("viewer", "preview + 1 MJPEG viewer")):
        f = statistics.median(fps[kind])
        print(f"{label}: {f:.1f} FPS ({', '.join(f'{x:.1f}' for x in fps[kind])}), "
              f"pipeline efficiency {f * invoke_ms / 1000:.3f} (goal >= 0.90)")
    print(f"JPEGs the viewer received per run: {', '.join(map(str, streamed))}")
    for kind, label in (("none", "no preview"), ("viewer", "preview + 1 MJPEG viewer")):
        print(f"daemon CPU per frame, {label}: {statistics.median(cpu[kind]):.1f} ms "
              f"({', '.join(f'{x:.1f}' for x in cpu[kind])})")
    print(f"draw + JPEG encode of one 640x480 preview frame (in-process, median of 50): {draw_ms:.2f} ms "
          f"-> {draw_ms * args.preview_fps / 10:.2f}% of one core at {args.preview_fps:g} preview FPS")
    extra = statistics.median(cpu["viewer"]) - statistics.median(cpu["none"])
    print(f"preview CPU per frame: {extra:+.1f} ms ({extra / invoke_ms:+.1%} of one bare invoke); "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
