//! `GET /v1/usage`: the calling key's totals from its request rows (requests
//! that went upstream, their tokens and settled cost). Key limits and
//! upstream limits are not modelled yet and are reported as empty lists.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Admitted;
use crate::error::GatewayError;
use crate::proxy::admission::{self, RowFacts};
use crate::runtime::Runtime;
use crate::store::{KeyUsageTotals, RecordEvent};

const ENDPOINT: &str = "/v1/usage";

/// `complete` when every counted request has a settled cost, else `partial`.
fn cost_status(t: &KeyUsageTotals) -> &'static str {
    if t.unpriced_count == 0 && t.pending_count == 0 {
        "complete"
    } else {
        "partial"
    }
}

pub async fn handle(rt: Arc<Runtime>, headers: HeaderMap) -> Response {
    let Admitted { key, .. } = match super::admit(&rt, &headers, ENDPOINT).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let totals = match rt.store.key_usage_totals(&key.id).await {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(error = %err, "reading key usage failed");
            return GatewayError::Internal.into_response();
        }
    };
    let facts = RowFacts::from_headers(ENDPOINT, "http_json", &headers);
    let mut row = admission::new_row(&key, &facts, "succeeded", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    row.response_status_code = Some(200);
    row.request_metadata =
        json!({"api_key": {"prefix": key.key_prefix}, "operation": "usage"}).to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(ENDPOINT, "succeeded", None);
    axum::Json(json!({
        "request_count": totals.request_count,
        "total_tokens": totals.total_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "total_cost_usd": totals.settled_cost_micros as f64 / 1_000_000.0,
        "total_cost_status": cost_status(&totals),
        "limits": [],
        "upstream_limits": [],
    }))
    .into_response()
}
