//! Scripting operations (queue scenarios, expire tokens, set quota, …) and the
//! HTTP control API under `/__sim/` that mirrors the [`crate::Simulator`]
//! methods. Control routes are never recorded.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{AppState, json_response};
use crate::scenario::Scenario;
use crate::state::{AccountSnapshot, AccountSpec, Shared};

pub(crate) fn queue_scenario(
    shared: &Shared,
    account_id: &str,
    scenario: &str,
    count: u32,
) -> Result<(), String> {
    let parsed =
        Scenario::parse(scenario).ok_or_else(|| format!("unknown scenario {scenario:?}"))?;
    let mut inner = shared.lock();
    let account = inner
        .account_mut(account_id)
        .ok_or_else(|| format!("unknown account {account_id:?}"))?;
    if count == 0 {
        return Ok(());
    }
    match parsed {
        Scenario::Refresh(v) => account
            .refresh_queue
            .extend(std::iter::repeat_n(v, count as usize)),
        other => account.queue.push_back((other, count)),
    }
    Ok(())
}

pub(crate) fn expire_access_token(shared: &Shared, account_id: &str) -> bool {
    let mut inner = shared.lock();
    if inner.account(account_id).is_none() {
        return false;
    }
    shared.expire_access_tokens(&mut inner, account_id);
    true
}

pub(crate) fn set_quota(shared: &Shared, account_id: &str, primary: f64, secondary: f64) -> bool {
    let now = shared.now();
    let mut inner = shared.lock();
    let Some(a) = inner.account_mut(account_id) else {
        return false;
    };
    a.quota.roll(now);
    a.quota.primary_used = primary.clamp(0.0, 100.0);
    a.quota.secondary_used = secondary.clamp(0.0, 100.0);
    true
}

pub(crate) fn accounts(shared: &Shared) -> Vec<AccountSnapshot> {
    shared
        .lock()
        .accounts
        .iter()
        .map(|a| a.snapshot())
        .collect()
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list_accounts).post(create_account))
        .route("/accounts/{account_id}/auth.json", get(auth_json))
        .route("/accounts/{account_id}/scenarios", post(scenarios))
        .route("/accounts/{account_id}/expire-token", post(expire))
        .route("/accounts/{account_id}/quota", post(quota))
        .route("/requests", get(requests))
        .route("/clock/advance", post(advance))
        .route("/clock", get(clock))
        .route("/barriers/{name}/release", post(release))
        .route("/reset", post(reset))
}

fn ok() -> Response {
    json_response(200, &json!({"ok": true}))
}

fn unknown_account(id: &str) -> Response {
    json_response(404, &json!({"detail": format!("unknown account {id:?}")}))
}

/// Parse a JSON body leniently into `T`, answering 400 on failure.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Response>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Box::new(json_response(
            400,
            &json!({"detail": format!("invalid JSON body: {e}")}),
        ))
    })
}

async fn list_accounts(State(shared): State<AppState>) -> Response {
    json_response(200, &json!(accounts(&shared)))
}

async fn create_account(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    match parse::<AccountSpec>(&body) {
        Ok(spec) => json_response(200, &json!(shared.create_account(spec))),
        Err(r) => *r,
    }
}

async fn auth_json(State(shared): State<AppState>, Path(id): Path<String>) -> Response {
    match shared.auth_json(&id) {
        Some(v) => json_response(200, &v),
        None => unknown_account(&id),
    }
}

#[derive(Deserialize)]
struct ScenarioBody {
    scenario: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn scenarios(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: ScenarioBody = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if shared.lock().account(&id).is_none() {
        return unknown_account(&id);
    }
    match queue_scenario(&shared, &id, &req.scenario, req.count) {
        Ok(()) => ok(),
        Err(e) => json_response(400, &json!({"detail": e})),
    }
}

async fn expire(State(shared): State<AppState>, Path(id): Path<String>) -> Response {
    if expire_access_token(&shared, &id) {
        ok()
    } else {
        unknown_account(&id)
    }
}

#[derive(Deserialize)]
struct QuotaBody {
    primary_used_percent: f64,
    secondary_used_percent: f64,
}

async fn quota(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let q: QuotaBody = match parse(&body) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    if set_quota(
        &shared,
        &id,
        q.primary_used_percent,
        q.secondary_used_percent,
    ) {
        ok()
    } else {
        unknown_account(&id)
    }
}

async fn requests(State(shared): State<AppState>) -> Response {
    json_response(200, &json!(shared.requests()))
}

#[derive(Deserialize)]
struct AdvanceBody {
    seconds: i64,
}

async fn advance(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    match parse::<AdvanceBody>(&body) {
        Ok(a) => {
            shared.advance_clock(a.seconds);
            json_response(200, &json!({"now": shared.now()}))
        }
        Err(r) => *r,
    }
}

async fn clock(State(shared): State<AppState>) -> Response {
    json_response(200, &json!({"now": shared.now()}))
}

async fn release(State(shared): State<AppState>, Path(name): Path<String>) -> Response {
    shared.release_barrier(&name);
    ok()
}

async fn reset(State(shared): State<AppState>) -> Response {
    shared.reset();
    json_response(200, &Value::Object(Default::default()))
}
