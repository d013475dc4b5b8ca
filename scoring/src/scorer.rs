//! Fusion: rule findings and model scores become one risk per event (0–100), a category, a
//! severity, and alert candidates with explanations.
//!
//! - Each rule that fires gives a risk (see [`crate::rules`]); model scores arrive as
//!   calibrated 0–100 columns (`score_iforest`, `score_profile`, `score_content` by default).
//! - The event's risk is the highest of them; when a rule and a model agree (both at or above
//!   the alert threshold) it gains `agreement_bonus`. The category is the top rule's, else the
//!   model's (content anomalies are injection-like, API8; the others are `anomaly`).
//! - Model-only findings must reach `model_alert_threshold` with the model's own score (the
//!   agreement bonus does not count), higher than the rules' threshold, because a model
//!   knows "unusual", not "malicious". A rule that reaches `alert_threshold` leads its
//!   finding (category, detector, explanation) whatever the models score: the model raises
//!   the finding's risk, it can neither silence the rule nor take its finding over.
//! - Explanations name the features behind the finding with the entity's usual value (over
//!   the same span) and the 99th percentile of the population of clients, each client
//!   weighted alike, which the scorer tracks itself in fixed-size histograms. A condition
//!   on a null column (an untrained model) is left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::category::{Category, EntityKind, Severity};
use crate::columns::{EventCols, StrCol, f32_col, opt, timestamps_ms};
use crate::incidents::{AlertCandidate, Contribution, SampleRequest};
use crate::rules::{Condition, Rule, RuleOverride, apply_overrides, builtin_rules};
use crate::{Error, Result};

/// Severity cut-offs on the 0–100 risk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityThresholds {
    /// Risk from which an event is `low`.
    pub low: f32,
    /// … `medium`.
    pub medium: f32,
    /// … `high`.
    pub high: f32,
    /// … `critical`.
    pub critical: f32,
}

impl Default for SeverityThresholds {
    fn default() -> Self {
        Self {
            low: 40.0,
            medium: 60.0,
            high: 75.0,
            critical: 90.0,
        }
    }
}

impl SeverityThresholds {
    /// The severity of a risk.
    pub fn of(&self, risk: f32) -> Severity {
        if risk >= self.critical {
            Severity::Critical
        } else if risk >= self.high {
            Severity::High
        } else if risk >= self.medium {
            Severity::Medium
        } else if risk >= self.low {
            Severity::Low
        } else {
            Severity::Info
        }
    }
}

/// A model score column the scorer reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelColumn {
    /// Float32 column with a calibrated 0–100 score.
    pub column: String,
    /// Detector name in alerts.
    pub detector: String,
    /// Category of a finding this model alone raises.
    pub category: Category,
    /// Optional Utf8 column with the model's own explanation of the row.
    #[serde(default)]
    pub explanation: Option<String>,
    /// How the column's values become risk.
    #[serde(default)]
    pub scale: ModelScale,
    /// Whether this model alone may raise an alert. Models that know only "unusual" (the
    /// isolation forest, behaviour profiles) lift a rule finding's risk and rank events
    /// for hunting, but on their own would page someone for every new browser.
    #[serde(default)]
    pub alert_alone: bool,
}

/// How a model column's values map to risk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelScale {
    /// The column is a calibrated percentile of normal traffic (0–100). Risk grows by 20
    /// points for every tenfold rarer score: p99 → 40, p99.9 → 60, p99.99 → 80, p99.999 →
    /// 100, so "unusual" alone (p90, p95) stays harmless.
    #[default]
    Percentile,
    /// The column is already a 0–100 risk.
    Risk,
}

impl ModelScale {
    /// Risk of a column value.
    pub fn risk(self, v: f32) -> f32 {
        match self {
            ModelScale::Risk => v.clamp(0.0, 100.0),
            ModelScale::Percentile => {
                let tail = (1.0 - (v.clamp(0.0, 100.0) as f64) / 100.0).max(1e-12);
                (-20.0 * tail.log10()).clamp(0.0, 100.0) as f32
            }
        }
    }
}

/// `[scoring]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Events at or above this risk become alert candidates.
    pub alert_threshold: f32,
    /// Model-only findings need at least this risk to alert.
    pub model_alert_threshold: f32,
    /// Added when a rule and a model both reach the alert threshold.
    pub agreement_bonus: f32,
    /// Severity cut-offs.
    pub severity: SeverityThresholds,
    /// Overrides of the built-in rules by name.
    pub rules: BTreeMap<String, RuleOverride>,
    /// Model score columns.
    pub models: Vec<ModelColumn>,
    /// Features listed per explanation.
    pub max_contributions: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            alert_threshold: 60.0,
            model_alert_threshold: 90.0,
            agreement_bonus: 5.0,
            severity: SeverityThresholds::default(),
            rules: BTreeMap::new(),
            models: vec![
                ModelColumn {
                    column: "score_iforest".into(),
                    detector: "isolation_forest".into(),
                    category: Category::Anomaly,
                    explanation: None,
                    scale: ModelScale::Percentile,
                    alert_alone: false,
                },
                ModelColumn {
                    column: "score_profile".into(),
                    detector: "behaviour_profile".into(),
                    category: Category::Anomaly,
                    explanation: None,
                    scale: ModelScale::Percentile,
                    alert_alone: false,
                },
                ModelColumn {
                    column: "score_content".into(),
                    detector: "content_profile".into(),
                    category: Category::Misconfiguration,
                    explanation: Some("content_explanation".into()),
                    scale: ModelScale::Risk,
                    alert_alone: true,
                },
            ],
            max_contributions: 3,
        }
    }
}

impl ScoringConfig {
    /// Checks the settings; messages name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("scoring.alert_threshold", self.alert_threshold),
            ("scoring.model_alert_threshold", self.model_alert_threshold),
            // A bonus: negative would drop the findings a model confirms below the alert
            // threshold, NaN would make every agreement critical.
            ("scoring.agreement_bonus", self.agreement_bonus),
            ("scoring.severity.low", self.severity.low),
            ("scoring.severity.medium", self.severity.medium),
            ("scoring.severity.high", self.severity.high),
            ("scoring.severity.critical", self.severity.critical),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{k}: {v} is not within 0–100"));
            }
        }
        let s = &self.severity;
        if !(s.low <= s.medium && s.medium <= s.high && s.high <= s.critical) {
            return Err(
                "scoring.severity: thresholds must rise low ≤ medium ≤ high ≤ critical".into(),
            );
        }
        apply_overrides(&mut builtin_rules(), &self.rules)
    }
}

/// Column names the scorer appends.
pub mod out_col {
    /// Float32 0–100.
    pub const RISK: &str = "risk";
    /// Utf8: info … critical.
    pub const SEVERITY: &str = "severity";
    /// Utf8, null below `low`: the category name.
    pub const CATEGORY: &str = "category";
    /// Utf8, null below `low`: the rule or model behind the risk.
    pub const DETECTOR: &str = "detector";
}

/// Per-feature population statistics in fixed memory: a signed log-scale histogram (for
/// percentiles) and an exponentially weighted mean and variance (for z-scores).
#[derive(Debug, Clone)]
struct FeatureStats {
    hist: [u32; HIST_BUCKETS],
    total: u64,
    mean: f64,
    var: f64,
}

const HIST_BUCKETS: usize = 128;
/// Sampled clients an endpoint needs before its population percentile is trusted.
const ENDPOINT_MIN_SAMPLES: u64 = 30;

/// The client × endpoint request count that weights the endpoint population (and the
/// endpoint's authenticated share), unless a feature has one of its own span (see
/// [`weight_of`]).
const PER_CLIENT_ENDPOINT_REQUESTS: &str = "f_client_endpoint_requests_10m";

/// The client × endpoint request count that weights `feature`'s endpoint population: the
/// one over the feature's own window (`f_client_distinct_ids_1h` →
/// `f_client_endpoint_requests_1h`), so that a client counts about once per that window.
/// Weighted by a shorter window, a client busy all hour (an internal service) would count
/// once per ten minutes against once for a customer who came by once, and one such
/// client could become the hour's population p99 on an endpoint of hundreds of customers.
fn weight_of(feature: &str) -> String {
    match feature.rsplit_once('_') {
        Some((_, span)) if feature.starts_with("f_client_") => {
            format!("f_client_endpoint_requests_{span}")
        }
        _ => PER_CLIENT_ENDPOINT_REQUESTS.to_string(),
    }
}

/// A well-mixed 64-bit value from a batch counter and a row, for sampling.
fn sample_hash(batch: u64, row: usize) -> u64 {
    let mut z = batch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (row as u64).wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `row` is sampled with probability 1 / `requests` (taken as at least 1), so
/// that a client with `requests` rows in the window counts about once.
fn sampled_once(seed: u64, row: usize, requests: f32) -> bool {
    let u = (sample_hash(seed, row) >> 11) as f64 / (1u64 << 53) as f64;
    u * (requests.max(1.0) as f64) < 1.0
}

/// Most endpoint templates whose own population is kept: per template one histogram
/// (about 550 bytes) per feature that a condition compares against its endpoint's
/// population (two with the built-in rules) and the share of its requests that carry an
/// identity. A template seen when the table is full takes the place of the least recently
/// updated ones (a sixteenth of the table is freed at a time), so an endpoint first seen
/// after a flood of junk paths is still tracked and judged; the flooded-out endpoints
/// start their populations afresh when they return.
pub const MAX_ENDPOINTS: usize = 4096;

/// The client's requests in the window that weights the feature population: the rate over
/// 10 min, in requests per second.
const PER_CLIENT_REQUESTS_RATE: &str = "f_client_rate_10m";
/// The span of [`PER_CLIENT_REQUESTS_RATE`] in seconds.
const PER_CLIENT_REQUESTS_SPAN_S: f32 = 600.0;
/// Sub-buckets per doubling of |v|+1: 4 gives ±9 % resolution, plenty for "p99 9".
const HIST_RES: f32 = 4.0;

impl FeatureStats {
    fn new() -> Self {
        Self {
            hist: [0; HIST_BUCKETS],
            total: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// The bucket of `v`: `round(log2(|v| + 1) · 4)`, at most 63, mirrored for negative
    /// values. Every sampled value of every feature lands here (a hundred columns a
    /// batch), so the rounded logarithm is read off the float's bits instead of calling
    /// `log2` and `round`: the exponent gives whole doublings, and the mantissa's place
    /// among the four quarter-doubling midpoints gives the sub-bucket.
    fn bucket(v: f32) -> usize {
        let m = Self::magnitude(v.abs() + 1.0);
        if v < 0.0 { 63 - m } else { 64 + m }
    }

    /// `round(log2(a) · 4)` capped at 63, for `a ≥ 1` (NaN and infinity give 63).
    fn magnitude(a: f32) -> usize {
        // 2^(k + 0.5)/4: where the rounding of 4·log2 steps up within a doubling.
        const MIDPOINTS: [f32; 4] = [1.090_507_7, 1.296_839_6, 1.542_210_8, 1.834_008_1];
        // 2^(62.5 / 4): from here on the bucket is the last one.
        const LAST: f32 = 50_535.164;
        if a >= LAST || a.is_nan() {
            return 63;
        }
        let bits = a.to_bits();
        let doublings = ((bits >> 23) as usize).saturating_sub(127);
        let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        let sub = MIDPOINTS.iter().filter(|&&t| mantissa >= t).count();
        4 * doublings + sub
    }

    fn bucket_value(b: usize) -> f32 {
        if b >= 64 {
            (2f32.powf((b - 64) as f32 / HIST_RES)) - 1.0
        } else {
            -((2f32.powf((63 - b) as f32 / HIST_RES)) - 1.0)
        }
    }

    #[inline]
    fn add(&mut self, v: f32) {
        let b = Self::bucket(v);
        self.hist[b] = self.hist[b].saturating_add(1);
        self.total += 1;
        if self.total >= 2_000_000 {
            self.halve();
        }
        // max(1e-4, 1 / total), without the division once total has passed 10,000 (the
        // usual case: a hundred feature columns are sampled every batch).
        let alpha = if self.total > 10_000 {
            1e-4
        } else {
            1e-4f64.max(1.0 / self.total as f64)
        };
        let d = v as f64 - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// Halves the histogram now and then so it follows today's population.
    #[cold]
    fn halve(&mut self) {
        for h in &mut self.hist {
            *h /= 2;
        }
        self.total = self.hist.iter().map(|&h| h as u64).sum();
    }

    fn quantile(&self, q: f32) -> Option<f32> {
        self.quantile_after(q, 100)
    }

    /// The quantile once at least `min` values were seen.
    fn quantile_after(&self, q: f32, min: u64) -> Option<f32> {
        if self.total < min {
            return None;
        }
        let want = (self.total as f64 * q as f64).ceil() as u64;
        let mut seen = 0u64;
        for (b, &h) in self.hist.iter().enumerate() {
            seen += h as u64;
            if seen >= want {
                return Some(Self::bucket_value(b));
            }
        }
        None
    }

    fn z(&self, v: f32) -> f32 {
        if self.total < 100 {
            return 0.0;
        }
        let sd = self.var.sqrt().max(1e-3);
        ((v as f64 - self.mean) / sd) as f32
    }
}

/// One endpoint template's population, for the conditions that judge a value against the
/// endpoint's own clients and the rules that apply only to endpoints whose requests carry
/// an identity.
#[derive(Debug, Clone)]
struct EndpointState {
    template: String,
    /// The batch that last updated it (see [`EndpointTable::slot`]).
    touched: u64,
    /// (requests, weighted requests, weighted authenticated requests), a request weighing
    /// 1 / the client's requests to the endpoint in the window (so the weighted counts are
    /// roughly client-windows), all halved now and then so they follow current traffic.
    /// The share is judged once there were 30 requests, whoever made them.
    auth: (f32, f32, f32),
    /// One histogram per feature in [`EndpointTable::features`].
    stats: Vec<FeatureStats>,
}

/// Endpoint templates' populations, at most [`MAX_ENDPOINTS`] of them: slots, found by
/// template, reused once their endpoint is dropped.
#[derive(Debug, Default)]
struct EndpointTable {
    /// The features compared against their endpoint's population (the single-feature
    /// conditions with `min_endpoint_p99_ratio`).
    features: Vec<String>,
    /// Per feature, the request count that weights its samples ([`weight_of`]).
    weights: Vec<String>,
    /// Per feature, the quantile its conditions compare with
    /// ([`Condition::endpoint_quantile`](crate::rules::Condition::endpoint_quantile)).
    quantiles: Vec<f32>,
    index: std::collections::HashMap<String, usize>,
    slots: Vec<EndpointState>,
    free: Vec<usize>,
}

impl EndpointState {
    /// Whether it has a population a rule can judge against: enough sampled clients for
    /// a percentile, or enough requests for an authenticated share.
    fn established(&self) -> bool {
        self.auth.0 >= 30.0 || self.stats.iter().any(|st| st.total >= ENDPOINT_MIN_SAMPLES)
    }
}

impl EndpointTable {
    /// The slot of `template`, marked as updated by batch `now`. A template not held yet
    /// gets a fresh slot; when the table is full, the least recently updated endpoints
    /// make room, never one the current batch updated (so a batch with more distinct
    /// templates than the table holds leaves the rest untracked: `None`).
    fn slot(&mut self, template: &str, now: u64) -> Option<usize> {
        if let Some(&i) = self.index.get(template) {
            self.slots[i].touched = now;
            return Some(i);
        }
        if self.free.is_empty() && self.slots.len() >= MAX_ENDPOINTS {
            self.evict(now);
        }
        let state = EndpointState {
            template: template.to_string(),
            touched: now,
            auth: (0.0, 0.0, 0.0),
            stats: vec![FeatureStats::new(); self.features.len()],
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = state;
                i
            }
            None if self.slots.len() < MAX_ENDPOINTS => {
                self.slots.push(state);
                self.slots.len() - 1
            }
            None => return None,
        };
        self.index.insert(template.to_string(), i);
        Some(i)
    }

    /// Frees a sixteenth of the slots, sparing those of batch `now`: those without a
    /// population first, then those updated longest ago.
    /// (A sixteenth at a time: one scan of the table per 256 new endpoints, not per one.)
    #[cold]
    fn evict(&mut self, now: u64) {
        // Endpoints without a population yet go first, then the least recently updated:
        // a flood of junk paths (a directory scan) then pushes out its own junk rather
        // than the populations of the real endpoints, which would take 30 new clients
        // each to rebuild and blind the rules that need them meanwhile.
        let mut old: Vec<(bool, u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.touched < now)
            .map(|(i, s)| (s.established(), s.touched, i))
            .collect();
        let k = (MAX_ENDPOINTS / 16).min(old.len());
        if k == 0 {
            return;
        }
        old.select_nth_unstable(k - 1);
        for &(_, _, i) in &old[..k] {
            let t = std::mem::take(&mut self.slots[i].template);
            self.index.remove(&t);
            self.slots[i].stats = Vec::new();
            self.free.push(i);
        }
    }

    /// Endpoint templates held.
    fn len(&self) -> usize {
        self.index.len()
    }
}

/// What [`Scorer::score`] returns.
#[derive(Debug)]
pub struct Scored {
    /// The input with `risk`, `severity`, `category`, `detector` appended.
    pub batch: RecordBatch,
    /// Rows at or above the alert threshold, with explanations, in row order.
    pub candidates: Vec<(usize, AlertCandidate)>,
}

/// The fusion stage.
pub struct Scorer {
    cfg: ScoringConfig,
    rules: Vec<Rule>,
    /// Per feature column: the population of clients (each weighted alike), for the
    /// "population p99" of explanations and the z-scores behind a model's finding.
    stats: BTreeMap<String, FeatureStats>,
    /// Rules that cannot fire because the batches lack some of their columns: rule → the
    /// columns it lacks.
    missing: BTreeMap<String, Vec<String>>,
    /// Per endpoint template: its population of clients and its share of authenticated
    /// requests; bounded by [`MAX_ENDPOINTS`].
    endpoints: EndpointTable,
    /// Per rule, per condition: the condition's feature's index in `endpoints.features`
    /// when it compares against the endpoint's population.
    endpoint_feature: Vec<Vec<Option<usize>>>,
    rows_seen: u64,
    batches: u64,
}

struct ResolvedCond<'a> {
    cols: Vec<&'a Float32Array>,
    baseline: Option<&'a Float32Array>,
}

impl Scorer {
    /// Builds the scorer; fails on invalid settings.
    pub fn new(cfg: ScoringConfig) -> Result<Self> {
        Self::for_features(cfg, false)
    }

    /// [`new`](Self::new), for a feature stage that maps requests to an API spec when
    /// `spec_loaded` (see [`fit_to_spec`](crate::rules::fit_to_spec)).
    pub fn for_features(cfg: ScoringConfig, spec_loaded: bool) -> Result<Self> {
        cfg.validate().map_err(Error::Config)?;
        let mut rules = builtin_rules();
        if spec_loaded {
            crate::rules::fit_to_spec(&mut rules);
        }
        apply_overrides(&mut rules, &cfg.rules).map_err(Error::Config)?;
        rules.retain(|r| r.enabled);
        let mut endpoints = EndpointTable::default();
        let endpoint_feature = rules
            .iter()
            .map(|r| {
                r.when
                    .iter()
                    .map(|c| {
                        let [f] = c.features.as_slice() else {
                            return None;
                        };
                        c.min_endpoint_p99_ratio?;
                        let q = c.endpoint_quantile();
                        let known = (endpoints.features.iter().zip(&endpoints.quantiles))
                            .position(|(g, &gq)| g == f && gq == q);
                        Some(match known {
                            Some(i) => i,
                            None => {
                                endpoints.features.push(f.clone());
                                endpoints.weights.push(weight_of(f));
                                endpoints.quantiles.push(q);
                                endpoints.features.len() - 1
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            cfg,
            rules,
            stats: BTreeMap::new(),
            missing: BTreeMap::new(),
            endpoints,
            endpoint_feature,
            rows_seen: 0,
            batches: 0,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rules that could not run because columns were absent: rule → the absent columns.
    /// The scorer logs a warning naming them when it first meets such a batch.
    pub fn missing_features(&self) -> &BTreeMap<String, Vec<String>> {
        &self.missing
    }

    /// Endpoint templates whose population is held (at most [`MAX_ENDPOINTS`]).
    pub fn endpoints_tracked(&self) -> usize {
        self.endpoints.len()
    }

    /// The population's quantile `q` of a feature, once enough rows were seen.
    pub fn population_quantile(&self, feature: &str, q: f32) -> Option<f32> {
        self.stats.get(feature).and_then(|s| s.quantile(q))
    }

    /// Scores a batch that carries the feature stage's columns (and model scores when
    /// present).
    // One row index reads a dozen columns; an iterator per column would hide that.
    #[allow(clippy::needless_range_loop)]
    pub fn score(&mut self, batch: &RecordBatch) -> Result<Scored> {
        let n = batch.num_rows();
        let times = timestamps_ms(batch)?;
        let ev = EventCols::of(batch)?;

        // Resolve rule columns once per batch.
        let mut resolved: Vec<Option<Vec<ResolvedCond<'_>>>> = Vec::with_capacity(self.rules.len());
        let mut newly_missing: Vec<(&str, Vec<String>)> = Vec::new();
        for r in &self.rules {
            let mut conds = Vec::with_capacity(r.when.len());
            let mut absent: Vec<String> = Vec::new();
            for c in &r.when {
                let mut cols = Vec::with_capacity(c.features.len());
                for f in &c.features {
                    match f32_col(batch, f)? {
                        Some(a) => cols.push(a),
                        None => absent.push(f.clone()),
                    }
                }
                let baseline = match &c.baseline {
                    Some(b) => f32_col(batch, b)?,
                    None => None,
                };
                conds.push(ResolvedCond { cols, baseline });
            }
            if absent.is_empty() {
                self.missing.remove(&r.name);
                resolved.push(Some(conds));
                continue;
            }
            resolved.push(None);
            if self.missing.get(&r.name) != Some(&absent) {
                newly_missing.push((r.name.as_str(), absent));
            }
        }
        // A rule that cannot fire must not go unnoticed: a `[features] spans` without a
        // span its features use (say `["30s", "5m"]`) switches it off. Said once, when the
        // scorer first meets such batches (and again should the columns come and go).
        if !newly_missing.is_empty() {
            let list: Vec<String> = newly_missing
                .iter()
                .map(|(rule, cols)| format!("{rule} (lacks {})", cols.join(", ")))
                .collect();
            tracing::warn!(
                rules = %list.join("; "),
                "rules that cannot fire: the batches lack columns they use (a feature whose \
                 span `[features] spans` leaves out, or a model score column)"
            );
            for (rule, cols) in newly_missing {
                self.missing.insert(rule.to_string(), cols);
            }
        }
        let mut models: Vec<(&ModelColumn, &Float32Array, StrCol<'_>)> = Vec::new();
        for m in &self.cfg.models {
            if let Some(a) = f32_col(batch, &m.column)? {
                let ex = match &m.explanation {
                    Some(e) => StrCol::of(batch, e)?,
                    None => StrCol::Missing,
                };
                models.push((m, a, ex));
            }
        }

        // Feature columns, for the population statistics (updated once the batch is
        // explained) and the explanation of a model's finding.
        let feature_cols: Vec<(String, &Float32Array)> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| f.name().starts_with("f_") && *f.data_type() == DataType::Float32)
            .filter_map(|(f, a)| {
                a.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| (f.name().clone(), a))
            })
            .collect();
        let population_seed = self.rows_seen;
        self.rows_seen += n as u64;
        self.batches += 1;
        let now = self.batches;
        let template_col = StrCol::of(batch, "endpoint_template")?;
        let templates = template_col.value_ids(n);

        // Endpoint populations: each distinct template's slot is found (or made) once.
        let needs_auth = self
            .rules
            .iter()
            .any(|r| r.min_endpoint_authenticated.is_some());
        let auth_col = if needs_auth {
            f32_col(batch, "f_authenticated")?
        } else {
            None
        };
        let endpoint_cols: Vec<Option<&Float32Array>> = self
            .endpoints
            .features
            .iter()
            .map(|f| f32_col(batch, f))
            .collect::<Result<_>>()?;
        let slot_of: Vec<Option<usize>> =
            if auth_col.is_some() || endpoint_cols.iter().any(Option::is_some) {
                templates
                    .values
                    .iter()
                    .map(|t| self.endpoints.slot(t, now))
                    .collect()
            } else {
                vec![None; templates.values.len()]
            };
        let slot_at = |row: usize| slot_of.get(templates.ids[row] as usize).copied().flatten();
        // How often each endpoint's requests carry an identity, each client weighing about
        // as much as any other (a row counts 1 / the client's requests to the endpoint in
        // the window): one client's flood of anonymous requests to a private endpoint
        // (an injection scan of a download route, say) must not make it look public and
        // so switch off the rules for private endpoints there.
        if let Some(auth) = auth_col {
            let per_client = f32_col(batch, PER_CLIENT_ENDPOINT_REQUESTS)?;
            for row in 0..n {
                let Some(s) = slot_at(row) else { continue };
                let w = per_client.map_or(1.0, |pc| 1.0 / pc.value(row).max(1.0));
                let e = &mut self.endpoints.slots[s].auth;
                e.0 += 1.0;
                e.1 += w;
                e.2 += w * auth.value(row).clamp(0.0, 1.0);
                if e.0 >= 100_000.0 {
                    e.0 /= 2.0;
                    e.1 /= 2.0;
                    e.2 /= 2.0;
                }
            }
        }
        // Endpoint-population histograms for the conditions that use them. Each client
        // should count about once per window whatever its volume (else one heavy client,
        // the attacker above all, becomes the population): a row is sampled with
        // probability 1 / (the client's requests to this endpoint in the feature's window,
        // see `weight_of`). Features weighted by the same window share one sample.
        let mut sampled: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
        for (fi, a) in endpoint_cols.iter().enumerate() {
            let Some(a) = a else { continue };
            let weight = self.endpoints.weights[fi].as_str();
            let rows = match sampled.iter().position(|(w, _)| *w == weight) {
                Some(i) => i,
                None => {
                    let per_client = match f32_col(batch, weight)? {
                        Some(pc) => Some(pc),
                        None => f32_col(batch, PER_CLIENT_ENDPOINT_REQUESTS)?,
                    };
                    let rows = (0..n)
                        .filter_map(|row| {
                            let s = slot_at(row)?;
                            if let Some(pc) = per_client
                                && !sampled_once(self.rows_seen, row, pc.value(row))
                            {
                                return None;
                            }
                            Some((s, row))
                        })
                        .collect();
                    sampled.push((weight, rows));
                    sampled.len() - 1
                }
            };
            for &(s, row) in &sampled[rows].1 {
                self.endpoints.slots[s].stats[fi].add(a.value(row));
            }
        }
        // Per template, worked out once: each endpoint feature's population p99 (`None`
        // until 30 clients were sampled) and the share of authenticated requests (`None`
        // under 30 requests).
        let endpoint_p99: Vec<Vec<Option<f32>>> = (0..self.endpoints.features.len())
            .map(|fi| {
                slot_of
                    .iter()
                    .map(|s| {
                        s.and_then(|s| {
                            self.endpoints.slots[s].stats[fi]
                                .quantile_after(self.endpoints.quantiles[fi], ENDPOINT_MIN_SAMPLES)
                        })
                    })
                    .collect()
            })
            .collect();
        let template_auth: Vec<Option<f32>> = slot_of
            .iter()
            .map(|s| {
                s.map(|s| self.endpoints.slots[s].auth)
                    .filter(|&(n, w, _)| n >= 30.0 && w > 0.0)
                    .map(|(_, w, a)| a / w)
            })
            .collect();
        let auth_share = |row: usize| {
            template_auth
                .get(templates.ids[row] as usize)
                .copied()
                .flatten()
        };

        // Per-template facts, worked out once per distinct template rather than per row and
        // rule: which endpoint-restricted rules apply (a bit each).
        let mut rule_bit: Vec<Option<u32>> = vec![None; self.rules.len()];
        let mut restricted = 0u32;
        for (ri, r) in self.rules.iter().enumerate() {
            if !r.endpoints.is_empty() && restricted < 64 {
                rule_bit[ri] = Some(restricted);
                restricted += 1;
            }
        }
        let applies: Vec<u64> = if restricted == 0 {
            Vec::new()
        } else {
            let rules = &self.rules;
            templates.map(|t| {
                let mut mask = 0u64;
                if let Some(t) = t {
                    for (ri, bit) in rule_bit.iter().enumerate() {
                        if let Some(bit) = bit
                            && rules[ri].applies_to(t)
                        {
                            mask |= 1 << bit;
                        }
                    }
                }
                mask
            })
        };

        // Rows whose values meet every threshold of a rule, worked out one condition
        // column at a time. The row loop below reads a rule's columns only for these
        // rows: reading every rule's columns row by row meant dozens of interleaved
        // column streams, and the loop waited on memory for most of its time.
        let may_fire: Vec<Vec<bool>> = resolved
            .iter()
            .enumerate()
            .map(|(ri, conds)| match conds {
                None => Vec::new(),
                Some(conds) => {
                    let mut mask = vec![true; n];
                    for (ci, c) in conds.iter().enumerate() {
                        thresholds_hold(&self.rules[ri].when[ci], &c.cols, &mut mask);
                    }
                    mask
                }
            })
            .collect();

        let mut risk_b = Float32Builder::with_capacity(n);
        let mut sev_b = StringBuilder::with_capacity(n, n * 6);
        let mut cat_b = StringBuilder::with_capacity(n, n * 4);
        let mut det_b = StringBuilder::with_capacity(n, n * 4);
        let mut candidates = Vec::new();

        for row in 0..n {
            // Best rule.
            let mut best_rule: Option<(usize, f32)> = None;
            for (ri, conds) in resolved.iter().enumerate() {
                let Some(conds) = conds else { continue };
                if !may_fire[ri][row] {
                    continue;
                }
                let rule = &self.rules[ri];
                if !rule.endpoints.is_empty() {
                    let applies = match rule_bit[ri] {
                        Some(bit) => applies[row] & (1 << bit) != 0,
                        None => template_col.get(row).is_some_and(|t| rule.applies_to(t)),
                    };
                    if !applies {
                        continue;
                    }
                }
                if let Some(min) = rule.min_endpoint_authenticated
                    && auth_share(row).is_none_or(|s| s < min)
                {
                    continue;
                }
                let mut fired = true;
                let mut primary = 0.0;
                for (ci, c) in conds.iter().enumerate() {
                    // Model columns are null until a model is trained: not judged.
                    if c.cols.iter().any(|a| a.is_null(row)) {
                        continue;
                    }
                    let v: f32 = c.cols.iter().map(|a| a.value(row)).sum();
                    if !rule.when[ci].holds(v) {
                        fired = false;
                        break;
                    }
                    if let Some(ratio) = rule.when[ci].min_endpoint_p99_ratio {
                        // Until the endpoint has a population (30 sampled clients) the
                        // condition cannot be judged and the rule waits.
                        let p99 = self.endpoint_feature[ri][ci].and_then(|fi| {
                            endpoint_p99[fi]
                                .get(templates.ids[row] as usize)
                                .copied()
                                .flatten()
                        });
                        if p99.is_none_or(|p| v < ratio * p) {
                            fired = false;
                            break;
                        }
                    }
                    if ci == 0 {
                        primary = rule.when[0].excess(v);
                    }
                }
                if fired {
                    let risk = rule.base + (100.0 - rule.base) * primary;
                    if best_rule.is_none_or(|(_, r)| risk > r) {
                        best_rule = Some((ri, risk));
                    }
                }
            }
            // Best model.
            let mut best_model: Option<(usize, f32)> = None;
            for (mi, (_, a, _)) in models.iter().enumerate() {
                if a.is_null(row) {
                    continue;
                }
                let v = a.value(row);
                if !v.is_finite() {
                    continue;
                }
                // A model that may not alert alone stays below `low`: "unusual" on its own
                // is information; it ranks such events for hunting and confirms rules, but
                // cannot outrank a finding of a rule or of the content profiles.
                let mut r = models[mi].0.scale.risk(v);
                if !models[mi].0.alert_alone {
                    r = r.min(self.cfg.severity.low - 1.0);
                }
                if best_model.is_none_or(|(_, b)| r > b) {
                    best_model = Some((mi, r));
                }
            }
            let rule_risk = best_rule.map_or(0.0, |(_, r)| r);
            let model_risk = best_model.map_or(0.0, |(_, r)| r);
            let mut risk = rule_risk.max(model_risk);
            // Agreement: a rule fires and a model finds the same event unusual (a capped
            // model at its cap counts). It takes a model's finding: a score above 0 (with
            // `severity.low` at 1 or below the cap is no finding at all, and without any
            // model column there is nothing to agree).
            if rule_risk >= self.cfg.alert_threshold
                && best_model.is_some()
                && model_risk > 0.0
                && model_risk >= self.cfg.alert_threshold.min(self.cfg.severity.low - 1.0)
            {
                risk = (risk + self.cfg.agreement_bonus).min(100.0);
            }
            let severity = self.cfg.severity.of(risk);
            risk_b.append_value(risk);
            sev_b.append_value(severity.name());
            // A model alerts on its own score, not on the risk a rule's agreement added to it.
            let model_alerts = model_risk >= self.cfg.model_alert_threshold
                && best_model.is_some_and(|(mi, _)| models[mi].0.alert_alone);
            // The rule leads when it is at least as high, and whenever it alerts on its own,
            // even under a model score that alerts too: the rule's finding is the specific
            // one ("a parameter names the metadata address", category SSRF), the model's is
            // "this parameter is unusual", so the rule's says what to do, and it keeps the
            // incident it belongs to from switching category as the model's score moves.
            // The model still raises the finding's risk (the fused `risk` above).
            let rule_leads = best_rule.is_some()
                && (rule_risk >= model_risk || rule_risk >= self.cfg.alert_threshold);
            let (category, detector) = if rule_leads {
                let r = &self.rules[best_rule.unwrap().0];
                (Some(r.category), Some(r.name.as_str()))
            } else if let Some((mi, _)) = best_model {
                let m = models[mi].0;
                (Some(m.category), Some(m.detector.as_str()))
            } else {
                (None, None)
            };
            if severity >= Severity::Low {
                cat_b.append_option(category.map(|c| c.name()));
                det_b.append_option(detector);
            } else {
                cat_b.append_null();
                det_b.append_null();
            }
            let alerting = if rule_leads {
                risk >= self.cfg.alert_threshold
            } else {
                model_alerts
            };
            if !alerting {
                continue;
            }
            let (Some(category), Some(detector)) = (category, detector) else {
                continue;
            };
            let (entity_kind, contributions) = if rule_leads {
                let (ri, _) = best_rule.unwrap();
                let rule = &self.rules[ri];
                let conds = resolved[ri].as_ref().expect("fired rules are resolved");
                // A condition on a null column (a model not trained yet, a row with no
                // parameter to profile) was not judged: it explains nothing, and its 0
                // would read as a measurement.
                let contribs = rule
                    .when
                    .iter()
                    .zip(conds)
                    .filter(|(_, rc)| rc.cols.iter().all(|a| !a.is_null(row)))
                    .take(self.cfg.max_contributions)
                    .map(|(c, rc)| Contribution {
                        feature: c.features.join("+"),
                        label: c.label.clone(),
                        observed: rc.cols.iter().map(|a| a.value(row)).sum(),
                        baseline: rc
                            .baseline
                            .and_then(|b| (!b.is_null(row)).then(|| b.value(row))),
                        population_p99: (c.features.len() == 1)
                            .then(|| self.population_quantile(&c.features[0], 0.99))
                            .flatten(),
                    })
                    .collect();
                (rule.entity, contribs)
            } else {
                let (mi, score) = best_model.unwrap();
                let (_, _, ex) = &models[mi];
                let mut contribs = Vec::new();
                if let Some(text) = ex.get(row) {
                    contribs.push(Contribution {
                        feature: models[mi].0.column.clone(),
                        label: format!("content profile: {text}; score"),
                        observed: score,
                        baseline: None,
                        population_p99: None,
                    });
                }
                // The features furthest from the population explain a model's view.
                let mut zs: Vec<(f32, &str, f32)> = feature_cols
                    .iter()
                    .filter_map(|(name, a)| {
                        let st = self.stats.get(name)?;
                        let v = a.value(row);
                        let z = st.z(v);
                        (z.abs() >= 3.0).then_some((z.abs(), name.as_str(), v))
                    })
                    .collect();
                zs.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (_, name, v) in zs.into_iter().take(self.cfg.max_contributions) {
                    if contribs.len() >= self.cfg.max_contributions {
                        break;
                    }
                    contribs.push(Contribution {
                        feature: name.to_string(),
                        label: name.trim_start_matches("f_").replace('_', " "),
                        observed: v,
                        baseline: None,
                        population_p99: self.population_quantile(name, 0.99),
                    });
                }
                (EntityKind::Client, contribs)
            };
            let method = ev.method.get(row).unwrap_or("-");
            let path = ev.path.get(row).unwrap_or("");
            let template = ev.template.get(row).unwrap_or(path);
            let endpoint = format!("{method} {template}");
            let client = ev
                .client_key
                .get(row)
                .or_else(|| ev.source_ip.get(row))
                .unwrap_or("-");
            let entity = match entity_kind {
                EntityKind::Client => client.to_string(),
                EntityKind::Endpoint => endpoint.clone(),
                EntityKind::Network => ev.client_network.get(row).unwrap_or(client).to_string(),
            };
            candidates.push((
                row,
                AlertCandidate {
                    entity_kind,
                    entity,
                    category,
                    detector: detector.to_string(),
                    risk,
                    severity,
                    time_ms: times[row],
                    endpoint,
                    contributions,
                    sample: SampleRequest {
                        time_ms: times[row],
                        source_ip: ev.source_ip.get(row).unwrap_or("-").to_string(),
                        method: method.to_string(),
                        path: path.to_string(),
                        query: ev.query.get(row).map(str::to_string),
                        status: opt(ev.status, row),
                        response_bytes: opt(ev.response_bytes, row),
                        user_agent: ev.user_agent.get(row).map(str::to_string),
                        provenance: ev.provenance(row),
                    },
                    label: ev.label.get(row).map(str::to_string),
                },
            ));
        }

        // The population of clients, updated once the batch is explained, so that a row
        // is never compared against a population it is already part of. Each client
        // counts about once per 10 minutes whatever its volume, as in the endpoint
        // populations (else the heaviest client, often the attacker, becomes the
        // population: "412, population p99 380"): a row is sampled with probability
        // 1 / (the client's requests in 10 min). Batches without that column fall back to
        // every fourth row.
        let sampled_rows: Vec<usize> = match f32_col(batch, PER_CLIENT_REQUESTS_RATE)? {
            Some(rate) => {
                let seed = population_seed ^ 0x2545_f491_4f6c_dd1d;
                (0..n)
                    .filter(|&row| {
                        sampled_once(seed, row, rate.value(row) * PER_CLIENT_REQUESTS_SPAN_S)
                    })
                    .collect()
            }
            None => ((population_seed % 4) as usize..n).step_by(4).collect(),
        };
        for (name, _) in &feature_cols {
            if !self.stats.contains_key(name) {
                self.stats.insert(name.clone(), FeatureStats::new());
            }
        }
        // Four features at a time, row by row: one feature's updates form a chain (each
        // reads the mean, variance and bucket count the previous one wrote), and four
        // independent chains keep the core busy where one leaves it waiting.
        let col_of: std::collections::HashMap<&str, &[f32]> = feature_cols
            .iter()
            .map(|(name, a)| (name.as_str(), a.values().as_ref()))
            .collect();
        let mut sampled: Vec<(&mut FeatureStats, &[f32])> = self
            .stats
            .iter_mut()
            .filter_map(|(name, st)| col_of.get(name.as_str()).map(|&col| (st, col)))
            .collect();
        for group in sampled.chunks_mut(4) {
            if let [(sa, a), (sb, b), (sc, c), (sd, d)] = group {
                for &row in &sampled_rows {
                    sa.add(a[row]);
                    sb.add(b[row]);
                    sc.add(c[row]);
                    sd.add(d[row]);
                }
            } else {
                for (st, col) in group {
                    for &row in &sampled_rows {
                        st.add(col[row]);
                    }
                }
            }
        }

        let batch = append(
            batch,
            vec![
                (
                    out_col::RISK,
                    DataType::Float32,
                    false,
                    Arc::new(risk_b.finish()) as ArrayRef,
                ),
                (
                    out_col::SEVERITY,
                    DataType::Utf8,
                    false,
                    Arc::new(sev_b.finish()),
                ),
                (
                    out_col::CATEGORY,
                    DataType::Utf8,
                    true,
                    Arc::new(cat_b.finish()),
                ),
                (
                    out_col::DETECTOR,
                    DataType::Utf8,
                    true,
                    Arc::new(det_b.finish()),
                ),
            ],
        )?;
        Ok(Scored { batch, candidates })
    }
}

/// Clears `mask[row]` where the condition's threshold fails, judged as the row loop of
/// [`Scorer::score`] judges it: the columns' values summed, and a row with a null in any
/// of them (a model column before the model is trained) not judged.
fn thresholds_hold(cond: &Condition, cols: &[&Float32Array], mask: &mut [bool]) {
    if cols.iter().all(|a| a.null_count() == 0) {
        if let [a] = cols {
            for (m, &v) in mask.iter_mut().zip(a.values().iter()) {
                *m &= cond.holds(v);
            }
            return;
        }
        for (row, m) in mask.iter_mut().enumerate() {
            *m &= cond.holds(cols.iter().map(|a| a.value(row)).sum());
        }
        return;
    }
    for (row, m) in mask.iter_mut().enumerate() {
        if cols.iter().any(|a| a.is_null(row)) {
            continue;
        }
        *m &= cond.holds(cols.iter().map(|a| a.value(row)).sum());
    }
}

/// Appends columns to a batch.
pub fn append(
    batch: &RecordBatch,
    cols: Vec<(&str, DataType, bool, ArrayRef)>,
) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, dt, nullable, a) in cols {
        fields.push(Arc::new(Field::new(name, dt, nullable)));
        arrays.push(a);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::Input(format!("appending score columns: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Op;

    /// The per-row judgement the scorer's row loop makes, written plainly.
    fn judged(cond: &Condition, cols: &[&Float32Array], row: usize) -> bool {
        if cols.iter().any(|a| a.is_null(row)) {
            return true;
        }
        let v: f32 = cols.iter().map(|a| a.value(row)).sum();
        cond.holds(v)
    }

    #[test]
    fn column_masks_match_the_row_by_row_judgement() {
        let cond = |op, threshold| Condition {
            features: vec!["f_a".into()],
            op,
            threshold,
            label: String::new(),
            baseline: None,
            min_endpoint_p99_ratio: None,
            endpoint_quantile: None,
        };
        let a = Float32Array::from(vec![0.0, 3.0, 5.0, -1.0, 7.5, f32::NAN, 2.0, -0.0]);
        let b = Float32Array::from(vec![1.0, 2.0, -5.0, 4.0, 0.0, 1.0, 3.0, 0.0]);
        let nulls = Float32Array::from(vec![
            Some(9.0),
            None,
            Some(0.0),
            None,
            Some(1.0),
            Some(2.0),
            None,
            Some(0.0),
        ]);
        let sets: [&[&Float32Array]; 5] = [&[&a], &[&a, &b], &[&nulls], &[&a, &nulls], &[&b]];
        for cols in sets {
            for c in [
                cond(Op::AtLeast, 3.0),
                cond(Op::AtMost, 0.0),
                cond(Op::AtLeast, -0.5),
            ] {
                let mut mask = vec![true; a.len()];
                thresholds_hold(&c, cols, &mut mask);
                let want: Vec<bool> = (0..a.len()).map(|r| judged(&c, cols, r)).collect();
                assert_eq!(
                    mask,
                    want,
                    "{:?} {} over {} columns",
                    c.op,
                    c.threshold,
                    cols.len()
                );
                // A row already ruled out by another condition stays out.
                let mut mask = vec![false; a.len()];
                thresholds_hold(&c, cols, &mut mask);
                assert!(mask.iter().all(|m| !m));
            }
        }
    }

    #[test]
    fn buckets_are_the_rounded_quarter_doublings() {
        // The reference: the formula the bit arithmetic stands for.
        let reference = |v: f32| {
            let m = ((v.abs() + 1.0).log2() * HIST_RES).round().min(63.0) as usize;
            if v < 0.0 { 63 - m } else { 64 + m }
        };
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut checked = 0;
        for i in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Magnitudes from 0 to about 10^6, both signs, dense near 0.
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            let v = (u * 14.0).exp2() - 1.0;
            let v = if i % 2 == 0 { v } else { -v };
            // At a midpoint the two roundings may differ by one ulp of the logarithm.
            let frac = ((v.abs() + 1.0).log2() * HIST_RES).fract();
            if (frac - 0.5).abs() < 1e-4 {
                continue;
            }
            assert_eq!(FeatureStats::bucket(v), reference(v), "{v}");
            checked += 1;
        }
        assert!(checked > 190_000);
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            3.0,
            50_000.0,
            1e9,
            -1e9,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(FeatureStats::bucket(v), reference(v), "{v}");
        }
        assert_eq!(FeatureStats::bucket(f32::NAN), 127);
        assert_eq!(FeatureStats::bucket(f32::NEG_INFINITY), 0);
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut s = FeatureStats::new();
        for i in 0..10_000 {
            s.add((i % 100) as f32);
        }
        let p99 = s.quantile(0.99).unwrap();
        assert!((90.0..=110.0).contains(&p99), "{p99}");
        let p50 = s.quantile(0.5).unwrap();
        assert!((40.0..=60.0).contains(&p50), "{p50}");
        let mut neg = FeatureStats::new();
        for _ in 0..1000 {
            neg.add(-5.0);
        }
        let q = neg.quantile(0.5).unwrap();
        assert!((-6.0..=-4.0).contains(&q), "{q}");
        assert!((s.z(49.5)).abs() < 0.5);
    }

    #[test]
    fn percentile_scores_map_to_risk_by_rarity() {
        let p = ModelScale::Percentile;
        assert!(p.risk(50.0) < 7.0);
        assert!((p.risk(99.0) - 40.0).abs() < 0.1);
        assert!((p.risk(99.9) - 60.0).abs() < 0.1);
        assert!((p.risk(99.99) - 80.0).abs() < 0.5);
        assert_eq!(p.risk(100.0), 100.0);
        assert_eq!(ModelScale::Risk.risk(73.0), 73.0);
    }

    #[test]
    fn severity_cutoffs() {
        let t = SeverityThresholds::default();
        assert_eq!(t.of(10.0), Severity::Info);
        assert_eq!(t.of(60.0), Severity::Medium);
        assert_eq!(t.of(95.0), Severity::Critical);
    }

    /// One event with the given injection-marker count and content-profile risk.
    /// One request with `markers` SQL-injection markers (the other content features at 0)
    /// and the content profile's score (null: an untrained model).
    fn injection_event(markers: f32, content: Option<f32>) -> RecordBatch {
        rows(
            &[
                ("f_sqli_markers", vec![Some(markers)]),
                ("f_xss_markers", vec![Some(0.0)]),
                ("f_traversal_markers", vec![Some(0.0)]),
                ("f_cmd_markers", vec![Some(0.0)]),
                ("f_null_bytes", vec![Some(0.0)]),
                ("score_content", vec![content]),
            ],
            &[],
        )
    }

    #[test]
    fn a_higher_model_score_that_cannot_alert_does_not_silence_a_rule() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        // The injection rule fires at 65; the content profile scores 70, higher, but under
        // its own alert threshold (90). The rule's finding alerts, with the fused risk.
        let scored = scorer.score(&injection_event(2.0, Some(70.0))).unwrap();
        let [(0, c)] = scored.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", scored.candidates);
        };
        assert_eq!(c.detector, "injection_payload");
        assert!(c.risk >= 70.0, "{}", c.risk);
        // A content score that alerts on its own (at or above 90) raises the risk; the
        // rule's finding still leads.
        let scored = scorer.score(&injection_event(2.0, Some(95.0))).unwrap();
        assert_eq!(scored.candidates.len(), 1);
        assert_eq!(scored.candidates[0].1.detector, "injection_payload");
        assert!(scored.candidates[0].1.risk >= 95.0);
        // A rule that does not fire leaves the model alone: 70 alerts nothing…
        let scored = scorer.score(&injection_event(1.0, Some(70.0))).unwrap();
        assert!(scored.candidates.is_empty(), "{:?}", scored.candidates);
        // …and 95 alerts as the content profile's finding.
        let scored = scorer.score(&injection_event(1.0, Some(95.0))).unwrap();
        assert_eq!(scored.candidates.len(), 1);
        assert_eq!(scored.candidates[0].1.detector, "content_profile");
    }

    #[test]
    fn with_a_spec_only_undeclared_endpoints_are_shadow_endpoints() {
        // A client's sixth request in 10 min to endpoints that are new: the first one the
        // spec declares (a signup form nobody used before), the second one it does not.
        let requests = rows(
            &[
                ("f_client_inventory_10m", vec![Some(6.0), Some(6.0)]),
                ("f_endpoint_new", vec![Some(1.0), Some(1.0)]),
                ("f_endpoint_undeclared", vec![Some(0.0), Some(1.0)]),
            ],
            &[],
        );
        let shadow_rows = |scorer: &mut Scorer| -> Vec<usize> {
            let scored = scorer.score(&requests).unwrap();
            scored
                .candidates
                .iter()
                .filter(|(_, c)| c.detector == "shadow_endpoint_use")
                .map(|(row, _)| *row)
                .collect()
        };
        // Without a spec, first seen is what undocumented looks like.
        let mut without = Scorer::new(ScoringConfig::default()).unwrap();
        assert_eq!(shadow_rows(&mut without), vec![0, 1]);
        let mut with = Scorer::for_features(ScoringConfig::default(), true).unwrap();
        assert_eq!(shadow_rows(&mut with), vec![1]);
        let rule = with
            .rules()
            .iter()
            .find(|r| r.name == "shadow_endpoint_use")
            .unwrap();
        assert!(
            rule.when
                .iter()
                .all(|c| !c.features.contains(&"f_endpoint_new".to_string())),
            "{rule:?}"
        );
    }

    #[test]
    fn config_validation_names_keys() {
        let c = ScoringConfig {
            alert_threshold: 120.0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .contains("scoring.alert_threshold")
        );
        for bonus in [-50.0, f32::NAN, f32::NEG_INFINITY, 101.0] {
            let c = ScoringConfig {
                agreement_bonus: bonus,
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains("scoring.agreement_bonus"), "{bonus}: {e}");
        }
        assert_eq!(ScoringConfig::default().validate(), Ok(()));
    }

    /// A batch of `n` rows at one time with the given Float32 columns (`None`: null) and
    /// Utf8 columns.
    fn rows(f32s: &[(&str, Vec<Option<f32>>)], strs: &[(&str, Vec<String>)]) -> RecordBatch {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        let n = f32s
            .first()
            .map(|c| c.1.len())
            .or_else(|| strs.first().map(|c| c.1.len()))
            .unwrap_or(0);
        let ts =
            TimestampMicrosecondArray::from(vec![1_748_851_200_000_000; n]).with_timezone("UTC");
        let mut fields = vec![Field::new(
            gatewatch_ingest::schema::col::TIMESTAMP,
            ts.data_type().clone(),
            false,
        )];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(ts)];
        for (name, v) in f32s {
            assert_eq!(v.len(), n, "{name}");
            fields.push(Field::new(*name, DataType::Float32, true));
            arrays.push(Arc::new(Float32Array::from(v.clone())));
        }
        for (name, v) in strs {
            assert_eq!(v.len(), n, "{name}");
            fields.push(Field::new(*name, DataType::Utf8, true));
            arrays.push(Arc::new(StringArray::from(v.clone())));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    /// Rows on endpoint templates for the BOLA rules: (template, client, client × endpoint
    /// requests in 10 min, distinct ids in 10 min, sequential share), all authenticated.
    fn bola_rows(rs: &[(String, String, f32, f32, f32)]) -> RecordBatch {
        let col = |f: fn(&(String, String, f32, f32, f32)) -> f32| -> Vec<Option<f32>> {
            rs.iter().map(|r| Some(f(r))).collect()
        };
        rows(
            &[
                ("f_authenticated", col(|_| 1.0)),
                (PER_CLIENT_ENDPOINT_REQUESTS, col(|r| r.2)),
                ("f_client_distinct_ids_10m", col(|r| r.3)),
                ("f_client_id_sequential_10m", col(|r| r.4)),
                ("f_client_distinct_ids_1h", col(|r| r.3)),
                ("f_client_id_sequential_1h", col(|r| r.4)),
            ],
            &[
                (
                    "endpoint_template",
                    rs.iter().map(|r| r.0.clone()).collect(),
                ),
                ("client_key", rs.iter().map(|r| r.1.clone()).collect()),
            ],
        )
    }

    #[test]
    fn a_slow_walk_is_judged_against_the_endpoints_clients_not_its_internal_services() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        let t = "/api/v1/users/{id}/addresses";
        // (client, requests to the endpoint in 10 min, in 1 h, distinct ids in 10 min,
        // in 1 h, sequential share in 10 min and in 1 h)
        type Row = (String, f32, f32, f32, f32, f32);
        let batch = |rs: &[Row]| {
            let col = |f: fn(&Row) -> f32| -> Vec<Option<f32>> {
                rs.iter().map(|r| Some(f(r))).collect()
            };
            rows(
                &[
                    ("f_authenticated", col(|_| 1.0)),
                    (PER_CLIENT_ENDPOINT_REQUESTS, col(|r| r.1)),
                    ("f_client_endpoint_requests_1h", col(|r| r.2)),
                    ("f_client_distinct_ids_10m", col(|r| r.3)),
                    ("f_client_id_sequential_10m", col(|r| r.5)),
                    ("f_client_distinct_ids_1h", col(|r| r.4)),
                    ("f_client_id_sequential_1h", col(|r| r.5)),
                ],
                &[
                    ("endpoint_template", vec![t.to_string(); rs.len()]),
                    ("client_key", rs.iter().map(|r| r.0.clone()).collect()),
                ],
            )
        };
        // 100 customers reading their own addresses once, and three internal services
        // that read across users all hour. One request of a service in each of six
        // 10-minute windows is its first there: weighted by 10 minutes the services
        // counted six times each against a customer's once (15 % of the endpoint's
        // population); weighted by the hour, about once (3 %: still its top percent, so
        // the slow walk is judged against the 95th percentile).
        let mut usual: Vec<_> = (0..100)
            .map(|i| (format!("user-{i}"), 1.0, 1.0, 1.0, 1.0, 0.0))
            .collect();
        for w in 0..6 {
            for svc in ["svc-profile", "svc-mailer", "svc-billing"] {
                usual.push((svc.into(), 1.0, 1.0 + 100.0 * w as f32, 60.0, 300.0, 0.1));
            }
        }
        let s = scorer.score(&batch(&usual)).unwrap();
        assert!(s.candidates.is_empty(), "{:?}", s.candidates);
        // A customer walking other users' ids minutes apart: 3 in ten minutes (far below
        // the fast rule), 20 in the hour, each next to the last.
        let walk = [("user-7".to_string(), 3.0, 20.0, 3.0, 20.0, 1.0)];
        let s = scorer.score(&batch(&walk)).unwrap();
        let [(0, c)] = s.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", s.candidates);
        };
        assert_eq!(
            (c.category, c.detector.as_str()),
            (Category::Bola, "bola_slow_walk")
        );
    }

    #[test]
    fn one_clients_anonymous_flood_does_not_make_a_private_endpoint_public() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        let t = || "/api/v1/downloads/{id}".to_string();
        // One scanner: 600 anonymous requests (its count in the window rising with each),
        // few ids, nothing sequential, so none of the rules fire on it.
        let n = 600;
        let anonymous = rows(
            &[
                ("f_authenticated", vec![Some(0.0); n]),
                (
                    PER_CLIENT_ENDPOINT_REQUESTS,
                    (1..=n).map(|k| Some(k as f32)).collect(),
                ),
                ("f_client_distinct_ids_10m", vec![Some(1.0); n]),
                ("f_client_id_sequential_10m", vec![Some(0.0); n]),
                ("f_client_distinct_ids_1h", vec![Some(1.0); n]),
                ("f_client_id_sequential_1h", vec![Some(0.0); n]),
            ],
            &[
                ("endpoint_template", vec![t(); n]),
                ("client_key", vec!["198.51.100.9".to_string(); n]),
            ],
        );
        assert!(scorer.score(&anonymous).unwrap().candidates.is_empty());
        // 100 customers fetching their own, signed in. (The scanner weighs as much as
        // 1 + 1/2 + … + 1/600 ≈ 7 of them: still over 90 % authenticated; counted by
        // request it made the endpoint 14 % authenticated.)
        let usual: Vec<_> = (0..100)
            .map(|i| (t(), format!("c{i}"), 1.0, 2.0, 0.1))
            .collect();
        assert!(
            scorer
                .score(&bola_rows(&usual))
                .unwrap()
                .candidates
                .is_empty()
        );
        // The endpoint is still private: a signed-in walk over its ids is BOLA.
        let walk = [(t(), "walker".to_string(), 80.0, 80.0, 0.95)];
        let s = scorer.score(&bola_rows(&walk)).unwrap();
        let [(0, c)] = s.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", s.candidates);
        };
        assert_eq!(c.category, Category::Bola);
    }

    #[test]
    fn an_endpoint_first_seen_after_the_endpoint_tables_filled_is_still_judged() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        // A flood of junk templates, each called once, far past the tables' cap.
        let junk: Vec<_> = (0..2 * MAX_ENDPOINTS + 500)
            .map(|i| (format!("/junk{i}/{{id}}"), format!("j{i}"), 1.0, 1.0, 0.0))
            .collect();
        for chunk in junk.chunks(4096) {
            let s = scorer.score(&bola_rows(chunk)).unwrap();
            assert!(s.candidates.is_empty());
        }
        // Then a new endpoint: 60 ordinary clients, a few ids each…
        let usual: Vec<_> = (0..60)
            .map(|i| {
                (
                    "/api/v1/orders/{id}".to_string(),
                    format!("c{i}"),
                    1.0,
                    2.0,
                    0.1,
                )
            })
            .collect();
        let s = scorer.score(&bola_rows(&usual)).unwrap();
        assert!(s.candidates.is_empty(), "{:?}", s.candidates);
        // …and one walking the ids in order.
        let walk = [(
            "/api/v1/orders/{id}".to_string(),
            "walker".to_string(),
            80.0,
            80.0,
            0.95,
        )];
        let s = scorer.score(&bola_rows(&walk)).unwrap();
        let [(0, c)] = s.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", s.candidates);
        };
        assert_eq!(c.category, Category::Bola);
        assert!(c.detector.starts_with("bola_"), "{}", c.detector);
    }

    #[test]
    fn a_rule_alerting_on_its_own_keeps_its_finding_under_a_higher_model_score() {
        // SSRF at 80; the content profile scores 86, under its own alert threshold (90)
        // though the fused risk (86 + the agreement bonus) is above it.
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        let ssrf_event = |content: f32| {
            rows(
                &[
                    ("f_param_internal_host", vec![Some(1.0)]),
                    ("score_content", vec![Some(content)]),
                ],
                &[],
            )
        };
        let s = scorer.score(&ssrf_event(86.0)).unwrap();
        let [(0, c)] = s.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", s.candidates);
        };
        assert_eq!(c.detector, "ssrf_internal_target");
        assert_eq!(c.category, Category::Ssrf);
        assert!(c.risk >= 86.0, "{}", c.risk);
        // Even a content score that alerts on its own (95) only raises the rule's risk.
        let s = scorer.score(&ssrf_event(95.0)).unwrap();
        assert_eq!(s.candidates.len(), 1);
        assert_eq!(s.candidates[0].1.detector, "ssrf_internal_target");
        assert!(s.candidates[0].1.risk >= 95.0);
    }

    #[test]
    fn the_population_percentile_weighs_each_client_once() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        // 1,000 light clients at about one request a minute (9 in 10 min), and one heavy
        // client making 9 % of the requests at 50/s.
        let batch = |light_rate: f32| {
            let mut r1 = Vec::new();
            let mut r10 = Vec::new();
            let mut ratio = Vec::new();
            let mut clients = Vec::new();
            for i in 0..1000 {
                r1.push(Some(light_rate + (i % 10) as f32 * 0.05));
                r10.push(Some(9.0 / 600.0));
                ratio.push(Some(1.0));
                clients.push(format!("light{i}"));
                if i % 10 == 3 {
                    r1.push(Some(50.0));
                    r10.push(Some(50.0));
                    ratio.push(Some(40.0));
                    clients.push("heavy".to_string());
                }
            }
            rows(
                &[
                    ("f_client_rate_1m", r1),
                    ("f_client_rate_10m", r10),
                    ("f_client_rate_ratio", ratio),
                ],
                &[("client_key", clients)],
            )
        };
        // The first batch is explained before its rows join the population: none yet.
        let s = scorer.score(&batch(0.5)).unwrap();
        let c = &s.candidates.first().expect("the heavy client alerts").1;
        assert_eq!(c.detector, "rate_abuse");
        assert_eq!(c.contributions[0].feature, "f_client_rate_1m");
        assert_eq!(c.contributions[0].population_p99, None, "{c:?}");
        for _ in 0..9 {
            scorer.score(&batch(0.5)).unwrap();
        }
        let s = scorer.score(&batch(0.5)).unwrap();
        let c = &s.candidates.first().expect("the heavy client alerts").1;
        let p99 = c.contributions[0]
            .population_p99
            .expect("a population by now");
        // The light clients' rates run to 0.95/s.
        assert!(
            p99 < 2.0,
            "population p99 {p99}: the heavy client weighs as one"
        );
    }

    #[test]
    fn a_null_model_column_is_left_out_of_the_explanation() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        let s = scorer.score(&injection_event(3.0, None)).unwrap();
        let [(0, c)] = s.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", s.candidates);
        };
        assert_eq!(c.detector, "injection_payload");
        assert!(
            c.contributions.iter().all(|k| k.feature != "score_content"),
            "{:?}",
            c.contributions
        );
        assert!(
            c.contributions
                .iter()
                .any(|k| k.feature.contains("f_sqli_markers"))
        );
    }

    #[test]
    fn without_a_model_finding_there_is_no_agreement_bonus() {
        // A `low` of 0 makes the cap of the models that may not alert alone negative;
        // with no model column at all nothing agrees with the rule.
        let mut cfg = ScoringConfig::default();
        cfg.severity.low = 0.0;
        let mut scorer = Scorer::new(cfg).unwrap();
        let batch = rows(&[("f_param_internal_host", vec![Some(1.0)])], &[]);
        let s = scorer.score(&batch).unwrap();
        assert_eq!(s.candidates.len(), 1);
        assert_eq!(s.candidates[0].1.risk, 80.0);
        // A model score of 0 is no agreement either.
        let batch = rows(
            &[
                ("f_param_internal_host", vec![Some(1.0)]),
                ("score_content", vec![Some(0.0)]),
                ("score_iforest", vec![Some(0.0)]),
            ],
            &[],
        );
        let s = scorer.score(&batch).unwrap();
        assert_eq!(s.candidates[0].1.risk, 80.0);
    }

    /// Warnings logged on this thread while `f` runs.
    fn warnings_during(f: impl FnOnce()) -> Vec<String> {
        use std::sync::Mutex;
        use tracing::field::{Field as TField, Visit};
        struct Collect(Arc<Mutex<Vec<String>>>);
        struct Text(String);
        impl Visit for Text {
            fn record_debug(&mut self, field: &TField, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        impl tracing::Subscriber for Collect {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, e: &tracing::Event<'_>) {
                if *e.metadata().level() == tracing::Level::WARN {
                    let mut t = Text(String::new());
                    e.record(&mut t);
                    self.0.lock().unwrap().push(t.0);
                }
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Collect(seen.clone()), f);
        seen.lock().unwrap().clone()
    }

    #[test]
    fn rules_whose_features_are_missing_are_named_once() {
        // Spans 30s and 5m: the rules on 1 min, 10 min and 1 h windows cannot fire.
        let batch = rows(
            &[
                ("f_client_rate_30s", vec![Some(1.0)]),
                ("f_client_rate_5m", vec![Some(1.0)]),
                ("f_param_internal_host", vec![Some(0.0)]),
                ("f_client_rate_ratio", vec![Some(1.0)]),
            ],
            &[],
        );
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        let warnings = warnings_during(|| {
            scorer.score(&batch).unwrap();
            scorer.score(&batch).unwrap();
        });
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        for name in [
            "bola_slow_walk",
            "f_client_distinct_ids_1h",
            "rate_abuse",
            "f_client_rate_1m",
            "brute_force_client",
        ] {
            assert!(w.contains(name), "{name} in {w}");
        }
        // A rule whose columns are all there is not named.
        assert!(!w.contains("ssrf_internal_target"), "{w}");
        let missing = scorer.missing_features();
        // Every missing column of a rule, not only the first.
        assert!(
            format!("{:?}", missing["bola_slow_walk"]).contains("f_client_id_sequential_1h"),
            "{missing:?}"
        );
        assert!(!missing.contains_key("ssrf_internal_target"));
    }

    #[test]
    fn the_endpoint_table_drops_the_least_recently_updated() {
        let mut t = EndpointTable {
            features: vec!["f_a".into()],
            ..Default::default()
        };
        let keep = t.slot("/keep", 1).unwrap();
        t.slots[keep].auth = (50.0, 50.0, 50.0);
        let mut junk = 0;
        for batch in 2..40 {
            // An endpoint in use every batch keeps its place and its counts…
            assert_eq!(t.slot("/keep", batch), Some(keep));
            for _ in 0..1000 {
                assert!(t.slot(&format!("/junk{junk}"), batch).is_some());
                junk += 1;
            }
            assert!(t.len() <= MAX_ENDPOINTS && t.slots.len() <= MAX_ENDPOINTS);
        }
        assert_eq!(t.slots[keep].auth, (50.0, 50.0, 50.0));
        // …while the junk seen longest ago is gone and the latest is held.
        assert!(!t.index.contains_key("/junk0"));
        assert!(t.index.contains_key(&format!("/junk{}", junk - 1)));
        // A batch with more new templates than the table holds leaves the rest untracked
        // rather than dropping endpoints it has just updated.
        let held: Vec<_> = (0..MAX_ENDPOINTS + 10)
            .map(|i| t.slot(&format!("/flood{i}"), 100))
            .collect();
        assert!(held[..MAX_ENDPOINTS].iter().all(Option::is_some));
        assert!(held[MAX_ENDPOINTS..].iter().all(Option::is_none));
        assert_eq!(t.len(), MAX_ENDPOINTS);
    }

    #[test]
    fn a_flood_of_junk_paths_does_not_push_out_established_endpoints() {
        let mut t = EndpointTable {
            features: vec!["f_a".into()],
            ..Default::default()
        };
        // A hundred real endpoints with populations, last updated in batch 1.
        for e in 0..100 {
            let s = t.slot(&format!("/real{e}"), 1).unwrap();
            for v in 0..40 {
                t.slots[s].stats[0].add(v as f32);
            }
        }
        // A directory scan: ten batches of 1,000 paths never seen before, each once.
        let mut junk = 0;
        for batch in 2..12 {
            for _ in 0..1000 {
                assert!(t.slot(&format!("/junk{junk}"), batch).is_some());
                junk += 1;
            }
        }
        for e in 0..100 {
            let s = t.index.get(&format!("/real{e}")).copied();
            let s = s.unwrap_or_else(|| panic!("/real{e} was pushed out by the scan"));
            assert!(t.slots[s].established());
        }
        assert!(t.len() <= MAX_ENDPOINTS);
    }
}
