//! The Request logs page in a real headless Chromium, driven by
//! `tests/browser/request_logs.mjs` through playwright-core: sign-in through
//! the form as the owner and as an admin of one of two Pools, every filter
//! applied through the form, the warnings for a bogus status and a malformed
//! date with rows still listed, a row's detail and a link from it, live
//! updates with pause and resume, and the admin never shown the other Pool's
//! rows, accounts or models.
//!
//! Gated on CODEX_POOLER_TEST_CHROMIUM (the browser binary, e.g.
//! /usr/bin/chromium) and CODEX_POOLER_TEST_PLAYWRIGHT_DIR (a directory with
//! node_modules/playwright-core); `.ci/run` installs both. With
//! CODEX_POOLER_SCREENSHOT_DIR set, the SQLite run also saves
//! request-logs.png and request-log-detail.png there.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::console::{SECOND_ACCOUNT, SECOND_EMAIL, SECOND_MODEL, SECOND_POOL, two_pools};
use crate::on_both_backends;
use crate::support::{Backend, Harness};

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

async fn request_logs_in_chromium(backend: Backend) {
    let (chromium, playwright) = match browser_env() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("{why}");
            return;
        }
    };
    // Screenshots come from one run only, so two backends never write them at once.
    let screenshots = matches!(backend, Backend::Sqlite)
        .then(|| std::env::var(SCREENSHOT_ENV).ok())
        .flatten()
        .filter(|d| !d.is_empty());
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
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg("tests/browser/request_logs.mjs")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CODEX_POOLER_BROWSER_FIXTURE", fixture.to_string())
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
    .expect("node starts (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    h.stop().await;
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
on_both_backends!(request_logs_page, request_logs_in_chromium);
