//! Classifying upstream stream events: which are terminal, and whether a terminal
//! is a success or a (sanitized) failure. Follows the reference's rules for
//! `response.incomplete`: max-tokens and content-filter stops are successes.

use serde_json::Value;

/// Incomplete reasons and error codes that make a terminal a failure.
const FAILURE_CODES: &[&str] = &[
    "upstream_request_timeout",
    "stream_incomplete",
    "server_error",
    "overloaded_error",
    "server_is_overloaded",
    "websocket_connection_limit_reached",
    "invalid_api_key",
    "invalid_authentication",
    "context_length_exceeded",
    "insufficient_quota",
    "invalid_previous_response_id",
    "invalid_request",
    "invalid_request_error",
    "previous_response_not_found",
    "rate_limit_exceeded",
    "unauthorized",
    "usage_limit_exceeded",
    "usage_limit_reached",
    "workspace_member_credits_depleted",
    "workspace_member_usage_limit_reached",
    "workspace_owner_credits_depleted",
    "workspace_owner_usage_limit_reached",
];

/// First-event failure codes that may be retried on another account, provided
/// nothing was delivered to the client yet.
const RETRYABLE_FIRST_EVENT_CODES: &[&str] = &[
    "upstream_request_timeout",
    "stream_incomplete",
    "server_error",
    "overloaded_error",
    "server_is_overloaded",
    "websocket_connection_limit_reached",
];

/// What one parsed event means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Lifecycle envelope with no visible content (`response.created`, …).
    Envelope,
    /// Anything that carries or commits content.
    Content,
    /// A successful terminal; the value is the `response` object if present.
    Succeeded,
    /// A failed terminal with its sanitized code.
    Failed(String),
}

/// Keeps an upstream code only when it is a plain short token.
pub fn sanitize_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 80
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        code.to_ascii_lowercase()
    } else {
        "upstream_error".to_owned()
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn error_code(event: &Value) -> Option<&str> {
    str_at(event, &["response", "error", "code"])
        .or_else(|| str_at(event, &["response", "error", "type"]))
        .or_else(|| str_at(event, &["error", "code"]))
        .or_else(|| str_at(event, &["error", "type"]))
        .or_else(|| str_at(event, &["response", "status_details", "error", "code"]))
        .or_else(|| str_at(event, &["code"]))
}

/// Classifies one decoded event (the JSON of a `data:` line).
pub fn classify_event(event: &Value) -> EventKind {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "response.completed" | "response.done" => match str_at(event, &["response", "status"]) {
            None | Some("completed") => EventKind::Succeeded,
            Some(other) => EventKind::Failed(sanitize_code(other)),
        },
        "response.incomplete" => classify_incomplete(event),
        "response.failed" => EventKind::Failed(
            error_code(event).map_or_else(|| "response.failed".to_owned(), sanitize_code),
        ),
        "error" => EventKind::Failed(
            error_code(event).map_or_else(|| "upstream_error".to_owned(), sanitize_code),
        ),
        "response.created"
        | "response.in_progress"
        | "response.queued"
        | "codex.rate_limits"
        | "response.metadata"
        | "codex.response.metadata"
        | "response.output_item.added"
        | "response.content_part.added"
        | "response.reasoning_summary_part.added"
        | "responsesapi.websocket_timing" => EventKind::Envelope,
        "" => {
            if event.get("detail").is_some() {
                EventKind::Failed("upstream_terminal_failure".to_owned())
            } else if event.get("id").is_some() && event.get("output").is_some() {
                EventKind::Succeeded
            } else {
                EventKind::Content
            }
        }
        _ => EventKind::Content,
    }
}

fn classify_incomplete(event: &Value) -> EventKind {
    let explicit_error = event
        .pointer("/response/error")
        .is_some_and(|e| !e.is_null())
        || event.get("error").is_some_and(|e| !e.is_null())
        || event
            .pointer("/response/status_details/error")
            .is_some_and(|e| !e.is_null());
    let reason = str_at(event, &["response", "incomplete_details", "reason"])
        .or_else(|| str_at(event, &["incomplete_details", "reason"]));
    let code = error_code(event).or(reason);
    let failing_reason = reason.is_some_and(|r| FAILURE_CODES.contains(&r));
    let failing_code = code.is_some_and(|c| FAILURE_CODES.contains(&c));
    if explicit_error || failing_reason || failing_code {
        EventKind::Failed(code.map_or_else(|| "response.incomplete".to_owned(), sanitize_code))
    } else {
        EventKind::Succeeded
    }
}

/// Whether a failed first event may be retried on another account.
pub fn is_retryable_first_event_code(code: &str) -> bool {
    RETRYABLE_FIRST_EVENT_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn incomplete_for_max_tokens_or_content_filter_is_success() {
        for reason in ["max_output_tokens", "content_filter"] {
            let e = json!({"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":reason}}});
            assert_eq!(classify_event(&e), EventKind::Succeeded, "{reason}");
        }
    }

    #[test]
    fn error_coded_incomplete_is_failure() {
        let e = json!({"type":"response.incomplete","response":{"incomplete_details":{"reason":"context_length_exceeded"}}});
        assert_eq!(
            classify_event(&e),
            EventKind::Failed("context_length_exceeded".into())
        );
        let e = json!({"type":"response.incomplete","response":{"error":{"code":"server_error"},"incomplete_details":{"reason":"max_output_tokens"}}});
        assert_eq!(classify_event(&e), EventKind::Failed("server_error".into()));
    }

    #[test]
    fn failures_and_errors_carry_sanitized_codes() {
        let e = json!({"type":"response.failed","response":{"error":{"code":"rate_limit_exceeded","message":"x"}}});
        assert_eq!(
            classify_event(&e),
            EventKind::Failed("rate_limit_exceeded".into())
        );
        let e = json!({"type":"error","code":"server_error","message":"boom"});
        assert_eq!(classify_event(&e), EventKind::Failed("server_error".into()));
        let e = json!({"type":"error","error":{"type":"server_error","code":"has spaces!","message":"m"}});
        assert_eq!(
            classify_event(&e),
            EventKind::Failed("upstream_error".into())
        );
    }

    #[test]
    fn legacy_terminals_are_successes() {
        assert_eq!(
            classify_event(&json!({"type":"response.done","response":{}})),
            EventKind::Succeeded
        );
        assert_eq!(
            classify_event(&json!({"id":"resp_1","output":[]})),
            EventKind::Succeeded
        );
        assert_eq!(
            classify_event(&json!({"type":"response.created"})),
            EventKind::Envelope
        );
        assert_eq!(
            classify_event(&json!({"type":"response.output_text.delta"})),
            EventKind::Content
        );
    }
}
