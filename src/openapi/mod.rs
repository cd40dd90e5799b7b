//! The OpenAPI 3.1 document of every built-in route (`GET /openapi.json`):
//! the user-facing ones and the admin API. Gateway routes are the
//! operator's and are not in it; neither is the operator console.
//!
//! Built here with `json!` (the paths; the bodies in `schemas`), rather
//! than kept as a static JSON file: most of the document is the same few
//! answers (401, 429, 431, 503 …) repeated per operation, and small helpers
//! say each once, with the `error` codes each status can carry next to it;
//! and the patterns of `schemas` are built from the server's own lists. The
//! text is rendered once and then served as is.
//!
//! Kept honest by two tests: `http::openapi_drift` walks every documented
//! operation through the real router (and every router path that answers
//! through the document), and `make test-schema` runs schemathesis against a
//! running server with it.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

mod schemas;

/// The `error` codes a client can get (see `http::error::ApiError::code`).
pub const ERROR_CODES: &[&str] = &[
    "unauthorized",
    "ambiguous_credentials",
    "insufficient_credit",
    "invalid_bank",
    "unknown_bank",
    "unavailable",
    "rate_limited",
    "too_many_keys",
    "unknown_key",
    "unknown_user",
    "invalid_rate",
    "not_found",
    "method_not_allowed",
    "headers_too_large",
    "invalid_idempotency_key",
    "too_many_failures",
    "admin_disabled",
    "user_exists",
    "invalid_username",
    "invalid_credit",
    "invalid_body",
    "invalid_range",
    "invalid_format",
    "unknown_job",
    "invalid_route",
    "route_exists",
    "unknown_route",
    "body_too_large",
    "idempotency_in_progress",
    "upstream_unavailable",
    "upstream_timeout",
    "route_busy",
    "exports_busy",
    "body_not_allowed",
    "invalid_path",
    "idempotency_key_reused",
    "idempotency_answer_not_stored",
    "scope_denied",
    "invalid_service",
    "service_exists",
    "unknown_service",
    "invalid_webhook",
    "unknown_webhook",
    "unknown_hold",
    "hold_settled",
    "too_many_holds",
    "forward_auth_disabled",
    "forward_auth_forbidden",
    "invalid_original_request",
    "internal",
];

/// The document as served: rendered once.
pub fn text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string(&document()).expect("the document renders"))
}

/// The whole document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "creditgate",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "A credit-metered HTTP API service.",
            "description": "Every caller is a user with a username, an API token and a credit \
                balance. Paid requests are authenticated and charged atomically. Every error \
                answer is `{\"error\": \"<code>\", \"message\": \"<text>\"}` with \
                `Content-Type: application/json`. On every path, a method that is not \
                documented answers 405 `method_not_allowed` (never charged), an unknown path \
                404 `not_found`, and a header block over 16 KiB 431 `headers_too_large`. \
                While the service is stopping, every request answers 503 `unavailable` with \
                `Retry-After`. Gateway routes (an operator's `creditgate route add`) are not \
                described here: their answers are the upstream's.",
            "license": { "name": "see the repository" }
        },
        "servers": [ { "url": "/" } ],
        "tags": [
            { "name": "client", "description": "Routes for API users." },
            { "name": "probes", "description": "Health, readiness, warm-up, metrics, this document." },
            { "name": "service", "description": "Routes for backends, behind a service token (`creditgate service add`)." },
            { "name": "proxy", "description": "Forward authentication for nginx, Caddy and Traefik, behind `CREDITGATE_FORWARD_AUTH_SECRET`." },
            { "name": "admin", "description": "The operator's API, behind the admin token." }
        ],
        "paths": paths(),
        "components": components(),
    })
}

fn paths() -> Value {
    [
        bank_path(),
        credit_path(),
        probe_paths(),
        admin_user_paths(),
        admin_access_paths(),
        admin_other_paths(),
        admin_service_paths(),
        admin_webhook_paths(),
        service_paths(),
        forward_auth_path(),
    ]
    .into_iter()
    .fold(json!({}), merge)
}

/// Either of the four forms, each alone: the alternatives of a security
/// requirement are "one of these", which is the server's rule (credentials
/// in two places are 400 `ambiguous_credentials`). `?token=` is described
/// by the `queryToken` scheme only, not also as a parameter: as a parameter
/// it would say that a request may carry it next to an `Authorization`
/// header.
fn user_security() -> Value {
    json!([
        { "bearerAuth": [] }, { "basicAuth": [] }, { "rawAuthorization": [] }, { "queryToken": [] }
    ])
}

/// The text every user operation carries about where credentials go.
const ONE_PLACE: &str = "Send the credentials in exactly one place: one `Authorization` header \
    (Bearer, Basic or the raw `<username>:<token>`) or `?token=<username>:<token>`. Both, or two \
    `Authorization` headers, answer 400 `ambiguous_credentials`.";

fn bank_path() -> Value {
    json!({
        "/api/v1.0/banks_data/{bank}/": {
            "summary": "The paid bank lookup (the sample's resource).",
            "description": "The trailing slash is optional: `/api/v1.0/banks_data/{bank}` is \
                answered the same. HEAD, OPTIONS, POST and every other method answer 405 \
                `method_not_allowed` and are never charged.",
            "get": {
                "operationId": "getBankData",
                "tags": ["client"],
                "summary": "Look a bank up; charged the bank's cost.",
                "description": ONE_PLACE,
                "security": user_security(),
                "parameters": [
                    { "$ref": "#/components/parameters/Bank" },
                    { "$ref": "#/components/parameters/IdempotencyKey" }
                ],
                "responses": bank_answers()
            }
        },
    })
}

fn bank_answers() -> Value {
    responses([
                    ("200", json!({
                        "description": "Charged (or replayed without charge: `Idempotency-Replayed`).",
                        "headers": {
                            "X-Credit-Remaining": { "$ref": "#/components/headers/X-Credit-Remaining" },
                            "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" },
                            "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                            "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                        },
                        "content": json_content(json!({ "$ref": "#/components/schemas/BankAnswer" }))
                    })),
                    ("201", json!({
                        "description": "Only with `CREDITGATE_LEGACY_ANSWERS=on`: the Flask sample's \
                            answers, `{\"Data\": <the 200 body>}` when charged, or `{\"Status\": …}` \
                            instead of 402 and 401.",
                        "headers": {
                            "X-Credit-Remaining": { "$ref": "#/components/headers/X-Credit-Remaining" },
                            "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" }
                        },
                        "content": json_content(json!({ "$ref": "#/components/schemas/LegacyAnswer" }))
                    })),
                    ("400", error("Malformed bank code, Idempotency-Key, or credentials sent in more than one place; nothing charged.",
                        &["invalid_bank", "invalid_idempotency_key", "ambiguous_credentials"])),
                    ("401", json!({ "$ref": "#/components/responses/Unauthorized" })),
                    ("402", json!({
                        "description": "Credit below the bank's cost; nothing charged.",
                        "headers": {
                            "X-Credit-Remaining": { "$ref": "#/components/headers/X-Credit-Remaining" },
                            "Retry-After": { "$ref": "#/components/headers/Retry-After" },
                            "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                            "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" },
                            "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" }
                        },
                        "content": json_content(error_schema(&["insufficient_credit"]))
                    })),
                    ("404", json!({
                        "description": "No bank with this code; nothing charged.",
                        "headers": {
                            "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" },
                            "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                            "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                        },
                        "content": json_content(error_schema(&["unknown_bank"]))
                    })),
                    ("422", error("This Idempotency-Key was used by this user with a different \
                        request (method, path, query); nothing charged.", &["idempotency_key_reused"])),
                    ("429", json!({
                        "description": "Over the user's rate limit (`rate_limited`, with the \
                            RateLimit headers), or too many failed authentications from this \
                            address (`too_many_failures`); nothing charged.",
                        "headers": {
                            "Retry-After": { "$ref": "#/components/headers/Retry-After" },
                            "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                            "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                        },
                        "content": json_content(error_schema(&["rate_limited", "too_many_failures"]))
                    })),
                    ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
                    ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
    ])
}

fn credit_path() -> Value {
    json!({
        "/api/v1.0/credit": {
            "get": {
                "operationId": "getCredit",
                "tags": ["client"],
                "summary": "The caller's own balance; free.",
                "description": ONE_PLACE,
                "security": user_security(),
                "responses": responses([
                    ("200", json!({
                        "description": "The balance.",
                        "content": json_content(json!({ "$ref": "#/components/schemas/Balance" }))
                    })),
                    ("400", error("Credentials sent in more than one place.", &["ambiguous_credentials"])),
                    ("401", json!({ "$ref": "#/components/responses/Unauthorized" })),
                    ("429", json!({ "$ref": "#/components/responses/TooManyFailures" })),
                    ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
                    ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
                ])
            }
        },
    })
}

fn probe_paths() -> Value {
    json!({
        "/health": {
            "get": probe("getHealth", "Liveness: answers without the database.", json!({
                "description": "Alive.",
                "content": json_content(json!({ "$ref": "#/components/schemas/Status" }))
            }))
        },
        "/ready": {
            "get": probe("getReady", "Readiness: 200 when the database answers, else 503.", json!({
                "description": "The database answers.",
                "content": json_content(json!({ "$ref": "#/components/schemas/Status" }))
            }))
        },
        "/_ah/warmup": {
            "get": probe("getWarmup", "The sample's warm-up hook.", json!({
                "description": "Empty body.",
                "content": { "text/plain": { "schema": { "type": "string", "maxLength": 0 } } }
            }))
        },
        "/metrics": {
            "get": probe("getMetrics", "Prometheus metrics: requests by route and status, credits charged, DB errors, pool, jobs, upstreams.", json!({
                "description": "Prometheus text exposition format 0.0.4.",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }))
        },
        "/openapi.json": {
            "get": probe("getOpenApi", "This document.", json!({
                "description": "The OpenAPI 3.1 document.",
                "content": json_content(json!({ "type": "object" }))
            }))
        },
    })
}

/// Admin routes take the admin token as a Bearer token, nothing else.
fn admin_security() -> Value {
    json!([{ "bearerAuth": [] }])
}

/// `/stopServer`, and users: list, create, show, credit.
fn admin_user_paths() -> Value {
    let admin = admin_security();
    json!({
        "/stopServer": {
            "description": "Stops the service gracefully (the sample's route, now admin only).",
            "get": stop_operation("stopServerGet", &admin),
            "post": stop_operation("stopServerPost", &admin)
        },
        "/admin/v1/users": {
            "get": admin_op("listUsers", "Every user.", &admin, vec![], None, vec![
                ("200", ok("The users.", json!({ "$ref": "#/components/schemas/UserList" }))),
            ]),
            "post": admin_op("createUser", "Create a user and its first key.", &admin, vec![],
                Some(body(true, "#/components/schemas/NewUser")), vec![
                ("201", ok("Created; `token` is shown this once.", json!({ "$ref": "#/components/schemas/UserCreated" }))),
                ("400", error("A bad username, credit amount, rate limit or body.",
                    &["invalid_username", "invalid_credit", "invalid_rate", "invalid_body"])),
                ("409", error("A user with this username exists.", &["user_exists"])),
            ])
        },
        "/admin/v1/users/{name}": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "get": admin_op("showUser", "One user.", &admin, vec![], None, vec![
                ("200", ok("The user.", user())),
                ("400", error("A malformed username.", &["invalid_username"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
        "/admin/v1/users/{name}/ledger": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "get": admin_op("userLedger", "The user's credit ledger (every change that is not a request charge), newest first, a page at a time.", &admin, vec![
                json!({ "name": "limit", "in": "query", "required": false,
                        "description": "Rows per page (default 100).",
                        "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
                json!({ "name": "before", "in": "query", "required": false,
                        "description": "Only rows older than this row id: the previous page's `next_before`.",
                        "schema": { "type": "integer", "minimum": 1, "maximum": i64::MAX } }),
            ], None, vec![
                ("200", ok("One page of rows.", json!({ "$ref": "#/components/schemas/LedgerPage" }))),
                ("400", error("A malformed username, limit or before.", &["invalid_username", "invalid_body"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
        "/admin/v1/users/{name}/credit": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("changeCredit", "Add to or set the balance (a ledger row).", &admin, vec![],
                Some(body(true, "#/components/schemas/CreditChange")), vec![
                ("200", ok("The user after the change.", user())),
                ("400", error("A bad amount (a result below 0 too), username or body.",
                    &["invalid_credit", "invalid_username", "invalid_body"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
    })
}

/// What guards a user's access: rotation, keys, enable/disable, rate limit, notice.
fn admin_access_paths() -> Value {
    let admin = admin_security();
    json!({
        "/admin/v1/users/{name}/rotate": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("rotateToken", "A new key; every other key expires after `grace_secs` (default 0: at once).", &admin, vec![],
                Some(body(false, "#/components/schemas/Rotate")), vec![
                ("200", ok("The new token, shown this once.", json!({ "$ref": "#/components/schemas/Rotated" }))),
                ("400", error("A bad username or body.", &["invalid_username", "invalid_body", "too_many_keys"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
        "/admin/v1/users/{name}/disable": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("disableUser", "Disable a user: its credentials answer 401.", &admin, vec![], None, user_answers())
        },
        "/admin/v1/users/{name}/enable": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("enableUser", "Enable a user again.", &admin, vec![], None, user_answers())
        },
        "/admin/v1/users/{name}/keys": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "get": admin_op("listKeys", "The user's working keys.", &admin, vec![], None, vec![
                ("200", ok("The keys.", json!({ "$ref": "#/components/schemas/KeyList" }))),
                ("400", error("A malformed username.", &["invalid_username"])),
                ("404", error("No such user.", &["unknown_user"])),
            ]),
            "post": admin_op("createKey", "A new key for the user (at most 20 that work).", &admin, vec![],
                Some(body(false, "#/components/schemas/NewKey")), vec![
                ("201", ok("Created; `token` is shown this once.", json!({ "$ref": "#/components/schemas/KeyCreated" }))),
                ("400", error("A bad username or body, or a 21st key.", &["invalid_username", "invalid_body", "too_many_keys"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
        "/admin/v1/users/{name}/keys/{id}": {
            "parameters": [
                { "$ref": "#/components/parameters/Username" },
                { "name": "id", "in": "path", "required": true, "description": "The key's id.",
                  "schema": { "type": "integer", "minimum": 0 } }
            ],
            "delete": admin_op("revokeKey", "Revoke a key.", &admin, vec![], None, vec![
                ("200", ok("The revoked key.", json!({ "$ref": "#/components/schemas/Key" }))),
                ("400", error("A malformed username.", &["invalid_username"])),
                ("404", error("No such user, or no such key of the user.", &["unknown_user", "unknown_key"])),
            ])
        },
        "/admin/v1/users/{name}/limit": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("setRateLimit", "Set (or with `{\"quota\": null}` remove) the user's rate limit.", &admin, vec![],
                Some(body(true, "#/components/schemas/RateLimitChange")), vec![
                ("200", ok("The user after the change.", user())),
                ("400", error("A bad rate, username or body.", &["invalid_rate", "invalid_username", "invalid_body", "invalid_credit"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
        "/admin/v1/users/{name}/notify": {
            "parameters": [ { "$ref": "#/components/parameters/Username" } ],
            "post": admin_op("setLowCredit", "Set (or with null remove) the low-credit notice threshold.", &admin, vec![],
                Some(body(true, "#/components/schemas/NotifyChange")), vec![
                ("200", ok("The user after the change.", user())),
                ("400", error("A bad threshold, username or body.", &["invalid_credit", "invalid_username", "invalid_body"])),
                ("404", error("No such user.", &["unknown_user"])),
            ])
        },
    })
}

/// Usage, jobs and gateway routes.
fn admin_other_paths() -> Value {
    let admin = admin_security();
    json!({
        "/admin/v1/usage": {
            "get": admin_op("usage", "Calls and credits per user, day and endpoint.", &admin, vec![
                json!({ "name": "user", "in": "query", "required": false,
                        "description": "Only this user; empty or absent: every user.",
                        "schema": { "anyOf": [ { "$ref": "#/components/schemas/Username" }, { "const": "" } ] } }),
                json!({ "name": "from", "in": "query", "required": false,
                        "description": "First day, YYYY-MM-DD (UTC); empty or absent: no bound.",
                        "schema": { "anyOf": [ { "type": "string", "format": "date" }, { "const": "" } ] } }),
                json!({ "name": "to", "in": "query", "required": false,
                        "description": "Last day, YYYY-MM-DD (UTC); empty or absent: no bound.",
                        "schema": { "anyOf": [ { "type": "string", "format": "date" }, { "const": "" } ] } }),
            ], None, vec![
                ("200", ok("The rows.", json!({ "$ref": "#/components/schemas/UsageReport" }))),
                ("400", error("A malformed user or day.", &["invalid_username", "invalid_body"])),
            ])
        },
        "/admin/v1/usage/export": usage_export_path(),
        "/admin/v1/jobs": {
            "get": admin_op("listJobs", "The scheduled jobs.", &admin, vec![], None, vec![
                ("200", ok("The jobs.", json!({ "$ref": "#/components/schemas/JobList" }))),
            ])
        },
        "/admin/v1/jobs/{id}/pause": job_path("pauseJob", "Pause a job.", &admin),
        "/admin/v1/jobs/{id}/resume": job_path("resumeJob", "Resume a paused job.", &admin),
        "/admin/v1/jobs/{id}/run": job_path("runJob", "Run a job now (and wait for it).", &admin),
        "/admin/v1/routes": {
            "get": admin_op("listRoutes", "Every gateway route.", &admin, vec![], None, vec![
                ("200", ok("The routes.", json!({ "$ref": "#/components/schemas/RouteList" }))),
            ]),
            "post": admin_op("createRoute", "Add a gateway route (effective everywhere within 5 s).", &admin, vec![],
                Some(body(true, "#/components/schemas/NewRoute")), vec![
                ("201", ok("The route.", json!({ "$ref": "#/components/schemas/Route" }))),
                ("400", error("A bad field (named in the message) or body.", &["invalid_route", "invalid_body"])),
                ("409", error("A route with this prefix exists.", &["route_exists"])),
            ])
        },
        "/admin/v1/routes/{id}": {
            "parameters": [
                { "name": "id", "in": "path", "required": true, "description": "The route's id.",
                  "schema": { "type": "integer", "minimum": 0 } }
            ],
            "delete": admin_op("deleteRoute", "Remove a gateway route.", &admin, vec![], None, vec![
                ("200", ok("The removed route.", json!({ "$ref": "#/components/schemas/Route" }))),
                ("404", error("No such route.", &["unknown_route"])),
            ])
        },
    })
}

/// Services: list, add (the token shown once), revoke.
fn admin_service_paths() -> Value {
    let admin = admin_security();
    json!({
        "/admin/v1/services": {
            "get": admin_op("listServices", "Every service, revoked ones included.", &admin, vec![], None, vec![
                ("200", ok("The services.", json!({ "$ref": "#/components/schemas/ServiceList" }))),
            ]),
            "post": admin_op("createService", "Add a service and make its token.", &admin, vec![],
                Some(body(true, "#/components/schemas/NewService")), vec![
                ("201", ok("Created; `token` is shown this once.", json!({ "$ref": "#/components/schemas/ServiceCreated" }))),
                ("400", error("A bad name, scope list or body; nothing written.", &["invalid_service", "invalid_body"])),
                ("409", error("A service of this name exists (revoked ones keep their name).", &["service_exists"])),
            ])
        },
        "/admin/v1/services/{name}": {
            "parameters": [
                { "name": "name", "in": "path", "required": true,
                  "description": "The service's name; a malformed one is 400 `invalid_service`.",
                  "schema": { "$ref": "#/components/schemas/ServiceName" } }
            ],
            "delete": admin_op("revokeService", "Revoke a service: its token stops working at once. \
                Revoking it again answers the same.", &admin, vec![], None, vec![
                ("200", ok("The revoked service.", json!({ "$ref": "#/components/schemas/Service" }))),
                ("400", error("A malformed name.", &["invalid_service"])),
                ("404", error("No such service.", &["unknown_service"])),
            ])
        },
    })
}

/// Webhook endpoints: list, add (the signing secret shown once), remove.
fn admin_webhook_paths() -> Value {
    let admin = admin_security();
    json!({
        "/admin/v1/webhooks": {
            "get": admin_op("listWebhooks", "Every webhook endpoint, oldest first.", &admin, vec![], None, vec![
                ("200", ok("The endpoints.", json!({ "$ref": "#/components/schemas/WebhookList" }))),
            ]),
            "post": admin_op("createWebhook", "Add a webhook endpoint and make its signing secret.", &admin, vec![],
                Some(body(true, "#/components/schemas/NewWebhook")), vec![
                ("201", ok("Created; `secret` is shown this once.", json!({ "$ref": "#/components/schemas/WebhookCreated" }))),
                ("400", error("A bad URL, event list or body; nothing written.", &["invalid_webhook", "invalid_body"])),
            ])
        },
        "/admin/v1/webhooks/{id}": {
            "parameters": [
                { "name": "id", "in": "path", "required": true,
                  "description": "The endpoint's id; anything else is 404 `unknown_webhook`.",
                  "schema": { "type": "integer", "minimum": 0 } }
            ],
            "delete": admin_op("deleteWebhook", "Remove a webhook endpoint; its undelivered events \
                are marked failed.", &admin, vec![], None, vec![
                ("200", ok("The removed endpoint.", json!({ "$ref": "#/components/schemas/Webhook" }))),
                ("404", error("No such endpoint.", &["unknown_webhook"])),
            ])
        },
    })
}

/// The routes for backends, behind a service token.
fn service_paths() -> Value {
    json!({
        "/v1/whoami": {
            "get": {
                "operationId": "whoami",
                "tags": ["service"],
                "summary": "The calling service and its scopes (any valid service token; no scope needed).",
                "security": [ { "serviceToken": [] } ],
                "responses": responses([
                    ("200", ok("The service.", json!({ "$ref": "#/components/schemas/Whoami" }))),
                    ("401", json!({ "$ref": "#/components/responses/ServiceUnauthorized" })),
                    ("429", json!({ "$ref": "#/components/responses/TooManyFailures" })),
                    ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
                    ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
                ])
            }
        },
        "/v1/charge": {
            "post": service_op("charge", "Charge a user (or, with cost 0, check them) from the \
                service's own code: key valid → rate limit → credit ≥ cost → charged, in one \
                transaction. Every decided outcome is a 200; `valid` says whether it was charged.",
                Some(body(true, "#/components/schemas/ChargeRequest")), vec![
                ("200", replayable("Decided: charged (`VALID`) or refused (nothing charged).",
                    json!({ "$ref": "#/components/schemas/ChargeAnswer" }))),
                ("400", error("A malformed body (no or two users, a cost out of range, an unknown \
                    field …) or Idempotency-Key; nothing charged.", BODY_ERRORS)),
                ("422", json!({ "$ref": "#/components/responses/IdempotencyKeyReused" })),
            ])
        },
        "/v1/holds": {
            "post": service_op("placeHold", "Reserve `amount` of the user's credit until a capture, \
                a release or `ttl_secs`; the same checks as a charge, with the amount as the cost. \
                Nothing is charged yet.",
                Some(body(true, "#/components/schemas/HoldRequest")), vec![
                ("201", replayable("Granted: the hold, open.", json!({ "$ref": "#/components/schemas/HoldGranted" }))),
                ("200", replayable("Refused (nothing reserved): as the charge API's refusals.",
                    json!({ "$ref": "#/components/schemas/HoldRefused" }))),
                ("400", replayable_error("A malformed body or Idempotency-Key, or the user has \
                    10,000 open holds already (`too_many_holds`); nothing reserved.",
                    &[BODY_ERRORS, &["too_many_holds"]].concat())),
                ("422", json!({ "$ref": "#/components/responses/IdempotencyKeyReused" })),
            ])
        },
        "/v1/holds/{id}": {
            "parameters": [ { "$ref": "#/components/parameters/HoldId" } ],
            "get": {
                "operationId": "showHold",
                "tags": ["service"],
                "summary": "One of the service's holds, in whatever state.",
                "security": [ { "serviceToken": ["charge"] } ],
                "responses": service_answers(vec![
                    ("200", ok("The hold.", json!({ "$ref": "#/components/schemas/HoldShown" }))),
                    ("404", error("No hold with this id made by this service.", &["unknown_hold"])),
                ])
            }
        },
        "/v1/holds/{id}/capture": {
            "parameters": [ { "$ref": "#/components/parameters/HoldId" } ],
            "post": service_op("captureHold", "Charge the real price and free the rest of the hold, \
                exactly once: the same capture again answers the same.",
                Some(body(true, "#/components/schemas/Capture")), vec![
                ("200", replayable("Captured (now or before, with this amount).",
                    json!({ "$ref": "#/components/schemas/Captured" }))),
                ("400", error("A malformed body or Idempotency-Key; nothing changed.", BODY_ERRORS)),
                ("404", replayable_error("No hold with this id made by this service.", &["unknown_hold"])),
                ("409", json!({ "$ref": "#/components/responses/HoldSettled" })),
                ("422", json!({ "$ref": "#/components/responses/IdempotencyKeyReused" })),
            ])
        },
        "/v1/holds/{id}/release": {
            "parameters": [ { "$ref": "#/components/parameters/HoldId" } ],
            "post": service_op("releaseHold", "Free the whole hold, exactly once: a release again \
                answers the same.",
                Some(body(false, "#/components/schemas/Release")), vec![
                ("200", replayable("Released (now or before).", json!({ "$ref": "#/components/schemas/Released" }))),
                ("400", error("A body with fields, or a malformed Idempotency-Key; nothing changed.", BODY_ERRORS)),
                ("404", replayable_error("No hold with this id made by this service.", &["unknown_hold"])),
                ("409", json!({ "$ref": "#/components/responses/HoldSettled" })),
                ("422", json!({ "$ref": "#/components/responses/IdempotencyKeyReused" })),
            ])
        },
    })
}

/// `/v1/forward-auth`: every method, since the proxy asks with the method
/// it was sent (Caddy and nginx send GET; others may not).
fn forward_auth_path() -> Value {
    let mut item = Map::new();
    for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
        let mut op = forward_auth_operation();
        op["operationId"] = json!(format!("forwardAuth{}", capitalised(method)));
        item.insert(method.into(), op);
    }
    json!({ "/v1/forward-auth": Value::Object(item) })
}

fn capitalised(s: &str) -> String {
    let mut out = s[..1].to_ascii_uppercase();
    out.push_str(&s[1..]);
    out
}

fn forward_auth_operation() -> Value {
    let header = |name: &str, description: &str| {
        json!({ "name": name, "in": "header", "required": false,
                "description": description, "schema": { "type": "string" } })
    };
    // The credentials: forwarded `Authorization`, or `?token=` inside the
    // original URI (a header here, hence the secret alone).
    let security: Vec<Value> = ["bearerAuth", "basicAuth", "rawAuthorization"]
        .iter()
        .map(|s| json!({ "forwardSecret": [], *s: [] }))
        .chain([json!({ "forwardSecret": [] })])
        .collect();
    json!({
        "tags": ["proxy"],
        "summary": "May this request pass? Charged as its gateway route charges, before the upstream answers.",
        "description": "For nginx `auth_request` and Caddy `forward_auth` (docs/forward-auth.md, \"Behind nginx or \
            Caddy\"). The original request is named by `X-Original-Method`/`X-Original-URI` \
            or `X-Forwarded-Method`/`X-Forwarded-Uri` (both families may be sent only with the \
            same values); its path picks the gateway route (cost, methods, rate limit); the \
            credentials are the forwarded `Authorization` header or `?token=` in the original \
            URI. The charge is committed before the answer: nothing is refunded on this path.",
        "security": security,
        "parameters": [
            header("X-Original-Method", "The original method (nginx)."),
            header("X-Original-URI", "The original path and query (nginx `$request_uri`)."),
            header("X-Forwarded-Method", "The original method (Caddy, Traefik)."),
            header("X-Forwarded-Uri", "The original path and query (Caddy, Traefik)."),
            { "$ref": "#/components/parameters/IdempotencyKey" }
        ],
        "responses": responses([
            ("200", json!({
                "description": "Charged (or, under an Idempotency-Key used before for the same \
                    request, already paid: `Idempotency-Replayed`). Let the request pass.",
                "headers": {
                    "X-Creditgate-User": {
                        "description": "The authenticated user, for the upstream.",
                        "schema": { "type": "string" }
                    },
                    "X-Credit-Remaining": { "$ref": "#/components/headers/X-Credit-Remaining" },
                    "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" },
                    "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                    "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                },
                "content": json_content(json!({ "$ref": "#/components/schemas/ForwardAuthAllowed" }))
            })),
            ("400", error("The original request is missing, given twice differently or malformed; \
                its path is refused; a malformed Idempotency-Key; or credentials in more than one \
                place. Nothing charged.",
                &["invalid_original_request", "invalid_path", "invalid_idempotency_key",
                  "ambiguous_credentials"])),
            ("401", json!({ "$ref": "#/components/responses/Unauthorized" })),
            ("402", json!({
                "description": "Credit below the route's cost; nothing charged.",
                "headers": {
                    "X-Credit-Remaining": { "$ref": "#/components/headers/X-Credit-Remaining" },
                    "Retry-After": { "$ref": "#/components/headers/Retry-After" },
                    "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                    "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                },
                "content": json_content(error_schema(&["insufficient_credit"]))
            })),
            ("403", error("`CREDITGATE_FORWARD_AUTH_SECRET` is not set, or \
                `X-Creditgate-Forward-Secret` is missing or wrong: only the proxy may ask.",
                &["forward_auth_disabled", "forward_auth_forbidden"])),
            ("404", error("No gateway route for the original path.", &["not_found"])),
            ("405", error("The route does not take the original method (`Allow` names those it takes).",
                &["method_not_allowed"])),
            ("409", error("The same Idempotency-Key is in flight, or its first request's answer \
                was not stored; nothing charged.",
                &["idempotency_in_progress", "idempotency_answer_not_stored"])),
            ("422", error("The Idempotency-Key was used with another request; nothing charged.",
                &["idempotency_key_reused"])),
            ("429", json!({
                "description": "Over the user's rate limit, or too many failed authentications \
                    from this address; nothing charged.",
                "headers": {
                    "Retry-After": { "$ref": "#/components/headers/Retry-After" },
                    "RateLimit": { "$ref": "#/components/headers/RateLimit" },
                    "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" }
                },
                "content": json_content(error_schema(&["rate_limited", "too_many_failures"]))
            })),
            ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
            ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
        ])
    })
}

/// The 400 codes of a `/v1/` body: `invalid_credit` is a number beyond
/// what JSON parsing takes (`1e400`).
const BODY_ERRORS: &[&str] = &[
    "invalid_body",
    "invalid_username",
    "invalid_idempotency_key",
    "invalid_credit",
];

/// A `/v1/` operation that moves credit: the `charge` scope, an optional
/// Idempotency-Key, its own answers and those every such route shares.
fn service_op(
    id: &str,
    summary: &str,
    request_body: Option<Value>,
    own: Vec<(&str, Value)>,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "tags": ["service"],
        "summary": summary,
        "security": [ { "serviceToken": ["charge"] } ],
        "parameters": [ { "$ref": "#/components/parameters/ServiceIdempotencyKey" } ],
        "responses": service_answers(own),
    });
    if let Some(b) = request_body {
        op["requestBody"] = b;
    }
    op
}

/// An operation's own answers plus those of every scoped `/v1/` route.
fn service_answers(own: Vec<(&str, Value)>) -> Value {
    let mut answers: Map<String, Value> = own.into_iter().map(|(k, v)| (k.into(), v)).collect();
    for (status, name) in [
        ("401", "ServiceUnauthorized"),
        ("403", "ScopeDenied"),
        ("429", "TooManyFailures"),
        ("431", "HeadersTooLarge"),
        ("503", "Unavailable"),
    ] {
        answers.insert(
            status.into(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        );
    }
    Value::Object(answers)
}

/// An answer an Idempotency-Key replays (`Idempotency-Replayed: true`).
fn replayable(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": { "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" } },
        "content": json_content(schema)
    })
}

fn replayable_error(description: &str, codes: &[&str]) -> Value {
    replayable(description, error_schema(codes))
}

/// A `responses` object from (status, response) pairs, in order.
fn responses<const N: usize>(items: [(&str, Value); N]) -> Value {
    Value::Object(
        items
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<String, Value>>(),
    )
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn user() -> Value {
    json!({ "$ref": "#/components/schemas/User" })
}

/// The `Error` body narrowed to the codes one answer can carry.
fn error_schema(codes: &[&str]) -> Value {
    json!({
        "allOf": [
            { "$ref": "#/components/schemas/Error" },
            { "properties": { "error": { "enum": codes } } }
        ]
    })
}

fn error(description: &str, codes: &[&str]) -> Value {
    json!({ "description": description, "content": json_content(error_schema(codes)) })
}

fn body(required: bool, schema: &str) -> Value {
    json!({
        "required": required,
        "content": json_content(json!({ "$ref": schema }))
    })
}

/// An unauthenticated probe: its one success, 431 and 503.
fn probe(id: &str, summary: &str, success: Value) -> Value {
    json!({
        "operationId": id,
        "tags": ["probes"],
        "summary": summary,
        "security": [],
        "responses": responses([
            ("200", success),
            ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
            ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
        ])
    })
}

fn stop_operation(id: &str, admin: &Value) -> Value {
    json!({
        "operationId": id,
        "tags": ["admin"],
        "summary": "Stop the service (admin token); in-flight requests finish first.",
        "security": admin,
        "responses": responses([
            ("202", ok("Stopping.", json!({ "$ref": "#/components/schemas/Stopping" }))),
            ("401", json!({ "$ref": "#/components/responses/Unauthorized" })),
            ("403", json!({ "$ref": "#/components/responses/AdminDisabled" })),
            ("429", json!({ "$ref": "#/components/responses/TooManyFailures" })),
            ("431", json!({ "$ref": "#/components/responses/HeadersTooLarge" })),
            ("503", json!({ "$ref": "#/components/responses/Unavailable" })),
        ])
    })
}

/// An admin operation: its own answers plus those every admin route shares.
fn admin_op(
    id: &str,
    summary: &str,
    admin: &Value,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    own: Vec<(&str, Value)>,
) -> Value {
    let mut answers: Map<String, Value> = own.into_iter().map(|(k, v)| (k.into(), v)).collect();
    for (status, name) in [
        ("401", "Unauthorized"),
        ("403", "AdminDisabled"),
        ("429", "TooManyFailures"),
        ("431", "HeadersTooLarge"),
        ("503", "Unavailable"),
    ] {
        answers.insert(
            status.into(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        );
    }
    let mut op = json!({
        "operationId": id,
        "tags": ["admin"],
        "summary": summary,
        "security": admin,
        "responses": answers,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(b) = request_body {
        op["requestBody"] = b;
    }
    op
}

/// The usage export: the one admin route a `read` service token may call,
/// answering CSV or JSON, streamed.
fn usage_export_path() -> Value {
    let day = |name: &str, what: &str| {
        json!({ "name": name, "in": "query", "required": true,
                "description": format!("{what} day, YYYY-MM-DD (UTC), included."),
                "schema": { "type": "string", "format": "date" } })
    };
    let mut op = admin_op(
        "exportUsage",
        "Usage per user, API key, day and endpoint, streamed: RFC 4180 CSV with a header row \
         (default) or a JSON array. `key_id`/`key_name` are empty (null) for usage without a key.",
        &admin_security(),
        vec![
            day("from", "First"),
            day("to", "Last"),
            json!({ "name": "format", "in": "query", "required": false,
                    "description": "`csv` (default) or `json`.",
                    "schema": { "type": "string", "enum": ["csv", "json"] } }),
        ],
        None,
        vec![
            (
                "200",
                json!({
                    "description": "The rows, in the order of user, day, endpoint and key.",
                    "content": {
                        "text/csv": { "schema": { "type": "string" } },
                        "application/json": { "schema": { "type": "array",
                            "items": { "$ref": "#/components/schemas/UsageExportRow" } } }
                    }
                }),
            ),
            (
                "400",
                error(
                    "A missing or malformed day, `from` after `to`, or an unknown format.",
                    &["invalid_range", "invalid_format"],
                ),
            ),
            (
                "503",
                json!({
                    "description": "The database is unavailable, or this instance already runs \
                        as many exports as it may (2; each holds a database connection); retry.",
                    "headers": { "Retry-After": { "$ref": "#/components/headers/Retry-After" } },
                    "content": json_content(error_schema(&["unavailable", "exports_busy"]))
                }),
            ),
        ],
    );
    op["security"] = json!([{ "bearerAuth": [] }, { "serviceToken": ["read"] }]);
    op["responses"]["401"] = json!({
        "description": "No, a wrong admin token, or a wrong or revoked service token.",
        "headers": { "WWW-Authenticate": { "$ref": "#/components/headers/WWW-Authenticate" } },
        "content": json_content(error_schema(&["unauthorized"]))
    });
    op["responses"]["403"] = error(
        "The admin API is off (no `CREDITGATE_ADMIN_TOKEN`), or a service token without `read`.",
        &["admin_disabled", "scope_denied"],
    );
    json!({ "get": op })
}

fn user_answers() -> Vec<(&'static str, Value)> {
    vec![
        ("200", ok("The user after the change.", user())),
        ("400", error("A malformed username.", &["invalid_username"])),
        ("404", error("No such user.", &["unknown_user"])),
    ]
}

fn job_path(id: &str, summary: &str, admin: &Value) -> Value {
    json!({
        "parameters": [
            { "name": "id", "in": "path", "required": true,
              "description": "The job's id (`heartbeat`, `monthly-refill`, …; see `GET /admin/v1/jobs`).",
              "schema": { "type": "string" } }
        ],
        "post": admin_op(id, summary, admin, vec![], None, vec![
            ("200", ok("The job.", json!({ "$ref": "#/components/schemas/Job" }))),
            ("404", error("No such job.", &["unknown_job"])),
        ])
    })
}

fn components() -> Value {
    json!({
        "securitySchemes": security_schemes(),
        "parameters": parameters(),
        "headers": headers(),
        "responses": shared_responses(),
        "schemas": schemas::all(),
    })
}

fn security_schemes() -> Value {
    json!({
            "bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "User routes: `Authorization: Bearer <username>:<token>`. \
                    Admin routes and `/stopServer`: `Authorization: Bearer <CREDITGATE_ADMIN_TOKEN>`."
            },
            "basicAuth": {
                "type": "http", "scheme": "basic",
                "description": "`Authorization: Basic base64(<username>:<token>)` (so `curl -u` works); user routes only."
            },
            "rawAuthorization": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "The Flask sample's raw form `Authorization: <username>:<token>`; user routes only."
            },
            "serviceToken": {
                "type": "http", "scheme": "bearer", "bearerFormat": "cgs_<token>",
                "description": "`/v1/` routes: `Authorization: Bearer cgs_<token>`, a service token \
                    (`creditgate service add`). A user's credentials or the admin token are not one."
            },
            "forwardSecret": {
                "type": "apiKey", "in": "header", "name": "X-Creditgate-Forward-Secret",
                "description": "`/v1/forward-auth` only: the proxy's `CREDITGATE_FORWARD_AUTH_SECRET`."
            },
            "queryToken": {
                "type": "apiKey", "in": "query", "name": "token",
                "description": "The sample's `?token=<username>:<token>`; user routes only, off with \
                    `CREDITGATE_QUERY_TOKEN=off`. Credentials in more than one place answer 400 \
                    `ambiguous_credentials`."
            }
    })
}

fn parameters() -> Value {
    json!({
            "Bank": {
                "name": "bank", "in": "path", "required": true,
                "description": "A bank code: 1–16 of `[A-Za-z0-9]`, case-insensitive. A malformed one is 400 `invalid_bank`.",
                "schema": { "type": "string", "pattern": "^[A-Za-z0-9]{1,16}$" },
                // Sample rows every install has (sql/0005_seed_banks.sql).
                "examples": {
                    "paid": { "value": "BOFA", "summary": "A sample bank, cost 1." },
                    "free": { "value": "FREE", "summary": "A sample bank, cost 0." }
                }
            },
            "IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "1–128 visible ASCII characters. The same user sending the same key \
                    with the same request (method, path, query) within 24 h gets the first answer \
                    replayed (`Idempotency-Replayed: true`), not charged again; with a different \
                    request, 422 `idempotency_key_reused`, nothing charged. Empty, too long or sent \
                    twice: 400 `invalid_idempotency_key`.",
                "schema": { "type": "string", "pattern": "^[!-~]{1,128}$" }
            },
            "ServiceIdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "1–128 visible ASCII characters (draft-ietf-httpapi-idempotency-key-header). \
                    The same service sending the same key with the same request (method, path, query, \
                    body: its fields in any order) within 24 h gets the first answer replayed \
                    (`Idempotency-Replayed: true`), not charged again; with a different request, \
                    422 `idempotency_key_reused`, nothing done. Empty, too long or sent twice: 400 \
                    `invalid_idempotency_key`.",
                "schema": { "type": "string", "pattern": "^[!-~]{1,128}$" }
            },
            "HoldId": {
                "name": "id", "in": "path", "required": true,
                "description": "The hold's id, as `POST /v1/holds` gave it. Another service's hold, \
                    or anything not an id, is 404 `unknown_hold`.",
                "schema": { "type": "integer", "minimum": 1 }
            },
            "Username": {
                "name": "name", "in": "path", "required": true,
                "description": "A username; a malformed one is 400 `invalid_username`.",
                "schema": { "$ref": "#/components/schemas/Username" }
            }
    })
}

fn headers() -> Value {
    json!({
            "X-Credit-Remaining": {
                "description": "The caller's credit after this request.",
                "schema": { "type": "integer" }
            },
            "Retry-After": {
                "description": "Whole seconds to wait before retrying (402: to the next refill).",
                "schema": { "type": "integer", "minimum": 0 }
            },
            "WWW-Authenticate": {
                "description": "Always `Bearer realm=\"creditgate\"`.",
                "schema": { "type": "string", "const": "Bearer realm=\"creditgate\"" }
            },
            "Idempotency-Replayed": {
                "description": "`true` when this is the replayed answer of an earlier request with the same Idempotency-Key.",
                "schema": { "type": "string", "const": "true" }
            },
            "RateLimit": {
                "description": "A limited user's state: `\"user\";r=<requests left now>;t=<seconds until r is back to the quota>` \
                    (draft-ietf-httpapi-ratelimit-headers).",
                "schema": { "type": "string" }
            },
            "RateLimit-Policy": {
                "description": "A limited user's policy: `\"user\";q=<quota>;w=<window seconds>`.",
                "schema": { "type": "string" }
            }
    })
}

fn shared_responses() -> Value {
    json!({
            "Unauthorized": {
                "description": "No, malformed or wrong credentials (unknown user, wrong, revoked or expired key, disabled user: one body).",
                "headers": { "WWW-Authenticate": { "$ref": "#/components/headers/WWW-Authenticate" } },
                "content": json_content(error_schema(&["unauthorized"]))
            },
            "ServiceUnauthorized": {
                "description": "No, a wrong or a revoked service token, or more than one `Authorization` header.",
                "headers": { "WWW-Authenticate": { "$ref": "#/components/headers/WWW-Authenticate" } },
                "content": json_content(error_schema(&["unauthorized"]))
            },
            "ScopeDenied": {
                "description": "A valid service token without the scope this route needs.",
                "content": json_content(error_schema(&["scope_denied"]))
            },
            "IdempotencyKeyReused": {
                "description": "This Idempotency-Key was used by this service with a different request \
                    (method, path, query or body); nothing done.",
                "content": json_content(error_schema(&["idempotency_key_reused"]))
            },
            "HoldSettled": {
                "description": "The hold was settled otherwise before (captured with another amount, \
                    released, or expired; `state` names it): nothing changed. The error body, \
                    with the state and the hold.",
                "headers": { "Idempotency-Replayed": { "$ref": "#/components/headers/Idempotency-Replayed" } },
                "content": json_content(json!({ "$ref": "#/components/schemas/HoldSettled" }))
            },
            "AdminDisabled": {
                "description": "`CREDITGATE_ADMIN_TOKEN` is not set: the admin API is off.",
                "content": json_content(error_schema(&["admin_disabled"]))
            },
            "TooManyFailures": {
                "description": "Too many failed authentications from this address this minute.",
                "headers": { "Retry-After": { "$ref": "#/components/headers/Retry-After" } },
                "content": json_content(error_schema(&["too_many_failures"]))
            },
            "HeadersTooLarge": {
                "description": "The request's header block is over 16 KiB.",
                "content": json_content(error_schema(&["headers_too_large"]))
            },
            "Unavailable": {
                "description": "The database is unavailable, or the service is stopping; nothing charged.",
                "headers": { "Retry-After": { "$ref": "#/components/headers/Retry-After" } },
                "content": json_content(error_schema(&["unavailable"]))
            }
    })
}

/// The union of two JSON objects.
pub(crate) fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, doc: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("local refs only");
                        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                    }
                    m.values().for_each(|x| walk(x, doc));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
                _ => {}
            }
        }
        let doc = document();
        walk(&doc, &doc);
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = std::collections::HashSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    assert!(seen.insert(id.to_string()), "operationId {id} twice");
                }
            }
        }
    }

    // See: #26. `?token=` as a parameter said it may come next to an
    // `Authorization` header; the server answers that 400.
    #[test]
    fn user_operations_take_credentials_in_exactly_one_place() {
        let doc = document();
        for path in ["/api/v1.0/banks_data/{bank}/", "/api/v1.0/credit"] {
            let op = &doc["paths"][path]["get"];
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            assert!(
                !params.iter().any(|p| p.to_string().contains("Token")),
                "{path} declares ?token= as a parameter"
            );
            let alternatives = op["security"].as_array().expect("security");
            assert_eq!(alternatives.len(), 4, "{path}");
            assert!(alternatives
                .iter()
                .all(|a| a.as_object().unwrap().len() == 1));
            assert!(op["description"]
                .as_str()
                .unwrap()
                .contains("ambiguous_credentials"));
            let codes = op["responses"]["400"].to_string();
            assert!(codes.contains("ambiguous_credentials"), "{path}: {codes}");
        }
    }

    // The SPEC: every `/v1/` POST honours an Idempotency-Key, and a key
    // reused for another request answers 422.
    #[test]
    fn every_service_post_takes_an_idempotency_key_and_documents_its_422() {
        let doc = document();
        let mut posts = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            // Forward authentication is the proxy's, not a service's.
            if !path.starts_with("/v1/") || path == "/v1/forward-auth" {
                continue;
            }
            if let Some(op) = item.get("post") {
                posts += 1;
                assert!(
                    op["parameters"]
                        .to_string()
                        .contains("ServiceIdempotencyKey"),
                    "{path}"
                );
                assert!(op["responses"]["422"].is_object(), "{path}");
                assert_eq!(op["security"], json!([{ "serviceToken": ["charge"] }]));
            }
        }
        assert_eq!(posts, 4);
    }

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: Value = serde_json::from_str(text()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
