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

/// Settles a finished request: corrects its key reservation (and the hourly
/// bucket it counted in) to the real usage, and writes the settlement ledger
/// entry once.
macro_rules! settle_request {
    ($tx:expr, $e:expr) => {{
        let e = $e;
        let s = &e.settlement;
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
        sqlx::query(
            "INSERT INTO ledger_entries (id, request_id, entry_kind, source_event_id, usage_status, input_tokens,
                cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, settled_cost_micros,
                pricing_status, occurred_at)
             VALUES ($1, $2, 'settlement', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (source_event_id) DO NOTHING",
        )
        .bind(crate::time::new_id()).bind(&e.request_id).bind(format!("request:{}:settlement", e.request_id))
        .bind(s.usage_status).bind(s.input_tokens).bind(s.cached_input_tokens).bind(s.output_tokens)
        .bind(s.reasoning_tokens).bind(s.total_tokens).bind(s.settled_cost_micros)
        .bind(s.pricing_status.as_deref()).bind(e.completed_at)
        .execute(&mut *$tx).await?;
    }};
}

macro_rules! apply_event {
    ($tx:expr, $event:expr, $instance:expr) => {
        match $event {
            RecordEvent::Request(r) => {
                sqlx::query(
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
                .execute(&mut *$tx).await?;
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
                    settle_request!($tx, e);
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
    Ledger(&'a RequestEnd),
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
            RecordEvent::RequestEnded(r) if request_at.contains_key(r.request_id.as_str()) => {
                ops.push(WriteOp::Ledger(r));
            }
            other => ops.push(WriteOp::Event(other)),
        }
    }
    ops
}

macro_rules! apply_op {
    ($tx:expr, $op:expr, $instance:expr) => {
        match $op {
            WriteOp::Event(event) => apply_event!($tx, *event, $instance),
            WriteOp::InsertRequest { row: r, attempt, end } => {
                let s = end.map(|e| &e.settlement);
                let status = end.map_or(r.status.as_str(), |e| e.status);
                let usage_status = s.map_or(r.usage_status.as_str(), |s| s.usage_status);
                sqlx::query(
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
                .execute(&mut *$tx).await?;
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
            WriteOp::Ledger(e) => settle_request!($tx, e),
        }
    };
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
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for op in &ops {
                apply_op!(tx, op, instance_id);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Newest-first page of request rows, at most `limit`, older than `before`.
    /// `scope_operator` limits rows to the Pools assigned to that operator
    /// (admins); `None` sees every Pool (owners).
    pub async fn list_request_logs(
        &self,
        limit: i64,
        before: Option<&RequestCursor>,
        scope_operator: Option<&str>,
    ) -> StoreResult<Vec<RequestLogRow>> {
        let (at, id) = match before {
            Some(c) => (Some(c.admitted_at), Some(c.id.clone())),
            None => (None, None),
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM requests r LEFT JOIN pools p ON p.id = r.pool_id
             WHERE ($1 IS NULL OR r.admitted_at < $1 OR (r.admitted_at = $1 AND r.id < $2))
               AND ($4 IS NULL OR r.pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = $4))
             ORDER BY r.admitted_at DESC, r.id DESC LIMIT $3"
        ));
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, RequestLogRow>(sql)
            .bind(at).bind(id).bind(limit).bind(scope_operator).fetch_all(pool).await)?,
        )
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
        let head = format!(
            "SELECT {REQUEST_LOG_COLUMNS} FROM requests r LEFT JOIN pools p ON p.id = r.pool_id WHERE 1 = 1"
        );
        with_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(head);
            if let Some(op) = scope_operator {
                q.push(" AND r.pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = ").push_bind(op).push(")");
            }
            if let Some(c) = before {
                q.push(" AND (r.admitted_at < ").push_bind(c.admitted_at)
                    .push(" OR (r.admitted_at = ").push_bind(c.admitted_at).push(" AND r.id < ").push_bind(c.id.clone()).push("))");
            }
            if let Some(v) = &filter.pool_id {
                q.push(" AND r.pool_id = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.status {
                q.push(" AND r.status = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.upstream_identity_id {
                q.push(" AND r.upstream_identity_id = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.model {
                q.push(" AND r.requested_model = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.api_key {
                q.push(" AND (r.api_key_prefix = ").push_bind(v.clone())
                    .push(" OR LOWER(r.api_key_label) = LOWER(").push_bind(v.clone()).push("))");
            }
            if let Some(v) = &filter.request_id {
                // A full id matches exactly; a fragment matches as a substring
                // of the row id, the correlation id or the client's request id.
                // The value is validated to `[A-Za-z0-9._:-]`; `_` is a LIKE wildcard, so escape it.
                let like = format!("%{}%", v.replace('_', "\\_"));
                q.push(" AND (r.id = ").push_bind(v.clone())
                    .push(" OR r.correlation_id = ").push_bind(v.clone())
                    .push(" OR r.client_request_id = ").push_bind(v.clone());
                if v.len() < 36 {
                    q.push(" OR r.id LIKE ").push_bind(like.clone()).push(" ESCAPE '\\'")
                        .push(" OR r.client_request_id LIKE ").push_bind(like).push(" ESCAPE '\\'");
                }
                q.push(")");
            }
            if let Some(v) = filter.admitted_from {
                q.push(" AND r.admitted_at >= ").push_bind(v);
            }
            if let Some(v) = filter.admitted_before {
                q.push(" AND r.admitted_at < ").push_bind(v);
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

    /// Number of settlement ledger entries for a request (tests: no double counting).
    pub async fn count_settlements(&self, request_id: &str) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM ledger_entries WHERE request_id = $1 AND entry_kind = 'settlement'")
            .bind(request_id).fetch_one(pool).await)?;
        Ok(row.0)
    }

    /// Closes requests left in progress (e.g. by a crash) as failed; returns how many.
    pub async fn recover_stale_requests(&self, admitted_before: i64) -> StoreResult<u64> {
        let now = crate::time::now_ms();
        Ok(with_pool!(self, pool => sqlx::query(
            "UPDATE requests SET status = 'failed', usage_status = CASE WHEN usage_status = 'usage_pending' THEN 'usage_unknown' ELSE usage_status END,
                last_error_code = 'stale_reservation_recovered', response_status_code = 499, completed_at = $2
             WHERE status IN ('accepted', 'in_progress') AND admitted_at < $1")
            .bind(admitted_before).bind(now).execute(pool).await.map(|r| r.rows_affected()))?)
    }
}
