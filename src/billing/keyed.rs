//! One transaction of the service API with its `Idempotency-Key`: the key
//! is claimed first (`idempotency::service`), then the call decides, then
//! its answer is stored with the key, and all of it commits together — or
//! nothing does. A retry of the same request gets the stored answer, a
//! different request under the key 422, and a conflict runs it all again.

use mysql::TxOpts;

use super::account;
use crate::db::{self, DbError, Pool, Statements};
use crate::idempotency::service::{self, Begun, ServiceKey, StoredReply};

/// What a keyed call came to.
#[derive(Debug)]
pub enum Keyed<T> {
    /// Decided now.
    Fresh(T),
    /// Answered before under the key: its answer, to replay.
    Replayed(StoredReply),
    /// The key was used for another request: 422, nothing done.
    Reused,
}

/// Runs `op` in one transaction with the key claimed first; `render` is
/// what the client is answered (stored for a replay).
pub fn run<T>(
    pool: &Pool,
    key: Option<&ServiceKey<'_>>,
    render: impl Fn(&T) -> StoredReply,
    mut op: impl FnMut(&mut mysql::Transaction<'_>, &Statements) -> Result<T, DbError>,
) -> Result<Keyed<T>, DbError> {
    pool.retrying(|| {
        let mut conn = pool.get()?;
        let sql = conn.prepared(account::PER_REQUEST)?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        if let Some(k) = key {
            match service::begin(&mut tx, k)? {
                Begun::New => {}
                Begun::Replay(reply) => return Ok(Keyed::Replayed(reply)),
                Begun::Reused => return Ok(Keyed::Reused),
            }
        }
        let out = op(&mut tx, &sql)?;
        if let Some(k) = key {
            service::finish(&mut tx, k, &render(&out))?;
        }
        // A connection lost during COMMIT leaves it in doubt: a retry with
        // the same key tells (it replays the answer if it was applied).
        tx.commit().map_err(db::commit_failed)?;
        db::trust(&mut conn);
        Ok(Keyed::Fresh(out))
    })
}
