//! The side reader of an upstream stream (`StreamObserver`) and the relay that
//! forwards upstream bytes to the client untouched while the observer watches
//! for usage and the terminal event. The relay owns a `Finisher`: whatever way
//! the stream ends (terminal, truncation, idle timeout, client gone) the
//! request is finalised exactly once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::sse::{SseEvent, SseReader, event_type};
use crate::domain::classify::{EventKind, classify_event};
use crate::domain::pricing::TokenUsage;
use crate::domain::usage::parse_usage;
use crate::runtime::Runtime;
use crate::store::{AttemptEnd, QuotaObservation, RecordEvent, RequestEnd, Settlement};
use crate::time::now_ms;

/// Largest single event the side reader buffers (a terminal event can carry the
/// whole response).
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

pub type UpstreamStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// What the side reader learned from the events so far.
#[derive(Debug, Default)]
pub struct StreamObserver {
    aggregate: bool,
    pub events_seen: u64,
    /// The first event that is not a lifecycle envelope: content or a terminal.
    pub first_decisive: Option<EventKind>,
    pub terminal: Option<EventKind>,
    pub terminal_response: Option<Value>,
    pub usage: Option<TokenUsage>,
    pub actual_tier: Option<String>,
    pub output_items: Vec<Value>,
    pub text: String,
}

fn classify_by_name(name: &str) -> Option<EventKind> {
    match name {
        "response.created"
        | "response.in_progress"
        | "response.queued"
        | "codex.rate_limits"
        | "response.metadata"
        | "codex.response.metadata"
        | "response.output_item.added"
        | "response.content_part.added"
        | "response.reasoning_summary_part.added"
        | "responsesapi.websocket_timing" => Some(EventKind::Envelope),
        "response.completed"
        | "response.done"
        | "response.incomplete"
        | "response.failed"
        | "error" => None,
        _ => Some(EventKind::Content),
    }
}

impl StreamObserver {
    /// `aggregate` keeps finished output items for a non-streaming answer.
    pub fn new(aggregate: bool) -> Self {
        StreamObserver {
            aggregate,
            ..Default::default()
        }
    }

    pub fn on_event(&mut self, event: &SseEvent) {
        self.events_seen += 1;
        if event.data.as_slice() == b"[DONE]" {
            return;
        }
        let name = event_type(event);
        let kind = match name.as_deref().and_then(classify_by_name) {
            Some(kind) => {
                if self.aggregate {
                    self.collect(name.as_deref().unwrap_or(""), &event.data);
                }
                kind
            }
            None => {
                let Ok(value) = serde_json::from_slice::<Value>(&event.data) else {
                    return;
                };
                let kind = classify_event(&value);
                if matches!(kind, EventKind::Succeeded | EventKind::Failed(_))
                    && self.terminal.is_none()
                {
                    let response = value
                        .get("response")
                        .cloned()
                        .unwrap_or_else(|| value.clone());
                    if let Some(usage) = response.get("usage").and_then(parse_usage) {
                        self.usage = Some(usage);
                    }
                    self.actual_tier = response
                        .get("service_tier")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    self.terminal = Some(kind.clone());
                    if self.aggregate {
                        self.terminal_response = Some(response);
                    }
                }
                kind
            }
        };
        if self.first_decisive.is_none() && kind != EventKind::Envelope {
            self.first_decisive = Some(kind.clone());
        }
    }

    fn collect(&mut self, name: &str, data: &[u8]) {
        match name {
            "response.output_item.done" => {
                if let Ok(v) = serde_json::from_slice::<Value>(data)
                    && let Some(item) = v.get("item")
                {
                    self.output_items.push(item.clone());
                }
            }
            "response.output_text.delta" => {
                if let Ok(v) = serde_json::from_slice::<Value>(data)
                    && let Some(delta) = v.get("delta").and_then(Value::as_str)
                {
                    self.text.push_str(delta);
                }
            }
            _ => {}
        }
    }

    /// The non-streaming answer: the terminal `response` object with `output`
    /// back-filled from the finished items (or the text deltas) when empty.
    pub fn aggregated_response(&self) -> Option<Value> {
        let mut response = self.terminal_response.clone()?;
        let empty = response
            .get("output")
            .and_then(Value::as_array)
            .is_none_or(|o| o.is_empty());
        if empty && let Some(obj) = response.as_object_mut() {
            let output = if !self.output_items.is_empty() {
                Value::Array(self.output_items.clone())
            } else if !self.text.is_empty() {
                serde_json::json!([{"type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": self.text, "annotations": []}]}])
            } else {
                Value::Array(Vec::new())
            };
            obj.insert("output".into(), output);
        }
        Some(response)
    }
}

/// How a request ended, for the finaliser.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub succeeded: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub response_status_code: i64,
    pub upstream_status_code: Option<i64>,
    pub usage: Option<TokenUsage>,
    pub actual_tier: Option<String>,
}

impl Outcome {
    /// The outcome implied by what the observer saw when the stream ended.
    pub fn from_observer(obs: &StreamObserver, ended: StreamEnd) -> Outcome {
        let base = Outcome {
            succeeded: false,
            error_code: None,
            error_message: None,
            response_status_code: 200,
            upstream_status_code: Some(200),
            usage: obs.usage,
            actual_tier: obs.actual_tier.clone(),
        };
        match (&obs.terminal, ended) {
            (Some(EventKind::Succeeded), _) => Outcome {
                succeeded: true,
                ..base
            },
            (Some(EventKind::Failed(code)), _) => Outcome {
                error_code: Some(code.clone()),
                error_message: Some("upstream stream ended with a failed terminal event".into()),
                ..base
            },
            (_, StreamEnd::ClientGone) => Outcome {
                error_code: Some("client_disconnected".into()),
                error_message: Some("client disconnected while writing downstream stream".into()),
                response_status_code: 499,
                ..base
            },
            (_, StreamEnd::IdleTimeout) => Outcome {
                error_code: Some("stream_idle_timeout".into()),
                error_message: Some("upstream stream idle timeout".into()),
                ..base
            },
            (_, StreamEnd::UpstreamError | StreamEnd::Eof) => Outcome {
                error_code: Some("upstream_stream_error".into()),
                error_message: Some("upstream stream ended before a terminal event".into()),
                ..base
            },
        }
    }
}

/// How the byte stream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Eof,
    UpstreamError,
    IdleTimeout,
    ClientGone,
}

/// Everything needed to finalise a request once.
pub struct Finisher {
    pub rt: Arc<Runtime>,
    pub request_id: String,
    pub route: &'static str,
    pub model: String,
    pub requested_tier: Option<String>,
    pub attempt_id: String,
    pub identity_id: String,
    pub retry_count: i64,
    pub started: Instant,
    pub routing_ms: i64,
    pub attempt_started: Instant,
    pub first_byte_ms: Option<i64>,
    pub upstream_request_id: Option<String>,
    pub quota: Vec<QuotaObservation>,
    done: bool,
}

impl Finisher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: Arc<Runtime>,
        request_id: String,
        route: &'static str,
        model: String,
        requested_tier: Option<String>,
        attempt_id: String,
        identity_id: String,
        retry_count: i64,
        started: Instant,
        routing_ms: i64,
        attempt_started: Instant,
    ) -> Self {
        Finisher {
            rt,
            request_id,
            route,
            model,
            requested_tier,
            attempt_id,
            identity_id,
            retry_count,
            started,
            routing_ms,
            attempt_started,
            first_byte_ms: None,
            upstream_request_id: None,
            quota: Vec::new(),
            done: false,
        }
    }

    fn events(&mut self, outcome: &Outcome) -> [RecordEvent; 2] {
        self.done = true;
        let now = now_ms();
        let upstream_ms = self.attempt_started.elapsed().as_millis() as i64;
        let total_ms = self.started.elapsed().as_millis() as i64;
        let settlement = settle(
            &self.rt,
            &self.model,
            self.requested_tier.as_deref(),
            outcome,
        );
        crate::ops::record_outcome(
            self.route,
            if outcome.succeeded {
                "succeeded"
            } else {
                "failed"
            },
            Some((total_ms, total_ms.saturating_sub(upstream_ms))),
        );
        [
            RecordEvent::AttemptEnded(Box::new(AttemptEnd {
                id: self.attempt_id.clone(),
                status: if outcome.succeeded {
                    "succeeded"
                } else {
                    "failed"
                },
                upstream_status_code: outcome.upstream_status_code,
                retryable: false,
                error_code: outcome.error_code.clone(),
                error_message: outcome.error_message.clone(),
                upstream_request_id: self.upstream_request_id.clone(),
                completed_at: now,
                latency_ms: upstream_ms,
            })),
            RecordEvent::RequestEnded(Box::new(RequestEnd {
                request_id: self.request_id.clone(),
                status: if outcome.succeeded {
                    "succeeded"
                } else {
                    "failed"
                },
                response_status_code: Some(outcome.response_status_code),
                retry_count: self.retry_count,
                last_error_code: outcome.error_code.clone(),
                completed_at: now,
                routing_ms: Some(self.routing_ms),
                upstream_ms: Some(upstream_ms),
                first_byte_ms: self.first_byte_ms,
                total_ms,
                settlement,
                metadata_patch: None,
            })),
        ]
    }

    /// Ends this finisher without finalising the request (the attempt ended
    /// retryably and another attempt takes over).
    pub fn disarm(mut self) {
        self.done = true;
    }

    /// Finalises from async code.
    pub async fn finish(mut self, outcome: Outcome) {
        let quota = std::mem::take(&mut self.quota);
        for q in quota {
            self.rt.recorder.send(RecordEvent::Quota(Box::new(q))).await;
        }
        for event in self.events(&outcome) {
            self.rt.recorder.send(event).await;
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped without an outcome: the client went away mid-stream.
        let outcome = Outcome {
            succeeded: false,
            error_code: Some("client_disconnected".into()),
            error_message: Some("client disconnected while writing downstream stream".into()),
            response_status_code: 499,
            upstream_status_code: Some(200),
            usage: None,
            actual_tier: None,
        };
        for q in std::mem::take(&mut self.quota) {
            self.rt.recorder.send_now(RecordEvent::Quota(Box::new(q)));
        }
        for event in self.events(&outcome) {
            self.rt.recorder.send_now(event);
        }
    }
}

/// Prices settled usage. No usage means `usage_unknown` and no cost.
pub fn settle(
    rt: &Runtime,
    model: &str,
    requested_tier: Option<&str>,
    outcome: &Outcome,
) -> Settlement {
    let Some(usage) = outcome.usage else {
        return Settlement {
            usage_status: "usage_unknown",
            ..Default::default()
        };
    };
    let prices = rt.prices();
    let priced = prices.price(
        model,
        requested_tier,
        outcome.actual_tier.as_deref(),
        &usage,
    );
    let positive = |v: i64| (v > 0).then_some(v);
    Settlement {
        usage_status: "usage_known",
        input_tokens: positive(usage.input),
        cached_input_tokens: Some(usage.cached_input),
        output_tokens: positive(usage.output),
        reasoning_tokens: Some(usage.reasoning),
        total_tokens: positive(usage.total),
        settled_cost_micros: priced.cost_micros,
        pricing_status: Some(priced.status.as_str().to_owned()),
        actual_service_tier: outcome.actual_tier.clone(),
        pricing_version: prices.snapshot_version,
    }
}

struct RelayState {
    upstream: UpstreamStream,
    buffered: std::collections::VecDeque<Bytes>,
    reader: SseReader,
    observer: StreamObserver,
    finisher: Option<Finisher>,
    idle: Duration,
}

/// The client-facing body: the buffered pre-commit chunks, then the rest of
/// the upstream stream, each chunk forwarded as received.
pub fn relay_stream(
    upstream: UpstreamStream,
    buffered: Vec<Bytes>,
    reader: SseReader,
    observer: StreamObserver,
    finisher: Finisher,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = RelayState {
        upstream,
        buffered: buffered.into(),
        reader,
        observer,
        finisher: Some(finisher),
        idle,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if let Some(chunk) = state.buffered.pop_front() {
            return Some((Ok(chunk), state));
        }
        state.finisher.as_ref()?;
        let end = match tokio::time::timeout(state.idle, state.upstream.next()).await {
            Ok(Some(Ok(chunk))) => {
                let observer = &mut state.observer;
                state.reader.feed(&chunk, &mut |e| observer.on_event(&e));
                return Some((Ok(chunk), state));
            }
            Ok(Some(Err(_))) => StreamEnd::UpstreamError,
            Ok(None) => StreamEnd::Eof,
            Err(_) => StreamEnd::IdleTimeout,
        };
        if let Some(finisher) = state.finisher.take() {
            finisher
                .finish(Outcome::from_observer(&state.observer, end))
                .await;
        }
        None
    })
}

/// Upstream events after commit, for surfaces that re-encode them. The stream
/// ends after the terminal event or when the upstream stops; the request is
/// finalised either way (or as `client_disconnected` if this is dropped first).
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = SseEvent> + Send>>,
}

impl EventStream {
    /// The next event, or `None` at the end.
    pub async fn next(&mut self) -> Option<SseEvent> {
        self.inner.next().await
    }

    /// Adapts to a `Stream` of events.
    pub fn into_stream(self) -> Pin<Box<dyn Stream<Item = SseEvent> + Send>> {
        self.inner
    }
}

struct EventState {
    upstream: UpstreamStream,
    pending: std::collections::VecDeque<SseEvent>,
    reader: SseReader,
    observer: StreamObserver,
    finisher: Option<Finisher>,
    idle: Duration,
    ended: Option<StreamEnd>,
}

/// Builds the event stream from the pre-commit state.
pub fn event_stream(
    upstream: UpstreamStream,
    buffered: Vec<Bytes>,
    _reader_used: SseReader,
    observer: StreamObserver,
    finisher: Finisher,
    idle: Duration,
    ended: Option<StreamEnd>,
) -> EventStream {
    // Re-parse the held chunks for the caller; the observer already saw them.
    let mut replay = SseReader::new(MAX_EVENT_BYTES);
    let mut pending = std::collections::VecDeque::new();
    for chunk in &buffered {
        replay.feed(chunk, &mut |e| pending.push_back(e));
    }
    let state = EventState {
        upstream,
        pending,
        reader: replay,
        observer,
        finisher: Some(finisher),
        idle,
        ended,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((event, state));
            }
            state.finisher.as_ref()?;
            let end = match state.ended {
                Some(end) => end,
                None => match tokio::time::timeout(state.idle, state.upstream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        let observer = &mut state.observer;
                        let pending = &mut state.pending;
                        state.reader.feed(&chunk, &mut |e| {
                            observer.on_event(&e);
                            pending.push_back(e);
                        });
                        continue;
                    }
                    Ok(Some(Err(_))) => StreamEnd::UpstreamError,
                    Ok(None) => StreamEnd::Eof,
                    Err(_) => StreamEnd::IdleTimeout,
                },
            };
            if let Some(finisher) = state.finisher.take() {
                finisher
                    .finish(Outcome::from_observer(&state.observer, end))
                    .await;
            }
            return None;
        }
    });
    EventStream {
        inner: Box::pin(stream),
    }
}
