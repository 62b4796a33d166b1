//! Accounting that outlives request rows: the usage rollups (hourly per Pool ×
//! model, daily per Pool × key × account × model), their rebuild and their
//! consistency check against the request rows, the per-key usage views read
//! from them, and the versioned pricing snapshots. The rollups are kept
//! incrementally by the recorder's settlement (see `records.rs`); everything
//! here is the slow path.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::FromRow;

use super::control::{AuditEntry, insert_audit};
use super::{AuditActor, Store, StoreResult, with_pool};
use crate::time::{new_id, now_ms};

/// The measures every rollup row carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow, Serialize)]
pub struct RollupMeasures {
    pub request_count: i64,
    pub succeeded_count: i64,
    pub failed_count: i64,
    pub rejected_count: i64,
    pub cancelled_count: i64,
    pub usage_known_count: i64,
    /// Requests that went upstream (usage status other than `not_applicable`).
    pub metered_count: i64,
    /// Requests with a settled cost.
    pub priced_count: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub settled_cost_micros: i64,
}

impl std::ops::AddAssign for RollupMeasures {
    fn add_assign(&mut self, o: Self) {
        self.request_count += o.request_count;
        self.succeeded_count += o.succeeded_count;
        self.failed_count += o.failed_count;
        self.rejected_count += o.rejected_count;
        self.cancelled_count += o.cancelled_count;
        self.usage_known_count += o.usage_known_count;
        self.metered_count += o.metered_count;
        self.priced_count += o.priced_count;
        self.input_tokens += o.input_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.total_tokens += o.total_tokens;
        self.settled_cost_micros += o.settled_cost_micros;
    }
}

#[derive(Debug, FromRow)]
struct HourlyRow {
    pool_id: String,
    model: String,
    hour_start: i64,
    #[sqlx(flatten)]
    m: RollupMeasures,
}

#[derive(Debug, FromRow)]
struct DailyRow {
    day_start: i64,
    pool_id: String,
    api_key_id: String,
    identity_id: String,
    model: String,
    #[sqlx(flatten)]
    m: RollupMeasures,
}

/// A rollup bucket whose stored totals differ from the request rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollupMismatch {
    pub table: &'static str,
    pub bucket: String,
    pub stored: RollupMeasures,
    pub from_rows: RollupMeasures,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RollupRebuild {
    /// Buckets from this time on (ms, a UTC day start) were recomputed.
    pub from_ms: i64,
    pub hourly_rows: u64,
    pub daily_rows: u64,
}

/// The aggregate expressions over finished request rows, in
/// [`RollupMeasures`] order.
const MEASURES_FROM_ROWS: &str = "CAST(COUNT(*) AS BIGINT) AS request_count,
    CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS succeeded_count,
    CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed_count,
    CAST(SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS BIGINT) AS rejected_count,
    CAST(SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS BIGINT) AS cancelled_count,
    CAST(SUM(CASE WHEN usage_status = 'usage_known' THEN 1 ELSE 0 END) AS BIGINT) AS usage_known_count,
    CAST(SUM(CASE WHEN usage_status <> 'not_applicable' THEN 1 ELSE 0 END) AS BIGINT) AS metered_count,
    CAST(SUM(CASE WHEN settled_cost_micros IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS priced_count,
    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens,
    CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT) AS cached_input_tokens,
    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens,
    CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens,
    CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS total_tokens,
    CAST(COALESCE(SUM(settled_cost_micros), 0) AS BIGINT) AS settled_cost_micros";

const MEASURE_COLUMNS: &str = "request_count, succeeded_count, failed_count, rejected_count, cancelled_count,
    usage_known_count, metered_count, priced_count, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, total_tokens, settled_cost_micros";

const FINISHED: &str = "status IN ('succeeded', 'failed', 'rejected', 'cancelled')";

fn hourly_from_rows_sql() -> String {
    format!(
        "SELECT pool_id, requested_model AS model, admitted_at - (admitted_at % 3600000) AS hour_start, {MEASURES_FROM_ROWS}
         FROM requests WHERE {FINISHED} AND admitted_at >= $1
         GROUP BY pool_id, requested_model, admitted_at - (admitted_at % 3600000)"
    )
}

fn daily_from_rows_sql() -> String {
    format!(
        "SELECT admitted_at - (admitted_at % 86400000) AS day_start, pool_id, COALESCE(api_key_id, '') AS api_key_id,
            COALESCE(upstream_identity_id, '') AS identity_id, requested_model AS model, {MEASURES_FROM_ROWS}
         FROM requests WHERE {FINISHED} AND admitted_at >= $1
         GROUP BY admitted_at - (admitted_at % 86400000), pool_id, COALESCE(api_key_id, ''),
            COALESCE(upstream_identity_id, ''), requested_model"
    )
}

/// Start of the UTC day containing `ms`.
pub fn day_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(86_400_000)
}

/// A stored pricing snapshot.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct PricingSnapshot {
    pub version: i64,
    pub content_sha256: String,
    pub source: String,
    pub generated_at: Option<String>,
    pub model_count: i64,
    #[serde(skip)]
    pub content: String,
    pub imported_at: i64,
}

/// A price table to store as a snapshot (already validated by the caller).
#[derive(Debug, Clone)]
pub struct NewPricingSnapshot<'a> {
    pub content: &'a str,
    pub content_sha256: &'a str,
    pub source: &'a str,
    pub generated_at: Option<&'a str>,
    pub model_count: i64,
}

/// One API key's usage over a window, from the daily rollups and the rows
/// still in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyWindowUsage {
    pub measures: RollupMeasures,
    /// Finished requests whose usage or price is unknown.
    pub unpriced_count: i64,
    /// Requests still running.
    pub pending_count: i64,
}

/// One Pool's traffic in one hour.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PoolHourTraffic {
    pub pool_id: String,
    pub hour_start: i64,
    pub requests: i64,
    pub failed: i64,
    pub tokens: i64,
}

impl Store {
    /// The earliest day that still has request rows (rollups before it are
    /// kept as they are: their rows may have been pruned).
    pub async fn earliest_request_day(&self) -> StoreResult<Option<i64>> {
        let row: (Option<i64>,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT MIN(admitted_at) FROM requests").fetch_one(pool).await)?;
        Ok(row.0.map(day_floor))
    }

    /// Recomputes every rollup bucket from `from_ms` (a UTC day start) on
    /// from the request rows, in one transaction, with its audit event.
    /// Concurrent settlements wait for it (PostgreSQL locks both tables;
    /// SQLite has one writer) and land on the rebuilt totals.
    pub async fn rebuild_rollups(
        &self,
        actor: &AuditActor,
        from_ms: i64,
    ) -> StoreResult<RollupRebuild> {
        let from_ms = day_floor(from_ms);
        let insert_hourly = sqlx::AssertSqlSafe(format!(
            "INSERT INTO usage_hourly (pool_id, model, hour_start, {MEASURE_COLUMNS}) {}",
            hourly_from_rows_sql()
        ));
        let insert_daily = sqlx::AssertSqlSafe(format!(
            "INSERT INTO usage_daily (day_start, pool_id, api_key_id, identity_id, model, {MEASURE_COLUMNS}) {}",
            daily_from_rows_sql()
        ));
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("LOCK TABLE usage_hourly, usage_daily IN EXCLUSIVE MODE").execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM usage_hourly WHERE hour_start >= $1").bind(from_ms).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM usage_daily WHERE day_start >= $1").bind(from_ms).execute(&mut *tx).await?;
            let hourly_rows = sqlx::query(insert_hourly).bind(from_ms).execute(&mut *tx).await?.rows_affected();
            let daily_rows = sqlx::query(insert_daily).bind(from_ms).execute(&mut *tx).await?.rows_affected();
            insert_audit!(tx, AuditEntry {
                actor,
                action: "rollups.rebuild",
                target_kind: "rollups",
                target_id: None,
                pool_id: None,
                details: serde_json::json!({"from_ms": from_ms, "hourly_rows": hourly_rows, "daily_rows": daily_rows}),
            });
            tx.commit().await?;
            Ok(RollupRebuild { from_ms, hourly_rows, daily_rows })
        })
    }

    /// Every rollup bucket from `from_ms` on whose stored totals differ from
    /// the sums over the request rows (empty when consistent).
    pub async fn check_rollups(&self, from_ms: i64) -> StoreResult<Vec<RollupMismatch>> {
        let from_ms = day_floor(from_ms);
        let hourly_rows = sqlx::AssertSqlSafe(hourly_from_rows_sql());
        let daily_rows = sqlx::AssertSqlSafe(daily_from_rows_sql());
        let hourly_stored = sqlx::AssertSqlSafe(format!(
            "SELECT pool_id, model, hour_start, {MEASURE_COLUMNS} FROM usage_hourly WHERE hour_start >= $1"
        ));
        let daily_stored = sqlx::AssertSqlSafe(format!(
            "SELECT day_start, pool_id, api_key_id, identity_id, model, {MEASURE_COLUMNS} FROM usage_daily WHERE day_start >= $1"
        ));
        let (computed_h, stored_h, computed_d, stored_d) = with_pool!(self, pool => {
            let computed_h = sqlx::query_as::<_, HourlyRow>(hourly_rows).bind(from_ms).fetch_all(pool).await?;
            let stored_h = sqlx::query_as::<_, HourlyRow>(hourly_stored).bind(from_ms).fetch_all(pool).await?;
            let computed_d = sqlx::query_as::<_, DailyRow>(daily_rows).bind(from_ms).fetch_all(pool).await?;
            let stored_d = sqlx::query_as::<_, DailyRow>(daily_stored).bind(from_ms).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((computed_h, stored_h, computed_d, stored_d))
        })?;
        let hourly_key = |r: &HourlyRow| format!("{}/{}/{}", r.pool_id, r.model, r.hour_start);
        let daily_key = |r: &DailyRow| {
            format!(
                "{}/{}/{}/{}/{}",
                r.day_start, r.pool_id, r.api_key_id, r.identity_id, r.model
            )
        };
        let mut mismatches = diff_buckets(
            "usage_hourly",
            computed_h.iter().map(|r| (hourly_key(r), r.m)),
            stored_h.iter().map(|r| (hourly_key(r), r.m)),
        );
        mismatches.extend(diff_buckets(
            "usage_daily",
            computed_d.iter().map(|r| (daily_key(r), r.m)),
            stored_d.iter().map(|r| (daily_key(r), r.m)),
        ));
        Ok(mismatches)
    }

    /// Requests, failures and tokens per Pool and hour from `from_ms` on
    /// (the Pools list's health figures and traffic chart).
    pub async fn pool_traffic_by_hour(&self, from_ms: i64) -> StoreResult<Vec<PoolHourTraffic>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PoolHourTraffic>(
            "SELECT pool_id, hour_start, CAST(SUM(request_count) AS BIGINT) AS requests,
                    CAST(SUM(failed_count) AS BIGINT) AS failed, CAST(SUM(total_tokens) AS BIGINT) AS tokens
             FROM usage_hourly WHERE hour_start >= $1 GROUP BY pool_id, hour_start ORDER BY pool_id, hour_start")
            .bind(from_ms).fetch_all(pool).await)?,
        )
    }

    /// Sums of the hourly rollups of a Pool (or all Pools) from `from_ms` on.
    pub async fn hourly_rollup_totals(
        &self,
        pool_id: Option<&str>,
        from_ms: i64,
    ) -> StoreResult<RollupMeasures> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM usage_hourly WHERE ($1 IS NULL OR pool_id = $1) AND hour_start >= $2",
            sum_columns()
        ));
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, RollupMeasures>(sql)
            .bind(pool_id).bind(from_ms).fetch_one(pool).await)?,
        )
    }

    /// One API key's usage from `from_ms` (a UTC day start) on: the daily
    /// rollups (which survive request-log pruning) plus what is still running.
    pub async fn key_window_usage(
        &self,
        api_key_id: &str,
        from_ms: i64,
    ) -> StoreResult<KeyWindowUsage> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM usage_daily WHERE api_key_id = $1 AND day_start >= $2",
            sum_columns()
        ));
        let (measures, unpriced, pending) = with_pool!(self, pool => {
            let measures = sqlx::query_as::<_, RollupMeasures>(sql)
                .bind(api_key_id).bind(day_floor(from_ms)).fetch_one(pool).await?;
            let counts: (i64, i64) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
                            AND (usage_status = 'usage_unknown'
                                 OR (usage_status = 'usage_known' AND settled_cost_micros IS NULL)) THEN 1 ELSE 0 END), 0) AS BIGINT),
                        CAST(COALESCE(SUM(CASE WHEN status IN ('accepted', 'in_progress') THEN 1 ELSE 0 END), 0) AS BIGINT)
                 FROM requests WHERE api_key_id = $1 AND admitted_at >= $2")
                .bind(api_key_id).bind(day_floor(from_ms)).fetch_one(pool).await?;
            Ok::<_, sqlx::Error>((measures, counts.0, counts.1))
        })?;
        Ok(KeyWindowUsage {
            measures,
            unpriced_count: unpriced,
            pending_count: pending,
        })
    }

    /// The newest pricing snapshot.
    pub async fn latest_pricing_snapshot(&self) -> StoreResult<Option<PricingSnapshot>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PricingSnapshot>(
            "SELECT version, content_sha256, source, generated_at, model_count, content, imported_at
             FROM pricing_snapshots ORDER BY version DESC LIMIT 1")
            .fetch_optional(pool).await)?,
        )
    }

    /// The newest pricing snapshot's version (a cheap poll).
    pub async fn latest_pricing_version(&self) -> StoreResult<Option<i64>> {
        let row: (Option<i64>,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT MAX(version) FROM pricing_snapshots").fetch_one(pool).await)?;
        Ok(row.0)
    }

    /// Every snapshot, newest first (without content).
    pub async fn list_pricing_snapshots(&self) -> StoreResult<Vec<PricingSnapshot>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, PricingSnapshot>(
            "SELECT version, content_sha256, source, generated_at, model_count, '' AS content, imported_at
             FROM pricing_snapshots ORDER BY version DESC")
            .fetch_all(pool).await)?,
        )
    }

    /// Stores a price table as the next snapshot version, with its audit
    /// event, unless the same content is already stored. Returns the
    /// snapshot's version and whether it is new.
    pub async fn import_pricing_snapshot(
        &self,
        actor: &AuditActor,
        snapshot: &NewPricingSnapshot<'_>,
    ) -> StoreResult<(i64, bool)> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let existing: Option<(i64,)> = sqlx::query_as("SELECT version FROM pricing_snapshots WHERE content_sha256 = $1")
                .bind(snapshot.content_sha256).fetch_optional(&mut *tx).await?;
            if let Some((version,)) = existing {
                tx.rollback().await?;
                return Ok((version, false));
            }
            let (next,): (i64,) = sqlx::query_as("SELECT CAST(COALESCE(MAX(version), 0) + 1 AS BIGINT) FROM pricing_snapshots")
                .fetch_one(&mut *tx).await?;
            let inserted = sqlx::query(
                "INSERT INTO pricing_snapshots (version, content_sha256, source, generated_at, model_count, content, imported_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
                .bind(next).bind(snapshot.content_sha256).bind(snapshot.source).bind(snapshot.generated_at)
                .bind(snapshot.model_count).bind(snapshot.content).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if inserted == 0 {
                // Another instance imported at the same moment; theirs stands.
                tx.rollback().await?;
                let version = self.latest_pricing_version().await?.unwrap_or(next);
                return Ok((version, false));
            }
            let version_text = next.to_string();
            insert_audit!(tx, AuditEntry {
                actor,
                action: "pricing.import",
                target_kind: "pricing_snapshot",
                target_id: Some(&version_text),
                pool_id: None,
                details: serde_json::json!({"source": snapshot.source, "table_version": snapshot.generated_at,
                    "content_sha256": snapshot.content_sha256, "model_count": snapshot.model_count}),
            });
            tx.commit().await?;
            Ok((next, true))
        })
    }

    /// Ledger entries of a request as `(entry_kind, amount_status,
    /// usage_status, total_tokens, settled_cost_micros)`, oldest first (tests
    /// and the request detail).
    pub async fn ledger_entries_of(
        &self,
        request_id: &str,
    ) -> StoreResult<Vec<(String, String, String, Option<i64>, Option<i64>)>> {
        Ok(with_pool!(self, pool => sqlx::query_as(
            "SELECT entry_kind, amount_status, usage_status, total_tokens, settled_cost_micros
             FROM ledger_entries WHERE request_id = $1 ORDER BY occurred_at, entry_kind DESC")
            .bind(request_id).fetch_all(pool).await)?)
    }
}

fn sum_columns() -> String {
    MEASURE_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn diff_buckets(
    table: &'static str,
    computed: impl Iterator<Item = (String, RollupMeasures)>,
    stored: impl Iterator<Item = (String, RollupMeasures)>,
) -> Vec<RollupMismatch> {
    let mut buckets: BTreeMap<String, (RollupMeasures, RollupMeasures)> = BTreeMap::new();
    for (k, m) in computed {
        buckets.entry(k).or_default().1 = m;
    }
    for (k, m) in stored {
        buckets.entry(k).or_default().0 = m;
    }
    buckets
        .into_iter()
        .filter(|(_, (stored, from_rows))| stored != from_rows)
        .map(|(bucket, (stored, from_rows))| RollupMismatch {
            table,
            bucket,
            stored,
            from_rows,
        })
        .collect()
}
