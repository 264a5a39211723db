"""What the board says about itself: model, temperature, throttling.

Every reader takes a ``root`` so tests can point it at a fake sysfs tree
(the real files exist only on the boards).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple


def board_name(root: str = "/") -> str:
    try:
        with open(os.path.join(root, "proc/device-tree/model"), "rb") as fh:
            return fh.read().rstrip(b"\0\n").decode("utf-8", "replace")
    except OSError:
        pass
    if os.path.exists(os.path.join(root, "etc/nv_tegra_release")):
        return "NVIDIA Jetson"
    return "generic Linux"


def cpu_temperature(root: str = "/") -> Optional[float]:
    """CPU temperature in C from the thermal zones (Pi: cpu-thermal; Jetson: CPU-therm), if any."""
    zones = sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*")))
    readings = []
    for z in zones:
        try:
            with open(os.path.join(z, "type")) as fh:
                kind = fh.read().strip().lower()
            with open(os.path.join(z, "temp")) as fh:
                milli = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        readings.append((0 if "cpu" in kind else 1, milli / 1000.0))
    if not readings:
        return None
    return round(sorted(readings)[0][1], 1)


# --- thermal zones and throttling ----------------------------------------------

@dataclass(frozen=True)
class ThermalZone:
    """One ``/sys/class/thermal/thermal_zoneN`` (Pi: cpu-thermal; Jetson: CPU-therm, GPU-therm, ...)."""

    name: str  # thermal_zoneN
    type: str
    temp_c: float
    passive_c: Optional[float] = None  # lowest "passive" trip point: the kernel throttles above it

    @property
    def throttling(self) -> bool:
        return self.passive_c is not None and self.temp_c >= self.passive_c


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def thermal_zones(root: str = "/") -> List[ThermalZone]:
    """Every readable thermal zone with its temperature and passive trip point, if it has one."""
    out = []
    for z in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        kind, temp = _read(os.path.join(z, "type")), _read(os.path.join(z, "temp"))
        try:
            milli = int(temp or "")
        except ValueError:
            continue
        passive = []
        for tp in glob.glob(os.path.join(z, "trip_point_*_type")):
            if _read(tp) == "passive":
                try:
                    passive.append(int(_read(tp[: -len("type")] + "temp") or "") / 1000.0)
                except ValueError:
                    pass
        out.append(ThermalZone(os.path.basename(z), kind or "", milli / 1000.0,
                               min(passive) if passive else None))
    return out


# bits of the Raspberry Pi firmware's get_throttled word
THROTTLE_BITS = {0: "under-voltage", 1: "arm-frequency-capped", 2: "throttled", 3: "soft-temperature-limit"}
_SINCE_BOOT_SHIFT = 16
# newer Pi kernels expose the same word in sysfs (hex), no vcgencmd needed
PI_THROTTLED_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"

Runner = Callable[[Sequence[str]], str]  # argv -> stdout; raises OSError when the tool is missing


@dataclass(frozen=True)
class Throttle:
    """Whether the board is (or was) throttling, as far as it tells.

    ``available`` is false when the board exposes nothing (then ``now`` is
    false and means "unknown", not "fine").
    """

    available: bool
    now: bool = False  # throttled / capped / under-voltage right now
    since_boot: bool = False  # it happened at some point since boot (Pi only)
    reasons: Tuple[str, ...] = ()
    raw: Optional[int] = None  # the Pi's get_throttled word
    source: str = ""  # "vcgencmd", "sysfs", "thermal-trip" or ""


def parse_get_throttled(text: str) -> Optional[int]:
    """``throttled=0x50005`` (vcgencmd) or ``50005`` (sysfs) -> the integer word, or None."""
    text = (text or "").strip()
    if "=" in text:
        text = text.split("=", 1)[1].strip()
    try:
        return int(text, 16)
    except ValueError:
        return None


def decode_throttled(word: int, source: str = "vcgencmd") -> Throttle:
    now = tuple(name for bit, name in THROTTLE_BITS.items() if word & (1 << bit))
    past = tuple(f"{name} (since boot)" for bit, name in THROTTLE_BITS.items()
                 if word & (1 << (bit + _SINCE_BOOT_SHIFT)))
    return Throttle(True, now=bool(now), since_boot=bool(now or past), reasons=now + past, raw=word,
                    source=source)


def run_command(argv: Sequence[str], timeout: float = 3.0) -> str:
    """The default :data:`Runner`: stdout of a command; OSError when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} not found")
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"{argv[0]} timed out") from e
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def throttled(root: str = "/", run: Optional[Runner] = None) -> Throttle:
    """Throttling state: Pi firmware word (sysfs, else ``vcgencmd get_throttled``), else thermal trips.

    On a Jetson (and any Linux board) a thermal zone at or above its passive
    trip point means the kernel is throttling the clocks.  ``run`` is the
    command runner (injectable for tests); the real files and vcgencmd exist
    only on the boards.
    """
    text = _read(os.path.join(root, PI_THROTTLED_SYSFS))
    word = parse_get_throttled(text) if text is not None else None
    if word is not None:
        return decode_throttled(word, "sysfs")
    run = run or run_command
    try:
        word = parse_get_throttled(run(["vcgencmd", "get_throttled"]))
    except OSError:
        word = None
    if word is not None:
        return decode_throttled(word, "vcgencmd")
    zones = [z for z in thermal_zones(root) if z.passive_c is not None]
    if not zones:
        return Throttle(False)
    hot = tuple(f"{z.type or z.name} {z.temp_c:.1f}C >= trip {z.passive_c:.1f}C" for z in zones if z.throttling)
    return Throttle(True, now=bool(hot), since_boot=False, reasons=hot, source="thermal-trip")
