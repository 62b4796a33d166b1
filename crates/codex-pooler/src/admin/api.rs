//! `GET /admin/api/request-logs` (newest first, bounded page, keyset cursor) and
//! `GET /admin/api/request-logs/{id}` (the row with its attempts), behind
//! `Authorization: Bearer <operator token>` or, for the console's own live
//! updates, a same-origin read with the session cookie (refused with 403
//! while that operator must still replace a temporary password).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::console::session::{
    is_cross_origin, note_token_use, password_change_required, presented_session, token_hash,
};
use crate::domain::keys::{OPERATOR_TOKEN_KIND, hashes_match, parse};
use crate::runtime::Runtime;
use crate::store::RequestCursor;

/// Default and largest page sizes of the request-log API.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// Errors of the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an operator token or a console session is required")]
    Unauthenticated,
    /// A session whose operator must still replace a temporary password.
    #[error("{0}")]
    PasswordChangeRequired(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid {0}")]
    BadParameter(&'static str),
    #[error("internal error")]
    Internal,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AdminError::Unauthenticated => (StatusCode::UNAUTHORIZED, "operator_token_required"),
            AdminError::PasswordChangeRequired(_) => {
                (StatusCode::FORBIDDEN, "password_change_required")
            }
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::BadParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            AdminError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        (
            status,
            axum::Json(crate::error::error_body(
                &self.to_string(),
                "invalid_request_error",
                code,
                None,
            )),
        )
            .into_response()
    }
}

pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/admin/api/request-logs", get(list_request_logs))
        .route("/admin/api/request-logs/{id}", get(get_request_log))
}

/// The operator's Pool scope: `None` for owners (every Pool), else the
/// operator id whose assigned Pools are visible.
async fn authenticate_operator(
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<Option<String>, AdminError> {
    let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) else {
        return authenticate_session(rt, headers).await;
    };
    let presented = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|raw| parse(OPERATOR_TOKEN_KIND, raw.trim()))
        .ok_or(AdminError::Unauthenticated)?;
    let token = rt
        .store
        .find_operator_token(&presented.prefix)
        .await
        .map_err(|_| AdminError::Internal)?
        .ok_or(AdminError::Unauthenticated)?;
    if token.revoked_at.is_some()
        || token.operator_status != "active"
        || !hashes_match(&token.token_hash, &presented.secret_hash)
    {
        return Err(AdminError::Unauthenticated);
    }
    note_token_use(rt, &token).await;
    Ok(if token.role == "owner" {
        None
    } else {
        Some(token.operator_id)
    })
}

/// The scope of a signed-in console session (these routes only read, so no
/// CSRF token is needed). A read another site's page starts is refused even
/// though the browser could not show it to that site: the rows are only for
/// the console's own pages.
async fn authenticate_session(
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<Option<String>, AdminError> {
    let raw = presented_session(headers).ok_or(AdminError::Unauthenticated)?;
    if is_cross_origin(headers) {
        return Err(AdminError::Unauthenticated);
    }
    let session = rt
        .store
        .find_session(&token_hash(&raw))
        .await
        .map_err(|_| AdminError::Internal)?
        .ok_or(AdminError::Unauthenticated)?;
    if session.must_change_password {
        return Err(AdminError::PasswordChangeRequired(
            password_change_required(),
        ));
    }
    Ok(if session.role == "owner" {
        None
    } else {
        Some(session.operator_id)
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

fn parse_cursor(text: &str) -> Option<RequestCursor> {
    let (at, id) = text.split_once('_')?;
    Some(RequestCursor {
        admitted_at: at.parse().ok()?,
        id: id.to_owned(),
    })
}

async fn list_request_logs(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    Query(params): Query<std::collections::BTreeMap<String, String>>,
) -> Result<Response, AdminError> {
    let scope = authenticate_operator(&rt, &headers).await?;
    let q = ListQuery {
        limit: params.get("limit").cloned(),
        before: params.get("before").cloned(),
    };
    let parsed = super::request_logs::parse_filters(&params);
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| AdminError::BadParameter("limit"))?
            .clamp(1, MAX_PAGE),
    };
    let cursor = match q.before.as_deref() {
        None | Some("") => None,
        Some(v) => Some(parse_cursor(v).ok_or(AdminError::BadParameter("before cursor"))?),
    };
    let rows = rt
        .store
        .list_request_logs_filtered(&parsed.filter, limit, cursor.as_ref(), scope.as_deref())
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "listing request logs failed");
            AdminError::Internal
        })?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| format!("{}_{}", r.admitted_at, r.id))
    } else {
        None
    };
    Ok(axum::Json(
        json!({"data": rows, "limit": limit, "next_before": next, "warnings": parsed.warnings}),
    )
    .into_response())
}

async fn get_request_log(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let scope = authenticate_operator(&rt, &headers).await?;
    let found = rt
        .store
        .get_request_log(&id, scope.as_deref())
        .await
        .map_err(|_| AdminError::Internal)?;
    let (row, attempts) = found.ok_or(AdminError::NotFound("request"))?;
    Ok(axum::Json(json!({"request": row, "attempts": attempts})).into_response())
}
