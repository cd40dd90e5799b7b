#!/usr/bin/env bash
# Instructions per paid request, counted by callgrind (exact and repeatable,
# unlike wall time on a shared 2-core machine). Runs BIN (default the release
# build) under valgrind twice, with 200 and with 1,200 paid bank requests over
# one keep-alive connection, and prints (total(1200) - total(200)) / 1000, so
# that start-up and shut-down cancel out.
#
#   benches/callgrind.sh [BIN]                      # the bank route
#   CREDITGATE_COALESCE=on benches/callgrind.sh     # with coalescing on
#
# Needs valgrind (apt-get install valgrind) and python3; uses the database
# server of deploy/dev-db.sh, database cg_callgrind (dropped first), port 5077.
# The callgrind files stay in target/callgrind/ for callgrind_annotate.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/creditgate}
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$bin" ] || { echo "callgrind.sh: no $bin; run cargo build --release" >&2; exit 1; }
server=$("$root/deploy/dev-db.sh")
out=$root/target/callgrind
mkdir -p "$out"
export DATABASE_URL="$server/cg_callgrind?prefer_socket=false"
export CREDITGATE_BIND=127.0.0.1:5077
export CREDITGATE_ADMIN_TOKEN=callgrind-admin-token-0123456789

run() {
    local n=$1 token pid
    mariadb --no-defaults -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cg_callgrind" 2>/dev/null \
        || mysql -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cg_callgrind"
    "$bin" migrate >/dev/null 2>&1
    token=$("$bin" user add callgrind --credit 100000000 2>/dev/null)
    valgrind --tool=callgrind --callgrind-out-file="$out/bank-$n.out" "$bin" serve \
        >"$out/serve-$n.log" 2>&1 &
    pid=$!
    python3 - "$n" "$token" <<'PY'
import http.client, sys, time
n, token = int(sys.argv[1]), sys.argv[2]
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", 5077); c.request("GET", "/health"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.2)
c = http.client.HTTPConnection("127.0.0.1", 5077)
for _ in range(n):
    c.request("GET", "/api/v1.0/banks_data/BOFA/", headers={"Authorization": "Bearer callgrind:" + token})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate "$out/bank-$n.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
small=$(run 200)
large=$(run 1200)
echo "instructions per paid request: $(( (large - small) / 1000 ))  (200: $small, 1200: $large)"
