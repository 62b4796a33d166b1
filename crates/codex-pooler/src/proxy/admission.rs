//! Admission: authenticating the Pool API key, applying its lifecycle and model
//! policy, and writing `rejected` rows for known keys that are turned away.
//! Unknown or malformed keys leave no row: there is nothing to attribute.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::json;

use crate::domain::keys::{API_KEY_KIND, hashes_match, parse};
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::store::{ApiKeyRow, NewRequest, RecordEvent};
use crate::time::{new_id, now_ms};

/// Why authentication failed.
#[derive(Debug)]
pub enum AuthFailure {
    /// No usable key was presented; nothing is recorded.
    Anonymous(GatewayError),
    /// A known key that may not be used now.
    Known(Arc<ApiKeyRow>, GatewayError),
}

/// Authenticates `Authorization: Bearer <Pool API key>`.
pub async fn authenticate(
    rt: &Runtime,
    headers: &HeaderMap,
) -> Result<Arc<ApiKeyRow>, AuthFailure> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .and_then(|raw| parse(API_KEY_KIND, raw))
        .ok_or(AuthFailure::Anonymous(GatewayError::ApiKeyMissing))?;
    let key = rt
        .api_key(&presented.prefix)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "API key lookup failed");
            AuthFailure::Anonymous(GatewayError::Internal)
        })?
        .ok_or(AuthFailure::Anonymous(GatewayError::ApiKeyMissing))?;
    if !hashes_match(&key.key_hash, &presented.secret_hash) {
        return Err(AuthFailure::Anonymous(GatewayError::ApiKeyMissing));
    }
    match key.status.as_str() {
        "active" => {}
        "paused" => return Err(AuthFailure::Known(key, GatewayError::ApiKeyPaused)),
        _ => return Err(AuthFailure::Known(key, GatewayError::ApiKeyRevoked)),
    }
    if key.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(AuthFailure::Known(key, GatewayError::ApiKeyExpired));
    }
    rt.touch_key(&key.id);
    Ok(key)
}

/// Applies the key's model allow-list.
pub fn check_model_allowed(key: &ApiKeyRow, model: &str) -> Result<(), GatewayError> {
    let Some(list) = &key.allowed_models else {
        return Ok(());
    };
    let allowed: Vec<String> = serde_json::from_str(list).unwrap_or_default();
    if allowed.iter().any(|m| m == model) {
        Ok(())
    } else {
        Err(GatewayError::ModelNotAllowed(model.to_owned()))
    }
}

/// Safe request facts shared by rejected and admitted rows.
#[derive(Debug, Clone)]
pub struct RowFacts {
    pub endpoint: &'static str,
    pub transport: &'static str,
    pub model: Option<String>,
    pub reasoning_effort: Option<String>,
    pub service_tier: Option<String>,
    pub client_request_id: Option<String>,
    pub user_agent: Option<String>,
}

impl RowFacts {
    pub fn from_headers(
        endpoint: &'static str,
        transport: &'static str,
        headers: &HeaderMap,
    ) -> Self {
        let text = |name: &str, max: usize| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().chars().take(max).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        RowFacts {
            endpoint,
            transport,
            model: None,
            reasoning_effort: None,
            service_tier: None,
            client_request_id: text("x-request-id", 160)
                .or_else(|| text("x-client-request-id", 160)),
            user_agent: text("user-agent", 300),
        }
    }
}

/// Builds a request row for a known key.
pub fn new_row(key: &ApiKeyRow, facts: &RowFacts, status: &str, usage_status: &str) -> NewRequest {
    let id = new_id();
    NewRequest {
        correlation_id: id.clone(),
        id,
        pool_id: key.pool_id.clone(),
        api_key_id: Some(key.id.clone()),
        api_key_prefix: Some(key.key_prefix.clone()),
        api_key_label: Some(key.display_name.clone()),
        endpoint: facts.endpoint.to_owned(),
        transport: facts.transport.to_owned(),
        status: status.to_owned(),
        usage_status: usage_status.to_owned(),
        requested_model: facts
            .model
            .clone()
            .unwrap_or_else(|| facts.endpoint.to_owned()),
        reasoning_effort: facts.reasoning_effort.clone(),
        service_tier: facts.service_tier.clone(),
        admitted_at: now_ms(),
        completed_at: None,
        response_status_code: None,
        last_error_code: None,
        client_request_id: facts.client_request_id.clone(),
        user_agent: facts.user_agent.clone(),
        request_metadata: json!({"api_key": {"prefix": key.key_prefix}}).to_string(),
        estimated_cost_micros: None,
        estimated_tokens: None,
        window_reserved: false,
    }
}

/// Records a rejection of a known key's request and returns the error.
pub async fn reject(
    rt: &Runtime,
    key: &ApiKeyRow,
    facts: &RowFacts,
    err: GatewayError,
) -> GatewayError {
    let mut row = new_row(key, facts, "rejected", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    row.response_status_code = Some(i64::from(err.status().as_u16()));
    row.last_error_code = Some(err.code().to_owned());
    row.request_metadata = json!({
        "api_key": {"prefix": key.key_prefix},
        "gateway_denial": {"code": err.code(), "message": err.to_string()},
    })
    .to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(facts.endpoint, "rejected", None);
    err
}

/// Applies the key's reasoning-effort and service-tier policy to the body,
/// and its per-request output cap.
pub fn apply_policy(
    policy: &crate::store::KeyPolicy,
    body: &mut serde_json::Map<String, serde_json::Value>,
    shape: &mut super::upstream::RequestShape,
) -> Result<(), GatewayError> {
    use crate::domain::policy::{EffortDecision, decide_effort};
    match decide_effort(
        shape.reasoning_effort.as_deref(),
        policy.enforced_reasoning_effort.as_deref(),
        policy.maximum_reasoning_effort.as_deref(),
    ) {
        EffortDecision::Keep => {}
        EffortDecision::Refuse(effort) => {
            return Err(GatewayError::ReasoningEffortNotAllowed(effort));
        }
        EffortDecision::Set(effort) => {
            let upstream_effort = match effort.as_str() {
                "minimal" => "low",
                "ultra" => "max",
                other => other,
            };
            let reasoning = body.entry("reasoning").or_insert_with(|| json!({}));
            if let Some(obj) = reasoning.as_object_mut() {
                obj.insert("effort".into(), json!(upstream_effort));
            }
            shape.reasoning_effort = Some(effort);
        }
    }
    if let Some(tier) = &policy.enforced_service_tier {
        let tier = crate::domain::pricing::canonical_tier(tier);
        if tier == "auto" {
            body.remove("service_tier");
            shape.service_tier = None;
        } else {
            body.insert("service_tier".into(), json!(tier));
            shape.service_tier = Some(tier);
        }
    }
    Ok(())
}

/// What a reservation recorded.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub estimated_cost_micros: Option<i64>,
    /// Estimated input + output tokens.
    pub estimated_tokens: i64,
    /// Whether a key reservation was taken (the key has windowed limits).
    pub window_reserved: bool,
    pub metadata: serde_json::Value,
}

/// Estimates the request, checks the per-request caps, and takes a reservation
/// against the key's windowed limits (a database round trip only when the key
/// has such limits).
pub async fn reserve(
    rt: &Runtime,
    key: &ApiKeyRow,
    policy: &crate::store::KeyPolicy,
    request_id: &str,
    shape: &super::upstream::RequestShape,
    body_bytes: usize,
    requested_output_cap: Option<i64>,
) -> Result<Reserved, GatewayError> {
    use crate::domain::policy::{estimate_input_tokens, estimate_output_tokens};
    let input = estimate_input_tokens(body_bytes);
    let output = estimate_output_tokens(requested_output_cap, policy.max_output_tokens_per_request);
    let exceeded = |limit: &str,
                    window: &str,
                    attempted: i64,
                    allowed: i64,
                    retry_after_secs: Option<i64>| {
        GatewayError::PolicyLimitExceeded {
            message: format!(
                "API key limit {limit} exceeded ({window}): this request needs {attempted}, the limit allows {allowed}"
            ),
            retry_after_secs,
        }
    };
    if let Some(cap) = policy.max_input_tokens_per_request
        && input > cap
    {
        return Err(exceeded(
            "max_input_tokens_per_request",
            "per request",
            input,
            cap,
            None,
        ));
    }
    if let (Some(cap), Some(asked)) = (policy.max_output_tokens_per_request, requested_output_cap)
        && asked > cap
    {
        return Err(exceeded(
            "max_output_tokens_per_request",
            "per request",
            asked,
            cap,
            None,
        ));
    }
    let usage = crate::domain::pricing::TokenUsage {
        input,
        output,
        total: input + output,
        ..Default::default()
    };
    let priced = rt
        .prices()
        .price(&shape.model, shape.service_tier.as_deref(), None, &usage);
    let metadata = json!({"estimated_input_tokens": input, "estimated_output_tokens": output,
        "estimated_cost_micros": priced.cost_micros, "pricing_status": priced.status.as_str(), "strategy": "json_bytes_div_4_ceil"});
    if policy.has_window_limits() {
        let now = rt.now_secs() * 1000;
        let day_start = now - now.rem_euclid(86_400_000);
        let month_start = crate::time::month_start_ms(now);
        let request = crate::store::ReservationRequest {
            api_key_id: &key.id,
            request_id,
            now_ms: now,
            estimated_tokens: input + output,
            estimated_cost_micros: priced.cost_micros.unwrap_or(0),
            day_start_ms: day_start,
            week_start_ms: now - 7 * 86_400_000,
            month_start_ms: month_start,
        };
        let turn = match &rt.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        let reserved = rt.store.reserve_for_key(policy, &request).await;
        drop(turn);
        match reserved {
            Ok(Ok(())) => {}
            Ok(Err(limit)) => {
                return Err(exceeded(
                    limit.limit,
                    limit.window,
                    limit.attempted,
                    limit.allowed,
                    limit.retry_after_secs,
                ));
            }
            Err(err) => {
                tracing::error!(error = %err, "reservation failed");
                return Err(GatewayError::Internal);
            }
        }
    }
    Ok(Reserved {
        estimated_cost_micros: priced.cost_micros,
        estimated_tokens: input + output,
        window_reserved: policy.has_window_limits(),
        metadata,
    })
}
