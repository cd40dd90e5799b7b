//! Keys of the service API (`/v1/charge`, `/v1/holds`…), as the IETF draft
//! says: a key belongs to the service that sent it; the same key with the
//! same request replays the first answer, with another request it is
//! refused (422). The key's row is inserted FIRST in the request's
//! transaction: a second request with the same key waits on that row until
//! the first commits (then finds it: replay or 422) or rolls back (then it
//! is the first). So no request with a key is in flight unseen, and nothing
//! is decided twice, without a lock of its own.

use mysql::prelude::Queryable;

use crate::db::DbError;
use crate::model::IdempotencyKey;

/// A keyed request of a service: the key and what makes a retry the same
/// request (`key::fingerprint` of method, path, query and body).
#[derive(Debug, Clone)]
pub struct ServiceKey<'a> {
    pub service_id: u64,
    pub key: &'a IdempotencyKey,
    pub fingerprint: String,
}

/// An answer as it is replayed: the status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub status: u16,
    pub body: String,
}

/// What a key is, once claimed for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begun {
    /// New (or expired): this request is the first; its answer is stored
    /// by `finish` in the same transaction.
    New,
    /// The same request was answered before: this is its answer.
    Replay(StoredReply),
    /// The key was used for another request: 422.
    Reused,
}

/// Claims `key` inside `tx`, before anything else is read or locked.
pub fn begin(tx: &mut impl Queryable, key: &ServiceKey<'_>) -> Result<Begun, DbError> {
    let inserted = tx.exec_drop(
        "INSERT INTO service_idempotency_keys (service_id, idem_key, fingerprint, status, answer) \
         VALUES (?, ?, ?, 0, '')",
        (key.service_id, key.key.as_str(), &key.fingerprint),
    );
    match inserted.map_err(DbError::from) {
        Ok(()) => return Ok(Begun::New),
        Err(DbError::Duplicate(_)) => {}
        Err(e) => return Err(e),
    }
    let row: Option<(String, u16, String, bool)> = tx.exec_first(
        "SELECT fingerprint, status, answer, created_at > NOW(3) - INTERVAL 1 DAY \
         FROM service_idempotency_keys WHERE service_id = ? AND idem_key = ? FOR UPDATE",
        (key.service_id, key.key.as_str()),
    )?;
    let Some((fingerprint, status, body, fresh)) = row else {
        // Deleted by the expiry job between the two statements.
        return Err(DbError::conflict("an idempotency key vanished"));
    };
    if !fresh {
        // Past its 24 h: the key starts anew with this request.
        tx.exec_drop(
            "UPDATE service_idempotency_keys \
             SET fingerprint = ?, status = 0, answer = '', created_at = NOW(3) \
             WHERE service_id = ? AND idem_key = ?",
            (&key.fingerprint, key.service_id, key.key.as_str()),
        )?;
        return Ok(Begun::New);
    }
    Ok(judge(&fingerprint, &key.fingerprint, status, body))
}

/// What a stored, fresh key row answers the request of `fingerprint`.
fn judge(stored: &str, fingerprint: &str, status: u16, body: String) -> Begun {
    if stored != fingerprint {
        Begun::Reused
    } else {
        // A row is committed only with its answer (`finish` runs in the
        // transaction that inserted it), so `status` is never 0 here.
        Begun::Replay(StoredReply { status, body })
    }
}

/// Stores the first answer under the key claimed by `begin`, in the same
/// transaction as the decision it answers.
pub fn finish(
    tx: &mut impl Queryable,
    key: &ServiceKey<'_>,
    reply: &StoredReply,
) -> Result<(), DbError> {
    tx.exec_drop(
        "UPDATE service_idempotency_keys SET status = ?, answer = ? \
         WHERE service_id = ? AND idem_key = ?",
        (reply.status, &reply.body, key.service_id, key.key.as_str()),
    )?;
    Ok(())
}

/// Deletes keys older than their 24 h, in small batches. Returns how many.
pub fn expire(conn: &mut mysql::Conn) -> Result<u64, DbError> {
    super::store::delete_expired(conn, "service_idempotency_keys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_replays_and_another_is_refused() {
        assert_eq!(
            judge("a", "a", 201, "{}".into()),
            Begun::Replay(StoredReply {
                status: 201,
                body: "{}".into()
            })
        );
        assert_eq!(judge("a", "b", 201, "{}".into()), Begun::Reused);
    }
}
