//! Codex Pooler: a self-hosted gateway that lets a team share many ChatGPT/Codex
//! subscription accounts through stable Pool API keys.
//!
//! Dependency direction: `app` wires everything; `proxy` (the data plane) and
//! `admin` (the operator surface) call `domain` (pure rules) and `store` (all SQL);
//! `store` knows nothing of HTTP. See `docs/ARCHITECTURE.md` for the path of a request.

pub mod accounting;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod demo;
pub mod device_link;
pub mod domain;
pub mod error;
pub mod health;
pub mod jobs;
pub mod ops;
pub mod proxy;
pub mod recorder;
pub mod runtime;
pub mod seeding;
pub mod store;
pub mod time;
