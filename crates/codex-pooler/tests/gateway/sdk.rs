//! The official OpenAI SDKs against the gateway's `/v1` surface: the Python
//! script `tests/sdk/python_sdk.py` (gated on CODEX_POOLER_TEST_PYTHON_SDK=1)
//! and the Node script `tests/sdk/node_sdk.mjs` (gated on
//! CODEX_POOLER_TEST_NODE_SDK_DIR=<dir containing node_modules/openai>).
//! Each runs against a live Harness and must exit 0. SQLite only: the SDKs
//! test the wire format, not the store.

use std::path::Path;
use std::process::Command;

use crate::support::{Backend, Harness};

const PYTHON_ENV: &str = "CODEX_POOLER_TEST_PYTHON_SDK";
const NODE_ENV: &str = "CODEX_POOLER_TEST_NODE_SDK_DIR";

/// Runs `program args…` with the SDK env pointed at a fresh gateway.
async fn run_sdk_script(program: &str, args: Vec<String>, extra_env: Vec<(String, String)>) {
    let h = Harness::start(Backend::Sqlite).await;
    let base_url = format!("{}/v1", h.app.base_url());
    let api_key = h.info.api_key.clone();
    let program = program.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", api_key)
            .env_remove("OPENAI_ORG_ID")
            .env_remove("OPENAI_PROJECT_ID")
            .envs(extra_env)
            .output()
    })
    .await
    .expect("join")
    .expect("the SDK script starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    h.stop().await;
    assert!(
        output.status.success(),
        "SDK script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk() {
    if std::env::var(PYTHON_ENV).as_deref() != Ok("1") {
        eprintln!(
            "skipping the Python SDK test: set {PYTHON_ENV}=1 (needs `pip install openai==3.60.0`)"
        );
        return;
    }
    run_sdk_script(
        "python3",
        vec!["tests/sdk/python_sdk.py".into()],
        Vec::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk() {
    let dir = match std::env::var(NODE_ENV) {
        Ok(dir) if !dir.is_empty() => dir,
        _ => {
            eprintln!(
                "skipping the Node SDK test: set {NODE_ENV} to a directory containing node_modules/openai (openai@7.60.0)"
            );
            return;
        }
    };
    assert!(
        Path::new(&dir).join("node_modules/openai").is_dir(),
        "{NODE_ENV}={dir} has no node_modules/openai"
    );
    run_sdk_script(
        "node",
        vec!["tests/sdk/node_sdk.mjs".into()],
        vec![(NODE_ENV.to_owned(), dir)],
    )
    .await;
}
