#!/usr/bin/env bash
# `make test-proxies`: /v1/forward-auth behind a real nginx and a real Caddy,
# configured with docs/forward-auth.md's own blocks (between its "test-proxies: nginx"
# and "test-proxies: caddy" markers, ports and the secret substituted), so
# that the documentation cannot drift from what works.
#   1. nginx and caddy installed with apt-get when missing (root only; a
#      policy-rc.d for the install, so that neither package starts its own
#      service on port 80);
#   2. a real upstream on loopback (python3) that logs every request it gets,
#      creditgate ($1) on a fresh database with a user `demo` of 50 credits,
#      the route /weather to the upstream, CREDITGATE_FORWARD_AUTH_SECRET set;
#   3. for nginx, then Caddy (each in the foreground with its own config,
#      pid, logs and data under a temp dir; the system's /etc/nginx and
#      units are not used): 100 requests at once on 50 credits → exactly 50
#      reach the upstream with X-Creditgate-User and without Authorization,
#      50 get 402, the 200s carry X-Credit-Remaining; no credentials → 401
#      through the proxy; /v1/forward-auth without the secret → 403; the
#      credit is set back to 50 between the two;
#   4. every process stopped and the database dropped, pass or fail.
set -euo pipefail

say() { echo "test-proxies: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: deploy/test-proxies.sh path/to/creditgate}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
started=$(date +%s)

# 1. The proxies.
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { say "missing ${need[*]}; install with: sudo apt-get install -y ${need[*]}"; exit 1; }
    say "installing ${need[*]} with apt-get"
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2 || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    [ $rc -eq 0 ] || exit $rc
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# 2. Ports, a temp dir, the database.
tmp=$(mktemp -d /tmp/cg-proxies.XXXXXX)
chmod 755 "$tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cg_port=$(free_port); up_port=$(free_port); nginx_port=$(free_port); caddy_port=$(free_port)
server=$(DATABASE_URL=${DATABASE_URL:-} "$root_dir/deploy/dev-db.sh")
db="cg_proxies_$$_$(date +%s)"
hostport=${server#*://}; hostport=${hostport#*@}
db_host=${hostport%%:*}; db_port=${hostport##*:}
[ "$db_port" = "$hostport" ] && db_port=3306
client=$(command -v mariadb || command -v mysql || true)
export DATABASE_URL="$server/$db"
export CREDITGATE_BIND="127.0.0.1:$cg_port"
export CREDITGATE_FORWARD_AUTH_SECRET
CREDITGATE_FORWARD_AUTH_SECRET=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
export CREDITGATE_TRUSTED_PROXIES=127.0.0.1
export RUST_LOG=${RUST_LOG:-warn}
unset CREDITGATE_ADMIN_TOKEN

pids=()
ok=
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$client" ]; then
        "$client" --no-defaults --protocol=tcp -h"$db_host" -P"$db_port" -uroot \
            -e "DROP DATABASE IF EXISTS \`$db\`" >&2 || say "could not drop database $db"
    fi
    if [ -n "$ok" ]; then
        rm -rf "$tmp"
    else
        say "logs kept in $tmp"
    fi
}
trap cleanup EXIT

wait_port() { # name port pid
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || fail "$1 exited at start; see $tmp"
        sleep 0.1
    done
    fail "$1 did not listen on $2 within 10 s; see $tmp"
}

# The upstream: one line per request (method, path, X-Creditgate-User, and
# whether an Authorization header reached it), then 200.
cat >"$tmp/upstream.py" <<'PY'
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    def answer(self):
        with lock:
            log.write("%s %s user=%s auth=%s\n" % (self.command, self.path,
                self.headers.get("X-Creditgate-User", "-"),
                "yes" if "Authorization" in self.headers else "no"))
        body = b'{"weather":"sunny"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
: >"$tmp/upstream.log"
python3 "$tmp/upstream.py" "$up_port" "$tmp/upstream.log" 2>"$tmp/upstream.err" &
pids+=($!)
wait_port upstream "$up_port" "${pids[-1]}"

"$bin" migrate >&2 2>"$tmp/migrate.log" || fail "migrate failed; see $tmp/migrate.log"
token=$("$bin" user add demo --credit 50 2>/dev/null)
"$bin" route add /weather --upstream "http://127.0.0.1:$up_port" --cost 1 >/dev/null
"$bin" serve 2>"$tmp/creditgate.log" &
pids+=($!)
wait_port creditgate "$cg_port" "${pids[-1]}"
say "upstream :$up_port, creditgate :$cg_port on database $db"

# The docs' block between the markers, fences dropped, with this run's
# ports and secret.
readme_block() { # name
    awk -v b="<!-- test-proxies: $1 begin" -v e="<!-- test-proxies: $1 end" '
        index($0, b) == 1 { on = 1; next }
        index($0, e) == 1 { on = 0 }
        on && !/^```/ { print }' "$root_dir/docs/forward-auth.md"
}
substitute() { # proxy_port
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$1/g" \
        -e "s/127\.0\.0\.1:5000/127.0.0.1:$cg_port/g" \
        -e "s/127\.0\.0\.1:8000/127.0.0.1:$up_port/g" \
        -e "s/\"CHANGE-ME\"/\"$CREDITGATE_FORWARD_AUTH_SECRET\"/g"
}

# 100 requests at once through the proxy; prints "status has-credit-header
# error-code" per answer.
burst() { # base_url
    python3 - "$1" "$token" <<'PY'
import json, sys, threading, urllib.request, urllib.error
base, token = sys.argv[1], sys.argv[2]
out, lock = [], threading.Lock()
barrier = threading.Barrier(100)
def one(i):
    req = urllib.request.Request("%s/weather/today/%d" % (base, i),
        headers={"Authorization": "Bearer demo:" + token})
    barrier.wait()
    try:
        r = urllib.request.urlopen(req, timeout=60)
        status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    code = "-"
    if status != 200:
        try:
            code = json.loads(body)["error"]
        except Exception:
            code = "not-json"
    with lock:
        out.append("%d %s %s" % (status, "credit" if headers.get("X-Credit-Remaining") else "nocredit", code))
threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(out))
PY
}

check_proxy() { # name base_url
    local name=$1 base=$2 answers before reached n
    before=$(wc -l <"$tmp/upstream.log")
    answers=$(burst "$base")
    reached=$(tail -n +"$((before + 1))" "$tmp/upstream.log")
    n=$(grep -c . <<<"$reached" || true)
    local s200 s402
    s200=$(grep -c '^200 credit -$' <<<"$answers" || true)
    s402=$(grep -c '^402 [a-z]* insufficient_credit$' <<<"$answers" || true)
    say "$name: $s200 × 200 (with X-Credit-Remaining), $s402 × 402, $n reached the upstream"
    [ "$s200" -eq 50 ] && [ "$s402" -eq 50 ] || fail "$name: expected 50 × 200 and 50 × 402, got:
$(sort <<<"$answers" | uniq -c)"
    [ "$n" -eq 50 ] || fail "$name: $n requests reached the upstream, not 50"
    [ "$(grep -c ' user=demo auth=no$' <<<"$reached")" -eq 50 ] ||
        fail "$name: the upstream did not get X-Creditgate-User: demo without Authorization:
$reached"
    local credit
    # awk reads to the end: the binary must not write into a closed pipe.
    credit=$("$bin" user show demo 2>/dev/null | awk '$1 == "credit:" { c = $2 } END { print c }')
    [ "$credit" = 0 ] || fail "$name: credit left is '$credit', not 0"
    # No credentials: 401 through the proxy, nothing reaches the upstream.
    local status
    before=$(wc -l <"$tmp/upstream.log")
    status=$(curl -s -o "$tmp/401.json" -w '%{http_code}' "$base/weather/today")
    [ "$status" = 401 ] || fail "$name: no credentials answered $status, not 401"
    grep -q '"unauthorized"' "$tmp/401.json" || fail "$name: 401 body: $(cat "$tmp/401.json")"
    [ "$(wc -l <"$tmp/upstream.log")" -eq "$before" ] || fail "$name: a 401 reached the upstream"
    # The endpoint itself, without the secret: 403.
    status=$(curl -s -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer demo:$token" -H 'X-Original-Method: GET' \
        -H 'X-Original-URI: /weather/x' "http://127.0.0.1:$cg_port/v1/forward-auth")
    [ "$status" = 403 ] || fail "$name: /v1/forward-auth without the secret answered $status, not 403"
    say "$name: no credentials → 401, direct call without the secret → 403"
}

# 3a. nginx, in the foreground, everything under $tmp/nginx.
mkdir -p "$tmp/nginx/temp"
chmod 777 "$tmp/nginx/temp"
readme_block nginx | substitute "$nginx_port" >"$tmp/nginx/site.conf"
grep -q "listen 127.0.0.1:$nginx_port" "$tmp/nginx/site.conf" || fail "no nginx block in docs/forward-auth.md"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log $tmp/nginx/access.log;
    client_body_temp_path $tmp/nginx/temp/body;
    proxy_temp_path $tmp/nginx/temp/proxy;
    fastcgi_temp_path $tmp/nginx/temp/fastcgi;
    uwsgi_temp_path $tmp/nginx/temp/uwsgi;
    scgi_temp_path $tmp/nginx/temp/scgi;
    include $tmp/nginx/site.conf;
}
CONF
"$nginx_bin" -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port nginx "$nginx_port" "${pids[-1]}"
check_proxy nginx "http://127.0.0.1:$nginx_port"

"$bin" user credit demo --set 50 >/dev/null

# 3b. Caddy, in the foreground, no admin endpoint, its data under $tmp/caddy.
mkdir -p "$tmp/caddy"
{
    printf '{\n\tadmin off\n\tauto_https off\n}\n\n'
    readme_block caddy | substitute "$caddy_port"
} >"$tmp/caddy/Caddyfile"
grep -q "127.0.0.1:$caddy_port" "$tmp/caddy/Caddyfile" || fail "no caddy block in docs/forward-auth.md"
HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy/data" XDG_CONFIG_HOME="$tmp/caddy/config" \
    caddy run --adapter caddyfile --config "$tmp/caddy/Caddyfile" 2>"$tmp/caddy/caddy.log" &
pids+=($!)
wait_port caddy "$caddy_port" "${pids[-1]}"
check_proxy caddy "http://127.0.0.1:$caddy_port"

ok=1
say "passed in $(( $(date +%s) - started )) s"
