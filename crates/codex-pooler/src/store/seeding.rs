//! Bulk insertion of synthetic, finished request rows for scale checks (the
//! `request-logs seed` command). Never used by the data plane.

use super::{Store, StoreResult, with_pool};

/// One synthetic finished request.
#[derive(Debug, Clone)]
pub struct SeedRow {
    pub id: String,
    pub pool_id: String,
    pub api_key_id: String,
    pub api_key_prefix: String,
    pub api_key_label: String,
    pub endpoint: &'static str,
    pub transport: &'static str,
    pub status: &'static str,
    pub usage_status: &'static str,
    pub model: &'static str,
    pub reasoning_effort: Option<&'static str>,
    pub admitted_at: i64,
    pub total_ms: i64,
    pub response_status_code: i64,
    pub last_error_code: Option<&'static str>,
    pub identity_id: Option<String>,
    pub identity_label: Option<String>,
    pub plan: Option<&'static str>,
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub settled_cost_micros: Option<i64>,
    pub client_request_id: Option<String>,
}

/// Rows per INSERT statement (27 parameters each, under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 400;

impl Store {
    /// Inserts `rows` in one transaction, several hundred per statement.
    pub async fn insert_seed_rows(&self, rows: &[SeedRow]) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO requests (id, correlation_id, pool_id, api_key_id, api_key_prefix, api_key_label, endpoint,
                        transport, status, usage_status, requested_model, reasoning_effort, admitted_at, completed_at,
                        total_ms, response_status_code, last_error_code, upstream_identity_id, upstream_account_label,
                        upstream_account_plan, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,
                        total_tokens, settled_cost_micros, client_request_id) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id.clone()).push_bind(r.id.clone()).push_bind(r.pool_id.clone())
                        .push_bind(r.api_key_id.clone()).push_bind(r.api_key_prefix.clone())
                        .push_bind(r.api_key_label.clone()).push_bind(r.endpoint).push_bind(r.transport)
                        .push_bind(r.status).push_bind(r.usage_status).push_bind(r.model).push_bind(r.reasoning_effort)
                        .push_bind(r.admitted_at).push_bind(r.admitted_at + r.total_ms).push_bind(r.total_ms)
                        .push_bind(r.response_status_code).push_bind(r.last_error_code).push_bind(r.identity_id.clone())
                        .push_bind(r.identity_label.clone()).push_bind(r.plan).push_bind(r.input_tokens)
                        .push_bind(r.cached_input_tokens).push_bind(r.output_tokens).push_bind(r.reasoning_tokens)
                        .push_bind(r.total_tokens).push_bind(r.settled_cost_micros).push_bind(r.client_request_id.clone());
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Refreshes the planner's statistics after a bulk load.
    pub async fn analyze_requests(&self) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("ANALYZE requests").execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
