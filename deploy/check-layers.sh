#!/usr/bin/env bash
# The layering, checked (`make lint`): a crate split would enforce it too,
# but for one binary a grep is cheaper and says the rule in one place.
#
#   edges   src/http, src/console, src/cli: turn requests and commands into
#           calls; src/app (and main.rs) wire everything together.
#   domain  everything else (billing, idempotency, users, auth, banks,
#           gateway, ops, openapi, model, config, ...): must not import an
#           edge, so a rule never depends on how it is reached.
#   db      src/db: imports no other module of the crate, so that every
#           layer may use it and it stays the one place MySQL is known.
#
# Exits 1 and names each offending line.
set -euo pipefail
cd "$(dirname "$0")/.."

edges='http|console|cli|app'
status=0

# Code lines only: a comment may name an edge.
code() { grep -HnE "$1" "${@:2}" | grep -vE '^[^:]+:[0-9]+:\s*//' || true; }

domain=$(find src -name '*.rs' \
    -not -path 'src/http/*' -not -path 'src/console/*' \
    -not -path 'src/cli/*' -not -path 'src/app/*' \
    -not -path 'src/main.rs' -not -path 'src/lib.rs' | sort)
found=$(code "crate::($edges)\b|crate::\{[^}]*\b($edges)\b" $domain)
if [ -n "$found" ]; then
    echo "check-layers: the domain imports an edge (http, console, cli, app):" >&2
    echo "$found" >&2
    status=1
fi

found=$(code 'crate::|creditgate::' $(find src/db -name '*.rs' | sort))
if [ -n "$found" ]; then
    echo "check-layers: src/db imports another module of the crate:" >&2
    echo "$found" >&2
    status=1
fi

exit $status
