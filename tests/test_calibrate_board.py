"""Thermal zones and throttling (edgepose.daemon.board) and how calibrate-fps reports a throttled sweep.

The real files (/sys/class/thermal on a Pi or Jetson, the Pi firmware's get_throttled) and
`vcgencmd` exist only on the boards, so these tests build a fake sysfs tree under tmp and inject
a fake `vcgencmd` runner. The sweep itself runs the real model on synthetic frames.
"""

from __future__ import annotations

import pytest

from edgepose.core import config as config_mod
from edgepose.daemon import board
from edgepose.tools import calibrate as cal
from edgepose.tools import calibrate_report as rep
from edgepose.tools import sweep

from conftest import MIRROR


def zone(root, n, kind, milli, trips=()):
    d = root / "sys" / "class" / "thermal" / f"thermal_zone{n}"
    d.mkdir(parents=True)
    (d / "type").write_text(kind + "\n")
    (d / "temp").write_text(f"{milli}\n")
    for i, (ttype, tmilli) in enumerate(trips):
        (d / f"trip_point_{i}_type").write_text(ttype + "\n")
        (d / f"trip_point_{i}_temp").write_text(f"{tmilli}\n")
    return d


def pi_firmware(root, word_hex):
    p = root / board.PI_THROTTLED_SYSFS
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(word_hex + "\n")
    return p


def no_vcgencmd(argv):
    raise FileNotFoundError(argv[0])


def test_a_machine_without_any_of_it_reports_unavailable(tmp_path):
    t = board.throttled(str(tmp_path), run=no_vcgencmd)
    assert t == board.Throttle(False)
    assert board.thermal_zones(str(tmp_path)) == [] and board.cpu_temperature(str(tmp_path)) is None


def test_jetson_thermal_zones_throttle_above_their_passive_trip(tmp_path):
    # a Jetson Nano's zones: CPU-therm, GPU-therm, ... each with a passive trip point
    zone(tmp_path, 0, "AO-therm", 41000, [("critical", 105000)])
    zone(tmp_path, 1, "CPU-therm", 58500, [("passive", 97000), ("critical", 101000)])
    zone(tmp_path, 2, "GPU-therm", 99000, [("passive", 97000), ("passive", 95000)])
    zones = {z.type: z for z in board.thermal_zones(str(tmp_path))}
    assert zones["CPU-therm"].temp_c == 58.5 and zones["CPU-therm"].passive_c == 97.0
    assert zones["GPU-therm"].passive_c == 95.0 and zones["GPU-therm"].throttling
    assert zones["AO-therm"].passive_c is None and not zones["AO-therm"].throttling
    t = board.throttled(str(tmp_path), run=no_vcgencmd)
    assert t.available and t.now and t.source == "thermal-trip"
    assert t.reasons == ("GPU-therm 99.0C >= trip 95.0C",)
    assert board.cpu_temperature(str(tmp_path)) == 58.5  # the CPU zone, not the hottest
    (tmp_path / "sys/class/thermal/thermal_zone2/temp").write_text("60000\n")
    cool = board.throttled(str(tmp_path), run=no_vcgencmd)
    assert cool.available and not cool.now and cool.reasons == ()


def test_pi_firmware_word_from_sysfs_wins_over_vcgencmd(tmp_path):
    pi_firmware(tmp_path, "50005")
    calls = []
    t = board.throttled(str(tmp_path), run=lambda argv: calls.append(argv) or "throttled=0x0")
    assert calls == [] and t.source == "sysfs" and t.raw == 0x50005
    assert t.now and t.since_boot
    assert t.reasons == ("under-voltage", "throttled", "under-voltage (since boot)", "throttled (since boot)")


@pytest.mark.parametrize("out,now,since,reasons", [
    ("throttled=0x0\n", False, False, ()),
    ("throttled=0x80000\n", False, True, ("soft-temperature-limit (since boot)",)),
    ("throttled=0x6\n", True, True, ("arm-frequency-capped", "throttled")),
])
def test_vcgencmd_get_throttled(tmp_path, out, now, since, reasons):
    calls = []

    def vcgencmd(argv):
        calls.append(list(argv))
        return out

    t = board.throttled(str(tmp_path), run=vcgencmd)
    assert calls == [["vcgencmd", "get_throttled"]]
    assert (t.available, t.now, t.since_boot, t.reasons, t.source) == (True, now, since, reasons, "vcgencmd")


def test_unparsable_vcgencmd_output_falls_back_to_thermal_zones(tmp_path):
    zone(tmp_path, 0, "cpu-thermal", 62000, [("passive", 80000)])  # a Pi 4's single zone
    t = board.throttled(str(tmp_path), run=lambda argv: "error=1 error_msg=\"Command not registered\"")
    assert t.source == "thermal-trip" and not t.now
    assert board.parse_get_throttled("garbage") is None and board.parse_get_throttled("0x10") == 16


def test_throttled_between_catches_a_pi_event_that_came_and_went():
    quiet = board.decode_throttled(0x0)
    came_and_went = board.decode_throttled(0x40000)  # "throttled since boot" appeared meanwhile
    assert sweep.throttled_between(quiet, came_and_went)
    assert not sweep.throttled_between(came_and_went, came_and_went)  # happened before: not this one
    assert sweep.throttled_between(quiet, board.decode_throttled(0x4))
    assert not sweep.throttled_between(board.Throttle(False), board.Throttle(False))


def test_the_run_command_runner_reports_a_missing_tool():
    with pytest.raises(FileNotFoundError):
        board.run_command(["edgepose-no-such-tool-xyz"])
    assert board.run_command(["echo", "throttled=0x0"]).strip() == "throttled=0x0"
    with pytest.raises(OSError):
        board.run_command(["false"])


def test_a_throttled_sweep_is_flagged_in_the_report(tmp_path, model_cache):
    zone(tmp_path, 0, "cpu-thermal", 86000, [("passive", 85000)])  # hot Pi: above its trip point
    cfg = config_mod.load(None, {"camera": {"source": "synthetic:320x240"},
                                 "model": {"name": "hourglass", "dir": str(model_cache), "mirror": str(MIRROR)}},
                          environ={})
    plan = sweep.Plan(budget_s=1.0, final_rounds=1, warmup=1, min_frames=2, min_slice_s=0.1)
    opts = cal.Options(plan=plan, threads=[1], xnnpack=(True,))
    report = cal.calibrate(cfg, opts, probe=sweep.ThermalProbe(str(tmp_path), run=no_vcgencmd))
    assert report["thermal"] == {"available": True, "source": "thermal-trip", "throttled": True,
                                 "temp_c_max": 86.0}
    assert all(c["throttled"] and c["temp_c_max"] == 86.0 for c in report["candidates"])
    assert any("throttled during" in w and "cpu-thermal 86.0C >= trip 85.0C" in w for w in report["warnings"])
    table = rep.format_table(report)
    assert "THROTTLED" in table and "warning: throttled during" in table

    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("55000\n")
    cool = cal.calibrate(cfg, opts, probe=sweep.ThermalProbe(str(tmp_path), run=no_vcgencmd))
    assert cool["thermal"]["throttled"] is False and cool["warnings"] == []
    assert "thermal: not throttled (thermal-trip, max 55.0 C)" in rep.format_table(cool)
