//! API key policies and the per-key reservations their limits are checked
//! against. A reservation is taken in one transaction that first locks the
//! key (row lock on PostgreSQL, the write lock on SQLite), so concurrent
//! requests — from any number of instances — cannot over-admit.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{AuditActor, Store, StoreError, StoreResult, with_pool};
use crate::time::{new_id, now_ms};

/// A key's policy; `None` means unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct KeyPolicy {
    pub enforced_reasoning_effort: Option<String>,
    pub maximum_reasoning_effort: Option<String>,
    pub enforced_service_tier: Option<String>,
    pub max_requests_per_minute: Option<i64>,
    pub max_tokens_per_day: Option<i64>,
    pub max_tokens_per_week: Option<i64>,
    pub max_input_tokens_per_request: Option<i64>,
    pub max_output_tokens_per_request: Option<i64>,
    pub max_spend_micros_per_day: Option<i64>,
    pub max_spend_micros_per_week: Option<i64>,
    pub max_spend_micros_per_month: Option<i64>,
}

impl KeyPolicy {
    /// Whether any windowed limit needs a reservation.
    pub fn has_window_limits(&self) -> bool {
        self.max_requests_per_minute.is_some()
            || self.max_tokens_per_day.is_some()
            || self.max_tokens_per_week.is_some()
            || self.max_spend_micros_per_day.is_some()
            || self.max_spend_micros_per_week.is_some()
            || self.max_spend_micros_per_month.is_some()
    }

    /// Whether any token or spend window is limited.
    pub fn has_token_or_spend_limits(&self) -> bool {
        self.max_tokens_per_day.is_some()
            || self.max_tokens_per_week.is_some()
            || self.max_spend_micros_per_day.is_some()
            || self.max_spend_micros_per_week.is_some()
            || self.max_spend_micros_per_month.is_some()
    }
}

/// A limit that would be exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    pub limit: &'static str,
    pub window: &'static str,
    pub attempted: i64,
    pub allowed: i64,
    /// Seconds until the window frees enough capacity, when known.
    pub retry_after_secs: Option<i64>,
}

/// What a reservation asks for.
#[derive(Debug, Clone)]
pub struct ReservationRequest<'a> {
    pub api_key_id: &'a str,
    pub request_id: &'a str,
    pub now_ms: i64,
    pub estimated_tokens: i64,
    pub estimated_cost_micros: i64,
    /// Start of the UTC day, of the rolling week, and of the UTC month (ms).
    pub day_start_ms: i64,
    pub week_start_ms: i64,
    pub month_start_ms: i64,
}

/// What a key has used of each token and spend window (reservations at
/// their estimate, settled requests at their real usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
pub struct WindowUsage {
    pub tokens_day: i64,
    pub tokens_week: i64,
    pub spend_day: i64,
    pub spend_week: i64,
    pub spend_month: i64,
}

/// A key's current use of its windowed limits (the usage views).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimitUsage {
    pub requests_last_minute: i64,
    /// When the oldest request of the last minute was admitted (ms).
    pub oldest_in_minute: Option<i64>,
    pub windows: WindowUsage,
}

/// Requests a key was admitted in the rolling minute, and the oldest one.
const REQUESTS_IN_MINUTE_SQL: &str =
    "SELECT CAST(COUNT(*) AS BIGINT), MIN(reserved_at) FROM key_reservations
    WHERE api_key_id = $1 AND reserved_at > $2";

/// Token and spend use per window from the key's hourly buckets: $2 day
/// start, $3 week start (hour), $4 month start, $5 oldest hour needed.
const WINDOW_USAGE_SQL: &str = "SELECT
        CAST(COALESCE(SUM(CASE WHEN hour_start >= $2 THEN tokens ELSE 0 END), 0) AS BIGINT) AS tokens_day,
        CAST(COALESCE(SUM(CASE WHEN hour_start >= $3 THEN tokens ELSE 0 END), 0) AS BIGINT) AS tokens_week,
        CAST(COALESCE(SUM(CASE WHEN hour_start >= $2 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS spend_day,
        CAST(COALESCE(SUM(CASE WHEN hour_start >= $3 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS spend_week,
        CAST(COALESCE(SUM(CASE WHEN hour_start >= $4 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS spend_month
     FROM key_usage_hours WHERE api_key_id = $1 AND hour_start >= $5";

/// Start of the hour containing `ms`.
pub fn hour_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(3_600_000)
}

const POLICY_COLUMNS: &str = "enforced_reasoning_effort, maximum_reasoning_effort, enforced_service_tier,
    max_requests_per_minute, max_tokens_per_day, max_tokens_per_week, max_input_tokens_per_request,
    max_output_tokens_per_request, max_spend_micros_per_day, max_spend_micros_per_week, max_spend_micros_per_month";

impl Store {
    /// The key's policy.
    pub async fn load_key_policy(&self, api_key_id: &str) -> StoreResult<KeyPolicy> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM api_keys WHERE id = $1"
        ));
        let row = with_pool!(self, pool => sqlx::query_as::<_, KeyPolicy>(sql).bind(api_key_id).fetch_optional(pool).await)?;
        row.ok_or(StoreError::NotFound("API key"))
    }

    /// Replaces the key's policy, with its audit event.
    pub async fn set_key_policy(
        &self,
        actor: &AuditActor,
        api_key_id: &str,
        p: &KeyPolicy,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE api_keys SET enforced_reasoning_effort = $2, maximum_reasoning_effort = $3, enforced_service_tier = $4,
                    max_requests_per_minute = $5, max_tokens_per_day = $6, max_tokens_per_week = $7,
                    max_input_tokens_per_request = $8, max_output_tokens_per_request = $9, max_spend_micros_per_day = $10,
                    max_spend_micros_per_week = $11, max_spend_micros_per_month = $12, updated_at = $13
                 WHERE id = $1 RETURNING pool_id")
                .bind(api_key_id).bind(p.enforced_reasoning_effort.as_deref()).bind(p.maximum_reasoning_effort.as_deref())
                .bind(p.enforced_service_tier.as_deref()).bind(p.max_requests_per_minute).bind(p.max_tokens_per_day)
                .bind(p.max_tokens_per_week).bind(p.max_input_tokens_per_request).bind(p.max_output_tokens_per_request)
                .bind(p.max_spend_micros_per_day).bind(p.max_spend_micros_per_week).bind(p.max_spend_micros_per_month)
                .bind(now_ms())
                .fetch_optional(&mut *tx).await?;
            let Some((pool_id,)) = row else { return Err(StoreError::NotFound("API key")) };
            sqlx::query(
                "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id, outcome, ip, details)
                 VALUES ($1, $2, $3, $4, $5, 'api_key.policy_update', 'api_key', $6, $7, 'succeeded', $8, $9)")
                .bind(new_id()).bind(now_ms()).bind(actor.kind).bind(actor.id.as_deref()).bind(&actor.label)
                .bind(api_key_id).bind(&pool_id).bind(actor.ip.as_deref())
                .bind(serde_json::json!({"fields": ["policy"], "policy": p}).to_string())
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Takes a reservation if every windowed limit of `policy` allows it.
    pub async fn reserve_for_key(
        &self,
        policy: &KeyPolicy,
        r: &ReservationRequest<'_>,
    ) -> StoreResult<Result<(), LimitExceeded>> {
        let minute_start = r.now_ms - 60_000;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Serialise reservations of this key (SQLite: the first write takes the database write lock).
            let locked = match self {
                Store::Postgres(_) => sqlx::query("SELECT id FROM api_keys WHERE id = $1 FOR UPDATE")
                    .bind(r.api_key_id).execute(&mut *tx).await?.rows_affected(),
                Store::Sqlite(_) => sqlx::query("UPDATE api_keys SET updated_at = updated_at WHERE id = $1")
                    .bind(r.api_key_id).execute(&mut *tx).await?.rows_affected(),
            };
            if locked != 1 {
                return Err(StoreError::NotFound("API key"));
            }
            let (requests_minute, oldest_in_minute): (i64, Option<i64>) = if policy.max_requests_per_minute.is_some() {
                sqlx::query_as(REQUESTS_IN_MINUTE_SQL)
                    .bind(r.api_key_id).bind(minute_start).fetch_one(&mut *tx).await?
            } else {
                (0, None)
            };
            let usage: WindowUsage = if policy.has_token_or_spend_limits() {
                let oldest = r.week_start_ms.min(r.month_start_ms).min(r.day_start_ms);
                sqlx::query_as(WINDOW_USAGE_SQL)
                    .bind(r.api_key_id).bind(r.day_start_ms).bind(hour_floor(r.week_start_ms)).bind(r.month_start_ms).bind(hour_floor(oldest))
                    .fetch_one(&mut *tx).await?
            } else {
                WindowUsage::default()
            };
            let day_end = r.day_start_ms + 86_400_000;
            let checks = [
                ("max_requests_per_minute", "rolling 60 seconds", policy.max_requests_per_minute, requests_minute + 1,
                    oldest_in_minute.map(|t| ((t + 60_000 - r.now_ms) / 1000).max(1))),
                ("max_tokens_per_day", "UTC day", policy.max_tokens_per_day, usage.tokens_day + r.estimated_tokens,
                    Some(((day_end - r.now_ms) / 1000).max(1))),
                ("max_tokens_per_week", "rolling 7 days", policy.max_tokens_per_week, usage.tokens_week + r.estimated_tokens, None),
                ("max_spend_micros_per_day", "UTC day", policy.max_spend_micros_per_day, usage.spend_day + r.estimated_cost_micros,
                    Some(((day_end - r.now_ms) / 1000).max(1))),
                ("max_spend_micros_per_week", "rolling 7 days", policy.max_spend_micros_per_week, usage.spend_week + r.estimated_cost_micros, None),
                ("max_spend_micros_per_month", "UTC month", policy.max_spend_micros_per_month, usage.spend_month + r.estimated_cost_micros, None),
            ];
            for (limit, window, allowed, attempted, retry_after_secs) in checks {
                if let Some(allowed) = allowed
                    && attempted > allowed
                {
                    tx.rollback().await?;
                    return Ok(Err(LimitExceeded { limit, window, attempted, allowed, retry_after_secs }));
                }
            }
            let hour = hour_floor(r.now_ms);
            sqlx::query(
                "INSERT INTO key_reservations (request_id, api_key_id, reserved_at, estimated_tokens, estimated_cost_micros, hour_start, state)
                 VALUES ($1, $2, $3, $4, $5, $6, 'reserved')")
                .bind(r.request_id).bind(r.api_key_id).bind(r.now_ms).bind(r.estimated_tokens).bind(r.estimated_cost_micros).bind(hour)
                .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO key_usage_hours (api_key_id, hour_start, tokens, cost_micros) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (api_key_id, hour_start) DO UPDATE SET tokens = key_usage_hours.tokens + excluded.tokens,
                    cost_micros = key_usage_hours.cost_micros + excluded.cost_micros")
                .bind(r.api_key_id).bind(hour).bind(r.estimated_tokens).bind(r.estimated_cost_micros)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// A key's current use of its windowed limits, without reserving.
    pub async fn key_limit_usage(
        &self,
        api_key_id: &str,
        now_ms: i64,
        day_start_ms: i64,
        week_start_ms: i64,
        month_start_ms: i64,
    ) -> StoreResult<KeyLimitUsage> {
        let oldest = week_start_ms.min(month_start_ms).min(day_start_ms);
        with_pool!(self, pool => {
            let (requests_last_minute, oldest_in_minute): (i64, Option<i64>) = sqlx::query_as(REQUESTS_IN_MINUTE_SQL)
                .bind(api_key_id).bind(now_ms - 60_000).fetch_one(pool).await?;
            let windows: WindowUsage = sqlx::query_as(WINDOW_USAGE_SQL)
                .bind(api_key_id).bind(day_start_ms).bind(hour_floor(week_start_ms)).bind(month_start_ms)
                .bind(hour_floor(oldest))
                .fetch_one(pool).await?;
            Ok(KeyLimitUsage { requests_last_minute, oldest_in_minute, windows })
        })
    }

    /// Count of reservations of a key (tests).
    pub async fn count_key_reservations(&self, api_key_id: &str) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM key_reservations WHERE api_key_id = $1")
            .bind(api_key_id).fetch_one(pool).await)?;
        Ok(row.0)
    }
}
