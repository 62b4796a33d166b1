//! The Responses websocket (`GET /backend-api/codex/responses`): the client
//! socket is accepted only once an upstream socket to the chosen account is
//! open (so a refusal such as 426 reaches the client as an HTTP status and the
//! Codex CLI falls back to HTTP). Frames are relayed both ways as received; a
//! side reader tracks each `response.create` turn, which is admitted against
//! the key's current state and recorded as its own request row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::admission::{self, AuthFailure, RowFacts};
use super::relay::{Finisher, Outcome, StreamEnd, StreamObserver};
use super::routing;
use super::sse::SseEvent;
use super::upstream;
use crate::domain::classify::EventKind;
use crate::error::GatewayError;
use crate::runtime::{Candidate, Credentials, Runtime};
use crate::store::{ApiKeyRow, NewAttempt, RecordEvent};
use crate::time::{new_id, now_ms};

const ENDPOINT: &str = "/backend-api/codex/responses";
/// The websocket protocol version presented upstream.
pub const RESPONSES_WEBSOCKETS_BETA: &str = "responses_websockets=2026-02-06";
/// How often an open socket re-checks that its key is still active.
const KEY_RECHECK: Duration = Duration::from_secs(1);
/// Close a socket that has seen no client frame for this long (no turn running).
const DOWNSTREAM_IDLE: Duration = Duration::from_secs(1800);
/// Largest frame accepted from a client.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Per-socket read and write buffers: small, so idle sockets stay cheap
/// (frames larger than this are still accepted; the buffer grows for them).
const SOCKET_BUFFER_BYTES: usize = 8 * 1024;

type UpstreamSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which websocket route a client opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsSurface {
    /// `GET /backend-api/codex/responses`.
    Backend,
    /// `GET /v1/responses`: the narrow public websocket, behind the Pool's
    /// `/v1` switch and the stricter `/v1` key rule.
    V1,
}

impl WsSurface {
    fn endpoint(self) -> &'static str {
        match self {
            WsSurface::Backend => ENDPOINT,
            WsSurface::V1 => "/v1/responses",
        }
    }
}

/// Handles the upgrade request.
pub async fn upgrade(
    rt: Arc<Runtime>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    surface: WsSurface,
) -> Response {
    let facts = RowFacts::from_headers(surface.endpoint(), "websocket", &headers);
    let key = match admission::authenticate(&rt, &headers).await {
        Ok(key) => key,
        Err(AuthFailure::Anonymous(err)) => return err.into_response(),
        Err(AuthFailure::Known(key, err)) => {
            let err = if surface == WsSurface::V1 {
                GatewayError::ApiKeyDisabled
            } else {
                err
            };
            return admission::reject(&rt, &key, &facts, err)
                .await
                .into_response();
        }
    };
    let pool = match rt.pool(&key.pool_id).await {
        Ok(Some(pool)) if surface == WsSurface::V1 && !pool.v1_compatibility_enabled => {
            return admission::reject(&rt, &key, &facts, GatewayError::V1CompatibilityDisabled)
                .await
                .into_response();
        }
        Ok(Some(pool)) if pool.active => pool,
        Ok(_) => {
            return admission::reject(&rt, &key, &facts, GatewayError::NoEligibleBackend)
                .await
                .into_response();
        }
        Err(_) => return GatewayError::Internal.into_response(),
    };
    let seed = routing::seed_for(&headers, None, pool.seed_policy);
    let pinned = headers
        .get("x-codex-turn-state")
        .and_then(|v| v.to_str().ok())
        .and_then(|ts| rt.turn_state_pin(ts));
    let pin = routing::check_pin(&pool, pinned.as_deref(), rt.now_secs());
    match pin {
        routing::PinCheck::Unavailable => {
            return admission::reject(
                &rt,
                &key,
                &facts,
                GatewayError::PinnedContinuationUnavailable,
            )
            .await
            .into_response();
        }
        routing::PinCheck::ReauthRequired => {
            return admission::reject(
                &rt,
                &key,
                &facts,
                GatewayError::PinnedContinuationReauthRequired,
            )
            .await
            .into_response();
        }
        _ => {}
    }
    let inputs = routing::Inputs {
        now: rt.now_secs(),
        health: &rt.health,
        model: "*",
        route_class: "proxy_websocket",
    };
    let plan = routing::plan_with_pin(&pool, &seed, inputs, &pin);
    if plan.ring.is_empty() {
        return admission::reject(&rt, &key, &facts, GatewayError::NoEligibleBackend)
            .await
            .into_response();
    }
    let mut refusal: Option<Response> = None;
    for candidate in &plan.ring {
        match connect_with_refresh(&rt, candidate, &headers).await {
            Ok((socket, handshake_headers)) => {
                let rt2 = rt.clone();
                let key2 = key.clone();
                let candidate2 = candidate.clone();
                let client_headers = headers.clone();
                let mut response = ws
                    .read_buffer_size(SOCKET_BUFFER_BYTES)
                    .write_buffer_size(SOCKET_BUFFER_BYTES)
                    .max_message_size(MAX_FRAME_BYTES)
                    .max_frame_size(MAX_FRAME_BYTES)
                    .on_upgrade(move |client| {
                        session(
                            rt2,
                            key2,
                            candidate2,
                            client_headers,
                            client,
                            socket,
                            surface.endpoint(),
                        )
                    });
                response.headers_mut().extend(handshake_headers);
                return response;
            }
            Err(Refusal::FallBack(resp)) => return resp,
            Err(Refusal::TryNext(resp)) => refusal = Some(resp),
        }
    }
    refusal.unwrap_or_else(|| GatewayError::UpstreamRequestFailed.into_response())
}

enum Refusal {
    /// The upstream does not want a websocket: tell the client (it falls back to HTTP).
    FallBack(Response),
    /// This account could not take the socket; another may.
    TryNext(Response),
}

async fn connect_with_refresh(
    rt: &Runtime,
    candidate: &Candidate,
    client_headers: &HeaderMap,
) -> Result<(UpstreamSocket, HeaderMap), Refusal> {
    let creds = rt
        .fresh_credentials(candidate)
        .await
        .map_err(|_| Refusal::TryNext(GatewayError::UpstreamRequestFailed.into_response()))?;
    match connect(rt, candidate, &creds, client_headers).await {
        Err(status) if status == StatusCode::UNAUTHORIZED => {
            let creds = rt.refresh(candidate, creds.generation).await.map_err(|_| {
                Refusal::TryNext(GatewayError::UpstreamRequestFailed.into_response())
            })?;
            connect(rt, candidate, &creds, client_headers)
                .await
                .map_err(refusal_for)
        }
        other => other.map_err(refusal_for),
    }
}

fn refusal_for(status: StatusCode) -> Refusal {
    let body = json!({"error": {"message": format!("upstream refused the websocket ({})", status.as_u16()),
        "type": "invalid_request_error", "code": "websocket_upgrade_refused", "param": null}});
    let response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UPGRADE_REQUIRED {
        Refusal::FallBack(response)
    } else {
        Refusal::TryNext(response)
    }
}

async fn connect(
    rt: &Runtime,
    candidate: &Candidate,
    creds: &Credentials,
    client_headers: &HeaderMap,
) -> Result<(UpstreamSocket, HeaderMap), StatusCode> {
    let ws_base = candidate.base_url.replacen("http", "ws", 1);
    let mut request = format!("{ws_base}/backend-api/codex/responses")
        .into_client_request()
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    let headers = upstream::upstream_headers(
        rt,
        candidate,
        &creds.secret.access_token,
        client_headers,
        "text/event-stream",
    );
    for (name, value) in &headers {
        if name == reqwest::header::CONTENT_TYPE || name == reqwest::header::ACCEPT {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            tungstenite::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            tungstenite::http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            request.headers_mut().insert(n, v);
        }
    }
    request.headers_mut().insert(
        "openai-beta",
        tungstenite::http::HeaderValue::from_static(RESPONSES_WEBSOCKETS_BETA),
    );
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let timeout = Duration::from_secs(rt.settings.upstream_header_timeout_secs);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, response))) => {
            let mut relayed = HeaderMap::new();
            for (name, value) in response.headers() {
                let n = name.as_str();
                if (upstream::RELAYED_RESPONSE_HEADERS.contains(&n) || n.starts_with("x-codex-"))
                    && let (Ok(name), Ok(value)) = (
                        axum::http::HeaderName::from_bytes(n.as_bytes()),
                        HeaderValue::from_bytes(value.as_bytes()),
                    )
                {
                    relayed.append(name, value);
                }
            }
            if let Some(ts) = response
                .headers()
                .get("x-codex-turn-state")
                .and_then(|v| v.to_str().ok())
            {
                rt.pin_turn_state(ts, &candidate.assignment_id);
            }
            Ok((socket, relayed))
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            if status == StatusCode::TOO_MANY_REQUESTS
                && let Some(body) = response.body()
                && let Ok(v) = serde_json::from_slice::<Value>(body)
                && let Some(reset) = upstream::usage_limit_reset(&v, rt.now_secs())
            {
                candidate.identity.mark_exhausted_until(reset);
            }
            Err(status)
        }
        Ok(Err(_)) | Err(_) => Err(StatusCode::BAD_GATEWAY),
    }
}

/// What to do with a client frame.
enum ClientFrame {
    /// Relay the frame as received.
    Forward,
    /// Relay this instead (the key's policy changed the turn).
    Rewrite(String),
    /// Send this error frame back and relay nothing.
    Refuse(String),
}

/// One turn being served.
struct Turn {
    finisher: Option<Finisher>,
    observer: StreamObserver,
    /// Prewarm turns (`generate: false`) are relayed but not recorded.
    recorded: bool,
}

struct Session {
    rt: Arc<Runtime>,
    key: Arc<ApiKeyRow>,
    candidate: Candidate,
    client_headers: HeaderMap,
    endpoint: &'static str,
    turn: Option<Turn>,
    turns: i64,
}

async fn session(
    rt: Arc<Runtime>,
    key: Arc<ApiKeyRow>,
    candidate: Candidate,
    client_headers: HeaderMap,
    client: WebSocket,
    upstream: UpstreamSocket,
    endpoint: &'static str,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let mut state = Session {
        rt: rt.clone(),
        key,
        candidate,
        client_headers,
        endpoint,
        turn: None,
        turns: 0,
    };
    let mut recheck = tokio::time::interval(KEY_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_client_frame = Instant::now();
    let shutdown = rt.shutdown.clone();
    loop {
        tokio::select! {
            frame = client_rx.next() => {
                last_client_frame = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let bytes = match state.on_client_text(text.as_str()).await {
                            ClientFrame::Forward => Bytes::from(text),
                            ClientFrame::Rewrite(rewritten) => Bytes::from(rewritten),
                            ClientFrame::Refuse(error_frame) => {
                                if client_tx.send(Message::Text(error_frame.into())).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        };
                        let Ok(forward) = tungstenite::Utf8Bytes::try_from(bytes) else { break };
                        if up_tx.send(tungstenite::Message::Text(forward)).await.is_err() {
                            state.end_turn(StreamEnd::UpstreamError).await;
                            let _ = client_tx.send(close(1011, "upstream connection lost")).await;
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(data))) => {
                        if up_tx.send(tungstenite::Message::Binary(data)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        state.end_turn(StreamEnd::ClientGone).await;
                        let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                        break;
                    }
                }
            }
            frame = up_rx.next() => {
                match frame {
                    Some(Ok(tungstenite::Message::Text(text))) => {
                        state.on_upstream_text(text.as_str()).await;
                        let out = Message::Text(Utf8Bytes::from(text.as_str()));
                        if client_tx.send(out).await.is_err() {
                            state.end_turn(StreamEnd::ClientGone).await;
                            let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                            break;
                        }
                    }
                    Some(Ok(tungstenite::Message::Binary(data))) => {
                        if client_tx.send(Message::Binary(data)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(tungstenite::Message::Close(frame))) => {
                        state.end_turn(StreamEnd::Eof).await;
                        let (code, reason) = frame.map_or((1000, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        let _ = client_tx.send(close(code, &reason)).await;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        state.end_turn(StreamEnd::UpstreamError).await;
                        let _ = client_tx.send(close(1011, "upstream connection lost")).await;
                        break;
                    }
                }
            }
            _ = recheck.tick() => {
                if !state.key_still_active().await {
                    state.end_turn(StreamEnd::ClientGone).await;
                    let _ = client_tx.send(close(1008, "api key is no longer active")).await;
                    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                    break;
                }
                if state.turn.is_none() && last_client_frame.elapsed() > DOWNSTREAM_IDLE {
                    let _ = client_tx.send(close(1000, "idle timeout")).await;
                    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                    break;
                }
            }
            () = shutdown.cancelled() => {
                state.end_turn(StreamEnd::ClientGone).await;
                let _ = client_tx.send(close(1001, "gateway shutting down")).await;
                let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                break;
            }
        }
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

impl Session {
    async fn key_still_active(&self) -> bool {
        match self.rt.api_key(&self.key.key_prefix).await {
            Ok(Some(k)) => k.status == "active" && k.expires_at.is_none_or(|at| at > now_ms()),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Looks at a client frame. Returns an error frame to send instead of
    /// forwarding when the turn is refused.
    async fn on_client_text(&mut self, text: &str) -> ClientFrame {
        let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
            return ClientFrame::Forward;
        };
        if frame.get("type").and_then(Value::as_str) != Some("response.create") {
            return ClientFrame::Forward;
        }
        let value = Value::Object(frame.clone());
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut facts = RowFacts::from_headers(self.endpoint, "websocket", &self.client_headers);
        facts.model = Some(model.clone());
        facts.reasoning_effort = value
            .pointer("/reasoning/effort")
            .and_then(Value::as_str)
            .map(str::to_owned);
        facts.service_tier = value
            .get("service_tier")
            .and_then(Value::as_str)
            .map(crate::domain::pricing::canonical_tier);
        let generate = value
            .get("generate")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let denial = if self.turn.is_some() {
            Some(GatewayError::InvalidRequest {
                message: "a response is already in progress on this socket".into(),
                param: None,
            })
        } else if !self.key_still_active().await {
            Some(GatewayError::ApiKeyRevoked)
        } else if let Err(err) = admission::check_model_allowed(&self.key, &model) {
            Some(err)
        } else if let Some(enforced) = &self.key.enforced_model
            && enforced != &model
        {
            Some(GatewayError::ModelNotAllowed(model.clone()))
        } else {
            None
        };
        if let Some(err) = denial {
            return self.refuse(&facts, err).await;
        }
        // The key's effort and tier policy, and its limits, hold per turn too.
        let policy = match self.rt.key_policy(&self.key.id).await {
            Ok(p) => p,
            Err(_) => return self.refuse(&facts, GatewayError::Internal).await,
        };
        let mut shape = super::upstream::RequestShape {
            model: model.clone(),
            client_wants_stream: true,
            reasoning_effort: facts.reasoning_effort.clone(),
            service_tier: facts.service_tier.clone(),
        };
        let before = (shape.reasoning_effort.clone(), shape.service_tier.clone());
        if let Err(err) = admission::apply_policy(&policy, &mut frame, &mut shape) {
            return self.refuse(&facts, err).await;
        }
        let rewritten = (shape.reasoning_effort.clone(), shape.service_tier.clone()) != before;
        facts.reasoning_effort = shape.reasoning_effort.clone();
        facts.service_tier = shape.service_tier.clone();
        let mut row = admission::new_row(&self.key, &facts, "in_progress", "usage_pending");
        if generate {
            let output_cap = frame.get("max_output_tokens").and_then(Value::as_i64);
            match admission::reserve(
                &self.rt,
                &self.key,
                &policy,
                &row.id,
                &shape,
                text.len(),
                output_cap,
            )
            .await
            {
                Ok(reserved) => {
                    row.estimated_cost_micros = reserved.estimated_cost_micros;
                    row.estimated_tokens = Some(reserved.estimated_tokens);
                    row.window_reserved = reserved.window_reserved;
                }
                Err(err) => return self.refuse(&facts, err).await,
            }
        }
        self.start_turn(row, facts.service_tier.clone(), model, generate)
            .await;
        if rewritten {
            ClientFrame::Rewrite(Value::Object(frame).to_string())
        } else {
            ClientFrame::Forward
        }
    }

    /// Records the refusal of a turn and builds its error frame.
    async fn refuse(&self, facts: &RowFacts, err: GatewayError) -> ClientFrame {
        let status = err.status().as_u16();
        let body = err.body();
        admission::reject(&self.rt, &self.key, facts, err).await;
        ClientFrame::Refuse(
            json!({"type": "error", "status": status, "error": body["error"]}).to_string(),
        )
    }

    async fn start_turn(
        &mut self,
        mut row: crate::store::NewRequest,
        service_tier: Option<String>,
        model: String,
        generate: bool,
    ) {
        let observer = StreamObserver::new(false);
        if !generate {
            self.turn = Some(Turn {
                finisher: None,
                observer,
                recorded: false,
            });
            return;
        }
        let started = Instant::now();
        row.request_metadata = json!({"api_key": {"prefix": self.key.key_prefix}, "websocket_turn": self.turns + 1,
            "routing": {"assignment_id": self.candidate.assignment_id, "reason": "websocket_session"}})
        .to_string();
        let request_id = row.id.clone();
        self.rt
            .recorder
            .send(RecordEvent::Request(Box::new(row)))
            .await;
        let attempt_id = new_id();
        self.rt
            .recorder
            .send(RecordEvent::AttemptStarted(Box::new(NewAttempt {
                id: attempt_id.clone(),
                request_id: request_id.clone(),
                attempt_number: 1,
                assignment_id: self.candidate.assignment_id.clone(),
                identity_id: self.candidate.identity.id.clone(),
                identity_label: self.candidate.label.clone(),
                identity_email: self.candidate.email.clone().filter(|e| e.contains('@')),
                identity_plan: self.candidate.plan_type.clone(),
                started_at: now_ms(),
            })))
            .await;
        let finisher = Finisher::new(
            self.rt.clone(),
            request_id,
            self.endpoint,
            model,
            service_tier,
            attempt_id,
            self.candidate.identity.id.clone(),
            0,
            started,
            0,
            started,
        );
        self.turns += 1;
        self.turn = Some(Turn {
            finisher: Some(finisher),
            observer,
            recorded: true,
        });
    }

    async fn on_upstream_text(&mut self, text: &str) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if let Some(f) = turn.finisher.as_mut()
            && f.first_byte_ms.is_none()
        {
            f.first_byte_ms = Some(f.started.elapsed().as_millis() as i64);
        }
        let event = SseEvent {
            name: None,
            data: text.as_bytes().to_vec(),
        };
        turn.observer.on_event(&event);
        if text.contains("\"codex.rate_limits\"")
            && let Ok(v) = serde_json::from_str::<Value>(text)
        {
            for kind in ["primary", "secondary"] {
                if let Some(w) = v
                    .pointer(&format!("/rate_limits/{kind}"))
                    .filter(|w| w.is_object())
                    && let Some(used) = w.get("used_percent").and_then(Value::as_f64)
                {
                    let minutes = w.get("window_minutes").and_then(Value::as_i64);
                    let kind = if kind == "primary" && minutes == Some(10_080) {
                        "secondary"
                    } else {
                        kind
                    };
                    self.candidate.identity.observe_window(
                        kind,
                        crate::runtime::QuotaWindow {
                            used_percent: used,
                            reset_at: w.get("reset_at").and_then(Value::as_i64),
                            observed_at: now_ms(),
                        },
                    );
                }
            }
        }
        if text.contains("\"response.metadata\"")
            && let Ok(v) = serde_json::from_str::<Value>(text)
            && let Some(ts) = v
                .pointer("/headers/x-codex-turn-state")
                .and_then(Value::as_str)
        {
            self.rt.pin_turn_state(ts, &self.candidate.assignment_id);
        }
        if let Some(turn) = self.turn.as_ref()
            && matches!(
                turn.observer.terminal,
                Some(EventKind::Succeeded | EventKind::Failed(_))
            )
        {
            self.end_turn(StreamEnd::Eof).await;
        }
    }

    async fn end_turn(&mut self, end: StreamEnd) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        if !turn.recorded {
            return;
        }
        if let Some(finisher) = turn.finisher.take() {
            let mut outcome = Outcome::from_observer(&turn.observer, end);
            if outcome.error_code.as_deref() == Some("client_disconnected") {
                outcome.response_status_code = 499;
            }
            finisher.finish(outcome).await;
        }
    }
}
