//! Background jobs inside the server: the instance heartbeat, and leased jobs
//! (one instance at a time) — recovery of requests orphaned by a crashed
//! instance, quota polling through the usage endpoint, catalog sync, and
//! proactive token refresh, request-log retention — plus, on every instance, the reload of a newer
//! pricing snapshot. Every loop is tracked and stops on shutdown; each
//! job also has a run-once function that tests call directly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::runtime::{Candidate, QuotaWindow, Runtime};
use crate::store::{QuotaObservation, RecordEvent};
use crate::time::now_ms;

/// How often the instance heartbeat is written.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Starts every loop on the runtime's task tracker.
pub fn start(rt: &Arc<Runtime>) {
    let stale = Duration::from_secs(rt.settings.instance_stale_secs.max(1));
    spawn_loop(
        rt,
        "heartbeat",
        HEARTBEAT_EVERY
            .min(stale / 3)
            .max(Duration::from_millis(200)),
        false,
        true,
        |rt| async move {
            rt.store.heartbeat_instance(&rt.instance_id).await?;
            Ok(())
        },
    );
    spawn_loop(
        rt,
        "recover_orphaned_requests",
        (stale / 2).max(Duration::from_millis(500)),
        true,
        true,
        |rt| async move { recover_orphaned_requests(&rt).await.map(|_| ()) },
    );
    spawn_loop(
        rt,
        "pricing_reload",
        Duration::from_secs(60),
        false,
        false,
        |rt| async move {
            crate::accounting::reload_prices_if_newer(&rt)
                .await
                .map(|_| ())
        },
    );
    spawn_loop(
        rt,
        "request_log_retention",
        Duration::from_secs(300),
        true,
        false,
        |rt| async move { prune_request_logs_once(&rt).await.map(|_| ()) },
    );
    spawn_loop(
        rt,
        "usage_poll",
        Duration::from_secs(rt.settings.usage_poll_interval_secs.max(10)),
        true,
        false,
        |rt| async move { poll_usage_once(&rt).await.map(|_| ()) },
    );
    spawn_loop(
        rt,
        "catalog_sync",
        Duration::from_secs(1800),
        true,
        false,
        |rt| async move { sync_catalogs_once(&rt).await },
    );
    spawn_loop(
        rt,
        "token_refresh",
        Duration::from_secs(60),
        true,
        false,
        |rt| async move { refresh_expiring_tokens_once(&rt).await.map(|_| ()) },
    );
}

/// Runs `job` every `every` (first right away when `at_start`), under a lease
/// when `leased`.
fn spawn_loop<F, Fut>(
    rt: &Arc<Runtime>,
    name: &'static str,
    every: Duration,
    leased: bool,
    at_start: bool,
    job: F,
) where
    F: Fn(Arc<Runtime>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rt = rt.clone();
    let shutdown = rt.shutdown.clone();
    rt.clone().tasks.spawn(async move {
        let first = if at_start { tokio::time::Instant::now() } else { tokio::time::Instant::now() + every };
        let mut interval = tokio::time::interval_at(first, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            if leased {
                let lease_until = now_ms() + (every.as_millis() as i64) * 2;
                match rt.store.acquire_job_lease(name, &rt.instance_id, lease_until).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(err) => {
                        tracing::warn!(job = name, error = %err, "could not take the job lease");
                        continue;
                    }
                }
            }
            let run = job(rt.clone());
            tokio::select! {
                () = shutdown.cancelled() => break,
                result = tokio::time::timeout(every.max(Duration::from_secs(30)), run) => match result {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::warn!(job = name, error = %err, "job failed"),
                    Err(_) => tracing::warn!(job = name, "job timed out"),
                },
            }
        }
    });
}

/// Rows deleted per statement by the retention job: small, so no write
/// holds the database long enough to stall request recording.
pub const PRUNE_BATCH: i64 = 500;

/// Deletes request-log rows older than the retention (whole UTC days), in
/// batches, yielding between them; also key-limit bookkeeping no window can
/// reach. Returns how many request rows were deleted.
pub async fn prune_request_logs_once(rt: &Runtime) -> anyhow::Result<u64> {
    let now = now_ms();
    let _ = rt
        .store
        .prune_key_windows(
            now - 2 * 86_400_000,
            now - 40 * 86_400_000,
            PRUNE_BATCH * 10,
        )
        .await?;
    let days = i64::from(rt.settings.request_log_retention_days);
    if days == 0 {
        return Ok(0);
    }
    let cutoff = crate::store::day_floor(now - days * 86_400_000);
    let mut deleted = 0;
    // At most 200 batches a run; the next run goes on.
    for _ in 0..200 {
        if rt.shutdown.is_cancelled() {
            break;
        }
        let n = rt.store.prune_request_logs(cutoff, PRUNE_BATCH).await?;
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if deleted > 0 {
        tracing::info!(deleted, days, "pruned request-log rows past the retention");
    }
    Ok(deleted)
}

/// Fails requests left in progress by instances that stopped heartbeating.
pub async fn recover_orphaned_requests(rt: &Runtime) -> anyhow::Result<u64> {
    let stale_before = now_ms() - (rt.settings.instance_stale_secs as i64) * 1000;
    let n = rt
        .store
        .recover_orphaned_requests(&rt.instance_id, stale_before)
        .await?;
    if n > 0 {
        tracing::warn!(
            recovered = n,
            "closed requests left in progress by a stopped gateway instance"
        );
    }
    Ok(n)
}

async fn routable_candidates(rt: &Runtime) -> anyhow::Result<Vec<Candidate>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for pool in rt.store.list_pools().await? {
        if pool.status != "active" {
            continue;
        }
        if let Some(snapshot) = rt.pool(&pool.id).await? {
            for c in snapshot.candidates.iter().filter(|c| c.routable) {
                if seen.insert(c.identity.id.clone()) {
                    out.push(c.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Reads every routable account's quota from the usage endpoint; returns how
/// many accounts answered.
pub async fn poll_usage_once(rt: &Runtime) -> anyhow::Result<usize> {
    let mut answered = 0;
    for candidate in routable_candidates(rt).await? {
        match read_account_usage(rt, &candidate).await {
            Ok(()) => answered += 1,
            Err(err) => {
                tracing::debug!(identity = %candidate.identity.id, error = %err, "usage poll failed")
            }
        }
    }
    Ok(answered)
}

/// Reads one account's quota windows from the usage endpoint (refreshing
/// its token first when it is about to expire) and records them.
pub async fn read_account_usage(rt: &Runtime, candidate: &Candidate) -> anyhow::Result<()> {
    let creds = rt
        .fresh_credentials(candidate)
        .await
        .map_err(|e| anyhow::anyhow!("refresh: {}", e.code()))?;
    let headers = crate::proxy::upstream::upstream_headers(
        rt,
        candidate,
        &creds.secret.access_token,
        &axum::http::HeaderMap::new(),
        "application/json",
    );
    let url = format!("{}/backend-api/wham/usage", candidate.base_url);
    let response = rt
        .http
        .get(url)
        .headers(headers)
        .timeout(Duration::from_secs(15))
        .send()
        .await?;
    if !response.status().is_success() {
        anyhow::bail!("usage endpoint answered {}", response.status());
    }
    let body: Value = response.json().await?;
    let now_ms = now_ms();
    let now = rt.now_secs();
    let mut observations = Vec::new();
    for (field, kind) in [
        ("primary_window", "primary"),
        ("secondary_window", "secondary"),
    ] {
        let Some(w) = body
            .pointer(&format!("/rate_limit/{field}"))
            .filter(|w| w.is_object())
        else {
            continue;
        };
        let Some(used) = w.get("used_percent").and_then(Value::as_f64) else {
            continue;
        };
        let window_minutes = w
            .get("limit_window_seconds")
            .and_then(Value::as_i64)
            .map(|s| s / 60);
        let reset_at = w.get("reset_at").and_then(Value::as_i64).or_else(|| {
            w.get("reset_after_seconds")
                .and_then(Value::as_i64)
                .map(|s| now + s)
        });
        let kind = if kind == "primary" && window_minutes == Some(10_080) {
            "secondary"
        } else {
            kind
        };
        observations.push(QuotaObservation {
            identity_id: candidate.identity.id.clone(),
            window_kind: kind.to_owned(),
            used_percent: used.clamp(0.0, 100.0),
            window_minutes,
            reset_at,
            source: "usage_poll",
            observed_at: now_ms,
        });
    }
    for q in observations {
        candidate.identity.observe_window(
            &q.window_kind,
            QuotaWindow {
                used_percent: q.used_percent,
                reset_at: q.reset_at,
                observed_at: q.observed_at,
            },
        );
        rt.recorder.send(RecordEvent::Quota(Box::new(q))).await;
    }
    Ok(())
}

/// Syncs every active Pool's model catalog.
pub async fn sync_catalogs_once(rt: &Runtime) -> anyhow::Result<()> {
    for pool in rt.store.list_pools().await? {
        if pool.status == "active"
            && let Err(err) = rt.sync_pool_catalog(&pool.id).await
        {
            tracing::warn!(pool = %pool.slug, error = %err, "catalog sync failed");
        }
    }
    Ok(())
}

/// Refreshes access tokens that expire within ten minutes; returns how many.
pub async fn refresh_expiring_tokens_once(rt: &Runtime) -> anyhow::Result<usize> {
    let soon = (rt.now_secs() + 600) * 1000;
    let mut refreshed = 0;
    for candidate in routable_candidates(rt).await? {
        let creds = candidate.identity.credentials();
        if creds.expires_at.is_some_and(|exp| exp <= soon)
            && rt.refresh(&candidate, creds.generation).await.is_ok()
        {
            refreshed += 1;
        }
    }
    Ok(refreshed)
}
