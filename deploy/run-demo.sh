#!/usr/bin/env bash
# `make run`: migrate, make sure a `demo` user exists (a new token each run,
# since tokens are shown only once), make sure the gateway route /files
# exists, write the shell settings of this run to an env file (the README's
# quick start sources it), print what to try, and serve in the foreground
# until Ctrl-C.
#
#   CREDITGATE_BIND           where to listen (127.0.0.1:5000)
#   CREDITGATE_DEMO_UPSTREAM  where /files forwards (http://127.0.0.1:8080);
#                             set it to move an existing /files route
#   CREDITGATE_DEMO_ENV       the env file (target/demo.env)
#   CREDITGATE_ADMIN_TOKEN    the admin token (made up for the run when unset)
set -euo pipefail
bin=${1:-target/release/creditgate}
bin_dir=$(cd "$(dirname "$bin")" && pwd)
export DATABASE_URL
export CREDITGATE_BIND=${CREDITGATE_BIND:-127.0.0.1:5000}
export CREDITGATE_ADMIN_TOKEN=${CREDITGATE_ADMIN_TOKEN:-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')}
env_file=${CREDITGATE_DEMO_ENV:-target/demo.env}

"$bin" migrate
if "$bin" user show demo >/dev/null 2>&1; then
    token=$("$bin" user rotate demo 2>/dev/null)
    "$bin" user credit demo --set 100 >/dev/null
    note="existing demo user: new token, credit reset to 100"
else
    token=$("$bin" user add demo --credit 100 --monthly 100 2>/dev/null)
    note="new demo user with 100 credits and a monthly allowance of 100"
fi

# The gateway route /files. An existing one is kept as it is, unless
# CREDITGATE_DEMO_UPSTREAM asks for another upstream: then it is moved.
# Either way the banner says where it really points.
wanted=${CREDITGATE_DEMO_UPSTREAM:-http://127.0.0.1:8080}
current=$("$bin" route list --json | python3 -c '
import json, sys
print(next((r["upstream"] for r in json.load(sys.stdin)["routes"] if r["prefix"] == "/files"), ""))')
if [ -z "$current" ]; then
    "$bin" route add /files --upstream "$wanted" --cost 1 --strip-prefix 2>/dev/null
    route_note="added the route /files -> $wanted"
elif [ "$current" = "$wanted" ] || [ -z "${CREDITGATE_DEMO_UPSTREAM:-}" ]; then
    route_note="the route /files -> $current was there already (CREDITGATE_DEMO_UPSTREAM moves it)"
    wanted=$current
else
    "$bin" route remove /files 2>/dev/null
    "$bin" route add /files --upstream "$wanted" --cost 1 --strip-prefix 2>/dev/null
    route_note="moved the route /files from $current to $wanted"
fi
upstream=$wanted
# The port the quick start's `python3 -m http.server` should take.
upstream_port=$(python3 -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(u.port or (443 if u.scheme == "https" else 80))' "$upstream")

# A service token for metering from code (/v1/charge, /v1/holds). Tokens
# are shown once and a service name is never reused, so each run makes one.
service="demo-backend-$(date +%Y%m%d%H%M%S)-$$"
svc=$("$bin" service add "$service" --scopes charge,read 2>/dev/null)
base="http://$CREDITGATE_BIND"

# What a second terminal needs: the quick start's `source target/demo.env`.
# Secrets inside, so only the owner may read it.
mkdir -p "$(dirname "$env_file")"
(
    umask 077
    q() { printf "%q" "$1"; }
    cat >"$env_file" <<ENV
# Written by make run ($(date -u +%Y-%m-%dT%H:%M:%SZ)): the settings of that run.
# In another terminal: source $env_file
export PATH=$(q "$bin_dir"):\$PATH
export DATABASE_URL=$(q "$DATABASE_URL")
export CG=$(q "$base")
export TOKEN=$(q "$token")
export SVC=$(q "$svc")
export CREDITGATE_ADMIN_TOKEN=$(q "$CREDITGATE_ADMIN_TOKEN")
export ADMIN=$(q "Authorization: Bearer $CREDITGATE_ADMIN_TOKEN")
export UPSTREAM_PORT=$upstream_port
ENV
)

cat <<MSG

  creditgate on $base ($note)
  database:     ${DATABASE_URL%%\?*}
  gateway:      $route_note

  In another terminal, from this folder (see README.md, "Quick start"):
    source $env_file        # PATH, CG, TOKEN, SVC, ADMIN, DATABASE_URL, UPSTREAM_PORT
    curl -s -u "demo:\$TOKEN" \$CG/api/v1.0/banks_data/BOFA/      # 1 credit; then 402 when spent
    curl -s -u "demo:\$TOKEN" \$CG/api/v1.0/credit
    python3 -m http.server \$UPSTREAM_PORT --bind 127.0.0.1 &     # an upstream for /files
    curl -si -u "demo:\$TOKEN" \$CG/files/                        # metered and forwarded
    creditgate user show demo

  Operator console: $base/console/  (log in with the admin token below)
  Admin token for this run: $CREDITGATE_ADMIN_TOKEN

  Ctrl-C stops the server.

MSG
exec "$bin" serve
