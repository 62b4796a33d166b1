//! The Responses websocket (§3): handshake checks and refusals, then one loop per
//! socket that answers `response.create` frames by executing the same
//! [`Plan`]s as the SSE route, with connection-scoped `previous_response_id`.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};

use crate::engine::{self, header};
use crate::http::{AppState, conn_ctx, push_header, record_head, reply_response};
use crate::script::{self, Ctx, MODELS_ETAG, Plan, Reply, Step};
use crate::state::{RecordedRequest, Shared};

/// Simulated age after which a socket answers `websocket_connection_limit_reached`.
pub const CONNECTION_LIMIT_SECS: i64 = 3600;
/// Recorded server frames are cut to this many bytes.
const RECORD_FRAME_LIMIT: usize = 64 * 1024;
const WS_PATH: &str = "/backend-api/codex/responses";

fn refusal(shared: &Shared, code: u16, account_id: &str) -> Reply {
    match code {
        401 => Reply::json(
            401,
            json!({"error": {"message": "Authentication failed for websocket (simulated).",
                             "type": "invalid_request_error", "code": "invalid_api_key"}}),
        )
        .with_headers(vec![(
            "x-openai-authorization-error".into(),
            "invalid_api_key".into(),
        )]),
        426 => Reply::json(426, json!({"detail": "Upgrade Required"})),
        _ => {
            let now = shared.now();
            let view = {
                let mut inner = shared.lock();
                inner.account_mut(account_id).map(|a| {
                    a.quota.roll(now);
                    let mut v = a.quota_view(now);
                    v.quota.primary_used = 100.0;
                    v
                })
            };
            match view {
                Some(v) => script::usage_limit_reply(&v),
                None => Reply::json(429, json!({"error": {"type": "usage_limit_reached"}})),
            }
        }
    }
}

pub(crate) async fn handshake(State(shared): State<AppState>, req: Request) -> Response {
    let conn_id = conn_ctx(&req).map(|c| c.id).unwrap_or(0);
    let (mut parts, _body) = req.into_parts();
    let mut rec = record_head(&shared, "GET", &parts.uri, &parts.headers);
    rec.transport = "websocket".into();
    rec.connection_id = Some(conn_id);
    let request_id = format!("sim-ws-{}", shared.next_id());
    let finish = |mut rec: RecordedRequest, reply: &Reply, scenario: &str| {
        rec.status = reply.status;
        rec.scenario = Some(scenario.into());
        shared.record(rec);
        reply_response(reply, &request_id)
    };
    let account_id = match engine::authenticate(&shared, &parts.headers) {
        Ok(a) => a,
        Err(fail) => {
            rec.account_id = fail.account_id;
            rec.pool_key_flagged = fail.flagged;
            let reply = if fail.reply.status == 401 {
                fail.reply.with_headers(vec![(
                    "x-openai-authorization-error".into(),
                    "invalid_api_key".into(),
                )])
            } else {
                fail.reply
            };
            return finish(rec, &reply, "auth_error");
        }
    };
    rec.account_id = Some(account_id.clone());
    let beta_ok =
        header(&parts.headers, "openai-beta").is_some_and(|v| v.contains("responses_websockets="));
    if shared.config.strict && !beta_ok {
        let reply = Reply::json(
            400,
            json!({"detail": "Websocket connections require the OpenAI-Beta header responses_websockets=<date>"}),
        );
        return finish(rec, &reply, "validation");
    }
    let refused = shared
        .lock()
        .account_mut(&account_id)
        .and_then(|a| a.pop_ws_refusal());
    if let Some(code) = refused {
        let reply = refusal(&shared, code, &account_id);
        return finish(rec, &reply, &format!("ws_refuse_{code}"));
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &shared).await {
        Ok(u) => u,
        Err(_) => {
            let reply = Reply::json(426, json!({"detail": "Upgrade Required"}));
            return finish(rec, &reply, "validation");
        }
    };
    let now = shared.now();
    let view = {
        let mut inner = shared.lock();
        inner.account_mut(&account_id).map(|a| {
            a.quota.roll(now);
            a.quota_view(now)
        })
    };
    rec.status = 101;
    rec.scenario = Some("ws_handshake".into());
    shared.record(rec);
    let session_shared = shared.clone();
    let mut resp = upgrade.on_upgrade(move |socket| async move {
        let (tx, rx) = socket.split();
        let mut session = Session {
            shared: session_shared,
            tx,
            rx,
            conn_id,
            account_id,
            last_completed: None,
            opened_at: now,
        };
        session.run().await;
    });
    let h = resp.headers_mut();
    push_header(h, "x-request-id", &request_id);
    push_header(h, "openai-model", "gpt-5.5");
    push_header(h, "x-models-etag", MODELS_ETAG);
    push_header(h, "x-reasoning-included", "true");
    push_header(
        h,
        "x-codex-turn-state",
        &format!("sim-ts-{}", shared.next_id()),
    );
    if let Some(v) = view {
        for (k, val) in script::quota_headers(&v) {
            push_header(h, &k, &val);
        }
    }
    resp
}

enum Flow {
    Continue,
    /// Send a close frame with this code, then end.
    Close(u16, &'static str),
    /// End without a close frame.
    Drop,
}

struct Session {
    shared: AppState,
    tx: SplitSink<WebSocket, Message>,
    rx: SplitStream<WebSocket>,
    conn_id: u64,
    account_id: String,
    last_completed: Option<String>,
    opened_at: i64,
}

impl Session {
    async fn run(&mut self) {
        loop {
            let msg = tokio::select! {
                m = self.rx.next() => m,
                _ = self.shared.shutdown.cancelled() => {
                    self.close(1001, "server shutting down").await;
                    return;
                }
            };
            let flow = match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(text))) => {
                    self.record_client(text.as_str());
                    self.on_text(text.as_str()).await
                }
                Some(Ok(Message::Binary(b))) => {
                    self.record_client(&format!("<binary {} bytes>", b.len()));
                    self.send_error(
                        400,
                        "invalid_request_error",
                        "binary_frame_not_supported",
                        "Binary frames are not supported.",
                    )
                    .await
                }
                Some(Ok(Message::Ping(_))) => {
                    self.record_client("<ping>");
                    Flow::Continue
                }
                Some(Ok(Message::Pong(_))) => Flow::Continue,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => {
                    self.close(code, reason).await;
                    return;
                }
                Flow::Drop => return,
            }
        }
    }

    fn frame_record(&self, direction: &str, text: &str, json: Option<Value>) -> RecordedRequest {
        let body = if text.len() > RECORD_FRAME_LIMIT {
            let mut cut = RECORD_FRAME_LIMIT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &text[..cut])
        } else {
            text.to_string()
        };
        RecordedRequest {
            seq: 0,
            at: self.shared.now(),
            method: "WS".into(),
            path: WS_PATH.into(),
            query: None,
            transport: "websocket".into(),
            connection_id: Some(self.conn_id),
            account_id: Some(self.account_id.clone()),
            headers: Vec::new(),
            body: Some(body),
            json,
            scenario: None,
            status: 0,
            pool_key_flagged: false,
            direction: Some(direction.into()),
        }
    }

    fn record_client(&self, text: &str) {
        if self.shared.bench() {
            return;
        }
        let json = serde_json::from_str(text).ok();
        let r = self.frame_record("client", text, json);
        self.shared.record(r);
    }

    async fn send_text(&mut self, text: String, json: Option<&Value>) -> bool {
        if !self.shared.bench() {
            let small = text.len() <= RECORD_FRAME_LIMIT;
            let r = self.frame_record("server", &text, json.filter(|_| small).cloned());
            self.shared.record(r);
        }
        self.tx
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .is_ok()
    }

    async fn send_json(&mut self, v: &Value) -> bool {
        self.send_text(v.to_string(), Some(v)).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
    }

    async fn send_error(&mut self, status: u16, ty: &str, code: &str, message: &str) -> Flow {
        let frame = json!({"type": "error", "status": status,
            "error": {"type": ty, "code": code, "message": message, "param": null}});
        if self.send_json(&frame).await {
            Flow::Continue
        } else {
            Flow::Drop
        }
    }

    async fn send_reply_error(&mut self, reply: &Reply) -> Flow {
        let headers: Map<String, Value> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let frame = json!({"type": "error", "status": reply.status,
                           "error": reply.ws_error_object(), "headers": headers});
        if self.send_json(&frame).await {
            Flow::Continue
        } else {
            Flow::Drop
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let Ok(body) = serde_json::from_str::<Value>(text) else {
            return self
                .send_error(
                    400,
                    "invalid_request_error",
                    "invalid_json",
                    "Frame is not valid JSON.",
                )
                .await;
        };
        match body.get("type").and_then(Value::as_str) {
            Some("response.create") => {}
            Some("response.processed") => return Flow::Continue,
            other => {
                let msg = format!("Unsupported message type {:?}.", other.unwrap_or(""));
                return self
                    .send_error(
                        400,
                        "invalid_request_error",
                        "unsupported_message_type",
                        &msg,
                    )
                    .await;
            }
        }
        if self.shared.bench() {
            return self.bench_turn().await;
        }
        if self.shared.now() - self.opened_at >= CONNECTION_LIMIT_SECS {
            return self.send_error(400, "invalid_request_error", "websocket_connection_limit_reached",
                "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue.").await;
        }
        if let Err(reply) = engine::validate_body(&self.shared, &self.account_id, &body, false) {
            return self.send_reply_error(&reply).await;
        }
        if let Some(prev) = body.get("previous_response_id").and_then(Value::as_str)
            && self.last_completed.as_deref() != Some(prev)
        {
            let msg = format!("Previous response with id '{prev}' not found.");
            return self
                .send_error(
                    400,
                    "invalid_request_error",
                    "previous_response_not_found",
                    &msg,
                )
                .await;
        }
        let turn_state = body
            .get("client_metadata")
            .and_then(|m| m.get("x-codex-turn-state"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("sim-ts-{}", self.shared.next_id()));
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("gpt-5.5")
            .to_string();

        if body.get("generate") == Some(&Value::Bool(false)) {
            let now = self.shared.now();
            let view = {
                let mut inner = self.shared.lock();
                match inner.account_mut(&self.account_id) {
                    Some(a) => {
                        a.quota.roll(now);
                        a.quota_view(now)
                    }
                    None => return Flow::Close(1011, "account removed"),
                }
            };
            let n = self.shared.next_id();
            let ctx = Ctx {
                n,
                model: &model,
                created_at: now,
                quota: &view,
            };
            let plan = script::prewarm(&ctx);
            self.annotate_last_client("prewarm");
            if !self.send_json(&script::rate_limits_event(&view)).await {
                return Flow::Drop;
            }
            return self.run_plan(plan, format!("resp_sim_{n}")).await;
        }

        let Some(decision) = engine::decide(&self.shared, &self.account_id, &body) else {
            return Flow::Close(1011, "account removed");
        };
        self.annotate_last_client(&decision.scenario);
        match decision.plan {
            Plan::Close => Flow::Drop,
            Plan::Reply(reply) if reply.status == 200 => {
                if self.send_text(reply.body.clone(), None).await {
                    Flow::Continue
                } else {
                    Flow::Drop
                }
            }
            Plan::Reply(reply) => self.send_reply_error(&reply).await,
            plan @ Plan::Stream(_) => {
                if !self
                    .send_json(&script::rate_limits_event(&decision.quota))
                    .await
                {
                    return Flow::Drop;
                }
                let meta = json!({"type": "response.metadata", "headers": {
                    "x-codex-turn-state": turn_state, "openai-model": decision.model,
                    "x-models-etag": MODELS_ETAG}, "metadata": {}});
                if !self.send_json(&meta).await {
                    return Flow::Drop;
                }
                self.run_plan(plan, decision.response_id).await
            }
        }
    }

    /// Set the scenario of the most recent recorded client frame of this socket.
    fn annotate_last_client(&self, scenario: &str) {
        self.shared.annotate_last(self.conn_id, scenario);
    }

    /// Wait for `fut`, watching the socket: a close ends the wait with `false`.
    async fn wait_watching<F: std::future::Future<Output = ()>>(&mut self, fut: F) -> bool {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                _ = &mut fut => return true,
                _ = self.shared.shutdown.cancelled() => return false,
                m = self.rx.next() => match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return false,
                    Some(Ok(Message::Text(t))) => {
                        self.record_client(t.as_str());
                        let is_create = serde_json::from_str::<Value>(t.as_str())
                            .ok()
                            .and_then(|v| v.get("type").and_then(Value::as_str).map(|s| s == "response.create"))
                            .unwrap_or(false);
                        if is_create {
                            let frame = json!({"type": "error", "status": 400, "error": {
                                "type": "invalid_request_error", "code": "response_already_in_progress",
                                "message": "A response is already in progress on this connection.", "param": null}});
                            if !self.send_json(&frame).await {
                                return false;
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    async fn run_plan(&mut self, plan: Plan, response_id: String) -> Flow {
        let Plan::Stream(plan) = plan else {
            return Flow::Continue;
        };
        if let Some(d) = plan.head_delay
            && !self.wait_watching(tokio::time::sleep(d)).await
        {
            return Flow::Drop;
        }
        for step in plan.steps {
            match step {
                Step::Event(v) => {
                    if !self.send_json(&v).await {
                        return Flow::Drop;
                    }
                }
                Step::Raw(s) => {
                    if s.starts_with("data: [DONE]") {
                        continue;
                    }
                    // Malformed data: send the broken payload as a frame.
                    let payload = s
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap_or(&s)
                        .to_string();
                    if !self.send_text(payload, None).await {
                        return Flow::Drop;
                    }
                }
                Step::Pause(d) => {
                    if !self.wait_watching(tokio::time::sleep(d)).await {
                        return Flow::Drop;
                    }
                }
                Step::Barrier(name) => {
                    let shared = self.shared.clone();
                    if !self
                        .wait_watching(async move { shared.wait_barrier(&name).await })
                        .await
                    {
                        return Flow::Drop;
                    }
                }
                Step::Stall => {
                    self.wait_watching(std::future::pending::<()>()).await;
                    return Flow::Drop;
                }
                Step::EndEof => return Flow::Close(1011, "stream truncated (simulated)"),
                Step::EndReset => return Flow::Drop,
            }
        }
        if plan.completes {
            self.last_completed = Some(response_id);
        }
        Flow::Continue
    }

    async fn bench_turn(&mut self) -> Flow {
        let frames = crate::bench::ws_frames();
        for f in frames {
            if self.tx.send(Message::Text(f.clone())).await.is_err() {
                return Flow::Drop;
            }
        }
        Flow::Continue
    }
}
