//! Who is calling the console, and whether a change may go ahead.
//!
//! * Sessions: a random 32-byte token in the `cxp_session` cookie (HttpOnly,
//!   SameSite=Lax, Path=/); the database holds only its SHA-256.
//! * CSRF: every POST must be same-origin by `Sec-Fetch-Site`/`Origin` when the
//!   browser sends them, and must carry the session's CSRF token (a hidden
//!   `csrf` form field, or the `X-CSRF-Token` header for JSON). The token is
//!   derived from the session token, so nothing more is stored.
//! * The JSON API also accepts an operator token (`Authorization: Bearer`),
//!   which is not a browser credential and needs no CSRF check. Tokens are
//!   looked up on every call (no cache), so a revoked one stops at once.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::ConsoleError;
use crate::domain::keys::{OPERATOR_TOKEN_KIND, hashes_match, parse};
use crate::runtime::Runtime;
use crate::store::{AuditActor, OperatorTokenRow, PoolScope};
use crate::time::now_ms;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cxp_session";
/// Session lifetime.
pub const SESSION_TTL_MS: i64 = 14 * 24 * 3600 * 1000;
/// Largest form or JSON body the console reads (a 64 KB auth.json, URL-encoded).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Where an operator with a temporary password chooses their own.
pub const PASSWORD_PAGE: &str = "/admin/password";
/// How often `last_seen_at` of a busy session, or `last_used_at` of a busy
/// operator token, is written.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Notes that an operator token authenticated a call: writes `last_used_at`
/// when it was never set or is older than a minute, so a busy script costs
/// one UPDATE a minute, not one per call. A failed write is logged and does
/// not refuse the call.
pub async fn note_token_use(rt: &Runtime, token: &OperatorTokenRow) {
    if token
        .last_used_at
        .is_some_and(|at| now_ms() - at <= TOUCH_EVERY_MS)
    {
        return;
    }
    if let Err(err) = rt.store.touch_operator_token(&token.id).await {
        tracing::warn!(error = %err, "could not note operator token use");
    }
}

/// Why the JSON API refuses a session whose operator must still replace a
/// temporary password (every `/admin/api/…` route but `GET /admin/api/me`).
pub fn password_change_required() -> String {
    format!(
        "you must change your temporary password at {PASSWORD_PAGE} before using the admin API; until then only GET /admin/api/me answers"
    )
}

/// A fresh random token (32 bytes, base64url) and its stored SHA-256 (hex).
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let raw = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&raw);
    (raw, hash)
}

/// SHA-256 (hex) of a session or bootstrap token.
pub fn token_hash(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The CSRF token belonging to a session token.
pub fn csrf_for(raw_session: &str) -> String {
    hex::encode(Sha256::digest(format!("cxp-csrf:{raw_session}").as_bytes()))
}

/// `Set-Cookie` value opening a session.
pub fn session_cookie(raw: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!(
        "{SESSION_COOKIE}={raw}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
        SESSION_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value removing the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0")
}

/// The session token presented in the `Cookie` header, if any.
pub fn presented_session(headers: &HeaderMap) -> Option<String> {
    presented_cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name` in the `Cookie` header, if present, non-empty
/// and no longer than a token can be.
pub fn presented_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// True when a browser says the request comes from another site: a
/// `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` whose host
/// differs from `Host`. Requests carrying neither (non-browser clients) pass;
/// they still need the CSRF token.
pub fn is_cross_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        return match (authority, host) {
            (Some(a), Some(h)) => !a.eq_ignore_ascii_case(h),
            _ => true,
        };
    }
    false
}

/// The client address of the connection, when the server records it.
pub fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// A signed-in operator, by session cookie or operator token.
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: String,
    pub email: String,
    pub role: String,
    /// The session, when signed in through the browser.
    pub session_id: Option<String>,
    /// The session's CSRF token (empty for operator tokens).
    pub csrf: String,
    pub ip: Option<String>,
    /// Signed in with a temporary password that must be replaced before
    /// anything else (sessions only).
    pub must_change_password: bool,
}

impl Operator {
    pub fn is_owner(&self) -> bool {
        self.role == "owner"
    }

    /// The Pools this operator may see.
    pub fn scope(&self) -> PoolScope<'_> {
        if self.is_owner() {
            PoolScope::All
        } else {
            PoolScope::AssignedTo(&self.id)
        }
    }

    /// This operator as the actor of audit events.
    pub fn actor(&self) -> AuditActor {
        AuditActor {
            kind: "operator",
            id: Some(self.id.clone()),
            label: self.email.clone(),
            ip: self.ip.clone(),
        }
    }

    /// Refuses a change that the owner alone may make.
    pub fn require_owner(&self) -> Result<(), ConsoleError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden("only the owner can do this".into()))
        }
    }

    fn csrf_matches(&self, presented: Option<&str>) -> bool {
        !self.csrf.is_empty() && presented.is_some_and(|p| hashes_match(&self.csrf, p.trim()))
    }
}

/// Why no operator could be found for a request.
enum Missing {
    /// No credential at all.
    None,
    /// A credential that is unknown, expired or revoked.
    Invalid,
}

async fn from_session(rt: &Runtime, parts: &Parts) -> Result<Operator, Missing> {
    let raw = presented_session(&parts.headers).ok_or(Missing::None)?;
    let session = match rt.store.find_session(&token_hash(&raw)).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Missing::Invalid),
        Err(err) => {
            tracing::error!(error = %err, "session lookup failed");
            return Err(Missing::Invalid);
        }
    };
    if now_ms() - session.last_seen_at > TOUCH_EVERY_MS
        && let Err(err) = rt.store.touch_session(&session.session_id).await
    {
        tracing::warn!(error = %err, "could not note session use");
    }
    Ok(Operator {
        id: session.operator_id,
        email: session.email,
        role: session.role,
        session_id: Some(session.session_id),
        csrf: csrf_for(&raw),
        ip: client_ip(parts),
        must_change_password: session.must_change_password,
    })
}

async fn from_operator_token(rt: &Runtime, parts: &Parts) -> Result<Operator, Missing> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Missing::None)?;
    let presented = value
        .strip_prefix("Bearer ")
        .and_then(|raw| parse(OPERATOR_TOKEN_KIND, raw.trim()))
        .ok_or(Missing::Invalid)?;
    let token = rt
        .store
        .find_operator_token(&presented.prefix)
        .await
        .ok()
        .flatten()
        .ok_or(Missing::Invalid)?;
    if token.revoked_at.is_some()
        || token.operator_status != "active"
        || !hashes_match(&token.token_hash, &presented.secret_hash)
    {
        return Err(Missing::Invalid);
    }
    let operator = rt
        .store
        .find_operator(&token.operator_id)
        .await
        .ok()
        .flatten()
        .ok_or(Missing::Invalid)?;
    note_token_use(rt, &token).await;
    Ok(Operator {
        id: operator.id,
        email: operator.email,
        role: operator.role,
        session_id: None,
        csrf: String::new(),
        ip: client_ip(parts),
        must_change_password: false,
    })
}

/// An operator signed in through the browser, for HTML pages. Anyone else is
/// sent to the sign-in page (with a note when their session ended).
pub struct PageOperator(pub Operator);

impl FromRequestParts<Arc<Runtime>> for PageOperator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        rt: &Arc<Runtime>,
    ) -> Result<Self, Self::Rejection> {
        match from_session(rt, parts).await {
            // A temporary password is replaced before anything else; signing
            // out stays possible.
            Ok(op)
                if op.must_change_password
                    && !matches!(parts.uri.path(), PASSWORD_PAGE | "/logout") =>
            {
                Err(Redirect::to(PASSWORD_PAGE).into_response())
            }
            Ok(op) => Ok(PageOperator(op)),
            Err(Missing::None) => Err(Redirect::to("/login").into_response()),
            Err(Missing::Invalid) => Err((
                [(header::SET_COOKIE, clear_cookie())],
                Redirect::to("/login?expired=1"),
            )
                .into_response()),
        }
    }
}

/// A CSRF-checked form POST from a signed-in operator: same-origin, and the
/// hidden `csrf` field matches the session.
pub struct FormPost<T>(pub Operator, pub T);

#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<Runtime>> for FormPost<T> {
    type Rejection = Response;

    async fn from_request(req: Request, rt: &Arc<Runtime>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let PageOperator(op) = PageOperator::from_request_parts(&mut parts, rt).await?;
        if parts.method != Method::POST || is_cross_origin(&parts.headers) {
            return Err(ConsoleError::cross_origin().into_response());
        }
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| ConsoleError::TooLarge.into_response())?;
        let csrf: CsrfField = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ConsoleError::BadRequest("the form could not be read".into()).into_response()
        })?;
        if !op.csrf_matches(csrf.csrf.as_deref()) {
            return Err(ConsoleError::csrf_token().into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            ConsoleError::BadRequest(format!("the form could not be read: {e}")).into_response()
        })?;
        Ok(FormPost(op, form))
    }
}

/// An operator calling the JSON API, by session cookie or operator token.
pub struct ApiOperator(pub Operator);

impl FromRequestParts<Arc<Runtime>> for ApiOperator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        rt: &Arc<Runtime>,
    ) -> Result<Self, Self::Rejection> {
        let found = match from_operator_token(rt, parts).await {
            Err(Missing::None) => from_session(rt, parts).await,
            other => other,
        };
        match found {
            Ok(op) if op.must_change_password && parts.uri.path() != "/admin/api/me" => {
                Err(ConsoleError::Forbidden(password_change_required()).into_json())
            }
            Ok(op) => Ok(ApiOperator(op)),
            Err(_) => Err(ConsoleError::Unauthenticated.into_json()),
        }
    }
}

/// A JSON change: operator-token calls pass as they are; session calls must be
/// same-origin and carry `X-CSRF-Token`.
pub struct JsonPost<T>(pub Operator, pub T);

impl<T: DeserializeOwned + Send> FromRequest<Arc<Runtime>> for JsonPost<T> {
    type Rejection = Response;

    async fn from_request(req: Request, rt: &Arc<Runtime>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let ApiOperator(op) = ApiOperator::from_request_parts(&mut parts, rt).await?;
        if op.session_id.is_some() {
            if is_cross_origin(&parts.headers) {
                return Err(ConsoleError::cross_origin().into_json());
            }
            let header = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if !op.csrf_matches(header) {
                return Err(ConsoleError::csrf_token().into_json());
            }
        }
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| ConsoleError::TooLarge.into_json())?;
        // No body (as many clients send a DELETE) reads as an empty object.
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ConsoleError::BadRequest(format!("body is not valid JSON for this route: {e}"))
                .into_json()
        })?;
        Ok(JsonPost(op, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn same_origin_requests_pass_and_foreign_ones_do_not() {
        assert!(!is_cross_origin(&headers(&[("host", "gw:8080")])));
        assert!(!is_cross_origin(&headers(&[
            ("host", "gw:8080"),
            ("origin", "http://gw:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(is_cross_origin(&headers(&[
            ("host", "gw:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(is_cross_origin(&headers(&[
            ("host", "gw:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(is_cross_origin(&headers(&[
            ("host", "gw:8080"),
            ("origin", "null"),
        ])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; cxp_session=abc; b=2")]);
        assert_eq!(presented_session(&h).as_deref(), Some("abc"));
        assert_eq!(presented_session(&headers(&[("cookie", "a=1")])), None);
    }
}
