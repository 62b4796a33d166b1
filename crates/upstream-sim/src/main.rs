//! The `upstream-sim` binary: starts a [`upstream_sim::Simulator`], prints its
//! base URL as the first stdout line, then one line per account, and runs until
//! ctrl-c.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use upstream_sim::{AccountSpec, BenchProfile, SimConfig, Simulator};

/// Simulator of the ChatGPT Codex backend and OpenAI auth (loopback only by default).
#[derive(Parser, Debug)]
#[command(name = "upstream-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Number of accounts to create at start (acct_sim_1, acct_sim_2, ...).
    #[arg(long, default_value_t = 3)]
    accounts: usize,
    /// Switch off the strict request validation of §8.2.
    #[arg(long)]
    lenient: bool,
    /// Serve canned answers for load tests.
    #[arg(long, value_parser = parse_bench)]
    bench: Option<BenchProfile>,
    /// JSON array of account specs to create in addition to --accounts.
    #[arg(long)]
    accounts_file: Option<PathBuf>,
    /// Write `<account_id>.auth.json` for every account into this directory.
    #[arg(long)]
    auth_json_dir: Option<PathBuf>,
}

fn parse_bench(s: &str) -> Result<BenchProfile, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let specs: Vec<AccountSpec> = match &args.accounts_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("parsing {} as a JSON array of accounts", path.display())
            })?
        }
        None => Vec::new(),
    };
    let config = SimConfig {
        accounts: args.accounts,
        strict: !args.lenient,
        bench: args.bench,
        ..SimConfig::default()
    };
    let sim = Simulator::start(args.listen, config).await?;
    for spec in specs {
        sim.create_account(spec);
    }
    if let Some(dir) = &args.auth_json_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for a in sim.accounts() {
            if let Some(json) = sim.auth_json(&a.account_id) {
                let path = dir.join(format!("{}.auth.json", a.account_id));
                std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", sim.base_url())?;
    for a in sim.accounts() {
        writeln!(out, "{} {} {}", a.account_id, a.plan_type, a.email)?;
    }
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
