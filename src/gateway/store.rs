//! The `routes` table: add, list and remove, shared by the CLI, the admin
//! API and the route table cache. What a valid route is lives in `routes`;
//! this only stores and reads them.

use std::fmt;

use mysql::prelude::Queryable;

use super::routes::{InvalidRoute, NewRoute, Prefix, RawRoute, Route};
use crate::db::{DbError, Pool};

#[derive(Debug)]
pub enum RouteError {
    Invalid(InvalidRoute),
    /// A route with this prefix exists already.
    Exists(String),
    /// No route with this id or prefix.
    Unknown(String),
    Db(DbError),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Invalid(e) => write!(f, "{e}"),
            RouteError::Exists(p) => write!(f, "a route with prefix {p} already exists"),
            RouteError::Unknown(r) => write!(f, "no route {r}"),
            RouteError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RouteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RouteError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for RouteError {
    fn from(e: DbError) -> Self {
        RouteError::Db(e)
    }
}

impl From<InvalidRoute> for RouteError {
    fn from(e: InvalidRoute) -> Self {
        RouteError::Invalid(e)
    }
}

/// The `methods` column is this wide.
const METHODS_COLUMN: usize = 512;

const ROUTE_COLUMNS: &str = "id, prefix, upstream, cost, methods, charge_on, timeout_ms, \
     strip_prefix, max_in_flight, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ'), max_cost, \
     cost_header";

type RouteRow = (
    u64,
    String,
    String,
    i64,
    String,
    String,
    i64,
    bool,
    Option<i64>,
    String,
    Option<i64>,
    Option<String>,
);

/// A stored row as a route; `None` (and a warning) for a row that no longer
/// passes validation, so one bad row cannot take every route down.
fn from_row(r: RouteRow) -> Option<Route> {
    let (
        id,
        prefix,
        upstream,
        cost,
        methods,
        charge_on,
        timeout_ms,
        strip_prefix,
        max_in_flight,
        created_at,
        max_cost,
        cost_header,
    ) = r;
    let raw = RawRoute {
        prefix,
        upstream,
        cost: Some(cost),
        methods: vec![methods],
        charge_on: Some(charge_on),
        timeout_ms: Some(timeout_ms),
        strip_prefix,
        max_in_flight,
        max_cost,
        cost_header,
    };
    match NewRoute::from_raw(&raw) {
        Ok(new) => Some(new.into_route(id, created_at)),
        Err(e) => {
            log::warn!("route {id} ({}) is ignored: {e}", raw.prefix);
            None
        }
    }
}

pub fn add(pool: &Pool, new: NewRoute) -> Result<Route, RouteError> {
    let methods = new.methods.as_slice().join(",");
    if methods.len() > METHODS_COLUMN {
        return Err(RouteError::Invalid(InvalidRoute {
            field: "methods",
            message: format!("the methods take at most {METHODS_COLUMN} characters together"),
        }));
    }
    let mut conn = pool.get().map_err(DbError::from)?;
    let inserted = conn.exec_drop(
        "INSERT INTO routes (prefix, upstream, cost, methods, charge_on, timeout_ms, \
         strip_prefix, max_in_flight, max_cost, cost_header) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.prefix.as_str(),
            new.upstream.to_string(),
            new.cost,
            methods,
            new.charge_on.as_str(),
            new.timeout_ms,
            new.strip_prefix,
            new.max_in_flight,
            new.max_cost,
            new.cost_header.as_str(),
        ),
    );
    match inserted.map_err(DbError::from) {
        Err(DbError::Duplicate(_)) => return Err(RouteError::Exists(new.prefix.to_string())),
        other => other?,
    }
    let id = conn.last_insert_id();
    find(&mut **conn, "id = ?", id)?.ok_or_else(|| RouteError::Unknown(id.to_string()))
}

/// Every route, by prefix.
pub fn list(pool: &Pool) -> Result<Vec<Route>, DbError> {
    let rows: Vec<RouteRow> = pool.get()?.query(format!(
        "SELECT {ROUTE_COLUMNS} FROM routes ORDER BY prefix"
    ))?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Removes the route with this id and returns it.
pub fn remove(pool: &Pool, id: u64) -> Result<Route, RouteError> {
    remove_where(pool, "id = ?", id, || id.to_string())
}

/// Removes the route with this prefix and returns it.
pub fn remove_prefix(pool: &Pool, prefix: &Prefix) -> Result<Route, RouteError> {
    remove_where(pool, "prefix = ?", prefix.as_str(), || prefix.to_string())
}

fn remove_where<V: Into<mysql::Value> + Clone>(
    pool: &Pool,
    condition: &str,
    value: V,
    shown: impl Fn() -> String,
) -> Result<Route, RouteError> {
    let mut conn = pool.get().map_err(DbError::from)?;
    let route =
        find(&mut **conn, condition, value.clone())?.ok_or_else(|| RouteError::Unknown(shown()))?;
    conn.exec_drop(format!("DELETE FROM routes WHERE {condition}"), (value,))
        .map_err(DbError::from)?;
    if conn.affected_rows() == 0 {
        // Removed by someone else between the two statements.
        return Err(RouteError::Unknown(shown()));
    }
    Ok(route)
}

fn find<V: Into<mysql::Value>>(
    conn: &mut impl Queryable,
    condition: &str,
    value: V,
) -> Result<Option<Route>, DbError> {
    let row: Option<RouteRow> = conn.exec_first(
        format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE {condition}"),
        (value.into(),),
    )?;
    Ok(row.and_then(from_row))
}
