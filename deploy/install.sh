#!/usr/bin/env bash
# Install edgepose as a systemd service (Raspberry Pi OS, Jetson, Debian/Ubuntu).
#
#   sudo deploy/install.sh [--camera SRC | --source SRC] [--broker HOST[:PORT]]
#                          [--model NAME] [--device ID] [--with-mosquitto]
#                          [--from DIR [--offline]] [--no-start] [--platform P]
#                          [--python PATH]
#
# Idempotent: run it again to upgrade (the venv is updated in place, the
# service restarted).  It never overwrites an existing /etc/edgepose/edgepose.toml.
# edgepose itself comes from --from DIR, else from the source checkout this
# script is part of (git clone), else from the package index.
#
#   --camera SRC, --source SRC  camera.source for a new config: 0, /dev/video0,
#                       csi://0 (Pi camera module / Jetson CSI), rtsp://..., a file
#   --broker HOST[:PORT]  MQTT broker for a new config (default localhost:1883; IPv6: [ADDR]:PORT)
#   --model NAME        model for a new config (cpm, hourglass, ...); fetched now
#   --device ID         device id in MQTT topics (default: host name)
#   --with-mosquitto    also install and start a local mosquitto broker (apt), on
#                       localhost only (mosquitto 1.x: via deploy/mosquitto-localhost.sh)
#   --from DIR          install edgepose from the newest edgepose-*.whl / *.tar.gz
#                       in DIR, and models from DIR/models (laid
#                       out <name>/model.tflite); dependencies still come from
#                       your pip index unless --offline
#   --offline           pip --no-index: DIR must also hold every dependency wheel
#                       (`pip download edgepose -d DIR` on a connected machine
#                       of the same architecture and Python)
#   --no-start          install and enable, but do not (re)start the service
#   --platform P        auto (default), pi, jetson or generic
#   --python PATH       interpreter for the venv (default python3; 3.9 or newer)
#
# Exit codes: 64 usage, 66 --from bundle missing, 69 missing prerequisite (not root, no systemd, Python
# too old, apt/pip failure, model not fetched or corrupt, mosquitto did not start), 78 bad config;
# 1 the service failed to start.
set -euo pipefail

PREFIX=/opt/edgepose
VENV=$PREFIX/venv
LINK=/usr/local/bin/edgepose
ETC=/etc/edgepose
CONFIG=$ETC/edgepose.toml
STATE=/var/lib/edgepose
MODELS=$STATE/models
UNIT=/etc/systemd/system/edgepose.service
DROPIN=/etc/systemd/system/edgepose.service.d
USER_NAME=edgepose
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

SOURCE="" BROKER="" MODEL="" DEVICE="" WITH_MOSQUITTO=0 FROM="" OFFLINE=0 NO_START=0
PLATFORM=auto PYTHON=python3

say() { echo "edgepose-install: $*"; }
die() { local code=$1; shift; echo "edgepose-install: error: $*" >&2; exit "$code"; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }  # the header comment

while [ $# -gt 0 ]; do
    case "$1" in
        --camera|--source) [ $# -ge 2 ] || die 64 "$1 needs a value"; SOURCE="$2"; shift ;;
        --broker) [ $# -ge 2 ] || die 64 "$1 needs HOST[:PORT]"; BROKER="$2"; shift ;;
        --model) [ $# -ge 2 ] || die 64 "$1 needs a name"; MODEL="$2"; shift ;;
        --device) [ $# -ge 2 ] || die 64 "$1 needs an id"; DEVICE="$2"; shift ;;
        --with-mosquitto) WITH_MOSQUITTO=1 ;;
        --from) [ $# -ge 2 ] || die 64 "$1 needs a directory"; FROM="$2"; shift ;;
        --offline) OFFLINE=1 ;;
        --no-start) NO_START=1 ;;
        --platform) [ $# -ge 2 ] || die 64 "$1 needs auto|pi|jetson|generic"; PLATFORM="$2"; shift ;;
        --python) [ $# -ge 2 ] || die 64 "$1 needs a path"; PYTHON="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die 64 "unknown option: $1" ;;
    esac
    shift
done
case "$PLATFORM" in auto|pi|jetson|generic) ;; *) die 64 "--platform must be auto, pi, jetson or generic" ;; esac
[ "$OFFLINE" = 0 ] || [ -n "$FROM" ] || die 64 "--offline needs --from DIR"
if [ -n "$BROKER" ]; then
    [[ "$BROKER" =~ ^[^:[:space:]]+(:[0-9]{1,5})?$ || "$BROKER" =~ ^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$ ]] ||
        die 64 "--broker must be HOST, HOST:PORT or [IPv6]:PORT, got '$BROKER'"
fi

# --- prerequisites ------------------------------------------------------------
[ "$(id -u)" = 0 ] || die 69 "must run as root: sudo $0 $*"
SYSTEMD_RUNNING=0
[ -d /run/systemd/system ] && SYSTEMD_RUNNING=1
command -v systemctl >/dev/null || die 69 "systemd is required (no systemctl found)"
if [ "$SYSTEMD_RUNNING" = 0 ] && [ "$NO_START" = 0 ]; then
    die 69 "systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)); " \
           "use --no-start to only install files (e.g. when building an image in a chroot)"
fi
if [ -n "$FROM" ]; then
    [ -d "$FROM" ] || die 66 "--from $FROM is not a directory"
    FROM="$(cd "$FROM" && pwd)"
fi
command -v "$PYTHON" >/dev/null || die 69 "$PYTHON not found; install Python 3.9 or newer (apt install python3)"
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die 69 "Python $PYVER is too old: edgepose needs 3.9 or newer (give one with --python PATH)"
# the interpreter's architecture (a 32-bit Raspberry Pi OS on a 64-bit kernel says aarch64 in uname)
MACHINE=$("$PYTHON" -c 'import platform, struct; m = platform.machine(); print("armv7l" if m in ("aarch64", "arm64") and struct.calcsize("P") == 4 else m)')
# shellcheck source=runtime.sh
. "$HERE/runtime.sh"

apt_install() {
    command -v apt-get >/dev/null || die 69 "need the packages $* but apt-get is not available"
    say "apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$@" >/dev/null; } \
        || die 69 "apt-get install $* failed"
}
apt_has() { command -v apt-cache >/dev/null && [ -n "$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)')" ]; }

# --- platform -----------------------------------------------------------------
if [ "$PLATFORM" = auto ]; then
    if [ -r /proc/device-tree/model ] && tr -d '\0' < /proc/device-tree/model | grep -qi 'raspberry pi'; then
        PLATFORM=pi
    elif [ -e /etc/nv_tegra_release ]; then
        PLATFORM=jetson
    else
        PLATFORM=generic
    fi
    HOW="detected"
else
    HOW="given with --platform"
fi
read -r BACKEND EXTRAS RUNTIME_REQ < <(runtime_plan "$PLATFORM" "$MACHINE" "$PYVER")
[ "$BACKEND" != - ] || BACKEND=""; [ "$EXTRAS" != - ] || EXTRAS=""; [ "$RUNTIME_REQ" != - ] || RUNTIME_REQ=""
case "$BACKEND" in
    litert) RUNTIME_NOTE="LiteRT 1.4 ($RUNTIME_REQ: XNNPACK runs int8 models)" ;;
    tflite-runtime) RUNTIME_NOTE="tflite-runtime 2.14 (no LiteRT 1.4 wheel for $MACHINE Python $PYVER; int8 models run without XNNPACK, slowly)" ;;
    *) RUNTIME_NOTE="LiteRT (ai-edge-litert) from PyPI" ;;
esac
case "$PLATFORM" in
    pi) say "platform: Raspberry Pi ($HOW$( [ -r /proc/device-tree/model ] && printf ': %s' "$(tr -d '\0' < /proc/device-tree/model)")); Python $PYVER"
        say "  venv with --system-site-packages (apt's python3-picamera2 for csi://N), $RUNTIME_NOTE with the system numpy" ;;
    jetson) say "platform: NVIDIA Jetson ($HOW$( [ -r /etc/nv_tegra_release ] && printf ': %s' "$(head -1 /etc/nv_tegra_release | cut -c1-60)")); Python $PYVER"
        say "  $RUNTIME_NOTE; JetPack's OpenCV (GStreamer, nvarguscamerasrc) is used for csi://N when present" ;;
    generic) say "platform: generic $(uname -m) Linux ($HOW); Python $PYVER"
        say "  isolated venv, LiteRT (ai-edge-litert) from PyPI" ;;
esac

# --- system packages ----------------------------------------------------------
PKGS=()
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || PKGS+=("python3-venv")
SYSTEM_SITE=0
CONSTRAINTS=""
if [ "$PLATFORM" = pi ]; then
    SYSTEM_SITE=1
    # apt's numpy 1.x (picamera2 is built against it; so is the tflite-runtime fallback); OpenCV >= 4.12
    # wants numpy 2
    CONSTRAINTS=$'numpy<2\nopencv-python-headless<4.12'
    "$PYTHON" -c 'import numpy' >/dev/null 2>&1 || PKGS+=("python3-numpy")
    "$PYTHON" -c 'import systemd.journal' >/dev/null 2>&1 || { apt_has python3-systemd && PKGS+=("python3-systemd"); }
    if ! "$PYTHON" -c 'import picamera2' >/dev/null 2>&1; then
        if apt_has python3-picamera2; then PKGS+=("python3-picamera2")
        else say "  note: python3-picamera2 is not available from apt here: csi://N will not work (USB/V4L2 cameras will)"; fi
    fi
elif [ "$PLATFORM" = jetson ]; then
    if "$PYTHON" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))' >/dev/null 2>&1; then
        SYSTEM_SITE=1
        CONSTRAINTS=$'numpy<2\nopencv-python-headless<4.12'
        JETSON_SYSTEM_CV2=1
        say "  using the system OpenCV with GStreamer (CSI cameras through nvarguscamerasrc)"
    else
        say "  note: no system OpenCV with GStreamer: csi://N will not work (USB/V4L2 cameras will)"
    fi
fi
NEW_MOSQUITTO=0
if [ "$WITH_MOSQUITTO" = 1 ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    PKGS+=("mosquitto")
    NEW_MOSQUITTO=1
fi
[ ${#PKGS[@]} -eq 0 ] || apt_install "${PKGS[@]}"

# --- user ---------------------------------------------------------------------
getent group video >/dev/null || groupadd --system video
if id "$USER_NAME" >/dev/null 2>&1; then
    say "user $USER_NAME exists"
else
    useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "edgepose pose sensor" "$USER_NAME"
    say "created system user $USER_NAME"
fi
usermod -a -G video "$USER_NAME"

# --- virtualenv ---------------------------------------------------------------
want_site=false; [ "$SYSTEM_SITE" = 1 ] && want_site=true
if [ -x "$VENV/bin/python" ] \
   && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ] \
   && grep -qi "^include-system-site-packages *= *$want_site" "$VENV/pyvenv.cfg"; then
    say "reusing the virtualenv $VENV"
else
    rm -rf "$VENV"
    mkdir -p "$PREFIX"
    if [ "$SYSTEM_SITE" = 1 ]; then
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
    say "created the virtualenv $VENV (system site packages: $want_site)"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIP_ARGS=(install --upgrade --upgrade-strategy only-if-needed)
if [ -n "$CONSTRAINTS" ]; then
    printf '%s\n' "$CONSTRAINTS" > "$PREFIX/constraints.txt"
    PIP_ARGS+=(--constraint "$PREFIX/constraints.txt")
else
    rm -f "$PREFIX/constraints.txt"
fi
if [ -n "$FROM" ]; then
    PKG=$(ls -1 "$FROM"/edgepose-*.whl "$FROM"/edgepose-*.tar.gz 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$PKG" ] || die 66 "no edgepose-*.whl or edgepose-*.tar.gz in $FROM (build one with: pip wheel --no-deps -w DIR .)"
    PIP_ARGS+=(--find-links "$FROM")
    [ "$OFFLINE" = 1 ] && PIP_ARGS+=(--no-index)
    SPEC="edgepose$EXTRAS @ file://$PKG"
    say "installing $(basename "$PKG")$EXTRAS into $VENV$( [ "$OFFLINE" = 1 ] && echo ' (offline)')"
elif [ -f "$HERE/../setup.py" ] && [ -d "$HERE/../edgepose" ]; then
    # run from a source checkout (git clone): install that code, built from a copy so that
    # pip's in-tree build leaves no root-owned files in the user's checkout
    SRC="$(cd "$HERE/.." && pwd)"
    BUILD_DIR=$(mktemp -d /tmp/edgepose-src.XXXXXX)
    trap 'rm -rf "$BUILD_DIR"' EXIT
    tar -C "$SRC" --exclude=./.git --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
        | tar -C "$BUILD_DIR" -xf -
    SPEC="edgepose$EXTRAS @ file://$BUILD_DIR"
    say "installing edgepose$EXTRAS from the source checkout $SRC into $VENV"
else
    SPEC="edgepose$EXTRAS"
    say "installing $SPEC from the package index into $VENV"
fi
install_edgepose() {  # SPEC [REQUIREMENT]
    [ -z "${2:-}" ] || say "  with $2"
    "${PIP[@]}" "${PIP_ARGS[@]}" "$@"
}
if ! install_edgepose "$SPEC" ${RUNTIME_REQ:+"$RUNTIME_REQ"}; then
    [ "$PLATFORM" = pi ] && [ "$BACKEND" = litert ] || die 69 "pip install $SPEC $RUNTIME_REQ failed (see the lines above)"
    # e.g. an offline bundle (--from DIR --offline) made before LiteRT was the Pi's runtime
    say "note: $RUNTIME_REQ could not be installed (see the lines above); falling back to tflite-runtime 2.14:"
    say "  int8 models run without XNNPACK (18-40x slower); add the LiteRT wheel and run the installer again"
    SPEC="${SPEC/edgepose/edgepose[tflite]}" BACKEND=tflite-runtime
    install_edgepose "$SPEC" || die 69 "pip install $SPEC failed (see the lines above)"
fi
if [ "${JETSON_SYSTEM_CV2:-0}" = 1 ]; then
    "${PIP[@]}" uninstall -y -q opencv-python-headless >/dev/null 2>&1 || true
fi
"$VENV/bin/edgepose" --version >/dev/null || die 69 "the installed edgepose does not run"
say "installed $("$VENV/bin/edgepose" --version)"
# the command on root's PATH (`sudo edgepose calibrate-fps --apply`, `edgepose sub`), unless another
# edgepose is already there
if [ "$(readlink "$LINK" 2>/dev/null || true)" = "$VENV/bin/edgepose" ] || { [ ! -e "$LINK" ] && [ ! -L "$LINK" ]; }; then
    ln -sfn "$VENV/bin/edgepose" "$LINK"
    say "linked $LINK -> $VENV/bin/edgepose"
else
    say "note: $LINK is not this installation's; run $VENV/bin/edgepose for the service's copy"
fi

# --- configuration ------------------------------------------------------------
install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE" "$MODELS"
if [ -e "$CONFIG" ]; then
    say "keeping the existing $CONFIG"
    for opt in SOURCE BROKER MODEL DEVICE; do
        [ -z "${!opt}" ] || say "  note: --$(echo "$opt" | tr 'A-Z' 'a-z') was not applied (edit $CONFIG, then: systemctl reload edgepose)"
    done
else
    tmp="$CONFIG.new.$$"
    "$VENV/bin/python" - "$HERE/edgepose.toml" "$tmp" "$SOURCE" "$MODEL" "$BROKER" "$DEVICE" "$BACKEND" <<'EOF'
import sys
import tomlkit
from edgepose.core.config import split_host_port
template, out, source, model, broker, device, backend = sys.argv[1:]
host, port = split_host_port(broker) if broker else ("", None)
doc = tomlkit.parse(open(template).read())
for section, key, value in (("camera", "source", source), ("model", "name", model), ("mqtt", "host", host),
                            ("mqtt", "port", "" if port is None else port), ("output", "device", device),
                            ("runtime", "backend", backend)):
    if value != "":
        doc[section][key] = value
open(out, "w").write(tomlkit.dumps(doc))
EOF
    chown root:"$USER_NAME" "$tmp"
    chmod 0640 "$tmp"
    mv "$tmp" "$CONFIG"
    say "wrote $CONFIG"
fi
# the effective config must load (exit 78 with the reason otherwise) and names the model to fetch
read -r CFG_MODEL CFG_MIRROR CFG_BACKEND < <("$VENV/bin/python" - "$CONFIG" <<'EOF'
import sys
from edgepose.core import config
from edgepose.core.errors import EdgeposeError
try:
    cfg = config.load(sys.argv[1], environ={})
except EdgeposeError as e:
    print(f"edgepose-install: error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
print(cfg.model.name, cfg.model.mirror or "-", cfg.runtime.backend)
EOF
) || die 78 "fix $CONFIG and run the installer again"
if [ -n "$BACKEND" ] && [ "$CFG_BACKEND" != auto ] && [ "$CFG_BACKEND" != "$BACKEND" ]; then
    say "note: $CONFIG says runtime.backend = \"$CFG_BACKEND\"; this installation's runtime is $BACKEND:"
    say "  set runtime.backend = \"$BACKEND\" there (int8 models need LiteRT for XNNPACK), then: systemctl restart edgepose"
fi

# --- model --------------------------------------------------------------------
MIRROR="$CFG_MIRROR"; [ "$MIRROR" = "-" ] && MIRROR=""
[ -n "$FROM" ] && [ -d "$FROM/models" ] && MIRROR="$FROM/models"
say "model $CFG_MODEL -> $MODELS${MIRROR:+ (from $MIRROR)}"
"$VENV/bin/python" - "$CFG_MODEL" "$MODELS" "$MIRROR" <<'EOF' || die 69 "could not fetch model $CFG_MODEL"
import sys
from pathlib import Path
from edgepose.models import registry
from edgepose.core.errors import EdgeposeError
name, cache, mirror = sys.argv[1:]
try:
    path = registry.resolve(name, cache_dir=Path(cache), mirror=mirror)
except EdgeposeError as e:
    print(f"edgepose-install: error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
print(f"edgepose-install:   {path}")
EOF
chown -R "$USER_NAME:$USER_NAME" "$STATE"

# --- broker -------------------------------------------------------------------
if [ "$WITH_MOSQUITTO" = 1 ]; then
    if [ "$NEW_MOSQUITTO" = 1 ] && [ -d /etc/mosquitto/conf.d ]; then  # 1.x (JetPack 5): localhost only
        wrote=$(bash "$HERE/mosquitto-localhost.sh" /etc/mosquitto/conf.d) || die 69 "cannot configure mosquitto"
        [ -z "$wrote" ] || { say "$wrote"; [ "$SYSTEMD_RUNNING" != 1 ] || systemctl restart mosquitto >/dev/null 2>&1 || true; }
    fi
    if [ "$SYSTEMD_RUNNING" = 1 ]; then systemctl enable --now mosquitto >/dev/null 2>&1 || die 69 "mosquitto did not start"
    else systemctl enable mosquitto >/dev/null 2>&1 || true; fi
    if [ "$NEW_MOSQUITTO" = 1 ]; then say "local mosquitto broker enabled (listens on localhost:1883)"
    else say "local mosquitto broker enabled (already installed: its configuration is left as it is)"; fi
fi

# --- systemd unit -------------------------------------------------------------
install -m 0644 "$HERE/edgepose.service" "$UNIT.new"
if cmp -s "$UNIT.new" "$UNIT"; then rm -f "$UNIT.new"; say "unit $UNIT unchanged"
else mv "$UNIT.new" "$UNIT"; say "installed $UNIT"; fi
if [ "$PLATFORM" = jetson ]; then
    install -d -m 0755 "$DROPIN"
    install -m 0644 "$HERE/jetson.conf" "$DROPIN/50-jetson.conf"
    say "installed $DROPIN/50-jetson.conf (Argus socket and nvhost/nvmap devices for CSI cameras)"
fi
if [ "$SYSTEMD_RUNNING" = 1 ]; then systemctl daemon-reload; fi
systemctl enable edgepose.service >/dev/null 2>&1 || die 69 "systemctl enable edgepose failed"
say "enabled edgepose.service (starts at boot)"

if [ "$NO_START" = 1 ]; then
    say "not starting (--no-start): sudo systemctl start edgepose"
    exit 0
fi
if systemctl is-active --quiet edgepose; then verb=restart; else verb=start; fi
say "systemctl $verb edgepose (waits for READY: model loaded and first frame decoded)"
if ! systemctl "$verb" edgepose; then
    journalctl -u edgepose -n 30 --no-pager >&2 || true
    die 1 "edgepose did not start; the log is above (journalctl -u edgepose)"
fi
say "running: $(systemctl show -p StatusText --value edgepose)"
say "logs: journalctl -u edgepose -f    config: $CONFIG    uninstall: $HERE/uninstall.sh"
