//! Operational endpoints (`/healthz`, `/readyz`, `/metrics`) and the metric
//! names the gateway records. Metric labels are route families and outcomes,
//! never payloads, keys or account identifiers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::runtime::Runtime;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once).
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// Counts a finished request and, when timed, observes its latency and the
/// gateway's own share of it (total minus upstream time).
pub fn record_outcome(route: &'static str, outcome: &'static str, timing_ms: Option<(i64, i64)>) {
    metrics::counter!("codex_pooler_requests_total", "route" => route, "outcome" => outcome)
        .increment(1);
    if let Some((total_ms, overhead_ms)) = timing_ms {
        metrics::histogram!("codex_pooler_request_duration_seconds", "route" => route)
            .record(total_ms as f64 / 1000.0);
        metrics::histogram!("codex_pooler_gateway_overhead_seconds", "route" => route)
            .record(overhead_ms.max(0) as f64 / 1000.0);
    }
}

pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(1), rt.store.ping()).await {
        Ok(Ok(())) if !rt.shutdown.is_cancelled() => {
            axum::Json(json!({"status": "ready"})).into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable"})),
        )
            .into_response(),
    }
}

async fn metrics_text() -> Response {
    match install_metrics() {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response(),
    }
}
