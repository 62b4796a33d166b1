//! The calling key's own usage and limits (never the Pool's): the limit
//! views that `GET /v1/usage` lists, and the Codex usage shape served at
//! `GET /backend-api/wham/usage`, `/wham/usage` and `/api/codex/usage` with
//! `plan_type: "api_key"`, whose windows are the key's limits. Both answers
//! leave a `succeeded` row with `usage_status = not_applicable`.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::admission::{self, AuthFailure, RowFacts};
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::store::{ApiKeyRow, KeyPolicy, RecordEvent};

/// One configured limit of a key and what the key has used of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitView {
    pub limit: &'static str,
    pub window: &'static str,
    /// `requests`, `tokens` or `usd_micros`.
    pub unit: &'static str,
    pub allowed: i64,
    /// Used in the current window; `None` for per-request caps.
    pub used: Option<i64>,
    pub remaining: Option<i64>,
    /// Length of the window in seconds; `None` for per-request caps.
    pub window_seconds: Option<i64>,
    /// When capacity frees (Unix seconds): the calendar window's end, the
    /// oldest counted request's expiry, or the end of a rolling window at the
    /// latest.
    pub resets_at: Option<i64>,
}

impl LimitView {
    fn used_percent(&self) -> f64 {
        match self.used {
            Some(used) if self.allowed > 0 => {
                (used as f64 * 100.0 / self.allowed as f64).min(100.0)
            }
            Some(used) if used > 0 => 100.0,
            _ => 0.0,
        }
    }

    fn reached(&self) -> bool {
        self.used.is_some_and(|used| used >= self.allowed)
    }

    /// Whether the window is short (a minute or a day) rather than long.
    fn is_short(&self) -> bool {
        self.window_seconds.is_some_and(|s| s <= 86_400)
    }
}

/// The key's limits with their current use, in a fixed order.
pub async fn limit_views(
    rt: &Runtime,
    api_key_id: &str,
    policy: &KeyPolicy,
) -> Result<Vec<LimitView>, GatewayError> {
    let now = rt.now_secs() * 1000;
    let day_start = now - now.rem_euclid(86_400_000);
    let week_start = now - 7 * 86_400_000;
    let month_start = crate::time::month_start_ms(now);
    let usage = rt
        .store
        .key_limit_usage(api_key_id, now, day_start, week_start, month_start)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "reading key limit usage failed");
            GatewayError::Internal
        })?;
    let w = usage.windows;
    let day_end = (day_start + 86_400_000) / 1000;
    let rolling_week_end = (now + 7 * 86_400_000) / 1000;
    let month_end = crate::time::month_start_ms(month_start + 32 * 86_400_000) / 1000;
    let minute_reset = usage
        .oldest_in_minute
        .map(|t| (t + 60_000) / 1000)
        .filter(|_| usage.requests_last_minute > 0);
    let windowed = [
        (
            "max_requests_per_minute",
            "rolling 60 seconds",
            "requests",
            policy.max_requests_per_minute,
            usage.requests_last_minute,
            60,
            minute_reset,
        ),
        (
            "max_tokens_per_day",
            "UTC day",
            "tokens",
            policy.max_tokens_per_day,
            w.tokens_day,
            86_400,
            Some(day_end),
        ),
        (
            "max_tokens_per_week",
            "rolling 7 days",
            "tokens",
            policy.max_tokens_per_week,
            w.tokens_week,
            604_800,
            Some(rolling_week_end),
        ),
        (
            "max_spend_micros_per_day",
            "UTC day",
            "usd_micros",
            policy.max_spend_micros_per_day,
            w.spend_day,
            86_400,
            Some(day_end),
        ),
        (
            "max_spend_micros_per_week",
            "rolling 7 days",
            "usd_micros",
            policy.max_spend_micros_per_week,
            w.spend_week,
            604_800,
            Some(rolling_week_end),
        ),
        (
            "max_spend_micros_per_month",
            "UTC month",
            "usd_micros",
            policy.max_spend_micros_per_month,
            w.spend_month,
            (month_end * 1000 - month_start) / 1000,
            Some(month_end),
        ),
    ];
    let mut views: Vec<LimitView> = windowed
        .into_iter()
        .filter_map(
            |(limit, window, unit, allowed, used, window_seconds, resets_at)| {
                allowed.map(|allowed| LimitView {
                    limit,
                    window,
                    unit,
                    allowed,
                    used: Some(used),
                    remaining: Some((allowed - used).max(0)),
                    window_seconds: Some(window_seconds),
                    resets_at,
                })
            },
        )
        .collect();
    for (limit, allowed) in [
        (
            "max_input_tokens_per_request",
            policy.max_input_tokens_per_request,
        ),
        (
            "max_output_tokens_per_request",
            policy.max_output_tokens_per_request,
        ),
    ] {
        if let Some(allowed) = allowed {
            views.push(LimitView {
                limit,
                window: "per request",
                unit: "tokens",
                allowed,
                used: None,
                remaining: None,
                window_seconds: None,
                resets_at: None,
            });
        }
    }
    Ok(views)
}

/// A Codex usage window from the most used of `views`.
fn codex_window(views: &[&LimitView], now_secs: i64) -> Value {
    let Some(v) = views
        .iter()
        .max_by(|a, b| a.used_percent().total_cmp(&b.used_percent()))
    else {
        return Value::Null;
    };
    let reset_at = v
        .resets_at
        .unwrap_or(now_secs + v.window_seconds.unwrap_or(0));
    json!({
        "used_percent": v.used_percent(),
        "limit_window_seconds": v.window_seconds,
        "reset_after_seconds": (reset_at - now_secs).max(0),
        "reset_at": reset_at,
    })
}

/// The Codex usage shape for a key: the primary window is its most used
/// short (minute or day) limit, the secondary its most used long (week or
/// month) limit; a key without limits is always allowed.
pub fn codex_usage_body(views: &[LimitView], now_secs: i64) -> Value {
    let windowed: Vec<&LimitView> = views
        .iter()
        .filter(|v| v.window_seconds.is_some())
        .collect();
    let short: Vec<&LimitView> = windowed.iter().copied().filter(|v| v.is_short()).collect();
    let long: Vec<&LimitView> = windowed.iter().copied().filter(|v| !v.is_short()).collect();
    let reached = windowed.iter().any(|v| v.reached());
    json!({
        "plan_type": "api_key",
        "rate_limit": {
            "allowed": !reached,
            "limit_reached": reached,
            "primary_window": codex_window(&short, now_secs),
            "secondary_window": codex_window(&long, now_secs),
        },
        "credits": null,
        "additional_rate_limits": [],
        "rate_limit_reached_type": if reached { json!({"type": "rate_limit_reached"}) } else { Value::Null },
    })
}

/// Records a served metadata read of the key.
pub async fn record_read(rt: &Runtime, key: &ApiKeyRow, facts: &RowFacts, operation: &str) {
    let mut row = admission::new_row(key, facts, "succeeded", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    row.response_status_code = Some(200);
    row.request_metadata =
        json!({"api_key": {"prefix": key.key_prefix}, "operation": operation}).to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(facts.endpoint, "succeeded", None);
}

/// `GET /backend-api/wham/usage` and its aliases for a Pool key.
pub async fn handle_codex_usage(
    rt: Arc<Runtime>,
    headers: HeaderMap,
    endpoint: &'static str,
) -> Response {
    let facts = RowFacts::from_headers(endpoint, "http_json", &headers);
    let key = match admission::authenticate(&rt, &headers).await {
        Ok(key) => key,
        Err(AuthFailure::Anonymous(err)) => return err.into_response(),
        Err(AuthFailure::Known(key, err)) => {
            return admission::reject(&rt, &key, &facts, err)
                .await
                .into_response();
        }
    };
    let views = match rt.key_policy(&key.id).await {
        Ok(policy) => limit_views(&rt, &key.id, &policy).await,
        Err(err) => {
            tracing::error!(error = %err, "loading the key policy failed");
            Err(GatewayError::Internal)
        }
    };
    let views = match views {
        Ok(v) => v,
        Err(err) => return err.into_response(),
    };
    record_read(&rt, &key, &facts, "usage").await;
    axum::Json(codex_usage_body(&views, rt.now_secs())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(limit: &'static str, allowed: i64, used: i64, window_seconds: i64) -> LimitView {
        LimitView {
            limit,
            window: "w",
            unit: "tokens",
            allowed,
            used: Some(used),
            remaining: Some((allowed - used).max(0)),
            window_seconds: Some(window_seconds),
            resets_at: Some(1_000 + window_seconds),
        }
    }

    #[test]
    fn a_key_without_limits_is_always_allowed() {
        let body = codex_usage_body(&[], 1_000);
        assert_eq!(body["plan_type"], "api_key");
        assert_eq!(body["rate_limit"]["allowed"], true);
        assert_eq!(body["rate_limit"]["primary_window"], Value::Null);
        assert_eq!(body["rate_limit"]["secondary_window"], Value::Null);
    }

    #[test]
    fn windows_take_the_most_used_short_and_long_limit() {
        let views = [
            view("max_requests_per_minute", 10, 2, 60),
            view("max_tokens_per_day", 1_000, 500, 86_400),
            view("max_tokens_per_week", 10_000, 1_000, 604_800),
        ];
        let body = codex_usage_body(&views, 1_000);
        assert_eq!(body["rate_limit"]["primary_window"]["used_percent"], 50.0);
        assert_eq!(
            body["rate_limit"]["primary_window"]["limit_window_seconds"],
            86_400
        );
        assert_eq!(
            body["rate_limit"]["primary_window"]["reset_after_seconds"],
            86_400
        );
        assert_eq!(body["rate_limit"]["secondary_window"]["used_percent"], 10.0);
        assert_eq!(body["rate_limit"]["limit_reached"], false);
    }

    #[test]
    fn a_full_window_reaches_the_limit() {
        let views = [view("max_requests_per_minute", 3, 3, 60)];
        let body = codex_usage_body(&views, 1_000);
        assert_eq!(body["rate_limit"]["allowed"], false);
        assert_eq!(body["rate_limit"]["limit_reached"], true);
        assert_eq!(
            body["rate_limit_reached_type"]["type"],
            "rate_limit_reached"
        );
        assert_eq!(body["rate_limit"]["primary_window"]["used_percent"], 100.0);
    }
}
