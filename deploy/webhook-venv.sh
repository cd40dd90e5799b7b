#!/usr/bin/env bash
# A Python venv with the official Standard Webhooks library (PyPI
# `standardwebhooks`, pinned), for the webhook tests (tests/api/webhooks.rs
# runs it through tests/webhook_verify.py): signatures are checked by the
# library receivers use, not by our own code. Made once under
# target/webhook-venv and kept while the pin holds; python3-venv is
# installed with apt-get when missing and we are root (a fresh Debian has
# python3 without it). Prints the venv's python on stdout.
set -euo pipefail

say() { echo "webhook-venv: $*" >&2; }
root_dir=$(cd "$(dirname "$0")/.." && pwd)
venv="${CARGO_TARGET_DIR:-$root_dir/target}/webhook-venv"
version=1.3.0

. "$root_dir/deploy/python-venv.sh"
need_python_venv
stamp="$venv/.pin-$version"
if [ ! -f "$stamp" ]; then
    # Two test processes may get here at once: one makes it, the other waits.
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    if [ ! -f "$stamp" ]; then
        say "creating $venv (standardwebhooks $version)"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "standardwebhooks==$version" >&2
        touch "$stamp"
    fi
fi
echo "$venv/bin/python"
