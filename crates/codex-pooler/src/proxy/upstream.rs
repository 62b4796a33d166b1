//! Speaking to the Codex backend as the Codex CLI would: identity headers, the
//! client-header allowlist, request-body normalisation, the model catalog
//! fetch, and reading the `x-codex-*` quota headers.

use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::runtime::{Candidate, Runtime};
use crate::store::{QuotaObservation, SyncedModel};

/// The Codex CLI's OAuth client id, used for token refresh.
pub const CODEX_OAUTH_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The originator presented upstream.
pub const ORIGINATOR: &str = "codex_cli_rs";

/// Client headers forwarded upstream (everything else is dropped).
const FORWARDED_CLIENT_HEADERS: &[&str] = &[
    "x-codex-turn-metadata",
    "x-codex-window-id",
    "x-codex-parent-thread-id",
    "x-codex-installation-id",
    "x-codex-turn-state",
    "x-codex-beta-features",
    "x-openai-subagent",
    "session_id",
    "session-id",
    "thread_id",
    "thread-id",
    "x-client-request-id",
];

/// Body fields the Codex backend refuses; stripped before forwarding.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "max_output_tokens",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "prompt_cache_retention",
    "safety_identifier",
    "truncation",
    "context_management",
];

/// Upstream response headers relayed to the client.
pub const RELAYED_RESPONSE_HEADERS: &[&str] = &[
    "x-request-id",
    "openai-model",
    "x-models-etag",
    "x-reasoning-included",
    "x-codex-turn-state",
];

/// Builds the upstream header set for one attempt.
pub fn upstream_headers(
    runtime: &Runtime,
    candidate: &Candidate,
    access_token: &str,
    client_headers: &HeaderMap,
    accept: &'static str,
) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::with_capacity(12);
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {access_token}")) {
        let mut v = v;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let account = &candidate.chatgpt_account_id;
    if !account.starts_with("email_")
        && !account.starts_with("local_")
        && let Ok(v) = HeaderValue::from_str(account)
    {
        headers.insert(HeaderName::from_static("chatgpt-account-id"), v);
    }
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(
        HeaderName::from_static("originator"),
        HeaderValue::from_static(ORIGINATOR),
    );
    let version = &runtime.settings.client_version;
    if let Ok(v) = HeaderValue::from_str(&format!("{ORIGINATOR}/{version}")) {
        headers.insert(reqwest::header::USER_AGENT, v);
    }
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(HeaderName::from_static("version"), v);
    }
    for name in FORWARDED_CLIENT_HEADERS {
        if let Some(value) = client_headers.get(*name)
            && let Ok(v) = HeaderValue::from_bytes(value.as_bytes())
        {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    headers
}

/// What the gateway learned from the request body.
#[derive(Debug, Clone)]
pub struct RequestShape {
    pub model: String,
    pub client_wants_stream: bool,
    pub reasoning_effort: Option<String>,
    pub service_tier: Option<String>,
}

/// Validates and normalises a Responses body for the backend route, in place.
/// `enforced_model` (from key policy) overrides the client's model.
pub fn normalise_responses_body(
    body: &mut Map<String, Value>,
    enforced_model: Option<&str>,
) -> Result<RequestShape, String> {
    let model = match (enforced_model, body.get("model")) {
        (Some(m), _) => m.to_owned(),
        (None, Some(Value::String(m))) if !m.trim().is_empty() => m.trim().to_owned(),
        (None, Some(_)) => return Err("model must be a non-empty string".into()),
        (None, None) => return Err("model is required".into()),
    };
    body.insert("model".into(), Value::String(model.clone()));
    for field in ["input", "tools"] {
        if let Some(v) = body.get(field)
            && !v.is_array()
        {
            return Err(format!("{field} must be an array"));
        }
    }
    let client_wants_stream = matches!(body.get("stream"), Some(Value::Bool(true)));
    for field in UNSUPPORTED_FIELDS {
        body.remove(*field);
    }
    body.remove("type");
    body.remove("generate");
    body.remove("previous_response_id");
    if !matches!(body.get("instructions"), Some(Value::String(_))) {
        body.insert("instructions".into(), Value::String(String::new()));
    }
    body.insert("stream".into(), Value::Bool(true));
    body.insert("store".into(), Value::Bool(false));
    let reasoning = body.entry("reasoning").or_insert_with(|| json!({}));
    if !reasoning.is_object() {
        *reasoning = json!({});
    }
    let mut reasoning_effort = None;
    if let Some(obj) = reasoning.as_object_mut()
        && let Some(Value::String(effort)) = obj.get("effort")
    {
        let canonical = match effort.trim().to_ascii_lowercase().as_str() {
            "minimal" => "low".to_owned(),
            "ultra" => "max".to_owned(),
            other => other.to_owned(),
        };
        reasoning_effort = Some(effort.trim().to_ascii_lowercase());
        obj.insert("effort".into(), Value::String(canonical));
    }
    let include = body.entry("include").or_insert_with(|| json!([]));
    if !include.is_array() {
        *include = json!([]);
    }
    if let Some(list) = include.as_array_mut()
        && !list.iter().any(|v| v == "reasoning.encrypted_content")
    {
        list.push(Value::String("reasoning.encrypted_content".into()));
    }
    let mut service_tier = None;
    if let Some(Value::String(tier)) = body.get("service_tier") {
        let canonical = crate::domain::pricing::canonical_tier(tier);
        service_tier = Some(canonical.clone());
        body.insert("service_tier".into(), Value::String(canonical));
    }
    Ok(RequestShape {
        model,
        client_wants_stream,
        reasoning_effort,
        service_tier,
    })
}

/// Validates and normalises a compact body.
pub fn normalise_compact_body(
    body: &mut Map<String, Value>,
    enforced_model: Option<&str>,
) -> Result<RequestShape, String> {
    let model = match (enforced_model, body.get("model")) {
        (Some(m), _) => m.to_owned(),
        (None, Some(Value::String(m))) if !m.trim().is_empty() => m.trim().to_owned(),
        (None, _) => return Err("model is required".into()),
    };
    body.insert("model".into(), Value::String(model.clone()));
    if let Some(v) = body.get("input")
        && !v.is_array()
    {
        return Err("input must be an array".into());
    }
    for field in UNSUPPORTED_FIELDS
        .iter()
        .chain(["store", "stream", "include", "prompt_cache_options"].iter())
    {
        body.remove(*field);
    }
    let reasoning_effort = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let service_tier = body
        .get("service_tier")
        .and_then(Value::as_str)
        .map(crate::domain::pricing::canonical_tier);
    Ok(RequestShape {
        model,
        client_wants_stream: false,
        reasoning_effort,
        service_tier,
    })
}

/// Reads the `x-codex-*` primary and secondary windows from response headers.
pub fn quota_from_headers(
    identity_id: &str,
    headers: &reqwest::header::HeaderMap,
    now_ms: i64,
) -> Vec<QuotaObservation> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut out = Vec::new();
    for kind in ["primary", "secondary"] {
        let Some(used) =
            get(&format!("x-codex-{kind}-used-percent")).and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let window_minutes =
            get(&format!("x-codex-{kind}-window-minutes")).and_then(|v| v.parse::<i64>().ok());
        let reset_at = get(&format!("x-codex-{kind}-reset-at"))
            .and_then(|v| v.parse::<i64>().ok())
            .or_else(|| {
                get(&format!("x-codex-{kind}-reset-after-seconds"))
                    .and_then(|v| v.parse::<i64>().ok())
                    .map(|secs| now_ms / 1000 + secs)
            });
        if used == 0.0 && window_minutes.unwrap_or(0) == 0 && reset_at.is_none() {
            continue;
        }
        // Accounts without a 5-hour window report the weekly one as primary.
        let window_kind = if kind == "primary" && window_minutes == Some(10_080) {
            "secondary"
        } else {
            kind
        };
        out.push(QuotaObservation {
            identity_id: identity_id.to_owned(),
            window_kind: window_kind.to_owned(),
            used_percent: used.clamp(0.0, 100.0),
            window_minutes,
            reset_at,
            source: "response_headers",
            observed_at: now_ms,
        });
    }
    out
}

/// Reads `resets_at` (or `resets_in_seconds`) from a 429 `usage_limit_reached` body.
pub fn usage_limit_reset(body: &Value, now_secs: i64) -> Option<i64> {
    let error = body.get("error")?;
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .and_then(Value::as_str)?;
    if !matches!(
        kind,
        "usage_limit_reached"
            | "workspace_owner_credits_depleted"
            | "workspace_member_credits_depleted"
            | "workspace_owner_usage_limit_reached"
            | "workspace_member_usage_limit_reached"
            | "usage_not_included"
    ) {
        return None;
    }
    error
        .get("resets_at")
        .and_then(Value::as_i64)
        .or_else(|| {
            error
                .get("resets_in_seconds")
                .and_then(Value::as_i64)
                .map(|s| now_secs + s)
        })
        .or(Some(now_secs + 300))
}

/// Fetches the upstream catalog through one account.
pub async fn fetch_models(
    runtime: &Runtime,
    candidate: &Candidate,
) -> anyhow::Result<Vec<SyncedModel>> {
    let creds = runtime
        .fresh_credentials(candidate)
        .await
        .map_err(|e| anyhow::anyhow!("token refresh failed: {}", e.code()))?;
    let url = format!(
        "{}/backend-api/codex/models?client_version={}",
        candidate.base_url, runtime.settings.client_version
    );
    let headers = upstream_headers(
        runtime,
        candidate,
        &creds.secret.access_token,
        &HeaderMap::new(),
        "application/json",
    );
    let response = runtime
        .http
        .get(url)
        .headers(headers)
        .timeout(Duration::from_secs(20))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("upstream /models answered {status}");
    }
    let body: Value = response.json().await?;
    let models = body
        .get("models")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("upstream /models has no models array"))?;
    Ok(models
        .iter()
        .filter_map(|m| {
            let slug = m.get("slug").and_then(Value::as_str)?.to_owned();
            Some(SyncedModel {
                slug,
                display_name: m
                    .get("display_name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                context_window: m.get("context_window").and_then(Value::as_i64),
                raw_json: m.to_string(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_strips_refused_fields_and_forces_stream_store_include() {
        let mut body = json!({"model":"gpt-5.5","input":[],"temperature":0.2,"max_output_tokens":5,"stream":false,
            "store":true,"reasoning":{"effort":"minimal"},"service_tier":"fast"})
        .as_object()
        .cloned()
        .unwrap_or_default();
        let shape = normalise_responses_body(&mut body, None).expect("valid");
        assert!(!shape.client_wants_stream);
        assert_eq!(shape.service_tier.as_deref(), Some("priority"));
        assert_eq!(shape.reasoning_effort.as_deref(), Some("minimal"));
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["store"], json!(false));
        assert_eq!(body["instructions"], json!(""));
        assert_eq!(body["reasoning"]["effort"], json!("low"));
        assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
        assert!(body.get("temperature").is_none() && body.get("max_output_tokens").is_none());
    }

    #[test]
    fn normalisation_rejects_bad_shapes() {
        let mut no_model = Map::new();
        assert!(normalise_responses_body(&mut no_model, None).is_err());
        let mut string_input = json!({"model":"m","input":"hi"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(normalise_responses_body(&mut string_input, None).is_err());
        let mut enforced = json!({"model":"a"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            normalise_responses_body(&mut enforced, Some("b"))
                .expect("ok")
                .model,
            "b"
        );
    }

    #[test]
    fn quota_headers_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("12.5"),
        );
        h.insert(
            "x-codex-primary-window-minutes",
            HeaderValue::from_static("300"),
        );
        h.insert(
            "x-codex-primary-reset-at",
            HeaderValue::from_static("1767000000"),
        );
        h.insert(
            "x-codex-secondary-used-percent",
            HeaderValue::from_static("40"),
        );
        h.insert(
            "x-codex-secondary-window-minutes",
            HeaderValue::from_static("10080"),
        );
        h.insert(
            "x-codex-secondary-reset-after-seconds",
            HeaderValue::from_static("100"),
        );
        let q = quota_from_headers("i", &h, 1_000_000);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].reset_at, Some(1767000000));
        assert_eq!(q[1].reset_at, Some(1_000 + 100));
    }
}
