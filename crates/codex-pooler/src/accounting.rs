//! Accounting glue between the pure price table (`domain::pricing`) and the
//! store: which pricing snapshot is in force (the bundled table is imported
//! as a snapshot on start when its content is new; `codex-pooler pricing
//! import FILE` adds newer ones; the newest version wins), its reload on
//! running instances, and the rollup check and rebuild behind the
//! `codex-pooler rollups` commands.

use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::domain::pricing::{BUNDLED_PRICING_JSON, PriceTable};
use crate::runtime::Runtime;
use crate::store::{AuditActor, NewPricingSnapshot, Store};

/// Largest price table file the import accepts.
pub const MAX_PRICE_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceImport {
    pub snapshot_version: i64,
    /// False when the same table was already stored (nothing changed).
    pub created: bool,
    pub table_version: String,
    pub model_count: usize,
}

/// Validates `content` as a price table and stores it as a snapshot.
pub async fn import_price_table(
    store: &Store,
    actor: &AuditActor,
    content: &str,
    source: &str,
) -> anyhow::Result<PriceImport> {
    let table = PriceTable::parse(content)?;
    if table.model_count() == 0 {
        anyhow::bail!("price table: \"models\" is empty");
    }
    let sha = hex::encode(Sha256::digest(content.as_bytes()));
    let (snapshot_version, created) = store
        .import_pricing_snapshot(
            actor,
            &NewPricingSnapshot {
                content,
                content_sha256: &sha,
                source,
                generated_at: Some(&table.version),
                model_count: table.model_count() as i64,
            },
        )
        .await?;
    Ok(PriceImport {
        snapshot_version,
        created,
        model_count: table.model_count(),
        table_version: table.version,
    })
}

/// Reads, validates and imports a price table file (the `pricing import`
/// command).
pub async fn import_price_file(
    store: &Store,
    actor: &AuditActor,
    path: &Path,
) -> anyhow::Result<PriceImport> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_PRICE_FILE_BYTES {
        anyhow::bail!(
            "{} is {size} bytes; a price table may be at most {MAX_PRICE_FILE_BYTES} bytes",
            path.display()
        );
    }
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let source = path
        .file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
    import_price_table(store, actor, &content, &format!("file:{source}"))
        .await
        .with_context(|| format!("{} was not imported", path.display()))
}

/// The price table to start with: the bundled table is imported first (a
/// no-op when already stored), then the newest snapshot is loaded.
pub async fn load_active_prices(store: &Store) -> anyhow::Result<PriceTable> {
    import_price_table(
        store,
        &AuditActor::system(),
        BUNDLED_PRICING_JSON,
        "bundled",
    )
    .await?;
    newest_snapshot(store).await
}

async fn newest_snapshot(store: &Store) -> anyhow::Result<PriceTable> {
    let snapshot = store
        .latest_pricing_snapshot()
        .await?
        .context("no pricing snapshot is stored")?;
    let mut table = PriceTable::parse(&snapshot.content)
        .with_context(|| format!("pricing snapshot {} is unreadable", snapshot.version))?;
    table.snapshot_version = Some(snapshot.version);
    Ok(table)
}

/// Loads a newer snapshot when one was imported (by any instance or the
/// command line) since this instance loaded its table. Returns whether the
/// table changed.
pub async fn reload_prices_if_newer(rt: &Runtime) -> anyhow::Result<bool> {
    let newest = rt.store.latest_pricing_version().await?;
    if newest.is_none() || newest <= rt.prices().snapshot_version {
        return Ok(false);
    }
    let table = newest_snapshot(&rt.store).await?;
    tracing::info!(
        snapshot = table.snapshot_version,
        table_version = %table.version,
        "pricing snapshot loaded"
    );
    rt.set_prices(table);
    Ok(true)
}
