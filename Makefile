# Every target finds (or starts) its database through deploy/dev-db.sh.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test test-quickstart check-links test-schema test-cluster test-browser test-systemd test-proxies lint migrate bench bench-growth db db-stop build release

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Start the service with a demo user and print a curl to try.
run: release
	@server=$$(deploy/dev-db.sh) && \
	DATABASE_URL=$${DATABASE_URL:-$$server/creditgate} deploy/run-demo.sh target/release/creditgate

## Run every test against a real MariaDB (found or started), the README's
## quick start first.
test: test-quickstart
	@server=$$(deploy/dev-db.sh) && \
	$(CARGO) test -p tiny_http && \
	CREDITGATE_TEST_DATABASE_URL=$$server $(CARGO) test && \
	echo "again with CREDITGATE_COALESCE=on: charge, ledger, rate limits, conflicts, low credit, coalescing, keys, holds, webhooks, the database vanishing, two servers" >&2 && \
	CREDITGATE_TEST_DATABASE_URL=$$server CREDITGATE_TEST_COALESCE=on $(CARGO) test --test api -- \
		charge:: ledger:: ratelimit:: conflicts:: lowcredit:: coalesce:: keys:: holds:: webhooks:: \
		faults::the_database_vanishing faults::two_servers

## The README's quick start, word for word, against a fresh server and
## database (deploy/test-quickstart.py; a few seconds once built).
test-quickstart: build
	@deploy/test-quickstart.py $${CARGO_TARGET_DIR:-target}/debug/creditgate

## Every relative link (and #anchor) in README.md and docs/ resolves.
check-links:
	@deploy/check-links.py

## The running server against its /openapi.json with schemathesis (and the
## document against the OpenAPI 3.1 schema); see deploy/test-schema.sh.
test-schema: build
	@deploy/test-schema.sh $${CARGO_TARGET_DIR:-target}/debug/creditgate

## Run tests/cluster against a private 3-node Galera cluster behind HAProxy
## (deploy/galera-cluster.sh), then stop the cluster, pass or fail.
test-cluster:
	@trap 'deploy/galera-cluster.sh stop' EXIT; \
	endpoints=$$(deploy/galera-cluster.sh start) || exit $$?; \
	CREDITGATE_CLUSTER_HAPROXY_URL=$$(awk '$$1 == "haproxy" { print $$2 }' <<<"$$endpoints"); \
	CREDITGATE_CLUSTER_NODE_URLS=$$(awk '$$1 ~ /^n[0-9]+$$/ { print $$2 }' <<<"$$endpoints" | paste -sd, -); \
	CREDITGATE_CLUSTER_SCRIPT=$$PWD/deploy/galera-cluster.sh; \
	export CREDITGATE_CLUSTER_HAPROXY_URL CREDITGATE_CLUSTER_NODE_URLS CREDITGATE_CLUSTER_SCRIPT; \
	echo "cluster: HAProxy $$CREDITGATE_CLUSTER_HAPROXY_URL, nodes $$CREDITGATE_CLUSTER_NODE_URLS" >&2; \
	rc=0; $(CARGO) test --test cluster -- --test-threads=1 || rc=$$?; exit $$rc

## The operator console in a real headless Chromium (tests/browser/run.sh):
## a fresh seeded database and the real binary, dropped and stopped after.
test-browser:
	@CARGO="$(CARGO)" tests/browser/run.sh

## creditgate under a real systemd (PID 1 in a booted Debian 12 container):
## the install steps of docs/running-as-a-service.md, Type=notify, the journal, stop, restart; see
## deploy/test-systemd.sh. Needs root.
test-systemd: build
	@deploy/test-systemd.sh $${CARGO_TARGET_DIR:-target}/debug/creditgate

## /v1/forward-auth behind a real nginx and Caddy, configured with the
## blocks of docs/forward-auth.md (nginx and caddy with apt when missing); see
## deploy/test-proxies.sh. Installing needs root.
test-proxies: build
	@deploy/test-proxies.sh $${CARGO_TARGET_DIR:-target}/debug/creditgate

## The layering (deploy/check-layers.sh), the docs' links, formatting, and clippy.
lint:
	deploy/check-layers.sh
	deploy/check-links.py
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --test cluster -- -D warnings
	$(CARGO) clippy -p tiny_http --all-targets -- -D warnings

migrate: build
	@server=$$(deploy/dev-db.sh) && \
	DATABASE_URL=$${DATABASE_URL:-$$server/creditgate} target/debug/creditgate migrate

## Print the database server URL in use (starting a private one if needed).
db:
	@deploy/dev-db.sh

## Stop the private MariaDB started under target/mariadb, if any.
db-stop:
	@if [ -f target/mariadb/mysqld.pid ]; then kill $$(cat target/mariadb/mysqld.pid) && echo "private MariaDB stopped"; \
	else echo "no private MariaDB running"; fi

## creditgate against the database's own ceiling (BENCH_QUICK=1: one short row).
bench:
	@server=$$(deploy/dev-db.sh) && \
	CREDITGATE_BENCH_DATABASE_URL=$$server $(CARGO) bench --bench load

## Spread throughput with 1k, 100k and 1M users.
bench-growth:
	@server=$$(deploy/dev-db.sh) && \
	BENCH_GROWTH=1 CREDITGATE_BENCH_DATABASE_URL=$$server $(CARGO) bench --bench load
