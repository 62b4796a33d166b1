//! An operator's own security, through the console as a browser uses it:
//! TOTP enrolment with recovery codes, the second sign-in step (wrong,
//! replayed, recovery and expired codes), turning TOTP off, listing and
//! revoking sessions, the password change signing out the other sessions,
//! deactivation doing the same, the JSON API refusing a session whose
//! operator must still replace a temporary password, and an operator's own
//! API tokens (created and revoked on the page and through the JSON API).

use codex_pooler::control;
use codex_pooler::store::{AuditActor, NewSession, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use totp_rs::{Algorithm, TOTP};

use crate::console::{Browser, Page};
use crate::on_both_backends;
use crate::support::{Backend, Harness};

// Helpers shared with the route-by-route test in `console.rs`.

/// The id of the operator with this email.
pub(crate) async fn operator_id(h: &Harness, email: &str) -> String {
    h.app
        .runtime
        .store
        .find_operator_by_email(email)
        .await
        .expect("lookup")
        .expect("operator")
        .id
}

/// The current code of the operator's pending (or enabled) TOTP secret, read
/// from the store the way the gateway reads it.
pub(crate) async fn pending_code(h: &Harness, operator_id: &str) -> String {
    let row = h
        .app
        .runtime
        .store
        .find_totp(operator_id)
        .await
        .expect("lookup")
        .expect("a TOTP row");
    let secret = h
        .app
        .runtime
        .secret_box
        .open(
            &format!("totp:{operator_id}"),
            &row.secret_ciphertext,
            &row.secret_nonce,
        )
        .expect("the secret opens with the operator-bound associated data");
    totp(&secret).generate(now_secs())
}

/// A new live session of the operator with this email, opened in the store
/// (its `auth.login` event is written before any measured change).
pub(crate) async fn fresh_session(h: &Harness, email: &str) -> String {
    let id = operator_id(h, email).await;
    let token = format!("fixture-session-{}", uuid::Uuid::now_v7());
    h.app
        .runtime
        .store
        .create_session(
            &AuditActor::cli(),
            &NewSession {
                operator_id: &id,
                token_hash: &token,
                expires_at: codex_pooler::time::now_ms() + 3_600_000,
                ip: Some("192.0.2.7"),
                user_agent: Some("fixture"),
            },
        )
        .await
        .expect("session")
}

fn now_secs() -> u64 {
    codex_pooler::time::now_secs() as u64
}

fn totp(secret: &[u8]) -> TOTP {
    TOTP::new(Algorithm::SHA1, 6, 1, 30, secret.to_vec()).expect("totp")
}

fn totp_from_base32(secret: &str) -> TOTP {
    totp(&base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).expect("base32"))
}

/// A six-digit code valid in none of the steps the gateway accepts now.
fn wrong_code(t: &TOTP) -> String {
    let now = now_secs();
    let valid: Vec<String> = (0..4).map(|i| t.generate(now - 30 + i * 30)).collect();
    (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .expect("a wrong code")
}

async fn audits(h: &Harness) -> i64 {
    h.app
        .runtime
        .store
        .count_all_audit_events()
        .await
        .expect("count")
}

async fn audits_of(h: &Harness, action: &str) -> i64 {
    h.app
        .runtime
        .store
        .count_audit_events(action)
        .await
        .expect("count")
}

async fn count(h: &Harness, sql: &'static str) -> i64 {
    let row: (i64,) = match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query_as(sql).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_as(sql).fetch_one(p).await,
    }
    .expect("count query");
    row.0
}

async fn exec(h: &Harness, sql: &'static str) {
    match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    }
    .expect("sql");
}

/// Details of the newest audit event with this action.
async fn last_details(h: &Harness, action: &str) -> Value {
    let sql = "SELECT details FROM audit_events WHERE action = $1 ORDER BY occurred_at DESC, id DESC LIMIT 1";
    let row: (String,) = match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query_as(sql).bind(action).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_as(sql).bind(action).fetch_one(p).await,
    }
    .expect("an audit event");
    serde_json::from_str(&row.0).expect("details JSON")
}

/// What the database holds about sign-ins, sessions and second factors;
/// equal before and after a refused request means nothing was written.
async fn security_state(h: &Harness) -> Vec<i64> {
    vec![
        audits(h).await,
        count(h, "SELECT COUNT(*) FROM admin_sessions").await,
        count(
            h,
            "SELECT COUNT(*) FROM admin_sessions WHERE revoked_at IS NULL",
        )
        .await,
        count(
            h,
            "SELECT COUNT(*) FROM login_challenges WHERE used_at IS NULL",
        )
        .await,
        count(
            h,
            "SELECT COUNT(*) FROM operator_recovery_codes WHERE used_at IS NULL",
        )
        .await,
        count(
            h,
            "SELECT CAST(COALESCE(SUM(last_used_step), 0) AS BIGINT) FROM operator_totp",
        )
        .await,
        count(
            h,
            "SELECT COUNT(*) FROM operator_totp WHERE enabled_at IS NOT NULL",
        )
        .await,
    ]
}

/// The value of `<input id="{id}" … value="…">` on a page.
fn input_value(body: &str, id: &str) -> String {
    let start = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} on the page: {body}"));
    let rest = &body[start..];
    let value = rest.find("value=\"").expect("value") + "value=\"".len();
    rest[value..].split('"').next().expect("end").to_owned()
}

/// The recovery codes listed on the page shown after enrolment.
fn recovery_codes(body: &str) -> Vec<String> {
    let start = body
        .find("id=\"recovery-codes\"")
        .expect("recovery code list");
    let list = &body[start..body[start..].find("</ol>").expect("end") + start];
    list.split("<li>")
        .skip(1)
        .map(|item| item.split("</li>").next().expect("item").trim().to_owned())
        .collect()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

/// A `reqwest` response read as a page, with every `Set-Cookie` kept.
async fn send(req: reqwest::RequestBuilder) -> (Page, Vec<String>) {
    let r = req.send().await.expect("sent");
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("cookie").to_owned())
        .collect();
    (Browser::read(r).await, cookies)
}

/// Signs in with email and password when TOTP is on: no session yet, a
/// `cxp_login` cookie and a redirect to the second step.
async fn first_step(h: &Harness, email: &str, password: &str) -> Browser {
    let mut b = Browser::new(h);
    let before = security_state(h).await;
    let (page, cookies) = send(
        b.http
            .post(format!("{}/login", b.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("email", email), ("password", password)]).unwrap()),
    )
    .await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login/totp")
    );
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("cxp_login="), "{cookies:?}");
    assert!(cookies[0].contains("HttpOnly") && cookies[0].contains("Path=/login"));
    let after = security_state(h).await;
    assert_eq!(after[..3], before[..3], "no session and no audit event yet");
    assert_eq!(after[3], before[3] + 1, "one pending challenge");
    b.cookie = Some(cookie_pair(&cookies[0]));
    b
}

/// Posts the second step with `code`, same-origin.
async fn second_step(b: &Browser, code: &str) -> (Page, Vec<String>) {
    second_step_with(
        b,
        code,
        &[("origin", &b.base), ("sec-fetch-site", "same-origin")],
    )
    .await
}

async fn second_step_with(
    b: &Browser,
    code: &str,
    headers: &[(&str, &str)],
) -> (Page, Vec<String>) {
    let mut req = b
        .http
        .post(format!("{}/login/totp", b.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("code", code)]).unwrap());
    if let Some(c) = &b.cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// Asserts the second step with `code` is refused with `status` and a page
/// containing `message`, having written nothing.
async fn refused_step(h: &Harness, b: &Browser, code: &str, status: StatusCode, message: &str) {
    let before = security_state(h).await;
    let (page, _) = second_step(b, code).await;
    assert_eq!(page.status, status, "{code}: {}", page.body);
    assert!(
        page.body.contains(message),
        "{code}: expected “{message}” in {}",
        page.body
    );
    assert_eq!(security_state(h).await, before, "{code}: nothing written");
}

/// Completes the second step and returns a browser signed in with the new
/// session cookie.
async fn signed_in(mut b: Browser, code: &str) -> Browser {
    let (page, cookies) = second_step(&b, code).await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/admin/pools"),
        "{}",
        page.body
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cxp_session="))
        .expect("a session cookie");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("cxp_login=;") && c.contains("Max-Age=0")),
        "the challenge cookie is cleared: {cookies:?}"
    );
    b.cookie = Some(cookie_pair(session));
    let me = b.get("/admin/api/me").await;
    assert_eq!(me.status, StatusCode::OK);
    let me: Value = serde_json::from_str(&me.body).expect("json");
    b.csrf = me["csrf_token"].as_str().expect("csrf").to_owned();
    b
}

async fn api_security(b: &Browser) -> Value {
    let page = b.get("/admin/api/security").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    serde_json::from_str(&page.body).expect("json")
}

async fn totp_enrolment_and_second_factor(backend: Backend) {
    let h = Harness::start(backend).await;
    let email = h.info.admin_email.clone();
    let password = h.info.admin_password.clone();
    let owner = operator_id(&h, &email).await;
    let b = Browser::login(&h, &email, &password).await;

    let page = b.get("/admin/security").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Two-factor sign-in is <strong>off</strong>")
    );
    assert!(page.body.contains("Set up two-factor"));
    assert!(page.body.contains("href=\"/admin/password\""));
    assert!(
        page.body.contains("href=\"/admin/security\""),
        "linked from the layout"
    );

    // Setup: a pending secret, shown as base32 and as an otpauth URI, stored
    // sealed; TOTP is not on yet.
    let page = b
        .post(
            "/admin/security/totp/setup",
            &[("current_password", &password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = input_value(&page.body, "totp-secret");
    assert_eq!(secret.len(), 32, "20 bytes in base32: {secret}");
    let uri = input_value(&page.body, "totp-uri")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert_eq!(
        uri,
        format!(
            "otpauth://totp/Codex%20Pooler:{email}?secret={secret}&issuer=Codex%20Pooler&algorithm=SHA1&digits=6&period=30"
        )
    );
    let row = h
        .app
        .runtime
        .store
        .find_totp(&owner)
        .await
        .unwrap()
        .unwrap();
    assert!(row.enabled_at.is_none(), "pending until a code confirms it");
    let raw = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &secret).unwrap();
    assert!(
        !row.secret_ciphertext
            .windows(raw.len())
            .any(|w| w == raw.as_slice()),
        "the secret is stored sealed"
    );
    assert!(
        h.app
            .runtime
            .secret_box
            .open(&owner, &row.secret_ciphertext, &row.secret_nonce)
            .is_err(),
        "the sealed secret is bound to its purpose and operator"
    );
    assert_eq!(api_security(&b).await["totp"]["enabled"], false);
    let app = totp_from_base32(&secret);

    // A wrong or malformed code changes nothing and says why.
    for (code, message) in [
        (wrong_code(&app), "is not the current code for this secret"),
        (
            "12ab56".to_owned(),
            "enter the 6 digits your authenticator app shows",
        ),
    ] {
        let before = security_state(&h).await;
        let page = b
            .post("/admin/security/totp/enable", &[("code", &code)])
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        assert!(page.body.contains(message), "{code}: {}", page.body);
        assert!(
            page.body.contains(&secret),
            "the same secret is shown again"
        );
        assert_eq!(security_state(&h).await, before, "{code}: nothing written");
    }

    // The right code turns it on: one event, ten recovery codes shown once,
    // only their hashes stored.
    let enrolled = audits_of(&h, "auth.totp_enrolled").await;
    let before = audits(&h).await;
    let page = b
        .post(
            "/admin/security/totp/enable",
            &[("code", &app.generate(now_secs()))],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(audits(&h).await - before, 1, "exactly one audit event");
    assert_eq!(audits_of(&h, "auth.totp_enrolled").await, enrolled + 1);
    let codes = recovery_codes(&page.body);
    assert_eq!(codes.len(), 10, "{codes:?}");
    for code in &codes {
        assert_eq!(code.len(), 19, "four groups of four: {code}");
    }
    assert_eq!(
        count(
            &h,
            "SELECT COUNT(*) FROM operator_recovery_codes WHERE used_at IS NULL"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &h,
            "SELECT COUNT(*) FROM operator_recovery_codes WHERE LENGTH(code_hash) = 64"
        )
        .await,
        10,
        "SHA-256 hex only"
    );
    let page = b.get("/admin/security").await;
    assert!(
        page.body
            .contains("Two-factor sign-in is <strong>on</strong>")
    );
    assert!(
        page.body
            .contains("Unused recovery codes: <strong>10</strong>")
    );
    let status = api_security(&b).await;
    assert_eq!(status["totp"]["enabled"], true);
    assert_eq!(status["totp"]["recovery_codes_left"], 10);
    // A second enrolment waits until this one is turned off.
    let page = b
        .post(
            "/admin/security/totp/setup",
            &[("current_password", &password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("two-factor sign-in is already on"));

    // Signing in now takes a second step; the challenge alone is no session.
    let step = first_step(&h, &email, &password).await;
    let page = step.get("/login/totp").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!("Signing in as {email}")));
    let page = step.get("/admin/pools").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "no session yet");
    assert!(page.location.starts_with("/login"));

    // Wrong, malformed and cross-origin attempts write nothing.
    refused_step(
        &h,
        &step,
        &wrong_code(&app),
        StatusCode::UNAUTHORIZED,
        "That code is not valid.",
    )
    .await;
    refused_step(
        &h,
        &step,
        "12345",
        StatusCode::UNAUTHORIZED,
        "Enter the 6-digit code from your authenticator app, or a recovery code",
    )
    .await;
    refused_step(
        &h,
        &step,
        "AAAA-BBBB-CCCC-DDDD",
        StatusCode::UNAUTHORIZED,
        "That is not one of your recovery codes.",
    )
    .await;
    let next_code = app.generate(now_secs() + 30);
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let before = security_state(&h).await;
        let (page, _) = second_step_with(&step, &next_code, &headers).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(security_state(&h).await, before);
    }
    // Without the challenge cookie there is nothing to complete.
    let anon = Browser::new(&h);
    refused_step(
        &h,
        &anon,
        &next_code,
        StatusCode::UNAUTHORIZED,
        "The two-factor step expired",
    )
    .await;

    // The next step's code signs in: `auth.login`, like a password sign-in.
    let logins = audits_of(&h, "auth.login").await;
    let before = audits(&h).await;
    let used_challenge = step.cookie.clone();
    let signed = signed_in(step, &next_code).await;
    assert_eq!(audits(&h).await - before, 1);
    assert_eq!(audits_of(&h, "auth.login").await, logins + 1);
    assert_eq!(
        last_details(&h, "auth.login").await["method"],
        "password+totp"
    );
    assert_eq!(signed.get("/admin/pools").await.status, StatusCode::OK);
    // The completed challenge cannot open a second session.
    let mut replayed = Browser::new(&h);
    replayed.cookie = used_challenge;
    refused_step(
        &h,
        &replayed,
        &app.generate(now_secs()),
        StatusCode::UNAUTHORIZED,
        "The two-factor step expired",
    )
    .await;

    // The same code is not accepted twice, nor an older one.
    let step = first_step(&h, &email, &password).await;
    refused_step(
        &h,
        &step,
        &next_code,
        StatusCode::UNAUTHORIZED,
        "That code was already used to sign in.",
    )
    .await;

    // A recovery code (typed loosely) works once: `auth.recovery_code_used`,
    // not `auth.login`.
    let recovery_used = audits_of(&h, "auth.recovery_code_used").await;
    let logins = audits_of(&h, "auth.login").await;
    let before = audits(&h).await;
    let typed = codes[3].to_lowercase().replace('-', " ");
    let rescued = signed_in(step, &typed).await;
    assert_eq!(audits(&h).await - before, 1, "one audit event");
    assert_eq!(
        audits_of(&h, "auth.recovery_code_used").await,
        recovery_used + 1
    );
    assert_eq!(audits_of(&h, "auth.login").await, logins);
    assert_eq!(
        last_details(&h, "auth.recovery_code_used").await["recovery_codes_left"],
        9
    );
    assert_eq!(
        api_security(&rescued).await["totp"]["recovery_codes_left"],
        9
    );
    let step = first_step(&h, &email, &password).await;
    refused_step(
        &h,
        &step,
        &codes[3],
        StatusCode::UNAUTHORIZED,
        "That recovery code was already used",
    )
    .await;

    // A challenge older than five minutes is gone.
    exec(&h, "UPDATE login_challenges SET expires_at = 1").await;
    refused_step(
        &h,
        &step,
        &codes[4],
        StatusCode::UNAUTHORIZED,
        "The two-factor step expired (it lasts 5 minutes)",
    )
    .await;
    let page = step.get("/login/totp").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );

    // Turning it off needs the password; afterwards the password alone signs in.
    let before = security_state(&h).await;
    let page = b
        .post(
            "/admin/security/totp/disable",
            &[("current_password", "not-the-password")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body
            .contains("the current password is incorrect; two-factor sign-in stays on")
    );
    assert_eq!(security_state(&h).await, before);
    let disabled = audits_of(&h, "auth.totp_disabled").await;
    let before = audits(&h).await;
    let page = b
        .post(
            "/admin/security/totp/disable",
            &[("current_password", &password)],
        )
        .await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/admin/security?notice=totp_disabled"
        )
    );
    assert_eq!(audits(&h).await - before, 1);
    assert_eq!(audits_of(&h, "auth.totp_disabled").await, disabled + 1);
    assert_eq!(
        count(&h, "SELECT COUNT(*) FROM operator_recovery_codes").await,
        0
    );
    assert_eq!(api_security(&b).await["totp"]["enabled"], false);
    let page = b
        .post(
            "/admin/security/totp/disable",
            &[("current_password", &password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("two-factor sign-in is not on"));
    let plain = Browser::login(&h, &email, &password).await;
    assert_eq!(plain.get("/admin/pools").await.status, StatusCode::OK);
    h.stop().await;
}
on_both_backends!(
    totp_enrolment_needs_a_code_at_sign_in_once_per_step_and_recovery_codes_once,
    totp_enrolment_and_second_factor
);

async fn session_list_and_revoke(backend: Backend) {
    let h = Harness::start(backend).await;
    let email = h.info.admin_email.clone();
    let password = h.info.admin_password.clone();
    let a = Browser::login(&h, &email, &password).await;
    let c = Browser::login(&h, &email, &password).await;

    // Both sessions are listed, the current one marked, with address and
    // browser.
    let status = api_security(&a).await;
    let sessions = status["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    for s in &sessions {
        assert_eq!(s["ip"], "127.0.0.1");
        assert!(s["user_agent"].is_string() || s["user_agent"].is_null());
        assert!(s["created_at"].as_i64().unwrap() > 0 && s["last_seen_at"].as_i64().unwrap() > 0);
    }
    let c_id = sessions
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("the other session")
        .to_owned();
    let page = a.get("/admin/security").await;
    assert_eq!(page.status, StatusCode::OK);
    // (The API tokens section has revoke forms of its own.)
    assert_eq!(
        page.body
            .split("action=\"/admin/security/sessions/")
            .skip(1)
            .filter(|rest| rest
                .split('"')
                .next()
                .is_some_and(|a| a.ends_with("/revoke")))
            .count(),
        2,
        "a revoke form per session"
    );
    assert_eq!(page.body.matches("this session").count(), 1);
    assert!(
        page.body
            .contains(&format!("/admin/security/sessions/{c_id}/revoke"))
    );
    assert!(page.body.contains("Sign out all other sessions (1)"));

    // Another operator's session is not found, by form or JSON.
    let admin_email = "second@example.test";
    control::create_operator(
        &h.app.runtime.store,
        &AuditActor::cli(),
        admin_email,
        "second-operator-pw-1",
        "admin",
    )
    .await
    .expect("operator");
    let x = Browser::login(&h, admin_email, "second-operator-pw-1").await;
    let x_id = api_security(&x).await["sessions"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = security_state(&h).await;
    let page = a
        .post(&format!("/admin/security/sessions/{x_id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("no active session of yours has this id"));
    let r = a
        .http
        .post(format!(
            "{}/admin/api/security/sessions/{x_id}/revoke",
            a.base
        ))
        .header("cookie", a.cookie.clone().unwrap())
        .header("x-csrf-token", &a.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(security_state(&h).await, before);
    assert_eq!(x.get("/admin/api/me").await.status, StatusCode::OK);

    // Revoking the other session signs it out at once.
    let revoked = audits_of(&h, "auth.session_revoked").await;
    let before = audits(&h).await;
    let page = a
        .post(&format!("/admin/security/sessions/{c_id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(audits(&h).await - before, 1);
    assert_eq!(audits_of(&h, "auth.session_revoked").await, revoked + 1);
    let page = c.get("/admin/pools").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?expired=1")
    );
    assert_eq!(
        c.get("/admin/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.get("/admin/api/me").await.status, StatusCode::OK);

    // Revoke-others: one event with the count; the current session stays.
    let d = Browser::login(&h, &email, &password).await;
    let e = Browser::login(&h, &email, &password).await;
    let many = audits_of(&h, "auth.sessions_revoked").await;
    let before = audits(&h).await;
    let page = a.post("/admin/security/sessions/revoke-others", &[]).await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/admin/security?notice=sessions_revoked#sessions"
        )
    );
    assert_eq!(audits(&h).await - before, 1);
    assert_eq!(audits_of(&h, "auth.sessions_revoked").await, many + 1);
    assert_eq!(last_details(&h, "auth.sessions_revoked").await["count"], 2);
    for other in [&d, &e] {
        assert_eq!(
            other.get("/admin/api/pools").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(a.get("/admin/api/pools").await.status, StatusCode::OK);
    assert_eq!(
        x.get("/admin/api/me").await.status,
        StatusCode::OK,
        "other operators keep theirs"
    );
    assert_eq!(
        api_security(&a).await["sessions"].as_array().unwrap().len(),
        1
    );
    // Nothing left to revoke: nothing written.
    let before = security_state(&h).await;
    let page = a.post("/admin/security/sessions/revoke-others", &[]).await;
    assert_eq!(
        page.location,
        "/admin/security?notice=no_other_sessions#sessions"
    );
    assert_eq!(security_state(&h).await, before);

    // The JSON twin, CSRF-checked.
    let f = Browser::login(&h, &email, &password).await;
    let f_id = api_security(&f).await["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .unwrap()
        .to_owned();
    let url = format!("{}/admin/api/security/sessions/{f_id}/revoke", a.base);
    let before = security_state(&h).await;
    let r = a
        .http
        .post(&url)
        .header("cookie", a.cookie.clone().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(security_state(&h).await, before);
    let r = a
        .http
        .post(&url)
        .header("cookie", a.cookie.clone().unwrap())
        .header("x-csrf-token", &a.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"session_id": f_id, "revoked": true}));
    assert_eq!(
        f.get("/admin/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    // Revoking the current session signs this browser out.
    let a_id = api_security(&a).await["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = a
        .post(&format!("/admin/security/sessions/{a_id}/revoke"), &[])
        .await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?signed_out=1")
    );
    assert_eq!(
        a.get("/admin/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    h.stop().await;
}
on_both_backends!(
    sessions_are_listed_and_only_your_own_can_be_revoked,
    session_list_and_revoke
);

async fn password_change_and_deactivation_sign_out(backend: Backend) {
    let h = Harness::start(backend).await;
    let email = h.info.admin_email.clone();
    let password = h.info.admin_password.clone();
    let a = Browser::login(&h, &email, &password).await;
    let c = Browser::login(&h, &email, &password).await;
    let changes = audits_of(&h, "auth.password_change").await;
    let before = audits(&h).await;
    let page = a
        .post(
            "/admin/password",
            &[
                ("current_password", &password),
                ("password", "a-brand-new-password-1"),
                ("password_repeat", "a-brand-new-password-1"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audits(&h).await - before, 1, "one audit event");
    assert_eq!(audits_of(&h, "auth.password_change").await, changes + 1);
    let details = last_details(&h, "auth.password_change").await;
    assert_eq!(details["sessions_revoked"], 1, "{details}");
    assert_eq!(
        c.get("/admin/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(c.get("/admin/pools").await.location, "/login?expired=1");
    assert_eq!(
        a.get("/admin/api/me").await.status,
        StatusCode::OK,
        "the changer stays in"
    );

    // An owner deactivating an operator signs out their sessions too.
    control::create_operator(
        &h.app.runtime.store,
        &AuditActor::cli(),
        "leaving@example.test",
        "leaving-operator-pw-1",
        "admin",
    )
    .await
    .expect("operator");
    let leaving_id = operator_id(&h, "leaving@example.test").await;
    let x = Browser::login(&h, "leaving@example.test", "leaving-operator-pw-1").await;
    assert_eq!(x.get("/admin/api/me").await.status, StatusCode::OK);
    let page = a
        .post(
            &format!("/admin/operators/{leaving_id}/status"),
            &[("status", "deactivated")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        count(
            &h,
            "SELECT COUNT(*) FROM admin_sessions s JOIN operators o ON o.id = s.operator_id
             WHERE o.email = 'leaving@example.test' AND s.revoked_at IS NULL"
        )
        .await,
        0,
        "their sessions are revoked, not only refused"
    );
    assert_eq!(
        x.get("/admin/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    h.stop().await;
}
on_both_backends!(
    password_change_and_deactivation_revoke_other_sessions,
    password_change_and_deactivation_sign_out
);

async fn forced_password_change_blocks_json(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let temporary = "temporary-password-1";
    let hash = control::hash_password(temporary).expect("hash");
    store
        .create_operator_with_pools(
            &AuditActor::cli(),
            "new-admin@example.test",
            &hash,
            "admin",
            std::slice::from_ref(&h.info.pool_id),
        )
        .await
        .expect("operator");
    let b = Browser::login(&h, "new-admin@example.test", temporary).await;
    let me = b.get("/admin/api/me").await;
    assert_eq!(me.status, StatusCode::OK, "who am I answers");
    for path in [
        "/admin/api/pools".to_owned(),
        format!("/admin/api/pools/{}", h.info.pool_id),
        "/admin/api/security".to_owned(),
        "/admin/api/audit-events".to_owned(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        let body: Value = serde_json::from_str(&page.body).expect("json");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("change your temporary password at /admin/password"),
            "{path}: {message}"
        );
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    // The request-log API (a separate router) too, as a same-origin read.
    let r = b
        .http
        .get(format!("{}/admin/api/request-logs", b.base))
        .header("cookie", b.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "password_change_required");
    // A change is refused before its body is looked at.
    let before = security_state(&h).await;
    let r = b
        .http
        .post(format!("{}/admin/api/pools", b.base))
        .header("cookie", b.cookie.clone().unwrap())
        .header("x-csrf-token", &b.csrf)
        .json(&json!({"slug": "nope", "name": "Nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(security_state(&h).await, before);

    // Once the password is changed, the API answers.
    let page = b
        .post(
            "/admin/password",
            &[
                ("current_password", temporary),
                ("password", "my-own-password-123"),
                ("password_repeat", "my-own-password-123"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(b.get("/admin/api/pools").await.status, StatusCode::OK);
    h.stop().await;
}
on_both_backends!(
    forced_password_change_refuses_the_json_api_but_me,
    forced_password_change_blocks_json
);

/// Five wrong codes spend the sign-in challenge: the sixth attempt, even
/// with the right code, is sent back to the password step, so a 6-digit
/// code cannot be found by retrying.
async fn wrong_codes_spend_the_challenge(backend: Backend) {
    let h = Harness::start(backend).await;
    let email = h.info.admin_email.clone();
    let password = h.info.admin_password.clone();
    let owner = operator_id(&h, &email).await;
    let b = Browser::login(&h, &email, &password).await;
    let page = b
        .post(
            "/admin/security/totp/setup",
            &[("current_password", &password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = b
        .post(
            "/admin/security/totp/enable",
            &[("code", &pending_code(&h, &owner).await)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = h
        .app
        .runtime
        .store
        .find_totp(&owner)
        .await
        .expect("lookup")
        .expect("row");
    let secret = h
        .app
        .runtime
        .secret_box
        .open(
            &format!("totp:{owner}"),
            &secret.secret_ciphertext,
            &secret.secret_nonce,
        )
        .expect("open");
    let app = totp(&secret);

    let step = first_step(&h, &email, &password).await;
    for left in (1..5).rev() {
        let (page, _) = second_step(&step, &wrong_code(&app)).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        let plural = if left == 1 { "attempt" } else { "attempts" };
        assert!(
            page.body.contains(&format!("({left} {plural} left.)")),
            "{left}: {}",
            page.body
        );
    }
    let spent = audits_of(&h, "auth.second_factor_failed").await;
    let (page, cookies) = second_step(&step, "AAAA-BBBB-CCCC-DDDD").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Too many wrong codes"), "{}", page.body);
    assert_eq!(
        audits_of(&h, "auth.second_factor_failed").await,
        spent + 1,
        "the spent challenge is audited once"
    );
    assert!(cookies.iter().any(|c| c.starts_with("cxp_login=;")));
    let before = security_state(&h).await;
    let (page, _) = second_step(&step, &app.generate(now_secs() + 30)).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.body
            .contains("Sign in again with your email and password"),
        "{}",
        page.body
    );
    assert_eq!(security_state(&h).await, before, "no session was opened");

    // Parallel guesses share the five attempts: at most five are judged.
    let step = first_step(&h, &email, &password).await;
    let guesses: Vec<String> = (0..8).map(|_| wrong_code(&app)).collect();
    let answers =
        futures_util::future::join_all(guesses.iter().map(|g| second_step(&step, g))).await;
    let judged = answers
        .iter()
        .filter(|(page, _)| {
            page.body.contains("attempts left")
                || page.body.contains("attempt left")
                || page.body.contains("Too many wrong codes")
        })
        .count();
    assert_eq!(judged, 5, "exactly five guesses were checked");

    // Ten wrong codes in 15 minutes: the password step starts no new challenge.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{}/login", h.app.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("email", &email), ("password", &password)]).unwrap())
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("Too many wrong two-factor codes for this account")
    );
    h.stop().await;
}
on_both_backends!(
    five_wrong_codes_spend_the_sign_in_challenge,
    wrong_codes_spend_the_challenge
);

/// What the database holds about operator tokens and the audit log; equal
/// before and after a refused request means nothing was written.
async fn token_state(h: &Harness) -> Vec<i64> {
    vec![
        audits(h).await,
        count(h, "SELECT COUNT(*) FROM operator_tokens").await,
        count(
            h,
            "SELECT COUNT(*) FROM operator_tokens WHERE revoked_at IS NULL",
        )
        .await,
    ]
}

/// One column of the operator token with `id`, as text.
async fn token_column(h: &Harness, column: &str, id: &str) -> Option<String> {
    let sql = match column {
        "token_hash" => "SELECT token_hash FROM operator_tokens WHERE id = $1",
        "revoked_at" => "SELECT CAST(revoked_at AS TEXT) FROM operator_tokens WHERE id = $1",
        other => panic!("no query for column {other}"),
    };
    let row: (Option<String>,) = match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query_as(sql).bind(id).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_as(sql).bind(id).fetch_one(p).await,
    }
    .expect("token row");
    row.0
}

/// The actor id of the newest audit event with this action.
async fn last_actor(h: &Harness, action: &str) -> Option<String> {
    let sql = "SELECT actor_id FROM audit_events WHERE action = $1 ORDER BY occurred_at DESC, id DESC LIMIT 1";
    let row: (Option<String>,) = match &h.app.runtime.store {
        Store::Sqlite(p) => sqlx::query_as(sql).bind(action).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_as(sql).bind(action).fetch_one(p).await,
    }
    .expect("an audit event");
    row.0
}

/// A JSON POST from a signed-in browser, as the console's script sends it.
async fn post_json(b: &Browser, path: &str, body: Value) -> (StatusCode, Value) {
    let r = b
        .http
        .post(format!("{}{path}", b.base))
        .header("cookie", b.cookie.clone().expect("signed in"))
        .header("x-csrf-token", &b.csrf)
        .header("origin", &b.base)
        .header("sec-fetch-site", "same-origin")
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.expect("json body"))
}

/// The status of a JSON API call presenting `token` as Bearer.
async fn with_bearer(h: &Harness, token: &str, path: &str) -> StatusCode {
    h.http
        .get(format!("{}{path}", h.app.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .status()
}

/// The caller's token list from `GET /admin/api/security/tokens`, with the
/// raw body for "never the secret" checks.
async fn token_list(b: &Browser) -> (Vec<Value>, String) {
    let page = b.get("/admin/api/security/tokens").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body: Value = serde_json::from_str(&page.body).expect("json");
    (
        body["tokens"].as_array().expect("tokens").clone(),
        page.body,
    )
}

/// Asserts neither the raw token nor its stored hash appears on the Security
/// page or in the token list.
async fn secret_nowhere(h: &Harness, b: &Browser, raw: &str, id: &str) {
    let hash = token_column(h, "token_hash", id).await.expect("hash");
    // `op-cxp-<12 hex>-<secret>`; the secret itself may contain dashes.
    let secret = &raw[20..];
    let page = b.get("/admin/security").await;
    let (_, list) = token_list(b).await;
    for (what, body) in [("Security page", &page.body), ("token list", &list)] {
        assert!(!body.contains(raw), "{what} shows the raw token");
        assert!(!body.contains(secret), "{what} shows the token's secret");
        assert!(!body.contains(&hash), "{what} shows the token's hash");
        assert!(!body.contains("token_hash"), "{what} names the hash");
    }
}

async fn operator_tokens_from_the_console(backend: Backend) {
    let h = Harness::start(backend).await;
    let email = h.info.admin_email.clone();
    let password = h.info.admin_password.clone();
    let owner = operator_id(&h, &email).await;
    let b = Browser::login(&h, &email, &password).await;
    let page = b.get("/admin/security").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h2 id=\"tokens\">API tokens</h2>"));
    let (before_list, _) = token_list(&b).await;

    // A bad label is refused with the reason, on the page and in JSON, and
    // writes nothing.
    let long = "x".repeat(121);
    for (label, message) in [
        ("", "label is required"),
        ("   ", "label is required"),
        (
            long.as_str(),
            "label is 121 characters long; at most 120 are allowed",
        ),
        ("line\nbreak", "label must not contain control characters"),
    ] {
        let before = token_state(&h).await;
        let page = b.post("/admin/security/tokens", &[("label", label)]).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{label:?}");
        assert!(page.body.contains(message), "{label:?}: {}", page.body);
        assert!(page.body.contains("no token was created"), "{label:?}");
        let (status, body) =
            post_json(&b, "/admin/api/security/tokens", json!({"label": label})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{label:?}");
        let text = body["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{label:?}: {text}");
        assert_eq!(token_state(&h).await, before, "{label:?}: nothing written");
    }
    let before = token_state(&h).await;
    let (status, _) = post_json(&b, "/admin/api/security/tokens", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a missing label");
    assert_eq!(token_state(&h).await, before);

    // Created on the page: shown once, one audit event naming the operator.
    let created = audits_of(&h, "operator_token.create").await;
    let before = audits(&h).await;
    let page = b
        .post("/admin/security/tokens", &[("label", "  deploy script  ")])
        .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    assert_eq!(audits(&h).await - before, 1, "exactly one audit event");
    assert_eq!(audits_of(&h, "operator_token.create").await, created + 1);
    assert_eq!(
        last_actor(&h, "operator_token.create").await,
        Some(owner.clone())
    );
    let raw = input_value(&page.body, "raw-token");
    assert!(raw.starts_with("op-cxp-"), "{raw}");
    let prefix = raw[..19].to_owned();
    let details = last_details(&h, "operator_token.create").await;
    assert_eq!(details["operator_id"], owner.as_str(), "{details}");
    assert_eq!(details["label"], "deploy script", "{details}");
    assert_eq!(details["prefix"], prefix.as_str(), "{details}");
    let (list, _) = token_list(&b).await;
    assert_eq!(list.len(), before_list.len() + 1);
    let listed = list
        .iter()
        .find(|t| t["prefix"] == prefix.as_str())
        .expect("the new token is listed");
    let id = listed["id"].as_str().expect("id").to_owned();
    assert_eq!(listed["label"], "deploy script");
    assert_eq!(listed["status"], "active");
    assert!(listed["last_used_at"].is_null(), "not used yet: {listed}");
    let page = b.get("/admin/security").await;
    let row = &page.body[page.body.find(&format!("id=\"token-{id}\"")).expect("row")..];
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(
        row.contains("deploy script") && row.contains(&prefix),
        "{row}"
    );
    assert!(row.contains("never"), "never used yet: {row}");
    assert!(row.contains(">active<"), "{row}");
    secret_nowhere(&h, &b, &raw, &id).await;

    // The token works as Bearer, and its use is noted.
    assert_eq!(
        with_bearer(&h, &raw, "/admin/api/pools").await,
        StatusCode::OK
    );
    assert_eq!(
        with_bearer(&h, &raw, "/admin/api/request-logs").await,
        StatusCode::OK
    );
    let (list, _) = token_list(&b).await;
    let listed = list
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("listed");
    let used = listed["last_used_at"].as_i64().expect("last used is set");
    assert!(used >= listed["created_at"].as_i64().expect("created"));
    let page = b.get("/admin/security").await;
    let row = &page.body[page.body.find(&format!("id=\"token-{id}\"")).expect("row")..];
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(!row.contains("never"), "used now: {row}");
    secret_nowhere(&h, &b, &raw, &id).await;

    // Another operator cannot revoke it, nor see it: 404, nothing written.
    control::create_operator(
        &h.app.runtime.store,
        &AuditActor::cli(),
        "other-admin@example.test",
        "other-admin-password-1",
        "admin",
    )
    .await
    .expect("operator");
    let other = Browser::login(&h, "other-admin@example.test", "other-admin-password-1").await;
    let (others, _) = token_list(&other).await;
    assert!(others.is_empty(), "{others:?}");
    let before = token_state(&h).await;
    let page = other
        .post(&format!("/admin/security/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(page.body.contains("no API token of yours has this id"));
    let (status, body) = post_json(
        &other,
        &format!("/admin/api/security/tokens/{id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(token_state(&h).await, before, "nothing written");
    assert!(token_column(&h, "revoked_at", &id).await.is_none());
    assert_eq!(
        with_bearer(&h, &raw, "/admin/api/pools").await,
        StatusCode::OK
    );

    // Revoked by its operator: one audit event, and it stops at once.
    let revoked = audits_of(&h, "operator_token.revoke").await;
    let before = audits(&h).await;
    let page = b
        .post(&format!("/admin/security/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/admin/security?notice=token_revoked#tokens"
        ),
        "{}",
        page.body
    );
    assert_eq!(audits(&h).await - before, 1, "exactly one audit event");
    assert_eq!(audits_of(&h, "operator_token.revoke").await, revoked + 1);
    assert_eq!(
        last_actor(&h, "operator_token.revoke").await,
        Some(owner.clone())
    );
    assert_eq!(
        with_bearer(&h, &raw, "/admin/api/pools").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with_bearer(&h, &raw, "/admin/api/request-logs").await,
        StatusCode::UNAUTHORIZED
    );
    let page = b.get("/admin/security?notice=token_revoked").await;
    assert!(page.body.contains("The API token was revoked"));
    let row = &page.body[page.body.find(&format!("id=\"token-{id}\"")).expect("row")..];
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(row.contains(">revoked<"), "{row}");
    assert!(!row.contains("/revoke"), "no revoke button: {row}");
    let (list, _) = token_list(&b).await;
    let listed = list
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("listed");
    assert_eq!(listed["status"], "revoked");
    assert!(listed["revoked_at"].is_i64());
    secret_nowhere(&h, &b, &raw, &id).await;

    // Revoking it again says so and writes nothing.
    let before = token_state(&h).await;
    let page = b
        .post(&format!("/admin/security/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(page.body.contains("this API token was already revoked"));
    let (status, body) = post_json(
        &b,
        &format!("/admin/api/security/tokens/{id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(token_state(&h).await, before);

    // The JSON twins: create (a 120-character label is the longest allowed),
    // list, revoke.
    let label = "é".repeat(120);
    let before = audits(&h).await;
    let (status, body) = post_json(&b, "/admin/api/security/tokens", json!({"label": label})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(audits(&h).await - before, 1, "exactly one audit event");
    let json_raw = body["token"].as_str().expect("token").to_owned();
    let json_id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["prefix"], &json_raw[..19]);
    assert_eq!(
        body.as_object().expect("object").len(),
        3,
        "id, token, prefix: {body}"
    );
    let (list, _) = token_list(&b).await;
    let listed = list
        .iter()
        .find(|t| t["id"] == json_id.as_str())
        .expect("listed");
    assert_eq!(listed["label"], label.as_str());
    assert_eq!(listed["status"], "active");
    secret_nowhere(&h, &b, &json_raw, &json_id).await;
    assert_eq!(
        with_bearer(&h, &json_raw, "/admin/api/security/tokens").await,
        StatusCode::OK
    );
    // Revoked through the API with itself as the credential (no CSRF for a
    // Bearer call).
    let before = audits(&h).await;
    let r = h
        .http
        .post(format!(
            "{}/admin/api/security/tokens/{json_id}/revoke",
            h.app.base_url()
        ))
        .bearer_auth(&json_raw)
        .json(&json!({}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({"token_id": json_id, "revoked": true}));
    assert_eq!(audits(&h).await - before, 1, "exactly one audit event");
    assert_eq!(
        with_bearer(&h, &json_raw, "/admin/api/pools").await,
        StatusCode::UNAUTHORIZED
    );
    // A session-made JSON revoke of an unknown id is a 404.
    let before = token_state(&h).await;
    let (status, _) = post_json(
        &b,
        "/admin/api/security/tokens/no-such-token/revoke",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(token_state(&h).await, before);
    h.stop().await;
}
on_both_backends!(
    operator_tokens_are_created_listed_and_revoked_from_the_console,
    operator_tokens_from_the_console
);

/// Setting up two-factor asks for the password again; the owner can turn an
/// operator's two-factor off (a lost authenticator), once, audited.
async fn two_factor_setup_and_owner_reset(backend: Backend) {
    let h = Harness::start(backend).await;
    let cli = AuditActor::cli();
    let store = &h.app.runtime.store;
    let admin_id = control::create_operator(
        store,
        &cli,
        "twofa@example.test",
        "twofa-password-1",
        "admin",
    )
    .await
    .expect("admin");
    let a = Browser::login(&h, "twofa@example.test", "twofa-password-1").await;
    let before = security_state(&h).await;
    let page = a
        .post(
            "/admin/security/totp/setup",
            &[("current_password", "not-it")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("two-factor sign-in was not set up"));
    assert_eq!(security_state(&h).await, before, "nothing written");
    let page = a
        .post(
            "/admin/security/totp/setup",
            &[("current_password", "twofa-password-1")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let page = a
        .post(
            "/admin/security/totp/enable",
            &[("code", &pending_code(&h, &admin_id).await)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let owner = Browser::login(&h, &h.info.admin_email, &h.info.admin_password).await;
    let page = owner.get("/admin/operators").await;
    assert!(page.body.contains(&format!(
        "action=\"/admin/operators/{admin_id}/totp-reset\""
    )));
    // An admin cannot reset anyone's.
    let page = a
        .post(&format!("/admin/operators/{admin_id}/totp-reset"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let resets = audits_of(&h, "operator.totp_reset").await;
    let page = owner
        .post(&format!("/admin/operators/{admin_id}/totp-reset"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(audits_of(&h, "operator.totp_reset").await, resets + 1);
    assert!(!store.totp_enabled(&admin_id).await.expect("lookup"));
    let page = owner
        .post(&format!("/admin/operators/{admin_id}/totp-reset"), &[])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("not on for this operator"));
    // The password alone signs them in again.
    Browser::login(&h, "twofa@example.test", "twofa-password-1").await;
    h.stop().await;
}
on_both_backends!(
    two_factor_setup_needs_the_password_and_the_owner_can_reset_it,
    two_factor_setup_and_owner_reset
);

/// Ten failed sign-ins for one email from one address: the password step is
/// refused for the rest of the 15 minutes, even with the right password,
/// while other emails still sign in; nothing is written either way.
async fn failed_sign_ins_are_throttled(backend: Backend) {
    let h = Harness::start(backend).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = |email: String, password: String| {
        let client = client.clone();
        let url = format!("{}/login", h.app.base_url());
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    serde_urlencoded::to_string([("email", email), ("password", password)])
                        .unwrap(),
                )
                .send()
                .await
                .expect("login");
            let status = r.status();
            (status, r.text().await.unwrap_or_default())
        }
    };
    control::create_operator(
        &h.app.runtime.store,
        &AuditActor::cli(),
        "other@example.test",
        "other-password-1",
        "admin",
    )
    .await
    .expect("operator");
    let before = security_state(&h).await;
    for _ in 0..10 {
        let (status, _) = login(h.info.admin_email.clone(), "wrong".into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = login(h.info.admin_email.clone(), h.info.admin_password.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body.contains("Too many failed sign-ins for this email"),
        "{body}"
    );
    assert_eq!(security_state(&h).await, before, "nothing written");
    let (status, _) = login("other@example.test".into(), "other-password-1".into()).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "another email is not affected"
    );
    h.stop().await;
}
on_both_backends!(
    ten_failed_sign_ins_throttle_the_password_step,
    failed_sign_ins_are_throttled
);
