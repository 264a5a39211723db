#!/usr/bin/env bash
# Keep a local mosquitto 1.x broker on localhost, as 2.x is by default.
#
#   deploy/mosquitto-localhost.sh CONF_DIR
#
# mosquitto 2.x (Debian 12, Raspberry Pi OS bookworm, Ubuntu 22.04+) listens on localhost only
# unless configured otherwise; 1.x (Ubuntu 20.04 / JetPack 5) listens on every interface with
# anonymous access.  For 1.x this writes CONF_DIR/edgepose-localhost.conf with
# `listener 1883 localhost` and prints one line; for 2.x, or if no mosquitto is found, it does
# nothing.  install.sh --with-mosquitto runs it (CONF_DIR /etc/mosquitto/conf.d) only for a broker it
# has just installed: an existing broker's configuration is left alone.
# Exit codes: 0 done (or nothing to do), 64 usage, 73 cannot write the file.
set -euo pipefail

[ $# -eq 1 ] && [ -d "$1" ] || { echo "usage: $0 CONF_DIR (an existing folder)" >&2; exit 64; }
MQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# `mosquitto -h` prints "mosquitto version X.Y.Z" first and exits 3
major=$({ "$MQ" -h 2>&1 || true; } | sed -n 's/^mosquitto version \([0-9][0-9]*\)\..*/\1/p' | head -n 1)
if [ -n "$major" ] && [ "$major" -lt 2 ]; then
    conf="$1/edgepose-localhost.conf"
    printf '%s\n' "# written by edgepose's deploy/install.sh --with-mosquitto: mosquitto $major.x listens" \
        "# on every interface by default; this keeps it on localhost, as mosquitto 2.x is." \
        "listener 1883 localhost" > "$conf" || { echo "cannot write $conf" >&2; exit 73; }
    echo "mosquitto $major.x: wrote $conf (listener 1883 localhost)"
fi
