//! JWT-shaped token minting (§5.2): base64url header and payload with a dummy
//! signature. Nothing here verifies anything; the simulator looks tokens up by value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The OAuth client id Codex uses.
pub const CODEX_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";

/// Identity claims carried by every token of one account.
pub(crate) struct Identity<'a> {
    pub account_id: &'a str,
    pub user_id: &'a str,
    pub email: &'a str,
    pub plan_type: &'a str,
}

fn encode(payload: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "sim-key-1"});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(b"sim-signature-not-verified")
    )
}

fn auth_claims(id: &Identity<'_>) -> Value {
    json!({
        "chatgpt_account_id": id.account_id,
        "chatgpt_plan_type": id.plan_type,
        "chatgpt_user_id": id.user_id,
        "user_id": id.user_id,
    })
}

/// An access token expiring at `exp` (simulated unix seconds); `jti` makes it unique.
pub(crate) fn access_token(id: &Identity<'_>, iat: i64, exp: i64, jti: u64) -> String {
    encode(&json!({
        "iss": "https://auth.openai.com",
        "aud": ["https://api.openai.com/v1"],
        "sub": id.user_id,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "jti": format!("sim-at-{jti}"),
        "scp": ["openid", "profile", "email", "offline_access"],
        "client_id": CODEX_CLIENT_ID,
        "email": id.email,
        "https://api.openai.com/auth": auth_claims(id),
        "https://api.openai.com/profile": {"email": id.email, "email_verified": true},
    }))
}

/// An id token for the same identity.
pub(crate) fn id_token(id: &Identity<'_>, iat: i64, exp: i64, jti: u64) -> String {
    encode(&json!({
        "iss": "https://auth.openai.com",
        "aud": [CODEX_CLIENT_ID],
        "sub": id.user_id,
        "iat": iat,
        "exp": exp,
        "jti": format!("sim-id-{jti}"),
        "email": id.email,
        "email_verified": true,
        "https://api.openai.com/auth": auth_claims(id),
    }))
}

/// Decode the payload of a JWT-shaped token (used by tests and the control API).
pub fn decode_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_openai_auth_claims() {
        let id = Identity {
            account_id: "acct_x",
            user_id: "user_x",
            email: "x@example.test",
            plan_type: "plus",
        };
        let token = access_token(&id, 100, 200, 7);
        assert_eq!(token.split('.').count(), 3);
        let payload = decode_payload(&token).expect("payload decodes");
        assert_eq!(payload["exp"], 200);
        assert_eq!(payload["email"], "x@example.test");
        assert_eq!(
            payload["https://api.openai.com/auth"]["chatgpt_account_id"],
            "acct_x"
        );
        assert_eq!(
            payload["https://api.openai.com/auth"]["chatgpt_plan_type"],
            "plus"
        );
    }
}
