//! The `gatewatch` command line: decode, simulate, and (as the engine grows) run, demo,
//! train, query.
//!
//! Each subcommand lives in a module of its own; this file parses arguments, loads the
//! configuration, sets up logging and dispatches.

mod backtest_cmd;
mod cap_warnings;
mod config;
mod dashboard_feed;
mod dashboard_store;
mod decode_cmd;
mod demo_cmd;
mod eval;
mod http;
mod logging;
mod metrics;
mod pipeline;
mod query_cmd;
mod run_cmd;
mod simulate_cmd;
mod sql_cmd;
mod suppress_cmd;
mod train_cmd;
mod train_source;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Catch API abuse in live gateway and WAF traffic.
#[derive(Debug, Parser)]
#[command(name = "gatewatch", version, about, long_about = None, after_help = "\
Try it:
  gatewatch demo

Configuration is read from --config (or $GATEWATCH_CONFIG); any setting can be
overridden with GATEWATCH__SECTION__KEY environment variables, for example
GATEWATCH__KAFKA__BROKERS=kafka:9092.")]
struct Cli {
    /// Configuration file (TOML). Without one, defaults apply.
    #[arg(
        short,
        long,
        global = true,
        env = "GATEWATCH_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    /// Log line format on stderr (overrides `[log] format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,

    /// Log filter, e.g. `debug` or `gatewatch=debug,rdkafka=warn` (overrides `[log] level`;
    /// RUST_LOG overrides both).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole engine on simulated traffic with every attack mixed in, and score it.
    Demo(demo_cmd::DemoArgs),
    /// Run the stream processor: Kafka in, alerts out.
    Run(run_cmd::RunArgs),
    /// Train a model from logs and save it (`model.gwm`).
    Train(train_cmd::TrainArgs),
    /// Replay labelled logs through the engine and report detection quality.
    Backtest(backtest_cmd::BacktestArgs),
    /// Silence alerts about an entity, category or endpoint (analyst feedback).
    Suppress(suppress_cmd::SuppressArgs),
    /// List the detector rules and their thresholds (after config overrides).
    Rules,
    /// Run read-only SQL over the store (tables events, alerts, incidents, endpoints).
    Query(query_cmd::QueryArgs),
    /// Serve the store over the PostgreSQL wire protocol (psql, Grafana, DBeaver, psycopg).
    Sql(sql_cmd::SqlArgs),
    /// Decode log files or stdin and print the events and dead letters.
    Decode(decode_cmd::DecodeArgs),
    /// Generate realistic API traffic with labelled attacks, in any supported format.
    Simulate(simulate_cmd::SimulateArgs),
    /// Check a configuration file and print it with defaults and overrides applied.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatewatch: {}", error_text(&e));
            return ExitCode::from(2);
        }
    };
    logging::init(
        cli.log_format.unwrap_or(config.log.format),
        cli.log_level.as_deref().unwrap_or(&config.log.level),
    );
    let result = match cli.command {
        Command::Demo(args) => demo_cmd::run(args, &config),
        Command::Run(args) => run_cmd::run(args, &config),
        Command::Train(args) => train_cmd::run(args, &config),
        Command::Backtest(args) => backtest_cmd::run(args, &config),
        Command::Suppress(args) => suppress_cmd::run(args, &config),
        Command::Rules => suppress_cmd::list_rules(&config),
        Command::Query(args) => query_cmd::run(args, &config),
        Command::Sql(args) => sql_cmd::run(args, &config),
        Command::Decode(args) => decode_cmd::run(args, &config),
        Command::Simulate(args) => simulate_cmd::run(args),
        Command::Config => toml::to_string_pretty(&config)
            .map(|t| print!("{t}"))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewatch: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose
/// text the previous one already carries: some libraries' errors (DataFusion's schema
/// errors, say) repeat their source in their own message, and a missing column would
/// otherwise list the table's every column once per layer.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(text.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn causes_repeated_in_their_parents_message_are_printed_once() {
        #[derive(Debug)]
        struct Wraps(std::io::Error);
        impl std::fmt::Display for Wraps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "schema error: {}", self.0)
            }
        }
        impl std::error::Error for Wraps {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let root = std::io::Error::other("no field named x; valid fields are a, b, c");
        let e = anyhow::Error::new(Wraps(root)).context("running the query");
        assert_eq!(
            error_text(&e),
            "running the query: schema error: no field named x; valid fields are a, b, c"
        );
        let plain = anyhow::anyhow!("disk full").context("writing the store");
        assert_eq!(error_text(&plain), "writing the store: disk full");
    }
}
