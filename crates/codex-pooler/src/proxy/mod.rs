//! The data plane: the routes clients call as they would call the Codex
//! backend. Handlers are thin; the pipeline lives in `responses`.

pub mod admission;
pub mod ingress;
pub mod key_usage;
pub mod models;
pub mod relay;
pub mod responses;
pub mod routing;
pub mod sse;
pub mod upstream;
pub mod v1;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::runtime::Runtime;
use responses::Route;

/// The data-plane route table.
pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
        .route(
            "/backend-api/codex/responses",
            post(responses_handler).get(websocket_handler),
        )
        .route(
            "/backend-api/codex/v1/responses",
            post(responses_handler).get(websocket_handler),
        )
        .route(
            "/backend-api/codex/responses/compact",
            post(compact_handler),
        )
        .route(
            "/backend-api/codex/v1/responses/compact",
            post(compact_handler),
        )
        .route("/backend-api/codex/models", get(models_handler))
        .route("/backend-api/codex/v1/models", get(models_handler))
        .route("/v1/responses", get(v1_websocket_handler))
        .route("/backend-api/wham/usage", get(codex_usage_handler))
        .route("/wham/usage", get(codex_usage_handler))
        .route("/api/codex/usage", get(codex_usage_handler))
        .merge(v1::router())
}

async fn responses_handler(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    responses::handle(rt, Route::Responses, headers, body).await
}

async fn websocket_handler(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => ws::upgrade(rt, headers, upgrade, ws::WsSurface::Backend).await,
        Err(_) => crate::error::GatewayError::WebsocketUpgradeRequired.into_response(),
    }
}

async fn v1_websocket_handler(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => ws::upgrade(rt, headers, upgrade, ws::WsSurface::V1).await,
        Err(_) => crate::error::GatewayError::WebsocketUpgradeRequired.into_response(),
    }
}

async fn compact_handler(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    responses::handle(rt, Route::Compact, headers, body).await
}

async fn models_handler(State(rt): State<Arc<Runtime>>, headers: HeaderMap) -> Response {
    models::handle(rt, headers).await
}

async fn codex_usage_handler(
    State(rt): State<Arc<Runtime>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let endpoint = match uri.path() {
        "/wham/usage" => "/wham/usage",
        "/api/codex/usage" => "/api/codex/usage",
        _ => "/backend-api/wham/usage",
    };
    key_usage::handle_codex_usage(rt, headers, endpoint).await
}
