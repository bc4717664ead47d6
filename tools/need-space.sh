# shellcheck shell=bash
# Sourced by tools/bootstrap.sh and tools/install-pi.sh: check the free space before installing.
# A full disk otherwise surfaces as a bare "ensurepip ... exit status 1" from venv, or as half a
# venv (on a device: HeartPi broken by its own update, with the SD card full of recordings).

# need_space DIR MB WHAT [ADVICE]: stop with a message a technician can act on when the file
# system holding DIR has less than MB megabytes free for WHAT; nothing is installed by then.
need_space() {
    local dir=$1 need_mb=$2 what=$3 advice=${4:-"old clones, ~/.cache/pip"} free_kb
    free_kb=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}') || free_kb=""
    case "$free_kb" in ''|*[!0-9]*) return 0 ;; esac  # df unreadable here: let the install try
    if [ $((free_kb / 1024)) -lt "$need_mb" ]; then
        echo "$(basename "$0" .sh): only $((free_kb / 1024)) MB free on $(df -P "$dir" | awk 'NR == 2 {print $6}');" \
             "installing $what needs about $need_mb MB. Free some space ($advice) and run this again." >&2
        exit 1
    fi
}
