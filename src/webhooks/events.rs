//! The events and the pure rules of when one is due: which usage
//! thresholds a change of credit crosses, and the envelope every event is
//! sent in. The SQL that records them is `outbox`'s.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// What happened, as the `type` of the body and a member of
/// `webhooks.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A charge took the available credit below the user's threshold.
    CreditLow,
    /// A charge or a hold was refused for credit (once until it comes back).
    CreditExhausted,
    /// Usage of the monthly allowance crossed 50, 80 or 100 %.
    UsageThreshold,
    /// The monthly refill job refilled the user.
    CreditRefilled,
    /// The expire-holds job released an open hold at its expiry.
    HoldExpired,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::CreditLow,
        EventType::CreditExhausted,
        EventType::UsageThreshold,
        EventType::CreditRefilled,
        EventType::HoldExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CreditLow => "credit.low",
            EventType::CreditExhausted => "credit.exhausted",
            EventType::UsageThreshold => "credit.usage_threshold",
            EventType::CreditRefilled => "credit.refilled",
            EventType::HoldExpired => "hold.expired",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// A comma-separated list (`credit.low,hold.expired`; blanks around a
    /// name are skipped, repeats do not matter), at least one.
    pub fn parse_list(s: &str) -> Result<Vec<EventType>, String> {
        EventType::from_names(s.split(','))
    }

    /// The same rule over names already split (the admin API's JSON list).
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<EventType>, String> {
        let mut out = Vec::new();
        for name in names {
            let name = name.trim_matches(' ');
            let e = EventType::parse(name).ok_or_else(|| {
                format!("unknown event {name:?}; events are {}", EventType::names())
            })?;
            if !out.contains(&e) {
                out.push(e);
            }
        }
        if out.is_empty() {
            return Err(format!("no event given; events are {}", EventType::names()));
        }
        out.sort_by_key(|e| EventType::ALL.iter().position(|a| a == e));
        Ok(out)
    }

    fn names() -> String {
        EventType::ALL.map(EventType::as_str).join(", ")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds of `credit.usage_threshold`, in percent of the monthly
/// allowance.
pub const THRESHOLDS: [u8; 3] = [50, 80, 100];

/// The thresholds that a change of the credit from `before` to `after`
/// crosses upward, usage being what is missing to the allowance
/// (`monthly - credit`): a top-up above the allowance is negative usage,
/// and held credit is not used until it is captured. Integer arithmetic,
/// so 80 % of 7 is crossed at exactly 5.6, i.e. 6 used.
pub fn thresholds_crossed(monthly: i64, before: i64, after: i64) -> Vec<u8> {
    if monthly <= 0 || after >= before {
        return Vec::new();
    }
    let reached = |credit: i64, p: u8| {
        let used = i128::from(monthly) - i128::from(credit);
        used * 100 >= i128::from(monthly) * i128::from(p)
    };
    THRESHOLDS
        .into_iter()
        .filter(|&p| !reached(before, p) && reached(after, p))
        .collect()
}

/// The body of an event: `{"type", "timestamp", "data"}`, as Standard
/// Webhooks recommends, serialised once, so every retry sends (and signs)
/// the same bytes.
pub fn envelope(kind: EventType, at: DateTime<Utc>, data: Value) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threshold_is_crossed_by_the_change_that_reaches_it() {
        assert_eq!(thresholds_crossed(100, 100, 51), Vec::<u8>::new());
        assert_eq!(thresholds_crossed(100, 51, 50), vec![50]);
        assert_eq!(thresholds_crossed(100, 50, 20), vec![80]);
        assert_eq!(thresholds_crossed(100, 100, 0), vec![50, 80, 100]);
        assert_eq!(thresholds_crossed(100, 1, 0), vec![100]);
    }

    #[test]
    fn a_change_that_does_not_lower_the_credit_crosses_nothing() {
        assert!(thresholds_crossed(100, 0, 100).is_empty());
        assert!(thresholds_crossed(100, 40, 40).is_empty());
        assert!(thresholds_crossed(0, 10, 0).is_empty());
    }

    #[test]
    fn credit_above_the_allowance_is_not_usage() {
        // A top-up to 300 on an allowance of 100: 250 left is no usage.
        assert!(thresholds_crossed(100, 300, 250).is_empty());
        assert_eq!(thresholds_crossed(100, 300, 50), vec![50]);
    }

    #[test]
    fn fractions_round_toward_crossing_later() {
        // 80 % of 7 is 5.6: crossed at 6 used, not 5.
        assert!(!thresholds_crossed(7, 7, 2).contains(&80));
        assert!(thresholds_crossed(7, 7, 1).contains(&80));
    }

    #[test]
    fn event_lists_parse_in_a_fixed_order_without_repeats() {
        let list = EventType::parse_list("hold.expired, credit.low,credit.low").unwrap();
        assert_eq!(list, [EventType::CreditLow, EventType::HoldExpired]);
        assert!(EventType::parse_list("credit.lo").is_err());
        assert!(EventType::parse_list("").is_err());
    }

    #[test]
    fn the_envelope_has_type_timestamp_and_data() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let body = envelope(EventType::CreditLow, at, json!({"user": "alice"}));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "credit.low");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["data"]["user"], "alice");
    }
}
