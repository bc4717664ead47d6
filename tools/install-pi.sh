#!/usr/bin/env bash
# Install or update HeartPi on Raspberry Pi OS Bookworm 64-bit (Python 3.11).
#
#   sudo tools/install-pi.sh            install/update into /opt/heartpi, enable and (re)start services
#   tools/install-pi.sh --prefix DIR --no-apt --no-systemd     lay out the files under DIR only
#
# Safe to re-run for an update: the venv is upgraded in place, units are replaced, and
# nothing under /var/lib/heartpi (database, recordings, installed models) or /etc/heartpi
# (configuration, TLS certificate) is touched. Then run 'sudo heartpi provision'.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/
apt=1
use_systemd=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --no-apt) apt=0; shift ;;
        --no-systemd) use_systemd=0; shift ;;
        *) echo "usage: $0 [--prefix DIR] [--no-apt] [--no-systemd]" >&2; exit 2 ;;
    esac
done
prefix=${prefix%/}
say() { echo "install-pi: $*"; }
# shellcheck source=tools/need-space.sh
source "$src/tools/need-space.sh"
# The recordings share the SD card: what an install leaves must still let the box record
# (storage.min_free_mb, 100 MB by default), so that is added to each need below.
card_advice="export and delete old recordings: 'heartpi export', then 'heartpi prune --before YYYY-MM-DD'"

mkdir -p "$prefix/opt"
if [ "$apt" = 1 ]; then
    need_space "$prefix/opt" 300 "the system packages" "$card_advice"
    say "installing system packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv python3-dev portaudio19-dev libasound2-plugins alsa-utils openssl tzdata >/dev/null
fi

opt="$prefix/opt/heartpi"
if [ -x "$opt/venv/bin/python" ]; then  # an update: pip replaces what changed, old beside new a moment
    need_space "$prefix/opt" 400 "this update of HeartPi" "$card_advice"
else  # 420 MB of Python packages, with pip's unpacking and PyAudio's build beside them
    need_space "$prefix/opt" 1000 "HeartPi" "$card_advice"
fi
mkdir -p "$opt"
[ -x "$opt/venv/bin/python" ] || python3 -m venv "$opt/venv"
say "installing HeartPi $(grep -oP '__version__ = "\K[^"]+' "$src/heartpi/__init__.py") into $opt/venv"
# HEARTPI_PIP_ARGS lets tests lay out files without fetching dependencies (--no-deps).
# shellcheck disable=SC2086
"$opt/venv/bin/pip" install -q --disable-pip-version-check --upgrade ${HEARTPI_PIP_ARGS:-} "$src"
if [ "$(uname -m)" = aarch64 ] && [ -z "${HEARTPI_PIP_ARGS:-}" ]; then
    "$opt/venv/bin/pip" install -q --disable-pip-version-check lgpio  # gpiozero's pin driver on Pi 4/5
fi
install -m 0644 "$src/README.md" "$opt/README.md"

install -D -m 0644 "$src/systemd/heartpi-daemon.service" "$prefix/etc/systemd/system/heartpi-daemon.service"
install -D -m 0644 "$src/systemd/heartpi-web.service" "$prefix/etc/systemd/system/heartpi-web.service"
install -D -m 0644 "$src/systemd/heartpi-clock.service" "$prefix/etc/systemd/system/heartpi-clock.service"
install -D -m 0644 "$src/systemd/heartpi-clock.path" "$prefix/etc/systemd/system/heartpi-clock.path"
install -D -m 0644 "$src/systemd/heartpi-fhir-sync.service" "$prefix/etc/systemd/system/heartpi-fhir-sync.service"
install -D -m 0644 "$src/systemd/heartpi-fhir-sync.timer" "$prefix/etc/systemd/system/heartpi-fhir-sync.timer"
install -D -m 0644 "$src/systemd/heartpi-fhir-sync.path" "$prefix/etc/systemd/system/heartpi-fhir-sync.path"
install -D -m 0644 "$src/systemd/heartpi.sysusers.conf" "$prefix/usr/lib/sysusers.d/heartpi.conf"
install -D -m 0644 "$src/systemd/heartpi.tmpfiles.conf" "$prefix/usr/lib/tmpfiles.d/heartpi.conf"
install -D -m 0644 "$src/systemd/heartpi.sysctl.conf" "$prefix/etc/sysctl.d/60-heartpi.conf"
mkdir -p "$prefix/usr/local/bin"
ln -sfn /opt/heartpi/venv/bin/heartpi "$prefix/usr/local/bin/heartpi"

if [ "$use_systemd" = 1 ]; then
    systemd-sysusers
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/heartpi.conf
    sysctl -q --load /etc/sysctl.d/60-heartpi.conf
    systemctl daemon-reload
    systemctl enable -q heartpi-daemon.service heartpi-web.service heartpi-clock.path heartpi-fhir-sync.timer \
        heartpi-fhir-sync.path
    systemctl start heartpi-clock.path heartpi-fhir-sync.timer heartpi-fhir-sync.path
    if [ -e /etc/heartpi/heartpi.toml ]; then
        systemctl restart heartpi-daemon.service heartpi-web.service
        say "services restarted; check: journalctl -u heartpi-daemon -u heartpi-web -n 50"
    else
        say "next: sudo heartpi provision --admin-email you@clinic.example   (then the services start)"
    fi
fi
say "done"
