#!/usr/bin/env python3
"""MQTT publishing cost and latency against a real local mosquitto (prints numbers; asserts nothing).

    python3 benchmarks/mqtt.py [--qos 0] [--messages 600] [--latency-model hourglass]
                               [--model cpm] [--threads 1] [--frames 300] [--repeat 2]

1. publish cost: ``MqttSink.publish_pose`` timed in this process (what the capture loop
   pays per message: JSON encoding + bounded queue + wake-up), ``--messages`` real
   schema-v1 payloads at 30 msg/s; also the sink -> loopback subscriber latency.
2. end-to-end latency: ``edgepose run --fps 30 --sink mqtt`` (``--latency-model``, fast
   enough for 30 FPS here) on a 640x480 clip; a loopback subscriber computes
   ``receive time - payload ts`` (ts = when the frame entered the pipeline).
3. pipeline efficiency with MQTT on: ``edgepose run --sink mqtt`` uncapped with ``--model``
   and ``--threads``; FPS counted at the subscriber / (1 / median bare invoke()), as in
   benchmarks/pipeline.py (goal >= 0.90), alternating with ``--sink stdout`` runs
   (``--repeat`` pairs, medians) for comparison under the same machine load.
   ``--discovery-ab``: each round also runs ``--sink mqtt`` with Home Assistant discovery off
   (``homeassistant.enabled = false``; the other MQTT runs have it on, the default), and the
   publish cost is measured with and without the sink's presence tracking, for the cost of discovery.

mosquitto is started on a free loopback port with tests/broker.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import paho.mqtt.client as paho  # noqa: E402
import pipeline as pipebench  # noqa: E402  (benchmarks/pipeline.py: clip, bare invoke, fps)

import broker as brokers  # noqa: E402  (tests/broker.py)


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


class Subscriber:
    """Loopback subscriber recording (receive time, payload) for every pose."""

    def __init__(self, b, topic):
        self.got = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.c.on_message = lambda c, u, m: self.got.append((time.time(), time.monotonic(), m.payload))
        self.c.connect(b.host, b.port)
        self.c.loop_start()
        time.sleep(0.3)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def publish_cost(b, qos: int, n: int, discovery: bool = False, state_dir: Path = Path(".")):
    import numpy as np

    from edgepose.core import config
    from edgepose.core.payload import make_meta, make_payload
    from edgepose.core.pose import KEYPOINT_NAMES, Pose
    from edgepose.output import homeassistant
    from edgepose.output.mqtt import MqttSink

    cfg = config.load(None, {"mqtt": {"host": b.host, "port": b.port, "qos": qos},
                             "homeassistant": {"state_file": str(state_dir / "ha-state.json")}}, environ={})
    meta = make_meta("bench-sink", "cpm", KEYPOINT_NAMES, (192, 192), (96, 96), "bench")
    ha = homeassistant.from_config(cfg, "bench-sink", meta, dict, time.monotonic) if discovery else None
    sink = MqttSink(cfg.mqtt, "bench-sink", meta, dict, homeassistant=ha)
    sub = Subscriber(b, "edgepose/bench-sink/pose")
    sink.start()
    while not sink.stats()["connected"]:
        time.sleep(0.01)
    rng = np.random.default_rng(0)
    cost, sent = [], {}
    t_next = time.monotonic()
    for seq in range(n):
        pose = Pose.from_arrays(KEYPOINT_NAMES, rng.uniform(0, 640, (14, 2)), rng.uniform(0, 1, 14), 0.3)
        # (the random scores make `present` change often: the presence topic is written more than in life)
        payload = make_payload("bench-sink", seq, time.time(), (640, 480), "cpm", pose,
                               {"capture": 1.0, "preprocess": 1.0, "infer": 30.0, "decode": 0.2, "total": 33.0})
        t0 = time.perf_counter()
        sink.publish_pose(payload)
        cost.append((time.perf_counter() - t0) * 1e6)
        sent[seq] = time.monotonic()
        t_next += 1 / 30
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(0.5)
    # the sink's network thread, found by its public thread name (no private attribute of the sink)
    net = [t for t in threading.enumerate() if t.name == "edgepose-mqtt"]
    net_cpu_s = thread_cpu_s(net[0].native_id) if net else float("nan")
    sink.close()
    sub.close()
    lat = [(mono - sent[json.loads(p)["seq"]]) * 1e3 for _, mono, p in sub.got]
    return cost, lat, net_cpu_s


def thread_cpu_s(tid: int) -> float:
    """user+system CPU seconds of one thread of this process (from /proc, 10 ms ticks)."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_daemon(b, clip, env, model, threads, fps, device, discovery=True):
    sub = Subscriber(b, f"edgepose/{device}/pose")
    cmd = [sys.executable, "-m", "edgepose.cli", "run", "--source", str(clip), "--model", model,
           "--threads", str(threads), "--sink", "mqtt", "--broker", f"{b.host}:{b.port}",
           "--device", device]
    if fps:
        cmd += ["--fps", str(fps)]
    env = dict(env, EDGEPOSE_HOMEASSISTANT_ENABLED="true" if discovery else "false")
    before = children_cpu_s()
    rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    run_daemon.cpu_s = children_cpu_s() - before  # the daemon's own CPU time (whole run, model load included)
    time.sleep(0.3)
    sub.close()
    got = [(wall, mono, json.loads(p)) for wall, mono, p in sub.got]
    return rc, got


def children_cpu_s() -> float:
    """user+system CPU seconds of this process's finished children (less sensitive to machine load than FPS)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qos", type=int, default=0, choices=(0, 1))
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--latency-model", default="hourglass")
    ap.add_argument("--model", default="cpm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2, help="MQTT/stdout run pairs for the efficiency")
    ap.add_argument("--discovery-ab", action="store_true",
                    help="also MQTT runs with Home Assistant discovery off, and the publish cost without it")
    args = ap.parse_args()
    if not brokers.available():
        print("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        return 69

    from edgepose.models import registry
    tmp = Path(tempfile.mkdtemp(prefix="edgepose-mqtt-bench-"))
    env = dict(os.environ, EDGEPOSE_MODEL_MIRROR=os.environ.get("EDGEPOSE_MODEL_MIRROR",
                                                                str(pipebench.SHARED / "models")),
               EDGEPOSE_MQTT_QOS=str(args.qos))
    env.setdefault("EDGEPOSE_MODEL_DIR", str(tmp / "models"))
    env["EDGEPOSE_HOMEASSISTANT_STATE_FILE"] = str(tmp / "ha-state.json")
    env.pop("EDGEPOSE_CONFIG", None)
    b = brokers.Broker(tmp).start()
    try:
        version = subprocess.run([brokers.MOSQUITTO, "-h"], capture_output=True, text=True).stdout.split("\n")[0]
        print(f"broker: {version} on {b.host}:{b.port} (loopback), pose QoS {args.qos}; "
              f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

        for discovery in ((False, True) if args.discovery_ab else (False,)):
            cost, lat, net_cpu = publish_cost(b, args.qos, args.messages, discovery, tmp)
            print(f"publish_pose cost ({args.messages} payloads at 30 msg/s, in-process MqttSink"
                  f"{', Home Assistant discovery + presence on' if discovery else ''}): "
                  f"p50 {pct(cost, 50):.1f} us, p99 {pct(cost, 99):.1f} us, max {max(cost):.1f} us")
        print(f"network thread CPU (JSON encoding + MQTT I/O): {net_cpu / args.messages * 1e6:.0f} us per message "
              f"(whole run incl. connect and status, 10 ms /proc ticks)")
        print(f"sink -> loopback subscriber: {len(lat)}/{args.messages} received, "
              f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms")

        clip = pipebench.make_clip(tmp / "clip640x480.mp4", args.frames)
        for m in {args.latency_model, args.model}:
            registry.resolve(m, cache_dir=env["EDGEPOSE_MODEL_DIR"], mirror=env["EDGEPOSE_MODEL_MIRROR"])
        rc, got = run_daemon(b, clip, env, args.latency_model, args.threads, 30, "bench-e2e")
        e2e = [(wall - p["ts"]) * 1e3 for wall, _, p in got]
        rate = (len(got) - 1) / (got[-1][1] - got[0][1]) if len(got) > 1 else float("nan")
        print(f"edgepose run --fps 30 --model {args.latency_model} --threads {args.threads} --sink mqtt: "
              f"{len(got)}/{args.frames} poses at the subscriber, {rate:.1f} msg/s, exit {rc}")
        print(f"end-to-end capture -> loopback subscriber: p50 {pct(e2e, 50):.1f} ms, "
              f"p99 {pct(e2e, 99):.1f} ms")

        path = registry.resolve(args.model, cache_dir=env["EDGEPOSE_MODEL_DIR"], mirror=env["EDGEPOSE_MODEL_MIRROR"])
        invokes = [pipebench.bare_invoke_ms(path, args.threads, True)]
        mqtt_fps, stdout_fps, bare_mqtt_fps, cpu_on, cpu_off = [], [], [], [], []
        for r in range(args.repeat):  # alternate MQTT and stdout runs: same machine load for both
            rc, got = run_daemon(b, clip, env, args.model, args.threads, 0, f"bench-eff{r}")
            mqtt_fps.append(pipebench.fps_of([mono for _, mono, _ in got]) if len(got) > 20 else float("nan"))
            cpu_on.append(run_daemon.cpu_s)
            print(f"  run {r + 1}: edgepose run --sink mqtt (uncapped): {len(got)}/{args.frames} poses at the "
                  f"subscriber, {mqtt_fps[-1]:.1f} FPS, {run_daemon.cpu_s:.2f} CPU s, exit {rc}")
            invokes.append(pipebench.bare_invoke_ms(path, args.threads, True))
            ref = pipebench.run_daemon(argparse.Namespace(model=args.model, threads=args.threads, no_xnnpack=False),
                                       clip, env)
            stdout_fps.append(pipebench.fps_of(ref["arrivals"]) if ref["frames"] > 20 else float("nan"))
            print(f"  run {r + 1}: edgepose run --sink stdout: {stdout_fps[-1]:.1f} FPS")
            invokes.append(pipebench.bare_invoke_ms(path, args.threads, True))
            if args.discovery_ab:
                rc, got = run_daemon(b, clip, env, args.model, args.threads, 0, f"bench-off{r}", discovery=False)
                bare_mqtt_fps.append(pipebench.fps_of([mono for _, mono, _ in got]) if len(got) > 20 else float("nan"))
                cpu_off.append(run_daemon.cpu_s)
                print(f"  run {r + 1}: edgepose run --sink mqtt, Home Assistant discovery off: "
                      f"{len(got)}/{args.frames} "
                      f"poses at the subscriber, {bare_mqtt_fps[-1]:.1f} FPS, {run_daemon.cpu_s:.2f} CPU s, exit {rc}")
                invokes.append(pipebench.bare_invoke_ms(path, args.threads, True))
        invoke_ms = statistics.median(invokes)
        fps, ref_fps = statistics.median(mqtt_fps), statistics.median(stdout_fps)
        print(f"bare invoke median ({args.model}, {args.threads} thread(s)): {invoke_ms:.2f} ms "
              f"(samples {', '.join(f'{v:.1f}' for v in invokes)}) -> {1000 / invoke_ms:.1f} FPS ceiling")
        print(f"pipeline efficiency with MQTT on: {fps * invoke_ms / 1000:.3f} (goal >= 0.90); "
              f"with stdout: {ref_fps * invoke_ms / 1000:.3f}; MQTT/stdout throughput {fps / ref_fps:.3f}")
        if bare_mqtt_fps:
            off = statistics.median(bare_mqtt_fps)
            print(f"Home Assistant discovery on/off throughput (MQTT runs, medians {fps:.1f} / {off:.1f} FPS): "
                  f"{fps / off:.3f}; daemon CPU seconds per run, medians on/off: {statistics.median(cpu_on):.2f} / "
                  f"{statistics.median(cpu_off):.2f} ({statistics.median(cpu_on) / statistics.median(cpu_off):.3f})")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    finally:
        b.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
