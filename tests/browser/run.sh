#!/usr/bin/env bash
# `make test-browser`: the operator console in a real headless Chromium.
# Builds the binary, makes a fresh uniquely named database on the server
# deploy/dev-db.sh finds, seeds it with the CLI and a few paid requests,
# starts the real binary on a free port with an admin token, runs the
# node tests (tests/browser/*.test.mjs), and always stops the server and
# drops the database, pass or fail.
set -euo pipefail

say() { echo "test-browser: $*" >&2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CARGO=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-$root/target}

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "no /usr/bin/chromium. Install it with:  sudo apt-get install -y chromium"
        exit 1
    fi
    say "installing chromium with apt-get (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium >&2
fi

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
$CARGO build >&2
bin=$target_dir/debug/creditgate

server=$(deploy/dev-db.sh)
db="cg_browser_$$_$(date +%s)"
export DATABASE_URL="$server/$db"
sql() {
    local hostport=${server#*://}; hostport=${hostport#*@}
    local client; client=$(command -v mariadb || command -v mysql)
    "$client" --no-defaults --protocol=tcp -h"${hostport%%:*}" -P"${hostport##*:}" -uroot "$@"
}

pid=""
cleanup() {
    local rc=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    sql -e "DROP DATABASE IF EXISTS \`$db\`" || say "could not drop database $db"
    exit $rc
}
trap cleanup EXIT

say "database $db"
"$bin" migrate >&2
# alice: below 10 % of her allowance (the overview lists her); bob: plenty
# (and, once the server runs, 7 of it held); carol: disabled.
alice=$("$bin" user add alice --credit 50 --monthly 1000 --email alice@example.org)
"$bin" user add bob --credit 500 >/dev/null
"$bin" user add carol --credit 5 >/dev/null
"$bin" user disable carol >&2
# A key of bob's that expires at once: the user page marks it expired.
"$bin" key add bob --label stale --ttl 1s >/dev/null
# Usage on two earlier days, as the request path would have written it
# (usage and balance together, so the ledger still adds up).
for days_ago in 3 12; do
    sql "$db" -e "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits)
        SELECT id, UTC_DATE() - INTERVAL $days_ago DAY, 'bank:BOFA', 2, 2 FROM users WHERE username = 'bob';
        UPDATE users SET credit = credit - 2 WHERE username = 'bob';"
done

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
admin_token="cg_admin_$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
base="http://127.0.0.1:$port"
log=$target_dir/console-shots/server.log
mkdir -p "$(dirname "$log")"
CREDITGATE_BIND="127.0.0.1:$port" CREDITGATE_ADMIN_TOKEN="$admin_token" RUST_LOG=info \
    "$bin" serve >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { say "the server died; see $log"; exit 1; }
    sleep 0.1
done

paid=3
for _ in $(seq 1 $paid); do
    curl -fsS -o /dev/null -H "Authorization: Bearer alice:$alice" "$base/api/v1.0/banks_data/BOFA/"
done

# An open hold on bob, placed as a service does (POST /v1/holds): his page
# lists it. An hour, so that it stays open through the run.
svc=$("$bin" service add browser --scopes charge)
hold_id=$(curl -fsS -H "Authorization: Bearer $svc" -H 'Content-Type: application/json' \
    -d '{"user":"bob","amount":7,"endpoint":"llm:tokens","ttl_secs":3600}' "$base/v1/holds" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).hold.id))')

say "server $base (log: $log)"
cd tests/browser
CONSOLE_URL=$base ADMIN_TOKEN=$admin_token SHOTS_DIR=$target_dir/console-shots \
    SEED_USAGE_DAYS=3 SEED_PAID_TODAY=$paid ALICE_TOKEN=$alice SEED_HOLD_ID=$hold_id \
    node --test
