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
