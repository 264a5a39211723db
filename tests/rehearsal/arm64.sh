#!/usr/bin/env bash
# Deploy rehearsal on Debian 12 (bookworm) arm64 with a real systemd.
#
#   sudo tests/rehearsal/arm64.sh [--root-only] [--keep] [--model NAME]
#
# 1. builds (or reuses from the cache) a Debian bookworm arm64 root with
#    debootstrap + qemu-user-static,
# 2. copies it into a throw-away overlay, boots a real systemd as PID 1 of a
#    new PID namespace inside it (same network as the host),
# 3. runs deploy/install.sh exactly as an offline user would (`--from DIR`
#    holding an edgepose wheel and a model mirror; pip still fetches the real
#    aarch64 wheels of the dependencies from PyPI),
# 4. checks: the service is active; poses arrive on MQTT (mosquitto on the
#    host) from a clip source; `kill -STOP` of the main process makes the
#    systemd watchdog restart it; `systemctl stop` publishes `offline` and the
#    journal shows a clean exit; deploy/uninstall.sh --purge leaves nothing
#    behind.
#
# Every step is printed with its wall time.  Needs root.  The debootstrap root
# is cached in $EDGEPOSE_REHEARSAL_CACHE (default /var/cache/edgepose-rehearsal)
# keyed by a hash of the package list and recipe, so only the first run pays
# for debootstrap (~4 min).  Emulated inference is ~1.5 s per frame: the
# checks are sized for that.
#
# Limitations of the emulation (stated, not hidden): qemu-user refuses
# seccomp, so SystemCallFilter=/RestrictAddressFamilies=/MemoryDenyWriteExecute=
# are skipped by systemd here (tests/test_systemd_unit.py checks the unit
# statically); there is no camera, so the source is a video clip.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SHARED="${EDGEPOSE_SHARED:-$(cd "$REPO/.." && pwd)/shared}"
CACHE="${EDGEPOSE_REHEARSAL_CACHE:-/var/cache/edgepose-rehearsal}"
SUITE=bookworm
ARCH=arm64
MIRROR="${EDGEPOSE_REHEARSAL_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,dbus,python3-venv,ca-certificates,procps"
RECIPE=3   # bump when the root preparation below changes
MODEL=hourglass
ROOT_ONLY=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-only) ROOT_ONLY=1 ;;
        --keep) KEEP=1 ;;
        --model) MODEL="$2"; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done

T0=$(date +%s)
STEP_T=$T0
step() {
    local now; now=$(date +%s)
    echo "== [$(date +%H:%M:%S) +$((now - T0))s] $*"
    STEP_T=$now
}
ok() { echo "   ok: $*"; }
die() { echo "REHEARSAL FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mounts, namespaces)"

# --------------------------------------------------------------------------
step "tools: debootstrap, qemu-user-static, mosquitto"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
    echo "   installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || die "cannot install ${need[*]}"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
ok "$(debootstrap --version 2>/dev/null | head -1 || echo debootstrap), $(qemu-aarch64-static --version | head -1)"

# --------------------------------------------------------------------------
step "binfmt_misc: qemu-aarch64 with the F (fix binary) flag"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # the magic/mask of Debian's qemu-user-static, with the static interpreter
    # opened at registration time (F) so it works inside the chroot
    printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > /proc/sys/fs/binfmt_misc/register || die "cannot register qemu-aarch64"
fi
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 is registered without the F flag"
ok "$(head -2 /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' ')"

# --------------------------------------------------------------------------
# units that must not run in a root sharing the host's kernel and devices
MASK="getty@.service serial-getty@.service console-getty.service container-getty@.service
systemd-timesyncd.service systemd-sysctl.service systemd-modules-load.service
systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket
systemd-udevd-kernel.socket systemd-udev-settle.service systemd-remount-fs.service
systemd-firstboot.service sys-kernel-config.mount sys-kernel-debug.mount
sys-kernel-tracing.mount sys-fs-fuse-connections.mount dev-hugepages.mount
dev-mqueue.mount kmod-static-nodes.service systemd-hwdb-update.service
systemd-journald-audit.socket systemd-pstore.service systemd-random-seed.service
apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service
fstrim.timer systemd-tmpfiles-clean.timer ldconfig.service systemd-networkd.service
systemd-networkd.socket systemd-network-generator.service systemd-resolved.service
systemd-networkd-wait-online.service tmp.mount cryptsetup.target
systemd-logind.service dbus-org.freedesktop.login1.service"
KEY=$(printf '%s\n' "$SUITE" "$ARCH" "$MIRROR" "$PACKAGES" "$RECIPE" "$MASK" | sha256sum | cut -c1-16)
BASE="$CACHE/root-$SUITE-$ARCH-$KEY"

step "root: Debian $SUITE $ARCH ($PACKAGES) cached at $BASE"
if [ -e "$BASE/.complete" ]; then
    ok "reusing the cached root (delete $BASE to rebuild)"
else
    mkdir -p "$CACHE"
    tmp="$BASE.tmp.$$"
    rm -rf "$tmp"
    echo "   debootstrap --arch=$ARCH --variant=minbase (takes a few minutes)"
    debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" \
        > "$CACHE/debootstrap-$KEY.log" 2>&1 || { tail -20 "$CACHE/debootstrap-$KEY.log" >&2; rm -rf "$tmp"; die "debootstrap failed (log: $CACHE/debootstrap-$KEY.log)"; }
    for u in $MASK; do ln -sf /dev/null "$tmp/etc/systemd/system/$u"; done
    echo rehearsal-arm64 > "$tmp/etc/hostname"
    : > "$tmp/etc/machine-id"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    touch "$tmp/.complete"
    rm -rf "$BASE"
    mv "$tmp" "$BASE"
    ok "built in $(( $(date +%s) - STEP_T ))s ($(du -sh "$BASE" | cut -f1))"
fi
[ "$ROOT_ONLY" = 1 ] && { step "done (--root-only)"; exit 0; }

echo "REHEARSAL: the remaining steps are not written yet" >&2
exit 2
