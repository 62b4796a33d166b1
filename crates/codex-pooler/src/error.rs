//! The client-facing error of the data plane: one enum, each variant with its
//! HTTP status and code, rendered as the OpenAI envelope
//! `{"error":{"message","type","code","param"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors a data-plane client can see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("api key is required")]
    ApiKeyMissing,
    #[error("api key is paused")]
    ApiKeyPaused,
    #[error("api key is revoked")]
    ApiKeyRevoked,
    #[error("api key is expired")]
    ApiKeyExpired,
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("model '{0}' is not available in this Pool")]
    InvalidModel(String),
    #[error("model '{0}' is not allowed for this API key")]
    ModelNotAllowed(String),
    #[error("no healthy eligible backend is currently available")]
    NoEligibleBackend,
    #[error("request body is larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("compressed request body is larger than {limit} bytes")]
    CompressedRequestTooLarge { limit: usize },
    #[error("decompressed request body is larger than {limit} bytes")]
    DecompressedRequestTooLarge { limit: usize },
    #[error("request body decompression ratio exceeds {limit}:1")]
    DecompressionRatioExceeded { limit: usize },
    #[error("request body decompression took too long")]
    DecompressionTimeout,
    #[error("content-encoding '{0}' is not supported (use zstd, gzip or deflate)")]
    UnsupportedContentEncoding(String),
    #[error("request body could not be decompressed as {0}")]
    InvalidCompressedBody(&'static str),
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("upstream request failed")]
    UpstreamRequestFailed,
    #[error("api key is not active")]
    ApiKeyDisabled,
    #[error("the OpenAI-compatible /v1 surface is disabled for this Pool")]
    V1CompatibilityDisabled,
    #[error("Unsupported OpenAI /v1 endpoint")]
    UnsupportedEndpoint,
    #[error("{message}")]
    UnsupportedParameter {
        message: String,
        param: Option<String>,
    },
    #[error(
        "this session is pinned to an upstream account that is not available; restart without continuation anchors"
    )]
    PinnedContinuationUnavailable,
    #[error(
        "this session is pinned to an upstream account that needs reauthorization; restart without continuation anchors"
    )]
    PinnedContinuationReauthRequired,
    #[error("this route requires a websocket upgrade")]
    WebsocketUpgradeRequired,
    #[error("reasoning effort '{0}' is not available for this API key")]
    ReasoningEffortNotAllowed(String),
    #[error("{message}")]
    PolicyLimitExceeded {
        message: String,
        retry_after_secs: Option<i64>,
    },
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ApiKeyMissing
            | Self::ApiKeyPaused
            | Self::ApiKeyRevoked
            | Self::ApiKeyExpired => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest { .. }
            | Self::InvalidModel(_)
            | Self::InvalidCompressedBody(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::NoEligibleBackend => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTooLarge { .. }
            | Self::CompressedRequestTooLarge { .. }
            | Self::DecompressedRequestTooLarge { .. }
            | Self::DecompressionRatioExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::DecompressionTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedContentEncoding(_) | Self::UnsupportedMediaType => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::UpstreamRequestFailed => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ApiKeyDisabled => StatusCode::UNAUTHORIZED,
            Self::V1CompatibilityDisabled => StatusCode::FORBIDDEN,
            Self::UnsupportedEndpoint => StatusCode::NOT_FOUND,
            Self::UnsupportedParameter { .. } | Self::WebsocketUpgradeRequired => {
                StatusCode::BAD_REQUEST
            }
            Self::PinnedContinuationUnavailable | Self::PinnedContinuationReauthRequired => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ReasoningEffortNotAllowed(_) => StatusCode::BAD_REQUEST,
            Self::PolicyLimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Sanitized error code, also recorded on request rows.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ApiKeyMissing => "api_key_missing",
            Self::ApiKeyPaused => "api_key_paused",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::ApiKeyExpired => "api_key_expired",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidModel(_) => "invalid_model",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::NoEligibleBackend => "no_eligible_backend",
            Self::RequestTooLarge { .. } => "request_too_large",
            Self::CompressedRequestTooLarge { .. } => "compressed_request_too_large",
            Self::DecompressedRequestTooLarge { .. } => "decompressed_request_too_large",
            Self::DecompressionRatioExceeded { .. } => "decompression_ratio_exceeded",
            Self::DecompressionTimeout => "request_decompression_timeout",
            Self::UnsupportedContentEncoding(_) => "unsupported_content_encoding",
            Self::InvalidCompressedBody(_) => "invalid_compressed_body",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UpstreamRequestFailed => "upstream_request_failed",
            Self::Internal => "internal_error",
            Self::ApiKeyDisabled => "api_key_disabled",
            Self::V1CompatibilityDisabled => "v1_compatibility_disabled",
            Self::UnsupportedEndpoint => "unsupported_endpoint",
            Self::UnsupportedParameter { .. } => "unsupported_parameter",
            Self::PinnedContinuationUnavailable => "pinned_continuation_unavailable",
            Self::PinnedContinuationReauthRequired => "pinned_continuation_reauth_required",
            Self::WebsocketUpgradeRequired => "websocket_upgrade_required",
            Self::ReasoningEffortNotAllowed(_) => "reasoning_effort_not_allowed",
            Self::PolicyLimitExceeded { .. } => "api_key_policy_limit_exceeded",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::UnsupportedParameter { param, .. } => param.as_deref(),
            Self::ReasoningEffortNotAllowed(_) => Some("reasoning.effort"),
            Self::InvalidModel(_) | Self::ModelNotAllowed(_) | Self::NoEligibleBackend => {
                Some("model")
            }
            _ => None,
        }
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> serde_json::Value {
        let kind = if matches!(self, Self::Internal) {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let mut body = error_body(&self.to_string(), kind, self.code(), self.param());
        if matches!(
            self,
            Self::PinnedContinuationUnavailable | Self::PinnedContinuationReauthRequired
        ) && let Some(error) = body
            .get_mut("error")
            .and_then(serde_json::Value::as_object_mut)
        {
            error.insert("retryable".into(), json!(false));
            error.insert("requires_new_upstream_session".into(), json!(true));
            error.insert("recovery_kind".into(), json!("restart_with_full_context"));
            error.insert(
                "recovery".into(),
                json!({
                    "guidance": "start a new session: resend the full conversation without continuation anchors",
                    "drop_body_fields": ["previous_response_id"],
                    "drop_headers": ["x-codex-turn-state"],
                }),
            );
        }
        body
    }
}

/// Builds `{"error":{"message","type","code","param"}}`.
pub fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> serde_json::Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": param}})
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Self::PolicyLimitExceeded {
            retry_after_secs: Some(secs),
            ..
        } = &self
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        if matches!(
            self,
            Self::PinnedContinuationUnavailable | Self::PinnedContinuationReauthRequired
        ) {
            response.headers_mut().insert(
                "x-codex-recovery-kind",
                axum::http::HeaderValue::from_static("restart_with_full_context"),
            );
        }
        response
    }
}
