//! Request-log filters shared by the page and its JSON twin: each query
//! parameter is validated on its own, and an invalid or unsupported one is
//! dropped with a warning that names it, so the listing still works.

use std::collections::BTreeMap;

use crate::store::RequestLogFilter;

/// Status values an operator can filter by (`completed` is accepted as the
/// seed's word for `succeeded`).
pub const STATUSES: &[&str] = &[
    "in_progress",
    "succeeded",
    "failed",
    "rejected",
    "cancelled",
];

/// Parameters that are about paging or display, not filtering (`live=0`
/// keeps the page's live updates paused across reloads).
const NOT_FILTERS: &[&str] = &["limit", "before", "live"];

/// The filter and the warnings for what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFilters {
    pub filter: RequestLogFilter,
    pub warnings: Vec<String>,
}

fn simple_token(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Parses `YYYY-MM-DD` into the start of that UTC day in epoch milliseconds.
pub fn parse_utc_day(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    Some(crate::time::days_from_civil(y, m, d) * 86_400_000)
}

/// Validates every parameter; blanks mean "any".
pub fn parse_filters(params: &BTreeMap<String, String>) -> ParsedFilters {
    let mut out = ParsedFilters::default();
    for (key, raw) in params {
        let value = raw.trim();
        if value.is_empty() || NOT_FILTERS.contains(&key.as_str()) {
            continue;
        }
        let mut warn = |why: &str| {
            out.warnings
                .push(format!("{key}: {why}; this filter was ignored"))
        };
        match key.as_str() {
            "pool_id" => {
                if simple_token(value, 64) {
                    out.filter.pool_id = Some(value.to_owned());
                } else {
                    warn("not a Pool id");
                }
            }
            "status" => {
                let status = if value == "completed" {
                    "succeeded"
                } else {
                    value
                };
                if STATUSES.contains(&status) {
                    out.filter.status = Some(status.to_owned());
                } else {
                    warn(&format!(
                        "unknown status (use one of {})",
                        STATUSES.join(", ")
                    ));
                }
            }
            "upstream_identity_id" => {
                if simple_token(value, 64) {
                    out.filter.upstream_identity_id = Some(value.to_owned());
                } else {
                    warn("not an upstream account id");
                }
            }
            "model" => {
                if value.len() <= 200 && !value.chars().any(char::is_control) {
                    out.filter.model = Some(value.to_owned());
                } else {
                    warn("not a model name");
                }
            }
            "api_key" => {
                if value.len() <= 120 && !value.chars().any(char::is_control) {
                    out.filter.api_key = Some(value.to_owned());
                } else {
                    warn("not an API key label or prefix");
                }
            }
            "request_id" => {
                if simple_token(value, 160) {
                    out.filter.request_id = Some(value.to_owned());
                } else {
                    warn("not a request or correlation id");
                }
            }
            "date_from" => match parse_utc_day(value) {
                Some(ms) => out.filter.admitted_from = Some(ms),
                None => warn("not a date (use YYYY-MM-DD, UTC)"),
            },
            "date_to" => match parse_utc_day(value) {
                Some(ms) => out.filter.admitted_before = Some(ms + 86_400_000),
                None => warn("not a date (use YYYY-MM-DD, UTC)"),
            },
            _ => out
                .warnings
                .push(format!("{key}: unsupported filter; it was ignored")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn valid_filters_are_kept_and_dates_are_utc_day_bounds() {
        let p = parse_filters(&params(&[
            ("status", "completed"),
            ("date_from", "2026-12-04"),
            ("date_to", "2026-12-04"),
            ("model", "gpt-5.5"),
        ]));
        assert!(p.warnings.is_empty());
        assert_eq!(p.filter.status.as_deref(), Some("succeeded"));
        assert_eq!(p.filter.admitted_from, Some(1_796_342_400_000));
        assert_eq!(
            p.filter.admitted_before,
            Some(1_796_342_400_000 + 86_400_000)
        );
        assert_eq!(p.filter.model.as_deref(), Some("gpt-5.5"));
    }

    #[test]
    fn paging_and_display_parameters_are_not_filters() {
        let p = parse_filters(&params(&[("before", "1_x"), ("limit", "5"), ("live", "0")]));
        assert_eq!(p, ParsedFilters::default());
    }

    #[test]
    fn each_bad_filter_is_named_and_dropped() {
        let p = parse_filters(&params(&[
            ("status", "bogus"),
            ("date_from", "2026-13-40"),
            ("colour", "red"),
            ("pool_id", "x y"),
        ]));
        assert_eq!(p.filter, RequestLogFilter::default());
        assert_eq!(p.warnings.len(), 4);
        for name in ["status", "date_from", "colour", "pool_id"] {
            assert!(
                p.warnings.iter().any(|w| w.starts_with(name)),
                "{name}: {:?}",
                p.warnings
            );
        }
    }

    #[test]
    fn leap_days_parse() {
        assert!(parse_utc_day("2024-02-29").is_some());
        assert!(parse_utc_day("2023-02-29").is_none());
        assert_eq!(parse_utc_day("1970-01-01"), Some(0));
    }
}
