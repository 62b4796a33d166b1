//! Read-only aggregates behind the `/v1` read routes: one API key's usage
//! totals from its request rows (`GET /v1/usage`) and the first-seen times of
//! a Pool's catalog models (`GET /v1/models`). Portable SQL for SQLite and
//! PostgreSQL; sums are cast to BIGINT so both decode as `i64`.

use sqlx::FromRow;

use super::{Store, StoreResult, with_pool};

/// Usage totals of one API key.
#[derive(Debug, Clone, Default, FromRow)]
pub struct KeyUsageTotals {
    /// Requests admitted to the upstream (rejections and read-only routes
    /// excluded).
    pub request_count: i64,
    pub total_tokens: i64,
    pub cached_input_tokens: i64,
    pub settled_cost_micros: i64,
    /// Finished requests whose usage or price is unknown.
    pub unpriced_count: i64,
    /// Requests still running (usage pending).
    pub pending_count: i64,
}

impl Store {
    /// Totals over the request rows of `api_key_id` that went upstream.
    pub async fn key_usage_totals(&self, api_key_id: &str) -> StoreResult<KeyUsageTotals> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, KeyUsageTotals>(
            "SELECT CAST(COUNT(*) AS BIGINT) AS request_count,
                    CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS total_tokens,
                    CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT) AS cached_input_tokens,
                    CAST(COALESCE(SUM(settled_cost_micros), 0) AS BIGINT) AS settled_cost_micros,
                    CAST(COALESCE(SUM(CASE WHEN usage_status = 'usage_unknown'
                        OR (usage_status = 'usage_known' AND settled_cost_micros IS NULL)
                        THEN 1 ELSE 0 END), 0) AS BIGINT) AS unpriced_count,
                    CAST(COALESCE(SUM(CASE WHEN usage_status = 'usage_pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending_count
             FROM requests
             WHERE api_key_id = $1 AND usage_status <> 'not_applicable'")
            .bind(api_key_id)
            .fetch_one(pool)
            .await)?,
        )
    }

    /// `(slug, first_seen_at ms)` of every catalog model of the Pool.
    pub async fn pool_model_first_seen(&self, pool_id: &str) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(
            "SELECT slug, first_seen_at FROM pool_models WHERE pool_id = $1 ORDER BY slug")
            .bind(pool_id)
            .fetch_all(pool)
            .await)?)
    }
}
