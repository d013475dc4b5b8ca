//! The engine: feature stage → models → scoring, one batch at a time, on one thread.
//!
//! `gatewatch run`, `demo` and `backtest` all drive this same struct; they differ only in
//! where batches come from and where results go.
//!
//! Models: with a trained artifact (`[models] path`), scores start with the first event.
//! Without one, the engine learns live: it fills a reservoir with the feature rows of
//! events that did not alert, and once `warmup_events` have passed it trains the isolation
//! forest (and behaviour profiles) on a background thread and swaps the model in without
//! pausing; the content profiles learn from the same warm-up events. Every
//! `retrain_every_events` it retrains on the reservoir and logs the drift between the old
//! and the new model; with `[models.trainer] max_drift` set, a model that drifted further
//! is kept out, with a warning and `gatewatch_models_refused_total`. A retrain runs below
//! the engine's priority ([`gatewatch_models::stream::RETRAIN_NICENESS`]): a model is
//! already scoring, so the retrain can wait for the CPU, and the alerts it would otherwise
//! delay cannot.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_models::content::{ContentConfig, ContentProfiles};
use gatewatch_models::{
    ModelArtifact, ModelHandle, Reservoir, RetrainReport, Trainer, TrainerConfig,
};
use gatewatch_scoring::{IncidentAlert, IncidentConfig, ScoringConfig, ScoringStage};

/// `[models]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// A model trained by `gatewatch train`; without one the engine learns live.
    pub path: Option<PathBuf>,
    /// Events to learn from before the first live model is trained.
    pub warmup_events: u64,
    /// Retrain on the reservoir after this many more events; 0 never retrains.
    pub retrain_every_events: u64,
    /// Feature rows kept for (re)training: the most recent non-alerted ones.
    pub reservoir_rows: usize,
    /// Isolation-forest and profile settings. Keys not given keep the engine's defaults
    /// (below), not the library's, which leave the behaviour profiles off: the
    /// configuration is read over [`Config::default`](crate::config::Config).
    pub trainer: TrainerConfig,
    /// Request-content profile settings.
    pub content: ContentConfig,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            path: None,
            warmup_events: 50_000,
            retrain_every_events: 1_000_000,
            reservoir_rows: 50_000,
            trainer: TrainerConfig::with_default_profiles(),
            content: ContentConfig::default(),
        }
    }
}

impl ModelsConfig {
    /// Checks the settings; messages name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.reservoir_rows < 1000 {
            return Err(format!(
                "models.reservoir_rows must be at least 1000, got {}",
                self.reservoir_rows
            ));
        }
        if self.path.is_none() && self.warmup_events < self.trainer.min_rows as u64 {
            return Err(format!(
                "models.warmup_events ({}) must be at least models.trainer.min_rows ({})",
                self.warmup_events, self.trainer.min_rows
            ));
        }
        if let Some(d) = self.trainer.max_drift
            && !(0.0..=1.0).contains(&d)
        {
            return Err(format!(
                "models.trainer.max_drift is a KS statistic between 0 and 1, got {d}"
            ));
        }
        // Checked with the rest of the configuration, before anything connects, and
        // naming the table. `Trainer::new` checks both again for library callers.
        self.trainer
            .forest
            .validate()
            .map_err(|e| format!("models.trainer.forest: {e}"))?;
        self.trainer
            .profiles
            .validate()
            .map_err(|e| format!("models.trainer.profiles: {e}"))?;
        self.content
            .validate()
            .map_err(|e| format!("models.content: {e}"))?;
        Ok(())
    }
}

/// The model features: every feature column except the slow baselines (they describe the
/// entity's past, not this request) — stable for a given feature configuration.
pub fn model_features(stage_features: &[String]) -> Vec<String> {
    stage_features
        .iter()
        .filter(|f| !f.ends_with("_baseline"))
        .cloned()
        .collect()
}

/// Columns the model step appends.
pub mod model_col {
    /// Isolation-forest score, calibrated percentile of normal (0–100).
    pub const IFOREST: &str = "score_iforest";
    /// Behaviour-profile distance, calibrated percentile (0–100).
    pub const PROFILE: &str = "score_profile";
    /// The behaviour profile (k-means cluster) the client's window falls in, described by
    /// its most distinctive features (dictionary-encoded: one string per profile).
    pub const PROFILE_NAME: &str = "behaviour_profile";
    /// Content-profile score as risk (0–100).
    pub const CONTENT: &str = "score_content";
    /// Content-profile explanation (null for unremarkable requests).
    pub const CONTENT_EXPLANATION: &str = "content_explanation";
}

/// Distinctive features named in a behaviour profile's description.
const PROFILE_NAME_FEATURES: usize = 3;

fn profile_name_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// What one batch produced.
pub struct Processed {
    /// Enriched events: access event + features + model scores + risk + incident id.
    pub events: RecordBatch,
    /// Alerts to publish.
    pub alerts: Vec<IncidentAlert>,
    /// Rows at or above the alert threshold.
    pub candidates: usize,
}

/// Live state of the models.
struct ModelRuntime {
    cfg: ModelsConfig,
    features: Vec<String>,
    handle: Option<ModelHandle>,
    content: ContentProfiles,
    content_frozen: bool,
    reservoir: Reservoir,
    trainer: Trainer,
    training: Option<JoinHandle<gatewatch_models::Result<RetrainReport>>>,
    first_training: Option<JoinHandle<gatewatch_models::Result<ModelArtifact>>>,
    events_seen: u64,
    next_retrain_at: u64,
    /// After a failed first training, the next attempt waits for this many events.
    retry_first_at: u64,
    row: Vec<f32>,
    cols: Vec<usize>,
    swaps: u64,
    /// Retrained models `max_drift` kept out.
    refused: u64,
}

impl ModelRuntime {
    fn new(cfg: ModelsConfig, features: Vec<String>) -> Result<Self> {
        let trainer =
            Trainer::new(features.clone(), cfg.trainer.clone()).context("models.trainer")?;
        let reservoir =
            Reservoir::new(features.len(), cfg.reservoir_rows).context("models.reservoir_rows")?;
        let mut rt = Self {
            content: ContentProfiles::new(cfg.content.clone()),
            content_frozen: false,
            handle: None,
            reservoir,
            trainer,
            training: None,
            first_training: None,
            events_seen: 0,
            next_retrain_at: u64::MAX,
            retry_first_at: 0,
            row: vec![0.0; features.len()],
            cols: Vec::new(),
            swaps: 0,
            refused: 0,
            features,
            cfg,
        };
        if let Some(path) = rt.cfg.path.clone() {
            let model = ModelArtifact::load(&path, &rt.features).with_context(|| {
                format!(
                    "loading model {} (trained with another feature configuration? retrain \
                     it with `gatewatch train`)",
                    path.display()
                )
            })?;
            if let Some(bytes) = &model.content {
                rt.content = ContentProfiles::from_bytes(bytes)
                    .with_context(|| format!("content profiles in {}", path.display()))?;
                rt.content_frozen = true;
            }
            rt.handle = Some(ModelHandle::new(model));
            rt.swaps = 1;
        }
        if rt.cfg.retrain_every_events > 0 && rt.handle.is_some() {
            rt.next_retrain_at = rt.cfg.retrain_every_events;
        }
        Ok(rt)
    }

    /// Appends the model score columns (nulls while no model is trained yet).
    fn score(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        self.poll_training();
        let n = batch.num_rows();
        let mut iforest = Float32Builder::with_capacity(n);
        let mut profile = Float32Builder::with_capacity(n);
        let mut profile_name: ArrayRef = arrow::array::new_null_array(&profile_name_type(), n);
        let (content, explanations): (ArrayRef, ArrayRef) = if self.content_frozen {
            let s = self
                .content
                .score_batch(batch)
                .context("content profiles")?;
            let risk: Float32Array = s.scores.iter().map(|v| v.map(|v| v * 100.0)).collect();
            (Arc::new(risk), Arc::new(s.explanations))
        } else {
            (
                arrow::array::new_null_array(&DataType::Float32, n),
                arrow::array::new_null_array(&DataType::Utf8, n),
            )
        };
        self.resolve_columns(batch)?;
        if let Some(handle) = &self.handle {
            let model = handle.current();
            let cols: Vec<&[f32]> = self
                .cols
                .iter()
                .map(|&i| {
                    batch
                        .column(i)
                        .as_any()
                        .downcast_ref::<Float32Array>()
                        .map(|a| a.values().as_ref())
                })
                .collect::<Option<_>>()
                .context("model feature columns must be Float32")?;
            let mut out = vec![0f32; n];
            model
                .forest()
                .score_columns(&cols, &mut out)
                .context("isolation forest")?;
            model.forest_calibrator.calibrate_all(&mut out);
            iforest.append_slice(&out);
            if let Some(p) = model.profiles() {
                let idx: Vec<usize> = p
                    .profiles
                    .features()
                    .iter()
                    .filter_map(|f| self.features.iter().position(|g| g == f))
                    .collect();
                let picked: Vec<&[f32]> = idx.iter().map(|&i| cols[i]).collect();
                let (scores, names) = p
                    .assign_columns(&picked, PROFILE_NAME_FEATURES)
                    .context("behaviour profiles")?;
                profile.append_slice(&scores);
                profile_name = Arc::new(names);
            } else {
                profile.append_nulls(n);
            }
        } else {
            iforest.append_nulls(n);
            profile.append_nulls(n);
        }
        // Model columns are null until a model is trained.
        Ok(gatewatch_scoring::scorer::append(
            batch,
            vec![
                (
                    model_col::IFOREST,
                    DataType::Float32,
                    true,
                    Arc::new(iforest.finish()) as ArrayRef,
                ),
                (
                    model_col::PROFILE,
                    DataType::Float32,
                    true,
                    Arc::new(profile.finish()),
                ),
                (
                    model_col::PROFILE_NAME,
                    profile_name_type(),
                    true,
                    profile_name,
                ),
                (model_col::CONTENT, DataType::Float32, true, content),
                (
                    model_col::CONTENT_EXPLANATION,
                    DataType::Utf8,
                    true,
                    explanations,
                ),
            ],
        )?)
    }

    fn resolve_columns(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.cols.len() == self.features.len() {
            return Ok(());
        }
        let schema = batch.schema();
        self.cols = self
            .features
            .iter()
            .map(|f| {
                schema
                    .index_of(f)
                    .with_context(|| format!("feature column {f} missing"))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Learns from a scored batch: the reservoir takes rows that did not alert, the content
    /// profiles learn during warm-up; training starts when due.
    fn learn(
        &mut self,
        batch: &RecordBatch,
        risk: &Float32Array,
        alert_threshold: f32,
    ) -> Result<()> {
        self.resolve_columns(batch)?;
        let n = batch.num_rows();
        let cols: Vec<&Float32Array> = self
            .cols
            .iter()
            .map(|&i| batch.column(i).as_any().downcast_ref::<Float32Array>())
            .collect::<Option<_>>()
            .context("model feature columns must be Float32")?;
        let times = batch
            .column_by_name(gatewatch_ingest::schema::col::TIMESTAMP)
            .and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            })
            .context("timestamp column")?;
        // Rows matter to the reservoir only when a training will read them: always before
        // the first model, else within two reservoirs' worth of events before the next
        // retrain. Further out they are only counted, not copied.
        let collect = self.handle.is_none()
            || self
                .events_seen
                .saturating_add(n as u64)
                .saturating_add(2 * self.cfg.reservoir_rows as u64)
                >= self.next_retrain_at;
        for r in 0..n {
            let alerted = risk.value(r) >= alert_threshold;
            if !collect {
                self.reservoir.count_only(alerted);
                continue;
            }
            for (k, c) in cols.iter().enumerate() {
                self.row[k] = c.value(r);
            }
            self.reservoir
                .push(&self.row, times.value(r), alerted)
                .context("model reservoir")?;
        }
        if !self.content_frozen {
            self.content
                .train_batch(batch)
                .context("content profiles")?;
        }
        self.events_seen += n as u64;
        if self.handle.is_none()
            && self.first_training.is_none()
            && self.events_seen >= self.cfg.warmup_events.max(self.retry_first_at)
            && self.reservoir.len() >= self.cfg.trainer.min_rows
        {
            // Content profiles stop learning at the end of the warm-up, so later attacks
            // cannot teach them.
            self.content_frozen = true;
            let set = self.reservoir.snapshot();
            let trainer = self.trainer.clone();
            tracing::info!(
                rows = set.rows.nrows(),
                "warm-up done; training the first model in the background"
            );
            self.first_training = Some(
                std::thread::Builder::new()
                    .name("gatewatch-train".into())
                    .spawn(move || trainer.train(&set))
                    .context("starting the training thread")?,
            );
        }
        if self.events_seen >= self.next_retrain_at
            && self.training.is_none()
            && let Some(handle) = &self.handle
        {
            let set = self.reservoir.snapshot();
            tracing::info!(
                rows = set.rows.nrows(),
                events = self.events_seen,
                "retraining in the background"
            );
            self.training = Some(
                self.trainer
                    .retrain_in_background(set, handle.clone())
                    .context("starting a retrain")?,
            );
            self.next_retrain_at = self.events_seen + self.cfg.retrain_every_events;
        }
        Ok(())
    }

    /// Swaps in finished trainings.
    fn poll_training(&mut self) {
        if self
            .first_training
            .as_ref()
            .is_some_and(|h| h.is_finished())
        {
            match self.first_training.take().map(|h| h.join()) {
                Some(Ok(Ok(model))) => {
                    tracing::info!(
                        trees = model.forest().n_trees(),
                        rows = model.rows.trained,
                        "first model trained and swapped in"
                    );
                    self.handle = Some(ModelHandle::new(model));
                    self.swaps += 1;
                    if self.cfg.retrain_every_events > 0 {
                        self.next_retrain_at = self.events_seen + self.cfg.retrain_every_events;
                    }
                }
                Some(Ok(Err(e))) => {
                    tracing::error!("training failed, scoring without models for now: {e}");
                    self.retry_first_at = self.events_seen + self.cfg.warmup_events.max(1);
                }
                Some(Err(_)) => {
                    tracing::error!("the training thread panicked; scoring without models for now");
                    self.retry_first_at = self.events_seen + self.cfg.warmup_events.max(1);
                }
                None => {}
            }
        }
        if self.training.as_ref().is_some_and(|h| h.is_finished()) {
            match self.training.take().map(|h| h.join()) {
                Some(Ok(Ok(report))) => {
                    // Drift is left out when the old model could not score the rows.
                    let drift_ks = report.drift.map(|d| d.ks);
                    let mean_score_shift = report.drift.map(|d| d.mean_abs_shift);
                    let secs = report.elapsed.as_secs_f64();
                    if report.swapped {
                        self.swaps += 1;
                        tracing::info!(
                            rows = report.rows,
                            swapped = true,
                            drift_ks,
                            mean_score_shift,
                            secs,
                            nice = report.nice,
                            "retrained"
                        );
                    } else {
                        // Only `max_drift` refuses a model: traffic moved further than an
                        // operator allowed, which is as likely an attack or an outage as a
                        // new normal, and wants a person to look.
                        self.refused += 1;
                        tracing::warn!(
                            rows = report.rows,
                            drift_ks,
                            max_drift = self.cfg.trainer.max_drift,
                            mean_score_shift,
                            secs,
                            "retrained model not swapped in: its scores moved more than \
                             [models.trainer] max_drift allows; the current model keeps scoring"
                        );
                    }
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!("retraining failed; keeping the current model: {e}")
                }
                Some(Err(_)) => {
                    tracing::warn!("the retraining thread panicked; keeping the current model")
                }
                None => {}
            }
        }
    }
}

/// Feature stage, models and scoring.
pub struct Engine {
    features: FeatureStage,
    models: ModelRuntime,
    scoring: ScoringStage,
    alert_threshold: f32,
}

impl Engine {
    /// Builds every stage; fails with a message naming the bad setting.
    pub fn new(
        features: FeatureConfig,
        models: ModelsConfig,
        scoring: ScoringConfig,
        incidents: IncidentConfig,
    ) -> Result<Self> {
        let alert_threshold = scoring.alert_threshold;
        let spec_loaded = features.openapi_spec.is_some();
        let stage = FeatureStage::new(features).context("features")?;
        let names = model_features(stage.feature_names());
        if names.is_empty() {
            bail!("the feature stage produces no features");
        }
        Ok(Self {
            models: ModelRuntime::new(models, names)?,
            features: stage,
            scoring: ScoringStage::for_features(scoring, incidents, spec_loaded)
                .context("scoring")?,
            alert_threshold,
        })
    }

    /// Runs one batch of access events through every stage.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Processed> {
        let featured = self.features.process(batch).context("feature stage")?;
        let modelled = self.models.score(&featured)?;
        let out = self.scoring.process(&modelled).context("scoring")?;
        let risk = out
            .batch
            .column_by_name(gatewatch_scoring::scorer::out_col::RISK)
            .and_then(|a| a.as_any().downcast_ref::<Float32Array>())
            .context("risk column")?
            .clone();
        self.models.learn(&featured, &risk, self.alert_threshold)?;
        Ok(Processed {
            events: out.batch,
            alerts: out.alerts,
            candidates: out.candidates,
        })
    }

    /// Counts `batch` into the feature windows only: records a restored checkpoint has
    /// counted already (see [`replay`](super::replay)), which the windows should see but
    /// nothing should score, store or alert on again.
    pub fn warm(&mut self, batch: &RecordBatch) -> Result<()> {
        self.features.process(batch).context("feature stage")?;
        Ok(())
    }

    /// Whether a model scores events yet.
    pub fn has_model(&self) -> bool {
        self.models.handle.is_some()
    }

    /// Models swapped in so far (first training + retrains + a loaded one).
    pub fn model_swaps(&self) -> u64 {
        self.models.swaps
    }

    /// Retrained models not swapped in because their drift exceeded
    /// `[models.trainer] max_drift`.
    pub fn models_refused(&self) -> u64 {
        self.models.refused
    }

    /// The feature stage (inventory, state figures).
    pub fn features(&self) -> &FeatureStage {
        &self.features
    }

    /// The scoring stage (incidents, triage).
    pub fn scoring(&self) -> &ScoringStage {
        &self.scoring
    }

    /// The scoring stage, mutable.
    pub fn scoring_mut(&mut self) -> &mut ScoringStage {
        &mut self.scoring
    }

    /// The incidents closed since the last call, for the store: those idle for
    /// `[incidents] idle_close_secs` of event time as of the scoring stage's watermark (the
    /// least event-time clock of the input partitions delivering events), one closed when
    /// its entity came back after that, and those evicted from a full table.
    pub fn take_closings(&mut self) -> Vec<gatewatch_scoring::IncidentAlert> {
        self.scoring
            .close_idle()
            .into_iter()
            .map(gatewatch_scoring::IncidentAlert::closed)
            .collect()
    }
}
