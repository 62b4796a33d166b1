//! Canary: prompts, outputs, tool arguments, bearer tokens, Pool keys,
//! idempotency keys, operator tokens and `auth.json` contents go through every
//! data-plane route (HTTP JSON, SSE, compact, models, usage, `/v1`, the
//! websocket, rejected and unauthenticated calls) and an `auth.json` import;
//! then the whole database, the server logs (at debug level), `/metrics`,
//! every admin page reachable from the console, the admin API and the export
//! are searched, and none of them may hold any of it.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use codex_pooler::store::{AuditActor, Store};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use upstream_sim::{AccountSpec, TEXT_SCENARIO_ANSWER};

use crate::on_both_backends;
use crate::support::{Backend, Harness};

/// Everything the gateway logs in this test process, at debug level.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("codex_pooler=debug,upstream_sim=warn,tower_http=debug")
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buffer
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The canaries of one run.
struct Canaries {
    prompt: String,
    tool_arguments: String,
    tool_output: String,
    idempotency_key: String,
    foreign_bearer: String,
}

impl Canaries {
    fn new() -> Canaries {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        Canaries {
            prompt: format!("CANARYPROMPT{tag}"),
            tool_arguments: format!("CANARYTOOLARG{tag}"),
            tool_output: format!("CANARYTOOLOUT{tag}"),
            idempotency_key: format!("CANARYIDEM{tag}"),
            foreign_bearer: format!("CANARYBEARER{tag}"),
        }
    }
}

fn responses_body(c: &Canaries, stream: bool) -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": format!("system {}", c.prompt),
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": c.prompt}]},
            {"type": "function_call", "call_id": "call_canary", "name": "lookup",
             "arguments": json!({"q": c.tool_arguments}).to_string()},
            {"type": "function_call_output", "call_id": "call_canary", "output": c.tool_output},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": c.prompt}]},
        ],
        "tools": [],
        "stream": stream,
        "store": false,
        "prompt_cache_key": "canary",
    })
}

async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
    c: &Canaries,
) -> String {
    let mut req = match method {
        "GET" => h.http.get(h.url(path)),
        _ => h.http.post(h.url(path)),
    }
    .bearer_auth(key)
    .header("idempotency-key", &c.idempotency_key)
    .header("x-request-id", "canary-client-request");
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.expect("sent");
    r.text().await.unwrap_or_default()
}

async fn websocket_turn(h: &Harness, key: &str, c: &Canaries) -> String {
    let url = format!(
        "{}/backend-api/codex/responses",
        h.app.base_url().replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().expect("request");
    let headers = req.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    headers.insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().expect("header"),
    );
    headers.insert("session_id", "canary-session".parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    let mut create = responses_body(c, true);
    create["type"] = json!("response.create");
    socket
        .send(Message::text(create.to_string()))
        .await
        .expect("send");
    let mut seen = String::new();
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await
    {
        if let Message::Text(t) = msg {
            seen.push_str(t.as_str());
            if t.contains("response.completed") || t.contains("\"error\"") {
                break;
            }
        }
    }
    let _ = socket.close(None).await;
    seen
}

/// Every row of every table as text (PostgreSQL), or the raw database files
/// (SQLite: freed pages and the WAL included).
async fn database_bytes(h: &Harness) -> Vec<u8> {
    match &h.app.runtime.store {
        Store::Postgres(pool) => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            let mut all = Vec::new();
            for (table,) in tables {
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(row_to_json(t) AS TEXT) FROM \"{table}\" t"
                )))
                .fetch_all(pool)
                .await
                .expect("rows");
                for (row,) in rows {
                    all.extend_from_slice(row.as_bytes());
                    all.push(b'\n');
                }
            }
            all
        }
        Store::Sqlite(_) => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(&h.data_dir).expect("data dir") {
                let path = entry.expect("entry").path();
                let name = path.to_string_lossy().into_owned();
                if name.ends_with(".db") || name.ends_with(".db-wal") {
                    all.extend(std::fs::read(&path).expect("read db"));
                }
            }
            all
        }
    }
}

/// Signs in to the console as the owner; returns the session cookie.
async fn owner_session(h: &Harness, client: &reqwest::Client) -> String {
    let r = client
        .post(h.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("email", h.info.admin_email.as_str()),
                ("password", h.info.admin_password.as_str()),
            ])
            .expect("form"),
        )
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

/// Every console page reachable by links from `/admin` (breadth first), and
/// the text of each.
async fn crawl_console(
    h: &Harness,
    client: &reqwest::Client,
    cookie: &str,
) -> Vec<(String, String)> {
    let mut queue: VecDeque<String> =
        VecDeque::from(["/admin".to_owned(), "/admin/audit".to_owned()]);
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    let mut pages = Vec::new();
    while let Some(path) = queue.pop_front() {
        if pages.len() >= 400 {
            break;
        }
        let r = client
            .get(h.url(&path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(
            status.is_success() || status.is_redirection(),
            "{path}: {status}"
        );
        for part in body.split("href=\"").skip(1) {
            let Some(link) = part.split('"').next() else {
                continue;
            };
            let link = link.replace("&amp;", "&");
            if link.starts_with("/admin") && !link.contains("/assets/") && seen.insert(link.clone())
            {
                queue.push_back(link);
            }
        }
        pages.push((path, body));
    }
    pages
}

async fn canary_everywhere(backend: Backend) {
    let logs = captured_logs();
    // Lenient: the canary's tool call ids were not issued by the simulator.
    let sim = upstream_sim::SimConfig {
        accounts: 3,
        strict: false,
        ..upstream_sim::SimConfig::default()
    };
    let h = Harness::start_with_sim(backend, sim, |_| {}).await;
    let c = Canaries::new();
    let key = h.info.api_key.clone();
    let store = &h.app.runtime.store;

    // An auth.json imported through the admin API.
    let extra = h.sim.create_account(AccountSpec {
        account_id: None,
        email: Some("canary@example.test".into()),
        plan_type: Some("pro".into()),
    });
    let auth_json = h.sim.auth_json(&extra.account_id).expect("auth.json");
    let r = h
        .http
        .post(h.url(&format!("/admin/api/pools/{}/upstreams", h.info.pool_id)))
        .bearer_auth(&h.info.operator_token)
        .json(&json!({"auth_json": auth_json, "label": "canary import"}))
        .send()
        .await
        .expect("import");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );

    // A paused key, for rejected rows that carry the key.
    let (paused_id, paused_key) = codex_pooler::control::create_api_key(
        store,
        &AuditActor::cli(),
        &h.info.pool_id,
        "canary paused",
        None,
        None,
    )
    .await
    .expect("key");
    store
        .set_api_key_status(&AuditActor::cli(), &paused_id, "paused")
        .await
        .expect("pause");

    // Every data-plane route.
    let mut answers = String::new();
    for stream in [true, false] {
        answers += &send(
            &h,
            "POST",
            "/backend-api/codex/responses",
            &key,
            Some(&responses_body(&c, stream)),
            &c,
        )
        .await;
    }
    let mut compact = responses_body(&c, false);
    compact.as_object_mut().expect("object").remove("stream");
    answers += &send(
        &h,
        "POST",
        "/backend-api/codex/responses/compact",
        &key,
        Some(&compact),
        &c,
    )
    .await;
    answers += &send(
        &h,
        "GET",
        "/backend-api/codex/models?client_version=0.171.0",
        &key,
        None,
        &c,
    )
    .await;
    answers += &send(&h, "GET", "/backend-api/wham/usage", &key, None, &c).await;
    for stream in [true, false] {
        let mut v1 = responses_body(&c, stream);
        v1.as_object_mut()
            .expect("object")
            .remove("prompt_cache_key");
        answers += &send(&h, "POST", "/v1/responses", &key, Some(&v1), &c).await;
        let chat = json!({
            "model": "gpt-5.5",
            "stream": stream,
            "messages": [
                {"role": "system", "content": c.prompt},
                {"role": "user", "content": c.prompt},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_c", "type": "function",
                    "function": {"name": "lookup", "arguments": json!({"q": c.tool_arguments}).to_string()}}]},
                {"role": "tool", "tool_call_id": "call_c", "content": c.tool_output},
            ],
        });
        answers += &send(&h, "POST", "/v1/chat/completions", &key, Some(&chat), &c).await;
    }
    answers += &send(&h, "GET", "/v1/models", &key, None, &c).await;
    answers += &send(&h, "GET", "/v1/usage", &key, None, &c).await;
    answers += &websocket_turn(&h, &key, &c).await;
    // Refused: a paused key, an unknown well-formed key, a foreign bearer.
    let _ = send(
        &h,
        "POST",
        "/backend-api/codex/responses",
        &paused_key,
        Some(&responses_body(&c, true)),
        &c,
    )
    .await;
    let unknown = "sk-cxp-0123456789ab-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let _ = send(
        &h,
        "POST",
        "/backend-api/codex/responses",
        unknown,
        Some(&responses_body(&c, true)),
        &c,
    )
    .await;
    let _ = send(
        &h,
        "POST",
        "/v1/responses",
        &c.foreign_bearer,
        Some(&responses_body(&c, false)),
        &c,
    )
    .await;
    assert!(
        answers.contains(TEXT_SCENARIO_ANSWER),
        "the answers went through: {}",
        &answers[..answers.len().min(3000)]
    );
    h.flush().await;

    // What is searched.
    let mut surfaces: Vec<(String, Vec<u8>)> = vec![("database".into(), database_bytes(&h).await)];
    let metrics = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    surfaces.push(("/metrics".into(), metrics.into_bytes()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = owner_session(&h, &client).await;
    let pages = crawl_console(&h, &client, &cookie).await;
    assert!(
        pages
            .iter()
            .filter(|(p, _)| p.starts_with("/admin/request-logs/"))
            .count()
            >= 10,
        "the crawl opened the request rows: {:?}",
        pages.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, body) in pages {
        surfaces.push((path, body.into_bytes()));
    }
    let rows: Value = h
        .http
        .get(h.url("/admin/api/request-logs?limit=200"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    let mut api_paths = vec![
        "/admin/api/request-logs?limit=200".to_owned(),
        "/admin/api/request-logs/export?format=csv".to_owned(),
        "/admin/api/request-logs/export?format=ndjson".to_owned(),
        "/admin/api/me".to_owned(),
        "/admin/api/pools".to_owned(),
        format!("/admin/api/pools/{}", h.info.pool_id),
        "/admin/api/audit-events".to_owned(),
    ];
    for row in rows["data"].as_array().expect("rows") {
        api_paths.push(format!(
            "/admin/api/request-logs/{}",
            row["id"].as_str().expect("id")
        ));
    }
    for path in api_paths {
        let r = h
            .http
            .get(h.url(&path))
            .header("cookie", &cookie)
            .bearer_auth(&h.info.operator_token)
            .send()
            .await
            .expect("api");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        surfaces.push((path, r.bytes().await.expect("body").to_vec()));
    }
    h.flush().await;
    surfaces.push(("server logs".into(), logs.lock().expect("logs").clone()));

    // Positive controls: the searches do see what is meant to be there.
    let holds = |surface: &str, needle: &str| {
        surfaces
            .iter()
            .filter(|(s, _)| s == surface)
            .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    assert!(
        holds("database", "canary-client-request"),
        "the database dump holds request rows"
    );
    assert!(
        holds("database", "canary import"),
        "the database dump holds the imported account"
    );
    assert!(
        holds("server logs", "codex_pooler"),
        "the server logs were captured"
    );
    assert!(holds("/metrics", "codex_pooler_requests_total"));

    // What must not be found.
    // A key is `sk-cxp-<12 hex>-<43-character secret>` (the secret may hold `-`).
    let secret_of = |raw: &str| raw["sk-cxp-000000000000-".len()..].to_owned();
    let key_secret = secret_of(&key);
    let paused_secret = secret_of(&paused_key);
    assert_eq!(key_secret.len(), 43);
    let mut needles: Vec<(&str, String)> = vec![
        ("prompt", c.prompt.clone()),
        ("output", TEXT_SCENARIO_ANSWER.to_owned()),
        ("tool arguments", c.tool_arguments.clone()),
        ("tool output", c.tool_output.clone()),
        ("idempotency key", c.idempotency_key.clone()),
        ("foreign bearer", c.foreign_bearer.clone()),
        ("Pool key", key.clone()),
        ("Pool key secret", key_secret),
        ("paused Pool key", paused_key.clone()),
        ("paused key secret", paused_secret),
        ("unknown key", unknown.to_owned()),
        ("operator token", h.info.operator_token.clone()),
        ("owner password", h.info.admin_password.clone()),
        ("auth.json", auth_json.to_string()),
    ];
    for a in h.sim.accounts() {
        needles.push(("upstream access token", a.access_token.clone()));
        needles.push(("upstream refresh token", a.refresh_token.clone()));
        needles.push(("upstream id token", a.id_token.clone()));
    }
    for (surface, bytes) in &surfaces {
        for (what, needle) in &needles {
            let n = needle.as_bytes();
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{surface} holds the {what} ({}…)",
                &needle[..needle.len().min(10)]
            );
        }
    }
    assert!(surfaces.len() > 30, "{} surfaces searched", surfaces.len());
    h.stop().await;
}
on_both_backends!(canary, canary_everywhere);
