#!/usr/bin/env bash
# Remove the edgepose service installed by deploy/install.sh.
#
#   sudo deploy/uninstall.sh [--purge]
#
# Stops and disables the service and removes the unit, its drop-ins, the
# virtualenv in /opt/edgepose and its /usr/local/bin/edgepose link.  Keeps
# /etc/edgepose (config), /var/lib/edgepose (models) and the `edgepose`
# system user unless --purge.  apt packages the
# installer added (python3-venv; on a Pi python3-numpy, python3-systemd,
# python3-picamera2; mosquitto with --with-mosquitto, and its
# /etc/mosquitto/conf.d/edgepose-localhost.conf on mosquitto 1.x) are left
# alone: other software may use them (remove them with apt).
set -euo pipefail

PURGE=0
for a in "$@"; do
    case "$a" in
        --purge) PURGE=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;  # the header comment
        *) echo "edgepose-uninstall: error: unknown option $a (use --purge or --help)" >&2; exit 64 ;;
    esac
done
say() { echo "edgepose-uninstall: $*"; }
[ "$(id -u)" = 0 ] || { echo "edgepose-uninstall: error: must run as root" >&2; exit 69; }

UNIT=/etc/systemd/system/edgepose.service
RUNNING=0; [ -d /run/systemd/system ] && RUNNING=1
if command -v systemctl >/dev/null; then
    if [ "$RUNNING" = 1 ]; then
        systemctl disable --now edgepose.service >/dev/null 2>&1 || true
    else
        systemctl disable edgepose.service >/dev/null 2>&1 || true
    fi
fi
rm -f "$UNIT"
rm -rf /etc/systemd/system/edgepose.service.d
if [ "$RUNNING" = 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed edgepose.service >/dev/null 2>&1 || true
fi
say "service stopped, disabled and removed"
LINK=/usr/local/bin/edgepose
if [ "$(readlink "$LINK" 2>/dev/null || true)" = /opt/edgepose/venv/bin/edgepose ]; then
    rm -f "$LINK"
    say "removed $LINK"
fi
rm -rf /opt/edgepose
say "removed /opt/edgepose"
if [ "$PURGE" = 1 ]; then
    rm -rf /etc/edgepose /var/lib/edgepose
    if id edgepose >/dev/null 2>&1; then userdel edgepose; fi
    if getent group edgepose >/dev/null; then groupdel edgepose; fi
    say "purged /etc/edgepose, /var/lib/edgepose and the edgepose user"
else
    say "kept /etc/edgepose (config), /var/lib/edgepose (models) and the edgepose user; --purge removes them"
fi
