//! `gatewatch sql`: serve the store over the PostgreSQL wire protocol.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use gatewatch_hunt::{HuntSession, SqlServer};

use crate::config::Config;

/// Arguments of `gatewatch sql`.
#[derive(Debug, Args)]
#[command(after_help = "\
Connect with any PostgreSQL client, database `gatewatch`, the [sql] user and password:
  GATEWATCH__SQL__PASSWORD=secret gatewatch sql
  PGPASSWORD=secret psql -h 127.0.0.1 -p 5433 -U gatewatch gatewatch
Only read-only queries run; every query has a timeout, a memory limit and a row cap.")]
pub struct SqlArgs {
    /// Data directory (overrides `[store] data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (overrides `[sql] listen`).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
}

/// Runs `gatewatch sql` until Ctrl-C or SIGTERM.
pub fn run(args: SqlArgs, config: &Config) -> Result<()> {
    let dir = args
        .data_dir
        .unwrap_or_else(|| config.store.data_dir.clone());
    let mut cfg = config.sql.clone();
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    // A server may start before the processor has written anything, so this is not an
    // error; but a mistyped directory would serve empty tables without a word.
    if !dir.is_dir() {
        tracing::warn!(
            dir = %dir.display(),
            "no store there yet: the tables stay empty until `gatewatch run` writes one \
             (check --data-dir or [store] data_dir)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let session = HuntSession::open(&dir, cfg.limits())
            .await
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        let server = SqlServer::bind(session, &cfg).await?;
        let addr = server.local_addr()?;
        tracing::info!(%addr, dir = %dir.display(), "serving SQL (PostgreSQL protocol), database gatewatch");
        // The tests read this line to find the port when listening on port 0.
        eprintln!("gatewatch sql: listening on {addr}");
        server.serve(shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
