//! `gatewatch train`: learn a model from logs, the Parquet store or a Kafka topic, and save
//! it as a versioned artifact.
//!
//! The traffic runs through the same feature stage as live traffic; the isolation forest and
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
use crate::train_source::{KafkaReader, StoreReader, TrainSource};

const EXAMPLES: &str = "\
Examples:
  # a day of Kong logs, all taken as normal
  gatewatch train --format kong --out model.gwm day-1.jsonl.gz

  # labelled data: learn only from the rows labelled normal
  gatewatch train --format json --normal-only --normal-label normal --out model.gwm train.jsonl

  # yesterday's traffic from the store that `gatewatch run` writes
  gatewatch train --store ./gatewatch-data --from 2026-01-05T00:00:00Z --to 2026-01-06T00:00:00Z \
      --out model.gwm

  # everything a Kafka topic holds (read with a group of its own; ends when the topic
  # has been quiet for --kafka-idle)
  gatewatch train --kafka-topic gateway-logs --format kong --out model.gwm

  # then score with it
  GATEWATCH__MODELS__PATH=model.gwm gatewatch run

Training data should be traffic you believe is mostly normal: the models learn what
normal looks like and flag what is unlike it.";

/// Arguments of `gatewatch train`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "store", "kafka_topic"])))]
pub struct TrainArgs {
    /// Log files (plain or gzip); `-` for stdin.
    pub input: Vec<String>,
    /// Learn from the `events` table of this data directory (what `run` and `demo` store)
    /// instead of files; narrow it with --from and --to.
    #[arg(long, value_name = "DATA_DIR")]
    pub store: Option<PathBuf>,
    /// With --store: the first event time to learn from (RFC 3339).
    #[arg(long, requires = "store", value_parser = parse_time_us, value_name = "RFC3339")]
    pub from: Option<i64>,
    /// With --store: learn from events before this time (RFC 3339).
    #[arg(long, requires = "store", value_parser = parse_time_us, value_name = "RFC3339")]
    pub to: Option<i64>,
    /// Learn from this Kafka topic (brokers and properties from `[kafka]`), from its oldest
    /// record until it has been quiet for --kafka-idle; its format is --format.
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// With --kafka-topic: stop once no record has arrived for this long (counted while
    /// waiting for records, once the consumer has joined its group; joining may take up to
    /// a minute more before the reader gives up).
    #[arg(long, requires = "kafka_topic", default_value = "5s", value_parser = parse_idle)]
    pub kafka_idle: std::time::Duration,
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

fn parse_time_us(s: &str) -> std::result::Result<i64, String> {
    crate::simulate_cmd::parse_start(s)
}

fn parse_idle(s: &str) -> std::result::Result<std::time::Duration, String> {
    let us = crate::simulate_cmd::parse_duration_us(s)?;
    Ok(std::time::Duration::from_micros(us.max(0) as u64))
}

pub fn run(args: TrainArgs, config: &Config) -> Result<()> {
    let format = args.format.unwrap_or(config.input.format);
    let mut source = if let Some(dir) = &args.store {
        if args.label_field.is_some() {
            bail!("--label-field applies to files; stored events keep their label column");
        }
        TrainSource::Store(StoreReader::open(dir, args.from, args.to)?)
    } else if let Some(topic) = &args.kafka_topic {
        TrainSource::Kafka(Box::new(KafkaReader::open(
            config,
            topic,
            format,
            args.kafka_idle,
        )?))
    } else {
        TrainSource::Files(Box::new(crate::pipeline::labelled_file_source(
            &args.input,
            format,
            args.label_field.as_deref(),
            config,
        )?))
    };
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
    while let Some(tb) = source.next_batch()? {
        dead += tb.dead_letters;
        let batch = &tb.events;
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
                "train: {events} events read, {used} learned, {dead} dead letters, {:.0} events/s{}",
                events as f64 / started.elapsed().as_secs_f64(),
                crate::pipeline::progress_suffix(source.progress(), started.elapsed())
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
