//! Read-only data behind `GET /v1/models`: the first-seen times of a Pool's
//! catalog models. (A key's usage totals come from the rollups, see
//! `accounting.rs`.)

use super::{Store, StoreResult, with_pool};

impl Store {
    /// `(slug, first_seen_at ms)` of every catalog model of the Pool.
    pub async fn pool_model_first_seen(&self, pool_id: &str) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(
            "SELECT slug, first_seen_at FROM pool_models WHERE pool_id = $1 ORDER BY slug")
            .bind(pool_id)
            .fetch_all(pool)
            .await)?)
    }
}
