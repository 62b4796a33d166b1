//! HTML handlers of the console. Successful changes redirect back to the page
//! (POST/redirect/GET) with a short notice; a refused change re-renders the
//! page with a precise message and a 4xx status, having written nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ConsoleError;
use super::actions::{self, AUDIT_ACTIONS, AUDIT_PAGE};
use super::session::{FormPost, Operator, PageOperator};
use super::views::{
    AuditPage, AuditView, Chrome, KeyCreatedPage, KeyView, OperatorCreatedPage, OperatorView,
    OperatorsPage, PoolChoice, PoolPage, PoolsPage, UpstreamView, render,
};
use crate::runtime::Runtime;
use crate::store::AuditFilter;

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

/// Notices shown after a redirect, by code (never free text from the URL).
fn notice(code: Option<&str>) -> Option<String> {
    let text = match code? {
        "pool_created" => "Pool created.",
        "imported" => "Account imported.",
        "replaced" => "Credentials of an existing account were replaced.",
        "upstream_paused" => "Account paused.",
        "upstream_active" => "Account reactivated.",
        "key_paused" => "API key paused.",
        "key_active" => "API key resumed.",
        "key_revoked" => "API key revoked.",
        "key_deleted" => "API key deleted, with its request history.",
        "operator_deactivated" => "Operator deactivated; their sessions were signed out.",
        "operator_active" => "Operator reactivated.",
        "password_changed" => "Your password was changed.",
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
    let pools = actions::pools(rt, op).await?;
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &PoolsPage {
            chrome: Chrome::for_operator(op, "pools"),
            pools,
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

/// What to put back into the Pool page's forms after a refused change.
#[derive(Default)]
struct PoolFormsEcho {
    key_name: String,
    label: String,
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
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &PoolPage {
            chrome: Chrome::for_operator(op, "pools"),
            upstreams: detail
                .upstreams
                .iter()
                .map(|u| UpstreamView::new(u, &detail.quota_windows))
                .collect(),
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
async fn refused(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    err: ConsoleError,
    echo: PoolFormsEcho,
) -> Result<Response, ConsoleError> {
    let explainable = match &err {
        ConsoleError::Invalid(_) | ConsoleError::Conflict(_) => true,
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

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
}

pub async fn create_key(
    State(rt): State<Arc<Runtime>>,
    Path(pool_id): Path<String>,
    FormPost(op, form): FormPost<KeyForm>,
) -> Result<Response, ConsoleError> {
    match actions::create_key(&rt, &op, &pool_id, &form.name).await {
        Ok((pool, _id, raw_key)) => Ok(render(
            &KeyCreatedPage {
                chrome: Chrome::for_operator(&op, "pools"),
                pool,
                name: form.name.trim().to_owned(),
                raw_key,
                verb: "created",
            },
            StatusCode::CREATED,
        )),
        Err(err) => {
            let echo = PoolFormsEcho {
                key_name: form.name,
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

#[derive(Debug, Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    before: Option<String>,
}

pub async fn audit(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let filter = AuditFilter {
        action: Some(q.action.trim().to_owned()).filter(|a| !a.is_empty()),
        actor: Some(q.actor.trim().to_owned()).filter(|a| !a.is_empty()),
        before: match q.before.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => Some(
                actions::parse_cursor(b)
                    .ok_or_else(|| ConsoleError::BadRequest("invalid page cursor".into()))?,
            ),
            None => None,
        },
    };
    let (rows, next) = actions::audit_events(&rt, &op, &filter, AUDIT_PAGE).await?;
    let older = next.map(|cursor| {
        serde_urlencoded::to_string([
            ("action", q.action.as_str()),
            ("actor", q.actor.as_str()),
            ("before", cursor.as_str()),
        ])
        .unwrap_or_default()
    });
    Ok(render(
        &AuditPage {
            chrome: Chrome::for_operator(&op, "audit"),
            events: rows.iter().map(AuditView::from).collect(),
            action: q.action,
            actor: q.actor,
            actions: AUDIT_ACTIONS.to_vec(),
            older,
        },
        StatusCode::OK,
    ))
}
