//! Drives the real Codex CLI against the simulator, once over the Responses
//! websocket and once over HTTP SSE.
//!
//! Set `CODEX_POOLER_TEST_CODEX_BIN` to the `codex` binary (0.171.0) to run it;
//! without it the test prints why it is skipped and passes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use upstream_sim::{SimConfig, Simulator, TEXT_SCENARIO_ANSWER};

const BIN_ENV: &str = "CODEX_POOLER_TEST_CODEX_BIN";

fn codex_bin() -> Option<PathBuf> {
    match std::env::var_os(BIN_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!("skipping the Codex CLI test: {BIN_ENV} is not set");
            None
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("sim-codex-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(codex_home: &Path, base_url: &str, account_id: &str, websockets: bool) {
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "sim"

[model_providers.sim]
name = "OpenAI"
base_url = "{base_url}/backend-api/codex"
env_key = "SIM_ACCESS_TOKEN"
wire_api = "responses"
requires_openai_auth = false
supports_websockets = {websockets}
request_max_retries = 0
stream_max_retries = 0
http_headers = {{ "chatgpt-account-id" = "{account_id}" }}
"#
    );
    std::fs::write(codex_home.join("config.toml"), config).expect("config written");
}

async fn run_codex(bin: &Path, websockets: bool) {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimConfig::default())
        .await
        .expect("simulator starts");
    let account = sim.accounts().into_iter().next().expect("account");
    let tag = if websockets { "ws" } else { "sse" };
    let home = TempDir::new(&format!("{tag}-home"));
    let codex_home = TempDir::new(&format!("{tag}-codexhome"));
    let work = TempDir::new(&format!("{tag}-work"));
    write_config(
        &codex_home.0,
        &sim.base_url(),
        &account.account_id,
        websockets,
    );

    let child = tokio::process::Command::new(bin)
        .args(["exec", "--skip-git-repo-check", "--ephemeral", "hello"])
        .current_dir(&work.0)
        .env("HOME", &home.0)
        .env("CODEX_HOME", &codex_home.0)
        .env("SIM_ACCESS_TOKEN", &account.access_token)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("codex starts");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("codex finishes within 120 s")
        .expect("codex output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex failed ({tag}): {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(TEXT_SCENARIO_ANSWER),
        "answer missing ({tag})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let rec = sim.requests();
    let model_calls: Vec<_> = rec
        .iter()
        .filter(|r| r.path == "/backend-api/codex/responses")
        .collect();
    assert!(
        model_calls
            .iter()
            .all(|r| !r.pool_key_flagged
                && r.account_id.as_deref() == Some(account.account_id.as_str())),
        "every model call authenticated as the account"
    );
    if websockets {
        assert!(
            model_calls
                .iter()
                .any(|r| r.transport == "websocket" && r.status == 101),
            "a websocket handshake was recorded"
        );
        assert!(
            model_calls.iter().any(|r| r.transport == "websocket"
                && r.direction.as_deref() == Some("client")
                && r.scenario.as_deref() == Some("text")),
            "the turn went over the websocket"
        );
        assert!(
            !model_calls
                .iter()
                .any(|r| r.transport == "http" && r.method == "POST"),
            "no HTTP fallback"
        );
    } else {
        assert!(
            model_calls
                .iter()
                .any(|r| r.transport == "http" && r.method == "POST" && r.status == 200),
            "the turn went over HTTP SSE"
        );
        assert!(
            !model_calls.iter().any(|r| r.transport == "websocket"),
            "no websocket"
        );
        let turn = model_calls
            .iter()
            .find(|r| r.method == "POST")
            .expect("turn");
        let has = |name: &str| turn.headers.iter().any(|(k, _)| k == name);
        assert!(
            has("originator") && has("x-codex-turn-metadata"),
            "Codex identity headers"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn codex_cli_over_websocket_and_http_sse() {
    let Some(bin) = codex_bin() else {
        return;
    };
    run_codex(&bin, true).await;
    run_codex(&bin, false).await;
}
