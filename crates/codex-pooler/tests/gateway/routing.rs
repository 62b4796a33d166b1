//! Routing against the simulator: strategies, quota exclusion and recovery,
//! the circuit breaker, reauthorization that survives a restart, pinned
//! continuations, and prompt-cache stickiness.

use std::time::Duration;

use codex_pooler::store::AuditActor;
use serde_json::Value;
use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::on_both_backends;
use crate::support::{Backend, Harness, seed_with_order, sse_text, text_request};

fn no_seed_request(prompt: &str) -> Value {
    let mut body = text_request(prompt, "");
    if let Some(obj) = body.as_object_mut() {
        obj.remove("prompt_cache_key");
    }
    body
}

async fn last_account(h: &Harness) -> Option<String> {
    h.sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/backend-api/codex/responses" && r.status == 200)
        .and_then(|r| r.account_id)
}

async fn set_strategy(h: &Harness, strategy: &str, ring: i64) {
    let rt = &h.app.runtime;
    rt.store
        .set_pool_routing(&AuditActor::cli(), &h.info.pool_id, strategy, ring)
        .await
        .expect("routing");
    rt.invalidate_caches();
}

async fn quota_first_prefers_the_most_remaining_quota(backend: Backend) {
    let h = Harness::start(backend).await;
    set_strategy(&h, "quota_first", 3).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    h.sim.set_quota(&ids[0], 80.0, 10.0);
    h.sim.set_quota(&ids[1], 10.0, 20.0);
    h.sim.set_quota(&ids[2], 50.0, 5.0);
    let polled = codex_pooler::jobs::poll_usage_once(&h.app.runtime)
        .await
        .expect("poll");
    assert_eq!(polled, 3);
    for i in 0..5 {
        let r = h.responses(&no_seed_request(&format!("q{i}"))).await;
        assert_eq!(
            sse_text(&r.text().await.expect("body")),
            TEXT_SCENARIO_ANSWER
        );
        assert_eq!(
            last_account(&h).await.as_deref(),
            Some(ids[1].as_str()),
            "request {i} goes to the emptiest account"
        );
    }
    h.stop().await;
}
on_both_backends!(quota_first, quota_first_prefers_the_most_remaining_quota);

async fn an_exhausted_account_is_skipped_until_its_reset_then_serves_again(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    h.sim
        .queue_scenario(&ids[0], "quota_429", 1)
        .expect("scenario");
    let _ = h
        .responses(&text_request("exhaust", &seed))
        .await
        .text()
        .await;
    let before = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.account_id.as_deref() == Some(ids[0].as_str()))
        .count();
    for i in 0..3 {
        let _ = h
            .responses(&text_request(&format!("skip {i}"), &seed))
            .await
            .text()
            .await;
        assert_eq!(last_account(&h).await.as_deref(), Some(ids[1].as_str()));
    }
    let after = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.account_id.as_deref() == Some(ids[0].as_str()))
        .count();
    assert_eq!(before, after, "no request reached the exhausted account");
    // Past the reset on both clocks, the account serves again.
    h.sim.advance_clock(3601);
    h.app.runtime.advance_clock(3601);
    let r = h.responses(&text_request("back", &seed)).await;
    assert_eq!(
        sse_text(&r.text().await.expect("body")),
        TEXT_SCENARIO_ANSWER
    );
    assert_eq!(last_account(&h).await.as_deref(), Some(ids[0].as_str()));
    h.stop().await;
}
on_both_backends!(
    exhaustion_and_reset,
    an_exhausted_account_is_skipped_until_its_reset_then_serves_again
);

async fn all_accounts_exhausted_answer_with_the_earliest_reset(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        h.sim.queue_scenario(id, "quota_429", 1).expect("scenario");
        if i == 0 {
            // The first account's cycle resets later than the others'.
            h.sim.advance_clock(0);
        }
    }
    let r = h.responses(&text_request("all out", &seed)).await;
    assert_eq!(r.status(), 429);
    let _ = r.text().await;
    let earliest = h
        .app
        .runtime
        .pool(&h.info.pool_id)
        .await
        .expect("pool")
        .expect("pool")
        .candidates
        .iter()
        .map(|c| c.identity.exhausted_until())
        .min()
        .expect("reset");
    let r = h.responses(&text_request("still out", &seed)).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "usage_limit_reached");
    assert_eq!(v["error"]["resets_at"], earliest);
    let in_secs = v["error"]["resets_in_seconds"].as_i64().expect("seconds");
    assert!((earliest - h.app.runtime.now_secs() - in_secs).abs() <= 1);
    let rows = h.request_logs().await;
    let row = rows
        .iter()
        .find(|r| r["last_error_code"] == "quota_exhausted")
        .expect("a quota_exhausted row");
    assert_eq!(row["status"], "rejected");
    let meta: Value =
        serde_json::from_str(row["request_metadata"].as_str().expect("metadata")).expect("json");
    assert_eq!(meta["quota"]["earliest_reset_at"], earliest);
    h.stop().await;
}
on_both_backends!(
    all_exhausted,
    all_accounts_exhausted_answer_with_the_earliest_reset
);

async fn the_circuit_opens_after_three_failures_and_probes_after_sixty_seconds(backend: Backend) {
    let h = Harness::start_with(backend, 1, |_| {}).await;
    let id = h.sim.accounts()[0].account_id.clone();
    h.sim.queue_scenario(&id, "http_502", 3).expect("scenario");
    for _ in 0..3 {
        let r = h.responses(&text_request("fail", "circuit")).await;
        assert_eq!(r.status(), 502);
        let _ = r.text().await;
    }
    let calls = h.sim.requests().len();
    let r = h.responses(&text_request("open", "circuit")).await;
    assert_eq!(r.status(), 503, "the open circuit leaves no candidate");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "no_eligible_backend");
    assert_eq!(
        h.sim.requests().len(),
        calls,
        "no request reached the upstream"
    );
    h.app.runtime.advance_clock(61);
    let r = h.responses(&text_request("probe", "circuit")).await;
    assert_eq!(r.status(), 200, "one probe goes through after 60 s");
    assert_eq!(
        sse_text(&r.text().await.expect("body")),
        TEXT_SCENARIO_ANSWER
    );
    let r = h.responses(&text_request("closed", "circuit")).await;
    assert_eq!(r.status(), 200, "a successful probe closes the circuit");
    h.stop().await;
}
on_both_backends!(
    circuit,
    the_circuit_opens_after_three_failures_and_probes_after_sixty_seconds
);

async fn reauth_required_survives_a_restart_and_pinned_sessions_get_a_recovery_contract(
    backend: Backend,
) {
    let mut h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    // A first request pins its turn state to the first account.
    let r = h.responses(&text_request("pin", &seed)).await;
    let turn_state = r.headers()["x-codex-turn-state"]
        .to_str()
        .expect("turn state")
        .to_owned();
    let _ = r.text().await;
    // The first account's refresh token dies.
    h.sim.expire_access_token(&ids[0]);
    h.sim
        .queue_scenario(&ids[0], "refresh_reused", 1)
        .expect("scenario");
    let r = h.responses(&text_request("dead token", &seed)).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let refreshes = h.sim.refresh_calls();
    // The follow-up of the pinned turn cannot move silently.
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&h.info.api_key)
        .header("x-codex-turn-state", &turn_state)
        .json(&text_request("follow-up", &seed))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["x-codex-recovery-kind"],
        "restart_with_full_context"
    );
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "pinned_continuation_reauth_required");
    assert_eq!(v["error"]["requires_new_upstream_session"], true, "{v}");

    h.restart().await;
    let pool = h
        .app
        .runtime
        .pool(&h.info.pool_id)
        .await
        .expect("pool")
        .expect("pool");
    let first = pool
        .candidates
        .iter()
        .find(|c| c.chatgpt_account_id == ids[0])
        .expect("candidate");
    assert_eq!(
        first.exclusion,
        Some("identity_reauth_required"),
        "the state was persisted"
    );
    for i in 0..3 {
        let r = h
            .responses(&text_request(&format!("after restart {i}"), &seed))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    assert_eq!(
        h.sim.refresh_calls(),
        refreshes,
        "no refresh is retried after the restart"
    );
    h.stop().await;
}
on_both_backends!(
    reauth_and_pins,
    reauth_required_survives_a_restart_and_pinned_sessions_get_a_recovery_contract
);

async fn a_prompt_cache_key_sticks_to_one_account_until_it_becomes_ineligible(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut served: Vec<String> = Vec::new();
    for i in 0..100 {
        if i == 60 {
            // The account in use runs out of quota.
            let current: String = served.last().cloned().expect("an account");
            h.sim
                .queue_scenario(&current, "quota_429", 1)
                .expect("scenario");
        }
        let r = h
            .responses(&text_request(&format!("sticky {i}"), "shared-cache-key"))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
        served.push(last_account(&h).await.expect("served"));
    }
    let switches = served.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "prompt_cache_key stickiness: {switches} switch(es) in {} requests (switch rate {:.3})",
        served.len(),
        switches as f64 / served.len() as f64
    );
    assert!(
        served[..60].iter().all(|a| *a == served[0]),
        "one account while healthy"
    );
    assert_eq!(
        switches, 1,
        "moves once, when the account becomes ineligible"
    );
    h.stop().await;
}
on_both_backends!(
    prompt_cache_stickiness,
    a_prompt_cache_key_sticks_to_one_account_until_it_becomes_ineligible
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_streams_leaves_no_request_in_progress_after_restart() {
    use codex_pooler::config::Settings;
    use futures_util::StreamExt;
    let backend_url = match std::env::var(crate::support::POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => None,
    };
    // Run the real binary so it can be killed. Every instance on this
    // database counts another as gone after 2 s without a heartbeat.
    let backend = match &backend_url {
        Some(url) => Backend::Postgres(url.clone()),
        None => Backend::Sqlite,
    };
    let h = Harness::start_with(backend, 3, |s| s.instance_stale_secs = 2).await;
    let settings: Settings = h.settings.clone();
    let spawn = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex-pooler"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&settings.data_dir)
            .args([
                "--database-url",
                settings.database_url.as_deref().unwrap_or_default(),
            ])
            .args([
                "--secret-key",
                settings.secret_key.as_deref().unwrap_or_default(),
            ])
            .args(["--instance-stale-secs", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd.spawn().expect("gateway binary starts")
    };
    async fn address(child: &mut tokio::process::Child) -> String {
        use tokio::io::AsyncBufReadExt;
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = lines.next_line().await.expect("read").expect("a line");
        line.rsplit(' ').next().expect("address").to_owned()
    }
    let mut child = spawn();
    let base = address(&mut child).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    for id in &ids {
        h.sim
            .queue_scenario(id, "barrier:crash", 3)
            .expect("scenario");
    }
    let mut streams = Vec::new();
    for i in 0..3 {
        let r = h
            .http
            .post(format!("{base}/backend-api/codex/responses"))
            .bearer_auth(&h.info.api_key)
            .json(&text_request(&format!("crash {i}"), &format!("crash-{i}")))
            .send()
            .await
            .expect("sent");
        let mut body = r.bytes_stream();
        let _ = body.next().await.expect("first chunk");
        streams.push(body);
    }
    // The in-progress rows are on disk before the crash.
    let store = &h.app.runtime.store;
    let mut in_progress = 0;
    for _ in 0..200 {
        in_progress = store
            .list_request_logs_filtered(&Default::default(), 50, None, None)
            .await
            .expect("rows")
            .iter()
            .filter(|r| r.status == "in_progress")
            .count();
        if in_progress == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(in_progress, 3);
    child.kill().await.expect("SIGKILL");
    drop(streams);
    let mut restarted = spawn();
    let _ = address(&mut restarted).await;
    let mut rows = Vec::new();
    for _ in 0..400 {
        rows = store
            .list_request_logs_filtered(&Default::default(), 50, None, None)
            .await
            .expect("rows");
        if rows.iter().all(|r| r.status != "in_progress") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let crashed: Vec<_> = rows
        .iter()
        .filter(|r| r.last_error_code.as_deref() == Some("stale_reservation_recovered"))
        .collect();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.status.clone(), r.last_error_code.clone()))
        .collect();
    assert_eq!(
        crashed.len(),
        3,
        "each stream's row was closed by recovery: {summary:?}"
    );
    assert!(
        crashed
            .iter()
            .all(|r| r.status == "failed" && r.usage_status == "usage_unknown")
    );
    assert!(rows.iter().all(|r| r.status != "in_progress"));
    h.sim.release_barrier("crash");
    restarted.kill().await.expect("stop");
    h.stop().await;
}

async fn two_instances_share_one_refresh_through_the_database_lease(backend: Backend) {
    let h = Harness::start(backend).await;
    let second = codex_pooler::app::RunningApp::spawn(h.settings.clone())
        .await
        .expect("second instance");
    let seed = "two-instances";
    let first = h.account_order(seed).await[0].clone();
    h.sim.expire_access_token(&first);
    let before = h.sim.refresh_calls();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            h.app.base_url()
        } else {
            second.base_url()
        };
        let http = h.http.clone();
        let key = h.info.api_key.clone();
        let body = text_request(&format!("both {i}"), seed);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/backend-api/codex/responses"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            (r.status(), sse_text(&r.text().await.unwrap_or_default()))
        }));
    }
    for t in tasks {
        let (status, text) = t.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(text, TEXT_SCENARIO_ANSWER);
    }
    assert_eq!(
        h.sim.refresh_calls() - before,
        1,
        "one refresh for both instances"
    );
    second.stop().await.expect("stop");
    h.stop().await;
}
on_both_backends!(
    cross_instance_refresh,
    two_instances_share_one_refresh_through_the_database_lease
);
