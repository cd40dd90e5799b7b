//! The paid bank lookup, the free balance, and the monthly refill. A paid
//! request is ONE transaction: lock the user's row (`SELECT … FOR UPDATE`),
//! check the token, ask `decide`, write its outcome (`account::apply`),
//! remember the idempotent answer, commit — or roll back and charge nothing.
//! No state is shared between requests but the pool.

use chrono::{DateTime, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::{Deserialize, Serialize};

use crate::auth::token::Credentials;
use crate::banks::{Bank, Cache};
use crate::billing::account::{self, Account, LowCredit, RateState};
use crate::billing::ledger::{self, Event, Reason};
use crate::billing::{decide, Insufficient, Outcome, Verdict};
use crate::db::{self, DbError, Pool, Statements};
use crate::idempotency;
use crate::model::{BankCode, IdempotencyKey, Period, RefillDay, Username};
use crate::webhooks::{outbox, EventType};

pub use crate::billing::account::AuthFailure;

/// The endpoint name that paid bank lookups are counted under.
pub const BANKS_ENDPOINT: &str = "banks_data";

pub struct Charge<'a> {
    pub credentials: &'a Credentials,
    pub bank: &'a BankCode,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub now: DateTime<Utc>,
}

/// What an authenticated caller is told. Serialisable because it is what an
/// `Idempotency-Key` replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    Charged { bank: Bank, credit_remaining: i64 },
    InsufficientCredit(Insufficient),
    UnknownBank,
}

// Made once per request and matched at once, never stored: boxing the
// large variant would only add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    Answered {
        answer: Answer,
        replayed: bool,
        /// The user's rate limit, for the headers; `None` without one.
        rate: Option<RateState>,
        /// This charge crossed the user's low-credit threshold.
        low_credit: Option<LowCredit>,
    },
    /// Refused by the user's rate limit: nothing charged, nothing counted.
    RateLimited(RateState),
    Unauthorized(AuthFailure),
    /// The key was used for another bank in the last 24 h: 422, nothing
    /// charged or counted.
    KeyReused,
}

/// What a bank lookup's key answers a retry with.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// The same lookup: its first answer.
    Answer(Answer),
    /// Another lookup under the same key (IETF idempotency draft: 422).
    Reused,
}

/// A key's row for the bank route: the answer and the bank it was for,
/// which is what makes a retry "the same request" (the route takes
/// nothing else; the user is the key's owner). Rows written before the
/// bank was kept are a bare `Answer` and count as the same request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    pub bank: String,
    pub answer: Answer,
}

impl Remembered {
    /// A stored row, in either shape (`None`: neither).
    pub(crate) fn read(json: &str) -> Option<(Option<String>, Answer)> {
        // Not an untagged enum: serde buffers those, and a bank's raw JSON
        // (`BankData`) cannot be read from a buffer.
        match serde_json::from_str::<Remembered>(json) {
            Ok(r) => Some((Some(r.bank), r.answer)),
            Err(_) => serde_json::from_str::<Answer>(json).ok().map(|a| (None, a)),
        }
    }

    /// What this row answers a lookup of `bank` under the same key.
    pub(crate) fn replay_for(self, bank: &BankCode) -> Replay {
        if self.bank == bank.as_str() {
            Replay::Answer(self.answer)
        } else {
            Replay::Reused
        }
    }
}

/// What a stored row answers a lookup of `bank`.
fn replay_of(stored: (Option<String>, Answer), bank: &BankCode) -> Replay {
    match stored {
        (Some(b), _) if b != bank.as_str() => Replay::Reused,
        (_, answer) => Replay::Answer(answer),
    }
}

impl ChargeOutcome {
    /// The answer a request's key is to remember: one just decided, not a
    /// replay and not a refusal (those leave the key as it was).
    pub(crate) fn to_remember(&self) -> Option<&Answer> {
        match self {
            ChargeOutcome::Answered {
                answer,
                replayed: false,
                ..
            } => Some(answer),
            _ => None,
        }
    }
}

/// Charges one paid bank lookup, exactly once, or nothing. A transaction
/// the database rolled back (a conflict) is run again from the start.
pub fn charge(pool: &Pool, banks: &Cache, req: &Charge<'_>) -> Result<ChargeOutcome, DbError> {
    pool.retrying(|| charge_once(pool, banks, req))
}

fn charge_once(pool: &Pool, banks: &Cache, req: &Charge<'_>) -> Result<ChargeOutcome, DbError> {
    let name = match account::lookup_name(req.credentials) {
        Ok(name) => name,
        Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
    };
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    // From memory; when it is not there, its round trip comes before the
    // transaction, so that it does not hold the user's row lock (one hot
    // user goes as fast as that lock is held), and outside it, because a
    // snapshot taken before the lock would hide an earlier holder's
    // idempotency key.
    let bank = banks.find(&mut **conn, &sql, req.bank)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let outcome = charge_in(&mut tx, &sql, &name, req, bank)?;
    // A connection lost during COMMIT leaves the charge in doubt: the client
    // gets 503, and only a retry with the same Idempotency-Key can tell
    // (it replays the answer if the charge was applied).
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(outcome)
}

/// One paid lookup of `bank` (read by the caller; `None`: no such bank)
/// inside `tx`, which the caller commits: lock and authenticate, replay,
/// rate limit, charge, remember. Nothing is written
/// before the request is known to be charged or counted, so an early answer
/// (401, replay, 429) leaves `tx` as it was — which lets a coalesced batch
/// (`coalesce`) decide several requests in one transaction.
pub(crate) fn charge_in(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    name: &Username,
    req: &Charge<'_>,
    bank: Option<Bank>,
) -> Result<ChargeOutcome, DbError> {
    let account = account::lock(tx, sql, name, &req.credentials.token, true)?;
    charge_locked(tx, sql, account, req, bank)
}

/// `charge_in` once the row is locked: `account` is what `account::lock`
/// found. A coalesced batch that nobody joined ends here too.
pub(crate) fn charge_locked(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    account: Result<Account, AuthFailure>,
    req: &Charge<'_>,
    bank: Option<Bank>,
) -> Result<ChargeOutcome, DbError> {
    let account = match account {
        Ok(a) => a,
        Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
    };
    let known = match req.idempotency_key {
        Some(key) => remembered(tx, account.id, key, req.bank)?,
        None => None,
    };
    let outcome = decide(&account, known, bank.as_ref().map(|b| b.cost), req.now);
    account::apply(tx, sql, &account, &outcome, BANKS_ENDPOINT, req.now)?;
    let answered = bank_outcome(outcome, bank);
    if let (Some(key), Some(answer)) = (req.idempotency_key, answered.to_remember()) {
        remember(tx, account.id, key, req.bank, answer)?;
    }
    Ok(answered)
}

/// What `decide` said of a bank lookup, as the bank route answers it; the
/// same for a single request and for one in a coalesced batch.
pub(crate) fn bank_outcome(outcome: Outcome<Replay>, bank: Option<Bank>) -> ChargeOutcome {
    match outcome {
        Outcome::Replayed {
            answer: Replay::Reused,
            ..
        } => ChargeOutcome::KeyReused,
        Outcome::Replayed {
            answer: Replay::Answer(answer),
            rate,
        } => ChargeOutcome::Answered {
            answer,
            replayed: true,
            rate,
            low_credit: None,
        },
        Outcome::RateLimited(refused) => ChargeOutcome::RateLimited(refused),
        Outcome::Counted { verdict, rate, .. } => {
            let (answer, low_credit) = match (verdict, bank) {
                (
                    Verdict::Debited {
                        credit_remaining,
                        low_credit,
                        ..
                    },
                    Some(bank),
                ) => (
                    Answer::Charged {
                        bank,
                        credit_remaining,
                    },
                    low_credit,
                ),
                (Verdict::Insufficient(short), _) => (Answer::InsufficientCredit(short), None),
                // Priced only when the bank exists.
                (Verdict::Unpriced, _) | (Verdict::Debited { .. }, None) => {
                    (Answer::UnknownBank, None)
                }
            };
            ChargeOutcome::Answered {
                answer,
                replayed: false,
                rate,
                low_credit,
            }
        }
    }
}

/// The answer remembered for this key in the last 24 h. Read under the row
/// lock, so a simultaneous retry waits for the first and then sees its answer.
pub(crate) fn remembered(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
    bank: &BankCode,
) -> Result<Option<Replay>, DbError> {
    let found = idempotency::store::stored_json(tx, user_id, key.as_str())?;
    Ok(found
        .as_deref()
        .and_then(Remembered::read)
        .map(|stored| replay_of(stored, bank)))
}

pub(crate) fn remember(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
    bank: &BankCode,
    answer: &Answer,
) -> Result<(), DbError> {
    let row = Remembered {
        bank: bank.as_str().to_string(),
        answer: answer.clone(),
    };
    idempotency::store::remember(tx, user_id, key.as_str(), &row)
}

/// What `GET /api/v1.0/credit` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub username: String,
    /// What may be spent: the credit not held by open holds.
    pub credit: i64,
    /// Reserved by open holds.
    pub held: i64,
    pub monthly_credit: Option<i64>,
    /// RFC 3339, UTC.
    pub next_refill: Option<String>,
}

/// The caller's own balance; free, but authenticated like a charge.
pub fn balance(
    pool: &Pool,
    credentials: &Credentials,
    now: DateTime<Utc>,
) -> Result<Result<Balance, AuthFailure>, DbError> {
    let name = match account::lookup_name(credentials) {
        Ok(name) => name,
        Err(why) => return Ok(Err(why)),
    };
    let mut conn = pool.get()?;
    let found = account::lock(
        &mut **conn,
        &Statements::default(),
        &name,
        &credentials.token,
        false,
    )?;
    if let Ok(a) = &found {
        account::touch_key(&mut **conn, a)?;
    }
    Ok(found.map(|a| Balance {
        username: credentials.username.clone(),
        credit: a.available(),
        held: a.held,
        monthly_credit: a.monthly_credit,
        next_refill: a
            .next_refill(now)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }))
}

/// Refills every user whose refill moment in `period` has passed by `now` and
/// who has not been refilled for `period` yet: what they may spend is
/// raised to the allowance (`credit = GREATEST(credit, monthly_credit +
/// held)`: credit reserved by open holds stays reserved on top of it),
/// `credit_period = period`, one ledger row. One transaction
/// per user, re-checked under the row lock, so a refill happens once per
/// month even when several instances run it at the same moment.
pub fn refill(
    pool: &Pool,
    period: Period,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<usize, DbError> {
    let p = period.to_string();
    let candidates: Vec<(u64, u32)> = pool.get()?.exec(
        "SELECT id, refill_day FROM users \
         WHERE monthly_credit IS NOT NULL AND (credit_period IS NULL OR credit_period < ?)",
        (&p,),
    )?;
    let mut refilled = 0;
    for (user_id, day) in candidates {
        let day = RefillDay::parse(day as i64).unwrap_or_default();
        if period.refill_moment(day) > now {
            continue;
        }
        if pool.retrying(|| refill_one(pool, user_id, &p, actor))? {
            refilled += 1;
        }
    }
    Ok(refilled)
}

/// credit, held, monthly_credit, credit_period, username.
type RefillRow = (i64, i64, Option<i64>, Option<String>, String);

/// Refills one user in one transaction, re-checked under the row lock;
/// false when there was nothing to do (another instance was first).
fn refill_one(pool: &Pool, user_id: u64, p: &str, actor: &str) -> Result<bool, DbError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let row: Option<RefillRow> = tx.exec_first(
        "SELECT credit, held, monthly_credit, credit_period, username FROM users \
         WHERE id = ? FOR UPDATE",
        (user_id,),
    )?;
    let Some((credit, held, Some(monthly), done, username)) = row else {
        return Ok(false);
    };
    if done.is_some_and(|d| d.as_str() >= p) {
        return Ok(false); // another instance was first
    }
    let new = credit.max(monthly + held);
    tx.exec_drop(
        format!(
            "UPDATE users SET credit = ?, credit_period = ?, {} WHERE id = ?",
            account::REARM_LOW_CREDIT
        ),
        (new, p, user_id),
    )?;
    ledger::record(
        &mut tx,
        &Event {
            user_id,
            delta: new - credit,
            balance_after: new,
            reason: Reason::MonthlyRefill,
            period: Some(p.to_string()),
            actor,
        },
    )?;
    let data = serde_json::json!({
        "user": username,
        "period": p,
        "monthly_credit": monthly,
        "added": new - credit,
        "credit": new,
        "credit_available": new - held,
    });
    outbox::emit(&mut tx, user_id, EventType::CreditRefilled, data)?;
    tx.commit().map_err(db::commit_failed)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_refusal_keeps_its_shape() {
        // Rows written before `Insufficient` was one type must still read,
        // and new ones must read the same.
        let stored =
            r#"{"outcome":"insufficient_credit","cost":5,"credit_remaining":3,"next_refill":null}"#;
        let answer = Answer::InsufficientCredit(Insufficient {
            cost: 5,
            credit_remaining: 3,
            next_refill: None,
        });
        assert_eq!(serde_json::to_string(&answer).unwrap(), stored);
        assert_eq!(serde_json::from_str::<Answer>(stored).unwrap(), answer);
    }

    #[test]
    fn a_key_replays_only_the_same_bank() {
        let bofa_code = BankCode::parse("BOFA").unwrap();
        let other = BankCode::parse("CHASE").unwrap();
        let row = Remembered {
            bank: "BOFA".into(),
            answer: Answer::Charged {
                bank: bofa(1),
                credit_remaining: 4,
            },
        };
        let json = serde_json::to_string(&row).unwrap();
        let read = Remembered::read(&json).expect("reads back");
        assert_eq!(
            replay_of(read.clone(), &bofa_code),
            Replay::Answer(row.answer.clone())
        );
        assert_eq!(replay_of(read, &other), Replay::Reused);
        // A row from before the bank was kept replays for any bank.
        let old = Remembered::read(
            r#"{"outcome":"insufficient_credit","cost":5,"credit_remaining":3,"next_refill":null}"#,
        )
        .expect("an old row reads");
        assert!(matches!(replay_of(old, &other), Replay::Answer(_)));
    }

    fn bofa(cost: i64) -> Bank {
        Bank {
            code: "BOFA".into(),
            name: "Bank of America".into(),
            country: None,
            bic: None,
            cost,
            data: crate::banks::BankData::from_column("{}".into()),
        }
    }

    fn counted(verdict: Verdict) -> Outcome<Replay> {
        Outcome::Counted {
            verdict,
            rate: None,
            after: Account::for_test(0, None).running(),
        }
    }

    #[test]
    fn each_outcome_becomes_the_bank_routes_answer() {
        let charged = bank_outcome(
            counted(Verdict::Debited {
                cost: 1,
                credit_remaining: 4,
                low_credit: None,
            }),
            Some(bofa(1)),
        );
        let want = Answer::Charged {
            bank: bofa(1),
            credit_remaining: 4,
        };
        assert_eq!(charged.to_remember(), Some(&want));
        let short = Insufficient {
            cost: 5,
            credit_remaining: 3,
            next_refill: None,
        };
        let refused = bank_outcome(counted(Verdict::Insufficient(short.clone())), Some(bofa(5)));
        assert_eq!(
            refused.to_remember(),
            Some(&Answer::InsufficientCredit(short))
        );
        let unknown = bank_outcome(counted(Verdict::Unpriced), None);
        assert_eq!(unknown.to_remember(), Some(&Answer::UnknownBank));
    }

    #[test]
    fn a_replay_is_answered_but_not_remembered_again() {
        let replay = bank_outcome(
            Outcome::Replayed {
                answer: Replay::Answer(Answer::UnknownBank),
                rate: None,
            },
            None,
        );
        assert!(matches!(
            replay,
            ChargeOutcome::Answered { replayed: true, .. }
        ));
        assert_eq!(replay.to_remember(), None);
    }
}
