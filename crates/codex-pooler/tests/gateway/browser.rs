//! The Request logs page in a real headless Chromium, driven by
//! `tests/browser/request_logs.mjs` through playwright-core: sign-in through
//! the form as the owner and as an admin of one of two Pools, every filter
//! applied through the form, the warnings for a bogus status and a malformed
//! date with rows still listed, a row's detail and a link from it, live
//! updates with pause and resume, and the admin never shown the other Pool's
//! rows, accounts or models.
//!
//! `first_run_story` walks the first-run story, driven by
//! `tests/browser/first_run.mjs`, on a gateway whose database is empty: the
//! bootstrap link, the owner, sign-in, a Pool, an auth.json from the simulator,
//! an API key copied from its page and used for a request, the key's last-used
//! time on the Pool page, and each step in the Audit logs.
//!
//! Gated on CODEX_POOLER_TEST_CHROMIUM (the browser binary, e.g.
//! /usr/bin/chromium) and CODEX_POOLER_TEST_PLAYWRIGHT_DIR (a directory with
//! node_modules/playwright-core); `.ci/run` installs both. With
//! CODEX_POOLER_SCREENSHOT_DIR set, the SQLite runs also save
//! request-logs.png, request-log-detail.png and one first-run-*.png per page
//! of the first run there.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use codex_pooler::app::RunningApp;
use codex_pooler::config::Settings;
use serde_json::{Value, json};
use upstream_sim::{AccountSpec, SimConfig, Simulator};

use crate::console::{SECOND_ACCOUNT, SECOND_EMAIL, SECOND_MODEL, SECOND_POOL, two_pools};
use crate::on_both_backends;
use crate::support::{Backend, Harness, create_pg_database, drop_pg_database, temp_dir};

const CHROMIUM_ENV: &str = "CODEX_POOLER_TEST_CHROMIUM";
const PLAYWRIGHT_ENV: &str = "CODEX_POOLER_TEST_PLAYWRIGHT_DIR";
const SCREENSHOT_ENV: &str = "CODEX_POOLER_SCREENSHOT_DIR";

/// The browser and playwright-core locations, or why the test is skipped.
fn browser_env() -> Result<(String, String), String> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (get(CHROMIUM_ENV), get(PLAYWRIGHT_ENV)) {
        (Some(chromium), Some(playwright)) => {
            assert!(
                Path::new(&chromium).is_file(),
                "{CHROMIUM_ENV}={chromium} is not a file"
            );
            assert!(
                Path::new(&playwright)
                    .join("node_modules/playwright-core")
                    .is_dir(),
                "{PLAYWRIGHT_ENV}={playwright} has no node_modules/playwright-core"
            );
            Ok((chromium, playwright))
        }
        _ => Err(format!(
            "skipping the browser test: set {CHROMIUM_ENV} (e.g. /usr/bin/chromium) and \
             {PLAYWRIGHT_ENV} (a directory with node_modules/playwright-core); .ci/run does"
        )),
    }
}

/// Where the SQLite run saves screenshots, if asked to. Screenshots come from
/// one run only, so two backends never write them at once.
fn screenshot_dir(backend: &Backend) -> Option<String> {
    matches!(backend, Backend::Sqlite)
        .then(|| std::env::var(SCREENSHOT_ENV).ok())
        .flatten()
        .filter(|d| !d.is_empty())
}

/// Runs `tests/browser/<script>` with Node against the fixture.
async fn run_script(
    script: &str,
    fixture: &Value,
    chromium: String,
    playwright: String,
    screenshots: Option<String>,
) -> Output {
    let script = format!("tests/browser/{script}");
    let fixture = fixture.to_string();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CODEX_POOLER_BROWSER_FIXTURE", fixture)
            .env(CHROMIUM_ENV, chromium)
            .env(PLAYWRIGHT_ENV, playwright)
            .env_remove(SCREENSHOT_ENV);
        if let Some(dir) = screenshots {
            cmd.env(SCREENSHOT_ENV, dir);
        }
        cmd.output()
    })
    .await
    .expect("join")
    .expect("node starts (is Node.js installed?)")
}

/// Prints the script's output and fails the test if the script failed.
fn assert_script_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

async fn request_logs_in_chromium(backend: Backend) {
    let (chromium, playwright) = match browser_env() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("{why}");
            return;
        }
    };
    let screenshots = screenshot_dir(&backend);
    let h = Harness::start(backend).await;
    let t = two_pools(&h).await;
    let fixture = json!({
        "base_url": h.app.base_url(),
        "owner": {"email": h.info.admin_email, "password": h.info.admin_password},
        "admin": {"email": t.admin_email, "password": t.admin_password},
        "demo_pool": {"id": h.info.pool_id, "name": "Demo Pool"},
        "demo_accounts": t.demo_accounts.iter()
            .map(|(id, label)| json!({"id": id, "label": label}))
            .collect::<Vec<_>>(),
        "demo_model": "gpt-5.5",
        "demo_key": h.info.api_key,
        "second_pool": {"id": t.second_pool_id, "name": SECOND_POOL},
        "second_account": {"id": t.second_identity_id, "label": SECOND_ACCOUNT, "email": SECOND_EMAIL},
        "second_model": SECOND_MODEL,
        "second_key": t.second_key,
        "rows": {
            "ok": t.ok_id,
            "failed": t.failed_id,
            "rejected": t.rejected_id,
            "second": t.second_row_id,
        },
        "client_request_id": "two-pools-corr-1",
        "paused_prefix": t.paused_prefix,
    });
    let output = run_script(
        "request_logs.mjs",
        &fixture,
        chromium,
        playwright,
        screenshots,
    )
    .await;
    h.stop().await;
    assert_script_passed(&output);
}
on_both_backends!(request_logs_page, request_logs_in_chromium);

/// The email of the simulator account the first-run story imports.
const FIRST_RUN_ACCOUNT_EMAIL: &str = "first-run@sim.test";

/// A gateway on an empty database (no operator, Pool or key), unlike the
/// seeded [`Harness`]: the state `serve` starts in on a first run.
struct EmptyGateway {
    sim: Simulator,
    app: RunningApp,
    data_dir: std::path::PathBuf,
    cleanup_db: Option<(String, String)>,
}

impl EmptyGateway {
    async fn start(backend: &Backend) -> EmptyGateway {
        let sim = Simulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SimConfig {
                accounts: 0,
                ..SimConfig::default()
            },
        )
        .await
        .expect("simulator starts");
        let data_dir = temp_dir();
        let (url, cleanup_db) = match backend {
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
        let app = RunningApp::spawn(settings).await.expect("gateway starts");
        EmptyGateway {
            sim,
            app,
            data_dir,
            cleanup_db,
        }
    }

    async fn stop(self) {
        self.app.stop().await.expect("gateway stops");
        self.sim.shutdown().await;
        if let Some((admin, name)) = self.cleanup_db {
            drop_pg_database(&admin, &name).await;
        }
        let _ = std::fs::remove_dir_all(self.data_dir);
    }
}

async fn first_run_in_chromium(backend: Backend) {
    let (chromium, playwright) = match browser_env() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("{why}");
            return;
        }
    };
    let screenshots = screenshot_dir(&backend);
    let g = EmptyGateway::start(&backend).await;
    // What `serve` prints on an empty database: the link to create the owner.
    let token = g
        .app
        .bootstrap_token
        .clone()
        .expect("a bootstrap token on an empty database");
    let account = g.sim.create_account(AccountSpec {
        email: Some(FIRST_RUN_ACCOUNT_EMAIL.into()),
        plan_type: Some("pro".into()),
        ..AccountSpec::default()
    });
    let auth_json = g
        .sim
        .auth_json(&account.account_id)
        .expect("the simulator's auth.json");
    let fixture = json!({
        "base_url": g.app.base_url(),
        "bootstrap_link": format!("{}/bootstrap?token={token}", g.app.base_url()),
        "owner": {"email": "owner@first-run.test", "password": "first-run-owner-pw"},
        "pool": {"slug": "team", "name": "Team"},
        // Pretty-printed, as the file under ~/.codex looks when pasted.
        "auth_json": serde_json::to_string_pretty(&auth_json).expect("auth.json text"),
        "account_email": FIRST_RUN_ACCOUNT_EMAIL,
        "key_name": "laptop",
        "admin_email": "admin@first-run.test",
        "model": "gpt-5.5",
    });
    let output = run_script("first_run.mjs", &fixture, chromium, playwright, screenshots).await;
    g.stop().await;
    assert_script_passed(&output);
}
on_both_backends!(first_run_story, first_run_in_chromium);
