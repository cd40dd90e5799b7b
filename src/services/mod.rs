//! Services: the backends that call the `/v1/` API (charge, holds, reads)
//! with a service token, never with the admin token. Here: add, list and
//! revoke, shared by the CLI and the admin API, and `authenticate` for the
//! HTTP edge. As for users' keys, a token is shown once, when it is made;
//! only its SHA-256 and a short prefix are stored. Which `/v1/` call needs
//! which scope is the edge's to say; a service's scopes are kept here.

use std::fmt;

use mysql::prelude::Queryable;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::auth::token;
use crate::db::{DbError, Pool, Retryable, Statements};

/// What every service token starts with: a user's token starts `cg_`, so a
/// token in a log or a leak report says which kind it is, and the edge
/// tells one from the other without asking the database.
pub const TOKEN_KIND: &str = "cgs_";

/// The longest service name (`services.name` is a VARCHAR(64)).
pub const MAX_NAME_LEN: usize = 64;

/// An authenticated service, as the `/v1/` routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: u64,
    pub name: String,
    pub scopes: Scopes,
}

impl Service {
    /// The actor written to ledger and usage rows made for this service.
    pub fn actor(&self) -> String {
        format!("service:{}", self.name)
    }
}

/// What a service may do: `charge` (the `/v1/` calls that move credit)
/// and `read` (balances and usage of any user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scopes {
    pub charge: bool,
    pub read: bool,
}

/// One scope, as a route asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Charge,
    Read,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Charge, Scope::Read];

    /// The scope's name, as stored, sent and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Charge => "charge",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const SCOPE_RULE: &str = "scopes are charge, read or both (charge,read)";

impl Scopes {
    /// `charge`, `read` or both, comma-separated (blanks around a name are
    /// skipped; order and repeats do not matter). At least one: a service
    /// that may do nothing is a mistake, not a configuration.
    pub fn parse(s: &str) -> Result<Scopes, ServiceError> {
        Scopes::from_names(s.split(','))
    }

    /// The same rule over names already split (the admin API's JSON list).
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Scopes, ServiceError> {
        let mut scopes = Scopes {
            charge: false,
            read: false,
        };
        for name in names {
            match name.trim_matches(' ') {
                "charge" => scopes.charge = true,
                "read" => scopes.read = true,
                other => {
                    return Err(ServiceError::Invalid(format!(
                        "unknown scope {other:?}; {SCOPE_RULE}"
                    )))
                }
            }
        }
        if scopes.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "no scope given; {SCOPE_RULE}"
            )));
        }
        Ok(scopes)
    }

    pub fn allows(&self, s: Scope) -> bool {
        match s {
            Scope::Charge => self.charge,
            Scope::Read => self.read,
        }
    }

    fn is_empty(&self) -> bool {
        !self.charge && !self.read
    }

    /// The names of the scopes held, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.allows(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// From the `SET('charge','read')` column: the database only holds
    /// members of the set, so nothing is refused here.
    fn from_column(set: &str) -> Scopes {
        Scopes {
            charge: set.split(',').any(|s| s == "charge"),
            read: set.split(',').any(|s| s == "read"),
        }
    }
}

/// As a list of names, `["charge", "read"]`, in the admin API and `--json`.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = self.names();
        let mut seq = serializer.serialize_seq(Some(names.len()))?;
        for n in names {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

/// A service as shown to operators: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub scopes: Scopes,
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug)]
pub enum ServiceError {
    /// A name or scope list that is refused; the text says why.
    Invalid(String),
    /// A service of this name exists (revoked ones included).
    Exists(String),
    Unknown(String),
    Db(DbError),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Invalid(m) => f.write_str(m),
            ServiceError::Exists(n) => write!(
                f,
                "a service {n:?} exists (a revoked one keeps its name); choose another name"
            ),
            ServiceError::Unknown(n) => write!(f, "no service {n:?}"),
            ServiceError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl Retryable for ServiceError {
    fn is_conflict(&self) -> bool {
        matches!(self, ServiceError::Db(DbError::Conflict(_)))
    }
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        ServiceError::Db(e)
    }
}

impl From<mysql::Error> for ServiceError {
    fn from(e: mysql::Error) -> Self {
        ServiceError::Db(e.into())
    }
}

impl From<r2d2::Error> for ServiceError {
    fn from(e: r2d2::Error) -> Self {
        ServiceError::Db(e.into())
    }
}

/// A service name: 1 to 64 of `[A-Za-z0-9._-]`. So narrow because it is
/// written into `service:<name>` actors, logs and a URL path segment, and
/// the column compares it as ASCII.
pub fn parse_name(s: &str) -> Result<&str, ServiceError> {
    let ok = (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(s)
    } else {
        Err(ServiceError::Invalid(format!(
            "a service name is 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, not {s:?}"
        )))
    }
}

/// The service a `cgs_…` token belongs to, if any and not revoked. One
/// indexed SELECT by the token's hash. The final yes is a constant-time
/// compare of the whole hash, not the index's: `token_hash` compares with
/// a case-insensitive collation.
pub fn authenticate(conn: &mut impl Queryable, token: &str) -> Result<Option<Service>, DbError> {
    authenticate_with(conn, &Statements::default(), token)
}

/// The one query of `authenticate`, prepared with the per-request
/// statements (`billing::account::PER_REQUEST`).
pub const AUTHENTICATE: &str = "SELECT id, name, token_hash, scopes FROM services \
     WHERE token_hash = ? AND revoked_at IS NULL";

/// `authenticate` with the connection's prepared statements.
pub fn authenticate_with(
    conn: &mut impl Queryable,
    sql: &Statements,
    token: &str,
) -> Result<Option<Service>, DbError> {
    // Not a service token (a user's `name:token`, the admin token): no
    // service can hold it, and the database need not be asked.
    if !token.starts_with(TOKEN_KIND) {
        return Ok(None);
    }
    let hash = token::hash(token);
    let row: Option<(u64, String, String, String)> =
        conn.exec_first(sql.get(AUTHENTICATE), (&hash,))?;
    Ok(row
        .filter(|(_, _, stored, _)| token::constant_time_eq(hash.as_bytes(), stored.as_bytes()))
        .map(|(id, name, _, scopes)| Service {
            id,
            name,
            scopes: Scopes::from_column(&scopes),
        }))
}

const INFO_COLUMNS: &str = "name, scopes, prefix, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ'), \
     DATE_FORMAT(revoked_at, '%Y-%m-%dT%H:%i:%sZ')";

type InfoRow = (String, String, String, String, Option<String>);

fn from_row(r: InfoRow) -> ServiceInfo {
    ServiceInfo {
        name: r.0,
        scopes: Scopes::from_column(&r.1),
        prefix: r.2,
        created_at: r.3,
        revoked_at: r.4,
    }
}

fn fetch(conn: &mut impl Queryable, name: &str) -> Result<Option<ServiceInfo>, DbError> {
    let row: Option<InfoRow> = conn.exec_first(
        format!("SELECT {INFO_COLUMNS} FROM services WHERE name = ?"),
        (name,),
    )?;
    Ok(row.map(from_row))
}

/// A new service and its token, which is shown this once. A name that was
/// ever used, revoked or not, is `Exists`.
pub fn add(pool: &Pool, name: &str, scopes: Scopes) -> Result<(ServiceInfo, String), ServiceError> {
    let name = parse_name(name)?;
    if scopes.is_empty() {
        return Err(ServiceError::Invalid(format!(
            "no scope given; {SCOPE_RULE}"
        )));
    }
    pool.retrying(|| {
        let token = token::generate_with(TOKEN_KIND);
        let mut conn = pool.get()?;
        let inserted = conn.exec_drop(
            "INSERT INTO services (name, token_hash, prefix, scopes) VALUES (?, ?, ?, ?)",
            (
                name,
                token::hash(&token),
                token::prefix(&token),
                scopes.names().join(","),
            ),
        );
        // The name's key, in practice: two 192-bit tokens do not collide.
        match inserted.map_err(DbError::from) {
            Err(DbError::Duplicate(_)) => return Err(ServiceError::Exists(name.to_string())),
            other => other?,
        }
        let info = fetch(&mut **conn, name)?.ok_or_else(|| ServiceError::Unknown(name.into()))?;
        Ok((info, token))
    })
}

/// Every service, revoked ones included, by name.
pub fn list(pool: &Pool) -> Result<Vec<ServiceInfo>, ServiceError> {
    let rows: Vec<InfoRow> = pool
        .get()?
        .query(format!("SELECT {INFO_COLUMNS} FROM services ORDER BY name"))?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Revokes a service: its token stops working at once. Revoking it again
/// answers the same, with the first `revoked_at`.
pub fn revoke(pool: &Pool, name: &str) -> Result<ServiceInfo, ServiceError> {
    let name = parse_name(name)?;
    pool.retrying(|| {
        let mut conn = pool.get()?;
        conn.exec_drop(
            "UPDATE services SET revoked_at = COALESCE(revoked_at, NOW(3)) WHERE name = ?",
            (name,),
        )?;
        // affected_rows is 0 for one revoked before, so existence is read back.
        fetch(&mut **conn, name)?.ok_or_else(|| ServiceError::Unknown(name.into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(charge: bool, read: bool) -> Scopes {
        Scopes { charge, read }
    }

    #[test]
    fn scopes_parse_one_or_both_in_any_order() {
        assert_eq!(Scopes::parse("charge").unwrap(), scopes(true, false));
        assert_eq!(Scopes::parse("read").unwrap(), scopes(false, true));
        assert_eq!(Scopes::parse("charge,read").unwrap(), scopes(true, true));
        assert_eq!(Scopes::parse("read, charge").unwrap(), scopes(true, true));
        assert_eq!(Scopes::parse("read,read").unwrap(), scopes(false, true));
    }

    #[test]
    fn unknown_or_missing_scopes_are_refused_by_name() {
        for bad in [
            "",
            " ",
            "admin",
            "charge,",
            "Charge",
            "charge;read",
            "charge,,read",
        ] {
            match Scopes::parse(bad) {
                Err(ServiceError::Invalid(m)) => assert!(m.contains("scope"), "{bad:?}: {m}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let m = Scopes::parse("charge,admin").unwrap_err().to_string();
        assert!(m.contains("\"admin\""), "{m}");
    }

    #[test]
    fn a_scope_allows_only_itself() {
        let charge = scopes(true, false);
        assert!(charge.allows(Scope::Charge));
        assert!(!charge.allows(Scope::Read));
        assert!(scopes(true, true).allows(Scope::Read));
    }

    #[test]
    fn scopes_serialise_as_a_list_of_names() {
        let json = serde_json::to_value(scopes(true, true)).unwrap();
        assert_eq!(json, serde_json::json!(["charge", "read"]));
        let json = serde_json::to_value(scopes(false, true)).unwrap();
        assert_eq!(json, serde_json::json!(["read"]));
    }

    #[test]
    fn the_stored_set_reads_back_as_written() {
        for s in [scopes(true, false), scopes(false, true), scopes(true, true)] {
            assert_eq!(Scopes::from_column(&s.names().join(",")), s);
        }
    }

    #[test]
    fn names_take_the_documented_alphabet() {
        for good in ["billing", "a", "Billing-2.eu_west", &"x".repeat(64)] {
            assert_eq!(parse_name(good).unwrap(), good);
        }
    }

    #[test]
    fn other_names_are_refused() {
        for bad in [
            "",
            &"x".repeat(65),
            "bill ing",
            "billing ",
            "bill/ing",
            "bill:ing",
            "bîlling",
            "bill\ning",
        ] {
            assert!(
                matches!(parse_name(bad), Err(ServiceError::Invalid(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn service_tokens_say_what_they_are() {
        let t = token::generate_with(TOKEN_KIND);
        assert!(t.starts_with("cgs_") && t.len() == 4 + 32, "{t}");
        // The stored prefix shows the kind and a little more, never most of it.
        assert_eq!(token::prefix(&t), &t[..8]);
    }

    #[test]
    fn the_actor_names_the_service() {
        let s = Service {
            id: 1,
            name: "billing".into(),
            scopes: scopes(true, false),
        };
        assert_eq!(s.actor(), "service:billing");
    }
}
