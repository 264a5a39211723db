"""deploy/: the unit file checked by the real systemd-analyze, the default
config, and the installer's refusals (the full install runs in
tests/rehearsal/arm64.sh)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from edgepose.core import config as config_mod

from conftest import REPO

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "edgepose.service"
EXEC = "/opt/edgepose/venv/bin/edgepose"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt install systemd)")


def directives(text: str) -> dict:
    """Unit file -> {key: [values]} (systemd allows repeated keys)."""
    out: dict = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_for_host(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here
    (install.sh creates the real one); nothing else is changed."""
    fake = tmp_path / "bin" / "edgepose"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(EXEC) == 1
    out = tmp_path / "edgepose.service"
    out.write_text(text.replace(EXEC, str(fake)))
    return out


@needs_analyze
def test_unit_verifies_clean(tmp_path):
    r = subprocess.run(["systemd-analyze", "verify", str(unit_for_host(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def exposure(path: Path) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


@needs_analyze
def test_unit_exposure_is_at_most_2(tmp_path):
    assert exposure(UNIT) <= 2.0


@needs_analyze
def test_unit_with_the_jetson_drop_in_stays_at_most_2(tmp_path):
    merged = tmp_path / "edgepose.service"
    dropin = (DEPLOY / "jetson.conf").read_text()
    merged.write_text(UNIT.read_text() + "\n" + dropin)
    assert exposure(merged) <= 2.0


def test_unit_contract():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) >= 10
    # the stop timeout leaves room for one emulated/slow frame plus the MQTT flush
    assert int(d["TimeoutStopSec"][0]) >= 10
    assert "78" in d["RestartPreventExitStatus"][0].split()
    assert "StartLimitIntervalSec" in d and "StartLimitBurst" in d
    assert d["ExecStart"][0].startswith(EXEC + " run --config /etc/edgepose/edgepose.toml")
    assert d["User"] == ["edgepose"] and d["SupplementaryGroups"] == ["video"]
    assert "char-video4linux rw" in d["DeviceAllow"] and d["DevicePolicy"] == ["closed"]
    assert "PrivateDevices" not in d  # it would hide /dev/video*
    assert d["StateDirectory"] == ["edgepose"]
    assert d["WantedBy"] == ["multi-user.target"]
    # `calibrate-fps --apply` waits for `systemctl try-restart` as long as the unit may take to stop and start
    from edgepose.daemon.systemd import RESTART_TIMEOUT_S
    assert RESTART_TIMEOUT_S > int(d["TimeoutStopSec"][0]) + int(d["TimeoutStartSec"][0])


def test_default_service_config_loads_with_service_defaults():
    cfg = config_mod.load(str(DEPLOY / "edgepose.toml"), environ={})
    assert cfg.output.sink == "mqtt"
    assert cfg.model.dir == "/var/lib/edgepose/models"
    assert cfg.service.watchdog is True
    # pings stop well before systemd's WatchdogSec expires
    wd = int(directives(UNIT.read_text())["WatchdogSec"][0])
    assert cfg.service.stall_timeout < wd


def run_script(name, *args, user=None, env=None):
    cmd = ["bash", str(DEPLOY / name), *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_parse_and_have_help(script):
    assert subprocess.run(["bash", "-n", str(DEPLOY / script)]).returncode == 0
    r = run_script(script, "--help")
    assert r.returncode == 0, r.stderr
    assert ("--purge" if script == "uninstall.sh" else "--from DIR") in r.stdout


LITERT_14 = "litert - ai-edge-litert>=1.4,<1.5"


@pytest.mark.parametrize("board, machine, python, plan", [
    ("pi", "aarch64", "3.11", LITERT_14),  # Raspberry Pi OS Bookworm 64-bit (the rehearsal's)
    ("pi", "aarch64", "3.9", LITERT_14),  # Bullseye 64-bit
    ("pi", "aarch64", "3.12", LITERT_14),
    ("pi", "armv7l", "3.11", "tflite-runtime [tflite] -"),  # 32-bit Raspberry Pi OS: no LiteRT wheel
    ("pi", "aarch64", "3.13", "tflite-runtime [tflite] -"),  # Trixie's Python: no LiteRT 1.4 wheel
    ("jetson", "aarch64", "3.10", LITERT_14),  # JetPack 6 (Ubuntu 22.04)
    ("jetson", "aarch64", "3.13", "- - -"),  # no 1.4 wheel: edgepose's own requirement, backend auto
    ("generic", "x86_64", "3.11", "- - -"),
    ("generic", "aarch64", "3.11", "- - -"),
])
def test_install_runtime_per_platform(board, machine, python, plan):
    """The runtime install.sh puts into the venv and writes as runtime.backend (deploy/runtime.sh,
    sourced by install.sh; the rehearsal installs the Pi row for real)."""
    r = subprocess.run(["bash", "-c", '. "$0" && runtime_plan "$1" "$2" "$3"', str(DEPLOY / "runtime.sh"),
                        board, machine, python], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == plan, (r.stdout, r.stderr)
    assert '. "$HERE/runtime.sh"' in (DEPLOY / "install.sh").read_text()


@pytest.mark.parametrize("args, code, message", [
    (["--bogus"], 64, "unknown option: --bogus"),
    (["--broker", "host:port:x"], 64, "--broker must be HOST, HOST:PORT or [IPv6]:PORT"),
    (["--offline"], 64, "--offline needs --from DIR"),
    (["--platform", "amiga"], 64, "--platform must be"),
])
def test_install_usage_errors(args, code, message):
    r = run_script("install.sh", *args)
    assert r.returncode == code and message in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_install_refuses_non_root():
    r = run_script("install.sh", user=65534)
    assert r.returncode == 69 and "must run as root" in r.stderr, r.stderr
    r = run_script("uninstall.sh", user=65534)
    assert r.returncode == 69 and "must run as root" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the check after the root check needs root")
@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd is running on this machine")
def test_install_refuses_without_systemd():
    r = run_script("install.sh")
    assert r.returncode == 69 and "systemd is not running" in r.stderr and "--no-start" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the check after the root check needs root")
def test_install_refuses_missing_python_and_bundle(tmp_path):
    r = run_script("install.sh", "--no-start", "--python", "/nonexistent/python3")
    assert r.returncode == 69 and "/nonexistent/python3 not found" in r.stderr, r.stderr
    r = run_script("install.sh", "--no-start", "--from", str(tmp_path / "missing"))
    assert r.returncode == 66 and "is not a directory" in r.stderr, r.stderr


def test_mosquitto_1x_is_kept_on_localhost(tmp_path):
    """deploy/mosquitto-localhost.sh (run by install.sh --with-mosquitto for a broker it installs).

    mosquitto 1.6 (JetPack 5) cannot be installed on this Debian 12 machine, so a stand-in `mosquitto`
    that prints 1.6's version line the way `mosquitto -h` does plays it; the real 2.x then loads the file
    written for 1.6, which proves it is a configuration mosquitto accepts and that it binds localhost."""
    import broker as brokers

    script = DEPLOY / "mosquitto-localhost.sh"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mosquitto").write_text('#!/bin/sh\necho "mosquitto version 1.6.9"\necho\n'
                                    'echo "Usage: mosquitto [-c config_file] [-d] [-h] [-p port]"\nexit 3\n')
    (fake / "mosquitto").chmod(0o755)
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    old = subprocess.run(["bash", str(script), str(conf_d)], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}"))
    written = conf_d / "edgepose-localhost.conf"
    assert old.returncode == 0 and old.stderr == "", old.stderr
    assert old.stdout == f"mosquitto 1.x: wrote {written} (listener 1883 localhost)\n"
    text = written.read_text()
    assert [x for x in text.splitlines() if not x.startswith("#")] == ["listener 1883 localhost"]

    if not brokers.available():
        pytest.skip("mosquitto is not installed (apt install mosquitto mosquitto-clients)")
    fresh = tmp_path / "fresh.d"
    fresh.mkdir()
    new = subprocess.run(["bash", str(script), str(fresh)], capture_output=True, text=True, timeout=30)
    assert new.returncode == 0 and new.stdout == "" and not list(fresh.iterdir())  # 2.x: nothing to do
    bad = subprocess.run(["bash", str(script), str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 64 and "usage:" in bad.stderr

    port = brokers.free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text.replace("listener 1883 ", f"listener {port} ") + "allow_anonymous true\n")
    p = subprocess.Popen([brokers.MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        assert brokers.wait_port("127.0.0.1", port), "mosquitto did not accept the written listener"
        got = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t", "-m", "x"],
                             capture_output=True, text=True, timeout=10)
        assert got.returncode == 0, got.stderr
        lan = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
               if "." in a and not a.startswith("127.")]
        for addr in lan:  # what 1.6 would have listened on without the file
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=2).close()
    finally:
        p.kill()
        log = p.communicate(timeout=10)[0]
    assert f"Opening ipv4 listen socket on port {port}" in log and "Error" not in log, log
