//! `GET /backend-api/codex/models`: the Pool's catalog as the Codex CLI expects
//! it, with a weak ETag, synced from the upstream on first use when empty.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::admission::{self, AuthFailure, RowFacts};
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::store::RecordEvent;

const ENDPOINT: &str = "/backend-api/codex/models";

pub async fn handle(rt: Arc<Runtime>, headers: HeaderMap) -> Response {
    let facts = RowFacts::from_headers(ENDPOINT, "http_json", &headers);
    let key = match admission::authenticate(&rt, &headers).await {
        Ok(key) => key,
        Err(AuthFailure::Anonymous(err)) => return err.into_response(),
        Err(AuthFailure::Known(key, err)) => {
            return admission::reject(&rt, &key, &facts, err)
                .await
                .into_response();
        }
    };
    let mut pool = match rt.pool(&key.pool_id).await {
        Ok(Some(pool)) => pool,
        Ok(None) => {
            return admission::reject(&rt, &key, &facts, GatewayError::NoEligibleBackend)
                .await
                .into_response();
        }
        Err(_) => return GatewayError::Internal.into_response(),
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
    let allowed: Option<Vec<String>> = key
        .allowed_models
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok());
    let mut body = String::from("{\"models\":[");
    let mut first = true;
    for (slug, raw) in &pool.models {
        if allowed.as_ref().is_some_and(|list| !list.contains(slug)) {
            continue;
        }
        if !first {
            body.push(',');
        }
        first = false;
        body.push_str(raw);
    }
    body.push_str("]}");
    let etag = format!(
        "W/\"{}\"",
        &hex::encode(Sha256::digest(body.as_bytes()))[..16]
    );
    let mut row = admission::new_row(&key, &facts, "succeeded", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    let not_modified = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    row.response_status_code = Some(if not_modified { 304 } else { 200 });
    row.request_metadata = serde_json::json!({"api_key": {"prefix": key.key_prefix}, "operation": "models", "model_count": pool.models.len()}).to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(ENDPOINT, "succeeded", None);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(axum::http::header::ETAG, v);
    }
    response
}
