# Sourced by the test set-up scripts: `as_root CMD...` runs a command as root, directly when
# we are root, else through sudo when there is one. The sourcing script defines `log`.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run '$*' (no sudo here); install it by hand and run again"
        exit 1
    fi
}
