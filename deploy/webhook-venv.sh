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

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        say "python3 has no venv module; install it with: sudo apt-get install -y python3-venv"
        exit 1
    fi
    say "installing python3-venv with apt-get (once)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi
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
