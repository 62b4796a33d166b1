//! Choices for the console's filter dropdowns: the upstream accounts and the
//! model names an operator may pick on the Request logs page. Both are read
//! within a [`PoolScope`] and optionally narrowed to one Pool, so an admin is
//! never offered an account or a model of a Pool outside their assignments.

use serde::Serialize;
use sqlx::FromRow;

use super::{PoolScope, Store, StoreResult, with_pool};

/// How many of the newest request rows are read for model names: enough to
/// cover what clients use now, without scanning a large table on every page
/// view (`requested_model` has no index).
pub const MODEL_SCAN_ROWS: i64 = 5_000;

/// An upstream account offered as a filter choice.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct AccountOption {
    pub id: String,
    pub label: String,
    pub email: Option<String>,
}

impl Store {
    /// Accounts assigned to a Pool visible in `scope` (to `pool_id` only, when
    /// given), by label.
    pub async fn list_account_options(
        &self,
        scope: PoolScope<'_>,
        pool_id: Option<&str>,
    ) -> StoreResult<Vec<AccountOption>> {
        with_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT i.id, i.label, i.email FROM upstream_identities i
                 WHERE EXISTS (SELECT 1 FROM pool_assignments a WHERE a.identity_id = i.id",
            );
            if let PoolScope::AssignedTo(operator) = scope {
                q.push(" AND a.pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = ")
                    .push_bind(operator.to_owned()).push(")");
            }
            if let Some(id) = pool_id {
                q.push(" AND a.pool_id = ").push_bind(id.to_owned());
            }
            q.push(") ORDER BY i.label, i.id");
            Ok(q.build_query_as::<AccountOption>().fetch_all(pool).await?)
        })
    }

    /// Distinct model names among the newest [`MODEL_SCAN_ROWS`] request rows
    /// of the Pools visible in `scope` (of `pool_id` only, when given), sorted;
    /// rows without a model are skipped.
    pub async fn list_model_options(
        &self,
        scope: PoolScope<'_>,
        pool_id: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        with_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                // A row refused before its body was read stores its endpoint
                // in place of the model: that is not a model name.
                "SELECT DISTINCT recent.requested_model FROM (SELECT r.requested_model FROM requests r
                 WHERE r.requested_model <> '' AND r.requested_model <> r.endpoint",
            );
            if let PoolScope::AssignedTo(operator) = scope {
                q.push(" AND r.pool_id IN (SELECT op.pool_id FROM operator_pools op WHERE op.operator_id = ")
                    .push_bind(operator.to_owned()).push(")");
            }
            if let Some(id) = pool_id {
                q.push(" AND r.pool_id = ").push_bind(id.to_owned());
            }
            q.push(" ORDER BY r.admitted_at DESC, r.id DESC LIMIT ").push_bind(MODEL_SCAN_ROWS);
            q.push(") recent ORDER BY recent.requested_model");
            let rows: Vec<(String,)> = q.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(model,)| model).collect())
        })
    }
}
