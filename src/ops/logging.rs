//! Log setup: env_logger on stderr, in its usual format on a terminal or a
//! file; when stderr is systemd's journal stream, each line starts with its
//! syslog priority (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and
//! trace) and carries no timestamp, since journald stamps every entry.
//! Without the prefix every line would land at priority info and
//! `journalctl -p warning` would never show our warnings.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use log::Level;

/// Installs the global logger; `default_level` applies when `RUST_LOG` is
/// unset.
pub fn init(default_level: &str) {
    let env = env_logger::Env::default().default_filter_or(default_level);
    let mut builder = env_logger::Builder::from_env(env);
    let journal = std::env::var("JOURNAL_STREAM").ok();
    if stderr_is_journal(journal.as_deref(), stderr_id()) {
        builder.format(|buf, record| {
            let line = journal_line(record.level(), record.target(), &record.args().to_string());
            buf.write_all(line.as_bytes())
        });
    }
    builder.init();
}

/// `$JOURNAL_STREAM` is `device:inode` of the journal socket. A process run
/// from a service (a shell started from one, say) inherits the variable
/// with its stderr sent elsewhere, so the variable counts only if it names
/// our stderr (as `sd_journal_stream_fd(3)` advises).
fn stderr_is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let parsed = journal_stream.and_then(|v| {
        let (dev, ino) = v.trim().split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    });
    parsed.is_some() && parsed == stderr
}

/// Device and inode of fd 2, if it is open.
fn stderr_id() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One record for the journal: env_logger's `[LEVEL target] message`
/// without the timestamp. journald splits on newlines, so every line of a
/// multi-line message gets the prefix too (else it would land at info).
fn journal_line(level: Level, target: &str, message: &str) -> String {
    let prefix = format!("<{}>", priority(level));
    let mut out = format!("{prefix}[{level:<5} {target}] ");
    let mut lines = message.split('\n');
    out.push_str(lines.next().unwrap_or(""));
    for line in lines {
        out.push('\n');
        out.push_str(&prefix);
        out.push_str(line);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_gets_its_syslog_priority_and_no_timestamp() {
        assert_eq!(
            journal_line(Level::Error, "creditgate::app", "start failed: no database"),
            "<3>[ERROR creditgate::app] start failed: no database\n"
        );
        assert_eq!(
            journal_line(
                Level::Warn,
                "creditgate::app",
                "database is reachable again"
            ),
            "<4>[WARN  creditgate::app] database is reachable again\n"
        );
        assert_eq!(
            journal_line(Level::Info, "access", "req=1 GET /health 200 user=- 0.1ms"),
            "<6>[INFO  access] req=1 GET /health 200 user=- 0.1ms\n"
        );
        assert!(journal_line(Level::Debug, "x", "m").starts_with("<7>[DEBUG x] "));
        assert!(journal_line(Level::Trace, "x", "m").starts_with("<7>[TRACE x] "));
    }

    #[test]
    fn every_line_of_a_multi_line_message_keeps_the_priority() {
        assert_eq!(
            journal_line(Level::Error, "t", "first\nsecond"),
            "<3>[ERROR t] first\n<3>second\n"
        );
    }

    #[test]
    fn the_journal_is_used_only_when_the_variable_names_our_stderr() {
        assert!(stderr_is_journal(Some("8:1234"), Some((8, 1234))));
        assert!(!stderr_is_journal(Some("8:1234"), Some((8, 99))));
        assert!(!stderr_is_journal(Some("8:1234"), None));
        assert!(!stderr_is_journal(None, Some((8, 1234))));
        assert!(!stderr_is_journal(Some("garbage"), Some((8, 1234))));
    }

    #[test]
    fn stderr_id_names_the_open_stderr() {
        // cargo test's stderr is open (a pipe or a terminal): it has an id.
        assert!(stderr_id().is_some());
    }
}
