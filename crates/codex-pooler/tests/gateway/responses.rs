//! The Responses route end to end: relay, non-streaming aggregation, failover,
//! no retry after output, token refresh under concurrency, request rows.

use futures_util::StreamExt;
use serde_json::{Value, json};
use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::on_both_backends;
use crate::support::{Backend, Harness, seed_with_order, sse_text, sse_types, text_request};

async fn streams_an_answer_and_records_it(backend: Backend) {
    let h = Harness::start(backend).await;
    let r = h.responses(&text_request("hello", "stream-1")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    assert!(
        r.headers().contains_key("x-codex-primary-used-percent"),
        "quota headers are relayed"
    );
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body = r.text().await.expect("body");
    assert_eq!(sse_text(&body), TEXT_SCENARIO_ANSWER);
    assert_eq!(
        sse_types(&body).last().map(String::as_str),
        Some("response.completed")
    );

    let log = h.request_log(&id).await;
    let row = &log["request"];
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["transport"], "http_sse");
    assert_eq!(row["usage_status"], "usage_known");
    assert_eq!(row["input_tokens"], 120);
    assert_eq!(row["cached_input_tokens"], 64);
    assert_eq!(row["output_tokens"], 9);
    assert_eq!(row["total_tokens"], 129);
    assert_eq!(row["pricing_status"], "priced");
    // 56 uncached × $5/M + 64 cached × $0.50/M + 9 output × $30/M = 582 µ$
    assert_eq!(row["settled_cost_micros"], 582);
    assert_eq!(row["retry_count"], 0);
    assert_eq!(row["response_status_code"], 200);
    assert!(
        row["upstream_account_label"]
            .as_str()
            .is_some_and(|l| l.contains('@'))
    );
    assert_eq!(log["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(log["attempts"][0]["status"], "succeeded");

    // What reached the upstream: the account's own token, never the Pool key.
    let recorded = h.sim.requests();
    let upstream = recorded
        .iter()
        .rev()
        .find(|r| r.path == "/backend-api/codex/responses")
        .expect("recorded");
    assert!(!upstream.pool_key_flagged);
    let auth = upstream
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(!auth.contains("sk-cxp-"));
    assert!(
        upstream
            .headers
            .iter()
            .any(|(k, v)| k == "originator" && v == "codex_cli_rs")
    );
    let sent: Value = upstream.json.clone().expect("json body");
    assert_eq!(sent["stream"], json!(true));
    assert_eq!(sent["store"], json!(false));
    assert!(
        sent["include"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("reasoning.encrypted_content")))
    );
    h.stop().await;
}
on_both_backends!(streams_an_answer, streams_an_answer_and_records_it);

async fn non_streaming_clients_get_the_aggregated_response(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut body = text_request("hello", "json-1");
    body["stream"] = json!(false);
    let r = h.responses(&body).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], TEXT_SCENARIO_ANSWER);
    assert_eq!(v["usage"]["input_tokens"], 120);
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["transport"], "http_json");
    assert_eq!(log["request"]["status"], "succeeded");

    // An empty `output` in the terminal event is rebuilt from the finished items.
    let first = h.account_order("json-2").await[0].clone();
    h.sim
        .queue_scenario(&first, "empty_output", 1)
        .expect("scenario");
    let mut body = text_request("hello", "json-2");
    body["stream"] = json!(false);
    let v: Value = h.responses(&body).await.json().await.expect("json");
    assert!(
        v["output"].as_array().is_some_and(|o| !o.is_empty()),
        "output back-filled: {v}"
    );
    h.stop().await;
}
on_both_backends!(
    non_streaming,
    non_streaming_clients_get_the_aggregated_response
);

async fn fails_over_on_quota_and_5xx_to_the_third_account(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    h.sim
        .queue_scenario(&ids[0], "quota_429", 1)
        .expect("scenario");
    h.sim
        .queue_scenario(&ids[1], "http_502", 1)
        .expect("scenario");
    let r = h.responses(&text_request("failover", &seed)).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        sse_text(&r.text().await.expect("body")),
        TEXT_SCENARIO_ANSWER
    );
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["status"], "succeeded");
    assert_eq!(log["request"]["retry_count"], 2);
    let attempts = log["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], "retryable_failed");
    assert_eq!(attempts[0]["upstream_status_code"], 429);
    assert_eq!(attempts[1]["status"], "retryable_failed");
    assert_eq!(attempts[1]["upstream_status_code"], 502);
    assert_eq!(attempts[2]["status"], "succeeded");
    let accounts = h.sim.accounts();
    let third = accounts
        .iter()
        .find(|a| a.account_id == ids[2])
        .expect("third");
    assert_eq!(log["request"]["upstream_account_label"], json!(third.email));
    // The upstream saw the same request on three accounts, in order.
    let seen: Vec<String> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/backend-api/codex/responses")
        .filter_map(|r| r.account_id.clone())
        .collect();
    assert_eq!(seen, ids);

    // The exhausted account is skipped while its quota is out.
    let r = h.responses(&text_request("again", &seed)).await;
    assert_eq!(r.status(), 200);
    let last = h
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/backend-api/codex/responses")
        .expect("rec");
    assert_ne!(last.account_id.as_deref(), Some(ids[0].as_str()));
    h.stop().await;
}
on_both_backends!(failover, fails_over_on_quota_and_5xx_to_the_third_account);

async fn a_stream_that_delivered_output_is_never_retried(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    h.sim
        .queue_scenario(&ids[0], "failed_after_content", 1)
        .expect("scenario");
    let r = h.responses(&text_request("no replay", &seed)).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body = r.text().await.expect("body");
    let types = sse_types(&body);
    assert!(types.contains(&"response.output_text.delta".to_owned()));
    assert_eq!(types.last().map(String::as_str), Some("response.failed"));
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["status"], "failed");
    assert_eq!(log["request"]["last_error_code"], "server_error");
    assert_eq!(log["request"]["usage_status"], "usage_unknown");
    assert!(log["request"]["settled_cost_micros"].is_null());
    assert_eq!(log["attempts"].as_array().map(Vec::len), Some(1));
    let upstream_calls = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/backend-api/codex/responses")
        .count();
    assert_eq!(upstream_calls, 1);

    // Truncation after output: relayed as is, recorded as a stream error, no retry.
    h.sim
        .queue_scenario(&ids[0], "truncate_eof", 1)
        .expect("scenario");
    let r = h.responses(&text_request("cut", &seed)).await;
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["status"], "failed");
    assert_eq!(log["request"]["last_error_code"], "upstream_stream_error");
    assert_eq!(log["attempts"].as_array().map(Vec::len), Some(1));
    h.stop().await;
}
on_both_backends!(
    no_retry_after_output,
    a_stream_that_delivered_output_is_never_retried
);

async fn a_failed_first_event_fails_over(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    h.sim
        .queue_scenario(&ids[0], "failed_first", 1)
        .expect("scenario");
    let r = h.responses(&text_request("first event", &seed)).await;
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        sse_text(&r.text().await.expect("body")),
        TEXT_SCENARIO_ANSWER
    );
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["status"], "succeeded");
    assert_eq!(log["request"]["retry_count"], 1);
    assert_eq!(log["attempts"][0]["error_code"], "server_error");
    h.stop().await;
}
on_both_backends!(failed_first_event, a_failed_first_event_fails_over);

async fn fifty_concurrent_requests_share_one_token_refresh(backend: Backend) {
    let h = Harness::start(backend).await;
    let seed = "refresh-seed";
    let first = h.account_order(seed).await[0].clone();
    h.sim.expire_access_token(&first);
    let before = h.sim.refresh_calls();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = h.http.clone();
        let url = h.url("/backend-api/codex/responses");
        let key = h.info.api_key.clone();
        let body = text_request(&format!("concurrent {i}"), seed);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("sent");
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            (status, sse_text(&text))
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
        "exactly one refresh call upstream"
    );
    // Everything after the refresh used the account it was pinned to.
    let served: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/backend-api/codex/responses" && r.status == 200)
        .collect();
    assert_eq!(served.len(), 50);
    assert!(
        served
            .iter()
            .all(|r| r.account_id.as_deref() == Some(first.as_str()))
    );
    h.stop().await;
}
on_both_backends!(
    single_flight_refresh,
    fifty_concurrent_requests_share_one_token_refresh
);

async fn a_dead_refresh_token_marks_the_account_and_moves_on(backend: Backend) {
    let h = Harness::start(backend).await;
    let ids: Vec<String> = h.sim.accounts().into_iter().map(|a| a.account_id).collect();
    let seed = seed_with_order(&h, &ids).await;
    h.sim.expire_access_token(&ids[0]);
    h.sim
        .queue_scenario(&ids[0], "refresh_reused", 1)
        .expect("scenario");
    let r = h.responses(&text_request("reauth", &seed)).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    let log = h.request_log(&id).await;
    assert_eq!(log["request"]["status"], "succeeded");
    assert_eq!(log["attempts"][0]["error_code"], "upstream_unauthorized");
    h.app.runtime.invalidate_caches();
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
    assert_eq!(first.exclusion, Some("identity_reauth_required"));
    h.stop().await;
}
on_both_backends!(
    reauth_required,
    a_dead_refresh_token_marks_the_account_and_moves_on
);

async fn a_client_that_disconnects_mid_stream_leaves_a_failed_row(backend: Backend) {
    let h = Harness::start(backend).await;
    let seed = "disconnect";
    let first = h.account_order(seed).await[0].clone();
    h.sim
        .queue_scenario(&first, "barrier:hold", 1)
        .expect("scenario");
    let r = h.responses(&text_request("disconnect", seed)).await;
    let id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let mut stream = r.bytes_stream();
    let first_chunk = stream.next().await.expect("a chunk").expect("bytes");
    assert!(!first_chunk.is_empty());
    drop(stream);
    // The gateway notices the closed connection while the upstream is still
    // held at the barrier.
    let mut row = Value::Null;
    for _ in 0..200 {
        let log = h.request_log(&id).await;
        row = log["request"].clone();
        if row["status"] != "in_progress" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    h.sim.release_barrier("hold");
    assert_eq!(row["status"], "failed");
    assert_eq!(row["last_error_code"], "client_disconnected");
    h.stop().await;
}
on_both_backends!(
    client_disconnect,
    a_client_that_disconnects_mid_stream_leaves_a_failed_row
);

async fn compact_and_models_are_served(backend: Backend) {
    let h = Harness::start(backend).await;
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses/compact"))
        .bearer_auth(&h.info.api_key)
        .json(&json!({"model": "gpt-5.5", "input": [], "instructions": "", "store": false, "stream": true}))
        .send()
        .await
        .expect("compact");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(v["output"].is_array());
    let sent = h
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/compact"))
        .expect("recorded");
    let sent = sent.json.expect("json");
    assert!(sent.get("store").is_none() && sent.get("stream").is_none());

    let r = h
        .http
        .get(h.url("/backend-api/codex/models"))
        .bearer_auth(&h.info.api_key)
        .send()
        .await
        .expect("models");
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let v: Value = r.json().await.expect("json");
    let slugs: Vec<&str> = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["slug"].as_str())
        .collect();
    assert!(slugs.contains(&"gpt-5.5"));
    let r = h
        .http
        .get(h.url("/backend-api/codex/v1/models"))
        .bearer_auth(&h.info.api_key)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("models");
    assert_eq!(r.status(), 304);
    h.stop().await;
}
on_both_backends!(compact_and_models, compact_and_models_are_served);
