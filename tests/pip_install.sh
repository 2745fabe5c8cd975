# Sourced by the set-up scripts that install a pinned PyPI package into the virtual
# environment tests/python/setup.sh creates at <target>/python-venv (<target> is
# $CARGO_TARGET_DIR if set, else ./target, as for cargo).
#
# pip_install LOG_NAME DIST_NAME PACKAGE VERSION: installs PACKAGE==VERSION unless its
# metadata directory (DIST_NAME-VERSION.dist-info) is there already (no Python start-up).

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/python-venv"

pip_install() {
    local name=$1 dist=$2 package=$3 version=$4
    if [ ! -x "$venv/bin/python" ]; then
        bash "$root/tests/python/setup.sh"
    fi
    if ! ls -d "$venv"/lib/python3*/site-packages/"$dist-$version".dist-info >/dev/null 2>&1; then
        echo "$name set-up: installing $package $version" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$package==$version"
    fi
}
