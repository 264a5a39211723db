"""Home Assistant discovery against a real mosquitto: retained configs, removal, presence hold.

The sink is driven with synthetic poses (``publish_pose``); the end-to-end test with a real Home
Assistant and `edgepose run` is tests/test_homeassistant_real.py (slow lane).  The only stand-in
here is the monotonic clock handed to the presence hold, so a 3 s hold is tested without waiting.
"""

from __future__ import annotations

import json
import time

import pytest

from edgepose.core import config
from edgepose.core.payload import make_meta
from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.output import homeassistant
from edgepose.output.mqtt import MqttSink

import broker as brokers
from mqtt_util import Collector, wait_for

if not brokers.available():
    pytest.fail("mosquitto and mosquitto-clients are needed: apt-get install mosquitto mosquitto-clients",
                pytrace=False)

ENTITIES = {"binary_sensor/person", "sensor/people", "sensor/pose_score", "sensor/fps", "sensor/inference_ms",
            "sensor/dropped_frames", "sensor/dropped_messages"}


class Clock:
    """A monotonic clock the test moves (only the presence hold uses it)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def broker(tmp_path):
    b = brokers.Broker(tmp_path).start()
    yield b
    b.kill()


@pytest.fixture
def make(tmp_path):
    made = []

    def make(b, device="porch", enabled=True, temp=None, clock=None, hold=3.0, state=None, preview=""):
        cfg = config.load(None, {
            "mqtt": {"host": b.host, "port": b.port, "reconnect_min": 0.05, "reconnect_max": 0.5,
                     "status_interval": 0.5, "keepalive": 5},
            "homeassistant": {"enabled": enabled, "presence_hold": hold,
                              "state_file": str(state or tmp_path / "state" / "homeassistant.json")},
            "preview": {"listen": preview}}, environ={})
        meta = make_meta(device, "hourglass", KEYPOINT_NAMES, (192, 192), (96, 96), "9.9")

        def status():
            return {"fps": 12.5, "frames": 3, "cpu_temp_c": temp, "score": 0.61, "infer_ms": {"p50": 40.0},
                    "dropped_frames": 0}
        ha = homeassistant.from_config(cfg, device, meta, status, clock=clock or time.monotonic, environ={})
        s = MqttSink(cfg.mqtt, device, meta, status, homeassistant=ha)
        made.append(s)
        s.start()
        assert s.wait_connected(10)
        return s

    yield make
    for s in made:
        s.close()


def retained(b, topic="homeassistant/#", settle=0.5):
    """{topic: payload} of the retained messages a new subscriber gets now."""
    c = Collector(b, topic)
    time.sleep(settle)
    c.close()
    return {m.topic: m.text for m in c.msgs if m.retain}


def entities(configs, node="edgepose_porch"):
    return {t.split("/")[1] + "/" + t.split("/")[3] for t, p in configs.items() if p and f"/{node}/" in t}


def test_retained_configs_follow_the_discovery_docs(broker, make):
    s = make(broker, preview="0.0.0.0:8080")
    assert wait_for(lambda: len(retained(broker, settle=0.3)) == len(ENTITIES), 10)
    configs = retained(broker)
    assert entities(configs) == ENTITIES  # no CPU temperature: the status has none
    for topic, text in configs.items():
        doc = json.loads(text)
        _, component, node, object_id, last = topic.split("/")
        assert (node, last) == ("edgepose_porch", "config")
        assert doc["unique_id"] == f"edgepose_porch_{object_id}"
        assert doc["availability_topic"] == "edgepose/porch/availability"
        assert doc["device"]["identifiers"] == ["edgepose_porch"]
        assert doc["device"]["name"] == "porch pose sensor"
        assert doc["device"]["model"] == "edgepose (hourglass)" and doc["device"]["sw_version"] == "9.9"
        assert doc["device"]["configuration_url"].endswith(":8080/")
        assert doc["state_topic"] in ("edgepose/porch/presence", "edgepose/porch/status")
        assert doc["state_topic"] != s.topics.pose  # never per-frame data
        diagnostic = doc["state_topic"] == "edgepose/porch/status"
        assert (doc.get("entity_category") == "diagnostic") == diagnostic
    person = json.loads(configs["homeassistant/binary_sensor/edgepose_porch/person/config"])
    assert person["device_class"] == "occupancy"
    presence = retained(broker, "edgepose/porch/presence")
    assert json.loads(presence["edgepose/porch/presence"]) == {"present": False, "people": 0}


def test_temperature_sensor_only_where_the_board_has_one(broker, make):
    make(broker, temp=51.3)
    assert wait_for(lambda: "sensor/cpu_temperature" in entities(retained(broker, settle=0.3)), 10)
    doc = json.loads(retained(broker)["homeassistant/sensor/edgepose_porch/cpu_temperature/config"])
    assert doc["device_class"] == "temperature" and doc["value_template"] == "{{ value_json.cpu_temp_c }}"


def test_device_change_and_disable_remove_what_was_announced(broker, make, tmp_path):
    state = tmp_path / "state.json"
    s = make(broker, device="porch", state=state)
    assert wait_for(lambda: entities(retained(broker, settle=0.3)) == ENTITIES, 10)
    s.close()
    assert sorted(json.loads(state.read_text())["brokers"][s.broker]) == sorted(retained(broker))
    # same state file, another device id: the old device's configs are removed, the new one's announced
    s = make(broker, device="garden", state=state)
    assert wait_for(lambda: not entities(retained(broker, settle=0.3), "edgepose_porch"), 10)
    assert entities(retained(broker), "edgepose_garden") == ENTITIES
    s.close()
    # discovery off: everything this host announced goes, and the state file says so
    make(broker, device="garden", enabled=False, state=state)
    assert wait_for(lambda: not retained(broker, settle=0.3), 10), retained(broker)
    assert json.loads(state.read_text()) == {"brokers": {}}
    # without the state file nothing is known, so nothing foreign is touched
    other = make(broker, device="shed", state=tmp_path / "other.json")
    assert wait_for(lambda: entities(retained(broker, settle=0.3), "edgepose_shed") == ENTITIES, 10)
    other.close()


def test_presence_hold_rides_out_missed_frames_and_only_changes_are_published(broker, make):
    clock = Clock()
    s = make(broker, clock=clock, hold=3.0)
    c = Collector(broker, "edgepose/porch/presence")
    assert wait_for(lambda: c.msgs, 5)

    def frame(present, dt=0.1):
        clock.t += dt
        s.publish_pose({"v": 1, "seq": 0, "present": present, "score": 0.5 if present else 0.0})

    for _ in range(5):
        frame(True)
    for i in range(20):  # every other frame missed for 2 s: no flicker
        frame(i % 2 == 0)
    assert wait_for(lambda: len(c.msgs) >= 2, 5)
    time.sleep(1.0)  # the network thread checks the hold every 0.5 s
    docs = [m.json() for m in c.msgs]
    assert docs == [{"present": False, "people": 0}, {"present": True, "people": 1}], docs
    clock.t += 2.95  # 3.05 s since the last person: off, once (also without a new frame)
    assert wait_for(lambda: len(c.msgs) >= 3, 5)
    time.sleep(1.0)
    assert [m.json() for m in c.msgs][2:] == [{"present": False, "people": 0}]
    for _ in range(3):
        frame(False)
    time.sleep(0.7)
    assert len(c.msgs) == 3
    c.close()


def test_people_counts_everyone_in_a_multi_person_payload(broker, make):
    """A v2 payload (multi-person model) counts its `people`, not just 1 (the "people" sensor)."""
    s = make(broker)
    c = Collector(broker, "edgepose/porch/presence")
    assert wait_for(lambda: c.msgs, 5)
    people = [{"id": i, "score": 0.5, "box": {}, "keypoints": {}} for i in (1, 2, 3)]
    s.publish_pose({"v": 2, "seq": 0, "present": True, "score": 0.5, "people": people})
    assert wait_for(lambda: len(c.msgs) >= 2, 5)
    assert c.msgs[-1].json() == {"present": True, "people": 3}
    s.publish_pose({"v": 2, "seq": 1, "present": True, "score": 0.5, "people": people[:2]})
    assert wait_for(lambda: len(c.msgs) >= 3, 5)
    assert c.msgs[-1].json() == {"present": True, "people": 2}
    c.close()


def test_a_reload_that_turns_discovery_off_removes_the_configs(broker, tmp_path, model_cache):
    """[homeassistant] changed by a SIGHUP is applied (the sink is rebuilt), not only reported as changed."""
    import threading

    from edgepose.daemon.service import Daemon

    from conftest import MIRROR, grey_clip

    clip = grey_clip(tmp_path / "clip.mp4", 600)  # 30 s at max_fps 20: outlives the test
    path = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{clip}"\n[output]\nsink = "mqtt"\ndevice = "porch"\n[runtime]\nthreads = 1\n'
            f'max_fps = 20.0\n[model]\nname = "hourglass"\ndir = "{model_cache}"\nmirror = "{MIRROR}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'[homeassistant]\nstate_file = "{tmp_path / "ha.json"}"\n')
    path.write_text(base)
    daemon = Daemon(config.load(str(path), environ={}), environ={})
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: any(retained(broker, settle=0.2).values()), 60)
        path.write_text(base + "enabled = false\n")
        daemon.reload_event.set()  # what the SIGHUP handler does
        assert wait_for(lambda: daemon.last_reload is not None, 60)
        assert daemon.last_reload["ok"], daemon.last_reload
        assert wait_for(lambda: not any(retained(broker, settle=0.2).values()), 20)
    finally:
        daemon.stop_event.set()
        t.join(30)


def test_presence_logic():
    clock = Clock()
    p = homeassistant.Presence(2.0, clock)
    assert not p.update(False) and p.document() == {"present": False, "people": 0}
    assert p.update(True) and not p.update(True)
    clock.t += 1.9
    assert not p.update(False) and p.document()["present"]
    clock.t += 0.1
    assert p.update(False) and p.document() == {"present": False, "people": 0}
    assert p.update(True, people=2) and p.update(True, people=3) and p.document()["people"] == 3
    zero = homeassistant.Presence(0.0, clock)  # no hold: follows every frame
    assert zero.update(True) and zero.update(False)


def test_state_file_places_and_bad_files(tmp_path):
    assert homeassistant.state_path("", {"STATE_DIRECTORY": "/var/lib/edgepose"}) == \
        homeassistant.Path("/var/lib/edgepose/homeassistant.json")
    assert homeassistant.state_path("", {"XDG_STATE_HOME": "/x"}) == \
        homeassistant.Path("/x/edgepose/homeassistant.json")
    assert homeassistant.state_path("/a/b.json", {"STATE_DIRECTORY": "/s"}) == homeassistant.Path("/a/b.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    a = homeassistant.AnnouncedTopics(bad)
    assert a.get("h:1") == []  # unreadable: nothing known (logged)
    a.put("h:1", ["t/x/config"])
    assert a.get("h:1") == ["t/x/config"]
    assert homeassistant.node_id("porch cam.1") == "edgepose_porch_cam_1"


def test_bad_discovery_prefix_is_a_config_error(tmp_path):
    """Exit 78 with one line naming the key, before the first frame."""
    from conftest import CALIB, cli_env, error_lines, run_cli
    env = dict(cli_env(tmp_path / "models"), EDGEPOSE_HOMEASSISTANT_DISCOVERY_PREFIX="home/+/assistant")
    r = run_cli(["run", "--source", str(sorted(CALIB.glob("*.jpg"))[0]), "--sink", "mqtt", "--broker", "127.0.0.1:1",
                 "--max-frames", "1"], env)
    assert r.returncode == 78, r.stderr
    assert error_lines(r.stderr) == ["edgepose: ERROR: bad homeassistant.discovery_prefix 'home/+/assistant': "
                                     "expected non-empty topic levels without '+', '#' or empty levels"], r.stderr
