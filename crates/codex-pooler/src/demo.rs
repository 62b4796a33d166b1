//! `codex-pooler demo`: the gateway with an in-process upstream simulator, one
//! Pool holding the simulator's accounts, one API key, one owner and one
//! operator token, so a newcomer sees it work. Writes `demo.json`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::json;
use upstream_sim::{SimConfig, Simulator};

use crate::app::RunningApp;
use crate::config::Settings;
use crate::control;
use crate::store::AuditActor;

/// Everything a demo (or a test) needs to call the gateway.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoInfo {
    pub base_url: String,
    pub api_key: String,
    pub admin_url: String,
    pub admin_email: String,
    pub admin_password: String,
    pub operator_token: String,
    pub simulator_url: String,
    pub pool_id: String,
}

/// Creates the owner, Pool, accounts (from the simulator), key and operator token.
pub async fn seed(app: &RunningApp, sim: &Simulator) -> anyhow::Result<DemoInfo> {
    let rt = &app.runtime;
    let actor = AuditActor::cli();
    let admin_email = "owner@demo.codex-pooler.test".to_owned();
    let admin_password = control::generate_password();
    control::create_operator(&rt.store, &actor, &admin_email, &admin_password, "owner").await?;
    let operator_token =
        control::create_operator_token(&rt.store, &actor, &admin_email, "demo").await?;
    let pool = rt.store.create_pool(&actor, "demo", "Demo Pool").await?;
    for account in sim.accounts() {
        let auth = sim.auth_json(&account.account_id).ok_or_else(|| {
            anyhow::anyhow!("simulator has no auth.json for {}", account.account_id)
        })?;
        let mut parsed = control::parse_auth_json(&auth.to_string(), None)?;
        parsed.identity.base_url = Some(sim.base_url());
        parsed.identity.auth_base_url = Some(sim.base_url());
        control::import_auth_json(&rt.store, &rt.secret_box, &actor, &pool.id, &parsed).await?;
    }
    let (_, api_key) =
        control::create_api_key(&rt.store, &actor, &pool.id, "demo key", None, None).await?;
    rt.invalidate_caches();
    if let Err(err) = rt.sync_pool_catalog(&pool.id).await {
        tracing::warn!(error = %err, "demo catalog sync failed");
    }
    Ok(DemoInfo {
        base_url: app.base_url(),
        api_key,
        admin_url: format!("{}/admin", app.base_url()),
        admin_email,
        admin_password,
        operator_token,
        simulator_url: sim.base_url(),
        pool_id: pool.id,
    })
}

/// Runs the demo until Ctrl-C.
pub async fn run(
    mut settings: Settings,
    state_dir: PathBuf,
    accounts: usize,
) -> anyhow::Result<()> {
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)?;
    }
    std::fs::create_dir_all(&state_dir)?;
    settings.data_dir = state_dir.clone();
    settings.database_url = None;
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            accounts,
            ..SimConfig::default()
        },
    )
    .await?;
    // Accounts linked from the console (device code) talk to the simulator too.
    settings.upstream_base_url = sim.base_url();
    settings.auth_base_url = sim.base_url();
    let app = RunningApp::spawn(settings).await?;
    let info = seed(&app, &sim).await?;
    let demo_json = state_dir.join("demo.json");
    std::fs::write(&demo_json, serde_json::to_string_pretty(&info)?)?;
    let base = &info.base_url;
    let key = &info.api_key;
    println!(
        "\nCodex Pooler demo is running.\n\n  gateway:    {base}\n  simulator:  {sim_url} ({accounts} simulated accounts)\n  state:      {demo}\n  API key:    {key}\n  owner:      {email} / {password}\n  operator token: {op}\n",
        sim_url = info.simulator_url,
        demo = demo_json.display(),
        email = info.admin_email,
        password = info.admin_password,
        op = info.operator_token,
    );
    let curl_body = json!({"model": "gpt-5.5", "instructions": "", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}], "stream": true, "store": false});
    println!(
        "Try it with curl (streams server-sent events):\n\n  curl -N {base}/backend-api/codex/responses \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{curl_body}'\n"
    );
    println!(
        "See the request log:\n\n  curl -s {base}/admin/api/request-logs -H 'Authorization: Bearer {}'\n",
        info.operator_token
    );
    println!(
        "With the Codex CLI, add to $CODEX_HOME/config.toml:\n\n  model = \"gpt-5.5\"\n  model_provider = \"pool\"\n  [model_providers.pool]\n  name = \"OpenAI\"\n  base_url = \"{base}/backend-api/codex\"\n  env_key = \"POOL_API_KEY\"\n  wire_api = \"responses\"\n  supports_websockets = false\n  requires_openai_auth = false\n\nthen: POOL_API_KEY={key} codex exec --skip-git-repo-check 'hello'\n\nPress Ctrl-C to stop."
    );
    crate::app::shutdown_signal().await;
    app.stop().await?;
    sim.shutdown().await;
    Ok(())
}
