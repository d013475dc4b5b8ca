//! `gatewatch train`: learn a model from logs and save it as a versioned artifact.
//!
//! The files run through the same feature stage as live traffic; the isolation forest and
//! behaviour profiles train on the feature rows, the content profiles on the requests. The
//! artifact records the feature list (and its hash), the training window, the row counts
//! and the calibration, and `run`/`demo`/`backtest` refuse it when their feature
//! configuration differs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, BooleanArray, Float32Array, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;

use gatewatch_features::FeatureStage;
use gatewatch_ingest::Format;
use gatewatch_models::content::ContentProfiles;
use gatewatch_models::{Reservoir, Trainer};
use gatewatch_scoring::columns::StrCol;

use crate::config::Config;
use crate::pipeline::engine::model_features;

const EXAMPLES: &str = "\
Examples:
  # a day of Kong logs, all taken as normal
  gatewatch train --format kong --out model.gwm day-1.jsonl.gz

  # labelled data: learn only from the rows labelled normal
  gatewatch train --format json --normal-only --normal-label normal --out model.gwm train.jsonl

  # then score with it
  GATEWATCH__MODELS__PATH=model.gwm gatewatch run

Training data should be traffic you believe is mostly normal: the models learn what
normal looks like and flag what is unlike it.";

/// Arguments of `gatewatch train`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct TrainArgs {
    /// Log files (plain or gzip); `-` for stdin.
    #[arg(required = true)]
    pub input: Vec<String>,
    /// Log format (default: `[input] format`).
    #[arg(short, long, value_parser = |s: &str| s.parse::<Format>())]
    pub format: Option<Format>,
    /// Where to write the model.
    #[arg(short, long)]
    pub out: PathBuf,
    /// JSON field holding each record's label (json format).
    #[arg(long)]
    pub label_field: Option<String>,
    /// Learn only from rows whose label is the normal one (or that carry no label).
    #[arg(long)]
    pub normal_only: bool,
    /// The label value of normal traffic.
    #[arg(long, default_value = "normal")]
    pub normal_label: String,
    /// Most feature rows the forest trains on (the most recent are kept).
    #[arg(long, default_value_t = 200_000)]
    pub max_rows: usize,
}

pub fn run(args: TrainArgs, config: &Config) -> Result<()> {
    let format = args.format.unwrap_or(config.input.format);
    let mut source = crate::pipeline::labelled_file_source(
        &args.input,
        format,
        args.label_field.as_deref(),
        config,
    )?;
    let mut stage = FeatureStage::new(config.features.clone()).context("features")?;
    let names = model_features(stage.feature_names());
    let mut reservoir =
        Reservoir::new(names.len(), args.max_rows.max(1000)).context("--max-rows")?;
    let mut content = ContentProfiles::new(config.models.content.clone());
    let trainer =
        Trainer::new(names.clone(), config.models.trainer.clone()).context("models.trainer")?;

    let started = Instant::now();
    let mut last = Instant::now();
    let (mut events, mut used, mut dead) = (0u64, 0u64, 0u64);
    let mut row = vec![0f32; names.len()];
    while let Some(sb) = source.next_batch()? {
        dead += sb.decoded.dead_letters.len() as u64;
        let batch = &sb.decoded.events;
        events += batch.num_rows() as u64;
        let featured = stage.process(batch).context("feature stage")?;
        let keep = if args.normal_only {
            let labels = StrCol::of(&featured, gatewatch_ingest::schema::col::LABEL)?;
            let mask: BooleanArray = (0..featured.num_rows())
                .map(|i| Some(labels.get(i).is_none_or(|l| l == args.normal_label)))
                .collect();
            filter_record_batch(&featured, &mask)?
        } else {
            featured
        };
        used += keep.num_rows() as u64;
        let cols: Vec<&Float32Array> = names
            .iter()
            .map(|n| {
                keep.column_by_name(n)
                    .and_then(|a| a.as_any().downcast_ref::<Float32Array>())
                    .with_context(|| format!("feature column {n}"))
            })
            .collect::<Result<_>>()?;
        let times = keep
            .column_by_name(gatewatch_ingest::schema::col::TIMESTAMP)
            .and_then(|a| a.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .context("timestamp column")?;
        for r in 0..keep.num_rows() {
            for (k, c) in cols.iter().enumerate() {
                row[k] = c.value(r);
            }
            reservoir.push(&row, times.value(r), false)?;
        }
        content.train_batch(&keep).context("content profiles")?;
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "train: {events} events read, {used} learned, {dead} dead letters, {:.0} events/s",
                events as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    if used == 0 {
        bail!(
            "no rows to learn from ({events} events read, {dead} dead letters){}",
            if args.normal_only {
                format!("; none labelled {:?}", args.normal_label)
            } else {
                String::new()
            }
        );
    }
    eprintln!(
        "train: {events} events read, {used} learned; fitting {} trees on {} rows",
        config.models.trainer.forest.n_trees,
        reservoir.len()
    );
    let set = reservoir.snapshot();
    let mut model = trainer.train(&set).context("training")?;
    model.content = Some(content.to_bytes());
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "train: wrote {} ({} features, {} rows, {} content templates) in {:.1} s",
        args.out.display(),
        names.len(),
        model.rows.trained,
        content.templates(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
