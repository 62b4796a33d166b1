//! The scenario catalogue (§8.4): names, parsing and classification.
//!
//! What a scenario *sends* lives in [`crate::script`]; this module only knows which
//! scenarios exist and how their names are spelled.

use std::fmt;

/// Codes accepted by `failed_first:<code>` / `failed_after_content:<code>`.
pub const FAILURE_CODES: &[&str] = &[
    "server_error",
    "rate_limit_exceeded",
    "context_length_exceeded",
    "insufficient_quota",
    "usage_not_included",
    "usage_limit_reached",
    "invalid_prompt",
];

/// Why a `response.incomplete` stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncompleteReason {
    MaxOutputTokens,
    ContentFilter,
    ContextLength,
}

impl IncompleteReason {
    pub fn wire(self) -> &'static str {
        match self {
            IncompleteReason::MaxOutputTokens => "max_output_tokens",
            IncompleteReason::ContentFilter => "content_filter",
            IncompleteReason::ContextLength => "context_length_exceeded",
        }
    }
}

/// What the token endpoint does for the next refresh of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshVariant {
    Reused,
    Expired,
    Invalidated,
    InvalidGrant,
    ServerError,
}

impl RefreshVariant {
    pub fn name(self) -> &'static str {
        match self {
            RefreshVariant::Reused => "refresh_reused",
            RefreshVariant::Expired => "refresh_expired",
            RefreshVariant::Invalidated => "refresh_invalidated",
            RefreshVariant::InvalidGrant => "refresh_invalid_grant",
            RefreshVariant::ServerError => "refresh_5xx",
        }
    }
}

/// One scripted behaviour for a model request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    Text,
    Reasoning,
    ToolCall,
    EmptyOutput,
    LegacyDone,
    DoneTrailer,
    Incomplete(IncompleteReason),
    FailedFirst(String),
    FailedAfterContent(String),
    ErrorFlat,
    ErrorNested,
    Quota429,
    Quota429Weekly,
    CreditsDepleted,
    UsageNotIncluded,
    RateLimited429,
    TokenExpired,
    Refresh(RefreshVariant),
    Forbidden403,
    ForbiddenHtml,
    BadRequestParam,
    BadRequestModel,
    BadRequestContext,
    Http5xx(u16),
    MalformedJson,
    MalformedSse,
    SlowFirstByte,
    SlowFirstEvent,
    Stall,
    StallMidStream,
    TruncateEof,
    TruncateReset,
    TruncateMidEvent,
    ChunkedBytes,
    LargeEvent,
    CloseBeforeHeaders,
    Barrier(String),
    WsRefuse(u16),
}

impl Scenario {
    /// Parse a scenario name; `None` when unknown.
    pub fn parse(name: &str) -> Option<Scenario> {
        let name = name.trim();
        if let Some(rest) = name.strip_prefix("barrier:") {
            return (!rest.is_empty()).then(|| Scenario::Barrier(rest.to_string()));
        }
        if let Some(rest) = name.strip_prefix("failed_first:") {
            return FAILURE_CODES
                .contains(&rest)
                .then(|| Scenario::FailedFirst(rest.to_string()));
        }
        if let Some(rest) = name.strip_prefix("failed_after_content:") {
            return FAILURE_CODES
                .contains(&rest)
                .then(|| Scenario::FailedAfterContent(rest.to_string()));
        }
        let s = match name {
            "text" => Scenario::Text,
            "reasoning" => Scenario::Reasoning,
            "tool_call" => Scenario::ToolCall,
            "empty_output" => Scenario::EmptyOutput,
            "legacy_done" => Scenario::LegacyDone,
            "done_trailer" => Scenario::DoneTrailer,
            "incomplete_max_tokens" => Scenario::Incomplete(IncompleteReason::MaxOutputTokens),
            "incomplete_content_filter" => Scenario::Incomplete(IncompleteReason::ContentFilter),
            "incomplete_context_length" => Scenario::Incomplete(IncompleteReason::ContextLength),
            "failed_first" => Scenario::FailedFirst("server_error".into()),
            "failed_after_content" => Scenario::FailedAfterContent("server_error".into()),
            "error_flat" => Scenario::ErrorFlat,
            "error_nested" => Scenario::ErrorNested,
            "quota_429" => Scenario::Quota429,
            "quota_429_weekly" => Scenario::Quota429Weekly,
            "credits_depleted" => Scenario::CreditsDepleted,
            "usage_not_included" => Scenario::UsageNotIncluded,
            "rate_limited_429" => Scenario::RateLimited429,
            "token_expired" => Scenario::TokenExpired,
            "refresh_reused" => Scenario::Refresh(RefreshVariant::Reused),
            "refresh_expired" => Scenario::Refresh(RefreshVariant::Expired),
            "refresh_invalidated" => Scenario::Refresh(RefreshVariant::Invalidated),
            "refresh_invalid_grant" => Scenario::Refresh(RefreshVariant::InvalidGrant),
            "refresh_5xx" => Scenario::Refresh(RefreshVariant::ServerError),
            "forbidden_403" => Scenario::Forbidden403,
            "forbidden_html" => Scenario::ForbiddenHtml,
            "bad_request_param" => Scenario::BadRequestParam,
            "bad_request_model" => Scenario::BadRequestModel,
            "bad_request_context" => Scenario::BadRequestContext,
            "http_500" => Scenario::Http5xx(500),
            "http_502" => Scenario::Http5xx(502),
            "http_503" => Scenario::Http5xx(503),
            "http_504" => Scenario::Http5xx(504),
            "malformed_json" => Scenario::MalformedJson,
            "malformed_sse" => Scenario::MalformedSse,
            "slow_first_byte" => Scenario::SlowFirstByte,
            "slow_first_event" => Scenario::SlowFirstEvent,
            "stall" => Scenario::Stall,
            "stall_mid_stream" => Scenario::StallMidStream,
            "truncate_eof" => Scenario::TruncateEof,
            "truncate_reset" => Scenario::TruncateReset,
            "truncate_mid_event" => Scenario::TruncateMidEvent,
            "chunked_bytes" => Scenario::ChunkedBytes,
            "large_event" => Scenario::LargeEvent,
            "close_before_headers" => Scenario::CloseBeforeHeaders,
            "ws_refuse_401" => Scenario::WsRefuse(401),
            "ws_refuse_426" => Scenario::WsRefuse(426),
            "ws_refuse_429" => Scenario::WsRefuse(429),
            _ => return None,
        };
        Some(s)
    }

    /// The canonical name (what `parse` accepts and what recordings show).
    pub fn name(&self) -> String {
        match self {
            Scenario::Text => "text".into(),
            Scenario::Reasoning => "reasoning".into(),
            Scenario::ToolCall => "tool_call".into(),
            Scenario::EmptyOutput => "empty_output".into(),
            Scenario::LegacyDone => "legacy_done".into(),
            Scenario::DoneTrailer => "done_trailer".into(),
            Scenario::Incomplete(IncompleteReason::MaxOutputTokens) => {
                "incomplete_max_tokens".into()
            }
            Scenario::Incomplete(IncompleteReason::ContentFilter) => {
                "incomplete_content_filter".into()
            }
            Scenario::Incomplete(IncompleteReason::ContextLength) => {
                "incomplete_context_length".into()
            }
            Scenario::FailedFirst(code) if code == "server_error" => "failed_first".into(),
            Scenario::FailedFirst(code) => format!("failed_first:{code}"),
            Scenario::FailedAfterContent(code) if code == "server_error" => {
                "failed_after_content".into()
            }
            Scenario::FailedAfterContent(code) => format!("failed_after_content:{code}"),
            Scenario::ErrorFlat => "error_flat".into(),
            Scenario::ErrorNested => "error_nested".into(),
            Scenario::Quota429 => "quota_429".into(),
            Scenario::Quota429Weekly => "quota_429_weekly".into(),
            Scenario::CreditsDepleted => "credits_depleted".into(),
            Scenario::UsageNotIncluded => "usage_not_included".into(),
            Scenario::RateLimited429 => "rate_limited_429".into(),
            Scenario::TokenExpired => "token_expired".into(),
            Scenario::Refresh(v) => v.name().into(),
            Scenario::Forbidden403 => "forbidden_403".into(),
            Scenario::ForbiddenHtml => "forbidden_html".into(),
            Scenario::BadRequestParam => "bad_request_param".into(),
            Scenario::BadRequestModel => "bad_request_model".into(),
            Scenario::BadRequestContext => "bad_request_context".into(),
            Scenario::Http5xx(code) => format!("http_{code}"),
            Scenario::MalformedJson => "malformed_json".into(),
            Scenario::MalformedSse => "malformed_sse".into(),
            Scenario::SlowFirstByte => "slow_first_byte".into(),
            Scenario::SlowFirstEvent => "slow_first_event".into(),
            Scenario::Stall => "stall".into(),
            Scenario::StallMidStream => "stall_mid_stream".into(),
            Scenario::TruncateEof => "truncate_eof".into(),
            Scenario::TruncateReset => "truncate_reset".into(),
            Scenario::TruncateMidEvent => "truncate_mid_event".into(),
            Scenario::ChunkedBytes => "chunked_bytes".into(),
            Scenario::LargeEvent => "large_event".into(),
            Scenario::CloseBeforeHeaders => "close_before_headers".into(),
            Scenario::Barrier(name) => format!("barrier:{name}"),
            Scenario::WsRefuse(code) => format!("ws_refuse_{code}"),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Every fixed scenario name (parametrised ones shown with their default form).
pub const SCENARIO_NAMES: &[&str] = &[
    "text",
    "reasoning",
    "tool_call",
    "empty_output",
    "legacy_done",
    "done_trailer",
    "incomplete_max_tokens",
    "incomplete_content_filter",
    "incomplete_context_length",
    "failed_first",
    "failed_after_content",
    "error_flat",
    "error_nested",
    "quota_429",
    "quota_429_weekly",
    "credits_depleted",
    "usage_not_included",
    "rate_limited_429",
    "token_expired",
    "refresh_reused",
    "refresh_expired",
    "refresh_invalidated",
    "refresh_invalid_grant",
    "refresh_5xx",
    "forbidden_403",
    "forbidden_html",
    "bad_request_param",
    "bad_request_model",
    "bad_request_context",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "malformed_json",
    "malformed_sse",
    "slow_first_byte",
    "slow_first_event",
    "stall",
    "stall_mid_stream",
    "truncate_eof",
    "truncate_reset",
    "truncate_mid_event",
    "chunked_bytes",
    "large_event",
    "close_before_headers",
    "ws_refuse_401",
    "ws_refuse_426",
    "ws_refuse_429",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for name in SCENARIO_NAMES {
            let s = Scenario::parse(name).unwrap_or_else(|| panic!("{name} parses"));
            assert_eq!(&s.name(), name);
        }
        for code in FAILURE_CODES {
            let n = format!("failed_after_content:{code}");
            assert!(Scenario::parse(&n).is_some());
        }
        assert_eq!(
            Scenario::parse("barrier:b1"),
            Some(Scenario::Barrier("b1".into()))
        );
        assert_eq!(Scenario::parse("nope"), None);
        assert_eq!(Scenario::parse("failed_first:bogus"), None);
        assert_eq!(Scenario::parse("barrier:"), None);
    }
}
