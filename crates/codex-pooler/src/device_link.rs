//! Device-code login against the identity provider (the Codex CLI's
//! `codex login --device-auth`): ask for a user code, poll until the operator
//! has entered it, and exchange the authorization code for tokens. Only the
//! HTTP exchanges live here; the flow's state is in the store and the pages
//! in the console.

use std::time::Duration;

use serde_json::{Value, json};

use crate::control::{self, ParsedAuthJson};
use crate::proxy::upstream::CODEX_OAUTH_CLIENT_ID;

/// How long a link may wait for the operator (the CLI gives up after 15 min).
pub const LINK_TTL_SECS: i64 = 15 * 60;

/// Slowest and fastest poll interval honoured.
const MIN_INTERVAL_SECS: i64 = 2;
const MAX_INTERVAL_SECS: i64 = 30;

/// Errors of a device-code exchange, each with a short stable code.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("device-code login is not enabled at the identity provider")]
    NotEnabled,
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider refused the link ({code})")]
    Refused { code: String },
    #[error("the identity provider answered something unexpected: {0}")]
    Malformed(String),
    #[error("the tokens the identity provider returned are unusable: {0}")]
    BadTokens(String),
}

impl LinkError {
    /// A stable code for the audit log and the flow row.
    pub fn code(&self) -> String {
        match self {
            LinkError::NotEnabled => "device_login_not_enabled".into(),
            LinkError::Unreachable(_) => "identity_provider_unreachable".into(),
            LinkError::Refused { code } => code.clone(),
            LinkError::Malformed(_) => "identity_provider_malformed_answer".into(),
            LinkError::BadTokens(_) => "unusable_tokens".into(),
        }
    }
}

/// A fresh user code to show the operator.
#[derive(Debug, Clone)]
pub struct UserCode {
    pub device_auth_id: String,
    pub user_code: String,
    pub verification_url: String,
    pub interval_secs: i64,
}

/// What one poll learned.
#[derive(Debug)]
pub enum Poll {
    /// The code has not been entered yet.
    Pending,
    /// Linked: the tokens, read like an `auth.json`.
    Linked(Box<ParsedAuthJson>),
}

fn error_code(body: &Value, status: u16) -> String {
    body.pointer("/error/code")
        .and_then(Value::as_str)
        .or_else(|| body.get("error").and_then(Value::as_str))
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"))
}

async fn post_json(
    http: &reqwest::Client,
    url: String,
    body: Value,
) -> Result<(u16, Value), LinkError> {
    let response = http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| LinkError::Unreachable(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Asks `auth_base_url` for a user code.
pub async fn request_user_code(
    http: &reqwest::Client,
    auth_base_url: &str,
) -> Result<UserCode, LinkError> {
    let (status, body) = post_json(
        http,
        format!("{auth_base_url}/api/accounts/deviceauth/usercode"),
        json!({"client_id": CODEX_OAUTH_CLIENT_ID}),
    )
    .await?;
    if status == 404 {
        return Err(LinkError::NotEnabled);
    }
    if status != 200 {
        return Err(LinkError::Refused {
            code: error_code(&body, status),
        });
    }
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .map(str::to_owned)
    };
    let device_auth_id =
        text("device_auth_id").ok_or_else(|| LinkError::Malformed("no device_auth_id".into()))?;
    let user_code = text("user_code")
        .or_else(|| text("usercode"))
        .ok_or_else(|| LinkError::Malformed("no user_code".into()))?;
    let interval_secs = body
        .get("interval")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or(5)
        .clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS);
    Ok(UserCode {
        device_auth_id,
        user_code,
        verification_url: format!("{auth_base_url}/codex/device"),
        interval_secs,
    })
}

/// Polls once; on success exchanges the authorization code for tokens.
pub async fn poll(
    http: &reqwest::Client,
    auth_base_url: &str,
    device_auth_id: &str,
    user_code: &str,
    label: Option<&str>,
) -> Result<Poll, LinkError> {
    let (status, body) = post_json(
        http,
        format!("{auth_base_url}/api/accounts/deviceauth/token"),
        json!({"device_auth_id": device_auth_id, "user_code": user_code}),
    )
    .await?;
    let code = error_code(&body, status);
    if matches!(status, 403 | 404) || code == "authorization_pending" || code == "slow_down" {
        return Ok(Poll::Pending);
    }
    if status != 200 {
        return Err(LinkError::Refused { code });
    }
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| LinkError::Malformed(format!("no {name}")))
    };
    let authorization_code = field("authorization_code")?;
    let code_verifier = field("code_verifier")?;
    let response = http
        .post(format!("{auth_base_url}/oauth/token"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(
            serde_urlencoded::to_string([
                ("grant_type", "authorization_code"),
                ("code", authorization_code.as_str()),
                ("code_verifier", code_verifier.as_str()),
                ("client_id", CODEX_OAUTH_CLIENT_ID),
                (
                    "redirect_uri",
                    format!("{auth_base_url}/deviceauth/callback").as_str(),
                ),
            ])
            .map_err(|e| LinkError::Malformed(e.to_string()))?,
        )
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| LinkError::Unreachable(e.without_url().to_string()))?;
    let status = response.status().as_u16();
    let tokens = response.json::<Value>().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(LinkError::Refused {
            code: error_code(&tokens, status),
        });
    }
    let auth_json = json!({"tokens": {
        "access_token": tokens.get("access_token"),
        "refresh_token": tokens.get("refresh_token"),
        "id_token": tokens.get("id_token"),
    }});
    let parsed = control::parse_auth_json(&auth_json.to_string(), label)
        .map_err(|e| LinkError::BadTokens(e.to_string()))?;
    Ok(Poll::Linked(Box::new(parsed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_short_tokens_or_the_status() {
        assert_eq!(
            error_code(&json!({"error": {"code": "invalid_user_code"}}), 400),
            "invalid_user_code"
        );
        assert_eq!(
            error_code(&json!({"error": "invalid_grant"}), 400),
            "invalid_grant"
        );
        assert_eq!(error_code(&json!({"error": "<script>"}), 400), "http_400");
        assert_eq!(error_code(&Value::Null, 502), "http_502");
    }
}
