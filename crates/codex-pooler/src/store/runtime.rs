//! Reads and writes on behalf of the data plane: the routing snapshot of a Pool,
//! rotated upstream credentials, identity health, and the Pool model catalog.

use sqlx::FromRow;

use super::{SealedSecret, Store, StoreError, StoreResult, with_pool};
use crate::time::now_ms;

#[derive(Debug, Clone, FromRow)]
pub struct PoolSettingsRow {
    pub pool_id: String,
    pub pool_status: String,
    pub routing_strategy: String,
    pub bridge_ring_size: i64,
    pub v1_compatibility_enabled: bool,
    pub sticky_websocket_sessions: bool,
    pub sticky_http_sessions: bool,
    pub prompt_cache_affinity_enabled: bool,
}

/// One routable (or not) assignment with its identity and sealed credentials.
#[derive(Debug, Clone, FromRow)]
pub struct AssignmentRow {
    pub assignment_id: String,
    pub assignment_status: String,
    pub identity_id: String,
    pub identity_status: String,
    pub label: String,
    pub email: Option<String>,
    pub chatgpt_account_id: String,
    pub plan_type: Option<String>,
    pub base_url: Option<String>,
    pub auth_base_url: Option<String>,
    pub secret_ciphertext: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub credential_generation: i64,
    pub access_token_expires_at: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct PoolModelRow {
    pub slug: String,
    pub raw_json: String,
}

/// One model as synced from an upstream catalog.
#[derive(Debug, Clone)]
pub struct SyncedModel {
    pub slug: String,
    pub display_name: Option<String>,
    pub context_window: Option<i64>,
    pub raw_json: String,
}

impl Store {
    /// The Pool's routing settings.
    pub async fn load_pool_settings(&self, pool_id: &str) -> StoreResult<Option<PoolSettingsRow>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PoolSettingsRow>(
            "SELECT p.id AS pool_id, p.status AS pool_status, s.routing_strategy, s.bridge_ring_size, s.v1_compatibility_enabled,
                    s.sticky_websocket_sessions, s.sticky_http_sessions, s.prompt_cache_affinity_enabled
             FROM pools p JOIN pool_routing_settings s ON s.pool_id = p.id WHERE p.id = $1")
            .bind(pool_id).fetch_optional(pool).await)?,
        )
    }

    /// Every assignment of the Pool with its identity.
    pub async fn load_pool_assignments(&self, pool_id: &str) -> StoreResult<Vec<AssignmentRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, AssignmentRow>(
            "SELECT a.id AS assignment_id, a.status AS assignment_status, i.id AS identity_id, i.status AS identity_status,
                    i.label, i.email, i.chatgpt_account_id, i.plan_type, i.base_url, i.auth_base_url,
                    i.secret_ciphertext, i.secret_nonce, i.credential_generation, i.access_token_expires_at
             FROM pool_assignments a JOIN upstream_identities i ON i.id = a.identity_id
             WHERE a.pool_id = $1 ORDER BY a.id")
            .bind(pool_id).fetch_all(pool).await)?)
    }

    /// Loads one identity's sealed credentials (used before a refresh, to pick up
    /// a rotation another instance may have written).
    pub async fn load_identity_secret(
        &self,
        identity_id: &str,
    ) -> StoreResult<(Vec<u8>, Vec<u8>, i64)> {
        let row: Option<(Vec<u8>, Vec<u8>, i64)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT secret_ciphertext, secret_nonce, credential_generation FROM upstream_identities WHERE id = $1")
            .bind(identity_id).fetch_optional(pool).await)?;
        row.ok_or(StoreError::NotFound("upstream identity"))
    }

    /// Stores rotated credentials if the generation is still `expected_generation`.
    /// Returns false when another writer rotated first.
    pub async fn store_rotated_credentials(
        &self,
        identity_id: &str,
        expected_generation: i64,
        sealed: &SealedSecret,
        access_token_expires_at: Option<i64>,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let result = with_pool!(self, pool => sqlx::query(
            "UPDATE upstream_identities SET secret_ciphertext = $3, secret_nonce = $4, secret_key_version = $5,
                credential_generation = credential_generation + 1, access_token_expires_at = $6,
                last_refresh_at = $7, last_refresh_error_code = NULL, status = CASE WHEN status = 'paused' THEN status ELSE 'active' END,
                updated_at = $7
             WHERE id = $1 AND credential_generation = $2")
            .bind(identity_id).bind(expected_generation).bind(&sealed.ciphertext).bind(&sealed.nonce)
            .bind(sealed.key_version).bind(access_token_expires_at).bind(now)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(result == 1)
    }

    /// Records a refresh failure: `refresh_failed` (transient) or `reauth_required` (terminal).
    pub async fn mark_identity_refresh_failure(
        &self,
        identity_id: &str,
        status: &str,
        code: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE upstream_identities SET status = CASE WHEN status = 'paused' THEN status ELSE $2 END,
                last_refresh_error_code = $3, updated_at = $4 WHERE id = $1")
            .bind(identity_id).bind(status).bind(code).bind(now_ms()).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Replaces the Pool's model catalog with a freshly synced one.
    pub async fn replace_pool_models(
        &self,
        pool_id: &str,
        models: &[SyncedModel],
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let existing: Vec<(String, i64)> = sqlx::query_as("SELECT slug, first_seen_at FROM pool_models WHERE pool_id = $1")
                .bind(pool_id).fetch_all(&mut *tx).await?;
            sqlx::query("DELETE FROM pool_models WHERE pool_id = $1").bind(pool_id).execute(&mut *tx).await?;
            for m in models {
                let first_seen = existing.iter().find(|(s, _)| *s == m.slug).map_or(now, |(_, t)| *t);
                sqlx::query(
                    "INSERT INTO pool_models (pool_id, slug, display_name, context_window, raw_json, first_seen_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(pool_id).bind(&m.slug).bind(m.display_name.as_deref()).bind(m.context_window)
                    .bind(&m.raw_json).bind(first_seen).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The Pool's catalog, sorted by slug.
    pub async fn list_pool_models(&self, pool_id: &str) -> StoreResult<Vec<PoolModelRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, PoolModelRow>(
            "SELECT slug, raw_json FROM pool_models WHERE pool_id = $1 ORDER BY slug")
            .bind(pool_id).fetch_all(pool).await)?)
    }
}
