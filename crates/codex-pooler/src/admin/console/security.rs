//! The signed-in operator's own security: `/admin/security` (second factor,
//! password link, sessions, API tokens), TOTP enrolment and removal, revoking
//! sessions, creating and revoking the operator's own API tokens, the second
//! sign-in step `/login/totp`, and the JSON twins under
//! `/admin/api/security`. TOTP arithmetic lives in `domain::totp`, SQL in
//! `store::security`; this module decides what may happen and says why not.
//!
//! * The TOTP secret is sealed by the runtime's secret box with
//!   `totp:<operator id>` as associated data, so a sealed secret copied onto
//!   another operator's row (or into an upstream credential column) does not
//!   open.
//! * A correct email and password of an operator with TOTP on opens no
//!   session: it stores a hashed, five-minute challenge in the database (any
//!   instance can finish it) and hands the raw token to the browser in the
//!   `cxp_login` cookie (HttpOnly, SameSite=Strict, Path=/login).
//! * `/login/totp` has no session to derive a CSRF token from; like `/login`
//!   its CSRF defence is the browser's origin, plus the challenge cookie.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use super::ConsoleError;
use super::auth::{user_agent, verify_password};
use super::json::ApiError;
use super::session::{
    ApiOperator, FormPost, JsonPost, Operator, PASSWORD_PAGE, PageOperator, SESSION_TTL_MS,
    clear_cookie, client_ip, is_cross_origin, new_token, presented_cookie, session_cookie,
    token_hash,
};
use super::views::{
    Chrome, LoginPage, LoginTotpPage, RecoveryCodesPage, SecurityPage, SessionView,
    TokenCreatedPage, TokenView, TotpSetupPage, render,
};
use crate::control;
use crate::crypto::KEY_VERSION;
use crate::domain::totp::{self, CodeCheck, PresentedCode};
use crate::runtime::Runtime;
use crate::store::{
    AuditActor, LoginChallengeRow, MAX_RECENT_SECOND_FACTOR_FAILURES, MAX_SECOND_FACTOR_ATTEMPTS,
    NewSession, SealedSecret, SecondFactor, SecondFactorOutcome, StoreError,
};
use crate::time::{now_ms, now_secs};

/// The cookie carrying a sign-in that waits for its second factor.
pub const LOGIN_COOKIE: &str = "cxp_login";
/// How long the second sign-in step stays open.
pub const LOGIN_CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;

/// Associated data of an operator's sealed TOTP secret.
fn secret_aad(operator_id: &str) -> String {
    format!("totp:{operator_id}")
}

/// Opens a sealed TOTP secret; a secret that does not open (another key, a
/// tampered row) is an internal error, not a wrong code.
fn open_secret(
    rt: &Runtime,
    operator_id: &str,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<Vec<u8>, ConsoleError> {
    rt.secret_box
        .open(&secret_aad(operator_id), ciphertext, nonce)
        .map_err(|err| {
            tracing::error!(error = %err, "TOTP secret could not be opened");
            ConsoleError::Internal
        })
}

/// Notices of the security page, by code.
fn notice(code: Option<&str>) -> Option<String> {
    let text = match code? {
        "totp_disabled" => "Two-factor sign-in is off; its recovery codes no longer work.",
        "session_revoked" => "The session was signed out.",
        "sessions_revoked" => "Your other sessions were signed out.",
        "no_other_sessions" => "You had no other sessions; nothing was changed.",
        "token_revoked" => {
            "The API token was revoked; calls presenting it are refused from now on."
        }
        _ => return None,
    };
    Some(text.to_owned())
}

async fn security_page(
    rt: &Runtime,
    op: &Operator,
    error: Option<ConsoleError>,
    notice_code: Option<&str>,
) -> Result<Response, ConsoleError> {
    security_page_with_label(rt, op, error, notice_code, String::new()).await
}

/// The security page, with `token_label` kept in the new-token form.
async fn security_page_with_label(
    rt: &Runtime,
    op: &Operator,
    error: Option<ConsoleError>,
    notice_code: Option<&str>,
    token_label: String,
) -> Result<Response, ConsoleError> {
    let tokens: Vec<TokenView> = rt
        .store
        .list_operator_tokens(&op.id)
        .await?
        .iter()
        .map(TokenView::from)
        .collect();
    let status = rt.store.totp_status(&op.id).await?;
    let sessions: Vec<SessionView> = rt
        .store
        .list_operator_sessions(&op.id)
        .await?
        .iter()
        .map(|s| SessionView::new(s, op.session_id.as_deref()))
        .collect();
    let http_status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    Ok(render(
        &SecurityPage {
            chrome: Chrome::for_operator(op, "security"),
            totp_enabled: status.enabled,
            totp_pending: status.pending,
            recovery_codes_left: status.recovery_codes_left,
            other_sessions: sessions.iter().filter(|s| !s.current).count(),
            sessions,
            tokens,
            token_label,
            error: error.map(|e| e.to_string()),
            notice: notice(notice_code),
        },
        http_status,
    ))
}

#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

pub async fn page(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, ConsoleError> {
    security_page(&rt, &op, None, q.notice.as_deref()).await
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

/// Whether `given` is the signed-in operator's current password (asked again
/// before changes a session alone must not make).
async fn password_confirmed(
    rt: &Runtime,
    op: &Operator,
    given: &str,
) -> Result<bool, ConsoleError> {
    let stored = rt
        .store
        .find_operator(&op.id)
        .await?
        .ok_or(ConsoleError::Unauthenticated)?;
    Ok(verify_password(stored.password_hash, given.to_owned()).await)
}

/// Starts enrolment: a new secret, sealed and stored as pending (replacing an
/// earlier pending one), shown once as base32 and as an `otpauth://` URI.
pub async fn setup_totp(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<DisableForm>,
) -> Result<Response, ConsoleError> {
    // A session left open must not be enough to put a second factor the
    // operator does not hold on their account: the password is asked again.
    if !password_confirmed(&rt, &op, &form.current_password).await? {
        let err = ConsoleError::Invalid(
            "the current password is incorrect; two-factor sign-in was not set up".into(),
        );
        return security_page(&rt, &op, Some(err), None).await;
    }
    let secret = totp::new_secret();
    let (ciphertext, nonce) = rt
        .secret_box
        .seal(&secret_aad(&op.id), &secret)
        .map_err(|_| ConsoleError::Internal)?;
    let sealed = SealedSecret {
        ciphertext,
        nonce,
        key_version: KEY_VERSION,
    };
    match rt
        .store
        .start_totp_setup(&op.actor(), &op.id, &sealed)
        .await
    {
        Ok(()) => Ok(setup_page(&op, &secret, None)),
        Err(StoreError::Conflict(_)) => security_page(&rt, &op, Some(already_on()), None).await,
        Err(other) => Err(other.into()),
    }
}

fn already_on() -> ConsoleError {
    ConsoleError::Conflict(
        "two-factor sign-in is already on; turn it off first to set up another authenticator"
            .into(),
    )
}

fn setup_page(op: &Operator, secret: &[u8], error: Option<ConsoleError>) -> Response {
    let status = error.as_ref().map_or(StatusCode::OK, ConsoleError::status);
    render(
        &TotpSetupPage {
            chrome: Chrome::for_operator(op, "security"),
            secret: totp::secret_base32(secret),
            uri: totp::otpauth_uri(secret, &op.email),
            error: error.map(|e| e.to_string()),
        },
        status,
    )
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// Confirms enrolment with a code of the pending secret: TOTP goes on, ten
/// recovery codes are made and shown once (`auth.totp_enrolled`). A wrong
/// code shows the same secret again and changes nothing.
pub async fn enable_totp(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<CodeForm>,
) -> Result<Response, ConsoleError> {
    let pending = match rt.store.find_totp(&op.id).await? {
        Some(row) if row.enabled_at.is_some() => {
            return security_page(&rt, &op, Some(already_on()), None).await;
        }
        Some(row) => row,
        None => {
            return security_page(&rt, &op, Some(no_pending_setup()), None).await;
        }
    };
    let secret = open_secret(
        &rt,
        &op.id,
        &pending.secret_ciphertext,
        &pending.secret_nonce,
    )?;
    let code = match totp::classify(&form.code) {
        PresentedCode::Totp(code) => code,
        PresentedCode::Recovery(_) | PresentedCode::Malformed => {
            let err = ConsoleError::Invalid(
                "enter the 6 digits your authenticator app shows for this account; nothing was changed"
                    .into(),
            );
            return Ok(setup_page(&op, &secret, Some(err)));
        }
    };
    let step = match totp::check_code(&secret, &code, now_secs(), None) {
        CodeCheck::Valid(step) => step,
        CodeCheck::Reused | CodeCheck::Wrong => {
            let err = ConsoleError::Invalid(format!(
                "{code} is not the current code for this secret (codes change every 30 seconds; check that the device's clock is right); two-factor sign-in is still off"
            ));
            return Ok(setup_page(&op, &secret, Some(err)));
        }
    };
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| totp::recovery_code_hash(c))
        .collect();
    match rt
        .store
        .enable_totp(&op.actor(), &op.id, &pending.secret_nonce, step, &hashes)
        .await
    {
        Ok(()) => Ok(render(
            &RecoveryCodesPage {
                chrome: Chrome::for_operator(&op, "security"),
                codes,
            },
            StatusCode::OK,
        )),
        // Enabled, or replaced by a newer setup, since it was read.
        Err(StoreError::NotFound(_)) => {
            security_page(&rt, &op, Some(no_pending_setup()), None).await
        }
        Err(other) => Err(other.into()),
    }
}

fn no_pending_setup() -> ConsoleError {
    ConsoleError::Conflict(
        "no two-factor setup is waiting for a code (it was finished or replaced in another tab); choose “Set up two-factor” to start again"
            .into(),
    )
}

#[derive(Debug, Deserialize)]
pub struct DisableForm {
    #[serde(default)]
    current_password: String,
}

/// Turns TOTP off after the current password is given again
/// (`auth.totp_disabled`).
pub async fn disable_totp(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<DisableForm>,
) -> Result<Response, ConsoleError> {
    if !password_confirmed(&rt, &op, &form.current_password).await? {
        let err = ConsoleError::Invalid(
            "the current password is incorrect; two-factor sign-in stays on".into(),
        );
        return security_page(&rt, &op, Some(err), None).await;
    }
    match rt.store.disable_totp(&op.actor(), &op.id).await {
        Ok(()) => Ok(Redirect::to("/admin/security?notice=totp_disabled").into_response()),
        Err(StoreError::NotFound(_)) => {
            let err = ConsoleError::Conflict("two-factor sign-in is not on".into());
            security_page(&rt, &op, Some(err), None).await
        }
        Err(other) => Err(other.into()),
    }
}

/// Signs out one of the operator's own sessions (`auth.session_revoked`);
/// revoking the current one signs this browser out too.
pub async fn revoke_session(
    State(rt): State<Arc<Runtime>>,
    Path(session_id): Path<String>,
    FormPost(op, Empty {}): FormPost<Empty>,
) -> Result<Response, ConsoleError> {
    revoke_own_session(&rt, &op, &session_id).await?;
    if op.session_id.as_deref() == Some(session_id.as_str()) {
        return Ok((
            [(header::SET_COOKIE, clear_cookie())],
            Redirect::to("/login?signed_out=1"),
        )
            .into_response());
    }
    Ok(Redirect::to("/admin/security?notice=session_revoked#sessions").into_response())
}

async fn revoke_own_session(
    rt: &Runtime,
    op: &Operator,
    session_id: &str,
) -> Result<(), ConsoleError> {
    match rt
        .store
        .revoke_operator_session(&op.actor(), &op.id, session_id)
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(ConsoleError::NotFound(
            "no active session of yours has this id (it may have ended already)".into(),
        )),
        Err(other) => Err(other.into()),
    }
}

/// Signs out every session of the operator but this one
/// (`auth.sessions_revoked`, one event with the count).
pub async fn revoke_other_sessions(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, Empty {}): FormPost<Empty>,
) -> Result<Response, ConsoleError> {
    let keep = op.session_id.clone().unwrap_or_default();
    let revoked = rt
        .store
        .revoke_other_sessions(&op.actor(), &op.id, &keep)
        .await?;
    let code = if revoked == 0 {
        "no_other_sessions"
    } else {
        "sessions_revoked"
    };
    Ok(Redirect::to(&format!("/admin/security?notice={code}#sessions")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    label: String,
}

/// Creates an API token for the signed-in operator (`operator_token.create`)
/// and shows it once. A refused label shows the security page with the
/// reason and writes nothing.
pub async fn create_token(
    State(rt): State<Arc<Runtime>>,
    FormPost(op, form): FormPost<TokenForm>,
) -> Result<Response, ConsoleError> {
    match control::issue_operator_token(&rt.store, &op.actor(), &op.id, &form.label).await {
        Ok(token) => Ok(render(
            &TokenCreatedPage {
                chrome: Chrome::for_operator(&op, "security"),
                label: form.label.trim().to_owned(),
                prefix: token.prefix,
                raw_token: token.raw,
            },
            StatusCode::CREATED,
        )),
        Err(control::ControlError::InvalidInput(message)) => {
            let err = ConsoleError::Invalid(message);
            security_page_with_label(&rt, &op, Some(err), None, form.label).await
        }
        Err(other) => Err(other.into()),
    }
}

/// Revokes one of the signed-in operator's own API tokens
/// (`operator_token.revoke`).
pub async fn revoke_token(
    State(rt): State<Arc<Runtime>>,
    Path(token_id): Path<String>,
    FormPost(op, Empty {}): FormPost<Empty>,
) -> Result<Response, ConsoleError> {
    revoke_own_token(&rt, &op, &token_id).await?;
    Ok(Redirect::to("/admin/security?notice=token_revoked#tokens").into_response())
}

async fn revoke_own_token(rt: &Runtime, op: &Operator, token_id: &str) -> Result<(), ConsoleError> {
    match rt
        .store
        .revoke_operator_token(&op.actor(), &op.id, token_id)
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(ConsoleError::NotFound(
            "no API token of yours has this id; nothing was changed".into(),
        )),
        Err(StoreError::Refused(why)) => Err(ConsoleError::Conflict(why.to_owned())),
        Err(other) => Err(other.into()),
    }
}

/// `Set-Cookie` value carrying a sign-in challenge.
fn login_cookie(raw: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!(
        "{LOGIN_COOKIE}={raw}; HttpOnly; SameSite=Strict; Path=/login; Max-Age={}{}",
        LOGIN_CHALLENGE_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

fn clear_login_cookie() -> String {
    format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0")
}

/// After a correct email and password of an operator with TOTP on: stores
/// the challenge and sends the browser to `/login/totp`.
pub(super) async fn begin_second_factor(
    rt: &Runtime,
    parts: &Parts,
    operator_id: &str,
) -> Result<Response, ConsoleError> {
    if rt.store.recent_second_factor_failures(operator_id).await?
        >= MAX_RECENT_SECOND_FACTOR_FAILURES
    {
        return Ok(render(
            &LoginPage {
                chrome: Chrome::signed_out(),
                email: String::new(),
                error: Some(
                    "Too many wrong two-factor codes for this account in the last 15 minutes. Wait, then sign in again."
                        .into(),
                ),
                notice: None,
            },
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let (raw, hash) = new_token();
    let ip = client_ip(parts);
    let ua = user_agent(&parts.headers);
    rt.store
        .create_login_challenge(
            operator_id,
            &hash,
            now_ms() + LOGIN_CHALLENGE_TTL_MS,
            ip.as_deref(),
            ua.as_deref(),
        )
        .await?;
    Ok((
        [(header::SET_COOKIE, login_cookie(&raw, &parts.headers))],
        Redirect::to("/login/totp"),
    )
        .into_response())
}

/// The presented challenge token and its live row, if any.
async fn presented_challenge(
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<Option<(String, LoginChallengeRow)>, ConsoleError> {
    let Some(raw) = presented_cookie(headers, LOGIN_COOKIE) else {
        return Ok(None);
    };
    let hash = token_hash(&raw);
    Ok(rt
        .store
        .find_login_challenge(&hash)
        .await?
        .map(|row| (hash, row)))
}

/// A challenge spent on wrong codes is audited (`auth.second_factor_failed`,
/// outcome failed): a right password with wrong codes suggests the password
/// is known to someone else. At most one event per five guesses.
async fn record_spent_challenge(
    rt: &Runtime,
    parts: &Parts,
    challenge: &LoginChallengeRow,
) -> Result<(), ConsoleError> {
    let actor = AuditActor {
        kind: "operator",
        id: Some(challenge.operator_id.clone()),
        label: challenge.email.clone(),
        ip: client_ip(parts),
    };
    rt.store
        .record_second_factor_failure(&actor, MAX_SECOND_FACTOR_ATTEMPTS)
        .await?;
    Ok(())
}

/// Answers a wrong code: how many attempts are left on this challenge, or,
/// after the last one, back to the password step.
fn wrong_code(left: i64, refuse: impl Fn(&str) -> Response, message: &str) -> Response {
    if left == 0 {
        return (
            [(header::SET_COOKIE, clear_login_cookie())],
            render(
                &LoginPage {
                    chrome: Chrome::signed_out(),
                    email: String::new(),
                    error: Some(
                        "Too many wrong codes. Sign in again with your email and password.".into(),
                    ),
                    notice: None,
                },
                StatusCode::UNAUTHORIZED,
            ),
        )
            .into_response();
    }
    let plural = if left == 1 { "attempt" } else { "attempts" };
    refuse(&format!("{message} ({left} {plural} left.)"))
}

/// The sign-in page, for a challenge that is missing, expired or used.
fn challenge_gone() -> Response {
    (
        [(header::SET_COOKIE, clear_login_cookie())],
        render(
            &LoginPage {
                chrome: Chrome::signed_out(),
                email: String::new(),
                error: Some(
                    "The two-factor step expired (it lasts 5 minutes) or was already completed. Sign in again with your email and password."
                        .into(),
                ),
                notice: None,
            },
            StatusCode::UNAUTHORIZED,
        ),
    )
        .into_response()
}

pub async fn login_totp_form(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    match presented_challenge(&rt, &headers).await? {
        Some((_, challenge)) => Ok(render(
            &LoginTotpPage {
                chrome: Chrome::signed_out(),
                email: challenge.email,
                error: None,
            },
            StatusCode::OK,
        )),
        None => Ok((
            [(header::SET_COOKIE, clear_login_cookie())],
            Redirect::to("/login"),
        )
            .into_response()),
    }
}

/// Completes a sign-in with a TOTP code or a recovery code. Success opens
/// the session exactly like `/login` does without TOTP; a refused code is
/// answered 401 with the reason and writes nothing.
pub async fn login_totp(
    State(rt): State<Arc<Runtime>>,
    parts: Parts,
    Form(form): Form<CodeForm>,
) -> Result<Response, ConsoleError> {
    if is_cross_origin(&parts.headers) {
        return Err(ConsoleError::cross_origin());
    }
    let Some((challenge_hash, challenge)) = presented_challenge(&rt, &parts.headers).await? else {
        return Ok(challenge_gone());
    };
    let refuse = |message: &str| {
        render(
            &LoginTotpPage {
                chrome: Chrome::signed_out(),
                email: challenge.email.clone(),
                error: Some(message.to_owned()),
            },
            StatusCode::UNAUTHORIZED,
        )
    };
    let used_message = "That code was already used to sign in. Wait for your authenticator app to show the next code.";
    // Every code tried takes an attempt first (a malformed entry is no guess).
    let left = if matches!(totp::classify(&form.code), PresentedCode::Malformed) {
        MAX_SECOND_FACTOR_ATTEMPTS
    } else {
        match rt
            .store
            .claim_second_factor_attempt(&challenge_hash)
            .await?
        {
            Some(left) => left,
            None => return Ok(challenge_gone()),
        }
    };
    let recovery_hash;
    let factor = match totp::classify(&form.code) {
        PresentedCode::Totp(code) => {
            let secret = open_secret(
                &rt,
                &challenge.operator_id,
                &challenge.secret_ciphertext,
                &challenge.secret_nonce,
            )?;
            match totp::check_code(&secret, &code, now_secs(), challenge.last_used_step) {
                CodeCheck::Valid(step) => SecondFactor::Totp { step },
                CodeCheck::Reused => return Ok(refuse(used_message)),
                CodeCheck::Wrong => {
                    if left == 0 {
                        record_spent_challenge(&rt, &parts, &challenge).await?;
                    }
                    return Ok(wrong_code(
                        left,
                        refuse,
                        "That code is not valid. Enter the code your authenticator app shows now (codes change every 30 seconds; check the device's clock), or a recovery code.",
                    ));
                }
            }
        }
        PresentedCode::Recovery(_) => {
            recovery_hash = totp::recovery_code_hash(&form.code).unwrap_or_default();
            match rt
                .store
                .find_recovery_code(&challenge.operator_id, &recovery_hash)
                .await?
            {
                Some(false) => SecondFactor::RecoveryCode {
                    code_hash: &recovery_hash,
                },
                Some(true) => {
                    return Ok(refuse(
                        "That recovery code was already used; each recovery code works once.",
                    ));
                }
                None => {
                    if left == 0 {
                        record_spent_challenge(&rt, &parts, &challenge).await?;
                    }
                    return Ok(wrong_code(
                        left,
                        refuse,
                        "That is not one of your recovery codes.",
                    ));
                }
            }
        }
        PresentedCode::Malformed => {
            return Ok(refuse(
                "Enter the 6-digit code from your authenticator app, or a recovery code like ABCD-EFGH-IJKL-MNOP.",
            ));
        }
    };
    let (raw, session_hash) = new_token();
    let ip = client_ip(&parts);
    let ua = user_agent(&parts.headers);
    let actor = AuditActor {
        kind: "operator",
        id: Some(challenge.operator_id.clone()),
        label: challenge.email.clone(),
        ip: ip.clone(),
    };
    let outcome = rt
        .store
        .complete_login_challenge(
            &actor,
            &challenge_hash,
            factor,
            &NewSession {
                operator_id: &challenge.operator_id,
                token_hash: &session_hash,
                expires_at: now_ms() + SESSION_TTL_MS,
                ip: ip.as_deref(),
                user_agent: ua.as_deref(),
            },
        )
        .await?;
    match outcome {
        SecondFactorOutcome::SignedIn { .. } => {}
        SecondFactorOutcome::ChallengeGone => return Ok(challenge_gone()),
        SecondFactorOutcome::CodeUsed => return Ok(refuse(used_message)),
    }
    let next = if challenge.must_change_password {
        PASSWORD_PAGE
    } else {
        "/admin/pools"
    };
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, session_cookie(&raw, &parts.headers)),
            (header::SET_COOKIE, clear_login_cookie()),
        ]),
        Redirect::to(next),
    )
        .into_response())
}

/// `GET /admin/api/security`: the second factor's state and the caller's
/// live sessions (`current` marks the session the call came with).
pub async fn api_security(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
) -> Result<Response, ApiError> {
    let status = rt
        .store
        .totp_status(&op.id)
        .await
        .map_err(ConsoleError::from)?;
    let sessions: Vec<serde_json::Value> = rt
        .store
        .list_operator_sessions(&op.id)
        .await
        .map_err(ConsoleError::from)?
        .into_iter()
        .map(|s| {
            let current = op.session_id.as_deref() == Some(s.id.as_str());
            json!({"id": s.id, "created_at": s.created_at, "last_seen_at": s.last_seen_at,
                   "expires_at": s.expires_at, "ip": s.ip, "user_agent": s.user_agent,
                   "current": current})
        })
        .collect();
    Ok(Json(json!({
        "totp": {"enabled": status.enabled, "pending": status.pending,
                 "recovery_codes_left": status.recovery_codes_left},
        "sessions": sessions,
    }))
    .into_response())
}

/// `POST /admin/api/security/sessions/{session_id}/revoke`.
pub async fn api_revoke_session(
    State(rt): State<Arc<Runtime>>,
    Path(session_id): Path<String>,
    JsonPost(op, _): JsonPost<serde_json::Value>,
) -> Result<Response, ApiError> {
    revoke_own_session(&rt, &op, &session_id).await?;
    Ok(Json(json!({"session_id": session_id, "revoked": true})).into_response())
}

/// `GET /admin/api/security/tokens`: the caller's API tokens (never a hash
/// or a raw token).
pub async fn api_tokens(
    State(rt): State<Arc<Runtime>>,
    ApiOperator(op): ApiOperator,
) -> Result<Response, ApiError> {
    let tokens: Vec<serde_json::Value> = rt
        .store
        .list_operator_tokens(&op.id)
        .await
        .map_err(ConsoleError::from)?
        .into_iter()
        .map(|t| {
            let status = if t.revoked_at.is_none() {
                "active"
            } else {
                "revoked"
            };
            json!({"id": t.id, "label": t.label, "prefix": t.token_prefix,
                   "created_at": t.created_at, "last_used_at": t.last_used_at,
                   "revoked_at": t.revoked_at, "status": status})
        })
        .collect();
    Ok(Json(json!({"tokens": tokens})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenInput {
    #[serde(default)]
    label: String,
}

/// `POST /admin/api/security/tokens` `{label}`: 201 with the id, the raw
/// token (this response is the only place it appears) and its prefix.
pub async fn api_create_token(
    State(rt): State<Arc<Runtime>>,
    JsonPost(op, input): JsonPost<TokenInput>,
) -> Result<Response, ApiError> {
    let token = control::issue_operator_token(&rt.store, &op.actor(), &op.id, &input.label)
        .await
        .map_err(ConsoleError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": token.id, "token": token.raw, "prefix": token.prefix})),
    )
        .into_response())
}

/// `POST /admin/api/security/tokens/{token_id}/revoke`.
pub async fn api_revoke_token(
    State(rt): State<Arc<Runtime>>,
    Path(token_id): Path<String>,
    JsonPost(op, _): JsonPost<serde_json::Value>,
) -> Result<Response, ApiError> {
    revoke_own_token(&rt, &op, &token_id).await?;
    Ok(Json(json!({"token_id": token_id, "revoked": true})).into_response())
}
