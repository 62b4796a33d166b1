//! The upstream-account changes after import — rename, refresh now, replace
//! credentials, delete — and device-code linking, as pages and JSON twins.
//! Each change is scoped to a Pool the operator may see and to accounts
//! assigned to that Pool; the rules live in the `*_upstream` functions here,
//! the SQL in `store::upstreams`, the identity-provider calls in
//! [`crate::device_link`].

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ConsoleError;
use super::actions::visible_pool;
use super::json::ApiError;
use super::pages::{PoolFormsEcho, refused};
use super::session::{ApiOperator, FormPost, JsonPost, Operator, PageOperator};
use super::views::{Chrome, format_time, render};
use crate::control;
use crate::crypto::KEY_VERSION;
use crate::device_link::{self, LINK_TTL_SECS, Poll};
use crate::runtime::Runtime;
use crate::store::{ImportVia, LinkFlowRow, NewLinkFlow, PoolRow, RefreshOutcome, SealedSecret};
use crate::time::now_ms;

fn clean_label(label: &str) -> Result<&str, ConsoleError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 120 {
        return Err(ConsoleError::Invalid(
            "label must be 1-120 characters".into(),
        ));
    }
    Ok(label)
}

/// Refuses an admin a change that would also change the account for Pools
/// they are not assigned to (its label and its tokens are shared).
async fn require_whole_account(
    rt: &Runtime,
    op: &Operator,
    identity_id: &str,
    what: &str,
) -> Result<(), ConsoleError> {
    if rt
        .store
        .upstream_serves_pools_outside(op.scope(), identity_id)
        .await?
    {
        return Err(ConsoleError::Forbidden(format!(
            "this account also serves Pools you are not assigned to; only the owner can {what}"
        )));
    }
    Ok(())
}

/// Adds an account that serves another of the operator's Pools to this one.
pub async fn assign_upstream(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
) -> Result<String, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    if identity_id.trim().is_empty() {
        return Err(ConsoleError::Invalid("choose an account to add".into()));
    }
    let assignment = rt
        .store
        .assign_upstream(&op.actor(), op.scope(), &pool.id, identity_id.trim())
        .await?;
    rt.invalidate_caches();
    Ok(assignment)
}

/// Renames an account of the Pool.
pub async fn rename_upstream(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
    label: &str,
) -> Result<(), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let label = clean_label(label)?;
    rt.store
        .find_pool_upstream(&pool.id, identity_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("no account in this Pool".into()))?;
    require_whole_account(rt, op, identity_id, "rename it").await?;
    rt.store
        .rename_pool_upstream(&op.actor(), &pool.id, identity_id, label)
        .await?;
    rt.invalidate_caches();
    Ok(())
}

/// Removes an account from the Pool; `confirm_label` must repeat its label.
/// Returns whether the account itself was deleted (no other Pool used it).
pub async fn delete_upstream(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
    confirm_label: &str,
) -> Result<bool, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let account = rt
        .store
        .find_pool_upstream(&pool.id, identity_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("no account in this Pool".into()))?;
    if confirm_label.trim() != account.label {
        return Err(ConsoleError::Invalid(format!(
            "type the account's label \"{}\" exactly to delete it",
            account.label
        )));
    }
    let deleted = rt
        .store
        .delete_pool_upstream(&op.actor(), &pool.id, identity_id)
        .await?;
    rt.invalidate_caches();
    Ok(deleted)
}

/// What "refresh now" did.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    pub quota_windows: usize,
}

/// Refreshes the account's tokens now and reads its quota windows; the
/// attempt is audited with its outcome. A failure is answered as a 502 with
/// the identity provider's error code.
pub async fn refresh_upstream(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
) -> Result<RefreshReport, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let snapshot = rt
        .pool(&pool.id)
        .await?
        .ok_or_else(ConsoleError::pool_not_found)?;
    let candidate = snapshot
        .candidates
        .iter()
        .find(|c| c.identity.id == identity_id)
        .cloned()
        .ok_or_else(|| ConsoleError::NotFound("no account in this Pool".into()))?;
    let generation = candidate.identity.credentials().generation;
    let failure = match rt.refresh(&candidate, generation).await {
        Err(err) => Some(("token_refresh", err.code().to_owned())),
        Ok(_) => match crate::jobs::read_account_usage(rt, &candidate).await {
            Err(err) => Some(("usage_read", err.to_string())),
            Ok(()) => None,
        },
    };
    rt.recorder.flush().await;
    rt.invalidate_caches();
    let actor = op.actor();
    match failure {
        None => {
            let windows = rt
                .store
                .list_pool_quota_windows(&pool.id)
                .await?
                .iter()
                .filter(|w| w.identity_id == identity_id)
                .count();
            rt.store
                .record_upstream_refresh(
                    &actor,
                    &pool.id,
                    identity_id,
                    RefreshOutcome::Succeeded,
                    json!({"steps": ["token_refresh", "usage_read"], "quota_windows": windows}),
                )
                .await?;
            Ok(RefreshReport {
                quota_windows: windows,
            })
        }
        Some((step, code)) => {
            let code: String = code.chars().take(120).collect();
            rt.store
                .record_upstream_refresh(
                    &actor,
                    &pool.id,
                    identity_id,
                    RefreshOutcome::Failed,
                    json!({"failed_step": step, "error_code": code}),
                )
                .await?;
            Err(ConsoleError::Upstream(format!(
                "refresh failed at {}: {code}{}",
                step.replace('_', " "),
                if step == "token_refresh" {
                    " — if the refresh token was revoked or reused, replace the account's credentials"
                } else {
                    ""
                }
            )))
        }
    }
}

/// Replaces an account's tokens with those of a fresh `auth.json` of the
/// same ChatGPT account.
pub async fn replace_credentials(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    identity_id: &str,
    auth_json: &str,
) -> Result<(), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let account = rt
        .store
        .find_pool_upstream(&pool.id, identity_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("no account in this Pool".into()))?;
    let auth_json = auth_json.trim();
    if auth_json.is_empty() {
        return Err(ConsoleError::Invalid(
            "invalid auth.json: nothing was pasted".into(),
        ));
    }
    let mut parsed = control::parse_auth_json(auth_json, Some(&account.label))?;
    require_whole_account(rt, op, identity_id, "replace its credentials").await?;
    if parsed.identity.chatgpt_account_id != account.chatgpt_account_id
        || parsed.identity.chatgpt_user_id.as_deref().unwrap_or("")
            != account.chatgpt_user_id.as_deref().unwrap_or("")
    {
        return Err(ConsoleError::Invalid(format!(
            "this auth.json belongs to another ChatGPT account or user than \"{}\"; import it as a new account instead",
            account.label
        )));
    }
    parsed.identity.base_url = account.base_url;
    parsed.identity.auth_base_url = account.auth_base_url;
    control::import_auth_json(&rt.store, &rt.secret_box, &op.actor(), &pool.id, &parsed).await?;
    rt.invalidate_caches();
    Ok(())
}

/// Starts a device-code link for the Pool.
pub async fn start_device_link(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    label: Option<&str>,
) -> Result<String, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    if pool.status == "archived" {
        return Err(ConsoleError::Conflict(
            "this Pool is archived: it takes no new accounts or keys".into(),
        ));
    }
    let label = match label.map(str::trim).filter(|l| !l.is_empty()) {
        Some(l) => Some(clean_label(l)?),
        None => None,
    };
    let auth_base = rt.settings.auth_base_url.trim_end_matches('/');
    let code = device_link::request_user_code(&rt.http, auth_base)
        .await
        .map_err(|e| ConsoleError::Upstream(e.to_string()))?;
    let flow = NewLinkFlow {
        pool_id: &pool.id,
        label,
        user_code: &code.user_code,
        verification_url: &code.verification_url,
        poll_interval_secs: code.interval_secs,
        expires_at: now_ms() + LINK_TTL_SECS * 1000,
    };
    let id = rt
        .store
        .create_link_flow(&op.actor(), &flow, |flow_id| {
            let (ciphertext, nonce) = rt
                .secret_box
                .seal(flow_id, code.device_auth_id.as_bytes())
                .map_err(|e| e.to_string())?;
            Ok(SealedSecret {
                ciphertext,
                nonce,
                key_version: KEY_VERSION,
            })
        })
        .await?;
    Ok(id)
}

async fn link_flow(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    flow_id: &str,
) -> Result<(PoolRow, LinkFlowRow), ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    let flow = rt
        .store
        .find_link_flow(&pool.id, flow_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("no device-code link with this id".into()))?;
    Ok((pool, flow))
}

/// Where a poll left the link.
#[derive(Debug)]
pub enum LinkState {
    Pending(Box<LinkFlowRow>),
    Linked { identity_id: String },
}

/// Polls a link once: still pending, or linked (the account imported, the
/// flow closed and the link audited in one transaction). An expired link is
/// closed; a refusal by the identity provider fails it (audited).
pub async fn poll_device_link(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    flow_id: &str,
) -> Result<LinkState, ConsoleError> {
    let (pool, flow) = link_flow(rt, op, pool_id, flow_id).await?;
    if flow.status != "pending" {
        return Err(ConsoleError::Conflict(format!(
            "this device-code link is {}; start a new one",
            flow.status
        )));
    }
    if flow.expires_at <= now_ms() {
        rt.store
            .end_link_flow(&op.actor(), &pool.id, &flow.id, "expired", "expired")
            .await?;
        return Err(ConsoleError::Conflict(
            "this device-code link expired before the code was entered; start a new one".into(),
        ));
    }
    // No faster than the provider's interval, however often we are asked
    // (a page left open in two tabs, a script): answer "pending" meanwhile.
    let gap_ms = (flow.poll_interval_secs * 1000).saturating_sub(250);
    if !rt
        .store
        .claim_link_poll(&pool.id, &flow.id, rt.now_ms(), gap_ms)
        .await?
    {
        return Ok(LinkState::Pending(Box::new(flow)));
    }
    let device_auth_id = rt
        .secret_box
        .open(&flow.id, &flow.secret_ciphertext, &flow.secret_nonce)
        .map_err(|_| ConsoleError::Internal)
        .and_then(|b| String::from_utf8(b).map_err(|_| ConsoleError::Internal))?;
    let auth_base = rt.settings.auth_base_url.trim_end_matches('/');
    let polled = device_link::poll(
        &rt.http,
        auth_base,
        &device_auth_id,
        &flow.user_code,
        flow.label.as_deref(),
    )
    .await;
    match polled {
        Ok(Poll::Pending) => Ok(LinkState::Pending(Box::new(flow))),
        Ok(Poll::Linked(parsed)) => {
            let imported = match control::import_tokens(
                &rt.store,
                &rt.secret_box,
                &op.actor(),
                &pool.id,
                &parsed,
                ImportVia::DeviceLink { flow_id: &flow.id },
            )
            .await
            {
                Ok(imported) => imported,
                Err(err) => {
                    // The code is spent upstream: the link cannot be retried.
                    let err = ConsoleError::from(err);
                    rt.store
                        .end_link_flow(&op.actor(), &pool.id, &flow.id, "failed", "import_refused")
                        .await?;
                    return Err(err);
                }
            };
            rt.invalidate_caches();
            read_usage_now(rt, &pool.id, &imported.identity_id).await;
            Ok(LinkState::Linked {
                identity_id: imported.identity_id,
            })
        }
        Err(err @ device_link::LinkError::Unreachable(_)) => {
            Err(ConsoleError::Upstream(err.to_string()))
        }
        Err(err) => {
            rt.store
                .end_link_flow(&op.actor(), &pool.id, &flow.id, "failed", &err.code())
                .await?;
            Err(ConsoleError::Upstream(format!("{err}; start a new link")))
        }
    }
}

/// Reads a newly linked account's quota windows at once, so its row is not
/// empty until the next usage poll. Best effort: a failure is only logged.
async fn read_usage_now(rt: &Runtime, pool_id: &str, identity_id: &str) {
    let Ok(Some(snapshot)) = rt.pool(pool_id).await else {
        return;
    };
    if let Some(candidate) = snapshot
        .candidates
        .iter()
        .find(|c| c.identity.id == identity_id)
        && let Err(err) = crate::jobs::read_account_usage(rt, candidate).await
    {
        tracing::debug!(identity = %identity_id, error = %err, "first usage read failed");
    }
    rt.recorder.flush().await;
}

// ---- pages ----

#[derive(Template)]
#[template(path = "device_link.html")]
pub struct DeviceLinkPage {
    pub chrome: Chrome,
    pub pool: PoolRow,
    pub flow: LinkFlowRow,
    pub expires: String,
    pub seconds_left: i64,
    pub waiting: bool,
    pub error: Option<String>,
}

fn link_page(
    op: &Operator,
    pool: PoolRow,
    flow: LinkFlowRow,
    waiting: bool,
    error: Option<ConsoleError>,
) -> Response {
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    render(
        &DeviceLinkPage {
            chrome: Chrome::for_operator(op, "pools"),
            expires: format_time(flow.expires_at),
            seconds_left: ((flow.expires_at - now_ms()) / 1000).max(0),
            pool,
            flow,
            waiting,
            error: error.map(|e| e.to_string()),
        },
        status,
    )
}

fn back_to_pool(pool_id: &str, notice: &str) -> Response {
    Redirect::to(&format!("/admin/pools/{pool_id}?notice={notice}#upstreams")).into_response()
}

/// A change of an account answered as a page: back to the Pool with the
/// notice, or the Pool page again with the reason it was refused.
async fn answer<T>(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    done: Result<T, ConsoleError>,
    notice: &str,
) -> Result<Response, ConsoleError> {
    match done {
        Ok(_) => Ok(back_to_pool(pool_id, notice)),
        Err(err) => refused(rt, op, pool_id, err, PoolFormsEcho::default()).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    identity_id: String,
}

pub async fn assign_page(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<AssignForm>,
) -> Result<Response, ConsoleError> {
    let done = assign_upstream(&rt, &op, &pool_id, &form.identity_id).await;
    answer(&rt, &op, &pool_id, done, "upstream_assigned").await
}

#[derive(Debug, Deserialize)]
pub struct LabelForm {
    #[serde(default)]
    label: String,
}

pub async fn rename_page(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<LabelForm>,
) -> Result<Response, ConsoleError> {
    let done = rename_upstream(&rt, &op, &pool_id, &identity_id, &form.label).await;
    answer(&rt, &op, &pool_id, done, "upstream_renamed").await
}

pub async fn refresh_page(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    FormPost(op, _): FormPost<Value>,
) -> Result<Response, ConsoleError> {
    let done = refresh_upstream(&rt, &op, &pool_id, &identity_id).await;
    answer(&rt, &op, &pool_id, done, "upstream_refreshed").await
}

#[derive(Debug, Deserialize)]
pub struct CredentialsForm {
    #[serde(default)]
    auth_json: String,
}

pub async fn credentials_page(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<CredentialsForm>,
) -> Result<Response, ConsoleError> {
    let done = replace_credentials(&rt, &op, &pool_id, &identity_id, &form.auth_json).await;
    answer(&rt, &op, &pool_id, done, "replaced").await
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm_label: String,
}

pub async fn delete_page(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<DeleteForm>,
) -> Result<Response, ConsoleError> {
    let done = delete_upstream(&rt, &op, &pool_id, &identity_id, &form.confirm_label).await;
    answer(&rt, &op, &pool_id, done, "upstream_deleted").await
}

#[derive(Debug, Deserialize)]
pub struct StartLinkForm {
    label: Option<String>,
}

pub async fn start_link_page(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<StartLinkForm>,
) -> Result<Response, ConsoleError> {
    match start_device_link(&rt, &op, &pool_id, form.label.as_deref()).await {
        Ok(flow_id) => Ok(
            Redirect::to(&format!("/admin/pools/{pool_id}/device-links/{flow_id}")).into_response(),
        ),
        Err(err) => {
            let echo = PoolFormsEcho {
                label: form.label.unwrap_or_default(),
                ..Default::default()
            };
            refused(&rt, &op, &pool_id, err, echo).await
        }
    }
}

pub async fn link_view(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Path((pool_id, flow_id)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let (pool, flow) = link_flow(&rt, &op, &pool_id, &flow_id).await?;
    Ok(link_page(&op, pool, flow, false, None))
}

pub async fn poll_link_page(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, flow_id)): Path<(String, String)>,
    FormPost(op, _): FormPost<Value>,
) -> Result<Response, ConsoleError> {
    match poll_device_link(&rt, &op, &pool_id, &flow_id).await {
        Ok(LinkState::Linked { .. }) => Ok(back_to_pool(&pool_id, "device_linked")),
        Ok(LinkState::Pending(flow)) => {
            let pool = visible_pool(&rt, &op, &pool_id).await?;
            Ok(link_page(&op, pool, *flow, true, None))
        }
        Err(err @ (ConsoleError::Conflict(_) | ConsoleError::Upstream(_))) => {
            let (pool, flow) = link_flow(&rt, &op, &pool_id, &flow_id).await?;
            Ok(link_page(&op, pool, flow, false, Some(err)))
        }
        Err(err) => Err(err),
    }
}

// ---- JSON twins ----

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct AssignBody {
    identity_id: String,
}

pub async fn assign_json(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<AssignBody>,
) -> ApiResult {
    let assignment = assign_upstream(&rt, &op, &pool_id, &body.identity_id).await?;
    ok(
        StatusCode::CREATED,
        json!({"identity_id": body.identity_id, "assignment_id": assignment}),
    )
}

#[derive(Debug, Deserialize)]
pub struct LabelBody {
    label: String,
}

pub async fn rename_json(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    JsonPost(op, body): JsonPost<LabelBody>,
) -> ApiResult {
    rename_upstream(&rt, &op, &pool_id, &identity_id, &body.label).await?;
    ok(
        StatusCode::OK,
        json!({"identity_id": identity_id, "label": body.label.trim()}),
    )
}

pub async fn refresh_json(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    JsonPost(op, _): JsonPost<Value>,
) -> ApiResult {
    let report = refresh_upstream(&rt, &op, &pool_id, &identity_id).await?;
    ok(
        StatusCode::OK,
        json!({"identity_id": identity_id, "refreshed": true, "quota_windows": report.quota_windows}),
    )
}

#[derive(Debug, Deserialize)]
pub struct CredentialsBody {
    /// The file's text, or the parsed object.
    auth_json: Value,
}

pub async fn credentials_json(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    JsonPost(op, body): JsonPost<CredentialsBody>,
) -> ApiResult {
    let text = match &body.auth_json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    replace_credentials(&rt, &op, &pool_id, &identity_id, &text).await?;
    ok(
        StatusCode::OK,
        json!({"identity_id": identity_id, "replaced": true}),
    )
}

#[derive(Debug, Deserialize)]
pub struct DeleteBody {
    #[serde(default)]
    confirm_label: String,
}

/// `DELETE …/upstreams/{id}`: the confirmation comes in the JSON body or,
/// for clients that send no body with a DELETE, as `?confirm_label=`.
pub async fn delete_json(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    Query(query): Query<DeleteBody>,
    JsonPost(op, body): JsonPost<DeleteBody>,
) -> ApiResult {
    let confirm = if body.confirm_label.is_empty() {
        &query.confirm_label
    } else {
        &body.confirm_label
    };
    let deleted = delete_upstream(&rt, &op, &pool_id, &identity_id, confirm).await?;
    ok(
        StatusCode::OK,
        json!({"identity_id": identity_id, "removed_from_pool": true, "account_deleted": deleted}),
    )
}

#[derive(Debug, Deserialize)]
pub struct StartLinkBody {
    label: Option<String>,
}

fn flow_json(flow: &LinkFlowRow) -> Value {
    json!({"id": flow.id, "pool_id": flow.pool_id, "label": flow.label, "status": flow.status,
           "user_code": flow.user_code, "verification_url": flow.verification_url,
           "poll_interval_secs": flow.poll_interval_secs, "identity_id": flow.identity_id,
           "error_code": flow.error_code, "created_at": flow.created_at, "expires_at": flow.expires_at})
}

pub async fn start_link_json(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<StartLinkBody>,
) -> ApiResult {
    let flow_id = start_device_link(&rt, &op, &pool_id, body.label.as_deref()).await?;
    let (_, flow) = link_flow(&rt, &op, &pool_id, &flow_id).await?;
    ok(
        StatusCode::CREATED,
        json!({"device_link": flow_json(&flow)}),
    )
}

pub async fn link_json(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
    Path((pool_id, flow_id)): Path<(String, String)>,
) -> ApiResult {
    let (_, flow) = link_flow(&rt, &op, &pool_id, &flow_id).await?;
    ok(StatusCode::OK, json!({"device_link": flow_json(&flow)}))
}

pub async fn poll_link_json(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, flow_id)): Path<(String, String)>,
    JsonPost(op, _): JsonPost<Value>,
) -> ApiResult {
    match poll_device_link(&rt, &op, &pool_id, &flow_id).await? {
        LinkState::Pending(flow) => ok(
            StatusCode::OK,
            json!({"status": "pending", "device_link": flow_json(&flow)}),
        ),
        LinkState::Linked { identity_id } => ok(
            StatusCode::OK,
            json!({"status": "completed", "identity_id": identity_id}),
        ),
    }
}
