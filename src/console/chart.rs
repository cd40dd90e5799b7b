//! Bar charts as inline SVG, drawn here so that the console needs no
//! script and no external resource. Pure: numbers in, markup out.
//!
//! One slot per day; a day with usage gets a `<rect class="bar">` carrying
//! `data-day` and `data-value` (and a tooltip), a day without gets nothing,
//! so the bars on the page are exactly the days with usage.

use chrono::{Days, NaiveDate};
use maud::{html, Markup};

use crate::billing::usage::DayTotal;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// `days` totals ending with `to`, oldest first, with the days missing from
/// `totals` as zeros.
pub fn fill_days(totals: &[DayTotal], to: NaiveDate, days: u32) -> Vec<DayTotal> {
    (0..days)
        .rev()
        .map(|back| {
            let day = to.checked_sub_days(Days::new(back.into())).unwrap_or(to);
            totals
                .iter()
                .find(|t| t.day == day)
                .copied()
                .unwrap_or(DayTotal {
                    day,
                    calls: 0,
                    credits: 0,
                })
        })
        .collect()
}

/// The smallest 1, 2 or 5 × 10^k that is at least `max` (and at least 1):
/// the top of the axis.
pub fn nice_ceiling(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            match step.checked_mul(m) {
                Some(v) if v >= max => return v,
                Some(_) => {}
                None => return u64::MAX,
            }
        }
        step = match step.checked_mul(10) {
            Some(s) => s,
            None => return u64::MAX,
        };
    }
}

/// A bar chart of one value per day; `unit` names it in tooltips ("calls").
pub fn bars(label: &str, unit: &str, points: &[(NaiveDate, u64)]) -> Markup {
    let max = points.iter().map(|p| p.1).max().unwrap_or(0);
    let top = nice_ceiling(max) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / points.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let y_of = |v: f64| TOP + plot_h - v / top * plot_h;
    let label_days: Vec<usize> = match points.len() {
        0 => vec![],
        n => vec![0, n / 2, n - 1],
    };
    html! {
        figure.chart {
            figcaption { (label) }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label)
                xmlns="http://www.w3.org/2000/svg" {
                @for frac in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt(y_of(top * frac))) y2=(fmt(y_of(top * frac))) {}
                    text.axis x=(LEFT - 6.0) y=(fmt(y_of(top * frac) + 4.0)) text-anchor="end" {
                        (axis_number(top * frac))
                    }
                }
                @for (i, (day, value)) in points.iter().enumerate() {
                    @if *value > 0 {
                        @let h = *value as f64 / top * plot_h;
                        rect.bar x=(fmt(LEFT + i as f64 * slot + (slot - bar_w) / 2.0))
                            y=(fmt(TOP + plot_h - h)) width=(fmt(bar_w)) height=(fmt(h.max(1.0)))
                            data-day=(day) data-value=(value) {
                            title { (day) ": " (value) " " (unit) }
                        }
                    }
                }
                @for i in &label_days {
                    @let (day, _) = points[*i];
                    text.axis x=(fmt(LEFT + (*i as f64 + 0.5) * slot)) y=(HEIGHT - 6.0)
                        text-anchor=(anchor(*i, points.len())) {
                        (day.format("%b %d"))
                    }
                }
            }
            @if max == 0 {
                p.muted { "No " (unit) " in these days." }
            }
        }
    }
}

/// Edge labels lean inwards so that they are not cut off.
fn anchor(i: usize, n: usize) -> &'static str {
    if i == 0 {
        "start"
    } else if i + 1 == n {
        "end"
    } else {
        "middle"
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// 1500 → "1.5k", 2000000 → "2M": axis labels stay short.
fn axis_number(v: f64) -> String {
    let trim = |s: String| s.trim_end_matches(".0").to_string();
    if v >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if v >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else {
        trim(format!("{v:.1}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn missing_days_are_filled_with_zeros_oldest_first() {
        let totals = [DayTotal {
            day: day("2026-11-30"),
            calls: 3,
            credits: 6,
        }];
        let filled = fill_days(&totals, day("2026-12-01"), 30);
        assert_eq!(filled.len(), 30);
        assert_eq!(filled[0].day, day("2026-11-02"));
        assert_eq!(filled[29].day, day("2026-12-01"));
        assert_eq!(filled[28].calls, 3);
        assert_eq!(filled.iter().map(|t| t.calls).sum::<u64>(), 3);
    }

    #[test]
    fn the_axis_top_is_a_round_number_at_or_above_the_maximum() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(500), 500);
        assert_eq!(nice_ceiling(501), 1000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }

    #[test]
    fn only_days_with_usage_get_a_bar() {
        let points: Vec<(NaiveDate, u64)> = (1..=30)
            .map(|d| {
                (
                    day(&format!("2026-11-{d:02}")),
                    if d % 10 == 0 { 4 } else { 0 },
                )
            })
            .collect();
        let svg = bars("Calls per day", "calls", &points).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(svg.contains("data-day=\"2026-11-10\" data-value=\"4\""));
        assert!(svg.contains("2026-11-20: 4 calls"));
    }

    #[test]
    fn a_chart_without_usage_says_so() {
        let points = vec![(day("2026-11-01"), 0)];
        let svg = bars("Calls", "calls", &points).into_string();
        assert!(!svg.contains("class=\"bar\""));
        assert!(svg.contains("No calls in these days."));
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(axis_number(0.0), "0");
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(1500.0), "1.5k");
        assert_eq!(axis_number(2_000_000.0), "2M");
    }
}
