//! The OpenAI-compatible `/v1` surface at the wire level against the
//! simulator: Responses (JSON and SSE, terminal normalisation, sanitised
//! failures, synthetic interruption errors), Chat Completions (JSON, SSE,
//! tools, unsupported parameters), models, usage, the `/v1` gates and the
//! routed-but-unsupported endpoints.

use codex_pooler::control;
use codex_pooler::store::AuditActor;
use serde_json::{Value, json};
use upstream_sim::{TEXT_SCENARIO_ANSWER, TOOL_CALL_ARGUMENTS};

use crate::on_both_backends;
use crate::support::{Backend, Harness};

async fn post(h: &Harness, path: &str, body: &Value) -> reqwest::Response {
    post_as(h, &h.info.api_key, path, body).await
}

async fn post_as(h: &Harness, key: &str, path: &str, body: &Value) -> reqwest::Response {
    h.http
        .post(h.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn get_as(h: &Harness, key: &str, path: &str) -> reqwest::Response {
    h.http
        .get(h.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request sent")
}

/// The newest row recorded for `endpoint`.
async fn newest_row(h: &Harness, endpoint: &str) -> Value {
    h.request_logs()
        .await
        .into_iter()
        .find(|r| r["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("a row for {endpoint}"))
}

/// Queues `scenario` on the account that `seed` routes to first.
async fn queue_first(h: &Harness, seed: &str, scenario: &str) {
    let first = h.account_order(seed).await[0].clone();
    h.sim
        .queue_scenario(&first, scenario, 1)
        .expect("scenario queued");
}

/// `(event name, data)` of every frame of a public Responses SSE body.
fn frames(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let name = f
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = f
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(Value::Null);
            (name, data)
        })
        .collect()
}

/// The `data:` payloads of a chat SSE body (`[DONE]` kept as a string).
fn chat_payloads(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())))
        .collect()
}

fn last_upstream_body(h: &Harness) -> Value {
    h.sim
        .requests()
        .iter()
        .rev()
        .find(|r| r.path == "/backend-api/codex/responses")
        .and_then(|r| r.json.clone())
        .expect("an upstream request")
}

fn assert_error(body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(e["type"].is_string());
    assert!(e.as_object().is_some_and(|o| o.contains_key("param")));
}

async fn responses_json_and_sse(backend: Backend) {
    let h = Harness::start(backend).await;

    // JSON: string input, a system message lifted, max_output_tokens accepted.
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "instructions": "Be kind.", "max_output_tokens": 64,
            "input": [{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": "hello"}],
            "prompt_cache_key": "v1-json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    let text = v["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .filter_map(|i| i["content"][0]["text"].as_str())
        .collect::<String>();
    assert_eq!(text, TEXT_SCENARIO_ANSWER);
    assert_eq!(v["usage"]["input_tokens"], 120);
    assert!(v.get("error").is_none_or(Value::is_null));
    let sent = last_upstream_body(&h);
    assert_eq!(sent["instructions"], "Be kind.\n\nAnswer briefly.");
    assert_eq!(
        sent["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}])
    );
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["store"], false);
    assert!(sent.get("max_output_tokens").is_none());
    let row = newest_row(&h, "/v1/responses").await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["transport"], "http_json");
    assert_eq!(row["total_tokens"], 129);
    assert_eq!(row["cached_input_tokens"], 64);

    // String input alone.
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        last_upstream_body(&h)["input"][0]["content"][0],
        json!({"type": "input_text", "text": "hi"})
    );

    // SSE: `event:` names match the data, text arrives, ends completed.
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "hello", "stream": true, "prompt_cache_key": "v1-sse"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let body = r.text().await.expect("body");
    let events = frames(&body);
    for (sequence, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "event name matches type");
        assert!(data.get("error").is_none(), "no top-level error: {data}");
        assert_eq!(data["sequence_number"], sequence);
    }
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, TEXT_SCENARIO_ANSWER);
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("response.completed")
    );
    let row = newest_row(&h, "/v1/responses").await;
    assert_eq!(row["transport"], "http_sse");
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["total_tokens"], 129);
    h.stop().await;
}
on_both_backends!(responses, responses_json_and_sse);

/// Streams with `scenario` queued and returns the public events.
async fn stream_scenario(h: &Harness, scenario: &str) -> Vec<(String, Value)> {
    let seed = format!("v1-{scenario}");
    queue_first(h, &seed, scenario).await;
    let r = post(
        h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "hello", "stream": true, "prompt_cache_key": seed}),
    )
    .await;
    assert_eq!(r.status(), 200, "{scenario}");
    frames(&r.text().await.expect("body"))
}

async fn responses_terminals_are_normalised(backend: Backend) {
    let h = Harness::start(backend).await;

    let events = stream_scenario(&h, "legacy_done").await;
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(!names.contains(&"response.done"));

    let events = stream_scenario(&h, "incomplete_max_tokens").await;
    let (name, data) = events.last().expect("terminal");
    assert_eq!(name, "response.incomplete");
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let events = stream_scenario(&h, "incomplete_context_length").await;
    let (name, data) = events.last().expect("terminal");
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["error"]["code"], "context_length_exceeded");
    assert_eq!(
        data["response"]["error"]["message"],
        "upstream request failed"
    );

    let events = stream_scenario(&h, "failed_after_content").await;
    let (name, data) = events.last().expect("terminal");
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["error"]["code"], "server_error");
    assert!(
        data["response"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("resp_"))
    );
    assert!(
        events
            .iter()
            .any(|(n, _)| n == "response.output_text.delta"),
        "content came first"
    );

    // A stream cut after visible output: exactly one synthetic error.
    let events = stream_scenario(&h, "truncate_eof").await;
    let errors: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "error")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    let e = errors[0];
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("error"));
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "server_error");
    assert_eq!(e["error"]["code"], "server_error");
    assert_eq!(
        e["message"],
        "upstream request failed: stream interrupted before terminal response event"
    );
    let row = newest_row(&h, "/v1/responses").await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["last_error_code"], "upstream_stream_error");

    // Non-streaming failures become sanitised HTTP errors.
    for (scenario, status, code) in [
        ("failed_after_content", 502, "server_error"),
        ("incomplete_context_length", 400, "context_length_exceeded"),
    ] {
        let seed = format!("v1-json-{scenario}");
        queue_first(&h, &seed, scenario).await;
        let r = post(
            &h,
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "hello", "prompt_cache_key": seed}),
        )
        .await;
        assert_eq!(r.status(), status, "{scenario}");
        let v: Value = r.json().await.expect("json");
        assert_error(&v, code);
        assert_eq!(v["error"]["message"], "upstream request failed");
    }

    // A non-streaming incomplete for max tokens is a normal answer.
    queue_first(&h, "v1-json-inc", "incomplete_max_tokens").await;
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "hello", "prompt_cache_key": "v1-json-inc"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "incomplete");
    h.stop().await;
}
on_both_backends!(responses_terminals, responses_terminals_are_normalised);

fn chat_body(prompt: &str, seed: &str) -> Value {
    json!({"model": "gpt-5.5", "prompt_cache_key": seed,
        "messages": [{"role": "system", "content": "You are a test."},
                     {"role": "user", "content": prompt}]})
}

fn shell_tool() -> Value {
    json!([{"type": "function", "function": {"name": "shell", "description": "Runs a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}},
        "strict": false}}])
}

async fn chat_completions_json_and_sse(backend: Backend) {
    let h = Harness::start(backend).await;

    // JSON text answer, A.5 shape.
    let mut body = chat_body("hello", "chat-1");
    body["max_tokens"] = json!(100);
    body["reasoning_effort"] = json!("high");
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT_SCENARIO_ANSWER);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 120);
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(v["usage"]["total_tokens"], 129);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 64);
    let sent = last_upstream_body(&h);
    assert_eq!(sent["instructions"], "You are a test.");
    assert_eq!(sent["reasoning"]["effort"], "high");
    assert!(sent.get("max_output_tokens").is_none());
    assert!(sent.get("max_tokens").is_none());
    let row = newest_row(&h, "/v1/chat/completions").await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["transport"], "http_json");
    assert_eq!(row["total_tokens"], 129);

    // JSON tool call, tools flattened upstream.
    let mut body = chat_body("please SIM:tool_call", "chat-2");
    body["tools"] = shell_tool();
    body["tool_choice"] = json!("auto");
    let v: Value = post(&h, "/v1/chat/completions", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "shell");
    assert_eq!(call["function"]["arguments"], TOOL_CALL_ARGUMENTS);
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    let sent = last_upstream_body(&h);
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["name"], "shell");
    assert!(sent["tools"][0].get("function").is_none());

    // The tool result goes back as function_call_output.
    let call_id = call["id"].as_str().unwrap_or("").to_owned();
    let body = json!({"model": "gpt-5.5", "tools": shell_tool(), "prompt_cache_key": "chat-2", "messages": [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call_id, "content": "hi\n"}]});
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let sent = last_upstream_body(&h);
    assert_eq!(sent["input"][1]["type"], "function_call");
    assert_eq!(sent["input"][2]["type"], "function_call_output");
    assert_eq!(sent["input"][2]["call_id"], call_id.as_str());

    // SSE with usage.
    let mut body = chat_body("hello", "chat-3");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let payloads = chat_payloads(&r.text().await.expect("body"));
    assert_eq!(payloads.last(), Some(&json!("[DONE]")));
    let chunks = &payloads[..payloads.len() - 1];
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, TEXT_SCENARIO_ANSWER);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["total_tokens"], 129);
    let row = newest_row(&h, "/v1/chat/completions").await;
    assert_eq!(row["transport"], "http_sse");
    assert_eq!(row["status"], "succeeded");

    // SSE tool call deltas.
    let mut body = chat_body("SIM:tool_call", "chat-4");
    body["stream"] = json!(true);
    body["tools"] = shell_tool();
    let payloads = chat_payloads(
        &post(&h, "/v1/chat/completions", &body)
            .await
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(payloads.last(), Some(&json!("[DONE]")));
    let deltas: Vec<&Value> = payloads
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .map(|_| c)
        })
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0])
        .collect();
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "shell");
    assert!(deltas[0]["id"].is_string());
    let args: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, TOOL_CALL_ARGUMENTS);
    let finish = payloads
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    h.stop().await;
}
on_both_backends!(chat_completions, chat_completions_json_and_sse);

async fn chat_completions_edges(backend: Backend) {
    let h = Harness::start(backend).await;

    // Interrupted after output: one error chunk and no [DONE].
    queue_first(&h, "chat-cut", "truncate_eof").await;
    let mut body = chat_body("hello", "chat-cut");
    body["stream"] = json!(true);
    let payloads = chat_payloads(
        &post(&h, "/v1/chat/completions", &body)
            .await
            .text()
            .await
            .expect("body"),
    );
    assert!(!payloads.contains(&json!("[DONE]")));
    let errors: Vec<&Value> = payloads
        .iter()
        .filter(|p| p.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["error"]["code"], "server_error");
    assert_eq!(payloads.last(), Some(errors[0]));
    assert!(
        payloads
            .iter()
            .any(|p| p["choices"][0]["delta"]["content"].is_string())
    );

    // A failed terminal while streaming: error chunk, no [DONE].
    queue_first(&h, "chat-fail", "failed_after_content").await;
    let mut body = chat_body("hello", "chat-fail");
    body["stream"] = json!(true);
    let payloads = chat_payloads(
        &post(&h, "/v1/chat/completions", &body)
            .await
            .text()
            .await
            .expect("body"),
    );
    assert!(!payloads.contains(&json!("[DONE]")));
    assert_eq!(
        payloads.last().map(|p| &p["error"]["code"]),
        Some(&json!("server_error"))
    );

    // Max tokens: finish_reason length.
    queue_first(&h, "chat-len", "incomplete_max_tokens").await;
    let v: Value = post(&h, "/v1/chat/completions", &chat_body("hello", "chat-len"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Unsupported parameters, named.
    for (field, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("stop", json!("\n")),
        ("seed", json!(7)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
    ] {
        let mut body = chat_body("hello", "chat-bad");
        body[field] = value;
        let r = post(&h, "/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 400, "{field}");
        let v: Value = r.json().await.expect("json");
        assert_error(&v, "unsupported_parameter");
        assert_eq!(v["error"]["param"], field);
    }
    let row = newest_row(&h, "/v1/chat/completions").await;
    assert_eq!(row["status"], "rejected");
    assert_eq!(row["last_error_code"], "unsupported_parameter");
    h.stop().await;
}
on_both_backends!(chat_edges, chat_completions_edges);

async fn v1_gates_and_unsupported_endpoints(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();

    // Routed-but-unsupported: 404 before admission (even without a key).
    for (method, path) in [
        ("POST", "/v1/responses/compact"),
        ("POST", "/v1/images/variations"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/moderations"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/content_provenance_checks"),
        ("GET", "/v1/responses/resp_123"),
        ("POST", "/v1/responses/resp_123/cancel"),
        ("DELETE", "/v1/responses/resp_123"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = h
            .http
            .request(method, h.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.expect("json");
        assert_error(&v, "unsupported_endpoint");
        assert_eq!(v["error"]["message"], "Unsupported OpenAI /v1 endpoint");
    }

    // No key: api_key_missing.
    let r = h
        .http
        .post(h.url("/v1/responses"))
        .json(&json!({"model": "gpt-5.5", "input": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
    assert_error(&r.json().await.expect("json"), "api_key_missing");

    // Any non-active key: api_key_disabled, with a rejected row.
    for status in ["paused", "revoked"] {
        let (key_id, raw) =
            control::create_api_key(&rt.store, &actor, &h.info.pool_id, status, None, None)
                .await
                .expect("key");
        rt.store
            .set_api_key_status(&actor, &key_id, status)
            .await
            .expect("status");
        rt.invalidate_caches();
        let r = post_as(&h, &raw, "/v1/chat/completions", &chat_body("hi", "gate")).await;
        assert_eq!(r.status(), 401, "{status}");
        assert_error(&r.json().await.expect("json"), "api_key_disabled");
        let row = newest_row(&h, "/v1/chat/completions").await;
        assert_eq!(row["status"], "rejected");
        assert_eq!(row["last_error_code"], "api_key_disabled");
    }
    let (_, expired) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "expired", None, Some(1))
            .await
            .expect("key");
    let r = get_as(&h, &expired, "/v1/models").await;
    assert_eq!(r.status(), 401);
    assert_error(&r.json().await.expect("json"), "api_key_disabled");

    // The Pool switch.
    rt.store
        .set_pool_v1_compatibility(&actor, &h.info.pool_id, false)
        .await
        .expect("switch");
    rt.invalidate_caches();
    assert_eq!(
        rt.store
            .count_audit_events("pool.update")
            .await
            .expect("audit"),
        1
    );
    for (path, is_post) in [
        ("/v1/responses", true),
        ("/v1/chat/completions", true),
        ("/v1/models", false),
        ("/v1/usage", false),
    ] {
        let r = if is_post {
            post(&h, path, &chat_body("hi", "off")).await
        } else {
            get_as(&h, &h.info.api_key, path).await
        };
        assert_eq!(r.status(), 403, "{path}");
        assert_error(&r.json().await.expect("json"), "v1_compatibility_disabled");
    }
    let row = newest_row(&h, "/v1/responses").await;
    assert_eq!(row["status"], "rejected");
    assert_eq!(row["last_error_code"], "v1_compatibility_disabled");
    // The backend routes are not affected.
    let r = h
        .responses(&crate::support::text_request("hi", "backend"))
        .await;
    assert_eq!(r.status(), 200);
    rt.store
        .set_pool_v1_compatibility(&actor, &h.info.pool_id, true)
        .await
        .expect("switch");
    rt.invalidate_caches();
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": "x"}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // Body errors keep the OpenAI envelope.
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "gpt-5.5", "input": 5}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.expect("json"), "invalid_request");
    let r = post(
        &h,
        "/v1/responses",
        &json!({"model": "no-such-model", "input": "x"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.expect("json"), "invalid_model");
    h.stop().await;
}
on_both_backends!(gates, v1_gates_and_unsupported_endpoints);

async fn models_and_usage(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();

    let r = get_as(&h, &h.info.api_key, "/v1/models").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().cloned().unwrap_or_default();
    let main = data
        .iter()
        .find(|m| m["id"] == "gpt-5.5")
        .expect("gpt-5.5 listed");
    assert_eq!(main["object"], "model");
    assert_eq!(main["owned_by"], "codex-pooler");
    assert_eq!(main["context_length"], 258400);
    assert!(main["created"].as_i64().is_some_and(|c| c > 1_600_000_000));
    assert!(main.get("base_instructions").is_none());
    assert!(data.iter().any(|m| m["id"] == "gpt-5.4-mini"));

    // Allowed models narrow the list.
    let (_, narrow) = control::create_api_key(
        &rt.store,
        &actor,
        &h.info.pool_id,
        "narrow",
        Some(vec!["gpt-5.4-mini".into()]),
        None,
    )
    .await
    .expect("key");
    let v: Value = get_as(&h, &narrow, "/v1/models")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["gpt-5.4-mini"]);

    // Usage of the calling key only.
    let v: Value = get_as(&h, &narrow, "/v1/usage")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["request_count"], 0);
    assert_eq!(v["total_tokens"], 0);
    for seed in ["u1", "u2"] {
        let r = post(
            &h,
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "x", "prompt_cache_key": seed}),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    h.flush().await;
    let v: Value = get_as(&h, &h.info.api_key, "/v1/usage")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["request_count"], 2, "{v}");
    assert_eq!(v["total_tokens"], 258);
    assert_eq!(v["cached_input_tokens"], 128);
    assert_eq!(v["total_cost_status"], "complete");
    assert!((v["total_cost_usd"].as_f64().unwrap_or(0.0) - 0.001164).abs() < 1e-9);
    assert_eq!(v["limits"], json!([]));
    assert_eq!(v["upstream_limits"], json!([]));
    h.stop().await;
}
on_both_backends!(models_usage, models_and_usage);
