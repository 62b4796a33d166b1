//! Instance heartbeats and job leases. (The recovery of requests left in
//! progress by a stopped instance settles them, so it lives with the records.)

use super::{Store, StoreResult, with_pool};
use crate::time::now_ms;

impl Store {
    /// Registers (or refreshes) this instance's heartbeat.
    pub async fn heartbeat_instance(&self, instance_id: &str) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO gateway_instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at")
            .bind(instance_id).bind(now).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Marks this instance stopped (a clean shutdown).
    pub async fn stop_instance(&self, instance_id: &str) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("UPDATE gateway_instances SET stopped_at = $2 WHERE id = $1")
            .bind(instance_id).bind(now_ms()).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Takes (or renews) the lease on `job` for `holder` until `expires_at`.
    /// Returns true when this holder has it.
    pub async fn acquire_job_lease(
        &self,
        job: &str,
        holder: &str,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let affected = with_pool!(self, pool => sqlx::query(
            "INSERT INTO job_leases (job_name, holder, expires_at, last_run_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job_name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
                last_run_at = excluded.last_run_at
             WHERE job_leases.expires_at < $4 OR job_leases.holder = excluded.holder")
            .bind(job).bind(holder).bind(expires_at).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(affected == 1)
    }

    /// Gives a lease back early.
    pub async fn release_job_lease(&self, job: &str, holder: &str) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("UPDATE job_leases SET expires_at = 0 WHERE job_name = $1 AND holder = $2")
            .bind(job).bind(holder).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Sets a Pool's routing strategy and ring size, with its audit event.
    pub async fn set_pool_routing(
        &self,
        actor: &super::AuditActor,
        pool_id: &str,
        strategy: &str,
        ring_size: i64,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE pool_routing_settings SET routing_strategy = $2, bridge_ring_size = $3, updated_at = $4 WHERE pool_id = $1")
                .bind(pool_id).bind(strategy).bind(ring_size).bind(now_ms())
                .execute(&mut *tx).await?.rows_affected();
            if updated != 1 {
                return Err(super::StoreError::NotFound("Pool"));
            }
            sqlx::query(
                "INSERT INTO audit_events (id, occurred_at, actor_kind, actor_id, actor_label, action, target_kind, target_id, pool_id, outcome, ip, details)
                 VALUES ($1, $2, $3, $4, $5, 'pool.routing_update', 'pool', $6, $6, 'succeeded', $7, $8)")
                .bind(crate::time::new_id()).bind(now_ms()).bind(actor.kind).bind(actor.id.as_deref()).bind(&actor.label)
                .bind(pool_id).bind(actor.ip.as_deref())
                .bind(serde_json::json!({"fields": ["routing_strategy", "bridge_ring_size"], "routing_strategy": strategy, "bridge_ring_size": ring_size}).to_string())
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
