//! The Responses pipeline shared by the backend routes: admit, plan, try the
//! ring's accounts in order (failing over on 429, 5xx, network errors and
//! retryable first events, never after a byte reached the client), refresh a
//! token once on 401, then relay the stream or build the non-streaming answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::admission::{self, AuthFailure, RowFacts};
use super::ingress::{self, BodyLimits, DECOMPRESSION_TIME_LIMIT};
use super::relay::{
    self, EventStream, Finisher, MAX_EVENT_BYTES, Outcome, StreamEnd, StreamObserver,
    UpstreamStream,
};
use super::routing;
use super::sse::SseReader;
use super::upstream::{self, RELAYED_RESPONSE_HEADERS, RequestShape};
use crate::domain::classify::{EventKind, is_retryable_first_event_code};
use crate::error::GatewayError;
use crate::health::CircuitState;
use crate::runtime::{Candidate, Credentials, Runtime};
use crate::store::{ApiKeyRow, AttemptEnd, NewAttempt, RecordEvent, RequestEnd, Settlement};
use crate::time::{new_id, now_ms};

/// Which backend route is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Responses,
    Compact,
}

impl Route {
    fn endpoint(self) -> &'static str {
        match self {
            Route::Responses => "/backend-api/codex/responses",
            Route::Compact => "/backend-api/codex/responses/compact",
        }
    }
    fn upstream_path(self) -> &'static str {
        self.endpoint()
    }
}

/// Body limits from the settings.
pub fn body_limits(rt: &Runtime) -> BodyLimits {
    BodyLimits {
        max_wire_bytes: rt.settings.max_request_bytes,
        max_decompressed_bytes: rt.settings.max_decompressed_bytes,
        max_ratio: rt.settings.max_decompression_ratio,
        time_limit: DECOMPRESSION_TIME_LIMIT,
    }
}

/// Handles `POST /backend-api/codex/responses` and `/responses/compact`.
pub async fn handle(rt: Arc<Runtime>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let key = match admission::authenticate(&rt, &headers).await {
        Ok(key) => key,
        Err(AuthFailure::Anonymous(err)) => {
            crate::ops::record_outcome(route.endpoint(), "unauthenticated", None);
            return err.into_response();
        }
        Err(AuthFailure::Known(key, err)) => {
            let facts =
                RowFacts::from_headers(route.endpoint(), transport_guess(route, None), &headers);
            return admission::reject(&rt, &key, &facts, err)
                .await
                .into_response();
        }
    };
    let facts = RowFacts::from_headers(route.endpoint(), transport_guess(route, None), &headers);
    let parsed = async {
        ingress::require_json_content_type(&headers)?;
        let (bytes, _wire) = ingress::read_body(&headers, body, body_limits(&rt)).await?;
        ingress::parse_json_object(&bytes)
    }
    .await;
    let json_body = match parsed {
        Ok(b) => b,
        Err(err) => {
            return admission::reject(&rt, &key, &facts, err)
                .await
                .into_response();
        }
    };
    let surface = Surface {
        route,
        endpoint: route.endpoint(),
        delivery: Delivery::Native,
    };
    match dispatch(rt, surface, key, headers, json_body, facts, started).await {
        Dispatched::Response(r) => r,
        Dispatched::Events(_) => GatewayError::Internal.into_response(),
    }
}

/// Runs a translated request (already in Codex Responses shape) through the
/// pipeline and hands back the upstream events after commit, for surfaces that
/// re-encode them (`/v1`). `endpoint` and `transport` label the request row.
/// Failures before commit come back as ready error responses.
pub async fn dispatch_events(
    rt: Arc<Runtime>,
    key: Arc<ApiKeyRow>,
    headers: HeaderMap,
    json_body: Map<String, Value>,
    endpoint: &'static str,
    transport: &'static str,
) -> Result<EventStream, Response> {
    let started = Instant::now();
    let mut facts = RowFacts::from_headers(endpoint, transport, &headers);
    facts.transport = transport;
    let surface = Surface {
        route: Route::Responses,
        endpoint,
        delivery: Delivery::Events,
    };
    match dispatch(rt, surface, key, headers, json_body, facts, started).await {
        Dispatched::Events(events) => Ok(events),
        Dispatched::Response(r) => Err(r),
    }
}

/// Where a request came in and how its answer leaves.
#[derive(Debug, Clone, Copy)]
struct Surface {
    route: Route,
    endpoint: &'static str,
    delivery: Delivery,
}

/// How a committed upstream stream is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Bytes relayed as they are (SSE), or the aggregated JSON for `stream: false`.
    Native,
    /// Parsed events handed to the caller.
    Events,
}

/// The result of running the pipeline.
pub enum Dispatched {
    Response(Response),
    Events(EventStream),
}

async fn dispatch(
    rt: Arc<Runtime>,
    surface: Surface,
    key: Arc<ApiKeyRow>,
    headers: HeaderMap,
    mut json_body: Map<String, Value>,
    mut facts: RowFacts,
    started: Instant,
) -> Dispatched {
    let route = surface.route;
    if let Some(Value::String(m)) = json_body.get("model") {
        facts.model = Some(m.chars().take(200).collect());
    }
    let requested_output_cap = ["max_output_tokens", "max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| json_body.get(*f).and_then(Value::as_i64));
    let shape = match route {
        Route::Responses => {
            upstream::normalise_responses_body(&mut json_body, key.enforced_model.as_deref())
        }
        Route::Compact => {
            upstream::normalise_compact_body(&mut json_body, key.enforced_model.as_deref())
        }
    };
    let shape = match shape {
        Ok(s) => s,
        Err(message) => {
            let param = if message.starts_with("model") {
                Some("model")
            } else {
                None
            };
            let err = GatewayError::InvalidRequest { message, param };
            return Dispatched::Response(
                admission::reject(&rt, &key, &facts, err)
                    .await
                    .into_response(),
            );
        }
    };
    if surface.delivery == Delivery::Native {
        facts.transport = transport_guess(route, Some(&shape));
    }
    facts.model = Some(shape.model.clone());
    facts.reasoning_effort = shape.reasoning_effort.clone();
    facts.service_tier = shape.service_tier.clone();
    if let Err(err) = admission::check_model_allowed(&key, &shape.model) {
        return Dispatched::Response(
            admission::reject(&rt, &key, &facts, err)
                .await
                .into_response(),
        );
    }
    let policy = match rt.key_policy(&key.id).await {
        Ok(p) => p,
        Err(err) => {
            tracing::error!(error = %err, "loading the key policy failed");
            return Dispatched::Response(GatewayError::Internal.into_response());
        }
    };
    let mut shape = shape;
    if let Err(err) = admission::apply_policy(&policy, &mut json_body, &mut shape) {
        return Dispatched::Response(
            admission::reject(&rt, &key, &facts, err)
                .await
                .into_response(),
        );
    }
    facts.reasoning_effort = shape.reasoning_effort.clone();
    facts.service_tier = shape.service_tier.clone();
    let pool = match rt.pool(&key.pool_id).await {
        Ok(Some(pool)) if pool.active => pool,
        Ok(_) => {
            return Dispatched::Response(
                admission::reject(&rt, &key, &facts, GatewayError::NoEligibleBackend)
                    .await
                    .into_response(),
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "loading the Pool failed");
            return Dispatched::Response(GatewayError::Internal.into_response());
        }
    };
    if pool.model_known(&shape.model) == Some(false) {
        let err = GatewayError::InvalidModel(shape.model.clone());
        return Dispatched::Response(
            admission::reject(&rt, &key, &facts, err)
                .await
                .into_response(),
        );
    }
    let seed = routing::seed_for(&headers, Some(&json_body), pool.seed_policy);
    let pinned = headers
        .get("x-codex-turn-state")
        .and_then(|v| v.to_str().ok())
        .and_then(|ts| rt.turn_state_pin(ts));
    let pin = routing::check_pin(&pool, pinned.as_deref(), rt.now_secs());
    match pin {
        routing::PinCheck::Unavailable => {
            return Dispatched::Response(
                admission::reject(
                    &rt,
                    &key,
                    &facts,
                    GatewayError::PinnedContinuationUnavailable,
                )
                .await
                .into_response(),
            );
        }
        routing::PinCheck::ReauthRequired => {
            return Dispatched::Response(
                admission::reject(
                    &rt,
                    &key,
                    &facts,
                    GatewayError::PinnedContinuationReauthRequired,
                )
                .await
                .into_response(),
            );
        }
        _ => {}
    }
    let route_class = route_class(route, &shape);
    let inputs = routing::Inputs {
        now: rt.now_secs(),
        health: &rt.health,
        model: &shape.model,
        route_class,
    };
    let plan = routing::plan_with_pin(&pool, &seed, inputs, &pin);
    if plan.ring.is_empty() {
        if let Some(reset_at) = plan.earliest_quota_reset {
            return Dispatched::Response(reject_quota_exhausted(&rt, &key, &facts, reset_at).await);
        }
        return Dispatched::Response(
            admission::reject(&rt, &key, &facts, GatewayError::NoEligibleBackend)
                .await
                .into_response(),
        );
    }
    let upstream_body = match serde_json::to_vec(&Value::Object(json_body)) {
        Ok(b) => Bytes::from(b),
        Err(_) => return Dispatched::Response(GatewayError::Internal.into_response()),
    };
    let mut row = admission::new_row(&key, &facts, "in_progress", "usage_pending");
    let reservation = match admission::reserve(
        &rt,
        &key,
        &policy,
        &row.id,
        &shape,
        upstream_body.len(),
        requested_output_cap,
    )
    .await
    {
        Ok(r) => r,
        Err(err) => {
            return Dispatched::Response(
                admission::reject(&rt, &key, &facts, err)
                    .await
                    .into_response(),
            );
        }
    };
    row.estimated_cost_micros = reservation.estimated_cost_micros;
    row.estimated_tokens = Some(reservation.estimated_tokens);
    row.window_reserved = reservation.window_reserved;
    row.request_metadata = json!({
        "api_key": {"prefix": key.key_prefix},
        "requested_stream": shape.client_wants_stream,
        "request_bytes": upstream_body.len(),
        "reservation": reservation.metadata,
        "routing": plan.explanation,
    })
    .to_string();
    let request_id = row.id.clone();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    let request_header = HeaderValue::from_str(&request_id).ok();
    let ctx = Dispatch {
        rt: rt.clone(),
        route,
        route_class,
        endpoint: surface.endpoint,
        delivery: surface.delivery,
        request_id,
        shape,
        started,
        routing_ms: started.elapsed().as_millis() as i64,
        client_headers: headers,
        upstream_body,
    };
    match ctx.run(plan.ring).await {
        Dispatched::Response(mut response) => {
            if let Some(v) = request_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            Dispatched::Response(response)
        }
        events => events,
    }
}

/// Pre-commit holds at most this many envelope events or bytes.
const PRECOMMIT_MAX_EVENTS: u64 = 64;
const PRECOMMIT_MAX_BYTES: usize = 1024 * 1024;

/// Response header carrying the gateway's request row id, for correlation.
pub const REQUEST_ID_HEADER: &str = "x-codex-pooler-request-id";

/// The circuit-breaker lane of a request.
fn route_class(route: Route, shape: &RequestShape) -> &'static str {
    match route {
        Route::Compact => "proxy_compact",
        Route::Responses if shape.client_wants_stream => "proxy_stream",
        Route::Responses => "proxy_http",
    }
}

fn transport_guess(route: Route, shape: Option<&RequestShape>) -> &'static str {
    match (route, shape) {
        (Route::Compact, _) => "http_compact_json",
        (Route::Responses, Some(s)) if s.client_wants_stream => "http_sse",
        _ => "http_json",
    }
}

async fn reject_quota_exhausted(
    rt: &Runtime,
    key: &ApiKeyRow,
    facts: &RowFacts,
    reset_at: i64,
) -> Response {
    let mut row = admission::new_row(key, facts, "rejected", "not_applicable");
    row.completed_at = Some(row.admitted_at);
    row.response_status_code = Some(429);
    row.last_error_code = Some("quota_exhausted".into());
    row.request_metadata = json!({"api_key": {"prefix": key.key_prefix},
        "gateway_denial": {"code": "quota_exhausted", "message": "every upstream account in the Pool is out of quota"},
        "quota": {"earliest_reset_at": reset_at}})
    .to_string();
    rt.recorder.send(RecordEvent::Request(Box::new(row))).await;
    crate::ops::record_outcome(facts.endpoint, "rejected", None);
    let in_seconds = (reset_at - rt.now_secs()).max(0);
    let body = json!({"error": {
        "type": "usage_limit_reached",
        "code": "usage_limit_reached",
        "message": "The usage limit has been reached for every upstream account in this Pool",
        "param": null,
        "resets_at": reset_at,
        "resets_in_seconds": in_seconds,
    }});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&in_seconds.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    response
}

struct Dispatch {
    rt: Arc<Runtime>,
    route: Route,
    route_class: &'static str,
    endpoint: &'static str,
    delivery: Delivery,
    request_id: String,
    shape: RequestShape,
    started: Instant,
    routing_ms: i64,
    client_headers: HeaderMap,
    upstream_body: Bytes,
}

/// The final failure to report when no attempt committed.
struct Failure {
    status: StatusCode,
    body: Bytes,
    content_type: Option<HeaderValue>,
    code: String,
    upstream_status: Option<i64>,
}

enum AttemptResult {
    Committed(Response),
    Events(EventStream),
    /// Try the next candidate.
    Next(Failure),
    /// Stop trying and answer with this.
    Final(Failure, Box<Finisher>),
}

impl Dispatch {
    async fn run(self, ring: Vec<Candidate>) -> Dispatched {
        let mut attempt_number: i64 = 0;
        let mut last_failure: Option<Failure> = None;
        let ring_len = ring.len();
        for (index, candidate) in ring.iter().enumerate() {
            let is_last = index + 1 == ring_len || self.route == Route::Compact;
            let now = self.rt.now_secs();
            match self.rt.health.circuit(
                &candidate.assignment_id,
                &self.shape.model,
                self.route_class,
                now,
            ) {
                CircuitState::Open => continue,
                CircuitState::HalfOpen
                    if !self.rt.health.claim_probe(
                        &candidate.assignment_id,
                        &self.shape.model,
                        self.route_class,
                        now,
                    ) =>
                {
                    continue;
                }
                _ => {}
            }
            let mut creds = match self.rt.fresh_credentials(candidate).await {
                Ok(c) => c,
                Err(err) => {
                    last_failure = Some(Failure {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        body: Bytes::new(),
                        content_type: None,
                        code: format!("token_{}", err.code()),
                        upstream_status: None,
                    });
                    continue;
                }
            };
            let mut refreshed = false;
            loop {
                attempt_number += 1;
                let result = self
                    .attempt(candidate, &creds, attempt_number, is_last, refreshed)
                    .await;
                match result {
                    AttemptOutcome::Done(AttemptResult::Committed(response)) => {
                        return Dispatched::Response(response);
                    }
                    AttemptOutcome::Done(AttemptResult::Events(events)) => {
                        return Dispatched::Events(events);
                    }
                    AttemptOutcome::Done(AttemptResult::Final(failure, finisher)) => {
                        return Dispatched::Response(
                            self.respond_failure(failure, Some(*finisher)).await,
                        );
                    }
                    AttemptOutcome::Done(AttemptResult::Next(failure)) => {
                        last_failure = Some(failure);
                        break;
                    }
                    AttemptOutcome::Unauthorized(failure) => {
                        last_failure = Some(failure);
                        match self.rt.refresh(candidate, creds.generation).await {
                            Ok(new_creds) => {
                                creds = new_creds;
                                refreshed = true;
                                continue;
                            }
                            Err(err) => {
                                tracing::warn!(identity = %candidate.identity.id, code = err.code(), "token refresh failed");
                                break;
                            }
                        }
                    }
                }
            }
            if self.route == Route::Compact {
                break;
            }
        }
        let failure = last_failure.unwrap_or(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::new(),
            content_type: None,
            code: "no_eligible_backend".into(),
            upstream_status: None,
        });
        Dispatched::Response(self.finish_without_attempt(failure, attempt_number).await)
    }

    /// Ends a request whose every attempt failed retryably (or that made none).
    async fn finish_without_attempt(&self, failure: Failure, attempts: i64) -> Response {
        let total_ms = self.started.elapsed().as_millis() as i64;
        let status = if failure.body.is_empty() && failure.code == "no_eligible_backend" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            failure.status
        };
        self.rt
            .recorder
            .send(RecordEvent::RequestEnded(Box::new(RequestEnd {
                request_id: self.request_id.clone(),
                status: "failed",
                response_status_code: Some(i64::from(status.as_u16())),
                retry_count: (attempts - 1).max(0),
                last_error_code: Some(failure.code.clone()),
                completed_at: now_ms(),
                routing_ms: Some(self.routing_ms),
                upstream_ms: None,
                first_byte_ms: None,
                total_ms,
                settlement: Settlement {
                    usage_status: "usage_unknown",
                    ..Default::default()
                },
                metadata_patch: None,
            })))
            .await;
        crate::ops::record_outcome(self.endpoint, "failed", Some((total_ms, total_ms)));
        failure_response(&failure)
    }

    async fn respond_failure(&self, failure: Failure, finisher: Option<Finisher>) -> Response {
        if let Some(finisher) = finisher {
            finisher
                .finish(Outcome {
                    succeeded: false,
                    error_code: Some(failure.code.clone()),
                    error_message: Some(format!(
                        "upstream returned {}",
                        failure
                            .upstream_status
                            .map_or_else(|| "an error".to_owned(), |s| s.to_string())
                    )),
                    response_status_code: i64::from(failure.status.as_u16()),
                    upstream_status_code: failure.upstream_status,
                    usage: None,
                    actual_tier: None,
                })
                .await;
        }
        failure_response(&failure)
    }

    async fn attempt(
        &self,
        candidate: &Candidate,
        creds: &Credentials,
        attempt_number: i64,
        is_last: bool,
        already_refreshed: bool,
    ) -> AttemptOutcome {
        let rt = &self.rt;
        let attempt_id = new_id();
        let attempt_started = Instant::now();
        rt.recorder
            .send(RecordEvent::AttemptStarted(Box::new(NewAttempt {
                id: attempt_id.clone(),
                request_id: self.request_id.clone(),
                attempt_number,
                assignment_id: candidate.assignment_id.clone(),
                identity_id: candidate.identity.id.clone(),
                identity_label: candidate.label.clone(),
                identity_email: candidate.email.clone().filter(|e| e.contains('@')),
                identity_plan: candidate.plan_type.clone(),
                started_at: now_ms(),
            })))
            .await;
        let mut finisher = Finisher::new(
            rt.clone(),
            self.request_id.clone(),
            self.endpoint,
            self.shape.model.clone(),
            self.shape.service_tier.clone(),
            attempt_id.clone(),
            candidate.identity.id.clone(),
            attempt_number - 1,
            self.started,
            self.routing_ms,
            attempt_started,
        );
        let accept = if self.route == Route::Compact {
            "application/json"
        } else {
            "text/event-stream"
        };
        let headers = upstream::upstream_headers(
            rt,
            candidate,
            &creds.secret.access_token,
            &self.client_headers,
            accept,
        );
        let url = format!("{}{}", candidate.base_url, self.route.upstream_path());
        let send = rt
            .http
            .post(url)
            .headers(headers)
            .body(self.upstream_body.clone())
            .send();
        let header_timeout = Duration::from_secs(rt.settings.upstream_header_timeout_secs);
        let response = match tokio::time::timeout(header_timeout, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(err)) => {
                self.note_health(candidate, false);
                let code = if err.is_timeout() {
                    "upstream_timeout"
                } else {
                    "upstream_network_error"
                };
                return self
                    .retryable(finisher, is_last, code, None, "upstream connection failed")
                    .await;
            }
            Err(_) => {
                self.note_health(candidate, false);
                return self
                    .retryable(
                        finisher,
                        is_last,
                        "upstream_timeout",
                        None,
                        "upstream response headers timed out",
                    )
                    .await;
            }
        };
        let status = response.status();
        let upstream_status = Some(i64::from(status.as_u16()));
        finisher.upstream_request_id = header_text(response.headers(), "x-request-id");
        if let Some(turn_state) = header_text(response.headers(), "x-codex-turn-state") {
            rt.pin_turn_state(&turn_state, &candidate.assignment_id);
        }
        finisher.quota = rt.observe_quota(
            &candidate.identity,
            upstream::quota_from_headers(&candidate.identity.id, response.headers(), now_ms()),
        );
        if status == StatusCode::UNAUTHORIZED && !already_refreshed {
            let _ = read_limited(response, 64 * 1024).await;
            finisher.quota.clear();
            self.end_attempt(
                finisher,
                "retryable_failed",
                upstream_status,
                true,
                "upstream_unauthorized",
                "upstream returned 401",
            )
            .await;
            return AttemptOutcome::Unauthorized(Failure {
                status: StatusCode::BAD_GATEWAY,
                body: Bytes::new(),
                content_type: None,
                code: "upstream_unauthorized".into(),
                upstream_status,
            });
        }
        if !status.is_success() {
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
            let body = read_limited(response, 256 * 1024).await;
            if status == StatusCode::TOO_MANY_REQUESTS
                && let Ok(json) = serde_json::from_slice::<Value>(&body)
                && let Some(reset_at) = upstream::usage_limit_reset(&json, rt.now_secs())
            {
                candidate.identity.mark_exhausted_until(reset_at);
            }
            if status.is_server_error() {
                self.note_health(candidate, false);
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::UNAUTHORIZED
                || status.is_server_error();
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                "upstream_rate_limited"
            } else {
                "upstream_status"
            };
            let failure = Failure {
                status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
                content_type,
                code: code.into(),
                upstream_status,
            };
            if retryable && !is_last {
                self.end_attempt(
                    finisher,
                    "retryable_failed",
                    upstream_status,
                    true,
                    "retryable_upstream_status",
                    &format!("upstream returned {}", status.as_u16()),
                )
                .await;
                return AttemptOutcome::Done(AttemptResult::Next(failure));
            }
            return AttemptOutcome::Done(AttemptResult::Final(failure, Box::new(finisher)));
        }
        if self.route == Route::Compact {
            self.note_health(candidate, true);
            return AttemptOutcome::Done(self.commit_json_passthrough(response, finisher).await);
        }
        self.commit_stream(response, finisher, is_last, candidate)
            .await
    }

    fn note_health(&self, candidate: &Candidate, ok: bool) {
        self.rt.health.record(
            &candidate.assignment_id,
            &self.shape.model,
            self.route_class,
            ok,
            self.rt.now_secs(),
        );
    }

    async fn retryable(
        &self,
        finisher: Finisher,
        is_last: bool,
        code: &str,
        upstream_status: Option<i64>,
        message: &str,
    ) -> AttemptOutcome {
        let failure = Failure {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::new(),
            content_type: None,
            code: code.into(),
            upstream_status,
        };
        if is_last {
            return AttemptOutcome::Done(AttemptResult::Final(failure, Box::new(finisher)));
        }
        self.end_attempt(
            finisher,
            "retryable_failed",
            upstream_status,
            true,
            code,
            message,
        )
        .await;
        AttemptOutcome::Done(AttemptResult::Next(failure))
    }

    async fn end_attempt(
        &self,
        mut finisher: Finisher,
        status: &'static str,
        upstream_status: Option<i64>,
        retryable: bool,
        code: &str,
        message: &str,
    ) {
        let quota = std::mem::take(&mut finisher.quota);
        for q in quota {
            self.rt.recorder.send(RecordEvent::Quota(Box::new(q))).await;
        }
        let end = AttemptEnd {
            id: finisher.attempt_id.clone(),
            status,
            upstream_status_code: upstream_status,
            retryable,
            error_code: Some(code.to_owned()),
            error_message: Some(message.to_owned()),
            upstream_request_id: finisher.upstream_request_id.clone(),
            completed_at: now_ms(),
            latency_ms: finisher.attempt_started.elapsed().as_millis() as i64,
        };
        finisher_disarm(finisher);
        self.rt
            .recorder
            .send(RecordEvent::AttemptEnded(Box::new(end)))
            .await;
    }

    async fn commit_json_passthrough(
        &self,
        response: reqwest::Response,
        finisher: Finisher,
    ) -> AttemptResult {
        let status = response.status();
        let mut out_headers = relayed_headers(response.headers());
        let body = read_limited(response, 64 * 1024 * 1024).await;
        let usage = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("usage").and_then(crate::domain::usage::parse_usage));
        finisher
            .finish(Outcome {
                succeeded: true,
                error_code: None,
                error_message: None,
                response_status_code: i64::from(status.as_u16()),
                upstream_status_code: Some(i64::from(status.as_u16())),
                usage,
                actual_tier: None,
            })
            .await;
        out_headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut resp = (
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK),
            body,
        )
            .into_response();
        resp.headers_mut().extend(out_headers);
        AttemptResult::Committed(resp)
    }

    async fn commit_stream(
        &self,
        response: reqwest::Response,
        mut finisher: Finisher,
        is_last: bool,
        candidate: &Candidate,
    ) -> AttemptOutcome {
        let out_headers = relayed_headers(response.headers());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        let mut upstream: UpstreamStream = Box::pin(response.bytes_stream());
        let idle = Duration::from_secs(self.rt.settings.stream_idle_timeout_secs);
        let aggregate = !self.shape.client_wants_stream && self.delivery == Delivery::Native;
        let mut reader = SseReader::new(MAX_EVENT_BYTES);
        let mut observer = StreamObserver::new(aggregate);
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut early_end: Option<StreamEnd> = None;
        // Pre-commit: hold lifecycle envelopes (bounded) until the first
        // content or terminal event shows whether this attempt can still be
        // abandoned for another account.
        let mut held_bytes = 0usize;
        while observer.first_decisive.is_none()
            && observer.events_seen < PRECOMMIT_MAX_EVENTS
            && held_bytes < PRECOMMIT_MAX_BYTES
        {
            match tokio::time::timeout(idle, upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    reader.feed(&chunk, &mut |e| observer.on_event(&e));
                    held_bytes += chunk.len();
                    buffered.push(chunk);
                }
                Ok(Some(Err(_))) => {
                    early_end = Some(StreamEnd::UpstreamError);
                    break;
                }
                Ok(None) => {
                    early_end = Some(StreamEnd::Eof);
                    break;
                }
                Err(_) => {
                    early_end = Some(StreamEnd::IdleTimeout);
                    break;
                }
            }
        }
        let first_failed = observer.first_decisive.is_none() && early_end.is_some()
            || matches!(&observer.first_decisive, Some(EventKind::Failed(code)) if is_retryable_first_event_code(code));
        self.note_health(candidate, !first_failed);
        if observer.first_decisive.is_none() && early_end.is_some() && !is_last {
            let code = if early_end == Some(StreamEnd::IdleTimeout) {
                "stream_idle_timeout"
            } else {
                "upstream_stream_error"
            };
            return self
                .retryable(
                    finisher,
                    false,
                    code,
                    Some(200),
                    "upstream stream ended before its first event",
                )
                .await;
        }
        if let Some(EventKind::Failed(code)) = &observer.first_decisive
            && is_retryable_first_event_code(code)
            && !is_last
        {
            let code = code.clone();
            return self
                .retryable(
                    finisher,
                    false,
                    &code,
                    Some(200),
                    "upstream stream failed before any output",
                )
                .await;
        }
        if self.delivery == Delivery::Events {
            finisher.first_byte_ms = Some(self.started.elapsed().as_millis() as i64);
            let events = relay::event_stream(
                upstream, buffered, reader, observer, finisher, idle, early_end,
            );
            return AttemptOutcome::Done(AttemptResult::Events(events));
        }
        if aggregate {
            return AttemptOutcome::Done(
                self.collect_json(upstream, reader, observer, finisher, early_end, idle)
                    .await,
            );
        }
        finisher.first_byte_ms = Some(self.started.elapsed().as_millis() as i64);
        let body = if let Some(end) = early_end {
            // The stream already ended; relay what arrived and finalise now.
            finisher
                .finish(Outcome::from_observer(&observer, end))
                .await;
            Body::from(buffered.concat())
        } else {
            Body::from_stream(relay::relay_stream(
                upstream, buffered, reader, observer, finisher, idle,
            ))
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().extend(out_headers);
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
        );
        resp.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        AttemptOutcome::Done(AttemptResult::Committed(resp))
    }

    async fn collect_json(
        &self,
        mut upstream: UpstreamStream,
        mut reader: SseReader,
        mut observer: StreamObserver,
        finisher: Finisher,
        mut end: Option<StreamEnd>,
        idle: Duration,
    ) -> AttemptResult {
        while end.is_none() && observer.terminal.is_none() {
            match tokio::time::timeout(idle, upstream.next()).await {
                Ok(Some(Ok(chunk))) => reader.feed(&chunk, &mut |e| observer.on_event(&e)),
                Ok(Some(Err(_))) => end = Some(StreamEnd::UpstreamError),
                Ok(None) => end = Some(StreamEnd::Eof),
                Err(_) => end = Some(StreamEnd::IdleTimeout),
            }
        }
        drop(upstream);
        let outcome = Outcome::from_observer(&observer, end.unwrap_or(StreamEnd::Eof));
        let mut final_outcome = outcome.clone();
        let response = match (&observer.terminal, observer.aggregated_response()) {
            (Some(EventKind::Succeeded), Some(body)) => {
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            (Some(EventKind::Failed(code)), _) => {
                let status = status_for_failure_code(code);
                final_outcome.response_status_code = i64::from(status.as_u16());
                (
                    status,
                    axum::Json(crate::error::error_body(
                        "upstream request failed",
                        "server_error",
                        code,
                        None,
                    )),
                )
                    .into_response()
            }
            _ => {
                final_outcome.response_status_code = 502;
                let code = outcome
                    .error_code
                    .clone()
                    .unwrap_or_else(|| "upstream_stream_error".into());
                (
                    StatusCode::BAD_GATEWAY,
                    axum::Json(crate::error::error_body(
                        "upstream stream ended before a terminal response",
                        "server_error",
                        &code,
                        None,
                    )),
                )
                    .into_response()
            }
        };
        finisher.finish(final_outcome).await;
        AttemptResult::Committed(response)
    }
}

enum AttemptOutcome {
    Done(AttemptResult),
    Unauthorized(Failure),
}

fn finisher_disarm(finisher: Finisher) {
    // An attempt that ends retryably must not finalise the request.
    finisher.disarm();
}

fn status_for_failure_code(code: &str) -> StatusCode {
    match code {
        "rate_limit_exceeded" | "usage_limit_reached" | "insufficient_quota" => {
            StatusCode::TOO_MANY_REQUESTS
        }
        "context_length_exceeded"
        | "invalid_prompt"
        | "invalid_request_error"
        | "previous_response_not_found" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect())
}

fn relayed_headers(upstream: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        if (RELAYED_RESPONSE_HEADERS.contains(&n) || n.starts_with("x-codex-"))
            && let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(name.as_ref()),
                HeaderValue::from_bytes(value.as_bytes()),
            )
        {
            out.append(name, value);
        }
    }
    out
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Bytes {
    let mut stream = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

fn failure_response(failure: &Failure) -> Response {
    if failure.body.is_empty() {
        let err = match failure.code.as_str() {
            "no_eligible_backend" => GatewayError::NoEligibleBackend,
            _ => GatewayError::UpstreamRequestFailed,
        };
        let mut body = err.body();
        if let Some(e) = body.get_mut("error").and_then(Value::as_object_mut)
            && matches!(err, GatewayError::UpstreamRequestFailed)
        {
            e.insert("code".into(), Value::String(failure.code.clone()));
        }
        return (err.status(), axum::Json(body)).into_response();
    }
    let mut resp = (failure.status, failure.body.clone()).into_response();
    if let Some(ct) = &failure.content_type {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, ct.clone());
    }
    resp
}
