//! The `auth.openai.com` side (§5.3–§5.5): `POST /oauth/token` (rotating,
//! single-use refresh tokens and authorization-code exchange) and the device-code
//! login endpoints.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::http::{AppState, json_response, read_body, record_head};
use crate::scenario::RefreshVariant;
use crate::state::{AccountSnapshot, AccountSpec, DeviceAuth, Shared, rfc3339};

/// Seconds between device-code polls that the simulator advertises.
pub const DEVICE_POLL_INTERVAL: &str = "1";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a JSON object or an `application/x-www-form-urlencoded` body.
fn parse_params(body: &[u8]) -> Map<String, Value> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        return map;
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (url_decode(k), Value::String(url_decode(v)))
        })
        .collect()
}

fn token_success(shared: &Shared, snap: &AccountSnapshot) -> Value {
    json!({
        "id_token": snap.id_token,
        "access_token": snap.access_token,
        "refresh_token": snap.refresh_token,
        "expires_in": shared.config.access_token_ttl_secs,
        "token_type": "Bearer",
        "scope": "openid profile email offline_access",
    })
}

fn code_error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"code": code, "message": message, "type": "invalid_request_error"}}),
    )
}

fn refresh(shared: &Shared, params: &Map<String, Value>) -> (u16, Value, Option<String>, String) {
    shared.refresh_calls.fetch_add(1, Ordering::SeqCst);
    let presented = params
        .get("refresh_token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut inner = shared.lock();
    let Some(entry) = inner.refresh.get(presented) else {
        return (
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid refresh token."}),
            None,
            "refresh_unknown".into(),
        );
    };
    let account_id = entry.account_id.clone();
    let used = entry.used;
    let variant = inner
        .account_mut(&account_id)
        .and_then(|a| a.refresh_queue.pop_front());
    let reused = || {
        code_error(
            401,
            "refresh_token_reused",
            "Your refresh token has already been used to generate a new access token. Please try signing in again.",
        )
    };
    let (status, body) = match variant {
        Some(RefreshVariant::Reused) => reused(),
        Some(RefreshVariant::Expired) => code_error(
            401,
            "refresh_token_expired",
            "Your refresh token has expired. Please try signing in again.",
        ),
        Some(RefreshVariant::Invalidated) => code_error(
            401,
            "refresh_token_invalidated",
            "Your refresh token has been invalidated. Please try signing in again.",
        ),
        Some(RefreshVariant::InvalidGrant) => (
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid refresh token (simulated)."}),
        ),
        Some(RefreshVariant::ServerError) => (
            503,
            json!({"error": {"code": "server_error", "message": "The token service is temporarily unavailable (simulated)."}}),
        ),
        None if used => reused(),
        None => {
            if let Some(e) = inner.refresh.get_mut(presented) {
                e.used = true;
            }
            match shared.rotate_tokens(&mut inner, &account_id) {
                Some(snap) => (200, token_success(shared, &snap)),
                None => code_error(
                    401,
                    "refresh_token_invalidated",
                    "Account no longer exists.",
                ),
            }
        }
    };
    let scenario = match variant {
        Some(v) => v.name().to_string(),
        None if used => "refresh_reused".into(),
        None => "refresh".into(),
    };
    (status, body, Some(account_id), scenario)
}

fn exchange_code(
    shared: &Shared,
    params: &Map<String, Value>,
) -> (u16, Value, Option<String>, String) {
    let code = params.get("code").and_then(Value::as_str).unwrap_or("");
    let mut inner = shared.lock();
    let Some(link) = inner.auth_codes.remove(code) else {
        return (
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid authorization code."}),
            None,
            "authorization_code".into(),
        );
    };
    let account_id = match link.filter(|id| inner.account(id).is_some()) {
        Some(id) => id,
        None => {
            shared
                .create_account_locked(&mut inner, AccountSpec::default())
                .account_id
        }
    };
    match shared.rotate_tokens(&mut inner, &account_id) {
        Some(snap) => (
            200,
            token_success(shared, &snap),
            Some(account_id),
            "authorization_code".into(),
        ),
        None => (
            400,
            json!({"error": "invalid_grant"}),
            None,
            "authorization_code".into(),
        ),
    }
}

pub(crate) async fn token(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, "POST", &parts.uri, &parts.headers);
    let bytes = match read_body(body, &mut rec).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params = parse_params(&bytes);
    if rec.json.is_none() && !params.is_empty() {
        rec.json = Some(Value::Object(params.clone()));
    }
    let grant = params
        .get("grant_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (status, body, account, scenario) = match grant {
        "refresh_token" => refresh(&shared, &params),
        "authorization_code" => exchange_code(&shared, &params),
        _ => (
            400,
            json!({"error": "unsupported_grant_type", "error_description": format!("grant_type {grant:?} is not supported")}),
            None,
            "oauth".into(),
        ),
    };
    rec.account_id = account;
    rec.status = status;
    rec.scenario = Some(scenario);
    shared.record(rec);
    json_response(status, &body)
}

pub(crate) async fn device_usercode(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, "POST", &parts.uri, &parts.headers);
    let bytes = match read_body(body, &mut rec).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params = parse_params(&bytes);
    let n = shared.next_id();
    let device_auth_id = format!("deviceauth_sim_{n}");
    let user_code = format!("SIM{:01}-{:04}", n % 10, n % 10_000);
    let link = params
        .get("account_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    shared.lock().devices.insert(
        device_auth_id.clone(),
        DeviceAuth {
            user_code: user_code.clone(),
            polls: 0,
            link_account: link,
        },
    );
    rec.status = 200;
    rec.scenario = Some("device_usercode".into());
    shared.record(rec);
    json_response(
        200,
        &json!({"device_auth_id": device_auth_id, "user_code": user_code, "usercode": user_code,
                "interval": DEVICE_POLL_INTERVAL, "expires_at": rfc3339(shared.now() + 900)}),
    )
}

pub(crate) async fn device_token(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, "POST", &parts.uri, &parts.headers);
    let bytes = match read_body(body, &mut rec).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params = parse_params(&bytes);
    let id = params
        .get("device_auth_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let user_code = params.get("user_code").and_then(Value::as_str);
    let (status, body) = {
        let mut inner = shared.lock();
        match inner.devices.get_mut(id) {
            None => (
                404,
                json!({"error": {"code": "deviceauth_not_found", "message": "Unknown device authorization."}}),
            ),
            Some(dev) if user_code.is_some_and(|c| c != dev.user_code) => (
                400,
                json!({"error": {"code": "invalid_user_code", "message": "User code does not match."}}),
            ),
            Some(dev) => {
                dev.polls += 1;
                if dev.polls <= 1 {
                    (
                        403,
                        json!({"error": {"code": "deviceauth_authorization_pending",
                                         "message": "The user has not yet authorized this device."}}),
                    )
                } else {
                    let link = dev.link_account.clone();
                    let n = shared.next_id();
                    let code = format!("ac_sim_{n}");
                    inner.auth_codes.insert(code.clone(), link);
                    (
                        200,
                        json!({"authorization_code": code, "code_challenge": format!("sim-challenge-{n}"),
                               "code_verifier": format!("sim-verifier-{n}")}),
                    )
                }
            }
        }
    };
    rec.status = status;
    rec.scenario = Some("device_token".into());
    shared.record(rec);
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_json_params_parse() {
        let p = parse_params(b"grant_type=refresh_token&refresh_token=rt%5Fa+b&x");
        assert_eq!(p["grant_type"], "refresh_token");
        assert_eq!(p["refresh_token"], "rt_a b");
        assert_eq!(p["x"], "");
        let p = parse_params(br#"{"grant_type":"authorization_code","code":"c"}"#);
        assert_eq!(p["code"], "c");
        assert_eq!(url_decode("%"), "%");
        assert_eq!(url_decode("%4"), "%4");
    }
}
