//! The command line: argument definitions and the small glue that turns each
//! command into calls on `app`, `control` and `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::control;
use crate::store::AuditActor;

#[derive(Debug, Parser)]
#[command(
    name = "codex-pooler",
    version,
    about = "Pool ChatGPT/Codex subscription accounts behind Pool API keys"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
    /// Run the gateway with a built-in upstream simulator, a Pool, a key and an owner.
    Demo {
        #[command(flatten)]
        settings: Settings,
        /// Directory for the demo's state (wiped at start).
        #[arg(long, default_value = ".codex-pooler/demo")]
        state_dir: PathBuf,
        /// Number of simulated upstream accounts.
        #[arg(long, default_value_t = 3)]
        accounts: usize,
    },
    /// Operators.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Operator account recovery.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Operator tokens for the admin JSON API.
    #[command(subcommand)]
    OperatorToken(OperatorTokenCommand),
    /// Pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Upstream accounts.
    #[command(subcommand)]
    Upstream(UpstreamCommand),
    /// Pool API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Price tables (versioned snapshots; the newest is in force).
    #[command(subcommand)]
    Pricing(PricingCommand),
    /// Request-log scale checks.
    #[command(subcommand)]
    RequestLogs(RequestLogsCommand),
    /// Usage rollups (hourly per Pool x model, daily per Pool, key, account and model).
    #[command(subcommand)]
    Rollups(RollupsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// Import a price table file (the bundled format) as the newest snapshot;
    /// running gateways load it within a minute.
    Import {
        #[command(flatten)]
        settings: Settings,
        /// The price table file (JSON, at most 8 MiB).
        file: PathBuf,
    },
    /// List the stored snapshots, newest (in force) first.
    List {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestLogsCommand {
    /// Fill the database with synthetic finished requests (four `scale-*`
    /// Pools, their keys and an admin assigned to two of them) for scale checks.
    Seed {
        #[command(flatten)]
        settings: Settings,
        /// How many rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Spread over this many days, ending now.
        #[arg(long, default_value_t = 28)]
        days: u32,
    },
    /// Time the first page of the Request logs with each filter alone and all
    /// combined, as the owner and as the seeded admin (median of several runs).
    TimeFilters {
        #[command(flatten)]
        settings: Settings,
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum RollupsCommand {
    /// Recompute the rollups from the request rows, from a UTC day on
    /// (default: the oldest day that still has request rows; older totals,
    /// whose rows were pruned, are kept).
    Rebuild {
        #[command(flatten)]
        settings: Settings,
        /// First UTC day to rebuild, YYYY-MM-DD.
        #[arg(long)]
        from: Option<String>,
    },
    /// Compare the rollups with the sums over the request rows; exits 1 on a mismatch.
    Check {
        #[command(flatten)]
        settings: Settings,
        /// First UTC day to check, YYYY-MM-DD.
        #[arg(long)]
        from: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Create the owner (prints a generated password when none is given).
    Create {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        email: String,
        #[arg(long, env = "CODEX_POOLER_OWNER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Turn off an operator's two-factor sign-in (a lost authenticator and
    /// no recovery code left); audited as `operator.totp_reset`.
    ResetTotp {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorTokenCommand {
    /// Create an operator token (printed once).
    Create {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Set a Pool's routing strategy and ring size.
    SetRouting {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        pool: String,
        /// bridge_ring, deterministic_rotation, least_recent_success or quota_first
        #[arg(long)]
        strategy: String,
        /// Accounts tried per request (at least 1).
        #[arg(long, default_value_t = 3)]
        ring_size: i64,
    },
    /// Create a Pool.
    Create {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Pause or reactivate an upstream account (by identity id).
    SetStatus {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        id: String,
        /// active or paused
        #[arg(long)]
        status: String,
    },
    /// Import a Codex CLI auth.json into a Pool.
    Import {
        #[command(flatten)]
        settings: Settings,
        /// Pool slug or id.
        #[arg(long)]
        pool: String,
        /// Path of the auth.json (64 KB at most).
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        label: Option<String>,
        /// Upstream base URL for this account (default: the gateway's).
        #[arg(long)]
        base_url: Option<String>,
        /// OAuth issuer for this account (default: the gateway's).
        #[arg(long)]
        auth_base_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a Pool API key (printed once).
    Create {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        pool: String,
        #[arg(long)]
        name: String,
        /// Comma-separated allowed models (default: all).
        #[arg(long)]
        models: Option<String>,
        /// Days until the key expires.
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Pause, resume or revoke a key by prefix.
    SetStatus {
        #[command(flatten)]
        settings: Settings,
        #[arg(long)]
        prefix: String,
        /// active, paused or revoked
        #[arg(long)]
        status: String,
    },
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let actor = AuditActor::cli();
    match cli.command {
        Command::Serve(settings) => {
            let app = crate::app::Application::build(settings).await?;
            let addr = app.local_addr()?;
            let rt = app.runtime.clone();
            tracing::info!(%addr, backend = rt.store.backend(), "codex-pooler listening");
            println!("codex-pooler listening on http://{addr}");
            if let Some(token) = &app.bootstrap_token {
                println!(
                    "first run: create the owner at http://{addr}/bootstrap?token={token} (valid 24 h, once)"
                );
            }
            let shutdown = rt.shutdown.clone();
            rt.tasks.spawn(async move {
                crate::app::shutdown_signal().await;
                shutdown.cancel();
            });
            app.run_until_stopped().await
        }
        Command::Pricing(PricingCommand::Import { settings, file }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            crate::accounting::load_active_prices(&store).await?;
            let done = crate::accounting::import_price_file(&store, &actor, &file).await?;
            if done.created {
                println!(
                    "pricing snapshot {} imported ({} models, table version {}); running gateways load it within a minute",
                    done.snapshot_version, done.model_count, done.table_version
                );
            } else {
                println!(
                    "this table is already stored as snapshot {}; nothing changed",
                    done.snapshot_version
                );
            }
            Ok(())
        }
        Command::Pricing(PricingCommand::List { settings }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            for (i, s) in store.list_pricing_snapshots().await?.iter().enumerate() {
                println!(
                    "{}{}\t{}\t{} models\ttable {}\timported {}",
                    s.version,
                    if i == 0 { " (in force)" } else { "" },
                    s.source,
                    s.model_count,
                    s.generated_at.as_deref().unwrap_or("-"),
                    crate::time::utc_label(s.imported_at),
                );
            }
            Ok(())
        }
        Command::RequestLogs(RequestLogsCommand::Seed {
            settings,
            rows,
            days,
        }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let done = crate::seeding::seed_request_logs(&store, &actor, rows, days, |n| {
                eprintln!("{n} rows written");
            })
            .await?;
            println!(
                "{} synthetic request rows written in {:.1} s ({} to {}), rollups rebuilt",
                done.rows,
                done.seconds,
                crate::time::utc_label(done.from_ms),
                crate::time::utc_label(done.to_ms)
            );
            Ok(())
        }
        Command::RequestLogs(RequestLogsCommand::TimeFilters { settings, runs }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            println!("| filter | rows | owner ms | admin ms |\n|---|---|---|---|");
            for t in crate::seeding::time_filters(&store, runs).await? {
                println!(
                    "| {} | {} | {:.1} | {:.1} |",
                    t.label, t.rows, t.owner_ms, t.admin_ms
                );
            }
            Ok(())
        }
        Command::Rollups(RollupsCommand::Rebuild { settings, from }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let from = match from {
                Some(day) => Some(parse_day(&day)?),
                None => store.earliest_request_day().await?,
            };
            let Some(from) = from else {
                println!("no request rows: nothing to rebuild");
                return Ok(());
            };
            let done = store.rebuild_rollups(&actor, from).await?;
            println!(
                "rollups rebuilt from {}: {} hourly and {} daily rows",
                crate::time::utc_label(done.from_ms),
                done.hourly_rows,
                done.daily_rows
            );
            Ok(())
        }
        Command::Rollups(RollupsCommand::Check { settings, from }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let from = match from {
                Some(day) => parse_day(&day)?,
                None => store.earliest_request_day().await?.unwrap_or(0),
            };
            let mismatches = store.check_rollups(from).await?;
            if mismatches.is_empty() {
                println!("rollups match the request rows");
                return Ok(());
            }
            for m in &mismatches {
                println!(
                    "{} {}: stored {:?}, rows {:?}",
                    m.table, m.bucket, m.stored, m.from_rows
                );
            }
            anyhow::bail!(
                "{} rollup buckets differ from the request rows; run `codex-pooler rollups rebuild`",
                mismatches.len()
            )
        }
        Command::Migrate(settings) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Demo {
            settings,
            state_dir,
            accounts,
        } => crate::demo::run(settings, state_dir, accounts).await,
        Command::Owner(OwnerCommand::Create {
            settings,
            email,
            password,
        }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(control::generate_password);
            control::create_operator(&store, &actor, &email, &password, "owner").await?;
            println!("owner {email} created");
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
        Command::Operator(OperatorCommand::ResetTotp { settings, email }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let operator = store
                .find_operator_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no operator with the email {email}"))?;
            match store.reset_operator_totp(&actor, &operator.id).await {
                Ok(()) => println!("two-factor sign-in turned off for {email}"),
                Err(crate::store::StoreError::NotFound(_)) => {
                    println!("two-factor sign-in was not on for {email}; nothing changed")
                }
                Err(other) => return Err(other.into()),
            }
            Ok(())
        }
        Command::OperatorToken(OperatorTokenCommand::Create {
            settings,
            email,
            label,
        }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let token = control::create_operator_token(&store, &actor, &email, &label).await?;
            println!("operator token (shown once): {token}");
            Ok(())
        }
        Command::Pool(PoolCommand::Create {
            settings,
            slug,
            name,
        }) => {
            control::validate_slug(&slug)?;
            let (store, _) = crate::app::open_store(&settings).await?;
            let pool = store
                .create_pool(&actor, &slug, name.as_deref().unwrap_or(&slug))
                .await?;
            println!("Pool {} created (id {})", pool.slug, pool.id);
            Ok(())
        }
        Command::Pool(PoolCommand::SetRouting {
            settings,
            pool,
            strategy,
            ring_size,
        }) => {
            control::validate_routing(&strategy, ring_size)?;
            let (store, _) = crate::app::open_store(&settings).await?;
            let pool = store
                .find_pool(&pool)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no Pool {pool}"))?;
            store
                .set_pool_routing(&actor, &pool.id, &strategy, ring_size)
                .await?;
            println!(
                "Pool {} routes with {strategy}, ring size {ring_size}",
                pool.slug
            );
            Ok(())
        }
        Command::Upstream(UpstreamCommand::SetStatus {
            settings,
            id,
            status,
        }) => {
            if !matches!(status.as_str(), "active" | "paused") {
                anyhow::bail!("status must be active or paused");
            }
            let (store, _) = crate::app::open_store(&settings).await?;
            store.set_identity_status(&actor, &id, &status).await?;
            println!("upstream account {id} is now {status}");
            Ok(())
        }
        Command::Upstream(UpstreamCommand::Import {
            settings,
            pool,
            file,
            label,
            base_url,
            auth_base_url,
        }) => {
            let (store, secret_box) = crate::app::open_store(&settings).await?;
            let pool = store
                .find_pool(&pool)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no Pool {pool}"))?;
            let meta = std::fs::metadata(&file)?;
            if meta.len() > control::MAX_AUTH_JSON_BYTES as u64 {
                anyhow::bail!("invalid auth.json: file is larger than 64 KB");
            }
            let text = std::fs::read_to_string(&file)?;
            let mut parsed = control::parse_auth_json(&text, label.as_deref())?;
            parsed.identity.base_url = base_url;
            parsed.identity.auth_base_url = auth_base_url;
            let imported =
                control::import_auth_json(&store, &secret_box, &actor, &pool.id, &parsed).await?;
            println!(
                "{} {} ({}) into Pool {}",
                if imported.replaced_existing {
                    "replaced credentials of"
                } else {
                    "imported"
                },
                parsed.identity.label,
                parsed
                    .identity
                    .plan_type
                    .as_deref()
                    .unwrap_or("unknown plan"),
                pool.slug
            );
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create {
            settings,
            pool,
            name,
            models,
            expires_in_days,
        }) => {
            let (store, _) = crate::app::open_store(&settings).await?;
            let pool = store
                .find_pool(&pool)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no Pool {pool}"))?;
            let models = models.map(|m| {
                m.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            });
            let expires_at = expires_in_days.map(|d| crate::time::now_ms() + d * 86_400_000);
            let (_, raw) =
                control::create_api_key(&store, &actor, &pool.id, &name, models, expires_at)
                    .await?;
            println!("API key (shown once): {raw}");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::SetStatus {
            settings,
            prefix,
            status,
        }) => {
            if !matches!(status.as_str(), "active" | "paused" | "revoked") {
                anyhow::bail!("status must be active, paused or revoked");
            }
            let (store, _) = crate::app::open_store(&settings).await?;
            let key = store
                .find_api_key_by_prefix(&prefix)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no API key {prefix}"))?;
            store.set_api_key_status(&actor, &key.id, &status).await?;
            println!("API key {prefix} is now {status}");
            Ok(())
        }
    }
}

/// Parses a `YYYY-MM-DD` UTC day into its start (epoch ms).
fn parse_day(day: &str) -> anyhow::Result<i64> {
    crate::admin::request_logs::parse_utc_day(day)
        .ok_or_else(|| anyhow::anyhow!("{day:?} is not a date; use YYYY-MM-DD"))
}
