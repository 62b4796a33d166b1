//! Integration tests: the real gateway on port 0 against the upstream simulator.

mod support;

mod accounting;
mod accounts_console;
mod admission;
mod browser;
mod codex_cli;
mod console;
mod ingress;
mod ops;
mod policy;
mod privacy;
mod responses;
mod routing;
mod sdk;
mod security;
mod v1;
mod websocket;
