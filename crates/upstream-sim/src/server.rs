//! The TCP accept loop. We drive hyper ourselves (instead of `axum::serve`) so a
//! handler can abort its own connection: close before headers, or a real TCP
//! reset mid-stream. Each request carries a [`ConnCtx`] extension for that.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Per-connection handle given to handlers.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub id: u64,
    kill: CancellationToken,
    reset: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ConnCtx {
    /// Drop the connection now (FIN, or RST when `reset`).
    pub fn abort(&self, reset: bool) {
        if reset {
            self.reset.store(true, Ordering::SeqCst);
        }
        self.kill.cancel();
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(0);

/// Serve `router` until `shutdown` fires; connection tasks go into `tracker`.
/// `hard` ends connections that did not finish gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                // Usually EMFILE; back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A duplicate descriptor lets us set SO_LINGER=0 (reset) after hyper owns the stream.
        let dup = socket2::SockRef::from(&stream).try_clone().ok();
        let ctx = ConnCtx {
            id: CONN_IDS.fetch_add(1, Ordering::Relaxed) + 1,
            kill: CancellationToken::new(),
            reset: Default::default(),
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        let hard = hard.clone();
        tracker.spawn(async move {
            let svc_ctx = ctx.clone();
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(svc_ctx.clone());
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req.map(Body::new)).await;
                    Ok::<_, Infallible>(match resp {
                        Ok(r) => r,
                        Err(never) => match never {},
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let mut graceful = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = ctx.kill.cancelled() => {
                        if ctx.reset.load(Ordering::SeqCst)
                            && let Some(d) = &dup
                        {
                            let _ = d.set_linger(Some(Duration::ZERO));
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !graceful => {
                        conn.as_mut().graceful_shutdown();
                        graceful = true;
                    }
                    _ = hard.cancelled() => break,
                }
            }
        });
    }
}
