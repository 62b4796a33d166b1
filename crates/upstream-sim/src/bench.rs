//! Bench mode: `/responses` answers with canned bytes built once at start. The hot
//! path does one hash-map lookup for the bearer token and clones `Bytes`; there is
//! no per-request JSON building and no recording.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::config::BenchProfile;
use crate::engine;
use crate::http::AppState;
use crate::script;

/// Pre-built answers shared by every bench-mode simulator in the process.
pub(crate) struct Canned {
    /// The InstantJson / Fixed60ms SSE body.
    pub instant: Bytes,
    /// The same events as websocket frames.
    pub frames: Vec<Utf8Bytes>,
    /// SseShort: first event, 20 × 512 B events, completed.
    pub short_first: Bytes,
    pub short_chunk: Bytes,
    pub completed: Bytes,
    /// SseLarge: one 64 KiB event.
    pub large_chunk: Bytes,
    pub unauthorized: Bytes,
}

static CANNED: OnceLock<Canned> = OnceLock::new();

fn response(status: &str, output: Value, usage: Value) -> Value {
    json!({"id": "resp_bench", "object": "response", "created_at": 1_767_000_000, "status": status,
           "model": "gpt-5.5", "output": output, "usage": usage, "error": null, "incomplete_details": null})
}

fn sized_delta(target: usize) -> String {
    let overhead = script::sse_event(
        &json!({"type": "response.output_text.delta", "item_id": "msg_bench",
        "output_index": 0, "content_index": 0, "delta": "", "logprobs": []}),
    )
    .len();
    let n = target.saturating_sub(overhead);
    let text: String = "bench ".chars().cycle().take(n).collect();
    script::sse_event(
        &json!({"type": "response.output_text.delta", "item_id": "msg_bench",
        "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
    )
}

fn build() -> Canned {
    let usage = json!({"input_tokens": 120, "input_tokens_details": {"cached_tokens": 64},
                       "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 129});
    let item = json!({"id": "msg_bench", "type": "message", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": script::TEXT_SCENARIO_ANSWER, "annotations": []}]});
    let events = [
        json!({"type": "response.created", "sequence_number": 0,
               "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
               "item": {"id": "msg_bench", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_bench",
               "output_index": 0, "content_index": 0, "delta": script::TEXT_SCENARIO_ANSWER, "logprobs": []}),
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item}),
        json!({"type": "response.completed", "sequence_number": 4,
               "response": response("completed", json!([item]), usage.clone())}),
    ];
    let instant: String = events.iter().map(script::sse_event).collect();
    let frames = events
        .iter()
        .map(|e| Utf8Bytes::from(e.to_string()))
        .collect();
    let completed = script::sse_event(&json!({"type": "response.completed", "sequence_number": 99,
        "response": response("completed", json!([item]), usage)}));
    Canned {
        instant: Bytes::from(instant),
        frames,
        short_first: Bytes::from(script::sse_event(&events[0])),
        short_chunk: Bytes::from(sized_delta(512)),
        completed: Bytes::from(completed),
        large_chunk: Bytes::from(sized_delta(64 * 1024)),
        unauthorized: Bytes::from_static(
            br#"{"error":{"message":"Incorrect API key provided (bench).","type":"invalid_request_error","code":"invalid_api_key","param":null}}"#,
        ),
    }
}

pub(crate) fn canned() -> &'static Canned {
    CANNED.get_or_init(build)
}

/// Websocket frames answered per `response.create` in bench mode.
pub(crate) fn ws_frames() -> &'static [Utf8Bytes] {
    &canned().frames
}

fn sse(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert("x-request-id", HeaderValue::from_static("sim-bench"));
    h.insert("openai-model", HeaderValue::from_static("gpt-5.5"));
    h.insert(
        "x-codex-primary-used-percent",
        HeaderValue::from_static("1"),
    );
    r
}

pub(crate) async fn responses(State(shared): State<AppState>, req: Request) -> Response {
    let c = canned();
    let authorized =
        engine::bearer(req.headers()).is_some_and(|t| shared.lock().access.contains_key(t));
    // Drain the body so the connection can be reused.
    let _ = axum::body::to_bytes(req.into_body(), crate::http::BODY_LIMIT).await;
    if !authorized {
        let mut r = Response::new(Body::from(c.unauthorized.clone()));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    match shared.config.bench {
        Some(BenchProfile::Fixed60ms) => {
            tokio::time::sleep(Duration::from_millis(60)).await;
            sse(Body::from(c.instant.clone()))
        }
        Some(BenchProfile::SseShort) => {
            let stream = futures_util::stream::unfold(0u32, move |i| async move {
                let chunk = match i {
                    0 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        c.short_first.clone()
                    }
                    1..=20 => {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        c.short_chunk.clone()
                    }
                    21 => c.completed.clone(),
                    _ => return None,
                };
                Some((Ok::<_, std::io::Error>(chunk), i + 1))
            });
            sse(Body::from_stream(stream))
        }
        Some(BenchProfile::SseLarge) => {
            let chunks = std::iter::repeat_n(c.large_chunk.clone(), 50)
                .chain(std::iter::once(c.completed.clone()))
                .map(Ok::<_, std::io::Error>);
            sse(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        _ => sse(Body::from(c.instant.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_sizes_match_the_profiles() {
        let c = canned();
        assert!(
            (1200..=1700).contains(&c.instant.len()),
            "instant body is {} bytes",
            c.instant.len()
        );
        assert_eq!(c.short_chunk.len(), 512);
        assert_eq!(c.large_chunk.len(), 64 * 1024);
    }
}
