//! Wall-clock helpers. Every persisted time is epoch milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// A new time-ordered identifier (UUIDv7) as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm: years that start on 1 March, in 400-year eras).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Start of the UTC month containing `ms`.
pub fn month_start_ms(ms: i64) -> i64 {
    let days = ms.div_euclid(86_400_000);
    let (_, _, day_of_month) = civil_from_days(days);
    (days - (day_of_month - 1)) * 86_400_000
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` plus `suffix` (UTC).
pub fn format_utc(ms: i64, date_time_separator: char, suffix: &str) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}{date_time_separator}{:02}:{:02}:{:02}{suffix}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Epoch milliseconds as RFC 3339 UTC text (`2026-12-04T18:05:08Z`), for
/// command-line output.
pub fn utc_label(ms: i64) -> String {
    format_utc(ms, 'T', "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_start_is_the_first_of_the_utc_month() {
        // 2026-12-04T15:00:00Z → 2026-12-01T00:00:00Z
        assert_eq!(month_start_ms(1_796_396_400_000), 1_796_083_200_000);
        // 2024-02-29T23:59:59Z → 2024-02-01
        assert_eq!(month_start_ms(1_709_251_199_000), 1_706_745_600_000);
    }

    #[test]
    fn calendar_round_trips_and_formats() {
        for days in [-800_000, -1, 0, 59, 60, 19_723, 20_791, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(utc_label(1_796_396_400_000), "2026-12-04T15:00:00Z");
        assert_eq!(
            format_utc(1_709_251_199_000, ' ', " UTC"),
            "2024-02-29 23:59:59 UTC"
        );
    }
}
