//! `creditgate usage export --from DAY --to DAY [--format csv|json]`: the
//! CLI face of `billing::export`, the rows copied to stdout as they are
//! read (nothing held in memory but a few pieces).

use std::io::{self, Write};

use clap::Args;

use super::CliError;
use crate::billing::export::{self, ExportError, Format, Range};
use crate::db::Pool;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// First day, YYYY-MM-DD (included).
    #[arg(long)]
    pub from: String,
    /// Last day, YYYY-MM-DD (included).
    #[arg(long)]
    pub to: String,
    /// csv (RFC 4180, with a header row) or json (one array).
    #[arg(long, default_value = "csv")]
    pub format: String,
}

/// The checked request, before any connection is made: a bad day or
/// format is refused without the database.
pub fn parse(args: &ExportArgs) -> Result<(Range, Format), CliError> {
    let range = Range::parse(Some(&args.from), Some(&args.to)).map_err(flag_error)?;
    let format = Format::parse(Some(&args.format)).map_err(flag_error)?;
    Ok((range, format))
}

fn flag_error(e: ExportError) -> CliError {
    let flag = match &e {
        ExportError::BadDay(name, why) => return CliError::flag(format!("--{name}"), why),
        ExportError::MissingDay(name) => format!("--{name}"),
        ExportError::Backwards { .. } => "--from/--to".to_string(),
        ExportError::UnknownFormat(_) => "--format".to_string(),
    };
    CliError::flag(flag, e)
}

pub fn run(pool: &Pool, (range, format): (Range, Format)) -> Result<(), CliError> {
    // The CLI's process runs this one export: its place is always free.
    let slot = export::Running::default()
        .take()
        .expect("a fresh count has a free place");
    let mut rows = export::stream(pool, range, format, slot)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    io::copy(&mut rows, &mut out).and_then(|_| out.flush())?;
    Ok(())
}
