//! SSE scenarios on `POST /backend-api/codex/responses`.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use upstream_sim::{TEXT_DELTAS, TEXT_SCENARIO_ANSWER, TOOL_CALL_ARGUMENTS};

use crate::support::*;

const TEXT_ORDER: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
];

#[tokio::test]
async fn text_scenario_has_the_a1_shape_and_headers() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    for h in [
        "x-request-id",
        "openai-model",
        "x-models-etag",
        "x-codex-turn-state",
        "x-codex-primary-used-percent",
        "x-codex-primary-window-minutes",
        "x-codex-primary-reset-at",
        "x-codex-primary-reset-after-seconds",
        "x-codex-secondary-used-percent",
        "x-codex-secondary-window-minutes",
        "x-codex-secondary-reset-at",
        "x-codex-secondary-reset-after-seconds",
        "x-codex-credits-has-credits",
        "x-codex-credits-unlimited",
    ] {
        assert!(header(&resp, h).is_some(), "missing header {h}");
    }
    assert_eq!(header(&resp, "openai-model").as_deref(), Some("gpt-5.5"));
    assert_eq!(
        header(&resp, "x-codex-primary-window-minutes").as_deref(),
        Some("300")
    );
    let events = events_of(resp).await;
    assert_eq!(types(&events), TEXT_ORDER);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], json!(i), "sequence numbers count up");
        assert!(e.get("error").is_none(), "no top-level error key");
    }
    assert_eq!(text_of(&events), TEXT_SCENARIO_ANSWER);
    assert_eq!(TEXT_DELTAS.concat(), TEXT_SCENARIO_ANSWER);
    assert!(TEXT_SCENARIO_ANSWER.contains('é'));
    let done = &events[11]["item"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["content"][0]["text"], TEXT_SCENARIO_ANSWER);
    let completed = &events[12]["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["id"], events[0]["response"]["id"]);
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        TEXT_SCENARIO_ANSWER
    );
    assert_eq!(
        completed["usage"],
        json!({"input_tokens": 120, "input_tokens_details": {"cached_tokens": 64},
               "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 129})
    );
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.path, "/backend-api/codex/responses");
    assert_eq!(r.transport, "http");
    assert_eq!(r.account_id.as_deref(), Some(acct.account_id.as_str()));
    assert_eq!(r.scenario.as_deref(), Some("text"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json.as_ref().map(|j| j["model"].clone()),
        Some(json!("gpt-5.5"))
    );
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "chatgpt-account-id" && v == &acct.account_id)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn chunked_bytes_parse_to_the_same_events_as_normal_delivery() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    let normal = events_of(post_responses(&sim, &acct, &body("hi")).await).await;
    sim.queue_scenario(&acct.account_id, "chunked_bytes", 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    let (events, rest, _) = read_sse(resp).await;
    assert!(rest.is_empty());
    let chunked: Vec<Value> = events.iter().map(|e| e.json().expect("json")).collect();
    assert_eq!(
        chunked.iter().map(normalise).collect::<Vec<_>>(),
        normal.iter().map(normalise).collect::<Vec<_>>()
    );
    // Feeding the normal stream's bytes one at a time through the parser agrees too.
    let mut whole = String::new();
    for e in &normal {
        whole.push_str(&format!(
            "event: {}\ndata: {}\n\n",
            e["type"].as_str().unwrap_or(""),
            e
        ));
    }
    let mut parser = SseParser::default();
    let mut byte_events = Vec::new();
    for b in whole.as_bytes() {
        byte_events.extend(parser.feed(std::slice::from_ref(b)));
    }
    assert_eq!(byte_events.len(), normal.len());
    assert_eq!(sim.requests()[1].scenario.as_deref(), Some("chunked_bytes"));
    sim.shutdown().await;
}

#[tokio::test]
async fn reasoning_scenario_puts_the_message_at_index_one() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, "reasoning", 1)
        .expect("queued");
    let events = events_of(post_responses(&sim, &acct, &body("hi")).await).await;
    let t = types(&events);
    assert_eq!(
        &t[..9],
        &[
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
        ]
    );
    assert_eq!(events[2]["item"]["type"], "reasoning");
    assert!(
        events[8]["item"]["encrypted_content"]
            .as_str()
            .unwrap_or("")
            .starts_with("sim-enc-")
    );
    assert_eq!(events[9]["output_index"], 1);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        last["response"]["usage"]["output_tokens_details"]["reasoning_tokens"],
        21
    );
    assert_eq!(last["response"]["output"].as_array().map(Vec::len), Some(2));
    sim.shutdown().await;
}

#[tokio::test]
async fn tool_call_then_paired_output_and_unpaired_output_is_rejected() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, "tool_call", 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("run it")).await;
    let turn_state = header(&resp, "x-codex-turn-state").expect("turn state");
    let events = events_of(resp).await;
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let item = &events[6]["item"];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "shell");
    assert_eq!(item["arguments"], TOOL_CALL_ARGUMENTS);
    let deltas: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas, TOOL_CALL_ARGUMENTS);
    let call_id = item["call_id"].as_str().expect("call id").to_string();
    assert_eq!(
        events[7]["response"]["output"][0]["call_id"],
        call_id.as_str()
    );

    let follow_up = body_with_input(vec![
        user_message("run it"),
        item.clone(),
        json!({"type": "function_call_output", "call_id": call_id, "output": "hi\n"}),
    ]);
    let resp = authed(client().post(responses_url(&sim)), &acct)
        .header("x-codex-turn-state", &turn_state)
        .json(&follow_up)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-codex-turn-state"),
        Some(turn_state.clone())
    );
    assert_eq!(text_of(&events_of(resp).await), TEXT_SCENARIO_ANSWER);
    let rec = sim.requests();
    assert!(
        rec[1]
            .headers
            .iter()
            .any(|(k, v)| k == "x-codex-turn-state" && *v == turn_state)
    );

    let bad = body_with_input(vec![
        user_message("run it"),
        json!({"type": "function_call_output", "call_id": "call_never_issued", "output": "x"}),
    ]);
    let resp = post_responses(&sim, &acct, &bad).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("call_never_issued")
    );
    sim.shutdown().await;
}

async fn run(scenario: &str) -> Vec<Value> {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, scenario, 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    assert_eq!(resp.status(), 200, "{scenario}");
    let (events, rest, _) = read_sse(resp).await;
    assert!(rest.is_empty());
    sim.shutdown().await;
    events.iter().filter_map(|e| e.json()).collect()
}

#[tokio::test]
async fn terminal_variants() {
    let e = run("empty_output").await;
    let last = e.last().expect("events");
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"], json!([]));
    assert!(e.iter().any(|x| x["type"] == "response.output_item.done"));

    let e = run("legacy_done").await;
    assert_eq!(
        e.last().map(|x| x["type"].clone()),
        Some(json!("response.done"))
    );

    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, "done_trailer", 1)
        .expect("queued");
    let (events, _, _) = read_sse(post_responses(&sim, &acct, &body("hi")).await).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    assert_eq!(
        events[events.len() - 2].json().map(|j| j["type"].clone()),
        Some(json!("response.completed"))
    );
    sim.shutdown().await;

    for (name, reason) in [
        ("incomplete_max_tokens", "max_output_tokens"),
        ("incomplete_content_filter", "content_filter"),
        ("incomplete_context_length", "context_length_exceeded"),
    ] {
        let e = run(name).await;
        let last = e.last().expect("events");
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], reason);
        assert_eq!(last["response"]["status"], "incomplete");
        assert!(last["response"]["usage"]["total_tokens"].is_u64());
    }

    let e = run("failed_first").await;
    assert_eq!(types(&e), ["response.created", "response.failed"]);
    assert_eq!(e[1]["response"]["error"]["code"], "server_error");

    let e = run("failed_after_content:rate_limit_exceeded").await;
    let t = types(&e);
    assert_eq!(t.last().map(String::as_str), Some("response.failed"));
    assert!(t.contains(&"response.output_text.delta".to_string()));
    let msg = e
        .last()
        .map(|x| x["response"]["error"]["message"].clone())
        .unwrap_or_default();
    assert!(msg.as_str().unwrap_or("").contains("try again in 1.5s"));

    let e = run("failed_first:usage_limit_reached").await;
    assert!(e[1]["response"]["error"]["resets_at"].is_i64());

    let e = run("error_flat").await;
    let last = e.last().expect("events");
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "server_error");
    assert_eq!(last["param"], Value::Null);
    assert_eq!(last["sequence_number"], 3);

    let e = run("error_nested").await;
    let last = e.last().expect("events");
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["code"], "server_error");
}

#[tokio::test]
async fn http_error_scenarios() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "forbidden_403",
            403,
            "application/json",
            "account_deactivated",
        ),
        ("forbidden_html", 403, "text/html", "Just a moment"),
        (
            "bad_request_param",
            400,
            "application/json",
            "Unsupported parameter: temperature",
        ),
        (
            "bad_request_model",
            400,
            "application/json",
            "is not supported when using Codex with a ChatGPT account",
        ),
        (
            "bad_request_context",
            400,
            "application/json",
            "context_length_exceeded",
        ),
        ("http_500", 500, "application/json", "server_error"),
        ("http_502", 502, "text/plain", "upstream connect error"),
        ("http_503", 503, "application/json", "server_is_overloaded"),
        ("http_504", 504, "text/html", "504"),
        (
            "credits_depleted",
            429,
            "application/json",
            "workspace_owner_credits_depleted",
        ),
        (
            "usage_not_included",
            429,
            "application/json",
            "usage_not_included",
        ),
        (
            "rate_limited_429",
            429,
            "application/json",
            "rate_limit_exceeded",
        ),
        (
            "malformed_json",
            200,
            "application/json",
            "this is not json",
        ),
    ];
    for (scenario, status, ctype, needle) in cases {
        sim.queue_scenario(&acct.account_id, scenario, 1)
            .expect("queued");
        let resp = post_responses(&sim, &acct, &body("hi")).await;
        assert_eq!(resp.status().as_u16(), *status, "{scenario}");
        assert!(
            header(&resp, "content-type")
                .unwrap_or_default()
                .starts_with(ctype),
            "{scenario} content type"
        );
        if *status == 429 {
            assert!(
                header(&resp, "x-codex-primary-used-percent").is_some(),
                "{scenario} quota headers"
            );
        }
        if *scenario == "rate_limited_429" {
            assert_eq!(header(&resp, "retry-after").as_deref(), Some("2"));
        }
        if *scenario == "forbidden_html" {
            assert_eq!(header(&resp, "cf-mitigated").as_deref(), Some("challenge"));
        }
        let text = resp.text().await.expect("body");
        assert!(text.contains(needle), "{scenario}: {text}");
        if *scenario == "malformed_json" {
            assert!(serde_json::from_str::<Value>(&text).is_err());
        }
    }
    let rec = sim.requests();
    let scenarios: Vec<_> = rec.iter().filter_map(|r| r.scenario.clone()).collect();
    assert_eq!(scenarios.len(), cases.len());
    assert_eq!(scenarios[0], "forbidden_403");
    // The queue is empty again: back to `text`.
    assert_eq!(post_responses(&sim, &acct, &body("hi")).await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn marker_in_the_last_user_message_selects_a_scenario() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    let resp = post_responses(&sim, &acct, &body("please SIM:http_503 thanks")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(sim.requests()[0].scenario.as_deref(), Some("http_503"));
    sim.shutdown().await;
}

#[tokio::test]
async fn truncation_variants() {
    let e = run("truncate_eof").await;
    assert_eq!(
        e.last().map(|x| x["type"].clone()),
        Some(json!("response.output_text.delta"))
    );

    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, "truncate_mid_event", 1)
        .expect("queued");
    let (events, rest, _) = read_sse(post_responses(&sim, &acct, &body("hi")).await).await;
    assert!(!rest.is_empty(), "a partial event is left over");
    assert!(String::from_utf8_lossy(&rest).starts_with("event: response.output_text.delta"));
    assert!(events.iter().all(|e| e.json().is_some()));

    sim.queue_scenario(&acct.account_id, "malformed_sse", 1)
        .expect("queued");
    let (events, _, _) = read_sse(post_responses(&sim, &acct, &body("hi")).await).await;
    assert!(
        events.last().and_then(|e| e.json()).is_none(),
        "last data line is broken JSON"
    );

    sim.queue_scenario(&acct.account_id, "truncate_reset", 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the body ends with a transport error");

    sim.queue_scenario(&acct.account_id, "close_before_headers", 1)
        .expect("queued");
    let err = authed(client().post(responses_url(&sim)), &acct)
        .json(&body("hi"))
        .send()
        .await;
    assert!(err.is_err(), "no response at all");
    sim.shutdown().await;
}

#[tokio::test]
async fn stall_and_slow_scenarios_hold_back_bytes() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    let quiet = Duration::from_millis(300);

    sim.queue_scenario(&acct.account_id, "slow_first_byte", 1)
        .expect("queued");
    let slow_body = body("hi");
    let pending = post_responses(&sim, &acct, &slow_body);
    assert!(
        tokio::time::timeout(quiet, pending).await.is_err(),
        "no headers yet"
    );

    for scenario in ["slow_first_event", "stall"] {
        sim.queue_scenario(&acct.account_id, scenario, 1)
            .expect("queued");
        let resp = post_responses(&sim, &acct, &body("hi")).await;
        assert_eq!(resp.status(), 200, "{scenario}: headers arrive");
        let mut stream = resp.bytes_stream();
        assert!(
            tokio::time::timeout(quiet, stream.next()).await.is_err(),
            "{scenario}: no event yet"
        );
    }

    sim.queue_scenario(&acct.account_id, "stall_mid_stream", 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &SseEvent| e.event.as_deref() == Some("response.output_text.delta"))
    {
        let chunk = stream.next().await.expect("chunk").expect("ok");
        seen.extend(parser.feed(&chunk));
    }
    assert!(
        tokio::time::timeout(quiet, stream.next()).await.is_err(),
        "then silence"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn barrier_blocks_after_the_first_delta_until_released() {
    let sim = start(1).await;
    let acct = account(&sim, 0);
    sim.queue_scenario(&acct.account_id, "barrier:b1", 1)
        .expect("queued");
    let resp = post_responses(&sim, &acct, &body("hi")).await;
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut events: Vec<SseEvent> = Vec::new();
    while !events
        .iter()
        .any(|e| e.event.as_deref() == Some("response.output_text.delta"))
    {
        let chunk = stream.next().await.expect("chunk").expect("ok");
        events.extend(parser.feed(&chunk));
    }
    assert_eq!(
        events.len(),
        5,
        "created, in_progress, item added, part added, first delta"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "blocked at the barrier"
    );
    sim.release_barrier("b1");
    while let Some(chunk) = stream.next().await {
        events.extend(parser.feed(&chunk.expect("ok")));
    }
    let last = events.last().and_then(|e| e.json()).expect("json");
    assert_eq!(last["type"], "response.completed");
    let values: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    assert_eq!(text_of(&values), TEXT_SCENARIO_ANSWER);
    sim.shutdown().await;
}

#[tokio::test]
async fn large_event_carries_eight_mib_of_encrypted_content() {
    let e = run("large_event").await;
    let done = e
        .iter()
        .find(|x| x["type"] == "response.output_item.done" && x["item"]["type"] == "reasoning")
        .expect("reasoning item done");
    let len = done["item"]["encrypted_content"]
        .as_str()
        .map(str::len)
        .unwrap_or(0);
    assert!(len >= 8 * 1024 * 1024, "{len}");
    assert_eq!(
        e.last().map(|x| x["type"].clone()),
        Some(json!("response.completed"))
    );
}
