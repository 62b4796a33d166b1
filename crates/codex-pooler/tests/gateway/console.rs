//! The admin console over HTTP, as a browser without JavaScript would use it
//! (forms, redirects, the session cookie carried by hand), plus its JSON twins:
//! sign-in, bootstrap, Pools, auth.json import, API keys, audit events (exactly
//! one per change), CSRF refusals and the admin's Pool scope.

use codex_pooler::control;
use codex_pooler::store::{AuditActor, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use upstream_sim::AccountSpec;

use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

/// A browser-like client: no redirects followed, the session cookie kept by hand.
/// Shared with the other console test modules (`security`).
pub(crate) struct Browser {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) cookie: Option<String>,
    pub(crate) csrf: String,
}

/// A response's status, `Location` and body.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) location: String,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new(h: &Harness) -> Browser {
        Browser {
            base: h.app.base_url(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
            csrf: String::new(),
        }
    }

    pub(crate) async fn read(r: reqwest::Response) -> Page {
        Page {
            status: r.status(),
            location: r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: r.text().await.expect("body"),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        Self::read(req.send().await.expect("get")).await
    }

    /// POSTs a form as-is (no CSRF field added), with extra headers.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).expect("form"));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::read(req.send().await.expect("post")).await
    }

    /// POSTs a form the way the console's own pages do: with the CSRF field
    /// and same-origin browser headers.
    pub(crate) async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let origin = self.base.clone();
        self.post_raw(
            path,
            &all,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await
    }

    pub(crate) async fn login(h: &Harness, email: &str, password: &str) -> Browser {
        let mut b = Browser::new(h);
        let r = b
            .http
            .post(format!("{}/login", b.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([("email", email), ("password", password)])
                    .expect("form"),
            )
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "login succeeds");
        let set_cookie = r.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_owned();
        assert!(
            set_cookie.contains("HttpOnly")
                && set_cookie.contains("SameSite=Lax")
                && set_cookie.contains("Path=/")
        );
        b.cookie = Some(set_cookie.split(';').next().expect("pair").to_owned());
        let me: Value = b
            .http
            .get(format!("{}/admin/api/me", b.base))
            .header("cookie", b.cookie.clone().expect("cookie"))
            .send()
            .await
            .expect("me")
            .json()
            .await
            .expect("json");
        b.csrf = me["csrf_token"].as_str().expect("csrf token").to_owned();
        b
    }
}

async fn audit_total(h: &Harness) -> i64 {
    h.app
        .runtime
        .store
        .count_all_audit_events()
        .await
        .expect("count")
}

async fn exec_sql(h: &Harness, sql: &'static str) {
    match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    }
    .expect("sql");
}

/// Runs a change and asserts it wrote exactly one audit event.
macro_rules! one_audit_event {
    ($h:expr, $what:expr, $change:expr) => {{
        let before = audit_total($h).await;
        let out = $change;
        assert_eq!(
            audit_total($h).await - before,
            1,
            "{} writes exactly one audit event",
            $what
        );
        out
    }};
}

/// Runs a refused change and asserts it wrote nothing to the audit log.
macro_rules! no_audit_event {
    ($h:expr, $what:expr, $change:expr) => {{
        let before = audit_total($h).await;
        let out = $change;
        assert_eq!(
            audit_total($h).await,
            before,
            "{} writes no audit event",
            $what
        );
        out
    }};
}

fn path_id(location: &str, prefix: &str) -> String {
    location
        .strip_prefix(prefix)
        .and_then(|rest| rest.split(['?', '#', '/']).next())
        .expect("id in location")
        .to_owned()
}

fn raw_key(body: &str) -> String {
    let start = body.find("value=\"sk-cxp-").expect("raw key on the page") + "value=\"".len();
    body[start..].split('"').next().expect("key").to_owned()
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

async fn first_run_story(backend: Backend) {
    let h = Harness::start(backend).await;
    let b = one_audit_event!(
        &h,
        "login",
        Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await
    );

    // Create a Pool; a duplicate slug is refused precisely and writes nothing.
    let page = one_audit_event!(
        &h,
        "pool create",
        b.post("/admin/pools", &[("slug", "team"), ("name", "Team")])
            .await
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let pool_id = path_id(&page.location, "/admin/pools/");
    let page = no_audit_event!(
        &h,
        "duplicate slug",
        b.post("/admin/pools", &[("slug", "team"), ("name", "Again")])
            .await
    );
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(
        page.body.contains("team") && page.body.contains("already exists; choose another slug"),
        "{}",
        page.body
    );
    let page = b.get("/admin/pools").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Team") && page.body.contains("Demo Pool"));

    // Import an auth.json; a malformed one is refused with nothing written.
    let account = h.sim.create_account(AccountSpec {
        email: Some("fresh@sim.test".into()),
        plan_type: Some("pro".into()),
        ..AccountSpec::default()
    });
    let auth = h
        .sim
        .auth_json(&account.account_id)
        .expect("auth.json")
        .to_string();
    let import_path = format!("/admin/pools/{pool_id}/upstreams");
    let page = no_audit_event!(
        &h,
        "malformed auth.json",
        b.post(&import_path, &[("auth_json", "{\"tokens\": ")])
            .await
    );
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body
            .contains("invalid auth.json: not JSON (line 1, column"),
        "{}",
        page.body
    );
    let page = no_audit_event!(
        &h,
        "auth.json without tokens",
        b.post(
            &import_path,
            &[("auth_json", "{\"OPENAI_API_KEY\": \"sk-x\"}")]
        )
        .await
    );
    assert!(
        page.body.contains("missing &#34;tokens&#34; object")
            || page.body.contains("missing &quot;tokens&quot; object"),
        "{}",
        page.body
    );
    assert_eq!(
        pool_json(&h, &pool_id).await["upstreams"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let page = one_audit_event!(
        &h,
        "import",
        b.post(&import_path, &[("auth_json", &auth), ("label", "")])
            .await
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location.contains("notice=imported"));
    let page = b.get(&page.location).await;
    assert!(
        page.body.contains("fresh@sim.test")
            && page.body.contains("pro")
            && page.body.contains("Account imported.")
    );
    let detail = pool_json(&h, &pool_id).await;
    let identity_id = detail["upstreams"][0]["identity_id"]
        .as_str()
        .expect("identity")
        .to_owned();
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
    let team = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["slug"] == "team")
        .expect("team listed")
        .clone();
    assert_eq!(team["usable_accounts"], 1);

    // Create a key: the raw key is on the result page once, and works.
    let page = one_audit_event!(
        &h,
        "key create",
        b.post(
            &format!("/admin/pools/{pool_id}/api-keys"),
            &[("name", "laptop")]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::CREATED);
    let key = raw_key(&page.body);
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&text_request("hi", "console-1"))
        .send()
        .await
        .expect("responses");
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    h.flush().await;
    let detail = pool_json(&h, &pool_id).await;
    let key_row = &detail["api_keys"][0];
    assert!(
        key_row["last_used_at"].is_i64(),
        "last use recorded: {key_row}"
    );
    assert!(
        !detail.to_string().contains(&key),
        "the raw key is never shown again"
    );
    let key_id = key_row["id"].as_str().expect("key id").to_owned();
    let page = b.get(&format!("/admin/pools/{pool_id}")).await;
    assert!(!page.body.contains(&key));

    // Pause the key: requests with it are refused.
    let status_path = format!("/admin/pools/{pool_id}/api-keys/{key_id}/status");
    let page = one_audit_event!(
        &h,
        "key pause",
        b.post(&status_path, &[("status", "paused")]).await
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&key)
        .json(&text_request("hi", "console-2"))
        .send()
        .await
        .expect("responses");
    assert_eq!(r.status(), 401);
    let page = no_audit_event!(
        &h,
        "pausing a paused key",
        b.post(&status_path, &[("status", "paused")]).await
    );
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.body.contains("no active API key in this Pool"),
        "{}",
        page.body
    );
    one_audit_event!(
        &h,
        "key resume",
        b.post(&status_path, &[("status", "active")]).await
    );
    one_audit_event!(
        &h,
        "key revoke",
        b.post(&status_path, &[("status", "revoked")]).await
    );

    // Pause and reactivate the account.
    let upstream_path = format!("/admin/pools/{pool_id}/upstreams/{identity_id}/status");
    one_audit_event!(
        &h,
        "account pause",
        b.post(&upstream_path, &[("status", "paused")]).await
    );
    assert_eq!(
        pool_json(&h, &pool_id).await["upstreams"][0]["status"],
        "paused"
    );
    one_audit_event!(
        &h,
        "account reactivate",
        b.post(&upstream_path, &[("status", "active")]).await
    );

    // Audit logs: newest first, filterable by action and actor.
    let page = b.get("/admin/audit").await;
    assert_eq!(page.status, StatusCode::OK);
    let newest = page
        .body
        .find("<code>upstream_account.reactivate</code>")
        .expect("reactivate listed");
    let older = page
        .body
        .find("<code>pool.create</code>")
        .expect("pool create listed");
    assert!(newest < older, "newest first");
    let page = b.get("/admin/audit?action=api_key.pause&actor=").await;
    assert!(
        page.body.contains("<code>api_key.pause</code>")
            && !page.body.contains("<code>pool.create</code>")
    );
    assert!(
        page.body
            .contains("<option value=\"api_key.pause\" selected>")
    );
    let page = b.get("/admin/audit?action=&actor=command+line").await;
    assert!(
        page.body.contains("<code>operator.create</code>")
            && !page.body.contains("<code>auth.login</code>")
    );
    let events: Value = h
        .http
        .get(h.url("/admin/api/audit-events?action=api_key.create&limit=10"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let created: Vec<&Value> = events["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| e["target_id"] == key_id.as_str())
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor_kind"], "operator");
    assert_eq!(created[0]["actor_label"], h.info.admin_email.as_str());
    assert_eq!(created[0]["pool_id"], pool_id.as_str());
    assert!(
        created[0]["ip"]
            .as_str()
            .is_some_and(|ip| ip == "127.0.0.1")
    );
    let by_actor: Value = h
        .http
        .get(h.url("/admin/api/audit-events?actor=COMMAND"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert!(
        by_actor["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|e| e["actor_label"] == "command line")
    );
    assert!(!by_actor["data"].as_array().expect("data").is_empty());

    // Sign out: the session no longer works.
    let page = one_audit_event!(&h, "logout", b.post("/logout", &[]).await);
    assert_eq!(page.location, "/login?signed_out=1");
    let page = b.get("/admin/pools").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, "/login?expired=1");
    h.stop().await;
}
on_both_backends!(first_run_story_through_the_console, first_run_story);

async fn csrf_refusals(backend: Backend) {
    let h = Harness::start(backend).await;
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let origin = b.base.clone();
    let fields = [("slug", "x1"), ("name", "X")];
    for (what, with_token, headers) in [
        ("no token", false, vec![("origin", origin.as_str())]),
        (
            "foreign origin",
            true,
            vec![("origin", "http://evil.example")],
        ),
        (
            "cross-site fetch",
            true,
            vec![("sec-fetch-site", "cross-site")],
        ),
        ("null origin", true, vec![("origin", "null")]),
    ] {
        let mut all = fields.to_vec();
        if with_token {
            all.push(("csrf", b.csrf.as_str()));
        }
        let page = no_audit_event!(&h, what, b.post_raw("/admin/pools", &all, &headers).await);
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{what}");
    }
    let wrong = [("csrf", "0".repeat(64))];
    let page = b
        .post_raw(
            "/admin/pools",
            &[("slug", "x1"), ("name", "X"), ("csrf", wrong[0].1.as_str())],
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Every mutating form route refuses a missing token, before doing anything.
    let demo = &h.info.pool_id;
    for path in [
        "/admin/pools".to_owned(),
        format!("/admin/pools/{demo}/upstreams"),
        format!("/admin/pools/{demo}/upstreams/x/status"),
        format!("/admin/pools/{demo}/api-keys"),
        format!("/admin/pools/{demo}/api-keys/x/status"),
        "/logout".to_owned(),
    ] {
        let page = no_audit_event!(
            &h,
            &path,
            b.post_raw(&path, &[("status", "paused"), ("name", "n")], &[])
                .await
        );
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    // Login from another site is refused too.
    let page = b
        .post_raw(
            "/login",
            &[
                ("email", &h.info.admin_email),
                ("password", &h.info.admin_password),
            ],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // JSON with the cookie needs X-CSRF-Token; with an operator token it does not.
    let cookie = b.cookie.clone().expect("cookie");
    let r = h
        .http
        .post(h.url("/admin/api/pools"))
        .header("cookie", &cookie)
        .json(&json!({"slug": "j1", "name": "J"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = one_audit_event!(
        &h,
        "json pool create",
        h.http
            .post(h.url("/admin/api/pools"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &b.csrf)
            .json(&json!({"slug": "j1", "name": "J"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 201);
    let r = one_audit_event!(
        &h,
        "json pool create by token",
        h.http
            .post(h.url("/admin/api/pools"))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({"slug": "j2", "name": "J2"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 201);
    let r = h
        .http
        .post(h.url("/admin/api/pools"))
        .bearer_auth(&h.info.operator_token)
        .json(&json!({"slug": "j2", "name": "J2"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["error"]["message"],
        "a Pool with the slug \"j2\" already exists; choose another slug"
    );
    let r = h
        .http
        .get(h.url("/admin/api/pools"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    // The request-log API reads with the session too (the page's live
    // updates), but never for another site's page.
    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .header("cookie", "cxp_session=not-a-session")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    h.stop().await;
}
on_both_backends!(csrf_is_required_on_every_change, csrf_refusals);

async fn admin_scope(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let other = store
        .create_pool(&cli, "other", "Other Pool")
        .await
        .expect("pool");
    let (_, other_key) = control::create_api_key(store, &cli, &other.id, "other key", None, None)
        .await
        .expect("key");
    let other_key_id = store
        .find_api_key_by_prefix(&other_key[..19])
        .await
        .expect("find")
        .expect("key")
        .id;
    let admin_id = control::create_operator(
        store,
        &cli,
        "admin@example.test",
        "admin-password-123",
        "admin",
    )
    .await
    .expect("admin");
    store
        .assign_operator_pool(&cli, &admin_id, &h.info.pool_id)
        .await
        .expect("assign");

    let b = Browser::login(&h, "admin@example.test", "admin-password-123").await;
    let page = b.get("/admin/pools").await;
    assert!(page.body.contains("Demo Pool") && !page.body.contains("Other Pool"));
    let page = b.get(&format!("/admin/pools/{}", other.id)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("Other Pool"));
    assert_eq!(
        b.get(&format!("/admin/pools/{}", h.info.pool_id))
            .await
            .status,
        StatusCode::OK
    );

    // Changes to the other Pool, directly or by smuggling its key's id under
    // the assigned Pool, are refused and write nothing.
    let page = no_audit_event!(
        &h,
        "key in another Pool",
        b.post(
            &format!("/admin/pools/{}/api-keys", other.id),
            &[("name", "x")]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = no_audit_event!(
        &h,
        "other Pool's key by id",
        b.post(
            &format!(
                "/admin/pools/{}/api-keys/{other_key_id}/status",
                h.info.pool_id
            ),
            &[("status", "revoked")]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let key_row = store
        .find_api_key_by_prefix(&other_key[..19])
        .await
        .expect("find")
        .expect("key");
    assert_eq!(key_row.status, "active");
    let page = no_audit_event!(
        &h,
        "admin creating a Pool",
        b.post("/admin/pools", &[("slug", "mine"), ("name", "Mine")])
            .await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("only the owner can do this"));

    // The JSON twins apply the same scope.
    let cookie = b.cookie.clone().expect("cookie");
    let listed: Value = h
        .http
        .get(h.url("/admin/api/pools"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    let r = h
        .http
        .get(h.url(&format!("/admin/api/pools/{}", other.id)))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = h
        .http
        .post(h.url(&format!(
            "/admin/api/pools/{}/api-keys/{other_key_id}/status",
            other.id
        )))
        .header("cookie", &cookie)
        .header("x-csrf-token", &b.csrf)
        .json(&json!({"status": "paused"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    let events: Value = h
        .http
        .get(h.url("/admin/api/audit-events?limit=200"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let events = events["data"].as_array().expect("data");
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["pool_id"] != other.id.as_str()),
        "no events of the other Pool"
    );
    let page = b.get("/admin/audit").await;
    assert!(!page.body.contains(&other.id));
    h.stop().await;
}
on_both_backends!(an_admin_sees_only_assigned_pools, admin_scope);

async fn sign_in_errors(backend: Backend) {
    let h = Harness::start(backend).await;
    let anon = Browser::new(&h);
    let page = anon.get("/admin/pools").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    let page = anon.get("/login").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\"")
    );
    let css = anon.get("/admin/assets/console.css").await;
    assert!(css.body.contains("prefers-color-scheme: dark") && css.body.contains("tabular-nums"));

    for (email, password) in [
        (h.info.admin_email.as_str(), "wrong password!"),
        ("nobody@example.test", "whatever-password"),
    ] {
        let page = no_audit_event!(
            &h,
            "failed login",
            anon.post_raw("/login", &[("email", email), ("password", password)], &[])
                .await
        );
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Email or password is incorrect."));
    }

    let mut garbage = Browser::new(&h);
    garbage.cookie = Some("cxp_session=not-a-session".into());
    let page = garbage.get("/admin/pools").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?expired=1")
    );
    let page = anon.get("/login?expired=1").await;
    assert!(page.body.contains("Your session has expired"));

    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    assert_eq!(b.get("/admin/pools").await.status, StatusCode::OK);
    exec_sql(&h, "UPDATE admin_sessions SET expires_at = 0").await;
    let page = b.get("/admin/pools").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?expired=1")
    );
    let page = no_audit_event!(
        &h,
        "post with expired session",
        b.post("/admin/pools", &[("slug", "late"), ("name", "Late")])
            .await
    );
    assert_eq!(page.location, "/login?expired=1");
    h.stop().await;
}
on_both_backends!(sign_in_errors_are_precise, sign_in_errors);

async fn bootstrap(backend: Backend) {
    let h = Harness::start(backend).await;
    let token = h
        .app
        .bootstrap_token
        .clone()
        .expect("a bootstrap token is printed on an empty database");
    let anon = Browser::new(&h);
    let fields = |t: &'static str| {
        [
            ("token", t),
            ("email", "first@example.test"),
            ("password", "first-owner-pw-1"),
            ("password_repeat", "first-owner-pw-1"),
        ]
    };
    let leaked: &'static str = Box::leak(token.clone().into_boxed_str());
    // The demo owner exists: the page is closed.
    let page = anon.get("/bootstrap").await;
    assert!(page.body.contains("An owner already exists"));
    let page = no_audit_event!(
        &h,
        "bootstrap with an owner",
        anon.post_raw("/bootstrap", &fields(leaked), &[]).await
    );
    assert_eq!(page.status, StatusCode::CONFLICT);

    // On an empty instance the printed token creates the owner, once.
    exec_sql(&h, "DELETE FROM operators").await;
    assert_eq!(anon.get("/login").await.location, "/bootstrap");
    let page = no_audit_event!(
        &h,
        "wrong bootstrap token",
        anon.post_raw("/bootstrap", &fields("wrong"), &[]).await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("bootstrap token is wrong, expired or already used")
    );
    let page = no_audit_event!(
        &h,
        "foreign bootstrap",
        anon.post_raw(
            "/bootstrap",
            &fields(leaked),
            &[("origin", "http://evil.example")]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = one_audit_event!(
        &h,
        "bootstrap",
        anon.post_raw("/bootstrap", &fields(leaked), &[]).await
    );
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?bootstrapped=1")
    );
    let page = anon.post_raw("/bootstrap", &fields(leaked), &[]).await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    let b = Browser::login(&h, "first@example.test", "first-owner-pw-1").await;
    let me: Value = h
        .http
        .get(h.url("/admin/api/me"))
        .header("cookie", b.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["role"], "owner");
    h.stop().await;
}
on_both_backends!(bootstrap_creates_the_owner_once, bootstrap);

async fn request_logs_page_and_filters(backend: Backend) {
    use codex_pooler::control;
    use codex_pooler::store::AuditActor;
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    // A success with a client request id, a failure, and a rejection of a paused key.
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&h.info.api_key)
        .header("x-request-id", "client-corr-4242")
        .json(&text_request("ok", "logs-1"))
        .send()
        .await
        .expect("sent");
    let ok_id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    let first = h.account_order("logs-2").await[0].clone();
    h.sim
        .queue_scenario(&first, "failed_after_content", 1)
        .expect("scenario");
    let _ = h
        .responses(&text_request("fails", "logs-2"))
        .await
        .text()
        .await;
    let (paused_id, paused) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "paused key", None, None)
            .await
            .expect("key");
    rt.store
        .set_api_key_status(&actor, &paused_id, "paused")
        .await
        .expect("pause");
    rt.invalidate_caches();
    let _ = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&paused)
        .json(&text_request("no", "logs-3"))
        .send()
        .await;
    h.flush().await;

    let api = |q: &str| {
        let url = h.url(&format!("/admin/api/request-logs{q}"));
        let http = h.http.clone();
        let token = h.info.operator_token.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("api")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let ids = |v: &Value| {
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let all = api("").await;
    let total = ids(&all).len();
    assert_eq!(total, 3, "three requests: {all}");
    let failed = api("?status=failed").await;
    assert!(
        failed["data"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["status"] == "failed")
    );
    assert_eq!(ids(&failed).len(), 1);
    let rejected = api("?status=rejected").await;
    assert_eq!(rejected["data"][0]["last_error_code"], "api_key_paused");
    // A bogus filter is ignored with a warning naming it; rows still come.
    let bogus = api("?status=bogus&date_from=2026-13-45&colour=red").await;
    assert_eq!(ids(&bogus).len(), total);
    let warnings = bogus["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    // Id filter: a whole id matches exactly, a fragment as a substring, and the client's x-request-id is findable.
    assert_eq!(
        ids(&api(&format!("?request_id={ok_id}")).await),
        vec![ok_id.clone()]
    );
    assert!(
        ids(&api(&format!("?request_id={}", &ok_id[ok_id.len() - 12..])).await).contains(&ok_id)
    );
    assert_eq!(
        ids(&api("?request_id=client-corr-4242").await),
        vec![ok_id.clone()]
    );
    assert_eq!(ids(&api("?request_id=corr-42").await), vec![ok_id.clone()]);
    assert!(
        ids(&api("?request_id=corr_42").await).is_empty(),
        "`_` is literal, not a wildcard"
    );
    // API key by prefix or label; model; pool.
    let prefix = &paused[..19];
    assert_eq!(
        api(&format!("?api_key={prefix}")).await["data"][0]["last_error_code"],
        "api_key_paused"
    );
    assert_eq!(
        api("?api_key=PAUSED%20KEY").await["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(
        api("?model=gpt-5.5").await["data"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["requested_model"] == "gpt-5.5")
    );
    assert_eq!(
        ids(&api(&format!("?pool_id={}", h.info.pool_id)).await).len(),
        total
    );
    // UTC day bounds: today holds every row, tomorrow none.
    let today_ms = codex_pooler::time::now_ms();
    let day = |ms: i64| {
        let secs = ms / 1000;
        let days = secs.div_euclid(86_400);
        // Render YYYY-MM-DD through the page parser's inverse: probe the parser.
        (0..3)
            .map(|d| days + d - 1)
            .find_map(|_| None::<String>)
            .unwrap_or_else(|| {
                let z = days + 719_468;
                let era = z.div_euclid(146_097);
                let doe = z - era * 146_097;
                let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
                let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
                let mp = (5 * doy + 2) / 153;
                let d = doy - (153 * mp + 2) / 5 + 1;
                let m = if mp < 10 { mp + 3 } else { mp - 9 };
                let y = yoe + era * 400 + i64::from(m <= 2);
                format!("{y:04}-{m:02}-{d:02}")
            })
    };
    let today = day(today_ms);
    let tomorrow = day(today_ms + 86_400_000);
    assert_eq!(
        ids(&api(&format!("?date_from={today}&date_to={today}")).await).len(),
        total
    );
    assert!(ids(&api(&format!("?date_from={tomorrow}")).await).is_empty());
    assert!(ids(&api(&format!("?date_to={}", day(today_ms - 86_400_000))).await).is_empty());

    // The page, as the owner: warnings shown, rows listed, detail and its links open.
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner
        .get("/admin/request-logs?status=bogus&date_from=2026-13-45")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("status: unknown status"));
    assert!(page.body.contains("date_from: not a date"));
    assert!(page.body.contains(&ok_id[ok_id.len() - 8..]));
    assert!(
        page.body.contains("api_key_paused") && page.body.contains("API keys page"),
        "the paused-key row and its hint"
    );
    let page = owner.get("/admin/request-logs?status=failed").await;
    assert!(page.body.contains("server_error") && !page.body.contains(&ok_id[ok_id.len() - 8..]));
    let detail = owner.get(&format!("/admin/request-logs/{ok_id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("Attempts") && detail.body.contains("routing"));
    assert_eq!(
        owner
            .get(&format!("/admin/pools/{}", h.info.pool_id))
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        !detail.body.contains(&h.info.api_key),
        "no raw key on the page"
    );

    // An admin of another Pool sees none of it.
    let other = rt
        .store
        .create_pool(&actor, "elsewhere", "Elsewhere")
        .await
        .expect("pool");
    let admin_id = control::create_operator(
        &rt.store,
        &actor,
        "logs-admin@example.test",
        "a long admin password",
        "admin",
    )
    .await
    .expect("admin");
    rt.store
        .assign_operator_pool(&actor, &admin_id, &other.id)
        .await
        .expect("assign");
    let admin = Browser::login(&h, "logs-admin@example.test", "a long admin password").await;
    let page = admin.get("/admin/request-logs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(&ok_id[ok_id.len() - 8..]) && page.body.contains("No requests match.")
    );
    assert_eq!(
        admin
            .get(&format!("/admin/request-logs/{ok_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    h.stop().await;
}
on_both_backends!(request_logs, request_logs_page_and_filters);

async fn request_logs_export_streams_the_filtered_set(backend: Backend) {
    let h = Harness::start(backend).await;
    let first = h.account_order("export-2").await[0].clone();
    h.sim
        .queue_scenario(&first, "failed_after_content", 1)
        .expect("scenario");
    let _ = h
        .responses(&text_request("one, \"quoted\"", "export-1"))
        .await
        .text()
        .await;
    let _ = h
        .responses(&text_request("two", "export-2"))
        .await
        .text()
        .await;
    h.flush().await;
    let get = |q: &str| {
        let url = h.url(&format!("/admin/api/request-logs/export{q}"));
        let http = h.http.clone();
        let token = h.info.operator_token.clone();
        async move {
            let r = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("export");
            (
                r.status().as_u16(),
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
                r.text().await.expect("body"),
            )
        }
    };
    let (status, content_type, csv) = get("?format=csv").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {csv}");
    assert!(lines[0].starts_with("id,admitted_at,status"));
    let (_, content_type, ndjson) = get("?format=ndjson&status=failed").await;
    assert_eq!(content_type, "application/x-ndjson");
    let rows: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(get("?format=xml").await.0, 400);
    for body in [&csv, &ndjson] {
        assert!(
            !body.contains(&h.info.api_key) && !body.contains("quoted"),
            "no keys and no prompt text"
        );
    }
    h.stop().await;
}
on_both_backends!(
    request_logs_export,
    request_logs_export_streams_the_filtered_set
);

/// Two Pools with traffic, and an admin assigned to the first (the demo Pool)
/// only: the fixture of the dropdown tests here and of the browser test.
pub struct TwoPools {
    /// The demo Pool's rows: a success (client request id `two-pools-corr-1`),
    /// a failure after content, and a rejection of a paused key.
    pub ok_id: String,
    pub failed_id: String,
    pub rejected_id: String,
    /// The paused demo key's safe prefix (what the rejected row shows).
    pub paused_prefix: String,
    /// Labels of the demo Pool's accounts.
    pub demo_accounts: Vec<(String, String)>,
    pub second_pool_id: String,
    pub second_identity_id: String,
    pub second_row_id: String,
    /// A working key of the second Pool.
    pub second_key: String,
    pub admin_email: String,
    pub admin_password: String,
}

/// The second Pool's name, account label and email, and the model only it uses.
pub const SECOND_POOL: &str = "Second Pool";
pub const SECOND_ACCOUNT: &str = "second-only account";
pub const SECOND_EMAIL: &str = "second-only@sim.test";
pub const SECOND_MODEL: &str = "gpt-5.4-mini";

fn request_id_of(r: &reqwest::Response) -> String {
    r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("request id header")
        .to_owned()
}

pub async fn two_pools(h: &Harness) -> TwoPools {
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    // The second Pool: its own account, key and model.
    let second = rt
        .store
        .create_pool(&actor, "second", SECOND_POOL)
        .await
        .expect("pool");
    let account = h.sim.create_account(AccountSpec {
        email: Some(SECOND_EMAIL.into()),
        plan_type: Some("team".into()),
        ..AccountSpec::default()
    });
    let auth = h.sim.auth_json(&account.account_id).expect("auth.json");
    let mut parsed =
        control::parse_auth_json(&auth.to_string(), Some(SECOND_ACCOUNT)).expect("parse");
    parsed.identity.base_url = Some(h.sim.base_url());
    parsed.identity.auth_base_url = Some(h.sim.base_url());
    let imported =
        control::import_auth_json(&rt.store, &rt.secret_box, &actor, &second.id, &parsed)
            .await
            .expect("import");
    let (_, second_key) =
        control::create_api_key(&rt.store, &actor, &second.id, "second key", None, None)
            .await
            .expect("key");
    let (paused_id, paused) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "paused key", None, None)
            .await
            .expect("key");
    rt.store
        .set_api_key_status(&actor, &paused_id, "paused")
        .await
        .expect("pause");
    rt.invalidate_caches();
    rt.sync_pool_catalog(&second.id).await.expect("catalog");

    // Demo Pool: a success, a failure, a rejection.
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&h.info.api_key)
        .header("x-request-id", "two-pools-corr-1")
        .json(&text_request("ok", "two-pools-1"))
        .send()
        .await
        .expect("sent");
    let ok_id = request_id_of(&r);
    let _ = r.text().await;
    let first = h.account_order("two-pools-2").await[0].clone();
    h.sim
        .queue_scenario(&first, "failed_after_content", 1)
        .expect("scenario");
    let r = h.responses(&text_request("fails", "two-pools-2")).await;
    let failed_id = request_id_of(&r);
    let _ = r.text().await;
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&paused)
        .json(&text_request("no", "two-pools-3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
    // Second Pool: a success on its own model.
    let mut body = text_request("second", "two-pools-4");
    body["model"] = json!(SECOND_MODEL);
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&second_key)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let second_row_id = request_id_of(&r);
    let _ = r.text().await;
    // A rejection carries no request id header: find its row.
    let rejected_id = h
        .request_logs()
        .await
        .iter()
        .find(|row| row["last_error_code"] == "api_key_paused")
        .and_then(|row| row["id"].as_str())
        .expect("the rejected row")
        .to_owned();

    let admin_email = "pool-admin@example.test".to_owned();
    let admin_password = "a long pool admin password".to_owned();
    let admin_id =
        control::create_operator(&rt.store, &actor, &admin_email, &admin_password, "admin")
            .await
            .expect("admin");
    rt.store
        .assign_operator_pool(&actor, &admin_id, &h.info.pool_id)
        .await
        .expect("assign");
    let demo_accounts = pool_json(h, &h.info.pool_id).await["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| {
            (
                u["identity_id"].as_str().expect("id").to_owned(),
                u["label"].as_str().expect("label").to_owned(),
            )
        })
        .collect();
    TwoPools {
        ok_id,
        failed_id,
        rejected_id,
        paused_prefix: paused[..19].to_owned(),
        demo_accounts,
        second_pool_id: second.id,
        second_identity_id: imported.identity_id,
        second_row_id,
        second_key,
        admin_email,
        admin_password,
    }
}

/// `(value, text, selected)` of each option of the `<select name=…>`.
fn options(body: &str, name: &str) -> Vec<(String, String, bool)> {
    let start = body
        .find(&format!("<select name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no select {name}"));
    let end = start + body[start..].find("</select>").expect("select closes");
    body[start..end]
        .split("<option")
        .skip(1)
        .map(|o| {
            let value = o
                .split("value=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_owned();
            let (attrs, text) = o.split_once('>').expect("option text");
            let text = text.split("</option>").next().unwrap_or("").to_owned();
            (value, text, attrs.contains(" selected"))
        })
        .collect()
}

fn values(opts: &[(String, String, bool)]) -> Vec<String> {
    opts.iter()
        .map(|(v, _, _)| v.clone())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn request_log_dropdowns(backend: Backend) {
    let h = Harness::start(backend).await;
    let t = two_pools(&h).await;
    let demo_ids: Vec<&str> = t.demo_accounts.iter().map(|(id, _)| id.as_str()).collect();
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // The owner is offered every Pool's accounts and models.
    let page = owner.get("/admin/request-logs").await;
    assert_eq!(page.status, StatusCode::OK);
    let accounts = options(&page.body, "upstream_identity_id");
    let mut all: Vec<&str> = demo_ids.clone();
    all.push(&t.second_identity_id);
    all.sort_unstable();
    let mut offered = values(&accounts);
    offered.sort_unstable();
    assert_eq!(offered, all, "{accounts:?}");
    assert!(
        accounts
            .iter()
            .any(|(_, text, _)| text == &format!("{SECOND_ACCOUNT} · {SECOND_EMAIL}"))
    );
    assert_eq!(
        values(&options(&page.body, "model")),
        vec![SECOND_MODEL, "gpt-5.5"]
    );

    // Selecting a Pool narrows both lists to it.
    let page = owner
        .get(&format!("/admin/request-logs?pool_id={}", h.info.pool_id))
        .await;
    let mut narrowed = values(&options(&page.body, "upstream_identity_id"));
    narrowed.sort_unstable();
    let mut expected = demo_ids.clone();
    expected.sort_unstable();
    assert_eq!(narrowed, expected);
    assert!(page.body.contains("any in this Pool"));
    assert_eq!(values(&options(&page.body, "model")), vec!["gpt-5.5"]);
    assert!(!page.body.contains(SECOND_ACCOUNT) && !page.body.contains(SECOND_MODEL));
    let page = owner
        .get(&format!("/admin/request-logs?pool_id={}", t.second_pool_id))
        .await;
    assert_eq!(
        values(&options(&page.body, "upstream_identity_id")),
        vec![t.second_identity_id.as_str()]
    );
    assert_eq!(values(&options(&page.body, "model")), vec![SECOND_MODEL]);
    assert!(
        page.body
            .contains(&t.second_row_id[t.second_row_id.len() - 8..])
    );
    assert!(!page.body.contains(&t.ok_id[t.ok_id.len() - 8..]));

    // The choices keep the text semantics: an account by identity id, a model
    // by exact name, each shown selected, and the rows follow.
    let page = owner
        .get(&format!(
            "/admin/request-logs?upstream_identity_id={}&model={SECOND_MODEL}",
            t.second_identity_id
        ))
        .await;
    let accounts = options(&page.body, "upstream_identity_id");
    let chosen: Vec<&str> = accounts
        .iter()
        .filter(|(_, _, s)| *s)
        .map(|(v, _, _)| v.as_str())
        .collect();
    assert_eq!(chosen, vec![t.second_identity_id.as_str()]);
    assert!(
        options(&page.body, "model")
            .iter()
            .any(|(v, _, s)| v == SECOND_MODEL && *s)
    );
    assert!(
        page.body
            .contains(&t.second_row_id[t.second_row_id.len() - 8..])
    );
    assert!(!page.body.contains(&t.ok_id[t.ok_id.len() - 8..]));
    // An account outside the selected Pool stays selected, shown bare.
    let page = owner
        .get(&format!(
            "/admin/request-logs?pool_id={}&upstream_identity_id={}",
            h.info.pool_id, t.second_identity_id
        ))
        .await;
    assert!(page.body.contains(&format!(
        "<option value=\"{0}\" selected>{0} (not listed)</option>",
        t.second_identity_id
    )));
    assert!(page.body.contains("No requests match."));
    // Invalid values still warn, are not offered, and rows still show.
    let page = owner
        .get("/admin/request-logs?upstream_identity_id=not%20an%20id&model=%07&status=bogus&live=0")
        .await;
    assert!(
        page.body
            .contains("upstream_identity_id: not an upstream account id")
    );
    assert!(page.body.contains("model: not a model name"));
    assert!(page.body.contains("status: unknown status"));
    assert!(!page.body.contains("live: unsupported filter"));
    assert!(
        options(&page.body, "upstream_identity_id")
            .iter()
            .all(|(_, _, s)| !s)
    );
    assert!(options(&page.body, "model").iter().all(|(_, _, s)| !s));
    assert!(page.body.contains(&t.ok_id[t.ok_id.len() - 8..]));
    assert!(
        page.body
            .contains("<input type=\"hidden\" name=\"live\" value=\"0\">")
    );

    // The admin of the demo Pool is never offered the second Pool's account or
    // model, whatever the URL asks for.
    let admin = Browser::login(&h, &t.admin_email, &t.admin_password).await;
    for path in [
        "/admin/request-logs".to_owned(),
        format!("/admin/request-logs?pool_id={}", t.second_pool_id),
        format!("/admin/request-logs?pool_id={}", h.info.pool_id),
        format!(
            "/admin/request-logs?upstream_identity_id={}",
            t.second_identity_id
        ),
        format!("/admin/request-logs?request_id={}", t.second_row_id),
    ] {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        for secret in [SECOND_POOL, SECOND_ACCOUNT, SECOND_EMAIL, SECOND_MODEL] {
            assert!(!page.body.contains(secret), "{path} shows {secret}");
        }
        assert!(
            !page
                .body
                .contains(&format!("data-id=\"{}\"", t.second_row_id)),
            "{path} shows the second Pool's row"
        );
        let offered = values(&options(&page.body, "upstream_identity_id"))
            .into_iter()
            .filter(|v| *v != t.second_identity_id)
            .count();
        let expected = if path.contains(&t.second_pool_id) {
            0
        } else {
            demo_ids.len()
        };
        assert_eq!(offered, expected, "{path}");
    }
    let page = admin.get("/admin/request-logs").await;
    assert_eq!(values(&options(&page.body, "model")), vec!["gpt-5.5"]);
    assert!(!values(&options(&page.body, "upstream_identity_id")).contains(&t.second_identity_id));
    h.stop().await;
}
on_both_backends!(request_log_filter_choices, request_log_dropdowns);

async fn request_logs_live_updates(backend: Backend) {
    let h = Harness::start(backend).await;
    let t = two_pools(&h).await;
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // The first page carries the live control and its script; an older page
    // does not run live updates.
    let page = owner.get("/admin/request-logs").await;
    assert!(page.body.contains("id=\"live\"") && page.body.contains("Pause live updates"));
    assert!(
        page.body
            .contains("<script src=\"/admin/assets/request-logs.js\" defer></script>")
    );
    assert!(page.body.contains(&format!("data-id=\"{}\"", t.ok_id)));
    let page = owner
        .get("/admin/request-logs?before=99999999999999_z")
        .await;
    assert!(!page.body.contains("id=\"live\""));
    let page = owner.get("/admin/request-logs?live=0").await;
    assert!(page.body.contains("data-paused=\"true\""));
    let script = owner.get("/admin/assets/request-logs.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("/admin/api/request-logs"));
    let r = h
        .http
        .get(h.url("/admin/assets/request-logs.js"))
        .send()
        .await
        .expect("script");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );
    let csp = owner_csp(&h, &owner).await;
    assert!(csp.contains("default-src 'self'"), "{csp}");

    // The JSON twin it polls answers the console session (same-origin reads
    // only), with the same scope and filters as the page.
    let cookie = owner.cookie.clone().expect("cookie");
    let read = |cookie: String, q: String, site: &'static str| {
        let url = h.url(&format!("/admin/api/request-logs{q}"));
        let http = h.http.clone();
        async move {
            let r = http
                .get(url)
                .header("cookie", cookie)
                .header("sec-fetch-site", site)
                .send()
                .await
                .expect("get");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = read(
        cookie.clone(),
        "?limit=50&status=failed".into(),
        "same-origin",
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec![t.failed_id.as_str()]);
    let (status, _) = read(cookie.clone(), String::new(), "cross-site").await;
    assert_eq!(status, 401, "another site's page cannot read the rows");
    let admin = Browser::login(&h, &t.admin_email, &t.admin_password).await;
    let (status, body) = read(
        admin.cookie.clone().expect("cookie"),
        String::new(),
        "same-origin",
    )
    .await;
    assert_eq!(status, 200);
    let rows = body["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["pool_id"] == h.info.pool_id.as_str()));
    assert!(rows.iter().any(|r| r["id"] == t.rejected_id.as_str()));
    assert_eq!(
        read(
            admin.cookie.clone().expect("cookie"),
            format!("/{}", t.second_row_id),
            "same-origin"
        )
        .await
        .0,
        404
    );
    h.stop().await;
}
on_both_backends!(request_logs_live, request_logs_live_updates);

async fn owner_csp(h: &Harness, b: &Browser) -> String {
    let r = h
        .http
        .get(h.url("/admin/request-logs"))
        .header("cookie", b.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("page");
    r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned()
}

/// Rows a console change could touch, one text line per table: a refused
/// change must leave them all equal.
async fn fingerprint(h: &Harness) -> Vec<String> {
    const QUERIES: [&str; 9] = [
        "SELECT id || ':' || status || ':' || slug FROM pools ORDER BY id",
        "SELECT id || ':' || status || ':' || key_prefix || ':' || key_hash FROM api_keys ORDER BY id",
        "SELECT id || ':' || status || ':' || role || ':' || CAST(must_change_password AS TEXT) FROM operators ORDER BY id",
        "SELECT operator_id || ':' || pool_id FROM operator_pools ORDER BY operator_id, pool_id",
        "SELECT id || ':' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM admin_sessions ORDER BY id",
        "SELECT id || ':' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM operator_tokens ORDER BY id",
        "SELECT id || ':' || status || ':' || CAST(updated_at AS TEXT) FROM upstream_identities ORDER BY id",
        "SELECT id || ':' || status FROM pool_assignments ORDER BY id",
        "SELECT pool_id || ':' || routing_strategy || ':' || CAST(bridge_ring_size AS TEXT) || ':' || CAST(updated_at AS TEXT) FROM pool_routing_settings ORDER BY pool_id",
    ];
    let mut out = Vec::new();
    for q in QUERIES {
        let rows: Vec<(String,)> = match &h.app.runtime.store {
            Store::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await,
            Store::Postgres(p) => sqlx::query_as(q).fetch_all(p).await,
        }
        .expect("fingerprint query");
        let rows: Vec<String> = rows.into_iter().map(|(r,)| r).collect();
        out.push(format!("{q} => {}", rows.join(",")));
    }
    out
}

/// The `(method, path)` of every `.route(…)` call in `source` whose method
/// router changes something (post, put, patch, delete, or any).
fn mutating_routes_in(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (start, _) in source.match_indices(".route(") {
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        if source[line_start..start].trim_start().starts_with("//") {
            continue;
        }
        let rest = &source[start + ".route(".len()..];
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a literal route path");
        for (method, needle) in [
            ("POST", "post("),
            ("PUT", "put("),
            ("PATCH", "patch("),
            ("DELETE", "delete("),
            ("ANY", "any("),
            ("ON", "on("),
        ] {
            if call.contains(needle) {
                found.push((method.to_owned(), path.to_owned()));
            }
        }
    }
    found
}

/// A refused attempt: what is wrong, the CSRF token sent, extra headers.
type Refusal<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>);

/// One mutating request, ready to send with or without its CSRF proof.
struct Change {
    method: reqwest::Method,
    path: String,
    form: Vec<(String, String)>,
    json: Option<Value>,
    ok: StatusCode,
}

impl Change {
    fn form(path: String, fields: &[(&str, &str)], ok: StatusCode) -> Change {
        Change {
            method: reqwest::Method::POST,
            path,
            form: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            json: None,
            ok,
        }
    }

    fn json(method: reqwest::Method, path: String, body: Value, ok: StatusCode) -> Change {
        Change {
            method,
            path,
            form: Vec::new(),
            json: Some(body),
            ok,
        }
    }

    /// Sends it with `b`'s session cookie, `csrf` as the form field or the
    /// `X-CSRF-Token` header, and extra headers.
    async fn send(&self, b: &Browser, csrf: Option<&str>, headers: &[(&str, &str)]) -> StatusCode {
        let mut req = b
            .http
            .request(self.method.clone(), format!("{}{}", b.base, self.path));
        if let Some(c) = &b.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = &self.json {
            if let Some(token) = csrf {
                req = req.header("x-csrf-token", token);
            }
            req = req.json(body);
        } else {
            let mut fields: Vec<(&str, &str)> = self
                .form
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(token) = csrf {
                fields.push(("csrf", token));
            }
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(&fields).expect("form"));
        }
        req.send().await.expect("send").status()
    }
}

/// Imports a new simulator account into `pool_id` with `label`, pointed at
/// the simulator; returns (identity id, simulator account id).
pub(crate) async fn import_sim_account(
    h: &Harness,
    pool_id: &str,
    label: &str,
) -> (String, String) {
    let account = h.sim.create_account(AccountSpec::default());
    let auth = h.sim.auth_json(&account.account_id).expect("auth.json");
    let mut parsed = control::parse_auth_json(&auth.to_string(), Some(label)).expect("parse");
    parsed.identity.base_url = Some(h.sim.base_url());
    parsed.identity.auth_base_url = Some(h.sim.base_url());
    let imported = control::import_auth_json(
        &h.app.runtime.store,
        &h.app.runtime.secret_box,
        &AuditActor::cli(),
        pool_id,
        &parsed,
    )
    .await
    .expect("import");
    (imported.identity_id, account.account_id)
}

/// A device-code link of `pool_id`, created the way the console does it,
/// whose code the simulator accepts on the next poll (the first poll, made
/// here, is answered "pending").
pub(crate) async fn ready_device_link(h: &Harness, pool_id: &str) -> String {
    let http = reqwest::Client::new();
    let code: Value = http
        .post(format!(
            "{}/api/accounts/deviceauth/usercode",
            h.sim.base_url()
        ))
        .json(&json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann"}))
        .send()
        .await
        .expect("usercode")
        .json()
        .await
        .expect("json");
    let device_auth_id = code["device_auth_id"].as_str().expect("id").to_owned();
    let user_code = code["user_code"].as_str().expect("code").to_owned();
    let pending = http
        .post(format!(
            "{}/api/accounts/deviceauth/token",
            h.sim.base_url()
        ))
        .json(&json!({"device_auth_id": device_auth_id, "user_code": user_code}))
        .send()
        .await
        .expect("poll");
    assert_eq!(
        pending.status(),
        StatusCode::FORBIDDEN,
        "first poll is pending"
    );
    let rt = &h.app.runtime;
    rt.store
        .create_link_flow(
            &AuditActor::cli(),
            &codex_pooler::store::NewLinkFlow {
                pool_id,
                label: None,
                user_code: &user_code,
                verification_url: "http://127.0.0.1/codex/device",
                poll_interval_secs: 5,
                expires_at: codex_pooler::time::now_ms() + 600_000,
            },
            |flow_id| {
                let (ciphertext, nonce) = rt
                    .secret_box
                    .seal(flow_id, device_auth_id.as_bytes())
                    .map_err(|e| e.to_string())?;
                Ok(codex_pooler::store::SealedSecret {
                    ciphertext,
                    nonce,
                    key_version: codex_pooler::crypto::KEY_VERSION,
                })
            },
        )
        .await
        .expect("flow")
}

/// The demo owner's password once the route-by-route test changed it.
const NEW_OWNER_PASSWORD: &str = "route-owner-new-pw-1";

/// What the route-by-route test works on: a Pool of its own with one
/// account, and two owner sessions.
struct ChangeFixture {
    pool_id: String,
    identity_id: String,
    serial: std::cell::Cell<u32>,
}

impl ChangeFixture {
    fn next(&self) -> u32 {
        let n = self.serial.get() + 1;
        self.serial.set(n);
        n
    }

    async fn fresh_key(&self, h: &Harness) -> (String, String) {
        let (id, raw) = control::create_api_key(
            &h.app.runtime.store,
            &AuditActor::cli(),
            &self.pool_id,
            &format!("fixture key {}", self.next()),
            None,
            None,
        )
        .await
        .expect("key");
        (id, raw[..19].to_owned())
    }

    async fn fresh_admin(&self, h: &Harness) -> String {
        control::create_operator(
            &h.app.runtime.store,
            &AuditActor::cli(),
            &format!("fixture-{}@example.test", self.next()),
            "fixture-password-1",
            "admin",
        )
        .await
        .expect("operator")
    }

    /// A fresh API token of the demo owner (the signed-in operator);
    /// returns its id.
    async fn fresh_owner_token(&self, h: &Harness) -> String {
        let owner = crate::security::operator_id(h, &h.info.admin_email).await;
        control::issue_operator_token(
            &h.app.runtime.store,
            &AuditActor::cli(),
            &owner,
            &format!("fixture token {}", self.next()),
        )
        .await
        .expect("token")
        .id
    }

    /// A fresh account imported into the fixture Pool (pointed at the
    /// simulator); returns (identity id, label).
    async fn fresh_identity(&self, h: &Harness) -> (String, String) {
        let label = format!("fixture account {}", self.next());
        let (identity, _) = import_sim_account(h, &self.pool_id, &label).await;
        (identity, label)
    }

    /// An account serving another Pool only (one that could be added to the
    /// fixture Pool); returns its identity id.
    async fn account_elsewhere(&self, h: &Harness) -> String {
        let n = self.next();
        let other = h
            .app
            .runtime
            .store
            .create_pool(&AuditActor::cli(), &format!("elsewhere-{n}"), "Elsewhere")
            .await
            .expect("pool");
        import_sim_account(h, &other.id, &format!("elsewhere account {n}"))
            .await
            .0
    }

    /// A device-code link of the fixture Pool whose code the simulator will
    /// accept on the next poll.
    async fn ready_link(&self, h: &Harness) -> String {
        ready_device_link(h, &self.pool_id).await
    }

    /// A fresh admin whose two-factor sign-in is on (set up in the store).
    async fn admin_with_totp(&self, h: &Harness) -> String {
        let id = self.fresh_admin(h).await;
        let store = &h.app.runtime.store;
        let sealed = codex_pooler::store::SealedSecret {
            ciphertext: vec![0; 36],
            nonce: vec![0; 24],
            key_version: codex_pooler::crypto::KEY_VERSION,
        };
        store
            .start_totp_setup(&AuditActor::cli(), &id, &sealed)
            .await
            .expect("setup");
        store
            .enable_totp(&AuditActor::cli(), &id, &sealed.nonce, 1, &[])
            .await
            .expect("enable");
        id
    }

    fn auth_json(&self, h: &Harness) -> String {
        let account = h.sim.create_account(AccountSpec::default());
        h.sim
            .auth_json(&account.account_id)
            .expect("auth.json")
            .to_string()
    }

    /// A valid request for the route `pattern`, with fresh targets so it
    /// can succeed after the refused attempts.
    async fn change_for(&self, h: &Harness, method: &str, pattern: &str) -> Change {
        use reqwest::Method;
        let pool = &self.pool_id;
        let identity = &self.identity_id;
        let n = self.next();
        match (method, pattern) {
            ("POST", "/admin/pools") => Change::form(
                pattern.into(),
                &[("slug", &format!("route-{n}")), ("name", "Route")],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/pools/{pool_id}/settings") => {
                let ring = (2 + n % 60).to_string();
                Change::form(
                    format!("/admin/pools/{pool}/settings"),
                    &[
                        ("routing_strategy", "quota_first"),
                        ("bridge_ring_size", &ring),
                        ("v1_compatibility_enabled", "on"),
                    ],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/status") => Change::form(
                format!("/admin/pools/{pool}/status"),
                &[("status", "disabled")],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/pools/{pool_id}/upstreams") => Change::form(
                format!("/admin/pools/{pool}/upstreams"),
                &[("auth_json", &self.auth_json(h)), ("label", "via form")],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/pools/{pool_id}/upstreams/{identity_id}/status") => Change::form(
                format!("/admin/pools/{pool}/upstreams/{identity}/status"),
                &[("status", "paused")],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/pools/{pool_id}/upstreams/assign") => {
                let id = self.account_elsewhere(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/upstreams/assign"),
                    &[("identity_id", &id)],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/upstreams/assign") => {
                let id = self.account_elsewhere(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/upstreams/assign"),
                    json!({"identity_id": id}),
                    StatusCode::CREATED,
                )
            }
            ("POST", "/admin/pools/{pool_id}/upstreams/{identity_id}/rename") => {
                let (id, _) = self.fresh_identity(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/upstreams/{id}/rename"),
                    &[("label", &format!("renamed {n}"))],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/upstreams/{identity_id}/refresh") => {
                let (id, _) = self.fresh_identity(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/upstreams/{id}/refresh"),
                    &[],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/upstreams/{identity_id}/credentials") => {
                let label = format!("fixture account {n}");
                let (id, account) = import_sim_account(h, pool, &label).await;
                let fresh = h.sim.auth_json(&account).expect("auth.json").to_string();
                Change::form(
                    format!("/admin/pools/{pool}/upstreams/{id}/credentials"),
                    &[("auth_json", &fresh)],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/upstreams/{identity_id}/delete") => {
                let (id, label) = self.fresh_identity(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/upstreams/{id}/delete"),
                    &[("confirm_label", &label)],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/device-links") => Change::form(
                format!("/admin/pools/{pool}/device-links"),
                &[("label", &format!("linked {n}"))],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/pools/{pool_id}/device-links/{flow_id}/poll") => {
                let flow = self.ready_link(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/device-links/{flow}/poll"),
                    &[],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/upstreams/{identity_id}/rename") => {
                let (id, _) = self.fresh_identity(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/upstreams/{id}/rename"),
                    json!({"label": format!("renamed {n}")}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/upstreams/{identity_id}/refresh") => {
                let (id, _) = self.fresh_identity(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/upstreams/{id}/refresh"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/upstreams/{identity_id}/credentials") => {
                let label = format!("fixture account {n}");
                let (id, account) = import_sim_account(h, pool, &label).await;
                let fresh = h.sim.auth_json(&account).expect("auth.json");
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/upstreams/{id}/credentials"),
                    json!({"auth_json": fresh}),
                    StatusCode::OK,
                )
            }
            ("DELETE", "/admin/api/pools/{pool_id}/upstreams/{identity_id}") => {
                let (id, label) = self.fresh_identity(h).await;
                Change::json(
                    Method::DELETE,
                    format!("/admin/api/pools/{pool}/upstreams/{id}"),
                    json!({"confirm_label": label}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/device-links") => Change::json(
                Method::POST,
                format!("/admin/api/pools/{pool}/device-links"),
                json!({"label": format!("linked {n}")}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/pools/{pool_id}/device-links/{flow_id}/poll") => {
                let flow = self.ready_link(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/device-links/{flow}/poll"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/pools/{pool_id}/api-keys") => Change::form(
                format!("/admin/pools/{pool}/api-keys"),
                &[("name", &format!("form key {n}"))],
                StatusCode::CREATED,
            ),
            ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/status") => {
                let (key, _) = self.fresh_key(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/api-keys/{key}/status"),
                    &[("status", "paused")],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/rotate") => {
                let (key, _) = self.fresh_key(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/api-keys/{key}/rotate"),
                    &[],
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/pools/{pool_id}/api-keys/{key_id}/delete") => {
                let (key, prefix) = self.fresh_key(h).await;
                Change::form(
                    format!("/admin/pools/{pool}/api-keys/{key}/delete"),
                    &[("confirm_prefix", &prefix)],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/password") => Change::form(
                pattern.into(),
                &[
                    ("current_password", &h.info.admin_password),
                    ("password", NEW_OWNER_PASSWORD),
                    ("password_repeat", NEW_OWNER_PASSWORD),
                ],
                StatusCode::SEE_OTHER,
            ),
            // Operator security: TOTP is set up, enabled and disabled again
            // (so later sign-ins need no code), in MUTATING_ROUTES order,
            // after the password change above.
            ("POST", "/admin/security/totp/setup") => Change::form(
                pattern.into(),
                &[("current_password", NEW_OWNER_PASSWORD)],
                StatusCode::OK,
            ),
            ("POST", "/admin/security/totp/enable") => {
                let owner = crate::security::operator_id(h, &h.info.admin_email).await;
                let code = crate::security::pending_code(h, &owner).await;
                Change::form(pattern.into(), &[("code", &code)], StatusCode::OK)
            }
            ("POST", "/admin/security/totp/disable") => Change::form(
                pattern.into(),
                &[("current_password", NEW_OWNER_PASSWORD)],
                StatusCode::SEE_OTHER,
            ),
            ("POST", "/admin/security/sessions/{session_id}/revoke") => {
                let session = crate::security::fresh_session(h, &h.info.admin_email).await;
                Change::form(
                    format!("/admin/security/sessions/{session}/revoke"),
                    &[],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/security/sessions/revoke-others") => {
                crate::security::fresh_session(h, &h.info.admin_email).await;
                Change::form(pattern.into(), &[], StatusCode::SEE_OTHER)
            }
            ("POST", "/admin/api/security/sessions/{session_id}/revoke") => {
                let session = crate::security::fresh_session(h, &h.info.admin_email).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/security/sessions/{session}/revoke"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/security/tokens") => Change::form(
                pattern.into(),
                &[("label", &format!("form token {n}"))],
                StatusCode::CREATED,
            ),
            ("POST", "/admin/security/tokens/{token_id}/revoke") => {
                let token = self.fresh_owner_token(h).await;
                Change::form(
                    format!("/admin/security/tokens/{token}/revoke"),
                    &[],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/security/tokens") => Change::json(
                Method::POST,
                pattern.into(),
                json!({"label": format!("json token {n}")}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/security/tokens/{token_id}/revoke") => {
                let token = self.fresh_owner_token(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/security/tokens/{token}/revoke"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/operators") => Change::form(
                pattern.into(),
                &[
                    ("email", &format!("form-op-{n}@example.test")),
                    ("role", "admin"),
                    ("pool", pool),
                ],
                StatusCode::CREATED,
            ),
            ("POST", "/admin/operators/{operator_id}/pools") => {
                let id = self.fresh_admin(h).await;
                Change::form(
                    format!("/admin/operators/{id}/pools"),
                    &[("pool", pool)],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/operators/{operator_id}/pools") => {
                let id = self.fresh_admin(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/operators/{id}/pools"),
                    json!({"pool_ids": [pool]}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/operators/{operator_id}/totp-reset") => {
                let id = self.admin_with_totp(h).await;
                Change::form(
                    format!("/admin/operators/{id}/totp-reset"),
                    &[],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/operators/{operator_id}/totp-reset") => {
                let id = self.admin_with_totp(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/operators/{id}/totp-reset"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/operators/{operator_id}/status") => {
                let id = self.fresh_admin(h).await;
                Change::form(
                    format!("/admin/operators/{id}/status"),
                    &[("status", "deactivated")],
                    StatusCode::SEE_OTHER,
                )
            }
            ("POST", "/admin/api/pools") => Change::json(
                Method::POST,
                pattern.into(),
                json!({"slug": format!("api-route-{n}"), "name": "Api route"}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/pools/{pool_id}/settings") => Change::json(
                Method::POST,
                format!("/admin/api/pools/{pool}/settings"),
                json!({"bridge_ring_size": 2 + n % 60, "sticky_http_sessions": true}),
                StatusCode::OK,
            ),
            ("POST", "/admin/api/pools/{pool_id}/status") => Change::json(
                Method::POST,
                format!("/admin/api/pools/{pool}/status"),
                // The form case disabled it.
                json!({"status": "active"}),
                StatusCode::OK,
            ),
            ("POST", "/admin/api/pools/{pool_id}/upstreams") => Change::json(
                Method::POST,
                format!("/admin/api/pools/{pool}/upstreams"),
                json!({"auth_json": self.auth_json(h), "label": "via json"}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/pools/{pool_id}/upstreams/{identity_id}/status") => {
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/upstreams/{identity}/status"),
                    // The form case paused it.
                    json!({"status": "active"}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/api-keys") => Change::json(
                Method::POST,
                format!("/admin/api/pools/{pool}/api-keys"),
                json!({"name": format!("json key {n}")}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/pools/{pool_id}/api-keys/{key_id}/status") => {
                let (key, _) = self.fresh_key(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/api-keys/{key}/status"),
                    json!({"status": "revoked"}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/pools/{pool_id}/api-keys/{key_id}/rotate") => {
                let (key, _) = self.fresh_key(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/pools/{pool}/api-keys/{key}/rotate"),
                    json!({}),
                    StatusCode::OK,
                )
            }
            ("DELETE", "/admin/api/pools/{pool_id}/api-keys/{key_id}") => {
                let (key, prefix) = self.fresh_key(h).await;
                Change::json(
                    Method::DELETE,
                    format!("/admin/api/pools/{pool}/api-keys/{key}"),
                    json!({"confirm_prefix": prefix}),
                    StatusCode::OK,
                )
            }
            ("POST", "/admin/api/operators") => Change::json(
                Method::POST,
                pattern.into(),
                json!({"email": format!("json-op-{n}@example.test"), "role": "admin",
                       "pool_ids": [pool]}),
                StatusCode::CREATED,
            ),
            ("POST", "/admin/api/operators/{operator_id}/status") => {
                let id = self.fresh_admin(h).await;
                Change::json(
                    Method::POST,
                    format!("/admin/api/operators/{id}/status"),
                    json!({"status": "deactivated"}),
                    StatusCode::OK,
                )
            }
            (method, other) => panic!(
                "the console test does not know the mutating route {method} {other}: \
                 add a case to ChangeFixture::change_for"
            ),
        }
    }
}

/// Every mutating console route: without a valid CSRF check it is refused,
/// writes no audit event and changes nothing; a valid request writes exactly
/// one audit event. Sign-in, sign-out and bootstrap have their own rules,
/// asserted at the end.
async fn every_change_route(backend: Backend) {
    // The list next to the router is the list of routes the router has.
    let mut declared: Vec<(String, String)> = codex_pooler::admin::console::MUTATING_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let mut routed = mutating_routes_in(include_str!("../../src/admin/console/mod.rs"));
    routed.extend(mutating_routes_in(include_str!("../../src/admin/api.rs")));
    declared.sort();
    routed.sort();
    assert_eq!(
        routed, declared,
        "MUTATING_ROUTES must list exactly the console's change routes"
    );

    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let pool = store
        .create_pool(&cli, "routes", "Routes Pool")
        .await
        .expect("pool");
    let account = h.sim.create_account(AccountSpec::default());
    let auth = h.sim.auth_json(&account.account_id).expect("auth.json");
    let mut parsed = control::parse_auth_json(&auth.to_string(), Some("fixture")).expect("parse");
    parsed.identity.base_url = Some(h.sim.base_url());
    parsed.identity.auth_base_url = Some(h.sim.base_url());
    let imported =
        control::import_auth_json(store, &h.app.runtime.secret_box, &cli, &pool.id, &parsed)
            .await
            .expect("import");
    let fx = ChangeFixture {
        pool_id: pool.id.clone(),
        identity_id: imported.identity_id,
        serial: std::cell::Cell::new(0),
    };
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let other = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let origin = b.base.clone();
    let same_origin = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];

    for (method, pattern) in codex_pooler::admin::console::MUTATING_ROUTES {
        // `/login/totp` has its own assertions in `security.rs`.
        if matches!(
            *pattern,
            "/login" | "/login/totp" | "/logout" | "/bootstrap"
        ) {
            continue;
        }
        let change = fx.change_for(&h, method, pattern).await;
        let refusals: [Refusal; 4] = [
            ("no token", None, same_origin.to_vec()),
            (
                "foreign origin",
                Some(&b.csrf),
                vec![("origin", "http://evil.example")],
            ),
            (
                "cross-site fetch",
                Some(&b.csrf),
                vec![("sec-fetch-site", "cross-site")],
            ),
            (
                "another session's token",
                Some(&other.csrf),
                same_origin.to_vec(),
            ),
        ];
        for (what, token, headers) in refusals {
            let before = fingerprint(&h).await;
            let status = no_audit_event!(
                &h,
                format!("{method} {pattern} with {what}"),
                change.send(&b, token, &headers).await
            );
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {pattern}: {what}");
            assert_eq!(
                fingerprint(&h).await,
                before,
                "{method} {pattern} with {what} changes nothing"
            );
        }
        let status = one_audit_event!(
            &h,
            format!("{method} {pattern}"),
            change.send(&b, Some(&b.csrf), &same_origin).await
        );
        assert_eq!(status, change.ok, "{method} {pattern} succeeds");
    }

    // Sign-out is a change of the session: CSRF-checked like the rest.
    let signing_out = Browser::login(&h, &h.info.admin_email, NEW_OWNER_PASSWORD).await;
    let logout = Change::form("/logout".into(), &[], StatusCode::SEE_OTHER);
    for (what, token, headers) in [
        ("no token", None, same_origin.to_vec()),
        (
            "foreign origin",
            Some(signing_out.csrf.as_str()),
            vec![("origin", "http://evil.example")],
        ),
        (
            "another session's token",
            Some(b.csrf.as_str()),
            same_origin.to_vec(),
        ),
    ] {
        let before = fingerprint(&h).await;
        let status = no_audit_event!(
            &h,
            format!("logout with {what}"),
            logout.send(&signing_out, token, &headers).await
        );
        assert_eq!(status, StatusCode::FORBIDDEN, "logout: {what}");
        assert_eq!(fingerprint(&h).await, before);
    }
    let status = one_audit_event!(
        &h,
        "logout",
        logout
            .send(&signing_out, Some(&signing_out.csrf), &same_origin)
            .await
    );
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Sign-in has no session to derive a token from: the browser's origin is
    // its CSRF check. A foreign sign-in and a failed one write nothing (a
    // failed sign-in is not audited, so anonymous clients cannot fill the
    // audit log); a successful one writes `auth.login`.
    let anon = Browser::new(&h);
    let email = h.info.admin_email.as_str();
    let password = NEW_OWNER_PASSWORD;
    let login = |p: &str| {
        Change::form(
            "/login".into(),
            &[("email", email), ("password", p)],
            StatusCode::SEE_OTHER,
        )
    };
    for (what, change, headers, refused) in [
        (
            "foreign origin",
            login(password),
            vec![("origin", "http://evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site fetch",
            login(password),
            vec![("sec-fetch-site", "cross-site")],
            StatusCode::FORBIDDEN,
        ),
        (
            "wrong password",
            login("not-the-password"),
            same_origin.to_vec(),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let before = fingerprint(&h).await;
        let status = no_audit_event!(
            &h,
            format!("login with {what}"),
            change.send(&anon, None, &headers).await
        );
        assert_eq!(status, refused, "login: {what}");
        assert_eq!(fingerprint(&h).await, before);
    }
    let status = one_audit_event!(
        &h,
        "login",
        login(password).send(&anon, None, &same_origin).await
    );
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Bootstrap likewise: origin plus the one-time token printed at start-up.
    exec_sql(&h, "DELETE FROM operators").await;
    let token = h.app.bootstrap_token.clone().expect("bootstrap token");
    let bootstrap = Change::form(
        "/bootstrap".into(),
        &[
            ("token", &token),
            ("email", "route-owner@example.test"),
            ("password", "route-owner-pw-1"),
            ("password_repeat", "route-owner-pw-1"),
        ],
        StatusCode::SEE_OTHER,
    );
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let before = fingerprint(&h).await;
        let status = no_audit_event!(
            &h,
            "foreign bootstrap",
            bootstrap.send(&anon, None, &headers).await
        );
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(fingerprint(&h).await, before);
    }
    let status = one_audit_event!(
        &h,
        "bootstrap",
        bootstrap.send(&anon, None, &same_origin).await
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    h.stop().await;
}
on_both_backends!(
    every_change_route_checks_csrf_and_audits_once,
    every_change_route
);

/// Status of a model-list call made with `key` (authentication only; no
/// upstream account needed).
async fn models_with(h: &Harness, key: &str) -> StatusCode {
    h.http
        .get(h.url("/backend-api/codex/models"))
        .bearer_auth(key)
        .send()
        .await
        .expect("sent")
        .status()
}

/// Status of a Responses call made with `key`.
async fn call_with(h: &Harness, key: &str, cache_key: &str) -> StatusCode {
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(key)
        .json(&text_request("hi", cache_key))
        .send()
        .await
        .expect("sent");
    let status = r.status();
    let _ = r.text().await;
    status
}

async fn key_rotation_and_deletion(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let demo = h.info.pool_id.clone();
    let b = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;

    // A key in use, rotated: the page shows the new key once, the old one
    // stops working at once (its cached verification is dropped), the record
    // and its history stay.
    let page = b
        .post(
            &format!("/admin/pools/{demo}/api-keys"),
            &[("name", "rotating")],
        )
        .await;
    let old = raw_key(&page.body);
    assert_eq!(call_with(&h, &old, "rot-1").await, StatusCode::OK);
    let key_id = store
        .find_api_key_by_prefix(&old[..19])
        .await
        .expect("find")
        .expect("key")
        .id;
    let page = one_audit_event!(
        &h,
        "rotate",
        b.post(
            &format!("/admin/pools/{demo}/api-keys/{key_id}/rotate"),
            &[]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("API key “rotating” rotated"));
    assert!(page.body.contains("The previous secret no longer works."));
    let new = raw_key(&page.body);
    assert_ne!(new, old);
    assert_eq!(call_with(&h, &old, "rot-2").await, StatusCode::UNAUTHORIZED);
    assert_eq!(call_with(&h, &new, "rot-3").await, StatusCode::OK);
    let row = store
        .find_api_key_by_prefix(&new[..19])
        .await
        .expect("find")
        .expect("key");
    assert_eq!(row.id, key_id, "same record");
    assert_eq!(
        store.count_audit_events("api_key.rotate").await.expect("n"),
        1
    );
    // A revoked key cannot be rotated.
    let (revoked_id, _) = control::create_api_key(store, &cli, &demo, "gone", None, None)
        .await
        .expect("key");
    store
        .set_api_key_status(&cli, &revoked_id, "revoked")
        .await
        .expect("revoke");
    let page = no_audit_event!(
        &h,
        "rotate revoked",
        b.post(
            &format!("/admin/pools/{demo}/api-keys/{revoked_id}/rotate"),
            &[]
        )
        .await
    );
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("no unrevoked API key in this Pool"));

    // Deleting needs the prefix typed exactly.
    let prefix = new[..19].to_owned();
    h.flush().await;
    let before = fingerprint(&h).await;
    for (typed, expected) in [
        ("", "nothing was typed"),
        (
            "sk-cxp-000000000000",
            "\"sk-cxp-000000000000\" does not match",
        ),
    ] {
        let page = no_audit_event!(
            &h,
            "delete with a wrong prefix",
            b.post(
                &format!("/admin/pools/{demo}/api-keys/{key_id}/delete"),
                &[("confirm_prefix", typed)]
            )
            .await
        );
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        let message = format!(
            "to delete the API key \"rotating\", type its prefix {prefix} exactly; {expected}. Nothing was deleted."
        );
        assert!(
            page.body.contains(&message.replace('"', "&#34;"))
                || page.body.contains(&message.replace('"', "&quot;")),
            "precise message {message} in {}",
            page.body
        );
    }
    assert_eq!(fingerprint(&h).await, before, "nothing changed");
    assert_eq!(call_with(&h, &new, "rot-4").await, StatusCode::OK);
    h.flush().await;
    let history = h
        .request_logs()
        .await
        .iter()
        .filter(|r| r["api_key_id"] == key_id.as_str())
        .count();
    assert!(history >= 3, "the key has request history ({history})");
    let page = one_audit_event!(
        &h,
        "delete",
        b.post(
            &format!("/admin/pools/{demo}/api-keys/{key_id}/delete"),
            &[("confirm_prefix", &format!(" {prefix} "))]
        )
        .await
    );
    assert_eq!(
        (page.status, page.location.as_str()),
        (
            StatusCode::SEE_OTHER,
            format!("/admin/pools/{demo}?notice=key_deleted#keys").as_str()
        )
    );
    assert!(
        store
            .find_api_key_by_prefix(&prefix)
            .await
            .expect("find")
            .is_none()
    );
    assert_eq!(call_with(&h, &new, "rot-5").await, StatusCode::UNAUTHORIZED);
    let history = h
        .request_logs()
        .await
        .iter()
        .filter(|r| r["api_key_id"] == key_id.as_str())
        .count();
    assert_eq!(history, 0, "its request history went with it");

    // JSON twins, and an admin cannot touch another Pool's key.
    let other = store
        .create_pool(&cli, "other", "Other Pool")
        .await
        .expect("pool");
    let (other_key_id, other_key) =
        control::create_api_key(store, &cli, &other.id, "other key", None, None)
            .await
            .expect("key");
    let admin_id = control::create_operator(
        store,
        &cli,
        "admin@example.test",
        "admin-password-123",
        "admin",
    )
    .await
    .expect("admin");
    store
        .assign_operator_pool(&cli, &admin_id, &demo)
        .await
        .expect("assign");
    let admin = Browser::login(&h, "admin@example.test", "admin-password-123").await;
    let before = fingerprint(&h).await;
    for path in [
        format!("/admin/pools/{}/api-keys/{other_key_id}/rotate", other.id),
        format!("/admin/pools/{demo}/api-keys/{other_key_id}/rotate"),
        format!("/admin/pools/{}/api-keys/{other_key_id}/delete", other.id),
        format!("/admin/pools/{demo}/api-keys/{other_key_id}/delete"),
    ] {
        let page = no_audit_event!(
            &h,
            &path,
            admin
                .post(&path, &[("confirm_prefix", &other_key[..19])])
                .await
        );
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
    }
    let cookie = admin.cookie.clone().expect("cookie");
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            format!("/admin/api/pools/{demo}/api-keys/{other_key_id}/rotate"),
            json!({}),
        ),
        (
            reqwest::Method::DELETE,
            format!("/admin/api/pools/{}/api-keys/{other_key_id}", other.id),
            json!({"confirm_prefix": &other_key[..19]}),
        ),
    ] {
        let r = no_audit_event!(
            &h,
            &path,
            h.http
                .request(method, h.url(&path))
                .header("cookie", &cookie)
                .header("x-csrf-token", &admin.csrf)
                .json(&body)
                .send()
                .await
                .expect("sent")
        );
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(fingerprint(&h).await, before, "nothing changed");
    assert_eq!(models_with(&h, &other_key).await, StatusCode::OK);

    // The owner's JSON twins.
    let r = one_audit_event!(
        &h,
        "json rotate",
        h.http
            .post(h.url(&format!(
                "/admin/api/pools/{}/api-keys/{other_key_id}/rotate",
                other.id
            )))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({}))
            .send()
            .await
            .expect("sent")
    );
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    let rotated = body["key"].as_str().expect("key").to_owned();
    assert_eq!(body["name"], "other key");
    assert_eq!(models_with(&h, &other_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(models_with(&h, &rotated).await, StatusCode::OK);
    let delete = |typed: String| {
        h.http
            .delete(h.url(&format!(
                "/admin/api/pools/{}/api-keys/{other_key_id}",
                other.id
            )))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({"confirm_prefix": typed}))
            .send()
    };
    let r = no_audit_event!(
        &h,
        "json delete, old prefix",
        delete(other_key[..19].to_owned()).await.expect("sent")
    );
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["error"]["message"],
        format!(
            "to delete the API key \"other key\", type its prefix {} exactly; \"{}\" does not match. Nothing was deleted.",
            &rotated[..19],
            &other_key[..19]
        )
    );
    // Let the recorder write the key's request rows first: a row arriving
    // after its key was deleted has nothing to point at.
    h.flush().await;
    let r = one_audit_event!(
        &h,
        "json delete",
        delete(rotated[..19].to_owned()).await.expect("sent")
    );
    assert_eq!(r.status(), 200);
    assert_eq!(models_with(&h, &rotated).await, StatusCode::UNAUTHORIZED);
    h.stop().await;
}
on_both_backends!(api_keys_rotate_and_delete, key_rotation_and_deletion);

async fn operators_page(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let demo = h.info.pool_id.clone();
    let other = store
        .create_pool(&cli, "other", "Other Pool")
        .await
        .expect("pool");
    let chosen = "admin-chosen-password-1";
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner.get("/admin/operators").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&h.info.admin_email) && page.body.contains("all Pools"));
    assert!(
        page.body.contains("href=\"/admin/operators\""),
        "owners see the section"
    );

    // Create an admin of the demo Pool: the temporary password is shown once.
    let page = one_audit_event!(
        &h,
        "create operator",
        owner
            .post(
                "/admin/operators",
                &[
                    ("email", " New.Admin@Example.test "),
                    ("role", "admin"),
                    ("pool", &demo),
                ],
            )
            .await
    );
    assert_eq!(page.status, StatusCode::CREATED);
    assert!(
        page.body
            .contains("Operator new.admin@example.test created")
    );
    let start = page
        .body
        .find("id=\"temporary-password\" readonly value=\"")
        .expect("password")
        + "id=\"temporary-password\" readonly value=\"".len();
    let temporary = page.body[start..]
        .split('"')
        .next()
        .expect("value")
        .to_owned();
    assert!(temporary.len() >= 16);
    let listed = owner.get("/admin/operators").await;
    assert!(listed.body.contains("new.admin@example.test"));
    assert!(listed.body.contains("Demo Pool") || listed.body.contains(&demo));
    assert!(listed.body.contains("must change the temporary password"));
    assert!(!listed.body.contains(&temporary), "shown once");
    // Refusals are precise and write nothing.
    for (fields, message) in [
        (
            vec![("email", "new.admin@example.test"), ("role", "admin")],
            "an operator with the email new.admin@example.test already exists",
        ),
        (
            vec![("email", "not-an-email"), ("role", "admin")],
            "email must be an address like name@example.com",
        ),
        (
            vec![("email", "x@example.test"), ("role", "root")],
            "role must be owner or admin",
        ),
        (
            vec![
                ("email", "x@example.test"),
                ("role", "admin"),
                ("pool", "no-such-pool"),
            ],
            "one of the chosen Pools does not exist (any more); reload the page",
        ),
    ] {
        let before = fingerprint(&h).await;
        let page = no_audit_event!(&h, message, owner.post("/admin/operators", &fields).await);
        assert!(page.status.is_client_error(), "{message}");
        assert!(page.body.contains(message), "{message}");
        assert_eq!(fingerprint(&h).await, before);
    }

    // The new admin signs in, sees only the demo Pool, and cannot reach the
    // Operators section (page, JSON, or changes).
    let admin = Browser::login(&h, "new.admin@example.test", &temporary).await;
    // First the temporary password is replaced: every page leads there, and
    // the JSON twins refuse.
    assert_eq!(admin.get("/admin/pools").await.location, "/admin/password");
    assert_eq!(
        admin.get("/admin/operators").await.location,
        "/admin/password"
    );
    let page = admin.get("/admin/password").await;
    assert!(
        page.body
            .contains("You signed in with a temporary password.")
    );
    let r = h
        .http
        .get(h.url("/admin/api/pools"))
        .header("cookie", admin.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let page = no_audit_event!(
        &h,
        "a change before the password",
        admin
            .post(
                &format!("/admin/pools/{demo}/api-keys"),
                &[("name", "early")]
            )
            .await
    );
    assert_eq!(page.location, "/admin/password");
    for (current, new, repeat, message) in [
        (
            "wrong-temporary",
            chosen,
            chosen,
            "The current password is incorrect.",
        ),
        (
            temporary.as_str(),
            "short",
            "short",
            "The new password must be at least 12 characters.",
        ),
        (
            temporary.as_str(),
            chosen,
            "admin-chosen-password-2",
            "The two new passwords differ.",
        ),
        (
            temporary.as_str(),
            temporary.as_str(),
            temporary.as_str(),
            "The new password must differ from the current one.",
        ),
    ] {
        let page = no_audit_event!(
            &h,
            message,
            admin
                .post(
                    "/admin/password",
                    &[
                        ("current_password", current),
                        ("password", new),
                        ("password_repeat", repeat),
                    ],
                )
                .await
        );
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
        assert!(page.body.contains(message), "{message}");
    }
    let page = one_audit_event!(
        &h,
        "required password change",
        admin
            .post(
                "/admin/password",
                &[
                    ("current_password", &temporary),
                    ("password", chosen),
                    ("password_repeat", chosen),
                ],
            )
            .await
    );
    assert_eq!(page.location, "/admin/pools?notice=password_changed");
    assert_eq!(
        store
            .count_audit_events("auth.required_password_change")
            .await
            .expect("n"),
        1
    );
    let page = admin.get("/admin/pools").await;
    assert!(page.body.contains("Demo Pool") && !page.body.contains("Other Pool"));
    assert!(!page.body.contains("href=\"/admin/operators\""));
    assert_eq!(
        admin.get("/admin/operators").await.status,
        StatusCode::FORBIDDEN
    );
    let admin_id = store
        .find_operator_by_email("new.admin@example.test")
        .await
        .expect("find")
        .expect("operator")
        .id;
    let owner_id = store
        .find_operator_by_email(&h.info.admin_email)
        .await
        .expect("find")
        .expect("operator")
        .id;
    let before = fingerprint(&h).await;
    let page = no_audit_event!(
        &h,
        "admin creating an operator",
        admin
            .post(
                "/admin/operators",
                &[("email", "sneaky@example.test"), ("role", "owner")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = no_audit_event!(
        &h,
        "admin deactivating the owner",
        admin
            .post(
                &format!("/admin/operators/{owner_id}/status"),
                &[("status", "deactivated")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let cookie = admin.cookie.clone().expect("cookie");
    let r = h
        .http
        .get(h.url("/admin/api/operators"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = no_audit_event!(
        &h,
        "admin json create",
        h.http
            .post(h.url("/admin/api/operators"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &admin.csrf)
            .json(&json!({"email": "sneaky@example.test", "role": "owner"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 403);
    assert_eq!(fingerprint(&h).await, before);

    // Deactivating the admin ends their session at once and stops sign-in;
    // reactivating lets them sign in again.
    let page = one_audit_event!(
        &h,
        "deactivate",
        owner
            .post(
                &format!("/admin/operators/{admin_id}/status"),
                &[("status", "deactivated")]
            )
            .await
    );
    assert_eq!(
        page.location,
        "/admin/operators?notice=operator_deactivated"
    );
    let page = admin.get("/admin/pools").await;
    assert_eq!(page.location, "/login?expired=1");
    let r = h
        .http
        .get(h.url("/admin/api/pools"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let page = no_audit_event!(
        &h,
        "deactivated sign-in",
        Browser::new(&h)
            .post_raw(
                "/login",
                &[("email", "new.admin@example.test"), ("password", chosen)],
                &[]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = no_audit_event!(
        &h,
        "deactivate twice",
        owner
            .post(
                &format!("/admin/operators/{admin_id}/status"),
                &[("status", "deactivated")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("the operator is already deactivated"));
    let page = one_audit_event!(
        &h,
        "reactivate",
        owner
            .post(
                &format!("/admin/operators/{admin_id}/status"),
                &[("status", "active")]
            )
            .await
    );
    assert_eq!(page.location, "/admin/operators?notice=operator_active");
    assert_eq!(
        admin.get("/admin/pools").await.location,
        "/login?expired=1",
        "old sessions stay revoked"
    );
    let again = Browser::login(&h, "new.admin@example.test", chosen).await;
    assert_eq!(again.get("/admin/pools").await.status, StatusCode::OK);

    // The last active owner cannot be deactivated.
    let before = fingerprint(&h).await;
    let page = no_audit_event!(
        &h,
        "last owner",
        owner
            .post(
                &format!("/admin/operators/{owner_id}/status"),
                &[("status", "deactivated")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains(
        "the last active owner cannot be deactivated; create or reactivate another owner first"
    ));
    assert_eq!(fingerprint(&h).await, before);
    let r = no_audit_event!(
        &h,
        "last owner by json",
        h.http
            .post(h.url(&format!("/admin/api/operators/{owner_id}/status")))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({"status": "deactivated"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 409);
    // With a second owner (JSON twin), one owner may deactivate the other,
    // but still not themselves.
    let r = one_audit_event!(
        &h,
        "json create owner",
        h.http
            .post(h.url("/admin/api/operators"))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({"email": "second.owner@example.test", "role": "owner"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    let second_id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["must_change_password"], true);
    assert!(
        body["temporary_password"]
            .as_str()
            .is_some_and(|p| p.len() >= 16)
    );
    let r = h
        .http
        .post(h.url("/admin/api/operators"))
        .bearer_auth(&h.info.operator_token)
        .json(
            &json!({"email": "owner.pools@example.test", "role": "owner", "pool_ids": [other.id]}),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 422);
    let page = no_audit_event!(
        &h,
        "deactivate self",
        owner
            .post(
                &format!("/admin/operators/{owner_id}/status"),
                &[("status", "deactivated")]
            )
            .await
    );
    assert!(
        page.body
            .contains("you cannot deactivate yourself; ask another owner to do it")
    );
    let r = one_audit_event!(
        &h,
        "json deactivate the second owner",
        h.http
            .post(h.url(&format!("/admin/api/operators/{second_id}/status")))
            .bearer_auth(&h.info.operator_token)
            .json(&json!({"status": "deactivated"}))
            .send()
            .await
            .expect("post")
    );
    assert_eq!(r.status(), 200);
    let listed: Value = h
        .http
        .get(h.url("/admin/api/operators"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let rows = listed["data"].as_array().expect("data");
    let admin_row = rows
        .iter()
        .find(|o| o["id"] == admin_id.as_str())
        .expect("admin listed");
    assert_eq!(admin_row["role"], "admin");
    assert_eq!(admin_row["pools"][0][0], demo.as_str());
    assert!(rows.iter().all(|o| o.get("password_hash").is_none()));
    h.stop().await;
}
on_both_backends!(operators_are_managed_by_the_owner, operators_page);

/// A JSON GET with `b`'s session cookie: (status, body).
async fn api_get(h: &Harness, b: &Browser, path: &str) -> (StatusCode, Value) {
    let r = h
        .http
        .get(h.url(path))
        .header("cookie", b.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("get");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A JSON POST with `b`'s session cookie and CSRF token: (status, body).
async fn api_post(h: &Harness, b: &Browser, path: &str, body: Value) -> (StatusCode, Value) {
    let r = h
        .http
        .post(h.url(path))
        .header("cookie", b.cookie.clone().expect("cookie"))
        .header("x-csrf-token", &b.csrf)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(listed: &Value) -> Vec<String> {
    listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Today as `YYYY-MM-DD` (UTC), and the days before and after.
fn utc_days() -> (String, String, String) {
    let now = codex_pooler::time::now_ms();
    let day = |ms: i64| codex_pooler::time::format_utc(ms, ' ', "")[..10].to_owned();
    (day(now - 86_400_000), day(now), day(now + 86_400_000))
}

async fn audit_filters_and_detail(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let demo = h.info.pool_id.clone();
    let other = store
        .create_pool(&cli, "audit-other", "Audit Other Pool")
        .await
        .expect("pool");
    let (other_key_id, _) =
        control::create_api_key(store, &cli, &other.id, "other key", None, None)
            .await
            .expect("key");
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner
        .post(
            &format!("/admin/pools/{demo}/api-keys"),
            &[("name", "audited key")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CREATED);
    let key_id = store
        .find_api_key_by_prefix(&raw_key(&page.body)[..19])
        .await
        .expect("find")
        .expect("key")
        .id;
    // A failed event with a secret-looking value in its details, as an
    // older writer might have left it.
    let secret_sql = format!(
        "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id, outcome, ip, details)
         VALUES ('audit-secret-event', {}, 'system', NULL, 'importer', 'upstream.import', 'upstream_identity', 'ident-x', '{demo}', 'failed', '203.0.113.9',
                 '{{\"token\": \"sk-should-not-show\", \"fields\": [\"password\"], \"nested\": {{\"refresh_token\": \"rt-hidden\"}}}}')",
        codex_pooler::time::now_ms()
    );
    exec_sql(&h, Box::leak(secret_sql.into_boxed_str())).await;

    // Each filter, on the JSON twin.
    let q = |query: &str| format!("/admin/api/audit-events?limit=200&{query}");
    let (_, all) = api_get(&h, &owner, &q("")).await;
    let all_rows = all["data"].as_array().expect("data").clone();
    assert!(all_rows.len() >= 4);
    let (_, by_pool) = api_get(&h, &owner, &q(&format!("pool_id={}", other.id))).await;
    let rows = by_pool["data"].as_array().expect("data");
    assert!(!rows.is_empty() && rows.iter().all(|e| e["pool_id"] == other.id.as_str()));
    let (_, failed) = api_get(&h, &owner, &q("outcome=failed")).await;
    assert_eq!(ids(&failed), vec!["audit-secret-event".to_owned()]);
    let (_, ok_rows) = api_get(&h, &owner, &q("outcome=succeeded")).await;
    assert_eq!(
        ok_rows["data"].as_array().map(Vec::len),
        Some(all_rows.len() - 1)
    );
    let (_, created) = api_get(&h, &owner, &q("action=api_key.create")).await;
    let rows = created["data"].as_array().expect("data");
    assert!(rows.len() >= 2 && rows.iter().all(|e| e["action"] == "api_key.create"));
    let (_, by_actor) = api_get(&h, &owner, &q("actor=OWNER@demo")).await;
    let rows = by_actor["data"].as_array().expect("data");
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|e| e["actor_label"] == h.info.admin_email.as_str())
    );
    let (_, by_target) = api_get(
        &h,
        &owner,
        &q(&format!("target_kind=api_key&target_id={key_id}")),
    )
    .await;
    let rows = by_target["data"].as_array().expect("data");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["action"], "api_key.create");
    let (_, kind_only) = api_get(&h, &owner, &q("target_kind=pool")).await;
    let rows = kind_only["data"].as_array().expect("data");
    assert!(!rows.is_empty() && rows.iter().all(|e| e["target_kind"] == "pool"));
    let (_, id_only) = api_get(&h, &owner, &q(&format!("target_id={other_key_id}"))).await;
    assert_eq!(id_only["data"].as_array().map(Vec::len), Some(1));
    let (yesterday, today, tomorrow) = utc_days();
    let (_, from_today) = api_get(&h, &owner, &q(&format!("date_from={today}"))).await;
    assert_eq!(
        from_today["data"].as_array().map(Vec::len),
        Some(all_rows.len())
    );
    let (_, from_tomorrow) = api_get(&h, &owner, &q(&format!("date_from={tomorrow}"))).await;
    assert_eq!(from_tomorrow["data"].as_array().map(Vec::len), Some(0));
    let (_, to_yesterday) = api_get(&h, &owner, &q(&format!("date_to={yesterday}"))).await;
    assert_eq!(to_yesterday["data"].as_array().map(Vec::len), Some(0));
    let (_, to_today) = api_get(&h, &owner, &q(&format!("date_to={today}"))).await;
    assert_eq!(
        to_today["data"].as_array().map(Vec::len),
        Some(all_rows.len())
    );
    // Filters combine, and paging keeps them.
    let (_, first) = api_get(
        &h,
        &owner,
        "/admin/api/audit-events?limit=1&action=api_key.create",
    )
    .await;
    let cursor = first["next_before"].as_str().expect("next page").to_owned();
    let (_, second) = api_get(
        &h,
        &owner,
        &format!("/admin/api/audit-events?limit=1&action=api_key.create&before={cursor}"),
    )
    .await;
    assert_eq!(second["data"][0]["action"], "api_key.create");
    assert_ne!(second["data"][0]["id"], first["data"][0]["id"]);

    // Invalid values are ignored with a warning naming them; the list still shows.
    let (status, warned) = api_get(
        &h,
        &owner,
        &q("outcome=maybe&date_from=2026-13-01&target_kind=planet&action=DROP%20TABLE&colour=red"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let warnings: Vec<String> = warned["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().expect("text").to_owned())
        .collect();
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    for name in [
        "outcome:",
        "date_from:",
        "target_kind:",
        "action:",
        "colour:",
    ] {
        assert!(
            warnings.iter().any(|w| w.starts_with(name)),
            "{name} {warnings:?}"
        );
    }
    assert_eq!(
        warned["data"].as_array().map(Vec::len),
        Some(all_rows.len())
    );
    let page = owner
        .get("/admin/audit?outcome=maybe&date_to=yesterday&pool_id=")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("class=\"warning\""));
    assert!(page.body.contains("outcome: unknown outcome"));
    assert!(
        page.body
            .contains("date_to: not a date (use YYYY-MM-DD, UTC)")
    );
    // The page applies the filters and keeps them in the form.
    let page = owner
        .get(&format!(
            "/admin/audit?target_kind=api_key&target_id={key_id}&date_from={today}"
        ))
        .await;
    assert!(page.body.contains(&format!("value=\"{key_id}\"")));
    assert!(page.body.contains(&format!("value=\"{today}\"")));
    assert!(page.body.contains("<option value=\"api_key\" selected>"));
    assert!(page.body.contains("<code>api_key.create</code>"));
    assert!(!page.body.contains("<code>pool.create</code>"));
    let page = owner
        .get(&format!("/admin/audit?pool_id={}", other.id))
        .await;
    assert!(page.body.contains("selected>Audit Other Pool</option>"));
    assert!(!page.body.contains("audit-secret-event"));

    // The detail view: every fact, sanitized details, links.
    let event_id = rows_first_id(&by_target);
    let page = owner.get(&format!("/admin/audit/{event_id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for part in [
        "api_key.create",
        h.info.admin_email.as_str(),
        key_id.as_str(),
        &format!("href=\"/admin/pools/{demo}\""),
        &format!("href=\"/admin/pools/{demo}#keys\""),
        "succeeded",
        "display_name",
    ] {
        assert!(page.body.contains(part), "detail shows {part}");
    }
    let page = owner.get("/admin/audit/audit-secret-event").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("203.0.113.9") && page.body.contains("failed"));
    assert!(page.body.contains("[redacted]"));
    assert!(!page.body.contains("sk-should-not-show") && !page.body.contains("rt-hidden"));
    let (status, detail) = api_get(&h, &owner, "/admin/api/audit-events/audit-secret-event").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["event"]["details"]["token"], "[redacted]");
    assert_eq!(
        detail["event"]["details"]["nested"]["refresh_token"],
        "[redacted]"
    );
    assert_eq!(detail["event"]["details"]["fields"][0], "password");
    assert_eq!(detail["event"]["outcome"], "failed");
    let page = owner.get("/admin/audit/no-such-event").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    // An admin of the demo Pool: only its events, in the list and by id.
    let admin_id = control::create_operator(
        store,
        &cli,
        "auditor@example.test",
        "auditor-password-1",
        "admin",
    )
    .await
    .expect("admin");
    store
        .assign_operator_pool(&cli, &admin_id, &demo)
        .await
        .expect("assign");
    let admin = Browser::login(&h, "auditor@example.test", "auditor-password-1").await;
    let (_, mine) = api_get(&h, &admin, &q("")).await;
    assert!(
        mine["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|e| e["pool_id"] != other.id.as_str())
    );
    let (_, theirs) = api_get(&h, &admin, &q(&format!("pool_id={}", other.id))).await;
    assert_eq!(theirs["data"].as_array().map(Vec::len), Some(0));
    let other_event = ids(&id_only).remove(0);
    let page = admin.get(&format!("/admin/audit/{other_event}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("other key"));
    let (status, _) = api_get(
        &h,
        &admin,
        &format!("/admin/api/audit-events/{other_event}"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        admin.get(&format!("/admin/audit/{event_id}")).await.status,
        StatusCode::OK
    );
    let page = admin.get("/admin/audit").await;
    assert!(
        !page.body.contains("Audit Other Pool"),
        "the Pool filter lists only assigned Pools"
    );
    h.stop().await;
}
on_both_backends!(
    audit_logs_filter_and_show_one_event,
    audit_filters_and_detail
);

fn rows_first_id(listed: &Value) -> String {
    listed["data"][0]["id"].as_str().expect("id").to_owned()
}

/// The body of a Responses call with `key`: (status, error code).
async fn call_code(h: &Harness, key: &str, cache_key: &str) -> (StatusCode, String) {
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(key)
        .json(&text_request("hi", cache_key))
        .send()
        .await
        .expect("sent");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

async fn pool_lifecycle(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let cli = AuditActor::cli();
    let demo = h.info.pool_id.clone();
    let key = h.info.api_key.clone();
    let other = store
        .create_pool(&cli, "life-other", "Life Other Pool")
        .await
        .expect("pool");
    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner.get(&format!("/admin/pools/{demo}")).await;
    assert!(page.body.contains("name=\"routing_strategy\""));
    assert!(
        page.body
            .contains("name=\"v1_compatibility_enabled\" value=\"on\" checked")
    );

    // Edit: one event naming what changed, with old and new values.
    let page = one_audit_event!(
        &h,
        "settings form",
        owner
            .post(
                &format!("/admin/pools/{demo}/settings"),
                &[
                    ("routing_strategy", "least_recent_success"),
                    ("bridge_ring_size", "5"),
                    ("sticky_websocket_sessions", "on"),
                    ("sticky_http_sessions", "on"),
                    ("v1_compatibility_enabled", "on"),
                ],
            )
            .await
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.contains("notice=pool_saved"));
    let settings = pool_json(&h, &demo).await["settings"].clone();
    assert_eq!(settings["routing_strategy"], "least_recent_success");
    assert_eq!(settings["bridge_ring_size"], 5);
    assert_eq!(settings["sticky_http_sessions"], true);
    assert_eq!(settings["prompt_cache_affinity_enabled"], false);
    let (_, events) = api_get(
        &h,
        &owner,
        "/admin/api/audit-events?action=pool.update&limit=1",
    )
    .await;
    let details = &events["data"][0]["details"];
    let details: Value = serde_json::from_str(details.as_str().expect("text")).expect("json");
    assert_eq!(
        details["changes"]["bridge_ring_size"],
        json!({"from": 3, "to": 5})
    );
    assert!(details["changes"].get("v1_compatibility_enabled").is_none());
    assert_eq!(call_code(&h, &key, "life-1").await.0, StatusCode::OK);

    // The same values again: nothing written.
    let page = no_audit_event!(
        &h,
        "unchanged settings",
        owner
            .post(
                &format!("/admin/pools/{demo}/settings"),
                &[
                    ("routing_strategy", "least_recent_success"),
                    ("bridge_ring_size", "5"),
                    ("sticky_websocket_sessions", "on"),
                    ("sticky_http_sessions", "on"),
                    ("v1_compatibility_enabled", "on"),
                ],
            )
            .await
    );
    assert!(page.location.contains("notice=pool_unchanged"));

    // Invalid values: precise messages, nothing written.
    for (strategy, ring, message) in [
        ("fastest", "3", "strategy must be one of bridge_ring"),
        ("bridge_ring", "0", "ring size must be between 1 and 64"),
        ("bridge_ring", "65", "ring size must be between 1 and 64"),
        (
            "bridge_ring",
            "three",
            "ring size must be a whole number between 1 and 64; &#34;three&#34; is not",
        ),
    ] {
        let page = no_audit_event!(
            &h,
            format!("settings {strategy} {ring}"),
            owner
                .post(
                    &format!("/admin/pools/{demo}/settings"),
                    &[("routing_strategy", strategy), ("bridge_ring_size", ring)],
                )
                .await
        );
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{strategy} {ring}"
        );
        assert!(
            page.body.contains(message) || page.body.contains(&message.replace("&#34;", "&quot;")),
            "{message}: {}",
            page.body
        );
    }
    let (status, body) = api_post(
        &h,
        &owner,
        &format!("/admin/api/pools/{demo}/settings"),
        json!({"bridge_ring_size": 100}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("between 1 and 64")
    );

    // The JSON twin changes only what it is sent; the `/v1` switch applies at once.
    let (status, body) = one_audit_event!(
        &h,
        "settings json",
        api_post(
            &h,
            &owner,
            &format!("/admin/api/pools/{demo}/settings"),
            json!({"v1_compatibility_enabled": false}),
        )
        .await
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["changed"], json!(["v1_compatibility_enabled"]));
    assert_eq!(body["settings"]["bridge_ring_size"], 5);
    let r = h
        .http
        .get(h.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("v1");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("v1_compatibility_disabled")
    );
    api_post(
        &h,
        &owner,
        &format!("/admin/api/pools/{demo}/settings"),
        json!({"v1_compatibility_enabled": true}),
    )
    .await;

    // Disable: the Pool's keys are refused with the inactive-Pool code, at once.
    let page = one_audit_event!(
        &h,
        "disable",
        owner
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "disabled")]
            )
            .await
    );
    assert!(page.location.contains("notice=pool_disabled"));
    assert_eq!(
        call_code(&h, &key, "life-2").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no_eligible_backend".to_owned()
        )
    );
    let page = no_audit_event!(
        &h,
        "disable twice",
        owner
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "disabled")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("the Pool is already disabled"));
    let (status, body) = one_audit_event!(
        &h,
        "enable json",
        api_post(
            &h,
            &owner,
            &format!("/admin/api/pools/{demo}/status"),
            json!({"status": "active"})
        )
        .await
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pool"]["status"], "active");
    assert_eq!(call_code(&h, &key, "life-3").await.0, StatusCode::OK);

    // An admin: their Pool only, and no archiving.
    let admin_id = control::create_operator(
        store,
        &cli,
        "pooladmin@example.test",
        "pool-admin-pw-1",
        "admin",
    )
    .await
    .expect("admin");
    store
        .assign_operator_pool(&cli, &admin_id, &demo)
        .await
        .expect("assign");
    let admin = Browser::login(&h, "pooladmin@example.test", "pool-admin-pw-1").await;
    let page = admin.get(&format!("/admin/pools/{demo}")).await;
    assert!(page.body.contains("Disable Pool") && !page.body.contains("Archive Pool"));
    let page = one_audit_event!(
        &h,
        "admin disables their Pool",
        admin
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "disabled")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let (status, _) = api_post(
        &h,
        &admin,
        &format!("/admin/api/pools/{demo}/status"),
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        format!("/admin/pools/{}/status", other.id),
        format!("/admin/pools/{}/settings", other.id),
    ] {
        let page = no_audit_event!(
            &h,
            format!("admin on another Pool: {path}"),
            admin
                .post(
                    &path,
                    &[
                        ("status", "disabled"),
                        ("routing_strategy", "bridge_ring"),
                        ("bridge_ring_size", "2")
                    ]
                )
                .await
        );
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = api_post(
        &h,
        &admin,
        &format!("/admin/api/pools/{}/settings", other.id),
        json!({"bridge_ring_size": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let page = no_audit_event!(
        &h,
        "admin archives",
        admin
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "archived"), ("confirm_slug", "demo")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("only the owner can do this"));

    // Archive: the slug must be typed; then final, and the keys stop authenticating.
    let slug = pool_json(&h, &demo).await["pool"]["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let page = no_audit_event!(
        &h,
        "archive without the slug",
        owner
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "archived"), ("confirm_slug", "nope")]
            )
            .await
    );
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("type its slug"));
    let page = one_audit_event!(
        &h,
        "archive",
        owner
            .post(
                &format!("/admin/pools/{demo}/status"),
                &[("status", "archived"), ("confirm_slug", &slug)]
            )
            .await
    );
    assert!(page.location.contains("notice=pool_archived"));
    let (status, code) = call_code(&h, &key, "life-4").await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "api_key_revoked")
    );
    let page = owner.get(&format!("/admin/pools/{demo}")).await;
    assert!(page.body.contains("This Pool is archived") && !page.body.contains("Save settings"));
    let (status, body) = no_audit_event!(
        &h,
        "enable an archived Pool",
        api_post(
            &h,
            &owner,
            &format!("/admin/api/pools/{demo}/status"),
            json!({"status": "active"})
        )
        .await
    );
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("archiving is final")
    );
    let (status, _) = no_audit_event!(
        &h,
        "edit an archived Pool",
        api_post(
            &h,
            &owner,
            &format!("/admin/api/pools/{demo}/settings"),
            json!({"bridge_ring_size": 2})
        )
        .await
    );
    assert_eq!(status, StatusCode::CONFLICT);
    h.stop().await;
}
on_both_backends!(pools_are_edited_disabled_and_archived, pool_lifecycle);
