//! Simulator configuration: [`SimConfig`] and the benchmark profiles.
//!
//! Only plain data lives here; nothing in this module touches the network.

use std::fmt;
use std::str::FromStr;

/// How a [`crate::Simulator`] behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accounts created at start: ids `acct_sim_1`, `acct_sim_2`, …
    pub accounts: usize,
    /// Validate requests as §8.2 describes (default `true`); `false` is lenient.
    pub strict: bool,
    /// Serve canned answers for load tests instead of scripted scenarios.
    pub bench: Option<BenchProfile>,
    /// Lifetime of minted access tokens, in simulated seconds.
    pub access_token_ttl_secs: i64,
    /// Size of the bounded ring of recorded requests (bench mode records nothing).
    pub record_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            accounts: 1,
            strict: true,
            bench: None,
            access_token_ttl_secs: 864_000,
            record_limit: 10_000,
        }
    }
}

/// Canned answer used by bench mode on `/responses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProfile {
    /// A ~1.4 KB SSE body sent at once.
    InstantJson,
    /// The same body after 60 ms.
    Fixed60ms,
    /// First event after 50 ms, then 20 × 512 B events every 25 ms, then completed.
    SseShort,
    /// 50 × 64 KiB events, then completed.
    SseLarge,
}

impl BenchProfile {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchProfile::InstantJson => "instant-json",
            BenchProfile::Fixed60ms => "fixed-60ms",
            BenchProfile::SseShort => "sse-short",
            BenchProfile::SseLarge => "sse-large",
        }
    }
}

impl fmt::Display for BenchProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BenchProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "instant-json" => Ok(BenchProfile::InstantJson),
            "fixed-60ms" => Ok(BenchProfile::Fixed60ms),
            "sse-short" => Ok(BenchProfile::SseShort),
            "sse-large" => Ok(BenchProfile::SseLarge),
            other => Err(format!(
                "unknown bench profile {other:?} (expected instant-json, fixed-60ms, sse-short or sse-large)"
            )),
        }
    }
}
