"""The deploy rehearsal: tests/rehearsal/arm64.sh on a real systemd in a
Debian bookworm arm64 root (debootstrap + qemu-user-static).

Takes ~4 min for debootstrap on the first run (then cached in
/var/cache/edgepose-rehearsal) plus ~6-8 min for install and checks under
emulation.  Skipped only when not root or when the script reports that its
prerequisites (debootstrap, qemu-user-static, binfmt_misc) cannot be had
(exit 77).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "tests" / "rehearsal" / "arm64.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the rehearsal needs root (debootstrap, mounts, namespaces)")
def test_arm64_rehearsal():
    proc = subprocess.run(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=1500)
    sys.stdout.write(proc.stdout)  # the printed steps, shown with -s or on failure
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "== " in proc.stdout and "PASSED in" in proc.stdout
