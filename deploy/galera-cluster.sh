#!/usr/bin/env bash
# A private 3-node MariaDB Galera cluster with HAProxy in front, for the
# cluster tests (`make test-cluster`). Loopback only, ports of its own, data
# under target/galera/{n1,n2,n3}, HAProxy under target/galera/haproxy.
#
#   deploy/galera-cluster.sh start         start (or find running) and print the endpoints
#   deploy/galera-cluster.sh stop          stop HAProxy and the three nodes
#   deploy/galera-cluster.sh kill NODE     SIGKILL one node (n1, n2 or n3)
#   deploy/galera-cluster.sh restart NODE  start that node again; waits until it is Synced
#   deploy/galera-cluster.sh status        cluster size and each node's state
#   deploy/galera-cluster.sh writer        the node HAProxy sends new connections to
#
# `start` prints one line per endpoint on stdout, "NAME URL", and nothing else:
#   haproxy mysql://root@127.0.0.1:3510
#   n1 mysql://root@127.0.0.1:3511
#   n2 mysql://root@127.0.0.1:3512
#   n3 mysql://root@127.0.0.1:3513
# root has an empty password on every node and through HAProxy. Clients of
# the `mysql` crate must add ?prefer_socket=false to the HAProxy URL, or they
# silently move onto one node's Unix socket.
# When nothing of the cluster is running, `start` wipes target/galera and
# initialises it again (a test cluster: no state survives `stop`); when some
# of it runs, it only starts what is missing.
#
# `make test-cluster` exports, from the lines above:
#   CREDITGATE_CLUSTER_HAPROXY_URL  mysql://root@127.0.0.1:3510
#   CREDITGATE_CLUSTER_NODE_URLS    mysql://root@127.0.0.1:3511,...:3512,...:3513 (n1,n2,n3)
#   CREDITGATE_CLUSTER_SCRIPT       this script's path (for kill/restart/writer)
#
# Ports, from CREDITGATE_GALERA_PORT_BASE (B, default 3510), node i = 1..3:
#   HAProxy SQL B; node SQL B+i; gcomm B+1000+i; IST B+1100+i; SST B+1200+i;
#   HAProxy stats page http://127.0.0.1:(B+1300)/ (add ;csv for CSV).
# CREDITGATE_GALERA_TIMEOUT (120): seconds to wait for the cluster.
# CREDITGATE_GALERA_PROVIDER_OPTIONS: extra wsrep provider options; by default
#   a 1.5 s evs.suspect_timeout (see below); "" gives Galera's defaults.
# mariadb-server, galera-4, rsync and haproxy are installed with apt-get when
# missing and we are root (a policy-rc.d keeps them from starting services).
# Everything but the endpoints goes to stderr.
set -euo pipefail

say() { echo "galera-cluster: $*" >&2; }
die() { say "$*"; exit 1; }
root_dir=$(cd "$(dirname "$0")/.." && pwd)
dir="$root_dir/target/galera"
base=${CREDITGATE_GALERA_PORT_BASE:-3510}
timeout=${CREDITGATE_GALERA_TIMEOUT:-120}
nodes=(n1 n2 n3)
cluster_name=creditgate-test
provider=/usr/lib/galera/libgalera_smm.so
# Galera waits evs.suspect_timeout (5 s by default) before it evicts a dead
# node, and writes on the survivors stall until then; shorter here so that
# writes resume within ~2 s of a SIGKILL. Set to "" for Galera's defaults.
evs_opts=${CREDITGATE_GALERA_PROVIDER_OPTIONS-evs.keepalive_period=PT0.3S;evs.inactive_check_period=PT0.3S;evs.suspect_timeout=PT1.5S;evs.inactive_timeout=PT3S}

case "$base" in '' | *[!0-9]*) die "CREDITGATE_GALERA_PORT_BASE must be a number" ;; esac
haproxy_port=$base
stats_port=$((base + 1300))
idx() { echo "${1#n}"; }
sql_port() { echo $((base + $(idx "$1"))); }
gcomm_port() { echo $((base + 1000 + $(idx "$1"))); }
ist_port() { echo $((base + 1100 + $(idx "$1"))); }
sst_port() { echo $((base + 1200 + $(idx "$1"))); }

check_node() {
    case "${1:-}" in n1 | n2 | n3) ;; *) die "NODE must be n1, n2 or n3 (got '${1:-}')" ;; esac
}

# ---- processes --------------------------------------------------------------

# The pid in $1 if that process is alive and its command line mentions $2.
live_pid() {
    local pidfile=$1 mark=$2 pid cmdline
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    # Not `tr | grep -q`: with pipefail, grep -q quitting early fails the pipe.
    { cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline"); } 2>/dev/null || return 1
    case "$cmdline" in *"$mark"*) echo "$pid" ;; *) return 1 ;; esac
}
node_pid() { live_pid "$dir/$1/node.pid" "--datadir=$dir/$1/data"; }
haproxy_pid() { live_pid "$dir/haproxy/haproxy.pid" "$dir/haproxy/haproxy.cfg"; }

# Wait up to $2 seconds for pid $1 to exit. A zombie counts as gone: our
# nodes are not our children, and here PID 1 takes ~1.5 s to reap them.
wait_exit() {
    local pid=$1 i stat
    for ((i = 0; i < $2 * 20; i++)); do
        { stat=$(cat "/proc/$pid/stat"); } 2>/dev/null || return 0
        stat=${stat##*) }
        [ "${stat%% *}" = Z ] && return 0
        sleep 0.05
    done
    return 1
}

# ---- SQL --------------------------------------------------------------------

# sql PORT QUERY: run QUERY as root over TCP, tab-separated, no headers.
sql() {
    mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -uroot --connect-timeout=2 \
        --batch --skip-column-names -e "$2" 2>/dev/null
}
# "STATE SIZE" of a node, e.g. "Synced 3"; fails when it does not answer.
node_state() {
    local out
    out=$(sql "$(sql_port "$1")" "SELECT variable_value FROM information_schema.global_status
        WHERE variable_name IN ('wsrep_local_state_comment','wsrep_cluster_size')
        ORDER BY variable_name='wsrep_cluster_size'") || return 1
    [ -n "$out" ] || return 1
    echo "$out" | tr '\n' ' ' | sed 's/ $//'
}
synced() { [ "$(node_state "$1" 2>/dev/null || true)" = "Synced 3" ]; }
writer() { sql "$haproxy_port" "SELECT @@wsrep_node_name"; }

# ---- install ----------------------------------------------------------------

ensure_packages() {
    local missing=()
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    [ -f "$provider" ] || missing+=(galera-4)
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "missing ${missing[*]}. Install with:  sudo apt-get install -y ${missing[*]}"
    fi
    say "installing ${missing[*]} with apt-get (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # policy-rc.d keeps the packages from starting system-wide services.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq "${missing[@]}" >&2 || { rm -f /usr/sbin/policy-rc.d; exit 1; }
    rm -f /usr/sbin/policy-rc.d
}

server_bin() { command -v mariadbd || echo /usr/sbin/mariadbd; }
haproxy_bin() { command -v haproxy || echo /usr/sbin/haproxy; }

# ---- nodes ------------------------------------------------------------------

# start_node NODE [bootstrap]: launch one mariadbd in the background.
start_node() {
    local n=$1 d="$dir/$1" extra=() addr="gcomm://" sep="" m
    [ "${2:-}" = bootstrap ] && extra=(--wsrep-new-cluster)
    for m in "${nodes[@]}"; do addr+="${sep}127.0.0.1:$(gcomm_port "$m")"; sep=,; done
    mkdir -p "$d/data"
    chown -R mysql:mysql "$d"
    # The node runs as mysql (--user=mysql): with --user=root the rsync SST
    # fails on the joiner ("Permission denied", "Will never receive state").
    setsid nohup "$(server_bin)" --no-defaults --user=mysql \
        --datadir="$d/data" --port="$(sql_port "$n")" --bind-address=127.0.0.1 \
        --socket="$d/mariadbd.sock" --pid-file="$d/mariadbd.pid" --log-error="$d/error.log" \
        --innodb-buffer-pool-size=128M --max-connections=500 --max-connect-errors=1000000 \
        --binlog-format=ROW --innodb-autoinc-lock-mode=2 \
        --wsrep-on=ON --wsrep-provider="$provider" --wsrep-cluster-name="$cluster_name" \
        --wsrep-cluster-address="$addr" \
        --wsrep-node-address="127.0.0.1:$(gcomm_port "$n")" --wsrep-node-name="$n" \
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:$(gcomm_port "$n");ist.recv_addr=127.0.0.1:$(ist_port "$n");gcache.size=64M${evs_opts:+;$evs_opts}" \
        --wsrep-sst-receive-address="127.0.0.1:$(sst_port "$n")" --wsrep-sst-method=rsync \
        "${extra[@]}" >>"$d/stdout.log" 2>&1 </dev/null &
    echo $! >"$d/node.pid"
    wait_exec "$!" node_pid "$n"
}

# wait_exec PID CHECK...: until the forked shell has exec'ed the program
# (CHECK looks for it in /proc/PID/cmdline), or PID is gone.
wait_exec() {
    local pid=$1 i
    shift
    for ((i = 0; i < 50; i++)); do
        "$@" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# wait_for DESCRIPTION DEADLINE COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local what=$1 deadline=$2
    shift 2
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "timed out waiting for $what"
            return 1
        fi
        sleep 0.3
    done
}
answers() { sql "$(sql_port "$1")" "SELECT 1" >/dev/null; }
alive_or_die() { node_pid "$1" >/dev/null || die "$1 exited; see $dir/$1/error.log"; }
node_up() { alive_or_die "$1"; answers "$1"; }
node_synced() { alive_or_die "$1"; synced "$1"; }
haproxy_answers() { [ -n "$(writer || true)" ]; }

# Fail early, and clearly, when another program holds one of our ports.
check_ports() {
    local n p busy=()
    for p in "$haproxy_port" "$stats_port"; do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && busy+=("$p")
    done
    for n in "${nodes[@]}"; do
        for p in "$(sql_port "$n")" "$(gcomm_port "$n")" "$(ist_port "$n")" "$(sst_port "$n")"; do
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && busy+=("$p")
        done
    done
    [ ${#busy[@]} -eq 0 ] || die "port(s) ${busy[*]} on 127.0.0.1 already in use; pick other ports with CREDITGATE_GALERA_PORT_BASE (now $base)"
}

init_cluster() {
    case "$dir" in */target/galera) ;; *) die "refusing to wipe $dir" ;; esac
    check_ports
    rm -rf "$dir"
    mkdir -p "$dir/n1/data" "$dir/n2/data" "$dir/n3/data" "$dir/haproxy"
    chown -R mysql:mysql "$dir/n1" "$dir/n2" "$dir/n3"
    say "initialising n1 in $dir/n1 (n2 and n3 get their data by SST)"
    # normal: root@localhost, root@127.0.0.1 and root@::1 with an empty password
    # (the default, socket, would give root to the Unix user mysql).
    mariadb-install-db --no-defaults --datadir="$dir/n1/data" --user=mysql \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$dir/n1/install.log" 2>&1 || die "mariadb-install-db failed, see $dir/n1/install.log"
}

# ---- HAProxy ----------------------------------------------------------------

write_haproxy_cfg() {
    local n role
    {
        cat <<EOF
# Written by deploy/galera-cluster.sh; single writer in front of the Galera nodes.
global
    log stdout format raw local0 info
    maxconn 4000
    stats socket $dir/haproxy/stats.sock mode 600 level admin
    # The health check is a script (deploy/galera-check.sh): HAProxy 2.x
    # runs external checks only when told both of these.
    external-check
    insecure-fork-wanted

defaults
    log global
    mode tcp
    option tcplog
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout check 1s

listen galera
    bind 127.0.0.1:$haproxy_port
    mode tcp
    # One writer: n1 is the only active server, n2 and n3 are backups, and
    # HAProxy sends every connection to n1 while it is up, else to the first
    # backup that is up (never to both: no allbackups).
    balance first
    # Up only while Synced: a node that is joining, or a blocked donor, is down.
    option external-check
    external-check path "/usr/bin:/bin:/usr/sbin:/sbin"
    external-check command $root_dir/deploy/galera-check.sh
    # A node marked down gets its sessions cut, so clients move together;
    # when n1 is back (Synced), the backup's sessions are cut too, so that
    # nobody stays on the backup while new connections go to n1.
    default-server on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions
EOF
        for n in "${nodes[@]}"; do
            role=""
            [ "$n" = n1 ] || role=" backup"
            echo "    server $n 127.0.0.1:$(sql_port "$n") check inter 500 fall 2 rise 2$role"
        done
        cat <<EOF

listen stats
    bind 127.0.0.1:$stats_port
    mode http
    timeout client 10s
    stats enable
    stats uri /
    stats refresh 2s
EOF
    } >"$dir/haproxy/haproxy.cfg"
}

# HAProxy's status of NODE (UP, DOWN, "UP 1/2", ...) from the stats page's CSV.
haproxy_status() {
    local csv
    { csv=$(exec 3<>"/dev/tcp/127.0.0.1/$stats_port" && printf 'GET /;csv HTTP/1.0\r\n\r\n' >&3 && cat <&3); } 2>/dev/null || return 1
    echo "$csv" | awk -F, -v n="$1" '$1 == "galera" && $2 == n { print $18 }'
}
haproxy_up() { [ "$(haproxy_status "$1" || true)" = UP ]; }

start_haproxy() {
    mkdir -p "$dir/haproxy"
    write_haproxy_cfg
    "$(haproxy_bin)" -c -q -f "$dir/haproxy/haproxy.cfg" >&2 || die "bad HAProxy config"
    setsid nohup "$(haproxy_bin)" -db -f "$dir/haproxy/haproxy.cfg" \
        >>"$dir/haproxy/haproxy.log" 2>&1 </dev/null &
    echo $! >"$dir/haproxy/haproxy.pid"
    wait_exec "$!" haproxy_pid
}

# ---- subcommands ------------------------------------------------------------

print_endpoints() {
    local n
    echo "haproxy mysql://root@127.0.0.1:$haproxy_port"
    for n in "${nodes[@]}"; do echo "$n mysql://root@127.0.0.1:$(sql_port "$n")"; done
}

cmd_start() {
    ensure_packages
    local t0 deadline n running=() missing=()
    t0=$(date +%s)
    deadline=$((t0 + timeout))
    for n in "${nodes[@]}"; do
        if node_pid "$n" >/dev/null; then running+=("$n"); else missing+=("$n"); fi
    done
    if [ ${#running[@]} -eq 0 ]; then
        if pid=$(haproxy_pid); then kill "$pid" 2>/dev/null || true; wait_exit "$pid" 5 || true; fi
        init_cluster
        say "bootstrapping n1 on 127.0.0.1:$(sql_port n1)"
        start_node n1 bootstrap
        wait_for "n1 to answer" "$deadline" node_up n1 || die "n1 did not come up; see $dir/n1/error.log"
        # haproxy's health check logs in as this user; it replicates to n2, n3.
        sql "$(sql_port n1)" "CREATE USER IF NOT EXISTS 'haproxy'@'127.0.0.1'; CREATE USER IF NOT EXISTS 'haproxy'@'localhost'" \
            || die "could not create the haproxy user on n1"
        missing=(n2 n3)
    elif [ ${#missing[@]} -gt 0 ]; then
        say "already running: ${running[*]}; starting ${missing[*]}"
    fi
    # Joiners one at a time: a donor serves one SST at a time.
    for n in "${missing[@]}"; do
        say "starting $n on 127.0.0.1:$(sql_port "$n")"
        start_node "$n"
        wait_for "$n to answer" "$deadline" node_up "$n" || die "$n did not come up; see $dir/$n/error.log"
    done
    haproxy_pid >/dev/null || { say "starting HAProxy on 127.0.0.1:$haproxy_port (stats: http://127.0.0.1:$stats_port/)"; start_haproxy; }
    for n in "${nodes[@]}"; do
        wait_for "$n to be Synced in a cluster of 3" "$deadline" node_synced "$n" \
            || die "$n is $(node_state "$n" || echo 'not answering'); see $dir/$n/error.log"
    done
    for n in "${nodes[@]}"; do
        wait_for "HAProxy to mark $n up" "$deadline" haproxy_up "$n" \
            || die "HAProxy has $n $(haproxy_status "$n" || echo 'unknown'); see $dir/haproxy/haproxy.log"
    done
    wait_for "HAProxy to answer" "$deadline" haproxy_answers || die "HAProxy does not answer; see $dir/haproxy/haproxy.log"
    say "cluster up in $(($(date +%s) - t0)) s: 3 nodes Synced, HAProxy writes through $(writer)"
    print_endpoints
}

cmd_stop() {
    local n p i pid pids=() rsync_pid
    if pid=$(haproxy_pid); then
        kill "$pid" 2>/dev/null || true
        wait_exit "$pid" 5 || { say "HAProxy did not exit; killing it"; kill -9 "$pid" 2>/dev/null || true; }
        say "HAProxy stopped"
    fi
    for n in "${nodes[@]}"; do
        if pid=$(node_pid "$n"); then kill "$pid" 2>/dev/null || true; pids+=("$n:$pid"); fi
    done
    for p in "${pids[@]}"; do
        n=${p%%:*} pid=${p#*:}
        wait_exit "$pid" 30 || { say "$n did not stop in 30 s; killing it"; kill -9 "$pid" 2>/dev/null || true; wait_exit "$pid" 5 || true; }
        say "$n stopped"
    done
    # An SST interrupted by a kill can leave its rsync daemon behind.
    for n in "${nodes[@]}"; do
        if rsync_pid=$(live_pid "$dir/$n/data/rsync_sst.pid" rsync); then kill "$rsync_pid" 2>/dev/null || true; fi
    done
    [ ${#pids[@]} -gt 0 ] || say "no cluster node was running"
    # Give PID 1 a moment to reap them, so that `pgrep mariadbd` is clean.
    for p in "${pids[@]}"; do
        for ((i = 0; i < 50; i++)); do [ -e "/proc/${p#*:}" ] || break; sleep 0.1; done
    done
}

cmd_kill() {
    check_node "$1"
    local pid
    pid=$(node_pid "$1") || die "$1 is not running"
    kill -9 "$pid"
    wait_exit "$pid" 5 || die "$1 (pid $pid) survived SIGKILL?"
    say "$1 (pid $pid) killed"
}

cmd_restart() {
    check_node "$1"
    local deadline
    deadline=$(($(date +%s) + timeout))
    if node_pid "$1" >/dev/null; then
        say "$1 is running already"
    else
        local n others=0
        for n in "${nodes[@]}"; do node_pid "$n" >/dev/null && others=$((others + 1)); done
        [ "$others" -gt 0 ] || die "no other node runs, nothing to rejoin: use stop and start"
        say "starting $1 again; it rejoins by IST or SST"
        start_node "$1"
    fi
    wait_for "$1 to be Synced in a cluster of 3" "$deadline" node_synced "$1" \
        || die "$1 is $(node_state "$1" || echo 'not answering'); see $dir/$1/error.log"
    # Only once HAProxy has seen it is the cluster as it was: for n1, that is
    # when the writer moves back to it.
    if haproxy_pid >/dev/null; then
        wait_for "HAProxy to mark $1 up" "$deadline" haproxy_up "$1" \
            || die "HAProxy has $1 $(haproxy_status "$1" || echo 'unknown'); see $dir/haproxy/haproxy.log"
    fi
    say "$1 is Synced and up in HAProxy"
}

cmd_status() {
    local n st size=""
    for n in "${nodes[@]}"; do
        if st=$(node_state "$n"); then
            size=${size:-${st##* }}
            echo "$n ${st% *} cluster_size=${st##* }"
        elif node_pid "$n" >/dev/null; then
            echo "$n not-answering"
        else
            echo "$n down"
        fi
    done
    echo "cluster_size ${size:-0}"
    if haproxy_pid >/dev/null; then echo "haproxy up writer=$(writer || echo none)"; else echo "haproxy down"; fi
}

cmd_writer() {
    haproxy_pid >/dev/null || die "HAProxy is not running"
    writer || die "HAProxy does not answer"
}

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    kill) cmd_kill "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    status) cmd_status ;;
    writer) cmd_writer ;;
    *) usage ;;
esac
