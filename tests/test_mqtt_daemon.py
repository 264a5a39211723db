"""`edgepose run --sink mqtt` end to end: a real daemon, a real model, a real mosquitto.

The source is a long folder of symlinks to ../shared/data/calib photos, read at a
capped frame rate, so the daemon keeps running while the broker is stopped,
restarted, or the daemon itself is killed.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

import broker as brokers
from conftest import CALIB, REPO
from mqtt_util import Collector, wait_for

if not brokers.available():
    pytest.fail("mosquitto and mosquitto-clients are needed: apt-get install mosquitto mosquitto-clients",
                pytrace=False)


@pytest.fixture
def long_folder(tmp_path, shared):
    """~600 frames (13 calib photos, repeated) for a run that outlives the test."""
    d = tmp_path / "frames"
    d.mkdir()
    photos = sorted(CALIB.glob("*.jpg"))
    for i in range(600):
        (d / f"{i:04d}.jpg").symlink_to(photos[i % len(photos)])
    return d


@pytest.fixture
def cleanup():
    """Things to end after a test, last added first: daemons, brokers, subscribers."""
    things = []
    yield things
    for p in reversed(things):
        if isinstance(p, brokers.Broker):
            p.kill()
        elif isinstance(p, Collector):
            p.close()
        elif p.poll() is None:
            p.kill()
            p.wait()


def start_daemon(b, folder, env, log, device="cam1", fps=15, extra=()):
    """`edgepose run` on ``folder`` publishing to ``b``; its stderr goes to the file ``log``."""
    env = dict(env, EDGEPOSE_MQTT_RECONNECT_MIN="0.1", EDGEPOSE_MQTT_RECONNECT_MAX="0.5",
               EDGEPOSE_MQTT_STATUS_INTERVAL="0.5", EDGEPOSE_MQTT_QOS="1")
    return subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--source", str(folder),
                             "--model", "hourglass", "--fps", str(fps), "--sink", "mqtt",
                             "--broker", f"{b.host}:{b.port}", "--device", device, *extra],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)


def texts(c, suffix):
    return [m.text for m in c.of(suffix)]


@pytest.mark.slow
def test_daemon_broker_down_at_start_restart_and_sigterm(tmp_path, long_folder, edgepose_env, cleanup):
    b = brokers.Broker(tmp_path, persistence=True)
    log = tmp_path / "daemon.log"
    proc = start_daemon(b, long_folder, edgepose_env, log)
    cleanup += [proc, b]
    # frames flow while the broker is still absent (timeouts are generous for a loaded CI machine)
    assert wait_for(lambda: "first pose decoded" in log.read_text() or proc.poll() is not None, 60)
    assert proc.poll() is None, log.read_text()
    b.start()
    c = Collector(b, "edgepose/cam1/#", persistent=True)
    cleanup.append(c)
    assert wait_for(lambda: len(c.seqs()) >= 5, 60), (texts(c, "availability"), log.read_text())
    assert texts(c, "availability")[-1] == "online"
    meta = c.of("meta")[-1].json()
    assert meta["model"] == "hourglass" and len(meta["keypoints"]) == 14 and meta["input"]["width"] == 192
    st = wait_for(lambda: [m.json() for m in c.of("status") if m.json().get("frames")], 30)[-1]
    for key in ("fps", "infer_ms", "frames", "dropped_frames", "published", "queued", "dropped_messages",
                "camera", "model", "backend", "backend_version", "xnnpack", "threads", "uptime_s",
                "version", "broker"):
        assert key in st, key
    assert st["broker"] == "connected" and st["model"] == "hourglass"
    x = st["xnnpack_delegation"]  # XNNPACK takes the float hourglass whole under LiteRT
    assert st["xnnpack"] and x["partitions"] == 1 and x["delegated_ops"] == x["total_ops"] > 0, x

    # broker restart mid-stream: availability back to online, poses resume
    n_avail = len(c.of("availability"))
    b.restart()
    seen = len(c.seqs())
    assert wait_for(lambda: len(c.seqs()) >= seen + 5, 60), log.read_text()
    assert wait_for(lambda: texts(c, "availability")[n_avail:][-1:] == ["online"], 30)
    assert len(c.of("meta")) >= 2

    # SIGTERM: offline published, exit 0
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert wait_for(lambda: texts(c, "availability")[-1:] == ["offline"], 10)
    assert "Traceback" not in err
    # the last status (sent just before `offline`, and the retained one) has the final counters
    frames = int(re.search(r"stopped after (\d+) frames", err).group(1))
    final = c.of("status")[-1].json()
    assert final["frames"] == frames and final["queued"] == 0, (final, frames)
    assert final["published"] + final["dropped_messages"] + final["rate_limited"] == frames, final
    # QoS 1 from one daemon run: seq has no gaps (duplicates are allowed after a restart)
    first = list(dict.fromkeys(c.seqs()))
    assert first == list(range(first[0], first[0] + len(first))), (first, err)


@pytest.mark.slow
def test_daemon_kill_9_fires_the_last_will(tmp_path, long_folder, edgepose_env, cleanup):
    b = brokers.Broker(tmp_path).start()
    log = tmp_path / "daemon.log"
    proc = start_daemon(b, long_folder, edgepose_env, log, device="cam2")
    cleanup += [proc, b]
    c = Collector(b, "edgepose/cam2/#")
    cleanup.append(c)
    assert wait_for(lambda: len(c.seqs()) >= 3, 60), log.read_text()
    assert texts(c, "availability") == ["online"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert wait_for(lambda: texts(c, "availability")[-1:] == ["offline"], 10)
    # and it stays retained for subscribers that come later
    late = subprocess.run(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-C", "1", "-W", "3",
                           "-t", "edgepose/cam2/availability", "-F", "%r %p"], capture_output=True, text=True)
    assert late.stdout.strip() == "1 offline"


@pytest.mark.slow
@pytest.mark.parametrize("startup_wait", ["5", "0"])
def test_first_poses_wait_for_a_slow_broker_at_qos_0(tmp_path, edgepose_env, cleanup, startup_wait, shared):
    """At QoS 0 a pose decoded before the first connection is dropped: the daemon waits for it.

    The broker is real; a relay in front of it delays its CONNACK by 1.5 s, longer than
    the daemon needs for the 5 frames.  With `mqtt.startup_wait` (default 5 s) every pose
    arrives; with 0 (the old behaviour) the poses are decoded before the connection is up.
    """
    b = brokers.Broker(tmp_path).start()
    cleanup.append(b)
    proxy = brokers.Relay(b, delay=1.5)
    c = Collector(b, "edgepose/cam1/#")
    cleanup.append(c)
    d = tmp_path / "five"
    d.mkdir()
    for i, photo in enumerate(sorted(CALIB.glob("*.jpg"))[:5]):
        (d / f"{i}.jpg").symlink_to(photo)
    env = dict(edgepose_env, EDGEPOSE_MQTT_STARTUP_WAIT=startup_wait)
    try:
        r = subprocess.run([sys.executable, "-m", "edgepose.cli", "run", "--source", str(d), "--model", "hourglass",
                            "--sink", "mqtt", "--broker", f"{proxy.host}:{proxy.port}", "--device", "cam1"],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    if startup_wait == "0":
        wait_for(lambda: c.seqs(), 2)
        assert len(c.seqs()) < 5, "the relay did not delay the connection: this test shows nothing"
        return
    assert wait_for(lambda: len(c.seqs()) == 5, 10), (c.seqs(), r.stderr)
    assert sorted(c.seqs()) == [0, 1, 2, 3, 4]
    status = c.of("status")[-1].json()  # the final one describes the whole run
    assert (status["published"], status["dropped_messages"]) == (5, 0), status


@pytest.mark.slow
def test_sighup_applies_a_good_file_and_keeps_running_on_a_bad_one(tmp_path, long_folder, edgepose_env, cleanup):
    """systemctl reload: values only the sink or the source can reject (a wildcard in the topic prefix, a TLS
    file that does not exist, a source that does not open) leave the daemon as it was; a good [mqtt] change
    is applied without `offline` in between and the counters still add up to the whole run at the end."""
    b = brokers.Broker(tmp_path).start()
    cfg = tmp_path / "edgepose.toml"
    base = (f'[camera]\nsource = "{long_folder}"\n[model]\nname = "hourglass"\n[runtime]\nmax_fps = 15\n'
            f'[output]\nsink = "mqtt"\ndevice = "cam4"\n')
    mqtt = f'[mqtt]\nhost = "{b.host}"\nport = {b.port}\nstatus_interval = 0.5\nqos = 1\n'
    cfg.write_text(base + mqtt)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--config", str(cfg)], env=edgepose_env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)
    c = Collector(b, "edgepose/cam4/#")
    cleanup += [proc, b, c]
    assert wait_for(lambda: len(c.seqs()) >= 3, 60), log.read_text()

    def hup(text, expect):
        n, seen = log.read_text().count("SIGHUP:"), len(c.seqs())
        cfg.write_text(text)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.read_text().count("SIGHUP:") > n or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()
        assert expect in log.read_text().split("SIGHUP:")[-1], log.read_text()
        assert wait_for(lambda: len(c.seqs()) >= seen + 3, 60), log.read_text()  # poses keep flowing

    keep = "keeping the running configuration"
    hup(base + mqtt.replace("qos = 1", 'qos = 1\nprefix = "home/#"'), keep)
    hup(base + mqtt + 'tls_ca = "/nonexistent/ca.crt"\n', keep)
    hup(base.replace(str(long_folder), str(tmp_path / "missing")) + mqtt, keep)
    assert log.read_text().count("(file)") == 1  # the running folder was neither closed nor replayed
    hup(base + mqtt.replace("status_interval = 0.5", "status_interval = 0.6"), "reloaded")
    assert texts(c, "availability") == ["online", "online"]  # the new connection says online; no offline
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    err = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert wait_for(lambda: texts(c, "availability")[-1:] == ["offline"], 10)
    frames = int(re.search(r"stopped after (\d+) frames", err).group(1))
    final = c.of("status")[-1].json()
    assert final["published"] + final["dropped_messages"] + final["rate_limited"] == frames, final
    assert final["connects"] == 2, final
