//! The operator surface: the JSON request-log API under `/admin/api/…`
//! (operator tokens), and the server-rendered admin console with its JSON
//! twins (`console`).

pub mod api;
pub mod console;
pub mod request_logs;

use std::sync::Arc;

use axum::Router;

use crate::runtime::Runtime;

/// Every operator route: the request-log API and the console.
pub fn router() -> Router<Arc<Runtime>> {
    api::router().merge(console::router())
}
