//! Reading (never verifying) the claims of ChatGPT OAuth tokens, the way the
//! Codex CLI does: the payload segment is base64url JSON.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The claims the gateway cares about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenClaims {
    pub exp: Option<i64>,
    pub email: Option<String>,
    pub chatgpt_account_id: Option<String>,
    pub chatgpt_plan_type: Option<String>,
    pub chatgpt_user_id: Option<String>,
}

/// Decodes the payload of a JWT-shaped token. Returns `None` when the token is
/// not three dot-separated segments with a JSON object payload.
pub fn decode_claims(token: &str) -> Option<TokenClaims> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let object = value.as_object()?;
    let auth = object.get("https://api.openai.com/auth");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    Some(TokenClaims {
        exp: object.get("exp").and_then(Value::as_i64),
        email: text(object.get("email")).or_else(|| {
            text(
                object
                    .get("https://api.openai.com/profile")
                    .and_then(|p| p.get("email")),
            )
        }),
        chatgpt_account_id: text(auth.and_then(|a| a.get("chatgpt_account_id"))),
        chatgpt_plan_type: text(auth.and_then(|a| a.get("chatgpt_plan_type"))),
        chatgpt_user_id: text(
            auth.and_then(|a| a.get("chatgpt_user_id").or_else(|| a.get("user_id"))),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_openai_auth_claims() {
        let payload = serde_json::json!({
            "exp": 1767000000,
            "email": "a@example.test",
            "https://api.openai.com/auth": {
                "chatgpt_account_id": "acct_1", "chatgpt_plan_type": "plus", "chatgpt_user_id": "user_1"
            }
        });
        let token = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload.to_string()));
        let claims = decode_claims(&token).expect("decodes");
        assert_eq!(claims.exp, Some(1767000000));
        assert_eq!(claims.chatgpt_account_id.as_deref(), Some("acct_1"));
        assert_eq!(claims.chatgpt_plan_type.as_deref(), Some("plus"));
        assert_eq!(claims.chatgpt_user_id.as_deref(), Some("user_1"));
        assert_eq!(claims.email.as_deref(), Some("a@example.test"));
    }

    #[test]
    fn rejects_non_jwt_text() {
        assert!(decode_claims("not a token").is_none());
        assert!(decode_claims("a.b.c.d").is_none());
        assert!(decode_claims("a.%%%.c").is_none());
    }
}
