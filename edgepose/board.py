"""What the board says about itself: model, temperature, throttling.

Every reader takes a ``root`` so tests can point it at a fake sysfs tree
(the real files exist only on the boards).
"""

from __future__ import annotations

import glob
import os
from typing import Optional


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
