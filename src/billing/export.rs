//! The usage export for invoicing: one row per user, API key, day and
//! endpoint with calls and credits, as RFC 4180 CSV or as a JSON array,
//! STREAMED — a million rows pass without being held in memory. A producer
//! thread owns a pooled connection, reads the rows as MySQL sends them
//! (`exec_iter`), formats them into pieces of about 16 KiB and hands them
//! over a bounded channel to `Export`, a plain `Read` that the HTTP answer
//! and the CLI copy out. When the reader goes away (the client hung up),
//! the producer's next send fails and it stops.
//!
//! Rows come in the primary key's order (user id, day, endpoint, key), so
//! the database can stream them from the key without sorting (for a narrow
//! range it may sort on its side instead; creditgate holds no more either way). An error after the first
//! row cuts the stream short (the HTTP answer ends without its last chunk,
//! so a client sees a broken transfer, never a short file that looks whole).

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;

use mysql::prelude::Queryable;
use serde::Serialize;

use crate::db::{Conn, DbError, Pool};
use crate::model::Day;

/// How the rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180: a header row, CRLF line ends, fields quoted when they hold
    /// a comma, a quote, CR or LF (quotes doubled).
    Csv,
    /// One JSON array, one row object per line.
    Json,
}

impl Format {
    /// `csv` (the default when absent) or `json`.
    pub fn parse(s: Option<&str>) -> Result<Format, ExportError> {
        match s {
            None | Some("csv") => Ok(Format::Csv),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(ExportError::UnknownFormat(other.to_string())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Json => "application/json",
        }
    }
}

/// The days to export, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Day,
    pub to: Day,
}

impl Range {
    /// Both days are required (an export of everything by accident could
    /// be very large), as YYYY-MM-DD, and `from` ≤ `to`.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Range, ExportError> {
        let day = |name: &'static str, v: Option<&str>| {
            let v = v.ok_or(ExportError::MissingDay(name))?;
            Day::parse(v).map_err(|e| ExportError::BadDay(name, e.0))
        };
        let (from, to) = (day("from", from)?, day("to", to)?);
        if from.date() > to.date() {
            return Err(ExportError::Backwards { from, to });
        }
        Ok(Range { from, to })
    }
}

/// What is wrong with an export's request: 400 at the API, a message at
/// the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    MissingDay(&'static str),
    BadDay(&'static str, String),
    Backwards { from: Day, to: Day },
    UnknownFormat(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::MissingDay(name) => write!(f, "{name} is required (YYYY-MM-DD)"),
            ExportError::BadDay(name, why) => write!(f, "{name}: {why}"),
            ExportError::Backwards { from, to } => {
                write!(f, "from ({from}) is after to ({to})")
            }
            ExportError::UnknownFormat(s) => {
                write!(f, "format is csv or json, not {s:?}")
            }
        }
    }
}

impl std::error::Error for ExportError {}

/// One exported row. `key_id` and `key_name` are absent (CSV: empty) for
/// usage without a key: a user named by a service, and rows counted before
/// usage had keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportRow {
    pub username: String,
    pub key_id: Option<u64>,
    pub key_name: Option<String>,
    pub day: String,
    pub endpoint: String,
    pub calls: u64,
    pub credits: u64,
}

/// The CSV header row, CRLF included.
pub const CSV_HEADER: &str = "username,key_id,key_name,day,endpoint,calls,credits\r\n";

/// Appends one CSV field, quoted only when RFC 4180 requires it.
fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends `row` as one CSV record, CRLF included.
pub fn csv_row(out: &mut Vec<u8>, row: &ExportRow) {
    csv_field(out, &row.username);
    out.push(b',');
    if let Some(id) = row.key_id {
        out.extend_from_slice(id.to_string().as_bytes());
    }
    out.push(b',');
    csv_field(out, row.key_name.as_deref().unwrap_or(""));
    out.push(b',');
    csv_field(out, &row.day);
    out.push(b',');
    csv_field(out, &row.endpoint);
    out.extend_from_slice(format!(",{},{}\r\n", row.calls, row.credits).as_bytes());
}

/// Appends `row` as an element of the JSON array: `first` opens it.
pub fn json_row(out: &mut Vec<u8>, row: &ExportRow, first: bool) {
    out.extend_from_slice(if first { b"[\n" } else { b",\n" });
    // A row of strings and numbers always serialises.
    serde_json::to_writer(&mut *out, row).expect("an export row is JSON");
}

/// What ends the output after `rows` rows.
fn trailer(format: Format, rows: u64) -> &'static [u8] {
    match (format, rows) {
        (Format::Csv, _) => b"",
        (Format::Json, 0) => b"[]\n",
        (Format::Json, _) => b"\n]\n",
    }
}

/// The rows, in the primary key's order (no sort). Key 0 is no key.
const EXPORT_QUERY: &str = "SELECT u.username, NULLIF(d.key_id, 0), k.label, \
     DATE_FORMAT(d.day, '%Y-%m-%d'), d.endpoint, d.calls, d.credits \
     FROM usage_daily d JOIN users u ON u.id = d.user_id \
     LEFT JOIN api_keys k ON k.id = d.key_id \
     WHERE d.day BETWEEN ? AND ? \
     ORDER BY d.user_id, d.day, d.endpoint, d.key_id";

/// A piece is sent once it holds this much: large enough that a million
/// rows are a few thousand sends, small enough to stay out of the way.
const PIECE: usize = 16 * 1024;

/// Pieces in the channel at most: what the export may hold in memory.
const PIECES_IN_FLIGHT: usize = 4;

/// Exports running at once on one instance, at most. Each holds a pooled
/// connection for as long as its reader reads, and the pool is what paid
/// requests need: a holder of a `read` token must not be able to take it
/// all by opening exports.
pub const MAX_RUNNING: usize = 2;

/// The exports running on one instance (`AppState` has one).
#[derive(Debug, Default)]
pub struct Running(Arc<AtomicUsize>);

/// One of the `MAX_RUNNING` places, given back when dropped (the producer
/// thread holds it, so it is free again once the connection is).
pub struct Slot(Arc<AtomicUsize>);

impl Running {
    /// A free place, or None when `MAX_RUNNING` exports are running.
    pub fn take(&self) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_RUNNING).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(&self.0)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the export: takes a connection and starts the query before
/// returning (so that an unavailable database or a failing query is an
/// error here, before anything is answered), then streams from a thread.
/// The key's name is its label (empty without one).
pub fn stream(pool: &Pool, range: Range, format: Format, slot: Slot) -> Result<Export, DbError> {
    let conn = pool.get()?;
    let (tx, rx) = mpsc::sync_channel(PIECES_IN_FLIGHT);
    let (started, start) = mpsc::sync_channel(1);
    let head = match format {
        Format::Csv => CSV_HEADER.as_bytes().to_vec(),
        Format::Json => Vec::new(),
    };
    thread::Builder::new()
        .name("usage-export".into())
        .spawn(move || {
            let _slot = slot;
            produce(conn, range, format, head, &started, &tx)
        })
        .map_err(|e| DbError::failed(&format!("cannot start the export's thread: {e}")))?;
    match start.recv() {
        Ok(Ok(())) => Ok(Export {
            pieces: rx,
            piece: Vec::new(),
            at: 0,
        }),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(DbError::failed(
            "the export's thread ended before its query",
        )),
    }
}

/// The producer: starts the query (and says so on `started`), then rows to
/// pieces to the channel. Stops at the first send that finds the reader
/// gone.
fn produce(
    mut conn: Conn,
    range: Range,
    format: Format,
    mut piece: Vec<u8>,
    started: &SyncSender<Result<(), mysql::Error>>,
    tx: &SyncSender<io::Result<Vec<u8>>>,
) {
    let params = (range.from.to_string(), range.to.to_string());
    let result = match conn.exec_iter(EXPORT_QUERY, params) {
        Ok(result) => result,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(()));
    let mut rows = 0u64;
    let outcome = (|| -> Result<bool, mysql::Error> {
        for row in result {
            let row = to_row(row?);
            match format {
                Format::Csv => csv_row(&mut piece, &row),
                Format::Json => json_row(&mut piece, &row, rows == 0),
            }
            rows += 1;
            if piece.len() >= PIECE && tx.send(Ok(std::mem::take(&mut piece))).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    })();
    match outcome {
        Ok(true) => {
            piece.extend_from_slice(trailer(format, rows));
            let _ = tx.send(Ok(piece));
        }
        Ok(false) => log::info!("usage export: the reader went away after {rows} rows"),
        Err(e) => {
            log::error!("usage export failed after {rows} rows: {e}");
            let _ = tx.send(Ok(piece));
            let _ = tx.send(Err(io::Error::other(format!("usage export failed: {e}"))));
        }
    }
}

fn to_row(row: mysql::Row) -> ExportRow {
    ExportRow {
        username: row.get(0).unwrap_or_default(),
        key_id: row.get::<Option<u64>, _>(1).flatten(),
        key_name: row.get::<Option<String>, _>(2).flatten(),
        day: row.get(3).unwrap_or_default(),
        endpoint: row.get(4).unwrap_or_default(),
        calls: row.get(5).unwrap_or(0),
        credits: row.get(6).unwrap_or(0),
    }
}

/// The export's bytes, as the producer thread makes them. Dropping it
/// stops the producer (its next send fails).
pub struct Export {
    pieces: Receiver<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    at: usize,
}

impl Read for Export {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.pieces.recv() {
                Ok(piece) => {
                    self.piece = piece?;
                    self.at = 0;
                }
                // The producer is done (its last piece was sent).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key_name: Option<&str>) -> ExportRow {
        ExportRow {
            username: "alice".into(),
            key_id: key_name.map(|_| 7),
            key_name: key_name.map(str::to_string),
            day: "2026-12-01".into(),
            endpoint: "banks_data".into(),
            calls: 3,
            credits: 30,
        }
    }

    #[test]
    fn at_most_max_running_slots_are_out_and_a_dropped_one_is_free_again() {
        let running = Running::default();
        let taken: Vec<Slot> = std::iter::from_fn(|| running.take()).take(10).collect();
        assert_eq!(taken.len(), MAX_RUNNING);
        assert!(running.take().is_none());
        drop(taken);
        assert!(running.take().is_some());
    }

    #[test]
    fn a_plain_row_is_written_unquoted_with_crlf() {
        let mut out = Vec::new();
        csv_row(&mut out, &row(Some("ci")));
        assert_eq!(out, b"alice,7,ci,2026-12-01,banks_data,3,30\r\n");
    }

    #[test]
    fn a_row_without_a_key_has_empty_key_fields() {
        let mut out = Vec::new();
        csv_row(&mut out, &row(None));
        assert_eq!(out, b"alice,,,2026-12-01,banks_data,3,30\r\n");
    }

    #[test]
    fn fields_with_commas_quotes_or_line_ends_are_quoted_and_quotes_doubled() {
        for (name, want) in [
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("x\ry", "\"x\ry\""),
            ("x\ny", "\"x\ny\""),
        ] {
            let mut out = Vec::new();
            csv_field(&mut out, name);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn json_rows_make_one_array() {
        let mut out = Vec::new();
        json_row(&mut out, &row(Some("ci")), true);
        json_row(&mut out, &row(None), false);
        out.extend_from_slice(trailer(Format::Json, 2));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["key_name"], "ci");
        assert_eq!(v[1]["key_id"], serde_json::Value::Null);
        assert_eq!(v.as_array().unwrap().len(), 2);
        let empty: serde_json::Value = serde_json::from_slice(trailer(Format::Json, 0)).unwrap();
        assert_eq!(empty, serde_json::json!([]));
    }

    #[test]
    fn a_range_needs_both_days_in_order() {
        assert!(Range::parse(Some("2026-12-01"), Some("2026-12-01")).is_ok());
        assert_eq!(
            Range::parse(None, Some("2026-12-01")),
            Err(ExportError::MissingDay("from"))
        );
        assert!(matches!(
            Range::parse(Some("2026-12-1"), Some("2026-12-01")),
            Err(ExportError::BadDay("from", _))
        ));
        assert!(matches!(
            Range::parse(Some("2026-12-02"), Some("2026-12-01")),
            Err(ExportError::Backwards { .. })
        ));
    }

    #[test]
    fn the_format_is_csv_by_default_and_nothing_else_but_json() {
        assert_eq!(Format::parse(None), Ok(Format::Csv));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert_eq!(
            Format::parse(Some("xml")),
            Err(ExportError::UnknownFormat("xml".into()))
        );
    }
}
