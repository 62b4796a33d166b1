//! What the console's pages and JSON twins do, once: scope checks, input
//! validation and the store calls, returning [`ConsoleError`]s with precise
//! messages. Every change runs as the signed-in operator, so its audit event
//! (written by the store in the same transaction) names them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ConsoleError;
use super::session::Operator;
use super::views::Readiness;
use crate::control;
use crate::domain::keys::{self, API_KEY_KIND};
use crate::runtime::Runtime;
use crate::store::{
    ApiKeySummary, AuditEventRow, AuditFilter, ImportedIdentity, OperatorStatusChange,
    OperatorSummary, PoolOverview, PoolRoutingSettings, PoolRow, PoolSettingsChange,
    PoolStatusChange, PoolUpstream, QuotaWindowRow, StoreError,
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
    "auth.second_factor_failed",
    "auth.required_password_change",
    "auth.totp_setup",
    "auth.totp_enrolled",
    "auth.totp_disabled",
    "auth.recovery_code_used",
    "auth.session_revoked",
    "auth.sessions_revoked",
    "operator.create",
    "operator.update",
    "operator_token.create",
    "operator_token.revoke",
    "pool.create",
    "pool.update",
    "pool.routing_update",
    "pool.disable",
    "pool.enable",
    "pool.archive",
    "upstream.import",
    "upstream.credentials_replace",
    "upstream_account.pause",
    "upstream_account.reactivate",
    "upstream_account.rename",
    "upstream_account.refresh",
    "upstream_account.delete",
    "upstream_account.device_link_start",
    "upstream_account.oauth_device_link",
    "pool.account_assign",
    "api_key.create",
    "api_key.pause",
    "api_key.resume",
    "api_key.revoke",
    "api_key.rotate",
    "api_key.delete",
    "operator.deactivate",
    "operator.reactivate",
    "operator.totp_reset",
    "api_key.status_change",
    "api_key.update",
    "api_key.policy_update",
    "pricing.import",
    "rollups.rebuild",
];

/// Outcomes offered in the audit filter.
pub const AUDIT_OUTCOMES: &[&str] = &["succeeded", "failed"];

/// Target kinds offered in the audit filter.
pub const AUDIT_TARGET_KINDS: &[&str] = &[
    "api_key",
    "operator",
    "operator_token",
    "pool",
    "pricing_snapshot",
    "rollups",
    "session",
    "upstream_identity",
    "upstream_link_flow",
];

/// A Pool with everything its page shows.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDetail {
    pub pool: PoolRow,
    pub settings: PoolRoutingSettings,
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

/// Hours in the Pools list's traffic chart, and in its "recent" figures.
pub const TRAFFIC_HOURS: usize = 24;
pub const RECENT_HOURS: i64 = 5;

/// A Pool with its health at a glance: the list's figures plus the last
/// 24 hours of traffic, oldest hour first (from the hourly rollups).
#[derive(Debug, Clone, Serialize)]
pub struct PoolHealth {
    #[serde(flatten)]
    pub pool: PoolOverview,
    pub requests_last_5h: i64,
    pub failed_last_5h: i64,
    pub tokens_last_5h: i64,
    pub hourly: Vec<HourTraffic>,
}

/// One hour of a Pool's traffic.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HourTraffic {
    pub hour_start: i64,
    pub requests: i64,
    pub failed: i64,
    pub tokens: i64,
}

pub async fn pools_with_health(
    rt: &Runtime,
    op: &Operator,
) -> Result<Vec<PoolHealth>, ConsoleError> {
    let pools = rt.store.list_pool_overviews(op.scope()).await?;
    let current_hour = crate::store::hour_floor(crate::time::now_ms());
    let first_hour = current_hour - (TRAFFIC_HOURS as i64 - 1) * 3_600_000;
    let recent_from = current_hour - (RECENT_HOURS - 1) * 3_600_000;
    let traffic = rt.store.pool_traffic_by_hour(first_hour).await?;
    Ok(pools
        .into_iter()
        .map(|pool| {
            let mut hourly: Vec<HourTraffic> = (0..TRAFFIC_HOURS as i64)
                .map(|i| HourTraffic {
                    hour_start: first_hour + i * 3_600_000,
                    requests: 0,
                    failed: 0,
                    tokens: 0,
                })
                .collect();
            for t in traffic.iter().filter(|t| t.pool_id == pool.id) {
                let slot = ((t.hour_start - first_hour) / 3_600_000) as usize;
                if let Some(h) = hourly.get_mut(slot) {
                    h.requests += t.requests;
                    h.failed += t.failed;
                    h.tokens += t.tokens;
                }
            }
            let recent = hourly.iter().filter(|h| h.hour_start >= recent_from);
            let (requests, failed, tokens) = recent.fold((0, 0, 0), |(r, f, t), h| {
                (r + h.requests, f + h.failed, t + h.tokens)
            });
            PoolHealth {
                pool,
                requests_last_5h: requests,
                failed_last_5h: failed,
                tokens_last_5h: tokens,
                hourly,
            }
        })
        .collect())
}

pub async fn pool_detail(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
) -> Result<PoolDetail, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    Ok(PoolDetail {
        settings: rt.store.pool_routing_settings(&pool.id).await?,
        upstreams: rt.store.list_pool_upstreams(&pool.id).await?,
        quota_windows: rt.store.list_pool_quota_windows(&pool.id).await?,
        api_keys: rt.store.list_pool_api_keys(&pool.id).await?,
        pool,
    })
}

/// How the router sees each account of the Pool right now, by identity id.
pub async fn readiness(
    rt: &Runtime,
    pool_id: &str,
) -> Result<BTreeMap<String, Readiness>, ConsoleError> {
    let Some(snapshot) = rt.pool(pool_id).await? else {
        return Ok(BTreeMap::new());
    };
    let now = rt.now_secs();
    Ok(snapshot
        .candidates
        .iter()
        .map(|c| {
            let (state, reason, cooling_secs) = if let Some(why) = c.exclusion {
                ("excluded", why.replace('_', " "), None)
            } else if c.identity.is_exhausted(now) {
                (
                    "cooling_down",
                    "quota exhausted".to_owned(),
                    Some((c.identity.exhausted_until() - now).max(0)),
                )
            } else {
                ("ready", String::new(), None)
            };
            let r = Readiness {
                state,
                reason,
                cooling_secs,
                circuits: rt
                    .health
                    .open_circuits(&c.assignment_id, now)
                    .into_iter()
                    .map(|(model, class, secs)| (format!("{model} ({class})"), secs))
                    .collect(),
                demoted: rt.health.is_demoted(&c.assignment_id, now),
                last_success: rt
                    .health
                    .last_success(&c.assignment_id)
                    .map(|at| super::views::ago((now - at) * 1000)),
            };
            (c.identity.id.clone(), r)
        })
        .collect())
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
    spec: &control::KeySpec,
) -> Result<(PoolRow, String, String), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    super::key_wizard::validate_spec(spec).map_err(ConsoleError::Invalid)?;
    let (id, raw) = control::create_api_key_with(&rt.store, &op.actor(), &pool.id, spec).await?;
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

/// Replaces an admin's assigned Pools (owner only). Their open sessions see
/// the new scope on their next request.
pub async fn set_operator_pools(
    rt: &Runtime,
    op: &Operator,
    operator_id: &str,
    pool_ids: &[String],
) -> Result<(Vec<String>, Vec<String>), ConsoleError> {
    op.require_owner()?;
    let mut pools = pool_ids.to_vec();
    pools.sort();
    pools.dedup();
    match rt
        .store
        .set_operator_pools(&op.actor(), operator_id, &pools)
        .await
    {
        Ok(changed) => Ok(changed),
        Err(StoreError::NotFound("admin")) => Err(ConsoleError::NotFound(
            "no admin with this id (an owner sees every Pool and has no assignments)".into(),
        )),
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
/// Turns off another operator's two-factor sign-in (owner only), e.g.
/// after a lost authenticator; they sign in with the password alone again.
pub async fn reset_operator_totp(
    rt: &Runtime,
    op: &Operator,
    operator_id: &str,
) -> Result<(), ConsoleError> {
    op.require_owner()?;
    match rt.store.reset_operator_totp(&op.actor(), operator_id).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(ConsoleError::Conflict(
            "two-factor sign-in is not on for this operator; nothing was changed".into(),
        )),
        Err(other) => Err(other.into()),
    }
}

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

/// Query parameters of the audit list that page rather than filter.
const AUDIT_NOT_FILTERS: &[&str] = &["limit", "before", "notice"];

fn id_token(v: &str) -> bool {
    v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `group.verb`: lowercase letters and underscores around one dot.
fn action_token(v: &str) -> bool {
    v.len() <= 64
        && v.split_once('.').is_some_and(|(a, b)| {
            [a, b].iter().all(|part| {
                !part.is_empty() && part.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
            })
        })
}

/// The audit filter from query parameters, and a warning for each one that
/// was ignored (invalid or unknown), so the list still shows. A malformed
/// page cursor is an error: it only comes from the console's own links.
pub fn parse_audit_filters(
    params: &BTreeMap<String, String>,
) -> Result<(AuditFilter, Vec<String>), ConsoleError> {
    let mut filter = AuditFilter::default();
    let mut warnings = Vec::new();
    for (key, raw) in params {
        let value = raw.trim();
        if value.is_empty() || AUDIT_NOT_FILTERS.contains(&key.as_str()) {
            continue;
        }
        let mut warn = |why: &str| warnings.push(format!("{key}: {why}; this filter was ignored"));
        match key.as_str() {
            "pool_id" if id_token(value) => filter.pool_id = Some(value.to_owned()),
            "pool_id" => warn("not a Pool id"),
            "outcome" if AUDIT_OUTCOMES.contains(&value) => filter.outcome = Some(value.to_owned()),
            "outcome" => warn(&format!(
                "unknown outcome (use one of {})",
                AUDIT_OUTCOMES.join(", ")
            )),
            "action" if action_token(value) => filter.action = Some(value.to_owned()),
            "action" => warn("not an action name like pool.update"),
            "actor" if value.chars().count() <= 254 && !value.chars().any(char::is_control) => {
                filter.actor = Some(value.to_owned())
            }
            "actor" => warn("not an email or part of one"),
            "target_kind" if AUDIT_TARGET_KINDS.contains(&value) => {
                filter.target_kind = Some(value.to_owned())
            }
            "target_kind" => warn(&format!(
                "unknown target kind (use one of {})",
                AUDIT_TARGET_KINDS.join(", ")
            )),
            "target_id" if id_token(value) => filter.target_id = Some(value.to_owned()),
            "target_id" => warn("not a target id"),
            "date_from" => match crate::admin::request_logs::parse_utc_day(value) {
                Some(ms) => filter.occurred_from = Some(ms),
                None => warn("not a date (use YYYY-MM-DD, UTC)"),
            },
            "date_to" => match crate::admin::request_logs::parse_utc_day(value) {
                Some(ms) => filter.occurred_before = Some(ms + 86_400_000),
                None => warn("not a date (use YYYY-MM-DD, UTC)"),
            },
            _ => warnings.push(format!("{key}: unsupported filter; it was ignored")),
        }
    }
    if let Some(b) = params
        .get("before")
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
    {
        filter.before = Some(
            parse_cursor(b)
                .ok_or_else(|| ConsoleError::BadRequest("invalid page cursor".into()))?,
        );
    }
    Ok((filter, warnings))
}

/// One audit event, if this operator may see it (the list's rule); not
/// found otherwise.
pub async fn audit_event(
    rt: &Runtime,
    op: &Operator,
    id: &str,
) -> Result<AuditEventRow, ConsoleError> {
    rt.store
        .find_audit_event(op.scope(), id)
        .await?
        .ok_or_else(|| {
            ConsoleError::NotFound("audit event not found (or not visible to you)".into())
        })
}

/// Field names whose values never leave the store in event details.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "hash",
    "authorization",
    "cookie",
];

/// An event's details as JSON with any secret-looking value replaced by
/// `"[redacted]"` (details are written without secrets; this is the second
/// line of defence). Unparseable text is shown as a string.
pub fn sanitized_details(details: &str) -> serde_json::Value {
    fn clean(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_FIELDS.iter().any(|s| lower.contains(s)) && !v.is_array() {
                        *v = serde_json::Value::String("[redacted]".into());
                    } else {
                        clean(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(clean),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(details) {
        Ok(mut v) => {
            clean(&mut v);
            v
        }
        Err(_) => serde_json::Value::String(details.to_owned()),
    }
}

/// A requested change of a Pool's routing settings; `None` keeps the
/// current value (the JSON twin may send only what changes).
#[derive(Debug, Clone, Default)]
pub struct PoolSettingsInput {
    pub routing_strategy: Option<String>,
    pub bridge_ring_size: Option<String>,
    pub sticky_websocket_sessions: Option<bool>,
    pub sticky_http_sessions: Option<bool>,
    pub prompt_cache_affinity_enabled: Option<bool>,
    pub v1_compatibility_enabled: Option<bool>,
}

/// Validates and saves a Pool's routing settings; returns the changed
/// fields (empty when nothing differed and nothing was written).
pub async fn update_pool_settings(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    input: &PoolSettingsInput,
) -> Result<Vec<String>, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let archived = || {
        ConsoleError::Conflict(
            "this Pool is archived; its settings can no longer be changed".into(),
        )
    };
    if pool.status == "archived" {
        return Err(archived());
    }
    let current = rt.store.pool_routing_settings(&pool.id).await?;
    let strategy = input
        .routing_strategy
        .as_deref()
        .map(str::trim)
        .unwrap_or(&current.routing_strategy)
        .to_owned();
    let ring = match input.bridge_ring_size.as_deref().map(str::trim) {
        None => current.bridge_ring_size,
        Some(text) => text.parse::<i64>().map_err(|_| {
            ConsoleError::Invalid(format!(
                "ring size must be a whole number between 1 and 64; \"{text}\" is not"
            ))
        })?,
    };
    control::validate_routing(&strategy, ring)?;
    let new = PoolRoutingSettings {
        routing_strategy: strategy,
        bridge_ring_size: ring,
        sticky_websocket_sessions: input
            .sticky_websocket_sessions
            .unwrap_or(current.sticky_websocket_sessions),
        sticky_http_sessions: input
            .sticky_http_sessions
            .unwrap_or(current.sticky_http_sessions),
        prompt_cache_affinity_enabled: input
            .prompt_cache_affinity_enabled
            .unwrap_or(current.prompt_cache_affinity_enabled),
        v1_compatibility_enabled: input
            .v1_compatibility_enabled
            .unwrap_or(current.v1_compatibility_enabled),
    };
    match rt
        .store
        .update_pool_routing_settings(&op.actor(), &pool.id, &new)
        .await
    {
        Ok(PoolSettingsChange::Changed(fields)) => {
            rt.invalidate_caches();
            Ok(fields)
        }
        Ok(PoolSettingsChange::Unchanged) => Ok(Vec::new()),
        Ok(PoolSettingsChange::Archived) => Err(archived()),
        Err(StoreError::Conflict(_)) => Err(ConsoleError::Conflict(
            "the settings were changed meanwhile by someone else; reload the page and try again"
                .into(),
        )),
        Err(other) => Err(other.into()),
    }
}

/// Disables (`disabled`), enables (`active`) or archives (`archived`) a
/// Pool. Archiving is owner-only, final, revokes the Pool's keys and needs
/// the Pool's slug typed as `confirm_slug`. The runtime's caches are emptied
/// so the change applies to the next request on this instance (others
/// follow within the snapshot TTL).
pub async fn set_pool_status(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    status: &str,
    confirm_slug: &str,
) -> Result<PoolRow, ConsoleError> {
    if !matches!(status, "active" | "disabled" | "archived") {
        return Err(ConsoleError::Invalid(
            "status must be active, disabled or archived".into(),
        ));
    }
    let pool = visible_pool(rt, op, pool_id).await?;
    if status == "archived" {
        op.require_owner()?;
        let typed = confirm_slug.trim();
        if typed != pool.slug {
            let what = if typed.is_empty() {
                "nothing was typed".to_owned()
            } else {
                format!("\"{typed}\" does not match")
            };
            return Err(ConsoleError::Invalid(format!(
                "to archive the Pool \"{}\", type its slug {} exactly; {what}. Nothing was changed.",
                pool.name, pool.slug
            )));
        }
    }
    let change = rt
        .store
        .set_pool_status(&op.actor(), &pool.id, status)
        .await;
    match change {
        Ok(PoolStatusChange::Changed { .. }) => {
            rt.invalidate_caches();
            Ok(PoolRow {
                status: status.to_owned(),
                ..pool
            })
        }
        Ok(PoolStatusChange::AlreadyThere) => Err(ConsoleError::Conflict(format!(
            "the Pool is already {status}"
        ))),
        Ok(PoolStatusChange::Archived) => Err(ConsoleError::Conflict(
            "this Pool is archived; archiving is final and it cannot be enabled or disabled".into(),
        )),
        Err(StoreError::Conflict(_)) => Err(ConsoleError::Conflict(
            "the Pool's status was changed meanwhile by someone else; reload the page and try again"
                .into(),
        )),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn audit_filters_keep_valid_values_and_name_the_ignored_ones() {
        let (filter, warnings) = parse_audit_filters(&params(&[
            ("pool_id", "p-1"),
            ("outcome", "failed"),
            ("action", "pool.update"),
            ("actor", " owner@ "),
            ("target_kind", "api_key"),
            ("target_id", "k-1"),
            ("date_from", "2026-12-04"),
            ("date_to", "2026-12-04"),
            ("limit", "10"),
        ]))
        .expect("parsed");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(filter.actor.as_deref(), Some("owner@"));
        let from = filter.occurred_from.expect("from");
        assert_eq!(filter.occurred_before, Some(from + 86_400_000));
        let (filter, warnings) = parse_audit_filters(&params(&[
            ("outcome", "maybe"),
            ("action", "Pool Update"),
            ("target_kind", "planet"),
            ("target_id", "a b"),
            ("date_to", "2026-02-30"),
            ("colour", "red"),
        ]))
        .expect("parsed");
        assert_eq!(filter, AuditFilter::default());
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        assert!(parse_audit_filters(&params(&[("before", "nope")])).is_err());
    }

    #[test]
    fn details_are_sanitized_recursively() {
        let v = sanitized_details(
            r#"{"password":"p","fields":["password"],"nested":{"access_token":"t","ok":1}}"#,
        );
        assert_eq!(v["password"], "[redacted]");
        assert_eq!(v["fields"][0], "password");
        assert_eq!(v["nested"]["access_token"], "[redacted]");
        assert_eq!(v["nested"]["ok"], 1);
        assert_eq!(sanitized_details("not json"), "not json");
    }
}
