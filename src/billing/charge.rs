//! The charge API (`POST /v1/charge`): a backend charges one of its users
//! from its own code. The decision is the paid route's, in one row-locked
//! transaction: key valid → rate limit → credit ≥ cost → charge + usage
//! (`decide` and `account::apply`, as every paid path). A cost of 0 only
//! verifies: the key and the limit are checked (the call counts against
//! the limit), nothing is charged and no usage is written.

use chrono::{DateTime, Utc};

use super::account::{self, LowCredit, RateState, Who};
use super::decide::{decide, Outcome, Verdict};
use super::holds::Refusal;
use crate::db::{DbError, Statements};

/// Costs and amounts (of a charge, a hold, a capture) go up to 10^12: far
/// above any real price, far below where sums over many calls could
/// overflow. The service API's bodies and the OpenAPI document say it.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

pub struct ChargeRequest<'a> {
    pub who: &'a Who,
    pub cost: i64,
    /// The usage label it is counted under.
    pub endpoint: &'a str,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    Valid {
        cost: i64,
        credit_remaining: i64,
        rate: Option<RateState>,
        low_credit: Option<LowCredit>,
    },
    Refused(Refusal),
}

/// Charges (or, for cost 0, verifies) inside `tx`, which the caller commits.
pub fn charge(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    req: &ChargeRequest<'_>,
) -> Result<Charged, DbError> {
    let account = match account::lock_who(tx, sql, req.who)? {
        Ok(a) => a,
        Err(why) => return Ok(Charged::Refused(Refusal::Unauthorized(why))),
    };
    let price = (req.cost > 0).then_some(req.cost);
    let outcome = decide::<()>(&account, None, price, req.now);
    account::apply(tx, sql, &account, &outcome, req.endpoint, req.now)?;
    Ok(match outcome {
        Outcome::Replayed { .. } => unreachable!("no replay was given"),
        Outcome::RateLimited(rate) => Charged::Refused(Refusal::RateLimited {
            rate,
            credit_available: account.available(),
        }),
        Outcome::Counted { verdict, rate, .. } => match verdict {
            Verdict::Insufficient(short) => Charged::Refused(Refusal::Insufficient(short)),
            Verdict::Unpriced => Charged::Valid {
                cost: 0,
                credit_remaining: account.available(),
                rate,
                low_credit: None,
            },
            Verdict::Debited {
                cost,
                credit_remaining,
                low_credit,
            } => Charged::Valid {
                cost,
                credit_remaining,
                rate,
                low_credit,
            },
        },
    })
}
