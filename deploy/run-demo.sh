#!/usr/bin/env bash
# `make run`: migrate, make sure a `demo` user exists (a new token each run,
# since tokens are shown only once), print a curl to try, and serve in the
# foreground until Ctrl-C.
set -euo pipefail
bin=${1:-target/release/creditgate}
export DATABASE_URL
export CREDITGATE_BIND=${CREDITGATE_BIND:-127.0.0.1:5000}
export CREDITGATE_ADMIN_TOKEN=${CREDITGATE_ADMIN_TOKEN:-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')}

"$bin" migrate
if "$bin" user show demo >/dev/null 2>&1; then
    token=$("$bin" user rotate demo 2>/dev/null)
    "$bin" user credit demo --set 100 >/dev/null
    note="existing demo user: new token, credit reset to 100"
else
    token=$("$bin" user add demo --credit 100 --monthly 100 2>/dev/null)
    note="new demo user with 100 credits and a monthly allowance of 100"
fi
# A gateway route to whatever listens on 127.0.0.1:8080 (start one below).
upstream=${CREDITGATE_DEMO_UPSTREAM:-http://127.0.0.1:8080}
"$bin" route add /files --upstream "$upstream" --cost 1 --strip-prefix >/dev/null 2>&1 || true
# A service token for metering from code (/v1/charge, /v1/holds). Tokens
# are shown once and a service name is never reused, so each run makes one.
service="demo-backend-$(date +%Y%m%d%H%M%S)"
svc=$("$bin" service add "$service" --scopes charge,read 2>/dev/null)
base="http://$CREDITGATE_BIND"
cat <<MSG

  creditgate on $base ($note)
  database:     ${DATABASE_URL%%\?*}

  Try (each call costs 1 credit; watch credit_remaining, then 402 when it is spent):
    curl -s -H 'Authorization: Bearer demo:$token' $base/api/v1.0/banks_data/BOFA/
    curl -s -u 'demo:$token' $base/api/v1.0/credit

  Meter your own API: the route /files forwards to $upstream (cost 1,
  refunded unless the upstream answers 2xx). Start any upstream, e.g.
    python3 -m http.server 8080 --bind 127.0.0.1
  then:
    curl -si -u 'demo:$token' $base/files/            # 200, charged: see X-Credit-Remaining
    curl -si -u 'demo:$token' $base/files/missing     # the upstream's 404, refunded
    (without an upstream: 502 upstream_unavailable, refunded)
    $bin route list

  Meter from your own code: service $service, its token for this run:
    export CG=$base SVC=$svc TOKEN=$token
    curl -s -X POST -H "Authorization: Bearer \$SVC" -H 'Content-Type: application/json' \\
         -d '{"user": "demo", "amount": 10}' \$CG/v1/holds               # 201, a hold of 10
    curl -s -X POST -H "Authorization: Bearer \$SVC" -H 'Content-Type: application/json' \\
         -d '{"amount": 7}' \$CG/v1/holds/<id>/capture                   # charge the real price
    curl -s -X POST -H "Authorization: Bearer \$SVC" -H 'Content-Type: application/json' \\
         -d '{"user": "demo", "cost": 2}' \$CG/v1/charge                 # a known price at once

  Operator console: $base/console/  (log in with the admin token below)

  Admin token for this run: $CREDITGATE_ADMIN_TOKEN
    curl -s -H 'Authorization: Bearer $CREDITGATE_ADMIN_TOKEN' $base/admin/v1/users
    curl -s -X POST -H 'Authorization: Bearer $CREDITGATE_ADMIN_TOKEN' $base/stopServer

  Ctrl-C stops the server.

MSG
exec "$bin" serve
