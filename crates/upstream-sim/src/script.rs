//! What each scenario sends: a transport-neutral [`Plan`] built from a
//! [`Scenario`]. The SSE handler and the websocket loop both execute the same
//! plans, so one scenario definition drives both transports.
//!
//! Also home of the wire shapes shared by several routes: the §4.1 rate-limit
//! headers, the `codex.rate_limits` event and the usage-limit error body.

use std::time::Duration;

use serde_json::{Value, json};

use crate::scenario::{IncompleteReason, Scenario};
use crate::state::{PRIMARY_WINDOW_SECS, QuotaView, SECONDARY_WINDOW_SECS};

/// The full answer text of the `text` scenario (the concatenated deltas).
pub const TEXT_SCENARIO_ANSWER: &str = "Hello, café from the simulator!";
/// The text deltas of the `text` scenario.
pub const TEXT_DELTAS: &[&str] = &["Hello, ", "café", " from", " the", " simulator!"];
/// The reasoning summary of the `reasoning` scenario.
pub const REASONING_SUMMARY: &str = "Thinking about a greeting";
/// Arguments of the `tool_call` scenario's `shell` call.
pub const TOOL_CALL_ARGUMENTS: &str = r#"{"command":["echo","hi"]}"#;
/// The models catalogue ETag (also sent as `x-models-etag`).
pub const MODELS_ETAG: &str = "\"sim-models-1\"";
/// Delay used by `slow_first_byte` and `slow_first_event`.
pub const SLOW_DELAY: Duration = Duration::from_secs(20);
/// Size of the encrypted content of `large_event`.
pub const LARGE_EVENT_BYTES: usize = 8 * 1024 * 1024 + 1024;
/// The message of an expired-token 401.
pub const TOKEN_EXPIRED_MESSAGE: &str =
    "Provided authentication token is expired. Please try signing in again.";

/// One step of a streamed answer.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// A JSON event (SSE: `event:` + `data:` lines; websocket: one text frame).
    Event(Value),
    /// Raw SSE text sent as-is (websocket: sent as a text frame unless empty).
    Raw(String),
    Pause(Duration),
    Barrier(String),
    /// Send nothing more until the client goes away.
    Stall,
    /// End without a terminal event (clean EOF / websocket close 1011).
    EndEof,
    /// End with a TCP reset.
    EndReset,
}

#[derive(Clone, Debug)]
pub(crate) struct StreamPlan {
    pub head_delay: Option<Duration>,
    pub steps: Vec<Step>,
    pub chunk_every_byte: bool,
    /// Whether the plan ends with a successful completion (websocket continuations).
    pub completes: bool,
}

/// A complete non-streamed HTTP answer.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Reply {
        self.headers.extend(headers);
        self
    }

    /// The error object for a websocket wrapped error frame.
    pub fn ws_error_object(&self) -> Value {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(mut map)) => {
                if let Some(err) = map.remove("error") {
                    if err.is_object() {
                        return err;
                    }
                    // OAuth style `{"error":"x","error_description":…}`.
                    return json!({"type": err, "code": err, "message": map.remove("error_description").unwrap_or(Value::Null)});
                }
                if let Some(detail) = map.remove("detail") {
                    return json!({"type": "invalid_request_error", "code": null, "message": detail});
                }
                json!({"type": "server_error", "message": Value::Object(map)})
            }
            _ => json!({"type": "server_error", "code": "server_error", "message": self.body}),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Plan {
    Stream(StreamPlan),
    Reply(Reply),
    /// Drop the connection before any response byte.
    Close,
}

/// Per-request values a plan needs.
pub(crate) struct Ctx<'a> {
    pub n: u64,
    pub model: &'a str,
    pub created_at: i64,
    pub quota: &'a QuotaView,
}

impl Ctx<'_> {
    pub fn response_id(&self) -> String {
        format!("resp_sim_{}", self.n)
    }
    pub fn call_id(&self) -> String {
        format!("call_sim_{}", self.n)
    }
}

/// Render one event as SSE text.
pub(crate) fn sse_event(event: &Value) -> String {
    let ty = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    format!("event: {ty}\ndata: {event}\n\n")
}

// ---- shared wire shapes --------------------------------------------------------

fn pct(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The §4.1 `x-codex-*` headers for a quota state.
pub(crate) fn quota_headers(view: &QuotaView) -> Vec<(String, String)> {
    let q = &view.quota;
    let now = view.now;
    vec![
        ("x-codex-primary-used-percent".into(), pct(q.primary_used)),
        (
            "x-codex-primary-window-minutes".into(),
            (PRIMARY_WINDOW_SECS / 60).to_string(),
        ),
        (
            "x-codex-primary-reset-at".into(),
            q.primary_reset_at.to_string(),
        ),
        (
            "x-codex-primary-reset-after-seconds".into(),
            (q.primary_reset_at - now).max(0).to_string(),
        ),
        (
            "x-codex-secondary-used-percent".into(),
            pct(q.secondary_used),
        ),
        (
            "x-codex-secondary-window-minutes".into(),
            (SECONDARY_WINDOW_SECS / 60).to_string(),
        ),
        (
            "x-codex-secondary-reset-at".into(),
            q.secondary_reset_at.to_string(),
        ),
        (
            "x-codex-secondary-reset-after-seconds".into(),
            (q.secondary_reset_at - now).max(0).to_string(),
        ),
        ("x-codex-credits-has-credits".into(), "false".into()),
        ("x-codex-credits-unlimited".into(), "false".into()),
        ("x-codex-credits-balance".into(), "0".into()),
        ("x-codex-plan-type".into(), view.plan_type.clone()),
        ("x-codex-active-limit".into(), "codex".into()),
    ]
}

/// The websocket `codex.rate_limits` event (§4.2).
pub(crate) fn rate_limits_event(view: &QuotaView) -> Value {
    let q = &view.quota;
    json!({
        "type": "codex.rate_limits",
        "plan_type": view.plan_type,
        "metered_limit_name": "codex",
        "rate_limits": {
            "primary": {"used_percent": q.primary_used, "window_minutes": PRIMARY_WINDOW_SECS / 60,
                        "reset_at": q.primary_reset_at, "reset_after_seconds": (q.primary_reset_at - view.now).max(0)},
            "secondary": {"used_percent": q.secondary_used, "window_minutes": SECONDARY_WINDOW_SECS / 60,
                          "reset_at": q.secondary_reset_at, "reset_after_seconds": (q.secondary_reset_at - view.now).max(0)},
        },
        "credits": {"has_credits": false, "unlimited": false, "balance": "0"},
    })
}

/// The 429 answered while an account's quota is exhausted (§4.4, A.3).
pub(crate) fn usage_limit_reply(view: &QuotaView) -> Reply {
    let (resets_at, weekly) = view
        .quota
        .exhausted()
        .unwrap_or((view.quota.primary_reset_at, false));
    let resets_in = (resets_at - view.now).max(0);
    let body = json!({"error": {
        "type": "usage_limit_reached",
        "code": "usage_limit_reached",
        "message": "The usage limit has been reached",
        "plan_type": view.plan_type,
        "resets_at": resets_at,
        "resets_in_seconds": resets_in,
    }});
    let mut headers = quota_headers(view);
    headers.push((
        "x-codex-rate-limit-reached-type".into(),
        "rate_limit_reached".into(),
    ));
    if weekly {
        headers.push(("x-codex-limit-window".into(), "weekly".into()));
    }
    Reply::json(429, body).with_headers(headers)
}

/// 401 for an expired or revoked access token.
pub(crate) fn token_expired_reply() -> Reply {
    Reply::json(
        401,
        json!({"error": {"message": TOKEN_EXPIRED_MESSAGE, "type": "invalid_request_error",
                          "code": "token_expired", "param": null}}),
    )
}

// ---- event building ------------------------------------------------------------

struct Events {
    steps: Vec<Step>,
    seq: u64,
}

impl Events {
    fn new() -> Events {
        Events {
            steps: Vec::new(),
            seq: 0,
        }
    }

    fn push(&mut self, mut event: Value) {
        if let Value::Object(map) = &mut event {
            map.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        self.steps.push(Step::Event(event));
    }

    fn step(&mut self, step: Step) {
        self.steps.push(step);
    }
}

fn response_obj(
    ctx: &Ctx<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Value,
    error: Value,
    incomplete: Value,
) -> Value {
    json!({
        "id": ctx.response_id(),
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "model": ctx.model,
        "output": output,
        "usage": usage,
        "error": error,
        "incomplete_details": incomplete,
        "store": false,
        "parallel_tool_calls": false,
        "tool_choice": "auto",
        "tools": [],
    })
}

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    })
}

fn text_usage() -> Value {
    usage(120, 64, 9, 0)
}

fn start(ev: &mut Events, ctx: &Ctx<'_>) {
    ev.push(json!({"type": "response.created",
        "response": response_obj(ctx, "in_progress", vec![], Value::Null, Value::Null, Value::Null)}));
    ev.push(json!({"type": "response.in_progress",
        "response": response_obj(ctx, "in_progress", vec![], Value::Null, Value::Null, Value::Null)}));
}

fn msg_id(ctx: &Ctx<'_>) -> String {
    format!("msg_sim_{}", ctx.n)
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(ctx: &Ctx<'_>, status: &str, text: Option<&str>) -> Value {
    let content: Vec<Value> = text.map(text_part).into_iter().collect();
    json!({"id": msg_id(ctx), "type": "message", "role": "assistant", "status": status, "content": content})
}

/// Message item added + content part added.
fn message_open(ev: &mut Events, ctx: &Ctx<'_>, index: u64) {
    ev.push(
        json!({"type": "response.output_item.added", "output_index": index,
        "item": message_item(ctx, "in_progress", None)}),
    );
    ev.push(
        json!({"type": "response.content_part.added", "item_id": msg_id(ctx),
        "output_index": index, "content_index": 0, "part": text_part("")}),
    );
}

fn text_delta(ev: &mut Events, ctx: &Ctx<'_>, index: u64, delta: &str) {
    ev.push(
        json!({"type": "response.output_text.delta", "item_id": msg_id(ctx),
        "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
    );
}

/// Text done, part done, item done; returns the completed item.
fn message_close(ev: &mut Events, ctx: &Ctx<'_>, index: u64, text: &str) -> Value {
    ev.push(
        json!({"type": "response.output_text.done", "item_id": msg_id(ctx),
        "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
    );
    ev.push(
        json!({"type": "response.content_part.done", "item_id": msg_id(ctx),
        "output_index": index, "content_index": 0, "part": text_part(text)}),
    );
    let item = message_item(ctx, "completed", Some(text));
    ev.push(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
    item
}

/// A whole text message at `index` (optionally pausing at a barrier after the first delta).
fn message(ev: &mut Events, ctx: &Ctx<'_>, index: u64, barrier: Option<&str>) -> Value {
    message_open(ev, ctx, index);
    for (i, d) in TEXT_DELTAS.iter().enumerate() {
        text_delta(ev, ctx, index, d);
        if i == 0
            && let Some(name) = barrier
        {
            ev.step(Step::Barrier(name.to_string()));
        }
    }
    message_close(ev, ctx, index, TEXT_SCENARIO_ANSWER)
}

fn reasoning_item(ev: &mut Events, ctx: &Ctx<'_>, encrypted: String) -> Value {
    let id = format!("rs_sim_{}", ctx.n);
    ev.push(
        json!({"type": "response.output_item.added", "output_index": 0,
        "item": {"id": id, "type": "reasoning", "summary": []}}),
    );
    ev.push(
        json!({"type": "response.reasoning_summary_part.added", "item_id": id, "output_index": 0,
        "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
    );
    for d in ["Thinking about", " a greeting"] {
        ev.push(
            json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
            "output_index": 0, "summary_index": 0, "delta": d}),
        );
    }
    ev.push(
        json!({"type": "response.reasoning_summary_text.done", "item_id": id, "output_index": 0,
        "summary_index": 0, "text": REASONING_SUMMARY}),
    );
    ev.push(
        json!({"type": "response.reasoning_summary_part.done", "item_id": id, "output_index": 0,
        "summary_index": 0, "part": {"type": "summary_text", "text": REASONING_SUMMARY}}),
    );
    let item = json!({"id": id, "type": "reasoning",
        "summary": [{"type": "summary_text", "text": REASONING_SUMMARY}],
        "encrypted_content": encrypted});
    ev.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    item
}

fn completed(ev: &mut Events, ctx: &Ctx<'_>, output: Vec<Value>, usage: Value) {
    ev.push(json!({"type": "response.completed",
        "response": response_obj(ctx, "completed", output, usage, Value::Null, Value::Null)}));
}

fn stream(ev: Events, completes: bool) -> Plan {
    Plan::Stream(StreamPlan {
        head_delay: None,
        steps: ev.steps,
        chunk_every_byte: false,
        completes,
    })
}

/// The events of the `text` scenario (barrier after the first delta when given).
fn text_events(ctx: &Ctx<'_>, barrier: Option<&str>) -> Events {
    let mut ev = Events::new();
    start(&mut ev, ctx);
    let item = message(&mut ev, ctx, 0, barrier);
    completed(&mut ev, ctx, vec![item], text_usage());
    ev
}

/// Events up to (and including) the first two text deltas.
fn partial_text(ctx: &Ctx<'_>, deltas: usize) -> Events {
    let mut ev = Events::new();
    start(&mut ev, ctx);
    message_open(&mut ev, ctx, 0);
    for d in TEXT_DELTAS.iter().take(deltas) {
        text_delta(&mut ev, ctx, 0, d);
    }
    ev
}

fn failure_error(code: &str, ctx: &Ctx<'_>) -> Value {
    let message = match code {
        "rate_limit_exceeded" => {
            "Rate limit reached for gpt-5.5 on tokens per min. Please try again in 1.5s."
        }
        "context_length_exceeded" => {
            "Your input exceeds the context window of this model. Please adjust your input and try again."
        }
        "insufficient_quota" => "You exceeded your current quota (simulated).",
        "usage_not_included" => "Your plan does not include Codex usage (simulated).",
        "usage_limit_reached" => "The usage limit has been reached",
        "invalid_prompt" => "Invalid prompt: the request was flagged (simulated).",
        _ => "The server had an error while processing your request. (simulated)",
    };
    let mut err = json!({"code": code, "message": message});
    if code == "usage_limit_reached" {
        err["plan_type"] = json!(ctx.quota.plan_type);
        err["resets_at"] = json!(ctx.quota.now + 3600);
    }
    err
}

fn failed(ev: &mut Events, ctx: &Ctx<'_>, code: &str) {
    ev.push(json!({"type": "response.failed",
        "response": response_obj(ctx, "failed", vec![], Value::Null, failure_error(code, ctx), Value::Null)}));
}

fn large_blob() -> String {
    // Base64-alphabet filler, deterministic and cheap to build.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(LARGE_EVENT_BYTES + 8);
    s.push_str("sim-enc-");
    s.extend(
        ALPHABET
            .iter()
            .cycle()
            .take(LARGE_EVENT_BYTES)
            .map(|b| *b as char),
    );
    s
}

/// Build the plan of a scenario that answers a model request.
///
/// Stateful scenarios (quota, token expiry, refresh variants) are resolved by the
/// caller before this is reached; they are mapped to their reply here only as a
/// fallback.
pub(crate) fn build(scenario: &Scenario, ctx: &Ctx<'_>) -> Plan {
    match scenario {
        Scenario::Text | Scenario::Refresh(_) | Scenario::WsRefuse(_) => {
            stream(text_events(ctx, None), true)
        }
        Scenario::Reasoning => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            let rs = reasoning_item(&mut ev, ctx, format!("sim-enc-{}", ctx.n));
            let msg = message(&mut ev, ctx, 1, None);
            completed(&mut ev, ctx, vec![rs, msg], usage(120, 64, 30, 21));
            stream(ev, true)
        }
        Scenario::LargeEvent => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            let rs = reasoning_item(&mut ev, ctx, large_blob());
            let msg = message(&mut ev, ctx, 1, None);
            completed(&mut ev, ctx, vec![rs, msg], usage(120, 64, 30, 21));
            stream(ev, true)
        }
        Scenario::ToolCall => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            let fc_id = format!("fc_sim_{}", ctx.n);
            ev.push(json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": fc_id, "type": "function_call", "call_id": ctx.call_id(), "name": "shell",
                         "arguments": "", "status": "in_progress"}}));
            let (a, b) = TOOL_CALL_ARGUMENTS.split_at(12);
            for d in [a, b] {
                ev.push(json!({"type": "response.function_call_arguments.delta", "item_id": fc_id,
                    "output_index": 0, "delta": d}));
            }
            ev.push(json!({"type": "response.function_call_arguments.done", "item_id": fc_id,
                "output_index": 0, "arguments": TOOL_CALL_ARGUMENTS}));
            let item = json!({"id": fc_id, "type": "function_call", "call_id": ctx.call_id(),
                "name": "shell", "arguments": TOOL_CALL_ARGUMENTS, "status": "completed"});
            ev.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
            completed(&mut ev, ctx, vec![item], usage(300, 0, 18, 0));
            stream(ev, true)
        }
        Scenario::EmptyOutput => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            message(&mut ev, ctx, 0, None);
            completed(&mut ev, ctx, vec![], text_usage());
            stream(ev, true)
        }
        Scenario::LegacyDone => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            let item = message(&mut ev, ctx, 0, None);
            ev.push(json!({"type": "response.done",
                "response": response_obj(ctx, "completed", vec![item], text_usage(), Value::Null, Value::Null)}));
            stream(ev, true)
        }
        Scenario::DoneTrailer => {
            let mut ev = text_events(ctx, None);
            ev.step(Step::Raw("data: [DONE]\n\n".into()));
            stream(ev, true)
        }
        Scenario::Incomplete(reason) => {
            let mut ev = partial_text(ctx, 1);
            let partial = TEXT_DELTAS[0];
            let item = json!({"id": msg_id(ctx), "type": "message", "role": "assistant",
                "status": "incomplete", "content": [text_part(partial)]});
            let u = match reason {
                IncompleteReason::MaxOutputTokens => usage(50, 0, 4096, 0),
                _ => usage(50, 0, 2, 0),
            };
            ev.push(json!({"type": "response.incomplete",
                "response": response_obj(ctx, "incomplete", vec![item], u, Value::Null,
                                         json!({"reason": reason.wire()}))}));
            stream(ev, false)
        }
        Scenario::FailedFirst(code) => {
            let mut ev = Events::new();
            ev.push(json!({"type": "response.created",
                "response": response_obj(ctx, "in_progress", vec![], Value::Null, Value::Null, Value::Null)}));
            failed(&mut ev, ctx, code);
            stream(ev, false)
        }
        Scenario::FailedAfterContent(code) => {
            let mut ev = partial_text(ctx, 2);
            failed(&mut ev, ctx, code);
            stream(ev, false)
        }
        Scenario::ErrorFlat => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            ev.push(json!({"type": "response.output_item.added", "output_index": 0,
                "item": message_item(ctx, "in_progress", None)}));
            ev.push(json!({"type": "error", "code": "server_error",
                "message": "The server had an error while processing your request. (simulated)", "param": null}));
            stream(ev, false)
        }
        Scenario::ErrorNested => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            ev.push(json!({"type": "response.output_item.added", "output_index": 0,
                "item": message_item(ctx, "in_progress", None)}));
            ev.push(json!({"type": "error", "error": {"type": "server_error", "code": "server_error",
                "message": "The server had an error while processing your request. (simulated)", "param": null}}));
            stream(ev, false)
        }
        Scenario::Quota429 | Scenario::Quota429Weekly => Plan::Reply(usage_limit_reply(ctx.quota)),
        Scenario::CreditsDepleted => {
            let mut headers = quota_headers(ctx.quota);
            headers.push((
                "x-codex-rate-limit-reached-type".into(),
                "workspace_owner_credits_depleted".into(),
            ));
            Plan::Reply(
                Reply::json(429, json!({"error": {"type": "workspace_owner_credits_depleted",
                    "code": "workspace_owner_credits_depleted",
                    "message": "Your workspace has run out of credits.", "plan_type": ctx.quota.plan_type}}))
                .with_headers(headers),
            )
        }
        Scenario::UsageNotIncluded => Plan::Reply(
            Reply::json(429, json!({"error": {"type": "usage_not_included", "code": "usage_not_included",
                "message": "Your plan does not include Codex.", "plan_type": ctx.quota.plan_type}}))
            .with_headers(quota_headers(ctx.quota)),
        ),
        Scenario::RateLimited429 => {
            let mut headers = quota_headers(ctx.quota);
            headers.push(("retry-after".into(), "2".into()));
            Plan::Reply(
                Reply::json(429, json!({"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                    "message": "Rate limit reached for requests. Please try again in 2s.", "param": null}}))
                .with_headers(headers),
            )
        }
        Scenario::TokenExpired => Plan::Reply(token_expired_reply()),
        Scenario::Forbidden403 => Plan::Reply(Reply::json(
            403,
            json!({"error": {"type": "invalid_request_error", "code": "account_deactivated",
                "message": "This account has been deactivated.", "param": null}}),
        )),
        Scenario::ForbiddenHtml => Plan::Reply(Reply {
            status: 403,
            content_type: "text/html; charset=UTF-8",
            headers: vec![("cf-mitigated".into(), "challenge".into())],
            body: "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head>\
                   <body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
                .into(),
        }),
        Scenario::BadRequestParam => Plan::Reply(Reply::json(
            400,
            json!({"detail": "Unsupported parameter: temperature"}),
        )),
        Scenario::BadRequestModel => Plan::Reply(Reply::json(
            400,
            json!({"detail": format!("The '{}' model is not supported when using Codex with a ChatGPT account.", ctx.model)}),
        )),
        Scenario::BadRequestContext => Plan::Reply(Reply::json(
            400,
            json!({"error": {"type": "invalid_request_error", "code": "context_length_exceeded",
                "message": "Your input exceeds the context window of this model. Please adjust your input and try again.",
                "param": "input"}}),
        )),
        Scenario::Http5xx(500) => Plan::Reply(Reply::json(
            500,
            json!({"error": {"type": "server_error", "code": "server_error",
                "message": "The server had an error processing your request. (simulated)", "param": null}}),
        )),
        Scenario::Http5xx(502) => Plan::Reply(Reply {
            status: 502,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
                .into(),
        }),
        Scenario::Http5xx(503) => Plan::Reply(Reply::json(
            503,
            json!({"error": {"type": "service_unavailable_error", "code": "server_is_overloaded",
                "message": "Our servers are currently overloaded. Please try again later.", "param": null}}),
        )),
        Scenario::Http5xx(code) => Plan::Reply(Reply {
            status: *code,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: "<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Gateway Time-out</h1></body></html>"
                .into(),
        }),
        Scenario::MalformedJson => Plan::Reply(Reply {
            status: 200,
            content_type: "application/json",
            headers: quota_headers(ctx.quota),
            body: "{\"id\": \"resp_sim\", \"output\": [ this is not json".into(),
        }),
        Scenario::MalformedSse => {
            let mut ev = Events::new();
            start(&mut ev, ctx);
            ev.step(Step::Raw(format!(
                "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"item\":{{\"id\":\"{}\",\"type\":\"mess\n\n",
                msg_id(ctx)
            )));
            ev.step(Step::EndEof);
            stream(ev, false)
        }
        Scenario::SlowFirstByte => {
            let Plan::Stream(mut p) = stream(text_events(ctx, None), true) else {
                return Plan::Close;
            };
            p.head_delay = Some(SLOW_DELAY);
            Plan::Stream(p)
        }
        Scenario::SlowFirstEvent => {
            let mut ev = Events::new();
            ev.step(Step::Pause(SLOW_DELAY));
            let rest = text_events(ctx, None);
            ev.steps.extend(rest.steps);
            stream(ev, true)
        }
        Scenario::Stall => {
            let mut ev = Events::new();
            ev.step(Step::Stall);
            stream(ev, false)
        }
        Scenario::StallMidStream => {
            let mut ev = partial_text(ctx, 1);
            ev.step(Step::Stall);
            stream(ev, false)
        }
        Scenario::TruncateEof => {
            let mut ev = partial_text(ctx, 2);
            ev.step(Step::EndEof);
            stream(ev, false)
        }
        Scenario::TruncateReset => {
            let mut ev = partial_text(ctx, 2);
            ev.step(Step::EndReset);
            stream(ev, false)
        }
        Scenario::TruncateMidEvent => {
            let mut ev = partial_text(ctx, 2);
            ev.step(Step::Raw(format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"{}\",\"del",
                msg_id(ctx)
            )));
            ev.step(Step::EndEof);
            stream(ev, false)
        }
        Scenario::ChunkedBytes => {
            let Plan::Stream(mut p) = stream(text_events(ctx, None), true) else {
                return Plan::Close;
            };
            p.chunk_every_byte = true;
            Plan::Stream(p)
        }
        Scenario::CloseBeforeHeaders => Plan::Close,
        Scenario::Barrier(name) => stream(text_events(ctx, Some(name)), true),
    }
}

/// The prewarm answer (`generate:false`): created + completed, no output, zero usage.
pub(crate) fn prewarm(ctx: &Ctx<'_>) -> Plan {
    let mut ev = Events::new();
    ev.push(json!({"type": "response.created",
        "response": response_obj(ctx, "in_progress", vec![], Value::Null, Value::Null, Value::Null)}));
    completed(&mut ev, ctx, vec![], usage(0, 0, 0, 0));
    stream(ev, true)
}
