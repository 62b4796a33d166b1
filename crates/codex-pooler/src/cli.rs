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
