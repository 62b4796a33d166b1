//! The operator surface. For now: the JSON request-log API under
//! `/admin/api/…`, authenticated by operator tokens.

pub mod api;

pub use api::router;
