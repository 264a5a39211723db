"""What a real Home Assistant makes of `edgepose run` (slow lane: Home Assistant core 2024.3.3 in its own
virtualenv, built once by tests/ha_server.py, a real mosquitto, a real model on real photos).

The sources are a folder of photos and a clip made of the same frames: people (two calibration photos
with one clear person each), nobody (a flat grey frame and a heavily blurred photo), people again, with
one person-free frame inside a run of people (a missed frame that must not flicker "person present").
Tracking is off so that each frame's truth is the frame itself; the daemon's own pose messages are
recorded too, to show that the missed frame really was missed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

import cv2
import ha_server
import numpy as np
import pytest

import broker as brokers
from conftest import CALIB, REPO
from mqtt_util import Collector, wait_for

pytestmark = pytest.mark.slow

FPS = 5
HOLD = 1.5
PEOPLE_PHOTOS = (7, 8)  # calibration photos with one clear person each (CPM scores about 0.7)
# (frames, person?) blocks; the run of people holds one person-free frame in its middle
PLAN: List[Tuple[int, bool]] = [(8, False), (10, True), (1, False), (10, True), (25, False), (18, True), (20, False)]
EXPECTED = ["off", "on", "off", "on", "off"]  # what "person present" must go through, nothing else

ENTITIES = ("binary_sensor.{n}_person", "sensor.{n}_people", "sensor.{n}_pose_score", "sensor.{n}_fps",
            "sensor.{n}_inference_ms", "sensor.{n}_dropped_frames", "sensor.{n}_dropped_messages")


def frames() -> List[Tuple[np.ndarray, bool]]:
    photos = sorted(CALIB.glob("*.jpg"))
    people = [_fit(cv2.imread(str(photos[i]))) for i in PEOPLE_PHOTOS]
    grey = np.full((480, 640, 3), 128, np.uint8)
    blurred = cv2.GaussianBlur(people[0], (0, 0), 40)
    out = []
    for n, person in PLAN:
        for i in range(n):
            out.append((people[i % 2] if person else (grey, blurred)[i % 2], person))
    return out


def _fit(img: np.ndarray) -> np.ndarray:
    """Letterbox into 640x480."""
    h, w = img.shape[:2]
    s = min(640 / w, 480 / h)
    small = cv2.resize(img, (int(w * s), int(h * s)))
    out = np.zeros((480, 640, 3), np.uint8)
    y, x = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One mosquitto and one onboarded Home Assistant with its MQTT integration on it."""
    if not brokers.available():
        pytest.fail("mosquitto and mosquitto-clients are needed", pytrace=False)
    d = tmp_path_factory.mktemp("ha")
    b = brokers.Broker(d).start()
    try:
        with ha_server.HomeAssistant(d, b) as ha:
            yield b, ha
    finally:
        b.kill()


class Watcher:
    """Polls Home Assistant's REST API and records every change of the device's entities."""

    def __init__(self, ha, node: str):
        self.ha, self.node = ha, node
        self.changes: List[Tuple[float, str, str]] = []  # (monotonic time, entity_id, state)
        self.all_seen_at = None
        self.last = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        wanted = {e.format(n=self.node) for e in ENTITIES}
        while not self._stop.is_set():
            states = {s["entity_id"]: s for s in self.ha.states() if s["entity_id"].startswith(
                ("binary_sensor." + self.node, "sensor." + self.node))}
            now = time.monotonic()
            if self.all_seen_at is None and wanted <= set(states):
                self.all_seen_at = now
            for eid, s in states.items():
                if self.last.get(eid, {}).get("state") != s["state"]:
                    self.changes.append((now, eid, s["state"]))
                self.last[eid] = s
            self._stop.wait(0.1)

    def sequence(self, kind: str) -> List[str]:
        eid = f"{kind}.{self.node}_" + ("person" if kind == "binary_sensor" else "people")
        return [s for _, e, s in self.changes if e == eid]

    def close(self):
        self._stop.set()
        self._t.join(5)


def run_daemon(source: Path, b, device: str, env: dict, log: Path) -> subprocess.Popen:
    env = dict(env, EDGEPOSE_MQTT_STATUS_INTERVAL="1", EDGEPOSE_HOMEASSISTANT_PRESENCE_HOLD=str(HOLD),
               EDGEPOSE_HOMEASSISTANT_STATE_FILE=str(log.with_suffix(".state.json")))
    return subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--source", str(source), "--fps", str(FPS),
                             "--no-tracking", "--sink", "mqtt", "--broker", f"{b.host}:{b.port}", "--device", device],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def check_run(setup, tmp_path, edgepose_env, source: Path, device: str, stop_early: bool):
    b, ha = setup
    node = f"edgepose_{device}"
    poses = Collector(b, f"edgepose/{device}/#")
    w = Watcher(ha, node)
    log = tmp_path / f"{device}.log"
    proc = run_daemon(source, b, device, edgepose_env, log)
    try:
        online = wait_for(lambda: [m.t for m in poses.of("availability") if m.text == "online"], 120)
        assert online, log.read_text()
        assert wait_for(lambda: w.all_seen_at, 10), (w.last.keys(), ha.log()[-3000:])
        appeared = w.all_seen_at - online[0]
        print(f"{device}: all entities in Home Assistant {appeared:.2f} s after the daemon connected")
        assert appeared <= 5.0

        def number(entity):
            try:
                return float(w.last[entity.format(n=node)]["state"])
            except (KeyError, ValueError):
                return None
        # the diagnostic sensors read the status topic (every second here) through their value templates
        assert wait_for(lambda: (number("sensor.{n}_fps") or 0) > 0 and (number("sensor.{n}_inference_ms") or 0) > 0
                        and number("sensor.{n}_pose_score") is not None
                        and number("sensor.{n}_dropped_messages") == 0, 15), \
            {e: s["state"] for e, s in w.last.items()}
        if stop_early:  # stop the daemon once people came and went and came back
            assert wait_for(lambda: w.sequence("binary_sensor")[-2:] == ["off", "on"] and
                            len(w.sequence("binary_sensor")) >= 4, 90), w.changes
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log.read_text()
        assert wait_for(lambda: w.last[f"binary_sensor.{node}_person"]["state"] == "unavailable", 10), w.changes
        assert wait_for(lambda: all(w.last[e.format(n=node)]["state"] == "unavailable" for e in ENTITIES), 5), \
            {e: s["state"] for e, s in w.last.items()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        w.close()
        poses.close()
    present = [m.json()["present"] for m in poses.of("pose")]
    person = [s for s in w.sequence("binary_sensor") if s != "unavailable"]
    people = [s for s in w.sequence("sensor") if s != "unavailable"]
    truth = [p for _, p in frames()]
    return present, person, people, truth


def test_folder_of_photos_in_home_assistant(setup, tmp_path, edgepose_env):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (img, _) in enumerate(frames()):
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    present, person, people, truth = check_run(setup, tmp_path, edgepose_env, folder, "porch", stop_early=False)
    assert present == truth  # the model saw people exactly where they are, and missed the one frame
    assert person == EXPECTED, person  # and Home Assistant followed without a flicker
    assert people == ["0", "1", "0", "1", "0"], people


def test_clip_in_home_assistant_and_unavailable_on_sigterm(setup, tmp_path, edgepose_env):
    clip = tmp_path / "people.mp4"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    for img, _ in frames():
        out.write(img)
    out.release()
    present, person, people, truth = check_run(setup, tmp_path, edgepose_env, clip, "garden", stop_early=True)
    assert present == truth[:len(present)]
    assert person == EXPECTED[:4], person  # off, on, off, on: stopped while people were there
    assert people == ["0", "1", "0", "1"], people
