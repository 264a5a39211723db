"""A real Home Assistant core for tests: installed once into its own virtualenv, started headless.

Small API::

    import ha_server

    venv = ha_server.ensure_installed()          # builds ~/.cache/edgepose-test/ha-2024.3.3 once
    with ha_server.HomeAssistant(tmp_path, broker) as ha:   # config + onboarding + MQTT entry
        ha.states()                              # GET /api/states with the token the setup made
        ha.state("binary_sensor.x")              # one entity's state document, or None

The virtualenv is never part of edgepose's dependencies.  It holds ``homeassistant==2024.3.3`` (the
last release for Python 3.11) plus the requirements of the integrations Home Assistant loads by
default and of ``mqtt``, read from their manifests and installed with Home Assistant's own
``package_constraints.txt`` (it would otherwise install them from PyPI at its first start).  The
first build takes minutes (``install-seconds`` in the virtualenv records how many, ``installer`` with
what); later runs find the ``ready`` marker and start at once.  ``EDGEPOSE_HA_VENV`` puts the
virtualenv elsewhere.  The packages are installed with ``uv pip`` when uv is there (the ``test``
extra installs it: 127 s against 171 s for pip, both cold, measured side by side; docs/mqtt.md), else with pip;
``EDGEPOSE_HA_INSTALLER=pip`` forces pip.

The configuration is generated: ``http`` on a free 127.0.0.1 port, ``api``, ``config`` and
``onboarding`` (a fresh configuration directory is not onboarded, so the owner account is made
through the onboarding API, whose auth code gives the access token), and the MQTT integration set
up the way a user does it, through the config flow API, pointed at the test's mosquitto.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from broker import free_port, terminate

VERSION = "2024.3.3"

# what this configuration loads besides Home Assistant's default integrations
INTEGRATIONS = ["http", "api", "config", "onboarding", "mqtt"]
# pins beyond package_constraints.txt: releases newer than 2024.3.3 that break it
EXTRA_PINS = ["josepy<2"]  # josepy 2 dropped ComparableX509, which acme (hass-nabucasa, imported by http) uses


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "edgepose-test" / f"ha-{VERSION}"
    return Path(os.environ.get("EDGEPOSE_HA_VENV") or default)


def uv_binary() -> Optional[str]:
    """The uv executable (on PATH, or the one the ``uv`` Python package ships), or None."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        import uv  # noqa: PLC0415  (optional: the pip package that ships the binary)
    except ImportError:
        return None
    return str(uv.find_uv_bin())


def installer(python: Path) -> List[str]:
    """The install command for the virtualenv of ``python``: ``uv pip install`` if uv is there (and
    ``EDGEPOSE_HA_INSTALLER`` is not ``pip``), else that python's pip.  Both take the same arguments
    used here (``-q``, ``--no-deps``, ``-c FILE``, requirement specifiers)."""
    uv = None if os.environ.get("EDGEPOSE_HA_INSTALLER") == "pip" else uv_binary()
    if uv:
        return [uv, "pip", "install", "-q", "--python", str(python)]
    return [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]


def _requirements_script() -> str:
    """Run by the virtualenv's python: the pip requirements of INTEGRATIONS, the default integrations and
    everything they depend on, from the integrations' manifests."""
    return f"""
import json, sys
from pathlib import Path
import homeassistant
from homeassistant import bootstrap
comp = Path(homeassistant.__file__).parent / "components"
from homeassistant.components.mqtt.const import PLATFORMS as MQTT_PLATFORMS  # mqtt sets all of them up
todo = set({INTEGRATIONS!r}) | set(bootstrap.DEFAULT_INTEGRATIONS) | set(bootstrap.CORE_INTEGRATIONS)
todo |= {{str(p) for p in MQTT_PLATFORMS}}
seen, reqs = set(), set()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    m = comp / name / "manifest.json"
    if not m.exists():
        continue
    man = json.loads(m.read_text())
    reqs.update(man.get("requirements", []))
    todo.update(man.get("dependencies", []))
    todo.update(man.get("after_dependencies", []))
print("\\n".join(sorted(reqs)))
"""


def ensure_installed(log=print) -> Path:
    """The ready virtualenv (built first if missing; one builder at a time, others wait)."""
    d = venv_dir()
    if (d / "ready").exists():
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".ha-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (d / "ready").exists():
            return d
        start = time.monotonic()
        tmp = d.with_name(d.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
        log(f"installing homeassistant=={VERSION} into {d} (once; takes minutes)")
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
        pip = installer(tmp / "bin" / "python")
        log(f"installer: {' '.join(pip[:3])}")
        # the package alone first, for its package_constraints.txt: without those pins pip backtracks
        # for many minutes through sdists of loosely required packages (home-assistant-bluetooth's habluetooth)
        subprocess.run(pip + ["--no-deps", f"homeassistant=={VERSION}"], check=True)
        constraints = subprocess.run(
            [str(tmp / "bin" / "python"), "-c",
             "import homeassistant, pathlib; print(pathlib.Path(homeassistant.__file__).parent / "
             "'package_constraints.txt')"], check=True, capture_output=True, text=True).stdout.strip()
        pins = tmp / "extra-constraints.txt"
        pins.write_text("\n".join(EXTRA_PINS) + "\n")
        pip += ["-c", constraints, "-c", str(pins)]
        subprocess.run(pip + [f"homeassistant=={VERSION}"], check=True)
        reqs = subprocess.run([str(tmp / "bin" / "python"), "-c", _requirements_script()], check=True,
                              capture_output=True, text=True).stdout.split()
        if reqs:
            subprocess.run(pip + reqs, check=True)
        seconds = time.monotonic() - start
        (tmp / "install-seconds").write_text(f"{seconds:.0f}\n")
        (tmp / "installer").write_text(("uv" if pip[1] == "pip" else "pip") + "\n")
        tmp.rename(d)  # the scripts' shebangs name the .building path: call `python -m` only
        (d / "ready").write_text(VERSION + "\n")
        log(f"homeassistant {VERSION} installed in {seconds:.0f} s with {' '.join(pip[:3])}")
    return d


class HomeAssistant:
    """One headless Home Assistant on a free port, onboarded, its MQTT integration on ``broker``."""

    def __init__(self, workdir: Path, broker, venv: Optional[Path] = None, start_timeout: float = 300.0):
        self.venv = venv or ensure_installed()
        self.config = Path(workdir) / f"ha-config-{id(self):x}"
        self.config.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.broker = broker
        self.start_timeout = start_timeout
        self.token: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.logfile = self.config / "home-assistant.log"
        (self.config / "configuration.yaml").write_text(
            "homeassistant:\n  name: edgepose test\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: DE\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nconfig:\nonboarding:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n")

    # --- lifecycle -------------------------------------------------------
    def start(self) -> HomeAssistant:
        out = self.logfile.with_suffix(".out").open("ab")
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "python"), "-m", "homeassistant", "-c", str(self.config),
             "--log-file", str(self.logfile)], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                steps = self._call("GET", "/api/onboarding", auth=False)
                if isinstance(steps, list):
                    break
            except urllib.error.HTTPError as e:  # it answers, but with an error: waiting will not help
                raise RuntimeError(f"Home Assistant answered {e.code} to /api/onboarding:\n"
                                   f"{self.log()[-4000:]}") from None
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"Home Assistant did not answer within {self.start_timeout} s:\n{self.log()[-4000:]}")
        self._onboard()
        self._add_mqtt()
        return self

    def _onboard(self) -> None:
        client_id = self.url + "/"
        done = self._call("POST", "/api/onboarding/users", auth=False, body={
            "client_id": client_id, "name": "Test", "username": "test", "password": "edgepose-test-pw",
            "language": "en"})
        form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": done["auth_code"],
                                       "client_id": client_id}).encode()
        req = urllib.request.Request(self.url + "/auth/token", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.loads(r.read())["access_token"]

    def _add_mqtt(self) -> None:
        """The MQTT integration through the config flow, as a user adds it; waits until it is loaded."""
        flow = self._call("POST", "/api/config/config_entries/flow", body={"handler": "mqtt"})
        for _ in range(3):
            if flow.get("type") == "create_entry":
                break
            if flow.get("type") != "form":
                raise RuntimeError(f"MQTT config flow: {flow}")
            flow = self._call("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                              body={"broker": self.broker.host, "port": self.broker.port})
        if flow.get("type") != "create_entry":
            raise RuntimeError(f"MQTT config flow did not create an entry: {flow}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = self._call("GET", "/api/config/config_entries/entry")
            mqtt = [e for e in entries if e.get("domain") == "mqtt"]
            if mqtt and mqtt[0].get("state") == "loaded":
                return
            time.sleep(0.3)
        raise RuntimeError(f"the MQTT integration did not load: {entries}\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        terminate(self.proc, timeout, group=True)
        self.proc = None

    def __enter__(self) -> HomeAssistant:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- REST API --------------------------------------------------------
    def _call(self, method: str, path: str, auth: bool = True, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def states(self) -> List[Dict[str, Any]]:
        return self._call("GET", "/api/states")

    def state(self, entity_id: str) -> Optional[Dict[str, Any]]:
        try:
            return self._call("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""
