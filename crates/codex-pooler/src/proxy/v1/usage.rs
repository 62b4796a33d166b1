//! `GET /v1/usage`: the calling key's own totals and limits. Totals come
//! from the daily rollups (they survive request-log pruning) plus the rows
//! still in progress; limits are the key's configured limits with what it
//! has used of each window (`proxy::key_usage`). Upstream limits belong to
//! the Pool's accounts, not the key, and are not shown.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Admitted;
use crate::error::GatewayError;
use crate::proxy::admission::RowFacts;
use crate::proxy::key_usage;
use crate::runtime::Runtime;
use crate::store::KeyWindowUsage;

const ENDPOINT: &str = "/v1/usage";

/// `complete` when every counted request has a settled cost, else `partial`.
fn cost_status(u: &KeyWindowUsage) -> &'static str {
    if u.measures.metered_count == u.measures.priced_count && u.pending_count == 0 {
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
    let usage = match rt.store.key_window_usage(&key.id, 0).await {
        Ok(u) => u,
        Err(err) => {
            tracing::error!(error = %err, "reading key usage failed");
            return GatewayError::Internal.into_response();
        }
    };
    let limits = match rt.key_policy(&key.id).await {
        Ok(policy) => key_usage::limit_views(&rt, &key.id, &policy).await,
        Err(err) => {
            tracing::error!(error = %err, "loading the key policy failed");
            Err(GatewayError::Internal)
        }
    };
    let limits = match limits {
        Ok(l) => l,
        Err(err) => return err.into_response(),
    };
    let facts = RowFacts::from_headers(ENDPOINT, "http_json", &headers);
    key_usage::record_read(&rt, &key, &facts, "usage").await;
    let m = &usage.measures;
    axum::Json(json!({
        "request_count": m.metered_count + usage.pending_count,
        "total_tokens": m.total_tokens,
        "cached_input_tokens": m.cached_input_tokens,
        "total_cost_usd": m.settled_cost_micros as f64 / 1_000_000.0,
        "total_cost_status": cost_status(&usage),
        "limits": limits,
        "upstream_limits": [],
    }))
    .into_response()
}
