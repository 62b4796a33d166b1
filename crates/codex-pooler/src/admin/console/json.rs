//! JSON twins of the console pages under `/admin/api/…`, for scripts and the
//! future MCP surface. They accept the session cookie (changes then also need
//! `X-CSRF-Token`) or an operator token, and apply the same Pool scope.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ConsoleError;
use super::actions::{self, AUDIT_PAGE, PoolSettingsInput};
use super::session::{ApiOperator, JsonPost};
use crate::runtime::Runtime;

/// A console error answered with the JSON envelope.
pub struct ApiError(ConsoleError);

impl From<ConsoleError> for ApiError {
    fn from(err: ConsoleError) -> Self {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

/// The signed-in operator (and, for sessions, the CSRF token to send back).
pub async fn me(ApiOperator(op): ApiOperator) -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"id": op.id, "email": op.email, "role": op.role,
               "csrf_token": (!op.csrf.is_empty()).then_some(&op.csrf)}),
    )
}

pub async fn pools(State(rt): State<Arc<Runtime>>, ApiOperator(op): ApiOperator) -> ApiResult {
    let pools = actions::pools_with_health(&rt, &op).await?;
    ok(StatusCode::OK, json!({"data": pools}))
}

#[derive(Debug, Deserialize)]
pub struct NewPool {
    slug: String,
    name: String,
}

pub async fn create_pool(
    State(rt): State<Arc<Runtime>>,
    JsonPost(op, body): JsonPost<NewPool>,
) -> ApiResult {
    let pool = actions::create_pool(&rt, &op, &body.slug, &body.name).await?;
    ok(StatusCode::CREATED, json!({"pool": pool}))
}

pub async fn pool(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
    Path(pool_id): Path<String>,
) -> ApiResult {
    let detail = actions::pool_detail(&rt, &op, &pool_id).await?;
    ok(StatusCode::OK, json!(detail))
}

#[derive(Debug, Deserialize)]
pub struct ImportBody {
    /// The file's text, or the parsed object.
    auth_json: Value,
    label: Option<String>,
}

pub async fn import_upstream(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<ImportBody>,
) -> ApiResult {
    let text = match &body.auth_json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let imported =
        actions::import_upstream(&rt, &op, &pool_id, &text, body.label.as_deref()).await?;
    ok(
        StatusCode::CREATED,
        json!({"identity_id": imported.identity_id, "assignment_id": imported.assignment_id,
               "replaced_existing": imported.replaced_existing}),
    )
}

#[derive(Debug, Deserialize)]
pub struct StatusBody {
    status: String,
}

pub async fn set_upstream_status(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    JsonPost(op, body): JsonPost<StatusBody>,
) -> ApiResult {
    actions::set_upstream_status(&rt, &op, &pool_id, &identity_id, &body.status).await?;
    ok(
        StatusCode::OK,
        json!({"identity_id": identity_id, "status": body.status}),
    )
}

/// A new key: its name, optional expiry (`expires_in_days`), models and
/// policy (the fields of the key policy, spend in micro-dollars).
#[derive(Debug, Deserialize)]
pub struct NewKey {
    name: String,
    expires_in_days: Option<i64>,
    allowed_models: Option<Vec<String>>,
    enforced_model: Option<String>,
    #[serde(default)]
    policy: crate::store::KeyPolicy,
}

pub async fn create_key(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<NewKey>,
) -> ApiResult {
    let spec = super::key_wizard::spec_from_api(
        body.name,
        body.expires_in_days,
        body.allowed_models,
        body.enforced_model,
        body.policy,
        crate::time::now_ms(),
    )?;
    let (_, id, raw) = actions::create_key(&rt, &op, &pool_id, &spec).await?;
    ok(StatusCode::CREATED, json!({"id": id, "key": raw}))
}

pub async fn set_key_status(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    JsonPost(op, body): JsonPost<StatusBody>,
) -> ApiResult {
    actions::set_key_status(&rt, &op, &pool_id, &key_id, &body.status).await?;
    ok(StatusCode::OK, json!({"id": key_id, "status": body.status}))
}

pub async fn rotate_key(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    JsonPost(op, _): JsonPost<Value>,
) -> ApiResult {
    let (_, name, raw) = actions::rotate_key(&rt, &op, &pool_id, &key_id).await?;
    ok(
        StatusCode::OK,
        json!({"id": key_id, "name": name, "key": raw}),
    )
}

#[derive(Debug, Deserialize)]
pub struct DeleteKeyBody {
    #[serde(default)]
    confirm_prefix: String,
}

/// The confirmation comes in the JSON body or, for clients that send no
/// body with a DELETE, as `?confirm_prefix=`.
pub async fn delete_key(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    Query(query): Query<DeleteKeyBody>,
    JsonPost(op, body): JsonPost<DeleteKeyBody>,
) -> ApiResult {
    let confirm = if body.confirm_prefix.is_empty() {
        &query.confirm_prefix
    } else {
        &body.confirm_prefix
    };
    let key = actions::delete_key(&rt, &op, &pool_id, &key_id, confirm).await?;
    ok(
        StatusCode::OK,
        json!({"id": key.id, "prefix": key.key_prefix, "deleted": true}),
    )
}

pub async fn operators(State(rt): State<Arc<Runtime>>, ApiOperator(op): ApiOperator) -> ApiResult {
    let operators = actions::operators(&rt, &op).await?;
    ok(StatusCode::OK, json!({"data": operators}))
}

#[derive(Debug, Deserialize)]
pub struct NewOperator {
    email: String,
    role: String,
    #[serde(default)]
    pool_ids: Vec<String>,
}

pub async fn create_operator(
    State(rt): State<Arc<Runtime>>,
    JsonPost(op, body): JsonPost<NewOperator>,
) -> ApiResult {
    let (id, password) =
        actions::create_operator(&rt, &op, &body.email, &body.role, &body.pool_ids).await?;
    ok(
        StatusCode::CREATED,
        json!({"id": id, "email": body.email.trim().to_ascii_lowercase(), "role": body.role,
               "temporary_password": password, "must_change_password": true}),
    )
}

#[derive(Debug, Deserialize)]
pub struct OperatorStatusBody {
    status: String,
}

pub async fn set_operator_status(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    JsonPost(op, body): JsonPost<OperatorStatusBody>,
) -> ApiResult {
    actions::set_operator_status(&rt, &op, &operator_id, &body.status).await?;
    ok(
        StatusCode::OK,
        json!({"id": operator_id, "status": body.status}),
    )
}

#[derive(Debug, Deserialize)]
pub struct OperatorPoolsBody {
    pool_ids: Vec<String>,
}

pub async fn set_operator_pools(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    JsonPost(op, body): JsonPost<OperatorPoolsBody>,
) -> ApiResult {
    let (added, removed) =
        actions::set_operator_pools(&rt, &op, &operator_id, &body.pool_ids).await?;
    ok(
        StatusCode::OK,
        json!({"id": operator_id, "pools_added": added, "pools_removed": removed}),
    )
}

pub async fn reset_operator_totp(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    JsonPost(op, _): JsonPost<Value>,
) -> ApiResult {
    actions::reset_operator_totp(&rt, &op, &operator_id).await?;
    ok(
        StatusCode::OK,
        json!({"id": operator_id, "totp_enabled": false}),
    )
}

/// Audit events: the page's filters (invalid ones ignored and named in
/// `warnings`), `limit` (1-200) and the `before` cursor of `next_before`.
pub async fn audit_events(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult {
    let (filter, mut warnings) = actions::parse_audit_filters(&params)?;
    let limit = match params
        .get("limit")
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        None => AUDIT_PAGE,
        Some(text) => text.parse::<i64>().unwrap_or_else(|_| {
            warnings.push(format!(
                "limit: not a number; the default of {AUDIT_PAGE} was used"
            ));
            AUDIT_PAGE
        }),
    };
    let (rows, next) = actions::audit_events(&rt, &op, &filter, limit).await?;
    ok(
        StatusCode::OK,
        json!({"data": rows, "next_before": next, "warnings": warnings}),
    )
}

/// One audit event with its sanitized details; 404 outside the operator's
/// scope.
pub async fn audit_event(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
    Path(id): Path<String>,
) -> ApiResult {
    let event = actions::audit_event(&rt, &op, &id).await?;
    let details = actions::sanitized_details(&event.details);
    let mut body = json!(event);
    body["details"] = details;
    ok(StatusCode::OK, json!({"event": body}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettingsBody {
    routing_strategy: Option<String>,
    bridge_ring_size: Option<i64>,
    sticky_websocket_sessions: Option<bool>,
    sticky_http_sessions: Option<bool>,
    prompt_cache_affinity_enabled: Option<bool>,
    v1_compatibility_enabled: Option<bool>,
}

/// Saves the fields present; answers the settings now in force and the
/// names of the fields that changed.
pub async fn update_pool_settings(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<PoolSettingsBody>,
) -> ApiResult {
    let input = PoolSettingsInput {
        routing_strategy: body.routing_strategy,
        bridge_ring_size: body.bridge_ring_size.map(|n| n.to_string()),
        sticky_websocket_sessions: body.sticky_websocket_sessions,
        sticky_http_sessions: body.sticky_http_sessions,
        prompt_cache_affinity_enabled: body.prompt_cache_affinity_enabled,
        v1_compatibility_enabled: body.v1_compatibility_enabled,
    };
    let changed = actions::update_pool_settings(&rt, &op, &pool_id, &input).await?;
    let detail = actions::pool_detail(&rt, &op, &pool_id).await?;
    ok(
        StatusCode::OK,
        json!({"pool": detail.pool, "settings": detail.settings, "changed": changed}),
    )
}

#[derive(Debug, Deserialize)]
pub struct PoolStatusBody {
    status: String,
    #[serde(default)]
    confirm_slug: String,
}

pub async fn set_pool_status(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    JsonPost(op, body): JsonPost<PoolStatusBody>,
) -> ApiResult {
    let pool =
        actions::set_pool_status(&rt, &op, &pool_id, &body.status, &body.confirm_slug).await?;
    ok(StatusCode::OK, json!({"pool": pool}))
}
