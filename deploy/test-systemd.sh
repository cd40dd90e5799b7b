#!/usr/bin/env bash
# make test-systemd: creditgate under a real systemd as PID 1.
#
# Boots a minimal Debian 12 tree (debootstrap, cached under
# target/systemd-test/) with `systemd-nspawn -b` on the host network, runs
# the install block of docs/running-as-a-service.md word for word inside it (the `$EDITOR` line
# writes this test's settings), then checks through `nsenter … systemctl`:
#   a good start returns only once /health answers; the watchdog is pinged;
#   priorities reach the journal and lines carry no second timestamp; no
#   token, admin token or database password is in the journal; stop exits
#   0; a start with the database unreachable fails and its reason shows
#   under `journalctl -p err`; a SIGKILLed main process comes back, and so
#   does a hung one (the watchdog); after /stopServer the unit stays
#   inactive.
# The database (its own name and user) is dropped and the container powered
# off, pass or fail. Needs root. Usage: deploy/test-systemd.sh BINARY
set -uo pipefail

say() { echo "test-systemd: $*" >&2; }
die() { say "$*"; exit 1; }

root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: deploy/test-systemd.sh path/to/creditgate}
[ -x "$bin" ] || die "no executable $bin (run cargo build first)"
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, systemd-nspawn, nsenter)"
work="$root_dir/target/systemd-test"
base="$work/bookworm"        # the cached debootstrap, never booted
tree="$work/root"            # this run's copy
machine="cg-systemd-$$"
failures=()
passed=0
leader=""

# ---- host tools, Debian tree, database ----

install_tools() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v curl >/dev/null || need+=(curl)
    command -v mariadb >/dev/null || command -v mysql >/dev/null || need+=(mariadb-client)
    [ ${#need[@]} -eq 0 ] && return 0
    say "installing ${need[*]} with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
}

# The Debian mirror this machine's apt uses (security and disabled lists
# left out), so debootstrap goes where apt already may.
apt_mirror() {
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -E '^(URIs:|deb )' | grep -oE '(https?|file)://[^ ]+' \
        | grep -v security | grep -E '/debian/?$' | head -n1)
    echo "${m:-http://deb.debian.org/debian}"
}

debian_tree() {
    if [ ! -f "$base/.complete" ]; then
        local mirror; mirror=$(apt_mirror)
        say "debootstrap bookworm from $mirror into $base (once; cached)"
        rm -rf "$base.tmp" "$base"
        debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
            bookworm "$base.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 \
            || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
        touch "$base.tmp/.complete" && mv "$base.tmp" "$base"
    fi
    rm -rf "$tree" && cp -a "$base" "$tree"
}

sql() { "$(command -v mariadb || command -v mysql)" --no-defaults --protocol=tcp -h"$db_host" -P"$db_port" -uroot -N -e "$1"; }

database() {
    local server; server=$("$root_dir/deploy/dev-db.sh") || die "no database server"
    local hostport=${server#*://}; hostport=${hostport#*@}
    db_host=${hostport%:*}; db_port=${hostport##*:}
    db_name="cg_systemd_$$"; db_user="cg_systemd_$$"
    db_pass="dbpw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    sql "CREATE DATABASE $db_name;
         CREATE USER '$db_user'@'%' IDENTIFIED BY '$db_pass';
         CREATE USER '$db_user'@'localhost' IDENTIFIED BY '$db_pass';
         GRANT ALL ON $db_name.* TO '$db_user'@'%';
         GRANT ALL ON $db_name.* TO '$db_user'@'localhost';" || die "cannot create the test database"
}

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    die "no free port"
}

cleanup() {
    if [ -n "${nspawn_pid:-}" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # poweroff inside; SIGTERM asks nspawn for the same if that fails.
        { [ -n "$leader" ] && in_ct systemctl poweroff >/dev/null 2>&1; } || kill -TERM "$nspawn_pid"
        for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$nspawn_pid" 2>/dev/null && { say "container did not power off; killing it"; kill -KILL "$nspawn_pid"; }
    fi
    if [ -n "${db_name:-}" ]; then
        sql "DROP DATABASE IF EXISTS $db_name; DROP USER IF EXISTS '$db_user'@'%';
             DROP USER IF EXISTS '$db_user'@'localhost';" || say "could not drop $db_name"
    fi
}

# ---- the container ----

in_ct() { nsenter -t "$leader" -a "$@"; }

# The install block of docs/running-as-a-service.md, its binary and deploy files, and an $EDITOR
# that writes this test's settings into the env file.
stage() {
    local src="$tree/root/src"
    mkdir -p "$src/target/release" "$src/deploy"
    cp "$bin" "$src/target/release/creditgate"
    cp "$root_dir/deploy/creditgate.service" "$root_dir/deploy/creditgate.env.example" "$src/deploy/"
    awk '/^## Running as a service/ {s=1} s && /^```sh/ {b=1; next} b && /^```/ {exit} b {print}' \
        "$root_dir/docs/running-as-a-service.md" >"$src/install.sh"
    grep -q 'systemctl enable --now creditgate' "$src/install.sh" || die "no install block found in docs/running-as-a-service.md"
    admin_token="admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    db_url="mysql://$db_user:$db_pass@$db_host:$db_port/$db_name"
    cat >"$src/edit-env" <<EOF
#!/bin/sh
# Writes over the example's values, keeping the file (and its mode).
set -e
{ grep -v -e '^DATABASE_URL=' -e '^CREDITGATE_BIND=' -e '^CREDITGATE_ADMIN_TOKEN=' "\$1"
  echo 'DATABASE_URL=$db_url'
  echo 'CREDITGATE_BIND=127.0.0.1:$http_port'
  echo 'CREDITGATE_ADMIN_TOKEN=$admin_token'
  echo 'CREDITGATE_MAIL_FROM=creditgate test <creditgate@test.invalid>'
  echo 'CREDITGATE_ALERT_TO=ops@test.invalid'
  echo 'CREDITGATE_DB_START_WAIT_SECS=3'
  echo 'CREDITGATE_HEARTBEAT_SECS=2'
} >/tmp/env.new
cat /tmp/env.new >"\$1" && rm /tmp/env.new
EOF
    chmod 0755 "$src/edit-env"
}

boot() {
    # On a host whose PID 1 is not systemd there is no machined to register
    # with and no unit to move into.
    systemd-nspawn -D "$tree" -M "$machine" -b --register=no --keep-unit \
        </dev/null >"$work/boot.log" 2>&1 &
    nspawn_pid=$!
    # The container's init: a child of nspawn in a new PID namespace (an
    # intermediate child comes and goes first).
    local own_ns; own_ns=$(readlink /proc/self/ns/pid)
    for _ in $(seq 1 100); do
        for p in $(ps -o pid= --ppid "$nspawn_pid"); do
            [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" != "$own_ns" ] \
                && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && leader=$p
        done
        [ -n "$leader" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] || { cat "$work/boot.log" >&2; die "systemd-nspawn did not start"; }
    # Until its init has made its bus socket, systemctl cannot connect.
    local state=""
    for _ in $(seq 1 120); do
        state=$(timeout 60 nsenter -t "$leader" -a systemctl is-system-running --wait 2>/dev/null)
        [ -n "$state" ] && break
        sleep 0.5
    done
    say "booted (leader pid $leader): $state"
    [ "$state" = running ] || [ "$state" = degraded ] || { tail -n 30 "$work/boot.log" >&2; die "boot did not finish"; }
}

# ---- the checks ----

fail() { failures+=("$*"); say "FAIL: $*"; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
show() { in_ct systemctl show creditgate -p "$1" --value; }
# Whole output first: `cmd | grep -q` under pipefail fails when grep quits
# early and cmd gets SIGPIPE.
has() { local out; out=$("${@:2}"); grep -q -- "$1" <<<"$out"; }
unit_log() { in_ct journalctl -u creditgate -o cat --no-pager "$@"; }
health() { curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$http_port/health"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
cg() { in_ct systemd-run --quiet --wait --pipe -p User=creditgate \
        -p EnvironmentFile=/etc/creditgate/creditgate.env /usr/local/bin/creditgate "$@"; }

# The docs' install block, then /health at once: `enable --now` returned only
# when the service said READY=1.
check_install_and_start() {
    local t0; t0=$(date +%s%N)
    if ! in_ct env EDITOR=/root/src/edit-env bash -c 'cd /root/src && bash -ex install.sh' >"$work/install.log" 2>&1; then
        tail -n 30 "$work/install.log" >&2; fail "the install block of docs/running-as-a-service.md failed (log: $work/install.log)"; return 1
    fi
    local code; code=$(health)
    [ "$code" = 200 ] && ok "install block + enable --now in $(ms_since "$t0") ms, /health 200 at once" \
        || { fail "/health answered '$code' right after enable --now returned"; return 1; }
    [ "$(show Type)" = notify ] || fail "unit Type is $(show Type), not notify"
    has 'Status: "listening on' in_ct systemctl status creditgate --no-pager \
        || fail "systemctl status shows no 'listening on' STATUS"
}

check_watchdog() {
    local first; first=$(show WatchdogTimestampMonotonic)
    sleep 5 # two heartbeat ticks (CREDITGATE_HEARTBEAT_SECS=2)
    local later; later=$(show WatchdogTimestampMonotonic)
    [ "$later" -gt "$first" ] && ok "watchdog pinged ($first -> $later)" \
        || fail "watchdog not pinged within 5 s ($first -> $later)"
}

# A user token over the query and the header (good and wrong), the admin
# token: none of them, nor the database password, may reach the journal.
check_secrets() {
    local token; token=$(cg user add alice --credit 5 2>>"$work/cli.log") || { fail "user add failed"; return; }
    [ -n "$token" ] || { fail "user add printed no token"; return; }
    local u="http://127.0.0.1:$http_port/api/v1.0/banks_data/bofa"
    curl -s -o /dev/null -m 5 "$u/?token=alice:$token"
    curl -s -o /dev/null -m 5 -H "Authorization: Bearer $token" "$u/"
    curl -s -o /dev/null -m 5 -H "Authorization: Bearer ${token}x" "$u/"
    curl -s -o /dev/null -m 5 -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$http_port/admin/v1/jobs"
    local journal; journal=$(in_ct journalctl --no-pager -o cat)
    for secret in "$token" "$admin_token" "$db_pass"; do
        grep -qF -- "$secret" <<<"$journal" && fail "a secret (${secret:0:6}…) is in the journal"
    done
    grep -q 'req=.*/banks_data/bofa/?token=\[redacted\]' <<<"$journal" \
        && ok "no token, admin token or password in the journal" \
        || fail "the requests were not logged (the secrets check saw nothing)"
}

check_priorities() {
    local line; line=$(unit_log | grep 'listening on http://' | head -n1)
    [[ "$line" == "[INFO  creditgate::app] creditgate "* ]] && ok "journal line without a timestamp: $line" \
        || fail "listening line is '$line' (expected no timestamp)"
    has 'listening on' unit_log -p info \
        || fail "the listening line is not at priority info or above"
    has 'listening on' unit_log -p warning \
        && fail "an info line shows under -p warning"
}

check_stop() {
    local t0; t0=$(date +%s%N)
    in_ct systemctl stop creditgate || fail "systemctl stop exited $?"
    local took; took=$(ms_since "$t0")
    local r; r="$(show Result) $(show ExecMainCode) $(show ExecMainStatus)"
    [ "$r" = "success 1 0" ] && ok "stop in $took ms, exit 0" \
        || fail "after stop: Result ExecMainCode ExecMainStatus = $r (want success 1 0)"
}

check_unreachable_database() {
    in_ct sed -i "s|@$db_host:$db_port/|@$db_host:1/|" /etc/creditgate/creditgate.env
    local t0; t0=$(date +%s%N)
    if timeout 60 nsenter -t "$leader" -a systemctl start creditgate 2>/dev/null; then
        fail "systemctl start succeeded with the database unreachable"
    else
        ok "start with the database unreachable failed after $(ms_since "$t0") ms"
    fi
    has 'start failed: database unavailable' unit_log -p err \
        && ok "the start failure shows under journalctl -p err" \
        || fail "no 'start failed' line under journalctl -p err"
    in_ct systemctl stop creditgate
    in_ct sed -i "s|@$db_host:1/|@$db_host:$db_port/|" /etc/creditgate/creditgate.env
    in_ct systemctl reset-failed creditgate
    t0=$(date +%s%N)
    in_ct systemctl start creditgate || fail "start after the database is back exited $?"
    local code; code=$(health)
    [ "$code" = 200 ] && ok "start to READY in $(ms_since "$t0") ms, /health 200 at once" \
        || fail "/health answered '$code' right after systemctl start returned"
}

check_crash_restart() {
    local before; before=$(show MainPID)
    in_ct systemctl kill -s KILL --kill-whom=main creditgate
    for _ in $(seq 1 30); do
        sleep 0.5
        [ "$(show ActiveState)" = active ] && [ "$(show MainPID)" != "$before" ] && break
    done
    [ "$(show ActiveState)" = active ] && [ "$(show MainPID)" != "$before" ] && [ "$(health)" = 200 ] \
        && ok "SIGKILLed main process $before came back as $(show MainPID) (restarts: $(show NRestarts))" \
        || fail "after SIGKILL: $(show ActiveState), MainPID $(show MainPID) (was $before)"
}

# A hung process (SIGSTOP) stops pinging: systemd kills it and restarts
# it. A drop-in shortens the watchdog (6 s, still twice the test's 2 s
# heartbeat) and the SIGABRT grace (a stopped process cannot act on it).
check_watchdog_restart() {
    local dropin=/etc/systemd/system/creditgate.service.d
    in_ct mkdir -p "$dropin"
    printf '[Service]\nWatchdogSec=6s\nTimeoutAbortSec=2s\n' | in_ct tee "$dropin/test.conf" >/dev/null
    in_ct systemctl daemon-reload && in_ct systemctl restart creditgate
    local before; before=$(show MainPID)
    in_ct systemctl kill -s STOP --kill-whom=main creditgate
    for _ in $(seq 1 60); do
        sleep 0.5
        [ "$(show ActiveState)" = active ] && [ "$(show MainPID)" != "$before" ] && break
    done
    if [ "$(show MainPID)" != "$before" ] && [ "$(health)" = 200 ] \
        && has 'Watchdog timeout' unit_log; then
        ok "a hung (SIGSTOPped) process was killed by the watchdog and came back"
    else
        fail "after SIGSTOP: $(show ActiveState), MainPID $(show MainPID) (was $before), no watchdog restart"
    fi
    in_ct rm -rf "$dropin" && in_ct systemctl daemon-reload && in_ct systemctl restart creditgate
}

check_stop_server() {
    local code; code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST \
        -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$http_port/stopServer")
    [ "$code" = 202 ] || fail "/stopServer answered $code"
    sleep 8 # past RestartSec=5s: it would have come back by now
    local r; r="$(show ActiveState) $(show Result) $(show ExecMainStatus)"
    [ "$r" = "inactive success 0" ] && ok "after /stopServer the unit stays inactive" \
        || fail "8 s after /stopServer: ActiveState Result ExecMainStatus = $r"
}

main() {
    local t0; t0=$(date +%s%N)
    install_tools || die "cannot install the host tools"
    mkdir -p "$work"
    debian_tree
    trap cleanup EXIT
    database
    http_port=$(free_port)
    stage
    boot
    if check_install_and_start; then
        check_watchdog
        check_secrets
        check_priorities
        check_stop
        check_unreachable_database
        check_crash_restart
        check_watchdog_restart
        check_stop_server
    fi
    say "took $(( $(ms_since "$t0") / 1000 )) s; logs under $work"
    echo "test-systemd: $passed passed, ${#failures[@]} failed"
    if [ ${#failures[@]} -gt 0 ]; then
        say "${#failures[@]} check(s) failed:"
        printf '  - %s\n' "${failures[@]}" >&2
        exit 1
    fi
    say "all checks passed"
}

main
