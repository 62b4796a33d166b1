//! The server-rendered admin console (`/bootstrap`, `/login`, `/logout`,
//! `/admin/…`) and its JSON twins (`/admin/api/…`, next to the request-log
//! API). Pages are askama templates; forms work without JavaScript. Handlers
//! stay thin: identity and CSRF live in [`session`], SQL in `store::console`,
//! validation in `control`.
//!
//! Roles: the owner sees every Pool; an admin sees only the Pools assigned to
//! them (`operator_pools`), and every read or change by id is checked against
//! that scope in the query itself.

mod actions;
mod auth;
mod json;
mod key_wizard;
mod logs;
mod pages;
mod security;
pub mod session;
mod upstreams;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::control::ControlError;
use crate::runtime::Runtime;
use crate::store::StoreError;

pub use auth::prepare_bootstrap;

/// Every console route that changes something, as (method, path). The
/// console test drives each one with and without a valid CSRF check and
/// compares this list with the `.route(…)` calls below, so a new change route
/// cannot be added without being listed (and tested) here.
pub const MUTATING_ROUTES: &[(&str, &str)] = &[
    ("POST", "/bootstrap"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/admin/password"),
    // Operator security (second factor, sessions, API tokens). The console test's
    // fixture relies on this order (setup, enable, disable) and on these
    // coming after the password change above.
    ("POST", "/login/totp"),
    ("POST", "/admin/security/totp/setup"),
    ("POST", "/admin/security/totp/enable"),
    ("POST", "/admin/security/totp/disable"),
    ("POST", "/admin/security/sessions/{session_id}/revoke"),
    ("POST", "/admin/security/sessions/revoke-others"),
    ("POST", "/admin/api/security/sessions/{session_id}/revoke"),
    ("POST", "/admin/security/tokens"),
    ("POST", "/admin/security/tokens/{token_id}/revoke"),
    ("POST", "/admin/api/security/tokens"),
    ("POST", "/admin/api/security/tokens/{token_id}/revoke"),
    ("POST", "/admin/pools"),
    ("POST", "/admin/pools/{pool_id}/settings"),
    ("POST", "/admin/pools/{pool_id}/status"),
    ("POST", "/admin/pools/{pool_id}/upstreams"),
    (
        "POST",
        "/admin/pools/{pool_id}/upstreams/{identity_id}/status",
    ),
    ("POST", "/admin/pools/{pool_id}/upstreams/assign"),
    ("POST", "/admin/api/pools/{pool_id}/upstreams/assign"),
    (
        "POST",
        "/admin/pools/{pool_id}/upstreams/{identity_id}/rename",
    ),
    (
        "POST",
        "/admin/pools/{pool_id}/upstreams/{identity_id}/refresh",
    ),
    (
        "POST",
        "/admin/pools/{pool_id}/upstreams/{identity_id}/credentials",
    ),
    (
        "POST",
        "/admin/pools/{pool_id}/upstreams/{identity_id}/delete",
    ),
    ("POST", "/admin/pools/{pool_id}/device-links"),
    ("POST", "/admin/pools/{pool_id}/device-links/{flow_id}/poll"),
    (
        "POST",
        "/admin/api/pools/{pool_id}/upstreams/{identity_id}/rename",
    ),
    (
        "POST",
        "/admin/api/pools/{pool_id}/upstreams/{identity_id}/refresh",
    ),
    (
        "POST",
        "/admin/api/pools/{pool_id}/upstreams/{identity_id}/credentials",
    ),
    (
        "DELETE",
        "/admin/api/pools/{pool_id}/upstreams/{identity_id}",
    ),
    ("POST", "/admin/api/pools/{pool_id}/device-links"),
    (
        "POST",
        "/admin/api/pools/{pool_id}/device-links/{flow_id}/poll",
    ),
    ("POST", "/admin/pools/{pool_id}/api-keys"),
    ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/status"),
    ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/rotate"),
    ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/delete"),
    ("POST", "/admin/operators"),
    ("POST", "/admin/operators/{operator_id}/status"),
    ("POST", "/admin/operators/{operator_id}/totp-reset"),
    ("POST", "/admin/api/operators/{operator_id}/totp-reset"),
    ("POST", "/admin/operators/{operator_id}/pools"),
    ("POST", "/admin/api/operators/{operator_id}/pools"),
    ("POST", "/admin/api/pools"),
    ("POST", "/admin/api/pools/{pool_id}/settings"),
    ("POST", "/admin/api/pools/{pool_id}/status"),
    ("POST", "/admin/api/pools/{pool_id}/upstreams"),
    (
        "POST",
        "/admin/api/pools/{pool_id}/upstreams/{identity_id}/status",
    ),
    ("POST", "/admin/api/pools/{pool_id}/api-keys"),
    (
        "POST",
        "/admin/api/pools/{pool_id}/api-keys/{key_id}/status",
    ),
    (
        "POST",
        "/admin/api/pools/{pool_id}/api-keys/{key_id}/rotate",
    ),
    ("DELETE", "/admin/api/pools/{pool_id}/api-keys/{key_id}"),
    ("POST", "/admin/api/operators"),
    ("POST", "/admin/api/operators/{operator_id}/status"),
];

/// The console's routes (pages and JSON).
pub fn router() -> Router<Arc<Runtime>> {
    let pages = Router::new()
        .route(
            "/bootstrap",
            get(auth::bootstrap_form).post(auth::bootstrap),
        )
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/admin", get(pages::home))
        .route("/admin/", get(pages::home))
        .route("/admin/assets/console.css", get(pages::stylesheet))
        .route("/admin/assets/request-logs.js", get(logs::script))
        .route("/admin/assets/console.js", get(pages::console_script))
        .route("/admin/assets/htmx.min.js", get(pages::htmx_script))
        .route("/admin/pools", get(pages::pools).post(pages::create_pool))
        .route("/admin/pools/{pool_id}", get(pages::pool))
        .route(
            "/admin/pools/{pool_id}/settings",
            post(pages::update_pool_settings),
        )
        .route(
            "/admin/pools/{pool_id}/status",
            post(pages::set_pool_status),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams",
            post(pages::import_upstream),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/{identity_id}/status",
            post(pages::set_upstream_status),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/assign",
            post(upstreams::assign_page),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/{identity_id}/rename",
            post(upstreams::rename_page),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/{identity_id}/refresh",
            post(upstreams::refresh_page),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/{identity_id}/credentials",
            post(upstreams::credentials_page),
        )
        .route(
            "/admin/pools/{pool_id}/upstreams/{identity_id}/delete",
            post(upstreams::delete_page),
        )
        .route(
            "/admin/pools/{pool_id}/device-links",
            post(upstreams::start_link_page),
        )
        .route(
            "/admin/pools/{pool_id}/device-links/{flow_id}",
            get(upstreams::link_view),
        )
        .route(
            "/admin/pools/{pool_id}/device-links/{flow_id}/poll",
            post(upstreams::poll_link_page),
        )
        .route("/admin/pools/{pool_id}/api-keys", post(pages::create_key))
        .route(
            "/admin/pools/{pool_id}/api-keys/new",
            get(key_wizard::wizard),
        )
        .route(
            "/admin/pools/{pool_id}/api-keys/{key_id}/status",
            post(pages::set_key_status),
        )
        .route(
            "/admin/pools/{pool_id}/api-keys/{key_id}/rotate",
            post(pages::rotate_key),
        )
        .route(
            "/admin/pools/{pool_id}/api-keys/{key_id}/delete",
            post(pages::delete_key),
        )
        .route(
            "/admin/operators",
            get(pages::operators).post(pages::create_operator),
        )
        .route(
            "/admin/operators/{operator_id}/status",
            post(pages::set_operator_status),
        )
        .route(
            "/admin/operators/{operator_id}/totp-reset",
            post(pages::reset_operator_totp),
        )
        .route(
            "/admin/operators/{operator_id}/pools",
            post(pages::set_operator_pools),
        )
        .route(
            "/admin/password",
            get(auth::password_form).post(auth::change_password),
        )
        .route(
            "/login/totp",
            get(security::login_totp_form).post(security::login_totp),
        )
        .route("/admin/security", get(security::page))
        .route("/admin/security/totp/setup", post(security::setup_totp))
        .route("/admin/security/totp/enable", post(security::enable_totp))
        .route("/admin/security/totp/disable", post(security::disable_totp))
        .route(
            "/admin/security/sessions/{session_id}/revoke",
            post(security::revoke_session),
        )
        .route(
            "/admin/security/sessions/revoke-others",
            post(security::revoke_other_sessions),
        )
        .route("/admin/security/tokens", post(security::create_token))
        .route(
            "/admin/security/tokens/{token_id}/revoke",
            post(security::revoke_token),
        )
        .route("/admin/audit", get(pages::audit))
        .route("/admin/audit/{id}", get(pages::audit_detail))
        .route("/admin/request-logs", get(logs::list))
        .route("/admin/request-logs/{id}", get(logs::detail))
        .layer(axum::middleware::map_response(page_headers));
    let api = Router::new()
        .route("/admin/api/me", get(json::me))
        .route("/admin/api/security", get(security::api_security))
        .route(
            "/admin/api/security/sessions/{session_id}/revoke",
            post(security::api_revoke_session),
        )
        .route(
            "/admin/api/security/tokens",
            get(security::api_tokens).post(security::api_create_token),
        )
        .route(
            "/admin/api/security/tokens/{token_id}/revoke",
            post(security::api_revoke_token),
        )
        .route("/admin/api/request-logs/export", get(logs::export))
        .route("/admin/api/pools", get(json::pools).post(json::create_pool))
        .route("/admin/api/pools/{pool_id}", get(json::pool))
        .route(
            "/admin/api/pools/{pool_id}/settings",
            post(json::update_pool_settings),
        )
        .route(
            "/admin/api/pools/{pool_id}/status",
            post(json::set_pool_status),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams",
            post(json::import_upstream),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/{identity_id}/status",
            post(json::set_upstream_status),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/assign",
            post(upstreams::assign_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/{identity_id}/rename",
            post(upstreams::rename_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/{identity_id}/refresh",
            post(upstreams::refresh_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/{identity_id}/credentials",
            post(upstreams::credentials_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/upstreams/{identity_id}",
            delete(upstreams::delete_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/device-links",
            post(upstreams::start_link_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/device-links/{flow_id}",
            get(upstreams::link_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/device-links/{flow_id}/poll",
            post(upstreams::poll_link_json),
        )
        .route(
            "/admin/api/pools/{pool_id}/api-keys",
            post(json::create_key),
        )
        .route(
            "/admin/api/pools/{pool_id}/api-keys/{key_id}/status",
            post(json::set_key_status),
        )
        .route(
            "/admin/api/pools/{pool_id}/api-keys/{key_id}/rotate",
            post(json::rotate_key),
        )
        .route(
            "/admin/api/pools/{pool_id}/api-keys/{key_id}",
            delete(json::delete_key),
        )
        .route(
            "/admin/api/operators",
            get(json::operators).post(json::create_operator),
        )
        .route(
            "/admin/api/operators/{operator_id}/status",
            post(json::set_operator_status),
        )
        .route(
            "/admin/api/operators/{operator_id}/totp-reset",
            post(json::reset_operator_totp),
        )
        .route(
            "/admin/api/operators/{operator_id}/pools",
            post(json::set_operator_pools),
        )
        .route("/admin/api/audit-events", get(json::audit_events))
        .route("/admin/api/audit-events/{id}", get(json::audit_event));
    pages.merge(api)
}

/// Headers on every console page: no caching (pages may show a raw key once),
/// no framing, scripts and styles only from this origin.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // Pages may show a raw key once; static assets set their own caching.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Errors of console handlers: an HTML message page, or the OpenAI-style
/// envelope for the JSON routes.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("sign in or present an operator token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the console accepts")]
    TooLarge,
    /// The identity provider or upstream refused or failed a step.
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal,
}

impl ConsoleError {
    pub fn cross_origin() -> Self {
        ConsoleError::Forbidden(
            "cross-origin request refused: changes must be submitted from the console itself"
                .into(),
        )
    }

    pub fn csrf_token() -> Self {
        ConsoleError::Forbidden(
            "the form's security token is missing or does not match your session; reload the page and try again"
                .into(),
        )
    }

    pub fn pool_not_found() -> Self {
        ConsoleError::NotFound("Pool not found (or not assigned to you)".into())
    }

    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConsoleError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ConsoleError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ConsoleError::Unauthenticated => "operator_auth_required",
            ConsoleError::Forbidden(_) => "forbidden",
            ConsoleError::NotFound(_) => "not_found",
            ConsoleError::BadRequest(_) => "invalid_request",
            ConsoleError::Invalid(_) => "invalid_input",
            ConsoleError::Conflict(_) => "conflict",
            ConsoleError::TooLarge => "body_too_large",
            ConsoleError::Upstream(_) => "upstream_error",
            ConsoleError::Internal => "internal_error",
        }
    }

    /// The JSON envelope for `/admin/api/…`.
    pub fn into_json(self) -> Response {
        (
            self.status(),
            axum::Json(crate::error::error_body(
                &self.to_string(),
                "invalid_request_error",
                self.code(),
                None,
            )),
        )
            .into_response()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = match &self {
            ConsoleError::Forbidden(_) => "Refused",
            ConsoleError::NotFound(_) => "Not found",
            ConsoleError::Internal => "Something went wrong",
            _ => "Cannot do that",
        };
        views::render(
            &views::MessagePage {
                chrome: views::Chrome::signed_out(),
                title: title.into(),
                message: self.to_string(),
            },
            self.status(),
        )
    }
}

impl From<StoreError> for ConsoleError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ConsoleError::NotFound(format!("no {what}")),
            StoreError::Conflict(what) => ConsoleError::Conflict(format!("{what} already exists")),
            StoreError::Refused(why) => ConsoleError::Conflict(why.to_owned()),
            other => {
                tracing::error!(error = %other, "console store call failed");
                ConsoleError::Internal
            }
        }
    }
}

impl From<ControlError> for ConsoleError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::InvalidAuthJson(m) => {
                ConsoleError::Invalid(format!("invalid auth.json: {m}"))
            }
            ControlError::InvalidInput(m) => ConsoleError::Invalid(m),
            ControlError::Store(e) => e.into(),
            ControlError::PasswordHash => ConsoleError::Internal,
        }
    }
}
