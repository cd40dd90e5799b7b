//! Service authentication for the `/v1/` routes: the one extractor that
//! turns `Authorization: Bearer cgs_…` into a `Service` holding the scope a
//! route needs. The token rules live in `crate::services`; this file says
//! which answer each failure gets and what the brake and the log count.

use rouille::Request;

use super::{authorization_headers, count_auth_failure, refuse_if_throttled, ApiError, Ctx};
use crate::app::AppState;
use crate::auth::token;
use crate::billing::account::PER_REQUEST;
use crate::db::{self, DbError};
use crate::services::{self, Scope, Service};

/// The service whose token the request carries, if it holds `scope`.
/// 429 for a throttled address (before any token is looked at); 401 for
/// no, a wrong or a revoked token, or more than one `Authorization`
/// header; 403 `scope_denied` for a valid token without `scope`; 503 when
/// the database cannot say.
// The `/v1/` charge and holds routes call it; until they land, only the
// tests and `/v1/whoami` (through `any_service`) do.
#[allow(dead_code)]
pub(crate) fn service(
    state: &AppState,
    req: &Request,
    ctx: &mut Ctx,
    scope: Scope,
) -> Result<Service, ApiError> {
    let service = any_service(state, req, ctx)?;
    if !service.scopes.allows(scope) {
        // Not counted as a failed authentication: the token is right, and a
        // backend sent to the wrong route must not lock out its address.
        log::info!(
            "req={} service {} lacks the {scope} scope",
            ctx.id,
            service.name
        );
        return Err(ApiError::ScopeDenied(scope));
    }
    Ok(service)
}

/// The service whose token the request carries, whatever its scopes
/// (`GET /v1/whoami`); `service` without the scope check.
pub(crate) fn any_service(
    state: &AppState,
    req: &Request,
    ctx: &mut Ctx,
) -> Result<Service, ApiError> {
    refuse_if_throttled(state, req)?;
    // One header only: with two, which one authenticated would be the
    // server's guess (the admin check refuses two the same way).
    // A user's `name:token` or the admin token is refused on its form,
    // without taking a connection from the pool for it.
    let given = match authorization_headers(req).as_slice() {
        [v] => token::bearer(v).filter(|t| t.starts_with(services::TOKEN_KIND)),
        _ => None,
    };
    let Some(given) = given else {
        return Err(refused(state, req, ctx, "no service token"));
    };
    let found = {
        let mut conn = state.pool.get().map_err(DbError::from)?;
        let sql = conn.prepared(PER_REQUEST)?;
        let found = services::authenticate_with(&mut **conn, &sql, given)?;
        // It just answered: its next checkout (this request's charge,
        // mostly) need not ping it first.
        db::trust(&mut conn);
        found
    };
    let Some(service) = found else {
        return Err(refused(state, req, ctx, "unknown or revoked service token"));
    };
    // Named in the access log even when a scope turns out missing, so that
    // an operator sees which backend is misconfigured.
    ctx.user = Some(service.actor());
    Ok(service)
}

/// Counts the failure (metrics, the brake, the log) and gives the 401.
fn refused(state: &AppState, req: &Request, ctx: &Ctx, why: &str) -> ApiError {
    count_auth_failure(state, req, ctx, &why);
    ApiError::ServiceUnauthorized
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openapi_drift;

    fn ctx() -> Ctx {
        Ctx {
            id: 0,
            route: "whoami",
            user: None,
        }
    }

    fn attempt(headers: &[&str]) -> Result<Service, ApiError> {
        let state = openapi_drift::state();
        let headers = headers
            .iter()
            .map(|v| ("Authorization".to_string(), v.to_string()))
            .collect();
        let req = Request::fake_http("GET", "/v1/whoami", headers, Vec::new());
        service(&state, &req, &mut ctx(), Scope::Read)
    }

    // None of these reach the database (which the test state does not
    // have): they are refused on their form.
    #[test]
    fn what_is_not_one_bearer_service_token_is_a_401() {
        for headers in [
            &[][..],
            &["Bearer"],
            &["Basic YWxpY2U6Y2dfdA=="],
            &["cgs_abc"],
            &["Bearer alice:cg_token"],
            &["Bearer drift-test-admin-token"],
            &["Bearer cgs_a", "Bearer cgs_a"],
        ] {
            match attempt(headers) {
                Err(e @ ApiError::ServiceUnauthorized) => {
                    assert_eq!((e.status(), e.code()), (401, "unauthorized"));
                    let r = e.response();
                    assert!(r.headers.iter().any(|(k, _)| k == "WWW-Authenticate"));
                }
                other => panic!("{headers:?}: {other:?}"),
            }
        }
    }

    // A database failure is a 503, never a 401: a 401 would count against
    // the address and tell the backend its token is wrong.
    #[test]
    fn a_service_token_with_the_database_down_is_a_503() {
        match attempt(&["Bearer cgs_whatever"]) {
            Err(e) => assert_eq!((e.status(), e.code()), (503, "unavailable")),
            Ok(s) => panic!("authenticated {s:?}"),
        }
    }

    #[test]
    fn a_missing_scope_is_a_403_naming_it() {
        let e = ApiError::ScopeDenied(Scope::Charge);
        assert_eq!((e.status(), e.code()), (403, "scope_denied"));
        assert!(e.message().contains("\"charge\""), "{}", e.message());
    }
}
