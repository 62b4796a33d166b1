//! Transport-neutral request handling: bearer authentication, §8.2 body
//! validation and the scenario decision for one model request. The HTTP and
//! websocket front ends call into here and only differ in how they send the plan.

use http::HeaderMap;
use serde_json::{Value, json};

use crate::scenario::Scenario;
use crate::script::{self, Ctx, Plan, Reply};
use crate::state::{QuotaView, Shared};

/// Parameters the Codex backend refuses (§1.3).
pub const UNSUPPORTED_PARAMS: &[&str] = &[
    "max_output_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "truncation",
    "prompt_cache_retention",
    "safety_identifier",
    "context_management",
];

/// Prefix of codex-pooler's own pool API keys, which must never reach upstream.
pub const POOL_KEY_PREFIX: &str = "sk-cxp-";

/// A failed authentication.
pub(crate) struct AuthFail {
    pub reply: Reply,
    pub flagged: bool,
    pub account_id: Option<String>,
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = header(headers, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn invalid_api_key(message: &str) -> Reply {
    Reply::json(
        401,
        json!({"error": {"message": message, "type": "invalid_request_error",
                          "code": "invalid_api_key", "param": null}}),
    )
}

/// Resolve the account of a request from its bearer token and check the
/// `chatgpt-account-id` header (strict mode).
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, AuthFail> {
    let Some(token) = bearer(headers) else {
        return Err(AuthFail {
            reply: invalid_api_key("Missing bearer authentication in header (simulated upstream)."),
            flagged: false,
            account_id: None,
        });
    };
    if token.starts_with(POOL_KEY_PREFIX) {
        return Err(AuthFail {
            reply: invalid_api_key(
                "UPSTREAM SIMULATOR: a codex-pooler pool API key (sk-cxp-...) was sent upstream as a bearer token. \
                 The gateway must never forward client keys; it must use the account's own access token.",
            ),
            flagged: true,
            account_id: None,
        });
    }
    let now = shared.now();
    let account_id = {
        let inner = shared.lock();
        match inner.access.get(token) {
            None => {
                return Err(AuthFail {
                    reply: invalid_api_key(
                        "Incorrect API key provided (unknown access token, simulated upstream).",
                    ),
                    flagged: false,
                    account_id: None,
                });
            }
            Some(entry) if entry.revoked || entry.exp <= now => {
                return Err(AuthFail {
                    reply: script::token_expired_reply(),
                    flagged: false,
                    account_id: Some(entry.account_id.clone()),
                });
            }
            Some(entry) => entry.account_id.clone(),
        }
    };
    if shared.config.strict {
        let sent = header(headers, "chatgpt-account-id");
        if sent != Some(account_id.as_str()) {
            return Err(AuthFail {
                reply: Reply::json(403, json!({"detail": "account mismatch"})),
                flagged: false,
                account_id: Some(account_id),
            });
        }
    }
    Ok(account_id)
}

fn bad(detail: impl Into<String>) -> Reply {
    Reply::json(400, json!({"detail": detail.into()}))
}

/// Validate a `/responses` body (HTTP) or a `response.create` frame (websocket).
pub(crate) fn validate_body(
    shared: &Shared,
    account_id: &str,
    body: &Value,
    http: bool,
) -> Result<(), Reply> {
    let Some(obj) = body.as_object() else {
        return Err(bad("Request body must be a JSON object"));
    };
    if !shared.config.strict {
        return Ok(());
    }
    for p in UNSUPPORTED_PARAMS {
        if obj.contains_key(*p) {
            return Err(bad(format!("Unsupported parameter: {p}")));
        }
    }
    if http && obj.get("stream") != Some(&Value::Bool(true)) {
        return Err(bad("Stream must be set to true"));
    }
    if obj.get("store") != Some(&Value::Bool(false)) {
        return Err(bad("Store must be set to false"));
    }
    let Some(input) = obj.get("input").and_then(Value::as_array) else {
        return Err(bad("Input must be a list"));
    };
    let inner = shared.lock();
    let Some(account) = inner.account(account_id) else {
        return Err(bad("unknown account"));
    };
    for item in input {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        if ty == "function_call_output" || ty == "custom_tool_call_output" {
            let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
            if !account.issued_calls.contains(call_id) {
                return Err(Reply::json(
                    400,
                    json!({"error": {"type": "invalid_request_error", "code": null, "param": "input",
                        "message": format!("No tool call found for function call output with call_id {call_id}.")}}),
                ));
            }
        }
    }
    Ok(())
}

/// A `SIM:<scenario>` marker in the last input item when it is a user message.
pub(crate) fn marker_scenario(body: &Value) -> Option<Scenario> {
    let last = body.get("input")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let content = last.get("content")?;
    let mut texts: Vec<&str> = Vec::new();
    match content {
        Value::String(s) => texts.push(s),
        Value::Array(parts) => {
            texts.extend(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str)),
            );
        }
        _ => {}
    }
    texts.iter().find_map(|t| {
        let at = t.rfind("SIM:")?;
        let name: String = t[at + 4..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '`')
            .collect();
        Scenario::parse(name.trim_end_matches(['.', ',', '!', '?']))
    })
}

/// The outcome of one model request.
pub(crate) struct Decision {
    pub scenario: String,
    pub plan: Plan,
    pub quota: QuotaView,
    pub response_id: String,
    pub model: String,
}

impl Decision {
    pub fn status(&self) -> u16 {
        match &self.plan {
            Plan::Stream(_) => 200,
            Plan::Reply(r) => r.status,
            Plan::Close => 0,
        }
    }
}

/// Pick the scenario for a model request on `account_id` and apply its side effects.
pub(crate) fn decide(shared: &Shared, account_id: &str, body: &Value) -> Option<Decision> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-5.5")
        .to_string();
    let n = shared.next_id();
    let now = shared.now();
    let mut inner = shared.lock();
    let account = inner.account_mut(account_id)?;
    account.quota.roll(now);
    if account.quota.exhausted().is_some() {
        let view = account.quota_view(now);
        return Some(Decision {
            scenario: "quota_429".into(),
            plan: Plan::Reply(script::usage_limit_reply(&view)),
            quota: view,
            response_id: format!("resp_sim_{n}"),
            model,
        });
    }
    let scenario = account
        .pop_scenario()
        .or_else(|| marker_scenario(body))
        .unwrap_or(Scenario::Text);
    let mut expire = false;
    match &scenario {
        Scenario::Quota429 => {
            account.quota.primary_used = 100.0;
            account.quota.primary_reset_at = now + 3600;
        }
        Scenario::Quota429Weekly => {
            account.quota.secondary_used = 100.0;
        }
        Scenario::TokenExpired => expire = true,
        Scenario::ToolCall => {
            account.issued_calls.insert(format!("call_sim_{n}"));
        }
        _ => {}
    }
    let view = account.quota_view(now);
    let ctx = Ctx {
        n,
        model: &model,
        created_at: now,
        quota: &view,
    };
    let plan = script::build(&scenario, &ctx);
    if matches!(plan, Plan::Stream(_))
        && let Some(account) = inner.account_mut(account_id)
    {
        account.quota.bump();
    }
    if expire {
        shared.expire_access_tokens(&mut inner, account_id);
    }
    let quota = inner
        .account(account_id)
        .map(|a| a.quota_view(now))
        .unwrap_or(view);
    Some(Decision {
        scenario: scenario.name(),
        plan,
        quota,
        response_id: format!("resp_sim_{n}"),
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_only_counts_in_a_trailing_user_message() {
        let body = json!({"input": [{"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "please SIM:tool_call now"}]}]});
        assert_eq!(marker_scenario(&body), Some(Scenario::ToolCall));
        let body = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "SIM:tool_call"}]},
            {"type": "function_call_output", "call_id": "c", "output": "hi"}]});
        assert_eq!(marker_scenario(&body), None);
        let body =
            json!({"input": [{"type": "message", "role": "user", "content": "SIM:barrier:x."}]});
        assert_eq!(marker_scenario(&body), Some(Scenario::Barrier("x".into())));
    }
}
