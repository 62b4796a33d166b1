//! Accounting: the ledger (reservation, settlement, release, replacement of
//! a usage-unknown settlement), the rollups against the request rows after
//! randomised traffic, pricing snapshots and their reload, and the key's own
//! usage views.

use codex_pooler::control;
use codex_pooler::store::{
    AuditActor, KeyPolicy, NewAttempt, NewRequest, RecordEvent, RequestEnd, Settlement,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, Harness, text_request};

/// Outcomes the randomised traffic draws from.
const MIX: &[&str] = &[
    "text",
    "text",
    "reasoning",
    "json",
    "incomplete_max_tokens",
    "incomplete_content_filter",
    "incomplete_context_length",
    "empty_output",
    "failed_after_content",
    "bad_request_param",
    "truncate_eof",
    "retry_http_502",
    "retry_failed_first",
    "rejected",
    "usage_read",
];

async fn one_random_request(h: &Harness, outcome: &str, seed: &str, first: &str, denied_key: &str) {
    // Most outcomes ride on the simulator's `SIM:<scenario>` prompt marker
    // (every attempt of this request); a retry that then succeeds is queued
    // on the account the request goes to first.
    let marker = match outcome {
        "json" | "text" | "rejected" | "usage_read" | "retry_http_502" | "retry_failed_first" => {
            "text"
        }
        scenario => scenario,
    };
    let mut body = text_request(&format!("randomised accounting traffic SIM:{marker}"), seed);
    let mut key = h.info.api_key.as_str();
    match outcome {
        "json" => body["stream"] = json!(false),
        "rejected" => key = denied_key,
        "usage_read" => {
            let r = h
                .http
                .get(h.url("/v1/usage"))
                .bearer_auth(&h.info.api_key)
                .send()
                .await
                .expect("usage");
            assert_eq!(r.status(), 200);
            return;
        }
        "retry_http_502" => h
            .sim
            .queue_scenario(first, "http_502", 1)
            .expect("scenario"),
        "retry_failed_first" => h
            .sim
            .queue_scenario(first, "failed_first", 1)
            .expect("scenario"),
        _ => {}
    }
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    // Read the whole answer so the request finishes as the client saw it.
    let _ = r.bytes().await;
}

async fn rollups_equal_request_rows(backend: Backend) {
    // Six accounts, and upstream 5xx only as single retried attempts: three
    // 5xx in a row on one account would open its circuit (by design) and
    // turn the rest of the run into `no_eligible_backend` rejections.
    let h = Harness::start_with(backend, 6, |_| {}).await;
    let store = &h.app.runtime.store;
    let actor = AuditActor::cli();
    let (_, denied_key) = control::create_api_key(
        store,
        &actor,
        &h.info.pool_id,
        "denied",
        Some(vec!["some-other-model".into()]),
        None,
    )
    .await
    .expect("key");
    let seeds: Vec<String> = (0..8).map(|i| format!("acct-seed-{i}")).collect();
    let mut firsts = Vec::new();
    for seed in &seeds {
        firsts.push(h.account_order(seed).await[0].clone());
    }
    let rng_seed: u64 = rand::rng().random();
    eprintln!("randomised accounting traffic, seed {rng_seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    let plan: Vec<(usize, &str)> = (0..1000)
        .map(|_| {
            (
                rng.random_range(0..seeds.len()),
                MIX[rng.random_range(0..MIX.len())],
            )
        })
        .collect();
    // Eight clients at a time; each takes every eighth planned request.
    let workers = (0..8).map(|w| {
        let plan = &plan;
        let (h, seeds, firsts, denied_key) = (&h, &seeds, &firsts, &denied_key);
        async move {
            for (s, outcome) in plan.iter().skip(w).step_by(8) {
                one_random_request(h, outcome, &seeds[*s], &firsts[*s], denied_key).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
    h.flush().await;

    let rows = h.request_logs().await;
    assert!(!rows.is_empty());
    let mismatches = store.check_rollups(0).await.expect("check");
    assert!(
        mismatches.is_empty(),
        "rollups differ from the rows: {mismatches:#?}"
    );

    let mut retried = 0;
    let mut codes = std::collections::BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let page: Value = h
            .http
            .get(h.url(&format!("/admin/api/request-logs?limit=200{cursor}")))
            .bearer_auth(&h.info.operator_token)
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        let rows = page["data"].as_array().expect("rows");
        retried += rows
            .iter()
            .filter(|r| r["retry_count"].as_i64().unwrap_or(0) > 0)
            .count();
        for r in rows {
            *codes
                .entry(format!(
                    "{}/{}/{}",
                    r["status"], r["last_error_code"], r["retry_count"]
                ))
                .or_insert(0) += 1;
        }
        match page["next_before"].as_str() {
            Some(next) if !rows.is_empty() => cursor = format!("&before={next}"),
            _ => break,
        }
    }
    eprintln!("{retried} requests were retried on another account: {codes:#?}");
    // The mix really covered every kind of outcome.
    let totals = store.hourly_rollup_totals(None, 0).await.expect("totals");
    assert_eq!(totals.request_count, 1000, "{totals:?}");
    assert!(totals.succeeded_count > 100, "{totals:?}");
    assert!(totals.failed_count > 50, "{totals:?}");
    assert!(totals.rejected_count > 20, "{totals:?}");
    assert!(totals.usage_known_count > 100 && totals.usage_known_count < totals.metered_count);
    assert!(totals.total_tokens > 0 && totals.settled_cost_micros > 0);
    // (Fewer than planned: once an account's circuit opens, requests skip it.)
    assert!(retried > 0, "requests were retried on other accounts");

    // A rebuild lands on the same totals, and is audited.
    let rebuilt = store.rebuild_rollups(&actor, 0).await.expect("rebuild");
    assert!(rebuilt.hourly_rows >= 1 && rebuilt.daily_rows >= 1);
    assert_eq!(
        store
            .count_audit_events("rollups.rebuild")
            .await
            .expect("audit"),
        1
    );
    assert!(store.check_rollups(0).await.expect("check").is_empty());
    assert_eq!(
        store.hourly_rollup_totals(None, 0).await.expect("totals"),
        totals
    );
    h.stop().await;
}
on_both_backends!(rollups_after_randomised_traffic, rollups_equal_request_rows);

fn new_request(pool_id: &str, api_key_id: &str, admitted_at: i64, estimated: bool) -> NewRequest {
    let id = uuid::Uuid::now_v7().to_string();
    NewRequest {
        correlation_id: id.clone(),
        id,
        pool_id: pool_id.into(),
        api_key_id: Some(api_key_id.into()),
        api_key_prefix: None,
        api_key_label: Some("synthetic".into()),
        endpoint: "/backend-api/codex/responses".into(),
        transport: "http_sse".into(),
        status: "in_progress".into(),
        usage_status: "usage_pending".into(),
        requested_model: "gpt-5.5".into(),
        reasoning_effort: None,
        service_tier: None,
        admitted_at,
        completed_at: None,
        response_status_code: None,
        last_error_code: None,
        client_request_id: None,
        user_agent: None,
        request_metadata: "{}".into(),
        estimated_cost_micros: estimated.then_some(100),
        estimated_tokens: estimated.then_some(600),
        window_reserved: false,
    }
}

fn end(request_id: &str, status: &'static str, usage: Option<i64>) -> RequestEnd {
    RequestEnd {
        request_id: request_id.into(),
        status,
        response_status_code: Some(if status == "succeeded" { 200 } else { 502 }),
        retry_count: 0,
        last_error_code: (status != "succeeded").then(|| "upstream_error".into()),
        completed_at: codex_pooler::time::now_ms(),
        routing_ms: Some(1),
        upstream_ms: Some(2),
        first_byte_ms: Some(2),
        total_ms: 3,
        settlement: match usage {
            Some(tokens) => Settlement {
                usage_status: "usage_known",
                input_tokens: Some(tokens / 2),
                cached_input_tokens: Some(0),
                output_tokens: Some(tokens - tokens / 2),
                reasoning_tokens: Some(0),
                total_tokens: Some(tokens),
                settled_cost_micros: Some(tokens * 3),
                pricing_status: Some("priced".into()),
                ..Settlement::default()
            },
            None => Settlement {
                usage_status: "usage_unknown",
                ..Settlement::default()
            },
        },
        metadata_patch: None,
    }
}

fn attempt(request_id: &str, identity: (&str, &str), at: i64) -> NewAttempt {
    NewAttempt {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: request_id.into(),
        attempt_number: 1,
        assignment_id: identity.1.into(),
        identity_id: identity.0.into(),
        identity_label: "acct".into(),
        identity_email: None,
        identity_plan: Some("pro".into()),
        started_at: at,
    }
}

/// Ledger entries as `(kind, amount_status, usage_status)`.
async fn ledger(h: &Harness, request_id: &str) -> Vec<(String, String, String)> {
    h.app
        .runtime
        .store
        .ledger_entries_of(request_id)
        .await
        .expect("ledger")
        .into_iter()
        .map(|(k, a, u, _, _)| (k, a, u))
        .collect()
}

fn entry(kind: &str, amount: &str, usage: &str) -> (String, String, String) {
    (kind.into(), amount.into(), usage.into())
}

async fn ledger_lifecycle(backend: Backend) {
    let h = Harness::start(backend).await;
    let store = &h.app.runtime.store;
    let pool = h
        .app
        .runtime
        .pool(&h.info.pool_id)
        .await
        .expect("pool")
        .expect("exists");
    let identity = (
        pool.candidates[0].identity.id.as_str(),
        pool.candidates[0].assignment_id.as_str(),
    );
    let now = codex_pooler::time::now_ms();
    let instance = "test-instance";
    let (key_id, _) = control::create_api_key(
        store,
        &AuditActor::cli(),
        &h.info.pool_id,
        "ledger",
        None,
        None,
    )
    .await
    .expect("key");

    // Settled across two batches: reservation, then one settlement even when
    // the end arrives twice.
    let ok = new_request(&h.info.pool_id, &key_id, now - 3 * 86_400_000, true);
    store
        .apply_record_batch(
            &[
                RecordEvent::Request(Box::new(ok.clone())),
                RecordEvent::AttemptStarted(Box::new(attempt(&ok.id, identity, now))),
            ],
            instance,
        )
        .await
        .expect("batch");
    let done = end(&ok.id, "succeeded", Some(1000));
    for _ in 0..2 {
        store
            .apply_record_batch(
                &[RecordEvent::RequestEnded(Box::new(done.clone()))],
                instance,
            )
            .await
            .expect("batch");
    }
    assert_eq!(
        ledger(&h, &ok.id).await,
        vec![
            entry("reservation", "recorded", "usage_pending"),
            entry("settlement", "recorded", "usage_known")
        ]
    );
    assert_eq!(store.count_settlements(&ok.id).await.expect("count"), 1);

    // Failed without usage in one batch: reservation, settlement without
    // usage, release.
    let failed = new_request(&h.info.pool_id, &key_id, now - 86_400_000, true);
    store
        .apply_record_batch(
            &[
                RecordEvent::Request(Box::new(failed.clone())),
                RecordEvent::RequestEnded(Box::new(end(&failed.id, "failed", None))),
            ],
            instance,
        )
        .await
        .expect("batch");
    assert_eq!(
        ledger(&h, &failed.id).await,
        vec![
            entry("reservation", "recorded", "usage_pending"),
            entry("settlement", "recorded", "usage_unknown"),
            entry("release", "recorded", "usage_unknown"),
        ]
    );
    assert!(store.check_rollups(0).await.expect("check").is_empty());

    // A later usage-known settlement replaces the usage-unknown one: the old
    // settlement is voided, the row and the rollups take the real usage.
    let before = store.hourly_rollup_totals(None, 0).await.expect("totals");
    store
        .apply_record_batch(
            &[RecordEvent::RequestEnded(Box::new(end(
                &failed.id,
                "succeeded",
                Some(400),
            )))],
            instance,
        )
        .await
        .expect("batch");
    let entries = ledger(&h, &failed.id).await;
    assert!(
        entries.contains(&entry("settlement", "voided", "usage_unknown")),
        "{entries:?}"
    );
    assert!(
        entries.contains(&entry("settlement", "recorded", "usage_known")),
        "{entries:?}"
    );
    assert_eq!(store.count_settlements(&failed.id).await.expect("count"), 1);
    let row = h.request_log(&failed.id).await["request"].clone();
    assert_eq!(row["usage_status"], "usage_known");
    assert_eq!(row["total_tokens"], 400);
    assert_eq!(row["settled_cost_micros"], 1200);
    let after = store.hourly_rollup_totals(None, 0).await.expect("totals");
    assert_eq!(after.total_tokens, before.total_tokens + 400);
    assert_eq!(after.settled_cost_micros, before.settled_cost_micros + 1200);
    assert_eq!(after.request_count, before.request_count);
    assert_eq!(after.usage_known_count, before.usage_known_count + 1);
    assert!(store.check_rollups(0).await.expect("check").is_empty());
    // ...and it happens once: the same late settlement again changes nothing.
    store
        .apply_record_batch(
            &[RecordEvent::RequestEnded(Box::new(end(
                &failed.id,
                "succeeded",
                Some(400),
            )))],
            instance,
        )
        .await
        .expect("batch");
    assert_eq!(
        store.hourly_rollup_totals(None, 0).await.expect("totals"),
        after
    );

    // A request orphaned by a stopped instance is settled by the recovery.
    let orphan = new_request(&h.info.pool_id, &key_id, now, true);
    store
        .apply_record_batch(
            &[RecordEvent::Request(Box::new(orphan.clone()))],
            "gone-instance",
        )
        .await
        .expect("batch");
    let recovered = store
        .recover_orphaned_requests(&h.app.runtime.instance_id, now + 1)
        .await
        .expect("recover");
    assert!(recovered >= 1);
    assert_eq!(
        ledger(&h, &orphan.id).await,
        vec![
            entry("reservation", "recorded", "usage_pending"),
            entry("settlement", "recorded", "usage_unknown"),
            entry("release", "recorded", "usage_unknown"),
        ]
    );
    assert!(store.check_rollups(0).await.expect("check").is_empty());

    // Rollups are per UTC day and hour of admission: three days here.
    let daily = store.key_window_usage(&key_id, 0).await.expect("usage");
    assert_eq!(daily.measures.request_count, 3);
    let recent = store
        .key_window_usage(&key_id, now - 86_400_000)
        .await
        .expect("usage");
    assert_eq!(recent.measures.request_count, 2);
    h.stop().await;
}
on_both_backends!(ledger, ledger_lifecycle);

async fn pricing_snapshots(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let store = &rt.store;
    let listed = store.list_pricing_snapshots().await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "the bundled table is imported on first start"
    );
    assert_eq!(listed[0].source, "bundled");
    assert_eq!(rt.prices().snapshot_version, Some(listed[0].version));

    // A newer table with gpt-5.5 at twice the output price.
    let mut table: Value =
        serde_json::from_str(codex_pooler::domain::pricing::BUNDLED_PRICING_JSON).expect("json");
    table["version"] = json!("test-doubled-output");
    let standard = &mut table["models"]["gpt-5.5"]["standard"]["default"];
    let output = standard["output"].as_f64().expect("output price");
    standard["output"] = json!(output * 2.0);
    let path = h.data_dir.join("newer-pricing.json");
    std::fs::write(&path, serde_json::to_vec(&table).expect("json")).expect("write");
    let actor = AuditActor::cli();
    let imported = codex_pooler::accounting::import_price_file(store, &actor, &path)
        .await
        .expect("import");
    assert!(imported.created);
    assert_eq!(imported.snapshot_version, listed[0].version + 1);
    let again = codex_pooler::accounting::import_price_file(store, &actor, &path)
        .await
        .expect("import again");
    assert!(!again.created, "the same table is not stored twice");

    // Bad files get a precise error and store nothing.
    let bad = h.data_dir.join("bad-pricing.json");
    std::fs::write(
        &bad,
        r#"{"version":"x","models":{"m":{"standard":{"default":{"input":"cheap"}}}}}"#,
    )
    .expect("write");
    let err = codex_pooler::accounting::import_price_file(store, &actor, &bad)
        .await
        .expect_err("bad table");
    assert!(
        format!("{err:#}").contains("models.m.standard.default.input is not a number"),
        "{err:#}"
    );
    std::fs::write(&bad, "not json").expect("write");
    let err = codex_pooler::accounting::import_price_file(store, &actor, &bad)
        .await
        .expect_err("not json");
    assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    assert_eq!(store.list_pricing_snapshots().await.expect("list").len(), 2);

    // The running gateway loads it; a request is priced with it.
    let r = h.responses(&text_request("priced before", "p1")).await;
    let before_id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    assert!(
        codex_pooler::accounting::reload_prices_if_newer(rt)
            .await
            .expect("reload")
    );
    assert_eq!(
        rt.prices().snapshot_version,
        Some(imported.snapshot_version)
    );
    let r = h.responses(&text_request("priced after", "p1")).await;
    let after_id = r.headers()["x-codex-pooler-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let _ = r.text().await;
    let before = h.request_log(&before_id).await["request"].clone();
    let after = h.request_log(&after_id).await["request"].clone();
    assert_eq!(before["output_tokens"], after["output_tokens"]);
    assert!(
        after["settled_cost_micros"].as_i64().expect("cost")
            > before["settled_cost_micros"].as_i64().expect("cost"),
        "{before} vs {after}"
    );

    // The import is in the audit log, once.
    assert_eq!(
        store
            .count_audit_events("pricing.import")
            .await
            .expect("audit"),
        2
    );
    h.stop().await;
}
on_both_backends!(pricing, pricing_snapshots);

async fn key_usage_views(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let actor = AuditActor::cli();
    let (key_id, key) =
        control::create_api_key(&rt.store, &actor, &h.info.pool_id, "metered", None, None)
            .await
            .expect("key");
    rt.store
        .set_key_policy(
            &actor,
            &key_id,
            &KeyPolicy {
                max_requests_per_minute: Some(5),
                max_tokens_per_day: Some(1_000_000),
                max_tokens_per_week: Some(2_000_000),
                max_output_tokens_per_request: Some(4096),
                ..KeyPolicy::default()
            },
        )
        .await
        .expect("policy");
    rt.invalidate_caches();
    // The demo key's traffic is not this key's.
    let _ = h
        .responses(&text_request("someone else's", "u0"))
        .await
        .text()
        .await;
    for i in 0..2 {
        let r = h
            .http
            .post(h.url("/backend-api/codex/responses"))
            .bearer_auth(&key)
            .json(&text_request("metered", &format!("u{i}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    h.flush().await;

    let usage: Value = h
        .http
        .get(h.url("/v1/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(usage["request_count"], 2, "{usage}");
    assert!(usage["total_tokens"].as_i64().expect("tokens") > 0);
    assert_eq!(usage["total_cost_status"], "complete", "{usage}");
    let limits = usage["limits"].as_array().expect("limits");
    let rpm = limits
        .iter()
        .find(|l| l["limit"] == "max_requests_per_minute")
        .expect("rpm limit listed");
    assert_eq!(rpm["allowed"], 5);
    assert_eq!(rpm["used"], 2);
    assert_eq!(rpm["remaining"], 3);
    let day = limits
        .iter()
        .find(|l| l["limit"] == "max_tokens_per_day")
        .expect("day");
    assert_eq!(day["used"], usage["total_tokens"], "{usage}");
    assert!(
        limits
            .iter()
            .any(|l| l["limit"] == "max_output_tokens_per_request" && l["window"] == "per request")
    );

    for path in ["/backend-api/wham/usage", "/wham/usage", "/api/codex/usage"] {
        let r = h
            .http
            .get(h.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .expect("usage");
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["plan_type"], "api_key", "{path}: {body}");
        assert_eq!(body["rate_limit"]["allowed"], true);
        // Two of five requests in the minute is the most used short window.
        assert_eq!(
            body["rate_limit"]["primary_window"]["used_percent"], 40.0,
            "{body}"
        );
        assert_eq!(
            body["rate_limit"]["primary_window"]["limit_window_seconds"],
            60
        );
        assert_eq!(
            body["rate_limit"]["secondary_window"]["limit_window_seconds"],
            604_800
        );
    }
    // Without a key: 401, and no row.
    let r = h
        .http
        .get(h.url("/backend-api/wham/usage"))
        .send()
        .await
        .expect("usage");
    assert_eq!(r.status(), 401);
    // A paused key is refused with the usual code.
    rt.store
        .set_api_key_status(&actor, &key_id, "paused")
        .await
        .expect("pause");
    rt.invalidate_caches();
    let r = h
        .http
        .get(h.url("/backend-api/wham/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("usage");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "api_key_paused", "{body}");
    h.stop().await;
}
on_both_backends!(key_usage, key_usage_views);

async fn seeding_and_retention(backend: Backend) {
    let h = Harness::start(backend).await;
    let rt = &h.app.runtime;
    let store = &rt.store;
    let actor = AuditActor::cli();
    let seeded = codex_pooler::seeding::seed_request_logs(store, &actor, 3_000, 40, |_| {})
        .await
        .expect("seed");
    assert_eq!(seeded.rows, 3_000);
    assert!(store.check_rollups(0).await.expect("check").is_empty());
    let timings = codex_pooler::seeding::time_filters(store, 1)
        .await
        .expect("timings");
    assert_eq!(timings.len(), 16);
    assert!(timings.iter().all(|t| t.rows >= 1), "{timings:?}");
    let totals = store.hourly_rollup_totals(None, 0).await.expect("totals");
    assert_eq!(totals.request_count, 3_000);

    // An old row and a recent one, each findable by a fragment of its id.
    let all = |before: Option<i64>| codex_pooler::store::RequestLogFilter {
        admitted_before: before,
        ..Default::default()
    };
    let cutoff = codex_pooler::store::day_floor(
        codex_pooler::time::now_ms()
            - i64::from(rt.settings.request_log_retention_days) * 86_400_000,
    );
    let old = store
        .list_request_logs_filtered(&all(Some(cutoff)), 1, None, None)
        .await
        .expect("old")
        .remove(0);
    let recent = store
        .list_request_logs_filtered(&all(None), 1, None, None)
        .await
        .expect("recent")
        .remove(0);
    let by_fragment = |id: &str| codex_pooler::store::RequestLogFilter {
        request_id: Some(id[id.len() - 12..].to_owned()),
        ..Default::default()
    };
    for row in [&old, &recent] {
        let found = store
            .list_request_logs_filtered(&by_fragment(&row.id), 50, None, None)
            .await
            .expect("search");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, row.id);
    }

    // Retention prunes whole days past the limit, keeps the rest, and the
    // rollups keep every total.
    let deleted = codex_pooler::jobs::prune_request_logs_once(rt)
        .await
        .expect("prune");
    assert!(deleted > 300, "about ten of forty days go: {deleted}");
    let left = store
        .list_request_logs_filtered(&all(Some(cutoff)), 1, None, None)
        .await
        .expect("old");
    assert!(left.is_empty(), "nothing older than the retention is left");
    assert_eq!(
        store.hourly_rollup_totals(None, 0).await.expect("totals"),
        totals
    );
    let gone = store
        .list_request_logs_filtered(&by_fragment(&old.id), 50, None, None)
        .await
        .expect("search");
    assert!(
        gone.is_empty(),
        "a pruned row is not found by its id any more"
    );
    let kept = store
        .list_request_logs_filtered(&by_fragment(&recent.id), 50, None, None)
        .await
        .expect("search");
    assert_eq!(kept.len(), 1);
    // The rollups of the retained days still match their rows.
    assert!(store.check_rollups(cutoff).await.expect("check").is_empty());
    h.stop().await;
}
on_both_backends!(seeding_retention, seeding_and_retention);
