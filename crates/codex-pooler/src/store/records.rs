//! Request rows, attempts, settlements and quota evidence: written in batches by
//! the recorder task, read by the request-log API.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreResult, with_pool};

/// A request row as first written (admitted, or rejected outright).
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub correlation_id: String,
    pub pool_id: String,
    pub api_key_id: Option<String>,
    pub api_key_prefix: Option<String>,
    pub api_key_label: Option<String>,
    pub endpoint: String,
    pub transport: String,
    pub status: String,
    pub usage_status: String,
    pub requested_model: String,
    pub reasoning_effort: Option<String>,
    pub service_tier: Option<String>,
    pub admitted_at: i64,
    pub completed_at: Option<i64>,
    pub response_status_code: Option<i64>,
    pub last_error_code: Option<String>,
    pub client_request_id: Option<String>,
    pub user_agent: Option<String>,
    pub request_metadata: String,
    pub estimated_cost_micros: Option<i64>,
    /// The admission estimate (input + output tokens); `Some` for requests
    /// that reserve capacity, which get a reservation ledger entry.
    pub estimated_tokens: Option<i64>,
    /// Whether a key reservation (windowed limits) was taken for it, which
    /// its settlement then corrects.
    pub window_reserved: bool,
}

/// An upstream attempt as it starts.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: String,
    pub request_id: String,
    pub attempt_number: i64,
    pub assignment_id: String,
    pub identity_id: String,
    pub identity_label: String,
    pub identity_email: Option<String>,
    pub identity_plan: Option<String>,
    pub started_at: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub id: String,
    pub status: &'static str,
    pub upstream_status_code: Option<i64>,
    pub retryable: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub upstream_request_id: Option<String>,
    pub completed_at: i64,
    pub latency_ms: i64,
}

/// Settled tokens and cost of a finished request.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    pub usage_status: &'static str,
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub settled_cost_micros: Option<i64>,
    pub pricing_status: Option<String>,
    pub actual_service_tier: Option<String>,
    /// The pricing snapshot version that priced it.
    pub pricing_version: Option<i64>,
}

/// The final state of an admitted request.
#[derive(Debug, Clone)]
pub struct RequestEnd {
    pub request_id: String,
    pub status: &'static str,
    pub response_status_code: Option<i64>,
    pub retry_count: i64,
    pub last_error_code: Option<String>,
    pub completed_at: i64,
    pub routing_ms: Option<i64>,
    pub upstream_ms: Option<i64>,
    pub first_byte_ms: Option<i64>,
    pub total_ms: i64,
    pub settlement: Settlement,
    pub metadata_patch: Option<String>,
}

/// One quota window observed for an identity.
#[derive(Debug, Clone)]
pub struct QuotaObservation {
    pub identity_id: String,
    pub window_kind: String,
    pub used_percent: f64,
    pub window_minutes: Option<i64>,
    pub reset_at: Option<i64>,
    pub source: &'static str,
    pub observed_at: i64,
}

/// Everything the recorder writes.
#[derive(Debug, Clone)]
pub enum RecordEvent {
    Request(Box<NewRequest>),
    AttemptStarted(Box<NewAttempt>),
    AttemptEnded(Box<AttemptEnd>),
    RequestEnded(Box<RequestEnd>),
    Quota(Box<QuotaObservation>),
    KeyUsed { api_key_id: String, at: i64 },
}

/// A request row as the request-log API shows it.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RequestLogRow {
    pub id: String,
    pub correlation_id: String,
    pub pool_id: String,
    pub pool_name: Option<String>,
    pub api_key_id: Option<String>,
    pub api_key_prefix: Option<String>,
    pub api_key_label: Option<String>,
    pub endpoint: String,
    pub transport: String,
    pub status: String,
    pub usage_status: String,
    pub requested_model: String,
    pub reasoning_effort: Option<String>,
    pub service_tier: Option<String>,
    pub admitted_at: i64,
    pub completed_at: Option<i64>,
    pub routing_ms: Option<i64>,
    pub upstream_ms: Option<i64>,
    pub first_byte_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub response_status_code: Option<i64>,
    pub retry_count: i64,
    pub last_error_code: Option<String>,
    pub upstream_identity_id: Option<String>,
    pub upstream_account_label: Option<String>,
    pub upstream_account_email: Option<String>,
    pub upstream_account_plan: Option<String>,
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub estimated_cost_micros: Option<i64>,
    pub settled_cost_micros: Option<i64>,
    pub pricing_status: Option<String>,
    pub client_request_id: Option<String>,
    pub user_agent: Option<String>,
    pub request_metadata: String,
}

/// An attempt as the request-log detail shows it.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AttemptLogRow {
    pub id: String,
    pub attempt_number: i64,
    pub assignment_id: Option<String>,
    pub identity_id: Option<String>,
    pub identity_label: Option<String>,
    pub status: String,
    pub upstream_status_code: Option<i64>,
    pub retryable: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub upstream_request_id: Option<String>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub latency_ms: Option<i64>,
}

/// Request-log filters, already validated; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLogFilter {
    pub pool_id: Option<String>,
    pub status: Option<String>,
    pub upstream_identity_id: Option<String>,
    pub model: Option<String>,
    /// An API key's safe prefix or its label.
    pub api_key: Option<String>,
    /// A row id, correlation id or client request id, whole or a fragment.
    pub request_id: Option<String>,
    /// Epoch milliseconds, inclusive.
    pub admitted_from: Option<i64>,
    /// Epoch milliseconds, exclusive.
    pub admitted_before: Option<i64>,
}

/// A page position: rows strictly older than this (admitted_at, id).
#[derive(Debug, Clone)]
pub struct RequestCursor {
    pub admitted_at: i64,
    pub id: String,
}

const REQUEST_LOG_COLUMNS: &str = "r.id, r.correlation_id, r.pool_id, p.name AS pool_name, r.api_key_id, r.api_key_prefix,
    r.api_key_label, r.endpoint, r.transport, r.status, r.usage_status, r.requested_model, r.reasoning_effort,
    r.service_tier, r.admitted_at, r.completed_at, r.routing_ms, r.upstream_ms, r.first_byte_ms, r.total_ms,
    r.response_status_code, r.retry_count, r.last_error_code, r.upstream_identity_id, r.upstream_account_label,
    r.upstream_account_email, r.upstream_account_plan, r.input_tokens, r.cached_input_tokens, r.output_tokens,
    r.reasoning_tokens, r.total_tokens, r.estimated_cost_micros, r.settled_cost_micros, r.pricing_status,
    r.client_request_id, r.user_agent, r.request_metadata";

/// Whether a request status is final.
fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "rejected" | "cancelled")
}

/// Rollup deltas of the requests a batch inserted already finished, summed
/// per bucket so the batch writes one upsert per bucket instead of two per
/// request. Mirrors `rollup_request!` exactly (same buckets, same measures).
#[derive(Default)]
struct BatchRollups {
    hourly: std::collections::HashMap<(String, String, i64), super::RollupMeasures>,
    daily: std::collections::HashMap<(i64, String, String, String, String), super::RollupMeasures>,
}

impl BatchRollups {
    fn add(&mut self, row: &NewRequest, attempt: Option<&NewAttempt>, end: Option<&RequestEnd>) {
        let status = end.map_or(row.status.as_str(), |e| e.status);
        let s = end.map(|e| &e.settlement);
        let usage_status = s.map_or(row.usage_status.as_str(), |s| s.usage_status);
        let count = |hit: bool| i64::from(hit);
        let cost = s.and_then(|s| s.settled_cost_micros);
        let delta = super::RollupMeasures {
            request_count: 1,
            succeeded_count: count(status == "succeeded"),
            failed_count: count(status == "failed"),
            rejected_count: count(status == "rejected"),
            cancelled_count: count(status == "cancelled"),
            usage_known_count: count(usage_status == "usage_known"),
            metered_count: count(usage_status != "not_applicable"),
            priced_count: count(cost.is_some()),
            input_tokens: s.and_then(|s| s.input_tokens).unwrap_or(0),
            cached_input_tokens: s.and_then(|s| s.cached_input_tokens).unwrap_or(0),
            output_tokens: s.and_then(|s| s.output_tokens).unwrap_or(0),
            reasoning_tokens: s.and_then(|s| s.reasoning_tokens).unwrap_or(0),
            total_tokens: s.and_then(|s| s.total_tokens).unwrap_or(0),
            settled_cost_micros: cost.unwrap_or(0),
        };
        let at = row.admitted_at;
        let hour = at - at.rem_euclid(3_600_000);
        let day = at - at.rem_euclid(86_400_000);
        *self
            .hourly
            .entry((row.pool_id.clone(), row.requested_model.clone(), hour))
            .or_default() += delta;
        *self
            .daily
            .entry((
                day,
                row.pool_id.clone(),
                row.api_key_id.clone().unwrap_or_default(),
                attempt.map(|a| a.identity_id.clone()).unwrap_or_default(),
                row.requested_model.clone(),
            ))
            .or_default() += delta;
    }
}

/// The measure columns of both rollup tables, in `RollupMeasures` order.
macro_rules! rollup_measure_columns {
    () => {
        "request_count, succeeded_count, failed_count, rejected_count, cancelled_count, usage_known_count, \
         metered_count, priced_count, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
         total_tokens, settled_cost_micros"
    };
}

/// `ON CONFLICT … DO UPDATE SET` adding every incoming measure to `$table`'s.
macro_rules! rollup_add_set {
    ($table:literal) => {
        concat!(
            "request_count = ",
            $table,
            ".request_count + excluded.request_count, ",
            "succeeded_count = ",
            $table,
            ".succeeded_count + excluded.succeeded_count, ",
            "failed_count = ",
            $table,
            ".failed_count + excluded.failed_count, ",
            "rejected_count = ",
            $table,
            ".rejected_count + excluded.rejected_count, ",
            "cancelled_count = ",
            $table,
            ".cancelled_count + excluded.cancelled_count, ",
            "usage_known_count = ",
            $table,
            ".usage_known_count + excluded.usage_known_count, ",
            "metered_count = ",
            $table,
            ".metered_count + excluded.metered_count, ",
            "priced_count = ",
            $table,
            ".priced_count + excluded.priced_count, ",
            "input_tokens = ",
            $table,
            ".input_tokens + excluded.input_tokens, ",
            "cached_input_tokens = ",
            $table,
            ".cached_input_tokens + excluded.cached_input_tokens, ",
            "output_tokens = ",
            $table,
            ".output_tokens + excluded.output_tokens, ",
            "reasoning_tokens = ",
            $table,
            ".reasoning_tokens + excluded.reasoning_tokens, ",
            "total_tokens = ",
            $table,
            ".total_tokens + excluded.total_tokens, ",
            "settled_cost_micros = ",
            $table,
            ".settled_cost_micros + excluded.settled_cost_micros"
        )
    };
}

/// Binds the fourteen measures of a `RollupMeasures`, in column order.
macro_rules! bind_measures {
    ($query:expr, $m:expr) => {{
        let m: &super::RollupMeasures = $m;
        $query
            .bind(m.request_count)
            .bind(m.succeeded_count)
            .bind(m.failed_count)
            .bind(m.rejected_count)
            .bind(m.cancelled_count)
            .bind(m.usage_known_count)
            .bind(m.metered_count)
            .bind(m.priced_count)
            .bind(m.input_tokens)
            .bind(m.cached_input_tokens)
            .bind(m.output_tokens)
            .bind(m.reasoning_tokens)
            .bind(m.total_tokens)
            .bind(m.settled_cost_micros)
    }};
}

/// Adds (`$sign` = 1) or removes (`$sign` = -1) one finished request row
/// to or from the hourly (Pool × model) and daily (Pool × key × account ×
/// model) rollups, in the bucket of its admission time. A row still in
/// progress adds nothing.
/// One finished request row's measures times the sign `$2`, in
/// `rollup_measure_columns!` order, then `FROM requests` for row `$1`.
macro_rules! signed_row_measures {
    () => {
        "CAST($2 AS BIGINT),
                CASE WHEN status = 'succeeded' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN status = 'failed' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN status = 'rejected' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN status = 'cancelled' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN usage_status = 'usage_known' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN usage_status <> 'not_applicable' THEN CAST($2 AS BIGINT) ELSE 0 END,
                CASE WHEN settled_cost_micros IS NOT NULL THEN CAST($2 AS BIGINT) ELSE 0 END,
                CAST($2 AS BIGINT) * COALESCE(input_tokens, 0), CAST($2 AS BIGINT) * COALESCE(cached_input_tokens, 0),
                CAST($2 AS BIGINT) * COALESCE(output_tokens, 0), CAST($2 AS BIGINT) * COALESCE(reasoning_tokens, 0),
                CAST($2 AS BIGINT) * COALESCE(total_tokens, 0), CAST($2 AS BIGINT) * COALESCE(settled_cost_micros, 0)
             FROM requests WHERE id = $1 AND status IN ('succeeded', 'failed', 'rejected', 'cancelled')
"
    };
}

macro_rules! rollup_request {
    ($tx:expr, $request_id:expr, $sign:expr) => {{
        let request_id: &str = $request_id;
        let sign: i64 = $sign;
        sqlx::query(concat!(
            "INSERT INTO usage_hourly (pool_id, model, hour_start, ",
            rollup_measure_columns!(),
            ")
             SELECT pool_id, requested_model, admitted_at - (admitted_at % 3600000), ",
            signed_row_measures!(),
            "
             ON CONFLICT (pool_id, model, hour_start) DO UPDATE SET ",
            rollup_add_set!("usage_hourly")
        ))
        .bind(request_id)
        .bind(sign)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO usage_daily (day_start, pool_id, api_key_id, identity_id, model, ",
            rollup_measure_columns!(),
            ")
             SELECT admitted_at - (admitted_at % 86400000), pool_id, COALESCE(api_key_id, ''),
                COALESCE(upstream_identity_id, ''), requested_model, ",
            signed_row_measures!(),
            "
             ON CONFLICT (day_start, pool_id, api_key_id, identity_id, model) DO UPDATE SET ",
            rollup_add_set!("usage_daily")
        ))
        .bind(request_id)
        .bind(sign)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Writes the reservation ledger entry of a request admitted with an estimate.
macro_rules! reserve_in_ledger {
    ($tx:expr, $r:expr) => {{
        let r: &NewRequest = $r;
        if let Some(tokens) = r.estimated_tokens {
            sqlx::query(
                "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, estimated_tokens,
                    estimated_cost_micros, occurred_at)
                 VALUES ($1, $2, 'reservation', $3, 'usage_pending', $4, $5, $6)
                 ON CONFLICT (source_event_id) DO NOTHING",
            )
            .bind(crate::time::new_id()).bind(&r.id).bind(format!("request:{}:reservation", r.id))
            .bind(tokens).bind(r.estimated_cost_micros).bind(r.admitted_at)
            .execute(&mut *$tx).await?;
        }
    }};
}

/// Settles a finished request, once (the settlement's event id is unique):
/// writes the settlement ledger entry — and a release of the reservation
/// when no usage is known — and corrects its key reservation (and the hourly
/// bucket it counted in) to the real usage. Evaluates to whether it settled
/// now; the caller then adds the row to the rollups.
macro_rules! settle_request {
    ($tx:expr, $e:expr, $window_reserved:expr) => {{
        let e = $e;
        let s = &e.settlement;
        let settled = sqlx::query(
            "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, input_tokens,
                cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, settled_cost_micros,
                pricing_status, pricing_version, occurred_at)
             VALUES ($1, $2, 'settlement', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (source_event_id) DO NOTHING",
        )
        .bind(crate::time::new_id()).bind(&e.request_id).bind(format!("request:{}:settlement", e.request_id))
        .bind(s.usage_status).bind(s.input_tokens).bind(s.cached_input_tokens).bind(s.output_tokens)
        .bind(s.reasoning_tokens).bind(s.total_tokens).bind(s.settled_cost_micros)
        .bind(s.pricing_status.as_deref()).bind(s.pricing_version).bind(e.completed_at)
        .execute(&mut *$tx).await?
        .rows_affected();
        if settled == 1 && $window_reserved {
            sqlx::query(
                "UPDATE key_usage_hours SET
                    tokens = tokens + $2 - (SELECT r.estimated_tokens FROM key_reservations r WHERE r.request_id = $1),
                    cost_micros = cost_micros + $3 - (SELECT r.estimated_cost_micros FROM key_reservations r WHERE r.request_id = $1)
                 WHERE api_key_id = (SELECT r.api_key_id FROM key_reservations r WHERE r.request_id = $1 AND r.state = 'reserved')
                   AND hour_start = (SELECT r.hour_start FROM key_reservations r WHERE r.request_id = $1 AND r.state = 'reserved')",
            )
            .bind(&e.request_id).bind(s.total_tokens.unwrap_or(0)).bind(s.settled_cost_micros.unwrap_or(0))
            .execute(&mut *$tx).await?;
            sqlx::query(
                "UPDATE key_reservations SET state = CASE WHEN $2 = 'usage_known' THEN 'settled' ELSE 'released' END,
                    settled_tokens = $3, settled_cost_micros = $4 WHERE request_id = $1 AND state = 'reserved'",
            )
            .bind(&e.request_id).bind(s.usage_status).bind(s.total_tokens.unwrap_or(0)).bind(s.settled_cost_micros.unwrap_or(0))
            .execute(&mut *$tx).await?;
        }
        if settled == 1 {
            if s.usage_status != "usage_known" {
                sqlx::query(
                    "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, estimated_tokens,
                        estimated_cost_micros, occurred_at)
                     SELECT $1, request_id, 'release', $3, $4, estimated_tokens, estimated_cost_micros, $5
                     FROM ledger_entries WHERE source_event_id = $2
                     ON CONFLICT (source_event_id) DO NOTHING",
                )
                .bind(crate::time::new_id()).bind(format!("request:{}:reservation", e.request_id))
                .bind(format!("request:{}:release", e.request_id)).bind(s.usage_status).bind(e.completed_at)
                .execute(&mut *$tx).await?;
            }
        }
        settled == 1
    }};
}

/// A usage-known settlement arriving for a row already closed without usage
/// (e.g. recovered as orphaned while it was still running) replaces the
/// usage-unknown one: the old settlement is voided, the row takes the real
/// usage and outcome, the key's hourly bucket and the rollups move by the
/// difference. Anything else arriving late is ignored.
macro_rules! replace_unknown_settlement {
    ($tx:expr, $e:expr) => {{
        let e: &RequestEnd = $e;
        let s = &e.settlement;
        let replaceable: Option<(String,)> = if s.usage_status == "usage_known" {
            sqlx::query_as("SELECT id FROM requests WHERE id = $1 AND usage_status = 'usage_unknown'
                    AND status IN ('succeeded', 'failed', 'cancelled')")
                .bind(&e.request_id).fetch_optional(&mut *$tx).await?
        } else {
            None
        };
        if replaceable.is_some() {
            rollup_request!($tx, &e.request_id, -1);
            sqlx::query(
                "UPDATE ledger_entries SET amount_status = 'voided'
                 WHERE request_id = $1 AND entry_kind = 'settlement' AND amount_status = 'recorded'",
            )
            .bind(&e.request_id).execute(&mut *$tx).await?;
            sqlx::query(
                "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, input_tokens,
                    cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, settled_cost_micros,
                    pricing_status, pricing_version, occurred_at)
                 VALUES ($1, $2, 'settlement', $3, 'usage_known', $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (source_event_id) DO NOTHING",
            )
            .bind(crate::time::new_id()).bind(&e.request_id).bind(format!("request:{}:settlement:usage_known", e.request_id))
            .bind(s.input_tokens).bind(s.cached_input_tokens).bind(s.output_tokens)
            .bind(s.reasoning_tokens).bind(s.total_tokens).bind(s.settled_cost_micros)
            .bind(s.pricing_status.as_deref()).bind(s.pricing_version).bind(e.completed_at)
            .execute(&mut *$tx).await?;
            sqlx::query(
                "UPDATE requests SET status = $2, usage_status = 'usage_known', response_status_code = $3,
                    last_error_code = $4, input_tokens = $5, cached_input_tokens = $6, output_tokens = $7,
                    reasoning_tokens = $8, total_tokens = $9, settled_cost_micros = $10, pricing_status = $11
                 WHERE id = $1",
            )
            .bind(&e.request_id).bind(e.status).bind(e.response_status_code).bind(e.last_error_code.as_deref())
            .bind(s.input_tokens).bind(s.cached_input_tokens).bind(s.output_tokens).bind(s.reasoning_tokens)
            .bind(s.total_tokens).bind(s.settled_cost_micros).bind(s.pricing_status.as_deref())
            .execute(&mut *$tx).await?;
            sqlx::query(
                "UPDATE key_usage_hours SET
                    tokens = tokens + $2 - (SELECT COALESCE(r.settled_tokens, 0) FROM key_reservations r WHERE r.request_id = $1),
                    cost_micros = cost_micros + $3 - (SELECT COALESCE(r.settled_cost_micros, 0) FROM key_reservations r WHERE r.request_id = $1)
                 WHERE api_key_id = (SELECT r.api_key_id FROM key_reservations r WHERE r.request_id = $1 AND r.state = 'released')
                   AND hour_start = (SELECT r.hour_start FROM key_reservations r WHERE r.request_id = $1 AND r.state = 'released')",
            )
            .bind(&e.request_id).bind(s.total_tokens.unwrap_or(0)).bind(s.settled_cost_micros.unwrap_or(0))
            .execute(&mut *$tx).await?;
            sqlx::query(
                "UPDATE key_reservations SET state = 'settled', settled_tokens = $2, settled_cost_micros = $3
                 WHERE request_id = $1 AND state = 'released'",
            )
            .bind(&e.request_id).bind(s.total_tokens.unwrap_or(0)).bind(s.settled_cost_micros.unwrap_or(0))
            .execute(&mut *$tx).await?;
            rollup_request!($tx, &e.request_id, 1);
        }
    }};
}

macro_rules! apply_event {
    ($tx:expr, $event:expr, $instance:expr, $rollups:expr) => {
        match $event {
            RecordEvent::Request(r) => {
                let inserted = sqlx::query(
                    "INSERT INTO requests (id, correlation_id, pool_id, api_key_id, api_key_prefix, api_key_label, endpoint, transport,
                        status, usage_status, requested_model, reasoning_effort, service_tier, admitted_at, completed_at,
                        response_status_code, last_error_code, client_request_id, user_agent, request_metadata, estimated_cost_micros,
                        instance_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&r.id).bind(&r.correlation_id).bind(&r.pool_id).bind(r.api_key_id.as_deref())
                .bind(r.api_key_prefix.as_deref()).bind(r.api_key_label.as_deref()).bind(&r.endpoint).bind(&r.transport)
                .bind(&r.status).bind(&r.usage_status).bind(&r.requested_model).bind(r.reasoning_effort.as_deref())
                .bind(r.service_tier.as_deref()).bind(r.admitted_at).bind(r.completed_at).bind(r.response_status_code)
                .bind(r.last_error_code.as_deref()).bind(r.client_request_id.as_deref()).bind(r.user_agent.as_deref())
                .bind(&r.request_metadata).bind(r.estimated_cost_micros).bind($instance)
                .execute(&mut *$tx).await?
                .rows_affected();
                if inserted == 1 {
                    reserve_in_ledger!($tx, r.as_ref());
                    if is_terminal(&r.status) {
                        $rollups.add(r, None, None);
                    }
                }
            }
            RecordEvent::AttemptStarted(a) => {
                sqlx::query(
                    "INSERT INTO attempts (id, request_id, attempt_number, assignment_id, identity_id, status, started_at)
                     VALUES ($1, $2, $3, $4, $5, 'in_progress', $6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&a.id).bind(&a.request_id).bind(a.attempt_number).bind(&a.assignment_id).bind(&a.identity_id)
                .bind(a.started_at)
                .execute(&mut *$tx).await?;
                sqlx::query(
                    "UPDATE requests SET upstream_identity_id = $2, upstream_account_label = $3, upstream_account_email = $4,
                        upstream_account_plan = $5
                     WHERE id = $1",
                )
                .bind(&a.request_id).bind(&a.identity_id).bind(&a.identity_label).bind(a.identity_email.as_deref())
                .bind(a.identity_plan.as_deref())
                .execute(&mut *$tx).await?;
            }
            RecordEvent::AttemptEnded(a) => {
                sqlx::query(
                    "UPDATE attempts SET status = $2, upstream_status_code = $3, retryable = $4, error_code = $5,
                        error_message = $6, upstream_request_id = $7, completed_at = $8, latency_ms = $9
                     WHERE id = $1 AND status = 'in_progress'",
                )
                .bind(&a.id).bind(a.status).bind(a.upstream_status_code).bind(a.retryable).bind(a.error_code.as_deref())
                .bind(a.error_message.as_deref()).bind(a.upstream_request_id.as_deref()).bind(a.completed_at)
                .bind(a.latency_ms)
                .execute(&mut *$tx).await?;
            }
            RecordEvent::RequestEnded(e) => {
                let s = &e.settlement;
                let updated = sqlx::query(
                    "UPDATE requests SET status = $2, usage_status = $3, response_status_code = $4, retry_count = $5,
                        last_error_code = $6, completed_at = $7, routing_ms = $8, upstream_ms = $9, first_byte_ms = $10,
                        total_ms = $11, input_tokens = $12, cached_input_tokens = $13, output_tokens = $14,
                        reasoning_tokens = $15, total_tokens = $16, settled_cost_micros = $17, pricing_status = $18
                     WHERE id = $1 AND status IN ('accepted', 'in_progress')",
                )
                .bind(&e.request_id).bind(e.status).bind(s.usage_status).bind(e.response_status_code).bind(e.retry_count)
                .bind(e.last_error_code.as_deref()).bind(e.completed_at).bind(e.routing_ms).bind(e.upstream_ms)
                .bind(e.first_byte_ms).bind(e.total_ms).bind(s.input_tokens).bind(s.cached_input_tokens)
                .bind(s.output_tokens).bind(s.reasoning_tokens).bind(s.total_tokens).bind(s.settled_cost_micros)
                .bind(s.pricing_status.as_deref())
                .execute(&mut *$tx).await?
                .rows_affected();
                if updated == 1 {
                    if settle_request!($tx, e, true) {
                        rollup_request!($tx, &e.request_id, 1);
                    }
                } else {
                    replace_unknown_settlement!($tx, e.as_ref());
                }
            }
            RecordEvent::Quota(q) => {
                sqlx::query(
                    "INSERT INTO quota_windows (identity_id, window_kind, used_percent, window_minutes, reset_at, source, observed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (identity_id, window_kind) DO UPDATE SET used_percent = excluded.used_percent,
                        window_minutes = excluded.window_minutes, reset_at = excluded.reset_at, source = excluded.source,
                        observed_at = excluded.observed_at
                     WHERE quota_windows.observed_at <= excluded.observed_at",
                )
                .bind(&q.identity_id).bind(&q.window_kind).bind(q.used_percent).bind(q.window_minutes).bind(q.reset_at)
                .bind(q.source).bind(q.observed_at)
                .execute(&mut *$tx).await?;
            }
            RecordEvent::KeyUsed { api_key_id, at } => {
                sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
                    .bind(api_key_id).bind(*at)
                    .execute(&mut *$tx).await?;
            }
        }
    };
}

/// Rows per multi-row statement (38 parameters a request row: well under
/// SQLite's 32,766 and PostgreSQL's 65,535 bound parameters).
const BULK_ROWS: usize = 256;

/// One database write after coalescing a batch: a request admitted and
/// finished within the same batch becomes one insert of the final row, an
/// attempt started and ended within it one insert of the final attempt.
enum WriteOp<'a> {
    InsertRequest {
        row: &'a NewRequest,
        attempt: Option<&'a NewAttempt>,
        end: Option<&'a RequestEnd>,
    },
    Event(&'a RecordEvent),
    InsertAttempt {
        start: &'a NewAttempt,
        end: &'a AttemptEnd,
    },
    /// The settlement of a request inserted by the same batch.
    Ledger {
        end: &'a RequestEnd,
        row: &'a NewRequest,
        attempt: Option<&'a NewAttempt>,
    },
}

fn coalesce(events: &[RecordEvent]) -> Vec<WriteOp<'_>> {
    use std::collections::HashMap;
    let mut request_at: HashMap<&str, usize> = HashMap::new();
    let mut attempt_end: HashMap<&str, &AttemptEnd> = HashMap::new();
    let mut latest_attempt: HashMap<&str, &NewAttempt> = HashMap::new();
    let mut request_end: HashMap<&str, &RequestEnd> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            RecordEvent::Request(r) => {
                request_at.entry(r.id.as_str()).or_insert(i);
            }
            RecordEvent::AttemptEnded(a) => {
                attempt_end.entry(a.id.as_str()).or_insert(a);
            }
            RecordEvent::AttemptStarted(a) => {
                latest_attempt.insert(a.request_id.as_str(), a);
            }
            RecordEvent::RequestEnded(r) => {
                request_end.entry(r.request_id.as_str()).or_insert(r);
            }
            _ => {}
        }
    }
    let mut ops = Vec::with_capacity(events.len());
    let mut merged_attempts: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for e in events {
        match e {
            RecordEvent::Request(r) => {
                let end = request_end.get(r.id.as_str()).copied();
                ops.push(WriteOp::InsertRequest {
                    row: r,
                    attempt: latest_attempt.get(r.id.as_str()).copied(),
                    end,
                });
            }
            RecordEvent::AttemptStarted(a) => {
                if let Some(end) = attempt_end.get(a.id.as_str()) {
                    merged_attempts.insert(a.id.as_str());
                    ops.push(WriteOp::InsertAttempt { start: a, end });
                    if !request_at.contains_key(a.request_id.as_str()) {
                        // The row was written by an earlier batch: this event's
                        // own write (a no-op insert) updates its account snapshot.
                        ops.push(WriteOp::Event(e));
                    }
                } else {
                    ops.push(WriteOp::Event(e));
                }
            }
            RecordEvent::AttemptEnded(a) if merged_attempts.contains(a.id.as_str()) => {}
            RecordEvent::RequestEnded(r) => {
                if let Some(RecordEvent::Request(row)) =
                    request_at.get(r.request_id.as_str()).map(|&i| &events[i])
                {
                    ops.push(WriteOp::Ledger {
                        end: r,
                        row,
                        attempt: latest_attempt.get(r.request_id.as_str()).copied(),
                    });
                } else {
                    ops.push(WriteOp::Event(e));
                }
            }
            other => ops.push(WriteOp::Event(other)),
        }
    }
    ops
}

macro_rules! apply_op {
    ($tx:expr, $op:expr, $instance:expr, $rollups:expr) => {
        match $op {
            WriteOp::Event(event) => apply_event!($tx, *event, $instance, $rollups),
            WriteOp::InsertRequest { row: r, attempt, end } => {
                let s = end.map(|e| &e.settlement);
                let status = end.map_or(r.status.as_str(), |e| e.status);
                let usage_status = s.map_or(r.usage_status.as_str(), |s| s.usage_status);
                let inserted = sqlx::query(
                    "INSERT INTO requests (id, correlation_id, pool_id, api_key_id, api_key_prefix, api_key_label, endpoint, transport,
                        status, usage_status, requested_model, reasoning_effort, service_tier, admitted_at, completed_at,
                        response_status_code, last_error_code, client_request_id, user_agent, request_metadata, estimated_cost_micros,
                        upstream_identity_id, upstream_account_label, upstream_account_email, upstream_account_plan,
                        retry_count, routing_ms, upstream_ms, first_byte_ms, total_ms, input_tokens, cached_input_tokens,
                        output_tokens, reasoning_tokens, total_tokens, settled_cost_micros, pricing_status, instance_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                        $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&r.id).bind(&r.correlation_id).bind(&r.pool_id).bind(r.api_key_id.as_deref())
                .bind(r.api_key_prefix.as_deref()).bind(r.api_key_label.as_deref()).bind(&r.endpoint).bind(&r.transport)
                .bind(status).bind(usage_status).bind(&r.requested_model).bind(r.reasoning_effort.as_deref())
                .bind(r.service_tier.as_deref()).bind(r.admitted_at)
                .bind(end.map(|e| e.completed_at).or(r.completed_at))
                .bind(end.and_then(|e| e.response_status_code).or(r.response_status_code))
                .bind(end.and_then(|e| e.last_error_code.as_deref()).or(r.last_error_code.as_deref()))
                .bind(r.client_request_id.as_deref()).bind(r.user_agent.as_deref())
                .bind(&r.request_metadata).bind(r.estimated_cost_micros)
                .bind(attempt.map(|a| a.identity_id.as_str())).bind(attempt.map(|a| a.identity_label.as_str()))
                .bind(attempt.and_then(|a| a.identity_email.as_deref())).bind(attempt.and_then(|a| a.identity_plan.as_deref()))
                .bind(end.map_or(0, |e| e.retry_count)).bind(end.and_then(|e| e.routing_ms)).bind(end.and_then(|e| e.upstream_ms))
                .bind(end.and_then(|e| e.first_byte_ms)).bind(end.map(|e| e.total_ms))
                .bind(s.and_then(|s| s.input_tokens)).bind(s.and_then(|s| s.cached_input_tokens))
                .bind(s.and_then(|s| s.output_tokens)).bind(s.and_then(|s| s.reasoning_tokens))
                .bind(s.and_then(|s| s.total_tokens)).bind(s.and_then(|s| s.settled_cost_micros))
                .bind(s.and_then(|s| s.pricing_status.as_deref())).bind($instance)
                .execute(&mut *$tx).await?
                .rows_affected();
                if inserted == 1 {
                    reserve_in_ledger!($tx, *r);
                    if end.is_none() && is_terminal(&r.status) {
                        // Rejected outright; an ended request is added by its settlement.
                        $rollups.add(r, None, None);
                    }
                }
            }
            WriteOp::InsertAttempt { start: a, end: e } => {
                sqlx::query(
                    "INSERT INTO attempts (id, request_id, attempt_number, assignment_id, identity_id, status, started_at,
                        upstream_status_code, retryable, error_code, error_message, upstream_request_id, completed_at, latency_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&a.id).bind(&a.request_id).bind(a.attempt_number).bind(&a.assignment_id).bind(&a.identity_id)
                .bind(e.status).bind(a.started_at).bind(e.upstream_status_code).bind(e.retryable).bind(e.error_code.as_deref())
                .bind(e.error_message.as_deref()).bind(e.upstream_request_id.as_deref()).bind(e.completed_at).bind(e.latency_ms)
                .execute(&mut *$tx).await?;
            }
            WriteOp::Ledger { end, row, attempt } => {
                if settle_request!($tx, *end, row.window_reserved) {
                    $rollups.add(row, *attempt, Some(*end));
                }
            }
        }
    };
}

/// Requests admitted and (possibly) finished within one batch, written as
/// multi-row inserts: one statement per table per batch instead of one per
/// request. Evaluates to the ids actually inserted (a retried batch finds
/// its rows already there and skips their ledger entries and rollups).
macro_rules! bulk_insert_requests {
    ($tx:expr, $items:expr, $instance:expr) => {{
        let items: &[(&NewRequest, Option<&NewAttempt>, Option<&RequestEnd>)] = $items;
        let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
        if !items.is_empty() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO requests (id, correlation_id, pool_id, api_key_id, api_key_prefix, api_key_label, endpoint, transport,
                    status, usage_status, requested_model, reasoning_effort, service_tier, admitted_at, completed_at,
                    response_status_code, last_error_code, client_request_id, user_agent, request_metadata, estimated_cost_micros,
                    upstream_identity_id, upstream_account_label, upstream_account_email, upstream_account_plan,
                    retry_count, routing_ms, upstream_ms, first_byte_ms, total_ms, input_tokens, cached_input_tokens,
                    output_tokens, reasoning_tokens, total_tokens, settled_cost_micros, pricing_status, instance_id) ",
            );
            qb.push_values(items.iter(), |mut b, (r, attempt, end)| {
                let s = end.map(|e| &e.settlement);
                b.push_bind(r.id.as_str())
                    .push_bind(r.correlation_id.as_str())
                    .push_bind(r.pool_id.as_str())
                    .push_bind(r.api_key_id.as_deref())
                    .push_bind(r.api_key_prefix.as_deref())
                    .push_bind(r.api_key_label.as_deref())
                    .push_bind(r.endpoint.as_str())
                    .push_bind(r.transport.as_str())
                    .push_bind(end.map_or(r.status.as_str(), |e| e.status))
                    .push_bind(s.map_or(r.usage_status.as_str(), |s| s.usage_status))
                    .push_bind(r.requested_model.as_str())
                    .push_bind(r.reasoning_effort.as_deref())
                    .push_bind(r.service_tier.as_deref())
                    .push_bind(r.admitted_at)
                    .push_bind(end.map(|e| e.completed_at).or(r.completed_at))
                    .push_bind(end.and_then(|e| e.response_status_code).or(r.response_status_code))
                    .push_bind(end.and_then(|e| e.last_error_code.as_deref()).or(r.last_error_code.as_deref()))
                    .push_bind(r.client_request_id.as_deref())
                    .push_bind(r.user_agent.as_deref())
                    .push_bind(r.request_metadata.as_str())
                    .push_bind(r.estimated_cost_micros)
                    .push_bind(attempt.map(|a| a.identity_id.as_str()))
                    .push_bind(attempt.map(|a| a.identity_label.as_str()))
                    .push_bind(attempt.and_then(|a| a.identity_email.as_deref()))
                    .push_bind(attempt.and_then(|a| a.identity_plan.as_deref()))
                    .push_bind(end.map_or(0, |e| e.retry_count))
                    .push_bind(end.and_then(|e| e.routing_ms))
                    .push_bind(end.and_then(|e| e.upstream_ms))
                    .push_bind(end.and_then(|e| e.first_byte_ms))
                    .push_bind(end.map(|e| e.total_ms))
                    .push_bind(s.and_then(|s| s.input_tokens))
                    .push_bind(s.and_then(|s| s.cached_input_tokens))
                    .push_bind(s.and_then(|s| s.output_tokens))
                    .push_bind(s.and_then(|s| s.reasoning_tokens))
                    .push_bind(s.and_then(|s| s.total_tokens))
                    .push_bind(s.and_then(|s| s.settled_cost_micros))
                    .push_bind(s.and_then(|s| s.pricing_status.as_deref()))
                    .push_bind($instance);
            });
            qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let rows: Vec<(String,)> = qb
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *$tx)
                .await?;
            inserted.extend(rows.into_iter().map(|(id,)| id));
            // Their reservation ledger entries, in one statement too.
            let reserved: Vec<&NewRequest> = items
                .iter()
                .map(|(r, _, _)| *r)
                .filter(|r| r.estimated_tokens.is_some() && inserted.contains(&r.id))
                .collect();
            if !reserved.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, estimated_tokens,
                        estimated_cost_micros, occurred_at) ",
                );
                qb.push_values(reserved.iter(), |mut b, r| {
                    b.push_bind(crate::time::new_id())
                        .push_bind(r.id.as_str())
                        .push_bind("reservation")
                        .push_bind(format!("request:{}:reservation", r.id))
                        .push_bind("usage_pending")
                        .push_bind(r.estimated_tokens)
                        .push_bind(r.estimated_cost_micros)
                        .push_bind(r.admitted_at);
                });
                qb.push(" ON CONFLICT (source_event_id) DO NOTHING");
                qb.build().persistent(false).execute(&mut *$tx).await?;
            }
        }
        inserted
    }};
}

/// Attempts started and ended within one batch, as one multi-row insert.
macro_rules! bulk_insert_attempts {
    ($tx:expr, $items:expr) => {{
        let items: &[(&NewAttempt, &AttemptEnd)] = $items;
        if !items.is_empty() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO attempts (id, request_id, attempt_number, assignment_id, identity_id, status, started_at,
                    upstream_status_code, retryable, error_code, error_message, upstream_request_id, completed_at, latency_ms) ",
            );
            qb.push_values(items.iter(), |mut b, (a, e)| {
                b.push_bind(a.id.as_str())
                    .push_bind(a.request_id.as_str())
                    .push_bind(a.attempt_number)
                    .push_bind(a.assignment_id.as_str())
                    .push_bind(a.identity_id.as_str())
                    .push_bind(e.status)
                    .push_bind(a.started_at)
                    .push_bind(e.upstream_status_code)
                    .push_bind(e.retryable)
                    .push_bind(e.error_code.as_deref())
                    .push_bind(e.error_message.as_deref())
                    .push_bind(e.upstream_request_id.as_deref())
                    .push_bind(e.completed_at)
                    .push_bind(e.latency_ms);
            });
            qb.push(" ON CONFLICT (id) DO NOTHING");
            qb.build().persistent(false).execute(&mut *$tx).await?;
        }
    }};
}

/// Settlements of requests admitted in the same batch whose keys hold no
/// windowed reservation: the settlement entries in one statement, then the
/// releases of those that ended without usage (copying the reservation's
/// estimate, which is the row's own). Evaluates to the request ids settled
/// now (the others were settled by an earlier attempt at this batch).
macro_rules! bulk_settle {
    ($tx:expr, $items:expr) => {{
        let items: &[(&RequestEnd, &NewRequest)] = $items;
        let mut settled: std::collections::HashSet<String> = std::collections::HashSet::new();
        if !items.is_empty() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, input_tokens,
                    cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, settled_cost_micros,
                    pricing_status, pricing_version, occurred_at) ",
            );
            qb.push_values(items.iter(), |mut b, (e, _)| {
                let s = &e.settlement;
                b.push_bind(crate::time::new_id())
                    .push_bind(e.request_id.as_str())
                    .push_bind("settlement")
                    .push_bind(format!("request:{}:settlement", e.request_id))
                    .push_bind(s.usage_status)
                    .push_bind(s.input_tokens)
                    .push_bind(s.cached_input_tokens)
                    .push_bind(s.output_tokens)
                    .push_bind(s.reasoning_tokens)
                    .push_bind(s.total_tokens)
                    .push_bind(s.settled_cost_micros)
                    .push_bind(s.pricing_status.as_deref())
                    .push_bind(s.pricing_version)
                    .push_bind(e.completed_at);
            });
            qb.push(" ON CONFLICT (source_event_id) DO NOTHING RETURNING request_id");
            let rows: Vec<(String,)> = qb
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *$tx)
                .await?;
            settled.extend(rows.into_iter().map(|(id,)| id));
            let released: Vec<&(&RequestEnd, &NewRequest)> = items
                .iter()
                .filter(|(e, r)| {
                    settled.contains(&e.request_id)
                        && e.settlement.usage_status != "usage_known"
                        && r.estimated_tokens.is_some()
                })
                .collect();
            if !released.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, estimated_tokens,
                        estimated_cost_micros, occurred_at) ",
                );
                qb.push_values(released.iter(), |mut b, (e, r)| {
                    b.push_bind(crate::time::new_id())
                        .push_bind(e.request_id.as_str())
                        .push_bind("release")
                        .push_bind(format!("request:{}:release", e.request_id))
                        .push_bind(e.settlement.usage_status)
                        .push_bind(r.estimated_tokens)
                        .push_bind(r.estimated_cost_micros)
                        .push_bind(e.completed_at);
                });
                qb.push(" ON CONFLICT (source_event_id) DO NOTHING");
                qb.build().persistent(false).execute(&mut *$tx).await?;
            }
        }
        settled
    }};
}

impl Store {
    /// Writes a batch of record events in one transaction, in order, coalescing
    /// the lifecycle of requests that start and finish within the batch.
    pub async fn apply_record_batch(
        &self,
        events: &[RecordEvent],
        instance_id: &str,
    ) -> StoreResult<()> {
        let ops = coalesce(events);
        let mut rollups = BatchRollups::default();
        // Requests, attempts and settlements that begin and end in this batch
        // go in multi-row statements (requests first: the others refer to
        // them); everything else in order, one statement each.
        let mut new_requests = Vec::new();
        let mut new_attempts = Vec::new();
        let mut settlements = Vec::new();
        let mut one_by_one = Vec::new();
        for op in &ops {
            match op {
                WriteOp::InsertRequest { row, attempt, end } => {
                    new_requests.push((*row, *attempt, *end));
                }
                WriteOp::InsertAttempt { start, end } => new_attempts.push((*start, *end)),
                WriteOp::Ledger { end, row, attempt } if !row.window_reserved => {
                    settlements.push((*end, *row, *attempt));
                }
                other => one_by_one.push(other),
            }
        }
        let settle_items: Vec<(&RequestEnd, &NewRequest)> =
            settlements.iter().map(|(e, r, _)| (*e, *r)).collect();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in new_requests.chunks(BULK_ROWS) {
                let inserted = bulk_insert_requests!(tx, chunk, instance_id);
                for (row, _, end) in chunk {
                    if end.is_none() && is_terminal(&row.status) && inserted.contains(&row.id) {
                        // Rejected outright; an ended request is added by its settlement.
                        rollups.add(row, None, None);
                    }
                }
            }
            for chunk in new_attempts.chunks(BULK_ROWS) {
                bulk_insert_attempts!(tx, chunk);
            }
            for (chunk, items) in settlements.chunks(BULK_ROWS).zip(settle_items.chunks(BULK_ROWS)) {
                let settled = bulk_settle!(tx, items);
                for (end, row, attempt) in chunk {
                    if settled.contains(&end.request_id) {
                        rollups.add(row, *attempt, Some(*end));
                    }
                }
            }
            for op in one_by_one {
                apply_op!(tx, op, instance_id, rollups);
            }
            for ((pool_id, model, hour_start), m) in &rollups.hourly {
                let q = sqlx::query(concat!(
                    "INSERT INTO usage_hourly (pool_id, model, hour_start, ", rollup_measure_columns!(), ")
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                     ON CONFLICT (pool_id, model, hour_start) DO UPDATE SET ", rollup_add_set!("usage_hourly")
                ))
                .bind(pool_id).bind(model).bind(hour_start);
                bind_measures!(q, m).execute(&mut *tx).await?;
            }
            for ((day_start, pool_id, api_key_id, identity_id, model), m) in &rollups.daily {
                let q = sqlx::query(concat!(
                    "INSERT INTO usage_daily (day_start, pool_id, api_key_id, identity_id, model, ", rollup_measure_columns!(), ")
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                     ON CONFLICT (day_start, pool_id, api_key_id, identity_id, model) DO UPDATE SET ", rollup_add_set!("usage_daily")
                ))
                .bind(day_start).bind(pool_id).bind(api_key_id).bind(identity_id).bind(model);
                bind_measures!(q, m).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Newest-first page of request rows matching `filter` (see
    /// [`RequestLogFilter`]), at most `limit`, older than `before`, within the
    /// operator's Pool scope.
    pub async fn list_request_logs_filtered(
        &self,
        filter: &RequestLogFilter,
        limit: i64,
        before: Option<&RequestCursor>,
        scope_operator: Option<&str>,
    ) -> StoreResult<Vec<RequestLogRow>> {
        let sqlite = matches!(self, Store::Sqlite(_));
        // An admin's Pools are resolved first: a Pool filter outside them
        // matches nothing, and inside them needs no further scope.
        let scope_pools: Option<Vec<String>> = match scope_operator {
            None => None,
            Some(op) => {
                let pools: Vec<(String,)> = with_pool!(self, pool => sqlx::query_as(
                    "SELECT pool_id FROM operator_pools WHERE operator_id = $1 ORDER BY pool_id")
                    .bind(op).fetch_all(pool).await)?;
                let pools: Vec<String> = pools.into_iter().map(|(p,)| p).collect();
                match &filter.pool_id {
                    Some(wanted) if !pools.contains(wanted) => return Ok(Vec::new()),
                    Some(_) => None,
                    None if pools.is_empty() => return Ok(Vec::new()),
                    None => Some(pools),
                }
            }
        };
        let head = format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM requests r LEFT JOIN pools p ON p.id = r.pool_id WHERE 1 = 1"
        );
        // With an id filter the id lookup is the selective part: on SQLite the
        // other columns are compared with a unary `+` so the planner does not
        // walk one of their indexes instead.
        let plain = if sqlite && filter.request_id.is_some() {
            " AND +"
        } else {
            " AND "
        };
        with_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(head);
            if let Some(pools) = &scope_pools {
                // On SQLite the unary `+` keeps the planner on the admission-time
                // index (newest first, stop at the page) instead of sorting every
                // row of the admin's Pools.
                q.push(if sqlite { " AND +r.pool_id IN (" } else { " AND r.pool_id IN (" });
                let mut list = q.separated(", ");
                for p in pools {
                    list.push_bind(p.clone());
                }
                q.push(")");
            }
            if let Some(c) = before {
                q.push(" AND (r.admitted_at < ").push_bind(c.admitted_at)
                    .push(" OR (r.admitted_at = ").push_bind(c.admitted_at).push(" AND r.id < ").push_bind(c.id.clone()).push("))");
            }
            if let Some(v) = &filter.pool_id {
                q.push(plain).push("r.pool_id = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.status {
                q.push(plain).push("r.status = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.upstream_identity_id {
                q.push(plain).push("r.upstream_identity_id = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.model {
                q.push(plain).push("r.requested_model = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.api_key {
                // The key's safe prefix, or its label (as recorded on the row).
                q.push(" AND (r.api_key_id IN (SELECT k.id FROM api_keys k WHERE k.key_prefix = ").push_bind(v.clone())
                    .push(" OR LOWER(k.display_name) = LOWER(").push_bind(v.clone()).push("))")
                    .push(" OR LOWER(r.api_key_label) = LOWER(").push_bind(v.clone()).push("))");
            }
            if let Some(v) = &filter.request_id {
                // A whole id matches exactly (row, correlation or client request
                // id); a fragment matches as a substring of the row id or the
                // client's request id, through a trigram index (SQLite FTS5,
                // PostgreSQL pg_trgm). The value is validated to `[A-Za-z0-9._:-]`.
                q.push(" AND (r.id = ").push_bind(v.clone())
                    .push(" OR r.correlation_id = ").push_bind(v.clone())
                    .push(" OR r.client_request_id = ").push_bind(v.clone());
                if v.len() < 36 {
                    if sqlite && v.len() >= 3 {
                        q.push(" OR r.rowid IN (SELECT rowid FROM request_id_search WHERE request_id_search MATCH ")
                            .push_bind(format!("{{id client_request_id}} : \"{v}\"")).push(")");
                    } else {
                        // `_` is a LIKE wildcard, so escape it.
                        let like = format!("%{}%", v.replace('_', "\\_"));
                        q.push(" OR r.id LIKE ").push_bind(like.clone()).push(" ESCAPE '\\'")
                            .push(" OR r.client_request_id LIKE ").push_bind(like).push(" ESCAPE '\\'");
                    }
                }
                q.push(")");
            }
            if let Some(v) = filter.admitted_from {
                q.push(plain).push("r.admitted_at >= ").push_bind(v);
            }
            if let Some(v) = filter.admitted_before {
                q.push(plain).push("r.admitted_at < ").push_bind(v);
            }
            q.push(" ORDER BY r.admitted_at DESC, r.id DESC LIMIT ").push_bind(limit);
            Ok(q.build_query_as::<RequestLogRow>().fetch_all(pool).await?)
        })
    }

    /// One request row with its attempts.
    pub async fn get_request_log(
        &self,
        id: &str,
        scope_operator: Option<&str>,
    ) -> StoreResult<Option<(RequestLogRow, Vec<AttemptLogRow>)>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM requests r LEFT JOIN pools p ON p.id = r.pool_id
             WHERE (r.id = $1 OR r.correlation_id = $1)
               AND ($2 IS NULL OR r.pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = $2))"
        ));
        let row = with_pool!(self, pool => sqlx::query_as::<_, RequestLogRow>(sql)
            .bind(id).bind(scope_operator).fetch_optional(pool).await)?;
        let Some(row) = row else { return Ok(None) };
        let attempts = with_pool!(self, pool => sqlx::query_as::<_, AttemptLogRow>(
            "SELECT a.id, a.attempt_number, a.assignment_id, a.identity_id, i.label AS identity_label, a.status,
                    a.upstream_status_code, a.retryable, a.error_code, a.error_message, a.upstream_request_id,
                    a.started_at, a.completed_at, a.latency_ms
             FROM attempts a LEFT JOIN upstream_identities i ON i.id = a.identity_id
             WHERE a.request_id = $1 ORDER BY a.attempt_number")
            .bind(&row.id).fetch_all(pool).await)?;
        Ok(Some((row, attempts)))
    }

    /// Deletes up to `batch` finished request rows admitted before
    /// `cutoff_ms`, oldest first; their attempts and ledger entries go with
    /// them (the rollups keep their totals). Returns how many were deleted.
    pub async fn prune_request_logs(&self, cutoff_ms: i64, batch: i64) -> StoreResult<u64> {
        Ok(with_pool!(self, pool => sqlx::query(
            "DELETE FROM requests WHERE id IN (
                SELECT id FROM requests
                WHERE admitted_at < $1 AND status IN ('succeeded', 'failed', 'rejected', 'cancelled')
                ORDER BY admitted_at LIMIT $2)")
            .bind(cutoff_ms).bind(batch).execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Deletes key reservations and hourly key buckets no limit window can
    /// reach any more (reservations older than `reservations_before_ms`,
    /// buckets older than `buckets_before_ms`), at most `batch` of each.
    pub async fn prune_key_windows(
        &self,
        reservations_before_ms: i64,
        buckets_before_ms: i64,
        batch: i64,
    ) -> StoreResult<u64> {
        with_pool!(self, pool => {
            let reservations = sqlx::query(
                "DELETE FROM key_reservations WHERE request_id IN (
                    SELECT request_id FROM key_reservations WHERE reserved_at < $1 AND state <> 'reserved' LIMIT $2)")
                .bind(reservations_before_ms).bind(batch).execute(pool).await?.rows_affected();
            let buckets = sqlx::query(
                "DELETE FROM key_usage_hours WHERE hour_start < $1")
                .bind(buckets_before_ms).execute(pool).await?.rows_affected();
            Ok(reservations + buckets)
        })
    }

    /// Number of settlement ledger entries for a request (tests: no double counting).
    pub async fn count_settlements(&self, request_id: &str) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM ledger_entries WHERE request_id = $1 AND entry_kind = 'settlement' AND amount_status = 'recorded'")
            .bind(request_id).fetch_one(pool).await)?;
        Ok(row.0)
    }

    /// Fails requests (and their open attempts) left in progress by instances
    /// whose last heartbeat is older than `stale_before_ms`, or that stopped,
    /// and settles them like any failure without usage: the reservation is
    /// released, a usage-unknown settlement recorded, the rollups updated.
    /// Returns how many requests were recovered.
    pub async fn recover_orphaned_requests(
        &self,
        own_instance: &str,
        stale_before_ms: i64,
    ) -> StoreResult<u64> {
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let orphans: Vec<(String,)> = sqlx::query_as(
                "SELECT r.id FROM requests r
                 WHERE r.status IN ('accepted', 'in_progress') AND COALESCE(r.instance_id, '') <> $1
                   AND NOT EXISTS (SELECT 1 FROM gateway_instances g
                                   WHERE g.id = r.instance_id AND g.heartbeat_at >= $2 AND g.stopped_at IS NULL)
                 LIMIT 500")
                .bind(own_instance).bind(stale_before_ms)
                .fetch_all(&mut *tx).await?;
            let mut recovered = 0;
            for (id,) in &orphans {
                sqlx::query(
                    "UPDATE attempts SET status = 'failed', error_code = 'stale_reservation_recovered',
                        error_message = 'gateway instance stopped before the attempt finished', completed_at = $2
                     WHERE status = 'in_progress' AND request_id = $1")
                    .bind(id).bind(now)
                    .execute(&mut *tx).await?;
                let updated = sqlx::query(
                    "UPDATE requests SET status = 'failed',
                        usage_status = CASE WHEN usage_status = 'usage_pending' THEN 'usage_unknown' ELSE usage_status END,
                        last_error_code = 'stale_reservation_recovered', response_status_code = 499, completed_at = $2
                     WHERE id = $1 AND status IN ('accepted', 'in_progress')")
                    .bind(id).bind(now)
                    .execute(&mut *tx).await?
                    .rows_affected();
                if updated == 1 {
                    recovered += 1;
                    let end = RequestEnd {
                        request_id: id.clone(),
                        status: "failed",
                        response_status_code: Some(499),
                        retry_count: 0,
                        last_error_code: Some("stale_reservation_recovered".into()),
                        completed_at: now,
                        routing_ms: None,
                        upstream_ms: None,
                        first_byte_ms: None,
                        total_ms: 0,
                        settlement: Settlement { usage_status: "usage_unknown", ..Settlement::default() },
                        metadata_patch: None,
                    };
                    if settle_request!(tx, &end, true) {
                        rollup_request!(tx, &end.request_id, 1);
                    }
                }
            }
            tx.commit().await?;
            Ok(recovered)
        })
    }
}
