//! Validated input types. Every value that comes from a user (HTTP, CLI, env)
//! becomes one of these through `parse`, so the rest of the code never checks
//! the same thing twice. Pure: no I/O here.

use std::fmt;

/// Why a value was refused; the message names what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// 1–64 of `[A-Za-z0-9._-]`, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Username, ParseError> {
        if s.is_empty() || s.len() > 64 {
            return err("a username is 1 to 64 characters of A-Z a-z 0-9 . _ -");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return err("a username is 1 to 64 characters of A-Z a-z 0-9 . _ -");
        }
        Ok(Username(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1–16 of `[A-Za-z0-9]`, case-insensitive: held upper-case, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BankCode(String);

impl BankCode {
    pub fn parse(s: &str) -> Result<BankCode, ParseError> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return err("a bank code is 1 to 16 characters of A-Z a-z 0-9");
        }
        Ok(BankCode(s.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BankCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A calendar month, `YYYY-MM`; the unit of the monthly refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn parse(s: &str) -> Result<Period, ParseError> {
        let bad = || ParseError(format!("a period is YYYY-MM (e.g. 2026-01), not {s:?}"));
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    pub fn of(date: chrono::NaiveDate) -> Period {
        use chrono::Datelike;
        Period {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn days(self) -> u32 {
        let first = self.first_day();
        let next = self.next().first_day();
        (next - first).num_days() as u32
    }

    pub fn first_day(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid period")
    }

    /// The refill moment of this month for `refill_day`: 00:00 UTC of that
    /// day, or of the month's last day when the month is shorter.
    pub fn refill_moment(self, refill_day: RefillDay) -> chrono::DateTime<chrono::Utc> {
        let day = refill_day.get().min(self.days());
        let date =
            chrono::NaiveDate::from_ymd_opt(self.year, self.month, day).expect("clamped day");
        date.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Day of the month a user's allowance is restored, 1–31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillDay(u32);

impl RefillDay {
    pub fn parse(n: i64) -> Result<RefillDay, ParseError> {
        if (1..=31).contains(&n) {
            Ok(RefillDay(n as u32))
        } else {
            err(format!("a refill day is 1 to 31, not {n}"))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for RefillDay {
    fn default() -> Self {
        RefillDay(1)
    }
}

/// The next moment a user with a monthly allowance gets refilled, given the
/// period of their last refill. A refill that is due but not done yet (the
/// job runs every minute) is reported at its nominal moment.
pub fn next_refill(
    now: chrono::DateTime<chrono::Utc>,
    refill_day: RefillDay,
    credit_period: Option<Period>,
) -> chrono::DateTime<chrono::Utc> {
    let this_month = Period::of(now.date_naive());
    match credit_period {
        Some(p) if p >= this_month => p.next().refill_moment(refill_day),
        _ => this_month.refill_moment(refill_day),
    }
}

/// An `Idempotency-Key`: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<IdempotencyKey, ParseError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return err("an Idempotency-Key is 1 to 128 visible ASCII characters");
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A credit amount that is not negative: a balance, an allowance, a cost,
/// a value to set. Parsed from text (the CLI, the legacy table) or checked
/// from a number (a JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credit(i64);

impl Credit {
    pub fn parse(s: &str) -> Result<Credit, ParseError> {
        s.trim()
            .parse::<i64>()
            .ok()
            .and_then(|n| Credit::new(n).ok())
            .ok_or_else(|| {
                ParseError(format!(
                    "a credit amount is a whole number from 0 to {}, not {s:?}",
                    i64::MAX
                ))
            })
    }

    pub fn new(n: i64) -> Result<Credit, ParseError> {
        if n < 0 {
            return err(format!("a credit amount must not be negative, not {n}"));
        }
        Ok(Credit(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Credit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A change to add to a balance: any whole number within i64, negative to
/// take credit away. Whether the result may stand is the caller's rule.
pub fn parse_delta(s: &str) -> Result<i64, ParseError> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| ParseError(format!("an amount to add is a whole number, not {s:?}")))
}

/// The largest magnitude (2^49) up to which a float in a JSON body is
/// taken as the whole number it holds. serde_json (without its
/// `float_roundtrip` feature) reads a number with a fraction or exponent
/// with a few roundings, each off by at most 2^-53 of the value; below 2^49
/// all of them together stay under 0.5, so a float that came out whole is
/// the integer the client wrote. Above it `9007199254740993.0` could be
/// read as ...992: a silent wrong amount.
const EXACT_FLOAT_LIMIT: f64 = 562_949_953_421_312.0;

/// A whole number from JSON: an integer within i64, or a float with a zero
/// fraction (`123.0`, `1e3`) up to 2^49, which JSON Schema's `integer` also
/// counts and some encoders (Python's `json.dumps` of a float) send for
/// whole numbers. Anything else (a fraction, a bigger float, a string,
/// null, an overflow) is None.
pub fn whole_number(v: &serde_json::Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64().filter(|_| v.is_f64())?;
    (f.fract() == 0.0 && f.abs() <= EXACT_FLOAT_LIMIT).then_some(f as i64)
}

/// What a service's charge or hold is counted under in usage: 1–64 of
/// `[A-Za-z0-9._:/-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageLabel(String);

impl UsageLabel {
    pub fn parse(s: &str) -> Result<UsageLabel, ParseError> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b".:_/-".contains(&b);
        if s.is_empty() || s.len() > 64 || !s.bytes().all(ok) {
            return err("an endpoint label is 1 to 64 characters of A-Z a-z 0-9 . _ : / -");
        }
        Ok(UsageLabel(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A calendar day, `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(chrono::NaiveDate);

impl Day {
    pub fn parse(s: &str) -> Result<Day, ParseError> {
        // chrono alone also takes `2026-1-5`; the format is exact.
        let shaped = s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) if shaped => Ok(Day(d)),
            _ => err(format!("a day is YYYY-MM-DD (e.g. 2026-01-31), not {s:?}")),
        }
    }

    pub fn date(self) -> chrono::NaiveDate {
        self.0
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// An e-mail address, checked only as far as a mail relay needs: one `@`
/// with something on each side, no blanks, control characters or commas
/// (a comma would make one address two recipients), at most 254
/// characters (the column's VARCHAR(254) and the document's maxLength both
/// count characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Email, ParseError> {
        let ok = s.chars().count() <= 254
            && s.contains('@')
            && !s.starts_with('@')
            && !s.ends_with('@')
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',');
        if ok {
            Ok(Email(s.to_owned()))
        } else {
            err(format!("{s:?} is not an e-mail address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An existing token to import (the Flask sample's): usable in a header, so
/// not empty, at most 512 characters, no control characters, no
/// surrounding blanks.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportedToken(String);

impl ImportedToken {
    pub fn parse(s: &str) -> Result<ImportedToken, ParseError> {
        if s.is_empty() {
            return err("an imported token must not be empty");
        }
        // Characters, as the document's maxLength counts them.
        if s.chars().count() > 512 || s.chars().any(|c| c.is_control()) || s.trim() != s {
            return err("an imported token is at most 512 characters, without control characters or surrounding blanks");
        }
        Ok(ImportedToken(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A token is a secret: `Debug` shows none of it.
impl fmt::Debug for ImportedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImportedToken([redacted])")
    }
}

/// A length of time typed by an operator: a whole number and a unit, `45s`,
/// `90m`, `12h`, `30d` (`--ttl`, `--grace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(std::time::Duration);

impl Span {
    pub fn parse(s: &str) -> Result<Span, ParseError> {
        let bad = || {
            ParseError(format!(
                "a duration is a whole number and s, m, h or d (45s, 90m, 12h, 30d), not {s:?}"
            ))
        };
        let unit = s.chars().last().ok_or_else(bad)?;
        let per: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = s[..s.len() - 1]
            .parse()
            .ok()
            .filter(|_| s.len() > 1 && s.as_bytes()[0].is_ascii_digit())
            .ok_or_else(bad)?;
        // Ten years is plenty, and keeps date arithmetic far from overflow.
        let secs = n
            .checked_mul(per)
            .filter(|&t| t <= 10 * 366 * 86_400)
            .ok_or_else(|| ParseError(format!("{s:?} is longer than ten years")))?;
        Ok(Span(std::time::Duration::from_secs(secs)))
    }

    pub fn from_secs(secs: u64) -> Span {
        Span(std::time::Duration::from_secs(secs))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

/// A rate limit: `quota` requests per `window_secs`, as GCRA with burst =
/// quota. Typed `10/s`, `600/min`, `5/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub quota: u32,
    pub window_secs: u32,
}

impl RateLimit {
    pub fn parse(s: &str) -> Result<RateLimit, ParseError> {
        let bad = || {
            ParseError(format!(
                "a rate is N/s, N/min or N/h (e.g. 600/min), not {s:?}"
            ))
        };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let window_secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        let quota: i64 = n.parse().map_err(|_| bad())?;
        RateLimit::new(quota, window_secs)
    }

    /// From the admin API's numbers: a quota of 1 to 1,000,000 per a window
    /// of 1 s to 1 day.
    pub fn new(quota: i64, window_secs: i64) -> Result<RateLimit, ParseError> {
        if !(1..=1_000_000).contains(&quota) {
            return err(format!(
                "a rate quota is 1 to 1000000 requests, not {quota}"
            ));
        }
        if !(1..=86_400).contains(&window_secs) {
            return err(format!(
                "a rate window is 1 to 86400 seconds, not {window_secs}"
            ));
        }
        Ok(RateLimit {
            quota: quota as u32,
            window_secs: window_secs as u32,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.window_secs {
            1 => write!(f, "{}/s", self.quota),
            60 => write!(f, "{}/min", self.quota),
            3600 => write!(f, "{}/h", self.quota),
            w => write!(f, "{}/{w}s", self.quota),
        }
    }
}

/// A moment given by an operator (`--expires`, `expires_at`): RFC 3339.
/// A leap second (`23:59:60`, which RFC 3339 and JSON Schema's date-time
/// allow) is read as the start of the next second: chrono keeps it as a
/// 60th second that MariaDB's DATETIME refuses.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, ParseError> {
    use chrono::Timelike;
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| ParseError(format!("an RFC 3339 time, not {s:?}")))?;
    match t.nanosecond().checked_sub(1_000_000_000) {
        Some(into_leap) => {
            Ok(t.with_nanosecond(into_leap).expect("below one second")
                + chrono::Duration::seconds(1))
        }
        None => Ok(t),
    }
}

/// A key's label: up to 64 printable characters.
pub fn parse_label(s: &str) -> Result<String, ParseError> {
    if s.chars().count() > 64 || s.chars().any(char::is_control) {
        return err("a key label is at most 64 characters, without control characters");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn usernames_accept_the_documented_alphabet() {
        assert!(Username::parse("Alice.B_c-9").is_ok());
        assert!(Username::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn usernames_reject_empty_long_and_foreign_characters() {
        for bad in [
            "",
            &"a".repeat(65),
            "al ice",
            "alice'--",
            "ålice",
            "a\nb",
            "a:b",
            "a%",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn usernames_keep_their_case() {
        assert_ne!(
            Username::parse("Alice").unwrap(),
            Username::parse("alice").unwrap()
        );
    }

    #[test]
    fn bank_codes_are_case_insensitive() {
        assert_eq!(BankCode::parse("bofa").unwrap().as_str(), "BOFA");
    }

    #[test]
    fn bank_codes_reject_traversal_and_punctuation() {
        for bad in ["", "..%2F..", "../x", "a-b", &"A".repeat(17), "B OFA"] {
            assert!(BankCode::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn periods_parse_and_print_round_trip() {
        let p = Period::parse("2026-02").unwrap();
        assert_eq!(p.to_string(), "2026-02");
        assert_eq!(p.next().to_string(), "2026-03");
        assert_eq!(
            Period::parse("2026-12").unwrap().next().to_string(),
            "2027-01"
        );
        for bad in ["2026-13", "2026-00", "26-01", "2026/01", "2026-1", ""] {
            assert!(Period::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refill_day_past_the_month_end_means_the_last_day() {
        let day31 = RefillDay::parse(31).unwrap();
        let feb = Period::parse("2026-02").unwrap().refill_moment(day31);
        assert_eq!(feb, Utc.with_ymd_and_hms(2026, 2, 28, 0, 0, 0).unwrap());
        let leap = Period::parse("2028-02").unwrap().refill_moment(day31);
        assert_eq!(leap, Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap());
        let apr = Period::parse("2026-04").unwrap().refill_moment(day31);
        assert_eq!(apr, Utc.with_ymd_and_hms(2026, 4, 30, 0, 0, 0).unwrap());
    }

    #[test]
    fn next_refill_is_next_month_once_this_month_is_done() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let done = Some(Period::parse("2026-11").unwrap());
        let day = RefillDay::parse(5).unwrap();
        assert_eq!(
            next_refill(now, day, done),
            Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap()
        );
        let pending = Some(Period::parse("2026-10").unwrap());
        let late = RefillDay::parse(30).unwrap();
        assert_eq!(
            next_refill(now, late, pending),
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn usage_labels_are_bounded_and_plain() {
        for good in ["charge", "llm:gpt-4o/tokens", &"x".repeat(64)] {
            assert!(UsageLabel::parse(good).is_ok(), "{good:?} was refused");
        }
        for bad in ["", &"x".repeat(65), "with space", "a\tb", "é"] {
            assert!(UsageLabel::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_and_visible() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", &"k".repeat(129), "with space", "tab\t"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn credit_amounts_are_whole_and_not_negative() {
        assert_eq!(Credit::parse("100").unwrap().get(), 100);
        assert_eq!(Credit::parse(" 7 ").unwrap().get(), 7);
        for bad in ["-1", "1.5", "1e3", "", "x", "9223372036854775808"] {
            assert!(Credit::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Credit::new(-1).is_err());
        assert_eq!(Credit::new(0).unwrap().get(), 0);
    }

    #[test]
    fn deltas_may_be_negative_but_must_be_whole() {
        assert_eq!(parse_delta("-5").unwrap(), -5);
        for bad in ["1.5", "", "ten", "9223372036854775808"] {
            assert!(parse_delta(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn whole_numbers_may_carry_a_zero_fraction_up_to_2_pow_49() {
        let n = |text: &str| whole_number(&serde_json::from_str(text).unwrap());
        assert_eq!(n("123"), Some(123));
        assert_eq!(n("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(n("123.0"), Some(123));
        assert_eq!(n("-4.0"), Some(-4));
        assert_eq!(n("1e3"), Some(1000));
        assert_eq!(n("562949953421312.0"), Some(562_949_953_421_312));
        assert_eq!(n("-5.62949953421312e14"), Some(-562_949_953_421_312));
        for bad in [
            "1.5",
            "-0.5",
            "562949953421313.0",
            "9007199254740991.0",
            "1e17",
            "9223372036854775808",
            "\"7\"",
            "null",
            "true",
            "[1]",
        ] {
            assert_eq!(n(bad), None, "{bad} was taken");
        }
    }

    #[test]
    fn days_are_exactly_yyyy_mm_dd() {
        assert_eq!(Day::parse("2026-02-28").unwrap().to_string(), "2026-02-28");
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "26-02-28",
            "2026/02/28",
            "",
            "2026-02-28x",
        ] {
            assert!(Day::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn emails_need_an_at_and_no_blanks() {
        assert!(Email::parse("ops@example.org").is_ok());
        for bad in ["", "ops", "@x", "x@", "a b@x", "a@x,b@y", "a@x\n"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    // See: #26. The document's maxLength counts characters, as the
    // VARCHAR(254) column does; bytes refused a valid accented address.
    #[test]
    fn emails_are_at_most_254_characters_not_bytes() {
        let accented = format!("{}@example.org", "é".repeat(242));
        assert_eq!(accented.chars().count(), 254);
        assert!(Email::parse(&accented).is_ok());
        assert!(Email::parse(&format!("é{accented}")).is_err());
    }

    #[test]
    fn imported_tokens_must_be_usable_in_a_header() {
        assert!(ImportedToken::parse("legacy-token:with:colons").is_ok());
        for bad in ["", " padded", "line\nbreak", &"x".repeat(513)] {
            assert!(ImportedToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_are_rfc_3339_and_a_leap_second_is_the_next_second() {
        let t = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2030-06-30T23:59:60Z").unwrap(),
            "2030-07-01T00:00:00+00:00"
        );
        assert_eq!(
            t("2030-06-30T23:59:60.5Z").unwrap(),
            "2030-07-01T00:00:00.500+00:00"
        );
        assert_eq!(
            t("2030-01-01T02:00:00+02:00").unwrap(),
            "2030-01-01T00:00:00+00:00"
        );
        for bad in [
            "",
            "2030-06-30",
            "2030-06-30 23:59:59",
            "2030-02-30T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn imported_tokens_do_not_show_in_debug() {
        let t = ImportedToken::parse("s3cret-legacy").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn spans_are_a_number_and_a_unit() {
        assert_eq!(Span::parse("45s").unwrap().get().as_secs(), 45);
        assert_eq!(Span::parse("90m").unwrap().get().as_secs(), 5400);
        assert_eq!(Span::parse("12h").unwrap().get().as_secs(), 43_200);
        assert_eq!(Span::parse("30d").unwrap().get().as_secs(), 2_592_000);
        assert_eq!(Span::parse("0s").unwrap().get().as_secs(), 0);
        for bad in [
            "",
            "s",
            "10",
            "1.5h",
            "-1s",
            "+1s",
            "10 s",
            "3w",
            "99999999999d",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rates_are_a_quota_per_second_minute_or_hour() {
        let r = RateLimit::parse("600/min").unwrap();
        assert_eq!((r.quota, r.window_secs), (600, 60));
        assert_eq!(RateLimit::parse("10/s").unwrap().window_secs, 1);
        assert_eq!(RateLimit::parse("5/h").unwrap().to_string(), "5/h");
        for bad in ["", "10", "0/s", "-1/s", "10/day", "x/min", "1000001/s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(RateLimit::new(10, 0).is_err());
        assert!(RateLimit::new(10, 86_401).is_err());
    }
}
