//! The `components/schemas` of the OpenAPI document: bodies in and out.
//!
//! A request schema says exactly what the server takes, no more and no
//! less, because schemathesis holds the server to both halves: every value
//! the schema allows must be accepted (`positive_data_acceptance`) and
//! every value it refuses must be refused (`negative_data_rejection`). Where
//! a rule is more than a type and a length (an upstream URL, a route
//! prefix, an e-mail address), it is a `pattern` written from the parser
//! that enforces it (`patterns` below), so that the two read the same.

use serde_json::{json, Value};

use super::{merge, ERROR_CODES};
use crate::billing::charge::MAX_AMOUNT;
use crate::billing::holds::MAX_TTL_SECS;
use crate::gateway::routes::BUILT_IN_PATHS;

/// Every schema of the document.
pub(super) fn all() -> Value {
    [
        errors_and_probes(),
        client(),
        users(),
        keys(),
        reports(),
        routes(),
        services(),
        webhooks(),
        charges_and_holds(),
    ]
    .into_iter()
    .fold(json!({}), merge)
}

fn errors_and_probes() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "additionalProperties": false,
            "properties": {
                "error": { "type": "string", "enum": ERROR_CODES },
                "message": { "type": "string" }
            }
        },
        "Status": {
            "type": "object", "required": ["status"],
            "properties": { "status": { "const": "ok" } }
        },
        "Stopping": {
            "type": "object", "required": ["success", "message"],
            "properties": { "success": { "const": true }, "message": { "type": "string" } }
        },
    })
}

/// The user-facing answers.
fn client() -> Value {
    json!({
        "BankAnswer": {
            "type": "object",
            "required": ["bank", "name", "country", "bic", "data", "credit_remaining"],
            "properties": {
                "bank": { "type": "string" },
                "name": { "type": "string" },
                "country": { "type": ["string", "null"] },
                "bic": { "type": ["string", "null"] },
                "data": { "description": "The bank's data, any JSON." },
                "credit_remaining": { "type": "integer", "minimum": 0 }
            }
        },
        "LegacyAnswer": {
            "oneOf": [
                { "type": "object", "required": ["Data"], "additionalProperties": false,
                  "properties": { "Data": { "$ref": "#/components/schemas/BankAnswer" } } },
                { "type": "object", "required": ["Status"], "additionalProperties": false,
                  "properties": { "Status": { "enum": ["No enough credit for this account", "Access Not Authorized"] } } }
            ]
        },
        "Balance": {
            "type": "object",
            "required": ["username", "credit", "held", "monthly_credit", "next_refill"],
            "properties": {
                "username": { "type": "string" },
                "credit": { "type": "integer", "minimum": 0,
                            "description": "What may be spent now: the balance less what open holds reserve." },
                "held": { "type": "integer", "minimum": 0, "description": "Reserved by open holds." },
                "monthly_credit": { "type": ["integer", "null"], "minimum": 0 },
                "next_refill": { "type": ["string", "null"], "description": "RFC 3339 UTC; null without monthly_credit." }
            }
        },
    })
}

/// A credit amount in a request: a whole number from `minimum` to i64's
/// maximum. `123.0` counts (JSON Schema's integer), up to 2^49: see
/// `model::whole_number`.
fn amount(description: &str, minimum: i64, nullable: bool) -> Value {
    let kind = if nullable {
        json!(["integer", "null"])
    } else {
        json!("integer")
    };
    json!({ "type": kind, "minimum": minimum, "maximum": i64::MAX, "description": description })
}

/// Users: what the admin API shows and what it takes.
fn users() -> Value {
    json!({
        "Username": {
            "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
            "description": "1–64 of `[A-Za-z0-9._-]`, case-sensitive."
        },
        "User": {
            "type": "object",
            "required": ["username", "token_prefix", "credit", "held", "monthly_credit", "refill_day",
                         "credit_period", "email", "disabled", "created_at", "rate_limit", "low_credit"],
            "properties": {
                "username": { "$ref": "#/components/schemas/Username" },
                "token_prefix": { "type": "string" },
                "credit": { "type": "integer", "minimum": 0, "description": "The balance, held credit included." },
                "held": { "type": "integer", "minimum": 0,
                          "description": "Reserved by open holds; `credit - held` may be spent." },
                "monthly_credit": { "type": ["integer", "null"], "minimum": 0 },
                "refill_day": { "type": "integer", "minimum": 1, "maximum": 31 },
                "credit_period": { "type": ["string", "null"], "description": "YYYY-MM of the last refill." },
                "email": { "type": ["string", "null"] },
                "disabled": { "type": "boolean" },
                "created_at": { "type": "string", "description": "RFC 3339 UTC." },
                "rate_limit": { "oneOf": [ { "type": "null" }, { "$ref": "#/components/schemas/RateLimit" } ] },
                "low_credit": { "type": ["integer", "null"], "minimum": 0 }
            }
        },
        "UserCreated": {
            "allOf": [
                { "$ref": "#/components/schemas/User" },
                { "type": "object", "required": ["token"], "properties": { "token": { "type": "string" } } }
            ]
        },
        "UserList": {
            "type": "object", "required": ["users"],
            "properties": { "users": { "type": "array", "items": { "$ref": "#/components/schemas/User" } } }
        },
        "NewUser": new_user(),
        "CreditChange": {
            "oneOf": [
                { "type": "object", "required": ["add"], "additionalProperties": false,
                  "properties": { "add": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX,
                                          "description": "May be negative; the result must not be." } } },
                { "type": "object", "required": ["set"], "additionalProperties": false,
                  "properties": { "set": amount("The new balance.", 0, false) } }
            ]
        },
        "NotifyChange": {
            "type": "object", "required": ["low_credit"], "additionalProperties": false,
            "properties": { "low_credit": amount("Low-credit notice threshold; null = none.", 0, true) }
        },
    })
}

fn new_user() -> Value {
    json!({
        "type": "object", "required": ["username"], "additionalProperties": false,
        "properties": {
            "username": { "$ref": "#/components/schemas/Username" },
            "credit": amount("Starting balance; default monthly_credit, else 0.", 0, false),
            "monthly_credit": amount("Monthly allowance; null = no refill.", 0, true),
            "refill_day": { "type": ["integer", "null"], "minimum": 1, "maximum": 31 },
            "email": { "type": ["string", "null"], "maxLength": 254, "pattern": patterns::email(),
                       "description": "An address with `@` inside (not first, not last), without \
                           blanks, control characters or commas; at most 254 characters." },
            "token": { "type": ["string", "null"], "maxLength": 512, "pattern": patterns::imported_token(),
                       "description": "Import an existing token (migrating the sample's users): \
                           1–512 characters, no control characters, no blank at either end." },
            "rate_limit": { "oneOf": [ { "type": "null" }, { "$ref": "#/components/schemas/RateLimitChange" } ],
                            "description": "null or {\"quota\": null}: no limit." },
            "low_credit": amount("Low-credit notice threshold; null = none.", 0, true)
        }
    })
}

/// Keys, rotation and rate limits: what guards a user's access.
fn keys() -> Value {
    json!({
        "Rotate": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "grace_secs": { "type": ["integer", "null"], "minimum": 0, "maximum": 316_224_000,
                                "description": "Seconds the other keys keep working; default 0." }
            }
        },
        "Rotated": {
            "type": "object", "required": ["username", "token"],
            "properties": { "username": { "type": "string" }, "token": { "type": "string" } }
        },
        "Key": {
            "type": "object",
            "required": ["id", "label", "prefix", "created_at", "expires_at", "last_used_at"],
            "properties": {
                "id": { "type": "integer", "minimum": 0 },
                "label": { "type": ["string", "null"] },
                "prefix": { "type": "string" },
                "created_at": { "type": "string" },
                "expires_at": { "type": ["string", "null"] },
                "last_used_at": { "type": ["string", "null"], "description": "Exact to a minute." }
            }
        },
        "KeyCreated": {
            "allOf": [
                { "$ref": "#/components/schemas/Key" },
                { "type": "object", "required": ["token"], "properties": { "token": { "type": "string" } } }
            ]
        },
        "KeyList": {
            "type": "object", "required": ["keys"],
            "properties": { "keys": { "type": "array", "items": { "$ref": "#/components/schemas/Key" } } }
        },
        "NewKey": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "label": { "type": ["string", "null"], "maxLength": 64, "pattern": patterns::LABEL,
                           "description": "At most 64 characters, no control characters." },
                "expires_at": { "type": ["string", "null"], "format": "date-time", "description": "RFC 3339." }
            }
        },
        "RateLimit": {
            "type": "object", "required": ["quota", "window_secs"], "additionalProperties": false,
            "properties": {
                "quota": { "type": "integer", "minimum": 1, "maximum": 1_000_000 },
                "window_secs": { "type": "integer", "minimum": 1, "maximum": 86_400 }
            }
        },
        "RateLimitChange": {
            "oneOf": [
                { "$ref": "#/components/schemas/RateLimit" },
                { "type": "object", "required": ["quota"], "additionalProperties": false,
                  "properties": { "quota": { "type": "null" },
                                  "window_secs": { "description": "Ignored when quota is null, whatever it holds." } } }
            ]
        },
    })
}

/// Usage and jobs.
fn reports() -> Value {
    json!({
        "UsageReport": {
            "type": "object", "required": ["rows"],
            "properties": { "rows": { "type": "array", "items": {
                "type": "object", "required": ["username", "day", "endpoint", "calls", "credits"],
                "properties": {
                    "username": { "type": "string" },
                    "day": { "type": "string", "description": "YYYY-MM-DD" },
                    "endpoint": { "type": "string" },
                    "calls": { "type": "integer", "minimum": 0 },
                    "credits": { "type": "integer", "minimum": 0 }
                }
            } } }
        },
        "LedgerPage": {
            "type": "object", "required": ["username", "rows", "next_before"],
            "properties": {
                "username": { "type": "string" },
                "rows": { "type": "array", "items": {
                    "type": "object",
                    "required": ["id", "at", "delta", "balance_after", "reason", "period", "actor"],
                    "properties": {
                        "id": { "type": "integer", "minimum": 1 },
                        "at": { "type": "string", "description": "RFC 3339 UTC, to the second" },
                        "delta": { "type": "integer" },
                        "balance_after": { "type": "integer", "minimum": 0 },
                        "reason": { "type": "string", "enum": ["create", "top-up", "set", "monthly-refill", "import", "refund"] },
                        "period": { "type": ["string", "null"], "description": "YYYY-MM of a monthly refill" },
                        "actor": { "type": "string", "description": "cli:<os user>, admin-api, console, gateway, job:…, service:<name>" }
                    }
                } },
                "next_before": {
                    "type": ["integer", "null"], "minimum": 1,
                    "description": "Pass as `before` for the older rows; null on the last page."
                }
            }
        },
        "UsageExportRow": {
            "type": "object",
            "required": ["username", "key_id", "key_name", "day", "endpoint", "calls", "credits"],
            "properties": {
                "username": { "type": "string" },
                "key_id": { "type": ["integer", "null"], "minimum": 1,
                            "description": "The API key that authenticated the calls; null: no key." },
                "key_name": { "type": ["string", "null"], "description": "The key's label." },
                "day": { "type": "string", "description": "YYYY-MM-DD" },
                "endpoint": { "type": "string" },
                "calls": { "type": "integer", "minimum": 0 },
                "credits": { "type": "integer", "minimum": 0 }
            }
        },
        "Job": {
            "type": "object",
            "required": ["id", "schedule", "paused", "last_run", "last_result", "next_run"],
            "properties": {
                "id": { "type": "string" },
                "schedule": { "type": "string" },
                "paused": { "type": "boolean" },
                "last_run": { "type": ["string", "null"] },
                "last_result": { "type": ["string", "null"] },
                "next_run": { "type": ["string", "null"] }
            }
        },
        "JobList": {
            "type": "object", "required": ["jobs"],
            "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } } }
        },
    })
}

/// Gateway routes.
fn routes() -> Value {
    json!({
        "Route": {
            "type": "object",
            "required": ["id", "prefix", "upstream", "cost", "methods", "charge_on", "timeout_ms", "strip_prefix", "created_at"],
            "properties": {
                "id": { "type": "integer", "minimum": 0 },
                "prefix": { "type": "string" },
                "upstream": { "type": "string" },
                "cost": { "type": "integer", "minimum": 0 },
                "methods": { "type": "array", "items": { "type": "string" } },
                "charge_on": { "enum": ["2xx", "non-5xx", "always"] },
                "timeout_ms": { "type": "integer", "minimum": 1, "maximum": 600_000 },
                "strip_prefix": { "type": "boolean" },
                "max_in_flight": { "type": ["integer", "null"], "minimum": 1,
                                   "description": "Requests in flight at once on one instance; null = half the handler threads." },
                "max_cost": { "type": ["integer", "null"], "minimum": 1,
                              "description": "Priced by the upstream: what a request holds; null = the fixed cost." },
                "cost_header": { "type": "string", "description": "The answer header that states the price." },
                "created_at": { "type": "string" }
            }
        },
        "RouteList": {
            "type": "object", "required": ["routes"],
            "properties": { "routes": { "type": "array", "items": { "$ref": "#/components/schemas/Route" } } }
        },
        "NewRoute": new_route(),
    })
}

/// Webhook endpoints (Standard Webhooks).
fn webhooks() -> Value {
    let event = json!({ "enum": crate::webhooks::EventType::ALL.map(|e| e.as_str()) });
    let names = crate::webhooks::EventType::ALL
        .map(|e| e.as_str().replace('.', "\\."))
        .join("|");
    json!({
        "Webhook": {
            "type": "object", "required": ["id", "url", "events", "created_at"],
            "properties": {
                "id": { "type": "integer", "minimum": 0 },
                "url": { "type": "string", "description": "Where events are POSTed." },
                "events": { "type": "array", "items": event, "minItems": 1, "uniqueItems": true },
                "created_at": { "type": "string", "description": "RFC 3339 UTC." }
            }
        },
        "WebhookCreated": {
            "allOf": [
                { "$ref": "#/components/schemas/Webhook" },
                { "type": "object", "required": ["secret"],
                  "properties": { "secret": {
                      "type": "string", "pattern": "^whsec_[A-Za-z0-9+/]+=*$",
                      "description": "The signing secret (Standard Webhooks), shown this once."
                  } } }
            ]
        },
        "WebhookList": {
            "type": "object", "required": ["webhooks"],
            "properties": { "webhooks": { "type": "array", "items": { "$ref": "#/components/schemas/Webhook" } } }
        },
        "NewWebhook": {
            "type": "object", "required": ["url", "events"], "additionalProperties": false,
            "properties": {
                "url": {
                    "type": "string", "maxLength": crate::webhooks::store::MAX_URL_LEN,
                    "pattern": "^https?://[!-.0-~][!-~]*$",
                    "description": "`http://` or `https://`, a host and a path; printable ASCII."
                },
                "events": {
                    "description": "A list of event types (repeats allowed), or the CLI's comma form.",
                    "oneOf": [
                        { "type": "array", "items": event, "minItems": 1 },
                        { "type": "string", "pattern": format!("^ *(?:{names}) *(?:, *(?:{names}) *)*$") }
                    ]
                }
            }
        },
    })
}

/// Services: the backends with a token for the `/v1/` routes.
fn services() -> Value {
    let scope = json!({ "enum": ["charge", "read"] });
    json!({
        "ServiceName": {
            "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
            "description": "1–64 of `[A-Za-z0-9._-]`, case-sensitive."
        },
        "Scopes": {
            "type": "array", "items": scope, "minItems": 1, "uniqueItems": true,
            "description": "`charge`: the `/v1/` calls that move credit; `read`: balances and usage of any user."
        },
        "Service": {
            "type": "object", "required": ["name", "scopes", "prefix", "created_at", "revoked_at"],
            "properties": {
                "name": { "$ref": "#/components/schemas/ServiceName" },
                "scopes": { "$ref": "#/components/schemas/Scopes" },
                "prefix": { "type": "string", "description": "The token's first characters, for display." },
                "created_at": { "type": "string", "description": "RFC 3339 UTC." },
                "revoked_at": { "type": ["string", "null"], "description": "RFC 3339 UTC; null while it works." }
            }
        },
        "ServiceCreated": {
            "allOf": [
                { "$ref": "#/components/schemas/Service" },
                { "type": "object", "required": ["token"],
                  "properties": { "token": { "type": "string", "pattern": "^cgs_[A-Za-z0-9_-]+$" } } }
            ]
        },
        "ServiceList": {
            "type": "object", "required": ["services"],
            "properties": { "services": { "type": "array", "items": { "$ref": "#/components/schemas/Service" } } }
        },
        "NewService": {
            "type": "object", "required": ["name", "scopes"], "additionalProperties": false,
            "properties": {
                "name": { "$ref": "#/components/schemas/ServiceName" },
                "scopes": {
                    "description": "A list of scopes (repeats allowed), or the CLI's comma form `charge,read`.",
                    "oneOf": [
                        { "type": "array", "items": scope, "minItems": 1 },
                        { "type": "string", "pattern": "^ *(?:charge|read) *(?:, *(?:charge|read) *)*$" }
                    ]
                }
            }
        },
        "ForwardAuthAllowed": {
            "type": "object", "required": ["user", "credit_remaining"],
            "properties": {
                "user": { "type": "string" },
                "credit_remaining": { "type": "integer" }
            }
        },
        "Whoami": {
            "type": "object", "required": ["service", "scopes"],
            "properties": {
                "service": { "$ref": "#/components/schemas/ServiceName" },
                "scopes": { "$ref": "#/components/schemas/Scopes" }
            }
        },
    })
}

/// The service API's bodies: `/v1/charge` and `/v1/holds…`.
fn charges_and_holds() -> Value {
    let amount = |minimum: i64, description: &str| json!({ "type": "integer", "minimum": minimum, "maximum": MAX_AMOUNT, "description": description });
    let endpoint = |default: &str| {
        json!({ "type": "string", "pattern": "^[A-Za-z0-9._:/-]{1,64}$", "default": default,
                "description": "The usage label: 1–64 of `[A-Za-z0-9._:/-]`." })
    };
    let credentials = json!({
        "type": "string", "pattern": r"^[^:]+:[\s\S]+$",
        "description": "The end user's `<username>:<token>`, as they sent it to the service: \
            a wrong one is a 200 `UNAUTHORIZED`, not a 401."
    });
    let user = json!({
        "allOf": [ { "$ref": "#/components/schemas/Username" } ],
        "description": "A user the service authenticated itself."
    });
    // Exactly one of the two names the user (both, or neither: 400).
    let one_user = json!([ { "required": ["credentials"] }, { "required": ["user"] } ]);
    let timestamp = json!({
        "type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        "description": "RFC 3339, UTC, to the millisecond."
    });
    let code = |codes: &[&str]| json!({ "enum": codes });
    let refusal_codes = ["UNAUTHORIZED", "INSUFFICIENT_CREDIT", "RATE_LIMITED"];
    let remaining = json!({ "type": ["integer", "null"], "minimum": 0,
                            "description": "What the user may spend; null for `UNAUTHORIZED`." });
    let retry_after = json!({ "type": "integer", "minimum": 0,
                              "description": "Seconds until a retry can succeed (the rate limit, or the next refill), when known." });
    json!({
        "ChargeRequest": {
            "type": "object", "additionalProperties": false, "oneOf": one_user,
            "properties": {
                "credentials": credentials,
                "user": user,
                "cost": amount(0, "Credits to charge, default 1; 0 checks without charging."),
                "endpoint": endpoint("charge")
            }
        },
        "ChargeAnswer": {
            "type": "object", "required": ["valid", "code", "user", "cost", "credit_remaining"],
            "description": "Every decided outcome: `valid` is true exactly when `code` is `VALID` \
                (charged).",
            "properties": {
                "valid": { "type": "boolean" },
                "code": code(&["VALID", "UNAUTHORIZED", "INSUFFICIENT_CREDIT", "RATE_LIMITED"]),
                "user": { "type": "string", "description": "The user named in the request." },
                "cost": { "type": "integer", "minimum": 0 },
                "credit_remaining": remaining,
                "retry_after": retry_after
            }
        },
        "HoldRequest": {
            "type": "object", "required": ["amount"], "additionalProperties": false, "oneOf": one_user,
            "properties": {
                "credentials": credentials,
                "user": user,
                "amount": amount(1, "Credits to reserve."),
                "ttl_secs": { "type": "integer", "minimum": 1, "maximum": MAX_TTL_SECS, "default": 300,
                              "description": "Seconds until the hold expires (released by a job)." },
                "endpoint": endpoint("hold")
            }
        },
        "Hold": {
            "type": "object",
            "required": ["id", "user", "amount", "state", "endpoint", "created_at", "expires_at"],
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "user": { "type": "string" },
                "amount": { "type": "integer", "minimum": 1, "maximum": MAX_AMOUNT },
                "state": { "enum": ["open", "captured", "released", "expired"] },
                "endpoint": { "type": "string" },
                "created_at": timestamp,
                "expires_at": timestamp,
                "captured": { "type": "integer", "minimum": 0, "description": "Charged; once captured." },
                "uncollected": { "type": "integer", "minimum": 0,
                                 "description": "The capture's amount less `captured`: what the user's credit could not cover; once captured." }
            }
        },
        "HoldGranted": {
            "type": "object", "required": ["valid", "hold", "credit_available"],
            "properties": {
                "valid": { "const": true },
                "hold": { "$ref": "#/components/schemas/Hold" },
                "credit_available": { "type": "integer", "minimum": 0,
                                      "description": "What the user may spend besides this hold." }
            }
        },
        "HoldRefused": {
            "type": "object", "required": ["valid", "code", "user", "amount", "credit_remaining"],
            "properties": {
                "valid": { "const": false },
                "code": code(&refusal_codes),
                "user": { "type": "string", "description": "The user named in the request." },
                "amount": { "type": "integer", "minimum": 1 },
                "credit_remaining": remaining,
                "retry_after": retry_after
            }
        },
        "HoldShown": {
            "type": "object", "required": ["hold"],
            "properties": { "hold": { "$ref": "#/components/schemas/Hold" } }
        },
        "Capture": {
            "type": "object", "required": ["amount"], "additionalProperties": false,
            "properties": {
                "amount": amount(0, "The real price. Up to the hold, charged in full; beyond it, \
                    as much of the user's other credit as covers it (never below 0).")
            }
        },
        "Captured": {
            "type": "object", "required": ["hold", "credit_remaining", "captured", "uncollected"],
            "properties": {
                "hold": { "$ref": "#/components/schemas/Hold" },
                "credit_remaining": { "type": "integer", "minimum": 0 },
                "captured": { "type": "integer", "minimum": 0 },
                "uncollected": { "type": "integer", "minimum": 0 }
            }
        },
        "Release": {
            "type": "object", "additionalProperties": false, "maxProperties": 0,
            "description": "No fields: `{}`, or no body at all."
        },
        "Released": {
            "type": "object", "required": ["hold", "credit_remaining"],
            "properties": {
                "hold": { "$ref": "#/components/schemas/Hold" },
                "credit_remaining": { "type": "integer", "minimum": 0 }
            }
        },
        "HoldSettled": {
            "type": "object", "required": ["error", "message", "state", "hold"],
            "additionalProperties": false,
            "properties": {
                "error": { "const": "hold_settled" },
                "message": { "type": "string" },
                "state": { "enum": ["captured", "released", "expired"] },
                "hold": { "$ref": "#/components/schemas/Hold" }
            }
        },
    })
}

fn new_route() -> Value {
    json!({
        "type": "object", "required": ["prefix", "upstream"], "additionalProperties": false,
        "properties": {
            "prefix": { "type": "string", "minLength": 2, "maxLength": 128, "pattern": patterns::prefix(),
                        "description": "`/` and segments of `[A-Za-z0-9._~-]`: no `//`, no trailing `/`, \
                            no `.` or `..` segment; not equal to, under, or a parent of a built-in path." },
            "upstream": { "type": "string", "maxLength": 2048, "pattern": patterns::upstream(),
                          "description": "`http://host[:port][/base]` or `https://…` (the scheme in any \
                              case, RFC 3986): a DNS name (labels of 1–63 of `[A-Za-z0-9_-]`, not \
                              starting or ending with `-`, at most 253 characters, not all digits), \
                              a dotted IPv4 address or `[IPv6]`; a port 1–65535; a base path of \
                              URL path characters without `//` or dot segments; no user, query or fragment." },
            "cost": amount("Credits per request; default 1.", 0, true),
            "methods": { "type": ["array", "null"], "items": { "type": "string", "pattern": patterns::METHODS },
                         "description": "Methods (or comma-separated lists of them), stored upper-cased; \
                             empty = any. At most 512 characters once upper-cased, without \
                             duplicates, and joined with commas (a rule JSON Schema cannot say)." },
            "charge_on": { "oneOf": [ { "type": "null" }, { "enum": ["2xx", "non-5xx", "always"] } ] },
            "timeout_ms": { "type": ["integer", "null"], "minimum": 1, "maximum": 600_000 },
            "strip_prefix": { "type": ["boolean", "null"] },
            "max_in_flight": { "type": ["integer", "null"], "minimum": 1, "maximum": 100_000,
                               "description": "Default (null): half the handler threads." },
            "max_cost": amount("Priced by the upstream: a request holds this much, is forwarded, \
                and is charged the price its answer states in `cost_header` (at most this; \
                `cost` when it states none), or nothing when not billable. Null (the default): \
                the fixed `cost`, charged before forwarding.", 1, true),
            "cost_header": { "type": ["string", "null"], "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$",
                             "description": "The answer header that states the price; default X-Credit-Cost." }
        }
    })
}

/// ECMA-262 patterns (JSON Schema's dialect), each written from the parser
/// that enforces the rule. Lookaheads say what a plain pattern cannot: a
/// host that is no longer than 253 characters and not all digits, a
/// segment that is not a dot segment.
pub(super) mod patterns {
    use super::BUILT_IN_PATHS;

    /// `char::is_control` (Unicode Cc) and `char::is_whitespace` (Unicode
    /// White_Space), as a character-class body: what `model::Email` and
    /// `model::ImportedToken` refuse.
    const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
    const BLANK_OR_CONTROL: &str =
        r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

    /// `model::parse_label`: no control characters (the length is maxLength).
    pub const LABEL: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

    /// `gateway::routes::Methods::parse`: RFC 9110 tokens of at most 32,
    /// comma-separated, blanks around them and empty items skipped.
    pub const METHODS: &str = r"^[ \t]*(?:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}[ \t]*)?(?:,[ \t]*(?:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}[ \t]*)?)*$";

    /// `model::Email::parse`: an `@` neither first nor last, no blanks,
    /// control characters or commas.
    pub fn email() -> String {
        let no = format!("{BLANK_OR_CONTROL},");
        format!("^[^@{no}][^{no}]*@[^{no}]*[^@{no}]$")
    }

    /// `model::ImportedToken::parse`: no control characters, no blank at
    /// either end, not empty.
    pub fn imported_token() -> String {
        format!("^[^{BLANK_OR_CONTROL}](?:[^{CONTROL}]*[^{BLANK_OR_CONTROL}])?$")
    }

    /// `gateway::routes::Prefix::parse`: segments that are not `.` or `..`,
    /// and neither a built-in path, nor under one, nor a parent of one.
    pub fn prefix() -> String {
        let escape = |p: &str| p.replace('.', r"\.");
        let built_in: Vec<String> = BUILT_IN_PATHS.iter().map(|p| escape(p)).collect();
        let mut parents: Vec<String> = Vec::new();
        for path in BUILT_IN_PATHS {
            let mut at = path.len();
            while let Some(slash) = path[..at].rfind('/').filter(|&s| s > 0) {
                parents.push(escape(&path[..slash]));
                at = slash;
            }
        }
        parents.sort();
        parents.dedup();
        format!(
            r"^(?!(?:{})$)(?!(?:{})(?:/|$))(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+$",
            parents.join("|"),
            built_in.join("|")
        )
    }

    /// `gateway::routes::Upstream::parse`: scheme, host, port, base path.
    pub fn upstream() -> String {
        let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
        let ipv4 = format!(r"(?:{octet}\.){{3}}{octet}");
        let label = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
        // All digits and dots is an IPv4 address or nothing.
        let name = format!(r"(?![0-9.]+(?::|/|$)){label}(?:\.{label})*");
        let port = "(?!0{1,5}(?:/|$))(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
        let pchar = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})";
        let segment = format!(r"(?!(?:\.|%2[Ee]){{1,2}}(?:/|$)){pchar}+");
        format!(
            r"^[Hh][Tt][Tt][Pp][Ss]?://(?![^/:]{{254}})(?:\[(?:{})\]|{ipv4}|{name})(?::{port})?(?:/{segment})*/?$",
            ipv6()
        )
    }

    /// What `std::net::Ipv6Addr` parses, less the forms with an IPv4 tail.
    fn ipv6() -> String {
        let h = "[0-9A-Fa-f]{1,4}";
        [
            format!("(?:{h}:){{7}}{h}"),
            format!("(?:{h}:){{1,7}}:"),
            format!("(?:{h}:){{1,6}}:{h}"),
            format!("(?:{h}:){{1,5}}(?::{h}){{1,2}}"),
            format!("(?:{h}:){{1,4}}(?::{h}){{1,3}}"),
            format!("(?:{h}:){{1,3}}(?::{h}){{1,4}}"),
            format!("(?:{h}:){{1,2}}(?::{h}){{1,5}}"),
            format!("{h}:(?::{h}){{1,6}}"),
            format!(":(?:(?::{h}){{1,7}}|:)"),
        ]
        .map(|alt| format!("(?:{alt})"))
        .join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pattern is built from the router's list, so a new built-in path
    // is refused as a prefix by the document as by the server.
    #[test]
    fn the_prefix_pattern_names_every_built_in_path_and_its_parents() {
        let pattern = patterns::prefix();
        for path in BUILT_IN_PATHS {
            assert!(pattern.contains(&path.replace('.', r"\.")), "{path}");
        }
        let parents: Vec<&str> = pattern
            .strip_prefix("^(?!(?:")
            .and_then(|p| p.split(")$)").next())
            .expect("the parents come first")
            .split('|')
            .collect();
        assert_eq!(parents, ["/_ah", "/api", r"/api/v1\.0", "/v1"]);
        // Only `.` needs escaping in them, as `prefix()` assumes (`-` is
        // literal outside a character class).
        assert!(BUILT_IN_PATHS.iter().all(|p| p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))));
    }

    // Credit amounts are i64 in the database; a schema without a maximum
    // lets a fuzzer (or a client) send 2^64, which the server refuses.
    #[test]
    fn every_number_schema_of_a_request_body_is_bounded() {
        let all = all();
        for (name, field) in [
            ("NewUser", "credit"),
            ("NewUser", "monthly_credit"),
            ("NewUser", "low_credit"),
            ("NotifyChange", "low_credit"),
            ("NewRoute", "cost"),
        ] {
            let s = &all[name]["properties"][field];
            assert_eq!(
                (s["minimum"].as_i64(), s["maximum"].as_i64()),
                (Some(0), Some(i64::MAX)),
                "{name}.{field}"
            );
        }
    }
}
