"""MqttSink and `edgepose sub` against a real mosquitto started by the tests.

Poses here are synthetic schema-v1 payloads driven straight into
``publish_pose``; the daemon-level tests (``edgepose run``) are in
test_mqtt_daemon.py.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgepose.core import config
from edgepose.core.errors import ConfigError, InputMissingError
from edgepose.core.payload import make_meta
from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.output.mqtt import MqttSink, Topics
from edgepose.output.mqttclient import backoff_delay
from edgepose.tools.sub import SeqTracker

import broker as brokers
from mqtt_util import Collector, MosquittoSub, wait_for

REPO = Path(__file__).resolve().parents[1]

if not brokers.available():  # CI installs them (.ci/run); a silent skip would hide the tests
    pytest.fail("mosquitto and mosquitto-clients are needed: apt-get install mosquitto mosquitto-clients",
                pytrace=False)


@pytest.fixture
def broker(tmp_path):
    b = brokers.Broker(tmp_path, persistence=True).start()
    yield b
    b.kill()


@pytest.fixture
def sinks():
    made = []

    def make(b, device="dev1", status=None, cls=MqttSink, **mqtt):
        values = {"host": b.host, "port": b.port, "reconnect_min": 0.05, "reconnect_max": 0.5,
                  "status_interval": 0.5, "keepalive": 5}
        values.update(mqtt)
        cfg = config.load(None, {"mqtt": values}, environ={})
        meta = make_meta(device, "cpm", KEYPOINT_NAMES, (192, 192), (96, 96), "test")
        s = cls(cfg.mqtt, device, meta, status or (lambda: {"fps": 30.0, "frames": 7, "camera": "ok"}))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def pose(seq: int, device: str = "dev1") -> dict:
    return {"v": 1, "device": device, "seq": seq, "ts": time.time(), "frame": {"width": 640, "height": 480},
            "model": "cpm", "score": 0.5, "present": True,
            "keypoints": [{"name": n, "x": 10.0 + i, "y": 20.0, "score": 0.5} for i, n in enumerate(KEYPOINT_NAMES)],
            "latency_ms": {"capture": 1.0, "preprocess": 1.0, "infer": 30.0, "decode": 1.0, "total": 33.0}}


def connected(s) -> bool:
    return s.stats()["connected"]


PROBE_TOPIC = "edgepose/test-probe/ready"  # outside edgepose/dev1/, ends in none of the edgepose kinds


def wait_subscribed(live: MosquittoSub, broker, timeout: float = 10.0) -> None:
    """Block until ``live`` (subscribed to edgepose/#) is subscribed: a retained probe it prints proves it."""
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-r",
                    "-t", PROBE_TOPIC, "-m", "ready"], check=True, timeout=10)
    seen = wait_for(lambda: any(line.split(" ", 2)[1:2] == [PROBE_TOPIC] for line in list(live.lines))
                    or live.proc.poll() is not None, timeout)
    assert seen and live.proc.poll() is None, f"mosquitto_sub did not subscribe: {live.lines}"


# --------------------------------------------------------------------------- pure parts
def test_backoff_grows_is_jittered_and_bounded():
    rng = random.Random(1)
    for attempt in range(40):
        d = backoff_delay(attempt, 0.5, 30.0, rng)
        assert 0.5 <= d <= 30.0
    assert backoff_delay(0, 0.5, 30.0, rng) == 0.5
    late = {round(backoff_delay(20, 0.5, 30.0, rng), 3) for _ in range(50)}
    assert len(late) > 40 and min(late) >= 15.0  # spread over [max/2, max]
    assert backoff_delay(3, 1.0, 60.0, random.Random(0)) > backoff_delay(1, 1.0, 60.0, random.Random(0))


def test_seq_tracker_reports_gaps_and_duplicates():
    t = SeqTracker()
    assert t.observe("a", 5) is None and t.observe("a", 6) is None
    assert "3 message(s) missing (seq 7..9)" in t.observe("a", 10)
    assert "duplicate" in t.observe("a", 10)
    assert t.observe("b", 1) is None  # devices are independent
    assert "restarted" in t.observe("a", 0)
    assert (t.missing, t.duplicates) == (3, 1)


def test_topics_and_bad_names():
    t = Topics.for_device("home/edgepose", "pi4")
    assert (t.pose, t.availability, t.status, t.meta) == (
        "home/edgepose/pi4/pose", "home/edgepose/pi4/availability", "home/edgepose/pi4/status",
        "home/edgepose/pi4/meta")
    for prefix, device in (("a/+", "d"), ("a", "x/y"), ("", "d"), ("a", "#"), ("a//b", "d")):
        with pytest.raises(ConfigError):
            Topics.for_device(prefix, device)


def test_missing_tls_file_is_a_clear_error(sinks, tmp_path):
    b = brokers.Broker(tmp_path)  # never started: building the sink must not need it
    with pytest.raises(InputMissingError, match="mqtt.tls_ca file .*nope.pem does not exist"):
        sinks(b, tls=True, tls_ca=str(tmp_path / "nope.pem"))


def test_rate_limit_keeps_the_cadence(sinks, tmp_path):
    now = [100.0]
    b = brokers.Broker(tmp_path)
    values = {"host": b.host, "port": b.port, "qos": 1, "rate_limit": 10.0, "queue_size": 10000}
    s = MqttSink(config.load(None, {"mqtt": values}, environ={}).mqtt, "d", {}, dict,
                 clock=lambda: now[0])
    for i in range(300):  # 10 s of frames at 30 fps, never started: everything stays queued
        s.publish_pose({"seq": i})
        now[0] += 1 / 30
    st = s.stats()
    assert st["queued"] == 100 and st["rate_limited"] == 200


def test_qos0_messages_that_cannot_be_sent_are_counted(sinks, tmp_path):
    b = brokers.Broker(tmp_path)  # not running
    s = sinks(b, qos=0)
    t0 = time.monotonic()
    s.start()
    assert time.monotonic() - t0 < 0.5  # start() never waits for the broker
    for i in range(25):
        s.publish_pose(pose(i))
    st = wait_for(lambda: (lambda x: x if x["broker"].startswith("unreachable") else None)(s.stats()), 5)
    assert st and st["connected"] is False and st["broker"] == "unreachable: connection refused"
    assert st["dropped_messages"] == 25 and st["published"] == 0 and st["queued"] == 0


# --------------------------------------------------------------------------- with a broker
def test_topics_seen_by_mosquitto_sub(broker, sinks):
    live = MosquittoSub(broker)
    wait_subscribed(live, broker)
    s = sinks(broker, qos=1)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    for i in range(5):
        s.publish_pose(pose(i))
    assert wait_for(lambda: len(live.messages("pose")) == 5, 5), live.lines
    got = [json.loads(p) for r, p in live.messages("pose")]
    assert [g["seq"] for g in got] == list(range(5))
    assert got[0] == json.loads(json.dumps(pose(0) | {"ts": got[0]["ts"]}))
    assert all(not r for r, _ in live.messages("pose"))  # poses are not retained
    assert wait_for(lambda: any(json.loads(p)["published"] == 5 for _, p in live.messages("status")), 3)
    live.close()

    # a late subscriber gets availability, meta and status from the broker's retained store
    late = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "edgepose/dev1/+",
                           "-F", "%r %t %p", "--retained-only", "-W", "2"], capture_output=True, text=True)
    retained = {line.split(" ", 2)[1].rsplit("/", 1)[1]: line.split(" ", 2)[2]
                for line in late.stdout.splitlines() if line.startswith("1 ")}
    assert retained["availability"] == "online"
    meta = json.loads(retained["meta"])
    assert meta["keypoints"] == list(KEYPOINT_NAMES) and len(meta["skeleton"]) == 13
    assert meta["model"] == "cpm" and meta["input"] == {"width": 192, "height": 192}
    status = json.loads(retained["status"])
    assert status["fps"] == 30.0 and status["camera"] == "ok" and status["published"] == 5
    assert status["broker"] == "connected" and status["dropped_messages"] == 0

    s.close()
    assert subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-C", "1", "-W", "3",
                           "-t", "edgepose/dev1/availability"], capture_output=True, text=True
                          ).stdout.strip() == "offline"
    assert s.stats()["broker"] == "closed"


def test_status_keeps_flowing_without_poses(broker, sinks):
    """Status has its own timer: a capture loop stuck on a camera still reports."""
    c = Collector(broker, "edgepose/dev1/status")
    s = sinks(broker, status_interval=0.5, status=lambda: {"camera": "reconnecting", "frames": 0})
    s.start()
    assert wait_for(lambda: len(c.of("status")) >= 4, 5)  # the connect one + one every 0.5 s
    docs = [m.json() for m in c.of("status")]
    assert all(d["camera"] == "reconnecting" for d in docs)
    assert [d["ts"] for d in docs] == sorted(d["ts"] for d in docs) and docs[-1]["ts"] > docs[0]["ts"]
    c.close()


def test_broker_down_at_start_then_poses_arrive(tmp_path, sinks):
    b = brokers.Broker(tmp_path)
    calls = []
    s = sinks(b, qos=0, status=lambda: calls.append(1) or {"frames": len(calls)})
    s.start()
    try:
        for i in range(10):  # the capture loop keeps going while the broker is away
            s.publish_pose(pose(i))
            time.sleep(0.05)
        assert not connected(s) and s.stats()["dropped_messages"] == 10
        assert calls, "status is still computed while disconnected"
        b.start()
        c = Collector(b, "edgepose/dev1/#")
        assert wait_for(lambda: connected(s), 5)
        for i in range(10, 20):
            s.publish_pose(pose(i))
        assert wait_for(lambda: len(c.seqs()) == 10, 5), c.seqs()
        assert c.seqs() == list(range(10, 20))
        assert [m.text for m in c.of("availability")] == ["online"]
        c.close()
    finally:
        b.kill()


def test_wait_connected_ends_with_the_first_attempt(tmp_path, broker, sinks, caplog):
    """The daemon's startup wait (mqtt.startup_wait) ends as soon as the first attempt has an outcome."""
    down = sinks(brokers.Broker(tmp_path / "down"))  # nothing listens on its port: refused at once
    down.start()
    t0 = time.monotonic()
    assert down.wait_connected(30) is False
    assert time.monotonic() - t0 < 5
    up = sinks(broker)
    up.start()
    assert up.wait_connected(30) is True
    relay = brokers.Relay(broker, delay=60)  # a broker that never answers within the wait
    stop = threading.Event()
    slow = sinks(relay)
    slow.start()
    caplog.set_level(logging.INFO, logger="edgepose.output.mqtt")
    t0 = time.monotonic()
    assert slow.wait_connected(0.5) is False
    assert 0.4 < time.monotonic() - t0 < 5
    assert "no answer from" in caplog.text
    caplog.clear()
    assert slow.wait_connected(0) is False  # startup_wait = 0: no wait, and nothing to say about it
    assert "no answer from" not in caplog.text
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    assert slow.wait_connected(30, interrupt=stop) is False  # SIGTERM during the wait
    assert time.monotonic() - t0 < 5
    relay.close()


def test_broker_restart_mid_stream(broker, sinks):
    c = Collector(broker, "edgepose/dev1/#", persistent=True)
    s = sinks(broker, qos=0)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    seq = iter(range(10**6))
    s.publish_pose(pose(next(seq)))
    assert wait_for(lambda: c.seqs(), 3)
    n_avail = len(c.of("availability"))
    broker.restart()  # clean broker restart (SIGTERM, start again on the same port)
    before = len(c.seqs())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(c.seqs()) < before + 5:
        s.publish_pose(pose(next(seq)))
        time.sleep(0.03)
    assert len(c.seqs()) >= before + 5, s.stats()
    avail = [m.text for m in c.of("availability")][n_avail:]
    # the broker's shutdown fires the last will (docs/mqtt.md), the reconnect says online again
    assert avail[0] == "offline" and avail[-1] == "online", avail
    assert s.stats()["connects"] == 2
    assert len(c.of("meta")) >= 2  # meta republished on reconnect
    c.close()


def test_qos1_queue_across_restart_drop_oldest(broker, sinks):
    """Every seq up to the queue bound is delivered, the oldest beyond it are dropped and counted."""
    c = Collector(broker, "edgepose/dev1/#", persistent=True)
    s = sinks(broker, qos=1, queue_size=20)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    for i in range(5):
        s.publish_pose(pose(i))
    assert wait_for(lambda: c.seqs() == list(range(5)), 5)
    broker.stop()
    assert wait_for(lambda: not connected(s), 5)
    for i in range(5, 55):  # 50 while down, 20 fit
        s.publish_pose(pose(i))
    st = s.stats()
    assert st["queued"] == 20 and st["dropped_messages"] == 30
    broker.start()
    expected = list(range(5)) + list(range(35, 55))
    # QoS 1 is at-least-once: the broker may redeliver what the collector acked just before the
    # restart (seq shows those duplicates); first deliveries must be complete and in order
    assert wait_for(lambda: list(dict.fromkeys(c.seqs())) == expected, 10), c.seqs()
    # the full queue did not keep `online` out, and the drops are in the retained status
    assert wait_for(lambda: [m.text for m in c.of("availability")][-1:] == ["online"], 5)
    assert wait_for(lambda: any(m.json()["dropped_messages"] == 30 and m.json()["queued"] == 0
                                for m in c.of("status")), 5)
    c.close()


@pytest.mark.slow
def test_no_stale_status_after_a_reconnect(broker, sinks):
    """A status built while the broker is down is never delivered later (it would arrive after the
    reconnect's `online` saying "unreachable"); a fresh one follows `online` at once."""
    c = Collector(broker, "edgepose/dev1/#", persistent=True)
    state = {"down_calls": 0}
    s = None

    def status():
        if s is not None and not s.stats()["connected"]:
            state["down_calls"] += 1
        time.sleep(0.2)  # a provider takes a moment (thermal zone, engine): no race to hide the bug
        return {"frames": 7}

    # long interval: a status within it after the reconnect can only be the reconnect's own
    s = sinks(broker, qos=1, queue_size=20, status_interval=3.0, status=status)
    s.start()
    assert wait_for(lambda: connected(s) and c.of("status"), 5)
    broker.stop()
    assert wait_for(lambda: not connected(s), 5)
    for i in range(43):  # 20 queued, 23 dropped: the counts of the field report
        s.publish_pose(pose(i))
    # the status thread builds a status while the broker is down (broker: unreachable, queued: 20)
    assert wait_for(lambda: state["down_calls"] >= 1, 8), s.stats()
    time.sleep(0.2)
    broker.start()
    assert wait_for(lambda: [m.text for m in c.of("availability")][-1:] == ["online"], 10)
    assert wait_for(lambda: list(dict.fromkeys(c.seqs())) == list(range(23, 43)), 10), c.seqs()

    def since_online():
        """Live (not retained-on-subscribe) messages from the reconnect's `online` on, in arrival order."""
        with c.lock:
            live = [m for m in c.msgs if not m.retain and not m.topic.endswith("/pose")]
        i = max(k for k, m in enumerate(live) if m.topic.endswith("/availability") and m.text == "online")
        return live[i:]

    fresh = wait_for(lambda: [m for m in since_online() if m.topic.endswith("/status")], 2.0)
    assert fresh, "no status right after the reconnect"
    assert fresh[0].t - since_online()[0].t < 1.5  # the reconnect's own status, not the next periodic one
    time.sleep(0.5)
    after = [m.json() for m in since_online() if m.topic.endswith("/status")]
    # before the fix the first one was built while down: "broker": "unreachable: connection refused"
    assert after and all(d["broker"] == "connected" and d["connects"] == 2 for d in after), after
    kinds = [m.topic.rsplit("/", 1)[1] for m in since_online()]
    assert kinds[:3] == ["availability", "meta", "status"], kinds  # online, meta, then the fresh status
    # the pose accounting is unchanged: 20 delivered from the queue, 23 dropped
    assert wait_for(lambda: s.stats()["published"] == 20, 5), s.stats()
    assert s.stats()["dropped_messages"] == 23
    c.close()


def test_unacknowledged_status_is_not_resent_after_a_reconnect(broker, sinks):
    """paho re-sends unacknowledged QoS 1 messages after a reconnect: for a status that would put an
    old document after `online`, so the sink takes it out of paho's queue (poses stay in it)."""
    relay = brokers.Relay(broker)
    c = Collector(broker, "edgepose/dev1/#")  # straight to the broker: it sees every message live
    s = sinks(relay, qos=1, status_interval=0.5)
    s.start()
    assert wait_for(lambda: connected(s) and c.of("status"), 5)
    relay.holding.set()  # the link goes silent: statuses (and a pose) are sent but never acknowledged
    s.publish_pose(pose(0))
    assert wait_for(lambda: s.stats()["status_published"] >= 3, 5)
    relay.cut()
    relay.holding.clear()
    assert wait_for(lambda: s.stats()["connects"] == 2, 5)
    assert wait_for(lambda: c.seqs() == [0], 5), c.seqs()  # the unacknowledged pose is re-sent
    time.sleep(0.5)
    with c.lock:
        live = [m for m in c.msgs if not m.topic.endswith("/pose")]
    i = max(k for k, m in enumerate(live) if m.topic.endswith("/availability") and m.text == "online")
    after = [m.json() for m in live[i:] if m.topic.endswith("/status")]
    assert after and all(d["connects"] == 2 for d in after), after
    c.close()
    s.close()
    relay.close()


def retained_status(broker, device="dev1") -> dict:
    """The status a subscriber that comes later gets from the broker's retained store."""
    out = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-C", "1", "-W", "3",
                          "--retained-only", "-t", f"edgepose/{device}/status"],
                         capture_output=True, text=True, timeout=10).stdout
    assert out.strip(), "no retained status"
    return json.loads(out)


def test_close_publishes_a_final_status(broker, sinks):
    """A run shorter than status_interval still leaves the retained status with the final counters."""
    frames = [0]
    s = sinks(broker, qos=1, status_interval=60.0, status=lambda: {"frames": frames[0], "camera": "ok"})
    s.start()
    assert wait_for(lambda: connected(s), 5)
    assert wait_for(lambda: s.stats()["status_published"] >= 1, 5)  # the connect's status: 0 frames
    for i in range(6):
        frames[0] += 1
        s.publish_pose(pose(i))
    s.close()
    st = retained_status(broker)
    assert (st["frames"], st["published"], st["queued"], st["dropped_messages"]) == (6, 6, 0, 0), st
    assert st["camera"] == "ok" and st["broker"] == "connected"
    # the final status is sent before `offline`
    late = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-C", "1", "-W", "3",
                           "-t", "edgepose/dev1/availability"], capture_output=True, text=True, timeout=10)
    assert late.stdout.strip() == "offline"


def test_close_flushes_queue_then_offline(broker, sinks):
    c = Collector(broker, "edgepose/dev1/#")
    s = sinks(broker, qos=1, queue_size=1000)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    for i in range(300):
        s.publish_pose(pose(i))
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 3.0
    assert wait_for(lambda: c.of("availability")[-1:] and c.of("availability")[-1].text == "offline", 3)
    assert c.seqs() == list(range(300))
    last_pose = c.of("pose")[-1].t
    assert c.of("availability")[-1].t >= last_pose  # offline comes after the last pose
    st = s.stats()
    assert (st["published"], st["queued"], st["dropped_messages"]) == (300, 0, 0)
    c.close()


def test_close_with_broker_down_is_bounded(tmp_path, sinks):
    b = brokers.Broker(tmp_path)
    s = sinks(b, qos=1, close_timeout=0.5)
    s.start()
    for i in range(5):
        s.publish_pose(pose(i))
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 2.0
    assert s.stats()["dropped_messages"] == 5  # undelivered at shutdown: counted


@pytest.mark.slow
def test_wrong_password_one_error_line_and_slow_retry(tmp_path, sinks, caplog):
    b = brokers.Broker(tmp_path, users={"edge": "s3cret"}).start()
    try:
        good = sinks(b, device="good", username="edge", password="s3cret", qos=1)
        c = Collector(b, "edgepose/#", username="edge", password="s3cret")  # anonymous is off
        good.start()
        assert wait_for(lambda: connected(good), 5)
        good.publish_pose(pose(1, "good"))
        assert wait_for(lambda: c.seqs() == [1], 5)

        caplog.set_level(logging.INFO, logger="edgepose")
        bad = sinks(b, device="bad", username="edge", password="wrong", reconnect_max=1.0)
        bad.start()
        time.sleep(2.5)
        st = bad.stats()
        assert st["connected"] is False and st["broker"] == "refused: not authorized"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "refused: not authorized" in errors[0] and "mqtt.password" in errors[0]
        attempts = b.log().count("disconnected, not authorised")
        assert 2 <= attempts <= 4, attempts  # retried about every reconnect_max, not in a tight loop
        assert not [m for m in c.msgs if "/bad/" in m.topic]
        c.close()
    finally:
        b.kill()


@pytest.mark.slow
def test_tls_with_ca_and_client_certificate(tmp_path, sinks, caplog):
    b = brokers.Broker(tmp_path, tls=True, require_client_cert=True).start()
    try:
        plain = Collector(b, "edgepose/#")  # the plain listener sees what arrives over TLS
        certs = b.certs
        tls = dict(port=b.tls_port, tls=True, tls_ca=str(certs.ca), tls_cert=str(certs.client_cert),
                   tls_key=str(certs.client_key), qos=1)
        s = sinks(b, host="localhost", **tls)
        s.start()
        assert wait_for(lambda: connected(s), 5), s.stats()
        s.publish_pose(pose(3))
        assert wait_for(lambda: plain.seqs() == [3], 5)
        plain.close()

        # a broker certificate from another CA is rejected: one clear line, no connection
        other = brokers.make_certs(tmp_path / "other")
        caplog.set_level(logging.INFO, logger="edgepose")
        bad = sinks(b, host="localhost", device="bad", **{**tls, "tls_ca": str(other.ca)})
        bad.start()
        assert wait_for(lambda: bad.stats()["broker"].startswith("tls error"), 5)
        assert "certificate" in bad.stats()["broker"]
        time.sleep(1.0)
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        assert not connected(bad)

        # the broker demands a client certificate: without one the handshake fails
        nocert = sinks(b, host="localhost", device="nocert",
                       **{k: v for k, v in tls.items() if k not in ("tls_cert", "tls_key")})
        nocert.start()
        assert wait_for(lambda: nocert.stats()["broker"].startswith("closed the connection before"), 5)
        time.sleep(0.5)
        assert not connected(nocert) and nocert.stats()["connects"] == 0
    finally:
        b.kill()


class FlakyAnnounce(MqttSink):
    """Raises inside the on_connect path once (a bug in our own callback code)."""

    fails = 1

    def _announce(self):
        if self.fails:
            self.fails -= 1
            raise RuntimeError("boom in on_connect")
        super()._announce()


def test_callback_exceptions_do_not_kill_the_network_thread(broker, sinks, caplog):
    c = Collector(broker, "edgepose/dev1/#")
    calls = []

    def status():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("fps")
        return {"fps": 1.0}

    s = sinks(broker, qos=1, cls=FlakyAnnounce, status=status, status_interval=0.5)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    s.publish_pose(pose(0))
    s.publish_pose(pose(1) | {"score": float("nan")})  # not valid JSON: dropped and counted, no crash
    s.publish_pose(pose(2))
    assert wait_for(lambda: c.seqs() == [0, 2], 5)
    assert s.stats()["dropped_messages"] == 1 and "cannot be encoded as JSON" in caplog.text
    assert "boom in on_connect" in caplog.text
    assert s._threads[0].is_alive()
    # the status thread survived its provider's exception too and reports it once
    assert wait_for(lambda: any("fps" in m.json() for m in c.of("status")), 5)
    broker.restart()  # the next connect announces normally
    assert wait_for(lambda: [m.text for m in c.of("availability")][-1:] == ["online"], 10)
    c.close()


# --------------------------------------------------------------------------- edgepose sub
def _sub(broker, *args, timeout=20):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("EDGEPOSE_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "edgepose.cli", "sub", "--host", broker.host,
                             "--port", str(broker.port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


class Sub:
    """A running `edgepose sub` whose stdout and stderr are read line by line by threads, so a test can
    wait (with a deadline) for what it prints while it runs."""

    def __init__(self, broker, *args):
        self.p = _sub(broker, *args)
        self.out: list = []
        self.err: list = []
        self._readers = [threading.Thread(target=self._read, args=(f, dest), daemon=True)
                         for f, dest in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(f, dest) -> None:
        for line in f:
            dest.append(line)

    def wait_line(self, text: str, stream: str = "out", timeout: float = 20.0, n: int = 1) -> bool:
        """True once ``n`` lines of ``stream`` contain ``text``; False if time runs out or it exits first."""
        lines = self.out if stream == "out" else self.err

        def seen():
            return sum(text in x for x in list(lines)) >= n

        return bool(wait_for(lambda: seen() or self.p.poll() is not None, timeout)) and seen()

    def wait_subscribed(self, device: str = "dev1", stream: str = "out", timeout: float = 20.0) -> None:
        """Its subscriptions are in place once it prints the device's retained availability (they are all
        made in one SUBSCRIBE, pose first; the broker sends retained messages after adding them)."""
        assert self.wait_line(f"{device} is online", stream, timeout), (
            f"edgepose sub did not subscribe: rc={self.p.poll()}\n{self.stdout}\n{self.stderr}")

    def finish(self, timeout: float = 20.0):
        """Wait for it to exit: (returncode, stdout, stderr)."""
        rc = self.p.wait(timeout)
        for t in self._readers:
            t.join(5)
        return rc, self.stdout, self.stderr

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        for t in self._readers:  # EOF once it is gone; then the pipes can be closed under no reader
            t.join(5)
        for f in (self.p.stdout, self.p.stderr):
            f.close()


@pytest.fixture
def subs():
    """Starts `edgepose sub` processes (:class:`Sub`) and kills any still running when the test ends."""
    made = []

    def start(broker, *args):
        made.append(Sub(broker, *args))
        return made[-1]

    yield start
    for w in made:
        w.kill()


def test_sub_prints_poses_and_notes_gaps(broker, sinks, subs):
    s = sinks(broker, qos=1)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    p = subs(broker, "--device", "dev1", "--count", "4", "--timeout", "30")
    p.wait_subscribed()
    for i in (1, 2, 5, 6):
        s.publish_pose(pose(i))
        time.sleep(0.02)
    rc, out, err = p.finish(35)
    assert rc == 0, err
    lines = out.splitlines()
    assert "dev1 is online" in out and "meta: model cpm 192x192, 14 keypoints" in out
    assert "dev1 status: 30.0 fps, frames 7, published " in out and "camera ok" in out
    poses = [line for line in lines if " dev1 #" in line]
    assert [line.split()[2] for line in poses] == ["#1", "#2", "#5", "#6"]
    assert "head_top=10,20" in poses[0] and "person score=0.50 33.0ms" in poses[0]
    assert "gap: 2 message(s) missing (seq 3..4)" in out

    pj = subs(broker, "--all", "--count", "1", "--json", "--timeout", "30")
    pj.wait_subscribed(stream="err")  # --json: availability goes to stderr
    s.publish_pose(pose(9))
    rc, out, err = pj.finish(35)
    assert rc == 0 and json.loads(out)["seq"] == 9, err
    assert "dev1 is online" in err  # informational lines go to stderr in --json mode


def test_sub_unreachable_and_refused_exit_69(tmp_path):
    down = brokers.Broker(tmp_path)
    p = _sub(down, "--count", "1")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 69 and out == ""
    assert err.strip().splitlines() == [
        f"edgepose: ERROR: cannot connect to the MQTT broker at {down.host}:{down.port}: "
        "unreachable: connection refused"]

    b = brokers.Broker(tmp_path, users={"u": "right"}).start()
    try:
        p = _sub(b, "--username", "u", "--password", "wrong", "--count", "1")
        out, err = p.communicate(timeout=20)
        assert p.returncode == 69 and "refused the connection: not authorized" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        b.kill()


def test_sub_timeout_without_poses_exits_75(broker):
    p = _sub(broker, "--count", "1", "--timeout", "1")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 75 and "received 0 of 1 poses" in err


def test_sub_skips_malformed_messages_with_one_line_per_kind(broker, subs):
    """Anyone who can publish can send anything: `sub` skips what it cannot print, says so once per
    kind of problem (not once per message), and goes on to the next good pose."""
    def send(kind, text, *flags):
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", *flags,
                        "-t", f"edgepose/dev1/{kind}", "-m", text], check=True, timeout=10)

    send("availability", "online", "-r")  # what wait_subscribed waits for
    p = subs(broker, "--device", "dev1", "--count", "1", "--timeout", "30")
    p.wait_subscribed()

    for _ in range(2):
        for text in ("[1]", '{"seq": 3}', '{"keypoints": [{"x": "a"}]}', "not json"):
            send("pose", text)
        send("status", '"busy"')
        send("meta", '{"keypoints": 3, "input": 5}')  # an object with odd fields is still printed
    send("pose", json.dumps(pose(7)))
    rc, out, err = p.finish(35)
    assert rc == 0 and "Traceback" not in err, err
    assert [x.split()[2] for x in out.splitlines() if " dev1 #" in x] == ["#7"]
    assert "meta: model None ?x?, ? keypoints" in out
    skipped = [x.split(" skipped: ")[1].split(": '")[0] for x in err.splitlines() if " skipped: " in x]
    assert sorted(skipped) == sorted(["not a JSON object", "keypoints is not a list", "not JSON",
                                      "a keypoint lacks finite numbers x, y and score",
                                      "not a JSON object"]), err  # the last one is the status's


@pytest.mark.slow
def test_sub_survives_a_broker_restart_and_ctrl_c_exits_0(broker, sinks, subs):
    import signal
    s = sinks(broker, qos=1)
    s.start()
    assert wait_for(lambda: connected(s), 5)
    p = subs(broker, "--device", "dev1", "--count", "2", "--timeout", "40")
    p.wait_subscribed()
    s.publish_pose(pose(1))
    assert p.wait_line(" dev1 #1 ", timeout=10), p.stdout  # delivered before the restart
    broker.restart()
    assert wait_for(lambda: s.stats()["connects"] == 2, 10)
    # resubscribed: the broker hands it the retained availability again
    assert p.wait_line("dev1 is online", n=2, timeout=20), p.stdout + p.stderr
    s.publish_pose(pose(2))
    rc, out, err = p.finish(30)
    assert rc == 0, err
    assert [x.split()[2] for x in out.splitlines() if " dev1 #" in x] == ["#1", "#2"]
    assert "lost; reconnecting" in err

    w = subs(broker, "--all", "--timeout", "60")  # the subs fixture kills it if anything below fails
    w.wait_subscribed()  # it is in its network loop: Ctrl-C now tests the watching state
    w.p.send_signal(signal.SIGINT)
    rc, out, err = w.finish(10)
    assert rc == 0 and "Traceback" not in err, err
    assert "dev1 is online" in out


def test_tls_host_name_check_and_insecure_flag(tmp_path, sinks):
    b = brokers.Broker(tmp_path, tls=True, tls_names="DNS:broker.invalid").start()
    try:
        tls = dict(port=b.tls_port, tls=True, tls_ca=str(b.certs.ca), qos=1)
        strict = sinks(b, device="strict", **tls)  # host 127.0.0.1 is not in the certificate
        strict.start()
        assert wait_for(lambda: strict.stats()["broker"].startswith("tls error"), 5)
        assert "127.0.0.1" in strict.stats()["broker"]  # "... not valid for '127.0.0.1'"
        lax = sinks(b, device="lax", tls_insecure=True, **tls)
        lax.start()
        assert wait_for(lambda: connected(lax), 5), lax.stats()
        assert not connected(strict)
    finally:
        b.kill()


def test_sub_and_view_with_plain_mqtt_at_a_tls_port_exit_69(tmp_path):
    """Issue 23 item 11: plain MQTT at a TLS listener used to loop on "connection lost; reconnecting" for
    ever; after the first failed handshake it is one line and exit 69, as for an unreachable broker."""
    b = brokers.Broker(tmp_path, tls=True).start()
    try:
        where = f"{b.host}:{b.tls_port}"
        for cmd in (["sub", "--count", "1"], ["view", "--out", str(tmp_path / "x.jpg"), "--count", "1"]):
            env = dict(os.environ, PYTHONPATH=str(REPO))
            env.pop("EDGEPOSE_CONFIG", None)
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "edgepose.cli", cmd[0], "--host", b.host,
                                "--port", str(b.tls_port), *cmd[1:]],
                               capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
            assert r.returncode == 69, (cmd, r.returncode, r.stderr)
            assert time.monotonic() - t0 < 15
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"edgepose: ERROR: the MQTT broker at {where} "
                                                           "closed the connection before accepting it"), r.stderr
            assert "--tls" in lines[0] and "Traceback" not in r.stderr
    finally:
        b.kill()


def test_one_loop_style_in_the_package():
    """Issue 20: one MQTT client layer.  Only edgepose/output/mqttclient.py makes paho clients and drives their
    sockets (ClientLoop); paho's own loops (loop(), loop_start(), loop_forever()) are used nowhere."""
    import re
    pkg = REPO / "edgepose"
    paho_calls = re.compile(r"\.loop(_start|_forever)?\(|paho\.Client\(|\.loop_(read|write|misc)\(")
    found = set()
    for p in pkg.rglob("*.py"):
        text = p.read_text()
        mqtt_code = "paho" in text or "mqttclient" in text
        if paho_calls.search(text) or (mqtt_code and "select.select(" in text):
            found.add(str(p.relative_to(REPO)))
    assert found == {"edgepose/output/mqttclient.py", "edgepose/output/mqtt.py"}, found
    sink = (pkg / "output" / "mqtt.py").read_text()
    # the sink only writes out its DISCONNECT with paho's loop_write; it reads and selects through ClientLoop
    assert not re.search(r"\.loop(_start|_forever)?\(|select\.select\(|paho\.Client\(|\.loop_(read|misc)\(", sink)
    for tool in ("tools/sub.py", "tools/viewer.py"):
        assert "Subscriber(" in (pkg / tool).read_text(), tool
