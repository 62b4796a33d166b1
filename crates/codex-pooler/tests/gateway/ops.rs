//! Health, readiness, metrics, and the admin API's own guard.

use serde_json::Value;

use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

async fn operational_endpoints(backend: Backend) {
    let h = Harness::start(backend).await;
    let v: Value = h
        .http
        .get(h.url("/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(v["status"], "ok");
    let r = h.http.get(h.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), 200);
    let _ = h
        .responses(&text_request("metrics", "m"))
        .await
        .text()
        .await;
    h.flush().await;
    let text = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("codex_pooler_requests_total"), "{text}");
    assert!(text.contains("codex_pooler_gateway_overhead_seconds"));
    assert!(text.contains("codex_pooler_request_duration_seconds"));

    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .bearer_auth(&h.info.api_key)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 401, "a Pool key is not an operator token");
    let r = h
        .http
        .get(h.url("/admin/api/request-logs?limit=nope"))
        .bearer_auth(&h.info.operator_token)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 400);
    h.stop().await;
}
on_both_backends!(endpoints, operational_endpoints);

async fn request_log_paging_is_stable(backend: Backend) {
    let h = Harness::start(backend).await;
    for i in 0..5 {
        let _ = h
            .responses(&text_request(&format!("page {i}"), "paging"))
            .await
            .text()
            .await;
    }
    h.flush().await;
    let get = |q: String| {
        let http = h.http.clone();
        let url = h.url(&format!("/admin/api/request-logs{q}"));
        let token = h.info.operator_token.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let first = get("?limit=2".into()).await;
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_before"].as_str().expect("cursor").to_owned();
    // New rows arriving meanwhile do not shift the next page.
    let _ = h
        .responses(&text_request("newer", "paging"))
        .await
        .text()
        .await;
    h.flush().await;
    let second = get(format!("?limit=2&before={cursor}")).await;
    let ids = |v: &Value| {
        v["data"]
            .as_array()
            .map(|a| a.iter().map(|r| r["id"].clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(b.len(), 2);
    assert!(a.iter().all(|id| !b.contains(id)));
    let clamped = get("?limit=100000".into()).await;
    assert_eq!(clamped["limit"], 200);
    h.stop().await;
}
on_both_backends!(paging, request_log_paging_is_stable);

async fn an_admin_operator_token_sees_only_assigned_pools_request_rows(backend: Backend) {
    use codex_pooler::control;
    use codex_pooler::store::AuditActor;
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let _ = h
        .responses(&text_request("demo pool traffic", "scope"))
        .await
        .text()
        .await;
    let other = rt
        .store
        .create_pool(&actor, "other", "Other")
        .await
        .expect("pool");
    let admin_id = control::create_operator(
        &rt.store,
        &actor,
        "admin@example.test",
        "a long admin password",
        "admin",
    )
    .await
    .expect("admin");
    rt.store
        .assign_operator_pool(&actor, &admin_id, &other.id)
        .await
        .expect("assign");
    let token =
        control::create_operator_token(&rt.store, &actor, "admin@example.test", "admin token")
            .await
            .expect("token");
    h.flush().await;
    let owner_rows = h.request_logs().await;
    let demo_row = owner_rows
        .iter()
        .find(|r| r["pool_id"] == h.info.pool_id.as_str())
        .expect("a demo Pool row")
        .clone();
    let v: Value = h
        .http
        .get(h.url("/admin/api/request-logs"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        v["data"].as_array().map(Vec::len),
        Some(0),
        "no rows of Pools the admin is not assigned to"
    );
    let r = h
        .http
        .get(h.url(&format!(
            "/admin/api/request-logs/{}",
            demo_row["id"].as_str().unwrap_or_default()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404, "not even by id");
    h.stop().await;
}
on_both_backends!(
    request_log_scope,
    an_admin_operator_token_sees_only_assigned_pools_request_rows
);
