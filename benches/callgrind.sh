#!/usr/bin/env bash
# Instructions per paid request, counted by callgrind (exact and repeatable,
# unlike wall time on a shared 2-core machine). Runs BIN (default the release
# build) under valgrind twice, with 200 and with 1,200 paid bank requests over
# one keep-alive connection, and prints (total(1200) - total(200)) / 1000, so
# that start-up and shut-down cancel out.
#
#   benches/callgrind.sh [BIN]                      # the bank route
#   CREDITGATE_COALESCE=on benches/callgrind.sh     # with coalescing on
#   CALLGRIND_CALL=charge benches/callgrind.sh      # POST /v1/charge (cost 1)
#   CALLGRIND_CALL=hold benches/callgrind.sh        # a hold of 2 and its capture at 1
#   CALLGRIND_CALL=gateway benches/callgrind.sh     # a fixed-price gateway route (cost 1)
#   CALLGRIND_CALL=priced benches/callgrind.sh      # the same route priced by its upstream (max_cost 2)
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
call=${CALLGRIND_CALL:-bank}

run() {
    local n=$1 token pid
    mariadb --no-defaults -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cg_callgrind" 2>/dev/null \
        || mysql -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cg_callgrind"
    "$bin" migrate >/dev/null 2>&1
    token=$("$bin" user add callgrind --credit 100000000 2>/dev/null)
    svc=-
    case "$call" in
    charge|hold) svc=$("$bin" service add callgrind --scopes charge 2>/dev/null) ;;
    gateway) "$bin" route add /up --upstream http://127.0.0.1:5078 --cost 1 --strip-prefix >/dev/null 2>&1 ;;
    priced) "$bin" route add /up --upstream http://127.0.0.1:5078 --cost 1 --max-cost 2 --strip-prefix >/dev/null 2>&1 ;;
    esac
    valgrind --tool=callgrind --callgrind-out-file="$out/bank-$n.out" "$bin" serve \
        >"$out/serve-$n.log" 2>&1 &
    pid=$!
    python3 - "$n" "$token" "$call" "$svc" <<'PY'
import http.client, json, sys, time
n, token, call, svc = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def post(c, path, body):
    c.request("POST", path, body=json.dumps(body),
              headers={"Authorization": "Bearer " + svc, "Content-Type": "application/json"})
    r = c.getresponse(); answer = json.loads(r.read())
    assert r.status in (200, 201) and answer.get("valid", True), answer
    return answer
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", 5077); c.request("GET", "/health"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.2)
c = http.client.HTTPConnection("127.0.0.1", 5077)
for _ in range(n):
    if call == "charge":
        post(c, "/v1/charge", {"user": "callgrind", "cost": 1})
    elif call in ("gateway", "priced"):
        c.request("GET", "/up/", headers={"Authorization": "Bearer callgrind:" + token})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
    elif call == "hold":
        hold = post(c, "/v1/holds", {"user": "callgrind", "amount": 2})
        post(c, "/v1/holds/%d/capture" % hold["hold"]["id"], {"amount": 1})
    else:
        c.request("GET", "/api/v1.0/banks_data/BOFA/", headers={"Authorization": "Bearer callgrind:" + token})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
PY
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate "$out/bank-$n.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
if [ "$call" = gateway ] || [ "$call" = priced ]; then
    # The upstream: a directory listing, in its own process (not counted).
    python3 -m http.server 5078 --bind 127.0.0.1 --directory "$out" >/dev/null 2>&1 &
    upstream=$!
    trap 'kill $upstream 2>/dev/null' EXIT
fi
small=$(run 200)
large=$(run 1200)
echo "instructions per paid $call call: $(( (large - small) / 1000 ))  (200: $small, 1200: $large)"
