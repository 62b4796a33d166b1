//! `GET /v1/models`: the Pool's catalog in the OpenAI list shape, filtered by
//! the key's allowed models, with a flattened `context_length` (raw window ×
//! effective percent). Backend-only catalog fields are not exposed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Admitted;
use crate::proxy::admission::{self, RowFacts};
use crate::runtime::Runtime;
use crate::store::RecordEvent;

const ENDPOINT: &str = "/v1/models";

/// `context_window × effective_context_window_percent / 100` (the window
/// alone when no percent is given).
fn context_length(raw: &Value) -> Option<i64> {
    let window = raw
        .get("context_window")
        .and_then(Value::as_i64)
        .or_else(|| raw.get("max_context_window").and_then(Value::as_i64))
        .filter(|w| *w > 0)?;
    match raw
        .get("effective_context_window_percent")
        .and_then(Value::as_i64)
    {
        Some(p) if (1..=100).contains(&p) => Some(window * p / 100),
        _ => Some(window),
    }
}

/// One public model entry from the raw catalog JSON.
fn model_entry(slug: &str, raw: &Value, created: i64) -> Value {
    let mut entry = json!({
        "id": slug,
        "object": "model",
        "created": created,
        "owned_by": "codex-pooler",
        "permission": [],
        "input_modalities": raw.get("input_modalities").filter(|v| v.is_array()).cloned()
            .unwrap_or_else(|| json!(["text"])),
        "display_name": raw.get("display_name").and_then(Value::as_str).unwrap_or(slug),
        "supports_streaming": true,
        "supports_tools": true,
        "supports_reasoning": raw.get("supported_reasoning_levels").and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty()),
    });
    if let Some(len) = context_length(raw) {
        entry["context_length"] = json!(len);
    }
    entry
}

pub async fn handle(rt: Arc<Runtime>, headers: HeaderMap) -> Response {
    let Admitted { key, mut pool } = match super::admit(&rt, &headers, ENDPOINT).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if pool.models.is_empty() {
        match tokio::time::timeout(Duration::from_secs(20), rt.sync_pool_catalog(&key.pool_id))
            .await
        {
            Ok(Ok(_)) => {
                if let Ok(Some(p)) = rt.pool(&key.pool_id).await {
                    pool = p;
                }
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "model catalog sync failed"),
            Err(_) => tracing::warn!("model catalog sync timed out"),
        }
    }
    let first_seen: HashMap<String, i64> = rt
        .store
        .pool_model_first_seen(&key.pool_id)
        .await
        .map(|rows| rows.into_iter().collect())
        .unwrap_or_default();
    let allowed: Option<Vec<String>> = key
        .allowed_models
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok());
    let data: Vec<Value> = pool
        .models
        .iter()
        .filter(|(slug, _)| allowed.as_ref().is_none_or(|list| list.contains(slug)))
        .map(|(slug, raw)| {
            let raw: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            let created = first_seen.get(slug).map_or(0, |ms| ms / 1000);
            model_entry(slug, &raw, created)
        })
        .collect();
    let facts = RowFacts::from_headers(ENDPOINT, "http_json", &headers);
    let mut row = admission::new_row(&key, &facts, "succeeded", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    row.response_status_code = Some(200);
    row.request_metadata = json!({"api_key": {"prefix": key.key_prefix}, "operation": "models",
        "model_count": data.len()})
    .to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(ENDPOINT, "succeeded", None);
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_applies_the_effective_percent() {
        let raw = json!({"context_window": 272000, "effective_context_window_percent": 95});
        assert_eq!(context_length(&raw), Some(258400));
        let raw = json!({"context_window": 872000, "effective_context_window_percent": 95});
        assert_eq!(context_length(&raw), Some(828400));
        assert_eq!(context_length(&json!({"context_window": 1000})), Some(1000));
        assert_eq!(context_length(&json!({})), None);
        let e = model_entry("m", &json!({"display_name": "M"}), 7);
        assert_eq!(e["owned_by"], "codex-pooler");
        assert!(e.get("context_length").is_none());
    }
}
