"""The status document (core.payload.Status) and the states published in it: a real daemon run on a real
clip with a real model, published by a real MqttSink to a real mosquitto.  Its keys, their order and the
state strings are pinned as they were before the document became a TypedDict and the states enums."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_type_hints

import pytest

from edgepose.capture.sources import SourceState
from edgepose.core import config as config_mod
from edgepose.core.payload import PublishedStatus, RunningStatus, SinkStatus, make_status
from edgepose.daemon.service import Daemon
from edgepose.output.mqtt import BrokerState, MqttSink

import broker as brokers
from conftest import MIRROR, REPO, VIDEOS
from mqtt_util import Collector, wait_for

DAEMON_KEYS = ["v", "device", "ts", "fps", "infer_ms", "frames", "uptime_s", "cpu_temp_c", "version", "score",
               "dropped_frames", "camera", "model", "backend", "backend_version", "xnnpack", "xnnpack_delegation",
               "threads"]
SINK_KEYS = ["broker", "published", "queued", "dropped_messages", "rate_limited", "connects", "qos"]


@pytest.fixture
def daemon(tmp_path, model_cache):
    """A daemon that ran 3 frames of a real clip with hourglass (its parts stay for status())."""
    path = tmp_path / "edgepose.toml"
    path.write_text(f'[camera]\nsource = "{VIDEOS / "demo.mp4"}"\n[output]\nsink = "none"\ndevice = "cam1"\n'
                    f'[runtime]\nthreads = 1\nmax_frames = 3\n'
                    f'[model]\nname = "hourglass"\ndir = "{model_cache}"\nmirror = "{MIRROR}"\n')
    d = Daemon(config_mod.load(str(path), environ={}), environ={})
    assert d.run() == 0
    return d


def test_the_daemons_status_keys_order_and_strings(daemon):
    st = daemon.status()
    assert list(st) == DAEMON_KEYS
    assert type(st["camera"]) is str and st["camera"] == "ok"  # the enum's value, not the member
    assert json.dumps(st["camera"]) == '"ok"' and daemon.components.source.state is SourceState.OK
    assert daemon.status_line().endswith(" frames, camera ok")  # not "camera SourceState.OK"
    # a SIGHUP onto a file that is not TOML: the reload is refused and reported after the engine fields
    Path(daemon.cfg.path).write_text("[camera\n")
    daemon.reload()
    st = daemon.status()
    assert list(st) == DAEMON_KEYS + ["reload"] and list(st["reload"]) == ["ok", "ts", "error"]
    assert st["reload"]["ok"] is False and daemon.status_line().endswith("running configuration kept")


def test_the_published_status_keys_order_and_strings(daemon, tmp_path):
    b = brokers.Broker(tmp_path).start()
    cfg = config_mod.load(None, {"mqtt": {"host": b.host, "port": b.port, "status_interval": 0.5}}, environ={})
    sink = MqttSink(cfg.mqtt, "cam1", daemon.components.meta, daemon.status)
    try:
        assert type(sink.stats()["broker"]) is str and sink.stats()["broker"] == "not started"
        c = Collector(b, "edgepose/cam1/status")
        sink.start()
        assert wait_for(lambda: c.of("status"), 10)
        text = c.of("status")[0].text
        doc = json.loads(text)
        assert list(doc) == DAEMON_KEYS + SINK_KEYS  # device and ts stay where the daemon put them
        assert '"camera":"ok"' in text and '"broker":"connected"' in text and doc["frames"] == 3
        c.close()
    finally:
        sink.close()
        b.kill()
    assert sink.stats()["broker"] == "closed" and type(sink.stats()["broker"]) is str


def test_make_status_puts_reload_and_people_last():
    """What a multi-person model's daemon adds after a reload (the order docs/mqtt.md's readers see)."""
    running = RunningStatus(dropped_frames=0, camera=SourceState.RECONNECTING.value, model="openpose-thin",
                            backend="litert", backend_version="1", xnnpack=False, xnnpack_delegation=None, threads=2)
    reload = {"ok": True, "ts": 1.0, "changed": ["model"]}
    st = make_status("d", 1.23456, 9.876, {"p50": None, "p95": None}, 0, 0.04, None, "0", None, running,
                     reload, people=2)
    assert list(st) == DAEMON_KEYS + ["reload", "people"]
    assert (st["ts"], st["fps"], st["uptime_s"], st["camera"]) == (1.235, 9.88, 0.0, "reconnecting")
    assert st["reload"] == reload and st["reload"] is not reload
    assert list(make_status("d", 0, 0, {"p50": None, "p95": None}, 0, 0, None, "0", None)) == DAEMON_KEYS[:10]


def test_the_types_declare_the_published_order():
    """PublishedStatus (what the status topic carries) declares its keys in the order they are published."""
    assert list(get_type_hints(PublishedStatus)) == DAEMON_KEYS + ["reload", "people", "preview"] + SINK_KEYS
    assert set(get_type_hints(SinkStatus)) == {"device", "ts", *SINK_KEYS}


def test_every_status_key_is_documented():
    """docs/mqtt.md's status table names exactly the keys of the MQTT status document."""
    text = (REPO / "docs" / "mqtt.md").read_text()
    table = text[text.index("### status"):text.index("### meta")]
    documented = {k for line in table.splitlines() if line.startswith("| `")
                  for k in re.findall(r"`(\w+)`", line.split("|")[1])}
    assert documented == set(get_type_hints(PublishedStatus)) - {"preview"}  # `preview`: the preview page's counters


def test_state_values_are_the_published_strings():
    assert [s.value for s in SourceState] == ["opening", "ok", "reconnecting"]
    assert [s.value for s in BrokerState] == ["not started", "connecting", "connected", "disconnected", "closed"]
    assert all(json.dumps(s) == json.dumps(s.value) for s in [*SourceState, *BrokerState])
