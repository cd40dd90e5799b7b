//! The `idempotency_keys` table: what a key holds, read under the user's
//! row lock (so a simultaneous retry waits for the first request and then
//! sees its answer), written in the charge's transaction, and expired after
//! 24 h. The only SQL of idempotency.

use mysql::prelude::Queryable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::answer::StoredAnswer;
use super::state::{self, Claim, KeyAnswer, KeyCheck, KeyState};
use crate::db::{DbError, Pool};

/// The outcome stored under `idem_key` in the last 24 h, if it reads as a
/// `T`: the bank route's answer, or a gateway route's key state (another
/// shape counts as none).
pub fn stored_outcome<T: DeserializeOwned>(
    tx: &mut impl Queryable,
    user_id: u64,
    idem_key: &str,
) -> Result<Option<T>, DbError> {
    let stored: Option<String> = tx.exec_first(
        "SELECT outcome FROM idempotency_keys \
         WHERE user_id = ? AND idem_key = ? AND created_at > NOW(3) - INTERVAL 1 DAY",
        (user_id, idem_key),
    )?;
    Ok(stored.and_then(|json| serde_json::from_str(&json).ok()))
}

/// The outcome stored under `idem_key` in the last 24 h, as its JSON text.
pub fn stored_json(
    tx: &mut impl Queryable,
    user_id: u64,
    idem_key: &str,
) -> Result<Option<String>, DbError> {
    Ok(tx.exec_first(
        "SELECT outcome FROM idempotency_keys \
         WHERE user_id = ? AND idem_key = ? AND created_at > NOW(3) - INTERVAL 1 DAY",
        (user_id, idem_key),
    )?)
}

/// Remembers `outcome` under `idem_key` for 24 h.
pub fn remember<T: Serialize>(
    tx: &mut impl Queryable,
    user_id: u64,
    idem_key: &str,
    outcome: &T,
) -> Result<(), DbError> {
    let json = serde_json::to_string(outcome).expect("answers serialise");
    replace(tx, user_id, idem_key, &json)
}

/// The one write of a key's row: REPLACE takes over an expired row (or,
/// for a route, one of another request under the same key) and starts its
/// 24 h anew.
fn replace(
    tx: &mut impl Queryable,
    user_id: u64,
    idem_key: &str,
    outcome_json: &str,
) -> Result<(), DbError> {
    tx.exec_drop(
        "REPLACE INTO idempotency_keys (user_id, idem_key, outcome) VALUES (?, ?, ?)",
        (user_id, idem_key, outcome_json),
    )?;
    Ok(())
}

/// What a gateway key (`scoped`) answers the request of fingerprint `fp`
/// at `now`: `None` for a new key, or one expired.
pub fn route_answer(
    tx: &mut impl Queryable,
    user_id: u64,
    scoped: &str,
    fp: &str,
    now: i64,
) -> Result<Option<KeyAnswer>, DbError> {
    let found: Option<KeyState> = stored_outcome(tx, user_id, scoped)?;
    Ok(match state::check(found.as_ref(), fp, now) {
        KeyCheck::New => None,
        KeyCheck::InProgress => Some(KeyAnswer::InProgress),
        KeyCheck::Reused => Some(KeyAnswer::Reused),
        KeyCheck::NotStored => Some(KeyAnswer::NotStored),
        KeyCheck::Replay => Some(match stored_answer(tx, user_id, scoped)? {
            Some(answer) => KeyAnswer::Stored(answer),
            None => KeyAnswer::NotStored,
        }),
    })
}

/// The stored first answer under a key, if it can be read.
fn stored_answer(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &str,
) -> Result<Option<StoredAnswer>, DbError> {
    let bytes: Option<Option<Vec<u8>>> = tx.exec_first(
        "SELECT answer FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
        (user_id, key),
    )?;
    Ok(bytes.flatten().and_then(|b| StoredAnswer::decode(&b)))
}

/// A new keyed route request, charged: its row says "in flight".
pub fn claim(tx: &mut impl Queryable, user_id: u64, claim: &Claim) -> Result<(), DbError> {
    replace(tx, user_id, &claim.key, &claim.state)
}

/// The claim's answer was billable: a retry now waits for its body (until
/// `streaming_until`) and is then replayed. The claim keeps the new state.
/// Its 24 h count from the first request, so `created_at` stays.
pub fn settle(
    pool: &Pool,
    user_id: u64,
    claim: &mut Claim,
    streaming_until: i64,
) -> Result<(), DbError> {
    let Some(billed) = claim.billed(streaming_until) else {
        return Ok(());
    };
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ? \
         WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (&billed, user_id, &claim.key, &claim.state),
    )?;
    claim.state = billed;
    Ok(())
}

/// The billed answer's body has ended: store it (`Some`) for replays, or
/// say that none is stored (too large, or cut short).
pub fn record(
    pool: &Pool,
    user_id: u64,
    claim: &Claim,
    answer: Option<&StoredAnswer>,
) -> Result<(), DbError> {
    let Some(done) = claim.done(answer.is_some()) else {
        return Ok(());
    };
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ?, answer = ? \
         WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (
            done,
            answer.map(StoredAnswer::encode),
            user_id,
            &claim.key,
            &claim.state,
        ),
    )?;
    Ok(())
}

/// A refunded request gives its key up: a retry is a new request.
pub fn release(tx: &mut impl Queryable, user_id: u64, claim: &Claim) -> Result<(), DbError> {
    tx.exec_drop(
        "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (user_id, &claim.key, &claim.state),
    )?;
    Ok(())
}

/// Deletes remembered keys older than their 24 h, in small batches so that
/// no batch holds locks for long. Returns how many went.
pub fn expire(pool: &Pool) -> Result<u64, DbError> {
    let mut conn = pool.get()?;
    delete_expired(&mut conn, "idempotency_keys")
}

/// Deletes a key table's rows older than their 24 h, 1,000 at a time (so
/// that no batch holds locks for long). Returns how many went.
pub(crate) fn delete_expired(conn: &mut mysql::Conn, table: &'static str) -> Result<u64, DbError> {
    let sql = format!("DELETE FROM {table} WHERE created_at < NOW(3) - INTERVAL 1 DAY LIMIT 1000");
    let mut total = 0;
    loop {
        conn.query_drop(&sql)?;
        let n = conn.affected_rows();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}
