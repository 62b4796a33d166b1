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
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    csrf: String,
}

/// A response's status, `Location` and body.
struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Browser {
    fn new(h: &Harness) -> Browser {
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

    async fn read(r: reqwest::Response) -> Page {
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

    async fn get(&self, path: &str) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        Self::read(req.send().await.expect("get")).await
    }

    /// POSTs a form as-is (no CSRF field added), with extra headers.
    async fn post_raw(
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
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
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

    async fn login(h: &Harness, email: &str, password: &str) -> Browser {
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
    // The request-log API is unchanged: operator token only.
    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .header("cookie", &cookie)
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
