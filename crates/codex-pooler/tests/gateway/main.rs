//! Integration tests: the real gateway on port 0 against the upstream simulator.

mod support;

mod admission;
mod codex_cli;
mod ingress;
mod ops;
mod privacy;
mod responses;
mod sdk;
mod v1;
mod websocket;
