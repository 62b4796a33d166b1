//! Integration tests of the upstream simulator's wire behaviour.

mod auth;
mod control;
mod quota;
mod sse;
mod support;
mod ws;
