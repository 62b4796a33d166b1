//! `cargo run --release -p codex-pooler --bin bench`: the gateway (request
//! logging on, its own process) against the simulator in bench mode, and the
//! simulator measured directly, in the same run. Prints:
//! - throughput: non-streaming and SSE at concurrency 1 and 32 (p50, p99, rps, ratios);
//! - time to first byte added over HTTP SSE, `/v1` SSE and the websocket;
//! - the gateway's resident memory with 1,000 idle client websockets open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use codex_pooler::config::Settings;
use codex_pooler::control;
use codex_pooler::store::AuditActor;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use upstream_sim::{BenchProfile, SimConfig, Simulator};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Seconds per throughput cell.
    #[arg(long, default_value_t = 4)]
    duration_secs: u64,
    /// Simulator profile: instant-json, fixed-60ms, sse-short, sse-large.
    #[arg(long, default_value = "instant-json")]
    profile: String,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Requests per time-to-first-byte series.
    #[arg(long, default_value_t = 400)]
    ttfb_requests: usize,
    /// Idle client websockets for the memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_sockets: usize,
    /// Database for the gateway (default: a temporary SQLite file).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Internal: serve the gateway and print its address on the first stdout line.
    Gateway {
        #[command(flatten)]
        settings: Settings,
    },
}

const SECRET_KEY: &str = "YmVuY2htYXJrLWtleS0zMi1ieXRlcy1sb25nLWtleSE=";

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    errors: usize,
}

fn percentiles(mut all: Vec<Duration>, elapsed: f64, errors: usize) -> Stats {
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

impl Target {
    fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut req = client
            .post(&self.url)
            .body(self.body.clone())
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req
    }
}

async fn throughput(
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
                match target.request(&client).send().await {
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
    percentiles(all, started.elapsed().as_secs_f64(), errors)
}

/// Sequential time to first body byte.
async fn ttfb_http(client: &reqwest::Client, target: &Target, n: usize) -> Stats {
    let started = Instant::now();
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        match target.request(client).send().await {
            Ok(r) if r.status().is_success() => {
                let mut stream = r.bytes_stream();
                match stream.next().await {
                    Some(Ok(_)) => all.push(t.elapsed()),
                    _ => errors += 1,
                }
                while stream.next().await.is_some() {}
            }
            _ => errors += 1,
        }
    }
    percentiles(all, started.elapsed().as_secs_f64(), errors)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, headers: &[(String, String)]) -> anyhow::Result<Socket> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            k.parse::<tokio_tungstenite::tungstenite::http::HeaderName>()?,
            v.parse()?,
        );
    }
    req.headers_mut()
        .insert("openai-beta", "responses_websockets=2026-02-06".parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// Sequential websocket turns on one socket: time to the first frame.
async fn ttfb_ws(url: &str, headers: &[(String, String)], n: usize) -> anyhow::Result<Stats> {
    let mut socket = ws_connect(url, headers).await?;
    let turn = json!({"type": "response.create", "model": "gpt-5.5", "instructions": "", "store": false, "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "benchmark"}]}]})
    .to_string();
    let started = Instant::now();
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        socket.send(Message::text(turn.clone())).await?;
        let mut first = true;
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    if first {
                        all.push(t.elapsed());
                        first = false;
                    }
                    if text.as_str().contains("\"response.completed\"") {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    Ok(percentiles(all, started.elapsed().as_secs_f64(), errors))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    let app = codex_pooler::app::Application::build(settings).await?;
    println!("http://{}", app.local_addr()?);
    let shutdown = app.runtime.shutdown.clone();
    tokio::spawn(async move {
        // The parent closes our stdin to stop us.
        let mut line = String::new();
        let _ = tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await;
        shutdown.cancel();
    });
    app.run_until_stopped().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Role::Gateway { settings }) = args.role {
        return serve_gateway(settings).await;
    }
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
    let (api_key, limited_key) = seed(&dir, &url, &sim).await?;

    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["gateway", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args([
            "--database-url",
            &url,
            "--secret-key",
            SECRET_KEY,
            "--upstream-base-url",
            &sim.base_url(),
            "--auth-base-url",
            &sim.base_url(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("gateway process has no pid"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let gateway = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("gateway printed no address"))?;
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
    let direct_headers = vec![
        (
            "authorization".to_owned(),
            format!("Bearer {}", account.access_token),
        ),
        ("chatgpt-account-id".to_owned(), account.account_id.clone()),
    ];
    let key_headers = vec![("authorization".to_owned(), format!("Bearer {api_key}"))];
    let direct = Arc::new(Target {
        url: format!("{}/backend-api/codex/responses", sim.base_url()),
        body: body(true)?,
        headers: direct_headers.clone(),
    });
    let via = |path: &str, stream: bool| -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(Target {
            url: format!("{gateway}{path}"),
            body: body(stream)?,
            headers: key_headers.clone(),
        }))
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    let duration = Duration::from_secs(args.duration_secs);
    let _ = throughput(
        client.clone(),
        direct.clone(),
        4,
        Duration::from_millis(500),
    )
    .await;
    let _ = throughput(
        client.clone(),
        via("/backend-api/codex/responses", true)?,
        4,
        Duration::from_millis(500),
    )
    .await;

    println!(
        "profile {}, {} s per cell, request logging on, gateway in its own process (pid {pid})",
        profile.as_str(),
        args.duration_secs
    );
    println!("\nThroughput (gateway vs simulator direct)\n");
    println!(
        "| mode | conc | direct p50 ms | direct p99 ms | direct rps | gateway p50 ms | gateway p99 ms | gateway rps | p50 ratio | p99 ratio | rps ratio | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (mode, stream) in [("non-streaming", false), ("sse", true)] {
        for &c in &args.concurrency {
            let d = throughput(client.clone(), direct.clone(), c, duration).await;
            let g = throughput(
                client.clone(),
                via("/backend-api/codex/responses", stream)?,
                c,
                duration,
            )
            .await;
            println!(
                "| {mode} | {c} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
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

    println!(
        "\nCost of key policy and reservation (SSE, same gateway; limits set but never reached)\n"
    );
    println!(
        "| conc | no limits p50 ms | no limits p99 ms | no limits rps | with limits p50 ms | with limits p99 ms | with limits rps | p50 ratio | rps ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let limited_target = Arc::new(Target {
        url: format!("{gateway}/backend-api/codex/responses"),
        body: body(true)?,
        headers: vec![("authorization".to_owned(), format!("Bearer {limited_key}"))],
    });
    for &c in &args.concurrency {
        let plain = throughput(
            client.clone(),
            via("/backend-api/codex/responses", true)?,
            c,
            duration,
        )
        .await;
        let limited = throughput(client.clone(), limited_target.clone(), c, duration).await;
        println!(
            "| {c} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} |",
            plain.p50_ms,
            plain.p99_ms,
            plain.rps,
            limited.p50_ms,
            limited.p99_ms,
            limited.rps,
            limited.p50_ms / plain.p50_ms,
            limited.rps / plain.rps
        );
    }

    println!(
        "\nTime to first byte, sequential, {} requests each\n",
        args.ttfb_requests
    );
    println!(
        "| path | direct p50 ms | direct p99 ms | gateway p50 ms | gateway p99 ms | added p50 ms | added p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let n = args.ttfb_requests;
    let d_sse = ttfb_http(&client, &direct, n).await;
    for (label, path) in [
        (
            "HTTP SSE /backend-api/codex/responses",
            "/backend-api/codex/responses",
        ),
        ("/v1/responses SSE", "/v1/responses"),
    ] {
        let target = via(path, true)?;
        let g = ttfb_http(&client, &target, n).await;
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            d_sse.p50_ms,
            d_sse.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d_sse.p50_ms,
            g.p99_ms - d_sse.p99_ms,
            d_sse.errors + g.errors
        );
    }
    let ws_direct = ttfb_ws(
        &format!(
            "{}/backend-api/codex/responses",
            sim.base_url().replacen("http", "ws", 1)
        ),
        &direct_headers,
        n,
    )
    .await?;
    let ws_gateway = ttfb_ws(
        &format!(
            "{}/backend-api/codex/responses",
            gateway.replacen("http", "ws", 1)
        ),
        &key_headers,
        n,
    )
    .await?;
    println!(
        "| websocket turn | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        ws_direct.p50_ms,
        ws_direct.p99_ms,
        ws_gateway.p50_ms,
        ws_gateway.p99_ms,
        ws_gateway.p50_ms - ws_direct.p50_ms,
        ws_gateway.p99_ms - ws_direct.p99_ms,
        ws_direct.errors + ws_gateway.errors
    );

    let before = rss_kib(pid).unwrap_or(0);
    let mut sockets = Vec::with_capacity(args.idle_sockets);
    let ws_url = format!(
        "{}/backend-api/codex/responses",
        gateway.replacen("http", "ws", 1)
    );
    for i in 0..args.idle_sockets {
        let mut headers = key_headers.clone();
        headers.push(("session_id".into(), format!("idle-{i}")));
        sockets.push(ws_connect(&ws_url, &headers).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid).unwrap_or(0);
    println!(
        "\nGateway resident memory: {:.1} MiB before, {:.1} MiB with {} idle client websockets open (each with its upstream socket): {:.1} KiB per socket pair",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        sockets.len(),
        after.saturating_sub(before) as f64 / sockets.len().max(1) as f64
    );
    drop(sockets);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

async fn seed(
    dir: &std::path::Path,
    url: &str,
    sim: &Simulator,
) -> anyhow::Result<(String, String)> {
    let settings = Settings {
        secret_key: Some(SECRET_KEY.into()),
        ..Settings::for_tests(dir.to_path_buf(), url.to_owned())
    };
    let (store, secret_box) = codex_pooler::app::open_store(&settings).await?;
    let actor = AuditActor::cli();
    let pool = store.create_pool(&actor, "bench", "Bench").await?;
    for account in sim.accounts() {
        let auth = sim
            .auth_json(&account.account_id)
            .ok_or_else(|| anyhow::anyhow!("no auth.json"))?;
        let mut parsed = control::parse_auth_json(&auth.to_string(), None)?;
        parsed.identity.base_url = Some(sim.base_url());
        parsed.identity.auth_base_url = Some(sim.base_url());
        control::import_auth_json(&store, &secret_box, &actor, &pool.id, &parsed).await?;
    }
    let (_, key) = control::create_api_key(&store, &actor, &pool.id, "bench", None, None).await?;
    let (limited_id, limited) =
        control::create_api_key(&store, &actor, &pool.id, "bench with limits", None, None).await?;
    let policy = codex_pooler::store::KeyPolicy {
        max_requests_per_minute: Some(1_000_000_000),
        max_tokens_per_day: Some(1_000_000_000_000),
        max_tokens_per_week: Some(1_000_000_000_000),
        max_spend_micros_per_day: Some(1_000_000_000_000),
        ..Default::default()
    };
    store.set_key_policy(&actor, &limited_id, &policy).await?;
    store.close().await;
    Ok((key, limited))
}
