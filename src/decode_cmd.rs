//! `gatewatch decode`: see exactly what the engine sees.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::json::LineDelimitedWriter;
use arrow::util::pretty::pretty_format_batches;

use gatewatch_ingest::source::file::FileSource;
use gatewatch_ingest::{BatchDecoder, DeadLetterCounts, Format, decoder_for};

use crate::config::Config;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object per event (nulls omitted).
    Json,
    /// A table per batch, for a quick look at small inputs.
    Table,
}

/// Arguments of `gatewatch decode`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  gatewatch decode --format combined /var/log/nginx/access.log
  gatewatch decode --format kong --summary kong-*.jsonl.gz
  gatewatch simulate --format envoy --events 1000 | gatewatch decode --format envoy -
  gatewatch decode --format aws-waf --dead-letters bad.jsonl waf.log > events.jsonl

Events go to stdout; each dead letter is reported on stderr (reason, where, why)
and, with --dead-letters, written in full as JSON lines. Gzip input is detected
by content.")]
pub struct DecodeArgs {
    /// Log format: combined, common, kong, envoy, aws-apigw, aws-waf, modsecurity, json.
    /// Defaults to `[input] format` of the config (combined).
    #[arg(short, long, value_parser = parse_format)]
    pub format: Option<Format>,

    /// Files to read in order (plain or gzip); `-` or none for stdin.
    pub files: Vec<String>,

    /// Print only one JSON object: {"events": N, "dead_letters": {"<reason>": N, …}}.
    #[arg(long)]
    pub summary: bool,

    /// How to print events.
    #[arg(long, value_enum, default_value_t = Output::Json)]
    pub output: Output,

    /// Also write every dead letter (reason, detail, raw bytes, provenance) to this file as
    /// JSON lines.
    #[arg(long, value_name = "PATH")]
    pub dead_letters: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// Runs the command.
pub fn run(args: DecodeArgs, config: &Config) -> Result<()> {
    let format = args.format.unwrap_or(config.input.format);
    let decoder = decoder_for(format, &config.decode_options()).map_err(anyhow::Error::msg)?;
    let files = if args.files.is_empty() {
        vec!["-".to_owned()]
    } else {
        args.files.clone()
    };
    let batch_decoder = BatchDecoder::new(decoder, config.batch.max_rows);
    let mut source = FileSource::open_with_limit(
        files,
        batch_decoder,
        config.batch,
        config.input.max_record_bytes,
    )?;

    let mut dead_file = match &args.dead_letters {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut events: u64 = 0;
    let mut counts = DeadLetterCounts::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();

    while let Some(batch) = source.next_batch()? {
        let decoded = batch.decoded;
        events += decoded.events.num_rows() as u64;
        for dl in &decoded.dead_letters {
            counts.add(dl.reason);
            if let Some(f) = dead_file.as_mut() {
                serde_json::to_writer(&mut *f, dl)?;
                f.write_all(b"\n")?;
            }
            if !args.summary {
                eprintln!(
                    "dead letter {} ({}): {}",
                    dl.provenance, dl.reason, dl.detail
                );
            }
        }
        if !args.summary && decoded.events.num_rows() > 0 {
            let written = match args.output {
                Output::Json => {
                    let mut w = LineDelimitedWriter::new(&mut out);
                    w.write(&decoded.events)
                        .and_then(|_| w.finish())
                        .map_err(io::Error::other)
                }
                Output::Table => pretty_format_batches(&[decoded.events])
                    .map_err(io::Error::other)
                    .and_then(|t| writeln!(out, "{t}")),
            };
            if let Err(e) = written {
                if is_broken_pipe(&e) {
                    return Ok(());
                }
                return Err(e).context("writing events");
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                events,
                dead_letters = counts.total(),
                events_per_sec = (events as f64 / secs) as u64,
                "decoding"
            );
        }
    }
    if let Some(mut f) = dead_file {
        f.flush()?;
    }
    if args.summary {
        // Written by hand to keep the documented key order: events first.
        writeln!(
            out,
            "{{\"events\":{events},\"dead_letters\":{}}}",
            counts.to_json()
        )?;
    }
    match out.flush() {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}

fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
