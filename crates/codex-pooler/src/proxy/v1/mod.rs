//! The narrow OpenAI-compatible `/v1` surface: requests are translated to the
//! Codex Responses dialect, run through the shared pipeline
//! (`responses::dispatch_events`), and the upstream events re-encoded for
//! OpenAI SDK clients.

use std::sync::Arc;

use axum::Router;

use crate::runtime::Runtime;

/// The `/v1` route table.
pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
}
