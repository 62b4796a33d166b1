//! Quota headers, the 429 quota scenario, clock recovery and the usage endpoints.

use serde_json::Value;

use crate::support::*;

async fn usage(
    sim: &upstream_sim::Simulator,
    a: &upstream_sim::AccountSnapshot,
    path: &str,
) -> Value {
    let resp = authed(client().get(format!("{}{path}", sim.base_url())), a)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test]
async fn quota_429_blocks_until_the_clock_passes_resets_at() {
    let sim = start(2).await;
    let a = account(&sim, 0);
    sim.queue_scenario(&a.account_id, "quota_429", 1)
        .expect("queued");
    let now = sim.now();
    let resp = post_responses(&sim, &a, &body("hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header(&resp, "x-codex-primary-used-percent").as_deref(),
        Some("100")
    );
    assert_eq!(
        header(&resp, "x-codex-primary-window-minutes").as_deref(),
        Some("300")
    );
    assert_eq!(
        header(&resp, "x-codex-rate-limit-reached-type").as_deref(),
        Some("rate_limit_reached")
    );
    let reset_at: i64 = header(&resp, "x-codex-primary-reset-at")
        .and_then(|v| v.parse().ok())
        .expect("reset-at");
    assert!((reset_at - (now + 3600)).abs() <= 1);
    assert!(header(&resp, "x-codex-primary-reset-after-seconds").is_some());
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["type"], "usage_limit_reached");
    assert_eq!(v["error"]["message"], "The usage limit has been reached");
    assert_eq!(v["error"]["plan_type"], "plus");
    assert_eq!(v["error"]["resets_at"], reset_at);
    assert_eq!(
        v["error"]["resets_in_seconds"]
            .as_i64()
            .map(|s| (3599..=3600).contains(&s)),
        Some(true)
    );

    for path in [
        "/backend-api/wham/usage",
        "/backend-api/codex/usage",
        "/api/codex/usage",
    ] {
        let u = usage(&sim, &a, path).await;
        assert_eq!(u["rate_limit"]["allowed"], false, "{path}");
        assert_eq!(u["rate_limit"]["limit_reached"], true);
        assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 100.0);
        assert_eq!(u["rate_limit"]["primary_window"]["reset_at"], reset_at);
        assert_eq!(
            u["rate_limit"]["primary_window"]["limit_window_seconds"],
            18000
        );
        assert_eq!(u["rate_limit_reached_type"]["type"], "rate_limit_reached");
        assert_eq!(u["plan_type"], "plus");
    }
    // Still exhausted without a queued scenario; other accounts are fine.
    assert_eq!(post_responses(&sim, &a, &body("hi")).await.status(), 429);
    assert_eq!(
        post_responses(&sim, &account(&sim, 1), &body("hi"))
            .await
            .status(),
        200
    );

    sim.advance_clock(3601);
    let u = usage(&sim, &a, "/backend-api/wham/usage").await;
    assert_eq!(u["rate_limit"]["allowed"], true);
    assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 0.0);
    assert_eq!(u["rate_limit_reached_type"], Value::Null);
    let resp = post_responses(&sim, &a, &body("hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-codex-primary-used-percent").as_deref(),
        Some("0.5")
    );
    let rec = sim.requests();
    let scenarios: Vec<_> = rec
        .iter()
        .filter(|r| r.path.ends_with("/responses"))
        .filter_map(|r| r.scenario.clone())
        .collect();
    assert_eq!(scenarios, ["quota_429", "quota_429", "text", "text"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn set_quota_and_per_request_step_show_in_headers_and_usage() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    sim.set_quota(&a.account_id, 12.0, 40.0);
    let resp = post_responses(&sim, &a, &body("hi")).await;
    assert_eq!(
        header(&resp, "x-codex-primary-used-percent").as_deref(),
        Some("12.5")
    );
    assert_eq!(
        header(&resp, "x-codex-secondary-used-percent").as_deref(),
        Some("40.1")
    );
    let u = usage(&sim, &a, "/backend-api/wham/usage").await;
    assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 12.5);
    assert_eq!(u["rate_limit"]["allowed"], true);

    sim.set_quota(&a.account_id, 100.0, 10.0);
    assert_eq!(post_responses(&sim, &a, &body("hi")).await.status(), 429);

    // Weekly exhaustion reports the secondary window.
    sim.set_quota(&a.account_id, 0.0, 0.0);
    sim.queue_scenario(&a.account_id, "quota_429_weekly", 1)
        .expect("queued");
    let resp = post_responses(&sim, &a, &body("hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header(&resp, "x-codex-secondary-used-percent").as_deref(),
        Some("100")
    );
    let u = usage(&sim, &a, "/backend-api/wham/usage").await;
    assert_eq!(u["rate_limit"]["allowed"], false);
    assert_eq!(u["rate_limit"]["secondary_window"]["used_percent"], 100.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn usage_endpoint_requires_a_valid_token() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    sim.expire_access_token(&a.account_id);
    let resp = authed(
        client().get(format!("{}/backend-api/wham/usage", sim.base_url())),
        &a,
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(resp.status(), 401);
    sim.shutdown().await;
}
