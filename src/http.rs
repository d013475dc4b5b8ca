//! The HTTP side of `run` and `demo`: one small tokio runtime on its own thread serving the
//! health, metrics (and dashboard) routes, so the engine threads never wait on it.

use std::net::SocketAddr;

use anyhow::{Context, Result};

/// A running server; dropping it shuts it down.
pub struct HttpServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` now (so a busy port is an error at start) and serves `router` on a
/// background thread.
pub fn serve_in_background(addr: SocketAddr, router: axum::Router) -> Result<HttpServer> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (is another gatewatch running?)"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("gatewatch-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("HTTP runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("HTTP listener: {e}");
                        return;
                    }
                };
                let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("HTTP server: {e}");
                }
            });
        })
        .context("starting the HTTP thread")?;
    Ok(HttpServer {
        shutdown: Some(tx),
        thread: Some(thread),
        addr: bound,
    })
}
