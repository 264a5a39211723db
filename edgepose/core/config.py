"""Configuration: TOML file, ``EDGEPOSE_*`` environment, command line.

Precedence: command line > environment > file > defaults.  Every key lives in
one section (``[camera]``, ``[model]``, ...).  An unknown section or key, or a
value of the wrong type or outside its allowed values, raises
:class:`~edgepose.core.errors.ConfigError` naming the key and what is allowed.

Environment variables are ``EDGEPOSE_<SECTION>_<KEY>`` in upper case, e.g.
``EDGEPOSE_MQTT_HOST`` or ``EDGEPOSE_MODEL_MIRROR``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgepose.core.errors import ConfigError, UsageError
from edgepose.core.text import control_character

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml

SERVICE_CONFIG_PATH = "/etc/edgepose/edgepose.toml"


def _opt(default: Any, doc: str, choices: Optional[Tuple[Any, ...]] = None,
         minimum: Optional[float] = None, maximum: Optional[float] = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices,
                                            "min": minimum, "max": maximum})


@dataclass
class CameraConfig:
    source: str = _opt("0", "camera index (V4L2 via OpenCV) or URI: video file, image file, "
                            "folder or glob of images, rtsp://..., /dev/videoN, csi://N")
    width: int = _opt(640, "requested capture width for live cameras", minimum=16)
    height: int = _opt(480, "requested capture height for live cameras", minimum=16)
    fps: float = _opt(0.0, "requested capture frame rate for live cameras (0 = driver default; "
                            "for a snapshot URL: fetches a second, 0 = 2)",
                      minimum=0)
    reopen_backoff_max: float = _opt(10.0, "longest wait (s) between attempts to reopen a lost camera",
                                     minimum=0.1)
    gone_timeout: float = _opt(60.0, "seconds a live camera may stay lost before the daemon stops "
                                     "its watchdog pings (systemd then restarts it)", minimum=1)
    rotate: int = _opt(0, "turn every frame clockwise by this many degrees before anything else (a camera "
                          "mounted sideways or upside down); keypoints are in the turned frame's pixels",
                       choices=(0, 90, 180, 270))


@dataclass
class ModelConfig:
    name: str = _opt("cpm", "catalogue name (cpm, hourglass, cpm-int8, ...) or path to a .tflite file")
    dir: str = _opt("", "model cache directory (default $EDGEPOSE_MODEL_DIR, else "
                         "$XDG_CACHE_HOME/edgepose/models, else ~/.cache/edgepose/models)")
    mirror: str = _opt("", "local mirror directory or http(s) URL to fetch models from")
    score_threshold: float = _opt(0.3, "pose score at or above which `present` is true (set for CPM; "
                                       "multiplied by the catalogue's score_scale for other models)",
                                  minimum=0, maximum=1)
    family: str = _opt("auto", "how the model's output becomes a pose: auto (the catalogue's, else recognised "
                               "from a model file's output), heatmap (CPM, Hourglass), movenet or paf "
                               "(OpenPose, multi-person)",
                       choices=("auto", "heatmap", "movenet", "paf"))
    decoder: str = _opt("subpixel", "heatmap decoder (heatmap family only)",
                        choices=("subpixel", "argmax", "upstream"))
    fit: str = _opt("pad", "how a whole frame is fitted to the square model input",
                    choices=("pad", "stretch"))
    min_parts: int = _opt(4, "multi-person (paf) models: people with fewer parts found are dropped",
                          minimum=1, maximum=18)
    min_person_score: float = _opt(0.3, "multi-person (paf) models: people whose mean part + limb score "
                                        "is lower are dropped", minimum=0)


@dataclass
class RuntimeConfig:
    backend: str = _opt("auto", "TFLite runtime", choices=("auto", "litert", "tflite-runtime"))
    threads: int = _opt(0, "interpreter threads (0 = number of CPU cores)", minimum=0, maximum=64)
    xnnpack: bool = _opt(True, "use the XNNPACK delegate")
    max_fps: float = _opt(0.0, "frame-rate cap for inference (0 = as fast as possible)", minimum=0)
    max_frames: int = _opt(0, "stop after this many frames (0 = no limit)", minimum=0)


@dataclass
class OutputConfig:
    sink: str = _opt("stdout", "where poses go", choices=("stdout", "mqtt", "none"))
    device: str = _opt("", "device id used in payloads and topics (default: hostname)")


@dataclass
class MqttConfig:
    host: str = _opt("localhost", "broker host")
    port: int = _opt(1883, "broker port", minimum=1, maximum=65535)
    prefix: str = _opt("edgepose", "topic prefix")
    client_id: str = _opt("", "MQTT client id (default edgepose-<device>)")
    qos: int = _opt(0, "QoS of pose messages", choices=(0, 1))
    rate_limit: float = _opt(0.0, "most pose messages per second (0 = every frame)", minimum=0)
    queue_size: int = _opt(1000, "pose messages kept while disconnected (QoS 1, drop-oldest)",
                           minimum=1)
    status_interval: float = _opt(10.0, "seconds between retained status messages", minimum=0.5)
    keepalive: int = _opt(30, "MQTT keepalive (s)", minimum=5, maximum=65535)  # a 16-bit field
    username: str = _opt("", "username")
    password: str = _opt("", "password")
    tls: bool = _opt(False, "connect with TLS (also on when tls_ca or tls_cert is set)")
    tls_ca: str = _opt("", "CA certificate file (turns TLS on; empty: the system CA store)")
    tls_cert: str = _opt("", "client certificate file (turns TLS on)")
    tls_key: str = _opt("", "client key file")
    tls_insecure: bool = _opt(False, "do not check the broker's host name (testing only)")
    reconnect_min: float = _opt(1.0, "first reconnect delay (s)", minimum=0.05)
    reconnect_max: float = _opt(60.0, "longest reconnect delay (s); also the retry delay after the "
                                      "broker refused the credentials or certificate", minimum=0.1)
    close_timeout: float = _opt(2.0, "seconds a clean shutdown waits to deliver queued messages "
                                     "and `offline`", minimum=0)
    startup_wait: float = _opt(5.0, "seconds the daemon waits at start (and after a reload) for its first "
                                    "broker connection before the next frame; ends early if the broker "
                                    "refuses or cannot be reached (at most 10: the systemd watchdog)",
                               minimum=0, maximum=10)


@dataclass
class SmoothingConfig:
    enabled: bool = _opt(True, "One Euro smoothing of keypoints (multi-person models: each person id on its own, "
                               "with tracking on)")
    min_cutoff: float = _opt(0.5, "One Euro cutoff frequency (Hz) of a still keypoint (lower = smoother)",
                             minimum=0.0001)
    beta: float = _opt(5.0, "One Euro speed coefficient, per pose size per second (higher = less lag)",
                       minimum=0)
    d_cutoff: float = _opt(1.0, "One Euro derivative cutoff (Hz)", minimum=0.0001)


@dataclass
class TrackingConfig:
    enabled: bool = _opt(True, "crop the next frame around a confident pose (multi-person models: "
                               "keep each person's id from frame to frame)")
    max_missed: int = _opt(10, "multi-person models: frames a person may be unseen before their id is retired",
                           minimum=0, maximum=1000)
    min_score: float = _opt(0.25, "pose score needed to keep tracking (set for CPM; multiplied by the "
                                  "model's catalogue score_scale, 0.59 for Hourglass)", minimum=0, maximum=1)
    margin: float = _opt(1.7, "crop size as a multiple of the keypoint box", minimum=1.0)
    search: float = _opt(0.5, "while lost, also try tiles of this fraction of the frame's longer side "
                              "in turn with the whole frame (0 = whole frame only, else 0.1 to 1)",
                         minimum=0, maximum=1)
    refine: int = _opt(2, "extra passes on the crop around the pose found in a still (an image file or folder "
                          "entry): the second pass sees the person at the tracker's crop size; a third runs "
                          "only when the second still moved the pose by more than refine_tolerance (0 = off)",
                       minimum=0, maximum=4)
    refine_video: int = _opt(0, "extra passes, as refine, in a video frame that starts a new track (the first "
                                "frame, a cut, a person found again); 0: the next frames, run on the crop around "
                                "the pose as tracking does anyway, are the refining passes (refine of them at most, "
                                "until one moves the pose less than refine_tolerance; smoothing restarts on each), "
                                "at no extra model run", minimum=0, maximum=4)
    refine_tolerance: float = _opt(0.05, "a refining pass that moves the pose's keypoints less than this "
                                         "(median, in pose sizes) ends the refinement", minimum=0)
    jump: float = _opt(0.5, "a tracked pose whose keypoints move more than this (median, in pose sizes) in "
                            "one frame is another person (a cut or a jump): search the frame again at once "
                            "and restart smoothing (0 = off)", minimum=0)
    cut: float = _opt(30.0, "a video frame whose 16x16 grey thumbnail differs from the previous one's by more "
                            "than this on average (0..255) is a scene cut: the track and smoothing restart "
                            "(0 = off)", minimum=0, maximum=255)
    still_search: bool = _opt(True, "a still (an image file or folder entry) whose whole frame shows nobody is "
                                    "searched on every tile of tracking.search (off: whole frame only)")


@dataclass
class ServiceConfig:
    watchdog: bool = _opt(True, "send systemd watchdog pings while frames are processed")
    stall_timeout: float = _opt(10.0, "seconds without a processed frame before pings stop",
                                minimum=0.5)


@dataclass
class PreviewConfig:
    listen: str = _opt("", "[HOST:]PORT of the preview page (empty = off; host defaults to 127.0.0.1)")
    fps: float = _opt(5.0, "most preview frames encoded per second", minimum=0.1)
    hosts: str = _opt("", "more host names the page answers to, comma-separated (e.g. \"pi.local\"); the "
                          "address it listens on, localhost, 127.0.0.1 and [::1] always work, other names get 421")


@dataclass
class HomeAssistantConfig:
    enabled: bool = _opt(True, "announce the device to Home Assistant by MQTT discovery (only with the MQTT "
                               "sink); false removes what this host announced before")
    discovery_prefix: str = _opt("homeassistant", "Home Assistant's MQTT discovery prefix")
    presence_hold: float = _opt(3.0, "seconds without a person before \"person present\" turns off (a missed "
                                     "frame does not flicker); it turns on at the first frame with one",
                                minimum=0)
    state_file: str = _opt("", "where the daemon remembers the discovery topics it announced (default "
                               "$STATE_DIRECTORY/homeassistant.json, else $XDG_STATE_HOME/edgepose/"
                               "homeassistant.json, else ~/.local/state/edgepose/homeassistant.json)")


@dataclass
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    path: Optional[str] = None  # the file this came from, if any

    @property
    def device_id(self) -> str:
        return self.output.device or socket.gethostname().split(".")[0] or "edgepose"

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return {s.name: dataclasses.asdict(getattr(self, s.name)) for s in sections()}


def split_host_port(text: str) -> Tuple[str, Optional[int]]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` -> (host, port or None).

    A bare IPv6 address (more than one ``:``, no brackets) is all host.  Raises
    ValueError when the port is not a number in 0..65535 or the host is empty.
    """
    t = str(text).strip()
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(t)
        port = rest[1:] if rest else None
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, None
    if not host or (port is not None and not (port.isdigit() and int(port) <= 65535)):
        raise ValueError(t)
    return host, None if port is None else int(port)


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`: ``host:port``, ``[v6]:port`` for IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sections() -> List[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name != "path"]


def fields_of(section: dataclasses.Field) -> Tuple[dataclasses.Field, ...]:
    """The keys of one section (a field of :class:`Config` whose default is a section dataclass)."""
    factory = section.default_factory
    if not callable(factory):
        raise TypeError(f"config field {section.name} is not a section")
    return dataclasses.fields(factory())


def _section_fields(section: str) -> Dict[str, dataclasses.Field]:
    for f in sections():
        if f.name == section:
            return {g.name: g for g in fields_of(f)}
    allowed = ", ".join(s.name for s in sections())
    raise ConfigError(f"unknown config section [{section}]; allowed sections: {allowed}")


def _describe(f: dataclasses.Field) -> str:
    md = f.metadata
    if md.get("choices"):
        return "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in md["choices"])
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
        _type_of(f)]
    lo, hi = md.get("min"), md.get("max")
    if lo is not None and hi is not None:
        return f"{kind} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{kind} >= {lo:g}"
    return kind


def _type_of(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, type) else {"bool": bool, "int": int, "float": float,
                                                  "str": str}[str(f.type)]
    return t


# strings that may hold any character: they are never logged nor put in a topic
_ANY_TEXT = {("mqtt", "password")}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(section: str, key: str, value: Any, from_text: bool = False) -> Any:
    """Check and convert one value; raise ConfigError naming the key otherwise."""
    fields_ = _section_fields(section)
    if key not in fields_:
        allowed = ", ".join(fields_)
        raise ConfigError(f"unknown config key {section}.{key}; allowed keys in [{section}]: {allowed}")
    f = fields_[key]
    t = _type_of(f)
    bad = ConfigError(f"bad value {value!r} for {section}.{key}: expected {_describe(f)}")
    try:
        if t is bool:
            if isinstance(value, bool):
                out: Any = value
            elif from_text and str(value).strip().lower() in _TRUE | _FALSE:
                out = str(value).strip().lower() in _TRUE
            else:
                raise bad
        elif t is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise bad
            if isinstance(value, str) and not from_text:
                raise bad
            out = int(value)
        elif t is float:
            if isinstance(value, bool) or (isinstance(value, str) and not from_text):
                raise bad
            out = float(value)
            if not math.isfinite(out):  # nan passes every bound check, inf every minimum
                raise bad
        else:
            if not isinstance(value, str):
                if from_text or isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)  # e.g. camera.source = 0
                else:
                    raise bad
            out = value
            control = control_character(out) if (section, key) not in _ANY_TEXT else None
            if control:
                raise ConfigError(f"bad value {value!r} for {section}.{key}: it has a control character "
                                  f"({control}); newlines, tabs and escapes are not allowed")
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer as a float
        raise bad from None
    md = f.metadata
    if md.get("choices") and out not in md["choices"]:
        raise bad
    if md.get("min") is not None and out < md["min"]:
        raise bad
    if md.get("max") is not None and out > md["max"]:
        raise bad
    return out


def apply_mapping(cfg: Config, data: Mapping[str, Any], origin: str, from_text: bool = False) -> None:
    """Apply ``{section: {key: value}}`` onto ``cfg`` with full validation."""
    for section, values in data.items():
        if not isinstance(values, Mapping):
            owner = [s.name for s in sections() if section in _section_fields(s.name)]
            hint = f" (it belongs in {' or '.join(f'[{o}]' for o in owner)})" if owner else ""
            raise ConfigError(f"{origin}: {section} = ... is outside any [section]{hint}"
                              if not any(s.name == section for s in sections())
                              else f"{origin}: [{section}] must be a table of keys")
        try:
            _section_fields(section)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
        target = getattr(cfg, section)
        for key, value in values.items():
            try:
                setattr(target, key, coerce(section, key, value, from_text))
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e}") from None


def read_file(path: str) -> Dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data: Dict[str, Any] = _toml.load(fh)
            return data
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except _toml.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def env_mapping(environ: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """Collect ``EDGEPOSE_<SECTION>_<KEY>`` variables.

    A variable naming a known section with an unknown key is an error (it is
    surely a typo); ``EDGEPOSE_*`` variables naming no section at all (such as
    ``EDGEPOSE_CONFIG`` or a test's ``EDGEPOSE_SHARED``) are not config keys
    and are left alone.
    """
    out: Dict[str, Dict[str, str]] = {}
    names = {s.name for s in sections()}
    for var, value in environ.items():
        if not var.startswith("EDGEPOSE_"):
            continue
        rest = var[len("EDGEPOSE_"):].lower()
        section = next((n for n in sorted(names, key=len, reverse=True) if rest.startswith(n + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1:]
        if key not in _section_fields(section):
            raise ConfigError(f"unknown environment variable {var}: [{section}] has no key {key!r}; "
                              f"allowed keys: {', '.join(_section_fields(section))}")
        out.setdefault(section, {})[key] = value
    return out


def load(path: Optional[str] = None, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
         environ: Optional[Mapping[str, str]] = None) -> Config:
    """Build the effective config: defaults < file < environment < overrides (CLI)."""
    environ = os.environ if environ is None else environ
    cfg = Config()
    path = path or environ.get("EDGEPOSE_CONFIG") or None
    if path and control_character(path):
        raise ConfigError(f"config file name {path!r} has a control character ({control_character(path)})")
    if path:
        apply_mapping(cfg, read_file(path), path)
        cfg.path = path
    apply_mapping(cfg, env_mapping(environ), "environment", from_text=True)
    if overrides:
        apply_mapping(cfg, {k: v for k, v in overrides.items() if v}, "command line")
    return cfg


def reference_markdown() -> str:
    """The configuration reference table (kept in README by a test)."""
    lines = []
    for s in sections():
        lines.append(f"### [{s.name}]\n")
        lines.append("| key | default | allowed | meaning |")
        lines.append("|---|---|---|---|")
        for f in fields_of(s):
            d = f.default
            shown = f'"{d}"' if isinstance(d, str) else str(d).lower() if isinstance(d, bool) else d
            lines.append(f"| `{f.name}` | `{shown}` | {_describe(f)} | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)


def overrides_from_flags(args: Any) -> Dict[str, Dict[str, Any]]:
    """The command-line flags of ``edgepose run`` (and those of them another command has, e.g. calibrate-fps)
    as config overrides: only the flags that were given; a flag the command does not have counts as not given."""
    def flag(name: str) -> Any:
        return getattr(args, name, None)

    o: Dict[str, Dict[str, Any]] = collections.defaultdict(dict)
    if flag('camera') is not None:
        if not re.fullmatch(r"\d+|/dev/video\d+|csi://\d+", str(flag('camera')).strip()):
            raise UsageError(f"--camera takes a camera (0, /dev/video2, csi://0), not {flag('camera')!r}; "
                             f"give files, folders and stream URLs with --source")
        o["camera"]["source"] = str(flag('camera')).strip()
    if flag('source') is not None:
        o["camera"]["source"] = flag('source')
    if flag('rotate') is not None:
        o["camera"]["rotate"] = flag('rotate')
    if flag('model'):
        o["model"]["name"] = flag('model')
    if flag('family'):
        o["model"]["family"] = flag('family')
    if flag('model_mirror'):
        o["model"]["mirror"] = flag('model_mirror')
    if flag('decoder'):
        o["model"]["decoder"] = flag('decoder')
    if flag('backend'):
        o["runtime"]["backend"] = flag('backend')
    if flag('threads') is not None:
        o["runtime"]["threads"] = flag('threads')
    if flag('no_xnnpack'):
        o["runtime"]["xnnpack"] = False
    if flag('fps') is not None:
        o["runtime"]["max_fps"] = flag('fps')
    if flag('max_frames') is not None:
        o["runtime"]["max_frames"] = flag('max_frames')
    if flag('sink'):
        o["output"]["sink"] = flag('sink')
    if flag('device'):
        o["output"]["device"] = flag('device')
    if flag('qos') is not None:
        o["mqtt"]["qos"] = flag('qos')
    if flag('broker'):
        try:
            host, port = split_host_port(flag('broker'))
        except ValueError:
            raise ConfigError(f"bad --broker {flag('broker')!r}: expected HOST, HOST:PORT or [IPv6]:PORT") from None
        o["mqtt"]["host"] = host
        if port is not None:
            o["mqtt"]["port"] = port
    if flag('no_smoothing'):
        o["smoothing"]["enabled"] = False
    if flag('no_tracking'):
        o["tracking"]["enabled"] = False
    if flag('preview'):
        o["preview"]["listen"] = flag('preview')
    if flag('preview_host'):
        o["preview"]["hosts"] = ",".join(flag('preview_host'))
    return dict(o)
