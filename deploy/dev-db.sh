#!/usr/bin/env bash
# Finds a MariaDB (or MySQL) server for `make run`, `make test` and
# `make bench`, and prints its URL without a database name on stdout:
#   1. the server of $DATABASE_URL when it is set;
#   2. a server at 127.0.0.1:3306 that lets root in with an empty password;
#   3. else a private MariaDB for this project: data under target/mariadb,
#      loopback only, port $CREDITGATE_DEV_DB_PORT (3407), its own socket.
#      mariadb-server is installed with apt-get when missing and we are root.
# Everything else it says goes to stderr. CREDITGATE_DEV_DB=private skips 1-2.
set -euo pipefail

say() { echo "dev-db: $*" >&2; }
root_dir=$(cd "$(dirname "$0")/.." && pwd)
port=${CREDITGATE_DEV_DB_PORT:-3407}
dir="$root_dir/target/mariadb"

if [ -n "${DATABASE_URL:-}" ] && [ "${CREDITGATE_DEV_DB:-}" != private ]; then
    url=${DATABASE_URL%%\?*}
    scheme=${url%%://*}; rest=${url#*://}
    echo "$scheme://${rest%%/*}"
    exit 0
fi

# Does a server on 127.0.0.1:$1 let root in without a password?
answers() {
    if command -v mariadb-admin >/dev/null 2>&1; then
        mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -uroot --connect-timeout=2 ping >/dev/null 2>&1
    elif command -v mysqladmin >/dev/null 2>&1; then
        mysqladmin --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -uroot --connect-timeout=2 ping >/dev/null 2>&1
    else
        # No client installed: an open port is the best we can tell.
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

if [ "${CREDITGATE_DEV_DB:-}" != private ] && answers 3306; then
    echo "mysql://root@127.0.0.1:3306"
    exit 0
fi

if answers "$port"; then
    echo "mysql://root@127.0.0.1:$port"
    exit 0
fi

server_bin() { command -v mariadbd || command -v mysqld || ls /usr/sbin/mariadbd /usr/sbin/mysqld 2>/dev/null | head -n1; }
if [ -z "$(server_bin || true)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "no MariaDB server found. Install one with:  sudo apt-get install -y mariadb-server"
        exit 1
    fi
    say "installing mariadb-server with apt-get (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # policy-rc.d keeps the package from starting a system-wide server.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq mariadb-server mariadb-client >&2 || { rm -f /usr/sbin/policy-rc.d; exit 1; }
    rm -f /usr/sbin/policy-rc.d
fi
bin=$(server_bin)
install_db=$(command -v mariadb-install-db || command -v mysql_install_db || echo /usr/bin/mariadb-install-db)

user_args=()
[ "$(id -u)" -eq 0 ] && user_args=(--user=root)

mkdir -p "$dir"
if [ ! -d "$dir/data/mysql" ]; then
    say "initialising a private MariaDB in $dir"
    "$install_db" --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db "${user_args[@]}" >"$dir/install.log" 2>&1 \
        || { say "mariadb-install-db failed, see $dir/install.log"; exit 1; }
fi

say "starting a private MariaDB on 127.0.0.1:$port (stop it with: make db-stop)"
setsid nohup "$bin" --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
    --innodb-buffer-pool-size=256M --max-connections=500 "${user_args[@]}" >/dev/null 2>&1 < /dev/null &

for _ in $(seq 1 60); do
    if answers "$port"; then
        echo "mysql://root@127.0.0.1:$port"
        exit 0
    fi
    sleep 0.5
done
say "the private MariaDB did not come up in 30 s; see $dir/error.log"
exit 1
