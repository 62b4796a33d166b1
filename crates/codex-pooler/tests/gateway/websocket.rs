//! The Responses websocket: turns relayed and recorded one row each, per-turn
//! admission, key pause closing the socket with 1008, a client dropping mid-turn,
//! and upstream handshake refusals.

use std::time::Duration;

use codex_pooler::control;
use codex_pooler::store::AuditActor;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::on_both_backends;
use crate::support::{Backend, Harness};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(h: &Harness, key: &str, session: &str) -> Result<Socket, u16> {
    let url = format!(
        "{}/backend-api/codex/responses",
        h.app.base_url().replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    req.headers_mut().insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().expect("header"),
    );
    req.headers_mut()
        .insert("session_id", session.parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(err) => panic!("websocket connect failed: {err}"),
    }
}

fn create(model: &str, text: &str, previous: Option<&str>) -> Message {
    let mut v = json!({"type": "response.create", "model": model, "instructions": "", "store": false, "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": false, "include": []});
    if let Some(p) = previous {
        v["previous_response_id"] = json!(p);
    }
    Message::text(v.to_string())
}

/// Reads frames until a terminal event or an error frame; returns them.
async fn read_turn(socket: &mut Socket) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
            let kind = v["type"].as_str().unwrap_or("").to_owned();
            frames.push(v);
            if matches!(
                kind.as_str(),
                "response.completed" | "response.failed" | "response.incomplete" | "error"
            ) {
                break;
            }
        }
    }
    frames
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "response.output_text.delta")
        .filter_map(|f| f["delta"].as_str())
        .collect()
}

async fn websocket_turns_are_relayed_and_recorded(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut socket = open(&h, &h.info.api_key, "ws-session-1")
        .await
        .expect("upgrade");
    socket
        .send(create("gpt-5.5", "first", None))
        .await
        .expect("send");
    let first = read_turn(&mut socket).await;
    assert_eq!(text_of(&first), TEXT_SCENARIO_ANSWER);
    let last = first.last().expect("frames");
    assert_eq!(last["type"], "response.completed");
    let response_id = last["response"]["id"].as_str().expect("id").to_owned();
    // A continuation on the same socket reaches the same upstream connection.
    socket
        .send(create("gpt-5.5", "second", Some(&response_id)))
        .await
        .expect("send");
    let second = read_turn(&mut socket).await;
    assert_eq!(
        second.last().map(|f| f["type"].clone()),
        Some(json!("response.completed")),
        "{second:?}"
    );
    socket.close(None).await.expect("close");

    let rows: Vec<Value> = h
        .request_logs()
        .await
        .into_iter()
        .filter(|r| r["transport"] == "websocket")
        .collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["status"], "succeeded");
        assert_eq!(row["usage_status"], "usage_known");
        assert_eq!(row["total_tokens"], 129);
        assert_eq!(row["settled_cost_micros"], 582);
    }
    assert_eq!(
        rows[0]["upstream_identity_id"],
        rows[1]["upstream_identity_id"]
    );
    let upstream_accounts: std::collections::HashSet<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.transport == "websocket")
        .filter_map(|r| r.account_id)
        .collect();
    assert_eq!(upstream_accounts.len(), 1);
    h.stop().await;
}
on_both_backends!(turns, websocket_turns_are_relayed_and_recorded);

async fn turns_are_admitted_one_by_one_and_a_paused_key_is_cut_off(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let (key_id, key) = control::create_api_key(
        &rt.store,
        &actor,
        &h.info.pool_id,
        "mini only",
        Some(vec!["gpt-5.4-mini".into()]),
        None,
    )
    .await
    .expect("key");
    let mut socket = open(&h, &key, "ws-policy").await.expect("upgrade");
    socket
        .send(create("gpt-5.5", "not allowed", None))
        .await
        .expect("send");
    let frames = read_turn(&mut socket).await;
    let error = frames.last().expect("an error frame");
    assert_eq!(error["type"], "error");
    assert_eq!(error["status"], 403);
    assert_eq!(error["error"]["code"], "model_not_allowed");
    // The socket is still usable for an allowed model.
    socket
        .send(create("gpt-5.4-mini", "allowed", None))
        .await
        .expect("send");
    let frames = read_turn(&mut socket).await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("response.completed"))
    );

    rt.store
        .set_api_key_status(&actor, &key_id, "paused")
        .await
        .expect("pause");
    let started = std::time::Instant::now();
    let mut close_code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match msg {
            Ok(Message::Close(frame)) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(close_code, Some(1008));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed within seconds"
    );
    let rows = h.request_logs().await;
    assert!(
        rows.iter()
            .any(|r| r["last_error_code"] == "model_not_allowed" && r["transport"] == "websocket")
    );
    h.stop().await;
}
on_both_backends!(
    admission,
    turns_are_admitted_one_by_one_and_a_paused_key_is_cut_off
);

async fn a_client_gone_mid_turn_leaves_a_failed_row(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut socket = open(&h, &h.info.api_key, "ws-drop").await.expect("upgrade");
    let account = h
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.transport == "websocket" && r.status == 101)
        .and_then(|r| r.account_id)
        .expect("upstream socket account");
    h.sim
        .queue_scenario(&account, "barrier:ws-drop", 1)
        .expect("scenario");
    socket
        .send(create("gpt-5.5", "drop me", None))
        .await
        .expect("send");
    // Wait for the first delta, then vanish.
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        if let Message::Text(t) = msg
            && t.as_str().contains("response.output_text.delta")
        {
            break;
        }
    }
    drop(socket);
    let mut row = Value::Null;
    for _ in 0..200 {
        let rows = h.request_logs().await;
        if let Some(r) = rows.into_iter().find(|r| r["transport"] == "websocket")
            && r["status"] != "in_progress"
        {
            row = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    h.sim.release_barrier("ws-drop");
    assert_eq!(row["status"], "failed");
    assert_eq!(row["last_error_code"], "client_disconnected");
    assert_eq!(row["response_status_code"], 499);
    h.stop().await;
}
on_both_backends!(client_gone, a_client_gone_mid_turn_leaves_a_failed_row);

async fn upstream_handshake_refusals(backend: Backend) {
    let h = Harness::start_with(backend, 1, |_| {}).await;
    let account = h.sim.accounts()[0].account_id.clone();
    h.sim
        .queue_scenario(&account, "ws_refuse_426", 1)
        .expect("scenario");
    assert_eq!(
        open(&h, &h.info.api_key, "refused").await.err(),
        Some(426),
        "426 passes through so the client falls back to HTTP"
    );
    h.sim.expire_access_token(&account);
    let before = h.sim.refresh_calls();
    assert!(
        open(&h, &h.info.api_key, "refresh").await.is_ok(),
        "a 401 handshake refreshes the token and retries"
    );
    assert_eq!(h.sim.refresh_calls() - before, 1);
    h.stop().await;
}
on_both_backends!(refusals, upstream_handshake_refusals);

async fn the_v1_websocket_serves_turns_behind_the_pool_switch(backend: Backend) {
    let h = Harness::start(backend).await;
    let url = format!(
        "{}/v1/responses",
        h.app.base_url().replacen("http", "ws", 1)
    );
    let connect = |key: String| {
        let url = url.clone();
        async move {
            let mut req = url.into_client_request().expect("request");
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("header"),
            );
            match tokio_tungstenite::connect_async(req).await {
                Ok((socket, _)) => Ok(socket),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    Err(resp.status().as_u16())
                }
                Err(err) => panic!("websocket connect failed: {err}"),
            }
        }
    };
    let mut socket = connect(h.info.api_key.clone()).await.expect("upgrade");
    socket
        .send(create("gpt-5.5", "over v1", None))
        .await
        .expect("send");
    let frames = read_turn(&mut socket).await;
    assert_eq!(text_of(&frames), TEXT_SCENARIO_ANSWER);
    socket.close(None).await.expect("close");
    let rows = h.request_logs().await;
    assert!(rows.iter().any(|r| r["endpoint"] == "/v1/responses"
        && r["transport"] == "websocket"
        && r["status"] == "succeeded"));

    let rt = &h.app.runtime;
    rt.store
        .set_pool_v1_compatibility(&AuditActor::cli(), &h.info.pool_id, false)
        .await
        .expect("switch off");
    rt.invalidate_caches();
    assert_eq!(connect(h.info.api_key.clone()).await.err(), Some(403));
    h.stop().await;
}
on_both_backends!(
    v1_websocket,
    the_v1_websocket_serves_turns_behind_the_pool_switch
);

async fn key_policy_and_limits_hold_per_turn(backend: Backend) {
    use codex_pooler::store::KeyPolicy;
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let (key_id, key) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "ws policy", None, None)
            .await
            .expect("key");
    let policy = KeyPolicy {
        maximum_reasoning_effort: Some("medium".into()),
        max_requests_per_minute: Some(2),
        ..Default::default()
    };
    rt.store
        .set_key_policy(&actor, &key_id, &policy)
        .await
        .expect("policy");
    rt.invalidate_caches();
    let mut socket = open(&h, &key, "ws-policy-limits").await.expect("upgrade");
    let with_effort = |effort: &str| {
        let mut v: Value =
            serde_json::from_str(create("gpt-5.5", "effort", None).to_text().expect("text"))
                .expect("json");
        v["reasoning"] = json!({"effort": effort});
        Message::text(v.to_string())
    };
    socket.send(with_effort("high")).await.expect("send");
    let frames = read_turn(&mut socket).await;
    assert_eq!(
        frames.last().map(|f| f["error"]["code"].clone()),
        Some(json!("reasoning_effort_not_allowed"))
    );
    for _ in 0..2 {
        socket.send(with_effort("low")).await.expect("send");
        let frames = read_turn(&mut socket).await;
        assert_eq!(
            frames.last().map(|f| f["type"].clone()),
            Some(json!("response.completed"))
        );
    }
    socket.send(with_effort("low")).await.expect("send");
    let frames = read_turn(&mut socket).await;
    let last = frames.last().expect("a frame");
    assert_eq!(last["status"], 429);
    assert_eq!(last["error"]["code"], "api_key_policy_limit_exceeded");

    // "Always use" rewrites the turn sent upstream.
    let (always_id, always) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "ws always", None, None)
            .await
            .expect("key");
    rt.store
        .set_key_policy(
            &actor,
            &always_id,
            &KeyPolicy {
                enforced_reasoning_effort: Some("high".into()),
                ..Default::default()
            },
        )
        .await
        .expect("policy");
    rt.invalidate_caches();
    let mut socket = open(&h, &always, "ws-always").await.expect("upgrade");
    socket.send(with_effort("low")).await.expect("send");
    let frames = read_turn(&mut socket).await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("response.completed"))
    );
    let sent = h
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| {
            r.transport == "websocket"
                && r.direction.as_deref() == Some("client")
                && r.body
                    .as_deref()
                    .is_some_and(|b| b.contains("response.create"))
        })
        .and_then(|r| r.json)
        .expect("the upstream turn");
    assert_eq!(sent["reasoning"]["effort"], "high");
    h.stop().await;
}
on_both_backends!(turn_policy, key_policy_and_limits_hold_per_turn);
