//! `gatewatch.toml`: one file, overridable by environment, validated before anything runs.
//!
//! Every setting lives in a section (`[batch] max_rows = 8192`). Any setting can be
//! overridden by an environment variable named `GATEWATCH__<SECTION>__<KEY>` (double
//! underscores between levels, case-insensitive), e.g. `GATEWATCH__BATCH__MAX_ROWS=1024` or
//! `GATEWATCH__KAFKA__BROKERS=kafka:9092`. Values are read as TOML when they parse as TOML
//! (numbers, booleans, `["arrays"]`) and as plain strings otherwise. Unknown keys are
//! errors, and every error names the key and where it came from.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use gatewatch_ingest::source::Batching;
use gatewatch_ingest::source::kafka::KafkaSourceConfig;
use gatewatch_ingest::{Format, JsonFieldMapping};
use gatewatch_scoring::{IncidentConfig, ScoringConfig};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "GATEWATCH__";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// Decoding of files and stdin.
    pub input: InputConfig,
    /// When batches close.
    pub batch: Batching,
    /// Kafka input (topics, group, librdkafka properties, dead letters).
    pub kafka: KafkaSourceConfig,
    /// Field mapping of the generic `json` format: canonical field → JSON paths to try.
    pub json_fields: JsonFieldMapping,
    /// Risk fusion, rule thresholds, severities.
    pub scoring: ScoringConfig,
    /// Incident folding, idle close, suppressions.
    pub incidents: IncidentConfig,
    /// Where alerts go.
    pub alerts: AlertsConfig,
    /// The Parquet store: data directory, file sizes, compression, retention.
    pub store: gatewatch_hunt::StoreConfig,
    /// SQL over the store: the PostgreSQL-protocol server and the per-query limits.
    pub sql: gatewatch_hunt::SqlConfig,
    /// Feature stage: templating, windows, baselines, bounded state.
    pub features: gatewatch_features::FeatureConfig,
    /// Models: a trained artifact, or live learning (warm-up, retraining).
    pub models: crate::pipeline::engine::ModelsConfig,
    /// The SOC dashboard served by `run` and `demo`.
    pub dashboard: gatewatch_dashboard::DashboardConfig,
}

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Kafka topic `gatewatch run` publishes OCSF alerts to (on `kafka.brokers`), keyed by
    /// entity. Empty: no Kafka alerts.
    pub topic: String,
    /// Also append alerts as JSON lines to this file.
    pub file: Option<std::path::PathBuf>,
    /// How long to wait for the broker to acknowledge alerts before giving up on a commit
    /// (the batch is retried by a restart, never lost). Milliseconds.
    pub flush_timeout_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            topic: "gatewatch-alerts".into(),
            file: None,
            flush_timeout_ms: 30_000,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `gatewatch=debug,rdkafka=warn`. `RUST_LOG` wins
    /// when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines on stderr.
    Human,
    /// One JSON object per line on stderr, for log shippers.
    Json,
}

/// `[input]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Format of files and stdin when the command line gives none. Default `combined`.
    pub format: Format,
    /// Longest record accepted, in bytes; longer ones are `too_large` dead letters.
    /// Default 1 MiB.
    pub max_record_bytes: usize,
    /// How many `X-Forwarded-For` entries, counted from the right, your own proxies
    /// appended (load balancers, and the gateway when it appends its peer, as Envoy does
    /// with `use_remote_address`): the client is the entry this many places from the right
    /// (the leftmost of a shorter list); entries further left come from the client and are
    /// never used. If every client shows the balancer's address, it is one too low. 0
    /// ignores the header and takes the connection's address. Default 1. For `envoy` logs,
    /// and `json` with `forwarded_for`.
    pub trusted_proxy_hops: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            format: Format::Combined,
            max_record_bytes: gatewatch_ingest::batch::DEFAULT_MAX_RECORD_BYTES,
            trusted_proxy_hops: gatewatch_ingest::DecodeOptions::default().trusted_proxy_hops,
        }
    }
}

impl Config {
    /// Reads `path` (when given) and applies the environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        Self::from_parts(&text, &origin, &vars)
    }

    /// Parses TOML text, applies `GATEWATCH__…` overrides from `vars`, and validates.
    pub fn from_parts(text: &str, origin: &str, vars: &[(String, String)]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).with_context(|| format!("{origin} is not valid TOML"))?;
        let mut applied = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                bail!("environment variable {name}: empty key segment");
            }
            set_path(&mut table, &keys, parse_env_value(value))
                .with_context(|| format!("environment variable {name}"))?;
            applied.push((keys.join("."), name.clone()));
        }
        // Over the defaults, not on its own: a section or table the text gives keeps the
        // defaults of the keys it leaves out, including those a parent sets differently
        // from the child type's own default (`[models.trainer] profile_features`).
        let mut merged = toml::Value::try_from(Config::default())
            .context("the default configuration cannot be written as TOML")?;
        overlay(&mut merged, toml::Value::Table(table));
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let from = applied
                .iter()
                .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
                .map_or_else(
                    || origin.to_owned(),
                    |(_, v)| format!("environment variable {v}"),
                );
            anyhow::anyhow!("invalid setting `{key}` (from {from}): {}", e.into_inner())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// What the decoders need from the configuration: `[json_fields]` and
    /// `[input] trusted_proxy_hops`.
    pub fn decode_options(&self) -> gatewatch_ingest::DecodeOptions {
        gatewatch_ingest::DecodeOptions {
            json_fields: self.json_fields.clone(),
            trusted_proxy_hops: self.input.trusted_proxy_hops,
        }
    }

    /// Checks values the types alone cannot, naming the bad key.
    pub fn validate(&self) -> Result<()> {
        self.batch.validate().map_err(anyhow::Error::msg)?;
        self.json_fields
            .validate()
            .map_err(|e| anyhow::anyhow!("json_fields: {e}"))?;
        self.kafka.validate().map_err(anyhow::Error::msg)?;
        gatewatch_ingest::decode::check_trusted_proxy_hops(self.input.trusted_proxy_hops)
            .map_err(|e| anyhow::anyhow!("input.{e}"))?;
        if self.input.max_record_bytes < 256 || self.input.max_record_bytes > 64 << 20 {
            bail!(
                "input.max_record_bytes must be between 256 and 67108864, got {}",
                self.input.max_record_bytes
            );
        }
        self.scoring.validate().map_err(anyhow::Error::msg)?;
        self.incidents.validate().map_err(anyhow::Error::msg)?;
        self.models.validate().map_err(anyhow::Error::msg)?;
        self.dashboard
            .validate()
            .map_err(|e| anyhow::anyhow!("dashboard: {e}"))?;
        if self.alerts.flush_timeout_ms == 0 {
            bail!("alerts.flush_timeout_ms must be at least 1");
        }
        self.store.validate().map_err(anyhow::Error::msg)?;
        self.sql.validate().map_err(anyhow::Error::msg)?;
        let features = self.features.resolve().map_err(anyhow::Error::msg)?;
        let names = gatewatch_features::catalog::feature_names(&features.suffixes);
        if let Some(n) = self
            .store
            .extra_event_features
            .iter()
            .find(|n| !names.contains(n))
        {
            bail!(
                "store.extra_event_features: `{n}` is not a feature column with the spans of \
                 [features] (see features/FEATURES.md)"
            );
        }
        if self.log.level.trim().is_empty() {
            bail!("log.level must not be empty (try \"info\")");
        }
        Ok(())
    }
}

/// An environment value as TOML when it is one, else as a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Writes `given` over `base`, table by table; any other value replaces the one below.
fn overlay(base: &mut toml::Value, given: toml::Value) {
    match (base, given) {
        (toml::Value::Table(base), toml::Value::Table(given)) => {
            for (key, value) in given {
                match base.get_mut(&key) {
                    Some(slot) => overlay(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut cur = table;
    for (i, k) in parents.iter().enumerate() {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("`{}` is not a section", keys[..=i].join(".")),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn example_config_is_valid_and_documents_every_section() {
        let text = include_str!("../gatewatch.toml");
        let c = Config::from_parts(text, "gatewatch.toml", &[]).unwrap();
        assert_eq!(c.input.format, Format::Combined);
        for section in [
            "[log]",
            "[input]",
            "[batch]",
            "[kafka]",
            "[json_fields]",
            "[scoring]",
            "[incidents]",
            "[alerts]",
            "[models]",
            "[dashboard]",
            "[store]",
            "[sql]",
            "[features]",
        ] {
            assert!(text.contains(section), "gatewatch.toml lacks {section}");
        }
    }

    #[test]
    fn a_trainer_setting_keeps_the_other_trainer_defaults() {
        let c = Config::from_parts("[models.trainer]\nmax_drift = 0.3\n", "t.toml", &[]).unwrap();
        assert_eq!(c.models.trainer.max_drift, Some(0.3));
        // Setting one key must not switch the behaviour profiles off.
        assert_eq!(
            c.models.trainer,
            gatewatch_models::TrainerConfig {
                max_drift: Some(0.3),
                ..crate::pipeline::engine::ModelsConfig::default().trainer
            }
        );
        assert!(!c.models.trainer.profile_features.is_empty());
        let e =
            Config::from_parts("[models.trainer]\nmax_drift = 1.5\n", "t.toml", &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("models.trainer.max_drift"),
            "{e:#}"
        );
        let e =
            Config::from_parts("[models.trainer]\nmax_drfit = 0.3\n", "t.toml", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("max_drfit"), "{e:#}");
    }

    #[test]
    fn bad_model_parameters_are_refused_when_the_configuration_loads() {
        // Each names the table and the key, before any model is fitted.
        for (toml, names) in [
            (
                "[models.trainer.profiles]\nfit_rows = 5\n",
                ["models.trainer.profiles", "fit_rows"],
            ),
            (
                "[models.trainer.profiles]\nk_min = 9\nk_max = 3\n",
                ["models.trainer.profiles", "k_min/k_max"],
            ),
            (
                "[models.trainer.forest]\nn_trees = 0\n",
                ["models.trainer.forest", "n_trees"],
            ),
            (
                "[models.trainer.forest]\nsample_size = 1\n",
                ["models.trainer.forest", "sample_size"],
            ),
        ] {
            let e = Config::from_parts(toml, "t.toml", &[]).unwrap_err();
            for name in names {
                assert!(format!("{e:#}").contains(name), "{toml}: {e:#}");
            }
        }
        // The defaults and fit_rows = 0 (every row) pass.
        Config::from_parts("[models.trainer.profiles]\nfit_rows = 0\n", "t.toml", &[]).unwrap();
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let c = Config::from_parts(
            "[batch]\nmax_rows = 10\n",
            "t.toml",
            &vars(&[
                ("GATEWATCH__BATCH__MAX_ROWS", "20"),
                ("GATEWATCH__INPUT__FORMAT", "kong"),
                ("GATEWATCH__LOG__LEVEL", "debug"),
                ("OTHER__BATCH__MAX_ROWS", "30"),
            ]),
        )
        .unwrap();
        assert_eq!(c.batch.max_rows, 20);
        assert_eq!(c.input.format, Format::Kong);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn unknown_keys_are_named_with_their_origin() {
        let e = Config::from_parts("[batch]\nmax_rowz = 1\n", "t.toml", &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("max_rowz") && msg.contains("t.toml"), "{msg}");

        let e = Config::from_parts("", "t.toml", &vars(&[("GATEWATCH__BATCH__LINGER", "5")]))
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("GATEWATCH__BATCH__LINGER"), "{msg}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_parts("[input]\nformat = \"nginx\"\n", "t.toml", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("input.format"), "{e:#}");
        let e = Config::from_parts("[batch]\nmax_rows = 0\n", "t.toml", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("batch.max_rows"), "{e:#}");
        let e = Config::from_parts("[json_fields]\nbogus = [\"a\"]\n", "t.toml", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e =
            Config::from_parts("[input]\ntrusted_proxy_hops = 99\n", "t.toml", &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("input.trusted_proxy_hops"),
            "{e:#}"
        );
    }

    #[test]
    fn trusted_proxy_hops_reach_the_decoders() {
        assert_eq!(Config::default().decode_options().trusted_proxy_hops, 1);
        let v = vars(&[("GATEWATCH__INPUT__TRUSTED_PROXY_HOPS", "2")]);
        let c = Config::from_parts("", "t.toml", &v).unwrap();
        assert_eq!(c.decode_options().trusted_proxy_hops, 2);
    }
}
