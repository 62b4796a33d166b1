//! The Responses websocket: handshake, turns, continuations, refusals.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use upstream_sim::{AccountSnapshot, Simulator, TEXT_SCENARIO_ANSWER};

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_request(
    sim: &Simulator,
    a: &AccountSnapshot,
    beta: bool,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{}/backend-api/codex/responses", sim.addr());
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", a.access_token)
            .parse()
            .expect("header"),
    );
    h.insert("chatgpt-account-id", a.account_id.parse().expect("header"));
    if beta {
        h.insert(
            "openai-beta",
            "responses_websockets=2026-02-06".parse().expect("header"),
        );
    }
    req
}

async fn connect(sim: &Simulator, a: &AccountSnapshot) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(ws_request(sim, a, true))
        .await
        .expect("connects");
    assert_eq!(resp.status(), 101);
    for h in [
        "x-request-id",
        "openai-model",
        "x-models-etag",
        "x-reasoning-included",
        "x-codex-primary-used-percent",
    ] {
        assert!(resp.headers().contains_key(h), "101 lacks {h}");
    }
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("sent");
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("frame").expect("ok") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Read frames up to the first terminal (completed/failed/incomplete/error).
async fn turn(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = next_json(ws).await;
        let t = v["type"].as_str().unwrap_or("").to_string();
        out.push(v);
        if matches!(
            t.as_str(),
            "response.completed"
                | "response.failed"
                | "response.incomplete"
                | "error"
                | "response.done"
        ) {
            return out;
        }
    }
}

fn create(input: Vec<Value>) -> Value {
    let mut b = body_with_input(input);
    b["type"] = json!("response.create");
    b
}

#[tokio::test]
async fn prewarm_turn_continuation_and_unknown_previous_response() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    let mut ws = connect(&sim, &a).await;

    let mut pre = create(vec![]);
    pre["generate"] = json!(false);
    send(&mut ws, pre).await;
    let frames = turn(&mut ws).await;
    assert_eq!(
        types(&frames),
        [
            "codex.rate_limits",
            "response.created",
            "response.completed"
        ]
    );
    assert_eq!(frames[2]["response"]["output"], json!([]));
    assert_eq!(frames[2]["response"]["usage"]["total_tokens"], 0);
    let prewarm_id = frames[2]["response"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let mut first = create(vec![user_message("hi")]);
    first["previous_response_id"] = json!(prewarm_id);
    first["client_metadata"] = json!({"x-codex-turn-state": "ts-from-client"});
    send(&mut ws, first).await;
    let frames = turn(&mut ws).await;
    let t = types(&frames);
    assert_eq!(t[0], "codex.rate_limits");
    assert_eq!(t[1], "response.metadata");
    assert_eq!(frames[1]["headers"]["x-codex-turn-state"], "ts-from-client");
    assert_eq!(t.last().map(String::as_str), Some("response.completed"));
    assert_eq!(text_of(&frames), TEXT_SCENARIO_ANSWER);
    let first_id = frames
        .last()
        .map(|f| f["response"]["id"].clone())
        .expect("id");

    // response.processed gets no reply; the next create continues from the last response.
    send(
        &mut ws,
        json!({"type": "response.processed", "response_id": first_id}),
    )
    .await;
    let mut cont = create(vec![user_message("more")]);
    cont["previous_response_id"] = first_id.clone();
    send(&mut ws, cont).await;
    let frames = turn(&mut ws).await;
    assert_eq!(
        frames[0]["type"], "codex.rate_limits",
        "no reply to response.processed"
    );
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("response.completed"))
    );
    assert!(
        frames[1]["headers"]["x-codex-turn-state"]
            .as_str()
            .unwrap_or("")
            .starts_with("sim-ts-")
    );

    // The older id is no longer the last completed one.
    let mut stale = create(vec![user_message("x")]);
    stale["previous_response_id"] = first_id;
    send(&mut ws, stale).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["status"], 400);
    assert_eq!(err["error"]["code"], "previous_response_not_found");

    // A fresh socket knows nothing.
    let mut ws2 = connect(&sim, &a).await;
    let mut other = create(vec![user_message("x")]);
    other["previous_response_id"] = json!(prewarm_id);
    send(&mut ws2, other).await;
    assert_eq!(
        next_json(&mut ws2).await["error"]["code"],
        "previous_response_not_found"
    );

    let rec = sim.requests();
    assert!(rec.iter().all(|r| r.transport == "websocket"));
    assert_eq!(rec[0].status, 101);
    assert!(rec.iter().any(|r| {
        r.direction.as_deref() == Some("client")
            && r.json
                .as_ref()
                .is_some_and(|j| j["type"] == "response.processed")
    }));
    assert!(rec.iter().any(|r| r.direction.as_deref() == Some("server")));
    assert!(
        rec.iter()
            .any(|r| r.scenario.as_deref() == Some("text")
                && r.direction.as_deref() == Some("client"))
    );
    let conn_ids: std::collections::HashSet<_> =
        rec.iter().filter_map(|r| r.connection_id).collect();
    assert_eq!(conn_ids.len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn scenarios_drive_websocket_frames_too() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    let mut ws = connect(&sim, &a).await;
    sim.queue_scenario(&a.account_id, "tool_call", 1)
        .expect("queued");
    send(&mut ws, create(vec![user_message("run")])).await;
    let frames = turn(&mut ws).await;
    let done = frames
        .iter()
        .find(|f| f["type"] == "response.output_item.done")
        .expect("item");
    assert_eq!(done["item"]["type"], "function_call");
    let call_id = done["item"]["call_id"].clone();
    let last_id = frames
        .last()
        .map(|f| f["response"]["id"].clone())
        .expect("id");
    let mut cont = create(vec![
        json!({"type": "function_call_output", "call_id": call_id, "output": "hi\n"}),
    ]);
    cont["previous_response_id"] = last_id;
    send(&mut ws, cont).await;
    assert_eq!(text_of(&turn(&mut ws).await), TEXT_SCENARIO_ANSWER);

    sim.queue_scenario(&a.account_id, "quota_429", 1)
        .expect("queued");
    send(&mut ws, create(vec![user_message("x")])).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["status"], 429);
    assert_eq!(err["error"]["type"], "usage_limit_reached");
    assert_eq!(err["headers"]["x-codex-primary-used-percent"], "100");

    // Past resets_at the quota is back, but this socket is now over its 60 minutes.
    sim.advance_clock(3601);
    send(&mut ws, create(vec![user_message("x")])).await;
    assert_eq!(
        next_json(&mut ws).await["error"]["code"],
        "websocket_connection_limit_reached"
    );
    let mut ws = connect(&sim, &a).await;
    sim.queue_scenario(&a.account_id, "failed_first:server_error", 1)
        .expect("queued");
    send(&mut ws, create(vec![user_message("x")])).await;
    let frames = turn(&mut ws).await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("response.failed"))
    );

    // A truncated stream closes the socket.
    sim.queue_scenario(&a.account_id, "truncate_eof", 1)
        .expect("queued");
    send(&mut ws, create(vec![user_message("x")])).await;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn handshake_refusals() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    let err = tokio_tungstenite::connect_async(ws_request(&sim, &a, false))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 400),
        "{err:?}"
    );
    for (scenario, status) in [
        ("ws_refuse_401", 401),
        ("ws_refuse_426", 426),
        ("ws_refuse_429", 429),
    ] {
        sim.queue_scenario(&a.account_id, scenario, 1)
            .expect("queued");
        let err = tokio_tungstenite::connect_async(ws_request(&sim, &a, true))
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                assert_eq!(r.status().as_u16(), status, "{scenario}");
                if status == 401 {
                    assert!(r.headers().contains_key("x-openai-authorization-error"));
                }
            }
            other => panic!("{scenario}: {other:?}"),
        }
    }
    // The queue is consumed: the next handshake succeeds.
    let _ws = connect(&sim, &a).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bench_mode_websocket_turns_answer_canned_frames() {
    let sim = start_with(upstream_sim::SimConfig {
        bench: Some(upstream_sim::BenchProfile::InstantJson),
        ..Default::default()
    })
    .await;
    let a = account(&sim, 0);
    let mut ws = connect(&sim, &a).await;
    for _ in 0..2 {
        send(&mut ws, create(vec![user_message("hi")])).await;
        let frames = turn(&mut ws).await;
        assert_eq!(frames[0]["type"], "response.created");
        let last = frames.last().expect("frames");
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["usage"]["total_tokens"], 129);
    }
    assert!(sim.requests().is_empty(), "bench mode records nothing");
    sim.shutdown().await;
}
