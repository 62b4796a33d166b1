//! Control-plane records: operators and their tokens, Pools, upstream
//! identities and assignments, API keys, and the audit events written in the
//! same transaction as each change.

use serde_json::Value;
use sqlx::FromRow;

use super::{Store, StoreError, StoreResult, with_pool};
use crate::time::{new_id, now_ms};

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct AuditActor {
    pub kind: &'static str,
    pub id: Option<String>,
    pub label: String,
    pub ip: Option<String>,
}

impl AuditActor {
    /// The command-line interface, run by whoever has shell access.
    pub fn cli() -> Self {
        Self {
            kind: "cli",
            id: None,
            label: "command line".into(),
            ip: None,
        }
    }
    /// The gateway itself (background work).
    pub fn system() -> Self {
        Self {
            kind: "system",
            id: None,
            label: "system".into(),
            ip: None,
        }
    }
}

/// One audit event to write with a change.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a AuditActor,
    pub action: &'static str,
    pub target_kind: &'static str,
    pub target_id: Option<&'a str>,
    pub pool_id: Option<&'a str>,
    /// Sanitized details: field names and safe labels, never secret values.
    pub details: Value,
}

macro_rules! insert_audit {
    ($tx:expr, $entry:expr) => {
        insert_audit!($tx, $entry, "succeeded")
    };
    ($tx:expr, $entry:expr, $outcome:expr) => {{
        let e = $entry;
        let outcome: &str = $outcome;
        sqlx::query(
            "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id, outcome, ip, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(new_id())
        .bind(now_ms())
        .bind(e.actor.kind)
        .bind(e.actor.id.as_deref())
        .bind(&e.actor.label)
        .bind(e.action)
        .bind(e.target_kind)
        .bind(e.target_id)
        .bind(e.pool_id)
        .bind(outcome)
        .bind(e.actor.ip.as_deref())
        .bind(e.details.to_string())
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(super) use insert_audit;

/// Inside a change's transaction (after its first write, so a SQLite
/// transaction never upgrades from a read): refuses a missing Pool and an
/// archived one, which takes no new accounts, keys or links.
macro_rules! refuse_archived_pool {
    ($tx:expr, $pool_id:expr) => {{
        let status: Option<(String,)> = sqlx::query_as("SELECT status FROM pools WHERE id = $1")
            .bind($pool_id)
            .fetch_optional(&mut *$tx)
            .await?;
        match status {
            None => return Err(StoreError::NotFound("Pool")),
            Some((s,)) if s == "archived" => {
                return Err(StoreError::Refused(
                    "this Pool is archived: it takes no new accounts or keys",
                ));
            }
            Some(_) => {}
        }
    }};
}
pub(super) use refuse_archived_pool;

#[derive(Debug, Clone, FromRow)]
pub struct OperatorRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub status: String,
    /// Signed up with a temporary password not yet replaced.
    pub must_change_password: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct OperatorTokenRow {
    pub id: String,
    pub operator_id: String,
    pub token_hash: String,
    pub revoked_at: Option<i64>,
    /// When the token last authenticated a call (noted at most once a minute).
    pub last_used_at: Option<i64>,
    pub role: String,
    pub operator_status: String,
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct PoolRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub pool_id: String,
    pub display_name: String,
    pub key_prefix: String,
    pub key_hash: String,
    pub status: String,
    pub expires_at: Option<i64>,
    pub allowed_models: Option<String>,
    pub enforced_model: Option<String>,
}

/// Plain fields of a new upstream identity; the secret arrives sealed.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub label: String,
    pub email: Option<String>,
    pub chatgpt_account_id: String,
    pub chatgpt_user_id: Option<String>,
    pub plan_type: Option<String>,
    pub base_url: Option<String>,
    pub auth_base_url: Option<String>,
    pub access_token_expires_at: Option<i64>,
}

/// A sealed credential bundle, bound to its identity row id.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_version: i64,
}

/// How an account's tokens reached the gateway.
#[derive(Debug, Clone, Copy)]
pub enum ImportVia<'a> {
    /// A pasted or uploaded `auth.json` (or the command line).
    AuthJson,
    /// A completed device-code link, closing this flow.
    DeviceLink { flow_id: &'a str },
}

/// Result of importing an identity into a Pool.
#[derive(Debug, Clone)]
pub struct ImportedIdentity {
    pub identity_id: String,
    pub assignment_id: String,
    pub replaced_existing: bool,
}

/// New API key fields; only the prefix and the secret hash are stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub pool_id: String,
    pub display_name: String,
    pub key_prefix: String,
    pub key_hash: String,
    pub expires_at: Option<i64>,
    pub allowed_models: Option<Vec<String>>,
    pub enforced_model: Option<String>,
    /// Enforcement and limits, set with the key in one transaction.
    pub policy: super::KeyPolicy,
}

impl Store {
    /// Creates an operator and writes its audit event in the same transaction.
    pub async fn create_operator(
        &self,
        actor: &AuditActor,
        email: &str,
        password_hash: &str,
        role: &str,
        must_change_password: bool,
    ) -> StoreResult<String> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO operators (id, email, password_hash, role, status, must_change_password, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'active', $5, $6, $6)",
            )
            .bind(&id)
            .bind(email.trim().to_ascii_lowercase())
            .bind(password_hash)
            .bind(role)
            .bind(must_change_password)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_insert(e, "operator with this email"))?;
            insert_audit!(tx, AuditEntry {
                actor, action: "operator.create", target_kind: "operator", target_id: Some(&id), pool_id: None,
                details: serde_json::json!({"role": role, "fields": ["email", "role", "password"]}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Finds an operator by email (case-insensitive).
    pub async fn find_operator_by_email(&self, email: &str) -> StoreResult<Option<OperatorRow>> {
        let email = email.trim().to_ascii_lowercase();
        Ok(with_pool!(self, pool => sqlx::query_as::<_, OperatorRow>(
            "SELECT id, email, password_hash, role, status, must_change_password FROM operators WHERE email = $1")
            .bind(&email).fetch_optional(pool).await)?)
    }

    /// Stores a new operator token (hash only).
    pub async fn create_operator_token(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        label: &str,
        prefix: &str,
        hash: &str,
    ) -> StoreResult<String> {
        let id = new_id();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO operator_tokens (id, operator_id, label, token_prefix, token_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id).bind(operator_id).bind(label).bind(prefix).bind(hash).bind(now_ms())
            .execute(&mut *tx).await
            .map_err(|e| StoreError::from_insert(e, "operator token"))?;
            insert_audit!(tx, AuditEntry {
                actor, action: "operator_token.create", target_kind: "operator_token", target_id: Some(&id), pool_id: None,
                details: serde_json::json!({"operator_id": operator_id, "label": label, "prefix": prefix}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Looks an operator token up by its public prefix.
    pub async fn find_operator_token(&self, prefix: &str) -> StoreResult<Option<OperatorTokenRow>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, OperatorTokenRow>(
            "SELECT t.id, t.operator_id, t.token_hash, t.revoked_at, t.last_used_at, o.role, o.status AS operator_status
             FROM operator_tokens t JOIN operators o ON o.id = t.operator_id WHERE t.token_prefix = $1")
            .bind(prefix).fetch_optional(pool).await)?,
        )
    }

    /// Creates a Pool with default routing settings.
    pub async fn create_pool(
        &self,
        actor: &AuditActor,
        slug: &str,
        name: &str,
    ) -> StoreResult<PoolRow> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO pools (id, slug, name, status, created_at, updated_at) VALUES ($1, $2, $3, 'active', $4, $4)")
                .bind(&id).bind(slug).bind(name).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "Pool with this slug"))?;
            sqlx::query("INSERT INTO pool_routing_settings (pool_id, updated_at) VALUES ($1, $2)")
                .bind(&id).bind(now).execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action: "pool.create", target_kind: "pool", target_id: Some(&id), pool_id: Some(&id),
                details: serde_json::json!({"slug": slug, "name": name}),
            });
            tx.commit().await?;
            Ok(PoolRow { id, slug: slug.to_owned(), name: name.to_owned(), status: "active".into() })
        })
    }

    /// Turns the Pool's OpenAI-compatible `/v1` surface on or off.
    pub async fn set_pool_v1_compatibility(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        enabled: bool,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE pool_routing_settings SET v1_compatibility_enabled = $2, updated_at = $3 WHERE pool_id = $1")
                .bind(pool_id).bind(enabled).bind(now_ms()).execute(&mut *tx).await?
                .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound("Pool"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "pool.update", target_kind: "pool", target_id: Some(pool_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["v1_compatibility_enabled"], "v1_compatibility_enabled": enabled}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Finds a Pool by id or slug.
    pub async fn find_pool(&self, id_or_slug: &str) -> StoreResult<Option<PoolRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, PoolRow>(
            "SELECT id, slug, name, status FROM pools WHERE id = $1 OR slug = $1")
            .bind(id_or_slug).fetch_optional(pool).await)?)
    }

    /// All Pools, by name.
    pub async fn list_pools(&self) -> StoreResult<Vec<PoolRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, PoolRow>(
            "SELECT id, slug, name, status FROM pools ORDER BY name, id").fetch_all(pool).await)?)
    }

    /// Imports an upstream identity (or replaces the credentials of the one with
    /// the same account and user) and assigns it to `pool_id`. `seal` receives the
    /// identity row id and returns the sealed secret bound to it.
    pub async fn import_identity<F>(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity: &NewIdentity,
        seal: F,
    ) -> StoreResult<ImportedIdentity>
    where
        F: Fn(&str) -> Result<SealedSecret, String>,
    {
        self.import_identity_via(actor, pool_id, identity, ImportVia::AuthJson, seal)
            .await
    }

    /// [`Store::import_identity`], saying how the tokens arrived: a device-code
    /// link also closes its flow, in the same transaction as the import and
    /// its audit event. An archived Pool takes no accounts.
    pub async fn import_identity_via<F>(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity: &NewIdentity,
        via: ImportVia<'_>,
        seal: F,
    ) -> StoreResult<ImportedIdentity>
    where
        F: Fn(&str) -> Result<SealedSecret, String>,
    {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let existing: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM upstream_identities WHERE chatgpt_account_id = $1 AND COALESCE(chatgpt_user_id, '') = COALESCE($2, '')")
                .bind(&identity.chatgpt_account_id).bind(identity.chatgpt_user_id.as_deref())
                .fetch_optional(&mut *tx).await?;
            let replaced_existing = existing.is_some();
            let identity_id = existing.map(|r| r.0).unwrap_or_else(new_id);
            let sealed = seal(&identity_id).map_err(StoreError::Corrupt)?;
            if replaced_existing {
                sqlx::query(
                    "UPDATE upstream_identities SET email = $2, plan_type = $3, base_url = $4, auth_base_url = $5,
                       secret_ciphertext = $6, secret_nonce = $7, secret_key_version = $8,
                       credential_generation = credential_generation + 1, access_token_expires_at = $9,
                       status = 'active', last_refresh_error_code = NULL, updated_at = $10
                     WHERE id = $1")
                    .bind(&identity_id).bind(identity.email.as_deref()).bind(identity.plan_type.as_deref())
                    .bind(identity.base_url.as_deref()).bind(identity.auth_base_url.as_deref())
                    .bind(&sealed.ciphertext).bind(&sealed.nonce).bind(sealed.key_version)
                    .bind(identity.access_token_expires_at).bind(now)
                    .execute(&mut *tx).await?;
            } else {
                sqlx::query(
                    "INSERT INTO upstream_identities (id, label, email, chatgpt_account_id, chatgpt_user_id, plan_type, status,
                       base_url, auth_base_url, secret_ciphertext, secret_nonce, secret_key_version, credential_generation,
                       access_token_expires_at, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, 0, $12, $13, $13)")
                    .bind(&identity_id).bind(&identity.label).bind(identity.email.as_deref())
                    .bind(&identity.chatgpt_account_id).bind(identity.chatgpt_user_id.as_deref())
                    .bind(identity.plan_type.as_deref()).bind(identity.base_url.as_deref())
                    .bind(identity.auth_base_url.as_deref()).bind(&sealed.ciphertext).bind(&sealed.nonce)
                    .bind(sealed.key_version).bind(identity.access_token_expires_at).bind(now)
                    .execute(&mut *tx).await?;
            }
            refuse_archived_pool!(tx, pool_id);
            let assignment: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM pool_assignments WHERE pool_id = $1 AND identity_id = $2")
                .bind(pool_id).bind(&identity_id).fetch_optional(&mut *tx).await?;
            let assignment_id = match assignment {
                Some((id,)) => id,
                None => {
                    let id = new_id();
                    sqlx::query("INSERT INTO pool_assignments (id, pool_id, identity_id, status, created_at) VALUES ($1, $2, $3, 'active', $4)")
                        .bind(&id).bind(pool_id).bind(&identity_id).bind(now)
                        .execute(&mut *tx).await?;
                    id
                }
            };
            let action = match via {
                ImportVia::AuthJson if replaced_existing => "upstream.credentials_replace",
                ImportVia::AuthJson => "upstream.import",
                ImportVia::DeviceLink { flow_id } => {
                    let closed = sqlx::query(
                        "UPDATE upstream_link_flows SET status = 'completed', identity_id = $2, updated_at = $3
                         WHERE id = $1 AND pool_id = $4 AND status = 'pending'")
                        .bind(flow_id).bind(&identity_id).bind(now).bind(pool_id)
                        .execute(&mut *tx).await?.rows_affected();
                    if closed != 1 {
                        return Err(StoreError::Refused("this device-code link was already completed or has ended"));
                    }
                    "upstream_account.oauth_device_link"
                }
            };
            insert_audit!(tx, AuditEntry {
                actor,
                action,
                target_kind: "upstream_identity", target_id: Some(&identity_id), pool_id: Some(pool_id),
                details: serde_json::json!({"label": identity.label, "plan_type": identity.plan_type,
                    "fields": ["access_token", "refresh_token", "id_token"], "assignment_id": assignment_id,
                    "replaced_existing": replaced_existing}),
            });
            tx.commit().await?;
            Ok(ImportedIdentity { identity_id, assignment_id, replaced_existing })
        })
    }

    /// Creates an API key (prefix and hash only).
    pub async fn create_api_key(&self, actor: &AuditActor, key: &NewApiKey) -> StoreResult<String> {
        let id = new_id();
        let now = now_ms();
        let allowed = key
            .allowed_models
            .as_ref()
            .map(|m| serde_json::json!(m).to_string());
        let p = &key.policy;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (id, pool_id, display_name, key_prefix, key_hash, status, expires_at, allowed_models, enforced_model,
                    enforced_reasoning_effort, maximum_reasoning_effort, enforced_service_tier,
                    max_requests_per_minute, max_tokens_per_day, max_tokens_per_week, max_input_tokens_per_request,
                    max_output_tokens_per_request, max_spend_micros_per_day, max_spend_micros_per_week, max_spend_micros_per_month,
                    created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)")
                .bind(&id).bind(&key.pool_id).bind(&key.display_name).bind(&key.key_prefix).bind(&key.key_hash)
                .bind(key.expires_at).bind(allowed.as_deref()).bind(key.enforced_model.as_deref())
                .bind(p.enforced_reasoning_effort.as_deref()).bind(p.maximum_reasoning_effort.as_deref())
                .bind(p.enforced_service_tier.as_deref()).bind(p.max_requests_per_minute).bind(p.max_tokens_per_day)
                .bind(p.max_tokens_per_week).bind(p.max_input_tokens_per_request).bind(p.max_output_tokens_per_request)
                .bind(p.max_spend_micros_per_day).bind(p.max_spend_micros_per_week).bind(p.max_spend_micros_per_month)
                .bind(now)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "API key"))?;
            refuse_archived_pool!(tx, &key.pool_id);
            let mut fields = vec!["display_name", "expires_at", "allowed_models", "enforced_model"];
            if p != &super::KeyPolicy::default() {
                fields.push("policy");
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "api_key.create", target_kind: "api_key", target_id: Some(&id), pool_id: Some(&key.pool_id),
                details: serde_json::json!({"display_name": key.display_name, "prefix": key.key_prefix,
                    "fields": fields, "policy": p}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Changes an API key's status (`active`, `paused`, `revoked`).
    pub async fn set_api_key_status(
        &self,
        actor: &AuditActor,
        key_id: &str,
        status: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE api_keys SET status = $2, revoked_at = CASE WHEN $2 = 'revoked' THEN $3 ELSE revoked_at END, updated_at = $3
                 WHERE id = $1 AND status <> 'revoked' RETURNING pool_id")
                .bind(key_id).bind(status).bind(now).fetch_optional(&mut *tx).await?;
            let Some((pool_id,)) = row else { return Err(StoreError::NotFound("changeable API key")) };
            insert_audit!(tx, AuditEntry {
                actor, action: "api_key.status_change", target_kind: "api_key", target_id: Some(key_id), pool_id: Some(&pool_id),
                details: serde_json::json!({"status": status}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Sets or clears an API key's expiry.
    pub async fn set_api_key_expiry(
        &self,
        actor: &AuditActor,
        key_id: &str,
        expires_at: Option<i64>,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE api_keys SET expires_at = $2, updated_at = $3 WHERE id = $1 RETURNING pool_id")
                .bind(key_id).bind(expires_at).bind(now_ms()).fetch_optional(&mut *tx).await?;
            let Some((pool_id,)) = row else { return Err(StoreError::NotFound("API key")) };
            insert_audit!(tx, AuditEntry {
                actor, action: "api_key.update", target_kind: "api_key", target_id: Some(key_id), pool_id: Some(&pool_id),
                details: serde_json::json!({"fields": ["expires_at"]}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Looks an API key up by its public prefix.
    pub async fn find_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKeyRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, ApiKeyRow>(
            "SELECT id, pool_id, display_name, key_prefix, key_hash, status, expires_at, allowed_models, enforced_model
             FROM api_keys WHERE key_prefix = $1")
            .bind(prefix).fetch_optional(pool).await)?)
    }

    /// Count of audit events (for tests and the console's header figures).
    pub async fn count_audit_events(&self, action: &str) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM audit_events WHERE action = $1").bind(action).fetch_one(pool).await)?;
        Ok(row.0)
    }

    /// Pauses (`paused`) or reactivates (`active`) an upstream identity, with
    /// its audit event. Reactivation also clears a refresh failure.
    pub async fn set_identity_status(
        &self,
        actor: &AuditActor,
        identity_id: &str,
        status: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE upstream_identities SET status = $2,
                    last_refresh_error_code = CASE WHEN $2 = 'active' THEN NULL ELSE last_refresh_error_code END,
                    updated_at = $3 WHERE id = $1")
                .bind(identity_id).bind(status).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if updated != 1 {
                return Err(StoreError::NotFound("upstream identity"));
            }
            insert_audit!(tx, AuditEntry {
                actor,
                action: if status == "paused" { "upstream.pause" } else { "upstream.reactivate" },
                target_kind: "upstream_identity", target_id: Some(identity_id), pool_id: None,
                details: serde_json::json!({"fields": ["status"], "status": status}),
            });
            tx.commit().await?;
            Ok(())
        })
    }
}
