//! The gateway's start-up settings: one typed struct from flags and
//! `CODEX_POOLER_*` environment variables. No other module reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Settings shared by `serve` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "CODEX_POOLER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and the generated secret key.
    #[arg(long, env = "CODEX_POOLER_DATA_DIR", default_value = ".codex-pooler")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://path` or `postgres://…`. Defaults to a SQLite file in the data directory.
    #[arg(long, env = "CODEX_POOLER_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Base64 32-byte key encrypting upstream credentials; generated into
    /// `<data-dir>/secret.key` on first start when absent.
    #[arg(long, env = "CODEX_POOLER_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Default upstream (Codex backend) base URL for accounts without their own.
    #[arg(
        long,
        env = "CODEX_POOLER_UPSTREAM_BASE_URL",
        default_value = "https://chatgpt.com"
    )]
    pub upstream_base_url: String,

    /// Default OAuth issuer for token refresh.
    #[arg(
        long,
        env = "CODEX_POOLER_AUTH_BASE_URL",
        default_value = "https://auth.openai.com"
    )]
    pub auth_base_url: String,

    /// Codex client version presented upstream.
    #[arg(long, env = "CODEX_POOLER_CLIENT_VERSION", default_value = "0.171.0")]
    pub client_version: String,

    /// Seconds to wait for upstream response headers.
    #[arg(
        long,
        env = "CODEX_POOLER_UPSTREAM_HEADER_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub upstream_header_timeout_secs: u64,

    /// Seconds without a byte from an upstream stream before it is abandoned.
    #[arg(
        long,
        env = "CODEX_POOLER_STREAM_IDLE_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub stream_idle_timeout_secs: u64,

    /// Seconds that streams in flight get to finish on shutdown.
    #[arg(long, env = "CODEX_POOLER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Largest request body accepted on the wire, in bytes.
    #[arg(long, env = "CODEX_POOLER_MAX_REQUEST_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest request body after decompression, in bytes.
    #[arg(long, env = "CODEX_POOLER_MAX_DECOMPRESSED_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_decompressed_bytes: usize,

    /// Largest decompressed/compressed size ratio accepted.
    #[arg(
        long,
        env = "CODEX_POOLER_MAX_DECOMPRESSION_RATIO",
        default_value_t = 200
    )]
    pub max_decompression_ratio: usize,

    /// Seconds without a heartbeat after which an instance counts as gone and
    /// its requests still in progress are closed as failed.
    #[arg(long, env = "CODEX_POOLER_INSTANCE_STALE_SECS", default_value_t = 30)]
    pub instance_stale_secs: u64,

    /// Seconds between quota polls of each account's usage endpoint.
    #[arg(
        long,
        env = "CODEX_POOLER_USAGE_POLL_INTERVAL_SECS",
        default_value_t = 300
    )]
    pub usage_poll_interval_secs: u64,

    /// Days of request-log rows to keep (0 keeps them forever). Older rows,
    /// with their attempts and ledger entries, are pruned in small batches by
    /// a background job; the usage rollups keep their totals.
    #[arg(
        long,
        env = "CODEX_POOLER_REQUEST_LOG_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub request_log_retention_days: u32,

    /// Log format: `text` or `json`.
    #[arg(long, env = "CODEX_POOLER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Settings {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.data_dir.join("codex-pooler.db").display()
            ),
        }
    }

    /// Where a generated secret key is kept.
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }

    /// Defaults suitable for tests and embedding: loopback on port 0.
    pub fn for_tests(data_dir: PathBuf, database_url: String) -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            database_url: Some(database_url),
            secret_key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            upstream_base_url: "http://127.0.0.1:9".into(),
            auth_base_url: "http://127.0.0.1:9".into(),
            client_version: "0.171.0".into(),
            upstream_header_timeout_secs: 30,
            stream_idle_timeout_secs: 30,
            shutdown_grace_secs: 5,
            max_request_bytes: 32 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_decompression_ratio: 200,
            request_log_retention_days: 30,
            instance_stale_secs: 30,
            usage_poll_interval_secs: 300,
            log_format: "text".into(),
        }
    }
}
