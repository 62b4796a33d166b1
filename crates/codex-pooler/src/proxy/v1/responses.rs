//! `POST /v1/responses`: admission, translation, dispatch, then the upstream
//! events re-encoded for OpenAI clients — relayed as public SSE (success
//! terminals normalised to `response.completed`, failures sanitised, one
//! synthetic `error` when the stream dies without a terminal) or collected
//! into the terminal `response` object. Also home of the event collector the
//! Chat surface shares.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Events;
use super::translate;
use crate::domain::classify::{EventKind, classify_event, sanitize_code};
use crate::proxy::sse::SseEvent;
use crate::runtime::Runtime;
use crate::time::now_secs;

const ENDPOINT: &str = "/v1/responses";

/// Message of the synthetic error that ends a stream cut short.
pub(crate) const INTERRUPTED_MESSAGE: &str =
    "upstream request failed: stream interrupted before terminal response event";

pub async fn handle(rt: Arc<Runtime>, headers: HeaderMap, body: Body) -> Response {
    let (request, events) = match super::translate_and_dispatch(
        rt,
        headers,
        body,
        ENDPOINT,
        translate::responses_request,
    )
    .await
    {
        Ok(pair) => pair,
        Err(response) => return response,
    };
    if request.stream {
        sse_response(public_stream(Events::new(events)))
    } else {
        json_answer(Events::new(events)).await
    }
}

/// A `text/event-stream` response over an encoded body.
pub(crate) fn sse_response(
    body: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// The parsed view of one upstream event.
pub(crate) struct Parsed {
    pub kind_name: String,
    pub value: Value,
    pub class: EventKind,
}

/// Parses an upstream event; `None` for `[DONE]` and undecodable data.
/// Typeless success payloads become `response.completed`; `response.done`
/// is renamed `response.completed`.
pub(crate) fn parse_event(event: &SseEvent) -> Option<Parsed> {
    if event.data.as_slice() == b"[DONE]" {
        return None;
    }
    let mut value: Value = serde_json::from_slice(&event.data).ok()?;
    let obj = value.as_object_mut()?;
    let mut kind_name = obj
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| event.name.clone().filter(|n| !n.is_empty()))
        .unwrap_or_default();
    if !obj.contains_key("type") && !kind_name.is_empty() {
        obj.insert("type".into(), json!(kind_name));
    }
    let mut class = classify_event(&value);
    if kind_name.is_empty() && class == EventKind::Succeeded {
        value = json!({"type": "response.completed", "response": value});
        kind_name = "response.completed".into();
    }
    if kind_name == "response.done" {
        kind_name = "response.completed".into();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("type".into(), json!("response.completed"));
            if let Some(resp) = obj.get_mut("response").and_then(Value::as_object_mut)
                && !resp.contains_key("status")
            {
                resp.insert("status".into(), json!("completed"));
            }
        }
    }
    if matches!(class, EventKind::Failed(_)) && kind_name == "response.completed" {
        // A "completed" with a non-completed status is a failure: keep the class.
    } else if kind_name.is_empty() {
        class = EventKind::Content;
    }
    Some(Parsed {
        kind_name,
        value,
        class,
    })
}

/// Whether a public response id can be echoed.
fn valid_response_id(id: &str) -> bool {
    id.starts_with("resp_")
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A sanitised `response.failed` envelope built from a whitelist.
fn failed_event(code: &str, upstream: &Value, seen: &ResponseMeta) -> Value {
    let response = upstream.get("response").unwrap_or(upstream);
    let id = response
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_response_id(id))
        .or(seen.id.as_deref().filter(|id| valid_response_id(id)))
        .unwrap_or("resp_failed");
    json!({"type": "response.failed", "response": {
        "id": id, "object": "response",
        "created_at": seen.created_at.unwrap_or_else(now_secs),
        "status": "failed",
        "model": seen.model.clone(),
        "output": [], "tools": [], "instructions": null, "text": null,
        "incomplete_details": null, "usage": null,
        "error": {"code": code, "message": "upstream request failed"},
    }})
}

/// The flat + nested public `error` event.
pub(crate) fn error_event(code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message, "param": null,
        "error": {"type": "server_error", "code": code, "message": message, "param": null}})
}

/// Identity of the response as seen on the first envelopes.
#[derive(Debug, Default, Clone)]
pub(crate) struct ResponseMeta {
    pub id: Option<String>,
    pub created_at: Option<i64>,
    pub model: Option<String>,
}

impl ResponseMeta {
    pub fn observe(&mut self, value: &Value) {
        let Some(resp) = value.get("response") else {
            return;
        };
        if self.id.is_none() {
            self.id = resp.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        if self.created_at.is_none() {
            self.created_at = resp.get("created_at").and_then(Value::as_i64);
        }
        if self.model.is_none() {
            self.model = resp.get("model").and_then(Value::as_str).map(str::to_owned);
        }
    }
}

/// Re-encodes upstream events as public Responses events.
#[derive(Debug, Default)]
pub(crate) struct PublicEncoder {
    sequence: u64,
    pub done: bool,
    meta: ResponseMeta,
}

impl PublicEncoder {
    fn stamp(&mut self, mut value: Value) -> Value {
        if let Some(obj) = value.as_object_mut() {
            obj.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        value
    }

    /// The public events for one upstream event.
    pub fn on_event(&mut self, event: &SseEvent) -> Vec<Value> {
        if self.done {
            return Vec::new();
        }
        let Some(parsed) = parse_event(event) else {
            return Vec::new();
        };
        self.meta.observe(&parsed.value);
        let out = match &parsed.class {
            EventKind::Failed(code) => {
                self.done = true;
                if parsed.kind_name == "error" {
                    error_event(code, "upstream request failed")
                } else {
                    failed_event(code, &parsed.value, &self.meta)
                }
            }
            EventKind::Succeeded => {
                self.done = true;
                parsed.value
            }
            EventKind::Content | EventKind::Envelope => parsed.value,
        };
        vec![self.stamp(out)]
    }

    /// What to send when the upstream stops without a terminal.
    pub fn on_end(&mut self) -> Option<Value> {
        if self.done {
            return None;
        }
        self.done = true;
        let event = error_event("server_error", INTERRUPTED_MESSAGE);
        Some(self.stamp(event))
    }
}

fn sse_frame(value: &Value) -> Bytes {
    let name = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// The public SSE body over the upstream events.
fn public_stream(
    events: Events,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = (events, PublicEncoder::default(), VecDeque::<Bytes>::new());
    futures_util::stream::unfold(state, |(mut events, mut enc, mut pending)| async move {
        loop {
            if let Some(frame) = pending.pop_front() {
                return Some((Ok(frame), (events, enc, pending)));
            }
            if enc.done {
                // Drain the upstream so the request is finalised as it ended.
                events.drain().await;
                return None;
            }
            match events.next().await {
                Some(event) => pending.extend(enc.on_event(&event).iter().map(sse_frame)),
                None => pending.extend(enc.on_end().iter().map(sse_frame)),
            }
        }
    })
}

/// What a whole upstream stream amounted to.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub meta: ResponseMeta,
    /// The terminal `response` object of a successful stream, `output`
    /// back-filled.
    pub response: Option<Value>,
    /// The sanitised code of a failed stream (or of one that never finished).
    pub failure: Option<String>,
}

/// Reads the upstream events to the end and keeps the terminal.
pub(crate) async fn collect(mut events: Events) -> Collected {
    let mut out = Collected::default();
    let mut items: Vec<Value> = Vec::new();
    let mut text = String::new();
    while let Some(event) = events.next().await {
        let Some(parsed) = parse_event(&event) else {
            continue;
        };
        out.meta.observe(&parsed.value);
        match parsed.class {
            EventKind::Succeeded => {
                let mut response = parsed
                    .value
                    .get("response")
                    .cloned()
                    .unwrap_or(parsed.value);
                backfill_output(&mut response, &items, &text);
                out.response = Some(response);
                break;
            }
            EventKind::Failed(code) => {
                out.failure = Some(code);
                break;
            }
            _ => match parsed.kind_name.as_str() {
                "response.output_item.done" => {
                    if let Some(item) = parsed.value.get("item") {
                        items.push(item.clone());
                    }
                }
                "response.output_text.delta" => {
                    if let Some(d) = parsed.value.get("delta").and_then(Value::as_str) {
                        text.push_str(d);
                    }
                }
                _ => {}
            },
        }
    }
    // Let the pipeline see the end of the stream before answering.
    events.drain().await;
    if out.response.is_none() && out.failure.is_none() {
        out.failure = Some("upstream_stream_error".into());
    }
    out
}

fn backfill_output(response: &mut Value, items: &[Value], text: &str) {
    let empty = response
        .get("output")
        .and_then(Value::as_array)
        .is_none_or(|o| o.is_empty());
    let Some(obj) = response.as_object_mut() else {
        return;
    };
    if empty {
        let output = if !items.is_empty() {
            Value::Array(items.to_vec())
        } else if !text.is_empty() {
            json!([{"type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        } else {
            json!([])
        };
        obj.insert("output".into(), output);
    }
    obj.entry("object").or_insert_with(|| json!("response"));
}

/// The sanitised HTTP error for a failed non-streaming answer.
pub(crate) fn failure_response(code: &str) -> Response {
    let code = sanitize_code(code);
    (
        super::status_for_code(&code),
        axum::Json(super::upstream_error_body(&code)),
    )
        .into_response()
}

async fn json_answer(events: Events) -> Response {
    let collected = collect(events).await;
    match (collected.response, collected.failure) {
        (Some(response), _) => (StatusCode::OK, axum::Json(response)).into_response(),
        (None, Some(code)) => failure_response(&code),
        (None, None) => failure_response("upstream_stream_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> SseEvent {
        SseEvent {
            name: v.get("type").and_then(Value::as_str).map(str::to_owned),
            data: v.to_string().into_bytes(),
        }
    }

    #[test]
    fn done_is_renamed_and_failures_are_sanitised() {
        let mut enc = PublicEncoder::default();
        let out = enc.on_event(&ev(json!({"type": "response.done",
            "response": {"id": "resp_1", "output": []}})));
        assert_eq!(out[0]["type"], "response.completed");
        assert_eq!(out[0]["sequence_number"], 0);
        assert!(out[0].get("error").is_none());
        assert!(enc.on_end().is_none());

        let mut enc = PublicEncoder::default();
        let out = enc.on_event(&ev(json!({"type": "response.failed",
            "response": {"id": "bad id!", "error": {"code": "weird code!", "message": "secret"}}})));
        assert_eq!(out[0]["type"], "response.failed");
        assert_eq!(out[0]["response"]["id"], "resp_failed");
        assert_eq!(out[0]["response"]["error"]["code"], "upstream_error");
        assert_eq!(
            out[0]["response"]["error"]["message"],
            "upstream request failed"
        );
    }

    #[test]
    fn a_stream_cut_after_output_ends_with_one_error() {
        let mut enc = PublicEncoder::default();
        enc.on_event(&ev(
            json!({"type": "response.output_text.delta", "delta": "x"}),
        ));
        let end = enc.on_end().expect("synthetic error");
        assert_eq!(end["type"], "error");
        assert_eq!(end["code"], "server_error");
        assert_eq!(end["error"]["code"], "server_error");
        assert_eq!(end["message"], INTERRUPTED_MESSAGE);
        assert_eq!(end["sequence_number"], 1);
        assert!(enc.on_end().is_none());
    }
}
