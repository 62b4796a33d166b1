//! HTML handlers of the console. Successful changes redirect back to the page
//! (POST/redirect/GET) with a short notice; a refused change re-renders the
//! page with a precise message and a 4xx status, having written nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ConsoleError;
use super::actions::{
    self, AUDIT_ACTIONS, AUDIT_OUTCOMES, AUDIT_PAGE, AUDIT_TARGET_KINDS, PoolSettingsInput,
};
use super::key_wizard::{DraftError, KeyDraft, STEPS, render_wizard};
use super::session::{FormPost, Operator, PageOperator};
use super::views::{
    AuditDetailPage, AuditPage, AuditView, Chrome, KeyCreatedPage, KeyView, OperatorCreatedPage,
    OperatorView, OperatorsPage, PoolChoice, PoolListRow, PoolPage, PoolsPage, UpstreamView,
    render,
};
use crate::runtime::Runtime;

pub async fn home(PageOperator(_): PageOperator) -> Redirect {
    Redirect::to("/admin/pools")
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../../static/console.css"),
    )
        .into_response()
}

/// The console's own script: countdowns, device-link polling, file upload.
pub async fn console_script() -> Response {
    script(include_str!("../../../static/console.js"))
}

/// htmx 2.0.11, vendored (0BSD): periodic refresh of live tables.
pub async fn htmx_script() -> Response {
    script(include_str!("../../../static/htmx.min.js"))
}

fn script(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Notices shown after a redirect, by code (never free text from the URL).
fn notice(code: Option<&str>) -> Option<String> {
    let text = match code? {
        "pool_created" => "Pool created.",
        "imported" => "Account imported.",
        "replaced" => "Credentials of an existing account were replaced.",
        "upstream_paused" => "Account paused.",
        "upstream_active" => "Account reactivated.",
        "upstream_renamed" => "Account renamed.",
        "upstream_refreshed" => "Tokens refreshed and quota windows read just now.",
        "upstream_deleted" => "Account removed from this Pool.",
        "device_linked" => "Account linked with a device code.",
        "upstream_assigned" => "Account added to this Pool; it keeps serving its other Pools.",
        "key_paused" => "API key paused.",
        "key_active" => "API key resumed.",
        "key_revoked" => "API key revoked.",
        "key_deleted" => "API key deleted, with its request history.",
        "operator_deactivated" => "Operator deactivated; their sessions were signed out.",
        "operator_active" => "Operator reactivated.",
        "operator_pools" => "The admin's Pools were saved; they apply from their next request.",
        "operator_totp_reset" => {
            "Two-factor sign-in was turned off for that operator; they sign in with their password and can set it up again."
        }
        "password_changed" => "Your password was changed.",
        "pool_saved" => "Pool settings saved.",
        "pool_unchanged" => "Nothing differed from the saved settings; nothing was changed.",
        "pool_disabled" => "Pool disabled: its keys are refused until it is enabled again.",
        "pool_active" => "Pool enabled.",
        "pool_archived" => "Pool archived: its API keys were revoked.",
        _ => return None,
    };
    Some(text.to_owned())
}

#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

async fn pools_page(
    rt: &Runtime,
    op: &Operator,
    error: Option<ConsoleError>,
    form: Option<&PoolForm>,
    notice_code: Option<&str>,
) -> Result<Response, ConsoleError> {
    let pools = actions::pools_with_health(rt, op).await?;
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &PoolsPage {
            chrome: Chrome::for_operator(op, "pools"),
            pools: pools.iter().map(PoolListRow::from).collect(),
            error: error.map(|e| e.to_string()),
            notice: notice(notice_code),
            slug: form.map(|f| f.slug.clone()).unwrap_or_default(),
            name: form.map(|f| f.name.clone()).unwrap_or_default(),
        },
        status,
    ))
}

pub async fn pools(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, ConsoleError> {
    pools_page(&rt, &op, None, None, q.notice.as_deref()).await
}

#[derive(Debug, Deserialize)]
pub struct PoolForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
}

pub async fn create_pool(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<PoolForm>,
) -> Result<Response, ConsoleError> {
    match actions::create_pool(&rt, &op, &form.slug, &form.name).await {
        Ok(pool) => Ok(
            Redirect::to(&format!("/admin/pools/{}?notice=pool_created", pool.id)).into_response(),
        ),
        Err(
            err @ (ConsoleError::Invalid(_)
            | ConsoleError::Conflict(_)
            | ConsoleError::Forbidden(_)),
        ) => pools_page(&rt, &op, Some(err), Some(&form), None).await,
        Err(other) => Err(other),
    }
}

/// What the Pool page's forms echo back after a refused change.
#[derive(Default)]
pub(super) struct PoolFormsEcho {
    pub key_name: String,
    pub label: String,
}

async fn pool_page(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    error: Option<ConsoleError>,
    echo: PoolFormsEcho,
    notice_code: Option<&str>,
) -> Result<Response, ConsoleError> {
    let detail = actions::pool_detail(rt, op, pool_id).await?;
    let readiness = actions::readiness(rt, &detail.pool.id).await?;
    let (now_ms, now_secs) = (crate::time::now_ms(), rt.now_secs());
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &PoolPage {
            chrome: Chrome::for_operator(op, "pools"),
            strategies: crate::control::ROUTING_STRATEGIES.to_vec(),
            settings: detail.settings,
            archived: detail.pool.status == "archived",
            upstreams: detail
                .upstreams
                .iter()
                .map(|u| {
                    UpstreamView::new(
                        u,
                        &detail.quota_windows,
                        readiness.get(&u.identity_id).cloned().unwrap_or_default(),
                        now_ms,
                        now_secs,
                    )
                })
                .collect(),
            auth_base_url: rt.settings.auth_base_url.clone(),
            assignable: rt
                .store
                .list_assignable_upstreams(op.scope(), &detail.pool.id)
                .await?,
            keys: detail.api_keys.iter().map(KeyView::from).collect(),
            pool: detail.pool,
            error: error.map(|e| e.to_string()),
            notice: notice(notice_code),
            key_name: echo.key_name,
            label: echo.label,
        },
        status,
    ))
}

/// Re-renders the Pool page for a refused change it can explain; anything
/// else (not found, internal) becomes the error page.
pub(super) async fn refused(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    err: ConsoleError,
    echo: PoolFormsEcho,
) -> Result<Response, ConsoleError> {
    let explainable = match &err {
        // CSRF refusals never get here (the extractor answers them), so a
        // refusal here is a rule of the change, e.g. owner-only archiving.
        ConsoleError::Invalid(_)
        | ConsoleError::Conflict(_)
        | ConsoleError::Forbidden(_)
        | ConsoleError::Upstream(_) => true,
        ConsoleError::NotFound(message) => message != &ConsoleError::pool_not_found().to_string(),
        _ => false,
    };
    if explainable {
        pool_page(rt, op, pool_id, Some(err), echo, None).await
    } else {
        Err(err)
    }
}

pub async fn pool(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Path(pool_id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, ConsoleError> {
    pool_page(
        &rt,
        &op,
        &pool_id,
        None,
        PoolFormsEcho::default(),
        q.notice.as_deref(),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    auth_json: String,
    label: Option<String>,
}

pub async fn import_upstream(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<ImportForm>,
) -> Result<Response, ConsoleError> {
    match actions::import_upstream(&rt, &op, &pool_id, &form.auth_json, form.label.as_deref()).await
    {
        Ok(imported) => {
            let code = if imported.replaced_existing {
                "replaced"
            } else {
                "imported"
            };
            Ok(
                Redirect::to(&format!("/admin/pools/{pool_id}?notice={code}#upstreams"))
                    .into_response(),
            )
        }
        Err(err) => {
            let echo = PoolFormsEcho {
                label: form.label.unwrap_or_default(),
                ..Default::default()
            };
            refused(&rt, &op, &pool_id, err, echo).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    status: String,
}

pub async fn set_upstream_status(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, identity_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<StatusForm>,
) -> Result<Response, ConsoleError> {
    match actions::set_upstream_status(&rt, &op, &pool_id, &identity_id, &form.status).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/pools/{pool_id}?notice=upstream_{}#upstreams",
            form.status
        ))
        .into_response()),
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

/// The key form: the quick form on the Pool page sends a name only; the
/// wizard's review step sends every answer and `from_wizard`.
#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    from_wizard: String,
    #[serde(flatten)]
    draft: KeyDraft,
}

pub async fn create_key(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<KeyForm>,
) -> Result<Response, ConsoleError> {
    let from_wizard = !form.from_wizard.is_empty();
    let spec = match form.draft.to_spec(crate::time::now_ms(), STEPS.len()) {
        Ok(spec) => spec,
        Err(e) if from_wizard => {
            return render_wizard(&rt, &op, &pool_id, form.draft, e.step, Some(e)).await;
        }
        Err(e) => {
            let echo = PoolFormsEcho {
                key_name: form.draft.name,
                ..Default::default()
            };
            return refused(&rt, &op, &pool_id, ConsoleError::Invalid(e.message), echo).await;
        }
    };
    match actions::create_key(&rt, &op, &pool_id, &spec).await {
        Ok((pool, _id, raw_key)) => Ok(render(
            &KeyCreatedPage {
                chrome: Chrome::for_operator(&op, "pools"),
                pool,
                name: spec.name.clone(),
                raw_key,
                verb: "created",
            },
            StatusCode::CREATED,
        )),
        // The wizard's answers are kept: a refusal returns to its review.
        Err(ConsoleError::Invalid(message)) if from_wizard => {
            let error = DraftError {
                step: "review",
                message,
            };
            render_wizard(&rt, &op, &pool_id, form.draft, "review", Some(error)).await
        }
        Err(err) => {
            let echo = PoolFormsEcho {
                key_name: form.draft.name,
                ..Default::default()
            };
            refused(&rt, &op, &pool_id, err, echo).await
        }
    }
}

pub async fn set_key_status(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<StatusForm>,
) -> Result<Response, ConsoleError> {
    match actions::set_key_status(&rt, &op, &pool_id, &key_id, &form.status).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/pools/{pool_id}?notice=key_{}#keys",
            form.status
        ))
        .into_response()),
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

pub async fn rotate_key(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    FormPost(op, super::auth::Empty {}): FormPost<super::auth::Empty>,
) -> Result<Response, ConsoleError> {
    match actions::rotate_key(&rt, &op, &pool_id, &key_id).await {
        Ok((pool, name, raw_key)) => Ok(render(
            &KeyCreatedPage {
                chrome: Chrome::for_operator(&op, "pools"),
                pool,
                name,
                raw_key,
                verb: "rotated",
            },
            StatusCode::OK,
        )),
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteKeyForm {
    #[serde(default)]
    confirm_prefix: String,
}

pub async fn delete_key(
    State(rt): State<Arc<Runtime>>,
    Path((pool_id, key_id)): Path<(String, String)>,
    FormPost(op, form): FormPost<DeleteKeyForm>,
) -> Result<Response, ConsoleError> {
    match actions::delete_key(&rt, &op, &pool_id, &key_id, &form.confirm_prefix).await {
        Ok(_) => Ok(
            Redirect::to(&format!("/admin/pools/{pool_id}?notice=key_deleted#keys"))
                .into_response(),
        ),
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

/// The settings form as submitted: unticked boxes are absent, so read as pairs.
fn settings_input(pairs: &[(String, String)]) -> PoolSettingsInput {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let ticked = |name: &str| Some(pairs.iter().any(|(k, _)| k == name));
    PoolSettingsInput {
        routing_strategy: Some(field("routing_strategy").unwrap_or_default()),
        bridge_ring_size: Some(field("bridge_ring_size").unwrap_or_default()),
        sticky_websocket_sessions: ticked("sticky_websocket_sessions"),
        sticky_http_sessions: ticked("sticky_http_sessions"),
        prompt_cache_affinity_enabled: ticked("prompt_cache_affinity_enabled"),
        v1_compatibility_enabled: ticked("v1_compatibility_enabled"),
    }
}

pub async fn update_pool_settings(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, pairs): FormPost<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    match actions::update_pool_settings(&rt, &op, &pool_id, &settings_input(&pairs)).await {
        Ok(changed) => {
            let code = if changed.is_empty() {
                "pool_unchanged"
            } else {
                "pool_saved"
            };
            Ok(
                Redirect::to(&format!("/admin/pools/{pool_id}?notice={code}#settings"))
                    .into_response(),
            )
        }
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct PoolStatusForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    confirm_slug: String,
}

pub async fn set_pool_status(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<PoolStatusForm>,
) -> Result<Response, ConsoleError> {
    match actions::set_pool_status(&rt, &op, &pool_id, &form.status, &form.confirm_slug).await {
        Ok(pool) => Ok(Redirect::to(&format!(
            "/admin/pools/{pool_id}?notice=pool_{}#status",
            pool.status
        ))
        .into_response()),
        Err(err) => refused(&rt, &op, &pool_id, err, PoolFormsEcho::default()).await,
    }
}

/// The new-operator form as submitted: repeated `pool` fields, so read as pairs.
#[derive(Default)]
struct OperatorForm {
    email: String,
    role: String,
    pools: Vec<String>,
}

impl OperatorForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = OperatorForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "email" => form.email = value,
                "role" => form.role = value,
                "pool" => form.pools.push(value),
                _ => {}
            }
        }
        form
    }
}

async fn operators_page(
    rt: &Runtime,
    op: &Operator,
    error: Option<ConsoleError>,
    form: Option<&OperatorForm>,
    notice_code: Option<&str>,
) -> Result<Response, ConsoleError> {
    let operators = actions::operators(rt, op).await?;
    let pools = actions::pools(rt, op).await?;
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &OperatorsPage {
            chrome: Chrome::for_operator(op, "operators"),
            operators: operators.iter().map(OperatorView::from).collect(),
            pools: pools
                .into_iter()
                .map(|p| PoolChoice {
                    checked: form.is_some_and(|f| f.pools.contains(&p.id)),
                    id: p.id,
                    name: p.name,
                })
                .collect(),
            error: error.map(|e| e.to_string()),
            notice: notice(notice_code),
            email: form.map(|f| f.email.clone()).unwrap_or_default(),
            admin_role: form.is_none_or(|f| f.role != "owner"),
        },
        status,
    ))
}

pub async fn operators(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, ConsoleError> {
    operators_page(&rt, &op, None, None, q.notice.as_deref()).await
}

pub async fn create_operator(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, pairs): FormPost<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = OperatorForm::from_pairs(pairs);
    match actions::create_operator(&rt, &op, &form.email, &form.role, &form.pools).await {
        Ok((_, password)) => Ok(render(
            &OperatorCreatedPage {
                chrome: Chrome::for_operator(&op, "operators"),
                email: form.email.trim().to_ascii_lowercase(),
                role: form.role.clone(),
                password,
            },
            StatusCode::CREATED,
        )),
        Err(err @ (ConsoleError::Invalid(_) | ConsoleError::Conflict(_))) => {
            operators_page(&rt, &op, Some(err), Some(&form), None).await
        }
        Err(other) => Err(other),
    }
}

#[derive(Debug, Deserialize)]
pub struct OperatorStatusForm {
    #[serde(default)]
    status: String,
}

pub async fn set_operator_status(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    FormPost(op, form): FormPost<OperatorStatusForm>,
) -> Result<Response, ConsoleError> {
    match actions::set_operator_status(&rt, &op, &operator_id, &form.status).await {
        Ok(()) => Ok(
            Redirect::to(&format!("/admin/operators?notice=operator_{}", form.status))
                .into_response(),
        ),
        Err(err @ (ConsoleError::Invalid(_) | ConsoleError::Conflict(_))) => {
            operators_page(&rt, &op, Some(err), None, None).await
        }
        Err(other) => Err(other),
    }
}

pub async fn set_operator_pools(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    FormPost(op, form): FormPost<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let pools: Vec<String> = form
        .into_iter()
        .filter(|(k, _)| k == "pool")
        .map(|(_, v)| v)
        .collect();
    match actions::set_operator_pools(&rt, &op, &operator_id, &pools).await {
        Ok(_) => Ok(Redirect::to("/admin/operators?notice=operator_pools").into_response()),
        Err(err @ ConsoleError::Invalid(_)) => {
            operators_page(&rt, &op, Some(err), None, None).await
        }
        Err(other) => Err(other),
    }
}

pub async fn reset_operator_totp(
    State(rt): State<Arc<Runtime>>,
    Path(operator_id): Path<String>,
    FormPost(op, _): FormPost<serde_json::Value>,
) -> Result<Response, ConsoleError> {
    match actions::reset_operator_totp(&rt, &op, &operator_id).await {
        Ok(()) => Ok(Redirect::to("/admin/operators?notice=operator_totp_reset").into_response()),
        Err(err @ ConsoleError::Conflict(_)) => {
            operators_page(&rt, &op, Some(err), None, None).await
        }
        Err(other) => Err(other),
    }
}

/// The audit list: filters from the URL (invalid ones ignored with a
/// warning), newest first, keyset-paged.
pub async fn audit(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let (filter, warnings) = actions::parse_audit_filters(&params)?;
    let (rows, next) = actions::audit_events(&rt, &op, &filter, AUDIT_PAGE).await?;
    let pools = actions::pools(&rt, &op).await?;
    let older = next.map(|cursor| {
        let mut pairs: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, v)| k.as_str() != "before" && !v.trim().is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.push(("before", cursor.as_str()));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    });
    let param = |name: &str| {
        params
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Ok(render(
        &AuditPage {
            chrome: Chrome::for_operator(&op, "audit"),
            events: rows.iter().map(AuditView::from).collect(),
            pools: pools
                .into_iter()
                .map(|p| PoolChoice {
                    checked: filter.pool_id.as_deref() == Some(p.id.as_str()),
                    id: p.id,
                    name: p.name,
                })
                .collect(),
            filtered: params
                .iter()
                .any(|(k, v)| k.as_str() != "before" && !v.trim().is_empty()),
            outcome: param("outcome"),
            action: param("action"),
            actor: param("actor"),
            target_kind: param("target_kind"),
            target_id: param("target_id"),
            date_from: param("date_from"),
            date_to: param("date_to"),
            actions: AUDIT_ACTIONS.to_vec(),
            outcomes: AUDIT_OUTCOMES.to_vec(),
            target_kinds: AUDIT_TARGET_KINDS.to_vec(),
            warnings,
            older,
        },
        StatusCode::OK,
    ))
}

/// One audit event with its sanitized details and links to its Pool and
/// target.
pub async fn audit_detail(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let event = actions::audit_event(&rt, &op, &id).await?;
    let pool = match &event.pool_id {
        Some(pool_id) => rt.store.find_visible_pool(op.scope(), pool_id).await?,
        None => None,
    };
    let details = actions::sanitized_details(&event.details);
    Ok(render(
        &AuditDetailPage::new(&op, &event, pool, &details),
        StatusCode::OK,
    ))
}
