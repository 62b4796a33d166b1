//! Test harness: the real gateway on port 0 against the upstream simulator, on
//! SQLite, or on PostgreSQL when CODEX_POOLER_TEST_POSTGRES_URL is set (each
//! test then gets its own freshly created database).

use std::net::SocketAddr;
use std::path::PathBuf;

use codex_pooler::app::RunningApp;
use codex_pooler::config::Settings;
use codex_pooler::demo::{DemoInfo, seed};
use serde_json::{Value, json};
use upstream_sim::{SimConfig, Simulator};

pub const POSTGRES_ENV: &str = "CODEX_POOLER_TEST_POSTGRES_URL";

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// Runs a test body on SQLite, and on PostgreSQL when configured.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match std::env::var($crate::support::POSTGRES_ENV) {
                    Ok(url) if !url.is_empty() => {
                        super::$body($crate::support::Backend::Postgres(url)).await
                    }
                    _ => eprintln!(
                        "skipping PostgreSQL run: {} is not set",
                        $crate::support::POSTGRES_ENV
                    ),
                }
            }
        }
    };
}

pub struct Harness {
    pub sim: Simulator,
    pub app: RunningApp,
    pub settings: Settings,
    pub info: DemoInfo,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    cleanup_db: Option<(String, String)>,
}

/// A fresh directory for one gateway's data.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxp-test-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Creates a fresh database next to `admin_url`'s; returns its URL and name.
pub async fn create_pg_database(admin_url: &str) -> (String, String) {
    use sqlx::Executor;
    let name = format!("cxp_test_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(admin_url)
        .await
        .expect("connect to PostgreSQL");
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create database");
    pool.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("postgres URL with a database");
    (format!("{base}/{name}"), name)
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Self::start_with(backend, 3, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        accounts: usize,
        tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        Self::start_with_sim(
            backend,
            SimConfig {
                accounts,
                ..SimConfig::default()
            },
            tweak,
        )
        .await
    }

    /// As `start_with`, with the simulator configured by the caller (for
    /// example lenient, accepting tool call ids it did not issue).
    pub async fn start_with_sim(
        backend: Backend,
        sim_config: SimConfig,
        tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), sim_config)
            .await
            .expect("simulator starts");
        let data_dir = temp_dir();
        let (url, cleanup_db) = match &backend {
            Backend::Sqlite => (
                format!("sqlite://{}", data_dir.join("test.db").display()),
                None,
            ),
            Backend::Postgres(admin) => {
                let (url, name) = create_pg_database(admin).await;
                (url, Some((admin.clone(), name)))
            }
        };
        let mut settings = Settings::for_tests(data_dir.clone(), url);
        settings.upstream_base_url = sim.base_url();
        settings.auth_base_url = sim.base_url();
        tweak(&mut settings);
        let app = RunningApp::spawn(settings.clone())
            .await
            .expect("gateway starts");
        let info = seed(&app, &sim).await.expect("seed");
        Harness {
            sim,
            app,
            settings,
            info,
            http: reqwest::Client::new(),
            data_dir,
            cleanup_db,
        }
    }

    /// Stops the gateway and starts a new one on the same database.
    pub async fn restart(&mut self) {
        let fresh = RunningApp::spawn(self.settings.clone())
            .await
            .expect("gateway restarts");
        let old = std::mem::replace(&mut self.app, fresh);
        old.stop().await.expect("old gateway stops");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.app.base_url(), path)
    }

    /// POSTs a Responses body with the demo key.
    pub async fn responses(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/backend-api/codex/responses"))
            .bearer_auth(&self.info.api_key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until every record event queued so far is written.
    pub async fn flush(&self) {
        self.app.runtime.recorder.flush().await;
    }

    /// The request row and attempts through the admin API.
    pub async fn request_log(&self, id: &str) -> Value {
        self.flush().await;
        let r = self
            .http
            .get(self.url(&format!("/admin/api/request-logs/{id}")))
            .bearer_auth(&self.info.operator_token)
            .send()
            .await
            .expect("admin api");
        assert_eq!(r.status(), 200, "request log {id} should exist");
        r.json().await.expect("json")
    }

    /// The newest rows through the admin API.
    pub async fn request_logs(&self) -> Vec<Value> {
        self.flush().await;
        let r: Value = self
            .http
            .get(self.url("/admin/api/request-logs?limit=200"))
            .bearer_auth(&self.info.operator_token)
            .send()
            .await
            .expect("admin api")
            .json()
            .await
            .expect("json");
        r["data"].as_array().cloned().unwrap_or_default()
    }

    /// Simulator account ids in the order the gateway will try them for `seed`.
    pub async fn account_order(&self, seed: &str) -> Vec<String> {
        let pool = self
            .app
            .runtime
            .pool(&self.info.pool_id)
            .await
            .expect("pool")
            .expect("exists");
        let order = codex_pooler::proxy::routing::rendezvous_order(
            seed,
            pool.candidates.iter().map(|c| c.assignment_id.as_str()),
        );
        order
            .iter()
            .filter_map(|id| pool.candidates.iter().find(|c| c.assignment_id == *id))
            .map(|c| c.chatgpt_account_id.clone())
            .collect()
    }

    pub async fn stop(self) {
        let Harness {
            sim,
            app,
            data_dir,
            cleanup_db,
            ..
        } = self;
        app.stop().await.expect("gateway stops");
        sim.shutdown().await;
        if let Some((admin, name)) = cleanup_db {
            drop_pg_database(&admin, &name).await;
        }
        let _ = std::fs::remove_dir_all(data_dir);
    }
}

/// Drops a database made by [`create_pg_database`]; best effort.
pub async fn drop_pg_database(admin_url: &str, name: &str) {
    use sqlx::Executor;
    if let Ok(pool) = sqlx::PgPool::connect(admin_url).await {
        let _ = pool
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
        pool.close().await;
    }
}

/// A minimal Codex-style streaming body.
pub fn text_request(prompt: &str, cache_key: &str) -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": "You are a test.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}],
        "tools": [],
        "stream": true,
        "store": false,
        "prompt_cache_key": cache_key,
    })
}

/// Event `type`s of an SSE body, in order.
pub fn sse_types(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Concatenated `response.output_text.delta` text of an SSE body.
pub fn sse_text(body: &str) -> String {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect()
}

/// Finds a seed for which the gateway tries accounts in exactly `wanted` order.
pub async fn seed_with_order(h: &Harness, wanted: &[String]) -> String {
    for i in 0..10_000 {
        let seed = format!("seed-{i}");
        if h.account_order(&seed).await == wanted {
            return seed;
        }
    }
    panic!("no seed found for the wanted order");
}
