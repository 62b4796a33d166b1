//! Records behind the admin console: one-time bootstrap tokens, sign-in
//! sessions (hashes only), operator-to-Pool assignments, and the Pool-scoped
//! reads and changes the console pages make. Every change writes its audit
//! event in the same transaction. Reads take a [`PoolScope`] so an admin only
//! ever sees the Pools assigned to them, whichever id they ask for.

use serde::Serialize;
use sqlx::FromRow;

use super::control::insert_audit;
use super::{
    AuditActor, AuditEntry, OperatorRow, PoolRow, Store, StoreError, StoreResult, with_pool,
};
use crate::time::{new_id, now_ms};

/// Which Pools a reader may see: all of them (owner) or those assigned to one
/// operator (admin).
#[derive(Debug, Clone, Copy)]
pub enum PoolScope<'a> {
    All,
    AssignedTo(&'a str),
}

impl<'a> PoolScope<'a> {
    /// The operator id to filter on, `None` for everything.
    pub(crate) fn operator(self) -> Option<&'a str> {
        match self {
            PoolScope::All => None,
            PoolScope::AssignedTo(id) => Some(id),
        }
    }
}

/// A live session joined with its operator.
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub session_id: String,
    pub operator_id: String,
    pub email: String,
    pub role: String,
    pub expires_at: i64,
    pub last_seen_at: i64,
    /// The operator still has a temporary password to replace.
    pub must_change_password: bool,
}

/// Fields of a new session.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub operator_id: &'a str,
    pub token_hash: &'a str,
    pub expires_at: i64,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A Pool with the figures the list shows.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct PoolOverview {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub accounts: i64,
    pub usable_accounts: i64,
    pub active_keys: i64,
}

/// An upstream account as assigned to one Pool.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct PoolUpstream {
    pub identity_id: String,
    pub assignment_id: String,
    pub label: String,
    pub email: Option<String>,
    pub plan_type: Option<String>,
    pub status: String,
    pub assignment_status: String,
    pub access_token_expires_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    pub last_refresh_error_code: Option<String>,
    pub created_at: i64,
}

/// One observed quota window of an account.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct QuotaWindowRow {
    pub identity_id: String,
    pub window_kind: String,
    pub used_percent: f64,
    pub window_minutes: Option<i64>,
    pub reset_at: Option<i64>,
    pub observed_at: i64,
}

/// An API key without its hash.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ApiKeySummary {
    pub id: String,
    pub pool_id: String,
    pub display_name: String,
    pub key_prefix: String,
    pub status: String,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    /// JSON list of allowed models, if restricted.
    pub allowed_models: Option<String>,
    pub enforced_model: Option<String>,
    #[sqlx(flatten)]
    pub policy: super::KeyPolicy,
}

/// The columns of [`ApiKeySummary`].
const API_KEY_SUMMARY_COLUMNS: &str = "id, pool_id, display_name, key_prefix, status, expires_at, last_used_at, created_at,
    allowed_models, enforced_model, enforced_reasoning_effort, maximum_reasoning_effort, enforced_service_tier,
    max_requests_per_minute, max_tokens_per_day, max_tokens_per_week, max_input_tokens_per_request,
    max_output_tokens_per_request, max_spend_micros_per_day, max_spend_micros_per_week, max_spend_micros_per_month";

/// One audit event as shown to operators.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AuditEventRow {
    pub id: String,
    pub occurred_at: i64,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub actor_label: Option<String>,
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub pool_id: Option<String>,
    pub outcome: String,
    pub ip: Option<String>,
    pub details: String,
}

/// An operator as the Operators page lists them (no password hash).
#[derive(Debug, Clone, Serialize)]
pub struct OperatorSummary {
    pub id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub must_change_password: bool,
    pub created_at: i64,
    /// Two-factor sign-in is on.
    pub totp_enabled: bool,
    /// Assigned Pools as (id, name), by name.
    pub pools: Vec<(String, String)>,
}

/// What a request to change an operator's status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorStatusChange {
    Changed,
    /// The operator already had that status; nothing was written.
    AlreadyThere,
    /// Refused: the operator is the last active owner.
    LastOwner,
}

/// Filters of the audit list; `before` is the keyset cursor (time, id).
/// `occurred_from` is inclusive and `occurred_before` exclusive (epoch ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub pool_id: Option<String>,
    pub outcome: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub occurred_from: Option<i64>,
    pub occurred_before: Option<i64>,
    pub before: Option<(i64, String)>,
}

/// The routing settings of a Pool an operator can edit.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct PoolRoutingSettings {
    pub routing_strategy: String,
    pub bridge_ring_size: i64,
    pub sticky_websocket_sessions: bool,
    pub sticky_http_sessions: bool,
    pub prompt_cache_affinity_enabled: bool,
    pub v1_compatibility_enabled: bool,
}

impl PoolRoutingSettings {
    /// Names and (old, new) values of the fields that differ in `new`.
    pub fn changes(&self, new: &PoolRoutingSettings) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let mut note = |name: &str, old: serde_json::Value, new: serde_json::Value| {
            if old != new {
                out.insert(name.to_owned(), serde_json::json!({"from": old, "to": new}));
            }
        };
        note(
            "routing_strategy",
            self.routing_strategy.clone().into(),
            new.routing_strategy.clone().into(),
        );
        note(
            "bridge_ring_size",
            self.bridge_ring_size.into(),
            new.bridge_ring_size.into(),
        );
        note(
            "sticky_websocket_sessions",
            self.sticky_websocket_sessions.into(),
            new.sticky_websocket_sessions.into(),
        );
        note(
            "sticky_http_sessions",
            self.sticky_http_sessions.into(),
            new.sticky_http_sessions.into(),
        );
        note(
            "prompt_cache_affinity_enabled",
            self.prompt_cache_affinity_enabled.into(),
            new.prompt_cache_affinity_enabled.into(),
        );
        note(
            "v1_compatibility_enabled",
            self.v1_compatibility_enabled.into(),
            new.v1_compatibility_enabled.into(),
        );
        out
    }
}

/// What a request to change a Pool's status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStatusChange {
    /// Changed; archiving also revoked this many keys.
    Changed { keys_revoked: u64 },
    /// The Pool already had that status; nothing was written.
    AlreadyThere,
    /// Refused: the Pool is archived, which is final.
    Archived,
}

/// What saving a Pool's routing settings did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSettingsChange {
    /// Saved; the names of the fields that changed.
    Changed(Vec<String>),
    /// Every value was already the same; nothing was written.
    Unchanged,
    /// Refused: the Pool is archived.
    Archived,
}

/// `LIKE` pattern matching `text` anywhere, with `\` as the escape character.
fn contains_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// SQL true when the Pool `p.id` is visible to operator `$1` (or `$1` is NULL).
const POOL_VISIBLE: &str = "(CAST($1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM operator_pools op WHERE op.operator_id = $1 AND op.pool_id = p.id))";

impl Store {
    /// Whether any operator exists (the bootstrap page is closed once one does).
    pub async fn has_operators(&self) -> StoreResult<bool> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM operators").fetch_one(pool).await)?;
        Ok(row.0 > 0)
    }

    /// Stores the hash of a one-time bootstrap token.
    pub async fn create_bootstrap_token(
        &self,
        token_hash: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO bootstrap_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(token_hash).bind(now_ms()).bind(expires_at).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Creates the first owner: only while no operator exists, and only with an
    /// unused, unexpired bootstrap token, which this consumes. The audit event
    /// names the new owner as its actor.
    pub async fn bootstrap_owner(
        &self,
        token_hash: &str,
        email: &str,
        password_hash: &str,
        ip: Option<&str>,
    ) -> StoreResult<String> {
        let id = new_id();
        let now = now_ms();
        let email = email.trim().to_ascii_lowercase();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let (operators,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM operators").fetch_one(&mut *tx).await?;
            if operators > 0 {
                return Err(StoreError::Conflict("an owner"));
            }
            let used = sqlx::query(
                "UPDATE bootstrap_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2")
                .bind(token_hash).bind(now).execute(&mut *tx).await?.rows_affected();
            if used != 1 {
                return Err(StoreError::NotFound("valid bootstrap token"));
            }
            sqlx::query(
                "INSERT INTO operators (id, email, password_hash, role, status, must_change_password, created_at, updated_at)
                 VALUES ($1, $2, $3, 'owner', 'active', FALSE, $4, $4)")
                .bind(&id).bind(&email).bind(password_hash).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "operator with this email"))?;
            let actor = AuditActor { kind: "operator", id: Some(id.clone()), label: email.clone(), ip: ip.map(str::to_owned) };
            insert_audit!(tx, AuditEntry {
                actor: &actor, action: "auth.bootstrap", target_kind: "operator", target_id: Some(&id), pool_id: None,
                details: serde_json::json!({"role": "owner", "fields": ["email", "password"]}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Finds an operator by id.
    pub async fn find_operator(&self, id: &str) -> StoreResult<Option<OperatorRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, OperatorRow>(
            "SELECT id, email, password_hash, role, status, must_change_password FROM operators WHERE id = $1")
            .bind(id).fetch_optional(pool).await)?)
    }

    /// Opens a session after a successful sign-in (`auth.login`).
    pub async fn create_session(
        &self,
        actor: &AuditActor,
        new: &NewSession<'_>,
    ) -> StoreResult<String> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO admin_sessions (id, token_hash, operator_id, created_at, expires_at, last_seen_at, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $4, $6, $7)")
                .bind(&id).bind(new.token_hash).bind(new.operator_id).bind(now).bind(new.expires_at)
                .bind(new.ip).bind(new.user_agent)
                .execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.login", target_kind: "session", target_id: Some(&id), pool_id: None,
                details: serde_json::json!({"method": "password"}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// The live session with this token hash, with an active operator.
    pub async fn find_session(&self, token_hash: &str) -> StoreResult<Option<SessionRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, SessionRow>(
            "SELECT s.id AS session_id, o.id AS operator_id, o.email, o.role, s.expires_at, s.last_seen_at,
                    o.must_change_password
             FROM admin_sessions s JOIN operators o ON o.id = s.operator_id
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND o.status = 'active'")
            .bind(token_hash).bind(now_ms()).fetch_optional(pool).await)?)
    }

    /// Notes that a session was used.
    pub async fn touch_session(&self, session_id: &str) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("UPDATE admin_sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(session_id).bind(now_ms()).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Revokes one session (`auth.logout`).
    pub async fn revoke_session(&self, actor: &AuditActor, session_id: &str) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query("UPDATE admin_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(session_id).bind(now_ms()).execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("session"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.logout", target_kind: "session", target_id: Some(session_id), pool_id: None,
                details: serde_json::json!({}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Assigns a Pool to an (admin) operator (`operator.update`).
    pub async fn assign_operator_pool(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        pool_id: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO operator_pools (operator_id, pool_id, created_at) VALUES ($1, $2, $3)")
                .bind(operator_id).bind(pool_id).bind(now_ms())
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "Pool assignment"))?;
            insert_audit!(tx, AuditEntry {
                actor, action: "operator.update", target_kind: "operator", target_id: Some(operator_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["pools"], "assigned_pool_id": pool_id}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Pools visible in `scope`, by name, with account and key counts.
    pub async fn list_pool_overviews(
        &self,
        scope: PoolScope<'_>,
    ) -> StoreResult<Vec<PoolOverview>> {
        let sql = format!(
            "SELECT p.id, p.slug, p.name, p.status,
               (SELECT COUNT(*) FROM pool_assignments a WHERE a.pool_id = p.id) AS accounts,
               (SELECT COUNT(*) FROM pool_assignments a JOIN upstream_identities i ON i.id = a.identity_id
                  WHERE a.pool_id = p.id AND a.status = 'active' AND i.status = 'active') AS usable_accounts,
               (SELECT COUNT(*) FROM api_keys k WHERE k.pool_id = p.id AND k.status = 'active') AS active_keys
             FROM pools p WHERE {POOL_VISIBLE} ORDER BY p.name, p.id"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PoolOverview>(sqlx::AssertSqlSafe(sql))
            .bind(scope.operator()).fetch_all(pool).await)?,
        )
    }

    /// The Pool with this id, if visible in `scope`.
    pub async fn find_visible_pool(
        &self,
        scope: PoolScope<'_>,
        pool_id: &str,
    ) -> StoreResult<Option<PoolRow>> {
        let sql = format!(
            "SELECT p.id, p.slug, p.name, p.status FROM pools p WHERE {POOL_VISIBLE} AND p.id = $2"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PoolRow>(sqlx::AssertSqlSafe(sql))
            .bind(scope.operator()).bind(pool_id).fetch_optional(pool).await)?,
        )
    }

    /// Accounts assigned to a Pool, by label.
    pub async fn list_pool_upstreams(&self, pool_id: &str) -> StoreResult<Vec<PoolUpstream>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, PoolUpstream>(
            "SELECT i.id AS identity_id, a.id AS assignment_id, i.label, i.email, i.plan_type, i.status,
                    a.status AS assignment_status, i.access_token_expires_at, i.last_refresh_at,
                    i.last_refresh_error_code, i.created_at
             FROM pool_assignments a JOIN upstream_identities i ON i.id = a.identity_id
             WHERE a.pool_id = $1 ORDER BY i.label, i.id")
            .bind(pool_id).fetch_all(pool).await)?)
    }

    /// Observed quota windows of the accounts assigned to a Pool.
    pub async fn list_pool_quota_windows(&self, pool_id: &str) -> StoreResult<Vec<QuotaWindowRow>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, QuotaWindowRow>(
            "SELECT q.identity_id, q.window_kind, q.used_percent, q.window_minutes, q.reset_at, q.observed_at
             FROM quota_windows q JOIN pool_assignments a ON a.identity_id = q.identity_id
             WHERE a.pool_id = $1 ORDER BY q.identity_id, q.window_kind")
            .bind(pool_id).fetch_all(pool).await)?,
        )
    }

    /// A Pool's API keys, newest first.
    pub async fn list_pool_api_keys(&self, pool_id: &str) -> StoreResult<Vec<ApiKeySummary>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ApiKeySummary>(sqlx::AssertSqlSafe(format!(
            "SELECT {API_KEY_SUMMARY_COLUMNS} FROM api_keys WHERE pool_id = $1 ORDER BY created_at DESC, id DESC")))
            .bind(pool_id).fetch_all(pool).await)?,
        )
    }

    /// Pauses (`paused`) or reactivates (`active`) an account assigned to
    /// `pool_id`; an account not in that Pool is not found.
    pub async fn set_pool_upstream_status(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity_id: &str,
        status: &str,
    ) -> StoreResult<()> {
        let action = match status {
            "paused" => "upstream_account.pause",
            "active" => "upstream_account.reactivate",
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "unknown account status {status}"
                )));
            }
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE upstream_identities SET status = $3,
                    last_refresh_error_code = CASE WHEN $3 = 'active' THEN NULL ELSE last_refresh_error_code END,
                    updated_at = $4
                 WHERE id = $1 AND status <> $3
                   AND EXISTS (SELECT 1 FROM pool_assignments a WHERE a.identity_id = $1 AND a.pool_id = $2)")
                .bind(identity_id).bind(pool_id).bind(status).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound(if status == "paused" { "active account in this Pool" } else { "paused account in this Pool" }));
            }
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "upstream_identity", target_id: Some(identity_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["status"], "status": status}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Pauses (`paused`, from active), resumes (`active`, from paused) or
    /// revokes (`revoked`, from either) a key of `pool_id`.
    pub async fn set_pool_api_key_status(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        key_id: &str,
        status: &str,
    ) -> StoreResult<()> {
        let (action, from, missing) = match status {
            "paused" => (
                "api_key.pause",
                "status = 'active'",
                "active API key in this Pool",
            ),
            "active" => (
                "api_key.resume",
                "status = 'paused'",
                "paused API key in this Pool",
            ),
            "revoked" => (
                "api_key.revoke",
                "status <> 'revoked'",
                "unrevoked API key in this Pool",
            ),
            _ => return Err(StoreError::Corrupt(format!("unknown key status {status}"))),
        };
        let sql = format!(
            "UPDATE api_keys SET status = $3, revoked_at = CASE WHEN $3 = 'revoked' THEN $4 ELSE revoked_at END, updated_at = $4
             WHERE id = $1 AND pool_id = $2 AND {from}"
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(key_id).bind(pool_id).bind(status).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound(missing));
            }
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "api_key", target_id: Some(key_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["status"], "status": status}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Audit events visible in `scope` (an admin sees events of assigned Pools
    /// and their own), newest first.
    pub async fn list_audit_events(
        &self,
        scope: PoolScope<'_>,
        filter: &AuditFilter,
        limit: i64,
    ) -> StoreResult<Vec<AuditEventRow>> {
        let actor = filter.actor.as_deref().map(contains_pattern);
        let (before_at, before_id) = match &filter.before {
            Some((at, id)) => (Some(*at), Some(id.as_str())),
            None => (None, None),
        };
        Ok(with_pool!(self, pool => sqlx::query_as::<_, AuditEventRow>(
            "SELECT id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id,
                    outcome, ip, details
             FROM audit_events
             WHERE (CAST($1 AS TEXT) IS NULL OR actor_id = $1
                    OR pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = $1))
               AND (CAST($2 AS TEXT) IS NULL OR action = $2)
               AND (CAST($3 AS TEXT) IS NULL OR LOWER(COALESCE(actor_label, '')) LIKE $3 ESCAPE '\\')
               AND (CAST($4 AS BIGINT) IS NULL OR occurred_at < $4 OR (occurred_at = $4 AND id < $5))
               AND (CAST($7 AS TEXT) IS NULL OR pool_id = $7)
               AND (CAST($8 AS TEXT) IS NULL OR outcome = $8)
               AND (CAST($9 AS TEXT) IS NULL OR target_kind = $9)
               AND (CAST($10 AS TEXT) IS NULL OR target_id = $10)
               AND (CAST($11 AS BIGINT) IS NULL OR occurred_at >= $11)
               AND (CAST($12 AS BIGINT) IS NULL OR occurred_at < $12)
             ORDER BY occurred_at DESC, id DESC LIMIT $6")
            .bind(scope.operator()).bind(filter.action.as_deref()).bind(actor.as_deref())
            .bind(before_at).bind(before_id).bind(limit)
            .bind(filter.pool_id.as_deref()).bind(filter.outcome.as_deref())
            .bind(filter.target_kind.as_deref()).bind(filter.target_id.as_deref())
            .bind(filter.occurred_from).bind(filter.occurred_before)
            .fetch_all(pool).await)?)
    }

    /// One audit event by id, if visible in `scope` (the list's rule).
    pub async fn find_audit_event(
        &self,
        scope: PoolScope<'_>,
        id: &str,
    ) -> StoreResult<Option<AuditEventRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, AuditEventRow>(
            "SELECT id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id,
                    outcome, ip, details
             FROM audit_events
             WHERE id = $2
               AND (CAST($1 AS TEXT) IS NULL OR actor_id = $1
                    OR pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = $1))")
            .bind(scope.operator()).bind(id)
            .fetch_optional(pool).await)?)
    }

    /// A Pool's editable routing settings.
    pub async fn pool_routing_settings(&self, pool_id: &str) -> StoreResult<PoolRoutingSettings> {
        let row = with_pool!(self, pool => sqlx::query_as::<_, PoolRoutingSettings>(
            "SELECT routing_strategy, bridge_ring_size, sticky_websocket_sessions, sticky_http_sessions,
                    prompt_cache_affinity_enabled, v1_compatibility_enabled
             FROM pool_routing_settings WHERE pool_id = $1")
            .bind(pool_id).fetch_optional(pool).await)?;
        row.ok_or(StoreError::NotFound("routing settings of this Pool"))
    }

    /// Saves a Pool's routing settings (`pool.update`, naming each changed
    /// field with its old and new value). Nothing is written when nothing
    /// differs; an archived Pool is refused. The values are read first and
    /// the UPDATE only matches them, so a concurrent edit is not overwritten
    /// silently (it answers a conflict).
    pub async fn update_pool_routing_settings(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        new: &PoolRoutingSettings,
    ) -> StoreResult<PoolSettingsChange> {
        let status: Option<(String,)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT status FROM pools WHERE id = $1").bind(pool_id).fetch_optional(pool).await)?;
        match status {
            None => return Err(StoreError::NotFound("Pool")),
            Some((s,)) if s == "archived" => return Ok(PoolSettingsChange::Archived),
            Some(_) => {}
        }
        let old = self.pool_routing_settings(pool_id).await?;
        let changes = old.changes(new);
        if changes.is_empty() {
            return Ok(PoolSettingsChange::Unchanged);
        }
        let fields: Vec<String> = changes.keys().cloned().collect();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE pool_routing_settings SET routing_strategy = $2, bridge_ring_size = $3,
                        sticky_websocket_sessions = $4, sticky_http_sessions = $5,
                        prompt_cache_affinity_enabled = $6, v1_compatibility_enabled = $7, updated_at = $8
                 WHERE pool_id = $1 AND routing_strategy = $9 AND bridge_ring_size = $10
                   AND sticky_websocket_sessions = $11 AND sticky_http_sessions = $12
                   AND prompt_cache_affinity_enabled = $13 AND v1_compatibility_enabled = $14
                   AND EXISTS (SELECT 1 FROM pools p WHERE p.id = $1 AND p.status <> 'archived')")
                .bind(pool_id).bind(&new.routing_strategy).bind(new.bridge_ring_size)
                .bind(new.sticky_websocket_sessions).bind(new.sticky_http_sessions)
                .bind(new.prompt_cache_affinity_enabled).bind(new.v1_compatibility_enabled).bind(now_ms())
                .bind(&old.routing_strategy).bind(old.bridge_ring_size)
                .bind(old.sticky_websocket_sessions).bind(old.sticky_http_sessions)
                .bind(old.prompt_cache_affinity_enabled).bind(old.v1_compatibility_enabled)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::Conflict("a newer edit of this Pool's settings"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "pool.update", target_kind: "pool", target_id: Some(pool_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": fields, "changes": changes}),
            });
            tx.commit().await?;
            Ok(PoolSettingsChange::Changed(fields))
        })
    }

    /// Disables (`pool.disable`), enables (`pool.enable`) or archives
    /// (`pool.archive`) a Pool. Archiving is final and revokes the Pool's
    /// unrevoked API keys in the same transaction, so they stop
    /// authenticating.
    pub async fn set_pool_status(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        status: &str,
    ) -> StoreResult<PoolStatusChange> {
        let action = match status {
            "disabled" => "pool.disable",
            "active" => "pool.enable",
            "archived" => "pool.archive",
            _ => return Err(StoreError::Corrupt(format!("unknown Pool status {status}"))),
        };
        // Read first (see `rotate_pool_api_key`); the UPDATE only matches the
        // status read here.
        let current: Option<(String,)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT status FROM pools WHERE id = $1").bind(pool_id).fetch_optional(pool).await)?;
        let from = match current {
            None => return Err(StoreError::NotFound("Pool")),
            Some((s,)) if s == "archived" => return Ok(PoolStatusChange::Archived),
            Some((s,)) if s == status => return Ok(PoolStatusChange::AlreadyThere),
            Some((s,)) => s,
        };
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query("UPDATE pools SET status = $2, updated_at = $3 WHERE id = $1 AND status = $4")
                .bind(pool_id).bind(status).bind(now).bind(&from)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::Conflict("a newer status change of this Pool"));
            }
            let keys_revoked = if status == "archived" {
                sqlx::query("UPDATE api_keys SET status = 'revoked', revoked_at = $2, updated_at = $2
                             WHERE pool_id = $1 AND status <> 'revoked'")
                    .bind(pool_id).bind(now).execute(&mut *tx).await?.rows_affected()
            } else {
                0
            };
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "pool", target_id: Some(pool_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["status"], "from": from, "status": status, "keys_revoked": keys_revoked}),
            });
            tx.commit().await?;
            Ok(PoolStatusChange::Changed { keys_revoked })
        })
    }

    /// One API key of `pool_id`, without its hash.
    pub async fn find_pool_api_key(
        &self,
        pool_id: &str,
        key_id: &str,
    ) -> StoreResult<Option<ApiKeySummary>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ApiKeySummary>(sqlx::AssertSqlSafe(format!(
            "SELECT {API_KEY_SUMMARY_COLUMNS} FROM api_keys WHERE id = $1 AND pool_id = $2")))
            .bind(key_id).bind(pool_id).fetch_optional(pool).await)?,
        )
    }

    /// Gives an unrevoked key of `pool_id` a new prefix and secret hash
    /// (`api_key.rotate`): same record, settings and history; the old secret
    /// stops matching at once. Returns the key's display name.
    pub async fn rotate_pool_api_key(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        key_id: &str,
        new_prefix: &str,
        new_hash: &str,
    ) -> StoreResult<String> {
        // Read before the transaction: on SQLite a transaction that reads
        // first cannot always upgrade to a write. The UPDATE below only
        // matches the prefix read here, so a concurrent rotation is not lost.
        let old: Option<(String, String)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT key_prefix, display_name FROM api_keys WHERE id = $1 AND pool_id = $2 AND status <> 'revoked'")
            .bind(key_id).bind(pool_id).fetch_optional(pool).await)?;
        let Some((old_prefix, name)) = old else {
            return Err(StoreError::NotFound("unrevoked API key in this Pool"));
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE api_keys SET key_prefix = $3, key_hash = $4, updated_at = $5
                 WHERE id = $1 AND pool_id = $2 AND key_prefix = $6 AND status <> 'revoked'")
                .bind(key_id).bind(pool_id).bind(new_prefix).bind(new_hash).bind(now_ms()).bind(&old_prefix)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "API key"))?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("unrevoked API key in this Pool"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "api_key.rotate", target_kind: "api_key", target_id: Some(key_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["key_prefix", "key_hash"], "old_prefix": old_prefix, "prefix": new_prefix}),
            });
            tx.commit().await?;
            Ok(name)
        })
    }

    /// Deletes a key of `pool_id` whose prefix is `prefix` (`api_key.delete`),
    /// with its request history (the foreign keys cascade). The prefix is part
    /// of the condition so a key rotated meanwhile is not deleted by a stale
    /// confirmation.
    pub async fn delete_pool_api_key(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        key_id: &str,
        prefix: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let name: Option<(String,)> = sqlx::query_as(
                "DELETE FROM api_keys WHERE id = $1 AND pool_id = $2 AND key_prefix = $3 RETURNING display_name")
                .bind(key_id).bind(pool_id).bind(prefix).fetch_optional(&mut *tx).await?;
            let Some((name,)) = name else {
                return Err(StoreError::NotFound("API key with this prefix in this Pool"));
            };
            insert_audit!(tx, AuditEntry {
                actor, action: "api_key.delete", target_kind: "api_key", target_id: Some(key_id), pool_id: Some(pool_id),
                details: serde_json::json!({"prefix": prefix, "display_name": name}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every operator with the names of their assigned Pools, by email.
    pub async fn list_operators(&self) -> StoreResult<Vec<OperatorSummary>> {
        let (operators, pools) = with_pool!(self, pool => {
            let operators = sqlx::query_as::<_, (String, String, String, String, bool, i64, i64)>(
                "SELECT id, email, role, status, must_change_password, created_at,
                    (SELECT COUNT(*) FROM operator_totp t WHERE t.operator_id = operators.id AND t.enabled_at IS NOT NULL)
                 FROM operators ORDER BY email, id")
                .fetch_all(pool).await?;
            let pools = sqlx::query_as::<_, (String, String, String)>(
                "SELECT op.operator_id, p.id, p.name FROM operator_pools op JOIN pools p ON p.id = op.pool_id
                 ORDER BY p.name, p.id")
                .fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((operators, pools))
        })?;
        Ok(operators
            .into_iter()
            .map(
                |(id, email, role, status, must_change_password, created_at, totp)| {
                    OperatorSummary {
                        totp_enabled: totp > 0,
                        pools: pools
                            .iter()
                            .filter(|(operator, _, _)| operator == &id)
                            .map(|(_, pool_id, name)| (pool_id.clone(), name.clone()))
                            .collect(),
                        id,
                        email,
                        role,
                        status,
                        must_change_password,
                        created_at,
                    }
                },
            )
            .collect())
    }

    /// Creates an operator who must change the (temporary) password at first
    /// sign-in, assigned to `pool_ids`, with one `operator.create` event.
    pub async fn create_operator_with_pools(
        &self,
        actor: &AuditActor,
        email: &str,
        password_hash: &str,
        role: &str,
        pool_ids: &[String],
    ) -> StoreResult<String> {
        let id = new_id();
        let now = now_ms();
        let email = email.trim().to_ascii_lowercase();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO operators (id, email, password_hash, role, status, must_change_password, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'active', TRUE, $5, $5)")
                .bind(&id).bind(&email).bind(password_hash).bind(role).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::from_insert(e, "operator with this email"))?;
            for pool_id in pool_ids {
                let inserted = sqlx::query(
                    "INSERT INTO operator_pools (operator_id, pool_id, created_at)
                     SELECT $1, p.id, $3 FROM pools p WHERE p.id = $2")
                    .bind(&id).bind(pool_id).bind(now)
                    .execute(&mut *tx).await
                    .map_err(|e| StoreError::from_insert(e, "Pool assignment"))?.rows_affected();
                if inserted != 1 {
                    return Err(StoreError::NotFound("Pool"));
                }
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "operator.create", target_kind: "operator", target_id: Some(&id), pool_id: None,
                details: serde_json::json!({"role": role, "pool_ids": pool_ids,
                    "fields": ["email", "role", "password", "pools"], "must_change_password": true}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Replaces an admin's assigned Pools (`operator.update`, listing the
    /// Pools added and removed). Returns (added, removed); an unknown Pool id
    /// refuses the whole change, and an owner has no assignments to change.
    pub async fn set_operator_pools(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        pool_ids: &[String],
    ) -> StoreResult<(Vec<String>, Vec<String>)> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let touched = sqlx::query(
                "UPDATE operators SET updated_at = $2 WHERE id = $1 AND role = 'admin'")
                .bind(operator_id).bind(now).execute(&mut *tx).await?.rows_affected();
            if touched != 1 {
                return Err(StoreError::NotFound("admin"));
            }
            let current: Vec<(String,)> = sqlx::query_as(
                "SELECT pool_id FROM operator_pools WHERE operator_id = $1")
                .bind(operator_id).fetch_all(&mut *tx).await?;
            let current: Vec<String> = current.into_iter().map(|(p,)| p).collect();
            let added: Vec<String> = pool_ids.iter().filter(|p| !current.contains(p)).cloned().collect();
            let removed: Vec<String> = current.iter().filter(|p| !pool_ids.contains(p)).cloned().collect();
            for pool_id in &added {
                let inserted = sqlx::query(
                    "INSERT INTO operator_pools (operator_id, pool_id, created_at)
                     SELECT $1, p.id, $3 FROM pools p WHERE p.id = $2")
                    .bind(operator_id).bind(pool_id).bind(now)
                    .execute(&mut *tx).await?.rows_affected();
                if inserted != 1 {
                    return Err(StoreError::NotFound("Pool"));
                }
            }
            for pool_id in &removed {
                sqlx::query("DELETE FROM operator_pools WHERE operator_id = $1 AND pool_id = $2")
                    .bind(operator_id).bind(pool_id).execute(&mut *tx).await?;
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "operator.update", target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["pools"], "pools_added": added, "pools_removed": removed}),
            });
            tx.commit().await?;
            Ok((added, removed))
        })
    }

    /// Deactivates (`deactivated`) or reactivates (`active`) an operator
    /// (`operator.deactivate` / `operator.reactivate`). Deactivation revokes
    /// their sessions in the same transaction, and is refused for the last
    /// active owner.
    pub async fn set_operator_status(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        status: &str,
    ) -> StoreResult<OperatorStatusChange> {
        let (action, from) = match status {
            "deactivated" => ("operator.deactivate", "active"),
            "active" => ("operator.reactivate", "deactivated"),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "unknown operator status {status}"
                )));
            }
        };
        let now = now_ms();
        let postgres = matches!(self, Store::Postgres(_));
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                // Lock the active owners so two owners deactivating each
                // other at once cannot both pass the last-owner guard. SQLite
                // serializes writers, and the UPDATE below is its first
                // statement, so the guard inside it is enough there.
                sqlx::query("SELECT id FROM operators WHERE role = 'owner' AND status = 'active' FOR UPDATE")
                    .fetch_all(&mut *tx).await?;
            }
            let changed = sqlx::query(
                "UPDATE operators SET status = $2, updated_at = $3
                 WHERE id = $1 AND status = $4
                   AND NOT ($2 = 'deactivated' AND role = 'owner' AND NOT EXISTS (
                       SELECT 1 FROM operators o WHERE o.role = 'owner' AND o.status = 'active' AND o.id <> $1))")
                .bind(operator_id).bind(status).bind(now).bind(from)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                let current: Option<(String,)> = sqlx::query_as("SELECT status FROM operators WHERE id = $1")
                    .bind(operator_id).fetch_optional(&mut *tx).await?;
                return match current {
                    None => Err(StoreError::NotFound("operator")),
                    Some((current,)) if current != from => Ok(OperatorStatusChange::AlreadyThere),
                    Some(_) => Ok(OperatorStatusChange::LastOwner),
                };
            }
            let revoked = if status == "deactivated" {
                sqlx::query("UPDATE admin_sessions SET revoked_at = $2 WHERE operator_id = $1 AND revoked_at IS NULL")
                    .bind(operator_id).bind(now).execute(&mut *tx).await?.rows_affected()
            } else {
                0
            };
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["status"], "status": status, "sessions_revoked": revoked}),
            });
            tx.commit().await?;
            Ok(OperatorStatusChange::Changed)
        })
    }

    /// Replaces an operator's password and clears the must-change flag
    /// (`auth.required_password_change` when the change was forced,
    /// `auth.password_change` otherwise). Every other session of the operator
    /// (all but `keep_session`) is revoked in the same transaction, and
    /// sign-ins waiting for a second factor are dropped: whoever knew the old
    /// password is signed out. Returns how many sessions were revoked.
    pub async fn change_operator_password(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        password_hash: &str,
        required: bool,
        keep_session: Option<&str>,
    ) -> StoreResult<u64> {
        let action = if required {
            "auth.required_password_change"
        } else {
            "auth.password_change"
        };
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE operators SET password_hash = $2, must_change_password = FALSE, updated_at = $3
                 WHERE id = $1 AND status = 'active'")
                .bind(operator_id).bind(password_hash).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("active operator"));
            }
            let revoked = sqlx::query(
                "UPDATE admin_sessions SET revoked_at = $3
                 WHERE operator_id = $1 AND id <> COALESCE(CAST($2 AS TEXT), '') AND revoked_at IS NULL")
                .bind(operator_id).bind(keep_session).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            sqlx::query("DELETE FROM login_challenges WHERE operator_id = $1")
                .bind(operator_id).execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["password"], "sessions_revoked": revoked}),
            });
            tx.commit().await?;
            Ok(revoked)
        })
    }

    /// Every audit event, counted (tests and header figures).
    pub async fn count_all_audit_events(&self) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM audit_events").fetch_one(pool).await)?;
        Ok(row.0)
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("A_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
