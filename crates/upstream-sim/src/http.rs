//! The HTTP surface: the router, the SSE `/responses` handler (executing a
//! [`Plan`] as an SSE body), and the small JSON routes (`/responses/compact`,
//! `/models`, the usage endpoints, 404 fallback). OAuth, control API, websocket
//! and bench handlers live in their own modules and are only wired up here.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::engine::{self, header};
use crate::script::{self, MODELS_ETAG, Plan, Reply, Step, StreamPlan};
use crate::server::ConnCtx;
use crate::state::{
    PRIMARY_WINDOW_SECS, QuotaView, RecordedRequest, SECONDARY_WINDOW_SECS, Shared,
};
use crate::{bench, control, oauth, ws};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

pub(crate) type AppState = Arc<Shared>;

pub(crate) fn router(shared: AppState) -> Router {
    let responses = if shared.bench() {
        post(bench::responses).get(ws::handshake)
    } else {
        post(responses).get(ws::handshake)
    };
    Router::new()
        .route("/backend-api/codex/responses", responses)
        .route("/backend-api/codex/responses/compact", post(compact))
        .route("/backend-api/codex/models", get(models))
        .route("/backend-api/wham/usage", get(usage))
        .route("/backend-api/codex/usage", get(usage))
        .route("/api/codex/usage", get(usage))
        .route("/oauth/token", post(oauth::token))
        .route(
            "/api/accounts/deviceauth/usercode",
            post(oauth::device_usercode),
        )
        .route("/api/accounts/deviceauth/token", post(oauth::device_token))
        .nest("/__sim", control::router())
        .fallback(not_found)
        .with_state(shared)
}

// ---- helpers shared by handlers ---------------------------------------------------

/// Start a recording entry from the request head.
pub(crate) fn record_head(
    shared: &Shared,
    method: &str,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> RecordedRequest {
    RecordedRequest {
        seq: 0,
        at: shared.now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        transport: "http".into(),
        connection_id: None,
        account_id: None,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: None,
        json: None,
        scenario: None,
        status: 0,
        pool_key_flagged: false,
        direction: None,
    }
}

/// Read the body of a request into the recording; returns its bytes.
pub(crate) async fn read_body(body: Body, rec: &mut RecordedRequest) -> Result<Bytes, Response> {
    match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                rec.json = serde_json::from_str(&text).ok();
                rec.body = Some(text);
            }
            Ok(bytes)
        }
        Err(_) => Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

pub(crate) fn push_header(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.append(n, v);
    }
}

/// Turn a [`Reply`] into a response (adding `x-request-id`).
pub(crate) fn reply_response(reply: &Reply, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(reply.body.clone()));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    push_header(h, "content-type", reply.content_type);
    push_header(h, "x-request-id", request_id);
    for (k, v) in &reply.headers {
        push_header(h, k, v);
    }
    r
}

pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    reply_response(&Reply::json(status, body.clone()), "sim-req-0")
}

pub(crate) fn conn_ctx(req: &Request) -> Option<ConnCtx> {
    req.extensions().get::<ConnCtx>().cloned()
}

// ---- /responses (SSE) ---------------------------------------------------------------

async fn responses(State(shared): State<AppState>, req: Request) -> Response {
    let conn = conn_ctx(&req);
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, parts.method.as_str(), &parts.uri, &parts.headers);
    let request_id = format!("sim-req-{}", shared.next_id());
    let bytes = match read_body(body, &mut rec).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let account_id = match engine::authenticate(&shared, &parts.headers) {
        Ok(a) => a,
        Err(fail) => {
            rec.account_id = fail.account_id;
            rec.pool_key_flagged = fail.flagged;
            rec.status = fail.reply.status;
            rec.scenario = Some("auth_error".into());
            shared.record(rec);
            return reply_response(&fail.reply, &request_id);
        }
    };
    rec.account_id = Some(account_id.clone());
    let body_json: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => {
            let reply = Reply::json(400, json!({"detail": "Request body is not valid JSON"}));
            rec.status = 400;
            rec.scenario = Some("validation".into());
            shared.record(rec);
            return reply_response(&reply, &request_id);
        }
    };
    if let Err(reply) = engine::validate_body(&shared, &account_id, &body_json, true) {
        rec.status = reply.status;
        rec.scenario = Some("validation".into());
        shared.record(rec);
        return reply_response(&reply, &request_id);
    }
    let Some(decision) = engine::decide(&shared, &account_id, &body_json) else {
        let reply = script::token_expired_reply();
        rec.status = reply.status;
        shared.record(rec);
        return reply_response(&reply, &request_id);
    };
    rec.scenario = Some(decision.scenario.clone());
    rec.status = decision.status();
    shared.record(rec);

    let turn_state = header(&parts.headers, "x-codex-turn-state")
        .map(str::to_string)
        .unwrap_or_else(|| format!("sim-ts-{}", shared.next_id()));
    match decision.plan {
        Plan::Close => {
            if let Some(c) = conn {
                c.abort(false);
            }
            // The connection task drops this future together with the connection.
            shared.shutdown.cancelled().await;
            plain(StatusCode::SERVICE_UNAVAILABLE, "")
        }
        Plan::Reply(reply) => {
            let mut r = reply_response(&reply, &request_id);
            if reply.status == 200 || reply.status == 429 {
                common_headers(r.headers_mut(), &decision.model, &turn_state);
            }
            r
        }
        Plan::Stream(plan) => {
            if let Some(delay) = plan.head_delay {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutdown.cancelled() => {}
                }
            }
            let mut r = Response::new(sse_body(shared.clone(), conn, plan));
            let h = r.headers_mut();
            push_header(h, "content-type", "text/event-stream; charset=utf-8");
            push_header(h, "cache-control", "no-cache");
            push_header(h, "x-request-id", &request_id);
            push_header(h, "x-reasoning-included", "true");
            common_headers(h, &decision.model, &turn_state);
            for (k, v) in script::quota_headers(&decision.quota) {
                push_header(h, &k, &v);
            }
            r
        }
    }
}

fn common_headers(h: &mut HeaderMap, model: &str, turn_state: &str) {
    push_header(h, "openai-model", model);
    push_header(h, "x-models-etag", MODELS_ETAG);
    push_header(h, "x-codex-turn-state", turn_state);
}

struct SseState {
    shared: AppState,
    conn: Option<ConnCtx>,
    steps: VecDeque<Step>,
    pending: VecDeque<Bytes>,
    chunk_every_byte: bool,
}

/// Execute a stream plan as an SSE body.
fn sse_body(shared: AppState, conn: Option<ConnCtx>, plan: StreamPlan) -> Body {
    let state = SseState {
        shared,
        conn,
        steps: plan.steps.into(),
        pending: VecDeque::new(),
        chunk_every_byte: plan.chunk_every_byte,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok(b), st));
            }
            let text = match st.steps.pop_front()? {
                Step::Event(v) => script::sse_event(&v),
                Step::Raw(s) => s,
                Step::Pause(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => continue,
                        _ = st.shared.shutdown.cancelled() => return None,
                    }
                }
                Step::Barrier(name) => {
                    tokio::select! {
                        _ = st.shared.wait_barrier(&name) => continue,
                        _ = st.shared.shutdown.cancelled() => return None,
                    }
                }
                Step::Stall => {
                    st.shared.shutdown.cancelled().await;
                    return None;
                }
                Step::EndEof => return None,
                Step::EndReset => {
                    // Stay pending briefly so hyper flushes the events already
                    // produced; then reset the connection under them.
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                    if let Some(c) = &st.conn {
                        c.abort(true);
                    }
                    st.steps.clear();
                    let err =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset");
                    return Some((Err(err), st));
                }
            };
            if st.chunk_every_byte {
                let bytes = Bytes::from(text);
                st.pending
                    .extend((0..bytes.len()).map(|i| bytes.slice(i..i + 1)));
            } else {
                return Some((Ok(Bytes::from(text)), st));
            }
        }
    });
    Body::from_stream(stream)
}

// ---- small JSON routes ----------------------------------------------------------------

/// Authenticate a non-streaming route, recording failures. Returns the account id.
fn auth_or_reply(
    shared: &Shared,
    headers: &HeaderMap,
    rec: &mut RecordedRequest,
) -> Result<String, Box<Response>> {
    match engine::authenticate(shared, headers) {
        Ok(a) => {
            rec.account_id = Some(a.clone());
            Ok(a)
        }
        Err(fail) => {
            rec.account_id = fail.account_id;
            rec.pool_key_flagged = fail.flagged;
            rec.status = fail.reply.status;
            rec.scenario = Some("auth_error".into());
            Err(Box::new(reply_response(&fail.reply, "sim-req-auth")))
        }
    }
}

async fn compact(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, "POST", &parts.uri, &parts.headers);
    if let Err(r) = read_body(body, &mut rec).await {
        return r;
    }
    let account_id = match auth_or_reply(&shared, &parts.headers, &mut rec) {
        Ok(a) => a,
        Err(r) => {
            shared.record(rec);
            return *r;
        }
    };
    let reply = match &rec.json {
        Some(Value::Object(obj)) => {
            match engine::UNSUPPORTED_PARAMS
                .iter()
                .find(|p| shared.config.strict && obj.contains_key(**p))
            {
                Some(p) => Reply::json(
                    400,
                    json!({"detail": format!("Unsupported parameter: {p}")}),
                ),
                None if !obj.get("input").is_some_and(Value::is_array) && shared.config.strict => {
                    Reply::json(400, json!({"detail": "Input must be a list"}))
                }
                None => {
                    let n = shared.next_id();
                    let view = quota_view(&shared, &account_id);
                    let mut reply = Reply::json(
                        200,
                        json!({"output": [{"type": "compaction", "id": format!("cmp_sim_{n}"),
                                           "encrypted_content": format!("sim-compact-{n}")}]}),
                    );
                    reply.headers.push((
                        "x-codex-turn-state".into(),
                        header(&parts.headers, "x-codex-turn-state")
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("sim-ts-{n}")),
                    ));
                    if let Some(v) = view {
                        reply.headers.extend(script::quota_headers(&v));
                    }
                    reply
                }
            }
        }
        _ => Reply::json(400, json!({"detail": "Request body must be a JSON object"})),
    };
    rec.status = reply.status;
    rec.scenario = Some("compact".into());
    shared.record(rec);
    reply_response(&reply, &format!("sim-req-{}", shared.next_id()))
}

fn quota_view(shared: &Shared, account_id: &str) -> Option<QuotaView> {
    let now = shared.now();
    let mut inner = shared.lock();
    let a = inner.account_mut(account_id)?;
    a.quota.roll(now);
    Some(a.quota_view(now))
}

async fn models(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let mut rec = record_head(&shared, "GET", &parts.uri, &parts.headers);
    let has_version = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.starts_with("client_version=") && kv.len() > "client_version=".len());
    if !has_version {
        rec.status = 400;
        shared.record(rec);
        return json_response(
            400,
            &json!({"detail": "client_version query parameter is required"}),
        );
    }
    if let Err(r) = auth_or_reply(&shared, &parts.headers, &mut rec) {
        shared.record(rec);
        return *r;
    }
    rec.status = 200;
    shared.record(rec);
    let mut r = json_response(200, &crate::catalog::models());
    push_header(r.headers_mut(), "etag", MODELS_ETAG);
    r
}

fn window(used: f64, secs: i64, reset_at: i64, now: i64) -> Value {
    json!({"used_percent": used, "limit_window_seconds": secs,
           "reset_after_seconds": (reset_at - now).max(0), "reset_at": reset_at})
}

/// The §4.3 usage document for a quota state.
pub(crate) fn usage_json(view: &QuotaView) -> Value {
    let q = &view.quota;
    let exhausted = q.exhausted().is_some();
    json!({
        "plan_type": view.plan_type,
        "rate_limit": {
            "allowed": !exhausted,
            "limit_reached": exhausted,
            "primary_window": window(q.primary_used, PRIMARY_WINDOW_SECS, q.primary_reset_at, view.now),
            "secondary_window": window(q.secondary_used, SECONDARY_WINDOW_SECS, q.secondary_reset_at, view.now),
        },
        "credits": {"has_credits": false, "unlimited": false, "balance": "0",
                    "approx_local_messages": null, "approx_cloud_messages": null},
        "additional_rate_limits": [],
        "rate_limit_reached_type": if exhausted { json!({"type": "rate_limit_reached"}) } else { Value::Null },
        "rate_limit_reset_credits": {"available_count": 0},
    })
}

async fn usage(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let mut rec = record_head(&shared, "GET", &parts.uri, &parts.headers);
    let account_id = match auth_or_reply(&shared, &parts.headers, &mut rec) {
        Ok(a) => a,
        Err(r) => {
            shared.record(rec);
            return *r;
        }
    };
    rec.status = 200;
    rec.scenario = Some("usage".into());
    shared.record(rec);
    match quota_view(&shared, &account_id) {
        Some(view) => json_response(200, &usage_json(&view)),
        None => json_response(404, &json!({"detail": "Not Found"})),
    }
}

async fn not_found(State(shared): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut rec = record_head(&shared, parts.method.as_str(), &parts.uri, &parts.headers);
    let _ = read_body(body, &mut rec).await;
    if let Some(token) = engine::bearer(&parts.headers) {
        rec.pool_key_flagged = token.starts_with(engine::POOL_KEY_PREFIX);
        rec.account_id = shared
            .lock()
            .access
            .get(token)
            .map(|e| e.account_id.clone());
    }
    rec.status = 404;
    shared.record(rec);
    json_response(404, &json!({"detail": "Not Found"}))
}
