//! `cargo run --release -p codex-pooler --bin bench`: the gateway (request
//! logging on) against the simulator in bench mode, and the simulator alone,
//! in the same run; non-streaming and SSE; concurrency 1 and 32. Prints p50,
//! p99 and requests per second for both, and the gateway/direct ratios.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use codex_pooler::app::RunningApp;
use codex_pooler::config::Settings;
use serde_json::json;
use upstream_sim::{BenchProfile, SimConfig, Simulator};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    duration_secs: u64,
    /// Simulator profile: instant-json, fixed-60ms, sse-short, sse-large.
    #[arg(long, default_value = "instant-json")]
    profile: String,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Database for the gateway (default: a temporary SQLite file).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    errors: usize,
}

async fn measure(
    client: reqwest::Client,
    target: Arc<Target>,
    concurrency: usize,
    duration: Duration,
) -> Stats {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut req = client
                    .post(&target.url)
                    .body(target.body.clone())
                    .header("content-type", "application/json");
                for (k, v) in &target.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(all.len() - 1);
        all[i].as_secs_f64() * 1000.0
    };
    Stats {
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        rps: all.len() as f64 / elapsed,
        errors,
    }
}

struct Target {
    url: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile: BenchProfile = args.profile.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            accounts: 3,
            bench: Some(profile),
            ..SimConfig::default()
        },
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("cxp-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let mut settings = Settings::for_tests(dir.clone(), url);
    settings.upstream_base_url = sim.base_url();
    settings.auth_base_url = sim.base_url();
    let app = RunningApp::spawn(settings).await?;
    let info = codex_pooler::demo::seed(&app, &sim).await?;
    let account = sim
        .accounts()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no account"))?;

    let body = |stream: bool| {
        serde_json::to_vec(&json!({
            "model": "gpt-5.5", "instructions": "", "stream": stream, "store": false,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "benchmark"}]}],
        }))
    };
    let direct = Arc::new(Target {
        url: format!("{}/backend-api/codex/responses", sim.base_url()),
        body: body(true)?,
        headers: vec![
            (
                "authorization".into(),
                format!("Bearer {}", account.access_token),
            ),
            ("chatgpt-account-id".into(), account.account_id.clone()),
        ],
    });
    let gateway = |stream: bool| -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(Target {
            url: format!("{}/backend-api/codex/responses", app.base_url()),
            body: body(stream)?,
            headers: vec![("authorization".into(), format!("Bearer {}", info.api_key))],
        }))
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    let duration = Duration::from_secs(args.duration_secs);
    // Warm up connections and caches.
    let _ = measure(
        client.clone(),
        direct.clone(),
        4,
        Duration::from_millis(500),
    )
    .await;
    let _ = measure(
        client.clone(),
        gateway(true)?,
        4,
        Duration::from_millis(500),
    )
    .await;

    println!(
        "profile {}, {} s per cell, request logging on ({})",
        profile.as_str(),
        args.duration_secs,
        app.runtime.store.backend()
    );
    println!(
        "| mode | conc | direct p50 ms | direct p99 ms | direct rps | gateway p50 ms | gateway p99 ms | gateway rps | p50 ratio | p99 ratio | rps ratio | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (mode, stream) in [("non-streaming", false), ("sse", true)] {
        for &c in &args.concurrency {
            let d = measure(client.clone(), direct.clone(), c, duration).await;
            let g = measure(client.clone(), gateway(stream)?, c, duration).await;
            println!(
                "| {mode} | {c} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                d.p50_ms,
                d.p99_ms,
                d.rps,
                g.p50_ms,
                g.p99_ms,
                g.rps,
                g.p50_ms / d.p50_ms,
                g.p99_ms / d.p99_ms,
                g.rps / d.rps,
                d.errors + g.errors
            );
        }
    }
    app.runtime.recorder.flush().await;
    let rows = app.runtime.store.list_request_logs(1, None).await?;
    println!(
        "request rows recorded: newest status {:?}",
        rows.first().map(|r| r.status.clone())
    );
    app.stop().await?;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
