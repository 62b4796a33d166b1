//! Helpers shared by the integration tests: starting simulators, building Codex-like
//! requests and an independent SSE parser.

use std::net::SocketAddr;

use futures_util::StreamExt;
use serde_json::{Value, json};
use upstream_sim::{AccountSnapshot, SimConfig, Simulator};

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn start(accounts: usize) -> Simulator {
    start_with(SimConfig {
        accounts,
        ..SimConfig::default()
    })
    .await
}

pub async fn start_with(config: SimConfig) -> Simulator {
    Simulator::start(loopback(), config)
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

pub fn account(sim: &Simulator, n: usize) -> AccountSnapshot {
    sim.accounts().into_iter().nth(n).expect("account exists")
}

pub fn user_message(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

/// A request body shaped like the Codex CLI's.
pub fn body_with_input(input: Vec<Value>) -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": "You are Codex.",
        "input": input,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": null,
        "store": false,
        "stream": true,
        "include": [],
        "prompt_cache_key": "thread-1",
    })
}

pub fn body(text: &str) -> Value {
    body_with_input(vec![user_message(text)])
}

pub fn responses_url(sim: &Simulator) -> String {
    format!("{}/backend-api/codex/responses", sim.base_url())
}

pub fn authed(req: reqwest::RequestBuilder, acct: &AccountSnapshot) -> reqwest::RequestBuilder {
    req.bearer_auth(&acct.access_token)
        .header("chatgpt-account-id", &acct.account_id)
}

pub async fn post_responses(
    sim: &Simulator,
    acct: &AccountSnapshot,
    body: &Value,
) -> reqwest::Response {
    authed(client().post(responses_url(sim)), acct)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .expect("request is answered")
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// A minimal, independent SSE parser that accepts input split anywhere
/// (including inside multi-byte UTF-8 characters).
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
            let text = String::from_utf8(block).expect("event block is UTF-8");
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if line.starts_with(':') {
                    continue;
                }
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if event.is_some() || !data.is_empty() {
                out.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }

    /// Bytes left over after the last complete event.
    pub fn rest(&self) -> &[u8] {
        &self.buf
    }
}

/// Read a whole SSE body; returns the events, the leftover bytes and the number of chunks.
pub async fn read_sse(resp: reqwest::Response) -> (Vec<SseEvent>, Vec<u8>, usize) {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut chunks = 0;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("stream chunk");
        chunks += 1;
        events.extend(parser.feed(&chunk));
    }
    (events, parser.rest().to_vec(), chunks)
}

pub async fn events_of(resp: reqwest::Response) -> Vec<Value> {
    let (events, rest, _) = read_sse(resp).await;
    assert!(rest.is_empty(), "no trailing partial event");
    events
        .iter()
        .map(|e| {
            let v = e.json().expect("data is JSON");
            assert_eq!(
                e.event.as_deref(),
                v["type"].as_str(),
                "event line matches the JSON type"
            );
            v
        })
        .collect()
}

pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap_or(""))
        .collect()
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Normalise per-request values (ids, timestamps) so two answers compare equal.
pub fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, val)| {
                    let val = match k.as_str() {
                        "id" | "item_id" | "created_at" | "call_id" | "encrypted_content" => {
                            Value::Null
                        }
                        _ => normalise(val),
                    };
                    (k.clone(), val)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        other => other.clone(),
    }
}
