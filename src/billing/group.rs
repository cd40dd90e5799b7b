//! Coalesced charging (`CREDITGATE_COALESCE=on`, off by default): waiting
//! paid requests are charged together in ONE transaction and ONE commit,
//! each decided in arrival order by the same decision as a single request
//! (`billing::decide`: its own authentication, idempotency key, rate limit,
//! usage and answer). A commit costs a log flush; one per request is what
//! holds the database to its per-request ceiling.
//!
//! Requests queue here. While fewer than `batches` batches run, the
//! waiting requests of users no running batch holds are taken (at most
//! `MAX_BATCH`, in arrival order) and led by the first one's thread; the
//! others wait for their answer. There is no timer: a batch is whatever
//! waited while the previous ones ran, so a lone request goes at once.
//!
//! A batch of many users locks their rows in one statement, in id order
//! (the same order on every instance, so batches never deadlock each
//! other), `SKIP LOCKED`: a row locked elsewhere — an admin's transaction,
//! another instance's batch — is not waited for. That user's requests go
//! on, after the batch, as a batch of their own user that waits for the
//! row like a single request; the rest of the batch commits without them.
//! Each user's requests are decided against their running row, and the
//! batch writes once per user: one UPDATE of the row, one usage upsert per
//! (key, day, endpoint). A failed transaction is retried whole on a
//! conflict, or fails every request in it with nothing charged, as each
//! would have failed alone; one request refused never fails the others.
//!
//! With coalescing off, `bank::charge` is called directly and none of
//! this runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use mysql::TxOpts;

use crate::auth::token::{self, Credentials};
use crate::banks::{Bank, Cache};
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

/// What a waiting request's thread is told: its answer, or to lead a batch
/// (its own request among them). Sent once or twice per request and
/// matched at once, never stored: boxing the answer would only add an
/// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Done(Reply),
    Lead(Vec<Entry>, Lock),
}

/// How a batch takes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Many users, `SKIP LOCKED`: a row locked elsewhere is left out.
    Skip,
    /// One user's requests that a batch left out: waits for the row.
    Wait,
}

struct Entry {
    name: Username,
    request: Request,
    reply: SyncSender<Msg>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Entry>,
    /// Users whose requests a running batch holds: their later requests
    /// wait for it, so that one user's requests are decided in order.
    busy: HashSet<String>,
    /// Batches of many users running now.
    running: usize,
}

/// The waiting requests and the batches that run them.
pub struct Coalescer {
    queue: Mutex<Queue>,
    ids: Ids,
    /// At most this many batches of many users at once.
    batches: usize,
}

impl Coalescer {
    pub fn new(batches: usize) -> Coalescer {
        Coalescer {
            queue: Mutex::default(),
            ids: Ids::default(),
            batches: batches.max(1),
        }
    }

    /// Charges `request` together with the other waiting requests; answers
    /// as `bank::charge` would have.
    pub fn charge(&self, pool: &Pool, banks: &Cache, metrics: &Metrics, request: Request) -> Reply {
        let name = match account::lookup_name(&request.credentials) {
            Ok(name) => name,
            Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
        };
        // One message at a time: the slot is empty whenever one is sent.
        // (`channel()` allocates a block of 31 on the first send: ~8,800
        // instructions per request, by callgrind.)
        let (reply, inbox) = mpsc::sync_channel(1);
        {
            let mut queue = self.queue();
            queue.waiting.push_back(Entry {
                name,
                request,
                reply,
            });
            self.dispatch(&mut queue);
        }
        loop {
            match inbox.recv() {
                Ok(Msg::Done(answer)) => return answer,
                Ok(Msg::Lead(entries, lock)) => self.lead(pool, banks, metrics, entries, lock),
                Err(_) => return Err(lost()),
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts batches while fewer than `batches` run and some request waits
    /// whose user no running batch holds.
    fn dispatch(&self, queue: &mut Queue) {
        while queue.running < self.batches {
            let taken = take(queue);
            let Some(first) = taken.first().map(|e| e.reply.clone()) else {
                return;
            };
            queue.running += 1;
            if let Err(mpsc::SendError(Msg::Lead(entries, _))) =
                first.send(Msg::Lead(taken, Lock::Skip))
            {
                // Its thread is gone (it panicked): nobody leads these.
                queue.running -= 1;
                for e in entries {
                    queue.busy.remove(e.name.as_str());
                    let _ = e.reply.send(Msg::Done(Err(lost())));
                }
            }
        }
    }

    /// Runs a batch on this thread, answers it, frees its users and starts
    /// the next batches; the requests of a user whose row was locked
    /// elsewhere go on as their own batch, led by the first one's thread.
    fn lead(&self, pool: &Pool, banks: &Cache, metrics: &Metrics, entries: Vec<Entry>, lock: Lock) {
        // A panic must not leave its users busy for good: it fails the
        // batch like any other error (nothing was committed).
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.retrying(|| match lock {
                Lock::Skip => run_many(pool, banks, &self.ids, &entries),
                Lock::Wait => run_one(pool, banks, &entries),
            })
        }))
        .unwrap_or_else(|_| Err(lost()));
        let mut skipped: Vec<Entry> = Vec::new();
        let mut freed: Vec<Username> = Vec::new();
        match result {
            Ok(outcomes) => {
                for (e, outcome) in entries.into_iter().zip(outcomes) {
                    match outcome {
                        Some(o) => {
                            freed.push(e.name.clone());
                            let _ = e.reply.send(Msg::Done(Ok(o)));
                        }
                        None => skipped.push(e),
                    }
                }
            }
            Err(e) => {
                for entry in entries {
                    freed.push(entry.name.clone());
                    let _ = entry.reply.send(Msg::Done(Err(DbError::again(&e))));
                }
            }
        }
        if !freed.is_empty() {
            metrics.coalesced_batch(freed.len());
        }
        if !skipped.is_empty() {
            metrics.coalesced_skipped(skipped.len());
        }
        let mut queue = self.queue();
        if lock == Lock::Skip {
            queue.running -= 1;
        }
        for name in &freed {
            queue.busy.remove(name.as_str());
        }
        // The skipped stay busy: their own batch runs next.
        let mut by_user: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in skipped {
            by_user.entry(e.name.to_string()).or_default().push(e);
        }
        for (name, entries) in by_user {
            let first = entries[0].reply.clone();
            if let Err(mpsc::SendError(Msg::Lead(entries, _))) =
                first.send(Msg::Lead(entries, Lock::Wait))
            {
                // Its thread is gone (it panicked): nobody leads these.
                queue.busy.remove(&name);
                for e in entries {
                    let _ = e.reply.send(Msg::Done(Err(lost())));
                }
            }
        }
        self.dispatch(&mut queue);
    }
}

/// The next batch: waiting requests of users no running batch holds, in
/// arrival order, at most `MAX_BATCH`; their users become busy.
fn take(queue: &mut Queue) -> Vec<Entry> {
    let mut taken = Vec::new();
    let mut mine: HashSet<String> = HashSet::new();
    let mut kept = VecDeque::with_capacity(queue.waiting.len());
    for e in queue.waiting.drain(..) {
        let free = mine.contains(e.name.as_str()) || !queue.busy.contains(e.name.as_str());
        if free && taken.len() < MAX_BATCH {
            if !mine.contains(e.name.as_str()) {
                mine.insert(e.name.to_string());
            }
            taken.push(e);
        } else {
            kept.push_back(e);
        }
    }
    queue.waiting = kept;
    queue.busy.extend(mine);
    taken
}

/// Users' ids by name, as batches found them, so that a batch locks its
/// rows by id without asking for the ids first (a round trip of the six a
/// batch makes). An id is a user's for good (ids are not reused); a user
/// deleted and made again gets a new one, which the batch notices (the
/// locked row has another name, or none) and asks for again. At most
/// `MAX_IDS`, then it starts over: names that do not exist are never kept.
#[derive(Default)]
struct Ids(Mutex<HashMap<String, u64>>);

const MAX_IDS: usize = 100_000;

impl Ids {
    fn of(
        &self,
        conn: &mut mysql::Conn,
        sql: &Statements,
        names: &[&str],
    ) -> Result<HashMap<String, u64>, DbError> {
        let mut ids = HashMap::with_capacity(names.len());
        let mut unknown = Vec::new();
        {
            let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for name in names {
                match known.get(*name) {
                    Some(id) => drop(ids.insert(name.to_string(), *id)),
                    None => unknown.push(*name),
                }
            }
        }
        if !unknown.is_empty() {
            let found = account::ids_of(conn, sql, &unknown)?;
            let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() + found.len() > MAX_IDS {
                known.clear();
            }
            known.extend(found.iter().map(|(n, id)| (n.clone(), *id)));
            ids.extend(found);
        }
        Ok(ids)
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// Each entry's answer in order; `None` for a request whose user's row was
/// locked elsewhere (not decided, nothing written for it).
type Decided = Vec<Option<ChargeOutcome>>;

/// One batch in one transaction: the rows locked in id order (ids from
/// memory, else asked first), skipping any locked elsewhere; the keys; each
/// user's requests decided in arrival order; the batch's one write; one
/// COMMIT. A user left out gets `None`.
fn run_many(
    pool: &Pool,
    banks: &Cache,
    known: &Ids,
    entries: &[Entry],
) -> Result<Decided, DbError> {
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::per_batch())?;
    let prices = prices(&mut conn, &sql, banks, entries)?;
    let by_user = by_user(entries);
    let names: Vec<&str> = by_user.keys().copied().collect();
    // Before the transaction: a snapshot taken before the locks would hide
    // an earlier holder's idempotency key.
    let ids = known.of(&mut conn, &sql, &names)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let mut sorted: Vec<u64> = ids.values().copied().collect();
    sorted.sort_unstable();
    let locked = if sorted.is_empty() {
        HashMap::new()
    } else {
        account::lock_many(&mut tx, &sql, &sorted)?
    };
    let hashes: Vec<String> = entries
        .iter()
        .map(|e| token::hash(&e.request.credentials.token))
        .collect();
    let keys = if locked.is_empty() {
        HashMap::new()
    } else {
        let users: Vec<u64> = locked.keys().copied().collect();
        let distinct: BTreeSet<&str> = hashes.iter().map(String::as_str).collect();
        let distinct: Vec<&str> = distinct.into_iter().collect();
        account::keys_of(&mut tx, &sql, &users, &distinct)?
    };
    let mut decided: Decided = vec![None; entries.len()];
    let mut books = Vec::new();
    for (name, idxs) in by_user {
        let row = ids.get(name).and_then(|id| locked.get(id));
        let Some(row) = row.filter(|row| row.name() == name) else {
            // Locked elsewhere, or no longer this user's id (deleted and
            // made again): asked again next time.
            known.forget(name);
            if !ids.contains_key(name) {
                for &i in &idxs {
                    token::verify_dummy(&entries[i].request.credentials.token);
                    decided[i] = Some(ChargeOutcome::Unauthorized(AuthFailure::UnknownUser));
                }
            }
            continue; // locked elsewhere: left out, `None`
        };
        let mut auth = HashMap::new();
        for &i in &idxs {
            let token = entries[i].request.credentials.token.as_str();
            let found = keys.get(&(ids[name], hashes[i].clone()));
            auth.entry(token)
                .or_insert_with(|| account::authenticate_locked(row, &hashes[i], found));
        }
        let requests: Vec<Charge<'_>> = idxs.iter().map(|&i| entries[i].request.charge()).collect();
        let name = &entries[idxs[0]].name;
        let (outcomes, book) = decide_all(&mut tx, &sql, name, &requests, auth, &prices)?;
        books.push(book);
        for (i, o) in idxs.into_iter().zip(outcomes) {
            decided[i] = Some(o);
        }
    }
    write(&mut tx, &sql, books)?;
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(decided)
}

/// One user's requests that a batch left out, in one transaction that
/// waits for the row (as a single request does), then one COMMIT.
fn run_one(pool: &Pool, banks: &Cache, entries: &[Entry]) -> Result<Decided, DbError> {
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::per_batch())?;
    let prices = prices(&mut conn, &sql, banks, entries)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let requests: Vec<Charge<'_>> = entries.iter().map(|e| e.request.charge()).collect();
    let (outcomes, book) = decide_all(
        &mut tx,
        &sql,
        &entries[0].name,
        &requests,
        HashMap::new(),
        &prices,
    )?;
    write(&mut tx, &sql, vec![book])?;
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(outcomes.into_iter().map(Some).collect())
}

/// The batch's requests by user, each user's in arrival order.
fn by_user(entries: &[Entry]) -> BTreeMap<&str, Vec<usize>> {
    let mut users: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        users.entry(e.name.as_str()).or_default().push(i);
    }
    users
}

/// The banks the batch asks for, before its transaction (from memory, or
/// read outside the row locks).
fn prices(
    conn: &mut db::Conn,
    sql: &Statements,
    banks: &Cache,
    entries: &[Entry],
) -> Result<HashMap<BankCode, Option<Bank>>, DbError> {
    let mut prices = HashMap::new();
    for e in entries {
        if !prices.contains_key(&e.request.bank) {
            let bank = banks.find(&mut ***conn, sql, &e.request.bank)?;
            prices.insert(e.request.bank.clone(), bank);
        }
    }
    Ok(prices)
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

/// Decides one user's requests in arrival order against the running
/// balance, limiter and notice — the steps of `bank::charge_in`, each token
/// authenticated once (`auth`: as the caller found them; a token not in it
/// is looked up and the row locked by `account::lock`, waiting) — and
/// returns what the batch's one write (`write`) is to write for them.
fn decide_all<'a>(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    name: &Username,
    requests: &'a [Charge<'a>],
    mut auth: HashMap<&'a str, Result<Account, AuthFailure>>,
    prices: &HashMap<BankCode, Option<Bank>>,
) -> Result<(Vec<ChargeOutcome>, Book), DbError> {
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
        let bank = prices.get(req.bank).cloned().flatten();
        outcomes.push(decide_one(tx, &account, req, bank, &mut book)?);
    }
    Ok((outcomes, book))
}

/// One request of the batch: `decide` against the running row, then the
/// plan kept in `book` for the batch's one write.
fn decide_one(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    req: &Charge<'_>,
    bank: Option<Bank>,
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

/// The batch's one write, inside its transaction, for all its users at
/// once: one UPDATE of their rows, one usage upsert, one key-use update,
/// and the idempotent answers (one each) — a handful of round trips
/// whatever the batch's size, where a statement per user would make the
/// batch as slow as the requests it groups.
fn write(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    books: Vec<Book>,
) -> Result<(), DbError> {
    let mut changes = Vec::new();
    let mut rows = Vec::new();
    let mut touched = Vec::new();
    for book in &books {
        let (Some(start), Some(end)) = (book.start, book.now) else {
            continue; // nobody authenticated: nothing to write
        };
        if book.taken > 0 || end != start {
            changes.push((book.user_id, book.taken, end));
        }
        for ((endpoint, day, key_id), (calls, credits)) in &book.usage {
            rows.push(usage::Row {
                user_id: book.user_id,
                key_id: *key_id,
                day: *day,
                endpoint: endpoint.as_str(),
                calls: *calls,
                credits: *credits,
            });
        }
        touched.extend(book.touched.iter().copied());
    }
    account::write_many(tx, sql, &changes)?;
    usage::record_rows(tx, sql, &rows)?;
    for book in &books {
        for (key, bank_code, answer) in &book.to_remember {
            bank::remember(tx, book.user_id, key, bank_code, answer)?;
        }
    }
    account::note_keys_used(tx, sql, &touched)
}

/// The leader went away without answering (it panicked): nothing was
/// committed for this request by a transaction it can know of.
fn lost() -> DbError {
    DbError::failed("the coalesced batch ended without an answer")
}
