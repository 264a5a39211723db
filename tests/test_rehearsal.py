"""The deploy rehearsal: tests/rehearsal/arm64.sh on a real systemd in a
Debian bookworm root built with debootstrap.

* arm64 under qemu-user-static, install.sh's Raspberry Pi path (LiteRT 1.4):
  ~4 min of debootstrap on the first run (then cached in
  /var/cache/edgepose-rehearsal) plus 3.5-5 min of install and checks on a
  quiet machine (18 min at load average 15 with the int8 checks: docs/deploy.md);
* amd64 natively (x86_64 hosts), the generic LiteRT path: ~2 min of
  debootstrap on the first run plus ~1 min; the only run where the unit's
  seccomp-based hardening is enforced (qemu-user refuses seccomp).

Both runs get a small int8 model built in the session (the tiny_int8 fixture of conftest.py):
XNNPACK must take it whole in one partition under the installed LiteRT
(`edgepose models info --json` in the root) and the service must publish its
poses and an `xnnpack_delegation` status.

Skipped only when not root or when the script reports that its prerequisites
(debootstrap, qemu-user-static, binfmt_misc) cannot be had (exit 77).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "tests" / "rehearsal" / "arm64.sh"

pytestmark = pytest.mark.slow  # minutes of debootstrap and install under qemu


@pytest.mark.skipif(os.geteuid() != 0, reason="the rehearsal needs root (debootstrap, mounts, namespaces)")
@pytest.mark.parametrize("arch, board", [("arm64", "pi"), ("amd64", "generic")])
def test_deploy_rehearsal(arch, board, request):
    if arch == "amd64" and platform.machine() != "x86_64":
        pytest.skip("the native amd64 rehearsal needs an x86_64 host")
    int8 = request.getfixturevalue("tiny_int8")  # built only when the rehearsal runs
    proc = subprocess.run(["bash", str(SCRIPT), "--arch", arch, "--platform", board, "--int8", str(int8)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=2700)
    sys.stdout.write(proc.stdout)  # the printed steps, shown with -s or on failure
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "PASSED in" in proc.stdout
    assert "int8 model on litert " in proc.stdout and "3 poses from tiny-int8" in proc.stdout
    if board == "pi":
        assert "the venv's runtime: litert 1.4." in proc.stdout and "no tflite-runtime" in proc.stdout
    # filters on natively; qemu-user refuses seccomp, so an emulated root reports mode 0
    assert "seccomp mode of the main process: " + ("2" if arch == "amd64" else "0") in proc.stdout
