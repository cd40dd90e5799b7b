#!/bin/sh
# HAProxy external health check for a Galera node: up only while the node
# can take writes for the cluster, that is Synced (wsrep_local_state 4) or
# serving as a donor (2). A plain `mysql-check` passes as soon as a node
# accepts logins, which a rejoining node does before it has caught up (its
# queries then fail with 1047). A donor counts as up because taking it down
# would move the writer to a backup for the length of a rejoin, and then
# move it again when the donor is back: two moves, and for a moment two
# backups in use. (An rsync SST blocks its donor's writes for the transfer;
# with IST from gcache, the usual rejoin, nothing stalls.)
#
# HAProxy calls it as: galera-check.sh PROXY_ADDR PROXY_PORT SERVER_ADDR SERVER_PORT
# It logs in as the passwordless, privilege-less user `haproxy` (SHOW STATUS
# needs no privilege).
state=$(mariadb --no-defaults --protocol=tcp -h"$3" -P"$4" -uhaproxy --connect-timeout=1 \
    --batch --skip-column-names -e "SHOW GLOBAL STATUS LIKE 'wsrep_local_state'" 2>/dev/null)
case "${state##*	}" in 2 | 4) exit 0 ;; *) exit 1 ;; esac
