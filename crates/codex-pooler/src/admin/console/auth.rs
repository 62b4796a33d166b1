//! First run and sign-in: `/bootstrap` creates the owner once with a one-time
//! token printed at start-up; `/login` checks email and password (argon2id,
//! with a dummy verification for unknown emails so timing reveals nothing) and
//! opens a database session; `/logout` revokes it.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ConsoleError;
use super::session::{
    FormPost, Operator, PASSWORD_PAGE, PageOperator, SESSION_TTL_MS, clear_cookie, is_cross_origin,
    new_token, session_cookie, token_hash,
};
use super::views::{BootstrapPage, Chrome, LoginPage, PasswordPage, render};
use crate::runtime::Runtime;
use crate::store::{AuditActor, NewSession, Store, StoreError, StoreResult};
use crate::time::now_ms;

/// How long a bootstrap token printed at start-up stays valid.
const BOOTSTRAP_TTL_MS: i64 = 24 * 3600 * 1000;

/// When no operator exists yet, stores a new one-time bootstrap token and
/// returns it (raw) for the caller to print; otherwise `None`.
pub async fn prepare_bootstrap(store: &Store) -> StoreResult<Option<String>> {
    if store.has_operators().await? {
        return Ok(None);
    }
    let (raw, hash) = new_token();
    store
        .create_bootstrap_token(&hash, now_ms() + BOOTSTRAP_TTL_MS)
        .await?;
    Ok(Some(raw))
}

/// Checks a password against a stored PHC string on the blocking pool.
pub(super) async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A valid argon2id hash of a random password, verified against when the email
/// is unknown so the answer takes as long as for a known one.
fn dummy_hash() -> String {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            crate::control::hash_password(&crate::control::generate_password()).unwrap_or_default()
        })
        .clone()
}

/// The `User-Agent` a session or sign-in step records, cut to 256 characters.
pub(super) fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect())
}

#[derive(Debug, Deserialize, Default)]
pub struct BootstrapQuery {
    #[serde(default)]
    token: String,
}

pub async fn bootstrap_form(
    State(rt): State<Arc<Runtime>>,
    Query(q): Query<BootstrapQuery>,
) -> Result<Response, ConsoleError> {
    let closed = rt.store.has_operators().await?;
    Ok(render(
        &BootstrapPage {
            chrome: Chrome::signed_out(),
            token: q.token,
            email: String::new(),
            error: None,
            closed,
        },
        StatusCode::OK,
    ))
}

#[derive(Debug, Deserialize)]
pub struct BootstrapForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_repeat: String,
}

pub async fn bootstrap(
    State(rt): State<Arc<Runtime>>,
    parts: Parts,
    axum::Form(form): axum::Form<BootstrapForm>,
) -> Result<Response, ConsoleError> {
    if is_cross_origin(&parts.headers) {
        return Err(ConsoleError::cross_origin());
    }
    let page = |error: &str, status: StatusCode, closed: bool| {
        render(
            &BootstrapPage {
                chrome: Chrome::signed_out(),
                token: form.token.clone(),
                email: form.email.clone(),
                error: Some(error.to_owned()),
                closed,
            },
            status,
        )
    };
    if rt.store.has_operators().await? {
        return Ok(page("an owner already exists", StatusCode::CONFLICT, true));
    }
    let email = form.email.trim();
    if !email.contains('@') || email.len() > 254 {
        return Ok(page(
            "Email must be an address like name@example.com.",
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
        ));
    }
    if form.password.chars().count() < 12 {
        return Ok(page(
            "The password must be at least 12 characters.",
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
        ));
    }
    if form.password != form.password_repeat {
        return Ok(page(
            "The two passwords differ.",
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
        ));
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::control::hash_password(&password))
        .await
        .map_err(|_| ConsoleError::Internal)??;
    let ip = super::session::client_ip(&parts);
    match rt
        .store
        .bootstrap_owner(&token_hash(form.token.trim()), email, &hash, ip.as_deref())
        .await
    {
        Ok(_) => Ok(Redirect::to("/login?bootstrapped=1").into_response()),
        Err(StoreError::Conflict(_)) => {
            Ok(page("an owner already exists", StatusCode::CONFLICT, true))
        }
        Err(StoreError::NotFound(_)) => Ok(page(
            "The bootstrap token is wrong, expired or already used. Restart the gateway to print a new one.",
            StatusCode::FORBIDDEN,
            false,
        )),
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct LoginQuery {
    expired: Option<String>,
    signed_out: Option<String>,
    bootstrapped: Option<String>,
}

pub async fn login_form(
    State(rt): State<Arc<Runtime>>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ConsoleError> {
    if !rt.store.has_operators().await? {
        return Ok(Redirect::to("/bootstrap").into_response());
    }
    let notice = if q.expired.is_some() {
        Some("Your session has expired or was signed out. Sign in again.")
    } else if q.signed_out.is_some() {
        Some("You have signed out.")
    } else if q.bootstrapped.is_some() {
        Some("The owner was created. Sign in with the email and password you chose.")
    } else {
        None
    };
    Ok(render(
        &LoginPage {
            chrome: Chrome::signed_out(),
            email: String::new(),
            error: None,
            notice: notice.map(str::to_owned),
        },
        StatusCode::OK,
    ))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(rt): State<Arc<Runtime>>,
    parts: Parts,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    if is_cross_origin(&parts.headers) {
        return Err(ConsoleError::cross_origin());
    }
    let throttle_key = format!(
        "{}|{}",
        form.email.trim().to_ascii_lowercase(),
        super::session::client_ip(&parts).unwrap_or_default()
    );
    let now = crate::time::now_secs();
    if let Some(wait) = rt.sign_in_throttle.blocked_for(&throttle_key, now) {
        return Ok(render(
            &LoginPage {
                chrome: Chrome::signed_out(),
                email: form.email.trim().to_owned(),
                error: Some(format!(
                    "Too many failed sign-ins for this email from your address. Try again in {} minutes.",
                    (wait + 59) / 60
                )),
                notice: None,
            },
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let found = rt.store.find_operator_by_email(&form.email).await?;
    let hash = found
        .as_ref()
        .map(|o| o.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let verified = verify_password(hash, form.password.clone()).await;
    let operator = match found {
        Some(o) if verified && o.status == "active" => {
            rt.sign_in_throttle.succeed(&throttle_key);
            o
        }
        _ => {
            rt.sign_in_throttle.fail(&throttle_key, now);
            return Ok(render(
                &LoginPage {
                    chrome: Chrome::signed_out(),
                    email: form.email.trim().to_owned(),
                    error: Some("Email or password is incorrect.".into()),
                    notice: None,
                },
                StatusCode::UNAUTHORIZED,
            ));
        }
    };
    // With TOTP on, the password alone opens no session: the second step
    // (`/login/totp`) does.
    if rt.store.totp_enabled(&operator.id).await? {
        return super::security::begin_second_factor(&rt, &parts, &operator.id).await;
    }
    let (raw, hash) = new_token();
    let ip = super::session::client_ip(&parts);
    let ua = user_agent(&parts.headers);
    let actor = AuditActor {
        kind: "operator",
        id: Some(operator.id.clone()),
        label: operator.email.clone(),
        ip: ip.clone(),
    };
    rt.store
        .create_session(
            &actor,
            &NewSession {
                operator_id: &operator.id,
                token_hash: &hash,
                expires_at: now_ms() + SESSION_TTL_MS,
                ip: ip.as_deref(),
                user_agent: ua.as_deref(),
            },
        )
        .await?;
    // Someone signing in with a temporary password chooses their own first.
    let next = if operator.must_change_password {
        PASSWORD_PAGE
    } else {
        "/admin/pools"
    };
    Ok((
        [(header::SET_COOKIE, session_cookie(&raw, &parts.headers))],
        Redirect::to(next),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn logout(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, Empty {}): FormPost<Empty>,
) -> Result<Response, ConsoleError> {
    if let Some(session) = &op.session_id {
        rt.store.revoke_session(&op.actor(), session).await?;
    }
    Ok((
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/login?signed_out=1"),
    )
        .into_response())
}

fn password_page(op: &Operator, error: Option<&str>, status: StatusCode) -> Response {
    render(
        &PasswordPage {
            chrome: Chrome::for_operator(op, "password"),
            required: op.must_change_password,
            error: error.map(str::to_owned),
        },
        status,
    )
}

pub async fn password_form(PageOperator(op): PageOperator) -> Response {
    password_page(&op, None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_repeat: String,
}

/// Replaces the signed-in operator's password; the current one is asked for
/// again so a session left open cannot be turned into a lasting takeover.
/// The operator's other sessions are signed out in the same transaction: a
/// password change is what someone does who fears the old one leaked.
pub async fn change_password(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<PasswordForm>,
) -> Result<Response, ConsoleError> {
    let refuse = |message: &str, status| Ok(password_page(&op, Some(message), status));
    let stored = rt
        .store
        .find_operator(&op.id)
        .await?
        .ok_or(ConsoleError::Unauthenticated)?;
    if !verify_password(stored.password_hash, form.current_password.clone()).await {
        return refuse(
            "The current password is incorrect.",
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if form.password.chars().count() < 12 {
        return refuse(
            "The new password must be at least 12 characters.",
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if form.password != form.password_repeat {
        return refuse(
            "The two new passwords differ.",
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if form.password == form.current_password {
        return refuse(
            "The new password must differ from the current one.",
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::control::hash_password(&password))
        .await
        .map_err(|_| ConsoleError::Internal)??;
    rt.store
        .change_operator_password(
            &op.actor(),
            &op.id,
            &hash,
            op.must_change_password,
            op.session_id.as_deref(),
        )
        .await?;
    Ok(Redirect::to("/admin/pools?notice=password_changed").into_response())
}
