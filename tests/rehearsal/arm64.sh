#!/usr/bin/env bash
# Deploy rehearsal on Debian 12 (bookworm) arm64 with a real systemd.
#
#   sudo tests/rehearsal/arm64.sh [--root-only] [--keep] [--model NAME] [--platform pi|generic]
#                                 [--arch arm64|amd64] [--int8 MODEL.tflite]
#
# `--arch amd64` (with --platform generic) runs the same rehearsal natively on
# an x86_64 host: no emulation, so seccomp-based hardening is enforced.
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
#    systemd watchdog restart it; `systemctl reload` with a broken config is
#    logged and the service keeps running; `systemctl stop` publishes `offline` and the
#    journal shows a clean exit; deploy/uninstall.sh --purge leaves nothing
#    behind;
# 5. the runtime install.sh chose (the Pi path: LiteRT 1.4, runtime.backend = "litert",
#    no tflite-runtime); with --int8 MODEL.tflite (an int8 heatmap model: test_rehearsal.py
#    builds a small one) `edgepose models info --json` in the root shows XNNPACK took it whole,
#    in one partition, with every int8 operator (and prints the float model's delegation), and
#    the service, switched to it, publishes poses and an `xnnpack_delegation` status.
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
set -eEuo pipefail
trap 'echo "REHEARSAL FAILED: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

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
# Raspberry Pi OS is the main target: install.sh's Pi path (venv with system
# site packages, apt numpy, LiteRT 1.4: deploy/runtime.sh).  `--platform generic`
# takes the generic path (isolated venv, newest LiteRT).
PLATFORM=pi
INT8=""
STALL=25
ROOT_ONLY=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-only) ROOT_ONLY=1 ;;
        --keep) KEEP=1 ;;
        --model) MODEL="$2"; shift ;;
        --platform) PLATFORM="$2"; shift ;;
        --arch) ARCH="$2"; shift ;;
        --int8) INT8="$2"; shift ;;
        -h|--help) sed -n '2,/^set -eEuo/p' "$0" | sed '$d'; exit 0 ;;
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
SDPID=""
die() {
    echo "REHEARSAL FAILED: $*" >&2
    if [ -n "$SDPID" ]; then
        echo "--- journalctl -u edgepose (last 40 lines)" >&2
        in_root journalctl -u edgepose -n 40 --no-pager >&2 || true
    fi
    exit 1
}
unavailable() { echo "REHEARSAL UNAVAILABLE: $*" >&2; exit 77; }

[ "$(id -u)" = 0 ] || unavailable "must run as root (debootstrap, mounts, namespaces)"

# --------------------------------------------------------------------------
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || echo unknown)
EMULATED=1; [ "$ARCH" = "$HOST_ARCH" ] && EMULATED=0
[ "$EMULATED" = 0 ] || [ "$ARCH" = arm64 ] || die "only arm64 is emulated; --arch must be arm64 or $HOST_ARCH"
step "tools: debootstrap, qemu-user-static, mosquitto"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ "$EMULATED" = 0 ] || command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
    echo "   installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || unavailable "cannot install ${need[*]}"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
ok "$(debootstrap --version 2>/dev/null | head -1 || echo debootstrap)$( [ "$EMULATED" = 1 ] && echo ", $(qemu-aarch64-static --version | head -1)")"

# --------------------------------------------------------------------------
if [ "$EMULATED" = 1 ]; then
step "binfmt_misc: qemu-aarch64 with the F (fix binary) flag"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || unavailable "cannot mount binfmt_misc"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # the magic/mask of Debian's qemu-user-static, with the static interpreter
    # opened at registration time (F) so it works inside the chroot
    printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > /proc/sys/fs/binfmt_misc/register || unavailable "cannot register qemu-aarch64"
fi
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 is registered without the F flag"
ok "$(head -2 /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' ')"
fi

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
# one builder of a root at a time: .ci/run starts the build in the background and the rehearsal test
# waits here for it instead of building the same root again
mkdir -p "$CACHE"
exec 8>"$BASE.lock"
if ! flock -n 8; then
    echo "   waiting for another build of this root ($BASE.lock)"
    flock 8
fi
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
    echo "rehearsal-$ARCH" > "$tmp/etc/hostname"
    : > "$tmp/etc/machine-id"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    touch "$tmp/.complete"
    rm -rf "$BASE"
    mv "$tmp" "$BASE"
    ok "built in $(( $(date +%s) - STEP_T ))s ($(du -sh "$BASE" | cut -f1))"
fi
flock -u 8; exec 8>&-
[ "$ROOT_ONLY" = 1 ] && { step "done (--root-only)"; exit 0; }

# one rehearsal at a time on a machine (they would fight for the CPUs)
exec 9>"$CACHE/rehearsal.lock"
if ! flock -n 9; then
    echo "   waiting for another rehearsal to finish ($CACHE/rehearsal.lock)"
    flock 9
fi

# --------------------------------------------------------------------------
RUN=$(mktemp -d /var/tmp/edgepose-rehearsal.XXXXXX)
ROOT="$RUN/root"
CGROUP=""
MOSQ_PID="" SUB_PID="" UNSHARE_PID=""
in_root() {
    nsenter -t "$SDPID" -m -u -i -p -C -r -w \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 HOME=/root SYSTEMD_PAGER= "$@"
}
cleanup() {
    set +e
    trap - ERR
    [ -n "$SDPID" ] && kill -9 "$SDPID" 2>/dev/null        # systemd ignores SIGTERM as PID 1
    [ -n "$UNSHARE_PID" ] && wait "$UNSHARE_PID" 2>/dev/null
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null
    [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null && wait "$MOSQ_PID" 2>/dev/null
    if [ -n "$CGROUP" ] && [ -d "$CGROUP" ]; then
        for _ in $(seq 50); do  # the namespace's processes take a moment to be reaped
            find "$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$CGROUP" ] || break
            sleep 0.2
        done
    fi
    mountpoint -q "$ROOT" && { umount "$ROOT" 2>/dev/null || umount -l "$ROOT"; }
    if [ "$KEEP" = 1 ]; then echo "   kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

step "overlay: throw-away copy of the cached root at $ROOT"
mkdir -p "$RUN/upper" "$RUN/work" "$ROOT"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# only http(s) package indexes of the host's pip config make sense inside the root
idx=$(pip3 config list 2>/dev/null | sed -n "s/^global\.index-url='\(https\?:[^']*\)'$/\1/p" | head -1)
extra=$(pip3 config list 2>/dev/null | sed -n "s/^global\.extra-index-url='\(.*\)'$/\1/p" | tr ' ' '\n' | grep -E '^https?:' | tr '\n' ' ' || true)
idx="${PIP_INDEX_URL:-$idx}"
{ echo "[global]"; [ -n "$idx" ] && echo "index-url = $idx"; [ -n "${extra// /}" ] && echo "extra-index-url = $extra"; echo "timeout = 120"; } > "$ROOT/etc/pip.conf"
ok "CA bundle, resolv.conf, pip.conf ($(grep -c url "$ROOT/etc/pip.conf" || true) index line(s) from the host)"

step "offline bundle: edgepose wheel + deploy/ + model mirror ($MODEL) -> /root/edgepose-from"
FROM="$ROOT/root/edgepose-from"
mkdir -p "$FROM/models"
# from a copy of the tracked files, so the shared working tree gets no build/ litter
mkdir -p "$RUN/src"
git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$RUN/src"
( cd "$RUN/src" && python3 -m pip wheel -q --no-deps --no-build-isolation -w "$FROM" . ) >"$RUN/wheel.log" 2>&1 \
    || ( cd "$RUN/src" && python3 -m pip wheel -q --no-deps -w "$FROM" . ) >>"$RUN/wheel.log" 2>&1 \
    || { cat "$RUN/wheel.log" >&2; die "pip wheel failed"; }
cp -r "$REPO/deploy" "$FROM/deploy"
[ -d "$SHARED/models/$MODEL" ] || die "no model $MODEL in $SHARED/models"
cp -r "$SHARED/models/$MODEL" "$FROM/models/"
rm -f "$FROM/models/$MODEL/"*.pb
ok "$(cd "$FROM" && ls *.whl) deploy/ models/$MODEL"

step "clip source: shared demo.mp4 looped to 400 frames (~10 min at ~1.5 s/frame) -> /srv/edgepose/clip.mp4"
mkdir -p "$ROOT/srv/edgepose"
python3 - "$SHARED/data/video/demo.mp4" "$ROOT/srv/edgepose/clip.mp4" <<'PY'
import sys, cv2
src, dst = sys.argv[1:]
cap = cv2.VideoCapture(src)
frames = []
while True:
    ok, f = cap.read()
    if not ok:
        break
    frames.append(f)
assert frames, src
h, w = frames[0].shape[:2]
out = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (w, h))
for i in range(400):
    out.write(frames[i % len(frames)])
out.release()
PY
chmod 0644 "$ROOT/srv/edgepose/clip.mp4"
ok "$(du -h "$ROOT/srv/edgepose/clip.mp4" | cut -f1)"
if [ -n "$INT8" ]; then
    [ -f "$INT8" ] || die "--int8 $INT8 is not a file"
    install -m 0644 "$INT8" "$ROOT/srv/edgepose/tiny-int8.tflite"
    ok "int8 model $INT8 -> /srv/edgepose/tiny-int8.tflite"
fi

step "broker: mosquitto on the host (the root shares the host network)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" > "$RUN/mosquitto.conf"
"$MOSQUITTO" -c "$RUN/mosquitto.conf" > "$RUN/mosquitto.log" 2>&1 &
MOSQ_PID=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
# every message (with arrival time) for the checks below
mosquitto_sub -h 127.0.0.1 -p "$PORT" -v -t 'edgepose/#' -F '%U %t %p' > "$RUN/mqtt.log" 2>&1 &
SUB_PID=$!
ok "127.0.0.1:$PORT"

step "boot: real systemd as PID 1 of new PID/mount/UTS/IPC/cgroup namespaces"
# the one concession to emulation (~1.5 s/frame, more on a busy machine): the
# daemon's stall timeout, through the environment systemd gives services (the
# unit and the config file stay as installed; WatchdogSec=30 is unchanged)
mkdir -p "$ROOT/etc/systemd/system.conf.d"
# (and a 2 fps cap so that natively, --arch amd64, the clip outlasts the checks;
# emulated frames are slower than that anyway)
printf '[Manager]\nDefaultEnvironment=EDGEPOSE_SERVICE_STALL_TIMEOUT=%s EDGEPOSE_RUNTIME_MAX_FPS=2\n' "$STALL" \
    > "$ROOT/etc/systemd/system.conf.d/rehearsal.conf"
if [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then CG2=/sys/fs/cgroup/unified
elif [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then CG2=/sys/fs/cgroup
else CG2=""; fi
if [ -n "$CG2" ]; then CGROUP="$CG2/edgepose-rehearsal-$$"; mkdir -p "$CGROUP"; fi
(
    [ -n "$CGROUP" ] && echo "$BASHPID" > "$CGROUP/cgroup.procs"
    exec unshare --pid --fork --mount --uts --ipc --cgroup --propagation private /bin/sh -c '
        set -e
        mount --make-rprivate /
        mount -t proc proc "$0/proc"
        mount -t sysfs sysfs "$0/sys"
        mount --rbind /dev "$0/dev"
        mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$0/run"
        exec env -i container=edgepose-rehearsal TERM=dumb /usr/sbin/chroot "$0" /lib/systemd/systemd --system --show-status=no
    ' "$ROOT"
) > "$RUN/console.log" 2>&1 &
UNSHARE_PID=$!
for _ in $(seq 100); do
    SDPID=$(pgrep -P "$UNSHARE_PID" | head -1 || true)
    [ -n "$SDPID" ] && [ "$(readlink /proc/$SDPID/root 2>/dev/null)" = "$ROOT" ] && break
    SDPID=""; sleep 0.1
done
[ -n "$SDPID" ] || { cat "$RUN/console.log" >&2; die "systemd did not start"; }
state=""
for _ in $(seq 120); do
    state=$(in_root systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
done
case "$state" in running|degraded) ;; *) cat "$RUN/console.log" >&2; die "boot did not finish (state: $state)" ;; esac
ok "systemd $(in_root systemctl --version | head -1 | cut -d' ' -f2) is PID 1 (host pid $SDPID), system $state in $(( $(date +%s) - STEP_T ))s$( [ "$state" = degraded ] && printf '; failed: %s' "$(in_root systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')")"

# every path outside apt's files (apt packages the installer adds stay, as documented)
SNAP_EXCLUDE='^/(tmp|var/tmp|var/log|var/cache|var/lib/apt|var/lib/dpkg|var/lib/systemd|var/lib/private|root|srv)(/|$)|__pycache__|^/etc/alternatives/|^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$|^/etc/ld\.so\.cache$|^/etc/\.pwd\.lock$'
snapshot() {
    in_root sh -c 'find / -xdev -mindepth 1 ! -lname "/etc/alternatives/*" 2>/dev/null | LC_ALL=C sort > /tmp/snap.all
                   cat /var/lib/dpkg/info/*.list | LC_ALL=C sort -u > /tmp/snap.dpkg
                   LC_ALL=C comm -23 /tmp/snap.all /tmp/snap.dpkg' | grep -Ev "$SNAP_EXCLUDE" || true
}
snapshot > "$RUN/before.txt"
in_root dpkg-query -W -f '${Package}\n' | sort > "$RUN/packages.before"

step "install: deploy/install.sh --from /root/edgepose-from --platform $PLATFORM (as a user would, inside the root)"
in_root bash /root/edgepose-from/deploy/install.sh --from /root/edgepose-from --platform "$PLATFORM" \
    --source /srv/edgepose/clip.mp4 --broker "127.0.0.1:$PORT" --model "$MODEL" --device rehearsal \
    2>&1 | sed -u 's/^/   | /'
[ "${PIPESTATUS[0]}" = 0 ] || die "install.sh failed"
ok "installed and started in $(( $(date +%s) - STEP_T ))s; apt packages it added: $(in_root dpkg-query -W -f '${Package}\n' | sort | comm -13 "$RUN/packages.before" - | tr '\n' ' ')"

step "check: systemctl is-active edgepose; unit verify and security inside the root"
active=$(in_root systemctl is-active edgepose || true)
[ "$active" = active ] || die "edgepose is $active"
in_root systemd-analyze verify edgepose.service > "$RUN/verify.txt" 2>&1 || true
[ ! -s "$RUN/verify.txt" ] || { cat "$RUN/verify.txt" >&2; die "systemd-analyze verify is not clean"; }
exposure=$(in_root systemd-analyze security edgepose.service --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for edgepose.service: \([0-9.]*\).*/\1/p')
mainpid=$(in_root systemctl show -p MainPID --value edgepose)
seccomp=$(in_root sed -n 's/^Seccomp:[[:space:]]*//p' "/proc/$mainpid/status")
ok "active; verify clean; exposure $exposure; seccomp mode of the main process: $seccomp (2 = filters on; qemu-user: 0); $(in_root systemctl show -p StatusText --value edgepose)"
in_root journalctl -u edgepose -o cat --no-pager | grep -E 'model|source|first pose' | sed -u 's/^/   | /' || true

no_int8_warning() {  # the warning of a runtime whose XNNPACK cannot take int8 operators
    local journal; journal=$(in_root journalctl -u edgepose -o cat --no-pager)
    if grep -q 'int8 operators' <<<"$journal"; then die "the service warned about int8 operators"; fi
}
step "check: the TFLite runtime install.sh chose for --platform $PLATFORM (deploy/runtime.sh)"
cfg_backend=$(in_root sed -n 's/^backend = "\(.*\)"$/\1/p' /etc/edgepose/edgepose.toml)
runtime=$(in_root /opt/edgepose/venv/bin/python -c 'from edgepose.inference.engine import load_runtime; r = load_runtime(); print(r.name, r.version)')
if [ "$PLATFORM" = pi ]; then
    [ "$cfg_backend" = litert ] || die "runtime.backend is '$cfg_backend', expected litert on the Pi path"
    case "$runtime" in "litert 1.4."*) ;; *) die "the venv's runtime is '$runtime', expected LiteRT 1.4.x" ;; esac
    ! in_root /opt/edgepose/venv/bin/python -c 'import tflite_runtime' 2>/dev/null \
        || die "tflite-runtime is installed on the Pi path (it is only the fallback where LiteRT has no wheel)"
fi
no_int8_warning
ok "runtime.backend = ${cfg_backend:-auto}; the venv's runtime: $runtime$( [ "$PLATFORM" = pi ] && echo '; no tflite-runtime')"

step "check: poses from the service arrive on MQTT (edgepose/rehearsal/pose)"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/pose -C 3 -W 90 > "$RUN/poses.json" \
    || die "fewer than 3 poses within 90 s"
python3 - "$RUN/poses.json" <<'PY' || die "bad pose payloads"
import json, sys
ps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(ps) == 3, len(ps)
for p in ps:
    assert p["v"] == 1 and p["device"] == "rehearsal" and len(p["keypoints"]) == 14, p
print(f"   ok: 3 poses, seq {[p['seq'] for p in ps]}, score {ps[-1]['score']:.2f}, "
      f"infer {ps[-1]['latency_ms']['infer']:.0f} ms/frame")
PY
avail=$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/availability -C 1 -W 5 || true)
[ "$avail" = online ] || die "availability is '$avail', expected online"
ok "availability: online (retained)"

step "check: kill -STOP of the main process -> the watchdog restarts the service"
pid=$(in_root systemctl show -p MainPID --value edgepose)
n0=$(in_root systemctl show -p NRestarts --value edgepose)
[ "$n0" = 0 ] || die "the service already restarted $n0 time(s) before the test"
wsec=$(in_root systemctl show -p WatchdogUSec --value edgepose)
in_root kill -STOP "$pid"
t_stop=$(date +%s)
restarted=0
for _ in $(seq 120); do
    sleep 2
    n=$(in_root systemctl show -p NRestarts --value edgepose)
    st=$(in_root systemctl is-active edgepose || true)
    newpid=$(in_root systemctl show -p MainPID --value edgepose)
    if [ "$n" -gt "$n0" ] && [ "$st" = active ] && [ "$newpid" != "$pid" ]; then restarted=1; break; fi
done
[ "$restarted" = 1 ] || die "no watchdog restart within 240 s (NRestarts $n0 -> $n, state $st)"
in_root journalctl -u edgepose --no-pager -o cat | grep -i -E 'watchdog timeout|killing process|scheduled restart' | head -3 | sed -u 's/^/   | /' || true
in_root journalctl -u edgepose --no-pager -o cat | grep -qi 'watchdog timeout' || die "no watchdog timeout in the journal"
ok "main pid $pid stopped; watchdog ($wsec) fired, restarted as pid $newpid and READY again $(( $(date +%s) - t_stop ))s later (NRestarts $n0 -> $n)"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/pose -C 1 -W 90 >/dev/null || die "no pose after the restart"
ok "poses flow again"

step "check: systemctl reload (SIGHUP) keeps running; a broken config is logged and not applied"
in_root cp /etc/edgepose/edgepose.toml /root/edgepose.toml.good
in_root sed -i 's/^port = .*/port = "not a number"/' /etc/edgepose/edgepose.toml
in_root systemctl reload edgepose
# the daemon reads the file between frames: on a loaded machine an emulated frame takes 10 s or more
reported=0
for _ in $(seq 45); do
    sleep 2
    if in_root journalctl -u edgepose --no-pager -o cat | grep 'SIGHUP: keeping the running configuration' >/dev/null; then
        reported=1; break
    fi
done
in_root cp /root/edgepose.toml.good /etc/edgepose/edgepose.toml
[ "$reported" = 1 ] || die "a broken config on reload was not reported within 90 s"
in_root journalctl -u edgepose --no-pager -o cat | grep 'SIGHUP' | tail -1 | sed -u 's/^/   | /' || true
[ "$(in_root systemctl is-active edgepose || true)" = active ] || die "not active after reload"
ok "still active after the reload"

step "check: sudo edgepose calibrate-fps --apply (on PATH, as docs/calibrate.md says) saves the config and restarts"
[ "$(in_root readlink /usr/local/bin/edgepose)" = /opt/edgepose/venv/bin/edgepose ] || die "edgepose is not linked on PATH"
pid=$(in_root systemctl show -p MainPID --value edgepose)
in_root sh -c 'cd /root && edgepose calibrate-fps --source /srv/edgepose/clip.mp4 --quick --seconds 6 --threads 1 --xnnpack on --apply' \
    2>&1 | sed -u 's/^/   | /'
[ "${PIPESTATUS[0]}" = 0 ] || die "calibrate-fps --apply failed"
in_root grep -Eq '^threads = 1$' /etc/edgepose/edgepose.toml || die "calibrate-fps did not save runtime.threads = 1"
in_root grep -Eq '^max_fps = [0-9.]+$' /etc/edgepose/edgepose.toml || die "calibrate-fps did not save runtime.max_fps"
[ "$(in_root stat -c '%U:%G %a' /etc/edgepose/edgepose.toml)" = "root:edgepose 640" ] || die "the config lost its owner or mode"
newpid=$(in_root systemctl show -p MainPID --value edgepose)
[ "$(in_root systemctl is-active edgepose || true)" = active ] && [ "$newpid" != "$pid" ] \
    || die "the service was not restarted (MainPID $pid -> $newpid)"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/pose -C 1 -W 90 >/dev/null || die "no pose after calibrate-fps --apply"
ok "saved $(in_root sed -n 's/^\(threads\|max_fps\|xnnpack\) = /\1=/p' /etc/edgepose/edgepose.toml | tr '\n' ' ')to /etc/edgepose/edgepose.toml (root:edgepose 640 kept); restarted as pid $newpid; poses flow"

if [ -n "$INT8" ]; then
step "check: XNNPACK takes the int8 model whole (edgepose models info --json in the root); the service runs it"
in_root edgepose models --config /etc/edgepose/edgepose.toml info /srv/edgepose/tiny-int8.tflite --json > "$RUN/int8.json" \
    || die "edgepose models info of the int8 model failed"
in_root edgepose models --config /etc/edgepose/edgepose.toml info "$MODEL" --json > "$RUN/float.json" \
    || die "edgepose models info $MODEL failed"
python3 - "$RUN/int8.json" "$RUN/float.json" "$MODEL" <<'PY' || die "XNNPACK did not take the int8 model whole"
import json, sys
q, f = (json.load(open(p)) for p in sys.argv[1:3])
d = q["delegation"]
assert q["quantized"] == "int8" and q["runtime"].startswith("litert "), (q["quantized"], q["runtime"])
assert d["prepared"] and d["partitions"] == 1 and d["delegated_nodes"] == d["total_nodes"], d
assert d["int8_nodes"] > 0 and d["int8_delegated"] == d["int8_nodes"] and q["advice"] == "", (d, q["advice"])
g = f["delegation"]
print(f"   ok: int8 model on {q['runtime']}: {d['partitions']} XNNPACK partition, {d['delegated_nodes']} of "
      f"{d['total_nodes']} ops, {d['int8_delegated']} of {d['int8_nodes']} int8 ops; float {sys.argv[3]} "
      f"({f['quantized']}): {g['partitions']} partition(s), {g['delegated_nodes']} of {g['total_nodes']} ops")
PY
in_root sed -i 's|^name = .*|name = "/srv/edgepose/tiny-int8.tflite"|' /etc/edgepose/edgepose.toml
in_root systemctl restart edgepose
in_root journalctl -u edgepose -o cat --no-pager | grep 'model tiny-int8' | tail -1 | sed -u 's/^/   | /' || true
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/pose -C 3 -W 90 > "$RUN/int8-poses.json" \
    || die "fewer than 3 poses from the int8 model within 90 s"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/status -C 4 -W 40 > "$RUN/int8-status.json" || true
python3 - "$RUN/int8-poses.json" "$RUN/int8-status.json" <<'PY' || die "bad poses or status from the int8 model"
import json, sys
ps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(ps) == 3 and all(p["model"] == "tiny-int8" and len(p["keypoints"]) == 14 for p in ps), ps
st = [s for s in (json.loads(l) for l in open(sys.argv[2]) if l.strip()) if s.get("model") == "tiny-int8"]
assert st, "no status of the int8 model"
x = st[-1]["xnnpack_delegation"]
assert st[-1]["xnnpack"] and x["partitions"] == 1 and x["delegated_ops"] == x["total_ops"], x
assert x["int8_ops"] > 0 and x["int8_delegated"] == x["int8_ops"], x
print(f"   ok: 3 poses from tiny-int8, infer {ps[-1]['latency_ms']['infer']:.0f} ms/frame; status "
      f"xnnpack_delegation {json.dumps(x)}")
PY
no_int8_warning
fi

step "upgrade: deploy/install.sh run from a source checkout (git clone + sudo deploy/install.sh, no --from)"
mkdir -p "$ROOT/root/edgepose-src"  # the tracked files, as a clone has them
git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$ROOT/root/edgepose-src"
pid=$(in_root systemctl show -p MainPID --value edgepose)
in_root bash /root/edgepose-src/deploy/install.sh --platform "$PLATFORM" 2>&1 | tee "$RUN/upgrade.log" | sed -u 's/^/   | /'
[ "${PIPESTATUS[0]}" = 0 ] || die "install.sh from the source checkout failed"
grep -q "from the source checkout /root/edgepose-src" "$RUN/upgrade.log" || die "install.sh did not install the checkout"
grep -q "keeping the existing /etc/edgepose/edgepose.toml" "$RUN/upgrade.log" || die "the config was not kept"
litter=$(cd "$ROOT/root/edgepose-src" && find . -name '*.egg-info' -o -path ./build -o -name __pycache__ | head -3)  # (edgepose/build is a package)
[ -z "$litter" ] || die "the build left files in the checkout: $litter"
newpid=$(in_root systemctl show -p MainPID --value edgepose)
[ "$(in_root systemctl is-active edgepose || true)" = active ] && [ "$newpid" != "$pid" ] \
    || die "the service was not restarted by the upgrade (MainPID $pid -> $newpid)"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/pose -C 1 -W 90 >/dev/null || die "no pose after the upgrade"
ok "installed $(in_root /opt/edgepose/venv/bin/edgepose --version) from the checkout, config kept, no build files left in it, restarted as pid $newpid; poses flow"

step "check: systemctl stop -> offline published, clean exit in the journal"
t0=$(date +%s.%N)
in_root systemctl stop edgepose
took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
avail=$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -t edgepose/rehearsal/availability -C 1 -W 5 || true)
[ "$avail" = offline ] || die "availability after stop is '$avail', expected offline"
result=$(in_root systemctl show -p Result --value edgepose)
status=$(in_root systemctl show -p ExecMainStatus --value edgepose)
in_root journalctl -u edgepose --no-pager -o cat -n 6 | sed -u 's/^/   | /'
[ "$result" = success ] && [ "$status" = 0 ] || die "stop was not clean (Result=$result, ExecMainStatus=$status)"
in_root journalctl -u edgepose --no-pager -o cat | grep -q 'SIGTERM received: stopping' || die "no 'SIGTERM received' in the journal"
ok "stopped in ${took}s (TimeoutStopSec 20), exit status 0, Result=success, availability offline"

step "uninstall: deploy/uninstall.sh --purge leaves nothing behind"
in_root bash /root/edgepose-from/deploy/uninstall.sh --purge 2>&1 | sed -u 's/^/   | /'
snapshot > "$RUN/after.txt"
if ! diff "$RUN/before.txt" "$RUN/after.txt" > "$RUN/diff.txt"; then
    cat "$RUN/diff.txt" >&2; die "the root differs after uninstall"
fi
in_root id edgepose >/dev/null 2>&1 && die "user edgepose still exists"
left=$(in_root systemctl list-unit-files 'edgepose*' --no-legend 2>/dev/null | wc -l || true)
[ "$left" = 0 ] || die "unit files left: $left"
ok "file tree identical to before the install ($(wc -l < "$RUN/before.txt") paths compared), no user, no unit"

step "PASSED in $(( $(date +%s) - T0 ))s"
