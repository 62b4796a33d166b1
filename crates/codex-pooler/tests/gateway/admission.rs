//! Admission errors in the OpenAI envelope, and which of them leave a row.

use codex_pooler::control;
use codex_pooler::store::AuditActor;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

async fn post_with_key(h: &Harness, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn assert_error(body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(e["type"].is_string());
    assert!(e.as_object().is_some_and(|o| o.contains_key("param")));
}

async fn admission_errors(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let body = text_request("hi", "adm");

    // No key, a malformed key, an unknown key: 401 and no row.
    let before = h.request_logs().await.len();
    for key in [
        None,
        Some("not-a-key"),
        Some("sk-cxp-000000000000-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let (status, body) = post_with_key(&h, key, &body).await;
        assert_eq!(status, 401);
        assert_error(&body, "api_key_missing");
    }
    assert_eq!(
        h.request_logs().await.len(),
        before,
        "anonymous failures leave no row"
    );

    // Paused, revoked, expired known keys: 401 and a rejected row for the key.
    for (status_to_set, code) in [("paused", "api_key_paused"), ("revoked", "api_key_revoked")] {
        let (key_id, raw) =
            control::create_api_key(&rt.store, &actor, &h.info.pool_id, code, None, None)
                .await
                .expect("key");
        rt.store
            .set_api_key_status(&actor, &key_id, status_to_set)
            .await
            .expect("status");
        rt.invalidate_caches();
        let (status, body_json) = post_with_key(&h, Some(&raw), &body).await;
        assert_eq!(status, 401);
        assert_error(&body_json, code);
    }
    let (key_id, raw) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "expired", None, None)
            .await
            .expect("key");
    rt.store
        .set_api_key_expiry(&actor, &key_id, Some(1))
        .await
        .expect("expiry");
    rt.invalidate_caches();
    let (status, body_json) = post_with_key(&h, Some(&raw), &body).await;
    assert_eq!(status, 401);
    assert_error(&body_json, "api_key_expired");

    // Model policy and catalog.
    let (_, limited) = control::create_api_key(
        &rt.store,
        &actor,
        &h.info.pool_id,
        "limited",
        Some(vec!["gpt-5.4-mini".into()]),
        None,
    )
    .await
    .expect("key");
    let (status, body_json) = post_with_key(&h, Some(&limited), &body).await;
    assert_eq!(status, 403);
    assert_error(&body_json, "model_not_allowed");
    let mut unknown = body.clone();
    unknown["model"] = json!("no-such-model");
    let (status, body_json) = post_with_key(&h, Some(&h.info.api_key), &unknown).await;
    assert_eq!(status, 400);
    assert_error(&body_json, "invalid_model");
    assert_eq!(body_json["error"]["param"], "model");
    let (status, body_json) = post_with_key(&h, Some(&h.info.api_key), &json!({"input": []})).await;
    assert_eq!(status, 400);
    assert_error(&body_json, "invalid_request");

    // A Pool with no upstream accounts.
    let empty = rt
        .store
        .create_pool(&actor, "empty", "Empty")
        .await
        .expect("pool");
    let (_, empty_key) = control::create_api_key(&rt.store, &actor, &empty.id, "empty", None, None)
        .await
        .expect("key");
    let (status, body_json) = post_with_key(&h, Some(&empty_key), &body).await;
    assert_eq!(status, 503);
    assert_error(&body_json, "no_eligible_backend");

    let rows = h.request_logs().await;
    let rejected: Vec<&str> = rows
        .iter()
        .filter(|r| r["status"] == "rejected")
        .filter_map(|r| r["last_error_code"].as_str())
        .collect();
    for code in [
        "api_key_paused",
        "api_key_revoked",
        "api_key_expired",
        "model_not_allowed",
        "invalid_model",
        "invalid_request",
        "no_eligible_backend",
    ] {
        assert!(
            rejected.contains(&code),
            "a rejected row with {code}: {rejected:?}"
        );
    }
    let paused_row = rows
        .iter()
        .find(|r| r["last_error_code"] == "api_key_paused")
        .expect("row");
    assert_eq!(paused_row["pool_id"], json!(h.info.pool_id));
    assert_eq!(paused_row["api_key_label"], "api_key_paused");
    assert_eq!(paused_row["usage_status"], "not_applicable");
    // Every key creation wrote its audit event.
    assert!(
        rt.store
            .count_audit_events("api_key.create")
            .await
            .expect("count")
            >= 6
    );
    h.stop().await;
}
on_both_backends!(errors, admission_errors);

async fn every_pool_account_out_of_quota_answers_like_codex(backend: Backend) {
    let h = Harness::start(backend).await;
    for a in h.sim.accounts() {
        h.sim
            .queue_scenario(&a.account_id, "quota_429", 1)
            .expect("scenario");
    }
    let r = h.responses(&text_request("q", "quota")).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "usage_limit_reached");
    // Now every account is known exhausted: the gateway answers without calling upstream.
    let calls = h.sim.requests().len();
    let r = h.responses(&text_request("q2", "quota")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "usage_limit_reached");
    assert!(
        v["error"]["resets_in_seconds"]
            .as_i64()
            .is_some_and(|s| s > 0)
    );
    assert_eq!(h.sim.requests().len(), calls);
    let rows = h.request_logs().await;
    assert!(
        rows.iter()
            .any(|r| r["last_error_code"] == "quota_exhausted")
    );
    h.stop().await;
}
on_both_backends!(quota, every_pool_account_out_of_quota_answers_like_codex);
