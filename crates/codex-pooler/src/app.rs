//! Wiring: connect and migrate the store, load the secret key, build the
//! runtime and the router, bind the listener, serve until shutdown, then let
//! streams in flight finish within the grace period and flush the recorder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::crypto::{KeySource, SecretBox};
use crate::runtime::{Runtime, build_http_client};
use crate::store::Store;

/// Opens the store and the secret key as every command needs them.
pub async fn open_store(settings: &Settings) -> anyhow::Result<(Store, SecretBox)> {
    std::fs::create_dir_all(&settings.data_dir)?;
    let store = Store::connect(&settings.database_url()).await?;
    store.migrate().await?;
    let (secret_box, source) =
        SecretBox::load_or_create(settings.secret_key.as_deref(), &settings.key_file())?;
    if source == KeySource::GeneratedFile {
        eprintln!(
            "warning: generated a new secret-encryption key at {} (mode 0600). Back it up: without it the stored \
             upstream credentials cannot be read. Set CODEX_POOLER_SECRET_KEY to manage it yourself.",
            settings.key_file().display()
        );
    }
    Ok((store, secret_box))
}

/// The full HTTP router.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .merge(crate::proxy::router())
        .merge(crate::admin::router())
        .merge(crate::ops::router())
        .with_state(rt)
}

/// A built, bound, not yet serving gateway.
pub struct Application {
    listener: TcpListener,
    pub runtime: Arc<Runtime>,
    /// The one-time token for `/bootstrap`, when no operator exists yet.
    pub bootstrap_token: Option<String>,
}

impl Application {
    /// Connects, migrates, binds (port 0 works).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let _ = crate::ops::install_metrics();
        let (store, secret_box) = open_store(&settings).await?;
        let listener = TcpListener::bind(settings.listen).await?;
        let bootstrap_token = crate::admin::console::prepare_bootstrap(&store).await?;
        if let Some(token) = &bootstrap_token {
            tracing::warn!(
                "no operator exists yet: create the owner at http://{}/bootstrap?token={token} \
                 (valid 24 h, once), or run `codex-pooler owner create`",
                listener.local_addr()?
            );
        }
        let prices = crate::accounting::load_active_prices(&store).await?;
        let runtime = Arc::new(Runtime::new(
            settings,
            store,
            secret_box,
            prices,
            build_http_client()?,
            TaskTracker::new(),
            CancellationToken::new(),
        ));
        runtime
            .store
            .heartbeat_instance(&runtime.instance_id)
            .await?;
        crate::jobs::start(&runtime);
        Ok(Application {
            listener,
            runtime,
            bootstrap_token,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the runtime's shutdown token is cancelled.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let rt = self.runtime.clone();
        let shutdown = rt.shutdown.clone();
        let grace = Duration::from_secs(rt.settings.shutdown_grace_secs);
        let serve = axum::serve(
            self.listener,
            router(rt.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let stopped = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = serve => result?,
            () = stopped => tracing::warn!("shutdown grace period elapsed; closing remaining connections"),
        }
        rt.recorder.flush().await;
        if let Err(err) = rt.store.stop_instance(&rt.instance_id).await {
            tracing::warn!(error = %err, "could not mark this instance stopped");
        }
        rt.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), rt.tasks.wait()).await;
        rt.store.close().await;
        Ok(())
    }
}

/// A gateway serving in the background (tests, demo, benchmarks).
pub struct RunningApp {
    pub addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    /// See [`Application::bootstrap_token`].
    pub bootstrap_token: Option<String>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// Builds and serves in a background task.
    pub async fn spawn(settings: Settings) -> anyhow::Result<RunningApp> {
        let app = Application::build(settings).await?;
        let addr = app.local_addr()?;
        let runtime = app.runtime.clone();
        let bootstrap_token = app.bootstrap_token.clone();
        let handle = tokio::spawn(app.run_until_stopped());
        Ok(RunningApp {
            addr,
            runtime,
            bootstrap_token,
            handle,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests shutdown and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.runtime.shutdown.cancel();
        self.handle.await?
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
