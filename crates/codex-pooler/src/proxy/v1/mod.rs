//! The narrow OpenAI-compatible `/v1` surface: requests are translated to the
//! Codex Responses dialect, run through the shared pipeline
//! (`responses::dispatch_events`), and the upstream events re-encoded for
//! OpenAI SDK clients.
//!
//! This file holds the route table, the `/v1` admission gate (stricter than
//! the backend routes: any non-active key is `api_key_disabled`, a Pool with
//! `/v1` off is `v1_compatibility_disabled`) and the routed-but-unsupported
//! endpoints. Translation lives in `translate`, the re-encoding of events in
//! `responses` and `chat`, the read-only routes in `models` and `usage`.

mod chat;
mod models;
mod responses;
mod translate;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::admission::{self, AuthFailure, RowFacts};
use super::ingress;
use super::relay::EventStream;
use super::sse::SseEvent;
use crate::error::GatewayError;
use crate::runtime::{PoolSnapshot, Runtime};
use crate::store::ApiKeyRow;

/// The `/v1` route table. `GET /v1/responses` (websocket) is routed elsewhere.
pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/v1/models", get(models_handler))
        .route("/v1/usage", get(usage_handler))
        .route("/v1/responses", post(responses_handler))
        .route("/v1/chat/completions", post(chat_handler))
        .route("/v1/responses/compact", post(unsupported))
        .route("/v1/images/variations", post(unsupported))
        .route("/v1/content_provenance_checks", post(unsupported))
        .route("/v1/embeddings", post(unsupported))
        .route("/v1/batches", post(unsupported))
        .route("/v1/moderations", post(unsupported))
        .route("/v1/fine_tuning/jobs", post(unsupported))
        .route("/v1/responses/{id}", get(unsupported).delete(unsupported))
        .route("/v1/responses/{id}/cancel", post(unsupported))
}

/// Routed endpoints the gateway does not serve: 404 before admission.
async fn unsupported() -> Response {
    GatewayError::UnsupportedEndpoint.into_response()
}

async fn models_handler(State(rt): State<Arc<Runtime>>, headers: HeaderMap) -> Response {
    models::handle(rt, headers).await
}

async fn usage_handler(State(rt): State<Arc<Runtime>>, headers: HeaderMap) -> Response {
    usage::handle(rt, headers).await
}

async fn responses_handler(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    responses::handle(rt, headers, body).await
}

async fn chat_handler(State(rt): State<Arc<Runtime>>, headers: HeaderMap, body: Body) -> Response {
    chat::handle(rt, headers, body).await
}

/// The upstream events of a committed request, safe to poll after the end
/// (the pipeline's stream must not be polled again once it returned `None`).
pub(crate) struct Events {
    inner: EventStream,
    ended: bool,
}

impl Events {
    pub fn new(inner: EventStream) -> Self {
        Events {
            inner,
            ended: false,
        }
    }

    /// The next event; `None` at the end and forever after.
    pub async fn next(&mut self) -> Option<SseEvent> {
        if self.ended {
            return None;
        }
        let event = self.inner.next().await;
        self.ended = event.is_none();
        event
    }

    /// Reads to the end so the pipeline finalises the request as it ended.
    pub async fn drain(&mut self) {
        while self.next().await.is_some() {}
    }
}

/// An admitted `/v1` caller.
pub(crate) struct Admitted {
    pub key: Arc<ApiKeyRow>,
    pub pool: Arc<PoolSnapshot>,
}

/// The `/v1` gate: authenticates the key (any non-active key is
/// `api_key_disabled`) and checks that the Pool serves `/v1`. Rejections of
/// known keys leave a `rejected` row labelled with `endpoint`.
pub(crate) async fn admit(
    rt: &Runtime,
    headers: &HeaderMap,
    endpoint: &'static str,
) -> Result<Admitted, Response> {
    let facts = RowFacts::from_headers(endpoint, "http_json", headers);
    let key = match admission::authenticate(rt, headers).await {
        Ok(key) => key,
        Err(AuthFailure::Anonymous(err)) => {
            crate::ops::record_outcome(endpoint, "unauthenticated", None);
            return Err(err.into_response());
        }
        Err(AuthFailure::Known(key, _)) => {
            let err = GatewayError::ApiKeyDisabled;
            return Err(admission::reject(rt, &key, &facts, err)
                .await
                .into_response());
        }
    };
    match rt.pool(&key.pool_id).await {
        Ok(Some(pool)) if pool.active && pool.v1_compatibility_enabled => {
            Ok(Admitted { key, pool })
        }
        Ok(_) => {
            let err = GatewayError::V1CompatibilityDisabled;
            Err(admission::reject(rt, &key, &facts, err)
                .await
                .into_response())
        }
        Err(err) => {
            tracing::error!(error = %err, "loading the Pool failed");
            Err(GatewayError::Internal.into_response())
        }
    }
}

/// The path both translated routes share: the `/v1` gate, the JSON body,
/// the translation, and the pipeline. Returns the translated request (minus
/// its body) and the upstream events, or a ready error response.
pub(crate) async fn translate_and_dispatch<T: translate::Translated>(
    rt: Arc<Runtime>,
    headers: HeaderMap,
    body: Body,
    endpoint: &'static str,
    translate: fn(Map<String, Value>) -> Result<T, GatewayError>,
) -> Result<(T, EventStream), Response> {
    let key = admit(&rt, &headers, endpoint).await?.key;
    let json_body = read_json(&rt, &key, &headers, body, endpoint).await?;
    let mut request = match translate(json_body) {
        Ok(r) => r,
        Err(err) => return Err(reject(&rt, &key, &headers, endpoint, err).await),
    };
    let transport = if request.stream() {
        "http_sse"
    } else {
        "http_json"
    };
    let body = request.take_body();
    let events =
        super::responses::dispatch_events(rt, key, headers, body, endpoint, transport).await?;
    Ok((request, events))
}

/// Reads and parses a JSON object body, recording a rejection on failure.
pub(crate) async fn read_json(
    rt: &Runtime,
    key: &ApiKeyRow,
    headers: &HeaderMap,
    body: Body,
    endpoint: &'static str,
) -> Result<Map<String, Value>, Response> {
    let parsed = async {
        ingress::require_json_content_type(headers)?;
        let limits = super::responses::body_limits(rt);
        let (bytes, _wire) = ingress::read_body(headers, body, limits).await?;
        ingress::parse_json_object(&bytes)
    }
    .await;
    match parsed {
        Ok(map) => Ok(map),
        Err(err) => Err(reject(rt, key, headers, endpoint, err).await),
    }
}

/// Records a rejected row for a validation failure and renders the error.
pub(crate) async fn reject(
    rt: &Runtime,
    key: &ApiKeyRow,
    headers: &HeaderMap,
    endpoint: &'static str,
    err: GatewayError,
) -> Response {
    let facts = RowFacts::from_headers(endpoint, "http_json", headers);
    admission::reject(rt, key, &facts, err)
        .await
        .into_response()
}

/// The sanitised public error body for an upstream failure with `code`.
pub(crate) fn upstream_error_body(code: &str) -> Value {
    crate::error::error_body("upstream request failed", "server_error", code, None)
}

/// HTTP status for a failed terminal's code on a non-streaming answer.
pub(crate) fn status_for_code(code: &str) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match code {
        "rate_limit_exceeded" | "usage_limit_reached" | "insufficient_quota" => {
            StatusCode::TOO_MANY_REQUESTS
        }
        "context_length_exceeded"
        | "invalid_prompt"
        | "invalid_request"
        | "invalid_request_error"
        | "previous_response_not_found" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}
