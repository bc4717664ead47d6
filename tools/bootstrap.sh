#!/usr/bin/env bash
# Set up HeartPi on Debian 12 / Raspberry Pi OS Bookworm (Python 3.11) and run it.
#
#   tools/bootstrap.sh run   [heartpi demo args]   system packages, .venv, the simulated device + web page
#   tools/bootstrap.sh test  [pytest args]         the same plus test tools, then the whole test suite
#
# Safe to re-run: packages and venvs are only installed when missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
shift || true

apt_packages=(python3-venv python3-dev portaudio19-dev libasound2-plugins alsa-utils openssl tzdata)
if [ "$mode" = test ]; then
    # chromium: browser tests; systemd: systemd-analyze for the units; espeak-ng: speech samples
    apt_packages+=(chromium systemd espeak-ng)
fi

# shellcheck source=tools/need-space.sh
source tools/need-space.sh

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "bootstrap: please install these system packages: ${missing[*]}" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    need_space . 800 "system packages (${missing[*]})"  # Chromium's the largest: ~350 MB installed
    echo "bootstrap: installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    # with recommends: Chromium's fonts come that way (the checked recipe installs it so)
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "bootstrap: HeartPi needs Python 3.11 or newer" >&2; exit 1; }
import sys
sys.exit(sys.version_info < (3, 11))
PY

# install_venv DIR STAMP-KEY FRESH-MB PIP-ARGS...: (re)install when setup.cfg changed since the last
# run; FRESH-MB is the room a new venv takes with pip's unpacking (an update needs far less)
install_venv() {
    local dir=$1 key=$2 fresh_mb=$3
    shift 3
    local stamp="$dir/.heartpi-$key"
    local want
    # the package list matters too: an editable install maps the top-level packages it saw
    want=$( (cat setup.cfg pyproject.toml tools/bootstrap.sh; ls -1 ./*/__init__.py) | sha256sum | cut -c1-16)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        if [ -x "$dir/bin/python" ]; then
            need_space . 300 "updates to the Python packages in $dir"
        else
            need_space . "$fresh_mb" "the Python packages into a new $dir"
            "$python" -m venv "$dir"
        fi
        echo "bootstrap: installing Python packages into $dir (first run takes a few minutes)"
        "$dir/bin/pip" install -q --disable-pip-version-check "$@"
        echo "$want" > "$stamp"
    fi
}

case "$mode" in
    run)
        install_venv .venv run 1000 -e .  # 420 MB; pip unpacks and builds PyAudio beside it
        exec .venv/bin/heartpi demo "$@"
        ;;
    test)
        install_venv .venv test 3000 -e ".[test,train]"  # 2.3 GB, TensorFlow the most
        # The second supported TFLite runtime (tflite-runtime 2.14 needs numpy<2): its own venv,
        # used by tests/test_runtimes.py to classify with both interpreters (250 MB).
        install_venv .venv-tflite tflite 400 "numpy<2" "scipy<1.14" "tflite-runtime==2.14.*"
        install_venv .venv-tflite project 400 --no-deps -e .
        export PYTHONDONTWRITEBYTECODE=1
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: tools/bootstrap.sh run|test [args]" >&2
        exit 2
        ;;
esac
