//! What the console's pages and JSON twins do, once: scope checks, input
//! validation and the store calls, returning [`ConsoleError`]s with precise
//! messages. Every change runs as the signed-in operator, so its audit event
//! (written by the store in the same transaction) names them.

use serde::Serialize;

use super::ConsoleError;
use super::session::Operator;
use crate::control;
use crate::domain::keys::{self, API_KEY_KIND};
use crate::runtime::Runtime;
use crate::store::{
    ApiKeySummary, AuditEventRow, AuditFilter, ImportedIdentity, OperatorStatusChange,
    OperatorSummary, PoolOverview, PoolRow, PoolUpstream, QuotaWindowRow, StoreError,
};

/// Default and largest audit pages.
pub const AUDIT_PAGE: i64 = 50;
pub const AUDIT_MAX_PAGE: i64 = 200;

/// Actions offered in the audit filter.
pub const AUDIT_ACTIONS: &[&str] = &[
    "auth.bootstrap",
    "auth.login",
    "auth.logout",
    "auth.password_change",
    "auth.required_password_change",
    "operator.create",
    "operator.update",
    "operator_token.create",
    "pool.create",
    "pool.update",
    "upstream.import",
    "upstream.credentials_replace",
    "upstream_account.pause",
    "upstream_account.reactivate",
    "api_key.create",
    "api_key.pause",
    "api_key.resume",
    "api_key.revoke",
    "api_key.rotate",
    "api_key.delete",
    "operator.deactivate",
    "operator.reactivate",
];

/// A Pool with everything its page shows.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDetail {
    pub pool: PoolRow,
    pub upstreams: Vec<PoolUpstream>,
    pub quota_windows: Vec<QuotaWindowRow>,
    pub api_keys: Vec<ApiKeySummary>,
}

/// The Pool with `pool_id` if this operator may see it; otherwise not found
/// (an admin learns nothing about Pools outside their assignment).
pub async fn visible_pool(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
) -> Result<PoolRow, ConsoleError> {
    rt.store
        .find_visible_pool(op.scope(), pool_id)
        .await?
        .ok_or_else(ConsoleError::pool_not_found)
}

pub async fn pools(rt: &Runtime, op: &Operator) -> Result<Vec<PoolOverview>, ConsoleError> {
    Ok(rt.store.list_pool_overviews(op.scope()).await?)
}

pub async fn pool_detail(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
) -> Result<PoolDetail, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    Ok(PoolDetail {
        upstreams: rt.store.list_pool_upstreams(&pool.id).await?,
        quota_windows: rt.store.list_pool_quota_windows(&pool.id).await?,
        api_keys: rt.store.list_pool_api_keys(&pool.id).await?,
        pool,
    })
}

/// Creates a Pool (owner only).
pub async fn create_pool(
    rt: &Runtime,
    op: &Operator,
    slug: &str,
    name: &str,
) -> Result<PoolRow, ConsoleError> {
    op.require_owner()?;
    let slug = slug.trim();
    let name = name.trim();
    control::validate_slug(slug)?;
    if name.is_empty() || name.chars().count() > 120 {
        return Err(ConsoleError::Invalid(
            "name must be 1-120 characters".into(),
        ));
    }
    match rt.store.create_pool(&op.actor(), slug, name).await {
        Ok(pool) => Ok(pool),
        Err(StoreError::Conflict(_)) => Err(ConsoleError::Conflict(format!(
            "a Pool with the slug \"{slug}\" already exists; choose another slug"
        ))),
        Err(other) => Err(other.into()),
    }
}

/// Validates a pasted `auth.json` and imports it into the Pool.
pub async fn import_upstream(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    auth_json: &str,
    label: Option<&str>,
) -> Result<ImportedIdentity, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let label = label.map(str::trim).filter(|l| !l.is_empty());
    if label.is_some_and(|l| l.chars().count() > 120) {
        return Err(ConsoleError::Invalid(
            "label must be at most 120 characters".into(),
        ));
    }
    let auth_json = auth_json.trim();
    if auth_json.is_empty() {
        return Err(ConsoleError::Invalid(
            "invalid auth.json: nothing was pasted".into(),
        ));
    }
    let parsed = control::parse_auth_json(auth_json, label)?;
    let imported =
        control::import_auth_json(&rt.store, &rt.secret_box, &op.actor(), &pool.id, &parsed)
            .await?;
    rt.invalidate_caches();
    Ok(imported)
}

/// Pauses or reactivates an account of the Pool.
pub async fn set_upstream_status(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
    status: &str,
) -> Result<(), ConsoleError> {
    if status != "paused" && status != "active" {
        return Err(ConsoleError::Invalid(
            "status must be paused or active".into(),
        ));
    }
    let pool = visible_pool(rt, op, pool_id).await?;
    rt.store
        .set_pool_upstream_status(&op.actor(), &pool.id, identity_id, status)
        .await?;
    rt.invalidate_caches();
    Ok(())
}

/// Creates an API key; returns (id, raw key shown once).
pub async fn create_key(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    name: &str,
) -> Result<(PoolRow, String, String), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let (id, raw) =
        control::create_api_key(&rt.store, &op.actor(), &pool.id, name, None, None).await?;
    Ok((pool, id, raw))
}

/// Pauses, resumes or revokes an API key of the Pool.
pub async fn set_key_status(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    key_id: &str,
    status: &str,
) -> Result<(), ConsoleError> {
    if !matches!(status, "paused" | "active" | "revoked") {
        return Err(ConsoleError::Invalid(
            "status must be paused, active or revoked".into(),
        ));
    }
    let pool = visible_pool(rt, op, pool_id).await?;
    rt.store
        .set_pool_api_key_status(&op.actor(), &pool.id, key_id, status)
        .await?;
    rt.invalidate_caches();
    Ok(())
}

/// Gives a key of the Pool a new secret; returns (Pool, key name, raw key
/// shown once). The runtime's key cache is emptied so the old secret stops
/// authenticating on this instance at once.
pub async fn rotate_key(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    key_id: &str,
) -> Result<(PoolRow, String, String), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let fresh = keys::generate(API_KEY_KIND);
    let name = rt
        .store
        .rotate_pool_api_key(
            &op.actor(),
            &pool.id,
            key_id,
            &fresh.prefix,
            &fresh.secret_hash,
        )
        .await?;
    rt.invalidate_caches();
    Ok((pool, name, fresh.raw))
}

/// Deletes a key of the Pool, with its request history, when `typed_prefix`
/// is exactly the key's prefix.
pub async fn delete_key(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    key_id: &str,
    typed_prefix: &str,
) -> Result<ApiKeySummary, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let key = rt
        .store
        .find_pool_api_key(&pool.id, key_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("no API key with this id in this Pool".into()))?;
    let typed = typed_prefix.trim();
    if typed != key.key_prefix {
        let what = if typed.is_empty() {
            "nothing was typed".to_owned()
        } else {
            format!("\"{typed}\" does not match")
        };
        return Err(ConsoleError::Invalid(format!(
            "to delete the API key \"{}\", type its prefix {} exactly; {what}. Nothing was deleted.",
            key.display_name, key.key_prefix
        )));
    }
    rt.store
        .delete_pool_api_key(&op.actor(), &pool.id, &key.id, &key.key_prefix)
        .await?;
    rt.invalidate_caches();
    Ok(key)
}

/// Every operator (owner only).
pub async fn operators(rt: &Runtime, op: &Operator) -> Result<Vec<OperatorSummary>, ConsoleError> {
    op.require_owner()?;
    Ok(rt.store.list_operators().await?)
}

/// Creates an operator with a generated temporary password (returned once,
/// to be changed at first sign-in) and, for admins, their Pools. Owners see
/// every Pool, so Pools chosen for an owner are refused rather than ignored.
pub async fn create_operator(
    rt: &Runtime,
    op: &Operator,
    email: &str,
    role: &str,
    pool_ids: &[String],
) -> Result<(String, String), ConsoleError> {
    op.require_owner()?;
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(ConsoleError::Invalid(
            "email must be an address like name@example.com".into(),
        ));
    }
    match role {
        "admin" => {}
        "owner" if pool_ids.is_empty() => {}
        "owner" => {
            return Err(ConsoleError::Invalid(
                "an owner sees every Pool; leave the Pools unticked for an owner".into(),
            ));
        }
        _ => return Err(ConsoleError::Invalid("role must be owner or admin".into())),
    }
    let mut pools = pool_ids.to_vec();
    pools.sort();
    pools.dedup();
    let password = control::generate_password();
    let for_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || control::hash_password(&for_hash))
        .await
        .map_err(|_| ConsoleError::Internal)??;
    match rt
        .store
        .create_operator_with_pools(&op.actor(), email, &hash, role, &pools)
        .await
    {
        Ok(id) => Ok((id, password)),
        Err(StoreError::Conflict(_)) => Err(ConsoleError::Conflict(format!(
            "an operator with the email {} already exists",
            email.to_ascii_lowercase()
        ))),
        Err(StoreError::NotFound(_)) => Err(ConsoleError::Invalid(
            "one of the chosen Pools does not exist (any more); reload the page".into(),
        )),
        Err(other) => Err(other.into()),
    }
}

/// Deactivates (`deactivated`) or reactivates (`active`) an operator.
pub async fn set_operator_status(
    rt: &Runtime,
    op: &Operator,
    operator_id: &str,
    status: &str,
) -> Result<(), ConsoleError> {
    op.require_owner()?;
    if status != "deactivated" && status != "active" {
        return Err(ConsoleError::Invalid(
            "status must be deactivated or active".into(),
        ));
    }
    let last_owner = || {
        ConsoleError::Conflict(
            "the last active owner cannot be deactivated; create or reactivate another owner first"
                .into(),
        )
    };
    // The acting owner is active, so the last active owner can only be
    // reached by deactivating oneself; say which rule applies.
    if status == "deactivated" && operator_id == op.id {
        let owners = rt
            .store
            .list_operators()
            .await?
            .iter()
            .filter(|o| o.role == "owner" && o.status == "active")
            .count();
        return Err(if owners <= 1 {
            last_owner()
        } else {
            ConsoleError::Conflict(
                "you cannot deactivate yourself; ask another owner to do it".into(),
            )
        });
    }
    match rt
        .store
        .set_operator_status(&op.actor(), operator_id, status)
        .await?
    {
        OperatorStatusChange::Changed => Ok(()),
        OperatorStatusChange::AlreadyThere => Err(ConsoleError::Conflict(format!(
            "the operator is already {status}"
        ))),
        OperatorStatusChange::LastOwner => Err(last_owner()),
    }
}

/// Parses a `<time>_<id>` audit cursor.
pub fn parse_cursor(text: &str) -> Option<(i64, String)> {
    let (at, id) = text.split_once('_')?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// A page of audit events visible to this operator, and the cursor of the next.
pub async fn audit_events(
    rt: &Runtime,
    op: &Operator,
    filter: &AuditFilter,
    limit: i64,
) -> Result<(Vec<AuditEventRow>, Option<String>), ConsoleError> {
    let limit = limit.clamp(1, AUDIT_MAX_PAGE);
    let rows = rt
        .store
        .list_audit_events(op.scope(), filter, limit)
        .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| format!("{}_{}", r.occurred_at, r.id))
    } else {
        None
    };
    Ok((rows, next))
}
