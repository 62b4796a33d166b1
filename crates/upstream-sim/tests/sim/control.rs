//! The `/__sim` control API, other routes, bench mode and the binary.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use upstream_sim::{AccountSnapshot, BenchProfile, MODELS_ETAG, RecordedRequest, SimConfig};

use crate::support::*;

#[tokio::test]
async fn control_api_mirrors_the_methods() {
    let sim = start(1).await;
    let base = format!("{}/__sim", sim.base_url());
    let c = client();

    let created: AccountSnapshot = c
        .post(format!("{base}/accounts"))
        .json(&json!({"account_id": "acct_custom", "email": "c@example.test", "plan_type": "team"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(created.account_id, "acct_custom");
    assert_eq!(created.plan_type, "team");
    let list: Vec<AccountSnapshot> = c
        .get(format!("{base}/accounts"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 2);
    let auth: Value = c
        .get(format!("{base}/accounts/acct_custom/auth.json"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(auth["tokens"]["account_id"], "acct_custom");

    let resp = c
        .post(format!("{base}/accounts/acct_custom/scenarios"))
        .json(&json!({"scenario": "bogus", "count": 1}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(format!("{base}/accounts/acct_nope/scenarios"))
        .json(&json!({"scenario": "text", "count": 1}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 404);
    let resp = c
        .post(format!("{base}/accounts/acct_custom/scenarios"))
        .json(&json!({"scenario": "http_502", "count": 2}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        post_responses(&sim, &created, &body("hi")).await.status(),
        502
    );
    assert_eq!(
        post_responses(&sim, &created, &body("hi")).await.status(),
        502
    );
    assert_eq!(
        post_responses(&sim, &created, &body("hi")).await.status(),
        200
    );

    let resp = c
        .post(format!("{base}/accounts/acct_custom/quota"))
        .json(&json!({"primary_used_percent": 30.0, "secondary_used_percent": 5.0}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let r = post_responses(&sim, &created, &body("hi")).await;
    assert_eq!(
        header(&r, "x-codex-primary-used-percent").as_deref(),
        Some("30.5")
    );

    let before = sim.now();
    let v: Value = c
        .post(format!("{base}/clock/advance"))
        .json(&json!({"seconds": 100}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert!(v["now"].as_i64().unwrap_or(0) >= before + 100);

    assert_eq!(
        c.post(format!("{base}/accounts/acct_custom/expire-token"))
            .send()
            .await
            .expect("answered")
            .status(),
        200
    );
    assert_eq!(
        post_responses(&sim, &created, &body("hi")).await.status(),
        401
    );

    sim.queue_scenario(&account(&sim, 0).account_id, "barrier:cb", 1)
        .expect("queued");
    let a0 = account(&sim, 0);
    let pending = tokio::spawn({
        let sim = sim.clone();
        async move { events_of(post_responses(&sim, &a0, &body("hi")).await).await }
    });
    // Releasing before or after the stream reaches the barrier both work.
    assert_eq!(
        c.post(format!("{base}/barriers/cb/release"))
            .send()
            .await
            .expect("answered")
            .status(),
        200
    );
    let events = pending.await.expect("joined");
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("response.completed"))
    );

    let rec: Vec<RecordedRequest> = c
        .get(format!("{base}/requests"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert!(
        rec.iter().all(|r| !r.path.starts_with("/__sim")),
        "control routes are not recorded"
    );
    assert_eq!(rec.len(), 6);
    assert!(rec.windows(2).all(|w| w[0].seq < w[1].seq));

    assert_eq!(
        c.post(format!("{base}/reset"))
            .send()
            .await
            .expect("answered")
            .status(),
        200
    );
    assert!(sim.requests().is_empty());
    assert_eq!(sim.accounts().len(), 2, "accounts stay");
    sim.shutdown().await;
}

#[tokio::test]
async fn models_compact_and_not_found() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    let base = sim.base_url();
    let resp = authed(
        client().get(format!(
            "{base}/backend-api/codex/models?client_version=0.171.0"
        )),
        &a,
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "etag").as_deref(), Some(MODELS_ETAG));
    let v: Value = resp.json().await.expect("json");
    let slugs: Vec<_> = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["slug"].clone())
        .collect();
    assert!(slugs.contains(&json!("gpt-5.5")) && slugs.contains(&json!("gpt-5.4-mini")));
    let resp = authed(client().get(format!("{base}/backend-api/codex/models")), &a)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);

    let resp = authed(
        client().post(format!("{base}/backend-api/codex/responses/compact")),
        &a,
    )
    .json(&json!({"model": "gpt-5.5", "input": [user_message("hi")], "instructions": ""}))
    .send()
    .await
    .expect("answered");
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "x-codex-turn-state").is_some());
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["output"][0]["type"], "compaction");
    assert!(
        v["output"][0]["encrypted_content"]
            .as_str()
            .unwrap_or("")
            .starts_with("sim-")
    );

    let resp = authed(client().get(format!("{base}/backend-api/nothing-here")), &a)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Not Found"})
    );
    let rec = sim.requests();
    let last = rec.last().expect("recorded");
    assert_eq!(last.path, "/backend-api/nothing-here");
    assert_eq!(last.status, 404);
    assert_eq!(last.account_id.as_deref(), Some(a.account_id.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn bench_mode_serves_canned_bytes_without_recording() {
    for profile in [
        BenchProfile::InstantJson,
        BenchProfile::Fixed60ms,
        BenchProfile::SseShort,
        BenchProfile::SseLarge,
    ] {
        let sim = start_with(SimConfig {
            bench: Some(profile),
            ..Default::default()
        })
        .await;
        let a = account(&sim, 0);
        let resp = post_responses(&sim, &a, &body("hi")).await;
        assert_eq!(resp.status(), 200);
        let (events, rest, _) = read_sse(resp).await;
        assert!(rest.is_empty());
        let last = events.last().and_then(|e| e.json()).expect("json");
        assert_eq!(last["type"], "response.completed", "{profile}");
        assert_eq!(last["response"]["usage"]["total_tokens"], 129);
        let resp = client()
            .post(responses_url(&sim))
            .bearer_auth("wrong")
            .json(&body("hi"))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 401);
        assert!(sim.requests().is_empty());
        sim.shutdown().await;
    }
    assert_eq!(
        "sse-large".parse::<BenchProfile>(),
        Ok(BenchProfile::SseLarge)
    );
    assert!("nope".parse::<BenchProfile>().is_err());
}

#[tokio::test]
async fn binary_prints_the_base_url_first() {
    let dir = std::env::temp_dir().join(format!("upstream-sim-authjson-{}", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_upstream-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--accounts",
            "2",
            "--auth-json-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("line").expect("some line");
    assert!(first.starts_with("http://127.0.0.1:"), "{first}");
    let second = lines.next_line().await.expect("line").expect("some line");
    assert_eq!(second, "acct_sim_1 plus sim1@example.test");
    let resp = client()
        .get(format!("{first}/nope"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 404);
    // The auth.json files are written before the base URL is printed.
    let path = dir.join("acct_sim_2.auth.json");
    let text = std::fs::read_to_string(&path).expect("auth.json written");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["tokens"]["account_id"], "acct_sim_2");
    child.kill().await.expect("killed");
    let _ = std::fs::remove_dir_all(&dir);
}
