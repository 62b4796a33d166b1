//! `POST /v1/chat/completions`: admission, Chat → Responses translation
//! (`translate`), dispatch, and the way back — a `chat.completion` object, or
//! `chat.completion.chunk` deltas ending in a `finish_reason` chunk, an
//! optional usage chunk and `data: [DONE]` (or a single error chunk and no
//! `[DONE]` when the upstream fails or stops without a terminal).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Events;
use super::responses::{INTERRUPTED_MESSAGE, ResponseMeta, collect, failure_response, parse_event};
use super::translate;
use crate::domain::classify::EventKind;
use crate::proxy::sse::SseEvent;
use crate::runtime::Runtime;
use crate::time::{new_id, now_secs};

const ENDPOINT: &str = "/v1/chat/completions";

pub async fn handle(rt: Arc<Runtime>, headers: HeaderMap, body: Body) -> Response {
    let (request, events) =
        match super::translate_and_dispatch(rt, headers, body, ENDPOINT, translate::chat_request)
            .await
        {
            Ok(pair) => pair,
            Err(response) => return response,
        };
    if request.stream {
        let encoder = ChunkEncoder::new(request.model, request.include_usage);
        super::responses::sse_response(chunk_stream(Events::new(events), encoder))
    } else {
        completion(Events::new(events), &request.model).await
    }
}

/// Chat usage from a Responses `usage` object.
fn chat_usage(usage: &Value) -> Value {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let prompt = n("/input_tokens");
    let completion = n("/output_tokens");
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_i64)
        .unwrap_or(prompt + completion);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": n("/input_tokens_details/cached_tokens")},
        "completion_tokens_details": {"reasoning_tokens": n("/output_tokens_details/reasoning_tokens")}})
}

/// `finish_reason` of a successful terminal response.
fn finish_reason(response: &Value, has_tool_calls: bool) -> &'static str {
    match response
        .pointer("/incomplete_details/reason")
        .and_then(Value::as_str)
    {
        Some("max_output_tokens") | Some("max_tokens") => "length",
        Some("content_filter") => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A chat `tool_calls` entry for a Responses output item, if it is a call.
fn tool_call(item: &Value) -> Option<Value> {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    match s("type") {
        "function_call" => Some(json!({"id": s("call_id"), "type": "function",
            "function": {"name": s("name"), "arguments": s("arguments")}})),
        "custom_tool_call" => Some(json!({"id": s("call_id"), "type": "custom",
            "custom": {"name": s("name"), "input": s("input")}})),
        _ => None,
    }
}

fn completion_id(meta: &ResponseMeta, response: Option<&Value>) -> String {
    let id = response
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| meta.id.clone())
        .unwrap_or_else(new_id);
    format!("chatcmpl-{id}")
}

async fn completion(events: Events, requested_model: &str) -> Response {
    let collected = collect(events).await;
    let Some(response) = collected.response else {
        return failure_response(
            collected
                .failure
                .as_deref()
                .unwrap_or("upstream_stream_error"),
        );
    };
    let items = response
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut text = String::new();
    let mut refusal = String::new();
    let mut calls = Vec::new();
    for item in &items {
        if item.get("type").and_then(Value::as_str) == Some("message") {
            for part in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match part.get("type").and_then(Value::as_str) {
                    Some("output_text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("refusal") => {
                        refusal.push_str(part.get("refusal").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => {}
                }
            }
        } else if let Some(call) = tool_call(item) {
            calls.push(call);
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": if refusal.is_empty() { Value::Null } else { json!(refusal) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls.clone());
    }
    let mut body = json!({
        "id": completion_id(&collected.meta, Some(&response)),
        "object": "chat.completion",
        "created": response.get("created_at").and_then(Value::as_i64)
            .or(collected.meta.created_at).unwrap_or_else(now_secs),
        "model": response.get("model").and_then(Value::as_str).unwrap_or(requested_model),
        "choices": [{"index": 0, "message": message, "logprobs": null,
            "finish_reason": finish_reason(&response, !calls.is_empty())}],
    });
    if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
        body["usage"] = chat_usage(usage);
    }
    if let Some(tier) = response.get("service_tier").filter(|t| t.is_string()) {
        body["service_tier"] = tier.clone();
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// One SSE payload of the chat stream.
#[derive(Debug, PartialEq)]
enum Out {
    Chunk(Value),
    Done,
}

/// Re-encodes upstream events as `chat.completion.chunk`s.
#[derive(Debug)]
struct ChunkEncoder {
    model: String,
    include_usage: bool,
    meta: ResponseMeta,
    fallback_id: String,
    role_sent: bool,
    /// Output item id → tool call index, with the arguments streamed so far.
    tools: HashMap<String, (usize, String)>,
    done: bool,
}

impl ChunkEncoder {
    fn new(model: String, include_usage: bool) -> Self {
        ChunkEncoder {
            model,
            include_usage,
            meta: ResponseMeta::default(),
            fallback_id: new_id(),
            role_sent: false,
            tools: HashMap::new(),
            done: false,
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        let id = self
            .meta
            .id
            .clone()
            .unwrap_or_else(|| self.fallback_id.clone());
        json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
            "created": self.meta.created_at.unwrap_or_else(now_secs),
            "model": self.meta.model.clone().unwrap_or_else(|| self.model.clone()),
            "choices": choices})
    }

    fn send_role(&mut self, out: &mut Vec<Out>) {
        if !self.role_sent {
            self.role_sent = true;
            let role = json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}]);
            out.push(Out::Chunk(self.chunk(role)));
        }
    }

    fn delta(&mut self, delta: Value, out: &mut Vec<Out>) {
        self.send_role(out);
        let choices =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]);
        out.push(Out::Chunk(self.chunk(choices)));
    }

    fn start_tool(&mut self, item: &Value, out: &mut Vec<Out>) {
        let Some(item_id) = item.get("id").and_then(Value::as_str) else {
            return;
        };
        let Some(mut call) = tool_call(item) else {
            return;
        };
        if self.tools.contains_key(item_id) {
            return;
        }
        let index = self.tools.len();
        let full = call
            .pointer("/function/arguments")
            .or_else(|| call.pointer("/custom/input"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.tools.insert(item_id.to_owned(), (index, full));
        call["index"] = json!(index);
        self.delta(json!({"tool_calls": [call]}), out);
    }

    fn tool_delta(&mut self, item_id: &str, fragment: &str, custom: bool, out: &mut Vec<Out>) {
        let Some((index, streamed)) = self.tools.get_mut(item_id) else {
            return;
        };
        streamed.push_str(fragment);
        let index = *index;
        let call = if custom {
            json!({"index": index, "custom": {"input": fragment}})
        } else {
            json!({"index": index, "function": {"arguments": fragment}})
        };
        self.delta(json!({"tool_calls": [call]}), out);
    }

    fn finish_tool(&mut self, item: &Value, out: &mut Vec<Out>) {
        let Some(item_id) = item.get("id").and_then(Value::as_str) else {
            return;
        };
        let Some(call) = tool_call(item) else {
            return;
        };
        if !self.tools.contains_key(item_id) {
            self.start_tool(item, out);
            return;
        }
        let custom = call.get("type") == Some(&json!("custom"));
        let full = call
            .pointer("/function/arguments")
            .or_else(|| call.pointer("/custom/input"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let streamed = self
            .tools
            .get(item_id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        if let Some(rest) = full.strip_prefix(streamed.as_str())
            && !rest.is_empty()
        {
            let rest = rest.to_owned();
            self.tool_delta(item_id, &rest, custom, out);
        }
    }

    fn error_chunk(code: &str, message: &str) -> Value {
        json!({"error": {"message": message, "type": "server_error", "code": code, "param": null}})
    }

    fn on_event(&mut self, event: &SseEvent) -> Vec<Out> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Some(parsed) = parse_event(event) else {
            return out;
        };
        self.meta.observe(&parsed.value);
        let v = &parsed.value;
        match &parsed.class {
            EventKind::Failed(code) => {
                self.done = true;
                out.push(Out::Chunk(Self::error_chunk(
                    code,
                    "upstream request failed",
                )));
            }
            EventKind::Succeeded => {
                self.done = true;
                let response = v.get("response").cloned().unwrap_or_else(|| v.clone());
                for item in response
                    .get("output")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.finish_tool(item, &mut out);
                }
                self.send_role(&mut out);
                let reason = finish_reason(&response, !self.tools.is_empty());
                let last =
                    json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]);
                out.push(Out::Chunk(self.chunk(last)));
                if self.include_usage {
                    let mut usage = self.chunk(json!([]));
                    usage["usage"] = response
                        .get("usage")
                        .filter(|u| u.is_object())
                        .map(chat_usage)
                        .unwrap_or(Value::Null);
                    out.push(Out::Chunk(usage));
                }
                out.push(Out::Done);
            }
            EventKind::Content | EventKind::Envelope => {
                let item_id = v.get("item_id").and_then(Value::as_str).unwrap_or("");
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or("");
                match parsed.kind_name.as_str() {
                    "response.output_text.delta" if !delta.is_empty() => {
                        self.delta(json!({"content": delta}), &mut out)
                    }
                    "response.refusal.delta" if !delta.is_empty() => {
                        self.delta(json!({"refusal": delta}), &mut out)
                    }
                    "response.output_item.added" => {
                        if let Some(item) = v.get("item") {
                            self.start_tool(item, &mut out);
                        }
                    }
                    "response.function_call_arguments.delta" => {
                        let item_id = item_id.to_owned();
                        self.tool_delta(&item_id, delta, false, &mut out);
                    }
                    "response.custom_tool_call_input.delta" => {
                        let item_id = item_id.to_owned();
                        self.tool_delta(&item_id, delta, true, &mut out);
                    }
                    "response.output_item.done" => {
                        if let Some(item) = v.get("item") {
                            self.finish_tool(item, &mut out);
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn on_end(&mut self) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        vec![Out::Chunk(Self::error_chunk(
            "server_error",
            INTERRUPTED_MESSAGE,
        ))]
    }
}

fn frame(out: &Out) -> Bytes {
    match out {
        Out::Chunk(v) => Bytes::from(format!("data: {v}\n\n")),
        Out::Done => Bytes::from_static(b"data: [DONE]\n\n"),
    }
}

fn chunk_stream(
    events: Events,
    encoder: ChunkEncoder,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = (events, encoder, VecDeque::<Bytes>::new());
    futures_util::stream::unfold(state, |(mut events, mut enc, mut pending)| async move {
        loop {
            if let Some(frame) = pending.pop_front() {
                return Some((Ok(frame), (events, enc, pending)));
            }
            if enc.done {
                events.drain().await;
                return None;
            }
            match events.next().await {
                Some(event) => pending.extend(enc.on_event(&event).iter().map(frame)),
                None => pending.extend(enc.on_end().iter().map(frame)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> SseEvent {
        SseEvent {
            name: None,
            data: v.to_string().into_bytes(),
        }
    }

    #[test]
    fn tool_call_stream_becomes_indexed_deltas() {
        let mut enc = ChunkEncoder::new("m".into(), true);
        let mut all = Vec::new();
        for e in [
            json!({"type": "response.created", "response": {"id": "resp_1", "created_at": 5, "model": "m"}}),
            json!({"type": "response.output_item.added", "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "shell", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{\"a\""}),
            json!({"type": "response.output_item.done", "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"a\":1}"}}),
            json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
                "output": [], "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}}),
        ] {
            all.extend(enc.on_event(&ev(e)));
        }
        let chunks: Vec<&Value> = all
            .iter()
            .filter_map(|o| match o {
                Out::Chunk(v) => Some(v),
                Out::Done => None,
            })
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_1"
        );
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[n - 1]["usage"]["total_tokens"], 5);
        assert_eq!(chunks[n - 1]["choices"], json!([]));
        assert_eq!(all.last(), Some(&Out::Done));
        assert_eq!(chunks[0]["id"], "chatcmpl-resp_1");
    }

    #[test]
    fn an_interrupted_stream_ends_with_one_error_chunk() {
        let mut enc = ChunkEncoder::new("m".into(), false);
        enc.on_event(&ev(
            json!({"type": "response.output_text.delta", "delta": "hi"}),
        ));
        let end = enc.on_end();
        assert_eq!(end.len(), 1);
        match &end[0] {
            Out::Chunk(v) => assert_eq!(v["error"]["code"], "server_error"),
            Out::Done => panic!("no [DONE] after an interruption"),
        }
        assert!(enc.on_end().is_empty());
    }
}
