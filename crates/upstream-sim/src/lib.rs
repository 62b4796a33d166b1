//! An independent simulator of the ChatGPT Codex backend
//! (`chatgpt.com/backend-api/codex/...`) and of OpenAI auth (`auth.openai.com`),
//! used by the gateway's tests, benchmarks and demo mode.
//!
//! The crate never depends on gateway code, so a protocol bug cannot hide in both.
//! [`Simulator`] is the public handle; everything else is internal:
//!
//! * `config` — [`SimConfig`], [`BenchProfile`]
//! * `state` — clock, accounts, tokens, quota, barriers, recording
//! * `scenario` — the scenario catalogue (names and parsing)
//! * `script` — what each scenario sends, as a transport-neutral plan
//! * `engine` — authentication, validation and the per-request decision
//! * `http`, `ws`, `oauth`, `control`, `bench`, `catalog` — the routes
//! * `server` — the accept loop that lets handlers drop or reset connections

mod bench;
mod catalog;
mod config;
mod control;
mod engine;
mod http;
mod oauth;
mod scenario;
mod script;
mod server;
mod state;
mod tokens;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{BenchProfile, SimConfig};
pub use engine::{POOL_KEY_PREFIX, UNSUPPORTED_PARAMS};
pub use scenario::{FAILURE_CODES, SCENARIO_NAMES};
pub use script::{
    LARGE_EVENT_BYTES, MODELS_ETAG, REASONING_SUMMARY, TEXT_DELTAS, TEXT_SCENARIO_ANSWER,
    TOKEN_EXPIRED_MESSAGE, TOOL_CALL_ARGUMENTS,
};
pub use state::{
    AccountSnapshot, AccountSpec, PRIMARY_STEP, PRIMARY_WINDOW_SECS, RecordedRequest,
    SECONDARY_STEP, SECONDARY_WINDOW_SECS,
};
pub use tokens::{CODEX_CLIENT_ID, decode_payload};

use state::Shared;

struct Running {
    shared: Arc<Shared>,
    addr: SocketAddr,
    hard: CancellationToken,
    tracker: TaskTracker,
    accept: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// A running simulator. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Running>,
}

impl Simulator {
    /// Bind `listen` (use port 0 in tests) and start serving.
    pub async fn start(listen: SocketAddr, config: SimConfig) -> anyhow::Result<Simulator> {
        if config.bench.is_some() {
            // Build the canned bytes now, not on the first request.
            bench::canned();
        }
        let accounts = config.accounts;
        let shared = Arc::new(Shared::new(config));
        for _ in 0..accounts {
            shared.create_account(AccountSpec::default());
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let hard = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = http::router(shared.clone());
        let accept = tokio::spawn(server::serve(
            listener,
            router,
            shared.shutdown.clone(),
            hard.clone(),
            tracker.clone(),
        ));
        Ok(Simulator {
            inner: Arc::new(Running {
                shared,
                addr,
                hard,
                tracker,
                accept: std::sync::Mutex::new(Some(accept)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn accounts(&self) -> Vec<AccountSnapshot> {
        control::accounts(self.shared())
    }

    pub fn create_account(&self, spec: AccountSpec) -> AccountSnapshot {
        self.shared().create_account(spec)
    }

    /// A Codex CLI `auth.json` (§5.1) with the account's current tokens.
    pub fn auth_json(&self, account_id: &str) -> Option<serde_json::Value> {
        self.shared().auth_json(account_id)
    }

    /// Queue `count` uses of `scenario` on an account.
    pub fn queue_scenario(
        &self,
        account_id: &str,
        scenario: &str,
        count: u32,
    ) -> Result<(), String> {
        control::queue_scenario(self.shared(), account_id, scenario, count)
    }

    /// Revoke the account's access tokens (they answer 401 `token_expired`).
    pub fn expire_access_token(&self, account_id: &str) {
        control::expire_access_token(self.shared(), account_id);
    }

    pub fn set_quota(
        &self,
        account_id: &str,
        primary_used_percent: f64,
        secondary_used_percent: f64,
    ) {
        control::set_quota(
            self.shared(),
            account_id,
            primary_used_percent,
            secondary_used_percent,
        );
    }

    /// Move the simulated clock forward (or back, with a negative value).
    pub fn advance_clock(&self, seconds: i64) {
        self.shared().advance_clock(seconds);
    }

    /// Simulated unix seconds.
    pub fn now(&self) -> i64 {
        self.shared().now()
    }

    pub fn release_barrier(&self, name: &str) {
        self.shared().release_barrier(name);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().requests()
    }

    /// Number of `POST /oauth/token` calls with `grant_type=refresh_token`.
    pub fn refresh_calls(&self) -> usize {
        self.shared()
            .refresh_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Clear the recording, scenario queues and barriers (accounts stay).
    pub fn reset(&self) {
        self.shared().reset();
    }

    /// Stop accepting, let open connections finish briefly, then drop them.
    pub async fn shutdown(self) {
        let shared = self.inner.shared.clone();
        shared.shutdown.cancel();
        let accept = self
            .inner
            .accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = accept {
            let _ = handle.await;
        }
        self.inner.tracker.close();
        if tokio::time::timeout(Duration::from_secs(2), self.inner.tracker.wait())
            .await
            .is_err()
        {
            self.inner.hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.tracker.wait()).await;
        }
    }
}
