//! Scale checks for the request log. `codex-pooler request-logs seed` fills
//! the database with synthetic finished rows (four Pools, three keys each,
//! sixteen accounts, six models, spread over the last days, with the usage
//! rollups rebuilt to match); `request-logs time-filters` times the first
//! page of the Request logs query with each filter alone and all combined,
//! as the owner and as an admin assigned to two of the Pools.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::control;
use crate::store::{AuditActor, RequestLogFilter, SeedRow, Store};
use crate::time::now_ms;

const SEED_POOLS: [&str; 4] = ["scale-1", "scale-2", "scale-3", "scale-4"];
const SEED_ADMIN: &str = "scale-admin@seed.codex-pooler.test";
/// Models with their weights (the last ones are rare).
const SEED_MODELS: [(&str, u32); 6] = [
    ("gpt-5.5", 40),
    ("gpt-5.4", 25),
    ("gpt-5.3-codex", 20),
    ("gpt-5.4-mini", 10),
    ("gpt-5.2", 4),
    ("o4-mini", 1),
];
/// Rows written per transaction.
const SEED_CHUNK: usize = 20_000;

/// What the seeding wrote.
#[derive(Debug, Clone)]
pub struct SeedSummary {
    pub rows: u64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub seconds: f64,
}

struct SeedKey {
    id: String,
    prefix: String,
    label: String,
}

async fn seed_pool(
    store: &Store,
    actor: &AuditActor,
    slug: &str,
) -> anyhow::Result<(String, Vec<SeedKey>)> {
    let pool = match store.find_pool(slug).await? {
        Some(p) => p,
        None => {
            store
                .create_pool(actor, slug, &format!("Scale {slug}"))
                .await?
        }
    };
    let mut keys = Vec::new();
    for k in 0..3 {
        let label = format!("{slug}-key-{k}");
        let (id, raw) = control::create_api_key(store, actor, &pool.id, &label, None, None).await?;
        let prefix = crate::domain::keys::parse(crate::domain::keys::API_KEY_KIND, &raw)
            .map(|p| p.prefix)
            .ok_or_else(|| anyhow::anyhow!("generated key has an unexpected shape"))?;
        keys.push(SeedKey { id, prefix, label });
    }
    Ok((pool.id, keys))
}

/// Writes `rows` synthetic finished requests admitted over the last `days`
/// days, then rebuilds the rollups over them.
pub async fn seed_request_logs(
    store: &Store,
    actor: &AuditActor,
    rows: u64,
    days: u32,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<SeedSummary> {
    let started = Instant::now();
    let mut pools = Vec::new();
    for slug in SEED_POOLS {
        pools.push(seed_pool(store, actor, slug).await?);
    }
    if store.find_operator_by_email(SEED_ADMIN).await?.is_none() {
        let admin_id = control::create_operator(
            store,
            actor,
            SEED_ADMIN,
            &control::generate_password(),
            "admin",
        )
        .await?;
        for (pool_id, _) in pools.iter().take(2) {
            store
                .assign_operator_pool(actor, &admin_id, pool_id)
                .await?;
        }
    }
    let accounts: Vec<(String, String)> = (0..16)
        .map(|i| (crate::time::new_id(), format!("seed-account-{i:02}")))
        .collect();
    let to_ms = now_ms();
    let from_ms = to_ms - i64::from(days.max(1)) * 86_400_000;
    let step = ((to_ms - from_ms) / rows.max(1) as i64).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(rows ^ u64::from(days));
    let weight_total: u32 = SEED_MODELS.iter().map(|(_, w)| w).sum();
    let mut batch = Vec::with_capacity(SEED_CHUNK);
    for i in 0..rows {
        let admitted_at = from_ms + i as i64 * step + rng.random_range(0..step);
        let (pool_id, keys) = &pools[rng.random_range(0..pools.len())];
        let key = &keys[rng.random_range(0..keys.len())];
        let mut pick = rng.random_range(0..weight_total);
        let model = SEED_MODELS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or("gpt-5.5", |(m, _)| m);
        let roll = rng.random_range(0..100);
        let (status, usage_status, code, error) = match roll {
            0..85 => ("succeeded", "usage_known", 200, None),
            85..93 => ("failed", "usage_unknown", 502, Some("upstream_error")),
            93..98 => ("rejected", "not_applicable", 403, Some("model_not_allowed")),
            _ => ("failed", "usage_unknown", 499, Some("client_disconnected")),
        };
        let account =
            (status != "rejected").then(|| &accounts[rng.random_range(0..accounts.len())]);
        let known = usage_status == "usage_known";
        let input = rng.random_range(200..40_000);
        let output = rng.random_range(20..4_000);
        let seconds = (admitted_at / 1000) as u64;
        let nanos = ((admitted_at % 1000) * 1_000_000) as u32;
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, nanos))
            .to_string();
        batch.push(SeedRow {
            id,
            pool_id: pool_id.clone(),
            api_key_id: key.id.clone(),
            api_key_prefix: key.prefix.clone(),
            api_key_label: key.label.clone(),
            endpoint: "/backend-api/codex/responses",
            transport: if roll % 3 == 0 {
                "websocket"
            } else {
                "http_sse"
            },
            status,
            usage_status,
            model,
            reasoning_effort: Some(["low", "medium", "high"][rng.random_range(0..3)]),
            admitted_at,
            total_ms: rng.random_range(300..60_000),
            response_status_code: code,
            last_error_code: error,
            identity_id: account.map(|a| a.0.clone()),
            identity_label: account.map(|a| a.1.clone()),
            plan: account.map(|_| "pro"),
            input_tokens: known.then_some(input),
            cached_input_tokens: known.then_some(input / 2),
            output_tokens: known.then_some(output),
            reasoning_tokens: known.then_some(output / 4),
            total_tokens: known.then_some(input + output),
            settled_cost_micros: known.then_some(input * 2 + output * 10),
            client_request_id: rng
                .random_bool(0.3)
                .then(|| format!("req_{:016x}", rng.random::<u64>())),
        });
        if batch.len() == SEED_CHUNK {
            store.insert_seed_rows(&batch).await?;
            batch.clear();
            progress(i + 1);
        }
    }
    if !batch.is_empty() {
        store.insert_seed_rows(&batch).await?;
        progress(rows);
    }
    store.rebuild_rollups(actor, from_ms).await?;
    store.analyze_requests().await?;
    Ok(SeedSummary {
        rows,
        from_ms,
        to_ms,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One timed query: its label and the median milliseconds as the owner and
/// as the assigned admin.
#[derive(Debug, Clone)]
pub struct FilterTiming {
    pub label: String,
    pub owner_ms: f64,
    pub admin_ms: f64,
    pub rows: usize,
}

async fn median_ms(
    store: &Store,
    filter: &RequestLogFilter,
    scope: Option<&str>,
    runs: usize,
) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        rows = store
            .list_request_logs_filtered(filter, 51, None, scope)
            .await?
            .len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], rows))
}

/// Times the first page (51 rows: a page and the look-ahead) with each
/// filter alone and with all combined, from values found in the data.
pub async fn time_filters(store: &Store, runs: usize) -> anyhow::Result<Vec<FilterTiming>> {
    let admin = store
        .find_operator_by_email(SEED_ADMIN)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("no seeded data: run `codex-pooler request-logs seed` first")
        })?;
    let pool = store
        .find_pool(SEED_POOLS[0])
        .await?
        .ok_or_else(|| anyhow::anyhow!("no seeded data"))?;
    // A sample row of the first Pool with an account and a client request id.
    let recent = store
        .list_request_logs_filtered(
            &RequestLogFilter {
                pool_id: Some(pool.id.clone()),
                status: Some("succeeded".into()),
                ..RequestLogFilter::default()
            },
            200,
            None,
            None,
        )
        .await?;
    let sample = recent
        .iter()
        .find(|r| r.client_request_id.is_some() && r.upstream_identity_id.is_some())
        .ok_or_else(|| anyhow::anyhow!("no sample row"))?;
    let now = now_ms();
    let day = 86_400_000;
    let from = now - now.rem_euclid(day) - 7 * day;
    let before = now - now.rem_euclid(day) - 2 * day;
    let tail = &sample.id[sample.id.len() - 12..];
    let combined = RequestLogFilter {
        pool_id: Some(pool.id.clone()),
        status: Some("succeeded".into()),
        upstream_identity_id: sample.upstream_identity_id.clone(),
        model: Some(sample.requested_model.clone()),
        api_key: sample.api_key_prefix.clone(),
        request_id: None,
        admitted_from: Some(from),
        admitted_before: Some(now + day),
    };
    let cases: Vec<(String, RequestLogFilter)> = vec![
        ("no filter".into(), RequestLogFilter::default()),
        (
            "Pool".into(),
            RequestLogFilter {
                pool_id: Some(pool.id.clone()),
                ..Default::default()
            },
        ),
        (
            "Status failed".into(),
            RequestLogFilter {
                status: Some("failed".into()),
                ..Default::default()
            },
        ),
        (
            "Status rejected".into(),
            RequestLogFilter {
                status: Some("rejected".into()),
                ..Default::default()
            },
        ),
        (
            "Upstream account".into(),
            RequestLogFilter {
                upstream_identity_id: sample.upstream_identity_id.clone(),
                ..Default::default()
            },
        ),
        (
            "Model (common)".into(),
            RequestLogFilter {
                model: Some("gpt-5.5".into()),
                ..Default::default()
            },
        ),
        (
            "Model (rare, 1%)".into(),
            RequestLogFilter {
                model: Some("o4-mini".into()),
                ..Default::default()
            },
        ),
        (
            "API key prefix".into(),
            RequestLogFilter {
                api_key: sample.api_key_prefix.clone(),
                ..Default::default()
            },
        ),
        (
            "API key label".into(),
            RequestLogFilter {
                api_key: sample.api_key_label.clone(),
                ..Default::default()
            },
        ),
        (
            "Row id (whole)".into(),
            RequestLogFilter {
                request_id: Some(sample.id.clone()),
                ..Default::default()
            },
        ),
        (
            "Row id fragment (short id)".into(),
            RequestLogFilter {
                request_id: Some(tail.to_owned()),
                ..Default::default()
            },
        ),
        (
            "Client x-request-id".into(),
            RequestLogFilter {
                request_id: sample.client_request_id.clone(),
                ..Default::default()
            },
        ),
        (
            "Date from (7 days)".into(),
            RequestLogFilter {
                admitted_from: Some(from),
                ..Default::default()
            },
        ),
        (
            "Date to (2 days ago)".into(),
            RequestLogFilter {
                admitted_before: Some(before),
                ..Default::default()
            },
        ),
        ("All combined".into(), combined.clone()),
        (
            "All combined + id fragment".into(),
            RequestLogFilter {
                request_id: Some(tail.to_owned()),
                ..combined
            },
        ),
    ];
    let mut timings = Vec::new();
    for (label, filter) in cases {
        let (owner_ms, rows) = median_ms(store, &filter, None, runs).await?;
        let (admin_ms, _) = median_ms(store, &filter, Some(&admin.id), runs).await?;
        timings.push(FilterTiming {
            label,
            owner_ms,
            admin_ms,
            rows,
        });
    }
    Ok(timings)
}
