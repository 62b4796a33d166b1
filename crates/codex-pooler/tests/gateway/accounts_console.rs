//! The console's account and key management beyond the first run: rename,
//! refresh now (and its audited failure), replace credentials, delete,
//! device-code linking against the simulator, the admin's Pool scope on each
//! of them, the archived Pool that takes nothing, the API key wizard and the
//! Pools list's health figures.

use codex_pooler::control;
use codex_pooler::store::{AuditActor, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use upstream_sim::AccountSpec;

use crate::console::{Browser, import_sim_account, ready_device_link};
use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

async fn audit_total(h: &Harness) -> i64 {
    h.app
        .runtime
        .store
        .count_all_audit_events()
        .await
        .expect("count")
}

/// The newest audit event's (action, outcome, details).
async fn last_audit(h: &Harness) -> (String, String, Value) {
    let q = "SELECT action, outcome, details FROM audit_events ORDER BY occurred_at DESC, id DESC LIMIT 1";
    let (action, outcome, details): (String, String, String) = match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query_as(q).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_as(q).fetch_one(p).await,
    }
    .expect("audit row");
    (
        action,
        outcome,
        serde_json::from_str(&details).expect("details json"),
    )
}

async fn pool_json(h: &Harness, pool_id: &str) -> Value {
    h.http
        .get(h.url(&format!("/admin/api/pools/{pool_id}")))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("pool json")
        .json()
        .await
        .expect("json")
}

fn labels(detail: &Value) -> Vec<String> {
    detail["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["label"].as_str().expect("label").to_owned())
        .collect()
}

/// Sends a JSON change as `b` (session cookie + CSRF header).
async fn api(b: &Browser, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
    let r = b
        .http
        .request(method, format!("{}{path}", b.base))
        .header("cookie", b.cookie.clone().expect("cookie"))
        .header("x-csrf-token", &b.csrf)
        .header("origin", &b.base)
        .json(&body)
        .send()
        .await
        .expect("api");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Rotates the account's tokens at the simulator behind the gateway's back,
/// so the gateway's refresh token becomes a reused one.
async fn rotate_behind_gateway(h: &Harness, account_id: &str) {
    let auth = h.sim.auth_json(account_id).expect("auth.json");
    let refresh = auth["tokens"]["refresh_token"].as_str().expect("rt");
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/token", h.sim.base_url()))
        .json(
            &json!({"grant_type": "refresh_token", "refresh_token": refresh,
                      "client_id": "app_EMoamEEZ73f0CkXaXp7hrann"}),
        )
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), 200, "the simulator rotates the tokens");
}

async fn account_management(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let pool = store
        .create_pool(&cli, "accounts", "Accounts")
        .await
        .expect("pool");
    let base = format!("/admin/pools/{}/upstreams", pool.id);
    let (identity, account) = import_sim_account(&h, &pool.id, "acct-a").await;
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // Refresh now: new tokens, quota windows read, one audit event.
    let before = audit_total(&h).await;
    let page = b.post(&format!("{base}/{identity}/refresh"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    let (action, outcome, details) = last_audit(&h).await;
    assert_eq!(
        (action.as_str(), outcome.as_str()),
        ("upstream_account.refresh", "succeeded")
    );
    assert!(
        details["quota_windows"].as_i64().unwrap_or(0) >= 1,
        "{details}"
    );
    let page = b.get(&page.location).await;
    assert!(page.body.contains("Tokens refreshed"), "{}", page.body);
    assert!(
        page.body
            .contains("resets in <span data-countdown-seconds="),
        "quota windows show a live reset countdown"
    );
    assert!(
        !page.body.contains("1970-"),
        "reset times are read as seconds, not milliseconds"
    );
    assert!(page.body.contains("ready for traffic"));

    // A refresh token reused elsewhere: the failure is explained, audited once
    // as failed, and the account is marked for a new login.
    rotate_behind_gateway(&h, &account).await;
    let before = audit_total(&h).await;
    let page = b.post(&format!("{base}/{identity}/refresh"), &[]).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(
        page.body.contains("refresh failed at token refresh"),
        "{}",
        page.body
    );
    assert_eq!(audit_total(&h).await, before + 1);
    let (action, outcome, details) = last_audit(&h).await;
    assert_eq!(
        (action.as_str(), outcome.as_str()),
        ("upstream_account.refresh", "failed")
    );
    assert_eq!(details["failed_step"], "token_refresh");

    // Replace credentials: another account's file and a malformed one are
    // refused with nothing written; the same account's fresh file works.
    let stranger = h.sim.create_account(AccountSpec::default());
    let stranger_auth = h
        .sim
        .auth_json(&stranger.account_id)
        .expect("auth")
        .to_string();
    let before = audit_total(&h).await;
    let page = b
        .post(
            &format!("{base}/{identity}/credentials"),
            &[("auth_json", &stranger_auth)],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body.contains("belongs to another ChatGPT account"),
        "{}",
        page.body
    );
    let page = b
        .post(
            &format!("{base}/{identity}/credentials"),
            &[("auth_json", "{\"tokens\": {}")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("invalid auth.json"), "{}", page.body);
    assert_eq!(audit_total(&h).await, before, "refusals write nothing");
    let fresh = h.sim.auth_json(&account).expect("auth").to_string();
    let page = b
        .post(
            &format!("{base}/{identity}/credentials"),
            &[("auth_json", &fresh)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    assert_eq!(last_audit(&h).await.0, "upstream.credentials_replace");
    let page = b.post(&format!("{base}/{identity}/refresh"), &[]).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "the replaced credentials refresh again: {}",
        page.body
    );

    // Rename.
    let page = b
        .post(&format!("{base}/{identity}/rename"), &[("label", "  ")])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("label must be 1-120 characters"));
    let page = b
        .post(
            &format!("{base}/{identity}/rename"),
            &[("label", "Primary")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(labels(&pool_json(&h, &pool.id).await), vec!["Primary"]);

    // An account shared with a second Pool survives deletion from one.
    let second = store
        .create_pool(&cli, "second", "Second")
        .await
        .expect("pool");
    let shared_auth = h.sim.auth_json(&account).expect("auth").to_string();
    let mut parsed = control::parse_auth_json(&shared_auth, None).expect("parse");
    parsed.identity.base_url = Some(h.sim.base_url());
    parsed.identity.auth_base_url = Some(h.sim.base_url());
    let shared =
        control::import_auth_json(store, &h.app.runtime.secret_box, &cli, &second.id, &parsed)
            .await
            .expect("import");
    assert_eq!(shared.identity_id, identity, "same account, same identity");

    // Delete: the label must be typed exactly.
    let before = audit_total(&h).await;
    let page = b
        .post(
            &format!("{base}/{identity}/delete"),
            &[("confirm_label", "primary")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("type the account"), "{}", page.body);
    assert_eq!(audit_total(&h).await, before);
    let page = b
        .post(
            &format!("{base}/{identity}/delete"),
            &[("confirm_label", "Primary")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(audit_total(&h).await, before + 1);
    let (action, _, details) = last_audit(&h).await;
    assert_eq!(action, "upstream_account.delete");
    assert_eq!(details["account_deleted"], false, "still used by Second");
    assert!(labels(&pool_json(&h, &pool.id).await).is_empty());
    assert_eq!(labels(&pool_json(&h, &second.id).await).len(), 1);
    let (status, body) = api(
        &b,
        reqwest::Method::DELETE,
        &format!("/admin/api/pools/{}/upstreams/{identity}", second.id),
        json!({"confirm_label": "Primary"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account_deleted"], true, "the last Pool let it go");

    // An account of another Pool is added here and keeps serving both.
    let third = store
        .create_pool(&cli, "third", "Third")
        .await
        .expect("pool");
    let (elsewhere, _) = import_sim_account(&h, &third.id, "acct-elsewhere").await;
    let page = b.get(&format!("/admin/pools/{}", pool.id)).await;
    assert!(
        page.body
            .contains(&format!("<option value=\"{elsewhere}\">acct-elsewhere")),
        "offered on the Pool page"
    );
    let before = audit_total(&h).await;
    let page = b
        .post(
            &format!("{base}/assign"),
            &[("identity_id", elsewhere.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    assert_eq!(last_audit(&h).await.0, "pool.account_assign");
    assert_eq!(
        labels(&pool_json(&h, &pool.id).await),
        vec!["acct-elsewhere"]
    );
    assert_eq!(
        labels(&pool_json(&h, &third.id).await),
        vec!["acct-elsewhere"]
    );
    let page = b
        .post(
            &format!("{base}/assign"),
            &[("identity_id", elsewhere.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "already in this Pool");
    assert_eq!(audit_total(&h).await, before + 1);
    let page = b
        .post(
            &format!("{base}/{elsewhere}/delete"),
            &[("confirm_label", "acct-elsewhere")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        labels(&pool_json(&h, &third.id).await),
        vec!["acct-elsewhere"]
    );

    // The admin of another Pool reaches none of this, by page or by JSON.
    let (other_identity, _) = import_sim_account(&h, &pool.id, "acct-b").await;
    control::create_operator(
        store,
        &cli,
        "scoped@example.test",
        "scoped-password-1",
        "admin",
    )
    .await
    .expect("admin");
    let admin = store
        .find_operator_by_email("scoped@example.test")
        .await
        .expect("find")
        .expect("admin");
    store
        .assign_operator_pool(&cli, &admin.id, &h.info.pool_id)
        .await
        .expect("assign");
    let a = Browser::login(&h, "scoped@example.test", "scoped-password-1").await;
    let before = audit_total(&h).await;
    for (path, fields) in [
        (
            format!("{base}/{other_identity}/rename"),
            vec![("label", "x")],
        ),
        (format!("{base}/{other_identity}/refresh"), vec![]),
        (
            format!("{base}/{other_identity}/credentials"),
            vec![("auth_json", fresh.as_str())],
        ),
        (
            format!("{base}/{other_identity}/delete"),
            vec![("confirm_label", "acct-b")],
        ),
        (
            format!("/admin/pools/{}/device-links", pool.id),
            vec![("label", "x")],
        ),
    ] {
        let page = a.post(&path, &fields).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!page.body.contains("acct-b"), "{path} leaks nothing");
    }
    // Nor can they pull an account of a Pool they do not see into theirs.
    let page = a
        .post(
            &format!("/admin/pools/{}/upstreams/assign", h.info.pool_id),
            &[("identity_id", other_identity.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = a.get(&format!("/admin/pools/{}", h.info.pool_id)).await;
    assert!(!page.body.contains("acct-b"), "not offered either");
    // Smuggling the other Pool's account under the assigned Pool's id.
    let page = a
        .post(
            &format!(
                "/admin/pools/{}/upstreams/{other_identity}/rename",
                h.info.pool_id
            ),
            &[("label", "x")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let (status, _) = api(
        &a,
        reqwest::Method::POST,
        &format!(
            "/admin/api/pools/{}/upstreams/{other_identity}/refresh",
            pool.id
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(audit_total(&h).await, before, "nothing written");
    assert_eq!(labels(&pool_json(&h, &pool.id).await), vec!["acct-b"]);

    // An account shared with a Pool the admin does not see: its label and
    // tokens are not theirs to change, though they may refresh or drop it.
    let (shared_id, shared_account) = import_sim_account(&h, &pool.id, "acct-shared").await;
    let auth = h.sim.auth_json(&shared_account).expect("auth").to_string();
    let mut parsed = control::parse_auth_json(&auth, Some("acct-shared")).expect("parse");
    parsed.identity.base_url = Some(h.sim.base_url());
    parsed.identity.auth_base_url = Some(h.sim.base_url());
    control::import_auth_json(
        store,
        &h.app.runtime.secret_box,
        &cli,
        &h.info.pool_id,
        &parsed,
    )
    .await
    .expect("import");
    h.app.runtime.invalidate_caches();
    let mine = format!("/admin/pools/{}/upstreams/{shared_id}", h.info.pool_id);
    let before = audit_total(&h).await;
    let page = a
        .post(&format!("{mine}/rename"), &[("label", "mine now")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("only the owner can rename it"));
    let fresh = h.sim.auth_json(&shared_account).expect("auth").to_string();
    let page = a
        .post(
            &format!("{mine}/credentials"),
            &[("auth_json", fresh.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(audit_total(&h).await, before, "nothing written");
    let page = a.post(&format!("{mine}/refresh"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);

    // DELETE without a body: the confirmation rides in the query.
    let r = h
        .http
        .delete(h.url(&format!(
            "/admin/api/pools/{}/upstreams/{shared_id}?confirm_label=acct-shared",
            h.info.pool_id
        )))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::OK);
    let r = h
        .http
        .delete(h.url(&format!(
            "/admin/api/pools/{}/upstreams/{shared_id}",
            pool.id
        )))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no confirmation"
    );
    h.stop().await;
}
on_both_backends!(upstream_account_management, account_management);

async fn device_code_link(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let pool = store
        .create_pool(&cli, "linked", "Linked")
        .await
        .expect("pool");
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // Start: the page shows the code and where to enter it.
    let before = audit_total(&h).await;
    let page = b
        .post(
            &format!("/admin/pools/{}/device-links", pool.id),
            &[("label", "Linked account")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    assert_eq!(last_audit(&h).await.0, "upstream_account.device_link_start");
    let flow_path = page.location.clone();
    assert!(flow_path.starts_with(&format!("/admin/pools/{}/device-links/", pool.id)));
    let page = b.get(&flow_path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("SIM"), "user code shown: {}", page.body);
    assert!(page.body.contains("/codex/device"));
    assert!(page.body.contains("data-auto-submit-after="));

    // Not entered yet: still waiting, nothing written.
    let token_polls = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.path == "/api/accounts/deviceauth/token")
            .count()
    };
    let before = audit_total(&h).await;
    let page = b.post(&format!("{flow_path}/poll"), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Not accepted yet"), "{}", page.body);
    assert_eq!(audit_total(&h).await, before);
    assert!(labels(&pool_json(&h, &pool.id).await).is_empty());
    assert_eq!(token_polls(), 1);
    // Asked again at once: still pending, and the provider is not asked
    // faster than its interval.
    let page = b.post(&format!("{flow_path}/poll"), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Not accepted yet"));
    assert_eq!(token_polls(), 1, "no poll before the interval is over");
    h.app.runtime.advance_clock(3);

    // Entered: the account joins the Pool, audited once; polling again is refused.
    let page = b.post(&format!("{flow_path}/poll"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location.contains("notice=device_linked"));
    assert_eq!(audit_total(&h).await, before + 1);
    assert_eq!(last_audit(&h).await.0, "upstream_account.oauth_device_link");
    assert_eq!(
        labels(&pool_json(&h, &pool.id).await),
        vec!["Linked account"]
    );
    let page = b.get(&format!("/admin/pools/{}", pool.id)).await;
    assert!(
        page.body
            .contains("resets in <span data-countdown-seconds="),
        "the linked account's quota windows are read at once"
    );
    let page = b.post(&format!("{flow_path}/poll"), &[]).await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("completed"), "{}", page.body);

    // The linked account serves requests.
    let (_, key) = control::create_api_key(store, &cli, &pool.id, "k", None, None)
        .await
        .expect("key");
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&text_request("hello", "linked-1"))
        .send()
        .await
        .expect("responses");
    assert_eq!(r.status(), 200);
    let _ = r.text().await;

    // The JSON twin: start, read, poll until linked.
    let (status, started) = api(
        &b,
        reqwest::Method::POST,
        &format!("/admin/api/pools/{}/device-links", pool.id),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let flow_id = started["device_link"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(started["device_link"]["user_code"].is_string());
    assert!(
        started.to_string().find("deviceauth_sim").is_none(),
        "the device authorization id is never shown"
    );
    let poll = format!("/admin/api/pools/{}/device-links/{flow_id}/poll", pool.id);
    let (_, first) = api(&b, reqwest::Method::POST, &poll, json!({})).await;
    assert_eq!(first["status"], "pending");
    h.app.runtime.advance_clock(3);
    let (_, second) = api(&b, reqwest::Method::POST, &poll, json!({})).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(labels(&pool_json(&h, &pool.id).await).len(), 2);

    // An expired link is closed without reaching the identity provider.
    let flow = ready_device_link(&h, &pool.id).await;
    match store {
        Store::Sqlite(p) => {
            sqlx::query("UPDATE upstream_link_flows SET expires_at = 1 WHERE id = $1")
                .bind(&flow)
                .execute(p)
                .await
                .map(|_| ())
        }
        Store::Postgres(p) => {
            sqlx::query("UPDATE upstream_link_flows SET expires_at = 1 WHERE id = $1")
                .bind(&flow)
                .execute(p)
                .await
                .map(|_| ())
        }
    }
    .expect("expire");
    let page = b
        .post(
            &format!("/admin/pools/{}/device-links/{flow}/poll", pool.id),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert_eq!(labels(&pool_json(&h, &pool.id).await).len(), 2);
    h.stop().await;
}
on_both_backends!(device_code_link_against_the_simulator, device_code_link);

async fn archived_pool(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let pool = store
        .create_pool(&AuditActor::cli(), "old", "Old")
        .await
        .expect("pool");
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = b
        .post(
            &format!("/admin/pools/{}/status", pool.id),
            &[("status", "archived"), ("confirm_slug", "old")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let account = h.sim.create_account(AccountSpec::default());
    let auth = h
        .sim
        .auth_json(&account.account_id)
        .expect("auth")
        .to_string();
    let before = audit_total(&h).await;
    for (path, fields) in [
        (
            format!("/admin/pools/{}/upstreams", pool.id),
            vec![("auth_json", auth.as_str())],
        ),
        (
            format!("/admin/pools/{}/api-keys", pool.id),
            vec![("name", "late key")],
        ),
        (format!("/admin/pools/{}/device-links", pool.id), vec![]),
    ] {
        let page = b.post(&path, &fields).await;
        assert_eq!(page.status, StatusCode::CONFLICT, "{path}: {}", page.body);
        assert!(
            page.body.contains("this Pool is archived"),
            "{path}: {}",
            page.body
        );
    }
    let (status, body) = api(
        &b,
        reqwest::Method::POST,
        &format!("/admin/api/pools/{}/api-keys", pool.id),
        json!({"name": "late"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let page = b
        .get(&format!("/admin/pools/{}/api-keys/new", pool.id))
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert_eq!(audit_total(&h).await, before, "nothing written");
    let detail = pool_json(&h, &pool.id).await;
    assert!(detail["upstreams"].as_array().expect("list").is_empty());
    assert!(detail["api_keys"].as_array().expect("list").is_empty());
    h.stop().await;
}
on_both_backends!(archived_pool_takes_no_accounts_or_keys, archived_pool);

fn wizard_url(pool_id: &str, go: &str, fields: &[(&str, &str)]) -> String {
    let mut all = vec![("go", go)];
    all.extend_from_slice(fields);
    format!(
        "/admin/pools/{pool_id}/api-keys/new?{}",
        serde_urlencoded::to_string(&all).expect("query")
    )
}

async fn key_wizard(backend: Backend) {
    let h = Harness::start(backend).await;
    let pool = h.info.pool_id.clone();
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // Each step checks the answers before it and keeps every answer.
    let page = b.get(&format!("/admin/pools/{pool}/api-keys/new")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("aria-current=\"step\">1. Basics"));
    let page = b.get(&wizard_url(&pool, "models", &[("name", "")])).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("name must be 1-120 characters"));
    assert!(page.body.contains("aria-current=\"step\">1. Basics"));
    let answers = [
        ("name", "ci robot"),
        ("expires_in_days", "30"),
        ("allowed_models", "gpt-5.5\ngpt-5.4"),
        ("reasoning_mode", "maximum"),
        ("reasoning_effort", "high"),
        ("max_requests_per_minute", "120"),
        ("max_tokens_per_day", "50000"),
        ("max_spend_usd_per_month", "25.50"),
    ];
    let page = b.get(&wizard_url(&pool, "models", &answers[..2])).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("aria-current=\"step\">2. Models"));
    assert!(
        page.body.contains("name=\"name\" value=\"ci robot\""),
        "earlier answers ride along as hidden fields"
    );
    let mut wrong = answers.to_vec();
    wrong.push(("max_tokens_per_week", "10"));
    let page = b.get(&wizard_url(&pool, "review", &wrong)).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("aria-current=\"step\">4. Limits"));
    assert!(
        page.body
            .contains("tokens per week cannot be lower than tokens per day")
    );
    let page = b.get(&wizard_url(&pool, "review", &answers)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for shown in [
        "ci robot",
        "in 30 days",
        "gpt-5.5, gpt-5.4",
        "up to high",
        "$25.50",
    ] {
        assert!(page.body.contains(shown), "review shows {shown}");
    }

    // The review's POST creates the key with its policy, audited once.
    let mut fields = answers.to_vec();
    fields.push(("from_wizard", "1"));
    let before = audit_total(&h).await;
    let page = b
        .post(&format!("/admin/pools/{pool}/api-keys"), &fields)
        .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    let (action, _, details) = last_audit(&h).await;
    assert_eq!(action, "api_key.create");
    assert_eq!(details["policy"]["max_requests_per_minute"], 120);
    let start = page.body.find("value=\"sk-cxp-").expect("raw key") + "value=\"".len();
    let key = page.body[start..]
        .split('"')
        .next()
        .expect("key")
        .to_owned();
    let key_row = h
        .app
        .runtime
        .store
        .find_api_key_by_prefix(&key[..19])
        .await
        .expect("find")
        .expect("row");
    let policy = h
        .app
        .runtime
        .store
        .load_key_policy(&key_row.id)
        .await
        .expect("policy");
    assert_eq!(policy.maximum_reasoning_effort.as_deref(), Some("high"));
    assert_eq!(policy.max_tokens_per_day, Some(50_000));
    assert_eq!(policy.max_spend_micros_per_month, Some(25_500_000));
    assert!(key_row.expires_at.is_some());
    let page = b.get(&format!("/admin/pools/{pool}")).await;
    assert!(
        page.body
            .contains("2 models · effort ≤ high · 120 req/min · 50.0k tok/day · $25.50/month"),
        "the key table sums up the policy"
    );

    // The policy is in force: a model outside the list and an effort above
    // the ceiling are refused; an allowed request passes.
    let mut body = text_request("hi", "wizard-1");
    body["model"] = json!("gpt-5.2");
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut body = text_request("hi", "wizard-2");
    body["reasoning"] = json!({"effort": "xhigh"});
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&text_request("hi", "wizard-3"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.text().await;

    // A wizard POST with a bad answer returns to that step, writing nothing.
    let mut bad = answers.to_vec();
    bad[4] = ("reasoning_effort", "enormous");
    bad.push(("from_wizard", "1"));
    let before = audit_total(&h).await;
    let page = b.post(&format!("/admin/pools/{pool}/api-keys"), &bad).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("aria-current=\"step\">3. Enforcement"));
    assert_eq!(audit_total(&h).await, before);

    // A long name of non-ASCII letters counts characters, not bytes, and a
    // refusal after the review keeps every answer.
    let long_name = "é".repeat(100);
    let mut fields = answers.to_vec();
    fields[0] = ("name", long_name.as_str());
    fields.push(("from_wizard", "1"));
    let page = b
        .post(&format!("/admin/pools/{pool}/api-keys"), &fields)
        .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);

    // The JSON twin takes the same fields and the same rules.
    let (status, body) = api(
        &b,
        reqwest::Method::POST,
        &format!("/admin/api/pools/{pool}/api-keys"),
        json!({"name": "api robot", "allowed_models": ["gpt-5.5"], "enforced_model": "gpt-5.5",
               "policy": {"enforced_service_tier": "flex", "max_output_tokens_per_request": 4000}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api(
        &b,
        reqwest::Method::POST,
        &format!("/admin/api/pools/{pool}/api-keys"),
        json!({"name": "both", "policy": {"enforced_reasoning_effort": "low",
                                            "maximum_reasoning_effort": "high"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("either an enforced or a maximum"),
        "{body}"
    );
    h.stop().await;
}
on_both_backends!(api_key_wizard, key_wizard);

async fn pools_health(backend: Backend) {
    let h = Harness::start(backend).await;
    for i in 0..3 {
        let r = h
            .http
            .post(h.url("/backend-api/codex/responses"))
            .bearer_auth(&h.info.api_key)
            .json(&text_request("count me", &format!("health-{i}")))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    h.flush().await;
    let listed: Value = h
        .http
        .get(h.url("/admin/api/pools"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("pools")
        .json()
        .await
        .expect("json");
    let demo = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["id"] == h.info.pool_id.as_str())
        .expect("demo pool")
        .clone();
    assert_eq!(demo["requests_last_5h"], 3, "{demo}");
    assert!(demo["tokens_last_5h"].as_i64().unwrap_or(0) > 0, "{demo}");
    let hourly = demo["hourly"].as_array().expect("hourly");
    assert_eq!(hourly.len(), 24);
    assert_eq!(hourly[23]["requests"], 3, "the current hour is last");
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = b.get("/admin/pools").await;
    assert!(page.body.contains("<svg class=\"traffic\""));
    assert!(page.body.contains("3 requests in the last 24 hours"));
    h.stop().await;
}
on_both_backends!(pools_list_shows_recent_traffic, pools_health);

/// The Pool page's readiness column shows this instance's routing health:
/// an open circuit with its probe countdown and the demotion after failures,
/// then the last success once the account answers again.
async fn readiness_shows_routing_health(backend: Backend) {
    let h = Harness::start_with(backend, 1, |_| {}).await;
    let id = h.sim.accounts()[0].account_id.clone();
    h.sim.queue_scenario(&id, "http_502", 3).expect("scenario");
    for _ in 0..3 {
        let r = h.responses(&text_request("fail", "readiness")).await;
        assert_eq!(r.status(), 502);
        let _ = r.text().await;
    }
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = b.get(&format!("/admin/pools/{}", h.info.pool_id)).await;
    assert!(
        page.body.contains("circuit open: gpt-5.5 ("),
        "{}",
        page.body
    );
    assert!(page.body.contains("tried last after a recent failure"));
    h.app.runtime.advance_clock(61);
    let r = h.responses(&text_request("probe", "readiness")).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let page = b.get(&format!("/admin/pools/{}", h.info.pool_id)).await;
    assert!(!page.body.contains("circuit open"), "{}", page.body);
    // "0s ago", or a second or two later on a busy machine.
    assert!(
        ["0s", "1s", "2s", "3s"]
            .iter()
            .any(|ago| page.body.contains(&format!("last success {ago} ago"))),
        "{}",
        page.body
    );
    h.stop().await;
}
on_both_backends!(
    readiness_shows_circuits_and_last_success,
    readiness_shows_routing_health
);

/// The owner changes an admin's Pools after creation; the admin's open
/// session sees the new scope on its next request.
async fn operator_pools_edit(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let other = store
        .create_pool(&cli, "moved", "Moved Pool")
        .await
        .expect("pool");
    let admin_id = control::create_operator(
        store,
        &cli,
        "mover@example.test",
        "mover-password-1",
        "admin",
    )
    .await
    .expect("admin");
    store
        .assign_operator_pool(&cli, &admin_id, &h.info.pool_id)
        .await
        .expect("assign");
    let a = Browser::login(&h, "mover@example.test", "mover-password-1").await;
    let page = a.get("/admin/pools").await;
    assert!(page.body.contains("Demo Pool") && !page.body.contains("Moved Pool"));

    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner.get("/admin/operators").await;
    assert!(
        page.body
            .contains(&format!("action=\"/admin/operators/{admin_id}/pools\""))
    );
    let before = audit_total(&h).await;
    let page = owner
        .post(
            &format!("/admin/operators/{admin_id}/pools"),
            &[("pool", other.id.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audit_total(&h).await, before + 1);
    let (action, _, details) = last_audit(&h).await;
    assert_eq!(action, "operator.update");
    assert_eq!(details["pools_added"], json!([other.id]));
    assert_eq!(details["pools_removed"], json!([h.info.pool_id]));
    let page = a.get("/admin/pools").await;
    assert!(
        page.body.contains("Moved Pool") && !page.body.contains("Demo Pool"),
        "the open session sees the new scope"
    );
    assert_eq!(
        a.get(&format!("/admin/pools/{}", h.info.pool_id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Refusals write nothing: an unknown Pool, an owner, an admin asking.
    let before = audit_total(&h).await;
    let (status, _) = api(
        &owner,
        reqwest::Method::POST,
        &format!("/admin/api/operators/{admin_id}/pools"),
        json!({"pool_ids": ["no-such-pool"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let owner_id = store
        .find_operator_by_email(&h.info.admin_email)
        .await
        .expect("find")
        .expect("owner")
        .id;
    let (status, _) = api(
        &owner,
        reqwest::Method::POST,
        &format!("/admin/api/operators/{owner_id}/pools"),
        json!({"pool_ids": []}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let page = a
        .post(
            &format!("/admin/operators/{admin_id}/pools"),
            &[("pool", h.info.pool_id.as_str())],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(audit_total(&h).await, before);
    h.stop().await;
}
on_both_backends!(owner_edits_an_admins_pools, operator_pools_edit);
