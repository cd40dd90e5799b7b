//! Coalesced charging (`CREDITGATE_COALESCE=on`, off by default): requests
//! of one user that wait for that user's row are charged together, in ONE
//! `SELECT … FOR UPDATE` transaction, each decided in arrival order by the
//! same decision as a single request (`billing::decide`: its own
//! authentication, idempotency key, rate limit, usage and answer), then one
//! COMMIT answers them all. One user is otherwise held to one transaction —
//! one lock hold and one log flush — per request.
//!
//! Inside the batch each request is decided in memory against the running
//! balance (`decide_all`), and the batch writes once at the end: one UPDATE
//! of the user's row, one usage upsert per endpoint and day.
//!
//! The first request of a user leads: it opens a batch, then waits for the
//! row lock; requests that arrive meanwhile join the batch (at most
//! `MAX_BATCH`) and wait for its answer instead of for the lock. Once the
//! leader holds the lock it closes the batch, so later arrivals form the
//! next one, whose leader waits for this one's commit — no request waits
//! longer than it would have for the lock itself. A batch holds one user's
//! requests only. A failed transaction fails (or, on a conflict, retries)
//! every request in it, as it would have failed or retried each alone.
//!
//! With coalescing off, `bank::charge` is called directly and none of
//! this runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mysql::TxOpts;

use crate::auth::token::Credentials;
use crate::banks::{self, Bank};
use crate::billing::account::{self, Account, AuthFailure, Running};
use crate::billing::bank::{self, Answer, Charge, ChargeOutcome, Remembered};
use crate::billing::usage;
use crate::billing::{decide, Outcome, Verdict};
use crate::db::{self, DbError, Pool, Statements};
use crate::model::{BankCode, IdempotencyKey, Username};
use crate::ops::metrics::Metrics;

/// The most requests one transaction decides.
pub const MAX_BATCH: usize = 64;

/// A request's charge, owned, so that another thread (the leader) can run it.
#[derive(Debug, Clone)]
pub struct Request {
    pub credentials: Credentials,
    pub bank: BankCode,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

impl Request {
    fn charge(&self) -> Charge<'_> {
        Charge {
            credentials: &self.credentials,
            bank: &self.bank,
            idempotency_key: self.idempotency_key.as_ref(),
            now: self.now,
        }
    }
}

/// DbError is not Clone; every request of a failed batch gets its text and
/// whether it may be retried.
type Reply = Result<ChargeOutcome, DbError>;

struct Entry {
    request: Request,
    reply: SyncSender<Reply>,
}

#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    /// The leader holds the lock: no one joins any more.
    closed: bool,
}

/// The open batches, one per user at most.
#[derive(Default)]
pub struct Coalescer {
    open: Mutex<HashMap<String, Arc<Mutex<Batch>>>>,
}

/// How this request takes part.
enum Role {
    Leader(Arc<Mutex<Batch>>, Receiver<Reply>),
    Follower(Receiver<Reply>),
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Charges `request` together with the other waiting requests of its
    /// user; answers as `bank::charge` would have.
    pub fn charge(&self, pool: &Pool, metrics: &Metrics, request: Request) -> Reply {
        let name = match account::lookup_name(&request.credentials) {
            Ok(name) => name,
            Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
        };
        let mine = (request.credentials.token.clone(), request.bank.clone());
        match self.join(&name, request) {
            Role::Follower(answer) => answer.recv().unwrap_or_else(|_| Err(lost())),
            Role::Leader(batch, answer) => {
                let size = self.lead(pool, &name, (&mine.0, &mine.1), &batch);
                metrics.coalesced_batch(size);
                answer.recv().unwrap_or_else(|_| Err(lost()))
            }
        }
    }

    /// Joins the user's open batch, or opens one and leads it.
    fn join(&self, name: &Username, request: Request) -> Role {
        // One answer per channel: a one-slot channel. (`channel()` is
        // unbounded and allocates a block of 31 answers on the first send:
        // ~8,800 instructions per request, by callgrind.)
        let (reply, answer) = mpsc::sync_channel(1);
        let entry = Entry { request, reply };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(batch) = open.get(name.as_str()) {
            let mut b = batch.lock().unwrap_or_else(|e| e.into_inner());
            if !b.closed && b.entries.len() < MAX_BATCH {
                b.entries.push(entry);
                return Role::Follower(answer);
            }
        }
        let batch = Arc::new(Mutex::new(Batch {
            entries: vec![entry],
            closed: false,
        }));
        open.insert(name.to_string(), Arc::clone(&batch));
        Role::Leader(batch, answer)
    }

    /// Closes the batch once the row is locked and decides every entry;
    /// retried whole on a conflict, like a single transaction. `mine` is
    /// the leader's own (token, bank): its bank is read before the
    /// transaction and its account is what takes the lock, as a single
    /// request's would (`bank::charge_once`), so that a batch of one costs
    /// what a single request does. Returns how many requests the batch held.
    fn lead(
        &self,
        pool: &Pool,
        name: &Username,
        mine: (&str, &BankCode),
        batch: &Arc<Mutex<Batch>>,
    ) -> usize {
        let mut entries: Vec<Entry> = Vec::new();
        let result = pool.retrying(|| {
            let mut conn = pool.get()?;
            let sql = conn.prepared(account::PER_REQUEST)?;
            let bank = banks::find(&mut **conn, &sql, mine.1)?;
            let mut tx = conn.start_transaction(TxOpts::default())?;
            // Waiting here is what the followers would have done alone.
            let account = account::lock(&mut tx, &sql, name, mine.0, true)?;
            if entries.is_empty() {
                entries = self.close(name, batch);
            }
            let requests: Vec<Charge<'_>> = entries.iter().map(|e| e.request.charge()).collect();
            let outcomes = if let [alone] = requests.as_slice() {
                // Nobody joined: the single request's own steps, which the
                // batch's bookkeeping would only repeat more slowly.
                vec![bank::charge_locked(&mut tx, &sql, account, alone, bank)?]
            } else {
                let seen = Seen {
                    token: mine.0,
                    account,
                    bank_code: mine.1,
                    bank,
                };
                decide_all(&mut tx, &sql, name, &requests, seen)?
            };
            tx.commit().map_err(db::commit_failed)?;
            db::trust(&mut conn);
            Ok(outcomes)
        });
        if entries.is_empty() {
            // The first attempt failed before the lock: close it now so
            // that every entry gets the error.
            entries = self.close(name, batch);
        }
        let size = entries.len();
        match result {
            Ok(outcomes) => {
                for (e, outcome) in entries.into_iter().zip(outcomes) {
                    let _ = e.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for entry in entries {
                    let _ = entry.reply.send(Err(DbError::again(&e)));
                }
            }
        }
        size
    }

    /// Takes the entries and stops others from joining.
    fn close(&self, name: &Username, batch: &Arc<Mutex<Batch>>) -> Vec<Entry> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = batch.lock().unwrap_or_else(|e| e.into_inner());
        b.closed = true;
        if open
            .get(name.as_str())
            .is_some_and(|current| Arc::ptr_eq(current, batch))
        {
            open.remove(name.as_str());
        }
        std::mem::take(&mut b.entries)
    }
}

/// What a batch has decided so far, before its one write.
struct Book {
    user_id: u64,
    start: Option<Running>,
    now: Option<Running>,
    taken: i64,
    /// Calls and credits by (endpoint, day, the key that authenticated).
    usage: BTreeMap<(String, chrono::NaiveDate, u64), (u64, i64)>,
    remembered: HashMap<String, Remembered>,
    to_remember: Vec<(IdempotencyKey, BankCode, Answer)>,
    touched: BTreeSet<u64>,
}

/// What the leader looked up before deciding: its token's account (the
/// lock) and its bank.
struct Seen<'a> {
    token: &'a str,
    account: Result<Account, AuthFailure>,
    bank_code: &'a BankCode,
    bank: Option<Bank>,
}

/// Decides every request in arrival order against the running balance,
/// limiter and notice — the steps of `bank::charge_in`, with the bank and
/// each token looked up once per batch — then writes once: one UPDATE of the
/// user's row, one usage upsert per endpoint and day, the idempotent answers.
fn decide_all<'a>(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    name: &Username,
    requests: &'a [Charge<'a>],
    seen: Seen<'a>,
) -> Result<Vec<ChargeOutcome>, DbError> {
    let mut auth: HashMap<&str, Result<Account, AuthFailure>> =
        HashMap::from([(seen.token, seen.account)]);
    let mut banks: HashMap<BankCode, Option<Bank>> =
        HashMap::from([(seen.bank_code.clone(), seen.bank)]);
    let mut book = Book {
        user_id: 0,
        start: None,
        now: None,
        taken: 0,
        usage: BTreeMap::new(),
        remembered: HashMap::new(),
        to_remember: Vec::new(),
        touched: BTreeSet::new(),
    };
    let mut outcomes = Vec::with_capacity(requests.len());
    for req in requests {
        let token = req.credentials.token.as_str();
        if !auth.contains_key(token) {
            auth.insert(token, account::lock(tx, sql, name, token, true)?);
        }
        let account = match &auth[token] {
            Ok(a) => a.clone(),
            Err(why) => {
                outcomes.push(ChargeOutcome::Unauthorized(*why));
                continue;
            }
        };
        book.user_id = account.id;
        book.start.get_or_insert(account.running());
        let running = *book.now.get_or_insert(account.running());
        let account = account.with_running(running);
        outcomes.push(decide_one(tx, sql, &account, req, &mut banks, &mut book)?);
    }
    write(tx, sql, book)?;
    Ok(outcomes)
}

/// One request of the batch: `decide` against the running row, then the
/// plan kept in `book` for the batch's one write.
fn decide_one(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    account: &Account,
    req: &Charge<'_>,
    banks: &mut HashMap<BankCode, Option<Bank>>,
    book: &mut Book,
) -> Result<ChargeOutcome, DbError> {
    // An answer this batch gave the key counts as remembered too.
    let known = match req.idempotency_key {
        Some(key) => match book.remembered.get(key.as_str()) {
            Some(row) => Some(row.clone().replay_for(req.bank)),
            None => bank::remembered(tx, account.id, key, req.bank)?,
        },
        None => None,
    };
    if !banks.contains_key(req.bank) {
        let bank = banks::find(tx, sql, req.bank)?;
        banks.insert(req.bank.clone(), bank);
    }
    let bank = banks[req.bank].clone();
    let outcome = decide(account, known, bank.as_ref().map(|b| b.cost), req.now);
    if let Outcome::Counted { verdict, after, .. } = &outcome {
        // The batch's one write comes later; the events of this request
        // are written now, in the batch's transaction, against the row as
        // the batch has left it so far.
        crate::webhooks::outbox::after_decision(tx, account, verdict)?;
        book.now = Some(*after);
        if let (id, true) = account.key() {
            book.touched.insert(id);
        }
        if let Verdict::Debited { cost, .. } = verdict {
            book.taken += cost;
            let usage = book
                .usage
                .entry((
                    bank::BANKS_ENDPOINT.to_string(),
                    req.now.date_naive(),
                    account.key().0,
                ))
                .or_insert((0, 0));
            usage.0 += 1;
            usage.1 += cost;
        }
    }
    let answered = bank::bank_outcome(outcome, bank);
    if let (Some(key), Some(answer)) = (req.idempotency_key, answered.to_remember()) {
        let row = Remembered {
            bank: req.bank.as_str().to_string(),
            answer: answer.clone(),
        };
        book.remembered.insert(key.as_str().to_string(), row);
        book.to_remember
            .push((key.clone(), req.bank.clone(), answer.clone()));
    }
    Ok(answered)
}

/// The batch's one write, inside its transaction.
fn write(tx: &mut mysql::Transaction<'_>, sql: &Statements, book: Book) -> Result<(), DbError> {
    let (Some(start), Some(end)) = (book.start, book.now) else {
        return Ok(()); // nobody authenticated: nothing to write
    };
    if book.taken > 0 || end != start {
        account::write_batch(tx, sql, book.user_id, book.taken, end)?;
    }
    for ((endpoint, day, key_id), (calls, credits)) in &book.usage {
        let user_id = book.user_id;
        usage::record_many(tx, sql, user_id, *key_id, *day, endpoint, *calls, *credits)?;
    }
    for (key, bank_code, answer) in &book.to_remember {
        bank::remember(tx, book.user_id, key, bank_code, answer)?;
    }
    for id in &book.touched {
        account::note_key_use(tx, *id)?;
    }
    Ok(())
}

/// The leader went away without answering (it panicked): nothing was
/// committed for this request by a transaction it can know of.
fn lost() -> DbError {
    DbError::failed("the coalesced batch ended without an answer")
}
