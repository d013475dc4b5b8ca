//! `gatewatch query`: run read-only SQL over the store and print the result.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use gatewatch_hunt::HuntSession;
use gatewatch_hunt::output::{OutputFormat, write_output};

use crate::config::Config;

/// Output formats of `gatewatch query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines, one object per row.
    Json,
    /// Parquet (needs --output or a redirected stdout).
    Parquet,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => OutputFormat::Table,
            Format::Csv => OutputFormat::Csv,
            Format::Json => OutputFormat::Json,
            Format::Parquet => OutputFormat::Parquet,
        }
    }
}

/// Arguments of `gatewatch query`.
#[derive(Debug, Args)]
#[command(after_help = "\
Tables: events, alerts, incidents, endpoints (partition columns `date` and `hour` on the
first three). Hunting functions: ip_in_cidr(ip, cidr), ip_network(ip, prefix_len),
endpoint_template(path).

Examples:
  gatewatch query \"SELECT label, count(*) FROM events GROUP BY label ORDER BY 2 DESC\"
  gatewatch query -f hunts/api1_bola_enumeration.sql --format csv
  gatewatch query --format parquet -o bola.parquet \"SELECT * FROM events WHERE label = 'bola'\"")]
pub struct QueryArgs {
    /// The SQL to run; several statements separated by `;` run in turn.
    #[arg(value_name = "SQL", required_unless_present = "file")]
    sql: Option<String>,
    /// Read the SQL from this file (`-` for stdin) instead.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        conflicts_with = "sql"
    )]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the result here instead of stdout.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Data directory (overrides `[store] data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print each statement's run time on stderr.
    #[arg(long)]
    timing: bool,
}

/// Runs `gatewatch query`.
pub fn run(args: QueryArgs, config: &Config) -> Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading SQL from stdin")?;
            s
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => bail!("give the SQL as an argument or with -f FILE"),
    };
    let statements = HuntSession::split_statements(&sql)?;
    if statements.is_empty() {
        bail!("no SQL statement given");
    }
    if args.format == Format::Parquet && statements.len() > 1 {
        bail!("--format parquet writes one result: give one statement");
    }
    if args.format == Format::Parquet
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        bail!("--format parquet is binary: use -o FILE or redirect stdout");
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.clone());
    // A mistyped data directory would otherwise read as an empty store: "0 events".
    if !dir.is_dir() {
        bail!(
            "no store at {}: pass --data-dir (or set [store] data_dir) to where `gatewatch \
             run` or `gatewatch demo` keeps it",
            dir.display()
        );
    }
    let limits = config.sql.limits();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let session = HuntSession::open(&dir, limits)
            .await
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        let mut sink: Box<dyn std::io::Write + Send> = match &args.output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        };
        for stmt in &statements {
            let t = Instant::now();
            let out = session.query(stmt).await?;
            if args.timing {
                eprintln!("{} rows in {:.3} s", out.rows, t.elapsed().as_secs_f64());
            }
            if args.format != Format::Table
                && let Some(why) = out.cut_message()
            {
                eprintln!("gatewatch: {why}");
            }
            write_output(&out, args.format.into(), &mut sink)?;
        }
        Ok(())
    })
}
