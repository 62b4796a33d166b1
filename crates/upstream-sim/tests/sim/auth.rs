//! Bearer validation, strict body validation, OAuth refresh and device login.

use serde_json::{Value, json};
use upstream_sim::{CODEX_CLIENT_ID, TOKEN_EXPIRED_MESSAGE, decode_payload};

use crate::support::*;

async fn refresh_form(sim: &upstream_sim::Simulator, rt: &str) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&client_id={CODEX_CLIENT_ID}&refresh_token={rt}"
        ))
        .send()
        .await
        .expect("answered")
}

async fn refresh_json(sim: &upstream_sim::Simulator, rt: &str) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/token", sim.base_url()))
        .json(&json!({"client_id": CODEX_CLIENT_ID, "grant_type": "refresh_token", "refresh_token": rt}))
        .send()
        .await
        .expect("answered")
}

#[tokio::test]
async fn bearer_and_account_header_validation() {
    let sim = start(2).await;
    let a = account(&sim, 0);
    let b = account(&sim, 1);
    let url = responses_url(&sim);

    let resp = client()
        .post(&url)
        .bearer_auth("nope")
        .header("chatgpt-account-id", &a.account_id)
        .json(&body("hi"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let resp = client()
        .post(&url)
        .bearer_auth("sk-cxp-abc123")
        .header("chatgpt-account-id", &a.account_id)
        .json(&body("hi"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.expect("body");
    assert!(text.contains("pool API key"), "{text}");

    let resp = client()
        .post(&url)
        .bearer_auth(&a.access_token)
        .json(&body("hi"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "account mismatch"})
    );

    let resp = client()
        .post(&url)
        .bearer_auth(&a.access_token)
        .header("chatgpt-account-id", &b.account_id)
        .json(&body("hi"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 403);

    let rec = sim.requests();
    assert_eq!(rec.len(), 4);
    assert!(!rec[0].pool_key_flagged);
    assert!(rec[1].pool_key_flagged);
    assert_eq!(rec[2].account_id.as_deref(), Some(a.account_id.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn strict_body_validation() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for p in upstream_sim::UNSUPPORTED_PARAMS {
        let mut b = body("hi");
        b[*p] = json!(1);
        cases.push((b, "Unsupported parameter"));
    }
    let mut b = body("hi");
    b["stream"] = json!(false);
    cases.push((b, "Stream"));
    let mut b = body("hi");
    b["store"] = json!(true);
    cases.push((b, "Store"));
    let mut b = body("hi");
    b["input"] = json!("hi");
    cases.push((b, "Input"));
    for (b, needle) in cases {
        let resp = post_responses(&sim, &a, &b).await;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.expect("json");
        assert!(v["detail"].as_str().unwrap_or("").contains(needle), "{v}");
    }
    let mut b = body("hi");
    b["temperature"] = json!(0.2);
    let resp = post_responses(&sim, &a, &b).await;
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Unsupported parameter: temperature"})
    );
    sim.shutdown().await;

    // Lenient mode lets the same body through.
    let sim = start_with(upstream_sim::SimConfig {
        strict: false,
        ..Default::default()
    })
    .await;
    let a = account(&sim, 0);
    let resp = authed(client().post(responses_url(&sim)), &a)
        .json(&b)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_token_refreshes_once_then_reuse_is_refused() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    sim.expire_access_token(&a.account_id);
    let resp = post_responses(&sim, &a, &body("hi")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "token_expired");
    assert_eq!(v["error"]["message"], TOKEN_EXPIRED_MESSAGE);

    let resp = refresh_form(&sim, &a.refresh_token).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.expect("json");
    let new_access = tokens["access_token"].as_str().expect("access").to_string();
    let new_refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert_ne!(new_refresh, a.refresh_token);
    assert_eq!(tokens["expires_in"], 864_000);
    let claims = decode_payload(&new_access).expect("jwt");
    assert_eq!(
        claims["https://api.openai.com/auth"]["chatgpt_account_id"],
        a.account_id.as_str()
    );
    assert!(claims["exp"].as_i64().unwrap_or(0) > sim.now());
    assert!(decode_payload(tokens["id_token"].as_str().unwrap_or("")).is_some());

    let mut fresh = a.clone();
    fresh.access_token = new_access;
    assert_eq!(
        post_responses(&sim, &fresh, &body("hi")).await.status(),
        200
    );
    assert_eq!(account(&sim, 0).refresh_token, new_refresh);

    let resp = refresh_json(&sim, &a.refresh_token).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "refresh_token_reused");
    assert_eq!(sim.refresh_calls(), 2);

    // Refresh variants are consumed by the next refresh and do not burn the token.
    for (scenario, status, code) in [
        ("refresh_5xx", 503, "server_error"),
        ("refresh_expired", 401, "refresh_token_expired"),
        ("refresh_invalidated", 401, "refresh_token_invalidated"),
        ("refresh_reused", 401, "refresh_token_reused"),
    ] {
        sim.queue_scenario(&a.account_id, scenario, 1)
            .expect("queued");
        let resp = refresh_json(&sim, &new_refresh).await;
        assert_eq!(resp.status().as_u16(), status, "{scenario}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], code, "{scenario}");
    }
    sim.queue_scenario(&a.account_id, "refresh_invalid_grant", 1)
        .expect("queued");
    let v: Value = refresh_json(&sim, &new_refresh)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(refresh_json(&sim, &new_refresh).await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_expired_scenario_and_clock_expiry() {
    let sim = start(1).await;
    let a = account(&sim, 0);
    sim.queue_scenario(&a.account_id, "token_expired", 1)
        .expect("queued");
    assert_eq!(post_responses(&sim, &a, &body("hi")).await.status(), 401);
    // The token stays expired afterwards.
    assert_eq!(post_responses(&sim, &a, &body("hi")).await.status(), 401);
    let tokens: Value = refresh_json(&sim, &a.refresh_token)
        .await
        .json()
        .await
        .expect("json");
    let mut fresh = a.clone();
    fresh.access_token = tokens["access_token"].as_str().unwrap_or("").to_string();
    assert_eq!(
        post_responses(&sim, &fresh, &body("hi")).await.status(),
        200
    );

    sim.advance_clock(864_001);
    let resp = post_responses(&sim, &fresh, &body("hi")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "token_expired");
    sim.shutdown().await;
}

#[tokio::test]
async fn device_login_creates_an_account() {
    let sim = start(1).await;
    let base = sim.base_url();
    let c = client();
    let v: Value = c
        .post(format!("{base}/api/accounts/deviceauth/usercode"))
        .json(&json!({"client_id": CODEX_CLIENT_ID}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let id = v["device_auth_id"].as_str().expect("id").to_string();
    let code = v["user_code"].as_str().expect("code").to_string();
    assert!(v["interval"].is_string());
    let poll = || {
        c.post(format!("{base}/api/accounts/deviceauth/token"))
            .json(&json!({"device_auth_id": id, "user_code": code}))
            .send()
    };
    assert_eq!(poll().await.expect("answered").status(), 403);
    let resp = poll().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    let auth_code = v["authorization_code"].as_str().expect("code").to_string();
    assert!(v["code_verifier"].is_string());
    let resp = c.post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=authorization_code&code={auth_code}&redirect_uri=https%3A%2F%2Fauth.openai.com%2Fdeviceauth%2Fcallback&client_id={CODEX_CLIENT_ID}&code_verifier=x"))
        .send().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.expect("json");
    let claims = decode_payload(tokens["access_token"].as_str().unwrap_or("")).expect("jwt");
    let new_id = claims["https://api.openai.com/auth"]["chatgpt_account_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(sim.accounts().len(), 2);
    let acct = sim
        .accounts()
        .into_iter()
        .find(|x| x.account_id == new_id)
        .expect("new account");
    assert_eq!(post_responses(&sim, &acct, &body("hi")).await.status(), 200);
    // Codes are single use.
    let resp = c
        .post(format!("{base}/oauth/token"))
        .json(&json!({"grant_type": "authorization_code", "code": auth_code}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_json_has_the_codex_cli_shape() {
    let sim = start(2).await;
    let a = account(&sim, 1);
    assert_eq!(a.plan_type, "pro");
    assert_eq!(a.email, "sim2@example.test");
    let j = sim.auth_json(&a.account_id).expect("auth.json");
    assert_eq!(j["auth_mode"], "chatgpt");
    assert_eq!(j["OPENAI_API_KEY"], Value::Null);
    assert_eq!(j["tokens"]["access_token"], a.access_token.as_str());
    assert_eq!(j["tokens"]["refresh_token"], a.refresh_token.as_str());
    assert_eq!(j["tokens"]["account_id"], "acct_sim_2");
    assert!(j["last_refresh"].as_str().unwrap_or("").ends_with('Z'));
    let claims = decode_payload(&a.id_token).expect("jwt");
    assert_eq!(claims["email"], "sim2@example.test");
    assert_eq!(
        claims["https://api.openai.com/auth"]["chatgpt_plan_type"],
        "pro"
    );
    assert!(sim.auth_json("acct_missing").is_none());
    sim.shutdown().await;
}
