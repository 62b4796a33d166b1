//! Upstream accounts after import: renaming, removal from a Pool, the audit
//! record of an operator's "refresh now", and device-code links in progress
//! (`upstream_link_flows`). Every change writes its audit event in the same
//! transaction; every statement is limited to accounts assigned to the Pool
//! named in the request, so a Pool-scoped operator cannot reach another
//! Pool's accounts by id.

use serde::Serialize;
use sqlx::FromRow;

use super::control::{insert_audit, refuse_archived_pool};
use super::{
    AuditActor, AuditEntry, PoolScope, SealedSecret, Store, StoreError, StoreResult, with_pool,
};
use crate::time::{new_id, now_ms};

/// A device-code link, as the console shows and polls it.
#[derive(Debug, Clone, FromRow)]
pub struct LinkFlowRow {
    pub id: String,
    pub pool_id: String,
    pub label: Option<String>,
    pub user_code: String,
    pub verification_url: String,
    pub secret_ciphertext: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub secret_key_version: i64,
    pub poll_interval_secs: i64,
    /// `pending`, `completed`, `failed` or `expired`.
    pub status: String,
    pub identity_id: Option<String>,
    pub error_code: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What the account changes need to know of an account in a Pool.
#[derive(Debug, Clone, FromRow)]
pub struct PoolUpstreamAccount {
    pub label: String,
    pub chatgpt_account_id: String,
    pub chatgpt_user_id: Option<String>,
    pub base_url: Option<String>,
    pub auth_base_url: Option<String>,
}

/// An account that could be added to a Pool: it serves another Pool the
/// operator may see (the owner sees every account).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AssignableUpstream {
    pub identity_id: String,
    pub label: String,
    pub email: Option<String>,
    pub plan_type: Option<String>,
}

/// Accounts not in Pool `$2` that the operator `$1` (NULL: owner) may reach
/// through another of their Pools.
const ASSIGNABLE: &str = "NOT EXISTS (SELECT 1 FROM pool_assignments a WHERE a.identity_id = i.id AND a.pool_id = $2)
    AND (CAST($1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM pool_assignments a
        JOIN operator_pools op ON op.pool_id = a.pool_id WHERE a.identity_id = i.id AND op.operator_id = $1))";

/// A new device-code link.
#[derive(Debug, Clone)]
pub struct NewLinkFlow<'a> {
    pub pool_id: &'a str,
    pub label: Option<&'a str>,
    pub user_code: &'a str,
    pub verification_url: &'a str,
    pub poll_interval_secs: i64,
    pub expires_at: i64,
}

/// Audit outcome of an operator's "refresh now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Succeeded,
    Failed,
}

const IN_POOL: &str =
    "EXISTS (SELECT 1 FROM pool_assignments a WHERE a.identity_id = $1 AND a.pool_id = $2)";

impl Store {
    /// The account `identity_id` if it is assigned to `pool_id`.
    pub async fn find_pool_upstream(
        &self,
        pool_id: &str,
        identity_id: &str,
    ) -> StoreResult<Option<PoolUpstreamAccount>> {
        let sql = format!(
            "SELECT label, chatgpt_account_id, chatgpt_user_id, base_url, auth_base_url
             FROM upstream_identities WHERE id = $1 AND {IN_POOL}"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PoolUpstreamAccount>(sqlx::AssertSqlSafe(sql))
            .bind(identity_id).bind(pool_id).fetch_optional(pool).await)?,
        )
    }

    /// Accounts that may be added to `pool_id` in `scope`, by label.
    pub async fn list_assignable_upstreams(
        &self,
        scope: PoolScope<'_>,
        pool_id: &str,
    ) -> StoreResult<Vec<AssignableUpstream>> {
        let sql = format!(
            "SELECT i.id AS identity_id, i.label, i.email, i.plan_type FROM upstream_identities i
             WHERE {ASSIGNABLE} ORDER BY i.label, i.id"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, AssignableUpstream>(sqlx::AssertSqlSafe(sql))
            .bind(scope.operator()).bind(pool_id).fetch_all(pool).await)?,
        )
    }

    /// Adds an existing account to `pool_id` (it keeps serving its other
    /// Pools); it must be reachable in `scope`, and the Pool not archived.
    pub async fn assign_upstream(
        &self,
        actor: &AuditActor,
        scope: PoolScope<'_>,
        pool_id: &str,
        identity_id: &str,
    ) -> StoreResult<String> {
        let assignment_id = new_id();
        let sql = format!(
            "INSERT INTO pool_assignments (id, pool_id, identity_id, status, created_at)
             SELECT $3, $2, i.id, 'active', $4 FROM upstream_identities i WHERE i.id = $5 AND {ASSIGNABLE}"
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let added = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(scope.operator()).bind(pool_id).bind(&assignment_id).bind(now_ms()).bind(identity_id)
                .execute(&mut *tx).await?.rows_affected();
            refuse_archived_pool!(tx, pool_id);
            if added != 1 {
                return Err(StoreError::NotFound("account you can add to this Pool"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "pool.account_assign", target_kind: "upstream_identity",
                target_id: Some(identity_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["assignment"], "assignment_id": assignment_id}),
            });
            tx.commit().await?;
            Ok(assignment_id)
        })
    }

    /// Whether the account is assigned to a Pool outside `scope` (never for
    /// the owner's scope).
    pub async fn upstream_serves_pools_outside(
        &self,
        scope: PoolScope<'_>,
        identity_id: &str,
    ) -> StoreResult<bool> {
        let Some(operator) = scope.operator() else {
            return Ok(false);
        };
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM pool_assignments a WHERE a.identity_id = $1
               AND NOT EXISTS (SELECT 1 FROM operator_pools op WHERE op.operator_id = $2 AND op.pool_id = a.pool_id)")
            .bind(identity_id).bind(operator).fetch_one(pool).await)?;
        Ok(row.0 > 0)
    }

    /// Renames an account assigned to `pool_id`.
    pub async fn rename_pool_upstream(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity_id: &str,
        label: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE upstream_identities SET label = $3, updated_at = $4 WHERE id = $1 AND {IN_POOL}"
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(identity_id).bind(pool_id).bind(label).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("account in this Pool"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "upstream_account.rename", target_kind: "upstream_identity",
                target_id: Some(identity_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["label"], "label": label}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Removes an account from `pool_id`. When no other Pool uses it, the
    /// account and its sealed tokens are deleted too; request history keeps
    /// the account id. Returns whether the account itself was deleted.
    pub async fn delete_pool_upstream(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity_id: &str,
    ) -> StoreResult<bool> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("DELETE FROM pool_assignments WHERE identity_id = $1 AND pool_id = $2")
                .bind(identity_id).bind(pool_id)
                .execute(&mut *tx).await?.rows_affected();
            if removed != 1 {
                return Err(StoreError::NotFound("account in this Pool"));
            }
            let deleted = sqlx::query(
                "DELETE FROM upstream_identities WHERE id = $1
                   AND NOT EXISTS (SELECT 1 FROM pool_assignments a WHERE a.identity_id = $1)")
                .bind(identity_id)
                .execute(&mut *tx).await?.rows_affected() == 1;
            insert_audit!(tx, AuditEntry {
                actor, action: "upstream_account.delete", target_kind: "upstream_identity",
                target_id: Some(identity_id), pool_id: Some(pool_id),
                details: serde_json::json!({"fields": ["assignment"], "account_deleted": deleted}),
            });
            tx.commit().await?;
            Ok(deleted)
        })
    }

    /// Records an operator's "refresh now" of an account of `pool_id`, with
    /// what happened (`details` names steps and error codes, never tokens).
    pub async fn record_upstream_refresh(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        identity_id: &str,
        outcome: RefreshOutcome,
        details: serde_json::Value,
    ) -> StoreResult<()> {
        let outcome = match outcome {
            RefreshOutcome::Succeeded => "succeeded",
            RefreshOutcome::Failed => "failed",
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_audit!(tx, AuditEntry {
                actor, action: "upstream_account.refresh", target_kind: "upstream_identity",
                target_id: Some(identity_id), pool_id: Some(pool_id), details,
            }, outcome);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Starts a device-code link; `seal` receives the flow id and seals the
    /// device authorization id for it.
    pub async fn create_link_flow<F>(
        &self,
        actor: &AuditActor,
        flow: &NewLinkFlow<'_>,
        seal: F,
    ) -> StoreResult<String>
    where
        F: Fn(&str) -> Result<SealedSecret, String>,
    {
        let id = new_id();
        let now = now_ms();
        let sealed = seal(&id).map_err(StoreError::Corrupt)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO upstream_link_flows (id, pool_id, operator_id, label, user_code, verification_url,
                    secret_ciphertext, secret_nonce, secret_key_version, poll_interval_secs, status, created_at, expires_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12, $11)")
                .bind(&id).bind(flow.pool_id).bind(actor.id.as_deref()).bind(flow.label).bind(flow.user_code)
                .bind(flow.verification_url).bind(&sealed.ciphertext).bind(&sealed.nonce).bind(sealed.key_version)
                .bind(flow.poll_interval_secs).bind(now).bind(flow.expires_at)
                .execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action: "upstream_account.device_link_start", target_kind: "upstream_link_flow",
                target_id: Some(&id), pool_id: Some(flow.pool_id),
                details: serde_json::json!({"fields": ["user_code"], "label": flow.label}),
            });
            tx.commit().await?;
            Ok(id)
        })
    }

    /// A device-code link of `pool_id`.
    pub async fn find_link_flow(
        &self,
        pool_id: &str,
        flow_id: &str,
    ) -> StoreResult<Option<LinkFlowRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, LinkFlowRow>(
            "SELECT id, pool_id, label, user_code, verification_url, secret_ciphertext, secret_nonce, secret_key_version,
                    poll_interval_secs, status, identity_id, error_code, created_at, expires_at
             FROM upstream_link_flows WHERE id = $1 AND pool_id = $2")
            .bind(flow_id).bind(pool_id).fetch_optional(pool).await)?)
    }

    /// Takes the right to ask the identity provider about a pending link now:
    /// false when the last poll was less than `min_gap_ms` ago (the caller
    /// then answers "still pending" without asking).
    pub async fn claim_link_poll(
        &self,
        pool_id: &str,
        flow_id: &str,
        now_ms: i64,
        min_gap_ms: i64,
    ) -> StoreResult<bool> {
        let claimed = with_pool!(self, pool => sqlx::query(
            "UPDATE upstream_link_flows SET last_polled_at = $3
             WHERE id = $1 AND pool_id = $2 AND status = 'pending'
               AND (last_polled_at IS NULL OR last_polled_at <= $4)")
            .bind(flow_id).bind(pool_id).bind(now_ms).bind(now_ms - min_gap_ms)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(claimed == 1)
    }

    /// Ends a pending link without an account: `expired` (no audit event —
    /// nobody acted) or `failed` with the upstream's error code (audited as
    /// the operator's failed link).
    pub async fn end_link_flow(
        &self,
        actor: &AuditActor,
        pool_id: &str,
        flow_id: &str,
        status: &str,
        error_code: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE upstream_link_flows SET status = $3, error_code = $4, updated_at = $5
                 WHERE id = $1 AND pool_id = $2 AND status = 'pending'")
                .bind(flow_id).bind(pool_id).bind(status).bind(error_code).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::Refused("this device-code link was already completed or has ended"));
            }
            if status == "failed" {
                insert_audit!(tx, AuditEntry {
                    actor, action: "upstream_account.oauth_device_link", target_kind: "upstream_link_flow",
                    target_id: Some(flow_id), pool_id: Some(pool_id),
                    details: serde_json::json!({"error_code": error_code}),
                }, "failed");
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
