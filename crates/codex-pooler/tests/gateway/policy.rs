//! API key policy: reasoning-effort modes, enforced service tier, and every
//! limit, including two instances hammering one key's per-minute limit.

use codex_pooler::control;
use codex_pooler::store::{AuditActor, KeyPolicy};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

async fn key_with(h: &Harness, name: &str, policy: KeyPolicy) -> (String, String) {
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let (id, raw) = control::create_api_key(&rt.store, &actor, &h.info.pool_id, name, None, None)
        .await
        .expect("key");
    rt.store
        .set_key_policy(&actor, &id, &policy)
        .await
        .expect("policy");
    rt.invalidate_caches();
    (id, raw)
}

async fn post(h: &Harness, key: &str, body: &Value) -> (u16, Value, Option<String>) {
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry,
    )
}

fn last_upstream_body(h: &Harness) -> Value {
    h.sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/backend-api/codex/responses")
        .and_then(|r| r.json)
        .expect("an upstream request")
}

async fn reasoning_and_tier_policies(backend: Backend) {
    let h = Harness::start(backend).await;
    let (_, always) = key_with(
        &h,
        "always high",
        KeyPolicy {
            enforced_reasoning_effort: Some("high".into()),
            ..Default::default()
        },
    )
    .await;
    let mut body = text_request("effort", "p1");
    body["reasoning"] = json!({"effort": "low"});
    let (status, _, _) = post(&h, &always, &body).await;
    assert_eq!(status, 200);
    assert_eq!(last_upstream_body(&h)["reasoning"]["effort"], "high");

    let (_, capped) = key_with(
        &h,
        "up to medium",
        KeyPolicy {
            maximum_reasoning_effort: Some("medium".into()),
            ..Default::default()
        },
    )
    .await;
    body["reasoning"] = json!({"effort": "high"});
    let (status, v, _) = post(&h, &capped, &body).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "reasoning_effort_not_allowed");
    assert_eq!(v["error"]["param"], "reasoning.effort");
    body["reasoning"] = json!({"effort": "low"});
    assert_eq!(post(&h, &capped, &body).await.0, 200);
    assert_eq!(
        last_upstream_body(&h)["reasoning"]["effort"],
        "low",
        "never clamped, never raised"
    );
    let plain = text_request("no effort", "p1");
    assert_eq!(post(&h, &capped, &plain).await.0, 200);
    assert_eq!(last_upstream_body(&h)["reasoning"]["effort"], "medium");

    let (_, tiered) = key_with(
        &h,
        "priority",
        KeyPolicy {
            enforced_service_tier: Some("fast".into()),
            ..Default::default()
        },
    )
    .await;
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&tiered)
        .json(&plain)
        .send()
        .await
        .expect("sent");
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    assert_eq!(last_upstream_body(&h)["service_tier"], "priority");
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["service_tier"], "priority");
    // 56 × $10 + 64 × $1 + 9 × $60 per 1M tokens = 1,164 µ$
    assert_eq!(log["request"]["settled_cost_micros"], 1164);
    h.stop().await;
}
on_both_backends!(reasoning_and_tier, reasoning_and_tier_policies);

async fn every_limit_trips_with_a_precise_message(backend: Backend) {
    let h = Harness::start(backend).await;
    let body = text_request("limits", "limits");

    let (_, rpm) = key_with(
        &h,
        "rpm",
        KeyPolicy {
            max_requests_per_minute: Some(3),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(post(&h, &rpm, &body).await.0, 200);
    }
    let (status, v, retry) = post(&h, &rpm, &body).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["code"], "api_key_policy_limit_exceeded");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_requests_per_minute")
            && message.contains("rolling 60 seconds")
            && message.contains("needs 4")
            && message.contains("allows 3"),
        "{message}"
    );
    assert!(
        retry
            .and_then(|r| r.parse::<i64>().ok())
            .is_some_and(|s| (1..=60).contains(&s))
    );
    // The window frees capacity as it rolls.
    h.app.runtime.advance_clock(61);
    assert_eq!(post(&h, &rpm, &body).await.0, 200);
    h.app.runtime.advance_clock(-61);

    let (_, daily) = key_with(
        &h,
        "tokens per day",
        KeyPolicy {
            max_tokens_per_day: Some(1_500),
            ..Default::default()
        },
    )
    .await;
    let mut admitted = 0;
    let mut refusal = Value::Null;
    for _ in 0..20 {
        let (status, v, retry) = post(&h, &daily, &body).await;
        if status == 429 {
            refusal = v;
            assert!(retry.is_some(), "a day window says when it frees up");
            break;
        }
        admitted += 1;
        h.flush().await; // settle before the next estimate
    }
    assert!(
        admitted >= 2,
        "settled usage (129 tokens) replaces the estimate"
    );
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_tokens_per_day") && m.contains("UTC day"))
    );

    let (_, weekly) = key_with(
        &h,
        "tokens per week",
        KeyPolicy {
            max_tokens_per_week: Some(10),
            ..Default::default()
        },
    )
    .await;
    let (status, v, _) = post(&h, &weekly, &body).await;
    assert_eq!(status, 429);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_tokens_per_week") && m.contains("rolling 7 days"))
    );

    let (_, input) = key_with(
        &h,
        "input cap",
        KeyPolicy {
            max_input_tokens_per_request: Some(10),
            ..Default::default()
        },
    )
    .await;
    let (status, v, _) = post(&h, &input, &body).await;
    assert_eq!(status, 429);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_input_tokens_per_request"))
    );

    let (_, output) = key_with(
        &h,
        "output cap",
        KeyPolicy {
            max_output_tokens_per_request: Some(100),
            ..Default::default()
        },
    )
    .await;
    let mut big = body.clone();
    big["max_output_tokens"] = json!(5000);
    let (status, v, _) = post(&h, &output, &big).await;
    assert_eq!(status, 429);
    assert!(
        v["error"]["message"].as_str().is_some_and(
            |m| m.contains("max_output_tokens_per_request") && m.contains("needs 5000")
        )
    );
    assert_eq!(post(&h, &output, &body).await.0, 200);

    for (name, policy, limit) in [
        (
            "spend day",
            KeyPolicy {
                max_spend_micros_per_day: Some(1_000),
                ..Default::default()
            },
            "max_spend_micros_per_day",
        ),
        (
            "spend week",
            KeyPolicy {
                max_spend_micros_per_week: Some(1_000),
                ..Default::default()
            },
            "max_spend_micros_per_week",
        ),
        (
            "spend month",
            KeyPolicy {
                max_spend_micros_per_month: Some(1_000),
                ..Default::default()
            },
            "max_spend_micros_per_month",
        ),
    ] {
        let (_, key) = key_with(&h, name, policy).await;
        let (status, v, _) = post(&h, &key, &body).await;
        assert_eq!(status, 429, "{name}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(limit)),
            "{v}"
        );
    }
    let rows = h.request_logs().await;
    assert!(
        rows.iter()
            .filter(|r| r["last_error_code"] == "api_key_policy_limit_exceeded"
                && r["status"] == "rejected")
            .count()
            >= 8
    );
    h.stop().await;
}
on_both_backends!(limits, every_limit_trips_with_a_precise_message);

async fn two_instances_never_over_admit_one_keys_requests_per_minute(backend: Backend) {
    let h = Harness::start(backend).await;
    let second = codex_pooler::app::RunningApp::spawn(h.settings.clone())
        .await
        .expect("second instance");
    let (key_id, key) = key_with(
        &h,
        "hammered",
        KeyPolicy {
            max_requests_per_minute: Some(10),
            ..Default::default()
        },
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let base = if i % 2 == 0 {
            h.app.base_url()
        } else {
            second.base_url()
        };
        let http = h.http.clone();
        let key = key.clone();
        let body = text_request(&format!("hammer {i}"), &format!("hammer-{i}"));
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/backend-api/codex/responses"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            let status = r.status().as_u16();
            let _ = r.text().await;
            status
        }));
    }
    let mut admitted = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    println!(
        "64 concurrent clients over two instances: {admitted} admitted, {limited} limited (limit 10/min)"
    );
    assert_eq!(admitted, 10);
    assert_eq!(limited, 54);
    assert_eq!(
        h.app
            .runtime
            .store
            .count_key_reservations(&key_id)
            .await
            .expect("count"),
        10
    );
    second.stop().await.expect("stop");
    h.stop().await;
}
on_both_backends!(
    no_over_admission,
    two_instances_never_over_admit_one_keys_requests_per_minute
);
