//! The real Codex CLI through the gateway over HTTP SSE. Runs when
//! CODEX_POOLER_TEST_CODEX_BIN names the `codex` binary (CI installs
//! `@openai/codex@0.171.0` from npm); otherwise it says why it is skipped.

use std::time::Duration;

use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::support::{Backend, Harness, POSTGRES_ENV};

const CODEX_BIN_ENV: &str = "CODEX_POOLER_TEST_CODEX_BIN";

fn codex_command(
    codex: &str,
    h: &Harness,
    websockets: bool,
    prompt: &str,
) -> (tokio::process::Command, std::path::PathBuf) {
    let home = std::env::temp_dir().join(format!("cxp-codex-{}", uuid::Uuid::now_v7()));
    let codex_home = home.join(".codex");
    std::fs::create_dir_all(&codex_home).expect("codex home");
    let config = format!(
        "model = \"gpt-5.5\"\nmodel_provider = \"pool\"\n\n[model_providers.pool]\nname = \"OpenAI\"\nbase_url = \"{}/backend-api/codex\"\nenv_key = \"POOL_API_KEY\"\nwire_api = \"responses\"\nsupports_websockets = {websockets}\nrequires_openai_auth = false\nrequest_max_retries = 0\nstream_max_retries = 0\n",
        h.app.base_url()
    );
    std::fs::write(codex_home.join("config.toml"), config).expect("config");
    let mut cmd = tokio::process::Command::new(codex);
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--ephemeral",
        "--sandbox",
        "danger-full-access",
        prompt,
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HOME", &home)
    .env("CODEX_HOME", &codex_home)
    .env("POOL_API_KEY", &h.info.api_key)
    .env("RUST_LOG", "warn")
    .current_dir(&home)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    (cmd, home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_tool_turns_over_the_websocket_stay_on_one_account() {
    let Ok(codex) = std::env::var(CODEX_BIN_ENV) else {
        eprintln!("skipping the real Codex CLI websocket test: {CODEX_BIN_ENV} is not set");
        return;
    };
    let backend = match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Backend::Postgres(url),
        _ => Backend::Sqlite,
    };
    let h = Harness::start(backend).await;
    let (mut cmd, home) = codex_command(&codex, &h, true, "SIM:tool_call run the tool please");
    let output = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("codex exec finished in time")
        .expect("codex runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "codex exec failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(TEXT_SCENARIO_ANSWER),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows: Vec<_> = h
        .request_logs()
        .await
        .into_iter()
        .filter(|r| r["endpoint"] == "/backend-api/codex/responses")
        .collect();
    let ws_rows: Vec<_> = rows
        .iter()
        .filter(|r| r["transport"] == "websocket")
        .collect();
    assert_eq!(
        ws_rows.len(),
        2,
        "two websocket turns (tool call, then the answer): {rows:?}"
    );
    assert!(ws_rows.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(
        ws_rows[0]["upstream_identity_id"],
        ws_rows[1]["upstream_identity_id"]
    );
    assert!(
        rows.iter().all(|r| r["transport"] == "websocket"),
        "no HTTP fallback: {rows:?}"
    );
    let upstream_ws_accounts: std::collections::HashSet<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.transport == "websocket")
        .filter_map(|r| r.account_id)
        .collect();
    assert_eq!(upstream_ws_accounts.len(), 1);
    let _ = std::fs::remove_dir_all(&home);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_exec_over_http_sse_through_the_gateway() {
    let Ok(codex) = std::env::var(CODEX_BIN_ENV) else {
        eprintln!("skipping the real Codex CLI test: {CODEX_BIN_ENV} is not set");
        return;
    };
    let backend = match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Backend::Postgres(url),
        _ => Backend::Sqlite,
    };
    let h = Harness::start(backend).await;
    let (mut cmd, home) = codex_command(&codex, &h, false, "say hello");
    let output = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("codex exec finished in time")
        .expect("codex runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "codex exec failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(TEXT_SCENARIO_ANSWER),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let rows = h.request_logs().await;
    let row = rows
        .iter()
        .find(|r| r["endpoint"] == "/backend-api/codex/responses" && r["status"] == "succeeded")
        .unwrap_or_else(|| panic!("a succeeded responses row: {rows:?}"));
    assert_eq!(row["transport"], "http_sse");
    assert_eq!(row["usage_status"], "usage_known");
    assert!(row["total_tokens"].as_i64().is_some_and(|t| t > 0));
    assert!(row["settled_cost_micros"].as_i64().is_some_and(|c| c > 0));
    assert!(
        row["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("codex"))
    );
    let _ = std::fs::remove_dir_all(&home);
    h.stop().await;
}
